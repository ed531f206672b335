//! The four ops modules: each one's argument spec (the public contract),
//! typed options and body. The binaries in `modules/` only call
//! [`crate::ansible::main`] with one of these.
//!
//! Until a module's behaviour lands it validates its options (and ops_pod
//! its bundle) and then says plainly that it cannot act yet: a failure
//! normally, and in check mode `skipped`, as Ansible asks of a module that
//! cannot honour check mode.

pub mod facts;
pub mod image;
pub mod pod;
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
