//! ops_facts' engine on a temporary root, with the recording fake standing
//! in for systemd: every version state, field by field against the store
//! and the fake; secrets' values absent; one systemd query; the
//! JSON shape snapshotted.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

mod common;

use common::Host;

use ops_core::bundle::{PodName, Version};
use ops_core::facts::{self, Scope};
use ops_core::pod::{self, State};
use ops_core::store::Store;
use serde_json::{json, Value};

const WEB: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

impl Host {
    /// Pod `name` at `version`: `web@` with 2 instances and an `http`
    /// port, a `worker` not started by ops, an empty volume.
    fn bundle(&self, name: &str, version: &str) -> PathBuf {
        let dir = self
            .dir
            .path()
            .join("bundles")
            .join(format!("{name}-{version}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("web@.service"), WEB).unwrap();
        fs::write(dir.join("worker.service"), WEB).unwrap();
        let pod = json!({
            "name": name,
            "version": version,
            "containers": [
                {"name": "web", "replication": 2, "systemd": {"unit-files": ["web@.service"]}},
                {"name": "worker", "start": false, "systemd": {"unit-files": ["worker.service"]}},
            ],
            "volumes": [{"name": "data", "path": "/srv/data"}],
            "ports": ["http"],
            "environment": {"MODE": "public-value"},
        });
        fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        dir
    }

    fn deploy(&mut self, name: &str, version: &str, state: State) -> pod::Report {
        let mut request = self.pod_request(name, state);
        request.bundle = Some(self.bundle(name, version));
        request.env = Some(BTreeMap::from([(
            "API_TOKEN".to_owned(),
            "s3cr3t-value".to_owned(),
        )]));
        pod::run(
            &request,
            &mut self.systemd,
            &mut ops_core::image::PodmanCli,
            false,
            false,
        )
        .map_err(|f| ops_core::ansible::error_chain(&f.error))
        .unwrap()
    }

    fn facts(&mut self, pods: Option<&[PodName]>, units: bool) -> Value {
        serde_json::to_value(
            facts::gather(
                &Store::new(&self.root),
                &self.unit_dir,
                &Scope { pods, units },
                &mut self.systemd,
            )
            .unwrap(),
        )
        .unwrap()
    }
}

/// Fields that change from run to run, made stable for a snapshot.
fn stable(value: &Value, dir: &str) -> Value {
    let text = value.to_string().replace(dir, "<tmp>");
    let mut v: Value = serde_json::from_str(&text).unwrap();
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, x) in map.iter_mut() {
                    match k.as_str() {
                        "deployed_at" => *x = json!("<time>"),
                        "digest" if x.as_str().is_some_and(|d| d.starts_with("sha256:")) => {
                            *x = json!("<digest>")
                        }
                        _ => walk(x),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

#[test]
fn every_state_as_the_store_and_systemd_say() {
    let mut host = Host::new();
    host.deploy("shop", "1", State::Started);
    host.deploy("shop", "2", State::Started);
    host.deploy("shop", "3", State::Present);
    host.deploy("blog", "1", State::Started);
    let mut stop = host.pod_request("blog", State::Stopped);
    stop.version = Some(Version::parse("1").unwrap());
    pod::run(
        &stop,
        &mut host.systemd,
        &mut ops_core::image::PodmanCli,
        false,
        false,
    )
    .unwrap();
    // Version 3's web@1 alone is started by hand; the worker of 2 fails.
    host.systemd
        .active
        .insert("shop-3-web@1.service".into(), "active".into());
    host.systemd
        .active
        .insert("shop-2-worker.service".into(), "failed".into());

    host.systemd.shows.clear();
    host.systemd.lists.clear();
    let facts = host.facts(None, true);
    assert_eq!(host.systemd.lists, [2], "one query, a pattern per pod");
    assert!(host.systemd.shows.is_empty(), "no unit asked about alone");

    let shop = &facts["pods"]["shop"];
    assert_eq!(shop["current"], "2");
    assert_eq!(shop["previous"], "1");
    assert_eq!(shop["started"], true);
    let state = |pod: &str, v: &str| facts["pods"][pod]["versions"][v]["state"].clone();
    assert_eq!(state("shop", "1"), "installed");
    assert_eq!(state("shop", "2"), "failed");
    assert_eq!(state("shop", "3"), "partial");
    assert_eq!(state("blog", "1"), "stopped");
    assert_eq!(facts["pods"]["blog"]["started"], false);
    host.systemd
        .active
        .insert("shop-2-worker.service".into(), "inactive".into());
    let facts = host.facts(None, true);
    assert_eq!(facts["pods"]["shop"]["versions"]["2"]["state"], "running");

    // Field by field, one version against the store and the fake.
    let v2 = &facts["pods"]["shop"]["versions"]["2"];
    let web = &v2["units"][0];
    assert_eq!(web["installed_as"], "shop-2-web@.service");
    for (i, instance) in web["instances"].as_array().unwrap().iter().enumerate() {
        let unit = format!("shop-2-web@{}.service", i + 1);
        assert_eq!(instance["unit"], unit.as_str());
        assert_eq!(instance["instance"], (i + 1).to_string().as_str());
        assert_eq!(
            instance["active_state"],
            host.systemd.active[&unit].as_str()
        );
        assert_eq!(instance["sub_state"], "running");
        assert_eq!(instance["enabled"], true);
    }
    assert_eq!(
        v2["units"][1]["instances"][0]["enabled"], false,
        "not started by ops"
    );
    assert_eq!(
        facts["pods"]["shop"]["versions"]["1"]["units"][0]["instances"][0]["enabled"], false,
        "not current"
    );
    let store = Store::new(&host.root);
    let stored = &store
        .read_pod(&PodName::parse("shop").unwrap())
        .unwrap()
        .versions[&Version::parse("2").unwrap()];
    assert_eq!(v2["deployed_at"], stored.record.deployed_at);
    assert_eq!(v2["digest"], stored.record.digest.as_str());
    assert_eq!(
        v2["volumes"][0]["path"],
        host.root
            .join("pods/shop/2/volumes/data/data")
            .to_str()
            .unwrap()
    );
    let http = stored.record.ports[0].port;
    assert_eq!(v2["ports"][0]["port"], http);
    assert_eq!(facts["ports"][http.to_string()]["pod"], "shop");
    assert_eq!(
        facts["ports"][http.to_string()]["versions"],
        json!(["1", "2", "3"])
    );
    assert_eq!(v2["env_keys"], json!(["API_TOKEN"]));
    let text = facts.to_string();
    assert!(!text.contains("s3cr3t-value"), "a secret's value leaked");
}

#[test]
fn without_units_systemd_is_not_asked_and_states_are_null() {
    let mut host = Host::new();
    host.deploy("shop", "1", State::Started);
    host.systemd.shows.clear();
    host.systemd.lists.clear();
    let facts = host.facts(None, false);
    assert!(host.systemd.shows.is_empty() && host.systemd.lists.is_empty());
    let v1 = &facts["pods"]["shop"]["versions"]["1"];
    assert_eq!(v1["state"], Value::Null);
    assert_eq!(v1["units"][0]["instances"][0]["active_state"], Value::Null);
    assert_eq!(v1["units"][0]["instances"][0]["enabled"], true);
}

#[test]
fn pods_limits_everything_to_them() {
    let mut host = Host::new();
    host.deploy("shop", "1", State::Started);
    host.deploy("blog", "1", State::Started);
    let only = [PodName::parse("blog").unwrap()];
    let facts = host.facts(Some(&only), true);
    assert_eq!(
        facts["pods"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["blog"]
    );
    assert!(facts["ports"]
        .as_object()
        .unwrap()
        .values()
        .all(|p| p["pod"] == "blog"));
    assert_eq!(host.systemd.lists.last(), Some(&1));
}

#[test]
fn ops_pod_returns_the_same_record() {
    let mut host = Host::new();
    let report = host.deploy("shop", "1", State::Started);
    let facts = host.facts(None, true);
    assert_eq!(report.pod, facts["pods"]["shop"]);
}

#[test]
fn the_shape_of_the_facts() {
    let mut host = Host::new();
    host.deploy("shop", "1", State::Started);
    host.deploy("shop", "2", State::Present);
    let facts = host.facts(None, true);
    let dir = host.dir.path().to_str().unwrap().to_owned();
    insta::assert_json_snapshot!(stable(&facts, &dir));
}
