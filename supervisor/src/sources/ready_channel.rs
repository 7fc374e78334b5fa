//! A generation's ready channel: the socket pair passed at the fd after the
//! listening sockets (`DEVSUP_READY_FD`), on which the server writes
//! `READY=1` and the other protocol lines (see devsup-protocol).
//!
//! One thread per generation reads it until end of file, which comes when
//! every process holding the other end is gone; each complete line becomes
//! an [`Event::Message`] on the loop's channel, and so does a last line
//! without its newline, at end of file or after a pause of [`LINE_PAUSE`].

use std::io::Read;
use std::sync::mpsc::Sender;
#[cfg(unix)]
use std::time::Duration;
use std::time::Instant;

use devsup_protocol as proto;
use tracing::{debug, warn};

use crate::event::{Event, GenId, Input};

/// devsup's end of a ready channel: the socket pair's on Unix; on Windows
/// the read end of the anonymous pipe named by `DEVSUP_READY_HANDLE`.
#[cfg(unix)]
pub(crate) type ChannelEnd = std::os::fd::OwnedFd;
#[cfg(windows)]
pub(crate) type ChannelEnd = std::fs::File;

/// How long a message without its newline waits for the rest before it is
/// taken as a whole line.
#[cfg(unix)]
const LINE_PAUSE: Duration = Duration::from_millis(200);

/// Most warnings logged about one generation's bad messages, so that a
/// server writing garbage in a loop cannot flood the terminal.
const MAX_WARNINGS: u32 = 5;

/// Reads one generation's ready channel until EOF (its whole group is gone,
/// or it closed the channel). Lines longer than [`proto::MAX_LINE`] are
/// skipped; bad lines are warned about; nothing read here can stop devsup.
pub(crate) fn spawn_reader(gen_id: GenId, channel: ChannelEnd, tx: Sender<Input>) {
    let spawned = std::thread::Builder::new()
        .name(format!("gen-{gen_id}-channel"))
        .spawn(move || read_channel(gen_id, channel, &tx));
    if let Err(e) = spawned {
        warn!(
            generation = gen_id,
            "cannot start a thread to read its ready channel: {e}"
        );
    }
}

fn read_channel(gen_id: GenId, channel: ChannelEnd, tx: &Sender<Input>) {
    #[cfg(unix)]
    let mut stream = std::os::unix::net::UnixStream::from(channel);
    // An anonymous pipe has no read timeout: a last line without its
    // newline is taken at end of file only.
    #[cfg(windows)]
    let mut stream = channel;
    let mut lines = Lines {
        gen_id,
        tx,
        line: Vec::with_capacity(256),
        overlong: false,
        warnings: 0,
    };
    let mut buf = [0u8; 8192];
    let mut paused = false;
    loop {
        // While part of a line is waiting, wait only [`LINE_PAUSE`] for
        // the rest: a server that writes `READY=1` without a newline and
        // keeps the channel open is heard all the same.
        let pending = lines.pending();
        if pending != paused {
            paused = pending;
            #[cfg(unix)]
            let _ = stream.set_read_timeout(pending.then_some(LINE_PAUSE));
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if pending
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
            {
                debug!(
                    generation = gen_id,
                    "a message without a newline, then a pause: taken as a whole line"
                );
                lines.end(Instant::now());
                continue;
            }
            Err(e) => {
                debug!(generation = gen_id, "ready channel: {e}");
                break;
            }
        };
        lines.push(&buf[..n], Instant::now());
    }
    // A last message without a newline, at end of file.
    lines.end(Instant::now());
    debug!(generation = gen_id, "ready channel closed");
}

/// The ready channel's bytes cut into lines, each sent on as a message.
struct Lines<'a> {
    gen_id: GenId,
    tx: &'a Sender<Input>,
    /// The line so far.
    line: Vec<u8>,
    /// The line so far is longer than [`proto::MAX_LINE`]: dropped.
    overlong: bool,
    /// Bad messages so far.
    warnings: u32,
}

impl Lines<'_> {
    /// Part of a line is waiting for the rest.
    fn pending(&self) -> bool {
        !self.line.is_empty() && !self.overlong
    }

    /// Takes `bytes` read at `at`: every line they end is sent on.
    fn push(&mut self, bytes: &[u8], at: Instant) {
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() < proto::MAX_LINE {
                    self.line.push(b);
                } else {
                    self.overlong = true;
                }
                continue;
            }
            if self.overlong {
                self.bad(format!("a line longer than {} bytes", proto::MAX_LINE));
                self.overlong = false;
                self.line.clear();
            } else {
                self.end(at);
            }
        }
    }

    /// Ends the line so far (unless it is overlong) and sends it on.
    fn end(&mut self, at: Instant) {
        if !self.overlong {
            match proto::parse_line(&self.line) {
                Some(Ok(msg)) => {
                    let _ = self.tx.send(Input::Event(Event::Message {
                        gen_id: self.gen_id,
                        msg,
                        at,
                    }));
                }
                Some(Err(e)) => self.bad(e.to_string()),
                None => {}
            }
        }
        self.line.clear();
    }

    /// Warns of a bad message, [`MAX_WARNINGS`] times at most.
    fn bad(&mut self, what: String) {
        self.warnings += 1;
        if self.warnings <= MAX_WARNINGS {
            warn!(
                generation = self.gen_id,
                "ignoring a bad message on the ready channel: {what}"
            );
        }
        if self.warnings == MAX_WARNINGS {
            warn!(
                generation = self.gen_id,
                "further bad messages from this generation are ignored silently"
            );
        }
    }
}
