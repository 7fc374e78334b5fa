//! A build step's output through a pseudo-terminal, when devsup's own
//! stderr is a terminal: the step sees a terminal, as it would without
//! devsup, so cargo draws its progress bar and colours; the tee copies the
//! master to devsup's stderr and keeps its end like a pipe's (the tail's
//! lines are read as a terminal shows them last: a progress line as last
//! drawn, without escapes).
//!
//! The step's stderr is the pty's slave, and so is its stdout, except for
//! the inferred cargo step, whose stdout stays a pipe of JSON messages
//! (`tee::cargo_messages`). The slave is not the step's controlling
//! terminal: Ctrl-C reaches devsup, which stops the build as before, and
//! the step's stdin stays /dev/null (`r` + Enter is devsup's). The pty
//! does not turn `\n` into `\r\n` (ONLCR off), so the kept text reads as
//! the step wrote it; the user's terminal does that conversion itself.

use std::io::IsTerminal;
use std::os::fd::{AsFd, OwnedFd};

use nix::pty::{Winsize, openpty};
use nix::sys::termios::{OutputFlags, SetArg, tcgetattr, tcsetattr};

use crate::build_output::tee::{self, Tail};
use crate::cargo::Built;

/// Whether build steps get a pseudo-terminal: devsup's stderr is one.
pub(crate) fn wanted() -> bool {
    std::io::stderr().is_terminal()
}

/// Like `tee::start`, through a pty: the tail, and the step's stdout and
/// stderr to place at fds 1 and 2 (drop them once the step is started).
pub(crate) fn start(
    name: &str,
    messages: Option<Built>,
) -> anyhow::Result<(Tail, OwnedFd, OwnedFd)> {
    let size = terminal_size();
    let pty = openpty(size.as_ref(), None)?;
    for fd in [pty.master.as_fd(), pty.slave.as_fd()] {
        crate::platform::fds::set_cloexec(fd)?;
    }
    let mut termios = tcgetattr(&pty.slave)?;
    termios.output_flags.remove(OutputFlags::ONLCR);
    tcsetattr(&pty.slave, SetArg::TCSANOW, &termios)?;
    let tail = Tail::with_streams(2);
    let out = match messages {
        Some(built) => tee::cargo_messages(name, built, tail.clone())?,
        None => {
            // One stream for both: stdout's is ended at once.
            tail.end(0);
            pty.slave.try_clone()?
        }
    };
    let master = std::fs::File::from(pty.master);
    tee::copy(name, master, std::io::stderr(), tail.clone(), 1)?;
    Ok((tail, out, pty.slave))
}

/// devsup's terminal's size, for the step's: cargo fits its bar to it.
fn terminal_size() -> Option<Winsize> {
    let mut size = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` (nix's `Winsize` is libc's)
    // through the pointer, which points to one owned by this frame.
    let got = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
    (got == 0 && size.ws_col > 0).then_some(size)
}
