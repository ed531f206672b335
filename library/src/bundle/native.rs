//! The native pod.json (seeds/000): the wire types, as the file spells them.
//!
//! These types only describe the JSON; [`super::validate`] turns them into
//! the domain model. The JSON Schema published under `collection/schemas/`
//! is generated from them, so every field carries a doc comment.

use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

/// The published schema's `$id`: a name the project owns, not an address
/// anything is served from (the schema ships in the collection).
pub const SCHEMA_ID: &str = "urn:ops:onboard:schema:pod.json";

/// A pod: a group of systemd units, the images they run and their data
/// volumes, deployed and released together. Paths are relative to the
/// directory holding this file (the bundle) and may not leave it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(title = "ops pod.json", extend("$id" = SCHEMA_ID))]
pub struct PodJson {
    /// The JSON Schema this file follows, for editors and validators (such
    /// as `collection/schemas/pod.schema.json`). ops reads it as a string
    /// and ignores it: it is not part of the pod, nor of its version's
    /// digest.
    #[serde(rename = "$schema", default, deserialize_with = "a_string")]
    #[schemars(schema_with = "string_schema")]
    pub schema: Option<String>,
    /// Name of the pod, unique among the pods of a host: 1 to 64 lowercase
    /// letters, digits, `.`, `_` or `-`, starting and ending with a letter or
    /// a digit.
    #[schemars(schema_with = "pod_name_schema")]
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
    /// list of names that ops assigns ports to. A port name is 1 to 64
    /// letters, digits or `_`, starting with a letter and ending with a
    /// letter or digit.
    #[serde(default)]
    pub ports: Option<PortsWire>,
    /// Environment given to every unit of the pod (not secret: it is part of
    /// the bundle; secrets go in ops_pod's `env` option).
    #[serde(default)]
    #[schemars(schema_with = "environment_schema")]
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
    #[schemars(schema_with = "version_number_schema")]
    Number(serde_json::Number),
    /// A version string such as `1.4.2` or `2026-11-22` (not `current`,
    /// `previous` or `tip`).
    #[schemars(schema_with = "version_text_schema")]
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
    #[schemars(length(min = 1))]
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
    #[schemars(schema_with = "unit_files_schema")]
    pub unit_files: Vec<String>,
}

/// Instances of a templated unit.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected a number of instances or a list of instance names (strings or numbers)"
)]
pub enum InstancesWire {
    /// How many instances, named `1` to `N` (at most 1000).
    #[schemars(schema_with = "instance_count_schema")]
    Count(serde_json::Number),
    /// The instance names.
    #[schemars(schema_with = "instance_names_schema")]
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
    #[schemars(schema_with = "non_negative_integer_schema")]
    Number(serde_json::Number),
    /// A name of 1 to 64 letters, digits, `:`, `_`, `.` or `-`.
    #[schemars(schema_with = "instance_name_schema")]
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
    #[schemars(schema_with = "image_id_schema")]
    pub id: Option<String>,
    /// Path of the image file, relative to pod.json (not absolute). Give
    /// `path` or `uri`.
    #[serde(default)]
    #[schemars(schema_with = "relative_path_schema")]
    pub path: Option<String>,
    /// `http`, `https` or `file` URI of the image file. Give `path` or `uri`.
    /// Without a scheme, `/path` is a local file and `host.name/path` is
    /// fetched over https.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub uri: Option<String>,
    /// Detached OpenPGP signature of the image file (`.asc`): a path relative
    /// to pod.json or a URI.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub signature: Option<String>,
}

/// A data volume of the pod.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VolumeWire {
    /// Name of the volume, unique within the pod: 1 to 64 lowercase
    /// letters, digits and `-`, starting with a letter and ending with a
    /// letter or digit.
    #[schemars(regex(pattern = r"^[a-z]([a-z0-9-]{0,62}[a-z0-9])?$"))]
    pub name: String,
    /// Absolute, normalised mount point other than `/` (no `.`, `..`,
    /// empty components or trailing `/`), the same for every unit of the
    /// pod.
    #[schemars(schema_with = "mount_schema")]
    pub path: String,
    /// Whether units see the volume read-only (default false).
    #[serde(default)]
    pub read_only: bool,
    /// Archive of the volume's initial contents (tar, possibly compressed): a
    /// path relative to pod.json or a URI.
    #[serde(default)]
    #[schemars(length(min = 1))]
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
    #[schemars(schema_with = "ports_map_schema")]
    Map(indexmap::IndexMap<String, PortWire>),
    /// Port names; ops assigns each a port.
    #[schemars(schema_with = "ports_names_schema")]
    Names(Vec<String>),
    /// Port names separated by commas (`"driver, cluster, web"`, seed
    /// 004's shorthand); ops assigns each a port.
    #[schemars(schema_with = "ports_text_schema")]
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
    #[schemars(schema_with = "port_number_schema")]
    Number(serde_json::Number),
    /// `"assign"`: ops picks a free port from its range.
    #[schemars(schema_with = "assign_schema")]
    Word(String),
}

/// `$schema`, when given, is a string: `null` or a number is refused
/// rather than read as absent.
fn a_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// A unit file's path or URI ends with a unit name `UnitName::parse`
/// accepts (before a URI's query or fragment).
/// The name is at most 255 bytes (the lookahead; every character the
/// name may hold is one byte).
pub(super) fn unit_file_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": "(^|/)(?=[^/?#]{1,255}([?#].*)?$)[A-Za-z0-9:_.-]+@?\\.(service|socket|timer|path|target)([?#].*)?$"
    })
}

fn unit_files_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "array", "items": unit_file_schema(generator) })
}

fn string_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string" })
}

/// What `PodName::parse` accepts (crate::records::names).
pub(super) fn pod_name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": "^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$" })
}

/// What `Version::parse` accepts.
fn version_text_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": "^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$",
        "not": { "enum": crate::records::names::RESERVED_VERSIONS }
    })
}

fn instance_names_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": generator.subschema_for::<InstanceNameWire>(),
        "minItems": 1
    })
}

/// What `check_instance` accepts.
fn instance_name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": "^[A-Za-z0-9:_.-]{1,64}$" })
}

/// A number read with `as_u64`.
fn non_negative_integer_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "minimum": 0, "maximum": u64::MAX })
}

fn version_number_schema(generator: &mut SchemaGenerator) -> Schema {
    non_negative_integer_schema(generator)
}

fn instance_count_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "minimum": 1, "maximum": super::validate::MAX_INSTANCES })
}

/// What `ImageId::parse` accepts; `null` is the same as leaving it out.
pub(super) fn image_id_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["string", "null"],
        "pattern": "^(sha512-[0-9a-f]{32,128}|sha256:[0-9a-f]{64})$",
        "default": null
    })
}

/// What `check_mount` accepts: absolute, normalised, not `/`, without what
/// `check_unit_path` refuses (ASCII control characters and white space,
/// quotes, `\`, `:`, `$`).
fn mount_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": r#"^(/[^/\u0000-\u0020\u007f"'\\:$]+)+$"#,
        "not": { "pattern": "(^|/)\\.\\.?(/|$)" }
    })
}

/// A path in the bundle: not absolute (whether it stays in the bundle is
/// ops' to check, on the files).
pub(super) fn relative_path_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["string", "null"],
        "minLength": 1,
        "not": { "pattern": "^/" },
        "default": null
    })
}

fn port_number_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "minimum": 1, "maximum": 65535 })
}

fn assign_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "const": "assign" })
}

/// What `check_port_name` accepts.
const PORT_NAME: &str = "[A-Za-z]([A-Za-z0-9_]{0,62}[A-Za-z0-9])?";

fn ports_map_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": { "pattern": format!("^{PORT_NAME}$") },
        "additionalProperties": generator.subschema_for::<PortWire>()
    })
}

fn ports_names_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "string", "pattern": format!("^{PORT_NAME}$") }
    })
}

/// What `str::trim` takes off each name (`char::is_whitespace`, Unicode's
/// White_Space), spelled out: `\s` differs between regex dialects (ECMA-262,
/// which editors use, has U+FEFF and not U+0085; Python's has U+001C to
/// U+001F), and neither is Rust's.
const WHITE_SPACE: &str =
    "[\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// Names separated by commas, each trimmed of white space; not empty.
fn ports_text_schema(_: &mut SchemaGenerator) -> Schema {
    let ws = WHITE_SPACE;
    json_schema!({
        "type": "string",
        "pattern": format!("^{ws}*{PORT_NAME}{ws}*(,{ws}*{PORT_NAME}{ws}*)*$")
    })
}

/// What `check_env_name` accepts: not the names ops sets itself.
pub(super) fn environment_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": {
            "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
            "not": {
                "anyOf": [
                    { "enum": ["POD_NAME", "POD_VERSION", "POD_BUNDLE", "PORT"] },
                    { "pattern": "^(PORT_|OPS_)" }
                ]
            }
        },
        // What `check_env_value` refuses: a NUL, and (at the least) a
        // value longer than Linux passes with a one-letter name.
        "additionalProperties": {
            "type": "string",
            "not": { "pattern": "\\u0000" },
            "maxLength": crate::records::unit_syntax::MAX_ASSIGNMENT - 2
        },
        "default": {}
    })
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
