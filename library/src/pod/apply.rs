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

use std::time::{Duration, Instant, SystemTime};

use super::plan::{describe_change, environment_action, Plan, Start};
use super::{version_units, Observed, PodError, Report, Request};
use crate::lock::StoreLock;
use crate::store::Store;
use crate::systemd::{Systemd, UnitStatus};
use crate::units;

/// Journal lines quoted when a unit does not come up.
const JOURNAL_LINES: usize = 15;

/// Tests kill the process at these points (`OPS_TEST_CRASH_AT=<point>`) to
/// prove that every interruption converges.
fn crash_point(point: &str) {
    if std::env::var("OPS_TEST_CRASH_AT").is_ok_and(|p| p == point) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

struct Run<'a> {
    plan: &'a Plan,
    observed: &'a Observed,
    request: &'a Request,
    store: &'a Store,
    lock: &'a StoreLock,
    systemd: &'a mut dyn Systemd,
    report: &'a mut Report,
}

impl Run<'_> {
    fn done(&mut self, action: String) {
        self.report.changed = true;
        self.report.actions.push(action);
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
        self.systemd.stop(units)?;
        self.systemd.reset_failed(units);
        self.done(format!("stop {}", units.join(" ")));
        Ok(())
    }

    /// Steps 1 to 4; on failure, the caller puts things back.
    fn prepare(&mut self) -> Result<(), PodError> {
        let plan = self.plan;
        let (store, lock) = (self.store, self.lock);
        store.ensure_layout(lock)?;
        store.clean_transient(lock)?;
        // A new version is staged whole, volumes included, then the images
        // are imported, then the version is committed: a unit is never
        // installed before its image, and a failure in any of these leaves
        // the store's versions as they were.
        let staged = match &plan.add {
            Some((new, record)) => {
                let staged = store.stage(lock, new, record)?;
                if let Err(e) = self.build_volumes(new, &staged) {
                    store.discard_staged(lock, &staged)?;
                    return Err(e);
                }
                Some(staged)
            }
            None => None,
        };
        for import in &plan.import_images {
            if let Err(e) = crate::image::import(store, lock, plan.runtime, import) {
                if let Some(staged) = &staged {
                    store.discard_staged(lock, staged)?;
                }
                return Err(e.into());
            }
            self.done(crate::image::import_action(
                &import.id,
                &import.source,
                plan.runtime,
            ));
        }
        if let (Some((new, _)), Some(staged)) = (&plan.add, &staged) {
            crash_point("staged");
            store.commit(lock, staged, &plan.name, &new.pod.version)?;
            self.done(format!(
                "add version {} of pod {} to the store",
                new.pod.version, plan.name
            ));
            crash_point("committed");
        }
        if let (Some(env), Some(v)) = (&plan.environment, &plan.version) {
            store.write_environment(lock, &plan.name, v, env.as_deref())?;
            self.done(environment_action(v, env.is_some()));
        }
        self.stop(&plan.stop_first)?;
        self.write_files(&plan.files_before)?;
        crash_point("installed");
        let before = &self.observed.state;
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
        staged: &std::path::Path,
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
                            failed(volume::VolumeError::Refused(format!("data: {e}")))
                        })?,
                    };
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

    /// Put the store, unit files and pointers back as they were observed.
    fn restore(&mut self) -> Result<(), PodError> {
        let plan = self.plan;
        let before = &self.observed.state;
        let (store, lock) = (self.store, self.lock);
        store.set_pointer(lock, &plan.name, "current", before.current.as_ref())?;
        store.set_pointer(lock, &plan.name, "previous", before.previous.as_ref())?;
        if let (Some(_), Some(v)) = (&plan.environment, &plan.version) {
            if let Some(old) = before.versions.get(v) {
                store.write_environment(lock, &plan.name, v, old.environment.as_deref())?;
            }
        }
        let now = units::owned(&plan.name, &self.request.unit_dir)?;
        let back = units::changes(&now, &self.observed.files);
        if !back.is_empty() {
            units::apply(&self.request.unit_dir, &back)?;
            self.systemd.daemon_reload()?;
        }
        if let Some((new, _)) = &plan.add {
            store.remove_version(lock, &plan.name, &new.pod.version)?;
        }
        if before.versions.is_empty() {
            store.remove_pod(lock, &plan.name)?;
            let pod_units = super::pod_units(&plan.name);
            self.systemd.stop(&pod_units)?;
            self.systemd.reset_failed(&pod_units);
        }
        Ok(())
    }

    /// Start again what was stopped to free the started version's ports,
    /// once the run has been undone.
    fn start_again(&mut self) -> Result<(), PodError> {
        let units = &self.plan.stopped_for_ports;
        if units.is_empty() {
            return Ok(());
        }
        self.systemd.start(units, self.request.start_timeout)?;
        self.report
            .actions
            .push(format!("start {} again", units.join(" ")));
        Ok(())
    }

    /// Step 5, and the rollback when the version does not come up.
    fn start(&mut self, start: &Start) -> Result<(), PodError> {
        let verb = if start.restart { "restart" } else { "start" };
        let up = if start.units.is_empty() {
            Ok(())
        } else {
            bring_up(
                self.systemd,
                &start.units,
                start.restart,
                self.request.start_timeout,
                self.request.min_up_time,
            )
        };
        match up {
            Ok(()) => {
                if !start.units.is_empty() {
                    self.done(format!("{verb} {} (up)", start.units.join(" ")));
                }
                if let Some(target) = &start.target {
                    self.systemd
                        .start(std::slice::from_ref(target), self.request.start_timeout)?;
                    self.done(format!("start {target}"));
                }
                Ok(())
            }
            Err(down) => {
                let journal = self.systemd.journal(&down.unit, down.since, JOURNAL_LINES);
                // The reason says whether it failed or ran out of time.
                let mut msg = format!(
                    "version {} of pod {} did not come up: {}",
                    start.version, self.plan.name, down.reason
                );
                self.report.changed = true;
                if self.request.rollback && start.switch {
                    let (all, _) = version_units(&self.plan.name, &self.plan.after, &start.version);
                    self.systemd.stop(&all)?;
                    self.systemd.reset_failed(&all);
                    self.restore()?;
                    self.report.current = self.observed.state.current.clone();
                    self.report.previous = self.observed.state.previous.clone();
                    self.report.actions.push(format!("stop {}", all.join(" ")));
                    self.start_again()?;
                    msg.push_str(&match &self.observed.state.current {
                        Some(old) => format!("; rolled back to version {old}"),
                        None => "; rolled back: the pod is as it was before this run".to_owned(),
                    });
                    self.report.actions.push("roll back".to_owned());
                    // Everything this run did has been undone.
                    self.report.changed = false;
                } else if start.switch {
                    msg.push_str("; left as it is (rollback is off): the new version is current and the one it replaces was not stopped");
                } else {
                    msg.push_str("; nothing to roll back to: the version was already current");
                }
                msg.push_str(&format!("\nlast journal lines of {}:", down.unit));
                if journal.is_empty() {
                    msg.push_str(" (none)");
                }
                for line in journal {
                    msg.push_str("\n  ");
                    msg.push_str(&line);
                }
                Err(PodError::NotUp(msg))
            }
        }
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
    format!(
        "{} is {} ({}, result {})",
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
    let mut run = Run {
        plan,
        observed,
        request,
        store,
        lock,
        systemd,
        report,
    };
    if let Err(error) = run.prepare() {
        return Err(match run.restore().and_then(|()| run.start_again()) {
            Ok(()) => {
                run.report.changed = false;
                run.report.actions.push("undo".to_owned());
                error
            }
            Err(undo) => PodError::Refused(format!(
                "{}; undoing it failed too: {}",
                crate::module::error_chain(&error),
                crate::module::error_chain(&undo)
            )),
        });
    }
    if let Some(start) = &plan.start {
        run.start(start)?;
    }
    crash_point("started");
    run.stop(&plan.stop_after)?;
    run.write_files(&plan.files_after)?;
    for v in &plan.remove {
        store.remove_version(lock, &plan.name, v)?;
        run.done(format!(
            "remove version {v} of pod {} from the store",
            plan.name
        ));
    }
    if plan.after.versions.is_empty() {
        store.remove_pod(lock, &plan.name)?;
    }
    for (id, runtime) in &plan.remove_images {
        match crate::image::remove(store, lock, *runtime, id) {
            Ok(()) => run.done(format!(
                "{} (no version uses it)",
                crate::image::remove_action(id, *runtime)
            )),
            // A container podman keeps (a unit that did not clean up, or
            // someone else's) is not ops's to remove: the pod is gone all
            // the same; the image stays, said and recorded.
            Err(crate::image::ImageError::InUse { reference, detail }) => {
                run.report.warnings.push(format!(
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
