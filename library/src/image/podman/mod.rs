//! The podman runtime: images live in podman's storage, ops keeps a record.
//!
//! OCI and Docker archives go in with `podman load` (which checks every
//! layer's digest as it copies) after ops has checked that the archive's
//! config digest is the id asked for. An ACI's `rootfs/` is rewritten, in
//! the same pass that hashes it, into a plain tar in staging; once the
//! hash is right, `podman import` takes it with the ACI's exec,
//! environment and ports as image config, and ops tags it with the id.
//!
//! What ops asks of podman is the [`Podman`] interface, with the real
//! implementation ([`PodmanCli`], the `podman` command) and a recording
//! fake ([`fake::Recording`]) so that the runtime's import, presence and
//! removal logic is tested without podman.

mod cli;
pub mod fake;

use std::path::Path;

use super::archive::AciApp;
use super::ImageError;

pub use cli::{PodmanCli, PODMAN};

/// The operations ops needs from podman. Errors are [`ImageError::NoPodman`]
/// when podman is not installed, [`ImageError::Podman`] when it failed.
pub trait Podman {
    /// Does podman have this image (by id or reference)?
    fn exists(&mut self, reference: &str) -> Result<bool, ImageError>;
    /// The image's size as podman reports it.
    fn size(&mut self, reference: &str) -> Result<u64, ImageError>;
    /// `podman load` an OCI or Docker archive. Returns what podman
    /// complained of on stderr (progress lines left out): podman 3
    /// (Debian 11) reports a layer whose digest does not match there and
    /// still exits 0, loading nothing, so the caller looks for the image
    /// and quotes this when it is missing.
    fn load(&mut self, archive: &Path) -> Result<String, ImageError>;
    /// `podman import` a root filesystem tar as `reference`, with an
    /// ACI's app as config (see [`changes`]).
    fn import(
        &mut self,
        rootfs_tar: &Path,
        reference: &str,
        app: &AciApp,
    ) -> Result<(), ImageError>;
    /// Remove an image from podman's storage; [`ImageError::InUse`] when
    /// a container podman keeps uses it.
    fn remove(&mut self, reference: &str) -> Result<(), ImageError>;
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

/// Whether `podman image rm` failed because a container uses the image,
/// in the words of each podman ops supports: 4 and 5 say "image is in use
/// by a container", 3 (Debian 11) "as it is being used by N containers:
/// image is being used".
fn says_in_use(stderr: &str) -> bool {
    stderr.contains("in use by a container") || stderr.contains("image is being used")
}

/// The [`ImageError::InUse`] of podman's refusal to remove an image.
fn in_use(reference: &str, stderr: &str) -> ImageError {
    ImageError::InUse {
        reference: reference.to_owned(),
        detail: stderr.trim().trim_start_matches("Error: ").to_owned(),
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
