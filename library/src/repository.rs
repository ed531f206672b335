//! Release repositories (seed 002) as ops_pod deploys from them: a pod
//! version found by channel, label, name and version (or `tip`), in a
//! directory on the host or on any static HTTP server.
//!
//! [`resolve`] turns such a request into a validated [`Bundle`] and the
//! [`Origin`] its artifacts are read from. In a directory, the pod version's
//! links may lead anywhere inside the repository, never out of it. Over
//! HTTP only the small files are fetched here (`release.json`, pod.json and
//! the unit files, each at most [`MAX_MANIFEST`] bytes, into a private
//! temporary directory): images and volume archives are fetched when they
//! are imported or extracted, and only when the host lacks them. Every
//! file read is checked against the release's record: unit files here,
//! volume archives as they are extracted, images by their id.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::bundle::{self, Bundle, BundleError, Files, PodName, Source, Version, MAX_MANIFEST};
use crate::download::Location;
use crate::outcome::Refusal;
use crate::records::release::{self, Label, ReleaseRecord, RECORD, TIP};

/// Where a repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repo {
    /// A directory on the host (absolute).
    Dir(PathBuf),
    /// The URL of its top, without a trailing `/`.
    Http(String),
}

impl Repo {
    /// An absolute path, a `file:///` URI, or an `http(s)://` URL.
    pub fn parse(text: &str) -> Result<Repo, String> {
        let shown = crate::records::uri::redact(text);
        match Location::parse(text)? {
            Location::Http(url) => {
                let rest = url.split_once("://").map_or("", |(_, rest)| rest);
                if url.contains(['?', '#']) || url.contains(char::is_whitespace) {
                    return Err(format!(
                        "expected the URL of the repository's top directory, without a query, \
                         fragment or blanks, got {shown:?}"
                    ));
                }
                if rest.split('/').next().unwrap_or_default().is_empty() {
                    return Err(format!("{shown:?} names no host"));
                }
                Ok(Repo::Http(url.trim_end_matches('/').to_owned()))
            }
            Location::Path(path) if path.is_absolute() => Ok(Repo::Dir(path)),
            Location::Path(_) => Err(format!(
                "expected an absolute directory or an http(s):// URL, got {shown:?}"
            )),
        }
    }
}

/// A pod version asked for in a repository.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub repo: Repo,
    pub channel: String,
    pub label: Label,
    pub name: PodName,
    /// `None`: the version `tip` names.
    pub version: Option<Version>,
}

/// Where a version from a repository is read from, kept with it until
/// it is deployed.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The pod version's directory or URL, as shown (no credentials).
    pub shown: String,
    /// The version `tip` named, when it was asked for.
    pub tip: Option<Version>,
    /// The URL of the pod version's directory, when its artifacts are on
    /// a server.
    pub remote: Option<String>,
    pub record: ReleaseRecord,
    /// The fetched small files, removed when the last copy is dropped.
    _fetched: Option<Arc<tempfile::TempDir>>,
}

impl Origin {
    /// Where a file the pod names is read from.
    pub fn locate(&self, source: &Source, bundle_dir: &Path) -> Result<Location, String> {
        match (source, &self.remote) {
            (Source::Path(path), Some(base)) => Ok(Location::Http(url_of(base, path))),
            _ => Location::of(source, bundle_dir),
        }
    }

    /// The sha256 (hex) the release recorded for a file the pod names.
    pub fn sha256_of(&self, source: &Source) -> Option<&str> {
        match source {
            Source::Path(path) => self.record.sha256_of(path),
            Source::Uri(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// Find the version asked for, read and check it.
pub fn resolve(wanted: &Wanted, timeout: Duration) -> Result<(Bundle, Origin), RepositoryError> {
    let pod_dir = release::pod_dir(&wanted.channel, &wanted.label, &wanted.name);
    match &wanted.repo {
        Repo::Dir(top) => local(wanted, top, &pod_dir),
        Repo::Http(top) => {
            let base = url_of(top, &pod_dir);
            remote(wanted, &base, timeout)
        }
    }
}

/// What the request names, for messages.
fn describe(wanted: &Wanted) -> String {
    let label = match wanted.label.as_str() {
        "" => String::new(),
        label => format!(" label {label}"),
    };
    format!("pod {} in channel {}{label}", wanted.name, wanted.channel)
}

fn local(wanted: &Wanted, top: &Path, pod_dir: &Path) -> Result<(Bundle, Origin), RepositoryError> {
    let refuse = |message: String| RepositoryError::Refused(Refusal(message));
    let top = std::fs::canonicalize(top)
        .map_err(|e| refuse(format!("repository {}: cannot be read: {e}", top.display())))?;
    let versions = top.join(pod_dir);
    if !versions.is_dir() {
        return Err(refuse(format!(
            "nothing is published for {} in repository {}: there is no {}; check channel, \
             label and name",
            describe(wanted),
            top.display(),
            pod_dir.display()
        )));
    }
    let (version, tip) = match &wanted.version {
        Some(v) => (v.clone(), None),
        None => {
            let v = local_tip(&versions).map_err(|e| {
                refuse(format!(
                    "{} of repository {}: {e}",
                    describe(wanted),
                    top.display()
                ))
            })?;
            (v.clone(), Some(v))
        }
    };
    let dir = versions.join(version.as_str());
    match std::fs::canonicalize(&dir) {
        Ok(real) if real.starts_with(&top) && real.is_dir() => {}
        Ok(real) => {
            return Err(refuse(format!(
                "{} resolves to {}, outside the repository {}",
                dir.display(),
                real.display(),
                top.display()
            )))
        }
        Err(_) => {
            return Err(refuse(format!(
                "version {version} of {} is not published in repository {} (published: {})",
                describe(wanted),
                top.display(),
                published(&versions)
            )))
        }
    }
    for name in [bundle::MANIFEST, RECORD] {
        let path = dir.join(name);
        if let Ok(real) = std::fs::canonicalize(&path) {
            if !real.starts_with(&top) {
                return Err(refuse(format!(
                    "{} resolves to {}, outside the repository {}",
                    path.display(),
                    real.display(),
                    top.display()
                )));
            }
        }
    }
    let record = read_record(&dir.join(RECORD), &|path| {
        crate::atomic::read_regular(path, MAX_MANIFEST).map_err(|e| {
            format!(
                "{}: cannot be read: {e}; a version published with ops_release has its {RECORD}",
                path.display()
            )
        })
    })?;
    let bundle = bundle::load_with(&dir, Files::Within(&top))?;
    let origin = Origin {
        shown: dir.display().to_string(),
        tip,
        remote: None,
        record,
        _fetched: None,
    };
    check_release(wanted, &version, &bundle, &origin)?;
    Ok((bundle, origin))
}

/// The version `tip` links to: a sibling directory, named by a version.
fn local_tip(versions: &Path) -> Result<Version, String> {
    let target = std::fs::read_link(versions.join(TIP)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("no {TIP} is published"),
        _ => format!("{TIP} is not a link to a version ({e})"),
    })?;
    target
        .to_str()
        .filter(|t| !t.contains('/'))
        .and_then(|t| Version::parse(t).ok())
        .ok_or_else(|| format!("{TIP} links to {target:?}, not to a version beside it"))
}

/// The versions published in a pod's directory, for a message.
fn published(versions: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(versions)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != TIP && !n.starts_with('.'))
        .collect();
    names.sort();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn remote(
    wanted: &Wanted,
    base: &str,
    timeout: Duration,
) -> Result<(Bundle, Origin), RepositoryError> {
    // A 404 means the request named what the server does not have.
    let get = |url: &str| {
        fetch_small(url, timeout).map_err(|e| {
            if e.contains("HTTP 404") {
                format!(
                    "{e}; is {} published there? check repo, channel, label, name and version",
                    describe(wanted)
                )
            } else {
                e
            }
        })
    };
    let (version, tip) = match &wanted.version {
        Some(v) => (v.clone(), None),
        None => {
            let url = url_of(base, Path::new(TIP).join(RECORD).as_path());
            let record = read_record(Path::new(&url), &|_| get(&url))?;
            (record.version.clone(), Some(record.version))
        }
    };
    let dir_url = url_of(base, Path::new(version.as_str()));
    let fetch = |name: &Path| {
        let url = url_of(&dir_url, name);
        get(&url)
    };
    let record_url = url_of(&dir_url, Path::new(RECORD));
    let record = read_record(Path::new(&record_url), &|_| fetch(Path::new(RECORD)))?;
    let fetched = tempfile::Builder::new()
        .prefix("ops-release-")
        .tempdir()
        .map_err(|e| Refusal(format!("cannot make a temporary directory: {e}")))?;
    let write = |relative: &Path, bytes: &[u8]| -> Result<(), RepositoryError> {
        let path = fetched.path().join(relative);
        let made = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, bytes));
        made.map_err(|e| Refusal(format!("{}: cannot be written: {e}", path.display())).into())
    };
    let manifest = fetch(Path::new(bundle::MANIFEST)).map_err(Refusal)?;
    write(Path::new(bundle::MANIFEST), &manifest)?;
    let named = bundle::load_with(fetched.path(), Files::Remote { units: false })?;
    for unit in &named.pod.units {
        let bytes = fetch(&unit.file).map_err(Refusal)?;
        check_sha256(&record, &unit.file, &bytes, &url_of(&dir_url, &unit.file))?;
        write(&unit.file, &bytes)?;
    }
    let bundle = bundle::load_with(fetched.path(), Files::Remote { units: true })?;
    let origin = Origin {
        shown: crate::records::uri::redact(&dir_url).into_owned(),
        tip,
        remote: Some(dir_url.clone()),
        record,
        _fetched: Some(Arc::new(fetched)),
    };
    check_release(wanted, &version, &bundle, &origin)?;
    Ok((bundle, origin))
}

/// The record read with `read`, named `path` in messages.
fn read_record(
    path: &Path,
    read: &dyn Fn(&Path) -> Result<Vec<u8>, String>,
) -> Result<ReleaseRecord, RepositoryError> {
    let shown = crate::records::uri::redact(&path.to_string_lossy()).into_owned();
    let bytes = read(path).map_err(Refusal)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Refusal(format!("{shown}: not a release record: {e}")).into())
}

/// The release is the one asked for, and records every file it names.
fn check_release(
    wanted: &Wanted,
    version: &Version,
    bundle: &Bundle,
    origin: &Origin,
) -> Result<(), RepositoryError> {
    let record = &origin.record;
    let pod = &bundle.pod;
    let asked = (&wanted.name, version);
    let label = record.label.clone().unwrap_or_default();
    if (&record.pod, &record.version) != asked
        || (record.channel.as_str(), &label) != (wanted.channel.as_str(), &wanted.label)
    {
        return Err(Refusal(format!(
            "{}: asked for version {version} of {}, but its {RECORD} is version {} of pod {} in \
             channel {} label {:?}",
            origin.shown,
            describe(wanted),
            record.version,
            record.pod,
            record.channel,
            label.as_str()
        ))
        .into());
    }
    // The bytes validated, not a second read (which could differ).
    check_digest(
        &record.manifest.sha256,
        &bundle.text,
        &format!("{}/{}", origin.shown, bundle::MANIFEST),
    )?;
    if (&pod.name, &pod.version) != asked {
        return Err(Refusal(format!(
            "{}: its pod.json is version {} of pod {}, not what its {RECORD} says",
            origin.shown, pod.version, pod.name
        ))
        .into());
    }
    let named = pod
        .images
        .iter()
        .flat_map(|i| std::iter::once(&i.source).chain(i.signature.as_ref()))
        .chain(pod.volumes.iter().filter_map(|v| v.data.as_ref()));
    for source in named {
        if let Source::Path(path) = source {
            if origin.sha256_of(source).is_none() {
                return Err(Refusal(format!(
                    "{}: {RECORD} does not record {}, which pod.json names",
                    origin.shown,
                    path.display()
                ))
                .into());
            }
        }
    }
    if origin.remote.is_none() {
        for unit in &pod.units {
            let path = bundle.dir.join(&unit.file);
            let bytes = crate::atomic::read_regular(&path, MAX_MANIFEST)
                .map_err(|e| Refusal(format!("{}: cannot be read: {e}", path.display())))?;
            check_sha256(record, &unit.file, &bytes, &path.display().to_string())?;
        }
    }
    Ok(())
}

/// `bytes` are what the record says the file `relative` holds.
fn check_sha256(
    record: &ReleaseRecord,
    relative: &Path,
    bytes: &[u8],
    shown: &str,
) -> Result<(), RepositoryError> {
    let Some(expected) = record.sha256_of(relative) else {
        let shown = crate::records::uri::redact(shown);
        return Err(Refusal(format!("{shown}: not recorded in the release's {RECORD}")).into());
    };
    check_digest(expected, bytes, shown)
}

/// `bytes` have the sha256 (hex) `expected`.
fn check_digest(expected: &str, bytes: &[u8], shown: &str) -> Result<(), RepositoryError> {
    use sha2::Digest;
    let shown = crate::records::uri::redact(shown);
    let actual = format!("{:x}", sha2::Sha256::digest(bytes));
    if actual != expected {
        return Err(Refusal(format!(
            "{shown} does not match the release's {RECORD}: sha256 {actual}, recorded {expected}; \
             the repository was changed after it was published"
        ))
        .into());
    }
    Ok(())
}

/// GET a small file: at most [`MAX_MANIFEST`] bytes.
fn fetch_small(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let location = Location::Http(url.to_owned());
    let reader = location
        .open(timeout)
        .map_err(|e| crate::ansible::error_chain(&e))?;
    let mut bytes = Vec::new();
    reader
        .take(MAX_MANIFEST + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            crate::ansible::error_chain(&crate::download::read_error(&location, e, timeout))
        })?;
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(format!(
            "{}: larger than {MAX_MANIFEST} bytes, more than such a file can be",
            location.display()
        ));
    }
    Ok(bytes)
}

/// `base` with each segment of `path` appended, percent-encoded.
fn url_of(base: &str, path: &Path) -> String {
    let mut url = base.trim_end_matches('/').to_owned();
    for segment in path.iter() {
        url.push('/');
        for byte in segment.as_encoded_bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                url.push(char::from(*byte));
            } else {
                url.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_an_absolute_directory_or_a_url() {
        assert_eq!(Repo::parse("/srv/repo"), Ok(Repo::Dir("/srv/repo".into())));
        assert_eq!(
            Repo::parse("file:///srv/my%20repo"),
            Ok(Repo::Dir("/srv/my repo".into()))
        );
        assert_eq!(
            Repo::parse("http://h:8080/repo/"),
            Ok(Repo::Http("http://h:8080/repo".into()))
        );
        for bad in [
            "repo",
            "http://h/r?x=1",
            "http:///r",
            "ftp://h/r",
            "http://h/a b",
        ] {
            assert!(Repo::parse(bad).is_err(), "{bad}");
        }
        let err = Repo::parse("http://u:secret@h/r?x").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn file_names_are_encoded_segment_by_segment() {
        assert_eq!(
            url_of("http://h/r/", Path::new("units/a b@.service")),
            "http://h/r/units/a%20b%40.service"
        );
        assert_eq!(
            url_of("http://h", Path::new("x%#?.aci")),
            "http://h/x%25%23%3F.aci"
        );
    }
}
