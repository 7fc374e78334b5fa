//! devsup on a pseudo-terminal, as a developer runs it: its output (and,
//! when asked, its keys) on a pty the test holds the other end of.
//!
//! The environment is a developer's terminal, whatever the one the suite
//! runs in: `TERM=xterm-256color`, and none of `CI`, `TF_BUILD`,
//! `NO_COLOR` or `CARGO_TERM_*` (CI runners set `CI`, and cargo draws no
//! progress bar where it is set).

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::pty::{Winsize, openpty};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::wait_until;

/// The terminal's size: wide enough that cargo's progress bar shows the
/// crate it builds.
const SIZE: Winsize = Winsize {
    ws_row: 24,
    ws_col: 100,
    ws_xpixel: 0,
    ws_ypixel: 0,
};

/// A child on a pseudo-terminal. Everything it writes is collected by a
/// thread until every holder of the terminal has closed it; dropping an
/// `OnTerminal` SIGKILLs and reaps the child if it still runs.
#[derive(Debug)]
pub struct OnTerminal {
    child: Child,
    keys: Option<File>,
    reader: Option<JoinHandle<Vec<u8>>>,
}

impl OnTerminal {
    /// Spawns `command` with stdout and stderr on a new terminal, and
    /// stdin too when `keys` (then [`press`](Self::press) types on it;
    /// otherwise stdin is `/dev/null`). Panics if the terminal cannot be
    /// made or the command not started.
    pub fn spawn(mut command: Command, keys: bool) -> Self {
        let pty = openpty(&SIZE, None).expect("a pseudo-terminal");
        let slave = || File::from(pty.slave.try_clone().expect("dup the terminal"));
        command
            .env("TERM", "xterm-256color")
            .env_remove("CI")
            .env_remove("TF_BUILD")
            .env_remove("NO_COLOR")
            .env_remove("CARGO_TERM_COLOR")
            .env_remove("CARGO_TERM_PROGRESS_WHEN")
            .stdin(if keys { slave().into() } else { Stdio::null() })
            .stdout(slave())
            .stderr(slave());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
        // Our copy of the child's end goes now, so the reader sees the end
        // (EIO) once the child and its children have closed theirs.
        drop(pty.slave);
        let keys = keys.then(|| File::from(pty.master.try_clone().expect("dup the terminal")));
        let master = File::from(pty.master);
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = { master }.read_to_end(&mut all);
            all
        });
        Self {
            child,
            keys,
            reader: Some(reader),
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Types `keys` on the terminal. Panics without a keyboard (spawned
    /// with `keys: false`).
    pub fn press(&mut self, keys: &[u8]) {
        let keyboard = self.keys.as_mut().expect("spawned with keys");
        keyboard.write_all(keys).expect("typing on the terminal");
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(Pid::from_raw(self.pid()), signal)
            .unwrap_or_else(|e| panic!("kill({}, {signal}): {e}", self.pid()));
    }

    /// The child's exit status once it exits within `timeout`; `None` if it
    /// did not, and then it has been SIGKILLed and reaped.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().expect("waitpid");
            status.is_some()
        });
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        status
    }

    /// Everything the terminal showed, once every holder has closed it
    /// (call after the child has exited), escapes and all.
    pub fn screen(mut self) -> String {
        self.keys = None;
        let reader = self.reader.take().expect("read once");
        String::from_utf8_lossy(&reader.join().expect("the terminal's reader")).into_owned()
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
