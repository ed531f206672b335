//! A bundle checked without a host (`ops_pod --validate`): everything
//! ops_pod checks before it touches one, with no store, no systemd running
//! and nothing written but `systemd-analyze`'s temporary copies, and what
//! only a real run would find out: each image file read whole, its digest
//! against the id pod.json gives, and each volume archive read to its end.
//!
//! Every problem is reported, each naming pod.json and the field
//! (`images[0].id`), as [`BundleError::Invalid`]; what is fine is listed
//! ([`Validated`]): what ops_pod would deploy from the bundle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::{computed_image, fetch_unit_file, new_version, verify, PodError};
use crate::ansible::error_chain;
use crate::bundle::{self, Bundle, BundleError, PendingImage, Problem, Shape, Source};
use crate::command::CommandError;
use crate::download::Location;
use crate::image::{identify, ImageError, Import, Runtime};
use crate::records::names::{same_image, ImageId};
use crate::store::{self, NewVersion, Store};
use crate::systemd::Systemd;

/// What a bundle is checked with, besides itself.
#[derive(Debug, Clone)]
pub struct Checks {
    /// Trusted keys: with them, the images' signatures in the bundle are
    /// verified (with sqv, as ops_pod does); without, they are not.
    pub keyring: Option<PathBuf>,
    /// The runtime the unit files are verified for (it decides their
    /// drop-ins).
    pub runtime: Runtime,
    /// The store the drop-ins point into, as on the hosts.
    pub root: PathBuf,
    /// For unit files and volume archives given by URI.
    pub download_timeout: Duration,
}

/// A valid bundle: what ops_pod would deploy from it.
#[derive(Debug, Clone, Serialize)]
pub struct Validated {
    /// The bundle's pod.json.
    pub manifest: PathBuf,
    pub shape: Shape,
    pub name: String,
    pub version: String,
    /// The version's digest, as ops_pod records it and ops_facts reports
    /// it for the bundle deployed under its own name; `None` while an
    /// image's id is known only once it is downloaded.
    pub digest: Option<String>,
    pub units: Vec<FoundUnit>,
    pub images: Vec<FoundImage>,
    pub volumes: Vec<FoundVolume>,
    pub ports: Vec<FoundPort>,
    /// How the unit files were verified.
    pub unit_files: String,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FoundUnit {
    /// The unit's name in the pod (installed as `<pod>-<version>-<name>`).
    pub name: String,
    /// Its file in the bundle, or its URI.
    pub file: String,
    pub start: bool,
    /// A template's instances.
    pub instances: Vec<String>,
    /// The image it runs in.
    pub image: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FoundImage {
    /// Its entry in pod.json (`images[0]`).
    pub field: String,
    /// The full id the file has; the id pod.json gives for an image by
    /// URI (not downloaded); `None` for one by URI without an id.
    pub id: Option<String>,
    /// `aci`, `oci` or `docker`; `None` when not read (by URI).
    pub format: Option<&'static str>,
    /// Its file in the bundle, or its URI.
    pub source: String,
    /// pod.json gives no id: ops computes it from the file.
    pub computed: bool,
    pub signature: Option<String>,
    /// The signature was verified with the keyring.
    pub signature_verified: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FoundVolume {
    pub name: String,
    pub mount: PathBuf,
    pub read_only: bool,
    /// Its archive in the bundle, or its URI.
    pub data: Option<String>,
    /// `tar`, `tar.gz`, ...: read whole (in the bundle only).
    pub format: Option<&'static str>,
    pub entries: Option<u64>,
    /// Bytes of file contents.
    pub bytes: Option<u64>,
    /// The archive's sha256, as ops_facts reports the volume's digest.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FoundPort {
    pub name: String,
    /// `None`: assigned by ops on each host.
    pub fixed: Option<u16>,
}

/// Problems and warnings as the checks find them.
struct Findings {
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Findings {
    fn problem(&mut self, field: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            field: field.to_owned(),
            message: message.into(),
        });
    }
}

/// Check the bundle at `path` (its directory or its pod.json) as ops_pod
/// would before deploying it, and further (see the module's doc). The unit
/// files are verified with `verifier`, or not, for the reason given.
pub fn validate(
    path: &Path,
    checks: &Checks,
    verifier: Result<&mut dyn Systemd, String>,
) -> Result<Validated, BundleError> {
    let mut bundle = bundle::load(path)?;
    let mut findings = Findings {
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let fetched = unit_texts(&bundle, checks, &mut findings);
    let units_read = findings.problems.is_empty();
    let mut images = listed_images(&bundle, checks, &mut findings);
    images.extend(pending_images(&mut bundle, checks, &mut findings));
    let volumes = volumes(&bundle, checks, &mut findings);
    let (manifest, shape, fields) = (bundle.manifest.clone(), bundle.shape, bundle.fields.clone());
    // The unit files are verified whatever else is wrong (every problem
    // at once), once they could all be read.
    let new = match units_read.then(|| new_version(bundle, None, fetched, &[])) {
        Some(Ok(new)) => Some(named(new)),
        Some(Err(e)) => {
            findings.problems.push(problem("", &e));
            None
        }
        None => None,
    };
    let unit_files = match &new {
        Some(new) => verify_units(new, &manifest, &fields, checks, verifier, &mut findings),
        None => "not verified".to_owned(),
    };
    let new = match new {
        Some(new) if findings.problems.is_empty() => new,
        _ => {
            return Err(BundleError::Invalid {
                manifest,
                problems: findings.problems,
            })
        }
    };
    let pod = &new.pod;
    Ok(Validated {
        manifest,
        shape,
        name: pod.name.to_string(),
        version: pod.version.to_string(),
        digest: new.unresolved.is_empty().then(|| new.digest.clone()),
        units: pod.units.iter().map(|u| found_unit(u, &new)).collect(),
        images,
        volumes,
        ports: (pod.ports.iter())
            .map(|p| FoundPort {
                name: p.name.clone(),
                fixed: p.fixed,
            })
            .collect(),
        unit_files,
        warnings: findings.warnings,
    })
}

fn problem(field: &str, error: &dyn std::error::Error) -> Problem {
    Problem {
        field: field.to_owned(),
        message: error_chain(error),
    }
}

/// The version as ops_pod adds it for the bundle deployed under its own
/// name (no `name` option): the bundle's name recorded, the digest over it.
fn named(mut new: NewVersion) -> NewVersion {
    new.pod.bundle_name = Some(new.pod.name.clone());
    new.digest = store::digest(&new.pod, &new.units);
    new
}

fn found_unit(unit: &bundle::Unit, new: &NewVersion) -> FoundUnit {
    let file = match &unit.uri {
        Some(uri) => crate::records::uri::redact(uri).into_owned(),
        None => (new.unit_sources.get(&unit.name))
            .and_then(|s| Path::new(s).strip_prefix(&new.bundle_dir).ok())
            .map_or_else(
                || unit.file.display().to_string(),
                |p| p.display().to_string(),
            ),
    };
    FoundUnit {
        name: unit.name.to_string(),
        file,
        start: unit.start,
        instances: if unit.name.is_template() {
            unit.instances.clone()
        } else {
            Vec::new()
        },
        image: unit.image.as_ref().map(ToString::to_string),
    }
}

/// Each unit file read as ops_pod reads it (UTF-8 text); those given by
/// URI fetched, as ops_pod fetches them in check mode too: their texts.
fn unit_texts(
    bundle: &Bundle,
    checks: &Checks,
    findings: &mut Findings,
) -> BTreeMap<bundle::UnitName, String> {
    let mut fetched = BTreeMap::new();
    for (unit, field) in bundle.pod.units.iter().zip(&bundle.fields.units) {
        if let Some(uri) = &unit.uri {
            match fetch_unit_file(uri, checks.download_timeout) {
                Ok(text) => drop(fetched.insert(unit.name.clone(), text)),
                Err(e) => findings.problems.push(problem(field, &e)),
            }
            continue;
        }
        let path = bundle.dir.join(&unit.file);
        match crate::atomic::read_own(&path, bundle::MAX_MANIFEST) {
            Ok(bytes) if std::str::from_utf8(&bytes).is_ok() => {}
            Ok(_) => findings.problem(
                field,
                format!("{}: a unit file must be UTF-8 text", path.display()),
            ),
            Err(e) => findings.problem(field, format!("cannot read {}: {e}", path.display())),
        }
    }
    fetched
}

/// The images pod.json gives with an id: each file in the bundle read
/// whole and its id checked against pod.json's, its signature verified
/// when a keyring is given.
fn listed_images(bundle: &Bundle, checks: &Checks, findings: &mut Findings) -> Vec<FoundImage> {
    let mut found = Vec::new();
    for (image, field) in bundle.pod.images.iter().zip(&bundle.fields.images) {
        let mut entry = FoundImage {
            field: field.clone(),
            id: Some(image.id.to_string()),
            format: None,
            source: image.source.text(),
            computed: false,
            signature: image.signature.as_ref().map(Source::text),
            signature_verified: false,
        };
        if let Source::Path(path) = &image.source {
            let Some((format, full)) = identified(bundle, path, field, findings) else {
                continue;
            };
            let fits = ImageId::parse(&full).is_ok_and(|f| same_image(&image.id, &f));
            if !fits {
                findings.problem(
                    &format!("{field}.id"),
                    mismatch(path, &image.id, format, &full),
                );
                continue;
            }
            entry.format = Some(format.name());
            entry.id = Some(full);
        }
        entry.signature_verified = signature(bundle, image, field, checks, findings);
        found.push(entry);
    }
    found
}

/// What the import would say of an image file that is not `id`: another
/// kind of image, or another image.
fn mismatch(
    path: &Path,
    id: &ImageId,
    format: crate::records::image::Format,
    full: &str,
) -> String {
    let file = format!("{:?}", path.display().to_string());
    let aci = matches!(id, ImageId::Sha512(_));
    let error = if aci != (format == crate::records::image::Format::Aci) {
        ImageError::WrongFormat {
            file,
            format,
            id: id.to_string(),
        }
    } else {
        ImageError::Mismatch {
            file,
            expected: id.to_string(),
            actual: full.to_owned(),
        }
    };
    error.to_string()
}

/// The image file at `path` in the bundle (its entry `field`): refused as
/// check mode refuses it if it does not start as an archive does, then
/// read whole: its format and the one full id it holds.
fn identified(
    bundle: &Bundle,
    path: &Path,
    field: &str,
    findings: &mut Findings,
) -> Option<(crate::records::image::Format, String)> {
    let at = format!("{field}.path");
    let file = bundle.dir.join(path);
    let shown = format!("{:?}", path.display().to_string());
    let started = crate::atomic::open_regular(&file)
        .and_then(|mut f| crate::decode::read_head(&mut f))
        .and_then(|(head, whole)| crate::decode::check_start(&head, whole));
    if let Err(e) = started {
        findings.problem(&at, format!("{shown}: {}", error_chain(&e)));
        return None;
    }
    let identify::Identified { format, ids, .. } = match identify::identify(&file, &shown) {
        Ok(identified) => identified,
        Err(e) => {
            findings.problem(&at, e);
            return None;
        }
    };
    // The blobs of an OCI archive are named by their digests: the layers
    // are checked too, as the import checks them.
    if format == crate::records::image::Format::Oci {
        if let Err(e) = crate::image::archive::check_blobs(&file, &shown) {
            findings.problems.push(problem(&at, &e));
            return None;
        }
    }
    match ids.as_slice() {
        [one] => Some((format, one.clone())),
        _ => {
            findings.problem(
                &at,
                format!(
                    "image {shown} holds {} images ({}): ops_pod imports one image per file",
                    ids.len(),
                    ids.join(", ")
                ),
            );
            None
        }
    }
}

/// Verify the image's signature in the bundle with the keyring, as ops_pod
/// does before it imports: whether it was verified (no keyring, or a
/// signature by URI: not here).
fn signature(
    bundle: &Bundle,
    image: &bundle::Image,
    field: &str,
    checks: &Checks,
    findings: &mut Findings,
) -> bool {
    let (Some(keyring), Some(Source::Path(sig)), Source::Path(data)) =
        (&checks.keyring, &image.signature, &image.source)
    else {
        return false;
    };
    let import = Import {
        id: image.id.clone(),
        source: Location::Path(bundle.dir.join(data)),
        signature: Some(Location::Path(bundle.dir.join(sig))),
        keyring: Some(keyring.clone()),
        require_signature: false,
        timeout: checks.download_timeout,
        downloaded_from: None,
    };
    match import.check() {
        Ok(()) => true,
        Err(e) => {
            findings
                .problems
                .push(problem(&format!("{field}.signature"), &e));
            false
        }
    }
}

/// The images pod.json gives without an id: one in the bundle gets the id
/// computed from its file, as ops_pod computes it, and joins the pod's
/// images; one by URI stays pending (ops_pod downloads it to know).
fn pending_images(
    bundle: &mut Bundle,
    checks: &Checks,
    findings: &mut Findings,
) -> Vec<FoundImage> {
    let mut found = Vec::new();
    let mut by_uri = Vec::new();
    for pending in std::mem::take(&mut bundle.pending) {
        let mut entry = FoundImage {
            field: pending.at.clone(),
            id: None,
            format: None,
            source: pending.source.text(),
            computed: true,
            signature: pending.signature.as_ref().map(Source::text),
            signature_verified: false,
        };
        let Source::Path(path) = &pending.source else {
            findings.warnings.push(format!(
                "{}: image {} has no id in pod.json: ops_pod downloads it to compute its id \
                 when it deploys the version (check mode does not), so its id and the \
                 version's digest are not known here",
                pending.at, entry.source
            ));
            by_uri.push(pending);
            found.push(entry);
            continue;
        };
        let Some(id) = computed(bundle, path, &pending, findings) else {
            continue;
        };
        entry.format = Some(id.1.name());
        entry.id = Some(id.0.to_string());
        if entry.signature.is_none() {
            findings.warnings.push(format!(
                "{}: image {} has no id in pod.json: ops computed {} from the file, and ops_pod \
                 will too; nothing pinned it (no id, no signature): give the id in pod.json to \
                 deploy only that image",
                pending.at, entry.source, id.0
            ));
        }
        let image = bundle.pod.images.last().cloned().expect("just added");
        entry.signature_verified = signature(bundle, &image, &pending.at, checks, findings);
        found.push(entry);
    }
    bundle.pending = by_uri;
    found
}

/// The id of a pending image's file, put in the pod's images.
fn computed(
    bundle: &mut Bundle,
    path: &Path,
    pending: &PendingImage,
    findings: &mut Findings,
) -> Option<(ImageId, crate::records::image::Format)> {
    let (format, full) = identified(bundle, path, &pending.at, findings)?;
    let id = match ImageId::parse(&full) {
        Ok(id) => id,
        Err(e) => {
            findings.problem(&format!("{}.path", pending.at), e);
            return None;
        }
    };
    match computed_image(&mut bundle.pod, pending, id.clone()) {
        Ok(()) => Some((id, format)),
        Err(e) => {
            findings.problems.push(problem("", &e));
            None
        }
    }
}

/// Each volume's archive: one in the bundle read to its end as ops_pod
/// would extract it; one by URI looked at as ops_pod looks at it before a
/// deploy (its first bytes).
fn volumes(bundle: &Bundle, checks: &Checks, findings: &mut Findings) -> Vec<FoundVolume> {
    let mut found = Vec::new();
    for (volume, field) in bundle.pod.volumes.iter().zip(&bundle.fields.volumes) {
        let mut entry = FoundVolume {
            name: volume.name.clone(),
            mount: volume.mount.clone(),
            read_only: volume.read_only,
            data: volume.data.as_ref().map(Source::text),
            format: None,
            entries: None,
            bytes: None,
            sha256: None,
        };
        let shown = entry.data.clone().unwrap_or_default();
        match &volume.data {
            None => {}
            Some(Source::Path(path)) => {
                let shown = format!("{shown:?}");
                match crate::volume::survey_for_pod(&bundle.dir.join(path), &shown) {
                    Ok(surveyed) => {
                        entry.format = Some(surveyed.format);
                        entry.entries = Some(surveyed.entries);
                        entry.bytes = Some(surveyed.bytes);
                        entry.sha256 = Some(surveyed.digests.sha256);
                    }
                    Err(e) => findings.problems.push(problem(field, &e)),
                }
            }
            Some(Source::Uri(uri)) => {
                let looked = Location::parse(uri)
                    .map_err(|e| e.to_string())
                    .and_then(|location| {
                        crate::volume::check_archive_start(
                            &location,
                            &shown,
                            checks.download_timeout,
                        )
                        .map_err(|e| error_chain(&e))
                    });
                if let Err(e) = looked {
                    findings.problem(field, e);
                }
            }
        }
        found.push(entry);
    }
    found
}

/// Verify the unit files as ops_pod does before it adds the version (as
/// they would be installed, drop-ins included, the pod's ports assigned
/// from the default range on a host that holds none). A program a unit on
/// the host runs that this machine lacks is a warning, not a problem: the
/// hosts have their own programs.
fn verify_units(
    new: &NewVersion,
    manifest: &Path,
    fields: &bundle::Fields,
    checks: &Checks,
    verifier: Result<&mut dyn Systemd, String>,
    findings: &mut Findings,
) -> String {
    let name = &new.pod.name;
    let ports = crate::ports::allocate(
        name,
        &new.pod,
        &BTreeMap::new(),
        crate::ports::PortRange::default(),
        &BTreeSet::new(),
    );
    let ports = match ports {
        Ok(ports) => ports,
        Err(e) => {
            let field = match fields.ports.as_slice() {
                [] => "ports".to_owned(),
                declared => declared.join(", "),
            };
            findings.problems.push(problem(&field, &e));
            return "not verified: the ports cannot be assigned".to_owned();
        }
    };
    let systemd = match verifier {
        Ok(systemd) => systemd,
        Err(why) => return format!("not verified: {why}"),
    };
    let store = Store::new(&checks.root);
    match verify::verify(systemd, &store, checks.runtime, name, new, &ports) {
        Ok(true) => "verified with systemd-analyze".to_owned(),
        Ok(false) => "not verified: systemd-analyze is not installed here".to_owned(),
        Err(PodError::Invalid {
            source: CommandError::Failed { stderr, .. },
            ..
        }) => {
            complaints(&stderr, new, manifest, fields, findings);
            "verified with systemd-analyze".to_owned()
        }
        Err(e) => {
            findings.problems.push(problem("", &e));
            "not verified".to_owned()
        }
    }
}

/// systemd-analyze's complaints, each a problem of the unit it names (its
/// file in the bundle, or its installed name), but those about a program
/// that is not on this machine: none for a unit that runs in an image (the
/// program is in the image, as ops_pod has it), a warning for one on the
/// host. The bundle's files are named as the bundle was (`web-1/units/...`),
/// not by their canonical paths.
fn complaints(
    stderr: &str,
    new: &NewVersion,
    manifest: &Path,
    fields: &bundle::Fields,
    findings: &mut Findings,
) {
    let pod = &new.pod;
    let unresolved: Vec<usize> = new
        .unresolved
        .iter()
        .flat_map(|p| p.units.clone())
        .collect();
    let canonical = format!("{}/", new.bundle_dir.display());
    let given = match manifest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => format!("{}/", dir.display()),
        _ => String::new(),
    };
    for line in stderr.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let unit = pod.units.iter().position(|u| {
            let installed = crate::units::installed_name(&pod.name, &pod.version, &u.name);
            // A template is verified as its instance `i`.
            let named = match installed.split_once('@') {
                Some((stem, _)) => format!("{stem}@"),
                None => installed.clone(),
            };
            let source = new.unit_sources.get(&u.name).map(String::as_str);
            source.is_some_and(|s| line.contains(&format!("{s}:"))) || line.contains(&named)
        });
        let field = unit
            .and_then(|i| fields.units.get(i))
            .map_or("", String::as_str);
        let line = line.replace(&canonical, &given);
        let missing_program = line.contains("is not executable");
        let in_image =
            unit.is_some_and(|i| pod.units[i].image.is_some() || unresolved.contains(&i));
        match (missing_program, in_image) {
            (true, true) => {}
            (true, false) => findings.warnings.push(format!(
                "{field}: systemd-analyze verify: {line} (on this machine: ops_pod refuses the \
                 version on a host where it is so too)"
            )),
            (false, _) => findings.problem(field, format!("systemd-analyze verify: {line}")),
        }
    }
}
