//! ops_image's engine on a temporary store with images built here: every
//! format and compression, layers with whiteouts, wrong ids, truncated and
//! corrupt files, check mode, removal, and downloads from a real HTTP
//! server on loopback; the podman runtime against the recording fake.
//! (podman itself and signatures are covered by the real-component tests
//! in tests/images.)

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ops_core::ansible::error_chain;
use ops_core::bundle::ImageId;
use ops_core::image::{self, Location, Request, Runtime, State};
use sha2::{Digest, Sha256, Sha512};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Entries of a tar: `("path", "f:content")`, `("dir/", "d")`, `("l", "l:target")`,
/// `("h", "h:target")` (hard link).
fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, what) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        if let Some(text) = what.strip_prefix("f:") {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(text.len() as u64);
            b.append_data(&mut h, path, text.as_bytes()).unwrap();
        } else if let Some(target) = what.strip_prefix("l:") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, target).unwrap();
        } else if let Some(target) = what.strip_prefix("h:") {
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, path, target).unwrap();
        } else {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, path, &[][..]).unwrap();
        }
    }
    b.into_inner().unwrap()
}

const ACI_MANIFEST: &str = r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/web","app":{"exec":["/bin/sh"]}}"#;

/// An ACI and its id.
fn aci() -> (Vec<u8>, String) {
    let bytes = tar_of(&[
        ("manifest", &format!("f:{ACI_MANIFEST}")),
        ("rootfs/", "d"),
        ("rootfs/bin/", "d"),
        ("rootfs/bin/busybox", "f:#!binary"),
        ("rootfs/bin/sh", "l:busybox"),
        ("rootfs/www/index.html", "f:hello from the aci\n"),
    ]);
    let id = format!("sha512-{}", hex(&Sha512::digest(&bytes)));
    (bytes, id)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Three layers: a base, one with a whiteout and an opaque directory, one
/// adding a file and whiting out another.
fn layers() -> Vec<Vec<u8>> {
    vec![
        tar_of(&[
            ("bin/busybox", "f:#!binary"),
            ("www/index.html", "f:base\n"),
            ("www/old.html", "f:old\n"),
            ("opt/data/x", "f:x"),
            ("opt/data/y", "f:y"),
            ("etc/keep/a", "f:a"),
            ("etc/keep/b", "f:b"),
        ]),
        tar_of(&[
            ("www/.wh.old.html", "f:"),
            ("opt/data/.wh..wh..opq", "f:"),
            ("opt/data/z", "f:z"),
            ("www/index.html", "f:hello from the layers\n"),
        ]),
        tar_of(&[("www/new.html", "f:new\n"), ("etc/keep/.wh.b", "f:")]),
    ]
}

fn config_of(layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", hex(&Sha256::digest(l))))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// An OCI image-layout archive (blobs first, as podman writes it); the
/// first layer gzip-compressed. Returns it and its id.
fn oci(layers: &[Vec<u8>]) -> (Vec<u8>, String) {
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    };
    let mut descriptors = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let (blob, media) = if i == 0 {
            (gzip(layer), "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (layer.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let digest = hex(&Sha256::digest(&blob));
        add(&mut b, &format!("blobs/sha256/{digest}"), &blob);
        descriptors.push(serde_json::json!({"mediaType": media, "digest": format!("sha256:{digest}"), "size": blob.len()}));
    }
    let config = config_of(layers);
    let config_digest = hex(&Sha256::digest(&config));
    add(&mut b, &format!("blobs/sha256/{config_digest}"), &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": descriptors,
    }))
    .unwrap();
    let manifest_digest = hex(&Sha256::digest(&manifest));
    add(
        &mut b,
        &format!("blobs/sha256/{manifest_digest}"),
        &manifest,
    );
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{manifest_digest}"), "size": manifest.len()}]});
    add(&mut b, "index.json", index.to_string().as_bytes());
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    (b.into_inner().unwrap(), format!("sha256:{config_digest}"))
}

/// A Docker archive (layers first, a symlinked alias, as podman writes it).
fn docker(layers: &[Vec<u8>]) -> (Vec<u8>, String) {
    let mut b = tar::Builder::new(Vec::new());
    let mut names = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let name = format!("{}.tar", hex(&Sha256::digest(layer)));
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o444);
        h.set_size(layer.len() as u64);
        b.append_data(&mut h, &name, &layer[..]).unwrap();
        let alias = format!("v1-{i}/layer.tar");
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, &alias, format!("../{name}")).unwrap();
        names.push(alias);
    }
    let config = config_of(layers);
    let id = hex(&Sha256::digest(&config));
    let mut h = tar::Header::new_ustar();
    h.set_size(config.len() as u64);
    b.append_data(&mut h, format!("{id}.json"), &config[..])
        .unwrap();
    let manifest = serde_json::json!([{"Config": format!("{id}.json"), "RepoTags": ["localhost/t:1"], "Layers": names}]).to_string();
    let mut h = tar::Header::new_ustar();
    h.set_size(manifest.len() as u64);
    b.append_data(&mut h, "manifest.json", manifest.as_bytes())
        .unwrap();
    (b.into_inner().unwrap(), format!("sha256:{id}"))
}

struct Host {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        Host { dir, root }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    fn request(&self, id: &str, source: Option<Location>) -> Request {
        Request {
            id: ImageId::parse(id).unwrap(),
            source,
            signature: None,
            keyring: None,
            require_signature: false,
            runtime: Runtime::Systemd,
            state: State::Present,
            timeout: Duration::from_secs(5),
            root: self.root.clone(),
            lock_timeout: Duration::from_secs(5),
        }
    }

    fn import(&self, id: &str, file: &Path) -> Result<image::Report, String> {
        image::run(
            &self.request(id, Some(Location::Path(file.to_owned()))),
            &mut image::PodmanCli,
            false,
            false,
        )
        .map_err(|e| error_chain(&e).replace(&self.dir.path().display().to_string(), "TMP"))
    }

    fn rootfs(&self, report: &image::Report) -> PathBuf {
        PathBuf::from(&report.location)
    }

    /// Every path in the store with its content (files) or target (links).
    fn snapshot(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.root.exists() {
            walk(&self.root, &self.root, &mut out);
        }
        out.sort();
        out
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(base).unwrap().display().to_string();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.push(format!("{rel}/"));
            walk(base, &path, out);
        } else if meta.file_type().is_symlink() {
            out.push(format!(
                "{rel} -> {}",
                fs::read_link(&path).unwrap().display()
            ));
        } else {
            out.push(format!(
                "{rel}: {}",
                hex(&Sha256::digest(fs::read(&path).unwrap()))
            ));
        }
    }
}

#[test]
fn an_aci_in_every_compression_is_the_same_image_and_a_rerun_does_nothing() {
    let (plain, id) = aci();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(&plain).unwrap();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&plain).unwrap();
    // The file names lie on purpose: content decides.
    let files = [
        ("plain.tar.gz", plain.clone()),
        ("gzip.aci", gzip(&plain)),
        ("bzip2.aci", bz.finish().unwrap()),
        ("xz.tar", xz.finish().unwrap()),
    ];
    for (name, bytes) in files {
        let host = Host::new();
        let file = host.file(name, &bytes);
        // The shortest accepted id: 32 hex digits.
        let short = &id[..7 + 32];
        let report = host.import(short, &file).unwrap();
        assert!(report.changed, "{name}");
        assert_eq!(report.id, id, "{name}: the full id is reported");
        assert_eq!(report.format, Some(image::Format::Aci));
        let rootfs = host.rootfs(&report);
        assert_eq!(
            fs::read_to_string(rootfs.join("www/index.html")).unwrap(),
            "hello from the aci\n"
        );
        assert_eq!(
            fs::read_link(rootfs.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert!(
            !host.root.join("staging").exists(),
            "{name}: staging is cleaned up"
        );
        let before = host.snapshot();
        let again = host.import(&id, &file).unwrap();
        assert!(!again.changed, "{name}: a rerun changes nothing");
        assert_eq!(again.location, report.location);
        assert_eq!(host.snapshot(), before);
    }
}

fn assert_layered_tree(rootfs: &Path) {
    assert_eq!(
        fs::read_to_string(rootfs.join("www/index.html")).unwrap(),
        "hello from the layers\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("www/new.html")).unwrap(),
        "new\n"
    );
    assert!(!rootfs.join("www/old.html").exists(), "whited out");
    let data: Vec<_> = fs::read_dir(rootfs.join("opt/data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(data, ["z"], "the opaque directory hides the lower layers");
    assert!(rootfs.join("etc/keep/a").exists());
    assert!(!rootfs.join("etc/keep/b").exists());
    let names = format!("{:?}", walk_names(rootfs));
    assert!(!names.contains(".wh."), "no whiteout file is left: {names}");
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn oci_and_docker_layers_are_applied_in_order_with_whiteouts() {
    let layers = layers();
    for (format, (bytes, id)) in [
        (image::Format::Oci, oci(&layers)),
        (image::Format::Docker, docker(&layers)),
    ] {
        let host = Host::new();
        let file = host.file("image.tar", &bytes);
        let report = host.import(&id, &file).unwrap();
        assert_eq!(report.format, Some(format));
        assert_eq!(report.id, id);
        assert_layered_tree(&host.rootfs(&report));
        assert!(!host.import(&id, &file).unwrap().changed);
    }
}

#[test]
fn a_wrong_id_a_wrong_format_or_a_damaged_file_fails_and_changes_nothing() {
    let host = Host::new();
    let (aci_bytes, aci_id) = aci();
    let good = host.file("good.aci", &aci_bytes);
    host.import(&aci_id, &good).unwrap();
    let before = host.snapshot();

    let layers = layers();
    let (oci_bytes, oci_id) = oci(&layers);
    let oci_file = host.file("oci.tar", &oci_bytes);
    let mut corrupt_layer = oci_bytes.clone();
    // Flip a byte inside the last layer's data (its blob keeps its name).
    let at = find(&corrupt_layer, b"new\n");
    corrupt_layer[at] ^= 0x20;
    let truncated = &aci_bytes[..aci_bytes.len() / 2];
    let not_an_image = tar_of(&[("README", "f:just a file")]);
    let other_id = format!("sha512-{}", "ab".repeat(64));
    let wrong_oci = format!("sha256:{}", "cd".repeat(32));

    let cases: Vec<(&str, String, PathBuf)> = vec![
        ("aci, wrong id", other_id.clone(), good.clone()),
        ("oci, wrong id", wrong_oci, oci_file.clone()),
        ("oci given an aci id", other_id.clone(), oci_file.clone()),
        ("aci given an oci id", oci_id.clone(), good.clone()),
        (
            "truncated",
            other_id.clone(),
            host.file("truncated.aci", truncated),
        ),
        (
            "corrupt layer",
            oci_id.clone(),
            host.file("corrupt.tar", &corrupt_layer),
        ),
        (
            "not an image",
            oci_id.clone(),
            host.file("readme.tar", &not_an_image),
        ),
        ("missing file", oci_id, host.dir.path().join("missing.tar")),
    ];
    let mut messages = Vec::new();
    for (what, id, file) in cases {
        let err = host.import(&id, &file).unwrap_err();
        assert_eq!(host.snapshot(), before, "{what}: the store is untouched");
        messages.push(format!("{what}: {err}"));
    }
    insta::assert_snapshot!(messages.join("\n"));
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .rposition(|w| w == needle)
        .unwrap()
}

#[test]
fn check_mode_plans_without_touching_anything_and_absent_removes() {
    let host = Host::new();
    let (bytes, id) = aci();
    let file = host.file("image.aci", &bytes);
    let request = host.request(&id, Some(Location::Path(file.clone())));
    let planned = image::run(&request, &mut image::PodmanCli, true, true).unwrap();
    assert!(planned.changed);
    assert_eq!(planned.actions.len(), 1);
    assert_eq!(planned.diff[0]["before"], "");
    assert!(
        !host.root.exists(),
        "check mode wrote nothing, not even the store"
    );

    host.import(&id, &file).unwrap();
    let mut absent = host.request(&id, None);
    absent.state = State::Absent;
    let planned = image::run(&absent, &mut image::PodmanCli, true, true).unwrap();
    assert!(planned.changed);
    assert!(
        PathBuf::from(&planned.location).exists(),
        "check mode removed nothing"
    );
    let removed = image::run(&absent, &mut image::PodmanCli, false, false).unwrap();
    assert!(removed.changed);
    assert!(!PathBuf::from(&removed.location).exists());
    assert!(!host.root.join("images").exists());
    assert!(
        !image::run(&absent, &mut image::PodmanCli, false, false)
            .unwrap()
            .changed,
        "a second removal does nothing"
    );

    let err = image::run(
        &host.request(&id, None),
        &mut image::PodmanCli,
        false,
        false,
    )
    .unwrap_err();
    assert!(error_chain(&err).contains("neither path nor uri"), "{err}");
}

/// A local file that cannot be an image (not a tar, its compression
/// damaged) is refused in check mode as in the real run, with the same
/// message and without a byte of it shown; the host stays as it was.
#[test]
fn check_mode_refuses_a_local_file_that_cannot_be_an_image() {
    let host = Host::new();
    let (_, id) = aci();
    let mut gzip_garbage = vec![0x1f, 0x8b, 0x08, 0x00];
    gzip_garbage.extend_from_slice(b"SECRET-BYTES garbage after a gzip magic");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("text", b"root:SECRET-BYTES:19000:0:99999:7:::\n".repeat(20)),
        ("gzip header then garbage", gzip_garbage),
    ];
    let mut messages = Vec::new();
    for (what, bytes) in cases {
        let file = host.file("not-an-image", &bytes);
        let request = host.request(&id, Some(Location::Path(file)));
        let checked =
            error_chain(&image::run(&request, &mut image::PodmanCli, true, true).unwrap_err());
        assert!(!host.root.exists(), "{what}: check mode wrote nothing");
        let real =
            error_chain(&image::run(&request, &mut image::PodmanCli, false, false).unwrap_err());
        assert_eq!(checked, real, "{what}: check mode says what the run says");
        assert!(!checked.contains("SECRET"), "{what}: {checked}");
        assert!(!host.root.exists(), "{what}: the refusal wrote nothing");
        messages.push(format!(
            "{what}: {}",
            checked.replace(&host.dir.path().display().to_string(), "TMP")
        ));
    }
    insta::assert_snapshot!(messages.join("\n"));
}

/// A one-connection-at-a-time HTTP server on loopback: `/image` serves the
/// bytes, `/stall` sends half of them and then waits, anything else 404.
fn serve(bytes: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let line = String::from_utf8_lossy(&request[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            let header = |len: usize| {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
            };
            match path.as_str() {
                "/image" => {
                    let _ = stream.write_all(header(bytes.len()).as_bytes());
                    let _ = stream.write_all(&bytes);
                }
                "/stall" => {
                    let _ = stream.write_all(header(bytes.len()).as_bytes());
                    let _ = stream.write_all(&bytes[..bytes.len() / 2]);
                    std::thread::sleep(Duration::from_secs(5));
                }
                _ => {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        }
    });
    format!("http://{addr}")
}

#[test]
fn downloads_are_verified_and_a_404_or_a_stall_leaves_nothing_behind() {
    let (bytes, id) = aci();
    let base = serve(bytes);
    let host = Host::new();
    let mut request = host.request(&id, Some(Location::Http(format!("{base}/missing"))));
    let err = error_chain(&image::run(&request, &mut image::PodmanCli, false, false).unwrap_err())
        .replace(&base, "BASE");
    let after_404 = host.snapshot();
    assert!(
        !after_404
            .iter()
            .any(|p| p.starts_with("staging") || p.starts_with("images")),
        "{after_404:?}"
    );

    request.source = Some(Location::Http(format!("{base}/stall")));
    request.timeout = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let stalled =
        error_chain(&image::run(&request, &mut image::PodmanCli, false, false).unwrap_err())
            .replace(&base, "BASE");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout cut the stall short"
    );
    let after_stall = host.snapshot();
    assert!(
        !after_stall
            .iter()
            .any(|p| p.starts_with("staging") || p.starts_with("images")),
        "{after_stall:?}"
    );
    // A server that does not speak TLS where https was asked for.
    let plain = serve(b"not TLS".to_vec());
    request.source = Some(Location::Http(format!(
        "{}/image",
        plain.replace("http://", "https://")
    )));
    let tls = error_chain(&image::run(&request, &mut image::PodmanCli, false, false).unwrap_err());
    assert!(tls.starts_with("cannot download https://"), "{tls}");
    assert!(tls.contains("TLS failed"), "{tls}");
    assert!(!host
        .snapshot()
        .iter()
        .any(|p| p.starts_with("staging") || p.starts_with("images")));
    insta::assert_snapshot!(format!("404: {err}\nstall: {stalled}"));

    request.source = Some(Location::Http(format!("{base}/image")));
    request.timeout = Duration::from_secs(5);
    let report = image::run(&request, &mut image::PodmanCli, false, false).unwrap();
    assert!(report.changed);
    assert_eq!(report.id, id);
    assert!(PathBuf::from(&report.location)
        .join("www/index.html")
        .exists());
}

/// An ACI of these entries (a manifest first) and its id.
fn aci_of(entries: &[(&str, &str)]) -> (Vec<u8>, String) {
    let manifest = format!("f:{ACI_MANIFEST}");
    let mut all = vec![("manifest", manifest.as_str())];
    all.extend_from_slice(entries);
    let bytes = tar_of(&all);
    let id = format!("sha512-{}", hex(&Sha512::digest(&bytes)));
    (bytes, id)
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).unwrap().ino()
}

#[test]
fn an_aci_with_gnu_tar_hard_links_keeps_them_as_hard_links() {
    // GNU tar names a hard link's target by its archive path, rootfs/
    // included (and ./ too when given `-C dir .`).
    let (bytes, id) = aci_of(&[
        ("rootfs/", "d"),
        ("rootfs/bin/", "d"),
        ("rootfs/bin/busybox", "f:#!binary"),
        ("rootfs/bin/sh", "h:rootfs/bin/busybox"),
        ("./rootfs/bin/ls", "h:./rootfs/bin/busybox"),
        ("rootfs/bin/link", "l:/bin/busybox"),
        // A hard link to a symlink is a symlink, read in the image.
        ("rootfs/sbin/init", "h:rootfs/bin/link"),
    ]);
    let host = Host::new();
    let file = host.file("busybox.aci", &bytes);
    let report = host.import(&id, &file).unwrap();
    assert!(report.changed);
    let rootfs = host.rootfs(&report);
    let busybox = inode(&rootfs.join("bin/busybox"));
    assert_eq!(inode(&rootfs.join("bin/sh")), busybox);
    assert_eq!(inode(&rootfs.join("bin/ls")), busybox);
    assert_eq!(
        fs::read_link(rootfs.join("sbin/init")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert!(!host.import(&id, &file).unwrap().changed);
}

/// Layered images whose hard links must work: a layer linking a file of
/// a lower one (directly, through another such link, or a lower symlink).
#[test]
fn a_layer_may_hard_link_the_files_of_lower_layers() {
    let layers = vec![
        tar_of(&[
            ("bin/busybox", "f:#!binary"),
            ("lib/libc.so", "l:/usr/lib/libc.so.6"),
        ]),
        tar_of(&[
            ("bin/sh", "h:bin/busybox"),
            ("bin/ash", "h:bin/sh"),
            ("lib/libc.so.alias", "h:lib/libc.so"),
            ("www/index.html", "f:hello\n"),
            ("www/copy.html", "h:www/index.html"),
        ]),
    ];
    for (format, (bytes, id)) in [("oci", oci(&layers)), ("docker", docker(&layers))] {
        let host = Host::new();
        let file = host.file("image.tar", &bytes);
        let report = host.import(&id, &file).unwrap();
        let rootfs = host.rootfs(&report);
        let busybox = inode(&rootfs.join("bin/busybox"));
        assert_eq!(inode(&rootfs.join("bin/sh")), busybox, "{format}");
        assert_eq!(inode(&rootfs.join("bin/ash")), busybox, "{format}");
        assert_eq!(
            inode(&rootfs.join("www/copy.html")),
            inode(&rootfs.join("www/index.html"))
        );
        assert_eq!(
            fs::read_link(rootfs.join("lib/libc.so.alias")).unwrap(),
            Path::new("/usr/lib/libc.so.6")
        );
        assert!(!host.import(&id, &file).unwrap().changed, "{format}");
    }
}

/// The lower layer the odd layers below are laid over.
fn base_layer() -> Vec<u8> {
    tar_of(&[
        ("www/index.html", "f:base\n"),
        ("www/old.html", "f:old\n"),
        ("etc", "l:/etc"),
        ("data/", "d"),
        ("data/x", "f:x"),
    ])
}

/// Layers and archives that must be refused, each naming its entry, and
/// leaving the store as it was.
#[test]
fn hard_links_out_of_the_tree_and_odd_whiteouts_are_refused_by_entry() {
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "hard link in the first layer to nothing",
            vec![tar_of(&[("bin/sh", "h:bin/busybox")])],
        ),
        (
            "hard link to a lower file through a lower symlink",
            vec![base_layer(), tar_of(&[("passwd", "h:etc/passwd")])],
        ),
        (
            "hard link to a lower directory",
            vec![base_layer(), tar_of(&[("d", "h:data")])],
        ),
        (
            "hard link to a whited-out file",
            vec![
                base_layer(),
                tar_of(&[("www/.wh.old.html", "f:"), ("old", "h:www/old.html")]),
            ],
        ),
        (
            "whiteout of ''",
            vec![base_layer(), tar_of(&[(".wh.", "f:")])],
        ),
        (
            "whiteout of '.'",
            vec![base_layer(), tar_of(&[(".wh..", "f:")])],
        ),
        (
            "whiteout of '..'",
            vec![base_layer(), tar_of(&[(".wh...", "f:")])],
        ),
        (
            "whiteout of '.' in a directory",
            vec![base_layer(), tar_of(&[("www/.wh..", "f:")])],
        ),
        (
            "whiteout that is a directory",
            vec![base_layer(), tar_of(&[(".wh.www/", "d")])],
        ),
        (
            "whiteout with content",
            vec![base_layer(), tar_of(&[("www/.wh.old.html", "f:surprise")])],
        ),
        (
            "whiteout that is a symlink",
            vec![base_layer(), tar_of(&[("www/.wh.old.html", "l:/")])],
        ),
        (
            "entry under a whiteout name",
            vec![base_layer(), tar_of(&[(".wh.www/index.html", "f:x")])],
        ),
        (
            "opaque marker where a lower layer has a file",
            vec![
                base_layer(),
                tar_of(&[("www/index.html/.wh..wh..opq", "f:")]),
            ],
        ),
        (
            "whiteout under a lower layer's file",
            vec![base_layer(), tar_of(&[("www/index.html/.wh.x", "f:")])],
        ),
        (
            "whiteout under a lower layer's symlink",
            vec![base_layer(), tar_of(&[("etc/.wh.passwd", "f:")])],
        ),
        (
            "entry under a lower layer's symlink",
            vec![base_layer(), tar_of(&[("etc/newfile", "f:x")])],
        ),
        (
            "opaque marker that is a directory",
            vec![base_layer(), tar_of(&[("data/.wh..wh..opq/", "d")])],
        ),
    ];
    let host = Host::new();
    let (good, good_id) = aci();
    host.import(&good_id, &host.file("good.aci", &good))
        .unwrap();
    let before = host.snapshot();
    let mut messages = Vec::new();
    for (case, layers) in cases {
        for (format, (bytes, id)) in [("oci", oci(&layers)), ("docker", docker(&layers))] {
            let file = host.file("odd.tar", &bytes);
            let err = host
                .import(&id, &file)
                .expect_err(&format!("{case} ({format})"));
            assert_eq!(
                host.snapshot(),
                before,
                "{case} ({format}): the store changed"
            );
            if format == "oci" {
                messages.push(format!("{case}: {err}"));
            }
        }
    }
    // An ACI's hard link may not leave its rootfs/.
    let (aci_bytes, aci_id) =
        aci_of(&[("rootfs/bin/", "d"), ("rootfs/bin/manifest", "h:manifest")]);
    let err = host
        .import(&aci_id, &host.file("escape.aci", &aci_bytes))
        .unwrap_err();
    assert_eq!(host.snapshot(), before);
    messages.push(format!("aci hard link out of rootfs: {err}"));
    let digests = regex_free_digests(&messages.join("\n"));
    insta::assert_snapshot!(digests);
}

/// Layer digests vary with the case: shown as `<digest>`.
fn regex_free_digests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("sha256/") {
        let (head, tail) = rest.split_at(at + "sha256/".len());
        out.push_str(head);
        let hex_len = tail.chars().take_while(|c| c.is_ascii_hexdigit()).count();
        out.push_str("<digest>");
        rest = &tail[hex_len..];
    }
    out.push_str(rest);
    out
}

type Layers = Vec<Vec<u8>>;

/// Whiteouts the OCI format allows, odd as they look: each applied as
/// the layer spec says, the root always a directory.
#[test]
fn whiteouts_apply_to_lower_layers_only_and_never_to_the_root() {
    let cases: Vec<(&str, Layers, &[&str])> = vec![
        (
            "whiteouts in the first layer hide nothing",
            vec![tar_of(&[
                (".wh.www", "f:"),
                (".wh..wh..opq", "f:"),
                ("a", "f:a"),
            ])],
            &["a: a"],
        ),
        (
            "whiteout of a path no lower layer has",
            vec![
                base_layer(),
                tar_of(&[("www/.wh.nothing", "f:"), ("nope/.wh.x", "f:")]),
            ],
            &[
                "data/",
                "data/x: x",
                "etc -> /etc",
                "nope/",
                "www/",
                "www/index.html: base\n",
                "www/old.html: old\n",
            ],
        ),
        (
            "opaque marker at the top of a layer",
            vec![
                base_layer(),
                tar_of(&[(".wh..wh..opq", "f:"), ("www/new.html", "f:new\n")]),
            ],
            &["www/", "www/new.html: new\n"],
        ),
        (
            "whiteout at the top of a layer",
            vec![
                base_layer(),
                tar_of(&[(".wh.www", "f:"), (".wh.etc", "f:")]),
            ],
            &["data/", "data/x: x"],
        ),
        (
            "a file and its whiteout in the same layer: the file stays",
            vec![
                base_layer(),
                tar_of(&[("www/old.html", "f:new\n"), ("www/.wh.old.html", "f:")]),
            ],
            &[
                "data/",
                "data/x: x",
                "etc -> /etc",
                "www/",
                "www/index.html: base\n",
                "www/old.html: new\n",
            ],
        ),
        (
            "aufs's own entries are no part of the image",
            vec![
                base_layer(),
                tar_of(&[
                    ("www/.wh..wh.plnk/", "d"),
                    ("www/.wh..wh.plnk/4.12", "f:x"),
                    (".wh..wh.aufs", "f:"),
                    ("www/.wh..wh.orph/", "d"),
                ]),
            ],
            &[
                "data/",
                "data/x: x",
                "etc -> /etc",
                "www/",
                "www/index.html: base\n",
                "www/old.html: old\n",
            ],
        ),
    ];
    for (case, layers, expected) in cases {
        let (bytes, id) = oci(&layers);
        let host = Host::new();
        let report = host
            .import(&id, &host.file("image.tar", &bytes))
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let rootfs = host.rootfs(&report);
        assert!(fs::symlink_metadata(&rootfs).unwrap().is_dir(), "{case}");
        let mut tree = Vec::new();
        walk_text(&rootfs, &rootfs, &mut tree);
        tree.sort();
        assert_eq!(tree, expected, "{case}");
    }
}

/// Every path under `dir` with its text (files) or target (symlinks).
fn walk_text(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(base).unwrap().display().to_string();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.push(format!("{rel}/"));
            walk_text(base, &path, out);
        } else if meta.file_type().is_symlink() {
            out.push(format!(
                "{rel} -> {}",
                fs::read_link(&path).unwrap().display()
            ));
        } else {
            out.push(format!("{rel}: {}", fs::read_to_string(&path).unwrap()));
        }
    }
}

/// A tar of raw members (outer archive of an image), each `(path, data)`;
/// `None` makes a symlink to `x`.
fn raw_archive(members: &[(String, Option<Vec<u8>>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        match data {
            Some(data) => {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, &data[..]).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, "x").unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// What an image archive may make the importer hold in memory is bounded:
/// documents, their total, the files and links besides the layers, and
/// each entry's headers. Each archive here is small once compressed.
#[test]
fn what_an_archive_makes_the_importer_keep_in_memory_is_bounded() {
    let layout = || {
        vec![
            (
                "oci-layout".to_owned(),
                Some(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            ),
            (
                "index.json".to_owned(),
                Some(br#"{"manifests":[]}"#.to_vec()),
            ),
        ]
    };
    let big_document = {
        let mut m = layout();
        m.push(("blobs/sha256/big".to_owned(), Some(vec![b' '; 5 << 20])));
        m
    };
    let many_documents = {
        let mut m = layout();
        for n in 0..6 {
            m.push((format!("blobs/sha256/doc{n}"), Some(vec![b' '; 3 << 20])));
        }
        m
    };
    let many_links = {
        let mut m = layout();
        for n in 0..10_001 {
            m.push((format!("alias{n}"), None));
        }
        m
    };
    let long_name = {
        let mut m = layout();
        m.push(("d/".repeat(600 << 10) + "f", Some(b"x".to_vec())));
        m
    };
    let long_name_in_a_layer = {
        let layer = raw_archive(&[("d/".repeat(600 << 10) + "f", Some(b"x".to_vec()))]);
        let mut m = layout();
        m.push(("blobs/sha256/layer".to_owned(), Some(layer)));
        m
    };
    let host = Host::new();
    let id = format!("sha256:{}", "ab".repeat(32));
    let mut messages = Vec::new();
    for (case, members) in [
        ("a document over the limit", big_document),
        ("documents over the total", many_documents),
        ("too many files and links", many_links),
        ("a long name", long_name),
        ("a long name in a layer", long_name_in_a_layer),
    ] {
        let bytes = gzip(&raw_archive(&members));
        assert!(bytes.len() < 512 << 10, "{case}: {} bytes", bytes.len());
        let err = host
            .import(&id, &host.file("big.tar.gz", &bytes))
            .expect_err(case);
        assert!(!host.root.join("images").exists(), "{case}");
        messages.push(format!("{case}: {err}"));
    }
    insta::assert_snapshot!(messages.join("\n"));
}

// The podman runtime, against the recording fake (podman itself is
// covered by the real-component tests in tests/images).

use ops_core::image::podman::fake::Recording;

impl Host {
    fn podman_request(&self, id: &str, file: Option<&Path>, state: State) -> Request {
        let mut request = self.request(id, file.map(|f| Location::Path(f.to_owned())));
        request.runtime = Runtime::Podman;
        request.state = state;
        request
    }

    /// Run against the fake; errors as the module prints them, TMP for the
    /// temporary directory.
    fn podman_run(
        &self,
        podman: &mut Recording,
        id: &str,
        file: Option<&Path>,
        state: State,
    ) -> Result<image::Report, String> {
        image::run(&self.podman_request(id, file, state), podman, false, false)
            .map_err(|e| self.hide_tmp(&error_chain(&e)))
    }

    fn hide_tmp(&self, text: &str) -> String {
        text.replace(&self.dir.path().display().to_string(), "TMP")
    }

    fn calls(&self, podman: &Recording) -> Vec<String> {
        podman.calls.iter().map(|c| self.hide_tmp(c)).collect()
    }

    fn podman_record(&self, id: &str) -> Option<serde_json::Value> {
        let dir = match id.split_once(':') {
            Some((_, hex)) => format!("sha256-{hex}"),
            None => id[..7 + 32].to_owned(),
        };
        let path = self.root.join("images/podman").join(dir).join("image.json");
        fs::read(path)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap())
    }
}

fn aci_reference(id: &str) -> String {
    format!("localhost/ops-aci:{}", &id[..7 + 32])
}

#[test]
fn podman_runtime_imports_oci_docker_and_aci_once_and_records_them() {
    let host = Host::new();
    let (aci_bytes, aci_id) = aci();
    let (oci_bytes, oci_id) = oci(&layers());
    let (docker_bytes, docker_id) = docker(&layers());
    let aci_file = host.file("web.aci", &aci_bytes);
    let oci_file = host.file("oci.tar", &oci_bytes);
    let docker_file = host.file("docker.tar", &docker_bytes);
    // The same layers and config: OCI and Docker are the same image.
    assert_eq!(oci_id, docker_id);
    let oci_hex = oci_id.trim_start_matches("sha256:").to_owned();
    let cases = [
        (
            "aci",
            &aci_id,
            &aci_file,
            aci_reference(&aci_id),
            format!(
                "import --quiet --change 'CMD [\"/bin/sh\"]' TMP/store/staging/image-{}/rootfs.tar {}",
                &aci_id[..7 + 32],
                aci_reference(&aci_id)
            ),
        ),
        ("oci", &oci_id, &oci_file, oci_hex.clone(), "load --input TMP/oci.tar".to_owned()),
        ("docker", &docker_id, &docker_file, oci_hex.clone(), "load --input TMP/docker.tar".to_owned()),
    ];
    for (format, id, file, reference, call) in cases {
        let mut podman = Recording::default();
        let report = host
            .podman_run(&mut podman, id, Some(file), State::Present)
            .unwrap();
        assert!(report.changed, "{format}");
        assert_eq!(report.format.unwrap().name(), format);
        assert_eq!(report.location, reference);
        assert_eq!(host.calls(&podman), vec![call], "{format}");
        assert!(podman.images.contains_key(&reference), "{format}");
        let record = host.podman_record(id).expect("the record is written");
        assert_eq!(record["id"], serde_json::json!(id), "{format}");
        assert_eq!(record["runtime"], "podman");
        assert_eq!(record["location"], serde_json::json!(reference));
        assert_eq!(record["size"], serde_json::json!(podman.images[&reference]));
        assert!(
            !host.root.join("staging").exists(),
            "{format}: staging is gone"
        );

        let store = host.snapshot();
        let again = host
            .podman_run(&mut podman, id, Some(file), State::Present)
            .unwrap();
        assert!(!again.changed, "{format}: a rerun changes nothing");
        assert_eq!(
            podman.calls.len(),
            1,
            "{format}: and calls nothing that changes podman"
        );
        assert_eq!(host.snapshot(), store);

        let removed = host
            .podman_run(&mut podman, id, None, State::Absent)
            .unwrap();
        assert!(removed.changed);
        assert_eq!(host.calls(&podman)[1], format!("image rm {reference}"));
        assert!(podman.images.is_empty(), "{format}: podman removed it");
        assert!(
            !host.root.join("images").exists(),
            "{format}: the record is gone"
        );
    }
}

#[test]
fn podman_runtime_takes_over_a_reference_podman_has_without_a_record() {
    let host = Host::new();
    let (aci_bytes, aci_id) = aci();
    let (oci_bytes, oci_id) = oci(&layers());
    let aci_file = host.file("web.aci", &aci_bytes);
    let oci_file = host.file("oci.tar", &oci_bytes);
    let oci_hex = oci_id.trim_start_matches("sha256:");
    // What an earlier import left under ops's tag, and an image loaded by hand.
    let reference = aci_reference(&aci_id);
    let mut podman = Recording::with(&[&reference, oci_hex]);

    host.podman_run(&mut podman, &aci_id, Some(&aci_file), State::Present)
        .unwrap();
    let calls = host.calls(&podman);
    assert_eq!(
        calls[0],
        format!("image rm {reference}"),
        "replaced, not trusted"
    );
    assert!(calls[1].starts_with("import --quiet"), "{calls:?}");
    assert!(host.podman_record(&aci_id).is_some());

    // podman load of an image podman has is harmless; ops records it.
    podman.calls.clear();
    let report = host
        .podman_run(&mut podman, &oci_id, Some(&oci_file), State::Present)
        .unwrap();
    assert!(report.changed);
    assert_eq!(host.calls(&podman), vec!["load --input TMP/oci.tar"]);
    assert!(host.podman_record(&oci_id).is_some());

    // A record whose image podman lost is not present: imported again.
    podman.images.remove(oci_hex);
    podman.calls.clear();
    let report = host
        .podman_run(&mut podman, &oci_id, Some(&oci_file), State::Present)
        .unwrap();
    assert!(report.changed);
    assert_eq!(host.calls(&podman), vec!["load --input TMP/oci.tar"]);
}

#[test]
fn podman_keeping_a_container_of_the_image_refuses_its_removal() {
    let host = Host::new();
    let (oci_bytes, oci_id) = oci(&layers());
    let oci_file = host.file("oci.tar", &oci_bytes);
    let hex = oci_id.trim_start_matches("sha256:").to_owned();
    let mut podman = Recording::default();
    host.podman_run(&mut podman, &oci_id, Some(&oci_file), State::Present)
        .unwrap();
    podman.in_use.insert(hex.clone());
    let store = host.snapshot();

    let refused = host
        .podman_run(&mut podman, &oci_id, None, State::Absent)
        .unwrap_err();
    assert_eq!(host.snapshot(), store, "the record stays");
    assert!(podman.images.contains_key(&hex), "and the image");
    insta::assert_snapshot!(refused.replace(&hex, "<hex>"));

    podman.in_use.clear();
    assert!(
        host.podman_run(&mut podman, &oci_id, None, State::Absent)
            .unwrap()
            .changed
    );
    assert!(!host.root.join("images").exists());
}

#[test]
fn podman_failing_mid_import_says_what_it_left_changed() {
    let host = Host::new();
    let (aci_bytes, aci_id) = aci();
    let (oci_bytes, oci_id) = oci(&layers());
    let aci_file = host.file("web.aci", &aci_bytes);
    let oci_file = host.file("oci.tar", &oci_bytes);
    let hex = oci_id.trim_start_matches("sha256:").to_owned();
    let reference = aci_reference(&aci_id);
    let mut messages = Vec::new();
    let mut said = |what: &str, message: String| {
        let shown = message
            .replace(&hex, "<hex>")
            .replace(&aci_id[7..], "<hex>");
        messages.push(format!("{what}:\n{shown}"));
    };

    // Nothing changed in podman: a plain failure, nothing left behind.
    let mut podman = Recording::default();
    podman
        .failing
        .insert("load".into(), "Error: payload does not match".into());
    let error = host
        .podman_run(&mut podman, &oci_id, Some(&oci_file), State::Present)
        .unwrap_err();
    assert!(podman.images.is_empty());
    said("load fails", error);

    let mut podman = Recording {
        loads_nothing: Some("Digest did not match, expected sha256:04ce, got sha256:d0fa".into()),
        ..Recording::default()
    };
    let error = host
        .podman_run(&mut podman, &oci_id, Some(&oci_file), State::Present)
        .unwrap_err();
    said("load exits 0 and loads nothing (podman 3)", error);

    let mut podman = Recording {
        missing: true,
        ..Recording::default()
    };
    let error = host
        .podman_run(&mut podman, &aci_id, Some(&aci_file), State::Present)
        .unwrap_err();
    said("podman is not installed", error);
    assert!(!host.root.exists(), "the store is as it was: never made");

    // podman changed, then failed: the failure says what stays changed.
    let mut podman = Recording::default();
    podman
        .failing
        .insert("inspect".into(), "Error: inspecting object: boom".into());
    let mut error = None;
    if let Err(e) = image::run(
        &host.podman_request(&oci_id, Some(&oci_file), State::Present),
        &mut podman,
        false,
        false,
    ) {
        let image::ImageError::AfterChanges(after) = &e else {
            panic!("not after changes: {e}");
        };
        assert!(after.changed(), "reported as changed");
        error = Some(host.hide_tmp(&error_chain(&e)));
    }
    said(
        "loaded, then its size cannot be read",
        error.expect("fails"),
    );
    assert!(
        podman.images.contains_key(&hex),
        "podman keeps what it loaded"
    );
    assert!(!host.root.join("images").exists(), "no record of it");
    assert!(!host.root.join("staging").exists(), "no staging left");
    podman.failing.clear();
    let report = host
        .podman_run(&mut podman, &oci_id, Some(&oci_file), State::Present)
        .unwrap();
    assert!(
        report.changed,
        "the next run imports it again, and records it"
    );
    assert!(host.podman_record(&oci_id).is_some());

    let mut podman = Recording::with(&[&reference]);
    podman
        .failing
        .insert("import".into(), "Error: no space left on device".into());
    let error = host
        .podman_run(&mut podman, &aci_id, Some(&aci_file), State::Present)
        .unwrap_err();
    assert!(
        podman.images.is_empty(),
        "the earlier import's image is gone"
    );
    assert!(host.podman_record(&aci_id).is_none());
    said(
        "an earlier import's image removed, then podman import fails",
        error,
    );

    let mut podman = Recording::default();
    host.podman_run(&mut podman, &aci_id, Some(&aci_file), State::Present)
        .unwrap();
    podman.failing.insert(
        "rm".into(),
        "Error: removing image: permission denied".into(),
    );
    let error = host
        .podman_run(&mut podman, &aci_id, None, State::Absent)
        .unwrap_err();
    assert!(host.podman_record(&aci_id).is_some(), "the record stays");
    said("podman image rm fails", error);

    insta::assert_snapshot!(messages.join("\n\n"));
}

/// A run killed once its image was in place, before it removed its staging
/// (or, removing an image, its trash) left them; the rerun found nothing to
/// do and took no lock, so nothing ever removed them (issue 19's crash
/// tests). Now a run with nothing to do sweeps them, still unchanged.
#[test]
fn leftovers_of_a_killed_run_are_swept_by_a_rerun_with_nothing_to_do() {
    let (plain, id) = aci();
    let host = Host::new();
    let file = host.file("web.aci", &plain);
    assert!(host.import(&id, &file).unwrap().changed);
    for leftover in ["staging/image-x/rootfs", "trash/image-y/rootfs"] {
        fs::create_dir_all(host.root.join(leftover)).unwrap();
    }
    let holder_temp = host.root.join(".lock.holder.ops-tmp.99999999.0");
    fs::write(&holder_temp, "held by").unwrap();
    let report = host.import(&id, &file).unwrap();
    assert!(!report.changed);
    assert!(!host.root.join("staging").exists() && !host.root.join("trash").exists());
    assert!(!holder_temp.exists());
    assert!(!host.import(&id, &file).unwrap().changed);
}
