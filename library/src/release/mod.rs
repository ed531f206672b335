//! ops_release's engine: publish a bundle into a release repository (the
//! layout of [`layout`]), or take a published version out of it.
//!
//! The shape is ops_pod's: [`wanted`] reads the bundle (or a release
//! instruction file, [`instructions`]) into what is to be published, every
//! file hashed and every image identified; [`observe`] settles which
//! stored image and volume versions it reuses (each content stored once)
//! and reads what the repository holds of it; [`plan`] (pure) turns both into [`step::Step`]s
//! or a refusal naming what differs; check mode stops there. Otherwise the
//! repository lock is taken, the repository observed and planned again, and
//! [`apply`] carries out each step: every artifact and version directory
//! staged beside its place and renamed into it, `tip` replaced by a new
//! link renamed over it. Artifacts are immutable: a version directory with
//! other content under the same name is refused, never replaced.
//!
//! A run that adds a version and moves `tip` to it writes an intent
//! record (`POD/.tip-intent`, the version) before renaming the version
//! into place and removes it once `tip` names it: a run cut short between
//! the two leaves it, and the next run on the pod (whatever it asks)
//! finishes moving `tip` to that version, or drops the record when the
//! version never got into place. Check mode writes none.

pub mod apply;
/// What a file to publish is: moved to the image layer, which ops_pod
/// uses too (an image whose pod.json gives no id).
pub use crate::image::identify as artifact;
pub mod instructions;
pub mod layout;
pub mod observe;
pub mod plan;
pub mod step;
pub mod wanted;
pub mod written;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::lock::{LockError, StoreLock};
use crate::outcome::{AfterChanges, Refusal};
use crate::records::names::{PodName, Version};
use layout::Label;

/// Whether the version should be published or taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Present,
    Absent,
}

/// What to publish from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A bundle directory (or its pod.json).
    Bundle(PathBuf),
    /// A release instruction file.
    Instructions(PathBuf),
}

/// An ops_release request, its options checked.
#[derive(Debug, Clone)]
pub struct Request {
    /// The repository, resolved.
    pub repo: PathBuf,
    pub input: Option<Input>,
    pub channel: Option<PodName>,
    pub label: Option<Label>,
    /// For state=absent without an input.
    pub name: Option<PodName>,
    pub version: Option<Version>,
    pub tip: bool,
    pub state: State,
    pub lock_timeout: Duration,
}

/// What a run did (or, in check mode, would do).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub changed: bool,
    /// The pod version directory.
    pub path: String,
    pub version: String,
    /// The version `tip` names after the run.
    pub tip: Option<String>,
    pub added: Vec<String>,
    pub reused: Vec<String>,
    pub actions: Vec<String>,
    pub diff: Vec<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{0}")]
    AfterChanges(Box<AfterChanges>),
}

impl ReleaseError {
    /// Whether the repository stays changed.
    pub fn changed(&self) -> bool {
        match self {
            ReleaseError::AfterChanges(after) => after.changed(),
            _ => false,
        }
    }
}

/// Carry out `request` (in check mode, only plan it).
pub fn run(request: &Request, check: bool, want_diff: bool) -> Result<Report, ReleaseError> {
    let target = wanted::resolve(request)?;
    let (settled, planned) = settled_plan(request, &target)?;
    let mut report = planned.report(&settled, want_diff);
    if check || planned.steps.is_empty() {
        return Ok(report);
    }
    let lock = StoreLock::acquire(
        &request.repo,
        request.lock_timeout,
        &format!("ops_release {}", report.path),
    )?;
    // Observed and planned again under the lock: another run may have
    // published in between.
    let (settled, planned) = settled_plan(request, &target)?;
    report = planned.report(&settled, want_diff);
    if !planned.steps.is_empty() {
        apply::apply(&settled, &planned.steps, &lock)?;
    }
    Ok(report)
}

/// `target` with its artifacts' stored versions settled, observed and
/// planned; a plan that would write through a planted link refused.
fn settled_plan(
    request: &Request,
    target: &wanted::Target,
) -> Result<(wanted::Target, plan::Plan), Refusal> {
    let settled = observe::settle(target)?;
    let planned = plan::plan(request, &settled, &observe::observe(&settled)?)?;
    apply::refuse_planted(&settled, &planned.steps)?;
    Ok((settled, planned))
}
