//! A build step's output, copied to devsup's own stdout and stderr as it
//! comes (a tee through two pipes) and kept, the last [`KEEP`] bytes, for
//! the browser's overlay.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::warn;

/// How much of a build's output is kept: the end of a long compiler
/// output is where its summary is.
pub const KEEP: usize = 64 * 1024;

/// The output of one build (all its steps), shared by the threads that
/// copy it.
#[derive(Debug, Default)]
pub struct Capture {
    state: Mutex<State>,
    closed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    tail: VecDeque<u8>,
    /// Output was dropped from the front.
    cut: bool,
    /// Pipes still being read.
    open: usize,
}

impl Capture {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, bytes: &[u8]) {
        let mut state = self.lock();
        state.tail.extend(bytes);
        let excess = state.tail.len().saturating_sub(KEEP);
        if excess > 0 {
            state.tail.drain(..excess);
            state.cut = true;
        }
    }

    fn close_one(&self) {
        let mut state = self.lock();
        state.open = state.open.saturating_sub(1);
        self.closed.notify_all();
    }

    /// The output as text, once every pipe has been read to its end (or
    /// after `grace`): the build's process group is gone, but the last of
    /// its output may still be on its way through the pipes.
    pub fn text(&self, grace: Duration) -> String {
        let deadline = Instant::now() + grace;
        let mut state = self.lock();
        while state.open > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .closed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let bytes: Vec<u8> = state.tail.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        if !state.cut {
            return text.into_owned();
        }
        // The front was cut mid-line, perhaps mid-character: start at the
        // next whole line.
        let rest = text.split_once('\n').map_or(&*text, |(_, rest)| rest);
        format!(
            "[… earlier output cut: the last {} KiB follow]\n{rest}",
            KEEP / 1024
        )
    }
}

/// Starts `sh -c CMD` as [`crate::build::spawn`] does, with its stdout and
/// stderr on pipes that two threads copy to devsup's own and into
/// `capture`. Returns the pid (= process group).
pub fn spawn(
    cmd: &str,
    capture: &Arc<Capture>,
    mut env: Vec<(OsString, OsString)>,
) -> anyhow::Result<i32> {
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe");
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    // Through a pipe, a compiler no longer sees a terminal and drops its
    // colours; keep them when devsup's own output is one (the overlay
    // renders them too).
    if std::env::var_os("CARGO_TERM_COLOR").is_none() && std::io::stderr().is_terminal() {
        env.push(("CARGO_TERM_COLOR".into(), "always".into()));
    }
    let (pid, _exec_status) = crate::generation::spawn_shell_with(
        cmd,
        Some((out_write.as_raw_fd(), err_write.as_raw_fd())),
        &env,
    )?;
    drop((out_write, err_write));
    capture.lock().open += 2;
    copy(out_read, false, capture.clone());
    copy(err_read, true, capture.clone());
    Ok(pid)
}

/// Copies `pipe` to devsup's stdout (or stderr) and into `capture` until
/// its end. A broken stdout only stops the copy to it: the pipe is read to
/// its end, so the build never blocks on it.
fn copy(pipe: OwnedFd, stderr: bool, capture: Arc<Capture>) {
    let name = if stderr {
        "build-stderr"
    } else {
        "build-stdout"
    };
    let thread_capture = capture.clone();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let capture = thread_capture;
            let mut pipe = std::fs::File::from(pipe);
            let mut buf = [0u8; 8192];
            let mut echo = true;
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                if echo {
                    let written = if stderr {
                        std::io::stderr().lock().write_all(&buf[..n])
                    } else {
                        std::io::stdout().lock().write_all(&buf[..n])
                    };
                    echo = written.is_ok();
                }
                capture.push(&buf[..n]);
            }
            capture.close_one();
        });
    if let Err(e) = spawned {
        // The pipe is dropped with the closure: the build gets SIGPIPE or
        // EPIPE on its next write, and fails visibly.
        warn!("cannot start a thread to copy the build's output: {e}");
        capture.close_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_end_from_a_whole_line() {
        let capture = Capture::default();
        capture.push(b"first line\n");
        let long = "x".repeat(KEEP);
        capture.push(long.as_bytes());
        capture.push(b"\nerror: the end\n");
        let text = capture.text(Duration::ZERO);
        assert!(text.starts_with("[… earlier output cut"), "{}", &text[..80]);
        assert!(text.ends_with("error: the end\n"));
        assert!(!text.contains("first line"));
        assert!(text.len() < KEEP + 100);
    }

    #[test]
    fn waits_for_open_pipes_at_most_the_grace() {
        let capture = Arc::new(Capture::default());
        capture.lock().open = 1;
        let started = Instant::now();
        assert_eq!(capture.text(Duration::from_millis(20)), "");
        assert!(started.elapsed() >= Duration::from_millis(20));
        let writer = capture.clone();
        let thread = std::thread::spawn(move || {
            writer.push(b"late output\n");
            writer.close_one();
        });
        assert_eq!(capture.text(Duration::from_secs(30)), "late output\n");
        thread.join().unwrap();
    }

    #[test]
    fn tees_a_build_step() {
        let capture = Arc::new(Capture::default());
        let pid = spawn(
            "echo out; echo \"err $DEVSUP_X\" >&2",
            &capture,
            vec![("DEVSUP_X".into(), "set".into())],
        )
        .unwrap();
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        let text = capture.text(Duration::from_secs(30));
        assert!(
            text.contains("out\n") && text.contains("err set\n"),
            "{text:?}"
        );
    }
}
