//! What ops reports about what is deployed: `ansible_facts.ops` of
//! ops_facts, and the per-pod record ops_pod returns as `pod` (the same
//! function makes both).
//!
//! Read-only and lock-free: it reads committed state only (versions appear
//! and leave by rename, pointers and records are replaced atomically; a
//! version removed while it is read makes its pod be read again), so a
//! deploy running at the same time shows as before or after one of its
//! steps, never half. systemd is asked once, for every unit at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::bundle::{ImageId, PodName, Version};
use crate::image::{records, Runtime};
use crate::ports;
use crate::store::{PodState, Store, StoreError, StoredVersion};
use crate::systemd::{CommandError, Systemd, UnitStatus};
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
    let mut pods = BTreeMap::new();
    for name in store.pod_names().map_err(StoreError::from)? {
        if scope.pods.is_some_and(|only| !only.contains(&name)) {
            continue;
        }
        let state = store.read_pod_unlocked(&name)?;
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
        let all: Vec<String> = pods
            .iter()
            .flat_map(|(name, state)| {
                state
                    .versions
                    .keys()
                    .flat_map(|v| crate::pod::version_units(name, state, v).0)
                    .collect::<Vec<_>>()
            })
            .collect();
        let shown = systemd.show(&all).map_err(FactsError::Systemd)?;
        Some(shown.into_iter().map(|s| (s.unit.clone(), s)).collect())
    } else {
        None
    };
    Ok(Host {
        pods,
        at_boot,
        status,
    })
}

/// `ansible_facts.ops`: every pod (or those of `scope`), the images they
/// use and the ports they hold.
pub fn gather(
    store: &Store,
    unit_dir: &Path,
    scope: &Scope<'_>,
    systemd: &mut dyn Systemd,
) -> Result<Value, FactsError> {
    let host = read_host(store, unit_dir, scope, systemd)?;
    let pods: Map<String, Value> = host
        .pods
        .iter()
        .map(|(name, state)| (name.to_string(), pod_value(store, &host, name, state)))
        .collect();
    let mut held = BTreeMap::new();
    for (name, state) in &host.pods {
        ports::add_holders(&mut held, name, state);
    }
    let ports: Map<String, Value> = held
        .iter()
        .map(|(port, h)| {
            (
                port.to_string(),
                json!({
                    "pod": h.pod,
                    "versions": h.versions,
                    "name": h.name,
                    "instance": h.instance,
                    "kind": h.kind,
                }),
            )
        })
        .collect();
    Ok(json!({
        "root": store.root(),
        "pods": pods,
        "images": images_value(store, &host, scope)?,
        "ports": ports,
    }))
}

/// The record of pod `name`, as ops_pod returns it (`null` when nothing
/// of it is deployed).
pub fn pod_record(
    store: &Store,
    unit_dir: &Path,
    name: &PodName,
    systemd: &mut dyn Systemd,
) -> Result<Value, FactsError> {
    let only = [name.clone()];
    let scope = Scope {
        pods: Some(&only),
        units: true,
    };
    let host = read_host(store, unit_dir, &scope, systemd)?;
    Ok(host
        .pods
        .get(name)
        .map_or(Value::Null, |state| pod_value(store, &host, name, state)))
}

fn pod_value(store: &Store, host: &Host, name: &PodName, state: &PodState) -> Value {
    let at_boot = host.at_boot.get(name).copied().unwrap_or(false);
    let versions: Map<String, Value> = state
        .by_age()
        .into_iter()
        .map(|version| {
            let stored = &state.versions[version];
            let current = state.current.as_ref() == Some(version);
            (
                version.to_string(),
                version_value(store, host, name, version, stored, current, at_boot),
            )
        })
        .collect();
    let mut held = BTreeMap::new();
    ports::add_holders(&mut held, name, state);
    json!({
        "name": name,
        "current": state.current,
        "previous": state.previous,
        "started": at_boot && state.current.is_some(),
        "target": units::target_name(name),
        "slice": units::slice_name(name),
        "store": store.pod_dir(name),
        "versions": versions,
        "ports": ports::report(name, &held),
    })
}

fn version_value(
    store: &Store,
    host: &Host,
    name: &PodName,
    version: &Version,
    stored: &StoredVersion,
    current: bool,
    at_boot: bool,
) -> Value {
    let record = &stored.record;
    let status = |unit: &str| host.status.as_ref().map(|s| s.get(unit));
    let mut states: Vec<(bool, &str)> = Vec::new();
    let unit_values: Vec<Value> = record
        .pod
        .units
        .iter()
        .map(|unit| {
            let names = units::runnable(name, version, unit);
            let instance_names: Vec<Option<&str>> = if unit.name.is_template() {
                unit.instances.iter().map(|i| Some(i.as_str())).collect()
            } else {
                vec![None]
            };
            let instances: Vec<Value> = names
                .iter()
                .zip(instance_names)
                .map(|(u, instance)| {
                    let shown = status(u);
                    if let Some(s) = shown {
                        states.push((unit.start, s.map_or("unknown", |s| s.active.as_str())));
                    }
                    json!({
                        "unit": u,
                        "instance": instance,
                        "active_state": shown.map(|s| s.map_or("unknown", |s| s.active.as_str())),
                        "sub_state": shown.map(|s| s.map_or("unknown", |s| s.sub.as_str())),
                        "enabled": current && at_boot && unit.start,
                    })
                })
                .collect();
            json!({
                "name": unit.name,
                "installed_as": units::installed_name(name, version, &unit.name),
                "start": unit.start,
                "image": unit.image,
                "instances": instances,
            })
        })
        .collect();
    let state = host
        .status
        .as_ref()
        .map(|_| version_state(&states, current));
    let version_dir = store.version_dir(name, version);
    let volumes: Vec<Value> = record
        .pod
        .volumes
        .iter()
        .map(|v| {
            let found = volume::read_record(&volume::volume_dir(&version_dir, &v.name))
                .ok()
                .flatten();
            json!({
                "name": v.name,
                "path": volume::data_path(store, name, version, &v.name),
                "mount": v.mount,
                "read_only": v.read_only,
                "digest": found.as_ref().and_then(|r| r.digest.clone()),
                "entries": found.as_ref().map(|r| r.entries),
                "bytes": found.as_ref().map(|r| r.bytes),
            })
        })
        .collect();
    let ports: Vec<Value> = record
        .ports
        .iter()
        .map(|a| json!({"name": a.name, "instance": a.instance, "port": a.port, "kind": a.kind}))
        .collect();
    json!({
        "version": version,
        "current": current,
        "state": state,
        "deployed_at": record.deployed_at,
        "digest": record.digest,
        "runtime": record.runtime,
        "units": unit_values,
        "images": record.pod.images.iter().map(|i| i.id.to_string()).collect::<Vec<_>>(),
        "volumes": volumes,
        "ports": ports,
        // Names only: the values are secret.
        "env_keys": stored
            .environment
            .as_deref()
            .map(units::environment_names)
            .unwrap_or_default(),
    })
}

/// A version's state from its units' active states (`(ops starts it,
/// ActiveState)` per runnable unit).
fn version_state(units: &[(bool, &str)], current: bool) -> &'static str {
    let up = |s: &str| matches!(s, "active" | "reloading");
    if units.iter().any(|(_, s)| *s == "failed") {
        return "failed";
    }
    let started: Vec<&str> = units
        .iter()
        .filter(|(start, _)| *start)
        .map(|(_, s)| *s)
        .collect();
    let any_up = units.iter().any(|(_, s)| up(s) || *s == "activating");
    if !started.is_empty() && started.iter().all(|s| up(s)) {
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
fn images_value(store: &Store, host: &Host, scope: &Scope<'_>) -> Result<Vec<Value>, FactsError> {
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
            let by: BTreeSet<String> = used
                .iter()
                .filter(|(r, id, _)| *r == runtime && records::matches(id, &record.id))
                .map(|(_, _, user)| user.clone())
                .collect();
            if scope.pods.is_some() && by.is_empty() {
                continue;
            }
            out.push(json!({
                "id": record.id,
                "runtime": record.runtime,
                "format": record.image_format,
                "size": record.size,
                "location": record.location,
                "used_by": by,
            }));
        }
    }
    Ok(out)
}
