//! The Appc pod manifest shape of pod.json (seeds/001): wire types.
//!
//! The manifest itself belongs to the Appc spec, so unknown manifest fields
//! are tolerated; the JSON-encoded annotation named `ops` is ours and is
//! read strictly. Volume mount points and read-only flags come from the
//! manifest (`apps[].mounts[]`, `volumes[]`); fixed ports from its `ports`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::native::{InstancesWire, PortsWire, VersionWire};

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

/// The `ops` annotation's JSON-encoded value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OpsAnnotation {
    pub name: String,
    pub version: VersionWire,
    #[serde(default)]
    pub systemd_units: Vec<SystemdUnit>,
    #[serde(default)]
    pub images: Vec<AnnotationImage>,
    #[serde(default)]
    pub volumes: Vec<AnnotationVolume>,
    #[serde(default)]
    pub ports: Option<PortsWire>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SystemdUnit {
    pub unit_file: String,
    #[serde(default)]
    pub start: bool,
    #[serde(default)]
    pub instances: Option<InstancesWire>,
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnnotationImage {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub signature: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnnotationVolume {
    pub volume: String,
    #[serde(default)]
    pub data: Option<String>,
}

impl PodManifest {
    /// The `ops` annotation: its index and its decoded value, or the problem.
    pub(super) fn into_draft(self) -> Result<super::validate::Draft, Vec<super::Problem>> {
        use super::validate::{Draft, DraftImage, DraftUnit, DraftVolume, Field};
        use super::Problem;
        let problem = |field: String, message: String| Problem { field, message };

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
        let (ops, mut problems): (OpsAnnotation, _) = super::from_value(value, &base)?;

        // Where each manifest volume is mounted, from the apps' mounts.
        let mut mounts: BTreeMap<&str, Field<String>> = BTreeMap::new();
        for (a, app) in self.apps.iter().enumerate() {
            for (m, mount) in app.mounts.iter().enumerate() {
                let at = format!("apps[{a}].mounts[{m}]");
                if !self.volumes.iter().any(|v| v.name == mount.volume) {
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
        let mut data: BTreeMap<&str, Field<String>> = BTreeMap::new();
        for (i, volume) in ops.volumes.iter().enumerate() {
            let at = format!("{base}.volumes[{i}]");
            if !self.volumes.iter().any(|v| v.name == volume.volume) {
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
        let mut volumes = Vec::new();
        for (i, volume) in self.volumes.iter().enumerate() {
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
            volumes.push(DraftVolume {
                name: Field::new(format!("volumes[{i}].name"), volume.name.clone()),
                mount,
                read_only: volume.read_only,
                data: data.remove(volume.name.as_str()),
            });
        }

        let mut ports: Vec<Field<PortsWire>> = ops
            .ports
            .map(|p| Field::new(format!("{base}.ports"), p))
            .into_iter()
            .collect();
        for (i, port) in self.ports.into_iter().enumerate() {
            let map = indexmap::IndexMap::from([(
                port.name,
                super::native::PortWire::Number(port.host_port),
            )]);
            ports.push(Field::new(format!("ports[{i}]"), PortsWire::Map(map)));
        }

        Ok(Draft {
            name: Field::new(format!("{base}.name"), ops.name),
            version: Some(Field::new(format!("{base}.version"), ops.version)),
            units: ops
                .systemd_units
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
                .collect(),
            images: ops
                .images
                .into_iter()
                .enumerate()
                .map(|(i, image)| DraftImage {
                    at: format!("{base}.images[{i}]"),
                    id: image.id,
                    path: image.path,
                    uri: image.uri,
                    signature: image.signature,
                })
                .collect(),
            volumes,
            ports,
            environment: Field::new(format!("{base}.environment"), ops.environment),
            problems,
        })
    }
}
