//! Upgraded connections through `serve`: a WebSocket route answers 101 and
//! then speaks WebSocket, checked with tokio-tungstenite as an independent
//! client.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use devsup_serve::{DrainReport, Server};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite;

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

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<DrainReport>>,
}

async fn start() -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let app = Router::new()
        .route("/ws", get(echo))
        .route("/", get(|| async { "hello\n" }));
    let served = tokio::spawn(Server::new([listener]).serve(app, async {
        let _ = stopped.await;
    }));
    Running { addr, stop, served }
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
