//! `NOTIFY_SOCKET`: systemd's readiness protocol, one socket per generation.
//!
//! A server written for systemd `Type=notify` (sd-notify, libsystemd)
//! sends datagrams to the path in `NOTIFY_SOCKET`. devsup gives each
//! generation its own socket in a private directory (mode 0700, removed on
//! exit), and checks every datagram's sender with `SCM_CREDENTIALS`: only a
//! process in the generation's own process group is heard; anything else is
//! dropped with a warning. File descriptors sent with `FDSTORE=1`
//! (`SCM_RIGHTS`) are kept by devsup and passed on to the next generations.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Instant;

use anyhow::Context;
use devsup_protocol as proto;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg, setsockopt, sockopt};
use nix::unistd::{Pid, getpgid};
use tracing::{debug, warn};

use crate::event::{Event, GenId, Input, Store};

/// Largest datagram read; sd_notify messages are far smaller.
const MAX_DATAGRAM: usize = 64 * 1024;
/// Most fds accepted in one datagram.
const MAX_FDS: usize = 16;

/// The private directory holding the generations' notify sockets.
#[derive(Debug)]
pub(crate) struct NotifyDir {
    dir: tempfile::TempDir,
}

impl NotifyDir {
    /// Creates the directory, readable and writable by this user only, in
    /// `$XDG_RUNTIME_DIR` when set, else the temporary directory.
    pub(crate) fn create() -> anyhow::Result<NotifyDir> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("devsup-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(&base)
            .with_context(|| format!("cannot create a private directory in {}", base.display()))?;
        Ok(NotifyDir { dir })
    }

    /// The directory's path.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Binds generation `gen_id`'s socket (close-on-exec, `SO_PASSCRED`).
    pub(crate) fn bind(&self, gen_id: GenId) -> anyhow::Result<(PathBuf, UnixDatagram)> {
        let path = self.dir.path().join(format!("gen-{gen_id}.sock"));
        let _ = std::fs::remove_file(&path);
        let socket =
            UnixDatagram::bind(&path).with_context(|| format!("cannot bind {}", path.display()))?;
        setsockopt(&socket, sockopt::PassCred, &true).context("cannot set SO_PASSCRED")?;
        Ok((path, socket))
    }
}

/// Tells a reader thread to stop: an empty datagram from devsup itself.
pub(crate) fn stop_reader(path: &Path) {
    if let Ok(socket) = UnixDatagram::unbound() {
        let _ = socket.send_to(&[], path);
    }
}

/// Reads generation `gen_id`'s notify socket until [`stop_reader`], then
/// removes it. `pgid` is the generation's process group.
pub(crate) fn spawn_reader(
    gen_id: GenId,
    pgid: i32,
    socket: UnixDatagram,
    path: PathBuf,
    tx: Sender<Input>,
) {
    let spawned = std::thread::Builder::new()
        .name(format!("gen-{gen_id}-notify"))
        .spawn(move || {
            read(gen_id, pgid, &socket, &tx);
            let _ = std::fs::remove_file(&path);
        });
    if let Err(e) = spawned {
        warn!(
            generation = gen_id,
            "cannot start a thread for its notify socket: {e}"
        );
    }
}

fn read(gen_id: GenId, pgid: i32, socket: &UnixDatagram, tx: &Sender<Input>) {
    let own_pid = std::process::id() as i32;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut cmsg = nix::cmsg_space!(libc::ucred, [RawFd; MAX_FDS]);
    let mut warned = 0u32;
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                warn!(generation = gen_id, "notify socket: {e}");
                return;
            }
        };
        let len = msg.bytes;
        let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
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
                    ControlMessageOwned::ScmCredentials(cred) => sender = Some(cred.pid()),
                    // SAFETY: the kernel just installed these fds in this
                    // process (close-on-exec); nothing else owns them.
                    ControlMessageOwned::ScmRights(raw) => fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    ),
                    _ => {}
                }
            }
        }
        let at = Instant::now();
        let data = buf[..len].to_vec();
        if sender == Some(own_pid) && len == 0 {
            debug!(generation = gen_id, "notify socket closed");
            return;
        }
        // Only the generation's own processes are heard: the socket's path
        // is private, but a datagram's sender is checked all the same.
        // A sender that has exited since (`systemd-notify --ready` in a
        // wrapper script) cannot be checked; the socket is the user's own
        // (0600 in a 0700 directory), so it is heard.
        let member = sender.is_some_and(|pid| match getpgid(Some(Pid::from_raw(pid))) {
            Ok(group) => group.as_raw() == pgid,
            Err(nix::errno::Errno::ESRCH) => true,
            Err(_) => false,
        });
        if !member {
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
        if forward(gen_id, &data, fds, at, tx).is_err() {
            return;
        }
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
