//! `ops_release`: publish a bundle (or a release instruction file) into a
//! release repository on the host, or take a published version out of it.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use crate::ansible::{Context, DefaultValue, Failure, Kind, Module, Opt, Outcome, Spec};
use crate::records::names::{PodName, Version};
use crate::release::layout::Label;
use crate::release::{self, Input, State};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub repo: PathBuf,
    pub bundle: Option<PathBuf>,
    pub instructions: Option<PathBuf>,
    pub channel: Option<String>,
    pub label: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub tip: bool,
    #[serde(deserialize_with = "read_state")]
    pub state: State,
    pub lock_timeout: i64,
}

fn read_state<'de, D: Deserializer<'de>>(d: D) -> Result<State, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "present" => Ok(State::Present),
        "absent" => Ok(State::Absent),
        _ => Err(D::Error::custom(format!("unknown state {s}"))),
    }
}

#[derive(Debug)]
pub struct OpsRelease;

impl Module for OpsRelease {
    const SPEC: Spec = Spec {
        module: "ops_release",
        options: &[
            Opt::new("repo", Kind::Path, "The release repository (a directory).").required(),
            Opt::new("bundle", Kind::Path, "The bundle directory to publish (or its pod.json)."),
            Opt::new(
                "instructions",
                Kind::Path,
                "A release instruction file (YAML) naming the bundle and what to publish it as.",
            ),
            Opt::new(
                "channel",
                Kind::Str,
                "The release channel; required unless the instruction file gives it.",
            ),
            Opt::new("label", Kind::Str, "A label path, such as 'web/shop'; none by default."),
            Opt::new(
                "name",
                Kind::Str,
                "The pod, without bundle or instructions: the version to take out (state=absent) or to point tip at (state=present); with them, must match pod.json.",
            ),
            Opt::new(
                "version",
                Kind::Str,
                "The pod version, without bundle or instructions: the version to take out (state=absent) or to point tip at (state=present, a published version); with them, must match pod.json.",
            ),
            Opt::new(
                "tip",
                Kind::Bool,
                "Move the pod's tip to the version when this run publishes it (or the channel has no tip yet), or, with name and version and no bundle, to that published version.",
            )
                .default(DefaultValue::Bool(true)),
            Opt::new("state", Kind::Str, "Whether the version should be published.")
                .choices(&["present", "absent"])
                .default(DefaultValue::Str("present")),
            Opt::new(
                "lock_timeout",
                Kind::Int,
                "Seconds to wait for another ops run on the repository to finish.",
            )
            .default(DefaultValue::Int(300))
            .seconds(),
        ],
        mutually_exclusive: &[&["bundle", "instructions"]],
    };
    type Options = Options;

    fn run(options: Options, context: &mut Context) -> Result<Outcome, Failure> {
        let request = request(options)?;
        match release::run(&request, context.check_mode, context.diff) {
            Ok(report) => {
                let msg = if report.changed {
                    report.actions.join("; ")
                } else if request.state == State::Absent {
                    format!(
                        "{} is not a published version of the pod (no release.json there names \
                         it): nothing is removed",
                        report.path
                    )
                } else if report.tip.as_deref() != Some(report.version.as_str()) {
                    format!(
                        "{} is published as requested; tip names {} (tip moves only when a \
                         version is first published, or by state=present with name and version)",
                        report.path,
                        report.tip.as_deref().unwrap_or("no version")
                    )
                } else {
                    format!("{} is published as requested", report.path)
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
                let changed = error.changed();
                let mut failure = Failure::from(error);
                failure.changed = changed;
                Err(failure)
            }
        }
    }
}

/// Check what the spec cannot, and build the request.
pub(crate) fn request(options: Options) -> Result<release::Request, Failure> {
    let mut problems = Vec::new();
    let mut named = |option: &str, value: Option<&str>| {
        value.and_then(|v| {
            PodName::parse(v)
                .map_err(|e| problems.push(format!("{option}: {e}")))
                .ok()
        })
    };
    let channel = named("channel", options.channel.as_deref());
    let name = named("name", options.name.as_deref());
    let version = options.version.as_deref().and_then(|v| {
        Version::parse(v)
            .map_err(|e| problems.push(format!("version: {e}")))
            .ok()
    });
    let label = options.label.as_deref().and_then(|l| {
        Label::parse(l)
            .map_err(|e| problems.push(format!("label: {e}")))
            .ok()
    });
    let input = match (options.bundle, options.instructions) {
        (Some(b), _) => Some(Input::Bundle(b)),
        (None, Some(i)) => Some(Input::Instructions(i)),
        (None, None) => None,
    };
    if options.state == State::Present
        && input.is_none()
        && (options.name.is_none() || options.version.is_none())
    {
        problems.push(
            "state is present but neither bundle nor instructions is given (or name and version, \
             to point tip at a published version)"
                .into(),
        );
    }
    if input.is_none() && channel.is_none() {
        problems.push("channel: required without instructions".into());
    }
    if !options.repo.is_absolute() {
        problems.push(format!(
            "repo: must be an absolute path, got {}",
            options.repo.display()
        ));
    }
    let lock_timeout = u64::try_from(options.lock_timeout)
        .map(Duration::from_secs)
        .unwrap_or_default();
    if !problems.is_empty() {
        return Err(Failure::new(format!(
            "ops_release: {}",
            problems.join("; ")
        )));
    }
    Ok(release::Request {
        repo: crate::atomic::resolve(&options.repo),
        input,
        channel,
        label,
        name,
        version,
        tip: options.tip,
        state: options.state,
        lock_timeout,
    })
}

/// The module's return values.
fn values(report: &release::Report) -> Map<String, Value> {
    let mut values = Map::new();
    values.insert("path".into(), json!(report.path));
    values.insert("version".into(), json!(report.version));
    values.insert("tip".into(), json!(report.tip));
    values.insert("added".into(), json!(report.added));
    values.insert("reused".into(), json!(report.reused));
    values.insert("actions".into(), json!(report.actions));
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_choice_reads_into_the_enum() {
        for choice in OpsRelease::SPEC.option("state").expect("state").choices {
            assert!(read_state(Value::from(*choice)).is_ok(), "{choice}");
        }
        assert!(read_state(Value::from("gone")).is_err());
    }
}
