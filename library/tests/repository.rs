//! ops_pod deploying from a release repository, in a directory and over
//! HTTP (a small static server in the test that follows symlinks, as
//! common servers do, and logs what it is asked for), with the recording
//! fake standing in for systemd: tip, versions, reruns that fetch no
//! artifact again, check mode, and repositories changed after publishing.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use ops_core::bundle::{PodName, Version};
use ops_core::image::PodmanCli;
use ops_core::pod::{self, Request, State};
use ops_core::repository::{Repo, Wanted};
use ops_core::systemd::fake::Recording;
use sha2::Digest;

const WEB: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

struct Host {
    dir: tempfile::TempDir,
    root: PathBuf,
    unit_dir: PathBuf,
    repo: PathBuf,
    systemd: Recording,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let unit_dir = dir.path().join("units");
        Host {
            root: dir.path().join("store"),
            repo: dir.path().join("repo"),
            systemd: Recording {
                unit_dir: Some(unit_dir.clone()),
                ..Recording::default()
            },
            unit_dir,
            dir,
        }
    }

    /// Publish version `version` of pod shop in channel stable, label
    /// web, as ops_release lays it out: a volume archive stored under
    /// volumes/ and linked, the unit file copied, release.json, and tip.
    fn publish(&self, version: &str, greeting: &str) {
        let volume_dir = self.repo.join(format!("volumes/web/static/{version}"));
        fs::create_dir_all(&volume_dir).unwrap();
        let archive = tar_of(&[("index.html", greeting)]);
        fs::write(volume_dir.join("static.tar"), &archive).unwrap();
        let pods = self.repo.join("channels/stable/web/shop");
        let dir = pods.join(version);
        fs::create_dir_all(dir.join("data")).unwrap();
        fs::write(dir.join("web.service"), WEB).unwrap();
        std::os::unix::fs::symlink(
            format!("../../../../../../volumes/web/static/{version}/static.tar"),
            dir.join("data/static.tar"),
        )
        .unwrap();
        let pod = serde_json::json!({
            "name": "shop",
            "version": version,
            "containers": [{"name": "web", "systemd": {"unit-files": ["web.service"]}}],
            "volumes": [{"name": "static", "path": "/srv/static", "data": "data/static.tar"}],
        });
        fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        let file = |bytes: &[u8]| serde_json::json!({"sha256": hex(bytes), "size": bytes.len()});
        let manifest = pod.to_string();
        let record = serde_json::json!({
            "pod": "shop", "version": version, "channel": "stable", "label": "web",
            "pod.json": file(manifest.as_bytes()),
            "files": {"web.service": file(WEB.as_bytes()), "data/static.tar": file(&archive)},
            "volumes": [{"name": "static", "version": version, "sha256": hex(&archive)}],
        });
        fs::write(dir.join("release.json"), record.to_string()).unwrap();
        let tip = pods.join("tip");
        let _ = fs::remove_file(&tip);
        std::os::unix::fs::symlink(version, &tip).unwrap();
    }

    fn request(&self, repo: Repo, version: Option<&str>) -> Request {
        let mut request = common::pod_request(&self.root, &self.unit_dir, "shop", State::Started);
        request.repo = Some(Wanted {
            repo,
            channel: "stable".into(),
            label: serde_json::from_value(serde_json::json!("web")).unwrap(),
            name: PodName::parse("shop").unwrap(),
            version: version.map(|v| Version::parse(v).unwrap()),
        });
        request.name = Some(PodName::parse("shop").unwrap());
        request.version = version.map(|v| Version::parse(v).unwrap());
        request.lock_timeout = Duration::from_secs(5);
        request
    }

    fn run(&mut self, request: &Request, check: bool) -> Result<pod::Report, String> {
        pod::run(request, &mut self.systemd, &mut PodmanCli, check, true)
            .map_err(|f| ops_core::ansible::error_chain(&f.error))
    }

    fn served(&self, version: &str) -> String {
        let data = self.root.join(format!(
            "pods/shop/{version}/volumes/static/data/index.html"
        ));
        fs::read_to_string(data).unwrap()
    }

    fn snapshot(&self) -> BTreeMap<PathBuf, common::Entry> {
        let mut now = common::picture(&[&self.root, &self.unit_dir]);
        now.remove(&self.root.join("lock"));
        now
    }
}

fn hex(bytes: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(bytes))
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
        b.append_data(&mut h, path, body.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

/// A static file server on loopback for `top`, following symlinks; the
/// paths it was asked for, in order.
fn serve(top: &Path) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let (top, log) = (top.to_path_buf(), Arc::clone(&asked));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            reader.read_line(&mut line).unwrap();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap() <= 2 {
                    break;
                }
            }
            let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
            log.lock().unwrap().push(path.clone());
            let decoded = path.replace("%40", "@");
            let reply = match fs::read(top.join(decoded.trim_start_matches('/'))) {
                Ok(body) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    [head.into_bytes(), body].concat()
                }
                Err(_) => {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_vec()
                }
            };
            let _ = stream.write_all(&reply);
        }
    });
    (format!("http://{addr}/"), asked)
}

#[test]
fn a_local_repository_deploys_tip_then_a_version_by_name() {
    let mut host = Host::new();
    host.publish("1", "one");
    host.publish("2", "two");
    let tip = host.request(Repo::Dir(host.repo.clone()), None);
    let report = host.run(&tip, false).unwrap();
    assert!(report.changed);
    assert_eq!(report.tip.as_ref().map(Version::as_str), Some("2"));
    assert_eq!(report.current.as_ref().map(Version::as_str), Some("2"));
    assert!(report
        .release
        .unwrap()
        .ends_with("channels/stable/web/shop/2"));
    assert_eq!(host.served("2"), "two");
    assert!(
        !host.run(&tip, false).unwrap().changed,
        "a rerun changes nothing"
    );

    let one = host.request(Repo::Dir(host.repo.clone()), Some("1"));
    let report = host.run(&one, false).unwrap();
    assert!(report.changed);
    assert_eq!(report.tip, None);
    assert_eq!(report.current.as_ref().map(Version::as_str), Some("1"));
    assert_eq!(host.served("1"), "one");
    assert!(!host.run(&one, false).unwrap().changed);
}

#[test]
fn over_http_only_what_the_host_lacks_is_fetched() {
    let mut host = Host::new();
    host.publish("1", "one");
    let (url, asked) = serve(&host.repo);
    let request = host.request(Repo::parse(&url).unwrap(), None);

    let before = host.snapshot();
    let planned = host.run(&request, true).unwrap();
    assert!(planned.changed);
    assert_eq!(host.snapshot(), before, "check mode changes nothing");
    let small = [
        "/channels/stable/web/shop/tip/release.json",
        "/channels/stable/web/shop/1/release.json",
        "/channels/stable/web/shop/1/pod.json",
        "/channels/stable/web/shop/1/web.service",
    ];
    assert_eq!(
        *asked.lock().unwrap(),
        small,
        "check mode fetches small files only"
    );

    asked.lock().unwrap().clear();
    let report = host.run(&request, false).unwrap();
    assert!(report.changed, "{:?}", report.actions);
    assert_eq!(report.tip.as_ref().map(Version::as_str), Some("1"));
    assert_eq!(host.served("1"), "one");
    let got = asked.lock().unwrap().clone();
    assert!(
        got.contains(&"/channels/stable/web/shop/1/data/static.tar".to_owned()),
        "{got:?}"
    );

    asked.lock().unwrap().clear();
    assert!(!host.run(&request, false).unwrap().changed);
    assert_eq!(
        *asked.lock().unwrap(),
        small,
        "a rerun downloads no artifact again"
    );
}

#[test]
fn a_tampered_volume_archive_is_refused_and_nothing_changes() {
    let mut host = Host::new();
    host.publish("1", "one");
    let archive = host.repo.join("volumes/web/static/1/static.tar");
    fs::write(&archive, tar_of(&[("index.html", "evil")])).unwrap();
    let (url, _) = serve(&host.repo);
    fs::create_dir_all(&host.unit_dir).unwrap();
    let before = host.snapshot();
    for repo in [Repo::Dir(host.repo.clone()), Repo::parse(&url).unwrap()] {
        let request = host.request(repo, None);
        let msg = host.run(&request, false).unwrap_err();
        assert!(
            msg.contains("data/static.tar does not match its checksum"),
            "{msg}"
        );
        let mut now = host.snapshot();
        if !now
            .keys()
            .any(|p| p != &host.root && p.starts_with(&host.root))
        {
            now.remove(&host.root);
        }
        assert_eq!(now, before, "{msg}");
    }
}

#[test]
fn a_tampered_unit_file_or_an_escaping_link_is_refused_before_anything() {
    let mut host = Host::new();
    host.publish("1", "one");
    host.publish("2", "two");
    fs::write(
        host.repo.join("channels/stable/web/shop/1/web.service"),
        "[Service]\nExecStart=/bin/evil\n",
    )
    .unwrap();
    let (url, _) = serve(&host.repo);
    for repo in [Repo::Dir(host.repo.clone()), Repo::parse(&url).unwrap()] {
        let msg = host.run(&host.request(repo, Some("1")), false).unwrap_err();
        assert!(
            msg.contains("web.service does not match the release's release.json"),
            "{msg}"
        );
        assert!(!host.root.join("pods").exists(), "{msg}");
    }
    let outside = host.dir.path().join("outside.tar");
    fs::write(&outside, tar_of(&[("index.html", "x")])).unwrap();
    let link = host.repo.join("channels/stable/web/shop/2/data/static.tar");
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let msg = host
        .run(
            &host.request(Repo::Dir(host.repo.clone()), Some("2")),
            false,
        )
        .unwrap_err();
    assert!(msg.contains("outside the repository"), "{msg}");
    assert!(!host.root.join("pods").exists(), "{msg}");
}

#[test]
fn a_version_or_tip_that_is_not_published_is_named() {
    let mut host = Host::new();
    host.publish("1", "one");
    let msg = host
        .run(
            &host.request(Repo::Dir(host.repo.clone()), Some("7")),
            false,
        )
        .unwrap_err();
    assert!(
        msg.contains("version 7 of pod shop in channel stable label web is not published"),
        "{msg}"
    );
    assert!(msg.contains("(published: 1)"), "{msg}");
    fs::remove_file(host.repo.join("channels/stable/web/shop/tip")).unwrap();
    let msg = host
        .run(&host.request(Repo::Dir(host.repo.clone()), None), false)
        .unwrap_err();
    assert!(msg.contains("no tip is published"), "{msg}");
    let (url, _) = serve(&host.repo);
    let msg = host
        .run(&host.request(Repo::parse(&url).unwrap(), None), false)
        .unwrap_err();
    assert!(msg.contains("HTTP 404"), "{msg}");
    assert!(
        msg.contains("is pod shop in channel stable label web published there? check repo"),
        "{msg}"
    );
    // A label nothing is published under.
    let mut elsewhere = host.request(Repo::Dir(host.repo.clone()), None);
    if let Some(wanted) = &mut elsewhere.repo {
        wanted.label = serde_json::from_value(serde_json::json!("api")).unwrap();
    }
    let msg = host.run(&elsewhere, false).unwrap_err();
    assert!(
        msg.contains("nothing is published for pod shop in channel stable label api")
            && msg.contains("check channel, label and name"),
        "{msg}"
    );
}

#[test]
fn a_version_gone_from_the_repository_but_in_the_store_is_named() {
    let mut host = Host::new();
    host.publish("1", "one");
    host.publish("2", "two");
    let one = host.request(Repo::Dir(host.repo.clone()), Some("1"));
    host.run(&one, false).unwrap();
    host.run(&host.request(Repo::Dir(host.repo.clone()), None), false)
        .unwrap();
    fs::remove_dir_all(host.repo.join("channels/stable/web/shop/1")).unwrap();
    let msg = host.run(&one, false).unwrap_err();
    assert!(msg.contains("is not published"), "{msg}");
    assert!(
        msg.contains("version 1 of pod shop is in the store: leave out repo"),
        "{msg}"
    );
}

#[test]
fn a_tampered_or_escaping_pod_json_or_a_record_of_elsewhere_is_refused() {
    let mut host = Host::new();
    host.publish("1", "one");
    host.publish("2", "two");
    host.publish("3", "three");
    // pod.json edited in place (a volume made writable elsewhere): its
    // sha256 is not the one release.json recorded.
    let edited = host.repo.join("channels/stable/web/shop/1/pod.json");
    let text = fs::read_to_string(&edited).unwrap();
    fs::write(&edited, text.replace("/srv/static", "/srv/evil")).unwrap();
    let (url, _) = serve(&host.repo);
    for repo in [Repo::Dir(host.repo.clone()), Repo::parse(&url).unwrap()] {
        let msg = host.run(&host.request(repo, Some("1")), false).unwrap_err();
        assert!(
            msg.contains("pod.json does not match the release's release.json"),
            "{msg}"
        );
        assert!(!host.root.join("pods").exists(), "{msg}");
    }
    // pod.json a link out of the repository.
    let outside = host.dir.path().join("pod.json");
    let linked = host.repo.join("channels/stable/web/shop/2/pod.json");
    fs::copy(&linked, &outside).unwrap();
    fs::remove_file(&linked).unwrap();
    std::os::unix::fs::symlink(&outside, &linked).unwrap();
    let msg = host
        .run(
            &host.request(Repo::Dir(host.repo.clone()), Some("2")),
            false,
        )
        .unwrap_err();
    assert!(msg.contains("outside the repository"), "{msg}");
    // A record that says it is another channel's.
    let record = host.repo.join("channels/stable/web/shop/3/release.json");
    let text = fs::read_to_string(&record).unwrap();
    fs::write(&record, text.replace("\"stable\"", "\"beta\"")).unwrap();
    let msg = host
        .run(
            &host.request(Repo::Dir(host.repo.clone()), Some("3")),
            false,
        )
        .unwrap_err();
    assert!(msg.contains("in channel beta"), "{msg}");
    assert!(!host.root.join("pods").exists(), "{msg}");
}

/// A channel's pod deployed under a deployment name: `bundle_name` picks
/// the repository's pod, `name` is the pod on the host.
#[test]
fn a_release_deploys_as_a_named_deployment() {
    let mut host = Host::new();
    host.publish("1", "one");
    let mut staging = host.request(Repo::Dir(host.repo.clone()), None);
    staging.name = Some(PodName::parse("shop-staging").unwrap());
    staging.bundle_name = Some(PodName::parse("shop").unwrap());
    let report = host.run(&staging, false).unwrap();
    assert_eq!(
        report.name.as_ref().map(PodName::as_str),
        Some("shop-staging")
    );
    assert_eq!(report.pod["bundle_name"], "shop");
    let data = host
        .root
        .join("pods/shop-staging/1/volumes/static/data/index.html");
    assert_eq!(fs::read_to_string(data).unwrap(), "one");
    assert!(host.unit_dir.join("shop-staging-1-web.service").exists());
    assert!(!host.root.join("pods/shop").exists());
    assert!(
        !host.run(&staging, false).unwrap().changed,
        "a rerun changes nothing"
    );
}
