//! `ops_pod`: deploy, start, stop, switch, roll back, undeploy and prune
//! versions of a pod.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::bundle;
use crate::module::{Context, Default, Failure, Kind, Module, Opt, Outcome, Spec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub bundle: Option<PathBuf>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub state: String,
    pub keep: Option<i64>,
    pub env: Option<BTreeMap<String, String>>,
    pub root: PathBuf,
    pub unit_dir: PathBuf,
    pub start_timeout: i64,
    pub rollback: bool,
    pub lock_timeout: i64,
}

#[derive(Debug)]
pub struct OpsPod;

impl Module for OpsPod {
    const SPEC: Spec = Spec {
        module: "ops_pod",
        options: &[
            Opt::new(
                "bundle",
                Kind::Path,
                "Path to a bundle directory or its pod.json, on the target.",
            ),
            Opt::new(
                "name",
                Kind::Str,
                "Name of the pod; taken from the bundle when one is given.",
            ),
            Opt::new(
                "version",
                Kind::Str,
                "Version of the pod; needed without a bundle, except to remove every version.",
            ),
            Opt::new("state", Kind::Str, "What the version should be.")
                .choices(&["present", "started", "stopped", "restarted", "absent"])
                .default(Default::Str("started")),
            Opt::new(
                "keep",
                Kind::Int,
                "Prune the oldest versions beyond this many, never the current one.",
            ),
            Opt::new(
                "env",
                Kind::Dict(&Kind::Str),
                "Pod environment; values are secrets, written 0600 and never returned.",
            )
            .no_log(),
            Opt::new("root", Kind::Path, "The ops store.")
                .default(Default::Str(super::DEFAULT_ROOT)),
            Opt::new("unit_dir", Kind::Path, "systemd's unit directory.")
                .default(Default::Str("/etc/systemd/system")),
            Opt::new(
                "start_timeout",
                Kind::Int,
                "Seconds to wait for the units to come up.",
            )
            .default(Default::Int(60)),
            Opt::new(
                "rollback",
                Kind::Bool,
                "Go back to the previous version when the new one does not come up.",
            )
            .default(Default::Bool(true)),
            Opt::new(
                "lock_timeout",
                Kind::Int,
                "Seconds to wait for another ops run to finish.",
            )
            .default(Default::Int(300)),
        ],
        mutually_exclusive: &[],
    };
    type Options = Options;

    fn run(options: Options, context: &mut Context) -> Result<Outcome, Failure> {
        // Validate the whole bundle before anything else, in every mode.
        if let Some(path) = &options.bundle {
            bundle::load(path)?;
        }
        super::not_built_yet(context, "deploying pods")
    }
}
