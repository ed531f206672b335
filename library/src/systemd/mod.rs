//! Talking to systemd: one small interface, [`Systemd`], with the real
//! implementation ([`Systemctl`]) and a recording fake ([`fake::Recording`])
//! for unit tests.
//!
//! The real one drives `systemctl`, `journalctl` and `systemd-analyze`
//! rather than D-Bus: they are on every systemd host, need no extra crate
//! or bus connection, speak the same words an operator types (so every
//! failure message can be rerun by hand), and `systemctl start` already
//! implements "wait for the start job", including readiness for
//! `Type=notify`. The cost, a process per call, is a few milliseconds, and
//! calls are batched (one `systemctl show` for many units).

pub mod fake;
mod systemctl;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub use systemctl::Systemctl;

pub use crate::command::CommandError;

/// What systemd says of one unit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitStatus {
    pub unit: String,
    /// `LoadState`: loaded, not-found, ...
    pub load: String,
    /// `ActiveState`: active, inactive, failed, activating, ...
    pub active: String,
    /// `SubState`: running, dead, exited, waiting, auto-restart, ...
    pub sub: String,
    /// `Result` of the last run: success, exit-code, timeout, ...
    pub result: String,
    /// `NRestarts`, for services.
    pub restarts: u64,
    /// `Type` of a service (simple, notify, oneshot, ...); empty otherwise.
    pub service_type: String,
}

impl UnitStatus {
    /// Anything but stopped: running, starting, stopping or failed.
    pub fn needs_stopping(&self) -> bool {
        !matches!(self.active.as_str(), "inactive" | "")
    }

    /// Up as ops means it: active, or a one-shot service that ran and
    /// succeeded.
    pub fn is_up(&self) -> bool {
        self.active == "active"
            || (self.service_type == "oneshot"
                && self.active == "inactive"
                && self.result == "success")
    }
}

/// The operations ops needs from systemd.
pub trait Systemd {
    fn daemon_reload(&mut self) -> Result<(), CommandError>;
    /// Start `units` and wait for their start jobs (readiness included)
    /// for at most `timeout`.
    fn start(&mut self, units: &[String], timeout: Duration) -> Result<(), CommandError>;
    /// Restart `units`, waiting as [`Systemd::start`] does.
    fn restart(&mut self, units: &[String], timeout: Duration) -> Result<(), CommandError>;
    fn stop(&mut self, units: &[String]) -> Result<(), CommandError>;
    /// Forget that `units` failed, so a stopped version leaves no trace.
    fn reset_failed(&mut self, units: &[String]);
    fn show(&mut self, units: &[String]) -> Result<Vec<UnitStatus>, CommandError>;
    /// The units systemd has loaded whose names match `patterns` (shell
    /// globs), in one query; a unit it has not loaded is inactive (dead).
    /// Only `unit`, `load`, `active` and `sub` are filled in.
    fn list(&mut self, patterns: &[String]) -> Result<Vec<UnitStatus>, CommandError>;
    /// The last `lines` journal lines of `unit` logged since `since`;
    /// empty when unavailable.
    fn journal(&mut self, unit: &str, since: SystemTime, lines: usize) -> Vec<String>;
    /// Check unit files (and the drop-in directories beside them) the way
    /// systemd will load them. `Ok(false)` when no verifier is installed.
    fn verify(&mut self, files: &[PathBuf]) -> Result<bool, CommandError>;
}
