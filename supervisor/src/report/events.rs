//! `--events`: every step as one JSON object per line, for editors,
//! scripts and agents (the schema is in `docs/events.md`).
//!
//! The stream goes to a file, to stdout (`-`; the human log stays on
//! stderr, and so does everything the server and the build print), or to
//! a unix socket devsup listens on (`unix::PATH`): each client that
//! connects reads a `status` object first, then every step from then on.
//! Every devsup also serves the same stream on a status socket in the
//! runtime directory ([`super::status::default_socket`]), which is where
//! `devsup status` looks.
//!
//! Every output is written on a thread of its own. A reader that does not
//! keep up (more than [`CLIENT_BACKLOG`] lines behind) is disconnected
//! rather than allowed to slow devsup down: a socket client, a file or
//! stdout alike (the last two are closed, so their reader sees the end).
//! A socket client that reads nothing for [`CLIENT_WRITE_TIMEOUT`] is
//! disconnected too, so that its thread ends.

use std::io::Write;
#[cfg(unix)]
use std::os::fd::{FromRawFd, OwnedFd};
#[cfg(unix)]
use std::os::unix::net::{UnixListener, UnixStream};
#[cfg(unix)]
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(unix)]
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use anyhow::Context;
#[cfg(unix)]
use tracing::debug;
use tracing::warn;

#[cfg(unix)]
use super::status::Status;
use super::{Record, Reporter};
#[cfg(unix)]
use crate::step::{Step, Trouble};

/// Lines a reader may be behind before it is disconnected.
pub(crate) const CLIENT_BACKLOG: usize = 4096;

/// How long a write to a socket client may block before the client is
/// disconnected.
#[cfg(unix)]
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long devsup, as it exits, waits for the lines already queued (its
/// last steps: `exited`, `stopped`) to reach every reader.
const DRAIN_AT_EXIT: Duration = Duration::from_secs(2);

/// A subscriber of the reporter, as the writer returns it.
type Subscriber = Box<dyn FnMut(&Arc<Record>) -> bool + Send>;

/// The sending side of one line stream written on a thread of its own,
/// with a count of the lines sent but not yet written, so that devsup can
/// wait for them as it exits.
#[derive(Debug, Clone)]
struct Outlet {
    tx: SyncSender<Arc<str>>,
    unwritten: Arc<AtomicUsize>,
}

impl Outlet {
    /// A stream and the receiving side its thread writes from.
    fn new() -> (Outlet, Receiver<Arc<str>>, Arc<AtomicUsize>) {
        let (tx, rx) = mpsc::sync_channel(CLIENT_BACKLOG);
        let unwritten = Arc::new(AtomicUsize::new(0));
        (
            Outlet {
                tx,
                unwritten: unwritten.clone(),
            },
            rx,
            unwritten,
        )
    }

    fn try_send(&self, line: Arc<str>) -> Result<(), TrySendError<Arc<str>>> {
        self.unwritten.fetch_add(1, Ordering::SeqCst);
        self.tx.try_send(line).inspect_err(|_| {
            self.unwritten.fetch_sub(1, Ordering::SeqCst);
        })
    }
}

pub(crate) use super::target::Target;

/// The event outputs; dropping it removes the socket files, and the
/// status sockets' directory once no other devsup has one there.
#[derive(Debug)]
pub(crate) struct Events {
    #[cfg(unix)]
    sockets: Vec<PathBuf>,
    #[cfg(unix)]
    dirs: Vec<PathBuf>,
    /// The unwritten-line counts of the `--events` writer.
    writers: Vec<Arc<AtomicUsize>>,
    /// The socket clients, whose counts are waited for too.
    #[cfg(unix)]
    hub: Hub,
}

#[cfg(unix)]
impl Events {
    /// Tells the guard what to remove if devsup dies before this is
    /// dropped: the socket files, and their directory if it is empty then.
    pub(crate) fn remove_on_death(&self, guard: &mut crate::guard::Guard) {
        for path in &self.sockets {
            guard.remove_on_death(path);
        }
        for dir in &self.dirs {
            guard.remove_empty_dir_on_death(dir);
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // The last steps are queued: let them reach the readers, for a
        // bounded time (a reader that reads nothing is dropped after
        // CLIENT_WRITE_TIMEOUT anyway).
        let deadline = Instant::now() + DRAIN_AT_EXIT;
        #[cfg(unix)]
        let all_written = || {
            let clients = self.hub.lock();
            (self
                .writers
                .iter()
                .chain(clients.clients.iter().map(|c| &c.unwritten)))
            .all(|n| n.load(Ordering::SeqCst) == 0)
        };
        #[cfg(windows)]
        let all_written = || (self.writers.iter()).all(|n| n.load(Ordering::SeqCst) == 0);
        while !all_written() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        #[cfg(unix)]
        for path in &self.sockets {
            let _ = std::fs::remove_file(path);
        }
        #[cfg(unix)]
        for dir in &self.dirs {
            // Fails, as it should, while another devsup's socket is there.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Moves stdout aside for the event stream: returns a new fd for what
/// stdout was, and makes fd 1 a copy of stderr, so that nothing devsup
/// starts (servers, builds) can write into the stream. Call it before
/// starting any process.
#[cfg(unix)]
pub(crate) fn take_stdout() -> anyhow::Result<OwnedFd> {
    // SAFETY: fcntl/dup2 on fds 1 and 2; the new fd is owned by the
    // returned OwnedFd alone.
    unsafe {
        let fd = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot use stdout for events");
        }
        let out = OwnedFd::from_raw_fd(fd);
        if libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot point stdout at stderr");
        }
        Ok(out)
    }
}

/// Sets up `--events` (with `stdout`, from [`take_stdout`], for `-`) and
/// the status socket at `status_socket`, as subscribers of `reporter`.
#[cfg(unix)]
pub(crate) fn setup(
    target: Option<&Target>,
    stdout: Option<OwnedFd>,
    status_socket: Option<&Path>,
    reporter: &Reporter,
) -> anyhow::Result<Events> {
    let hub = Hub::default();
    let mut events = Events {
        sockets: Vec::new(),
        dirs: Vec::new(),
        writers: Vec::new(),
        hub: hub.clone(),
    };
    match target {
        Some(Target::Stdout) => {
            let fd = match stdout {
                Some(fd) => fd,
                None => take_stdout()?,
            };
            let (write, unwritten) = writer(std::fs::File::from(fd), "stdout".into())?;
            events.writers.push(unwritten);
            reporter.subscribe(write);
        }
        Some(Target::File(path)) => events.writers.push(file_writer(path, reporter)?),
        Some(Target::Socket(path)) => {
            hub.listen(path)?;
            events.sockets.push(path.clone());
        }
        None => {}
    }
    if let Some(path) = status_socket {
        match super::status::prepare_dir(path).and_then(|()| hub.listen(path)) {
            Ok(()) => {
                events.sockets.push(path.to_owned());
                events.dirs.extend(path.parent().map(Path::to_owned));
            }
            Err(e) => reporter.report(Step::Trouble(Trouble::NoStatusSocket(format!("{e:#}")))),
        }
    }
    let subscriber = hub.clone();
    reporter.subscribe(move |record: &Arc<Record>| subscriber.publish(record));
    Ok(events)
}

/// Sets up `--events`: on Windows a file only (there is no status
/// socket, and std has no unix sockets there).
#[cfg(windows)]
pub(crate) fn setup(target: Option<&Target>, reporter: &Reporter) -> anyhow::Result<Events> {
    let mut events = Events {
        writers: Vec::new(),
    };
    match target {
        Some(Target::File(path)) => events.writers.push(file_writer(path, reporter)?),
        Some(Target::Stdout) => {
            anyhow::bail!("--events - is not supported on Windows yet: give a file, --events FILE")
        }
        Some(Target::Socket(_)) => anyhow::bail!(
            "--events unix::PATH is not supported on Windows: give a file, --events FILE"
        ),
        None => {}
    }
    Ok(events)
}

/// `--events FILE`: the file created (emptied if it exists), and a writer
/// of it subscribed to `reporter`; returns its count of unwritten lines.
fn file_writer(path: &std::path::Path, reporter: &Reporter) -> anyhow::Result<Arc<AtomicUsize>> {
    let file = std::fs::File::create(path).with_context(|| {
        format!(
            "cannot write events to {}: choose a path in a directory you can write",
            path.display()
        )
    })?;
    let (write, unwritten) = writer(file, path.display().to_string())?;
    reporter.subscribe(write);
    Ok(unwritten)
}

/// A subscriber writing one line per step to `out`, on a thread of its
/// own so that a slow reader never blocks the loop. It stops, with one
/// warning, at the first write error, or when the reader is more than
/// [`CLIENT_BACKLOG`] lines behind (then `out` is closed once what is
/// queued is written).
/// Returns the subscriber and its count of lines not yet written.
///
/// (Boxed: it is called once per step, on the loop's thread.)
fn writer(
    out: impl Write + Send + 'static,
    name: String,
) -> anyhow::Result<(Subscriber, Arc<AtomicUsize>)> {
    let (tx, rx, unwritten) = Outlet::new();
    let count = unwritten.clone();
    let thread_name = name.clone();
    std::thread::Builder::new()
        .name("events-writer".into())
        .spawn(move || {
            let mut out = std::io::BufWriter::new(out);
            if let Err(e) = write_lines(&mut out, &rx, &unwritten) {
                warn!("cannot write events to {thread_name}: {e}; no more events go there");
            }
            unwritten.store(0, Ordering::SeqCst);
        })
        .context("cannot start the events thread")?;
    let subscriber = move |record: &Arc<Record>| match tx.try_send(record.to_json().into()) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            warn!(
                "the reader of the events on {name} is {CLIENT_BACKLOG} lines behind: \
                 no more events go there"
            );
            false
        }
        Err(TrySendError::Disconnected(_)) => false,
    };
    Ok((Box::new(subscriber), count))
}

/// Writes every line from `rx` to `out` until the sender is gone,
/// flushing whenever nothing more is queued.
fn write_lines(
    out: &mut impl Write,
    rx: &Receiver<Arc<str>>,
    unwritten: &AtomicUsize,
) -> std::io::Result<()> {
    while let Ok(line) = rx.recv() {
        writeln!(out, "{line}")?;
        let mut written = 1;
        // Send what is queued in one go, then flush.
        for line in rx.try_iter() {
            writeln!(out, "{line}")?;
            written += 1;
        }
        out.flush()?;
        unwritten.fetch_sub(written, Ordering::SeqCst);
    }
    Ok(())
}

#[cfg(unix)]
#[derive(Debug, Default)]
struct HubState {
    status: Option<Status>,
    clients: Vec<Outlet>,
}

/// The socket clients and the status they start from.
#[cfg(unix)]
#[derive(Debug, Clone, Default)]
struct Hub(Arc<Mutex<HubState>>);

#[cfg(unix)]
impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, record: &Arc<Record>) -> bool {
        let mut state = self.lock();
        state.status.get_or_insert_with(Status::new).fold(record);
        if state.clients.is_empty() {
            return true;
        }
        let line: Arc<str> = record.to_json().into();
        state
            .clients
            .retain(|client| match client.try_send(line.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    warn!("an events client is {CLIENT_BACKLOG} lines behind: disconnecting it");
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
        true
    }

    /// Listens at `path` (a stale socket file there is replaced; a live
    /// one is an error) and serves clients on a thread.
    fn listen(&self, path: &Path) -> anyhow::Result<()> {
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "{} is in use by another devsup: stop it or choose another path",
                path.display()
            );
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot listen for event clients at {}", path.display()))?;
        let hub = self.clone();
        std::thread::Builder::new()
            .name("events-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    match stream {
                        Ok(stream) => hub.add(stream),
                        Err(e) => debug!("events socket: {e}"),
                    }
                }
            })
            .context("cannot start the events thread")?;
        Ok(())
    }

    /// A new client: the status now, then every step, with nothing lost
    /// or repeated in between (both happen under the hub's lock).
    fn add(&self, stream: UnixStream) {
        let (tx, rx, unwritten) = Outlet::new();
        let mut state = self.lock();
        let status = state.status.get_or_insert_with(Status::new).clone();
        let first = super::status_json(&status);
        if tx.try_send(first.into()).is_err() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("events-client".into())
            .spawn(move || {
                serve_client(stream, &rx, &unwritten, CLIENT_WRITE_TIMEOUT);
                unwritten.store(0, Ordering::SeqCst);
            });
        match spawned {
            Ok(_) => state.clients.push(tx),
            Err(e) => debug!("cannot start a thread for an events client: {e}"),
        }
    }
}

#[cfg(unix)]
fn serve_client(
    stream: UnixStream,
    rx: &Receiver<Arc<str>>,
    unwritten: &AtomicUsize,
    timeout: Duration,
) {
    // A client that reads nothing would keep this thread blocked forever.
    if let Err(e) = stream.set_write_timeout(Some(timeout)) {
        debug!("events client: cannot set a write timeout: {e}");
        return;
    }
    let mut out = std::io::BufWriter::new(stream);
    if let Err(e) = write_lines(&mut out, rx, unwritten) {
        debug!("events client disconnected: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    use std::io::{BufRead, BufReader};
    #[cfg(windows)]
    use std::sync::Mutex;

    use super::*;
    #[cfg(windows)]
    use crate::step::Step;

    #[test]
    fn targets_parse() {
        assert_eq!("-".parse(), Ok(Target::Stdout));
        assert_eq!("ev.json".parse(), Ok(Target::File("ev.json".into())));
        assert_eq!(
            "unix::/tmp/e.sock".parse(),
            Ok(Target::Socket("/tmp/e.sock".into()))
        );
        assert!(
            "unix::"
                .parse::<Target>()
                .unwrap_err()
                .contains("unix::PATH")
        );
        assert!("".parse::<Target>().is_err());
    }

    #[test]
    fn a_file_gets_one_json_object_per_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        let reporter = Reporter::default();
        #[cfg(unix)]
        let _events = setup(Some(&Target::File(path.clone())), None, None, &reporter).unwrap();
        #[cfg(windows)]
        let _events = setup(Some(&Target::File(path.clone())), &reporter).unwrap();
        reporter.step(Step::Stopped { code: 0, peak: 0 });
        reporter.step(Step::Stopped { code: 1, peak: 0 });
        // The writer's thread writes them: wait for both lines.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.lines().count() >= 2 || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::yield_now();
        };
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[1]["code"], 1);
    }

    /// A reader slower than devsup's exit: dropping `Events` (devsup
    /// returning from its loop) waits for the queued last steps to be
    /// written, so the stream ends with `stopped`.
    #[test]
    fn the_last_steps_are_written_before_devsup_exits() {
        struct Slow(Arc<Mutex<Vec<u8>>>);
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(50));
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let written = Arc::new(Mutex::new(Vec::new()));
        let reporter = Reporter::default();
        let (write, unwritten) = writer(Slow(written.clone()), "slow".into()).unwrap();
        reporter.subscribe(write);
        let events = Events {
            #[cfg(unix)]
            sockets: Vec::new(),
            #[cfg(unix)]
            dirs: Vec::new(),
            writers: vec![unwritten],
            #[cfg(unix)]
            hub: Hub::default(),
        };
        reporter.step(Step::Stopped { code: 0, peak: 0 });
        drop(events);
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert!(text.contains("\"stopped\""), "{text:?}");
    }

    #[cfg(unix)]
    #[test]
    fn socket_clients_read_the_status_then_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sock");
        let reporter = Reporter::default();
        let events = setup(Some(&Target::Socket(path.clone())), None, None, &reporter).unwrap();
        reporter.step(Step::Spawned {
            generation: 1,
            pid: 42,
            after_trigger_us: None,
        });
        reporter.step(Step::Active {
            generation: 1,
            replaces: None,
        });
        let client = UnixStream::connect(&path).unwrap();
        let mut lines = BufReader::new(client).lines();
        let first: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(first["event"], "status");
        assert_eq!(first["active"], 1);
        assert_eq!(first["active_pid"], 42);
        // The client is registered once its status is read.
        reporter.step(Step::Stopped { code: 0, peak: 0 });
        let next: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(next["event"], "stopped");
        // A second devsup cannot take a live socket; the file goes on drop.
        let err = setup(Some(&Target::Socket(path.clone())), None, None, &reporter).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(events);
        assert!(!path.exists());
    }

    /// The targets Windows cannot write to are refused, each in one line.
    #[cfg(windows)]
    #[test]
    fn on_windows_stdout_and_sockets_are_refused() {
        let reporter = Reporter::default();
        for (target, says) in [
            (Target::Stdout, "--events -"),
            (Target::Socket("e.sock".into()), "unix::PATH"),
        ] {
            let err = setup(Some(&target), &reporter).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("--events FILE"), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    /// Runs `f` on a thread; fails if it has not returned within 30 s
    /// (it is expected to return at once; before the fix it never did).
    #[cfg(unix)]
    fn returns_promptly(what: &str, f: impl FnOnce() + Send + 'static) {
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = done.send(());
        });
        assert!(
            finished.recv_timeout(Duration::from_secs(30)).is_ok(),
            "{what} blocked"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_reader_that_does_not_read_never_blocks_the_reporter() {
        let (read, write) = crate::platform::fds::pipe().unwrap();
        let reporter = Reporter::default();
        reporter.subscribe(
            writer(std::fs::File::from(write), "a pipe".into())
                .unwrap()
                .0,
        );
        // Far more than the pipe holds plus the backlog.
        let steps = 4 * CLIENT_BACKLOG;
        let stepping = reporter.clone();
        returns_promptly("Reporter::step", move || {
            for code in 0..steps {
                stepping.step(Step::Stopped {
                    code: code as u8,
                    peak: 0,
                });
            }
        });
        // The writer fell behind: it was dropped, and the reader, once it
        // reads, gets what was queued, in whole lines, then the end.
        assert!(!reporter.is_active());
        let lines: Vec<String> = BufReader::new(std::fs::File::from(read))
            .lines()
            .map(Result::unwrap)
            .collect();
        assert!(lines.len() < steps, "{} lines", lines.len());
        for (code, line) in lines.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["code"], code % 256);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_socket_client_that_does_not_read_is_dropped_after_the_timeout() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::sync_channel(CLIENT_BACKLOG);
        // Far more than the socket buffers hold.
        let line: Arc<str> = "x".repeat(64 * 1024).into();
        for _ in 0..64 {
            tx.send(line.clone()).unwrap();
        }
        returns_promptly("serve_client", move || {
            serve_client(ours, &rx, &AtomicUsize::new(0), Duration::from_millis(100));
        });
        drop((tx, theirs));
    }
}
