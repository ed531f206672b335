//! Volumes through the engine: ops_volume's `run` and ops_pod's deploy on
//! a temporary root, with the recording fake standing in for systemd.
//! Archives are built here, byte by byte where a tool would refuse to make
//! them (the malicious corpus).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use common::Host;
use ops_core::bundle::{PodName, Version};
use ops_core::image::Location;
use ops_core::pod::{self, State as PodState};
use ops_core::volume::{self, Checksum, Request, Settings, State};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// One archive entry: `f:text`, `d`, `l:target` (symlink), `h:target`
/// (hard link), `c` (char device 1:3), `p` (fifo), `s:text` (setuid file).
fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, what) in entries {
        let mut h = Header::new_old();
        // Set the name by hand: the builder refuses '..' and absolute
        // paths, which is exactly what the corpus needs.
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_mode(0o644);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_700_000_000);
        let mut data: &[u8] = &[];
        let (kind, arg) = what.split_at(what.find(':').map_or(what.len(), |i| i + 1));
        match kind {
            "f:" | "s:" => {
                h.set_entry_type(EntryType::Regular);
                data = arg.as_bytes();
                if kind == "s:" {
                    h.set_mode(0o4755);
                }
            }
            "d" => {
                h.set_entry_type(EntryType::Directory);
                h.set_mode(0o750);
            }
            "l:" | "h:" => {
                h.set_entry_type(if kind == "l:" {
                    EntryType::Symlink
                } else {
                    EntryType::Link
                });
                h.as_old_mut().linkname[..arg.len()].copy_from_slice(arg.as_bytes());
            }
            "c" => {
                h.set_entry_type(EntryType::Char);
            }
            "p" => h.set_entry_type(EntryType::Fifo),
            other => panic!("unknown entry kind {other}"),
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

const GOOD: &[(&str, &str)] = &[
    ("./", "d"),
    ("www", "d"),
    ("www/index.html", "f:hello"),
    ("www/latest", "l:index.html"),
    ("www/same", "h:www/index.html"),
    ("conf/app.conf", "f:port=1"),
];

fn compressed(format: &str, tar: &[u8]) -> Vec<u8> {
    match format {
        "tar" => tar.to_vec(),
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        "bz2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        "zst" => zstd::encode_all(tar, 1).unwrap(),
        other => panic!("{other}"),
    }
}

const WEB: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

impl Host {
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join("files").join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }

    /// Deploy (and start) pod `shop` version `version` with volumes `data`
    /// (from `data`, if given) and `conf` (read-only, empty).
    fn deploy(&mut self, version: &str, data: Option<&[u8]>) -> Result<pod::Report, String> {
        let bundle = self.dir.path().join(format!("bundle-{version}"));
        fs::create_dir_all(&bundle).unwrap();
        fs::write(bundle.join("web.service"), WEB).unwrap();
        let mut data_volume = serde_json::json!({"name": "data", "path": "/srv/data"});
        if let Some(bytes) = data {
            fs::write(bundle.join("data.tar"), bytes).unwrap();
            data_volume["data"] = "data.tar".into();
        }
        let pod = serde_json::json!({
            "name": "shop",
            "version": version,
            "containers": [{"name": "web", "systemd": {"unit-files": ["web.service"]}}],
            "volumes": [data_volume, {"name": "conf", "path": "/etc/app", "read-only": true}],
        });
        fs::write(bundle.join("pod.json"), pod.to_string()).unwrap();
        let mut request = self.pod_request("shop", PodState::Started);
        request.bundle = Some(bundle);
        request.version = Some(Version::parse(version).unwrap());
        request.lock_timeout = Duration::from_secs(5);
        pod::run(
            &request,
            &mut self.systemd,
            &mut ops_core::image::PodmanCli,
            false,
            true,
        )
        .map_err(|f| ops_core::ansible::error_chain(&f.error))
    }

    fn request(&self, name: &str, data: Option<&Path>) -> Request {
        Request {
            pod: PodName::parse("shop").unwrap(),
            version: Version::parse("1").unwrap(),
            name: name.to_owned(),
            data: data.map(|p| Location::Path(p.to_owned())),
            checksum: None,
            settings: Settings::default(),
            replace: false,
            state: State::Present,
            root: self.root.clone(),
            timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(5),
        }
    }

    fn volume(&mut self, request: &Request) -> Result<volume::Report, String> {
        volume::run(request, &mut self.systemd, false, true)
            .map_err(|e| ops_core::ansible::error_chain(&e))
    }

    fn data_dir(&self, name: &str) -> PathBuf {
        self.root
            .join("pods/shop/1/volumes")
            .join(name)
            .join("data")
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn go(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                go(base, &path, out);
            }
        }
    }
    go(dir, dir, &mut out);
    out.sort();
    out
}

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

#[test]
fn every_format_gives_the_same_volume_and_a_rerun_does_nothing() {
    let tar = tar_of(GOOD);
    for format in ["tar", "gz", "xz", "bz2", "zst"] {
        let mut host = Host::new();
        host.deploy("1", None).unwrap();
        // Created empty by the deploy; filled by the first ops_volume.
        assert_eq!(names(&host.data_dir("data")), Vec::<String>::new());
        let bytes = compressed(format, &tar);
        let archive = host.file(&format!("data.{format}"), &bytes);
        let request = host.request("data", Some(&archive));
        let first = host.volume(&request).unwrap();
        assert!(first.changed, "{format}");
        assert_eq!(first.digest.as_deref(), Some(sha256(&bytes).as_str()));
        assert_eq!(first.entries, Some(5), "{format}: {first:?}");
        assert_eq!(first.bytes, Some(11));
        let data = host.data_dir("data");
        assert_eq!(
            names(&data),
            [
                "conf",
                "conf/app.conf",
                "www",
                "www/index.html",
                "www/latest",
                "www/same"
            ]
        );
        assert_eq!(fs::read_to_string(data.join("www/same")).unwrap(), "hello");
        assert_eq!(
            fs::metadata(data.join("www/same")).unwrap().ino(),
            fs::metadata(data.join("www/index.html")).unwrap().ino()
        );
        assert_eq!(
            fs::read_link(data.join("www/latest")).unwrap(),
            Path::new("index.html")
        );
        assert_eq!(
            fs::metadata(data.join("www")).unwrap().mode() & 0o7777,
            0o750
        );
        // The archive's top entry gave the volume its mode.
        assert_eq!(fs::metadata(&data).unwrap().mode() & 0o7777, 0o750);
        assert!(!host.root.join("staging").exists());

        let before = host.snapshot();
        let again = host.volume(&request).unwrap();
        assert!(!again.changed, "{format}: {again:?}");
        assert!(again.actions.is_empty());
        assert_eq!(again.digest, first.digest);
        assert_eq!(host.snapshot(), before);
    }
}

/// Entries of a test archive: (path, kind).
type Entries = &'static [(&'static str, &'static str)];

/// Archives that must be refused, whole: (case, entries, what the error
/// says).
const MALICIOUS: &[(&str, Entries, &str)] = &[
    ("absolute path", &[("/etc/evil", "f:x")], "absolute path"),
    (
        "parent directory",
        &[("../evil", "f:x")],
        "goes up with '..'",
    ),
    (
        "parent in the middle",
        &[("a/../../evil", "f:x")],
        "goes up with '..'",
    ),
    (
        "symlink to an absolute path",
        &[("etc", "l:/etc")],
        "absolute path /etc",
    ),
    (
        "symlink up and out",
        &[("a/up", "l:../../etc")],
        "outside the volume",
    ),
    (
        "entry under a symlink",
        &[("real", "d"), ("link", "l:real"), ("link/x", "f:x")],
        "under the symlink link",
    ),
    (
        "symlink chain out",
        &[("sub/up", "l:.."), ("esc", "l:sub/up/..")],
        "leads outside the volume",
    ),
    (
        "symlink retargeted by a later entry",
        &[
            ("sub/deep/x", "f:x"),
            ("esc", "l:sub/deep/../../x"),
            ("sub/deep", "l:.."),
        ],
        "leads outside the volume",
    ),
    (
        "hard link up and out",
        &[("h", "h:../etc/passwd")],
        "goes up with '..'",
    ),
    (
        "hard link to an absolute path",
        &[("h", "h:/etc/passwd")],
        "hard link to the absolute path",
    ),
    (
        "hard link through a symlink",
        &[("real/f", "f:x"), ("link", "l:real"), ("h", "h:link/f")],
        "symlink link",
    ),
    (
        "hard link to a symlink to the parent",
        &[("a/up", "l:.."), ("h", "h:a/up")],
        "a hard link to the symlink a/up, which here would be a symlink to .., outside the volume",
    ),
    (
        "hard link through a hard-linked symlink",
        &[("a/up", "l:."), ("a/b", "h:a/up"), ("c", "h:a/b/x")],
        "its link target lies under the symlink a/b",
    ),
    (
        "chain of hard links to a symlink",
        &[
            ("a/b/up", "l:.."),
            ("a/b/h1", "h:a/b/up"),
            ("h2", "h:a/b/h1"),
        ],
        "a hard link to the symlink a/b/h1, which here would be a symlink to ..",
    ),
    (
        "hard link to a symlink made later",
        &[("h", "h:s"), ("s", "l:..")],
        "a hard link to s, which the archive has not created before it",
    ),
    (
        "hard link to a directory",
        &[("d", "d"), ("h", "h:d")],
        "a hard link to the directory d",
    ),
    (
        "written through a hard-linked symlink",
        &[("a/here", "l:."), ("h", "h:a/here"), ("h/x", "f:x")],
        "it lies under the symlink h",
    ),
    (
        "character device",
        &[("dev/null", "c")],
        "a character device (allow_special_files is off)",
    ),
    (
        "fifo",
        &[("pipe", "p")],
        "a fifo (allow_special_files is off)",
    ),
];

#[test]
fn malicious_archives_are_refused_by_entry_and_leave_nothing_behind() {
    let mut host = Host::new();
    host.deploy("1", None).unwrap();
    let mut messages = BTreeMap::new();
    for (case, entries, says) in MALICIOUS {
        let outside = host.dir.path().join("outside");
        let before = host.snapshot();
        for format in ["tar", "gz"] {
            let archive = host.file(
                &format!("{}.{format}", case.replace(' ', "-")),
                &compressed(format, &tar_of(entries)),
            );
            let err = host
                .volume(&host.request("data", Some(&archive)))
                .expect_err(case);
            assert!(err.contains(says), "{case}: {err}");
            assert_eq!(host.snapshot(), before, "{case}: the store changed");
            assert!(!outside.exists(), "{case}: wrote outside");
            messages.insert(
                *case,
                err.replace(&host.dir.path().display().to_string(), "<tmp>"),
            );
        }
    }
    insta::assert_json_snapshot!(messages);
}

/// ops_pod --validate reads a volume's archive through without writing
/// (`volume::survey_for_pod`): it refuses every archive the extraction
/// refuses, in the same words, and counts what the extraction writes.
#[test]
fn a_survey_judges_an_archive_as_the_extraction_does_writing_nothing() {
    let mut host = Host::new();
    host.deploy("1", None).unwrap();
    let why = |m: &str| m[m.find(": entry ").unwrap_or_else(|| panic!("{m}"))..].to_owned();
    for (case, entries, _) in MALICIOUS {
        for format in ["tar", "gz"] {
            let archive = host.file(
                &format!("{}.{format}", case.replace(' ', "-")),
                &compressed(format, &tar_of(entries)),
            );
            let before = host.snapshot();
            let surveyed = volume::survey_for_pod(&archive, "data").expect_err(case);
            assert_eq!(host.snapshot(), before, "{case}: the survey wrote");
            let extracted = host
                .volume(&host.request("data", Some(&archive)))
                .expect_err(case);
            assert_eq!(
                why(&ops_core::ansible::error_chain(&surveyed)),
                why(&extracted),
                "{case} ({format})"
            );
        }
    }
    let tar = tar_of(GOOD);
    for format in ["tar", "gz", "xz", "bz2", "zst"] {
        let bytes = compressed(format, &tar);
        let archive = host.file(&format!("good.{format}"), &bytes);
        let surveyed = volume::survey_for_pod(&archive, "good").unwrap();
        let named = match format {
            "tar" => "tar".to_owned(),
            compressed => format!("tar.{compressed}"),
        };
        assert_eq!(surveyed.format, named);
        // What ops_volume reported extracting it (the test above).
        assert_eq!((surveyed.entries, surveyed.bytes), (5, 11), "{format}");
        assert_eq!(surveyed.digests.sha256, sha256(&bytes));
    }
    // Cut inside an entry's data, inside a header, and a gzip stream cut
    // short: said as the extraction says it.
    let mut in_data = tar_of(&[("big", &format!("f:{}", "x".repeat(2000)))]);
    in_data.truncate(1200);
    let mut in_header = tar.clone();
    in_header.truncate(700);
    let gz = compressed("gz", &tar);
    for (name, bytes) in [
        ("cut.tar", in_data),
        ("cut-header.tar", in_header),
        ("cut.gz", gz[..gz.len() - 9].to_vec()),
    ] {
        let archive = host.file(name, &bytes);
        let surveyed = volume::survey_for_pod(&archive, name).expect_err(name);
        let extracted = host
            .volume(&host.request("data", Some(&archive)))
            .expect_err(name);
        // Each names the file its way: what follows the name is the same.
        let after = |m: &str, named: &str| m[m.find(named).expect(m) + named.len()..].to_owned();
        assert_eq!(
            after(&ops_core::ansible::error_chain(&surveyed), name),
            after(&extracted, &archive.display().to_string()),
            "{name}"
        );
    }
}

#[test]
fn special_files_and_setuid_bits_need_asking_for() {
    let mut host = Host::new();
    host.deploy("1", None).unwrap();
    let archive = host.file(
        "special.tar",
        &tar_of(&[
            ("pipe", "p"),
            ("bin/tool", "s:#!/bin/true"),
            // Hard links are what they link to: no setuid bit unless kept,
            // a fifo only when special files are allowed.
            ("bin/alias", "h:bin/tool"),
            ("pipe2", "h:pipe"),
        ]),
    );
    let mut request = host.request("data", Some(&archive));
    request.settings.special_files = true;
    host.volume(&request).unwrap();
    let data = host.data_dir("data");
    assert!(fs::symlink_metadata(data.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo_like());
    for file in ["bin/tool", "bin/alias"] {
        assert_eq!(
            fs::metadata(data.join(file)).unwrap().mode() & 0o7777,
            0o755,
            "{file}"
        );
    }
    assert_eq!(
        fs::metadata(data.join("pipe2")).unwrap().ino(),
        fs::metadata(data.join("pipe")).unwrap().ino()
    );

    // The same archive with keep_setuid: only extracting it again keeps
    // the bits, and that replaces the contents: refused unless asked.
    request.settings.keep_setuid = true;
    let before = host.snapshot();
    let err = host.volume(&request).unwrap_err();
    assert_eq!(host.snapshot(), before);
    let err_check = volume::run(&request, &mut host.systemd, true, false)
        .map(|r| r.changed)
        .map_err(|e| ops_core::ansible::error_chain(&e));
    assert_eq!(err_check, Err(err.clone()), "check mode says the same");
    insta::assert_snapshot!(err.replace(&host.dir.path().display().to_string(), "<tmp>"));
    request.replace = true;
    let replaced = host.volume(&request).unwrap();
    assert!(replaced.changed);
    // A hard link to the setuid file is the same file, bits and all.
    for file in ["bin/tool", "bin/alias"] {
        assert_eq!(
            fs::metadata(data.join(file)).unwrap().mode() & 0o7777,
            0o4755,
            "{file}"
        );
    }
    let before = host.snapshot();
    assert!(!host.volume(&request).unwrap().changed);
    assert_eq!(host.snapshot(), before);
    // And back: dropping them is extracting again too.
    request.settings.keep_setuid = false;
    assert!(host.volume(&request).unwrap().changed);
    assert_eq!(
        fs::metadata(data.join("bin/tool")).unwrap().mode() & 0o7777,
        0o755
    );
    assert!(!host.volume(&request).unwrap().changed);
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}

impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

#[test]
fn owner_group_and_mode_reach_every_entry() {
    let mut host = Host::new();
    host.deploy("1", None).unwrap();
    let archive = host.file("data.tar", &tar_of(GOOD));
    let mut request = host.request("data", Some(&archive));
    request.settings.owner = Some(4321);
    request.settings.group = Some(8765);
    request.settings.mode = Some(0o700);
    host.volume(&request).unwrap();
    let data = host.data_dir("data");
    let mut seen = 0;
    for name in names(&data).iter().map(String::as_str).chain([""]) {
        let meta = fs::symlink_metadata(data.join(name)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4321, 8765), "{name}");
        seen += 1;
    }
    assert_eq!(seen, 7);
    assert_eq!(fs::metadata(&data).unwrap().mode() & 0o7777, 0o700);

    // Another owner for the same archive: every entry again, no extraction.
    request.settings.owner = Some(1111);
    request.settings.mode = None;
    let changed = host.volume(&request).unwrap();
    assert_eq!(
        changed.actions,
        ["set the owner of every entry of volume data of pod shop version 1"]
    );
    assert_eq!(
        fs::symlink_metadata(data.join("www/latest")).unwrap().uid(),
        1111
    );
    assert_eq!(fs::metadata(&data).unwrap().mode() & 0o7777, 0o700);
    assert!(!host.volume(&request).unwrap().changed);
}

#[test]
fn a_new_archive_needs_replace_and_replacing_restarts_the_running_version() {
    let mut host = Host::new();
    host.deploy("1", Some(&tar_of(GOOD))).unwrap();
    let data = host.data_dir("data");
    assert_eq!(
        fs::read_to_string(data.join("www/index.html")).unwrap(),
        "hello"
    );
    fs::write(data.join("written-by-the-service"), "state").unwrap();

    let newer = host.file(
        "v2.tar.gz",
        &compressed("gz", &tar_of(&[("www/index.html", "f:v2")])),
    );
    let mut request = host.request("data", Some(&newer));
    let before = host.snapshot();
    // Not "nothing to do" while the old data is served: refused, naming
    // both archives and the way out, in check mode as in a run.
    let refused = host.volume(&request).unwrap_err();
    assert_eq!(host.snapshot(), before);
    let planned = volume::run(&request, &mut host.systemd, true, true)
        .map(|r| r.changed)
        .map_err(|e| ops_core::ansible::error_chain(&e));
    assert_eq!(planned, Err(refused.clone()));
    assert_eq!(host.snapshot(), before);
    insta::assert_snapshot!(refused
        .replace(&host.dir.path().display().to_string(), "<tmp>")
        .replace(&sha256(&tar_of(GOOD)), "<v1>")
        .replace(&sha256(&fs::read(&newer).unwrap()), "<v2>"));

    request.replace = true;
    let planned = volume::run(&request, &mut host.systemd, true, false).unwrap();
    host.systemd.calls.clear();
    let replaced = host.volume(&request).unwrap();
    assert!(replaced.changed);
    assert_eq!(
        planned.actions, replaced.actions,
        "check mode says the same"
    );
    assert_eq!(
        replaced.actions[0],
        format!(
            "replace the contents of volume data of pod shop version 1 with {}",
            newer.display()
        )
    );
    assert_eq!(names(&data), ["www", "www/index.html"]);
    assert_eq!(
        fs::read_to_string(data.join("www/index.html")).unwrap(),
        "v2"
    );
    assert!(
        host.systemd
            .calls
            .iter()
            .any(|c| c.starts_with("restart") && c.contains("shop-1-web.service")),
        "{:?}",
        host.systemd.calls
    );
    let record: serde_json::Value = serde_json::from_slice(
        &fs::read(host.root.join("pods/shop/1/volumes/data/volume.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["digest"].as_str(), replaced.digest.as_deref());
    assert!(!host.root.join("staging").exists() && !host.root.join("trash").exists());
    assert!(!host.volume(&request).unwrap().changed);

    // A restart that fails after the swap: a failure that says the host
    // changed, with the new contents in place and recorded. The restart is
    // asked for, so systemd's start limit is reset before it.
    let third = host.file(
        "v3.tar.gz",
        &compressed("gz", &tar_of(&[("www/index.html", "f:v3")])),
    );
    request.data = Some(Location::Path(third.clone()));
    host.systemd.calls.clear();
    host.systemd.failing.insert("shop-1-web.service".to_owned());
    let err = volume::run(&request, &mut host.systemd, false, false).unwrap_err();
    // Reported as ops_pod and ops_image report a failure after changes:
    // the cause first, then how the run ended, then what stays changed.
    assert_eq!(
        ops_core::ansible::error_chain(&err),
        format!(
            "shop-1-web.service did not restart: systemctl start shop-1-web.service exited with \
             status 1: Job for shop-1-web.service failed.\nvolume data of pod shop version 1 now \
             holds the new contents\nleft changed: replace the contents of volume data of pod \
             shop version 1 with {}",
            third.display()
        )
    );
    let done = err.done().expect("the failure says what was done");
    assert!(done.changed);
    assert_eq!(
        done.digest.as_deref(),
        Some(sha256(&fs::read(&third).unwrap()).as_str())
    );
    assert_eq!(
        fs::read_to_string(data.join("www/index.html")).unwrap(),
        "v3"
    );
    assert_eq!(
        host.systemd.calls,
        [
            "reset-failed shop-1-web.service",
            "restart shop-1-web.service"
        ]
    );
}

/// A version that runs but is not current (left running by a run with
/// `rollback: false`) is not restarted: systemd would stop its units and
/// skip their start (only the current version's units start), and the
/// restart would look done. Said instead.
#[test]
fn units_of_a_version_not_current_are_not_restarted_into_a_skipped_start() {
    let mut host = Host::new();
    host.deploy("1", Some(&tar_of(GOOD))).unwrap();
    host.deploy("2", None).unwrap();
    host.systemd
        .active
        .insert("shop-1-web.service".to_owned(), "active".to_owned());
    let newer = host.file("v2.tar", &tar_of(&[("www/index.html", "f:v2")]));
    let mut request = host.request("data", Some(&newer));
    request.replace = true;
    let planned = volume::run(&request, &mut host.systemd, true, false).unwrap();
    host.systemd.calls.clear();
    let replaced = host.volume(&request).unwrap();
    assert!(replaced.changed);
    assert_eq!(
        planned.warnings, replaced.warnings,
        "check mode warns alike"
    );
    assert_eq!(
        replaced.warnings,
        [
            "shop-1-web.service of pod shop version 1 still runs with the old contents: the \
          version is not current, and only the current version's units start (a restart would \
          stop it); stop it, or make the version current (ops_pod)"
        ]
    );
    let restarts: Vec<&String> = (host.systemd.calls.iter())
        .filter(|c| c.starts_with("restart"))
        .collect();
    assert!(restarts.is_empty(), "{restarts:?}");
    assert!(host
        .systemd
        .running()
        .contains(&"shop-1-web.service".to_owned()));
}

#[test]
fn an_archive_that_changes_while_read_is_refused() {
    let mut host = Host::new();
    host.deploy("1", None).unwrap();
    let archive = host.file("data.tar", &tar_of(GOOD));
    let dir = host.dir.path().join("built");
    let local = volume::LocalArchive {
        planned: Some(format!("sha256:{}", "0".repeat(64))),
        ..volume::fetch(
            &Location::Path(archive.clone()),
            Duration::from_secs(5),
            host.dir.path(),
        )
        .unwrap()
    };
    let err = volume::build(&dir, "data", Some(&local), &Settings::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} changed while ops read it: first sha256:{}, then {}; nothing was changed",
            archive.display(),
            "0".repeat(64),
            sha256(&tar_of(GOOD))
        )
    );
    assert!(!dir.exists(), "the half-built volume is gone");
}

#[test]
fn a_checksum_mismatch_and_check_mode_change_nothing() {
    let mut host = Host::new();
    host.deploy("1", None).unwrap();
    let bytes = compressed("xz", &tar_of(GOOD));
    let archive = host.file("data.tar.xz", &bytes);
    let mut request = host.request("data", Some(&archive));
    let before = host.snapshot();
    request.checksum = Some(Checksum::parse(&format!("sha256:{}", "0".repeat(64))).unwrap());
    let err = host.volume(&request).unwrap_err();
    assert!(
        err.contains("does not match its checksum: expected sha256:000"),
        "{err}"
    );
    assert!(err.contains(&format!("got {}", sha256(&bytes))), "{err}");
    assert_eq!(host.snapshot(), before);

    let sha512: String = sha2::Sha512::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    request.checksum = Some(Checksum::parse(&format!("sha512:{sha512}")).unwrap());
    let planned = volume::run(&request, &mut host.systemd, true, true).unwrap();
    assert!(planned.changed);
    assert_eq!(planned.digest.as_deref(), Some(sha256(&bytes).as_str()));
    assert!(planned.diff[0]["after"]
        .as_str()
        .unwrap()
        .contains("digest: sha256:"));
    assert_eq!(host.snapshot(), before, "check mode wrote");
    let filled = host.volume(&request).unwrap();
    assert_eq!(
        filled.actions,
        [
            format!(
                "fill the empty volume data of pod shop version 1 from {}",
                archive.display()
            ),
            // The unit had the empty directory mounted: it must see the new one.
            "restart shop-1-web.service to use the new contents".to_owned()
        ]
    );
}

#[test]
fn absent_removes_the_volume_and_unknown_volumes_are_named() {
    let mut host = Host::new();
    host.deploy("1", None).unwrap();
    let mut request = host.request("nope", None);
    let err = host.volume(&request).unwrap_err();
    assert_eq!(
        err,
        "pod shop version 1 declares no volume \"nope\" (its volumes: data, conf)"
    );
    request.version = Version::parse("9").unwrap();
    let err = host.volume(&request).unwrap_err();
    assert!(
        err.starts_with("version 9 of pod shop is not deployed (deployed versions: 1)"),
        "{err}"
    );

    let mut request = host.request("conf", None);
    request.state = State::Absent;
    assert!(host.volume(&request).unwrap().changed);
    assert!(!host.root.join("pods/shop/1/volumes/conf").exists());
    assert!(!host.volume(&request).unwrap().changed);
    request.state = State::Present;
    assert!(host.volume(&request).unwrap().changed);
    assert!(host.data_dir("conf").is_dir());
}

#[test]
fn a_deploy_builds_the_volumes_and_its_drop_ins_name_them() {
    let mut host = Host::new();
    let report = host
        .deploy("1", Some(&compressed("zst", &tar_of(GOOD))))
        .unwrap();
    assert!(report
        .actions
        .contains(&"extract volume data of pod shop version 1 from data.tar".to_owned()));
    assert!(report
        .actions
        .contains(&"create empty volume conf of pod shop version 1".to_owned()));
    let data = host.data_dir("data");
    assert_eq!(
        fs::read_to_string(data.join("conf/app.conf")).unwrap(),
        "port=1"
    );
    // A unit of any user reaches its volumes: every directory from the
    // store down to the data is open to all (the data's own mode is the
    // archive's or the volume's `mode`).
    for dir in data.parent().unwrap().ancestors() {
        if !dir.starts_with(&host.root) {
            break;
        }
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(dir).unwrap().permissions());
        assert_eq!(mode & 0o005, 0o005, "{} is {mode:o}", dir.display());
    }
    // web.service runs on the host: nothing is mounted for it.
    let diff = report
        .diff
        .iter()
        .find(|d| d["after_header"] == "volume data of pod shop version 1")
        .unwrap();
    assert_eq!(
        diff["after"].as_str().unwrap(),
        format!(
            "path: {}\nenvironment: OPS_VOLUME_DATA\nread-only: no\n\
             not mounted (on the host: the unit uses the path): web.service\ndata: data.tar\n",
            data.display()
        )
    );
    let dropin =
        fs::read_to_string(host.unit_dir.join("shop-1-web.service.d/50-ops.conf")).unwrap();
    let conf = host.data_dir("conf");
    assert!(
        dropin.contains(&format!(
            "Environment=\"OPS_VOLUME_DATA={}\"",
            data.display()
        )),
        "{dropin}"
    );
    assert!(
        dropin.contains(&format!(
            "Environment=\"OPS_VOLUME_CONF={}\"",
            conf.display()
        )),
        "{dropin}"
    );
    assert!(
        dropin.contains(&format!("ReadOnlyPaths={}\n", conf.display())),
        "{dropin}"
    );
    assert!(
        !dropin.contains(&format!("ReadOnlyPaths={}\n", data.display())),
        "{dropin}"
    );
    // Volumes are per version: v2 gets its own, v1's stays as it was.
    fs::write(data.join("state"), "v1 wrote this").unwrap();
    host.deploy("2", Some(&tar_of(&[("fresh", "f:v2")])))
        .unwrap();
    let v2 = host.root.join("pods/shop/2/volumes/data/data");
    assert_eq!(names(&v2), ["fresh"]);
    assert_eq!(
        fs::read_to_string(data.join("state")).unwrap(),
        "v1 wrote this"
    );
    // Removing the pod shows every version's volumes going in the diff.
    let request = host.pod_request("shop", PodState::Absent);
    let removed = pod::run(
        &request,
        &mut host.systemd,
        &mut ops_core::image::PodmanCli,
        false,
        true,
    )
    .unwrap();
    for (version, name) in [("1", "data"), ("1", "conf"), ("2", "data"), ("2", "conf")] {
        let header = format!("volume {name} of pod shop version {version}");
        let entry = removed
            .diff
            .iter()
            .find(|d| d["before_header"] == header.as_str())
            .unwrap_or_else(|| panic!("no diff of {header}: {:#?}", removed.diff));
        let path = host
            .root
            .join(format!("pods/shop/{version}/volumes/{name}/data"));
        assert!(
            entry["before"]
                .as_str()
                .unwrap()
                .starts_with(&format!("path: {}\n", path.display())),
            "{entry}"
        );
        assert_eq!(entry["after"], "");
    }
}

#[test]
fn a_bad_volume_archive_fails_the_deploy_and_leaves_the_store_as_it_was() {
    let mut host = Host::new();
    host.deploy("1", Some(&tar_of(GOOD))).unwrap();
    let before = host.snapshot();
    let err = host
        .deploy(
            "2",
            Some(&tar_of(&[("ok", "f:x"), ("../../escape", "f:x")])),
        )
        .unwrap_err();
    assert!(err.contains("volume data of pod shop version 2"), "{err}");
    assert!(
        err.contains("entry \"../../escape\": its path goes up with '..'"),
        "{err}"
    );
    assert_eq!(host.snapshot(), before);
    assert!(!host.dir.path().join("escape").exists());
}

/// Accept the error of a run, with this test's temporary directory hidden.
fn hidden(host: &Host, err: &str) -> String {
    err.replace(&host.dir.path().display().to_string(), "<tmp>")
}

#[test]
fn a_deployed_version_keeps_its_volume_data_and_a_changed_archive_is_refused() {
    let mut host = Host::new();
    let first = compressed("gz", &tar_of(GOOD));
    host.deploy("1", Some(&first)).unwrap();
    let data = host.data_dir("data");
    let again = host.deploy("1", Some(&first)).unwrap();
    assert!(!again.changed, "{again:?}");

    // The same bundle version, its pod.json and units as they were, its
    // volume archive changed: refused like a changed unit file, in check
    // mode as in a run, and nothing changes.
    let other = compressed("gz", &tar_of(&[("www/index.html", "f:other")]));
    let before = host.snapshot();
    let err = host.deploy("1", Some(&other)).unwrap_err();
    assert_eq!(host.snapshot(), before);
    let mut request = host.pod_request("shop", PodState::Started);
    request.bundle = Some(host.dir.path().join("bundle-1"));
    let planned = pod::run(
        &request,
        &mut host.systemd,
        &mut ops_core::image::PodmanCli,
        true,
        false,
    )
    .map(|r| r.changed)
    .map_err(|f| ops_core::ansible::error_chain(&f.error));
    assert_eq!(planned, Err(err.clone()), "check mode refuses the same way");
    assert_eq!(host.snapshot(), before);
    assert_eq!(
        fs::read_to_string(data.join("www/index.html")).unwrap(),
        "hello"
    );
    let tmp = host.dir.path().display().to_string();
    let shown = |err: &str| {
        err.replace(&tmp, "<tmp>")
            .replace(&sha256(&first), "<first>")
            .replace(&sha256(&other), "<other>")
    };
    let mut messages = vec![shown(&err)];

    // The way out the message names: ops_volume's replace. Then the bundle
    // with either archive is the version as deployed, or as loaded since.
    let archive = host.file("other.tar.gz", &other);
    let mut load = host.request("data", Some(&archive));
    load.replace = true;
    assert!(host.volume(&load).unwrap().changed);
    assert!(!host.deploy("1", Some(&other)).unwrap().changed);
    assert!(!host.deploy("1", Some(&first)).unwrap().changed);
    assert_eq!(
        fs::read_to_string(data.join("www/index.html")).unwrap(),
        "other"
    );
    // A third archive is neither.
    let third = tar_of(&[("third", "f:3")]);
    let before = host.snapshot();
    let err = host.deploy("1", Some(&third)).unwrap_err();
    assert_eq!(host.snapshot(), before);
    messages.push(shown(&err).replace(&sha256(&third), "<third>"));
    insta::assert_json_snapshot!(messages);
}

/// Files that are no archive, or a damaged one, that a look at the start
/// tells: (case, bytes).
fn not_archives() -> Vec<(&'static str, Vec<u8>)> {
    let text = b"just some text, not a tar at all\n".repeat(40);
    let mut cut_gzip = compressed("gz", &tar_of(GOOD));
    cut_gzip.truncate(15);
    let garbage = |magic: &[u8]| [magic, &[7u8; 700][..]].concat();
    let mut bad_sum = tar_of(GOOD);
    bad_sum[0] ^= 1;
    vec![
        ("short text", b"hello world\n".to_vec()),
        ("text", text.clone()),
        ("gzip of text", compressed("gz", &text)),
        ("xz of text", compressed("xz", &text)),
        ("tar header checksum wrong", bad_sum),
        ("gzip header then garbage", garbage(&[0x1f, 0x8b])),
        (
            "xz header then garbage",
            garbage(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
        ),
        (
            "zstd header then garbage",
            garbage(&[0x28, 0xb5, 0x2f, 0xfd]),
        ),
        ("bzip2 header then garbage", garbage(b"BZh9")),
        ("gzip cut short", cut_gzip),
    ]
}

#[test]
fn check_mode_refuses_what_the_run_refuses_by_the_archive_start() {
    let mut host = Host::new();
    host.deploy("1", None).unwrap();
    let mut messages = BTreeMap::new();
    let dir = host.dir.path().join("a-directory");
    fs::create_dir_all(&dir).unwrap();
    let mut cases: Vec<(&str, PathBuf)> = not_archives()
        .into_iter()
        .map(|(case, bytes)| (case, host.file(&case.replace(' ', "-"), &bytes)))
        .collect();
    cases.push(("a directory", dir));
    for (case, path) in &cases {
        let request = host.request("data", Some(path));
        let before = host.snapshot();
        let planned = volume::run(&request, &mut host.systemd, true, false)
            .map(|r| r.changed)
            .map_err(|e| ops_core::ansible::error_chain(&e));
        let run = host.volume(&request).map(|r| r.changed);
        assert!(run.is_err(), "{case}: the run refuses it");
        assert_eq!(planned, run, "{case}: check mode says what the run says");
        assert_eq!(host.snapshot(), before, "{case}");
        messages.insert(
            format!("ops_volume: {case}"),
            hidden(&host, &run.unwrap_err()),
        );
    }

    // ops_pod's check mode looks at a new version's archives the same way.
    for (case, bytes) in not_archives() {
        let before = host.snapshot();
        let bundle = host.dir.path().join("bundle-2");
        let _ = fs::remove_dir_all(&bundle);
        let err = host.deploy("2", Some(&bytes)).unwrap_err();
        assert_eq!(host.snapshot(), before, "{case}");
        let mut request = host.pod_request("shop", PodState::Started);
        request.bundle = Some(bundle);
        let planned = pod::run(
            &request,
            &mut host.systemd,
            &mut ops_core::image::PodmanCli,
            true,
            false,
        )
        .map(|r| r.changed)
        .map_err(|f| ops_core::ansible::error_chain(&f.error));
        assert_eq!(
            planned,
            Err(err.clone()),
            "{case}: check mode says the same"
        );
        messages.insert(format!("ops_pod: {case}"), hidden(&host, &err));
    }
    insta::assert_json_snapshot!(messages);

    // What the start cannot tell (an empty file is an empty archive to
    // tar) is not refused by either, and a good archive passes both.
    for (version, bytes) in [("3", Vec::new()), ("4", compressed("bz2", &tar_of(GOOD)))] {
        let archive = host.file("fine", &bytes);
        let request = host.request("conf", Some(&archive));
        assert!(
            volume::run(&request, &mut host.systemd, true, false)
                .unwrap()
                .changed
        );
        assert!(host.deploy(version, Some(&bytes)).unwrap().changed);
    }
}

#[test]
fn owner_keep_setuid_and_mode_are_what_is_on_disk() {
    let mut host = Host::new();
    host.deploy("1", None).unwrap();
    let mut entries = tar_of(&[
        ("./", "d"),
        ("bin/tool", "s:#!/bin/true"),
        // A hard link's header carries its own mode (0644 here): the file
        // it links to keeps its own.
        ("bin/same", "h:bin/tool"),
        ("shared", "d"),
    ]);
    // The directory setgid, as shared directories are.
    let shared = 3 * 512 + 512;
    let mut h = Header::new_old();
    h.as_mut_bytes()
        .copy_from_slice(&entries[shared..shared + 512]);
    assert_eq!(h.path().unwrap(), Path::new("shared"));
    h.set_mode(0o2775);
    h.set_cksum();
    entries[shared..shared + 512].copy_from_slice(h.as_bytes());
    let archive = host.file("setuid.tar", &entries);
    let mut request = host.request("data", Some(&archive));
    request.settings.keep_setuid = true;
    request.settings.owner = Some(4321);
    request.settings.group = Some(8765);
    let data = host.data_dir("data");
    let on_disk = |data: &Path| -> Vec<(String, u32, u32, u32)> {
        ["", "bin", "bin/tool", "bin/same", "shared"]
            .iter()
            .map(|n| {
                let m = fs::symlink_metadata(data.join(n)).unwrap();
                (n.to_string(), m.mode() & 0o7777, m.uid(), m.gid())
            })
            .collect()
    };
    let report = host.volume(&request).unwrap();
    assert!(report.changed);
    let record: volume::VolumeRecord =
        volume::read_record(&host.root.join("pods/shop/1/volumes/data"))
            .unwrap()
            .unwrap();
    assert_eq!((record.owner, record.group), (Some(4321), Some(8765)));
    assert_eq!(record.keep_setuid, Some(true));
    assert_eq!(
        on_disk(&data),
        [
            ("".to_owned(), record.mode, 4321, 8765),
            ("bin".to_owned(), 0o755, 4321, 8765),
            ("bin/tool".to_owned(), 0o4755, 4321, 8765),
            ("bin/same".to_owned(), 0o4755, 4321, 8765),
            ("shared".to_owned(), 0o2775, 4321, 8765),
        ]
    );
    // Another owner for a volume that keeps setuid bits: not in place,
    // where files its services made would get them for the new owner.
    request.settings.owner = Some(1111);
    request.settings.mode = Some(0o2750);
    let before = host.snapshot();
    let refused = host.volume(&request).unwrap_err();
    assert!(
        refused.contains("its owner is changed by extracting it again"),
        "{refused}"
    );
    assert_eq!(host.snapshot(), before, "nothing changed");
    // A file a service made, setuid: extracting again (replace) does not
    // keep it, and the archive's bits are the new owner's.
    let made = data.join("made-by-a-service");
    fs::write(&made, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&made, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    request.replace = true;
    let adjusted = host.volume(&request).unwrap();
    request.replace = false;
    assert!(adjusted.changed);
    assert!(!made.exists(), "the volume holds the archive again");
    assert_eq!(
        on_disk(&data),
        [
            ("".to_owned(), 0o2750, 1111, 8765),
            ("bin".to_owned(), 0o755, 1111, 8765),
            ("bin/tool".to_owned(), 0o4755, 1111, 8765),
            ("bin/same".to_owned(), 0o4755, 1111, 8765),
            ("shared".to_owned(), 0o2775, 1111, 8765),
        ]
    );
    let before = host.snapshot();
    assert!(!host.volume(&request).unwrap().changed);
    assert_eq!(host.snapshot(), before);
}

#[test]
fn owner_and_group_ids_that_chown_ignores_are_refused() {
    use ops_core::modules::volume::OpsVolume;
    let mut host = Host::new();
    host.deploy("1", None).unwrap();
    let archive = host.file("data.tar", &tar_of(GOOD));
    let before = host.snapshot();
    let mut messages = BTreeMap::new();
    for (option, value) in [
        ("owner", "4294967295"),
        ("group", "4294967295"),
        ("owner", "-1"),
        ("group", "-2"),
        ("owner", "4294967296"),
        ("owner", "99999999999999999999999"),
    ] {
        let result = ops_core::ansible::run_guarded::<OpsVolume>(serde_json::json!({
            "pod": "shop", "version": "1", "name": "data",
            "data": archive, "root": host.root, option: value,
        }));
        assert_eq!(result["failed"], true, "{option}={value}: {result}");
        assert_eq!(result["changed"], false, "{option}={value}: {result}");
        messages.insert(
            format!("{option}={value}"),
            result["msg"].as_str().unwrap().to_owned(),
        );
        assert_eq!(host.snapshot(), before, "{option}={value}");
    }
    insta::assert_json_snapshot!(messages);
    // The highest real id is taken.
    let result = ops_core::ansible::run_guarded::<OpsVolume>(serde_json::json!({
        "pod": "shop", "version": "1", "name": "data",
        "data": archive, "root": host.root, "owner": "4294967294", "group": "0",
    }));
    assert_eq!(result["changed"], true, "{result}");
    let meta = fs::symlink_metadata(host.data_dir("data").join("www/index.html")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4294967294, 0));
}

#[test]
fn the_diff_says_where_a_volume_is_mounted_and_where_it_is_not() {
    let host = Host::new();
    let dir = host.dir.path().join("bundle");
    fs::create_dir_all(&dir).unwrap();
    for unit in ["web.service", "worker.service", "tick.timer"] {
        fs::write(dir.join(unit), WEB).unwrap();
    }
    fs::write(dir.join("web.aci"), b"not read here").unwrap();
    let id = format!("sha512-{}", "ab".repeat(64));
    let pod = serde_json::json!({
        "name": "shop",
        "version": "1",
        "containers": [
            {"name": "web", "image": id, "systemd": {"unit-files": ["web.service"]}},
            {"name": "worker", "systemd": {"unit-files": ["worker.service", "tick.timer"]}},
        ],
        "images": [{"id": id, "path": "web.aci"}],
        "volumes": [
            {"name": "conf", "path": "/etc/app", "read-only": true},
            {"name": "data", "path": "/srv/data"},
        ],
    });
    fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
    let model = ops_core::bundle::load(&dir).unwrap().pod;
    let path = Path::new("/var/lib/ops/pods/shop/1/volumes/conf/data");
    let mut texts = BTreeMap::new();
    for runtime in [
        ops_core::image::Runtime::Systemd,
        ops_core::image::Runtime::Podman,
    ] {
        for v in &model.volumes {
            texts.insert(
                format!("{runtime:?} {}", v.name),
                volume::pod_diff_text(&model, runtime, v, path),
            );
        }
    }
    insta::assert_json_snapshot!(texts);
}

/// A replace's diff shows the counts of what was built (they are known
/// only once extracted: the "after" side used to say 0 entries and 0
/// bytes), and check mode says they are not known yet rather than 0, and
/// names the restart (it used to leave it out).
#[test]
fn a_replace_diff_shows_the_built_counts() {
    let mut host = Host::new();
    host.deploy("1", Some(&tar_of(GOOD))).unwrap();
    let archive = host.dir.path().join("next.tar");
    fs::write(
        &archive,
        tar_of(&[("./", "d"), ("a", "f:one"), ("b", "f:three")]),
    )
    .unwrap();
    let mut request = host.request("data", Some(&archive));
    request.replace = true;
    let planned = volume::run(&request, &mut host.systemd, true, true).unwrap();
    let after = planned.diff[0]["after"].as_str().unwrap().to_owned();
    assert!(
        after.contains("entries: (counted when extracted)\nbytes: (counted when extracted)\n"),
        "{after}"
    );
    let before = planned.diff[0]["before"].as_str().unwrap().to_owned();
    let replaced = host.volume(&request).unwrap();
    let (entries, bytes) = (replaced.entries.unwrap(), replaced.bytes.unwrap());
    assert_eq!((entries, bytes), (2, 8), "{replaced:?}");
    // Check mode names the restart the run makes.
    assert_eq!(planned.actions, replaced.actions);
    assert!(
        replaced.actions[1].starts_with("restart shop-1-web.service"),
        "{:?}",
        replaced.actions
    );
    let diff = &replaced.diff[0];
    assert_eq!(diff["before"].as_str().unwrap(), before);
    let after = diff["after"].as_str().unwrap();
    assert!(after.contains("entries: 2\nbytes: 8\n"), "{after}");
}
