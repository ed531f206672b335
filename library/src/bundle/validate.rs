//! From either wire shape to the validated [`Pod`], collecting every problem.
//!
//! Each shape first becomes a [`Draft`]: the same fields, each carrying the
//! field path it was read from (`images[1].id`,
//! `annotations[0].value.systemd-units[2].unit-file`). Validation then runs
//! once over the draft and reports all problems together, so a bad bundle
//! is fixed in one round trip, and nothing on the host is touched before it
//! passes.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::native::{InstanceNameWire, InstancesWire, PortWire, PortsWire, VersionWire};
use super::{Fields, PendingImage, Problem};
use crate::records::names::{self, ImageId, PodName, UnitName, Version};
use crate::records::pod::{Image, Pod, Port, Source, Unit, Volume};

/// Most instances a unit may have: beyond this a typo (`80800`) is likelier
/// than intent.
pub(super) const MAX_INSTANCES: u64 = 1000;

/// A pod as read from either shape, not yet validated.
#[derive(Debug, Default)]
pub(super) struct Draft {
    pub name: Field<String>,
    pub version: Option<Field<VersionWire>>,
    pub units: Vec<DraftUnit>,
    pub images: Vec<DraftImage>,
    pub volumes: Vec<DraftVolume>,
    pub ports: Vec<Field<PortsWire>>,
    pub environment: Field<BTreeMap<String, String>>,
    /// Problems found while reading the shape (Appc cross-references).
    pub problems: Vec<Problem>,
}

/// A value and the field path it was read from.
#[derive(Debug, Default, Clone)]
pub(super) struct Field<T> {
    pub at: String,
    pub value: T,
}

impl<T> Field<T> {
    pub fn new(at: impl Into<String>, value: T) -> Self {
        Field {
            at: at.into(),
            value,
        }
    }
}

#[derive(Debug)]
pub(super) struct DraftUnit {
    pub file: Field<String>,
    pub start: bool,
    pub instances: Option<Field<InstancesWire>>,
    /// The instances are a container's `replication`, shared by its unit
    /// files: they apply to its templates only.
    pub shared_instances: bool,
    /// The id of the pod image the unit runs in.
    pub image: Option<Field<String>>,
}

#[derive(Debug)]
pub(super) struct DraftImage {
    /// Path of the image entry (`images[1]`).
    pub at: String,
    pub id: Option<String>,
    pub path: Option<String>,
    pub uri: Option<String>,
    pub signature: Option<String>,
}

#[derive(Debug)]
pub(super) struct DraftVolume {
    pub name: Field<String>,
    pub mount: Option<Field<String>>,
    pub read_only: bool,
    pub data: Option<Field<String>>,
}

/// Join a field path and a member name.
pub(super) fn at(base: &str, member: &str) -> String {
    if base.is_empty() {
        member.to_owned()
    } else {
        format!("{base}.{member}")
    }
}

struct Validator<'a> {
    dir: &'a Path,
    files: Files<'a>,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, at: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            field: at.to_owned(),
            message: message.into(),
        });
    }

    fn check<T>(&mut self, at: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.problem(at, message)).ok()
    }

    /// A path relative to pod.json that names a regular file inside the
    /// bundle, even after following symlinks. Returns it relative to the
    /// bundle directory.
    fn bundle_file(&mut self, field: &Field<String>) -> Option<PathBuf> {
        let result = match self.files {
            Files::Bundle => bundle_file(self.dir, self.dir, &field.value),
            Files::Within(boundary) => bundle_file(self.dir, boundary, &field.value),
            Files::Remote { .. } => lexical(&field.value),
        };
        self.check(&field.at, result)
    }

    /// A unit file: read from the bundle directory, even when the other
    /// artifacts are on a server (the unit files were fetched into it).
    fn unit_file(&mut self, field: &Field<String>) -> Option<PathBuf> {
        match self.files {
            Files::Remote { units: true } => {
                let result = bundle_file(self.dir, self.dir, &field.value);
                self.check(&field.at, result)
            }
            _ => self.bundle_file(field),
        }
    }

    /// A bundle path, or a URI when the text has a scheme.
    fn source(&mut self, field: &Field<String>) -> Option<Source> {
        if field.value.contains("://") {
            let result = check_uri(&field.value).map(|()| Source::Uri(field.value.clone()));
            self.check(&field.at, result)
        } else {
            self.bundle_file(field).map(Source::Path)
        }
    }
}

/// Which files a bundle's paths may name.
#[derive(Debug, Clone, Copy)]
pub enum Files<'a> {
    /// Regular files inside the bundle directory, symlinks resolved inside
    /// it.
    Bundle,
    /// Regular files whose symlinks resolve anywhere inside this directory
    /// (canonical): a release repository, whose pod directories link to
    /// the images and volumes stored beside them.
    Within(&'a Path),
    /// The artifacts are on a server: their paths are checked as text
    /// only. The unit files are checked in the bundle directory once they
    /// have been fetched into it (`units`).
    Remote { units: bool },
}

/// `relative` as pod.json writes it, checked as text: relative, never
/// leaving the bundle directory; returned without `.` components and with
/// each `..` taken back.
pub(super) fn lexical(relative: &str) -> Result<PathBuf, String> {
    // A path that looks like a URI with credentials (`http:/u:pw@h/x`) is
    // shown without them.
    let shown = crate::records::uri::redact(relative);
    if relative.is_empty() {
        return Err("expected a path relative to pod.json, got an empty string".into());
    }
    let path = Path::new(relative);
    if path.is_absolute() {
        return Err(format!(
            "expected a path relative to pod.json, got the absolute path {shown:?}"
        ));
    }
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => normal.push(name),
            Component::ParentDir if !normal.pop() => {
                return Err(format!("{shown:?} leaves the bundle directory"));
            }
            _ => {}
        }
    }
    if normal.as_os_str().is_empty() {
        return Err(format!("{shown:?} names the bundle directory, not a file"));
    }
    Ok(normal)
}

/// Check `relative` (as written in pod.json) against the bundle directory
/// `dir` (canonical): a regular file that resolves inside `boundary` (the
/// bundle directory itself, or the repository holding it). Returned
/// relative to `dir` as resolved when it resolves inside `dir`, else as
/// written (through the link that leads out of `dir`).
fn bundle_file(dir: &Path, boundary: &Path, relative: &str) -> Result<PathBuf, String> {
    let shown = crate::records::uri::redact(relative);
    let written = lexical(relative)?;
    let resolved = match fs::canonicalize(dir.join(relative)) {
        Ok(resolved) => resolved,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("{shown:?}: no such file in the bundle"));
        }
        Err(e) => return Err(format!("{shown:?}: cannot be read: {e}")),
    };
    let inside = match (resolved.strip_prefix(dir), resolved.strip_prefix(boundary)) {
        (Ok(inside), _) => inside.to_path_buf(),
        (Err(_), Ok(_)) => written,
        _ if boundary == dir => {
            return Err(format!(
                "{shown:?} resolves to {}, outside the bundle directory",
                resolved.display()
            ))
        }
        _ => {
            return Err(format!(
                "{shown:?} resolves to {}, outside the repository {}",
                resolved.display(),
                boundary.display()
            ))
        }
    };
    match fs::metadata(&resolved) {
        Ok(meta) if meta.is_file() => Ok(inside),
        Ok(_) => Err(format!("{shown:?} is not a regular file")),
        Err(e) => Err(format!("{shown:?}: cannot be read: {e}")),
    }
}

/// An `http`, `https` or `file` URI with something after the scheme.
fn check_uri(uri: &str) -> Result<(), String> {
    let scheme = uri
        .split_once("://")
        .map(|(s, rest)| (s.to_ascii_lowercase(), rest));
    let well_formed = match scheme.as_ref().map(|(s, rest)| (s.as_str(), *rest)) {
        Some(("http" | "https", rest)) => {
            let host = rest.split('/').next().unwrap_or_default();
            !host.is_empty() && !host.contains(char::is_whitespace)
        }
        Some(("file", rest)) => rest.starts_with('/') && rest.len() > 1,
        _ => false,
    };
    if well_formed && !uri.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(format!(
            "expected an http://, https:// or file:/// URI, got {:?}",
            crate::records::uri::redact(uri)
        ))
    }
}

/// An image's `uri` as a URI with a scheme. Seed 001 lets it be "without
/// scheme": one that starts with a single `/` is a local file
/// (`file:///srv/images/web.aci`); one that starts with a host name (with a
/// dot, or `localhost`, maybe a `:port`) and a path is fetched over https
/// (`images.example.com/web.aci`), never plain http. Anything else would be
/// a guess (a relative path, `//host`, `host:` with no port) and is
/// refused, saying how to write it.
pub(super) fn image_uri(uri: &str) -> Result<String, String> {
    if uri.contains("://") {
        return Ok(uri.to_owned());
    }
    let shown = crate::records::uri::redact(uri);
    if uri.starts_with('/') && !uri.starts_with("//") {
        return Ok(format!("file://{}", encode_path(uri)));
    }
    let (host, path) = uri.split_once('/').unwrap_or((uri, ""));
    let (name, port) = host.split_once(':').unwrap_or((host, "80"));
    let port_number = port.parse::<u16>().is_ok_and(|p| p > 0);
    let named = name == "localhost"
        || (name.contains('.')
            && !name.starts_with('.')
            && !name.ends_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-')));
    let ported = port_number && port.chars().all(|c| c.is_ascii_digit());
    if named && ported && !path.is_empty() && !host.contains('@') {
        Ok(format!("https://{host}/{}", encode_path(path)))
    } else {
        Err(format!(
            "{shown:?} has no scheme and names no host and path: a uri without scheme is \
             read as https://<host>/<path> (the host with a dot, or localhost) or, from /, as \
             file://; give the full URI, or the image's path in the bundle as path"
        ))
    }
}

/// A path written without scheme, as the path of a URI: each byte a URI
/// would read otherwise (`%`, `?`, `#`, blanks, control characters, bytes
/// beyond ASCII) percent-encoded, so the file read is the one named.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        let kept = byte.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&byte);
        if kept {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An absolute mount point without `.`, `..`, empty components or a
/// trailing slash.
fn check_mount(path: &str) -> Result<PathBuf, String> {
    let normal = path.starts_with('/')
        && path.len() > 1
        && !path.ends_with('/')
        && path[1..]
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if normal {
        crate::records::unit_syntax::check_unit_path(path)
            .map_err(|reason| format!("mount point {path:?}: {reason}"))?;
        Ok(PathBuf::from(path))
    } else {
        Err(format!(
            "expected an absolute, normalised mount point other than / (such as /var/lib/web), got {path:?}"
        ))
    }
}

impl Draft {
    /// Where each entry was read: the pod's units, images (those with an
    /// id: the others are pending) and volumes follow the draft's order
    /// once it validates with no problem.
    fn fields(&self) -> Fields {
        Fields {
            units: self.units.iter().map(|u| u.file.at.clone()).collect(),
            images: (self.images.iter())
                .filter(|i| i.id.is_some())
                .map(|i| i.at.clone())
                .collect(),
            volumes: (self.volumes.iter())
                .map(|v| v.data.as_ref().unwrap_or(&v.name).at.clone())
                .collect(),
            ports: self.ports.iter().map(|p| p.at.clone()).collect(),
        }
    }

    /// Validate the whole draft against the bundle directory `dir`
    /// (canonical): the pod, or every problem found.
    pub(super) fn validate(
        self,
        dir: &Path,
        files: Files<'_>,
    ) -> Result<(Pod, Vec<PendingImage>, Fields), Vec<Problem>> {
        let fields = self.fields();
        let mut v = Validator {
            dir,
            files,
            problems: self.problems,
        };
        let name = v.check(&self.name.at, PodName::parse(&self.name.value));
        let version = match &self.version {
            None => None,
            Some(field) => match &field.value {
                VersionWire::Number(n) => match n.as_u64() {
                    Some(n) => Some(Version::parse(&n.to_string()).expect("digits are a version")),
                    None => {
                        v.problem(
                            &field.at,
                            format!("expected a non-negative integer, got {n}"),
                        );
                        None
                    }
                },
                VersionWire::Text(s) => v.check(&field.at, Version::parse(s)),
            },
        };
        let (mut units, unit_images) = validate_units(&mut v, self.units);
        let mut images = validate_images(&mut v, self.images);
        resolve_unit_images(&mut v, &mut units, unit_images, &mut images);
        let volumes = validate_volumes(&mut v, self.volumes);
        let ports = validate_ports(&mut v, self.ports);
        for (key, value) in &self.environment.value {
            // A name that is no identifier is quoted: it may hold a newline.
            let field =
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    at(&self.environment.at, key)
                } else {
                    format!("{}[{key:?}]", self.environment.at)
                };
            if v.check(&field, names::check_env_name(key)).is_some() {
                v.check(
                    &field,
                    crate::records::unit_syntax::check_env_value(key, value),
                );
            }
        }

        match (name, version) {
            (Some(name), Some(version)) if v.problems.is_empty() => Ok((
                Pod {
                    name,
                    bundle_name: None,
                    version,
                    units,
                    images: images.images,
                    volumes,
                    ports,
                    environment: self.environment.value,
                },
                images.pending,
                fields,
            )),
            _ => Err(v.problems),
        }
    }
}

/// The numbers an instance list may hold for its instances to be ports: the
/// unprivileged ports a service binds without help. Below that a list is
/// more likely instance numbers (`[1, 2]`) than ports; holding ports 1 and 2
/// on the host for them would be wrong. A privileged port is given as a
/// fixed port in `ports` instead.
pub const INSTANCE_PORTS: std::ops::RangeInclusive<u64> = 1024..=65535;

/// Instances given as a list of port numbers (`"replication": [8080,
/// 8081]`): each instance is named after its port, and the port is held.
/// Only a list of numbers, every one in [`INSTANCE_PORTS`], is; a count
/// never is.
fn are_ports(instances: &InstancesWire) -> bool {
    match instances {
        InstancesWire::Count(_) => false,
        InstancesWire::Names(list) => list.iter().all(|item| {
            matches!(item, InstanceNameWire::Number(n)
                if n.as_u64().is_some_and(|n| INSTANCE_PORTS.contains(&n)))
        }),
    }
}

fn instance_names(v: &mut Validator<'_>, field: &Field<InstancesWire>) -> Option<Vec<String>> {
    match &field.value {
        InstancesWire::Count(n) => match n.as_u64() {
            Some(count @ 1..=MAX_INSTANCES) => Some((1..=count).map(|i| i.to_string()).collect()),
            _ => {
                v.problem(
                    &field.at,
                    format!("expected a number of instances from 1 to {MAX_INSTANCES}, got {n}"),
                );
                None
            }
        },
        InstancesWire::Names(list) if list.is_empty() => {
            v.problem(
                &field.at,
                "expected at least one instance name, got an empty list",
            );
            None
        }
        InstancesWire::Names(list) => {
            let mut names: Vec<String> = Vec::new();
            let mut ok = true;
            for (i, item) in list.iter().enumerate() {
                let item_at = format!("{}[{i}]", field.at);
                let name = match item {
                    InstanceNameWire::Number(n) => match n.as_u64() {
                        Some(n) => n.to_string(),
                        None => {
                            v.problem(
                                &item_at,
                                format!("expected a non-negative integer or a name, got {n}"),
                            );
                            ok = false;
                            continue;
                        }
                    },
                    InstanceNameWire::Text(s) => s.clone(),
                };
                if let Err(e) = names::check_instance(&name) {
                    v.problem(&item_at, e);
                    ok = false;
                } else if names.contains(&name) {
                    v.problem(&item_at, format!("duplicate instance {name:?}"));
                    ok = false;
                } else {
                    names.push(name);
                }
            }
            ok.then_some(names)
        }
    }
}

/// A unit's `image`, resolved once the pod's images are validated: the
/// index of the unit and the field.
type UnitImage = (usize, Field<String>);

/// A unit's `image` names one of the pod's images: by its id, or by its
/// `path` or `uri` as pod.json writes it (the only way to name an image
/// pod.json gives no id). `listed` holds every image id the pod lists,
/// also those of images with other problems (reported where they are): a
/// unit naming one of those is not told its image is missing.
fn resolve_unit_images(
    v: &mut Validator<'_>,
    units: &mut [Unit],
    pending: Vec<UnitImage>,
    images: &mut Images,
) {
    for (index, field) in pending {
        let by_text = images
            .written
            .iter()
            .find(|(written, _)| !written.is_empty() && *written == field.value)
            .map(|(_, named)| named.clone());
        let named = match by_text {
            Some(named) => named,
            None => {
                let Some(id) = v.check(
                    &field.at,
                    ImageId::parse(&field.value)
                        .map_err(|e| format!("{e}, or the path or uri of one of the pod's images")),
                ) else {
                    continue;
                };
                match images.listed.iter().find(|l| names::same_image(l, &id)) {
                    Some(listed) => Named::Id(listed.clone()),
                    None => {
                        v.problem(
                            &field.at,
                            format!("image {id} is not among the pod's images; list it in images"),
                        );
                        continue;
                    }
                }
            }
        };
        match named {
            Named::Id(id) => units[index].image = Some(id),
            Named::Pending(i) => images.pending[i].units.push(index),
        }
    }
}

fn validate_units(v: &mut Validator<'_>, drafts: Vec<DraftUnit>) -> (Vec<Unit>, Vec<UnitImage>) {
    let mut unit_images = Vec::new();
    let mut units: Vec<Unit> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    let with_template = shared_with_template(&drafts);
    for draft in drafts {
        let (file, uri, base) = if draft.file.value.contains("://") {
            // The unit's name is the URI's last segment.
            let Some(uri) = unit_uri(v, &draft.file) else {
                continue;
            };
            let base = uri_file_name(&uri);
            (Some(PathBuf::from(&base)), Some(uri), base)
        } else {
            (v.unit_file(&draft.file), None, file_name(&draft.file.value))
        };
        let shipped = v.check(&draft.file.at, UnitName::parse(&base));
        let replicated = shipped
            .as_ref()
            .filter(|name| replicates_plain(&draft, name, &with_template))
            .cloned();
        let name = match &replicated {
            Some(plain) => v.check(&draft.file.at, plain.as_template()),
            None => shipped,
        };
        let name = name.filter(|name| unique_unit(v, &draft.file.at, name, &replicated, &mut seen));
        let (instances, instance_ports) = unit_instances(v, &draft, &base, name.as_ref());
        if let (Some(name), Some(file)) = (name, file) {
            if let Some(field) = draft.image {
                unit_images.push((units.len(), field));
            }
            units.push(Unit {
                name,
                file,
                instances,
                start: draft.start,
                image: None,
                instance_ports,
                shipped_as: replicated,
                uri,
            });
        }
    }
    (units, unit_images)
}

/// A unit file given by URI (seed 001: "either a path or an URI"): an
/// `http`, `https` or `file` URI whose last segment is the unit's name, in a
/// bundle deployed directly (a release holds its unit files).
fn unit_uri(v: &mut Validator<'_>, field: &Field<String>) -> Option<String> {
    let result = check_uri(&field.value).and_then(|()| match v.files {
        Files::Bundle => Ok(field.value.clone()),
        _ => Err(format!(
            "{}: a release holds its unit files; give the file's path",
            crate::records::uri::redact(&field.value)
        )),
    });
    v.check(&field.at, result)
}

/// The last segment of a URI's path: the unit's name.
fn uri_file_name(uri: &str) -> String {
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

/// The file name a unit file path ends with.
fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The shared `replication` fields (by field path) that apply to a
/// template among their container's unit files.
fn shared_with_template(drafts: &[DraftUnit]) -> Vec<String> {
    drafts
        .iter()
        .filter(|d| d.shared_instances)
        .filter(|d| UnitName::parse(&file_name(&d.file.value)).is_ok_and(|n| n.is_template()))
        .filter_map(|d| d.instances.as_ref().map(|f| f.at.clone()))
        .collect()
}

/// Whether plain unit `name` is given instances and so is installed as its
/// template: an Appc unit with `instances`, or a unit of a container whose
/// `replication` has no template to apply to (the seeds' own example:
/// `"replication": [8080, 8081, 8082]` with `example.service`). A
/// container that has templates keeps replicating those only, its plain
/// units running once, as before.
fn replicates_plain(draft: &DraftUnit, name: &UnitName, with_template: &[String]) -> bool {
    match &draft.instances {
        Some(field) if !name.is_template() => {
            !draft.shared_instances || !with_template.contains(&field.at)
        }
        _ => false,
    }
}

/// Whether unit `name` is not shipped twice; `seen` maps each name to the
/// field that shipped it first. A plain unit installed as its template
/// (`replicated`) takes the template's name.
fn unique_unit(
    v: &mut Validator<'_>,
    at: &str,
    name: &UnitName,
    replicated: &Option<UnitName>,
    seen: &mut HashMap<String, String>,
) -> bool {
    if let Some(first) = seen.get(name.as_str()) {
        let installed = match replicated {
            Some(plain) => format!(" ({plain} with instances is installed as {name})"),
            None => String::new(),
        };
        v.problem(
            at,
            format!("duplicate unit {name}: {first} ships it already{installed}"),
        );
        false
    } else {
        seen.insert(name.to_string(), at.to_owned());
        true
    }
}

/// The unit's instance names and whether they are ports (see
/// [`are_ports`]).
fn unit_instances(
    v: &mut Validator<'_>,
    draft: &DraftUnit,
    base: &str,
    name: Option<&UnitName>,
) -> (Vec<String>, bool) {
    let template = name.is_some_and(UnitName::is_template);
    match &draft.instances {
        Some(field) if template => (
            instance_names(v, field).unwrap_or_default(),
            are_ports(&field.value),
        ),
        None if template && draft.start => {
            v.problem(
                &draft.file.at,
                format!(
                    "{base} is a template unit: give its instances (a count or a list of names) \
                     or do not start it"
                ),
            );
            (Vec::new(), false)
        }
        _ => (Vec::new(), false),
    }
}

/// What validating the images found: the valid ones, the id of every
/// image with a valid one, those without an id, and how each image was
/// written (`path` or `uri` as in pod.json) so a unit may name it so.
#[derive(Default)]
struct Images {
    images: Vec<Image>,
    listed: Vec<ImageId>,
    pending: Vec<PendingImage>,
    written: Vec<(String, Named)>,
}

/// An image a unit may name by its `path` or `uri`.
#[derive(Clone)]
enum Named {
    Id(ImageId),
    Pending(usize),
}

fn validate_images(v: &mut Validator<'_>, drafts: Vec<DraftImage>) -> Images {
    let mut out = Images::default();
    let mut seen: HashMap<ImageId, String> = HashMap::new();
    for draft in drafts {
        let id_at = at(&draft.at, "id");
        let id = draft
            .id
            .as_ref()
            .and_then(|id| v.check(&id_at, ImageId::parse(id)));
        if let Some(id) = &id {
            if let Some(first) = seen.get(id) {
                v.problem(
                    &id_at,
                    format!("duplicate image {id}: {first} has it already"),
                );
            } else {
                seen.insert(id.clone(), draft.at.clone());
                out.listed.push(id.clone());
            }
        }
        let written = draft.path.clone().or(draft.uri.clone()).unwrap_or_default();
        let source = image_source(v, &draft);
        let signature = draft
            .signature
            .map(|s| v.source(&Field::new(at(&draft.at, "signature"), s)));
        let (Some(source), None | Some(Some(_))) = (source, &signature) else {
            continue;
        };
        let signature = signature.flatten();
        match (id, draft.id.is_some(), source) {
            (Some(id), _, source) => {
                out.written.push((written, Named::Id(id.clone())));
                out.images.push(Image {
                    id,
                    source,
                    signature,
                    computed: false,
                });
            }
            (None, false, source) if matches!(v.files, Files::Bundle) => {
                out.written
                    .push((written, Named::Pending(out.pending.len())));
                out.pending.push(PendingImage {
                    at: draft.at.clone(),
                    source,
                    signature,
                    units: Vec::new(),
                });
            }
            (None, false, _) => v.problem(
                &id_at,
                "required for an image of a release: ops computes the id of an image only for \
                 a bundle deployed directly; give the image's digest (sha512-<hex> or \
                 sha256:<hex>)",
            ),
            (None, true, _) => {}
        }
    }
    out
}

/// The image's file: its `path` in the bundle or its `uri`.
fn image_source(v: &mut Validator<'_>, draft: &DraftImage) -> Option<Source> {
    match (&draft.path, &draft.uri) {
        (Some(_), Some(_)) => {
            v.problem(&draft.at, "give either path or uri, not both");
            None
        }
        (None, None) => {
            v.problem(&draft.at, "give the image's path (in the bundle) or uri");
            None
        }
        (Some(path), None) => v
            .bundle_file(&Field::new(at(&draft.at, "path"), path.clone()))
            .map(Source::Path),
        (None, Some(uri)) => {
            let result = image_uri(uri).and_then(|uri| check_uri(&uri).map(|()| Source::Uri(uri)));
            v.check(&at(&draft.at, "uri"), result)
        }
    }
}

fn validate_volumes(v: &mut Validator<'_>, drafts: Vec<DraftVolume>) -> Vec<Volume> {
    let mut volumes: Vec<Volume> = Vec::new();
    let mut names_seen: HashMap<String, String> = HashMap::new();
    let mut mounts_seen: HashMap<PathBuf, String> = HashMap::new();
    for draft in drafts {
        let name = v.check(&draft.name.at, names::check_volume_name(&draft.name.value));
        if name.is_some() {
            if let Some(first) = names_seen.get(&draft.name.value) {
                v.problem(
                    &draft.name.at,
                    format!(
                        "duplicate volume {:?}: {first} has it already",
                        draft.name.value
                    ),
                );
            } else {
                names_seen.insert(draft.name.value.clone(), draft.name.at.clone());
            }
        }
        let mount = draft.mount.as_ref().and_then(|field| {
            let mount = v.check(&field.at, check_mount(&field.value))?;
            if let Some(first) = mounts_seen.get(&mount) {
                v.problem(
                    &field.at,
                    format!("mount point {} is used by {first} already", mount.display()),
                );
            } else {
                mounts_seen.insert(mount.clone(), draft.name.value.clone());
            }
            Some(mount)
        });
        let data = draft.data.as_ref().map(|field| v.source(field));
        if let (Some(()), Some(mount), None | Some(Some(_))) = (name, mount, &data) {
            volumes.push(Volume {
                name: draft.name.value,
                mount,
                read_only: draft.read_only,
                data: data.flatten(),
            });
        }
    }
    volumes
}

/// Ports given outside a bundle (ops_pod's `ports` option), in either
/// shape pod.json takes, checked the same way; errors name `option`.
pub fn parse_ports(option: &str, value: serde_json::Value) -> Result<Vec<Port>, String> {
    let wire: PortsWire = serde_json::from_value(value).map_err(|e| format!("{option}: {e}"))?;
    let mut v = Validator {
        dir: Path::new("."),
        files: Files::Bundle,
        problems: Vec::new(),
    };
    let ports = validate_ports(&mut v, vec![Field::new(option, wire)]);
    match v.problems.is_empty() {
        true => Ok(ports),
        false => Err(v
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

/// `overrides` laid over `ports`: a name given again (compared without
/// case) takes the override's place and value, a new name is added.
pub fn override_ports(ports: &mut Vec<Port>, overrides: &[Port]) {
    for o in overrides {
        match ports
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(&o.name))
        {
            Some(p) => *p = o.clone(),
            None => ports.push(o.clone()),
        }
    }
}

/// A ports field's entries: where each is (for messages), its name and,
/// in a map, its port.
fn port_entries(field: &Field<PortsWire>) -> Vec<(String, String, Option<&PortWire>)> {
    match &field.value {
        PortsWire::Map(map) => map
            .iter()
            .map(|(name, port)| (at(&field.at, name), name.clone(), Some(port)))
            .collect(),
        PortsWire::Names(list) => list
            .iter()
            .enumerate()
            .map(|(i, name)| (format!("{}[{i}]", field.at), name.clone(), None))
            .collect(),
        // Each name checked as a list's entry is; the field is the
        // text, the message says which name.
        PortsWire::Text(text) => text
            .split(',')
            .enumerate()
            .map(|(i, name)| {
                (
                    format!("{} (name {})", field.at, i + 1),
                    name.trim().to_owned(),
                    None,
                )
            })
            .collect(),
    }
}

/// What a refused name in a list or text of names most likely meant: names
/// without commas between them, or a port number without a name.
fn name_hint(name: &str, empty_text: bool) -> &'static str {
    if empty_text {
        "; an empty text names no port: leave ports out (in a task, `default(omit)`)"
    } else if name.is_empty() {
        "; an empty name: a comma too many?"
    } else if name.split_whitespace().count() > 1 {
        "; names are separated by commas: \"web, admin\""
    } else if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        "; a fixed port needs a name: {\"http\": 8080}"
    } else {
        ""
    }
}

fn validate_ports(v: &mut Validator<'_>, fields: Vec<Field<PortsWire>>) -> Vec<Port> {
    // In the order given: the first one is also `PORT`.
    let mut ports: Vec<(String, Port)> = Vec::new();
    let mut fixed_seen: HashMap<u16, String> = HashMap::new();
    for field in fields {
        let entries = port_entries(&field);
        let empty_text = matches!(&field.value, PortsWire::Text(t) if t.trim().is_empty());
        for (entry_at, name, port) in entries {
            let checked = names::check_port_name(&name).map_err(|e| match port {
                None => format!("{e}{}", name_hint(&name, empty_text)),
                Some(_) => e,
            });
            if v.check(&entry_at, checked).is_none() {
                continue;
            }
            let fixed = match port {
                None => None,
                Some(PortWire::Word(word)) if word == "assign" => None,
                Some(PortWire::Number(n)) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                    Some(port @ 1..) => Some(port),
                    _ => {
                        v.problem(
                            &entry_at,
                            format!(
                                "expected a port number from 1 to 65535 or \"assign\", got {n}"
                            ),
                        );
                        continue;
                    }
                },
                Some(PortWire::Word(word)) => {
                    v.problem(
                        &entry_at,
                        format!(
                            "expected a port number from 1 to 65535 or \"assign\", got {word:?}"
                        ),
                    );
                    continue;
                }
            };
            let key = name.to_ascii_uppercase();
            if ports.iter().any(|(k, _)| *k == key) {
                v.problem(
                    &entry_at,
                    format!("duplicate port name {name:?} (names are compared without case: PORT_{key})"),
                );
                continue;
            }
            if let Some(port) = fixed {
                if let Some(other) = fixed_seen.get(&port) {
                    v.problem(
                        &entry_at,
                        format!("port {port} is given to {other:?} already"),
                    );
                    continue;
                }
                fixed_seen.insert(port, name.clone());
            }
            ports.push((key, Port { name, fixed }));
        }
    }
    ports.into_iter().map(|(_, port)| port).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seed 001: an image's `uri` "could be without scheme".
    #[test]
    fn a_uri_without_scheme_is_read_one_way_or_refused() {
        for (given, read) in [
            ("https://h.example/a.aci", "https://h.example/a.aci"),
            ("http://h.example/a.aci", "http://h.example/a.aci"),
            ("/srv/images/a.aci", "file:///srv/images/a.aci"),
            (
                "images.example.com/a.aci",
                "https://images.example.com/a.aci",
            ),
            (
                "images.example.com:8443/x/a.aci",
                "https://images.example.com:8443/x/a.aci",
            ),
            ("localhost:8000/a.aci", "https://localhost:8000/a.aci"),
            // The path is the file's name, byte for byte: nothing in it is
            // read as an escape, a query or a fragment.
            ("/srv/%6cocal.aci", "file:///srv/%256cocal.aci"),
            ("/srv/a b?x=1#f.aci", "file:///srv/a%20b%3Fx=1%23f.aci"),
            ("h.example/a\u{7}b.aci", "https://h.example/a%07b.aci"),
        ] {
            assert_eq!(image_uri(given).as_deref(), Ok(read), "{given}");
        }
        for ambiguous in [
            "images/a.aci",
            "a.aci",
            "./a.aci",
            "../a.aci",
            "//h.example/a.aci",
            "h.example",
            "h.example:/a.aci",
            "h.example:x/a.aci",
            "user:pw@h.example/a.aci",
            "u@h.example/a.aci",
            ".example/a.aci",
            "localhost:99999/a.aci",
            "localhost:0/a.aci",
        ] {
            let error = image_uri(ambiguous).expect_err(ambiguous);
            assert!(error.contains("read as https://<host>/<path>"), "{error}");
            assert!(!error.contains("pw"), "{error}");
        }
    }
}
