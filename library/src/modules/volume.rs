//! `ops_volume`: create, replace or remove a pod version's data volume from
//! a tar archive, idempotently.

use std::path::PathBuf;

use serde::Deserialize;

use crate::module::{Context, Default, Failure, Kind, Module, Opt, Outcome, Spec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub pod: String,
    pub version: String,
    pub name: String,
    pub data: Option<String>,
    pub checksum: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<String>,
    pub replace: bool,
    pub state: String,
    pub root: PathBuf,
}

#[derive(Debug)]
pub struct OpsVolume;

impl Module for OpsVolume {
    const SPEC: Spec = Spec {
        module: "ops_volume",
        options: &[
            Opt::new("pod", Kind::Str, "Name of the deployed pod.").required(),
            Opt::new("version", Kind::Str, "Version of the deployed pod.").required(),
            Opt::new("name", Kind::Str, "The volume, as named in pod.json.").required(),
            Opt::new(
                "data",
                Kind::Str,
                "Path or http(s) URI of the archive of the volume's contents.",
            ),
            Opt::new(
                "checksum",
                Kind::Str,
                "sha256:<hex> or sha512:<hex> of the archive file.",
            ),
            Opt::new(
                "owner",
                Kind::Str,
                "User (name or id) owning every extracted entry.",
            ),
            Opt::new(
                "group",
                Kind::Str,
                "Group (name or id) owning every extracted entry.",
            ),
            Opt::new(
                "mode",
                Kind::Str,
                "Mode of the volume's top directory, such as '0750'.",
            ),
            Opt::new(
                "replace",
                Kind::Bool,
                "Replace the contents when the archive differs from the one extracted.",
            )
            .default(Default::Bool(false)),
            Opt::new("state", Kind::Str, "Whether the volume should exist.")
                .choices(&["present", "absent"])
                .default(Default::Str("present")),
            Opt::new("root", Kind::Path, "The ops store.")
                .default(Default::Str(super::DEFAULT_ROOT)),
        ],
        mutually_exclusive: &[],
    };
    type Options = Options;

    fn run(options: Options, context: &mut Context) -> Result<Outcome, Failure> {
        let _ = options;
        super::not_built_yet(context, "managing volumes")
    }
}
