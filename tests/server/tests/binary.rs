//! The reference binary run the way devsup runs it: a listening socket at
//! fd 3, the ready channel at fd 4, `DEVSUP_GENERATION` set. Each test
//! waits on what the process says (READY on the channel, a log line, a
//! response), never on a fixed sleep.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(8);

/// One server process, as devsup would start it.
struct Generation {
    child: Child,
    addr: SocketAddr,
    ready: UnixStream,
    stderr: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Generation {
    fn spawn(generation: u64, args: &[&str]) -> Generation {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (ready, theirs) = UnixStream::pair().unwrap();
        ready.set_read_timeout(Some(PATIENCE)).unwrap();
        let (listen_fd, ready_fd) = (listener.as_raw_fd(), theirs.as_raw_fd());
        let mut command = Command::new(env!("CARGO_BIN_EXE_devsup-server"));
        command
            .args(args)
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDS_FIRST_FD", "3")
            .env("LISTEN_FDNAMES", "http")
            .env("DEVSUP_READY_FD", "4")
            .env("DEVSUP_GENERATION", generation.to_string())
            .env_remove("LISTEN_PID")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close) between
        // fork and exec. Both fds are first copied above 3 and 4 so that
        // neither dup2 can clobber the other's source, and dup2 clears
        // close-on-exec on its targets.
        unsafe {
            command.pre_exec(move || {
                let listen = libc::fcntl(listen_fd, libc::F_DUPFD, 10);
                let ready = libc::fcntl(ready_fd, libc::F_DUPFD, 10);
                if listen < 0 || ready < 0 || libc::dup2(listen, 3) < 0 || libc::dup2(ready, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(listen);
                libc::close(ready);
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Generation {
            child,
            addr,
            ready,
            stderr,
            log: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next message line on the ready channel, or `None` at EOF.
    fn message(&mut self) -> Option<String> {
        let mut line = Vec::new();
        let mut byte = [0];
        loop {
            match self.ready.read(&mut byte).expect("ready channel") {
                0 if line.is_empty() => return None,
                0 => panic!("cut-off message {line:?}"),
                _ if byte[0] == b'\n' => return Some(String::from_utf8(line).unwrap()),
                _ => line.push(byte[0]),
            }
        }
    }

    /// Waits for a log line containing `needle`, and returns it.
    fn log_line(&mut self, needle: &str) -> String {
        let until = Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.log.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = until.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(_) => panic!("no log line with {needle:?} in {:#?}", self.log),
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the child is not
        // reaped yet, so the pid is still ours.
        assert_eq!(unsafe { libc::kill(self.pid() as libc::pid_t, signal) }, 0);
    }

    fn wait(&mut self) -> ExitStatus {
        let until = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < until, "generation did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn get(&self, path: &str) -> Response {
        get(self.addr, path)
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One request on its own connection, read to EOF.
fn get(addr: SocketAddr, path: &str) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let status = head[9..12].parse().unwrap();
    let body = match head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        true => dechunk(body),
        false => body.to_owned(),
    };
    Response {
        status,
        head: head.to_owned(),
        body,
    }
}

fn dechunk(mut raw: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, rest) = raw.split_once("\r\n").expect("chunk size");
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            return body;
        }
        body.push_str(&rest[..size]);
        raw = &rest[size + 2..];
    }
}

#[test]
fn serves_the_inherited_socket_then_drains_on_sigterm() {
    let mut g = Generation::spawn(3, &["--drain-grace", "100"]);
    assert_eq!(g.message().as_deref(), Some("READY=1"));
    let pid = g.pid();
    let tag = format!("devsup-server gen=3 pid={pid}: ");
    assert!(g.log_line("started").starts_with(&tag));
    assert!(g.log_line("(inherited)").contains(&g.addr.to_string()));
    g.log_line(&format!("{tag}ready"));

    let root = g.get("/");
    assert_eq!(root.status, 200);
    assert_eq!(root.body, format!("gen=3 pid={pid}\n"));
    assert_eq!(root.header("x-generation"), Some("3"));
    assert_eq!(root.header("x-pid"), Some(pid.to_string().as_str()));

    // Captured before listenfd removed it.
    assert_eq!(g.get("/env?name=LISTEN_FDS").body, "1");
    assert_eq!(g.get("/env?name=LISTEN_FDNAMES").body, "http");
    assert_eq!(g.get("/env?name=DEVSUP_GENERATION").body, "3");
    let unset = g.get("/env?name=LISTEN_PID");
    assert_eq!(unset.status, 404);
    assert_eq!(unset.header("x-generation"), Some("3"));

    assert_eq!(
        g.get("/sleep?ms=10").body,
        format!("gen=3 pid={pid} slept=10\n")
    );
    let stream = g.get("/stream?chunks=3&interval_ms=5");
    assert_eq!(stream.body, "gen=3 chunk=0\ngen=3 chunk=1\ngen=3 chunk=2\n");

    let fds = g.get("/fds").body;
    let fds: Vec<u32> = fds.lines().map(|l| l.parse().unwrap()).collect();
    assert!(fds.contains(&3) && fds.contains(&4), "{fds:?}");

    assert_eq!(g.get("/reload").body, "reload requested\n");
    assert_eq!(g.message().as_deref(), Some("DEVSUP_RELOAD=1"));

    g.signal(libc::SIGTERM);
    assert_eq!(g.message().as_deref(), Some("STOPPING=1"));
    assert!(g.log_line("draining").contains("after SIGTERM, "));
    assert!(g.wait().success());
    assert!(g.log_line("exited after ").starts_with(&tag));
}

#[test]
fn fail_before_ready_exits_1_without_ready() {
    let mut g = Generation::spawn(2, &["--fail-before-ready", "1,2"]);
    assert_eq!(g.message(), None);
    assert_eq!(g.wait().code(), Some(1));
    g.log_line("exiting before ready");
}

#[test]
fn fail_before_ready_spares_other_generations() {
    let mut g = Generation::spawn(3, &["--fail-before-ready", "1,2"]);
    assert_eq!(g.message().as_deref(), Some("READY=1"));
}

#[test]
fn never_ready_serves_without_ready() {
    let mut g = Generation::spawn(1, &["--never-ready", "all"]);
    g.log_line("never sending READY");
    assert_eq!(g.get("/").status, 200);
    g.signal(libc::SIGTERM);
    // The first message is the STOPPING of the drain: READY never came.
    assert_eq!(g.message().as_deref(), Some("STOPPING=1"));
    assert!(g.wait().success());
}

#[test]
fn ignore_drain_keeps_serving_through_sigterm() {
    let mut g = Generation::spawn(4, &["--ignore-drain", "4"]);
    assert_eq!(g.message().as_deref(), Some("READY=1"));
    g.signal(libc::SIGTERM);
    g.log_line("ignoring SIGTERM");
    assert_eq!(g.get("/").body, format!("gen=4 pid={}\n", g.pid()));
    g.signal(libc::SIGINT);
    assert_eq!(g.message().as_deref(), Some("STOPPING=1"));
    assert!(g.wait().success());
}

#[test]
fn websocket_and_event_stream_end_cleanly_on_sigterm() {
    use tokio_tungstenite::tungstenite::{self, Message};
    let mut g = Generation::spawn(3, &["--long-lived-grace", "100"]);
    assert_eq!(g.message().as_deref(), Some("READY=1"));
    let pid = g.pid();

    let stream = TcpStream::connect(g.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let url = format!("ws://{}/ws", g.addr);
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).unwrap();
    let hello = ws.read().unwrap();
    assert_eq!(hello, Message::text(format!("gen=3 pid={pid}")));
    ws.send(Message::text("echo me")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("echo me"));

    let mut events = TcpStream::connect(g.addr).unwrap();
    events.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        events,
        "GET /events?interval_ms=20 HTTP/1.1\r\nHost: test\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 1024];
    while !String::from_utf8_lossy(&got).contains("data: gen=3 tick=1\n") {
        let n = events.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }

    g.signal(libc::SIGTERM);
    // The WebSocket: a close frame with 1012, then the end.
    let close = loop {
        match ws.read() {
            Ok(Message::Close(frame)) => break frame.expect("a close code"),
            Ok(_) => {}
            Err(err) => panic!("no close frame: {err}"),
        }
    };
    assert_eq!(u16::from(close.code), 1012);
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(err) => panic!("not a clean close: {err}"),
        }
    }
    // The event stream: its last chunk, then EOF.
    events.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("content-type: text/event-stream"), "{text}");
    assert!(text.ends_with("\r\n0\r\n\r\n"), "not a clean end: {text:?}");

    assert!(g.wait().success());
    let exited = g.log_line("exited after ");
    let ms: u64 = exited
        .split("exited after ")
        .nth(1)
        .and_then(|rest| rest.split("ms").next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("{exited}"));
    assert!(ms < 1000, "{exited}");
}
