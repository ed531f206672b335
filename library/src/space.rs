//! Free space: what an extraction or a download may still write before
//! the filesystem it writes to would be full.
//!
//! An archive's compressed size says nothing of what it expands to (a
//! few KiB of gzip can declare gigabytes), and a download's length is
//! whatever the server sends. So every write that an archive or a server
//! decides the size of is charged, before it is made, against a
//! [`Budget`] read once from the target filesystem (`statvfs`): the bytes
//! and inodes an unprivileged user may still use, less a reserve of
//! [`RESERVE_PERCENT`] of the filesystem (at least [`RESERVE_MIN_BYTES`]
//! and [`RESERVE_MIN_INODES`], at most [`RESERVE_MAX_BYTES`] and
//! [`RESERVE_MAX_INODES`]), so other writers (the services, the
//! journal) are not starved by one deploy. A tar entry's header declares
//! its size before its data comes, so an entry that would not fit is
//! refused before a byte of it is written; the caller removes what was
//! written before it (staging), so nothing is left behind.

use std::io;
use std::path::Path;

/// The share of a filesystem's bytes and inodes left free.
pub const RESERVE_PERCENT: u64 = 1;
/// The least a budget leaves free, in bytes.
pub const RESERVE_MIN_BYTES: u64 = 1 << 20;
/// The least a budget leaves free, in inodes.
pub const RESERVE_MIN_INODES: u64 = 64;
/// The most a budget leaves free, in bytes: 1% of a large disk is
/// gigabytes, and refusing a small volume on a disk with hundreds of
/// megabytes free would protect nothing (ext4 keeps its own reserve for
/// root apart, outside what `statvfs` calls available).
pub const RESERVE_MAX_BYTES: u64 = 64 << 20;
/// The most a budget leaves free, in inodes.
pub const RESERVE_MAX_INODES: u64 = 4096;

/// What may still be written to one filesystem.
#[derive(Debug, Clone)]
pub struct Budget {
    /// The directory whose filesystem it is, as named in messages.
    place: String,
    block: u64,
    bytes_left: u64,
    /// `None` where the filesystem does not count inodes (btrfs, ...).
    inodes_left: Option<u64>,
    reserve_bytes: u64,
    free_bytes: u64,
}

impl Budget {
    /// The budget of the filesystem holding `dir` (or its nearest existing
    /// ancestor: a store root may not exist yet), named `place` in
    /// messages.
    pub fn of(dir: &Path, place: &str) -> io::Result<Budget> {
        let mut at = dir;
        let stat = loop {
            match nix::sys::statvfs::statvfs(at) {
                Ok(stat) => break stat,
                Err(nix::errno::Errno::ENOENT) if at.parent().is_some() => {
                    at = at.parent().expect("checked");
                }
                Err(e) => return Err(io::Error::from(e)),
            }
        };
        let block = (stat.fragment_size() as u64).max(1);
        let total = (stat.blocks() as u64).saturating_mul(block);
        let free_bytes = (stat.blocks_available() as u64).saturating_mul(block);
        let reserve_bytes =
            (total / 100 * RESERVE_PERCENT).clamp(RESERVE_MIN_BYTES, RESERVE_MAX_BYTES);
        let inodes_left = (stat.files() > 0).then(|| {
            let reserve = (stat.files() as u64 / 100 * RESERVE_PERCENT)
                .clamp(RESERVE_MIN_INODES, RESERVE_MAX_INODES);
            (stat.files_available() as u64).saturating_sub(reserve)
        });
        Ok(Budget {
            place: place.to_owned(),
            block,
            bytes_left: free_bytes.saturating_sub(reserve_bytes),
            inodes_left,
            reserve_bytes,
            free_bytes,
        })
    }

    /// Charge a file of `size` bytes (rounded up to whole blocks) and one
    /// inode; refused, saying what does not fit, when the budget is spent.
    pub fn charge(&mut self, size: u64) -> io::Result<()> {
        let blocks = size.div_ceil(self.block).saturating_mul(self.block);
        if blocks > self.bytes_left {
            return Err(self.full(format!("{} more", bytes(size))));
        }
        if let Some(inodes) = &mut self.inodes_left {
            if *inodes == 0 {
                let place = &self.place;
                return Err(full(format!(
                    "the filesystem of {place} has no inode left for it (ops leaves \
                         {RESERVE_PERCENT}% of its inodes, at least {RESERVE_MIN_INODES} and at most \
                         {RESERVE_MAX_INODES}, free); \
                         nothing was kept"
                )));
            }
            *inodes -= 1;
        }
        self.bytes_left -= blocks;
        Ok(())
    }

    /// Charge `size` more bytes of a file already charged (a download as
    /// it arrives): no inode, no rounding.
    pub fn charge_bytes(&mut self, size: u64) -> io::Result<()> {
        if size > self.bytes_left {
            return Err(self.full("more".to_owned()));
        }
        self.bytes_left -= size;
        Ok(())
    }

    fn full(&self, needed: String) -> io::Error {
        full(format!(
            "it needs {needed} than the free space of the filesystem of {} allows ({} \
             free when ops started; ops leaves {} of it free); nothing was kept",
            self.place,
            bytes(self.free_bytes),
            bytes(self.reserve_bytes)
        ))
    }
}

/// The error of a spent budget: its own type, so that a caller can tell
/// it from a broken transfer ([`is_full`]) whatever wraps it
/// (`ErrorKind::StorageFull` is newer than the oldest Rust ops builds with).
#[derive(Debug)]
struct Full(String);

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Full {}

fn full(message: String) -> io::Error {
    io::Error::other(Full(message))
}

/// Whether `error` is a budget's refusal.
pub fn is_full(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<Full>())
}

/// A byte count for people: `512 bytes`, `3.5 MiB`, `2.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes_left: u64, inodes_left: Option<u64>) -> Budget {
        Budget {
            place: "the store".to_owned(),
            block: 4096,
            bytes_left,
            inodes_left,
            reserve_bytes: 1 << 20,
            free_bytes: bytes_left + (1 << 20),
        }
    }

    #[test]
    fn a_file_that_does_not_fit_is_refused_before_it_is_written() {
        let mut b = budget(3 * 4096, None);
        b.charge(1).unwrap();
        b.charge(8192).unwrap();
        let err = b.charge(1).unwrap_err();
        assert!(is_full(&err));
        assert_eq!(
            err.to_string(),
            "it needs 1 bytes more than the free space of the filesystem of the store allows \
             (1.0 MiB free when ops started; ops leaves 1.0 MiB of it free); nothing was kept"
        );
        // Empty files still take an inode.
        let mut b = budget(1 << 30, Some(2));
        b.charge(0).unwrap();
        b.charge(0).unwrap();
        let err = b.charge(0).unwrap_err().to_string();
        assert!(err.contains("has no inode left"), "{err}");
    }

    #[test]
    fn a_real_filesystem_has_a_budget_below_its_free_space() {
        let t = tempfile::tempdir().unwrap();
        let b = Budget::of(&t.path().join("not/yet"), "x").unwrap();
        assert!(b.bytes_left + b.reserve_bytes >= b.free_bytes.min(b.reserve_bytes));
        assert!(b.reserve_bytes >= RESERVE_MIN_BYTES);
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(1000), "1000 bytes");
    }
}
