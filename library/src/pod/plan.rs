//! From a request and the observed host to the steps that get there.
//!
//! The plan is the whole decision: which version is added, which removed,
//! where `current` points, which unit files change, which units stop
//! before anything else, which start, which stop once the new version is
//! up. Check mode reports it; a real run applies it. The refusals of the
//! request against the host are made here (the bundle's own are made when
//! it is read, a planted symlink's in `planted`), all before anything is
//! written. Planning is pure: it reads only the request and the
//! [`Observed`] host (no file, no process, no clock).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::observe::{holders, idle_ports, import_for, list, new_ports, resolve_version, Observed};
use super::step::Step;
use super::{pod_units, version_units, Report, Request, State};
use crate::bundle::{ImageId, PodName, Version};
use crate::image::{self, Import, Runtime};
use crate::outcome::Refusal;
use crate::ports;
use crate::records::idle::{IdleRecord, WokenRecord, IDLE_FORMAT};
use crate::records::version::{VersionRecord, META_FORMAT};
use crate::store::{NewVersion, PodState, Store, StoredVersion};
use crate::units::{self, Change, Files};

/// The steps that bring the pod to the requested state, and what the run
/// reports of them.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub name: PodName,
    pub version: Option<Version>,
    pub state: State,
    /// Steps until the version is in place: a failure undoes them all.
    pub prepare: Vec<Step>,
    /// Starting the version: a failure undoes all (or not, by `rollback`).
    pub start: Vec<Step>,
    /// Once the version is up: a failure is not undone.
    pub finish: Vec<Step>,
    /// `current` moves to the started version in this run.
    pub switch: bool,
    /// The store and boot state once the run is done.
    pub after: PodState,
    pub started_after: bool,
    /// The version's environment file is written or removed.
    pub environment_changes: bool,
    /// The version whose environment file a new version carries over.
    pub environment_from: Option<Version>,
    /// The store's root, where images are.
    pub root: PathBuf,
    /// Said to the user, e.g. that a check could not be made.
    pub warnings: Vec<String>,
    /// The pod's ports once the run is done, as reported.
    pub ports: Vec<Value>,
}

/// What to start once the store and unit files are in place.
#[derive(Debug, Clone)]
struct Start {
    version: Version,
    units: Vec<String>,
    /// Restart (the configuration of running units changed, or
    /// `state: restarted`) rather than start.
    restart: bool,
    switch: bool,
    /// The pod's target, started once the units are up, if it is not
    /// active.
    target: Option<String>,
}

/// The plan as it is worked out.
struct Draft<'a> {
    request: &'a Request,
    observed: &'a Observed,
    name: &'a PodName,
    version: Option<Version>,
    runtime: Runtime,
    add: Option<(NewVersion, VersionRecord)>,
    /// A new environment file for `version` (`None`: remove it).
    environment: Option<Option<Vec<u8>>>,
    environment_from: Option<Version>,
    after: PodState,
    started_after: bool,
    stop_first: Vec<String>,
    start: Option<Start>,
    stop_after: Vec<String>,
    /// Versions that run until the started one is up, their unit files too.
    keep_running: Vec<Version>,
    files_before: Vec<Change>,
    files_after: Vec<Change>,
    /// Versions an older ops staged without their marker, whose unit files
    /// this run writes with the pivot condition: marked first.
    mark: Vec<Version>,
    remove: Vec<Version>,
    imports: Vec<Import>,
    /// Images the version would add by URI without an id (shown), not
    /// downloaded: check mode's plan only.
    fetches: Vec<String>,
    remove_images: Vec<(ImageId, Runtime)>,
    warnings: Vec<String>,
}

/// The pod a request is about: the deployment the bundle is deployed as
/// (its model carries that name), or `name`.
pub(crate) fn pod_name(
    request: &Request,
    incoming: Option<&NewVersion>,
) -> Result<PodName, Refusal> {
    match (incoming, &request.name) {
        (Some(new), _) => Ok(new.pod.name.clone()),
        (None, Some(name)) => Ok(name.clone()),
        (None, None) => Err(Refusal::new("give a bundle or a name")),
    }
}

/// Plan the request on the observed host.
pub(crate) fn plan(request: &Request, observed: &Observed) -> Result<Plan, Refusal> {
    // The waker's run: only an idle pod is woken, as `state: started`
    // starts its current version.
    let woken;
    let request = match (request.wake, &observed.state.idle) {
        (false, _) => request,
        (true, None) => return Ok(Plan::nothing(request, observed)),
        (true, Some(_)) => {
            woken = Request {
                state: State::Started,
                version: None,
                ..request.clone()
            };
            &woken
        }
    };
    let version = resolve_version(request, observed)?;
    if let Some(new) = &observed.incoming {
        one_bundle(&observed.name, &observed.state, new)?;
    }
    let mut d = Draft {
        request,
        observed,
        name: &observed.name,
        version: version.clone(),
        runtime: Runtime::Systemd,
        add: None,
        environment: None,
        environment_from: None,
        after: observed.state.clone(),
        started_after: observed.started,
        stop_first: Vec::new(),
        start: None,
        stop_after: Vec::new(),
        keep_running: Vec::new(),
        files_before: Vec::new(),
        files_after: Vec::new(),
        mark: Vec::new(),
        remove: Vec::new(),
        imports: Vec::new(),
        fetches: Vec::new(),
        remove_images: Vec::new(),
        warnings: Vec::new(),
    };
    if let (Some(v), true) = (&version, request.state != State::Absent) {
        d.place(v)?;
        if let Some(refusal) = &observed.volumes {
            return Err(refusal.clone());
        }
        d.plan_environment(v);
    }
    if let Some(v) = &version {
        let runs = matches!(request.state, State::Started | State::Restarted);
        if observed.incoming.is_some() || runs {
            d.imports = d.images_to_import(v)?;
        }
    }
    match (request.state, &version) {
        (State::Absent, None) => d.plan_absent_all(),
        (State::Absent, Some(v)) => d.plan_absent(v)?,
        (State::Present, Some(_)) => {}
        (State::Stopped, Some(v)) => d.plan_stopped(v),
        (State::Started | State::Restarted, Some(v)) => d.plan_started(v),
        (State::Idle, Some(v)) => d.plan_idle(v)?,
        (_, None) => unreachable!("a version is resolved for every state but absent"),
    }
    d.plan_unidle();
    d.plan_keep();
    d.plan_removals()?;
    d.plan_files()?;
    d.plan_restart();
    d.into_plan()
}

/// A deployment holds versions of one bundle: a bundle of another name
/// deployed under its name is refused (a typo in `name` must not replace
/// another deployment's app), naming both bundles.
fn one_bundle(name: &PodName, before: &PodState, new: &NewVersion) -> Result<(), Refusal> {
    let incoming = new.pod.bundle();
    let others: Vec<&Version> = before
        .by_age()
        .into_iter()
        .filter(|v| before.versions[*v].record.pod.bundle() != incoming)
        .collect();
    let Some(first) = others.first() else {
        return Ok(());
    };
    let theirs = before.versions[*first].record.pod.bundle();
    Err(Refusal(format!(
        "pod {name} is a deployment of bundle {theirs} (versions {}), not of bundle {incoming}: \
         a deployment comes from one bundle; give another name, or remove pod {name} first \
         (state: absent without version)",
        list(&others)
    )))
}

/// Whether the bundle's version is the stored one. A version recorded
/// before the bundle's name was (by an older ops) came from a bundle of
/// the pod's own name: its digest is compared with the bundle's taken
/// without the name, so a rerun is nothing to do and the record, drop-ins
/// and running units stay as they are.
fn same_content(stored: &VersionRecord, new: &NewVersion) -> bool {
    if stored.pod.bundle_name.is_some() || new.pod.bundle() != &stored.pod.name {
        return stored.digest == new.digest;
    }
    let mut unnamed = new.pod.clone();
    unnamed.bundle_name = None;
    stored.digest == crate::store::digest(&unnamed, &new.units)
}

fn refusal(error: &dyn std::error::Error) -> Refusal {
    Refusal(crate::ansible::error_chain(error))
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

impl Draft<'_> {
    /// The units of `units` that run now.
    fn active(&self, units: &[String]) -> Vec<String> {
        units
            .iter()
            .filter(|u| {
                self.observed
                    .status
                    .get(*u)
                    .is_some_and(|s| s.needs_stopping())
            })
            .cloned()
            .collect()
    }

    /// The version must be in the store, or come with the bundle.
    fn place(&mut self, v: &Version) -> Result<(), Refusal> {
        let (name, request) = (self.name, self.request);
        let before = &self.observed.state;
        match (before.versions.get(v), &self.observed.incoming) {
            (Some(_), Some(new)) if !new.unresolved.is_empty() => Err(Refusal(format!(
                "version {v} of pod {name} is already deployed with different content: the \
                 bundle gives image {} by a uri without an id, and the stored version has no id \
                 computed from that uri (the same uri would be read as the same image); \
                 versions are immutable: give the bundle a new version, or remove version {v} \
                 first (state: absent)",
                crate::records::uri::redact(&new.unresolved[0].source.text())
            ))),
            (Some(stored), Some(new)) if !same_content(&stored.record, new) => {
                Err(Refusal(format!(
                    "version {v} of pod {name} is already deployed with different content \
                     (stored {}, bundle {}{}); versions are immutable: give the bundle a new \
                     version, or remove version {v} first (state: absent)",
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
                        Err(Refusal(format!(
                            "version {v} of pod {name} runs its images in the {recorded} \
                             runtime, not {asked}; deploy a new version to change runtime"
                        )))
                    }
                    _ => {
                        self.runtime = recorded;
                        Ok(())
                    }
                }
            }
            (None, Some(new)) => self.add_version(v, new),
            (None, None) if before.versions.is_empty() => Err(Refusal(format!(
                "pod {name} is not deployed under {} (pods there: {}); give a bundle (or repo) \
                 to deploy version {v}",
                request.root.display(),
                super::observe::other_pod_names(self.observed)
            ))),
            (None, None) => Err(Refusal(format!(
                "version {v} of pod {name} is not in the store at {}; give its bundle to deploy \
                 it (stored versions: {})",
                request.root.display(),
                list(&before.by_age())
            ))),
        }
    }

    /// A version the bundle adds: its ports, its record, its unit files
    /// verified.
    fn add_version(&mut self, v: &Version, new: &NewVersion) -> Result<(), Refusal> {
        let (name, observed) = (self.name, self.observed);
        self.runtime = self.request.runtime.unwrap_or_default();
        let held = holders(observed, &observed.state)?;
        let allocated = new_ports(self.request, observed, new)?;
        for a in &allocated {
            let newly = !held.get(&a.port).is_some_and(|h| h.pod == *name);
            if a.kind != ports::Kind::Assigned && newly && observed.listening.contains(&a.port) {
                self.warnings.push(format!(
                    "port {} ({}) of pod {name} is being listened on by a process that is not \
                     this pod's: version {v} may fail to bind it",
                    a.port,
                    a.describe()
                ));
            }
        }
        for image in new
            .pod
            .images
            .iter()
            .filter(|i| i.computed && i.signature.is_none())
        {
            self.warnings.push(format!(
                "image {} of pod {name} version {v}: pod.json gives no id, so ops computed {} \
                 from the file; nothing pinned it (no id, no signature): give the id in \
                 pod.json to deploy only that image",
                image.source.text(),
                image.id
            ));
        }
        unit_names_are_free(name, v, new, observed)?;
        self.unresolved_images(v, new)?;
        let record = VersionRecord {
            format: META_FORMAT,
            sequence: observed.state.next_sequence(),
            deployed_at: observed.now,
            digest: new.digest.clone(),
            pod: new.pod.clone(),
            runtime: self.runtime,
            ports: allocated,
        };
        match &observed.verified {
            Some(Err(refused)) => return Err(refused.clone()),
            Some(Ok(true)) => {}
            Some(Ok(false)) | None => self.warnings.push(
                "systemd-analyze is not installed: the unit files were not verified before \
                 installing"
                    .to_owned(),
            ),
        }
        self.after.versions.insert(
            v.clone(),
            StoredVersion {
                record: record.clone(),
                units: new.units.clone(),
                environment: None,
            },
        );
        self.add = Some((new.clone(), record));
        Ok(())
    }

    /// The images the version would add by URI without an id: their ids
    /// are unknown until a real run downloads them (check mode downloads
    /// nothing). What the import would refuse without reading the image is
    /// refused now.
    fn unresolved_images(&mut self, v: &Version, new: &NewVersion) -> Result<(), Refusal> {
        let (name, request) = (self.name, self.request);
        for pending in &new.unresolved {
            let uri = crate::records::uri::redact(&pending.source.text()).into_owned();
            match (&pending.signature, &request.keyring) {
                (Some(_), None) => {
                    return Err(Refusal(format!(
                        "image {uri}: a signature is given but no keyring to check it with"
                    )))
                }
                (None, _) if request.require_signature => {
                    return Err(Refusal(format!(
                        "image {uri}: require_signature is set but the image has no signature"
                    )))
                }
                (None, _) => self.warnings.push(format!(
                    "image {uri} of pod {name} version {v}: pod.json gives no id, so ops \
                     computes it once it has downloaded the image (unknown until then: check \
                     mode downloads nothing); nothing pins it (no id, no signature): give the \
                     id in pod.json to deploy only that image"
                )),
                (Some(_), Some(_)) => {}
            }
            self.fetches.push(uri);
        }
        Ok(())
    }

    /// A new version deployed without `env` gets the current version's
    /// secret environment: an upgrade must not silently drop it (`env: {}`
    /// asks for none). A stored version keeps its own.
    fn plan_environment(&mut self, v: &Version) {
        let before = &self.observed.state;
        let carried = match (&self.request.env, &self.add, &before.current) {
            (None, Some(_), Some(current)) => before
                .versions
                .get(current)
                .and_then(|s| s.environment.clone())
                .map(|env| (current.clone(), env)),
            _ => None,
        };
        let wanted = match (&self.request.env, carried) {
            (Some(env), _) => Some((!env.is_empty()).then(|| units::environment_file(env))),
            (None, Some((from, env))) => {
                self.environment_from = Some(from);
                Some(Some(env))
            }
            (None, None) => None,
        };
        if let Some(wanted) = wanted {
            let stored = self.after.versions.get_mut(v).expect("present");
            if stored.environment != wanted {
                stored.environment.clone_from(&wanted);
                self.environment = Some(wanted);
            }
        }
    }

    /// The images of version `v` that its runtime lacks, and where to get
    /// them: the bundle when there is one.
    fn images_to_import(&self, v: &Version) -> Result<Vec<Import>, Refusal> {
        let (name, runtime) = (self.name, self.runtime);
        let Some(stored) = self.after.versions.get(v) else {
            return Ok(Vec::new());
        };
        let mut imports = Vec::new();
        for wanted in &stored.record.pod.images {
            match self.observed.present.get(&wanted.id) {
                Some(Ok(true)) => continue,
                Some(Err(refused)) => return Err(refused.clone()),
                Some(Ok(false)) | None => {}
            }
            let Some(new) = &self.observed.incoming else {
                return Err(Refusal(format!(
                    "image {} of version {v} of pod {name} is not in the {runtime} runtime; \
                     give the bundle to import it",
                    wanted.id
                )));
            };
            if let Some(refused) = self.observed.import_refused.get(&wanted.id) {
                return Err(refused.clone());
            }
            imports.push(import_for(self.request, new, wanted));
        }
        Ok(imports)
    }

    /// `state: absent` without a version: every version goes.
    fn plan_absent_all(&mut self) {
        let before = &self.observed.state;
        for v in before.versions.keys() {
            let running = self.active(&version_units(before, v).0);
            self.stop_first.extend(running);
        }
        self.after = PodState::default();
        self.started_after = false;
    }

    fn plan_absent(&mut self, v: &Version) -> Result<(), Refusal> {
        let (name, before) = (self.name, &self.observed.state);
        if !before.versions.contains_key(v) {
            return Ok(());
        }
        let running = self.active(&version_units(before, v).0);
        if before.current.as_ref() == Some(v) && (self.observed.started || !running.is_empty()) {
            return Err(Refusal(format!(
                "version {v} of pod {name} is the current version and is started; stop it first \
                 (state: stopped) or remove every version (leave version out)"
            )));
        }
        self.stop_first.extend(running);
        self.after.versions.remove(v);
        if self.after.current.as_ref() == Some(v) {
            self.after.current = None;
            self.started_after = false;
        }
        if self.after.previous.as_ref() == Some(v) {
            self.after.previous = None;
        }
        Ok(())
    }

    fn plan_stopped(&mut self, v: &Version) {
        let name = self.name;
        if self.after.current.as_ref() == Some(v) {
            // The target first: a manual start of it would bring the units
            // back.
            let target = self.active(&[units::target_name(name)]);
            self.stop_first.extend(target);
            self.started_after = false;
        }
        let running = self.active(&version_units(&self.after, v).0);
        self.stop_first.extend(running);
    }

    fn plan_started(&mut self, v: &Version) {
        let (name, observed) = (self.name, self.observed);
        let before = &observed.state;
        let switch = self.after.current.as_ref() != Some(v);
        if switch {
            self.after.previous = self.after.current.replace(v.clone());
        }
        self.started_after = true;
        let (_, start) = version_units(&self.after, v);
        // A default port counts only when something listens on it: the
        // units of a pod that names no port may not use it, and such a
        // pod keeps switching with the old version running until the new
        // one is up.
        let new_ports: Vec<u16> = self.after.versions[v]
            .record
            .ports
            .iter()
            .filter(|a| a.kind != ports::Kind::Default || observed.listening.contains(&a.port))
            .map(|a| a.port)
            .collect();
        for other in before.versions.keys().filter(|o| *o != v) {
            let running = self.active(&version_units(before, other).0);
            // A version holding the ports the new one will listen on must
            // let go of them first (and gets them back if the new one
            // fails); others run until it is up.
            let shares = before.versions[other]
                .record
                .ports
                .iter()
                .any(|a| new_ports.contains(&a.port));
            if shares {
                self.stop_first.extend(running);
                continue;
            }
            if !running.is_empty() {
                self.keep_running.push(other.clone());
            }
            self.stop_after.extend(running);
        }
        let is_up = |u: &String| observed.status.get(u).is_some_and(|s| s.is_up());
        let down = !start.iter().all(is_up);
        let target = units::target_name(name);
        let target_down = !is_up(&target);
        let state = self.request.state;
        // Already up: started only when its configuration changes.
        let up = !switch && !down && !target_down && state == State::Started;
        self.start = (!up).then(|| Start {
            version: v.clone(),
            units: start,
            restart: state == State::Restarted && !switch,
            switch,
            target: target_down.then_some(target),
        });
    }

    /// `state: idle`: the current version stops, its ports armed where it
    /// listened.
    fn plan_idle(&mut self, v: &Version) -> Result<(), Refusal> {
        let (name, observed, request) = (self.name, self.observed, self.request);
        if self.after.current.as_ref() != Some(v) {
            let current = self.after.current.as_ref();
            return Err(Refusal(format!(
                "state: idle acts on the current version of pod {name}, and version {v} is not \
                 (current: {}); {}",
                current.map_or("none", |c| c.as_str()),
                idle_advice(request, current.is_some())
            )));
        }
        let ports: std::collections::BTreeSet<u16> = self.after.versions[v]
            .record
            .ports
            .iter()
            .map(|a| a.port)
            .collect();
        if ports.is_empty() {
            return Err(Refusal(format!(
                "pod {name} has no ports to be woken by; use state: stopped"
            )));
        }
        self.plan_stopped(v);
        let addresses = match &observed.state.idle {
            // The sockets listen now, where the version did.
            Some(before) if before.version == *v => before.addresses.clone(),
            _ => {
                let unseen: Vec<String> = (ports.iter())
                    .filter(|p| !observed.listeners.contains_key(p))
                    .map(u16::to_string)
                    .collect();
                if !unseen.is_empty() {
                    self.warnings.push(format!(
                        "nothing listens on port {} of pod {name} now (is version {v} \
                         running?), so ops cannot tell on which addresses it does: armed on \
                         every address",
                        unseen.join(", ")
                    ));
                }
                listened_on(&observed.listeners, &ports)
            }
        };
        let mut record = IdleRecord {
            format: IDLE_FORMAT,
            since: observed.now,
            version: v.clone(),
            ports: ports.into_iter().collect(),
            addresses,
            start_timeout: request.start_timeout.as_secs(),
            min_up_time: request.min_up_time.as_secs(),
        };
        // Idle already, as asked: it stays idle since then.
        if let Some(before) = &observed.state.idle {
            let same = IdleRecord {
                since: before.since,
                ..record.clone()
            };
            if same == *before {
                record.since = before.since;
            }
        }
        self.after.idle = Some(record);
        Ok(())
    }

    /// A pod idle before and not after is disarmed first: its sockets hold
    /// the ports its version listens on. (The waker is not stopped: in a
    /// wake, it is what runs this.)
    fn plan_unidle(&mut self) {
        let after = &self.after;
        // present leaves the pod idle; absent too when another version
        // goes. Any other state, or the idle version no longer current,
        // ends it.
        let keeps = matches!(
            self.request.state,
            State::Idle | State::Present | State::Absent
        );
        if !keeps
            || after
                .idle
                .as_ref()
                .is_some_and(|r| after.current.as_ref() != Some(&r.version))
        {
            self.after.idle = None;
        }
        let before = &self.observed.state;
        if before.idle.is_some() && self.after.idle.is_none() {
            let mut armed = units::idle_units(self.name, &idle_ports(before));
            armed.pop();
            let armed = self.active(&armed);
            self.stop_first.splice(0..0, armed);
        }
        // Sockets for ports the pod no longer arms (their files go now)
        // would listen until a reboot.
        let kept = (self.after.idle.as_ref())
            .map_or_else(Vec::new, |r| units::idle_units(self.name, &r.ports));
        let stale: Vec<String> = (self.observed.files.keys().filter_map(|p| p.to_str()))
            .filter(|n| n.ends_with(".socket") && units::is_idle_unit(self.name, n))
            .filter(|n| !kept.iter().any(|k| k == n))
            .map(str::to_owned)
            .collect();
        for unit in self.active(&stale) {
            if !self.stop_first.contains(&unit) {
                self.stop_first.insert(0, unit);
            }
        }
    }

    /// `keep`: the oldest versions beyond it go, those running once the
    /// started version is up.
    fn plan_keep(&mut self) {
        let Some(keep) = self.request.keep else {
            return;
        };
        if self.request.state == State::Absent && self.version.is_none() {
            return;
        }
        let before = &self.observed.state;
        for v in pruned(&self.after, keep, self.version.as_ref()) {
            let running = self.active(&version_units(before, &v).0);
            if self.start.is_some() || self.keep_running.contains(&v) {
                if !running.is_empty() && !self.keep_running.contains(&v) {
                    self.keep_running.push(v.clone());
                }
                for unit in running {
                    if !self.stop_after.contains(&unit) {
                        self.stop_after.push(unit);
                    }
                }
            } else {
                self.stop_first.extend(running);
            }
            self.after.versions.remove(&v);
            if self.after.previous.as_ref() == Some(&v) {
                self.after.previous = None;
            }
        }
    }

    /// Versions that leave the store, and the images no version uses then.
    fn plan_removals(&mut self) -> Result<(), Refusal> {
        let before = &self.observed.state;
        if self.after.versions.is_empty() {
            // The pod is gone: its target and slice stop too (a slice
            // stays active, empty, until stopped).
            let pod = self.active(&pod_units(self.name));
            self.stop_first.extend(pod);
        }
        self.remove = before
            .versions
            .keys()
            .filter(|v| !self.after.versions.contains_key(*v))
            .cloned()
            .collect();
        self.remove_images = self.unused_images()?;
        Ok(())
    }

    /// Images of the removed versions that no version left in the store
    /// (of any pod, this one's as it will be after the run) uses, and that
    /// ops has.
    fn unused_images(&self) -> Result<Vec<(ImageId, Runtime)>, Refusal> {
        let observed = self.observed;
        let mut unused: Vec<(ImageId, Runtime)> = Vec::new();
        for v in &self.remove {
            let record = &observed.state.versions[v].record;
            let runtime = record.runtime;
            for wanted in &record.pod.images {
                let uses = |state: &PodState| {
                    state.versions.values().any(|s| {
                        s.record.runtime == runtime
                            && s.record
                                .pod
                                .images
                                .iter()
                                .any(|i| image::same_image(&i.id, &wanted.id))
                    })
                };
                if unused
                    .iter()
                    .any(|(u, r)| *r == runtime && image::same_image(u, &wanted.id))
                    || uses(&self.after)
                    || observed
                        .others
                        .as_ref()
                        .map_err(Clone::clone)?
                        .values()
                        .any(uses)
                {
                    continue;
                }
                let key = (runtime, wanted.id.clone());
                match observed.recorded.get(&key) {
                    Some(Ok(true)) => unused.push((wanted.id.clone(), runtime)),
                    Some(Err(refused)) => return Err(refused.clone()),
                    Some(Ok(false)) | None => {}
                }
            }
        }
        Ok(unused)
    }

    /// Unit files: versions stopped only after the new one is up keep
    /// theirs until then.
    fn plan_files(&mut self) -> Result<(), Refusal> {
        let (name, observed) = (self.name, self.observed);
        let store = Store::new(&self.request.root);
        let unit_dir = &self.request.unit_dir;
        let desired = |state: &PodState| -> Result<Files, Refusal> {
            units::desired(name, state, self.started_after, unit_dir, &store)
                .map_err(|e| refusal(&e))
        };
        let final_files = desired(&self.after)?;
        let mut middle = self.after.clone();
        for v in &self.keep_running {
            if let Some(stored) = observed.state.versions.get(v) {
                middle
                    .versions
                    .entry(v.clone())
                    .or_insert_with(|| stored.clone());
            }
        }
        let middle_files = desired(&middle)?;
        // Every version whose units are installed from now on names its
        // marker: one missing is written before the unit files.
        self.mark = (middle.versions.keys())
            .filter(|v| observed.state.unmarked.contains(*v))
            .cloned()
            .collect();
        self.files_before = units::changes(&observed.files, &middle_files);
        self.files_after = units::changes(&middle_files, &final_files);
        // Refuse to write over a file ops did not write.
        for change in &self.files_before {
            if change.before.is_none()
                && change.after.is_some()
                && observed.unit_paths.contains(&change.path)
            {
                let (path, pod) = (unit_dir.join(&change.path), name.clone());
                return Err(refusal(&match observed.unit_owners.get(&change.path) {
                    Some(owner) => units::UnitsError::OtherPods {
                        path,
                        pod,
                        owner: owner.clone(),
                    },
                    None => units::UnitsError::Foreign { path, pod },
                }));
            }
        }
        Ok(())
    }

    /// Running units whose configuration changes are restarted.
    fn plan_restart(&mut self) {
        let name = self.name;
        let reconfigured = self.version.as_ref().is_some_and(|v| {
            let prefix = crate::records::unit_names::version_prefix(name, v);
            self.environment.is_some()
                || (self.files_before.iter())
                    .filter(|c| units::reconfigures(c))
                    .any(|c| c.path.to_string_lossy().starts_with(&prefix))
        });
        let status = &self.observed.status;
        if let Some(start) = &mut self.start {
            let running = start
                .units
                .iter()
                .any(|u| status.get(u).is_some_and(|s| s.needs_stopping()));
            if !start.switch && reconfigured && running {
                start.restart = true;
            }
        } else if self.request.state == State::Started && reconfigured {
            let v = self.version.as_ref().expect("resolved");
            self.start = Some(Start {
                version: v.clone(),
                units: version_units(&self.after, v).1,
                restart: true,
                switch: false,
                target: None,
            });
        }
        if self
            .start
            .as_ref()
            .is_some_and(|s| s.units.is_empty() && !s.switch && s.target.is_none())
        {
            self.start = None;
        }
    }

    /// The steps, in the order apply takes them.
    fn into_plan(self) -> Result<Plan, Refusal> {
        let (name, before) = (self.name, &self.observed.state);
        let mut prepare: Vec<Step> = (self.fetches.iter())
            .map(|uri| Step::Fetch(uri.clone(), self.runtime))
            .collect();
        if let Some((new, record)) = &self.add {
            prepare.push(Step::Stage(Box::new(new.clone()), Box::new(record.clone())));
        }
        for import in &self.imports {
            prepare.push(Step::Import(Box::new(import.clone()), self.runtime));
        }
        if let Some((new, _)) = &self.add {
            prepare.push(Step::Commit(name.clone(), new.pod.version.clone()));
        }
        if let (Some(file), Some(v)) = (&self.environment, &self.version) {
            prepare.push(Step::Environment {
                version: v.clone(),
                file: file.clone(),
                before: before.versions.get(v).and_then(|s| s.environment.clone()),
                from: self.environment_from.clone(),
                added: self.add.is_some(),
            });
        }
        if !self.mark.is_empty() {
            prepare.push(Step::Mark(name.clone(), self.mark.clone()));
        }
        if !self.stop_first.is_empty() {
            prepare.push(Step::Stop(self.stop_first.clone()));
        }
        prepare.extend(self.idle_steps());
        if !self.files_before.is_empty() {
            prepare.push(Step::UnitFiles(self.files_before.clone()));
        }
        let (current, previous) = (&self.after.current, &self.after.previous);
        if *current != before.current || *previous != before.previous {
            prepare.push(Step::Pointers {
                current: current.clone(),
                previous: previous.clone(),
                made_current: current.clone().filter(|_| *current != before.current),
            });
        }
        let start = self.start_steps();
        let finish = self.finish_steps();
        Plan {
            name: name.clone(),
            version: self.version,
            state: self.request.state,
            prepare,
            start,
            finish,
            switch: self.start.as_ref().is_some_and(|s| s.switch),
            after: self.after,
            started_after: self.started_after,
            environment_changes: self.environment.is_some(),
            environment_from: self.environment_from,
            root: self.request.root.clone(),
            warnings: self.warnings,
            ports: Vec::new(),
        }
        .with_ports(self.observed)
    }

    fn start_steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        if self.arms_as_start() {
            steps.extend(self.arm_step());
        }
        let Some(start) = &self.start else {
            return steps;
        };
        if !start.units.is_empty() {
            steps.push(Step::Start {
                version: start.version.clone(),
                units: start.units.clone(),
                all: version_units(&self.after, &start.version).0,
                restart: start.restart,
            });
        }
        if let Some(target) = &start.target {
            steps.push(Step::StartTarget(target.clone()));
        }
        steps
    }

    /// The waker and the idle record, as the pod becomes, stays or stops
    /// being idle.
    fn idle_steps(&self) -> Vec<Step> {
        let (before, after) = (&self.observed.state, &self.after);
        let mut steps = Vec::new();
        let root = &self.request.root;
        if self.request.state == State::Idle && !self.observed.waker_installed {
            steps.push(Step::InstallWaker(Store::new(root).waker_path()));
        }
        let woken = (self.request.wake && after.idle.is_none()).then_some(WokenRecord {
            format: IDLE_FORMAT,
            at: self.observed.now,
        });
        if before.idle != after.idle || woken.is_some() {
            steps.push(Step::Idle {
                pod: self.name.clone(),
                before: before.idle.clone(),
                after: after.idle.clone(),
                woken,
                woken_before: before.woken,
            });
        }
        steps
    }

    /// An idle pod's target and sockets: started unless all are up,
    /// restarted when this run rewrites one of their unit files.
    fn arm_step(&self) -> Option<Step> {
        let idle = self.after.idle.as_ref()?;
        let mut armed = units::idle_units(self.name, &idle.ports);
        armed.pop();
        let status = &self.observed.status;
        let up = armed
            .iter()
            .all(|u| status.get(u).is_some_and(|s| s.is_up()));
        let rewritten = (self.files_before.iter().chain(&self.files_after))
            .any(|c| armed.iter().any(|u| c.path == Path::new(u)));
        (!up || rewritten).then(|| Step::Arm {
            units: armed,
            ports: idle.ports.clone(),
            restart: up && rewritten,
        })
    }

    /// Where the arming goes: with the start when the pod becomes idle in
    /// this run (a failure undoes the run: the version runs again), else
    /// after it (a repair, left for a rerun when it fails).
    fn arms_as_start(&self) -> bool {
        self.observed.state.idle.is_none()
    }

    fn finish_steps(&self) -> Vec<Step> {
        let before = &self.observed.state;
        let mut steps: Vec<Step> = Vec::new();
        if !self.arms_as_start() {
            steps.extend(self.arm_step());
        }
        if !self.stop_after.is_empty() {
            steps.push(Step::Stop(self.stop_after.clone()));
        }
        if !self.files_after.is_empty() {
            steps.push(Step::UnitFiles(self.files_after.clone()));
        }
        for v in &self.remove {
            let record = before.versions[v].record.clone();
            steps.push(Step::RemoveVersion(v.clone(), Box::new(record)));
        }
        if self.after.versions.is_empty() {
            steps.push(Step::RemovePod);
        }
        for (id, runtime) in &self.remove_images {
            steps.push(Step::RemoveImage(id.clone(), *runtime));
        }
        steps
    }
}

impl Plan {
    /// No step: the waker's run when the pod is not idle (any more).
    fn nothing(request: &Request, observed: &Observed) -> Plan {
        Plan {
            name: observed.name.clone(),
            version: None,
            state: request.state,
            prepare: Vec::new(),
            start: Vec::new(),
            finish: Vec::new(),
            switch: false,
            after: observed.state.clone(),
            started_after: observed.started,
            environment_changes: false,
            environment_from: None,
            root: request.root.clone(),
            warnings: Vec::new(),
            ports: Vec::new(),
        }
    }

    /// The port record follows the store as it will be (and is repaired
    /// if it does not match the store now).
    fn with_ports(mut self, observed: &Observed) -> Result<Plan, Refusal> {
        let held = holders(observed, &self.after)?;
        let on_disk = observed.port_records.as_ref().map_err(Clone::clone)?;
        for change in ports::index_diff(on_disk, &held) {
            self.finish
                .push(Step::PortRecord(change, self.root.clone()));
        }
        self.ports = ports::report(&self.name, &held);
        Ok(self)
    }

    /// Every step, in order.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.prepare.iter().chain(&self.start).chain(&self.finish)
    }

    /// The steps' actions, in order, in words.
    pub fn actions(&self) -> Vec<String> {
        self.steps().flat_map(Step::actions).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.steps().all(|s| s.actions().is_empty())
    }

    /// The unit file changes, for the check of planted links.
    pub fn unit_changes(&self) -> Vec<&Change> {
        self.steps()
            .filter_map(|s| match s {
                Step::UnitFiles(changes) => Some(changes),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// A short description for the lock holder file.
    pub fn describe(&self) -> String {
        let state = format!("{:?}", self.state).to_lowercase();
        match &self.version {
            Some(v) => format!("state={state} version={v}"),
            None => format!("state={state}"),
        }
    }

    /// The report of this plan; `changed` is set by the caller.
    pub(crate) fn report(&self, observed: &Observed, want_diff: bool) -> Report {
        let origin = observed
            .incoming
            .as_ref()
            .and_then(|new| new.origin.as_ref());
        Report {
            changed: false,
            name: Some(self.name.clone()),
            version: self.version.clone(),
            current: self.after.current.clone(),
            previous: self.after.previous.clone(),
            actions: self.actions(),
            diff: if want_diff {
                self.diff(&observed.state, observed.started)
            } else {
                Vec::new()
            },
            warnings: self.warnings.clone(),
            pod: Value::Null,
            ports: self.ports.clone(),
            tip: origin.and_then(|o| o.tip.clone()),
            release: origin.map(|o| o.shown.clone()),
        }
    }

    fn diff(&self, before: &PodState, started_before: bool) -> Vec<Value> {
        let changed_env = self.version.as_ref().filter(|_| self.environment_changes);
        let mut out = vec![json!({
            "before_header": format!("pod {} (store)", self.name),
            "after_header": format!("pod {} (store)", self.name),
            "before": self.summary(before, before, started_before, None),
            "after": self.summary(before, &self.after, self.started_after, changed_env),
        })];
        let store = Store::new(&self.root);
        let mut steps: Vec<&Step> = self.steps().collect();
        steps.sort_by_key(|s| s.diff_rank());
        out.extend(steps.into_iter().flat_map(|s| s.diff(&store)));
        out
    }

    /// The store's state in words, for the diff; `mark` is the version
    /// whose environment this run writes.
    fn summary(
        &self,
        before: &PodState,
        state: &PodState,
        started: bool,
        mark: Option<&Version>,
    ) -> String {
        let mut s = format!(
            "current: {}\nprevious: {}\nstarted at boot: {}\nversions: {}\n",
            state.current.as_ref().map_or("none", |v| v.as_str()),
            state.previous.as_ref().map_or("none", |v| v.as_str()),
            if started && state.current.is_some() {
                "yes"
            } else {
                "no"
            },
            list(&state.by_age())
        );
        // Said only of a pod idle before or after the run.
        if before.idle.is_some() || self.after.idle.is_some() {
            match &state.idle {
                Some(idle) => s.push_str(&format!(
                    "idle: yes (version {}, woken by a connection to port {})\n",
                    idle.version,
                    idle.ports
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                None => s.push_str("idle: no\n"),
            }
        }
        for (v, stored) in &state.versions {
            if let Some(env) = &stored.environment {
                // Names only: the values are secret. What this run writes
                // is marked: where it came from, or that a version's values
                // changed (the names may not).
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
    }
}

/// What to do when `state: idle` names a version that is not current: the
/// version comes from `version`, or from the bundle or release given.
/// Refuse a version whose units would be installed under a name another
/// version of the pod, or another pod, has in the store: unit names are
/// `<pod>-<version>-<unit>`, so version `1` with `x-web.service` and
/// version `1-x` with `web.service` are both `shop-1-x-web.service`, and
/// pod `myapp` version `staging-1` and pod `myapp-staging` version `1`
/// share theirs. Asked of the store, not the unit directory: a unit file
/// removed by hand still belongs to its version.
fn unit_names_are_free(
    name: &PodName,
    v: &Version,
    new: &NewVersion,
    observed: &Observed,
) -> Result<(), Refusal> {
    let mut taken: BTreeMap<String, String> = BTreeMap::new();
    let mut pods: Vec<(&PodName, &crate::store::PodState)> = vec![(name, &observed.state)];
    if let Ok(others) = &observed.others {
        pods.extend(others.iter());
    }
    for (pod, state) in pods {
        taken.insert(units::target_name(pod), format!("pod {pod}'s target"));
        taken.insert(units::slice_name(pod), format!("pod {pod}'s slice"));
        for (version, stored) in state
            .versions
            .iter()
            .filter(|(w, _)| pod != name || *w != v)
        {
            for unit in &stored.record.pod.units {
                let installed = units::installed_name(pod, version, &unit.name);
                taken.insert(installed, format!("version {version} of pod {pod}"));
            }
        }
    }
    for unit in &new.pod.units {
        let installed = units::installed_name(name, v, &unit.name);
        if let Some(holder) = taken.get(&installed) {
            return Err(Refusal(format!(
                "unit {} of version {v} of pod {name} would be installed as {installed}, which \
                 {holder} has (units are named <pod>-<version>-<unit>); give the version or the \
                 pod another name",
                unit.name
            )));
        }
    }
    Ok(())
}

/// The addresses each port was listened on, for the ports listened on at
/// particular addresses only: an idle pod's sockets listen there, so that
/// a service on 127.0.0.1 is not woken (nor reached) from other hosts. A
/// port listened on at every address (0.0.0.0, ::) or not at all (the
/// version was stopped) is armed on every address.
fn listened_on(
    listeners: &BTreeMap<u16, BTreeSet<IpAddr>>,
    ports: &BTreeSet<u16>,
) -> BTreeMap<u16, Vec<IpAddr>> {
    (ports.iter())
        .filter_map(|port| {
            let addresses = listeners.get(port)?;
            let particular = addresses.iter().all(|a| !a.is_unspecified());
            particular.then(|| (*port, addresses.iter().copied().collect()))
        })
        .collect()
}

fn idle_advice(request: &Request, has_current: bool) -> &'static str {
    let from_bundle = request.bundle.is_some() || request.repo.is_some();
    match (has_current, from_bundle) {
        (false, _) => "start a version first (state: started)",
        (true, true) => {
            "start it first (state: started), or give name without bundle or repo to idle the \
             current one"
        }
        (true, false) => "start it first (state: started), or leave version out",
    }
}

#[cfg(test)]
mod tests;
