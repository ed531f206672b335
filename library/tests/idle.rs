//! ops_pod's `state: idle` and the waker's run on a temporary root and
//! unit directory, with the recording fake standing in for systemd: idle
//! run twice, check mode, a wake, and the ways an idle pod stops being
//! idle. (The real systemd is tests/systemd/idle_scenarios.py's.)

use std::fs;
use std::path::PathBuf;

mod common;

use ops_core::bundle::PodName;
use ops_core::image::PodmanCli;
use ops_core::pod::{self, Request, State};
use ops_core::systemd::fake::Recording;
use serde_json::json;

const WEB: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

struct Host(common::Host);

impl Host {
    fn new() -> Host {
        Host(common::Host::new())
    }

    /// Pod shop at version 1, one service and an `http` port.
    fn bundle(&self) -> PathBuf {
        let dir = self.0.dir.path().join("bundles").join("shop-1");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("web.service"), WEB).unwrap();
        let pod = json!({
            "name": "shop",
            "version": "1",
            "containers": [{"name": "web", "systemd": {"unit-files": ["web.service"]}}],
            "ports": ["http"],
        });
        fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        dir
    }

    fn request(&self, state: State) -> Request {
        self.request_for("shop", state)
    }

    /// A request about deployment `name` (of bundle shop when deployed).
    fn request_for(&self, name: &str, state: State) -> Request {
        let mut r = self.0.pod_request(name, state);
        r.port_range = ops_core::ports::PortRange::parse("41000-41999").unwrap();
        r
    }

    fn run(&mut self, request: &Request, check: bool) -> Result<pod::Report, String> {
        pod::run(request, &mut self.0.systemd, &mut PodmanCli, check, true)
            .map_err(|f| ops_core::ansible::error_chain(&f.error))
    }

    fn idle(&mut self) -> pod::Report {
        let r = self.request(State::Idle);
        self.run(&r, false).expect("idles")
    }

    fn wake(&mut self) -> pod::Report {
        let name = PodName::parse("shop").unwrap();
        let h = &mut self.0;
        pod::wake(&h.root, &h.unit_dir, &name, &mut h.systemd, &mut PodmanCli)
            .map_err(|f| ops_core::ansible::error_chain(&f.error))
            .expect("wakes")
    }
}

fn deployed() -> Host {
    let mut host = Host::new();
    let mut r = host.request(State::Started);
    r.bundle = Some(host.bundle());
    host.run(&r, false).expect("deploys");
    host
}

#[test]
fn idle_arms_the_port_and_a_rerun_changes_nothing() {
    let mut host = deployed();
    let port = host.0.systemd.running().len();
    assert_eq!(port, 2, "{:?}", host.0.systemd.running());
    let report = host.idle();
    assert!(report.changed);
    assert_eq!(report.pod["idle"], true);
    assert_eq!(report.pod["started"], false);
    assert_eq!(report.pod["woken_at"], serde_json::Value::Null);
    let http = report.ports[0]["port"].as_u64().unwrap();
    assert_eq!(
        host.0.systemd.running(),
        [
            "ops-shop:idle.target".to_owned(),
            format!("ops-shop:wake-{http}.socket")
        ]
    );
    let units = &host.0.unit_dir;
    assert!(units
        .join("multi-user.target.wants/ops-shop:idle.target")
        .exists());
    assert!(!units
        .join("multi-user.target.wants/ops-shop.target")
        .exists());
    let waker = fs::read_to_string(units.join("ops-shop:wake.service")).unwrap();
    let root = host.0.root.display();
    assert!(
        waker.contains(&format!(
            "ExecStart={root}/bin/ops-wake --wake --root {root} "
        )),
        "{waker}"
    );
    assert!(host.0.root.join("bin/ops-wake").is_file());
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(host.0.root.join("pods/shop/_idle")).unwrap()).unwrap();
    assert_eq!(record["ports"], json!([http]));
    assert_eq!(record["version"], "1");

    let before = host.0.snapshot();
    let again = host.idle();
    assert!(!again.changed, "{:?}", again.actions);
    assert_eq!(host.0.snapshot(), before);
    // present leaves it idle.
    let r = host.request(State::Present);
    assert!(!host.run(&r, false).unwrap().changed);
}

#[test]
fn check_mode_plans_the_idle_and_writes_nothing() {
    let mut host = deployed();
    let before = host.0.snapshot();
    let calls = host.0.systemd.calls.len();
    let r = host.request(State::Idle);
    let report = host.run(&r, true).unwrap();
    assert!(report.changed);
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.starts_with("mark pod shop idle")),
        "{:?}",
        report.actions
    );
    let summary = report.diff[0]["after"].as_str().unwrap();
    assert!(summary.contains("idle: yes (version 1"), "{summary}");
    assert!(report.diff.iter().any(|d| d["after_header"]
        .as_str()
        .unwrap()
        .ends_with("ops-shop:wake.service")));
    assert_eq!(host.0.snapshot(), before);
    let mutating = common::mutating_calls(&host.0.systemd, calls);
    assert!(mutating.is_empty(), "{mutating:?}");
}

#[test]
fn a_wake_starts_the_version_and_records_when() {
    let mut host = deployed();
    host.idle();
    let woken = host.wake();
    assert!(woken.changed);
    assert_eq!(woken.pod["idle"], false);
    assert_eq!(woken.pod["started"], true);
    assert!(woken.pod["woken_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(
        host.0.systemd.running(),
        ["ops-shop.target", "shop-1-web.service"]
    );
    assert!(!host.0.unit_dir.join("ops-shop:wake.service").exists());
    assert!(!host.0.root.join("pods/shop/_idle").exists());
    // Only an idle pod is woken: a second wake does nothing.
    let before = host.0.snapshot();
    assert!(!host.wake().changed);
    assert_eq!(host.0.snapshot(), before);
    // Idle again after a wake is a change.
    assert!(host.idle().changed);
}

#[test]
fn a_wake_of_a_pod_not_deployed_says_so_and_changes_nothing() {
    let mut host = Host::new();
    let before = host.0.snapshot();
    let report = host.wake();
    assert!(!report.changed);
    assert_eq!(
        report.warnings,
        [format!(
            "pod shop is not deployed under {}",
            host.0.root.display()
        )]
    );
    assert_eq!(host.0.snapshot(), before);
    // A deployed pod that is not idle: no warning, nothing done.
    let mut host = deployed();
    assert!(host.wake().warnings.is_empty());
}

#[test]
fn started_un_idles_stopped_disarms_absent_removes_everything() {
    let mut host = deployed();
    host.idle();
    let r = host.request(State::Started);
    let started = host.run(&r, false).unwrap();
    assert!(started.changed);
    assert_eq!(started.pod["idle"], false);
    assert_eq!(started.pod["woken_at"], serde_json::Value::Null);
    assert_eq!(
        host.0.systemd.running(),
        ["ops-shop.target", "shop-1-web.service"]
    );

    host.idle();
    let r = host.request(State::Stopped);
    let stopped = host.run(&r, false).unwrap();
    assert!(stopped.changed);
    assert!(host.0.systemd.running().is_empty());
    assert_eq!(stopped.pod["idle"], false);
    assert!(!host.0.unit_dir.join("ops-shop:idle.target").exists());
    assert!(!host.run(&r, false).unwrap().changed);

    host.idle();
    let r = host.request(State::Absent);
    assert!(host.run(&r, false).unwrap().changed);
    assert!(host.0.systemd.running().is_empty());
    let left: Vec<_> = fs::read_dir(&host.0.unit_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "multi-user.target.wants")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(!host.0.root.join("pods/shop").exists());
}

#[test]
fn a_pod_without_ports_is_not_idled() {
    let mut host = Host::new();
    let dir = host.0.dir.path().join("bundles").join("plain");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("web.service"), WEB).unwrap();
    let pod = json!({"name": "shop", "version": "1",
        "containers": [{"name": "web", "systemd": {"unit-files": ["web.service"]}}]});
    fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
    let mut r = host.request(State::Started);
    r.bundle = Some(dir);
    host.run(&r, false).unwrap();
    // A pod that declares no port gets a default one now; versions an
    // earlier ops deployed have none: such a version's record.
    let meta = host.0.root.join("pods/shop/1/meta.json");
    let mut record: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert_eq!(record["ports"][0]["kind"], "default", "{record}");
    record["ports"] = json!([]);
    fs::write(&meta, record.to_string()).unwrap();
    for port in fs::read_dir(host.0.root.join("ports")).unwrap() {
        fs::remove_file(port.unwrap().path()).unwrap();
    }
    let before = host.0.snapshot();
    let r = host.request(State::Idle);
    assert_eq!(
        host.run(&r, false).unwrap_err(),
        "pod shop has no ports to be woken by; use state: stopped"
    );
    assert_eq!(host.0.snapshot(), before);
}

/// Deployment `name` of bundle shop, `state` (started or idle), run; its
/// report.
fn run_as(host: &mut Host, name: &str, state: State) -> pod::Report {
    let mut r = host.request_for(name, state);
    if state == State::Started {
        r.bundle = Some(host.bundle());
    }
    host.run(&r, false).expect("runs")
}

/// Everything of deployment `shop-idle` in the store and the unit
/// directory (its slice escapes `-`).
fn of_shop_idle(host: &Host) -> Vec<(PathBuf, common::Entry)> {
    host.0
        .snapshot()
        .into_iter()
        .filter(|(p, _)| {
            let s = p.to_string_lossy();
            s.contains("shop-idle") || s.contains("shop\\x2didle")
        })
        .collect()
}

/// Two deployments `shop` and `shop-idle` (review18 F1): `shop`'s idle
/// units and boot link once had the names of `shop-idle`'s target and boot
/// link, and every run on `shop` removed `shop-idle`'s boot link. Now
/// runs on `shop` (rerun, idle, started) never touch `shop-idle`, and
/// reruns of either change nothing.
#[test]
fn runs_on_shop_never_touch_deployment_shop_idle() {
    let mut host = Host::new();
    host.0.systemd = Recording {
        unit_dir: Some(host.0.unit_dir.clone()),
        ..Recording::default()
    };
    run_as(&mut host, "shop-idle", State::Started);
    run_as(&mut host, "shop", State::Started);
    let link = |t: &str| host_link(&host, t);
    assert!(link("ops-shop-idle.target") && link("ops-shop.target"));
    let theirs = of_shop_idle(&host);
    assert!(theirs.len() > 5, "{theirs:?}");
    let web = "shop-idle-1-web.service".to_owned();
    for state in [State::Started, State::Idle, State::Idle, State::Started] {
        let calls = host.0.systemd.calls.len();
        let report = run_as(&mut host, "shop", state);
        assert_eq!(of_shop_idle(&host), theirs, "{:?}", report.actions);
        let touched: Vec<_> = host.0.systemd.calls[calls..]
            .iter()
            .filter(|c| c.contains("shop-idle") || c.contains("shop\\x2didle"))
            .collect();
        assert!(touched.is_empty(), "{touched:?}");
        assert!(host.0.systemd.running().contains(&web));
        assert!(!run_as(&mut host, "shop", state).changed, "{state:?}");
        assert!(!run_as(&mut host, "shop-idle", State::Started).changed);
        if state == State::Idle {
            assert!(host_link(&host, "ops-shop:idle.target"));
            assert!(!host_link(&host, "ops-shop.target"));
        }
    }
    assert!(host_link(&host, "ops-shop.target"));
    assert!(!host_link(&host, "ops-shop:idle.target"));
}

/// The other way round: deployment `shop-idle` deployed while `shop` is
/// idle is no longer refused over `shop`'s idle target, and leaves `shop`
/// idle and armed.
#[test]
fn shop_idle_deploys_beside_an_idle_shop() {
    let mut host = deployed();
    host.idle();
    let armed = host.0.snapshot();
    let report = run_as(&mut host, "shop-idle", State::Started);
    assert!(report.changed);
    let after: std::collections::BTreeMap<_, _> = host
        .0
        .snapshot()
        .into_iter()
        .filter(|(p, _)| armed.contains_key(p))
        .collect();
    assert_eq!(after, armed);
    let target = fs::read_to_string(host.0.unit_dir.join("ops-shop:idle.target")).unwrap();
    assert!(target.contains("(pod shop)"), "{target}");
    assert!(host_link(&host, "ops-shop-idle.target"));
    assert!(!host.idle().changed);
    assert!(!run_as(&mut host, "shop-idle", State::Started).changed);
}

fn host_link(host: &Host, target: &str) -> bool {
    host.0
        .unit_dir
        .join("multi-user.target.wants")
        .join(target)
        .symlink_metadata()
        .is_ok()
}

/// A store root or unit directory with `$` (review18 F2): systemd expanded
/// `${X}` in the waker's `ExecStart=` arguments, so the waker looked at
/// another root, never woke the pod and its port went dead. `state: idle`
/// (the waker's line carries both) is refused before anything changes.
#[test]
fn a_path_with_a_dollar_is_refused_before_anything_changes() {
    for (root, units) in [("ops${X}", "units"), ("ops", "units${X}")] {
        let mut host = Host::new();
        host.0.root = host.0.dir.path().join(root);
        host.0.unit_dir = host.0.dir.path().join(units);
        let mut r = host.request(State::Started);
        r.bundle = Some(host.bundle());
        host.run(&r, false).expect("deploys");
        let before = host.0.snapshot();
        let calls = host.0.systemd.calls.len();
        let r = host.request(State::Idle);
        let refused = host.run(&r, false).unwrap_err();
        // The first path of the waker's line checked: its program's.
        let (what, path) = if root.contains('$') {
            ("waker", host.0.root.join("bin/ops-wake"))
        } else {
            ("unit directory", host.0.unit_dir.clone())
        };
        assert_eq!(
            refused,
            format!(
                "{what} {path:?} cannot be written into a systemd unit: it contains '$'; \
                 systemd unit files cannot carry whitespace, control characters, quotes, \
                 '\\', ':' or '$' in a path"
            )
        );
        assert_eq!(host.0.snapshot(), before);
        let mutating = common::mutating_calls(&host.0.systemd, calls);
        assert!(mutating.is_empty(), "{mutating:?}");
    }
}
