//! The native pod.json (seeds/000): the wire types, as the file spells them.
//!
//! These types only describe the JSON; [`super::validate`] turns them into
//! the domain model. The JSON Schema published under `collection/schemas/`
//! is generated from them, so every field carries a doc comment.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// A pod: a group of systemd units, the images they run and their data
/// volumes, deployed and released together. Paths are relative to the
/// directory holding this file (the bundle) and may not leave it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(title = "ops pod.json")]
pub struct PodJson {
    /// Name of the pod, unique among the pods of a host: 1 to 64 lowercase
    /// letters, digits, `.`, `_` or `-`, starting and ending with a letter or
    /// a digit.
    pub name: String,
    /// Version of this release of the pod, unique among its versions (a
    /// timestamp will do): a non-negative integer or 1 to 64 letters, digits,
    /// `.`, `_` or `-`, starting and ending with a letter or a digit.
    pub version: VersionWire,
    /// The services of the pod, each with its systemd unit files.
    #[serde(default)]
    pub containers: Vec<Container>,
    /// The container images the units run.
    #[serde(default)]
    pub images: Vec<ImageWire>,
    /// Data volumes of this pod version (not shared across versions).
    #[serde(default)]
    pub volumes: Vec<VolumeWire>,
    /// Named ports: a map of name to a fixed host port or `"assign"`, or a
    /// list of names that ops assigns ports to.
    #[serde(default)]
    pub ports: Option<PortsWire>,
    /// Environment given to every unit of the pod (not secret: it is part of
    /// the bundle; secrets go in ops_pod's `env` option).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

/// A version: an integer (as the seeds use) or a string.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected a non-negative integer or a string of letters, digits, '.', '_' or '-'"
)]
pub enum VersionWire {
    /// An integer version, such as a timestamp.
    Number(serde_json::Number),
    /// A version string such as `1.4.2` or `2026-11-22`.
    Text(String),
}

/// One service of the pod.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Container {
    /// Name of the service, unique within the pod.
    pub name: String,
    /// Instances of the service's templated units (`name@.service`): a
    /// number of instances (named `1` to `N`), or a list of instance names
    /// (such as ports: `[8080, 8081]`; numbers from 1024 to 65535 are held as
    /// the instances' ports). When none of the unit files is a template, each
    /// is installed as its template (`example.service` as
    /// `example@.service`), one instance each.
    #[serde(default)]
    pub replication: Option<InstancesWire>,
    /// Whether ops starts these units when it starts the pod (default true);
    /// false for units that something else starts, such as a service
    /// activated by a socket of the pod.
    #[serde(default)]
    pub start: Option<bool>,
    /// The image the service's units run in: the `id` of one of the pod's
    /// `images`, or its `path` or `uri` as written there. ops gives each of these units the image's root filesystem
    /// as `RootDirectory=` (systemd runtime) and its location in
    /// `OPS_IMAGE` (either runtime), so unit files never name store paths.
    #[serde(default)]
    pub image: Option<String>,
    /// How systemd runs the service.
    pub systemd: SystemdSection,
}

/// The systemd side of a container.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SystemdSection {
    /// Unit files of the service (`.service`, `.socket`, `.timer`, `.path`
    /// or `.target`), relative to pod.json or by `http`, `https` or `file`
    /// URI (fetched and stored with the version); each unit name is unique
    /// within the pod.
    pub unit_files: Vec<String>,
}

/// Instances of a templated unit.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected a number of instances or a list of instance names (strings or numbers)"
)]
pub enum InstancesWire {
    /// How many instances, named `1` to `N`.
    Count(serde_json::Number),
    /// The instance names.
    Names(Vec<InstanceNameWire>),
}

/// One instance name: a string, or a number such as a port.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected an instance name (a string or a number)"
)]
pub enum InstanceNameWire {
    /// A number, used as its decimal text.
    Number(serde_json::Number),
    /// A name of letters, digits, `:`, `_`, `.` or `-`.
    Text(String),
}

/// A container image the pod's units run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImageWire {
    /// The image's digest: `sha512-<hex>` for an ACI (sha512 of the
    /// uncompressed image tar; a prefix of at least 32 hex digits will do) or
    /// `sha256:<64 hex>` for an OCI or Docker image (its config digest).
    /// Optional (seed 001): without it ops computes it from the file as the
    /// version is added (a `uri` downloaded by a real run), and warns that
    /// nothing pinned it unless a signature verified it.
    #[serde(default)]
    pub id: Option<String>,
    /// Path of the image file, relative to pod.json. Give `path` or `uri`.
    #[serde(default)]
    pub path: Option<String>,
    /// `http`, `https` or `file` URI of the image file. Give `path` or `uri`.
    /// Without a scheme, `/path` is a local file and `host.name/path` is
    /// fetched over https.
    #[serde(default)]
    pub uri: Option<String>,
    /// Detached OpenPGP signature of the image file (`.asc`): a path relative
    /// to pod.json or a URI.
    #[serde(default)]
    pub signature: Option<String>,
}

/// A data volume of the pod.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VolumeWire {
    /// Name of the volume, unique within the pod: lowercase letters, digits
    /// and `-`, starting with a letter.
    pub name: String,
    /// Absolute mount point, the same for every unit of the pod.
    pub path: String,
    /// Whether units see the volume read-only (default false).
    #[serde(default)]
    pub read_only: bool,
    /// Archive of the volume's initial contents (tar, possibly compressed): a
    /// path relative to pod.json or a URI.
    #[serde(default)]
    pub data: Option<String>,
}

/// Named ports.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected a map of port name to a port number or \"assign\", a list of port names, \
                 or port names in one text separated by commas"
)]
pub enum PortsWire {
    /// Port name to a fixed host port number or `"assign"`, in order.
    Map(indexmap::IndexMap<String, PortWire>),
    /// Port names; ops assigns each a port.
    Names(Vec<String>),
    /// Port names separated by commas (`"driver, cluster, web"`, seed
    /// 004's shorthand); ops assigns each a port.
    Text(String),
}

/// One port: fixed or assigned.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected a port number (1 to 65535) or \"assign\""
)]
pub enum PortWire {
    /// A fixed host port.
    Number(serde_json::Number),
    /// `"assign"`: ops picks a free port from its range.
    Word(String),
}

impl PodJson {
    /// The draft every shape is validated through.
    pub(super) fn into_draft(self) -> super::validate::Draft {
        use super::validate::{Draft, DraftImage, DraftUnit, DraftVolume, Field};
        let mut units = Vec::new();
        for (c, container) in self.containers.into_iter().enumerate() {
            let base = format!("containers[{c}]");
            let replication = container
                .replication
                .map(|r| Field::new(format!("{base}.replication"), r));
            for (u, file) in container.systemd.unit_files.into_iter().enumerate() {
                units.push(DraftUnit {
                    file: Field::new(format!("{base}.systemd.unit-files[{u}]"), file),
                    start: container.start.unwrap_or(true),
                    instances: replication.clone(),
                    shared_instances: true,
                    image: container
                        .image
                        .clone()
                        .map(|i| Field::new(format!("{base}.image"), i)),
                });
            }
        }
        Draft {
            name: Field::new("name", self.name),
            version: Some(Field::new("version", self.version)),
            units,
            images: self
                .images
                .into_iter()
                .enumerate()
                .map(|(i, image)| DraftImage {
                    at: format!("images[{i}]"),
                    id: image.id,
                    path: image.path,
                    uri: image.uri,
                    signature: image.signature,
                })
                .collect(),
            volumes: self
                .volumes
                .into_iter()
                .enumerate()
                .map(|(i, volume)| DraftVolume {
                    name: Field::new(format!("volumes[{i}].name"), volume.name),
                    mount: Some(Field::new(format!("volumes[{i}].path"), volume.path)),
                    read_only: volume.read_only,
                    data: volume
                        .data
                        .map(|d| Field::new(format!("volumes[{i}].data"), d)),
                })
                .collect(),
            ports: self
                .ports
                .map(|p| Field::new("ports", p))
                .into_iter()
                .collect(),
            environment: Field::new("environment", self.environment),
            problems: Vec::new(),
        }
    }
}

/// Container names are unique within the pod.
pub(super) fn duplicate_containers(pod: &PodJson) -> Vec<super::Problem> {
    let mut problems = Vec::new();
    for (i, container) in pod.containers.iter().enumerate() {
        if let Some(first) = pod.containers[..i]
            .iter()
            .position(|other| other.name == container.name)
        {
            problems.push(super::Problem {
                field: format!("containers[{i}].name"),
                message: format!(
                    "duplicate container {:?}: containers[{first}] has it already",
                    container.name
                ),
            });
        }
    }
    problems
}
