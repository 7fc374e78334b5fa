//! A small exact HTTP/1.1 client on `std::net::TcpStream`, and the
//! incremental response parser it shares with the [load generator](crate::load).
//!
//! Only what the tests need: `GET`, `Content-Length`, chunked and
//! close-delimited bodies, keep-alive. Nothing is retried or hidden: an
//! error is the error the socket reported.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long the synchronous client waits for a connect or a read.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names lowercased, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    /// The body (decoded from chunked), lossily as UTF-8.
    pub body: String,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the server says it closes the connection after this
    /// response (`Connection: close`).
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    /// `(generation, pid)` from the reference server's body
    /// (`gen=N pid=P ...`).
    pub fn gen_pid(&self) -> Option<(u64, i32)> {
        parse_body(&self.body)
    }

    /// The generation that answered, from the body.
    pub fn generation(&self) -> Option<u64> {
        self.gen_pid().map(|(g, _)| g)
    }

    /// The pid that answered, from the body.
    pub fn pid(&self) -> Option<i32> {
        self.gen_pid().map(|(_, p)| p)
    }
}

/// `(generation, pid)` from a body starting `gen=N pid=P`.
pub fn parse_body(body: &str) -> Option<(u64, i32)> {
    let mut words = body.split_whitespace();
    let generation = words.next()?.strip_prefix("gen=")?.parse().ok()?;
    let pid = words.next()?.strip_prefix("pid=")?.parse().ok()?;
    Some((generation, pid))
}

/// The bytes of `GET path HTTP/1.1`, with `Connection: close` when
/// `close`.
pub fn request(addr: SocketAddr, path: &str, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{connection}\r\n").into_bytes()
}

/// Result of feeding bytes to [`parse_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A whole response, and how many bytes of the buffer it used.
    Complete(Response, usize),
}

/// Parses one response from the start of `buf`. `eof` says the peer has
/// closed, which completes a body that has neither length nor chunking.
/// Malformed input is an `InvalidData` error.
pub fn parse_response(buf: &[u8], eof: bool) -> io::Result<Parsed> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err(invalid("response head longer than 64 KiB"));
        }
        return Ok(Parsed::Incomplete);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| invalid("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("bad status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut response = Response {
        status,
        headers,
        body: String::new(),
    };
    let body_start = head_end + 4;
    let rest = &buf[body_start..];

    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Parsed::Complete(response, body_start));
    }
    if chunked {
        return match parse_chunked(rest)? {
            Some((body, used)) => {
                response.body = String::from_utf8_lossy(&body).into_owned();
                Ok(Parsed::Complete(response, body_start + used))
            }
            None => Ok(Parsed::Incomplete),
        };
    }
    if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid(format!("bad content-length {length:?}")))?;
        if rest.len() < length {
            return Ok(Parsed::Incomplete);
        }
        response.body = String::from_utf8_lossy(&rest[..length]).into_owned();
        return Ok(Parsed::Complete(response, body_start + length));
    }
    if !eof {
        return Ok(Parsed::Incomplete);
    }
    response.body = String::from_utf8_lossy(rest).into_owned();
    Ok(Parsed::Complete(response, buf.len()))
}

/// Decodes a chunked body: `Some((body, bytes used))` once the last chunk
/// and trailers are in.
fn parse_chunked(mut buf: &[u8]) -> io::Result<Option<(Vec<u8>, usize)>> {
    let total = buf.len();
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(buf, b"\r\n") else {
            return Ok(None);
        };
        let size_line =
            std::str::from_utf8(&buf[..line_end]).map_err(|_| invalid("chunk size not UTF-8"))?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
        buf = &buf[line_end + 2..];
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(end) = find(buf, b"\r\n") else {
                    return Ok(None);
                };
                buf = &buf[end + 2..];
                if end == 0 {
                    return Ok(Some((body, total - buf.len())));
                }
            }
        }
        if buf.len() < size + 2 {
            return Ok(None);
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// `GET path` on a new connection with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let mut conn = Conn::connect(addr)?;
    conn.send(path, true)?;
    conn.recv()
}

/// A keep-alive HTTP/1.1 connection.
///
/// [`Conn::get`] is one request and its response; [`Conn::send`] and
/// [`Conn::recv`] split it, to hold a request in flight while something
/// else happens.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
    eof: bool,
}

impl Conn {
    /// Connects with [`DEFAULT_TIMEOUT`] for the connect and each read.
    pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
        Conn::connect_timeout(addr, DEFAULT_TIMEOUT)
    }

    /// Connects with `timeout` for the connect and each read.
    pub fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            addr,
            buf: Vec::new(),
            eof: false,
        })
    }

    /// The underlying socket (to set options, or shut it down).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends one keep-alive `GET path` and reads its response.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send(path, false)?;
        self.recv()
    }

    /// Writes `GET path`, with `Connection: close` when `close`.
    pub fn send(&mut self, path: &str, close: bool) -> io::Result<()> {
        self.stream.write_all(&request(self.addr, path, close))
    }

    /// Reads one response. A close before any byte of it is an
    /// `UnexpectedEof` error saying so; a close in the middle of it too.
    pub fn recv(&mut self) -> io::Result<Response> {
        let mut chunk = [0u8; 8192];
        loop {
            if !self.buf.is_empty() || self.eof {
                if let Parsed::Complete(response, used) = parse_response(&self.buf, self.eof)? {
                    self.buf.drain(..used);
                    return Ok(response);
                }
            }
            if self.eof {
                let what = if self.buf.is_empty() {
                    "connection closed before any byte of the response"
                } else {
                    "connection closed in the middle of the response"
                };
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, what));
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                self.eof = true;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits up to `timeout` for the server to close the connection:
    /// `Ok(true)` on a clean close with nothing unread, `Ok(false)` if it
    /// stays open.
    pub fn wait_closed(&mut self, timeout: Duration) -> io::Result<bool> {
        if self.eof {
            return Ok(self.buf.is_empty());
        }
        self.stream.set_read_timeout(Some(timeout))?;
        let mut chunk = [0u8; 1024];
        let result = match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                Ok(self.buf.is_empty())
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(false)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        };
        self.stream.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn complete(buf: &[u8], eof: bool) -> (Response, usize) {
        match parse_response(buf, eof).unwrap() {
            Parsed::Complete(r, used) => (r, used),
            Parsed::Incomplete => panic!("incomplete: {:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn content_length() {
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-Generation: 3\r\n\r\ngen=3 pid=7\nNEXT";
        let (r, used) = complete(raw, false);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-generation"), Some("3"));
        assert_eq!(r.header("X-Generation"), Some("3"));
        assert_eq!(r.body, "gen=3 pid=7\n");
        assert_eq!(r.gen_pid(), Some((3, 7)));
        assert_eq!(used, raw.len() - 4);
        assert!(!r.closes());
        // Every strict prefix is incomplete.
        for end in 0..used {
            assert_eq!(
                parse_response(&raw[..end], false).unwrap(),
                Parsed::Incomplete
            );
        }
    }

    #[test]
    fn chunked() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                    6\r\ngen=1 \r\n6;ext=1\r\npid=2\n\r\n0\r\nTrailer: x\r\n\r\n";
        let (r, used) = complete(raw, false);
        assert_eq!(r.body, "gen=1 pid=2\n");
        assert_eq!(used, raw.len());
        assert!(r.closes());
        for end in 0..used {
            assert_eq!(
                parse_response(&raw[..end], false).unwrap(),
                Parsed::Incomplete
            );
        }
    }

    #[test]
    fn close_delimited_and_empty() {
        let raw = b"HTTP/1.0 200 OK\r\n\r\nbody until eof";
        assert_eq!(parse_response(raw, false).unwrap(), Parsed::Incomplete);
        assert_eq!(complete(raw, true).0.body, "body until eof");
        let (r, used) = complete(b"HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!((r.status, r.body.as_str(), used), (204, "", 27));
    }

    #[test]
    fn malformed() {
        for raw in [
            &b"SMTP 220 hello\r\n\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let err = parse_response(raw, false).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{raw:?}");
        }
    }

    #[test]
    fn bodies() {
        assert_eq!(parse_body("gen=2 pid=99 slept=10\n"), Some((2, 99)));
        assert_eq!(parse_body("gen=2\n"), None);
        assert_eq!(parse_body("hello"), None);
    }

    /// A one-connection server on 127.0.0.1:0 answering with `script`.
    fn serve(script: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || script(listener.accept().unwrap().0));
        addr
    }

    fn read_request(stream: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut byte = [0u8];
        while !buf.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).unwrap() == 0 {
                break;
            }
            buf.push(byte[0]);
        }
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn keep_alive_then_close() {
        let addr = serve(|mut s| {
            let first = read_request(&mut s);
            assert!(first.starts_with("GET /a HTTP/1.1\r\n"), "{first}");
            assert!(!first.contains("Connection: close"));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            read_request(&mut s);
            s.write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
        });
        let mut conn = Conn::connect(addr).unwrap();
        assert_eq!(conn.get("/a").unwrap().body, "ok");
        let r = conn.get("/b").unwrap();
        assert_eq!(r.status, 503);
        assert!(r.closes());
        assert!(conn.wait_closed(DEFAULT_TIMEOUT).unwrap());
    }

    #[test]
    fn eof_before_response() {
        let addr = serve(|mut s| {
            read_request(&mut s);
        });
        let err = get(addr, "/").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("before any byte"), "{err}");
    }
}
