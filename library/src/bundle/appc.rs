//! The Appc pod manifest shape of pod.json (seeds/001): wire types.
//!
//! The manifest itself belongs to the Appc spec, so unknown manifest fields
//! are tolerated; the JSON-encoded annotation named `ops` is ours and is
//! read strictly. Volume mount points and read-only flags come from the
//! manifest (`apps[].mounts[]`, `volumes[]`); fixed ports from its `ports`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::native::{self, InstancesWire, PortsWire, VersionWire};
use super::validate::{Draft, DraftImage, DraftUnit, DraftVolume, Field};
use super::Problem;

/// The name of the annotation that holds ops' deployment metadata.
pub const ANNOTATION: &str = "ops";

/// An Appc `PodManifest`: only the parts ops reads.
#[derive(Debug, Deserialize)]
pub struct PodManifest {
    #[serde(rename = "acKind")]
    pub ac_kind: String,
    #[serde(default)]
    pub annotations: Vec<Annotation>,
    #[serde(default)]
    pub apps: Vec<App>,
    #[serde(default)]
    pub volumes: Vec<ManifestVolume>,
    #[serde(default)]
    pub ports: Vec<ManifestPort>,
}

#[derive(Debug, Deserialize)]
pub struct Annotation {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
pub struct App {
    #[serde(default)]
    pub mounts: Vec<Mount>,
}

#[derive(Debug, Deserialize)]
pub struct Mount {
    pub volume: String,
    pub path: String,
}

#[derive(Debug, Deserialize)]
pub struct ManifestVolume {
    pub name: String,
    #[serde(rename = "readOnly", default)]
    pub read_only: bool,
}

#[derive(Debug, Deserialize)]
pub struct ManifestPort {
    pub name: String,
    #[serde(rename = "hostPort")]
    pub host_port: serde_json::Number,
}

/// The `ops` annotation's JSON-encoded value. The JSON Schema published as
/// `collection/schemas/ops-annotation.schema.json` is generated from these
/// types, so every field carries a doc comment.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(
    title = "ops annotation of an Appc pod manifest",
    description = "The value of the Appc PodManifest annotation named `ops`, decoded from its JSON \
                   text: what ops deploys. Volume mount points and read-only flags come from the \
                   manifest's `apps[].mounts[]` and `volumes[]`, fixed ports from its `ports`.",
    extend("$id" = ANNOTATION_SCHEMA_ID)
)]
pub struct OpsAnnotation {
    /// Name of the pod, unique among the pods of a host: 1 to 64 lowercase
    /// letters, digits, `.`, `_` or `-`, starting and ending with a letter or
    /// a digit.
    #[schemars(schema_with = "native::pod_name_schema")]
    pub name: String,
    /// Version of this release of the pod, unique among its versions: a
    /// non-negative integer or 1 to 64 letters, digits, `.`, `_` or `-`,
    /// starting and ending with a letter or a digit.
    pub version: VersionWire,
    /// The pod's systemd units.
    #[serde(default)]
    pub systemd_units: Vec<SystemdUnit>,
    /// The container images the units run.
    #[serde(default)]
    pub images: Vec<AnnotationImage>,
    /// Initial data of the manifest's volumes.
    #[serde(default)]
    pub volumes: Vec<AnnotationVolume>,
    /// Named ports ops assigns (fixed ones are the manifest's `ports`).
    #[serde(default)]
    pub ports: Option<PortsWire>,
    /// Environment given to every unit of the pod (not secret).
    #[serde(default)]
    #[schemars(schema_with = "native::environment_schema")]
    pub environment: BTreeMap<String, String>,
}

/// The annotation schema's `$id`: a project-owned name, like the pod.json
/// schema's.
pub const ANNOTATION_SCHEMA_ID: &str = "urn:ops:onboard:schema:ops-annotation";

/// One systemd unit of the pod.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SystemdUnit {
    /// The unit file (`.service`, `.socket`, `.timer`, `.path` or
    /// `.target`): a path relative to pod.json, or a URI.
    #[schemars(schema_with = "native::unit_file_schema")]
    pub unit_file: String,
    /// Whether ops starts the unit when it starts the pod (default false
    /// in this shape).
    #[serde(default)]
    pub start: bool,
    /// Instances of a templated unit: a number (named `1` to `N`) or a list
    /// of instance names.
    #[serde(default)]
    pub instances: Option<InstancesWire>,
    /// The image the unit runs in: the `id` of one of `images`, or its
    /// `path` or `uri` as written there.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
}

/// A container image the pod's units run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnnotationImage {
    /// The image's digest: `sha512-<32 to 128 hex>` (an ACI) or
    /// `sha256:<64 hex>` (OCI or Docker); optional.
    #[serde(default)]
    #[schemars(schema_with = "native::image_id_schema")]
    pub id: Option<String>,
    /// Path of the image file, relative to pod.json (not absolute). Give
    /// `path` or `uri`.
    #[serde(default)]
    #[schemars(schema_with = "native::relative_path_schema")]
    pub path: Option<String>,
    /// URI of the image file. Give `path` or `uri`.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub uri: Option<String>,
    /// Detached OpenPGP signature of the image file: a path or a URI.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub signature: Option<String>,
}

/// The initial data of one of the manifest's volumes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnnotationVolume {
    /// The name of a volume of the manifest's `volumes`.
    pub volume: String,
    /// Archive of the volume's initial contents (tar, possibly compressed):
    /// a path relative to pod.json or a URI.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub data: Option<String>,
}

fn problem(field: String, message: String) -> Problem {
    Problem { field, message }
}

impl PodManifest {
    /// The pod this manifest describes, with the problems found in it; or
    /// why it describes no pod at all.
    pub(super) fn into_draft(self) -> Result<Draft, Vec<Problem>> {
        let (base, ops, mut problems) = self.ops_annotation()?;
        let mounts = mount_points(&self.apps, &self.volumes, &mut problems);
        let data = volume_data(&ops.volumes, &self.volumes, &base, &mut problems);
        let volumes = draft_volumes(&self.volumes, mounts, data, &mut problems);
        let ports = draft_ports(&base, ops.ports, self.ports);
        Ok(Draft {
            name: Field::new(format!("{base}.name"), ops.name),
            version: Some(Field::new(format!("{base}.version"), ops.version)),
            units: draft_units(&base, ops.systemd_units),
            images: draft_images(&base, ops.images),
            volumes,
            ports,
            environment: Field::new(format!("{base}.environment"), ops.environment),
            problems,
        })
    }

    /// The path of the `ops` annotation's value, the value decoded, and the
    /// problems decoding tolerated; or why there is no usable annotation.
    fn ops_annotation(&self) -> Result<(String, OpsAnnotation, Vec<Problem>), Vec<Problem>> {
        if self.ac_kind != "PodManifest" {
            return Err(vec![problem(
                "acKind".into(),
                format!("expected \"PodManifest\", got {:?}", self.ac_kind),
            )]);
        }
        let Some(index) = self.annotations.iter().position(|a| a.name == ANNOTATION) else {
            return Err(vec![problem(
                "annotations".into(),
                format!("no annotation named {ANNOTATION:?}: it holds the pod's name, version and units as JSON"),
            )]);
        };
        let base = format!("annotations[{index}].value");
        let value: serde_json::Value = serde_json::from_str(&self.annotations[index].value)
            .map_err(|e| vec![problem(base.clone(), format!("not valid JSON: {e}"))])?;
        let (ops, problems) = super::from_value(value, &base)?;
        Ok((base, ops, problems))
    }
}

/// Where each manifest volume is mounted, from the apps' mounts.
fn mount_points<'a>(
    apps: &'a [App],
    volumes: &[ManifestVolume],
    problems: &mut Vec<Problem>,
) -> BTreeMap<&'a str, Field<String>> {
    let mut mounts: BTreeMap<&str, Field<String>> = BTreeMap::new();
    for (a, app) in apps.iter().enumerate() {
        for (m, mount) in app.mounts.iter().enumerate() {
            let at = format!("apps[{a}].mounts[{m}]");
            if !volumes.iter().any(|v| v.name == mount.volume) {
                problems.push(problem(
                    format!("{at}.volume"),
                    format!(
                        "no volume named {:?} in the manifest's volumes",
                        mount.volume
                    ),
                ));
                continue;
            }
            match mounts.get(mount.volume.as_str()) {
                Some(first) if first.value != mount.path => problems.push(problem(
                    format!("{at}.path"),
                    format!(
                        "volume {:?} is mounted at {} by {} already; ops mounts a volume \
                         at one path for the whole pod",
                        mount.volume, first.value, first.at
                    ),
                )),
                Some(_) => {}
                None => {
                    mounts.insert(
                        &mount.volume,
                        Field::new(format!("{at}.path"), mount.path.clone()),
                    );
                }
            }
        }
    }
    mounts
}

/// The data each manifest volume starts with, from the annotation's volumes.
fn volume_data<'a>(
    annotated: &'a [AnnotationVolume],
    volumes: &[ManifestVolume],
    base: &str,
    problems: &mut Vec<Problem>,
) -> BTreeMap<&'a str, Field<String>> {
    let mut data: BTreeMap<&str, Field<String>> = BTreeMap::new();
    for (i, volume) in annotated.iter().enumerate() {
        let at = format!("{base}.volumes[{i}]");
        if !volumes.iter().any(|v| v.name == volume.volume) {
            problems.push(problem(
                format!("{at}.volume"),
                format!(
                    "no volume named {:?} in the manifest's volumes",
                    volume.volume
                ),
            ));
        } else if data.contains_key(volume.volume.as_str()) {
            problems.push(problem(
                format!("{at}.volume"),
                format!("the data of volume {:?} is given twice", volume.volume),
            ));
        } else if let Some(d) = &volume.data {
            data.insert(&volume.volume, Field::new(format!("{at}.data"), d.clone()));
        }
    }
    data
}

/// The manifest's volumes with their mount points and data.
fn draft_volumes(
    volumes: &[ManifestVolume],
    mut mounts: BTreeMap<&str, Field<String>>,
    mut data: BTreeMap<&str, Field<String>>,
    problems: &mut Vec<Problem>,
) -> Vec<DraftVolume> {
    let mut drafts = Vec::new();
    for (i, volume) in volumes.iter().enumerate() {
        let mount = mounts.remove(volume.name.as_str());
        if mount.is_none() {
            problems.push(problem(
                format!("volumes[{i}]"),
                format!(
                    "volume {:?} has no mount point: mount it in apps[].mounts[] with a path",
                    volume.name
                ),
            ));
        }
        drafts.push(DraftVolume {
            name: Field::new(format!("volumes[{i}].name"), volume.name.clone()),
            mount,
            read_only: volume.read_only,
            data: data.remove(volume.name.as_str()),
        });
    }
    drafts
}

/// The annotation's ports, then each of the manifest's fixed ports.
fn draft_ports(
    base: &str,
    annotated: Option<PortsWire>,
    fixed: Vec<ManifestPort>,
) -> Vec<Field<PortsWire>> {
    let mut ports: Vec<Field<PortsWire>> = annotated
        .map(|p| Field::new(format!("{base}.ports"), p))
        .into_iter()
        .collect();
    for (i, port) in fixed.into_iter().enumerate() {
        let map = indexmap::IndexMap::from([(
            port.name,
            super::native::PortWire::Number(port.host_port),
        )]);
        ports.push(Field::new(format!("ports[{i}]"), PortsWire::Map(map)));
    }
    ports
}

fn draft_units(base: &str, units: Vec<SystemdUnit>) -> Vec<DraftUnit> {
    units
        .into_iter()
        .enumerate()
        .map(|(i, unit)| DraftUnit {
            file: Field::new(
                format!("{base}.systemd-units[{i}].unit-file"),
                unit.unit_file,
            ),
            start: unit.start,
            instances: unit
                .instances
                .map(|n| Field::new(format!("{base}.systemd-units[{i}].instances"), n)),
            shared_instances: false,
            image: unit
                .image
                .map(|n| Field::new(format!("{base}.systemd-units[{i}].image"), n)),
        })
        .collect()
}

fn draft_images(base: &str, images: Vec<AnnotationImage>) -> Vec<DraftImage> {
    images
        .into_iter()
        .enumerate()
        .map(|(i, image)| DraftImage {
            at: format!("{base}.images[{i}]"),
            id: image.id,
            path: image.path,
            uri: image.uri,
            signature: image.signature,
        })
        .collect()
}
