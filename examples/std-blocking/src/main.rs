//! A blocking, std-only HTTP/1.1 server (one thread per connection, every
//! response `Connection: close`) that reloads under devsup without
//! dropping a request.
//!
//! Opting in takes two lines: take the listener devsup passed at fd 3, and
//! say "ready" once it is set up.
//!
//! ```ignore
//! let listener = listenfd::ListenFd::from_env().take_tcp_listener(0)?; // 1
//! // ... install the SIGTERM handler ...
//! devsup_protocol::notify_ready()?;                                    // 2
//! ```
//!
//! Two things a blocking server must do that are easy to miss:
//!
//! - Never block in `accept`. During a hand-off two generations share one
//!   listening socket; `poll` may report a connection that the other
//!   generation accepts first, and a blocking `accept` would then hang
//!   until the next one comes, deaf to SIGTERM. So the socket is
//!   non-blocking (a flag of the shared socket, which tokio generations set
//!   anyway) and the loop waits in `poll` on the socket and a self-pipe
//!   that the signal handler writes to.
//! - On SIGTERM, close only our copy of the listener. Connections still in
//!   the socket's backlog then go to the new generation; `shutdown(2)` on
//!   the listener would reset them for every process that shares it.
//!
//! After SIGTERM it stops accepting, waits for the connection threads it
//! has (each answers its one request), and exits 0.
//!
//! On Windows devsup's drain signal is `CTRL_BREAK_EVENT` to the
//! generation's process group; `ctrlc` hears it (and Ctrl-C), and the loop
//! waits in `WSAPoll` on the socket, looking at the stop flag every 10 ms.
//!
//! `GET /` answers `gen=N pid=P` (N from `DEVSUP_GENERATION`).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::ExitCode;
use std::thread::JoinHandle;
use std::time::Duration;

/// Where to listen when run on its own, without devsup.
const FALLBACK_ADDR: &str = "127.0.0.1:8080";
/// A client that sends nothing for this long is dropped, so that a drain
/// cannot hang on it.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head read.
const MAX_HEAD: usize = 8192;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("example-std: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> io::Result<()> {
    let listener = match listenfd::ListenFd::from_env().take_tcp_listener(0)? {
        Some(listener) => listener,
        None => TcpListener::bind(FALLBACK_ADDR)?,
    };
    listener.set_nonblocking(true)?;
    // Installed before READY: from then on devsup may send the drain signal.
    let stop = stop::Stop::install()?;

    let generation = devsup_protocol::generation().unwrap_or(0);
    let body = format!("gen={generation} pid={}\n", std::process::id());
    devsup_protocol::notify_ready()?;

    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while stop.wait_for_connection(&listener)? {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            // The other generation took it, or it died in the backlog.
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                ) =>
            {
                continue;
            }
            Err(err) => {
                // Out of fds or memory: the connection waits in the backlog.
                eprintln!("example-std: accept: {err}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        connections.retain(|handle| !handle.is_finished());
        let body = body.clone();
        connections.push(std::thread::spawn(move || {
            if let Err(err) = handle(stream, generation, &body) {
                eprintln!("example-std: connection: {err}");
            }
        }));
    }

    // Our copy only: the socket stays open in devsup and the new generation.
    drop(listener);
    let _ = devsup_protocol::notify_stopping();
    connections.retain(|handle| !handle.is_finished());
    eprintln!(
        "example-std: stopping, finishing {} connections",
        connections.len()
    );
    for connection in connections {
        let _ = connection.join();
    }
    Ok(())
}

/// Reads one request head and answers it, closing the connection.
fn handle(mut stream: TcpStream, generation: u64, body: &str) -> io::Result<()> {
    // Accepted sockets do not inherit O_NONBLOCK on Linux, but they do on
    // some BSDs.
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            // Closed before a whole request: nothing to answer.
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                generation,
                "",
            );
        }
    }
    let mut request_line = head
        .split(|&b| b == b'\r')
        .next()
        .unwrap_or_default()
        .split(|&b| b == b' ');
    match (request_line.next(), request_line.next()) {
        (Some(b"GET"), Some(b"/")) => respond(&mut stream, "200 OK", generation, body),
        _ => respond(&mut stream, "404 Not Found", generation, "not found\n"),
    }
}

fn respond(stream: &mut TcpStream, status: &str, generation: u64, body: &str) -> io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\n\
         content-type: text/plain\r\n\
         content-length: {}\r\n\
         x-generation: {generation}\r\n\
         connection: close\r\n\
         \r\n\
         {body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    // FIN after the response; the client has sent nothing more, so the
    // close is clean.
    stream.shutdown(Shutdown::Write)
}

/// The stop signal, and waiting for a connection or for it.
#[cfg(unix)]
mod stop {
    use std::io;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// The read end of a self-pipe that SIGTERM and SIGINT write to.
    pub struct Stop(UnixStream);

    impl Stop {
        pub fn install() -> io::Result<Self> {
            let (wake, wake_writer) = UnixStream::pair()?;
            signal_hook::low_level::pipe::register(
                signal_hook::consts::SIGTERM,
                wake_writer.try_clone()?,
            )?;
            signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, wake_writer)?;
            Ok(Stop(wake))
        }

        /// Waits until the listener has a connection (`true`) or a stop
        /// signal arrived (`false`).
        pub fn wait_for_connection(&self, listener: &TcpListener) -> io::Result<bool> {
            let mut fds = [listener.as_raw_fd(), self.0.as_raw_fd()].map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            loop {
                // SAFETY: `fds` is an array of two initialised pollfds that
                // outlives the call, and both fds are borrowed from open
                // sockets.
                let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
                if n < 0 {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(err);
                }
                if fds[1].revents != 0 {
                    return Ok(false);
                }
                if fds[0].revents != 0 {
                    return Ok(true);
                }
            }
        }
    }
}

/// The stop signal, and waiting for a connection or for it.
#[cfg(windows)]
mod stop {
    use std::io;
    use std::net::TcpListener;
    use std::os::windows::io::AsRawSocket;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use windows_sys::Win32::Networking::WinSock::{POLLRDNORM, SOCKET_ERROR, WSAPOLLFD, WSAPoll};

    /// Set by the console control handler on `CTRL_BREAK_EVENT` (devsup's
    /// drain signal) or Ctrl-C.
    pub struct Stop(Arc<AtomicBool>);

    impl Stop {
        pub fn install() -> io::Result<Self> {
            let stop = Arc::new(AtomicBool::new(false));
            let set = stop.clone();
            ctrlc::set_handler(move || set.store(true, Ordering::Relaxed))
                .map_err(io::Error::other)?;
            Ok(Stop(stop))
        }

        /// Waits until the listener has a connection (`true`) or a stop
        /// signal arrived (`false`), looking at the flag every 10 ms.
        pub fn wait_for_connection(&self, listener: &TcpListener) -> io::Result<bool> {
            let mut fds = [WSAPOLLFD {
                fd: listener.as_raw_socket() as _,
                events: POLLRDNORM,
                revents: 0,
            }];
            loop {
                if self.0.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                // SAFETY: `fds` is one initialised WSAPOLLFD that outlives the
                // call, and its socket is borrowed from the open listener.
                let n = unsafe { WSAPoll(fds.as_mut_ptr(), fds.len() as u32, 10) };
                if n == SOCKET_ERROR {
                    return Err(io::Error::last_os_error());
                }
                if n > 0 {
                    return Ok(true);
                }
            }
        }
    }
}
