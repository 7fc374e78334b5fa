//! HTTP/2 with prior knowledge (h2c) and HTTP/1.1 on the same socket, and
//! the HTTP/2 drain: GOAWAY, the streams in flight finish, the connection
//! closes. The client is hyper's HTTP/2 client.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::{get, post};
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
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route(
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
    let running = start(Drain::default().with_idle_grace(Duration::from_secs(30))).await;
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

/// An HTTP/2 frame as the raw client below reads it.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `GET /` on `stream`, HPACK-encoded from the static table only (so the
/// encoder keeps no state): :method GET, :scheme http, :path /, and
/// :authority "test" as a literal without indexing.
fn get_root(stream: u32) -> Vec<u8> {
    let block = [0x82, 0x86, 0x84, 0x01, 0x04, b't', b'e', b's', b't'];
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &block)
}

/// The next frame, or `None` at the end of the stream; answers the
/// server's SETTINGS on the way.
async fn next_frame(tcp: &mut TcpStream) -> Option<Frame> {
    let mut head = [0u8; 9];
    match within(tcp.read_exact(&mut head)).await {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(err) => panic!("reading a frame: {err}"),
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    within(tcp.read_exact(&mut payload)).await.unwrap();
    let frame = Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    };
    if frame.kind == SETTINGS && frame.flags & ACK == 0 {
        tcp.write_all(&self::frame(SETTINGS, ACK, 0, &[]))
            .await
            .unwrap();
    }
    Some(frame)
}

/// GOAWAY's last stream id and error code.
fn goaway(frame: &Frame) -> (u32, u32) {
    let p = &frame.payload;
    (
        u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
        u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
    )
}

/// The graceful shutdown's first step, read off the connection: the first
/// GOAWAY (last stream, error code) and the payload of the PING the server
/// waits on before its final GOAWAY.
async fn first_goaway_and_ping(tcp: &mut TcpStream) -> (Option<(u32, u32)>, Vec<u8>) {
    let mut first = None;
    loop {
        let f = next_frame(tcp)
            .await
            .expect("GOAWAY and PING, not the end of the connection");
        match f.kind {
            GOAWAY => first = Some(goaway(&f)),
            PING if f.flags & ACK == 0 => return (first, f.payload),
            _ => {}
        }
    }
}

/// The last GOAWAY before the server ends the connection.
async fn last_goaway(tcp: &mut TcpStream) -> Option<(u32, u32)> {
    let mut last = None;
    while let Some(f) = next_frame(tcp).await {
        if f.kind == GOAWAY {
            last = Some(goaway(&f));
        }
    }
    last
}

/// A client may send frames after the server's last GOAWAY and FIN: it
/// opened the stream before it read the GOAWAY that leaves the stream out.
/// The server must not reset the connection for that, or the reset can
/// reach the client before it reads that GOAWAY, and the client then fails
/// the stream as broken instead of as refused (safe to retry). This is how
/// a tonic client lost gRPC calls in a reload under load. The frames here
/// are written by hand, since no client library writes after it has seen
/// the FIN.
#[tokio::test]
async fn h2_late_frames_after_goaway_get_no_reset() {
    let running = start(Drain::default()).await;
    let mut tcp = within(TcpStream::connect(running.addr)).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    hello.extend(get_root(1));
    tcp.write_all(&hello).await.unwrap();
    // Stream 1 is answered: the server knows the connection is HTTP/2.
    loop {
        let f = next_frame(&mut tcp).await.expect("a response to stream 1");
        if f.stream == 1 && f.kind == DATA && f.flags & END_STREAM != 0 {
            break;
        }
    }

    running.stop.send(()).unwrap();
    // The graceful shutdown: GOAWAY admitting every stream, then a PING.
    let (first, ping) = first_goaway_and_ping(&mut tcp).await;
    assert_eq!(first, Some((0x7fff_ffff, 0)));
    // Stream 3 was opened before the client read that GOAWAY; its HEADERS
    // go out after the PING's answer.
    tcp.write_all(&frame(PING, ACK, 0, &ping)).await.unwrap();
    // The final GOAWAY leaves stream 3 out (last stream 1, NO_ERROR), and
    // with nothing in flight the server ends the connection: FIN.
    let last = last_goaway(&mut tcp).await;
    assert_eq!(last, Some((1, 0)));

    // Stream 3's HEADERS, arriving now.
    let late = tcp.write_all(&get_root(3)).await;
    let shut = tcp.shutdown().await;
    let report = within(running.served).await.unwrap().unwrap();
    // Had the server closed its socket with the late bytes unread (or
    // arriving after), the kernel would have answered with a reset.
    let reset = tcp.take_error().unwrap();
    assert!(
        late.is_ok() && shut.is_ok() && reset.is_none(),
        "the server reset the connection: write {late:?}, shutdown {shut:?}, socket error {reset:?}"
    );
    assert_eq!((report.open_at_start, report.dropped), (1, 0));
}

/// What became of one stream a client tried to open while the server
/// drained, as the h2 crate's client (not hyper's) reports it.
#[derive(Debug)]
enum Outcome {
    /// 200 with the body echoed.
    Answered,
    /// Never sent: the client's h2 refused to open it, because a GOAWAY had
    /// arrived (RFC 9113 §6.8: no new stream after a GOAWAY). Not a
    /// failure; the client may retry it elsewhere.
    NotSent,
    /// Sent, then refused by the server unprocessed: above the final
    /// GOAWAY's last stream id, or reset with REFUSED_STREAM. Safe to
    /// retry (RFC 9113 §8.7).
    Refused,
    /// Anything else: a failure, with the stream id and why.
    Failed(String),
}

/// Whether h2 says the stream was refused unprocessed: the server's GOAWAY
/// (NO_ERROR) left it out, or the server reset it with REFUSED_STREAM.
fn refused(err: &h2::Error) -> bool {
    let go_away = err.is_go_away() && err.is_remote() && err.reason() == Some(h2::Reason::NO_ERROR);
    go_away || err.reason() == Some(h2::Reason::REFUSED_STREAM)
}

/// One POST /echo whose body goes out after its HEADERS, as a gRPC
/// message does; `None` when the connection takes no new stream.
async fn echo_later(sender: h2::client::SendRequest<Bytes>) -> Option<Outcome> {
    let mut sender = sender.ready().await.ok()?;
    let request = Request::post("http://test/echo").body(()).unwrap();
    let Ok((response, mut body)) = sender.send_request(request, false) else {
        return Some(Outcome::NotSent);
    };
    let id = response.stream_id();
    // The body in a later write, so a stream that crossed the GOAWAY still
    // has a frame to send.
    tokio::task::yield_now().await;
    // A failure here shows again on the response, which says why.
    let _ = body.send_data(Bytes::from_static(b"hello"), true);
    let answer = async {
        let response = response.await?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        Ok::<_, h2::Error>((status, got))
    };
    // Each stream's own bound: one that hangs is reported with its id.
    Some(match timeout(PATIENCE, answer).await {
        Ok(Ok((200, body))) if body == b"hello" => Outcome::Answered,
        Ok(Ok(other)) => Outcome::Failed(format!("{id:?}: {other:?}")),
        Ok(Err(err)) if refused(&err) => Outcome::Refused,
        Ok(Err(err)) => Outcome::Failed(format!("{id:?}: {err}")),
        Err(_) => Outcome::Failed(format!("{id:?}: no answer, no refusal in {PATIENCE:?}")),
    })
}

/// One drain with streams racing it: `SENDERS` tasks keep opening streams
/// on one connection until it takes no more; the server drains once each
/// has had a stream answered. Returns every stream's outcome.
async fn race_one_drain() -> Vec<Outcome> {
    const SENDERS: usize = 16;
    let running = start(Drain::default()).await;
    let tcp = within(TcpStream::connect(running.addr)).await.unwrap();
    let (sender, conn) = within(h2::client::handshake(tcp)).await.unwrap();
    let conn = tokio::spawn(conn);
    let (flowing_tx, mut flowing) = tokio::sync::mpsc::channel::<()>(SENDERS);
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (sender, flowing) = (sender.clone(), flowing_tx.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while let Some(outcome) = echo_later(sender.clone()).await {
                    let last = matches!(outcome, Outcome::NotSent);
                    if outcomes.is_empty() {
                        let _ = flowing.send(()).await;
                    }
                    outcomes.push(outcome);
                    if last {
                        break;
                    }
                }
                outcomes
            })
        })
        .collect();
    drop((sender, flowing_tx));
    for _ in 0..SENDERS {
        within(flowing.recv()).await;
    }
    running.stop.send(()).unwrap();
    let mut outcomes = Vec::new();
    for sender in senders {
        // Each stream is bounded in echo_later: the bound here is a
        // safety net, a sender can only pass it by a defect in this test.
        outcomes.extend(
            timeout(PATIENCE * 4, sender)
                .await
                .expect("a sender hung")
                .unwrap(),
        );
    }
    // The connection ends: the server closed it after its last stream.
    let _ = within(conn).await.unwrap();
    within(running.served).await.unwrap().unwrap();
    outcomes
}

/// Clients keep opening streams on one connection while the server
/// drains: every stream is answered, or refused unprocessed (safe to
/// retry), none fails, is reset after it began or is left hanging, and the
/// connection closes. Each request's body goes out after its HEADERS, as a
/// gRPC message does, the shape of the reload that lost tonic calls (see
/// h2_late_frames_after_goaway_get_no_reset).
///
/// The client is the h2 crate's, which reports each stream's fate on its
/// own (answered, refused by GOAWAY or REFUSED_STREAM, an error, or no
/// answer within a bound, with its stream id). With hyper's client (its
/// `SendRequest` over h2) this test timed out about one run in ten (1 of
/// 10 runs here before the change), a request neither answered nor failed
/// within 5 s. With h2's client, in the 100 runs (10,000 drains) below, no
/// stream the client sent was left without an answer or a refusal: the
/// server answered, and the hang was in what hyper's client made of it,
/// which is what reqwest#1323 and hyper#2500 report too (an inference
/// from those runs, not traced inside hyper).
///
/// Why streams are refused at all, despite the two-step GOAWAY: h2's
/// client writes its PING acknowledgement before the HEADERS of streams
/// the application had opened but h2 had not written yet, so they reach
/// the server after the acknowledgement, and the final GOAWAY leaves them
/// out (seen with `h2=debug` tracing: `received GoAway(2147483647)`,
/// `received Ping`, `send Ping { ack: true }`, then `send Headers` of
/// streams 33 to 61, then `received GoAway(31)`). They were never
/// processed, and h2 fails them as refused by the GOAWAY, which a client
/// may retry.
///
/// Checked: 50 runs in a row, on a quiet 2-core machine and again with
/// both cores kept busy by two `while :; do :; done` loops, of
/// `for i in $(seq 50); do target/debug/deps/h2-HASH racing || break; done`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_racing_the_drain_are_answered_or_refused() {
    const ROUNDS: usize = 100;
    let (mut answered, mut not_sent, mut refused) = (0, 0, 0);
    let mut failed = Vec::new();
    for _ in 0..ROUNDS {
        for outcome in race_one_drain().await {
            match outcome {
                Outcome::Answered => answered += 1,
                Outcome::NotSent => not_sent += 1,
                Outcome::Refused => refused += 1,
                Outcome::Failed(why) => failed.push(why),
            }
        }
    }
    eprintln!(
        "{ROUNDS} drains: {answered} streams answered, {refused} refused unprocessed, \
         {not_sent} not opened after GOAWAY"
    );
    assert!(failed.is_empty(), "{} failed: {failed:#?}", failed.len());
    assert!(answered >= ROUNDS * 16, "{answered} answered");
}

/// A connection whose client sent the HTTP/2 preface but no request yet
/// when the drain began still drains the HTTP/2 way, at once: GOAWAY
/// admitting every stream, a PING, then the final GOAWAY, then FIN. Before
/// this was fixed, `serve` told HTTP/2 by a connection's first request, so
/// such a connection drained like an idle HTTP/1.1 one: no GOAWAY until it
/// had been idle for the idle grace, which a client that starts streaming
/// now never gives it; it stayed open, streams in flight, until the drain
/// timeout killed them. The idle grace here is far longer than the test.
#[tokio::test]
async fn h2_connection_without_a_request_gets_the_two_step_goaway() {
    let running = start(Drain::default().with_idle_grace(Duration::from_secs(30))).await;
    let mut tcp = within(TcpStream::connect(running.addr)).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    tcp.write_all(&hello).await.unwrap();
    // The server's SETTINGS: hyper serves the connection as HTTP/2.
    loop {
        let f = next_frame(&mut tcp).await.expect("the server's SETTINGS");
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            break;
        }
    }

    running.stop.send(()).unwrap();
    let (first, ping) = first_goaway_and_ping(&mut tcp).await;
    assert_eq!(first, Some((0x7fff_ffff, 0)));
    tcp.write_all(&frame(PING, ACK, 0, &ping)).await.unwrap();
    let last = last_goaway(&mut tcp).await;
    // No stream was opened: last stream 0, NO_ERROR.
    assert_eq!(last, Some((0, 0)));
    tcp.shutdown().await.unwrap();
    let report = within(running.served).await.unwrap().unwrap();
    assert_eq!((report.open_at_start, report.dropped), (1, 0));
}
