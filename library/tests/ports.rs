//! Named ports on ops_pod's engine, with the recording fake standing in
//! for systemd: allocation across pods, versions and instances, the
//! record in `<root>/ports/`, injection into drop-ins, refusals (their
//! messages snapshotted), check mode, and concurrent deploys.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;

mod common;

use common::Host;

use ops_core::bundle::Version;
use ops_core::pod::{self, Request, State};
use ops_core::ports::PortRange;
use ops_core::systemd::fake::Recording;
use serde_json::{json, Value};

const WEB: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

impl Host {
    /// A bundle of pod `name` at `version`: a template `web@` with
    /// `replication`, and `ports` as pod.json's.
    fn bundle(&self, name: &str, version: &str, replication: Value, ports: Value) -> PathBuf {
        let dir = self
            .dir
            .path()
            .join("bundles")
            .join(format!("{name}-{version}-{}", ports.to_string().len()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("web@.service"), WEB).unwrap();
        let mut pod = json!({
            "name": name,
            "version": version,
            "containers": [
                {"name": "web", "replication": replication, "systemd": {"unit-files": ["web@.service"]}},
            ],
        });
        if !ports.is_null() {
            pod["ports"] = ports;
        }
        fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        dir
    }

    fn deploy(
        &mut self,
        name: &str,
        version: &str,
        replication: Value,
        ports: Value,
    ) -> pod::Report {
        let mut request = self.pod_request(name, State::Started);
        request.bundle = Some(self.bundle(name, version, replication, ports));
        self.run(&request).expect("deploys")
    }

    fn run(&mut self, request: &Request) -> Result<pod::Report, String> {
        pod::run(
            request,
            &mut self.systemd,
            &mut ops_core::image::PodmanCli,
            false,
            true,
        )
        .map_err(|f| ops_core::ansible::error_chain(&f.error))
    }

    /// `PORT*` lines of a drop-in, e.g. of `a-1-web@1.service`.
    fn port_env(&self, unit: &str) -> Vec<String> {
        let text = fs::read_to_string(self.unit_dir.join(format!("{unit}.d/50-ops.conf"))).unwrap();
        text.lines()
            .filter(|l| l.starts_with("Environment=\"PORT"))
            .map(str::to_owned)
            .collect()
    }

    /// `<root>/ports`: file name to text.
    fn record(&self) -> BTreeMap<String, String> {
        let Ok(entries) = fs::read_dir(self.root.join("ports")) else {
            return BTreeMap::new();
        };
        entries
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect()
    }
}

/// `(name, instance, port, kind)` of a report's ports.
fn ports_of(report: &pod::Report) -> Vec<(Value, Value, u16, String)> {
    report
        .ports
        .iter()
        .map(|p| {
            (
                p["name"].clone(),
                p["instance"].clone(),
                u16::try_from(p["port"].as_u64().unwrap()).unwrap(),
                p["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn port_of(report: &pod::Report, name: &str, instance: &str) -> u16 {
    ports_of(report)
        .into_iter()
        .find(|(n, i, _, _)| n == name && i == instance)
        .unwrap_or_else(|| panic!("no {name} {instance} in {:?}", report.ports))
        .2
}

#[test]
fn two_pods_get_distinct_ports_per_instance_injected_and_recorded() {
    let mut host = Host::new();
    let a = host.deploy(
        "a",
        "1",
        json!(2),
        json!({"http": "assign", "admin": "assign"}),
    );
    let b = host.deploy("b", "1", json!(2), json!(["http"]));
    let (a1, a2) = (port_of(&a, "http", "1"), port_of(&a, "http", "2"));
    let (b1, b2) = (port_of(&b, "http", "1"), port_of(&b, "http", "2"));
    let (admin1, admin2) = (port_of(&a, "admin", "1"), port_of(&a, "admin", "2"));
    let all: BTreeSet<u16> = [a1, a2, b1, b2, admin1, admin2].into();
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(all.iter().all(|p| (30000..=32767).contains(p)), "{all:?}");
    assert!(ports_of(&a).iter().all(|p| p.3 == "assigned"));
    // Declared order: http first, so PORT is http's.
    assert_eq!(
        host.port_env("a-1-web@2.service"),
        [
            format!("Environment=\"PORT_HTTP={a2}\""),
            format!("Environment=\"PORT_ADMIN={admin2}\""),
            format!("Environment=\"PORT={a2}\""),
        ]
    );
    assert_eq!(
        host.port_env("b-1-web@1.service"),
        [
            format!("Environment=\"PORT_HTTP={b1}\""),
            format!("Environment=\"PORT={b1}\""),
        ]
    );
    // One readable file per port.
    let record = host.record();
    assert_eq!(
        record.keys().cloned().collect::<BTreeSet<_>>(),
        all.iter().map(u16::to_string).collect()
    );
    assert_eq!(
        record[&b2.to_string()],
        "# Managed by ops: who holds this port, derived from the versions' meta.json.\n\
         pod: b\nname: http\ninstance: 2\nkind: assigned\nversions: 1\n"
    );
    assert!(
        a.actions
            .iter()
            .any(|x| x.starts_with(&format!("record port {a1} in "))),
        "{:?}",
        a.actions
    );
    assert_eq!(a.pod["ports"].as_array().unwrap().len(), 4);

    let before = host.snapshot();
    let mut again = host.pod_request("a", State::Started);
    again.bundle = Some(host.bundle(
        "a",
        "1",
        json!(2),
        json!({"http": "assign", "admin": "assign"}),
    ));
    let rerun = host.run(&again).unwrap();
    assert!(!rerun.changed, "{:?}", rerun.actions);
    assert_eq!(ports_of(&rerun), ports_of(&a));
    assert_eq!(host.snapshot(), before);
}

#[test]
fn a_pod_keeps_its_ports_across_versions_and_frees_them_with_the_last_one() {
    let mut host = Host::new();
    let v1 = host.deploy("web", "1", json!(2), json!({"http": "assign"}));
    let other = host.deploy("other", "1", json!(1), json!({"http": "assign"}));
    // v2 keeps http and adds a third instance and a new port name.
    let v2 = host.deploy(
        "web",
        "2",
        json!(3),
        json!({"http": "assign", "metrics": "assign"}),
    );
    for i in ["1", "2"] {
        assert_eq!(
            port_of(&v2, "http", i),
            port_of(&v1, "http", i),
            "instance {i}"
        );
    }
    let fresh = [port_of(&v2, "http", "3"), port_of(&v2, "metrics", "1")];
    let taken: BTreeSet<u16> = ports_of(&v1)
        .iter()
        .chain(&ports_of(&other))
        .map(|p| p.2)
        .collect();
    assert!(
        fresh.iter().all(|p| !taken.contains(p)),
        "{fresh:?} {taken:?}"
    );
    let versions = |r: &pod::Report, port: u16| {
        r.ports.iter().find(|p| p["port"] == port).unwrap()["versions"].clone()
    };
    assert_eq!(versions(&v2, port_of(&v1, "http", "1")), json!(["1", "2"]));
    assert_eq!(versions(&v2, fresh[0]), json!(["2"]));

    // Rolling back to version 1 moves no port.
    let mut back = host.pod_request("web", State::Started);
    back.version = Some(Version::parse("1").unwrap());
    let back = host.run(&back).unwrap();
    assert_eq!(
        host.port_env("web-1-web@1.service"),
        [
            format!("Environment=\"PORT_HTTP={}\"", port_of(&v1, "http", "1")),
            format!("Environment=\"PORT={}\"", port_of(&v1, "http", "1")),
        ]
    );
    assert_eq!(ports_of(&back), ports_of(&v2));

    // Version 2 pruned: only its own ports are freed.
    let mut prune = host.pod_request("web", State::Started);
    prune.keep = Some(1);
    let pruned = host.run(&prune).unwrap();
    assert_eq!(ports_of(&pruned), ports_of(&v1));
    for p in fresh {
        assert!(
            pruned.actions.contains(&format!(
                "free port {p} (remove {})",
                host.root.join("ports").join(p.to_string()).display()
            )),
            "{:?}",
            pruned.actions
        );
        assert!(!host.record().contains_key(&p.to_string()));
    }

    // Every version gone: every port of the pod free, and a new pod may
    // have the lowest of them.
    let gone = host.run(&host.pod_request("web", State::Absent)).unwrap();
    assert!(gone.ports.is_empty());
    assert_eq!(host.record().len(), 1, "{:?}", host.record());
    let lowest = ports_of(&v1).iter().map(|p| p.2).min().unwrap();
    let newcomer = host.deploy("newcomer", "1", json!(1), json!(["http"]));
    assert_eq!(port_of(&newcomer, "http", "1"), lowest);
}

#[test]
fn a_version_on_the_same_ports_replaces_the_running_one_stop_first() {
    let mut host = Host::new();
    host.deploy("a", "1", json!(1), json!(["http"]));
    host.systemd.calls.clear();
    host.deploy("a", "2", json!(1), json!(["http"]));
    let calls: Vec<&str> = host
        .systemd
        .calls
        .iter()
        .map(String::as_str)
        .filter(|c| c.starts_with("start") || c.starts_with("stop"))
        .collect();
    assert_eq!(
        calls,
        ["stop a-1-web@1.service", "start a-2-web@1.service"],
        "{:?}",
        host.systemd.calls
    );

    // When the new version does not come up, the old one gets its ports
    // back.
    host.systemd.calls.clear();
    host.systemd.failing.insert("a-3-web@1.service".to_owned());
    let mut request = host.pod_request("a", State::Started);
    request.bundle = Some(host.bundle("a", "3", json!(1), json!(["http"])));
    let failure = pod::run(
        &request,
        &mut host.systemd,
        &mut ops_core::image::PodmanCli,
        false,
        false,
    )
    .unwrap_err();
    assert!(
        ops_core::ansible::error_chain(&failure.error).contains("rolled back to version 2"),
        "{:?}",
        failure.error
    );
    assert!(
        failure
            .report
            .actions
            .contains(&"undo: start a-2-web@1.service again".to_owned()),
        "{:?}",
        failure.report.actions
    );
    assert_eq!(
        host.systemd.running(),
        ["a-2-web@1.service", "ops-a.target"]
    );

    // With rollback off the failed version stays, and the message says
    // the one it replaced was stopped for the ports, as it was.
    host.systemd.failing.insert("a-4-web@1.service".to_owned());
    let mut request = host.pod_request("a", State::Started);
    request.bundle = Some(host.bundle("a", "4", json!(1), json!(["http"])));
    request.rollback = false;
    let failure = pod::run(
        &request,
        &mut host.systemd,
        &mut ops_core::image::PodmanCli,
        false,
        false,
    )
    .unwrap_err();
    let msg = ops_core::ansible::error_chain(&failure.error);
    assert!(
        msg.contains(
            "version 2 stays stopped (its units were stopped first, for the ports they share)"
        ),
        "{msg}"
    );
    assert!(
        failure
            .report
            .actions
            .contains(&"stop a-2-web@1.service".to_owned()),
        "{:?}",
        failure.report.actions
    );
    assert!(!host
        .systemd
        .running()
        .contains(&"a-2-web@1.service".to_owned()));
}

#[test]
fn refusals_name_the_holder_and_change_nothing() {
    let mut host = Host::new();
    host.deploy("a", "1", json!(1), json!({"http": 18080}));
    host.deploy("b", "1", json!([18081, 18082]), Value::Null);
    let mut errors = BTreeMap::new();
    let narrow = host.deploy("c", "1", json!(1), json!({"http": "assign"}));
    let held = port_of(&narrow, "http", "1");
    let before_c = host.snapshot();
    for (case, pod, replication, ports, range) in [
        (
            "fixed port of another pod",
            "d",
            json!(1),
            json!({"web": 18080}),
            None,
        ),
        (
            "fixed port on another pod's instance",
            "d",
            json!(1),
            json!({"web": 18081}),
            None,
        ),
        (
            "instance port of another pod",
            "d",
            json!([18080]),
            Value::Null,
            None,
        ),
        (
            "fixed port for two instances",
            "d",
            json!(2),
            json!({"web": 19000}),
            None,
        ),
        (
            "the same port twice",
            "d",
            json!([19001]),
            json!({"web": 19001}),
            None,
        ),
        (
            "a range with nothing free",
            "d",
            json!(1),
            json!(["web"]),
            Some(PortRange {
                low: held,
                high: held,
            }),
        ),
    ] {
        let mut request = host.pod_request(pod, State::Started);
        request.bundle = Some(host.bundle(pod, "1", replication, ports));
        if let Some(range) = range {
            request.port_range = range;
        }
        errors.insert(case, host.run(&request).unwrap_err());
        assert_eq!(host.snapshot(), before_c, "{case}");
    }
    // c's port is the lowest free one here: shown by name, not number.
    let errors: BTreeMap<&str, String> = errors
        .into_iter()
        .map(|(case, e)| (case, e.replace(&held.to_string(), "<port of c>")))
        .collect();
    insta::assert_json_snapshot!(errors);
}

#[test]
fn numbered_instances_are_their_own_ports() {
    let mut host = Host::new();
    let r = host.deploy("seed", "1", json!([8080, 8081]), json!({"admin": "assign"}));
    assert_ne!(port_of(&r, "admin", "8080"), port_of(&r, "admin", "8081"));
    let own: Vec<_> = ports_of(&r)
        .into_iter()
        .filter(|p| p.3 == "instance")
        .collect();
    assert_eq!(
        own,
        [
            (Value::Null, json!("8080"), 8080, "instance".to_owned()),
            (Value::Null, json!("8081"), 8081, "instance".to_owned()),
        ]
    );
    assert_eq!(
        host.port_env("seed-1-web@8081.service"),
        [
            format!(
                "Environment=\"PORT_ADMIN={}\"",
                port_of(&r, "admin", "8081")
            ),
            "Environment=\"PORT=8081\"".to_owned(),
        ]
    );
    // A count of instances names them 1, 2: not ports. A pod that names
    // no port gets a default one per instance.
    let counted = host.deploy("counted", "1", json!(2), Value::Null);
    let kinds: Vec<_> = ports_of(&counted).into_iter().map(|p| p.3).collect();
    assert_eq!(kinds, ["default", "default"], "{:?}", counted.ports);
    assert_eq!(
        host.port_env("counted-1-web@1.service"),
        [format!("Environment=\"PORT={}\"", counted.ports[0]["port"])]
    );
}

#[test]
fn only_numbers_a_service_binds_unprivileged_are_instance_ports() {
    let mut host = Host::new();
    // [1, 2] are instance numbers: holding ports 1 and 2 would be wrong.
    // They get the default port a pod that names none gets, assigned.
    let small = host.deploy("small", "1", json!([1, 2]), Value::Null);
    let held: Vec<_> = ports_of(&small).into_iter().map(|p| (p.2, p.3)).collect();
    assert!(
        held.len() == 2
            && held
                .iter()
                .all(|(port, kind)| *port >= 1024 && kind == "default"),
        "{held:?}"
    );
    assert_eq!(
        host.port_env("small-1-web@2.service"),
        [format!("Environment=\"PORT={}\"", held[1].0)]
    );
    // One privileged port makes the whole list names.
    let mixed = host.deploy("mixed", "1", json!([80, 8080]), Value::Null);
    let kinds: Vec<_> = ports_of(&mixed).into_iter().map(|p| p.3).collect();
    assert_eq!(kinds, ["default", "default"], "{:?}", mixed.ports);
    // The bounds of the range are ports.
    let edges = host.deploy("edges", "1", json!([1024, 65535]), Value::Null);
    let own: Vec<u16> = ports_of(&edges).into_iter().map(|p| p.2).collect();
    assert_eq!(own, [1024, 65535]);
    assert_eq!(
        host.port_env("edges-1-web@1024.service"),
        ["Environment=\"PORT=1024\""]
    );
}

#[test]
fn a_port_someone_listens_on_is_not_assigned() {
    let mut host = Host::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = listener.local_addr().unwrap().port();
    let mut request = host.pod_request("a", State::Started);
    request.bundle = Some(host.bundle("a", "1", json!(2), json!(["http"])));
    request.port_range = PortRange {
        low: busy,
        high: busy.saturating_add(10),
    };
    let r = host.run(&request).unwrap();
    let got: Vec<u16> = ports_of(&r).iter().map(|p| p.2).collect();
    assert!(!got.contains(&busy), "{busy} is listened on: {got:?}");
    assert_eq!(got.len(), 2);
    drop(listener);
}

#[test]
fn check_mode_reports_the_ports_it_would_assign_and_records_nothing() {
    let mut host = Host::new();
    host.deploy("a", "1", json!(1), json!(["http"]));
    let before = host.snapshot();
    let mut request = host.pod_request("b", State::Started);
    request.bundle = Some(host.bundle("b", "1", json!(2), json!(["http"])));
    let planned = pod::run(
        &request,
        &mut host.systemd,
        &mut ops_core::image::PodmanCli,
        true,
        true,
    )
    .unwrap();
    assert!(planned.changed);
    assert_eq!(planned.ports.len(), 2);
    assert_eq!(host.snapshot(), before);
    let diff = planned.diff.iter().find(|d| {
        d["after_header"]
            .as_str()
            .unwrap()
            .ends_with(&format!("ports/{}", planned.ports[0]["port"]))
    });
    assert!(
        diff.is_some_and(|d| d["before"] == ""
            && d["after"]
                .as_str()
                .unwrap()
                .contains("pod: b\nname: http\n")),
        "{:?}",
        planned.diff
    );
    let done = host.run(&request).unwrap();
    assert_eq!(done.ports, planned.ports);
}

#[test]
fn the_ports_option_overrides_the_bundle() {
    let mut host = Host::new();
    let mut request = host.pod_request("a", State::Started);
    request.bundle = Some(host.bundle(
        "a",
        "1",
        json!(1),
        json!({"http": "assign", "admin": "assign"}),
    ));
    request.ports = Some(
        ops_core::bundle::parse_ports("ports", json!({"HTTP": 18443, "extra": "assign"})).unwrap(),
    );
    let r = host.run(&request).unwrap();
    assert_eq!(port_of(&r, "HTTP", "1"), 18443);
    assert_eq!(
        ports_of(&r).iter().find(|p| p.0 == "HTTP").unwrap().3,
        "fixed"
    );
    assert_eq!(ports_of(&r).len(), 3);
    // Other ports for the deployed version: the option is what differs,
    // and the refusal says so rather than blaming the bundle.
    let mut other = request.clone();
    other.ports = Some(ops_core::bundle::parse_ports("ports", json!({"HTTP": 18444})).unwrap());
    let refused = host.run(&other).unwrap_err();
    assert!(
        refused.contains("with the ports option laid over it: a stored version keeps the ports"),
        "{refused}"
    );
    // The refusal reports the ports the pod holds, as a success does.
    let failed = pod::run(
        &other,
        &mut host.systemd,
        &mut ops_core::image::PodmanCli,
        false,
        false,
    )
    .unwrap_err();
    assert_eq!(failed.report.ports, r.ports);
    // Ports given without a bundle: said, not ignored.
    let mut bare = host.pod_request("a", State::Started);
    bare.ports = request.ports.clone();
    assert_eq!(
        host.run(&bare).unwrap_err(),
        "ports applies to the bundle being deployed: give bundle too (a stored version keeps the \
         ports it was deployed with)"
    );
    assert_eq!(
        ops_core::bundle::parse_ports("ports", json!({"http": 0, "9x": "assign"})).unwrap_err(),
        "ports.http: expected a port number from 1 to 65535 or \"assign\", got 0; ports.9x: \
         expected a port name of letters, digits and '_', starting with a letter, got \"9x\""
    );
}

#[test]
fn a_lost_or_stale_record_is_rebuilt_from_the_store() {
    let mut host = Host::new();
    let r = host.deploy("a", "1", json!(2), json!(["http"]));
    let record = host.record();
    fs::remove_dir_all(host.root.join("ports")).unwrap();
    let mut stale = host.pod_request("a", State::Started);
    stale.bundle = Some(host.bundle("a", "1", json!(2), json!(["http"])));
    fs::create_dir_all(host.root.join("ports")).unwrap();
    fs::write(
        host.root.join("ports/31999"),
        "# Managed by ops: who holds this port, derived from the versions' meta.json.\npod: gone\n",
    )
    .unwrap();
    fs::write(host.root.join("ports/notes.txt"), "mine\n").unwrap();
    let repaired = host.run(&stale).unwrap();
    assert!(repaired.changed);
    assert!(
        repaired
            .actions
            .iter()
            .any(|a| a.starts_with("free port 31999")),
        "{:?}",
        repaired.actions
    );
    let mut expected = record;
    expected.insert("notes.txt".into(), "mine\n".into());
    assert_eq!(host.record(), expected, "{:?}", r.ports);
    assert!(!host.run(&stale).unwrap().changed);
}

#[test]
fn concurrent_deploys_of_different_pods_never_share_a_port() {
    let host = Host::new();
    let bundles: Vec<(String, PathBuf)> = (0..8)
        .map(|i| {
            let name = format!("p{i}");
            let b = host.bundle(&name, "1", json!(2), json!(["http", "admin"]));
            (name, b)
        })
        .collect();
    let reports: Vec<pod::Report> = std::thread::scope(|s| {
        let handles: Vec<_> = bundles
            .iter()
            .map(|(name, bundle)| {
                let mut request = host.pod_request(name, State::Started);
                request.bundle = Some(bundle.clone());
                s.spawn(move || {
                    let mut systemd = Recording::default();
                    pod::run(
                        &request,
                        &mut systemd,
                        &mut ops_core::image::PodmanCli,
                        false,
                        false,
                    )
                    .map_err(|f| ops_core::ansible::error_chain(&f.error))
                    .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<u16> = reports
        .iter()
        .flat_map(|r| ports_of(r).into_iter().map(|p| p.2))
        .collect();
    assert_eq!(all.len(), 32);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 32, "{all:?}");
    assert_eq!(host.record().len(), 32);
}

/// Seed 004: `"ports": "driver, cluster, web"` names ports to assign, in
/// pod.json and in the `ports` option; an empty or repeated name is
/// refused, naming the field.
#[test]
fn ports_as_comma_separated_text_are_assigned() {
    let mut host = Host::new();
    let r = host.deploy("rethink", "1", json!(1), json!("driver, cluster,web"));
    let names: Vec<_> = ports_of(&r).into_iter().map(|p| (p.0, p.3)).collect();
    assert_eq!(
        names,
        [
            (json!("driver"), "assigned".to_owned()),
            (json!("cluster"), "assigned".to_owned()),
            (json!("web"), "assigned".to_owned()),
        ]
    );
    assert_eq!(
        host.port_env("rethink-1-web@1.service")[0],
        format!("Environment=\"PORT_DRIVER={}\"", port_of(&r, "driver", "1"))
    );
    assert_eq!(
        ops_core::bundle::parse_ports("ports", json!("a, b")).unwrap(),
        ops_core::bundle::parse_ports("ports", json!(["a", "b"])).unwrap()
    );
    assert_eq!(
        ops_core::bundle::parse_ports("ports", json!("a,,A")).unwrap_err(),
        "ports (name 2): expected a port name of letters, digits and '_', starting with a letter, \
         got \"\"; an empty name: a comma too many?; ports (name 3): duplicate port name \"A\" (names are compared without case: \
         PORT_A)"
    );
    assert_eq!(
        ops_core::bundle::parse_ports("ports", json!("web admin")).unwrap_err(),
        "ports (name 1): expected a port name of letters, digits and '_', starting with a letter, \
         got \"web admin\"; names are separated by commas: \"web, admin\""
    );
    assert_eq!(
        ops_core::bundle::parse_ports("ports", json!(["8080"])).unwrap_err(),
        "ports[0]: expected a port name of letters, digits and '_', starting with a letter, got \
         \"8080\"; a fixed port needs a name: {\"http\": 8080}"
    );
    let mut request = host.pod_request("bad", State::Started);
    request.bundle = Some(host.bundle("bad", "1", json!(1), json!("x, ")));
    let refused = host.run(&request).unwrap_err();
    assert!(
        refused.ends_with(
            "pod.json: ports (name 2): expected a port name of letters, digits and \
             '_', starting with a letter, got \"\"; an empty name: a comma too many?"
        ),
        "{refused}"
    );
}

/// Seed 004: a pod that declares no port has a default `PORT` per
/// instance, kept across versions like a named one, and freed with them.
#[test]
fn a_pod_without_ports_gets_a_stable_default_port_per_instance() {
    let mut host = Host::new();
    let one = host.deploy("plain", "1", json!(2), Value::Null);
    let expected = |r: &pod::Report| -> Vec<(Value, Value, String)> {
        ports_of(r).into_iter().map(|p| (p.0, p.1, p.3)).collect()
    };
    assert_eq!(
        expected(&one),
        [
            (Value::Null, json!("1"), "default".to_owned()),
            (Value::Null, json!("2"), "default".to_owned()),
        ]
    );
    let first = ports_of(&one)[0].2;
    assert_eq!(
        host.port_env("plain-1-web@1.service"),
        [format!("Environment=\"PORT={first}\"")]
    );
    assert!(host.record()[&first.to_string()].contains("kind: default\n"));
    let two = host.deploy("plain", "2", json!(2), Value::Null);
    assert_eq!(ports_of(&two)[0].2, first, "{:?}", two.ports);
    assert_eq!(two.ports[0]["versions"], json!(["1", "2"]));
    // Nothing listened on it: version 1 ran until version 2 was up.
    let start = two
        .actions
        .iter()
        .position(|a| a.starts_with("start plain-2"));
    let stop = two
        .actions
        .iter()
        .position(|a| a.starts_with("stop plain-1"));
    assert!(start < stop, "{:?}", two.actions);
    let mut gone = host.pod_request("plain", State::Absent);
    gone.version = None;
    host.run(&gone).unwrap();
    assert!(host.record().is_empty(), "{:?}", host.record());
}

/// Seed 000's own example: `example.service` with `"replication": [8080,
/// 8081, 8082]` runs as instances of the template ops installs it as, each
/// with its port; a rerun changes nothing.
#[test]
fn a_replicated_plain_unit_runs_one_instance_per_port() {
    let mut host = Host::new();
    let dir = host.dir.path().join("bundles").join("seed000");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("example.service"), WEB).unwrap();
    let pod = json!({
        "name": "example",
        "version": 1001,
        "containers": [{
            "name": "frontend",
            "replication": [18080, 18081, 18082],
            "systemd": {"unit-files": ["example.service"]},
        }],
    });
    fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
    let mut request = host.pod_request("example", State::Started);
    request.bundle = Some(dir);
    let first = host.run(&request).expect("deploys");
    assert!(first.changed);
    let own: Vec<u16> = ports_of(&first).into_iter().map(|p| p.2).collect();
    assert_eq!(own, [18080, 18081, 18082]);
    let installed =
        fs::read_to_string(host.unit_dir.join("example-1001-example@.service")).unwrap();
    assert!(installed.ends_with(WEB), "{installed}");
    assert!(!host.unit_dir.join("example-1001-example.service").exists());
    assert_eq!(
        host.port_env("example-1001-example@18081.service"),
        ["Environment=\"PORT=18081\""]
    );
    let unit = &first.pod["versions"]["1001"]["units"][0];
    assert_eq!(unit["name"], "example@.service");
    assert_eq!(unit["shipped_as"], "example.service");
    assert_eq!(unit["instances"].as_array().map(Vec::len), Some(3));
    let again = host.run(&request).expect("reruns");
    assert!(!again.changed, "{:?}", again.actions);
}
