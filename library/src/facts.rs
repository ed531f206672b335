//! What ops reports about a deployed pod: the record ops_pod returns as
//! `pod` and ops_facts returns for every pod. Read-only: no lock taken.

use std::path::Path;

use serde_json::{json, Value};

use crate::bundle::PodName;
use crate::pod::PodError;
use crate::store::Store;
use crate::systemd::Systemd;
use crate::units;

/// The record of pod `name`: its versions, which is current, and the state
/// of every unit. `Value::Null` fields mean "none".
pub fn pod_record(
    store: &Store,
    unit_dir: &Path,
    name: &PodName,
    systemd: &mut dyn Systemd,
) -> Result<Value, PodError> {
    let observed = crate::pod::observe(store, unit_dir, name, systemd)?;
    let state = &observed.state;
    let versions: Vec<Value> = state
        .by_age()
        .into_iter()
        .map(|version| {
            let stored = &state.versions[version];
            let unit_records: Vec<Value> = stored
                .record
                .pod
                .units
                .iter()
                .map(|unit| {
                    let instances: Vec<Value> = units::runnable(name, version, unit)
                        .into_iter()
                        .map(|u| {
                            let status = observed.status.get(&u);
                            json!({
                                "unit": u,
                                "active": status.map_or("unknown", |s| s.active.as_str()),
                                "sub": status.map_or("unknown", |s| s.sub.as_str()),
                            })
                        })
                        .collect();
                    json!({
                        "name": unit.name,
                        "installed_as": units::installed_name(name, version, &unit.name),
                        "start": unit.start,
                        "instances": instances,
                    })
                })
                .collect();
            json!({
                "version": version,
                "current": state.current.as_ref() == Some(version),
                "deployed_at": stored.record.deployed_at,
                "digest": stored.record.digest,
                "environment_file": stored.environment.is_some(),
                "units": unit_records,
            })
        })
        .collect();
    if versions.is_empty() {
        return Ok(Value::Null);
    }
    let held = crate::ports::holders(store, Some((name, state)))?;
    Ok(json!({
        "name": name,
        "current": state.current,
        "previous": state.previous,
        "started": observed.started && state.current.is_some(),
        "target": units::target_name(name),
        "slice": units::slice_name(name),
        "store": store.pod_dir(name),
        "versions": versions,
        "ports": crate::ports::report(name, &held),
    }))
}
