//! A build step's output, shown and remembered.
//!
//! [`start`] makes a pipe for a child's stdout and one for its stderr, and
//! a thread for each that copies every byte through to devsup's stdout or
//! stderr as it arrives (each stream in order; when devsup writes events
//! to stdout, its stdout is its stderr), while keeping the last
//! [`MAX_LINES`] lines of both, as they came, in one [`Tail`]. A failed build's
//! [`crate::report::Step::BuildFinished`] carries that tail, so a tool (an
//! editor, a browser overlay) can show the error without scraping the
//! terminal.
//!
//! The child's ends are returned as [`OwnedFd`]s (close-on-exec in devsup)
//! to place at fds 1 and 2; drop them once the child is started, so that
//! the threads see end-of-file when the child's last process closes them.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Lines kept.
pub const MAX_LINES: usize = 20;
/// Longest line kept, in bytes; longer lines are cut.
pub const MAX_LINE_BYTES: usize = 512;

#[derive(Debug, Default)]
struct State {
    lines: VecDeque<String>,
    /// The line being written, per stream.
    partial: [Vec<u8>; 2],
    /// Streams still open.
    open: usize,
    eof: bool,
}

impl State {
    fn push_line(&mut self, stream: usize) {
        let line = clean(&self.partial[stream]);
        self.partial[stream].clear();
        if self.lines.len() == MAX_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    fn feed(&mut self, stream: usize, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.push_line(stream);
            } else if self.partial[stream].len() < MAX_LINE_BYTES * 4 {
                self.partial[stream].push(b);
            }
        }
    }
}

/// The last lines a child printed; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Tail(Arc<(Mutex<State>, Condvar)>);

impl Tail {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last lines (at most [`MAX_LINES`], ANSI escapes removed, a
    /// progress line only as last drawn), waiting up to `wait` for the end
    /// of the output first.
    pub fn lines(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        while !state.eof {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = match self.0.1.wait_timeout(state, deadline - now) {
                Ok((state, _)) => state,
                Err(e) => e.into_inner().0,
            };
        }
        let mut lines: Vec<String> = state.lines.iter().cloned().collect();
        for partial in state.partial.iter().filter(|p| !p.is_empty()) {
            lines.push(clean(partial));
        }
        let extra = lines.len().saturating_sub(MAX_LINES);
        lines.drain(..extra);
        lines
    }

    /// Whether the output has ended.
    pub fn ended(&self) -> bool {
        self.lock().eof
    }

    fn feed(&self, stream: usize, bytes: &[u8]) {
        self.lock().feed(stream, bytes);
    }

    fn end(&self, stream: usize) {
        let mut state = self.lock();
        if !state.partial[stream].is_empty() {
            state.push_line(stream);
        }
        state.open = state.open.saturating_sub(1);
        if state.open == 0 {
            state.eof = true;
            self.0.1.notify_all();
        }
    }

    fn with_streams(n: usize) -> Tail {
        let tail = Tail::default();
        tail.lock().open = n;
        tail
    }
}

/// Two pipes, for a child's stdout and stderr, whose bytes go through to
/// devsup's stdout and stderr and into one [`Tail`]. Returns the tail and
/// the child's ends (stdout, stderr).
pub fn start(name: &str) -> std::io::Result<(Tail, OwnedFd, OwnedFd)> {
    let tail = Tail::with_streams(2);
    let out = pipe(name, std::io::stdout(), tail.clone(), 0)?;
    let err = pipe(name, std::io::stderr(), tail.clone(), 1)?;
    Ok((tail, out, err))
}

/// One pipe whose bytes go through to `sink` and into a [`Tail`].
pub fn start_sink(
    name: &str,
    sink: impl Write + Send + 'static,
) -> std::io::Result<(Tail, OwnedFd)> {
    let tail = Tail::with_streams(1);
    let fd = pipe(name, sink, tail.clone(), 0)?;
    Ok((tail, fd))
}

fn pipe(
    name: &str,
    mut sink: impl Write + Send + 'static,
    ours: Tail,
    stream: usize,
) -> std::io::Result<OwnedFd> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    std::thread::Builder::new()
        .name(format!("{name}-output"))
        .spawn(move || {
            let mut pipe = std::fs::File::from(read);
            let mut buf = [0u8; 8192];
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                // A closed or broken stderr must not stop the capture.
                let _ = sink.write_all(&buf[..n]);
                let _ = sink.flush();
                ours.feed(stream, &buf[..n]);
            }
            ours.end(stream);
        })?;
    Ok(write)
}

/// One line for a reader: what a terminal would show last (text after the
/// last carriage return), without ANSI escapes, cut to
/// [`MAX_LINE_BYTES`].
fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches('\r');
    let shown = text.rsplit('\r').next().unwrap_or(text);
    let mut out = String::with_capacity(shown.len());
    let mut chars = shown.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        // CSI: ESC [ parameters, then a final byte in '@'..='~'.
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    if out.len() > MAX_LINE_BYTES {
        let mut cut = MAX_LINE_BYTES;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_goes_through_in_order_and_the_tail_is_kept() {
        let through = Shared::default();
        let (tail, write) = start_sink("t", through.clone()).unwrap();
        let mut w = std::fs::File::from(write);
        let mut expected = Vec::new();
        for i in 0..30 {
            let line = format!("line {i}\n");
            w.write_all(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        w.write_all(b"\x1b[32m   Compiling\x1b[0m x\r\x1b[1mBuilding [=> ] 1/2\rerror: no\n")
            .unwrap();
        w.write_all(b"unterminated").unwrap();
        drop(w);
        let lines = tail.lines(Duration::from_secs(10));
        assert!(tail.ended());
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(lines[0], "line 12");
        assert_eq!(lines[MAX_LINES - 2], "error: no");
        assert_eq!(lines[MAX_LINES - 1], "unterminated");
        let through = through.0.lock().unwrap();
        assert!(through.starts_with(&expected), "every byte, in order");
        assert!(through.ends_with(b"error: no\nunterminated"));
    }

    #[test]
    fn long_lines_are_cut_and_an_open_pipe_does_not_block() {
        let (tail, write) = start_sink("t", std::io::sink()).unwrap();
        let mut w = std::fs::File::from(write.try_clone().unwrap());
        w.write_all(&vec![b'x'; 3000]).unwrap();
        w.write_all(b"\n").unwrap();
        let start = Instant::now();
        // `write` is still open: lines() returns after its wait.
        let lines = loop {
            let lines = tail.lines(Duration::from_millis(20));
            if !lines.is_empty() {
                break lines;
            }
            assert!(start.elapsed() < Duration::from_secs(10));
        };
        assert!(!tail.ended());
        assert_eq!(lines[0].len(), MAX_LINE_BYTES + '…'.len_utf8());
        drop(write);
    }

    #[test]
    fn two_streams_share_one_tail_which_ends_with_both() {
        let tail = Tail::with_streams(2);
        let out = pipe("t", std::io::sink(), tail.clone(), 0).unwrap();
        let err = pipe("t", std::io::sink(), tail.clone(), 1).unwrap();
        let mut out = std::fs::File::from(out);
        out.write_all(b"half a line from stdout").unwrap();
        drop(out);
        let start = Instant::now();
        while tail.lines(Duration::from_millis(10)).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(10));
        }
        assert!(!tail.ended(), "stderr is still open");
        let mut err = std::fs::File::from(err);
        err.write_all(b"error: x\n").unwrap();
        drop(err);
        let lines = tail.lines(Duration::from_secs(10));
        assert!(tail.ended());
        let set: std::collections::BTreeSet<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(set, ["half a line from stdout", "error: x"].into());
    }
}
