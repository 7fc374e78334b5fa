//! systemd above devsup: `Type=notify`.
//!
//! When devsup has a `NOTIFY_SOCKET` of its own, [`notify_from_env`]
//! subscribes a [`Notifier`] that tells systemd `READY=1` once the first
//! generation is ready, `RELOADING=1` (with `MONOTONIC_USEC=`) when a
//! reload starts and `READY=1` when it settles (the new generation is
//! ready, or the reload failed and the old one keeps serving), `STATUS=`
//! with the active generation, and `STOPPING=1` on shutdown. Socket
//! activation, the other half, is `crate::sockets::take_inherited`.
//!
//! devsup's own `LISTEN_*` and `NOTIFY_SOCKET` never reach what it runs:
//! each generation gets its own per-generation `NOTIFY_SOCKET` and
//! `LISTEN_*`, and builds get neither (`crate::process`).
//! `docs/systemd.md` has a unit pair.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use anyhow::Context;
use devsup_protocol as proto;
use tracing::warn;

use super::{Record, Reporter};
use crate::event::GenId;
use crate::step::{BuildStatus, Cause, DrainReason, Phase, Step};

/// Subscribes a [`Notifier`] if devsup has a `NOTIFY_SOCKET` of its own.
pub(crate) fn notify_from_env(reporter: &Reporter) -> anyhow::Result<()> {
    let Some(path) = std::env::var_os(proto::NOTIFY_SOCKET_ENV).filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let mut notifier = Notifier::new(path.as_encoded_bytes())?;
    reporter.subscribe(move |record: &Arc<Record>| {
        notifier.on(record);
        true
    });
    Ok(())
}

/// How long devsup, exiting, waits for its last notify messages to go.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
enum Outgoing {
    Message(String),
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Reports devsup's state to the service manager. Messages are sent by a
/// thread of their own, in order: a manager that reads slowly (a full
/// datagram queue blocks the sender) never holds up the supervisor.
#[derive(Debug)]
pub(crate) struct Notifier {
    tx: std::sync::mpsc::Sender<Outgoing>,
    ready_once: bool,
    reloading: bool,
    active: Option<GenId>,
}

impl Notifier {
    /// A notifier for the socket at `path` (`@name` for an abstract one).
    pub(crate) fn new(path: &[u8]) -> anyhow::Result<Notifier> {
        let addr = match path.strip_prefix(b"@") {
            Some(name) => crate::platform::peer::abstract_addr(name),
            None => std::os::unix::net::SocketAddr::from_pathname(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path),
            ),
        }
        .context("bad NOTIFY_SOCKET")?;
        let socket = UnixDatagram::unbound().context("cannot create a notify socket")?;
        let (tx, rx) = std::sync::mpsc::channel::<Outgoing>();
        std::thread::Builder::new()
            .name("systemd-notify".into())
            .spawn(move || {
                let mut warned = false;
                for message in rx {
                    let message = match message {
                        Outgoing::Message(message) => message,
                        Outgoing::Flush(done) => {
                            let _ = done.send(());
                            continue;
                        }
                    };
                    if let Err(e) = socket.send_to_addr(message.as_bytes(), &addr) {
                        if !warned {
                            warned = true;
                            warn!("cannot notify the service manager through NOTIFY_SOCKET: {e}");
                        }
                    }
                }
            })
            .context("cannot start the notify thread")?;
        Ok(Notifier {
            tx,
            ready_once: false,
            reloading: false,
            active: None,
        })
    }

    fn send(&mut self, message: &str) {
        let _ = self.tx.send(Outgoing::Message(message.to_owned()));
    }

    /// Waits (a little) until every message is sent: devsup is exiting.
    fn flush(&mut self) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if self.tx.send(Outgoing::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(FLUSH_WAIT);
        }
    }

    fn serving(&self) -> String {
        match self.active {
            Some(g) => format!("gen={g} serving"),
            None => "no generation serving".to_owned(),
        }
    }

    /// Ends a reload that failed: the old generation keeps serving.
    fn reload_failed(&mut self, what: &str) {
        if self.reloading {
            self.reloading = false;
            let msg = format!("READY=1\nSTATUS=reload failed ({what}); {}", self.serving());
            self.send(&msg);
        }
    }

    /// Takes one step into account.
    pub(crate) fn on(&mut self, record: &Record) {
        match &record.step {
            Step::Ready { generation, .. } => {
                self.active = Some(*generation);
                let status = format!("STATUS=gen={generation} ready, serving");
                if !self.ready_once || self.reloading {
                    self.ready_once = true;
                    self.reloading = false;
                    self.send(&format!("READY=1\n{status}"));
                } else {
                    self.send(&status);
                }
            }
            Step::Trigger { cause, .. }
                if self.ready_once && !self.reloading && *cause != Cause::Restart =>
            {
                self.reloading = true;
                let msg = format!(
                    "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading ({cause}); {}",
                    monotonic_usec(),
                    self.serving()
                );
                self.send(&msg);
            }
            Step::BuildFinished {
                status: BuildStatus::Failed,
                ..
            } => self.reload_failed("build failed"),
            Step::SpawnFailed { .. } => self.reload_failed("cannot start the server"),
            Step::Exited {
                generation,
                phase: Phase::Starting,
                ..
            } => self.reload_failed(&format!("gen={generation} exited before ready")),
            Step::Draining {
                generation,
                reason: DrainReason::NotReady,
                ..
            } => self.reload_failed(&format!("gen={generation} not ready in time")),
            Step::Exited {
                generation,
                phase: Phase::Active,
                ..
            } => {
                self.active = None;
                self.send(&format!("STATUS=gen={generation} exited; restarting"));
            }
            Step::Shutdown { cause, .. } => {
                self.send(&format!("STOPPING=1\nSTATUS=shutting down ({cause})"));
            }
            Step::Stopped { .. } => self.flush(),
            _ => {}
        }
    }
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd's `MONOTONIC_USEC=` wants.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::StopCause;
    use crate::event::{Exit, Trigger};
    use crate::step::Rule;

    fn notifier() -> (Notifier, UnixDatagram, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str().as_encoded_bytes()).unwrap();
        (n, listener, dir)
    }

    fn received(socket: &UnixDatagram, n: usize) -> Vec<String> {
        socket.set_nonblocking(false).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while out.len() < n {
            let len = socket.recv(&mut buf).unwrap();
            out.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        out
    }

    fn ready(generation: GenId) -> Record {
        Record::now(Step::Ready {
            generation,
            rule: Rule::Notify,
            how: None,
            ready_us: 1,
        })
    }

    #[test]
    fn ready_reloading_ready_stopping() {
        let (mut n, socket, _dir) = notifier();
        n.on(&Record::now(Step::trigger(&Trigger::Startup, false)));
        n.on(&ready(1));
        n.on(&Record::now(Step::trigger(&Trigger::Sighup, false)));
        // A second trigger while reloading says nothing more.
        n.on(&Record::now(Step::trigger(&Trigger::Sighup, true)));
        n.on(&ready(2));
        n.on(&Record::now(Step::trigger(&Trigger::Key, false)));
        n.on(&Record::now(Step::build_finished(
            BuildStatus::Failed,
            0,
            1,
            Some(Exit::Code(1)),
            std::time::Duration::ZERO,
        )));
        n.on(&Record::now(Step::Shutdown {
            cause: StopCause::Sigterm,
            live: 1,
        }));
        let got = received(&socket, 6);
        assert_eq!(got.len(), 6, "{got:#?}");
        assert_eq!(got[0], "READY=1\nSTATUS=gen=1 ready, serving");
        assert!(
            got[1].starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{}",
            got[1]
        );
        let usec: u64 = got[1].lines().nth(1).unwrap()["MONOTONIC_USEC=".len()..]
            .parse()
            .unwrap();
        assert!(usec > 0 && usec <= monotonic_usec());
        assert_eq!(got[2], "READY=1\nSTATUS=gen=2 ready, serving");
        assert!(got[3].starts_with("RELOADING=1\n"), "{}", got[3]);
        assert_eq!(
            got[4],
            "READY=1\nSTATUS=reload failed (build failed); gen=2 serving"
        );
        assert_eq!(got[5], "STOPPING=1\nSTATUS=shutting down (SIGTERM)");
    }

    /// A datagram queue holds few messages (net.unix.max_dgram_qlen, 10 by
    /// default): a manager that does not read must not block devsup.
    #[test]
    fn a_manager_that_does_not_read_never_blocks_devsup() {
        let (mut n, _socket, _dir) = notifier();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for generation in 1..200 {
                n.on(&ready(generation));
            }
            let _ = done.send(());
        });
        assert!(
            finished
                .recv_timeout(std::time::Duration::from_secs(20))
                .is_ok(),
            "the notifier blocked"
        );
    }
}
