//! The five ops modules: each one's argument spec (the public contract),
//! typed options and body. The binaries in `modules/` only call
//! [`crate::ansible::main`] with one of these.
//!
//! Each body checks what the spec cannot, builds its engine's typed
//! request (`pod::Request`, `image::Request`, `volume::Request`, or the
//! facts query), runs it against the real systemd and podman, and turns
//! the report, or the refusal or failure after changes, into one result.

pub mod facts;
pub mod image;
pub mod pod;
pub mod release;
mod validate;
pub mod volume;

use serde_json::{Map, Value};

use crate::ansible::{Context, Outcome};

/// A successful run's outcome: `msg` says what was done (prefixed in
/// check mode), the diff is given when there is one.
pub(crate) fn reported(
    context: &Context,
    changed: bool,
    msg: String,
    diff: &[Value],
    values: Map<String, Value>,
) -> Outcome {
    let msg = if context.check_mode {
        format!("check mode: {msg}")
    } else {
        msg
    };
    Outcome {
        changed,
        msg,
        diff: (!diff.is_empty()).then(|| Value::Array(diff.to_vec())),
        values,
        ..Outcome::default()
    }
}

/// The default store root of every module.
pub const DEFAULT_ROOT: &str = "/var/lib/ops";
