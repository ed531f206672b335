//! [`Systemd`] through `systemctl`, `journalctl` and `systemd-analyze`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Systemd, UnitStatus};
use crate::command::{self, CommandError};

/// The oldest systemd ops supports: Debian 11's. Every release from it
/// on is tested on a booted system of its own (tests/fleet).
const MINIMUM_VERSION: u32 = 247;

/// The first systemd whose `systemd-analyze verify` takes
/// `--recursive-errors=`; older ones refuse the option.
const RECURSIVE_ERRORS_SINCE: u32 = 250;

/// The host's systemd, of a version ops supports ([`Systemctl::connect`]).
#[derive(Debug)]
pub struct Systemctl {
    version: u32,
}

/// Why ops cannot work with this host's systemd.
#[derive(Debug, thiserror::Error)]
pub enum Unsupported {
    #[error(
        "this host runs systemd {release}; ops needs systemd {MINIMUM_VERSION} or newer \
         (Debian 11 and later): nothing was changed"
    )]
    TooOld { found: u32, release: String },
    // The cause is in the message, not a source: it reads before the
    // consequence.
    #[error(
        "cannot tell this host's systemd version ({0}); ops needs systemd {MINIMUM_VERSION} \
         or newer: nothing was changed"
    )]
    Unknown(CommandError),
}

/// The version in `systemctl --version`'s first line, `systemd 252
/// (252.39-1~deb12u2)`.
///
/// A number too large for a `u32` is read as the largest: it is no older
/// than any systemd.
pub(crate) fn parse_version(text: &str) -> Option<u32> {
    let first = text.lines().find(|l| !l.trim().is_empty())?.trim_start();
    let number = first.strip_prefix("systemd")?;
    if !number.starts_with(char::is_whitespace) {
        return None;
    }
    let number = number.trim_start();
    let end = number
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(number.len());
    if end == 0 {
        return None;
    }
    Some(number[..end].parse().unwrap_or(u32::MAX))
}

/// `systemctl --version`'s first line as a message can quote it: at most
/// 80 characters, control characters shown as `?`.
fn quotable(text: &str) -> String {
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim();
    let mut quoted: String = command::printable(&first.chars().take(80).collect::<String>());
    if first.chars().nth(80).is_some() {
        quoted.push('…');
    }
    quoted
}

/// `systemd-analyze verify`'s arguments before the files, for `version`.
fn verify_args(version: u32) -> Vec<&'static str> {
    let mut args = vec!["verify", "--man=no"];
    // From 250 on, verify also fails on errors in the units the files
    // refer to (the host's own, not ours to judge) unless told not to;
    // older ones have no such option and refuse to run when given it.
    if version >= RECURSIVE_ERRORS_SINCE {
        args.push("--recursive-errors=no");
    }
    args
}

impl Systemctl {
    /// The host's systemd, once its version is known to be supported: a
    /// host with an older one is refused before anything is looked at.
    pub(crate) fn connect() -> Result<Self, Unsupported> {
        let output = command::run(
            Command::new("systemctl").arg("--version"),
            Some(Duration::from_secs(10)),
        )
        .map_err(Unsupported::Unknown)?;
        let text = output.stdout;
        let Some(version) = parse_version(&text) else {
            // What it printed instead, or else what it said on stderr.
            let said = match quotable(&text) {
                quoted if quoted.is_empty() => quotable(&output.stderr),
                quoted => quoted,
            };
            return Err(Unsupported::Unknown(CommandError::Failed {
                line: "systemctl --version".to_owned(),
                how: "printed no version".to_owned(),
                stderr: said,
            }));
        };
        if version < MINIMUM_VERSION {
            let quoted = quotable(&text);
            return Err(Unsupported::TooOld {
                found: version,
                release: quoted
                    .strip_prefix("systemd")
                    .map_or(quoted.as_str(), str::trim_start)
                    .to_owned(),
            });
        }
        Ok(Self { version })
    }

    /// Only a verifier of unit files, on a machine that need not run
    /// systemd (ops_pod --validate, on a controller): its version read
    /// from `systemd-analyze --version`. Why not, when it cannot be had:
    /// then nothing verifies the unit files here.
    pub fn verifier() -> Result<Self, String> {
        let output = command::run(
            Command::new("systemd-analyze").arg("--version"),
            Some(Duration::from_secs(10)),
        );
        let text = match output {
            Ok(output) => output.stdout,
            Err(CommandError::Spawn { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err("systemd-analyze is not installed here".to_owned())
            }
            Err(e) => return Err(crate::ansible::error_chain(&e)),
        };
        match parse_version(&text) {
            Some(version) => Ok(Self { version }),
            None => Err(format!(
                "systemd-analyze --version printed no version ({})",
                quotable(&text)
            )),
        }
    }

    /// The version of systemd this talks to.
    pub fn version(&self) -> u32 {
        self.version
    }
}

fn systemctl(
    args: &[&str],
    units: &[String],
    deadline: Option<Duration>,
) -> Result<String, CommandError> {
    let mut cmd = Command::new("systemctl");
    cmd.args(args).args(units);
    command::run(&mut cmd, deadline).map(|o| o.stdout)
}

#[derive(serde::Deserialize)]
struct Listed {
    unit: String,
    load: String,
    active: String,
    sub: String,
}

/// Parse `systemctl list-units --output=json`.
pub(crate) fn parse_list(text: &str) -> Result<Vec<UnitStatus>, CommandError> {
    let listed: Vec<Listed> =
        serde_json::from_str(text.trim()).map_err(|e| CommandError::Failed {
            line: "systemctl list-units --all --output=json".to_owned(),
            how: "printed what is not the expected JSON".to_owned(),
            stderr: e.to_string(),
        })?;
    Ok(listed
        .into_iter()
        .map(|l| UnitStatus {
            unit: l.unit,
            load: l.load,
            active: l.active,
            sub: l.sub,
            ..UnitStatus::default()
        })
        .collect())
}

/// Parse `systemctl show` output for several units: blocks of `Key=value`
/// lines separated by blank lines, one block per unit in argument order.
pub(crate) fn parse_show(text: &str, units: &[String]) -> Vec<UnitStatus> {
    let raw: Vec<&str> = text
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .collect();
    let blocks: Vec<HashMap<&str, &str>> = raw
        .iter()
        .map(|b| b.lines().filter_map(|l| l.split_once('=')).collect())
        .collect();
    units
        .iter()
        .enumerate()
        .map(|(i, unit)| {
            let at = blocks
                .iter()
                .position(|b| b.get("Id") == Some(&unit.as_str()))
                .or_else(|| (i < blocks.len()).then_some(i));
            let block = at.and_then(|at| blocks.get(at));
            let lines = at.and_then(|at| raw.get(at)).copied().unwrap_or_default();
            let get = |k: &str| {
                block
                    .and_then(|b| b.get(k))
                    .copied()
                    .unwrap_or_default()
                    .to_owned()
            };
            UnitStatus {
                unit: unit.clone(),
                load: get("LoadState"),
                active: get("ActiveState"),
                sub: get("SubState"),
                result: get("Result"),
                restarts: get("NRestarts").parse().unwrap_or(0),
                service_type: get("Type"),
                exit_status: match get("ExecMainStatus").parse().unwrap_or(0) {
                    0 => control_exit_status(lines),
                    n => n,
                },
                condition_result: get("ConditionResult"),
            }
        })
        .collect()
}

/// The status systemd gave a failed control process (`ExecStartPre=` and
/// the like), when it is one of systemd's own (200 and up): such a process
/// failed before its program ran, and the main process never started, so
/// `ExecMainStatus` says nothing. `show` prints each as
/// `ExecStartPre={ path=... ; code=exited ; status=217/USER }`.
fn control_exit_status(block: &str) -> i64 {
    block
        .lines()
        .filter(|l| {
            ["ExecCondition=", "ExecStartPre=", "ExecStartPost="]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .filter_map(|l| {
            let status = &l[l.find("status=")? + "status=".len()..];
            let digits = status.len()
                - status
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .len();
            status[..digits].parse::<i64>().ok()
        })
        .find(|n| *n >= 200)
        .unwrap_or(0)
}

impl Systemd for Systemctl {
    fn daemon_reload(&mut self) -> Result<(), CommandError> {
        systemctl(&["daemon-reload"], &[], None).map(drop)
    }

    fn start(&mut self, units: &[String], timeout: Duration) -> Result<(), CommandError> {
        systemctl(&["start"], units, Some(timeout)).map(drop)
    }

    fn restart(&mut self, units: &[String], timeout: Duration) -> Result<(), CommandError> {
        systemctl(&["restart"], units, Some(timeout)).map(drop)
    }

    fn stop(&mut self, units: &[String]) -> Result<(), CommandError> {
        systemctl(&["stop"], units, None).map(drop)
    }

    fn reset_failed(&mut self, units: &[String]) {
        // Fails for units systemd no longer has loaded: nothing to forget.
        for unit in units {
            let _ = systemctl(&["reset-failed"], std::slice::from_ref(unit), None);
        }
    }

    fn show(&mut self, units: &[String]) -> Result<Vec<UnitStatus>, CommandError> {
        if units.is_empty() {
            return Ok(Vec::new());
        }
        let text = systemctl(
            &[
                "show",
                "--property=Id,LoadState,ActiveState,SubState,Result,NRestarts,Type,ExecMainStatus,\
                 ConditionResult,ExecCondition,ExecStartPre,ExecStartPost",
            ],
            units,
            None,
        )?;
        Ok(parse_show(&text, units))
    }

    fn list(&mut self, patterns: &[String]) -> Result<Vec<UnitStatus>, CommandError> {
        if patterns.is_empty() {
            return Ok(Vec::new());
        }
        // One D-Bus call (ListUnitsByPatterns); `show` asks per unit and
        // loads each one, a second for a few hundred units.
        let text = systemctl(
            &["list-units", "--all", "--output=json", "--"],
            patterns,
            None,
        )?;
        parse_list(&text)
    }

    fn journal(&mut self, unit: &str, since: SystemTime, lines: usize) -> Vec<String> {
        // journald may still hold the newest lines in memory.
        let _ = command::run(
            Command::new("journalctl").arg("--sync"),
            Some(Duration::from_secs(5)),
        );
        // Only the lines since this run started the unit: `--unit` alone
        // also shows an earlier run's (a version that failed before, under
        // the same unit name). Not by invocation id: a process that exits
        // at once may log before journald can tell its invocation.
        let since = since.duration_since(UNIX_EPOCH).unwrap_or_default();
        let since = format!("@{}.{:06}", since.as_secs(), since.subsec_micros());
        let n = lines.to_string();
        let mut cmd = Command::new("journalctl");
        cmd.args([
            "--no-pager",
            "--quiet",
            "--output=cat",
            "--since",
            &since,
            "--lines",
            &n,
            "--unit",
            unit,
        ]);
        command::run(&mut cmd, Some(Duration::from_secs(10)))
            .map(|o| o.stdout.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn verify(&mut self, files: &[PathBuf]) -> Result<bool, CommandError> {
        // A pod of no units has nothing to verify, and systemd-analyze
        // refuses an empty list ("Too few arguments").
        if files.is_empty() {
            return Ok(true);
        }
        let mut cmd = Command::new("systemd-analyze");
        cmd.args(verify_args(self.version)).args(files);
        match command::run(&mut cmd, Some(Duration::from_secs(60))) {
            Ok(_) => Ok(true),
            Err(CommandError::Spawn { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod of no units verifies without running systemd-analyze, which
    /// would fail on no files (a pod.json with no containers did).
    #[test]
    fn no_files_verify_without_systemd_analyze() {
        let mut systemctl = Systemctl { version: 257 };
        assert!(matches!(systemctl.verify(&[]), Ok(true)));
    }

    #[test]
    fn versions_are_read_from_the_first_line() {
        for (text, version) in [
            ("systemd 247 (247.3-7+deb11u8)\n+PAM +AUDIT", Some(247)),
            ("systemd 257 (257.13-1~deb13u1)\n", Some(257)),
            ("systemd 255 (255.4-1ubuntu8)", Some(255)),
            ("systemd 252\n", Some(252)),
            ("", None),
            ("systemctl: command not found", None),
            ("systemd (unknown)", None),
            ("systemd252", None),
            (" systemd 252\n", Some(252)),
            ("\nsystemd\t246 (246.6)", Some(246)),
            ("systemd +252", None),
            ("systemd 99999999999999999999 (x)", Some(u32::MAX)),
            ("systemd 0000246", Some(246)),
        ] {
            assert_eq!(parse_version(text), version, "{text:?}");
        }
    }

    #[test]
    fn a_version_line_is_quoted_short_and_printable() {
        let long = format!("systemd 12 {}", "A".repeat(200_000));
        let quoted = quotable(&long);
        assert_eq!(quoted.chars().count(), 81, "{quoted}");
        assert!(quoted.ends_with("A…"));
        assert_eq!(
            quotable("systemd 100 \u{1b}]0;title\u{7}\u{1b}[31mRED\r\n+PAM"),
            "systemd 100 ?]0;title??[31mRED"
        );
    }

    #[test]
    fn verify_asks_for_recursive_errors_only_where_systemd_knows_it() {
        // systemd 247 (Debian 11) refuses the option outright.
        assert_eq!(verify_args(247), ["verify", "--man=no"]);
        assert_eq!(verify_args(249), ["verify", "--man=no"]);
        for version in [250, 252, 257] {
            assert_eq!(
                verify_args(version),
                ["verify", "--man=no", "--recursive-errors=no"]
            );
        }
    }

    #[test]
    fn list_output_is_read_as_json() {
        let text = r#"[{"unit":"a-1-web@1.service","load":"loaded","active":"failed","sub":"failed","description":"web 1"}]"#;
        let listed = parse_list(text).unwrap();
        assert_eq!(listed[0].unit, "a-1-web@1.service");
        assert_eq!(
            (listed[0].active.as_str(), listed[0].sub.as_str()),
            ("failed", "failed")
        );
        assert!(parse_list("UNIT LOAD").is_err());
    }

    #[test]
    fn show_output_is_matched_to_units_by_id() {
        let text = "Type=simple\nNRestarts=2\nId=b.service\nLoadState=loaded\nActiveState=active\nSubState=running\nResult=success\n\n\
                    Id=a.timer\nLoadState=loaded\nActiveState=inactive\nSubState=dead\nResult=success\n";
        let units = ["a.timer".to_owned(), "b.service".to_owned()];
        let status = parse_show(text, &units);
        assert_eq!(status[0].unit, "a.timer");
        assert_eq!(status[0].active, "inactive");
        assert!(!status[0].needs_stopping());
        assert_eq!(status[1].restarts, 2);
        assert!(status[1].is_up());
        let failed = parse_show(
            "Id=c.service\nActiveState=failed\nResult=exit-code\nExecMainStatus=217\n",
            &["c.service".to_owned()],
        );
        assert_eq!(failed[0].exit_status, 217);
        let control = parse_show(
            "Id=d.service\nActiveState=failed\nResult=exit-code\nExecMainStatus=0\n\
             ExecStartPre={ path=/bin/true ; argv[]=/bin/true ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=7 ; code=exited ; status=217/USER }\n",
            &["d.service".to_owned()],
        );
        assert_eq!(control[0].exit_status, 217);
        assert_eq!(
            crate::systemd::exit_status_meaning(217),
            Some("USER: its User= does not exist or could not be taken")
        );
        assert_eq!(crate::systemd::exit_status_meaning(3), None);
        let skipped = parse_show(
            "Id=e.service\nActiveState=inactive\nSubState=dead\nResult=success\nConditionResult=no\n",
            &["e.service".to_owned()],
        );
        assert_eq!(skipped[0].condition_result, "no");
        assert!(skipped[0].skipped() && !skipped[0].is_up());
    }
}
