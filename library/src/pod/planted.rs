//! The check, before a plan's first write, that no path it writes goes
//! through a symlink ops did not make.
//!
//! Every write refuses such a link by itself (crate::atomic), but a run
//! writes many files: the refusal must come before the first, or an
//! earlier step would already have changed the host. So the paths of the
//! pod in the store and the plan's unit files are looked at first, without
//! following anything. The links ops makes itself are allowed where it
//! makes them: the pod's `current`/`previous` pointers and the unit
//! directory's `.wants` links. A volume's data is the archive's own tree,
//! with the links it holds, and is not looked into.

use std::fs;
use std::path::{Path, PathBuf};

use crate::atomic::{self, FsError};
use crate::bundle::PodName;
use crate::records::Runtime;
use crate::store::Store;
use crate::units::{Change, Entry};

/// The pointers ops keeps as symlinks in a pod's directory.
const POINTERS: &[&str] = &["current", "previous"];

/// The entries of `dir`, or none when it is missing or unreadable (the
/// write that needs it will say why).
fn entries(dir: &Path) -> Vec<PathBuf> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

fn is_dir_not_link(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Refuse when a path the plan for pod `name` writes, in the store or the
/// unit directory, is or goes through a symlink ops did not make.
pub fn refuse(
    store: &Store,
    name: &PodName,
    unit_dir: &Path,
    unit_changes: &[&Change],
) -> Result<(), FsError> {
    let root = store.root();
    let mut paths = vec![
        // The lock refuses a planted link by itself, but check mode takes
        // no lock: it is told here.
        root.join("lock"),
        root.join("lock.holder"),
        store.layout_path(),
        store.pods_dir(),
        store.staging_dir(),
        store.trash_dir(),
        store.ports_dir(),
        store.images_root(),
        store.images_dir(Runtime::Systemd),
        store.images_dir(Runtime::Podman),
        // Root runs the waker: a link there would run someone else's file.
        store.root().join("bin"),
        store.waker_path(),
    ];
    paths.extend(entries(&store.ports_dir()));
    let pod_dir = store.pod_dir(name);
    paths.push(pod_dir.clone());
    for entry in entries(&pod_dir) {
        // A killed run's half-made pointer or record: no path a plan
        // writes, and swept under the lock (Store::sweep_stale_temps).
        if entry.file_name().is_some_and(atomic::is_temp_name) {
            continue;
        }
        let pointer = entry
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| POINTERS.contains(&n));
        if pointer {
            atomic::refuse_planted(&entry, true)?;
            continue;
        }
        paths.push(entry.clone());
        if !is_dir_not_link(&entry) {
            continue;
        }
        // A version: its files, its unit files, its volumes' own files.
        for file in entries(&entry) {
            paths.push(file.clone());
            let sub = file.file_name().and_then(|n| n.to_str()).map(str::to_owned);
            match sub.as_deref() {
                Some("units") if is_dir_not_link(&file) => paths.extend(entries(&file)),
                Some("volumes") if is_dir_not_link(&file) => {
                    for volume in entries(&file) {
                        paths.push(volume.clone());
                        if is_dir_not_link(&volume) {
                            paths.extend(entries(&volume));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for path in &paths {
        atomic::refuse_planted(path, false)?;
    }
    for change in unit_changes {
        let link_ok = matches!(change.after, Some(Entry::Link(_)))
            || matches!(change.before, Some(Entry::Link(_)));
        atomic::refuse_planted(&unit_dir.join(&change.path), link_ok)?;
    }
    Ok(())
}

/// Refuse before systemd is asked about pod `name`'s units when a file
/// it would load for one of them (a unit file or drop-in named like the
/// pod's, in `unit_dir`) is not a regular file, or is a symlink that leads
/// to none. systemd follows links when it loads a unit (as `systemctl
/// show` makes it), and opening a FIFO leaves systemd itself waiting for
/// good (and every later systemctl with it). A link to a regular file (a
/// unit linked by `systemctl link`), to /dev/null (a mask) or to a
/// directory is systemd's own business and left alone (a write through it
/// is refused by itself); only its target's type is looked at, nothing is
/// read.
pub fn refuse_unit_files(unit_dir: &Path, name: &PodName) -> Result<(), FsError> {
    for entry in entries(unit_dir) {
        let pod_path = entry
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| crate::units::is_pod_path(name, n));
        if !pod_path {
            continue;
        }
        if is_dir_not_link(&entry) {
            for file in entries(&entry) {
                loadable(&file)?;
            }
        } else {
            loadable(&entry)?;
        }
    }
    Ok(())
}

/// A regular file (or a link to one, or a mask), or a refusal naming
/// `path`.
fn loadable(path: &Path) -> Result<(), FsError> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    let what = if meta.file_type().is_symlink() {
        let mask = fs::read_link(path).is_ok_and(|t| t == Path::new("/dev/null"));
        if mask || fs::metadata(path).is_ok_and(|m| m.is_file() || m.is_dir()) {
            return Ok(());
        }
        "it is a symlink to something other than a regular file"
    } else if meta.is_file() {
        return Ok(());
    } else {
        "it is not a regular file"
    };
    Err(FsError {
        action: "ask systemd about the unit of",
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{what}, which systemd would open when it loads the unit (a FIFO leaves \
                 systemd waiting for good); remove it and rerun (nothing was changed)"
            ),
        ),
    })
}
