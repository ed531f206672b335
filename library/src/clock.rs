//! The wall clock, as the records store it: whole seconds since the Unix
//! epoch. One reading, so the times records keep (meta.json's
//! `deployed_at`, image.json's `imported_at`, volume.json's `created_at`)
//! mean the same thing.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; 0 if the clock is set before it, so a
/// wrong clock gives an old-looking record rather than a failed request.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_after_this_code_was_written() {
        // 2024-01-01T00:00:00Z
        assert!(super::now() > 1_704_067_200);
    }
}
