//! `devsup status`: what a running devsup is doing, without scraping its log.
//!
//! Every devsup folds its steps into a [`Status`] and serves it, as the
//! first line, to each client of its event sockets ([`super::events`]):
//! the `--events unix::PATH` socket if there is one, and always a status
//! socket in the runtime directory named after devsup's working directory
//! ([`default_socket`]), so `devsup status` run in the same directory
//! finds it. `devsup status` reads that line and prints it for people, or
//! as it is with `--json`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::events::Target;
use super::{Record, timestamp};
use crate::event::GenId;
use crate::step::Step;

/// How long `devsup status` waits for devsup's answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The last build's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LastBuild {
    /// `ok`, `failed`, `cancelled` or `stopped`.
    pub(crate) status: String,
    /// When it ended.
    pub(crate) finished: String,
    /// How long it took, in microseconds.
    pub(crate) duration_us: u64,
    /// The last step's exit status, if it exited.
    pub(crate) code: Option<i32>,
    /// The signal that ended the last step, if one did.
    pub(crate) signal: Option<String>,
    /// On failure, its last lines of output.
    pub(crate) output_tail: Option<Vec<String>>,
}

/// What devsup is doing: the `status` object of the event stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Status {
    /// devsup's pid.
    pub(crate) pid: u32,
    /// devsup's working directory.
    pub(crate) cwd: String,
    /// The sockets, as `NAME=ADDR`.
    pub(crate) listening: Vec<String>,
    /// The generation new connections belong to.
    pub(crate) active: Option<GenId>,
    /// Its pid.
    pub(crate) active_pid: Option<i32>,
    /// Since when it is active.
    pub(crate) active_since: Option<String>,
    /// A generation started beside the active one, not ready yet.
    pub(crate) starting: Option<GenId>,
    /// Every generation alive (starting, active, draining).
    pub(crate) live: Vec<GenId>,
    /// A build is running.
    pub(crate) building: bool,
    /// Since when.
    pub(crate) build_started: Option<String>,
    /// How the last build ended.
    pub(crate) last_build: Option<LastBuild>,
    /// devsup is shutting down.
    pub(crate) stopping: bool,
    #[serde(skip)]
    pids: BTreeMap<GenId, i32>,
}

impl Status {
    /// The state of a devsup that has not started anything yet.
    pub(crate) fn new() -> Status {
        Status {
            pid: std::process::id(),
            cwd: std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            ..Status::default()
        }
    }

    /// Takes one step into account.
    pub(crate) fn fold(&mut self, record: &Record) {
        let ts = || timestamp(record.at);
        match &record.step {
            Step::Listening { name, addr, .. } => self.listening.push(format!("{name}={addr}")),
            Step::Spawned {
                generation, pid, ..
            } => {
                self.live.push(*generation);
                self.pids.insert(*generation, *pid);
                if self.active == Some(*generation) {
                    self.active_pid = Some(*pid);
                } else {
                    self.starting = Some(*generation);
                }
            }
            Step::Active { generation, .. } => {
                self.active = Some(*generation);
                self.active_pid = self.pids.get(generation).copied();
                self.active_since = Some(ts());
                if self.starting == Some(*generation) {
                    self.starting = None;
                }
            }
            Step::Draining { generation, .. } => self.leave(*generation),
            Step::SpawnFailed { generation, .. } | Step::Exited { generation, .. } => {
                self.leave(*generation);
                self.live.retain(|g| g != generation);
                self.pids.remove(generation);
            }
            Step::BuildStarted { step, .. } => {
                if *step == 1 || !self.building {
                    self.build_started = Some(ts());
                }
                self.building = true;
            }
            Step::BuildFinished {
                status,
                code,
                signal,
                duration_us,
                output_tail,
                ..
            } => {
                self.building = false;
                self.build_started = None;
                self.last_build = Some(LastBuild {
                    status: status.word().to_owned(),
                    finished: ts(),
                    duration_us: *duration_us,
                    code: *code,
                    signal: signal.clone(),
                    output_tail: output_tail.clone(),
                });
            }
            Step::Shutdown { .. } => self.stopping = true,
            Step::Trigger { .. }
            | Step::Coalesced { .. }
            | Step::Ready { .. }
            | Step::Killed { .. }
            | Step::Signalled { .. }
            | Step::Stopped { .. } => {}
            // The log's alone: never published.
            _ => {}
        }
    }

    fn leave(&mut self, generation: GenId) {
        if self.active == Some(generation) {
            self.active = None;
            self.active_pid = None;
            self.active_since = None;
        }
        if self.starting == Some(generation) {
            self.starting = None;
        }
    }

    /// The status for people, several lines.
    pub(crate) fn human(&self, now: SystemTime) -> String {
        use std::fmt::Write;
        let ago = |ts: &str| {
            humantime::parse_rfc3339(ts)
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .map(|d| format!(" ({} ago)", crate::log::ms(d)))
                .unwrap_or_default()
        };
        let mut out = format!("devsup pid={} in {}", self.pid, self.cwd);
        if !self.listening.is_empty() {
            let _ = write!(out, ", listening on {}", self.listening.join(" "));
        }
        if self.stopping {
            out.push_str(" (shutting down)");
        }
        out.push('\n');
        match (self.active, self.active_pid, &self.active_since) {
            (Some(g), pid, since) => {
                let pid = pid.map(|p| format!(" pid={p}")).unwrap_or_default();
                let since = since
                    .as_deref()
                    .map(|s| format!(" since {s}{}", ago(s)))
                    .unwrap_or_default();
                let _ = writeln!(out, "active: gen={g}{pid}{since}");
            }
            _ => out.push_str("active: none (no generation is serving)\n"),
        }
        if let Some(g) = self.starting {
            let _ = writeln!(out, "starting: gen={g}");
        }
        match &self.build_started {
            Some(since) if self.building => {
                let _ = writeln!(out, "build: running since {since}{}", ago(since));
            }
            _ => out.push_str("build: not running\n"),
        }
        match &self.last_build {
            None => out.push_str("last build: none\n"),
            Some(b) => {
                let how = match (b.code, &b.signal) {
                    (Some(c), _) if b.status != "ok" => format!(" (exit status {c})"),
                    (_, Some(s)) => format!(" ({s})"),
                    _ => String::new(),
                };
                let took = crate::log::ms(Duration::from_micros(b.duration_us));
                let _ = writeln!(
                    out,
                    "last build: {}{how} in {took}, finished {}{}",
                    b.status,
                    b.finished,
                    ago(&b.finished)
                );
                for line in b.output_tail.iter().flatten() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        out
    }
}

/// The status socket of a devsup running in `cwd`:
/// `$XDG_RUNTIME_DIR/devsup-status/<hash of cwd>.sock`, or under the
/// temporary directory as `devsup-status-<uid>/`.
pub(crate) fn default_socket(cwd: &Path) -> PathBuf {
    let cwd = cwd.canonicalize().unwrap_or_else(|_| cwd.to_owned());
    let dir = match std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
    {
        Some(runtime) => runtime.join("devsup-status"),
        None => std::env::temp_dir().join(format!("devsup-status-{}", nix::unistd::getuid())),
    };
    dir.join(format!(
        "{:016x}.sock",
        fnv1a(cwd.as_os_str().as_encoded_bytes())
    ))
}

/// Creates the status socket's directory (mode 0700), or checks that the
/// one there is this user's own and private.
pub(crate) fn prepare_dir(socket: &Path) -> anyhow::Result<()> {
    let Some(dir) = socket.parent() else {
        bail!("{} has no directory", socket.display());
    };
    match std::fs::create_dir(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    if let Some(why) = not_private(dir) {
        bail!("{why}");
    }
    Ok(())
}

/// Why `dir` is not a directory that only this user can use, if it is not
/// (for the status socket, which devsup makes only in such a directory).
fn not_private(dir: &Path) -> Option<String> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("cannot read {}: {e}", dir.display())),
    };
    let me = nix::unistd::getuid().as_raw();
    let why = if !meta.is_dir() {
        "is not a directory".to_owned()
    } else if meta.uid() != me {
        format!("belongs to uid {}, not to this user ({me})", meta.uid())
    } else if meta.mode() & 0o077 != 0 {
        format!(
            "is open to other users (mode {:o}), so devsup does not listen there",
            meta.mode() & 0o777
        )
    } else {
        return None;
    };
    Some(format!("{} {why}; remove it", dir.display()))
}

/// FNV-1a, 64 bits: a stable name for a directory.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Reads the status line from the event socket at `path`.
pub(crate) fn query(path: &Path) -> anyhow::Result<String> {
    let stream = UnixStream::connect(path).with_context(|| {
        // A devsup does not listen in a directory others could use: say
        // so, rather than that none runs.
        let dir = path.parent().filter(|d| d.exists());
        match dir.and_then(not_private) {
            Some(why) => format!(
                "no devsup answers at {}: {why}, then restart devsup",
                path.display()
            ),
            None => format!(
                "no devsup answers at {}: start devsup in this directory, or pass the socket of its --events unix::PATH",
                path.display()
            ),
        }
    })?;
    stream.set_read_timeout(Some(QUERY_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .with_context(|| format!("devsup at {} did not answer", path.display()))?;
    let line = line.trim_end().to_owned();
    if line.is_empty() {
        bail!("devsup at {} closed the connection", path.display());
    }
    Ok(line)
}

/// Where `devsup status` looks: `configured`, the `--events` given to it
/// (`explicit`) or else the `events` of the directory's config, if it is
/// `unix::PATH`; else the status socket of a devsup running in this
/// directory.
pub(crate) fn socket_for(
    cwd: &Path,
    configured: Option<String>,
    explicit: bool,
) -> anyhow::Result<PathBuf> {
    match configured.as_deref().map(str::parse::<Target>) {
        Some(Ok(Target::Socket(path))) => Ok(cwd.join(path)),
        Some(Ok(_)) if explicit => {
            bail!("devsup status needs a socket: pass --events unix::PATH")
        }
        Some(Ok(_)) | None => Ok(default_socket(cwd)),
        Some(Err(e)) => bail!("{e}"),
    }
}

/// `devsup status [--json]`: prints the status and returns the exit code.
pub(crate) fn run(path: &Path, json: bool, out: &mut dyn std::io::Write) -> anyhow::Result<u8> {
    let line = query(path)?;
    if json {
        writeln!(out, "{line}")?;
        return Ok(0);
    }
    let status: Status = serde_json::from_str(&line)
        .with_context(|| format!("devsup at {} sent an unexpected answer", path.display()))?;
    write!(out, "{}", status.human(SystemTime::now()))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Exit;
    use crate::step::{BuildStatus, Phase, Rule};

    fn fold(status: &mut Status, step: Step) {
        status.fold(&Record::now(step));
    }

    #[test]
    fn folds_a_handoff_and_a_failed_build() {
        let mut s = Status::new();
        fold(
            &mut s,
            Step::Spawned {
                generation: 1,
                pid: 10,
                after_trigger_us: None,
            },
        );
        fold(
            &mut s,
            Step::Active {
                generation: 1,
                replaces: None,
            },
        );
        assert_eq!(
            (s.active, s.active_pid, s.starting),
            (Some(1), Some(10), None)
        );
        fold(
            &mut s,
            Step::BuildStarted {
                step: 1,
                steps: 1,
                command: "make".into(),
            },
        );
        assert!(s.building && s.build_started.is_some());
        fold(
            &mut s,
            Step::build_finished(
                BuildStatus::Ok,
                0,
                1,
                Some(Exit::Code(0)),
                Duration::from_millis(5),
            ),
        );
        assert!(!s.building);
        fold(
            &mut s,
            Step::Spawned {
                generation: 2,
                pid: 20,
                after_trigger_us: Some(3),
            },
        );
        assert_eq!((s.active, s.starting), (Some(1), Some(2)));
        fold(
            &mut s,
            Step::Ready {
                generation: 2,
                rule: Rule::Notify,
                how: None,
                ready_us: 9,
            },
        );
        assert_eq!(
            (s.active, s.starting),
            (Some(1), Some(2)),
            "ready, not yet promoted"
        );
        fold(
            &mut s,
            Step::Active {
                generation: 2,
                replaces: Some(1),
            },
        );
        assert_eq!(
            (s.active, s.active_pid, s.starting),
            (Some(2), Some(20), None)
        );
        assert_eq!(s.live, [1, 2]);
        fold(
            &mut s,
            Step::exited(1, Exit::Code(0), Phase::Draining, Duration::ZERO, None),
        );
        assert_eq!(s.live, [2]);
        fold(
            &mut s,
            Step::build_finished(
                BuildStatus::Failed,
                0,
                1,
                Some(Exit::Code(2)),
                Duration::from_secs(1),
            ),
        );
        let b = s.last_build.clone().unwrap();
        assert_eq!((b.status.as_str(), b.code), ("failed", Some(2)));
        let text = s.human(SystemTime::now());
        assert!(text.contains("active: gen=2 pid=20 since"), "{text}");
        assert!(
            text.contains("last build: failed (exit status 2) in 1000ms"),
            "{text}"
        );
        // The wire form reads back.
        let json = super::super::status_json(&s);
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back.active, Some(2));
        assert_eq!(back.last_build, s.last_build);
    }

    #[test]
    fn the_default_socket_depends_on_the_directory_only() {
        let a = default_socket(Path::new("/a"));
        assert_eq!(a, default_socket(Path::new("/a")));
        assert_ne!(a, default_socket(Path::new("/b")));
        assert!(a.as_os_str().len() < 100, "fits sun_path: {}", a.display());
    }
}
