//! The ops_image binary, run as Ansible runs it.

use std::path::Path;

use ops_core::testkit::protocol_results;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_ops_image");

#[test]
fn speaks_the_module_protocol() {
    let valid = json!({"id": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "state": "absent", "root": "/nonexistent/ops"});
    insta::assert_json_snapshot!(protocol_results(Path::new(BIN), &valid));
}

#[test]
fn a_bad_digest_and_both_sources_are_refused() {
    let result = ops_core::testkit::run_file(
        Path::new(BIN),
        &json!({"id": "md5-abc", "_ansible_check_mode": true}),
    );
    assert_eq!(result["failed"], json!(true), "{result}");
    let both = ops_core::testkit::run_file(
        Path::new(BIN),
        &json!({"id": "md5-abc", "path": "/a", "uri": "http://b/c"}),
    );
    insta::assert_json_snapshot!([result, both]);
}
