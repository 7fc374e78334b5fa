//! Starting processes: each generation of the server, and each build step.
//!
//! Both are started with a raw `fork` + `execve` rather than
//! `std::process::Command`, for two reasons:
//!
//! 1. `--listen-pid` must put the child's own pid in `LISTEN_PID`, and std
//!    fixes the environment before `fork`. Here the environment is built
//!    before `fork` too, with a fixed-width `LISTEN_PID=` slot; the child
//!    writes its pid into that slot (no allocation, only stores into memory
//!    it already owns) and calls `execve` itself.
//! 2. devsup is the only reaper of its children (it is a child subreaper, see
//!    the loop), so a `std::process::Child` that waits on its
//!    own would race with it.
//!
//! Between `fork` and `execve` the child runs only async-signal-safe system
//! calls: `setpgid`, `prctl` (Linux), `getppid`, `fcntl`, `close_range`
//! (Linux), `dup2`, `sigprocmask`,
//! `signal`, `execve`, `write` and `_exit`.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::signal::Signal;
use anyhow::Context;
use devsup_protocol as proto;

use crate::platform;
use fork::{ExecPlan, LISTEN_PID_PREFIX, PID_DIGITS, fork_exec};

pub(crate) use crate::program::Program;

/// Why `execve(path)` failed, for the log: the error, except that a
/// missing `#!` interpreter is named as such (the kernel says `ENOENT`,
/// which reads as if the script itself were missing).
pub(crate) fn exec_error(path: &Path, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound && path.is_file() {
        if let Some(interpreter) = interpreter(path) {
            return format!(
                "its interpreter {interpreter} (its #! line) does not exist; fix the #! line or install it"
            );
        }
    }
    e.to_string()
}

/// The interpreter a script's `#!` line names.
fn interpreter(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let mut file = std::fs::File::open(path).ok()?;
    let n = file.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let word = String::from_utf8_lossy(line);
    word.split_whitespace().next().map(str::to_owned)
}

/// What a generation is given besides the program.
/// Most fds a generation inherits at 3, 4, …: the listeners, the stored
/// fds (`FDSTORE=1`) and the ready channel. The forked child plans them in
/// an array of this size, since it cannot allocate.
pub(crate) const MAX_PASSED_FDS: usize = 64;

#[derive(Debug)]
pub(crate) struct Inherit<'a> {
    /// The listening sockets, placed at fds 3, 4, …
    pub(crate) sockets: &'a [BorrowedFd<'a>],
    /// Their names, for `LISTEN_FDNAMES`.
    pub(crate) names: &'a [&'a str],
    /// For `DEVSUP_GENERATION`.
    pub(crate) generation: u64,
    /// Put the child's own pid in `LISTEN_PID`.
    pub(crate) listen_pid: bool,
    /// Sent to the generation's process when devsup dies.
    pub(crate) parent_death_signal: Signal,
    /// Extra environment (`NOTIFY_SOCKET`, …).
    pub(crate) extra_env: Vec<(OsString, OsString)>,
    /// Capture stdout and stderr (for `--prefix`) instead of passing them
    /// through.
    pub(crate) capture_output: bool,
    /// The generation's `cgroup.procs`, when it has a cgroup.
    pub(crate) cgroup_procs: Option<RawFd>,
}

/// A started generation: what the executor keeps of it.
#[derive(Debug)]
pub(crate) struct Spawned {
    /// Its pid, which is also its process group id.
    pub(crate) pid: i32,
    /// devsup's end of the ready channel.
    pub(crate) channel: OwnedFd,
    /// The read ends of its stdout and stderr, when captured.
    pub(crate) output: Option<(OwnedFd, OwnedFd)>,
    /// Whether it managed to exec.
    pub(crate) exec_status: ExecStatus,
}

/// Environment variables of protocol v1 that must not leak from devsup's
/// own environment into a generation (devsup run under systemd or under
/// another devsup).
const PROTOCOL_VARS: &[&str] = &[
    proto::LISTEN_FDS_ENV,
    proto::LISTEN_FDS_FIRST_FD_ENV,
    proto::LISTEN_FDNAMES_ENV,
    proto::LISTEN_PID_ENV,
    proto::READY_FD_ENV,
    proto::NOTIFY_SOCKET_ENV,
    proto::GENERATION_ENV,
];

/// `KEY=VALUE` entries for `execve`'s environment.
fn env_entries(vars: impl Iterator<Item = (OsString, OsString)>) -> anyhow::Result<Vec<CString>> {
    vars.map(|(k, v)| {
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend(v.into_vec());
        cstring(kv)
    })
    .collect()
}

/// The NULL-terminated pointer array `execve` takes; valid while `strings`
/// lives.
fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// `/dev/null` open for writing: a child's stdout or stderr where devsup's
/// own is gone ([`stdio`]).
fn dead_output_sink() -> anyhow::Result<std::fs::File> {
    std::fs::File::options()
        .write(true)
        .open("/dev/null")
        .context("cannot open /dev/null")
}

fn cstring(bytes: Vec<u8>) -> anyhow::Result<CString> {
    CString::new(bytes).context("an argument or environment variable contains a NUL byte")
}

/// Forks `program` as a new generation and returns at once; the returned
/// [`ExecStatus`] says whether its exec succeeded.
/// A generation's environment but `LISTEN_PID`: devsup's own, without the
/// protocol's variables it may have inherited, with `inherit`'s extra
/// variables and the protocol's for `n` sockets and the ready channel at
/// `ready_fd`.
fn generation_env(
    inherit: &Inherit<'_>,
    n: RawFd,
    ready_fd: RawFd,
) -> anyhow::Result<Vec<CString>> {
    let mut c_env = env_entries(
        std::env::vars_os()
            .filter(|(k, _)| !PROTOCOL_VARS.iter().any(|v| k == OsStr::new(v)))
            .chain(inherit.extra_env.iter().cloned()),
    )?;
    let names = inherit.names.join(":");
    for (k, v) in [
        (proto::LISTEN_FDS_ENV, n.to_string()),
        (proto::LISTEN_FDS_FIRST_FD_ENV, proto::FIRST_FD.to_string()),
        (proto::LISTEN_FDNAMES_ENV, names),
        (proto::READY_FD_ENV, ready_fd.to_string()),
        (proto::GENERATION_ENV, inherit.generation.to_string()),
    ] {
        c_env.push(cstring(format!("{k}={v}").into_bytes())?);
    }
    Ok(c_env)
}

pub(crate) fn spawn(
    path: &Path,
    program: &Program,
    inherit: &Inherit<'_>,
) -> anyhow::Result<Spawned> {
    let n = inherit.sockets.len() as RawFd;
    let ready_fd = proto::FIRST_FD + n;

    // Everything the child needs is prepared here, before fork.
    let c_path = cstring(path.as_os_str().as_bytes().to_vec())?;
    let c_argv: Vec<CString> = program
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes().to_vec()))
        .collect::<Result<_, _>>()?;
    let c_env = generation_env(inherit, n, ready_fd)?;
    // The LISTEN_PID slot: "LISTEN_PID=" then PID_DIGITS zeros and a NUL,
    // overwritten by the child with its pid and a NUL. A buffer owned here,
    // mutably: the child writes through a pointer made from `&mut`, and
    // nothing else touches the buffer until the fork is done.
    let mut listen_pid_buf: Option<Box<[u8]>> = inherit.listen_pid.then(|| {
        let mut buf = LISTEN_PID_PREFIX.to_vec();
        buf.extend(std::iter::repeat_n(b'0', PID_DIGITS));
        buf.push(0);
        buf.into_boxed_slice()
    });
    let listen_pid_slot = listen_pid_buf.as_mut().map(|buf| buf.as_mut_ptr());
    let argv_ptrs = null_terminated(&c_argv);
    let mut env_ptrs: Vec<*const libc::c_char> = c_env.iter().map(|s| s.as_ptr()).collect();
    env_ptrs.extend(listen_pid_slot.map(|p| p.cast_const().cast::<libc::c_char>()));
    env_ptrs.push(std::ptr::null());

    let (ours, theirs) = platform::fds::stream_pair().context("cannot create the ready channel")?;
    let dev_null = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
    let pipes = if inherit.capture_output {
        let out = platform::fds::pipe().context("cannot create a pipe")?;
        let err = platform::fds::pipe().context("cannot create a pipe")?;
        Some((out, err))
    } else {
        None
    };
    let null_out = dead_output_sink()?;
    let output_fds = pipes
        .as_ref()
        .map(|((_, w1), (_, w2))| (w1.as_raw_fd(), w2.as_raw_fd()))
        .or_else(|| stdio::replacing_dead(&null_out));

    // The child's fd plan: sources, in the order of their targets 3, 4, …
    let sources: Vec<RawFd> = inherit
        .sockets
        .iter()
        .map(|fd| fd.as_raw_fd())
        .chain(std::iter::once(theirs.as_raw_fd()))
        .collect();
    let (pid, exec_status) = fork_exec(&ExecPlan {
        path: &c_path,
        argv: &argv_ptrs,
        envp: &env_ptrs,
        sources: &sources,
        stdin: dev_null.as_raw_fd(),
        output: output_fds,
        listen_pid_slot,
        pdeathsig: inherit.parent_death_signal,
        cgroup_procs: inherit.cgroup_procs,
    })?;
    // Alive until the fork is done: the child's copy holds its pid.
    drop(listen_pid_buf);
    drop(theirs);
    let output = pipes.map(|((r1, w1), (r2, w2))| {
        drop((w1, w2));
        (r1, r2)
    });
    Ok(Spawned {
        pid,
        channel: ours,
        output,
        exec_status,
    })
}

/// Starts one build step, `sh -c CMD`, and returns its pid, which is also
/// its process group id.
///
/// It is forked the way generations are: its own process group, so that
/// cancelling it (a change arrived mid-build) stops cargo and every rustc
/// it started, not only the shell; stdin from `/dev/null`; no fd of
/// devsup's but stdout and stderr (the write ends of `output` when given:
/// the executor's build-output tee), and none of devsup's own `LISTEN_*`
/// or `NOTIFY_SOCKET`, with `extra_env` added; SIGTERM (whatever the drain
/// signal) if devsup dies, and the guard stops the rest of its group. A
/// signal that reaches it before its exec is its own, never devsup's. Its
/// exit is seen by the loop's reaper like any other child; a shell that
/// cannot be run exits with status 127, which fails the step.
pub(crate) fn spawn_build(
    cmd: &str,
    output: Option<(RawFd, RawFd)>,
    extra_env: &[(OsString, OsString)],
) -> anyhow::Result<(i32, ExecStatus)> {
    let c_path = cstring(b"/bin/sh".to_vec())?;
    let c_argv = [
        cstring(b"sh".to_vec())?,
        cstring(b"-c".to_vec())?,
        cstring(cmd.as_bytes().to_vec())?,
    ];
    let c_env = env_entries(
        std::env::vars_os()
            .filter(|(k, _)| !PROTOCOL_VARS.iter().any(|v| k == OsStr::new(v)))
            .chain(extra_env.iter().cloned()),
    )?;
    let argv_ptrs = null_terminated(&c_argv);
    let env_ptrs = null_terminated(&c_env);
    let dev_null = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
    let null_out = dead_output_sink()?;
    let output = output.or_else(|| stdio::replacing_dead(&null_out));
    let (pid, exec_status) = fork_exec(&ExecPlan {
        path: &c_path,
        argv: &argv_ptrs,
        envp: &env_ptrs,
        sources: &[],
        stdin: dev_null.as_raw_fd(),
        output,
        listen_pid_slot: None,
        pdeathsig: Signal::SIGTERM,
        cgroup_procs: None,
    })?;
    Ok((pid, exec_status))
}

/// Why build command `cmd` could not be run (`sh -c CMD` failed to exec
/// with `e`), in one line that says what to do.
pub(crate) fn build_exec_error(cmd: &str, e: &io::Error) -> String {
    if e.raw_os_error() == Some(libc::E2BIG) {
        return format!(
            "the command is {} bytes, more than the system passes in one argument ({e}): \
             put it in a script and give --build 'sh script.sh'",
            cmd.len()
        );
    }
    format!("cannot run /bin/sh: {e}")
}

/// Whether a spawned child managed to exec. Reading it blocks until the
/// child has exec'd or failed to, which can take a millisecond or more, so
/// the supervisor reads it only once the child has exited (a child that
/// cannot exec exits at once, with status 127).
#[derive(Debug)]
pub(crate) struct ExecStatus(std::fs::File);

impl ExecStatus {
    /// Waits for the exec; `Err` is the child's errno (the child then exits
    /// with status 127).
    pub(crate) fn wait(mut self) -> io::Result<()> {
        use std::io::Read;
        // The child writes errno here if exec fails; exec closes the pipe
        // (close-on-exec) when it succeeds, so EOF means success.
        let mut buf = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.0.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        match got {
            4 => Err(io::Error::from_raw_os_error(i32::from_ne_bytes(buf))),
            _ => Ok(()),
        }
    }
}

pub(crate) mod cgroup;
mod fork;
pub(crate) mod orphans;
mod stdio;

#[cfg(test)]
mod tests {
    use super::*;

    /// A 200 KB build command said "exited with status 127" and no
    /// reason (issue 19, defect 8): the exec status says why, and the
    /// reason names the size and the fix.
    #[test]
    fn a_build_command_too_long_to_run_says_why() {
        let cmd = format!("echo {}", "x".repeat(200 * 1024));
        let (pid, status) = spawn_build(&cmd, None, &[]).unwrap();
        let waited = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        assert_eq!(
            waited,
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 127)
        );
        let e = status.wait().unwrap_err();
        let why = build_exec_error(&cmd, &e);
        assert!(
            why.contains("204805 bytes") && why.contains("script"),
            "{why}"
        );
        // A command that runs has no such reason.
        let (pid, status) = spawn_build("true", None, &[]).unwrap();
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        assert!(status.wait().is_ok());
    }

    #[test]
    fn spawned_child_gets_exactly_the_planned_fds_and_env() {
        let program = Program::new(vec![
            "sh".into(),
            "-c".into(),
            "echo \"$LISTEN_FDS $LISTEN_FDNAMES $LISTEN_PID $$ $DEVSUP_READY_FD $DEVSUP_GENERATION $(ls /proc/self/fd | sort -n | tr '\\n' ' ')\" >&3".into(),
        ])
        .unwrap();
        // The shell writes its report to fd 3, which is the socket: use a
        // socketpair as the "socket" instead so the report can be read.
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let theirs: OwnedFd = theirs.into();
        let sockets = [std::os::fd::AsFd::as_fd(&theirs)];
        let spawned = spawn(
            &program.resolve().unwrap(),
            &program,
            &Inherit {
                sockets: &sockets,
                names: &["web"],
                generation: 7,
                listen_pid: true,
                parent_death_signal: Signal::SIGTERM,
                extra_env: vec![],
                capture_output: false,
                cgroup_procs: None,
            },
        )
        .unwrap();
        spawned.exec_status.wait().unwrap();
        drop(theirs);
        let mut out = String::new();
        use std::io::Read;
        ours.read_to_string(&mut out).unwrap();
        let status =
            nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(spawned.pid), None).unwrap();
        assert!(
            matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
            "{status:?}"
        );
        let fields: Vec<&str> = out.split_whitespace().collect();
        let pid = spawned.pid.to_string();
        assert_eq!(
            &fields[..6],
            ["1", "web", pid.as_str(), pid.as_str(), "4", "7"],
            "{out}"
        );
        // fds: stdin, stdout, stderr, the socket, the ready channel, and the
        // fd `ls` itself opens on /proc/self/fd.
        assert_eq!(&fields[6..], ["0", "1", "2", "3", "4", "5"], "{out}");
    }
}
