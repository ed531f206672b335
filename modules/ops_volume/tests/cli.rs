//! The ops_volume binary, run as Ansible runs it.

use std::path::Path;

use ops_core::testkit::protocol_results;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_ops_volume");

#[test]
fn speaks_the_module_protocol() {
    let valid = json!({"pod": "web", "version": "1", "name": "data", "state": "absent", "root": "/nonexistent/ops"});
    insta::assert_json_snapshot!(protocol_results(Path::new(BIN), &valid));
}
