//! The ops_pod binary, run as Ansible runs it.

use std::path::Path;

use ops_core::testkit::{protocol_results, run_file, run_file_with_systemctl};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_ops_pod");

#[test]
fn speaks_the_module_protocol() {
    // Removing a pod that was never deployed: a no-op on any host.
    let valid = json!({
        "name": "web",
        "state": "absent",
        "root": "/nonexistent/ops",
        "unit_dir": "/nonexistent/units",
    });
    insta::assert_json_snapshot!(protocol_results(Path::new(BIN), &valid));
}

#[test]
fn a_bad_bundle_is_refused_before_anything_else_in_every_mode() {
    for check_mode in [true, false] {
        let result = run_file(
            Path::new(BIN),
            &json!({
                "bundle": "../../tests/fixtures/bad-bundles/bad-digest",
                "_ansible_check_mode": check_mode,
            }),
        );
        assert_eq!(result["failed"], json!(true), "{result}");
        insta::assert_json_snapshot!(result);
    }
}

#[test]
fn secrets_given_as_env_are_not_echoed() {
    let result = run_file(
        Path::new(BIN),
        &json!({"name": "web", "env": "not a dict hunter2", "_ansible_no_log": true}),
    );
    assert_eq!(result["failed"], json!(true));
    assert!(!result.to_string().contains("hunter2"), "{result}");
}

#[test]
fn options_the_spec_cannot_check_are_refused_together() {
    let result = run_file(
        Path::new(BIN),
        &json!({
            "name": "Bad Name",
            "version": "current",
            // keep and the timeouts are bounded by the spec now, before
            // these checks (see the runner's bounds test).
            "env": {"POD_NAME": "x", "ok": "hunter2"},
            "root": "/nonexistent/ops",
        }),
    );
    assert_eq!(result["failed"], json!(true), "{result}");
    assert!(!result.to_string().contains("hunter2"), "{result}");
    insta::assert_json_snapshot!(result);
}

#[test]
fn a_systemd_older_than_supported_is_refused_before_anything() {
    let dir = std::env::temp_dir().join(format!("ops-pod-old-systemd-{}", std::process::id()));
    let root = dir.join("ops");
    let units = dir.join("units");
    for check_mode in [true, false] {
        let args = json!({
            "bundle": "../../tests/fixtures/bundles/native-seed000",
            "root": root,
            "unit_dir": units,
            "_ansible_check_mode": check_mode,
        });
        let old = run_file_with_systemctl(
            Path::new(BIN),
            &args,
            "systemd 245 (245.4-4ubuntu3)\n+PAM +AUDIT",
        );
        assert_eq!(old["failed"], json!(true), "{old}");
        assert_eq!(old["changed"], json!(false), "{old}");
        insta::assert_snapshot!(old["msg"].as_str().unwrap());
        let unknown = run_file_with_systemctl(Path::new(BIN), &args, "not a version");
        assert_eq!(unknown["failed"], json!(true), "{unknown}");
        insta::assert_snapshot!(unknown["msg"].as_str().unwrap());
        assert!(!root.exists() && !units.exists(), "nothing was made");
    }
}

#[test]
fn the_waker_mode_says_how_it_is_called_and_wakes_only_an_idle_pod() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    let usage = Command::new(BIN).arg("--wake").output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(usage.stdout.is_empty());
    insta::assert_snapshot!(String::from_utf8_lossy(&usage.stderr));

    let dir = std::env::temp_dir().join(format!("ops-pod-wake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let systemctl = dir.join("systemctl");
    std::fs::write(
        &systemctl,
        "#!/bin/sh\necho 'systemd 252 (252.30-1~deb12u2)'\n",
    )
    .unwrap();
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (root, units) = (dir.join("ops"), dir.join("units"));
    let not_idle = Command::new(BIN)
        .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .arg("--wake")
        .arg("--root")
        .arg(&root)
        .arg("--unit-dir")
        .arg(&units)
        .args(["--pod", "shop"])
        .output()
        .unwrap();
    assert!(not_idle.status.success(), "{not_idle:?}");
    assert_eq!(
        String::from_utf8_lossy(&not_idle.stderr),
        "ops-wake: pod shop is not idle: nothing to do\n"
    );
    assert!(!root.exists() && !units.exists(), "nothing was made");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bundle_name_needs_a_bundle_or_a_repository() {
    let result = run_file(
        Path::new(BIN),
        &json!({
            "name": "myapp-staging",
            "bundle_name": "Not A Name",
            "root": "/nonexistent/ops",
        }),
    );
    assert_eq!(result["failed"], json!(true), "{result}");
    insta::assert_json_snapshot!(result);
    let result = run_file(
        Path::new(BIN),
        &json!({"name": "myapp-staging", "bundle_name": "myapp", "root": "/nonexistent/ops"}),
    );
    insta::assert_json_snapshot!(result);
}
