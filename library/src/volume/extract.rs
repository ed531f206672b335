//! A volume's archive: its digests, the look at its first bytes that tells
//! whether it can be extracted at all ([`decode::check_start`]), and its
//! extraction into a directory.
//!
//! Extraction reads and decompresses on a second thread while this one
//! creates files ([`PrefetchingReader`]), so inflating and writing overlap.
//! Decoders: flate2 on zlib-rs for gzip (the fastest inflate without C),
//! the reference libzstd, liblzma and libbz2.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256, Sha512};
use tar::Archive;

use super::VolumeError;
use crate::decode;
use crate::download::digest::{hex, read_tail, PrefetchingReader};
use crate::unpack::{self, Guarded, Policy, Route, Unpacker};

/// A digest algorithm a checksum may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

/// The `checksum` option: `sha256:<hex>` or `sha512:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    algorithm: Algorithm,
    hex: String,
}

impl Checksum {
    pub fn parse(text: &str) -> Result<Checksum, String> {
        let (algorithm, hex, len) = if let Some(h) = text.strip_prefix("sha256:") {
            (Algorithm::Sha256, h, 64)
        } else if let Some(h) = text.strip_prefix("sha512:") {
            (Algorithm::Sha512, h, 128)
        } else {
            return Err(format!(
                "{}: expected sha256:<64 hex digits> or sha512:<128 hex digits>",
                crate::records::names::shown(text)
            ));
        };
        if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{}: expected {len} hex digits after the colon",
                crate::records::names::shown(text)
            ));
        }
        Ok(Checksum {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Fail unless `digests` match.
    pub fn verify(&self, digests: &Digests, file: &str) -> Result<(), VolumeError> {
        let (name, actual) = match self.algorithm {
            Algorithm::Sha256 => ("sha256", digests.sha256.strip_prefix("sha256:")),
            Algorithm::Sha512 => ("sha512", digests.sha512.as_deref()),
        };
        let actual = actual.unwrap_or_default();
        if actual == self.hex {
            Ok(())
        } else {
            Err(VolumeError::Checksum {
                file: file.to_owned(),
                expected: format!("{name}:{}", self.hex),
                actual: format!("{name}:{actual}"),
            })
        }
    }
}

/// An archive file's digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// `sha256:<hex>`: what the volume's record keeps.
    pub sha256: String,
    /// Plain hex, computed only when a sha512 checksum asks for it.
    pub sha512: Option<String>,
    pub size: u64,
}

/// Running digests of a stream.
struct Hashes {
    sha256: Sha256,
    sha512: Option<Sha512>,
    size: u64,
}

impl Hashes {
    fn new(also: Option<Algorithm>) -> Hashes {
        Hashes {
            sha256: Sha256::new(),
            sha512: (also == Some(Algorithm::Sha512)).then(Sha512::new),
            size: 0,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        if let Some(h) = &mut self.sha512 {
            h.update(bytes);
        }
        self.size += bytes.len() as u64;
    }

    fn digests(self) -> Digests {
        Digests {
            sha256: format!("sha256:{}", hex(&self.sha256.finalize())),
            sha512: self.sha512.map(|h| hex(&h.finalize())),
            size: self.size,
        }
    }
}

/// The digests of a file read through, once its decoder is done: every
/// decoder reads to the end of the file (multi-member gzip, all zstd
/// frames, ...) or fails, so a count other than the length seen at the
/// start means the file changed while it was read.
fn read_whole(
    hashes: &Mutex<Option<Hashes>>,
    length: u64,
    shown: &str,
) -> Result<Digests, VolumeError> {
    let digests = (hashes.lock().expect("not poisoned").take())
        .expect("hashed once")
        .digests();
    if digests.size != length {
        return Err(VolumeError::Changed {
            file: shown.to_owned(),
            first: format!("{length} bytes"),
            then: format!("{} bytes", digests.size),
        });
    }
    Ok(digests)
}

/// Hash a stream, keeping its first [`decode::HEAD`] bytes for [`decode::check_start`]:
/// one read tells both whether it changed and whether it can be extracted.
pub fn digests_and_head(
    reader: &mut dyn Read,
    also: Option<Algorithm>,
) -> io::Result<(Digests, Vec<u8>)> {
    let mut hashes = Hashes::new(also);
    let mut head = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hashes.update(&buf[..n]);
                let room = decode::HEAD.saturating_sub(head.len()).min(n);
                head.extend_from_slice(&buf[..room]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((hashes.digests(), head))
}

/// The error for an archive `shown` that cannot be read or extracted: one
/// wording whether check mode found it or the extraction did.
pub fn unusable(shown: &str, source: io::Error) -> VolumeError {
    if source.kind() == io::ErrorKind::UnexpectedEof {
        VolumeError::Truncated {
            file: shown.to_owned(),
        }
    } else {
        VolumeError::Extract {
            file: shown.to_owned(),
            source,
        }
    }
}

/// The archive file, hashed as the decoder reads it (on the reading
/// thread): the digests are those of exactly the bytes extracted, with no
/// pass over the file of their own.
struct HashingFile {
    file: File,
    hashes: Arc<Mutex<Option<Hashes>>>,
}

impl Read for HashingFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Some(hashes) = self.hashes.lock().expect("not poisoned").as_mut() {
            hashes.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// The archive file at `path`, opened after checking it is a regular file:
/// what the extraction reads, and what check mode looks at.
pub fn open_archive(path: &Path) -> io::Result<File> {
    crate::atomic::open_regular(path)
}

/// What an extraction produced.
#[derive(Debug, Clone)]
pub struct Extracted {
    pub entries: u64,
    pub bytes: u64,
    /// The mode of the archive's own top entry (`./`), if it has one.
    pub top_mode: Option<u32>,
    /// The digests of the archive file, as read while extracting.
    pub digests: Digests,
}

/// An archive to extract: its file, its name in errors, and whether no
/// symlink may be followed on the way to it (see `LocalArchive`).
#[derive(Debug)]
pub struct Opened<'a> {
    pub file: &'a Path,
    pub shown: &'a str,
    pub no_links: bool,
}

/// Open the archive, refused as check mode refuses it if it does not
/// start as an archive does, before anything is written.
fn open_checked(archive: &Opened<'_>) -> io::Result<File> {
    let mut opened = if archive.no_links {
        crate::atomic::open_own(archive.file)?
    } else {
        open_archive(archive.file)?
    };
    let (head, whole) = decode::read_head(&mut opened)?;
    decode::check_start(&head, whole)?;
    opened.seek(SeekFrom::Start(0))?;
    Ok(opened)
}

/// Where an entry goes: into the volume, relative to it; the archive's
/// own top entry (`./`) is not placed but its mode read. Absolute paths
/// are refused.
fn route(path: &Path) -> io::Result<Route> {
    let name = path.display().to_string();
    if path.has_root() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("entry {name:?}: an absolute path"),
        ));
    }
    let rel = unpack::relative(path, &name)?;
    Ok(if rel.as_os_str().is_empty() {
        Route::Other
    } else {
        Route::Into(rel)
    })
}

/// Extract the archive into `dest`, an existing empty directory, under
/// `policy`; the file's sha256 (and `also`) computed on the way.
pub fn extract(
    archive: Opened<'_>,
    dest: &Path,
    policy: Policy,
    also: Option<Algorithm>,
) -> Result<Extracted, VolumeError> {
    let shown = archive.shown;
    let failed = |source: io::Error| unusable(shown, source);
    let opened = open_checked(&archive).map_err(&failed)?;
    let length = opened.metadata().map_err(&failed)?.len();
    let hashes = Arc::new(Mutex::new(Some(Hashes::new(also))));
    let hashing = HashingFile {
        file: opened,
        hashes: Arc::clone(&hashes),
    };
    let (_, decoder) =
        decode::decompressed(BufReader::with_capacity(256 << 10, hashing)).map_err(&failed)?;
    let mut prefetched = PrefetchingReader::new::<Sha256>(Box::new(decoder), false);
    let keep_setuid = policy.keep_setuid;
    // Guarded as image layers are: the tar reader holds an entry's long
    // names and PAX records in memory whole, and a few KiB of gzip can
    // make them gigabytes.
    let guarded = Guarded::new(&mut prefetched);
    let mut unpacker = Unpacker::new(dest, false)
        .with_policy(policy)
        .with_gate(guarded.gate());
    let mut top_mode = None;
    {
        let mut archive = Archive::new(guarded);
        unpacker
            .unpack(&mut archive, route, |_, entry| {
                if entry.header().entry_type().is_dir() {
                    top_mode = Some(entry.header().mode()? & 0o7777);
                }
                Ok(())
            })
            .map_err(&failed)?;
    }
    // What follows the archive's end (tar's zero blocks, padding) is read
    // too, so a damaged compressed tail is caught.
    prefetched.finish().map_err(&failed)?;
    let digests = read_whole(&hashes, length, shown)?;
    Ok(Extracted {
        entries: unpacker.result.entries,
        bytes: unpacker.result.bytes,
        top_mode: top_mode.map(|m| if keep_setuid { m } else { m & 0o777 }),
        digests,
    })
}

/// What reading an archive through found (see [`survey`]).
#[derive(Debug, Clone)]
pub struct Surveyed {
    pub entries: u64,
    pub bytes: u64,
    /// The compression, as its file name would say it (`tar.gz`).
    pub format: &'static str,
    pub digests: Digests,
}

/// Read the archive to its end as [`extract`] reads it, writing nothing:
/// every entry judged by `policy` as far as the archive alone tells (see
/// [`Unpacker::survey`]), the compressed and the tar stream read whole,
/// the file's sha256 computed on the way.
pub fn survey(archive: Opened<'_>, policy: Policy) -> Result<Surveyed, VolumeError> {
    let shown = archive.shown;
    let failed = |source: io::Error| unusable(shown, source);
    let opened = open_checked(&archive).map_err(&failed)?;
    let length = opened.metadata().map_err(&failed)?.len();
    let hashes = Arc::new(Mutex::new(Some(Hashes::new(None))));
    let hashing = HashingFile {
        file: opened,
        hashes: Arc::clone(&hashes),
    };
    let (compression, mut decoder) =
        decode::decompressed(BufReader::with_capacity(256 << 10, hashing)).map_err(&failed)?;
    // Nothing is written: the destination is never looked at.
    let mut unpacker = Unpacker::new(Path::new("/nonexistent"), false).with_policy(policy);
    {
        let guarded = Guarded::new(&mut decoder);
        unpacker = unpacker.with_gate(guarded.gate());
        let mut archive = Archive::new(guarded);
        unpacker.survey(&mut archive, route).map_err(&failed)?;
    }
    // What follows the archive's end is read too, as the extraction reads
    // it: a damaged compressed tail is caught, and one longer than the
    // extraction reads refused as it refuses it.
    read_tail(&mut decoder).map_err(&failed)?;
    drop(decoder);
    let digests = read_whole(&hashes, length, shown)?;
    Ok(Surveyed {
        entries: unpacker.result.entries,
        bytes: unpacker.result.bytes,
        format: compression.tar_suffix(),
        digests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain bundle's archive replaced by a link after validation (to a
    /// tar only root may read) is not extracted: the open refuses the
    /// link, naming it. A path a user gives (no_links false) is followed.
    #[test]
    fn an_archive_reached_through_a_link_is_refused_when_links_are_not_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = crate::atomic::resolve(tmp.path());
        let private = dir.join("private.tar");
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(6);
        header.set_mode(0o600);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, "secret", &b"hunter"[..])
            .unwrap();
        std::fs::write(&private, builder.into_inner().unwrap()).unwrap();
        let link = dir.join("conf.tar");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        let extract_with = |no_links: bool, into: &str| {
            let dest = dir.join(into);
            std::fs::create_dir(&dest).unwrap();
            let opened = Opened {
                file: &link,
                shown: "conf.tar",
                no_links,
            };
            let policy = Policy {
                contained: true,
                ..Policy::default()
            };
            (extract(opened, &dest, policy, None), dest)
        };
        let (refused, dest) = extract_with(true, "a");
        let msg = crate::ansible::error_chain(&refused.unwrap_err());
        insta::assert_snapshot!(msg.replace(&dir.display().to_string(), "<tmp>"));
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
        let (followed, dest) = extract_with(false, "b");
        followed.unwrap();
        assert_eq!(std::fs::read(dest.join("secret")).unwrap(), b"hunter");
    }

    #[test]
    fn checksums_are_parsed_strictly() {
        assert!(Checksum::parse(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(Checksum::parse(&format!("sha512:{}", "A".repeat(128))).is_ok());
        for bad in [
            "md5:00",
            "sha256:xyz",
            "sha256:",
            &format!("sha512:{}", "a".repeat(64)),
        ] {
            assert!(Checksum::parse(bad).is_err(), "{bad}");
        }
    }

    /// A tar of one file `f` whose PAX header carries `pax` bytes of
    /// comment, and `data` as its contents.
    fn tar_with(pax: usize, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        if pax > 0 {
            b.append_pax_extensions([("comment", "x".repeat(pax).as_bytes())])
                .unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, "f", data).unwrap();
        b.into_inner().unwrap()
    }

    fn extract_bytes(bytes: &[u8]) -> Result<Extracted, VolumeError> {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("a.tar");
        std::fs::write(&file, bytes).unwrap();
        let dest = t.path().join("d");
        std::fs::create_dir(&dest).unwrap();
        let policy = Policy {
            contained: true,
            ..Policy::default()
        };
        let opened = Opened {
            file: &file,
            shown: "a.tar",
            no_links: false,
        };
        extract(opened, &dest, policy, None)
    }

    #[test]
    fn a_volume_headers_are_bounded_as_an_image_layers_are() {
        if let Err(e) = extract_bytes(&tar_with(1000, b"x")) {
            panic!("{}", crate::ansible::error_chain(&e));
        }
        let err = extract_bytes(&tar_with(2 << 20, b"x")).unwrap_err();
        let msg = crate::ansible::error_chain(&err);
        assert_eq!(
            msg,
            "cannot extract a.tar: its headers (GNU long names, PAX records, sparse maps) \
             take more than 1024 KiB"
        );
    }

    #[test]
    fn a_plain_tar_cut_inside_a_file_ends_early() {
        let whole = tar_with(0, &[7u8; 100_000]);
        let err = extract_bytes(&whole[..50_000]).unwrap_err();
        let msg = crate::ansible::error_chain(&err);
        assert_eq!(msg, "a.tar ends early: it is truncated or damaged");
    }

    #[test]
    fn both_digests_come_from_one_read() {
        let d = digests_and_head(&mut &b"abc"[..], Some(Algorithm::Sha512))
            .unwrap()
            .0;
        assert_eq!(
            d.sha256,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(d.sha512.unwrap().starts_with("ddaf35a193617aba"));
        assert_eq!(d.size, 3);
    }
}
