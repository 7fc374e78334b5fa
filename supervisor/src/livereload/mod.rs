//! `--livereload`: the developer's browser reloads when the next generation
//! is ready, and shows a failed build's output over the page the last good
//! generation still serves.
//!
//! devsup runs a small HTTP server of its own (on its own thread and port;
//! none of the application's traffic passes through it) that serves
//! [`SCRIPT_PATH`], the client script, and [`EVENTS_PATH`], a stream of
//! server-sent events:
//!
//! - `hello` (data: the generation last announced ready, `0` if none, and
//!   an id of this devsup run), on every connection, followed by the
//!   current `building` or `failed` state;
//! - `building`, when a build starts;
//! - `failed` (data: a one-line summary, then the build's output, last
//!   64 KiB), when a build fails and the running
//!   generation is kept;
//! - `ready` (data: `N`), when generation N is the one connections go to
//!   and the one before it has exited (or 250 ms have passed).
//!
//! The script reloads the page on `ready` (or on a `hello` naming another
//! generation than the one it first saw), never on a file change; on
//! `failed` it shows an overlay with the output, ANSI colours rendered.
//!
//! What the events mean is read off the state machine's steps by
//! [`step`]: the machine itself knows nothing of browsers. Each
//! generation, and each build step, gets `DEVSUP_LIVERELOAD=http://HOST:PORT`
//! in its environment, so a server (or the tower layer of devsup-serve)
//! can add the script tag to its pages.

mod capture;
mod server;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info};

use crate::machine::{Action, Event, Exit, GenId, State};

/// The environment variable a generation finds the live-reload server's
/// URL in (`http://127.0.0.1:35729`).
// TODO: use devsup_protocol::ENV_LIVERELOAD once the protocol crate has it
// (added on the serving library's branch); the string must stay the same.
pub const ENV_LIVERELOAD: &str = "DEVSUP_LIVERELOAD";
/// Where `--livereload` listens when given no address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:35729";
/// The client script's path.
pub const SCRIPT_PATH: &str = "/devsup-livereload.js";
/// The event stream's path.
pub const EVENTS_PATH: &str = "/events";
/// The client script.
pub const CLIENT_JS: &str = include_str!("client.js");

/// How long, at most, the browsers are told of a new generation only once
/// the old one has exited. Between the new generation's READY and the old
/// one acting on its drain signal, both accept from the socket: a page
/// reloaded at once could land on the old generation.
const HANDOFF_GRACE: Duration = Duration::from_millis(250);
/// How long a failed build's output may still be arriving after its
/// process group is gone (a process that left the group holding the pipe).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// The live-reload server: what the browsers are told, and to whom.
#[derive(Debug, Clone)]
pub struct Hub {
    shared: Arc<Mutex<Shared>>,
    url: String,
    /// The live-reload server's runtime, for timers.
    runtime: tokio::runtime::Handle,
}

#[derive(Debug, Default)]
struct Shared {
    /// The generation last announced ready; 0 before the first.
    ready: GenId,
    /// This devsup, told in the hello: generation numbers start again at 1
    /// when devsup does, so a page reconnecting to another devsup reloads.
    instance: String,
    /// A build under way or failed since the last ready generation, told to
    /// browsers that connect now.
    pending: Option<Bytes>,
    /// One sender per connected browser.
    clients: Vec<UnboundedSender<Bytes>>,
    /// The output of the build under way, or of the last one.
    capture: Option<Arc<capture::Capture>>,
    /// The build step last started, for the failure summary.
    build_cmd: String,
    observer: Observer,
}

/// Starts the live-reload server if `addr` is set.
pub fn start(addr: Option<SocketAddr>) -> anyhow::Result<Option<Hub>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let shared = Arc::new(Mutex::new(Shared {
        instance: format!("{}-{}", std::process::id(), started.as_micros()),
        ..Shared::default()
    }));
    let (bound, runtime) = server::start(addr, shared.clone())?;
    let url = format!("http://{}", advertised(bound));
    info!("live reload at {url} (pages load <script src=\"{url}{SCRIPT_PATH}\"></script>)");
    Ok(Some(Hub {
        shared,
        url,
        runtime,
    }))
}

/// The address a browser connects to: a wildcard bind is reached on the
/// loopback address of its family.
fn advertised(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bound.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bound.port())
        }
        _ => bound,
    }
}

/// `DEVSUP_LIVERELOAD=URL` for a generation's environment, if live reload
/// is on.
pub fn env(hub: Option<&Hub>) -> Option<(std::ffi::OsString, std::ffi::OsString)> {
    hub.map(|hub| (ENV_LIVERELOAD.into(), hub.url.clone().into()))
}

/// Runs one step of the state machine and tells the browsers what it
/// meant. Without live reload, just the step.
pub fn step(hub: Option<&Hub>, state: &mut State, event: Event, now: Instant) -> Vec<Action> {
    let Some(hub) = hub else {
        return state.step(event, now);
    };
    let seen = Seen::of(&event);
    let before = state.active();
    let actions = state.step(event, now);
    let notices = hub
        .lock()
        .observer
        .observe(seen, before, state.active(), &actions);
    for notice in notices {
        hub.tell(notice);
    }
    actions
}

/// Starts build step `cmd`: with live reload, its output is copied to
/// devsup's and kept for the overlay; without, as [`crate::build::spawn`].
pub fn spawn_build(hub: Option<&Hub>, cmd: &str) -> anyhow::Result<i32> {
    match hub {
        None => crate::build::spawn(cmd),
        Some(hub) => {
            let capture = {
                let mut shared = hub.lock();
                shared.build_cmd = cmd.to_owned();
                shared
                    .capture
                    .get_or_insert_with(|| Arc::new(capture::Capture::default()))
                    .clone()
            };
            let env: Vec<_> = env(Some(hub)).into_iter().collect();
            capture::spawn(cmd, &capture, env)
        }
    }
}

impl Hub {
    /// The URL browsers reach the server at, `http://HOST:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock cannot leave the state torn in a
        // way that matters to a browser: carry on with it.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tell(&self, notice: Notice) {
        match notice {
            Notice::Handoff { new, .. } => {
                // Told at once if the old generation exits first.
                let shared = self.shared.clone();
                self.runtime.spawn(async move {
                    tokio::time::sleep(HANDOFF_GRACE).await;
                    let due = {
                        let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
                        shared.observer.release(new)
                    };
                    if let Some(notice) = due {
                        publish(&shared, notice);
                    }
                });
            }
            notice => publish(&self.shared, notice),
        }
    }
}

/// Tells every browser.
fn publish(shared: &Mutex<Shared>, notice: Notice) {
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    let message = match &notice {
        Notice::Building => {
            // A new build: its output replaces the last one's.
            lock().capture = Some(Arc::new(capture::Capture::default()));
            sse("building", "")
        }
        Notice::Failed(exit) => {
            let capture = lock().capture.clone();
            let output = capture.map(|c| c.text(OUTPUT_GRACE)).unwrap_or_default();
            let how = exit
                .map(|e| format!("exited {e}"))
                .unwrap_or_else(|| "could not start".into());
            let cmd = lock().build_cmd.clone();
            let output = output.trim_end_matches('\n');
            sse("failed", &format!("build failed ({how}): {cmd}\n{output}"))
        }
        Notice::Ready(gen_id) => sse("ready", &gen_id.to_string()),
        Notice::Handoff { .. } => return,
    };
    let mut shared = lock();
    match notice {
        Notice::Ready(gen_id) => {
            shared.ready = gen_id;
            shared.pending = None;
        }
        _ => shared.pending = Some(message.clone()),
    }
    shared
        .clients
        .retain(|client| client.send(message.clone()).is_ok());
    let n = shared.clients.len();
    drop(shared);
    match notice {
        Notice::Ready(gen_id) if n > 0 => info!(
            generation = gen_id,
            "live reload: told {n} browser{} to reload",
            if n == 1 { "" } else { "s" }
        ),
        Notice::Failed(_) if n > 0 => info!(
            "live reload: showing the build output in {n} browser{}",
            if n == 1 { "" } else { "s" }
        ),
        _ => debug!("live reload: {notice:?} told to {n} browser(s)"),
    }
}

/// Registers a browser: it gets the hello and the current state first.
fn subscribe(shared: &Mutex<Shared>) -> tokio::sync::mpsc::UnboundedReceiver<Bytes> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
    // The browser waits this long before reconnecting once devsup is gone.
    let _ = tx.send(Bytes::from_static(b"retry: 1000\n\n"));
    let _ = tx.send(sse(
        "hello",
        &format!("{} {}", shared.ready, shared.instance),
    ));
    if let Some(pending) = &shared.pending {
        let _ = tx.send(pending.clone());
    }
    shared.clients.push(tx);
    debug!(
        "live reload: a browser connected ({} open)",
        shared.clients.len()
    );
    rx
}

/// Sends a comment to every browser, which also finds the ones gone.
fn ping(shared: &Mutex<Shared>) {
    let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
    let ping = Bytes::from_static(b": ping\n\n");
    shared
        .clients
        .retain(|client| client.send(ping.clone()).is_ok());
}

/// One server-sent event. Every line of `data` becomes a `data:` line
/// (the browser joins them with `\n`); a lone `\r`, which would end a line
/// too, is turned into `\n`.
fn sse(event: &str, data: &str) -> Bytes {
    let mut out = format!("event: {event}\n");
    let data = data.replace("\r\n", "\n").replace('\r', "\n");
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// What a browser is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    /// A build started.
    Building,
    /// The build failed; the running generation (if any) is kept.
    Failed(Option<Exit>),
    /// This generation is the one connections go to.
    Ready(GenId),
    /// `new` was promoted and `old` drains: `Ready(new)` follows when `old`
    /// has exited, or after [`HANDOFF_GRACE`].
    Handoff {
        /// The promoted generation.
        new: GenId,
        /// The one draining.
        old: GenId,
    },
}

/// The part of an event that matters here, taken before the machine
/// consumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    BuildExited(Option<Exit>),
    GenExited(GenId),
    Shutdown,
    Other,
}

impl Seen {
    fn of(event: &Event) -> Seen {
        match event {
            Event::BuildExited { exit } => Seen::BuildExited(*exit),
            Event::GenExited { gen_id, .. } => Seen::GenExited(*gen_id),
            Event::Shutdown { .. } => Seen::Shutdown,
            _ => Seen::Other,
        }
    }
}

/// Reads notices off the machine's steps; pure, so it is tested with the
/// real machine and no process.
#[derive(Debug, Default)]
struct Observer {
    shutting_down: bool,
    /// A promoted generation not announced yet, and the one it replaces.
    held: Option<(GenId, GenId)>,
}

impl Observer {
    fn observe(
        &mut self,
        seen: Seen,
        before: Option<GenId>,
        after: Option<GenId>,
        actions: &[Action],
    ) -> Vec<Notice> {
        let mut out = Vec::new();
        if seen == Seen::Shutdown {
            self.shutting_down = true;
        }
        let build_starts = actions
            .iter()
            .any(|a| matches!(a, Action::StartBuild { step: 0 }));
        if let Seen::BuildExited(exit) = seen {
            // A failing step that the machine does not run again (a
            // cancelled build, killed by devsup, starts again at step 0).
            let failed = !exit.is_some_and(Exit::success);
            let next_step = actions
                .iter()
                .any(|a| matches!(a, Action::StartBuild { .. }));
            if failed && !next_step && !self.shutting_down {
                out.push(Notice::Failed(exit));
            }
        }
        if build_starts && !self.shutting_down {
            out.push(Notice::Building);
        }
        // A generation became the one connections go to: promoted on READY
        // (or --ready-after), announced once the old one is gone; or spawned
        // with nothing to hand over from, in which case connections wait for
        // it in the socket's backlog.
        match (before, after) {
            (Some(old), Some(new)) if old != new => {
                self.held = Some((new, old));
                out.push(Notice::Handoff { new, old });
            }
            (None, Some(new)) => {
                self.held = None;
                out.push(Notice::Ready(new));
            }
            _ => {}
        }
        if let (Seen::GenExited(gone), Some((new, old))) = (seen, self.held) {
            if gone == old {
                self.held = None;
                out.push(Notice::Ready(new));
            }
        }
        out
    }

    /// The grace after a handoff is over: `Ready(new)` unless already told
    /// (or overtaken by a later generation).
    fn release(&mut self, new: GenId) -> Option<Notice> {
        match self.held {
            Some((held, _)) if held == new => {
                self.held = None;
                Some(Notice::Ready(new))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
