//! What differs between unix and Windows in devsup-serve, one function per
//! question, so that the serving code has no `#[cfg]`: a socket's raw
//! value, shutting a socket down under its owner, making a listener
//! non-blocking, and which accept errors mean the listener is broken.

use std::io;

/// A socket's raw value: an fd on unix, a `SOCKET` on Windows.
#[cfg(unix)]
pub(crate) use std::os::fd::RawFd as RawSock;
#[cfg(windows)]
pub(crate) use std::os::windows::io::RawSocket as RawSock;

/// A raw value that is no socket, for tests: -1 / `INVALID_SOCKET`.
#[cfg(all(unix, test))]
pub(crate) const NO_SOCK: RawSock = -1;
/// A raw value that is no socket, for tests: -1 / `INVALID_SOCKET`.
#[cfg(all(windows, test))]
pub(crate) const NO_SOCK: RawSock = !0;

/// The raw value of `socket`, which stays owned by it.
#[cfg(unix)]
pub(crate) fn raw_sock(socket: &impl std::os::fd::AsRawFd) -> RawSock {
    socket.as_raw_fd()
}
/// The raw value of `socket`, which stays owned by it.
#[cfg(windows)]
pub(crate) fn raw_sock(socket: &impl std::os::windows::io::AsRawSocket) -> RawSock {
    socket.as_raw_socket()
}

/// Shuts both directions of the socket down (errors ignored: the peer
/// may be gone already).
///
/// # Safety
///
/// `sock` must be open, owned by a live socket object, for this call.
pub(crate) unsafe fn shutdown_both(sock: RawSock) {
    // SAFETY: the caller keeps `sock` open for this call, and shutdown
    // touches nothing but that socket.
    #[cfg(unix)]
    unsafe {
        libc::shutdown(sock, libc::SHUT_RDWR)
    };
    // SAFETY: as above, for the Windows socket.
    #[cfg(windows)]
    unsafe {
        use windows_sys::Win32::Networking::WinSock::{SD_BOTH, SOCKET, shutdown};
        shutdown(sock as SOCKET, SD_BOTH)
    };
}

/// Makes the listener's socket non-blocking. On unix O_NONBLOCK is a flag
/// of the socket every generation shares, so it is read first and set
/// only if missing; Windows cannot read it back, so it is set
/// (`ioctlsocket(FIONBIO)`, what std's `set_nonblocking` does).
pub(crate) fn set_nonblocking(listener: &tokio::net::TcpListener) -> io::Result<()> {
    let sock = raw_sock(listener);
    #[cfg(unix)]
    {
        // SAFETY: F_GETFL/F_SETFL on an fd the listener owns for this call.
        let flags = unsafe { libc::fcntl(sock, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let missing = flags & libc::O_NONBLOCK == 0;
        // SAFETY: as above; F_SETFL only adds O_NONBLOCK to the flags read.
        if missing && unsafe { libc::fcntl(sock, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(windows)]
    {
        use windows_sys::Win32::Networking::WinSock::{
            FIONBIO, SOCKET, WSAGetLastError, ioctlsocket,
        };
        let mut on: u32 = 1;
        // SAFETY: FIONBIO on a socket the listener owns for this call, with
        // a valid u32 argument.
        if unsafe { ioctlsocket(sock as SOCKET, FIONBIO, &mut on) } != 0 {
            // SAFETY: WSAGetLastError only reads the thread's last error.
            return Err(io::Error::from_raw_os_error(unsafe { WSAGetLastError() }));
        }
        Ok(())
    }
}

/// Errors that mean the listener itself is unusable, so that retrying an
/// accept can never succeed.
#[cfg(unix)]
pub(crate) fn is_listener_broken(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT)
    )
}

/// Errors that mean the listener itself is unusable, so that retrying an
/// accept can never succeed.
#[cfg(windows)]
pub(crate) fn is_listener_broken(err: &io::Error) -> bool {
    use windows_sys::Win32::Networking::WinSock::{
        WSAEBADF, WSAEFAULT, WSAEINVAL, WSAENOTSOCK, WSAEOPNOTSUPP,
    };
    matches!(
        err.raw_os_error(),
        Some(WSAEBADF | WSAEINVAL | WSAENOTSOCK | WSAEOPNOTSUPP | WSAEFAULT)
    )
}
