//! A recording stand-in for podman, for unit tests of the podman runtime
//! without podman. It keeps podman's images in memory, records every call
//! that would change them as the `podman` words it stands for, and can be
//! told that a call fails, that a container uses an image, or that
//! `podman load` exits 0 loading nothing (as podman 3 does given a damaged
//! layer).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{changes, in_use, AciApp, ImageError, Podman};
use crate::command::CommandError;
use crate::image::archive;

#[derive(Debug, Default)]
pub struct Recording {
    /// Every call that changes podman's storage, e.g. `image rm REF`.
    pub calls: Vec<String>,
    /// `image exists` and `image inspect` calls (not in `calls`: they
    /// change nothing).
    pub queries: Vec<String>,
    /// The images podman has, by reference (an OCI/Docker image by its
    /// config digest's hex, as podman accepts it), with their size.
    pub images: BTreeMap<String, u64>,
    /// References of images a container podman keeps uses: removing them
    /// is refused as podman refuses it.
    pub in_use: BTreeSet<String>,
    /// Calls that fail, by their first word (`load`, `import`, `rm`,
    /// `inspect`), with what podman prints on stderr.
    pub failing: BTreeMap<String, String>,
    /// When set, `load` exits 0 having loaded nothing, printing this.
    pub loads_nothing: Option<String>,
    /// podman is not installed.
    pub missing: bool,
}

impl Recording {
    /// A fake podman that already has these images (of size 1).
    pub fn with(references: &[&str]) -> Recording {
        Recording {
            images: references.iter().map(|r| ((*r).to_owned(), 1)).collect(),
            ..Recording::default()
        }
    }

    /// The call as podman would be run; fails if it was told to fail.
    fn call(&mut self, verb: &str, line: String) -> Result<(), ImageError> {
        if self.missing {
            return Err(ImageError::NoPodman);
        }
        let line = format!("podman {line}");
        match self.failing.get(verb) {
            Some(stderr) => Err(ImageError::Podman(CommandError::Failed {
                line,
                how: "exited with status 125".to_owned(),
                stderr: stderr.clone(),
            })),
            None => Ok(()),
        }
    }

    fn record(&mut self, verb: &str, line: String) -> Result<(), ImageError> {
        self.calls.push(line.clone());
        self.call(verb, line)
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

impl Podman for Recording {
    fn exists(&mut self, reference: &str) -> Result<bool, ImageError> {
        self.queries.push(format!("image exists {reference}"));
        if self.missing {
            return Err(ImageError::NoPodman);
        }
        Ok(self.images.contains_key(reference))
    }

    fn size(&mut self, reference: &str) -> Result<u64, ImageError> {
        let line = format!("image inspect --format {{{{.Size}}}} {reference}");
        self.queries.push(line.clone());
        self.call("inspect", line)?;
        Ok(self.images.get(reference).copied().unwrap_or(0))
    }

    /// Loads what the archive holds, read as ops reads it
    /// ([`archive::identify`]), the archive's length as each image's size.
    fn load(&mut self, path: &Path) -> Result<String, ImageError> {
        self.record("load", format!("load --input {}", path.display()))?;
        if let Some(said) = &self.loads_nothing {
            return Ok(said.clone());
        }
        let (_, ids) = archive::identify(path, &path.display().to_string())?;
        for id in ids {
            let hex = id.trim_start_matches("sha256:").to_owned();
            self.images.insert(hex, file_size(path));
        }
        Ok(String::new())
    }

    fn import(
        &mut self,
        rootfs_tar: &Path,
        reference: &str,
        app: &AciApp,
    ) -> Result<(), ImageError> {
        let mut line = "import --quiet".to_owned();
        for change in changes(app) {
            line.push_str(&format!(" --change '{change}'"));
        }
        line.push_str(&format!(" {} {reference}", rootfs_tar.display()));
        self.record("import", line)?;
        self.images
            .insert(reference.to_owned(), file_size(rootfs_tar));
        Ok(())
    }

    fn remove(&mut self, reference: &str) -> Result<(), ImageError> {
        self.record("rm", format!("image rm {reference}"))?;
        if self.in_use.contains(reference) {
            return Err(in_use(
                reference,
                &format!(
                    "Error: image used by 0d2c5a8f: image is in use by a container: consider \
                     listing external containers and force-removing image {reference}"
                ),
            ));
        }
        match self.images.remove(reference) {
            Some(_) => Ok(()),
            None => Err(ImageError::Podman(CommandError::Failed {
                line: format!("podman image rm {reference}"),
                how: "exited with status 1".to_owned(),
                stderr: format!("Error: {reference}: image not known"),
            })),
        }
    }
}
