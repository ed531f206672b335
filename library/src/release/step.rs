//! The steps of a release plan: what each does, in words (the action texts
//! check mode reports and a real run repeats) and as an Ansible diff
//! entry. [`super::apply`] carries each out.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::wanted::Wanted;

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Stage `images[index]`'s version directory and rename it into place.
    AddImage { index: usize, rel: PathBuf },
    /// The same for `volumes[index]`.
    AddVolume { index: usize, rel: PathBuf },
    /// Stage the pod version directory (pod.json, copies, `links` as
    /// (path in the version, relative target), release.json last) and
    /// rename it into place.
    AddVersion {
        rel: PathBuf,
        links: Vec<(PathBuf, PathBuf)>,
        /// release.json's text.
        record: String,
    },
    /// Point `tip` at `to` (a new link renamed over the old one).
    MoveTip {
        pod_rel: PathBuf,
        from: Option<PathBuf>,
        to: String,
    },
    /// Take a published version out (renamed aside, then deleted).
    RemoveVersion {
        rel: PathBuf,
        record: Option<String>,
    },
    /// Remove `tip`, which named the version taken out.
    RemoveTip { pod_rel: PathBuf, was: String },
    /// Write the intent record (`version`, the version this run adds and
    /// points `tip` at) before the version is renamed into place. Not
    /// reported: it is part of the publish.
    WriteIntent { pod_rel: PathBuf, version: String },
    /// Remove the intent record naming `version`. `why` is set when an
    /// earlier run left it (reported, with the reason); a run's own
    /// record, removed once `tip` moved, is not reported.
    ClearIntent {
        pod_rel: PathBuf,
        version: String,
        why: Option<String>,
    },
}

impl Step {
    /// Whether the step is reported (in actions and diff).
    pub fn reported(&self) -> bool {
        match self {
            Step::WriteIntent { .. } => false,
            Step::ClearIntent { why, .. } => why.is_some(),
            _ => true,
        }
    }

    /// The action text.
    pub fn action(&self, wanted: Option<&Wanted>) -> String {
        match self {
            Step::AddImage { index, rel } => {
                let image = wanted.map(|w| &w.images[*index]);
                match image {
                    Some(i) => format!(
                        "add {}: image {} version {} ({:?}, {})",
                        rel.display(),
                        i.name,
                        i.version,
                        i.file,
                        i.id
                    ),
                    None => format!("add {}", rel.display()),
                }
            }
            Step::AddVolume { index, rel } => match wanted.map(|w| &w.volumes[*index]) {
                Some(v) => format!(
                    "add {}: volume {} version {} ({:?}, sha256 {})",
                    rel.display(),
                    v.name,
                    v.version,
                    v.file,
                    v.sha256
                ),
                None => format!("add {}", rel.display()),
            },
            Step::AddVersion { rel, .. } => match wanted {
                Some(w) => format!(
                    "add {}: pod {} version {}",
                    rel.display(),
                    w.layout.pod,
                    w.version
                ),
                None => format!("add {}", rel.display()),
            },
            Step::MoveTip { pod_rel, from, to } => match from {
                Some(from) => format!(
                    "move {}/tip from {} to {to}",
                    pod_rel.display(),
                    from.display()
                ),
                None => format!("point {}/tip at {to}", pod_rel.display()),
            },
            Step::RemoveVersion { rel, .. } => format!("remove {}", rel.display()),
            Step::RemoveTip { pod_rel, was } => format!(
                "remove {}/tip: it named version {was}, which is removed (point tip at a \
                 published version with state=present, name and version, no bundle)",
                pod_rel.display()
            ),
            Step::WriteIntent { pod_rel, version } => format!(
                "write {}/{}: {version}",
                pod_rel.display(),
                super::layout::INTENT
            ),
            Step::ClearIntent {
                pod_rel,
                version,
                why,
            } => format!(
                "remove {}/{} (it named version {version:?}){}",
                pod_rel.display(),
                super::layout::INTENT,
                why.as_deref().map(|w| format!(": {w}")).unwrap_or_default()
            ),
        }
    }

    /// The diff entry of the step.
    pub fn diff(&self, wanted: Option<&Wanted>) -> Value {
        let entry = |header: String, before: String, after: String| json!({"before_header": header, "after_header": header, "before": before, "after": after});
        match self {
            Step::AddImage { index, rel } => {
                let after = wanted
                    .map(|w| {
                        let i = &w.images[*index];
                        format!("{}\nid: {}\nformat: {}\n", i.file, i.id, i.format.name())
                    })
                    .unwrap_or_default();
                entry(rel.display().to_string(), String::new(), after)
            }
            Step::AddVolume { index, rel } => {
                let after = wanted
                    .map(|w| {
                        let v = &w.volumes[*index];
                        format!("{}\nsha256: {}\n", v.file, v.sha256)
                    })
                    .unwrap_or_default();
                entry(rel.display().to_string(), String::new(), after)
            }
            Step::AddVersion { rel, record, .. } => entry(
                rel.join(super::layout::RECORD).display().to_string(),
                String::new(),
                record.clone(),
            ),
            Step::MoveTip { pod_rel, from, to } => entry(
                pod_rel.join("tip").display().to_string(),
                from.as_ref()
                    .map(|f| format!("tip -> {}\n", f.display()))
                    .unwrap_or_default(),
                format!("tip -> {to}\n"),
            ),
            Step::RemoveVersion { rel, record } => entry(
                rel.join(super::layout::RECORD).display().to_string(),
                record
                    .clone()
                    .unwrap_or_else(|| "(no release.json)\n".into()),
                String::new(),
            ),
            Step::RemoveTip { pod_rel, was } => entry(
                pod_rel.join("tip").display().to_string(),
                format!("tip -> {was}\n"),
                String::new(),
            ),
            Step::WriteIntent { pod_rel, version } => entry(
                pod_rel.join(super::layout::INTENT).display().to_string(),
                String::new(),
                format!("{version}\n"),
            ),
            Step::ClearIntent {
                pod_rel, version, ..
            } => entry(
                pod_rel.join(super::layout::INTENT).display().to_string(),
                format!("{version}\n"),
                String::new(),
            ),
        }
    }
}
