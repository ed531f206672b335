//! A bundle checked without a host (`pod::validate`, ops_pod --validate):
//! what it finds is what ops_pod deploys (the digest, the images' ids, the
//! volumes), every problem is named by pod.json's field, and the recording
//! fake stands in for systemd-analyze.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use ops_core::bundle::BundleError;
use ops_core::image::{PodmanCli, Runtime};
use ops_core::pod::validate::{validate, Checks, Validated};
use ops_core::pod::{self, State};
use ops_core::systemd::fake::Recording;
use ops_core::systemd::Systemd;
use sha2::Digest;

const WEB: &str = "[Service]\nExecStart=/bin/busybox httpd -f -p ${PORT} -h /www\n";
const HELPER: &str = "[Service]\nExecStart=/bin/true\n";

/// A tar of `files` (path, contents), as the ACI and the volume are.
fn tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, body) in files {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(body.len() as u64);
        b.append_data(&mut h, path, body.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn aci() -> (Vec<u8>, String) {
    let bytes = tar(&[
        (
            "manifest",
            r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"t/web"}"#,
        ),
        ("rootfs/bin/busybox", "not really busybox"),
    ]);
    let hex: String = sha2::Sha512::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (bytes, format!("sha512-{hex}"))
}

/// Bundle `shop-1` in `dir`: a templated unit in an ACI (its id given, or
/// left out), a helper on the host, a read-only volume, a port.
fn bundle(dir: &Path, with_id: bool) -> (PathBuf, String) {
    let bundle = dir.join("shop-1");
    fs::create_dir_all(bundle.join("units")).unwrap();
    fs::write(bundle.join("units/web@.service"), WEB).unwrap();
    fs::write(bundle.join("units/helper.service"), HELPER).unwrap();
    let (image, id) = aci();
    fs::write(bundle.join("web.aci"), image).unwrap();
    fs::write(
        bundle.join("www.tar"),
        tar(&[("index.html", "hello\n"), ("about.html", "ops\n")]),
    )
    .unwrap();
    let mut entry = serde_json::json!({"path": "web.aci"});
    if with_id {
        entry["id"] = id.clone().into();
    }
    let pod = serde_json::json!({
        "$schema": "../pod.schema.json",
        "name": "shop",
        "version": 1,
        "containers": [
            {"name": "web", "replication": 2, "image": "web.aci",
             "systemd": {"unit-files": ["units/web@.service"]}},
            {"name": "helper", "systemd": {"unit-files": ["units/helper.service"]}},
        ],
        "images": [entry],
        "volumes": [{"name": "www", "path": "/www", "read-only": true, "data": "www.tar"}],
        "ports": {"http": "assign"},
    });
    fs::write(bundle.join("pod.json"), pod.to_string()).unwrap();
    (bundle, id)
}

fn checks() -> Checks {
    Checks {
        keyring: None,
        runtime: Runtime::Systemd,
        root: PathBuf::from("/var/lib/ops"),
        download_timeout: Duration::from_secs(5),
    }
}

fn validated(path: &Path, systemd: &mut Recording) -> Result<Validated, BundleError> {
    let verifier: &mut dyn Systemd = systemd;
    validate(path, &checks(), Ok(verifier))
}

/// The bundle deployed with ops_pod (the fake systemd): its record.
fn deployed(host: &mut common::Host, bundle: &Path) -> (pod::Report, serde_json::Value) {
    let mut request = host.pod_request("shop", State::Started);
    request.name = None;
    request.bundle = Some(bundle.to_owned());
    request.min_up_time = Duration::ZERO;
    let report = pod::run(&request, &mut host.systemd, &mut PodmanCli, false, false)
        .map_err(|f| ops_core::ansible::error_chain(&f.error))
        .unwrap();
    let version = report.pod["versions"]["1"].clone();
    (report, version)
}

#[test]
fn what_a_valid_bundle_holds_is_what_ops_pod_deploys() {
    for with_id in [true, false] {
        let mut host = common::Host::new();
        let (bundle, id) = bundle(host.dir.path(), with_id);
        let found = validated(&bundle, &mut Recording::default()).unwrap();
        let (report, version) = deployed(&mut host, &bundle);

        assert_eq!(
            found.digest.as_deref(),
            version["digest"].as_str(),
            "{with_id}"
        );
        assert_eq!((found.name.as_str(), found.version.as_str()), ("shop", "1"));
        assert_eq!(found.images.len(), 1);
        let image = &found.images[0];
        assert_eq!(image.id.as_deref(), Some(id.as_str()));
        assert_eq!(image.format, Some("aci"));
        assert_eq!(image.computed, !with_id);
        assert_eq!(version["images"], serde_json::json!([id]));
        let units: Vec<(&str, &[String], Option<&str>)> = (found.units.iter())
            .map(|u| (u.name.as_str(), u.instances.as_slice(), u.image.as_deref()))
            .collect();
        let two = ["1".to_owned(), "2".to_owned()];
        assert_eq!(
            units,
            [
                ("web@.service", &two[..], Some(id.as_str())),
                ("helper.service", &[][..], None)
            ]
        );
        assert_eq!(found.units[0].file, "units/web@.service");
        let volume = &found.volumes[0];
        let facts = &version["volumes"][0];
        assert_eq!(volume.sha256.as_deref(), facts["digest"].as_str());
        assert_eq!(volume.entries, facts["entries"].as_u64());
        assert_eq!(volume.bytes, facts["bytes"].as_u64());
        assert_eq!(volume.format, Some("tar"));
        assert_eq!(found.ports.len(), 1);
        assert_eq!(found.unit_files, "verified with systemd-analyze");
        // ops_pod warns of the computed id; so does the check, in its words.
        assert_eq!(report.warnings.is_empty(), with_id);
        assert_eq!(
            found.warnings.len(),
            usize::from(!with_id),
            "{:?}",
            found.warnings
        );
    }
}

#[test]
fn every_problem_is_named_by_pod_json_and_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, id) = bundle(dir.path(), true);
    let wrong = format!("sha512-00000000{}", &id[15..]);
    let text = fs::read_to_string(bundle.join("pod.json")).unwrap();
    fs::write(bundle.join("pod.json"), text.replace(&id, &wrong)).unwrap();
    let volume = fs::read(bundle.join("www.tar")).unwrap();
    fs::write(bundle.join("www.tar"), &volume[..700]).unwrap();
    // systemd-analyze's complaints name the unit as ops installs it.
    let mut systemd = Recording::default();
    systemd.invalid.insert(
        "shop-1-helper.service".to_owned(),
        "shop-1-helper.service: Unknown key name 'ExecStrat' in section 'Service', ignoring."
            .to_owned(),
    );
    let before = common::picture(&[dir.path()]);
    let error = validated(&bundle, &mut systemd).unwrap_err();
    assert_eq!(common::picture(&[dir.path()]), before, "nothing written");
    let message = ops_core::ansible::error_chain(&error)
        .replace(&dir.path().display().to_string(), "<tmp>")
        .replace(&id[7 + 8..], "<rest of the id>");
    insta::assert_snapshot!(message);
}

#[test]
fn a_program_this_machine_lacks_is_a_warning_for_a_host_unit_and_nothing_for_an_image_unit() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, _) = bundle(dir.path(), true);
    let mut systemd = Recording::default();
    let missing = |unit: &str, program: &str| {
        format!("{unit}: Command {program} is not executable: No such file or directory")
    };
    // Both at once: the fake answers for the first file it knows.
    systemd.invalid.insert(
        "shop-1-helper.service".to_owned(),
        format!(
            "{}\n{}",
            missing("shop-1-web@i.service", "/bin/busybox"),
            missing("shop-1-helper.service", "/usr/local/bin/helper")
        ),
    );
    let found = validated(&bundle, &mut systemd).unwrap();
    assert_eq!(
        found.warnings,
        [format!(
            "containers[1].systemd.unit-files[0]: systemd-analyze verify: {} (on this machine: \
             ops_pod refuses the version on a host where it is so too)",
            missing("shop-1-helper.service", "/usr/local/bin/helper")
        )]
    );
}

#[test]
fn without_a_verifier_the_unit_files_are_not_verified_and_it_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, _) = bundle(dir.path(), true);
    let found = validate(
        &bundle,
        &checks(),
        Err("no systemd-analyze here".to_owned()),
    )
    .unwrap();
    assert_eq!(found.unit_files, "not verified: no systemd-analyze here");
}
