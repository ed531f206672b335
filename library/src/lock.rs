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

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

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
    holder_path: PathBuf,
    // Declared last: dropped (unlocked) after the holder file is gone.
    _lock: Flock<File>,
}

impl StoreLock {
    /// Take the lock of the store at `root`, waiting up to `timeout`.
    /// `what` says what this run is doing, for whoever waits behind it.
    pub fn acquire(root: &Path, timeout: Duration, what: &str) -> Result<StoreLock, LockError> {
        atomic::create_dir_all(root, 0o755)?;
        let path = root.join("lock");
        let holder_path = root.join("lock.holder");
        let started = Instant::now();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .at("open", &path)?;
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((back, Errno::EWOULDBLOCK)) if started.elapsed() < timeout => {
                    file = back;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err((_, Errno::EWOULDBLOCK)) => {
                    let holder = std::fs::read_to_string(&holder_path)
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_else(|_| "holder unknown".to_owned());
                    return Err(LockError::Timeout {
                        path,
                        holder,
                        waited: timeout.as_secs(),
                    });
                }
                Err((_, errno)) => {
                    return Err(FsError {
                        action: "lock",
                        path,
                        source: errno.into(),
                    }
                    .into())
                }
            }
        };
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let holder = format!(
            "held by pid {} since {since} (unix time): {what}\n",
            std::process::id()
        );
        atomic::write_file(&holder_path, holder.as_bytes(), 0o644)?;
        Ok(StoreLock {
            holder_path,
            _lock: lock,
        })
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = atomic::remove_file(&self.holder_path);
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
}
