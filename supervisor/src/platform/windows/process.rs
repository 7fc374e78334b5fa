//! A generation's process on Windows: its own process group (so that the
//! drain signal reaches it and not devsup), the drain signal itself
//! (`CTRL_BREAK_EVENT` to that group, which tokio's `ctrl_break` and so
//! devsup-serve handle), and a Job Object with kill-on-close, which ends
//! every process of the generation at the drain timeout
//! (`TerminateJobObject`) or when devsup goes away (its handle closes).

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::os::windows::process::CommandExt;
use std::process::{Child, Command};

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, GenerateConsoleCtrlEvent};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, IsProcessInJob, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOBOBJECT_BASIC_ACCOUNTING_INFORMATION, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JobObjectBasicAccountingInformation, JobObjectExtendedLimitInformation,
    QueryInformationJobObject, SetInformationJobObject, TerminateJobObject,
};
use windows_sys::Win32::System::Threading::{
    CREATE_NEW_PROCESS_GROUP, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
};

/// Makes the process `command` starts the leader of a process group of its
/// own, whose id is its pid.
pub(crate) fn new_process_group(command: &mut Command) -> &mut Command {
    command.creation_flags(CREATE_NEW_PROCESS_GROUP)
}

/// Sends `CTRL_BREAK_EVENT` to the process group `group` (the pid of a
/// process started with [`new_process_group`]): the drain signal.
pub(crate) fn send_drain(group: u32) -> io::Result<()> {
    // SAFETY: no pointers; an unknown group gives an error.
    if unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, group) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A Job Object with kill-on-close: every process in it ends when it is
/// terminated, or when its last handle (devsup's) closes.
#[derive(Debug)]
pub(crate) struct Job(OwnedHandle);

impl Job {
    pub(crate) fn new() -> io::Result<Job> {
        // SAFETY: no attributes, no name.
        let raw = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if raw.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new handle that nothing else owns.
        let job = Job(unsafe { OwnedHandle::from_raw_handle(raw as RawHandle) });
        // SAFETY: plain data; all zeroes is "no limits".
        let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        // SAFETY: the pointer and length describe `limits`, of the class's type.
        let set = unsafe {
            SetInformationJobObject(
                job.handle(),
                JobObjectExtendedLimitInformation,
                (&raw const limits).cast(),
                std::mem::size_of_val(&limits) as u32,
            )
        };
        if set == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(job)
    }

    fn handle(&self) -> HANDLE {
        self.0.as_raw_handle() as HANDLE
    }

    /// Puts `child` (and so the processes it starts from then on) in the job.
    pub(crate) fn assign(&self, child: &Child) -> io::Result<()> {
        // SAFETY: both handles are open for the call.
        let assigned =
            unsafe { AssignProcessToJobObject(self.handle(), child.as_raw_handle() as HANDLE) };
        if assigned == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// How many processes are in the job now: a generation is gone when
    /// none is.
    pub(crate) fn active_processes(&self) -> io::Result<u32> {
        // SAFETY: plain data; all zeroes is a valid value.
        let mut info: JOBOBJECT_BASIC_ACCOUNTING_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: the pointer and length describe `info`, of the class's
        // type; the job handle is open.
        let queried = unsafe {
            QueryInformationJobObject(
                self.handle(),
                JobObjectBasicAccountingInformation,
                (&raw mut info).cast(),
                std::mem::size_of_val(&info) as u32,
                std::ptr::null_mut(),
            )
        };
        if queried == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(info.ActiveProcesses)
    }

    /// Whether process `pid` runs in the job (false if it cannot be told:
    /// it is gone, or not devsup's to look at).
    pub(crate) fn contains(&self, pid: u32) -> bool {
        // SAFETY: no pointers; a pid that is gone gives a null handle.
        let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        if process.is_null() {
            return false;
        }
        let mut inside = 0;
        // SAFETY: both handles are open for the call; `inside` is a valid
        // out-pointer.
        let asked = unsafe { IsProcessInJob(process, self.handle(), &mut inside) };
        // SAFETY: the process handle was opened above and is closed once.
        unsafe { CloseHandle(process) };
        asked != 0 && inside != 0
    }

    /// Ends every process in the job with `exit_code`: the drain timeout.
    pub(crate) fn terminate(&self, exit_code: u32) -> io::Result<()> {
        // SAFETY: the job handle is open.
        if unsafe { TerminateJobObject(self.handle(), exit_code) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    /// Set in the child process of the tests below.
    const CHILD_ENV: &str = "DEVSUP_TEST_DRAIN_CHILD";

    /// The child, and its own lines (not the harness's), read on a thread.
    fn start_child() -> (Child, mpsc::Receiver<String>) {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "platform::windows::process::tests::child_entry"])
            .args(["--nocapture", "--test-threads=1", "--quiet"])
            .env(CHILD_ENV, "1")
            .stdout(Stdio::piped());
        let mut child = new_process_group(&mut command).spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if line.starts_with("child:") && tx.send(line).is_err() {
                    return;
                }
            }
        });
        (child, lines)
    }

    /// The child's next line, or "" after 30 seconds without one.
    fn next_line(lines: &mpsc::Receiver<String>) -> String {
        lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_default()
    }

    /// Waits a bounded time for the child's exit, then ends it by its pid.
    fn end(mut child: Child) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        child.wait().unwrap()
    }

    /// Every step's result is kept until the child has been ended, so
    /// that no failure leaves it running.
    #[test]
    fn terminating_the_job_ends_its_process() {
        let job = Job::new().unwrap();
        let (child, lines) = start_child();
        let assigned = job.assign(&child);
        let armed = next_line(&lines);
        let active = job.active_processes();
        let terminated = job.terminate(77);
        let status = end(child);
        assigned.unwrap();
        terminated.unwrap();
        assert_eq!(armed, "child: armed");
        assert_eq!(active.unwrap(), 1);
        assert_eq!(status.code(), Some(77));
        assert_eq!(job.active_processes().unwrap(), 0);
    }

    // Not tested: Job::contains, which under Wine 8 said false for the
    // child in the job (OpenProcess + IsProcessInJob), so the test could
    // not pass there; the executor uses it only for a fetch of the sockets
    // by a process other than the generation's first.
    // Not tested: send_drain. Under Wine 8, GenerateConsoleCtrlEvent
    // fails for a group started from a test without a console (README,
    // Platforms), and no Windows machine was available.

    /// The child side of the test above; with no [`CHILD_ENV`] (the
    /// normal run of the test binary) it has nothing to do. It says when
    /// its CTRL_BREAK handler is installed, and when CTRL_BREAK_EVENT
    /// arrived.
    #[test]
    fn child_entry() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut brk = tokio::signal::windows::ctrl_break().unwrap();
            println!("child: armed");
            let _ = brk.recv().await;
            println!("child: drained");
        });
    }
}
