//! Spawning one generation of the server.
//!
//! A generation is started with a raw `fork` + `execve` rather than
//! `std::process::Command`, for two reasons:
//!
//! 1. `--listen-pid` must put the child's own pid in `LISTEN_PID`, and std
//!    fixes the environment before `fork`. Here the environment is built
//!    before `fork` too, with a fixed-width `LISTEN_PID=` slot; the child
//!    writes its pid into that slot (no allocation, only stores into memory
//!    it already owns) and calls `execve` itself.
//! 2. devsup is the only reaper of its children (it is a child subreaper, see
//!    [`crate::supervisor`]), so a `std::process::Child` that waits on its
//!    own would race with it.
//!
//! Between `fork` and `execve` the child runs only async-signal-safe system
//! calls: `setpgid`, `prctl`, `getppid`, `fcntl`, `dup2`, `sigprocmask`,
//! `signal`, `execve`, `write` and `_exit`.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use devsup_protocol as proto;
use nix::sys::signal::Signal;

/// The program to run as a generation, resolved once.
#[derive(Debug, Clone)]
pub struct Program {
    /// The command as given (`argv[0]` and arguments); never empty.
    argv: Vec<OsString>,
}

impl Program {
    /// Takes the command line given after `--`.
    pub fn new(argv: Vec<OsString>) -> anyhow::Result<Self> {
        if argv.is_empty() {
            bail!(
                "no command to run: put the server command after `--`, e.g. `devsup --port 8080 -- ./target/debug/server`"
            );
        }
        Ok(Program { argv })
    }

    /// The command as given (`argv[0]` and arguments).
    pub fn argv(&self) -> &[OsString] {
        &self.argv
    }

    /// Finds the executable: a path as given, or the first match in `PATH`.
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        resolve_executable(&self.argv[0])
    }
}

/// Finds an executable the way `execvp` would, and says why when it can't.
pub fn resolve_executable(name: &OsStr) -> anyhow::Result<PathBuf> {
    let shown = Path::new(name).display();
    if name.as_bytes().contains(&b'/') {
        let path = PathBuf::from(name);
        check_executable(&path).with_context(|| format!("cannot run {shown}"))?;
        return Ok(path);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join(name);
        if check_executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    bail!("command not found: {shown} is not in PATH; give its path, e.g. ./target/debug/{shown}")
}

fn check_executable(path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            anyhow::anyhow!("no such file (build it first, or pass --build)")
        }
        _ => e.into(),
    })?;
    if meta.is_dir() {
        bail!("it is a directory");
    }
    if meta.permissions().mode() & 0o111 == 0 {
        bail!("it is not executable (chmod +x it)");
    }
    Ok(())
}

/// What a generation is given besides the program.
#[derive(Debug)]
pub struct Inherit<'a> {
    /// The listening sockets, placed at fds 3, 4, …
    pub sockets: &'a [BorrowedFd<'a>],
    /// Their names, for `LISTEN_FDNAMES`.
    pub names: &'a [&'a str],
    /// The generation number.
    pub generation: u64,
    /// Put the child's own pid in `LISTEN_PID`.
    pub listen_pid: bool,
    /// Sent to the generation's process when devsup dies.
    pub parent_death_signal: Signal,
    /// Extra environment (`NOTIFY_SOCKET`, …).
    pub extra_env: Vec<(OsString, OsString)>,
    /// Capture stdout and stderr (for `--prefix`) instead of passing them
    /// through.
    pub capture_output: bool,
}

/// A started generation.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, which is also its process group id.
    pub pid: i32,
    /// devsup's end of the ready channel.
    pub channel: OwnedFd,
    /// The read ends of its stdout and stderr, when captured.
    pub output: Option<(OwnedFd, OwnedFd)>,
    /// Whether it managed to exec.
    pub exec_status: ExecStatus,
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

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
/// Room for any pid_t in decimal.
const PID_DIGITS: usize = 20;

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

fn cstring(bytes: Vec<u8>) -> anyhow::Result<CString> {
    CString::new(bytes).context("an argument or environment variable contains a NUL byte")
}

/// Forks `program` as a new generation and returns at once; the returned
/// [`ExecStatus`] says whether its exec succeeded.
pub fn spawn(path: &Path, program: &Program, inherit: &Inherit<'_>) -> anyhow::Result<Spawned> {
    let n = inherit.sockets.len() as RawFd;
    let ready_fd = proto::FIRST_FD + n;

    // Everything the child needs is prepared here, before fork.
    let c_path = cstring(path.as_os_str().as_bytes().to_vec())?;
    let c_argv: Vec<CString> = program
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes().to_vec()))
        .collect::<Result<_, _>>()?;
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
    // The LISTEN_PID slot: "LISTEN_PID=" then PID_DIGITS zeros, overwritten
    // by the child with its pid and a NUL. Its heap buffer does not move when the CString does.
    let listen_pid_slot = if inherit.listen_pid {
        let mut buf = LISTEN_PID_PREFIX.to_vec();
        buf.extend(std::iter::repeat_n(b'0', PID_DIGITS));
        let slot = cstring(buf)?;
        let ptr = slot.as_ptr() as *mut u8;
        c_env.push(slot);
        Some(ptr)
    } else {
        None
    };
    let argv_ptrs = null_terminated(&c_argv);
    let env_ptrs = null_terminated(&c_env);

    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .context("cannot create the ready channel")?;
    let dev_null = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
    let pipes = if inherit.capture_output {
        let out =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
        let err =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
        Some((out, err))
    } else {
        None
    };
    let output_fds = pipes
        .as_ref()
        .map(|((_, w1), (_, w2))| (w1.as_raw_fd(), w2.as_raw_fd()));

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
    })?;
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

/// Starts `sh -c CMD` (a build step) the same way: its own process group,
/// stdin from `/dev/null`, no fd of devsup's but stdout and stderr, and
/// SIGTERM (whatever the drain signal) if devsup dies.
pub fn spawn_shell(cmd: &str) -> anyhow::Result<(i32, ExecStatus)> {
    spawn_shell_with(cmd, None, &[])
}

/// [`spawn_shell`] with its stdout and stderr on `output` (write ends of
/// pipes, for `--livereload`'s copy of the build output) and `extra_env`
/// added to devsup's environment.
pub fn spawn_shell_with(
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
    let c_env = env_entries(std::env::vars_os().chain(extra_env.iter().cloned()))?;
    let argv_ptrs = null_terminated(&c_argv);
    let env_ptrs = null_terminated(&c_env);
    let dev_null = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
    fork_exec(&ExecPlan {
        path: &c_path,
        argv: &argv_ptrs,
        envp: &env_ptrs,
        sources: &[],
        stdin: dev_null.as_raw_fd(),
        output,
        listen_pid_slot: None,
        pdeathsig: Signal::SIGTERM,
    })
}

/// Everything the child needs between fork and exec, made before fork.
struct ExecPlan<'a> {
    path: &'a CString,
    /// NULL-terminated.
    argv: &'a [*const libc::c_char],
    /// NULL-terminated.
    envp: &'a [*const libc::c_char],
    sources: &'a [RawFd],
    stdin: RawFd,
    output: Option<(RawFd, RawFd)>,
    listen_pid_slot: Option<*mut u8>,
    pdeathsig: Signal,
}

/// Forks and execs `plan` in a new process group; returns the pid and the
/// exec status to read later.
///
/// Every signal is blocked across the fork: a signal that reached the child
/// before exec would otherwise run devsup's own handlers there (signal-hook
/// writes to a pipe devsup reads, so a drain signal sent to a generation
/// that has not exec'd yet would look like a SIGTERM to devsup). The child
/// resets its handlers to the default before it unblocks them, so such a
/// signal does to it what it would do after exec.
fn fork_exec(plan: &ExecPlan<'_>) -> anyhow::Result<(i32, ExecStatus)> {
    let (err_read, err_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let parent_pid = std::process::id() as libc::pid_t;
    let max_fd = max_fd();
    let all = nix::sys::signal::SigSet::all();
    let mut old = nix::sys::signal::SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&all),
        Some(&mut old),
    )
    .context("cannot block signals")?;
    // SAFETY: fork in a multi-threaded process; the child only calls
    // async-signal-safe functions (see `child_after_fork`) and never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the child of a fork; every pointer was made before
        // it and stays valid in this copy of the address space.
        unsafe {
            child_after_fork(ChildPlan {
                path: plan.path.as_ptr(),
                argv: plan.argv.as_ptr(),
                envp: plan.envp.as_ptr(),
                sources: plan.sources,
                stdin: plan.stdin,
                output: plan.output,
                listen_pid_slot: plan.listen_pid_slot,
                parent_pid,
                pdeathsig: plan.pdeathsig as libc::c_int,
                err_pipe: err_write.as_raw_fd(),
                max_fd,
            })
        }
    }
    let forked = if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    };
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&old),
        None,
    );
    let pid = forked.context("fork failed")?;
    // The child makes its own process group too, but a signal sent to the
    // group before the child has run would find no group: make it here as
    // well, as shells do. EACCES (the child has exec'd) means it is done.
    // SAFETY: setpgid on our own child has no memory-safety preconditions.
    unsafe { libc::setpgid(pid, pid) };
    drop(err_write);
    Ok((pid, ExecStatus(std::fs::File::from(err_read))))
}

/// Whether a spawned child managed to exec. Reading it blocks until the
/// child has exec'd or failed to, which can take a millisecond or more, so
/// the supervisor reads it only once the child has exited (a child that
/// cannot exec exits at once, with status 127).
#[derive(Debug)]
pub struct ExecStatus(std::fs::File);

impl ExecStatus {
    /// Waits for the exec; `Err` is the child's errno (the child then exits
    /// with status 127).
    pub fn wait(mut self) -> io::Result<()> {
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

struct ChildPlan<'a> {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    sources: &'a [RawFd],
    stdin: RawFd,
    output: Option<(RawFd, RawFd)>,
    listen_pid_slot: Option<*mut u8>,
    parent_pid: libc::pid_t,
    pdeathsig: libc::c_int,
    err_pipe: RawFd,
    max_fd: RawFd,
}

/// The child between fork and exec. Never returns.
///
/// # Safety
/// Must only be called in the child of a `fork`, with pointers that are
/// valid there.
unsafe fn child_after_fork(plan: ChildPlan<'_>) -> ! {
    // SAFETY: (for the whole function) plain system calls on fds and memory
    // owned by this process; none allocates or takes a lock.
    unsafe {
        let fail = |fd: RawFd| -> ! {
            let errno = *libc::__errno_location();
            let bytes = errno.to_ne_bytes();
            libc::write(fd, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127)
        };
        // devsup's signal handlers must not run here: back to the default
        // for every signal that is not ignored (the mask, blocked across
        // the fork, is cleared right before exec).
        for sig in 1..65 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction != libc::SIG_IGN
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &default, std::ptr::null_mut());
            }
        }
        // Own process group: every signal devsup sends goes to the group,
        // so `sh -c` and `cargo run` pass it on to the real server.
        if libc::setpgid(0, 0) != 0 {
            fail(plan.err_pipe);
        }
        #[cfg(target_os = "linux")]
        {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                plan.pdeathsig as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                fail(plan.err_pipe);
            }
            // devsup may have died between fork and prctl.
            if libc::getppid() != plan.parent_pid {
                libc::_exit(1);
            }
        }
        // Copy every fd the child still needs (the sources, stdin, the
        // output pipes, the error pipe) above every target first, so that
        // none sitting on a target number is overwritten before it is used.
        let first = proto::FIRST_FD;
        let high = first + plan.sources.len() as RawFd;
        let lift = |fd: RawFd, err_pipe: RawFd| -> RawFd {
            let lifted = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, high + 1);
            if lifted < 0 {
                fail(err_pipe);
            }
            lifted
        };
        let err_pipe = lift(plan.err_pipe, plan.err_pipe);
        let stdin = lift(plan.stdin, err_pipe);
        let output = plan
            .output
            .map(|(out, err)| (lift(out, err_pipe), lift(err, err_pipe)));
        let mut moved = [0 as RawFd; 64];
        if plan.sources.len() > moved.len() {
            *libc::__errno_location() = libc::EMFILE;
            fail(err_pipe);
        }
        for (i, &src) in plan.sources.iter().enumerate() {
            moved[i] = lift(src, err_pipe);
        }
        // dup2 clears close-on-exec on the target: these, and stdio, are
        // the only fds the program inherits from devsup.
        for (i, &fd) in moved[..plan.sources.len()].iter().enumerate() {
            if libc::dup2(fd, first + i as RawFd) < 0 {
                fail(err_pipe);
            }
        }
        if libc::dup2(stdin, 0) < 0 {
            fail(err_pipe);
        }
        if let Some((out, err)) = output {
            if libc::dup2(out, 1) < 0 || libc::dup2(err, 2) < 0 {
                fail(err_pipe);
            }
        }
        // devsup's own fds are all close-on-exec, but devsup may have
        // inherited others (a shell's, or cargo's jobserver pipes): the
        // generation gets none of them.
        close_from_on_exec(high, plan.max_fd);
        if let Some(slot) = plan.listen_pid_slot {
            write_pid(slot.add(LISTEN_PID_PREFIX.len()), libc::getpid());
        }
        // Undo what devsup changed for itself: Rust ignores SIGPIPE, and
        // exec keeps ignored signals ignored; the mask is inherited too.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(plan.path, plan.argv, plan.envp);
        fail(err_pipe)
    }
}

/// The highest fd number to mark close-on-exec where `close_range` is
/// missing.
pub(crate) fn max_fd() -> RawFd {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    limit.min(65536) as RawFd
}

/// Marks every fd from `first` on close-on-exec.
///
/// # Safety
/// Async-signal-safe; only for the child between fork and exec.
pub(crate) unsafe fn close_from_on_exec(first: RawFd, max_fd: RawFd) {
    #[cfg(target_os = "linux")]
    {
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        // SAFETY: close_range only changes fd flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            )
        };
        if r == 0 {
            return;
        }
    }
    for fd in first..max_fd {
        // SAFETY: fcntl on a closed fd fails with EBADF, harmlessly.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Writes `pid` in decimal at `dst` followed by a NUL. `dst` has room for
/// [`PID_DIGITS`] bytes.
///
/// # Safety
/// `dst` must be valid for `PID_DIGITS` bytes of writes.
unsafe fn write_pid(dst: *mut u8, pid: libc::pid_t) {
    let mut digits = [0u8; PID_DIGITS];
    let mut n = pid as u64;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: len < PID_DIGITS, and the caller gives PID_DIGITS bytes.
        unsafe { *dst.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: as above; a pid has at most 10 digits, so len < PID_DIGITS.
    unsafe { *dst.add(len) = 0 };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_pid_formats_decimal() {
        let mut buf = [b'x'; PID_DIGITS];
        // SAFETY: buf has PID_DIGITS bytes.
        unsafe { write_pid(buf.as_mut_ptr(), 4194304) };
        assert_eq!(&buf[..8], b"4194304\0");
        // SAFETY: as above.
        unsafe { write_pid(buf.as_mut_ptr(), 0) };
        assert_eq!(&buf[..2], b"0\0");
    }

    #[test]
    fn resolve_finds_programs_and_explains_failures() {
        assert!(resolve_executable(OsStr::new("sh")).unwrap().is_absolute());
        let e = resolve_executable(OsStr::new("no-such-program-devsup")).unwrap_err();
        assert!(e.to_string().contains("command not found"), "{e}");
        let e = resolve_executable(OsStr::new("./no/such/file")).unwrap_err();
        assert!(format!("{e:#}").contains("no such file"), "{e:#}");
        let file = std::env::temp_dir().join(format!("devsup-not-exec-{}", std::process::id()));
        std::fs::write(&file, "").unwrap();
        let e = resolve_executable(file.as_os_str()).unwrap_err();
        std::fs::remove_file(&file).unwrap();
        assert!(format!("{e:#}").contains("not executable"), "{e:#}");
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
