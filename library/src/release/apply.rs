//! Carrying out a release plan, under the repository lock.
//!
//! Every directory that appears (an image or volume version, a pod
//! version) is staged whole in a temporary sibling, each file written
//! through [`crate::atomic`] (synced), and renamed into place, so a reader
//! sees it complete or not at all; release.json is the last file of a pod
//! version. `tip` is replaced by a new link renamed over it. When a step
//! fails, the steps done are undone newest first.

use std::path::{Path, PathBuf};

use super::layout;
use super::step::Step;
use super::wanted::{Role, Target, Wanted};
use super::ReleaseError;
use crate::atomic::{self, FsError, FsResult};
use crate::lock::StoreLock;
use crate::outcome::{AfterChanges, Refusal};
use crate::records::image::Format;

const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

/// Carry out `steps`; the lock proves the repository is held.
pub fn apply(target: &Target, steps: &[Step], _lock: &StoreLock) -> Result<(), ReleaseError> {
    let wanted = match target {
        Target::Publish(w) => Some(w.as_ref()),
        Target::Remove { .. } | Target::Point { .. } => None,
    };
    let repo = &target.layout().repo;
    sweep(repo, steps)?;
    let mut done: Vec<&Step> = Vec::new();
    for step in steps {
        if let Err(error) = one(repo, wanted, step) {
            return Err(undo(repo, wanted, &done, step, &error));
        }
        done.push(step);
    }
    Ok(())
}

/// Remove what a run killed half-way left beside the places `steps`
/// write (staged directories, a half-made `tip` link): the lock says no
/// run is writing them now. A rerun converges with no leftovers.
fn sweep(repo: &Path, steps: &[Step]) -> Result<(), ReleaseError> {
    for step in steps {
        let path = match step {
            Step::AddImage { rel, .. }
            | Step::AddVolume { rel, .. }
            | Step::AddVersion { rel, .. }
            | Step::RemoveVersion { rel, .. } => repo.join(rel),
            Step::MoveTip { pod_rel, .. } | Step::RemoveTip { pod_rel, .. } => {
                repo.join(pod_rel).join(layout::TIP)
            }
            Step::WriteIntent { pod_rel, .. } | Step::ClearIntent { pod_rel, .. } => {
                repo.join(pod_rel).join(layout::INTENT)
            }
        };
        atomic::remove_temp_siblings(&path)
            .map_err(|e| Refusal::new(crate::ansible::error_chain(&e)))?;
    }
    Ok(())
}

fn one(repo: &Path, wanted: Option<&Wanted>, step: &Step) -> FsResult<()> {
    match (step, wanted) {
        (Step::AddImage { index, rel }, Some(w)) => {
            staged(&repo.join(rel), |stage| image(w, *index, stage))
        }
        (Step::AddVolume { index, rel }, Some(w)) => {
            staged(&repo.join(rel), |stage| volume(w, *index, stage))
        }
        (Step::AddVersion { rel, links, record }, Some(w)) => {
            staged(&repo.join(rel), |stage| version(w, links, record, stage))
        }
        (Step::MoveTip { pod_rel, to, .. }, _) => {
            atomic::write_symlink(&repo.join(pod_rel).join(layout::TIP), Path::new(to))
        }
        (Step::RemoveVersion { rel, .. }, _) => remove_dir(&repo.join(rel)),
        (Step::RemoveTip { pod_rel, .. }, _) => {
            atomic::remove_file(&repo.join(pod_rel).join(layout::TIP)).map(drop)
        }
        (Step::WriteIntent { pod_rel, version }, _) => write_intent(repo, pod_rel, version),
        (Step::ClearIntent { pod_rel, .. }, _) => {
            atomic::remove_file(&repo.join(pod_rel).join(layout::INTENT)).map(drop)
        }
        _ => Ok(()),
    }
}

/// Refuse, before anything is written, a plan that would write through a
/// symlink planted in the repository (`images` pointing elsewhere): every
/// write would refuse it, but half-way through.
pub fn refuse_planted(target: &Target, steps: &[Step]) -> Result<(), Refusal> {
    let repo = &target.layout().repo;
    for step in steps {
        let (path, link_ok) = match step {
            Step::AddImage { rel, .. }
            | Step::AddVolume { rel, .. }
            | Step::AddVersion { rel, .. }
            | Step::RemoveVersion { rel, .. } => (repo.join(rel), false),
            Step::MoveTip { pod_rel, .. } | Step::RemoveTip { pod_rel, .. } => {
                (repo.join(pod_rel).join(layout::TIP), true)
            }
            Step::WriteIntent { pod_rel, .. } | Step::ClearIntent { pod_rel, .. } => {
                (repo.join(pod_rel).join(layout::INTENT), true)
            }
        };
        atomic::refuse_planted(&path, link_ok)
            .map_err(|e| Refusal::new(crate::ansible::error_chain(&e)))?;
    }
    Ok(())
}

/// Write the pod directory's intent record (synced, renamed into place).
fn write_intent(repo: &Path, pod_rel: &Path, version: &str) -> FsResult<()> {
    let pod_dir = repo.join(pod_rel);
    atomic::create_dir_all(&pod_dir, DIR_MODE)?;
    atomic::write_file(
        &pod_dir.join(layout::INTENT),
        format!("{version}\n").as_bytes(),
        FILE_MODE,
    )
}

/// Build `dir` in a temporary sibling with `fill`, then rename it into
/// place; the sibling is removed when anything fails.
fn staged(dir: &Path, fill: impl FnOnce(&Path) -> FsResult<()>) -> FsResult<()> {
    if let Some(parent) = dir.parent() {
        atomic::create_dir_all(parent, DIR_MODE)?;
    }
    let stage = atomic::temp_dir_beside(dir, DIR_MODE)?;
    let result = fill(&stage)
        .and_then(|()| atomic::sync_dir(&stage))
        .and_then(|()| atomic::rename(&stage, dir));
    if result.is_err() {
        let _ = atomic::remove_tree(&stage);
    }
    result
}

/// The source of the file of `role`.
fn source(wanted: &Wanted, role: Role) -> Option<&Path> {
    wanted
        .files
        .iter()
        .find(|f| f.role == role)
        .map(|f| f.source.as_path())
}

fn missing_source(stage: &Path) -> FsError {
    FsError {
        action: "fill",
        path: stage.to_owned(),
        source: std::io::Error::other("the bundle file is gone"),
    }
}

fn image(wanted: &Wanted, index: usize, stage: &Path) -> FsResult<()> {
    let image = &wanted.images[index];
    let from = source(wanted, Role::Image(index)).ok_or_else(|| missing_source(stage))?;
    atomic::copy_file(from, &stage.join(&image.file), FILE_MODE)?;
    if let (Some(name), Some(from)) = (&image.signature, source(wanted, Role::Signature(index))) {
        atomic::copy_file(from, &stage.join(name), FILE_MODE)?;
    }
    if image.format == Format::Aci {
        let hex = image.id.trim_start_matches("sha512-");
        atomic::write_file(
            &stage.join(layout::SHA512),
            format!("{hex}\n").as_bytes(),
            FILE_MODE,
        )?;
    }
    atomic::write_file(
        &stage.join(layout::ID),
        format!("{}\n", image.id).as_bytes(),
        FILE_MODE,
    )
}

fn volume(wanted: &Wanted, index: usize, stage: &Path) -> FsResult<()> {
    let volume = &wanted.volumes[index];
    let from = source(wanted, Role::Volume(index)).ok_or_else(|| missing_source(stage))?;
    atomic::copy_file(from, &stage.join(&volume.file), FILE_MODE)?;
    atomic::write_file(
        &stage.join(layout::SHA256),
        format!("{}\n", volume.sha256).as_bytes(),
        FILE_MODE,
    )
}

fn version(
    wanted: &Wanted,
    links: &[(PathBuf, PathBuf)],
    record: &str,
    stage: &Path,
) -> FsResult<()> {
    atomic::write_file(
        &stage.join(crate::bundle::MANIFEST),
        &wanted.manifest,
        FILE_MODE,
    )?;
    for file in &wanted.files {
        let path = stage.join(&file.path);
        if let Some(parent) = path.parent() {
            atomic::create_dir_all(parent, DIR_MODE)?;
        }
        match links.iter().find(|(p, _)| *p == file.path) {
            Some((_, target)) => atomic::write_symlink(&path, target)?,
            None => {
                atomic::copy_file(&file.source, &path, FILE_MODE)?;
            }
        }
    }
    atomic::write_file(&stage.join(layout::RECORD), record.as_bytes(), FILE_MODE)
}

/// Take a directory out of the repository: renamed over an empty
/// temporary sibling first (gone from its name at once), then deleted.
fn remove_dir(dir: &Path) -> FsResult<()> {
    let aside = atomic::temp_dir_beside(dir, DIR_MODE)?;
    if let Err(e) = atomic::rename(dir, &aside) {
        let _ = atomic::remove_tree(&aside);
        return Err(e);
    }
    atomic::remove_tree(&aside)
}

/// Undo `done`, newest first, after `failed` failed with `error`.
fn undo(
    repo: &Path,
    wanted: Option<&Wanted>,
    done: &[&Step],
    failed: &Step,
    error: &FsError,
) -> ReleaseError {
    let mut after = AfterChanges {
        cause: format!(
            "{}: {}",
            failed.action(wanted),
            crate::ansible::error_chain(error)
        ),
        outcome: "the repository is as it was".to_owned(),
        undone: Vec::new(),
        undo_error: None,
        left: Vec::new(),
    };
    for (n, step) in done.iter().enumerate().rev() {
        let result = match step {
            Step::AddImage { rel, .. }
            | Step::AddVolume { rel, .. }
            | Step::AddVersion { rel, .. } => {
                remove_dir(&repo.join(rel)).map(|()| format!("remove {}", rel.display()))
            }
            Step::MoveTip { pod_rel, from, .. } => {
                let tip = repo.join(pod_rel).join(layout::TIP);
                match from {
                    Some(from) => atomic::write_symlink(&tip, from).map(|()| {
                        format!(
                            "point {}/tip at {} again",
                            pod_rel.display(),
                            from.display()
                        )
                    }),
                    None => atomic::remove_file(&tip)
                        .map(|_| format!("remove {}/tip", pod_rel.display())),
                }
            }
            Step::WriteIntent { pod_rel, .. } => {
                atomic::remove_file(&repo.join(pod_rel).join(layout::INTENT))
                    .map(|_| format!("remove {}/{}", pod_rel.display(), layout::INTENT))
            }
            Step::ClearIntent {
                pod_rel, version, ..
            } => write_intent(repo, pod_rel, version)
                .map(|()| format!("write {}/{} again", pod_rel.display(), layout::INTENT)),
            // Removals are not taken back (a removed version is gone).
            _ => {
                after.left.push(step.action(wanted));
                continue;
            }
        };
        match result {
            Ok(text) => after.undone.push(text),
            Err(e) => {
                after.undo_error = Some(crate::ansible::error_chain(&e));
                after
                    .left
                    .extend(done[..=n].iter().map(|s| s.action(wanted)));
                break;
            }
        }
    }
    if after.changed() {
        after.outcome = "the repository is left partly changed".to_owned();
    }
    ReleaseError::AfterChanges(Box::new(after))
}
