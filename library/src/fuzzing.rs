//! Entry points for fuzzing (issue 19): each takes arbitrary bytes and
//! runs one of ops's readers of untrusted input on them, as the modules
//! do, so that a panic, a hang or an allocation out of bounds is found.
//!
//! Built with the test-only feature `fuzzing` (the `fuzz/` crate's
//! targets call these) and in the crate's own tests, which replay every
//! committed corpus file and crasher through the same functions: a fixed
//! crasher stays fixed without the fuzzing build. Never in a shipped
//! binary.
//!
//! Every reader's error is the expected answer to a bad input and is
//! dropped; what the functions assert themselves are the readers'
//! promises that an error alone would not show (the options a spec
//! accepted fit the module's type; nothing is written outside the
//! destination of an extraction).

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha512};

use crate::ansible::{args, Module};
use crate::bundle::{self, Files, ImageId};
use crate::image::archive;
use crate::modules;
use crate::unpack::Policy;
use crate::volume::extract::{self, Algorithm};

/// pod.json, in both shapes: read and validated against a bundle
/// directory holding the files of every fixture bundle (`fuzz/bundle`),
/// as a local bundle and as one on a server.
pub fn pod_json(data: &[u8]) {
    let dir = bundle_dir();
    for files in [
        Files::Bundle,
        Files::Remote { units: true },
        Files::Remote { units: false },
    ] {
        let _ = bundle::parse(dir.join(bundle::MANIFEST), dir.clone(), data, files);
    }
}

/// The directory the fuzzed pod.json is read in: canonical, as `load`
/// makes it.
fn bundle_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/bundle");
    fs::canonicalize(&dir).unwrap_or(dir)
}

/// The module arguments (the JSON Ansible hands a module): checked
/// against each module's spec, read into its options and its engine's
/// request, as the runner and the module do before anything runs.
pub fn module_args(data: &[u8]) {
    let Ok(raw) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Some(options) = options::<modules::pod::OpsPod>(&raw) {
        let _ = modules::pod::request(options);
    }
    if let Some(options) = options::<modules::image::OpsImage>(&raw) {
        let _ = modules::image::request(options);
    }
    if let Some(options) = options::<modules::volume::OpsVolume>(&raw) {
        let _ = modules::volume::request(options);
    }
    if let Some(options) = options::<modules::release::OpsRelease>(&raw) {
        let _ = modules::release::request(options);
    }
    let _ = options::<modules::facts::OpsFacts>(&raw);
}

/// The typed options of module `M`, when its spec accepts `raw`. What the
/// spec accepted must fit the options' type: the runner reports anything
/// else as an internal error, a bug.
fn options<M: Module>(raw: &Value) -> Option<M::Options> {
    let (options, _context) = args::parse(&M::SPEC, raw.clone()).ok()?;
    match serde_json::from_value(Value::Object(options)) {
        Ok(options) => Some(options),
        Err(e) => panic!(
            "the options {} accepted do not fit its type: {e}",
            M::SPEC.module
        ),
    }
}

/// A volume's archive (any compression): looked at as check mode looks
/// at it, then extracted as `ops_volume` extracts it. The input's length
/// picks the policy bits and whether a sha512 is computed too, so every
/// policy is fuzzed. Nothing may appear beside the destination.
pub fn volume_archive(data: &[u8]) {
    let (head, whole) = crate::decode::read_head(&mut &data[..]).expect("reading memory");
    let _ = crate::decode::check_start(&head, whole);
    let scratch = Scratch::new();
    let file = scratch.path().join("archive");
    let dest = scratch.path().join("data");
    fs::write(&file, data).expect("write the archive");
    fs::create_dir(&dest).expect("make the destination");
    let policy = Policy {
        contained: true,
        special_files: data.len() & 1 == 1,
        keep_setuid: data.len() & 2 == 2,
    };
    let also = (data.len() & 4 == 4).then_some(Algorithm::Sha512);
    let opened = extract::Opened {
        file: &file,
        shown: "archive",
        no_links: false,
    };
    let _ = extract::extract(opened, &dest, policy, also);
    let mut beside: Vec<_> = fs::read_dir(scratch.path())
        .expect("list the scratch directory")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    beside.sort();
    assert_eq!(beside, ["archive", "data"], "written outside the volume");
}

/// An image file (ACI, OCI or Docker archive, any compression): which
/// images it holds, as `ops_image` asks before importing, then unpacked as
/// the first of them (or, with none, as the ACI whose id the bytes have),
/// and rewritten as an ACI's root filesystem for podman.
pub fn image_archive(data: &[u8]) {
    let scratch = Scratch::new();
    let file = scratch.path().join("image");
    fs::write(&file, data).expect("write the image");
    let named = archive::identify(&file, "image")
        .ok()
        .and_then(|(_, ids)| ids.into_iter().next())
        .and_then(|id| ImageId::parse(&id).ok());
    let expected = named.unwrap_or_else(|| {
        let digest = Sha512::digest(data);
        ImageId::Sha512(digest.iter().map(|b| format!("{b:02x}")).collect())
    });
    let work = scratch.path().join("work");
    fs::create_dir(&work).expect("make the work directory");
    let _ = archive::unpack(Cursor::new(data.to_vec()), "image", &expected, &work);
    if matches!(expected, ImageId::Sha512(_)) {
        let out = scratch.path().join("rootfs.tar");
        let _ = archive::aci_rootfs_tar(Cursor::new(data.to_vec()), "image", &expected, &out);
    }
}

/// A fresh directory, removed with all an archive put in it (however
/// its modes forbid it) when dropped.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(
            tempfile::Builder::new()
                .prefix("ops-fuzz-")
                .tempdir()
                .expect("make a scratch directory"),
        )
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        writable(self.0.path());
    }
}

/// Give every directory under `dir` its owner's write and search bits, so
/// that a directory the archive made read-only can be emptied.
fn writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            writable(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every committed corpus file and crasher of `fuzz/`, replayed through
    //! its target's entry point.

    use super::*;

    /// The files of `fuzz/<kind>/<target>`.
    fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz")
            .join(kind)
            .join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries.map(|e| e.expect("an entry").path()).collect();
        files.sort();
        files
    }

    /// Every committed corpus file and crasher of `target`, through `run`.
    fn replay(target: &str, run: fn(&[u8])) {
        let corpus = inputs("corpus", target);
        assert!(
            corpus.len() >= 5,
            "fuzz/corpus/{target}: {} files, expected the committed corpus",
            corpus.len()
        );
        for file in corpus.iter().chain(&inputs("regressions", target)) {
            let data = fs::read(file).expect("read a corpus file");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} panicked", file.display());
        }
    }

    // One test per target: they replay side by side.

    #[test]
    fn the_pod_json_corpus_is_read_without_a_panic() {
        replay("pod_json", pod_json);
    }

    #[test]
    fn the_module_args_corpus_is_read_without_a_panic() {
        replay("module_args", module_args);
    }

    #[test]
    fn the_volume_archive_corpus_is_read_without_a_panic() {
        replay("volume_archive", volume_archive);
    }

    #[test]
    fn the_image_archive_corpus_is_read_without_a_panic() {
        replay("image_archive", image_archive);
    }
}
