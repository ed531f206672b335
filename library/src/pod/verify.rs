//! A new version's unit files checked as systemd will load them
//! (`systemd-analyze verify`), in a temporary directory outside the store,
//! so check mode checks them too; complaints told in the bundle's terms.

use std::path::{Path, PathBuf};

use super::PodError;
use crate::atomic::FsError;
use crate::bundle::{PodName, Version};
use crate::image::Runtime;
use crate::ports;
use crate::store::{NewVersion, Store};
use crate::systemd::{CommandError, Systemd};
use crate::units::{self, Files};

/// Verify the unit files of `new`, with its ports; `false` when no
/// verifier is installed.
pub(super) fn verify(
    systemd: &mut dyn Systemd,
    store: &Store,
    runtime: Runtime,
    name: &PodName,
    new: &NewVersion,
    ports: &[ports::Allocation],
) -> Result<bool, PodError> {
    let version = &new.pod.version;
    let files: Files = units::version_files(
        &new.pod,
        &new.units,
        None,
        units::Images { store, runtime },
        ports,
    )?;
    let tmp = std::env::temp_dir();
    sweep_stale(&tmp);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .tempdir_in(&tmp)
        .map_err(|e| FsError::from_io("create a directory in", &tmp, e))?;
    let top = write_copies(dir.path(), &files)?;
    let invalid = |source| PodError::Invalid {
        pod: name.clone(),
        version: version.clone(),
        source,
    };
    match systemd.verify(&top) {
        Ok(verified) => Ok(verified),
        Err(CommandError::Failed { stderr, .. }) if only_image_programs(name, new, &stderr) => {
            Ok(true)
        }
        Err(CommandError::Failed { how, stderr, .. }) => Err(invalid(CommandError::Failed {
            line: "systemd-analyze verify".to_owned(),
            how,
            stderr: in_bundle_terms(&stderr, dir.path(), name, version, &new.unit_sources),
        })),
        Err(source) => Err(invalid(source)),
    }
}

/// How the copies' directories are named: `ops-verify-<pid>-<random>`, the
/// pid saying whose each is.
const PREFIX: &str = "ops-verify-";

/// Remove the copies' directories in `tmp` of runs that are gone: a run
/// killed while verifying leaves its directory (its guard never runs).
/// Best effort: one that cannot be removed (another user's) stays.
fn sweep_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = (name.to_str())
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok());
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && pid.is_some_and(crate::atomic::is_gone) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Write `files` under `dir`; the unit files at its top, to verify.
fn write_copies(dir: &Path, files: &Files) -> Result<Vec<PathBuf>, FsError> {
    let mut top = Vec::new();
    for (path, entry) in files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|e| FsError::from_io("create", parent, e))?;
        }
        std::fs::write(&full, entry.text()).map_err(|e| FsError::from_io("write", &full, e))?;
        if path.parent() == Some(Path::new("")) {
            top.push(full);
        }
    }
    Ok(top)
}

/// systemd-analyze looks for a unit's programs on the host even when
/// RootDirectory= says they are in an image (which check mode has not even
/// imported): that one complaint, about such units, is not a fault.
///
/// A unit of an image whose id is not known yet (by URI, not downloaded in
/// check mode) runs in it too, though its drop-in cannot say where yet.
fn only_image_programs(name: &PodName, new: &NewVersion, stderr: &str) -> bool {
    let unresolved: Vec<usize> = new
        .unresolved
        .iter()
        .flat_map(|p| p.units.clone())
        .collect();
    let in_images: Vec<String> = new
        .pod
        .units
        .iter()
        .enumerate()
        .filter(|(i, u)| u.image.is_some() || unresolved.contains(i))
        .map(|(_, u)| u)
        .map(|u| {
            let installed = units::installed_name(name, &new.pod.version, &u.name);
            installed
                .split(['@', '.'])
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    !in_images.is_empty()
        && stderr.lines().filter(|l| !l.trim().is_empty()).all(|line| {
            line.contains("is not executable")
                && in_images.iter().any(|u| line.contains(u.as_str()))
        })
}

/// systemd-analyze's complaints about the copies in `dir`, told in the
/// bundle's terms: `<dir>/shop-1-web@.service:6` is the bundle's
/// `<bundle>/units/web@.service:5` (ops put one header line on top), and the
/// temporary directory is left out of the other paths (drop-ins).
fn in_bundle_terms(
    stderr: &str,
    dir: &Path,
    name: &PodName,
    version: &Version,
    sources: &std::collections::BTreeMap<crate::bundle::UnitName, String>,
) -> String {
    let mut text = stderr.to_owned();
    for (unit, file) in sources {
        let copy = format!(
            "{}/{}:",
            dir.display(),
            units::installed_name(name, version, unit)
        );
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(at) = rest.find(&copy) {
            out.push_str(&rest[..at]);
            let after = &rest[at + copy.len()..];
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            match after[..digits].parse::<u64>() {
                Ok(line) if line > 1 => {
                    out.push_str(&format!("{file}:{}", line - 1));
                    rest = &after[digits..];
                }
                _ => {
                    out.push_str(&format!("{file}:"));
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        text = out;
    }
    text.replace(&format!("{}/", dir.display()), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copies_of_a_run_that_is_gone_are_swept_and_a_live_ones_stay() {
        let tmp = tempfile::tempdir().unwrap();
        // A pid no process has (above the kernel's pid_max limit).
        let gone = tmp.path().join("ops-verify-99999999-AbC123");
        let live = tmp
            .path()
            .join(format!("ops-verify-{}-XyZ789", std::process::id()));
        let unrelated = tmp.path().join("ops-verify-AbC123");
        for dir in [&gone, &live, &unrelated] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("web.service"), "[Service]\n").unwrap();
        }
        sweep_stale(tmp.path());
        assert!(!gone.exists());
        assert!(live.exists() && unrelated.exists());
    }

    #[test]
    fn verify_complaints_name_the_bundle_file_and_its_line() {
        // Named where the bundle has it (not under units/, where the store
        // keeps its copy).
        let name = crate::records::names::UnitName::parse("web@.service").unwrap();
        let sources = [(name, "/srv/bundles/hello-1/systemd/web@.service".to_owned())].into();
        let dir = Path::new("/tmp/ops-verify-AbC123");
        let stderr = "/tmp/ops-verify-AbC123/hello-1-web@.service:6: Unknown key name 'ExecStrat' in section 'Service', ignoring.\n\
                      /tmp/ops-verify-AbC123/hello-1-web@1.service.d/50-ops.conf:3: something\n\
                      hello-1-web@i.service: Service has no ExecStart=, ExecStop=, or SuccessAction=. Refusing.";
        let shown = in_bundle_terms(
            stderr,
            dir,
            &PodName::parse("hello").unwrap(),
            &Version::parse("1").unwrap(),
            &sources,
        );
        assert_eq!(
            shown,
            "/srv/bundles/hello-1/systemd/web@.service:5: Unknown key name 'ExecStrat' in section 'Service', ignoring.\n\
             hello-1-web@1.service.d/50-ops.conf:3: something\n\
             hello-1-web@i.service: Service has no ExecStart=, ExecStop=, or SuccessAction=. Refusing."
        );
    }
}
