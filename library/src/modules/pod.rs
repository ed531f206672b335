//! `ops_pod`: deploy, start, stop, switch, roll back, undeploy and prune
//! versions of a pod.

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use crate::ansible::{Context, DefaultValue, Failure, Kind, Module, Opt, Outcome, Spec};
use crate::bundle::{PodName, Version};
use crate::image::Runtime;
use crate::pod;
use crate::records::names::check_env_name;
use crate::records::release::{check_channel, Label, TIP};
use crate::repository;
use crate::systemd::Systemctl;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub bundle: Option<PathBuf>,
    pub repo: Option<String>,
    pub channel: Option<String>,
    pub label: Option<String>,
    pub name: Option<String>,
    pub bundle_name: Option<String>,
    pub version: Option<String>,
    #[serde(deserialize_with = "read_state")]
    pub state: pod::State,
    pub keep: Option<i64>,
    pub env: Option<BTreeMap<String, String>>,
    pub root: PathBuf,
    pub unit_dir: PathBuf,
    pub start_timeout: i64,
    pub min_up_time: i64,
    pub rollback: bool,
    pub lock_timeout: i64,
    pub runtime: Option<Runtime>,
    pub keyring: Option<PathBuf>,
    pub require_signature: bool,
    pub download_timeout: i64,
    pub ports: Option<Value>,
    pub port_range: String,
}

/// `state`, read once into the engine's enum where the options are read;
/// the spec has already checked it is one of the choices.
fn read_state<'de, D: Deserializer<'de>>(d: D) -> Result<pod::State, D::Error> {
    let s = String::deserialize(d)?;
    pod::State::parse(&s).ok_or_else(|| D::Error::custom(format!("unknown state {s}")))
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
                "repo",
                Kind::Str,
                "A release repository to deploy from instead of a bundle: a directory on the \
                 target, or the http(s):// URL of one served by any static HTTP server. Needs \
                 name and channel.",
            ),
            Opt::new(
                "channel",
                Kind::Str,
                "The repository's channel to deploy from.",
            ),
            Opt::new(
                "label",
                Kind::Str,
                "The label path of the pod in the repository (segments joined by '/').",
            ),
            Opt::new(
                "name",
                Kind::Str,
                "Name of the pod on the host. With a bundle or repo: the deployment's name (each name \
                 is a pod of its own: store, units, ports, environment), the bundle's own name when \
                 left out.",
            ),
            Opt::new(
                "bundle_name",
                Kind::Str,
                "The pod's name in the bundle or the repository; defaults to name. With repo it \
                 picks the repository's pod, deployed as name; with bundle it must be the bundle's \
                 name.",
            ),
            Opt::new(
                "version",
                Kind::Str,
                "Version of the pod; without a bundle, the current one (every version for \
                 state=absent). With repo: the version to deploy, or tip (the default), \
                 the one the channel's tip links to.",
            ),
            Opt::new(
                "state",
                Kind::Str,
                "What the version should be. idle: the current version stopped, its ports \
                 armed (a socket each) so that a connection starts it again.",
            )
                .choices(&["present", "started", "stopped", "restarted", "absent", "idle"])
                .default(DefaultValue::Str("started")),
            Opt::new(
                "keep",
                Kind::Int,
                "Prune the oldest versions beyond this many, never the current one.",
            )
            .range(0, 10_000),
            Opt::new(
                "env",
                Kind::Dict(&Kind::Str),
                "Pod environment; values are secrets, written 0600 and never returned. Left out for a new version, the current version's is carried over.",
            )
            .no_log(),
            Opt::new("root", Kind::Path, "The ops store.")
                .default(DefaultValue::Str(super::DEFAULT_ROOT)),
            Opt::new("unit_dir", Kind::Path, "systemd's unit directory.")
                .default(DefaultValue::Str("/etc/systemd/system")),
            Opt::new(
                "start_timeout",
                Kind::Int,
                "Seconds to wait for the units to come up.",
            )
            .default(DefaultValue::Int(60))
            .seconds(),
            Opt::new(
                "min_up_time",
                Kind::Int,
                "Seconds each started unit must stay up, without restarting, to count as up; \
                 0 takes systemd's word (active, or ready for Type=notify).",
            )
            .default(DefaultValue::Int(1))
            .seconds(),
            Opt::new(
                "rollback",
                Kind::Bool,
                "Go back to the previous version when the new one does not come up.",
            )
            .default(DefaultValue::Bool(true)),
            Opt::new(
                "lock_timeout",
                Kind::Int,
                "Seconds to wait for another ops run to finish.",
            )
            .default(DefaultValue::Int(300))
            .seconds(),
            Opt::new(
                "runtime",
                Kind::Str,
                "Where the pod's images go (systemd: unpacked in the store, run with \
                 RootDirectory=; podman). Default: the version's runtime, systemd for a new one.",
            )
            .choices(&["systemd", "podman"]),
            Opt::new(
                "keyring",
                Kind::Path,
                "Trusted public keys for the signatures of the pod's images.",
            ),
            Opt::new(
                "require_signature",
                Kind::Bool,
                "Refuse an image of the pod that has no valid signature.",
            )
            .default(DefaultValue::Bool(false)),
            Opt::new(
                "download_timeout",
                Kind::Int,
                "Seconds an image download may take.",
            )
            .default(DefaultValue::Int(600))
            .seconds(),
            Opt::new(
                "ports",
                Kind::Raw,
                "Named ports laid over the bundle's, by name: a dict of name to a port number \
                 or \"assign\", or a list of names to assign.",
            ),
            Opt::new(
                "port_range",
                Kind::Str,
                "Where assigned ports come from: LOW-HIGH.",
            )
            .default(DefaultValue::Str("30000-32767")),
        ],
        mutually_exclusive: &[&["bundle", "repo"]],
    };
    type Options = Options;

    fn run(options: Options, context: &mut Context) -> Result<Outcome, Failure> {
        let request = request(options)?;
        let mut systemd = Systemctl::connect()?;
        match pod::run(
            &request,
            &mut systemd,
            &mut crate::image::PodmanCli,
            context.check_mode,
            context.diff,
        ) {
            Ok(report) => {
                for w in &report.warnings {
                    context.warn(w.clone());
                }
                let msg = if report.changed {
                    report.actions.join("; ")
                } else {
                    "nothing to do".to_owned()
                };
                Ok(super::reported(
                    context,
                    report.changed,
                    msg,
                    &report.diff,
                    values(&report),
                ))
            }
            Err(failed) => {
                let mut failure = Failure::from(failed.error);
                failure.changed = failed.report.changed;
                if failed.report.name.is_some() {
                    failure.values = values(&failed.report);
                }
                Err(failure)
            }
        }
    }
}

/// ops_pod run by a person or by systemd rather than by Ansible (its
/// first argument a flag): `--validate` checks a bundle
/// ([`super::validate`]), `--wake` is the waker of an idle pod, `--help`
/// says all three ways to run it.
pub fn command_main(args: impl Iterator<Item = std::ffi::OsString>) -> ! {
    let args: Vec<std::ffi::OsString> = args.collect();
    let code = match args.get(1).and_then(|a| a.to_str()) {
        Some("--validate") => super::validate::main(&args[2..]),
        Some("--wake") => wake_main(args),
        Some("--help" | "-h") => {
            // The usage asked for goes to stdout (the module's one output
            // channel, which clippy guards, is not in use here).
            let _ = std::io::Write::write_all(&mut std::io::stdout(), usage().as_bytes());
            0
        }
        _ => {
            let flag = args.get(1).map(|a| a.to_string_lossy().into_owned());
            eprint!(
                "ops_pod: unknown option {:?}\n{}",
                flag.unwrap_or_default(),
                usage()
            );
            2
        }
    };
    std::process::exit(code)
}

/// Every way to run the binary.
fn usage() -> String {
    format!(
        "{}\n       {}\n\n--validate: {}\n\n--wake: {WAKE_ABOUT}\n\n{MODULE_USAGE}\n",
        super::validate::USAGE,
        WAKE_USAGE.trim_start_matches("usage: "),
        super::validate::ABOUT,
    )
}

/// The waker of an idle pod: `ops-wake --wake --root R --unit-dir U --pod P`
/// (the unit `ops-<pod>:wake.service` that the pod's sockets start runs
/// this program so). It says what it did on stderr (the journal) and exits
/// 0 when the pod is up, or was not idle.
fn wake_main(args: Vec<std::ffi::OsString>) -> i32 {
    close_listening_sockets();
    match wake_args(args.into_iter()) {
        Err(e) => {
            eprintln!("ops-wake: {e}");
            2
        }
        Ok((root, unit_dir, name)) => wake_run(&root, &unit_dir, &name),
    }
}

/// systemd hands the triggered service its sockets' listening descriptors
/// (`LISTEN_FDS`, from 3): held open here they would keep the ports bound
/// after the sockets stop, and the woken version could not bind them.
fn close_listening_sockets() {
    let ours = std::env::var("LISTEN_PID").is_ok_and(|p| p == std::process::id().to_string());
    let count: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|_| ours)
        .unwrap_or(0);
    for fd in 3..3 + count.clamp(0, 1024) {
        let _ = nix::unistd::close(fd);
    }
}

fn wake_run(root: &std::path::Path, unit_dir: &std::path::Path, name: &PodName) -> i32 {
    let mut systemd = match Systemctl::connect() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ops-wake: {}", crate::ansible::error_chain(&e));
            return 1;
        }
    };
    match pod::wake(
        root,
        unit_dir,
        name,
        &mut systemd,
        &mut crate::image::PodmanCli,
    ) {
        Ok(report) if report.actions.is_empty() => {
            match report.warnings.first() {
                Some(absent) => eprintln!("ops-wake: {absent}: nothing to do"),
                None => eprintln!("ops-wake: pod {name} is not idle: nothing to do"),
            }
            0
        }
        Ok(report) => {
            eprintln!("ops-wake: pod {name} woken: {}", report.actions.join("; "));
            0
        }
        Err(failed) => {
            eprintln!(
                "ops-wake: pod {name} not woken: {}",
                crate::ansible::error_chain(&failed.error)
            );
            1
        }
    }
}

const WAKE_USAGE: &str = "usage: ops-wake --wake --root ROOT --unit-dir UNIT_DIR --pod POD";

const WAKE_ABOUT: &str = "The waker of an idle pod (ops_pod state: idle): the unit \
ops-<pod>:wake.service runs it when a connection comes to one of the pod's ports, and it \
starts the pod's current version as state: started does. Read what it did with \
journalctl -u ops-<pod>:wake.service; see the README's \"Idle and wake\".";

const MODULE_USAGE: &str = "As the Ansible module ops_pod: ops_pod ARGS_FILE, or the JSON \
arguments on standard input (as Ansible runs it); it prints one JSON result. See the README's \
\"Running a module by hand\" and ansible-doc ops.onboard.ops_pod.";

/// `--wake --root R --unit-dir U --pod P`, in this order.
fn wake_args(
    mut args: impl Iterator<Item = std::ffi::OsString>,
) -> Result<(PathBuf, PathBuf, PodName), String> {
    let _program = args.next();
    let words: Vec<String> = args
        .map(|a| {
            a.into_string()
                .map_err(|_| "arguments must be UTF-8".to_owned())
        })
        .collect::<Result<_, _>>()?;
    match words.as_slice() {
        [wake, r, root, u, unit_dir, p, pod]
            if wake == "--wake" && r == "--root" && u == "--unit-dir" && p == "--pod" =>
        {
            let name = PodName::parse(pod).map_err(|e| format!("--pod: {e}"))?;
            for (flag, path) in [("--root", root), ("--unit-dir", unit_dir)] {
                if !std::path::Path::new(path).is_absolute() {
                    return Err(format!("{flag}: expected an absolute path, got {path:?}"));
                }
            }
            Ok((PathBuf::from(root), PathBuf::from(unit_dir), name))
        }
        _ => Err(WAKE_USAGE.to_owned()),
    }
}

/// Check the options that the spec cannot, and build the request.
pub(crate) fn request(options: Options) -> Result<pod::Request, Failure> {
    let mut problems = Vec::new();
    absolute_paths(&options, &mut problems);
    let name = parsed(
        "name",
        options.name.as_deref(),
        PodName::parse,
        &mut problems,
    );
    // With a repository, `tip` is no version but the link to one.
    let version = options
        .version
        .as_deref()
        .filter(|v| !(options.repo.is_some() && *v == TIP));
    let version = parsed("version", version, Version::parse, &mut problems);
    let bundle_name = bundle_name(&options, &mut problems);
    let keep = options.keep.map(|k| {
        usize::try_from(k).unwrap_or_else(|_| {
            problems.push(format!("keep: expected 0 or more, got {k}"));
            0
        })
    });
    let mut seconds = |option: &str, value: i64| {
        u64::try_from(value)
            .map(Duration::from_secs)
            .unwrap_or_else(|_| {
                problems.push(format!("{option}: expected 0 or more seconds, got {value}"));
                Duration::ZERO
            })
    };
    let start_timeout = seconds("start_timeout", options.start_timeout);
    let min_up_time = seconds("min_up_time", options.min_up_time);
    let lock_timeout = seconds("lock_timeout", options.lock_timeout);
    let download_timeout = seconds("download_timeout", options.download_timeout);
    if let Some(env) = &options.env {
        env_problems(env, &mut problems);
    }
    let in_repo = bundle_name.as_ref().or(name.as_ref());
    let (repo, version) = wanted(&options, in_repo, version, &mut problems);
    let ports = options.ports.map(|value| {
        crate::bundle::parse_ports("ports", numbers_from_text(value)).unwrap_or_else(|e| {
            problems.push(e);
            Vec::new()
        })
    });
    let port_range = crate::ports::PortRange::parse(&options.port_range).unwrap_or_else(|e| {
        problems.push(format!("port_range: {e}"));
        crate::ports::PortRange::default()
    });
    if options.bundle.is_none() && name.is_none() && bundle_name.is_none() && problems.is_empty() {
        problems.push("one of bundle or name is required".to_owned());
    }
    if !problems.is_empty() {
        return Err(Failure::new(format!("ops_pod: {}", problems.join("; "))));
    }
    Ok(pod::Request {
        bundle: options.bundle,
        repo,
        name,
        bundle_name,
        version,
        state: options.state,
        keep,
        env: options.env,
        // Resolved once: below them, ops follows no symlink it did not make.
        root: crate::atomic::resolve(&options.root),
        unit_dir: crate::atomic::resolve(&options.unit_dir),
        start_timeout,
        min_up_time,
        rollback: options.rollback,
        lock_timeout,
        runtime: options.runtime,
        keyring: options.keyring,
        require_signature: options.require_signature,
        download_timeout,
        ports,
        port_range,
        wake: false,
    })
}

/// `root` and `unit_dir` are absolute, checked before they are resolved:
/// resolving a relative path makes it absolute from the working directory
/// (Ansible's is a temporary one), and an existing directory there became
/// the store.
fn absolute_paths(options: &Options, problems: &mut Vec<String>) {
    for (option, path) in [("root", &options.root), ("unit_dir", &options.unit_dir)] {
        if !path.is_absolute() {
            problems.push(format!(
                "{option}: must be an absolute path, got {}",
                path.display()
            ));
        }
    }
}

/// `bundle_name`: the pod's name in a bundle or repository, so only with
/// one of them.
fn bundle_name(options: &Options, problems: &mut Vec<String>) -> Option<PodName> {
    let bundle_name = parsed(
        "bundle_name",
        options.bundle_name.as_deref(),
        PodName::parse,
        problems,
    );
    if bundle_name.is_some() && options.bundle.is_none() && options.repo.is_none() {
        problems.push(
            "bundle_name applies to a bundle or a release repository: give bundle or repo too"
                .to_owned(),
        );
    }
    bundle_name
}

/// An option's value parsed, or a problem that names the option.
fn parsed<T>(
    option: &str,
    value: Option<&str>,
    parse: fn(&str) -> Result<T, String>,
    problems: &mut Vec<String>,
) -> Option<T> {
    value.map(parse).transpose().unwrap_or_else(|e| {
        problems.push(format!("{option}: {e}"));
        None
    })
}

/// The release asked for with `repo`, `channel` and `label`, and the
/// version the engine is asked for: none for `tip`, which the release
/// names once it is read.
fn wanted(
    options: &Options,
    name: Option<&PodName>,
    version: Option<Version>,
    problems: &mut Vec<String>,
) -> (Option<repository::Wanted>, Option<Version>) {
    let Some(text) = &options.repo else {
        for (option, given) in [("channel", &options.channel), ("label", &options.label)] {
            if given.is_some() {
                problems.push(format!(
                    "{option} applies to a release repository: give repo too"
                ));
            }
        }
        return (None, version);
    };
    let repo = repository::Repo::parse(text)
        .map_err(|e| problems.push(format!("repo: {e}")))
        .ok();
    let channel = match &options.channel {
        None => {
            problems.push("repo needs channel: the repository's channel to deploy from".into());
            None
        }
        Some(c) => check_channel(c)
            .map(|()| c.clone())
            .map_err(|e| problems.push(format!("channel: {e}")))
            .ok(),
    };
    let label = Label::parse(options.label.as_deref().unwrap_or_default())
        .map_err(|e| problems.push(format!("label: {e}")))
        .ok();
    if name.is_none() && options.name.is_none() {
        problems.push("repo needs name: the pod to deploy from the repository".into());
    }
    let wanted = match (repo, channel, label, name) {
        (Some(repo), Some(channel), Some(label), Some(name)) => Some(repository::Wanted {
            repo,
            channel,
            label,
            name: name.clone(),
            version: version.clone(),
        }),
        _ => None,
    };
    (wanted, version)
}

/// What is wrong with the names and values of `env`.
fn env_problems(env: &BTreeMap<String, String>, problems: &mut Vec<String>) {
    for (key, value) in env {
        if let Err(e) = check_env_name(key) {
            problems.push(format!("env: {e}"));
        } else if let Err(e) = crate::units::check_env_value(key, value) {
            problems.push(format!("env.{key}: {e}"));
        }
    }
}

/// A port given as text of digits (what a Jinja template makes of a
/// number) is that number, as Ansible converts option values.
fn numbers_from_text(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                        let n = s.parse::<u64>().map_or(Value::String(s), Value::from);
                        (k, n)
                    }
                    v => (k, v),
                })
                .collect(),
        ),
        // "a, b" is seed 004's shorthand, read as pod.json's is (an empty
        // name refused).
        Value::String(s) if !s.trim_start().starts_with('{') => Value::String(s),
        Value::String(s) => match serde_json::from_str::<Value>(&s) {
            Ok(parsed @ Value::Object(_)) => numbers_from_text(parsed),
            _ => Value::String(s),
        },
        v => v,
    }
}

/// The module's return values (env values never among them).
fn values(report: &pod::Report) -> Map<String, Value> {
    let mut values = Map::new();
    values.insert("name".into(), json!(report.name));
    values.insert("version".into(), json!(report.version));
    values.insert("current".into(), json!(report.current));
    values.insert("previous".into(), json!(report.previous));
    values.insert("actions".into(), json!(report.actions));
    values.insert("ports".into(), json!(report.ports));
    values.insert("pod".into(), report.pod.clone());
    values.insert("tip".into(), json!(report.tip));
    values.insert("release".into(), json!(report.release));
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waker_s_arguments_or_its_usage() {
        let args = |words: &[&str]| wake_args(words.iter().map(std::ffi::OsString::from));
        let (root, units, pod) = args(&[
            "ops-wake",
            "--wake",
            "--root",
            "/var/lib/ops",
            "--unit-dir",
            "/etc/systemd/system",
            "--pod",
            "shop",
        ])
        .unwrap();
        assert_eq!(
            (root.to_str(), units.to_str()),
            (Some("/var/lib/ops"), Some("/etc/systemd/system"))
        );
        assert_eq!(pod.as_str(), "shop");
        assert_eq!(
            args(&["ops-wake", "--wake", "--pod", "shop"]).unwrap_err(),
            "usage: ops-wake --wake --root ROOT --unit-dir UNIT_DIR --pod POD"
        );
        assert_eq!(args(&["ops-wake", "--version"]).unwrap_err(), WAKE_USAGE);
    }

    #[test]
    fn a_relative_root_or_unit_dir_is_refused_before_it_is_resolved() {
        // Run from /, "var/lib/ops" resolved to an existing directory and
        // was taken as the store (and "etc/systemd/system" as the unit dir).
        let result = crate::ansible::run_guarded::<OpsPod>(json!({
            "name": "shop", "root": "var/lib/ops", "unit_dir": "etc/systemd/system"
        }));
        insta::assert_snapshot!(result["msg"].as_str().expect("a message"));
    }

    #[test]
    fn every_state_choice_reads_into_the_enum() {
        for choice in OpsPod::SPEC.option("state").expect("state").choices {
            assert!(read_state(Value::from(*choice)).is_ok(), "{choice}");
        }
        assert!(read_state(Value::from("gone")).is_err());
    }

    #[test]
    fn every_runtime_choice_reads_into_the_enum() {
        for choice in OpsPod::SPEC.option("runtime").expect("runtime").choices {
            let read = Runtime::deserialize(Value::from(*choice)).expect("a runtime");
            assert_eq!(read.name(), *choice);
        }
    }
}
