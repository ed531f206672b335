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

use std::path::{Component, Path, PathBuf};

use crate::records::names::{PodName, Version};

pub use crate::records::release::{Label, RECORD, TIP};

/// The image id file of an image version directory.
pub const ID: &str = "id";
/// An ACI's sha512 (the hex of its id), as the seed's layout has it.
pub const SHA512: &str = "sha512";
/// The sha256 file of a volume version directory.
pub const SHA256: &str = "sha256";
/// The intent record in a pod directory: the version a run that adds it
/// is about to point `tip` at, written before the version is renamed into
/// place and removed once `tip` names it. A `.`-name: never a version.
pub const INTENT: &str = ".tip-intent";

/// A name or label as messages show it.
pub trait Shown {
    fn shown(&self) -> String;
}

impl Shown for Label {
    fn shown(&self) -> String {
        self.as_str().to_owned()
    }
}

impl Shown for PodName {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for Version {
    fn shown(&self) -> String {
        self.to_string()
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
        path.extend(self.label.segments());
        path.push(name);
        path.push(version.as_str());
        path
    }

    /// The directory of every version of an artifact (`images/LABEL/app`).
    pub fn artifact_versions_dir(&self, kind: Kind, name: &str) -> PathBuf {
        let mut path = self.repo.join(kind.dir());
        path.extend(self.label.segments());
        path.join(name)
    }

    pub fn artifact_dir(&self, kind: Kind, name: &str, version: &Version) -> PathBuf {
        self.repo.join(self.artifact_rel(kind, name, version))
    }

    /// The pod's directory in its channel, relative to the repository.
    pub fn pod_rel(&self) -> PathBuf {
        let mut path = PathBuf::from("channels");
        path.push(self.channel.as_str());
        path.extend(self.label.segments());
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

    pub fn intent(&self) -> PathBuf {
        self.pod_dir().join(INTENT)
    }

    /// Whether `record` (a release.json's bytes) is that of `version` of
    /// this pod, channel and label: only then is its directory a
    /// published version of it (labels have no fixed depth, so the same
    /// path can be another pod's directory or version).
    pub fn records(&self, record: &[u8], version: &Version) -> bool {
        let Ok(record) = serde_json::from_slice::<crate::records::release::ReleaseRecord>(record)
        else {
            return false;
        };
        record.pod == self.pod
            && record.version == *version
            && record.channel == self.channel.as_str()
            && record.label.unwrap_or_default() == self.label
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
        let up = 4 + self.label.segments().count() + file_parents;
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
