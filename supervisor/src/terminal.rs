//! Keys typed in the terminal: `r` + Enter reloads, `q` + Enter quits.
//!
//! Only when stdin is a terminal: devsup never reads input that was meant
//! for something else (a pipe, a file, a CI runner).

use std::io::{BufRead, IsTerminal};
use std::sync::mpsc::Sender;
use std::time::Instant;

use tracing::{debug, info};

use crate::machine::{Event, Trigger};
use crate::supervisor::Input;

/// Starts the key thread if stdin is a terminal.
pub fn spawn(tx: Sender<Input>) {
    if !std::io::stdin().is_terminal() {
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
            debug!("stdin closed: no more keys");
        });
    if let Err(e) = spawned {
        debug!("cannot start the key thread: {e}");
    }
}
