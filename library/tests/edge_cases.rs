//! Edge cases of named deployments, the default port, idle and wake, as
//! the README promises them: deployments whose names extend each other's,
//! colliding unit names, failures half-way through idling or waking.

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
        let mut h = common::Host::new();
        h.systemd = Recording {
            unit_dir: Some(h.unit_dir.clone()),
            ..Recording::default()
        };
        Host(h)
    }

    /// Bundle `bundle` version `version`, one service, `ports` as given.
    fn bundle(&self, bundle: &str, version: &str, ports: serde_json::Value) -> PathBuf {
        let dir = self
            .0
            .dir
            .path()
            .join("bundles")
            .join(format!("{bundle}-{version}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("web.service"), WEB).unwrap();
        let mut pod = json!({
            "name": bundle,
            "version": version,
            "containers": [{"name": "web", "systemd": {"unit-files": ["web.service"]}}],
        });
        if !ports.is_null() {
            pod["ports"] = ports;
        }
        fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        dir
    }

    fn request(&self, name: &str, state: State) -> Request {
        let mut r = self.0.pod_request(name, state);
        r.port_range = ops_core::ports::PortRange::parse("41000-41999").unwrap();
        r
    }

    fn run(&mut self, request: &Request) -> Result<pod::Report, String> {
        pod::run(request, &mut self.0.systemd, &mut PodmanCli, false, true)
            .map_err(|f| ops_core::ansible::error_chain(&f.error))
    }

    fn deploy(&mut self, name: &str, bundle: &str, version: &str) -> Result<pod::Report, String> {
        let mut r = self.request(name, State::Started);
        r.bundle = Some(self.bundle(bundle, version, json!(["http"])));
        self.run(&r)
    }

    fn wants(&self, unit: &str) -> bool {
        self.0
            .unit_dir
            .join("multi-user.target.wants")
            .join(unit)
            .symlink_metadata()
            .is_ok()
    }
}

/// README "Named deployments": deploying one deployment never touches
/// another. Deployment `myapp-idle`'s boot link has the name of
/// deployment `myapp`'s idle boot link.
#[test]
fn a_run_on_myapp_keeps_the_boot_link_of_deployment_myapp_idle() {
    let mut host = Host::new();
    host.deploy("myapp-idle", "myapp", "1").unwrap();
    assert!(host.wants("ops-myapp-idle.target"));
    let r = host.deploy("myapp", "myapp", "1").unwrap();
    assert!(
        host.wants("ops-myapp-idle.target"),
        "deploying myapp removed myapp-idle's boot link: {:?}",
        r.actions
    );
}

/// A rerun of the same bundle changes nothing (README "Honest runs"),
/// even with a deployment named `<name>-idle` beside it.
#[test]
fn a_rerun_of_myapp_beside_myapp_idle_changes_nothing() {
    let mut host = Host::new();
    host.deploy("myapp", "myapp", "1").unwrap();
    host.deploy("myapp-idle", "myapp", "1").unwrap();
    let again = host.deploy("myapp", "myapp", "1").unwrap();
    assert!(!again.changed, "{:?}", again.actions);
    let again = host.deploy("myapp-idle", "myapp", "1").unwrap();
    assert!(!again.changed, "{:?}", again.actions);
}

/// myapp version staging-1 and myapp-staging version 1 both install
/// myapp-staging-1-web.service: the second must be refused, not merged.
#[test]
fn colliding_unit_names_are_refused_and_change_nothing() {
    let mut host = Host::new();
    host.deploy("myapp", "myapp", "staging-1").unwrap();
    let before = host.0.snapshot();
    let calls = host.0.systemd.calls.len();
    let err = host.deploy("myapp-staging", "myapp", "1").unwrap_err();
    assert!(
        err.contains(
            "unit web.service of version 1 of pod myapp-staging would be installed as \
             myapp-staging-1-web.service, which version staging-1 of pod myapp has"
        ),
        "{err}"
    );
    assert_eq!(host.0.snapshot(), before);
    let mutating = common::mutating_calls(&host.0.systemd, calls);
    assert!(mutating.is_empty(), "{mutating:?}");
}

/// Idling `myapp` while a deployment `myapp-idle` runs.
#[test]
fn idling_myapp_beside_a_running_myapp_idle() {
    let mut host = Host::new();
    host.deploy("myapp-idle", "myapp", "1").unwrap();
    host.deploy("myapp", "myapp", "1").unwrap();
    let running = host.0.systemd.running();
    let r = host.request("myapp", State::Idle);
    let out = host.run(&r);
    eprintln!("idle myapp: {out:?}");
    assert!(host.wants("ops-myapp-idle.target"));
    let target = fs::read_to_string(host.0.unit_dir.join("ops-myapp-idle.target")).unwrap();
    assert!(target.contains("(pod myapp-idle)"), "{target}");
    eprintln!(
        "running before {running:?} after {:?}",
        host.0.systemd.running()
    );
    assert!(host
        .0
        .systemd
        .running()
        .contains(&"myapp-idle-1-web.service".to_owned()));
}

/// Deploying a pod named `myapp-idle` while pod `myapp` is idle.
#[test]
fn deploying_myapp_idle_while_myapp_is_idle() {
    let mut host = Host::new();
    host.deploy("myapp", "myapp", "1").unwrap();
    let r = host.request("myapp", State::Idle);
    host.run(&r).unwrap();
    let out = host.deploy("myapp-idle", "myapp", "1");
    eprintln!("deploy myapp-idle: {out:?}");
    // Whatever happens, pod myapp stays idle and armed.
    let idle = fs::read_to_string(host.0.unit_dir.join("ops-myapp:idle.target")).unwrap();
    assert!(idle.contains("(pod myapp)"), "{idle}");
    assert!(out.is_ok(), "{out:?}");
}

// `env` with POD_BUNDLE, POD_NAME, PORT, PORT_*, OPS_*: refused by the
// module (library/src/modules/pod.rs env_problems), checked with the
// ops_pod binary in check mode; the engine itself does not check (the
// waker passes no env), so no test here.

/// Removing one deployment while another of the same bundle is idle.
#[test]
fn removing_a_deployment_leaves_another_idle_one_armed() {
    let mut host = Host::new();
    host.deploy("myapp-staging", "myapp", "1").unwrap();
    host.deploy("myapp", "myapp", "1").unwrap();
    let r = host.request("myapp-staging", State::Idle);
    host.run(&r).unwrap();
    let before: Vec<_> = host
        .0
        .snapshot()
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains("myapp-staging"))
        .collect();
    let r = host.request("myapp", State::Absent);
    let out = host.run(&r).unwrap();
    let after: Vec<_> = host
        .0
        .snapshot()
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains("myapp-staging"))
        .collect();
    assert_eq!(before, after, "{:?}", out.actions);
    assert!(host.wants("ops-myapp-staging:idle.target"));
    let _ = PodName::parse("x");
}

impl Host {
    fn wake(&mut self, name: &str) -> Result<pod::Report, String> {
        let name = PodName::parse(name).unwrap();
        let h = &mut self.0;
        pod::wake(&h.root, &h.unit_dir, &name, &mut h.systemd, &mut PodmanCli)
            .map_err(|f| ops_core::ansible::error_chain(&f.error))
    }
}

/// README "Idle and wake", "A failed wake": the pod is left as a failed
/// `started` would be: not idle, no idle units, started at boot, woken_at
/// set; a task then starts it or idles it again.
#[test]
fn a_failed_wake_leaves_the_pod_as_a_failed_started_would() {
    let mut host = Host::new();
    host.deploy("myapp", "myapp", "1").unwrap();
    let r = host.request("myapp", State::Idle);
    host.run(&r).unwrap();
    host.0
        .systemd
        .failing
        .insert("myapp-1-web.service".to_owned());
    let out = host.wake("myapp");
    let err = out.expect_err("the version does not come up");
    assert!(err.contains("did not come up"), "{err}");
    assert!(!host.0.root.join("pods/myapp/_idle").exists());
    assert!(host.0.root.join("pods/myapp/_woken").exists());
    assert!(!host.0.unit_dir.join("ops-myapp:idle.target").exists());
    assert!(host.wants("ops-myapp.target"));
    let r = host.request("myapp", State::Present);
    let facts = host.run(&r).unwrap();
    assert_eq!(facts.pod["idle"], false);
    assert_eq!(facts.pod["started"], true);
    host.0.systemd.failing.clear();
    let r = host.request("myapp", State::Idle);
    let again = host.run(&r).unwrap();
    assert!(again.changed);
    assert!(host.wants("ops-myapp:idle.target"));
}

fn outside(host: &Host, name: &str) -> Vec<(PathBuf, common::Entry)> {
    host.0
        .snapshot()
        .into_iter()
        .filter(|(p, _)| {
            let s = p.to_string_lossy();
            s.contains(&format!("/{name}-"))
                || s.contains(&format!("ops-{name}."))
                || s.contains(&format!("pods/{name}/"))
        })
        .collect()
}

/// keep and absent on one deployment leave the other's files and port
/// records alone, and its ports stay held.
#[test]
fn keep_and_absent_of_staging_leave_production_alone() {
    let mut host = Host::new();
    for v in ["1", "2"] {
        host.deploy("myapp-production", "myapp", v).unwrap();
        host.deploy("myapp-staging", "myapp", v).unwrap();
    }
    let before = outside(&host, "myapp-production");
    let ports_before = fs::read_dir(host.0.root.join("ports")).unwrap().count();
    let mut r = host.request("myapp-staging", State::Started);
    r.bundle = Some(host.bundle("myapp", "3", json!(["http"])));
    r.keep = Some(1);
    host.run(&r).unwrap();
    assert_eq!(outside(&host, "myapp-production"), before);
    let r = host.request("myapp-staging", State::Absent);
    host.run(&r).unwrap();
    assert_eq!(outside(&host, "myapp-production"), before);
    let ports_after = fs::read_dir(host.0.root.join("ports")).unwrap().count();
    eprintln!("port records {ports_before} -> {ports_after}");
    assert!(host
        .0
        .systemd
        .running()
        .contains(&"myapp-production-2-web.service".to_owned()));
}

/// Deploying bundle `other` under a name that is bundle `myapp`'s deployment,
/// and the reverse, are refused and change nothing.
#[test]
fn another_bundle_under_a_deployments_name_is_refused() {
    let mut host = Host::new();
    host.deploy("other", "other", "1").unwrap();
    host.deploy("myapp", "myapp", "1").unwrap();
    let before = host.0.snapshot();
    let e = host.deploy("other", "myapp", "2").unwrap_err();
    eprintln!("{e}");
    let e = host.deploy("myapp", "other", "1").unwrap_err();
    eprintln!("{e}");
    assert_eq!(host.0.snapshot(), before);
}

/// Idle v1, then deploy v2 (started): the sockets stop before v2 starts,
/// and nothing of the idle state stays. present leaves it idle.
#[test]
fn deploying_over_an_idle_pod() {
    let mut host = Host::new();
    host.deploy("myapp", "myapp", "1").unwrap();
    let r = host.request("myapp", State::Idle);
    host.run(&r).unwrap();
    let mut r = host.request("myapp", State::Present);
    r.bundle = Some(host.bundle("myapp", "2", json!(["http"])));
    let p = host.run(&r).unwrap();
    eprintln!("present v2: idle {} actions {:?}", p.pod["idle"], p.actions);
    assert_eq!(p.pod["idle"], true);
    let calls = host.0.systemd.calls.len();
    let s = host.deploy("myapp", "myapp", "2").unwrap();
    eprintln!("started v2: {:?}", s.actions);
    let calls: Vec<_> = host.0.systemd.calls[calls..].to_vec();
    eprintln!("calls: {calls:?}");
    let stop = calls
        .iter()
        .position(|c| c.starts_with("stop") && c.contains("wake-"))
        .expect("sockets stopped");
    let start = calls
        .iter()
        .position(|c| c.starts_with("start") && c.contains("myapp-2-web"))
        .expect("v2 started");
    assert!(stop < start);
    assert!(!host.0.root.join("pods/myapp/_idle").exists());
    assert!(!host.wants("ops-myapp:idle.target"));
    assert!(host.wants("ops-myapp.target"));
    let left: Vec<_> = fs::read_dir(&host.0.unit_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("wake") || n.contains("idle"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Idle v1, deploy v2 that does not come up: rolled back, the pod must be
/// idle and armed again as before (README: everything is put back).
#[test]
fn a_failed_deploy_over_an_idle_pod_puts_the_idle_state_back() {
    let mut host = Host::new();
    host.deploy("myapp", "myapp", "1").unwrap();
    let r = host.request("myapp", State::Idle);
    host.run(&r).unwrap();
    let before = host.0.snapshot();
    let running = host.0.systemd.running();
    host.0
        .systemd
        .failing
        .insert("myapp-2-web.service".to_owned());
    let e = host.deploy("myapp", "myapp", "2").unwrap_err();
    eprintln!("{e}");
    eprintln!(
        "running before {running:?} after {:?}",
        host.0.systemd.running()
    );
    let after = host.0.snapshot();
    for (p, _) in before.iter() {
        if !after.contains_key(p) {
            eprintln!("gone: {}", p.display());
        }
    }
    for (p, e) in after.iter() {
        match before.get(p) {
            None => eprintln!("new: {}", p.display()),
            Some(b) if b != e => eprintln!("changed: {}", p.display()),
            _ => {}
        }
    }
    assert_eq!(host.0.systemd.running(), running);
    assert!(host.0.root.join("pods/myapp/_idle").exists());
    assert!(host.wants("ops-myapp:idle.target"));
}

/// An idle run whose socket cannot start (its port taken meanwhile) is
/// undone: README "down to the directories the run created (at most the
/// store's lock file stays)", and the version runs again.
#[test]
fn a_failed_idle_is_undone_completely() {
    let mut host = Host::new();
    host.deploy("myapp", "myapp", "1").unwrap();
    let before = host.0.snapshot();
    let running = host.0.systemd.running();
    host.0
        .systemd
        .failing
        .insert("ops-myapp:wake-41000.socket".to_owned());
    let r = host.request("myapp", State::Idle);
    let e = host.run(&r).unwrap_err();
    assert!(e.contains("the pod is as it was before this run"), "{e}");
    assert!(e.contains("remove the waker"), "{e}");
    let after = host.0.snapshot();
    let new: Vec<_> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    let gone: Vec<_> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    let changed: Vec<_> = before
        .iter()
        .filter(|(p, e)| after.get(*p).is_some_and(|a| a != *e))
        .map(|(p, _)| p)
        .collect();
    eprintln!("new {new:?}\ngone {gone:?}\nchanged {changed:?}");
    eprintln!(
        "running before {running:?} after {:?}",
        host.0.systemd.running()
    );
    assert_eq!(host.0.systemd.running(), running);
    assert!(
        new.iter()
            .all(|p| p.ends_with("lock") || p.ends_with("lock.holder")),
        "{new:?}"
    );
}

/// `state: idle` with a bundle of a version not deployed: refused, nothing
/// changed (README: a bundle's version must be deployed and current first).
#[test]
fn idle_with_a_new_bundle_is_refused_and_changes_nothing() {
    let mut host = Host::new();
    host.deploy("myapp", "myapp", "1").unwrap();
    let before = host.0.snapshot();
    let mut r = host.request("myapp", State::Idle);
    r.bundle = Some(host.bundle("myapp", "2", json!(["http"])));
    let out = host.run(&r);
    eprintln!("{out:?}");
    assert!(out.is_err());
    assert_eq!(host.0.snapshot(), before);
}

/// A new deployment without `env` gets no other deployment's secrets.
#[test]
fn a_new_deployment_inherits_no_other_deployments_env() {
    let mut host = Host::new();
    let mut r = host.request("myapp-staging", State::Started);
    r.bundle = Some(host.bundle("myapp", "1", json!(["http"])));
    r.env = Some(
        [("DB".to_owned(), "staging-secret".to_owned())]
            .into_iter()
            .collect(),
    );
    host.run(&r).unwrap();
    host.deploy("myapp-production", "myapp", "1").unwrap();
    host.deploy("myapp", "myapp", "1").unwrap();
    for pod in ["myapp-production", "myapp"] {
        let env = host.0.root.join(format!("pods/{pod}/1/environment"));
        assert!(!env.exists(), "{pod} got an environment file");
    }
    let units = host.0.snapshot();
    for (p, e) in units {
        if String::from_utf8_lossy(&e.bytes).contains("staging-secret") {
            assert!(
                p.to_string_lossy()
                    .contains("pods/myapp-staging/1/environment"),
                "{}",
                p.display()
            );
        }
    }
}

/// A hand edit of a wake socket is repaired, and the socket restarted: a
/// socket listens as it was started until then.
#[test]
fn a_rerun_restarts_a_wake_socket_it_rewrites() {
    let mut host = Host::new();
    host.deploy("myapp", "myapp", "1").unwrap();
    let r = host.request("myapp", State::Idle);
    host.run(&r).unwrap();
    let socket = host.0.unit_dir.join("ops-myapp:wake-41000.socket");
    let text = fs::read_to_string(&socket).unwrap();
    fs::write(
        &socket,
        text.replace("ListenStream=41000", "ListenStream=41999"),
    )
    .unwrap();
    let calls = host.0.systemd.calls.len();
    let again = host.run(&r).unwrap();
    assert!(again.changed);
    assert_eq!(fs::read_to_string(&socket).unwrap(), text);
    let calls = &host.0.systemd.calls[calls..];
    let reload = calls
        .iter()
        .position(|c| c == "daemon-reload")
        .expect("reload");
    let restart = (calls.iter())
        .position(|c| c.starts_with("restart") && c.contains("ops-myapp:wake-41000.socket"))
        .unwrap_or_else(|| panic!("no restart of the socket: {calls:?}"));
    assert!(reload < restart, "{calls:?}");
    assert!(
        again.actions.iter().any(|a| a.starts_with("restart ")),
        "{:?}",
        again.actions
    );
    let third = host.run(&r).unwrap();
    assert!(!third.changed, "{:?}", third.actions);
}

/// Arming forgets that the waker failed: after its start limit was hit,
/// a started socket would fail again at the next connection.
#[test]
fn arming_resets_a_failed_waker_first() {
    let mut host = Host::new();
    host.deploy("myapp", "myapp", "1").unwrap();
    let r = host.request("myapp", State::Idle);
    host.run(&r).unwrap();
    let active = &mut host.0.systemd.active;
    active.insert(
        "ops-myapp:wake-41000.socket".to_owned(),
        "failed".to_owned(),
    );
    active.insert("ops-myapp:wake.service".to_owned(), "failed".to_owned());
    let calls = host.0.systemd.calls.len();
    let again = host.run(&r).unwrap();
    assert!(again.changed);
    let calls = &host.0.systemd.calls[calls..];
    let reset = (calls.iter())
        .position(|c| c.starts_with("reset-failed") && c.contains("ops-myapp:wake.service"))
        .unwrap_or_else(|| panic!("no reset-failed of the waker: {calls:?}"));
    let start = (calls.iter())
        .position(|c| c.starts_with("start") && c.contains("ops-myapp:wake-41000.socket"))
        .unwrap_or_else(|| panic!("no start of the socket: {calls:?}"));
    assert!(reset < start, "{calls:?}");
}

/// Root runs the waker: a link planted in its place is not followed and
/// not taken for the waker; `state: idle` refuses it before any change.
#[test]
fn a_link_planted_as_the_waker_is_refused() {
    let mut host = Host::new();
    host.deploy("myapp", "myapp", "1").unwrap();
    let bin = host.0.root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let theirs = host.0.dir.path().join("theirs");
    fs::copy("/proc/self/exe", &theirs).unwrap();
    std::os::unix::fs::symlink(&theirs, bin.join("ops-wake")).unwrap();
    let before = host.0.snapshot();
    let calls = host.0.systemd.calls.len();
    let r = host.request("myapp", State::Idle);
    let err = host.run(&r).unwrap_err();
    assert!(err.contains("ops-wake") && err.contains("symlink"), "{err}");
    assert_eq!(host.0.snapshot(), before);
    let mutating = common::mutating_calls(&host.0.systemd, calls);
    assert!(mutating.is_empty(), "{mutating:?}");
}

/// A waker of another mode than ops installs it is installed again.
#[test]
fn a_waker_left_writable_is_installed_again() {
    use std::os::unix::fs::PermissionsExt;
    let mut host = Host::new();
    host.deploy("myapp", "myapp", "1").unwrap();
    let r = host.request("myapp", State::Idle);
    host.run(&r).unwrap();
    let waker = host.0.root.join("bin/ops-wake");
    fs::set_permissions(&waker, fs::Permissions::from_mode(0o777)).unwrap();
    let again = host.run(&r).unwrap();
    assert!(again.changed, "{:?}", again.actions);
    let mode = fs::metadata(&waker).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
}

/// A connection to sockets left listening for a pod that is not idle (a
/// record removed by hand) stops them rather than letting them loop.
#[test]
fn a_wake_of_a_pod_not_idle_stops_what_still_listens() {
    let mut host = Host::new();
    host.deploy("myapp", "myapp", "1").unwrap();
    let r = host.request("myapp", State::Idle);
    host.run(&r).unwrap();
    fs::remove_file(host.0.root.join("pods/myapp/_idle")).unwrap();
    let report = host.wake("myapp").unwrap();
    assert!(
        (report.warnings.iter())
            .any(|w| w.contains("is not idle") && w.contains("ops-myapp:wake-41000.socket")),
        "{:?}",
        report.warnings
    );
    let running = host.0.systemd.running();
    assert!(!running.iter().any(|u| u.contains("wake-")), "{running:?}");
    let report = host.wake("myapp").unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

/// A mistyped deployment name: said to be no pod at all, with the pods
/// there, whether a version is given or not.
#[test]
fn a_mistyped_deployment_name_lists_the_pods_there() {
    let mut host = Host::new();
    host.deploy("myapp-staging", "myapp", "1").unwrap();
    host.deploy("myapp-production", "myapp", "1").unwrap();
    let before = host.0.snapshot();
    let mut r = host.request("myapp-stagin", State::Started);
    let without = host.run(&r).unwrap_err();
    r.version = Some(ops_core::bundle::Version::parse("1").unwrap());
    let with = host.run(&r).unwrap_err();
    for (err, tail) in [(without, "deploy it"), (with, "deploy version 1")] {
        assert!(
            err.starts_with("pod myapp-stagin is not deployed under ")
                && err.contains("(pods there: myapp-production, myapp-staging)")
                && err.ends_with(tail),
            "{err}"
        );
    }
    assert_eq!(host.0.snapshot(), before);
}

/// Bundle `name` version `version` shipping one unit file named `unit`.
fn one_unit_bundle(host: &Host, name: &str, version: &str, unit: &str) -> PathBuf {
    let dir = (host.0.dir.path().join("bundles")).join(format!("{name}-{version}-{unit}"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join(unit),
        format!("[Service]\nExecStart=/bin/echo {version}\n"),
    )
    .unwrap();
    let pod = json!({"name": name, "version": version,
        "containers": [{"name": "web", "systemd": {"unit-files": [unit]}}]});
    fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
    dir
}

/// Within one pod, version `1` with `x-web.service` and version `1-x`
/// with `web.service` would both install `a-1-x-web.service`: the second
/// is refused before anything changes, naming the version that has it.
#[test]
fn two_versions_of_one_pod_with_the_same_unit_name_are_refused() {
    let mut host = Host::new();
    let mut r = host.request("a", State::Started);
    r.bundle = Some(one_unit_bundle(&host, "a", "1", "x-web.service"));
    host.run(&r).unwrap();
    let before = host.0.snapshot();
    let mut r = host.request("a", State::Present);
    r.bundle = Some(one_unit_bundle(&host, "a", "1-x", "web.service"));
    let err = host.run(&r).unwrap_err();
    assert!(
        err.contains(
            "unit web.service of version 1-x of pod a would be installed as a-1-x-web.service, \
             which version 1 of pod a has"
        ),
        "{err}"
    );
    assert_eq!(host.0.snapshot(), before);
}

/// The store, not the unit directory, says whose a unit name is: pod
/// `myapp` version `staging-1` keeps `myapp-staging-1-web.service` even
/// when its file was removed by hand, and deployment `myapp-staging`
/// version `1` is refused it; removing `myapp` touches nothing else.
#[test]
fn a_unit_name_a_lost_file_leaves_is_still_its_versions() {
    let mut host = Host::new();
    let mut r = host.request("myapp", State::Started);
    r.bundle = Some(one_unit_bundle(&host, "myapp", "staging-1", "web.service"));
    host.run(&r).unwrap();
    let unit = host.0.unit_dir.join("myapp-staging-1-web.service");
    fs::remove_file(&unit).unwrap();
    fs::remove_dir_all(host.0.unit_dir.join("myapp-staging-1-web.service.d")).unwrap();
    let mut r = host.request("myapp-staging", State::Started);
    r.bundle = Some(one_unit_bundle(&host, "myapp", "1", "web.service"));
    let err = host.run(&r).unwrap_err();
    assert!(
        err.contains("would be installed as myapp-staging-1-web.service, which version staging-1 of pod myapp has"),
        "{err}"
    );
    assert!(!host.0.root.join("pods/myapp-staging").exists());
}

/// One pod's idle record that cannot be read (a hand edit, a damaged
/// disk) is that pod's to refuse, saying what to do, never another pod's;
/// a woken record that cannot be read is only a lost woken_at.
#[test]
fn a_corrupt_idle_record_is_refused_for_its_pod_only() {
    let mut host = Host::new();
    host.deploy("sh", "sh", "1").unwrap();
    host.deploy("ok", "ok", "1").unwrap();
    let idle = host.0.root.join("pods/sh/_idle");
    fs::write(&idle, "x\n").unwrap();
    fs::write(host.0.root.join("pods/ok/_woken"), "x\n").unwrap();
    let restarted = host.run(&host.request("ok", State::Restarted)).unwrap();
    assert!(restarted.changed);
    host.deploy("ok", "ok", "2").unwrap();
    let err = host.run(&host.request("sh", State::Started)).unwrap_err();
    assert!(
        err.contains(&format!("{} is not a valid idle record: ", idle.display()))
            && err.ends_with(
                "remove it (the pod is then not idle: state: idle arms it again) and rerun"
            ),
        "{err}"
    );
    fs::remove_file(&idle).unwrap();
    host.run(&host.request("sh", State::Idle)).unwrap();
}

/// A wake socket for a port the pod does not arm (left by hand, or by an
/// earlier record) is stopped as its file goes, not left listening.
#[test]
fn a_stale_wake_socket_is_stopped_as_its_file_goes() {
    let mut host = Host::new();
    host.deploy("myapp", "myapp", "1").unwrap();
    let r = host.request("myapp", State::Idle);
    host.run(&r).unwrap();
    let real = host.0.unit_dir.join("ops-myapp:wake-41000.socket");
    let stale = host.0.unit_dir.join("ops-myapp:wake-41999.socket");
    fs::write(
        &stale,
        fs::read_to_string(&real).unwrap().replace("41000", "41999"),
    )
    .unwrap();
    (host.0.systemd.active).insert(
        "ops-myapp:wake-41999.socket".to_owned(),
        "active".to_owned(),
    );
    let calls = host.0.systemd.calls.len();
    let again = host.run(&r).unwrap();
    assert!(again.changed);
    assert!(!stale.exists());
    let stop = (host.0.systemd.calls[calls..].iter())
        .any(|c| c.starts_with("stop") && c.contains("ops-myapp:wake-41999.socket"));
    assert!(stop, "{:?}", &host.0.systemd.calls[calls..]);
    assert!(!host.0.systemd.running().iter().any(|u| u.contains("41999")));
    let third = host.run(&r).unwrap();
    assert!(!third.changed, "{:?}", third.actions);
}
