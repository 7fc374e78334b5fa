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

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::devlog;

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

/// What a [`Devsup`] waits for in its log: a substring (`&str`, `String`)
/// or a predicate (`|line: &str| ...`).
pub trait LineMatch {
    /// Whether `line` matches.
    fn is_match(&self, line: &str) -> bool;
    /// How to name the pattern in a timeout message.
    fn describe(&self) -> String;
}

impl LineMatch for &str {
    fn is_match(&self, line: &str) -> bool {
        line.contains(*self)
    }
    fn describe(&self) -> String {
        format!("a line containing {self:?}")
    }
}

impl LineMatch for String {
    fn is_match(&self, line: &str) -> bool {
        line.contains(self.as_str())
    }
    fn describe(&self) -> String {
        self.as_str().describe()
    }
}

impl<F: Fn(&str) -> bool> LineMatch for F {
    fn is_match(&self, line: &str) -> bool {
        self(line)
    }
    fn describe(&self) -> String {
        "a line matching the predicate".into()
    }
}

/// Matches the log line of `word` for generation `generation`; see
/// [`devlog::is_event`].
pub fn event(generation: u64, word: &str) -> impl LineMatch + '_ {
    struct Event<'a>(u64, &'a str);
    impl LineMatch for Event<'_> {
        fn is_match(&self, line: &str) -> bool {
            devlog::is_event(line, self.0, self.1)
        }
        fn describe(&self) -> String {
            format!("the line \"gen={} {} ...\"", self.0, self.1)
        }
    }
    Event(generation, word)
}

#[derive(Debug, Default)]
struct LogState {
    lines: Vec<String>,
    stdout: Vec<String>,
    /// stderr reached end of file: no more lines will come.
    closed: bool,
}

#[derive(Debug, Default)]
struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

/// Spawns a thread that reads `pipe` line by line into `log` (stderr, or
/// stdout when `stdout`), echoing each line to our stderr.
fn collect(pipe: impl Read + Send + 'static, log: Arc<Log>, stdout: bool, echo: bool) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let raw = String::from_utf8_lossy(&buf);
            let line = devlog::strip_ansi(raw.trim_end_matches(['\n', '\r']));
            if echo && stdout {
                eprintln!("[devsup stdout] {line}");
            } else if echo {
                eprintln!("[devsup] {line}");
            }
            let mut state = log.state.lock().unwrap();
            if stdout {
                state.stdout.push(line);
            } else {
                state.lines.push(line);
            }
            log.changed.notify_all();
        }
        if !stdout {
            log.state.lock().unwrap().closed = true;
            log.changed.notify_all();
        }
    });
}

/// How to start a [`Devsup`]; made by [`Devsup::builder`].
#[derive(Debug)]
pub struct DevsupBuilder {
    cwd: PathBuf,
    port: Option<String>,
    args: Vec<OsString>,
    server: Option<OsString>,
    server_args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    echo: bool,
    stdin: Option<std::os::fd::OwnedFd>,
}

impl DevsupBuilder {
    /// Gives devsup this fd as stdin (a pty's slave, to test keys) instead
    /// of `/dev/null`.
    pub fn stdin(mut self, fd: std::os::fd::OwnedFd) -> Self {
        self.stdin = Some(fd);
        self
    }

    /// Whether to echo each log line to our stderr (default: yes, so a
    /// failing test shows the log).
    pub fn echo(mut self, echo: bool) -> Self {
        self.echo = echo;
        self
    }

    /// Adds one devsup option (before `--`).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().into());
        self
    }

    /// Adds devsup options (before `--`).
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().into()));
        self
    }

    /// Uses `--port PORT` instead of the default `--port 0`; `None` passes
    /// no `--port` at all.
    pub fn port(mut self, port: Option<&str>) -> Self {
        self.port = port.map(Into::into);
        self
    }

    /// Runs `server` instead of the reference `devsup-server`.
    pub fn server(mut self, server: impl AsRef<OsStr>) -> Self {
        self.server = Some(server.as_ref().into());
        self
    }

    /// Adds arguments for the server (after `--`).
    pub fn server_args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.server_args
            .extend(args.into_iter().map(|a| a.as_ref().into()));
        self
    }

    /// Sets an environment variable for devsup (and so its generations).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().into(), value.as_ref().into()));
        self
    }

    /// The full argument list: `[--port P] ARGS -- SERVER SERVER_ARGS`.
    pub fn command_args(&self) -> Vec<OsString> {
        let mut all = Vec::new();
        if let Some(port) = &self.port {
            all.push("--port".into());
            all.push(port.into());
        }
        all.extend(self.args.iter().cloned());
        all.push("--".into());
        let server = self
            .server
            .clone()
            .unwrap_or_else(|| binaries().server.clone().into());
        all.push(server);
        all.extend(self.server_args.iter().cloned());
        all
    }

    /// Starts devsup.
    pub fn spawn(self) -> Devsup {
        let args = self.command_args();
        let env: Vec<(&OsStr, &OsStr)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
            .collect();
        let stdin = self.stdin.map_or_else(Stdio::null, Stdio::from);
        Devsup::start(&self.cwd, &args, &env, self.echo, stdin)
    }
}

/// A running devsup whose stderr is collected line by line.
///
/// All methods take `&self`, so one thread can wait on the log while
/// another signals.
#[derive(Debug)]
pub struct Devsup {
    child: Mutex<Child>,
    pid: i32,
    status: Mutex<Option<ExitStatus>>,
    log: Arc<Log>,
    /// Index of the first line [`Devsup::wait_for_new`] looks at.
    cursor: Mutex<usize>,
    addr: OnceLock<SocketAddr>,
}

impl Devsup {
    /// A builder for `devsup --port 0 -- <devsup-server>` run in `cwd`
    /// (give each test its own temporary directory).
    pub fn builder(cwd: impl AsRef<Path>) -> DevsupBuilder {
        DevsupBuilder {
            cwd: cwd.as_ref().to_path_buf(),
            port: Some("0".into()),
            args: Vec::new(),
            server: None,
            server_args: Vec::new(),
            env: Vec::new(),
            echo: true,
            stdin: None,
        }
    }

    /// Starts the devsup binary with exactly `args`, in `cwd`, with `env`
    /// added: stdin null, stdout and stderr collected.
    pub fn spawn_raw<S: AsRef<OsStr>>(cwd: &Path, args: &[S], env: &[(&OsStr, &OsStr)]) -> Devsup {
        Devsup::start(cwd, args, env, true, Stdio::null())
    }

    fn start<S: AsRef<OsStr>>(
        cwd: &Path,
        args: &[S],
        env: &[(&OsStr, &OsStr)],
        echo: bool,
        stdin: Stdio,
    ) -> Devsup {
        let devsup = &binaries().devsup;
        let mut command = Command::new(devsup);
        command
            .args(args)
            .current_dir(cwd)
            // Plain lines even if devsup's subscriber would colour them.
            .env("NO_COLOR", "1")
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
        eprintln!("[harness] started devsup pid={}: {command:?}", child.id());
        let log = Arc::new(Log::default());
        collect(child.stderr.take().unwrap(), log.clone(), false, echo);
        collect(child.stdout.take().unwrap(), log.clone(), true, echo);
        Devsup {
            pid: child.id() as i32,
            child: Mutex::new(child),
            status: Mutex::new(None),
            log,
            cursor: Mutex::new(0),
            addr: OnceLock::new(),
        }
    }

    /// devsup's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Every stderr line so far (ANSI colours removed).
    pub fn lines(&self) -> Vec<String> {
        self.log.state.lock().unwrap().lines.clone()
    }

    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.log.state.lock().unwrap().stdout.clone()
    }

    /// How many stderr lines so far contain `substr`.
    pub fn count_lines(&self, substr: &str) -> usize {
        let state = self.log.state.lock().unwrap();
        state.lines.iter().filter(|l| l.contains(substr)).count()
    }

    /// How many stderr lines so far match `pattern`.
    pub fn count_matching(&self, pattern: impl LineMatch) -> usize {
        let state = self.log.state.lock().unwrap();
        state.lines.iter().filter(|l| pattern.is_match(l)).count()
    }

    /// The whole log, for assertion messages.
    pub fn log_text(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits for a line matching `pattern` anywhere in the log and returns
    /// it; later [`Devsup::wait_for_new`] calls look after it. Panics with
    /// the full log on timeout or if devsup's stderr closes first.
    pub fn wait_for_line(&self, pattern: impl LineMatch, timeout: Duration) -> String {
        self.wait_from(0, &pattern, timeout)
    }

    /// Like [`Devsup::wait_for_line`], but looks only at lines after the
    /// last match (or after [`Devsup::mark`]).
    pub fn wait_for_new(&self, pattern: impl LineMatch, timeout: Duration) -> String {
        let from = *self.cursor.lock().unwrap();
        self.wait_from(from, &pattern, timeout)
    }

    /// Waits for `gen=N WORD ...` (see [`event`]) anywhere in the log.
    pub fn wait_event(&self, generation: u64, word: &str, timeout: Duration) -> String {
        self.wait_for_line(event(generation, word), timeout)
    }

    /// Moves the cursor of [`Devsup::wait_for_new`] to the end of the log:
    /// call it before triggering something to wait only for what follows.
    /// Returns the number of lines so far.
    pub fn mark(&self) -> usize {
        let len = self.log.state.lock().unwrap().lines.len();
        *self.cursor.lock().unwrap() = len;
        len
    }

    fn wait_from(&self, from: usize, pattern: &dyn LineMatch, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut state = self.log.state.lock().unwrap();
        let mut next = from;
        loop {
            if let Some(i) = (next..state.lines.len()).find(|&i| pattern.is_match(&state.lines[i]))
            {
                let line = state.lines[i].clone();
                drop(state);
                *self.cursor.lock().unwrap() = i + 1;
                return line;
            }
            next = next.max(state.lines.len());
            let now = Instant::now();
            if state.closed || now >= deadline {
                let why = if state.closed {
                    "devsup's stderr closed"
                } else {
                    "timed out"
                };
                let log = state.lines.join("\n    ");
                drop(state);
                panic!(
                    "{why} after {timeout:?} waiting for {} (from line {from}); devsup log:\n    {log}",
                    pattern.describe(),
                );
            }
            state = self
                .log
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// The address devsup listens on, from its `listening on ADDR` line
    /// (waits up to [`TIMEOUT`] for it).
    pub fn addr(&self) -> SocketAddr {
        *self.addr.get_or_init(|| {
            let line =
                self.wait_for_line(|l: &str| devlog::parse_listen_addr(l).is_some(), TIMEOUT);
            devlog::parse_listen_addr(&line).unwrap()
        })
    }

    /// Every `gen=N spawned pid=P` so far, as generation → pid.
    pub fn generation_pids(&self) -> HashMap<u64, i32> {
        let state = self.log.state.lock().unwrap();
        state
            .lines
            .iter()
            .filter_map(|l| devlog::parse_spawned(l))
            .collect()
    }

    /// The pid of generation `generation`, waiting for its spawn line.
    pub fn generation_pid(&self, generation: u64, timeout: Duration) -> i32 {
        let line = self.wait_event(generation, "spawned", timeout);
        devlog::parse_spawned(&line).unwrap().1
    }

    /// Sends `signal` to devsup (panics if it cannot be delivered).
    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(Pid::from_raw(self.pid), signal)
            .unwrap_or_else(|e| panic!("kill({}, {signal}): {e}", self.pid));
    }

    /// Asks devsup to reload (SIGHUP).
    pub fn reload(&self) {
        self.signal(Signal::SIGHUP);
    }

    /// devsup's exit status if it has exited (reaping it), without waiting.
    pub fn try_exit_status(&self) -> Option<ExitStatus> {
        let mut status = self.status.lock().unwrap();
        if status.is_none() {
            *status = self.child.lock().unwrap().try_wait().expect("try_wait");
        }
        *status
    }

    /// Waits for devsup to exit and returns its status; panics with the
    /// full log on timeout.
    pub fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        if wait_until(timeout, || self.try_exit_status().is_some()) {
            return self.try_exit_status().unwrap();
        }
        panic!(
            "devsup pid={} still running after {timeout:?}; log:\n    {}",
            self.pid,
            self.lines().join("\n    ")
        );
    }

    /// SIGTERM, then [`Devsup::wait_exit`].
    pub fn terminate(&self, timeout: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit(timeout)
    }
}

impl Drop for Devsup {
    fn drop(&mut self) {
        if self.try_exit_status().is_none() {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            let _ = self.child.get_mut().unwrap().wait();
        }
        // Generations get a parent-death signal; give them time to act on
        // it, then end any that outlived devsup (a bug the tests report
        // elsewhere, not a reason to leak a process holding the port).
        let generations = self.generation_pids();
        let outlived = |pid: &&i32| pid_alive(**pid);
        if !wait_until(Duration::from_secs(5), || {
            generations.values().filter(outlived).count() == 0
        }) {
            for pid in generations.values().filter(outlived) {
                eprintln!("[harness] generation pid={pid} outlived devsup; SIGKILL to its group");
                let _ = nix::sys::signal::killpg(Pid::from_raw(*pid), Signal::SIGKILL);
                let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            wait_until(Duration::from_secs(5), || {
                generations.values().filter(outlived).count() == 0
            });
        }
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match nix::sys::signal::kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {}
        Err(_) => return false,
    }
    match process_state(pid) {
        Some(state) => state != 'Z' && state != 'X',
        // Gone between the two checks.
        None => false,
    }
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `Z`, ...).
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
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

/// The open fds of process `pid` and what each points to
/// (`/proc/<pid>/fd/N` link targets, e.g. `socket:[1234]`), sorted by fd.
pub fn open_fds(pid: i32) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<(i32, String)> = dir
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            // The fd may close between listing and reading.
            let target = std::fs::read_link(entry.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    fds.sort();
    fds
}

/// Whether nothing listens on `addr` (a fresh bind to it succeeds).
///
/// A snapshot: a child that another thread is spawning holds copies of
/// all our fds between its fork and its exec, so to assert that a port is
/// released use `wait_until(TIMEOUT, || port_is_free(addr))`.
pub fn port_is_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
