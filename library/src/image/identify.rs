//! What a file to publish is: its sha256 and size (every file), and for an
//! image, its format, its full id and the name its manifest gives it.
//!
//! An ACI's id is the sha512 of its uncompressed tar, computed here in the
//! one pass that also reads its `manifest`; an OCI or Docker archive's ids
//! come from [`crate::image::archive::identify`] (each config checked
//! against its digest), the name from its `manifest.json` RepoTags or its
//! `index.json` annotations. Nothing here writes.

use std::collections::HashMap;
use std::io::{self, BufReader, Read};
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};

use super::archive;
use crate::download::digest::{hex, read_tail, HashingReader};
use crate::records::image::Format;
use crate::unpack::Guarded;

/// The sha256 (hex) and size of a file.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = crate::atomic::open_regular(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

/// An image file, identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub format: Format,
    /// Every full id the file holds (one for an ACI).
    pub ids: Vec<String>,
    /// The name its manifest gives it, last path segment, tag dropped.
    pub name: Option<String>,
}

/// The documents read on the way (each at most this big).
const DOCUMENT_LIMIT: u64 = 1 << 20;
const DOCUMENTS: &[&str] = &["manifest", "manifest.json", "index.json", "oci-layout"];

/// Read an image file (`file` names it in errors).
pub fn identify(path: &Path, file: &str) -> Result<Identified, String> {
    let bad = |e: io::Error| {
        let said = e.to_string();
        format!(
            "{file}: cannot be read as an image: {}",
            crate::decode::content_free(&said)
        )
    };
    let opened = crate::atomic::open_regular(path).map_err(bad)?;
    let (_, stream) =
        crate::decode::decompressed(BufReader::with_capacity(256 << 10, opened)).map_err(bad)?;
    let mut hashing = HashingReader::new::<Sha512>(stream);
    let docs = documents(&mut hashing).map_err(bad)?;
    // What follows the tar's end is part of an ACI's id, bounded as the
    // import bounds it: an image the import refuses is not identified.
    read_tail(&mut hashing).map_err(bad)?;
    let (sha512, _) = hashing.finish().map_err(bad)?;
    if docs.contains_key("index.json") || docs.contains_key("manifest.json") {
        let (format, ids) = archive::identify(path, file)
            .map_err(|e| format!("{file}: {}", crate::ansible::error_chain(&e)))?;
        let name = if format == Format::Oci {
            docs.get("index.json").and_then(|d| oci_name(d))
        } else {
            docs.get("manifest.json").and_then(|d| docker_name(d))
        };
        Ok(Identified { format, ids, name })
    } else if let Some(manifest) = docs.get("manifest") {
        Ok(Identified {
            format: Format::Aci,
            ids: vec![format!("sha512-{sha512}")],
            name: aci_name(manifest),
        })
    } else {
        Err(format!(
            "{file}: not an image (no ACI manifest, OCI index.json or Docker manifest.json)"
        ))
    }
}

/// The small documents at the top of the archive, by name. Read through
/// [`Guarded`], as the import reads an image: what the tar reader buffers
/// for one entry's headers (a GNU long name, PAX records) is bounded, so
/// a small compressed file cannot make it hold gigabytes.
fn documents(reader: &mut impl Read) -> io::Result<HashMap<String, Vec<u8>>> {
    let mut docs = HashMap::new();
    let guarded = Guarded::new(reader);
    let gate = guarded.gate();
    let mut archive = tar::Archive::new(guarded);
    let mut entries = archive.entries()?;
    loop {
        gate.start();
        let next = entries.next();
        gate.stop();
        let Some(entry) = next else { break };
        let mut entry = entry?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        if DOCUMENTS.contains(&path.as_str()) && entry.size() <= DOCUMENT_LIMIT {
            let mut bytes = Vec::new();
            (&mut entry).take(DOCUMENT_LIMIT).read_to_end(&mut bytes)?;
            docs.insert(path, bytes);
        }
        // Read to its end here, not skipped by the tar reader while the
        // gate counts: the gate counts headers only.
        io::copy(&mut entry, &mut io::sink())?;
    }
    Ok(docs)
}

/// `example.com/shop/app:1.2` → `app`.
fn last_segment(reference: &str) -> Option<String> {
    let last = reference.rsplit('/').next()?;
    let name = last.split([':', '@']).next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

fn aci_name(manifest: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(manifest).ok()?;
    last_segment(value.get("name")?.as_str()?)
}

fn docker_name(manifest: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(manifest).ok()?;
    let tag = value.get(0)?.get("RepoTags")?.get(0)?.as_str()?;
    last_segment(tag)
}

fn oci_name(index: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(index).ok()?;
    let annotations = value.get("manifests")?.get(0)?.get("annotations")?;
    if let Some(name) = annotations
        .get("io.containerd.image.name")
        .and_then(Value::as_str)
    {
        return last_segment(name);
    }
    // ref.name is often a tag alone ("latest"): only a reference with a
    // repository in it names the image.
    let reference = annotations
        .get("org.opencontainers.image.ref.name")?
        .as_str()?;
    if reference.contains('/') || reference.contains(':') {
        last_segment(reference)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_last_segment_without_a_tag() {
        assert_eq!(last_segment("example.com/shop/app").unwrap(), "app");
        assert_eq!(last_segment("localhost/app:1.2").unwrap(), "app");
        assert_eq!(last_segment("app@sha256:abc").unwrap(), "app");
        assert_eq!(
            aci_name(br#"{"acKind":"ImageManifest","name":"example.com/web"}"#).unwrap(),
            "web"
        );
        assert_eq!(
            docker_name(br#"[{"RepoTags":["localhost/shop:2"]}]"#).unwrap(),
            "shop"
        );
        assert_eq!(
            oci_name(br#"{"manifests":[{"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}"#),
            None
        );
    }
}
