//! The leaf of the core: names and records, with no behaviour on the host.
//!
//! - [`names`]: the validated names (pod, version, unit, image id).
//! - [`pod`]: the pod model every bundle shape is read into.
//! - [`version`], [`image`], [`volume`], [`port`]: what `meta.json`,
//!   `image.json`, `volume.json` and a port record hold.
//! - [`idle`]: the idle and woken records of a pod (idle and wake).
//! - [`uri`]: a URI as it may be shown and recorded (credentials hidden).
//! - [`release`]: the release repository's layout and `release.json`.
//! - [`unit_names`]: the names of the units ops installs.
//! - [`unit_syntax`]: what a unit file and an environment variable can carry.
//!
//! Everything else in the crate builds on these; they import nothing of it.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod idle;
pub mod image;
pub mod names;
pub mod pod;
pub mod port;
pub mod release;
pub mod unit_names;
pub mod unit_syntax;
pub mod uri;
pub mod version;
pub mod volume;

/// Where images run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// The root filesystem unpacked in the store, run with `RootDirectory=`.
    #[default]
    Systemd,
    /// podman's image storage.
    Podman,
}

impl Runtime {
    pub fn parse(s: &str) -> Option<Runtime> {
        match s {
            "systemd" => Some(Runtime::Systemd),
            "podman" => Some(Runtime::Podman),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Runtime::Systemd => "systemd",
            Runtime::Podman => "podman",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
