//! Validated names: pod names, versions, unit names, image ids and the other
//! identifiers that end up in unit names, paths and environment variables.
//!
//! Each `parse` returns the reason in words a person can act on; callers add
//! the file and field. Module options use the same parsers, so a name that
//! ops_pod accepts is a name a bundle may carry and the other way round.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A value quoted in a message, as `{:?}` quotes it, cut after
/// [`SHOWN_CHARS`] characters with its length: a wrong value of megabytes
/// (a mistyped variable, a file pasted into a name) makes a one-line error,
/// not an echo of the input.
pub fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes in all)", &s[..cut], s.len()),
    }
}

/// How much of a wrong value a message shows (see [`shown`]).
pub const SHOWN_CHARS: usize = 80;

fn is_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `s` is 1 to 64 chars of `allowed`, starting and ending with `edge`.
fn well_formed(s: &str, allowed: fn(char) -> bool, edge: fn(char) -> bool) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().all(allowed)
        && s.chars().next().is_some_and(edge)
        && s.chars().last().is_some_and(edge)
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $name::parse(&s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// A pod's name: safe in unit names, slice names and paths.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct PodName(String);
string_newtype!(PodName);

impl PodName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s_shown = shown(s);
        let allowed = |c: char| is_alnum(c) || matches!(c, '.' | '_' | '-');
        if well_formed(s, allowed, is_alnum) {
            Ok(PodName(s.to_owned()))
        } else {
            Err(format!(
                "expected 1 to 64 lowercase letters, digits, '.', '_' or '-', \
                 starting and ending with a letter or digit, got {s_shown}"
            ))
        }
    }
}

/// Names a version may not have: the store's pointers to versions.
pub const RESERVED_VERSIONS: &[&str] = &["current", "previous", "tip"];

/// A pod version: safe in unit names and paths.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Version(String);
string_newtype!(Version);

impl Version {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s_shown = shown(s);
        let edge = |c: char| c.is_ascii_alphanumeric();
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if RESERVED_VERSIONS.contains(&s) {
            Err(format!(
                "{s_shown} is reserved: the store keeps its `current` and `previous` pointers beside the \
                 versions, and a release repository its `tip`"
            ))
        } else if well_formed(s, allowed, edge) {
            Ok(Version(s.to_owned()))
        } else {
            Err(format!(
                "expected a non-negative integer or 1 to 64 letters, digits, '.', '_' or '-', \
                 starting and ending with a letter or digit, got {s_shown}"
            ))
        }
    }
}

/// The unit types a pod may ship.
pub const UNIT_SUFFIXES: &[&str] = &["service", "socket", "timer", "path", "target"];

/// The name of a unit file a pod ships: `web.service` or the template
/// `web@.service`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct UnitName(String);
string_newtype!(UnitName);

impl UnitName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s_shown = shown(s);
        let expected = || {
            format!(
                "expected a unit file name such as web.service or web@.service \
                 (letters, digits, ':', '_', '.', '-'; a type of {}), got {s_shown}",
                UNIT_SUFFIXES.join(", ")
            )
        };
        let (stem, suffix) = s.rsplit_once('.').ok_or_else(expected)?;
        let prefix = stem.strip_suffix('@').unwrap_or(stem);
        let prefix_ok = !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-'));
        if s.len() <= 255 && prefix_ok && UNIT_SUFFIXES.contains(&suffix) {
            Ok(UnitName(s.to_owned()))
        } else if stem.contains('@') && !stem.ends_with('@') {
            Err(format!(
                "{s_shown} names an instance; ship the template ({}@.{suffix}) and list the instances",
                stem.split('@').next().unwrap_or(stem)
            ))
        } else {
            Err(expected())
        }
    }

    /// A template unit (`web@.service`) needs instances to run.
    pub fn is_template(&self) -> bool {
        self.0.contains("@.")
    }

    /// The template a plain unit is installed as when it is given
    /// instances: `example.service` is `example@.service`.
    pub fn as_template(&self) -> Result<UnitName, String> {
        let (stem, suffix) = self.0.rsplit_once('.').unwrap_or((&self.0, ""));
        UnitName::parse(&format!("{stem}@.{suffix}"))
    }
}

/// Check one instance name of a templated unit.
pub fn check_instance(s: &str) -> Result<(), String> {
    let s_shown = shown(s);
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-');
    if !s.is_empty() && s.len() <= 64 && s.chars().all(allowed) {
        Ok(())
    } else {
        Err(format!(
            "expected an instance name of 1 to 64 letters, digits, ':', '_', '.' or '-', got {s_shown}"
        ))
    }
}

/// A container image's digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ImageId {
    /// An ACI: sha512 of the uncompressed image tar, possibly a prefix of at
    /// least 32 hex digits (as rkt accepted).
    Sha512(String),
    /// An OCI or Docker image: sha256 of its config.
    Sha256(String),
}

impl ImageId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s_shown = shown(s);
        let hex = |h: &str| {
            h.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        };
        if let Some(h) = s.strip_prefix("sha512-") {
            if (32..=128).contains(&h.len()) && hex(h) {
                return Ok(ImageId::Sha512(h.to_owned()));
            }
        } else if let Some(h) = s.strip_prefix("sha256:") {
            if h.len() == 64 && hex(h) {
                return Ok(ImageId::Sha256(h.to_owned()));
            }
        }
        Err(format!(
            "expected sha512-<32 to 128 lowercase hex digits> (an ACI) \
             or sha256:<64 lowercase hex digits> (an OCI or Docker image), got {s_shown}"
        ))
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageId::Sha512(h) => write!(f, "sha512-{h}"),
            ImageId::Sha256(h) => write!(f, "sha256:{h}"),
        }
    }
}

impl TryFrom<String> for ImageId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ImageId::parse(&s)
    }
}

impl From<ImageId> for String {
    fn from(id: ImageId) -> String {
        id.to_string()
    }
}

/// A volume name: becomes `OPS_VOLUME_<NAME>` ('-' to '_'), so no '_' of its
/// own to keep that mapping one-to-one.
pub fn check_volume_name(s: &str) -> Result<(), String> {
    let s_shown = shown(s);
    let allowed = |c: char| is_alnum(c) || c == '-';
    if well_formed(s, allowed, is_alnum) && s.starts_with(|c: char| c.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(format!(
            "expected 1 to 64 lowercase letters, digits or '-', starting with a letter \
             and ending with a letter or digit, got {s_shown}"
        ))
    }
}

/// A port name: becomes `PORT_<NAME>` upper-cased.
pub fn check_port_name(s: &str) -> Result<(), String> {
    let s_shown = shown(s);
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if well_formed(s, allowed, |c| c.is_ascii_alphanumeric())
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        Ok(())
    } else {
        Err(format!(
            "expected a port name of letters, digits and '_', starting with a letter, got {s_shown}"
        ))
    }
}

/// An environment variable name a pod may set; names ops sets itself are
/// refused so a bundle can't shadow them.
pub fn check_env_name(s: &str) -> Result<(), String> {
    let s_shown = shown(s);
    let valid = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "expected a variable name of letters, digits and '_', not starting with a digit, got {s_shown}"
        ));
    }
    if matches!(s, "POD_NAME" | "POD_VERSION" | "POD_BUNDLE" | "PORT")
        || s.starts_with("PORT_")
        || s.starts_with("OPS_")
    {
        return Err(format!(
            "{s_shown} is set by ops (POD_NAME, POD_VERSION, POD_BUNDLE, PORT, PORT_*, OPS_*)"
        ));
    }
    Ok(())
}

/// Do two ids name the same image (an ACI id may be shortened)?
pub fn same_image(a: &ImageId, b: &ImageId) -> bool {
    match (a, b) {
        (ImageId::Sha512(x), ImageId::Sha512(y)) => {
            x.starts_with(y.as_str()) || y.starts_with(x.as_str())
        }
        (ImageId::Sha256(x), ImageId::Sha256(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_wrong_value_is_shown_cut_short() {
        insta::assert_snapshot!(PodName::parse(&"a".repeat(100_000)).unwrap_err());
    }

    #[test]
    fn pod_names() {
        for good in ["web", "a", "my-pod.v2", "x_1"] {
            assert!(PodName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Web",
            "-web",
            "web-",
            "a/b",
            "..",
            "a b",
            &"a".repeat(65),
        ] {
            assert!(PodName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        for good in ["1001", "1.4.2", "2026-11-22", "RC1"] {
            assert!(Version::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "1.", "../1", "1 2", "v1/2", "-1", "current", "previous"] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unit_names() {
        assert!(!UnitName::parse("web.service").unwrap().is_template());
        assert!(UnitName::parse("web@.service").unwrap().is_template());
        assert!(UnitName::parse("web.socket").is_ok());
        for bad in [
            "web",
            "web.mount",
            "@.service",
            "a/b.service",
            "web@1.service",
        ] {
            assert!(UnitName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_ids() {
        let sha512 = format!("sha512-{}", "a".repeat(128));
        assert_eq!(ImageId::parse(&sha512).unwrap().to_string(), sha512);
        assert!(ImageId::parse(&format!("sha512-{}", "0".repeat(32))).is_ok());
        assert!(ImageId::parse(&format!("sha512-{}", "0".repeat(200_000)))
            .unwrap_err()
            .ends_with("... (200007 bytes in all)"));
        assert!(ImageId::parse(&format!("sha256:{}", "f".repeat(64))).is_ok());
        for bad in [
            format!("sha512-{}", "a".repeat(31)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256-{}", "a".repeat(64)),
            format!("sha512-{}", "A".repeat(64)),
            "md5-abc".to_owned(),
        ] {
            assert!(ImageId::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names_ops_owns_are_refused() {
        assert!(check_env_name("DATABASE_URL").is_ok());
        for bad in [
            "PORT",
            "PORT_HTTP",
            "POD_NAME",
            "OPS_VOLUME_DATA",
            "1X",
            "A-B",
            "",
        ] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
    }
}
