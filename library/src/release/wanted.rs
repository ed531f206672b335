//! What a request asks for, read from its bundle (or instruction file) and
//! checked, before the repository is looked at: the pod version to publish
//! with every file pod.json names hashed, each image identified (its id
//! verified against pod.json's) and named, each volume archive hashed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::artifact::{self, Identified};
use super::instructions::assemble::Loaded;
use super::instructions::{self, Instructions};
use super::layout::{Label, Layout, Shown};
use super::{Input, Request, State};
use crate::bundle::{self, Bundle, Source};
use crate::outcome::Refusal;
use crate::records::image::Format;
use crate::records::names::{same_image, ImageId, PodName, Version};

/// What a run is about.
#[derive(Debug, Clone)]
pub enum Target {
    Publish(Box<Wanted>),
    Remove {
        layout: Layout,
        version: Version,
    },
    /// Point `tip` at a version already published (state=present with
    /// `name` and `version`, no bundle).
    Point {
        layout: Layout,
        version: Version,
    },
}

impl Target {
    pub fn layout(&self) -> &Layout {
        match self {
            Target::Publish(w) => &w.layout,
            Target::Remove { layout, .. } | Target::Point { layout, .. } => layout,
        }
    }

    pub fn version(&self) -> &Version {
        match self {
            Target::Publish(w) => &w.version,
            Target::Remove { version, .. } | Target::Point { version, .. } => version,
        }
    }
}

/// A pod version to publish.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub layout: Layout,
    pub version: Version,
    /// pod.json, byte for byte.
    pub manifest: Vec<u8>,
    /// Every file pod.json names, in its order.
    pub files: Vec<File>,
    pub images: Vec<ImageArtifact>,
    pub volumes: Vec<VolumeArtifact>,
    /// The assembled copy of an instructed bundle, kept while it is read.
    pub work: Option<std::sync::Arc<tempfile::TempDir>>,
    /// Source revisions an instruction file recorded.
    pub revisions: std::collections::BTreeMap<String, String>,
}

/// A file pod.json names.
#[derive(Debug, Clone)]
pub struct File {
    /// Relative to the bundle (and to the version directory).
    pub path: PathBuf,
    /// Where its bytes are.
    pub source: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub role: Role,
}

/// What a file is in the version directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A unit file (or other small file): copied.
    Copy,
    /// The file of `images[i]`: a link into images/.
    Image(usize),
    /// The signature of `images[i]`: a link into images/.
    Signature(usize),
    /// The archive of `volumes[i]`: a link into volumes/.
    Volume(usize),
}

#[derive(Debug, Clone)]
pub struct ImageArtifact {
    pub name: String,
    pub version: Version,
    /// The full id, as computed from the file.
    pub id: String,
    pub format: Format,
    /// The file's name in the artifact directory.
    pub file: String,
    pub signature: Option<String>,
    /// Its version was set by an instruction file (or it was taken from
    /// the repository at a version): kept, never settled on a version
    /// already holding the same image.
    pub explicit: bool,
}

#[derive(Debug, Clone)]
pub struct VolumeArtifact {
    pub name: String,
    pub version: Version,
    pub file: String,
    pub sha256: String,
    /// Its version was set by an instruction file.
    pub explicit: bool,
}

/// Artifact versions an instruction file sets (the rest: the pod version).
#[derive(Debug, Clone, Default)]
pub struct Versions {
    pub images: BTreeMap<String, Version>,
    pub volumes: BTreeMap<String, Version>,
    /// Images taken from the repository, by their path in the bundle: the
    /// name and version they have there.
    pub found: BTreeMap<PathBuf, (String, Version)>,
}

/// Read what `request` is about.
pub fn resolve(request: &Request) -> Result<Target, Refusal> {
    let given = match &request.input {
        Some(Input::Instructions(path)) => Some(instructions::load(path, &request.repo)?),
        _ => None,
    };
    let bundle_path = match (&request.input, &given) {
        (Some(Input::Bundle(path)), _) => Some(path.clone()),
        (_, Some(given)) => Some(given.bundle.clone()),
        _ => None,
    };
    let channel = agreed(
        "channel",
        request.channel.as_ref(),
        given.as_ref().and_then(|g| g.channel.as_ref()),
    )?
    .ok_or_else(|| Refusal::new("channel: required (or an instruction file that gives it)"))?;
    let label = agreed(
        "label",
        request.label.as_ref(),
        given.as_ref().and_then(|g| g.label.as_ref()),
    )?
    .unwrap_or_default();
    let named_by_instructions = given
        .as_ref()
        .is_some_and(|g| g.pod.is_some() && g.version.is_some());
    if request.state == State::Absent && (bundle_path.is_none() || named_by_instructions) {
        return absent_only(request, channel, label, given.as_ref());
    }
    let Some(bundle_path) = bundle_path else {
        return match (&request.name, &request.version) {
            (Some(pod), Some(version)) => Ok(Target::Point {
                layout: Layout {
                    repo: request.repo.clone(),
                    channel,
                    label,
                    pod: pod.clone(),
                },
                version: version.clone(),
            }),
            _ => Err(Refusal::new(
                "give bundle or instructions (one of them) for state=present, or name and \
                 version to point tip at a published version",
            )),
        };
    };
    let loaded = load_bundle(&bundle_path, given.as_ref(), request, &label)?;
    let bundle = &loaded.bundle;
    let layout = Layout {
        repo: request.repo.clone(),
        channel,
        label,
        pod: bundle.pod.name.clone(),
    };
    if request.state == State::Absent {
        return Ok(Target::Remove {
            version: bundle.pod.version.clone(),
            layout,
        });
    }
    let file = given.as_ref().map(|g| g.file.clone());
    let (mut versions, revisions) = given.map(|g| (g.versions, g.revisions)).unwrap_or_default();
    versions.found = loaded.found.clone();
    let mut wanted = read_bundle(bundle, layout, &versions)?;
    if let Some(file) = file {
        check_instructed(&file, &versions, &wanted, &bundle.pod)?;
    }
    wanted.work = loaded.work.clone();
    wanted.revisions = revisions;
    Ok(Target::Publish(Box::new(wanted)))
}

/// Every image and volume an instruction file gives a version for must be
/// one the pod stores (an image file, a volume archive): a misspelt name
/// would otherwise be ignored.
fn check_instructed(
    file: &Path,
    versions: &Versions,
    wanted: &Wanted,
    pod: &crate::bundle::Pod,
) -> Result<(), Refusal> {
    let listed = |names: Vec<&str>, what: &str| {
        if names.is_empty() {
            format!("it has no {what}")
        } else {
            format!("its {what}: {}", names.join(", "))
        }
    };
    let images: Vec<&str> = wanted.images.iter().map(|i| i.name.as_str()).collect();
    let volumes: Vec<&str> = wanted.volumes.iter().map(|v| v.name.as_str()).collect();
    let mut problems = Vec::new();
    for name in versions.images.keys() {
        if !images.contains(&name.as_str()) {
            problems.push(format!(
                "images.{name}: pod {} has no image of that name ({})",
                pod.name,
                listed(images.clone(), "images")
            ));
        }
    }
    for name in versions.volumes.keys() {
        if volumes.contains(&name.as_str()) {
            continue;
        }
        let without_archive = pod.volumes.iter().any(|v| v.name == *name);
        problems.push(format!(
            "volumes.{name}: pod {} has no volume of that name{} ({})",
            pod.name,
            if without_archive {
                " with an archive to store"
            } else {
                ""
            },
            listed(
                volumes.clone(),
                if pod.volumes.len() == volumes.len() {
                    "volumes"
                } else {
                    "volumes with an archive"
                }
            )
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Refusal::new(format!(
            "{}: {}",
            file.display(),
            problems.join("; ")
        )))
    }
}

/// state=absent named by `name` and `version` (or an instruction file
/// without a bundle to read).
fn absent_only(
    request: &Request,
    channel: PodName,
    label: Label,
    given: Option<&Instructions>,
) -> Result<Target, Refusal> {
    let name = agreed(
        "name",
        request.name.as_ref(),
        given.and_then(|g| g.pod.as_ref()),
    )?;
    let version = agreed(
        "version",
        request.version.as_ref(),
        given.and_then(|g| g.version.as_ref()),
    )?;
    match (name, version) {
        (Some(pod), Some(version)) => Ok(Target::Remove {
            layout: Layout {
                repo: request.repo.clone(),
                channel,
                label,
                pod,
            },
            version,
        }),
        _ => Err(Refusal::new(
            "state=absent needs the pod and version: give name and version, or bundle or instructions",
        )),
    }
}

/// An option and the instruction file's value must agree when both are
/// given; either alone stands.
fn agreed<T: Clone + PartialEq + Shown>(
    what: &str,
    option: Option<&T>,
    instructed: Option<&T>,
) -> Result<Option<T>, Refusal> {
    match (option, instructed) {
        (Some(a), Some(b)) if a != b => Err(Refusal::new(format!(
            "{what}: the option says {:?} but the instruction file says {:?}",
            a.shown(),
            b.shown()
        ))),
        (Some(a), _) => Ok(Some(a.clone())),
        (None, b) => Ok(b.cloned()),
    }
}

/// Load and validate the bundle; an instruction file's pod and version
/// must be pod.json's, as must the `name` and `version` options.
fn load_bundle(
    path: &Path,
    given: Option<&Instructions>,
    request: &Request,
    label: &Label,
) -> Result<Loaded, Refusal> {
    let loaded = match given {
        Some(given) => instructions::load_bundle(given, &request.repo, label)?,
        None => Loaded {
            bundle: bundle::load(path)
                .map_err(|e| Refusal::new(crate::ansible::error_chain(&e)))?,
            work: None,
            found: BTreeMap::new(),
        },
    };
    // A release names every image by its id (ops_pod checks what it
    // fetches against it): an image pod.json gives no id is refused here,
    // not left out.
    if let Some(pending) = loaded.bundle.pending.first() {
        return Err(Refusal::new(format!(
            "{}: {}.id: a released image needs its id (ops_pod computes it only for a bundle \
             deployed directly); give the image's digest (sha512-<hex> or sha256:<hex>)",
            loaded.bundle.manifest.display(),
            pending.at
        )));
    }
    // A release holds its unit files (ops_pod reads them from it).
    if let Some(unit) = loaded.bundle.pod.units.iter().find(|u| u.uri.is_some()) {
        return Err(Refusal::new(format!(
            "{}: unit {} is given by URI ({}); a release holds its unit files: ship the file in \
             the bundle and give its path",
            loaded.bundle.manifest.display(),
            unit.name,
            crate::records::uri::redact(unit.uri.as_deref().unwrap_or_default())
        )));
    }
    let pod = &loaded.bundle.pod;
    let (name, version) = (pod.name.to_string(), pod.version.to_string());
    let claims = [
        (
            "the instruction file's pod",
            given.and_then(|g| g.pod.as_ref()).map(|p| p.to_string()),
            &name,
        ),
        (
            "the instruction file's version",
            given
                .and_then(|g| g.version.as_ref())
                .map(|v| v.to_string()),
            &version,
        ),
        (
            "name: the option",
            request.name.as_ref().map(|n| n.to_string()),
            &name,
        ),
        (
            "version: the option",
            request.version.as_ref().map(|v| v.to_string()),
            &version,
        ),
    ];
    for (what, claim, actual) in claims {
        if let Some(claim) = claim.filter(|c| c != actual) {
            return Err(Refusal::new(format!(
                "{what} says {claim:?} but the bundle's pod.json says {actual:?}"
            )));
        }
    }
    Ok(loaded)
}

/// Every file the bundle's pod names, hashed; its images identified.
pub fn read_bundle(
    bundle: &Bundle,
    layout: Layout,
    versions: &Versions,
) -> Result<Wanted, Refusal> {
    // The bytes validated, not a second read (which could differ).
    let manifest = bundle.text.clone();
    let pod = &bundle.pod;
    let named: Vec<PathBuf> = bundle_paths(pod);
    let written = super::written::written_paths(&manifest, &bundle.dir, &named);
    let mut wanted = Wanted {
        layout,
        version: pod.version.clone(),
        manifest,
        files: Vec::new(),
        images: Vec::new(),
        volumes: Vec::new(),
        work: None,
        revisions: std::collections::BTreeMap::new(),
    };
    for unit in &pod.units {
        wanted.add_file(bundle, &written, &unit.file, Role::Copy)?;
    }
    for image in &pod.images {
        let Source::Path(path) = &image.source else {
            continue; // fetched from its URI at deploy time: nothing to store
        };
        let index = wanted.images.len();
        let artifact = identify_image(bundle, path, &image.id, versions)?;
        if let Some(other) = wanted.images.iter().find(|i| i.name == artifact.name) {
            return Err(Refusal::new(format!(
                "two images of the bundle are both named {:?} ({:?} and {:?}): the repository keeps \
                 images by name",
                artifact.name, other.file, artifact.file
            )));
        }
        wanted.images.push(artifact);
        wanted.add_file(bundle, &written, path, Role::Image(index))?;
        if let Some(Source::Path(signature)) = &image.signature {
            wanted.images[index].signature = Some(file_name(signature));
            wanted.add_file(bundle, &written, signature, Role::Signature(index))?;
        }
    }
    for volume in &pod.volumes {
        let Some(Source::Path(path)) = &volume.data else {
            continue;
        };
        let index = wanted.volumes.len();
        let instructed = versions.volumes.get(&volume.name);
        let version = instructed.unwrap_or(&pod.version).clone();
        let file = wanted.add_file(bundle, &written, path, Role::Volume(index))?;
        wanted.volumes.push(VolumeArtifact {
            name: volume.name.clone(),
            version,
            file: file_name(path),
            sha256: file.sha256,
            explicit: instructed.is_some(),
        });
    }
    Ok(wanted)
}

impl Wanted {
    /// Hash and add a file (once, however often pod.json names it), at
    /// the path pod.json writes for it.
    fn add_file(
        &mut self,
        bundle: &Bundle,
        written: &HashMap<PathBuf, PathBuf>,
        resolved: &Path,
        role: Role,
    ) -> Result<File, Refusal> {
        let path = written.get(resolved).map_or(resolved, PathBuf::as_path);
        if let Some(file) = self.files.iter().find(|f| f.path == path) {
            return Ok(file.clone());
        }
        refuse_reserved(path, resolved, role)?;
        let source = bundle.dir.join(resolved);
        let (sha256, size) = artifact::hash_file(&source).map_err(|e| {
            Refusal::new(format!(
                "cannot read {:?}: {e}",
                source.display().to_string()
            ))
        })?;
        let file = File {
            path: path.to_owned(),
            source,
            sha256,
            size,
            role,
        };
        self.files.push(file.clone());
        Ok(file)
    }
}

/// Refuse a bundle file whose name is the release's own: `pod.json` or
/// `release.json` at the top of the version directory, or an image's
/// `id` and `sha512`, a volume's `sha256` in its artifact directory.
fn refuse_reserved(path: &Path, resolved: &Path, role: Role) -> Result<(), Refusal> {
    use super::layout::{ID, RECORD, SHA256, SHA512};
    let name = file_name(resolved);
    let reserved: &[&str] = match role {
        Role::Copy => &[],
        Role::Image(_) | Role::Signature(_) => &[ID, SHA512],
        Role::Volume(_) => &[SHA256],
    };
    let top = path == Path::new(bundle::MANIFEST) || path == Path::new(RECORD);
    if !top && !reserved.contains(&name.as_str()) {
        return Ok(());
    }
    Err(Refusal::new(format!(
        "bundle file {:?}: the release keeps that name for itself ({} and {RECORD} in a \
         version directory, {ID} and {SHA512} beside an image, {SHA256} beside a volume): give \
         the file another name",
        path.display().to_string(),
        bundle::MANIFEST,
    )))
}

/// Every bundle file the pod names, by its resolved path.
fn bundle_paths(pod: &crate::bundle::Pod) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = pod.units.iter().map(|u| u.file.clone()).collect();
    for image in &pod.images {
        for source in std::iter::once(&image.source).chain(image.signature.as_ref()) {
            if let Source::Path(p) = source {
                paths.push(p.clone());
            }
        }
    }
    for volume in &pod.volumes {
        if let Some(Source::Path(p)) = &volume.data {
            paths.push(p.clone());
        }
    }
    paths
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Identify an image file of the bundle and check its id against pod.json.
fn identify_image(
    bundle: &Bundle,
    path: &Path,
    id: &ImageId,
    versions: &Versions,
) -> Result<ImageArtifact, Refusal> {
    // A name from the bundle, quoted: it may hold any character.
    let shown = format!("{:?}", path.display().to_string());
    let Identified { format, ids, name } =
        artifact::identify(&bundle.dir.join(path), &shown).map_err(Refusal::new)?;
    let Some(full) = ids
        .iter()
        .find(|full| ImageId::parse(full).is_ok_and(|f| same_image(id, &f)))
    else {
        return Err(Refusal::new(format!(
            "image {shown}: pod.json gives its id as {id} but the file is {}",
            if ids.is_empty() {
                "no image".to_owned()
            } else {
                ids.join(", ")
            }
        )));
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let found = versions.found.get(path);
    let name = found.map(|(n, _)| n.clone()).or(name).unwrap_or(stem);
    PodName::parse(&name).map_err(|e| {
        Refusal::new(format!(
            "image {shown}: its name {name:?} cannot name a directory: {e}"
        ))
    })?;
    let set = found.map(|(_, v)| v).or_else(|| versions.images.get(&name));
    let version = set.unwrap_or(&bundle.pod.version).clone();
    Ok(ImageArtifact {
        name,
        version,
        id: full.clone(),
        format,
        file: file_name(path),
        signature: None,
        explicit: set.is_some(),
    })
}
