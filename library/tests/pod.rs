//! ops_pod's engine on a temporary root and unit directory, with the
//! recording fake standing in for systemd: every state run twice, check
//! mode, refusals (their messages snapshotted) and rollback.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

mod common;

use ops_core::bundle::{PodName, Version};
use ops_core::image::PodmanCli;
use ops_core::pod::{self, Request, State};
use ops_core::systemd::fake::Recording;

struct Host {
    _dir: tempfile::TempDir,
    root: PathBuf,
    unit_dir: PathBuf,
    bundles: PathBuf,
    systemd: Recording,
}

const WEB: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let unit_dir = dir.path().join("units");
        let bundles = dir.path().join("bundles");
        // systemd only loads units that have a file: stopping one that
        // was never loaded fails, as it does on a real host.
        let systemd = Recording {
            unit_dir: Some(unit_dir.clone()),
            ..Recording::default()
        };
        Host {
            root,
            unit_dir,
            bundles,
            _dir: dir,
            systemd,
        }
    }

    /// A bundle of pod `shop` at `version` with a templated unit of two
    /// instances and a helper that after= it.
    fn bundle(&self, version: &str, web: &str) -> PathBuf {
        let dir = self.bundles.join(format!("{version}-{}", web.len()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("web@.service"), web).unwrap();
        fs::write(
            dir.join("helper.service"),
            "[Unit]\nAfter=web@1.service\n[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
        let pod = serde_json::json!({
            "name": "shop",
            "version": version,
            "containers": [
                {"name": "web", "replication": 2, "systemd": {"unit-files": ["web@.service"]}},
                {"name": "helper", "systemd": {"unit-files": ["helper.service"]}},
            ],
        });
        fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        dir
    }

    fn request(&self, state: State) -> Request {
        let mut request = common::pod_request(&self.root, &self.unit_dir, "shop", state);
        request.lock_timeout = Duration::from_secs(5);
        request
    }

    fn deploy(&mut self, version: &str) -> pod::Report {
        let mut request = self.request(State::Started);
        request.bundle = Some(self.bundle(version, WEB));
        self.run(&request).expect("deploys")
    }

    fn run(&mut self, request: &Request) -> Result<pod::Report, String> {
        pod::run(request, &mut self.systemd, &mut PodmanCli, false, true)
            .map_err(|f| ops_core::ansible::error_chain(&f.error))
    }

    /// Every path under the store and unit directory with its contents.
    fn snapshot(&self) -> BTreeMap<PathBuf, common::Entry> {
        common::picture(&[&self.root, &self.unit_dir])
    }
}

/// `sha256:<64 hex>` becomes `sha256:<digest>`, for readable snapshots.
fn hide_digests(msg: &str) -> String {
    let mut out = String::new();
    let mut rest = msg;
    while let Some(at) = rest.find("sha256:") {
        out.push_str(&rest[..at + 7]);
        out.push_str("<digest>");
        rest = &rest[(at + 7 + 64).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// What the fake runs while `version` of shop is started.
fn running_version(version: &str) -> Vec<String> {
    let mut units = vec!["ops-shop.target".to_owned()];
    for unit in ["helper.service", "web@1.service", "web@2.service"] {
        units.push(format!("shop-{version}-{unit}"));
    }
    units
}

fn v(s: &str) -> Option<Version> {
    Some(Version::parse(s).unwrap())
}

#[test]
fn deploy_switch_and_roll_back_each_changed_once() {
    let mut host = Host::new();
    let first = host.deploy("1");
    assert!(first.changed);
    assert_eq!(host.systemd.running(), running_version("1"));
    let helper = fs::read_to_string(host.unit_dir.join("shop-1-helper.service")).unwrap();
    assert!(helper.contains("After=shop-1-web@1.service\n"), "{helper}");
    assert!(!host.deploy("1").changed, "the rerun changes nothing");

    let second = host.deploy("2");
    assert!(second.changed);
    assert_eq!(
        (second.current.clone(), second.previous.clone()),
        (v("2"), v("1"))
    );
    assert_eq!(host.systemd.running(), running_version("2"));
    // The new version was up before the old one stopped.
    let calls = &host.systemd.calls;
    let started = calls
        .iter()
        .position(|c| c.starts_with("start shop-2-"))
        .unwrap();
    let stopped = calls
        .iter()
        .position(|c| c.starts_with("stop shop-1-"))
        .unwrap();
    assert!(started < stopped, "{calls:?}");
    assert!(!host.deploy("2").changed);

    let mut back = host.request(State::Started);
    back.version = v("1");
    let report = host.run(&back).unwrap();
    assert!(report.changed);
    assert_eq!((report.current, report.previous), (v("1"), v("2")));
    assert!(!host.run(&back).unwrap().changed);
}

#[test]
fn one_daemon_reload_per_run_and_none_without_unit_changes() {
    let mut host = Host::new();
    host.deploy("1");
    let reloads = |h: &Host| {
        h.systemd
            .calls
            .iter()
            .filter(|c| *c == "daemon-reload")
            .count()
    };
    assert_eq!(reloads(&host), 1);
    let mut stop = host.request(State::Stopped);
    stop.version = v("1");
    host.run(&stop).unwrap();
    // Stopping the current version only removes the boot link.
    assert_eq!(reloads(&host), 2);
    let before = reloads(&host);
    host.run(&stop).unwrap();
    assert_eq!(reloads(&host), before, "a no-op run does not reload");
}

#[test]
fn check_mode_plans_everything_and_touches_nothing() {
    let mut host = Host::new();
    host.deploy("1");
    let before = host.snapshot();
    let calls = host.systemd.calls.len();
    let mut request = host.request(State::Started);
    request.bundle = Some(host.bundle("2", WEB));
    request.keep = Some(1);
    let report = pod::run(&request, &mut host.systemd, &mut PodmanCli, true, true).unwrap();
    assert!(report.changed);
    // The store is a temporary directory: shown as <root>.
    let root = host.root.display().to_string();
    let actions: Vec<String> = report
        .actions
        .iter()
        .map(|a| a.replace(&root, "<root>"))
        .collect();
    insta::assert_json_snapshot!(actions);
    assert_eq!(host.snapshot(), before);
    let mutating = common::mutating_calls(&host.systemd, calls);
    assert!(mutating.is_empty(), "{mutating:?}");
}

#[test]
fn a_version_that_does_not_come_up_is_rolled_back_completely() {
    let mut host = Host::new();
    host.deploy("1");
    let before = host.snapshot();
    host.systemd.failing.insert("shop-2-web@2.service".into());
    let mut request = host.request(State::Started);
    request.bundle = Some(host.bundle("2", WEB));
    let failed = pod::run(&request, &mut host.systemd, &mut PodmanCli, false, false).unwrap_err();
    let msg = ops_core::ansible::error_chain(&failed.error);
    insta::assert_snapshot!(msg);
    assert!(!failed.report.changed);
    assert_eq!(
        host.snapshot(),
        before,
        "store and unit files are as before"
    );
    assert_eq!(host.systemd.running(), running_version("1"));
}

#[test]
fn secrets_are_written_0600_and_never_reported() {
    use std::os::unix::fs::PermissionsExt;
    let mut host = Host::new();
    let mut request = host.request(State::Started);
    request.bundle = Some(host.bundle("1", WEB));
    request.env = Some(BTreeMap::from([(
        "TOKEN".to_owned(),
        "s3cr3t-value".to_owned(),
    )]));
    let report = host.run(&request).unwrap();
    let env = host.root.join("pods/shop/1/environment");
    assert_eq!(
        fs::metadata(&env).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(fs::read_to_string(&env)
        .unwrap()
        .contains("TOKEN=\"s3cr3t-value\""));
    let shown = format!(
        "{:?} {} {:?}",
        report.actions,
        serde_json::Value::Array(report.diff.clone()),
        report.pod
    );
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(
        shown.contains("environment of 1: TOKEN (values hidden, from the env option)"),
        "{shown}"
    );
    for (path, entry) in host.snapshot() {
        if path != env {
            assert!(
                !String::from_utf8_lossy(&entry.bytes).contains("s3cr3t"),
                "{}",
                path.display()
            );
        }
    }
    assert!(!host.run(&request).unwrap().changed);

    // New values for the same names: the diff can only say they changed.
    request.env = Some(BTreeMap::from([(
        "TOKEN".to_owned(),
        "another-value".to_owned(),
    )]));
    let planned = pod::run(&request, &mut host.systemd, &mut PodmanCli, true, true).unwrap();
    assert!(planned.changed);
    let after = planned.diff[0]["after"].as_str().unwrap();
    assert!(
        after.contains("environment of 1: TOKEN (values hidden, changed)"),
        "{after}"
    );
    assert!(!after.contains("another-value"), "{after}");
}

#[test]
fn refusals_say_why_and_change_nothing() {
    let mut host = Host::new();
    host.deploy("1");
    let before = host.snapshot();
    let mut messages = BTreeMap::new();

    let mut r = host.request(State::Absent);
    r.version = v("1");
    messages.insert(
        "absent of the running current version",
        host.run(&r).unwrap_err(),
    );

    let mut r = host.request(State::Started);
    r.version = v("9");
    messages.insert(
        "unknown version without a bundle",
        host.run(&r).unwrap_err(),
    );

    let mut r = host.request(State::Started);
    r.bundle = Some(host.bundle("1", "[Service]\nExecStart=/bin/true\n"));
    messages.insert("same version, other content", host.run(&r).unwrap_err());

    let mut r = host.request(State::Started);
    r.bundle = Some(host.bundle("3", WEB));
    r.bundle_name = Some(PodName::parse("other").unwrap());
    messages.insert(
        "bundle_name disagrees with the bundle",
        host.run(&r).unwrap_err(),
    );

    let mut r = host.request(State::Started);
    r.root = PathBuf::from("relative/store");
    messages.insert("relative root", host.run(&r).unwrap_err());

    fs::write(host.unit_dir.join("shop-4-web@.service"), "[Service]\n").unwrap();
    let with_foreign = host.snapshot();
    let mut r = host.request(State::Started);
    r.bundle = Some(host.bundle("4", WEB));
    messages.insert("a unit file ops did not write", host.run(&r).unwrap_err());
    assert_eq!(host.snapshot(), with_foreign);
    fs::remove_file(host.unit_dir.join("shop-4-web@.service")).unwrap();

    host.systemd.invalid.insert(
        "shop-5-web@.service".into(),
        "shop-5-web@.service: Service has no ExecStart=".into(),
    );
    let mut r = host.request(State::Started);
    r.bundle = Some(host.bundle("5", WEB));
    messages.insert("a unit systemd would refuse", host.run(&r).unwrap_err());
    // A refusal reports the pod as it is, as every other outcome does, in
    // check mode and in the run.
    for check_mode in [true, false] {
        let failed =
            pod::run(&r, &mut host.systemd, &mut PodmanCli, check_mode, false).unwrap_err();
        assert_eq!(failed.report.current, v("1"), "check mode {check_mode}");
        assert_eq!(failed.report.pod["current"], "1", "check mode {check_mode}");
    }

    assert_eq!(host.snapshot(), before, "no refusal changed anything");
    let messages: BTreeMap<_, _> = messages
        .into_iter()
        .map(|(k, m)| {
            (
                k,
                m.replace(&host.root.display().to_string(), "<root>")
                    .replace(&host.unit_dir.display().to_string(), "<unit_dir>"),
            )
        })
        .collect();
    let messages: BTreeMap<_, _> = messages
        .into_iter()
        .map(|(k, m)| (k, hide_digests(&m)))
        .collect();
    insta::assert_json_snapshot!(messages);
}

#[test]
fn keep_prunes_and_absent_removes_everything() {
    let mut host = Host::new();
    for version in ["1", "2", "3"] {
        host.deploy(version);
    }
    let mut r = host.request(State::Started);
    r.keep = Some(1);
    let report = host.run(&r).unwrap();
    assert!(report.changed);
    let versions: Vec<_> = fs::read_dir(host.root.join("pods/shop"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        versions.len(),
        2,
        "version 3 and its current pointer: {versions:?}"
    );
    assert!(!host.unit_dir.join("shop-1-web@.service").exists());
    assert!(!host.run(&r).unwrap().changed);

    let all = host.request(State::Absent);
    assert!(host.run(&all).unwrap().changed);
    assert!(!host.root.join("pods/shop").exists());
    let left: Vec<_> = fs::read_dir(&host.unit_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // Only the (now empty) boot target directory ops created remains.
    assert!(
        left.iter()
            .all(|p| p.is_dir() && fs::read_dir(p).unwrap().next().is_none()),
        "{left:?}"
    );
    assert!(
        host.systemd.running().is_empty(),
        "{:?}",
        host.systemd.running()
    );
    assert!(!host.run(&all).unwrap().changed);
}

/// A minimal ACI and its id.
fn aci(greeting: &str) -> (Vec<u8>, String) {
    let mut b = tar::Builder::new(Vec::new());
    for (path, body) in [
        (
            "manifest",
            r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"t/web"}"#,
        ),
        ("rootfs/www/index.html", greeting),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(body.len() as u64);
        b.append_data(&mut h, path, body.as_bytes()).unwrap();
    }
    let bytes = b.into_inner().unwrap();
    let id = format!(
        "sha512-{}",
        sha2::Sha512::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    (bytes, id)
}

use sha2::Digest;

impl Host {
    /// Image `id`'s root filesystem, which shop-1-web's drop-in runs it in.
    fn runs_in_image(&self, id: &str) -> PathBuf {
        let rootfs = (self.root).join(format!("images/systemd/{}/rootfs", &id[..7 + 32]));
        let dropin =
            fs::read_to_string(self.unit_dir.join("shop-1-web.service.d/50-ops.conf")).unwrap();
        assert!(
            dropin.contains(&format!("RootDirectory={}\n", rootfs.display())),
            "{dropin}"
        );
        rootfs
    }

    /// A bundle whose web unit runs in an ACI shipped beside pod.json.
    fn bundle_with_image(&self, version: &str, image: &(Vec<u8>, String)) -> PathBuf {
        let dir = self.bundles.join(format!("{version}-image"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("web.service"), WEB).unwrap();
        fs::write(dir.join("web.aci"), &image.0).unwrap();
        let short = &image.1[..7 + 32];
        let pod = serde_json::json!({
            "name": "shop",
            "version": version,
            "containers": [{"name": "web", "image": short, "systemd": {"unit-files": ["web.service"]}}],
            "images": [{"id": image.1, "path": "web.aci"}],
        });
        fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        dir
    }
}

/// Seed 001 makes an image's `id` optional: an Appc bundle whose image has
/// a path only, named by that path in its unit's `image`.
fn appc_bundle_without_image_id(host: &Host, image: &[u8]) -> PathBuf {
    let dir = host.bundles.join("appc-no-id");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("web.service"), WEB).unwrap();
    fs::write(dir.join("web.aci"), image).unwrap();
    let ops = serde_json::json!({
        "name": "shop",
        "version": 1,
        "systemd-units": [{"unit-file": "web.service", "start": true, "image": "web.aci"}],
        "images": [{"path": "web.aci"}],
    });
    let pod = serde_json::json!({
        "acVersion": "0.8.6",
        "acKind": "PodManifest",
        "annotations": [{"name": "ops", "value": ops.to_string()}],
    });
    fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
    dir
}

#[test]
fn an_image_without_id_gets_the_id_of_its_file_and_a_warning() {
    let mut host = Host::new();
    let image = aci("computed\n");
    let mut request = host.request(State::Started);
    request.bundle = Some(appc_bundle_without_image_id(&host, &image.0));
    let warning = format!(
        "image web.aci of pod shop version 1: pod.json gives no id, so ops computed {} from the \
         file; nothing pinned it (no id, no signature): give the id in pod.json to deploy only \
         that image",
        image.1
    );

    let planned = pod::run(&request, &mut host.systemd, &mut PodmanCli, true, true).unwrap();
    assert!(
        planned.actions[0].starts_with(&format!("import image {}", image.1)),
        "{:?}",
        planned.actions
    );
    assert_eq!(planned.warnings, std::slice::from_ref(&warning));
    assert!(!host.root.exists(), "check mode wrote nothing");

    let report = host.run(&request).unwrap();
    assert!(report.changed);
    assert_eq!(report.warnings, [warning]);
    let version = &report.pod["versions"]["1"];
    assert_eq!(version["images"], serde_json::json!([image.1]));
    assert_eq!(version["units"][0]["image"], serde_json::json!(image.1));
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(host.root.join("pods/shop/1/meta.json")).unwrap())
            .unwrap();
    assert_eq!(meta["pod"]["images"][0]["id"], serde_json::json!(image.1));
    assert_eq!(meta["pod"]["images"][0]["computed"], true);
    host.runs_in_image(&image.1);

    let again = host.run(&request).unwrap();
    assert!(!again.changed, "{:?}", again.actions);
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);

    // The same version with another file is another image: refused as
    // any changed content of a stored version is.
    fs::write(
        request.bundle.as_ref().unwrap().join("web.aci"),
        aci("other\n").0,
    )
    .unwrap();
    let changed = host.run(&request).unwrap_err();
    assert!(changed.contains("version 1"), "{changed}");
}

/// Seed 001's optional id, for an image given by `uri` (native shape
/// here: the id is optional in both shapes). Check mode downloads nothing
/// and says the id is unknown; a real run downloads it into staging,
/// computes the id, imports that copy and records the id; a rerun of the
/// stored version with the same uri downloads nothing.
#[test]
fn an_image_by_uri_without_id_is_downloaded_by_a_real_run_only_and_then_pinned() {
    let mut host = Host::new();
    let image = aci("by uri\n");
    let served = host.bundles.join("served");
    fs::create_dir_all(&served).unwrap();
    fs::write(served.join("web.aci"), &image.0).unwrap();
    let uri = format!("file://{}", served.join("web.aci").display());
    let dir = host.bundles.join("uri-no-id");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("web.service"), WEB).unwrap();
    let pod = serde_json::json!({
        "name": "shop",
        "version": 1,
        "containers": [{"name": "web", "image": uri,
                        "systemd": {"unit-files": ["web.service"]}}],
        "images": [{"uri": uri}],
    });
    fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
    let mut request = host.request(State::Started);
    request.bundle = Some(dir);

    let planned = pod::run(&request, &mut host.systemd, &mut PodmanCli, true, true).unwrap();
    assert!(planned.changed);
    assert_eq!(
        planned.actions[0],
        format!(
            "download image {uri} and compute its id (pod.json gives none: unknown until \
             downloaded, and check mode downloads nothing), then import it into systemd"
        )
    );
    assert_eq!(
        planned.warnings,
        [format!(
            "image {uri} of pod shop version 1: pod.json gives no id, so ops computes it once it \
             has downloaded the image (unknown until then: check mode downloads nothing); nothing \
             pins it (no id, no signature): give the id in pod.json to deploy only that image"
        )]
    );
    assert!(!host.root.exists(), "check mode wrote nothing");

    // A killed run's copies are swept.
    fs::create_dir_all(host.root.join("staging/downloads")).unwrap();
    fs::write(host.root.join("staging/downloads/image-0"), b"left over").unwrap();
    let report = host.run(&request).unwrap();
    assert!(report.changed);
    common::assert_downloaded_to_identify(&report.actions, &uri, &image.1);
    assert!(
        report.warnings[0].contains(&format!("ops computed {} from the file", image.1)),
        "{:?}",
        report.warnings
    );
    let version = &report.pod["versions"]["1"];
    assert_eq!(version["images"], serde_json::json!([image.1]));
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(host.root.join("pods/shop/1/meta.json")).unwrap())
            .unwrap();
    assert_eq!(meta["pod"]["images"][0]["id"], serde_json::json!(image.1));
    assert_eq!(meta["pod"]["images"][0]["computed"], true);
    assert_eq!(meta["pod"]["units"][0]["image"], serde_json::json!(image.1));
    assert!(!host.root.join("staging").exists(), "the copy is gone");

    // The same uri is the same image: the rerun reads nothing from it.
    fs::remove_file(served.join("web.aci")).unwrap();
    let planned = pod::run(&request, &mut host.systemd, &mut PodmanCli, true, true).unwrap();
    assert!(!planned.changed, "{:?}", planned.actions);
    let again = host.run(&request).unwrap();
    assert!(!again.changed, "{:?}", again.actions);
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);

    // The stored version from another uri: refused, downloading nothing.
    let mut other = request.clone();
    let moved = host.bundles.join("uri-no-id-moved");
    fs::create_dir_all(&moved).unwrap();
    fs::write(moved.join("web.service"), WEB).unwrap();
    let pod_json = fs::read_to_string(request.bundle.as_ref().unwrap().join("pod.json")).unwrap();
    let elsewhere = format!("file://{}/nowhere.aci", served.display());
    fs::write(moved.join("pod.json"), pod_json.replace(&uri, &elsewhere)).unwrap();
    other.bundle = Some(moved);
    let error = host.run(&other).unwrap_err();
    assert!(
        error.contains(&format!(
            "the bundle gives image {elsewhere} by a uri without an id, and the stored version \
             has no id computed from that uri"
        )),
        "{error}"
    );

    // require_signature refuses it in check mode too, downloading nothing.
    let mut signed = other.clone();
    signed.version = None;
    signed.require_signature = true;
    signed.bundle = Some(host.bundles.join("uri-no-id-signed"));
    fs::create_dir_all(signed.bundle.as_ref().unwrap()).unwrap();
    fs::write(signed.bundle.as_ref().unwrap().join("web.service"), WEB).unwrap();
    fs::write(
        signed.bundle.as_ref().unwrap().join("pod.json"),
        pod_json
            .replace(&uri, &elsewhere)
            .replace("\"version\":1", "\"version\":3"),
    )
    .unwrap();
    let error = pod::run(&signed, &mut host.systemd, &mut PodmanCli, true, false).unwrap_err();
    assert_eq!(
        error.error.to_string(),
        format!("image {elsewhere}: require_signature is set but the image has no signature")
    );

    // Another version whose image cannot be had: refused, naming the
    // field, the store as it was (its download directory gone).
    let dir = host.bundles.join("uri-no-id-2");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("web.service"), WEB).unwrap();
    let pod = serde_json::json!({
        "name": "shop",
        "version": 2,
        "containers": [{"name": "web", "systemd": {"unit-files": ["web.service"]}}],
        "images": [{"uri": uri}],
    });
    fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
    request.bundle = Some(dir);
    let error = host.run(&request).unwrap_err();
    assert!(
        error.contains(&format!(
            "pod.json: images[0].uri: cannot read {}",
            uri.trim_start_matches("file://")
        )),
        "{error}"
    );
    assert!(!host.root.join("pods/shop/2").exists());
    assert!(!host.root.join("staging").exists());
}

/// OpenPGP keys for the signature tests, made with gpg as the
/// real-component tests (tests/images) make theirs; ops checks signatures
/// with sqv. Both are what tests/run-all installs (`gnupg`, `sqv`).
struct Signer {
    home: tempfile::TempDir,
    /// The public key, armored: what `keyring` names.
    keyring: PathBuf,
}

impl Signer {
    fn new(name: &str) -> Signer {
        for tool in ["gpg", "sqv"] {
            assert!(
                std::process::Command::new(tool)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "the signature tests need {tool} (Debian packages gnupg and sqv)"
            );
        }
        let home = tempfile::tempdir().unwrap();
        let signer = Signer {
            keyring: home.path().join(format!("{name}.asc")),
            home,
        };
        signer.gpg(&[
            "--passphrase",
            "",
            "--quick-generate-key",
            &format!("{name} <{name}@example.com>"),
            "ed25519",
            "sign",
            "never",
        ]);
        let public = signer.gpg(&["--armor", "--export"]);
        assert!(public.starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"));
        fs::write(&signer.keyring, public).unwrap();
        signer
    }

    fn gpg(&self, args: &[&str]) -> Vec<u8> {
        let out = std::process::Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--yes", "--quiet", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A detached armored signature of `file`, written to `to`.
    fn sign(&self, file: &std::path::Path, to: &std::path::Path) {
        self.gpg(&[
            "--armor",
            "--detach-sign",
            "--output",
            to.to_str().unwrap(),
            file.to_str().unwrap(),
        ]);
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        // The agent gpg started for this home.
        let _ = std::process::Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}

/// A loopback HTTP server of `files` (path → bytes; anything else 404)
/// that records the path of every request it is sent: what was downloaded.
fn serve_counted(
    files: Vec<(&'static str, Vec<u8>)>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let line = String::from_utf8_lossy(&request[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            seen.lock().unwrap().push(path.clone());
            match files.iter().find(|(p, _)| *p == path) {
                Some((_, bytes)) => {
                    let _ = stream.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            bytes.len()
                        )
                        .as_bytes(),
                    );
                    let _ = stream.write_all(bytes);
                }
                None => {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        }
    });
    (format!("http://{addr}"), requests)
}

impl Host {
    /// A bundle of shop `version` whose web unit runs in the image at
    /// `uri`, which pod.json gives without an id, signed by `signature`
    /// (a URI: the signature beside the image).
    fn bundle_signed_by_uri(&self, version: u32, uri: &str, signature: &str) -> PathBuf {
        let dir = self.bundles.join(format!("signed-uri-{version}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("web.service"), WEB).unwrap();
        let pod = serde_json::json!({
            "name": "shop",
            "version": version,
            "containers": [{"name": "web", "image": uri,
                            "systemd": {"unit-files": ["web.service"]}}],
            "images": [{"uri": uri, "signature": signature}],
        });
        fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        dir
    }
}

/// Seed 001's optional id, for a SIGNED image given by `uri` (file://,
/// its signature beside it): a real run downloads it, computes its id
/// from that copy, verifies the signature over it with `keyring` (here
/// with require_signature too) and imports it. The signature pinned it:
/// the result does not warn that nothing did, and the id recorded is the
/// file's.
#[test]
fn a_signed_image_by_uri_without_id_deploys_with_its_files_id_and_no_unpinned_warning() {
    let mut host = Host::new();
    let release = Signer::new("release");
    let image = aci("signed by uri\n");
    let served = host.bundles.join("served");
    fs::create_dir_all(&served).unwrap();
    fs::write(served.join("web.aci"), &image.0).unwrap();
    release.sign(&served.join("web.aci"), &served.join("web.aci.asc"));
    let uri = format!("file://{}", served.join("web.aci").display());
    let signature = format!("{uri}.asc");
    let mut request = host.request(State::Started);
    request.bundle = Some(host.bundle_signed_by_uri(1, &uri, &signature));
    request.keyring = Some(release.keyring.clone());
    request.require_signature = true;

    let report = host.run(&request).unwrap();
    assert!(report.changed);
    common::assert_downloaded_to_identify(&report.actions, &uri, &image.1);
    // Signed: no "nothing pinned it" warning, nor any other about the
    // image (plan.rs warns only for `computed && signature.is_none()`).
    assert!(
        !report
            .warnings
            .iter()
            .any(|w| w.contains("nothing pinned it") || w.contains("nothing pins it")),
        "{:?}",
        report.warnings
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    // The id recorded is the file's, with the signature it was given.
    let version = &report.pod["versions"]["1"];
    assert_eq!(version["images"], serde_json::json!([image.1]));
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(host.root.join("pods/shop/1/meta.json")).unwrap())
            .unwrap();
    let recorded = &meta["pod"]["images"][0];
    assert_eq!(recorded["id"], serde_json::json!(image.1), "{meta}");
    assert_eq!(recorded["computed"], true, "{meta}");
    assert_eq!(meta["pod"]["units"][0]["image"], serde_json::json!(image.1));
    assert!(
        meta.to_string().contains(&signature),
        "the signature is recorded: {meta}"
    );
    // What was imported is the signed file.
    let rootfs = host.runs_in_image(&image.1);
    assert_eq!(
        fs::read_to_string(rootfs.join("www/index.html")).unwrap(),
        "signed by uri\n"
    );
    assert!(!host.root.join("staging").exists(), "the copy is gone");

    // A rerun is the stored version: nothing downloaded, nothing changed.
    fs::remove_file(served.join("web.aci")).unwrap();
    let again = host.run(&request).unwrap();
    assert!(!again.changed, "{:?}", again.actions);
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
}

/// The signed id-less image by uri whose signature does not verify — a
/// key that is not in `keyring`, or a signature over other bytes — is
/// refused after the download, naming the image, and leaves the store and
/// the unit directory byte for byte as they were (the running version
/// untouched, systemd asked nothing more) and no downloaded copy. A given
/// signature is verified whether or not require_signature is set.
#[test]
fn a_signed_image_by_uri_without_id_that_does_not_verify_is_refused_leaving_nothing() {
    let mut host = Host::new();
    host.deploy("1");
    let release = Signer::new("release");
    let stranger = Signer::new("stranger");
    let image = aci("signed by uri\n");
    let served = host.bundles.join("served");
    fs::create_dir_all(&served).unwrap();
    fs::write(served.join("web.aci"), &image.0).unwrap();
    let uri = format!("file://{}", served.join("web.aci").display());
    // Beside the image: its signature by a stranger, and the release
    // key's signature of other bytes.
    stranger.sign(&served.join("web.aci"), &served.join("web.aci.asc"));
    fs::write(served.join("other.aci"), aci("other bytes\n").0).unwrap();
    release.sign(&served.join("other.aci"), &served.join("other.aci.asc"));
    let before = host.snapshot();
    let calls = host.systemd.calls.clone();

    let mut unnamed = Vec::new();
    let cases = [
        ("a stranger's key, require_signature", "web.aci.asc", true),
        (
            "a signature of other bytes, require_signature",
            "other.aci.asc",
            true,
        ),
        (
            "a stranger's key, no require_signature",
            "web.aci.asc",
            false,
        ),
    ];
    for (n, (case, signed_by, require)) in cases.into_iter().enumerate() {
        let signature = format!("file://{}", served.join(signed_by).display());
        let mut request = host.request(State::Started);
        request.bundle = Some(host.bundle_signed_by_uri(2 + n as u32, &uri, &signature));
        request.keyring = Some(release.keyring.clone());
        request.require_signature = require;
        let failed =
            pod::run(&request, &mut host.systemd, &mut PodmanCli, false, true).expect_err(case);
        let error = ops_core::ansible::error_chain(&failed.error);
        // The signature is named as a file (a file:// URI is a local file).
        assert!(
            error.starts_with(&format!(
                "the signature {} does not verify image ",
                served.join(signed_by).display()
            )),
            "{case}: {error}"
        );
        assert!(
            !failed.report.changed,
            "{case}: {:?}",
            failed.report.actions
        );
        assert_eq!(host.snapshot(), before, "{case}: nothing changed");
        assert!(
            !host.root.join("staging").exists(),
            "{case}: no downloaded copy is left"
        );
        assert_eq!(
            host.systemd.calls, calls,
            "{case}: systemd asked nothing more"
        );
        // The image is named as pod.json names it (it has no id there),
        // not as the run's temporary copy.
        let expected = format!("does not verify image {uri} with the given keyring");
        if !error.contains(&expected) {
            unnamed.push(format!(
                "{case}: {error} (actions: {:?})",
                failed.report.actions
            ));
        }
    }
    assert!(
        unnamed.is_empty(),
        "the refusal does not name the image {uri}:\n{}",
        unnamed.join("\n")
    );
}

/// Check mode of the signed id-less image by uri (over HTTP here, so what
/// is downloaded is seen): it downloads neither the image nor its
/// signature, writes nothing, says the id is unknown until downloaded,
/// and does not warn that nothing pins it (the signature will). The real
/// run after it downloads both and deploys.
#[test]
fn check_mode_of_a_signed_image_by_uri_without_id_downloads_nothing_and_changes_nothing() {
    let mut host = Host::new();
    let release = Signer::new("release");
    let image = aci("signed over http\n");
    let file = host.bundles.join("web.aci");
    fs::create_dir_all(&host.bundles).unwrap();
    fs::write(&file, &image.0).unwrap();
    release.sign(&file, &host.bundles.join("web.aci.asc"));
    let (base, requests) = serve_counted(vec![
        ("/web.aci", image.0.clone()),
        (
            "/web.aci.asc",
            fs::read(host.bundles.join("web.aci.asc")).unwrap(),
        ),
    ]);
    let uri = format!("{base}/web.aci");
    let signature = format!("{base}/web.aci.asc");
    let mut request = host.request(State::Started);
    request.bundle = Some(host.bundle_signed_by_uri(1, &uri, &signature));
    request.keyring = Some(release.keyring.clone());
    request.require_signature = true;

    let planned = pod::run(&request, &mut host.systemd, &mut PodmanCli, true, true).unwrap();
    assert!(planned.changed);
    assert_eq!(
        planned.actions[0],
        format!(
            "download image {uri} and compute its id (pod.json gives none: unknown until \
             downloaded, and check mode downloads nothing), then import it into systemd"
        )
    );
    assert!(
        !planned
            .warnings
            .iter()
            .any(|w| w.contains("nothing pins it") || w.contains("nothing pinned it")),
        "{:?}",
        planned.warnings
    );
    assert!(
        requests.lock().unwrap().is_empty(),
        "check mode downloaded {:?}",
        requests.lock().unwrap()
    );
    assert!(!host.root.exists(), "check mode wrote nothing");
    assert!(!host.unit_dir.exists(), "check mode wrote nothing");
    assert!(host.systemd.calls.is_empty(), "{:?}", host.systemd.calls);

    // The real run downloads the image and its signature, once each.
    let report = host.run(&request).unwrap();
    assert!(report.changed);
    let mut fetched = requests.lock().unwrap().clone();
    fetched.sort();
    assert_eq!(fetched, ["/web.aci", "/web.aci.asc"]);
    assert_eq!(
        report.actions[0],
        format!(
            "download image {uri} to compute its id (pod.json gives none): {}",
            image.1
        )
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(!host.root.join("staging").exists(), "the copy is gone");
}

/// Seed 001: a unit file is "either a path or an URI". Fetched (check
/// mode too), stored with the version, and pinned: a rerun with the same
/// URI uses the stored copy and changes nothing, even when what the URI
/// serves changed.
#[test]
fn a_unit_file_by_uri_is_fetched_stored_and_pinned() {
    let mut host = Host::new();
    let served = host.bundles.join("served");
    fs::create_dir_all(&served).unwrap();
    fs::write(served.join("web.service"), WEB).unwrap();
    let uri = format!("file://{}", served.join("web.service").display());
    let dir = host.bundles.join("unit-by-uri");
    fs::create_dir_all(&dir).unwrap();
    let ops = serde_json::json!({
        "name": "shop",
        "version": 1,
        "systemd-units": [{"unit-file": uri, "start": true}],
    });
    let pod = serde_json::json!({
        "acVersion": "0.8.6",
        "acKind": "PodManifest",
        "annotations": [{"name": "ops", "value": ops.to_string()}],
    });
    fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
    let mut request = host.request(State::Started);
    request.bundle = Some(dir);

    let planned = pod::run(&request, &mut host.systemd, &mut PodmanCli, true, true).unwrap();
    assert!(planned.changed);
    assert!(!host.root.exists(), "check mode wrote nothing");
    let report = host.run(&request).unwrap();
    assert!(report.changed);
    assert_eq!(
        fs::read_to_string(host.root.join("pods/shop/1/units/web.service")).unwrap(),
        WEB
    );
    let installed = fs::read_to_string(host.unit_dir.join("shop-1-web.service")).unwrap();
    assert!(installed.ends_with(WEB), "{installed}");
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(host.root.join("pods/shop/1/meta.json")).unwrap())
            .unwrap();
    assert_eq!(meta["pod"]["units"][0]["uri"], serde_json::json!(uri));

    // Pinned: the URI now serves another file; the stored copy is used.
    fs::write(
        served.join("web.service"),
        "[Service]\nExecStart=/bin/false\n",
    )
    .unwrap();
    let again = host.run(&request).unwrap();
    assert!(!again.changed, "{:?}", again.actions);

    // A unit file larger than 1 MiB is refused, whatever it holds.
    let mut big = request.clone();
    let dir = host.bundles.join("unit-too-big");
    fs::create_dir_all(&dir).unwrap();
    fs::write(served.join("big.service"), vec![b'#'; (1 << 20) + 1]).unwrap();
    let ops = serde_json::json!({
        "name": "big",
        "version": 1,
        "systemd-units": [{"unit-file": format!("file://{}", served.join("big.service").display())}],
    });
    let pod = serde_json::json!({
        "acVersion": "0.8.6",
        "acKind": "PodManifest",
        "annotations": [{"name": "ops", "value": ops.to_string()}],
    });
    fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
    big.bundle = Some(dir);
    let error = host.run(&big).unwrap_err();
    assert!(
        error.ends_with("big.service is larger than 1 MiB: no unit file is; refused"),
        "{error}"
    );
}

#[test]
fn a_pod_image_is_imported_first_run_from_by_its_units_and_removed_when_unused() {
    let mut host = Host::new();
    let image = aci("hello\n");
    let mut request = host.request(State::Started);
    request.bundle = Some(host.bundle_with_image("1", &image));

    let planned = pod::run(&request, &mut host.systemd, &mut PodmanCli, true, true).unwrap();
    assert!(
        planned.actions[0].starts_with(&format!("import image {}", image.1)),
        "{:?}",
        planned.actions
    );
    assert!(planned.diff.iter().any(|d| d["before_header"]
        .as_str()
        .unwrap()
        .starts_with("image sha512-")));
    assert!(!host.root.exists(), "check mode imported nothing");

    let report = host.run(&request).unwrap();
    assert!(report.changed);
    assert!(
        report.actions[0].starts_with("import image"),
        "{:?}",
        report.actions
    );
    let rootfs = host.runs_in_image(&image.1);
    assert_eq!(
        fs::read_to_string(rootfs.join("www/index.html")).unwrap(),
        "hello\n"
    );
    let dropin =
        fs::read_to_string(host.unit_dir.join("shop-1-web.service.d/50-ops.conf")).unwrap();
    assert!(
        dropin.contains(&format!("Environment=\"OPS_IMAGE={}\"\n", rootfs.display())),
        "{dropin}"
    );
    assert!(
        dropin.contains(&format!("ReadOnlyPaths={}\n", rootfs.display())),
        "{dropin}"
    );
    assert!(
        !host.run(&request).unwrap().changed,
        "a rerun imports nothing"
    );

    // Version 2 uses the same image: pruning version 1 keeps it.
    let mut second = host.request(State::Started);
    second.bundle = Some(host.bundle_with_image("2", &image));
    second.keep = Some(1);
    let report = host.run(&second).unwrap();
    assert!(
        !report.actions.iter().any(|a| a.contains("image")),
        "{:?}",
        report.actions
    );
    assert!(rootfs.exists());

    // The image cannot be removed while version 2 uses it.
    let mut remove_image = ops_core::image::Request {
        id: ops_core::bundle::ImageId::parse(&image.1).unwrap(),
        source: None,
        signature: None,
        keyring: None,
        require_signature: false,
        runtime: ops_core::image::Runtime::Systemd,
        state: ops_core::image::State::Absent,
        timeout: Duration::from_secs(5),
        root: host.root.clone(),
        lock_timeout: Duration::from_secs(5),
    };
    let refused =
        ops_core::image::run(&remove_image, &mut ops_core::image::PodmanCli, false, false)
            .unwrap_err()
            .to_string();
    assert!(refused.contains("is used by shop/2"), "{refused}");
    assert!(rootfs.exists());

    // Undeploying the pod removes the image no version uses any more.
    let mut stop = host.request(State::Stopped);
    stop.version = v("2");
    host.run(&stop).unwrap();
    let gone = host.run(&host.request(State::Absent)).unwrap();
    assert!(
        gone.actions
            .iter()
            .any(|a| a.starts_with("remove image") && a.ends_with("(no version uses it)")),
        "{:?}",
        gone.actions
    );
    assert!(!rootfs.exists());
    assert!(!host.root.join("images").exists());
    remove_image.state = ops_core::image::State::Absent;
    assert!(
        !ops_core::image::run(&remove_image, &mut ops_core::image::PodmanCli, false, false)
            .unwrap()
            .changed
    );
}

#[test]
fn env_no_service_could_receive_is_refused_before_anything() {
    let host = Host::new();
    let result =
        ops_core::ansible::run_guarded::<ops_core::modules::pod::OpsPod>(serde_json::json!({
            "name": "shop",
            "root": host.root,
            "unit_dir": host.unit_dir,
            "env": {
                "REPRESENTABLE": "a\r\nExecStartPre=/bin/true\u{1}%n",
                "TOKEN": "secret-before\u{0}secret-after",
                "LONG": "secret".repeat(30_000),
                "A\nB": "x",
                "A=B": "x",
            },
        }));
    assert_eq!(result["failed"], true, "{result}");
    assert!(!result.to_string().contains("secret"), "{result}");
    assert!(host.snapshot().is_empty(), "nothing was written");
    insta::assert_snapshot!(result["msg"].as_str().unwrap());
}

#[test]
fn a_store_path_unit_files_cannot_carry_is_refused_before_anything() {
    let mut host = Host::new();
    host.deploy("1");
    // The same store, moved to a path with a space: the drop-ins would
    // name the environment file through it. (Moved, not linked: a symlink
    // on the way is refused for a reason of its own.)
    let spaced = host.root.with_file_name("my store");
    std::fs::rename(&host.root, &spaced).unwrap();
    host.root.clone_from(&spaced);
    let before = host.snapshot();
    let mut r = host.request(State::Started);
    r.root = spaced;
    r.bundle = Some(host.bundle("2", WEB));
    r.env = Some(BTreeMap::from([("SECRET".to_owned(), "x".to_owned())]));
    let error = host.run(&r).unwrap_err();
    assert!(
        error.contains("environment file \"")
            && error.contains("my store/pods/shop/2/environment\" cannot be written into a systemd unit: it contains ' '"),
        "{error}"
    );
    assert_eq!(host.snapshot(), before, "nothing changed");
}

// ---------------------------------------------------------------- failures
//
// A run that fails after changing the host says the real cause first, then
// what it undid; `actions` are the steps really done (and undone), and
// `current` and `changed` are the host's.

impl Host {
    /// A bundle of pod `shop` from `pod` (name and version filled in) and
    /// `files` beside pod.json; the web units are templated.
    fn custom(
        &self,
        version: &str,
        tag: &str,
        mut pod: serde_json::Value,
        files: &[(&str, &[u8])],
    ) -> PathBuf {
        let dir = self.bundles.join(format!("{version}-{tag}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("web@.service"), WEB).unwrap();
        for (name, bytes) in files {
            fs::write(dir.join(name), bytes).unwrap();
        }
        pod["name"] = "shop".into();
        pod["version"] = version.into();
        if pod.get("containers").is_none() {
            pod["containers"] = serde_json::json!([
                {"name": "web", "replication": 2, "systemd": {"unit-files": ["web@.service"]}}
            ]);
        }
        fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        dir
    }

    /// Run and fail: the message (paths hidden) and the report.
    fn fail(&mut self, request: &Request) -> (String, pod::Report) {
        let failed = pod::run(request, &mut self.systemd, &mut PodmanCli, false, true).unwrap_err();
        let msg = ops_core::ansible::error_chain(&failed.error)
            .replace(&self.bundles.display().to_string(), "<bundles>")
            .replace(&self.root.display().to_string(), "<root>");
        (msg, failed.report)
    }
}

fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, body) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(body.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        // `append_data` refuses `..`; a hostile archive is written raw.
        let name = h.as_old_mut().name.as_mut();
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, body.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

/// A 404 for every request, on loopback.
fn serve_404() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let _ = stream.read(&mut [0u8; 4096]);
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    format!("http://{addr}")
}

/// The host after a failed first deploy: as before, but for the store's
/// lock file and the directory it needed (they stay when the store
/// existed before the run, or holds anything else).
fn but_the_lock(host: &Host) -> BTreeMap<PathBuf, common::Entry> {
    let mut now = host.snapshot();
    now.remove(&host.root.join("lock"));
    if !now
        .keys()
        .any(|p| p != &host.root && p.starts_with(&host.root))
    {
        // Only the store directory the lock needed.
        now.remove(&host.root);
    }
    now
}

#[test]
fn a_first_deploy_whose_unit_fails_is_undone_and_says_why_every_time() {
    let mut host = Host::new();
    fs::create_dir_all(&host.unit_dir).unwrap();
    let before = host.snapshot();
    host.systemd.failing.insert("shop-1-web@2.service".into());
    let mut request = host.request(State::Started);
    request.bundle = Some(host.bundle("1", WEB));
    let (msg, report) = host.fail(&request);
    assert!(
        msg.starts_with("version 1 of pod shop did not come up: shop-1-web@2.service is failed"),
        "{msg}"
    );
    assert!(!msg.contains("not loaded"), "{msg}");
    insta::assert_snapshot!("first deploy, unit fails: msg", msg);
    insta::assert_json_snapshot!("first deploy, unit fails: actions", report.actions);
    assert!(!report.changed, "everything was undone");
    assert_eq!((report.current, report.previous), (None, None));
    assert_eq!(report.pod, serde_json::Value::Null);
    assert_eq!(
        but_the_lock(&host),
        before,
        "store and unit directory as before"
    );
    assert!(
        host.systemd.running().is_empty(),
        "{:?}",
        host.systemd.active
    );
    assert!(host.systemd.active.is_empty(), "no failed unit is left");

    let (again, report) = host.fail(&request);
    assert_eq!(
        again, msg,
        "a rerun fails the same way, for the same reason"
    );
    assert!(!report.changed);
    assert_eq!(but_the_lock(&host), before);
}

#[test]
fn a_first_deploy_whose_image_cannot_be_had_is_undone_and_says_why() {
    let mut host = Host::new();
    fs::create_dir_all(&host.unit_dir).unwrap();
    let before = host.snapshot();
    let good = aci("hello\n");
    let (mut damaged, damaged_id) = aci("damaged\n");
    let end = damaged.len() - 1100;
    damaged[end] ^= 0xff;
    let base = serve_404();
    let container = |name: &str, image: &str| serde_json::json!({"name": name, "image": &image[..7 + 32], "systemd": {"unit-files": [format!("{name}.service")]}});
    let (_, other_id) = aci("other\n");
    let mut messages = BTreeMap::new();
    for (case, second) in [
        (
            "404",
            serde_json::json!({"id": other_id, "uri": format!("{base}/other.aci")}),
        ),
        (
            "damaged file",
            serde_json::json!({"id": damaged_id, "path": "damaged.aci"}),
        ),
    ] {
        let second_id = second["id"].as_str().unwrap().to_owned();
        let pod = serde_json::json!({
            "containers": [container("web", &good.1), container("api", &second_id)],
            "images": [{"id": good.1, "path": "good.aci"}, second],
        });
        let mut request = host.request(State::Started);
        request.bundle = Some(host.custom(
            "1",
            case,
            pod,
            &[
                ("good.aci", &good.0),
                ("damaged.aci", &damaged),
                ("web.service", WEB.as_bytes()),
                ("api.service", WEB.as_bytes()),
            ],
        ));
        let (msg, report) = host.fail(&request);
        let msg = msg.replace(&base, "<server>");
        let (cause, undo) = msg.split_once('\n').unwrap();
        assert!(
            cause.contains("404") || cause.contains("is not image"),
            "the cause comes first: {msg}"
        );
        assert!(undo.contains("; undone: remove image sha512-"), "{msg}");
        assert!(!msg.contains("not loaded"), "{msg}");
        assert!(
            !report.changed,
            "{case}: the imported image was removed again"
        );
        assert_eq!(report.current, None);
        assert_eq!(
            report
                .actions
                .iter()
                .filter(|a| a.starts_with("undo: remove image"))
                .count(),
            1,
            "{case}: {:?}",
            report.actions
        );
        assert_eq!(but_the_lock(&host), before, "{case}");
        let (again, _) = host.fail(&request);
        assert_eq!(
            again.replace(&base, "<server>"),
            msg,
            "{case}: the rerun says the same"
        );
        // Image ids differ with each build of the archives.
        let mut hidden = String::new();
        let mut rest = msg.as_str();
        while let Some(at) = rest.find("sha512-") {
            hidden.push_str(&rest[..at + 7]);
            hidden.push_str("<id>");
            rest = rest[at + 7..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
        }
        hidden.push_str(rest);
        messages.insert(case, hidden);
    }
    insta::assert_json_snapshot!(messages);
}

#[test]
fn a_first_deploy_whose_volume_archive_is_refused_changes_nothing() {
    let mut host = Host::new();
    fs::create_dir_all(&host.unit_dir).unwrap();
    let before = host.snapshot();
    let pod = serde_json::json!({
        "volumes": [{"name": "data", "path": "/srv/data", "data": "data.tar"}],
    });
    let bad = tar_of(&[("ok", "x"), ("../../escape", "x")]);
    let mut request = host.request(State::Started);
    request.bundle = Some(host.custom("1", "bad-volume", pod, &[("data.tar", &bad)]));
    let (msg, report) = host.fail(&request);
    insta::assert_snapshot!("first deploy, volume refused: msg", msg);
    assert!(
        msg.starts_with("volume data of pod shop version 1"),
        "{msg}"
    );
    assert!(
        report.actions.is_empty(),
        "nothing was done: {:?}",
        report.actions
    );
    assert!(!report.changed);
    assert_eq!(but_the_lock(&host), before);
    assert_eq!(host.fail(&request).0, msg);
}

#[test]
fn a_switch_whose_volume_fails_reports_what_it_did_and_the_real_current() {
    let mut host = Host::new();
    let ports = serde_json::json!({"http": "assign"});
    let mut first = host.request(State::Started);
    first.bundle = Some(host.custom("1", "ports", serde_json::json!({"ports": ports}), &[]));
    host.run(&first).unwrap();
    let before = host.snapshot();
    let running = host.systemd.running();
    let calls = host.systemd.calls.len();

    // Version 2 holds the same ports (version 1 would stop first to free
    // them) and its second volume's archive is refused.
    let good = tar_of(&[("ok", "x")]);
    let bad = tar_of(&[("ok", "x"), ("../../escape", "x")]);
    let pod = serde_json::json!({
        "ports": ports,
        "volumes": [
            {"name": "conf", "path": "/etc/app", "data": "good.tar"},
            {"name": "data", "path": "/srv/data", "data": "bad.tar"},
        ],
    });
    let mut request = host.request(State::Started);
    request.bundle = Some(host.custom(
        "2",
        "bad-volume",
        pod,
        &[("good.tar", &good), ("bad.tar", &bad)],
    ));
    let (msg, report) = host.fail(&request);
    insta::assert_snapshot!("switch, volume refused: msg", msg);
    assert!(
        msg.starts_with("volume data of pod shop version 2"),
        "{msg}"
    );
    insta::assert_json_snapshot!("switch, volume refused: actions", report.actions);
    assert_eq!(report.current, v("1"), "version 1 stayed current");
    assert_eq!(report.previous, None);
    assert_eq!(report.pod["current"], "1");
    assert!(!report.changed);
    assert_eq!(host.snapshot(), before);
    assert_eq!(host.systemd.running(), running);
    assert!(
        host.systemd.calls[calls..]
            .iter()
            .all(|c| !c.starts_with("st")),
        "version 1 was not touched: {:?}",
        &host.systemd.calls[calls..]
    );
}

#[test]
fn a_rolled_back_switch_starts_again_what_it_stopped_for_its_ports() {
    let mut host = Host::new();
    let ports = serde_json::json!({"ports": {"http": "assign"}});
    let mut first = host.request(State::Started);
    first.bundle = Some(host.custom("1", "ports", ports.clone(), &[]));
    host.run(&first).unwrap();
    let before = host.snapshot();
    let running = host.systemd.running();
    host.systemd.failing.insert("shop-2-web@1.service".into());
    let mut request = host.request(State::Started);
    request.bundle = Some(host.custom("2", "ports", ports, &[]));
    let (msg, report) = host.fail(&request);
    assert!(
        msg.starts_with("version 2 of pod shop did not come up"),
        "{msg}"
    );
    insta::assert_json_snapshot!("switch, unit fails: actions", report.actions);
    assert_eq!((report.current, report.changed), (v("1"), false));
    assert_eq!(host.snapshot(), before);
    assert_eq!(host.systemd.running(), running);
}

#[test]
fn an_upgrade_without_env_carries_the_secret_environment_over() {
    use std::os::unix::fs::PermissionsExt;
    let mut host = Host::new();
    let mut first = host.request(State::Started);
    first.bundle = Some(host.bundle("1", WEB));
    first.env = Some(BTreeMap::from([
        ("TOKEN".to_owned(), "s3cr3t-value".to_owned()),
        ("DB_PASSWORD".to_owned(), "hunter2-value".to_owned()),
    ]));
    host.run(&first).unwrap();
    let env_of = |h: &Host, v: &str| fs::read(h.root.join(format!("pods/shop/{v}/environment")));
    let secret = env_of(&host, "1").unwrap();
    let carried = "write the environment file of version 2, carried over from version 1 \
                   (env not given): DB_PASSWORD, TOKEN (values hidden)";
    let shows_no_secret = |report: &pod::Report| {
        let shown = format!(
            "{:?} {} {} {:?}",
            report.actions,
            serde_json::Value::Array(report.diff.clone()),
            report.pod,
            report.warnings
        );
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("hunter2"),
            "{shown}"
        );
    };

    // Version 2 without env: check mode says so and writes nothing.
    let mut second = host.request(State::Started);
    second.bundle = Some(host.bundle("2", WEB));
    let before = host.snapshot();
    let planned = pod::run(&second, &mut host.systemd, &mut PodmanCli, true, true).unwrap();
    assert!(
        planned.actions.iter().any(|a| a == carried),
        "{:?}",
        planned.actions
    );
    assert!(
        planned.diff[0]["after"].as_str().unwrap().contains(
            "environment of 2: DB_PASSWORD, TOKEN (values hidden, carried over from version 1)"
        ),
        "{}",
        planned.diff[0]
    );
    shows_no_secret(&planned);
    assert_eq!(host.snapshot(), before, "check mode wrote nothing");

    let report = host.run(&second).unwrap();
    assert!(
        report.actions.iter().any(|a| a == carried),
        "{:?}",
        report.actions
    );
    shows_no_secret(&report);
    assert_eq!(
        env_of(&host, "2").unwrap(),
        secret,
        "the values arrive as they were"
    );
    let path = host.root.join("pods/shop/2/environment");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let dropin =
        fs::read_to_string(host.unit_dir.join("shop-2-web@1.service.d/50-ops.conf")).unwrap();
    assert!(
        dropin.contains(&format!("EnvironmentFile={}", path.display())),
        "{dropin}"
    );
    assert!(
        !host.run(&second).unwrap().changed,
        "the rerun changes nothing"
    );

    // Back to version 1: it keeps its own; nothing is carried.
    let mut back = host.request(State::Started);
    back.version = v("1");
    let report = host.run(&back).unwrap();
    assert!(
        !report.actions.iter().any(|a| a.contains("environment")),
        "{:?}",
        report.actions
    );
    assert_eq!(env_of(&host, "1").unwrap(), secret);

    // `env: {}` asks for no secret environment.
    let mut third = host.request(State::Started);
    third.bundle = Some(host.bundle("3", WEB));
    third.env = Some(BTreeMap::new());
    let report = host.run(&third).unwrap();
    assert!(
        !report.actions.iter().any(|a| a.contains("environment")),
        "{:?}",
        report.actions
    );
    assert!(
        env_of(&host, "3").is_err(),
        "version 3 has no environment file"
    );
    assert!(!host.run(&third).unwrap().changed);
}

#[test]
fn an_undo_that_fails_says_what_it_undid_and_what_stays_changed() {
    let mut host = Host::new();
    host.deploy("1");
    host.systemd.failing.insert("shop-2-web@1.service".into());
    // The run's own reload works; the undo's does not.
    host.systemd.reloads_before_failure = Some(1);
    let mut request = host.request(State::Started);
    request.bundle = Some(host.bundle("2", WEB));
    let failed = pod::run(&request, &mut host.systemd, &mut PodmanCli, false, false).unwrap_err();
    assert!(
        matches!(failed.error, pod::PodError::AfterChanges(_)),
        "not a refusal: {:?}",
        failed.error
    );
    let msg = ops_core::ansible::error_chain(&failed.error);
    insta::assert_snapshot!("undo fails: msg", msg);
    assert!(
        msg.starts_with("version 2 of pod shop did not come up"),
        "{msg}"
    );
    assert!(failed.report.changed, "something stays changed");
    assert_eq!(failed.report.current, v("1"), "the pointer was put back");
    assert!(
        host.root.join("pods/shop/2").exists(),
        "version 2 stays, as said"
    );
}

/// A symlink planted where ops writes (in the store or the unit directory)
/// is refused before the first write, naming it, whichever step of the
/// run would meet it: the host (and where the link leads) stays as it was.
#[test]
fn a_planted_symlink_is_refused_before_anything_is_written() {
    // Where to plant (relative to the store or the unit directory), and
    // whether version 1 is deployed first (then the run deploys version 2
    // over it; else it is a first deploy).
    let plants: &[(&str, bool, bool)] = &[
        ("pods/shop", true, true),
        ("pods/shop/1/units", true, true),
        ("pods/shop/1/meta.json", true, true),
        ("ports", true, true),
        ("staging", true, true),
        ("pods", true, false),
        ("lock", true, false),
        ("shop-2-web@1.service.d", false, true),
        ("ops-shop.target", false, true),
        ("multi-user.target.wants", false, false),
    ];
    let mut messages = Vec::new();
    for (plant, in_store, over_1) in plants {
        let mut host = Host::new();
        if *over_1 {
            host.deploy("1");
        } else {
            fs::create_dir_all(&host.root).unwrap();
            fs::create_dir_all(&host.unit_dir).unwrap();
        }
        let elsewhere = host.root.with_file_name("elsewhere");
        let at = if *in_store {
            host.root.join(plant)
        } else {
            host.unit_dir.join(plant)
        };
        // The planted link leads to a copy of what was there, so a run
        // that followed it would find what it expects.
        if at.exists() {
            fs::rename(&at, &elsewhere).unwrap();
        } else {
            fs::create_dir(&elsewhere).unwrap();
        }
        std::os::unix::fs::symlink(&elsewhere, &at).unwrap();
        let before = host.snapshot();
        let outside = common::picture(&[&elsewhere]);
        let calls = host.systemd.calls.len();
        let mut request = host.request(State::Started);
        request.bundle = Some(host.bundle("2", WEB));
        let failed =
            pod::run(&request, &mut host.systemd, &mut PodmanCli, true, true).expect_err(plant);
        let checked = ops_core::ansible::error_chain(&failed.error);
        // A link on the way to a record the run reads is refused as it is
        // read (not followed: crate::atomic::open_own), before the pod is.
        let refused_on_read = ["pods/shop", "pods/shop/1/units", "pods/shop/1/meta.json"];
        if *over_1 && !refused_on_read.contains(plant) && *plant != "ops-shop.target" {
            // The refusal reports the pod as it is.
            assert_eq!(failed.report.current, v("1"), "{plant}");
        }
        let error = host.run(&request).expect_err(plant);
        assert_eq!(
            checked, error,
            "{plant}: check mode refuses as the run does"
        );
        assert!(
            error.contains(&at.display().to_string()),
            "{plant}: {error}"
        );
        assert_eq!(host.snapshot(), before, "{plant}: nothing changed");
        assert_eq!(
            common::picture(&[&elsewhere]),
            outside,
            "{plant}: nothing written there"
        );
        assert_eq!(
            host.systemd.calls.len(),
            calls,
            "{plant}: systemd was not asked to change anything: {:?}",
            &host.systemd.calls[calls..]
        );
        let shown = error.replace(&host._dir.path().display().to_string(), "<tmp>");
        messages.push(format!("{plant}: {shown}"));
    }
    insta::assert_snapshot!(messages.join("\n"));
}

/// The largest numbers the options accept run a whole deploy and a failed
/// one without overflowing a deadline (they did panic, after the deploy).
#[test]
fn the_largest_timeouts_deploy_and_fail_without_overflow() {
    let week = Duration::from_secs(ops_core::ansible::args::MAX_SECONDS as u64);
    let mut host = Host::new();
    let mut request = host.request(State::Started);
    request.bundle = Some(host.bundle("1", WEB));
    request.start_timeout = week;
    request.lock_timeout = week;
    request.download_timeout = week;
    request.min_up_time = Duration::ZERO;
    assert!(host.run(&request).unwrap().changed);
    host.systemd
        .failing
        .insert("shop-2-web@1.service".to_owned());
    request.bundle = Some(host.bundle("2", WEB));
    let error = host.run(&request).unwrap_err();
    assert!(error.contains("rolled back to version 1"), "{error}");
}

#[test]
fn a_fifo_or_directory_planted_in_the_store_is_refused_at_once_naming_it() {
    // Another pod's record or a port record that is not a regular file:
    // read, it would block every run (and every run waiting for the lock)
    // or fail without the pod in the result.
    for (plant, fifo) in [
        ("pods/cart/1/meta.json", true),
        ("ports/41451", true),
        ("ports/41452", false),
    ] {
        for check_mode in [true, false] {
            let mut host = Host::new();
            host.deploy("1");
            let at = host.root.join(plant);
            fs::create_dir_all(at.parent().unwrap()).unwrap();
            if fifo {
                nix::unistd::mkfifo(&at, nix::sys::stat::Mode::S_IRWXU).unwrap();
            } else {
                fs::create_dir(&at).unwrap();
            }
            let request = host.request(State::Stopped);
            let (done, result) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let run = pod::run(
                    &request,
                    &mut host.systemd,
                    &mut PodmanCli,
                    check_mode,
                    false,
                );
                let _ = done.send(run.map(drop).map_err(|failed| {
                    let msg = ops_core::ansible::error_chain(&failed.error);
                    (msg, failed.report.name, failed.report.current)
                }));
            });
            let (msg, name, current) = result
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("{plant}: the run blocked"))
                .expect_err(plant);
            let what = if fifo { "a FIFO" } else { "a directory" };
            assert!(
                msg.contains(plant) && msg.contains(&format!("not a regular file ({what})")),
                "{plant}: {msg}"
            );
            // The pod as it is, as every other refusal reports it.
            assert_eq!(name.as_ref().map(|n| n.as_str()), Some("shop"), "{plant}");
            assert_eq!(current.as_ref().map(|v| v.as_str()), Some("1"), "{plant}");
        }
    }
}

/// Seed 004: one bundle rolled out as two named deployments. Each is a pod
/// of its own (store, units named after it, target, slice, environment,
/// ports); references between its units follow its name; removing one
/// leaves the other as it was.
#[test]
fn two_deployments_of_one_bundle_run_side_by_side() {
    let mut host = Host::new();
    let named = |host: &Host, name: &str, version: &str, secret: &str| {
        let mut r = host.request(State::Started);
        r.name = Some(PodName::parse(name).unwrap());
        r.bundle = Some(host.bundle(version, WEB));
        r.env = Some([("STAGE".to_owned(), secret.to_owned())].into());
        r
    };
    let staging = named(&host, "shop-staging", "1", "s");
    let production = named(&host, "shop-production", "1", "p");
    let s = host.run(&staging).unwrap();
    let p = host.run(&production).unwrap();
    assert!(s.changed && p.changed);
    assert_eq!(s.pod["bundle_name"], "shop");
    assert_eq!(p.pod["versions"]["1"]["bundle_name"], "shop");
    assert_ne!(s.ports[0]["port"], p.ports[0]["port"]);
    let dropin = fs::read_to_string(
        host.unit_dir
            .join("shop-production-1-helper.service.d/50-ops.conf"),
    )
    .unwrap();
    for line in [
        "Environment=\"POD_NAME=shop-production\"",
        "Environment=\"POD_BUNDLE=shop\"",
        "Slice=ops-shop\\x2dproduction.slice",
    ] {
        assert!(dropin.lines().any(|l| l == line), "{line}:\n{dropin}");
    }
    let helper = fs::read_to_string(host.unit_dir.join("shop-staging-1-helper.service")).unwrap();
    assert!(
        helper.contains("After=shop-staging-1-web@1.service"),
        "{helper}"
    );
    assert!(host.root.join("pods/shop-staging/1/environment").exists());
    assert!(host
        .root
        .join("pods/shop-production/1/environment")
        .exists());
    assert!(
        !host.run(&staging).unwrap().changed,
        "a rerun changes nothing"
    );

    let before = common::picture(&[&host.root.join("pods/shop-production")]);
    let mut gone = host.request(State::Absent);
    gone.name = Some(PodName::parse("shop-staging").unwrap());
    host.run(&gone).unwrap();
    assert!(!host.root.join("pods/shop-staging").exists());
    assert!(!host.unit_dir.join("ops-shop-staging.target").exists());
    assert!(host.unit_dir.join("ops-shop-production.target").exists());
    assert_eq!(
        common::picture(&[&host.root.join("pods/shop-production")]),
        before
    );
    assert!(!host.run(&production).unwrap().changed);
}

/// A FIFO, or a link to one, where systemd loads one of the pod's units:
/// systemd would open it when asked about the unit and wait on it for
/// good, and every later systemctl with it. The run is refused before
/// systemd is asked anything, naming the path; a mask (a link to
/// /dev/null) is left alone.
#[test]
fn a_fifo_where_systemd_loads_a_unit_is_refused_before_systemd_is_asked() {
    let mut messages = Vec::new();
    for (plant, link) in [
        ("shop-1-web@.service", true),
        ("shop-1-web@1.service.d/50-ops.conf", true),
        ("shop-1-web@2.service.d/99-extra.conf", false),
    ] {
        for check_mode in [true, false] {
            let mut host = Host::new();
            host.deploy("1");
            let at = host.unit_dir.join(plant);
            let fifo = host.root.with_file_name("fifo");
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
            let _ = fs::remove_file(&at);
            if link {
                std::os::unix::fs::symlink(&fifo, &at).unwrap();
            } else {
                nix::unistd::mkfifo(&at, nix::sys::stat::Mode::S_IRWXU).unwrap();
            }
            let calls = host.systemd.calls.len();
            let request = host.request(State::Stopped);
            let failed = pod::run(
                &request,
                &mut host.systemd,
                &mut PodmanCli,
                check_mode,
                false,
            )
            .expect_err(plant);
            let msg = ops_core::ansible::error_chain(&failed.error);
            assert!(msg.contains(&at.display().to_string()), "{plant}: {msg}");
            assert_eq!(
                host.systemd.calls.len(),
                calls,
                "{plant}: systemd was asked"
            );
            if check_mode {
                let shown = msg.replace(&host._dir.path().display().to_string(), "<tmp>");
                messages.push(format!("{plant}: {shown}"));
            }
        }
    }
    insta::assert_snapshot!(messages.join("\n"));

    // A masked unit is systemd's own: not refused for this (ops says,
    // as before, that it does not manage the file).
    let mut host = Host::new();
    host.deploy("1");
    let at = host.unit_dir.join("shop-1-web@.service");
    fs::remove_file(&at).unwrap();
    std::os::unix::fs::symlink("/dev/null", &at).unwrap();
    let request = host.request(State::Stopped);
    let failed = pod::run(&request, &mut host.systemd, &mut PodmanCli, true, false).unwrap_err();
    let msg = ops_core::ansible::error_chain(&failed.error);
    assert!(msg.contains("is not managed by ops"), "{msg}");
}

/// What a run killed half-way leaves: a temporary (`.<name>.ops-tmp.<pid>.<n>`,
/// here of pid 99999999, which no process has) beside each file it was
/// replacing. Issue 19's crash tests found that one beside `current` made
/// every later run refuse the pod ("a symlink that ops did not make"), and
/// that nothing ever removed any of them.
#[test]
fn what_a_killed_run_left_half_written_is_swept_and_the_rerun_converges() {
    let mut host = Host::new();
    host.deploy("1");
    let pod_dir = host.root.join("pods/shop");
    let dead = ".ops-tmp.99999999";
    let left = [
        pod_dir.join(format!(".current{dead}.7")),
        host.root.join(format!(".lock.holder{dead}.0")),
        host.root.join(format!("ports/.30000{dead}.9")),
        host.unit_dir.join(format!(".shop-2-web@.service{dead}.3")),
        host.unit_dir
            .join(format!("shop-1-web@1.service.d/.50-ops.conf{dead}.4")),
    ];
    std::os::unix::fs::symlink("2", &left[0]).unwrap();
    for file in &left[1..] {
        fs::write(file, "half").unwrap();
    }
    // A live run's temporary (this process's) is not touched.
    let live = host
        .unit_dir
        .join(format!(".other.service.ops-tmp.{}.0", std::process::id()));
    fs::write(&live, "being written").unwrap();

    let report = host.deploy("2");
    assert_eq!(report.current, v("2"));
    for file in &left {
        assert!(
            fs::symlink_metadata(file).is_err(),
            "{} is swept",
            file.display()
        );
    }
    assert!(live.exists());
    assert!(
        !host.deploy("2").changed,
        "the second rerun changes nothing"
    );

    // Killed between removing a drop-in and its directory: the empty
    // directory is no longer seen as the pod's, and was left for good. A
    // run with nothing else to do sweeps it (and a stale temporary), still
    // unchanged.
    // (Of a version pruned since.)
    let empty = host.unit_dir.join("shop-0-web@2.service.d");
    fs::create_dir(&empty).unwrap();
    let temp = host.unit_dir.join(format!(".shop-2-web@.service{dead}.8"));
    fs::write(&temp, "half").unwrap();
    assert!(!host.deploy("2").changed);
    assert!(!empty.exists() && !temp.exists());
}
