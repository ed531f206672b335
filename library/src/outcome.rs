//! The two ways a request can fail, the same for ops_pod, ops_image and
//! ops_volume: a [`Refusal`] (nothing was changed) or [`AfterChanges`] (the
//! host was changed, and the message says what was undone and what stays).
//!
//! Every error of the engine is one or the other, so a caller reporting to
//! Ansible knows `changed` from the kind, not from the text.

/// The request cannot be carried out as asked: bad input, or a host that
/// cannot take it. Found before anything was written; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl Refusal {
    pub fn new(why: impl Into<String>) -> Refusal {
        Refusal(why.into())
    }
}

/// A run that failed after it had changed the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterChanges {
    /// The real cause, first (for a version that did not come up, with
    /// its unit's last journal lines).
    pub cause: String,
    /// How the run ended, e.g. `rolled back to version 1`.
    pub outcome: String,
    /// What the undo did, in order.
    pub undone: Vec<String>,
    /// Why the undo stopped before the end, if it did.
    pub undo_error: Option<String>,
    /// What the run did that stays changed.
    pub left: Vec<String>,
}

impl AfterChanges {
    /// Whether the host stays changed: not when everything was undone.
    pub fn changed(&self) -> bool {
        !self.left.is_empty() || self.undo_error.is_some()
    }
}

impl std::fmt::Display for AfterChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n{}", self.cause, self.outcome)?;
        if !self.undone.is_empty() {
            write!(f, "; undone: {}", self.undone.join("; "))?;
        }
        if let Some(error) = &self.undo_error {
            write!(f, "\ncould not undo the rest: {error}")?;
        }
        if !self.left.is_empty() {
            write!(f, "\nleft changed: {}", self.left.join("; "))?;
        }
        Ok(())
    }
}
