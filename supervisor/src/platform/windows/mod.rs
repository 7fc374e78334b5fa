//! Windows, one interface per concern as for the unix platforms. So far
//! only the sockets: [`systemfd`], the server side of systemfd's protocol,
//! by which a generation takes the listening sockets (listenfd's
//! `ListenFd::from_env()` is the client), and [`process`]: a generation's
//! own process group, the drain signal (`CTRL_BREAK_EVENT`) and its Job
//! Object. Neither is wired into a supervisor loop yet, and the ready
//! pipe's server side is not written: see the README's Platforms section.

#[allow(dead_code, reason = "not wired into the executor yet (issue 23)")]
pub(crate) mod process;
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "not wired into the executor yet (issue 23)")
)]
pub(crate) mod systemfd;
