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
use std::net::SocketAddr;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

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
        socket.connect(&NetlinkAddr::new(0, 0))?;
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
            self.dump(family, accepted_states(), &mut found)?;
        }
        Ok(found
            .into_iter()
            .filter(|(_, addr)| ports.contains(&addr.port()))
            .map(|(inode, addr)| (inode, addr.port()))
            .collect())
    }

    /// The inodes of the listening TCP sockets (IPv4 and IPv6), with the
    /// address each listens on.
    pub fn listeners(&mut self) -> io::Result<Vec<(u64, SocketAddr)>> {
        let mut found = Vec::new();
        for family in [AF_INET, AF_INET6] {
            self.dump(family, StateFlags::LISTEN, &mut found)?;
        }
        Ok(found)
    }

    fn dump(
        &mut self,
        family: u8,
        states: StateFlags,
        found: &mut Vec<(u64, SocketAddr)>,
    ) -> io::Result<()> {
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
                states,
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
            if self.read_answer(len, found)? {
                return Ok(());
            }
        }
    }

    /// Reads one datagram of the dump's answer (`len` bytes in `buf`);
    /// `true` once the dump is done.
    fn read_answer(&self, len: usize, found: &mut Vec<(u64, SocketAddr)>) -> io::Result<bool> {
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
                        let id = &header.socket_id;
                        if header.inode != 0 {
                            let addr = SocketAddr::new(id.source_address, id.source_port);
                            found.push((u64::from(header.inode), addr));
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

/// The sockets one process holds.
#[derive(Debug, Default)]
struct Held {
    /// `(fd, inode)` of the sockets that are not one of the passed ones.
    others: Vec<(i32, u64)>,
    /// It holds one of the passed sockets (at any fd).
    passed: bool,
}

/// The sockets `pid` holds, from `/proc/PID/fd`.
fn held_sockets(pid: i32, passed: &[PassedSocket]) -> io::Result<Held> {
    let mut held = Held::default();
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
            if passed.iter().any(|p| p.inode == inode) {
                held.passed = true;
            } else {
                held.others.push((fd, inode));
            }
        }
    }
    Ok(held)
}

/// Most inodes [`holdings`] remembers per generation; past that, it
/// forgets them all (a server that opens sockets without end).
const MAX_KNOWN: usize = 100_000;

/// What a generation's processes hold of the network, for readiness and
/// for telling a server that ignores the passed socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// A connection accepted on a passed port, if one is held.
    pub accepted: Option<Accepted>,
    /// Some process's fds could be read (the generation has processes).
    pub seen: bool,
    /// Some process holds one of the passed sockets. A generation that
    /// holds none has closed them: it can never serve them.
    pub holds_passed: bool,
    /// TCP sockets its processes listen on that devsup did not pass (looked
    /// up only when asked).
    pub own_listeners: Vec<SocketAddr>,
}

/// What `pids` hold: a connection accepted on one of `ports`, whether they
/// hold a passed socket at all, and (with `listeners`) the TCP ports they
/// listen on of their own. Processes that exited meanwhile are skipped.
///
/// `known` holds the inodes of sockets found earlier not to be a
/// connection accepted on a passed port; the query of connections is made
/// only when a socket not in it turns up, and what it rules out is added.
/// That is sound because an accepted connection is born established on
/// the listener's port: a socket that was not one when looked at never
/// becomes one. It matters because the kernel walks its whole connection
/// table for each query (9 ms with 8,700 TIME_WAIT entries on a 2-core
/// machine, against 80 us for the listening sockets), while a server's
/// other sockets (a database pool, its own listeners) stay the same.
pub fn holdings(
    diag: &mut SockDiag,
    pids: &[i32],
    passed: &[PassedSocket],
    ports: &[u16],
    known: &mut HashSet<u64>,
    listeners: bool,
) -> io::Result<Holdings> {
    let mut found = Holdings::default();
    let mut others = Vec::new();
    for &pid in pids {
        match held_sockets(pid, passed) {
            Ok(held) => {
                found.seen = true;
                found.holds_passed |= held.passed;
                others.extend(held.others.into_iter().map(|(fd, inode)| (pid, fd, inode)));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if others.is_empty() {
        return Ok(found);
    }
    if !ports.is_empty() && others.iter().any(|o| !known.contains(&o.2)) {
        let connections = diag.connections(ports)?;
        found.accepted = others.iter().find_map(|&(pid, fd, inode)| {
            let &(_, port) = connections.iter().find(|c| c.0 == inode)?;
            Some(Accepted { pid, fd, port })
        });
        if known.len() > MAX_KNOWN {
            known.clear();
        }
        known.extend(
            others
                .iter()
                .map(|o| o.2)
                .filter(|inode| connections.iter().all(|c| c.0 != *inode)),
        );
    }
    if listeners {
        let held: HashSet<u64> = others.iter().map(|o| o.2).collect();
        found.own_listeners = diag
            .listeners()?
            .into_iter()
            .filter(|(inode, _)| held.contains(inode))
            .map(|(_, addr)| addr)
            .collect();
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn accepted_connection(
        diag: &mut SockDiag,
        pids: &[i32],
        passed: &[PassedSocket],
        ports: &[u16],
    ) -> io::Result<Option<Accepted>> {
        Ok(holdings(diag, pids, passed, ports, &mut HashSet::new(), false)?.accepted)
    }

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

    /// A process that holds a listener devsup did not pass is seen
    /// listening on it; one that holds no passed socket is told apart from
    /// one that does.
    #[test]
    fn own_listeners_and_the_passed_socket_are_told_apart() {
        let passed_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let passed = [PassedSocket::of_fd(passed_listener.as_raw_fd()).unwrap()];
        let port = passed_listener.local_addr().unwrap().port();
        let own = TcpListener::bind("127.0.0.1:0").unwrap();
        let own_addr = own.local_addr().unwrap();
        let mut diag = SockDiag::open().unwrap();
        let me = std::process::id() as i32;

        let found = holdings(
            &mut diag,
            &[me],
            &passed,
            &[port],
            &mut HashSet::new(),
            true,
        )
        .unwrap();
        assert!(found.seen && found.holds_passed);
        assert!(found.own_listeners.contains(&own_addr), "{found:?}");
        assert!(
            !found
                .own_listeners
                .contains(&passed_listener.local_addr().unwrap()),
            "the passed socket is not one of its own: {found:?}"
        );
        // Not asked: not looked up.
        let found = holdings(
            &mut diag,
            &[me],
            &passed,
            &[port],
            &mut HashSet::new(),
            false,
        )
        .unwrap();
        assert!(found.own_listeners.is_empty());

        drop(passed_listener);
        let found = holdings(
            &mut diag,
            &[me],
            &passed,
            &[port],
            &mut HashSet::new(),
            true,
        )
        .unwrap();
        assert!(found.seen && !found.holds_passed, "closed: {found:?}");

        // A process that is gone is not seen at all.
        let found = holdings(
            &mut diag,
            &[i32::MAX],
            &passed,
            &[port],
            &mut HashSet::new(),
            true,
        )
        .unwrap();
        assert!(!found.seen);
    }

    /// A socket ruled out once is not queried again; a new one is, and an
    /// accepted connection among them is found.
    #[test]
    fn known_sockets_are_not_queried_again() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let passed = [PassedSocket::of_fd(listener.as_raw_fd()).unwrap()];
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let other_inode = PassedSocket::of_fd(other.as_raw_fd()).unwrap().inode;
        let mut diag = SockDiag::open().unwrap();
        let me = std::process::id() as i32;
        let mut known = HashSet::new();
        let found = holdings(&mut diag, &[me], &passed, &[port], &mut known, false).unwrap();
        assert_eq!(found.accepted, None);
        assert!(known.contains(&other_inode), "ruled out: {known:?}");

        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server_end, _) = listener.accept().unwrap();
        let found = holdings(&mut diag, &[me], &passed, &[port], &mut known, false).unwrap();
        assert_eq!(found.accepted.map(|a| a.fd), Some(server_end.as_raw_fd()));
    }
}
