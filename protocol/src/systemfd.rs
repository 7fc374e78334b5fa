//! systemfd's Windows protocol for passing sockets, as systemfd 0.4 serves
//! it and listenfd 1 takes it (`ListenFd::from_env()` on Windows). Pure:
//! the wire format only, so it is tested on every platform; the Win32
//! calls are the supervisor's (`WSADuplicateSocketW`) and listenfd's
//! (`WSASocketW` with `FROM_PROTOCOL_INFO`).
//!
//! 1. The supervisor listens on a loopback TCP port and starts the server
//!    with [`SYSTEMFD_SOCKET_SERVER_ENV`](crate::SYSTEMFD_SOCKET_SERVER_ENV)
//!    set to its `IP:PORT` and
//!    [`SYSTEMFD_SOCKET_SECRET_ENV`](crate::SYSTEMFD_SOCKET_SECRET_ENV) to a
//!    random UUID (listenfd ignores a secret that is not one).
//! 2. The server connects, writes its [`hello`], `SECRET|PID` (the UUID
//!    hyphenated, lower case; the pid in decimal), and shuts down its
//!    write half.
//! 3. The supervisor reads to the end, checks the secret
//!    ([`parse_hello`]), and for each socket, in order, duplicates it for
//!    that pid (`WSADuplicateSocketW`) and writes the `WSAPROTOCOL_INFOW`
//!    it filled in, raw ([`PROTOCOL_INFO_LEN`] bytes each, back to back),
//!    then closes the connection.
//! 4. The server makes one socket of each with `WSASocketW`.

/// The size of one `WSAPROTOCOL_INFOW` on the wire: the struct's bytes as
/// Windows lays it out (x86 and x86_64 alike).
pub const PROTOCOL_INFO_LEN: usize = 628;

/// The longest hello the supervisor reads: a UUID, `|` and a pid are 47
/// bytes at most.
pub const MAX_HELLO: usize = 128;

/// What a server sends first: its secret and its pid.
///
/// ```
/// use devsup_protocol::systemfd::{hello, parse_hello};
///
/// let secret = "0f5b1c7e-3d2a-4b8e-9c41-6a7d2e9f0b13";
/// let sent = hello(secret, 4242);
/// assert_eq!(sent, "0f5b1c7e-3d2a-4b8e-9c41-6a7d2e9f0b13|4242");
/// // What the supervisor makes of it:
/// assert_eq!(parse_hello(sent.as_bytes(), secret), Ok(4242));
/// ```
pub fn hello(secret: &str, pid: u32) -> String {
    format!("{secret}|{pid}")
}

/// A hello the supervisor refuses (the connection is closed with no
/// socket sent).
///
/// Non-exhaustive: a new check on a hello adds a variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// More than [`MAX_HELLO`] bytes.
    #[error("hello of {0} bytes is longer than the {MAX_HELLO}-byte limit")]
    TooLong(usize),
    /// No `|` between secret and pid.
    #[error("hello has no SECRET|PID form")]
    NoPid,
    /// The secret is not the one this supervisor gave.
    #[error("hello has the wrong secret")]
    WrongSecret,
    /// The pid is not a positive decimal number.
    #[error("hello has a bad pid {0:?}")]
    BadPid(String),
}

/// Checks a hello against the secret this supervisor gave, and returns
/// the pid to duplicate the sockets for. The secret is compared without
/// regard to case (a UUID's hex digits), in time that does not depend on
/// where it differs.
///
/// ```
/// use devsup_protocol::systemfd::{HelloError, parse_hello};
///
/// let secret = "0f5b1c7e-3d2a-4b8e-9c41-6a7d2e9f0b13";
/// let upper = b"0F5B1C7E-3D2A-4B8E-9C41-6A7D2E9F0B13|4242";
/// assert_eq!(parse_hello(upper, secret), Ok(4242));
/// assert_eq!(parse_hello(b"not-the-secret|4242", secret), Err(HelloError::WrongSecret));
/// assert_eq!(parse_hello(secret.as_bytes(), secret), Err(HelloError::NoPid));
/// ```
pub fn parse_hello(hello: &[u8], secret: &str) -> Result<u32, HelloError> {
    if hello.len() > MAX_HELLO {
        return Err(HelloError::TooLong(hello.len()));
    }
    let split = hello.iter().position(|&b| b == b'|');
    let (given, pid) = match split {
        Some(at) => (&hello[..at], &hello[at + 1..]),
        None => return Err(HelloError::NoPid),
    };
    if !same_secret(given, secret.as_bytes()) {
        return Err(HelloError::WrongSecret);
    }
    let pid = String::from_utf8_lossy(pid);
    match pid.parse::<u32>() {
        Ok(n) if n > 0 && pid.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(HelloError::BadPid(pid.into_owned())),
    }
}

fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    if given.len() != secret.len() {
        return false;
    }
    let diff = given.iter().zip(secret).fold(0u8, |acc, (a, b)| {
        acc | (a.to_ascii_lowercase() ^ b.to_ascii_lowercase())
    });
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0f5b1c7e-3d2a-4b8e-9c41-6a7d2e9f0b13";

    #[test]
    fn a_hello_round_trips_to_its_pid() {
        assert_eq!(hello(SECRET, 4242), format!("{SECRET}|4242"));
        assert_eq!(
            parse_hello(hello(SECRET, 4242).as_bytes(), SECRET),
            Ok(4242)
        );
        // listenfd writes the UUID lower case; a secret given upper case
        // still matches it.
        let upper = SECRET.to_ascii_uppercase();
        assert_eq!(parse_hello(hello(SECRET, 7).as_bytes(), &upper), Ok(7));
    }

    #[test]
    fn a_bad_hello_is_refused_with_why() {
        let other = "0f5b1c7e-3d2a-4b8e-9c41-6a7d2e9f0b14";
        assert_eq!(
            parse_hello(hello(other, 1).as_bytes(), SECRET),
            Err(HelloError::WrongSecret)
        );
        assert_eq!(parse_hello(b"", SECRET), Err(HelloError::NoPid));
        assert_eq!(
            parse_hello(SECRET.as_bytes(), SECRET),
            Err(HelloError::NoPid)
        );
        assert_eq!(
            parse_hello(format!("{SECRET}|").as_bytes(), SECRET),
            Err(HelloError::BadPid(String::new()))
        );
        for pid in ["0", "-1", "+5", "12|3", "99999999999", "x"] {
            assert_eq!(
                parse_hello(format!("{SECRET}|{pid}").as_bytes(), SECRET),
                Err(HelloError::BadPid(pid.into())),
                "{pid}"
            );
        }
        let long = vec![b'a'; MAX_HELLO + 1];
        assert_eq!(
            parse_hello(&long, SECRET),
            Err(HelloError::TooLong(MAX_HELLO + 1))
        );
    }
}
