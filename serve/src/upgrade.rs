//! Upgraded connections (WebSockets) through a drain, without the app's help.
//!
//! Once hyper has written a `101 Switching Protocols`, it hands the socket
//! to the application and forgets it. The socket is still [`ActiveIo`]
//! (crate::conn), though, so every byte the application writes passes
//! through here. For a WebSocket, the frames the server sends are unmasked
//! and self-delimiting, so following their headers tells where one frame
//! ends and the next begins. That is what lets `serve` close a WebSocket
//! *properly* on a drain without knowing the application's library: at a
//! frame boundary it writes a close frame (1012, "service restart") itself,
//! then swallows whatever the application still writes (after a close
//! frame, RFC 6455 §5.5.1 allows nothing more), and leaves the application
//! to read the client's answering close and end as it would on any close.
//!
//! The injection happens inside the application's own reads and writes
//! (where there is a task context to wait on the socket); the drain wakes
//! every task that used the socket (an application may read in one task
//! and write in another; the one that used it last may never touch it
//! again) so that an application parked in a read gets there. An application that polls the socket no more (stuck
//! elsewhere) gets its socket shut down a grace later instead.

use crate::sys::RawSock as RawFd;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Waker;

use tokio::sync::Notify;

/// The close frame `serve` writes on a drain: FIN + opcode 8, unmasked,
/// status 1012 ("service restart"), reason "restart".
pub(crate) const CLOSE_FRAME: [u8; 11] = [
    0x88, 9, 0x03, 0xF4, b'r', b'e', b's', b't', b'a', b'r', b't',
];

/// The most tasks remembered as using one socket (a reader and a writer,
/// and a few wakers of the same tasks seen through a library's proxies);
/// beyond it the oldest is forgotten.
const MAX_WAKERS: usize = 8;

/// The most bytes of a 101 response head looked through for its end.
const MAX_HEAD: usize = 16 * 1024;

/// The state of a connection's upgrade, shared between its socket (owned
/// by the application after the upgrade) and its connection task in
/// `serve`.
#[derive(Debug)]
pub(crate) struct Upgrade {
    /// Set once the service answered 101: only then does the socket take
    /// the lock on every read and write.
    flagged: AtomicBool,
    state: Mutex<UpgradeState>,
    /// Signalled (with a stored permit) when the socket is dropped.
    pub(crate) dropped: Notify,
}

#[derive(Debug)]
pub(crate) struct UpgradeState {
    phase: Phase,
    frames: FrameParser,
    /// The application wrote a close frame of its own.
    app_sent_close: bool,
    /// The drain asks for the close frame to be written.
    close_requested: bool,
    /// How much of [`CLOSE_FRAME`] has been written.
    close_written: usize,
    /// The tasks that read or wrote the socket, the latest last.
    wakers: Vec<Waker>,
    io_dropped: bool,
    /// `serve` shut the socket down: the application's writes fail from
    /// now on (it may be one that only writes and would never notice).
    shut: bool,
    fd: RawFd,
}

#[derive(Debug)]
enum Phase {
    /// Not upgraded (or not yet).
    None,
    /// A WebSocket 101 is being written; its head so far.
    Head(Vec<u8>),
    /// WebSocket frames follow.
    Frames,
    /// Upgraded to something else, or the head was not found: the bytes
    /// cannot be followed, so only the socket shutdown applies.
    Opaque,
}

impl Upgrade {
    pub(crate) fn new(fd: RawFd) -> Upgrade {
        Upgrade {
            flagged: AtomicBool::new(false),
            state: Mutex::new(UpgradeState {
                phase: Phase::None,
                frames: FrameParser::default(),
                app_sent_close: false,
                close_requested: false,
                close_written: 0,
                wakers: Vec::new(),
                io_dropped: false,
                shut: false,
                fd,
            }),
            dropped: Notify::new(),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, UpgradeState> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The service answered 101; `websocket` if the request asked for
    /// `Upgrade: websocket`.
    pub(crate) fn flag(&self, websocket: bool) {
        self.lock().phase = match websocket {
            true => Phase::Head(Vec::new()),
            false => Phase::Opaque,
        };
        self.flagged.store(true, Ordering::Release);
    }

    pub(crate) fn is_flagged(&self) -> bool {
        self.flagged.load(Ordering::Acquire)
    }

    /// Asks for the close frame, and wakes every task of the application
    /// that used the socket, so that the next read or write writes it.
    pub(crate) fn request_close(&self) {
        let wakers = {
            let mut state = self.lock();
            state.close_requested = true;
            std::mem::take(&mut state.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Whether a close frame went out (ours or the application's).
    pub(crate) fn closed_by_frame(&self) -> bool {
        let state = self.lock();
        state.app_sent_close || state.close_written == CLOSE_FRAME.len()
    }

    /// Shuts the socket down both ways: the application's next read sees
    /// the end and its next write fails, so it lets go of the socket.
    pub(crate) fn shutdown(&self) {
        let wakers = {
            let mut state = self.lock();
            state.shut = true;
            // The fd stays open while the state says the socket is not
            // dropped: the socket's Drop takes this lock before it closes it.
            if !state.io_dropped {
                // SAFETY: shutdown on an fd we own (see above); errors (the
                // peer is gone already) change nothing.
                unsafe { crate::sys::shutdown_both(state.fd) };
            }
            std::mem::take(&mut state.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Called from the socket's Drop, before the fd is closed.
    pub(crate) fn io_dropped(&self) {
        self.lock().io_dropped = true;
        self.dropped.notify_one();
    }
}

impl UpgradeState {
    /// Remembers a task using the socket, for [`Upgrade::request_close`]
    /// and [`Upgrade::shutdown`]: every one is woken, not only the last.
    pub(crate) fn register(&mut self, waker: &Waker) {
        if let Some(at) = self.wakers.iter().position(|have| have.will_wake(waker)) {
            // Seen already: it moves to the end, as the latest.
            let have = self.wakers.remove(at);
            self.wakers.push(have);
            return;
        }
        if self.wakers.len() == MAX_WAKERS {
            self.wakers.remove(0);
        }
        self.wakers.push(waker.clone());
    }

    /// Follows bytes the server wrote.
    pub(crate) fn written(&mut self, mut bytes: &[u8]) {
        if let Phase::Head(head) = &mut self.phase {
            let before = head.len();
            head.extend_from_slice(bytes);
            match head_end(head) {
                Some(end) => {
                    // What followed the head in the same write is frames.
                    bytes = &bytes[end.saturating_sub(before).min(bytes.len())..];
                    self.phase = Phase::Frames;
                }
                None if head.len() > MAX_HEAD => {
                    self.phase = Phase::Opaque;
                    return;
                }
                None => return,
            }
        }
        if matches!(self.phase, Phase::Frames) && self.frames.feed(bytes) {
            self.app_sent_close = true;
        }
    }

    /// Whether the close frame is due now: asked for, at a frame boundary,
    /// not yet (fully) written, and the application has not closed itself.
    pub(crate) fn inject_due(&self) -> bool {
        matches!(self.phase, Phase::Frames)
            && self.close_requested
            && !self.app_sent_close
            && self.close_written < CLOSE_FRAME.len()
            && (self.close_written > 0 || self.frames.at_boundary())
    }

    /// The rest of the close frame to write.
    pub(crate) fn close_rest(&self) -> &'static [u8] {
        &CLOSE_FRAME[self.close_written..]
    }

    pub(crate) fn close_advance(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.close_written += n;
        Ok(())
    }

    /// Whether our close frame has gone out: what the application writes
    /// after it is dropped (until the socket is shut down).
    pub(crate) fn swallowing(&self) -> bool {
        self.close_written == CLOSE_FRAME.len()
    }

    /// Whether `serve` has shut the socket down.
    pub(crate) fn is_shut(&self) -> bool {
        self.shut
    }
}

/// Where the `101` response head ends in `buf` (the index after its blank
/// line). Earlier responses on the connection may still be in the same
/// write, so the head is looked for from its status line.
fn head_end(buf: &[u8]) -> Option<usize> {
    let start = find(buf, b"HTTP/1.1 101")?;
    find(&buf[start..], b"\r\n\r\n").map(|at| start + at + 4)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Follows the headers of WebSocket frames in a byte stream to know where
/// each frame ends (RFC 6455 §5.2).
#[derive(Debug, Default)]
pub(crate) struct FrameParser {
    head: [u8; 14],
    have: usize,
    need: usize,
    payload_left: u64,
}

impl FrameParser {
    pub(crate) fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }

    /// Consumes `bytes`; returns whether a close frame began among them.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut close = false;
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            self.head[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have == 2 {
                let ext = match self.head[1] & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
                self.need = 2 + ext + mask;
            }
            if self.have >= 2 && self.have == self.need {
                if self.head[0] & 0x0f == 0x8 {
                    close = true;
                }
                self.payload_left = match self.head[1] & 0x7f {
                    126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                    127 => {
                        let mut len = [0; 8];
                        len.copy_from_slice(&self.head[2..10]);
                        u64::from_be_bytes(len)
                    }
                    len => u64::from(len),
                };
                self.have = 0;
            }
        }
        close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn frame_boundaries_are_found_in_any_split() {
        let mut stream = frame(0x1, b"hello");
        stream.extend(frame(0x2, &[7; 300]));
        stream.extend(frame(0x2, &[9; 70_000]));
        let ends = [7, 7 + 4 + 300, stream.len()];
        // Fed one byte at a time, the parser is at a boundary exactly at
        // the end of each frame.
        let mut parser = FrameParser::default();
        for (i, byte) in stream.iter().enumerate() {
            assert!(!parser.feed(&[*byte]));
            assert_eq!(parser.at_boundary(), ends.contains(&(i + 1)), "at {i}");
        }
        // And in two big pieces.
        let mut parser = FrameParser::default();
        parser.feed(&stream[..100]);
        assert!(!parser.at_boundary());
        parser.feed(&stream[100..]);
        assert!(parser.at_boundary());
    }

    #[test]
    fn a_close_frame_is_noticed() {
        let mut parser = FrameParser::default();
        assert!(!parser.feed(&frame(0x1, b"x")));
        assert!(parser.feed(&frame(0x8, &[0x03, 0xe8])));
        assert!(parser.at_boundary());
    }

    #[test]
    fn our_close_frame_parses_as_one_close_frame() {
        let mut parser = FrameParser::default();
        assert!(parser.feed(&CLOSE_FRAME));
        assert!(parser.at_boundary());
        assert_eq!(u16::from_be_bytes([CLOSE_FRAME[2], CLOSE_FRAME[3]]), 1012);
    }

    #[test]
    fn frames_start_after_the_101_head() {
        let upgrade = Upgrade::new(crate::sys::NO_SOCK);
        upgrade.flag(true);
        let mut state = upgrade.lock();
        // An earlier response in the same write, then the 101 head split
        // over two writes, then the first frame.
        state.written(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nHTTP/1.1 101 Switching");
        assert!(matches!(state.phase, Phase::Head(_)));
        let mut rest = b" Protocols\r\nupgrade: websocket\r\n\r\n".to_vec();
        rest.extend(frame(0x1, b"hi")[..2].iter());
        state.written(&rest);
        assert!(matches!(state.phase, Phase::Frames));
        assert!(!state.frames.at_boundary());
        state.written(b"hi");
        assert!(state.frames.at_boundary());
        state.close_requested = true;
        assert!(state.inject_due());
    }
}
