//! The ops_facts binary, run as Ansible runs it.

use std::path::Path;

use ops_core::testkit::{protocol_results, run_file_with_systemctl};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_ops_facts");

#[test]
fn speaks_the_module_protocol() {
    let valid = json!({"root": "/nonexistent/ops", "units": "no"});
    insta::assert_json_snapshot!(protocol_results(Path::new(BIN), &valid));
}

#[test]
fn a_systemd_older_than_supported_is_refused() {
    let root = std::env::temp_dir().join(format!("ops_facts-old-systemd-{}", std::process::id()));
    let old = run_file_with_systemctl(
        Path::new(BIN),
        &json!({"root": root}),
        "systemd 246 (246.6-1)",
    );
    assert_eq!(old["failed"], json!(true), "{old}");
    insta::assert_snapshot!(old["msg"].as_str().unwrap());
    assert!(!root.exists(), "nothing was made");
}
