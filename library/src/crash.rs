//! Crash injection for the reliability tests, compiled in only with the
//! test-only cargo feature `crash-points` (tests/reliability builds the
//! modules with it into a target directory of its own).
//!
//! Every durable step ops takes passes here first: each write, rename,
//! symlink swap, removal and sync in `atomic`, and each external program
//! `command` runs (systemctl, podman). Numbered in the order a run meets
//! them, they are the crash points, enumerated by running a request once
//! rather than listed by hand. Environment:
//! - `OPS_CRASH_LOG=<file>`: append `<n>\t<kind>\t<subject>` per point;
//! - `OPS_CRASH_AT=<n>`: at point n, before its step, stop: with
//!   `OPS_CRASH_SIGNAL=STOP` the process stops itself first (a power-loss
//!   test snapshots the disk then), and then it dies by SIGKILL.
//!
//! Without the feature `point` is an empty function: a shipped binary has
//! no way to be killed half-way by its environment.

#[cfg(feature = "crash-points")]
pub(crate) fn point(kind: &str, subject: &std::path::Path) {
    use nix::sys::signal::{raise, Signal};
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static MET: AtomicU64 = AtomicU64::new(0);
    let n = MET.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(log) = std::env::var_os("OPS_CRASH_LOG") {
        let line = format!("{n}\t{kind}\t{}\n", subject.display()).replace(['\r'], "?");
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
    let at = std::env::var("OPS_CRASH_AT").ok();
    if at.and_then(|a| a.parse::<u64>().ok()) == Some(n) {
        if std::env::var("OPS_CRASH_SIGNAL").is_ok_and(|s| s == "STOP") {
            let _ = raise(Signal::SIGSTOP);
        }
        let _ = raise(Signal::SIGKILL);
    }
}

#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub(crate) fn point(_kind: &str, _subject: &std::path::Path) {}
