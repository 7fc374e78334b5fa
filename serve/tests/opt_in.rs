//! The one-line opt-in: `devsup_serve::serve(listener, app).await`, where
//! axum would have `axum::serve(listener, app).await`, does everything a
//! server under devsup needs: READY once it accepts, a drain on SIGTERM,
//! STOPPING when the drain starts, and a non-blocking socket even when it
//! was handed a blocking one.
//!
//! One test function: it sets the ready-channel variable and sends SIGTERM
//! to this process, which no other test may see. Unix only: a unix ready
//! channel and SIGTERM (Windows' ready pipe is tested in devsup-protocol).
#![cfg(unix)]

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use axum::Router;
use axum::routing::get;

const PATIENCE: Duration = Duration::from_secs(5);

fn app() -> Router {
    Router::new().route("/", get(|| async { "hello\n" }))
}

fn line(channel: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0];
    while channel.read(&mut byte).expect("ready channel") == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

fn fetch(addr: std::net::SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn is_nonblocking(fd: i32) -> bool {
    // SAFETY: F_GETFL on an fd this test owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0);
    flags & libc::O_NONBLOCK != 0
}

#[test]
fn serve_is_a_one_line_opt_in() {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(PATIENCE)).unwrap();
    // SAFETY: the only test in this binary; no other thread reads the
    // environment now.
    unsafe { std::env::set_var("DEVSUP_READY_FD", theirs.as_raw_fd().to_string()) };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // 1. A blocking std listener (as devsup and systemd pass it), default
    // signals: READY, serving, SIGTERM drains, STOPPING.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = listener.try_clone().unwrap();
    assert!(!is_nonblocking(shared.as_raw_fd()));
    let served = runtime.spawn(async move { devsup_serve::serve(listener, app()).await });
    assert_eq!(line(&mut ours), "READY=1");
    assert!(
        is_nonblocking(shared.as_raw_fd()),
        "serve made the socket non-blocking"
    );
    assert!(fetch(addr).ends_with("\r\n\r\nhello\n"));
    // SAFETY: kill has no memory preconditions; serve's handler takes it.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    assert_eq!(line(&mut ours), "STOPPING=1");
    runtime
        .block_on(async { tokio::time::timeout(PATIENCE, served).await })
        .expect("serve returned after SIGTERM")
        .unwrap()
        .unwrap();
    drop(shared);

    // 2. With a shutdown future of its own, as axum's
    // `with_graceful_shutdown`, on a tokio listener.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        devsup_serve::serve(listener, app())
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    assert_eq!(line(&mut ours), "READY=1");
    assert!(fetch(addr).ends_with("\r\n\r\nhello\n"));
    stop.send(()).unwrap();
    assert_eq!(line(&mut ours), "STOPPING=1");
    runtime
        .block_on(async { tokio::time::timeout(PATIENCE, served).await })
        .expect("serve returned after its shutdown future")
        .unwrap()
        .unwrap();
    // SAFETY: as above.
    unsafe { std::env::remove_var("DEVSUP_READY_FD") };
    runtime.shutdown_timeout(Duration::from_millis(100));
}
