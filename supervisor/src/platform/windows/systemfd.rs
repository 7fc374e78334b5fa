//! The server side of systemfd's Windows protocol (the wire format is in
//! `devsup_protocol::systemfd`): a loopback TCP server that gives the
//! listening sockets to each process that presents the secret, duplicated
//! for its pid with `WSADuplicateSocketW`. A generation's environment gets
//! [`SocketServer::env`]; listenfd in the generation connects, and the
//! moment it has its sockets is reported to the caller ([`Fetch`]), which
//! is the readiness fallback for a server that never says READY=1.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::windows::io::RawSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use devsup_protocol::systemfd::{HelloError, MAX_HELLO, PROTOCOL_INFO_LEN, parse_hello};
use devsup_protocol::{SYSTEMFD_SOCKET_SECRET_ENV, SYSTEMFD_SOCKET_SERVER_ENV};
use windows_sys::Win32::Networking::WinSock::{
    SOCKET, WSADuplicateSocketW, WSAGetLastError, WSAPROTOCOL_INFOW,
};

// The wire format's record is the struct Windows fills in.
const _: () = assert!(std::mem::size_of::<WSAPROTOCOL_INFOW>() == PROTOCOL_INFO_LEN);

/// How long a connected process has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What happened on one connection to the socket server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fetch {
    /// Process `pid` presented the secret and was sent every socket.
    Sent { pid: u32, sockets: usize },
    /// The connection was refused, and sent nothing: a wrong secret or a
    /// malformed hello.
    Refused(HelloError),
    /// The hello was right but the sockets could not be given: reading,
    /// duplicating (the pid is gone) or writing failed.
    Failed { pid: Option<u32>, error: String },
}

/// The socket server of one set of sockets; stopped when dropped.
#[derive(Debug)]
pub(crate) struct SocketServer {
    addr: SocketAddr,
    secret: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SocketServer {
    /// Listens on a loopback port of its own, and serves `sockets` (owned
    /// by the caller, and kept open by it while the server runs) on a
    /// thread, telling `on_fetch` of every connection.
    pub(crate) fn start(
        sockets: Vec<RawSocket>,
        on_fetch: impl Fn(Fetch) + Send + 'static,
    ) -> io::Result<SocketServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let secret = uuid::Uuid::new_v4().hyphenated().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("systemfd".into()).spawn({
            let (secret, stop) = (secret.clone(), stop.clone());
            move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        on_fetch(serve_one(stream, &secret, &sockets));
                    }
                }
            }
        })?;
        Ok(SocketServer {
            addr,
            secret,
            stop,
            thread: Some(thread),
        })
    }

    /// The variables a process needs to fetch the sockets (listenfd reads
    /// them, and removes them from its environment).
    pub(crate) fn env(&self) -> [(&'static str, String); 2] {
        [
            (SYSTEMFD_SOCKET_SERVER_ENV, self.addr.to_string()),
            (SYSTEMFD_SOCKET_SECRET_ENV, self.secret.clone()),
        ]
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept; it sees the flag and returns.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One connection: read the hello, check it, send one `WSAPROTOCOL_INFOW`
/// per socket for the pid it names, close.
fn serve_one(mut stream: TcpStream, secret: &str, sockets: &[RawSocket]) -> Fetch {
    let failed = |pid, error: io::Error| Fetch::Failed {
        pid,
        error: error.to_string(),
    };
    let mut hello = Vec::new();
    let read = stream.set_read_timeout(Some(HELLO_TIMEOUT)).and_then(|()| {
        (&mut stream)
            .take(MAX_HELLO as u64 + 1)
            .read_to_end(&mut hello)
    });
    if let Err(error) = read {
        return failed(None, error);
    }
    let pid = match parse_hello(&hello, secret) {
        Ok(pid) => pid,
        Err(why) => return Fetch::Refused(why),
    };
    let mut records = Vec::with_capacity(sockets.len() * PROTOCOL_INFO_LEN);
    for &socket in sockets {
        match duplicate_for(socket, pid) {
            Ok(record) => records.extend_from_slice(&record),
            Err(error) => return failed(Some(pid), error),
        }
    }
    let sent = stream
        .write_all(&records)
        .and_then(|()| stream.shutdown(Shutdown::Write));
    match sent {
        Ok(()) => Fetch::Sent {
            pid,
            sockets: sockets.len(),
        },
        Err(error) => failed(Some(pid), error),
    }
}

/// `WSADuplicateSocketW`: the bytes from which process `pid` makes its own
/// handle of `socket`.
fn duplicate_for(socket: RawSocket, pid: u32) -> io::Result<[u8; PROTOCOL_INFO_LEN]> {
    // SAFETY: WSAPROTOCOL_INFOW is plain data; all zeroes is a valid value.
    let mut info: WSAPROTOCOL_INFOW = unsafe { std::mem::zeroed() };
    // SAFETY: `socket` is open (the caller keeps it so), `info` is a valid
    // out-pointer for the call.
    if unsafe { WSADuplicateSocketW(socket as SOCKET, pid, &mut info) } != 0 {
        // SAFETY: no arguments; reads this thread's last socket error.
        return Err(io::Error::from_raw_os_error(unsafe { WSAGetLastError() }));
    }
    let mut record = [0u8; PROTOCOL_INFO_LEN];
    // SAFETY: the size of WSAPROTOCOL_INFOW is PROTOCOL_INFO_LEN (asserted
    // at compile time above), and both regions are valid and disjoint.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&raw const info).cast::<u8>(),
            record.as_mut_ptr(),
            PROTOCOL_INFO_LEN,
        );
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use std::os::windows::io::AsRawSocket;
    use std::sync::mpsc;

    use super::*;

    /// The server side against listenfd's own client: the listener listenfd
    /// takes is the passed socket (same address, and a connection made to
    /// it is accepted on what listenfd took), and the fetch is reported
    /// with this process's pid. One test: it sets the environment.
    #[test]
    fn listenfd_takes_the_sockets_it_is_given() {
        let passed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let (tx, fetches) = mpsc::channel();
        let server = SocketServer::start(vec![passed.as_raw_socket()], move |fetch| {
            let _ = tx.send(fetch);
        })
        .unwrap();
        for (key, value) in server.env() {
            // SAFETY: the only test in this binary that sets these variables.
            unsafe { std::env::set_var(key, value) };
        }
        let taken = listenfd::ListenFd::from_env()
            .take_tcp_listener(0)
            .unwrap()
            .expect("listenfd got no socket from the server");
        let pid = std::process::id();
        let fetch = fetches.recv_timeout(HELLO_TIMEOUT).unwrap();
        assert_eq!(fetch, Fetch::Sent { pid, sockets: 1 });
        assert_eq!(taken.local_addr().unwrap(), passed.local_addr().unwrap());
        let mut client = TcpStream::connect(passed.local_addr().unwrap()).unwrap();
        let (mut accepted, _) = taken.accept().unwrap();
        client.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        accepted.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");

        // A process without the secret is sent nothing.
        let mut stranger = TcpStream::connect(server.addr).unwrap();
        let wrong = devsup_protocol::systemfd::hello("not-the-secret", pid);
        stranger.write_all(wrong.as_bytes()).unwrap();
        stranger.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        stranger.read_to_end(&mut got).unwrap();
        assert!(got.is_empty(), "{} bytes sent to a stranger", got.len());
        let fetch = fetches.recv_timeout(HELLO_TIMEOUT).unwrap();
        assert_eq!(fetch, Fetch::Refused(HelloError::WrongSecret));
        drop(server);
    }

    /// Set in the child process of the test below.
    const CHILD_ENV: &str = "DEVSUP_TEST_SYSTEMFD_CHILD";

    /// Another process, as a generation is: this test binary again, run
    /// for [`child_entry`] with the server's variables. It takes the socket
    /// with listenfd, answers one connection on it with its pid, and
    /// exits; the fetch is reported with the child's pid.
    #[test]
    fn another_process_takes_the_socket_and_serves_on_it() {
        use std::process::{Command, Stdio};
        let passed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let (tx, fetches) = mpsc::channel();
        let server = SocketServer::start(vec![passed.as_raw_socket()], move |fetch| {
            let _ = tx.send(fetch);
        })
        .unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "platform::windows::systemfd::tests::child_entry"])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .envs(server.env())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let fetch = fetches.recv_timeout(Duration::from_secs(30));
        let answer = fetch.as_ref().ok().and_then(|_| {
            let mut stream = TcpStream::connect(passed.local_addr().unwrap()).ok()?;
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .ok()?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).ok()?;
            Some(answer)
        });
        // Its exit, waited for a bounded time; then it is ended by its pid
        // whatever happened above.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut status = child.try_wait().unwrap();
        while status.is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            status = child.try_wait().unwrap();
        }
        if status.is_none() {
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        let pid = child.id();
        assert_eq!(fetch.unwrap(), Fetch::Sent { pid, sockets: 1 });
        assert_eq!(answer.as_deref(), Some(format!("pid={pid}\n").as_str()));
        assert!(status.success(), "child: {status}");
    }

    /// The child side of the test above; with no [`CHILD_ENV`] (the normal
    /// run of the test binary) it has nothing to do.
    #[test]
    fn child_entry() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let taken = listenfd::ListenFd::from_env()
            .take_tcp_listener(0)
            .unwrap()
            .expect("listenfd got no socket in the child");
        let (mut stream, _) = taken.accept().unwrap();
        writeln!(stream, "pid={}", std::process::id()).unwrap();
    }
}
