//! What the repository holds of a request, read into one value the plan
//! takes: the pod version directory (if published), where `tip` points,
//! and each image and volume version directory the version needs; and
//! ([`settle`]) which stored version of an image or volume a version
//! reuses. Reads only.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::artifact::hash_file;
use super::instructions::assemble::main_file;
use super::layout::{self, Kind};
use super::wanted::{Target, Wanted};
use crate::outcome::Refusal;
use crate::records::names::{same_image, ImageId, Version};

/// The repository, as far as one request is concerned.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The pod version directory, when it exists.
    pub version: Option<Published>,
    /// What `tip` names, when it exists.
    pub tip: Option<PathBuf>,
    /// Per wanted image, in order: its version directory, if there.
    pub images: Vec<Option<Held>>,
    pub volumes: Vec<Option<Held>>,
    /// The pod's published versions, in [`version_order`] (read only to
    /// point `tip`).
    pub published: Vec<String>,
    /// The pod directory's intent record, when there is one.
    pub intent: Option<Intent>,
    /// Published directories where a publish would write inside them or
    /// in their place (labels have no fixed depth).
    pub nested: Vec<Nested>,
}

/// A pod directory's intent record ([`layout::INTENT`]): a run that
/// added a version was to point `tip` at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The version it names, as written (trimmed).
    pub version: String,
    /// Whether that version of the pod is published (its release.json
    /// names it).
    pub published: bool,
}

/// A published directory in the way of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nested {
    /// The directory the publish would write (relative to the
    /// repository).
    pub wanted: PathBuf,
    /// The published directory in its way (relative to the repository).
    pub found: PathBuf,
    /// What the found directory is: `a published pod version`, `an image
    /// version`, `a volume version`, `the directory of published versions`.
    pub what: &'static str,
}

/// A published version directory.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub manifest: Option<Vec<u8>>,
    pub record: Option<Vec<u8>>,
    /// Each wanted file's path in it, and what is there.
    pub entries: BTreeMap<PathBuf, Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Missing,
    /// A regular file and its sha256.
    File(String),
    Link(PathBuf),
    Other,
}

/// An artifact version directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// `id` of an image, `sha256` of a volume, trimmed.
    pub record: String,
    /// Its artifact file's name.
    pub file: Option<String>,
    /// Every name in the directory.
    pub names: Vec<String>,
}

fn read_error(path: &Path, e: io::Error) -> Refusal {
    Refusal::new(format!(
        "cannot read {} in the repository: {e}",
        path.display()
    ))
}

/// Read what the repository holds of `target`.
pub fn observe(target: &Target) -> Result<Observed, Refusal> {
    let layout = target.layout();
    let dir = layout.version_dir(target.version());
    let tip = match fs::read_link(layout.tip()) {
        Ok(to) => Some(to),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(read_error(&layout.tip(), e)),
    };
    let mut observed = Observed {
        tip,
        intent: intent(layout)?,
        ..Observed::default()
    };
    match fs::symlink_metadata(&dir) {
        Ok(meta) if meta.is_dir() => observed.version = Some(published(&dir, target)?),
        Ok(_) => {
            return Err(Refusal::new(format!(
                "{} in the repository is not a directory",
                dir.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(read_error(&dir, e)),
    }
    match target {
        Target::Publish(wanted) => {
            observe_artifacts(wanted, &mut observed)?;
            observed.nested = nested(wanted)?;
        }
        Target::Point { .. } => observed.published = published_versions(&layout.pod_dir())?,
        Target::Remove { .. } => {}
    }
    Ok(observed)
}

/// Versions compared as numbers when both are, numbers first, else as
/// text: `1 < 2 < 10 < 1.0-rc < b`.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let digits = |s: &str| s.trim_start_matches('0').len();
    match (number(a), number(b)) {
        (true, true) => digits(a)
            .cmp(&digits(b))
            .then_with(|| a.trim_start_matches('0').cmp(b.trim_start_matches('0')))
            .then_with(|| a.cmp(b)),
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

/// The names of the version directories under `dir` (`.`-names, links
/// and files left out), in [`version_order`]; with `complete`, only those
/// holding that file.
pub fn version_dirs(dir: &Path, complete: Option<&str>) -> Result<Vec<String>, Refusal> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_error(dir, e)),
    };
    let mut versions: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| crate::records::names::Version::parse(n).is_ok())
        .filter(|n| complete.map_or(true, |f| dir.join(n).join(f).is_file()))
        .collect();
    versions.sort_by(|a, b| version_order(a, b));
    Ok(versions)
}

/// `target` with each image and volume whose version no instruction file
/// set stored once: when the repository holds, under the same label and
/// name, a version with the same content (an image's id, a volume's
/// sha256, its file there), that version is used rather than a copy made
/// under the pod version: the pod version's own when it holds it, else the
/// lowest in [`version_order`].
pub fn settle(target: &Target) -> Result<Target, Refusal> {
    let Target::Publish(wanted) = target else {
        return Ok(target.clone());
    };
    let mut wanted = wanted.clone();
    let layout = wanted.layout.clone();
    for image in wanted.images.iter_mut().filter(|i| !i.explicit) {
        let same = |dir: &Path| {
            let held = fs::read_to_string(dir.join(layout::ID)).unwrap_or_default();
            let same_id = match (ImageId::parse(held.trim()), ImageId::parse(&image.id)) {
                (Ok(a), Ok(b)) => same_image(&a, &b),
                _ => false,
            };
            same_id
                && main_file(dir, &image.file, layout::SHA512).is_some()
                && image
                    .signature
                    .as_ref()
                    .map_or(true, |s| dir.join(s).is_file())
        };
        let dir = layout.artifact_versions_dir(Kind::Image, &image.name);
        if let Some(version) = holding(&dir, &image.version, same)? {
            image.version = version;
        }
    }
    for volume in wanted.volumes.iter_mut().filter(|v| !v.explicit) {
        let same = |dir: &Path| {
            let held = fs::read_to_string(dir.join(layout::SHA256)).unwrap_or_default();
            held.trim() == volume.sha256 && main_file(dir, &volume.file, layout::SHA256).is_some()
        };
        let dir = layout.artifact_versions_dir(Kind::Volume, &volume.name);
        if let Some(version) = holding(&dir, &volume.version, same)? {
            volume.version = version;
        }
    }
    Ok(Target::Publish(wanted))
}

/// The version under `dir` that `same` accepts: `preferred` when it does,
/// else the lowest.
fn holding(
    dir: &Path,
    preferred: &Version,
    same: impl Fn(&Path) -> bool,
) -> Result<Option<Version>, Refusal> {
    if same(&dir.join(preferred.as_str())) {
        return Ok(None);
    }
    let found = version_dirs(dir, None)?
        .into_iter()
        .find(|v| same(&dir.join(v)));
    Ok(found.and_then(|v| Version::parse(&v).ok()))
}

/// The pod directory's intent record, and whether the version it names
/// is published.
fn intent(layout: &layout::Layout) -> Result<Option<Intent>, Refusal> {
    let path = layout.intent();
    let text = match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(&path, e)),
        Ok(meta) if !meta.is_file() => String::new(),
        Ok(_) => {
            let bytes = crate::atomic::read_regular(&path, 256).unwrap_or_default();
            String::from_utf8_lossy(&bytes).trim().to_owned()
        }
    };
    let published = Version::parse(&text).is_ok_and(|version| {
        fs::read(layout.version_dir(&version).join(layout::RECORD))
            .is_ok_and(|record| layout.records(&record, &version))
    });
    Ok(Some(Intent {
        version: text,
        published,
    }))
}

/// Published directories a publish of `wanted` would write inside of, or
/// in the place of: a pod directory (or a label directory above it) that
/// holds a release.json; an artifact's name directory (or a label
/// directory above it) that holds an `id` (images) or `sha256` (volumes);
/// a version directory that holds published versions of its own.
fn nested(wanted: &Wanted) -> Result<Vec<Nested>, Refusal> {
    let layout = &wanted.layout;
    let repo = &layout.repo;
    let mut found = Vec::new();
    let mut inside = |wanted_rel: PathBuf, top: usize, marker: &str, what: &'static str| {
        let mut prefix = PathBuf::new();
        for (n, part) in wanted_rel.iter().enumerate() {
            prefix.push(part);
            let dir = repo.join(&prefix);
            if n >= top && dir.join(marker).is_file() && !dir.is_symlink() {
                found.push(Nested {
                    wanted: wanted_rel.clone(),
                    found: prefix.clone(),
                    what,
                });
                return;
            }
        }
    };
    let version_rel = layout.version_rel(&wanted.version);
    // channels/CHANNEL/...: from the first label segment (or the pod).
    inside(
        layout.pod_rel(),
        2,
        layout::RECORD,
        "a published pod version",
    );
    for image in &wanted.images {
        let rel = layout.artifact_rel(Kind::Image, &image.name, &image.version);
        let name_rel = rel.parent().unwrap_or(&rel).to_path_buf();
        inside(name_rel, 1, layout::ID, "an image version");
    }
    for volume in &wanted.volumes {
        let rel = layout.artifact_rel(Kind::Volume, &volume.name, &volume.version);
        let name_rel = rel.parent().unwrap_or(&rel).to_path_buf();
        inside(name_rel, 1, layout::SHA256, "a volume version");
    }
    let version_dir = repo.join(&version_rel);
    if !version_dir.join(layout::RECORD).exists()
        && (fs::symlink_metadata(version_dir.join(layout::TIP)).is_ok()
            || !published_versions(&version_dir)?.is_empty())
    {
        found.push(Nested {
            wanted: version_rel.clone(),
            found: version_rel,
            what: "the directory of another pod's published versions",
        });
    }
    Ok(found)
}

fn published_versions(pod_dir: &Path) -> Result<Vec<String>, Refusal> {
    version_dirs(pod_dir, Some(layout::RECORD))
}

fn published(dir: &Path, target: &Target) -> Result<Published, Refusal> {
    let optional = |name: &str| match fs::read(dir.join(name)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_error(&dir.join(name), e)),
    };
    let mut published = Published {
        manifest: optional(crate::bundle::MANIFEST)?,
        record: optional(layout::RECORD)?,
        entries: BTreeMap::new(),
    };
    if let Target::Publish(wanted) = target {
        for file in &wanted.files {
            let path = dir.join(&file.path);
            let entry = match fs::symlink_metadata(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Entry::Missing,
                Err(e) => return Err(read_error(&path, e)),
                Ok(m) if m.file_type().is_symlink() => {
                    Entry::Link(fs::read_link(&path).map_err(|e| read_error(&path, e))?)
                }
                Ok(m) if m.is_file() => {
                    Entry::File(hash_file(&path).map_err(|e| read_error(&path, e))?.0)
                }
                Ok(_) => Entry::Other,
            };
            published.entries.insert(file.path.clone(), entry);
        }
    }
    Ok(published)
}

fn observe_artifacts(wanted: &Wanted, observed: &mut Observed) -> Result<(), Refusal> {
    for image in &wanted.images {
        let dir = wanted
            .layout
            .artifact_dir(Kind::Image, &image.name, &image.version);
        observed
            .images
            .push(held(&dir, &image.file, layout::ID, layout::SHA512)?);
    }
    for volume in &wanted.volumes {
        let dir = wanted
            .layout
            .artifact_dir(Kind::Volume, &volume.name, &volume.version);
        observed
            .volumes
            .push(held(&dir, &volume.file, layout::SHA256, layout::SHA256)?);
    }
    Ok(())
}

fn held(dir: &Path, file: &str, record: &str, other: &str) -> Result<Option<Held>, Refusal> {
    let names = match fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(dir, e)),
    };
    let text = match fs::read_to_string(dir.join(record)) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(read_error(&dir.join(record), e)),
    };
    Ok(Some(Held {
        record: text,
        file: main_file(dir, file, other)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
        names,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ordered_as_numbers_first_then_as_text() {
        let mut versions = vec!["b", "10", "1.0-rc", "2", "007", "1"];
        versions.sort_by(|a, b| version_order(a, b));
        assert_eq!(versions, ["1", "2", "007", "10", "1.0-rc", "b"]);
    }
}
