//! A recording stand-in for systemd, for unit tests of everything above
//! the [`Systemd`] interface. It keeps an active state per unit, records
//! every call as the `systemctl` words it stands for, and can be told
//! that some units fail to come up. Given a unit directory, it also loads
//! units as systemd does (at daemon-reload, from their files), so that
//! stopping a unit that was never loaded fails as `systemctl stop` does;
//! and a start does what systemd's does with what was loaded: it starts
//! the units the started one wants (`Wants=` in its file or drop-ins, its
//! `.wants/` directory), and skips a unit whose `ConditionPathExists=`
//! fails (left inactive, `ConditionResult=no`), which is how the pivot
//! of crate::store decides what a boot starts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
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
    /// What the last daemon-reload read of each unit: the text of its file
    /// and of its drop-ins (`<unit>.d/*.conf`), by unit (file) name.
    pub loaded: BTreeMap<String, String>,
    /// What each unit's `.wants/` directory held at the last daemon-reload.
    pub wants_dirs: BTreeMap<String, Vec<String>>,
    /// Units whose last start was skipped: a condition failed.
    pub skipped: BTreeSet<String>,
}

/// The values of `key` (`Wants`, `ConditionPathExists`) in unit file
/// texts, as the fake reads them: one setting a line, `%%` for `%`.
fn values<'a>(texts: impl Iterator<Item = &'a String>, key: &str) -> Vec<String> {
    texts
        .flat_map(|t| t.lines())
        .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().replace("%%", "%"))
        .collect()
}

/// Whether `ConditionPathExists=` settings hold, as systemd tests them:
/// `!` negates; those with `|` hold when any of them does, the others
/// each must.
fn conditions_hold(conditions: &[String]) -> bool {
    let mut triggers = Vec::new();
    for c in conditions {
        let (trigger, c) = match c.strip_prefix('|') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, c.as_str()),
        };
        let holds = match c.strip_prefix('!') {
            Some(path) => !Path::new(path.trim_start()).exists(),
            None => Path::new(c).exists(),
        };
        if trigger {
            triggers.push(holds);
        } else if !holds {
            return false;
        }
    }
    triggers.is_empty() || triggers.contains(&true)
}

/// Read a unit directory as a daemon-reload does: unit files (drop-ins
/// added to their unit's text) and `.wants/` directories.
fn load(dir: &Path) -> (BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    let mut wants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let names = |d: &Path| -> Vec<(String, PathBuf)> {
        let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.to_owned(), e.path())))
            .collect();
        v.sort();
        v
    };
    for (name, path) in names(dir) {
        if let Some(unit) = name.strip_suffix(".d").filter(|_| path.is_dir()) {
            for (conf, file) in names(&path) {
                if conf.ends_with(".conf") {
                    let text = std::fs::read_to_string(file).unwrap_or_default();
                    texts.entry(unit.to_owned()).or_default().push_str(&text);
                }
            }
        } else if let Some(unit) = name.strip_suffix(".wants").filter(|_| path.is_dir()) {
            wants.insert(
                unit.to_owned(),
                names(&path).into_iter().map(|n| n.0).collect(),
            );
        } else if path.is_file() {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let entry = texts.entry(name).or_default();
            *entry = format!("{text}\n{entry}");
        }
    }
    (texts, wants)
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

    /// What systemd loaded for `unit`: its own text, and its template's
    /// for an instance.
    fn texts(&self, unit: &str) -> Vec<&String> {
        let template = match (unit.split_once('@'), unit.rsplit_once('.')) {
            (Some((name, _)), Some((_, suffix))) => Some(format!("{name}@.{suffix}")),
            _ => None,
        };
        [Some(unit.to_owned()), template]
            .into_iter()
            .flatten()
            .filter_map(|u| self.loaded.get(&u))
            .collect()
    }

    /// Start `unit` and what it wants (once each); a unit whose
    /// conditions fail is skipped (a restart stops it first, so it is
    /// tested again).
    fn start_one(&mut self, unit: &str, restart: bool, seen: &mut BTreeSet<String>) {
        if !seen.insert(unit.to_owned()) {
            return;
        }
        let up = self.active.get(unit).is_some_and(|s| s == "active");
        let conditions = values(self.texts(unit).into_iter(), "ConditionPathExists");
        if up && !restart {
            // Active already: nothing tested, nothing changed.
        } else if !conditions_hold(&conditions) {
            self.skipped.insert(unit.to_owned());
            self.active.remove(unit);
        } else {
            self.skipped.remove(unit);
            let failed = self.failing.contains(unit);
            let state = if failed { "failed" } else { "active" };
            self.active.insert(unit.to_owned(), state.to_owned());
        }
        let mut wanted = values(self.texts(unit).into_iter(), "Wants");
        wanted.extend(self.wants_dirs.get(unit).cloned().unwrap_or_default());
        for w in wanted.iter().flat_map(|w| w.split_whitespace()) {
            // A wanted unit that is not there is no error (Wants=), nor
            // is one that fails: only the units named fail the start.
            if self.unit_dir.is_some() && self.is_loaded(w) {
                self.start_one(w, false, seen);
            }
        }
    }

    fn bring_up(&mut self, units: &[String], restart: bool) -> Result<(), CommandError> {
        let mut seen = BTreeSet::new();
        for u in units {
            self.start_one(u, restart, &mut seen);
        }
        let failed: Vec<&String> = (units.iter())
            .filter(|u| {
                self.failing.contains(*u) && self.active.get(*u).is_some_and(|s| s == "failed")
            })
            .collect();
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
            (self.loaded, self.wants_dirs) = load(dir);
        }
        Ok(())
    }

    fn start(&mut self, units: &[String], _timeout: Duration) -> Result<(), CommandError> {
        self.record("start", units);
        self.bring_up(units, false)
    }

    fn restart(&mut self, units: &[String], _timeout: Duration) -> Result<(), CommandError> {
        self.record("restart", units);
        self.bring_up(units, true)
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
                    // systemd says `no` too of a unit never started.
                    condition_result: if self.skipped.contains(u) || !self.active.contains_key(u) {
                        "no"
                    } else {
                        "yes"
                    }
                    .to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit directory: `t.target` wants `a.service` (whose drop-in's
    /// condition is `flag`) and `b@1.service` (its template's condition is
    /// `!flag`).
    fn loaded(dir: &Path) -> Recording {
        let flag = dir.join("flag%");
        let flag = flag.display().to_string().replace('%', "%%");
        std::fs::write(
            dir.join("t.target"),
            "[Unit]\nWants=a.service b@1.service\n",
        )
        .unwrap();
        std::fs::write(dir.join("a.service"), "[Service]\n").unwrap();
        std::fs::create_dir(dir.join("a.service.d")).unwrap();
        let condition = format!("[Unit]\nConditionPathExists={flag}\n");
        std::fs::write(dir.join("a.service.d/50-ops.conf"), condition).unwrap();
        let negated = format!("[Unit]\nConditionPathExists=!{flag}\n[Service]\n");
        std::fs::write(dir.join("b@.service"), negated).unwrap();
        std::fs::create_dir(dir.join("multi-user.target.wants")).unwrap();
        std::os::unix::fs::symlink(
            dir.join("t.target"),
            dir.join("multi-user.target.wants/t.target"),
        )
        .unwrap();
        let mut systemd = Recording {
            unit_dir: Some(dir.to_owned()),
            ..Recording::default()
        };
        systemd.daemon_reload().unwrap();
        systemd
    }

    #[test]
    fn a_start_starts_what_is_wanted_and_skips_a_unit_whose_condition_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut systemd = loaded(dir.path());
        let boot = ["multi-user.target".to_owned()];
        systemd.start(&boot, Duration::ZERO).unwrap();
        assert_eq!(
            systemd.running(),
            ["b@1.service", "multi-user.target", "t.target"]
        );
        let a = systemd.show(&["a.service".to_owned()]).unwrap().remove(0);
        assert_eq!(
            (a.active.as_str(), a.condition_result.as_str()),
            ("inactive", "no")
        );
        assert!(a.skipped());
        // The flag set: a start of the active b@1 tests nothing; a restart
        // tests its condition again, and it stops.
        std::fs::write(dir.path().join("flag%"), "").unwrap();
        systemd.start(&boot, Duration::ZERO).unwrap();
        assert!(systemd.running().contains(&"a.service".to_owned()));
        assert!(systemd.running().contains(&"b@1.service".to_owned()));
        systemd
            .restart(&["b@1.service".to_owned()], Duration::ZERO)
            .unwrap();
        assert!(!systemd.running().contains(&"b@1.service".to_owned()));
    }
}
