//! What `meta.json` holds: ops's record of one deployed version.

use serde::{Deserialize, Serialize};

use super::pod::Pod;

/// The format of `meta.json`.
pub const META_FORMAT: u32 = 1;

/// ops's record of one deployed version (`meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRecord {
    pub format: u32,
    /// Order of deployment within the pod: higher is newer.
    pub sequence: u64,
    /// Seconds since the Unix epoch.
    pub deployed_at: u64,
    /// `sha256:` of the validated pod and its unit files: two bundles with
    /// the same digest deploy the same thing.
    pub digest: String,
    /// The validated pod; unit files are at `units/<name>`.
    pub pod: Pod,
    /// The runtime the pod's images were imported into.
    #[serde(default)]
    pub runtime: super::Runtime,
    /// The host ports the version uses (see crate::ports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<super::port::Allocation>,
}

#[cfg(test)]
mod tests {
    //! Every older shape of `meta.json` that a host may still have must
    //! read; these fixtures are such records, as older ops wrote them.

    use super::*;
    use crate::records::Runtime;

    fn read(fixture: &str) -> VersionRecord {
        serde_json::from_str(fixture).expect("an older meta.json reads")
    }

    /// The first format: no `runtime`, no `ports`, units without `image`.
    #[test]
    fn a_record_from_before_runtime_and_ports_reads_with_their_defaults() {
        let record = read(include_str!(
            "../../../tests/fixtures/records/meta-before-runtime-and-ports.json"
        ));
        assert_eq!(record.format, META_FORMAT);
        assert_eq!(record.runtime, Runtime::Systemd);
        assert!(record.ports.is_empty());
        assert!(record.pod.units.iter().all(|u| u.image.is_none()));
        assert!(record.pod.units.iter().all(|u| !u.instance_ports));
        assert_eq!(record.pod.units[0].instances, ["1", "2"]);
        assert_eq!(record.pod.ports[0].fixed, Some(8080));
    }

    /// `runtime` and a unit's `image`, but no port allocations yet.
    #[test]
    fn a_record_from_before_ports_reads_with_no_ports() {
        let record = read(include_str!(
            "../../../tests/fixtures/records/meta-before-ports.json"
        ));
        assert_eq!(record.runtime, Runtime::Podman);
        assert!(record.ports.is_empty());
        assert!(record.pod.units[0].image.is_some());
        assert!(!record.pod.units[0].instance_ports);
    }

    /// Versions deployed before named deployments record no bundle name:
    /// they came from a bundle of the pod's own name, and are written back
    /// without the field (their drop-ins, made from the record, keep
    /// without `POD_BUNDLE`).
    #[test]
    fn a_record_from_before_bundle_names_came_from_a_bundle_of_its_name() {
        let record = read(include_str!(
            "../../../tests/fixtures/records/meta-before-ports.json"
        ));
        assert!(record.pod.bundle_name.is_none());
        assert_eq!(record.pod.bundle(), &record.pod.name);
        let written = serde_json::to_value(&record).expect("a record serialises");
        assert!(written["pod"].get("bundle_name").is_none(), "{written}");
    }

    /// Older ops held any list of numbers from 1 to 65535 as ports; this
    /// one only numbers from 1024. A stored version keeps what it was
    /// deployed with: the flag is recorded, not derived again.
    #[test]
    fn a_stored_version_keeps_its_small_instance_ports() {
        let mut value: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/records/meta-before-ports.json"
        ))
        .expect("the fixture is JSON");
        value["pod"]["units"][0]["name"] = "web@.service".into();
        value["pod"]["units"][0]["instances"] = serde_json::json!(["80", "81"]);
        value["pod"]["units"][0]["instance_ports"] = true.into();
        let record: VersionRecord = serde_json::from_value(value).expect("it reads");
        assert!(record.pod.units[0].instance_ports);
        assert_eq!(record.pod.units[0].instances, ["80", "81"]);
    }

    /// Older ops refuses fields it does not know (`deny_unknown_fields`): a
    /// version without ports is written without the field, so going back
    /// to an older ops still reads it.
    #[test]
    fn a_record_without_ports_writes_none() {
        let record = read(include_str!(
            "../../../tests/fixtures/records/meta-before-ports.json"
        ));
        let written = serde_json::to_value(&record).expect("a record serialises");
        assert!(written.get("ports").is_none(), "{written}");
    }
}
