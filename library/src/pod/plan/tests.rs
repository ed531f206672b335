//! Planning from hand-built hosts: an [`Observed`] value in, the plan's
//! actions (its steps' texts) out. No temporary directory, no systemd.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::bundle::{Image, Pod, Port, Source, Unit};
use crate::ports::PortRange;
use crate::records::idle::{IdleRecord, IDLE_FORMAT};
use crate::records::names::UnitName;
use crate::systemd::UnitStatus;

const IMAGE: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

fn shop() -> PodName {
    PodName::parse("shop").unwrap()
}

/// Version `version` of pod shop: one started unit, `web.service`; with
/// `image`, run in that image; with `port`, a named port assigned.
fn pod(version: &str, image: bool, port: bool) -> Pod {
    let id = ImageId::parse(IMAGE).unwrap();
    Pod {
        name: shop(),
        bundle_name: None,
        version: v(version),
        units: vec![Unit {
            name: UnitName::parse("web.service").unwrap(),
            file: "units/web.service".into(),
            instances: vec![],
            start: true,
            image: image.then(|| id.clone()),
            instance_ports: false,
            shipped_as: None,
            uri: None,
        }],
        images: if image {
            vec![Image {
                id,
                source: Source::Path("image.tar".into()),
                signature: None,
                computed: false,
            }]
        } else {
            vec![]
        },
        volumes: vec![],
        ports: if port {
            vec![Port {
                name: "http".into(),
                fixed: None,
            }]
        } else {
            vec![]
        },
        environment: BTreeMap::new(),
    }
}

fn new_version(pod: Pod) -> NewVersion {
    let units: BTreeMap<UnitName, String> = pod
        .units
        .iter()
        .map(|u| {
            (
                u.name.clone(),
                "[Service]\nExecStart=/bin/true\n".to_owned(),
            )
        })
        .collect();
    NewVersion {
        bundle_dir: "/srv/bundles/shop".into(),
        origin: None,
        digest: crate::store::digest(&pod, &units),
        pod,
        pod_json: Vec::new(),
        units,
        unit_sources: BTreeMap::new(),
        unresolved: Vec::new(),
        downloaded: BTreeMap::new(),
    }
}

fn request(state: State) -> Request {
    Request {
        bundle: None,
        repo: None,
        name: Some(shop()),
        bundle_name: None,
        version: None,
        state,
        keep: None,
        env: None,
        root: "/var/lib/ops".into(),
        unit_dir: "/etc/systemd/system".into(),
        start_timeout: Duration::from_secs(60),
        min_up_time: Duration::from_secs(1),
        rollback: true,
        lock_timeout: Duration::from_secs(300),
        runtime: None,
        keyring: None,
        require_signature: false,
        download_timeout: Duration::from_secs(600),
        ports: None,
        port_range: PortRange::default(),
        wake: false,
    }
}

fn active(unit: &str) -> UnitStatus {
    UnitStatus {
        unit: unit.to_owned(),
        load: "loaded".into(),
        active: "active".into(),
        sub: "running".into(),
        result: "success".into(),
        ..UnitStatus::default()
    }
}

/// A host, built up: `Host::new().stored("1").current("1").running("1")`.
struct Host(Observed);

impl Host {
    fn new() -> Host {
        let mut observed = Observed::new(shop());
        observed.verified = Some(Ok(true));
        Host(observed)
    }

    /// Version `version` in the store, deployed `sequence`-th.
    fn stored_pod(mut self, pod: Pod) -> Host {
        let new = new_version(pod);
        let record = VersionRecord {
            format: META_FORMAT,
            sequence: self.0.state.next_sequence(),
            deployed_at: 0,
            digest: new.digest.clone(),
            pod: new.pod.clone(),
            runtime: Runtime::Systemd,
            ports: Vec::new(),
        };
        let stored = StoredVersion {
            record,
            units: new.units,
            environment: None,
        };
        self.0
            .state
            .versions
            .insert(new.pod.version.clone(), stored);
        self.files()
    }

    fn stored(self, version: &str) -> Host {
        self.stored_pod(pod(version, false, false))
    }

    fn current(mut self, version: &str) -> Host {
        self.0.state.previous = self.0.state.current.replace(v(version));
        self.files()
    }

    /// The version's units run, and the pod starts at boot.
    fn running(mut self, version: &str) -> Host {
        self.0.started = true;
        let (all, _) = version_units(&self.0.state, &v(version));
        for unit in all.into_iter().chain(pod_units(&shop())) {
            self.0.status.insert(unit.clone(), active(&unit));
        }
        self.files()
    }

    /// The bundle of `pod` is given.
    fn bundle(mut self, pod: Pod) -> Host {
        self.0.incoming = Some(new_version(pod));
        self
    }

    fn image_present(mut self, present: bool) -> Host {
        let id = ImageId::parse(IMAGE).unwrap();
        self.0.present.insert(id.clone(), Ok(present));
        self.0.recorded.insert((Runtime::Systemd, id), Ok(present));
        self
    }

    /// The unit directory holds what ops wrote for the store as it is.
    fn files(mut self) -> Host {
        let store = Store::new(Path::new("/var/lib/ops"));
        let unit_dir = PathBuf::from("/etc/systemd/system");
        let o = &mut self.0;
        o.files = units::desired(&o.name, &o.state, o.started, &unit_dir, &store).unwrap();
        o.unit_paths = o.files.keys().cloned().collect();
        self
    }
}

fn actions(request: &Request, host: &Host) -> Vec<String> {
    plan(request, &host.0).expect("planned").actions()
}

fn refusal(request: &Request, host: &Host) -> String {
    plan(request, &host.0).expect_err("refused").0
}

fn with(state: State, f: impl FnOnce(&mut Request)) -> Request {
    let mut r = request(state);
    f(&mut r);
    r
}

#[test]
fn a_first_deploy_adds_installs_makes_current_and_starts() {
    let host = Host::new().bundle(pod("1", false, false));
    assert_eq!(
        actions(&request(State::Started), &host),
        [
            "add version 1 of pod shop to the store",
            "install ops-shop.slice",
            "install shop-1-web.service",
            "install shop-1-web.service.d/50-ops.conf",
            "install multi-user.target.wants/ops-shop.target",
            "install ops-shop.target",
            "daemon-reload",
            "make version 1 current",
            "start shop-1-web.service and wait until it is up",
            "start ops-shop.target",
            "record port 30000 in /var/lib/ops/ports/30000",
        ]
    );
}

#[test]
fn a_switch_starts_the_new_version_then_stops_the_old_one() {
    let host = Host::new()
        .stored("1")
        .current("1")
        .running("1")
        .bundle(pod("2", false, false));
    assert_eq!(
        actions(&request(State::Started), &host),
        [
            "add version 2 of pod shop to the store",
            "install shop-2-web.service",
            "install shop-2-web.service.d/50-ops.conf",
            "update ops-shop.target",
            "daemon-reload",
            "make version 2 current",
            "start shop-2-web.service and wait until it is up",
            "stop shop-1-web.service",
            "record port 30000 in /var/lib/ops/ports/30000",
        ]
    );
}

#[test]
fn the_same_version_already_started_plans_nothing() {
    let host = Host::new()
        .stored("1")
        .current("1")
        .running("1")
        .bundle(pod("1", false, false));
    let plan = plan(&request(State::Started), &host.0).unwrap();
    assert!(plan.is_empty(), "{:?}", plan.actions());
    assert!(actions(&request(State::Present), &host).is_empty());
}

#[test]
fn a_rollback_by_version_switches_back_to_the_stored_one() {
    let host = Host::new()
        .stored("1")
        .stored("2")
        .current("1")
        .current("2")
        .running("2");
    let r = with(State::Started, |r| r.version = Some(v("1")));
    // No unit file changes: the target wants every version's units, and
    // `current` alone says which start (the pivot).
    assert_eq!(
        actions(&r, &host),
        [
            "make version 1 current",
            "start shop-1-web.service and wait until it is up",
            "stop shop-2-web.service",
        ]
    );
}

/// The host as an ops from before the pivot left it: no marker in the
/// versions' directories, drop-ins without the pivot condition, a target
/// wanting the current version's units only.
fn before_the_pivot(mut host: Host) -> Host {
    let o = &mut host.0;
    o.state.unmarked = o.state.versions.keys().cloned().collect();
    for (path, entry) in o.files.iter_mut() {
        let units::Entry::File(text) = entry else {
            continue;
        };
        if path.ends_with(units::DROPIN) {
            *text = (text.split_inclusive('\n'))
                .filter(|l| !l.starts_with("ConditionPathExists="))
                .collect();
        } else if path == Path::new("ops-shop.target") {
            *text = "# Managed by ops (pod shop): edits are overwritten.\n[Unit]\n\
                     Description=ops pod shop (version 2)\nWants=shop-2-web.service\n\n\
                     [Install]\nWantedBy=multi-user.target\n"
                .to_owned();
        }
    }
    host
}

#[test]
fn versions_an_older_ops_left_are_marked_before_their_units_name_the_marker() {
    let host = before_the_pivot(
        Host::new()
            .stored("1")
            .stored("2")
            .current("1")
            .current("2")
            .running("2"),
    );
    // The running version is not restarted: its drop-in changes only by
    // its condition, which systemd tests at a start.
    let expected = [
        "write the marker of version 1 of pod shop (is-version-1: its units start only while \
         it is current)",
        "write the marker of version 2 of pod shop (is-version-2: its units start only while \
         it is current)",
        "update shop-1-web.service.d/50-ops.conf",
        "update shop-2-web.service.d/50-ops.conf",
        "update ops-shop.target",
        "daemon-reload",
    ];
    assert_eq!(actions(&request(State::Started), &host), expected);
    // `keep` prunes version 1: its files go, so it is not marked.
    let r = with(State::Started, |r| r.keep = Some(1));
    assert_eq!(
        actions(&r, &host),
        [
            expected[1],
            "update shop-2-web.service.d/50-ops.conf",
            "update ops-shop.target",
            "remove shop-1-web.service",
            "remove shop-1-web.service.d/50-ops.conf",
            "daemon-reload",
            "remove version 1 of pod shop from the store",
        ]
    );
}

#[test]
fn absent_without_a_version_removes_every_version_and_the_pod() {
    let host = Host::new().stored("1").current("1").running("1");
    assert_eq!(
        actions(&request(State::Absent), &host),
        [
            "stop shop-1-web.service ops-shop.target ops-shop.slice",
            "remove multi-user.target.wants/ops-shop.target",
            "remove ops-shop.slice",
            "remove ops-shop.target",
            "remove shop-1-web.service",
            "remove shop-1-web.service.d/50-ops.conf",
            "daemon-reload",
            "remove version 1 of pod shop from the store",
        ]
    );
}

#[test]
fn keep_prunes_the_oldest_stored_versions() {
    let host = Host::new()
        .stored("1")
        .stored("2")
        .stored("3")
        .current("2")
        .current("3");
    let r = with(State::Present, |r| r.keep = Some(1));
    // The target stops wanting the pruned versions' units before their
    // files go.
    assert_eq!(
        actions(&r, &host),
        [
            "update ops-shop.target",
            "remove shop-1-web.service",
            "remove shop-1-web.service.d/50-ops.conf",
            "remove shop-2-web.service",
            "remove shop-2-web.service.d/50-ops.conf",
            "daemon-reload",
            "remove version 1 of pod shop from the store",
            "remove version 2 of pod shop from the store",
        ]
    );
    let r = with(State::Present, |r| r.keep = Some(3));
    assert!(actions(&r, &host).is_empty());
}

#[test]
fn stopped_stops_the_target_first_then_the_units() {
    let host = Host::new().stored("1").current("1").running("1");
    assert_eq!(
        actions(&request(State::Stopped), &host),
        [
            "stop ops-shop.target shop-1-web.service",
            "remove multi-user.target.wants/ops-shop.target",
            "daemon-reload",
        ]
    );
}

#[test]
fn started_starts_a_stopped_current_version() {
    let host = Host::new().stored("1").current("1");
    assert_eq!(
        actions(&request(State::Started), &host),
        [
            "install multi-user.target.wants/ops-shop.target",
            "daemon-reload",
            "start shop-1-web.service and wait until it is up",
            "start ops-shop.target",
        ]
    );
}

#[test]
fn restarted_restarts_a_running_version() {
    let host = Host::new().stored("1").current("1").running("1");
    assert_eq!(
        actions(&request(State::Restarted), &host),
        ["restart shop-1-web.service and wait until it is up"]
    );
}

#[test]
fn a_changed_environment_alone_restarts_the_running_version() {
    let host = Host::new().stored("1").current("1").running("1");
    let env = |value: &str| {
        with(State::Started, |r| {
            r.env = Some(BTreeMap::from([("TOKEN".to_owned(), value.to_owned())]))
        })
    };
    assert_eq!(
        actions(&env("s3cret"), &host),
        [
            "write the environment file of version 1",
            // The first environment: the drop-in gains its EnvironmentFile=.
            "update shop-1-web.service.d/50-ops.conf",
            "daemon-reload",
            "restart shop-1-web.service and wait until it is up",
        ]
    );
    // The same environment again: nothing to write, nothing to restart.
    let mut same = host;
    let written = crate::units::environment_file(&BTreeMap::from([(
        "TOKEN".to_owned(),
        "s3cret".to_owned(),
    )]));
    same.0.state.versions.get_mut(&v("1")).unwrap().environment = Some(written);
    let same = same.files();
    assert!(actions(&env("s3cret"), &same).is_empty());
    assert_eq!(
        actions(&env("changed"), &same),
        [
            "write the environment file of version 1",
            "restart shop-1-web.service and wait until it is up",
        ]
    );
    // Stopped, a changed environment is written and nothing is started.
    let stopped = Host::new().stored("1").current("1");
    let planned = actions(
        &with(State::Stopped, |r| {
            r.env = Some(BTreeMap::from([("TOKEN".to_owned(), "x".to_owned())]))
        }),
        &stopped,
    );
    assert_eq!(
        planned,
        [
            "write the environment file of version 1",
            "update shop-1-web.service.d/50-ops.conf",
            "daemon-reload",
        ]
    );
}

#[test]
fn an_assigned_port_is_the_lowest_free_one_and_recorded() {
    let mut host = Host::new().bundle(pod("1", false, true));
    host.0.listening.insert(30000);
    let other = PodName::parse("cart").unwrap();
    let mut cart = Host::new().stored("1").0.state;
    for stored in cart.versions.values_mut() {
        stored.record.ports = vec![ports::Allocation {
            name: Some("http".into()),
            instance: None,
            port: 30001,
            kind: ports::Kind::Assigned,
        }];
    }
    host.0.others.as_mut().unwrap().insert(other, cart);
    let plan = plan(&request(State::Present), &host.0).unwrap();
    assert_eq!(plan.ports[0]["port"], 30002);
    let actions = plan.actions();
    assert!(actions.contains(&"record port 30002 in /var/lib/ops/ports/30002".to_owned()));
    // The other pod's record was missing: repaired too.
    assert!(actions.contains(&"record port 30001 in /var/lib/ops/ports/30001".to_owned()));
}

#[test]
fn an_image_missing_from_its_runtime_is_imported_from_the_bundle_first() {
    let host = Host::new()
        .bundle(pod("1", true, false))
        .image_present(false);
    assert_eq!(
        actions(&request(State::Present), &host),
        [
            format!("import image {IMAGE} from /srv/bundles/shop/image.tar into systemd").as_str(),
            "add version 1 of pod shop to the store",
            "install ops-shop.slice",
            "install shop-1-web.service",
            "install shop-1-web.service.d/50-ops.conf",
            "install ops-shop.target",
            "daemon-reload",
            "record port 30000 in /var/lib/ops/ports/30000",
        ]
    );
}

#[test]
fn an_image_already_present_is_not_imported() {
    let host = Host::new()
        .bundle(pod("1", true, false))
        .image_present(true);
    let actions = actions(&request(State::Present), &host);
    assert_eq!(actions[0], "add version 1 of pod shop to the store");
    assert!(!actions.iter().any(|a| a.contains("import")), "{actions:?}");
}

#[test]
fn refusals_say_why() {
    let host = Host::new().stored("1");
    let cases = [
        (
            request(State::Started),
            &host,
            "pod shop has no current version; give a bundle or a version (stored: 1)",
        ),
        (
            with(State::Started, |r| r.version = Some(v("3"))),
            &host,
            "version 3 of pod shop is not in the store at /var/lib/ops; give its bundle to \
             deploy it (stored versions: 1)",
        ),
    ];
    for (request, host, why) in cases {
        assert_eq!(refusal(&request, host), why);
    }
}

#[test]
fn the_current_started_version_is_not_removed_alone() {
    let host = Host::new().stored("1").current("1").running("1");
    let r = with(State::Absent, |r| r.version = Some(v("1")));
    assert_eq!(
        refusal(&r, &host),
        "version 1 of pod shop is the current version and is started; stop it first (state: \
         stopped) or remove every version (leave version out)"
    );
}

#[test]
fn a_stored_version_with_other_content_is_refused() {
    let mut changed = pod("1", false, false);
    changed.environment.insert("A".into(), "b".into());
    let host = Host::new().stored("1").bundle(changed);
    assert!(refusal(&request(State::Present), &host)
        .starts_with("version 1 of pod shop is already deployed with different content"));
}

#[test]
fn an_image_missing_without_a_bundle_is_refused() {
    let host = Host::new()
        .stored_pod(pod("1", true, false))
        .current("1")
        .image_present(false);
    assert_eq!(
        refusal(&request(State::Started), &host),
        format!(
            "image {IMAGE} of version 1 of pod shop is not in the systemd runtime; give the \
             bundle to import it"
        )
    );
}

#[test]
fn a_look_that_failed_is_refused_where_the_plan_needs_it() {
    let mut host = Host::new().bundle(pod("1", false, false));
    host.0.verified = Some(Err(Refusal::new("the unit files are not valid")));
    assert_eq!(
        refusal(&request(State::Present), &host),
        "the unit files are not valid"
    );
    // A version mismatch is found first, as before the look was made.
    let r = with(State::Present, |r| r.version = Some(v("2")));
    assert!(refusal(&r, &host).starts_with("the bundle is version 1 of pod shop"));
}

fn state(versions: &[&str], current: Option<&str>) -> PodState {
    let mut host = Host::new();
    for version in versions {
        host = host.stored(version);
    }
    let mut state = host.0.state;
    state.current = current.map(v);
    state
}

fn names(v: Vec<Version>) -> Vec<String> {
    v.into_iter().map(|v| v.to_string()).collect()
}

#[test]
fn keep_prunes_the_oldest_but_never_current_or_the_acted_on_version() {
    let s = state(&["1", "2", "3", "4"], Some("2"));
    assert_eq!(names(pruned(&s, 1, None)), ["1", "3", "4"]);
    assert_eq!(names(pruned(&s, 2, None)), ["1", "3"]);
    assert_eq!(names(pruned(&s, 0, None)), ["1", "3", "4"]);
    assert_eq!(names(pruned(&s, 1, Some(&v("4")))), ["1", "3"]);
    assert!(pruned(&s, 9, None).is_empty());
}

// Idle and wake.

/// Version `version` of shop, holding host port `port` (assigned).
fn with_port(host: Host, version: &str, port: u16) -> Host {
    let mut host = host.stored_pod(pod(version, false, true));
    let stored = host.0.state.versions.get_mut(&v(version)).unwrap();
    stored.record.ports = vec![crate::ports::Allocation {
        name: Some("http".into()),
        instance: None,
        port,
        kind: ports::Kind::Assigned,
    }];
    // The port record as ops keeps it.
    let held = holders(&host.0, &host.0.state).unwrap();
    let records = ports::index_diff(&BTreeMap::new(), &held)
        .into_iter()
        .map(|c| (c.port, c.after.unwrap()))
        .collect();
    host.0.port_records = Ok(records);
    host.files()
}

/// The pod idle, as `state: idle` leaves it: its version stopped, its
/// target and socket listening, the waker installed.
fn idled(mut host: Host, version: &str, port: u16) -> Host {
    host.0.started = false;
    host.0.status.clear();
    host.0.state.idle = Some(IdleRecord {
        format: IDLE_FORMAT,
        since: 0,
        version: v(version),
        ports: vec![port],
        addresses: BTreeMap::new(),
        start_timeout: 60,
        min_up_time: 1,
    });
    for unit in [
        "ops-shop:idle.target".to_owned(),
        format!("ops-shop:wake-{port}.socket"),
    ] {
        host.0.status.insert(unit.clone(), active(&unit));
    }
    host.0.waker_installed = true;
    host.files()
}

#[test]
fn idle_stops_the_version_marks_the_pod_and_arms_its_ports() {
    let host = with_port(Host::new(), "1", 30000).current("1").running("1");
    assert_eq!(
        actions(&request(State::Idle), &host),
        [
            "stop ops-shop.target shop-1-web.service",
            "install the waker of idle pods, /var/lib/ops/bin/ops-wake (a copy of this ops_pod)",
            "mark pod shop idle (version 1, woken by a connection to its ports)",
            "install ops-shop:wake-30000.socket",
            "install ops-shop:wake.service",
            "install multi-user.target.wants/ops-shop:idle.target",
            "install ops-shop:idle.target",
            "remove multi-user.target.wants/ops-shop.target",
            "daemon-reload",
            "start ops-shop:idle.target ops-shop:wake-30000.socket (a connection to port 30000 \
             wakes the pod)",
        ]
    );
    // Run twice: an idle pod stays as it is.
    let again = idled(host, "1", 30000);
    let plan = plan(&request(State::Idle), &again.0).unwrap();
    assert!(plan.is_empty(), "{:?}", plan.actions());
    // Present leaves it idle too.
    assert!(actions(&request(State::Present), &again).is_empty());
}

/// A version that listened on particular addresses only is armed there
/// (and its record says so); on every address, or not listening at all,
/// everywhere.
#[test]
fn idle_arms_ports_where_the_version_listened() {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let v6 = std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
    let mut host = with_port(Host::new(), "1", 30000).current("1").running("1");
    host.0.listeners.insert(30000, [loopback, v6].into());
    let plan = plan(&request(State::Idle), &host.0).unwrap();
    let record = plan.after.idle.as_ref().unwrap();
    assert_eq!(record.addresses[&30000], [loopback, v6]);
    let socket = units::desired(
        &shop(),
        &plan.after,
        false,
        Path::new("/etc/systemd/system"),
        &Store::new(Path::new("/var/lib/ops")),
    )
    .unwrap()[Path::new("ops-shop:wake-30000.socket")]
    .text();
    assert!(
        socket.contains(
            "[Socket]\nListenStream=127.0.0.1:30000\nListenStream=[::1]:30000\nFreeBind=yes\n"
        ),
        "{socket}"
    );
    host.0.listeners.insert(
        30000,
        [loopback, std::net::IpAddr::from([0, 0, 0, 0])].into(),
    );
    let plan = self::plan(&request(State::Idle), &host.0).unwrap();
    assert!(plan.after.idle.as_ref().unwrap().addresses.is_empty());
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    host.0.listeners.clear();
    let plan = self::plan(&request(State::Idle), &host.0).unwrap();
    assert!(plan.after.idle.as_ref().unwrap().addresses.is_empty());
    assert_eq!(
        plan.warnings,
        [
            "nothing listens on port 30000 of pod shop now (is version 1 running?), so ops cannot \
          tell on which addresses it does: armed on every address"
        ]
    );
}

#[test]
fn idle_units_say_what_they_do() {
    let host = idled(with_port(Host::new(), "1", 30000).current("1"), "1", 30000);
    let text = |p: &str| host.0.files[Path::new(p)].text();
    assert_eq!(
        text("ops-shop:wake-30000.socket"),
        "# Managed by ops (pod shop): edits are overwritten.\n[Unit]\nDescription=ops pod shop \
         idle: wake on port 30000\nPartOf=ops-shop:idle.target\n\n[Socket]\nListenStream=30000\n\
         Service=ops-shop:wake.service\n"
    );
    assert_eq!(
        text("ops-shop:wake.service"),
        "# Managed by ops (pod shop): edits are overwritten.\n[Unit]\nDescription=ops pod shop: \
         wake it (a connection came to an idle port)\n\n[Service]\nType=oneshot\n\
         ExecStart=/var/lib/ops/bin/ops-wake --wake --root /var/lib/ops --unit-dir \
         /etc/systemd/system --pod shop\nTimeoutStartSec=361\n"
    );
    assert_eq!(
        text("ops-shop:idle.target"),
        "# Managed by ops (pod shop): edits are overwritten.\n[Unit]\nDescription=ops pod shop \
         idle: a connection wakes version 1\nWants=ops-shop:wake-30000.socket\n\n[Install]\n\
         WantedBy=multi-user.target\n"
    );
    assert_eq!(
        text("multi-user.target.wants/ops-shop:idle.target"),
        "symlink to /etc/systemd/system/ops-shop:idle.target\n"
    );
}

#[test]
fn started_and_a_wake_disarm_first_then_start_the_version() {
    let host = idled(with_port(Host::new(), "1", 30000).current("1"), "1", 30000);
    let expected = |mark: &str| {
        vec![
            "stop ops-shop:idle.target ops-shop:wake-30000.socket".to_owned(),
            mark.to_owned(),
            "install multi-user.target.wants/ops-shop.target".to_owned(),
            "remove multi-user.target.wants/ops-shop:idle.target".to_owned(),
            "remove ops-shop:idle.target".to_owned(),
            "remove ops-shop:wake-30000.socket".to_owned(),
            "remove ops-shop:wake.service".to_owned(),
            "daemon-reload".to_owned(),
            "start shop-1-web.service and wait until it is up".to_owned(),
            "start ops-shop.target".to_owned(),
        ]
    };
    assert_eq!(
        actions(&request(State::Started), &host),
        expected("clear the idle mark of pod shop")
    );
    let wake = with(State::Started, |r| r.wake = true);
    assert_eq!(
        actions(&wake, &host),
        expected("clear the idle mark of pod shop and record it woken")
    );
    let woken = plan(&wake, &host.0).unwrap();
    assert_eq!(woken.after.woken, None, "the record is written by the step");
    // Only an idle pod is woken.
    let stopped = with_port(Host::new(), "1", 30000).current("1");
    assert!(plan(&wake, &stopped.0).unwrap().is_empty());
}

#[test]
fn stopped_disarms_and_absent_removes_the_idle_units() {
    let host = idled(with_port(Host::new(), "1", 30000).current("1"), "1", 30000);
    assert_eq!(
        actions(&request(State::Stopped), &host),
        [
            "stop ops-shop:idle.target ops-shop:wake-30000.socket",
            "clear the idle mark of pod shop",
            "remove multi-user.target.wants/ops-shop:idle.target",
            "remove ops-shop:idle.target",
            "remove ops-shop:wake-30000.socket",
            "remove ops-shop:wake.service",
            "daemon-reload",
        ]
    );
    let absent = actions(&request(State::Absent), &host);
    assert_eq!(
        absent[0],
        "stop ops-shop:idle.target ops-shop:wake-30000.socket"
    );
    assert!(absent.contains(&"remove ops-shop:wake.service".to_owned()));
}

#[test]
fn idle_is_refused_without_ports_or_for_a_version_not_current() {
    let host = Host::new().stored("1").current("1").running("1");
    assert_eq!(
        refusal(&request(State::Idle), &host),
        "pod shop has no ports to be woken by; use state: stopped"
    );
    let host = with_port(with_port(Host::new(), "1", 30000), "2", 30000).current("1");
    let r = with(State::Idle, |r| r.version = Some(v("2")));
    assert_eq!(
        refusal(&r, &host),
        "state: idle acts on the current version of pod shop, and version 2 is not (current: \
         1); start it first (state: started), or leave version out"
    );
    // The version came from a bundle: there is no version option to leave out.
    let r = with(State::Idle, |r| {
        r.version = Some(v("2"));
        r.bundle = Some(PathBuf::from("/srv/bundles/shop-2"));
    });
    assert_eq!(
        refusal(&r, &host),
        "state: idle acts on the current version of pod shop, and version 2 is not (current: \
         1); start it first (state: started), or give name without bundle or repo to idle the \
         current one"
    );
    let host = with_port(Host::new(), "2", 30000);
    assert_eq!(
        refusal(&r, &host),
        "state: idle acts on the current version of pod shop, and version 2 is not (current: \
         none); start a version first (state: started)"
    );
}

#[test]
fn the_diff_says_whether_the_pod_is_idle() {
    let host = with_port(Host::new(), "1", 30000).current("1").running("1");
    let planned = plan(&request(State::Idle), &host.0).unwrap();
    let diff = planned.report(&host.0, true).diff;
    assert!(
        diff[0]["before"].as_str().unwrap().ends_with("idle: no\n"),
        "{diff:?}"
    );
    assert!(
        diff[0]["after"]
            .as_str()
            .unwrap()
            .contains("started at boot: no\nversions: 1\nidle: yes (version 1, woken by a connection to port 30000)\n"),
        "{diff:?}"
    );
}

fn pod_name(s: &str) -> PodName {
    PodName::parse(s).unwrap()
}

/// Bundle shop (version `version`, its pod as `pod` makes it) deployed
/// under `name`, as ops_pod reads it.
fn deployed_as(name: &str, pod: Pod) -> (Request, NewVersion) {
    let r = with(State::Started, |r| r.name = Some(pod_name(name)));
    let mut new = new_version(pod);
    super::super::name_deployment(&r, &mut new).expect("named");
    (r, new)
}

/// A host with nothing on it but the bundle, for the deployment `name`.
fn host_of(name: &str, new: NewVersion) -> Host {
    let mut observed = Observed::new(pod_name(name));
    observed.verified = Some(Ok(true));
    observed.incoming = Some(new);
    Host(observed)
}

fn file_text(plan: &Plan, path: &str) -> String {
    plan.unit_changes()
        .into_iter()
        .find(|c| c.path == Path::new(path))
        .and_then(|c| c.after.clone())
        .map(|e| e.text())
        .unwrap_or_else(|| panic!("no {path} in the plan"))
}

#[test]
fn a_bundle_deployed_under_a_name_is_a_pod_of_that_name() {
    let (r, new) = deployed_as("shop-staging", pod("1", false, false));
    assert_eq!(new.pod.name.as_str(), "shop-staging");
    assert_eq!(new.pod.bundle().as_str(), "shop");
    let host = host_of("shop-staging", new);
    let plan = plan(&r, &host.0).expect("planned");
    assert_eq!(
        plan.actions(),
        [
            "add version 1 of pod shop-staging to the store",
            "install ops-shop\\x2dstaging.slice",
            "install shop-staging-1-web.service",
            "install shop-staging-1-web.service.d/50-ops.conf",
            "install multi-user.target.wants/ops-shop-staging.target",
            "install ops-shop-staging.target",
            "daemon-reload",
            "make version 1 current",
            "start shop-staging-1-web.service and wait until it is up",
            "start ops-shop-staging.target",
            "record port 30000 in /var/lib/ops/ports/30000",
        ]
    );
    let dropin = file_text(&plan, "shop-staging-1-web.service.d/50-ops.conf");
    for line in [
        "Slice=ops-shop\\x2dstaging.slice",
        "PartOf=ops-shop-staging.target",
        "Environment=\"POD_NAME=shop-staging\"",
        "Environment=\"POD_BUNDLE=shop\"",
        "Environment=\"PORT=30000\"",
    ] {
        assert!(
            dropin.lines().any(|l| l == line),
            "{line} not in:\n{dropin}"
        );
    }
    assert_eq!(plan.ports[0]["kind"], "default");
    assert_eq!(plan.ports[0]["name"], serde_json::Value::Null);
}

#[test]
fn two_deployments_of_one_bundle_hold_ports_of_their_own() {
    let (r, staging) = deployed_as("shop-staging", pod("1", false, true));
    let (_, production) = deployed_as("shop-production", pod("1", false, true));
    let mut host = host_of("shop-staging", staging.clone());
    let plan_staging = plan(&r, &host.0).expect("planned");
    // Production is deployed; staging, the same bundle version, is added
    // beside it with another port.
    let mut prod_state = Host::new().0.state;
    let mut record = plan_staging.after.versions[&v("1")].clone();
    record.record.pod = production.pod.clone();
    prod_state.versions.insert(v("1"), record);
    host.0
        .others
        .as_mut()
        .unwrap()
        .insert(pod_name("shop-production"), prod_state);
    let plan = plan(&r, &host.0).expect("planned");
    assert_eq!(plan.ports[0]["port"], 30001, "{:?}", plan.ports);
    assert!(plan.actions()[0] == "add version 1 of pod shop-staging to the store");
}

#[test]
fn a_rerun_of_a_version_stored_before_bundle_names_changes_nothing() {
    // Stored by an older ops: no bundle name in its record.
    let host = Host::new().stored("1").current("1").running("1");
    let (_, new) = deployed_as("shop", pod("1", false, false));
    assert_eq!(
        new.pod.bundle_name.as_ref().map(PodName::as_str),
        Some("shop")
    );
    let host = host.bundle(new.pod.clone());
    let mut observed = host.0;
    observed.incoming = Some(new);
    let plan = plan(&request(State::Started), &observed).expect("planned");
    assert!(plan.is_empty(), "{:?}", plan.actions());
    // Its drop-in stays without POD_BUNDLE: nothing restarts.
    let dropin = observed.files[Path::new("shop-1-web.service.d/50-ops.conf")].text();
    assert!(!dropin.contains("POD_BUNDLE"), "{dropin}");
}

#[test]
fn a_deployment_comes_from_one_bundle() {
    let mut host = Host::new();
    let (_, first) = deployed_as("shop", pod("1", false, false));
    host = host.stored_pod(first.pod).current("1");
    let mut other = pod("2", false, false);
    other.name = pod_name("cart");
    let r = with(State::Started, |r| r.name = Some(shop()));
    let mut new = new_version(other);
    super::super::name_deployment(&r, &mut new).expect("named");
    host.0.incoming = Some(new);
    assert_eq!(
        refusal(&r, &host),
        "pod shop is a deployment of bundle shop (versions 1), not of bundle cart: a deployment \
         comes from one bundle; give another name, or remove pod shop first (state: absent \
         without version)"
    );
    // Nor does it remove the deployment's versions.
    let absent = with(State::Absent, |r| r.name = Some(shop()));
    assert!(refusal(&absent, &host).starts_with("pod shop is a deployment of bundle shop"));
}

#[test]
fn bundle_name_must_be_the_bundles_own_name() {
    let r = with(State::Started, |r| {
        r.name = Some(pod_name("shop-staging"));
        r.bundle_name = Some(pod_name("cart"));
    });
    let mut new = new_version(pod("1", false, false));
    let error = super::super::name_deployment(&r, &mut new).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "the bundle is pod shop but bundle_name is cart; leave bundle_name out or make them \
         agree (name is the deployment's name)"
    );
}

/// Version 1 stored holding default port 30000, version 2's bundle given.
fn default_port_switch(listening: bool) -> Vec<String> {
    let mut host = Host::new().stored("1").current("1").running("1");
    for stored in host.0.state.versions.values_mut() {
        stored.record.ports = vec![ports::Allocation {
            name: None,
            instance: None,
            port: 30000,
            kind: ports::Kind::Default,
        }];
    }
    if listening {
        host.0.listening.insert(30000);
    }
    let host = host.files().bundle(pod("2", false, false));
    actions(&request(State::Started), &host)
}

#[test]
fn a_default_port_stops_the_old_version_first_only_when_it_is_listened_on() {
    let quiet = default_port_switch(false);
    let start = quiet.iter().position(|a| a.starts_with("start shop-2"));
    let stop = quiet.iter().position(|a| a == "stop shop-1-web.service");
    assert!(start < stop, "{quiet:?}");
    let busy = default_port_switch(true);
    let start = busy.iter().position(|a| a.starts_with("start shop-2"));
    let stop = busy.iter().position(|a| a == "stop shop-1-web.service");
    assert!(stop < start, "{busy:?}");
}
