//! Carrying out a plan, in an order that is safe to interrupt.
//!
//! 1. a new version is staged, then committed to the store by one rename;
//! 2. units that must stop first are stopped;
//! 3. unit files are written, then one daemon-reload;
//! 4. `previous` then `current` are switched;
//! 5. the version is started and watched until it is really up;
//! 6. the versions it replaces are stopped, their leftover unit files
//!    removed (and systemd reloaded again, only then);
//! 7. removed versions leave the store and unused images go.
//!
//! Then, whatever happened, the port record (`<root>/ports/`) is brought in
//! line with the store (see [`super::sync_port_record`]).
//!
//! The store is the record of what should be, and the unit files are
//! derived from it, so a crash between any two steps leaves the running
//! version running and a rerun finishes the job. A failure before the new
//! version is up puts everything back as it was observed; a version that
//! does not come up is stopped and the previous one kept (`rollback`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::plan::{describe_change, Plan, Start};
use super::{pod_units, version_units, Observed, PodError, Report, Request};
use crate::bundle::{ImageId, Version};
use crate::lock::StoreLock;
use crate::outcome::AfterChanges;
use crate::store::Store;
use crate::systemd::{stop_units, Systemd, UnitStatus};
use crate::units;

/// Journal lines quoted when a unit does not come up.
const JOURNAL_LINES: usize = 15;

/// Tests kill the process at these points (`OPS_TEST_CRASH_AT=<point>`) to
/// prove that every interruption converges. A test-only hook, compiled into
/// debug builds only (the real-systemd tests run target/debug): the release
/// build that collection/build ships must not let an environment variable
/// kill a deploy half-way, so there it does nothing.
fn crash_point(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("OPS_TEST_CRASH_AT").is_ok_and(|p| p == point) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// A step the undo can take back.
#[derive(Debug)]
enum Step {
    /// An image imported for the new version (no version had it).
    Imported(ImageId),
    /// The new version being staged, its volumes built: not yet in the
    /// store.
    Staged(Version),
    /// The new version added to the store.
    Committed(Version),
    /// A version's environment file written, and what it was.
    Environment {
        version: Version,
        before: Option<Vec<u8>>,
    },
    /// Units stopped before the unit files change.
    Stopped(Vec<String>),
    /// Unit files written, systemd reloaded.
    Files,
    /// `current` and `previous` moved.
    Pointers,
    /// Units started (or tried).
    Started(Vec<String>),
}

/// A step begun, and the actions it was reported as.
#[derive(Debug)]
struct Done {
    step: Step,
    actions: Vec<String>,
}

/// How a failed run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Everything begun is undone.
    Undo,
    /// The version did not come up and `rollback` is off.
    RollbackOff,
    /// The version that did not come up was already current.
    AlreadyCurrent,
    /// The failure came once the new state was in place.
    AfterUp,
}

struct Run<'a> {
    plan: &'a Plan,
    observed: &'a Observed,
    request: &'a Request,
    store: &'a Store,
    lock: &'a StoreLock,
    systemd: &'a mut dyn Systemd,
    report: &'a mut Report,
    steps: Vec<Done>,
    undone: Vec<String>,
    /// Paths the run may create, and whether they existed before it.
    existed: Vec<(PathBuf, bool)>,
}

impl Run<'_> {
    fn begin(&mut self, step: Step) {
        self.steps.push(Done {
            step,
            actions: Vec::new(),
        });
    }

    fn done(&mut self, action: String) {
        self.report.changed = true;
        self.report.actions.push(action.clone());
        if let Some(last) = self.steps.last_mut() {
            last.actions.push(action);
        }
    }

    fn undid(&mut self, action: String) {
        self.report.actions.push(format!("undo: {action}"));
        self.undone.push(action);
    }

    fn write_files(&mut self, changes: &[units::Change]) -> Result<(), PodError> {
        if changes.is_empty() {
            return Ok(());
        }
        units::apply(&self.request.unit_dir, changes)?;
        for change in changes {
            self.done(describe_change(change));
        }
        crash_point("files-written");
        self.systemd.daemon_reload()?;
        self.done("daemon-reload".to_owned());
        Ok(())
    }

    fn stop(&mut self, units: &[String]) -> Result<(), PodError> {
        if units.is_empty() {
            return Ok(());
        }
        stop_units(self.systemd, units)?;
        self.systemd.reset_failed(units);
        self.done(format!("stop {}", units.join(" ")));
        Ok(())
    }

    /// Steps 1 to 4, each logged for the undo as it begins.
    fn prepare(&mut self) -> Result<(), PodError> {
        let plan = self.plan;
        let (store, lock) = (self.store, self.lock);
        store.ensure_layout(lock)?;
        store.clean_transient(lock)?;
        // A new version is staged whole, volumes included, then the images
        // are imported, then the version is committed: a unit is never
        // installed before its image.
        let mut staged = None;
        if let Some((new, record)) = &plan.add {
            self.begin(Step::Staged(new.pod.version.clone()));
            let dir = store.stage(lock, new, record)?;
            self.build_volumes(new, &dir)?;
            staged = Some(dir);
        }
        for import in &plan.import_images {
            crate::image::import(store, lock, plan.runtime, import)?;
            self.begin(Step::Imported(import.id.clone()));
            self.done(crate::image::import_action(
                &import.id,
                &import.source,
                plan.runtime,
            ));
        }
        if let (Some((new, _)), Some(staged)) = (&plan.add, &staged) {
            crash_point("staged");
            let version = &new.pod.version;
            store.commit(lock, staged, &plan.name, version)?;
            // The staged copy (and the volumes reported built in it) is now
            // the version in the store.
            let at = self
                .steps
                .iter()
                .position(|d| matches!(&d.step, Step::Staged(v) if v == version))
                .expect("staged first");
            let staged = self.steps.remove(at);
            self.steps.push(Done {
                step: Step::Committed(version.clone()),
                actions: staged.actions,
            });
            self.done(format!(
                "add version {version} of pod {} to the store",
                plan.name
            ));
            crash_point("committed");
        }
        if let (Some(env), Some(v)) = (&plan.environment, &plan.version) {
            let before = self
                .observed
                .state
                .versions
                .get(v)
                .and_then(|s| s.environment.clone());
            self.begin(Step::Environment {
                version: v.clone(),
                before,
            });
            store.write_environment(lock, &plan.name, v, env.as_deref())?;
            self.done(plan.environment_action());
        }
        if !plan.stop_first.is_empty() {
            self.begin(Step::Stopped(plan.stop_first.clone()));
            self.stop(&plan.stop_first)?;
        }
        if !plan.files_before.is_empty() {
            self.begin(Step::Files);
            self.write_files(&plan.files_before)?;
        }
        crash_point("installed");
        let before = &self.observed.state;
        let moves = plan.after.current != before.current || plan.after.previous != before.previous;
        if moves {
            self.begin(Step::Pointers);
        }
        if plan.after.previous != before.previous {
            store.set_pointer(lock, &plan.name, "previous", plan.after.previous.as_ref())?;
        }
        if plan.after.current != before.current {
            store.set_pointer(lock, &plan.name, "current", plan.after.current.as_ref())?;
            if let Some(v) = &plan.after.current {
                self.done(format!("make version {v} current"));
            }
            crash_point("switched");
        }
        Ok(())
    }

    /// Build the new version's volumes inside its staged directory.
    fn build_volumes(
        &mut self,
        new: &crate::store::NewVersion,
        staged: &Path,
    ) -> Result<(), PodError> {
        use crate::bundle::Source;
        use crate::image::Location;
        use crate::volume;
        let pod = &new.pod;
        for v in &pod.volumes {
            let failed = |source: volume::VolumeError| PodError::Volume {
                pod: pod.name.clone(),
                version: pod.version.clone(),
                volume: v.name.clone(),
                source: Box::new(source),
            };
            let downloads = staged.join("volumes").join(format!(".{}.download", v.name));
            let archive = match &v.data {
                None => None,
                Some(source) => {
                    let location = match source {
                        Source::Path(p) => Location::Path(new.bundle_dir.join(p)),
                        Source::Uri(u) => Location::parse(u).map_err(|e| {
                            failed(volume::VolumeError::Refused(crate::outcome::Refusal::new(
                                format!("data: {e}"),
                            )))
                        })?,
                    };
                    // `volumes/` is on the way to every volume, which
                    // units of any user read: made open before the private
                    // download directory inside it.
                    crate::atomic::create_dir_all(&staged.join("volumes"), 0o755)?;
                    crate::atomic::create_dir_all(&downloads, 0o700)?;
                    let mut archive =
                        volume::fetch(&location, self.request.download_timeout, &downloads)
                            .map_err(failed)?;
                    archive.shown = source.text();
                    Some(archive)
                }
            };
            let dir = volume::volume_dir(staged, &v.name);
            let built = volume::build(
                &dir,
                &v.name,
                archive.as_ref(),
                &volume::Settings::default(),
            );
            crate::atomic::remove_tree(&downloads)?;
            built.map_err(failed)?;
            self.done(volume::create_action(
                &pod.name,
                &pod.version,
                &v.name,
                v.data.as_ref().map(crate::bundle::Source::text).as_deref(),
            ));
        }
        Ok(())
    }

    /// Step 5: start (or restart) the version and watch it come up.
    fn start(&mut self, start: &Start) -> Result<(), PodError> {
        let verb = if start.restart { "restart" } else { "start" };
        if !start.units.is_empty() {
            // Undone by stopping every unit of the version: a started
            // unit may start others of it.
            let (all, _) = version_units(&self.plan.name, &self.plan.after, &start.version);
            self.begin(Step::Started(all));
            if let Err(down) = bring_up(
                self.systemd,
                &start.units,
                start.restart,
                self.request.start_timeout,
                self.request.min_up_time,
            ) {
                self.done(format!("{verb} {} (not up)", start.units.join(" ")));
                let journal = self.systemd.journal(&down.unit, down.since, JOURNAL_LINES);
                // The reason says whether it failed or ran out of time.
                let mut msg = format!(
                    "version {} of pod {} did not come up: {}\nlast journal lines of {}:",
                    start.version, self.plan.name, down.reason, down.unit
                );
                if journal.is_empty() {
                    msg.push_str(" (none)");
                }
                for line in journal {
                    msg.push_str("\n  ");
                    msg.push_str(&line);
                }
                return Err(PodError::NotUp(msg));
            }
            self.done(format!("{verb} {} (up)", start.units.join(" ")));
        }
        if let Some(target) = &start.target {
            let target = std::slice::from_ref(target);
            self.begin(Step::Started(target.to_vec()));
            self.systemd.start(target, self.request.start_timeout)?;
            self.done(format!("start {}", target[0]));
        }
        Ok(())
    }

    /// Steps 6 and 7, once the new state is in place.
    fn finish(&mut self) -> Result<(), PodError> {
        let plan = self.plan;
        let (store, lock) = (self.store, self.lock);
        self.stop(&plan.stop_after)?;
        self.write_files(&plan.files_after)?;
        for v in &plan.remove {
            store.remove_version(lock, &plan.name, v)?;
            self.done(format!(
                "remove version {v} of pod {} from the store",
                plan.name
            ));
        }
        if plan.after.versions.is_empty() {
            store.remove_pod(lock, &plan.name)?;
        }
        for (id, runtime) in &plan.remove_images {
            match crate::image::remove(store, lock, *runtime, id) {
                Ok(()) => self.done(format!(
                    "{} (no version uses it)",
                    crate::image::remove_action(id, *runtime)
                )),
                // A container podman keeps (a unit that did not clean up, or
                // someone else's) is not ops's to remove: the pod is gone all
                // the same; the image stays, said and recorded.
                Err(crate::image::ImageError::InUse { reference, detail }) => {
                    self.report.warnings.push(format!(
                        "image {id} is no longer used by any version, but podman keeps it: \
                         {detail}; remove that container (podman rm), then the image \
                         (ops_image state=absent, or podman image rm {reference})"
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Undo one step; when it is undone only in part, `done` is left
    /// saying what stays.
    fn undo_step(&mut self, done: &mut Done) -> Result<(), PodError> {
        let plan = self.plan;
        let before = &self.observed.state;
        let (store, lock) = (self.store, self.lock);
        match &done.step {
            Step::Started(units) => {
                stop_units(self.systemd, units)?;
                self.systemd.reset_failed(units);
                self.undid(format!("stop {}", units.join(" ")));
            }
            Step::Pointers => {
                store.set_pointer(lock, &plan.name, "previous", before.previous.as_ref())?;
                store.set_pointer(lock, &plan.name, "current", before.current.as_ref())?;
                if plan.after.current != before.current {
                    self.undid(match &before.current {
                        Some(v) => format!("make version {v} current again"),
                        None => format!("make no version of pod {} current", plan.name),
                    });
                }
            }
            Step::Files => {
                let now = units::owned(&plan.name, &self.request.unit_dir)?;
                let back = units::changes(&now, &self.observed.files);
                if !back.is_empty() {
                    units::apply(&self.request.unit_dir, &back)?;
                    for change in &back {
                        self.undid(describe_change(change));
                    }
                    if let Err(e) = self.systemd.daemon_reload() {
                        done.actions = vec![
                            "the unit files are back as they were, but systemd has not reloaded them"
                                .to_owned(),
                        ];
                        return Err(e.into());
                    }
                    self.undid("daemon-reload".to_owned());
                }
            }
            Step::Stopped(units) => {
                // What ran before the run runs again.
                let again: Vec<String> = units
                    .iter()
                    .filter(|u| {
                        self.observed
                            .status
                            .get(*u)
                            .is_some_and(|s| s.active == "active")
                    })
                    .cloned()
                    .collect();
                if !again.is_empty() {
                    self.systemd.start(&again, self.request.start_timeout)?;
                    self.undid(format!("start {} again", again.join(" ")));
                }
            }
            Step::Environment { version, before } => {
                // A version this run added takes its file with it.
                let added = plan
                    .add
                    .as_ref()
                    .is_some_and(|(new, _)| &new.pod.version == version);
                if !added {
                    store.write_environment(lock, &plan.name, version, before.as_deref())?;
                    self.undid(match before {
                        Some(_) => format!("put back the environment file version {version} had"),
                        None => format!("remove the environment file of version {version}"),
                    });
                }
            }
            Step::Committed(version) => {
                store.remove_version(lock, &plan.name, version)?;
                if before.versions.is_empty() {
                    store.remove_pod(lock, &plan.name)?;
                }
                self.undid(format!(
                    "remove version {version} of pod {} from the store",
                    plan.name
                ));
            }
            Step::Staged(version) => {
                // Under the lock, staging holds this run's work only.
                store.clean_transient(lock)?;
                if !done.actions.is_empty() {
                    self.undid(format!(
                        "remove the staged copy of version {version} of pod {} and its volumes",
                        plan.name
                    ));
                }
            }
            Step::Imported(id) => {
                crate::image::remove(store, lock, plan.runtime, id)?;
                self.undid(crate::image::remove_action(id, plan.runtime));
            }
        }
        Ok(())
    }

    /// Undo every step begun, newest first; stop at the first that fails
    /// (later ones rely on it: the store outlives the unit files that name
    /// it). Then remove what a first deploy left: the pod's target and
    /// slice, and the directories the run created.
    fn undo(&mut self) -> Result<(), PodError> {
        while let Some(mut done) = self.steps.pop() {
            if let Err(e) = self.undo_step(&mut done) {
                self.steps.push(done);
                return Err(e);
            }
        }
        if self.observed.state.versions.is_empty() {
            let pod_units = pod_units(&self.plan.name).to_vec();
            let running: Vec<String> = self
                .systemd
                .show(&pod_units)?
                .into_iter()
                .filter(|s| s.needs_stopping())
                .map(|s| s.unit)
                .collect();
            if !running.is_empty() {
                stop_units(self.systemd, &running)?;
                self.systemd.reset_failed(&running);
                self.undid(format!("stop {}", running.join(" ")));
            }
        }
        let layout = self.store.root().join("layout-version");
        for (path, existed) in self.existed.iter().rev() {
            if *existed {
                continue;
            }
            if path == &layout {
                // The marker of a store that holds nothing else.
                let rest = std::fs::read_dir(self.store.root())
                    .map(|entries| {
                        entries
                            .flatten()
                            .filter(|e| {
                                !matches!(
                                    e.file_name().to_str(),
                                    Some("lock" | "lock.holder" | "layout-version")
                                )
                            })
                            .count()
                    })
                    .unwrap_or(1);
                if rest == 0 {
                    crate::atomic::remove_file(path)?;
                }
            } else {
                crate::atomic::remove_dir_if_empty(path)?;
            }
        }
        Ok(())
    }

    /// The error of a run that failed with `cause`, ended as `ending`
    /// says; the report says what was done and undone.
    fn fail(&mut self, cause: PodError, ending: Ending) -> PodError {
        let before = &self.observed.state;
        let mut undo_error = None;
        let outcome = match ending {
            Ending::Undo => {
                let rolled_back = self
                    .steps
                    .iter()
                    .any(|d| matches!(d.step, Step::Started(_)));
                match self.undo() {
                    Err(e) => {
                        undo_error = Some(crate::ansible::error_chain(&e));
                        "the run was undone only in part".to_owned()
                    }
                    Ok(()) if self.undone.is_empty() => {
                        // Nothing was done that shows: the cause alone.
                        self.report.changed = false;
                        return cause;
                    }
                    Ok(()) => match (&before.current, rolled_back) {
                        (Some(old), true) => format!("rolled back to version {old}"),
                        (None, true) => {
                            "rolled back: the pod is as it was before this run".to_owned()
                        }
                        (Some(old), false) => {
                            format!("the pod is as it was before this run, version {old} current")
                        }
                        (None, false) => "the pod is as it was before this run".to_owned(),
                    },
                }
            }
            Ending::RollbackOff => {
                // The version it replaces was stopped first when the two
                // share ports; else it is left running.
                let stopped: Vec<&str> = self
                    .steps
                    .iter()
                    .filter_map(|d| match &d.step {
                        Step::Stopped(units) => Some(units.iter().map(String::as_str)),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                match (&before.current, stopped.is_empty()) {
                    (None, _) => {
                        "left as it is (rollback is off): the new version is current".to_owned()
                    }
                    (Some(old), true) => format!(
                        "left as it is (rollback is off): the new version is current and version \
                         {old} still runs"
                    ),
                    (Some(old), false) => format!(
                        "left as it is (rollback is off): the new version is current, and version \
                         {old} stays stopped (its units were stopped first, for the ports they \
                         share); roll back by deploying version {old}"
                    ),
                }
            }
            Ending::AlreadyCurrent => {
                "nothing to roll back to: the version was already current".to_owned()
            }
            Ending::AfterUp => {
                "not undone (the new state was in place); a rerun finishes the job".to_owned()
            }
        };
        let left: Vec<String> = match ending {
            Ending::Undo => self
                .steps
                .iter()
                .flat_map(|d| d.actions.iter().cloned())
                .collect(),
            _ => self
                .report
                .actions
                .iter()
                .filter(|a| !a.starts_with("undo: "))
                .cloned()
                .collect(),
        };
        if left.is_empty() && undo_error.is_none() && self.undone.is_empty() {
            return cause;
        }
        self.report.changed = !left.is_empty() || undo_error.is_some();
        PodError::AfterChanges(Box::new(AfterChanges {
            cause: crate::ansible::error_chain(&cause),
            outcome,
            undone: std::mem::take(&mut self.undone),
            undo_error,
            left,
        }))
    }
}

/// Why a unit is not up.
#[derive(Debug)]
struct Down {
    unit: String,
    reason: String,
    /// When the start began: the journal lines worth quoting are later.
    since: SystemTime,
}

fn describe(status: &UnitStatus) -> String {
    let exited = match status.exit_status {
        0 => String::new(),
        n => match crate::systemd::exit_status_meaning(n) {
            Some(meaning) => format!(", status {n}/{meaning}"),
            None => format!(", status {n}"),
        },
    };
    format!(
        "{} is {} ({}, result {}{exited})",
        status.unit, status.active, status.sub, status.result
    )
}

/// Start (or restart) `units`, then watch them for `min_up_time`: up means
/// still active and not restarted at the end of it.
fn bring_up(
    systemd: &mut dyn Systemd,
    units: &[String],
    restart: bool,
    timeout: Duration,
    min_up_time: Duration,
) -> Result<(), Down> {
    let began = Instant::now();
    let since = SystemTime::now();
    let first_down = |systemd: &mut dyn Systemd| -> Option<UnitStatus> {
        systemd.show(units).ok()?.into_iter().find(|s| !s.is_up())
    };
    let started = if restart {
        systemd.restart(units, timeout)
    } else {
        systemd.start(units, timeout)
    };
    if let Err(e) = started {
        let status = first_down(systemd);
        return Err(Down {
            unit: status
                .as_ref()
                .map_or_else(|| units[0].clone(), |s| s.unit.clone()),
            reason: match status {
                Some(s) => format!("{}; {e}", describe(&s)),
                None => e.to_string(),
            },
            since,
        });
    }
    let baseline: Vec<UnitStatus> = systemd.show(units).unwrap_or_default();
    // Saturating: a far deadline is "never", not a panic.
    let window = min_up_time.min(timeout.saturating_sub(began.elapsed()));
    let settle_until = Instant::now().checked_add(window);
    loop {
        let now = systemd.show(units).unwrap_or_default();
        for status in &now {
            let restarted = baseline
                .iter()
                .find(|b| b.unit == status.unit)
                .is_some_and(|b| status.restarts > b.restarts);
            if !status.is_up() || restarted {
                return Err(Down {
                    unit: status.unit.clone(),
                    reason: if restarted {
                        format!("{} restarted {} times", status.unit, status.restarts)
                    } else {
                        describe(status)
                    },
                    since,
                });
            }
        }
        if settle_until.is_some_and(|until| Instant::now() >= until) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Carry out `plan` (made under `lock` from `observed`).
pub(super) fn apply(
    plan: &Plan,
    observed: &Observed,
    request: &Request,
    store: &Store,
    lock: &StoreLock,
    systemd: &mut dyn Systemd,
    report: &mut Report,
) -> Result<(), PodError> {
    let wants = request.unit_dir.join("multi-user.target.wants");
    let root = store.root();
    let existed = [
        root.join("layout-version"),
        root.join("staging"),
        root.join("trash"),
        root.join("images"),
        store.pods_dir(),
        store.pod_dir(&plan.name),
        request.unit_dir.clone(),
        wants,
    ]
    .into_iter()
    .map(|p| {
        let exists = p.symlink_metadata().is_ok();
        (p, exists)
    })
    .collect();
    let mut run = Run {
        plan,
        observed,
        request,
        store,
        lock,
        systemd,
        report,
        steps: Vec::new(),
        undone: Vec::new(),
        existed,
    };
    if let Err(cause) = run.prepare() {
        return Err(run.fail(cause, Ending::Undo));
    }
    if let Some(start) = &plan.start {
        if let Err(cause) = run.start(start) {
            let ending = match (start.switch, request.rollback) {
                (true, true) => Ending::Undo,
                (true, false) => Ending::RollbackOff,
                (false, _) => Ending::AlreadyCurrent,
            };
            return Err(run.fail(cause, ending));
        }
    }
    crash_point("started");
    run.steps.clear();
    if let Err(cause) = run.finish() {
        return Err(run.fail(cause, Ending::AfterUp));
    }
    Ok(())
}
