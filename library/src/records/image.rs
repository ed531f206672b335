//! What `image.json` holds: ops's record of an imported image.

use serde::{Deserialize, Serialize};

use super::Runtime;

/// The format of `image.json`.
pub const RECORD_FORMAT: u32 = 1;

/// What kind of image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Aci,
    Oci,
    Docker,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Aci => "aci",
            Format::Oci => "oci",
            Format::Docker => "docker",
        }
    }

    pub fn described(self) -> &'static str {
        match self {
            Format::Aci => "an ACI",
            Format::Oci => "an OCI archive",
            Format::Docker => "a Docker archive",
        }
    }
}

/// ops's record of an imported image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    pub format: u32,
    /// The full id.
    pub id: String,
    pub image_format: Format,
    pub runtime: Runtime,
    /// The rootfs directory, or podman's reference to the image.
    pub location: String,
    /// Bytes of file contents in the image.
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub imported_at: u64,
}
