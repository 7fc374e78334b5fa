//! devsup's log as the harness collects it: a reader thread per pipe, every
//! line kept with the instant it arrived, and [`LineMatch`], what a test
//! waits for in it.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::devlog;

/// What a [`Devsup`](super::Devsup) waits for in its log: a substring (`&str`, `String`)
/// or a predicate (`|line: &str| ...`).
pub trait LineMatch {
    /// Whether `line` matches.
    fn is_match(&self, line: &str) -> bool;
    /// How to name the pattern in a timeout message.
    fn describe(&self) -> String;
}

impl LineMatch for &str {
    fn is_match(&self, line: &str) -> bool {
        line.contains(*self)
    }
    fn describe(&self) -> String {
        format!("a line containing {self:?}")
    }
}

impl LineMatch for String {
    fn is_match(&self, line: &str) -> bool {
        line.contains(self.as_str())
    }
    fn describe(&self) -> String {
        self.as_str().describe()
    }
}

impl<F: Fn(&str) -> bool> LineMatch for F {
    fn is_match(&self, line: &str) -> bool {
        self(line)
    }
    fn describe(&self) -> String {
        "a line matching the predicate".into()
    }
}

/// Matches the log line of `word` for generation `generation`; see
/// [`devlog::is_event`].
pub fn event(generation: u64, word: &str) -> impl LineMatch + '_ {
    struct Event<'a>(u64, &'a str);
    impl LineMatch for Event<'_> {
        fn is_match(&self, line: &str) -> bool {
            devlog::is_event(line, self.0, self.1)
        }
        fn describe(&self) -> String {
            format!("the line \"gen={} {} ...\"", self.0, self.1)
        }
    }
    Event(generation, word)
}

#[derive(Debug, Default)]
pub(super) struct LogState {
    pub(super) lines: Vec<String>,
    /// When each of `lines` arrived here (devsup's lines carry no
    /// timestamp; a reader thread blocked on the pipe sees each within
    /// microseconds of its write).
    pub(super) arrived: Vec<Instant>,
    pub(super) stdout: Vec<String>,
    /// stderr reached end of file: no more lines will come.
    pub(super) closed: bool,
}

#[derive(Debug, Default)]
pub(super) struct Log {
    pub(super) state: Mutex<LogState>,
    pub(super) changed: Condvar,
}

/// Spawns a thread that reads `pipe` line by line into `log` (stderr, or
/// stdout when `stdout`), echoing each line to our stderr.
pub(super) fn collect(pipe: impl Read + Send + 'static, log: Arc<Log>, stdout: bool, echo: bool) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let arrived = Instant::now();
            let raw = String::from_utf8_lossy(&buf);
            let line = devlog::strip_ansi(raw.trim_end_matches(['\n', '\r']));
            if echo && stdout {
                eprintln!("[devsup stdout] {line}");
            } else if echo {
                eprintln!("[devsup] {line}");
            }
            let mut state = log.state.lock().unwrap();
            if stdout {
                state.stdout.push(line);
            } else {
                state.lines.push(line);
                state.arrived.push(arrived);
            }
            log.changed.notify_all();
        }
        if !stdout {
            log.state.lock().unwrap().closed = true;
            log.changed.notify_all();
        }
    });
}
