//! Starting a version's units and watching them until they are really up:
//! still active, and not restarted, `min_up_time` after the start.

use std::time::{Duration, Instant, SystemTime};

use crate::systemd::{Systemd, UnitStatus};

/// Why a unit is not up.
#[derive(Debug)]
pub(super) struct Down {
    pub unit: String,
    pub reason: String,
    /// When the start began: the journal lines worth quoting are later.
    pub since: SystemTime,
}

/// `status` in words. `tried`: the start ran to its end, so an inactive
/// unit's `ConditionResult=no` says a condition skipped it; after a start
/// that did not finish (`start_timeout` run out, 0 at the least) it may be
/// the value of a unit never tried, and was said as a failed condition.
fn describe(status: &UnitStatus, tried: bool) -> String {
    let exited = match status.exit_status {
        0 => String::new(),
        n => match crate::systemd::exit_status_meaning(n) {
            Some(meaning) => format!(", status {n}/{meaning}"),
            None => format!(", status {n}"),
        },
    };
    let skipped = if tried && status.skipped() {
        ": its start was skipped, a condition failed (ConditionResult=no)"
    } else {
        ""
    };
    format!(
        "{} is {} ({}, result {}{exited}){skipped}",
        status.unit, status.active, status.sub, status.result
    )
}

/// Start (or restart) `units`, then watch them for `min_up_time`: up means
/// still active and not restarted at the end of it.
pub(super) fn bring_up(
    systemd: &mut dyn Systemd,
    units: &[String],
    restart: bool,
    timeout: Duration,
    min_up_time: Duration,
) -> Result<(), Down> {
    let began = Instant::now();
    let since = SystemTime::now();
    let first_down = |systemd: &mut dyn Systemd| -> Option<UnitStatus> {
        systemd.show(units).ok()?.into_iter().find(|s| !s.is_up())
    };
    let started = if restart {
        systemd.restart(units, timeout)
    } else {
        systemd.start(units, timeout)
    };
    if let Err(e) = started {
        let status = first_down(systemd);
        return Err(Down {
            unit: status
                .as_ref()
                .map_or_else(|| units[0].clone(), |s| s.unit.clone()),
            reason: match status {
                Some(s) => {
                    let tried = !matches!(e, crate::command::CommandError::TimedOut { .. });
                    format!("{}; {e}", describe(&s, tried))
                }
                None => e.to_string(),
            },
            since,
        });
    }
    let baseline: Vec<UnitStatus> = systemd.show(units).unwrap_or_default();
    // Saturating: a far deadline is "never", not a panic.
    let window = min_up_time.min(timeout.saturating_sub(began.elapsed()));
    let settle_until = Instant::now().checked_add(window);
    loop {
        let now = systemd.show(units).unwrap_or_default();
        for status in &now {
            let restarted = baseline
                .iter()
                .find(|b| b.unit == status.unit)
                .is_some_and(|b| status.restarts > b.restarts);
            if !status.is_up() || restarted {
                return Err(Down {
                    unit: status.unit.clone(),
                    reason: if restarted {
                        format!("{} restarted {} times", status.unit, status.restarts)
                    } else {
                        describe(status, true)
                    },
                    since,
                });
            }
        }
        if settle_until.is_some_and(|until| Instant::now() >= until) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_skipped_by_a_condition_says_so() {
        let status = UnitStatus {
            unit: "shop-2-web.service".to_owned(),
            active: "inactive".to_owned(),
            sub: "dead".to_owned(),
            result: "success".to_owned(),
            condition_result: "no".to_owned(),
            ..UnitStatus::default()
        };
        assert_eq!(
            describe(&status, true),
            "shop-2-web.service is inactive (dead, result success): its start was skipped, a \
             condition failed (ConditionResult=no)"
        );
        // A start cut by its timeout (start_timeout: 0 always was) left a
        // unit never tried: its ConditionResult=no is systemd's default.
        assert_eq!(
            describe(&status, false),
            "shop-2-web.service is inactive (dead, result success)"
        );
    }
}
