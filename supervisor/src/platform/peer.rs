//! The notify sockets' platform part: who sent a datagram, and socket
//! names without a file.
//!
//! On Linux, `SO_PASSCRED` makes the kernel attach the sender's pid
//! (`SCM_CREDENTIALS`) to every datagram, and devsup checks that it is in
//! the generation's process group. macOS attaches nothing to a datagram
//! (`LOCAL_PEERCRED`/`LOCAL_PEERPID` answer for a connected stream, not
//! for who sent one datagram on an unconnected socket): there the sender
//! is unknown, every datagram is heard, and what keeps other processes out
//! is the socket's place, a 0700 directory of the user's. Abstract socket
//! names (no file, `@NAME`) exist on Linux only.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use nix::sys::socket::ControlMessageOwned;

/// Whether the kernel says who sent each datagram ([`sender`]).
pub(crate) const SENDER_KNOWN: bool = cfg!(target_os = "linux");

/// Asks the kernel to attach the sender's credentials to every datagram
/// `socket` receives, where it can.
pub(crate) fn ask_for_sender(socket: &UnixDatagram) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::PassCred, &true)?;
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
    Ok(())
}

/// A control-message buffer for one datagram: its sender's credentials
/// (where [`SENDER_KNOWN`]) and up to `FDS` fds.
pub(crate) fn cmsg_space<const FDS: usize>() -> Vec<u8> {
    #[cfg(target_os = "linux")]
    return nix::cmsg_space!(libc::ucred, [std::os::fd::RawFd; FDS]);
    #[cfg(not(target_os = "linux"))]
    return nix::cmsg_space!([std::os::fd::RawFd; FDS]);
}

/// The sender's pid, if `cmsg` carries it.
pub(crate) fn sender(cmsg: &ControlMessageOwned) -> Option<i32> {
    match cmsg {
        #[cfg(target_os = "linux")]
        ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
        _ => None,
    }
}

/// The abstract socket address `@name`, where the platform has them.
pub(crate) fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = name;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "abstract socket names exist on Linux only",
        ))
    }
}

/// The longest path a unix socket can be bound at: `sun_path` less its
/// NUL (107 bytes on Linux, 103 on macOS and the BSDs).
pub(crate) const MAX_SOCKET_PATH: usize = std::mem::size_of::<libc::sockaddr_un>()
    - std::mem::offset_of!(libc::sockaddr_un, sun_path)
    - 1;

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{MsgFlags, UnixAddr, recvmsg};
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    #[test]
    fn the_socket_path_limit_is_the_platforms() {
        #[cfg(target_os = "linux")]
        assert_eq!(MAX_SOCKET_PATH, 107);
        let dir = tempfile::tempdir().unwrap();
        let mut name = dir.path().as_os_str().to_owned();
        name.push("/");
        while name.len() < MAX_SOCKET_PATH {
            name.push("s");
        }
        UnixDatagram::bind(&name).expect("the longest path binds");
        name.push("s");
        assert!(UnixDatagram::bind(&name).is_err(), "one byte more does not");
    }

    /// The sender is known exactly where the platform says so: a datagram
    /// from this process carries this pid.
    #[test]
    fn a_datagram_says_its_sender_where_the_platform_can() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let socket = UnixDatagram::bind(&path).unwrap();
        ask_for_sender(&socket).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to(b"READY=1", &path)
            .unwrap();
        let mut buf = [0u8; 16];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = cmsg_space::<4>();
        let msg = recvmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .unwrap();
        let sender = msg.cmsgs().unwrap().find_map(|c| sender(&c));
        let expected = SENDER_KNOWN.then_some(std::process::id() as i32);
        assert_eq!(sender, expected);
    }
}
