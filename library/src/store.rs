//! The store: what ops has deployed on a host, under one root directory.
//!
//! ```text
//! <root>/layout-version          "1": the layout this tree follows
//! <root>/lock, lock.holder       the change lock (see crate::lock)
//! <root>/pods/<name>/current     symlink to the current version's directory
//! <root>/pods/<name>/previous    symlink to the version current before it
//! <root>/pods/<name>/_idle       the pod is idle: its ports armed to wake it
//!                                (see crate::records::idle; `_` starts no
//!                                version's name)
//! <root>/pods/<name>/_woken      when a connection last woke the pod
//! <root>/pods/<name>/<version>/  one deployed version, immutable:
//!     is-version-<version>       the pivot's marker: the version's units
//!                                start only while `current/` holds it
//!                                (see [`Store::pivot_path`])
//!     pod.json                   the bundle's pod.json, byte for byte
//!     units/<unit file>          the bundle's unit files, as shipped
//!     meta.json                  ops's record: the validated pod, digest, order,
//!                                the host ports it uses
//!     environment                the pod environment (0600), when given
//!     volumes/<volume>/          a data volume: data/ and volume.json
//!                                (see crate::volume)
//! <root>/images/<runtime>/<dir>/ an imported image (see crate::image)
//! <root>/ports/<port>            who holds a host port, derived from the
//!                                versions' meta.json (see crate::ports)
//! <root>/bin/ops-wake            the waker an idle pod's sockets run: a
//!                                copy of the ops_pod that idled it
//! <root>/staging/, <root>/trash/ transient: what is being added or removed
//! ```
//!
//! The store owns every path of this layout: the modules above ask it for
//! their directories ([`Store::images_dir`], [`Store::volume_dir`],
//! [`Store::ports_dir`]), stage through [`Store::stage_dir`] and delete
//! through [`Store::throw_away`], so the layout is written down once. The
//! lock's own files (`lock`, `lock.holder`) are `crate::lock`'s, which sits
//! below the store.
//!
//! Everything is plain files and symlinks, so `ls`, `cat` and a file backup
//! are enough to read and restore it. A version appears by a rename of a
//! fully written staging directory and disappears by a rename into
//! `trash/`, so a reader never sees half a version; a pointer is switched
//! by renaming a new symlink over the old one.
//!
//! `current` is the one pivot of a pod: it says which version the store
//! calls current, and it alone decides which version's units a start (a
//! boot included) starts. Each version's units carry
//! `ConditionPathExists=` [`Store::pivot_path`], `current/` followed to
//! the version's own marker, so that a power cut between any two writes
//! of a deploy boots the version `current` names, never another
//! (tests/reliability/power).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::atomic::{self, Context, FsError};
use crate::download::Location;
use crate::lock::{LockError, StoreLock};
use crate::records::idle::{IdleRecord, WokenRecord};
use crate::records::names::{PodName, UnitName, Version};
use crate::records::pod::{Pod, Source};
pub use crate::records::version::{VersionRecord, META_FORMAT};
use crate::records::Runtime;

/// The layout this code reads and writes.
pub const LAYOUT: u32 = 1;
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(
        "the store at {} has layout version {found:?}; this ops reads layout {LAYOUT}",
        root.display()
    )]
    Layout { root: PathBuf, found: String },
    #[error("{} is not a valid record of ops: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{} is not a valid idle record: {reason}; remove it (the pod is then not idle: state: \
         idle arms it again) and rerun",
        path.display()
    )]
    CorruptIdle { path: PathBuf, reason: String },
}

/// A version as stored: its record, unit file texts and environment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    pub record: VersionRecord,
    pub units: BTreeMap<UnitName, String>,
    pub environment: Option<Vec<u8>>,
}

/// A version about to be added: everything staging needs.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// The bundle directory its images' paths are relative to.
    pub bundle_dir: PathBuf,
    /// The release it came from, when it came from a repository: where its
    /// artifacts are read and what they must hold.
    pub origin: Option<crate::repository::Origin>,
    pub pod: Pod,
    pub pod_json: Vec<u8>,
    pub units: BTreeMap<UnitName, String>,
    /// Where each unit file was read from, as messages name it (the
    /// bundle's file, the release's, or its URI): `pod.units` name the
    /// store's copies.
    pub unit_sources: BTreeMap<UnitName, String>,
    pub digest: String,
    /// Images pod.json gives by URI without an id, not downloaded yet (check
    /// mode downloads nothing): not in `pod.images`, their ids unknown. A
    /// real run downloads them under the lock before it plans
    /// (`crate::pod`), so the version it adds has none.
    pub unresolved: Vec<crate::bundle::PendingImage>,
    /// Where a real run downloaded an image (in [`Store::downloads_dir`]) to
    /// compute the id pod.json leaves out: the import reads this copy
    /// instead of downloading it again.
    pub downloaded: BTreeMap<crate::records::names::ImageId, PathBuf>,
}

impl NewVersion {
    /// Where a file the pod names is read from: in the bundle directory,
    /// on the release's server, or at its URI. The one mapping for every
    /// reader, so check mode and the run look in the same place.
    pub fn locate(&self, source: &Source) -> Result<Location, String> {
        match &self.origin {
            Some(origin) => origin.locate(source, &self.bundle_dir),
            None => Location::of(source, &self.bundle_dir),
        }
    }

    /// The sha256 (hex) a release recorded for a file the pod names.
    pub fn recorded_sha256(&self, source: &Source) -> Option<&str> {
        self.origin.as_ref()?.sha256_of(source)
    }
}

/// What the store holds for one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodState {
    pub versions: BTreeMap<Version, StoredVersion>,
    /// Versions whose directory lacks its marker ([`marker_name`]): staged
    /// by an ops from before the marker; the next run writes it.
    pub unmarked: std::collections::BTreeSet<Version>,
    pub current: Option<Version>,
    pub previous: Option<Version>,
    /// The pod is idle (its record names the current version).
    pub idle: Option<IdleRecord>,
    /// When a connection last woke the pod.
    pub woken: Option<WokenRecord>,
}

impl PodState {
    /// Versions, oldest first.
    pub fn by_age(&self) -> Vec<&Version> {
        let mut v: Vec<_> = self.versions.iter().collect();
        v.sort_by_key(|(_, s)| s.record.sequence);
        v.into_iter().map(|(v, _)| v).collect()
    }

    pub fn next_sequence(&self) -> u64 {
        self.versions
            .values()
            .map(|v| v.record.sequence)
            .max()
            // A damaged record's huge sequence must not overflow: the new
            // version still sorts newest.
            .map_or(1, |s| s.saturating_add(1))
    }
}

/// The refusal of a pointer (`current`, `previous`) that is not a symlink.
fn not_a_pointer(path: &Path, e: io::Error) -> FsError {
    let kind = match fs::symlink_metadata(path).map(|m| m.file_type()) {
        Ok(t) if t.is_dir() => "a directory",
        Ok(t) if t.is_file() => "a regular file",
        Ok(_) => "a special file",
        Err(_) => return FsError::from_io("read", path, e),
    };
    let reason = format!(
        "it is {kind}, not the symlink to a version ops makes; remove it to let ops \
         write it again (nothing was changed)"
    );
    FsError::from_io(
        "read",
        path,
        io::Error::new(io::ErrorKind::InvalidData, reason),
    )
}

/// The name of a version's marker in its directory: unique to the
/// version, so that `current/<marker>` exists only while `current`
/// points at that version. A version's name is letters, digits, `.`, `_`
/// and `-` (crate::records::names), so the marker is a plain file name.
pub fn marker_name(version: &Version) -> String {
    format!("is-version-{version}")
}

/// What a marker holds: a word for whoever reads it.
fn marker_text(name: &PodName, version: &Version) -> String {
    format!(
        "Version {version} of pod {name}: its units start only while current points at this \
         directory (their ConditionPathExists= names current/{}).\n",
        marker_name(version)
    )
}

/// The digest of a pod and its unit files.
pub fn digest(pod: &Pod, units: &BTreeMap<UnitName, String>) -> String {
    let mut hash = Sha256::new();
    let model = serde_json::to_vec(pod).expect("a pod serialises");
    hash.update((model.len() as u64).to_le_bytes());
    hash.update(&model);
    for (name, text) in units {
        for part in [name.as_str().as_bytes(), text.as_bytes()] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Hide the credentials of every URI of `pod`; whether any had some.
fn redact_uris(pod: &mut Pod) -> bool {
    let mut hidden = false;
    let sources = pod
        .images
        .iter_mut()
        .flat_map(|i| std::iter::once(&mut i.source).chain(i.signature.as_mut()))
        .chain(pod.volumes.iter_mut().filter_map(|v| v.data.as_mut()));
    let unit_uris = pod.units.iter_mut().filter_map(|u| u.uri.as_mut());
    let uris = sources
        .filter_map(|source| match source {
            crate::records::pod::Source::Uri(uri) => Some(uri),
            crate::records::pod::Source::Path(_) => None,
        })
        .chain(unit_uris);
    for uri in uris {
        let shown = crate::records::uri::redact(uri).into_owned();
        if shown != *uri {
            *uri = shown;
            hidden = true;
        }
    }
    hidden
}

/// The store under one root.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// The most ops reads of one file of the store: far more than any record,
/// unit file or environment it writes, and a bound on a damaged one.
const MAX_FILE: u64 = 16 << 20;

/// A file of the store, read only if it is a regular file reached without
/// a symlink: a FIFO or a device planted in the store is refused at once
/// instead of blocking the run (and every run waiting for its lock), and a
/// link (to `/etc/shadow`, to a record ops did not write) is not followed.
fn read_file(path: &Path) -> Result<Vec<u8>, FsError> {
    atomic::read_own(path, MAX_FILE).at("read", path)
}

/// The directories in `dir` (not symlinks), none when it is unreadable.
fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// [`read_file`], `None` when nothing is there (a dangling link is
/// something: it is refused).
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FsError> {
    match atomic::read_own(path, MAX_FILE) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at("read", path),
    }
}

impl Store {
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The layout marker, `layout-version`.
    pub fn layout_path(&self) -> PathBuf {
        self.root.join("layout-version")
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    pub fn pod_dir(&self, name: &PodName) -> PathBuf {
        self.pods_dir().join(name.as_str())
    }

    pub fn version_dir(&self, name: &PodName, version: &Version) -> PathBuf {
        self.pod_dir(name).join(version.as_str())
    }

    /// The idle record of a pod (see crate::records::idle).
    pub fn idle_path(&self, name: &PodName) -> PathBuf {
        self.pod_dir(name).join("_idle")
    }

    /// When the pod was last woken.
    pub fn woken_path(&self, name: &PodName) -> PathBuf {
        self.pod_dir(name).join("_woken")
    }

    /// The waker an idle pod's sockets start.
    pub fn waker_path(&self) -> PathBuf {
        self.root.join("bin").join("ops-wake")
    }

    /// A version's marker ([`marker_name`]) in its directory.
    pub fn marker_path(&self, name: &PodName, version: &Version) -> PathBuf {
        self.version_dir(name, version).join(marker_name(version))
    }

    /// The pivot of a version's units: its marker seen through `current`.
    /// It exists exactly while `current` points at the version, so the
    /// version's units (whose drop-ins carry `ConditionPathExists=` this
    /// path) start then and only then, whatever starts them.
    pub fn pivot_path(&self, name: &PodName, version: &Version) -> PathBuf {
        self.pod_dir(name)
            .join("current")
            .join(marker_name(version))
    }

    /// Write a version's marker into its directory: a version an ops from
    /// before the marker staged (see [`PodState::unmarked`]). Written whole
    /// and synced before the unit files that name it.
    pub fn write_marker(
        &self,
        _lock: &StoreLock,
        name: &PodName,
        version: &Version,
    ) -> Result<(), FsError> {
        let text = marker_text(name, version);
        atomic::write_file(&self.marker_path(name, version), text.as_bytes(), 0o644)
    }

    pub fn environment_path(&self, name: &PodName, version: &Version) -> PathBuf {
        self.version_dir(name, version).join("environment")
    }

    /// A version's data volume: `data/` and `volume.json` (see crate::volume).
    pub fn volume_dir(&self, name: &PodName, version: &Version, volume: &str) -> PathBuf {
        Store::volume_in(&self.version_dir(name, version), volume)
    }

    /// A volume's directory in a version's directory, committed or staged.
    pub fn volume_in(version_dir: &Path, volume: &str) -> PathBuf {
        version_dir.join("volumes").join(volume)
    }

    /// Imported images, of every runtime.
    pub fn images_root(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Imported images of one runtime (see crate::image).
    pub fn images_dir(&self, runtime: Runtime) -> PathBuf {
        self.images_root().join(runtime.name())
    }

    /// Remove `images/<runtime>/`, then `images/`, once empty.
    pub fn remove_images_dir_if_empty(
        &self,
        _lock: &StoreLock,
        runtime: Runtime,
    ) -> Result<(), FsError> {
        atomic::remove_dir_if_empty(&self.images_dir(runtime))?;
        atomic::remove_dir_if_empty(&self.images_root()).map(drop)
    }

    /// Who holds each host port (see crate::ports).
    pub fn ports_dir(&self) -> PathBuf {
        self.root.join("ports")
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }

    pub fn trash_dir(&self) -> PathBuf {
        self.root.join("trash")
    }

    /// A fresh, empty directory in `staging/` for one change (`label` names
    /// it, so a crashed run's leftovers say whose they were); what was
    /// there from a crashed run is removed first.
    pub fn stage_dir(&self, _lock: &StoreLock, label: &str, mode: u32) -> Result<PathBuf, FsError> {
        let dir = self.staging_dir().join(label);
        atomic::remove_tree(&dir)?;
        atomic::create_dir_all(&dir, mode)?;
        Ok(dir)
    }

    /// Remove a staging directory (committed or abandoned), and `staging/`
    /// once empty.
    pub fn unstage(&self, _lock: &StoreLock, dir: &Path) -> Result<(), FsError> {
        atomic::remove_tree(dir)?;
        atomic::remove_dir_if_empty(&self.staging_dir()).map(drop)
    }

    /// Delete a directory of the store: out of sight by one rename into
    /// `trash/<label>`, then deleted, so a reader never sees it half gone.
    pub fn throw_away(&self, _lock: &StoreLock, dir: &Path, label: &str) -> Result<(), FsError> {
        if !dir.exists() {
            return Ok(());
        }
        atomic::create_dir_all(&self.trash_dir(), 0o755)?;
        let gone = self.trash_dir().join(label);
        atomic::remove_tree(&gone)?;
        atomic::rename(dir, &gone)?;
        atomic::remove_tree(&gone)?;
        atomic::remove_dir_if_empty(&self.trash_dir()).map(drop)
    }

    /// Remove what runs killed half-way left beside the files ops writes
    /// in place (the lock's holder, the layout marker, pointers, idle
    /// records, port records, images, a version's environment and
    /// volumes): their temporaries, see [`atomic::remove_stale_temps`].
    /// Under the lock, before the run observes the store, so that no
    /// leftover outlives the next run or is taken for something of ops's.
    pub fn sweep_stale_temps(&self, _lock: &StoreLock) -> Result<usize, FsError> {
        let mut removed = 0;
        for dir in self.written_in_place() {
            removed += atomic::remove_stale_temps(&dir)?;
        }
        Ok(removed)
    }

    /// The directories where ops replaces files in place (see
    /// [`Store::sweep_stale_temps`]).
    fn written_in_place(&self) -> Vec<PathBuf> {
        let mut dirs = vec![
            self.root.clone(),
            self.ports_dir(),
            self.root.join("bin"),
            self.images_root(),
            self.images_dir(Runtime::Systemd),
            self.images_dir(Runtime::Podman),
            self.pods_dir(),
        ];
        for name in self.pod_names().unwrap_or_default() {
            let pod_dir = self.pod_dir(&name);
            for version in subdirectories(&pod_dir) {
                let volumes = version.join("volumes");
                dirs.extend(subdirectories(&volumes));
                dirs.extend([version, volumes]);
            }
            dirs.push(pod_dir);
        }
        dirs
    }

    /// For a run that found nothing to do (and so took no lock): when a run
    /// killed half-way left `staging/` or `trash/` (its work done but not
    /// cleaned up, say) or a temporary beside a file it replaced (an old
    /// volume's data swapped out), take the lock and remove them. Nothing that ops keeps changes, so the run still
    /// reports no change. Returns whether there was anything to sweep.
    pub fn sweep_leftovers(&self, timeout: Duration, what: &str) -> Result<bool, LockError> {
        let transient = self.staging_dir().exists() || self.trash_dir().exists();
        if !transient
            && !self
                .written_in_place()
                .iter()
                .any(|d| atomic::has_stale_temps(d))
        {
            return Ok(false);
        }
        let lock = StoreLock::acquire(&self.root, timeout, &format!("{what}: sweeping"))?;
        self.sweep_stale_temps(&lock)?;
        self.clean_transient(&lock)?;
        Ok(true)
    }

    /// Refuse a store written by a newer (or unknown) layout.
    pub fn check_layout(&self) -> Result<(), StoreError> {
        match read_optional(&self.layout_path())? {
            None => Ok(()),
            Some(b) if String::from_utf8_lossy(&b).trim() == LAYOUT.to_string() => Ok(()),
            Some(b) => Err(StoreError::Layout {
                root: self.root.clone(),
                found: String::from_utf8_lossy(&b).trim().to_owned(),
            }),
        }
    }

    /// Pods with a directory in the store, by name.
    pub fn pod_names(&self) -> Result<Vec<PodName>, FsError> {
        let dir = self.pods_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at("read", &dir),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.at("read", &dir)?;
            // ops makes each pod a directory: anything else there (a
            // symlink, a file) is not one of its pods, and is not followed.
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| PodName::parse(n).ok())
                .filter(|_| is_dir)
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn read_pointer(&self, name: &PodName, pointer: &str) -> Result<Option<Version>, FsError> {
        let path = self.pod_dir(name).join(pointer);
        match fs::read_link(&path) {
            Ok(target) => Ok(target.to_str().and_then(|t| Version::parse(t).ok())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            // readlink's EINVAL ("Invalid argument") said nothing of why.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Err(not_a_pointer(&path, e)),
            Err(e) => Err(e).at("read", &path),
        }
    }

    /// A version's record and environment, and its unit files' texts when
    /// `with_units` (readers that only report leave them).
    fn read_version_with(
        &self,
        name: &PodName,
        version: &Version,
        with_units: bool,
    ) -> Result<StoredVersion, StoreError> {
        let dir = self.version_dir(name, version);
        let meta_path = dir.join("meta.json");
        let bytes = read_file(&meta_path)?;
        let corrupt = |reason: String| StoreError::Corrupt {
            path: meta_path.clone(),
            reason,
        };
        let record: VersionRecord =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if record.format != META_FORMAT {
            return Err(corrupt(format!(
                "format {} (this ops reads {META_FORMAT})",
                record.format
            )));
        }
        if &record.pod.name != name || &record.pod.version != version {
            return Err(corrupt(format!(
                "it records pod {} version {}",
                record.pod.name, record.pod.version
            )));
        }
        let mut units = BTreeMap::new();
        for unit in record.pod.units.iter().filter(|_| with_units) {
            let path = dir.join("units").join(unit.name.as_str());
            let text = String::from_utf8(read_file(&path)?).map_err(|_| StoreError::Corrupt {
                path: path.clone(),
                reason: "a unit file ops stored is not UTF-8".to_owned(),
            })?;
            units.insert(unit.name.clone(), text);
        }
        let environment = read_optional(&dir.join("environment"))?;
        Ok(StoredVersion {
            record,
            units,
            environment,
        })
    }

    /// A JSON record of the pod directory, `None` when there is none.
    fn read_record<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
    ) -> Result<Option<T>, StoreError> {
        let Some(bytes) = read_optional(path)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Write (or, with `None`, remove) the pod's idle record.
    pub fn write_idle(
        &self,
        _lock: &StoreLock,
        name: &PodName,
        record: Option<&IdleRecord>,
    ) -> Result<(), FsError> {
        write_record(&self.idle_path(name), record)
    }

    /// Write (or, with `None`, remove) when the pod was last woken.
    pub fn write_woken(
        &self,
        _lock: &StoreLock,
        name: &PodName,
        record: Option<&WokenRecord>,
    ) -> Result<(), FsError> {
        write_record(&self.woken_path(name), record)
    }

    /// Copy this program to [`Store::waker_path`] (root-owned, 0755),
    /// unless it is there already, byte for byte; whether it was copied.
    pub fn install_waker(&self, _lock: &StoreLock, program: &Path) -> Result<bool, FsError> {
        let path = self.waker_path();
        if self.waker_in_place(program) {
            return Ok(false);
        }
        atomic::create_dir_all(&self.root.join("bin"), 0o755)?;
        atomic::copy_file(program, &path, 0o755)?;
        Ok(true)
    }

    /// Whether [`Store::waker_path`] is `program`'s copy as ops installs
    /// it: a regular file (a link is not followed: root runs it), owned
    /// by this user, mode 0755, byte for byte the same.
    pub fn waker_in_place(&self, program: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let path = self.waker_path();
        let ours = fs::symlink_metadata(&path).is_ok_and(|m| {
            m.is_file() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o7777 == 0o755
        });
        ours && same_file_content(program, &path)
    }

    /// One version with its unit files, when the store holds it.
    pub fn read_version(
        &self,
        name: &PodName,
        version: &Version,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let dir = self.pod_dir(name).join(version.as_str());
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => self.read_version_with(name, version, true).map(Some),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsError::from_io("read", &dir, e).into()),
        }
    }

    /// Everything the store holds for `name` (empty when nothing).
    pub fn read_pod(&self, name: &PodName) -> Result<PodState, StoreError> {
        self.read_pod_with(name, true, true)
    }

    /// [`Store::read_pod_unlocked`] but for the idle record (`idle` is
    /// none): for another pod's holdings, which are in its versions.
    pub fn read_pod_without_idle(&self, name: &PodName) -> Result<PodState, StoreError> {
        self.read_pod_with(name, false, false)
    }

    fn read_pod_with(
        &self,
        name: &PodName,
        with_units: bool,
        with_idle: bool,
    ) -> Result<PodState, StoreError> {
        let dir = self.pod_dir(name);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PodState::default()),
            Err(e) => return Err(FsError::from_io("read", &dir, e).into()),
        };
        let mut state = PodState::default();
        for entry in entries {
            let entry = entry.at("read", &dir)?;
            let file_type = entry.file_type().at("read", &entry.path())?;
            let Some(version) = entry
                .file_name()
                .to_str()
                .and_then(|n| Version::parse(n).ok())
            else {
                continue;
            };
            if file_type.is_dir() {
                let stored = self.read_version_with(name, &version, with_units)?;
                // A regular file, not followed through a link.
                let marked = fs::symlink_metadata(self.marker_path(name, &version))
                    .is_ok_and(|m| m.is_file());
                if !marked {
                    state.unmarked.insert(version.clone());
                }
                state.versions.insert(version, stored);
            }
        }
        // A pointer to a version that is gone (removed by hand) is no pointer.
        state.current = self
            .read_pointer(name, "current")?
            .filter(|v| state.versions.contains_key(v));
        state.previous = self
            .read_pointer(name, "previous")?
            .filter(|v| state.versions.contains_key(v));
        // A record of a version no longer current (changed by hand) is
        // no idle pod: only a pod idled as it is is woken.
        let read = || self.read_record::<IdleRecord>(&self.idle_path(name));
        let idle = match with_idle.then(read).unwrap_or(Ok(None)) {
            Err(StoreError::Corrupt { path, reason }) => {
                Err(StoreError::CorruptIdle { path, reason })
            }
            read => read,
        };
        state.idle = idle?.filter(|r| state.current.as_ref() == Some(&r.version));
        // Only when it was last woken (woken_at): one that cannot be read
        // is none, rather than a pod that can no longer be acted on.
        state.woken = self.read_record(&self.woken_path(name)).unwrap_or(None);
        Ok(state)
    }

    /// [`Store::read_pod`] for readers without the lock: a version that a
    /// concurrent run removes (renames into `trash/`) while it is read makes
    /// the whole pod be read again, so the result is the pod before or
    /// after that run's step, never half of it.
    /// The unit files' texts are not read (`units` stays empty).
    pub fn read_pod_unlocked(&self, name: &PodName) -> Result<PodState, StoreError> {
        let mut attempts = 0;
        loop {
            match self.read_pod_with(name, false, true) {
                Err(StoreError::Fs(e))
                    if e.source.kind() == io::ErrorKind::NotFound && attempts < 10 =>
                {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    /// Write the layout marker if missing.
    pub fn ensure_layout(&self, _lock: &StoreLock) -> Result<(), FsError> {
        if !self.layout_path().exists() {
            atomic::write_file(&self.layout_path(), format!("{LAYOUT}\n").as_bytes(), 0o644)?;
        }
        Ok(())
    }

    /// Remove what a crashed run left in `staging/` and `trash/`.
    pub fn clean_transient(&self, _lock: &StoreLock) -> Result<(), FsError> {
        for dir in [self.staging_dir(), self.trash_dir()] {
            atomic::remove_tree(&dir)?;
        }
        Ok(())
    }

    /// Where a run downloads the images whose ids pod.json leaves out,
    /// under the lock, to compute them before it plans: in `staging/`, so
    /// a killed run's copies go with the next run's sweep.
    pub fn downloads_dir(&self) -> PathBuf {
        self.staging_dir().join("downloads")
    }

    /// [`Store::clean_transient`], sparing this run's own downloads
    /// ([`Store::downloads_dir`], made under the same lock) when `keep`.
    pub fn clean_transient_but_downloads(
        &self,
        lock: &StoreLock,
        keep: bool,
    ) -> Result<(), FsError> {
        if !keep {
            return self.clean_transient(lock);
        }
        atomic::remove_tree(&self.trash_dir())?;
        let spared = self.downloads_dir();
        let entries = match fs::read_dir(self.staging_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(FsError::from_io("read", &self.staging_dir(), e)),
        };
        for entry in entries {
            let path = entry
                .map_err(|e| FsError::from_io("read", &self.staging_dir(), e))?
                .path();
            if path != spared {
                atomic::remove_tree(&path)?;
            }
        }
        Ok(())
    }

    /// Write a new version into a staging directory; returns it. Nothing
    /// is visible in `pods/` until [`Store::commit`].
    pub fn stage(
        &self,
        lock: &StoreLock,
        new: &NewVersion,
        record: &VersionRecord,
    ) -> Result<PathBuf, FsError> {
        let label = format!("{}-{}", new.pod.name, new.pod.version);
        let staged = self.stage_dir(lock, &label, 0o755)?;
        atomic::create_dir_all(&staged.join("units"), 0o755)?;
        // The record is world-readable: URIs are kept with their
        // credentials hidden, and the bundle's pod.json, kept byte for
        // byte, is readable by root only when it holds any.
        let mut record = record.clone();
        let hidden = redact_uris(&mut record.pod);
        let pod_json_mode = if hidden { 0o600 } else { 0o644 };
        atomic::write_file(&staged.join("pod.json"), &new.pod_json, pod_json_mode)?;
        for (name, text) in &new.units {
            atomic::write_file(
                &staged.join("units").join(name.as_str()),
                text.as_bytes(),
                0o644,
            )?;
        }
        let mut meta = serde_json::to_vec_pretty(&record).expect("a record serialises");
        meta.push(b'\n');
        atomic::write_file(&staged.join("meta.json"), &meta, 0o644)?;
        // The marker comes with the directory's rename (see pivot_path).
        let (name, version) = (&new.pod.name, &new.pod.version);
        let marker = marker_text(name, version);
        atomic::write_file(&staged.join(marker_name(version)), marker.as_bytes(), 0o644)?;
        Ok(staged)
    }

    /// Drop a staged version that will not be committed.
    pub fn discard_staged(&self, lock: &StoreLock, staged: &Path) -> Result<(), FsError> {
        self.unstage(lock, staged)
    }

    /// Make a staged version part of the store.
    pub fn commit(
        &self,
        _lock: &StoreLock,
        staged: &Path,
        name: &PodName,
        version: &Version,
    ) -> Result<(), FsError> {
        atomic::create_dir_all(&self.pod_dir(name), 0o755)?;
        atomic::rename(staged, &self.version_dir(name, version))?;
        atomic::remove_dir_if_empty(&self.staging_dir()).map(drop)
    }

    /// Set (or, with `None`, remove) a version's environment file.
    pub fn write_environment(
        &self,
        _lock: &StoreLock,
        name: &PodName,
        version: &Version,
        contents: Option<&[u8]>,
    ) -> Result<(), FsError> {
        let path = self.environment_path(name, version);
        match contents {
            Some(c) => atomic::write_file(&path, c, 0o600),
            None => atomic::remove_file(&path).map(drop),
        }
    }

    /// Point `current` or `previous` at a version, or remove it.
    pub fn set_pointer(
        &self,
        _lock: &StoreLock,
        name: &PodName,
        pointer: &str,
        version: Option<&Version>,
    ) -> Result<(), FsError> {
        let path = self.pod_dir(name).join(pointer);
        match version {
            Some(v) => atomic::write_symlink(&path, Path::new(v.as_str())),
            None => atomic::remove_file(&path).map(drop),
        }
    }

    /// Remove a version: out of sight by one rename, then deleted.
    pub fn remove_version(
        &self,
        lock: &StoreLock,
        name: &PodName,
        version: &Version,
    ) -> Result<(), FsError> {
        let dir = self.version_dir(name, version);
        self.throw_away(lock, &dir, &format!("{name}-{version}"))
    }

    /// Remove the pod's directory once its versions are gone.
    pub fn remove_pod(&self, lock: &StoreLock, name: &PodName) -> Result<(), FsError> {
        for pointer in ["current", "previous"] {
            self.set_pointer(lock, name, pointer, None)?;
        }
        self.write_idle(lock, name, None)?;
        self.write_woken(lock, name, None)?;
        atomic::remove_dir_if_empty(&self.pod_dir(name)).map(drop)
    }
}

/// Write a record as pretty JSON, or remove it.
fn write_record<T: serde::Serialize>(path: &Path, record: Option<&T>) -> Result<(), FsError> {
    match record {
        Some(r) => {
            let mut text = serde_json::to_vec_pretty(r).expect("a record serialises");
            text.push(b'\n');
            atomic::write_file(path, &text, 0o644)
        }
        None => atomic::remove_file(path).map(drop),
    }
}

/// Whether two files hold the same bytes (false when either is missing,
/// or `b` is a symlink: it is not followed).
pub fn same_file_content(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let no_follow = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(b);
    let (Ok(fa), Ok(fb)) = (fs::File::open(a), no_follow) else {
        return false;
    };
    let same_len = match (fa.metadata(), fb.metadata()) {
        (Ok(ma), Ok(mb)) => ma.is_file() && mb.is_file() && ma.len() == mb.len(),
        _ => false,
    };
    if !same_len {
        return false;
    }
    let (mut ra, mut rb) = (io::BufReader::new(fa), io::BufReader::new(fb));
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = match ra.read(&mut ba) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 {
            return true;
        }
        if rb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

impl FsError {
    pub(crate) fn from_io(action: &'static str, path: &Path, source: io::Error) -> FsError {
        FsError {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    #[test]
    fn only_real_directories_in_pods_are_pods_and_a_link_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let pods = store.pods_dir();
        fs::create_dir_all(pods.join("shop")).unwrap();
        std::os::unix::fs::symlink("/etc", pods.join("other")).unwrap();
        fs::write(pods.join("cart"), b"").unwrap();
        let names: Vec<String> = store
            .pod_names()
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["shop"]);
    }

    #[test]
    fn a_staged_version_holds_its_marker_and_one_without_is_marked_by_the_next_run() {
        let bundle =
            crate::bundle::load(Path::new("../tests/fixtures/bundles/pair/native")).unwrap();
        let pod = bundle.pod;
        let (name, version) = (pod.name.clone(), pod.version.clone());
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let lock = StoreLock::acquire(tmp.path(), Duration::ZERO, "test").unwrap();
        let new = NewVersion {
            bundle_dir: bundle.dir,
            origin: None,
            pod_json: b"{}".to_vec(),
            units: BTreeMap::new(),
            unit_sources: BTreeMap::new(),
            digest: digest(&pod, &BTreeMap::new()),
            pod: pod.clone(),
            unresolved: Vec::new(),
            downloaded: BTreeMap::new(),
        };
        let record = VersionRecord {
            format: META_FORMAT,
            sequence: 1,
            deployed_at: 0,
            digest: new.digest.clone(),
            pod,
            runtime: Runtime::default(),
            ports: Vec::new(),
        };
        let staged = store.stage(&lock, &new, &record).unwrap();
        let marker = format!("is-version-{version}");
        assert!(staged.join(&marker).is_file());
        store.commit(&lock, &staged, &name, &version).unwrap();
        assert!(store.read_pod_unlocked(&name).unwrap().unmarked.is_empty());
        // The pivot is there only while `current` points at the version.
        let pivot = store.pivot_path(&name, &version);
        assert_eq!(pivot, store.pod_dir(&name).join("current").join(&marker));
        assert!(!pivot.exists());
        store
            .set_pointer(&lock, &name, "current", Some(&version))
            .unwrap();
        assert!(pivot.exists());
        // A version an ops from before the marker staged.
        fs::remove_file(store.marker_path(&name, &version)).unwrap();
        let state = store.read_pod_unlocked(&name).unwrap();
        assert_eq!(state.unmarked.iter().collect::<Vec<_>>(), [&version]);
        assert!(!pivot.exists());
        store.write_marker(&lock, &name, &version).unwrap();
        assert!(pivot.exists());
        let text = fs::read_to_string(store.marker_path(&name, &version)).unwrap();
        assert!(text.contains(&format!("ConditionPathExists= names current/{marker}")));
        // A link planted as the marker is no marker.
        fs::remove_file(store.marker_path(&name, &version)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", store.marker_path(&name, &version)).unwrap();
        assert!(!store.read_pod_unlocked(&name).unwrap().unmarked.is_empty());
    }

    #[test]
    fn a_pointer_that_is_not_a_symlink_is_refused_saying_what_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let name = PodName::parse("shop").unwrap();
        let current = store.pod_dir(&name).join("current");
        fs::create_dir_all(store.pod_dir(&name)).unwrap();
        // readlink's bare "Invalid argument (os error 22)" said before.
        for kind in ["a regular file", "a directory"] {
            if kind == "a directory" {
                fs::create_dir(&current).unwrap();
            } else {
                fs::write(&current, b"2\n").unwrap();
            }
            let e = store.read_pod_unlocked(&name).unwrap_err();
            let mut shown = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                shown = format!("{shown}: {s}");
                source = s.source();
            }
            assert_eq!(
                shown,
                format!(
                    "cannot read {}: it is {kind}, not the symlink to a version ops makes; \
                     remove it to let ops write it again (nothing was changed)",
                    current.display()
                )
            );
            let _ = fs::remove_file(&current).or_else(|_| fs::remove_dir(&current));
        }
    }

    #[test]
    fn a_damaged_record_s_huge_sequence_does_not_overflow() {
        let bundle =
            crate::bundle::load(Path::new("../tests/fixtures/bundles/pair/native")).unwrap();
        let record = VersionRecord {
            format: META_FORMAT,
            sequence: u64::MAX,
            deployed_at: 0,
            digest: String::new(),
            pod: bundle.pod.clone(),
            runtime: Runtime::default(),
            ports: Vec::new(),
        };
        let mut state = PodState::default();
        state.versions.insert(
            bundle.pod.version.clone(),
            StoredVersion {
                record,
                units: BTreeMap::new(),
                environment: None,
            },
        );
        assert_eq!(state.next_sequence(), u64::MAX);
    }

    #[test]
    fn a_stored_record_hides_uri_credentials_and_the_pod_json_holding_them_is_private() {
        let bundle =
            crate::bundle::load(Path::new("../tests/fixtures/bundles/pair/native")).unwrap();
        let mut pod = bundle.pod;
        let secret = "http://deploy:hunter2@images.example/web.aci?token=abc";
        pod.images[0].source = crate::bundle::Source::Uri(secret.to_owned());
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let lock = StoreLock::acquire(tmp.path(), Duration::ZERO, "test").unwrap();
        let new = NewVersion {
            bundle_dir: bundle.dir,
            origin: None,
            pod_json: format!("{{\"uri\": \"{secret}\"}}").into_bytes(),
            units: BTreeMap::new(),
            unit_sources: BTreeMap::new(),
            digest: digest(&pod, &BTreeMap::new()),
            pod: pod.clone(),
            unresolved: Vec::new(),
            downloaded: BTreeMap::new(),
        };
        let record = VersionRecord {
            format: META_FORMAT,
            sequence: 1,
            deployed_at: 0,
            digest: new.digest.clone(),
            pod,
            runtime: crate::image::Runtime::default(),
            ports: Vec::new(),
        };
        let staged = store.stage(&lock, &new, &record).unwrap();
        let meta = fs::read_to_string(staged.join("meta.json")).unwrap();
        assert!(!meta.contains("hunter2") && !meta.contains("abc"), "{meta}");
        assert!(meta.contains("http://***@images.example/web.aci?token=***"));
        let mode = fs::metadata(staged.join("pod.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
