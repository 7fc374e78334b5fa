//! Socket specs and binding.
//!
//! devsup binds every listening socket once, before the first generation
//! starts, and keeps it open until it exits. Sockets are created
//! close-on-exec (socket2 passes `SOCK_CLOEXEC`); they become inheritable
//! only inside a generation's fork, in [`crate::process`]. Under systemd
//! socket activation they are taken from devsup's own `LISTEN_FDS`
//! ([`take_inherited`]) instead.
//!
//! Longer than most modules: parsing, binding and socket activation share
//! the socket types; a good part is its unit tests.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
#[cfg(unix)]
use std::os::fd::{AsFd, BorrowedFd};
#[cfg(unix)]
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail};
#[cfg(unix)]
use socket2::SockAddr;
use socket2::{Domain, Socket, Type};

/// Where a socket listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Addr {
    /// A TCP address; port 0 picks a free port.
    Tcp(SocketAddr),
    /// A unix stream socket at a path.
    Unix(PathBuf),
}

/// One `--socket` spec: `[NAME=]tcp::[HOST:]PORT` or `[NAME=]unix::PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SocketSpec {
    /// The name passed in `LISTEN_FDNAMES`, if given.
    pub(crate) name: Option<String>,
    /// The address.
    pub(crate) addr: Addr,
}

const SPEC_HELP: &str = "expected [NAME=]tcp::[HOST:]PORT or [NAME=]unix::PATH, \
                         e.g. tcp::8080, http=tcp::0.0.0.0:8080, tcp::[::1]:8080, unix::/tmp/app.sock";

impl FromStr for SocketSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        // A name is what comes before the first `=`, unless the spec starts
        // with its kind: a path may hold `=` (`unix::/tmp/a=b.sock`).
        let unnamed = s.starts_with("tcp::") || s.starts_with("unix::");
        let (name, rest) = match s.split_once('=') {
            Some((name, rest)) if !unnamed => (Some(name), rest),
            _ => (None, s),
        };
        if let Some(name) = name {
            let ok = !name.is_empty()
                && name.len() <= 255
                && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            if !ok {
                return Err(format!(
                    "bad socket name {name:?} in {s:?}: names are printable ASCII without ':'"
                ));
            }
        }
        let addr = if let Some(path) = rest.strip_prefix("unix::") {
            if path.is_empty() {
                return Err(format!("empty unix socket path in {s:?}; {SPEC_HELP}"));
            }
            Addr::Unix(PathBuf::from(path))
        } else if let Some(addr) = rest.strip_prefix("tcp::") {
            Addr::Tcp(parse_tcp(addr).map_err(|e| format!("{e} in {s:?}; {SPEC_HELP}"))?)
        } else {
            return Err(format!("unknown socket spec {s:?}; {SPEC_HELP}"));
        };
        Ok(SocketSpec {
            name: name.map(str::to_owned),
            addr,
        })
    }
}

/// Parses `PORT`, `HOST:PORT` or `[V6]:PORT`; the host defaults to 127.0.0.1.
pub(crate) fn parse_tcp(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u64>() {
        return tcp_port(port).map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // Say which half is wrong: the port, or the host.
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("bad TCP address {s:?}"));
    };
    let port = port
        .parse::<u64>()
        .map_err(|_| format!("bad port {port:?}"))?;
    tcp_port(port)?;
    Err(format!(
        "bad host {host:?} (an IP address is needed; IPv6 goes in brackets)"
    ))
}

fn tcp_port(port: u64) -> Result<u16, String> {
    u16::try_from(port).map_err(|_| format!("port {port} is out of range (0-65535)"))
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(addr) => write!(f, "{addr}"),
            Addr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A bound, listening socket that devsup owns for its whole life.
#[derive(Debug)]
pub(crate) struct Listener {
    /// The name in `LISTEN_FDNAMES`.
    pub(crate) name: String,
    /// The address it is bound to (with the real port if 0 was asked for).
    pub(crate) addr: Addr,
    socket: Socket,
    /// A unix socket file to remove when devsup exits.
    unlink_on_drop: Option<PathBuf>,
    /// Passed by systemd, not bound.
    inherited: bool,
}

impl Listener {
    /// The socket, to be passed to a generation.
    #[cfg(unix)]
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// The socket, to be passed to a generation (by systemfd's protocol).
    #[cfg(windows)]
    pub(crate) fn raw_socket(&self) -> std::os::windows::io::RawSocket {
        std::os::windows::io::AsRawSocket::as_raw_socket(&self.socket)
    }

    /// Sets or clears `O_NONBLOCK` (`--nonblocking`). The flag belongs to
    /// the open socket, so every process holding it sees the change.
    pub(crate) fn set_nonblocking(&self, nonblocking: bool) -> std::io::Result<()> {
        self.socket.set_nonblocking(nonblocking)
    }

    /// Whether devsup was given it rather than bound it.
    pub(crate) fn is_inherited(&self) -> bool {
        self.inherited
    }
}

#[cfg(unix)]
impl Listener {
    /// A listening socket devsup was given (socket activation, see
    /// [`take_inherited`]) rather than bound: it is never unlinked.
    fn inherited(name: String, socket: Socket) -> anyhow::Result<Listener> {
        // SO_ACCEPTCONN through nix: socket2 offers it on Linux only.
        let listening =
            nix::sys::socket::getsockopt(&socket, nix::sys::socket::sockopt::AcceptConn)?;
        if socket.r#type()? != Type::STREAM || !listening {
            bail!("not a listening stream socket");
        }
        let local = socket.local_addr()?;
        let addr = match (local.as_socket(), local.as_pathname()) {
            (Some(tcp), _) => Addr::Tcp(tcp),
            (None, Some(path)) => Addr::Unix(path.to_owned()),
            (None, None) => Addr::Unix(PathBuf::from("(unnamed)")),
        };
        Ok(Listener {
            name,
            addr,
            socket,
            unlink_on_drop: None,
            inherited: true,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.unlink_on_drop {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The name of the `i`th socket when none is given: `http`, `http2`, ….
fn default_name(i: usize) -> String {
    match i {
        0 => "http".to_owned(),
        _ => format!("http{}", i + 1),
    }
}

/// The names passed in `LISTEN_FDNAMES`, in order: as given, else `http`,
/// `http2`, `http3`, … by position. An error if two are the same.
pub(crate) fn names(specs: &[SocketSpec]) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| spec.name.clone().unwrap_or_else(|| default_name(i)))
        .collect();
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            bail!(
                "two sockets are named {name:?} (unnamed ones are http, http2, …): name them apart with NAME="
            );
        }
    }
    Ok(names)
}

/// Binds every spec, in order, named by [`names`].
pub(crate) fn bind_all(specs: &[SocketSpec], backlog: i32) -> anyhow::Result<Vec<Listener>> {
    let names = names(specs)?;
    let mut listeners = Vec::with_capacity(specs.len());
    for (spec, name) in specs.iter().zip(names) {
        listeners.push(bind(spec, name, backlog)?);
    }
    Ok(listeners)
}

/// Most sockets taken from systemd (socket activation).
#[cfg(unix)]
const MAX_INHERITED: usize = 64;

/// The number of sockets devsup's environment passes to devsup itself.
fn passed_fds() -> Option<usize> {
    let pid: u32 = std::env::var(devsup_protocol::LISTEN_PID_ENV)
        .ok()?
        .parse()
        .ok()?;
    if pid != std::process::id() {
        return None;
    }
    let n: usize = std::env::var(devsup_protocol::LISTEN_FDS_ENV)
        .ok()?
        .parse()
        .ok()?;
    (n > 0).then_some(n)
}

/// Whether devsup was socket-activated: then no `--port` is needed.
pub(crate) fn socket_activated() -> bool {
    passed_fds().is_some()
}

/// Socket activation: takes the sockets systemd passed devsup (its own
/// `LISTEN_FDS`, with `LISTEN_PID` = devsup's pid), if it did, instead of
/// binding; they go to each generation as usual, at fds 3, 4, …, with their
/// names from `LISTEN_FDNAMES`. Call it once, before
/// any other fd is opened or any process started. Unnamed sockets are
/// named as devsup names its own: `http`, `http2`, …
///
/// Not on Windows, where no socket activation passes sockets this way.
#[cfg(not(unix))]
pub(crate) fn take_inherited() -> anyhow::Result<Option<Vec<Listener>>> {
    Ok(None)
}

/// Socket activation (see the other `take_inherited`).
#[cfg(unix)]
pub(crate) fn take_inherited() -> anyhow::Result<Option<Vec<Listener>>> {
    let Some(n) = passed_fds() else {
        return Ok(None);
    };
    if n > MAX_INHERITED {
        bail!("LISTEN_FDS={n}: devsup takes at most {MAX_INHERITED} sockets");
    }
    let names: Vec<String> = std::env::var(devsup_protocol::LISTEN_FDNAMES_ENV)
        .unwrap_or_default()
        .split(':')
        .map(str::to_owned)
        .collect();
    let mut listeners = Vec::with_capacity(n);
    for i in 0..n {
        let fd = devsup_protocol::FIRST_FD + i as std::os::fd::RawFd;
        // The fd must be open before it is owned.
        if nix::fcntl::fcntl(
            // SAFETY: only borrowed for the check.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .is_err()
        {
            bail!("LISTEN_FDS={n}, but fd {fd} is not open");
        }
        // SAFETY: systemd passed this fd to devsup and nothing else in
        // devsup has taken it: from now on it belongs to this Socket.
        let socket = unsafe { <Socket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        socket
            .set_cloexec(true)
            .with_context(|| format!("fd {fd}"))?;
        let name =
            (names.get(i).filter(|n| !n.is_empty())).map_or_else(|| default_name(i), String::clone);
        listeners.push(Listener::inherited(name, socket).with_context(|| {
            format!("fd {fd}, passed by systemd (LISTEN_FDS={n}), is not a listening stream socket")
        })?);
    }
    tracing::info!("socket-activated: took {n} socket(s) from systemd");
    Ok(Some(listeners))
}

fn bind(spec: &SocketSpec, name: String, backlog: i32) -> anyhow::Result<Listener> {
    match &spec.addr {
        Addr::Tcp(addr) => {
            let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)
                .context("cannot create a TCP socket")?;
            // Not on Windows, where SO_REUSEADDR lets another socket take a
            // port in use (and a closed port is free at once anyway).
            #[cfg(unix)]
            socket
                .set_reuse_address(true)
                .with_context(|| format!("cannot set SO_REUSEADDR on the socket for {addr}"))?;
            if addr.is_ipv6() {
                // An IPv6 socket takes IPv6 only, so that `-s tcp::[::]:8080
                // -s tcp::0.0.0.0:8080` can bind both (systemd's
                // BindIPv6Only=ipv6-only).
                socket
                    .set_only_v6(true)
                    .with_context(|| format!("cannot set IPV6_V6ONLY on the socket for {addr}"))?;
            }
            socket
                .bind(&(*addr).into())
                .map_err(|e| bind_error(&spec.addr, e))?;
            listen(&socket, &spec.addr, backlog)?;
            let local = socket
                .local_addr()?
                .as_socket()
                .context("bound TCP socket has no TCP address")?;
            Ok(Listener {
                name,
                addr: Addr::Tcp(local),
                socket,
                unlink_on_drop: None,
                inherited: false,
            })
        }
        #[cfg(not(unix))]
        Addr::Unix(path) => bail!(
            "cannot listen on unix::{}: unix sockets are not passed to generations on Windows; use a TCP port",
            path.display()
        ),
        #[cfg(unix)]
        Addr::Unix(path) => {
            remove_stale_unix_socket(path)?;
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)
                .context("cannot create a unix socket")?;
            let sockaddr = SockAddr::unix(path)
                .with_context(|| format!("bad unix socket path {}", path.display()))?;
            socket
                .bind(&sockaddr)
                .map_err(|e| bind_error(&spec.addr, e))?;
            listen(&socket, &spec.addr, backlog)?;
            Ok(Listener {
                name,
                addr: spec.addr.clone(),
                socket,
                unlink_on_drop: Some(path.clone()),
                inherited: false,
            })
        }
    }
}

fn listen(socket: &Socket, addr: &Addr, backlog: i32) -> anyhow::Result<()> {
    socket
        .listen(backlog)
        .with_context(|| format!("cannot listen on {addr} (backlog {backlog})"))
}

/// Removes a socket file left behind by a process that is gone. A socket
/// that still answers belongs to a running server and is left alone; a file
/// that is not a socket is never removed.
#[cfg(unix)]
fn remove_stale_unix_socket(path: &Path) -> anyhow::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; remove it or choose another path",
            path.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "{} is in use by a running server; stop it or choose another path",
            path.display()
        ),
        Err(_) => std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display())),
    }
}

fn bind_error(addr: &Addr, e: std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind;
    let hint = match (addr, e.kind()) {
        (Addr::Tcp(a), ErrorKind::AddrInUse) => format!(
            "port {} is in use: stop the other server (`ss -ltnp 'sport = :{}'` shows it) or pick another --port",
            a.port(),
            a.port()
        ),
        (Addr::Tcp(a), ErrorKind::PermissionDenied) if a.port() < 1024 => format!(
            "ports below 1024 need root: pick a port of 1024 or more, such as --port {}",
            8000 + a.port()
        ),
        (Addr::Tcp(_), ErrorKind::AddrNotAvailable) => {
            "that address is not on this machine: use 127.0.0.1, ::1 or 0.0.0.0".to_owned()
        }
        (Addr::Unix(p), ErrorKind::NotFound) => format!(
            "directory {} does not exist: create it or choose another path",
            p.parent().unwrap_or(Path::new("/")).display()
        ),
        (Addr::Unix(_), ErrorKind::PermissionDenied) => {
            "permission denied: choose a path in a directory you can write".to_owned()
        }
        _ => e.to_string(),
    };
    anyhow::anyhow!("cannot listen on {addr}: {hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Result<SocketSpec, String> {
        s.parse()
    }

    #[test]
    fn parses_tcp_specs() {
        let local = |p| Addr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p));
        assert_eq!(
            spec("tcp::8080").unwrap(),
            SocketSpec {
                name: None,
                addr: local(8080)
            }
        );
        assert_eq!(
            spec("http=tcp::0.0.0.0:80").unwrap(),
            SocketSpec {
                name: Some("http".into()),
                addr: Addr::Tcp("0.0.0.0:80".parse().unwrap())
            }
        );
        assert_eq!(
            spec("tcp::[::1]:8080").unwrap().addr,
            Addr::Tcp("[::1]:8080".parse().unwrap())
        );
    }

    #[test]
    fn parses_unix_specs() {
        assert_eq!(
            spec("api=unix::/run/app.sock").unwrap(),
            SocketSpec {
                name: Some("api".into()),
                addr: Addr::Unix("/run/app.sock".into())
            }
        );
        // An `=` in the path is the path's.
        assert_eq!(
            spec("unix::/tmp/a=b.sock").unwrap(),
            SocketSpec {
                name: None,
                addr: Addr::Unix("/tmp/a=b.sock".into())
            }
        );
        assert_eq!(
            spec("api=unix::/tmp/a=b.sock").unwrap(),
            SocketSpec {
                name: Some("api".into()),
                addr: Addr::Unix("/tmp/a=b.sock".into())
            }
        );
    }

    #[test]
    fn rejects_bad_specs_with_a_reason() {
        assert!(spec("8080").unwrap_err().contains("unknown socket spec"));
        assert!(spec("udp::53").unwrap_err().contains("unknown socket spec"));
        assert!(spec("tcp::99999").unwrap_err().contains("out of range"));
        assert!(spec("tcp::localhost:80").unwrap_err().contains("bad host"));
        assert!(spec("tcp::1.2.3.4:x").unwrap_err().contains("bad port"));
        assert!(
            spec("unix::")
                .unwrap_err()
                .contains("empty unix socket path")
        );
        assert!(spec("a:b=tcp::1").unwrap_err().contains("bad socket name"));
    }

    #[cfg(unix)]
    #[test]
    fn binds_close_on_exec_with_names_and_real_port() {
        let specs = [spec("tcp::0").unwrap(), spec("tcp::0").unwrap()];
        let listeners = bind_all(&specs, 1024).unwrap();
        assert_eq!(listeners[0].name, "http");
        assert_eq!(listeners[1].name, "http2");
        let Addr::Tcp(addr) = listeners[0].addr else {
            panic!()
        };
        assert_ne!(addr.port(), 0);
        let flags = nix::fcntl::fcntl(listeners[0].fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        std::net::TcpStream::connect(addr).unwrap();
    }

    #[test]
    fn port_in_use_says_so() {
        let first = bind_all(&[spec("tcp::0").unwrap()], 16).unwrap();
        let Addr::Tcp(addr) = first[0].addr else {
            panic!()
        };
        let err = bind_all(&[spec(&format!("tcp::{addr}")).unwrap()], 16).unwrap_err();
        assert!(err.to_string().contains("is in use"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn unix_socket_replaces_stale_file_and_is_removed() {
        let dir = std::env::temp_dir().join(format!("devsup-sock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        // A stale socket file: bound, then its owner gone.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let specs = [spec(&format!("unix::{}", path.display())).unwrap()];
        let listeners = bind_all(&specs, 16).unwrap();
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        // A live one is not taken over.
        assert!(
            bind_all(&specs, 16)
                .unwrap_err()
                .to_string()
                .contains("in use")
        );
        drop(listeners);
        assert!(!path.exists());
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_failed_listen_says_where() {
        // A datagram socket cannot listen.
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        let addr = Addr::Tcp("127.0.0.1:8080".parse().unwrap());
        let err = listen(&socket, &addr, 16).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("cannot listen on 127.0.0.1:8080 (backlog 16): "),
            "{err:#}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn missing_unix_directory_says_so() {
        let err =
            bind_all(&[spec("unix::/nonexistent-devsup-dir/s.sock").unwrap()], 16).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
