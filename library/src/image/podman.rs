//! The podman runtime: images live in podman's storage, ops keeps a record.
//!
//! OCI and Docker archives go in with `podman load` (which checks every
//! layer's digest as it copies) after ops has checked that the archive's
//! config digest is the id asked for. An ACI's `rootfs/` is rewritten, in
//! the same pass that hashes it, into a plain tar in staging; once the
//! hash is right, `podman import` takes it with the ACI's exec,
//! environment and ports as image config, and ops tags it with the id.

use std::path::Path;
use std::process::Command;

use super::archive::AciApp;
use super::ImageError;
use crate::command::{self, CommandError};

pub const PODMAN: &str = "podman";

fn podman() -> Command {
    Command::new(PODMAN)
}

fn run(cmd: &mut Command) -> Result<String, ImageError> {
    match command::run(cmd, None) {
        Ok(out) => Ok(out.stdout),
        Err(CommandError::Spawn { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Err(ImageError::NoPodman)
        }
        Err(e) => Err(ImageError::Podman(e)),
    }
}

/// Does podman have this image (by id or reference)?
pub fn exists(reference: &str) -> Result<bool, ImageError> {
    match command::run(podman().args(["image", "exists", reference]), None) {
        Ok(_) => Ok(true),
        Err(CommandError::Failed { .. }) => Ok(false),
        Err(CommandError::Spawn { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Err(ImageError::NoPodman)
        }
        Err(e) => Err(ImageError::Podman(e)),
    }
}

/// The image's size as podman reports it.
pub fn size(reference: &str) -> Result<u64, ImageError> {
    let out = run(podman().args(["image", "inspect", "--format", "{{.Size}}", reference]))?;
    Ok(out.trim().parse().unwrap_or(0))
}

/// `podman load` an OCI or Docker archive.
pub fn load(archive: &Path) -> Result<(), ImageError> {
    run(podman().args(["load", "--quiet", "--input"]).arg(archive)).map(drop)
}

/// `podman import` a root filesystem tar as `reference`, with an ACI's
/// app as config.
pub fn import(rootfs_tar: &Path, reference: &str, app: &AciApp) -> Result<(), ImageError> {
    let mut cmd = podman();
    cmd.args(["import", "--quiet"]);
    for change in changes(app) {
        cmd.arg("--change").arg(change);
    }
    cmd.arg(rootfs_tar).arg(reference);
    run(&mut cmd).map(drop)
}

/// The Dockerfile-style instructions that carry an ACI app into podman.
fn changes(app: &AciApp) -> Vec<String> {
    let mut changes = Vec::new();
    if !app.exec.is_empty() {
        let exec = serde_json::to_string(&app.exec).expect("strings serialise");
        changes.push(format!("CMD {exec}"));
    }
    for env in &app.environment {
        // ENV name="value": the value JSON-quoted keeps spaces and quotes.
        let value = serde_json::to_string(&env.value).expect("strings serialise");
        changes.push(format!("ENV {}={value}", env.name));
    }
    for port in &app.ports {
        changes.push(format!("EXPOSE {}/{}", port.port, port.protocol));
    }
    if let Some(dir) = &app.working_directory {
        changes.push(format!("WORKDIR {dir}"));
    }
    changes
}

/// How long a removal waits for containers of just-stopped units to go.
const REMOVE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Remove an image from podman's storage. A unit that ran `podman run
/// --rm` can stop before its container is gone (podman's cleanup runs after
/// the main process exits, and may be cut short), so "in use by a
/// container" is retried for a while, then reported as [`ImageError::InUse`].
pub fn remove(reference: &str) -> Result<(), ImageError> {
    let began = std::time::Instant::now();
    loop {
        match run(podman().args(["image", "rm", reference])) {
            Err(ImageError::Podman(CommandError::Failed { stderr, .. }))
                if stderr.contains("in use by a container") =>
            {
                if began.elapsed() >= REMOVE_PATIENCE {
                    return Err(ImageError::InUse {
                        reference: reference.to_owned(),
                        detail: stderr.trim().trim_start_matches("Error: ").to_owned(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            other => return other.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::archive::{AciEnv, AciPort};

    #[test]
    fn an_aci_app_becomes_image_config() {
        let app = AciApp {
            exec: vec!["/bin/busybox".into(), "httpd".into(), "-f".into()],
            environment: vec![AciEnv {
                name: "GREETING".into(),
                value: "hello \"world\"".into(),
            }],
            ports: vec![AciPort {
                name: "http".into(),
                port: 8080,
                protocol: "tcp".into(),
            }],
            working_directory: None,
        };
        assert_eq!(
            changes(&app),
            vec![
                r#"CMD ["/bin/busybox","httpd","-f"]"#,
                r#"ENV GREETING="hello \"world\"""#,
                "EXPOSE 8080/tcp",
            ]
        );
    }
}
