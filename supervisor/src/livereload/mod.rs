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
//! - `editor` (data: `--editor-url`'s template, a newline, the directory
//!   relative paths are under), on every connection, when given: the
//!   overlay makes each `--> FILE:LINE:COL` a link to the editor;
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
//! Live reload is one more subscriber of the [`Reporter`]: what the
//! browsers are told is read off the steps devsup reports anyway
//! (`build_started`, `build_finished` with the failed step's output,
//! `active`, `exited`, `shutdown`) by an [`Observer`], so neither the state
//! machine nor the executor knows of browsers. Each generation, and each
//! build step, gets `DEVSUP_LIVERELOAD=http://HOST:PORT` in its environment,
//! so a server (or the tower layer of devsup-serve) can add the script tag
//! to its pages.

// The page on the served ports while no generation runs: it polls the
// listeners devsup holds, Unix only.
#[cfg(unix)]
pub(crate) mod down;
mod server;

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info};

use crate::event::GenId;
use crate::report::{Record, Reporter};
use crate::step::{BuildStatus, Step};

/// The environment variable a generation finds the live-reload server's
/// URL in (`http://127.0.0.1:35729`): the contract with the serving
/// library's `LiveReloadLayer`.
pub(crate) use devsup_protocol::LIVERELOAD_ENV;

/// The client script's path.
pub(crate) use devsup_protocol::LIVERELOAD_SCRIPT_PATH as SCRIPT_PATH;
/// The event stream's path.
pub(crate) const EVENTS_PATH: &str = "/events";
/// The client script.
pub(crate) const CLIENT_JS: &str = include_str!("client.js");

/// How long, at most, the browsers are told of a new generation only once
/// the old one has exited. Between the new generation's READY and the old
/// one acting on its drain signal, both accept from the socket: a page
/// reloaded at once could land on the old generation.
const HANDOFF_GRACE: Duration = Duration::from_millis(250);

/// The live-reload server: what the browsers are told, and to whom.
#[derive(Debug, Clone)]
struct Hub {
    shared: Arc<Mutex<Shared>>,
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
    /// `editor` event's data (`--editor-url`'s template, a newline, the
    /// base directory), told on every connection.
    editor: Option<String>,
    /// One sender per connected browser.
    clients: Vec<UnboundedSender<Bytes>>,
    observer: Observer,
}

/// Starts the live-reload server if `addr` is set, subscribed to
/// `reporter`; returns the `DEVSUP_LIVERELOAD` variable for the
/// environment of every generation and build step.
pub(crate) fn start(
    addr: Option<SocketAddr>,
    editor: Option<&crate::config::Editor>,
    reporter: &Reporter,
) -> anyhow::Result<Option<(OsString, OsString)>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let shared = Arc::new(Mutex::new(Shared {
        instance: format!("{}-{}", std::process::id(), started.as_micros()),
        editor: editor.map(|e| format!("{}\n{}", e.template, e.base.display())),
        ..Shared::default()
    }));
    let (bound, runtime) = server::start(addr, shared.clone())?;
    let url = format!("http://{}", advertised(bound));
    info!("live reload at {url} (pages load <script src=\"{url}{SCRIPT_PATH}\"></script>)");
    let env = (LIVERELOAD_ENV.into(), url.into());
    let hub = Hub { shared, runtime };
    reporter.subscribe(move |record: &Arc<Record>| {
        hub.on_step(&record.step);
        true
    });
    Ok(Some(env))
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

impl Hub {
    /// Tells the browsers what `step` means to them. Called on the loop's
    /// thread: it only takes a lock, queues messages and starts a timer.
    fn on_step(&self, step: &Step) {
        let notices = self.lock().observer.observe(step);
        for notice in notices {
            self.tell(notice);
        }
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
        Notice::Building => sse("building", ""),
        Notice::Failed(text) => sse("failed", text),
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
    if let Some(editor) = &shared.editor {
        let _ = tx.send(sse("editor", editor));
    }
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
#[derive(Debug, Clone, PartialEq, Eq)]
enum Notice {
    /// A build started.
    Building,
    /// The build failed; the running generation (if any) is kept. The
    /// overlay's text: a one-line summary, then the step's output.
    Failed(String),
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

/// Reads notices off the steps devsup reports; pure, so it is tested with
/// the real state machine and no process.
#[derive(Debug, Default)]
struct Observer {
    shutting_down: bool,
    /// A promoted generation not announced yet, and the one it replaces.
    held: Option<(GenId, GenId)>,
    /// The build step last started, for the failure summary.
    build_cmd: String,
}

impl Observer {
    fn observe(&mut self, step: &Step) -> Vec<Notice> {
        match step {
            Step::Shutdown { .. } => {
                self.shutting_down = true;
                vec![]
            }
            Step::BuildStarted { step, command, .. } => {
                self.build_cmd.clone_from(command);
                // A new build (or one started again after a change), not
                // its next step.
                if *step == 1 && !self.shutting_down {
                    vec![Notice::Building]
                } else {
                    vec![]
                }
            }
            // Not a cancelled build, nor one stopped by a shutdown.
            Step::BuildFinished {
                status: BuildStatus::Failed,
                code,
                signal,
                output,
                ..
            } => {
                let how = match (code, signal) {
                    (Some(code), _) => format!("exited with status {code}"),
                    (None, Some(signal)) => format!("exited by {signal}"),
                    (None, None) => "could not start".to_owned(),
                };
                let output = output.as_deref().unwrap_or_default();
                let output = output.trim_end_matches('\n');
                let cmd = &self.build_cmd;
                vec![Notice::Failed(format!(
                    "build failed ({how}): {cmd}\n{output}"
                ))]
            }
            // A generation became the one connections go to: promoted on
            // READY (or --ready-after), announced once the old one is gone;
            // or spawned with nothing to hand over from, in which case
            // connections wait for it in the socket's backlog.
            Step::Active {
                generation: new,
                replaces: Some(old),
            } => {
                self.held = Some((*new, *old));
                vec![Notice::Handoff {
                    new: *new,
                    old: *old,
                }]
            }
            Step::Active {
                generation: new,
                replaces: None,
            } => {
                self.held = None;
                vec![Notice::Ready(*new)]
            }
            Step::Exited {
                generation: gone, ..
            } => match self.held {
                Some((new, old)) if old == *gone => {
                    self.held = None;
                    vec![Notice::Ready(new)]
                }
                _ => vec![],
            },
            _ => vec![],
        }
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
