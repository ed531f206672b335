//! Helpers for the module binaries' own tests (feature `testkit`): run a
//! real binary the way Ansible does and check the protocol's invariants.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

/// Run `bin` with `stdin` and the given arguments; assert that stdout is
/// exactly one JSON object on one line, and return it.
fn run(bin: &Path, args: &[&Path], stdin: &[u8]) -> Value {
    run_in(bin, args, stdin, None)
}

fn run_in(bin: &Path, args: &[&Path], stdin: &[u8], path: Option<&Path>) -> Value {
    let mut command = assert_cmd::Command::new(bin);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let output = command
        .args(args)
        .write_stdin(stdin.to_vec())
        .output()
        .expect("the module binary runs");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    assert_eq!(
        stdout.matches('\n').count(),
        1,
        "one line on stdout: {stdout:?}"
    );
    let value: Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    assert!(value.is_object(), "stdout is a JSON object: {stdout}");
    let failed = value["failed"] == json!(true);
    assert_eq!(
        output.status.success(),
        !failed,
        "exit status matches failed: {value}"
    );
    value
}

/// Run `bin` as Ansible does: `bin ARGS_FILE`.
pub fn run_file(bin: &Path, args: &Value) -> Value {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("args");
    std::fs::write(&file, args.to_string()).expect("the args file");
    run(bin, &[&file], b"")
}

/// Run `bin` as Ansible does, on a host whose `systemctl --version`
/// prints `version_text`: a `systemctl` stand-in comes first on PATH.
pub fn run_file_with_systemctl(bin: &Path, args: &Value, version_text: &str) -> Value {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("a temp dir");
    let systemctl = dir.path().join("systemctl");
    let script = format!("#!/bin/sh\ncat <<'EOF'\n{version_text}\nEOF\n");
    std::fs::write(&systemctl, script).expect("the systemctl stand-in");
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755))
        .expect("an executable stand-in");
    let file = dir.path().join("args");
    std::fs::write(&file, args.to_string()).expect("the args file");
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    run_in(bin, &[&file], b"", Some(Path::new(&path)))
}

/// Run `bin` as Ansible does, with `PATH` set to `path` (where a test puts
/// stand-ins for the host's programs first).
pub fn run_file_with_path(bin: &Path, args: &Value, path: &str) -> Value {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("args");
    std::fs::write(&file, args.to_string()).expect("the args file");
    run_in(bin, &[&file], b"", Some(Path::new(path)))
}

/// Run `bin` with the args JSON on standard input.
pub fn run_stdin(bin: &Path, args: &Value) -> Value {
    run(bin, &[], args.to_string().as_bytes())
}

fn with(args: &Value, key: &str, value: Value) -> Value {
    let mut args = args.clone();
    args[key] = value;
    args
}

/// The protocol cases every module binary must get right, given arguments
/// that are valid for it; the invariants are asserted here and the results
/// returned for a snapshot.
pub fn protocol_results(bin: &Path, valid: &Value) -> BTreeMap<&'static str, Value> {
    let mut results = BTreeMap::new();

    let unknown = run_file(bin, &with(valid, "bogus_option", json!(1)));
    assert_eq!(unknown["failed"], json!(true));
    let msg = unknown["msg"].as_str().unwrap_or_default();
    assert!(msg.starts_with("Unsupported parameters for (ops_"), "{msg}");
    assert!(msg.contains("module: bogus_option."), "{msg}");
    results.insert("unknown option", unknown);

    let mut check_args = with(valid, "_ansible_check_mode", json!("yes"));
    check_args["_ansible_future_key"] = json!({"ignored": true});
    let check = run_file(bin, &check_args);
    assert_eq!(check["changed"], json!(false), "{check}");
    assert!(
        check["msg"]
            .as_str()
            .unwrap_or_default()
            .starts_with("check mode: "),
        "check mode is seen: {check}"
    );
    results.insert("check mode", check);

    let normal = run_file(bin, &with(valid, "_ansible_check_mode", json!("no")));
    assert!(
        !normal["msg"]
            .as_str()
            .unwrap_or_default()
            .starts_with("check mode: "),
        "check mode off is seen: {normal}"
    );
    assert_eq!(
        run_stdin(bin, valid),
        run_file(bin, valid),
        "stdin and file agree"
    );
    results.insert("normal mode", normal);

    let missing = run(bin, &[Path::new("/nonexistent/args")], b"");
    assert_eq!(missing["failed"], json!(true));
    results.insert("no args file", missing);

    let garbage = run(bin, &[], b"{not json");
    assert_eq!(garbage["failed"], json!(true));
    results.insert("args not JSON", garbage);

    results
}
