//! A bundle changed between its validation and the copy into the store:
//! what is stored is what was validated, or the run is refused.
//!
//! The swap is made deterministically, between `bundle::load` (the
//! validation) and `new_version` (the read of the files that are copied),
//! as the bundle's owner could make it while a run reads the bundle.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::new_version;
use crate::bundle;

const POD_JSON: &str = r#"{
  "name": "shop",
  "version": "1",
  "containers": [
    {"name": "web", "systemd": {"unit-files": ["units/web.service"]}}
  ]
}
"#;

fn bundle_dir(dir: &Path) {
    fs::create_dir_all(dir.join("units")).unwrap();
    fs::write(dir.join("pod.json"), POD_JSON).unwrap();
    fs::write(
        dir.join("units/web.service"),
        "[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
}

#[test]
fn pod_json_changed_after_validation_is_stored_as_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    bundle_dir(&dir);
    let loaded = bundle::load(&dir).unwrap();
    fs::write(dir.join("pod.json"), POD_JSON.replace("\"1\"", "\"2\"")).unwrap();
    let new = new_version(loaded, None, BTreeMap::new(), &[]).unwrap();
    assert_eq!(new.pod_json, POD_JSON.as_bytes());
    assert_eq!(new.pod.version.as_str(), "1");
}

#[test]
fn a_unit_file_swapped_for_a_link_after_validation_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("the-shadow");
    fs::write(&secret, "root:$6$secret:19000:0:99999:7:::\n").unwrap();
    let fifo = tmp.path().join("the-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut messages = Vec::new();
    for (what, target) in [
        ("secret", secret.as_path()),
        ("fifo", fifo.as_path()),
        ("dangling", Path::new("/nonexistent")),
    ] {
        let dir = tmp.path().join(what);
        bundle_dir(&dir);
        let loaded = bundle::load(&dir).unwrap();
        let unit = loaded.dir.join("units/web.service");
        fs::remove_file(&unit).unwrap();
        std::os::unix::fs::symlink(target, &unit).unwrap();
        let error = new_version(loaded, None, BTreeMap::new(), &[]).unwrap_err();
        let msg = crate::ansible::error_chain(&error);
        assert!(msg.contains(&unit.display().to_string()), "{msg}");
        assert!(!msg.contains("$6$secret"), "{msg}");
        let shown = msg.replace(&tmp.path().display().to_string(), "<tmp>");
        messages.push(format!("{what}: {shown}"));
    }
    insta::assert_snapshot!(messages.join("\n"));

    // A directory of the path swapped for a link is refused too.
    let dir = tmp.path().join("by-dir");
    bundle_dir(&dir);
    let loaded = bundle::load(&dir).unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    fs::rename(loaded.dir.join("units"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, loaded.dir.join("units")).unwrap();
    let error = new_version(loaded, None, BTreeMap::new(), &[]).unwrap_err();
    let msg = crate::ansible::error_chain(&error);
    assert!(msg.contains("by-dir/units is a symlink now"), "{msg}");
}
