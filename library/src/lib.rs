//! The core of ops: everything the `ops_*` Ansible modules do lives here.
//!
//! - [`ansible`]: the Ansible binary-module protocol (args in, one JSON out).
//! - [`bundle`]: reading and validating a bundle's pod.json into one model.
//! - [`modules`]: the four modules' options and bodies.
//! - [`pod`]: deploying, switching and removing pod versions; built on
//!   [`store`] (what is deployed), [`units`] (what goes in systemd's unit
//!   directory), [`systemd`] (talking to it), [`lock`], [`atomic`] (every
//!   write) and [`command`] (every external program).
//! - [`image`]: importing images (ACI, OCI, Docker) into the systemd or
//!   podman runtime, verified; removing them once unused.
//! - [`volume`]: a pod version's data volumes, extracted safely from
//!   archives ([`unpack`], [`decode`]) and replaced atomically.
//! - [`ports`]: named host ports, allocated across every deployed version.
//! - [`facts`]: what is deployed, as ops_pod and ops_facts report it.

pub mod ansible;
pub mod atomic;
pub mod bundle;
mod clock;
pub mod command;
pub mod decode;
pub mod download;
pub mod facts;
pub mod image;
pub mod lock;
pub mod modules;
pub mod outcome;
pub mod pod;
pub mod ports;
pub mod records;
pub mod store;
pub mod systemd;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod units;
pub mod unpack;
pub mod volume;
