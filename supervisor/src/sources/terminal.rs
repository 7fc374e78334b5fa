//! Keys typed in the terminal: `r` + Enter reloads, `q` + Enter quits.
//!
//! Only when stdin is a terminal: devsup never reads input that was meant
//! for something else (a pipe, a file, a CI runner). When that terminal
//! reaches end of file (Ctrl-D) or goes away, devsup shuts down as on `q`.

use std::io::{BufRead, IsTerminal};
use std::sync::mpsc::Sender;
use std::time::Instant;

use tracing::{debug, info};

use crate::event::{Event, Input, Trigger};

/// Starts the key thread if stdin is a terminal.
pub(crate) fn spawn(tx: Sender<Input>) {
    if !std::io::stdin().is_terminal() {
        return;
    }
    // Started in the background (`devsup … &`): reading its controlling
    // terminal would stop devsup with SIGTTIN. (A terminal that is not the
    // controlling one has no foreground group to check, and no SIGTTIN.)
    let background =
        nix::unistd::tcgetpgrp(std::io::stdin()).is_ok_and(|fg| fg != nix::unistd::getpgrp());
    if background {
        return;
    }
    info!("press r + Enter to reload, q + Enter to quit");
    let spawned = std::thread::Builder::new()
        .name("keys".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let event = match line.trim() {
                    "r" | "R" => Event::Reload {
                        trigger: Trigger::Key,
                        at: Instant::now(),
                    },
                    "q" | "Q" => Event::Shutdown {
                        because: "q pressed".into(),
                    },
                    "" => continue,
                    other => {
                        info!("unknown key {other:?}: r + Enter reloads, q + Enter quits");
                        continue;
                    }
                };
                if tx.send(Input::Event(event)).is_err() {
                    break;
                }
            }
            // Ctrl-D, or the terminal went away (a closed window, a lost
            // ssh session): nobody is left to watch this devsup.
            let _ = tx.send(Input::Event(Event::Shutdown {
                because: "the terminal closed".into(),
            }));
        });
    if let Err(e) = spawned {
        debug!("cannot start the key thread: {e}");
    }
}
