//! A build step's output, shown and remembered: the one tee every build
//! step's stdout and stderr go through.
//!
//! [`start`] makes a pipe for a child's stdout and one for its stderr, and
//! a thread for each that copies every byte through to devsup's stdout or
//! stderr as it arrives (each stream in order; when devsup writes events
//! to stdout, its stdout is its stderr), while keeping the end of both, one
//! whole line at a time as each stream completes it, in one [`Tail`]. A
//! failed build's `Step::BuildFinished` carries that end twice: its last
//! [`MAX_LINES`] lines, cleaned of ANSI escapes, for `--events` and
//! `devsup status`; and the last [`KEEP`] bytes as printed, colours kept,
//! for the browser's overlay (`--livereload`).
//!
//! On Unix the child's ends are returned as [`OwnedFd`]s (close-on-exec in
//! devsup) to place at fds 1 and 2; drop them once the child is started,
//! so that the threads see end-of-file when the child's last process
//! closes them. On Windows the executor pipes the step's stdout and stderr
//! itself and hands their read ends to [`copy`].
//!
//! Through a pipe a compiler no longer sees a terminal: [`colour_env`] asks
//! cargo for colours when devsup's own stderr is a terminal. When it is,
//! `pty.rs` gives the step a pseudo-terminal instead, so that cargo draws
//! its progress bar too; its master is copied and kept here the same way.

use std::collections::VecDeque;
use std::ffi::OsString;
#[cfg(unix)]
use std::io::BufRead;
use std::io::{IsTerminal, Read, Write};
#[cfg(unix)]
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[cfg(unix)]
use crate::cargo::Built;

/// Lines in a failed build's `output_tail`.
pub(crate) const MAX_LINES: usize = 20;
/// Longest line in `output_tail`, in bytes; longer lines are cut.
pub(crate) const MAX_LINE_BYTES: usize = 512;
/// Bytes of output kept as printed: the end of a long compiler output is
/// where its summary is.
pub(crate) const KEEP: usize = 64 * 1024;
/// Longest unfinished line kept per stream; the rest of it is dropped.
const MAX_PARTIAL: usize = 16 * 1024;

#[derive(Debug, Default)]
struct State {
    /// Whole lines, each with its `\n`, both streams in the order they
    /// were completed; at most [`KEEP`] bytes.
    raw: VecDeque<u8>,
    /// Output was dropped from the front of `raw`.
    cut: bool,
    /// The line being written, per stream.
    partial: [Vec<u8>; 2],
    /// Streams still open.
    open: usize,
    /// Called once every stream has ended ([`Tail::when_ended`]).
    on_end: Option<OnEnd>,
}

/// A callback for [`Tail::when_ended`].
struct OnEnd(Box<dyn FnOnce() + Send>);

impl std::fmt::Debug for OnEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnEnd")
    }
}

impl State {
    fn feed(&mut self, stream: usize, bytes: &[u8]) {
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let room = MAX_PARTIAL.saturating_sub(self.partial[stream].len());
            let (body, newline) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            self.partial[stream].extend_from_slice(&body[..body.len().min(room)]);
            if newline {
                self.end_line(stream);
            }
        }
    }

    fn end_line(&mut self, stream: usize) {
        let line = std::mem::take(&mut self.partial[stream]);
        self.raw.extend(line);
        self.raw.push_back(b'\n');
        let excess = self.raw.len().saturating_sub(KEEP);
        if excess > 0 {
            self.raw.drain(..excess);
            self.cut = true;
        }
    }

    /// What was printed, lines still being written included: from the
    /// first whole line if the front was cut.
    fn text(&self) -> String {
        let mut bytes: Vec<u8> = self.raw.iter().copied().collect();
        for partial in self.partial.iter().filter(|p| !p.is_empty()) {
            bytes.extend_from_slice(partial);
            bytes.push(b'\n');
        }
        let text = String::from_utf8_lossy(&bytes);
        if !self.cut {
            return text.into_owned();
        }
        // Cut mid-line, perhaps mid-character: start at the next line.
        text.split_once('\n')
            .map_or(&*text, |(_, rest)| rest)
            .to_owned()
    }
}

/// The end of what a child printed; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tail(Arc<(Mutex<State>, Condvar)>);

/// What a failed build step printed last, read off its [`Tail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Printed {
    /// The last [`MAX_LINES`] lines, ANSI escapes removed, a progress line
    /// only as last drawn.
    pub(crate) lines: Vec<String>,
    /// The last [`KEEP`] bytes as printed, from a whole line, with a note
    /// first if earlier output was cut.
    pub(crate) text: String,
}

impl Tail {
    pub(crate) fn with_streams(n: usize) -> Tail {
        let tail = Tail::default();
        tail.lock().open = n;
        tail
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The end of the output, once both streams have ended or `wait` has
    /// passed: the step's process group is gone, but the last of its
    /// output may still be on its way through the pipes (or held open by
    /// a process that left the group, such as a compiler cache server).
    pub(crate) fn printed(&self, wait: Duration) -> Printed {
        let state = self.ended_within(wait);
        let text = state.text();
        let cut = state.cut;
        drop(state);
        let mut lines: Vec<String> = text.lines().rev().take(MAX_LINES).map(clean).collect();
        lines.reverse();
        let text = if cut {
            format!(
                "[… earlier output cut: the last {} KiB follow]\n{text}",
                KEEP / 1024
            )
        } else {
            text
        };
        Printed { lines, text }
    }

    /// The last non-blank line printed so far, unfinished ones included,
    /// as a terminal would show it last (a progress line as last drawn),
    /// without ANSI escapes: for the `--livereload` building page.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn latest(&self) -> Option<String> {
        let text = self.lock().text();
        text.lines()
            .rev()
            .map(clean)
            .find(|line| !line.trim().is_empty())
    }

    /// Waits until every stream has ended, or `wait` has passed; whether
    /// they have.
    pub(crate) fn wait_ended(&self, wait: Duration) -> bool {
        self.ended_within(wait).open == 0
    }

    fn ended_within(&self, wait: Duration) -> std::sync::MutexGuard<'_, State> {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        while state.open > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = match self.0.1.wait_timeout(state, deadline - now) {
                Ok((state, _)) => state,
                Err(e) => e.into_inner().0,
            };
        }
        state
    }

    /// Whether every stream has ended.
    pub(crate) fn ended(&self) -> bool {
        self.lock().open == 0
    }

    /// Calls `f` once every stream has ended (at once if they have), on
    /// the thread that saw the last end; replaces an earlier callback.
    pub(crate) fn when_ended(&self, f: impl FnOnce() + Send + 'static) {
        let mut state = self.lock();
        if state.open == 0 {
            drop(state);
            f();
        } else {
            state.on_end = Some(OnEnd(Box::new(f)));
        }
    }

    /// An open tail of one stream, and what ends that stream.
    #[cfg(test)]
    pub(crate) fn open_for_test() -> (Tail, impl FnOnce()) {
        let tail = Tail::with_streams(1);
        let ours = tail.clone();
        (tail, move || ours.end(0))
    }

    /// Output on the stream of [`Tail::open_for_test`].
    #[cfg(test)]
    pub(crate) fn feed_for_test(&self, bytes: &[u8]) {
        self.feed(0, bytes);
    }

    fn feed(&self, stream: usize, bytes: &[u8]) {
        self.lock().feed(stream, bytes);
    }

    /// Ends `stream`: its end of file (or, for a pty carrying both
    /// streams as one, at once).
    pub(crate) fn end(&self, stream: usize) {
        let mut state = self.lock();
        if !state.partial[stream].is_empty() {
            state.end_line(stream);
        }
        state.open = state.open.saturating_sub(1);
        if state.open == 0 {
            self.0.1.notify_all();
            let on_end = state.on_end.take();
            drop(state);
            if let Some(OnEnd(f)) = on_end {
                f();
            }
        }
    }
}

/// Two pipes, for a child's stdout and stderr, whose bytes go through to
/// devsup's stdout and stderr and into one [`Tail`]. Returns the tail and
/// the child's ends (stdout, stderr).
#[cfg(unix)]
pub(crate) fn start(
    name: &str,
    messages: Option<Built>,
) -> std::io::Result<(Tail, OwnedFd, OwnedFd)> {
    let tail = Tail::with_streams(2);
    let out = match messages {
        Some(built) => cargo_messages(name, built, tail.clone())?,
        None => pipe(name, std::io::stdout(), tail.clone(), 0)?,
    };
    let err = match pipe(name, std::io::stderr(), tail.clone(), 1) {
        Ok(err) => err,
        Err(e) => {
            // The stdout thread ends when `out` is dropped here.
            drop(out);
            return Err(e);
        }
    };
    Ok((tail, out, err))
}

/// `CARGO_TERM_COLOR=always` when devsup's stderr is a terminal (and
/// neither `CARGO_TERM_COLOR` nor `NO_COLOR` is set): cargo sees a pipe and
/// would drop its colours.
pub(crate) fn colour_env() -> Option<(OsString, OsString)> {
    colour_for(
        std::io::stderr().is_terminal(),
        std::env::var_os("CARGO_TERM_COLOR").is_some(),
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    )
}

/// [`colour_env`]'s rule: colours for a terminal, unless the user chose.
fn colour_for(
    terminal: bool,
    cargo_term_color: bool,
    no_color: bool,
) -> Option<(OsString, OsString)> {
    (terminal && !cargo_term_color && !no_color)
        .then(|| ("CARGO_TERM_COLOR".into(), "always".into()))
}

#[cfg(unix)]
fn pipe(
    name: &str,
    sink: impl Write + Send + 'static,
    ours: Tail,
    stream: usize,
) -> std::io::Result<OwnedFd> {
    let (read, write) = crate::platform::fds::pipe()?;
    copy(name, std::fs::File::from(read), sink, ours, stream)?;
    Ok(write)
}

/// Copies what `read` gives (a pipe, or a pty's master, whose EIO once
/// every slave is closed ends it as end of file does) to `sink`, and
/// keeps it as `stream` of `ours`, on a thread of its own.
pub(crate) fn copy(
    name: &str,
    mut read: impl Read + Send + 'static,
    mut sink: impl Write + Send + 'static,
    ours: Tail,
    stream: usize,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("{name}-output"))
        .spawn(move || {
            let mut buf = [0u8; 8192];
            // A closed or broken stdout stops the copy to it, never the
            // capture: the pipe is read to its end, so the build never
            // blocks on it.
            let mut echo = true;
            loop {
                let n = match read.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                // Kept first: whoever sees the line printed finds it kept
                // (the --livereload page's latest line).
                ours.feed(stream, &buf[..n]);
                if echo {
                    echo = sink
                        .write_all(&buf[..n])
                        .and_then(|()| sink.flush())
                        .is_ok();
                }
            }
            ours.end(stream);
        })?;
    Ok(())
}

/// The stdout of the inferred `cargo build` (see [`crate::cargo`]): each
/// line one of cargo's JSON messages, read by `built` and neither shown
/// nor kept; any other line is shown and kept like the other streams'.
#[cfg(unix)]
pub(crate) fn cargo_messages(name: &str, built: Built, ours: Tail) -> std::io::Result<OwnedFd> {
    let (read, write) = crate::platform::fds::pipe()?;
    std::thread::Builder::new()
        .name(format!("{name}-messages"))
        .spawn(move || {
            let mut lines = std::io::BufReader::new(std::fs::File::from(read));
            let mut line = Vec::new();
            let mut echo = true;
            loop {
                line.clear();
                match lines.read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
                if built.take_line(&line) {
                    continue;
                }
                ours.feed(0, &line);
                if echo {
                    let mut out = std::io::stdout();
                    echo = out.write_all(&line).and_then(|()| out.flush()).is_ok();
                }
            }
            ours.end(0);
        })?;
    Ok(write)
}

/// One line for a reader: what a terminal would show last (text after the
/// last carriage return), without escape sequences, cut to
/// [`MAX_LINE_BYTES`].
fn clean(raw: &str) -> String {
    let text = raw.trim_end_matches('\r');
    let shown = text.rsplit('\r').next().unwrap_or(text);
    let mut out = anstream::adapter::strip_str(shown).to_string();
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

    #[cfg(unix)]
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    #[cfg(unix)]
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[cfg(unix)]
    /// One stream into a tail of its own.
    fn start_sink(sink: impl Write + Send + 'static) -> (Tail, OwnedFd) {
        let tail = Tail::with_streams(1);
        let fd = pipe("t", sink, tail.clone(), 0).unwrap();
        (tail, fd)
    }

    #[cfg(unix)]
    #[test]
    fn output_goes_through_in_order_and_the_tail_is_kept() {
        let through = Shared::default();
        let (tail, write) = start_sink(through.clone());
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
        let printed = tail.printed(Duration::from_secs(10));
        assert!(tail.ended());
        let lines = printed.lines;
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(lines[0], "line 12");
        assert_eq!(lines[MAX_LINES - 2], "error: no");
        assert_eq!(lines[MAX_LINES - 1], "unterminated");
        // The text keeps every byte as printed, colours included.
        assert!(printed.text.starts_with("line 0\n"), "{:?}", printed.text);
        assert!(
            printed.text.contains("\x1b[32m   Compiling\x1b[0m x\r"),
            "{:?}",
            printed.text
        );
        assert!(printed.text.ends_with("error: no\nunterminated\n"));
        let through = through.0.lock().unwrap();
        assert!(through.starts_with(&expected), "every byte, in order");
        assert!(through.ends_with(b"error: no\nunterminated"));
    }

    #[cfg(unix)]
    #[test]
    fn long_lines_are_cut_and_an_open_pipe_does_not_block() {
        let (tail, write) = start_sink(std::io::sink());
        let mut w = std::fs::File::from(write.try_clone().unwrap());
        w.write_all(&[b'x'; 3000]).unwrap();
        w.write_all(b"\n").unwrap();
        let start = Instant::now();
        // `write` is still open: printed() returns after its wait.
        let lines = loop {
            let lines = tail.printed(Duration::from_millis(20)).lines;
            if !lines.is_empty() {
                break lines;
            }
            assert!(start.elapsed() < Duration::from_secs(10));
        };
        assert!(!tail.ended());
        assert_eq!(lines[0].len(), MAX_LINE_BYTES + '…'.len_utf8());
        drop(write);
    }

    #[cfg(unix)]
    #[test]
    fn the_text_keeps_the_end_from_a_whole_line() {
        let (tail, write) = start_sink(std::io::sink());
        let mut w = std::fs::File::from(write);
        w.write_all(b"first line\n").unwrap();
        for _ in 0..(KEEP / 1000 + 2) {
            w.write_all(&[b'x'; 999]).unwrap();
            w.write_all(b"\n").unwrap();
        }
        w.write_all(b"error: the end\n").unwrap();
        drop(w);
        let text = tail.printed(Duration::from_secs(10)).text;
        assert!(text.starts_with("[… earlier output cut"), "{}", &text[..80]);
        assert!(text.ends_with("\nerror: the end\n"));
        assert!(!text.contains("first line"));
        assert!(text.len() < KEEP + 100);
        let second = text.lines().nth(1).unwrap();
        assert_eq!(second.len(), 999, "starts at a whole line");
    }

    #[cfg(unix)]
    #[test]
    fn two_streams_share_one_tail_which_ends_with_both() {
        let tail = Tail::with_streams(2);
        let out = pipe("t", std::io::sink(), tail.clone(), 0).unwrap();
        let err = pipe("t", std::io::sink(), tail.clone(), 1).unwrap();
        let mut out = std::fs::File::from(out);
        out.write_all(b"half a line from stdout").unwrap();
        drop(out);
        let start = Instant::now();
        while tail.printed(Duration::from_millis(10)).lines.is_empty() {
            assert!(start.elapsed() < Duration::from_secs(10));
        }
        assert!(!tail.ended(), "stderr is still open");
        let mut err = std::fs::File::from(err);
        err.write_all(b"error: x\n").unwrap();
        drop(err);
        let lines = tail.printed(Duration::from_secs(10)).lines;
        assert!(tail.ended());
        assert_eq!(lines, ["half a line from stdout", "error: x"]);
    }

    #[test]
    fn cargo_keeps_its_colours_on_a_terminal_unless_told_otherwise() {
        let always = Some(("CARGO_TERM_COLOR".into(), "always".into()));
        assert_eq!(colour_for(true, false, false), always);
        assert_eq!(colour_for(false, false, false), None, "not a terminal");
        assert_eq!(colour_for(true, true, false), None, "CARGO_TERM_COLOR set");
        assert_eq!(colour_for(true, false, true), None, "NO_COLOR set");
    }

    #[test]
    fn lines_of_two_streams_do_not_mix() {
        let tail = Tail::with_streams(2);
        tail.feed(0, b"compiling ");
        tail.feed(1, b"error: ");
        tail.feed(0, b"app\n");
        tail.feed(1, b"mismatched types\n");
        tail.end(0);
        tail.end(1);
        let printed = tail.printed(Duration::ZERO);
        assert_eq!(printed.lines, ["compiling app", "error: mismatched types"]);
        assert_eq!(printed.text, "compiling app\nerror: mismatched types\n");
    }

    /// Regression: escapes other than CSI (an OSC 8 hyperlink, as cargo
    /// and rustc draw in terminals that support them; a window title; a
    /// character-set switch) left their parameters in the tail as text.
    #[test]
    fn a_line_reads_as_the_terminal_shows_it_whatever_escapes_it_holds() {
        let link = "\x1b]8;;file:///src/main.rs\x1b\\src/main.rs\x1b]8;;\x1b\\";
        assert_eq!(
            clean(&format!("  --> {link}:2:31")),
            "  --> src/main.rs:2:31"
        );
        // cargo 1.95's last line under WezTerm, iTerm2 or VS Code's terminal.
        let finished = "\x1b[1m\x1b[92m    Finished\x1b[0m \x1b]8;;https://doc.rust-lang.org/cargo/reference/profiles.html#default-profiles\x1b\\`dev` profile [unoptimized + debuginfo]\x1b]8;;\x1b\\ target(s) in 0.11s\r";
        assert_eq!(
            clean(finished),
            "    Finished `dev` profile [unoptimized + debuginfo] target(s) in 0.11s"
        );
        assert_eq!(clean("\x1b]0;cargo build\x07done"), "done");
        assert_eq!(clean("\x1b(Bplain\x1b[0m"), "plain");
        assert_eq!(
            clean("\x1b[1m\x1b[92m   Compiling\x1b[0m x\r\x1b[K\x1b[1m\x1b[31merror\x1b[0m: no\r"),
            "error: no"
        );
        assert_eq!(
            clean("   Building [=====>   ] 2/3: x\r"),
            "   Building [=====>   ] 2/3: x"
        );
    }
}
