//! Event sources: each runs on a thread of its own and turns something
//! outside devsup into [`Input`](crate::event::Input)s on the loop's one
//! channel. None of them touches the state machine or another source; they
//! import only [`crate::event`] and what sits below everything
//! (`crate::duration`, the log's `crate::log`, `crate::platform`), and
//! their own helpers. One exception: [`watch`] writes one step itself,
//! `Step::Restless` (a path that holds every reload back), through
//! `crate::report::log::write`.
//!
//! - [`signals`]: SIGHUP, SIGINT, SIGTERM and SIGCHLD; on Windows, Ctrl-C
//!   and Ctrl-Break at devsup's console.
//! - [`terminal`]: `r` / `q` + Enter, when stdin is a terminal.
//! - [`watch`]: file changes, filtered and debounced into one event a burst.
//! - [`ready_channel`]: each generation's ready channel (protocol lines).
//! - [`notify`]: each generation's `NOTIFY_SOCKET` (sd_notify datagrams,
//!   `FDSTORE=1` fds); Unix only.

#[cfg(unix)]
pub(crate) mod notify;
pub(crate) mod ready_channel;
pub(crate) mod signals;
pub(crate) mod terminal;
pub(crate) mod watch;
