//! Everything ops_pod looks at on the host before it plans, gathered in one
//! [`Observed`] value: the plan ([`super::plan`]) reads nothing else, so it
//! does no I/O and is tested from hand-built values.
//!
//! A look whose answer the plan may not need (an image check, a volume
//! archive's first bytes, the verification of the unit files) keeps its
//! failure as a [`Refusal`] the plan gives only where it would consult the
//! answer: the first refusal a request meets stays the same one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::{pod_units, verify, version_units, Host, PodError, Request, State};
use crate::ansible::error_chain;
use crate::bundle::{Image, ImageId, PodName, Source, Version};
use crate::download::Location;
use crate::image::{self, records, Import, Podman, Runtime};
use crate::outcome::Refusal;
use crate::ports::{self, Allocation, Holder};
use crate::store::{NewVersion, PodState, Store};
use crate::systemd::{Systemd, UnitStatus};
use crate::units::{self, Files};

/// The host as it is, for one request about one pod.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub name: PodName,
    /// The bundle's version, as it would be added (ports laid over).
    pub incoming: Option<NewVersion>,
    pub state: PodState,
    /// The pod starts at boot (its target is enabled).
    pub started: bool,
    /// What ops wrote in the unit directory for the pod.
    pub files: Files,
    /// Every runnable unit of every stored version, and the pod's target
    /// and slice.
    pub status: BTreeMap<String, UnitStatus>,
    /// Every other pod in the store: the ports and images they hold. Every
    /// plan asks (the port record follows the whole store), so one that
    /// cannot be read refuses the request, with this pod's state reported.
    pub others: Result<BTreeMap<PodName, PodState>, Refusal>,
    /// Ports something on the host listens on.
    pub listening: BTreeSet<u16>,
    /// The addresses of each of those.
    pub listeners: BTreeMap<u16, BTreeSet<std::net::IpAddr>>,
    /// ops's port record on disk (`<root>/ports/<port>`), by port.
    pub port_records: Result<BTreeMap<u16, String>, Refusal>,
    /// Paths of the pod's shape in the unit directory that exist, whoever
    /// made them: the plan does not install over one that is not ops's.
    pub unit_paths: BTreeSet<PathBuf>,
    /// Of those, the ones another pod's header names, and that pod.
    pub unit_owners: BTreeMap<PathBuf, String>,
    /// Whether the version acted on has each of its images in its runtime.
    pub present: HashMap<ImageId, Result<bool, Refusal>>,
    /// Whether ops has a record of each image of each stored version, in
    /// that version's runtime.
    pub recorded: HashMap<(Runtime, ImageId), Result<bool, Refusal>>,
    /// The bundle's images that would be imported and cannot be.
    pub import_refused: HashMap<ImageId, Refusal>,
    /// The bundle's volume archives, looked at.
    pub volumes: Option<Refusal>,
    /// The bundle's unit files, verified as systemd would load them, when
    /// the version would be added: `Ok(false)` when no verifier is there.
    pub verified: Option<Result<bool, Refusal>>,
    /// Seconds since the epoch: when a version added now is deployed.
    pub now: u64,
    /// `<root>/bin/ops-wake` is this program, byte for byte (looked at
    /// only for `state: idle`).
    pub waker_installed: bool,
}

impl Observed {
    /// A host with nothing of pod `name` on it, at the epoch.
    pub(crate) fn new(name: PodName) -> Observed {
        Observed {
            name,
            incoming: None,
            state: PodState::default(),
            started: false,
            files: Files::new(),
            status: BTreeMap::new(),
            others: Ok(BTreeMap::new()),
            listening: BTreeSet::new(),
            listeners: BTreeMap::new(),
            port_records: Ok(BTreeMap::new()),
            unit_paths: BTreeSet::new(),
            unit_owners: BTreeMap::new(),
            present: HashMap::new(),
            recorded: HashMap::new(),
            import_refused: HashMap::new(),
            volumes: None,
            verified: None,
            now: 0,
            waker_installed: false,
        }
    }
}

fn refusal(error: &dyn std::error::Error) -> Refusal {
    Refusal(error_chain(error))
}

/// Look at the host for a request about pod `name`.
pub(crate) fn observe(
    store: &Store,
    request: &Request,
    name: &PodName,
    incoming: Option<&NewVersion>,
    host: &mut Host<'_>,
) -> Result<Observed, PodError> {
    let state = store.read_pod(name)?;
    let files = units::owned(name, &request.unit_dir)?;
    let started = files.contains_key(&units::boot_links(name)[0]);
    super::planted::refuse_unit_files(&request.unit_dir, name)?;
    let status = unit_status(name, &state, &files, host.systemd)?;
    let others = other_pods(store, name).map_err(|e| refusal(&e));
    let unit_paths = unit_paths(name, &request.unit_dir);
    let listeners = crate::ports::listeners();
    let mut observed = Observed {
        incoming: incoming.cloned(),
        state,
        started,
        files,
        status,
        others,
        listening: listeners.keys().copied().collect(),
        listeners,
        port_records: crate::ports::read_index(store).map_err(|e| refusal(&e)),
        unit_owners: unit_owners(name, &request.unit_dir, &unit_paths),
        unit_paths,
        now: crate::clock::now(),
        waker_installed: request.state == State::Idle && store.waker_in_place(Path::new(SELF)),
        ..Observed::new(name.clone())
    };
    observe_images(store, request, host.podman, &mut observed);
    observe_bundle(store, request, host.systemd, &mut observed)?;
    Ok(observed)
}

/// This program, as the waker copies it.
pub(super) const SELF: &str = "/proc/self/exe";

fn other_pods(
    store: &Store,
    name: &PodName,
) -> Result<BTreeMap<PodName, PodState>, crate::store::StoreError> {
    let mut others = BTreeMap::new();
    for other in store.pod_names()? {
        if other != *name {
            let read = match store.read_pod_unlocked(&other) {
                // What others hold (ports, images, unit names) is in their
                // versions: an idle record that cannot be read is that
                // pod's to refuse, not every other pod's.
                Err(crate::store::StoreError::CorruptIdle { .. }) => {
                    store.read_pod_without_idle(&other)?
                }
                read => read?,
            };
            others.insert(other, read);
        }
    }
    Ok(others)
}

fn unit_status(
    name: &PodName,
    state: &PodState,
    files: &Files,
    systemd: &mut dyn Systemd,
) -> Result<BTreeMap<String, UnitStatus>, PodError> {
    let mut all: Vec<String> = state
        .versions
        .keys()
        .flat_map(|v| version_units(state, v).0)
        .collect();
    if !all.is_empty() || !files.is_empty() {
        all.extend(pod_units(name));
        all.extend(units::idle_units(name, &idle_ports(state)));
        // Idle units on disk for other ports (a stale socket): a run that
        // removes one stops it first.
        let on_disk = (files.keys().filter_map(|p| p.to_str()))
            .filter(|n| units::is_idle_unit(name, n) && !all.iter().any(|a| a == n));
        all.extend(on_disk.map(str::to_owned).collect::<Vec<_>>());
    }
    Ok(systemd
        .show(&all)?
        .into_iter()
        .map(|s| (s.unit.clone(), s))
        .collect())
}

/// The ports an idle pod's sockets listen on, or would: the idle record's
/// and the current version's.
pub(super) fn idle_ports(state: &PodState) -> Vec<u16> {
    let mut ports: BTreeSet<u16> = state
        .idle
        .iter()
        .flat_map(|r| r.ports.iter().copied())
        .collect();
    if let Some(stored) = state.current.as_ref().and_then(|v| state.versions.get(v)) {
        ports.extend(stored.record.ports.iter().map(|a| a.port));
    }
    ports.into_iter().collect()
}

/// The paths in `unit_dir` a plan for pod `name` may install, that exist.
fn unit_paths(name: &PodName, unit_dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let exists = |p: &Path| unit_dir.join(p).symlink_metadata().is_ok();
    for entry in std::fs::read_dir(unit_dir).into_iter().flatten().flatten() {
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !units::is_pod_path(name, &file) {
            continue;
        }
        let dropin = Path::new(&file).join(units::DROPIN);
        if exists(&dropin) {
            out.insert(dropin);
        }
        out.insert(PathBuf::from(file));
    }
    for link in units::boot_links(name) {
        if exists(&link) {
            out.insert(link);
        }
    }
    out
}

/// The files of [`unit_paths`] that ops wrote for another pod, and which.
fn unit_owners(
    name: &PodName,
    unit_dir: &Path,
    paths: &BTreeSet<PathBuf>,
) -> BTreeMap<PathBuf, String> {
    let head = |path: &Path| -> Option<String> {
        use std::io::Read;
        let mut text = Vec::new();
        crate::atomic::open_own(path)
            .ok()?
            .take(512)
            .read_to_end(&mut text)
            .ok()?;
        let text = String::from_utf8_lossy(&text);
        units::owner(&text)
            .filter(|o| *o != name.as_str())
            .map(str::to_owned)
    };
    (paths.iter())
        .filter_map(|p| head(&unit_dir.join(p)).map(|owner| (p.clone(), owner)))
        .collect()
}

/// Which images are where: the acted-on version's in its runtime, and the
/// records of every stored version's.
fn observe_images(
    store: &Store,
    request: &Request,
    podman: &mut dyn Podman,
    observed: &mut Observed,
) {
    for stored in observed.state.versions.values() {
        let runtime = stored.record.runtime;
        for wanted in &stored.record.pod.images {
            let seen = records::read(store, runtime, &wanted.id)
                .map(|r| r.is_some())
                .map_err(|e| refusal(&e));
            observed.recorded.insert((runtime, wanted.id.clone()), seen);
        }
    }
    let runs = matches!(request.state, State::Started | State::Restarted);
    if observed.incoming.is_none() && !runs {
        return;
    }
    let Some((_, runtime, images)) = target_version(request, observed) else {
        return;
    };
    for wanted in images {
        let there = image::present(store, runtime, &wanted.id, podman)
            .map(|p| p.is_some())
            .map_err(|e| refusal(&e));
        let missing = !matches!(there, Ok(true));
        observed.present.insert(wanted.id.clone(), there);
        if let (true, Some(new)) = (missing, &observed.incoming) {
            if let Err(e) = import_for(request, new, &wanted).check() {
                observed
                    .import_refused
                    .insert(wanted.id.clone(), refusal(&e));
            }
        }
    }
}

/// The bundle's volume archives and, for a version it would add, its unit
/// files as systemd would load them.
fn observe_bundle(
    store: &Store,
    request: &Request,
    systemd: &mut dyn Systemd,
    observed: &mut Observed,
) -> Result<(), PodError> {
    let (Some(new), name) = (&observed.incoming, &observed.name) else {
        return Ok(());
    };
    if request.state == State::Absent {
        return Ok(());
    }
    let version = &new.pod.version;
    let deployed = observed.state.versions.contains_key(version);
    let checked = crate::volume::check_bundle(store, new, deployed, request.download_timeout);
    observed.volumes = checked.err().map(|e| refusal(&e));
    if deployed {
        return Ok(());
    }
    let runtime = request.runtime.unwrap_or_default();
    let Ok(ports) = new_ports(request, observed, new) else {
        // The plan refuses the allocation before it would verify.
        return Ok(());
    };
    observed.verified = match verify::verify(systemd, store, runtime, name, new, &ports) {
        Ok(verified) => Some(Ok(verified)),
        Err(PodError::Fs(e)) => return Err(e.into()),
        Err(e) => Some(Err(refusal(&e))),
    };
    Ok(())
}

/// Versions as a message lists them.
pub(super) fn list(versions: &[&Version]) -> String {
    if versions.is_empty() {
        "none".to_owned()
    } else {
        versions
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The other pods in the store, for a name that may be mistyped.
pub(super) fn other_pod_names(observed: &Observed) -> String {
    match &observed.others {
        Ok(others) if !others.is_empty() => {
            let names: Vec<&str> = others.keys().map(PodName::as_str).collect();
            names.join(", ")
        }
        _ => "none".to_owned(),
    }
}

/// The version the request acts on; without one, the current (none, for
/// absent: all).
pub(super) fn resolve_version(
    request: &Request,
    observed: &Observed,
) -> Result<Option<Version>, Refusal> {
    let (name, before) = (&observed.name, &observed.state);
    Ok(match (&observed.incoming, &request.version) {
        (Some(new), Some(v)) if &new.pod.version != v => {
            return Err(Refusal(format!(
                "the bundle is version {} of pod {name} but version is {v}; leave version out or \
                 make them agree",
                new.pod.version
            )))
        }
        (Some(new), _) => Some(new.pod.version.clone()),
        (None, Some(v)) => Some(v.clone()),
        (None, None) if request.state == State::Absent => None,
        (None, None) => match &before.current {
            Some(v) => Some(v.clone()),
            None if before.versions.is_empty() => {
                return Err(Refusal(format!(
                    "pod {name} is not deployed under {} (pods there: {}); give a bundle (or \
                     repo) to deploy it",
                    request.root.display(),
                    other_pod_names(observed)
                )))
            }
            None => {
                return Err(Refusal(format!(
                    "pod {name} has no current version; give a bundle or a version (stored: {})",
                    list(&before.by_age())
                )))
            }
        },
    })
}

/// The version the request acts on, the runtime its images are looked for
/// in, and its images: what [`super::observe`] looks at for the plan.
pub(super) fn target_version(
    request: &Request,
    observed: &Observed,
) -> Option<(Version, Runtime, Vec<Image>)> {
    let v = resolve_version(request, observed).ok().flatten()?;
    let absent = request.state == State::Absent;
    match (observed.state.versions.get(&v), &observed.incoming) {
        // As the plan has it: absent does not look at the version's runtime.
        (Some(stored), _) if absent => {
            Some((v, Runtime::default(), stored.record.pod.images.clone()))
        }
        (Some(stored), _) => Some((v, stored.record.runtime, stored.record.pod.images.clone())),
        (None, Some(new)) if !absent => Some((
            v,
            request.runtime.unwrap_or_default(),
            new.pod.images.clone(),
        )),
        _ => None,
    }
}

/// Every held port, with `this` standing in for the pod's own versions.
pub(super) fn holders(
    observed: &Observed,
    this: &PodState,
) -> Result<BTreeMap<u16, Holder>, Refusal> {
    let mut all: BTreeMap<&PodName, &PodState> = observed
        .others
        .as_ref()
        .map_err(Clone::clone)?
        .iter()
        .collect();
    all.insert(&observed.name, this);
    let mut held = BTreeMap::new();
    for (name, state) in all {
        ports::add_holders(&mut held, name, state);
    }
    Ok(held)
}

/// The ports a new version would get.
pub(super) fn new_ports(
    request: &Request,
    observed: &Observed,
    new: &NewVersion,
) -> Result<Vec<Allocation>, Refusal> {
    let held = holders(observed, &observed.state)?;
    ports::allocate(
        &observed.name,
        &new.pod,
        &held,
        request.port_range,
        &observed.listening,
    )
    .map_err(|e| refusal(&e))
}

/// How to import an image of the bundle. The stored record hides a URI's
/// credentials: the bundle's own image entry has them.
pub(super) fn import_for(request: &Request, new: &NewVersion, wanted: &Image) -> Import {
    let wanted = new
        .pod
        .images
        .iter()
        .find(|i| i.id == wanted.id)
        .unwrap_or(wanted);
    // The bundle was validated: its URIs parse. Were one not to, the
    // download names it and fails, before anything is imported.
    let locate = |source: &Source| {
        new.locate(source)
            .unwrap_or_else(|_| Location::Http(source.text()))
    };
    // An image downloaded to compute its id is imported from that copy,
    // the bytes the id was computed from.
    let (source, downloaded_from) = match new.downloaded.get(&wanted.id) {
        Some(copy) => (
            Location::Path(copy.clone()),
            Some(crate::records::uri::redact(&wanted.source.text()).into_owned()),
        ),
        None => (locate(&wanted.source), None),
    };
    Import {
        id: wanted.id.clone(),
        source,
        signature: wanted.signature.as_ref().map(locate),
        keyring: request.keyring.clone(),
        require_signature: request.require_signature,
        timeout: request.download_timeout,
        downloaded_from,
    }
}
