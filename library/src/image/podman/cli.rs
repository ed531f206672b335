//! [`PodmanCli`]: the [`Podman`] interface by the `podman` command, so
//! every failure message names a command an operator can rerun.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{complaints, in_use, says_in_use, AciApp, ImageError, Podman};
use crate::command::{self, CommandError};

pub const PODMAN: &str = "podman";

/// How long a removal waits for containers of just-stopped units to go.
const REMOVE_PATIENCE: Duration = Duration::from_secs(5);

/// The real podman, run as a command per call.
#[derive(Debug, Default, Clone, Copy)]
pub struct PodmanCli;

fn podman() -> Command {
    Command::new(PODMAN)
}

fn run(cmd: &mut Command) -> Result<String, ImageError> {
    run_output(cmd).map(|out| out.stdout)
}

fn run_output(cmd: &mut Command) -> Result<command::Output, ImageError> {
    command::run(cmd, None).map_err(podman_error)
}

fn podman_error(error: CommandError) -> ImageError {
    match error {
        CommandError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            ImageError::NoPodman
        }
        e => ImageError::Podman(e),
    }
}

impl Podman for PodmanCli {
    fn exists(&mut self, reference: &str) -> Result<bool, ImageError> {
        match command::run(podman().args(["image", "exists", reference]), None) {
            Ok(_) => Ok(true),
            Err(CommandError::Failed { .. }) => Ok(false),
            Err(e) => Err(podman_error(e)),
        }
    }

    fn size(&mut self, reference: &str) -> Result<u64, ImageError> {
        let out = run(podman().args(["image", "inspect", "--format", "{{.Size}}", reference]))?;
        Ok(out.trim().parse().unwrap_or(0))
    }

    fn load(&mut self, archive: &Path) -> Result<String, ImageError> {
        // Not --quiet: podman 3 then says nothing at all of what went wrong.
        match run_output(podman().args(["load", "--input"]).arg(archive)) {
            Ok(out) => Ok(complaints(&out.stderr)),
            Err(ImageError::Podman(CommandError::Failed { line, how, stderr })) => {
                Err(ImageError::Podman(CommandError::Failed {
                    line,
                    how,
                    stderr: complaints(&stderr),
                }))
            }
            Err(e) => Err(e),
        }
    }

    fn import(
        &mut self,
        rootfs_tar: &Path,
        reference: &str,
        app: &AciApp,
    ) -> Result<(), ImageError> {
        let mut cmd = podman();
        cmd.args(["import", "--quiet"]);
        for change in super::changes(app) {
            cmd.arg("--change").arg(change);
        }
        cmd.arg(rootfs_tar).arg(reference);
        run(&mut cmd).map(drop)
    }

    /// A unit that ran `podman run --rm` can stop before its container is
    /// gone (podman's cleanup runs after the main process exits, and may
    /// be cut short), so "in use by a container" is retried for a while
    /// before it is reported.
    fn remove(&mut self, reference: &str) -> Result<(), ImageError> {
        let began = Instant::now();
        loop {
            match run(podman().args(["image", "rm", reference])) {
                Err(ImageError::Podman(CommandError::Failed { stderr, .. }))
                    if says_in_use(&stderr) =>
                {
                    if began.elapsed() >= REMOVE_PATIENCE {
                        return Err(in_use(reference, &stderr));
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                other => return other.map(drop),
            }
        }
    }
}
