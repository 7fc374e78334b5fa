//! What a generation or build step gets as stdout and stderr when devsup
//! does not capture them: devsup's own, unless devsup's own is gone.
//!
//! devsup's stderr can die under it: `devsup … 2>&1 | head -c 1`, a killed
//! `tee`, a closed terminal. devsup itself carries on, but a child that
//! inherited the dead pipe dies at its first line (EPIPE, or SIGPIPE),
//! and devsup would restart it forever. So before each fork, devsup looks
//! at its fds 1 and 2 (`poll` with no events asked: the kernel still
//! reports POLLERR for a pipe with no reader, POLLHUP for a hung-up
//! terminal or a socket whose peer closed), and gives the child
//! `/dev/null` for each that is gone.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Whether output written to `fd` can go anywhere: false for a pipe with
/// no reader, a hung-up terminal, a closed socket or a closed fd.
pub(crate) fn works(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::empty())];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
        Ok(0) => true,
        Ok(_) => {
            let gone = nix::poll::PollFlags::POLLERR
                | nix::poll::PollFlags::POLLHUP
                | nix::poll::PollFlags::POLLNVAL;
            !fds[0].revents().is_some_and(|r| r.intersects(gone))
        }
        Err(_) => true,
    }
}

/// The fds to give a child as stdout and stderr when devsup's own are not
/// captured: `None` while both of devsup's work (the child inherits
/// them); otherwise devsup's where it works and `null` (open for writing)
/// where it does not.
pub(crate) fn replacing_dead(null: &File) -> Option<(RawFd, RawFd)> {
    // SAFETY: fds 1 and 2 stay open for devsup's whole life (Rust's
    // runtime makes sure they are open at start, and devsup never closes
    // them); borrowed only for this call.
    let (out, err) = unsafe { (BorrowedFd::borrow_raw(1), BorrowedFd::borrow_raw(2)) };
    let (out_ok, err_ok) = (works(out), works(err));
    if out_ok && err_ok {
        return None;
    }
    let pick = |ok: bool, fd: RawFd| if ok { fd } else { null.as_raw_fd() };
    Some((pick(out_ok, 1), pick(err_ok, 2)))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_pipe_without_its_reader_does_not_work() {
        let (read, write) = nix::unistd::pipe().unwrap();
        assert!(works(write.as_fd()), "a pipe with its reader works");
        drop(read);
        assert!(!works(write.as_fd()), "a pipe without a reader does not");
        let null = File::options().write(true).open("/dev/null").unwrap();
        assert!(works(null.as_fd()));
    }
}
