//! h2load (from nghttp2), an independent HTTP/2 load generator, speaking
//! h2c with prior knowledge: run it in the background, and read what it
//! reports. Shared by the integration test (`tests/it/h2load.rs`) and
//! `devsup-bench --only h2`.
//!
//! ```no_run
//! use std::time::Duration;
//! use devsup_tests::{h2load, tools};
//!
//! let program = tools::apt("h2load", "nghttp2-client").unwrap();
//! let dir = tempfile::tempdir().unwrap();
//! let run = h2load::Run::start(
//!     &program,
//!     "127.0.0.1:8080".parse().unwrap(),
//!     h2load::Options::default(),
//!     &dir.path().join("h2load.log"),
//! )
//! .unwrap();
//! let outcome = run.finish().unwrap();
//! assert_eq!(outcome.log.failed_sent(), 0);
//! ```
//!
//! h2load never opens a new connection after a GOAWAY (it reconnects only
//! for HTTP/1.1's `Connection: close`): a client whose connection was
//! drained stops for the rest of the run.
//!
//! h2load also counts as failed, and as "errored", a request it submitted
//! to its HTTP/2 library (nghttp2) after a GOAWAY arrived: nghttp2 then
//! refuses to send it (`session_predicate_request_headers_send`: once a
//! GOAWAY is received, any GOAWAY, the first of the two-step shutdown
//! included, no new request HEADERS; `NGHTTP2_ERR_START_STREAM_NOT_ALLOWED`),
//! as RFC 9113 §6.8 requires of a client. Such a stream never left the
//! client, so it is safe to retry (§8.7), and clients that retry
//! (browsers, hyper's pooled client, tonic) never see it; no server can
//! prevent it, since h2load does not ask nghttp2 whether a request is
//! still allowed before submitting it. h2load's per-stream log
//! (`--log-file`) tells these apart: a stream's start time is taken just
//! before its HEADERS go out, so one never sent has start time 0 and
//! status -1 ([`StreamLog::never_sent`]).
//!
//! The proof, from a frame log (issue 18): `h2load -D 8 -c 16 -m 10`
//! against the reference server under devsup, SIGHUP every 0.5 s, with the
//! server's h2 frames traced (`h2=debug`); h2load reported `3633
//! succeeded, 3 failed, 3 errored`, and its log 3 streams with start 0 and
//! status -1. The server received 3633 request HEADERS and sent 3633
//! responses, no RST_STREAM; each of the 16 connections got GOAWAY
//! (2^31-1) and a PING, then the final GOAWAY or the client's own close.
//! Every stream that reached the server was answered: the 3 errored ones
//! were never sent. [`storm`] runs that shape and counts them apart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Devsup, TIMEOUT};

/// h2load's `requests:` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// Requests h2load meant to send.
    pub total: u64,
    /// Requests started.
    pub started: u64,
    /// Requests that ended, one way or another.
    pub done: u64,
    /// Requests that got a successful response (h2load's own count).
    pub succeeded: u64,
    /// Requests that failed (errored ones included).
    pub failed: u64,
    /// Requests that failed for a reason other than a status.
    pub errored: u64,
    /// Requests that timed out.
    pub timeout: u64,
}

/// Parses `requests: 10 total, 10 started, 10 done, 10 succeeded, 0 failed,
/// 0 errored, 0 timeout` out of h2load's output.
pub fn parse_requests(output: &str) -> Option<Requests> {
    let line = output.lines().find(|l| l.starts_with("requests: "))?;
    let count = |word: &str| -> Option<u64> {
        line["requests: ".len()..]
            .split(", ")
            .find_map(|part| part.strip_suffix(word)?.trim().parse().ok())
    };
    Some(Requests {
        total: count(" total")?,
        started: count(" started")?,
        done: count(" done")?,
        succeeded: count(" succeeded")?,
        failed: count(" failed")?,
        errored: count(" errored")?,
        timeout: count(" timeout").unwrap_or(0),
    })
}

/// The requests per second of h2load's `finished in 4.00s, 31744.75 req/s,
/// 1.06MB/s` line.
pub fn parse_rps(output: &str) -> Option<f64> {
    let line = output.lines().find(|l| l.starts_with("finished in "))?;
    let field = line.split(", ").find(|f| f.ends_with(" req/s"))?;
    field.strip_suffix(" req/s")?.trim().parse().ok()
}

/// h2load's `--log-file`: one line per stream, `START_US STATUS DURATION_US`.
/// A stream whose HEADERS were never sent has start 0 and status -1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamLog {
    /// Streams sent to the server, by status (-1: no response).
    pub sent: BTreeMap<i64, u64>,
    /// Streams never sent: submitted, then refused by h2load's own HTTP/2
    /// library because a GOAWAY had arrived.
    pub never_sent: u64,
    /// From the first sent stream's start to the last one's end: how long
    /// streams flowed.
    pub span: Duration,
}

impl StreamLog {
    /// Streams sent to the server.
    pub fn total_sent(&self) -> u64 {
        self.sent.values().sum()
    }

    /// Streams sent and answered 200.
    pub fn ok(&self) -> u64 {
        self.sent.get(&200).copied().unwrap_or(0)
    }

    /// Streams sent that did not get a 200.
    pub fn failed_sent(&self) -> u64 {
        self.total_sent() - self.ok()
    }

    /// Streams answered 200 per second of [`StreamLog::span`].
    pub fn ok_per_s(&self) -> f64 {
        self.ok() as f64 / self.span.as_secs_f64().max(1e-9)
    }
}

/// Parses h2load's stream log; `None` on a line that is not
/// `START_US STATUS DURATION_US`.
pub fn parse_log(text: &str) -> Option<StreamLog> {
    let mut log = StreamLog::default();
    let (mut first, mut last) = (u64::MAX, 0);
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let start: u64 = fields.next()?.parse().ok()?;
        let status: i64 = fields.next()?.parse().ok()?;
        let took: u64 = fields.next()?.parse().ok()?;
        if start == 0 && status == -1 {
            log.never_sent += 1;
        } else {
            *log.sent.entry(status).or_default() += 1;
            first = first.min(start);
            last = last.max(start + took);
        }
    }
    log.span = Duration::from_micros(last.saturating_sub(first));
    Some(log)
}

/// An h2load run's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `-D`: how long h2load sends.
    pub duration: Duration,
    /// `-c`: connections.
    pub conns: u32,
    /// `-m`: concurrent streams per connection.
    pub streams: u32,
    /// `-t`: threads.
    pub threads: u32,
}

impl Default for Options {
    /// 8 connections of 8 streams each, one thread, 4 s.
    fn default() -> Options {
        Options {
            duration: Duration::from_secs(4),
            conns: 8,
            streams: 8,
            threads: 1,
        }
    }
}

/// A running h2load, killed if dropped before [`Run::finish`].
#[derive(Debug)]
pub struct Run {
    child: Option<Child>,
    log: PathBuf,
    started: Instant,
}

/// What an h2load run reported.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Its `requests:` line.
    pub requests: Requests,
    /// Its `finished in` line's req/s (its own figure: requests done over
    /// the whole duration).
    pub rps: f64,
    /// Its stream log.
    pub log: StreamLog,
    /// How many of its connections ended before its run did (h2load prints
    /// `Process Request Failure` for each).
    pub closed: usize,
    /// Its stdout and stderr, for a report.
    pub output: String,
    /// From start to exit.
    pub elapsed: Duration,
}

impl Run {
    /// Starts `h2load` against `http://ADDR/` with `options`, logging each
    /// stream to `log` (which must not exist yet).
    pub fn start(
        h2load: &Path,
        addr: SocketAddr,
        options: Options,
        log: &Path,
    ) -> std::io::Result<Run> {
        let child = Command::new(h2load)
            .arg("-D")
            .arg(format!("{}ms", options.duration.as_millis().max(1)))
            .arg("-c")
            .arg(options.conns.to_string())
            .arg("-m")
            .arg(options.streams.to_string())
            .arg("-t")
            .arg(options.threads.to_string())
            .arg("--log-file")
            .arg(log)
            .arg(format!("http://{addr}/"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Run {
            child: Some(child),
            log: log.to_owned(),
            started: Instant::now(),
        })
    }

    /// Streams h2load has logged so far (it logs each as it ends).
    pub fn streams_logged(&self) -> usize {
        std::fs::read_to_string(&self.log).map_or(0, |text| text.lines().count())
    }

    /// Waits until h2load has logged `n` streams; `false` if it had not
    /// after `timeout`.
    pub fn wait_flowing(&self, n: usize, timeout: Duration) -> bool {
        crate::harness::wait_until(timeout, || self.streams_logged() >= n)
    }

    /// Waits for h2load to exit and reads what it reported; an error says
    /// what was missing.
    pub fn finish(mut self) -> Result<Outcome, String> {
        let child = self.child.take().ok_or("h2load was already reaped")?;
        let output = child
            .wait_with_output()
            .map_err(|e| format!("waiting for h2load: {e}"))?;
        let elapsed = self.started.elapsed();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        let requests = parse_requests(&text)
            .ok_or_else(|| format!("no requests: line in h2load's output:\n{text}"))?;
        let rps = parse_rps(&text).unwrap_or(0.0);
        let log_text = std::fs::read_to_string(&self.log)
            .map_err(|e| format!("reading {}: {e}", self.log.display()))?;
        let log = parse_log(&log_text)
            .ok_or_else(|| format!("a malformed line in {}", self.log.display()))?;
        Ok(Outcome {
            requests,
            rps,
            log,
            closed: text.matches("Process Request Failure").count(),
            output: text,
            elapsed,
        })
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A storm of reloads under h2load: the shape of issue 18.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storm {
    /// SIGHUPs to send.
    pub reloads: u32,
    /// At least this long from one SIGHUP to the next (pacing).
    pub every: Duration,
    /// Each h2load run's shape; its duration must outlast a reload.
    pub options: Options,
}

impl Default for Storm {
    /// 16 connections × 10 streams, a reload every 0.5 s, 6 reloads; each
    /// h2load run lasts 2 s, so a reload late on a loaded machine still
    /// finds its connections open.
    fn default() -> Storm {
        Storm {
            reloads: 6,
            every: Duration::from_millis(500),
            options: Options {
                duration: Duration::from_secs(2),
                conns: 16,
                streams: 10,
                threads: 1,
            },
        }
    }
}

/// What a [`storm`] saw: one h2load run per reload.
#[derive(Debug, Clone, Default)]
pub struct StormOutcome {
    /// SIGHUPs sent.
    pub reloads: u32,
    /// Each h2load run's outcome.
    pub runs: Vec<Outcome>,
    /// Runs that could not be started or read, and runs whose streams never
    /// flowed, with why.
    pub errors: Vec<String>,
    /// The generation serving at the end.
    pub generation: u64,
}

impl StormOutcome {
    fn sum(&self, f: impl Fn(&Outcome) -> u64) -> u64 {
        self.runs.iter().map(f).sum()
    }

    /// Streams sent to the server.
    pub fn sent(&self) -> u64 {
        self.sum(|o| o.log.total_sent())
    }

    /// Streams sent and answered 200.
    pub fn ok(&self) -> u64 {
        self.sum(|o| o.log.ok())
    }

    /// Streams sent that did not get a 200.
    pub fn failed_sent(&self) -> u64 {
        self.sum(|o| o.log.failed_sent())
    }

    /// Streams h2load's library never sent (after a GOAWAY).
    pub fn never_sent(&self) -> u64 {
        self.sum(|o| o.log.never_sent)
    }

    /// h2load's own failed count.
    pub fn h2load_failed(&self) -> u64 {
        self.sum(|o| o.requests.failed)
    }

    /// h2load's own errored count.
    pub fn h2load_errored(&self) -> u64 {
        self.sum(|o| o.requests.errored)
    }

    /// h2load's timeouts.
    pub fn timeouts(&self) -> u64 {
        self.sum(|o| o.requests.timeout)
    }

    /// Streams h2load started and did not finish.
    pub fn unfinished(&self) -> u64 {
        self.sum(|o| o.requests.started - o.requests.done)
    }

    /// h2load connections that ended before their run did: drained.
    pub fn closed(&self) -> usize {
        self.runs.iter().map(|o| o.closed).sum()
    }

    /// h2load connections opened.
    pub fn conns(&self, options: &Options) -> usize {
        self.runs.len() * options.conns as usize
    }
}

/// Reloads `devsup` (serving `generation`) `storm.reloads` times, at most
/// one every `storm.every`, each while a fresh h2load run loads it: start
/// h2load, wait until each of its streams slots has had a stream logged,
/// SIGHUP, wait for the new generation's `ready`. h2load does not
/// reconnect after a GOAWAY, so each run's connections end at the drain
/// that follows its SIGHUP (or, caught at once by the new generation's
/// predecessor, at the one before); the runs overlap while they sit out
/// their duration. Stream logs go to `dir`.
pub fn storm(
    devsup: &Devsup,
    h2load: &Path,
    dir: &Path,
    generation: u64,
    storm: Storm,
) -> StormOutcome {
    let mut outcome = StormOutcome {
        generation,
        ..StormOutcome::default()
    };
    let slots = (storm.options.conns * storm.options.streams) as usize;
    let mut runs = Vec::new();
    let mut last = None::<Instant>;
    for k in 1..=storm.reloads {
        let log = dir.join(format!("h2load-storm-{}.log", outcome.generation));
        let run = match Run::start(h2load, devsup.addr(), storm.options, &log) {
            Ok(run) => run,
            Err(e) => {
                outcome
                    .errors
                    .push(format!("reload {k}: spawning h2load: {e}"));
                continue;
            }
        };
        if !run.wait_flowing(slots, TIMEOUT) {
            outcome
                .errors
                .push(format!("reload {k}: h2load's streams never flowed"));
        }
        // Pacing, not synchronisation: the reload waits for its events.
        if let Some(last) = last {
            std::thread::sleep((last + storm.every).saturating_duration_since(Instant::now()));
        }
        last = Some(Instant::now());
        devsup.reload();
        outcome.reloads += 1;
        outcome.generation += 1;
        devsup.wait_event(outcome.generation, "ready", TIMEOUT);
        runs.push(run);
    }
    for (k, run) in runs.into_iter().enumerate() {
        match run.finish() {
            Ok(run) => outcome.runs.push(run),
            Err(why) => outcome.errors.push(format!("run {}: {why}", k + 1)),
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_requests_line() {
        let out = "finished in 1.00s, 12345.67 req/s, 1.06MB/s\nrequests: 100 total, 99 started, 98 done, 97 succeeded, 1 failed, 2 errored, 3 timeout\nstatus codes: 97 2xx";
        assert_eq!(
            parse_requests(out),
            Some(Requests {
                total: 100,
                started: 99,
                done: 98,
                succeeded: 97,
                failed: 1,
                errored: 2,
                timeout: 3
            })
        );
        assert_eq!(parse_requests("no such line"), None);
        assert_eq!(parse_rps(out), Some(12345.67));
        assert_eq!(parse_rps("no such line"), None);
    }

    #[test]
    fn parses_the_stream_log() {
        let log = parse_log(
            "1796048916425733\t200\t1484\n0\t-1\t1306146923\n1796048916425734\t200\t12\n",
        )
        .unwrap();
        assert_eq!(log.never_sent, 1);
        assert_eq!(
            log.sent.clone().into_iter().collect::<Vec<_>>(),
            vec![(200, 2)]
        );
        assert_eq!((log.ok(), log.failed_sent()), (2, 0));
        // From the first start to the last end: 1484 us.
        assert_eq!(log.span, Duration::from_micros(1484));
        assert_eq!(parse_log("1\t200\n"), None);
        assert_eq!(parse_log(""), Some(StreamLog::default()));
    }
}
