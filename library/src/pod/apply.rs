//! Carrying out a plan's steps, in an order that is safe to interrupt.
//!
//! 1. a new version is staged (its volumes built in it, its marker
//!    written: see `Store::pivot_path`), its images imported, then it is
//!    committed to the store by one rename; versions an older ops staged
//!    get their marker;
//! 2. units that must stop first are stopped;
//! 3. unit files are written, then one daemon-reload;
//! 4. `previous` then `current` are switched: the pivot, which alone
//!    decides which version's units start, at boot too;
//! 5. the version is started (only now can it be: its units' condition
//!    holds once `current` points at it) and watched until it is really up;
//! 6. the versions it replaces are stopped, their leftover unit files
//!    removed (and systemd reloaded again, only then);
//! 7. removed versions leave the store and unused images go.
//!
//! Then, whatever happened, the port record (`<root>/ports/`) is brought in
//! line with the store (see [`super::sync_port_record`]): the plan's port
//! record steps are what that will do.
//!
//! Each step is begun in [`Run::step`] and taken back in [`Run::undo_step`],
//! two matches side by side, with each step's do and undo functions
//! paired below them (`stop`/`undo_stop`, `write_files`/`undo_files`,
//! `start`/`undo_start`). What a run did is reported in the plan's words
//! ([`Step`]'s texts), with the outcome of a start added (`(up)`); the undo
//! words are written here, beside each undo. The store is the record of what
//! should be, and the unit files are derived from it, so a crash between
//! any two steps leaves the running version running and a rerun finishes
//! the job. A failure before the new version is up puts everything back as
//! it was observed; a version that does not come up is stopped and the
//! previous one kept (`rollback`).

use std::path::{Path, PathBuf};

use super::observe::Observed;
use super::plan::Plan;
use super::step::Step;
use super::up::bring_up;
use super::{pod_units, Host, PodError, Report, Request};
use crate::bundle::{ImageId, Version};
use crate::image::Podman;
use crate::image::{Import, Runtime};
use crate::lock::StoreLock;
use crate::outcome::AfterChanges;
use crate::records::version::VersionRecord;
use crate::store::{NewVersion, Store};
use crate::systemd::{stop_units, Systemd};
use crate::units::{self, Change};

/// Journal lines quoted when a unit does not come up.
const JOURNAL_LINES: usize = 15;

/// A step begun, and the actions it was reported as.
#[derive(Debug)]
struct Done<'a> {
    step: &'a Step,
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
    podman: &'a mut dyn Podman,
    report: &'a mut Report,
    /// The steps begun, for the undo.
    log: Vec<Done<'a>>,
    undone: Vec<String>,
    /// Paths the run may create, and whether they existed before it.
    existed: Vec<(PathBuf, bool)>,
    /// The new version's staged directory.
    staged: Option<PathBuf>,
    /// Whether the waker of idle pods was installed before the run.
    waker_existed: bool,
}

impl<'a> Run<'a> {
    fn begin(&mut self, step: &'a Step) {
        self.log.push(Done {
            step,
            actions: Vec::new(),
        });
    }

    fn done(&mut self, action: String) {
        self.report.changed = true;
        self.report.actions.push(action.clone());
        if let Some(last) = self.log.last_mut() {
            last.actions.push(action);
        }
    }

    fn undid(&mut self, action: String) {
        self.report.actions.push(format!("undo: {action}"));
        self.undone.push(action);
    }

    /// Carry out one step.
    fn step(&mut self, step: &'a Step) -> Result<(), PodError> {
        let (store, lock) = (self.store, self.lock);
        match step {
            Step::Stage(new, record) => self.stage(step, new, record),
            Step::Import(import, runtime) => self.import(step, import, *runtime),
            // First in the plan, and never in one that is applied: the run
            // downloads such images before it plans (`super::run_locked`).
            Step::Fetch(uri, _) => Err(crate::outcome::Refusal(format!(
                "image {uri}: its id was not computed before the plan; nothing was changed"
            ))
            .into()),
            Step::Commit(name, version) => {
                let staged = self.staged.take().expect("staged first");
                store.commit(lock, &staged, name, version)?;
                // The staged copy (and the volumes reported built in it) is
                // now the version in the store.
                let at = self
                    .log
                    .iter()
                    .position(|d| matches!(d.step, Step::Stage(..)));
                let actions = at.map(|at| self.log.remove(at).actions).unwrap_or_default();
                self.log.push(Done { step, actions });
                self.done(step.to_string());
                Ok(())
            }
            Step::Environment { version, file, .. } => {
                self.begin(step);
                store.write_environment(lock, &self.plan.name, version, file.as_deref())?;
                self.done(step.to_string());
                Ok(())
            }
            Step::Mark(name, versions) => {
                self.begin(step);
                for version in versions {
                    store.write_marker(lock, name, version)?;
                    self.done(Step::mark_text(name, version));
                }
                Ok(())
            }
            Step::Stop(units) => {
                self.begin(step);
                self.stop(units)
            }
            Step::UnitFiles(changes) => {
                self.begin(step);
                self.write_files(changes)
            }
            Step::Pointers { .. } => self.pointers(step),
            Step::Start { .. } | Step::StartTarget(_) | Step::Arm { .. } => self.start(step),
            Step::InstallWaker(_) => {
                self.begin(step);
                if store.install_waker(lock, Path::new(super::observe::SELF))? {
                    self.done(step.to_string());
                }
                Ok(())
            }
            Step::Idle { after, woken, .. } => {
                self.begin(step);
                store.write_idle(lock, &self.plan.name, after.as_ref())?;
                if woken.is_some() {
                    store.write_woken(lock, &self.plan.name, woken.as_ref())?;
                }
                self.done(step.to_string());
                Ok(())
            }
            Step::RemoveVersion(version, _) => {
                store.remove_version(lock, &self.plan.name, version)?;
                self.done(step.to_string());
                Ok(())
            }
            Step::RemovePod => Ok(store.remove_pod(lock, &self.plan.name)?),
            Step::RemoveImage(id, runtime) => self.remove_image(step, id, *runtime),
            // Made after the run, from the store as it is then.
            Step::PortRecord(..) => Ok(()),
        }
    }

    /// Take one step back; when it is undone only in part, `done` is left
    /// saying what stays. The steps once the version is up are never
    /// undone.
    fn undo_step(&mut self, done: &mut Done<'a>) -> Result<(), PodError> {
        let (store, lock, name) = (self.store, self.lock, &self.plan.name);
        let before = &self.observed.state;
        match done.step {
            Step::Stage(new, _) => {
                // Under the lock, staging holds this run's work only.
                store.clean_transient(lock)?;
                if !done.actions.is_empty() {
                    self.undid(format!(
                        "remove the staged copy of version {} of pod {name} and its volumes",
                        new.pod.version
                    ));
                }
            }
            Step::Import(import, runtime) => {
                crate::image::remove(store, lock, *runtime, &import.id, self.podman)?;
                self.undid(crate::image::remove_action(&import.id, *runtime));
            }
            Step::Commit(_, version) => {
                store.remove_version(lock, name, version)?;
                if before.versions.is_empty() {
                    store.remove_pod(lock, name)?;
                }
                self.undid(Step::remove_version_text(name, version));
            }
            Step::Environment {
                version,
                before,
                added,
                ..
            } => {
                // A version this run added takes its file with it.
                if !added {
                    store.write_environment(lock, name, version, before.as_deref())?;
                    self.undid(match before {
                        Some(_) => format!("put back the environment file version {version} had"),
                        None => Step::environment_text(version, None, None),
                    });
                }
            }
            Step::Stop(units) => self.undo_stop(units)?,
            Step::UnitFiles(_) => self.undo_files(done)?,
            Step::Pointers { current, .. } => {
                store.set_pointer(lock, name, "previous", before.previous.as_ref())?;
                store.set_pointer(lock, name, "current", before.current.as_ref())?;
                if *current != before.current {
                    self.undid(match &before.current {
                        Some(v) => format!("make version {v} current again"),
                        None => format!("make no version of pod {name} current"),
                    });
                }
            }
            Step::Start { all, .. } => self.undo_start(all)?,
            Step::StartTarget(target) => self.undo_start(std::slice::from_ref(target))?,
            Step::Arm { units, .. } => self.undo_start(units)?,
            Step::InstallWaker(path) => self.undo_install_waker(path, done)?,
            Step::Idle {
                before,
                woken,
                woken_before,
                ..
            } => {
                store.write_idle(lock, name, before.as_ref())?;
                if woken.is_some() {
                    store.write_woken(lock, name, woken_before.as_ref())?;
                }
                self.undid(match before {
                    Some(_) => format!("put back the idle mark of pod {name}"),
                    None => format!("clear the idle mark of pod {name}"),
                });
            }
            Step::Fetch(..)
            | Step::Mark(..)
            | Step::RemoveVersion(..)
            | Step::RemovePod
            | Step::RemoveImage(..)
            | Step::PortRecord(..) => {}
        }
        Ok(())
    }

    fn stage(
        &mut self,
        step: &'a Step,
        new: &NewVersion,
        record: &VersionRecord,
    ) -> Result<(), PodError> {
        // A new version is staged whole, volumes included, then the images
        // are imported, then the version is committed: a unit is never
        // installed before its image.
        self.begin(step);
        let dir = self.store.stage(self.lock, new, record)?;
        self.staged = Some(dir.clone());
        self.build_volumes(new, &dir)
    }

    fn import(
        &mut self,
        step: &'a Step,
        import: &Import,
        runtime: Runtime,
    ) -> Result<(), PodError> {
        crate::image::import(self.store, self.lock, runtime, import, self.podman)?;
        self.begin(step);
        self.done(step.to_string());
        Ok(())
    }

    fn stop(&mut self, units: &[String]) -> Result<(), PodError> {
        stop_units(self.systemd, units)?;
        self.systemd.reset_failed(units);
        self.done(Step::stop_text(units));
        Ok(())
    }

    /// What ran before the run runs again.
    fn undo_stop(&mut self, units: &[String]) -> Result<(), PodError> {
        let status = &self.observed.status;
        let again: Vec<String> = units
            .iter()
            .filter(|u| status.get(*u).is_some_and(|s| s.active_state().is_active()))
            .cloned()
            .collect();
        if !again.is_empty() {
            self.systemd.start(&again, self.request.start_timeout)?;
            self.undid(format!("{} again", Step::start_text(&again, false)));
        }
        Ok(())
    }

    fn write_files(&mut self, changes: &[Change]) -> Result<(), PodError> {
        units::apply(&self.request.unit_dir, changes)?;
        for change in changes {
            self.done(Step::change_text(change));
        }
        self.systemd.daemon_reload()?;
        self.done("daemon-reload".to_owned());
        Ok(())
    }

    /// Put the unit files back as they were observed (whatever part of the
    /// step was done), and reload.
    fn undo_files(&mut self, done: &mut Done<'a>) -> Result<(), PodError> {
        let now = units::owned(&self.plan.name, &self.request.unit_dir)?;
        let back = units::changes(&now, &self.observed.files);
        if back.is_empty() {
            return Ok(());
        }
        units::apply(&self.request.unit_dir, &back)?;
        for change in &back {
            self.undid(Step::change_text(change));
        }
        if let Err(e) = self.systemd.daemon_reload() {
            done.actions = vec![
                "the unit files are back as they were, but systemd has not reloaded them"
                    .to_owned(),
            ];
            return Err(e.into());
        }
        self.undid("daemon-reload".to_owned());
        Ok(())
    }

    fn pointers(&mut self, step: &'a Step) -> Result<(), PodError> {
        let Step::Pointers {
            current, previous, ..
        } = step
        else {
            unreachable!("a pointers step")
        };
        let (store, lock, name) = (self.store, self.lock, &self.plan.name);
        let before = &self.observed.state;
        self.begin(step);
        if *previous != before.previous {
            store.set_pointer(lock, name, "previous", previous.as_ref())?;
        }
        if *current != before.current {
            store.set_pointer(lock, name, "current", current.as_ref())?;
            for action in step.actions() {
                self.done(action);
            }
        }
        Ok(())
    }

    /// Start (or restart) the version and watch it come up; or start the
    /// pod's target.
    fn start(&mut self, step: &'a Step) -> Result<(), PodError> {
        self.begin(step);
        let (version, units, restart) = match step {
            Step::StartTarget(target) => {
                let target = std::slice::from_ref(target);
                self.systemd.start(target, self.request.start_timeout)?;
                self.done(step.to_string());
                return Ok(());
            }
            Step::Arm { units, restart, .. } => {
                // A waker that failed (its start limit hit) would fail the
                // sockets again at the next connection: forget it first.
                let mut failed = units.clone();
                failed.push(units::waker_name(&self.plan.name));
                self.systemd.reset_failed(&failed);
                if *restart {
                    self.systemd.restart(units, self.request.start_timeout)?;
                } else {
                    self.systemd.start(units, self.request.start_timeout)?;
                }
                self.done(step.to_string());
                return Ok(());
            }
            Step::Start {
                version,
                units,
                restart,
                ..
            } => (version, units, *restart),
            _ => unreachable!("a start step"),
        };
        let started = Step::start_text(units, restart);
        self.pivot_holds(version)?;
        let request = self.request;
        let up = bring_up(
            self.systemd,
            units,
            restart,
            request.start_timeout,
            request.min_up_time,
        );
        let Err(down) = up else {
            self.done(format!("{started} (up)"));
            return Ok(());
        };
        self.done(format!("{started} (not up)"));
        let journal = self.systemd.journal(&down.unit, down.since, JOURNAL_LINES);
        // The reason says whether it failed or ran out of time.
        let mut msg = format!(
            "version {version} of pod {} did not come up: {}\nlast journal lines of {}:",
            self.plan.name, down.reason, down.unit
        );
        if journal.is_empty() {
            msg.push_str(" (none)");
        }
        for line in journal {
            msg.push_str("\n  ");
            msg.push_str(&line);
        }
        Err(PodError::NotUp(msg))
    }

    /// A version's units start only while `current` points at it (their
    /// pivot condition): a start before that would be skipped by systemd
    /// without a word (a oneshot skipped so reads as up). Said here
    /// instead, as what it would be: a fault in the order of the steps.
    fn pivot_holds(&self, version: &Version) -> Result<(), PodError> {
        let pivot = self.store.pivot_path(&self.plan.name, version);
        match pivot.try_exists() {
            Ok(true) => Ok(()),
            _ => Err(PodError::NotUp(format!(
                "version {version} of pod {} cannot start: {} does not exist, so `current` does \
                 not point at it and systemd would skip its units (their ConditionPathExists=); \
                 nothing was started",
                self.plan.name,
                pivot.display()
            ))),
        }
    }

    /// A waker that was there may be other idle pods' (a later run
    /// overwrites it); one this run installed is no one's.
    fn undo_install_waker(&mut self, path: &Path, done: &Done<'a>) -> Result<(), PodError> {
        if !self.waker_existed && !done.actions.is_empty() {
            crate::atomic::remove_file(path)?;
            self.undid(format!("remove the waker {}", path.display()));
        }
        Ok(())
    }

    fn undo_start(&mut self, units: &[String]) -> Result<(), PodError> {
        stop_units(self.systemd, units)?;
        self.systemd.reset_failed(units);
        self.undid(Step::stop_text(units));
        Ok(())
    }

    fn remove_image(
        &mut self,
        step: &'a Step,
        id: &ImageId,
        runtime: Runtime,
    ) -> Result<(), PodError> {
        match crate::image::remove(self.store, self.lock, runtime, id, self.podman) {
            Ok(()) => self.done(step.to_string()),
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
        Ok(())
    }

    /// Build the new version's volumes inside its staged directory.
    fn build_volumes(&mut self, new: &NewVersion, staged: &Path) -> Result<(), PodError> {
        let pod = &new.pod;
        for v in &pod.volumes {
            let failed = |source: crate::volume::VolumeError| {
                PodError::from(crate::volume::PodVolumeError::Volume {
                    pod: pod.name.clone(),
                    version: pod.version.clone(),
                    volume: v.name.clone(),
                    source: Box::new(source),
                })
            };
            let downloads = staged.join("volumes").join(format!(".{}.download", v.name));
            let archive = match &v.data {
                None => None,
                Some(source) => Some(self.fetch_volume(new, source, staged, &downloads, failed)?),
            };
            let dir = Store::volume_in(staged, &v.name);
            let built = crate::volume::build(
                &dir,
                &v.name,
                archive.as_ref(),
                &crate::volume::Settings::default(),
            );
            crate::atomic::remove_tree(&downloads)?;
            built.map_err(failed)?;
            self.done(crate::volume::create_action(
                &pod.name,
                &pod.version,
                &v.name,
                v.data.as_ref().map(crate::bundle::Source::text).as_deref(),
            ));
        }
        Ok(())
    }

    /// Fetch a volume's archive into `downloads`.
    fn fetch_volume(
        &self,
        new: &NewVersion,
        source: &crate::bundle::Source,
        staged: &Path,
        downloads: &Path,
        failed: impl Fn(crate::volume::VolumeError) -> PodError,
    ) -> Result<crate::volume::LocalArchive, PodError> {
        use crate::outcome::Refusal;
        use crate::volume::{self, VolumeError};
        let location = new
            .locate(source)
            .map_err(|e| failed(VolumeError::Refused(Refusal(format!("data: {e}")))))?;
        // `volumes/` is on the way to every volume, which units of any user
        // read: made open before the private download directory inside it.
        crate::atomic::create_dir_all(&staged.join("volumes"), 0o755)?;
        crate::atomic::create_dir_all(downloads, 0o700)?;
        let mut archive =
            volume::fetch(&location, self.request.download_timeout, downloads).map_err(&failed)?;
        archive.shown = source.text();
        // A plain bundle's path was resolved when it was validated: read
        // now, the archive is not looked for through a link.
        archive.no_links = new.origin.is_none() && matches!(source, crate::bundle::Source::Path(_));
        // From a release: the archive must be the one it recorded, checked
        // as it is extracted, before the volume counts as built.
        if let Some(hex) = new.recorded_sha256(source) {
            let checksum = volume::Checksum::parse(&format!("sha256:{hex}"))
                .map_err(|e| failed(VolumeError::Refused(Refusal(format!("release.json: {e}")))))?;
            archive.checksum = Some(checksum);
        }
        Ok(archive)
    }

    /// Undo every step begun, newest first; stop at the first that fails
    /// (later ones rely on it: the store outlives the unit files that name
    /// it). Then remove what a first deploy left: the pod's target and
    /// slice, and the directories the run created.
    fn undo(&mut self) -> Result<(), PodError> {
        while let Some(mut done) = self.log.pop() {
            if let Err(e) = self.undo_step(&mut done) {
                self.log.push(done);
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
                self.undo_start(&running)?;
            }
        }
        self.remove_created()
    }

    /// Remove the directories the run created (and the layout marker of a
    /// store that holds nothing else).
    fn remove_created(&self) -> Result<(), PodError> {
        let layout = self.store.layout_path();
        for (path, existed) in self.existed.iter().rev() {
            if *existed {
                continue;
            }
            if path != &layout {
                crate::atomic::remove_dir_if_empty(path)?;
                continue;
            }
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
        }
        Ok(())
    }

    /// The error of a run that failed with `cause`, ended as `ending`
    /// says; the report says what was done and undone.
    fn fail(&mut self, cause: PodError, ending: Ending) -> PodError {
        let mut undo_error = None;
        let outcome = match ending {
            Ending::Undo => match self.undo_all() {
                Ok(Some(outcome)) => outcome,
                // Nothing was done that shows: the cause alone.
                Ok(None) => {
                    self.report.changed = false;
                    return cause;
                }
                Err(e) => {
                    undo_error = Some(crate::ansible::error_chain(&e));
                    "the run was undone only in part".to_owned()
                }
            },
            Ending::RollbackOff => self.left_as_it_is(),
            Ending::AlreadyCurrent => {
                "nothing to roll back to: the version was already current".to_owned()
            }
            Ending::AfterUp => {
                "not undone (the new state was in place); a rerun finishes the job".to_owned()
            }
        };
        let left: Vec<String> = match ending {
            Ending::Undo => self
                .log
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

    /// Undo everything; how the pod is then, or `None` when nothing was
    /// undone that shows.
    fn undo_all(&mut self) -> Result<Option<String>, PodError> {
        let before = &self.observed.state;
        let rolled_back = self
            .log
            .iter()
            .any(|d| matches!(d.step, Step::Start { .. } | Step::StartTarget(_)));
        self.undo()?;
        if self.undone.is_empty() {
            return Ok(None);
        }
        Ok(Some(match (&before.current, rolled_back) {
            (Some(old), true) => format!("rolled back to version {old}"),
            (None, true) => "rolled back: the pod is as it was before this run".to_owned(),
            (Some(old), false) => {
                format!("the pod is as it was before this run, version {old} current")
            }
            (None, false) => "the pod is as it was before this run".to_owned(),
        }))
    }

    /// A version that did not come up, left current (`rollback: false`).
    fn left_as_it_is(&self) -> String {
        // The version it replaces was stopped first when the two share
        // ports; else it is left running.
        let stopped = self
            .log
            .iter()
            .any(|d| matches!(d.step, Step::Stop(units) if !units.is_empty()));
        match (&self.observed.state.current, stopped) {
            (None, _) => "left as it is (rollback is off): the new version is current".to_owned(),
            (Some(old), false) => format!(
                "left as it is (rollback is off): the new version is current and version {old} \
                 still runs"
            ),
            (Some(old), true) => format!(
                "left as it is (rollback is off): the new version is current, and version {old} \
                 stays stopped (its units were stopped first, for the ports they share); roll \
                 back by deploying version {old}"
            ),
        }
    }
}

/// The paths a run may create, and whether each exists now.
fn existing(plan: &Plan, request: &Request, store: &Store) -> Vec<(PathBuf, bool)> {
    [
        store.layout_path(),
        store.staging_dir(),
        store.trash_dir(),
        store.images_root(),
        store.pods_dir(),
        store.pod_dir(&plan.name),
        store.root().join("bin"),
        request.unit_dir.clone(),
        request.unit_dir.join("multi-user.target.wants"),
    ]
    .into_iter()
    .map(|p| {
        let exists = p.symlink_metadata().is_ok();
        (p, exists)
    })
    .collect()
}

/// Carry out `plan` (made under `lock` from `observed`).
pub(super) fn apply(
    plan: &Plan,
    observed: &Observed,
    request: &Request,
    store: &Store,
    lock: &StoreLock,
    host: &mut Host<'_>,
    report: &mut Report,
) -> Result<(), PodError> {
    let mut run = Run {
        plan,
        observed,
        request,
        store,
        lock,
        systemd: &mut *host.systemd,
        podman: &mut *host.podman,
        report,
        log: Vec::new(),
        undone: Vec::new(),
        existed: existing(plan, request, store),
        staged: None,
        waker_existed: store.waker_path().symlink_metadata().is_ok(),
    };
    if let Err(cause) = run.prepare(&plan.prepare) {
        return Err(run.fail(cause, Ending::Undo));
    }
    for step in &plan.start {
        if let Err(cause) = run.step(step) {
            let ending = match (plan.switch, request.rollback) {
                // Arming in the start: the pod was becoming idle.
                _ if matches!(step, Step::Arm { .. }) => Ending::Undo,
                (true, true) => Ending::Undo,
                (true, false) => Ending::RollbackOff,
                (false, _) => Ending::AlreadyCurrent,
            };
            return Err(run.fail(cause, ending));
        }
    }
    run.log.clear();
    for step in &plan.finish {
        if let Err(cause) = run.step(step) {
            return Err(run.fail(cause, Ending::AfterUp));
        }
    }
    Ok(())
}

impl<'a> Run<'a> {
    /// The steps before the start.
    fn prepare(&mut self, steps: &'a [Step]) -> Result<(), PodError> {
        self.store.ensure_layout(self.lock)?;
        // The images this run downloaded to compute their ids are in
        // staging too, still to be imported.
        let downloaded =
            (self.observed.incoming.as_ref()).is_some_and(|n| !n.downloaded.is_empty());
        self.store
            .clean_transient_but_downloads(self.lock, downloaded)?;
        for step in steps {
            self.step(step)?;
        }
        Ok(())
    }
}
