//! Durations as options take them (`500ms`, `10s`, `1.5s`, `2m`), bounded
//! so that no `Instant + duration` in devsup can overflow. `std`'s
//! `Duration` is not devsup's type, so the parsers are functions rather
//! than `FromStr`. This module sits at the bottom: it imports nothing from
//! the crate.

use std::time::Duration;

/// The longest duration any option takes (`--ready-timeout`,
/// `--ready-after`, `--drain-timeout`, `--debounce`, `--poll`): a day is
/// beyond any real use, and bounding here is what keeps every
/// `Instant + duration` in devsup from overflowing.
pub(crate) const MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// The shortest `--poll` interval: each poll reads every watched directory
/// (and hashes its files), so a shorter one would keep a core busy.
pub(crate) const MIN_POLL: Duration = Duration::from_millis(10);

/// Parses `500ms`, `10s`, `1m`, `1.5s` (humantime, plus decimal seconds),
/// at most [`MAX`].
pub(crate) fn parse(s: &str) -> Result<Duration, String> {
    let too_long = || format!("{s:?} is too long: at most 1 day (24h)");
    let d = match humantime::parse_duration(s) {
        Ok(d) => d,
        Err(humantime::DurationError::NumberOverflow) => return Err(too_long()),
        Err(_) => match s.strip_suffix('s').and_then(|n| n.parse::<f64>().ok()) {
            Some(secs) if secs.is_finite() && secs >= 0.0 => {
                if secs > MAX.as_secs_f64() {
                    return Err(too_long());
                }
                Duration::from_secs_f64(secs)
            }
            _ => {
                return Err(format!(
                    "{s:?} is not a duration: write it like 500ms, 10s or 2m"
                ));
            }
        },
    };
    if d > MAX {
        return Err(too_long());
    }
    Ok(d)
}

/// Parses a `--poll` interval: a duration of at least [`MIN_POLL`].
pub(crate) fn parse_poll(s: &str) -> Result<Duration, String> {
    let d = parse(s)?;
    if d < MIN_POLL {
        return Err(format!(
            "{s:?} is too short: poll at most every 10ms (each poll reads every watched directory)"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert!(parse("10x").unwrap_err().contains("not a duration"));
        assert!(parse("-1s").is_err());
    }

    #[test]
    fn out_of_range_durations_are_refused_not_a_panic() {
        // Each of these panicked in Duration::from_secs_f64 or overflowed
        // an Instant later on.
        for s in [
            "1e20s",
            "1e19s",
            "86400.001s",
            "25h",
            "2d",
            "99999999999999999999s",
        ] {
            let e = parse(s).unwrap_err();
            assert!(e.contains("too long: at most 1 day"), "{s}: {e}");
        }
        assert_eq!(parse("24h").unwrap(), MAX);
        assert_eq!(parse("86400s").unwrap(), MAX);
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
        for s in ["NaNs", "infs", "-0.5s", "1e400s"] {
            assert!(parse(s).is_err(), "{s}");
        }
        // A zero poll interval burned a core.
        for s in ["0", "0ms", "0s", "9ms"] {
            let e = parse_poll(s).unwrap_err();
            assert!(e.contains("too short"), "{s}: {e}");
        }
        assert_eq!(parse_poll("10ms").unwrap(), MIN_POLL);
        assert!(parse_poll("2d").unwrap_err().contains("too long"));
    }
}
