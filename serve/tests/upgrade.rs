//! Long-lived exchanges through `serve` and its drain: a WebSocket route
//! answers 101 and then speaks WebSocket (checked with tokio-tungstenite as
//! an independent client), and on a drain WebSockets get a close frame and
//! event streams end cleanly, a short grace after the drain starts, with
//! or without the application's help.

use std::future::Future;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::extract::Extension;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use devsup_serve::{CLOSE_SERVICE_RESTART, Drain, DrainReport, DrainToken, serve};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Bounds every wait, so a broken server fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(5);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    timeout(PATIENCE, f).await.expect("timed out")
}

async fn echo(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            let echo = match msg {
                Message::Text(text) => Message::Text(text),
                Message::Binary(data) => Message::Binary(data),
                // tungstenite queues the close reply; the next recv sends
                // it and then ends the stream.
                _ => continue,
            };
            if socket.send(echo).await.is_err() {
                break;
            }
        }
    })
}

/// Echoes like [`echo`], and closes with its own reason when the drain
/// starts.
async fn cooperative(ws: WebSocketUpgrade, Extension(drain): Extension<DrainToken>) -> Response {
    ws.on_upgrade(move |mut socket: WebSocket| async move {
        loop {
            tokio::select! {
                msg = socket.recv() => match msg {
                    Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                        if socket.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                },
                () = drain.drained() => {
                    let close = axum::extract::ws::CloseFrame {
                        code: CLOSE_SERVICE_RESTART,
                        reason: "app says bye".into(),
                    };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    // Wait for the client's answer, as RFC 6455 asks.
                    while let Some(Ok(_)) = socket.recv().await {}
                    return;
                }
            }
        }
    })
}

/// Holds the socket and never touches it again.
async fn stuck(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|socket: WebSocket| async move {
        std::future::pending::<()>().await;
        drop(socket);
    })
}

/// Sends a message every 20 ms and never reads; tells the test when it
/// has ended.
async fn push_only(ws: WebSocketUpgrade, Extension(ended): Extension<Ended>) -> Response {
    ws.on_upgrade(move |mut socket: WebSocket| async move {
        let mut n = 0u64;
        while socket
            .send(Message::Text(format!("push {n}").into()))
            .await
            .is_ok()
        {
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = ended.0.send(());
    })
}

/// A WebSocket answered by hand (hyper's upgrade, no WebSocket library)
/// and used from two tasks, as an application that splits its socket into
/// a reader and a writer does: the reader waits in a read; then the writer
/// sends `hello` and waits for the reader to end. On the drain, the writer
/// is the task that used the socket last, but only the reader will touch
/// it again: the close frame can go out only if the reader is woken.
async fn split_tasks(mut request: axum::extract::Request) -> Response {
    let key = request
        .headers()
        .get("sec-websocket-key")
        .map(|k| tungstenite::handshake::derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (mut reader, mut writer) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        let (parked_tx, parked) = oneshot::channel::<()>();
        let (done_tx, done) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            let mut read = std::pin::pin!(reader.read(&mut buf));
            // Poll the read once, so that it waits before the writer writes.
            let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
            let _ = parked_tx.send(());
            if first.is_pending() {
                // Until the client's answering close frame, or the end.
                let _ = read.await;
            }
            let _ = done_tx.send(());
        });
        if parked.await.is_ok() && writer.write_all(b"\x81\x05hello").await.is_ok() {
            let _ = writer.flush().await;
        }
        let _ = done.await;
    });
    Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", key)
        .body(axum::body::Body::empty())
        .unwrap()
}

#[derive(Clone)]
struct Ended(tokio::sync::mpsc::UnboundedSender<()>);

/// An event every 20 ms, for ever.
async fn events() -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>
{
    let ticks = futures_util::stream::unfold(0u64, |n| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((Ok(Event::default().data(format!("tick {n}"))), n + 1))
    });
    Sse::new(ticks)
}

struct Running {
    addr: SocketAddr,
    ended: tokio::sync::mpsc::UnboundedReceiver<()>,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<DrainReport>>,
}

impl Running {
    /// Starts the drain; returns when it started.
    async fn drain(self) -> (Instant, JoinHandle<std::io::Result<DrainReport>>) {
        self.stop.send(()).unwrap();
        (Instant::now(), self.served)
    }
}

async fn start() -> Running {
    start_with(Drain::default()).await
}

async fn start_with(drain: Drain) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (ended_tx, ended) = tokio::sync::mpsc::unbounded_channel();
    let app = Router::new()
        .route("/ws", get(echo))
        .route("/ws-push", get(push_only))
        .route("/ws-cooperative", get(cooperative))
        .route("/ws-stuck", get(stuck))
        .route("/ws-split", get(split_tasks))
        .route("/events", get(events))
        .route("/", get(|| async { "hello\n" }))
        .layer(Extension(Ended(ended_tx)));
    let served = tokio::spawn(
        serve(listener, app)
            .drain(drain)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .run(),
    );
    Running {
        addr,
        ended,
        stop,
        served,
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn connect(addr: SocketAddr, path: &str) -> Ws {
    let url = format!("ws://{addr}{path}");
    let (mut ws, _) = within(tokio_tungstenite::connect_async(url)).await.unwrap();
    if path.contains("split") {
        // It says hello itself, and reads only the answer to its close.
        return ws;
    }
    // One round trip: the server has upgraded and its handler runs.
    within(ws.send(tungstenite::Message::text("ping")))
        .await
        .unwrap();
    if !path.contains("stuck") && !path.contains("push") {
        let got = within(ws.next()).await.expect("a message").unwrap();
        assert_eq!(got, tungstenite::Message::text("ping"));
    }
    ws
}

/// Reads until the server's close frame and then the end of the stream;
/// returns the close frame's code and reason. Panics on a reset or an end
/// without a close frame.
async fn close_frame(ws: &mut Ws) -> (u16, String) {
    let mut close = None;
    loop {
        match within(ws.next()).await {
            Some(Ok(tungstenite::Message::Close(frame))) => {
                let frame = frame.expect("a close frame with a code");
                close = Some((u16::from(frame.code), frame.reason.to_string()));
            }
            Some(Ok(_)) => {}
            Some(Err(tungstenite::Error::ConnectionClosed)) | None => break,
            Some(Err(err)) => panic!("not a clean close: {err} (close so far: {close:?})"),
        }
    }
    close.expect("the stream ended without a close frame")
}

fn long_lived(grace_ms: u64) -> Drain {
    Drain::default().with_long_lived_grace(Duration::from_millis(grace_ms))
}

#[tokio::test]
async fn websocket_echo_through_serve() {
    let running = start().await;
    let url = format!("ws://{}/ws", running.addr);
    let (mut ws, response) = within(tokio_tungstenite::connect_async(url)).await.unwrap();
    assert_eq!(response.status(), 101);
    for i in 0..3 {
        let text = format!("hello {i}");
        within(ws.send(tungstenite::Message::text(text.clone())))
            .await
            .unwrap();
        let got = within(ws.next()).await.expect("a message").unwrap();
        assert_eq!(got, tungstenite::Message::text(text));
    }
    within(ws.send(tungstenite::Message::binary(vec![0u8, 1, 2, 255])))
        .await
        .unwrap();
    let got = within(ws.next()).await.expect("a message").unwrap();
    assert_eq!(got, tungstenite::Message::binary(vec![0u8, 1, 2, 255]));
    within(ws.close(None)).await.unwrap();
    // The server answers the close and the stream ends.
    while let Some(msg) = within(ws.next()).await {
        match msg {
            Ok(tungstenite::Message::Close(_)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(err) => panic!("{err}"),
        }
    }
    running.stop.send(()).unwrap();
    within(running.served).await.unwrap().unwrap();
}

#[tokio::test]
async fn websocket_gets_1012_at_the_grace_without_app_code() {
    let grace = Duration::from_millis(150);
    let running = start_with(long_lived(150)).await;
    let mut ws = connect(running.addr, "/ws").await;
    let (started, served) = running.drain().await;
    let (code, reason) = close_frame(&mut ws).await;
    let closed_after = started.elapsed();
    assert_eq!(code, 1012);
    assert_eq!(code, u16::from(CloseCode::Restart));
    assert_eq!(reason, "restart");
    assert!(closed_after >= grace, "closed after {closed_after:?}");
    let report = within(served).await.unwrap().unwrap();
    assert_eq!((report.open_at_start, report.dropped), (1, 0));
    assert!(report.elapsed < Duration::from_secs(2), "{report:?}");
}

#[tokio::test]
async fn websocket_mid_message_is_closed_after_the_frame() {
    // The client keeps the server busy echoing large messages through the
    // drain: the close frame must come between two whole frames.
    let running = start_with(long_lived(50)).await;
    let mut ws = connect(running.addr, "/ws").await;
    let big = vec![0x5a_u8; 200_000];
    let (_started, served) = running.drain().await;
    let mut echoed = 0;
    let code = loop {
        // Errors once the server has closed: the close frame is read below.
        let _ = ws.send(tungstenite::Message::binary(big.clone())).await;
        match within(ws.next()).await {
            Some(Ok(tungstenite::Message::Binary(data))) => {
                assert_eq!(data.len(), big.len(), "a cut message");
                echoed += 1;
            }
            Some(Ok(tungstenite::Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            other => panic!("unexpected {other:?} after {echoed} echoes"),
        }
    };
    assert_eq!(code, Some(1012));
    within(served).await.unwrap().unwrap();
}

#[tokio::test]
async fn app_closes_its_websocket_on_the_drain_token() {
    // A grace so long that only the application can have closed it.
    let running = start_with(long_lived(10_000)).await;
    let mut ws = connect(running.addr, "/ws-cooperative").await;
    let (started, served) = running.drain().await;
    let (code, reason) = close_frame(&mut ws).await;
    assert_eq!((code, reason.as_str()), (1012, "app says bye"));
    assert!(started.elapsed() < Duration::from_secs(5));
    let report = within(served).await.unwrap().unwrap();
    assert_eq!(report.dropped, 0);
}

#[tokio::test]
async fn stuck_websocket_is_shut_down_a_grace_after_its_close() {
    let grace = Duration::from_millis(100);
    let running = start_with(long_lived(100)).await;
    let mut ws = connect(running.addr, "/ws-stuck").await;
    let (_started, served) = running.drain().await;
    // The app never reads or writes again, so no close frame can be
    // written into its stream; the socket is shut down instead.
    let end = within(ws.next()).await;
    assert!(
        !matches!(end, Some(Ok(tungstenite::Message::Close(_)))),
        "{end:?}"
    );
    let report = within(served).await.unwrap().unwrap();
    assert!(report.elapsed >= 2 * grace, "{report:?}");
    assert!(report.elapsed < Duration::from_secs(3), "{report:?}");
}

#[tokio::test]
async fn event_stream_ends_cleanly_at_the_grace() {
    let grace = Duration::from_millis(150);
    let running = start_with(long_lived(150)).await;
    let mut stream = within(TcpStream::connect(running.addr)).await.unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    // Wait for the first event, so the stream is in flight at the drain.
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    while !String::from_utf8_lossy(&got).contains("data: tick 0") {
        let n = within(stream.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let (started, served) = running.drain().await;
    // Then the end of the stream: the last chunk, and the connection closed
    // (read to EOF without a reset).
    within(stream.read_to_end(&mut got)).await.unwrap();
    let ended_after = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("content-type: text/event-stream"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(text.ends_with("\r\n0\r\n\r\n"), "not a clean end: {text:?}");
    assert!(ended_after >= grace, "ended after {ended_after:?}");
    let report = within(served).await.unwrap().unwrap();
    assert_eq!(report.dropped, 0);
    assert!(report.elapsed < Duration::from_secs(2), "{report:?}");
}

#[tokio::test]
async fn process_wide_drain_token_sees_a_drain() {
    let token = devsup_serve::draining();
    let running = start().await;
    let (_started, served) = running.drain().await;
    within(token.drained()).await;
    assert!(token.is_draining());
    within(served).await.unwrap().unwrap();
}

#[tokio::test]
async fn push_only_websocket_gets_1012_and_its_app_ends() {
    let running = start_with(long_lived(100)).await;
    let mut ended = running.ended;
    let running = Running {
        ended: tokio::sync::mpsc::unbounded_channel().1,
        ..running
    };
    let mut ws = connect(running.addr, "/ws-push").await;
    let first = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(first, tungstenite::Message::text("push 0"));
    let (_started, served) = running.drain().await;
    // Pushes, then the close frame between two of them, then the end.
    let (code, _) = close_frame(&mut ws).await;
    assert_eq!(code, 1012);
    // The app, which never reads, learns from a failed send and ends.
    within(ended.recv()).await.expect("the handler ended");
    let report = within(served).await.unwrap().unwrap();
    assert!(report.elapsed < Duration::from_secs(2), "{report:?}");
}

/// Every WebSocket gets the 1012 close frame on a drain, however many
/// there are and whichever task of the application last used its socket.
/// (A reader parked in a read while a writer task had used the socket last
/// was never woken: its connection ended with no close frame, shut down a
/// grace later.)
#[tokio::test]
async fn every_websocket_gets_1012_whichever_task_used_it_last() {
    const EACH: usize = 40;
    let running = start_with(long_lived(100)).await;
    let mut sockets = Vec::new();
    for i in 0..EACH * 2 {
        let path = if i % 2 == 0 { "/ws" } else { "/ws-split" };
        let mut ws = connect(running.addr, path).await;
        if path == "/ws-split" {
            let hello = within(ws.next()).await.expect("hello").unwrap();
            assert_eq!(hello, tungstenite::Message::text("hello"));
        }
        sockets.push((path, ws));
    }
    let (_started, served) = running.drain().await;
    let closes = futures_util::future::join_all(
        sockets
            .iter_mut()
            .map(|(path, ws)| async move { (*path, close_frame(ws).await.0) }),
    )
    .await;
    let not_1012: Vec<_> = closes.iter().filter(|(_, code)| *code != 1012).collect();
    assert!(not_1012.is_empty(), "{not_1012:?}");
    let report = within(served).await.unwrap().unwrap();
    assert_eq!(
        (report.open_at_start, report.dropped),
        (EACH * 2, 0),
        "{report:?}"
    );
}
