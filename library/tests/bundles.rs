//! The bundle model against the fixtures under `tests/fixtures/`: both seed
//! shapes, a pair that must normalise to the same model, the bad-bundle
//! corpus with its exact messages, and the published JSON Schema.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ops_core::bundle::{self, BundleError, Shape};

/// Fixture paths relative to the crate, so messages are the same on every
/// machine.
fn fixtures() -> PathBuf {
    Path::new("../tests/fixtures").to_path_buf()
}

fn load(relative: &str) -> bundle::Bundle {
    bundle::load(&fixtures().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

#[test]
fn the_native_shape_of_seed_000_parses() {
    let bundle = load("bundles/native-seed000");
    assert_eq!(bundle.shape, Shape::Native);
    insta::assert_json_snapshot!(bundle.pod);
}

#[test]
fn the_appc_shape_of_seed_001_parses() {
    let bundle = load("bundles/appc-seed001/pod.json");
    assert_eq!(bundle.shape, Shape::Appc);
    insta::assert_json_snapshot!(bundle.pod);
}

#[test]
fn both_shapes_normalise_to_the_same_model() {
    let native = load("bundles/pair/native");
    let appc = load("bundles/pair/appc");
    assert_eq!(native.shape, Shape::Native);
    assert_eq!(appc.shape, Shape::Appc);
    assert_ne!(native.dir, appc.dir);
    assert_eq!(native.pod, appc.pod);
    // The pair is not trivially equal: it exercises every part of the model.
    let pod = &native.pod;
    assert!(!pod.units.is_empty() && !pod.images.is_empty() && !pod.volumes.is_empty());
    assert!(!pod.ports.is_empty() && !pod.environment.is_empty());
    assert_eq!(pod.units[0].instances, ["1", "2", "3"]);
}

/// Seed 000's own example: `"replication": [8080, 8081, 8082]` with the
/// plain `example.service`; seed 001's `instances` on a plain unit alike.
/// The unit is installed as its template, the plain name recorded.
#[test]
fn a_plain_unit_given_instances_is_installed_as_its_template() {
    let native = load("bundles/plain-replication/native");
    let appc = load("bundles/plain-replication/appc");
    assert_eq!(native.pod, appc.pod);
    let unit = &native.pod.units[0];
    assert_eq!(unit.name.as_str(), "example@.service");
    assert_eq!(
        unit.shipped_as.as_ref().map(|n| n.as_str()),
        Some("example.service")
    );
    assert_eq!(unit.file, Path::new("example.service"));
    assert_eq!(unit.instances, ["8080", "8081", "8082"]);
    assert!(unit.instance_ports);
    // A container with a template keeps replicating it only.
    let seed = load("bundles/native-seed000");
    assert!(seed.pod.units.iter().all(|u| u.shipped_as.is_none()));
}

#[test]
fn a_bundle_given_as_a_file_or_a_directory_is_the_same() {
    assert_eq!(
        load("bundles/pair/native").pod,
        load("bundles/pair/native/pod.json").pod
    );
}

#[test]
fn a_missing_bundle_says_which_file() {
    let error = bundle::load(&fixtures().join("bundles/nowhere")).unwrap_err();
    assert!(matches!(error, BundleError::Read { .. }));
    assert_eq!(
        ops_core::ansible::error_chain(&error),
        "cannot read the bundle ../tests/fixtures/bundles/nowhere: No such file or directory (os error 2)"
    );
}

#[test]
fn every_bad_bundle_is_refused_with_its_message() {
    let corpus = fixtures().join("bad-bundles");
    let mut messages = BTreeMap::new();
    for entry in std::fs::read_dir(&corpus).expect("the corpus") {
        let dir = entry.expect("an entry").path();
        let case = dir.file_name().unwrap().to_string_lossy().into_owned();
        match bundle::load(&dir) {
            Ok(_) => panic!("{case}: accepted"),
            Err(error @ BundleError::Invalid { .. }) => {
                messages.insert(case, error.to_string());
            }
            Err(other) => panic!("{case}: {other}"),
        }
    }
    assert!(
        messages.len() >= 15,
        "the corpus has {} cases",
        messages.len()
    );
    insta::assert_json_snapshot!(messages);
}

#[test]
fn all_problems_of_a_bundle_are_reported_at_once() {
    let error = bundle::load(&fixtures().join("bad-bundles/many-problems")).unwrap_err();
    let BundleError::Invalid { problems, .. } = error else {
        panic!("not invalid: {error}");
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "name",
            "version",
            "containers[0].systemd.unit-files[0]",
            "containers[0].systemd.unit-files[1]",
            "images[0].id",
            "images[0].path",
            "volumes[0].name",
            "volumes[0].path",
        ]
    );
}

#[test]
fn the_published_schemas_match_the_code() {
    for (file, schema) in [
        ("pod.schema.json", bundle::schema()),
        ("ops-annotation.schema.json", bundle::annotation_schema()),
    ] {
        let path = Path::new("../collection/schemas").join(file);
        let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if std::env::var_os("OPS_UPDATE_GENERATED").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is out of date: run `OPS_UPDATE_GENERATED=1 cargo test -p ops_core --test bundles` and commit it",
            path.display()
        );
    }
}

/// `load` on a thread, given up after a while: a FIFO used to block it
/// for ever and a device to read it without bound.
fn load_within_seconds(path: PathBuf) -> Result<bundle::Bundle, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(bundle::load(&path).map_err(|e| ops_core::ansible::error_chain(&e)));
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("bundle::load did not return")
}

#[test]
fn a_pod_json_that_is_not_a_regular_file_is_refused_without_reading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::create_dir(dir.join("b1")).unwrap();
    nix::unistd::mkfifo(&dir.join("b1/pod.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::fs::create_dir(dir.join("b2")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("b2/pod.json")).unwrap();
    std::fs::create_dir(dir.join("b3")).unwrap();
    std::fs::write(dir.join("b3/pod.json"), " ".repeat(2 << 20)).unwrap();
    let mut messages = BTreeMap::new();
    for (case, path) in [
        ("bundle path a fifo", fifo),
        ("pod.json a fifo", dir.join("b1")),
        ("pod.json a symlink to /dev/zero", dir.join("b2/pod.json")),
        ("pod.json over 1 MiB", dir.join("b3")),
    ] {
        let message = load_within_seconds(path).unwrap_err();
        messages.insert(case, message.replace(&dir.display().to_string(), "<tmp>"));
    }
    insta::assert_json_snapshot!(messages);
}

#[test]
fn a_bundle_named_through_a_symlink_is_read() {
    // The user names the bundle: a symlink they made to it is theirs to
    // make; only what it leads to must be a regular pod.json.
    let tmp = tempfile::tempdir().unwrap();
    let real = std::fs::canonicalize(fixtures().join("bundles/pair/native")).unwrap();
    let link = tmp.path().join("bundle");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let linked = load_within_seconds(link.join("pod.json")).unwrap();
    assert_eq!(linked.pod, load("bundles/pair/native").pod);
}

/// A pod.json of thousands of unknown keys is refused after a bounded
/// number of them, saying that reading stopped.
#[test]
fn unknown_keys_are_reported_up_to_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut pod = serde_json::json!({"name": "many", "version": 1, "containers": []});
    for i in 0..20_000 {
        pod[format!("extra{i}")] = serde_json::json!(i);
    }
    std::fs::write(dir.path().join("pod.json"), pod.to_string()).unwrap();
    let error = bundle::load(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("(51 problems)"),
        "{}",
        &error[..200.min(error.len())]
    );
    assert!(
        error.ends_with("more unknown keys may follow: reading stopped after 50"),
        "{}",
        &error[error.len().saturating_sub(200)..]
    );
}

/// How pod.json is written, refused by name: a byte order mark or UTF-16
/// (not "expected value at line 1 column 1"), a key given twice (not the
/// last one taken silently), a value of megabytes (shown cut short).
#[test]
fn encodings_duplicate_keys_and_huge_values_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let good =
        std::fs::read_to_string(fixtures().join("bundles/plain-replication/native/pod.json"))
            .unwrap();
    let mut utf16 = vec![0xff, 0xfe];
    utf16.extend(good.encode_utf16().flat_map(u16::to_le_bytes));
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "UTF-8 BOM",
            [b"\xef\xbb\xbf".as_slice(), good.as_bytes()].concat(),
        ),
        ("UTF-16", utf16),
        (
            "version given twice",
            good.replacen("\"version\"", "\"version\": 7, \"version\"", 1)
                .into_bytes(),
        ),
        (
            "a name of 1 MB",
            good.replacen(
                "\"name\": \"example\"",
                &format!("\"name\": \"{}\"", "a".repeat(1_000_000)),
                1,
            )
            .into_bytes(),
        ),
    ];
    let mut messages = BTreeMap::new();
    for (case, text) in cases {
        let dir = tmp.path().join(case.replace(' ', "-"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("pod.json"), text).unwrap();
        std::fs::copy(
            fixtures().join("bundles/plain-replication/native/example.service"),
            dir.join("example.service"),
        )
        .unwrap();
        let message = bundle::load(&dir).unwrap_err().to_string();
        messages.insert(
            case,
            message.replace(&tmp.path().display().to_string(), "<tmp>"),
        );
    }
    insta::assert_json_snapshot!(messages);
}

/// pod.json may name its schema for editors (`"$schema"`); ops ignores it:
/// the pod, and so the version's digest, are those of the same file
/// without it, so adding or changing it alone never makes a deployed
/// version "already deployed with different content".
#[test]
fn a_schema_key_is_accepted_and_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = load("bundles/native-seed000");
    let mut digests = Vec::new();
    for schema in [
        "../collection/schemas/pod.schema.json",
        "urn:ops:onboard:schema:pod.json",
    ] {
        let dir = tmp.path().join(digests.len().to_string());
        copy_dir(&fixtures().join("bundles/native-seed000"), &dir);
        let mut value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("pod.json")).unwrap()).unwrap();
        value["$schema"] = schema.into();
        std::fs::write(dir.join("pod.json"), value.to_string()).unwrap();
        let with = bundle::load(&dir).unwrap_or_else(|e| panic!("{schema}: {e}"));
        assert_eq!(with.pod, plain.pod, "{schema}");
        assert_ne!(with.text, plain.text);
        digests.push(ops_core::store::digest(&with.pod, &BTreeMap::new()));
    }
    assert_eq!(digests[0], digests[1]);
    assert_eq!(
        digests[0],
        ops_core::store::digest(&plain.pod, &BTreeMap::new())
    );
}

#[test]
fn a_schema_key_that_is_not_a_string_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut messages = BTreeMap::new();
    for (case, schema) in [
        ("a number", serde_json::json!(7)),
        ("null", serde_json::Value::Null),
        ("an object", serde_json::json!({"$ref": "x"})),
    ] {
        let dir = tmp.path().join(case);
        copy_dir(&fixtures().join("bundles/native-seed000"), &dir);
        let mut value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("pod.json")).unwrap()).unwrap();
        value["$schema"] = schema;
        std::fs::write(dir.join("pod.json"), value.to_string()).unwrap();
        let error = bundle::load(&dir).unwrap_err();
        let BundleError::Invalid { problems, .. } = &error else {
            panic!("{case}: not invalid: {error}");
        };
        assert_eq!(problems[0].field, "$schema", "{case}");
        messages.insert(case, problems[0].message.clone());
    }
    insta::assert_json_snapshot!(messages);
}

/// The edge values of tests/fixtures/schema-edges.json: ops accepts or
/// refuses each pod as the file says (tests/schema/check.py holds the
/// published schema to the same verdicts).
#[test]
fn the_schema_edge_values_are_what_ops_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let edges: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("schema-edges.json")).unwrap())
            .unwrap();
    for (i, edge) in edges["cases"].as_array().unwrap().iter().enumerate() {
        let case = edge["case"].as_str().unwrap();
        let dir = tmp.path().join(i.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let pod = &edge["pod"];
        let mut files = vec!["web.service".to_owned(), "img.aci".to_owned()];
        for container in pod["containers"].as_array().unwrap() {
            for unit in container["systemd"]["unit-files"].as_array().unwrap() {
                files.push(unit.as_str().unwrap().to_owned());
            }
        }
        for file in files.iter().filter(|f| !f.contains(':') && f.len() <= 255) {
            std::fs::write(dir.join(file), "[Service]\nExecStart=/bin/true\n").unwrap();
        }
        std::fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        let loaded = bundle::load(&dir);
        assert_eq!(
            loaded.is_ok(),
            edge["ops"].as_bool().unwrap(),
            "{case}: {:?}",
            loaded.err().map(|e| e.to_string())
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
