//! The validated pod: one model whichever shape pod.json had.
//!
//! It is also what the store records of each deployed version (in
//! `meta.json`), read back through the same checks on every name.
//!
//! Everything here has been checked: names are safe in unit names and
//! paths, every bundle path stays inside the bundle and names a regular
//! file, nothing is duplicated. Paths are kept relative to the bundle
//! directory so two bundles with the same content compare equal.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::names::{ImageId, PodName, UnitName, Version};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// The pod's name on the host: the deployment's (ops_pod's `name`),
    /// which is the bundle's own name unless the bundle is deployed under
    /// another.
    pub name: PodName,
    /// The name the bundle gives itself, recorded for every version ops
    /// deploys since named deployments; `None` in the records of versions
    /// deployed before, which all came from a bundle of the pod's name
    /// (and are written back without the field, so they read unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_name: Option<PodName>,
    pub version: Version,
    pub units: Vec<Unit>,
    pub images: Vec<Image>,
    pub volumes: Vec<Volume>,
    /// In the order pod.json declares them (the first is also `PORT`).
    pub ports: Vec<Port>,
    pub environment: BTreeMap<String, String>,
}

impl Pod {
    /// The bundle the version came from: its recorded name, or the pod's
    /// for a version recorded before deployments had names of their own.
    pub fn bundle(&self) -> &PodName {
        self.bundle_name.as_ref().unwrap_or(&self.name)
    }
}

/// A systemd unit the pod ships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    pub name: UnitName,
    /// The unit file, relative to the bundle directory.
    pub file: PathBuf,
    /// Instance names of a template unit; empty for a plain unit.
    pub instances: Vec<String>,
    /// ops starts it (its instances) when the pod starts.
    pub start: bool,
    /// The pod image it runs in (as listed in the pod's images).
    #[serde(default)]
    pub image: Option<ImageId>,
    /// The instances are port numbers (`"replication": [8080, 8081]`):
    /// each instance's `PORT` is its name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub instance_ports: bool,
    /// The plain name the bundle shipped the unit file under
    /// (`example.service`) when it gave the unit instances: ops installs it
    /// as its template, `name` (`example@.service`), one instance each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped_as: Option<UnitName>,
    /// The `http`, `https` or `file` URI the unit file was fetched from
    /// (seed 001: "either a path or an URI"); `file` is then the unit's
    /// name until the version is stored, and the store's copy after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

impl Unit {
    /// Each instance this unit runs, in order: the instance names of a
    /// template, or one `None` for a plain unit.
    pub fn instance_names(&self) -> Vec<Option<&str>> {
        if self.name.is_template() {
            self.instances.iter().map(|i| Some(i.as_str())).collect()
        } else {
            vec![None]
        }
    }
}

/// Where an artifact comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A regular file inside the bundle, relative to the bundle directory.
    Path(PathBuf),
    /// An `http`, `https` or `file` URI.
    Uri(String),
}

impl Source {
    /// As the bundle wrote it, a URI's credentials hidden (it is shown).
    pub fn text(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Uri(u) => super::uri::redact(u).into_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub id: ImageId,
    pub source: Source,
    pub signature: Option<Source>,
    /// pod.json gave no id (seed 001 makes it optional): ops computed it
    /// from the file when it added the version, so nothing but a signature
    /// pinned what the bundle meant.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub computed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    /// Absolute, normalised mount point.
    pub mount: PathBuf,
    pub read_only: bool,
    /// Archive of initial contents.
    pub data: Option<Source>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub name: String,
    /// A fixed host port; `None` means ops assigns one.
    pub fixed: Option<u16>,
}
