//! Release instruction files: YAML naming a bundle and what to publish it
//! as.
//!
//! ```yaml
//! pod: shop            # pod.json's name
//! version: 2           # pod.json's version
//! channel: stable
//! label: web/shop      # a label path; absent or "" for none
//! bundle: ../../bundles/shop-2   # absolute, or relative to this file
//! images: {app: 2}     # image versions by name (default: the pod version)
//! volumes: {static: 1} # volume versions by name (default: the pod version)
//! revisions: {shop: 4f2a9c1}  # source revisions, recorded in release.json
//! ```
//!
//! A file at `channels/<channel>/<label>/<pod>/<version>.yaml` inside the
//! repository has its channel, label, pod and version inferred from that
//! path; values it also gives must agree. An image or volume whose file
//! the bundle lacks is taken from the repository at its instructed version
//! ([`assemble`]); one the repository lacks too is an error: ops_release
//! neither builds images nor creates volumes. A name under `images` or
//! `volumes` that the pod does not store is refused (by
//! [`super::wanted`], once the bundle is read).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::layout::{Label, Shown};
use super::wanted::Versions;
use crate::outcome::Refusal;
use crate::records::names::{PodName, Version};

pub mod assemble;

/// The largest instruction file read.
const MAX_INSTRUCTIONS: u64 = 1 << 20;

/// An instruction file, read, its path's metadata merged in.
#[derive(Debug, Clone)]
pub struct Instructions {
    pub file: PathBuf,
    pub pod: Option<PodName>,
    pub version: Option<Version>,
    pub channel: Option<PodName>,
    pub label: Option<Label>,
    /// The bundle directory, relative paths resolved against the file's.
    pub bundle: PathBuf,
    pub versions: Versions,
    /// Source revisions by name, recorded in release.json.
    pub revisions: BTreeMap<String, String>,
}

/// A version may be written as a YAML number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Number(u64),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Number(n) => n.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    pod: Option<String>,
    version: Option<Scalar>,
    channel: Option<String>,
    label: Option<String>,
    bundle: String,
    #[serde(default)]
    images: BTreeMap<String, Scalar>,
    #[serde(default)]
    volumes: BTreeMap<String, Scalar>,
    /// Source revisions the release was built from (seed 002 records them
    /// in instruction files): kept in release.json, not checked out.
    #[serde(default)]
    revisions: BTreeMap<String, Scalar>,
}

/// The source revisions given, each a short single line of text.
fn revisions(
    given: &BTreeMap<String, Scalar>,
    problem: &mut dyn FnMut(String),
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, revision) in given {
        let text = revision.text();
        let printable = |s: &str| !s.is_empty() && s.len() <= 256 && !s.contains(char::is_control);
        if printable(name) && printable(&text) {
            out.insert(name.clone(), text);
        } else {
            problem(format!(
                "revisions.{name:?}: expected a name and a revision of 1 to 256 characters \
                 without control characters, got {text:?}"
            ));
        }
    }
    out
}

/// Read and check the instruction file at `path`; `repo` is the
/// repository it may sit in.
pub fn load(path: &Path, repo: &Path) -> Result<Instructions, Refusal> {
    let shown = path.display().to_string();
    let text = crate::atomic::read_regular(path, MAX_INSTRUCTIONS)
        .map_err(|e| Refusal::new(format!("cannot read the instruction file {shown}: {e}")))?;
    let deserializer = serde_yaml_ng::Deserializer::from_slice(&text);
    let wire: Wire = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        let at = if field == "." {
            String::new()
        } else {
            format!(": {field}")
        };
        Refusal::new(format!("{shown}{at}: {}", e.into_inner()))
    })?;
    let mut problems = Vec::new();
    let mut check = |field: &str, result: Result<(), String>| {
        if let Err(e) = result {
            problems.push(format!("{field}: {e}"));
        }
    };
    let pod = wire.pod.as_deref().map(PodName::parse);
    let version = wire.version.as_ref().map(|v| Version::parse(&v.text()));
    let channel = wire.channel.as_deref().map(PodName::parse);
    let label = wire.label.as_deref().map(Label::parse);
    check("pod", pod.clone().map_or(Ok(()), |r| r.map(drop)));
    check("version", version.clone().map_or(Ok(()), |r| r.map(drop)));
    check("channel", channel.clone().map_or(Ok(()), |r| r.map(drop)));
    check("label", label.clone().map_or(Ok(()), |r| r.map(drop)));
    let versions = Versions {
        images: artifact_versions("images", &wire.images, &mut check),
        volumes: artifact_versions("volumes", &wire.volumes, &mut check),
        found: BTreeMap::new(),
    };
    if wire.bundle.is_empty() {
        check(
            "bundle",
            Err("expected the bundle directory, absolute or relative to this file".into()),
        );
    }
    let revisions = revisions(&wire.revisions, &mut |p| problems.push(p));
    if !problems.is_empty() {
        return Err(Refusal::new(format!("{shown}: {}", problems.join("; "))));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut given = Instructions {
        file: path.to_owned(),
        pod: pod.and_then(Result::ok),
        version: version.and_then(Result::ok),
        channel: channel.and_then(Result::ok),
        label: label.and_then(Result::ok),
        bundle: dir.join(&wire.bundle),
        versions,
        revisions,
    };
    infer_from_path(&mut given, repo)?;
    Ok(given)
}

fn artifact_versions(
    field: &str,
    given: &BTreeMap<String, Scalar>,
    check: &mut impl FnMut(&str, Result<(), String>),
) -> BTreeMap<String, Version> {
    let mut versions = BTreeMap::new();
    for (name, version) in given {
        match Version::parse(&version.text()) {
            Ok(v) => {
                versions.insert(name.clone(), v);
            }
            Err(e) => check(&format!("{field}.{name}"), Err(e)),
        }
    }
    versions
}

/// Channel, label, pod and version from a path
/// `REPO/channels/<channel>/<label>/<pod>/<version>.yaml`; given values
/// must agree with it.
fn infer_from_path(given: &mut Instructions, repo: &Path) -> Result<(), Refusal> {
    let Ok(file) = std::fs::canonicalize(&given.file) else {
        return Ok(());
    };
    let Ok(rel) = file.strip_prefix(repo.join("channels")) else {
        return Ok(());
    };
    let segments: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let Some((last, parents)) = segments.split_last() else {
        return Ok(());
    };
    let stem = last
        .strip_suffix(".yaml")
        .or_else(|| last.strip_suffix(".yml"));
    let (Some(stem), [channel, label @ .., pod]) = (stem, parents) else {
        return Ok(());
    };
    let shown = given.file.display().to_string();
    let bad =
        |what: &str, e: String| Refusal::new(format!("{shown}: the {what} its path gives: {e}"));
    let inferred_channel = PodName::parse(channel).map_err(|e| bad("channel", e))?;
    let inferred_label = Label::parse(&label.join("/")).map_err(|e| bad("label", e))?;
    let inferred_pod = PodName::parse(pod).map_err(|e| bad("pod", e))?;
    let inferred_version = Version::parse(stem).map_err(|e| bad("version", e))?;
    settle(&shown, "channel", &mut given.channel, inferred_channel)?;
    settle(&shown, "label", &mut given.label, inferred_label)?;
    settle(&shown, "pod", &mut given.pod, inferred_pod)?;
    settle(&shown, "version", &mut given.version, inferred_version)
}

fn settle<T: PartialEq + Shown>(
    shown: &str,
    field: &str,
    given: &mut Option<T>,
    inferred: T,
) -> Result<(), Refusal> {
    match given {
        Some(value) if *value != inferred => Err(Refusal::new(format!(
            "{shown}: {field}: the file says {value:?} but its path in the repository says \
             {inferred:?}",
            value = value.shown(),
            inferred = inferred.shown()
        ))),
        _ => {
            *given = Some(inferred);
            Ok(())
        }
    }
}

/// The instructed bundle, loaded; missing image and volume files taken
/// from the repository.
pub fn load_bundle(
    given: &Instructions,
    repo: &Path,
    label: &Label,
) -> Result<assemble::Loaded, Refusal> {
    assemble::load(given, repo, label)
}
