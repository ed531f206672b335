//! What a pod puts in systemd's unit directory, and how to get it there.
//!
//! Versions live side by side, so each version's units are installed under
//! names that carry the pod and the version: the bundle's `web@.service`
//! of pod `shop` version `7` becomes `shop-7-web@.service`. References
//! between a pod's own units (`After=web@1.service`, a timer's `Unit=`) are
//! rewritten to match; implicit pairs (a timer and its service) keep
//! working because both names change the same way.
//!
//! Beside the units ops writes:
//! - a drop-in `50-ops.conf` per unit (per instance for a template) with
//!   `POD_NAME` (the deployment's name), `POD_VERSION`, `POD_BUNDLE` (the
//!   bundle's own name, for versions deployed since it is recorded), the
//!   instance's ports (`PORT_<NAME>`, and
//!   `PORT`: see crate::ports), the bundle's environment, the secret
//!   environment file of the version, the pod's slice and `PartOf=` its
//!   target, and `ConditionPathExists=` the version's pivot
//!   (`<root>/pods/<pod>/current/is-version-<version>`, see
//!   `Store::pivot_path`): the unit starts only while `current` points at
//!   its version; for a unit that names an image, `OPS_IMAGE` (where the
//!   image is) and, in the systemd runtime, `RootDirectory=` its root
//!   filesystem, mounted read-only (`ReadOnlyPaths=`: many units share one
//!   image);
//! - `ops-<pod>.target`, which wants the start units of every installed
//!   version, so the pod starts and stops as one. Which of them start is
//!   the pivot's to say, not the target's: the target does not change when
//!   `current` moves, and `current` is the one file whose rename switches
//!   both what the store calls current and what a boot starts (two files
//!   written one after the other, a target naming the version and the
//!   link, booted the new version beside an old `current` when the power
//!   was cut between them: tests/reliability/power);
//! - `ops-<pod>.slice` (with `-` escaped as systemd does), grouping the
//!   pod's processes under `ops.slice`;
//! - `multi-user.target.wants/ops-<pod>.target` while the pod is started,
//!   so it comes back after a reboot;
//! - while the pod is idle (its idle record, crate::records::idle), in
//!   place of that link: a socket `ops-<pod>:wake-<port>.socket` per port
//!   armed, each starting the waker `ops-<pod>:wake.service` (a oneshot
//!   that runs `<root>/bin/ops-wake --wake`: ops_pod itself, which starts
//!   the pod's version as `state: started` does), the target
//!   `ops-<pod>:idle.target` that wants the sockets, and
//!   `multi-user.target.wants/ops-<pod>:idle.target`, so that after a
//!   reboot the pod is armed, not started. The `:` (which pod names
//!   cannot contain) keeps these names apart from every other pod's:
//!   with `-`, pod `shop`'s idle target would be pod `shop-idle`'s target,
//!   and a boot link carries no header to tell whose it is.
//!
//! What ops writes reaches systemd exactly or is refused: environment
//! values are escaped for the parser that reads them, values no variable
//! can hold and paths a unit file cannot carry are refused before anything
//! is written (the rules are `crate::records::unit_syntax`'s, which bundle
//! validation applies too).
//!
//! Every file starts with a header naming the pod; that is how ops knows a
//! file is its own, and it never overwrites or removes one without it.
//! The set of files is computed from the store ([`desired`]), compared with
//! what is there ([`owned`]), and the difference applied ([`apply`]):
//! reruns converge and hand edits are repaired.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::{self, Context, FsError};
use crate::bundle::{Pod, Volume};
use crate::image::{records, Runtime};
use crate::records::idle::IdleRecord;
use crate::records::names::{ImageId, PodName, UnitName, Version};
use crate::records::unit_names::split;
pub use crate::records::unit_names::{
    idle_target_name, idle_units, installed_name, is_idle_unit, runnable, slice_name, target_name,
    wake_socket_name, wake_sockets_glob, waker_name,
};
pub use crate::records::unit_syntax::{check_env_value, check_unit_path};
use crate::store::{PodState, Store};
use crate::volume;

/// The drop-in file ops writes for each unit.
pub const DROPIN: &str = "50-ops.conf";

/// The most read of one file of the unit directory: far more than any
/// unit file ops writes (a bundle's are at most 1 MiB).
const MAX_UNIT_TEXT: u64 = 16 << 20;
/// The target that starts pods at boot.
const BOOT_TARGET: &str = "multi-user.target";

/// Dependency settings whose values are unit names.
const UNIT_LIST_KEYS: &[&str] = &[
    "Requires",
    "Requisite",
    "Wants",
    "BindsTo",
    "PartOf",
    "Upholds",
    "Conflicts",
    "Before",
    "After",
    "OnFailure",
    "OnSuccess",
    "PropagatesReloadTo",
    "ReloadPropagatedFrom",
    "PropagatesStopTo",
    "StopPropagatedFrom",
    "JoinsNamespaceOf",
    "Unit",
    "Sockets",
    "Service",
    "Also",
    "WantedBy",
    "RequiredBy",
    "UpheldBy",
];

#[derive(Debug, thiserror::Error)]
pub enum UnitsError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(
        "{} exists and is not managed by ops for pod {pod}; move it away (or rename the pod) and rerun",
        path.display()
    )]
    Foreign { path: PathBuf, pod: PodName },
    #[error(
        "{} is pod {owner}'s: pod {pod} would install a unit of the same name (units are named \
         <pod>-<version>-<unit>, and these two pods' names and versions give the same); deploy \
         under another name or version",
        path.display()
    )]
    OtherPods {
        path: PathBuf,
        pod: PodName,
        owner: String,
    },
    #[error("installed unit name {name:?} is {} characters, longer than 253 (systemd's 255 less the `.d` of the drop-in directory that carries the version's settings and pivot); shorten the pod name, version or unit name", name.len())]
    TooLong { name: String },
    #[error("{what} {path:?} cannot be written into a systemd unit: {reason}")]
    Path {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

fn pod_header(pod: &PodName) -> String {
    format!("# Managed by ops (pod {pod}): edits are overwritten.\n")
}

fn version_header(pod: &PodName, version: &Version) -> String {
    format!("# Managed by ops (pod {pod}, version {version}): edits are overwritten; change the bundle instead.\n")
}

/// The pod a file's text says ops wrote it for, if any.
pub fn owner(text: &str) -> Option<&str> {
    let rest = text
        .lines()
        .next()?
        .strip_prefix("# Managed by ops (pod ")?;
    let end = rest.find([')', ','])?;
    Some(&rest[..end])
}

/// Whether a file's text is one ops wrote for `pod`.
pub fn is_owned(pod: &PodName, text: &str) -> bool {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("# Managed by ops (pod ")
        .and_then(|rest| rest.strip_prefix(pod.as_str()))
        .is_some_and(|rest| rest.starts_with(')') || rest.starts_with(','))
}

/// One physical line of a unit file, as systemd splits them: at `\n`,
/// `\r\n`, a lone `\r` or a NUL (systemd's `read_line`).
struct PhysicalLine<'a> {
    body: &'a str,
    end: &'a str,
}

fn physical_lines(text: &str) -> Vec<PhysicalLine<'_>> {
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut = rest.find(['\n', '\r', '\0']).unwrap_or(rest.len());
        let end_len = match &rest[cut..] {
            e if e.starts_with("\r\n") => 2,
            "" => 0,
            _ => 1,
        };
        lines.push(PhysicalLine {
            body: &rest[..cut],
            end: &rest[cut..cut + end_len],
        });
        rest = &rest[cut + end_len..];
    }
    lines
}

/// A line systemd skips: first non-blank character `#` or `;`.
fn is_comment(line: &str) -> bool {
    line.trim_start_matches([' ', '\t']).starts_with(['#', ';'])
}

/// Whether systemd joins the next line to this one: it ends in an odd
/// number of backslashes (an even number is escaped backslashes).
fn continues(line: &str) -> bool {
    let trailing = line.len() - line.trim_end_matches('\\').len();
    trailing % 2 == 1
}

/// Rewrite references to the pod's own units in a unit file.
///
/// Lines are read as systemd reads them: a line ending in `\` goes on
/// on the next, comment lines inside such a continuation are skipped, and
/// a CR or NUL ends a line too. A reference on any line of a dependency
/// setting is renamed; every other byte is kept.
fn rewrite_references(text: &str, renames: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(text.len());
    for group in logical_lines(text) {
        let value_from = dependency_value(&group);
        for (i, line) in group.iter().enumerate() {
            match value_from {
                Some((first, at)) if i >= first && !is_comment(line.body) => {
                    let at = if i == first { at } else { 0 };
                    out.push_str(&line.body[..at]);
                    rename_words(&line.body[at..], renames, &mut out);
                }
                _ => out.push_str(line.body),
            }
            out.push_str(line.end);
        }
    }
    out
}

/// systemd's logical lines: a line and those it is continued on.
fn logical_lines(text: &str) -> Vec<Vec<PhysicalLine<'_>>> {
    let mut groups: Vec<Vec<PhysicalLine<'_>>> = Vec::new();
    let mut open = false;
    for line in physical_lines(text) {
        let comment = is_comment(line.body);
        match groups.last_mut() {
            Some(group) if open => {
                open = comment || continues(line.body);
                group.push(line);
            }
            _ => {
                open = !comment && continues(line.body);
                groups.push(vec![line]);
            }
        }
    }
    groups
}

/// Where the value of a dependency setting begins in a logical line (the
/// physical line and the byte after its `=`); `None` for any other line.
fn dependency_value(group: &[PhysicalLine<'_>]) -> Option<(usize, usize)> {
    // The key is what comes before the first `=`, the continuation
    // backslashes read as spaces (as systemd does); comments skipped.
    let mut key = String::new();
    let mut value_from: Option<(usize, usize)> = None;
    for (i, line) in group.iter().enumerate() {
        if is_comment(line.body) {
            continue;
        }
        if let Some(at) = line.body.find('=') {
            key.push_str(&line.body[..at]);
            value_from = Some((i, at + 1));
            break;
        }
        key.push_str(line.body.strip_suffix('\\').unwrap_or(line.body));
        key.push(' ');
    }
    value_from.filter(|_| UNIT_LIST_KEYS.contains(&key.trim()))
}

/// Rename the whitespace-separated words of `value`, keeping the
/// separators (and a continuation's final backslash) as they are.
fn rename_words(value: &str, renames: &BTreeMap<&str, String>, out: &mut String) {
    let continued = continues(value);
    let words = if continued {
        &value[..value.len() - 1]
    } else {
        value
    };
    let mut rest = words;
    while !rest.is_empty() {
        let start = rest
            .find(|c: char| !c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let word = &rest[..end];
        match renamed(word, renames) {
            Some(new) => out.push_str(&new),
            None => out.push_str(word),
        }
        rest = &rest[end..];
    }
    if continued {
        out.push('\\');
    }
}

/// The new name of a reference to one of the pod's units, or of an
/// instance of one of its templates; `None` for any other word.
fn renamed(token: &str, renames: &BTreeMap<&str, String>) -> Option<String> {
    if let Some(new) = renames.get(token) {
        return Some(new.clone());
    }
    // An instance of one of the pod's templates: web@8080.service.
    let (stem, suffix) = split(token);
    let (prefix, instance) = stem.split_once('@')?;
    let template = format!("{prefix}@.{suffix}");
    let new = renames.get(template.as_str())?;
    let (new_stem, _) = split(new);
    Some(format!("{new_stem}{instance}.{suffix}"))
}

/// `Environment="NAME=value"`, encoded so systemd hands the service exactly
/// `value`: systemd reads the quoted word with C escapes (so control
/// characters, which it would take for line ends or drop, are `\xNN`), and
/// then expands `%` specifiers (so `%` is `%%`). `value` holds no NUL
/// ([`check_env_value`]).
fn environment_assignment(name: &str, value: &str) -> String {
    debug_assert!(check_env_value(name, value).is_ok());
    let mut s = String::from("Environment=\"");
    for c in format!("{name}={value}").chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '%' => s.push_str("%%"),
            c if c.is_ascii_control() => s.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => s.push(c),
        }
    }
    s.push_str("\"\n");
    s
}

/// An environment file: each value in double quotes, where systemd's
/// parser takes every byte as it is but `\\` and `\"` (so those two are
/// escaped); newlines, CRs and other control characters are kept inside
/// the quotes. Values hold no NUL ([`check_env_value`]): systemd's
/// parser would stop at it and drop the variables after.
pub fn environment_file(env: &BTreeMap<String, String>) -> Vec<u8> {
    let mut s = String::from("# Pod environment written by ops; secret.\n");
    for (name, value) in env {
        debug_assert!(check_env_value(name, value).is_ok());
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        s.push_str(&format!("{name}=\"{escaped}\"\n"));
    }
    s.into_bytes()
}

/// `path` as written in a path setting of a unit; `what` names it in the
/// error.
fn unit_path(what: &'static str, path: &Path) -> Result<String, UnitsError> {
    let refuse = |reason: String| UnitsError::Path {
        what,
        path: path.to_owned(),
        reason,
    };
    let text = path
        .to_str()
        .ok_or_else(|| refuse("it is not UTF-8".into()))?;
    check_unit_path(text).map_err(refuse)?;
    Ok(text.replace('%', "%%"))
}

/// The store path a `ConditionPathExists=` names, as written in a unit.
/// systemd takes that value whole (no splitting at whitespace, no quotes,
/// no `$` expansion; a leading `|` or `!` is ours never, the path being
/// absolute), expanding only `%` specifiers: `%` is written `%%`, and
/// what ends a line (a control character) cannot be written at all.
fn condition_path(path: &Path) -> Result<String, UnitsError> {
    let refuse = |reason: &str| UnitsError::Path {
        what: "store root",
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let text = path.to_str().ok_or_else(|| refuse("it is not UTF-8"))?;
    if text.contains(|c: char| c.is_control()) {
        return Err(refuse(
            "it contains a control character, which a unit file cannot carry exactly (systemd ends a line at some)",
        ));
    }
    // systemd drops a condition whose path is not normalized or too long,
    // with a line in its journal: the version's units would then start
    // whatever `current` names. Refused here instead.
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(refuse(
            "it holds `..`, and systemd ignores a condition on a path that is not normalized",
        ));
    }
    if text.len() >= 4096 || path.iter().any(|c| c.len() > 255) {
        return Err(refuse(
            "it is longer than systemd takes (4095 bytes, 255 a component): it would ignore the condition",
        ));
    }
    Ok(text.replace('%', "%%"))
}

/// The variable names in an environment file [`environment_file`] wrote.
pub fn environment_names(file: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(file)
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once('=')?;
            let is_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            // A continuation line of a multi-line value cannot start with
            // NAME=" : its quotes are escaped.
            (is_name && rest.starts_with('"')).then(|| name.to_owned())
        })
        .collect()
}

/// Where a version's images are: the store and the runtime it uses.
#[derive(Debug, Clone, Copy)]
pub struct Images<'a> {
    pub store: &'a Store,
    pub runtime: Runtime,
}

/// The drop-in lines that run a unit in its image.
fn image_lines(images: Images<'_>, id: &ImageId) -> Result<String, UnitsError> {
    let path = records::location(images.store, images.runtime, id);
    let mut s = environment_assignment("OPS_IMAGE", &path);
    if images.runtime == Runtime::Systemd {
        let location = unit_path("image directory", Path::new(&path))?;
        // ReadOnlyPaths= takes host paths, applied before the switch to
        // the root: naming the root makes the whole image read-only
        // (`ReadOnlyPaths=/` would not; measured on systemd 252).
        s.push_str(&format!(
            "RootDirectory={location}\nMountAPIVFS=yes\nReadOnlyPaths={location}\n"
        ));
    }
    Ok(s)
}

/// The drop-in lines that give a unit the version's volumes: always
/// `OPS_VOLUME_<NAME>` (the host directory); for a unit running in an
/// image of the systemd runtime, a bind mount at the volume's mount point;
/// otherwise a read-only volume is made read-only where it is.
fn volume_lines(
    images: Images<'_>,
    pod: &PodName,
    version: &Version,
    volumes: &[Volume],
    in_image: bool,
) -> Result<(String, String), UnitsError> {
    let mut environment = String::new();
    let mut mounts = String::new();
    for v in volumes {
        let path = volume::data_path(images.store, pod, version, &v.name);
        environment.push_str(&environment_assignment(
            &volume::env_name(&v.name),
            &path.display().to_string(),
        ));
        let shown = || unit_path("volume directory", &path);
        let mount = || unit_path("volume mount point", &v.mount);
        match (in_image && images.runtime == Runtime::Systemd, v.read_only) {
            (true, false) => mounts.push_str(&format!("BindPaths={}:{}\n", shown()?, mount()?)),
            (true, true) => {
                mounts.push_str(&format!("BindReadOnlyPaths={}:{}\n", shown()?, mount()?));
            }
            (false, true) => mounts.push_str(&format!("ReadOnlyPaths={}\n", shown()?)),
            (false, false) => {}
        }
    }
    Ok((environment, mounts))
}

/// What the drop-in of one runnable unit says beyond the pod and version.
#[derive(Debug, Default)]
struct Extras<'a> {
    /// `POD_BUNDLE`: the bundle's own name, for versions whose record has
    /// it (a version recorded before it keeps the drop-in it had, so an
    /// upgrade of ops restarts nothing).
    bundle: Option<&'a PodName>,
    /// `PORT_<NAME>` and `PORT`.
    ports: Vec<(String, String)>,
    environment: Option<&'a BTreeMap<String, String>>,
    /// Written as in a unit ([`unit_path`]).
    environment_file: Option<&'a str>,
    image: Option<String>,
    volumes: (String, String),
    /// The version's pivot, written as in a unit ([`condition_path`]).
    pivot: &'a str,
}

/// The key of the pivot's condition in a drop-in ([`dropin`]).
const PIVOT_KEY: &str = "ConditionPathExists=";

/// The drop-in for one runnable unit of a version.
fn dropin(pod: &PodName, version: &Version, suffix: &str, extras: Extras<'_>) -> String {
    let mut s = version_header(pod, version);
    s.push_str(&format!("[Unit]\nPartOf={}\n", target_name(pod)));
    // Started only while `current` points at the version: a start that
    // does not (a boot after a cut before `current` moved, a target
    // wanting every version) is skipped by systemd, silently.
    s.push_str(&format!("{PIVOT_KEY}{}\n", extras.pivot));
    let section = match suffix {
        "service" => "Service",
        "socket" => "Socket",
        _ => return s,
    };
    s.push_str(&format!("\n[{section}]\nSlice={}\n", slice_name(pod)));
    s.push_str(&environment_assignment("POD_NAME", pod.as_str()));
    s.push_str(&environment_assignment("POD_VERSION", version.as_str()));
    if let Some(bundle) = extras.bundle {
        s.push_str(&environment_assignment("POD_BUNDLE", bundle.as_str()));
    }
    for (name, value) in &extras.ports {
        s.push_str(&environment_assignment(name, value));
    }
    s.push_str(&extras.volumes.0);
    for (name, value) in extras.environment.into_iter().flatten() {
        s.push_str(&environment_assignment(name, value));
    }
    if let Some(path) = extras.environment_file {
        s.push_str(&format!("EnvironmentFile={path}\n"));
    }
    if section == "Service" {
        s.push_str(&extras.image.unwrap_or_default());
        s.push_str(&extras.volumes.1);
    }
    s
}

/// What one path in the unit directory should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File(String),
    Link(PathBuf),
}

impl Entry {
    /// Text for a diff.
    pub fn text(&self) -> String {
        match self {
            Entry::File(t) => t.clone(),
            Entry::Link(p) => format!("symlink to {}\n", p.display()),
        }
    }
}

/// Paths relative to the unit directory.
pub type Files = BTreeMap<PathBuf, Entry>;

/// The files of one version.
pub fn version_files(
    model: &Pod,
    texts: &BTreeMap<UnitName, String>,
    environment_file: Option<&Path>,
    images: Images<'_>,
    ports: &[crate::ports::Allocation],
) -> Result<Files, UnitsError> {
    let (pod, version, units) = (&model.name, &model.version, &model.units);
    let environment_file = environment_file
        .map(|path| unit_path("environment file", path))
        .transpose()?;
    let pivot = condition_path(&images.store.pivot_path(pod, version))?;
    let mut files = Files::new();
    for unit in units {
        let installed = installed_name(pod, version, &unit.name);
        let text = texts
            .get(&unit.name)
            .map(String::as_str)
            .unwrap_or_default();
        let mut body = version_header(pod, version);
        body.push_str(&rewrite_references(text, &renames(model, unit)));
        if installed.len() > 255 {
            return Err(UnitsError::TooLong { name: installed });
        }
        files.insert(PathBuf::from(&installed), Entry::File(body));
        let (_, suffix) = split(&installed);
        let instances = runnable(pod, version, unit)
            .into_iter()
            .zip(unit.instance_names());
        for (name, instance) in instances {
            // `<name>.d` is a file name too: 255 bytes at most.
            if name.len() + ".d".len() > 255 {
                return Err(UnitsError::TooLong { name });
            }
            files.insert(
                Path::new(&format!("{name}.d")).join(DROPIN),
                Entry::File(dropin(
                    pod,
                    version,
                    suffix,
                    Extras {
                        bundle: model.bundle_name.as_ref(),
                        ports: crate::ports::environment(model, ports, unit, instance),
                        environment: Some(&model.environment),
                        environment_file: environment_file.as_deref(),
                        image: unit
                            .image
                            .as_ref()
                            .map(|id| image_lines(images, id))
                            .transpose()?,
                        volumes: volume_lines(
                            images,
                            pod,
                            version,
                            &model.volumes,
                            unit.image.is_some(),
                        )?,
                        pivot: &pivot,
                    },
                )),
            );
        }
    }
    Ok(files)
}

/// What references in `unit`'s file to each of the pod's units become: the
/// installed name. A plain unit the bundle gave instances (installed as its
/// template) is referred to by its plain name still: from a unit with the
/// same instances, as the same instance (`example@%i.service`: a socket or
/// a timer of a replicated service pairs with its own instance); from any
/// other, as all of its instances (`After=example.service` waits for
/// every copy).
fn renames<'a>(model: &'a Pod, unit: &crate::bundle::Unit) -> BTreeMap<&'a str, String> {
    let (pod, version) = (&model.name, &model.version);
    let mut renames: BTreeMap<&str, String> = BTreeMap::new();
    for u in &model.units {
        let installed = installed_name(pod, version, &u.name);
        if let Some(plain) = &u.shipped_as {
            let same = unit.name.is_template() && unit.instances == u.instances;
            let as_plain = if same {
                let (stem, suffix) = split(&installed);
                format!("{stem}%i.{suffix}")
            } else {
                runnable(pod, version, u).join(" ")
            };
            renames.insert(plain.as_str(), as_plain);
        }
        renames.insert(u.name.as_str(), installed);
    }
    renames
}

/// Everything the unit directory should hold for a pod in `state`, with
/// `started` saying whether the current version starts at boot.
pub fn desired(
    pod: &PodName,
    state: &PodState,
    started: bool,
    unit_dir: &Path,
    store: &Store,
) -> Result<Files, UnitsError> {
    let mut files = Files::new();
    if state.versions.is_empty() {
        return Ok(files);
    }
    for (version, stored) in &state.versions {
        let env_file = stored
            .environment
            .as_ref()
            .map(|_| store.environment_path(pod, version));
        files.extend(version_files(
            &stored.record.pod,
            &stored.units,
            env_file.as_deref(),
            Images {
                store,
                runtime: stored.record.runtime,
            },
            &stored.record.ports,
        )?);
    }
    files.insert(
        PathBuf::from(target_name(pod)),
        Entry::File(target(pod, state)),
    );
    let mut slice = pod_header(pod);
    slice.push_str(&format!("[Unit]\nDescription=ops pod {pod}\n"));
    files.insert(PathBuf::from(slice_name(pod)), Entry::File(slice));
    let boot = match &state.idle {
        Some(idle) => {
            files.extend(idle_files(pod, idle, unit_dir, store)?);
            Some(idle_target_name(pod))
        }
        None => (started && state.current.is_some()).then(|| target_name(pod)),
    };
    if let Some(boot) = boot {
        files.insert(
            Path::new(&format!("{BOOT_TARGET}.wants")).join(&boot),
            Entry::Link(unit_dir.join(&boot)),
        );
    }
    Ok(files)
}

/// The pod's target: it wants the start units of every version, whichever
/// is current (their pivot condition lets the current version's start,
/// and no other's), so that moving `current` leaves it as it is.
fn target(pod: &PodName, state: &PodState) -> String {
    let mut text = pod_header(pod);
    text.push_str(&format!(
        "[Unit]\nDescription=ops pod {pod} (its current version)\n"
    ));
    let wants: Vec<String> = (state.versions.iter())
        .flat_map(|(version, stored)| {
            (stored.record.pod.units.iter())
                .filter(|u| u.start)
                .flat_map(move |u| runnable(pod, version, u))
        })
        .collect();
    if !wants.is_empty() {
        text.push_str(&format!("Wants={}\n", wants.join(" ")));
    }
    text.push_str(&format!("\n[Install]\nWantedBy={BOOT_TARGET}\n"));
    text
}

/// Whether a change to the unit directory changes how a running unit
/// runs: a drop-in whose only change is its pivot condition (the marker
/// written for a version an older ops staged) does not, since systemd
/// tests conditions only when a unit starts.
pub fn reconfigures(change: &Change) -> bool {
    let is_dropin = change.path.file_name().is_some_and(|n| n == DROPIN);
    match (&change.before, &change.after) {
        (Some(Entry::File(before)), Some(Entry::File(after))) if is_dropin => {
            let rest = |text: &str| -> String {
                (text.split_inclusive('\n'))
                    .filter(|line| !line.starts_with(PIVOT_KEY))
                    .collect()
            };
            rest(before) != rest(after)
        }
        _ => true,
    }
}

/// The units of an idle pod: its sockets, their waker and the target that
/// arms them (see the module's header).
fn idle_files(
    pod: &PodName,
    idle: &IdleRecord,
    unit_dir: &Path,
    store: &Store,
) -> Result<Files, UnitsError> {
    let mut files = Files::new();
    let target = idle_target_name(pod);
    let waker = waker_name(pod);
    let sockets: Vec<String> = idle
        .ports
        .iter()
        .map(|p| wake_socket_name(pod, *p))
        .collect();
    let mut text = pod_header(pod);
    text.push_str(&format!(
        "[Unit]\nDescription=ops pod {pod} idle: a connection wakes version {}\nWants={}\n",
        idle.version,
        sockets.join(" ")
    ));
    text.push_str(&format!("\n[Install]\nWantedBy={BOOT_TARGET}\n"));
    files.insert(PathBuf::from(&target), Entry::File(text));
    for (port, socket) in idle.ports.iter().zip(&sockets) {
        let mut text = pod_header(pod);
        // PartOf: stopping the idle target closes every socket. The waker
        // is not part of it: it stops the target itself.
        text.push_str(&format!(
            "[Unit]\nDescription=ops pod {pod} idle: wake on port {port}\nPartOf={target}\n\n\
             [Socket]\n{}Service={waker}\n",
            listen_lines(*port, idle.addresses.get(port))
        ));
        files.insert(PathBuf::from(socket), Entry::File(text));
    }
    let program = unit_path("waker", &store.waker_path())?;
    let root = unit_path("store root", store.root())?;
    let units = unit_path("unit directory", unit_dir)?;
    // The version's start timeout, and time to stop the sockets, reload
    // systemd and wait for the store's lock.
    let timeout = idle.start_timeout + idle.min_up_time + 300;
    let mut text = pod_header(pod);
    text.push_str(&format!(
        "[Unit]\nDescription=ops pod {pod}: wake it (a connection came to an idle port)\n\n\
         [Service]\nType=oneshot\nExecStart={program} --wake --root {root} --unit-dir {units} \
         --pod {pod}\nTimeoutStartSec={timeout}\n"
    ));
    files.insert(PathBuf::from(&waker), Entry::File(text));
    Ok(files)
}

/// Where a wake socket listens: the addresses its version listened on, or
/// every address. FreeBind: an address not configured yet at boot (the
/// sockets start before the network is up) is bound all the same.
fn listen_lines(port: u16, addresses: Option<&Vec<std::net::IpAddr>>) -> String {
    match addresses {
        Some(addresses) if !addresses.is_empty() => {
            let mut lines: String = (addresses.iter())
                .map(|a| format!("ListenStream={}\n", std::net::SocketAddr::new(*a, port)))
                .collect();
            lines.push_str("FreeBind=yes\n");
            lines
        }
        _ => format!("ListenStream={port}\n"),
    }
}

/// A file of the unit directory named like one of the pod's, read only if
/// it is a regular file reached without a link: a FIFO there must not
/// block the run, and a link planted there is not read as ops's own.
fn read_text(path: &Path) -> Result<Option<String>, FsError> {
    match crate::atomic::read_own(path, MAX_UNIT_TEXT) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at("read", path),
    }
}

/// The files in `unit_dir` that ops wrote for `pod`.
pub fn owned(pod: &PodName, unit_dir: &Path) -> Result<Files, FsError> {
    let mut files = Files::new();
    let entries = match fs::read_dir(unit_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e).at("read", unit_dir),
    };
    for entry in entries {
        let entry = entry.at("read", unit_dir)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !is_pod_path(pod, &name) {
            continue;
        }
        let file_type = entry.file_type().at("read", &entry.path())?;
        let relative = if file_type.is_dir() && name.ends_with(".d") {
            Path::new(&name).join(DROPIN)
        } else if file_type.is_file() {
            PathBuf::from(&name)
        } else {
            continue;
        };
        if let Some(text) = read_text(&unit_dir.join(&relative))? {
            if is_owned(pod, &text) {
                files.insert(relative, Entry::File(text));
            }
        }
    }
    for boot in [target_name(pod), idle_target_name(pod)] {
        let link = Path::new(&format!("{BOOT_TARGET}.wants")).join(&boot);
        if let Ok(target) = fs::read_link(unit_dir.join(&link)) {
            if target.file_name().and_then(|n| n.to_str()) == Some(boot.as_str()) {
                files.insert(link, Entry::Link(target));
            }
        }
    }
    Ok(files)
}

/// Whether a name in the unit directory is of the shape of pod `pod`'s
/// (whether ops wrote it is its header's to say, which names the pod
/// exactly): a version's unit, the pod's target or slice, or one of its
/// idle units. The version prefix `<pod>-` also catches pod `<pod>-x`'s
/// units; their headers name that pod, so they are never taken.
pub fn is_pod_path(pod: &PodName, name: &str) -> bool {
    name.starts_with(&format!("{pod}-"))
        || is_idle_unit(pod, name)
        || name == target_name(pod)
        || name == slice_name(pod)
}

/// The directories of the unit directory where ops writes files of pod
/// `pod`: the unit directory, the boot target's `.wants`, the pod's
/// drop-in directories.
fn pod_dirs(pod: &PodName, unit_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![
        unit_dir.to_owned(),
        unit_dir.join(format!("{BOOT_TARGET}.wants")),
    ];
    if let Ok(entries) = fs::read_dir(unit_dir) {
        dirs.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter(|e| e.file_name().to_str().is_some_and(|n| is_pod_path(pod, n)))
                .map(|e| e.path()),
        );
    }
    dirs
}

/// Whether a run killed half-way left something in the unit directory
/// for pod `pod` (see [`sweep_leftovers`]).
pub fn has_leftovers(pod: &PodName, unit_dir: &Path) -> bool {
    pod_dirs(pod, unit_dir)
        .iter()
        .skip(2)
        .any(|d| is_empty_dir(d))
        || pod_dirs(pod, unit_dir)
            .iter()
            .any(|d| atomic::has_stale_temps(d))
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

/// Remove what runs killed half-way left in the unit directory for pod
/// `pod`: temporaries (see [`atomic::remove_stale_temps`]) beside its unit
/// files, in its drop-in directories and beside its boot links (only
/// those of processes that are gone, so a run of another store writing
/// this directory keeps its own), and its drop-in directories left empty
/// (killed between removing the drop-in and its directory, a run no longer
/// sees the directory as the pod's). Under the store's lock: an empty
/// drop-in directory may be a live run's of the same pod, about to be
/// written.
pub fn sweep_leftovers(pod: &PodName, unit_dir: &Path) -> Result<usize, FsError> {
    let mut removed = 0;
    for (i, dir) in pod_dirs(pod, unit_dir).into_iter().enumerate() {
        removed += atomic::remove_stale_temps(&dir)?;
        if i >= 2 && is_empty_dir(&dir) && atomic::remove_dir_if_empty(&dir)? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The boot links of pod `pod`: its target's (started) and its idle
/// target's (idle).
pub fn boot_links(pod: &PodName) -> [PathBuf; 2] {
    [target_name(pod), idle_target_name(pod)]
        .map(|t| Path::new(&format!("{BOOT_TARGET}.wants")).join(t))
}

/// One change to the unit directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: PathBuf,
    pub before: Option<Entry>,
    pub after: Option<Entry>,
}

/// What turns `from` into `to`, in the order to carry it out: what a boot
/// starts (the pod's targets and their enablement) is written last, once
/// the units it wants are whole on disk. A power cut half-way through
/// then boots the old version, or a whole new one, never a target that
/// wants unit files not yet written (found by tests/reliability/power).
pub fn changes(from: &Files, to: &Files) -> Vec<Change> {
    let mut out = unordered_changes(from, to);
    // Stable: writes (targets last), then removals, each in path order.
    let boots = |c: &Change| c.path.extension().is_some_and(|e| e == "target");
    out.sort_by_key(|c| (c.after.is_none(), c.after.is_some() && boots(c)));
    out
}

fn unordered_changes(from: &Files, to: &Files) -> Vec<Change> {
    let mut out = Vec::new();
    for (path, entry) in to {
        if from.get(path) != Some(entry) {
            out.push(Change {
                path: path.clone(),
                before: from.get(path).cloned(),
                after: Some(entry.clone()),
            });
        }
    }
    for (path, entry) in from {
        if !to.contains_key(path) {
            out.push(Change {
                path: path.clone(),
                before: Some(entry.clone()),
                after: None,
            });
        }
    }
    out
}

/// Carry out `changes` in `unit_dir` (what runs cut short left there is
/// swept first, by [`sweep_leftovers`]).
pub fn apply(unit_dir: &Path, changes: &[Change]) -> Result<(), FsError> {
    for change in changes {
        let path = unit_dir.join(&change.path);
        match &change.after {
            Some(entry) => {
                if let Some(parent) = path.parent() {
                    atomic::create_dir_all(parent, 0o755)?;
                }
                match entry {
                    Entry::File(text) => atomic::write_file(&path, text.as_bytes(), 0o644)?,
                    Entry::Link(target) => atomic::write_symlink(&path, target)?,
                }
            }
            None => {
                atomic::remove_file(&path)?;
                // A drop-in directory ops created goes with its drop-in.
                if let Some(parent) = path
                    .parent()
                    .filter(|p| p.extension().is_some_and(|e| e == "d"))
                {
                    atomic::remove_dir_if_empty(parent)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Unit;
    use crate::records::unit_syntax::MAX_ASSIGNMENT;

    fn pod() -> PodName {
        PodName::parse("shop").unwrap()
    }

    #[test]
    fn installed_names_carry_pod_and_version() {
        let v = Version::parse("7").unwrap();
        let unit = Unit {
            name: UnitName::parse("web@.service").unwrap(),
            file: PathBuf::from("web@.service"),
            instances: vec!["1".into(), "8080".into()],
            start: true,
            image: None,
            instance_ports: false,
            shipped_as: None,
            uri: None,
        };
        assert_eq!(
            installed_name(&pod(), &v, &unit.name),
            "shop-7-web@.service"
        );
        assert_eq!(
            runnable(&pod(), &v, &unit),
            ["shop-7-web@1.service", "shop-7-web@8080.service"]
        );
        assert_eq!(
            slice_name(&PodName::parse("my-shop").unwrap()),
            "ops-my\\x2dshop.slice"
        );
    }

    fn unit(name: &str, instances: &[&str], shipped_as: Option<&str>) -> Unit {
        Unit {
            name: UnitName::parse(name).unwrap(),
            file: PathBuf::from(name),
            instances: instances.iter().map(|i| i.to_string()).collect(),
            start: true,
            image: None,
            instance_ports: false,
            shipped_as: shipped_as.map(|s| UnitName::parse(s).unwrap()),
            uri: None,
        }
    }

    /// `example.service` given instances is installed as
    /// `shop-7-example@.service`; the pod's files still say
    /// `example.service`.
    #[test]
    fn references_to_a_replicated_plain_unit_name_its_instances() {
        let example = unit(
            "example@.service",
            &["8080", "8081"],
            Some("example.service"),
        );
        let socket = unit("example@.socket", &["8080", "8081"], Some("example.socket"));
        let other = unit("report.service", &[], None);
        let model = Pod {
            name: pod(),
            bundle_name: None,
            version: Version::parse("7").unwrap(),
            units: vec![example.clone(), socket.clone(), other.clone()],
            images: vec![],
            volumes: vec![],
            ports: vec![],
            environment: BTreeMap::new(),
        };
        let text = "[Unit]\nAfter=example.service example.socket\n";
        // From a unit with the same instances: the same instance.
        assert_eq!(
            rewrite_references(text, &renames(&model, &socket)),
            "[Unit]\nAfter=shop-7-example@%i.service shop-7-example@%i.socket\n"
        );
        // From any other: every instance.
        assert_eq!(
            rewrite_references(text, &renames(&model, &other)),
            "[Unit]\nAfter=shop-7-example@8080.service shop-7-example@8081.service \
             shop-7-example@8080.socket shop-7-example@8081.socket\n"
        );
        // The template's own name and its instances keep working.
        assert_eq!(
            rewrite_references(
                "[Unit]\nWants=example@8081.service\n",
                &renames(&model, &other)
            ),
            "[Unit]\nWants=shop-7-example@8081.service\n"
        );
    }

    #[test]
    fn references_to_sibling_units_follow_the_rename() {
        let renames = BTreeMap::from([
            ("db.service", "shop-7-db.service".to_owned()),
            ("web@.service", "shop-7-web@.service".to_owned()),
        ]);
        let text = "[Unit]\nAfter=network.target db.service\nWants=web@8080.service  other.service\nDescription=db.service is kept\n[Service]\nExecStart=/bin/true db.service\n";
        assert_eq!(
            rewrite_references(text, &renames),
            "[Unit]\nAfter=network.target shop-7-db.service\nWants=shop-7-web@8080.service  other.service\nDescription=db.service is kept\n[Service]\nExecStart=/bin/true db.service\n"
        );
    }

    #[test]
    fn ownership_is_by_header_and_exact_pod_name() {
        let shop = pod();
        let other = PodName::parse("shop.eu").unwrap();
        let text = version_header(&other, &Version::parse("1").unwrap());
        assert!(is_owned(&other, &text));
        assert!(!is_owned(&shop, &text));
        assert!(is_owned(&shop, &pod_header(&shop)));
        assert!(!is_owned(&shop, "[Unit]\n"));
    }

    #[test]
    fn references_on_continued_lines_follow_the_rename() {
        let renames = BTreeMap::from([
            ("db.service", "shop-7-db.service".to_owned()),
            ("web@.service", "shop-7-web@.service".to_owned()),
        ]);
        for key in UNIT_LIST_KEYS {
            let text = format!(
                "[Unit]\n{key}=network.target \\\n  # a comment systemd skips\n; db.service\n\tdb.service\\\n web@1.service \\\r\n  other.service\n"
            );
            assert_eq!(
                rewrite_references(&text, &renames),
                format!(
                    "[Unit]\n{key}=network.target \\\n  # a comment systemd skips\n; db.service\n\tshop-7-db.service\\\n shop-7-web@1.service \\\r\n  other.service\n"
                ),
                "{key}"
            );
        }
        // The key itself continued; a CR or NUL ends a line as a newline
        // does; an even number of backslashes does not continue.
        assert_eq!(
            rewrite_references(
                "Wants\\\n=db.service\rAfter=db.service\0Wants=x.service\\\\\ndb.service\n",
                &renames
            ),
            "Wants\\\n=shop-7-db.service\rAfter=shop-7-db.service\0Wants=x.service\\\\\ndb.service\n"
        );
        // A comment line does not start a continuation, and a continued
        // setting of another key keeps its words.
        assert_eq!(
            rewrite_references(
                "# Wants=db.service \\\nAfter=db.service\nExecStart=/bin/echo \\\n  db.service\n",
                &renames
            ),
            "# Wants=db.service \\\nAfter=shop-7-db.service\nExecStart=/bin/echo \\\n  db.service\n"
        );
    }

    /// What systemd makes of one `Environment="..."` line: the quoted word
    /// with C escapes, then `%%` to `%` (the escapes ops writes).
    fn systemd_environment(line: &str) -> String {
        let word = line
            .strip_prefix("Environment=\"")
            .and_then(|l| l.strip_suffix("\"\n"))
            .expect("one quoted word on one line");
        let mut out = String::new();
        let mut chars = word.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next().expect("an escape") {
                    'x' => {
                        let hex: String = chars.by_ref().take(2).collect();
                        out.push(char::from(u8::from_str_radix(&hex, 16).unwrap()));
                    }
                    c @ ('\\' | '"') => out.push(c),
                    c => panic!("unexpected escape \\{c}"),
                },
                '"' => panic!("an unescaped quote ends the word"),
                c => out.push(c),
            }
        }
        out.replace("%%", "%")
    }

    const HOSTILE: &[&str] = &[
        "a\rExecStartPre=/bin/touch /tmp/pwned\rb",
        "a\nUser=nobody\nb",
        "x\r\ny",
        "\tt\x0b\x0c\x1b[31m\x7f",
        "50% %n %%i",
        "$HOME ${PATH} `id`",
        "a\\b\\nc\\x41\\",
        "\"dq\" 'sq' \\\" \\'",
        "ends with a backslash\\",
        "  lead and trail  ",
        "héllo ☃ 𝄞 \u{2028} \u{85}",
        "#not a comment ;x",
        "",
    ];

    #[test]
    fn environment_values_are_quoted_for_systemd() {
        assert_eq!(
            environment_assignment("A", "50% \"x\" \\ y\r\n"),
            "Environment=\"A=50%% \\\"x\\\" \\\\ y\\x0d\\x0a\"\n"
        );
        let every_control: String = (1u8..0x20).chain([0x7f]).map(char::from).collect();
        for value in HOSTILE.iter().copied().chain([every_control.as_str()]) {
            let line = environment_assignment("A", value);
            // One line, with nothing systemd could take for a line end.
            assert!(
                !line
                    .trim_end_matches('\n')
                    .contains(|c: char| c.is_ascii_control()),
                "{line:?}"
            );
            assert_eq!(
                systemd_environment(&line),
                format!("A={value}"),
                "{value:?}"
            );
        }
    }

    /// What systemd makes of an environment file ops wrote: in double
    /// quotes only `\\` and `\"` are escapes.
    fn systemd_environment_file(file: &[u8]) -> BTreeMap<String, String> {
        let text = std::str::from_utf8(file).unwrap();
        let mut out = BTreeMap::new();
        let mut rest = text.split_once('\n').unwrap().1;
        while let Some((name, value)) = rest.split_once("=\"") {
            let mut v = String::new();
            let mut chars = value.char_indices();
            let end = loop {
                match chars.next().expect("a closing quote") {
                    (_, '\\') => v.push(chars.next().unwrap().1),
                    (i, '"') => break i,
                    (_, c) => v.push(c),
                }
            };
            out.insert(name.to_owned(), v);
            rest = value[end + 1..]
                .strip_prefix('\n')
                .expect("one variable a line");
        }
        out
    }

    #[test]
    fn environment_files_keep_every_value() {
        let env: BTreeMap<String, String> = HOSTILE
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("V{i}"), (*v).to_owned()))
            .collect();
        let file = environment_file(&env);
        assert_eq!(systemd_environment_file(&file), env);
        let mut names: Vec<String> = env.keys().cloned().collect();
        names.sort();
        assert_eq!(environment_names(&file), names);
    }

    #[test]
    fn values_no_environment_can_hold_are_refused_without_showing_them() {
        assert!(check_env_value("A", "a\r\n\t\x01%$\\\"'").is_ok());
        let nul = check_env_value("A", "sec\0ret").unwrap_err();
        assert!(nul.contains("NUL") && !nul.contains("sec"), "{nul}");
        let longest = "x".repeat(MAX_ASSIGNMENT - 2);
        assert!(check_env_value("A", &longest).is_ok());
        let long = check_env_value("A", &format!("{longest}y")).unwrap_err();
        assert!(long.contains("too long") && !long.contains("xy"), "{long}");
    }

    #[test]
    fn paths_systemd_would_misread_are_refused() {
        assert_eq!(
            unit_path("store path", Path::new("/var/lib/ops%n/é")).unwrap(),
            "/var/lib/ops%%n/é"
        );
        for bad in [
            "/a b", "/a\nb", "/a\rb", "/a\tb", "/a:b", "/a\"b", "/a'b", "/a\\b", "/a\x01b",
        ] {
            let e = unit_path("store path", Path::new(bad))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("store path {bad:?} cannot be written")),
                "{e}"
            );
        }
    }

    #[test]
    fn what_boots_the_pod_is_written_after_the_units_it_wants() {
        // A power cut between the two booted a target whose units were not
        // on disk yet: nothing of the pod ran (tests/reliability/power).
        let file = |t: &str| Entry::File(t.to_owned());
        let from = Files::from([
            (
                "ops-shop.target".into(),
                file("Wants=shop-1-web@1.service\n"),
            ),
            ("shop-1-web@.service".into(), file("[Service]\n")),
        ]);
        let to = Files::from([
            (
                "multi-user.target.wants/ops-shop.target".into(),
                Entry::Link("/u/ops-shop.target".into()),
            ),
            ("ops-shop.slice".into(), file("[Unit]\n")),
            (
                "ops-shop.target".into(),
                file("Wants=shop-2-web@1.service\n"),
            ),
            ("shop-2-web@.service".into(), file("[Service]\n")),
            (
                "shop-2-web@1.service.d/50-ops.conf".into(),
                file("[Service]\n"),
            ),
        ]);
        let order: Vec<_> = changes(&from, &to)
            .iter()
            .map(|c| (c.path.display().to_string(), c.after.is_some()))
            .collect();
        let expected = [
            ("ops-shop.slice", true),
            ("shop-2-web@.service", true),
            ("shop-2-web@1.service.d/50-ops.conf", true),
            ("multi-user.target.wants/ops-shop.target", true),
            ("ops-shop.target", true),
            ("shop-1-web@.service", false),
        ];
        assert_eq!(order, expected.map(|(p, w)| (p.to_owned(), w)));
    }

    /// Pod shop as stored with `versions` (each a `web@.service` of
    /// instances 1 and 2 and a `tick.timer`), `current` current.
    fn stored(versions: &[&str], current: Option<&str>) -> PodState {
        let mut state = PodState::default();
        for (i, version) in versions.iter().enumerate() {
            let version = Version::parse(version).unwrap();
            let pod = Pod {
                name: pod(),
                bundle_name: None,
                version: version.clone(),
                units: vec![
                    unit("web@.service", &["1", "2"], None),
                    unit("tick.timer", &[], None),
                ],
                images: vec![],
                volumes: vec![],
                ports: vec![],
                environment: BTreeMap::new(),
            };
            let record = crate::store::VersionRecord {
                format: crate::store::META_FORMAT,
                sequence: i as u64 + 1,
                deployed_at: 0,
                digest: String::new(),
                pod,
                runtime: Runtime::default(),
                ports: vec![],
            };
            let units = BTreeMap::new();
            let stored = crate::store::StoredVersion {
                record,
                units,
                environment: None,
            };
            state.versions.insert(version, stored);
        }
        state.current = current.map(|c| Version::parse(c).unwrap());
        state
    }

    fn text_of(files: &Files, path: &str) -> String {
        match files.get(Path::new(path)) {
            Some(Entry::File(text)) => text.clone(),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn the_target_wants_every_version_and_is_the_same_whichever_is_current() {
        let store = Store::new(Path::new("/var/lib/ops"));
        let unit_dir = Path::new("/etc/systemd/system");
        let files = |current| {
            desired(
                &pod(),
                &stored(&["1", "2"], current),
                true,
                unit_dir,
                &store,
            )
            .unwrap()
        };
        let target = text_of(&files(Some("1")), "ops-shop.target");
        assert_eq!(
            target,
            "# Managed by ops (pod shop): edits are overwritten.\n[Unit]\n\
             Description=ops pod shop (its current version)\n\
             Wants=shop-1-web@1.service shop-1-web@2.service shop-1-tick.timer \
             shop-2-web@1.service shop-2-web@2.service shop-2-tick.timer\n\n\
             [Install]\nWantedBy=multi-user.target\n"
        );
        // Moving `current` (or having none) changes no file but the boot
        // link, which only a current version has.
        let mut two = files(Some("2"));
        let mut one = files(Some("1"));
        assert_eq!(one, two);
        let link = Path::new("multi-user.target.wants/ops-shop.target");
        assert!(one.remove(link).is_some() && two.remove(link).is_some());
        assert_eq!(one, files(None));
    }

    #[test]
    fn each_unit_starts_only_while_current_points_at_its_version() {
        // `%` is a specifier to systemd: written `%%`.
        let store = Store::new(Path::new("/srv/ops%n"));
        let unit_dir = Path::new("/etc/systemd/system");
        let files = desired(
            &pod(),
            &stored(&["1", "7.2-rc_1"], None),
            false,
            unit_dir,
            &store,
        )
        .unwrap();
        for (path, version) in [
            ("shop-1-web@1.service.d/50-ops.conf", "1"),
            ("shop-1-web@2.service.d/50-ops.conf", "1"),
            ("shop-1-tick.timer.d/50-ops.conf", "1"),
            ("shop-7.2-rc_1-web@1.service.d/50-ops.conf", "7.2-rc_1"),
            ("shop-7.2-rc_1-tick.timer.d/50-ops.conf", "7.2-rc_1"),
        ] {
            let text = text_of(&files, path);
            let line = format!(
                "[Unit]\nPartOf=ops-shop.target\n\
                 ConditionPathExists=/srv/ops%%n/pods/shop/current/is-version-{version}\n"
            );
            assert!(text.contains(&line), "{path}: {text}");
        }
        assert_eq!(
            store.pivot_path(&pod(), &Version::parse("1").unwrap()),
            Path::new("/srv/ops%n/pods/shop/current/is-version-1")
        );
    }

    #[test]
    fn the_pivot_is_written_as_systemd_reads_a_condition_and_a_line_end_refused() {
        // systemd takes a condition's path whole: spaces, quotes, `$` and
        // `:` as they are (a plain pod deploys under such a root as it did
        // before the pivot); `%` is a specifier.
        let files = |root: &str| {
            desired(
                &pod(),
                &stored(&["1"], Some("1")),
                true,
                Path::new("/etc/systemd/system"),
                &Store::new(Path::new(root)),
            )
        };
        let text = text_of(
            &files("/srv/my ops$x:'\"%").unwrap(),
            "shop-1-tick.timer.d/50-ops.conf",
        );
        assert!(
            text.contains(
                "\nConditionPathExists=/srv/my ops$x:'\"%%/pods/shop/current/is-version-1\n"
            ),
            "{text}"
        );
        let e = files("/srv/a\nb").unwrap_err().to_string();
        assert_eq!(
            e,
            "store root \"/srv/a\\nb/pods/shop/current/is-version-1\" cannot be written into a \
             systemd unit: it contains a control character, which a unit file cannot carry exactly (systemd ends a line at some)"
        );
        // What systemd would drop (its journal saying so) and start the
        // version's units without: `..`, a path too long or a component
        // too long (checked on a Store made without atomic::resolve).
        let e = files("/srv/new/../ops").unwrap_err().to_string();
        assert!(
            e.contains("\"/srv/new/../ops/pods/shop/current/is-version-1\""),
            "{e}"
        );
        assert!(
            e.contains("it holds `..`, and systemd ignores a condition"),
            "{e}"
        );
        for root in [
            format!("/{}", "a/".repeat(2040)),
            format!("/srv/{}", "a".repeat(256)),
        ] {
            let e = files(&root).unwrap_err().to_string();
            assert!(
                e.contains("it is longer than systemd takes (4095 bytes, 255 a component)"),
                "{e}"
            );
        }
        assert!(files(&format!("/srv/{}", "a".repeat(255))).is_ok());
    }

    #[test]
    fn an_instance_whose_drop_in_directory_cannot_be_named_is_refused_before_anything() {
        let store = Store::new(Path::new("/var/lib/ops"));
        let files = |stem_len: usize| {
            let mut state = stored(&["1"], Some("1"));
            let v = Version::parse("1").unwrap();
            let name = format!("{}@.service", "w".repeat(stem_len));
            state.versions.get_mut(&v).unwrap().record.pod.units = vec![unit(&name, &["1"], None)];
            desired(
                &pod(),
                &state,
                true,
                Path::new("/etc/systemd/system"),
                &store,
            )
        };
        // `shop-1-` and `@1.service` besides the stem: 17 characters. A
        // name of 254 or 255 passed, and `<name>.d` (which carries the
        // pivot) could not be made: "File name too long".
        assert!(files(253 - 17).is_ok());
        for len in [254, 255] {
            let e = files(len - 17).unwrap_err().to_string();
            assert!(
                e.contains(&format!("is {len} characters, longer than 253")),
                "{e}"
            );
        }
    }

    #[test]
    fn a_drop_in_changed_only_by_its_pivot_does_not_reconfigure_its_unit() {
        let store = Store::new(Path::new("/var/lib/ops"));
        let files = desired(
            &pod(),
            &stored(&["1"], Some("1")),
            true,
            Path::new("/etc/systemd/system"),
            &store,
        )
        .unwrap();
        let path = PathBuf::from("shop-1-web@1.service.d/50-ops.conf");
        let now = text_of(&files, "shop-1-web@1.service.d/50-ops.conf");
        // What an ops from before the pivot wrote.
        let before: String = (now.split_inclusive('\n'))
            .filter(|l| !l.starts_with("ConditionPathExists="))
            .collect();
        assert_ne!(before, now);
        let change = |before: &str, after: &str| Change {
            path: path.clone(),
            before: Some(Entry::File(before.to_owned())),
            after: Some(Entry::File(after.to_owned())),
        };
        assert!(!reconfigures(&change(&before, &now)));
        let other = now.replace("POD_VERSION=1", "POD_VERSION=2");
        assert!(reconfigures(&change(&before, &other)));
        // Any other file: a change is a change.
        let unit = Change {
            path: "shop-1-web@.service".into(),
            ..change(&before, &now)
        };
        assert!(reconfigures(&unit));
    }

    #[test]
    fn the_temporaries_a_cut_short_run_left_in_the_unit_directory_are_swept() {
        // Found by tests/reliability/power: a unit file's temporary (of a
        // process that is gone: 99999999 is above any pid_max) stayed for good.
        let dir = tempfile::tempdir().unwrap();
        let left = dir.path().join(".shop-1-web@.service.ops-tmp.99999999.8");
        std::fs::write(&left, "[Service]\n").unwrap();
        let pod = PodName::parse("shop").unwrap();
        assert_eq!(sweep_leftovers(&pod, dir.path()).unwrap(), 1);
        assert!(!left.exists());
    }
}
