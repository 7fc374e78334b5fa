//! Where `--events` writes: parsed on every platform (devsup.toml and the
//! command line are), served where unix sockets exist.

use std::path::PathBuf;
use std::str::FromStr;

/// Where `--events` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `-`: stdout.
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
    /// `unix::PATH`: a socket devsup listens on.
    Socket(PathBuf),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        if s == "-" {
            return Ok(Target::Stdout);
        }
        if let Some(path) = s.strip_prefix("unix::") {
            if path.is_empty() {
                return Err(format!(
                    "empty socket path in {s:?}: write unix::PATH, e.g. unix::.devsup/events.sock"
                ));
            }
            return Ok(Target::Socket(path.into()));
        }
        if s.is_empty() {
            return Err("empty --events path: give a file, - for stdout, or unix::PATH".into());
        }
        Ok(Target::File(s.into()))
    }
}
