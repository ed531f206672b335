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
    printable(&text[start..])
}

/// What a program printed, as a message may show it: it reaches a terminal
/// through Ansible, so no escape sequences or other control characters but
/// line breaks and tabs (each shown as `?`).
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// The most of one stream kept: what is past it is dropped from the front
/// (the end of an error is what says why). A program that prints more on
/// stdout has failed.
const MAX_OUTPUT: usize = 64 << 20;

/// How long the output of a program that has exited is still waited for:
/// a process it left behind may hold its stdout or stderr open for good.
const AFTER_EXIT: Duration = Duration::from_secs(2);

/// What a thread has read of a pipe so far, and word when it reached the end.
struct Drained {
    bytes: std::sync::Arc<std::sync::Mutex<(Vec<u8>, bool)>>,
    done: std::sync::mpsc::Receiver<()>,
}

/// Read all of `pipe` on a thread, keeping each chunk as it comes.
fn drain(mut pipe: impl Read + Send + 'static) -> Drained {
    let bytes = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), false)));
    let (sender, done) = std::sync::mpsc::channel();
    let kept = std::sync::Arc::clone(&bytes);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            if let Ok(mut kept) = kept.lock() {
                let (bytes, overflowed) = &mut *kept;
                bytes.extend_from_slice(&chunk[..n]);
                if bytes.len() > MAX_OUTPUT {
                    let excess = bytes.len() - MAX_OUTPUT / 2;
                    bytes.drain(..excess);
                    *overflowed = true;
                }
            }
        }
        let _ = sender.send(());
    });
    Drained { bytes, done }
}

impl Drained {
    /// Everything read by the end of the pipe, or by `until`, and whether
    /// more than [`MAX_OUTPUT`] came.
    fn collect(self, until: Instant) -> (Vec<u8>, bool) {
        let _ = self
            .done
            .recv_timeout(until.saturating_duration_since(Instant::now()));
        self.bytes
            .lock()
            .map(|mut kept| std::mem::take(&mut *kept))
            .unwrap_or_default()
    }
}

/// Run `cmd` to completion (or until `deadline`), failing unless it exits 0.
/// The program runs in a process group of its own: at the deadline the
/// whole group is killed, what it started too.
pub fn run(cmd: &mut Command, deadline: Option<Duration>) -> Result<Output, CommandError> {
    use std::os::unix::process::CommandExt;
    let line = line(cmd);
    crate::crash::point("run", std::path::Path::new(&line));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            line: line.clone(),
            source,
        })?;
    // Drain both pipes on threads so a chatty program never blocks on a
    // full pipe while we wait for it.
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let group = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => return Err(CommandError::Spawn { line, source }),
        }
        if let Some(limit) = deadline {
            if started.elapsed() >= limit {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
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
    // Whatever it left holding the pipes is not waited for past a grace
    // period: the output read by then counts.
    let until = Instant::now() + AFTER_EXIT;
    let ((out, too_much), (err, _)) = (out.collect(until), err.collect(until));
    let output = Output {
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    };
    if too_much {
        Err(CommandError::Failed {
            line,
            how: format!("printed more than {} MiB", MAX_OUTPUT >> 20),
            stderr: tail(&output.stderr),
        })
    } else if status.success() {
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
    fn a_process_left_holding_the_output_is_not_waited_for() {
        let out = run(
            Command::new("sh").args(["-c", "sleep 1000 & echo systemd 252"]),
            Some(Duration::from_secs(10)),
        )
        .unwrap();
        assert_eq!(out.stdout, "systemd 252\n");
    }

    #[test]
    fn a_deadline_kills_what_the_program_started_too() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 1000 & echo $! > {}; wait", pid_file.display());
        let err = run(
            Command::new("sh").args(["-c", &script]),
            Some(Duration::from_millis(500)),
        )
        .unwrap_err();
        assert!(matches!(err, CommandError::TimedOut { .. }), "{err}");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed, then reaped by init: gone within moments.
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
        });
        assert!(gone, "the program's child {pid} still runs");
    }

    #[test]
    fn endless_output_is_bounded() {
        let err = run(
            Command::new("sh").args(["-c", "yes systemd 252 | head -c 100000000"]),
            Some(Duration::from_secs(60)),
        )
        .unwrap_err();
        assert!(
            err.to_string().ends_with("printed more than 64 MiB"),
            "{err}"
        );
    }

    #[test]
    fn control_characters_of_stderr_are_not_passed_on() {
        let err = run(
            Command::new("sh").args([
                "-c",
                "printf 'no bus: \\033]0;x\\007 \\r\\n\\tend' >&2; exit 1",
            ]),
            None,
        )
        .unwrap_err();
        let shown = err.to_string();
        assert!(shown.ends_with("no bus: ?]0;x? ?\n\tend"), "{shown:?}");
    }

    #[test]
    fn stdout_is_returned() {
        let out = run(Command::new("echo").arg("hi"), None).unwrap();
        assert_eq!(out.stdout, "hi\n");
    }
}
