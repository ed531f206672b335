//! The core of ops: everything the `ops_*` Ansible modules do lives here.
//!
//! - [`module`]: the Ansible binary-module protocol (args in, one JSON out).
//! - [`bundle`]: reading and validating a bundle's pod.json into one model.
//! - [`modules`]: the four modules' options and bodies.

pub mod bundle;
pub mod module;
pub mod modules;
#[cfg(feature = "testkit")]
pub mod testkit;
