//! Planning from hand-built hosts: an [`Observed`] value in, the plan's
//! actions (its steps' texts) out. No temporary directory, no systemd.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::bundle::{Image, Pod, Port, Source, Unit};
use crate::ports::PortRange;
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
        unresolved: Vec::new(),
        downloaded: BTreeMap::new(),
    }
}

fn request(state: State) -> Request {
    Request {
        bundle: None,
        repo: None,
        name: Some(shop()),
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
            "install multi-user.target.wants/ops-shop.target",
            "install ops-shop.slice",
            "install ops-shop.target",
            "install shop-1-web.service",
            "install shop-1-web.service.d/50-ops.conf",
            "daemon-reload",
            "make version 1 current",
            "start shop-1-web.service and wait until it is up",
            "start ops-shop.target",
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
            "update ops-shop.target",
            "install shop-2-web.service",
            "install shop-2-web.service.d/50-ops.conf",
            "daemon-reload",
            "make version 2 current",
            "start shop-2-web.service and wait until it is up",
            "stop shop-1-web.service",
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
    assert_eq!(
        actions(&r, &host),
        [
            "update ops-shop.target",
            "daemon-reload",
            "make version 1 current",
            "start shop-1-web.service and wait until it is up",
            "stop shop-2-web.service",
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
    assert_eq!(
        actions(&r, &host),
        [
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
            "install ops-shop.target",
            "install shop-1-web.service",
            "install shop-1-web.service.d/50-ops.conf",
            "daemon-reload",
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
