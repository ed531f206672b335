//! A recording stand-in for systemd, for unit tests of everything above
//! the [`Systemd`] interface. It keeps an active state per unit, records
//! every call as the `systemctl` words it stands for, and can be told
//! that some units fail to come up. Given a unit directory, it also loads
//! units as systemd does (at daemon-reload, from their files), so that
//! stopping a unit that was never loaded fails as `systemctl stop` does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{CommandError, Systemd, UnitStatus};

#[derive(Debug, Default)]
pub struct Recording {
    /// Every call, e.g. `start a.service b.service`.
    pub calls: Vec<String>,
    /// Active state per unit; absent means inactive.
    pub active: BTreeMap<String, String>,
    /// Units that fail as soon as they are started.
    pub failing: BTreeSet<String>,
    /// Answer of `verify`, by unit file name: an error message.
    pub invalid: BTreeMap<String, String>,
    /// `show` calls (not in `calls`: they change nothing), and the units
    /// each asked about.
    pub shows: Vec<usize>,
    /// `list` calls, and the patterns each gave.
    pub lists: Vec<usize>,
    /// Where unit files are. When set, a unit is loaded only while it runs
    /// or failed, or had a file (or a template's) at the last
    /// daemon-reload, and `stop` of a unit that is not loaded fails as
    /// `systemctl stop` does, after stopping the others. Unset, every unit
    /// is loaded.
    pub unit_dir: Option<PathBuf>,
    /// When set, this many more daemon-reloads succeed, then every one
    /// fails.
    pub reloads_before_failure: Option<usize>,
    /// Unit file names found at the last daemon-reload.
    pub files: BTreeSet<String>,
}

impl Recording {
    fn record(&mut self, verb: &str, units: &[String]) {
        let mut call = verb.to_owned();
        for u in units {
            call.push(' ');
            call.push_str(u);
        }
        self.calls.push(call);
    }

    /// Units the fake believes are active, sorted.
    pub fn running(&self) -> Vec<String> {
        self.active
            .iter()
            .filter(|(_, s)| s.as_str() == "active")
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Whether systemd would have `unit` loaded.
    pub(crate) fn is_loaded(&self, unit: &str) -> bool {
        if self.unit_dir.is_none() || self.active.contains_key(unit) || self.files.contains(unit) {
            return true;
        }
        // `name@instance.suffix` loads from the template `name@.suffix`.
        match (unit.split_once('@'), unit.rsplit_once('.')) {
            (Some((name, _)), Some((_, suffix))) => {
                self.files.contains(&format!("{name}@.{suffix}"))
            }
            _ => false,
        }
    }

    fn bring_up(&mut self, units: &[String]) -> Result<(), CommandError> {
        let mut failed = Vec::new();
        for u in units {
            let state = if self.failing.contains(u) {
                failed.push(u.clone());
                "failed"
            } else {
                "active"
            };
            self.active.insert(u.clone(), state.to_owned());
        }
        match failed.first() {
            None => Ok(()),
            Some(u) => Err(CommandError::Failed {
                line: format!("systemctl start {}", units.join(" ")),
                how: "exited with status 1".to_owned(),
                stderr: format!("Job for {u} failed."),
            }),
        }
    }
}

impl Systemd for Recording {
    fn daemon_reload(&mut self) -> Result<(), CommandError> {
        self.record("daemon-reload", &[]);
        match &mut self.reloads_before_failure {
            Some(0) => {
                return Err(CommandError::Failed {
                    line: "systemctl daemon-reload".to_owned(),
                    how: "exited with status 1".to_owned(),
                    stderr: "Failed to reload daemon: Access denied".to_owned(),
                })
            }
            Some(n) => *n -= 1,
            None => {}
        }
        if let Some(dir) = &self.unit_dir {
            self.files = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect();
        }
        Ok(())
    }

    fn start(&mut self, units: &[String], _timeout: Duration) -> Result<(), CommandError> {
        self.record("start", units);
        self.bring_up(units)
    }

    fn restart(&mut self, units: &[String], _timeout: Duration) -> Result<(), CommandError> {
        self.record("restart", units);
        self.bring_up(units)
    }

    fn stop(&mut self, units: &[String]) -> Result<(), CommandError> {
        self.record("stop", units);
        let mut not_loaded = Vec::new();
        for u in units {
            if !self.is_loaded(u) {
                not_loaded.push(format!("Failed to stop {u}: Unit {u} not loaded."));
            } else if self.active.get(u).map(String::as_str) != Some("failed") {
                self.active.remove(u);
            }
        }
        if not_loaded.is_empty() {
            return Ok(());
        }
        Err(CommandError::Failed {
            line: format!("systemctl stop {}", units.join(" ")),
            how: "exited with status 5".to_owned(),
            stderr: not_loaded.join("\n"),
        })
    }

    fn reset_failed(&mut self, units: &[String]) {
        self.record("reset-failed", units);
        for u in units {
            if self.active.get(u).map(String::as_str) == Some("failed") {
                self.active.remove(u);
            }
        }
    }

    fn show(&mut self, units: &[String]) -> Result<Vec<UnitStatus>, CommandError> {
        self.shows.push(units.len());
        Ok(units
            .iter()
            .map(|u| {
                let active = self
                    .active
                    .get(u)
                    .cloned()
                    .unwrap_or_else(|| "inactive".to_owned());
                UnitStatus {
                    unit: u.clone(),
                    load: if self.is_loaded(u) {
                        "loaded"
                    } else {
                        "not-found"
                    }
                    .to_owned(),
                    sub: if active == "active" {
                        "running"
                    } else {
                        "dead"
                    }
                    .to_owned(),
                    result: if active == "failed" {
                        "exit-code"
                    } else {
                        "success"
                    }
                    .to_owned(),
                    active,
                    restarts: 0,
                    exit_status: 0,
                    service_type: if u.ends_with(".service") {
                        "simple"
                    } else {
                        ""
                    }
                    .to_owned(),
                }
            })
            .collect())
    }

    fn list(&mut self, patterns: &[String]) -> Result<Vec<UnitStatus>, CommandError> {
        self.lists.push(patterns.len());
        // Prefix globs (`name-*`) are all ops uses.
        let wanted: Vec<String> = self
            .active
            .keys()
            .filter(|u| {
                patterns
                    .iter()
                    .any(|p| u.starts_with(p.trim_end_matches('*')))
            })
            .cloned()
            .collect();
        let shown = self.show(&wanted)?;
        self.shows.pop();
        Ok(shown)
    }

    fn journal(&mut self, unit: &str, _since: SystemTime, _lines: usize) -> Vec<String> {
        vec![format!("{unit}: fake journal line")]
    }

    fn verify(&mut self, files: &[PathBuf]) -> Result<bool, CommandError> {
        for f in files {
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            if let Some(msg) = self.invalid.get(name.as_ref()) {
                return Err(CommandError::Failed {
                    line: "systemd-analyze verify".to_owned(),
                    how: "exited with status 1".to_owned(),
                    stderr: msg.clone(),
                });
            }
        }
        Ok(true)
    }
}
