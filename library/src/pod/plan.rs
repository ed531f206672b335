//! From a request and the observed host to the steps that get there.
//!
//! The plan is the whole decision: which version is added, which removed,
//! where `current` points, which unit files change, which units stop
//! before anything else, which start, which stop once the new version is
//! up. Check mode reports it; a real run applies it. Every refusal is made
//! here, before anything is written.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{pod_units, version_units, Observed, PodError, Report, Request, State};
use crate::bundle::{ImageId, PodName, Source, Version};
use crate::image::{self, records, Import, Location, Runtime};
use crate::ports;
use crate::store::{NewVersion, PodState, Store, StoredVersion, VersionRecord, META_FORMAT};
use crate::systemd::{CommandError, Systemd};
use crate::units::{self, Change, Entry, Files};

/// What to start once the store and unit files are in place.
#[derive(Debug, Clone)]
pub struct Start {
    pub version: Version,
    pub units: Vec<String>,
    /// Restart (the configuration of running units changed, or
    /// `state: restarted`) rather than start.
    pub restart: bool,
    /// `current` moves to this version in this run.
    pub switch: bool,
    /// The pod's target, started once the units are up, if it is not
    /// active: it is what stops the pod as one.
    pub target: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: PodName,
    pub version: Option<Version>,
    pub state: State,
    /// A version to stage and commit, with its record.
    pub add: Option<(NewVersion, VersionRecord)>,
    /// A new environment file for `version` (`None`: remove it).
    pub environment: Option<Option<Vec<u8>>>,
    /// The version whose secret environment `environment` carries over to
    /// a new version deployed without `env`.
    pub environment_from: Option<Version>,
    /// The store and boot state once the run is done.
    pub after: PodState,
    pub started_after: bool,
    /// Units to stop before the unit files change.
    pub stop_first: Vec<String>,
    pub start: Option<Start>,
    /// Units to stop once the started version is up.
    pub stop_after: Vec<String>,
    /// Unit file changes before anything starts, and after `stop_after`.
    pub files_before: Vec<Change>,
    pub files_after: Vec<Change>,
    /// Versions to delete from the store.
    pub remove: Vec<Version>,
    /// Images to import, before anything else, and where they go.
    pub import_images: Vec<Import>,
    /// Images no deployed version uses once `remove` is done.
    pub remove_images: Vec<(ImageId, Runtime)>,
    /// The runtime of the version acted on (and of `import_images`).
    pub runtime: Runtime,
    /// The store's root, where images are.
    pub root: std::path::PathBuf,
    /// Said to the user, e.g. that a check could not be made.
    pub warnings: Vec<String>,
    /// Changes to the port record `<root>/ports/`, last.
    pub port_index: Vec<ports::IndexChange>,
    /// The pod's ports once the run is done, as reported.
    pub ports: Vec<Value>,
}

/// The pod a request is about: from the bundle, or `name`.
pub(crate) fn pod_name(
    request: &Request,
    incoming: Option<&NewVersion>,
) -> Result<PodName, PodError> {
    match (incoming, &request.name) {
        (Some(new), Some(name)) if &new.pod.name != name => Err(PodError::Refused(format!(
            "the bundle is pod {} but name is {name}; leave name out or make them agree",
            new.pod.name
        ))),
        (Some(new), _) => Ok(new.pod.name.clone()),
        (None, Some(name)) => Ok(name.clone()),
        (None, None) => Err(PodError::Refused("give a bundle or a name".to_owned())),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn list(versions: &[&Version]) -> String {
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

fn active(observed: &Observed, units: &[String]) -> Vec<String> {
    units
        .iter()
        .filter(|u| observed.status.get(*u).is_some_and(|s| s.needs_stopping()))
        .cloned()
        .collect()
}

/// Which versions `keep` prunes: the oldest beyond `keep`, never the
/// current one nor the one this run acts on.
fn pruned(state: &PodState, keep: usize, protected: Option<&Version>) -> Vec<Version> {
    let mut slots = keep;
    let mut kept: Vec<&Version> = Vec::new();
    for v in [state.current.as_ref(), protected].into_iter().flatten() {
        if !kept.contains(&v) {
            kept.push(v);
            slots = slots.saturating_sub(1);
        }
    }
    let mut newest_first = state.by_age();
    newest_first.reverse();
    for v in newest_first {
        if slots > 0 && !kept.contains(&v) {
            kept.push(v);
            slots -= 1;
        }
    }
    state
        .by_age()
        .into_iter()
        .filter(|v| !kept.contains(v))
        .cloned()
        .collect()
}

impl Plan {
    /// Refuse, before anything is written, a path of this plan that is or
    /// goes through a symlink ops did not make ([`super::planted`]).
    pub fn refuse_planted_links(
        &self,
        store: &Store,
        unit_dir: &Path,
    ) -> Result<(), crate::atomic::FsError> {
        let changes: Vec<&Change> = self.files_before.iter().chain(&self.files_after).collect();
        super::planted::refuse(store, &self.name, unit_dir, &changes)
    }

    pub(crate) fn new(
        request: &Request,
        name: &PodName,
        incoming: Option<&NewVersion>,
        observed: &Observed,
        systemd: &mut dyn Systemd,
    ) -> Result<Plan, PodError> {
        let before = &observed.state;
        let mut after = before.clone();
        let mut started_after = observed.started;
        let version = match (incoming, &request.version) {
            (Some(new), Some(v)) if &new.pod.version != v => {
                return Err(PodError::Refused(format!(
                    "the bundle is version {} of pod {name} but version is {v}; leave version out or make them agree",
                    new.pod.version
                )))
            }
            (Some(new), _) => Some(new.pod.version.clone()),
            (None, Some(v)) => Some(v.clone()),
            // Without a version, act on the current one (all for absent).
            (None, None) if request.state == State::Absent => None,
            (None, None) => match &before.current {
                Some(v) => Some(v.clone()),
                None => {
                    return Err(PodError::Refused(format!(
                        "pod {name} has no current version; give a bundle or a version (stored: {})",
                        list(&before.by_age())
                    )))
                }
            },
        };
        let mut plan = Plan {
            name: name.clone(),
            version: version.clone(),
            state: request.state,
            add: None,
            environment: None,
            environment_from: None,
            after: PodState::default(),
            started_after: false,
            stop_first: Vec::new(),
            start: None,
            stop_after: Vec::new(),
            files_before: Vec::new(),
            files_after: Vec::new(),
            remove: Vec::new(),
            import_images: Vec::new(),
            remove_images: Vec::new(),
            runtime: Runtime::Systemd,
            root: request.root.clone(),
            warnings: Vec::new(),
            port_index: Vec::new(),
            ports: Vec::new(),
        };
        let store = Store::new(&request.root);

        // The version must be in the store, or come with the bundle.
        if let (Some(v), true) = (&version, request.state != State::Absent) {
            match (before.versions.get(v), incoming) {
                (Some(stored), Some(new)) if stored.record.digest != new.digest => {
                    return Err(PodError::Refused(format!(
                        "version {v} of pod {name} is already deployed with different content \
                         (stored {}, bundle {}{}); versions are immutable: give the bundle a new version, \
                         or remove version {v} first (state: absent)",
                        stored.record.digest,
                        new.digest,
                        if request.ports.is_some() {
                            " with the ports option laid over it: a stored version keeps the ports \
                             it was deployed with"
                        } else {
                            ""
                        }
                    )))
                }
                (Some(stored), _) => {
                    let recorded = stored.record.runtime;
                    match request.runtime {
                        Some(asked) if asked != recorded && !stored.record.pod.images.is_empty() => {
                            return Err(PodError::Refused(format!(
                                "version {v} of pod {name} runs its images in the {recorded} runtime, \
                                 not {asked}; deploy a new version to change runtime"
                            )))
                        }
                        _ => plan.runtime = recorded,
                    }
                }
                (None, Some(new)) => {
                    plan.runtime = request.runtime.unwrap_or_default();
                    let held = ports::holders(&store, Some((name, before)))?;
                    let listening = ports::listening();
                    let allocated =
                        ports::allocate(name, &new.pod, &held, request.port_range, &listening)?;
                    for a in &allocated {
                        let newly = !held.get(&a.port).is_some_and(|h| h.pod == *name);
                        if a.kind != ports::Kind::Assigned && newly && listening.contains(&a.port) {
                            plan.warnings.push(format!(
                                "port {} ({}) of pod {name} is being listened on by a process that \
                                 is not this pod's: version {v} may fail to bind it",
                                a.port,
                                a.describe()
                            ));
                        }
                    }
                    let record = VersionRecord {
                        format: META_FORMAT,
                        sequence: before.next_sequence(),
                        deployed_at: now(),
                        digest: new.digest.clone(),
                        pod: new.pod.clone(),
                        runtime: plan.runtime,
                        ports: allocated,
                    };
                    if !verify(systemd, &store, plan.runtime, name, v, new, &record.ports)? {
                        plan.warnings.push(
                            "systemd-analyze is not installed: the unit files were not verified before installing"
                                .to_owned(),
                        );
                    }
                    after.versions.insert(
                        v.clone(),
                        StoredVersion {
                            record: record.clone(),
                            units: new.units.clone(),
                            environment: None,
                        },
                    );
                    plan.add = Some((new.clone(), record));
                }
                (None, None) => {
                    return Err(PodError::Refused(format!(
                        "version {v} of pod {name} is not in the store at {}; give its bundle to deploy it \
                         (stored versions: {})",
                        request.root.display(),
                        list(&before.by_age())
                    )))
                }
            }
            if let Some(new) = incoming {
                let deployed = before.versions.contains_key(v);
                crate::volume::check_bundle(&store, new, deployed, request.download_timeout)?;
            }
            // A new version deployed without `env` gets the current
            // version's secret environment: an upgrade must not silently
            // drop it (`env: {}` asks for none). A stored version keeps
            // its own.
            let carried = match (&request.env, &plan.add, &before.current) {
                (None, Some(_), Some(current)) => before
                    .versions
                    .get(current)
                    .and_then(|s| s.environment.clone())
                    .map(|env| (current.clone(), env)),
                _ => None,
            };
            let wanted = match (&request.env, carried) {
                (Some(env), _) => Some((!env.is_empty()).then(|| units::environment_file(env))),
                (None, Some((from, env))) => {
                    plan.environment_from = Some(from);
                    Some(Some(env))
                }
                (None, None) => None,
            };
            if let Some(wanted) = wanted {
                let stored = after.versions.get_mut(v).expect("present");
                if stored.environment != wanted {
                    stored.environment.clone_from(&wanted);
                    plan.environment = Some(wanted);
                }
            }
        }

        if let Some(v) = &version {
            let runs = matches!(request.state, State::Started | State::Restarted);
            if incoming.is_some() || runs {
                plan.import_images =
                    images_to_import(request, &store, plan.runtime, name, v, &after, incoming)?;
            }
        }

        let mut keep_running_until_after: Vec<Version> = Vec::new();
        match (request.state, &version) {
            (State::Absent, None) => {
                for v in before.versions.keys() {
                    plan.stop_first
                        .extend(active(observed, &version_units(name, before, v).0));
                }
                after = PodState::default();
                started_after = false;
            }
            (State::Absent, Some(v)) => {
                if before.versions.contains_key(v) {
                    let (all, _) = version_units(name, before, v);
                    let running = active(observed, &all);
                    if before.current.as_ref() == Some(v)
                        && (observed.started || !running.is_empty())
                    {
                        return Err(PodError::Refused(format!(
                            "version {v} of pod {name} is the current version and is started; \
                             stop it first (state: stopped) or remove every version (leave version out)"
                        )));
                    }
                    plan.stop_first.extend(running);
                    after.versions.remove(v);
                    if after.current.as_ref() == Some(v) {
                        after.current = None;
                        started_after = false;
                    }
                    if after.previous.as_ref() == Some(v) {
                        after.previous = None;
                    }
                }
            }
            (State::Present, Some(_)) => {}
            (State::Stopped, Some(v)) => {
                if after.current.as_ref() == Some(v) {
                    // The target first: a manual start of it would bring
                    // the units back.
                    plan.stop_first
                        .extend(active(observed, &[units::target_name(name)]));
                    started_after = false;
                }
                plan.stop_first
                    .extend(active(observed, &version_units(name, &after, v).0));
            }
            (State::Started | State::Restarted, Some(v)) => {
                let switch = after.current.as_ref() != Some(v);
                if switch {
                    after.previous = after.current.replace(v.clone());
                }
                started_after = true;
                let (_, start) = version_units(name, &after, v);
                let new_ports: Vec<u16> = after.versions[v]
                    .record
                    .ports
                    .iter()
                    .map(|a| a.port)
                    .collect();
                for other in before.versions.keys().filter(|o| *o != v) {
                    let running = active(observed, &version_units(name, before, other).0);
                    // A version holding the ports the new one will listen
                    // on must let go of them first (and gets them back if
                    // the new one fails); others run until it is up.
                    let shares = before.versions[other]
                        .record
                        .ports
                        .iter()
                        .any(|a| new_ports.contains(&a.port));
                    if shares {
                        plan.stop_first.extend(running);
                        continue;
                    }
                    if !running.is_empty() {
                        keep_running_until_after.push(other.clone());
                    }
                    plan.stop_after.extend(running);
                }
                let is_up = |u: &String| observed.status.get(u).is_some_and(|s| s.is_up());
                let down = !start.iter().all(is_up);
                let target = units::target_name(name);
                let target_down = !is_up(&target);
                plan.start = Some(Start {
                    version: v.clone(),
                    units: start,
                    restart: request.state == State::Restarted && !switch,
                    switch,
                    target: target_down.then_some(target),
                });
                if !switch && !down && !target_down && request.state == State::Started {
                    // Already up: started only when its configuration changes.
                    plan.start = None;
                }
            }
            (_, None) => unreachable!("a version is resolved for every state but absent"),
        }

        if let Some(keep) = request.keep {
            if request.state != State::Absent || version.is_some() {
                for v in pruned(&after, keep, version.as_ref()) {
                    let running = active(observed, &version_units(name, before, &v).0);
                    if plan.start.is_some() || keep_running_until_after.contains(&v) {
                        if !running.is_empty() && !keep_running_until_after.contains(&v) {
                            keep_running_until_after.push(v.clone());
                        }
                        for unit in running {
                            if !plan.stop_after.contains(&unit) {
                                plan.stop_after.push(unit);
                            }
                        }
                    } else {
                        plan.stop_first.extend(running);
                    }
                    after.versions.remove(&v);
                    if after.previous.as_ref() == Some(&v) {
                        after.previous = None;
                    }
                }
            }
        }
        if after.versions.is_empty() {
            // The pod is gone: its target and slice stop too (a slice stays
            // active, empty, until stopped).
            plan.stop_first.extend(active(observed, &pod_units(name)));
        }
        plan.remove = before
            .versions
            .keys()
            .filter(|v| !after.versions.contains_key(*v))
            .cloned()
            .collect();

        plan.remove_images = unused_images(&store, name, before, &after, &plan.remove)?;

        // Unit files: versions stopped only after the new one is up keep
        // theirs until then.
        let final_files = units::desired(name, &after, started_after, &request.unit_dir, &store)?;
        let mut middle = after.clone();
        for v in &keep_running_until_after {
            if let Some(stored) = before.versions.get(v) {
                middle
                    .versions
                    .entry(v.clone())
                    .or_insert_with(|| stored.clone());
            }
        }
        let middle_files = units::desired(name, &middle, started_after, &request.unit_dir, &store)?;
        plan.files_before = units::changes(&observed.files, &middle_files);
        plan.files_after = units::changes(&middle_files, &final_files);
        units::check_foreign(name, &request.unit_dir, &plan.files_before)?;

        // Running units whose configuration changes are restarted.
        let reconfigured = version.as_ref().is_some_and(|v| {
            let prefix = format!("{name}-{v}-");
            plan.environment.is_some()
                || plan
                    .files_before
                    .iter()
                    .any(|c| c.path.to_string_lossy().starts_with(&prefix))
        });
        if let Some(start) = &mut plan.start {
            let running = start
                .units
                .iter()
                .any(|u| observed.status.get(u).is_some_and(|s| s.needs_stopping()));
            if !start.switch && reconfigured && running {
                start.restart = true;
            }
        } else if request.state == State::Started && reconfigured {
            let v = version.as_ref().expect("resolved");
            plan.start = Some(Start {
                version: v.clone(),
                units: version_units(name, &after, v).1,
                restart: true,
                switch: false,
                target: None,
            });
        }
        if plan
            .start
            .as_ref()
            .is_some_and(|s| s.units.is_empty() && !s.switch && s.target.is_none())
        {
            plan.start = None;
        }
        // The port record follows the store as it will be (and is repaired
        // if it does not match the store now).
        let held_after = ports::holders(&store, Some((name, &after)))?;
        plan.port_index = ports::index_changes(&store, &held_after)?;
        plan.ports = ports::report(name, &held_after);
        plan.after = after;
        plan.started_after = started_after;
        Ok(plan)
    }

    pub fn is_empty(&self) -> bool {
        self.actions().is_empty()
    }

    /// A short description for the lock holder file.
    pub fn describe(&self) -> String {
        let state = format!("{:?}", self.state).to_lowercase();
        match &self.version {
            Some(v) => format!("state={state} version={v}"),
            None => format!("state={state}"),
        }
    }

    /// The steps, in order, in words.
    pub fn actions(&self) -> Vec<String> {
        let name = &self.name;
        let mut out = Vec::new();
        // As apply does them: the new version's volumes are built in its
        // staged copy, then the images imported, then the version added.
        if let Some((new, _)) = &self.add {
            for v in &new.pod.volumes {
                out.push(crate::volume::create_action(
                    name,
                    &new.pod.version,
                    &v.name,
                    v.data.as_ref().map(Source::text).as_deref(),
                ));
            }
        }
        for import in &self.import_images {
            out.push(image::import_action(
                &import.id,
                &import.source,
                self.runtime,
            ));
        }
        if let Some((new, _)) = &self.add {
            out.push(format!(
                "add version {} of pod {name} to the store",
                new.pod.version
            ));
        }
        if self.environment.is_some() {
            out.push(self.environment_action());
        }
        if !self.stop_first.is_empty() {
            out.push(format!("stop {}", self.stop_first.join(" ")));
        }
        for change in &self.files_before {
            out.push(describe_change(change));
        }
        if !self.files_before.is_empty() {
            out.push("daemon-reload".to_owned());
        }
        if let Some(start) = &self.start {
            if start.switch {
                out.push(format!("make version {} current", start.version));
            }
            if !start.units.is_empty() {
                let verb = if start.restart { "restart" } else { "start" };
                out.push(format!(
                    "{verb} {} and wait until they are up",
                    start.units.join(" ")
                ));
            }
            if let Some(target) = &start.target {
                out.push(format!("start {target}"));
            }
        }
        if !self.stop_after.is_empty() {
            out.push(format!("stop {}", self.stop_after.join(" ")));
        }
        for change in &self.files_after {
            out.push(describe_change(change));
        }
        if !self.files_after.is_empty() {
            out.push("daemon-reload".to_owned());
        }
        for v in &self.remove {
            out.push(format!("remove version {v} of pod {name} from the store"));
        }
        for (id, runtime) in &self.remove_images {
            out.push(format!(
                "{} (no version uses it)",
                image::remove_action(id, *runtime)
            ));
        }
        let store = Store::new(&self.root);
        for change in &self.port_index {
            out.push(change.describe(&store));
        }
        out
    }

    /// The report of this plan; `changed` is set by the caller.
    pub(crate) fn report(&self, observed: &Observed, want_diff: bool) -> Report {
        let before = &observed.state;
        Report {
            changed: false,
            name: Some(self.name.clone()),
            version: self.version.clone(),
            current: self.after.current.clone(),
            previous: self.after.previous.clone(),
            actions: self.actions(),
            diff: if want_diff {
                self.diff(before, observed.started)
            } else {
                Vec::new()
            },
            warnings: self.warnings.clone(),
            pod: Value::Null,
            ports: self.ports.clone(),
        }
    }

    fn diff(&self, before: &PodState, started_before: bool) -> Vec<Value> {
        let changed_env = self.environment.as_ref().and(self.version.as_ref());
        let summary = |state: &PodState, started: bool, mark: Option<&Version>| {
            let versions: Vec<&Version> = state.by_age();
            let mut s = format!(
                "current: {}\nprevious: {}\nstarted at boot: {}\nversions: {}\n",
                state.current.as_ref().map_or("none", |v| v.as_str()),
                state.previous.as_ref().map_or("none", |v| v.as_str()),
                if started && state.current.is_some() {
                    "yes"
                } else {
                    "no"
                },
                list(&versions)
            );
            for (v, stored) in &state.versions {
                if let Some(env) = &stored.environment {
                    // Names only: the values are secret. What this run
                    // writes is marked: where it came from, or that a
                    // version's values changed (the names may not).
                    let changed = match (mark == Some(v), &self.environment_from) {
                        (false, _) => String::new(),
                        (true, Some(from)) => format!(", carried over from version {from}"),
                        (true, None) if before.versions.contains_key(v) => ", changed".to_owned(),
                        (true, None) => ", from the env option".to_owned(),
                    };
                    s.push_str(&format!(
                        "environment of {v}: {} (values hidden{changed})\n",
                        units::environment_names(env).join(", ")
                    ));
                }
            }
            s
        };
        let mut out = vec![json!({
            "before_header": format!("pod {} (store)", self.name),
            "after_header": format!("pod {} (store)", self.name),
            "before": summary(before, started_before, None),
            "after": summary(&self.after, self.started_after, changed_env),
        })];
        let store = Store::new(&self.root);
        if let Some((new, _)) = &self.add {
            for v in &new.pod.volumes {
                let path = crate::volume::data_path(&store, &self.name, &new.pod.version, &v.name);
                out.push(crate::volume::diff_entry(
                    &self.name,
                    &new.pod.version,
                    &v.name,
                    None,
                    Some(crate::volume::pod_diff_text(
                        &new.pod,
                        self.runtime,
                        v,
                        &path,
                    )),
                ));
            }
        }
        // A removed version takes its volumes with it.
        for v in &self.remove {
            let Some(stored) = before.versions.get(v) else {
                continue;
            };
            for volume in &stored.record.pod.volumes {
                let path = crate::volume::data_path(&store, &self.name, v, &volume.name);
                out.push(crate::volume::diff_entry(
                    &self.name,
                    v,
                    &volume.name,
                    Some(crate::volume::pod_diff_text(
                        &stored.record.pod,
                        stored.record.runtime,
                        volume,
                        &path,
                    )),
                    None,
                ));
            }
        }
        for import in &self.import_images {
            let location = records::location(&store, self.runtime, &import.id);
            out.push(image::diff_entry(
                &import.id.to_string(),
                self.runtime,
                &location,
                false,
                true,
            ));
        }
        for (id, runtime) in &self.remove_images {
            let location = records::location(&store, *runtime, id);
            out.push(image::diff_entry(
                &id.to_string(),
                *runtime,
                &location,
                true,
                false,
            ));
        }
        for change in &self.port_index {
            let path = change.path(&store).display().to_string();
            out.push(json!({
                "before_header": path,
                "after_header": path,
                "before": change.before.clone().unwrap_or_default(),
                "after": change.after.clone().unwrap_or_default(),
            }));
        }
        for change in self.files_before.iter().chain(&self.files_after) {
            out.push(json!({
                "before_header": change.path.display().to_string(),
                "after_header": change.path.display().to_string(),
                "before": change.before.as_ref().map(Entry::text).unwrap_or_default(),
                "after": change.after.as_ref().map(Entry::text).unwrap_or_default(),
            }));
        }
        out
    }
}

impl Plan {
    /// The action of writing (or removing) the version's environment
    /// file: names only, never values.
    pub(super) fn environment_action(&self) -> String {
        let version = self.version.as_ref().map_or("", |v| v.as_str());
        match (&self.environment, &self.environment_from) {
            (Some(Some(env)), Some(from)) => format!(
                "write the environment file of version {version}, carried over from version \
                 {from} (env not given): {} (values hidden)",
                units::environment_names(env).join(", ")
            ),
            (Some(Some(_)), None) => format!("write the environment file of version {version}"),
            _ => format!("remove the environment file of version {version}"),
        }
    }
}

pub(super) fn describe_change(change: &Change) -> String {
    let path = change.path.display();
    match (&change.before, &change.after) {
        (None, Some(_)) => format!("install {path}"),
        (Some(_), Some(_)) => format!("update {path}"),
        (_, None) => format!("remove {path}"),
    }
}

/// The images of version `v` that its runtime lacks, and where to get
/// them: the bundle when there is one.
fn images_to_import(
    request: &Request,
    store: &Store,
    runtime: Runtime,
    name: &PodName,
    v: &Version,
    after: &PodState,
    incoming: Option<&NewVersion>,
) -> Result<Vec<Import>, PodError> {
    let Some(stored) = after.versions.get(v) else {
        return Ok(Vec::new());
    };
    let mut imports = Vec::new();
    for wanted in &stored.record.pod.images {
        if image::present(store, runtime, &wanted.id, &mut image::PodmanCli)?.is_some() {
            continue;
        }
        let Some(new) = incoming else {
            return Err(PodError::Refused(format!(
                "image {} of version {v} of pod {name} is not in the {runtime} runtime; \
                 give the bundle to import it",
                wanted.id
            )));
        };
        // The stored record hides a URI's credentials: the bundle's own
        // image entry has them.
        let wanted = new
            .pod
            .images
            .iter()
            .find(|i| i.id == wanted.id)
            .unwrap_or(wanted);
        let locate = |source: &Source| match source {
            Source::Path(p) => Location::Path(new.bundle_dir.join(p)),
            Source::Uri(u) => Location::parse_uri(u).unwrap_or(Location::Http(u.clone())),
        };
        let import = Import {
            id: wanted.id.clone(),
            source: locate(&wanted.source),
            signature: wanted.signature.as_ref().map(locate),
            keyring: request.keyring.clone(),
            require_signature: request.require_signature,
            timeout: request.download_timeout,
        };
        import.check()?;
        imports.push(import);
    }
    Ok(imports)
}

/// Images of the removed versions that no version left in the store (of
/// any pod, this one's as it will be after the run) uses, and that ops has.
fn unused_images(
    store: &Store,
    name: &PodName,
    before: &PodState,
    after: &PodState,
    removed: &[Version],
) -> Result<Vec<(ImageId, Runtime)>, PodError> {
    let mut unused: Vec<(ImageId, Runtime)> = Vec::new();
    for v in removed {
        let record = &before.versions[v].record;
        for wanted in &record.pod.images {
            if unused
                .iter()
                .any(|(u, r)| *r == record.runtime && image::same_image(u, &wanted.id))
            {
                continue;
            }
            let kept_here = after.versions.values().any(|s| {
                s.record.runtime == record.runtime
                    && s.record
                        .pod
                        .images
                        .iter()
                        .any(|i| image::same_image(&i.id, &wanted.id))
            });
            let users = image::used_by(store, record.runtime, &wanted.id)?;
            let prefix = format!("{name}/");
            let used_elsewhere = users.iter().any(|u| !u.starts_with(&prefix));
            if !kept_here
                && !used_elsewhere
                && records::read(store, record.runtime, &wanted.id)?.is_some()
            {
                unused.push((wanted.id.clone(), record.runtime));
            }
        }
    }
    Ok(unused)
}

/// Check a new version's unit files as systemd will load them, in a
/// temporary directory outside the store (so check mode can too);
/// `false` when no verifier is installed.
fn verify(
    systemd: &mut dyn Systemd,
    store: &Store,
    runtime: Runtime,
    name: &PodName,
    version: &Version,
    new: &NewVersion,
    ports: &[ports::Allocation],
) -> Result<bool, PodError> {
    let files: Files = units::version_files(
        &new.pod,
        &new.units,
        None,
        units::Images { store, runtime },
        ports,
    )?;
    let dir = tempfile::Builder::new()
        .prefix("ops-verify-")
        .tempdir()
        .map_err(|e| {
            crate::atomic::FsError::from_io("create a directory in", &std::env::temp_dir(), e)
        })?;
    let mut top = Vec::new();
    for (path, entry) in &files {
        let full = dir.path().join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| crate::atomic::FsError::from_io("create", parent, e))?;
        }
        std::fs::write(&full, entry.text())
            .map_err(|e| crate::atomic::FsError::from_io("write", &full, e))?;
        if path.parent() == Some(Path::new("")) {
            top.push(full);
        }
    }
    // systemd-analyze looks for a unit's programs on the host even when
    // RootDirectory= says they are in an image (which check mode has not
    // even imported): that one complaint, about such units, is not a fault.
    let in_images: Vec<String> = new
        .pod
        .units
        .iter()
        .filter(|u| u.image.is_some())
        .map(|u| {
            let installed = units::installed_name(name, version, &u.name);
            installed
                .split(['@', '.'])
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let only_image_programs = |stderr: &str| {
        !in_images.is_empty()
            && stderr.lines().filter(|l| !l.trim().is_empty()).all(|line| {
                line.contains("is not executable")
                    && in_images.iter().any(|u| line.contains(u.as_str()))
            })
    };
    match systemd.verify(&top) {
        Ok(verified) => Ok(verified),
        Err(CommandError::Failed { stderr, .. }) if only_image_programs(&stderr) => Ok(true),
        Err(CommandError::Failed { how, stderr, .. }) => Err(PodError::Invalid {
            pod: name.clone(),
            version: version.clone(),
            source: CommandError::Failed {
                line: "systemd-analyze verify".to_owned(),
                how,
                stderr: in_bundle_terms(
                    &stderr,
                    dir.path(),
                    name,
                    version,
                    &new.bundle_dir,
                    &new.pod.units,
                ),
            },
        }),
        Err(source) => Err(PodError::Invalid {
            pod: name.clone(),
            version: version.clone(),
            source,
        }),
    }
}

/// systemd-analyze's complaints about the copies in `dir`, told in the
/// bundle's terms: `<dir>/shop-1-web@.service:6` is the bundle's
/// `<bundle>/units/web@.service:5` (ops put one header line on top), and the
/// temporary directory is left out of the other paths (drop-ins).
fn in_bundle_terms(
    stderr: &str,
    dir: &Path,
    name: &PodName,
    version: &Version,
    bundle_dir: &Path,
    units: &[crate::bundle::Unit],
) -> String {
    let mut text = stderr.to_owned();
    for unit in units {
        let file = bundle_dir.join(&unit.file);
        let copy = format!(
            "{}/{}:",
            dir.display(),
            units::installed_name(name, version, &unit.name)
        );
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(at) = rest.find(&copy) {
            out.push_str(&rest[..at]);
            let after = &rest[at + copy.len()..];
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            match after[..digits].parse::<u64>() {
                Ok(line) if line > 1 => {
                    out.push_str(&format!("{}:{}", file.display(), line - 1));
                    rest = &after[digits..];
                }
                _ => {
                    out.push_str(&format!("{}:", file.display()));
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        text = out;
    }
    text.replace(&format!("{}/", dir.display()), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_complaints_name_the_bundle_file_and_its_line() {
        let unit = crate::bundle::Unit {
            name: crate::records::names::UnitName::parse("web@.service").unwrap(),
            file: "units/web@.service".into(),
            instances: vec!["1".into()],
            start: true,
            image: None,
            instance_ports: false,
        };
        let dir = Path::new("/tmp/ops-verify-AbC123");
        let stderr = "/tmp/ops-verify-AbC123/hello-1-web@.service:6: Unknown key name 'ExecStrat' in section 'Service', ignoring.\n\
                      /tmp/ops-verify-AbC123/hello-1-web@1.service.d/50-ops.conf:3: something\n\
                      hello-1-web@i.service: Service has no ExecStart=, ExecStop=, or SuccessAction=. Refusing.";
        let shown = in_bundle_terms(
            stderr,
            dir,
            &PodName::parse("hello").unwrap(),
            &Version::parse("1").unwrap(),
            Path::new("/srv/bundles/hello-1"),
            &[unit],
        );
        assert_eq!(
            shown,
            "/srv/bundles/hello-1/units/web@.service:5: Unknown key name 'ExecStrat' in section 'Service', ignoring.\n\
             hello-1-web@1.service.d/50-ops.conf:3: something\n\
             hello-1-web@i.service: Service has no ExecStart=, ExecStop=, or SuccessAction=. Refusing."
        );
    }
    use std::collections::BTreeMap;

    fn state(versions: &[&str], current: Option<&str>) -> PodState {
        let mut s = PodState::default();
        for (i, v) in versions.iter().enumerate() {
            let pod = crate::bundle::Pod {
                name: PodName::parse("p").unwrap(),
                version: Version::parse(v).unwrap(),
                units: vec![],
                images: vec![],
                volumes: vec![],
                ports: vec![],
                environment: BTreeMap::new(),
            };
            s.versions.insert(
                Version::parse(v).unwrap(),
                StoredVersion {
                    record: VersionRecord {
                        format: 1,
                        sequence: i as u64 + 1,
                        deployed_at: 0,
                        digest: String::new(),
                        pod,
                        runtime: Default::default(),
                        ports: Vec::new(),
                    },
                    units: BTreeMap::new(),
                    environment: None,
                },
            );
        }
        s.current = current.map(|c| Version::parse(c).unwrap());
        s
    }

    fn names(v: Vec<Version>) -> Vec<String> {
        v.into_iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn keep_prunes_the_oldest_but_never_current_or_the_acted_on_version() {
        let s = state(&["1", "2", "3", "4"], Some("2"));
        assert_eq!(names(pruned(&s, 1, None)), ["1", "3", "4"]);
        assert_eq!(names(pruned(&s, 2, None)), ["1", "3"]);
        assert_eq!(names(pruned(&s, 0, None)), ["1", "3", "4"]);
        assert_eq!(
            names(pruned(&s, 1, Some(&Version::parse("4").unwrap()))),
            ["1", "3"]
        );
        assert!(pruned(&s, 9, None).is_empty());
    }
}
