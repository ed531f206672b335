//! An instructed bundle whose pod.json names image or volume files the
//! bundle does not carry: those are taken from the repository, at the
//! instructed version (default: the pod version; for an image no
//! instruction names, else the lowest version holding its id, as images
//! are stored once).
//!
//! The bundle is loaded as it is first. When the only problems are image
//! or volume files missing from it, a copy of the bundle is assembled in a
//! temporary directory (files hard-linked where the file system allows,
//! else copied), the repository's files put where pod.json names them,
//! and that copy is loaded and validated like any bundle. Nothing is
//! written to the repository here.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::Instructions;
use crate::bundle::{self, Bundle, BundleError, Problem};
use crate::outcome::Refusal;
use crate::records::names::{same_image, ImageId, PodName, Version};
use crate::release::layout::{self, Kind, Label, Layout};
use crate::release::observe::version_dirs;

/// A loaded bundle, and the assembled copy it lives in (kept while it is
/// read).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub bundle: Bundle,
    pub work: Option<Arc<tempfile::TempDir>>,
    /// Images taken from the repository, by their path in the bundle:
    /// the name and version they have there.
    pub found: BTreeMap<PathBuf, (String, Version)>,
}

const MISSING: &str = ": no such file in the bundle";

/// A file pod.json names that the bundle lacks.
#[derive(Debug)]
struct Missing {
    /// `images[0].path`, `volumes[1].data`.
    field: String,
    /// The path as pod.json writes it.
    path: String,
}

pub fn load(given: &Instructions, repo: &Path, label: &Label) -> Result<Loaded, Refusal> {
    let problems = match bundle::load(&given.bundle) {
        Ok(bundle) => {
            return Ok(Loaded {
                bundle,
                work: None,
                found: BTreeMap::new(),
            })
        }
        Err(BundleError::Invalid { problems, .. }) => problems,
        Err(e) => return Err(Refusal::new(crate::ansible::error_chain(&e))),
    };
    let Some(missing) = missing_artifacts(&problems) else {
        return Err(invalid(&given.bundle));
    };
    let manifest = given.bundle.join(bundle::MANIFEST);
    let text = crate::atomic::read_regular(&manifest, bundle::MAX_MANIFEST)
        .map_err(|e| Refusal::new(format!("cannot read {}: {e}", manifest.display())))?;
    let pod: Value = serde_json::from_slice(&text)
        .map_err(|e| Refusal::new(format!("{}: {e}", manifest.display())))?;
    let finder = Finder::new(given, repo, label, &pod)?;
    let mut found = Vec::new();
    let mut named = BTreeMap::new();
    for m in &missing {
        let (source, image) = finder.find(m, &pod)?;
        if let Some(image) = image {
            named.insert(PathBuf::from(&m.path), image);
        }
        found.push((m.path.clone(), source));
    }
    let work = tempfile::Builder::new()
        .prefix("ops-release-")
        .tempdir()
        .map_err(|e| Refusal::new(format!("cannot make a temporary directory: {e}")))?;
    let copy = work.path().join("bundle");
    let assembled = (|| {
        copy_tree(&given.bundle, &copy)?;
        for (path, source) in &found {
            let to = copy.join(path);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            link_or_copy(source, &to)?;
        }
        Ok::<(), io::Error>(())
    })();
    assembled.map_err(|e| {
        Refusal::new(format!(
            "cannot assemble the bundle {}: {e}",
            given.bundle.display()
        ))
    })?;
    let bundle = bundle::load(&copy).map_err(|e| Refusal::new(crate::ansible::error_chain(&e)))?;
    Ok(Loaded {
        bundle,
        work: Some(Arc::new(work)),
        found: named,
    })
}

/// The bundle's own error, again, for a caller that found nothing to
/// take from the repository.
fn invalid(path: &Path) -> Refusal {
    match bundle::load(path) {
        Err(e) => Refusal::new(crate::ansible::error_chain(&e)),
        Ok(_) => Refusal::new(format!(
            "the bundle {} changed while it was read",
            path.display()
        )),
    }
}

/// The missing files, when every problem is an image or volume file
/// missing from the bundle.
fn missing_artifacts(problems: &[Problem]) -> Option<Vec<Missing>> {
    problems
        .iter()
        .map(|p| {
            let quoted = p.message.strip_suffix(MISSING)?;
            let path: String = serde_json::from_str(quoted).ok()?;
            let (parent, member) = p.field.rsplit_once('.')?;
            let list = parent.rsplit('.').next().unwrap_or(parent);
            let artifact = list.starts_with("images[") && member == "path"
                || list.starts_with("volumes[") && member == "data";
            artifact.then(|| Missing {
                field: p.field.clone(),
                path,
            })
        })
        .collect()
}

/// The object holding the member `field` ends with (`images[0].path` →
/// that image), descending into a string that holds JSON (an Appc
/// manifest's `ops` annotation).
fn holder(root: &Value, field: &str) -> Option<Value> {
    let (parents, _) = field.rsplit_once('.')?;
    let mut here = root.clone();
    for segment in parents.split('.') {
        let mut parts = segment.split('[');
        let name = parts.next()?;
        if !name.is_empty() {
            here = here.get(name)?.clone();
        }
        if let Value::String(text) = &here {
            here = serde_json::from_str(text).ok()?;
        }
        for index in parts {
            here = here
                .get(index.strip_suffix(']')?.parse::<usize>().ok()?)?
                .clone();
        }
    }
    Some(here)
}

/// The document holding the pod's name and version: pod.json, or an Appc
/// manifest's `ops` annotation.
fn ops_document(pod: &Value) -> Option<Value> {
    if pod.get("acKind").is_none() {
        return Some(pod.clone());
    }
    let annotations = pod.get("annotations")?.as_array()?;
    let ops = annotations
        .iter()
        .find(|a| a.get("name") == Some(&Value::from("ops")))?;
    serde_json::from_str(ops.get("value")?.as_str()?).ok()
}

struct Finder<'a> {
    given: &'a Instructions,
    layout: Layout,
    pod_version: Version,
}

impl<'a> Finder<'a> {
    fn new(
        given: &'a Instructions,
        repo: &Path,
        label: &Label,
        pod: &Value,
    ) -> Result<Self, Refusal> {
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let doc = ops_document(pod).unwrap_or_default();
        let name = doc
            .get("name")
            .and_then(text)
            .and_then(|n| PodName::parse(&n).ok());
        let version = doc
            .get("version")
            .and_then(text)
            .and_then(|v| Version::parse(&v).ok());
        let (Some(name), Some(pod_version)) = (name, version) else {
            return Err(invalid(&given.bundle));
        };
        let layout = Layout {
            repo: repo.to_owned(),
            channel: given.channel.clone().unwrap_or_else(|| name.clone()),
            label: label.clone(),
            pod: name,
        };
        Ok(Finder {
            given,
            layout,
            pod_version,
        })
    }

    /// The repository's file for `missing`, and for an image the name and
    /// version it has there.
    fn find(
        &self,
        missing: &Missing,
        pod: &Value,
    ) -> Result<(PathBuf, Option<(String, Version)>), Refusal> {
        let held = holder(pod, &missing.field).unwrap_or_default();
        if missing.field.ends_with(".data") {
            // Native volumes have a name, an Appc annotation's a volume.
            let name = held
                .get("name")
                .or(held.get("volume"))
                .and_then(Value::as_str);
            Ok((self.volume(name.unwrap_or_default(), &missing.path)?, None))
        } else {
            let id = held.get("id").and_then(Value::as_str).unwrap_or_default();
            let id = ImageId::parse(id).map_err(|_| invalid(&self.given.bundle))?;
            self.image(&id, &missing.path)
        }
    }

    fn volume(&self, name: &str, path: &str) -> Result<PathBuf, Refusal> {
        let version = self
            .given
            .versions
            .volumes
            .get(name)
            .unwrap_or(&self.pod_version);
        let rel = self.layout.artifact_rel(Kind::Volume, name, version);
        let dir = self.layout.repo.join(&rel);
        main_file(&dir, path, layout::SHA256).ok_or_else(|| {
            Refusal::new(format!(
                "volume {name} version {version} is neither in the bundle ({path}) nor in the \
                 repository ({}); {}: the release tool cannot create volumes; put its archive in \
                 the bundle, or instruct a version the repository holds (volumes: {{{name}: \
                 VERSION}})",
                layout::shown(&rel),
                self.held(Kind::Volume, name, "volume")
            ))
        })
    }

    /// The versions of an artifact the repository holds, in words.
    fn held(&self, kind: Kind, name: &str, what: &str) -> String {
        let dir = self.layout.artifact_versions_dir(kind, name);
        let rel = dir.strip_prefix(&self.layout.repo).unwrap_or(&dir);
        match version_dirs(&dir, None).unwrap_or_default().as_slice() {
            [] => format!("the repository holds no version of {what} {name}"),
            versions => format!(
                "the repository holds {what} {name} at version{} {} ({})",
                if versions.len() == 1 { "" } else { "s" },
                versions.join(", "),
                rel.display()
            ),
        }
    }

    /// The versions of image `name` holding `id`.
    fn holding(&self, name: &str, id: &ImageId) -> Vec<String> {
        let dir = self.layout.artifact_versions_dir(Kind::Image, name);
        let mut versions = version_dirs(&dir, None).unwrap_or_default();
        versions.retain(|v| {
            let held = fs::read_to_string(dir.join(v).join(layout::ID)).unwrap_or_default();
            ImageId::parse(held.trim()).is_ok_and(|held| same_image(id, &held))
        });
        versions
    }

    /// The repository's image with `id`: at an instructed version, or at
    /// the pod version, under any name.
    fn image(
        &self,
        id: &ImageId,
        path: &str,
    ) -> Result<(PathBuf, Option<(String, Version)>), Refusal> {
        let images = self.layout.repo.join(self.layout.artifact_rel(
            Kind::Image,
            "x",
            &self.pod_version,
        ));
        let names_dir = images
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut candidates: Vec<(String, Version)> = self
            .given
            .versions
            .images
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let mut names: Vec<String> = fs::read_dir(&names_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in &names {
            candidates.push((name.clone(), self.pod_version.clone()));
        }
        // Stored once: an image no instruction file names may be held at
        // an earlier version only (the lowest holding it is taken).
        for name in names
            .iter()
            .filter(|n| !self.given.versions.images.contains_key(*n))
        {
            if let Some(version) = self.holding(name, id).first() {
                candidates.extend(Version::parse(version).map(|v| (name.clone(), v)));
            }
        }
        for (name, version) in candidates {
            let dir = self.layout.artifact_dir(Kind::Image, &name, &version);
            let held = fs::read_to_string(dir.join(layout::ID)).unwrap_or_default();
            let held = ImageId::parse(held.trim());
            if held.is_ok_and(|held| same_image(id, &held)) {
                if let Some(file) = main_file(&dir, path, layout::SHA512) {
                    return Ok((file, Some((name, version))));
                }
            }
        }
        Err(self.no_image(id, path))
    }

    /// An image neither the bundle nor the repository holds, named (its
    /// file's name, or the one image the instruction file names) with its
    /// version and the versions the repository holds of it.
    fn no_image(&self, id: &ImageId, path: &str) -> Refusal {
        let instructed = &self.given.versions.images;
        let stem = Path::new(path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match instructed.keys().collect::<Vec<_>>().as_slice() {
            [only] if !instructed.contains_key(&stem) => (*only).clone(),
            _ => stem,
        };
        let version = instructed.get(&name).unwrap_or(&self.pod_version);
        let holding = self.holding(&name, id);
        let dir = self.layout.artifact_versions_dir(Kind::Image, &name);
        let hint = match holding.first() {
            Some(v) => {
                format!("; version {v} holds this image: instruct it (images: {{{name}: {v}}})")
            }
            None if dir.is_dir() => ", none with this id".to_owned(),
            None => String::new(),
        };
        Refusal::new(format!(
            "image {name} version {version} ({path}, id {id}) is neither in the bundle nor in \
             the repository; {}{hint}. Building images is out of scope for ops_release: build it \
             and put it in the bundle, or instruct a version the repository holds with this id",
            self.held(Kind::Image, &name, "image")
        ))
    }
}

/// The artifact file of a version directory: the one pod.json names, or
/// the one file that is not a record or a signature.
pub fn main_file(dir: &Path, path: &str, record: &str) -> Option<PathBuf> {
    let wanted = Path::new(path).file_name()?;
    if dir.join(wanted).is_file() {
        return Some(dir.join(wanted));
    }
    let mut files = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| {
            let n = n.to_string_lossy();
            n != layout::ID
                && n != record
                && !n.starts_with('.')
                && ![".asc", ".sig", ".gpg"].iter().any(|s| n.ends_with(s))
        });
    let first = files.next()?;
    files.next().is_none().then(|| dir.join(first))
}

/// Copy the bundle's tree: directories made, files linked or copied,
/// symlinks made again as they were (validation then checks them).
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&source)?, &target)?;
        } else if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else if kind.is_file() {
            link_or_copy(&source, &target)?;
        }
    }
    Ok(())
}

fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    fs::hard_link(from, to).or_else(|_| fs::copy(from, to).map(drop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_path_leads_to_its_holder_through_an_annotation() {
        let native =
            serde_json::json!({"volumes": [{"name": "a"}, {"name": "b", "data": "b.tar"}]});
        assert_eq!(holder(&native, "volumes[1].data").unwrap()["name"], "b");
        let ops = r#"{"name": "p", "version": 2, "images": [{"id": "sha256:x", "path": "i.tar"}]}"#;
        let appc = serde_json::json!({"acKind": "PodManifest", "annotations": [{"name": "x", "value": ""}, {"name": "ops", "value": ops}]});
        assert_eq!(
            holder(&appc, "annotations[1].value.images[0].path").unwrap()["id"],
            "sha256:x"
        );
        assert_eq!(ops_document(&appc).unwrap()["version"], 2);
        let problems = [Problem {
            field: "annotations[1].value.volumes[0].data".into(),
            message: "\"d.tar\": no such file in the bundle".into(),
        }];
        assert_eq!(missing_artifacts(&problems).unwrap()[0].path, "d.tar");
        let other = [Problem {
            field: "containers[0].systemd.unit-files[0]".into(),
            message: "\"u.service\": no such file in the bundle".into(),
        }];
        assert!(missing_artifacts(&other).is_none());
    }
}
