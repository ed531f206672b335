//! Bundles: a directory holding `pod.json` and every artifact it names.
//!
//! [`load`] reads pod.json in either shape the seeds define (the native
//! `containers` form, or an Appc `PodManifest` carrying an `ops`
//! annotation), validates the whole bundle and returns a [`Bundle`]: one
//! [`Pod`] model (`crate::records::pod`) and where its files are.
//! A bundle that fails validation yields every problem at once, each naming
//! the file and the field path, before anything on the host is touched.

mod appc;
mod unique;

pub mod native;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use crate::records::names::{ImageId, PodName, UnitName, Version};
pub use crate::records::pod::{Image, Pod, Port, Source, Unit, Volume};

pub use validate::{override_ports, parse_ports, Files};

/// The file name of a bundle's manifest.
pub const MANIFEST: &str = "pod.json";

/// The largest pod.json read: far more than any pod needs, and a bound on
/// what a wrong path (a log, a device) can make ops read.
pub const MAX_MANIFEST: u64 = 1 << 20;

/// Which shape pod.json had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// seeds/000: `name`, `version`, `containers`, ...
    Native,
    /// seeds/001: an Appc `PodManifest` with an `ops` annotation.
    Appc,
}

/// A validated bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The bundle directory, canonical; the pod's paths are relative to it.
    pub dir: PathBuf,
    /// The manifest, as the caller named it.
    pub manifest: PathBuf,
    /// The manifest's bytes, as read once and validated: what the store
    /// keeps and a release's digest is checked on. Read again, it could be
    /// another file (a bundle owned by another user, changed meanwhile).
    pub text: Vec<u8>,
    pub shape: Shape,
    pub pod: Pod,
    /// Images pod.json lists without an id, not yet in `pod.images`.
    pub pending: Vec<PendingImage>,
    /// Where in pod.json each unit, image and volume of `pod` was read.
    pub fields: Fields,
}

/// The field path in pod.json of each entry of the validated pod, in the
/// pod's order: what a later check of a file (an image's digest, a unit
/// file as systemd reads it, a volume's archive) names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// Each of `pod.units`: its unit file (`containers[0].systemd.unit-files[1]`).
    pub units: Vec<String>,
    /// Each of `pod.images`: its entry (`images[1]`).
    pub images: Vec<String>,
    /// Each of `pod.volumes`: its archive (`volumes[0].data`), or its name
    /// when it has none.
    pub volumes: Vec<String>,
    /// Where the pod's ports were declared (`ports`; in the Appc shape,
    /// the annotation's and the manifest's `ports[0]`...).
    pub ports: Vec<String>,
}

/// An image pod.json lists without an id (seed 001 makes it optional). Its
/// id is computed from the file as the version is added (`crate::pod`):
/// read in the bundle (`path`), or downloaded (`uri`) by a real run only,
/// which then puts it in the pod's images and gives it to `units`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingImage {
    /// The field path of the entry (`images[0]`).
    pub at: String,
    /// The image file: relative to the bundle directory, or its URI.
    pub source: Source,
    pub signature: Option<Source>,
    /// Indexes in the pod's units of those that run in it (their `image`
    /// names its `path`).
    pub units: Vec<usize>,
}

/// One thing wrong with a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field path in pod.json (`images[1].id`); empty for the whole file.
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the bundle {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", invalid_message(manifest, problems))]
    Invalid {
        manifest: PathBuf,
        problems: Vec<Problem>,
    },
}

fn invalid_message(manifest: &Path, problems: &[Problem]) -> String {
    let file = manifest.display();
    let listed: Vec<String> = problems.iter().map(|p| format!("{file}: {p}")).collect();
    match problems.len() {
        1 => format!("invalid bundle: {}", listed.join("")),
        n => format!("invalid bundle ({n} problems): {}", listed.join("; ")),
    }
}

/// Read and validate the bundle at `path`: a bundle directory or its
/// pod.json.
pub fn load(path: &Path) -> Result<Bundle, BundleError> {
    load_with(path, Files::Bundle)
}

/// [`load`], with the files its paths may name: inside a release
/// repository, or on a server.
pub fn load_with(path: &Path, files: Files<'_>) -> Result<Bundle, BundleError> {
    let read_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Read { path, source }
    };
    let manifest = if path.is_dir() {
        path.join(MANIFEST)
    } else {
        path.to_path_buf()
    };
    let text =
        crate::atomic::read_regular(&manifest, MAX_MANIFEST).map_err(read_error(&manifest))?;
    let parent = match manifest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(parent).map_err(read_error(parent))?;
    parse(manifest, dir, &text, files)
}

/// Validate the text of pod.json (`manifest`, in the canonical bundle
/// directory `dir`): [`load_with`] once the file is read. Apart so that
/// the fuzzing entry points (`crate::fuzzing`) reach it without a file.
pub(crate) fn parse(
    manifest: PathBuf,
    dir: PathBuf,
    text: &[u8],
    files: Files<'_>,
) -> Result<Bundle, BundleError> {
    let invalid = |problems| BundleError::Invalid {
        manifest: manifest.clone(),
        problems,
    };

    if let Some(message) = encoding_problem(text) {
        return Err(invalid(vec![Problem {
            field: String::new(),
            message,
        }]));
    }
    let value = unique::from_slice(text).map_err(|e| {
        invalid(vec![Problem {
            field: String::new(),
            message: format!("not valid JSON: {e}"),
        }])
    })?;
    let Some(object) = value.as_object() else {
        return Err(invalid(vec![Problem {
            field: String::new(),
            message: "expected a JSON object (a pod or an Appc pod manifest)".into(),
        }]));
    };
    let is_appc = object.contains_key("acKind");
    let (shape, draft) = if is_appc {
        let (wire, mut unknown): (appc::PodManifest, _) = from_value(value, "").map_err(invalid)?;
        let draft = wire.into_draft().map_err(|mut problems| {
            unknown.append(&mut problems);
            invalid(std::mem::take(&mut unknown))
        });
        let mut draft = draft?;
        unknown.append(&mut draft.problems);
        draft.problems = unknown;
        (Shape::Appc, draft)
    } else {
        let (wire, mut unknown): (native::PodJson, _) = from_value(value, "").map_err(invalid)?;
        let mut problems = native::duplicate_containers(&wire);
        let mut draft = wire.into_draft();
        unknown.append(&mut draft.problems);
        unknown.append(&mut problems);
        draft.problems = unknown;
        (Shape::Native, draft)
    };
    let (pod, pending, fields) = draft.validate(&dir, files).map_err(invalid)?;
    Ok(Bundle {
        dir,
        manifest,
        text: text.to_vec(),
        shape,
        pod,
        pending,
        fields,
    })
}

/// What is wrong with how pod.json is encoded, said before the JSON parser
/// would say "expected value at line 1 column 1" of a byte nobody sees: a
/// byte order mark (editors on some systems write one), or UTF-16.
fn encoding_problem(text: &[u8]) -> Option<String> {
    if text.starts_with(b"\xef\xbb\xbf") {
        Some(
            "starts with a UTF-8 byte order mark (BOM), which JSON does not allow: save it \
             as UTF-8 without a BOM"
                .to_owned(),
        )
    } else if text.starts_with(b"\xff\xfe") || text.starts_with(b"\xfe\xff") {
        Some("is UTF-16 (it starts with a UTF-16 byte order mark): save it as UTF-8".to_owned())
    } else {
        None
    }
}

/// Deserialise a wire type, naming the field path of each problem (under
/// `base`) the way validation problems name theirs. An unknown key is one
/// more problem, not the end: it is set aside and the rest is read, so the
/// bundle's other problems are reported with it. The first problem of any
/// other kind ends the reading.
fn from_value<T: DeserializeOwned>(
    mut value: Value,
    base: &str,
) -> Result<(T, Vec<Problem>), Vec<Problem>> {
    let mut problems = Vec::new();
    loop {
        let error = match serde_path_to_error::deserialize(value.clone()) {
            Ok(wire) => return Ok((wire, problems)),
            Err(error) => error,
        };
        let unknown = error.inner().to_string().starts_with("unknown field `");
        let segments: Vec<serde_path_to_error::Segment> = error.path().iter().cloned().collect();
        problems.push(problem_of(error, base));
        // Only an unknown key that can be taken out is set aside. Each one
        // costs a reading of the whole: past a few dozen, the rest is not
        // worth a quadratic time.
        if !unknown || !remove_at(&mut value, &segments) {
            return Err(problems);
        }
        if problems.len() >= MAX_UNKNOWN_KEYS {
            problems.push(Problem {
                field: base.to_owned(),
                message: format!(
                    "more unknown keys may follow: reading stopped after {MAX_UNKNOWN_KEYS}"
                ),
            });
            return Err(problems);
        }
    }
}

/// How many unknown keys are set aside before reading stops.
const MAX_UNKNOWN_KEYS: usize = 50;

/// Remove the member that `path` ends with; whether it was there.
fn remove_at(value: &mut Value, path: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((Segment::Map { key }, parents)) = path.split_last() else {
        return false;
    };
    let mut here = value;
    for segment in parents {
        let next = match (segment, here) {
            (Segment::Seq { index }, Value::Array(items)) => items.get_mut(*index),
            (Segment::Map { key }, Value::Object(map)) => map.get_mut(key),
            _ => None,
        };
        match next {
            Some(next) => here = next,
            None => return false,
        }
    }
    here.as_object_mut()
        .is_some_and(|map| map.remove(key).is_some())
}

fn problem_of(error: serde_path_to_error::Error<serde_json::Error>, base: &str) -> Problem {
    let mut field = error.path().to_string();
    if field == "." {
        field.clear();
    }
    let field = validate::at(base, &field);
    let inner = error.into_inner().to_string();
    // serde names a missing field in the message, not the path; move it
    // into the path, where every other problem keeps it.
    let (member, message) = if let Some(rest) = inner.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default().to_owned();
        (Some(name), "required field is missing".to_owned())
    } else if let Some(rest) = inner.strip_prefix("unknown field `") {
        // The path already ends with the unknown member.
        let expected = rest
            .split_once('`')
            .map(|(_, expected)| expected.trim_start_matches(", ").replace('`', ""))
            .unwrap_or_default();
        (None, format!("unknown field; {expected}"))
    } else {
        (None, inner)
    };
    Problem {
        field: match member {
            Some(name) => validate::at(&field, &name),
            None => field,
        },
        message,
    }
}

/// The JSON Schema of the native pod.json, as published under
/// `collection/schemas/`.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(native::PodJson)).expect("a schema is plain JSON")
}

/// The JSON Schema of the Appc shape's `ops` annotation (its value, once
/// decoded from the annotation's JSON text), as published under
/// `collection/schemas/`.
pub fn annotation_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(appc::OpsAnnotation))
        .expect("a schema is plain JSON")
}
