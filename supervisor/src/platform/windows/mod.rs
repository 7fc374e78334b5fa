//! Windows, one interface per concern as for the unix platforms:
//! [`systemfd`], the server side of systemfd's protocol, by which a
//! generation takes the listening sockets (listenfd's
//! `ListenFd::from_env()` is the client); [`process`]: a generation's own
//! process group, the drain signal (`CTRL_BREAK_EVENT`) and its Job Object;
//! and [`executor`], which carries out the state machine's actions with
//! them (and the ready pipe, `DEVSUP_READY_HANDLE`) for the shared loop.

pub(crate) mod executor;
pub(crate) mod process;
pub(crate) mod systemfd;
