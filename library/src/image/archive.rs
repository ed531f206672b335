//! Reading an image file in one pass: undo its compression, hash it and
//! unpack it at once, then say what it was.
//!
//! The format is told by content. An ACI is a tar with `manifest` and
//! `rootfs/`; an OCI image-layout archive has `oci-layout`, `index.json`
//! and `blobs/<alg>/<hex>`; a Docker archive has `manifest.json`, a config
//! and layer tars. Archives order these as they like (podman writes the
//! layers before the manifests that give their order), so each layer is
//! unpacked as it streams past into a directory of its own, with its
//! digests computed on the way, and the small documents are kept in
//! memory. At the end the manifests are read, every digest is checked
//! against them and against the expected id, and only then are the layers
//! merged, in order, by renames ([`unpack::overlay`]).
//!
//! What is kept in memory is bounded, whatever the archive says: each
//! document at most [`DOCUMENT_LIMIT`], all the names, links and
//! documents outside the layers at most [`KEPT_LIMIT`] in all and
//! [`MEMBER_LIMIT`] in number, and each entry's headers (long names, PAX
//! records) at most [`unpack::HEADER_LIMIT`]. Past a bound the archive is
//! refused, naming the entry.
//!
//! Everything happens in a work directory that the caller discards on
//! failure; nothing here touches the store.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufReader, Cursor, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256, Sha512};
use tar::{Archive, Entry, EntryType};

use super::{Format, ImageError};
use crate::bundle::ImageId;
use crate::decode::{self, Compression};
use crate::download::digest::{hex, HashingReader, PrefetchingReader};
use crate::unpack::{self, Guarded, LowerLink, Route, Unpacker, Whiteout};

/// The largest document (manifest, config, index) kept in memory: real
/// ones are a few KiB, a config with a long history well under 1 MiB.
pub const DOCUMENT_LIMIT: u64 = 4 << 20;
/// The most bytes of documents, file names and link targets outside the
/// layers kept in memory at once.
pub const KEPT_LIMIT: u64 = 16 << 20;
/// The most files and links outside the layers (blobs, documents,
/// aliases): a multi-platform image has a few hundred.
pub const MEMBER_LIMIT: usize = 10_000;

/// An image unpacked into a work directory.
#[derive(Debug)]
pub struct Unpacked {
    pub format: Format,
    /// The full id: `sha512-<128 hex>` or `sha256:<64 hex>`.
    pub id: String,
    /// The root filesystem, inside the work directory.
    pub rootfs: PathBuf,
    /// Bytes of file contents in the image's layers.
    pub size: u64,
    /// What an ACI says about running it.
    pub app: Option<AciApp>,
}

/// The `app` of an ACI manifest: what `podman import` turns into config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AciApp {
    #[serde(default)]
    pub exec: Vec<String>,
    #[serde(default)]
    pub environment: Vec<AciEnv>,
    #[serde(default)]
    pub ports: Vec<AciPort>,
    #[serde(default, rename = "workingDirectory")]
    pub working_directory: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AciEnv {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AciPort {
    pub name: String,
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "tcp".to_owned()
}

#[derive(Debug, Deserialize)]
struct AciManifest {
    #[serde(rename = "acKind")]
    ac_kind: String,
    #[serde(default)]
    app: Option<AciApp>,
}

/// A file of the archive other than an ACI's rootfs.
#[derive(Debug)]
enum Blob {
    /// A small document, decompressed, with the sha256 of its raw bytes.
    Document { bytes: Vec<u8>, raw: String },
    /// A layer unpacked into `dir`.
    Layer {
        dir: PathBuf,
        raw: String,
        diff: String,
        bytes: u64,
        whiteouts: Vec<Whiteout>,
        lower_links: Vec<LowerLink>,
        implied_dirs: HashSet<PathBuf>,
    },
}

impl Blob {
    fn raw(&self) -> &str {
        match self {
            Blob::Document { raw, .. } | Blob::Layer { raw, .. } => raw,
        }
    }
}

/// A layer unpacked in its own directory, to be merged onto the ones
/// below it.
#[derive(Debug)]
struct LayerTree {
    dir: PathBuf,
    /// The sha256 of the uncompressed layer (its diff id).
    diff: String,
    bytes: u64,
    whiteouts: Vec<Whiteout>,
    lower_links: Vec<LowerLink>,
    implied_dirs: HashSet<PathBuf>,
}

/// The state of the one pass over the outer archive.
#[derive(Debug)]
struct Scan<'a> {
    file: &'a str,
    work: &'a Path,
    aci_manifest: Option<Vec<u8>>,
    aci_rootfs: Option<Unpacker>,
    blobs: HashMap<String, Blob>,
    /// Symlinks and hard links among the archive's files (Docker archives
    /// link `<id>/layer.tar` to the layer file).
    aliases: HashMap<String, String>,
    layers_made: usize,
    /// Bytes of documents, names and links kept, and how many.
    kept: u64,
    members: usize,
}

/// An error reading or unpacking `file`; a file that ends too soon says so.
fn unpack_error(file: &str, source: io::Error) -> ImageError {
    if ends_early(&source) {
        ImageError::Truncated {
            file: file.to_owned(),
        }
    } else {
        ImageError::Unpack {
            file: file.to_owned(),
            source,
        }
    }
}

/// Did the bytes run out mid-archive? The tar crate says so in words
/// (`unexpected EOF during skip`, `failed to read entire block`, `failed
/// to write entire file` when an entry's data runs out) as well
/// as by error kind.
fn ends_early(error: &io::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<ureq::Error>() {
            return false;
        }
        let text = e.to_string();
        if text.contains("unexpected EOF")
            || text.contains("failed to read entire block")
            || text.contains("failed to write entire file")
        {
            return true;
        }
        if e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::UnexpectedEof)
        {
            return true;
        }
        current = e.source();
    }
    error.kind() == io::ErrorKind::UnexpectedEof
}

/// Does this block start a tar archive?
fn is_tar(head: &[u8]) -> bool {
    head.len() >= 512 && &head[257..262] == b"ustar"
}

fn read_head(stream: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    stream.take(512).read_to_end(&mut head)?;
    Ok(head)
}

/// Open a file's bytes: its compression undone, whatever it was.
fn decompress<R: Read>(reader: R) -> io::Result<(Compression, decode::Decoder<BufReader<R>>)> {
    decode::decompressed(BufReader::with_capacity(256 << 10, reader))
}

impl<'a> Scan<'a> {
    fn read_error(&self, source: io::Error) -> ImageError {
        unpack_error(self.file, source)
    }

    fn malformed(&self, what: impl Into<String>) -> ImageError {
        ImageError::Malformed {
            file: self.file.to_owned(),
            what: what.into(),
        }
    }

    fn run<R: Read>(&mut self, reader: R) -> io::Result<()> {
        let guarded = Guarded::new(reader);
        let gate = guarded.gate();
        let mut archive = Archive::new(guarded);
        let rootfs_dir = self.work.join("aci-rootfs");
        // An ACI's hard links name their targets by archive path:
        // `rootfs/bin/busybox`.
        let mut rootfs = Unpacker::new(&rootfs_dir, false)
            .with_link_base(Path::new("rootfs"))
            .with_gate(gate);
        let mut rootfs_made = false;
        let mut others: Vec<io::Error> = Vec::new();
        rootfs.unpack(
            &mut archive,
            |path| {
                let rel = unpack::relative(path, &path.display().to_string())?;
                match rel.strip_prefix("rootfs") {
                    Ok(inside) => {
                        if !rootfs_made {
                            fs::create_dir_all(&rootfs_dir)?;
                            rootfs_made = true;
                        }
                        Ok(Route::Into(inside.to_owned()))
                    }
                    Err(_) => Ok(Route::Other),
                }
            },
            |path, entry| {
                let result = self.other(path, entry);
                if let Err(e) = result {
                    others.push(e);
                }
                // Stop at the first problem.
                others.pop().map_or(Ok(()), Err)
            },
        )?;
        if rootfs_made {
            self.aci_rootfs = Some(rootfs);
        }
        Ok(())
    }

    fn other<R: Read>(&mut self, path: &Path, entry: &mut Entry<'_, R>) -> io::Result<()> {
        let name = path.display().to_string();
        let rel = unpack::relative(path, &name)?;
        let key = rel.to_string_lossy().into_owned();
        match entry.header().entry_type() {
            EntryType::Directory => Ok(()),
            EntryType::Symlink => {
                let target = entry.link_name()?.unwrap_or_default();
                let base = rel.parent().unwrap_or(Path::new(""));
                let joined = normalise(&base.join(target));
                self.keep(&name, key.len() + joined.len())?;
                self.aliases.insert(key, joined);
                Ok(())
            }
            EntryType::Link => {
                let target = normalise(&entry.link_name()?.unwrap_or_default());
                self.keep(&name, key.len() + target.len())?;
                self.aliases.insert(key, target);
                Ok(())
            }
            EntryType::Regular | EntryType::Continuous if key == "manifest" => {
                let manifest = read_document(entry, &name)?;
                self.keep(&name, key.len() + manifest.len())?;
                self.aci_manifest = Some(manifest);
                Ok(())
            }
            EntryType::Regular | EntryType::Continuous => {
                self.keep(&name, key.len())?;
                let blob = self.blob(entry, &name)?;
                if let Blob::Document { bytes, .. } = &blob {
                    self.keep_bytes(&name, bytes.len())?;
                }
                self.blobs.insert(key, blob);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Count one more member kept in memory, of `bytes` bytes.
    fn keep(&mut self, name: &str, bytes: usize) -> io::Result<()> {
        self.members += 1;
        if self.members > MEMBER_LIMIT {
            return Err(too_much(format!(
                "entry {name:?}: the archive has more than {MEMBER_LIMIT} files and links besides its layers' contents"
            )));
        }
        self.keep_bytes(name, bytes)
    }

    fn keep_bytes(&mut self, name: &str, bytes: usize) -> io::Result<()> {
        self.kept += bytes as u64;
        if self.kept > KEPT_LIMIT {
            return Err(too_much(format!(
                "entry {name:?}: the archive's documents, names and links besides its layers take more than {} MiB",
                KEPT_LIMIT >> 20
            )));
        }
        Ok(())
    }

    /// Take in one file of the archive: a layer is unpacked as it streams,
    /// anything else is kept in memory.
    fn blob<R: Read>(&mut self, entry: &mut Entry<'_, R>, name: &str) -> io::Result<Blob> {
        let mut raw = HashingReader::new::<Sha256>(entry);
        let (compression, mut stream) = decompress(&mut raw)?;
        let head = read_head(&mut stream)?;
        let blob = if is_tar(&head) {
            self.layers_made += 1;
            let dir = self.work.join("layers").join(self.layers_made.to_string());
            fs::create_dir_all(&dir)?;
            let stream = Cursor::new(head).chain(stream);
            let (unpacked, diff) = if compression == Compression::None {
                (unpack_layer(stream, &dir, name)?, None)
            } else {
                let mut hashed = HashingReader::new::<Sha256>(stream);
                let unpacked = unpack_layer(&mut hashed, &dir, name)?;
                (unpacked, Some(hashed.finish()?.0))
            };
            let raw = raw.finish()?.0;
            Blob::Layer {
                dir,
                diff: diff.unwrap_or_else(|| raw.clone()),
                raw,
                bytes: unpacked.bytes,
                whiteouts: unpacked.whiteouts,
                lower_links: unpacked.lower_links,
                implied_dirs: unpacked.implied_dirs,
            }
        } else {
            let mut bytes = head;
            (&mut stream).take(DOCUMENT_LIMIT).read_to_end(&mut bytes)?;
            if bytes.len() as u64 >= DOCUMENT_LIMIT {
                return Err(too_much(format!(
                    "{name} is neither a layer (a tar) nor a document of less than {} MiB",
                    DOCUMENT_LIMIT >> 20
                )));
            }
            drop(stream);
            Blob::Document {
                bytes,
                raw: raw.finish()?.0,
            }
        };
        Ok(blob)
    }
}

fn read_document<R: Read>(entry: &mut Entry<'_, R>, name: &str) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    entry.take(DOCUMENT_LIMIT).read_to_end(&mut bytes)?;
    if bytes.len() as u64 >= DOCUMENT_LIMIT {
        return Err(too_much(format!(
            "{name} is a document of {} MiB or more",
            DOCUMENT_LIMIT >> 20
        )));
    }
    Ok(bytes)
}

fn too_much(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn unpack_layer(stream: impl Read, dir: &Path, name: &str) -> io::Result<unpack::Unpacked> {
    let guarded = Guarded::new(stream);
    let mut unpacker = Unpacker::new(dir, true).with_gate(guarded.gate());
    unpacker
        .unpack(
            &mut Archive::new(guarded),
            |p| unpack::relative(p, &p.display().to_string()).map(Route::Into),
            |_, _| Ok(()),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("layer {name}: {e}")))?;
    Ok(unpacker.result)
}

/// `a/./b/../c` → `a/c`, as a key into the archive's files.
fn normalise(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for part in path.components() {
        match part {
            std::path::Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

/// Read an image file (`reader`, called `file` in errors) expected to be
/// image `expected`, into `work` (an empty directory).
pub fn unpack(
    reader: impl Read + Send + 'static,
    file: &str,
    expected: &ImageId,
    work: &Path,
) -> Result<Unpacked, ImageError> {
    let mut scan = Scan {
        file,
        work,
        aci_manifest: None,
        aci_rootfs: None,
        blobs: HashMap::new(),
        aliases: HashMap::new(),
        layers_made: 0,
        kept: 0,
        members: 0,
    };
    let (_, stream) = decompress(reader).map_err(|e| scan.read_error(e))?;
    // Reading, decompressing and (for an ACI, whose id is the sha512 of
    // the whole uncompressed tar) hashing happen on another thread while
    // this one unpacks. Other formats are verified by their documents'
    // digests.
    let mut prefetched =
        PrefetchingReader::new::<Sha512>(Box::new(stream), matches!(expected, ImageId::Sha512(_)));
    scan.run(&mut prefetched).map_err(|e| scan.read_error(e))?;
    let (whole_sha512, _) = prefetched.finish().map_err(|e| scan.read_error(e))?;
    let format = if scan.blobs.contains_key("index.json") && scan.blobs.contains_key("oci-layout") {
        Format::Oci
    } else if scan.blobs.contains_key("manifest.json") {
        Format::Docker
    } else if scan.aci_manifest.is_some() {
        Format::Aci
    } else {
        return Err(ImageError::NotAnImage {
            file: file.to_owned(),
        });
    };
    match (format, expected) {
        (Format::Aci, ImageId::Sha512(_)) | (Format::Oci | Format::Docker, ImageId::Sha256(_)) => {}
        _ => {
            return Err(ImageError::WrongFormat {
                file: file.to_owned(),
                format,
                id: expected.to_string(),
            })
        }
    }
    match format {
        Format::Aci => scan.finish_aci(expected, whole_sha512.unwrap_or_default()),
        Format::Oci => scan.finish_oci(expected),
        Format::Docker => scan.finish_docker(expected),
    }
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
}

#[derive(Debug, Deserialize)]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct OciManifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct ImageConfig {
    rootfs: RootfsConfig,
}

#[derive(Debug, Deserialize)]
struct RootfsConfig {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

impl Scan<'_> {
    fn parse<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<T, ImageError> {
        let Some(Blob::Document { bytes, .. }) = self.blobs.get(key) else {
            return Err(self.malformed(format!("{key} is missing")));
        };
        serde_json::from_slice(bytes).map_err(|e| self.malformed(format!("{key}: {e}")))
    }

    /// The archive file an OCI digest names, checked against its bytes.
    fn oci_blob(&self, digest: &str, what: &str) -> Result<String, ImageError> {
        let Some(hex) = digest.strip_prefix("sha256:") else {
            return Err(self.malformed(format!("{what}: unsupported digest {digest:?}")));
        };
        let key = format!("blobs/sha256/{hex}");
        let Some(blob) = self.blobs.get(&key) else {
            return Err(self.malformed(format!("{what} {digest} is not in the archive")));
        };
        if blob.raw() != hex {
            return Err(ImageError::Corrupt {
                file: self.file.to_owned(),
                what: format!("{what} ({key})"),
                expected: digest.to_owned(),
                actual: format!("sha256:{}", blob.raw()),
            });
        }
        Ok(key)
    }

    fn finish_aci(mut self, expected: &ImageId, sha512: String) -> Result<Unpacked, ImageError> {
        let ImageId::Sha512(prefix) = expected else {
            unreachable!("checked by the caller")
        };
        let id = format!("sha512-{sha512}");
        if !sha512.starts_with(prefix.as_str()) {
            return Err(ImageError::Mismatch {
                file: self.file.to_owned(),
                expected: expected.to_string(),
                actual: id,
            });
        }
        let manifest: AciManifest =
            serde_json::from_slice(self.aci_manifest.as_deref().unwrap_or_default())
                .map_err(|e| self.malformed(format!("manifest: {e}")))?;
        if manifest.ac_kind != "ImageManifest" {
            return Err(self.malformed(format!(
                "manifest: acKind is {:?}, expected \"ImageManifest\"",
                manifest.ac_kind
            )));
        }
        let Some(rootfs) = self.aci_rootfs.take() else {
            return Err(self.malformed("the ACI has no rootfs/ directory"));
        };
        let target = self.work.join("rootfs");
        fs::rename(self.work.join("aci-rootfs"), &target).map_err(|e| self.read_error(e))?;
        Ok(Unpacked {
            format: Format::Aci,
            id,
            rootfs: target,
            size: rootfs.result.bytes,
            app: Some(manifest.app.unwrap_or_default()),
        })
    }

    fn finish_oci(self, expected: &ImageId) -> Result<Unpacked, ImageError> {
        let index: OciIndex = self.parse("index.json")?;
        let mut pending = index.manifests;
        let mut manifests: Vec<OciManifest> = Vec::new();
        let mut rounds = 0;
        while let Some(desc) = pending.pop() {
            rounds += 1;
            if rounds > 64 {
                return Err(self.malformed("index.json: too many nested indexes"));
            }
            let key = self.oci_blob(&desc.digest, "manifest")?;
            if desc.media_type.contains("index") || desc.media_type.contains("manifest.list") {
                let nested: OciIndex = self.parse(&key)?;
                pending.extend(nested.manifests);
            } else {
                manifests.push(self.parse(&key)?);
            }
        }
        let want = expected.to_string();
        let Some(manifest) = manifests.iter().find(|m| m.config.digest == want) else {
            return Err(ImageError::Mismatch {
                file: self.file.to_owned(),
                expected: want,
                actual: manifests
                    .iter()
                    .map(|m| m.config.digest.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let config_key = self.oci_blob(&manifest.config.digest, "config")?;
        let config: ImageConfig = self.parse(&config_key)?;
        let mut layers = Vec::new();
        for (i, desc) in manifest.layers.iter().enumerate() {
            layers.push(self.oci_blob(&desc.digest, &format!("layer {}", i + 1))?);
        }
        self.finish_layers(want, Format::Oci, &layers, &config.rootfs.diff_ids)
    }

    fn finish_docker(self, expected: &ImageId) -> Result<Unpacked, ImageError> {
        let entries: Vec<DockerEntry> = self.parse("manifest.json")?;
        let want = expected.to_string();
        let mut found = Vec::new();
        let mut chosen = None;
        for entry in &entries {
            let key = self.resolve(&entry.config);
            let Some(blob) = self.blobs.get(&key) else {
                return Err(self.malformed(format!(
                    "manifest.json: config {} is not in the archive",
                    entry.config
                )));
            };
            let id = format!("sha256:{}", blob.raw());
            if id == want {
                chosen = Some((entry, key));
                break;
            }
            found.push(id);
        }
        let Some((entry, config_key)) = chosen else {
            return Err(ImageError::Mismatch {
                file: self.file.to_owned(),
                expected: want,
                actual: found.join(", "),
            });
        };
        let config: ImageConfig = self.parse(&config_key)?;
        let layers: Vec<String> = entry.layers.iter().map(|l| self.resolve(l)).collect();
        self.finish_layers(want, Format::Docker, &layers, &config.rootfs.diff_ids)
    }

    /// Follow the archive's own links to a file.
    fn resolve(&self, path: &str) -> String {
        let mut key = normalise(Path::new(path));
        for _ in 0..16 {
            match self.aliases.get(&key) {
                Some(target) => key = target.clone(),
                None => break,
            }
        }
        key
    }

    /// Layer `i` (`key` in the archive) unpacked: as it streamed past, or,
    /// when it was too small to look like a tar and kept as a document
    /// (an empty layer), now.
    fn layer_tree(
        &self,
        i: usize,
        key: &str,
        what: &str,
        blob: Blob,
    ) -> Result<LayerTree, ImageError> {
        let bytes = match blob {
            Blob::Layer {
                dir,
                diff,
                bytes,
                whiteouts,
                lower_links,
                implied_dirs,
                ..
            } => {
                return Ok(LayerTree {
                    dir,
                    diff,
                    bytes,
                    whiteouts,
                    lower_links,
                    implied_dirs,
                })
            }
            Blob::Document { bytes, .. } => bytes,
        };
        let (_, mut stream) = decompress(&bytes[..]).map_err(|e| self.read_error(e))?;
        let mut plain = Vec::new();
        (&mut stream)
            .take(DOCUMENT_LIMIT)
            .read_to_end(&mut plain)
            .map_err(|e| self.read_error(e))?;
        if plain.len() as u64 >= DOCUMENT_LIMIT {
            return Err(self.malformed(format!(
                "{what} is not a tar, nor a small file that decompresses to one"
            )));
        }
        let diff = hex(&Sha256::digest(&plain));
        let dir = self.work.join("layers").join(format!("small-{i}"));
        fs::create_dir_all(&dir).map_err(|e| self.read_error(e))?;
        let unpacked = unpack_layer(&plain[..], &dir, key).map_err(|e| self.read_error(e))?;
        Ok(LayerTree {
            dir,
            diff,
            bytes: unpacked.bytes,
            whiteouts: unpacked.whiteouts,
            lower_links: unpacked.lower_links,
            implied_dirs: unpacked.implied_dirs,
        })
    }

    /// Check every layer's uncompressed digest against the config, then
    /// merge them in order into `rootfs`.
    fn finish_layers(
        mut self,
        id: String,
        format: Format,
        layers: &[String],
        diff_ids: &[String],
    ) -> Result<Unpacked, ImageError> {
        if layers.len() != diff_ids.len() {
            return Err(self.malformed(format!(
                "the manifest lists {} layers but the config's rootfs.diff_ids has {}",
                layers.len(),
                diff_ids.len()
            )));
        }
        let rootfs = self.work.join("rootfs");
        let mut size = 0;
        for (i, (key, diff_id)) in layers.iter().zip(diff_ids).enumerate() {
            let what = format!("layer {} ({key})", i + 1);
            let blob = self.blobs.remove(key).ok_or_else(|| {
                self.malformed(format!("{what} is not in the archive (or is listed twice)"))
            })?;
            let layer = self.layer_tree(i, key, &what, blob)?;
            if format!("sha256:{}", layer.diff) != *diff_id {
                return Err(ImageError::Corrupt {
                    file: self.file.to_owned(),
                    what,
                    expected: diff_id.clone(),
                    actual: format!("sha256:{}", layer.diff),
                });
            }
            size += layer.bytes;
            if i == 0 {
                fs::create_dir(&rootfs).map_err(|e| self.read_error(e))?;
            }
            // The first layer too: its hard links to lower layers find
            // none, and its whiteouts hide nothing.
            unpack::overlay(
                &rootfs,
                &layer.dir,
                &layer.whiteouts,
                &layer.lower_links,
                &layer.implied_dirs,
            )
            .map_err(|e| self.read_error(io::Error::new(e.kind(), format!("layer {key}: {e}"))))?;
        }
        if layers.is_empty() {
            fs::create_dir_all(&rootfs).map_err(|e| self.read_error(e))?;
        }
        Ok(Unpacked {
            format,
            id,
            rootfs,
            size,
            app: None,
        })
    }
}

/// Find which images an OCI or Docker archive holds, without unpacking
/// it: the config digests (ids) it names, each checked against the bytes
/// of its config. Only headers and small documents are read, and an
/// uncompressed file's layers are skipped by seeking.
pub fn identify(path: &Path, file: &str) -> Result<(Format, Vec<String>), ImageError> {
    let unpack_error = |source: io::Error| unpack_error(file, source);
    let mut opened = fs::File::open(path).map_err(unpack_error)?;
    let mut head = [0u8; 8];
    let n = opened.read(&mut head).map_err(unpack_error)?;
    let plain = decode::Compression::sniff(&head[..n]) == Compression::None;
    let opened = fs::File::open(path).map_err(unpack_error)?;
    let mut docs = Scan {
        file,
        work: Path::new(""),
        aci_manifest: None,
        aci_rootfs: None,
        blobs: HashMap::new(),
        aliases: HashMap::new(),
        layers_made: 0,
        kept: 0,
        members: 0,
    };
    if plain {
        // Layers are skipped by seeking, so only headers are read between
        // entries.
        let guarded = Guarded::new(opened);
        let gate = guarded.gate();
        let mut archive = Archive::new(guarded);
        let entries = archive.entries_with_seek().map_err(unpack_error)?;
        docs.keep_documents(entries, &gate, false)
            .map_err(unpack_error)?;
    } else {
        let (_, stream) = decompress(opened).map_err(unpack_error)?;
        let guarded = Guarded::new(stream);
        let gate = guarded.gate();
        let mut archive = Archive::new(guarded);
        let entries = archive.entries().map_err(unpack_error)?;
        docs.keep_documents(entries, &gate, true)
            .map_err(unpack_error)?;
    }
    if docs.blobs.contains_key("index.json") && docs.blobs.contains_key("oci-layout") {
        let index: OciIndex = docs.parse("index.json")?;
        let mut pending = index.manifests;
        let mut ids = Vec::new();
        while let Some(desc) = pending.pop() {
            if ids.len() + pending.len() > 256 {
                return Err(docs.malformed("index.json: too many manifests"));
            }
            let key = docs.oci_blob(&desc.digest, "manifest")?;
            if desc.media_type.contains("index") || desc.media_type.contains("manifest.list") {
                pending.extend(docs.parse::<OciIndex>(&key)?.manifests);
            } else {
                let manifest: OciManifest = docs.parse(&key)?;
                docs.oci_blob(&manifest.config.digest, "config")?;
                ids.push(manifest.config.digest);
            }
        }
        Ok((Format::Oci, ids))
    } else if docs.blobs.contains_key("manifest.json") {
        let entries: Vec<DockerEntry> = docs.parse("manifest.json")?;
        let mut ids = Vec::new();
        for entry in entries {
            let key = docs.resolve(&entry.config);
            let Some(blob) = docs.blobs.get(&key) else {
                return Err(docs.malformed(format!(
                    "manifest.json: config {} is not in the archive",
                    entry.config
                )));
            };
            ids.push(format!("sha256:{}", blob.raw()));
        }
        Ok((Format::Docker, ids))
    } else if docs.aci_manifest.is_some() {
        Ok((Format::Aci, Vec::new()))
    } else {
        Err(ImageError::NotAnImage {
            file: file.to_owned(),
        })
    }
}

/// Read an OCI archive whole and check every blob (`blobs/sha256/<hex>`:
/// the layers, manifests and config) against the digest its name gives,
/// as the import checks those it uses: what [`identify`], which reads the
/// documents only, leaves to the import. The number of blobs checked.
pub fn check_blobs(path: &Path, file: &str) -> Result<usize, ImageError> {
    let unpack_error = |source: io::Error| unpack_error(file, source);
    let opened = fs::File::open(path).map_err(unpack_error)?;
    let (_, stream) = decompress(opened).map_err(unpack_error)?;
    let guarded = Guarded::new(stream);
    let gate = guarded.gate();
    let mut archive = Archive::new(guarded);
    let mut entries = archive.entries().map_err(unpack_error)?;
    let mut checked = 0;
    loop {
        gate.start();
        let next = entries.next();
        gate.stop();
        let mut entry = match next {
            None => return Ok(checked),
            Some(entry) => entry.map_err(unpack_error)?,
        };
        let name = entry.path().map_err(unpack_error)?.display().to_string();
        let key = name.trim_start_matches("./");
        let named = key
            .strip_prefix("blobs/sha256/")
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        let regular = matches!(
            entry.header().entry_type(),
            EntryType::Regular | EntryType::Continuous
        );
        let mut hashed = HashingReader::new::<Sha256>(&mut entry);
        let copied = io::copy(&mut hashed, &mut io::sink()).map_err(unpack_error)?;
        let (actual, _) = hashed.finish().map_err(unpack_error)?;
        if copied < entry.size() {
            return Err(ImageError::Truncated {
                file: file.to_owned(),
            });
        }
        match named {
            Some(hex) if regular && actual != hex => {
                return Err(ImageError::Corrupt {
                    file: file.to_owned(),
                    what: format!("blob {key}"),
                    expected: format!("sha256:{hex}"),
                    actual: format!("sha256:{actual}"),
                })
            }
            Some(_) if regular => checked += 1,
            _ => {}
        }
    }
}

/// The largest file [`identify`] reads: documents are far smaller.
const IDENTIFY_LIMIT: u64 = 1 << 20;

impl Scan<'_> {
    /// Keep the documents among `entries`, each entry's headers bounded
    /// by `gate`; `drain` reads what an entry leaves (a stream that cannot
    /// seek past it).
    fn keep_documents<R: Read>(
        &mut self,
        mut entries: tar::Entries<'_, R>,
        gate: &unpack::Gate,
        drain: bool,
    ) -> io::Result<()> {
        let mut last: Option<String> = None;
        loop {
            gate.start();
            let next = entries.next();
            gate.stop();
            let mut entry = match next {
                None => return Ok(()),
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    return Err(match last {
                        Some(last) => {
                            io::Error::new(e.kind(), format!("the entry after {last:?}: {e}"))
                        }
                        None => e,
                    })
                }
            };
            last = Some(entry.path()?.display().to_string());
            self.keep_document(&mut entry)?;
            if drain {
                io::copy(&mut entry, &mut io::sink())?;
            }
        }
    }

    fn keep_document<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> io::Result<()> {
        let path = entry.path()?.into_owned();
        let rel = unpack::relative(&path, &path.display().to_string())?;
        let key = rel.to_string_lossy().into_owned();
        match entry.header().entry_type() {
            EntryType::Symlink | EntryType::Link => self.other(&path, entry),
            EntryType::Regular | EntryType::Continuous if key == "manifest" => {
                self.aci_manifest = Some(Vec::new());
                Ok(())
            }
            EntryType::Regular | EntryType::Continuous if entry.size() <= IDENTIFY_LIMIT => {
                let mut bytes = Vec::new();
                entry.take(IDENTIFY_LIMIT).read_to_end(&mut bytes)?;
                self.keep(&path.display().to_string(), key.len() + bytes.len())?;
                let raw = hex(&Sha256::digest(&bytes));
                self.blobs.insert(key, Blob::Document { bytes, raw });
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Rewrite an ACI's `rootfs/` as a plain tar at `out` (for `podman
/// import`), hashing the ACI on the way; fails, leaving `out` for the
/// caller to discard, unless the ACI is image `expected`. Returns the full
/// id and the ACI's app.
pub fn aci_rootfs_tar(
    reader: impl Read + Send + 'static,
    file: &str,
    expected: &ImageId,
    out: &Path,
) -> Result<(String, AciApp, u64), ImageError> {
    let read_error = |source: io::Error| unpack_error(file, source);
    let ImageId::Sha512(prefix) = expected else {
        return Err(ImageError::WrongFormat {
            file: file.to_owned(),
            format: Format::Aci,
            id: expected.to_string(),
        });
    };
    let (_, stream) = decompress(reader).map_err(read_error)?;
    let mut hashed = PrefetchingReader::new::<Sha512>(Box::new(stream), true);
    let target = io::BufWriter::with_capacity(1 << 20, fs::File::create(out).map_err(read_error)?);
    let mut builder = tar::Builder::new(target);
    let rewritten = rewrite_rootfs(&mut hashed, file, &mut builder)?;
    builder
        .into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all())
        .map_err(read_error)?;
    let (sha512, _) = hashed.finish().map_err(read_error)?;
    let sha512 = sha512.unwrap_or_default();
    let id = format!("sha512-{sha512}");
    if !sha512.starts_with(prefix.as_str()) {
        return Err(ImageError::Mismatch {
            file: file.to_owned(),
            expected: expected.to_string(),
            actual: id,
        });
    }
    let app = aci_app(rewritten.manifest, rewritten.saw_rootfs, file)?;
    Ok((id, app, rewritten.size))
}

/// What the pass over an ACI found besides its root filesystem.
struct Rewritten {
    manifest: Option<Vec<u8>>,
    /// Bytes of file contents in `rootfs/`.
    size: u64,
    saw_rootfs: bool,
}

/// The pass over an ACI: its manifest kept, every `rootfs/` entry written
/// to `builder` without the `rootfs/` prefix.
fn rewrite_rootfs<W: io::Write>(
    source: &mut PrefetchingReader,
    file: &str,
    builder: &mut tar::Builder<W>,
) -> Result<Rewritten, ImageError> {
    let read_error = |source: io::Error| unpack_error(file, source);
    let mut found = Rewritten {
        manifest: None,
        size: 0,
        saw_rootfs: false,
    };
    let guarded = Guarded::new(source);
    let gate = guarded.gate();
    let mut archive = Archive::new(guarded);
    let mut entries = archive.entries().map_err(read_error)?;
    // The entry before, whose data is read to its end here rather than
    // skipped by the tar reader, so that the gate counts headers only.
    let mut previous = None;
    loop {
        if let Some(mut done) = previous.take() {
            io::copy(&mut done, &mut io::sink()).map_err(read_error)?;
        }
        gate.start();
        let next = entries.next();
        gate.stop();
        let Some(entry) = next else { break };
        let entry = previous.insert(entry.map_err(read_error)?);
        let path = entry.path().map_err(read_error)?.into_owned();
        let name = path.display().to_string();
        let rel = unpack::relative(&path, &name).map_err(read_error)?;
        if rel == Path::new("manifest") {
            found.manifest = Some(read_document(entry, &name).map_err(read_error)?);
            continue;
        }
        let Ok(inside) = rel.strip_prefix("rootfs") else {
            continue;
        };
        found.saw_rootfs = true;
        if !inside.as_os_str().is_empty() {
            found.size += rootfs_entry(entry, inside, &name, file, builder)?;
        }
    }
    Ok(found)
}

/// Write one entry of `rootfs/` at `inside`; returns its bytes of file
/// contents. A hard link names its target by archive path, so the target
/// loses the `rootfs/` prefix too.
fn rootfs_entry<R: Read, W: io::Write>(
    entry: &mut Entry<'_, R>,
    inside: &Path,
    name: &str,
    file: &str,
    builder: &mut tar::Builder<W>,
) -> Result<u64, ImageError> {
    let read_error = |source: io::Error| unpack_error(file, source);
    let mut header = entry.header().clone();
    let kind = header.entry_type();
    if !matches!(kind, EntryType::Symlink | EntryType::Link) {
        let size = if kind.is_file() { entry.size() } else { 0 };
        builder
            .append_data(&mut header, inside, &mut *entry)
            .map_err(read_error)?;
        return Ok(size);
    }
    let target = entry
        .link_name()
        .map_err(read_error)?
        .unwrap_or_default()
        .into_owned();
    let target = if kind == EntryType::Link {
        let t = unpack::relative(&target, name).map_err(read_error)?;
        match t.strip_prefix("rootfs") {
            Ok(inside) => inside.to_owned(),
            Err(_) => {
                return Err(ImageError::Malformed {
                    file: file.to_owned(),
                    what: format!(
                        "entry {name:?}: a hard link to {}, outside rootfs/",
                        t.display()
                    ),
                })
            }
        }
    } else {
        target
    };
    builder
        .append_link(&mut header, inside, target)
        .map_err(read_error)?;
    Ok(0)
}

/// The app of an ACI's manifest, once the ACI is known to be one.
fn aci_app(manifest: Option<Vec<u8>>, saw_rootfs: bool, file: &str) -> Result<AciApp, ImageError> {
    let Some(manifest) = manifest else {
        return Err(ImageError::NotAnImage {
            file: file.to_owned(),
        });
    };
    let manifest: AciManifest =
        serde_json::from_slice(&manifest).map_err(|e| ImageError::Malformed {
            file: file.to_owned(),
            what: format!("manifest: {e}"),
        })?;
    if manifest.ac_kind != "ImageManifest" || !saw_rootfs {
        return Err(ImageError::Malformed {
            file: file.to_owned(),
            what: "not an ACI: expected a manifest of acKind \"ImageManifest\" and a rootfs/ directory".into(),
        });
    }
    Ok(manifest.app.unwrap_or_default())
}
