//! The load generator against scripted servers: one test per outcome, and
//! the reconnect rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::thread::runtime;
use super::*;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nx-generation: 4\r\n\r\ngen=4 pid=9\n";

async fn read_request(stream: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read_u8().await {
            Ok(byte) => buf.push(byte),
            Err(_) => return false,
        }
    }
    true
}

/// A server on 127.0.0.1:0 that runs `handle` for every connection.
async fn serve<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(handle(stream));
        }
    });
    addr
}

fn config(addr: SocketAddr, mode: Mode, requests: u64) -> LoadConfig {
    LoadConfig {
        conns: 2,
        mode,
        requests_per_conn: Some(requests),
        request_timeout: Duration::from_secs(10),
        ..LoadConfig::new(addr)
    }
}

/// Runs 2 clients x `requests` against `handle`; asserts every request
/// was `expected`.
async fn only<F, Fut>(mode: Mode, requests: u64, expected: Outcome, handle: F) -> LoadReport
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let addr = serve(handle).await;
    let report = run(config(addr, mode, requests)).await;
    assert_eq!(report.total(), 2 * requests, "{report}");
    assert_eq!(report.count(expected), 2 * requests, "{report}");
    report
}

async fn keep_alive_ok(mut s: TcpStream) {
    while read_request(&mut s).await {
        s.write_all(OK).await.unwrap();
    }
}

#[tokio::test]
async fn ok_keep_alive() {
    let report = only(Mode::KeepAlive, 5, Outcome::Ok, keep_alive_ok).await;
    assert_eq!(report.connects, 2);
    assert_eq!(report.reconnects, 0);
    assert_eq!(report.generations, BTreeMap::from([(4, 10)]));
    assert_eq!(report.pids[&4], BTreeSet::from([9]));
    assert_eq!(report.latencies.len(), 10);
    assert!(report.p50() <= report.p99() && report.p99() <= report.max_latency());
    assert_eq!(report.failures(), 0);
    assert!(report.to_string().contains("failures: none"), "{report}");
}

#[tokio::test]
async fn ok_close() {
    let report = only(Mode::Close, 3, Outcome::Ok, |mut s| async move {
        read_request(&mut s).await;
        let close =
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 12\r\n\r\ngen=1 pid=2\n";
        s.write_all(close).await.unwrap();
    })
    .await;
    assert_eq!(report.connects, 6);
    assert_eq!(report.reconnects, 0, "close mode does not reconnect");
}

#[tokio::test]
async fn connection_close_header_is_a_reconnect() {
    let report = only(Mode::KeepAlive, 3, Outcome::Ok, |mut s| async move {
        read_request(&mut s).await;
        let close =
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 12\r\n\r\ngen=1 pid=2\n";
        s.write_all(close).await.unwrap();
        // Keep the socket open: the header alone must make us reconnect.
        let _ = s.read_u8().await;
    })
    .await;
    assert_eq!((report.connects, report.reconnects), (6, 6));
}

#[tokio::test]
async fn fin_before_reuse_is_a_reconnect() {
    // Current-thread runtime: the server writes and closes before the
    // client task runs again, so the FIN is there when it checks.
    let report = only(Mode::KeepAlive, 3, Outcome::Ok, |mut s| async move {
        read_request(&mut s).await;
        s.write_all(OK).await.unwrap();
        s.shutdown().await.unwrap();
        let _ = s.read_u8().await;
    })
    .await;
    assert_eq!(report.connects, 6);
    // The last response of each client is never followed by a check.
    assert_eq!(report.reconnects, 4);
}

#[tokio::test]
async fn reset() {
    only(Mode::KeepAlive, 2, Outcome::Reset, |mut s| async move {
        read_request(&mut s).await;
        s.set_zero_linger().unwrap();
    })
    .await;
}

#[tokio::test]
async fn eof_before_response() {
    only(
        Mode::KeepAlive,
        2,
        Outcome::EofBeforeResponse,
        |mut s| async move {
            read_request(&mut s).await;
        },
    )
    .await;
}

#[tokio::test]
async fn eof_racing_the_next_request() {
    // The server answers, then closes only after the next request is
    // in: the race a graceful drain must not lose.
    let report = run(config(
        serve(|mut s| async move {
            read_request(&mut s).await;
            s.write_all(OK).await.unwrap();
            read_request(&mut s).await;
        })
        .await,
        Mode::KeepAlive,
        2,
    ))
    .await;
    assert_eq!(report.ok(), 2, "{report}");
    assert_eq!(report.count(Outcome::EofBeforeResponse), 2, "{report}");
    assert_eq!(report.samples.len(), 2);
}

#[tokio::test]
async fn truncated() {
    only(Mode::Close, 2, Outcome::Truncated, |mut s| async move {
        read_request(&mut s).await;
        s.write_all(&OK[..OK.len() - 3]).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn bad_status_and_wrong_bodies() {
    only(
        Mode::KeepAlive,
        2,
        Outcome::BadStatus(503),
        |mut s| async move {
            while read_request(&mut s).await {
                s.write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
                    .await
                    .unwrap();
            }
        },
    )
    .await;
    only(Mode::KeepAlive, 2, Outcome::WrongBody, |mut s| async move {
        while read_request(&mut s).await {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
                .await
                .unwrap();
        }
    })
    .await;
    // The header says another generation than the body.
    only(Mode::KeepAlive, 2, Outcome::WrongBody, |mut s| async move {
        while read_request(&mut s).await {
            let wrong =
                b"HTTP/1.1 200 OK\r\nx-generation: 5\r\nContent-Length: 12\r\n\r\ngen=4 pid=9\n";
            s.write_all(wrong).await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn malformed() {
    only(Mode::Close, 1, Outcome::Malformed, |mut s| async move {
        read_request(&mut s).await;
        s.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn timeout() {
    let addr = serve(|mut s| async move {
        read_request(&mut s).await;
        let _ = s.read_u8().await;
    })
    .await;
    let report = run(LoadConfig {
        request_timeout: Duration::from_millis(50),
        ..config(addr, Mode::KeepAlive, 2)
    })
    .await;
    assert_eq!(report.count(Outcome::Timeout), 4, "{report}");
}

#[tokio::test]
async fn connect_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let report = run(config(addr, Mode::KeepAlive, 3)).await;
    assert_eq!(report.count(Outcome::ConnectRefused), 6, "{report}");
    assert_eq!(report.connects, 0);
    assert!(report.to_string().contains("refused=6"), "{report}");
}

#[test]
fn start_stop_and_progress() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The server runs on its own runtime thread, like devsup would.
    let server = std::thread::spawn(move || {
        runtime(1).block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = TcpListener::from_std(listener).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            keep_alive_ok(stream).await;
        })
    });
    let run = start(LoadConfig {
        conns: 1,
        ..LoadConfig::new(addr)
    });
    assert!(run.wait_ok(50, Duration::from_secs(30)));
    let report = run.finish();
    assert!(report.ok() >= 50, "{report}");
    assert_eq!(report.failures(), 0, "{report}");
    server.join().unwrap();
}
