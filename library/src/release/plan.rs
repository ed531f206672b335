//! The plan: request, what it wants and what the repository holds in,
//! steps out (or a refusal naming every difference). No I/O.
//!
//! A version and its artifacts never change once published: the same
//! content again is reused (`changed: false`), other content under a name
//! already taken is refused.

use std::path::{Path, PathBuf};

use super::layout::{self, Kind, Layout};
use super::observe::{Entry, Held, Observed};
use super::step::Step;
use super::wanted::{Role, Target, Wanted};
use super::{Report, Request};
use crate::outcome::Refusal;
use crate::records::names::{same_image, ImageId, Version};
use crate::records::release::{ArtifactRecord, FileRecord, ReleaseRecord};

/// What a run does.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub added: Vec<String>,
    pub reused: Vec<String>,
    /// What `tip` names after the plan.
    pub tip: Option<String>,
}

/// Plan `target` against `observed`: first what an earlier run's intent
/// record leaves to do ([`pending`]), then the request.
pub fn plan(request: &Request, target: &Target, observed: &Observed) -> Result<Plan, Refusal> {
    let (mut steps, observed) = pending(target, observed);
    let observed = &observed;
    let mut plan = match target {
        Target::Publish(wanted) => publish(request, wanted, observed),
        Target::Remove { layout, version } => Ok(remove(layout, version, observed)),
        Target::Point { layout, version } => point(request, layout, version, observed),
    }?;
    steps.append(&mut plan.steps);
    plan.steps = steps;
    Ok(plan)
}

/// What an intent record left by an earlier run asks, and the repository
/// as it is after it. A run that adds a version and moves `tip` to it
/// writes the record before the version is renamed into place and
/// removes it once `tip` names it; a record still there means that run
/// was cut short. When the version it names is published, `tip` is moved
/// to it (unless this run takes that version out) and the record
/// removed; when not, the record is removed alone.
fn pending(target: &Target, observed: &Observed) -> (Vec<Step>, Observed) {
    let mut after = observed.clone();
    let Some(intent) = after.intent.take() else {
        return (Vec::new(), after);
    };
    let layout = target.layout();
    let pod_rel = layout.pod_rel();
    let version = intent.version.clone();
    let removed = matches!(target, Target::Remove { version: v, .. } if v.as_str() == version);
    let mut steps = Vec::new();
    let why = if !intent.published {
        format!(
            "version {version:?} is not published (the run that was to publish it stopped \
             before it was in place)"
        )
    } else if removed {
        format!("version {version} is taken out")
    } else if tip_text(observed.tip.as_ref()).as_deref() == Some(version.as_str()) {
        format!("tip names version {version} (the run that published it stopped after tip moved)")
    } else {
        steps.push(Step::MoveTip {
            pod_rel: pod_rel.clone(),
            from: observed.tip.clone(),
            to: version.clone(),
        });
        after.tip = Some(PathBuf::from(&version));
        format!(
            "the run that published version {version} stopped before tip moved; tip is moved now"
        )
    };
    steps.push(Step::ClearIntent {
        pod_rel,
        version,
        why: Some(why),
    });
    (steps, after)
}

/// Whether `observed` holds `version` of `layout`'s pod: its directory's
/// release.json names that pod, version, channel and label.
fn is_published(layout: &Layout, version: &Version, observed: &Observed) -> bool {
    observed
        .version
        .as_ref()
        .and_then(|p| p.record.as_deref())
        .is_some_and(|record| layout.records(record, version))
}

/// Point `tip` at a published version (with `tip: false`, nothing).
fn point(
    request: &Request,
    layout: &Layout,
    version: &Version,
    observed: &Observed,
) -> Result<Plan, Refusal> {
    let version_rel = layout.version_rel(version);
    if !is_published(layout, version, observed) {
        let published = if observed.published.is_empty() {
            "no version of it is published there".to_owned()
        } else {
            format!("its published versions: {}", observed.published.join(", "))
        };
        return Err(Refusal::new(format!(
            "cannot point {}/tip at version {version}: {} is not a published version of pod {} \
             ({published}); publish it with bundle or instructions",
            layout::shown(&layout.pod_rel()),
            layout::shown(&version_rel),
            layout.pod,
        )));
    }
    let mut plan = Plan {
        tip: tip_text(observed.tip.as_ref()),
        reused: vec![layout::shown(&version_rel)],
        ..Plan::default()
    };
    if request.tip && plan.tip.as_deref() != Some(version.as_str()) {
        plan.steps.push(Step::MoveTip {
            pod_rel: layout.pod_rel(),
            from: observed.tip.clone(),
            to: version.to_string(),
        });
        plan.tip = Some(version.to_string());
    }
    Ok(plan)
}

fn tip_text(tip: Option<&PathBuf>) -> Option<String> {
    tip.map(|t| t.display().to_string())
}

fn remove(layout: &Layout, version: &Version, observed: &Observed) -> Plan {
    let mut plan = Plan {
        tip: tip_text(observed.tip.as_ref()),
        ..Plan::default()
    };
    // Only a directory whose release.json names this version of this pod
    // is taken out: the same path may be another pod's directory.
    let Some(published) = observed
        .version
        .as_ref()
        .filter(|_| is_published(layout, version, observed))
    else {
        return plan;
    };
    let record = published
        .record
        .as_ref()
        .map(|r| String::from_utf8_lossy(r).into_owned());
    plan.steps.push(Step::RemoveVersion {
        rel: layout.version_rel(version),
        record,
    });
    if plan.tip.as_deref() == Some(version.as_str()) {
        plan.steps.push(Step::RemoveTip {
            pod_rel: layout.pod_rel(),
            was: version.to_string(),
        });
        plan.tip = None;
    }
    plan
}

/// Where each file of the version links to, filled as artifacts are
/// planned: (file path, artifact file relative to the repository).
type Links = Vec<(PathBuf, PathBuf)>;

fn publish(request: &Request, wanted: &Wanted, observed: &Observed) -> Result<Plan, Refusal> {
    refuse_nested(wanted, observed)?;
    let mut plan = Plan::default();
    let mut differences = Vec::new();
    let mut artifacts: Links = Vec::new();
    plan_images(
        wanted,
        observed,
        &mut plan,
        &mut artifacts,
        &mut differences,
    );
    plan_volumes(
        wanted,
        observed,
        &mut plan,
        &mut artifacts,
        &mut differences,
    );
    let layout = &wanted.layout;
    let links: Links = artifacts
        .iter()
        .map(|(file, artifact)| (file.clone(), layout.link_target(file, artifact)))
        .collect();
    let version_rel = layout.version_rel(&wanted.version);
    match &observed.version {
        None => {
            plan.steps.push(Step::AddVersion {
                rel: version_rel.clone(),
                links: links.clone(),
                record: record(wanted, &artifacts),
            });
            plan.added.push(layout::shown(&version_rel));
        }
        Some(published) => {
            compare_version(wanted, published, &links, &mut differences);
            plan.reused.push(layout::shown(&version_rel));
        }
    }
    if !differences.is_empty() {
        return Err(Refusal::new(format!(
            "cannot publish pod {} version {} in {}: {}. A published version and its artifacts \
             never change: publish the new content under a new version",
            layout.pod,
            wanted.version,
            layout::shown(&layout.pod_rel()),
            differences.join("; ")
        )));
    }
    // tip follows a version as it is published (or when there is none):
    // publishing a published version again leaves it, so a rerun of an
    // old publish never moves it back.
    let tip = tip_text(observed.tip.as_ref());
    plan.tip = tip.clone();
    let publishes = observed.version.is_none();
    if request.tip
        && (publishes || tip.is_none())
        && tip.as_deref() != Some(wanted.version.as_str())
    {
        plan.steps.push(Step::MoveTip {
            pod_rel: layout.pod_rel(),
            from: observed.tip.clone(),
            to: wanted.version.to_string(),
        });
        plan.tip = Some(wanted.version.to_string());
        if publishes {
            record_intent(&mut plan.steps, &layout.pod_rel(), &wanted.version);
        }
    }
    Ok(plan)
}

/// Around a version added and `tip` moved to it: the intent record
/// written before the version is renamed into place, removed after `tip`
/// moved, so that a rerun after a run cut short between the two finishes
/// moving `tip` ([`pending`]).
fn record_intent(steps: &mut Vec<Step>, pod_rel: &Path, version: &Version) {
    let Some(at) = steps
        .iter()
        .position(|s| matches!(s, Step::AddVersion { .. }))
    else {
        return;
    };
    steps.insert(
        at,
        Step::WriteIntent {
            pod_rel: pod_rel.to_owned(),
            version: version.to_string(),
        },
    );
    steps.push(Step::ClearIntent {
        pod_rel: pod_rel.to_owned(),
        version: version.to_string(),
        why: None,
    });
}

/// Refuse a publish that would write inside a published directory, or in
/// its place: labels have no fixed depth, so `channels/stable/web/shop`
/// is pod `shop` under label `web` or version `shop` of pod `web`.
fn refuse_nested(wanted: &Wanted, observed: &Observed) -> Result<(), Refusal> {
    if observed.nested.is_empty() {
        return Ok(());
    }
    let found: Vec<String> = observed
        .nested
        .iter()
        .map(|n| {
            let wanted = layout::shown(&n.wanted);
            if n.found == n.wanted {
                format!("{wanted} is already {}", n.what)
            } else {
                let found = layout::shown(&n.found);
                format!("{wanted} would be inside {found}, {}", n.what)
            }
        })
        .collect();
    let layout = &wanted.layout;
    Err(Refusal::new(format!(
        "cannot publish pod {} version {} in {}: {}. A label path has no fixed depth, so one path \
         can name another pod's directory or version: publish under another label or name",
        layout.pod,
        wanted.version,
        layout::shown(&layout.pod_rel()),
        found.join("; ")
    )))
}

/// The file of an artifact: its own name when new, the repository's when
/// reused.
fn artifact_file(rel: &Path, held: Option<&Held>, wanted: &str) -> PathBuf {
    rel.join(held.and_then(|h| h.file.as_deref()).unwrap_or(wanted))
}

fn plan_images(
    wanted: &Wanted,
    observed: &Observed,
    plan: &mut Plan,
    links: &mut Links,
    differences: &mut Vec<String>,
) {
    for (index, image) in wanted.images.iter().enumerate() {
        let rel = wanted
            .layout
            .artifact_rel(Kind::Image, &image.name, &image.version);
        let held = observed.images.get(index).and_then(Option::as_ref);
        match held {
            None => {
                plan.steps.push(Step::AddImage {
                    index,
                    rel: rel.clone(),
                });
                plan.added.push(layout::shown(&rel));
            }
            Some(held) => {
                let same = match (ImageId::parse(&held.record), ImageId::parse(&image.id)) {
                    (Ok(a), Ok(b)) => same_image(&a, &b),
                    _ => false,
                };
                if !same {
                    differences.push(format!(
                        "image {} version {} has id {} in the repository but the bundle has {}{}",
                        image.name,
                        image.version,
                        if held.record.is_empty() {
                            "(none)"
                        } else {
                            &held.record
                        },
                        image.id,
                        instructed_hint(image.explicit, "images", &image.name, &image.version)
                    ));
                } else if held.file.is_none() {
                    differences.push(format!(
                        "image {} version {} in the repository has no image file",
                        image.name, image.version
                    ));
                }
                if let Some(sig) = &image.signature {
                    if !held.names.contains(sig) {
                        differences.push(format!(
                            "image {} version {} in the repository has no signature {sig:?}, the \
                             bundle has one",
                            image.name, image.version
                        ));
                    }
                }
                plan.reused.push(layout::shown(&rel));
            }
        }
        for file in &wanted.files {
            match file.role {
                Role::Image(i) if i == index => {
                    links.push((file.path.clone(), artifact_file(&rel, held, &image.file)));
                }
                Role::Signature(i) if i == index => {
                    let name = image.signature.clone().unwrap_or_default();
                    links.push((file.path.clone(), rel.join(name)));
                }
                _ => {}
            }
        }
    }
}

/// For an artifact whose version an instruction file sets (or that was
/// taken from the repository at it): where to give it another.
fn instructed_hint(explicit: bool, key: &str, name: &str, version: &Version) -> String {
    if explicit {
        format!(
            " (the instruction file gives it version {version}: give the new content a version \
             the repository does not hold in the instruction file, {key}: {{{name}: NEW}})"
        )
    } else {
        String::new()
    }
}

fn plan_volumes(
    wanted: &Wanted,
    observed: &Observed,
    plan: &mut Plan,
    links: &mut Links,
    differences: &mut Vec<String>,
) {
    for (index, volume) in wanted.volumes.iter().enumerate() {
        let rel = wanted
            .layout
            .artifact_rel(Kind::Volume, &volume.name, &volume.version);
        let held = observed.volumes.get(index).and_then(Option::as_ref);
        match held {
            None => {
                plan.steps.push(Step::AddVolume {
                    index,
                    rel: rel.clone(),
                });
                plan.added.push(layout::shown(&rel));
            }
            Some(held) => {
                if held.record != volume.sha256 {
                    differences.push(format!(
                        "volume {} version {}: sha256 differs ({} in the repository, {} in the \
                         bundle){}",
                        volume.name,
                        volume.version,
                        if held.record.is_empty() {
                            "none"
                        } else {
                            &held.record
                        },
                        volume.sha256,
                        instructed_hint(volume.explicit, "volumes", &volume.name, &volume.version)
                    ));
                } else if held.file.is_none() {
                    differences.push(format!(
                        "volume {} version {} in the repository has no archive",
                        volume.name, volume.version
                    ));
                }
                plan.reused.push(layout::shown(&rel));
            }
        }
        for file in &wanted.files {
            if file.role == Role::Volume(index) {
                links.push((file.path.clone(), artifact_file(&rel, held, &volume.file)));
            }
        }
    }
}

/// What differs between the published version and the one wanted.
fn compare_version(
    wanted: &Wanted,
    published: &super::observe::Published,
    links: &Links,
    differences: &mut Vec<String>,
) {
    if let Some(held) = published.manifest.as_deref() {
        if held != wanted.manifest.as_slice() {
            differences.push(manifest_difference(held, &wanted.manifest));
        }
    } else {
        differences.push("pod.json differs from the published one".to_owned());
    }
    for file in &wanted.files {
        // A name from the bundle, quoted: it may hold any character.
        let shown = format!("{:?}", file.path.display().to_string());
        let entry = published.entries.get(&file.path).unwrap_or(&Entry::Missing);
        let link = links.iter().find(|(path, _)| *path == file.path);
        match (link, entry) {
            (None, Entry::File(sha)) if *sha == file.sha256 => {}
            (None, Entry::File(_)) => differences.push(format!(
                "{} {shown} differs from the published one",
                kind(file.path.as_path())
            )),
            (Some((_, target)), Entry::Link(held)) if held == target => {}
            (Some((_, target)), Entry::Link(held)) => differences.push(format!(
                "{shown} links to {:?} in the published version but would link to {:?}",
                held.display().to_string(),
                target.display().to_string()
            )),
            (_, Entry::Missing) => {
                differences.push(format!("{shown} is missing from the published version"))
            }
            _ => differences.push(format!(
                "{shown} is of another kind in the published version"
            )),
        }
    }
    if published.record.is_none() {
        differences.push(format!(
            "the published version has no {} (it is not a complete release)",
            layout::RECORD
        ));
    }
}

/// How two pod.json texts differ, said of `"$schema"` when nothing else
/// does: a published version never changes, and an editor's schema link
/// added after publishing is the one change a user would not think of.
fn manifest_difference(published: &[u8], wanted: &[u8]) -> String {
    let without_schema = |text: &[u8]| {
        let mut value: serde_json::Value = serde_json::from_slice(text).ok()?;
        let schema = value.as_object_mut()?.remove("$schema");
        Some((value, schema))
    };
    match (without_schema(published), without_schema(wanted)) {
        (Some((held, held_schema)), Some((pod, schema)))
            if held == pod && held_schema != schema =>
        {
            let shown = |schema: Option<serde_json::Value>| match schema {
                Some(serde_json::Value::String(s)) => crate::records::names::shown(&s),
                _ => "none".to_owned(),
            };
            format!(
                "pod.json differs from the published one only in \"$schema\" (published: {}, \
                 now: {}); a published version never changes: put \"$schema\" back as it was, \
                 or publish it with the next version",
                shown(held_schema),
                shown(schema)
            )
        }
        _ => "pod.json differs from the published one".to_owned(),
    }
}

fn kind(path: &Path) -> &'static str {
    let unit = path
        .extension()
        .is_some_and(|e| crate::records::names::UNIT_SUFFIXES.iter().any(|s| e == *s));
    if unit {
        "unit file"
    } else {
        "file"
    }
}

/// release.json: the record of the version, written last, as
/// [`ReleaseRecord`] (what ops_pod reads) serializes it.
pub fn record(wanted: &Wanted, artifacts: &Links) -> String {
    let layout = &wanted.layout;
    let files = wanted
        .files
        .iter()
        .map(|file| {
            let artifact = artifacts
                .iter()
                .find(|(path, _)| *path == file.path)
                .map(|(_, artifact)| layout::shown(artifact));
            let record = FileRecord {
                sha256: file.sha256.clone(),
                size: file.size,
                artifact,
            };
            (layout::shown(&file.path), record)
        })
        .collect();
    let record = ReleaseRecord {
        pod: layout.pod.clone(),
        version: wanted.version.clone(),
        channel: layout.channel.to_string(),
        label: (!layout.label.as_str().is_empty()).then(|| layout.label.clone()),
        manifest: FileRecord {
            sha256: format!(
                "{:x}",
                <sha2::Sha256 as sha2::Digest>::digest(&wanted.manifest)
            ),
            size: wanted.manifest.len() as u64,
            artifact: None,
        },
        files,
        images: wanted
            .images
            .iter()
            .map(|i| ArtifactRecord {
                name: i.name.clone(),
                version: i.version.to_string(),
                id: Some(i.id.clone()),
                sha256: None,
            })
            .collect(),
        volumes: wanted
            .volumes
            .iter()
            .map(|v| ArtifactRecord {
                name: v.name.clone(),
                version: v.version.to_string(),
                id: None,
                sha256: Some(v.sha256.clone()),
            })
            .collect(),
        revisions: wanted.revisions.clone(),
    };
    let mut text = serde_json::to_string_pretty(&record).unwrap_or_default();
    text.push('\n');
    text
}

impl Plan {
    /// The report of this plan.
    pub fn report(&self, target: &Target, want_diff: bool) -> Report {
        let wanted = match target {
            Target::Publish(w) => Some(w.as_ref()),
            Target::Remove { .. } | Target::Point { .. } => None,
        };
        let layout = target.layout();
        Report {
            changed: !self.steps.is_empty(),
            path: layout.version_dir(target.version()).display().to_string(),
            version: target.version().to_string(),
            tip: self.tip.clone(),
            added: self.added.clone(),
            reused: self.reused.clone(),
            actions: self
                .steps
                .iter()
                .filter(|s| s.reported())
                .map(|s| s.action(wanted))
                .collect(),
            diff: if want_diff {
                self.steps
                    .iter()
                    .filter(|s| s.reported())
                    .map(|s| s.diff(wanted))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_files_are_told_apart_from_other_files() {
        assert_eq!(kind(Path::new("units/web.service")), "unit file");
        assert_eq!(kind(Path::new("config.toml")), "file");
    }

    /// A republish whose pod.json differs in `"$schema"` alone is refused
    /// saying so (and what to do); any other difference as before.
    #[test]
    fn a_pod_json_differing_only_in_its_schema_link_says_so() {
        let pod = r#"{"name": "shop", "version": 3}"#;
        let cases = [
            (
                "added",
                pod,
                r#"{"$schema": "schemas/pod.schema.json", "name": "shop", "version": 3}"#,
            ),
            (
                "changed",
                r#"{"$schema": "a", "name": "shop", "version": 3}"#,
                r#"{"version": 3, "name": "shop", "$schema": "b"}"#,
            ),
            (
                "removed",
                r#"{"$schema": "a", "name": "shop", "version": 3}"#,
                pod,
            ),
            (
                "and more",
                pod,
                r#"{"$schema": "a", "name": "shop", "version": 4}"#,
            ),
            ("not JSON", "{", pod),
            ("its keys' order", pod, r#"{"version": 3, "name": "shop"}"#),
        ];
        let messages: std::collections::BTreeMap<_, _> = cases
            .iter()
            .map(|(case, held, now)| (*case, manifest_difference(held.as_bytes(), now.as_bytes())))
            .collect();
        insta::assert_json_snapshot!(messages);
    }

    #[test]
    fn the_intent_is_written_before_the_version_and_removed_after_tip_moved() {
        let pod_rel = PathBuf::from("channels/stable/shop");
        let mut steps = vec![
            Step::AddImage {
                index: 0,
                rel: PathBuf::from("images/app/2"),
            },
            Step::AddVersion {
                rel: pod_rel.join("2"),
                links: Vec::new(),
                record: String::new(),
            },
            Step::MoveTip {
                pod_rel: pod_rel.clone(),
                from: Some(PathBuf::from("1")),
                to: "2".into(),
            },
        ];
        record_intent(&mut steps, &pod_rel, &Version::parse("2").unwrap());
        assert!(matches!(steps[1], Step::WriteIntent { ref version, .. } if version == "2"));
        assert!(matches!(steps[2], Step::AddVersion { .. }));
        assert!(matches!(steps[4], Step::ClearIntent { why: None, .. }));
        assert!(!steps[1].reported() && !steps[4].reported());
    }

    #[test]
    fn a_state_absent_plan_for_a_missing_version_does_nothing() {
        let layout = Layout {
            repo: PathBuf::from("/r"),
            channel: crate::records::names::PodName::parse("stable").unwrap(),
            label: layout::Label::default(),
            pod: crate::records::names::PodName::parse("shop").unwrap(),
        };
        let observed = Observed {
            tip: Some(PathBuf::from("1")),
            ..Observed::default()
        };
        let plan = remove(&layout, &Version::parse("2").unwrap(), &observed);
        assert!(plan.steps.is_empty());
        assert_eq!(plan.tip.as_deref(), Some("1"));
    }
}
