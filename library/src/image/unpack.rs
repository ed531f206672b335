//! Unpacking tar streams into a directory tree, safely and fast, and laying
//! image layers over one another.
//!
//! The tar crate writes each entry (data, mode, owner, mtime); this module
//! decides where. Every path is resolved inside the destination without
//! following anything the archive itself created: a parent that is a
//! symlink, a `..` component or a hard link out of the tree is refused
//! with the entry's name. Tracking the tree's own directories and symlinks
//! in memory keeps that check to a set lookup per entry, where
//! canonicalising every parent would cost dozens of system calls for each
//! of an image's tens of thousands of files.
//!
//! Layers (OCI, Docker) are unpacked each into its own directory, their
//! whiteouts recorded rather than written, and then merged in order by
//! renames ([`overlay`]): no file's bytes are copied twice.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use tar::{Archive, Entry, EntryType};

/// Name prefix of an OCI/Docker whiteout file.
const WHITEOUT: &str = ".wh.";
/// Name of the marker that makes a directory opaque.
const OPAQUE: &str = ".wh..wh..opq";

/// A deletion a layer makes in the layers below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whiteout {
    /// Remove this path (relative to the image root).
    Remove(PathBuf),
    /// Hide everything the lower layers have in this directory.
    Opaque(PathBuf),
}

/// What unpacking one archive produced.
#[derive(Debug, Default)]
pub struct Unpacked {
    /// Bytes of file contents written.
    pub bytes: u64,
    /// Entries written.
    pub entries: u64,
    /// Whiteouts seen (only when asked to record them).
    pub whiteouts: Vec<Whiteout>,
}

/// What to do with an archive entry, by its path.
#[derive(Debug)]
pub enum Route {
    /// Unpack it at this path inside the destination.
    Into(PathBuf),
    /// Hand it to the caller's handler.
    Other,
}

/// An entry the archive should not have; says which.
fn refuse(entry: &str, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("entry {entry:?}: {why}"),
    )
}

/// The path of an entry relative to the archive root: leading `/` and `.`
/// dropped, `..` refused.
pub fn relative(path: &Path, entry: &str) -> io::Result<PathBuf> {
    let mut rel = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => rel.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return Err(refuse(entry, "its path goes up with '..'")),
        }
    }
    Ok(rel)
}

/// Unpacks into one destination directory, which must exist and be empty.
#[derive(Debug)]
pub struct Unpacker {
    dest: PathBuf,
    /// Directories known to be real directories, relative to `dest`.
    dirs: HashSet<PathBuf>,
    /// Symlinks the archive created, relative to `dest`.
    symlinks: HashSet<PathBuf>,
    /// Other files the archive created: with `dirs` and `symlinks`,
    /// everything in `dest`, so a new path needs no look on disk.
    files: HashSet<PathBuf>,
    record_whiteouts: bool,
    pub result: Unpacked,
}

impl Unpacker {
    pub fn new(dest: &Path, record_whiteouts: bool) -> Unpacker {
        Unpacker {
            dest: dest.to_owned(),
            dirs: HashSet::from([PathBuf::new()]),
            symlinks: HashSet::new(),
            files: HashSet::new(),
            record_whiteouts,
            result: Unpacked::default(),
        }
    }

    /// Unpack every entry of `archive` that `route` sends into the tree;
    /// entries routed `Other` go to `other`.
    pub fn unpack<R: Read>(
        &mut self,
        archive: &mut Archive<R>,
        mut route: impl FnMut(&Path) -> io::Result<Route>,
        mut other: impl FnMut(&Path, &mut Entry<'_, R>) -> io::Result<()>,
    ) -> io::Result<()> {
        let as_root = nix::unistd::geteuid().is_root();
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_preserve_ownerships(as_root);
        archive.set_overwrite(true);
        archive.set_unpack_xattrs(false);
        // Directories get their mode and owner last: a read-only directory
        // must not stop its own contents from being written.
        let mut directories = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            match route(&path)? {
                Route::Other => other(&path, &mut entry)?,
                Route::Into(rel) => {
                    if let Some(dir) = self.place(&mut entry, &rel)? {
                        directories.push((dir, entry));
                    }
                }
            }
        }
        directories.sort_by(|a, b| b.0.cmp(&a.0));
        for (dir, mut entry) in directories {
            entry.unpack(self.dest.join(&dir))?;
        }
        Ok(())
    }

    /// Unpack one entry at `rel`; a directory is created now and returned
    /// for its metadata to be applied at the end.
    fn place<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        rel: &Path,
    ) -> io::Result<Option<PathBuf>> {
        let name = rel.display().to_string();
        let Some(file_name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return Ok(None); // the root itself
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        if self.record_whiteouts && file_name.starts_with(WHITEOUT) {
            self.make_dirs(parent, &name)?;
            self.result.whiteouts.push(if file_name == OPAQUE {
                Whiteout::Opaque(parent.to_owned())
            } else {
                Whiteout::Remove(parent.join(&file_name[WHITEOUT.len()..]))
            });
            return Ok(None);
        }
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link => {}
            // Device nodes and fifos: a runtime provides /dev; a file in
            // their place would be a lie.
            _ => return Ok(None),
        }
        self.make_dirs(parent, &name)?;
        let abs = self.dest.join(rel);
        self.clear(rel, &abs, kind == EntryType::Directory)?;
        self.result.entries += 1;
        match kind {
            EntryType::Directory => {
                if fs::symlink_metadata(&abs).is_err() {
                    fs::create_dir(&abs)?;
                }
                self.dirs.insert(rel.to_owned());
                return Ok(Some(rel.to_owned()));
            }
            EntryType::Link => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| refuse(&name, "a hard link without a target"))?;
                let target = relative(&target, &name)?;
                self.check_under_no_symlink(&target, &name)?;
                if !self.symlinks.contains(&target) && self.dirs.contains(&target) {
                    return Err(refuse(&name, "a hard link to a directory"));
                }
                fs::hard_link(self.dest.join(&target), &abs).map_err(|e| {
                    refuse(&name, format!("cannot link to {}: {e}", target.display()))
                })?;
                self.files.insert(rel.to_owned());
            }
            EntryType::Symlink => {
                entry.unpack(&abs)?;
                self.symlinks.insert(rel.to_owned());
            }
            _ => {
                self.result.bytes += entry.header().size()?;
                entry.unpack(&abs)?;
                self.files.insert(rel.to_owned());
            }
        }
        Ok(None)
    }

    /// Make sure `dir` (relative) exists as a real directory, creating what
    /// is missing, and that no part of it is a symlink.
    fn make_dirs(&mut self, dir: &Path, entry: &str) -> io::Result<()> {
        if self.dirs.contains(dir) {
            return Ok(());
        }
        let mut so_far = PathBuf::new();
        for part in dir.components() {
            so_far.push(part);
            if self.dirs.contains(&so_far) {
                continue;
            }
            if self.symlinks.contains(&so_far) {
                return Err(refuse(
                    entry,
                    format!("it lies under the symlink {}", so_far.display()),
                ));
            }
            let abs = self.dest.join(&so_far);
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(refuse(
                        entry,
                        format!(
                            "it lies under {}, which is not a directory",
                            so_far.display()
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&abs)?,
                Err(e) => return Err(e),
            }
            self.dirs.insert(so_far.clone());
        }
        Ok(())
    }

    fn check_under_no_symlink(&self, rel: &Path, entry: &str) -> io::Result<()> {
        let mut so_far = PathBuf::new();
        let mut parts = rel.components().peekable();
        while let Some(part) = parts.next() {
            so_far.push(part);
            if parts.peek().is_some() && self.symlinks.contains(&so_far) {
                return Err(refuse(
                    entry,
                    format!(
                        "its link target lies under the symlink {}",
                        so_far.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Remove what is at `rel` unless it is a directory that stays one: a
    /// later entry replaces an earlier one, as tar does.
    fn clear(&mut self, rel: &Path, abs: &Path, keep_dir: bool) -> io::Result<()> {
        if !self.files.contains(rel) && !self.symlinks.contains(rel) && !self.dirs.contains(rel) {
            return Ok(()); // nothing there: everything in dest is ours
        }
        let Ok(meta) = fs::symlink_metadata(abs) else {
            return Ok(());
        };
        if meta.is_dir() {
            if keep_dir {
                return Ok(());
            }
            fs::remove_dir_all(abs)?;
            self.dirs.retain(|d| !d.starts_with(rel));
            self.symlinks.retain(|s| !s.starts_with(rel));
            self.files.retain(|f| !f.starts_with(rel));
        } else {
            fs::remove_file(abs)?;
            self.symlinks.remove(rel);
            self.files.remove(rel);
        }
        Ok(())
    }
}

/// Walk `rel` inside `root` without following symlinks; `None` if some
/// parent is missing or not a real directory.
fn resolve_in(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut path = root.to_owned();
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        path.push(part);
        if parts.peek().is_some() && !fs::symlink_metadata(&path).ok()?.is_dir() {
            return None;
        }
    }
    Some(path)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Lay `layer` (a directory unpacked from a layer, whose whiteouts are
/// given) over `root`, the layers below it merged. The layer's directory
/// is consumed.
pub fn overlay(root: &Path, layer: &Path, whiteouts: &[Whiteout]) -> io::Result<()> {
    for whiteout in whiteouts {
        match whiteout {
            Whiteout::Remove(rel) => {
                if let Some(path) = resolve_in(root, rel) {
                    remove_any(&path)?;
                }
            }
            Whiteout::Opaque(rel) => {
                let Some(dir) = resolve_in(root, rel) else {
                    continue;
                };
                if fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                    for child in fs::read_dir(&dir)? {
                        remove_any(&child?.path())?;
                    }
                }
            }
        }
    }
    merge(layer, root)?;
    fs::remove_dir(layer).or_else(|e| match e.kind() {
        io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    })
}

/// Move everything in `from` into `to` (a real directory): directories on
/// both sides are merged, anything else replaces what was there.
fn merge(from: &Path, to: &Path) -> io::Result<()> {
    for child in fs::read_dir(from)? {
        let child = child?;
        let source = child.path();
        let target = to.join(child.file_name());
        let source_is_dir = child.file_type()?.is_dir();
        let target_meta = fs::symlink_metadata(&target).ok();
        match target_meta {
            Some(m) if m.is_dir() && source_is_dir => {
                merge(&source, &target)?;
                // The upper layer's directory decides mode, owner and times.
                let meta = fs::symlink_metadata(&source)?;
                copy_dir_metadata(&meta, &target)?;
                fs::remove_dir(&source)?;
            }
            Some(_) => {
                remove_any(&target)?;
                fs::rename(&source, &target)?;
            }
            None => fs::rename(&source, &target)?,
        }
    }
    Ok(())
}

fn copy_dir_metadata(meta: &fs::Metadata, target: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(target, Some(meta.uid()), Some(meta.gid()))?;
    }
    fs::set_permissions(target, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    let times = fs::FileTimes::new()
        .set_accessed(meta.accessed()?)
        .set_modified(meta.modified()?);
    fs::File::open(target)?.set_times(times)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A tar of (path, kind) entries: `f:text`, `d`, `l:target` (symlink),
    /// `h:target` (hard link).
    fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, what) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            if let Some(text) = what.strip_prefix("f:") {
                h.set_entry_type(EntryType::Regular);
                h.set_size(text.len() as u64);
                b.append_data(&mut h, path, text.as_bytes()).unwrap();
            } else if *what == "d" {
                h.set_entry_type(EntryType::Directory);
                h.set_mode(0o555);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).unwrap();
            } else {
                let (kind, target) = what.split_at(2);
                h.set_entry_type(if kind == "l:" {
                    EntryType::Symlink
                } else {
                    EntryType::Link
                });
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn unpack_layer(dest: &Path, entries: &[(&str, &str)]) -> io::Result<Unpacked> {
        fs::create_dir_all(dest)?;
        let bytes = tar_of(entries);
        let mut u = Unpacker::new(dest, true);
        u.unpack(
            &mut Archive::new(&bytes[..]),
            |p| relative(p, "t").map(Route::Into),
            |_, _| Ok(()),
        )?;
        Ok(u.result)
    }

    #[test]
    fn files_links_and_read_only_directories_are_unpacked() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("r");
        let got = unpack_layer(
            &root,
            &[
                ("etc", "d"),
                ("etc/a", "f:A"),
                ("bin/sh", "f:#!"),
                ("bin/ln", "l:sh"),
                ("etc/b", "h:etc/a"),
            ],
        )
        .unwrap();
        assert_eq!(fs::read_to_string(root.join("etc/b")).unwrap(), "A");
        assert_eq!(fs::read_link(root.join("bin/ln")).unwrap(), Path::new("sh"));
        assert_eq!(
            fs::metadata(root.join("etc")).unwrap().permissions().mode() & 0o777,
            0o555
        );
        assert_eq!(got.bytes, 3);
    }

    #[test]
    fn nothing_is_written_through_a_symlink_or_above_the_root() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let link = outside.display().to_string();
        let err = unpack_layer(
            &t.path().join("r"),
            &[("evil", &format!("l:{link}")), ("evil/x", "f:pwned")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("under the symlink evil"), "{err}");
        assert!(!outside.join("x").exists());
        let err = unpack_layer(
            &t.path().join("r2"),
            &[("evil", &format!("l:{link}")), ("h", "h:evil/x")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("symlink evil"), "{err}");
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_lower_layers() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let lower = unpack_layer(
            &root,
            &[
                ("www/old", "f:old"),
                ("www/keep", "f:k"),
                ("data/x", "f:x"),
                ("data/y", "f:y"),
                ("etc", "l:/etc"),
            ],
        )
        .unwrap();
        assert!(lower.whiteouts.is_empty());
        let layer = t.path().join("layer");
        let upper = unpack_layer(
            &layer,
            &[
                ("www/.wh.old", "f:"),
                ("data/.wh..wh..opq", "f:"),
                ("data/z", "f:z"),
                ("etc/.wh.passwd", "f:"),
            ],
        )
        .unwrap();
        assert_eq!(upper.whiteouts.len(), 3);
        overlay(&root, &layer, &upper.whiteouts).unwrap();
        assert!(!root.join("www/old").exists());
        assert!(root.join("www/keep").exists());
        let data: Vec<_> = fs::read_dir(root.join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(data, vec![std::ffi::OsString::from("z")]);
        // The whiteout under a symlink was not followed out of the image,
        // and the upper layer's real directory replaced the symlink.
        assert!(Path::new("/etc/passwd").exists());
        assert!(fs::symlink_metadata(root.join("etc")).unwrap().is_dir());
        assert!(!layer.exists());
    }
}
