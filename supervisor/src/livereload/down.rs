//! The page while no generation serves (`--livereload`): before the
//! first generation is spawned, and again once every generation has
//! exited (until the next is spawned; not in the shutdown), devsup answers
//! on the served sockets itself, `503` with `Retry-After`, a page that says "building…" with the
//! build's latest output line, or the failed build's output, and the
//! live-reload script, so that the page turns into the app the moment
//! gen 1 is ready (the script reloads on `ready`, or on a hello naming a
//! generation, since the tag says `data-generation="0"`; a failed build's
//! overlay shows over it as over any page).
//!
//! A thread (`down-page`) polls copies of the listening sockets (the same
//! sockets: a connection it does not accept stays in the backlog for the
//! generation) and a wake pipe. It accepts only while holding the state's
//! lock, after checking that it has not been stopped; [`DownPage::stop`],
//! which the executor calls before it forks a generation, takes
//! that lock to set `stopped`. So once `stop` has returned, no connection
//! is accepted by devsup: every later one is the generation's. The
//! connections accepted before are answered on threads of their own
//! (at most [`MAX_IN_FLIGHT`] at once; more are closed).
//!
//! The page's words come from the steps (`build_started`, `build_finished`,
//! as a subscriber of the `Reporter`) and from the running build's
//! [`Tail`], which the executor hands over as each step starts.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::build_output::Tail;
use crate::report::{Record, Reporter};
use crate::sockets::{Addr, Listener};
use crate::step::{BuildStatus, Step};

/// Connections answered at once; more are closed at once.
const MAX_IN_FLIGHT: usize = 16;
/// How long a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the page says.
#[derive(Debug, Default)]
struct State {
    /// Set by [`DownPage::stop`]: accept nothing more.
    stopped: bool,
    /// The build step running, if one is.
    building: Option<String>,
    /// The running step's output.
    progress: Option<Tail>,
    /// A failed build's summary and last lines.
    failed: Option<(String, Vec<String>)>,
}

/// The page's server; [`DownPage::stop`] ends it for good.
#[derive(Debug)]
pub(crate) struct DownPage {
    state: Arc<Mutex<State>>,
    wake: OwnedFd,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A copy of one served socket.
#[derive(Debug)]
enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Starts answering on copies of `listeners`, with pages that load the
/// live-reload script from `livereload` (`http://HOST:PORT`).
pub(crate) fn start(
    listeners: &[Listener],
    livereload: &str,
    reporter: &Reporter,
) -> anyhow::Result<DownPage> {
    let sockets = (listeners.iter())
        .map(|l| {
            let fd = l.fd().try_clone_to_owned()?;
            Ok(match l.addr {
                Addr::Tcp(_) => Socket::Tcp(fd.into()),
                Addr::Unix(_) => Socket::Unix(fd.into()),
            })
        })
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot copy the sockets for the --livereload building page")?;
    let (woken, wake) = crate::platform::fds::pipe()
        .context("cannot make a pipe for the --livereload building page")?;
    let state: Arc<Mutex<State>> = Arc::default();
    let script = format!("{livereload}{}", super::SCRIPT_PATH);
    let ours = state.clone();
    std::thread::Builder::new()
        .name("down-page".into())
        .spawn(move || serve(&sockets, &woken, &ours, &script))
        .context("cannot start the --livereload building page's thread")?;
    let ours = state.clone();
    reporter.subscribe(move |record: &Arc<Record>| {
        let mut state = lock(&ours);
        observe(&mut state, &record.step);
        !state.stopped
    });
    Ok(DownPage { state, wake })
}

impl DownPage {
    /// The output of the build step that just started.
    pub(crate) fn progress(&self, tail: Tail) {
        lock(&self.state).progress = Some(tail);
    }

    /// Stops accepting: once this returns, devsup accepts no connection
    /// on the served sockets (see the module's doc).
    pub(crate) fn stop(self) {
        lock(&self.state).stopped = true;
        let _ = nix::unistd::write(&self.wake, b"x");
    }
}

/// Reads the page's state off a step.
fn observe(state: &mut State, step: &Step) {
    match step {
        Step::BuildStarted { step, command, .. } => {
            if *step == 1 {
                state.failed = None;
            }
            state.building = Some(command.clone());
            state.progress = None;
        }
        Step::BuildFinished {
            status,
            code,
            signal,
            output_tail,
            ..
        } => {
            let command = state.building.take().unwrap_or_default();
            state.progress = None;
            if *status == BuildStatus::Failed {
                let how = match (code, signal) {
                    (Some(code), _) => format!("exited with status {code}"),
                    (None, Some(signal)) => format!("exited by {signal}"),
                    (None, None) => "could not start".to_owned(),
                };
                let summary = format!("build failed ({how}): {command}");
                state.failed = Some((summary, output_tail.clone().unwrap_or_default()));
            }
        }
        _ => {}
    }
}

/// The `down-page` thread: accepts while not stopped.
fn serve(sockets: &[Socket], woken: &OwnedFd, state: &Mutex<State>, script: &str) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    loop {
        let mut fds: Vec<PollFd<'_>> = std::iter::once(woken.as_fd())
            .chain(sockets.iter().map(|s| match s {
                Socket::Tcp(l) => l.as_fd(),
                Socket::Unix(l) => l.as_fd(),
            }))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
        let ready: Vec<bool> = (fds.iter())
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        // Accepts only under the lock, and only if not stopped: `stop`
        // takes the same lock.
        let state = lock(state);
        if state.stopped {
            return;
        }
        let page = page(&state, script);
        for (socket, _) in sockets.iter().zip(&ready[1..]).filter(|(_, r)| **r) {
            let conn: Option<Box<dyn Conn>> = match socket {
                Socket::Tcp(l) => l.accept().ok().map(|(c, _)| Box::new(c) as Box<dyn Conn>),
                Socket::Unix(l) => l.accept().ok().map(|(c, _)| Box::new(c) as Box<dyn Conn>),
            };
            let Some(conn) = conn else { continue };
            if in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
                in_flight.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let (page, done) = (page.clone(), in_flight.clone());
            let answered = std::thread::Builder::new()
                .name("down-page-conn".into())
                .spawn(move || {
                    answer(conn, &page);
                    done.fetch_sub(1, Ordering::SeqCst);
                });
            if answered.is_err() {
                in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// A connection devsup accepted.
trait Conn: Read + Write + Send {
    fn set_timeout(&self, timeout: Duration);
}

impl Conn for std::net::TcpStream {
    fn set_timeout(&self, timeout: Duration) {
        let _ = self.set_read_timeout(Some(timeout));
        let _ = self.set_write_timeout(Some(timeout));
    }
}

impl Conn for std::os::unix::net::UnixStream {
    fn set_timeout(&self, timeout: Duration) {
        let _ = self.set_read_timeout(Some(timeout));
        let _ = self.set_write_timeout(Some(timeout));
    }
}

/// Reads the request head, answers `page`, closes.
fn answer(mut conn: Box<dyn Conn>, page: &str) {
    conn.set_timeout(READ_TIMEOUT);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
         Content-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{page}",
        page.len()
    );
    let _ = conn.write_all(response.as_bytes());
    let _ = conn.flush();
}

/// The page for `state`.
fn page(state: &State, script: &str) -> String {
    let (title, body) = match (&state.failed, &state.building) {
        (Some((summary, lines)), _) => (
            "build failed",
            format!(
                "<p>{}</p><pre id=\"output\">{}</pre><p>Fix the error and save: this page turns \
                 into the app once a build succeeds.</p>",
                escape(summary),
                escape(&lines.join("\n"))
            ),
        ),
        (None, Some(command)) => {
            let latest = (state.progress.as_ref())
                .and_then(Tail::latest)
                .unwrap_or_default();
            (
                "building…",
                format!(
                    "<p>devsup is building the server: <code>{}</code></p>\
                     <pre id=\"progress\">{}</pre><p>This page turns into the app once it is \
                     ready.</p>",
                    escape(command),
                    escape(&latest)
                ),
            )
        }
        (None, None) => (
            "starting…",
            "<p>devsup is starting the server; this page turns into the app once it is ready.</p>"
                .to_owned(),
        ),
    };
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title} (devsup)</title>\
         <style>body{{font:16px system-ui,sans-serif;margin:3em}}pre{{background:#f4f4f4;\
         padding:1em;white-space:pre-wrap}}</style></head><body><h1 id=\"content\">{title}</h1>\
         {body}<script src=\"{}\" data-generation=\"0\"></script></body></html>\n",
        escape(script)
    )
}

/// HTML-escapes `text`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_says_building_with_the_latest_line_then_the_failure() {
        let mut state = State::default();
        let script = "http://127.0.0.1:9/devsup-livereload.js";
        assert!(page(&state, script).contains("<h1 id=\"content\">starting…</h1>"));
        observe(
            &mut state,
            &Step::BuildStarted {
                step: 1,
                steps: 1,
                command: "cargo build <x>".into(),
            },
        );
        let (tail, end) = Tail::open_for_test();
        tail.feed_for_test(b"   Compiling a v0.1.0\n\x1b[1m   Compiling \x1b[0mb v0.2.0\r");
        state.progress = Some(tail);
        let building = page(&state, script);
        assert!(
            building.contains("<h1 id=\"content\">building…</h1>"),
            "{building}"
        );
        assert!(building.contains("cargo build &lt;x&gt;"), "{building}");
        assert!(
            building.contains("   Compiling b v0.2.0</pre>"),
            "{building}"
        );
        // data-generation="0": a generation ready before the script's
        // stream is up is caught up on the hello.
        assert!(building.contains(&format!(
            "<script src=\"{script}\" data-generation=\"0\"></script>"
        )));
        end();
        observe(
            &mut state,
            &Step::BuildFinished {
                status: BuildStatus::Failed,
                step: 1,
                steps: 1,
                code: Some(101),
                signal: None,
                duration_us: 1,
                output_tail: Some(vec!["error[E0308]: expected `Vec<T>`".into()]),
                output: None,
                step_duration: Duration::ZERO,
                keeping: None,
            },
        );
        let failed = page(&state, script);
        assert!(
            failed.contains("<h1 id=\"content\">build failed</h1>"),
            "{failed}"
        );
        assert!(
            failed.contains("build failed (exited with status 101): cargo build &lt;x&gt;"),
            "{failed}"
        );
        assert!(failed.contains("expected `Vec&lt;T&gt;`"), "{failed}");
    }
}
