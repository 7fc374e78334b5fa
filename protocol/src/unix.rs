//! The ready channel on unix: an inherited fd (a unix stream socket or a
//! pipe) named by [`READY_FD_ENV`], and systemd's `NOTIFY_SOCKET`.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use crate::{NOTIFY_SOCKET_ENV, READY_FD_ENV};

/// Sends `text` to the ready fd if there is one, else to `NOTIFY_SOCKET`
/// if set; `Ok(false)` when there is neither.
pub(crate) fn send(text: &[u8]) -> io::Result<bool> {
    if let Some(fd) = env_fd(READY_FD_ENV)? {
        write_all_fd(fd, text)?;
        return Ok(true);
    }
    if let Some(path) = std::env::var_os(NOTIFY_SOCKET_ENV) {
        send_datagram(&path, text)?;
        return Ok(true);
    }
    Ok(false)
}

/// Reads an fd number from the environment and checks that it is open
/// (`None` if it is not, as if the variable were unset). The fd is marked
/// close-on-exec, so the server's own children do not inherit the channel.
fn env_fd(var: &str) -> io::Result<Option<RawFd>> {
    let Some(value) = std::env::var_os(var) else {
        return Ok(None);
    };
    let fd: RawFd = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|&fd| fd >= 0)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{var} is not an fd number"),
            )
        })?;
    // SAFETY: F_GETFD/F_SETFD only read and set the fd's flags; an fd that is
    // not open gives EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        let err = io::Error::last_os_error();
        // Not open: the variable was inherited without the fd (a child of
        // the server, or a server started by hand from a devsup shell).
        // Nothing to write to, so as if unset: NOTIFY_SOCKET may still be.
        if err.raw_os_error() == Some(libc::EBADF) {
            return Ok(None);
        }
        return Err(err);
    }
    // Only ever write into the channel devsup made: a stale variable (a
    // child that inherited the environment but not the fd) must not make
    // us write into whatever file now has that number.
    // SAFETY: `stat` is a C struct of integers, for which all zeroes is a
    // valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat only writes into `st`, a valid and exclusively borrowed
    // stat buffer; the fd was found open above, and a bad one gives EBADF.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFSOCK && kind != libc::S_IFIFO {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{var}={fd} is not a socket or a pipe"),
        ));
    }
    // SAFETY: as the F_GETFD above: F_SETFD sets the flags of the fd found
    // open there, and touches no memory of ours.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(fd))
}

fn write_all_fd(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    // SAFETY: env_fd checked that the fd is an open socket or pipe; the
    // borrow lasts for this call only, and nothing here closes it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    while !buf.is_empty() {
        // MSG_NOSIGNAL: a supervisor that went away gives EPIPE, not SIGPIPE.
        match nix_send(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn nix_send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: buf is a valid slice for the duration of the call.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOTSOCK) {
        // A plain pipe works too.
        // SAFETY: as above.
        let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        return Err(io::Error::last_os_error());
    }
    Err(err)
}

fn send_datagram(path: &std::ffi::OsStr, buf: &[u8]) -> io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let socket = UnixDatagram::unbound()?;
    // `@NAME` is an abstract socket, which only Linux has; elsewhere it is
    // a (relative) path like any other.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(name) = std::os::unix::ffi::OsStrExt::as_bytes(path).strip_prefix(b"@") {
        #[cfg(target_os = "android")]
        use std::os::android::net::SocketAddrExt;
        #[cfg(target_os = "linux")]
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(buf, &addr)?;
        return Ok(());
    }
    socket.send_to(buf, std::path::Path::new(path))?;
    Ok(())
}
