//! The mixed soak (issue 18 §3), shared by `devsup-bench --only mixed` and
//! the integration test `soak::`: devsup runs the reference server with a
//! build step and a watched directory while HTTP/1.1 keep-alive and close
//! clients, HTTP/2 clients, WebSocket and event-stream clients load it, and a seeded random
//! sequence of actions hits it: SIGHUPs, edits, failing builds, and SIGKILLs
//! of the starting, the active and a draining generation.
//!
//! Each action waits for its outcome in devsup's log (a newer generation
//! ready, the build failed, the killed generation exited) before the next.
//! A failure a client sees within [`KILL_WINDOW`] of a SIGKILL the soak
//! sent is counted as on a killed generation (expected: the soak killed the
//! process holding the connection); every other failure is a defect. The
//! attribution is by time because a failed request has no answer to name
//! its generation (HTTP failures by the 20 ms window their request started
//! in).
//!
//! The same seed gives the same sequence of actions (the timing of the
//! processes differs from run to run).

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::clients::Clients;
use crate::devlog;
use crate::h2client::H2Clients;
use crate::harness::{Devsup, TIMEOUT, wait_until};
use crate::load::{self, LoadConfig, LoadReport, Mode};
use crate::procfs;

/// A failure this close to a SIGKILL the soak sent is on a killed
/// generation.
pub const KILL_WINDOW: Duration = Duration::from_secs(1);

/// The width of the windows the HTTP loads count their failures in.
const WINDOW: Duration = Duration::from_millis(20);

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// How long the actions go on.
    pub duration: Duration,
    /// The seed of the action sequence (print it; pass it again to replay).
    pub seed: u64,
    /// Clients of each HTTP/1.1 kind (keep-alive, close).
    pub http_conns: usize,
    /// WebSocket clients.
    pub ws: usize,
    /// Event-stream clients.
    pub sse: usize,
    /// HTTP/2 clients.
    pub h2: usize,
    /// Echo devsup's log.
    pub verbose: bool,
}

/// One action of the soak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// SIGHUP.
    Reload,
    /// A file written in the watched directory.
    Edit,
    /// A reload whose build step fails.
    FailedBuild,
    /// SIGKILL of a generation just spawned, before it is ready.
    KillStarting,
    /// SIGKILL of the generation serving.
    KillActive,
    /// SIGKILL of the previous generation while it drains.
    KillDraining,
}

impl Action {
    /// Every action, in the order of the report.
    pub const ALL: [Action; 6] = [
        Action::Reload,
        Action::Edit,
        Action::FailedBuild,
        Action::KillStarting,
        Action::KillActive,
        Action::KillDraining,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Action::Reload => "SIGHUP",
            Action::Edit => "edit",
            Action::FailedBuild => "failing build",
            Action::KillStarting => "SIGKILL starting",
            Action::KillActive => "SIGKILL active",
            Action::KillDraining => "SIGKILL draining",
        }
    }
}

/// One kind of client's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindReport {
    /// `http/1.1 keep-alive`, `http/1.1 close`, `websocket`, `sse`,
    /// `http/2`.
    pub kind: &'static str,
    /// Requests (HTTP) or connections (WebSocket, SSE).
    pub requests: u64,
    /// Failed ones.
    pub failed: u64,
    /// Of the failed, those within [`KILL_WINDOW`] of a SIGKILL.
    pub on_killed: u64,
}

impl KindReport {
    /// Failures not explained by a kill: defects.
    pub fn unexplained(&self) -> u64 {
        self.failed - self.on_killed
    }
}

/// devsup's own process at one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Open fds.
    pub fds: usize,
    /// Threads.
    pub threads: u64,
    /// `VmRSS` in KiB.
    pub rss_kib: u64,
}

impl Sample {
    /// Samples process `pid`.
    pub fn take(pid: i32) -> Sample {
        Sample {
            fds: procfs::fd_count(pid),
            threads: procfs::status_number(pid, "Threads"),
            rss_kib: procfs::status_number(pid, "VmRSS"),
        }
    }
}

/// What a soak saw.
#[derive(Debug, Clone)]
pub struct SoakReport {
    /// The seed it ran with.
    pub seed: u64,
    /// How long the actions went on.
    pub elapsed: Duration,
    /// Actions done, in order.
    pub actions: Vec<Action>,
    /// Per kind of client.
    pub kinds: Vec<KindReport>,
    /// devsup with gen 1 ready and the clients connected.
    pub first: Sample,
    /// devsup a third of the way through the actions: by then every kind
    /// of action has run many times, so RSS growth from here to `last` is
    /// what a longer run would keep adding, and growth before it is the
    /// allocator and buffers reaching their working size.
    pub third: Sample,
    /// devsup at the end, once only the active generation was left (or
    /// [`TIMEOUT`] passed).
    pub last: Sample,
    /// Processes of any generation still alive after devsup exited.
    pub left_behind: Vec<i32>,
    /// devsup's exit code.
    pub exit_code: Option<i32>,
    /// The first failures, for a human.
    pub details: Vec<String>,
}

const BUILD: &str =
    "if [ -f fail ]; then echo 'error: the soak asked this build to fail' >&2; exit 1; fi\n";

/// Runs the soak. Panics (with devsup's log) when devsup does not reach
/// an action's outcome within [`TIMEOUT`].
pub fn run(config: &SoakConfig) -> SoakReport {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("build.sh"), BUILD).expect("writing build.sh");
    std::fs::create_dir(dir.path().join("src")).expect("creating src/");
    let devsup = Devsup::builder(dir.path())
        .echo(config.verbose)
        .args(["--build", "sh build.sh", "--watch", "src"])
        // A start-up delay gives the kill of a starting generation its
        // window; only READY=1 counts, as the server polls before it.
        .args(["--ready", "notify", "--drain-timeout", "5s"])
        .server_args(["--startup-delay", "100"])
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let addr = devsup.addr();
    let http = |mode| {
        load::start(LoadConfig {
            conns: config.http_conns,
            mode,
            duration: Duration::from_secs(24 * 3600),
            window: Some(WINDOW),
            ..LoadConfig::new(addr)
        })
    };
    let (keep_alive, close) = (http(Mode::KeepAlive), http(Mode::Close));
    let clients = Clients::start(addr, config.ws, config.sse);
    let h2 = H2Clients::start(addr, config.h2);
    assert!(
        keep_alive.wait_ok(10, TIMEOUT) && close.wait_ok(10, TIMEOUT),
        "the load does not flow"
    );
    assert!(clients.wait_all_on(1, TIMEOUT), "{:?}", clients.seen());
    assert!(
        wait_until(TIMEOUT, || h2.ok() > 0 || config.h2 == 0),
        "no HTTP/2 answer"
    );
    let first = Sample::take(devsup.pid());

    let mut soak = Soak::new(&devsup, dir.path(), config.seed);
    let started = Instant::now();
    let mut third = None;
    while started.elapsed() < config.duration {
        soak.step();
        if third.is_none() && started.elapsed() >= config.duration / 3 {
            third = Some(Sample::take(devsup.pid()));
        }
    }
    let third = third.unwrap_or_else(|| Sample::take(devsup.pid()));
    let elapsed = started.elapsed();
    let (actions, kills) = (soak.actions, soak.kills);

    let keep_alive = keep_alive.finish();
    let close = close.finish();
    let seen = clients.finish();
    let h2 = h2.finish();
    let failed_at = seen_failures(&seen.failed_at);
    let last = settle(&devsup, first);
    let spawned = spawned_pids(&devsup.lines());
    let exit_code = devsup.terminate(TIMEOUT).code();
    let left_behind = left_behind(&spawned);

    let on_killed = |at: &Instant| kills.iter().any(|k| near(*at, *k));
    let h2_failed_at: Vec<Instant> = h2.failed.iter().map(|f| f.0).collect();
    let kinds = vec![
        http_kind("http/1.1 keep-alive", &keep_alive, &on_killed),
        http_kind("http/1.1 close", &close, &on_killed),
        client_kind("websocket", seen.ws_connects, &failed_at.0, &on_killed),
        client_kind("sse", seen.sse_connects, &failed_at.1, &on_killed),
        client_kind(
            "http/2",
            h2.ok + h2.failed.len() as u64,
            &h2_failed_at,
            &on_killed,
        ),
    ];
    let mut details: Vec<String> = keep_alive
        .samples
        .iter()
        .chain(&close.samples)
        .map(|f| {
            format!(
                "{} client {} at {:?}: {}",
                f.outcome, f.client, f.at, f.detail
            )
        })
        .collect();
    details.extend(seen.details.iter().cloned());
    details.extend(h2.failed.iter().take(20).map(|f| f.1.clone()));
    SoakReport {
        seed: config.seed,
        elapsed,
        actions,
        kinds,
        first,
        third,
        last,
        left_behind,
        exit_code,
        details,
    }
}

fn near(at: Instant, kill: Instant) -> bool {
    let gap = if at > kill { at - kill } else { kill - at };
    gap <= KILL_WINDOW
}

/// The WebSocket and the event-stream failures' instants.
fn seen_failures(all: &[(Instant, &'static str)]) -> (Vec<Instant>, Vec<Instant>) {
    let of = |kind| all.iter().filter(|f| f.1 == kind).map(|f| f.0).collect();
    (of("ws"), of("sse"))
}

/// An HTTP load's figures: its failures are counted window by window
/// ([`WINDOW`]), by when their request started; a window near a kill
/// counts whole.
fn http_kind(
    kind: &'static str,
    report: &LoadReport,
    on_killed: &dyn Fn(&Instant) -> bool,
) -> KindReport {
    let on_killed = report.timeline.as_ref().map_or(0, |timeline| {
        (timeline.windows.iter())
            .filter(|w| w.failed > 0)
            .filter(|w| {
                let start = report.started + w.start;
                on_killed(&start) || on_killed(&(start + timeline.width(w)))
            })
            .map(|w| w.failed)
            .sum()
    });
    KindReport {
        kind,
        requests: report.total(),
        failed: report.failures(),
        on_killed,
    }
}

fn client_kind(
    kind: &'static str,
    requests: u64,
    failed_at: &[Instant],
    on_killed: &dyn Fn(&Instant) -> bool,
) -> KindReport {
    KindReport {
        kind,
        requests,
        failed: failed_at.len() as u64,
        on_killed: failed_at.iter().filter(|at| on_killed(at)).count() as u64,
    }
}

/// Waits until devsup's fds and threads are back to `first` (every drain
/// over, every reader thread gone), at most [`TIMEOUT`]; samples then.
fn settle(devsup: &Devsup, first: Sample) -> Sample {
    wait_until(TIMEOUT, || {
        let now = Sample::take(devsup.pid());
        now.fds <= first.fds && now.threads <= first.threads
    });
    Sample::take(devsup.pid())
}

/// The pid of every generation devsup spawned, from its log.
fn spawned_pids(lines: &[String]) -> Vec<i32> {
    lines
        .iter()
        .filter_map(|l| devlog::parse_spawned(l))
        .map(|(_, pid)| pid)
        .collect()
}

/// Which of `pids` (each the leader of its generation's process group)
/// still has a process alive.
fn left_behind(pids: &[i32]) -> Vec<i32> {
    pids.iter()
        .flat_map(|&pgid| procfs::group_members(pgid))
        .collect()
}

/// The soak's state: devsup, its directory, the random sequence.
struct Soak<'a> {
    devsup: &'a Devsup,
    dir: &'a Path,
    rng: fastrand::Rng,
    /// The generation serving.
    active: u64,
    actions: Vec<Action>,
    kills: Vec<Instant>,
    edits: u64,
}

impl<'a> Soak<'a> {
    fn new(devsup: &'a Devsup, dir: &'a Path, seed: u64) -> Soak<'a> {
        Soak {
            devsup,
            dir,
            rng: fastrand::Rng::with_seed(seed),
            active: 1,
            actions: Vec::new(),
            kills: Vec::new(),
            edits: 0,
        }
    }

    /// One random action, and its outcome.
    fn step(&mut self) {
        let action = Action::ALL[self.rng.usize(..Action::ALL.len())];
        self.actions.push(action);
        self.devsup.mark();
        match action {
            Action::Reload => {
                self.devsup.reload();
                self.wait_newer_ready();
            }
            Action::Edit => {
                self.edits += 1;
                let file = self.dir.join("src/edited.txt");
                std::fs::write(file, self.edits.to_string()).expect("writing src/edited.txt");
                self.wait_newer_ready();
            }
            Action::FailedBuild => self.failed_build(),
            Action::KillStarting => self.kill_starting(),
            Action::KillActive => {
                let pid = self.devsup.generation_pid(self.active, TIMEOUT);
                self.sigkill(pid);
                self.wait_newer_ready();
            }
            Action::KillDraining => self.kill_draining(),
        }
    }

    fn failed_build(&mut self) {
        let fail = self.dir.join("fail");
        std::fs::write(&fail, "").expect("writing fail");
        self.devsup.reload();
        self.devsup.wait_for_new(
            |l: &str| l.contains("build step") && l.contains(" failed "),
            TIMEOUT,
        );
        std::fs::remove_file(&fail).expect("removing fail");
    }

    fn kill_starting(&mut self) {
        self.devsup.reload();
        let spawned = self.devsup.wait_for_new(
            |l: &str| devlog::parse_spawned(l).is_some_and(|(g, _)| g > self.active),
            TIMEOUT,
        );
        let (generation, pid) = devlog::parse_spawned(&spawned).expect("matched above");
        self.sigkill(pid);
        let gone = self.devsup.wait_for_new(
            |l: &str| {
                devlog::is_event(l, generation, "failed before ready")
                    || devlog::is_event(l, generation, "ready")
            },
            TIMEOUT,
        );
        if devlog::is_event(&gone, generation, "ready") {
            // Ready before the kill landed: it was the active one.
            self.active = generation;
            self.wait_newer_ready();
        }
    }

    fn kill_draining(&mut self) {
        let old = self.active;
        let pid = self.devsup.generation_pid(old, TIMEOUT);
        self.devsup.reload();
        self.wait_newer_ready();
        self.devsup
            .wait_for_line(|l: &str| devlog::is_event(l, old, "draining"), TIMEOUT);
        // It may have drained and exited already: then there is nothing
        // to kill (and no failure to expect).
        if crate::harness::pid_alive(pid) {
            self.sigkill(pid);
        }
        self.devsup
            .wait_for_line(|l: &str| devlog::is_event(l, old, "exited"), TIMEOUT);
    }

    fn sigkill(&mut self, pid: i32) {
        self.kills.push(Instant::now());
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }

    /// Waits (after the mark) for a generation newer than the active one
    /// to be ready, and makes it the active one.
    fn wait_newer_ready(&mut self) {
        let active = self.active;
        let line = self.devsup.wait_for_new(
            |l: &str| {
                devlog::subject(l).is_some_and(|(g, rest)| g > active && rest.starts_with("ready"))
            },
            TIMEOUT,
        );
        self.active = devlog::subject(&line).map_or(active, |(g, _)| g);
    }
}

/// The report as text: the seed, the actions done, per kind of client its
/// requests, failures and failures on a killed generation, devsup's fds,
/// threads and RSS first and last, what was left behind.
pub fn table(r: &SoakReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mixed soak, seed {} (replay: --seed {} / DEVSUP_SOAK_SEED={}): {} actions in {:.1?}",
        r.seed,
        r.seed,
        r.seed,
        r.actions.len(),
        r.elapsed
    );
    let counts: Vec<String> = Action::ALL
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a.name(),
                r.actions.iter().filter(|x| *x == a).count()
            )
        })
        .collect();
    let _ = writeln!(out, "actions: {}", counts.join(", "));
    let _ = writeln!(
        out,
        "{:<22} {:>10} {:>8} {:>16} {:>12}",
        "client", "requests", "failed", "on a killed gen", "unexplained"
    );
    for k in &r.kinds {
        let _ = writeln!(
            out,
            "{:<22} {:>10} {:>8} {:>16} {:>12}",
            k.kind,
            k.requests,
            k.failed,
            k.on_killed,
            k.unexplained()
        );
    }
    let _ = writeln!(
        out,
        "devsup first / a third in / last: fds {} / {} / {}, threads {} / {} / {}, RSS {} / {} / {} KiB",
        r.first.fds,
        r.third.fds,
        r.last.fds,
        r.first.threads,
        r.third.threads,
        r.last.threads,
        r.first.rss_kib,
        r.third.rss_kib,
        r.last.rss_kib
    );
    let _ = write!(
        out,
        "devsup exit code {:?}; processes left behind: {:?}",
        r.exit_code, r.left_behind
    );
    out
}
