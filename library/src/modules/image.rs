//! `ops_image`: import a container image into the local runtime, verifying
//! its digest and signature; remove unreferenced images.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use crate::ansible::{Context, DefaultValue, Failure, Kind, Module, Opt, Outcome, Spec};
use crate::bundle::ImageId;
use crate::image::{self, Location, Runtime};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub id: String,
    pub path: Option<PathBuf>,
    pub uri: Option<String>,
    pub signature: Option<String>,
    pub keyring: Option<PathBuf>,
    pub require_signature: bool,
    pub runtime: Runtime,
    #[serde(deserialize_with = "read_state")]
    pub state: image::State,
    pub timeout: i64,
    pub root: PathBuf,
    pub lock_timeout: i64,
}

/// `state`, read once into the engine's enum where the options are read;
/// the spec has already checked it is one of the choices.
fn read_state<'de, D: Deserializer<'de>>(d: D) -> Result<image::State, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "present" => Ok(image::State::Present),
        "absent" => Ok(image::State::Absent),
        _ => Err(D::Error::custom(format!("unknown state {s}"))),
    }
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
            .default(DefaultValue::Bool(false)),
            Opt::new("runtime", Kind::Str, "Where the image goes.")
                .choices(&["systemd", "podman"])
                .default(DefaultValue::Str("systemd")),
            Opt::new("state", Kind::Str, "Whether the image should be present.")
                .choices(&["present", "absent"])
                .default(DefaultValue::Str("present")),
            Opt::new("timeout", Kind::Int, "Seconds a download may take.")
                .default(DefaultValue::Int(600))
                .seconds(),
            Opt::new("root", Kind::Path, "The ops store.")
                .default(DefaultValue::Str(super::DEFAULT_ROOT)),
            Opt::new(
                "lock_timeout",
                Kind::Int,
                "Seconds to wait for another ops run to finish.",
            )
            .default(DefaultValue::Int(300))
            .seconds(),
        ],
        mutually_exclusive: &[&["path", "uri"]],
    };
    type Options = Options;

    fn run(options: Options, context: &mut Context) -> Result<Outcome, Failure> {
        let request = request(options)?;
        match image::run(
            &request,
            &mut image::PodmanCli,
            context.check_mode,
            context.diff,
        ) {
            Ok(report) => {
                let msg = if report.changed {
                    report.actions.join("; ")
                } else {
                    format!(
                        "image {} is {} in {}",
                        report.id,
                        present_word(&request),
                        report.runtime
                    )
                };
                Ok(super::reported(
                    context,
                    report.changed,
                    msg,
                    &report.diff,
                    values(&report),
                ))
            }
            Err(error) => {
                let changed = matches!(&error, image::ImageError::AfterChanges(a) if a.changed());
                let mut failure = Failure::from(error);
                failure.changed = changed;
                failure
                    .values
                    .insert("id".into(), json!(request.id.to_string()));
                failure
                    .values
                    .insert("runtime".into(), json!(request.runtime));
                Err(failure)
            }
        }
    }
}

fn present_word(request: &image::Request) -> &'static str {
    match request.state {
        image::State::Present => "present",
        image::State::Absent => "absent",
    }
}

/// Check what the spec cannot, and build the request.
pub(crate) fn request(options: Options) -> Result<image::Request, Failure> {
    let mut problems = Vec::new();
    let id = ImageId::parse(&options.id)
        .map_err(|e| problems.push(format!("id: {e}")))
        .ok();
    let mut location = |option: &str, text: Option<String>, uri_only: bool| {
        text.and_then(|t| {
            let parsed = if uri_only {
                Location::parse_uri(&t)
            } else {
                Location::parse(&t)
            };
            parsed
                .map_err(|e| problems.push(format!("{option}: {e}")))
                .ok()
        })
    };
    let source = match (options.path, options.uri) {
        (Some(path), _) => Some(Location::Path(path)),
        (None, uri) => location("uri", uri, true),
    };
    let signature = location("signature", options.signature, false);
    let mut seconds = |option: &str, value: i64| {
        u64::try_from(value)
            .map(Duration::from_secs)
            .unwrap_or_else(|_| {
                problems.push(format!("{option}: expected 0 or more seconds, got {value}"));
                Duration::ZERO
            })
    };
    let timeout = seconds("timeout", options.timeout);
    let lock_timeout = seconds("lock_timeout", options.lock_timeout);
    if !options.root.is_absolute() {
        problems.push(format!(
            "root: must be an absolute path, got {}",
            options.root.display()
        ));
    }
    match (id, problems.is_empty()) {
        (Some(id), true) => Ok(image::Request {
            id,
            source,
            signature,
            keyring: options.keyring,
            require_signature: options.require_signature,
            runtime: options.runtime,
            state: options.state,
            timeout,
            root: crate::atomic::resolve(&options.root),
            lock_timeout,
        }),
        _ => Err(Failure::new(format!("ops_image: {}", problems.join("; ")))),
    }
}

/// The module's return values.
fn values(report: &image::Report) -> Map<String, Value> {
    let mut values = Map::new();
    values.insert("id".into(), json!(report.id));
    values.insert("runtime".into(), json!(report.runtime));
    values.insert("format".into(), json!(report.format));
    values.insert("location".into(), json!(report.location));
    values.insert("size".into(), json!(report.size));
    values.insert("used_by".into(), json!(report.used_by));
    values.insert("actions".into(), json!(report.actions));
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_choice_reads_into_the_enum() {
        for choice in OpsImage::SPEC.option("state").expect("state").choices {
            assert!(read_state(Value::from(*choice)).is_ok(), "{choice}");
        }
        assert!(read_state(Value::from("gone")).is_err());
    }

    #[test]
    fn every_runtime_choice_reads_into_the_enum() {
        for choice in OpsImage::SPEC.option("runtime").expect("runtime").choices {
            let read = Runtime::deserialize(Value::from(*choice)).expect("a runtime");
            assert_eq!(read.name(), *choice);
        }
    }
}
