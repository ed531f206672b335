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
    run_output(cmd).map(|out| out.stdout)
}

fn run_output(cmd: &mut Command) -> Result<command::Output, ImageError> {
    match command::run(cmd, None) {
        Ok(out) => Ok(out),
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
///
/// Returns what podman wrote on stderr: podman 3 (Debian 11) reports a
/// layer whose digest does not match there and still exits 0, loading
/// nothing, so the caller looks for the image and quotes this when it is
/// missing.
pub fn load(archive: &Path) -> Result<String, ImageError> {
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

/// podman's stderr without its progress lines, one line.
fn complaints(stderr: &str) -> String {
    const PROGRESS: [&str; 5] = [
        "Getting image source signatures",
        "Copying blob",
        "Copying config",
        "Writing manifest",
        "Storing signatures",
    ];
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !PROGRESS.iter().any(|p| l.starts_with(p)))
        .collect::<Vec<_>>()
        .join("; ")
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

/// Whether `podman image rm` failed because a container uses the image,
/// in the words of each podman ops supports: 4 and 5 say "image is in use
/// by a container", 3 (Debian 11) "as it is being used by N containers:
/// image is being used".
fn says_in_use(stderr: &str) -> bool {
    stderr.contains("in use by a container") || stderr.contains("image is being used")
}

/// Remove an image from podman's storage. A unit that ran `podman run
/// --rm` can stop before its container is gone (podman's cleanup runs after
/// the main process exits, and may be cut short), so "in use by a
/// container" is retried for a while, then reported as [`ImageError::InUse`].
pub fn remove(reference: &str) -> Result<(), ImageError> {
    let began = std::time::Instant::now();
    loop {
        match run(podman().args(["image", "rm", reference])) {
            Err(ImageError::Podman(CommandError::Failed { stderr, .. }))
                if says_in_use(&stderr) =>
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
    fn what_podman_load_complained_of_is_kept_without_its_progress() {
        // podman 3.0.1 (Debian 11) loading an archive with a damaged layer:
        // it exits 0 and loads nothing.
        let stderr = "Getting image source signatures\n\
                      Copying blob sha256:45260f5f\n\
                      Copying blob sha256:04ce5c27\n  \
                      Digest did not match, expected sha256:04ce5c27, got sha256:d0fa5544\n  \
                      open /x/oci-bad-layer.tar/manifest.json: not a directory\n";
        assert_eq!(
            complaints(stderr),
            "Digest did not match, expected sha256:04ce5c27, got sha256:d0fa5544; \
             open /x/oci-bad-layer.tar/manifest.json: not a directory"
        );
        assert_eq!(
            complaints("Copying config sha256:1\nWriting manifest to image destination\n"),
            ""
        );
    }

    #[test]
    fn every_supported_podman_is_understood_when_an_image_is_in_use() {
        // As printed by podman 3.0.1 (Debian 11), 4.3.1 (12) and 5.4 (13).
        for stderr in [
            "Error: 1 error occurred:\n\t* could not remove image 1de4f345ecd5 as it is being \
             used by 1 containers: image is being used\n",
            "Error: image used by 0d2c5a8f: image is in use by a container: consider listing \
             external containers and force-removing image",
        ] {
            assert!(says_in_use(stderr), "{stderr}");
        }
        assert!(!says_in_use("Error: 1de4f345ecd5: image not known"));
    }

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
