//! What the idle record (`<root>/pods/<name>/_idle`) and the woken record
//! (`<root>/pods/<name>/_woken`) hold.
//!
//! As geard's idle flag (seeds/003): a pod with an idle record is idle,
//! its current version stopped and its ports armed so that a connection
//! wakes it; only a pod with the record is woken. The record names the
//! version and the ports armed, and how the waker starts the version.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The format of both records.
pub const IDLE_FORMAT: u32 = 1;

/// A pod is idle (`<root>/pods/<name>/_idle`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleRecord {
    pub format: u32,
    /// Seconds since the Unix epoch, when the pod was idled.
    pub since: u64,
    /// The version that was current, and that a connection starts.
    pub version: super::names::Version,
    /// The host ports armed (a socket each), lowest first.
    pub ports: Vec<u16>,
    /// The addresses a port's socket listens on, when the version listened
    /// on that port on particular addresses only (a service on 127.0.0.1
    /// is woken from 127.0.0.1 only); a port not here listens on all.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addresses: BTreeMap<u16, Vec<IpAddr>>,
    /// Seconds the waker waits for the version to come up, and each unit
    /// must stay up (ops_pod's `start_timeout` and `min_up_time` of the
    /// run that idled it).
    pub start_timeout: u64,
    pub min_up_time: u64,
}

/// When the pod was last woken by a connection (`<root>/pods/<name>/_woken`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WokenRecord {
    pub format: u32,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

#[cfg(test)]
mod tests {
    //! The records as this ops writes them: a later ops must read these.

    use super::*;

    #[test]
    fn the_records_read_as_written() {
        let idle: IdleRecord = serde_json::from_str(
            r#"{"format": 1, "since": 1700000000, "version": "2", "ports": [8080, 30001],
                "start_timeout": 60, "min_up_time": 1}"#,
        )
        .unwrap();
        assert_eq!(idle.ports, [8080, 30001]);
        assert_eq!(idle.version.as_str(), "2");
        let woken: WokenRecord =
            serde_json::from_str(r#"{"format": 1, "at": 1700000100}"#).unwrap();
        assert_eq!(woken.at, 1_700_000_100);
    }
}
