//! Running external programs (systemctl, journalctl, systemd-analyze).
//!
//! One helper so that every failure says the same things: the command line,
//! how it ended, and the end of what it wrote to stderr. A deadline, when
//! given, kills the program once it passes.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run {line}")]
    Spawn {
        line: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{line} {how}{}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Failed {
        line: String,
        how: String,
        stderr: String,
    },
    #[error("{line} did not finish within {} s", timeout.as_secs_f32())]
    TimedOut { line: String, timeout: Duration },
}

/// What a finished program wrote.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// The command line as a person would type it.
pub fn line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last KiB of `text`, trimmed, on a character boundary.
fn tail(text: &str) -> String {
    let text = text.trim();
    let mut start = text.len().saturating_sub(1024);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// Run `cmd` to completion (or until `deadline`), failing unless it exits 0.
pub fn run(cmd: &mut Command, deadline: Option<Duration>) -> Result<Output, CommandError> {
    let line = line(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CommandError::Spawn {
            line: line.clone(),
            source,
        })?;
    // Drain both pipes on threads so a chatty program never blocks on a
    // full pipe while we wait for it.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => return Err(CommandError::Spawn { line, source }),
        }
        if let Some(limit) = deadline {
            if started.elapsed() >= limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::TimedOut {
                    line,
                    timeout: limit,
                });
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
    };
    if status.success() {
        Ok(output)
    } else {
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_owned(),
        };
        Err(CommandError::Failed {
            line,
            how,
            stderr: tail(&output.stderr),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_carries_the_line_the_status_and_stderr() {
        let err = run(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "sh -c echo oops >&2; exit 3 exited with status 3: oops"
        );
    }

    #[test]
    fn a_deadline_kills_the_program() {
        let err = run(
            Command::new("sleep").arg("5"),
            Some(Duration::from_millis(200)),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "sleep 5 did not finish within 0.2 s");
    }

    #[test]
    fn stdout_is_returned() {
        let out = run(Command::new("echo").arg("hi"), None).unwrap();
        assert_eq!(out.stdout, "hi\n");
    }
}
