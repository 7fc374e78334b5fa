//! Keys typed in the terminal: `r` + Enter reloads, `q` + Enter quits.
//!
//! Only when stdin is a terminal, and only while devsup is in the
//! terminal's foreground: devsup never reads input that was meant for
//! something else (a pipe, a file, a CI runner, the shell after `bg`). When that terminal
//! reaches end of file (Ctrl-D) or goes away, devsup shuts down as on `q`.

use std::io::{BufRead, IsTerminal};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

#[cfg(unix)]
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use tracing::{debug, info};

use crate::event::{Event, Input, StopCause, Trigger};

/// Starts the key thread if stdin is a terminal.
pub(crate) fn spawn(tx: Sender<Input>) {
    if !std::io::stdin().is_terminal() {
        return;
    }
    // Started in the background (`devsup … &`): the terminal is not
    // devsup's to read (see `read_keys` for Ctrl-Z and `bg` later).
    if background() {
        return;
    }
    info!("press r + Enter to reload, q + Enter to quit");
    let spawned = std::thread::Builder::new()
        .name("keys".into())
        .spawn(move || {
            read_keys(&tx);
            // Ctrl-D, or the terminal went away (a closed window, a lost
            // ssh session): nobody is left to watch this devsup.
            let _ = tx.send(Input::Event(Event::Shutdown {
                because: StopCause::TerminalClosed,
            }));
        });
    if let Err(e) = spawned {
        debug!("cannot start the key thread: {e}");
    }
}

/// How often a key thread in the background checks whether it is in the
/// foreground again.
const BACKGROUND_POLL: Duration = Duration::from_millis(100);

/// Whether devsup's process group is the terminal's foreground group, as
/// far as can be told: a terminal that is not devsup's controlling one has
/// none, and no SIGTTIN either. Never on Windows, which has no job control.
fn background() -> bool {
    #[cfg(unix)]
    return nix::unistd::tcgetpgrp(std::io::stdin()).is_ok_and(|fg| fg != nix::unistd::getpgrp());
    #[cfg(not(unix))]
    false
}

/// Reads `r` / `q` lines until end of file or until the terminal is gone.
///
/// Keys are read only while devsup is in the foreground. After Ctrl-Z and
/// `bg`, a read of the terminal would stop devsup again with SIGTTIN (no
/// reloads, drains or reaping while stopped), so this thread blocks SIGTTIN
/// for itself, which makes such a read fail with `EIO` instead, and waits
/// until devsup is back in the foreground.
fn read_keys(tx: &Sender<Input>) {
    #[cfg(unix)]
    {
        let mut ttin = SigSet::empty();
        ttin.add(Signal::SIGTTIN);
        if let Err(e) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttin), None) {
            debug!("cannot block SIGTTIN in the key thread: {e}");
        }
    }
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        if background() {
            std::thread::sleep(BACKGROUND_POLL);
            continue;
        }
        line.clear();
        match stdin.lock().read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // Moved to the background while reading.
            #[cfg(unix)]
            Err(e) if e.raw_os_error() == Some(libc::EIO) && background() => continue,
            Err(_) => return,
        }
        let event = match line.trim() {
            "r" | "R" => Event::Reload {
                trigger: Trigger::Key,
                at: Instant::now(),
            },
            "q" | "Q" => Event::Shutdown {
                because: StopCause::Key,
            },
            "" => continue,
            other => {
                info!("unknown key {other:?}: r + Enter reloads, q + Enter quits");
                continue;
            }
        };
        if tx.send(Input::Event(event)).is_err() {
            return;
        }
    }
}
