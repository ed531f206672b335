//! `ops_pod --validate BUNDLE`: a bundle checked on any machine (a build
//! host, the controller, CI) as ops_pod checks it before it touches a host,
//! and further (`crate::pod::validate`): no store, no running systemd, no
//! root, nothing written. It prints what the bundle holds, or every
//! problem, each naming pod.json and the field; exit 0 when it is valid,
//! 1 when it is not, 2 for a wrong command line.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::bundle::{BundleError, Shape};
use crate::image::Runtime;
use crate::pod::validate::{self, Checks, Validated};
use crate::systemd::{Systemctl, Systemd};

pub(crate) const USAGE: &str = "usage: ops_pod --validate [--json] [--keyring FILE] \
[--runtime systemd|podman] [--root ROOT] BUNDLE";

pub(crate) const ABOUT: &str = "Check the bundle BUNDLE (a directory holding pod.json, or its \
pod.json) as ops_pod checks it before it deploys, on any machine and writing nothing: pod.json, \
the unit files (with systemd-analyze verify, where it is installed), each image file read whole \
and its id checked against pod.json's, each volume archive read to its end. It prints what the \
bundle holds (with --json, as JSON) and exits 0, or prints every problem, naming pod.json and \
the field, and exits 1. --keyring verifies the images' signatures (with sqv); --runtime and \
--root are ops_pod's options of the same names, which decide the unit files' drop-ins \
(defaults: systemd, /var/lib/ops).";

/// The options of `--validate`.
#[derive(Debug)]
struct Options {
    json: bool,
    bundle: PathBuf,
    checks: Checks,
}

/// Run `ops_pod --validate` with the words after `--validate`; the exit
/// code.
pub(crate) fn main(words: &[OsString]) -> i32 {
    let options = match parse(words) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("ops_pod --validate: {}\n{USAGE}", one_line(&e));
            return 2;
        }
    };
    let mut verifier = Systemctl::verifier();
    let (result, verified_by) = match &mut verifier {
        Ok(systemctl) => {
            let version = systemctl.version();
            let systemd: &mut dyn Systemd = systemctl;
            let result = validate::validate(&options.bundle, &options.checks, Ok(systemd));
            (result, format!(" (systemd {version})"))
        }
        Err(why) => (
            validate::validate(&options.bundle, &options.checks, Err(why.clone())),
            String::new(),
        ),
    };
    let (out, err, code) = match (result, options.json) {
        (Ok(found), false) => (text(&found, &verified_by), warnings(&found), 0),
        (Ok(found), true) => (
            json_text(&valid_json(&found, &verified_by)),
            String::new(),
            0,
        ),
        (Err(e), false) => (String::new(), refusal(&e), 1),
        (Err(e), true) => (json_text(&invalid_json(&e)), String::new(), 1),
    };
    // What it found goes to stdout (the module's one output channel, which
    // clippy guards, is not in use here); problems and warnings to stderr.
    let _ = std::io::stdout().write_all(out.as_bytes());
    let _ = std::io::stderr().write_all(err.as_bytes());
    code
}

fn parse(words: &[OsString]) -> Result<Options, String> {
    let mut words = words.iter().map(|w| {
        w.to_str()
            .map(str::to_owned)
            .ok_or_else(|| "arguments must be UTF-8".to_owned())
    });
    let mut json = false;
    let mut bundle = None;
    let mut checks = Checks {
        keyring: None,
        runtime: Runtime::Systemd,
        root: PathBuf::from(super::DEFAULT_ROOT),
        download_timeout: Duration::from_secs(600),
    };
    // After `--` every word is a bundle, as for any command taking paths
    // (one that starts with `-`).
    let mut options_ended = false;
    while let Some(word) = words.next().transpose()? {
        let mut value = |flag: &str| {
            words
                .next()
                .transpose()?
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match word.as_str() {
            "" => return Err("the bundle's path is empty".to_owned()),
            "--" if !options_ended => options_ended = true,
            path if options_ended && bundle.is_none() => bundle = Some(PathBuf::from(path)),
            extra if options_ended => {
                return Err(format!("one bundle at a time: {extra:?} is one too many"))
            }
            "--json" => json = true,
            "--keyring" => checks.keyring = Some(keyring(&value("--keyring")?)?),
            "--runtime" => checks.runtime = runtime(&value("--runtime")?)?,
            "--root" => {
                let root = PathBuf::from(value("--root")?);
                if !root.is_absolute() {
                    return Err(format!("--root: expected an absolute path, got {root:?}"));
                }
                checks.root = root;
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            path if bundle.is_none() => bundle = Some(PathBuf::from(path)),
            extra => return Err(format!("one bundle at a time: {extra:?} is one too many")),
        }
    }
    let bundle = bundle.ok_or("which bundle? give its directory or its pod.json")?;
    Ok(Options {
        json,
        bundle,
        checks,
    })
}

/// The keyring, a regular file: a wrong one is the command line's fault.
fn keyring(path: &str) -> Result<PathBuf, String> {
    crate::atomic::open_regular(std::path::Path::new(path))
        .map_err(|e| format!("--keyring {path}: {e}"))?;
    Ok(PathBuf::from(path))
}

fn runtime(word: &str) -> Result<Runtime, String> {
    match word {
        "systemd" => Ok(Runtime::Systemd),
        "podman" => Ok(Runtime::Podman),
        other => Err(format!(
            "--runtime: expected systemd or podman, got {other:?}"
        )),
    }
}

/// What the bundle holds, one line each, the kind first.
fn text(found: &Validated, verified_by: &str) -> String {
    let shape = match found.shape {
        Shape::Native => "native",
        Shape::Appc => "Appc",
    };
    let mut lines = vec![
        row(
            "bundle",
            format!("{} ({shape} shape): valid", found.manifest.display()),
        ),
        row("pod", &found.name),
        row("version", &found.version),
        row(
            "digest",
            found
                .digest
                .as_deref()
                .unwrap_or("unknown until ops_pod downloads the images pod.json gives no id for"),
        ),
    ];
    lines.extend(found.units.iter().map(|u| row("unit", unit_text(u))));
    lines.extend(found.images.iter().map(|i| row("image", image_text(i))));
    lines.extend(found.volumes.iter().map(|v| row("volume", volume_text(v))));
    if found.ports.is_empty() {
        lines.push(row(
            "ports",
            "none declared (each instance gets a default PORT)",
        ));
    }
    lines.extend(found.ports.iter().map(|p| {
        row(
            "port",
            match p.fixed {
                Some(port) => format!("{} {port} (fixed)", p.name),
                None => format!("{} (assigned on each host)", p.name),
            },
        )
    }));
    let verified = match found.unit_files.starts_with("verified") {
        true => format!("{}{verified_by}", found.unit_files),
        false => found.unit_files.clone(),
    };
    lines.push(row("unit files", verified));
    lines.join("\n") + "\n"
}

fn row(key: &str, value: impl AsRef<str>) -> String {
    format!("{key:<11}{}", one_line(value.as_ref()))
}

/// `text` as one line of the text output: a control character (a newline
/// in a file name in the bundle, an escape sequence) or a character that
/// reorders what a terminal shows is written escaped (`\n`, `\u{202e}`),
/// so that no name in a bundle can add a line of its own, such as a
/// second "valid", or hide part of one.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    let escaped = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{2028}' | '\u{2029}'
            )
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !text.chars().any(escaped) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match escaped(c) {
            true => out.extend(c.escape_default()),
            false => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

fn unit_text(unit: &validate::FoundUnit) -> String {
    let mut s = format!("{} ({})", unit.name, unit.file);
    if !unit.instances.is_empty() {
        s.push_str(&format!(", instances {}", unit.instances.join(" ")));
    }
    if !unit.start {
        s.push_str(", not started");
    }
    if let Some(image) = &unit.image {
        s.push_str(&format!(", in image {image}"));
    }
    s
}

fn image_text(image: &validate::FoundImage) -> String {
    let kind = match image.format {
        Some("aci") => "an ACI",
        Some("oci") => "an OCI archive",
        Some("docker") => "a Docker archive",
        _ => "by URI (not downloaded)",
    };
    let id = image.id.as_deref().unwrap_or("id unknown until downloaded");
    let mut s = format!("{} ({}): {kind}, {id}", image.field, image.source);
    if image.computed && image.id.is_some() {
        s.push_str(" (computed: pod.json gives no id)");
    }
    if let Some(signature) = &image.signature {
        let how = match image.signature_verified {
            true => "verified with the keyring",
            false => "not verified here (give --keyring, for a signature in the bundle)",
        };
        s.push_str(&format!(", signature {signature} {how}"));
    }
    s
}

fn volume_text(volume: &validate::FoundVolume) -> String {
    let mut s = format!("{} at {}", volume.name, volume.mount.display());
    if volume.read_only {
        s.push_str(" (read-only)");
    }
    match (&volume.data, &volume.sha256) {
        (None, _) => s.push_str(": empty"),
        (Some(data), Some(sha256)) => {
            let entries = volume.entries.unwrap_or_default();
            s.push_str(&format!(
                ": {data}, {} of {entries} {}, {} bytes, {sha256}",
                volume.format.unwrap_or("tar"),
                if entries == 1 { "entry" } else { "entries" },
                volume.bytes.unwrap_or_default()
            ))
        }
        (Some(data), None) => s.push_str(&format!(": {data} (by URI: its start looked at)")),
    }
    s
}

fn warnings(found: &Validated) -> String {
    found
        .warnings
        .iter()
        .map(|w| format!("ops_pod --validate: warning: {}\n", one_line(w)))
        .collect()
}

/// The error as ops_pod gives it; several problems one a line.
fn refusal(error: &BundleError) -> String {
    match error {
        BundleError::Invalid { manifest, problems } if problems.len() > 1 => {
            let mut s = format!(
                "ops_pod --validate: invalid bundle ({} problems):\n",
                problems.len()
            );
            for problem in problems {
                let line = format!("{}: {problem}", manifest.display());
                s.push_str(&format!("  {}\n", one_line(&line)));
            }
            s
        }
        other => format!(
            "ops_pod --validate: {}\n",
            one_line(&crate::ansible::error_chain(other))
        ),
    }
}

fn valid_json(found: &Validated, verified_by: &str) -> Value {
    let mut value = json!({"valid": true});
    if let Value::Object(fields) = serde_json::to_value(found).expect("plain data serialises") {
        value.as_object_mut().expect("an object").extend(fields);
    }
    if found.unit_files.starts_with("verified") {
        value["unit_files"] = json!(format!("{}{verified_by}", found.unit_files));
    }
    value
}

fn invalid_json(error: &BundleError) -> Value {
    let problems: Vec<Value> = match error {
        BundleError::Invalid { manifest, problems } => (problems.iter())
            .map(|p| json!({"file": manifest, "field": p.field, "message": p.message}))
            .collect(),
        BundleError::Read { path, .. } => {
            vec![json!({"file": path, "field": "", "message": crate::ansible::error_chain(error)})]
        }
    };
    json!({"valid": false, "msg": crate::ansible::error_chain(error), "problems": problems})
}

fn json_text(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON serialises") + "\n"
}
