//! What ops reports about what is deployed: `ansible_facts.ops` of
//! ops_facts, and the per-pod record ops_pod returns as `pod` (the same
//! function makes both).
//!
//! Read-only and lock-free: it reads committed state only (versions appear
//! and leave by rename, pointers and records are replaced atomically; a
//! version removed while it is read makes its pod be read again), so a
//! deploy running at the same time shows as before or after one of its
//! steps, never half. systemd is asked once (`list-units` by pattern:
//! one D-Bus call) for every unit at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;

use crate::bundle::{ImageId, PodName, Version};
use crate::image::{records, Runtime};
use crate::ports;
use crate::records::pod::{Unit, Volume};
use crate::store::{PodState, Store, StoreError, StoredVersion};
use crate::systemd::{ActiveState, CommandError, Systemd, UnitStatus};
use crate::units;
use crate::volume;

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error("cannot ask systemd for the state of the units")]
    Systemd(#[source] CommandError),
}

/// What to gather.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    /// Only these pods (and the images and ports they use); `None`: all.
    pub pods: Option<&'a [PodName]>,
    /// Ask systemd for unit states; without, states are `null`.
    pub units: bool,
}

/// Everything read, before it is shaped.
struct Host {
    pods: BTreeMap<PodName, PodState>,
    /// The pod starts at boot (its target is wanted by multi-user.target).
    at_boot: BTreeMap<PodName, bool>,
    status: Option<BTreeMap<String, UnitStatus>>,
}

fn read_host(
    store: &Store,
    unit_dir: &Path,
    scope: &Scope<'_>,
    systemd: &mut dyn Systemd,
) -> Result<Host, FactsError> {
    store.check_layout()?;
    let names: Vec<PodName> = store
        .pod_names()
        .map_err(StoreError::from)?
        .into_iter()
        .filter(|name| !scope.pods.is_some_and(|only| !only.contains(name)))
        .collect();
    let read = in_parallel(&names, |name| store.read_pod_unlocked(name));
    let mut pods = BTreeMap::new();
    for (name, state) in names.into_iter().zip(read) {
        let state = state?;
        if !state.versions.is_empty() {
            pods.insert(name, state);
        }
    }
    let at_boot = pods
        .keys()
        .map(|name| {
            let link = unit_dir
                .join("multi-user.target.wants")
                .join(units::target_name(name));
            (name.clone(), link.symlink_metadata().is_ok())
        })
        .collect();
    let status = if scope.units {
        // One query for every pod: the units whose names start with it.
        let patterns: Vec<String> = pods.keys().map(|name| format!("{name}-*")).collect();
        let listed = systemd.list(&patterns).map_err(FactsError::Systemd)?;
        Some(listed.into_iter().map(|s| (s.unit.clone(), s)).collect())
    } else {
        None
    };
    Ok(Host {
        pods,
        at_boot,
        status,
    })
}

/// `f` over `items` on the machine's cores (reading and shaping a thousand
/// versions is mostly system calls and allocation, both of which scale),
/// results in order.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if threads < 2 || items.len() < 16 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a facts thread does not panic"))
            .collect()
    })
}

/// `ansible_facts.ops`.
#[derive(Debug, Serialize)]
pub struct Facts {
    pub root: PathBuf,
    /// By pod name.
    pub pods: BTreeMap<String, PodFacts>,
    pub images: Vec<ImageFacts>,
    /// By port (as text: JSON keys are strings), lowest first.
    pub ports: IndexMap<String, HolderFacts>,
}

/// One pod: what ops_facts reports under its name and ops_pod as `pod`.
#[derive(Debug, Serialize)]
pub struct PodFacts {
    /// The pod's name on the host: the deployment's.
    pub name: PodName,
    /// The bundle the current version (without one, the newest) came from.
    pub bundle_name: PodName,
    pub current: Option<Version>,
    pub previous: Option<Version>,
    /// Current, and started at boot (its target is enabled).
    pub started: bool,
    pub target: String,
    pub slice: String,
    pub store: PathBuf,
    /// By version, oldest first.
    pub versions: IndexMap<String, VersionFacts>,
    pub ports: Vec<Value>,
    /// Idle: the current version stopped, its ports armed so that a
    /// connection starts it (see crate::records::idle).
    pub idle: bool,
    /// When a connection last woke the pod (seconds since the epoch);
    /// `null` if never.
    pub woken_at: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct VersionFacts {
    pub version: Version,
    /// The bundle the version came from (the pod's name for a version
    /// deployed before ops recorded it).
    pub bundle_name: PodName,
    pub current: bool,
    /// running, stopped, partial, failed or installed; `null` without
    /// `units`.
    pub state: Option<&'static str>,
    pub deployed_at: u64,
    pub digest: String,
    pub runtime: Runtime,
    pub units: Vec<UnitFacts>,
    pub images: Vec<String>,
    pub volumes: Vec<VolumeFacts>,
    pub ports: Vec<PortFacts>,
    /// Names of the secret environment; never its values.
    pub env_keys: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct UnitFacts {
    pub name: String,
    /// The plain unit file name the bundle shipped, when ops installs it as
    /// its template `name` because the bundle gave it instances.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipped_as: Option<String>,
    pub installed_as: String,
    pub start: bool,
    pub image: Option<String>,
    pub instances: Vec<InstanceFacts>,
}

#[derive(Debug, Serialize)]
pub struct InstanceFacts {
    pub unit: String,
    pub instance: Option<String>,
    /// systemd's `ActiveState` and `SubState`; `null` without `units`.
    pub active_state: Option<String>,
    pub sub_state: Option<String>,
    /// Started at boot: the version is current, the pod started, and ops
    /// starts this unit.
    pub enabled: bool,
}

#[derive(Debug, Serialize)]
pub struct VolumeFacts {
    pub name: String,
    pub path: PathBuf,
    pub mount: PathBuf,
    pub read_only: bool,
    pub digest: Option<String>,
    pub entries: Option<u64>,
    pub bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct PortFacts {
    pub name: Option<String>,
    pub instance: Option<String>,
    pub port: u16,
    pub kind: ports::Kind,
}

#[derive(Debug, Serialize)]
pub struct HolderFacts {
    pub pod: PodName,
    pub versions: Vec<Version>,
    pub name: Option<String>,
    pub instance: Option<String>,
    pub kind: ports::Kind,
}

#[derive(Debug, Serialize)]
pub struct ImageFacts {
    pub id: String,
    pub runtime: Runtime,
    pub format: crate::image::Format,
    pub size: u64,
    pub location: String,
    /// `pod/version`.
    pub used_by: BTreeSet<String>,
}

/// `ansible_facts.ops`: every pod (or those of `scope`), the images they
/// use and the ports they hold.
pub fn gather(
    store: &Store,
    unit_dir: &Path,
    scope: &Scope<'_>,
    systemd: &mut dyn Systemd,
) -> Result<Facts, FactsError> {
    let host = read_host(store, unit_dir, scope, systemd)?;
    let all: Vec<(&PodName, &PodState)> = host.pods.iter().collect();
    let values = in_parallel(&all, |(name, state)| pod_facts(store, &host, name, state));
    let pods = all
        .iter()
        .zip(values)
        .map(|((name, _), value)| (name.to_string(), value))
        .collect();
    let mut held = BTreeMap::new();
    for (name, state) in &host.pods {
        ports::add_holders(&mut held, name, state);
    }
    let ports = held
        .into_iter()
        .map(|(port, h)| {
            (
                port.to_string(),
                HolderFacts {
                    pod: h.pod,
                    versions: h.versions,
                    name: h.name,
                    instance: h.instance,
                    kind: h.kind,
                },
            )
        })
        .collect();
    Ok(Facts {
        root: store.root().to_owned(),
        pods,
        images: images_facts(store, &host, scope)?,
        ports,
    })
}

/// The record of pod `name`, as ops_pod returns it (`None` when nothing
/// of it is deployed).
pub fn pod_record(
    store: &Store,
    unit_dir: &Path,
    name: &PodName,
    systemd: &mut dyn Systemd,
) -> Result<Option<PodFacts>, FactsError> {
    let only = [name.clone()];
    let scope = Scope {
        pods: Some(&only),
        units: true,
    };
    let host = read_host(store, unit_dir, &scope, systemd)?;
    Ok(host
        .pods
        .get(name)
        .map(|state| pod_facts(store, &host, name, state)))
}

fn pod_facts(store: &Store, host: &Host, name: &PodName, state: &PodState) -> PodFacts {
    let at_boot = host.at_boot.get(name).copied().unwrap_or(false);
    let versions = state
        .by_age()
        .into_iter()
        .map(|version| {
            let stored = &state.versions[version];
            let current = state.current.as_ref() == Some(version);
            (
                version.to_string(),
                version_facts(store, host, name, version, stored, current, at_boot),
            )
        })
        .collect();
    let mut held = BTreeMap::new();
    ports::add_holders(&mut held, name, state);
    let shown = state.current.as_ref().or(state.by_age().last().copied());
    let bundle_name = shown
        .and_then(|v| state.versions.get(v))
        .map_or(name, |s| s.record.pod.bundle());
    PodFacts {
        name: name.clone(),
        bundle_name: bundle_name.clone(),
        current: state.current.clone(),
        previous: state.previous.clone(),
        started: at_boot && state.current.is_some(),
        target: units::target_name(name),
        slice: units::slice_name(name),
        store: store.pod_dir(name),
        versions,
        ports: ports::report(name, &held),
        idle: state.idle.is_some(),
        woken_at: state.woken.map(|w| w.at),
    }
}

fn version_facts(
    store: &Store,
    host: &Host,
    name: &PodName,
    version: &Version,
    stored: &StoredVersion,
    current: bool,
    at_boot: bool,
) -> VersionFacts {
    let record = &stored.record;
    let mut states: Vec<(bool, ActiveState)> = Vec::new();
    let units = record
        .pod
        .units
        .iter()
        .map(|unit| unit_facts(host, name, version, unit, current && at_boot, &mut states))
        .collect();
    let version_dir = store.version_dir(name, version);
    let volumes = record
        .pod
        .volumes
        .iter()
        .map(|v| volume_facts(store, name, version, &version_dir, v))
        .collect();
    VersionFacts {
        version: version.clone(),
        bundle_name: record.pod.bundle().clone(),
        current,
        state: host
            .status
            .as_ref()
            .map(|_| version_state(&states, current)),
        deployed_at: record.deployed_at,
        digest: record.digest.clone(),
        runtime: record.runtime,
        units,
        images: record.pod.images.iter().map(|i| i.id.to_string()).collect(),
        volumes,
        ports: record.ports.iter().map(port_facts).collect(),
        env_keys: stored
            .environment
            .as_deref()
            .map(units::environment_names)
            .unwrap_or_default(),
    }
}

/// A unit and the state of each of its instances. `current_at_boot`: the
/// version is current and the pod starts at boot. Each instance's `(ops
/// starts it, ActiveState)` is added to `states` when systemd was asked.
fn unit_facts(
    host: &Host,
    name: &PodName,
    version: &Version,
    unit: &Unit,
    current_at_boot: bool,
    states: &mut Vec<(bool, ActiveState)>,
) -> UnitFacts {
    let instances = units::runnable(name, version, unit)
        .into_iter()
        .zip(unit.instance_names())
        .map(|(u, instance)| {
            let shown = host.status.as_ref().map(|s| s.get(&u));
            // A unit systemd has not loaded is not running.
            let active = shown.map(|s| s.map_or("inactive", |s| s.active.as_str()));
            if let Some(active) = active {
                states.push((unit.start, ActiveState::parse(active)));
            }
            InstanceFacts {
                active_state: active.map(str::to_owned),
                sub_state: shown.map(|s| s.map_or("dead", |s| s.sub.as_str()).to_owned()),
                unit: u,
                instance: instance.map(str::to_owned),
                enabled: current_at_boot && unit.start,
            }
        })
        .collect();
    UnitFacts {
        name: unit.name.to_string(),
        shipped_as: unit.shipped_as.as_ref().map(ToString::to_string),
        installed_as: units::installed_name(name, version, &unit.name),
        start: unit.start,
        image: unit.image.as_ref().map(ToString::to_string),
        instances,
    }
}

/// A volume of the version, with what its record says of its data.
fn volume_facts(
    store: &Store,
    name: &PodName,
    version: &Version,
    version_dir: &Path,
    v: &Volume,
) -> VolumeFacts {
    let found = volume::read_record(&Store::volume_in(version_dir, &v.name))
        .ok()
        .flatten();
    VolumeFacts {
        name: v.name.clone(),
        path: volume::data_path(store, name, version, &v.name),
        mount: v.mount.clone(),
        read_only: v.read_only,
        digest: found.as_ref().and_then(|r| r.digest.clone()),
        entries: found.as_ref().map(|r| r.entries),
        bytes: found.as_ref().map(|r| r.bytes),
    }
}

fn port_facts(a: &ports::Allocation) -> PortFacts {
    PortFacts {
        name: a.name.clone(),
        instance: a.instance.clone(),
        port: a.port,
        kind: a.kind,
    }
}

/// A version's state from its units' active states (`(ops starts it,
/// ActiveState)` per runnable unit).
fn version_state(units: &[(bool, ActiveState)], current: bool) -> &'static str {
    if units.iter().any(|(_, s)| *s == ActiveState::Failed) {
        return "failed";
    }
    let started: Vec<ActiveState> = units
        .iter()
        .filter(|(start, _)| *start)
        .map(|(_, s)| *s)
        .collect();
    let any_up = units.iter().any(|(_, s)| s.is_running());
    if !started.is_empty() && started.iter().all(|s| s.is_active()) {
        "running"
    } else if any_up {
        "partial"
    } else if current {
        "stopped"
    } else {
        "installed"
    }
}

/// Every image in the store (or those the scope's pods use), with the
/// versions using it.
fn images_facts(
    store: &Store,
    host: &Host,
    scope: &Scope<'_>,
) -> Result<Vec<ImageFacts>, FactsError> {
    let mut used: Vec<(Runtime, ImageId, String)> = Vec::new();
    for (name, state) in &host.pods {
        for (version, stored) in &state.versions {
            for image in &stored.record.pod.images {
                used.push((
                    stored.record.runtime,
                    image.id.clone(),
                    format!("{name}/{version}"),
                ));
            }
        }
    }
    let mut out = Vec::new();
    for runtime in [Runtime::Systemd, Runtime::Podman] {
        for record in records::all(store, runtime)? {
            let used_by: BTreeSet<String> = used
                .iter()
                .filter(|(r, id, _)| *r == runtime && records::matches(id, &record.id))
                .map(|(_, _, user)| user.clone())
                .collect();
            if scope.pods.is_some() && used_by.is_empty() {
                continue;
            }
            out.push(ImageFacts {
                id: record.id,
                runtime: record.runtime,
                format: record.image_format,
                size: record.size,
                location: record.location,
                used_by,
            });
        }
    }
    Ok(out)
}
