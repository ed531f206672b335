//! The module runner on a test module: the result JSON for good arguments,
//! each kind of bad arguments, a failure with an error chain, and a panic.

use std::collections::BTreeMap;

use ops_core::module::{run_guarded, Context, Default, Failure, Kind, Module, Opt, Outcome, Spec};
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
            Opt::new("count", Kind::Int, "").default(Default::Int(1)),
            Opt::new("force", Kind::Bool, "").default(Default::Bool(false)),
            Opt::new("state", Kind::Str, "")
                .choices(&["present", "absent"])
                .default(Default::Str("present")),
            Opt::new("path", Kind::Path, ""),
            Opt::new("uri", Kind::Str, ""),
            Opt::new("env", Kind::Dict(&Kind::Str), "").no_log(),
            Opt::new("outcome", Kind::Str, "")
                .choices(&["ok", "fail", "panic"])
                .default(Default::Str("ok")),
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
