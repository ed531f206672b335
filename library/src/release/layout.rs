//! The release repository's layout, every path of it, in one place:
//!
//! ```text
//! REPO/images/LABEL/IMAGE/IVERSION/{FILE,id,sha512,FILE.SIGEXT}
//! REPO/volumes/LABEL/VOLUME/VVERSION/{FILE,sha256}
//! REPO/channels/CHANNEL/LABEL/POD/VERSION/{pod.json,<files>,release.json}
//! REPO/channels/CHANNEL/LABEL/POD/tip -> VERSION
//! ```
//!
//! LABEL is a label path (zero or more safe names joined by `/`); with no
//! label the segment is left out. ops_pod reads the same layout.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::records::names::{PodName, Version};

/// The record of one published version, written last in its directory.
pub const RECORD: &str = "release.json";
/// The pointer to a pod's latest version, beside its versions.
pub const TIP: &str = "tip";
/// The image id file of an image version directory.
pub const ID: &str = "id";
/// An ACI's sha512 (the hex of its id), as the seed's layout has it.
pub const SHA512: &str = "sha512";
/// The sha256 file of a volume version directory.
pub const SHA256: &str = "sha256";

/// A label path: zero or more safe names joined by `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Label(Vec<String>);

impl Label {
    /// Check a label path; empty text is no label.
    pub fn parse(text: &str) -> Result<Label, String> {
        if text.is_empty() {
            return Ok(Label::default());
        }
        let mut segments = Vec::new();
        for segment in text.split('/') {
            PodName::parse(segment).map_err(|e| {
                format!(
                    "a label path is safe names joined by '/' (no empty, '.' or '..' segment, \
                     no leading or trailing '/'), got {text:?}: {e}"
                )
            })?;
            segments.push(segment.to_owned());
        }
        Ok(Label(segments))
    }

    /// `None` when there is no label (as release.json writes it).
    pub fn text(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| self.0.join("/"))
    }

    fn push_onto(&self, path: &mut PathBuf) {
        for segment in &self.0 {
            path.push(segment);
        }
    }

    fn depth(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// Which kind of artifact directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Volume,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Image => "images",
            Kind::Volume => "volumes",
        }
    }
}

/// The paths of one pod's releases in a repository, under one channel and
/// label.
#[derive(Debug, Clone)]
pub struct Layout {
    pub repo: PathBuf,
    pub channel: PodName,
    pub label: Label,
    pub pod: PodName,
}

impl Layout {
    /// An artifact version directory, relative to the repository
    /// (`images/LABEL/app/2`), as reports name it.
    pub fn artifact_rel(&self, kind: Kind, name: &str, version: &Version) -> PathBuf {
        let mut path = PathBuf::from(kind.dir());
        self.label.push_onto(&mut path);
        path.push(name);
        path.push(version.as_str());
        path
    }

    pub fn artifact_dir(&self, kind: Kind, name: &str, version: &Version) -> PathBuf {
        self.repo.join(self.artifact_rel(kind, name, version))
    }

    /// The pod's directory in its channel, relative to the repository.
    pub fn pod_rel(&self) -> PathBuf {
        let mut path = PathBuf::from("channels");
        path.push(self.channel.as_str());
        self.label.push_onto(&mut path);
        path.push(self.pod.as_str());
        path
    }

    pub fn pod_dir(&self) -> PathBuf {
        self.repo.join(self.pod_rel())
    }

    /// A published version, relative to the repository.
    pub fn version_rel(&self, version: &Version) -> PathBuf {
        self.pod_rel().join(version.as_str())
    }

    pub fn version_dir(&self, version: &Version) -> PathBuf {
        self.repo.join(self.version_rel(version))
    }

    pub fn tip(&self) -> PathBuf {
        self.pod_dir().join(TIP)
    }

    /// The relative symlink target, from `file` (a path relative to a
    /// version directory) to `artifact` (relative to the repository).
    pub fn link_target(&self, file: &Path, artifact: &Path) -> PathBuf {
        // channels/CHANNEL/LABEL/POD/VERSION, then the file's own parents.
        let file_parents = file
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .count()
            .saturating_sub(1);
        let up = 4 + self.label.depth() + file_parents;
        let mut target = PathBuf::new();
        for _ in 0..up {
            target.push("..");
        }
        target.join(artifact)
    }
}

/// A path shown relative to the repository, `/`-joined.
pub fn shown(rel: &Path) -> String {
    rel.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_safe_names_joined_by_slashes() {
        assert_eq!(Label::parse("").unwrap().text(), None);
        assert_eq!(
            Label::parse("web/shop").unwrap().text().unwrap(),
            "web/shop"
        );
        for bad in ["/web", "web/", "web//shop", ".", "web/..", "Web"] {
            assert!(Label::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_link_climbs_to_the_repository_and_down_to_the_artifact() {
        let layout = Layout {
            repo: PathBuf::from("/r"),
            channel: PodName::parse("stable").unwrap(),
            label: Label::parse("web").unwrap(),
            pod: PodName::parse("shop").unwrap(),
        };
        let target = layout.link_target(
            Path::new("images/app.aci"),
            Path::new("images/web/app/2/app.aci"),
        );
        assert_eq!(
            target,
            Path::new("../../../../../../images/web/app/2/app.aci")
        );
        let version_dir = layout.version_dir(&Version::parse("2").unwrap());
        let resolved = version_dir.join("images").join(&target);
        let normal: PathBuf = resolved.components().fold(PathBuf::new(), |mut p, c| {
            if c == Component::ParentDir {
                p.pop();
            } else {
                p.push(c);
            }
            p
        });
        assert_eq!(normal, Path::new("/r/images/web/app/2/app.aci"));
    }
}
