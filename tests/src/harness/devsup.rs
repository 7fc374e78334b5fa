//! [`Devsup`]: one running supervisor, its log collected line by line, and
//! the steps most tests share (stop it cleanly, run a forking generation).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::log::{Log, collect};
use super::{LineMatch, Signal, TIMEOUT, binaries, event, pid_alive, wait_until};
use crate::{devlog, http, procfs};

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
    launcher: Vec<OsString>,
    command: bool,
    env_remove: Vec<OsString>,
}

impl DevsupBuilder {
    /// Starts devsup through `launcher`: runs `LAUNCHER… DEVSUP ARGS…`, so
    /// that [`Devsup::pid`] is the launcher's (a job-control shell, in the
    /// keys tests). The launcher must end devsup when it is killed.
    pub fn launcher<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, launcher: I) -> Self {
        self.launcher = launcher.into_iter().map(|a| a.as_ref().into()).collect();
        self
    }

    /// Passes no `-- SERVER` at all: devsup infers the command (in a Cargo
    /// package).
    pub fn no_command(mut self) -> Self {
        self.command = false;
        self
    }

    /// Removes an environment variable for devsup (and its children).
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env_remove.push(key.as_ref().into());
        self
    }

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
        if !self.command {
            return all;
        }
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
        let removed: Vec<(&OsStr, &OsStr)> = (self.env_remove.iter())
            .map(|k| (k.as_os_str(), OsStr::new(REMOVE)))
            .collect();
        let env = [env, removed].concat();
        Devsup::start(&self.cwd, &self.launcher, &args, &env, self.echo, stdin)
    }
}

/// The value [`DevsupBuilder::env_remove`] passes for a variable to remove.
const REMOVE: &str = "\0remove";

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
            launcher: Vec::new(),
            command: true,
            env_remove: Vec::new(),
        }
    }

    /// Starts the devsup binary with exactly `args`, in `cwd`, with `env`
    /// added: stdin null, stdout and stderr collected.
    pub fn spawn_raw<S: AsRef<OsStr>>(cwd: &Path, args: &[S], env: &[(&OsStr, &OsStr)]) -> Devsup {
        Devsup::start(cwd, &[], args, env, true, Stdio::null())
    }

    fn start<S: AsRef<OsStr>>(
        cwd: &Path,
        launcher: &[OsString],
        args: &[S],
        env: &[(&OsStr, &OsStr)],
        echo: bool,
        stdin: Stdio,
    ) -> Devsup {
        let devsup = &binaries().devsup;
        let mut command = match launcher.split_first() {
            Some((program, launcher_args)) => {
                let mut command = Command::new(program);
                command.args(launcher_args).arg(devsup);
                command
            }
            None => Command::new(devsup),
        };
        command
            .args(args)
            .current_dir(cwd)
            // Plain lines even if devsup's subscriber would colour them.
            .env("NO_COLOR", "1")
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            if *value == OsStr::new(REMOVE) {
                command.env_remove(key);
            } else {
                command.env(key, value);
            }
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

    /// Every stderr line so far, each with the instant it reached the
    /// harness (a reader thread waits on the pipe, so within microseconds
    /// of devsup writing it).
    pub fn timed_lines(&self) -> Vec<(Instant, String)> {
        let state = self.log.state.lock().unwrap();
        (state.arrived.iter().copied())
            .zip(state.lines.iter().cloned())
            .collect()
    }

    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.log.state.lock().unwrap().stdout.clone()
    }

    /// Waits until devsup has written at least `count` stdout lines and
    /// returns every stdout line so far. stdout and stderr are read by two
    /// threads, so a stderr line does not tell what stdout holds yet.
    /// Panics with both on timeout.
    pub fn wait_stdout_lines(&self, count: usize, timeout: Duration) -> Vec<String> {
        let arrived = crate::harness::wait_until(timeout, || self.stdout_lines().len() >= count);
        let stdout = self.stdout_lines();
        assert!(
            arrived,
            "timed out waiting for {count} stdout lines; stdout:\n    {}\nstderr:\n    {}",
            stdout.join("\n    "),
            self.lines().join("\n    ")
        );
        stdout
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
/// Stops devsup with SIGINT and checks that it drained everything and
/// exited 0, leaving no process of any generation behind.
pub fn stop_cleanly(devsup: &Devsup) {
    devsup.signal(Signal::SIGINT);
    let status = devsup.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", devsup.log_text());
    for (generation, pid) in devsup.generation_pids() {
        assert_eq!(
            procfs::group_members(pid),
            [] as [i32; 0],
            "gen {generation}'s process group {pid} is gone"
        );
    }
}

/// devsup running `sh -c '"$0" & wait' devsup-server`: the server is the
/// shell's child. Returns devsup, the address, the shell's pid (the
/// generation's leader) and the server's.
pub fn forking_generation(dir: &tempfile::TempDir) -> (Devsup, SocketAddr, i32, i32) {
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server("sh")
        .server_args([
            OsString::from("-c"),
            "\"$0\" & wait".into(),
            binaries().server.clone().into(),
        ])
        .spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    let leader = devsup.generation_pid(1, TIMEOUT);
    let server_pid = http::get(addr, "/").unwrap().pid().unwrap();
    assert_ne!(server_pid, leader, "the server is the shell's child");
    (devsup, addr, leader, server_pid)
}
