//! ops_pod's work: bring a pod to a state on the host.
//!
//! A run goes in three stages: [`observe`] gathers everything the plan
//! needs from the host (store, unit directory, systemd, ports, images, the
//! unit files verified by `verify`) into one value; [`plan`] turns the
//! request and that value into steps ([`step::Step`]), with no I/O of its
//! own, and `planted` refuses a symlink ops did not make on any path the
//! steps would write; and, unless the plan is empty or this is check mode,
//! the store lock is taken, the host observed and planned again (another
//! run may have changed it meanwhile) and the steps applied ([`apply`];
//! `up` watches a started version come up). A plan refused without the
//! lock is made again under it before the refusal counts: another run may
//! have been half-way. Nothing in the store or the unit directory is
//! written before the lock is held, so a refused or no-op request leaves
//! them byte-identical, and check mode is the plan alone.
//!
//! An image pod.json gives by URI without an id is the one thing a real
//! run fetches before the plan it applies: under the lock, into
//! `staging/downloads/`, its id computed from that copy (part of looking at
//! the host: the plan stays pure and sees every id, the record gets the
//! real one). Check mode downloads nothing and plans with the id unknown.

mod apply;
mod observe;
mod plan;
mod planted;
mod step;
mod up;
pub mod validate;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::atomic::FsError;
use crate::bundle::{self, BundleError, PodName, Version};
use crate::image::Podman;
use crate::image::{ImageError, Runtime};
use crate::lock::{LockError, StoreLock};
use crate::outcome::{AfterChanges, Refusal};
use crate::store::{self, NewVersion, PodState, Store, StoreError};
use crate::systemd::{CommandError, Systemd};
use crate::units::{self, UnitsError};

use observe::{observe, Observed};

/// What the version should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Present,
    Started,
    Stopped,
    Restarted,
    Absent,
    /// Stopped, its ports armed: a connection starts it again.
    Idle,
}

impl State {
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "present" => State::Present,
            "started" => State::Started,
            "stopped" => State::Stopped,
            "restarted" => State::Restarted,
            "absent" => State::Absent,
            "idle" => State::Idle,
            _ => return None,
        })
    }
}

/// A validated ops_pod request.
#[derive(Debug, Clone)]
pub struct Request {
    pub bundle: Option<PathBuf>,
    /// A version published in a release repository, instead of a bundle.
    pub repo: Option<crate::repository::Wanted>,
    /// The pod on the host: with a bundle, the deployment's name (the
    /// bundle's own name when left out).
    pub name: Option<PodName>,
    /// The pod's name in the bundle or the repository (`None`: `name`).
    pub bundle_name: Option<PodName>,
    pub version: Option<Version>,
    pub state: State,
    pub keep: Option<usize>,
    /// Secret environment; `None` leaves the version's as it is.
    pub env: Option<BTreeMap<String, String>>,
    pub root: PathBuf,
    pub unit_dir: PathBuf,
    pub start_timeout: Duration,
    /// How long started units must stay up, without restarting, to count
    /// as up (within `start_timeout`): a service that dies right after
    /// starting is caught. Zero takes systemd's word (active, or ready).
    pub min_up_time: Duration,
    pub rollback: bool,
    pub lock_timeout: Duration,
    /// Where the pod's images go; `None`: where the version's went (the
    /// systemd runtime for a new version).
    pub runtime: Option<Runtime>,
    /// Trusted keys for the images' signatures.
    pub keyring: Option<PathBuf>,
    pub require_signature: bool,
    /// For image downloads.
    pub download_timeout: Duration,
    /// Ports laid over the bundle's (by name), before it is deployed.
    pub ports: Option<Vec<bundle::Port>>,
    /// Where assigned ports come from.
    pub port_range: crate::ports::PortRange,
    /// A connection came to an idle pod's port (the waker's run): start
    /// its current version as `state: started` does, only if the pod is
    /// idle, and record when it was woken.
    pub wake: bool,
}

/// What a run did (or, in check mode, would do).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub changed: bool,
    pub name: Option<PodName>,
    pub version: Option<Version>,
    pub current: Option<Version>,
    pub previous: Option<Version>,
    pub actions: Vec<String>,
    /// Ansible diff entries.
    pub diff: Vec<Value>,
    pub warnings: Vec<String>,
    /// The pod as ops_facts reports it, after the run.
    pub pod: Value,
    /// The pod's ports after the run (in check mode: as they would be).
    pub ports: Vec<Value>,
    /// The version `tip` named, when a repository's tip was asked for.
    pub tip: Option<Version>,
    /// Where the version was read from, when it came from a repository.
    pub release: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The request cannot be carried out as asked; nothing was changed.
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Repository(#[from] crate::repository::RepositoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Units(#[from] UnitsError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Systemd(#[from] CommandError),
    #[error("the unit files of version {version} of pod {pod} are not valid")]
    Invalid {
        pod: PodName,
        version: Version,
        #[source]
        source: CommandError,
    },
    /// The started version did not come up: why, with its unit's journal
    /// lines. Reported inside [`PodError::AfterChanges`].
    #[error("{0}")]
    NotUp(String),
    /// The run failed after it had changed the host: unlike the errors
    /// above (found before anything was written), the message says what
    /// was undone and what stays changed, and the report's `changed` says
    /// whether anything does.
    #[error("{0}")]
    AfterChanges(Box<AfterChanges>),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Ports(#[from] crate::ports::PortError),
    #[error(transparent)]
    Volume(#[from] crate::volume::PodVolumeError),
}

/// A failed run: the error and what had been done.
#[derive(Debug)]
pub struct Failed {
    pub error: PodError,
    pub report: Report,
}

impl From<PodError> for Box<Failed> {
    fn from(error: PodError) -> Box<Failed> {
        Box::new(Failed {
            error,
            report: Report::default(),
        })
    }
}

/// Every runnable unit of a stored version, and those ops starts (none
/// for a version not in `state`).
pub(crate) fn version_units(state: &PodState, version: &Version) -> (Vec<String>, Vec<String>) {
    state
        .versions
        .get(version)
        .map(|stored| crate::records::unit_names::version_units(&stored.record.pod))
        .unwrap_or_default()
}

/// The pod's own target and slice.
pub(crate) fn pod_units(name: &PodName) -> [String; 2] {
    [units::target_name(name), units::slice_name(name)]
}

/// Read a bundle into the version it would add.
pub(crate) fn load_bundle(path: &Path, request: &Request) -> Result<NewVersion, PodError> {
    let bundle = bundle::load(path)?;
    let fetched = fetch_unit_files(&bundle.pod, request)?;
    let recorded = recorded_images(&bundle, request)?;
    new_version(bundle, None, fetched, &recorded)
}

/// The ids the store recorded for the images this version, already
/// stored, computed from a URI (pod.json giving none), by the URI as
/// recorded (credentials hidden): as a volume's archive, the same URI
/// counts as the same image, so a rerun downloads nothing.
fn recorded_images(
    bundle: &bundle::Bundle,
    request: &Request,
) -> Result<Vec<(String, bundle::ImageId)>, PodError> {
    let by_uri = |p: &bundle::PendingImage| matches!(p.source, bundle::Source::Uri(_));
    if !bundle.pending.iter().any(by_uri) {
        return Ok(Vec::new());
    }
    let pod = &bundle.pod;
    let stored = Store::new(&request.root).read_version(&pod.name, &pod.version)?;
    Ok(stored
        .into_iter()
        .flat_map(|s| s.record.pod.images)
        .filter(|i| i.computed)
        .filter_map(|i| match i.source {
            bundle::Source::Uri(uri) => Some((uri, i.id)),
            bundle::Source::Path(_) => None,
        })
        .collect())
}

/// The most a unit file given by URI may hold: unit files are small; this
/// bounds what a wrong URI makes ops read.
const MAX_UNIT_FILE: u64 = 1 << 20;

/// The texts of the unit files the bundle gives by URI. The store's copy
/// when it holds this version with the unit from the same URI (as a
/// volume's archive, the same URI counts as the same content: a rerun
/// fetches nothing); else fetched, in check mode too (a unit file is small,
/// as ops_pod fetches a release's over HTTP to plan), at most 1 MiB.
fn fetch_unit_files(
    pod: &bundle::Pod,
    request: &Request,
) -> Result<BTreeMap<bundle::UnitName, String>, PodError> {
    let mut texts = BTreeMap::new();
    let by_uri: Vec<_> = pod.units.iter().filter(|u| u.uri.is_some()).collect();
    if by_uri.is_empty() {
        return Ok(texts);
    }
    let stored = Store::new(&request.root).read_version(&pod.name, &pod.version)?;
    for unit in by_uri {
        let uri = unit.uri.as_deref().unwrap_or_default();
        let pinned = stored.as_ref().and_then(|s| {
            let same = s.record.pod.units.iter().any(|u| {
                u.name == unit.name && u.uri.as_deref() == Some(&crate::records::uri::redact(uri))
            });
            same.then(|| s.units.get(&unit.name)).flatten()
        });
        let text = match pinned {
            Some(text) => text.clone(),
            None => fetch_unit_file(uri, request.download_timeout)?,
        };
        texts.insert(unit.name.clone(), text);
    }
    Ok(texts)
}

fn fetch_unit_file(uri: &str, timeout: Duration) -> Result<String, PodError> {
    use std::io::Read;
    let shown = crate::records::uri::redact(uri).into_owned();
    let location = crate::download::Location::parse_uri(uri)
        .map_err(|e| Refusal(format!("unit file {shown}: {e}")))?;
    let mut bytes = Vec::new();
    location
        .open(timeout)
        .and_then(|r| {
            r.take(MAX_UNIT_FILE + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| crate::download::read_error(&location, e, timeout))
        })
        .map_err(|e| Refusal(format!("unit file {}", crate::ansible::error_chain(&e))))?;
    if bytes.len() as u64 > MAX_UNIT_FILE {
        return Err(Refusal(format!(
            "unit file {shown} is larger than 1 MiB: no unit file is; refused"
        ))
        .into());
    }
    String::from_utf8(bytes)
        .map_err(|_| Refusal(format!("unit file {shown}: a unit file must be UTF-8 text")).into())
}

/// A plain bundle's file met a symlink at `link` when it was read for the
/// store: not there when the bundle was validated.
fn changed_bundle(path: &Path, link: &Path) -> Refusal {
    let at = if link == path {
        link.display().to_string()
    } else {
        format!("{}: {}", path.display(), link.display())
    };
    Refusal(format!(
        "{at} is a symlink now, not what the bundle was validated with (the bundle changed \
         while ops read it); refusing to follow it"
    ))
}

/// The version a bundle (read from `origin`, when it is a release) would
/// add.
fn new_version(
    bundle: bundle::Bundle,
    origin: Option<crate::repository::Origin>,
    mut fetched: BTreeMap<bundle::UnitName, String>,
    recorded: &[(String, bundle::ImageId)],
) -> Result<NewVersion, PodError> {
    // A plain bundle's paths were resolved when it was validated (each a
    // regular file inside its directory, canonical): a unit file is read
    // without following a link, once, and those bytes are what is
    // installed. A link there now was put there since (by the bundle's
    // owner, between validation and this read), and could lead to a file
    // only root may read. A release's pod directory links to its files.
    let plain = origin.is_none();
    let read = |p: &Path| {
        let bytes = if plain {
            crate::atomic::read_own(p, bundle::MAX_MANIFEST)
        } else {
            crate::atomic::read_regular(p, bundle::MAX_MANIFEST)
        };
        bytes.map_err(|e| FsError::from_io("read", p, e))
    };
    // The bytes validated, not a second read of pod.json.
    let pod_json = bundle.text.clone();
    let mut texts = BTreeMap::new();
    for unit in &bundle.pod.units {
        if let Some(text) = fetched.remove(&unit.name) {
            texts.insert(unit.name.clone(), text);
            continue;
        }
        let path = bundle.dir.join(&unit.file);
        let bytes = match read(&path) {
            Err(e) if plain => match crate::atomic::planted_link_of(&e.source) {
                Some(link) => return Err(changed_bundle(&path, link).into()),
                None => return Err(e.into()),
            },
            read => read?,
        };
        let text = String::from_utf8(bytes).map_err(|_| {
            Refusal(format!(
                "{}: a unit file must be UTF-8 text",
                path.display()
            ))
        })?;
        texts.insert(unit.name.clone(), text);
    }
    let mut pod = bundle.pod;
    let mut unit_sources = BTreeMap::new();
    for unit in &mut pod.units {
        let source = match &unit.uri {
            Some(uri) => crate::records::uri::redact(uri).into_owned(),
            None => match &origin {
                Some(origin) => (origin
                    .locate(&bundle::Source::Path(unit.file.clone()), &bundle.dir))
                .map_or_else(|_| unit.file.display().to_string(), |l| l.display()),
                None => bundle.dir.join(&unit.file).display().to_string(),
            },
        };
        unit_sources.insert(unit.name.clone(), source);
        unit.file = Path::new("units").join(unit.name.as_str());
    }
    let mut unresolved = Vec::new();
    for pending in &bundle.pending {
        // Its messages name the file and the field.
        let pending = &bundle::PendingImage {
            at: format!("{}: {}", bundle.manifest.display(), pending.at),
            ..pending.clone()
        };
        match &pending.source {
            bundle::Source::Path(path) => {
                let shown = format!("{:?}", path.display().to_string());
                let at = format!("{}.path", pending.at);
                let id = computed_id(&bundle.dir.join(path), &shown, &at)?;
                computed_image(&mut pod, pending, id)?;
            }
            bundle::Source::Uri(uri) => {
                let shown = crate::records::uri::redact(uri);
                match recorded.iter().find(|(recorded, _)| *recorded == shown) {
                    Some((_, id)) => computed_image(&mut pod, pending, id.clone())?,
                    None => unresolved.push(pending.clone()),
                }
            }
        }
    }
    let digest = store::digest(&pod, &texts);
    Ok(NewVersion {
        bundle_dir: bundle.dir.clone(),
        origin,
        pod,
        pod_json,
        units: texts,
        unit_sources,
        digest,
        unresolved,
        downloaded: BTreeMap::new(),
    })
}

/// The id of the image file at `path` (`shown` names it, `at` is its field
/// in pod.json), computed as ops_release does: read only, one image.
fn computed_id(path: &Path, shown: &str, at: &str) -> Result<bundle::ImageId, Refusal> {
    let identified =
        crate::image::identify::identify(path, shown).map_err(|e| Refusal(format!("{at}: {e}")))?;
    match identified.ids.as_slice() {
        [one] => bundle::ImageId::parse(one).map_err(|e| Refusal(format!("{at}: {e}"))),
        ids => Err(Refusal(format!(
            "{at}: image {shown} holds {} images ({}): give the id of the one to run",
            ids.len(),
            ids.join(", ")
        ))),
    }
}

/// An image pod.json gives no id, with the id computed from its file (a
/// bundle's, read in check mode too; a URI's, downloaded by a real run) or
/// recorded for its URI: put in the pod's images and given to the units
/// that name it. The same file gives the same id, so a rerun of a stored
/// version is the same version.
fn computed_image(
    pod: &mut bundle::Pod,
    pending: &bundle::PendingImage,
    id: bundle::ImageId,
) -> Result<(), Refusal> {
    let shown = pending.source.text();
    if let Some(other) = pod
        .images
        .iter()
        .find(|i| crate::records::names::same_image(&i.id, &id))
    {
        return Err(Refusal(format!(
            "{}: image {shown} is {id}, which the pod lists already as {}",
            pending.at,
            other.source.text()
        )));
    }
    for &unit in &pending.units {
        pod.units[unit].image = Some(id.clone());
    }
    pod.images.push(bundle::Image {
        id,
        source: pending.source.clone(),
        signature: pending.signature.clone(),
        computed: true,
    });
    Ok(())
}

/// What a real run downloads before it plans: the images of a version it
/// would add whose ids pod.json leaves out and the store has no record of
/// (a version stored already is refused by the plan, its content
/// differing: nothing to download for that).
fn must_download(store: &Store, request: &Request, new: &NewVersion) -> Result<bool, PodError> {
    Ok(!new.unresolved.is_empty()
        && request.state != State::Absent
        && store
            .read_version(&new.pod.name, &new.pod.version)?
            .is_none())
}

/// Download (under the lock, into [`Store::downloads_dir`], which the
/// caller removes whatever happens) the images `new` gives by URI without
/// an id, with the `download_timeout`; compute each id from its copy. The
/// version returned has them in its images, their copies in `downloaded`
/// for the import, its digest over the real ids; `actions` says what was
/// downloaded.
fn download_unresolved(
    store: &Store,
    lock: &StoreLock,
    new: &NewVersion,
    request: &Request,
    actions: &mut Vec<String>,
) -> Result<NewVersion, PodError> {
    let dir = store.stage_dir(lock, "downloads", 0o700)?;
    let mut new = new.clone();
    for (n, pending) in std::mem::take(&mut new.unresolved).iter().enumerate() {
        let shown = pending.source.text();
        let shown = crate::records::uri::redact(&shown).into_owned();
        let at = format!("{}.uri", pending.at);
        let location = new
            .locate(&pending.source)
            .map_err(|e| Refusal(format!("{at}: {e}")))?;
        let copy = dir.join(format!("image-{n}"));
        crate::download::fetch_into(&location, request.download_timeout, &copy)
            .map_err(|e| Refusal(format!("{at}: {}", crate::ansible::error_chain(&e))))?;
        let id = computed_id(&copy, &shown, &at)?;
        actions.push(format!(
            "download image {shown} to compute its id (pod.json gives none): {id}"
        ));
        computed_image(&mut new.pod, pending, id.clone())?;
        new.downloaded.insert(id, copy);
    }
    new.digest = store::digest(&new.pod, &new.units);
    Ok(new)
}

/// A version the repository cannot give that the store holds: say so,
/// and how to deploy it from there.
fn in_store_hint(
    error: crate::repository::RepositoryError,
    request: &Request,
    wanted: &crate::repository::Wanted,
) -> PodError {
    let deployment = request.name.as_ref().unwrap_or(&wanted.name);
    let stored = wanted.version.as_ref().filter(|v| {
        Store::new(&request.root)
            .read_pod(deployment)
            .is_ok_and(|state| state.versions.contains_key(*v))
    });
    match stored {
        Some(v) => Refusal(format!(
            "{}; version {v} of pod {} is in the store: leave out repo (name and version \
             alone) to deploy it from there",
            crate::ansible::error_chain(&error),
            deployment
        ))
        .into(),
        None => error.into(),
    }
}

/// The bundle deployed as the pod `name` (a named deployment; the
/// bundle's own name when left out), the bundle's own name recorded with
/// the version.
fn name_deployment(request: &Request, new: &mut NewVersion) -> Result<(), PodError> {
    let own = new.pod.name.clone();
    // With a repository, bundle_name picked the release: it agrees.
    if let (Some(asked), None) = (&request.bundle_name, &request.repo) {
        if *asked != own {
            return Err(Refusal(format!(
                "the bundle is pod {own} but bundle_name is {asked}; leave bundle_name out or \
                 make them agree (name is the deployment's name)"
            ))
            .into());
        }
    }
    if let Some(name) = &request.name {
        new.pod.name = name.clone();
    }
    new.pod.bundle_name = Some(own);
    new.digest = store::digest(&new.pod, &new.units);
    Ok(())
}

/// The bundle's version, deployed under its name, with the `ports` option
/// laid over it.
fn incoming(request: &Request) -> Result<Option<NewVersion>, PodError> {
    for (option, path) in [("root", &request.root), ("unit_dir", &request.unit_dir)] {
        if !path.is_absolute() {
            return Err(Refusal(format!(
                "{option} must be an absolute path, got {}",
                path.display()
            ))
            .into());
        }
    }
    let mut incoming = match (&request.bundle, &request.repo) {
        (Some(path), _) => Some(load_bundle(path, request)?),
        (None, Some(wanted)) => {
            let (bundle, origin) = crate::repository::resolve(wanted, request.download_timeout)
                .map_err(|e| in_store_hint(e, request, wanted))?;
            Some(new_version(bundle, Some(origin), BTreeMap::new(), &[])?)
        }
        (None, None) => None,
    };
    if let Some(new) = &mut incoming {
        name_deployment(request, new)?;
    }
    match (&mut incoming, &request.ports) {
        (Some(new), Some(overrides)) => {
            bundle::override_ports(&mut new.pod.ports, overrides);
            new.digest = store::digest(&new.pod, &new.units);
        }
        (None, Some(_)) => {
            return Err(Refusal::new(
                "ports applies to the bundle being deployed: give bundle too (a stored version \
                 keeps the ports it was deployed with)",
            )
            .into())
        }
        _ => {}
    }
    Ok(incoming)
}

/// Plan from what is observed, and refuse, before anything is written, a
/// path of the plan that is or goes through a symlink ops did not make
/// ([`planted`]).
fn plan_checked(
    request: &Request,
    observed: &Observed,
    store: &Store,
) -> Result<plan::Plan, PodError> {
    let plan = plan::plan(request, observed)?;
    if !plan.is_empty() {
        planted::refuse(store, &plan.name, &request.unit_dir, &plan.unit_changes())?;
    }
    Ok(plan)
}

/// The programs a run talks to on the host.
pub(crate) struct Host<'a> {
    pub systemd: &'a mut dyn Systemd,
    pub podman: &'a mut dyn Podman,
}

/// Bring the pod to the requested state; in check mode only plan.
pub fn run(
    request: &Request,
    systemd: &mut dyn Systemd,
    podman: &mut dyn Podman,
    check_mode: bool,
    want_diff: bool,
) -> Result<Report, Box<Failed>> {
    let host = &mut Host { systemd, podman };
    let incoming = incoming(request)?;
    let store = Store::new(&request.root);
    store.check_layout().map_err(PodError::from)?;
    let name = plan::pod_name(request, incoming.as_ref()).map_err(PodError::from)?;

    let observed = observe(&store, request, &name, incoming.as_ref(), host)?;
    // Without the lock another run may be half-way through (its files
    // written, its record not yet): a refusal made then is made again
    // under the lock before it counts.
    let first = match plan::plan(request, &observed) {
        Ok(plan) => plan,
        Err(error) if check_mode => {
            return Err(refused(
                error.into(),
                &observed,
                &store,
                request,
                host.systemd,
            ))
        }
        Err(_) => {
            let what = "replan".to_owned();
            return run_locked(request, host, want_diff, &store, incoming.as_ref(), what);
        }
    };
    if !first.is_empty() {
        planted::refuse(&store, &name, &request.unit_dir, &first.unit_changes())
            .map_err(|e| refused(e.into(), &observed, &store, request, host.systemd))?;
    }
    if first.is_empty() && !check_mode {
        sweep_after_nothing(&store, request, &name)
            .map_err(|e| refused(e, &observed, &store, request, host.systemd))?;
    }
    if first.is_empty() || check_mode {
        let mut report = first.report(&observed, want_diff);
        report.changed = !first.is_empty();
        report.pod = pod_value(&store, &request.unit_dir, &name, host.systemd);
        return Ok(report);
    }
    let what = first.describe();
    run_locked(request, host, want_diff, &store, incoming.as_ref(), what)
}

/// The waker's run (a connection came to an idle pod's port): start the
/// pod's current version as `state: started` does, if the pod is idle
/// (decided again under the lock), and record when it was woken. The
/// start timeouts are those of the run that idled it.
pub fn wake(
    root: &Path,
    unit_dir: &Path,
    name: &PodName,
    systemd: &mut dyn Systemd,
    podman: &mut dyn Podman,
) -> Result<Report, Box<Failed>> {
    let state = Store::new(root)
        .read_pod_unlocked(name)
        .map_err(PodError::from)?;
    let Some(idle) = state.idle else {
        // Said apart from "not idle": a mistyped --pod names no pod at all.
        let warning = match state.versions.is_empty() {
            true => Some(format!(
                "pod {name} is not deployed under {}",
                root.display()
            )),
            false => disarm_stale(root, name, systemd)?,
        };
        return Ok(Report {
            name: Some(name.clone()),
            warnings: warning.into_iter().collect(),
            ..Report::default()
        });
    };
    let request = Request {
        bundle: None,
        repo: None,
        name: Some(name.clone()),
        bundle_name: None,
        version: None,
        state: State::Started,
        keep: None,
        env: None,
        root: root.to_owned(),
        unit_dir: unit_dir.to_owned(),
        start_timeout: Duration::from_secs(idle.start_timeout),
        min_up_time: Duration::from_secs(idle.min_up_time),
        rollback: true,
        lock_timeout: Duration::from_secs(300),
        runtime: None,
        keyring: None,
        require_signature: false,
        download_timeout: Duration::from_secs(600),
        ports: None,
        port_range: crate::ports::PortRange::default(),
        wake: true,
    };
    run(&request, systemd, podman, false, false)
}

/// A connection woke a pod that is not idle: its sockets were left
/// listening (a crash between the steps of a run, a record removed by
/// hand). Left so, each connection would start the waker again, and
/// systemd's start limit would fail the sockets: they are stopped (the
/// next run of ops_pod removes their files).
fn disarm_stale(
    root: &Path,
    name: &PodName,
    systemd: &mut dyn Systemd,
) -> Result<Option<String>, PodError> {
    // Under the lock, and idle still not recorded: a run making the pod
    // idle now must find its sockets as it left them.
    let _lock = StoreLock::acquire(root, Duration::from_secs(300), "waking an idle pod")?;
    if Store::new(root).read_pod_unlocked(name)?.idle.is_some() {
        return Ok(None);
    }
    let patterns = [
        units::idle_target_name(name),
        units::wake_sockets_glob(name),
    ];
    let listening: Vec<String> = (systemd.list(&patterns)?.into_iter())
        .filter(|s| units::is_idle_unit(name, &s.unit) && s.needs_stopping())
        .map(|s| s.unit)
        .collect();
    if listening.is_empty() {
        return Ok(None);
    }
    crate::systemd::stop_units(systemd, &listening)?;
    Ok(Some(format!(
        "pod {name} is not idle: stopped what still listened for it ({})",
        listening.join(", ")
    )))
}

/// A refusal of the plan, with the pod as it is (nothing was changed): the
/// same result keys as every other outcome.
fn refused(
    error: PodError,
    observed: &Observed,
    store: &Store,
    request: &Request,
    systemd: &mut dyn Systemd,
) -> Box<Failed> {
    let name = &observed.name;
    let pod = pod_value(store, &request.unit_dir, name, systemd);
    let ports = pod["ports"].as_array().cloned().unwrap_or_default();
    Box::new(Failed {
        error,
        report: Report {
            name: Some(name.clone()),
            current: observed.state.current.clone(),
            previous: observed.state.previous.clone(),
            pod,
            ports,
            ..Report::default()
        },
    })
}

/// A run with nothing to do sweeps what a killed run left, under the lock:
/// the store's transient directories and temporaries (see
/// [`Store::sweep_leftovers`]) and those of the pod's unit files.
fn sweep_after_nothing(store: &Store, request: &Request, name: &PodName) -> Result<(), PodError> {
    let what = format!("ops_pod of pod {name}");
    if !units::has_leftovers(name, &request.unit_dir) {
        store.sweep_leftovers(request.lock_timeout, &what)?;
        return Ok(());
    }
    let lock = StoreLock::acquire(&request.root, request.lock_timeout, &what)?;
    store.sweep_stale_temps(&lock)?;
    store.clean_transient(&lock)?;
    units::sweep_leftovers(name, &request.unit_dir)?;
    Ok(())
}

/// Observe and plan again under the lock and carry the plan out.
fn run_locked(
    request: &Request,
    host: &mut Host<'_>,
    want_diff: bool,
    store: &Store,
    incoming: Option<&NewVersion>,
    what: String,
) -> Result<Report, Box<Failed>> {
    let name = plan::pod_name(request, incoming).map_err(PodError::from)?;
    let what = format!("ops_pod {what} of pod {name}");
    let lock =
        StoreLock::acquire(&request.root, request.lock_timeout, &what).map_err(PodError::from)?;
    // What a killed run left half-written goes before anything is read.
    store.sweep_stale_temps(&lock).map_err(PodError::from)?;
    units::sweep_leftovers(&name, &request.unit_dir).map_err(PodError::from)?;
    let new = match incoming {
        Some(new) if must_download(store, request, new)? => new,
        _ => return run_resolved(request, host, want_diff, store, &lock, incoming),
    };
    let mut downloads = Vec::new();
    let result = download_unresolved(store, &lock, new, request, &mut downloads)
        .map_err(Box::<Failed>::from)
        .and_then(|new| run_resolved(request, host, want_diff, store, &lock, Some(&new)));
    // The copies are needed until the images are imported: gone now,
    // whatever happened (a killed run's go with the next run's sweep of
    // staging/).
    let result = match (result, store.unstage(&lock, &store.downloads_dir())) {
        (Ok(report), Err(e)) => Err(Box::new(Failed {
            error: e.into(),
            report,
        })),
        (result, _) => result,
    };
    with_downloads(result, downloads)
}

/// The actions of the downloads made before the plan, first in the
/// report whatever it says.
fn with_downloads(
    mut result: Result<Report, Box<Failed>>,
    downloads: Vec<String>,
) -> Result<Report, Box<Failed>> {
    let report = match &mut result {
        Ok(report) => report,
        Err(failed) => &mut failed.report,
    };
    report.actions.splice(0..0, downloads);
    result
}

/// Under the lock, with every image's id known: observe, plan, apply.
fn run_resolved(
    request: &Request,
    host: &mut Host<'_>,
    want_diff: bool,
    store: &Store,
    lock: &StoreLock,
    incoming: Option<&NewVersion>,
) -> Result<Report, Box<Failed>> {
    let name = plan::pod_name(request, incoming).map_err(PodError::from)?;
    let observed = observe(store, request, &name, incoming, host)?;
    let plan = plan_checked(request, &observed, store)
        .map_err(|error| refused(error, &observed, store, request, host.systemd))?;
    let mut report = plan.report(&observed, want_diff);
    report.actions.clear();
    let result = apply::apply(&plan, &observed, request, store, lock, host, &mut report);
    // What is current is read back from the host: after a failure it is
    // not what the plan said.
    if let Ok(state) = store.read_pod(&name) {
        report.current = state.current;
        report.previous = state.previous;
    }
    // The port record follows the store as the run left it, rolled back
    // or not.
    let synced = sync_port_record(store, lock, &name, &mut report);
    report.pod = pod_value(store, &request.unit_dir, &name, host.systemd);
    match result.and(synced) {
        Ok(()) => Ok(report),
        Err(error) => Err(Box::new(Failed { error, report })),
    }
}

/// The pod's record as ops_facts reports it, for the result (`null` when
/// nothing of it is deployed, or it cannot be read).
fn pod_value(store: &Store, unit_dir: &Path, name: &PodName, systemd: &mut dyn Systemd) -> Value {
    crate::facts::pod_record(store, unit_dir, name, systemd)
        .ok()
        .flatten()
        .and_then(|record| serde_json::to_value(record).ok())
        .unwrap_or(Value::Null)
}

/// Bring `<root>/ports/` in line with the store as it is, and report the
/// pod's ports from it.
fn sync_port_record(
    store: &Store,
    lock: &StoreLock,
    name: &PodName,
    report: &mut Report,
) -> Result<(), PodError> {
    let held = crate::ports::holders(store, None)?;
    let changes = crate::ports::index_changes(store, &held)?;
    crate::ports::apply_index(store, lock, &changes)?;
    for change in &changes {
        report.changed = true;
        report.actions.push(change.describe(store));
    }
    report.ports = crate::ports::report(name, &held);
    Ok(())
}
