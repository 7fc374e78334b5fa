//! A generation's ready channel: the socket pair passed at the fd after the
//! listening sockets (`DEVSUP_READY_FD`), on which the server writes
//! `READY=1` and the other protocol lines (see devsup-protocol).
//!
//! One thread per generation reads it until end of file, which comes when
//! every process holding the other end is gone; each complete line becomes
//! an [`Event::Message`] on the loop's channel, and so does a last line
//! without its newline, at end of file or after a pause of [`LINE_PAUSE`].

use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use devsup_protocol as proto;
use tracing::{debug, warn};

use crate::event::{Event, GenId, Input};

/// How long a message without its newline waits for the rest before it is
/// taken as a whole line.
const LINE_PAUSE: Duration = Duration::from_millis(200);

/// Most warnings logged about one generation's bad messages, so that a
/// server writing garbage in a loop cannot flood the terminal.
const MAX_WARNINGS: u32 = 5;

/// Reads one generation's ready channel until EOF (its whole group is gone,
/// or it closed the channel). Lines longer than [`proto::MAX_LINE`] are
/// skipped; bad lines are warned about; nothing read here can stop devsup.
pub(crate) fn spawn_reader(gen_id: GenId, channel: OwnedFd, tx: Sender<Input>) {
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

fn read_channel(gen_id: GenId, channel: OwnedFd, tx: &Sender<Input>) {
    let mut stream = std::os::unix::net::UnixStream::from(channel);
    let mut line = Vec::with_capacity(256);
    let mut overlong = false;
    let mut warnings = 0;
    let take_line = |line: &[u8], at: Instant, warn_bad: &mut dyn FnMut(String)| {
        match proto::parse_line(line) {
            Some(Ok(msg)) => {
                let _ = tx.send(Input::Event(Event::Message { gen_id, msg, at }));
            }
            Some(Err(e)) => warn_bad(e.to_string()),
            None => {}
        }
    };
    let mut warn_bad = |what: String| {
        warnings += 1;
        if warnings <= MAX_WARNINGS {
            warn!(
                generation = gen_id,
                "ignoring a bad message on the ready channel: {what}"
            );
        }
        if warnings == MAX_WARNINGS {
            warn!(
                generation = gen_id,
                "further bad messages from this generation are ignored silently"
            );
        }
    };
    let mut buf = [0u8; 8192];
    let mut paused = false;
    loop {
        // While part of a line is waiting, wait only [`LINE_PAUSE`] for
        // the rest: a server that writes `READY=1` without a newline and
        // keeps the channel open is heard all the same.
        let pending = !line.is_empty() && !overlong;
        if pending != paused {
            paused = pending;
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
                take_line(&line, Instant::now(), &mut warn_bad);
                line.clear();
                continue;
            }
            Err(e) => {
                debug!(generation = gen_id, "ready channel: {e}");
                break;
            }
        };
        let at = Instant::now();
        for &b in &buf[..n] {
            if b != b'\n' {
                if line.len() < proto::MAX_LINE {
                    line.push(b);
                } else {
                    overlong = true;
                }
                continue;
            }
            if overlong {
                warn_bad(format!("a line longer than {} bytes", proto::MAX_LINE));
                overlong = false;
            } else {
                take_line(&line, at, &mut warn_bad);
            }
            line.clear();
        }
    }
    // A last message without a newline, at end of file.
    if !overlong {
        take_line(&line, Instant::now(), &mut warn_bad);
    }
    debug!(generation = gen_id, "ready channel closed");
}
