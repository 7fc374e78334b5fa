//! `devsup-page FILE`: a web page server for the browser tests and the
//! browser benchmark.
//!
//! It reads FILE once, at start, as a compiled server has its content built
//! in: a new content needs a new generation. `GET /` answers an HTML page
//! showing that content and the generation (`DEVSUP_GENERATION`), with
//! devsup's live-reload script tag when `DEVSUP_LIVERELOAD` is set (the
//! one-line tag any server can add); `GET /data` answers `gen=N`. Opened
//! with `#fetch`, the page fetches `/data` in a loop and reports each
//! result to `window.__report(ok, detail)`, which the test's browser
//! driver provides.
//!
//! Under devsup it takes the listener at fd 3, says READY (after
//! `PAGE_READY_DELAY_MS`, if set, before which it accepts nothing), and on
//! SIGTERM stops accepting (after `PAGE_DRAIN_DELAY_MS`, if set, during
//! which it still accepts), finishes the requests it has and exits 0.
//! Every response is `Connection: close`. std only, so that a generation
//! starts in a millisecond or two and the benchmark measures devsup and the
//! browser, not an interpreter's start-up.

#[cfg(unix)]
use std::io::{self, Read, Write};
#[cfg(unix)]
use std::net::{TcpListener, TcpStream};
#[cfg(unix)]
use std::os::fd::{AsFd, FromRawFd};
#[cfg(unix)]
use std::process::ExitCode;
#[cfg(unix)]
use std::sync::Arc;
#[cfg(unix)]
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(unix)]
use std::time::{Duration, Instant};

#[cfg(unix)]
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
#[cfg(unix)]
use nix::sys::signal::{SigSet, Signal};

#[cfg(unix)]
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devsup-page: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(unix)]
fn run() -> io::Result<()> {
    let file = std::env::args()
        .nth(1)
        .ok_or_else(|| io::Error::other("usage: devsup-page FILE"))?;
    let content = std::fs::read_to_string(&file)?;
    let generation = std::env::var("DEVSUP_GENERATION").unwrap_or_else(|_| "0".into());
    let livereload = std::env::var("DEVSUP_LIVERELOAD").ok();

    // Blocked in every thread: they arrive only through `wait` below.
    let mut stop_signals = SigSet::empty();
    stop_signals.add(Signal::SIGTERM);
    stop_signals.add(Signal::SIGINT);
    stop_signals.thread_block().map_err(io::Error::from)?;

    let listener = if std::env::var_os("LISTEN_FDS").is_some() {
        // SAFETY: devsup passes the listening socket at fd 3 (LISTEN_FDS);
        // nothing else in this process owns that fd.
        unsafe { TcpListener::from_raw_fd(3) }
    } else {
        TcpListener::bind("127.0.0.1:8080")?
    };
    // Two generations share the socket during a handoff: the other may take
    // a connection `poll` announced to this one.
    listener.set_nonblocking(true)?;
    if let Some(ms) = env_ms("PAGE_READY_DELAY_MS") {
        std::thread::sleep(Duration::from_millis(ms));
    }

    let page = Arc::new(page(&content, &generation, livereload.as_deref()));
    let data = Arc::new(format!("gen={generation}\n"));
    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
    let accepting = {
        let (stop, open) = (stop.clone(), open.clone());
        std::thread::spawn(move || accept_loop(&listener, &stop, &open, &page, &data))
    };
    devsup_protocol::notify_ready()?;

    let signal = stop_signals.wait().map_err(io::Error::from)?;
    eprintln!("devsup-page gen={generation}: {signal}, draining");
    // A server slow to act on its drain signal keeps accepting meanwhile.
    if let Some(ms) = env_ms("PAGE_DRAIN_DELAY_MS") {
        std::thread::sleep(Duration::from_millis(ms));
    }
    stop.store(true, Ordering::SeqCst);
    // The accept loop returns within one poll timeout and drops its copy of
    // the listener; connections queued in it go to the next generation.
    let _ = accepting.join();
    let deadline = Instant::now() + Duration::from_secs(5);
    while open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[cfg(unix)]
fn env_ms(key: &str) -> Option<u64> {
    std::env::var(key).ok()?.parse().ok()
}

#[cfg(unix)]
fn accept_loop(
    listener: &TcpListener,
    stop: &AtomicBool,
    open: &Arc<AtomicUsize>,
    page: &Arc<String>,
    data: &Arc<String>,
) {
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        // The stop flag is looked at every 10 ms: a drain starts at once.
        match poll(&mut fds, PollTimeout::from(10u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("devsup-page: poll: {e}");
                return;
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                open.fetch_add(1, Ordering::SeqCst);
                let (open, page, data) = (open.clone(), page.clone(), data.clone());
                std::thread::spawn(move || {
                    let _ = handle(stream, &page, &data);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
            // The other generation took it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                eprintln!("devsup-page: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[cfg(unix)]
fn handle(mut stream: TcpStream, page: &str, data: &str) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split(['?', '#']).next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/") => ("200 OK", "text/html; charset=utf-8", page),
        ("GET", "/data") => ("200 OK", "text/plain", data),
        _ => ("404 Not Found", "text/plain", "not found\n"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

#[cfg(unix)]
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(unix)]
fn page(content: &str, generation: &str, livereload: Option<&str>) -> String {
    let tag = livereload
        .map(|url| {
            format!(
                "<script src=\"{}/devsup-livereload.js\"></script>",
                escape(url)
            )
        })
        .unwrap_or_default();
    let content = escape(content.trim());
    format!(
        r##"<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>devsup page</title>
{tag}
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; margin: 40px; color: #1f2328; }}
h1 {{ font-size: 28px; }}
.gen {{ color: #59636e; }}
</style>
</head>
<body>
<h1 id="content">{content}</h1>
<p class="gen">Served by generation <span id="gen">{generation}</span>.</p>
<script>
(function () {{
  if (location.hash !== "#fetch" || !window.__report) return;
  var leaving = false;
  window.addEventListener("beforeunload", function () {{ leaving = true; }});
  (async function loop() {{
    while (!leaving) {{
      try {{
        var response = await fetch("/data", {{ cache: "no-store" }});
        var text = await response.text();
        if (!leaving) window.__report(response.ok, response.status + " " + text.trim());
      }} catch (e) {{
        if (!leaving) window.__report(false, String(e));
      }}
      await new Promise(function (resolve) {{ setTimeout(resolve, 10); }});
    }}
  }})();
}})();
</script>
</body>
</html>
"##
    )
}

/// devsup-page is Unix-only: on other platforms it compiles to this one loud line.
#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "devsup-page: runs on Unix only (it drains on SIGTERM, waiting in poll(2) with a blocked signal set); nothing was run"
    );
    std::process::ExitCode::from(2)
}
