//! `ops_volume`: create, replace or remove a pod version's data volume from
//! a tar archive, idempotently.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use crate::ansible::{Context, DefaultValue, Failure, Kind, Module, Opt, Outcome, Spec};
use crate::image::Location;
use crate::records::names::{shown, PodName, Version};
use crate::systemd::Systemctl;
use crate::volume::{self, Checksum, Settings};

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
    pub allow_special_files: bool,
    pub keep_setuid: bool,
    #[serde(deserialize_with = "read_state")]
    pub state: volume::State,
    pub root: PathBuf,
    pub timeout: i64,
    pub lock_timeout: i64,
}

/// `state`, read once into the engine's enum where the options are read;
/// the spec has already checked it is one of the choices.
fn read_state<'de, D: Deserializer<'de>>(d: D) -> Result<volume::State, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "present" => Ok(volume::State::Present),
        "absent" => Ok(volume::State::Absent),
        _ => Err(D::Error::custom(format!("unknown state {s}"))),
    }
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
            .default(DefaultValue::Bool(false)),
            Opt::new(
                "allow_special_files",
                Kind::Bool,
                "Create the archive's device nodes and fifos instead of refusing the archive.",
            )
            .default(DefaultValue::Bool(false)),
            Opt::new(
                "keep_setuid",
                Kind::Bool,
                "Keep setuid, setgid and sticky bits instead of dropping them.",
            )
            .default(DefaultValue::Bool(false)),
            Opt::new("state", Kind::Str, "Whether the volume should exist.")
                .choices(&["present", "absent"])
                .default(DefaultValue::Str("present")),
            Opt::new("root", Kind::Path, "The ops store.")
                .default(DefaultValue::Str(super::DEFAULT_ROOT)),
            Opt::new(
                "timeout",
                Kind::Int,
                "Seconds a download (or a restart) may take.",
            )
            .default(DefaultValue::Int(600))
            .seconds(),
            Opt::new(
                "lock_timeout",
                Kind::Int,
                "Seconds to wait for another ops run to finish.",
            )
            .default(DefaultValue::Int(300))
            .seconds(),
        ],
        mutually_exclusive: &[],
    };
    type Options = Options;

    fn run(options: Options, context: &mut Context) -> Result<Outcome, Failure> {
        let request = request(options)?;
        let mut systemd = Systemctl::connect()?;
        match volume::run(&request, &mut systemd, context.check_mode, context.diff) {
            Ok(report) => {
                let msg = if report.changed {
                    report.actions.join("; ")
                } else if request.state == volume::State::Absent {
                    format!(
                        "volume {} of pod {} version {} is absent",
                        request.name, request.pod, request.version
                    )
                } else {
                    format!(
                        "volume {} of pod {} version {} is as requested",
                        request.name, request.pod, request.version
                    )
                };
                context.warnings.extend(report.warnings.iter().cloned());
                Ok(super::reported(
                    context,
                    report.changed,
                    msg,
                    &report.diff,
                    values(&report),
                ))
            }
            Err(error) => {
                let done = error.done().cloned();
                let mut failure = Failure::from(error);
                if let Some(report) = done {
                    failure.changed = report.changed;
                    failure.values = values(&report);
                }
                failure.values.insert(
                    "path".into(),
                    json!(volume::data_path(
                        &crate::store::Store::new(&request.root),
                        &request.pod,
                        &request.version,
                        &request.name
                    )),
                );
                Err(failure)
            }
        }
    }
}

/// The highest user or group id: one more, 4294967295, is `(uid_t)-1`,
/// which chown takes as "leave it as it is".
const MAX_ID: u32 = u32::MAX - 1;

/// A user or group given by name or number.
fn id_of(option: &str, text: &str, problems: &mut Vec<String>) -> Option<u32> {
    if let Ok(n) = text.trim().parse::<i128>() {
        let id = u32::try_from(n).ok().filter(|id| *id <= MAX_ID);
        if id.is_none() {
            let what = if option == "owner" { "user" } else { "group" };
            problems.push(format!(
                "{option}: {n} is not a {what} id: ids run from 0 to {MAX_ID} (4294967295 is -1 \
                 to chown, which then leaves the {option} as it is)"
            ));
        }
        return id;
    }
    let found = if option == "owner" {
        nix::unistd::User::from_name(text).map(|u| u.map(|u| u.uid.as_raw()))
    } else {
        nix::unistd::Group::from_name(text).map(|g| g.map(|g| g.gid.as_raw()))
    };
    match found {
        Ok(Some(id)) => Some(id),
        Ok(None) => {
            let what = if option == "owner" { "user" } else { "group" };
            problems.push(format!(
                "{option}: no {what} named {} on this host",
                shown(text)
            ));
            None
        }
        Err(e) => {
            problems.push(format!("{option}: cannot look up {}: {e}", shown(text)));
            None
        }
    }
}

/// Check what the spec cannot, and build the request.
pub(crate) fn request(options: Options) -> Result<volume::Request, Failure> {
    let mut problems = Vec::new();
    let pod = PodName::parse(&options.pod)
        .map_err(|e| problems.push(format!("pod: {e}")))
        .ok();
    let version = Version::parse(&options.version)
        .map_err(|e| problems.push(format!("version: {e}")))
        .ok();
    if let Err(e) = crate::records::names::check_volume_name(&options.name) {
        problems.push(format!("name: {e}"));
    }
    let (data, checksum) = archive(&options, &mut problems);
    let settings = settings(&options, &mut problems);
    let timeout = seconds("timeout", options.timeout, &mut problems);
    let lock_timeout = seconds("lock_timeout", options.lock_timeout, &mut problems);
    if !options.root.is_absolute() {
        problems.push(format!(
            "root: must be an absolute path, got {}",
            options.root.display()
        ));
    }
    match (pod, version, problems.is_empty()) {
        (Some(pod), Some(version), true) => Ok(volume::Request {
            pod,
            version,
            name: options.name,
            data,
            checksum,
            settings,
            replace: options.replace,
            state: options.state,
            root: crate::atomic::resolve(&options.root),
            timeout,
            lock_timeout,
        }),
        _ => Err(Failure::new(format!("ops_volume: {}", problems.join("; ")))),
    }
}

/// `data` and its `checksum`.
fn archive(options: &Options, problems: &mut Vec<String>) -> (Option<Location>, Option<Checksum>) {
    let data = options.data.as_deref().and_then(|d| {
        Location::parse(d)
            .map_err(|e| problems.push(format!("data: {e}")))
            .ok()
    });
    let checksum = options.checksum.as_deref().and_then(|c| {
        Checksum::parse(c)
            .map_err(|e| problems.push(format!("checksum: {e}")))
            .ok()
    });
    if checksum.is_some() && data.is_none() {
        problems.push("checksum: given without data".to_owned());
    }
    (data, checksum)
}

/// `mode`, `owner`, `group` and the extraction flags.
fn settings(options: &Options, problems: &mut Vec<String>) -> Settings {
    let mode = options.mode.as_deref().and_then(|m| {
        u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .or_else(|| {
                problems.push(format!(
                    "mode: expected an octal mode such as '0750', got {}",
                    shown(m)
                ));
                None
            })
    });
    let owner = options
        .owner
        .as_deref()
        .and_then(|o| id_of("owner", o, problems));
    let group = options
        .group
        .as_deref()
        .and_then(|g| id_of("group", g, problems));
    Settings {
        owner,
        group,
        mode,
        special_files: options.allow_special_files,
        keep_setuid: options.keep_setuid,
    }
}

fn seconds(option: &str, value: i64, problems: &mut Vec<String>) -> Duration {
    u64::try_from(value)
        .map(Duration::from_secs)
        .unwrap_or_else(|_| {
            problems.push(format!("{option}: expected 0 or more seconds, got {value}"));
            Duration::ZERO
        })
}

/// The module's return values.
fn values(report: &volume::Report) -> Map<String, Value> {
    let mut values = Map::new();
    values.insert("path".into(), json!(report.path));
    values.insert("digest".into(), json!(report.digest));
    values.insert("entries".into(), json!(report.entries));
    values.insert("bytes".into(), json!(report.bytes));
    values.insert("actions".into(), json!(report.actions));
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_choice_reads_into_the_enum() {
        for choice in OpsVolume::SPEC.option("state").expect("state").choices {
            assert!(read_state(Value::from(*choice)).is_ok(), "{choice}");
        }
        assert!(read_state(Value::from("gone")).is_err());
    }
}
