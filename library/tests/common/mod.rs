//! What the engine tests share: an ops_pod request with the tests'
//! defaults, and a byte-level picture of directories.

// Each test crate uses its part of this.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ops_core::bundle::PodName;
use ops_core::pod::{Request, State};
use ops_core::systemd::fake::Recording;

/// A store and unit directory in a temporary directory, and the fake
/// systemd.
pub struct Host {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub unit_dir: PathBuf,
    pub systemd: Recording,
}

impl Host {
    pub fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        Host {
            root: dir.path().join("store"),
            unit_dir: dir.path().join("units"),
            dir,
            systemd: Recording::default(),
        }
    }

    /// [`pod_request`] on this host.
    pub fn pod_request(&self, name: &str, state: State) -> Request {
        pod_request(&self.root, &self.unit_dir, name, state)
    }

    /// [`picture`] of the store and the unit directory.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Entry> {
        picture(&[&self.root, &self.unit_dir])
    }
}

/// The calls to `systemd` after the first `since` that change something
/// (all but `show` and `list`): a refusal makes none.
pub fn mutating_calls(systemd: &Recording, since: usize) -> Vec<String> {
    (systemd.calls[since..].iter())
        .filter(|c| !c.starts_with("show") && !c.starts_with("list"))
        .cloned()
        .collect()
}

/// The first action of a run that downloaded image `uri` to compute the
/// id pod.json leaves out, and its import of that copy: both in `actions`.
pub fn assert_downloaded_to_identify(actions: &[String], uri: &str, id: &str) {
    assert_eq!(
        actions[0],
        format!("download image {uri} to compute its id (pod.json gives none): {id}")
    );
    let imported = format!(
        "import image {id} from {uri} (the copy downloaded to compute its id) into systemd"
    );
    assert!(actions.contains(&imported), "{actions:?}");
}

/// An ops_pod request for pod `name` on this store and unit directory,
/// with short timeouts and every other option at its default.
pub fn pod_request(root: &Path, unit_dir: &Path, name: &str, state: State) -> Request {
    Request {
        bundle: None,
        repo: None,
        name: Some(PodName::parse(name).unwrap()),
        bundle_name: None,
        version: None,
        state,
        keep: None,
        env: None,
        root: root.to_owned(),
        unit_dir: unit_dir.to_owned(),
        start_timeout: Duration::from_secs(5),
        min_up_time: Duration::from_secs(1),
        rollback: true,
        lock_timeout: Duration::from_secs(30),
        runtime: None,
        keyring: None,
        require_signature: false,
        download_timeout: Duration::from_secs(5),
        ports: None,
        port_range: Default::default(),
        wake: false,
    }
}

/// One path of a picture: type, mode and owner, and its bytes (a file's
/// contents, a link's target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub head: String,
    pub bytes: Vec<u8>,
}

/// Every path under `tops` (missing ones are empty) with its [`Entry`].
pub fn picture(tops: &[&Path]) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    for top in tops {
        walk(top, &mut out);
    }
    out
}

fn walk(path: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    let head = format!("{:o} {}:{}", meta.mode(), meta.uid(), meta.gid());
    let bytes = if meta.file_type().is_symlink() {
        fs::read_link(path)
            .unwrap()
            .into_os_string()
            .into_encoded_bytes()
    } else if meta.is_file() {
        fs::read(path).unwrap()
    } else {
        Vec::new()
    };
    out.insert(path.to_owned(), Entry { head, bytes });
    if meta.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            walk(&entry.unwrap().path(), out);
        }
    }
}
