//! Pure parsers for devsup's log: one line per step, tagged `gen=N`.
//!
//! The contract the tests rely on is substrings, not a full format: each
//! line may carry any prefix (timestamp, level, target), then
//!
//! ```text
//! listening on 127.0.0.1:PORT (name=http fd=3)
//! reload requested by SIGHUP
//! gen=2 spawned pid=4242 in 85us after trigger
//! gen=2 ready in 34ms
//! gen=1 draining (SIGTERM) 40us after gen=2 ready
//! gen=1 exited with status 0 after 12ms
//! ```
//!
//! A line's *subject* is its first `gen=N` token; in
//! `gen=1 draining (SIGTERM) 40us after gen=2 ready` that is generation 1,
//! so [`is_event`]`(line, 2, "ready")` is false for it. A `gen=N pid=P`
//! token is a server's tag, never a subject: generations write to the same
//! pipe, and a server line written in pieces can end up in front of a
//! devsup line (`devsup-server gen=1 pid=5devsup gen=2 ready in 3ms`).

use std::net::SocketAddr;
use std::time::Duration;

/// Removes ANSI escape sequences (colours from a tracing subscriber that
/// did not notice it writes to a pipe).
pub fn strip_ansi(line: &str) -> String {
    anstream::adapter::strip_str(line).to_string()
}

/// The address in a `listening on ADDR ...` line.
pub fn parse_listen_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token = rest.split_whitespace().next()?;
    token
        .trim_end_matches([',', ')', ';'])
        .trim_matches('"')
        .parse()
        .ok()
}

/// The line's subject generation (its first `gen=N` token at a word
/// boundary) and the text after that token, leading spaces removed.
pub fn subject(line: &str) -> Option<(u64, &str)> {
    let mut from = 0;
    while let Some(found) = line[from..].find("gen=") {
        let start = from + found;
        from = start + "gen=".len();
        let boundary = line[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let digits = line[from..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(line.len(), |end| from + end);
        // `gen=N pid=P` is a server's tag (devsup-server logs to the same
        // pipe, and its partial writes can land in front of a devsup line).
        if !boundary || digits == from || line[digits..].starts_with(" pid=") {
            continue;
        }
        let generation = line[from..digits].parse().ok()?;
        return Some((generation, line[digits..].trim_start()));
    }
    None
}

/// Whether `line` is about generation `generation` and the text after its
/// `gen=N` token starts with `word` (`"spawned"`, `"ready"`, `"draining"`,
/// `"exited"`, `"failed"`, `"not ready"`, ...).
pub fn is_event(line: &str, generation: u64, word: &str) -> bool {
    subject(line).is_some_and(|(g, rest)| g == generation && rest.starts_with(word))
}

/// `(generation, pid)` from a `gen=N spawned pid=P` line.
pub fn parse_spawned(line: &str) -> Option<(u64, i32)> {
    let (generation, rest) = subject(line)?;
    let rest = rest.strip_prefix("spawned")?;
    let pid = rest[rest.find("pid=")? + "pid=".len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((generation, pid))
}

/// Parses one duration token: `85us`, `85µs`, `34ms`, `1.5s`, `900ns`,
/// trailing punctuation allowed.
pub fn parse_duration(token: &str) -> Option<Duration> {
    let token = token.trim_end_matches([',', ')', ';', '.', ':']);
    let split = token.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = token.split_at(split);
    let number: f64 = number.parse().ok()?;
    let nanos_per = match unit {
        "ns" => 1.0,
        "us" | "µs" | "μs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    Some(Duration::from_nanos((number * nanos_per).round() as u64))
}

/// The duration token right after `marker` in `text`.
pub fn duration_after(text: &str, marker: &str) -> Option<Duration> {
    let at = text.find(marker)? + marker.len();
    parse_duration(text[at..].split_whitespace().next()?)
}

/// The duration token right before `marker` in `text`.
fn duration_before(text: &str, marker: &str) -> Option<Duration> {
    let at = text.find(marker)?;
    parse_duration(text[..at].split_whitespace().next_back()?)
}

/// The durations of each handoff step, one entry per line that reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HandoffTimings {
    /// Reload trigger to spawn: `gen=N spawned pid=P in Xus after trigger`.
    pub trigger_to_spawn: Vec<Duration>,
    /// Spawn to READY: `gen=N ready in Xms`.
    pub spawn_to_ready: Vec<Duration>,
    /// READY to drain signal: `gen=M draining (SIGTERM) Xus after gen=N ready`.
    pub ready_to_drain: Vec<Duration>,
    /// Drain signal to exit: `gen=M exited ... after Xms`.
    pub drain_to_exit: Vec<Duration>,
}

impl HandoffTimings {
    /// Collects the timings reported in `lines`; lines without them are
    /// skipped.
    pub fn from_lines<S: AsRef<str>>(lines: &[S]) -> HandoffTimings {
        let mut timings = HandoffTimings::default();
        for line in lines {
            let Some((_, rest)) = subject(line.as_ref()) else {
                continue;
            };
            if rest.starts_with("spawned") {
                timings
                    .trigger_to_spawn
                    .extend(duration_before(rest, " after trigger"));
            } else if rest.starts_with("ready") {
                timings
                    .spawn_to_ready
                    .extend(duration_after(rest, "ready in "));
            } else if rest.starts_with("draining") {
                timings
                    .ready_to_drain
                    .extend(duration_before(rest, " after gen="));
            } else if rest.starts_with("exited") {
                let last = rest.rfind(" after ").map(|at| &rest[at..]);
                timings
                    .drain_to_exit
                    .extend(last.and_then(|tail| duration_after(tail, " after ")));
            }
        }
        timings
    }
}

/// Median and maximum of `samples`, or `None` when there are none (see
/// [`crate::stats::median_max`], for any ordered type).
pub fn median_max(samples: &[Duration]) -> Option<(Duration, Duration)> {
    crate::stats::median_max(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);

    #[test]
    fn strips_colours() {
        let line = "\u{1b}[2m2024-01-01\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m gen=1 ready";
        assert_eq!(strip_ansi(line), "2024-01-01  INFO gen=1 ready");
    }

    #[test]
    fn listen_addr() {
        let line = "12:00:00 INFO listening on 127.0.0.1:40123 (name=http fd=3)";
        assert_eq!(
            parse_listen_addr(line),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("listening on [::1]:80, name=http"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_listen_addr("listening on nothing"), None);
        assert_eq!(parse_listen_addr("gen=1 ready"), None);
    }

    #[test]
    fn subjects_and_events() {
        let drain = "INFO gen=1 draining (SIGTERM) 40us after gen=2 ready";
        assert_eq!(
            subject(drain),
            Some((1, "draining (SIGTERM) 40us after gen=2 ready"))
        );
        assert!(is_event(drain, 1, "draining"));
        assert!(!is_event(drain, 2, "ready"));
        assert!(is_event("gen=12 ready in 3ms", 12, "ready"));
        assert!(!is_event("gen=12 ready in 3ms", 1, "ready"));
        assert!(!is_event("regen=1 ready", 1, "ready"));
        assert_eq!(subject("no generation here"), None);
        assert_eq!(subject("gen= x gen=3 spawned"), Some((3, "spawned")));
        // A server's tag, whole or torn in front of a devsup line.
        assert_eq!(subject("devsup-server gen=1 pid=5: ready"), None);
        let torn = "devsup-server gen=1 pid=5devsup gen=2 ready in 3ms";
        assert!(is_event(torn, 2, "ready"));
        assert!(!is_event(torn, 1, "ready"));
    }

    #[test]
    fn spawned() {
        assert_eq!(
            parse_spawned("T INFO gen=3 spawned pid=4242 in 85us after trigger"),
            Some((3, 4242))
        );
        assert_eq!(parse_spawned("gen=3 spawned pid=17"), Some((3, 17)));
        assert_eq!(parse_spawned("gen=3 ready in 3ms pid=17"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("85us"), Some(85 * US));
        assert_eq!(parse_duration("85µs,"), Some(85 * US));
        assert_eq!(parse_duration("1.5ms"), Some(1500 * US));
        assert_eq!(parse_duration("2s)"), Some(2000 * MS));
        assert_eq!(parse_duration("900ns"), Some(Duration::from_nanos(900)));
        assert_eq!(parse_duration("12"), None);
        assert_eq!(parse_duration("12parsecs"), None);
    }

    #[test]
    fn handoff_timings() {
        let log = [
            "listening on 127.0.0.1:1 (name=http fd=3)",
            "gen=1 spawned pid=10",
            "gen=1 ready in 30ms",
            "reload requested by SIGHUP",
            "gen=2 spawned pid=11 in 85us after trigger",
            "gen=2 ready in 34ms",
            "gen=1 draining (SIGTERM) 40us after gen=2 ready",
            "gen=1 exited with status 0 after 12ms",
            // Counted ready by the kernel: the same shape, a reason after.
            "gen=3 ready in 4ms (listening: pid=12 polls fd 3 with epoll)",
            "gen=1 sent READY=1 31ms after it started: this server reports readiness, so handoffs wait for READY=1 from now on",
        ];
        let t = HandoffTimings::from_lines(&log);
        assert_eq!(t.trigger_to_spawn, [85 * US]);
        assert_eq!(t.spawn_to_ready, [30 * MS, 34 * MS, 4 * MS]);
        assert_eq!(t.ready_to_drain, [40 * US]);
        assert_eq!(t.drain_to_exit, [12 * MS]);
        assert_eq!(median_max(&t.spawn_to_ready), Some((30 * MS, 34 * MS)));
        assert_eq!(median_max(&[]), None);
    }
}
