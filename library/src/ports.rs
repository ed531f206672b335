//! Named ports: which host port each pod's port name and instance holds,
//! how a new version gets its ports, and the readable record of them.
//!
//! The truth is in the store: each version's `meta.json` records the ports
//! it uses ([`Allocation`]), written with the version and gone with it, so
//! a port is free exactly when no retained version uses it. A new version
//! gets, for each port name and instance, the port its pod already holds
//! for that name and instance in any retained version (a switch or a
//! rollback does not move clients), a fixed port as declared, or the lowest
//! port of the range that no pod holds and nothing listens on. A pod that
//! declares no port gets one all the same, its default `PORT`, per
//! instance (seed 004: "there is always a single default port"). Allocation
//! happens under the store lock (ops_pod plans again under it), so
//! concurrent deploys never share a port.
//!
//! `<root>/ports/<port>` is one small text file per held port, naming the
//! pod, port name, instance, kind and versions: `ls` and `cat` answer "who
//! has port 30001". It is derived from the store and rewritten by every
//! ops_pod run that finds it different (a lost or stale record is rebuilt).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::atomic::{self, Context, FsError};
use crate::bundle::{Pod, PodName, Unit, Version};
use crate::lock::StoreLock;
pub use crate::records::port::{describe, describe_kind, Allocation, Kind};
use crate::store::{PodState, Store, StoreError};

/// The ports ops assigns from: `low-high`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            low: 30000,
            high: 32767,
        }
    }
}

impl PortRange {
    pub fn parse(text: &str) -> Result<PortRange, String> {
        let bad = || {
            format!(
                "expected LOW-HIGH with 1 <= LOW <= HIGH <= 65535, got {}",
                crate::records::names::shown(text)
            )
        };
        let (low, high) = text.trim().split_once('-').ok_or_else(bad)?;
        let low: u16 = low.trim().parse().map_err(|_| bad())?;
        let high: u16 = high.trim().parse().map_err(|_| bad())?;
        if low == 0 || low > high {
            return Err(bad());
        }
        Ok(PortRange { low, high })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error(
        "port {port} for {wanted} of pod {pod} is held by {holder}; \
         choose another port or remove the versions that hold it"
    )]
    Held {
        port: u16,
        wanted: String,
        pod: PodName,
        holder: String,
    },
    #[error(
        "port {name} of pod {pod} is fixed to {port}, but the pod has {count} instances ({list}); \
         one port serves one instance: use \"assign\" or one instance"
    )]
    FixedForInstances {
        name: String,
        pod: PodName,
        port: u16,
        count: usize,
        list: String,
    },
    #[error("port {port} is wanted twice by pod {pod}: for {first} and for {second}")]
    Twice {
        port: u16,
        pod: PodName,
        first: String,
        second: String,
    },
    #[error(
        "no free port in {range} for {wanted} of pod {pod}: every one is held by a pod or \
         listened on; widen port_range"
    )]
    Exhausted {
        range: PortRange,
        wanted: String,
        pod: PodName,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Who holds a port: one pod's port name and instance, in some versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pod: PodName,
    pub name: Option<String>,
    pub instance: Option<String>,
    pub kind: Kind,
    /// Oldest first.
    pub versions: Vec<Version>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let versions: Vec<&str> = self.versions.iter().map(Version::as_str).collect();
        // "pod a's default port", not "pod a's the default port".
        let what = describe_kind(self.kind, self.name.as_deref(), self.instance.as_deref());
        let what = what.strip_prefix("the ").unwrap_or(&what);
        write!(
            f,
            "pod {}'s {} in version{} {}",
            self.pod,
            what,
            if versions.len() == 1 { "" } else { "s" },
            versions.join(", ")
        )
    }
}

/// Every held port, from every pod's versions in the store; `this` stands
/// in for what the store holds of one pod (the state a plan leads to).
pub fn holders(
    store: &Store,
    this: Option<(&PodName, &PodState)>,
) -> Result<BTreeMap<u16, Holder>, StoreError> {
    let mut names = store.pod_names()?;
    if let Some((name, _)) = this {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let mut held = BTreeMap::new();
    for name in names {
        let read;
        let state = match this {
            Some((n, state)) if *n == name => state,
            _ => {
                // Ports are in the versions: another pod's idle record is
                // not read (one that cannot be read is that pod's to refuse).
                read = store.read_pod_without_idle(&name)?;
                &read
            }
        };
        add_holders(&mut held, &name, state);
    }
    Ok(held)
}

/// Add the ports of one pod's versions to `held`.
pub fn add_holders(held: &mut BTreeMap<u16, Holder>, pod: &PodName, state: &PodState) {
    for version in state.by_age() {
        for a in &state.versions[version].record.ports {
            let holder = held.entry(a.port).or_insert_with(|| Holder {
                pod: pod.clone(),
                name: a.name.clone(),
                instance: a.instance.clone(),
                kind: a.kind,
                versions: Vec::new(),
            });
            // The same port under another key can only come from a store
            // edited by hand: the first holder keeps it.
            if holder.pod == *pod && holder.name == a.name && holder.instance == a.instance {
                holder.kind = a.kind;
                holder.versions.push(version.clone());
            }
        }
    }
}

/// One port a version needs.
struct Want<'a> {
    name: Option<&'a str>,
    instance: Option<&'a str>,
    fixed: Option<u16>,
    kind: Kind,
}

/// The instances the pod's units run, in order: each template's instance
/// names, and `None` when a plain unit is among them.
fn instances(pod: &Pod) -> Vec<Option<&str>> {
    let mut out: Vec<Option<&str>> = Vec::new();
    for unit in &pod.units {
        for n in unit.instance_names() {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

fn wants<'a>(name: &PodName, pod: &'a Pod) -> Result<Vec<Want<'a>>, PortError> {
    let instances = instances(pod);
    let mut out = Vec::new();
    for unit in pod.units.iter().filter(|u| u.instance_ports) {
        for i in &unit.instances {
            if out
                .iter()
                .all(|w: &Want<'_>| w.instance != Some(i.as_str()))
            {
                out.push(Want {
                    name: None,
                    instance: Some(i),
                    fixed: i.parse().ok(),
                    kind: Kind::Instance,
                });
            }
        }
    }
    if pod.ports.is_empty() {
        // Seed 004: a pod that names no port still has one, `PORT`, for
        // each instance that has no port of its own.
        for instance in instances {
            if out.iter().all(|w| w.instance != instance) {
                out.push(Want {
                    name: None,
                    instance,
                    fixed: None,
                    kind: Kind::Default,
                });
            }
        }
        return Ok(out);
    }
    for port in &pod.ports {
        if let (Some(fixed), true) = (port.fixed, instances.len() > 1) {
            return Err(PortError::FixedForInstances {
                name: port.name.clone(),
                pod: name.clone(),
                port: fixed,
                count: instances.len(),
                list: instances
                    .iter()
                    .map(|i| i.unwrap_or("the plain units"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        for instance in &instances {
            out.push(Want {
                name: Some(&port.name),
                instance: *instance,
                fixed: port.fixed,
                kind: if port.fixed.is_some() {
                    Kind::Fixed
                } else {
                    Kind::Assigned
                },
            });
        }
    }
    Ok(out)
}

/// The ports of a new version of pod `name`: what its pod holds already
/// for the same name and instance, else fixed or the lowest free port of
/// `range` (held by no pod, listened on by nothing: `listening`).
pub fn allocate(
    name: &PodName,
    pod: &Pod,
    held: &BTreeMap<u16, Holder>,
    range: PortRange,
    listening: &BTreeSet<u16>,
) -> Result<Vec<Allocation>, PortError> {
    // What the pod holds now, by name and instance.
    let mine: BTreeMap<(Option<&str>, Option<&str>), u16> = held
        .iter()
        .filter(|(_, h)| h.pod == *name)
        .map(|(port, h)| ((h.name.as_deref(), h.instance.as_deref()), *port))
        .collect();
    let mut chosen: BTreeMap<u16, String> = BTreeMap::new();
    let mut out = Vec::new();
    let mut next = range.low;
    for want in wants(name, pod)? {
        let key = (want.name, want.instance);
        let wanted = describe_kind(want.kind, want.name, want.instance);
        let port = match want.fixed {
            Some(port) => {
                if let Some(h) = held.get(&port) {
                    let same = h.pod == *name && (h.name.as_deref(), h.instance.as_deref()) == key;
                    if !same {
                        return Err(PortError::Held {
                            port,
                            wanted,
                            pod: name.clone(),
                            holder: h.to_string(),
                        });
                    }
                }
                port
            }
            None => match mine.get(&key).filter(|p| !chosen.contains_key(p)) {
                Some(port) => *port,
                None => loop {
                    let free = |p: u16| {
                        !held.contains_key(&p)
                            && !chosen.contains_key(&p)
                            && !listening.contains(&p)
                    };
                    if free(next) {
                        break next;
                    }
                    if next == range.high {
                        return Err(PortError::Exhausted {
                            range,
                            wanted,
                            pod: name.clone(),
                        });
                    }
                    next += 1;
                },
            },
        };
        if let Some(first) = chosen.insert(port, wanted.clone()) {
            return Err(PortError::Twice {
                port,
                pod: name.clone(),
                first,
                second: wanted,
            });
        }
        out.push(Allocation {
            name: want.name.map(str::to_owned),
            instance: want.instance.map(str::to_owned),
            port,
            kind: want.kind,
        });
    }
    Ok(out)
}

/// TCP ports something listens on, from `/proc/net/tcp` and `tcp6` (this
/// network namespace). A file that cannot be read counts as no listener.
pub fn listening() -> BTreeSet<u16> {
    listeners().into_keys().collect()
}

/// The addresses something listens on, by TCP port (see [`listening`]).
pub fn listeners() -> BTreeMap<u16, BTreeSet<IpAddr>> {
    let mut out: BTreeMap<u16, BTreeSet<IpAddr>> = BTreeMap::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        for (address, port) in listening_in(&text) {
            out.entry(port).or_default().insert(address);
        }
    }
    out
}

/// The listening sockets of one `/proc/net/tcp*` table (state `0A`): the
/// address and port of each.
fn listening_in(table: &str) -> impl Iterator<Item = (IpAddr, u16)> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, state) = (fields.get(1)?, fields.get(3)?);
        if *state != "0A" {
            return None;
        }
        let (address, port) = local.rsplit_once(':')?;
        Some((
            kernel_address(address)?,
            u16::from_str_radix(port, 16).ok()?,
        ))
    })
}

/// An address as the kernel's tables print it: each 32-bit word of the
/// address as it lies in memory, read as a number of this machine's
/// byte order, in hex.
fn kernel_address(hex: &str) -> Option<IpAddr> {
    let mut bytes = Vec::with_capacity(16);
    for at in (0..hex.len()).step_by(8) {
        let word = u32::from_str_radix(hex.get(at..at + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
        }
        _ => None,
    }
}

/// The environment a runnable unit gets: `PORT_<NAME>` for each of the
/// pod's ports of its instance, and `PORT`: the instance's own port, the
/// first port pod.json declares, or the default port of a pod that
/// declares none.
pub fn environment(
    pod: &Pod,
    ports: &[Allocation],
    unit: &Unit,
    instance: Option<&str>,
) -> Vec<(String, String)> {
    let instance = if unit.name.is_template() {
        instance
    } else {
        None
    };
    let mut out = Vec::new();
    let mut first = None;
    for declared in &pod.ports {
        if let Some(a) = ports.iter().find(|a| {
            a.name.as_deref() == Some(declared.name.as_str()) && a.instance.as_deref() == instance
        }) {
            first.get_or_insert(a.port);
            out.push((
                format!("PORT_{}", declared.name.to_ascii_uppercase()),
                a.port.to_string(),
            ));
        }
    }
    let own = unit
        .instance_ports
        .then(|| instance.and_then(|i| i.parse::<u16>().ok()))
        .flatten();
    let default = || {
        ports
            .iter()
            .find(|a| a.kind == Kind::Default && a.instance.as_deref() == instance)
            .map(|a| a.port)
    };
    if let Some(port) = own.or(first).or_else(default) {
        out.push(("PORT".to_owned(), port.to_string()));
    }
    out
}

/// The ports of pod `name` in `held`, as results report them.
pub fn report(name: &PodName, held: &BTreeMap<u16, Holder>) -> Vec<serde_json::Value> {
    held.iter()
        .filter(|(_, h)| h.pod == *name)
        .map(|(port, h)| {
            serde_json::json!({
                "name": h.name,
                "instance": h.instance,
                "port": port,
                "kind": h.kind,
                "versions": h.versions,
            })
        })
        .collect()
}

/// The most of a port record read: ops's own are a few lines.
const INDEX_MAX: u64 = 64 << 10;

const INDEX_HEADER: &str =
    "# Managed by ops: who holds this port, derived from the versions' meta.json.\n";

/// The text of `<root>/ports/<port>`.
fn index_text(holder: &Holder) -> String {
    let versions: Vec<&str> = holder.versions.iter().map(Version::as_str).collect();
    format!(
        "{INDEX_HEADER}pod: {}\nname: {}\ninstance: {}\nkind: {}\nversions: {}\n",
        holder.pod,
        holder.name.as_deref().unwrap_or("-"),
        holder.instance.as_deref().unwrap_or("-"),
        holder.kind,
        versions.join(" ")
    )
}

/// A change to the port record: one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexChange {
    pub port: u16,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl IndexChange {
    pub fn path(&self, store: &Store) -> PathBuf {
        store.ports_dir().join(self.port.to_string())
    }

    pub fn describe(&self, store: &Store) -> String {
        let path = self.path(store);
        match (&self.before, &self.after) {
            (None, Some(_)) => format!("record port {} in {}", self.port, path.display()),
            (Some(_), Some(_)) => format!(
                "update the record of port {} in {}",
                self.port,
                path.display()
            ),
            (_, None) => format!("free port {} (remove {})", self.port, path.display()),
        }
    }
}

/// What turns the record on disk into the one `held` implies. Files not
/// named as a port, or without ops's header, are not ops's: left alone.
pub fn index_changes(
    store: &Store,
    held: &BTreeMap<u16, Holder>,
) -> Result<Vec<IndexChange>, FsError> {
    Ok(index_diff(&read_index(store)?, held))
}

/// The port record on disk: ops's files in `<root>/ports/`, by port.
pub fn read_index(store: &Store) -> Result<BTreeMap<u16, String>, FsError> {
    let dir = store.ports_dir();
    let mut on_disk: BTreeMap<u16, String> = BTreeMap::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.at("read", &dir)?;
                let Some(port) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u16>().ok())
                else {
                    continue;
                };
                let path = entry.path();
                // Read only if regular and not through a link: a FIFO
                // planted here must not block every run. A record ops did
                // not write is left out, and the sync writes the right one
                // over it.
                match atomic::read_own(&path, INDEX_MAX).map(String::from_utf8) {
                    Ok(Ok(text)) if text.starts_with(INDEX_HEADER) => {
                        on_disk.insert(port, text);
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e).at("read", &path),
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).at("read", &dir),
    }
    Ok(on_disk)
}

/// What turns the record `on_disk` into the one `held` implies.
pub fn index_diff(
    on_disk: &BTreeMap<u16, String>,
    held: &BTreeMap<u16, Holder>,
) -> Vec<IndexChange> {
    let mut changes = Vec::new();
    for (port, holder) in held {
        let text = index_text(holder);
        if on_disk.get(port) != Some(&text) {
            changes.push(IndexChange {
                port: *port,
                before: on_disk.get(port).cloned(),
                after: Some(text),
            });
        }
    }
    for (port, text) in on_disk {
        if !held.contains_key(port) {
            changes.push(IndexChange {
                port: *port,
                before: Some(text.clone()),
                after: None,
            });
        }
    }
    changes.sort_by_key(|c| c.port);
    changes
}

/// Write the changes to the record.
pub fn apply_index(
    store: &Store,
    _lock: &StoreLock,
    changes: &[IndexChange],
) -> Result<(), FsError> {
    let dir = store.ports_dir();
    // A run cut short (killed, or the power lost) between writing a
    // record and renaming it into place left its temporary (found by
    // tests/reliability/power).
    atomic::remove_stale_temps(&dir)?;
    for change in changes {
        let path = change.path(store);
        match &change.after {
            Some(text) => {
                atomic::create_dir_all(&dir, 0o755)?;
                atomic::write_file(&path, text.as_bytes(), 0o644)?;
            }
            None => {
                atomic::remove_file(&path)?;
            }
        }
    }
    atomic::remove_dir_if_empty(&dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_reads_as_the_pod_s_port() {
        let holder = |kind, name: Option<&str>| Holder {
            pod: PodName::parse("noports").unwrap(),
            name: name.map(str::to_owned),
            instance: Some("2".to_owned()),
            kind,
            versions: vec![Version::parse("1").unwrap()],
        };
        assert_eq!(
            holder(Kind::Default, None).to_string(),
            "pod noports's default port (instance 2) in version 1"
        );
        assert_eq!(
            holder(Kind::Assigned, Some("http")).to_string(),
            "pod noports's http (instance 2) in version 1"
        );
    }

    #[test]
    fn listening_sockets_are_read_from_the_kernel_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n\
   1: 0100007F:7531 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2\n\
   2: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3\n";
        let any = IpAddr::from([0, 0, 0, 0]);
        let loopback = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(
            listening_in(table).collect::<Vec<_>>(),
            [(any, 8080), (loopback, 30001)]
        );
        // tcp6: [::1]:8080, [::]:8081, and ::ffff:10.1.2.3 (IPv4 mapped).
        let table6 = "  sl  local_address remote_address st\n\
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A\n\
   1: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A\n\
   2: 0000000000000000FFFF00000302010A:1F92 00000000000000000000000000000000:0000 0A\n";
        assert_eq!(
            listening_in(table6).collect::<Vec<_>>(),
            [
                (IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 8080),
                (IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED), 8081),
                (IpAddr::from([10, 1, 2, 3]), 8082),
            ]
        );
    }

    #[test]
    fn ranges_are_parsed_strictly() {
        assert_eq!(
            PortRange::parse("30000-32767").unwrap(),
            PortRange::default()
        );
        assert_eq!(
            PortRange::parse(" 8000 - 8000 ").unwrap().to_string(),
            "8000-8000"
        );
        for bad in ["", "30000", "0-10", "20-10", "1-65536", "a-b", "1-2-3"] {
            assert!(PortRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_record_a_cut_short_run_left_half_written_is_swept() {
        // Killed, or the power lost, between writing ports/21000's
        // temporary and renaming it: the next run removes it, and a record
        // left with nothing else in it goes (tests/reliability/power).
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path());
        let lock = StoreLock::acquire(root.path(), std::time::Duration::ZERO, "test").unwrap();
        fs::create_dir(store.ports_dir()).unwrap();
        let left = store.ports_dir().join(".21000.ops-tmp.4143.12");
        fs::write(&left, "shop\n").unwrap();
        apply_index(&store, &lock, &[]).unwrap();
        assert!(!store.ports_dir().exists());
    }
}
