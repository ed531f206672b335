//! `ops_facts`: facts about every pod deployed on the host.

use std::path::PathBuf;

use serde::Deserialize;

use crate::module::{Context, Default, Failure, Kind, Module, Opt, Outcome, Spec};

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
                .default(Default::Str(super::DEFAULT_ROOT)),
            Opt::new("unit_dir", Kind::Path, "systemd's unit directory.")
                .default(Default::Str("/etc/systemd/system")),
            Opt::new("pods", Kind::List(&Kind::Str), "Only these pods."),
            Opt::new(
                "units",
                Kind::Bool,
                "Ask systemd for the state of the units.",
            )
            .default(Default::Bool(true)),
        ],
        mutually_exclusive: &[],
    };
    type Options = Options;

    fn run(options: Options, context: &mut Context) -> Result<Outcome, Failure> {
        let _ = options;
        super::not_built_yet(context, "gathering facts")
    }
}
