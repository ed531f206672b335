//! `ops_facts`: facts about every pod deployed on the host.

use std::path::PathBuf;

use serde::Deserialize;

use serde_json::Map;

use crate::ansible::{Context, DefaultValue, Failure, Kind, Module, Opt, Outcome, Spec};
use crate::bundle::PodName;
use crate::facts;
use crate::store::Store;
use crate::systemd::Systemctl;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub root: PathBuf,
    pub unit_dir: PathBuf,
    pub pods: Option<Vec<String>>,
    pub units: bool,
}

#[derive(Debug)]
pub struct OpsFacts;

impl Module for OpsFacts {
    const SPEC: Spec = Spec {
        module: "ops_facts",
        options: &[
            Opt::new("root", Kind::Path, "The ops store.")
                .default(DefaultValue::Str(super::DEFAULT_ROOT)),
            Opt::new("unit_dir", Kind::Path, "systemd's unit directory.")
                .default(DefaultValue::Str("/etc/systemd/system")),
            Opt::new("pods", Kind::List(&Kind::Str), "Only these pods."),
            Opt::new(
                "units",
                Kind::Bool,
                "Ask systemd for the state of the units.",
            )
            .default(DefaultValue::Bool(true)),
        ],
        mutually_exclusive: &[],
    };
    type Options = Options;

    fn run(options: Options, context: &mut Context) -> Result<Outcome, Failure> {
        let mut problems = Vec::new();
        for (option, path) in [("root", &options.root), ("unit_dir", &options.unit_dir)] {
            if !path.is_absolute() {
                problems.push(format!(
                    "{option} must be an absolute path, got {}",
                    path.display()
                ));
            }
        }
        let pods: Option<Vec<PodName>> = options.pods.map(|names| {
            names
                .iter()
                .filter_map(|n| {
                    PodName::parse(n)
                        .map_err(|e| problems.push(format!("pods: {e}")))
                        .ok()
                })
                .collect()
        });
        if !problems.is_empty() {
            return Err(Failure::new(format!("ops_facts: {}", problems.join("; "))));
        }
        // Resolved once, as every module does: what is below is read
        // without following a link (crate::atomic::open_own).
        let store = Store::new(&crate::atomic::resolve(&options.root));
        let unit_dir = crate::atomic::resolve(&options.unit_dir);
        let scope = facts::Scope {
            pods: pods.as_deref(),
            units: options.units,
        };
        let gathered = facts::gather(&store, &unit_dir, &scope, &mut Systemctl::connect()?)?;
        let count = gathered.pods.len();
        for name in pods.iter().flatten() {
            if !gathered.pods.contains_key(name.as_str()) {
                context.warn(format!(
                    "pod {name} is not deployed under {}",
                    options.root.display()
                ));
            }
        }
        #[derive(serde::Serialize)]
        struct AnsibleFacts<'a> {
            ops: &'a facts::Facts,
        }
        let text = serde_json::value::to_raw_value(&AnsibleFacts { ops: &gathered })
            .map_err(|e| Failure::new(format!("ops_facts: cannot write the facts: {e}")))?;
        // Read-only: the same facts in check mode, only the message says so.
        let mut outcome = super::reported(
            context,
            false,
            format!(
                "{count} pod{} deployed under {}",
                if count == 1 { "" } else { "s" },
                options.root.display()
            ),
            &[],
            Map::new(),
        );
        outcome.facts = Some(text);
        Ok(outcome)
    }
}
