//! Where an image or a volume's data comes from: a path on the host, or
//! an `http`, `https` or `file` URI ([`Location`]); reading it, fetching it
//! into a file, and hashing it as it arrives ([`digest`]). Images and
//! volumes both read their bytes through here.
//!
//! Downloads go through ureq over rustls, trusting the host's CA store,
//! with one deadline for the whole transfer (`timeout`): a server that
//! stalls mid-body fails the run instead of hanging it. Whatever reads the
//! body (the unpacker, or a file in staging) hashes it as it arrives.

pub mod digest;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::records::pod::Source;
use crate::space::Budget;

/// Reading a location failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("cannot read {location}")]
    Source {
        location: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot download {uri}: {reason}")]
    Download { uri: String, reason: String },
}

/// The longest transfer deadline handed to the HTTP client.
const MAX_TIMEOUT: Duration = Duration::from_secs(crate::ansible::args::MAX_SECONDS as u64);

pub use crate::records::uri::redact;

/// A place to read bytes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Path(PathBuf),
    Http(String),
}

impl Location {
    /// `http://`, `https://` and `file://` are URIs; anything else a path.
    /// A scheme is read in any case (RFC 3986), as bundles are validated.
    pub fn parse(text: &str) -> Result<Location, String> {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            Ok(Location::Http(text.to_owned()))
        } else if let Some(rest) = lower
            .starts_with("file://")
            .then(|| &text["file://".len()..])
        {
            if rest.starts_with('/') {
                Ok(Location::Path(PathBuf::from(percent_decode(rest)?)))
            } else {
                Err(format!(
                    "{:?}: a file URI needs an absolute path (file:///path)",
                    redact(text)
                ))
            }
        } else if lower.contains("://") {
            Err(format!(
                "{:?}: only http, https and file URIs are supported",
                redact(text)
            ))
        } else {
            Ok(Location::Path(PathBuf::from(text)))
        }
    }

    /// Where a bundle's image, signature or volume data is: a path in the
    /// bundle directory, or its URI. The one mapping for every reader, so
    /// check mode and the run look in the same place.
    pub fn of(source: &Source, bundle_dir: &Path) -> Result<Location, String> {
        match source {
            Source::Path(p) => Ok(Location::Path(bundle_dir.join(p))),
            Source::Uri(u) => Location::parse(u),
        }
    }

    /// A URI given where a URI is expected.
    pub fn parse_uri(text: &str) -> Result<Location, String> {
        if !text.contains("://") {
            return Err(format!(
                "{:?} is not a URI (http://, https:// or file:///)",
                redact(text)
            ));
        }
        Location::parse(text)
    }

    pub fn display(&self) -> String {
        match self {
            Location::Path(p) => p.display().to_string(),
            Location::Http(u) => redact(u).into_owned(),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Location::Http(_))
    }

    /// Check, without reading it, that a path names a readable file; a URI
    /// is only checked by fetching it.
    pub fn check(&self) -> Result<(), DownloadError> {
        if let Location::Path(path) = self {
            // Opened, not read: what the read would refuse, check mode
            // refuses too.
            crate::atomic::open_regular(path).map_err(|source| DownloadError::Source {
                location: self.display(),
                source,
            })?;
        }
        Ok(())
    }

    /// Open the bytes for reading; a download must finish within `timeout`.
    pub fn open(&self, timeout: Duration) -> Result<Box<dyn Read + Send>, DownloadError> {
        match self {
            Location::Path(path) => {
                let file =
                    crate::atomic::open_regular(path).map_err(|source| DownloadError::Source {
                        location: self.display(),
                        source,
                    })?;
                Ok(Box::new(file))
            }
            Location::Http(uri) => {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    // Capped: the options bound it, but a deadline past
                    // Instant's range would panic inside the client.
                    .timeout_global(Some(timeout.min(MAX_TIMEOUT)))
                    .user_agent(concat!("ops/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .into();
                let response = agent.get(uri).call().map_err(|e| DownloadError::Download {
                    uri: self.display(),
                    reason: describe(&e, timeout).replace(uri.as_str(), &self.display()),
                })?;
                Ok(Box::new(response.into_body().into_reader()))
            }
        }
    }
}

/// Decode `%XX` escapes of a file URI's path.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{text:?}: a '%' not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?}: the path is not UTF-8"))
}

/// Copy a source into a file (in staging), returning the bytes copied.
/// Used when the bytes are needed twice: a signature is checked over the
/// whole file before anything is unpacked, and podman loads from a file.
/// What a server sends is charged to the free space of the target's
/// filesystem as it arrives ([`Budget`]): a body larger than that stops
/// the download before the filesystem is full.
pub fn fetch_into(
    location: &Location,
    timeout: Duration,
    target: &Path,
) -> Result<u64, DownloadError> {
    let local = |source: io::Error| DownloadError::Source {
        location: target.display().to_string(),
        source,
    };
    let dir = target.parent().unwrap_or(Path::new("/"));
    let mut budget = Budget::of(dir, &dir.display().to_string()).map_err(local)?;
    budget.charge(0).map_err(local)?;
    let mut reader = location.open(timeout)?;
    let mut file = File::create(target).map_err(local)?;
    let mut buf = vec![0u8; 256 << 10];
    let mut copied = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(location, e, timeout)),
        };
        budget
            .charge_bytes(n as u64)
            .map_err(|e| too_large(location, e))?;
        file.write_all(&buf[..n]).map_err(local)?;
        copied += n as u64;
    }
    file.sync_all().map_err(local)?;
    Ok(copied)
}

/// A download read without being written (hashed on its way), that will
/// be written to the filesystem `budget` is of: refused as soon as it
/// passes what that filesystem can take, rather than read to its end.
#[derive(Debug)]
pub struct Capped<R> {
    inner: R,
    budget: Budget,
}

impl<R: Read> Capped<R> {
    pub fn new(inner: R, budget: Budget) -> Capped<R> {
        Capped { inner, budget }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.budget.charge_bytes(n as u64)?;
        Ok(n)
    }
}

/// A download that the free space cannot take.
pub fn too_large(location: &Location, source: io::Error) -> DownloadError {
    DownloadError::Download {
        uri: location.display(),
        reason: format!("the download is too large: {source}"),
    }
}

/// An error while reading the bytes of `location` (a broken download
/// surfaces here, mid-body).
pub fn read_error(location: &Location, source: io::Error, timeout: Duration) -> DownloadError {
    if crate::space::is_full(&source) && location.is_remote() {
        return too_large(location, source);
    }
    match location {
        Location::Http(uri) => DownloadError::Download {
            uri: location.display(),
            reason: transfer_failure(&source, timeout).replace(uri.as_str(), &location.display()),
        },
        Location::Path(_) => DownloadError::Source {
            location: location.display(),
            source,
        },
    }
}

/// Why a download failed, in words.
fn describe(error: &ureq::Error, timeout: Duration) -> String {
    match error {
        ureq::Error::StatusCode(code) => format!("the server answered HTTP {code}"),
        ureq::Error::Timeout(_) => format!(
            "it did not finish within the timeout of {} s",
            timeout.as_secs()
        ),
        ureq::Error::HostNotFound => "the host name does not resolve".to_owned(),
        ureq::Error::Tls(e) => format!("TLS failed: {e}"),
        ureq::Error::Rustls(e) => format!("TLS failed: {e}"),
        // rustls reports a broken handshake (say, a server that does not
        // speak TLS) as invalid data on the connection.
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::InvalidData => format!("TLS failed: {e}"),
        ureq::Error::Io(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// The download error somewhere in an error's chain (a reader's error
/// reaches us wrapped by whatever was reading).
pub fn download_error<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e ureq::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<ureq::Error>() {
            return Some(found);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            if let Some(found) = download_error(inner) {
                return Some(found);
            }
        }
        current = e.source();
    }
    None
}

/// Why a transfer broke off mid-body.
pub fn transfer_failure(error: &io::Error, timeout: Duration) -> String {
    match download_error(error) {
        Some(inner) => describe(inner, timeout),
        None => format!("the transfer broke off: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheme_is_read_in_any_case() {
        assert_eq!(
            Location::parse("FILE:///srv/a%20b.tar").unwrap(),
            Location::Path(PathBuf::from("/srv/a b.tar"))
        );
        assert_eq!(
            Location::parse("File:///x").unwrap(),
            Location::Path(PathBuf::from("/x"))
        );
        assert!(matches!(
            Location::parse("HTTPS://h/x").unwrap(),
            Location::Http(_)
        ));
        let err = Location::parse("FILE://relative/x").unwrap_err();
        assert!(err.contains("needs an absolute path"), "{err}");
    }

    #[test]
    fn a_fifo_or_device_named_as_an_image_or_data_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let socket = tmp.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for (path, what) in [
            (fifo, "not a regular file (a FIFO)"),
            ("/dev/zero".into(), "not a regular file (a device)"),
            (socket, "not a regular file (a socket)"),
            ("/proc/self/mem".into(), "not a file on disk"),
            ("/proc/kmsg".into(), "not a file on disk"),
            (
                "/sys/kernel/mm/transparent_hugepage/enabled".into(),
                "not a file on disk",
            ),
        ] {
            if !path.exists() {
                continue; // not every kernel has every file
            }
            let location = Location::Path(path.clone());
            // Check mode's look and the read say the same.
            let checked = crate::ansible::error_chain(&location.check().unwrap_err());
            let err = location.open(Duration::from_secs(1)).err().unwrap();
            let msg = crate::ansible::error_chain(&err);
            assert!(msg.contains(what), "{}: {msg}", path.display());
            assert_eq!(checked, msg, "{}", path.display());
        }
    }

    #[test]
    fn credentials_and_query_values_are_hidden_wherever_a_uri_is_shown() {
        for (given, shown) in [
            ("http://user:pass@h:8080/a.aci", "http://***@h:8080/a.aci"),
            ("https://tok@h/a?b", "https://***@h/a?b"),
            (
                "https://h/a.aci?X-Sig=abc&v=2#f",
                "https://h/a.aci?X-Sig=***&v=***#***",
            ),
            ("https://h/a@b", "https://h/a@b"),
            ("https://h/a.aci", "https://h/a.aci"),
            ("HTTP://user:hunter2@h/x", "HTTP://***@h/x"),
            ("https://h/x.aci#tok3n", "https://h/x.aci#***"),
            ("https://u:p@h?q=s#f", "https://***@h?q=***#***"),
        ] {
            assert_eq!(redact(given), shown, "{given}");
            let location = Location::parse(given).unwrap();
            assert_eq!(location.display(), shown);
        }
        // Texts that only look like URIs, and paths that do not.
        for (given, shown) in [
            ("http:/u:hunter2@h/x", "http:/***@h/x"),
            ("ftp://user:hunter2@h/x", "ftp://***@h/x"),
            ("data:v1.tar", "data:v1.tar"),
            ("units/web@.service", "units/web@.service"),
            (" http://u:pa55word@h/x", " http://***@h/x"),
            ("\"http://u:pa55word@h/x", "\"http://***@h/x"),
            ("\t HTTPS://u:p@h", "\t HTTPS://***@h"),
            (" http:/u:p@h/x", " http:/***@h/x"),
            ("café://u:p@h/x", "café://***@h/x"),
            ("http://u:p?ss@h/x", "http://***@h/x"),
            ("http://u:p/ss@h/x", "http://***@h/x"),
            ("http://user:pa#ss@h/x", "http://***@h/x"),
            ("http://u:p@ss@h/x", "http://***@h/x"),
            ("https://h:8080/a@b", "https://h:8080/a@b"),
            ("https://h/a@b?x", "https://h/a@b?x"),
            ("/srv/a@b/c", "/srv/a@b/c"),
        ] {
            assert_eq!(redact(given), shown, "{given}");
        }
        let err = Location::parse("ftp://user:hunter2@h/x").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        // A refused connection names the URI without its password.
        let err = Location::parse("http://user:hunter2@127.0.0.1:9/x")
            .unwrap()
            .open(Duration::from_secs(5))
            .err()
            .unwrap();
        let msg = crate::ansible::error_chain(&err);
        assert!(msg.contains("http://***@127.0.0.1:9/x"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn no_spelling_of_a_uri_shows_its_password_or_panics() {
        let mut tried = 0;
        for prefix in ["", " ", "é", "\"", "日本 "] {
            for scheme in ["http", "HTTPS", "é", ""] {
                for sep in ["://", ":/", ":"] {
                    for userinfo in [
                        "u:CRET@",
                        "CRET@",
                        "u:SE/CRET@",
                        "u:SE?CRET@",
                        "u:SE#CRET@",
                        "u:S@CRET@",
                    ] {
                        for host in ["h", "h:80", "[::1]:8"] {
                            for tail in ["", "/x", "/x?q=1#f"] {
                                let uri = format!("{prefix}{scheme}{sep}{userinfo}{host}{tail}");
                                let shown = redact(&uri);
                                tried += 1;
                                // A text with no scheme at all is no URI.
                                let no_uri = (scheme.is_empty() || scheme == "é") && sep != "://";
                                assert!(no_uri || !shown.contains("CRET"), "{uri} -> {shown}");
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(tried, 5 * 4 * 3 * 6 * 3 * 3);
    }

    #[test]
    fn locations_are_told_apart_by_scheme() {
        assert_eq!(
            Location::parse("img.aci"),
            Ok(Location::Path("img.aci".into()))
        );
        assert_eq!(
            Location::parse("file:///srv/a%20b.aci"),
            Ok(Location::Path("/srv/a b.aci".into()))
        );
        assert_eq!(
            Location::parse("HTTPS://example.com/x"),
            Ok(Location::Http("HTTPS://example.com/x".into()))
        );
        assert!(Location::parse("ftp://example.com/x")
            .unwrap_err()
            .contains("only http"));
        assert!(Location::parse("file://relative")
            .unwrap_err()
            .contains("absolute"));
        assert!(Location::parse_uri("/srv/x")
            .unwrap_err()
            .contains("not a URI"));
    }
}
