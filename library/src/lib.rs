//! The core of ops: everything the `ops_*` Ansible modules do lives here.
//!
//! - [`ansible`]: the Ansible binary-module protocol (args in, one JSON out).
//! - [`bundle`]: reading and validating a bundle's pod.json into one model.
//! - [`modules`]: the four modules' options and bodies.
//! - [`pod`]: deploying, switching and removing pod versions; built on
//!   [`store`] (what is deployed), `units` (what goes in systemd's unit
//!   directory), [`systemd`] (talking to it), `lock`, `atomic` (every
//!   write) and `command` (every external program).
//! - [`image`]: importing images (ACI, OCI, Docker) into the systemd or
//!   podman runtime, verified; removing them once unused.
//! - [`volume`]: a pod version's data volumes, extracted safely from
//!   archives (`unpack`, `decode`) and replaced atomically.
//! - [`ports`]: named host ports, allocated across every deployed version.
//! - [`facts`]: what is deployed, as ops_pod and ops_facts report it.
//!
//! The public modules are the crate's API: what the module binaries, the
//! testkit and the tests use. The rest (`records`, `download`, `outcome`,
//! `clock` and the leaves above) is `pub(crate)`, free to change shape.

pub mod ansible;
pub(crate) mod atomic;
pub mod bundle;
pub(crate) mod clock;
pub(crate) mod command;
pub(crate) mod decode;
pub(crate) mod download;
pub mod facts;
pub mod image;
pub(crate) mod lock;
pub mod modules;
pub(crate) mod outcome;
pub mod pod;
pub mod ports;
pub(crate) mod records;
pub mod store;
pub mod systemd;
#[cfg(feature = "testkit")]
pub mod testkit;
pub(crate) mod units;
pub(crate) mod unpack;
pub mod volume;
