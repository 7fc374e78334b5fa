//! The contract between the devsup supervisor and the servers it runs.
//!
//! devsup binds the listening sockets once and hands them to every new
//! generation of a server by fd inheritance, using systemd's socket
//! activation protocol. A server reads them with
//! `listenfd::take_tcp_listener(0)` and reports that it is ready with
//! [`notify_ready`]; devsup then drains the previous generation.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! // The two lines a server takes: the inherited listener (or a bound one
//! // when run on its own), then "ready" once it accepts.
//! let listener = match listenfd::ListenFd::from_env().take_tcp_listener(0)? {
//!     Some(listener) => listener,
//!     None => std::net::TcpListener::bind("127.0.0.1:8080")?,
//! };
//! devsup_protocol::notify_ready()?;
//! # drop(listener);
//! # Ok(()) }
//! ```
//!
//! Messages use the sd_notify text format: newline-separated `KEY=VALUE`
//! pairs. [`notify`] sends them over the ready channel at
//! [`READY_FD_ENV`] when run under devsup, over [`NOTIFY_SOCKET_ENV`] when
//! run under systemd, and does nothing otherwise, so the same server runs
//! unchanged in both places and on its own.
//!
//! # Windows
//!
//! Windows has no fd inheritance for sockets. There the sockets are passed
//! the way systemfd (and `watchexec --socket`) pass them, and listenfd
//! takes them: the supervisor sets [`SYSTEMFD_SOCKET_SERVER_ENV`] and
//! [`SYSTEMFD_SOCKET_SECRET_ENV`], the server connects, sends its secret
//! and pid, and receives one `WSAPROTOCOL_INFOW` per socket (the wire
//! format is in [`systemfd`]). The code above is then the same on
//! Windows: `ListenFd::from_env()` speaks that protocol. The ready channel
//! is an inherited pipe handle named by [`READY_HANDLE_ENV`];
//! [`NOTIFY_SOCKET_ENV`] is not read (there is no systemd).
#![deny(missing_docs)]

use std::fmt;
use std::io;

/// Number of sockets passed, at fds [`FIRST_FD`], `FIRST_FD + 1`, …
pub const LISTEN_FDS_ENV: &str = "LISTEN_FDS";
/// First passed fd (always [`FIRST_FD`]); an extension read by listenfd.
pub const LISTEN_FDS_FIRST_FD_ENV: &str = "LISTEN_FDS_FIRST_FD";
/// Colon-separated names of the passed sockets, in fd order.
pub const LISTEN_FDNAMES_ENV: &str = "LISTEN_FDNAMES";
/// Pid the sockets are meant for; set only with `devsup --listen-pid`.
pub const LISTEN_PID_ENV: &str = "LISTEN_PID";
/// Fd number of the generation's end of its ready channel, a unix stream
/// socket: the first fd after the passed sockets.
pub const READY_FD_ENV: &str = "DEVSUP_READY_FD";
/// Windows: the numeric value of an inherited handle to the write end of
/// the generation's ready channel, an anonymous pipe. The Windows
/// counterpart of [`READY_FD_ENV`]; [`notify`] writes the same messages to
/// it.
pub const READY_HANDLE_ENV: &str = "DEVSUP_READY_HANDLE";
/// Windows: the loopback `IP:PORT` of the supervisor's socket server in
/// systemfd's protocol (see [`systemfd`]); read by listenfd.
pub const SYSTEMFD_SOCKET_SERVER_ENV: &str = "SYSTEMFD_SOCKET_SERVER";
/// Windows: the secret (a UUID) a process proves it was started by the
/// supervisor with, in systemfd's protocol; read by listenfd.
pub const SYSTEMFD_SOCKET_SECRET_ENV: &str = "SYSTEMFD_SOCKET_SECRET";
/// Path of a unix datagram socket accepting sd_notify messages.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// The generation number of this server process: 1, 2, 3, …
pub const GENERATION_ENV: &str = "DEVSUP_GENERATION";
/// The base URL of devsup's live-reload endpoint (e.g.
/// `http://127.0.0.1:35729`), set when devsup runs with `--livereload`.
/// Pages load the script at [`LIVERELOAD_SCRIPT_PATH`] under it.
pub const LIVERELOAD_ENV: &str = "DEVSUP_LIVERELOAD";
/// The former name of [`LIVERELOAD_ENV`].
#[deprecated(note = "renamed `LIVERELOAD_ENV`, like the other `*_ENV` names")]
pub const ENV_LIVERELOAD: &str = LIVERELOAD_ENV;
/// Where the live-reload script is, under [`LIVERELOAD_ENV`]'s URL.
pub const LIVERELOAD_SCRIPT_PATH: &str = "/devsup-livereload.js";
/// The fd of the first passed socket, as in systemd's `SD_LISTEN_FDS_START`.
pub const FIRST_FD: i32 = 3;

/// Longest message line devsup accepts; longer lines are dropped with a
/// warning.
pub const MAX_LINE: usize = 4096;

/// One message from a server to devsup.
///
/// Non-exhaustive: a message devsup learns to act on later becomes a
/// variant of its own (today it is [`Message::Other`]), so a `match` on it
/// needs a `_` arm.
///
/// Its `Display` is the message's line, without the newline:
///
/// ```
/// use devsup_protocol::Message;
///
/// assert_eq!(Message::MainPid(4242).to_string(), "MAINPID=4242");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// `READY=1`: the generation accepts connections; drain the old one.
    Ready,
    /// `STATUS=…`: free text, logged.
    Status(String),
    /// `STOPPING=1`: the server is shutting down, logged.
    Stopping,
    /// `RELOADING=1`: the server is reloading its configuration, logged.
    Reloading,
    /// `DEVSUP_RELOAD=1`: ask devsup to start a new generation.
    Reload,
    /// `MAINPID=…`: the pid of the real server process.
    MainPid(u32),
    /// A well-formed key devsup does not act on; ignored.
    Other {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
}

/// A line that is not a well-formed `KEY=VALUE` message.
///
/// Non-exhaustive: a new check on a line adds a variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The line has no `=`.
    #[error("not a KEY=VALUE line: {0:?}")]
    NoEquals(String),
    /// The key is empty or not `[A-Z0-9_]`.
    #[error("bad key {0:?}")]
    BadKey(String),
    /// A known key with a value it cannot take, such as `READY=yes`.
    #[error("bad value for {key}: {value:?}")]
    BadValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// The line is longer than [`MAX_LINE`] bytes.
    #[error("line of {0} bytes is longer than the {MAX_LINE}-byte limit")]
    TooLong(usize),
    /// The line is not UTF-8.
    #[error("line is not UTF-8")]
    NotUtf8,
}

/// Parses one line (without its newline; a trailing `\r` of a CRLF line
/// ending is dropped). Returns `None` for an empty line.
///
/// ```
/// use devsup_protocol::{Message, ParseError, parse_line};
///
/// assert_eq!(parse_line(b"READY=1"), Some(Ok(Message::Ready)));
/// assert_eq!(parse_line(b"MAINPID=4242\r"), Some(Ok(Message::MainPid(4242))));
/// assert_eq!(parse_line(b""), None);
/// assert_eq!(
///     parse_line(b"ready=1"),
///     Some(Err(ParseError::BadKey("ready".into())))
/// );
/// ```
pub fn parse_line(line: &[u8]) -> Option<Result<Message, ParseError>> {
    if line.len() > MAX_LINE {
        return Some(Err(ParseError::TooLong(line.len())));
    }
    let line = match std::str::from_utf8(line) {
        Ok(line) => line.trim_end_matches('\r'),
        Err(_) => return Some(Err(ParseError::NotUtf8)),
    };
    if line.is_empty() {
        return None;
    }
    Some(parse_pair(line))
}

fn parse_pair(line: &str) -> Result<Message, ParseError> {
    let Some((key, value)) = line.split_once('=') else {
        return Err(ParseError::NoEquals(line.to_owned()));
    };
    let key_ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !key_ok {
        return Err(ParseError::BadKey(key.to_owned()));
    }
    let bad = || ParseError::BadValue {
        key: key.to_owned(),
        value: value.to_owned(),
    };
    let flag = |msg: Message| if value == "1" { Ok(msg) } else { Err(bad()) };
    match key {
        "READY" => flag(Message::Ready),
        "STOPPING" => flag(Message::Stopping),
        "RELOADING" => flag(Message::Reloading),
        "DEVSUP_RELOAD" => flag(Message::Reload),
        "STATUS" => Ok(Message::Status(value.to_owned())),
        "MAINPID" => match value.parse() {
            Ok(pid) if pid > 0 => Ok(Message::MainPid(pid)),
            _ => Err(bad()),
        },
        _ => Ok(Message::Other {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
    }
}

/// Parses a whole datagram or buffer of newline-separated messages. Empty
/// lines are skipped; a bad line is one `Err` among the results, and the
/// lines after it are still read.
///
/// ```
/// use devsup_protocol::{Message, ParseError, parse};
///
/// let got = parse(b"STATUS=warming up\nREADY=yes\n\nREADY=1\n");
/// assert_eq!(
///     got,
///     vec![
///         Ok(Message::Status("warming up".into())),
///         Err(ParseError::BadValue { key: "READY".into(), value: "yes".into() }),
///         Ok(Message::Ready),
///     ]
/// );
/// ```
pub fn parse(text: &[u8]) -> Vec<Result<Message, ParseError>> {
    text.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

impl fmt::Display for Message {
    /// Formats the message as one `KEY=VALUE` line, without a newline.
    /// Newlines inside a status are replaced by spaces so that a message
    /// always stays one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Ready => f.write_str("READY=1"),
            Message::Stopping => f.write_str("STOPPING=1"),
            Message::Reloading => f.write_str("RELOADING=1"),
            Message::Reload => f.write_str("DEVSUP_RELOAD=1"),
            Message::Status(s) => write!(f, "STATUS={}", s.replace('\n', " ")),
            Message::MainPid(pid) => write!(f, "MAINPID={pid}"),
            Message::Other { key, value } => write!(f, "{key}={}", value.replace('\n', " ")),
        }
    }
}

/// Formats messages as newline-terminated lines, ready to send. A newline
/// inside a value becomes a space, so that each message stays one line.
///
/// ```
/// use devsup_protocol::{Message, format};
///
/// let text = format(&[Message::Status("two\nlines".into()), Message::Ready]);
/// assert_eq!(text, "STATUS=two lines\nREADY=1\n");
/// ```
pub fn format(messages: &[Message]) -> String {
    messages.iter().map(|m| format!("{m}\n")).collect()
}

/// Sends messages to the supervisor.
///
/// Returns `Ok(true)` if they were sent, `Ok(false)` if this process runs
/// under neither devsup nor systemd (so there is nobody to tell). A
/// [`READY_FD_ENV`] whose fd is not open counts as unset, so the messages
/// go to [`NOTIFY_SOCKET_ENV`] if that is set.
///
/// The example stands in for devsup with a socket pair, named in the
/// environment as devsup names its end, and reads what the server sent:
///
/// ```
/// # #[cfg(unix)]
/// # fn main() -> std::io::Result<()> {
/// use std::io::Read;
/// use std::os::fd::AsRawFd;
/// use std::os::unix::net::UnixStream;
///
/// use devsup_protocol::{Message, READY_FD_ENV, notify};
///
/// // Run on its own: there is nobody to tell, which is not an error.
/// # // SAFETY: no other thread reads the environment.
/// # unsafe { std::env::remove_var(READY_FD_ENV) };
/// # // SAFETY: as above.
/// # unsafe { std::env::remove_var(devsup_protocol::NOTIFY_SOCKET_ENV) };
/// assert!(!notify(&[Message::Ready])?);
///
/// // Under devsup (here a stand-in): the messages go down the ready channel.
/// let (mut devsup, channel) = UnixStream::pair()?;
/// // SAFETY: no other thread reads the environment.
/// unsafe { std::env::set_var(READY_FD_ENV, channel.as_raw_fd().to_string()) };
/// assert!(notify(&[Message::Status("warming up".into()), Message::Ready])?);
///
/// drop(channel); // so that devsup's read below ends
/// let mut got = String::new();
/// devsup.read_to_string(&mut got)?;
/// assert_eq!(got, "STATUS=warming up\nREADY=1\n");
/// # Ok(())
/// # }
/// # #[cfg(not(unix))]
/// # fn main() {}
/// ```
pub fn notify(messages: &[Message]) -> io::Result<bool> {
    let text = format(messages);
    #[cfg(unix)]
    return unix::send(text.as_bytes());
    #[cfg(windows)]
    return windows::send(text.as_bytes());
    #[cfg(not(any(unix, windows)))]
    {
        let _ = text;
        Ok(false)
    }
}

/// Tells devsup (or systemd) that this server accepts connections, so the
/// previous generation can be drained. Call it once, after the listener is
/// set up.
///
/// In the example a socket pair stands in for devsup (hidden lines, as
/// [`notify`] shows them), so it runs, and checks the line devsup reads.
///
/// ```
/// # #[cfg(unix)]
/// # fn main() -> std::io::Result<()> {
/// # // A stand-in for devsup's ready channel, as in `notify`'s example.
/// # let (mut devsup, channel) = std::os::unix::net::UnixStream::pair()?;
/// # let fd = std::os::fd::AsRawFd::as_raw_fd(&channel).to_string();
/// # // SAFETY: no other thread reads the environment.
/// # unsafe { std::env::set_var(devsup_protocol::READY_FD_ENV, fd) };
/// // The listener is set up: devsup may drain the previous generation.
/// let told = devsup_protocol::notify_ready()?;
/// assert!(told, "under devsup (or systemd); false when run on its own");
/// # drop(channel);
/// # let mut got = String::new();
/// # std::io::Read::read_to_string(&mut devsup, &mut got)?;
/// # assert_eq!(got, "READY=1\n");
/// # Ok(())
/// # }
/// # #[cfg(not(unix))]
/// # fn main() {}
/// ```
pub fn notify_ready() -> io::Result<bool> {
    notify(&[Message::Ready])
}

/// Sends a free-text status line, which devsup logs.
///
/// In the example a socket pair stands in for devsup (hidden lines, as
/// [`notify`] shows them), so it runs, and checks the line devsup reads.
///
/// ```
/// # #[cfg(unix)]
/// # fn main() -> std::io::Result<()> {
/// # // A stand-in for devsup's ready channel, as in `notify`'s example.
/// # let (mut devsup, channel) = std::os::unix::net::UnixStream::pair()?;
/// # let fd = std::os::fd::AsRawFd::as_raw_fd(&channel).to_string();
/// # // SAFETY: no other thread reads the environment.
/// # unsafe { std::env::set_var(devsup_protocol::READY_FD_ENV, fd) };
/// devsup_protocol::notify_status("migrating the database")?;
/// # drop(channel);
/// # let mut got = String::new();
/// # std::io::Read::read_to_string(&mut devsup, &mut got)?;
/// # assert_eq!(got, "STATUS=migrating the database\n");
/// # Ok(())
/// # }
/// # #[cfg(not(unix))]
/// # fn main() {}
/// ```
pub fn notify_status(status: &str) -> io::Result<bool> {
    notify(&[Message::Status(status.to_owned())])
}

/// Tells the supervisor that this server is shutting down.
///
/// In the example a socket pair stands in for devsup (hidden lines, as
/// [`notify`] shows them), so it runs, and checks the line devsup reads.
///
/// ```
/// # #[cfg(unix)]
/// # fn main() -> std::io::Result<()> {
/// # // A stand-in for devsup's ready channel, as in `notify`'s example.
/// # let (mut devsup, channel) = std::os::unix::net::UnixStream::pair()?;
/// # let fd = std::os::fd::AsRawFd::as_raw_fd(&channel).to_string();
/// # // SAFETY: no other thread reads the environment.
/// # unsafe { std::env::set_var(devsup_protocol::READY_FD_ENV, fd) };
/// // The drain signal arrived: say so, then drain.
/// devsup_protocol::notify_stopping()?;
/// # drop(channel);
/// # let mut got = String::new();
/// # std::io::Read::read_to_string(&mut devsup, &mut got)?;
/// # assert_eq!(got, "STOPPING=1\n");
/// # Ok(())
/// # }
/// # #[cfg(not(unix))]
/// # fn main() {}
/// ```
pub fn notify_stopping() -> io::Result<bool> {
    notify(&[Message::Stopping])
}

/// Asks devsup to start a new generation of this server. Ignored by systemd.
///
/// In the example a socket pair stands in for devsup (hidden lines, as
/// [`notify`] shows them), so it runs, and checks the line devsup reads.
///
/// ```
/// # #[cfg(unix)]
/// # fn main() -> std::io::Result<()> {
/// # // A stand-in for devsup's ready channel, as in `notify`'s example.
/// # let (mut devsup, channel) = std::os::unix::net::UnixStream::pair()?;
/// # let fd = std::os::fd::AsRawFd::as_raw_fd(&channel).to_string();
/// # // SAFETY: no other thread reads the environment.
/// # unsafe { std::env::set_var(devsup_protocol::READY_FD_ENV, fd) };
/// // Say the server saw its own configuration change:
/// devsup_protocol::request_reload()?;
/// # drop(channel);
/// # let mut got = String::new();
/// # std::io::Read::read_to_string(&mut devsup, &mut got)?;
/// # assert_eq!(got, "DEVSUP_RELOAD=1\n");
/// # Ok(())
/// # }
/// # #[cfg(not(unix))]
/// # fn main() {}
/// ```
pub fn request_reload() -> io::Result<bool> {
    notify(&[Message::Reload])
}

/// The `<script>` tag that loads devsup's live-reload script, when devsup
/// runs with `--livereload` ([`LIVERELOAD_ENV`] set); `None` otherwise.
/// A server without a framework layer puts it in its pages itself.
///
/// ```
/// use devsup_protocol::{LIVERELOAD_ENV, livereload_script_tag};
///
/// # // SAFETY: no other thread reads the environment.
/// # unsafe { std::env::remove_var(LIVERELOAD_ENV) };
/// // Not under devsup --livereload: no tag.
/// assert_eq!(livereload_script_tag(), None);
///
/// // devsup --livereload sets the variable; here the example does.
/// // SAFETY: no other thread reads the environment.
/// unsafe { std::env::set_var(LIVERELOAD_ENV, "http://127.0.0.1:35729") };
/// assert_eq!(
///     livereload_script_tag().as_deref(),
///     Some(r#"<script src="http://127.0.0.1:35729/devsup-livereload.js" defer></script>"#)
/// );
/// ```
pub fn livereload_script_tag() -> Option<String> {
    let base = std::env::var(LIVERELOAD_ENV).ok()?;
    let base = base.trim().trim_end_matches('/');
    (!base.is_empty()).then(|| script_tag(base))
}

/// The tag for a live-reload endpoint at `base`.
///
/// ```
/// assert_eq!(
///     devsup_protocol::script_tag("http://127.0.0.1:35729/"),
///     r#"<script src="http://127.0.0.1:35729/devsup-livereload.js" defer></script>"#
/// );
/// ```
pub fn script_tag(base: &str) -> String {
    let base = base.trim_end_matches('/');
    format!("<script src=\"{base}{LIVERELOAD_SCRIPT_PATH}\" defer></script>")
}

/// The generation number devsup gave this process, if it runs under devsup.
///
/// ```
/// use devsup_protocol::{GENERATION_ENV, generation};
///
/// # // SAFETY: no other thread reads the environment.
/// # unsafe { std::env::remove_var(GENERATION_ENV) };
/// // Run on its own:
/// assert_eq!(generation(), None);
///
/// // The third generation devsup started (devsup sets the variable; here
/// // the example does):
/// // SAFETY: no other thread reads the environment.
/// unsafe { std::env::set_var(GENERATION_ENV, "3") };
/// assert_eq!(generation(), Some(3));
/// ```
pub fn generation() -> Option<u64> {
    std::env::var(GENERATION_ENV).ok()?.parse().ok()
}

#[cfg(test)]
mod props;
pub mod systemfd;
#[cfg(unix)]
mod unix;
#[cfg(windows)]
mod windows;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_keys() {
        let got = parse(b"READY=1\nSTATUS=listening on 8080\nDEVSUP_RELOAD=1\nMAINPID=42\nSTOPPING=1\nRELOADING=1\n");
        assert_eq!(
            got,
            vec![
                Ok(Message::Ready),
                Ok(Message::Status("listening on 8080".into())),
                Ok(Message::Reload),
                Ok(Message::MainPid(42)),
                Ok(Message::Stopping),
                Ok(Message::Reloading),
            ]
        );
    }

    #[test]
    fn unknown_keys_are_kept_as_other() {
        assert_eq!(
            parse(b"WATCHDOG=1"),
            vec![Ok(Message::Other {
                key: "WATCHDOG".into(),
                value: "1".into()
            })]
        );
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        assert_eq!(
            parse(b"hello"),
            vec![Err(ParseError::NoEquals("hello".into()))]
        );
        assert_eq!(parse(b"=1"), vec![Err(ParseError::BadKey("".into()))]);
        assert_eq!(
            parse(b"ready=1"),
            vec![Err(ParseError::BadKey("ready".into()))]
        );
        assert!(matches!(
            parse(b"READY=yes")[0],
            Err(ParseError::BadValue { .. })
        ));
        assert!(matches!(
            parse(b"MAINPID=0")[0],
            Err(ParseError::BadValue { .. })
        ));
        assert_eq!(parse(b"\xff\xfe=1"), vec![Err(ParseError::NotUtf8)]);
        let long = vec![b'A'; MAX_LINE + 1];
        assert_eq!(
            parse_line(&long),
            Some(Err(ParseError::TooLong(MAX_LINE + 1)))
        );
    }

    #[test]
    fn empty_lines_and_crlf_are_tolerated() {
        assert_eq!(parse(b"\n\nREADY=1\r\n\n"), vec![Ok(Message::Ready)]);
        assert_eq!(parse(b""), vec![]);
    }

    #[test]
    fn format_round_trips_through_parse() {
        let msgs = vec![
            Message::Ready,
            Message::Status("a\nb".into()),
            Message::Reload,
            Message::MainPid(7),
        ];
        let text = format(&msgs);
        assert_eq!(text, "READY=1\nSTATUS=a b\nDEVSUP_RELOAD=1\nMAINPID=7\n");
        let back: Vec<_> = parse(text.as_bytes())
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(back[0], Message::Ready);
        assert_eq!(back[1], Message::Status("a b".into()));
    }

    #[test]
    fn script_tag_names_the_script_under_the_base_url() {
        assert_eq!(
            script_tag("http://127.0.0.1:35729/"),
            "<script src=\"http://127.0.0.1:35729/devsup-livereload.js\" defer></script>"
        );
    }

    #[cfg(unix)]
    #[test]
    fn notify_writes_to_the_ready_fd() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        // SAFETY: tests in this module that touch the environment run only here.
        unsafe { std::env::set_var(READY_FD_ENV, theirs.as_raw_fd().to_string()) };
        assert!(notify_ready().unwrap());
        assert!(request_reload().unwrap());
        // An fd that is not a socket or pipe is never written to.
        let file = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: as above.
        unsafe { std::env::set_var(READY_FD_ENV, file.as_raw_fd().to_string()) };
        let err = notify_ready().unwrap_err();
        assert!(err.to_string().contains("not a socket or a pipe"), "{err}");
        // SAFETY: as above.
        unsafe { std::env::remove_var(READY_FD_ENV) };
        drop(theirs);
        let mut got = String::new();
        ours.read_to_string(&mut got).unwrap();
        assert_eq!(got, "READY=1\nDEVSUP_RELOAD=1\n");
    }
}
