//! `ops_pod --validate BUNDLE`, run as a person runs it: what it prints for
//! a good bundle (and writes nowhere), the problems it names for bad ones,
//! its exit status and its usage.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use sha2::Digest;

const BIN: &str = env!("CARGO_BIN_EXE_ops_pod");

/// A tar of `files` (path, contents), the same bytes on every run.
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

/// A directory with bundle `web-1` in it: a templated unit running in an
/// ACI, a helper on the host, a read-only volume, a port.
struct Bundle {
    dir: tempfile::TempDir,
    id: String,
}

impl Bundle {
    fn new() -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("web-1");
        fs::create_dir_all(bundle.join("units")).unwrap();
        fs::write(
            bundle.join("units/web@.service"),
            "[Service]\nExecStart=/bin/busybox httpd -f -p ${PORT} -h /www\n",
        )
        .unwrap();
        fs::write(
            bundle.join("units/helper.service"),
            "[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
        let aci = tar(&[
            (
                "manifest",
                r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/web"}"#,
            ),
            ("rootfs/bin/busybox", "not really busybox"),
        ]);
        // The id as the guide computes it: sha512sum of the tar.
        let hex: String = (sha2::Sha512::digest(&aci).iter())
            .map(|b| format!("{b:02x}"))
            .collect();
        let id = format!("sha512-{hex}");
        fs::write(bundle.join("web.aci"), aci).unwrap();
        fs::write(bundle.join("www.tar"), tar(&[("index.html", "hello\n")])).unwrap();
        let pod = serde_json::json!({
            "name": "web",
            "version": 1,
            "containers": [
                {"name": "web", "replication": [8080, 8081], "image": "web.aci",
                 "systemd": {"unit-files": ["units/web@.service"]}},
                {"name": "helper", "systemd": {"unit-files": ["units/helper.service"]}},
            ],
            "images": [{"id": id, "path": "web.aci"}],
            "volumes": [{"name": "www", "path": "/www", "read-only": true, "data": "www.tar"}],
            "ports": {"http": "assign"},
        });
        fs::write(
            bundle.join("pod.json"),
            serde_json::to_string_pretty(&pod).unwrap(),
        )
        .unwrap();
        Bundle { dir, id }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("web-1")
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.path().join(file);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file}: {from}");
        fs::write(&path, text.replace(from, to)).unwrap();
    }

    /// `ops_pod --validate ARGS... BUNDLE`, with TMPDIR of its own.
    fn validate(&self, args: &[&str]) -> Output {
        let tmp = self.dir.path().join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        let output = assert_cmd::Command::new(BIN)
            .env("TMPDIR", &tmp)
            .arg("--validate")
            .args(args)
            .arg(self.path())
            .output()
            .unwrap();
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "left in TMPDIR");
        output
    }

    /// The output with the temporary directory and the systemd version
    /// masked.
    fn shown(&self, bytes: &[u8]) -> String {
        let text =
            String::from_utf8_lossy(bytes).replace(&self.dir.path().display().to_string(), "<tmp>");
        mask_systemd_version(&text)
    }
}

fn mask_systemd_version(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("(systemd ") {
        out.push_str(&rest[..at + 9]);
        rest = rest[at + 9..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('N');
    }
    out.push_str(rest);
    out
}

/// Whether systemd-analyze is here: without it, the unit files are not
/// verified, and the tests that read its words say so and stop.
fn have_verifier() -> bool {
    let here = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !here {
        eprintln!("no systemd-analyze here: its part is not tested");
    }
    here
}

/// Every path under `dir`, its kind, mode, size, time and contents.
fn picture(dir: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(path) = todo.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let contents = if meta.is_file() {
            fs::read(&path).unwrap()
        } else {
            Vec::new()
        };
        out.insert(
            path.clone(),
            format!(
                "{:o} {} {} {:?}",
                meta.mode(),
                meta.len(),
                meta.mtime_nsec(),
                contents
            ),
        );
        if meta.is_dir() {
            todo.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

#[test]
fn a_good_bundle_is_listed_and_nothing_is_written() {
    if !have_verifier() {
        return;
    }
    let bundle = Bundle::new();
    let before = picture(&bundle.path());
    let text = bundle.validate(&[]);
    assert_eq!(text.status.code(), Some(0), "{text:?}");
    assert!(text.stderr.is_empty(), "{text:?}");
    let shown = bundle.shown(&text.stdout);
    assert!(shown.contains(&bundle.id), "{shown}");
    insta::assert_snapshot!(shown);

    let json = bundle.validate(&["--json", "--root", "/srv/ops", "--runtime", "podman"]);
    assert_eq!(json.status.code(), Some(0), "{json:?}");
    insta::assert_snapshot!(bundle.shown(&json.stdout));
    assert_eq!(picture(&bundle.path()), before, "the bundle is as it was");
    assert!(!Path::new("/srv/ops").exists() || before.is_empty());
}

#[test]
fn each_problem_names_pod_json_and_the_field_and_exits_1() {
    let with_verifier = have_verifier();
    let cases: &[(&str, &str, &str, &str)] = &[
        // (case, file, from, to)
        // The id's first 8 hex digits changed ({id8}: the id's first 8).
        ("a wrong image id", "pod.json", "{id8}", "sha512-00000000"),
        (
            "a unit file missing",
            "pod.json",
            "units/helper.service",
            "units/helpr.service",
        ),
        (
            "a volume archive that is no archive",
            "www.tar",
            "index.html",
            "index.html",
        ),
        (
            "pod.json that is not JSON",
            "pod.json",
            "\"name\": \"web\",",
            "\"name\": \"web\"",
        ),
        (
            "a unit file systemd refuses",
            "units/helper.service",
            "ExecStart=",
            "ExecStrat=",
        ),
    ];
    let mut shown = BTreeMap::new();
    for (case, file, from, to) in cases {
        if file.starts_with("units/") && !with_verifier {
            continue;
        }
        let bundle = Bundle::new();
        if *file == "www.tar" {
            fs::write(bundle.path().join("www.tar"), "not a tar, only text\n").unwrap();
        } else {
            bundle.edit(file, &from.replace("{id8}", &bundle.id[..15]), to);
        }
        let output = bundle.validate(&[]);
        assert_eq!(output.status.code(), Some(1), "{case}: {output:?}");
        assert!(output.stdout.is_empty(), "{case}: {output:?}");
        let said = bundle
            .shown(&output.stderr)
            .replace(&bundle.id[15..], "<the rest of the id>");
        assert!(said.contains("<tmp>/web-1/pod.json"), "{case}: {said}");
        shown.insert(*case, said);
    }
    insta::assert_json_snapshot!(shown);
}

#[test]
fn with_json_a_bad_bundle_gives_each_problem_as_file_field_and_message() {
    let bundle = Bundle::new();
    bundle.edit("pod.json", &bundle.id[..15], "sha512-00000000");
    fs::write(bundle.path().join("www.tar"), "not a tar, only text\n").unwrap();
    let output = bundle.validate(&["--json"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
    let said = bundle
        .shown(&output.stdout)
        .replace(&bundle.id[15..], "<the rest of the id>");
    let value: serde_json::Value = serde_json::from_str(&said).unwrap();
    insta::assert_json_snapshot!(value);
}

#[test]
fn a_wrong_command_line_says_how_to_call_it_and_exits_2() {
    let run = |args: &[&str]| {
        let output = assert_cmd::Command::new(BIN).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(output.stdout.is_empty(), "{args:?}: {output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let mut said = BTreeMap::new();
    for args in [
        &["--validate"][..],
        &["--validate", "--jsn", "web-1"],
        &["--validate", "web-1", "web-2"],
        &["--validate", "--runtime", "docker", "web-1"],
        &["--validate", "--root", "ops", "web-1"],
        &["--validate", "--keyring", "/nonexistent/keys.asc", "web-1"],
        &["--validate", "--keyring"],
        &["--validate", ""],
        &["--validate", "--", "web-1", "--json"],
    ] {
        said.insert(args.join(" "), run(args));
    }
    insta::assert_json_snapshot!(said);
    // A bundle that is not there: a problem of the bundle (1), not of the
    // command line.
    let missing = assert_cmd::Command::new(BIN)
        .args(["--validate", "/nonexistent/web-1"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    // After `--`, a word starting with `-` is the bundle.
    let dashed = assert_cmd::Command::new(BIN)
        .args(["--validate", "--json", "--", "-web-1"])
        .output()
        .unwrap();
    assert_eq!(dashed.status.code(), Some(1), "{dashed:?}");
    assert!(
        String::from_utf8_lossy(&dashed.stdout).contains("cannot read the bundle -web-1"),
        "{dashed:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        "ops_pod --validate: cannot read the bundle /nonexistent/web-1: No such file or directory \
         (os error 2)\n"
    );
}

#[test]
fn a_name_with_a_newline_cannot_add_a_line_of_its_own() {
    // A unit file's directory, an image and a volume archive whose names
    // each hold a newline and the start of a line --validate prints.
    let bundle = Bundle::new();
    let dir = bundle.path();
    let units = "u\nbundle     forged.json (native shape): valid";
    fs::create_dir(dir.join(units)).unwrap();
    fs::rename(
        dir.join("units/helper.service"),
        dir.join(units).join("helper.service"),
    )
    .unwrap();
    fs::rename(dir.join("web.aci"), dir.join("web\nimage      x.aci")).unwrap();
    fs::rename(dir.join("www.tar"), dir.join("www\u{1b}[2K\u{202e}.tar")).unwrap();
    let escaped = |s: &str| {
        serde_json::to_string(s)
            .unwrap()
            .trim_matches('"')
            .to_owned()
    };
    bundle.edit(
        "pod.json",
        "units/helper.service",
        &escaped(&format!("{units}/helper.service")),
    );
    bundle.edit("pod.json", "web.aci", &escaped("web\nimage      x.aci"));
    bundle.edit("pod.json", "www.tar", &escaped("www\u{1b}[2K\u{202e}.tar"));
    let output = bundle.validate(&[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let shown = bundle.shown(&output.stdout);
    // The lines of a good bundle: each name on its own one.
    let valid = Bundle::new().validate(&[]);
    assert_eq!(
        shown.lines().count(),
        valid.stdout.split(|b| *b == b'\n').count() - 1
    );
    let bundles = shown.lines().filter(|l| l.starts_with("bundle"));
    assert_eq!(bundles.count(), 1, "{shown}");
    assert!(!shown.contains(['\u{1b}', '\u{202e}']), "{shown}");
    // The last line says whether systemd-analyze is here.
    let listed: Vec<&str> = shown
        .lines()
        .filter(|l| !l.starts_with("unit files"))
        .collect();
    insta::assert_snapshot!(listed.join("\n"));

    // A problem's line is one line too.
    fs::remove_file(dir.join(units).join("helper.service")).unwrap();
    let output = bundle.validate(&[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let said = bundle.shown(&output.stderr);
    assert_eq!(said.lines().count(), 1, "{said}");
    insta::assert_snapshot!(said);
    // JSON is one document, the problem in it.
    let json = bundle.validate(&["--json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        value["problems"][0]["field"], "containers[1].systemd.unit-files[0]",
        "{value}"
    );
}

#[test]
fn an_archive_the_deploy_refuses_is_refused_and_read_in_bounded_memory() {
    let mut said = BTreeMap::new();
    // More than 16 MiB after the tar's end: the import and the extraction
    // refuse it (a stream that goes on for ever), so --validate does.
    let bundle = Bundle::new();
    let zeros = vec![0u8; 17 << 20];
    let mut aci = fs::read(bundle.path().join("web.aci")).unwrap();
    aci.extend_from_slice(&zeros);
    let hex: String = (sha2::Sha512::digest(&aci).iter())
        .map(|b| format!("{b:02x}"))
        .collect();
    fs::write(bundle.path().join("web.aci"), &aci).unwrap();
    bundle.edit("pod.json", &bundle.id, &format!("sha512-{hex}"));
    let mut www = fs::read(bundle.path().join("www.tar")).unwrap();
    www.extend_from_slice(&zeros);
    fs::write(bundle.path().join("www.tar"), &www).unwrap();
    let output = bundle.validate(&[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    said.insert("a long tail", bundle.shown(&output.stderr));

    // A GNU long name of 2 MiB: what the tar reader would hold for one
    // entry's headers, as the import bounds it (else a few compressed MiB
    // make it hold gigabytes).
    let bundle = Bundle::new();
    let long = format!("rootfs/{}", "a/".repeat(1 << 20));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    b.append_data(&mut h, "manifest", &[][..]).unwrap();
    b.append_data(&mut h, &long, &[][..]).unwrap();
    let aci = b.into_inner().unwrap();
    let hex: String = (sha2::Sha512::digest(&aci).iter())
        .map(|b| format!("{b:02x}"))
        .collect();
    fs::write(bundle.path().join("web.aci"), &aci).unwrap();
    bundle.edit("pod.json", &bundle.id, &format!("sha512-{hex}"));
    let output = bundle.validate(&[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    said.insert("a long name", bundle.shown(&output.stderr));
    insta::assert_json_snapshot!(said);
}

#[test]
fn a_fifo_or_a_device_in_the_bundle_is_refused_at_once() {
    let mut said = BTreeMap::new();
    for file in ["pod.json", "web.aci", "www.tar", "units/helper.service"] {
        let bundle = Bundle::new();
        let path = bundle.path().join(file);
        fs::remove_file(&path).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let tmp = bundle.dir.path().join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        let output = assert_cmd::Command::new(BIN)
            .env("TMPDIR", &tmp)
            .args(["--validate".as_ref(), bundle.path().as_os_str()])
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{file}: {output:?}");
        said.insert(file, bundle.shown(&output.stderr));
    }
    // A volume archive that is a link to /dev/zero.
    let bundle = Bundle::new();
    fs::remove_file(bundle.path().join("www.tar")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", bundle.path().join("www.tar")).unwrap();
    let output = bundle.validate(&[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    said.insert("www.tar -> /dev/zero", bundle.shown(&output.stderr));
    insta::assert_json_snapshot!(said);
}
