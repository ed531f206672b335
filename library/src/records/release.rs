//! The release repository of seed 002, as data: channel and label names,
//! where a pod version lives in it, and `release.json`, the record
//! ops_release writes beside each published pod.json and ops_pod checks
//! every file it reads against.
//!
//! ```text
//! images/LABEL/IMAGE/VERSION/FILE         (+ `id`, and `sha512` for an ACI)
//! volumes/LABEL/VOLUME/VERSION/FILE       (+ `sha256`)
//! channels/CHANNEL/LABEL/POD/VERSION/     pod.json, release.json, unit files,
//!                                         relative links to images and volumes
//! channels/CHANNEL/LABEL/POD/tip          a link to the VERSION most recently
//!                                         published (or pointed at)
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::names::{PodName, Version};

/// The record's file name, in the pod version's directory.
pub const RECORD: &str = "release.json";

/// The link to a pod's latest version, beside its versions.
pub const TIP: &str = "tip";

/// A channel name: one path segment, as safe as a pod name.
pub fn check_channel(s: &str) -> Result<(), String> {
    PodName::parse(s)
        .map(drop)
        .map_err(|e| format!("a channel is {e}"))
}

/// A label path: segments as safe as a pod name, joined by `/`; empty for
/// none.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Label(String);

impl Label {
    pub fn parse(s: &str) -> Result<Label, String> {
        if s.len() > 255 {
            return Err(format!(
                "a label path is at most 255 characters, got {}",
                s.len()
            ));
        }
        let several = s.contains('/');
        for (n, segment) in s.split('/').filter(|_| !s.is_empty()).enumerate() {
            PodName::parse(segment).map_err(|e| {
                if several {
                    format!(
                        "segment {} of the label path {} (segments are separated by '/'): {e}",
                        n + 1,
                        crate::records::names::shown(s)
                    )
                } else {
                    e
                }
            })?;
        }
        Ok(Label(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The label's segments, none for no label.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }
}

impl From<Label> for String {
    fn from(label: Label) -> String {
        label.0
    }
}

impl TryFrom<String> for Label {
    type Error = String;
    fn try_from(s: String) -> Result<Label, String> {
        Label::parse(&s)
    }
}

/// The directory of a pod's versions, relative to the repository:
/// `channels/CHANNEL/LABEL/POD`.
pub fn pod_dir(channel: &str, label: &Label, pod: &PodName) -> PathBuf {
    let mut dir = PathBuf::from("channels");
    dir.push(channel);
    dir.extend(label.segments());
    dir.push(pod.as_str());
    dir
}

/// What ops_release recorded of one published pod version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRecord {
    pub pod: PodName,
    pub version: Version,
    pub channel: String,
    #[serde(default)]
    pub label: Option<Label>,
    /// pod.json itself: the files it names are checked against `files`,
    /// and it against this.
    #[serde(rename = "pod.json")]
    pub manifest: FileRecord,
    /// Every file pod.json names, by its path as pod.json writes it
    /// (normalised: no `.` and no `..`).
    pub files: BTreeMap<String, FileRecord>,
    #[serde(default)]
    pub images: Vec<ArtifactRecord>,
    #[serde(default)]
    pub volumes: Vec<ArtifactRecord>,
    /// Source revisions the release instruction file recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revisions: BTreeMap<String, String>,
}

/// One file of a published pod version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// Hex of the file's sha256.
    pub sha256: String,
    pub size: u64,
    /// Where it is stored, relative to the repository, when the pod
    /// directory links to it (an image or a volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
}

/// An image or volume a pod version uses, by name and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRecord {
    pub name: String,
    pub version: String,
    /// An image's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A volume archive's sha256 (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl ReleaseRecord {
    /// The sha256 recorded for a file as pod.json names it.
    pub fn sha256_of(&self, path: &std::path::Path) -> Option<&str> {
        let key = path.to_str()?;
        self.files.get(key).map(|f| f.sha256.as_str())
    }
}
