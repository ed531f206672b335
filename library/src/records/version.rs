//! What `meta.json` holds: ops's record of one deployed version.

use serde::{Deserialize, Serialize};

use super::pod::Pod;

/// The format of `meta.json`.
pub const META_FORMAT: u32 = 1;

/// ops's record of one deployed version (`meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRecord {
    pub format: u32,
    /// Order of deployment within the pod: higher is newer.
    pub sequence: u64,
    /// Seconds since the Unix epoch.
    pub deployed_at: u64,
    /// `sha256:` of the validated pod and its unit files: two bundles with
    /// the same digest deploy the same thing.
    pub digest: String,
    /// The validated pod; unit files are at `units/<name>`.
    pub pod: Pod,
    /// The runtime the pod's images were imported into.
    #[serde(default)]
    pub runtime: super::Runtime,
    /// The host ports the version uses (see crate::ports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<super::port::Allocation>,
}
