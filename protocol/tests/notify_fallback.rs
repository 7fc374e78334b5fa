//! Regression: with `DEVSUP_READY_FD` set to an fd that is not open (a
//! child that inherited devsup's environment but not the fd), `notify`
//! failed with EBADF instead of falling back to `NOTIFY_SOCKET`, or to
//! "nobody to tell".
//!
//! One test function: it changes the environment, which no other test in
//! this binary may read meanwhile. Unix only: the fd channel and
//! `NOTIFY_SOCKET` are unix's (Windows has its own test in `src/windows.rs`).
#![cfg(unix)]

use std::os::unix::net::UnixDatagram;

#[test]
fn a_closed_ready_fd_falls_back_to_notify_socket() {
    // An fd number that is not open in this process.
    let closed = 1000;
    // SAFETY: F_GETFD only reads the fd's flags.
    assert!(unsafe { libc::fcntl(closed, libc::F_GETFD) } < 0);
    let path = std::env::temp_dir().join(format!("devsup-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let systemd = UnixDatagram::bind(&path).unwrap();
    // SAFETY: the only test in this binary.
    unsafe {
        std::env::set_var(devsup_protocol::READY_FD_ENV, closed.to_string());
        std::env::set_var(devsup_protocol::NOTIFY_SOCKET_ENV, &path);
    }
    let sent = devsup_protocol::notify_ready();
    let mut buf = [0; 64];
    systemd
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let n = sent.is_ok().then(|| systemd.recv(&mut buf).unwrap());
    let _ = std::fs::remove_file(&path);
    assert!(sent.as_ref().is_ok_and(|&told| told), "{sent:?}");
    assert_eq!(&buf[..n.unwrap()], b"READY=1\n");

    // Without NOTIFY_SOCKET there is nobody to tell: not an error.
    // SAFETY: as above.
    unsafe { std::env::remove_var(devsup_protocol::NOTIFY_SOCKET_ENV) };
    assert!(!devsup_protocol::notify_ready().unwrap());
    // SAFETY: as above.
    unsafe { std::env::remove_var(devsup_protocol::READY_FD_ENV) };
}
