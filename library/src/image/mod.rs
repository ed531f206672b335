//! Images: importing a container image into a runtime, verified, and
//! removing it once nothing uses it.
//!
//! - [`archive`]: the one pass over an image file (ACI, OCI or Docker
//!   archive): decompress, hash, unpack, check every digest.
//! - [`identify`]: what an image file is (format, full ids, name) without
//!   unpacking it: ops_release publishing it, ops_pod computing the id
//!   pod.json leaves out.
//! - [`records`]: where images live in the store and ops's record of each.
//! - [`signature`]: detached OpenPGP signatures, checked by `sqv`.
//! - [`podman`]: the podman runtime, behind the [`podman::Podman`]
//!   interface (the `podman` command, or a recording fake in tests).
//!
//! Two runtimes: `systemd` keeps the image's root filesystem in the store
//! for units to run in with `RootDirectory=` (no daemon), `podman` hands
//! the image to podman. Either way an import is staged in `staging/` and
//! becomes visible by one rename once every digest (and the signature,
//! when there is one) has been checked; a failure leaves the store as it
//! was. ops_image and ops_pod both import through [`import`]; the bytes
//! come through `crate::download`, the directories from the store.

pub mod archive;
pub mod identify;

pub mod podman;
pub mod records;
mod signature;
use crate::download::{self, DownloadError};

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::atomic::{self, FsError};
use crate::bundle::ImageId;
use crate::command::CommandError;
use crate::lock::{LockError, StoreLock};
use crate::outcome::{AfterChanges, Refusal};
use crate::store::{Store, StoreError};

pub use crate::download::Location;
pub use crate::records::image::Format;
pub use crate::records::names::same_image;
pub use crate::records::Runtime;
pub use podman::{Podman, PodmanCli};
pub use records::ImageRecord;

fn podman_said(said: &str) -> String {
    if said.is_empty() {
        String::new()
    } else {
        format!(" (podman said: {said})")
    }
}

fn id_kind(id: &str) -> &'static str {
    if id.starts_with("sha512-") {
        "an ACI (sha512-, the digest of the uncompressed image tar)"
    } else {
        "an OCI or Docker image (sha256:, the digest of its config)"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// podman keeps a container made from the image.
    #[error("podman will not remove image {reference}: {detail}")]
    InUse { reference: String, detail: String },
    /// The image or its signature could not be read or downloaded.
    #[error(transparent)]
    Read(#[from] DownloadError),
    #[error("{file} ends early: it is truncated or damaged")]
    Truncated { file: String },
    #[error("cannot unpack {file}")]
    Unpack {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{file} is not an image: it has neither an ACI manifest, an OCI index.json \
         and oci-layout, nor a Docker manifest.json"
    )]
    NotAnImage { file: String },
    #[error("{file} is {}, but the id {id} names {}", format.described(), id_kind(id))]
    WrongFormat {
        file: String,
        format: Format,
        id: String,
    },
    #[error("{file} is not image {expected}: it is {actual}")]
    Mismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{file}: {what} is corrupt: its digest is {actual} where the image says {expected}")]
    Corrupt {
        file: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{file}: {what}")]
    Malformed { file: String, what: String },
    #[error("{} holds image {stored}, not {id} (their first 32 hex digits agree)", path.display())]
    Collision {
        id: String,
        stored: String,
        path: PathBuf,
    },
    #[error("verifying signatures needs sqv (Debian package sqv), which is not installed")]
    NoVerifier,
    #[error("the signature {signature} does not verify image {image} with the given keyring")]
    BadSignature {
        signature: String,
        /// Where the image came from (its URI, not the run's copy).
        image: String,
        #[source]
        source: CommandError,
    },
    #[error("the podman runtime needs podman, which is not installed")]
    NoPodman,
    #[error(transparent)]
    Podman(CommandError),
    #[error(
        "image {id} is used by {} (runtime {runtime}); it can only be removed \
         once no deployed version uses it",
        used_by.join(", ")
    )]
    Referenced {
        id: String,
        runtime: Runtime,
        used_by: Vec<String>,
    },
    /// podman 3 (Debian 11) given a damaged layer exits 0 loading nothing.
    #[error(
        "podman load of {file} did not leave image {id} in podman's storage{}",
        podman_said(said)
    )]
    NotLoaded {
        file: String,
        id: String,
        said: String,
    },
    /// The request cannot be carried out as asked; nothing was changed.
    #[error(transparent)]
    Refused(Refusal),
    /// The import or removal failed after it had changed podman's
    /// storage: the message says what stays changed.
    #[error("{0}")]
    AfterChanges(Box<AfterChanges>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Lock(#[from] LockError),
}

/// Where to get an image and how to trust it.
#[derive(Debug, Clone)]
pub struct Import {
    pub id: ImageId,
    pub source: Location,
    pub signature: Option<Location>,
    pub keyring: Option<PathBuf>,
    pub require_signature: bool,
    /// For downloads.
    pub timeout: Duration,
    /// The URI (credentials hidden) that `source`, a local copy, was
    /// downloaded from (ops_pod computing the id pod.json leaves out): the
    /// action names it rather than the copy.
    pub downloaded_from: Option<String>,
}

impl Import {
    /// What importing it is called in an action.
    pub fn action(&self, runtime: Runtime) -> String {
        match &self.downloaded_from {
            Some(uri) => format!(
                "import image {} from {uri} (the copy downloaded to compute its id) into {runtime}",
                self.id
            ),
            None => import_action(&self.id, &self.source, runtime),
        }
    }

    /// Where the image came from, as errors name it: the URI a copy was
    /// downloaded from, not the copy.
    fn shown(&self) -> String {
        (self.downloaded_from.clone()).unwrap_or_else(|| self.source.display())
    }

    /// The checks that need no download and no reading of the image
    /// whole: done before planning, so check mode refuses what the real
    /// run would refuse by them.
    pub fn check(&self) -> Result<(), ImageError> {
        match (&self.signature, &self.keyring) {
            (Some(_), None) => {
                return Err(ImageError::Refused(Refusal(format!(
                    "image {}: a signature is given but no keyring to check it with",
                    self.id
                ))))
            }
            (None, _) if self.require_signature => {
                return Err(ImageError::Refused(Refusal(format!(
                    "image {}: require_signature is set but the image has no signature",
                    self.id
                ))))
            }
            _ => {}
        }
        if let Some(keyring) = &self.keyring {
            Location::Path(keyring.clone()).check()?;
        }
        if let Some(signature) = &self.signature {
            signature.check()?;
        }
        // A local image's first bytes say whether it can be a tar at all:
        // check mode refuses a file the run would refuse, without reading
        // it whole (its digest is known only then).
        if let Location::Path(path) = &self.source {
            let looked = crate::atomic::open_regular(path)
                .and_then(|mut file| crate::decode::read_head(&mut file))
                .and_then(|(head, whole)| crate::decode::check_start(&head, whole));
            looked.map_err(|source| DownloadError::Source {
                location: self.source.display(),
                source,
            })?;
        }
        // A local image with a local signature is checked now, before any
        // lock or staging (and in check mode too); remote ones once
        // downloaded.
        if let (Location::Path(data), Some(Location::Path(sig)), Some(keyring)) =
            (&self.source, &self.signature, &self.keyring)
        {
            let named = sig.display().to_string();
            signature::verify(data, sig, &named, &self.shown(), keyring, self.timeout)?;
        }
        Ok(())
    }

    /// Whether [`Import::check`] verified the signature already.
    fn signature_checked(&self) -> bool {
        matches!(
            (&self.source, &self.signature),
            (Location::Path(_), Some(Location::Path(_)))
        )
    }
}

/// The image's record if the runtime really has it.
pub fn present(
    store: &Store,
    runtime: Runtime,
    id: &ImageId,
    podman: &mut dyn Podman,
) -> Result<Option<ImageRecord>, ImageError> {
    let Some(record) = records::read(store, runtime, id)? else {
        return Ok(None);
    };
    let there = match runtime {
        Runtime::Systemd => records::rootfs(store, id).is_dir(),
        Runtime::Podman => podman.exists(&record.location)?,
    };
    Ok(there.then_some(record))
}

/// Pod versions (`pod/version`) in the store that use the image in this
/// runtime.
pub fn used_by(store: &Store, runtime: Runtime, id: &ImageId) -> Result<Vec<String>, ImageError> {
    let mut users = Vec::new();
    for name in store.pod_names()? {
        let state = store.read_pod(&name)?;
        for (version, stored) in &state.versions {
            let record = &stored.record;
            if record.runtime == runtime && record.pod.images.iter().any(|i| same_image(&i.id, id))
            {
                users.push(format!("{name}/{version}"));
            }
        }
    }
    Ok(users)
}

/// Import an image (under the store lock), once [`Import::check`] has
/// passed. Everything is staged; on failure the staging is removed and the
/// store is as it was. podman's storage may not be: a failure after podman
/// took or dropped an image is [`ImageError::AfterChanges`], saying so.
pub fn import(
    store: &Store,
    lock: &StoreLock,
    runtime: Runtime,
    spec: &Import,
    podman: &mut dyn Podman,
) -> Result<ImageRecord, ImageError> {
    let label = format!("image-{}", records::dir_name(&spec.id));
    let staging = store.stage_dir(lock, &label, 0o700)?;
    let result = import_staged(store, lock, runtime, spec, &staging, podman);
    let cleaned = store.unstage(lock, &staging);
    let record = result?;
    cleaned?;
    Ok(record)
}

fn import_staged(
    store: &Store,
    lock: &StoreLock,
    runtime: Runtime,
    spec: &Import,
    staging: &Path,
    podman: &mut dyn Podman,
) -> Result<ImageRecord, ImageError> {
    // podman reads from files.
    let podman_loads = runtime == Runtime::Podman && matches!(spec.id, ImageId::Sha256(_));
    let local = local_copy(spec, staging, podman_loads)?;
    check_signature(spec, local.as_deref(), staging)?;
    let work = staging.join("image");
    atomic::create_dir_all(&work, 0o755)?;
    match runtime {
        Runtime::Systemd => {
            let record = unpack_into_store(store, spec, local.as_deref(), &work)?;
            // One sync for the whole unpacked tree instead of one per
            // file, then the rename that makes it visible. (Starting each
            // file's writeback as it was written, with
            // POSIX_FADV_DONTNEED, made the import slower on the
            // benchmark's disk: 5.6 s against 4.6 s; the kernel's own
            // writeback batches better.)
            atomic::sync_filesystem(&work)?;
            commit(store, lock, runtime, &spec.id, &work)?;
            Ok(record)
        }
        Runtime::Podman => {
            // The work holds only the record, synced by its atomic write.
            let mut changed = Vec::new();
            import_into_podman(spec, local.as_deref(), staging, podman, &mut changed)
                .and_then(|record| {
                    records::write(&work, &record)?;
                    commit(store, lock, runtime, &spec.id, &work)?;
                    Ok(record)
                })
                .map_err(|error| {
                    let outcome = format!("the import of image {} into podman stopped", spec.id);
                    after_podman_changes(error, outcome, changed)
                })
        }
    }
}

/// The image as a file, when it must be one: a signature covers the
/// file's bytes and is checked over the whole file before a byte of it is
/// unpacked, so a remote signed image is downloaded first and then read
/// from the copy the signature was checked on; `podman load` reads a file.
fn local_copy(
    spec: &Import,
    staging: &Path,
    needs_file: bool,
) -> Result<Option<PathBuf>, ImageError> {
    match &spec.source {
        Location::Path(path) => Ok(Some(path.clone())),
        remote if needs_file || spec.signature.is_some() => {
            let target = staging.join("download");
            download::fetch_into(remote, spec.timeout, &target)?;
            Ok(Some(target))
        }
        _ => Ok(None),
    }
}

/// Check the signature over the image file, unless [`Import::check`] did.
fn check_signature(spec: &Import, local: Option<&Path>, staging: &Path) -> Result<(), ImageError> {
    let (Some(signature), Some(keyring), false) =
        (&spec.signature, &spec.keyring, spec.signature_checked())
    else {
        return Ok(());
    };
    let sig_path = match signature {
        Location::Path(p) => p.clone(),
        remote => {
            let target = staging.join("signature");
            download::fetch_into(remote, spec.timeout, &target)?;
            target
        }
    };
    let data = local.expect("a signed image is read from a file");
    let (named, image) = (signature.display(), spec.shown());
    signature::verify(data, &sig_path, &named, &image, keyring, spec.timeout).map(drop)
}

/// The image's bytes: from the local copy if there is one, else streamed.
fn open_image(spec: &Import, local: Option<&Path>) -> Result<Box<dyn io::Read + Send>, ImageError> {
    match local {
        Some(path) => Location::Path(path.to_owned()).open(spec.timeout),
        None => spec.source.open(spec.timeout),
    }
    .map_err(ImageError::from)
}

/// The systemd runtime: unpack the root filesystem into `work`, with the
/// record beside it.
fn unpack_into_store(
    store: &Store,
    spec: &Import,
    local: Option<&Path>,
    work: &Path,
) -> Result<ImageRecord, ImageError> {
    let name = spec.source.display();
    let unpacked = archive::unpack(open_image(spec, local)?, &name, &spec.id, work)
        .map_err(|e| remote_error(&spec.source, spec.timeout, e))?;
    atomic::remove_tree(&work.join("layers"))?;
    let record = ImageRecord {
        format: records::RECORD_FORMAT,
        id: unpacked.id,
        image_format: unpacked.format,
        runtime: Runtime::Systemd,
        location: records::location(store, Runtime::Systemd, &spec.id),
        size: unpacked.size,
        imported_at: crate::clock::now(),
    };
    records::write(work, &record)?;
    Ok(record)
}

/// The podman runtime: hand the image to podman; its record, not yet
/// written, is returned. What podman was made to change is pushed on
/// `changed` as it happens.
fn import_into_podman(
    spec: &Import,
    local: Option<&Path>,
    staging: &Path,
    podman: &mut dyn Podman,
    changed: &mut Vec<String>,
) -> Result<ImageRecord, ImageError> {
    let reference = records::podman_reference(&spec.id);
    let (id, format) = match &spec.id {
        ImageId::Sha512(_) => {
            import_aci(spec, local, &staging.join("rootfs.tar"), podman, changed)?
        }
        ImageId::Sha256(_) => {
            let file = local.expect("podman loads from a file");
            load_archive(spec, file, podman, changed)?
        }
    };
    let size = podman.size(&reference)?;
    Ok(ImageRecord {
        format: records::RECORD_FORMAT,
        id,
        image_format: format,
        runtime: Runtime::Podman,
        size,
        location: reference,
        imported_at: crate::clock::now(),
    })
}

/// An ACI into podman: its root filesystem rewritten to a plain tar (and
/// hashed on the way), then `podman import`ed under ops's tag, replacing
/// what an earlier import left under it.
fn import_aci(
    spec: &Import,
    local: Option<&Path>,
    tar: &Path,
    podman: &mut dyn Podman,
    changed: &mut Vec<String>,
) -> Result<(String, Format), ImageError> {
    let name = spec.source.display();
    let reference = records::podman_reference(&spec.id);
    let (id, app, _) = archive::aci_rootfs_tar(open_image(spec, local)?, &name, &spec.id, tar)
        .map_err(|e| remote_error(&spec.source, spec.timeout, e))?;
    if podman.exists(&reference)? {
        podman.remove(&reference)?;
        changed.push(format!(
            "removed image {reference} from podman (an earlier import's, which ops had no \
             record of)"
        ));
    }
    podman.import(tar, &reference, &app)?;
    changed.push(format!(
        "podman has image {reference}, imported from {name}"
    ));
    Ok((id, Format::Aci))
}

/// An OCI or Docker archive into podman: ops checks that it holds the
/// image asked for, `podman load` checks its layers.
fn load_archive(
    spec: &Import,
    file: &Path,
    podman: &mut dyn Podman,
    changed: &mut Vec<String>,
) -> Result<(String, Format), ImageError> {
    let name = spec.source.display();
    let (format, ids) = archive::identify(file, &name)?;
    let want = spec.id.to_string();
    if format == Format::Aci {
        return Err(ImageError::WrongFormat {
            file: name,
            format,
            id: want,
        });
    }
    if !ids.contains(&want) {
        return Err(ImageError::Mismatch {
            file: name,
            expected: want,
            actual: ids.join(", "),
        });
    }
    let said = podman.load(file)?;
    let reference = records::podman_reference(&spec.id);
    if !podman.exists(&reference)? {
        return Err(ImageError::NotLoaded {
            file: name,
            id: want,
            said,
        });
    }
    changed.push(format!("podman has image {want}, loaded from {name}"));
    Ok((want, format))
}

/// Make a staged image (and its record) visible in the store.
fn commit(
    store: &Store,
    lock: &StoreLock,
    runtime: Runtime,
    id: &ImageId,
    work: &Path,
) -> Result<(), ImageError> {
    let target = records::image_dir(store, runtime, id);
    store.ensure_layout(lock)?;
    if target.exists() {
        remove_dir(store, lock, &target)?;
    }
    atomic::create_dir_all(&store.images_dir(runtime), 0o755)?;
    atomic::rename(work, &target)?;
    Ok(())
}

/// A failure after podman's storage was changed says what stays changed
/// and that ops has no record of it (the store is as it was).
fn after_podman_changes(error: ImageError, outcome: String, changed: Vec<String>) -> ImageError {
    if changed.is_empty() {
        return error;
    }
    ImageError::AfterChanges(Box::new(AfterChanges {
        cause: crate::ansible::error_chain(&error),
        outcome: format!("{outcome}; ops's records are as they were"),
        undone: Vec::new(),
        undo_error: None,
        left: changed,
    }))
}

/// A read error from a download says so.
fn remote_error(source: &Location, timeout: Duration, error: ImageError) -> ImageError {
    match (source, error) {
        (
            Location::Http(uri),
            ImageError::Unpack { source, .. }
            | ImageError::Read(DownloadError::Source { source, .. }),
        ) if is_transfer_error(&source) => ImageError::Read(DownloadError::Download {
            uri: crate::records::uri::redact(uri).into_owned(),
            reason: download::transfer_failure(&source, timeout),
        }),
        (_, e) => e,
    }
}

fn is_transfer_error(e: &io::Error) -> bool {
    download::download_error(e).is_some()
        || matches!(
            e.kind(),
            io::ErrorKind::TimedOut
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
        )
}

/// Move an image's directory out of sight, then delete it.
fn remove_dir(store: &Store, lock: &StoreLock, dir: &Path) -> Result<(), FsError> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    store.throw_away(lock, dir, &format!("image-{name}"))
}

/// Remove an image from its runtime and the store (under the lock).
pub fn remove(
    store: &Store,
    lock: &StoreLock,
    runtime: Runtime,
    id: &ImageId,
    podman: &mut dyn Podman,
) -> Result<(), ImageError> {
    let mut changed = Vec::new();
    if runtime == Runtime::Podman {
        let reference = records::podman_reference(id);
        if podman.exists(&reference)? {
            podman.remove(&reference)?;
            changed.push(format!("removed image {reference} from podman"));
        }
    }
    remove_record(store, lock, runtime, id).map_err(|error| {
        let outcome = format!("the removal of image {id} stopped");
        after_podman_changes(error, outcome, changed)
    })
}

/// Remove an image's directory (record and root filesystem) from the store.
fn remove_record(
    store: &Store,
    lock: &StoreLock,
    runtime: Runtime,
    id: &ImageId,
) -> Result<(), ImageError> {
    let dir = records::image_dir(store, runtime, id);
    if dir.exists() {
        remove_dir(store, lock, &dir)?;
    }
    Ok(store.remove_images_dir_if_empty(lock, runtime)?)
}

/// What ops_image should make true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Present,
    Absent,
}

/// An ops_image request.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: ImageId,
    pub source: Option<Location>,
    pub signature: Option<Location>,
    pub keyring: Option<PathBuf>,
    pub require_signature: bool,
    pub runtime: Runtime,
    pub state: State,
    pub timeout: Duration,
    pub root: PathBuf,
    pub lock_timeout: Duration,
}

/// What ops_image did (or would do).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub changed: bool,
    pub id: String,
    pub runtime: Runtime,
    pub format: Option<Format>,
    pub location: String,
    pub size: Option<u64>,
    pub used_by: Vec<String>,
    pub actions: Vec<String>,
    pub diff: Vec<Value>,
}

/// The diff entry of an image appearing or going.
pub fn diff_entry(id: &str, runtime: Runtime, location: &str, before: bool, after: bool) -> Value {
    let text = format!("image: {id}\nruntime: {runtime}\nlocation: {location}\n");
    json!({
        "before_header": format!("image {id} ({runtime})"),
        "after_header": format!("image {id} ({runtime})"),
        "before": if before { text.clone() } else { String::new() },
        "after": if after { text } else { String::new() },
    })
}

pub fn import_action(id: &ImageId, source: &Location, runtime: Runtime) -> String {
    format!("import image {id} from {} into {runtime}", source.display())
}

pub fn remove_action(id: &ImageId, runtime: Runtime) -> String {
    format!("remove image {id} from {runtime}")
}

/// What ops_image is about to do.
#[derive(Debug)]
enum Change {
    Import(Import),
    Remove,
}

fn refuse_if_used(
    store: &Store,
    runtime: Runtime,
    id: &ImageId,
    shown: &str,
) -> Result<(), ImageError> {
    let users = used_by(store, runtime, id)?;
    if users.is_empty() {
        Ok(())
    } else {
        Err(ImageError::Referenced {
            id: shown.to_owned(),
            runtime,
            used_by: users,
        })
    }
}

/// ops_image: bring one image to `state` in a runtime. The plan is made
/// without the lock (a no-op, a refusal and check mode take none), then
/// made again under it, where another run may have done the work already.
pub fn run(
    request: &Request,
    podman: &mut dyn Podman,
    check: bool,
    want_diff: bool,
) -> Result<Report, ImageError> {
    let store = Store::new(&request.root);
    store.check_layout()?;
    let runtime = request.runtime;
    let id = &request.id;
    let mut report = Report {
        id: id.to_string(),
        runtime,
        location: records::location(&store, runtime, id),
        used_by: used_by(&store, runtime, id)?,
        ..Report::default()
    };
    let Some(change) = plan(request, &store, &mut report, true, podman)? else {
        if !check {
            store.sweep_leftovers(request.lock_timeout, &format!("ops_image {id}"))?;
        }
        return Ok(report);
    };
    report.changed = true;
    let (action, before, after) = match &change {
        Change::Import(spec) => (import_action(id, &spec.source, runtime), false, true),
        Change::Remove => (remove_action(id, runtime), true, false),
    };
    report.actions.push(action);
    if want_diff {
        report.diff.push(diff_entry(
            &report.id,
            runtime,
            &report.location,
            before,
            after,
        ));
    }
    if check {
        return Ok(report);
    }
    let lock = StoreLock::acquire(
        &request.root,
        request.lock_timeout,
        &format!("ops_image {id}"),
    )?;
    // What a killed run left half-written goes before anything is read.
    store.sweep_stale_temps(&lock)?;
    let mut again = report.clone();
    match plan(request, &store, &mut again, false, podman)? {
        None => {
            // Another run did it while this one waited for the lock.
            again.changed = false;
            return Ok(again);
        }
        Some(Change::Import(spec)) => {
            let record = import(&store, &lock, runtime, &spec, podman)?;
            describe(&mut report, &record);
        }
        Some(Change::Remove) => {
            refuse_if_used(&store, runtime, id, &report.id)?;
            remove(&store, &lock, runtime, id, podman)?;
        }
    }
    Ok(report)
}

fn describe(report: &mut Report, record: &ImageRecord) {
    report.id.clone_from(&record.id);
    report.format = Some(record.image_format);
    report.location.clone_from(&record.location);
    report.size = Some(record.size);
}

/// What the request needs done, if anything; refusals are made here.
/// `check_import` runs the import's checks (files there, the signature):
/// once per run is enough.
fn plan(
    request: &Request,
    store: &Store,
    report: &mut Report,
    check_import: bool,
    podman: &mut dyn Podman,
) -> Result<Option<Change>, ImageError> {
    let (runtime, id) = (request.runtime, &request.id);
    let found = present(store, runtime, id, podman)?;
    match request.state {
        State::Present => {
            if let Some(record) = &found {
                describe(report, record);
                return Ok(None);
            }
            let Some(source) = &request.source else {
                return Err(ImageError::Refused(Refusal(format!(
                    "image {id} is not in the {runtime} runtime, and neither path nor uri says where to get it"
                ))));
            };
            let spec = Import {
                id: id.clone(),
                source: source.clone(),
                signature: request.signature.clone(),
                keyring: request.keyring.clone(),
                require_signature: request.require_signature,
                timeout: request.timeout,
                downloaded_from: None,
            };
            if check_import {
                spec.check()?;
            }
            Ok(Some(Change::Import(spec)))
        }
        State::Absent => {
            // A record without the image behind it is removed too.
            let Some(record) = found.or(records::read(store, runtime, id)?) else {
                return Ok(None);
            };
            describe(report, &record);
            refuse_if_used(store, runtime, id, &record.id)?;
            Ok(Some(Change::Remove))
        }
    }
}
