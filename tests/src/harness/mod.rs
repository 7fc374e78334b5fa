//! Build and run the real `devsup` and `devsup-server` binaries.
//!
//! [`binaries`] builds both once per process, in the profile the calling
//! test or benchmark was built in. [`Devsup`] runs one supervisor with its
//! stderr collected line by line, so a test waits for the log line that
//! says a step happened instead of sleeping, and a failing test shows the
//! whole log (every line is echoed to the test's stderr as `[devsup] ...`).
//!
//! Every process started here is ended by pid: dropping a [`Devsup`]
//! SIGKILLs it if it still runs, reaps it, and then SIGKILLs the process
//! group of any generation that outlived it.
//!
//! - `log`: how the log is collected; [`LineMatch`] and [`event`], what a
//!   test waits for in it.
//! - `devsup`: [`Devsup`] and its builder, and the steps many tests share
//!   ([`stop_cleanly`], [`forking_generation`]).
//! - `terminal`: [`OnTerminal`], a child on a pseudo-terminal in a
//!   developer's terminal environment.
//! - `process`: acting on a pid ([`pid_alive`], [`kill`], [`KillOnDrop`],
//!   [`inherit_fds`]); reading `/proc` is [`crate::procfs`].

mod devsup;
mod log;
mod process;
mod terminal;

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;

pub use self::devsup::{Devsup, DevsupBuilder, forking_generation, stop_cleanly};
pub use self::log::{LineMatch, event};
pub use self::process::{KillOnDrop, MAX_INHERITED, inherit_fds, kill, pid_alive, process_state};
pub use self::terminal::OnTerminal;
pub use crate::procfs::open_fds;

/// A generous default for waiting on one step (a debug build on a busy
/// two-core machine can be slow to start).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Paths of the built binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `target/<profile>/devsup`.
    pub devsup: PathBuf,
    /// `target/<profile>/devsup-server`.
    pub server: PathBuf,
    /// Whether they are release builds.
    pub release: bool,
}

/// Builds `devsup` and `devsup-server` once per process (in release if the
/// running executable is in `target/release`) and returns their paths.
///
/// Runs `$CARGO build -p devsup -p devsup-server --bins`; panics if the
/// build fails.
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(build_binaries)
}

fn build_binaries() -> Binaries {
    let profile_dir = build_packages(&["devsup", "devsup-server"]);
    Binaries {
        devsup: profile_dir.join("devsup"),
        server: profile_dir.join("devsup-server"),
        release: profile_dir.file_name() == Some(OsStr::new("release")),
    }
}

/// Builds the binaries of the workspace `packages` with one
/// `$CARGO build -p ... --bins`, into the target directory and profile the
/// running test or benchmark was built in (release if it lives in
/// `target/release`), and returns that profile's directory, where the
/// binaries are. One build for several packages resolves one feature set
/// for the dependencies they share. Panics if the build fails.
pub fn build_packages(packages: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Tests run from target/<profile>/deps/, binaries from target/<profile>/.
    let mut profile_dir = exe.parent().expect("exe has a parent").to_path_buf();
    if profile_dir.file_name() == Some(OsStr::new("deps")) {
        profile_dir.pop();
    }
    let release = profile_dir.file_name() == Some(OsStr::new("release"));
    let target_dir = profile_dir.parent().expect("profile dir has a parent");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--bins");
    for package in packages {
        command.args(["-p", package]);
    }
    if release {
        command.arg("--release");
    }
    let started = Instant::now();
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
    eprintln!(
        "[harness] built {} ({}) in {:.1?}",
        packages.join(", "),
        if release { "release" } else { "debug" },
        started.elapsed()
    );
    profile_dir
}

/// Polls `condition` with a short back-off until it holds (`true`) or
/// `timeout` passes (`false`).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Whether nothing listens on `addr` (a fresh bind to it succeeds).
///
/// A snapshot: a child that another thread is spawning holds copies of
/// all our fds between its fork and its exec, so to assert that a port is
/// released use `wait_until(TIMEOUT, || port_is_free(addr))`.
pub fn port_is_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// A new temporary directory (give each test its own).
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// The workspace's root directory.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
}

/// The path of `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::Pid;

    #[test]
    fn process_utilities() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(pid_alive(pid));
        assert!(open_fds(pid).iter().any(|(fd, _)| *fd == 0));
        nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        // Unreaped, it is a zombie: dead for our purposes.
        assert!(wait_until(TIMEOUT, || !pid_alive(pid)));
        child.wait().unwrap();
        assert!(!pid_alive(pid));
        assert!(open_fds(pid).is_empty());
    }

    #[test]
    fn ports() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(!port_is_free(addr));
        drop(listener);
        // Not at once: `process_utilities` may be forking right now.
        assert!(wait_until(TIMEOUT, || port_is_free(addr)));
    }

    #[test]
    fn wait_until_times_out() {
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(30), || false));
        assert!(start.elapsed() >= Duration::from_millis(30));
        let mut n = 0;
        assert!(wait_until(TIMEOUT, || {
            n += 1;
            n == 3
        }));
    }

    #[test]
    fn line_matchers() {
        assert!("ready".is_match("gen=1 ready in 3ms"));
        assert!(String::from("gen=1").is_match("gen=1 ready in 3ms"));
        assert!((|l: &str| l.ends_with("3ms")).is_match("gen=1 ready in 3ms"));
        assert!(event(1, "ready").is_match("gen=1 ready in 3ms"));
        assert!(!event(2, "ready").is_match("gen=1 draining 3us after gen=2 ready"));
    }
}
