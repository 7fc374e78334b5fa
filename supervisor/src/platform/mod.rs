//! What differs between the platforms devsup runs on, one interface per
//! concern. Linux is the platform devsup is built and tested on; macOS is
//! supported and checked by cross-compilation; the other BSDs build where
//! that costs nothing (they take the portable fallbacks).
//!
//! - [`fds`]: close-on-exec at creation (`pipe2`, `SOCK_CLOEXEC`,
//!   `MSG_CMSG_CLOEXEC` on Linux; `fcntl` right after creation elsewhere)
//!   and the fd sweeps of a forked child (`close_range` on Linux; a loop up
//!   to the fd limit elsewhere).
//! - [`process`]: the parent-death signal (Linux only; the guard is the
//!   mechanism elsewhere), the child subreaper (Linux only; elsewhere the
//!   executor polls the process groups whose leader has exited), the
//!   thread count the guard checks, and a process's parent (`/proc` on
//!   Linux, libproc on macOS).
//! - [`peer`]: who sent a datagram on a notify socket (`SCM_CREDENTIALS` on
//!   Linux; nobody can tell on macOS, where the 0700 directory is the only
//!   check), and abstract socket names (Linux only).
//!
//! - [`windows`] (Windows only, so far the one part of the supervisor
//!   compiled there): the server side of systemfd's socket passing.
//!
//! File watching has its own seam in `sources/watch/native.rs`: inotify
//! watches one directory at a time, FSEvents a whole tree.
//!
//! The pattern, for new code: the callers see one function per question,
//! documented once, with no `#[cfg]`; each function has a Linux body and a
//! portable (or macOS) body side by side in the concern's file. Where the
//! portable body can run on Linux too, it is compiled there for the unit
//! tests (`#[cfg(any(test, not(target_os = "linux")))]`), so the logic
//! macOS runs is tested on Linux.

#[cfg(unix)]
pub(crate) mod fds;
#[cfg(unix)]
pub(crate) mod peer;
#[cfg(unix)]
pub(crate) mod process;
#[cfg(windows)]
pub(crate) mod windows;
