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
//! A hard link is judged by what it links to, looked at on disk: `link()`
//! on a symlink makes another symlink, which must then be as safe where it
//! lands as a symlink entry would be; a directory is refused, and so is a
//! special file or a setuid file the policy would not create.
//!
//! Layers (OCI, Docker) are unpacked each into its own directory, their
//! whiteouts recorded rather than written, and then merged in order by
//! renames ([`overlay`]): no file's bytes are copied twice. A layer's hard
//! link to a file it has not created is made when it is laid over the
//! layers below, as applying the layer onto them would. Whiteouts follow
//! the OCI layer format: an empty file named `.wh.` and the name of one
//! entry of its directory, or `.wh..wh..opq`; aufs's own `.wh..wh.*`
//! entries are skipped (as containerd and podman do); other `.wh.` names,
//! and whiteouts of `.`, `..` or nothing, are refused, so no whiteout can
//! reach the root or above it.
//!
//! The tar reader holds an entry's long names and PAX records in memory
//! whole; read through [`Guarded`], they are bounded by [`HEADER_LIMIT`].
//! What the entries write is bounded by the destination's free space: each
//! entry is charged to a [`Budget`] before it is written (see `space`), so
//! a bomb is refused by name instead of filling the filesystem.
//!
//! A [`Policy`] says how strict to be. An image is a whole root filesystem:
//! absolute paths and symlinks are read relative to its root, setuid bits
//! kept, device nodes skipped (a runtime provides `/dev`). A volume is a
//! directory mounted into someone else's tree: every path and every
//! symlink must stay inside it, special files and setuid bits need asking
//! for, and ownership can be imposed on every entry.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{lchown, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tar::{Archive, Entry, EntryType};

use crate::space::Budget;

/// Name prefix of an OCI/Docker whiteout file.
const WHITEOUT: &str = ".wh.";
/// Name of the marker that makes a directory opaque.
const OPAQUE: &str = ".wh..wh..opq";
/// Prefix of aufs's metadata entries, which layers may carry.
const AUFS_META: &str = ".wh..wh.";
/// The most bytes the tar reader may take in between two entries: GNU
/// long names, PAX records and sparse maps are held in memory whole, and
/// a compressed archive can make them as large as it likes for a few
/// bytes. Real ones are well under a KiB.
pub const HEADER_LIMIT: u64 = 1 << 20;
/// The longest link target a hard link may name (Linux's PATH_MAX).
const PATH_LIMIT: usize = 4096;

/// A deletion a layer makes in the layers below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whiteout {
    /// Remove this path (relative to the image root).
    Remove(PathBuf),
    /// Hide everything the lower layers have in this directory.
    Opaque(PathBuf),
}

/// A hard link of a layer to a file the layer has not created (before
/// it): made against the layers below when the layer is laid over them
/// ([`overlay`]), as applying the layer onto them would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerLink {
    pub path: PathBuf,
    pub target: PathBuf,
}

/// What unpacking one archive produced.
#[derive(Debug, Default)]
pub struct Unpacked {
    /// Bytes of file contents written.
    pub bytes: u64,
    /// Entries written.
    pub entries: u64,
    /// Whiteouts seen (layers only).
    pub whiteouts: Vec<Whiteout>,
    /// Hard links to files of lower layers (layers only).
    pub lower_links: Vec<LowerLink>,
    /// Directories made only because entries lie under them: the archive
    /// does not list them (layers only; see [`overlay`]).
    pub implied_dirs: HashSet<PathBuf>,
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

/// The tar reader's error for an entry whose data the archive does not
/// hold whole: it names the file it was writing (a staging path) and says
/// only that the write fell short. Said as what it is, an archive that
/// ends early; any other error is kept.
fn cut_short(entry: &str, error: io::Error) -> io::Error {
    if crate::ansible::error_chain(&error).ends_with("failed to write entire file") {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("entry {entry:?}: the archive ends inside its data"),
        )
    } else {
        error
    }
}

/// The path of an entry relative to the archive root: leading `/` and `.`
/// dropped, `..` refused.
pub fn relative(path: &Path, entry: &str) -> io::Result<PathBuf> {
    relative_as(path, entry, "its path")
}

fn relative_as(path: &Path, entry: &str, what: &str) -> io::Result<PathBuf> {
    let mut rel = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => rel.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return Err(refuse(entry, format!("{what} goes up with '..'"))),
        }
    }
    Ok(rel)
}

/// A reader for [`Archive`] that bounds what the tar reader buffers for
/// one entry's headers (see [`HEADER_LIMIT`]): an [`Unpacker`] given its
/// [`Gate`] counts only the bytes read while the tar reader looks for the
/// next entry, having itself read each entry's data to its end.
#[derive(Debug)]
pub struct Guarded<R> {
    inner: R,
    gate: Gate,
}

/// The count shared by a [`Guarded`] reader and its unpacker.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<AtomicU64>);

/// Not counting: an entry's own data is being read.
const OPEN: u64 = u64::MAX;

impl Gate {
    pub fn start(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    pub fn stop(&self) {
        self.0.store(OPEN, Ordering::Relaxed);
    }
}

impl<R: Read> Guarded<R> {
    pub fn new(inner: R) -> Guarded<R> {
        let gate = Gate::default();
        gate.stop();
        Guarded { inner, gate }
    }

    pub fn gate(&self) -> Gate {
        self.gate.clone()
    }
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let seen = self.gate.0.load(Ordering::Relaxed);
        if seen != OPEN {
            let seen = seen + n as u64;
            if seen > HEADER_LIMIT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "its headers (GNU long names, PAX records, sparse maps) take more than {} KiB",
                        HEADER_LIMIT >> 10
                    ),
                ));
            }
            self.gate.0.store(seen, Ordering::Relaxed);
        }
        Ok(n)
    }
}

impl<R: io::Seek> io::Seek for Guarded<R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// How strict an [`Unpacker`] is (see the module's documentation).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Every path, symlink and hard link must stay inside the tree.
    pub contained: bool,
    /// Create device nodes and fifos (contained trees refuse them
    /// otherwise; images skip them).
    pub special_files: bool,
    /// Keep setuid, setgid and sticky bits (always kept for images).
    /// Entries keep the archive's owner when running as root (a volume's
    /// `owner` is given after extraction, by the volume).
    pub keep_setuid: bool,
}

impl Policy {
    /// The policy for an image's root filesystem.
    pub fn image() -> Policy {
        Policy {
            keep_setuid: true,
            ..Policy::default()
        }
    }
}

/// A directory's metadata, applied once everything in it is written.
#[derive(Debug)]
struct DirMeta {
    rel: PathBuf,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

/// Unpacks into one destination directory, which must exist and be empty.
#[derive(Debug)]
pub struct Unpacker {
    dest: PathBuf,
    /// Directories known to be real directories, relative to `dest`.
    dirs: HashSet<PathBuf>,
    /// Symlinks the archive created (as symlinks or as hard links to
    /// one), relative to `dest`.
    symlinks: HashSet<PathBuf>,
    /// Other files the archive created: with `dirs` and `symlinks`,
    /// everything in `dest`, so a new path needs no look on disk.
    files: HashSet<PathBuf>,
    /// A layer: whiteouts are recorded, not written, and hard links may
    /// refer to lower layers.
    layer: bool,
    /// What the archive's hard link targets start with (an ACI's
    /// `rootfs`): the archive's paths, not the tree's.
    link_base: PathBuf,
    gate: Option<Gate>,
    policy: Policy,
    /// What the entries may still write (read when unpacking starts).
    budget: Option<Budget>,
    pub result: Unpacked,
}

impl Unpacker {
    /// An unpacker into `dest`; `layer` for an image layer.
    pub fn new(dest: &Path, layer: bool) -> Unpacker {
        Unpacker {
            dest: dest.to_owned(),
            dirs: HashSet::from([PathBuf::new()]),
            symlinks: HashSet::new(),
            files: HashSet::new(),
            layer,
            link_base: PathBuf::new(),
            gate: None,
            policy: Policy::image(),
            budget: None,
            result: Unpacked::default(),
        }
    }

    /// Unpack under `policy` instead of the image policy.
    pub fn with_policy(mut self, policy: Policy) -> Unpacker {
        self.policy = policy;
        self
    }

    /// Hard link targets are archive paths under `base`; anything else
    /// is outside the tree.
    pub fn with_link_base(mut self, base: &Path) -> Unpacker {
        self.link_base = base.to_owned();
        self
    }

    /// Bound each entry's headers through the [`Guarded`] reader that the
    /// archive reads from.
    pub fn with_gate(mut self, gate: Gate) -> Unpacker {
        self.gate = Some(gate);
        self
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
        archive.set_preserve_permissions(self.policy.keep_setuid);
        archive.set_preserve_mtime(true);
        archive.set_preserve_ownerships(as_root);
        archive.set_overwrite(true);
        archive.set_unpack_xattrs(false);
        // Directories get their mode and owner last: a read-only directory
        // must not stop its own contents from being written.
        let mut directories = Vec::new();
        // Read now, not at creation: layers unpacked before this one have
        // used some of it.
        let budget = Budget::of(&self.dest, &self.dest.display().to_string())?;
        self.budget = Some(budget);
        let mut entries = archive.entries()?;
        let mut last: Option<String> = None;
        let name_last = self.gate.is_some();
        while let Some(mut entry) = self.next_entry(&mut entries, last.as_deref(), name_last)? {
            let path = entry.path()?.into_owned();
            match route(&path)? {
                Route::Other => other(&path, &mut entry)?,
                Route::Into(rel) => {
                    self.charge(&entry, &rel)?;
                    if let Some(dir) = self.place(&mut entry, &rel)? {
                        directories.push(dir);
                    }
                }
            }
            // Whatever is left of the entry's data is read here, not by
            // the tar reader's skip, so that the gate counts headers only.
            io::copy(&mut entry, &mut io::sink())?;
            last = Some(path.display().to_string());
        }
        directories.sort_by(|a, b| b.rel.cmp(&a.rel));
        for dir in directories {
            self.finish_dir(&dir, as_root)?;
        }
        if self.policy.contained {
            self.check_symlinks_stay_inside()?;
        }
        Ok(())
    }

    /// The archive's next entry, its header read inside the gate; an error
    /// names the entry before it when `name_last` (a header's error alone
    /// does not say where in the archive it is).
    fn next_entry<'a, R: Read>(
        &self,
        entries: &mut tar::Entries<'a, R>,
        last: Option<&str>,
        name_last: bool,
    ) -> io::Result<Option<tar::Entry<'a, R>>> {
        if let Some(gate) = &self.gate {
            gate.start();
        }
        let next = entries.next();
        if let Some(gate) = &self.gate {
            gate.stop();
        }
        match (next, last) {
            (None, _) => Ok(None),
            (Some(Ok(entry)), _) => Ok(Some(entry)),
            (Some(Err(e)), Some(last)) if name_last => Err(io::Error::new(
                e.kind(),
                format!("the entry after {last:?}: {e}"),
            )),
            (Some(Err(e)), _) => Err(e),
        }
    }

    /// Read `archive` to its end as [`Unpacker::unpack`] would, writing
    /// nothing: each entry judged as placing it judges it, against the
    /// tree the entries before it would have made, kept in memory
    /// ([`Tree`]); then, for a contained tree, every symlink followed
    /// inside it. Counts what would be written in `result`. The
    /// destination is never looked at.
    pub fn survey<R: Read>(
        &mut self,
        archive: &mut Archive<R>,
        mut route: impl FnMut(&Path) -> io::Result<Route>,
    ) -> io::Result<()> {
        let mut tree = Tree::default();
        let mut entries = archive.entries()?;
        let mut last: Option<String> = None;
        while let Some(mut entry) = self.next_entry(&mut entries, last.as_deref(), true)? {
            let path = entry.path()?.into_owned();
            if let Route::Into(rel) = route(&path)? {
                self.judge(&mut tree, &mut entry, &rel)?;
            }
            let shown = path.display().to_string();
            // Data cut short reads as a short entry: the extraction's
            // write would fall short there.
            if io::copy(&mut entry, &mut io::sink())? < entry.size() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("entry {shown:?}: the archive ends inside its data"),
                ));
            }
            last = Some(shown);
        }
        if self.policy.contained {
            let mut links: Vec<&PathBuf> = tree.links.keys().collect();
            links.sort();
            for link in links {
                resolve_with(link, |here| Ok(tree.links.get(here).cloned()))
                    .map_err(|why| refuse(&link.display().to_string(), why))?;
            }
        }
        Ok(())
    }

    /// [`Unpacker::place`]'s judgement of one entry, on the tree in memory.
    fn judge<R: Read>(
        &mut self,
        tree: &mut Tree,
        entry: &mut Entry<'_, R>,
        rel: &Path,
    ) -> io::Result<()> {
        let name = rel.display().to_string();
        if rel.file_name().is_none() {
            return Ok(()); // the root itself
        }
        let parent = rel.parent().unwrap_or(Path::new(""));
        let kind = entry.header().entry_type();
        if !self.admits(kind, &name)? {
            return Ok(());
        }
        tree.make_dirs(parent).map_err(|why| refuse(&name, why))?;
        tree.clear(rel, kind == EntryType::Directory);
        self.result.entries += 1;
        match kind {
            EntryType::Directory => drop(tree.dirs.insert(rel.to_owned())),
            EntryType::Link => {
                let target = self.link_target(entry, &name)?;
                tree.hard_link(&self.policy, rel, &target)
                    .map_err(|why| refuse(&name, why))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| refuse(&name, "a symlink without a target"))?
                    .into_owned();
                if self.policy.contained {
                    lexically_inside(parent, &target).map_err(|why| refuse(&name, why))?;
                }
                tree.links.insert(rel.to_owned(), target);
            }
            _ if is_special(kind) => drop(tree.files.insert(rel.to_owned(), true)),
            _ => {
                self.result.bytes += entry.header().size()?;
                tree.files.insert(rel.to_owned(), false);
            }
        }
        Ok(())
    }

    /// Charge an entry to the free space before it is written: a regular
    /// file its declared size, a directory one block, anything else its
    /// inode only.
    fn charge<R: Read>(&mut self, entry: &Entry<'_, R>, rel: &Path) -> io::Result<()> {
        let header = entry.header();
        let size = match header.entry_type() {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => entry.size(),
            EntryType::Directory => 1,
            _ => 0,
        };
        match &mut self.budget {
            Some(budget) => budget
                .charge(size)
                .map_err(|e| refuse(&rel.display().to_string(), e)),
            None => Ok(()),
        }
    }

    /// Give a directory the archive's mode, owner and times (unless a
    /// later entry replaced it).
    fn finish_dir(&self, dir: &DirMeta, as_root: bool) -> io::Result<()> {
        let abs = self.dest.join(&dir.rel);
        if !fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        let name = dir.rel.display().to_string();
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            refuse(&name, format!("cannot set its {what}: {e}"))
        };
        if as_root {
            let (uid, gid) = (
                id(dir.uid).map_err(|e| failed("owner", &e))?,
                id(dir.gid).map_err(|e| failed("group", &e))?,
            );
            lchown(&abs, Some(uid), Some(gid)).map_err(|e| failed("owner", &e))?;
        }
        let keep = if self.policy.keep_setuid {
            0o7777
        } else {
            0o777
        };
        fs::set_permissions(&abs, fs::Permissions::from_mode(dir.mode & keep))
            .map_err(|e| failed("mode", &e))?;
        let time = nix::sys::time::TimeSpec::new(dir.mtime as i64, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &abs,
            &time,
            &time,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| failed("times", &e))
    }

    /// Every symlink the archive made, followed inside the tree (through
    /// the other symlinks), must end inside it: checked once all exist,
    /// since a later entry can change where an earlier link leads.
    fn check_symlinks_stay_inside(&self) -> io::Result<()> {
        let mut links: Vec<&PathBuf> = self.symlinks.iter().collect();
        links.sort();
        for link in links {
            if let Err(why) = resolve_inside(&self.dest, link) {
                return Err(refuse(&link.display().to_string(), why));
            }
        }
        Ok(())
    }

    /// Unpack one entry at `rel`; a directory is created now and returned
    /// for its metadata to be applied at the end.
    fn place<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        rel: &Path,
    ) -> io::Result<Option<DirMeta>> {
        let name = rel.display().to_string();
        let Some(file_name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return Ok(None); // the root itself
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        if self.layer && self.layer_bookkeeping(entry, rel, parent, &file_name, &name)? {
            return Ok(None);
        }
        let kind = entry.header().entry_type();
        if !self.admits(kind, &name)? {
            return Ok(None);
        }
        self.make_dirs(parent, &name)?;
        let abs = self.dest.join(rel);
        self.clear(rel, &abs, kind == EntryType::Directory)?;
        self.result.entries += 1;
        match kind {
            EntryType::Directory => return self.place_dir(entry, rel, &abs).map(Some),
            EntryType::Link => self.place_hard_link(entry, rel, &abs, &name)?,
            EntryType::Symlink => self.place_symlink(entry, rel, parent, &abs, &name)?,
            _ if is_special(kind) => {
                make_special(entry, &abs, kind, self.policy.keep_setuid)
                    .map_err(|e| refuse(&name, format!("cannot create it: {e}")))?;
                self.files.insert(rel.to_owned());
            }
            _ => {
                self.result.bytes += entry.header().size()?;
                entry.unpack(&abs).map_err(|e| cut_short(&name, e))?;
                self.files.insert(rel.to_owned());
            }
        }
        Ok(None)
    }

    /// Whether a layer's entry is bookkeeping rather than a file of the
    /// image: aufs metadata (skipped) or a whiteout (recorded).
    fn layer_bookkeeping<R: Read>(
        &mut self,
        entry: &Entry<'_, R>,
        rel: &Path,
        parent: &Path,
        file_name: &str,
        name: &str,
    ) -> io::Result<bool> {
        // aufs kept its own bookkeeping under `.wh..wh.` names
        // (`.wh..wh.plnk/`, `.wh..wh.aufs`), and old Docker layers still
        // carry it: it is no part of the image, and skipped as
        // containerd and podman skip it.
        let aufs_meta = rel.components().any(|c| {
            let c = c.as_os_str().to_string_lossy();
            c.starts_with(AUFS_META) && c != OPAQUE
        });
        if aufs_meta {
            return Ok(true);
        }
        if let Some(reserved) = parent
            .components()
            .find(|c| c.as_os_str().to_string_lossy().starts_with(WHITEOUT))
        {
            return Err(refuse(
                name,
                format!(
                    "it lies under {}, a whiteout name (names that begin with .wh. are reserved)",
                    reserved.as_os_str().to_string_lossy()
                ),
            ));
        }
        if file_name.starts_with(WHITEOUT) {
            self.whiteout(entry, parent, file_name, name)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether an entry of this kind is placed (true), skipped (false) or
    /// refused, by the policy.
    fn admits(&self, kind: EntryType, name: &str) -> io::Result<bool> {
        let special = is_special(kind);
        match kind {
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link => Ok(true),
            _ if special && self.policy.contained && !self.policy.special_files => Err(refuse(
                name,
                format!("{} (allow_special_files is off)", special_kind(kind)),
            )),
            _ if special && self.policy.special_files => Ok(true),
            // Device nodes and fifos in an image: a runtime provides /dev;
            // a file in their place would be a lie. Other kinds (PAX and
            // GNU headers) are consumed by the tar crate itself.
            _ if !self.policy.contained || special => Ok(false),
            _ => Err(refuse(name, format!("an entry of unknown type {kind:?}"))),
        }
    }

    /// Create a directory entry (unless one is there) and return the
    /// metadata to give it at the end.
    fn place_dir<R: Read>(
        &mut self,
        entry: &Entry<'_, R>,
        rel: &Path,
        abs: &Path,
    ) -> io::Result<DirMeta> {
        if fs::symlink_metadata(abs).is_err() {
            fs::create_dir(abs)?;
        }
        self.dirs.insert(rel.to_owned());
        self.result.implied_dirs.remove(rel);
        let header = entry.header();
        Ok(DirMeta {
            rel: rel.to_owned(),
            mode: header.mode()?,
            uid: header.uid()?,
            gid: header.gid()?,
            mtime: header.mtime()?,
        })
    }

    /// Link to an entry placed before; in a layer, a target in a lower
    /// layer is recorded for the caller to resolve.
    fn place_hard_link<R: Read>(
        &mut self,
        entry: &Entry<'_, R>,
        rel: &Path,
        abs: &Path,
        name: &str,
    ) -> io::Result<()> {
        let target = self.link_target(entry, name)?;
        let Some(meta) = lookup(&self.dest, &target).map_err(|why| refuse(name, why))? else {
            if self.layer {
                self.result.lower_links.push(LowerLink {
                    path: rel.to_owned(),
                    target,
                });
                return Ok(());
            }
            return Err(refuse(
                name,
                format!(
                    "a hard link to {}, which the archive has not created before it",
                    target.display()
                ),
            ));
        };
        // link() on a symlink makes another symlink, which must be
        // as safe where it lands as a symlink entry would be.
        self.check_link(rel, &target, &meta, name)?;
        fs::hard_link(self.dest.join(&target), abs)
            .map_err(|e| refuse(name, format!("cannot link to {}: {e}", target.display())))?;
        if meta.file_type().is_symlink() {
            self.symlinks.insert(rel.to_owned());
        } else {
            self.files.insert(rel.to_owned());
        }
        // The link is the target's inode: its mode is the target's.
        Ok(())
    }

    fn place_symlink<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        rel: &Path,
        parent: &Path,
        abs: &Path,
        name: &str,
    ) -> io::Result<()> {
        if self.policy.contained {
            let target = entry
                .link_name()?
                .ok_or_else(|| refuse(name, "a symlink without a target"))?;
            if let Err(why) = lexically_inside(parent, &target) {
                return Err(refuse(name, why));
            }
        }
        entry.unpack(abs)?;
        self.symlinks.insert(rel.to_owned());
        Ok(())
    }

    /// Record a layer's whiteout entry, refusing what the OCI layer
    /// format does not allow: a whiteout is an empty file named `.wh.`
    /// and the name of one entry of its directory, or `.wh..wh..opq`.
    fn whiteout<R: Read>(
        &mut self,
        entry: &Entry<'_, R>,
        parent: &Path,
        file_name: &str,
        name: &str,
    ) -> io::Result<()> {
        let header = entry.header();
        let kind = header.entry_type();
        let size = header.size()?;
        if !matches!(kind, EntryType::Regular | EntryType::Continuous) || size != 0 {
            let what = match kind {
                EntryType::Regular | EntryType::Continuous => format!("a file of {size} bytes"),
                EntryType::Directory => "a directory".to_owned(),
                EntryType::Symlink => "a symlink".to_owned(),
                EntryType::Link => "a hard link".to_owned(),
                other => format!("an entry of type {other:?}"),
            };
            return Err(refuse(
                name,
                format!("a whiteout must be an empty file, but this one is {what}"),
            ));
        }
        let whiteout = if file_name == OPAQUE {
            Whiteout::Opaque(parent.to_owned())
        } else {
            let hidden = &file_name[WHITEOUT.len()..];
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(refuse(
                    name,
                    format!(
                        "a whiteout of {hidden:?}, which names no entry of its directory (it would remove the directory itself or its parent)"
                    ),
                ));
            }
            if hidden.starts_with(WHITEOUT) {
                return Err(refuse(
                    name,
                    format!(
                        "a whiteout of {hidden}, a reserved .wh. name (the only special one is {OPAQUE})"
                    ),
                ));
            }
            Whiteout::Remove(parent.join(hidden))
        };
        self.make_dirs(parent, name)?;
        self.result.whiteouts.push(whiteout);
        Ok(())
    }

    /// A hard link's target, as a path in the tree.
    fn link_target<R: Read>(&self, entry: &Entry<'_, R>, name: &str) -> io::Result<PathBuf> {
        let target = entry
            .link_name()?
            .ok_or_else(|| refuse(name, "a hard link without a target"))?;
        if self.policy.contained && target.has_root() {
            return Err(refuse(
                name,
                format!("a hard link to the absolute path {}", target.display()),
            ));
        }
        if target.as_os_str().len() > PATH_LIMIT {
            return Err(refuse(
                name,
                format!("a hard link whose target is longer than {PATH_LIMIT} bytes"),
            ));
        }
        let target = relative_as(&target, name, "its link target")?;
        match target.strip_prefix(&self.link_base) {
            Ok(inside) => Ok(inside.to_owned()),
            Err(_) => Err(refuse(
                name,
                format!(
                    "a hard link to {}, outside {}/",
                    target.display(),
                    self.link_base.display()
                ),
            )),
        }
    }

    /// May `rel` be a hard link to `target` (whose metadata is `meta`)?
    fn check_link(
        &self,
        rel: &Path,
        target: &Path,
        meta: &fs::Metadata,
        name: &str,
    ) -> io::Result<()> {
        check_link_kind(&self.policy, rel, &self.dest.join(target), target, meta)
            .map_err(|why| refuse(name, why))
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
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // A parent the archive does not list: made as tar
                    // makes it, and owned as the policy says.
                    fs::create_dir(&abs)?;
                    if self.layer {
                        self.result.implied_dirs.insert(so_far.clone());
                    }
                }
                Err(e) => return Err(e),
            }
            self.dirs.insert(so_far.clone());
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

/// The tree an archive would make, known in memory: what
/// [`Unpacker::survey`] judges entries against instead of the disk.
#[derive(Debug, Default)]
struct Tree {
    dirs: HashSet<PathBuf>,
    /// Symlinks, and their targets.
    links: std::collections::HashMap<PathBuf, PathBuf>,
    /// Other files, and whether each is special (a device, a fifo).
    files: std::collections::HashMap<PathBuf, bool>,
}

/// What a path of a [`Tree`] is.
enum Kind {
    Dir,
    Link(PathBuf),
    File { special: bool },
}

impl Tree {
    /// [`Unpacker::make_dirs`]: the parents of an entry, made, none of
    /// them a symlink or a file.
    fn make_dirs(&mut self, dir: &Path) -> Result<(), String> {
        let mut so_far = PathBuf::new();
        for part in dir.components() {
            so_far.push(part);
            if self.links.contains_key(&so_far) {
                return Err(format!("it lies under the symlink {}", so_far.display()));
            }
            if self.files.contains_key(&so_far) {
                return Err(format!(
                    "it lies under {}, which is not a directory",
                    so_far.display()
                ));
            }
            self.dirs.insert(so_far.clone());
        }
        Ok(())
    }

    /// [`Unpacker::clear`]: a later entry replaces an earlier one.
    fn clear(&mut self, rel: &Path, keep_dir: bool) {
        if self.dirs.contains(rel) {
            if !keep_dir {
                self.dirs.retain(|d| !d.starts_with(rel));
                self.links.retain(|l, _| !l.starts_with(rel));
                self.files.retain(|f, _| !f.starts_with(rel));
            }
        } else {
            self.links.remove(rel);
            self.files.remove(rel);
        }
    }

    /// [`lookup`]: what `rel` is, not following symlinks on the way.
    fn lookup(&self, rel: &Path) -> Result<Option<Kind>, String> {
        let mut so_far = PathBuf::new();
        let mut parts = rel.components().peekable();
        while let Some(part) = parts.next() {
            so_far.push(part);
            let kind = if self.dirs.contains(&so_far) {
                Kind::Dir
            } else if let Some(target) = self.links.get(&so_far) {
                Kind::Link(target.clone())
            } else if let Some(special) = self.files.get(&so_far) {
                Kind::File { special: *special }
            } else {
                return Ok(None);
            };
            match kind {
                _ if parts.peek().is_none() => return Ok(Some(kind)),
                Kind::Dir => {}
                Kind::Link(_) => {
                    return Err(format!(
                        "its link target lies under the symlink {}",
                        so_far.display()
                    ))
                }
                Kind::File { .. } => {
                    return Err(format!(
                        "its link target lies under {}, which is not a directory",
                        so_far.display()
                    ))
                }
            }
        }
        Ok(Some(Kind::Dir)) // the root of the tree
    }

    /// [`Unpacker::place_hard_link`] and [`check_link_kind`]: a hard link
    /// at `rel` to `target` is what it links to, judged so.
    fn hard_link(&mut self, policy: &Policy, rel: &Path, target: &Path) -> Result<(), String> {
        let shown = target.display();
        match self.lookup(target)? {
            None => Err(format!(
                "a hard link to {shown}, which the archive has not created before it"
            )),
            Some(Kind::Dir) => Err(format!("a hard link to the directory {shown}")),
            Some(Kind::Link(points_to)) => {
                if policy.contained {
                    let parent = rel.parent().unwrap_or(Path::new(""));
                    lexically_inside(parent, &points_to).map_err(|why| {
                        format!("a hard link to the symlink {shown}, which here would be {why}")
                    })?;
                }
                self.links.insert(rel.to_owned(), points_to);
                Ok(())
            }
            Some(Kind::File { special }) => {
                self.files.insert(rel.to_owned(), special);
                Ok(())
            }
        }
    }
}

/// What `rel` is inside `base`, looked at on disk without following
/// anything: `None` if it does not exist; an error if a parent is a
/// symlink or not a directory (a link through it could reach anywhere).
fn lookup(base: &Path, rel: &Path) -> Result<Option<fs::Metadata>, String> {
    let mut so_far = PathBuf::new();
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        so_far.push(part);
        let meta = match fs::symlink_metadata(base.join(&so_far)) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot look at {}: {e}", so_far.display())),
        };
        if parts.peek().is_none() {
            return Ok(Some(meta));
        }
        if meta.file_type().is_symlink() {
            return Err(format!(
                "its link target lies under the symlink {}",
                so_far.display()
            ));
        }
        if !meta.is_dir() {
            return Err(format!(
                "its link target lies under {}, which is not a directory",
                so_far.display()
            ));
        }
    }
    // No name at all: the root of the tree.
    Ok(fs::symlink_metadata(base).ok())
}

/// The policy's rules for a hard link at `rel` to the existing `target`
/// (at `abs`): what the link makes must be allowed as if it were an entry
/// of its own.
fn check_link_kind(
    policy: &Policy,
    rel: &Path,
    abs: &Path,
    target: &Path,
    meta: &fs::Metadata,
) -> Result<(), String> {
    let kind = meta.file_type();
    if kind.is_dir() {
        return Err(format!("a hard link to the directory {}", target.display()));
    }
    if kind.is_symlink() && policy.contained {
        let points_to = fs::read_link(abs).map_err(|e| e.to_string())?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        if let Err(why) = lexically_inside(parent, &points_to) {
            return Err(format!(
                "a hard link to the symlink {}, which here would be {why}",
                target.display()
            ));
        }
    }
    let special = if kind.is_char_device() {
        Some("character device")
    } else if kind.is_block_device() {
        Some("block device")
    } else if kind.is_fifo() {
        Some("fifo")
    } else if kind.is_socket() {
        Some("socket")
    } else {
        None
    };
    if let Some(special) = special {
        if policy.contained && !policy.special_files {
            return Err(format!(
                "a hard link to the {special} {} (allow_special_files is off)",
                target.display()
            ));
        }
    }
    if !kind.is_symlink() && !policy.keep_setuid && meta.mode() & 0o6000 != 0 {
        return Err(format!(
            "a hard link to the setuid or setgid file {} (keep_setuid is off)",
            target.display()
        ));
    }
    Ok(())
}

/// Device nodes and fifos: what `allow_special_files` is about.
fn is_special(kind: EntryType) -> bool {
    matches!(kind, EntryType::Char | EntryType::Block | EntryType::Fifo)
}

fn special_kind(kind: EntryType) -> &'static str {
    match kind {
        EntryType::Char => "a character device",
        EntryType::Block => "a block device",
        _ => "a fifo",
    }
}

/// Create a device node or fifo with the entry's mode, owner and times.
fn make_special<R: Read>(
    entry: &mut Entry<'_, R>,
    abs: &Path,
    kind: EntryType,
    keep_setuid: bool,
) -> io::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let header = entry.header();
    let device = makedev(
        u64::from(header.device_major()?.unwrap_or(0)),
        u64::from(header.device_minor()?.unwrap_or(0)),
    );
    let flag = match kind {
        EntryType::Char => SFlag::S_IFCHR,
        EntryType::Block => SFlag::S_IFBLK,
        _ => SFlag::S_IFIFO,
    };
    let keep = if keep_setuid { 0o7777 } else { 0o777 };
    let mode = Mode::from_bits_truncate(header.mode()? & keep);
    mknod(abs, flag, mode, device)?;
    fs::set_permissions(abs, fs::Permissions::from_mode(header.mode()? & keep))?;
    if nix::unistd::geteuid().is_root() {
        lchown(abs, Some(id(header.uid()?)?), Some(id(header.gid()?)?))?;
    }
    Ok(())
}

/// An archive's user or group id as chown takes it: never cut down to 32
/// bits (2^32 would become root), nor (uid_t)-1, which chown reads as
/// "leave it".
fn id(value: u64) -> io::Result<u32> {
    u32::try_from(value)
        .ok()
        .filter(|id| *id != u32::MAX)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the owner id {value} is out of range (0 to 4294967294)"),
            )
        })
}

/// Does a symlink in `dir` (relative to the tree's root) with this target
/// stay inside the tree, read as written (without following anything)?
fn lexically_inside(dir: &Path, target: &Path) -> Result<(), String> {
    if target.has_root() {
        return Err(format!(
            "a symlink to the absolute path {}, outside the volume",
            target.display()
        ));
    }
    let mut depth = dir.components().count();
    for part in target.components() {
        match part {
            Component::ParentDir if depth == 0 => {
                return Err(format!(
                    "a symlink to {}, outside the volume",
                    target.display()
                ))
            }
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    Ok(())
}

/// Follow the symlink `link` inside `root` as the kernel would, through
/// other symlinks, without leaving `root`: an error says where it leaves
/// (or that it loops). A path that ends at something missing is fine.
fn resolve_inside(root: &Path, link: &Path) -> Result<(), String> {
    resolve_with(link, |here| match fs::symlink_metadata(root.join(here)) {
        Ok(meta) if meta.file_type().is_symlink() => fs::read_link(root.join(here))
            .map(Some)
            .map_err(|e| e.to_string()),
        // Missing from here on: the rest is only names.
        _ => Ok(None),
    })
}

/// [`resolve_inside`], with `read_link` telling the target of a path that
/// is a symlink (`None` for anything else): on disk, or in a tree known
/// in memory ([`Tree`]).
fn resolve_with(
    link: &Path,
    read_link: impl Fn(&Path) -> Result<Option<PathBuf>, String>,
) -> Result<(), String> {
    /// As the kernel's limit on symlinks followed in one lookup.
    const MAX_HOPS: usize = 40;
    let mut hops = 0;
    // Where we are (relative to root) and what is left to walk.
    let mut at: Vec<std::ffi::OsString> = Vec::new();
    let mut todo: Vec<std::ffi::OsString> = link
        .components()
        .rev()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    while let Some(part) = todo.pop() {
        if part == ".." {
            if at.pop().is_none() {
                let target = read_link(link).ok().flatten().unwrap_or_default();
                return Err(format!(
                    "its target {} leads outside the volume once the symlinks on its way are followed",
                    target.display()
                ));
            }
            continue;
        }
        if part == "." {
            continue;
        }
        at.push(part);
        let here: PathBuf = at.iter().collect();
        if let Some(target) = read_link(&here)? {
            hops += 1;
            if hops > MAX_HOPS {
                return Err("its target is a loop of symlinks".to_owned());
            }
            if target.has_root() {
                return Err(format!(
                    "its target leads outside the volume (to {} through {})",
                    target.display(),
                    here.display()
                ));
            }
            at.pop();
            todo.extend(target.components().rev().map(|c| c.as_os_str().to_owned()));
        }
    }
    Ok(())
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

/// Lay `layer` (a directory unpacked from a layer, with its whiteouts and
/// its hard links to lower files) over `root`, the layers below it
/// merged. The layer's directory is consumed. Errors name the layer's
/// entry.
pub fn overlay(
    root: &Path,
    layer: &Path,
    whiteouts: &[Whiteout],
    lower_links: &[LowerLink],
    implied_dirs: &HashSet<PathBuf>,
) -> io::Result<()> {
    // Whiteouts hide what the lower layers have, never the root itself
    // (a whiteout's name is checked when it is read).
    for whiteout in whiteouts {
        let (entry, result) = match whiteout {
            Whiteout::Remove(rel) => {
                let parent = rel.parent().unwrap_or(Path::new(""));
                let name = rel.file_name().unwrap_or_default().to_string_lossy();
                let entry = parent.join(format!("{WHITEOUT}{name}"));
                match resolve_in(root, rel) {
                    Some(path) if !rel.as_os_str().is_empty() => (entry, remove_any(&path)),
                    _ => (entry, Ok(())),
                }
            }
            Whiteout::Opaque(rel) => {
                let entry = rel.join(OPAQUE);
                let dir = resolve_in(root, rel)
                    .filter(|dir| fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()));
                let result = match dir {
                    Some(dir) => fs::read_dir(&dir)
                        .and_then(|mut children| children.try_for_each(|c| remove_any(&c?.path()))),
                    None => Ok(()),
                };
                (entry, result)
            }
        };
        result.map_err(|e| {
            refuse(
                &entry.display().to_string(),
                format!("cannot apply the whiteout: {e}"),
            )
        })?;
    }
    for link in lower_links {
        lower_link(root, layer, link)?;
    }
    merge(layer, root, Path::new(""), implied_dirs)?;
    fs::remove_dir(layer).or_else(|e| match e.kind() {
        io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    })
}

/// Make a layer's hard link to a file that is earlier in the layer (made
/// by an earlier such link) or in the layers below, as applying the layer
/// onto them would; the image policy applies to what it makes.
fn lower_link(root: &Path, layer: &Path, link: &LowerLink) -> io::Result<()> {
    let name = link.path.display().to_string();
    let at = layer.join(&link.path);
    let parent = link.path.parent().unwrap_or(Path::new(""));
    let parent_is_dir = matches!(lookup(layer, parent), Ok(Some(m)) if m.is_dir());
    if fs::symlink_metadata(&at).is_ok() || !parent_is_dir {
        return Ok(()); // a later entry of the layer took its place
    }
    let target = &link.target;
    let found = match lookup(layer, target).map_err(|why| refuse(&name, why))? {
        Some(meta) => Some((layer, meta)),
        None => lookup(root, target)
            .map_err(|why| refuse(&name, why))?
            .map(|meta| (root, meta)),
    };
    let Some((base, meta)) = found else {
        return Err(refuse(
            &name,
            format!(
                "a hard link to {}, which is neither earlier in its layer nor in a lower layer",
                target.display()
            ),
        ));
    };
    let from = base.join(target);
    check_link_kind(&Policy::image(), &link.path, &from, target, &meta)
        .map_err(|why| refuse(&name, why))?;
    fs::hard_link(&from, &at)
        .map_err(|e| refuse(&name, format!("cannot link to {}: {e}", target.display())))
}

/// Move everything in `from` into `to` (a real directory): directories on
/// both sides are merged, anything else replaces what was there. `rel` is
/// where `from` is in the image. A directory the layer made only for the
/// entries under it (`implied_dirs`) does not replace a lower layer's
/// symlink or file: those entries would go through it (a symlink) or under
/// it (a file), which a layer cannot do, so they are refused by name.
fn merge(from: &Path, to: &Path, rel: &Path, implied_dirs: &HashSet<PathBuf>) -> io::Result<()> {
    for child in fs::read_dir(from)? {
        let child = child?;
        let source = child.path();
        let target = to.join(child.file_name());
        let child_rel = rel.join(child.file_name());
        let source_is_dir = child.file_type()?.is_dir();
        let target_meta = fs::symlink_metadata(&target).ok();
        match target_meta {
            Some(m) if !m.is_dir() && source_is_dir && implied_dirs.contains(&child_rel) => {
                let lower = if m.file_type().is_symlink() {
                    "a symlink"
                } else {
                    "a file, not a directory"
                };
                return Err(refuse(
                    &child_rel.display().to_string(),
                    format!(
                        "the layer has entries under it without listing it, and a lower layer \
                         has it as {lower}: a layer cannot write through or under it"
                    ),
                ));
            }
            Some(m) if m.is_dir() && source_is_dir => {
                merge(&source, &target, &child_rel, implied_dirs)?;
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

    #[test]
    fn owner_ids_are_never_cut_down_to_root() {
        assert_eq!(id(1000).unwrap(), 1000);
        assert_eq!(id(0).unwrap(), 0);
        assert!(id(1 << 32).is_err(), "2^32 would be root");
        assert!(id(u64::from(u32::MAX)).is_err(), "chown's 'leave it'");
    }
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
    fn an_entry_larger_than_the_free_space_is_refused_before_it_is_written() {
        // A header declaring 1 PiB, followed by none of it: the refusal
        // comes from the header, before the data is read or written.
        let mut h = tar::Header::new_gnu();
        h.set_path("bomb").unwrap();
        h.set_size(1 << 50);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 4096]);
        let t = tempfile::tempdir().unwrap();
        let mut u = Unpacker::new(t.path(), false).with_policy(Policy {
            contained: true,
            ..Policy::default()
        });
        let err = u
            .unpack(
                &mut Archive::new(&bytes[..]),
                |p| relative(p, "t").map(Route::Into),
                |_, _| Ok(()),
            )
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "entry \"bomb\": it needs 1.0 PiB more than the free space of the filesystem of "
            ),
            "{msg}"
        );
        assert!(msg.ends_with("of it free); nothing was kept"), "{msg}");
        assert!(!t.path().join("bomb").exists());
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
                // Listed: the layer's directory replaces the lower symlink
                // (unlisted, it would be refused: see `merge`).
                ("etc/", "d"),
                ("etc/.wh.passwd", "f:"),
            ],
        )
        .unwrap();
        assert_eq!(upper.whiteouts.len(), 3);
        overlay(
            &root,
            &layer,
            &upper.whiteouts,
            &upper.lower_links,
            &upper.implied_dirs,
        )
        .unwrap();
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
