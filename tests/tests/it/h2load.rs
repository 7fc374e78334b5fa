//! HTTP/2 across reloads, with an independent load generator: h2load (from
//! nghttp2) speaks h2c with prior knowledge to devsup running the
//! reference server, while devsup reloads by SIGHUP. Each old generation
//! drains the HTTP/2 way (GOAWAY, streams in flight finish), so h2load must
//! see 0 failed and 0 errored streams.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use devsup_tests::harness::{Devsup, Signal, TIMEOUT, wait_until};
use devsup_tests::tools;

/// h2load's `requests:` line.
#[derive(Debug, PartialEq, Eq)]
struct Requests {
    total: u64,
    started: u64,
    done: u64,
    succeeded: u64,
    failed: u64,
    errored: u64,
    timeout: u64,
}

/// Parses `requests: 10 total, 10 started, 10 done, 10 succeeded, 0 failed,
/// 0 errored, 0 timeout` out of h2load's output.
fn parse_requests(output: &str) -> Option<Requests> {
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

#[test]
fn parses_the_requests_line() {
    let out = "finished in 1.00s\nrequests: 100 total, 99 started, 98 done, 97 succeeded, 1 failed, 2 errored, 3 timeout\nstatus codes: 97 2xx";
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
}

/// h2load's `--log-file`: one line per stream, `START_US STATUS DURATION_US`.
/// A stream whose HEADERS were never sent has start 0 and status -1.
#[derive(Debug, Default, PartialEq, Eq)]
struct StreamLog {
    /// Streams sent to the server, by status.
    sent: std::collections::BTreeMap<i64, u64>,
    /// Streams never sent: submitted, then refused by h2load's own HTTP/2
    /// library because a GOAWAY had arrived.
    never_sent: u64,
}

fn parse_log(text: &str) -> StreamLog {
    let mut log = StreamLog::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let start: u64 = fields.next().and_then(|f| f.parse().ok()).expect("start");
        let status: i64 = fields.next().and_then(|f| f.parse().ok()).expect("status");
        if start == 0 && status == -1 {
            log.never_sent += 1;
        } else {
            *log.sent.entry(status).or_default() += 1;
        }
    }
    log
}

#[test]
fn parses_the_stream_log() {
    let log =
        parse_log("1796048916425733\t200\t1484\n0\t-1\t1306146923\n1796048916425734\t200\t12\n");
    assert_eq!(log.never_sent, 1);
    assert_eq!(log.sent.into_iter().collect::<Vec<_>>(), vec![(200, 2)]);
}

/// One h2load run (8 connections, 8 streams each, 4 s) with one reload in
/// the middle: returns h2load's counts, its stream log, and how many of its
/// connections the drain closed while it ran.
fn round(
    devsup: &Devsup,
    h2load: &Path,
    generation: u64,
    dir: &Path,
) -> (Requests, StreamLog, usize) {
    let log = dir.join(format!("h2load-{generation}.log"));
    let child = Command::new(h2load)
        .args(["-D", "4", "-c", "8", "-m", "8", "-t", "1", "--log-file"])
        .arg(&log)
        .arg(format!("http://{}/", devsup.addr()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning h2load");
    // h2load logs each finished request: reload once streams flow.
    let flowing = wait_until(TIMEOUT, || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.lines().count() >= 1000)
    });
    let reloaded = Instant::now();
    devsup.signal(Signal::SIGHUP);
    devsup.wait_event(generation + 1, "ready", TIMEOUT);
    devsup.wait_event(generation, "exited", TIMEOUT);
    let reload_took = reloaded.elapsed();
    let output = child.wait_with_output().expect("waiting for h2load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!(
        "h2load round {generation} (reload took {reload_took:?}):\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(flowing, "h2load's streams never flowed");
    let requests = parse_requests(&stdout).expect("h2load's requests: line");
    // h2load prints this when a connection of its ends before its run does.
    let closed = stdout.matches("Process Request Failure").count();
    let log = parse_log(&std::fs::read_to_string(&log).expect("h2load's log"));
    (requests, log, closed)
}

/// h2load never opens a new connection after a GOAWAY (it reconnects only
/// for HTTP/1.1's `Connection: close`): a client whose connection was
/// drained stops. So each round is a timed run (`-D`) with one reload.
///
/// h2load counts one more thing as failed: a request it submitted to its
/// HTTP/2 library (nghttp2) just before the GOAWAY was read (a response
/// and the GOAWAY in one read), which nghttp2 then refuses to send, since
/// GOAWAY forbids new streams. Such a stream never left the client, so it
/// is safe to retry (RFC 9113 §8.7), and clients that retry (browsers,
/// hyper's pooled client, tonic) never see it; no server can prevent it.
/// h2load's log tells these apart (start time 0, status -1), so the check
/// is: every stream that was sent succeeded, and every failure h2load
/// counts is a stream that was never sent.
#[test]
fn h2load_sees_no_failed_stream_across_reloads() {
    let Some(h2load) = tools::require(
        "h2load across reloads",
        tools::apt("h2load", "nghttp2-client"),
    ) else {
        return;
    };
    const ROUNDS: u64 = 3;
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let (mut sent, mut never_sent) = (0, 0);
    for generation in 1..=ROUNDS {
        let (requests, log, closed) = round(&devsup, &h2load, generation, dir.path());
        eprintln!("round {generation}: {requests:?} {log:?}");
        assert!(requests.succeeded > 0, "{requests:?}");
        assert_eq!(requests.timeout, 0, "{requests:?}");
        assert_eq!(requests.started, requests.done, "{requests:?}");
        let ok = log.sent.get(&200).copied().unwrap_or(0);
        assert_eq!(
            log.sent.values().sum::<u64>(),
            ok,
            "a stream sent to the server failed: {log:?}"
        );
        assert_eq!(requests.succeeded, ok, "{requests:?} {log:?}");
        assert_eq!(
            (requests.failed, requests.errored),
            (log.never_sent, log.never_sent),
            "h2load failures other than never-sent streams: {requests:?} {log:?}"
        );
        assert_eq!(closed, 8, "every connection drained while h2load ran");
        sent += ok;
        never_sent += log.never_sent;
    }
    eprintln!(
        "h2load over {ROUNDS} reloads: {sent} streams sent, all 200; \
         {never_sent} refused by h2load's own library after GOAWAY, never sent"
    );
}
