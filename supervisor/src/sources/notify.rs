//! `NOTIFY_SOCKET`: systemd's readiness protocol, one socket per generation.
//!
//! A server written for systemd `Type=notify` (sd-notify, libsystemd)
//! sends datagrams to the path in `NOTIFY_SOCKET`. devsup gives each
//! generation its own socket in a private directory (mode 0700, removed on
//! exit; made again if it is removed; an abstract socket where no directory
//! will do, on Linux, see [`NotifyDir`]), and checks every datagram's
//! sender with `SCM_CREDENTIALS`: only a process in the generation's own
//! process group, or in the group of the `MAINPID=` process devsup accepted
//! (see [`Heard`]), is heard; anything else is dropped with a warning. File
//! descriptors sent with `FDSTORE=1` (`SCM_RIGHTS`) are kept by devsup and
//! passed on to the next generations.
//!
//! On macOS a datagram carries no sender (see [`platform::peer`]): every
//! datagram on a generation's socket is heard, and the 0700 directory is
//! what keeps other users' processes out. Another process of the same user
//! that finds the path can send to it, as it could signal the server.
//!
//! Longer than most modules: the directory, the socket, the sender check
//! and the `FDSTORE=1` handling belong together; a part is its unit tests.

use std::ffi::OsString;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use devsup_protocol as proto;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg};
use nix::unistd::{Pid, getpgid};
use tracing::{debug, info, warn};

use crate::event::{Event, GenId, Input, Store};
use crate::platform::{self, peer};

/// Largest datagram read; sd_notify messages are far smaller.
const MAX_DATAGRAM: usize = 64 * 1024;
/// Most fds accepted in one datagram.
const MAX_FDS: usize = 16;

/// Where the generations' notify sockets go: a private directory, made
/// again if it disappears; an abstract socket where no directory will do.
///
/// `NOTIFY_SOCKET` is optional for the servers devsup runs, so nothing here
/// may stop a generation from starting: at worst it starts without one,
/// after one warning.
#[derive(Debug)]
pub(crate) struct NotifyDir {
    dir: Option<tempfile::TempDir>,
    /// Where to try to make the directory, in order.
    bases: Vec<PathBuf>,
    /// The warning that no notify socket could be made has been given.
    warned: bool,
}

/// A generation's bound notify socket.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) socket: UnixDatagram,
    /// Its address, to stop its reader with.
    pub(crate) addr: SocketAddr,
    /// The value of `NOTIFY_SOCKET`: a path, or `@NAME` for an abstract
    /// socket (as systemd and sd_notify spell it).
    pub(crate) env: OsString,
}

/// The longest socket path: `sun_path` less its NUL.
const MAX_SOCKET_PATH: usize = peer::MAX_SOCKET_PATH;
/// The longest socket file name in the directory.
const LONGEST_NAME: &str = "gen-18446744073709551615.sock";

impl NotifyDir {
    /// Makes the directory, readable and writable by this user only, in the
    /// first of `$XDG_RUNTIME_DIR`, the temporary directory and `/tmp`
    /// where one can be made with room for a socket path (macOS's
    /// per-user temporary directory fits its 103 bytes). With none, the
    /// generations get abstract sockets on Linux, and no notify socket
    /// elsewhere.
    pub(crate) fn create() -> NotifyDir {
        let mut bases: Vec<PathBuf> = std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .into_iter()
            .chain([std::env::temp_dir(), PathBuf::from("/tmp")])
            .collect();
        bases.dedup();
        NotifyDir::create_in(bases)
    }

    fn create_in(bases: Vec<PathBuf>) -> NotifyDir {
        let mut dir = NotifyDir {
            dir: None,
            bases,
            warned: false,
        };
        dir.dir = dir.make();
        dir
    }

    fn make(&self) -> Option<tempfile::TempDir> {
        for base in &self.bases {
            let made = tempfile::Builder::new()
                .prefix("devsup-")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir_in(base);
            match made {
                Ok(dir) if dir.path().join(LONGEST_NAME).as_os_str().len() <= MAX_SOCKET_PATH => {
                    return Some(dir);
                }
                Ok(dir) => debug!(
                    "{} is too long for a socket path: trying elsewhere",
                    dir.path().display()
                ),
                Err(e) => debug!(
                    "cannot create a private directory in {}: {e}; trying elsewhere",
                    base.display()
                ),
            }
        }
        debug!("no directory for notify sockets: using abstract sockets");
        None
    }

    /// The directory's path, if there is one.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    /// Binds generation `gen_id`'s socket (close-on-exec, `SO_PASSCRED`):
    /// in the directory (made again if it was removed), else an abstract
    /// one; `None`, after one warning, if neither can be made.
    pub(crate) fn bind(&mut self, gen_id: GenId) -> Option<Bound> {
        if self.dir.as_ref().is_some_and(|d| !d.path().is_dir()) {
            let gone = self.dir.take().map(tempfile::TempDir::keep);
            self.dir = self.make();
            info!(
                "the directory of the notify sockets ({}) was removed: using {}",
                gone.as_deref().unwrap_or(Path::new("?")).display(),
                self.path().map_or_else(
                    || "abstract sockets".to_owned(),
                    |p| p.display().to_string()
                )
            );
        }
        let mut why = None;
        if let Some(dir) = &self.dir {
            let path = dir.path().join(format!("gen-{gen_id}.sock"));
            let _ = std::fs::remove_file(&path);
            match bind_addr(&SocketAddr::from_pathname(&path), path.as_os_str().into()) {
                Ok(bound) => return Some(bound),
                Err(e) => {
                    debug!(
                        "cannot bind {}: {e:#}; using an abstract socket",
                        path.display()
                    );
                    why = Some(e);
                }
            }
        }
        let name = format!(
            "devsup-{}-{:016x}/gen-{gen_id}",
            std::process::id(),
            random()
        );
        let bound = peer::abstract_addr(name.as_bytes())
            .map_err(anyhow::Error::from)
            .and_then(|addr| bind_addr(&Ok(addr), format!("@{name}").into()));
        match bound {
            Ok(bound) => Some(bound),
            Err(e) => {
                if !std::mem::replace(&mut self.warned, true) {
                    let why = why.map(|w| format!("{w:#}; ")).unwrap_or_default();
                    warn!(
                        generation = gen_id,
                        "cannot make a notify socket ({why}{e:#}): starting generations without NOTIFY_SOCKET; \
                         a server that says READY=1 only through it will not be seen ready (check the temporary directory)"
                    );
                }
                None
            }
        }
    }
}

fn bind_addr(addr: &std::io::Result<SocketAddr>, env: OsString) -> anyhow::Result<Bound> {
    let addr = match addr {
        Ok(addr) => addr,
        Err(e) => anyhow::bail!("{e}"),
    };
    let socket = UnixDatagram::bind_addr(addr).context("cannot bind")?;
    peer::ask_for_sender(&socket).context("cannot set SO_PASSCRED")?;
    let addr = socket.local_addr().context("no local address")?;
    Ok(Bound { socket, addr, env })
}

/// A random number, for an abstract socket's name that no one can guess
/// in advance.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The process groups a generation's notify socket hears: its own, and the
/// group of a `MAINPID=` process the executor accepted (that group already
/// gets the generation's signals). Shared by the executor, which decides,
/// and the generation's reader, which checks each sender.
#[derive(Debug)]
pub(crate) struct Heard {
    state: Mutex<HeardState>,
    changed: Condvar,
}

#[derive(Debug)]
struct HeardState {
    groups: Vec<i32>,
    /// The `MAINPID=` pids the executor has decided on, either way.
    decided: Vec<i32>,
    /// The executor is stopping the reader ([`stop_reader`]).
    stopping: bool,
}

/// How long a reader waits for the executor's decision on a `MAINPID=`
/// before judging a message from that process.
const MAINPID_DECISION: Duration = Duration::from_secs(1);

impl Heard {
    /// Hears group `pgid`, the generation's own.
    pub(crate) fn new(pgid: i32) -> Arc<Heard> {
        Arc::new(Heard {
            state: Mutex::new(HeardState {
                groups: vec![pgid],
                decided: Vec::new(),
                stopping: false,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HeardState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The executor decided on `MAINPID=pid`: its process group `group` is
    /// heard too if `Some`.
    /// Servers repeat `MAINPID=` with every `STATUS=`: each pid and group
    /// is kept once.
    pub(crate) fn decided(&self, pid: i32, group: Option<i32>) {
        let mut state = self.lock();
        if let Some(group) = group.filter(|g| !state.groups.contains(g)) {
            state.groups.push(group);
        }
        if !state.decided.contains(&pid) {
            state.decided.push(pid);
        }
        self.changed.notify_all();
    }

    /// Whether the executor has decided on `MAINPID=pid` already.
    pub(crate) fn is_decided(&self, pid: i32) -> bool {
        self.lock().decided.contains(&pid)
    }

    fn hears(&self, group: i32) -> bool {
        self.lock().groups.contains(&group)
    }

    /// Whether `group` is heard, once the executor has decided on the
    /// `MAINPID=pid` the reader forwarded (waiting up to
    /// [`MAINPID_DECISION`] for it).
    fn hears_after_deciding(&self, pid: i32, group: i32) -> bool {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, MAINPID_DECISION, |s| !s.decided.contains(&pid))
            .unwrap_or_else(|e| e.into_inner());
        state.groups.contains(&group)
    }
}

/// Tells a reader thread to stop: an empty datagram from devsup itself.
/// Where a datagram's sender is unknown (macOS), `heard` says that the
/// empty datagram now is devsup's.
pub(crate) fn stop_reader(addr: &SocketAddr, heard: Option<&Heard>) {
    if let Some(heard) = heard {
        heard.lock().stopping = true;
    }
    if let Ok(socket) = UnixDatagram::unbound() {
        let _ = socket.send_to_addr(&[], addr);
    }
}

/// Reads generation `gen_id`'s notify socket until [`stop_reader`], then
/// removes its file, if it has one. `heard` says whose messages count.
pub(crate) fn spawn_reader(
    gen_id: GenId,
    heard: Arc<Heard>,
    socket: UnixDatagram,
    tx: Sender<Input>,
) {
    let path = (socket.local_addr().ok()).and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let spawned = std::thread::Builder::new()
        .name(format!("gen-{gen_id}-notify"))
        .spawn(move || {
            read(gen_id, &heard, &socket, &tx);
            if let Some(path) = path {
                let _ = std::fs::remove_file(&path);
            }
        });
    if let Err(e) = spawned {
        warn!(
            generation = gen_id,
            "cannot start a thread for its notify socket: {e}"
        );
    }
}

fn read(gen_id: GenId, heard: &Heard, socket: &UnixDatagram, tx: &Sender<Input>) {
    let own_pid = std::process::id() as i32;
    // The last `MAINPID=` this reader forwarded.
    let mut main_pid = None;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut cmsg = peer::cmsg_space::<MAX_FDS>();
    let mut warned = 0u32;
    loop {
        let datagram = match receive(gen_id, socket, &mut buf, &mut cmsg) {
            Ok(datagram) => datagram,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                warn!(generation = gen_id, "notify socket: {e}");
                return;
            }
        };
        let Datagram {
            len,
            truncated,
            sender,
            fds,
        } = datagram;
        let at = Instant::now();
        let data = buf[..len].to_vec();
        if is_stop(len, sender, own_pid, || heard.lock().stopping) {
            debug!(generation = gen_id, "notify socket closed");
            return;
        }
        if !is_member(heard, sender, main_pid) {
            warned += 1;
            if warned <= 5 {
                warn!(
                    generation = gen_id,
                    "dropped a notify message from pid {} outside the generation's process group",
                    sender.map_or_else(|| "?".to_owned(), |p| p.to_string())
                );
            }
            continue;
        }
        if truncated {
            warn!(
                generation = gen_id,
                "dropped a notify datagram longer than {MAX_DATAGRAM} bytes"
            );
            continue;
        }
        for msg in proto::parse(&data) {
            if let Ok(proto::Message::MainPid(pid)) = msg {
                main_pid = i32::try_from(pid).ok();
            }
        }
        if forward(gen_id, &data, fds, at, tx).is_err() {
            return;
        }
    }
}

/// One datagram as received into the reader's buffer.
struct Datagram {
    /// Its length in the buffer.
    len: usize,
    /// It was longer than the buffer.
    truncated: bool,
    /// Its sender's pid, where the platform says it.
    sender: Option<i32>,
    /// The fds it carried (`SCM_RIGHTS`).
    fds: Vec<OwnedFd>,
}

/// Receives one datagram into `buf`, with its sender and fds.
// nix's `recvmsg` takes the control-message buffer as a `Vec`.
#[allow(clippy::ptr_arg)]
fn receive(
    gen_id: GenId,
    socket: &UnixDatagram,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> nix::Result<Datagram> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        socket.as_raw_fd(),
        &mut iov,
        Some(cmsg),
        platform::fds::recv_flags(),
    )?;
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        warn!(
            generation = gen_id,
            "a notify datagram carried more than {MAX_FDS} fds: the rest are lost"
        );
    }
    let mut sender = None;
    let mut fds: Vec<OwnedFd> = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::ScmRights(raw) => {
                    for fd in raw {
                        // SAFETY: the kernel just installed these fds in
                        // this process (close-on-exec on Linux); nothing
                        // else owns them.
                        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                        platform::fds::received(&fd);
                        fds.push(fd);
                    }
                }
                c => sender = sender.or(peer::sender(&c)),
            }
        }
    }
    Ok(Datagram {
        len: msg.bytes,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
        sender,
        fds,
    })
}

/// Whether a datagram from `sender` is heard. Only the generation's own
/// processes are (its group, and a `MAINPID=` process's group once the
/// executor accepted it): the socket's path is private, but a datagram's
/// sender is checked all the same. A sender that has exited since
/// (`systemd-notify --ready` in a wrapper script) cannot be checked; the
/// socket is the user's own (0600 in a 0700 directory), so it is heard.
/// Where no datagram says its sender (macOS), that holds for every one.
fn is_member(heard: &Heard, sender: Option<i32>, main_pid: Option<i32>) -> bool {
    match sender {
        Some(pid) => match getpgid(Some(Pid::from_raw(pid))) {
            Ok(group) if main_pid == Some(pid) => heard.hears_after_deciding(pid, group.as_raw()),
            Ok(group) => heard.hears(group.as_raw()),
            Err(nix::errno::Errno::ESRCH) => true,
            Err(_) => false,
        },
        None => !peer::SENDER_KNOWN,
    }
}

/// Whether a datagram is devsup's own stop ([`stop_reader`]): empty, and
/// from devsup's pid; where no datagram says its sender (macOS), empty
/// once the executor has said it is `stopping` the reader.
fn is_stop(len: usize, sender: Option<i32>, own_pid: i32, stopping: impl FnOnce() -> bool) -> bool {
    len == 0
        && match sender {
            Some(pid) => pid == own_pid,
            None => stopping(),
        }
}

fn valid_fd_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Sends one datagram's messages on; `FDSTORE` needs the whole datagram,
/// since its `FDNAME=` comes beside it.
fn forward(
    gen_id: GenId,
    data: &[u8],
    fds: Vec<OwnedFd>,
    at: Instant,
    tx: &Sender<Input>,
) -> Result<(), ()> {
    let mut messages = Vec::new();
    let (mut store, mut remove, mut name) = (false, false, None);
    for parsed in proto::parse(data) {
        match parsed {
            Ok(proto::Message::Other { key, value }) if key == "FDSTORE" && value == "1" => {
                store = true
            }
            Ok(proto::Message::Other { key, value }) if key == "FDSTOREREMOVE" && value == "1" => {
                remove = true
            }
            Ok(proto::Message::Other { key, value }) if key == "FDNAME" => name = Some(value),
            Ok(msg) => messages.push(msg),
            Err(e) => warn!(generation = gen_id, "ignoring a bad notify message: {e}"),
        }
    }
    let send = |input| tx.send(input).map_err(|_| ());
    // Names end up in LISTEN_FDNAMES, colon-separated: as systemd does,
    // refuse what would break that list.
    if let Some(bad) = name.as_ref().filter(|n| !valid_fd_name(n)) {
        warn!(
            generation = gen_id,
            "FDNAME={bad:?} is not a valid name (printable ASCII, no ':', at most 255 bytes): ignored"
        );
        store = false;
        remove = false;
    }
    if store && !fds.is_empty() {
        let name = name.clone().unwrap_or_else(|| "stored".to_owned());
        send(Input::Store(gen_id, Store::Add { name, fds }))?;
    } else if !fds.is_empty() {
        debug!(
            generation = gen_id,
            "dropped {} fd(s) sent without FDSTORE=1",
            fds.len()
        );
    }
    if remove {
        match name {
            Some(name) => send(Input::Store(gen_id, Store::Remove { name }))?,
            None => warn!(
                generation = gen_id,
                "FDSTOREREMOVE=1 without FDNAME=: ignored"
            ),
        }
    }
    for msg in messages {
        send(Input::Event(Event::Message { gen_id, msg, at }))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_mainpid_is_kept_once() {
        let heard = Heard::new(10);
        assert!(!heard.is_decided(42));
        for _ in 0..3 {
            heard.decided(42, Some(40));
        }
        heard.decided(43, None);
        assert!(heard.is_decided(42) && heard.is_decided(43));
        let state = heard.lock();
        assert_eq!(state.decided, [42, 43]);
        assert_eq!(state.groups, [10, 40]);
    }

    /// With no directory that can hold a socket path, a generation gets an
    /// abstract socket, named `@…` in `NOTIFY_SOCKET`, that works.
    #[cfg(target_os = "linux")]
    #[test]
    fn no_usable_directory_means_an_abstract_socket() {
        let root = tempfile::tempdir().unwrap();
        let mut long = root.path().to_path_buf();
        while long.as_os_str().len() <= MAX_SOCKET_PATH {
            long.push("long-directory-name");
        }
        std::fs::create_dir_all(&long).unwrap();
        let mut dir = NotifyDir::create_in(vec![long.clone(), PathBuf::from("/proc")]);
        assert!(dir.path().is_none());
        assert!(walk_is_empty(&long), "the too-long directory was not kept");
        let bound = dir.bind(3).expect("an abstract socket");
        let env = bound.env.to_str().unwrap().to_owned();
        assert!(env.starts_with('@') && env.ends_with("/gen-3"), "{env}");
        use std::os::linux::net::SocketAddrExt;
        let to = SocketAddr::from_abstract_name(&env.as_bytes()[1..]).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"READY=1\n", &to)
            .unwrap();
        let mut buf = [0u8; 16];
        let n = bound.socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }

    #[cfg(target_os = "linux")]
    fn walk_is_empty(dir: &Path) -> bool {
        std::fs::read_dir(dir).unwrap().next().is_none()
    }

    /// The stop datagram: by its sender on Linux; without one (macOS), an
    /// empty datagram stops the reader only once the executor is stopping
    /// it, so a server's own empty datagram does not.
    #[test]
    fn only_devsups_empty_datagram_stops_the_reader() {
        let (own, other) = (100, 200);
        assert!(is_stop(0, Some(own), own, || false));
        assert!(!is_stop(0, Some(other), own, || true));
        assert!(!is_stop(7, Some(own), own, || true));
        assert!(!is_stop(0, None, own, || false));
        assert!(is_stop(0, None, own, || true));
        assert!(!is_stop(7, None, own, || true));
    }

    /// Where senders are unknown, `stop_reader` marks the generation's
    /// `Heard` as stopping before it sends.
    #[test]
    fn stop_reader_says_it_is_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let socket = UnixDatagram::bind(dir.path().join("s")).unwrap();
        let heard = Heard::new(1);
        assert!(!heard.lock().stopping);
        stop_reader(&socket.local_addr().unwrap(), Some(&heard));
        assert!(heard.lock().stopping);
        let mut buf = [0u8; 4];
        assert_eq!(socket.recv(&mut buf).unwrap(), 0, "the empty datagram");
    }

    /// A removed directory is made again for the next generation.
    #[test]
    fn a_removed_directory_is_made_again() {
        let base = tempfile::tempdir().unwrap();
        let mut dir = NotifyDir::create_in(vec![base.path().to_path_buf()]);
        let first = dir.path().unwrap().to_path_buf();
        let one = dir.bind(1).unwrap();
        assert_eq!(
            one.addr.as_pathname(),
            Some(first.join("gen-1.sock").as_path())
        );
        std::fs::remove_dir_all(&first).unwrap();
        let two = dir.bind(2).unwrap();
        let second = dir.path().unwrap();
        assert!(second.is_dir() && second.starts_with(base.path()));
        assert_eq!(
            two.addr.as_pathname(),
            Some(second.join("gen-2.sock").as_path())
        );
    }
}
