//! The ops_facts binary, run as Ansible runs it.

use std::path::Path;

use ops_core::testkit::protocol_results;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_ops_facts");

#[test]
fn speaks_the_module_protocol() {
    let valid = json!({"root": "/nonexistent/ops", "units": "no"});
    insta::assert_json_snapshot!(protocol_results(Path::new(BIN), &valid));
}
