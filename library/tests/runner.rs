//! The module runner on a test module: the result JSON for good arguments,
//! each kind of bad arguments, a failure with an error chain, and a panic.

use std::collections::BTreeMap;
use std::path::Path;

use ops_core::ansible::{
    run_guarded, Context, DefaultValue, Failure, Kind, Module, Opt, Outcome, Spec,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    name: String,
    count: i64,
    force: bool,
    state: String,
    path: Option<String>,
    uri: Option<String>,
    env: Option<BTreeMap<String, String>>,
    outcome: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot deploy {pod}")]
struct DeployError {
    pod: String,
    #[source]
    source: std::io::Error,
}

struct Echo;

impl Module for Echo {
    const SPEC: Spec = Spec {
        module: "ops_echo",
        options: &[
            Opt::new("name", Kind::Str, "").required(),
            Opt::new("count", Kind::Int, "").default(DefaultValue::Int(1)),
            Opt::new("force", Kind::Bool, "").default(DefaultValue::Bool(false)),
            Opt::new("state", Kind::Str, "")
                .choices(&["present", "absent"])
                .default(DefaultValue::Str("present")),
            Opt::new("path", Kind::Path, ""),
            Opt::new("uri", Kind::Str, ""),
            Opt::new("env", Kind::Dict(&Kind::Str), "").no_log(),
            Opt::new("outcome", Kind::Str, "")
                .choices(&["ok", "fail", "panic"])
                .default(DefaultValue::Str("ok")),
        ],
        mutually_exclusive: &[&["path", "uri"]],
    };
    type Options = Options;

    fn run(options: Options, context: &mut Context) -> Result<Outcome, Failure> {
        match options.outcome.as_str() {
            "panic" => panic!("the module broke"),
            "fail" => Err(DeployError {
                pod: options.name,
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "unit dir is read-only",
                ),
            }
            .into()),
            _ => {
                context.warn("a warning");
                let mut values = Map::new();
                values.insert("name".into(), json!(options.name));
                values.insert("count".into(), json!(options.count));
                values.insert("force".into(), json!(options.force));
                values.insert("state".into(), json!(options.state));
                values.insert(
                    "env_keys".into(),
                    json!(options
                        .env
                        .unwrap_or_default()
                        .into_keys()
                        .collect::<Vec<_>>()),
                );
                values.insert("check_mode".into(), json!(context.check_mode));
                values.insert("path".into(), json!(options.path.or(options.uri)));
                Ok(Outcome {
                    changed: true,
                    msg: "echoed".into(),
                    diff: Some(json!({"before": "a\n", "after": "b\n"})),
                    facts: Some(
                        serde_json::value::to_raw_value(&json!({"echo": {"seen": true}})).unwrap(),
                    ),
                    values,
                    ..Outcome::default()
                })
            }
        }
    }
}

fn cases(cases: &[(&'static str, Value)]) -> BTreeMap<&'static str, Value> {
    cases
        .iter()
        .map(|(name, args)| (*name, run_guarded::<Echo>(args.clone())))
        .collect()
}

#[test]
fn good_arguments() {
    let results = cases(&[
        (
            "native types",
            json!({"name": "web", "count": 2, "force": true, "env": {"A": "secret"}}),
        ),
        (
            "strings from -a k=v",
            json!({"name": "web", "count": "2", "force": "yes", "path": "/srv", "_ansible_check_mode": "1"}),
        ),
        ("diff asked", json!({"name": "web", "_ansible_diff": true})),
    ]);
    assert!(!results.values().any(|r| r.to_string().contains("secret")));
    insta::assert_json_snapshot!(results);
}

#[test]
fn each_kind_of_bad_arguments() {
    insta::assert_json_snapshot!(cases(&[
        ("unknown option", json!({"name": "web", "colour": "red"})),
        ("missing required", json!({"count": 1})),
        ("bad choice", json!({"name": "web", "state": "running"})),
        ("not an int", json!({"name": "web", "count": "two"})),
        ("not a bool", json!({"name": "web", "force": "maybe"})),
        (
            "mutually exclusive",
            json!({"name": "web", "path": "/a", "uri": "http://b/"})
        ),
        ("not an object", json!("name=web")),
        (
            "bad internal key",
            json!({"name": "web", "_ansible_check_mode": "perhaps"})
        ),
    ]));
}

#[test]
fn a_failure_carries_the_whole_error_chain() {
    insta::assert_json_snapshot!(run_guarded::<Echo>(
        json!({"name": "web", "outcome": "fail"})
    ));
}

#[test]
fn a_panic_becomes_a_failed_result() {
    let result = run_guarded::<Echo>(json!({"name": "web", "outcome": "panic"}));
    assert_eq!(result["failed"], json!(true));
    let msg = result["msg"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "internal error in ops_echo: the module broke (at library/tests/runner.rs:"
        ),
        "{msg}"
    );
    // The runner still works after a panic.
    assert_eq!(
        run_guarded::<Echo>(json!({"name": "web"}))["changed"],
        json!(true)
    );
}

/// Every number option of the real modules, at and past its bounds: the
/// values past them are refused by the option layer, naming the option and
/// its range, before the module does anything.
#[test]
fn numbers_past_their_bounds_are_refused_by_name() {
    use ops_core::modules::{image::OpsImage, pod::OpsPod, volume::OpsVolume};
    let root = tempfile::tempdir().unwrap();
    let fresh = root.path().join("store");
    let base = |extra: Value| {
        let mut args = json!({"root": fresh, "unit_dir": fresh.join("units")});
        args.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        args
    };
    let id = format!("sha256:{}", "a".repeat(64));
    let mut results = BTreeMap::new();
    for (option, value) in [
        ("start_timeout", json!(i64::MAX)),
        ("min_up_time", json!(u64::MAX)),
        ("lock_timeout", json!("9223372036854775807")),
        ("download_timeout", json!(604_801)),
        ("keep", json!(10_001)),
        ("start_timeout", json!(-1)),
    ] {
        let args = base(json!({"name": "web", option: value}));
        results.insert(
            format!("ops_pod {option}={value}"),
            run_guarded::<OpsPod>(args)["msg"].clone(),
        );
    }
    for (option, value) in [("timeout", json!(i64::MAX)), ("lock_timeout", json!(-5))] {
        let mut args = base(json!({"id": id, "path": "/nonexistent", option: value}));
        args.as_object_mut().unwrap().remove("unit_dir");
        results.insert(
            format!("ops_image {option}={value}"),
            run_guarded::<OpsImage>(args)["msg"].clone(),
        );
        let mut args = base(json!({"pod": "web", "version": "1", "name": "data", option: value}));
        args.as_object_mut().unwrap().remove("unit_dir");
        results.insert(
            format!("ops_volume {option}={value}"),
            run_guarded::<OpsVolume>(args)["msg"].clone(),
        );
    }
    assert!(!fresh.exists(), "a refusal created the store");
    insta::assert_json_snapshot!(results);
}

/// The largest accepted waits are accepted: the bound is where the docs
/// say, and nothing past it is computed from them.
#[test]
fn the_largest_accepted_numbers_are_accepted() {
    use ops_core::ansible::args::MAX_SECONDS;
    use ops_core::modules::pod::OpsPod;
    let root = tempfile::tempdir().unwrap();
    let result = run_guarded::<OpsPod>(json!({
        "name": "web",
        "state": "stopped",
        "root": root.path(),
        "unit_dir": root.path().join("units"),
        "start_timeout": MAX_SECONDS,
        "min_up_time": MAX_SECONDS,
        "lock_timeout": MAX_SECONDS,
        "download_timeout": MAX_SECONDS,
        "keep": 10_000,
        "_ansible_check_mode": true,
    }));
    let msg = result["msg"].as_str().unwrap_or_default();
    assert!(!msg.contains("must be between"), "{result}");
    assert!(!msg.contains("internal error"), "{result}");
}

/// A refused request, a request with nothing to do, and check mode, on a
/// fresh host (the store root does not exist): every module leaves the
/// host as it was, with no store root, lock file or directory created.
#[test]
fn refusals_and_check_mode_on_a_fresh_host_create_nothing() {
    use ops_core::modules::{facts::OpsFacts, image::OpsImage, pod::OpsPod, volume::OpsVolume};
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    std::fs::create_dir(&host).unwrap();
    let not_an_image = tmp.path().join("secret.txt");
    std::fs::write(&not_an_image, "root:$6$hash:19000::::::\n".repeat(40)).unwrap();
    let bundle = std::fs::canonicalize("../tests/fixtures/bundles/native-seed000").unwrap();
    let root = host.join("var/lib/ops");
    let unit_dir = host.join("etc/systemd/system");
    let id = format!("sha256:{}", "a".repeat(64));
    let check = |mut args: Value| {
        args["_ansible_check_mode"] = json!(true);
        args
    };
    let pod = |args: Value| run_guarded::<OpsPod>(args);
    let image = |args: Value| run_guarded::<OpsImage>(args);
    let with = |extra: Value| {
        let mut args = json!({"root": root, "unit_dir": unit_dir});
        args.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        args
    };
    let without_units = |extra: Value| {
        let mut args = with(extra);
        args.as_object_mut().unwrap().remove("unit_dir");
        args
    };
    let results = [
        (
            "pod: bad option",
            pod(with(json!({"name": "web", "keep": -1}))),
        ),
        (
            "pod: missing bundle",
            pod(with(json!({"bundle": host.join("nowhere")}))),
        ),
        (
            "pod: nothing to stop",
            pod(with(json!({"name": "web", "state": "stopped"}))),
        ),
        (
            "pod: nothing to remove",
            pod(with(json!({"name": "web", "state": "absent"}))),
        ),
        (
            "pod: version not deployed",
            pod(with(
                json!({"name": "web", "version": "9", "state": "started"}),
            )),
        ),
        (
            "pod: check mode deploy",
            pod(check(with(json!({"bundle": bundle, "state": "present"})))),
        ),
        (
            "image: not an image",
            image(without_units(json!({"id": id, "path": not_an_image}))),
        ),
        (
            "image: check mode import",
            image(check(without_units(
                json!({"id": id, "path": not_an_image}),
            ))),
        ),
        (
            "image: nothing to remove",
            image(without_units(json!({"id": id, "state": "absent"}))),
        ),
        (
            "image: relative root",
            image(json!({"id": id, "path": not_an_image, "root": "relative/store"})),
        ),
        (
            "volume: pod not deployed",
            run_guarded::<OpsVolume>(without_units(
                json!({"pod": "web", "version": "1", "name": "data", "data": not_an_image}),
            )),
        ),
        (
            "volume: check mode",
            run_guarded::<OpsVolume>(check(without_units(
                json!({"pod": "web", "version": "1", "name": "data", "state": "absent"}),
            ))),
        ),
        (
            "facts",
            run_guarded::<OpsFacts>(with(json!({"units": false}))),
        ),
    ];
    for (case, result) in &results {
        let check_mode = case.contains("check mode");
        assert!(
            check_mode || result["changed"] == json!(false),
            "{case}: {result}"
        );
        let left: Vec<_> = std::fs::read_dir(&host)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "{case} left {left:?}: {result}");
    }
    assert!(!Path::new("relative").exists());
    let text = serde_json::to_string(&results.iter().map(|(_, r)| r).collect::<Vec<_>>()).unwrap();
    assert!(!text.contains("$6$hash"), "file contents echoed: {text}");
}
