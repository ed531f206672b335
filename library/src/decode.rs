//! Undoing compression, told by the bytes rather than the file name.
//!
//! An ACI may be a plain tar or gzip, bzip2 or xz-compressed; OCI layers
//! are plain or gzip; a volume's archive any of those or zstd. The first
//! bytes say which, so a file called `.aci` that is really xz works and a
//! wrong extension cannot mislead.
//!
//! Also the look at an archive's first bytes ([`check_start`]) that tells,
//! without reading it whole, whether it can be read as a tar at all: check
//! mode refuses with it what the real run would refuse, for images and
//! volumes alike; and [`content_free`], which keeps an archive library's
//! error message from quoting the archive's bytes.

use std::borrow::Cow;
use std::io::{self, BufRead, Cursor, Read};

/// How a stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    /// A tar stream so compressed, as its file name's suffix says it.
    pub fn tar_suffix(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "tar.gz",
            Compression::Bzip2 => "tar.bz2",
            Compression::Xz => "tar.xz",
            Compression::Zstd => "tar.zst",
        }
    }

    /// Tell the compression from the first bytes of a stream.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A stream with its compression undone. An enum rather than a boxed
/// reader: it is `Send` exactly when its source is, so a decoder can move
/// to a reading thread.
#[allow(missing_debug_implementations)] // the bzip2 and xz decoders have none
pub enum Decoder<R: BufRead> {
    Plain(R),
    Gzip(flate2::bufread::MultiGzDecoder<R>),
    Bzip2(bzip2::bufread::MultiBzDecoder<R>),
    Xz(liblzma::bufread::XzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Bzip2(r) => r.read(buf),
            Decoder::Xz(r) => r.read(buf).map_err(xz_error),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

/// The most memory the xz decoder may take. An xz file names its own
/// dictionary size, up to 4 GiB, and liblzma (without a limit) allocates
/// it and fills it as the output grows: a 92 KB archive of 600 MB of zeros
/// whose header claims 4 GiB made an extraction hold 620 MB where a 2 MiB
/// dictionary holds 8 MB. `xz -9` needs 65 MiB; a four times larger
/// bound leaves room for hand-tuned archives. (zstd's decoder already
/// refuses a window above 128 MiB; gzip and bzip2 need a few MiB at most.)
pub const XZ_MEMORY_LIMIT: u64 = 256 << 20;

/// liblzma's error for an xz file that needs more than the limit says
/// only "memory limit reached"; say which limit and why.
fn xz_error(error: io::Error) -> io::Error {
    let over = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<liblzma::stream::Error>())
        .is_some_and(|e| matches!(e, liblzma::stream::Error::MemLimit));
    if over {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "xz: decompressing it needs more than {} MiB of memory (its dictionary is \
                 larger than any xz preset's)",
                XZ_MEMORY_LIMIT >> 20
            ),
        )
    } else {
        error
    }
}

/// A stream with its compression undone, and what it was.
pub fn decompressed<R: BufRead>(mut reader: R) -> io::Result<(Compression, Decoder<R>)> {
    let compression = Compression::sniff(reader.fill_buf()?);
    let stream = match compression {
        Compression::None => Decoder::Plain(reader),
        // Multi-member gzip files are valid gzip; one decoder reads them all.
        Compression::Gzip => Decoder::Gzip(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Bzip2 => Decoder::Bzip2(bzip2::bufread::MultiBzDecoder::new(reader)),
        Compression::Xz => Decoder::Xz(liblzma::bufread::XzDecoder::new_stream(
            reader,
            liblzma::stream::Stream::new_stream_decoder(
                XZ_MEMORY_LIMIT,
                liblzma::stream::CONCATENATED,
            )
            .map_err(io::Error::from)?,
        )),
        Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(reader)?),
    };
    Ok((compression, stream))
}

/// An error message with no bytes of the file it is about.
///
/// The tar reader parses a header's numeric fields before it checks the
/// header, and its message quotes the field and the entry name: for a file
/// that is no archive at all (a host file named by mistake, or on purpose)
/// those are the file's first bytes. A message of that form says instead
/// which field is bad; every other message is kept.
pub fn content_free(message: &str) -> Cow<'_, str> {
    // Anywhere in the message: a caller may have put the entry's name or
    // the layer before it.
    let Some(at) = message.find("numeric field ") else {
        return Cow::Borrowed(message);
    };
    let (before, tar) = message.split_at(at);
    let field = tar
        .rsplit_once(" when getting ")
        .and_then(|(_, rest)| rest.split_once(" for "))
        .map_or("a numeric", |(field, _)| field);
    Cow::Owned(match (field, before.is_empty()) {
        ("cksum", true) => {
            "it is not a tar archive: its first block is not a tar header".to_owned()
        }
        ("cksum", false) => format!("{before}a block where a tar header should be is not one"),
        _ => format!("{before}a tar header is damaged: its {field} field is not a number"),
    })
}

/// How much of an archive [`check_start`] needs at most to see its first
/// tar header: a bzip2 block, the largest unit a decoder must read whole
/// before it gives anything, holds 900 kB.
pub const HEAD: usize = 2 << 20;

/// Up to [`HEAD`] bytes from the start of `reader`, and whether that is all
/// of it.
pub fn read_head(reader: &mut dyn Read) -> io::Result<(Vec<u8>, bool)> {
    let mut head = Vec::new();
    reader.take(HEAD as u64 + 1).read_to_end(&mut head)?;
    let whole = head.len() <= HEAD;
    head.truncate(HEAD);
    Ok((head, whole))
}

/// What can be told of an archive without extracting it: its compression
/// is recognised and its start decodes, and it starts as a tar archive
/// does (an end-of-archive block, or a header whose checksum is right),
/// exactly as the extraction will read it. `head` is the start of the file
/// ([`read_head`]), `whole` says it is all of it: a start cut short by
/// [`HEAD`] is not held against the archive.
pub fn check_start(head: &[u8], whole: bool) -> io::Result<()> {
    let (compression, mut decoder) = decompressed(Cursor::new(head))?;
    let named = match compression {
        Compression::None => None,
        Compression::Gzip => Some("gzip"),
        Compression::Bzip2 => Some("bzip2"),
        Compression::Xz => Some("xz"),
        Compression::Zstd => Some("zstd"),
    };
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < block.len() {
        match decoder.read(&mut block[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The decoder ran out of the part it was given.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !whole => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(e),
            Err(e) => {
                let what = named.unwrap_or("its");
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{what} compression is damaged: {e}"),
                ));
            }
        }
    }
    let inner = if named.is_some() {
        " once decompressed"
    } else {
        ""
    };
    let not_tar = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a tar archive: {why}"),
        )
    };
    if got < block.len() {
        // Nothing at all is an empty archive to tar; a part of a block is
        // an archive cut short, unless `head` was.
        return if got == 0 || !whole {
            Ok(())
        } else {
            Err(not_tar(format!(
                "it holds {got} bytes{inner}, less than one tar header (512 bytes)"
            )))
        };
    }
    if block.iter().all(|b| *b == 0) {
        return Ok(());
    }
    let header = tar::Header::from_byte_slice(&block);
    let Ok(recorded) = header.cksum() else {
        return Err(not_tar(format!(
            "its first 512 bytes{inner} are not a tar header (no checksum where a header has one)"
        )));
    };
    let sum = block[..148]
        .iter()
        .chain(&block[156..])
        .fold(8 * u32::from(b' '), |a, b| a + u32::from(*b));
    if sum == recorded {
        Ok(())
    } else {
        Err(not_tar(format!(
            "the checksum of its first header{inner} is wrong: it is damaged, or not a tar"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn roundtrip(compressed: Vec<u8>, expected: Compression) {
        let (found, mut stream) = decompressed(&compressed[..]).unwrap();
        assert_eq!(found, expected);
        let mut out = Vec::new();
        stream.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"tar bytes".repeat(100));
    }

    #[test]
    fn every_supported_compression_is_recognised_and_undone() {
        let data = b"tar bytes".repeat(100);
        roundtrip(data.clone(), Compression::None);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        roundtrip(gz.finish().unwrap(), Compression::Gzip);
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&data).unwrap();
        roundtrip(bz.finish().unwrap(), Compression::Bzip2);
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&data).unwrap();
        roundtrip(xz.finish().unwrap(), Compression::Xz);
        roundtrip(zstd::encode_all(&data[..], 1).unwrap(), Compression::Zstd);
    }

    /// An xz file of `data` whose block header claims the dictionary size
    /// that the LZMA2 property byte `dict` encodes (40: 4 GiB - 1), as a
    /// hostile or hand-made file can: its data needs no more, so it decodes
    /// the same whatever the claim.
    fn xz_claiming(data: &[u8], dict: u8) -> Vec<u8> {
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 0);
        xz.write_all(data).unwrap();
        let mut xz = xz.finish().unwrap();
        // After the 12-byte stream header: the block header's size, its
        // flags, then the LZMA2 filter (id 0x21, one property byte).
        let size = (usize::from(xz[12]) + 1) * 4;
        assert_eq!(
            xz[13..16],
            [0, 0x21, 1],
            "an encoder that lays its block header out as expected"
        );
        xz[16] = dict;
        let mut crc = flate2::Crc::new();
        crc.update(&xz[12..12 + size - 4]);
        xz[12 + size - 4..12 + size].copy_from_slice(&crc.sum().to_le_bytes());
        xz
    }

    #[test]
    fn an_xz_file_claiming_a_larger_dictionary_than_the_limit_is_refused() {
        let data = b"tar bytes".repeat(100);
        // 64 MiB, xz -9's dictionary: read.
        roundtrip(xz_claiming(&data, 28), Compression::Xz);
        // 4 GiB: liblzma would allocate it and fill it as the output grows.
        let claiming = xz_claiming(&data, 40);
        let (_, mut stream) = decompressed(&claiming[..]).unwrap();
        let error = stream.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(
            error
                .to_string()
                .starts_with("xz: decompressing it needs more than 256 MiB of memory"),
            "{error}"
        );
    }

    #[test]
    fn a_tar_header_message_keeps_no_bytes_of_the_file() {
        let file = b"root:$6$secret:19000:0:99999:7:::\n".repeat(20);
        let error = tar::Archive::new(&file[..])
            .entries()
            .unwrap()
            .next()
            .unwrap()
            .err()
            .expect("no tar header")
            .to_string();
        assert!(
            error.contains("secret"),
            "the tar crate's own message: {error}"
        );
        assert_eq!(
            content_free(&error),
            "it is not a tar archive: its first block is not a tar header"
        );
        assert_eq!(
            content_free("numeric field was not a number: x y when getting mtime for a\nb"),
            "a tar header is damaged: its mtime field is not a number"
        );
        // Put after a caller's words too.
        let inline = format!("layer 2: the entry after \"etc/x\": {error}");
        assert_eq!(
            content_free(&inline),
            "layer 2: the entry after \"etc/x\": a block where a tar header should be is not one"
        );
        assert_eq!(
            content_free("archive header checksum mismatch"),
            "archive header checksum mismatch"
        );
    }
}
