//! The steps of a plan: what each one does, in words (the action texts
//! check mode reports; a real run reports the same words, adding how a
//! start ended) and as Ansible diff entries. [`super::apply`] carries each
//! out, and takes it back.

use std::fmt;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::bundle::{ImageId, Pod, PodName, Source, Version};
use crate::image::{self, records, Import, Runtime};
use crate::ports::IndexChange;
use crate::records::idle::{IdleRecord, WokenRecord};
use crate::records::version::VersionRecord;
use crate::store::{NewVersion, Store};
use crate::units::{self, Change, Entry};

/// One step of a plan. Most are one action; the unit files of a step are
/// one action each and their daemon-reload; a step the user is not told
/// of apart (the pointers when no version becomes current, the pod's
/// directory going with its last version) is none.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Stage a new version whole, building its volumes in the staged copy.
    Stage(Box<NewVersion>, Box<VersionRecord>),
    /// Download an image pod.json gives by URI (shown) without an id,
    /// compute its id and import it. Only in a plan that is not applied
    /// (check mode, or a real run's first look, before the lock): a real
    /// run downloads such images under the lock before it plans again.
    Fetch(String, Runtime),
    /// Import an image the version acted on lacks.
    Import(Box<Import>, Runtime),
    /// Commit the staged version to the store.
    Commit(PodName, Version),
    /// Write (`Some`) or remove a version's secret environment file.
    Environment {
        version: Version,
        file: Option<Vec<u8>>,
        /// What it was (for the undo).
        before: Option<Vec<u8>>,
        /// The version whose file this one carries over.
        from: Option<Version>,
        /// The version is added in this run (its undo takes the file).
        added: bool,
    },
    /// Write the marker of versions an older ops staged without one (see
    /// `Store::pivot_path`); not undone: it is the version's own, right
    /// whatever the run does.
    Mark(PodName, Vec<Version>),
    Stop(Vec<String>),
    /// Change unit files, then reload systemd.
    UnitFiles(Vec<Change>),
    /// Move `current` and `previous`; `made_current` is told.
    Pointers {
        current: Option<Version>,
        previous: Option<Version>,
        made_current: Option<Version>,
    },
    /// Start (or restart) a version's units and watch them come up;
    /// undone by stopping `all` the version's units (a started unit may
    /// start others of it).
    Start {
        version: Version,
        units: Vec<String>,
        all: Vec<String>,
        restart: bool,
    },
    /// Start the pod's target (what stops the pod as one).
    StartTarget(String),
    /// Copy this program to the store as the waker of idle pods.
    InstallWaker(PathBuf),
    /// Write or remove the pod's idle record; `woken` records that a
    /// connection woke it.
    Idle {
        pod: PodName,
        before: Option<IdleRecord>,
        after: Option<IdleRecord>,
        woken: Option<WokenRecord>,
        /// What the woken record was (for the undo).
        woken_before: Option<WokenRecord>,
    },
    /// Start an idle pod's target and sockets: its ports listen; restart
    /// them when their unit files changed (a socket listens as it was
    /// started until then).
    Arm {
        units: Vec<String>,
        ports: Vec<u16>,
        restart: bool,
    },
    /// Remove a version from the store (its volumes with it).
    RemoveVersion(Version, Box<VersionRecord>),
    /// Remove the pod's directory, its last version gone.
    RemovePod,
    /// Remove an image no version uses.
    RemoveImage(ImageId, Runtime),
    /// A change to the port record in the store at the root given (made
    /// after the run, from the store as the run leaves it).
    PortRecord(IndexChange, PathBuf),
}

impl Step {
    /// `start <units>` or `restart <units>`: the start as begun.
    pub(crate) fn stop_text(units: &[String]) -> String {
        format!("stop {}", units.join(" "))
    }

    pub(crate) fn start_text(units: &[String], restart: bool) -> String {
        let verb = if restart { "restart" } else { "start" };
        format!("{verb} {}", units.join(" "))
    }

    pub(crate) fn environment_text(
        version: &Version,
        file: Option<&[u8]>,
        from: Option<&Version>,
    ) -> String {
        match (file, from) {
            (Some(env), Some(from)) => format!(
                "write the environment file of version {version}, carried over from version \
                 {from} (env not given): {} (values hidden)",
                units::environment_names(env).join(", ")
            ),
            (Some(_), None) => format!("write the environment file of version {version}"),
            (None, _) => format!("remove the environment file of version {version}"),
        }
    }

    pub(crate) fn change_text(change: &Change) -> String {
        let path = change.path.display();
        match (&change.before, &change.after) {
            (None, Some(_)) => format!("install {path}"),
            (Some(_), Some(_)) => format!("update {path}"),
            (_, None) => format!("remove {path}"),
        }
    }

    pub(crate) fn idle_text(pod: &PodName, after: Option<&IdleRecord>, woken: bool) -> String {
        match (after, woken) {
            (Some(idle), _) => format!(
                "mark pod {pod} idle (version {}, woken by a connection to its ports)",
                idle.version
            ),
            (None, true) => format!("clear the idle mark of pod {pod} and record it woken"),
            (None, false) => format!("clear the idle mark of pod {pod}"),
        }
    }

    pub(crate) fn mark_text(name: &PodName, version: &Version) -> String {
        format!(
            "write the marker of version {version} of pod {name} ({}: its units start only \
             while it is current)",
            crate::store::marker_name(version)
        )
    }

    pub(crate) fn remove_version_text(name: &PodName, version: &Version) -> String {
        format!("remove version {version} of pod {name} from the store")
    }

    /// The actions of this step, in order, in words.
    fn arm_text(units: &[String], ports: &[u16], restart: bool) -> String {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        format!(
            "{} (a connection to port {} wakes the pod)",
            Step::start_text(units, restart),
            ports.join(", ")
        )
    }

    pub(crate) fn actions(&self) -> Vec<String> {
        match self {
            Step::Stage(new, _) => new
                .pod
                .volumes
                .iter()
                .map(|v| {
                    crate::volume::create_action(
                        &new.pod.name,
                        &new.pod.version,
                        &v.name,
                        v.data.as_ref().map(Source::text).as_deref(),
                    )
                })
                .collect(),
            Step::Import(import, runtime) => {
                vec![import.action(*runtime)]
            }
            Step::Fetch(uri, runtime) => vec![format!(
                "download image {uri} and compute its id (pod.json gives none: unknown until \
                 downloaded, and check mode downloads nothing), then import it into {runtime}"
            )],
            Step::Commit(name, v) => vec![format!("add version {v} of pod {name} to the store")],
            Step::Environment {
                version,
                file,
                from,
                ..
            } => vec![Step::environment_text(
                version,
                file.as_deref(),
                from.as_ref(),
            )],
            Step::Mark(name, versions) => {
                versions.iter().map(|v| Step::mark_text(name, v)).collect()
            }
            Step::Stop(units) => vec![Step::stop_text(units)],
            Step::UnitFiles(changes) => changes
                .iter()
                .map(Step::change_text)
                .chain(["daemon-reload".to_owned()])
                .collect(),
            Step::Pointers { made_current, .. } => made_current
                .iter()
                .map(|v| format!("make version {v} current"))
                .collect(),
            Step::Start { units, restart, .. } => vec![format!(
                "{} and wait until {} up",
                Step::start_text(units, *restart),
                if units.len() == 1 {
                    "it is"
                } else {
                    "they are"
                }
            )],
            Step::StartTarget(target) => vec![format!("start {target}")],
            Step::InstallWaker(path) => vec![format!(
                "install the waker of idle pods, {} (a copy of this ops_pod)",
                path.display()
            )],
            Step::Idle {
                pod, after, woken, ..
            } => vec![Step::idle_text(pod, after.as_ref(), woken.is_some())],
            Step::Arm {
                units,
                ports,
                restart,
            } => vec![Step::arm_text(units, ports, *restart)],
            Step::RemoveVersion(v, record) => {
                vec![Step::remove_version_text(&record.pod.name, v)]
            }
            Step::RemovePod => Vec::new(),
            Step::RemoveImage(id, runtime) => vec![format!(
                "{} (no version uses it)",
                image::remove_action(id, *runtime)
            )],
            Step::PortRecord(change, root) => vec![change.describe(&Store::new(root))],
        }
    }

    /// Where this step's diff entries go among all the plan's: after the
    /// store summary, volumes added then removed, images imported then
    /// removed, the port record, the unit files.
    pub(crate) fn diff_rank(&self) -> u8 {
        match self {
            Step::Stage(..) => 0,
            Step::RemoveVersion(..) => 1,
            Step::Fetch(..) | Step::Import(..) => 2,
            Step::RemoveImage(..) => 3,
            Step::PortRecord(..) => 4,
            Step::UnitFiles(..) => 5,
            _ => 6,
        }
    }

    /// This step's Ansible diff entries.
    pub(crate) fn diff(&self, store: &Store) -> Vec<Value> {
        match self {
            Step::Stage(new, record) => volume_diffs(store, &new.pod, record.runtime, false),
            Step::RemoveVersion(_, record) => {
                volume_diffs(store, &record.pod, record.runtime, true)
            }
            Step::Import(import, runtime) => {
                let location = records::location(store, *runtime, &import.id);
                vec![image::diff_entry(
                    &import.id.to_string(),
                    *runtime,
                    &location,
                    false,
                    true,
                )]
            }
            Step::Fetch(uri, runtime) => vec![image::diff_entry(
                &format!("unknown until downloaded from {uri}"),
                *runtime,
                "named by the id",
                false,
                true,
            )],
            Step::RemoveImage(id, runtime) => {
                let location = records::location(store, *runtime, id);
                vec![image::diff_entry(
                    &id.to_string(),
                    *runtime,
                    &location,
                    true,
                    false,
                )]
            }
            Step::PortRecord(change, _) => vec![json!({
                "before_header": change.path(store).display().to_string(),
                "after_header": change.path(store).display().to_string(),
                "before": change.before.clone().unwrap_or_default(),
                "after": change.after.clone().unwrap_or_default(),
            })],
            Step::UnitFiles(changes) => changes.iter().map(file_diff).collect(),
            _ => Vec::new(),
        }
    }
}

/// The step's actions, joined as a run's message joins them.
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.actions().join("; "))
    }
}

fn volume_diffs(store: &Store, pod: &Pod, runtime: Runtime, removed: bool) -> Vec<Value> {
    pod.volumes
        .iter()
        .map(|volume| {
            let path = crate::volume::data_path(store, &pod.name, &pod.version, &volume.name);
            let text = Some(crate::volume::pod_diff_text(pod, runtime, volume, &path));
            let (before, after) = if removed { (text, None) } else { (None, text) };
            crate::volume::diff_entry(&pod.name, &pod.version, &volume.name, before, after)
        })
        .collect()
}

fn file_diff(change: &Change) -> Value {
    json!({
        "before_header": change.path.display().to_string(),
        "after_header": change.path.display().to_string(),
        "before": change.before.as_ref().map(Entry::text).unwrap_or_default(),
        "after": change.after.as_ref().map(Entry::text).unwrap_or_default(),
    })
}
