//! The core of ops: everything the `ops_*` Ansible modules do lives here.
//!
//! The modules form layers; each imports only those below it (no cycles):
//!
//! 1. Leaves that know nothing of ops's model: `atomic` (every write),
//!    `command` (every external program), `crash` (test-only crash points), `lock` (the store lock),
//!    [`systemd`] (talking to it), `decode` and `unpack` (archives), `space`
//!    (free space an extraction or a download may use), `clock`,
//!    `outcome` (a refusal or a failure after changes) and [`ansible`] (the
//!    binary-module protocol: args in, one JSON out).
//! 2. `records`: names, the pod model and what each record on disk holds
//!    (meta.json, image.json, volume.json, port records), and the names and
//!    syntax of the units ops installs. Data only.
//! 3. `download`: where bytes come from (a path or a URI), fetched and
//!    hashed, for images and volumes alike.
//! 4. [`bundle`]: reading and validating a bundle's pod.json into the model.
//! 5. [`repository`]: a pod version found in a release repository (seed
//!    002), in a directory or over HTTP, read into a bundle.
//! 6. [`store`]: the on-disk layout, every path of it, staging and removal.
//! 7. [`image`], [`volume`], [`ports`]: images in their runtime (podman
//!    behind the [`image::Podman`] trait), data volumes, host ports.
//! 8. `units`: the unit files ops writes for a version and its pod.
//! 9. [`facts`]: what is deployed, as ops_pod and ops_facts report it.
//! 10. [`pod`]: ops_pod's engine: observe the host, plan steps (pure), apply
//!     them with the undo of each.
//! 11. [`release`]: ops_release's engine: publish a bundle into a release
//!     repository (observe, plan, apply).
//! 12. [`modules`]: the modules' options (their public contract) and
//!     bodies, each handing a typed request to its engine.
//! 13. `fuzzing` (test-only: the feature `fuzzing`, and the crate's own
//!     tests): the fuzz targets' entry points into the readers above.
//!
//! `tests/shape/check` holds this order too, and fails the tests when an
//! import points up it, a cycle appears, or a function passes 80 lines.
//!
//! The public modules are the crate's API: what the module binaries, the
//! testkit and the tests use. The rest is `pub(crate)`, free to change shape.

pub mod ansible;
pub(crate) mod atomic;
pub mod bundle;
pub(crate) mod clock;
pub(crate) mod command;
pub(crate) mod crash;
pub(crate) mod decode;
pub(crate) mod download;
pub mod facts;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod image;
pub(crate) mod lock;
pub mod modules;
pub(crate) mod outcome;
pub mod pod;
pub mod ports;
pub(crate) mod records;
pub mod release;
pub mod repository;
pub(crate) mod space;
pub mod store;
pub mod systemd;
#[cfg(feature = "testkit")]
pub mod testkit;
pub(crate) mod units;
pub(crate) mod unpack;
pub mod volume;
