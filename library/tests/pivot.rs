//! `current` is the one pivot of a pod (crate::store): a power cut at any
//! point of a deploy, an upgrade or a switch boots the version the store
//! calls current, and nothing else of the pod.
//!
//! The disk at each point is taken where ops calls systemd (after the
//! unit files and the target are written, before `current` moves: the
//! daemon-reload; after it moved: the start; and so on), then put back in
//! place and booted by a fresh fake systemd, which starts what
//! `multi-user.target` wants as systemd does, skipping a unit whose
//! `ConditionPathExists=` fails. tests/reliability/power makes the same
//! cuts on a real disk and a real systemd.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

mod common;

use ops_core::bundle::{PodName, Version};
use ops_core::image::PodmanCli;
use ops_core::pod::{self, State};
use ops_core::store::Store;
use ops_core::systemd::fake::Recording;
use ops_core::systemd::{CommandError, Systemd, UnitStatus};

/// A disk as a cut at one systemd call leaves it: that call's words and a
/// copy of the store and the unit directory.
struct Disk {
    call: String,
    copy: PathBuf,
}

/// The fake systemd, copying the disk before every call that changes
/// something.
struct Cutting<'a> {
    inner: &'a mut Recording,
    tops: [PathBuf; 2],
    into: PathBuf,
    disks: Vec<Disk>,
}

impl Cutting<'_> {
    fn cut(&mut self, verb: &str, units: &[String]) {
        let copy = self.into.join(self.disks.len().to_string());
        for (top, name) in self.tops.iter().zip(["store", "units"]) {
            copy_tree(top, &copy.join(name));
        }
        let call = format!("{verb} {}", units.join(" "));
        self.disks.push(Disk {
            call: call.trim_end().to_owned(),
            copy,
        });
    }
}

impl Systemd for Cutting<'_> {
    fn daemon_reload(&mut self) -> Result<(), CommandError> {
        self.cut("daemon-reload", &[]);
        self.inner.daemon_reload()
    }
    fn start(&mut self, units: &[String], timeout: Duration) -> Result<(), CommandError> {
        self.cut("start", units);
        self.inner.start(units, timeout)
    }
    fn restart(&mut self, units: &[String], timeout: Duration) -> Result<(), CommandError> {
        self.cut("restart", units);
        self.inner.restart(units, timeout)
    }
    fn stop(&mut self, units: &[String]) -> Result<(), CommandError> {
        self.cut("stop", units);
        self.inner.stop(units)
    }
    fn reset_failed(&mut self, units: &[String]) {
        self.inner.reset_failed(units)
    }
    fn show(&mut self, units: &[String]) -> Result<Vec<UnitStatus>, CommandError> {
        self.inner.show(units)
    }
    fn list(&mut self, patterns: &[String]) -> Result<Vec<UnitStatus>, CommandError> {
        self.inner.list(patterns)
    }
    fn journal(&mut self, unit: &str, since: SystemTime, lines: usize) -> Vec<String> {
        self.inner.journal(unit, since, lines)
    }
    fn verify(&mut self, files: &[PathBuf]) -> Result<bool, CommandError> {
        self.inner.verify(files)
    }
}

/// `from` copied to `to` (made), links as links.
fn copy_tree(from: &Path, to: &Path) {
    let Ok(meta) = fs::symlink_metadata(from) else {
        return;
    };
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from).unwrap(), to).unwrap();
    } else if meta.is_dir() {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        fs::copy(from, to).unwrap();
    }
}

struct Host {
    dir: tempfile::TempDir,
    root: PathBuf,
    unit_dir: PathBuf,
    systemd: Recording,
}

/// What a boot of the disk in place starts of pod shop, and the version
/// the store calls current.
struct Booted {
    current: Option<Version>,
    running: Vec<String>,
}

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

fn shop() -> PodName {
    PodName::parse("shop").unwrap()
}

/// The services of version `version` of shop.
fn services(version: &str) -> Vec<String> {
    ["web@1.service", "web@2.service"]
        .map(|u| format!("shop-{version}-{u}"))
        .to_vec()
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let unit_dir = dir.path().join("units");
        Host {
            root: dir.path().join("store"),
            systemd: Recording {
                unit_dir: Some(unit_dir.clone()),
                ..Recording::default()
            },
            unit_dir,
            dir,
        }
    }

    fn bundle(&self, version: &str) -> PathBuf {
        let dir = self.dir.path().join("bundles").join(version);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("web@.service"),
            "[Service]\nExecStart=/bin/sleep infinity\n",
        )
        .unwrap();
        let pod = serde_json::json!({
            "name": "shop",
            "version": version,
            "containers": [
                {"name": "web", "replication": 2, "systemd": {"unit-files": ["web@.service"]}},
            ],
        });
        fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        dir
    }

    fn request(&self, version: &str, bundle: bool) -> pod::Request {
        let mut r = common::pod_request(&self.root, &self.unit_dir, "shop", State::Started);
        r.min_up_time = Duration::ZERO;
        if bundle {
            r.bundle = Some(self.bundle(version));
        } else {
            r.version = Some(v(version));
        }
        r
    }

    /// Run the request, the disk copied at every systemd call.
    fn run_cut(&mut self, request: &pod::Request) -> Vec<Disk> {
        let into = self
            .dir
            .path()
            .join("disks")
            .join(self.systemd.calls.len().to_string());
        let mut cutting = Cutting {
            inner: &mut self.systemd,
            tops: [self.root.clone(), self.unit_dir.clone()],
            into,
            disks: Vec::new(),
        };
        pod::run(request, &mut cutting, &mut PodmanCli, false, false)
            .map_err(|f| ops_core::ansible::error_chain(&f.error))
            .expect("the run succeeds");
        cutting.disks
    }

    /// The disk as it is now, as a cut leaves it.
    fn keep(&self) -> Disk {
        let disk = Disk {
            call: "the end of the run".to_owned(),
            copy: self.dir.path().join("end"),
        };
        if disk.copy.exists() {
            fs::remove_dir_all(&disk.copy).unwrap();
        }
        copy_tree(&self.root, &disk.copy.join("store"));
        copy_tree(&self.unit_dir, &disk.copy.join("units"));
        disk
    }

    /// Put `disk` in place of the store and unit directory.
    fn restore(&self, disk: &Disk) {
        for (top, name) in [(&self.root, "store"), (&self.unit_dir, "units")] {
            if top.exists() {
                fs::remove_dir_all(top).unwrap();
            }
            copy_tree(&disk.copy.join(name), top);
        }
    }

    /// Boot what is in place: a fresh systemd loads the unit directory and
    /// starts multi-user.target.
    fn boot(&self) -> Booted {
        let mut systemd = Recording {
            unit_dir: Some(self.unit_dir.clone()),
            ..Recording::default()
        };
        systemd.daemon_reload().unwrap();
        systemd
            .start(&["multi-user.target".to_owned()], Duration::ZERO)
            .unwrap();
        let state = Store::new(&self.root).read_pod(&shop()).unwrap();
        Booted {
            current: state.current,
            running: (systemd.running().into_iter())
                .filter(|u| u.starts_with("shop-"))
                .collect(),
        }
    }
}

/// Every disk of `disks`, booted: exactly the current version's services
/// run. The current version at each, in order.
fn boot_each(host: &Host, disks: &[Disk]) -> Vec<(String, Option<Version>)> {
    let mut seen = Vec::new();
    for disk in disks {
        host.restore(disk);
        let booted = host.boot();
        let want = booted
            .current
            .as_ref()
            .map_or_else(Vec::new, |c| services(c.as_str()));
        assert_eq!(
            booted.running, want,
            "a cut before `{}`: current is {:?}",
            disk.call, booted.current
        );
        seen.push((disk.call.clone(), booted.current));
    }
    seen
}

/// The first disk whose cut is at a daemon-reload: the unit files and
/// the target are written, `current` has not moved.
fn at_reload(disks: &[Disk]) -> &Disk {
    disks
        .iter()
        .find(|d| d.call == "daemon-reload")
        .expect("a daemon-reload")
}

#[test]
fn an_upgrade_cut_before_current_moves_boots_the_old_version_after_it_the_new() {
    let mut host = Host::new();
    host.run_cut(&host.request("1", true));
    let disks = host.run_cut(&host.request("2", true));
    // What the run left, and the disk at its first daemon-reload: version
    // 2 whole, wanted by the target, and `current` still 1.
    let end = host.keep();
    host.restore(at_reload(&disks));
    let target = fs::read_to_string(host.unit_dir.join("ops-shop.target")).unwrap();
    assert!(
        target.contains("shop-1-web@1.service") && target.contains("shop-2-web@1.service"),
        "{target}"
    );
    assert_eq!(host.boot().running, services("1"));
    let seen = boot_each(&host, &disks);
    let at = |call: &str| seen.iter().find(|(c, _)| c.starts_with(call)).unwrap();
    assert_eq!(at("daemon-reload").1, Some(v("1")));
    assert_eq!(at("start").1, Some(v("2")), "{seen:?}");
    host.restore(&end);
    assert_eq!(host.boot().running, services("2"));
}

#[test]
fn a_switch_moves_current_alone_and_boots_the_version_it_names() {
    let mut host = Host::new();
    host.run_cut(&host.request("1", true));
    host.run_cut(&host.request("2", true));
    assert_eq!(host.boot().running, services("2"));
    let units = common::picture(&[&host.unit_dir]);
    let disks = host.run_cut(&host.request("1", false));
    // No unit file changes (the run reloads nothing): `current` is the one
    // file that moves.
    let calls: Vec<&String> = disks.iter().map(|d| &d.call).collect();
    assert!(calls.iter().all(|c| *c != "daemon-reload"), "{calls:?}");
    assert_eq!(common::picture(&[&host.unit_dir]), units);
    let end = host.keep();
    // Its first call is the start, `current` moved: version 1 boots.
    let seen = boot_each(&host, &disks);
    assert_eq!(
        seen.first().map(|s| s.1.clone()),
        Some(Some(v("1"))),
        "{seen:?}"
    );
    host.restore(&end);
    assert_eq!(host.boot().running, services("1"));
}

#[test]
fn a_first_deploy_cut_before_current_runs_nothing_and_has_no_current_version() {
    let mut host = Host::new();
    let disks = host.run_cut(&host.request("1", true));
    let end = host.keep();
    host.restore(at_reload(&disks));
    // The pod is enabled and its target wants version 1, yet nothing of it
    // starts: `current` is not there.
    assert!(host
        .unit_dir
        .join("multi-user.target.wants/ops-shop.target")
        .exists());
    let booted = host.boot();
    assert_eq!((booted.current, booted.running), (None, vec![]));
    let seen = boot_each(&host, &disks);
    assert_eq!(
        seen.last().map(|s| s.1.clone()),
        Some(Some(v("1"))),
        "{seen:?}"
    );
    host.restore(&end);
    assert_eq!(host.boot().running, services("1"));
}

/// A store and unit directory as an ops from before the pivot left them:
/// no marker, drop-ins without the condition, a target naming the version.
fn before_the_pivot(host: &Host, version: &str) {
    fs::remove_file(
        host.root
            .join(format!("pods/shop/{version}/is-version-{version}")),
    )
    .unwrap();
    for unit in services(version) {
        let dropin = host.unit_dir.join(format!("{unit}.d/50-ops.conf"));
        let text: String = (fs::read_to_string(&dropin).unwrap().split_inclusive('\n'))
            .filter(|l| !l.starts_with("ConditionPathExists="))
            .collect();
        fs::write(&dropin, text).unwrap();
    }
    let target = format!(
        "# Managed by ops (pod shop): edits are overwritten.\n[Unit]\n\
         Description=ops pod shop (version {version})\nWants={}\n\n\
         [Install]\nWantedBy=multi-user.target\n",
        services(version).join(" ")
    );
    fs::write(host.unit_dir.join("ops-shop.target"), target).unwrap();
}

#[test]
fn a_version_an_older_ops_deployed_is_marked_before_its_units_name_the_marker() {
    let mut host = Host::new();
    host.run_cut(&host.request("1", true));
    before_the_pivot(&host, "1");
    host.systemd.daemon_reload().unwrap();
    let calls = host.systemd.calls.len();
    let rerun = host.request("1", true);
    let disks = host.run_cut(&rerun);
    // Marked, its drop-ins and the target rewritten, nothing restarted: a
    // condition is tested at a start only.
    let mutating = common::mutating_calls(&host.systemd, calls);
    assert_eq!(mutating, ["daemon-reload"]);
    let marker = host.root.join("pods/shop/1/is-version-1");
    assert!(marker.is_file());
    let dropin = host.unit_dir.join("shop-1-web@1.service.d/50-ops.conf");
    assert!(fs::read_to_string(dropin)
        .unwrap()
        .contains("ConditionPathExists="));
    // Cut at that daemon-reload (the marker written before the drop-ins
    // name it), and after: version 1 boots.
    let end = host.keep();
    assert_eq!(
        boot_each(&host, &disks),
        [("daemon-reload".to_owned(), Some(v("1")))]
    );
    host.restore(&end);
    assert_eq!(host.boot().running, services("1"));
    let again = pod::run(&rerun, &mut host.systemd, &mut PodmanCli, false, false).unwrap();
    assert!(!again.changed, "{:?}", again.actions);
}
