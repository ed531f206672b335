//! Checking a detached OpenPGP signature over an image file.
//!
//! ops asks `sqv`, Sequoia's signature verifier, rather than linking an
//! OpenPGP implementation: sqv is a small Debian-packaged program made for
//! exactly this (apt itself verifies repositories with it from Debian 13),
//! it takes armored or binary keyrings, and its security updates come with
//! the distribution instead of with ops. Keeping a whole OpenPGP stack out
//! of every module binary keeps them small too. A good signature is one
//! made, by a key in `keyring`, over exactly the file's bytes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::ImageError;
use crate::command::{self, CommandError};

/// The verifier ops runs.
pub const VERIFIER: &str = "sqv";

/// Verify `signature` (a file; `named` in errors) over `data` (the image
/// `image` names) against `keyring`; return the signing key's fingerprint.
pub fn verify(
    data: &Path,
    signature: &Path,
    named: &str,
    image: &str,
    keyring: &Path,
    timeout: Duration,
) -> Result<String, ImageError> {
    let mut cmd = Command::new(VERIFIER);
    cmd.arg("--keyring").arg(keyring).arg(signature).arg(data);
    match command::run(&mut cmd, Some(timeout)) {
        Ok(out) => Ok(out
            .stdout
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()),
        Err(CommandError::Spawn { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Err(ImageError::NoVerifier)
        }
        Err(source) => Err(ImageError::BadSignature {
            signature: named.to_owned(),
            image: image.to_owned(),
            source,
        }),
    }
}
