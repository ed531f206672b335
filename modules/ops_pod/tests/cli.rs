//! The ops_pod binary, run as Ansible runs it.

use std::path::Path;

use ops_core::testkit::{protocol_results, run_file, run_file_with_path, run_file_with_systemctl};
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
    // An operator's --help gets every way to run it, not the module's
    // JSON; a typo gets it as the error.
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(
        help.starts_with(
            "usage: ops_pod --validate [--json] [--keyring FILE] [--runtime systemd|podman] \
             [--root ROOT] BUNDLE\n       ops-wake --wake --root ROOT --unit-dir UNIT_DIR --pod POD\n"
        ) && help.contains("journalctl -u ops-<pod>:wake.service")
            && help.contains("ops_pod ARGS_FILE, or the JSON arguments on standard input"),
        "{help}"
    );
    let typo = Command::new(BIN).arg("--wkae").output().unwrap();
    assert_eq!(typo.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&typo.stderr),
        format!("ops_pod: unknown option \"--wkae\"\n{help}")
    );
    let relative = Command::new(BIN)
        .args([
            "--wake",
            "--root",
            "ops",
            "--unit-dir",
            "/etc/systemd/system",
            "--pod",
            "shop",
        ])
        .output()
        .unwrap();
    assert_eq!(relative.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&relative.stderr),
        "ops-wake: --root: expected an absolute path, got \"ops\"\n"
    );

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
        format!(
            "ops-wake: pod shop is not deployed under {}: nothing to do\n",
            root.display()
        )
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

/// The seeds' forms (issue 18), run as Ansible runs the module: a host
/// whose `systemctl` and `systemd-analyze` are stand-ins (a supported
/// version, no units loaded, every file valid), a store and unit directory
/// in a temporary directory, only `state: present` (nothing to start).
mod seeds {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    const SYSTEMCTL: &str = "#!/bin/sh
case \"$1\" in
--version) echo 'systemd 252 (252.38-1~deb12u1)' ;;
list-units) echo '[]' ;;
esac
";

    struct Host {
        dir: tempfile::TempDir,
    }

    impl Host {
        fn new() -> Host {
            let dir = tempfile::tempdir().unwrap();
            let bin = dir.path().join("bin");
            fs::create_dir(&bin).unwrap();
            for (name, script) in [
                ("systemctl", SYSTEMCTL),
                ("systemd-analyze", "#!/bin/sh\nexit 0\n"),
            ] {
                fs::write(bin.join(name), script).unwrap();
                fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755)).unwrap();
            }
            Host { dir }
        }

        fn root(&self) -> PathBuf {
            self.dir.path().join("ops")
        }

        fn bundle(&self, name: &str) -> PathBuf {
            let dir = self.dir.path().join(name);
            fs::create_dir_all(&dir).unwrap();
            dir
        }

        fn run(&self, bundle: &Path, check_mode: bool) -> serde_json::Value {
            let args = json!({
                "bundle": bundle,
                "state": "present",
                "root": self.root(),
                "unit_dir": self.dir.path().join("units"),
                "_ansible_check_mode": check_mode,
            });
            let path = format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display());
            run_file_with_path(Path::new(BIN), &args, &path)
        }

        fn meta(&self, pod: &str, version: &str) -> serde_json::Value {
            let path = self
                .root()
                .join("pods")
                .join(pod)
                .join(version)
                .join("meta.json");
            serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
        }
    }

    /// A unit file systemd finds fault with is named where the bundle has
    /// it (here at its top, not under units/ where the store keeps it),
    /// with its line in that file.
    #[test]
    fn a_unit_file_systemd_refuses_is_named_where_the_bundle_has_it() {
        let host = Host::new();
        // systemd-analyze verify as it complains: the copy's path and line.
        let analyze = "#!/bin/sh\nfor f in \"$@\"; do case \"$f\" in *web.service) \
                       echo \"$f:3: Unknown key name 'ExecStrat' in section 'Service'\" >&2; \
                       exit 1;; esac; done\n";
        let bin = host.dir.path().join("bin/systemd-analyze");
        fs::write(&bin, analyze).unwrap();
        let dir = host.bundle("top-level");
        fs::write(dir.join("web.service"), WEB).unwrap();
        let pod = json!({"name": "shop", "version": "1",
                         "containers": [{"name": "web", "systemd": {"unit-files": ["web.service"]}}]});
        fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        let refused = host.run(&dir, true);
        let msg = refused["msg"].as_str().unwrap();
        let expected = format!(
            "{}:2: Unknown key name 'ExecStrat'",
            dir.join("web.service").display()
        );
        assert!(msg.contains(&expected), "{refused}");
        assert!(!msg.contains("units/web.service"), "{refused}");
    }

    /// A tiny ACI (its id is computed by ops, not here).
    fn aci() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, body) in [
            (
                "manifest",
                r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"t/web"}"#,
            ),
            ("rootfs/www/index.html", "hello\n"),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(body.len() as u64);
            b.append_data(&mut h, path, body.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    const WEB: &str = "[Service]\nExecStart=/bin/sh -c 'exec sleep infinity'\n";

    /// Seed 000's own example: `example.service` replicated on three ports.
    #[test]
    fn seed_000_s_example_installs_its_plain_unit_as_a_template() {
        let host = Host::new();
        let bundle = Path::new("../../tests/fixtures/bundles/plain-replication/native");
        let planned = host.run(bundle, true);
        assert_eq!(planned["changed"], json!(true), "{planned}");
        assert!(!host.root().exists(), "check mode wrote nothing");
        let done = host.run(bundle, false);
        assert_eq!(done["changed"], json!(true), "{done}");
        let units = host.dir.path().join("units");
        assert!(
            units.join("example-1001-example@.service").exists(),
            "{done}"
        );
        let record = &done["pod"]["versions"]["1001"];
        let unit = &record["units"][0];
        assert_eq!(unit["shipped_as"], json!("example.service"), "{record}");
        assert_eq!(unit["installed_as"], json!("example-1001-example@.service"));
        let instances: Vec<_> = unit["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["unit"].clone())
            .collect();
        assert_eq!(
            instances,
            [
                json!("example-1001-example@8080.service"),
                json!("example-1001-example@8081.service"),
                json!("example-1001-example@8082.service"),
            ],
            "{record}"
        );
        let again = host.run(bundle, false);
        assert_eq!(again["changed"], json!(false), "{again}");
    }

    /// An image given by path without id: its id computed, shown in the
    /// pod record, and a warning.
    #[test]
    fn an_image_by_path_without_id_is_identified_and_warned_about() {
        let host = Host::new();
        let dir = host.bundle("by-path");
        fs::write(dir.join("web.service"), WEB).unwrap();
        fs::write(dir.join("web.aci"), aci()).unwrap();
        let ops = json!({
            "name": "shop",
            "version": 1,
            "systemd-units": [{"unit-file": "web.service", "image": "web.aci"}],
            "images": [{"path": "web.aci"}],
        });
        let pod = json!({"acVersion": "0.8.6", "acKind": "PodManifest",
                         "annotations": [{"name": "ops", "value": ops.to_string()}]});
        fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        let done = host.run(&dir, false);
        assert_eq!(done["changed"], json!(true), "{done}");
        let id = done["pod"]["versions"]["1"]["images"][0]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(id.starts_with("sha512-"), "{done}");
        assert_eq!(
            done["warnings"],
            json!([format!(
                "image web.aci of pod shop version 1: pod.json gives no id, so ops computed {id} \
                 from the file; nothing pinned it (no id, no signature): give the id in pod.json \
                 to deploy only that image"
            )]),
            "{done}"
        );
        assert_eq!(
            host.meta("shop", "1")["pod"]["images"][0]["computed"],
            json!(true)
        );
        let again = host.run(&dir, false);
        assert_eq!(again["changed"], json!(false), "{again}");
    }

    /// An image given by uri without id: check mode downloads nothing and
    /// writes nothing; a real run records the id; a rerun downloads nothing
    /// (the file is gone by then) and changes nothing.
    #[test]
    fn an_image_by_uri_without_id_is_downloaded_by_the_real_run_only() {
        let host = Host::new();
        let served = host.bundle("served");
        fs::write(served.join("web.aci"), aci()).unwrap();
        let uri = format!("file://{}", served.join("web.aci").display());
        let dir = host.bundle("by-uri");
        fs::write(dir.join("web.service"), WEB).unwrap();
        let pod = json!({
            "name": "shop",
            "version": 1,
            "containers": [{"name": "web", "image": uri,
                            "systemd": {"unit-files": ["web.service"]}}],
            "images": [{"uri": uri}],
        });
        fs::write(dir.join("pod.json"), pod.to_string()).unwrap();

        let planned = host.run(&dir, true);
        assert_eq!(planned["changed"], json!(true), "{planned}");
        let actions = planned["actions"].as_array().unwrap();
        assert_eq!(
            actions[0],
            json!(format!(
                "download image {uri} and compute its id (pod.json gives none: unknown until \
                 downloaded, and check mode downloads nothing), then import it into systemd"
            )),
            "{planned}"
        );
        assert!(!host.root().exists(), "check mode wrote nothing");

        let done = host.run(&dir, false);
        assert_eq!(done["changed"], json!(true), "{done}");
        let id = done["pod"]["versions"]["1"]["images"][0]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            done["actions"][0],
            json!(format!(
                "download image {uri} to compute its id (pod.json gives none): {id}"
            )),
            "{done}"
        );
        let meta = host.meta("shop", "1");
        assert_eq!(meta["pod"]["images"][0]["id"], json!(id));
        assert_eq!(
            meta["pod"]["images"][0]["source"],
            json!({"uri": uri}),
            "{meta}"
        );
        assert!(!host.root().join("staging").exists());

        fs::remove_file(served.join("web.aci")).unwrap();
        let again = host.run(&dir, false);
        assert_eq!(again["changed"], json!(false), "{again}");
    }

    /// A unit file given by a file:// URI is fetched and stored.
    #[test]
    fn a_unit_file_by_uri_is_stored_with_the_version() {
        let host = Host::new();
        let served = host.bundle("served");
        fs::write(served.join("web.service"), WEB).unwrap();
        let uri = format!("file://{}", served.join("web.service").display());
        let dir = host.bundle("unit-by-uri");
        let ops = json!({"name": "shop", "version": 1, "systemd-units": [{"unit-file": uri}]});
        let pod = json!({"acVersion": "0.8.6", "acKind": "PodManifest",
                         "annotations": [{"name": "ops", "value": ops.to_string()}]});
        fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        let done = host.run(&dir, false);
        assert_eq!(done["changed"], json!(true), "{done}");
        let stored = host.root().join("pods/shop/1/units/web.service");
        assert_eq!(fs::read_to_string(stored).unwrap(), WEB);
        let again = host.run(&dir, false);
        assert_eq!(again["changed"], json!(false), "{again}");
    }

    /// A uri without scheme that would be a guess is refused, naming the
    /// field and how to write it, in either mode, writing nothing.
    #[test]
    fn an_ambiguous_uri_without_scheme_is_refused() {
        let host = Host::new();
        let bundle =
            Path::new("../../tests/fixtures/bad-bundles/appc-uri-without-scheme-ambiguous");
        for check_mode in [true, false] {
            let refused = host.run(bundle, check_mode);
            assert_eq!(refused["failed"], json!(true), "{refused}");
            assert_eq!(refused["changed"], json!(false), "{refused}");
            insta::assert_snapshot!(refused["msg"].as_str().unwrap());
        }
        assert!(!host.root().exists(), "nothing was made");
    }
}
