//! Where images live in the store, and ops's record of each.
//!
//! ```text
//! <root>/images/systemd/<dir>/image.json   the record
//! <root>/images/systemd/<dir>/rootfs/      the unpacked root filesystem
//! <root>/images/podman/<dir>/image.json    the record; the image is podman's
//! ```
//!
//! `<dir>` is derived from the id alone, so a unit's `RootDirectory=` can
//! be written before the image is imported (check mode shows it): an
//! OCI/Docker image's is `sha256-<64 hex>`; an ACI's is `sha512-` and the
//! first 32 hex digits, the shortest id ops accepts (as rkt did), so every
//! accepted spelling of one ACI's id names the same directory. The record
//! holds the full id, and a request whose longer id disagrees with it is
//! refused rather than served the wrong image.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{ImageError, Runtime};
use crate::atomic::{Context as _, FsError};
use crate::bundle::ImageId;
pub use crate::records::image::{ImageRecord, RECORD_FORMAT};
use crate::store::{Store, StoreError};

/// Hex digits of an ACI id that name its directory.
const ACI_DIR_DIGITS: usize = 32;

/// The store directory name of an image id.
pub fn dir_name(id: &ImageId) -> String {
    match id {
        ImageId::Sha512(hex) => format!("sha512-{}", &hex[..ACI_DIR_DIGITS]),
        ImageId::Sha256(hex) => format!("sha256-{hex}"),
    }
}

pub fn image_dir(store: &Store, runtime: Runtime, id: &ImageId) -> PathBuf {
    store.images_dir(runtime).join(dir_name(id))
}

/// Where the systemd runtime keeps an image's root filesystem.
pub fn rootfs(store: &Store, id: &ImageId) -> PathBuf {
    image_dir(store, Runtime::Systemd, id).join("rootfs")
}

/// podman's name for an image ops imported: the id itself for OCI/Docker
/// (podman accepts an image id wherever it takes a reference); a tag for
/// an ACI, whose id podman does not know.
pub fn podman_reference(id: &ImageId) -> String {
    match id {
        ImageId::Sha512(hex) => format!("localhost/ops-aci:sha512-{}", &hex[..ACI_DIR_DIGITS]),
        ImageId::Sha256(hex) => hex.clone(),
    }
}

/// Where the image is or would be, as reported.
pub fn location(store: &Store, runtime: Runtime, id: &ImageId) -> String {
    match runtime {
        Runtime::Systemd => rootfs(store, id).display().to_string(),
        Runtime::Podman => podman_reference(id),
    }
}

/// Read the record of an image, if there is one. A record for a different
/// image under the same directory (two ACIs sharing 32 hex digits) is an
/// error, not a match.
pub fn read(
    store: &Store,
    runtime: Runtime,
    id: &ImageId,
) -> Result<Option<ImageRecord>, ImageError> {
    let path = image_dir(store, runtime, id).join("image.json");
    let Some(bytes) = crate::store::read_optional(&path).map_err(StoreError::from)? else {
        return Ok(None);
    };
    let record: ImageRecord = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if !matches(id, &record.id) {
        return Err(ImageError::Collision {
            id: id.to_string(),
            stored: record.id,
            path,
        });
    }
    Ok(Some(record))
}

/// Does a full id agree with a (possibly shortened) requested one?
pub fn matches(requested: &ImageId, full: &str) -> bool {
    match (requested, ImageId::parse(full)) {
        (ImageId::Sha512(want), Ok(ImageId::Sha512(have))) => have.starts_with(want.as_str()),
        (ImageId::Sha256(want), Ok(ImageId::Sha256(have))) => have == *want,
        _ => false,
    }
}

/// Write the record into a directory being staged.
pub fn write(dir: &Path, record: &ImageRecord) -> Result<(), FsError> {
    let mut bytes = serde_json::to_vec_pretty(record).expect("a record serialises");
    bytes.push(b'\n');
    crate::atomic::write_file(&dir.join("image.json"), &bytes, 0o644)
}

/// Every image record of a runtime.
pub fn all(store: &Store, runtime: Runtime) -> Result<Vec<ImageRecord>, ImageError> {
    let dir = store.images_dir(runtime);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::from(FsError::from_io("read", &dir, e)).into()),
    };
    let mut records = Vec::new();
    for entry in entries {
        let entry = entry.at("read", &dir).map_err(StoreError::from)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let id = name.replacen("sha256-", "sha256:", 1);
        if let Ok(id) = ImageId::parse(&id) {
            if let Some(record) = read(store, runtime, &id)? {
                records.push(record);
            }
        }
    }
    records.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(records)
}
