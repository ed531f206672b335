//! `ops_image`: import a container image into the local runtime, verifying
//! its digest and signature; remove unreferenced images.

use std::path::PathBuf;

use serde::Deserialize;

use crate::bundle;
use crate::module::{Context, Default, Failure, Kind, Module, Opt, Outcome, Spec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub id: String,
    pub path: Option<PathBuf>,
    pub uri: Option<String>,
    pub signature: Option<String>,
    pub keyring: Option<PathBuf>,
    pub require_signature: bool,
    pub runtime: String,
    pub state: String,
    pub timeout: i64,
    pub root: PathBuf,
}

#[derive(Debug)]
pub struct OpsImage;

impl Module for OpsImage {
    const SPEC: Spec = Spec {
        module: "ops_image",
        options: &[
            Opt::new(
                "id",
                Kind::Str,
                "The image digest: sha512-<hex> (ACI) or sha256:<hex> (OCI, Docker).",
            )
            .required(),
            Opt::new("path", Kind::Path, "Path of the image file on the target."),
            Opt::new(
                "uri",
                Kind::Str,
                "http, https or file URI of the image file.",
            ),
            Opt::new(
                "signature",
                Kind::Str,
                "Path or URI of a detached OpenPGP signature of the image file.",
            ),
            Opt::new("keyring", Kind::Path, "Path of the trusted public keys."),
            Opt::new(
                "require_signature",
                Kind::Bool,
                "Refuse an image without a valid signature.",
            )
            .default(Default::Bool(false)),
            Opt::new("runtime", Kind::Str, "Where the image goes.")
                .choices(&["systemd", "podman"])
                .default(Default::Str("systemd")),
            Opt::new("state", Kind::Str, "Whether the image should be present.")
                .choices(&["present", "absent"])
                .default(Default::Str("present")),
            Opt::new("timeout", Kind::Int, "Seconds a download may take.")
                .default(Default::Int(600)),
            Opt::new("root", Kind::Path, "The ops store.")
                .default(Default::Str(super::DEFAULT_ROOT)),
        ],
        mutually_exclusive: &[&["path", "uri"]],
    };
    type Options = Options;

    fn run(options: Options, context: &mut Context) -> Result<Outcome, Failure> {
        bundle::ImageId::parse(&options.id).map_err(|e| Failure::new(format!("id: {e}")))?;
        super::not_built_yet(context, "importing images")
    }
}
