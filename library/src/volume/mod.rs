//! Volumes: a pod version's data directories, made from archives.
//!
//! ```text
//! <root>/pods/<pod>/<version>/volumes/<name>/
//!     data/          the contents: what units see (OPS_VOLUME_<NAME>)
//!     volume.json    ops's record: the archive's digest, counts, owner, mode
//! ```
//!
//! A volume is always built whole in `staging/` (extracted with the strict
//! [`Policy`]: nothing may leave the volume), synced, and then put in place
//! by one rename, or for a replacement by one atomic exchange of the two
//! directories (`renameat2(RENAME_EXCHANGE)`), after which the old
//! contents are deleted. Contents and record travel together, so a crash
//! leaves either the old volume or the new one, never half of one.
//!
//! - [`extract`]: the archive (tar, possibly gzip, bzip2, xz or zstd) into
//!   a directory, and the archive's digests.
//! - [`run`]: ops_volume. ops_pod builds a new version's volumes with
//!   [`build`] inside the version it stages.

pub mod extract;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::atomic::{self, FsError};
use crate::bundle::{Pod, Volume};
use crate::clock::now;
use crate::command::CommandError;
use crate::decode;
use crate::download::{DownloadError, Location};
use crate::lock::{LockError, StoreLock};
use crate::outcome::{AfterChanges, Refusal};
use crate::records::names::{PodName, Version};
use crate::records::Runtime;
use crate::store::{NewVersion, PodState, Store, StoreError};
use crate::systemd::Systemd;
use crate::unpack::Policy;

pub use crate::records::volume::{VolumeRecord, RECORD_FORMAT};
pub use extract::{Checksum, Digests};

/// Mode of a volume's top directory when neither the request nor the
/// archive says.
pub const DEFAULT_MODE: u32 = 0o755;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("cannot extract {file}")]
    Extract {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("{file} ends early: it is truncated or damaged")]
    Truncated { file: String },
    #[error("{file} does not match its checksum: expected {expected}, got {actual}")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{file} changed while ops read it: first {first}, then {then}; nothing was changed")]
    Changed {
        file: String,
        first: String,
        then: String,
    },
    #[error("{0}")]
    Refused(Refusal),
    #[error(transparent)]
    Source(#[from] DownloadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Systemd(#[from] CommandError),
    /// A failure after changes, reported as ops_pod and ops_image report
    /// one: the new contents are in place and recorded (nothing is undone:
    /// the old contents are gone), the units that used the old ones could
    /// not be restarted. [`VolumeError::done`] gives what was done.
    #[error("{after}")]
    AfterChanges {
        after: Box<AfterChanges>,
        report: Box<Report>,
    },
}

impl VolumeError {
    /// What was done before the failure, when something was.
    pub fn done(&self) -> Option<&Report> {
        match self {
            VolumeError::AfterChanges { report, .. } => Some(report),
            _ => None,
        }
    }
}

/// How a volume is made, besides its archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub owner: Option<u32>,
    pub group: Option<u32>,
    /// Mode of the top directory; `None`: the archive's top entry's, else
    /// [`DEFAULT_MODE`].
    pub mode: Option<u32>,
    pub special_files: bool,
    pub keep_setuid: bool,
}

impl Settings {
    /// The owner is given after extraction ([`chown_tree`]), not by the
    /// unpacker: a change of owner clears setuid bits, and the unpacker
    /// puts them back from the entry's header, which for a hard link is
    /// not the mode of the file it links to.
    fn policy(&self) -> Policy {
        Policy {
            contained: true,
            special_files: self.special_files,
            keep_setuid: self.keep_setuid,
        }
    }
}

/// An archive on local disk, and what it must hash to.
#[derive(Debug, Clone)]
pub struct LocalArchive {
    pub path: PathBuf,
    /// How to name it in messages and the record: as the user gave it.
    pub shown: String,
    /// The checksum the user gave.
    pub checksum: Option<Checksum>,
    /// The sha256 the plan was made with, when it was read before.
    pub planned: Option<String>,
    /// Open it without following a symlink anywhere on its path: a plain
    /// bundle's file, whose path validation resolved (a link there now was
    /// put there since, by the bundle's owner, and could lead to an
    /// archive only root may read).
    pub no_links: bool,
}

/// Where a volume's contents are, from its directory.
pub fn data_dir(volume_dir: &Path) -> PathBuf {
    volume_dir.join("data")
}

/// The host directory units see as the volume.
pub fn data_path(store: &Store, pod: &PodName, version: &Version, name: &str) -> PathBuf {
    data_dir(&store.volume_dir(pod, version, name))
}

/// The record of the volume in `dir`, if it has one.
pub fn read_record(dir: &Path) -> Result<Option<VolumeRecord>, VolumeError> {
    let path = dir.join("volume.json");
    let Some(bytes) = crate::store::read_optional(&path)? else {
        return Ok(None);
    };
    let record: VolumeRecord = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if record.format != RECORD_FORMAT {
        return Err(StoreError::Corrupt {
            path,
            reason: format!("format {} (this ops reads {RECORD_FORMAT})", record.format),
        }
        .into());
    }
    Ok(Some(record))
}

fn write_record(dir: &Path, record: &VolumeRecord) -> Result<(), FsError> {
    let mut text = serde_json::to_vec_pretty(record).expect("a record serialises");
    text.push(b'\n');
    atomic::write_file(&dir.join("volume.json"), &text, 0o644)
}

/// Build a volume in `dir` (which must not exist yet): its contents from
/// `archive` (or empty), then its record, all on disk before returning.
/// On failure `dir` is removed.
pub fn build(
    dir: &Path,
    name: &str,
    archive: Option<&LocalArchive>,
    settings: &Settings,
) -> Result<VolumeRecord, VolumeError> {
    build_with(dir, name, archive, settings, Origin::ThisArchive)
}

/// What a built volume's record says it was first built from.
#[derive(Debug, Clone)]
enum Origin {
    /// The archive it is built from: ops_pod building a version's volume.
    ThisArchive,
    /// ops_volume: what the volume it replaces said, or nothing.
    Kept(Option<String>),
}

fn build_with(
    dir: &Path,
    name: &str,
    archive: Option<&LocalArchive>,
    settings: &Settings,
    origin: Origin,
) -> Result<VolumeRecord, VolumeError> {
    let result = build_in(dir, name, archive, settings, origin);
    if result.is_err() {
        atomic::remove_tree(dir)?;
    }
    result
}

fn build_in(
    dir: &Path,
    name: &str,
    archive: Option<&LocalArchive>,
    settings: &Settings,
    origin: Origin,
) -> Result<VolumeRecord, VolumeError> {
    let data = data_dir(dir);
    atomic::create_dir_all(dir, 0o755)?;
    // Private while it is filled; its real mode comes last.
    atomic::create_dir_all(&data, 0o700)?;
    let mut record = VolumeRecord {
        format: RECORD_FORMAT,
        name: name.to_owned(),
        digest: None,
        source: None,
        entries: 0,
        bytes: 0,
        owner: settings.owner,
        group: settings.group,
        mode: settings.mode.unwrap_or(DEFAULT_MODE),
        created_at: now(),
        keep_setuid: Some(settings.keep_setuid),
        origin: None,
    };
    if let Some(archive) = archive {
        extract_into(&mut record, archive, &data, settings)?;
    }
    record.origin = match origin {
        Origin::ThisArchive => record.digest.clone(),
        Origin::Kept(kept) => kept,
    };
    if record.owner.is_some() || record.group.is_some() {
        // Just extracted: the bits are the archive's, as keep_setuid let them.
        chown_tree(&data, record.owner, record.group, true)?;
    }
    set_top(&data, &record)?;
    // The whole tree on disk before the rename that shows it.
    atomic::sync_filesystem(dir)?;
    write_record(dir, &record)?;
    Ok(record)
}

/// Extract `archive` into `data`, checked against the checksum given and
/// the digest planned with; the record gets what the extraction found.
fn extract_into(
    record: &mut VolumeRecord,
    archive: &LocalArchive,
    data: &Path,
    settings: &Settings,
) -> Result<(), VolumeError> {
    let also = archive.checksum.as_ref().map(Checksum::algorithm);
    let opened = extract::Opened {
        file: &archive.path,
        shown: &archive.shown,
        no_links: archive.no_links,
    };
    let done = extract::extract(opened, data, settings.policy(), also)?;
    if let Some(checksum) = &archive.checksum {
        checksum.verify(&done.digests, &archive.shown)?;
    }
    if let Some(planned) = archive
        .planned
        .as_ref()
        .filter(|p| **p != done.digests.sha256)
    {
        return Err(VolumeError::Changed {
            file: archive.shown.clone(),
            first: planned.clone(),
            then: done.digests.sha256,
        });
    }
    record.digest = Some(done.digests.sha256.clone());
    record.source = Some(archive.shown.clone());
    record.entries = done.entries;
    record.bytes = done.bytes;
    if settings.mode.is_none() {
        record.mode = done.top_mode.unwrap_or(DEFAULT_MODE);
    }
    Ok(())
}

/// Give the top directory its mode and owner.
fn set_top(data: &Path, record: &VolumeRecord) -> Result<(), FsError> {
    use std::os::unix::fs::PermissionsExt;
    if record.owner.is_some() || record.group.is_some() {
        std::os::unix::fs::lchown(data, record.owner, record.group)
            .map_err(|e| FsError::from_io("chown", data, e))?;
    }
    fs::set_permissions(data, fs::Permissions::from_mode(record.mode))
        .map_err(|e| FsError::from_io("chmod", data, e))
}

/// Put a built volume at `target`: a rename, or an atomic exchange with
/// the volume there, whose old contents are then deleted.
fn install(built: &Path, target: &Path) -> Result<(), VolumeError> {
    if fs::symlink_metadata(target).is_ok() {
        atomic::exchange(built, target)?;
        atomic::remove_tree(built)?;
    } else {
        atomic::create_dir_all(target.parent().expect("a volume has a parent"), 0o755)?;
        atomic::rename(built, target)?;
    }
    Ok(())
}

/// What ops_volume should make true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Present,
    Absent,
}

/// An ops_volume request.
#[derive(Debug, Clone)]
pub struct Request {
    pub pod: PodName,
    pub version: Version,
    pub name: String,
    pub data: Option<Location>,
    pub checksum: Option<Checksum>,
    pub settings: Settings,
    pub replace: bool,
    pub state: State,
    pub root: PathBuf,
    pub timeout: Duration,
    pub lock_timeout: Duration,
}

/// What ops_volume did (or would do).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub changed: bool,
    pub path: String,
    pub digest: Option<String>,
    pub entries: Option<u64>,
    pub bytes: Option<u64>,
    pub actions: Vec<String>,
    pub warnings: Vec<String>,
    pub diff: Vec<Value>,
}

/// What the volume needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// Build it (from the archive, when there is one) where there is none,
    /// or in place of the one there.
    Build {
        replacing: bool,
    },
    /// Only the top directory's mode, or the owner of every entry.
    Adjust {
        mode: bool,
        owner: bool,
    },
    Remove,
}

/// The volume as found: its record, and whether its contents are empty.
#[derive(Debug, Clone)]
struct Found {
    record: VolumeRecord,
    empty: bool,
}

fn find(dir: &Path) -> Result<Option<Found>, VolumeError> {
    let Some(record) = read_record(dir)? else {
        return Ok(None);
    };
    let data = data_dir(dir);
    let mut entries = match fs::read_dir(&data) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FsError::from_io("read", &data, e).into()),
    };
    Ok(Some(Found {
        record,
        empty: entries.next().is_none(),
    }))
}

/// The volume of the request as pod.json declares it.
fn declared(store: &Store, request: &Request) -> Result<Volume, VolumeError> {
    let state = store.read_pod(&request.pod)?;
    let Some(stored) = state.versions.get(&request.version) else {
        let deployed: Vec<&str> = state.by_age().iter().map(|v| v.as_str()).collect();
        return Err(VolumeError::Refused(Refusal::new(format!(
            "version {} of pod {} is not deployed (deployed versions: {}); \
             a volume belongs to a deployed pod version",
            request.version,
            request.pod,
            if deployed.is_empty() {
                "none".to_owned()
            } else {
                deployed.join(", ")
            }
        ))));
    };
    let volumes = &stored.record.pod.volumes;
    volumes
        .iter()
        .find(|v| v.name == request.name)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
            VolumeError::Refused(Refusal::new(format!(
                "pod {} version {} declares no volume {:?} (its volumes: {})",
                request.pod,
                request.version,
                request.name,
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )))
        })
}

fn describe(record: &VolumeRecord, path: &Path) -> String {
    let owner = |id: Option<u32>| id.map_or("(as extracted)".to_owned(), |i| i.to_string());
    format!(
        "path: {}\ndigest: {}\nentries: {}\nbytes: {}\nmode: {:04o}\nowner: {}\ngroup: {}\n",
        path.display(),
        record.digest.as_deref().unwrap_or("(empty)"),
        record.entries,
        record.bytes,
        record.mode,
        owner(record.owner),
        owner(record.group),
    )
}

/// The diff of a volume: its record before and after.
pub fn diff_entry(
    pod: &PodName,
    version: &Version,
    name: &str,
    before: Option<String>,
    after: Option<String>,
) -> Value {
    let header = format!("volume {name} of pod {pod} version {version}");
    json!({
        "before_header": header,
        "after_header": header,
        "before": before.unwrap_or_default(),
        "after": after.unwrap_or_default(),
    })
}

/// The action that creates a volume.
pub fn create_action(pod: &PodName, version: &Version, name: &str, source: Option<&str>) -> String {
    match source {
        Some(s) => format!("extract volume {name} of pod {pod} version {version} from {s}"),
        None => format!("create empty volume {name} of pod {pod} version {version}"),
    }
}

/// Hash the archive (reading a local file, or a download streamed through
/// the hash and written nowhere), and refuse it as the extraction would if
/// it does not even start as an archive: check mode tells what the run
/// will refuse. A download that will be written to the store (`root`)
/// is refused once it passes what the store's filesystem could take.
fn digests_of(
    location: &Location,
    timeout: Duration,
    want: &Option<Checksum>,
    root: Option<&Path>,
) -> Result<Digests, VolumeError> {
    let mut reader = location.open(timeout)?;
    if let Some(root) = root.filter(|_| location.is_remote()) {
        let budget = crate::space::Budget::of(root, &root.display().to_string())
            .map_err(|e| FsError::from_io("read the free space of", root, e))?;
        reader = Box::new(crate::download::Capped::new(reader, budget));
    }
    let (digests, head) =
        extract::digests_and_head(&mut reader, want.as_ref().map(Checksum::algorithm))
            .map_err(|e| VolumeError::from(crate::download::read_error(location, e, timeout)))?;
    let whole = digests.size <= decode::HEAD as u64;
    decode::check_start(&head, whole).map_err(|e| extract::unusable(&location.display(), e))?;
    Ok(digests)
}

/// ops_volume: bring one volume to the request. The plan is made without
/// the lock (a no-op, a refusal and check mode take none), then again
/// under it.
pub fn run(
    request: &Request,
    systemd: &mut dyn Systemd,
    check: bool,
    want_diff: bool,
) -> Result<Report, VolumeError> {
    let store = Store::new(&request.root);
    store.check_layout()?;
    let dir = store.volume_dir(&request.pod, &request.version, &request.name);
    let target = Target {
        request,
        store,
        dir,
    };
    let mut report = Report {
        path: data_dir(&target.dir).display().to_string(),
        ..Report::default()
    };
    if request.state == State::Present {
        declared(&target.store, request)?;
    }
    let digests = archive_digests(request)?;
    let found = find(&target.dir)?;
    let Some(change) = plan(request, found.as_ref(), digests.as_ref())? else {
        if let Some(found) = &found {
            fill(&mut report, &found.record);
        }
        if !check {
            let what = format!("ops_volume {} of pod {}", request.name, request.pod);
            target.store.sweep_leftovers(request.lock_timeout, &what)?;
        }
        return Ok(report);
    };
    target.report_planned(
        &mut report,
        found.as_ref(),
        digests.as_ref(),
        &change,
        want_diff,
    );
    if check {
        if matches!(change, Change::Build { replacing: true }) {
            plan_restart(&target.store, request, systemd, &mut report);
        }
        return Ok(report);
    }
    target.change_under_lock(digests.as_ref(), systemd, report)
}

/// The digests of the request's archive, checked against its checksum;
/// `None` when there is no archive to read.
fn archive_digests(request: &Request) -> Result<Option<Digests>, VolumeError> {
    match &request.data {
        Some(location) if request.state == State::Present => {
            let digests = digests_of(
                location,
                request.timeout,
                &request.checksum,
                Some(&request.root),
            )?;
            if let Some(checksum) = &request.checksum {
                checksum.verify(&digests, &location.display())?;
            }
            Ok(Some(digests))
        }
        _ => Ok(None),
    }
}

/// The volume one ops_volume run is about: the request, its store, the
/// volume's directory.
struct Target<'a> {
    request: &'a Request,
    store: Store,
    dir: PathBuf,
}

impl Target<'_> {
    /// Put the planned change in the report: changed, its action, its
    /// diff, and the record it leads to.
    fn report_planned(
        &self,
        report: &mut Report,
        found: Option<&Found>,
        digests: Option<&Digests>,
        change: &Change,
        want_diff: bool,
    ) {
        let request = self.request;
        report.changed = true;
        let after = planned_record(request, found, digests, change);
        report.actions.push(action(request, found, change));
        if want_diff {
            let data = data_dir(&self.dir);
            let counted = !matches!(change, Change::Build { .. })
                || request.data.is_none()
                || found.is_some_and(|f| f.record.digest == digests.map(|d| d.sha256.clone()));
            let planned = |r: &VolumeRecord| match describe(r, &data) {
                text if counted => text,
                text => text.replace(
                    &format!("entries: {}\nbytes: {}\n", r.entries, r.bytes),
                    "entries: (counted when extracted)\nbytes: (counted when extracted)\n",
                ),
            };
            report.diff.push(diff_entry(
                &request.pod,
                &request.version,
                &request.name,
                found.map(|f| describe(&f.record, &data)),
                after.as_ref().map(planned),
            ));
        }
        if let Some(record) = &after {
            fill(report, record);
        }
    }

    /// Take the lock, plan again on what is there now, and carry the
    /// change out; units that used replaced contents are restarted.
    fn change_under_lock(
        &self,
        digests: Option<&Digests>,
        systemd: &mut dyn Systemd,
        mut report: Report,
    ) -> Result<Report, VolumeError> {
        let request = self.request;
        let lock = StoreLock::acquire(
            &request.root,
            request.lock_timeout,
            &format!(
                "ops_volume {} of pod {} version {}",
                request.name, request.pod, request.version
            ),
        )?;
        // What a killed run left half-written goes before anything is read.
        self.store.sweep_stale_temps(&lock)?;
        // Under the lock, the version and the volume as they are now.
        if request.state == State::Present {
            declared(&self.store, request)?;
        }
        let found = find(&self.dir)?;
        let Some(change) = plan(request, found.as_ref(), digests)? else {
            report.changed = false;
            report.actions.clear();
            report.diff.clear();
            if let Some(found) = &found {
                fill(&mut report, &found.record);
            }
            return Ok(report);
        };
        let record = apply(
            &self.store,
            &lock,
            request,
            &self.dir,
            found.as_ref(),
            &change,
            digests,
        )?;
        if let Some(record) = &record {
            fill(&mut report, record);
        }
        // The diff was planned before the lock and the extraction, when the
        // counts were not known: it shows what was found and what was built.
        if let Some(entry) = report.diff.last_mut() {
            let data = data_dir(&self.dir);
            entry["before"] = Value::from(
                found
                    .as_ref()
                    .map_or_else(String::new, |f| describe(&f.record, &data)),
            );
            entry["after"] = Value::from(
                record
                    .as_ref()
                    .map_or_else(String::new, |r| describe(r, &data)),
            );
        }
        if matches!(change, Change::Build { replacing: true }) {
            restart_users(&self.store, request, systemd, report)
        } else {
            Ok(report)
        }
    }
}

fn fill(report: &mut Report, record: &VolumeRecord) {
    report.digest.clone_from(&record.digest);
    report.entries = Some(record.entries);
    report.bytes = Some(record.bytes);
}

fn action(request: &Request, found: Option<&Found>, change: &Change) -> String {
    let (pod, version, name) = (&request.pod, &request.version, &request.name);
    let source = request.data.as_ref().map(Location::display);
    let never_filled = found.is_some_and(|f| f.record.digest.is_none() && f.empty);
    match change {
        Change::Build { replacing: false } => create_action(pod, version, name, source.as_deref()),
        Change::Build { replacing: true } if never_filled && source.is_some() => format!(
            "fill the empty volume {name} of pod {pod} version {version} from {}",
            source.unwrap_or_default()
        ),
        Change::Build { replacing: true } => match source {
            Some(s) => format!(
                "replace the contents of volume {name} of pod {pod} version {version} with {s}"
            ),
            None => {
                format!("replace volume {name} of pod {pod} version {version} with an empty one")
            }
        },
        Change::Adjust { mode, owner } => {
            let mut what = Vec::new();
            if *mode {
                what.push("the mode of its top directory");
            }
            if *owner {
                what.push("the owner of every entry");
            }
            format!(
                "set {} of volume {name} of pod {pod} version {version}",
                what.join(" and ")
            )
        }
        Change::Remove => format!("remove volume {name} of pod {pod} version {version}"),
    }
}

/// The change the request needs, given what is there; refused when the
/// request would change the volume's data without `replace`: a deployed
/// version's data changes only when asked (ops_pod never changes it).
fn plan(
    request: &Request,
    found: Option<&Found>,
    digests: Option<&Digests>,
) -> Result<Option<Change>, VolumeError> {
    let Some(found) = found else {
        return Ok((request.state == State::Present).then_some(Change::Build { replacing: false }));
    };
    if request.state == State::Absent {
        return Ok(Some(Change::Remove));
    }
    let volume = format!(
        "volume {} of pod {} version {}",
        request.name, request.pod, request.version
    );
    if let Some(digests) = digests {
        if let Some(change) = data_change(request, found, digests, &volume)? {
            return Ok(Some(change));
        }
    }
    let record = &found.record;
    let settings = &request.settings;
    let mode = settings.mode.is_some_and(|m| m != record.mode);
    let owner = (settings.owner.is_some() && settings.owner != record.owner)
        || (settings.group.is_some() && settings.group != record.group);
    // An owner changed in place would hand setuid bits to whatever the
    // volume holds now, files its services made included: a volume that
    // keeps them is extracted again instead.
    if owner && record.keep_setuid == Some(true) && record.digest.is_some() {
        return rebuild_if_asked(
            request,
            format!(
                "{volume} keeps setuid bits (keep_setuid: true): its owner is changed by \
                 extracting it again, not in place (files its services made must not get \
                 setuid bits of a new owner): set replace: true to do so; nothing was changed"
            ),
        );
    }
    Ok((mode || owner).then_some(Change::Adjust { mode, owner }))
}

/// Whether the archive asks for the volume to be extracted again: other
/// contents, or the same extracted with setuid bits kept or dropped
/// otherwise than asked. `None`: the data is as asked.
fn data_change(
    request: &Request,
    found: &Found,
    digests: &Digests,
    volume: &str,
) -> Result<Option<Change>, VolumeError> {
    let record = &found.record;
    let shown = request
        .data
        .as_ref()
        .map(Location::display)
        .unwrap_or_default();
    if record.digest.as_deref() != Some(digests.sha256.as_str()) {
        // Never extracted into and still empty: filling it loses nothing.
        if record.digest.is_none() && found.empty {
            return Ok(Some(Change::Build { replacing: true }));
        }
        return rebuild_if_asked(
            request,
            format!(
                "{volume} holds {}; the archive {shown} is {}: a deployed version's volume \
                 data is replaced only when asked: set replace: true to replace it (or deploy \
                 the new data with a new version of the pod); nothing was changed",
                match &record.digest {
                    Some(d) => format!("the contents of {d}"),
                    None => "data written since it was created empty".to_owned(),
                },
                digests.sha256
            ),
        );
    }
    // The same archive, extracted keeping or dropping setuid bits
    // otherwise than asked: only extracting it again makes it so.
    let settings = &request.settings;
    if let Some(kept) = record.keep_setuid.filter(|k| *k != settings.keep_setuid) {
        return rebuild_if_asked(
            request,
            format!(
                "{volume} was extracted from {shown} with keep_setuid: {kept}; keep_setuid: {} \
                 means extracting it again, which replaces its contents: set replace: true to \
                 do so; nothing was changed",
                settings.keep_setuid
            ),
        );
    }
    Ok(None)
}

/// Replacing the contents, when the request says `replace`; else refused
/// with `why`.
fn rebuild_if_asked(request: &Request, why: String) -> Result<Option<Change>, VolumeError> {
    if request.replace {
        Ok(Some(Change::Build { replacing: true }))
    } else {
        Err(VolumeError::Refused(Refusal(why)))
    }
}

/// The record the change leads to (for diff and report); `None` when the
/// volume goes.
fn planned_record(
    request: &Request,
    found: Option<&Found>,
    digests: Option<&Digests>,
    change: &Change,
) -> Option<VolumeRecord> {
    let settings = &request.settings;
    match change {
        Change::Remove => None,
        Change::Adjust { .. } => found.map(|f| adjusted(&f.record, settings)),
        Change::Build { .. } => Some(VolumeRecord {
            format: RECORD_FORMAT,
            name: request.name.clone(),
            digest: digests.map(|d| d.sha256.clone()),
            source: request.data.as_ref().map(Location::display),
            entries: 0,
            bytes: 0,
            owner: settings.owner,
            group: settings.group,
            mode: settings.mode.unwrap_or(DEFAULT_MODE),
            created_at: now(),
            keep_setuid: Some(settings.keep_setuid),
            origin: found.and_then(|f| f.record.origin.clone()),
        })
        .map(|mut r| {
            // Counts are known only once extracted.
            if let Some(found) = found.filter(|f| f.record.digest == r.digest) {
                r.entries = found.record.entries;
                r.bytes = found.record.bytes;
            }
            r
        }),
    }
}

fn adjusted(record: &VolumeRecord, settings: &Settings) -> VolumeRecord {
    let mut after = record.clone();
    if let Some(mode) = settings.mode {
        after.mode = mode;
    }
    if settings.owner.is_some() {
        after.owner = settings.owner;
    }
    if settings.group.is_some() {
        after.group = settings.group;
    }
    after
}

/// Names the volume's directory in `staging/` and `trash/`.
fn label(request: &Request) -> String {
    format!(
        "volume-{}-{}-{}",
        request.pod, request.version, request.name
    )
}

/// Carry out a change under the lock; the volume's record after it.
fn apply(
    store: &Store,
    lock: &StoreLock,
    request: &Request,
    dir: &Path,
    found: Option<&Found>,
    change: &Change,
    digests: Option<&Digests>,
) -> Result<Option<VolumeRecord>, VolumeError> {
    store.ensure_layout(lock)?;
    match change {
        Change::Remove => {
            store.throw_away(lock, dir, &label(request))?;
            atomic::remove_dir_if_empty(dir.parent().expect("volumes"))?;
            Ok(None)
        }
        Change::Adjust { owner, .. } => {
            let record = adjusted(
                &found.expect("adjusting a found volume").record,
                &request.settings,
            );
            let data = data_dir(dir);
            if *owner {
                // Live data: the kernel's clearing of setuid bits stands.
                chown_tree(&data, record.owner, record.group, false)?;
            }
            set_top(&data, &record)?;
            write_record(dir, &record)?;
            Ok(Some(record))
        }
        Change::Build { .. } => {
            let staging = store.stage_dir(lock, &label(request), 0o700)?;
            let origin = found.and_then(|f| f.record.origin.clone());
            let result = build_staged(request, &staging, dir, digests, origin);
            let cleaned = store.unstage(lock, &staging);
            let record = result?;
            cleaned?;
            Ok(Some(record))
        }
    }
}

fn build_staged(
    request: &Request,
    staging: &Path,
    dir: &Path,
    planned: Option<&Digests>,
    origin: Option<String>,
) -> Result<VolumeRecord, VolumeError> {
    let archive = match &request.data {
        None => None,
        Some(location) => Some(LocalArchive {
            checksum: request.checksum.clone(),
            planned: planned.map(|d| d.sha256.clone()),
            no_links: false,
            ..fetch(location, request.timeout, staging)?
        }),
    };
    let built = staging.join("volume");
    let record = build_with(
        &built,
        &request.name,
        archive.as_ref(),
        &request.settings,
        Origin::Kept(origin),
    )?;
    install(&built, dir)?;
    Ok(record)
}

/// The archive as a local file: a download lands in `staging` first. Its
/// digests are computed as it is extracted.
pub fn fetch(
    location: &Location,
    timeout: Duration,
    staging: &Path,
) -> Result<LocalArchive, VolumeError> {
    let path = match location {
        Location::Path(p) => p.clone(),
        remote => {
            let target = staging.join("download");
            crate::download::fetch_into(remote, timeout, &target)?;
            target
        }
    };
    Ok(LocalArchive {
        path,
        shown: location.display(),
        checksum: None,
        planned: None,
        no_links: false,
    })
}

/// Give every entry under `top` (and `top`) this owner and group. A change
/// of owner clears setuid and setgid bits; with `restore` (a tree just
/// extracted, whose bits are the archive's) they are put back.
fn chown_tree(
    top: &Path,
    owner: Option<u32>,
    group: Option<u32>,
    restore: bool,
) -> Result<(), FsError> {
    chown_keeping_mode(top, owner, group, restore)?;
    let entries = fs::read_dir(top).map_err(|e| FsError::from_io("read", top, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| FsError::from_io("read", top, e))?;
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(|e| FsError::from_io("read", &path, e))?
            .is_dir();
        if is_dir {
            chown_tree(&path, owner, group, restore)?;
        } else {
            chown_keeping_mode(&path, owner, group, restore)?;
        }
    }
    Ok(())
}

fn chown_keeping_mode(
    path: &Path,
    owner: Option<u32>,
    group: Option<u32>,
    restore: bool,
) -> Result<(), FsError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let meta = fs::symlink_metadata(path).map_err(|e| FsError::from_io("read", path, e))?;
    std::os::unix::fs::lchown(path, owner, group)
        .map_err(|e| FsError::from_io("chown", path, e))?;
    let mode = meta.mode() & 0o7777;
    if !restore || mode & 0o6000 == 0 || !(meta.is_file() || meta.is_dir()) {
        return Ok(());
    }
    // Through the file itself, opened without following a link: a path
    // swapped for a symlink since it was looked at is never chmod-ed.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| FsError::from_io("open", path, e))?;
    let now = file
        .metadata()
        .map_err(|e| FsError::from_io("read", path, e))?;
    if (now.dev(), now.ino()) == (meta.dev(), meta.ino()) {
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| FsError::from_io("chmod", path, e))?;
    }
    Ok(())
}

/// The running units of the version, which had the old contents mounted,
/// and whether the version is current (only then can they be restarted).
struct Users {
    running: Vec<String>,
    current: bool,
}

fn running_users(
    state: &PodState,
    request: &Request,
    systemd: &mut dyn Systemd,
) -> Result<Users, (String, CommandError)> {
    let current = state.current.as_ref() == Some(&request.version);
    let (all, _) = state
        .versions
        .get(&request.version)
        .map(|stored| crate::records::unit_names::version_units(&stored.record.pod))
        .unwrap_or_default();
    if all.is_empty() {
        return Ok(Users {
            running: Vec::new(),
            current,
        });
    }
    let running = systemd
        .show(&all)
        .map_err(|source| (all.join(" "), source))?
        .into_iter()
        .filter(|s| s.active_state().is_running())
        .map(|s| s.unit)
        .collect();
    Ok(Users { running, current })
}

/// What a replace does with the running users, said as an action (their
/// restart) or a warning (a version not current is left running: systemd
/// would stop its units and skip their start, their pivot condition,
/// crate::store::Store::pivot_path, and the restart would look done).
fn restart_said(request: &Request, users: &Users) -> Result<String, String> {
    let units = users.running.join(" ");
    if users.current {
        return Ok(format!("restart {units} to use the new contents"));
    }
    let (verb, them) = match users.running.len() {
        1 => ("runs", "it"),
        _ => ("run", "them"),
    };
    Err(format!(
        "{units} of pod {} version {} still {verb} with the old contents: the version is not \
         current, and only the current version's units start (a restart would stop {them}); \
         stop {them}, or make the version current (ops_pod)",
        request.pod, request.version
    ))
}

/// Check mode's word on the restart a replace would make (systemd is only
/// asked which units run).
fn plan_restart(store: &Store, request: &Request, systemd: &mut dyn Systemd, report: &mut Report) {
    let users = store
        .read_pod(&request.pod)
        .map_err(|e| crate::ansible::error_chain(&e))
        .and_then(|state| {
            running_users(&state, request, systemd)
                .map_err(|(_, source)| crate::ansible::error_chain(&source))
        });
    match users {
        Ok(users) if users.running.is_empty() => {}
        Ok(users) => match restart_said(request, &users) {
            Ok(action) => report.actions.push(action),
            Err(warning) => report.warnings.push(warning),
        },
        Err(why) => report.warnings.push(format!(
            "cannot tell which units of pod {} version {} a replace would restart: {why}",
            request.pod, request.version
        )),
    }
}

/// Units of the version that are running had the old contents mounted
/// (and those are gone now): restart them so they see the new ones.
fn restart_users(
    store: &Store,
    request: &Request,
    systemd: &mut dyn Systemd,
    mut report: Report,
) -> Result<Report, VolumeError> {
    let state = store.read_pod(&request.pod)?;
    let users = match running_users(&state, request, systemd) {
        Ok(users) if users.running.is_empty() => return Ok(report),
        Ok(users) => users,
        Err((units, source)) => return Err(not_restarted(request, units, report, source)),
    };
    let action = match restart_said(request, &users) {
        Ok(action) => action,
        Err(warning) => {
            report.warnings.push(warning);
            return Ok(report);
        }
    };
    // This restart is asked for, not a crash loop: earlier restarts (a play
    // replacing several volumes in a row) must not make systemd refuse it
    // with start-limit-hit.
    systemd.reset_failed(&users.running);
    if let Err(source) = systemd.restart(&users.running, request.timeout) {
        return Err(not_restarted(
            request,
            users.running.join(" "),
            report,
            source,
        ));
    }
    report.actions.push(action);
    Ok(report)
}

fn not_restarted(
    request: &Request,
    units: String,
    report: Report,
    source: CommandError,
) -> VolumeError {
    let after = AfterChanges {
        cause: format!(
            "{units} did not restart: {}",
            crate::ansible::error_chain(&source)
        ),
        outcome: format!(
            "volume {} of pod {} version {} now holds the new contents",
            request.name, request.pod, request.version
        ),
        undone: Vec::new(),
        undo_error: None,
        left: report.actions.clone(),
    };
    VolumeError::AfterChanges {
        after: Box::new(after),
        report: Box::new(report),
    }
}

/// The diff text of a volume that ops_pod creates (or removes) in `pod`,
/// whose images run in `runtime`: where each service sees it, as its
/// drop-in makes it (see `units::volume_lines`). Only a service running in
/// an image of the systemd runtime gets a mount; one on the host gets the
/// path in the environment, and a podman one mounts it itself, if at all.
pub fn pod_diff_text(pod: &Pod, runtime: Runtime, volume: &Volume, path: &Path) -> String {
    let env = env_name(&volume.name);
    let mut text = format!(
        "path: {}\nenvironment: {env}\nread-only: {}\n",
        path.display(),
        if volume.read_only { "yes" } else { "no" }
    );
    let services = |in_image: bool, podman: bool| -> Vec<&str> {
        pod.units
            .iter()
            .filter(|u| u.name.as_str().ends_with(".service"))
            .filter(|u| u.image.is_some() == in_image && (runtime == Runtime::Podman) == podman)
            .map(|u| u.name.as_str())
            .collect()
    };
    let mount = volume.mount.display();
    let lines = [
        (format!("mounted at {mount}"), services(true, false)),
        (
            format!("not mounted by ops (podman: the unit passes -v ${{{env}}}:{mount})"),
            services(true, true),
        ),
        (
            "not mounted (on the host: the unit uses the path)".to_owned(),
            [services(false, false), services(false, true)].concat(),
        ),
    ];
    for (how, units) in lines {
        if !units.is_empty() {
            text.push_str(&format!("{how}: {}\n", units.join(", ")));
        }
    }
    text.push_str(&format!(
        "data: {}\n",
        volume
            .data
            .as_ref()
            .map_or("(empty)".to_owned(), crate::bundle::Source::text)
    ));
    text
}

/// The environment variable naming a volume's host directory.
pub fn env_name(volume: &str) -> String {
    format!(
        "OPS_VOLUME_{}",
        volume.to_ascii_uppercase().replace(['-', '.'], "_")
    )
}

/// What went wrong with one volume of a pod version, as ops_pod reports
/// it: the volume's own error, named, or a refusal of the bundle's data.
#[derive(Debug, thiserror::Error)]
pub enum PodVolumeError {
    #[error("volume {volume} of pod {pod} version {version}")]
    Volume {
        pod: PodName,
        version: Version,
        volume: String,
        #[source]
        source: Box<VolumeError>,
    },
    #[error(transparent)]
    Refused(Refusal),
}

/// ops_pod's look at the volumes of a bundle before it plans anything
/// (check mode included). A version it would add: each archive must start
/// as an archive does ([`decode::check_start`]; the extraction refuses the
/// same way). A version it has (`deployed`): each archive must be the one
/// the version was deployed with, or the one its volume holds now (loaded
/// with ops_volume's `replace`): a version's volume data is as immutable as
/// its unit files, and a changed archive is refused, not ignored.
pub fn check_bundle(
    store: &Store,
    new: &NewVersion,
    deployed: bool,
    timeout: Duration,
) -> Result<(), PodVolumeError> {
    let pod = &new.pod;
    for volume in &pod.volumes {
        let Some(source) = &volume.data else {
            continue;
        };
        let failed = |source: VolumeError| PodVolumeError::Volume {
            pod: pod.name.clone(),
            version: pod.version.clone(),
            volume: volume.name.clone(),
            source: Box::new(source),
        };
        let shown = source.text();
        let location = new
            .locate(source)
            .map_err(|e| failed(VolumeError::Refused(Refusal::new(format!("data: {e}")))))?;
        // A release's archive on a server is not opened here: it is
        // checked against the release's record as it is extracted, and
        // check mode downloads nothing large.
        let recorded_remote = location.is_remote() && new.recorded_sha256(source).is_some();
        if !deployed && !recorded_remote {
            check_archive_start(&location, &shown, timeout).map_err(failed)?;
        }
        if !deployed {
            continue;
        }
        let dir = store.volume_dir(&pod.name, &pod.version, &volume.name);
        let Some(record) = read_record(&dir).map_err(failed)? else {
            // Removed with ops_volume: nothing to compare with.
            continue;
        };
        let Some((deployed_with, digests)) =
            changed_data(&record, &location, &shown, timeout).map_err(failed)?
        else {
            continue;
        };
        let v = &pod.version;
        return Err(PodVolumeError::Refused(Refusal(format!(
            "version {v} of pod {} is already deployed with different data in volume {}: the \
             bundle's {shown} is {}, version {v} was deployed with {deployed_with}{}; versions are \
             immutable: give the bundle a new version, or remove version {v} first (state: \
             absent), or load the new data into the deployed volume with ops_volume (replace: \
             true)",
            pod.name,
            volume.name,
            digests.sha256,
            match &record.digest {
                Some(now) if *now != deployed_with => format!(" and its volume now holds {now}"),
                _ => String::new(),
            }
        ))));
    }
    Ok(())
}

/// What a deployed volume was deployed with and the bundle's archive's
/// digests, when the archive is neither that nor what the volume holds
/// now; `None` when it is, or cannot be told.
fn changed_data(
    record: &VolumeRecord,
    location: &Location,
    shown: &str,
    timeout: Duration,
) -> Result<Option<(String, Digests)>, VolumeError> {
    // A record from before `origin` was kept: the archive it holds, if
    // it is still the bundle's.
    let deployed_with = record.origin.clone().or_else(|| {
        record
            .digest
            .clone()
            .filter(|_| record.source.as_deref() == Some(shown))
    });
    let Some(deployed_with) = deployed_with else {
        return Ok(None);
    };
    // Data behind a URI is taken to be what the version was deployed
    // with, as long as the URI is the same: downloading it again on
    // every rerun would cost each host the whole volume each time.
    if !matches!(location, Location::Path(_)) && record.source.as_deref() == Some(shown) {
        return Ok(None);
    }
    // Only compared, never written.
    let digests = digests_of(location, timeout, &None, None)?;
    if digests.sha256 == deployed_with || Some(&digests.sha256) == record.digest.as_ref() {
        return Ok(None);
    }
    Ok(Some((deployed_with, digests)))
}

/// A pod volume's archive in a bundle, read through as ops_pod would
/// extract it, writing nothing (see [`extract::survey`]): its format,
/// entries and sha256.
pub fn survey_for_pod(path: &Path, shown: &str) -> Result<extract::Surveyed, VolumeError> {
    let archive = extract::Opened {
        file: path,
        shown,
        no_links: false,
    };
    extract::survey(archive, Settings::default().policy())
}

/// [`decode::check_start`] on the first bytes of the archive at
/// `location` (a download is cut off once they are read).
pub(crate) fn check_archive_start(
    location: &Location,
    shown: &str,
    timeout: Duration,
) -> Result<(), VolumeError> {
    let read = match location {
        Location::Path(path) => {
            extract::open_archive(path).and_then(|mut f| decode::read_head(&mut f))
        }
        remote => {
            let mut reader = remote.open(timeout)?;
            decode::read_head(&mut reader)
                .map_err(|e| io::Error::other(crate::download::read_error(remote, e, timeout)))
        }
    };
    let (head, whole) = read.map_err(|e| extract::unusable(shown, e))?;
    decode::check_start(&head, whole).map_err(|e| extract::unusable(shown, e))
}
