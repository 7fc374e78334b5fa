//! Windows, one interface per concern as for the unix platforms. So far
//! only the sockets: [`systemfd`], the server side of systemfd's protocol,
//! by which a generation takes the listening sockets (listenfd's
//! `ListenFd::from_env()` is the client). The rest of the supervisor (the
//! ready pipe, `CREATE_NEW_PROCESS_GROUP` and `CTRL_BREAK_EVENT`, Job
//! Objects) is not written yet: see the README's Platforms section.

#[cfg_attr(
    not(test),
    allow(dead_code, reason = "not wired into the executor yet (issue 23)")
)]
pub(crate) mod systemfd;
