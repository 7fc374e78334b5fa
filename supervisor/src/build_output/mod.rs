//! A build step's output, on every platform: shown as it comes and its end
//! kept ([`tee`]), and the steps published after a failed build held until
//! that end is in ([`outbox`]). The Unix executor (`executor/`) gives the
//! tee pipes or a pseudo-terminal; the Windows executor gives it the
//! step's piped stdout and stderr.

pub(crate) mod outbox;
pub(crate) mod tee;

pub(crate) use tee::Tail;
