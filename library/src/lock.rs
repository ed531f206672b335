//! The store lock: one ops run changes a store at a time.
//!
//! Two Ansible runs (or two forks of one, when a play targets the same host
//! twice) could otherwise both decide that a version is missing and both
//! stage it, or switch `current` under each other. A change takes an
//! exclusive `flock` on `<root>/lock` and holds it in [`StoreLock`] for as
//! long as the change runs; the kernel releases it if the process dies, so
//! a crash never leaves the store locked. Waiting is bounded by the
//! module's `lock_timeout`. Who holds the lock is written beside it, in
//! `<root>/lock.holder`, so that a waiter who gives up can say whom it
//! waited for. Read-only work (check mode, facts) never takes the lock.
//!
//! Taking the lock creates the store root when it is missing. A run that
//! then changes nothing (it was refused under the lock) removes what taking
//! the lock created, so a refusal leaves a fresh host as it was; a waiter
//! that finds its lock file gone starts over on the new one.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

use crate::atomic::{self, Context, FsError};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(
        "another ops run holds the store lock {} ({holder}); gave up after waiting {waited} s (lock_timeout)",
        path.display()
    )]
    Timeout {
        path: PathBuf,
        holder: String,
        waited: u64,
    },
}

/// The held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct StoreLock {
    root: PathBuf,
    holder_path: PathBuf,
    /// The topmost directory that taking this lock created (the root or an
    /// ancestor of it): a run that leaves nothing else in the store removes
    /// it again, so a refusal on a fresh host leaves the host as it was.
    created: Option<PathBuf>,
    // Declared last: dropped (unlocked) after the holder file is gone.
    _lock: Flock<File>,
}

/// The topmost of `path` and its ancestors that does not exist.
fn first_missing(path: &Path) -> Option<PathBuf> {
    let mut missing = None;
    for ancestor in path.ancestors() {
        if ancestor.as_os_str().is_empty() || ancestor.symlink_metadata().is_ok() {
            break;
        }
        missing = Some(ancestor.to_path_buf());
    }
    missing
}

/// Whether `dir` holds nothing but empty directories and the files a run
/// writes before it changes anything (the lock, its holder, the layout
/// marker): what a run that was refused under the lock leaves.
fn only_scaffolding(dir: &Path, top: bool) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.into_iter().all(|entry| {
        let Ok(entry) = entry else { return false };
        let Ok(kind) = entry.file_type() else {
            return false;
        };
        let name = entry.file_name();
        if kind.is_dir() {
            only_scaffolding(&entry.path(), false)
        } else {
            top && kind.is_file()
                && ["lock", "lock.holder", "layout-version"]
                    .iter()
                    .any(|n| name == *n)
        }
    })
}

/// The lock file went away (or was replaced) under a waiter: it starts
/// over, within its `timeout` like any wait, so a lock file that keeps
/// changing can never hold a run forever.
fn gone_again(path: &Path, started: Instant, timeout: Duration) -> Result<(), LockError> {
    if started.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(10));
        return Ok(());
    }
    Err(FsError {
        action: "lock",
        path: path.to_owned(),
        source: std::io::Error::other(format!(
            "the lock file kept being removed or replaced for {} s (lock_timeout)",
            timeout.as_secs()
        )),
    }
    .into())
}

/// Remove the empty directories below `dir`, deepest first; what holds
/// anything stays.
fn remove_empty_dirs_below(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_empty_dirs_below(&entry.path())?;
            let _ = std::fs::remove_dir(entry.path());
        }
    }
    Ok(())
}

/// Waiting for the lock file at `path`, up to `timeout` from `started`.
struct Waiting {
    path: PathBuf,
    holder_path: PathBuf,
    started: Instant,
    timeout: Duration,
}

impl Waiting {
    /// Open (or create) the lock file; `None` when it was removed between
    /// making the directory and opening it.
    fn open(&self) -> Result<Option<File>, LockError> {
        // A lock file that is a symlink was planted: opening it would
        // create or lock a file elsewhere. Refused by name, and by
        // O_NOFOLLOW should one appear between the look and the open.
        atomic::refuse_planted(&self.path, false)?;
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(&self.path);
        match opened {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            other => Ok(Some(other.at("open", &self.path)?)),
        }
    }

    /// Lock `file`, retrying while another run holds it, until the timeout.
    fn lock(&self, mut file: File) -> Result<Flock<File>, LockError> {
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(lock),
                Err((back, Errno::EWOULDBLOCK)) if self.started.elapsed() < self.timeout => {
                    file = back;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err((_, Errno::EWOULDBLOCK)) => {
                    // Not through a link, and bounded: the holder's text
                    // is shown in the message.
                    let holder = crate::atomic::read_own(&self.holder_path, 4096)
                        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                        .unwrap_or_else(|_| "holder unknown".to_owned());
                    return Err(LockError::Timeout {
                        path: self.path.clone(),
                        holder,
                        waited: self.timeout.as_secs(),
                    });
                }
                Err((_, errno)) => {
                    return Err(FsError {
                        action: "lock",
                        path: self.path.clone(),
                        source: errno.into(),
                    }
                    .into())
                }
            }
        }
    }

    /// Whether the locked file is still the one at `path`. The holder
    /// before may have removed the lock file (and the store it created)
    /// while this run waited on it: a lock on a file no longer at `path`
    /// locks nothing.
    fn still_in_place(&self, lock: &Flock<File>) -> Result<bool, LockError> {
        use std::os::unix::fs::MetadataExt;
        let held = lock.metadata().at("lock", &self.path)?;
        Ok(matches!(std::fs::symlink_metadata(&self.path),
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev()))
    }

    fn gone_again(&self) -> Result<(), LockError> {
        gone_again(&self.path, self.started, self.timeout)
    }
}

/// What `lock.holder` says: who holds the lock, since when, doing `what`.
fn holder_line(what: &str) -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "held by pid {} since {since} (unix time): {what}\n",
        std::process::id()
    )
}

impl StoreLock {
    /// Take the lock of the store at `root`, waiting up to `timeout`.
    /// `what` says what this run is doing, for whoever waits behind it.
    pub fn acquire(root: &Path, timeout: Duration, what: &str) -> Result<StoreLock, LockError> {
        let created = first_missing(root);
        let waiting = Waiting {
            path: root.join("lock"),
            holder_path: root.join("lock.holder"),
            started: Instant::now(),
            timeout,
        };
        let lock = loop {
            // Again on every try: a run that created the store and left it
            // empty removes it (see Drop).
            atomic::create_dir_all(root, 0o755)?;
            let Some(file) = waiting.open()? else {
                waiting.gone_again()?;
                continue;
            };
            let lock = waiting.lock(file)?;
            if waiting.still_in_place(&lock)? {
                break lock;
            }
            waiting.gone_again()?;
        };
        let holder = holder_line(what);
        // A run killed while writing the holder left its temporary: the
        // lock says no run is writing one now.
        atomic::remove_temp_siblings(&waiting.holder_path)?;
        let lock = StoreLock {
            root: root.to_owned(),
            holder_path: waiting.holder_path,
            created,
            _lock: lock,
        };
        atomic::write_file(&lock.holder_path, holder.as_bytes(), 0o644)?;
        Ok(lock)
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = atomic::remove_file(&self.holder_path);
        let Some(top) = &self.created else { return };
        if !only_scaffolding(&self.root, true) {
            return;
        }
        // Still holding the lock: nothing else writes here now. Once the
        // lock file is unlinked another run may make a new one and start,
        // so after that only empty directories are removed (one by one,
        // never a tree): whatever the new run made stays.
        let _ = atomic::remove_file(&self.root.join("layout-version"));
        let _ = remove_empty_dirs_below(&self.root);
        let _ = atomic::remove_file(&self.root.join("lock"));
        let _ = atomic::remove_dir_if_empty(&self.root);
        for dir in self.root.ancestors().skip(1) {
            if !dir.starts_with(top) || !atomic::remove_dir_if_empty(dir).unwrap_or(false) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_waits_and_then_names_the_holder() {
        let root = tempfile::tempdir().unwrap();
        let held = StoreLock::acquire(root.path(), Duration::ZERO, "deploying example 1").unwrap();
        // flock locks belong to the open file description, so a second
        // open in this process contends like another process would.
        let started = Instant::now();
        let err = StoreLock::acquire(root.path(), Duration::from_millis(300), "other").unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        let msg = err.to_string();
        assert!(
            msg.starts_with("another ops run holds the store lock "),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("held by pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains(": deploying example 1)"), "{msg}");
        drop(held);
        assert!(!root.path().join("lock.holder").exists());
        StoreLock::acquire(root.path(), Duration::ZERO, "again").unwrap();
    }

    #[test]
    fn the_holder_line_a_cut_short_run_left_half_written_is_swept_by_the_next_taker() {
        // Killed, or the power lost, after its holder line was written to a
        // temporary file and before the rename: found by the power-loss
        // test (tests/reliability/power), in a release repository.
        let root = tempfile::tempdir().unwrap();
        let left = root.path().join(".lock.holder.ops-tmp.4242.0");
        std::fs::write(&left, "held by pid 4242 since 0 (unix time): cut short\n").unwrap();
        let lock = StoreLock::acquire(root.path(), Duration::ZERO, "next run").unwrap();
        assert!(!left.exists());
        drop(lock);
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["lock"]);
    }

    #[test]
    fn a_lock_that_created_the_store_removes_it_when_the_run_left_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a/b/store");
        let lock = StoreLock::acquire(&root, Duration::ZERO, "refused").unwrap();
        atomic::create_dir_all(&root.join("staging"), 0o700).unwrap();
        atomic::write_file(&root.join("layout-version"), b"1\n", 0o644).unwrap();
        drop(lock);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

        // Something written: the store stays, lock file and all.
        let lock = StoreLock::acquire(&root, Duration::ZERO, "deploying").unwrap();
        atomic::create_dir_all(&root.join("pods"), 0o755).unwrap();
        atomic::write_file(&root.join("pods/x"), b"", 0o644).unwrap();
        drop(lock);
        assert!(root.join("lock").is_file());

        // A store that was there is never removed, even empty.
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::create_dir(&root).unwrap();
        drop(StoreLock::acquire(&root, Duration::ZERO, "nothing").unwrap());
        assert!(root.join("lock").is_file());
    }

    #[test]
    fn a_waiter_whose_lock_file_was_removed_takes_the_new_one() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let first = StoreLock::acquire(&root, Duration::ZERO, "first").unwrap();
        let waiter = {
            let root = root.clone();
            std::thread::spawn(move || {
                let lock = StoreLock::acquire(&root, Duration::from_secs(10), "second").unwrap();
                atomic::write_file(&root.join("pods"), b"", 0o644).unwrap();
                drop(lock);
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        // The first run leaves nothing: its store goes, lock file and all.
        drop(first);
        waiter.join().unwrap();
        assert!(root.join("lock").is_file() && root.join("pods").is_file());
    }

    #[test]
    fn a_planted_lock_symlink_is_refused_at_once_and_nothing_is_made_where_it_leads() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        std::fs::create_dir(&root).unwrap();
        for target in ["dangling", "existing"] {
            let elsewhere = tmp.path().join(target);
            if target == "existing" {
                std::fs::write(&elsewhere, b"keep").unwrap();
            }
            let _ = std::fs::remove_file(root.join("lock"));
            std::os::unix::fs::symlink(&elsewhere, root.join("lock")).unwrap();
            let started = Instant::now();
            let error = StoreLock::acquire(&root, Duration::from_secs(30), "run").unwrap_err();
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{target}: no wait"
            );
            let shown = crate::ansible::error_chain(&error);
            assert!(
                shown.contains("lock: it is a symlink that ops did not make"),
                "{target}: {shown}"
            );
            match target {
                "dangling" => assert!(!elsewhere.exists(), "nothing made where it leads"),
                _ => assert_eq!(std::fs::read(&elsewhere).unwrap(), b"keep"),
            }
            assert!(!root.join("lock.holder").exists());
        }
    }
}
