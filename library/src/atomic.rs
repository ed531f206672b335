//! Every change ops makes to a file system goes through here.
//!
//! A file is never truncated or written in place: it is written to a
//! temporary file in the same directory, given its mode, synced, renamed
//! over the old one, and the directory is synced. A crash at any moment
//! leaves either the old file or the new one, never a torn one. Symlinks
//! are replaced the same way, and removals and renames sync their
//! directories so that they survive a power cut once reported done.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::crash;

/// A file-system operation that failed, with the path it was about.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}", path.display())]
pub struct FsError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

pub type FsResult<T> = Result<T, FsError>;

pub(crate) trait Context<T> {
    fn at(self, action: &'static str, path: &Path) -> FsResult<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn at(self, action: &'static str, path: &Path) -> FsResult<T> {
        self.map_err(|source| FsError {
            action,
            path: path.to_owned(),
            source,
        })
    }
}

/// Open a file a user named, for reading, refusing anything but a regular
/// file. The open cannot block (a FIFO opened without a writer) and the
/// type is checked on the opened file, so nothing changes between check
/// and read. Symlinks are followed: the user named the path, and may
/// point it anywhere they can read.
pub fn open_regular(path: &Path) -> io::Result<File> {
    // Looked at before it is opened: opening a device can act (a watchdog
    // arms, a tape rewinds). Then again on the opened file, which cannot
    // have changed since.
    not_regular(fs::metadata(path)?.file_type())?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)?;
    not_regular(file.metadata()?.file_type())?;
    // The kernel's own files (/proc, /sys) look regular but are
    // interfaces: reading one may block, fail, or take something away
    // (/proc/kmsg).
    use nix::sys::statfs::{self, fstatfs};
    let kernel = [
        statfs::PROC_SUPER_MAGIC,
        statfs::SYSFS_MAGIC,
        statfs::DEBUGFS_MAGIC,
        statfs::SECURITYFS_MAGIC,
        statfs::TRACEFS_MAGIC,
        statfs::CGROUP_SUPER_MAGIC,
        statfs::CGROUP2_SUPER_MAGIC,
    ];
    let on = fstatfs(&file).map_err(io::Error::from)?.filesystem_type();
    if kernel.contains(&on) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file on disk (one of the kernel's, under /proc or /sys)",
        ));
    }
    Ok(file)
}

/// Open a file ops wrote (in the store, the unit directory, a release
/// repository) for reading, following no symlink anywhere on its path.
///
/// Those trees sit under roots resolved once ([`resolve`]) and hold no
/// symlink ops did not make, so a link met on the way was planted by
/// someone who can write there: following it would read another file as
/// ops's own (a record pointing at `/etc/shadow`, shown in a message or
/// trusted as a record). The kernel refuses every link during the open
/// itself (`openat2` with `RESOLVE_NO_SYMLINKS`), so nothing can be swapped
/// between a check and the open; the refusal names the link. Otherwise as
/// [`open_regular`]: a FIFO or device is refused without blocking.
pub fn open_own(path: &Path) -> io::Result<File> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
    // Looked at first, not followed: a device planted here is refused
    // before it is opened (opening one can act).
    let before = fs::symlink_metadata(path)?;
    if before.file_type().is_symlink() {
        return Err(planted_link(path, path));
    }
    not_regular(before.file_type())?;
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let file = match openat2(CWD, path, flags, Mode::empty(), resolve) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::LOOP) => return Err(planted_link(path, &first_link(path))),
        // A kernel older than 5.6 has no openat2: the last component is
        // not followed, the ones before it were looked at just above.
        Err(rustix::io::Errno::NOSYS) => {
            if first_link(path) != path {
                return Err(planted_link(path, &first_link(path)));
            }
            OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY | nix::libc::O_NOFOLLOW)
                .open(path)?
        }
        Err(e) => return Err(e.into()),
    };
    not_regular(file.metadata()?.file_type())?;
    Ok(file)
}

/// [`open_own`], then read at most `limit` bytes.
pub fn read_own(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    read_bounded(open_own(path)?, limit)
}

/// The first symlink on the way to `path` (or `path` itself), without
/// following any: what a refusal names.
fn first_link(path: &Path) -> PathBuf {
    let mut lexical = PathBuf::new();
    for component in path.components() {
        lexical.push(component);
        if fs::symlink_metadata(&lexical).is_ok_and(|m| m.file_type().is_symlink()) {
            return lexical;
        }
    }
    path.to_owned()
}

/// The error for a read that met a planted symlink at `link`.
fn planted_link(path: &Path, link: &Path) -> io::Error {
    let what = if link == path {
        "it is a symlink that ops did not make".to_owned()
    } else {
        format!("{} is a symlink that ops did not make", link.display())
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        PlantedLink {
            link: link.to_owned(),
            text: format!("{what}; refusing to follow it"),
        },
    )
}

/// The cause of an [`open_own`] refused for a symlink on the way.
#[derive(Debug, thiserror::Error)]
#[error("{text}")]
struct PlantedLink {
    link: PathBuf,
    text: String,
}

/// The symlink for which [`open_own`] (or [`read_own`]) refused, if it
/// refused for one.
pub fn planted_link_of(error: &io::Error) -> Option<&Path> {
    let planted = error.get_ref()?.downcast_ref::<PlantedLink>()?;
    Some(&planted.link)
}

/// Refuse anything but a regular file, saying what it is.
fn not_regular(kind: fs::FileType) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file ({what})"),
    ))
}

/// Read a small file a user named, by [`open_regular`], refusing one
/// larger than `limit` bytes instead of reading without bound.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    read_bounded(open_regular(path)?, limit)
}

/// Read `file` whole, refusing one larger than `limit` bytes.
fn read_bounded(file: File, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// A name for a temporary sibling of `path`: hidden, and unique within
/// this process so that two writes never share one.
fn temp_sibling(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = temp_prefix(path);
    name.push(format!("{}.{n}", std::process::id()));
    path.with_file_name(name)
}

/// `.<file>.ops-tmp.`, the start of every temporary sibling's name of
/// `path`, with `<file>` cut short enough that a pid and a counter (u32
/// and u64 in digits) still fit in a file name's 255 bytes: whole, a unit
/// file of 220 to 253 characters could not be written at all ("File name
/// too long", the run rolled back). Cut at a character, so the sweeps
/// (which read the name as UTF-8) still know it.
fn temp_prefix(path: &Path) -> OsString {
    const ROOM: usize = 255 - 1 - ".ops-tmp.".len() - 10 - 1 - 20;
    let file = path.file_name().unwrap_or_default();
    let mut cut = file.as_encoded_bytes();
    if cut.len() > ROOM {
        cut = &cut[..ROOM];
        while std::str::from_utf8(cut).is_err_and(|e| e.error_len().is_none()) {
            cut = &cut[..cut.len() - 1];
        }
    }
    let mut name = OsString::from(".");
    // Bytes of a file name, cut short: a file name still.
    name.push(std::os::unix::ffi::OsStrExt::from_bytes(cut) as &OsStr);
    name.push(".ops-tmp.");
    name
}

/// Remove the temporary siblings of `path` (see `temp_sibling`) that a
/// run killed half-way left: only under a lock that proves no other run
/// is writing them. Returns how many were removed.
pub(crate) fn remove_temp_siblings(path: &Path) -> FsResult<usize> {
    let prefix = temp_prefix(path).as_encoded_bytes().to_vec();
    remove_entries_where(parent(path), |name| {
        name.as_encoded_bytes().starts_with(&prefix)
    })
}

/// Remove the entries of `dir` (trees, files, symlinks) whose name `pick`
/// chooses; none when `dir` is not there. Returns how many were removed.
fn remove_entries_where(dir: &Path, pick: impl Fn(&OsStr) -> bool) -> FsResult<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(0)
        }
        Err(source) => {
            return Err(FsError {
                action: "read directory",
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if pick(&entry.file_name()) {
            remove_any(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The process that made `name`, when it is a temporary sibling's name
/// (see `temp_sibling`: `.<file>.ops-tmp.<pid>.<n>`).
fn temp_owner(name: &OsStr) -> Option<i32> {
    let name = name.to_str()?.strip_prefix('.')?;
    let (_, tail) = name.rsplit_once(".ops-tmp.")?;
    let (pid, n) = tail.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse::<i32>().ok().filter(|pid| *pid > 0)
}

/// Whether `name` is a temporary sibling's (see `temp_sibling`): no path
/// a plan writes, whoever made it.
pub(crate) fn is_temp_name(name: &std::ffi::OsStr) -> bool {
    temp_owner(name).is_some()
}

/// Whether process `pid` is gone: then nothing is writing what it named.
/// A live process of another user answers EPERM, and counts as alive.
pub(crate) fn is_gone(pid: i32) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    pid != std::process::id() as i32
        && kill(nix::unistd::Pid::from_raw(pid), None) == Err(Errno::ESRCH)
}

/// Remove the temporary files, symlinks and directories in `dir` (see
/// `temp_sibling`) whose process is gone: what a run killed half-way left
/// (its write not yet renamed into place). A live run's own temporaries
/// name a live process and stay, so this is safe without a lock, in a
/// directory several stores share (the unit directory). Returns how many
/// were removed.
pub(crate) fn remove_stale_temps(dir: &Path) -> FsResult<usize> {
    remove_entries_where(dir, |name| temp_owner(name).is_some_and(is_gone))
}

/// Whether `dir` holds a temporary of a process that is gone (see
/// [`remove_stale_temps`]).
pub(crate) fn has_stale_temps(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| temp_owner(&e.file_name()).is_some_and(is_gone))
    })
}

/// Remove a tree, a file or a symlink (not followed).
fn remove_any(path: &Path) -> FsResult<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => remove_tree(path),
        Ok(_) => remove_file(path).map(drop),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FsError {
            action: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Refuse to write at `path` through a symlink that ops did not make.
///
/// The roots ops writes under (the store root, the unit directory) are
/// resolved once when a module reads its options ([`resolve`]), so any
/// symlink met on the way to `path` was planted there, and following it
/// would write elsewhere on the host (`pods/<name>` pointing at `/etc`).
/// `path` itself may be a symlink only where ops writes one
/// (`link_ok`): replacing it then replaces the link, not its target.
fn refuse_symlinks(path: &Path, link_ok: bool) -> FsResult<()> {
    let refused = |at: &Path| FsError {
        action: "write through",
        path: at.to_owned(),
        source: io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a symlink that ops did not make; refusing to follow it (nothing was changed)",
        ),
    };
    if !link_ok && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(refused(path));
    }
    if !path.is_absolute() {
        return Ok(());
    }
    let mut lexical = PathBuf::new();
    for component in parent(path).components() {
        lexical.push(component);
        match fs::symlink_metadata(&lexical) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(refused(&lexical)),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// The check each write makes ([`refuse_symlinks`]), for a caller that
/// checks every path of a plan before its first write.
pub fn refuse_planted(path: &Path, link_ok: bool) -> FsResult<()> {
    refuse_symlinks(path, link_ok)
}

/// `path` with the symlinks of its existing part resolved and no `.` or
/// `..` left: a root given by the user may lead anywhere, once, before ops
/// writes below it. Resolved one component at a time, so that a `..` after
/// a directory that is not there yet goes up from it as the kernel would
/// once it is made: kept whole (`/var/lib/new/../ops`), it made ops create
/// `new` beside the store, and systemd ignores a `ConditionPathExists=`
/// holding `..` (not normalized), so the version's units started whatever
/// `current` named (see units::condition_path).
pub fn resolve(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut resolved = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => continue,
            // The part already resolved holds no symlink: going up is lexical.
            Component::ParentDir if resolved.file_name().is_some() => {
                resolved.pop();
            }
            Component::ParentDir if resolved.has_root() => {} // `/..` is `/`
            other => resolved.push(other),
        }
        if let Ok(real) = fs::canonicalize(&resolved) {
            resolved = real;
        }
    }
    if resolved.as_os_str().is_empty() {
        return path.to_owned();
    }
    resolved
}

/// Make the entries of `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> FsResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("sync directory", dir)
}

/// Replace `path` with `contents`, readable per `mode`.
pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> FsResult<()> {
    refuse_symlinks(path, false)?;
    let temp = temp_sibling(path);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        // The umask may have narrowed the mode given to open.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&temp);
        return Err(FsError {
            action: "write",
            path: path.to_owned(),
            source,
        });
    }
    crash::point("write", path);
    if let Err(source) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(FsError {
            action: "replace",
            path: path.to_owned(),
            source,
        });
    }
    sync_dir(parent(path))
}

/// Point the symlink `path` at `target`, replacing whatever is there.
pub(crate) fn write_symlink(path: &Path, target: &Path) -> FsResult<()> {
    refuse_symlinks(path, true)?;
    let temp = temp_sibling(path);
    symlink(target, &temp).at("create symlink", &temp)?;
    crash::point("symlink", path);
    if let Err(source) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(FsError {
            action: "replace",
            path: path.to_owned(),
            source,
        });
    }
    sync_dir(parent(path))
}

/// Copy the regular file `from` to `path` (which must not be there yet, or
/// is replaced), readable per `mode`: into a temporary sibling, synced,
/// renamed into place, the directory synced. Returns the bytes copied.
pub(crate) fn copy_file(from: &Path, path: &Path, mode: u32) -> FsResult<u64> {
    refuse_symlinks(path, false)?;
    let temp = temp_sibling(path);
    let copied = (|| {
        let mut source = open_regular(from)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        let n = io::copy(&mut source, &mut file)?;
        file.sync_all()?;
        Ok(n)
    })();
    let n = match copied {
        Ok(n) => n,
        Err(source) => {
            let _ = fs::remove_file(&temp);
            return Err(FsError {
                action: "copy to",
                path: path.to_owned(),
                source,
            });
        }
    };
    crash::point("copy", path);
    if let Err(source) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(FsError {
            action: "replace",
            path: path.to_owned(),
            source,
        });
    }
    sync_dir(parent(path)).map(|()| n)
}

/// Make a new empty directory beside `path` (hidden, unique), to stage
/// what is then renamed to `path` whole.
pub(crate) fn temp_dir_beside(path: &Path, mode: u32) -> FsResult<PathBuf> {
    refuse_symlinks(path, false)?;
    let temp = temp_sibling(path);
    crash::point("stage", path);
    fs::DirBuilder::new()
        .mode(mode)
        .create(&temp)
        .at("create directory", &temp)?;
    Ok(temp)
}

/// Create `path` and its missing parents with `mode`; syncs each parent
/// that gained an entry.
pub(crate) fn create_dir_all(path: &Path, mode: u32) -> FsResult<()> {
    refuse_symlinks(path, false)?;
    if path.is_dir() {
        return Ok(());
    }
    create_dir_all(parent(path), mode)?;
    crash::point("mkdir", path);
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(source) => Err(FsError {
            action: "create directory",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Remove a file or symlink; `false` when it was not there.
pub(crate) fn remove_file(path: &Path) -> FsResult<bool> {
    refuse_symlinks(path, true)?;
    crash::point("remove", path);
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(FsError {
            action: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Remove `dir` if it is empty; `true` when it was removed.
pub(crate) fn remove_dir_if_empty(dir: &Path) -> FsResult<bool> {
    refuse_symlinks(dir, true)?;
    crash::point("rmdir", dir);
    match fs::remove_dir(dir) {
        Ok(()) => sync_dir(parent(dir)).map(|()| true),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
            ) =>
        {
            Ok(false)
        }
        Err(source) => Err(FsError {
            action: "remove directory",
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Rename `from` to `to` (same file system) and sync both directories.
pub(crate) fn rename(from: &Path, to: &Path) -> FsResult<()> {
    refuse_symlinks(to, false)?;
    crash::point("rename", to);
    fs::rename(from, to).map_err(|source| FsError {
        action: "move into place",
        path: to.to_owned(),
        source,
    })?;
    sync_dir(parent(to))?;
    if parent(from) != parent(to) {
        sync_dir(parent(from))?;
    }
    Ok(())
}

/// Swap two paths (same file system) in one step, so each name always
/// holds a whole thing, and sync their directories.
pub(crate) fn exchange(a: &Path, b: &Path) -> FsResult<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    crash::point("exchange", b);
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(|e| FsError {
        action: "swap into place",
        path: b.to_owned(),
        source: e.into(),
    })?;
    sync_dir(parent(b))?;
    if parent(a) != parent(b) {
        sync_dir(parent(a))?;
    }
    Ok(())
}

/// Flush everything written to the file system holding `dir`: one sync for
/// a whole unpacked tree instead of one per file, before the rename that
/// makes the tree visible.
pub(crate) fn sync_filesystem(dir: &Path) -> FsResult<()> {
    crash::point("syncfs", dir);
    let file = fs::File::open(dir).map_err(|source| FsError {
        action: "open",
        path: dir.to_owned(),
        source,
    })?;
    nix::unistd::syncfs(&file).map_err(|e| FsError {
        action: "sync",
        path: dir.to_owned(),
        source: e.into(),
    })
}

/// Delete a tree that is no longer reachable by name (it was first renamed
/// out of the way), so a crash half-way leaves nothing that matters.
pub(crate) fn remove_tree(path: &Path) -> FsResult<()> {
    refuse_symlinks(path, true)?;
    crash::point("remove-tree", path);
    match fs::remove_dir_all(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FsError {
            action: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_write_replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_file(&path, b"one", 0o644).unwrap();
        write_file(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_failed_write_names_the_path_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("f");
        let err = write_file(&path, b"x", 0o644).unwrap_err();
        assert!(err.to_string().starts_with("cannot write "), "{err}");
        assert!(err.to_string().ends_with("missing-dir/f"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_temporaries_a_cut_short_run_left_are_swept_files_links_and_directories() {
        // A file's temporary used to stop the sweep with "Not a
        // directory", and every later run with it (found by the power-loss
        // test, tests/reliability/power).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(dir.path().join(".f.ops-tmp.1.0"), b"half").unwrap();
        symlink("1", dir.path().join(".f.ops-tmp.1.1")).unwrap();
        fs::create_dir_all(dir.path().join(".f.ops-tmp.1.2/sub")).unwrap();
        fs::write(dir.path().join(".g.ops-tmp.1.0"), b"another file's").unwrap();
        assert_eq!(remove_temp_siblings(&path).unwrap(), 3);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [".g.ops-tmp.1.0"]);
    }

    #[test]
    fn a_symlink_is_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("current");
        write_symlink(&link, Path::new("1")).unwrap();
        write_symlink(&link, Path::new("2")).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("2"));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn removals_report_whether_something_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_file(&path, b"x", 0o644).unwrap();
        assert!(remove_file(&path).unwrap());
        assert!(!remove_file(&path).unwrap());
        let sub = dir.path().join("a/b");
        create_dir_all(&sub, 0o755).unwrap();
        write_file(&sub.join("f"), b"x", 0o644).unwrap();
        assert!(!remove_dir_if_empty(&sub).unwrap());
        remove_file(&sub.join("f")).unwrap();
        assert!(remove_dir_if_empty(&sub).unwrap());
    }

    #[test]
    fn a_planted_symlink_on_the_way_is_refused_by_name_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir_all(root.join("pods")).unwrap();
        fs::create_dir(&elsewhere).unwrap();
        symlink(&elsewhere, root.join("pods/web")).unwrap();
        let planted = root.join("pods/web");
        let attempts: Vec<FsError> = vec![
            write_file(&planted.join("1/environment"), b"S=1", 0o600).unwrap_err(),
            create_dir_all(&planted.join("1/units"), 0o755).unwrap_err(),
            write_symlink(&planted.join("current"), Path::new("1")).unwrap_err(),
            remove_file(&planted.join("current")).unwrap_err(),
            remove_tree(&planted.join("1")).unwrap_err(),
            rename(&root.join("pods"), &planted.join("2")).unwrap_err(),
        ];
        for err in attempts {
            assert_eq!(
                err.to_string(),
                format!("cannot write through {}", planted.display())
            );
            let chain = crate::ansible::error_chain(&err);
            assert!(
                chain.contains("is a symlink that ops did not make"),
                "{chain}"
            );
        }
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);

        // A file ops writes that is a symlink (a unit masked to /dev/null)
        // is not replaced either.
        let unit = root.join("web.service");
        symlink("/dev/null", &unit).unwrap();
        let err = write_file(&unit, b"[Unit]\n", 0o644).unwrap_err();
        assert_eq!(err.path, unit);
        assert_eq!(fs::read_link(&unit).unwrap(), Path::new("/dev/null"));

        // The symlinks ops makes are replaced and removed as before.
        write_symlink(&root.join("current"), Path::new("1")).unwrap();
        write_symlink(&root.join("current"), Path::new("2")).unwrap();
        assert!(remove_file(&root.join("current")).unwrap());
    }

    /// A record of the store replaced by a link (to a file only root may
    /// read, to a FIFO, to nothing), or reached through a directory
    /// replaced by one, is refused by name, without reading where it leads
    /// and without blocking.
    #[test]
    fn a_planted_link_is_not_followed_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = resolve(dir.path());
        let secret = root.join("shadow");
        fs::write(&secret, b"root:$6$secret").unwrap();
        let fifo = root.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        fs::create_dir_all(root.join("pods/shop/1")).unwrap();
        fs::write(root.join("pods/shop/1/meta.json"), b"{}").unwrap();
        assert_eq!(
            read_own(&root.join("pods/shop/1/meta.json"), 10).unwrap(),
            b"{}"
        );
        let mut messages = Vec::new();
        for (name, target) in [
            ("secret", &secret),
            ("fifo", &fifo),
            ("dangling", &root.join("none")),
        ] {
            let at = root.join(format!("pods/shop/1/{name}.json"));
            symlink(target, &at).unwrap();
            let err = read_own(&at, 1 << 20).unwrap_err();
            assert_eq!(planted_link_of(&err), Some(at.as_path()), "{name}: {err}");
            messages.push(format!("{name}: {err}"));
        }
        fs::rename(root.join("pods/shop"), root.join("moved")).unwrap();
        symlink(root.join("moved"), root.join("pods/shop")).unwrap();
        let err = read_own(&root.join("pods/shop/1/meta.json"), 1 << 20).unwrap_err();
        assert_eq!(
            planted_link_of(&err),
            Some(root.join("pods/shop").as_path())
        );
        messages.push(format!("through a directory: {err}"));
        let shown = messages
            .join("\n")
            .replace(&root.display().to_string(), "<root>");
        insta::assert_snapshot!(shown);
    }

    #[test]
    fn stale_temporaries_are_swept_and_live_ones_and_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        // 99999999 is above any pid_max: no process has it.
        let file = dir.path().join(".f.ops-tmp.99999999.0");
        let link = dir.path().join(".current.ops-tmp.99999999.1");
        let staged = dir.path().join(".data.ops-tmp.99999999.2");
        fs::write(&file, b"half").unwrap();
        symlink("2", &link).unwrap();
        fs::create_dir_all(staged.join("sub")).unwrap();
        let live = temp_sibling(&dir.path().join("g"));
        fs::write(&live, b"being written").unwrap();
        let others = [
            "f",
            ".f.ops-tmp.x.0",
            "f.ops-tmp.99999999.0",
            ".f.ops-tmp.99999999",
        ];
        for name in others {
            fs::write(dir.path().join(name), b"not a temporary").unwrap();
        }
        assert_eq!(remove_stale_temps(dir.path()).unwrap(), 3);
        for gone in [&file, &link, &staged] {
            assert!(fs::symlink_metadata(gone).is_err(), "{}", gone.display());
        }
        assert!(live.exists());
        for name in others {
            assert!(dir.path().join(name).exists(), "{name}");
        }
        assert_eq!(remove_stale_temps(&dir.path().join("missing")).unwrap(), 0);
    }

    #[test]
    fn a_root_given_through_a_symlink_is_resolved_once() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        symlink(&real, dir.path().join("link")).unwrap();
        let resolved = resolve(&dir.path().join("link/store/x"));
        assert_eq!(resolved, fs::canonicalize(&real).unwrap().join("store/x"));
        create_dir_all(&resolved, 0o755).unwrap();
        write_file(&resolved.join("f"), b"x", 0o644).unwrap();
        assert!(real.join("store/x/f").is_file());
    }

    #[test]
    fn a_file_whose_name_is_near_the_limit_is_written_and_its_temporaries_swept() {
        let dir = tempfile::tempdir().unwrap();
        // 255 bytes is the most a name may have; its temporary was longer
        // ("File name too long") before the name in it was cut.
        // The second cut inside its `é`, at the 214th byte.
        for name in [
            "a".repeat(255),
            format!("{}é{}", "a".repeat(213), "a".repeat(40)),
        ] {
            let path = dir.path().join(&name);
            write_file(&path, b"x", 0o644).unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"x");
            let temp = temp_sibling(&path);
            assert!(temp.file_name().unwrap().len() <= 255, "{temp:?}");
            assert!(is_temp_name(temp.file_name().unwrap()));
            fs::write(&temp, b"left by a killed run").unwrap();
            assert_eq!(remove_temp_siblings(&path).unwrap(), 1);
            assert!(!temp.exists() && path.exists());
        }
    }

    #[test]
    fn a_root_going_up_from_a_directory_not_yet_there_is_resolved_without_making_it() {
        let dir = tempfile::tempdir().unwrap();
        let top = fs::canonicalize(dir.path()).unwrap();
        // Kept whole before, `..` reached the unit files' ConditionPathExists=,
        // which systemd ignores when not normalized, and `new` was made.
        assert_eq!(resolve(&top.join("new/../store")), top.join("store"));
        assert_eq!(
            resolve(&top.join("new/./a/../../store/x")),
            top.join("store/x")
        );
        assert_eq!(resolve(Path::new("/../..")), Path::new("/"));
        assert!(!top.join("new").exists());
        // Up from a symlink is up from where it leads, as the kernel goes.
        fs::create_dir_all(top.join("real/inner")).unwrap();
        symlink(top.join("real/inner"), top.join("link")).unwrap();
        assert_eq!(resolve(&top.join("link/../store")), top.join("real/store"));
    }
}
