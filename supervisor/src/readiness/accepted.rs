//! Readiness by the connections a generation holds: a process of the
//! generation that holds a TCP connection accepted on a passed port is
//! serving, whatever it waits on.
//!
//! The `/proc` probe of [`super::probe`] samples threads waiting on the
//! socket, and misses servers that never wait there while load lasts: a
//! pool server whose acceptor waits for a free worker before it calls
//! `accept` (puma, any semaphore-gated accept), or a single-threaded server
//! that polls only between the requests it serves (Python's `http.server`).
//! Holding an accepted connection is as good a sign, and it lasts.
//!
//! How: the socket inodes the generation's processes hold
//! (`/proc/PID/fd`, no more than the `/proc` probe reads), matched with a
//! `sock_diag` netlink query ([`SockDiag`]) of the TCP sockets in the
//! states an accepted connection goes through (established, and closing by
//! either side) whose local port is a passed one. The kernel filters by
//! state, so the answer lists the namespace's live connections, never its
//! TIME_WAIT entries, which made a read of `/proc/net/tcp` cost tens of
//! milliseconds under a connection-per-request load. A connection still in
//! the accept queue has no inode (no process holds it) and never matches.
//! The query is skipped when the processes hold no socket besides the
//! passed ones.

use std::collections::HashSet;
use std::fs;
use std::io;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use super::{PassedSocket, parse_socket_link};

/// A connection one of the generation's processes accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The process holding it.
    pub pid: i32,
    /// Its fd there.
    pub fd: i32,
    /// The passed port it came in on.
    pub port: u16,
}

impl Accepted {
    /// For the log line: `pid=P holds fd 7 from port 8080`.
    pub fn describe(&self) -> String {
        format!(
            "pid={} holds fd {} from port {}",
            self.pid, self.fd, self.port
        )
    }
}

/// A netlink socket for `sock_diag` queries, opened once and reused.
#[derive(Debug)]
pub struct SockDiag {
    socket: Socket,
    sequence: u32,
    buf: Vec<u8>,
}

/// The states of a connection a server has accepted and not yet closed.
fn accepted_states() -> StateFlags {
    StateFlags::ESTABLISHED
        | StateFlags::CLOSE_WAIT
        | StateFlags::FIN_WAIT1
        | StateFlags::FIN_WAIT2
        | StateFlags::LAST_ACK
        | StateFlags::CLOSING
}

impl SockDiag {
    /// A `NETLINK_SOCK_DIAG` socket, connected to the kernel; a receive
    /// waits at most one second, so a query never hangs its thread.
    pub fn open() -> io::Result<SockDiag> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let timeout = nix::sys::time::TimeVal::new(1, 0);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(io::Error::from)?;
        Ok(SockDiag {
            socket,
            sequence: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// The inodes of the TCP sockets (IPv4 and IPv6) in an accepted
    /// connection's states whose local port is one of `ports`, with that
    /// port.
    pub fn connections(&mut self, ports: &[u16]) -> io::Result<Vec<(u64, u16)>> {
        let mut found = Vec::new();
        for family in [AF_INET, AF_INET6] {
            self.dump(family, ports, &mut found)?;
        }
        Ok(found)
    }

    fn dump(&mut self, family: u8, ports: &[u16], found: &mut Vec<(u64, u16)>) -> io::Result<()> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.sequence;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: accepted_states(),
                socket_id: if family == AF_INET {
                    SocketId::new_v4()
                } else {
                    SocketId::new_v6()
                },
            })
            .into(),
        );
        request.finalize();
        let mut out = vec![0; request.buffer_len()];
        request.serialize(&mut out);
        self.socket.send(&out, 0)?;
        loop {
            let len = self.socket.recv(&mut &mut self.buf[..], 0)?;
            if self.read_answer(len, ports, found)? {
                return Ok(());
            }
        }
    }

    /// Reads one datagram of the dump's answer (`len` bytes in `buf`);
    /// `true` once the dump is done.
    fn read_answer(
        &self,
        len: usize,
        ports: &[u16],
        found: &mut Vec<(u64, u16)>,
    ) -> io::Result<bool> {
        let mut offset = 0;
        while offset < len.min(self.buf.len()) {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&self.buf[offset..len])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let size = message.header.length as usize;
            if message.header.sequence_number != self.sequence {
                // An answer to an earlier query that timed out.
            } else {
                match message.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                        let header = &response.header;
                        let port = header.socket_id.source_port;
                        if header.inode != 0 && ports.contains(&port) {
                            found.push((u64::from(header.inode), port));
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(true),
                    NetlinkPayload::Error(e) => {
                        return Err(e.to_io());
                    }
                    _ => {}
                }
            }
            if size == 0 {
                break;
            }
            offset += size;
        }
        Ok(false)
    }
}

/// The socket fds of `pid` that are not one of `passed`: `(fd, inode)`.
fn other_sockets(pid: i32, passed: &[PassedSocket]) -> io::Result<Vec<(i32, u64)>> {
    let mut sockets = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // The fd may close between listing and reading.
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if let Some(inode) = parse_socket_link(&target.to_string_lossy()) {
            if !passed.iter().any(|p| p.inode == inode) {
                sockets.push((fd, inode));
            }
        }
    }
    Ok(sockets)
}

/// The first connection on one of `ports` that one of `pids` holds, if
/// any. Processes that exited meanwhile are skipped.
pub fn accepted_connection(
    diag: &mut SockDiag,
    pids: &[i32],
    passed: &[PassedSocket],
    ports: &[u16],
) -> io::Result<Option<Accepted>> {
    let mut held = Vec::new();
    for &pid in pids {
        match other_sockets(pid, passed) {
            Ok(sockets) => held.extend(sockets.into_iter().map(|(fd, inode)| (pid, fd, inode))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if held.is_empty() || ports.is_empty() {
        return Ok(None);
    }
    let connections = diag.connections(ports)?;
    let by_inode: HashSet<u64> = connections.iter().map(|c| c.0).collect();
    Ok(held
        .into_iter()
        .find(|(_, _, inode)| by_inode.contains(inode))
        .and_then(|(pid, fd, inode)| {
            let port = connections.iter().find(|c| c.0 == inode)?.1;
            Some(Accepted { pid, fd, port })
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    /// A real listener in this process: a connection in its accept queue
    /// is not counted (no process holds it), the accepted one is, with its
    /// fd and port; the client's end (its local port is another) is not.
    #[test]
    fn an_accepted_connection_is_found_and_a_queued_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let passed = [PassedSocket::of_fd(listener.as_raw_fd()).unwrap()];
        let mut diag = SockDiag::open().unwrap();
        let me = std::process::id() as i32;

        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let found = accepted_connection(&mut diag, &[me], &passed, &[port]).unwrap();
        assert_eq!(found, None, "queued, not accepted yet");

        let (server_end, _) = listener.accept().unwrap();
        let found = accepted_connection(&mut diag, &[me], &passed, &[port]).unwrap();
        assert_eq!(
            found,
            Some(Accepted {
                pid: me,
                fd: server_end.as_raw_fd(),
                port
            })
        );
        // Another port: not ours.
        let found = accepted_connection(&mut diag, &[me], &passed, &[port ^ 1]).unwrap();
        assert_eq!(found, None);
        drop(server_end);
        // Closed by the server: the fd is gone.
        let found = accepted_connection(&mut diag, &[me], &passed, &[port]).unwrap();
        assert_eq!(found, None);
    }

    /// IPv6 connections are found too (skipped where the machine has no
    /// IPv6 loopback, with a loud line).
    #[test]
    fn an_ipv6_connection_is_found() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            eprintln!("!!! SKIPPED an_ipv6_connection_is_found: no IPv6 loopback here");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let passed = [PassedSocket::of_fd(listener.as_raw_fd()).unwrap()];
        let mut diag = SockDiag::open().unwrap();
        let me = std::process::id() as i32;
        let _client = TcpStream::connect(("::1", port)).unwrap();
        let (server_end, _) = listener.accept().unwrap();
        let found = accepted_connection(&mut diag, &[me], &passed, &[port]).unwrap();
        assert_eq!(found.map(|a| a.fd), Some(server_end.as_raw_fd()));
    }
}
