//! OS signals, translated once into domain events.
//!
//! signal-hook's iterator runs on its own thread; each signal becomes one
//! [`Input`] on the supervisor's channel. The handler itself only writes to
//! a self-pipe, so nothing unsafe runs in signal context.

use std::sync::mpsc::Sender;
#[cfg(unix)]
use std::time::Instant;

use anyhow::Context;

#[cfg(unix)]
use crate::event::Trigger;
use crate::event::{Event, Input, StopCause};

/// On Windows: Ctrl-C or Ctrl-Break at devsup's console (or the console
/// closing) asks it to shut down, as SIGINT does; the handler is ctrlc's.
/// A generation's own drain signal never reaches devsup: it goes to the
/// generation's process group.
#[cfg(windows)]
pub(crate) fn spawn(tx: Sender<Input>) -> anyhow::Result<()> {
    let tx = std::sync::Mutex::new(tx);
    ctrlc::set_handler(move || {
        if let Ok(tx) = tx.lock() {
            let _ = tx.send(Input::Event(Event::Shutdown {
                because: StopCause::Sigint,
            }));
        }
    })
    .context("cannot install the console control handler")
}

/// Starts the signal thread. From now on SIGINT and SIGTERM no longer kill
/// devsup: they ask it to shut down.
#[cfg(unix)]
pub(crate) fn spawn(tx: Sender<Input>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;
    let mut signals = Signals::new([SIGHUP, SIGINT, SIGTERM, SIGCHLD])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let input = match sig {
                    SIGCHLD => Input::ChildExited,
                    SIGHUP => Input::Event(Event::Reload {
                        trigger: Trigger::Sighup,
                        at: Instant::now(),
                    }),
                    SIGINT => Input::Event(Event::Shutdown {
                        because: StopCause::Sigint,
                    }),
                    _ => Input::Event(Event::Shutdown {
                        because: StopCause::Sigterm,
                    }),
                };
                if tx.send(input).is_err() {
                    return;
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}
