//! HTTP/2 with prior knowledge (h2c) and HTTP/1.1 on the same socket, and
//! the HTTP/2 drain: GOAWAY, the streams in flight finish, the connection
//! closes. The client is hyper's HTTP/2 client.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use bytes::Bytes;
use devsup_serve::{Drain, DrainReport, serve};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

const PATIENCE: Duration = Duration::from_secs(5);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    timeout(PATIENCE, f).await.expect("timed out")
}

#[derive(Deserialize)]
struct SleepQuery {
    ms: u64,
}

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<DrainReport>>,
}

async fn start(drain: Drain) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let app = Router::new().route("/", get(|| async { "hello\n" })).route(
        "/sleep",
        get(|Query(q): Query<SleepQuery>| async move {
            tokio::time::sleep(Duration::from_millis(q.ms)).await;
            format!("slept={}\n", q.ms)
        }),
    );
    let served = tokio::spawn(
        serve(listener, app)
            .drain(drain)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .run(),
    );
    Running { addr, stop, served }
}

type Sender = http2::SendRequest<Empty<Bytes>>;

/// An h2c connection (prior knowledge); the task driving it ends when the
/// server closes it.
async fn h2(addr: SocketAddr) -> (Sender, JoinHandle<hyper::Result<()>>) {
    let stream = within(TcpStream::connect(addr)).await.unwrap();
    let (sender, conn) = within(http2::handshake(TokioExecutor::new(), TokioIo::new(stream)))
        .await
        .unwrap();
    (sender, tokio::spawn(conn))
}

async fn get_body(sender: &mut Sender, path: &str) -> hyper::Result<(Version, u16, String)> {
    let req = Request::get(format!("http://test{path}"))
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(req).await?;
    let (version, status) = (response.version(), response.status().as_u16());
    let body = response.into_body().collect().await?.to_bytes();
    Ok((version, status, String::from_utf8(body.to_vec()).unwrap()))
}

#[tokio::test]
async fn h2c_and_http1_share_the_socket() {
    let running = start(Drain::default()).await;
    let (mut sender, _conn) = h2(running.addr).await;
    let got = within(get_body(&mut sender, "/")).await.unwrap();
    assert_eq!(got, (Version::HTTP_2, 200, "hello\n".to_owned()));

    let mut http1 = within(TcpStream::connect(running.addr)).await.unwrap();
    http1
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    within(http1.read_to_string(&mut raw)).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    assert!(raw.ends_with("\r\n\r\nhello\n"), "{raw}");

    running.stop.send(()).unwrap();
    within(running.served).await.unwrap().unwrap();
}

#[tokio::test]
async fn h2_drain_is_goaway_then_streams_finish() {
    // An idle grace far longer than the test: only GOAWAY can close the
    // connection this soon.
    let running = start(Drain {
        idle_grace: Duration::from_secs(30),
        ..Drain::default()
    })
    .await;
    let (mut sender, conn) = h2(running.addr).await;
    // A first stream, so the server knows the connection is HTTP/2.
    within(get_body(&mut sender, "/")).await.unwrap();
    // send_request queues the stream at once, so the one after it goes out
    // after it; once that later one is answered, the server has read the
    // slow stream's HEADERS (one connection reads its frames in order).
    let slow = sender.send_request(
        Request::get("http://test/sleep?ms=400")
            .body(Empty::new())
            .unwrap(),
    );
    within(get_body(&mut sender, "/")).await.unwrap();

    running.stop.send(()).unwrap();
    let started = Instant::now();
    // The stream in flight completes.
    let response = within(slow).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = within(response.into_body().collect()).await.unwrap();
    assert_eq!(body.to_bytes(), "slept=400\n");
    // Then the server closes the connection, cleanly, long before the
    // idle grace.
    within(conn).await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    // The client knows not to use it any more.
    assert!(sender.ready().await.is_err());
    let report = within(running.served).await.unwrap().unwrap();
    assert_eq!((report.open_at_start, report.dropped), (1, 0));
}
