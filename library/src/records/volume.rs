//! What `volume.json` holds: ops's record of a data volume.

use serde::{Deserialize, Serialize};

/// The format of `volume.json`.
pub const RECORD_FORMAT: u32 = 1;
/// ops's record of a volume (`volume.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeRecord {
    pub format: u32,
    pub name: String,
    /// `sha256:<hex>` of the archive extracted; `None`: created empty.
    pub digest: Option<String>,
    /// Where the archive came from, as given.
    pub source: Option<String>,
    pub entries: u64,
    /// Bytes of file contents.
    pub bytes: u64,
    /// The owner and group imposed on every entry, if any.
    pub owner: Option<u32>,
    pub group: Option<u32>,
    /// Mode of the top directory.
    pub mode: u32,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Whether setuid, setgid and sticky bits were kept when it was
    /// extracted; `None` in a record written before ops recorded it.
    #[serde(default)]
    pub keep_setuid: Option<bool>,
    /// `sha256:` of the archive the volume was first built from (by
    /// ops_pod: the bundle's). A replacement keeps it, so a rerun of
    /// ops_pod compares the bundle with what it deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A volume.json written before ops recorded `keep_setuid` and
    /// `origin` must still read: a host keeps its volumes across upgrades.
    #[test]
    fn a_record_from_before_keep_setuid_and_origin_reads_with_none() {
        let record: VolumeRecord = serde_json::from_str(include_str!(
            "../../../tests/fixtures/records/volume-before-keep-setuid-and-origin.json"
        ))
        .expect("an older volume.json reads");
        assert_eq!(record.format, RECORD_FORMAT);
        assert_eq!(record.keep_setuid, None);
        assert_eq!(record.origin, None);
        assert_eq!(
            (record.owner, record.group, record.mode),
            (Some(1000), None, 0o755)
        );
    }
}
