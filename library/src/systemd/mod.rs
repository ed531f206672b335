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

pub use systemctl::{Systemctl, Unsupported};

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
    /// `ExecMainStatus`: the main process's exit status (or signal), 0
    /// when unknown. systemd's own codes (200 and up) say which step of
    /// starting the service failed, before its program ran.
    pub exit_status: i64,
    /// `ConditionResult`: `no` once a start was skipped because a
    /// condition failed (and before any start was tried), `yes` once one
    /// held.
    pub condition_result: String,
}

/// What systemd's own exit codes mean (systemd.exec(5), "Process Exit
/// Codes"): the service failed before its program ran, so it logged
/// nothing itself.
pub(crate) fn exit_status_meaning(status: i64) -> Option<&'static str> {
    if !(200..=255).contains(&status) {
        return None;
    }
    Some(match status {
        200 => "CHDIR: its WorkingDirectory= could not be entered",
        203 => "EXEC: its program could not be run (missing, or not executable where it runs)",
        204 => "MEMORY: out of memory",
        208 => "STDIN: its standard input could not be set up",
        209 => "STDOUT: its standard output could not be set up",
        210 => "CHROOT: its RootDirectory= could not be entered",
        216 => "GROUP: its Group= could not be taken",
        217 => "USER: its User= does not exist or could not be taken",
        218 => "CAPABILITIES: its capabilities could not be set",
        219 => "CGROUP: its control group could not be set up",
        226 => "NAMESPACE: its file system namespace could not be set up",
        228 => "SECCOMP: its system call filter could not be set up",
        233 => "RUNTIME_DIRECTORY: its RuntimeDirectory= could not be made",
        238 => "STATE_DIRECTORY: its StateDirectory= could not be made",
        243 => "CREDENTIALS: its credentials could not be set up",
        _ => "one of systemd's own steps of starting it failed",
    })
}

/// systemd's `ActiveState`, read in one place: what ops decides on. The
/// raw word stays in [`UnitStatus::active`], for messages and facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActiveState {
    Active,
    /// Active, reloading its configuration.
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
    /// A word this version of ops does not know (`maintenance`,
    /// `refreshing` on newer systemd): neither stopped nor up.
    Other,
}

impl ActiveState {
    /// Reads systemd's word. Empty (a unit systemd has not loaded, or a
    /// state it did not report) counts as inactive: such a unit does not run.
    pub(crate) fn parse(word: &str) -> ActiveState {
        match word {
            "active" => ActiveState::Active,
            "reloading" => ActiveState::Reloading,
            "inactive" | "" => ActiveState::Inactive,
            "failed" => ActiveState::Failed,
            "activating" => ActiveState::Activating,
            "deactivating" => ActiveState::Deactivating,
            _ => ActiveState::Other,
        }
    }

    /// Up: active, reloading included.
    pub(crate) fn is_active(self) -> bool {
        matches!(self, ActiveState::Active | ActiveState::Reloading)
    }

    /// Up or on its way up: a unit whose work would be cut short.
    pub(crate) fn is_running(self) -> bool {
        self.is_active() || self == ActiveState::Activating
    }
}

impl UnitStatus {
    pub(crate) fn active_state(&self) -> ActiveState {
        ActiveState::parse(&self.active)
    }

    /// Anything but stopped: running, starting, stopping or failed.
    pub(crate) fn needs_stopping(&self) -> bool {
        self.active_state() != ActiveState::Inactive
    }

    /// Not running: inactive (or never loaded), or failed.
    pub(crate) fn is_stopped(&self) -> bool {
        matches!(
            self.active_state(),
            ActiveState::Inactive | ActiveState::Failed
        )
    }

    /// An inactive unit whose last start was skipped: a condition failed.
    pub(crate) fn skipped(&self) -> bool {
        self.active_state() == ActiveState::Inactive && self.condition_result == "no"
    }

    /// Up as ops means it: active, or a one-shot service that ran and
    /// succeeded (its own conditions may have skipped it: a start ops
    /// makes is of the current version, whose pivot condition holds).
    pub(crate) fn is_up(&self) -> bool {
        match self.active_state() {
            ActiveState::Active => true,
            ActiveState::Inactive => self.service_type == "oneshot" && self.result == "success",
            _ => false,
        }
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
    /// `systemctl stop`: like it, fails when one of `units` is not loaded
    /// (after stopping the others). [`stop_units`] is what callers want.
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

/// Stop `units`: done once none of them runs. `systemctl stop` fails for
/// a unit systemd has not loaded ("Unit … not loaded": a target that was
/// never started, a unit whose file was just removed); such a unit does
/// not run, so that is no failure of the stop. Any other failure is one
/// only if a unit still runs after it.
pub(crate) fn stop_units(systemd: &mut dyn Systemd, units: &[String]) -> Result<(), CommandError> {
    if units.is_empty() {
        return Ok(());
    }
    let Err(error) = systemd.stop(units) else {
        return Ok(());
    };
    match systemd.show(units) {
        Ok(status) if status.iter().all(UnitStatus::is_stopped) => Ok(()),
        _ => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_a_unit_that_is_not_loaded_is_done_not_failed() {
        let mut systemd = fake::Recording {
            unit_dir: Some(std::env::temp_dir().join("ops-no-such-unit-dir")),
            ..Default::default()
        };
        let units = ["ops-x.target".to_owned(), "x-1-web.service".to_owned()];
        systemd.active.insert(units[1].clone(), "active".to_owned());
        let raw = systemd.stop(&units).unwrap_err().to_string();
        assert!(raw.contains("Unit ops-x.target not loaded"), "{raw}");
        assert!(systemd.running().is_empty(), "the loaded one stopped");
        systemd.active.insert(units[1].clone(), "active".to_owned());
        stop_units(&mut systemd, &units).unwrap();
        assert!(systemd.running().is_empty());
    }

    /// One row per word systemd may print: what ops reads into it.
    #[test]
    fn every_active_state_word_is_read_one_way() {
        // (word, stopped, needs stopping, active, running)
        let table = [
            ("active", false, true, true, true),
            ("reloading", false, true, true, true),
            ("activating", false, true, false, true),
            ("deactivating", false, true, false, false),
            ("failed", true, true, false, false),
            ("inactive", true, false, false, false),
            ("", true, false, false, false),
            ("maintenance", false, true, false, false),
        ];
        for (word, stopped, needs_stopping, active, running) in table {
            let status = UnitStatus {
                active: word.to_owned(),
                ..UnitStatus::default()
            };
            let state = status.active_state();
            assert_eq!(
                (
                    status.is_stopped(),
                    status.needs_stopping(),
                    state.is_active(),
                    state.is_running()
                ),
                (stopped, needs_stopping, active, running),
                "{word:?}"
            );
            assert_eq!(status.is_up(), word == "active", "{word:?}");
        }
    }

    #[test]
    fn an_inactive_unit_whose_condition_failed_was_skipped() {
        let status = |active: &str, condition: &str| UnitStatus {
            active: active.to_owned(),
            condition_result: condition.to_owned(),
            ..UnitStatus::default()
        };
        assert!(status("inactive", "no").skipped());
        assert!(!status("inactive", "yes").skipped());
        assert!(!status("active", "no").skipped());
        assert!(!status("inactive", "no").is_up());
    }

    #[test]
    fn a_oneshot_that_ran_and_succeeded_is_up() {
        let ran = |result: &str| UnitStatus {
            active: "inactive".to_owned(),
            service_type: "oneshot".to_owned(),
            result: result.to_owned(),
            ..UnitStatus::default()
        };
        assert!(ran("success").is_up());
        assert!(!ran("exit-code").is_up());
    }
}
