//! The reference server's endpoints: each one makes one property of a
//! hand-off observable from outside (which generation answered, whether a
//! slow or streamed response survived, what was inherited, what leaked).

use std::collections::HashMap;
use std::ffi::OsString;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use hyper::body::Frame;
use serde::Deserialize;
use tokio::time::Sleep;

/// What every handler may need to know about this process.
#[derive(Debug, Clone)]
pub struct Identity {
    pub generation: u64,
    pub pid: u32,
    /// The environment as it was at startup: listenfd removes `LISTEN_FDS`
    /// and `LISTEN_PID` when it takes the sockets, and the tests want to
    /// see what was passed.
    pub env: Arc<HashMap<OsString, OsString>>,
}

pub fn router(id: Identity) -> Router {
    let generation = HeaderValue::from(id.generation);
    let pid = HeaderValue::from(id.pid);
    Router::new()
        .route("/", get(root))
        .route("/sleep", get(sleep))
        .route("/stream", get(stream))
        .route("/env", get(env))
        .route("/reload", get(reload))
        .route("/fds", get(fds))
        .route("/ws", get(ws))
        .route("/events", get(events))
        .layer(axum::middleware::map_response(
            move |mut response: Response| {
                let (generation, pid) = (generation.clone(), pid.clone());
                async move {
                    response.headers_mut().insert("x-generation", generation);
                    response.headers_mut().insert("x-pid", pid);
                    response
                }
            },
        ))
        .with_state(Arc::new(id))
}

type AppState = State<Arc<Identity>>;

async fn root(State(id): AppState) -> String {
    format!("gen={} pid={}\n", id.generation, id.pid)
}

#[derive(Deserialize)]
struct SleepQuery {
    ms: u64,
}

async fn sleep(State(id): AppState, Query(q): Query<SleepQuery>) -> String {
    tokio::time::sleep(Duration::from_millis(q.ms)).await;
    format!("gen={} pid={} slept={}\n", id.generation, id.pid, q.ms)
}

#[derive(Deserialize)]
struct StreamQuery {
    chunks: u64,
    interval_ms: Option<u64>,
}

async fn stream(State(id): AppState, Query(q): Query<StreamQuery>) -> Body {
    Body::new(Chunks {
        generation: id.generation,
        next: 0,
        count: q.chunks,
        interval: Duration::from_millis(q.interval_ms.unwrap_or(50)),
        wait: None,
    })
}

/// `count` chunks `gen=N chunk=i\n` (i from 0), the first at once and then
/// one every `interval`. Its size is unknown up front, so hyper sends it
/// chunked.
struct Chunks {
    generation: u64,
    next: u64,
    count: u64,
    interval: Duration,
    wait: Option<Pin<Box<Sleep>>>,
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.next >= self.count {
            return Poll::Ready(None);
        }
        if let Some(wait) = self.wait.as_mut() {
            ready!(wait.as_mut().poll(cx));
        }
        let chunk = format!("gen={} chunk={}\n", self.generation, self.next);
        self.next += 1;
        self.wait = Some(Box::pin(tokio::time::sleep(self.interval)));
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.count
    }
}

/// A WebSocket echo. It has no drain code on purpose: `serve` closes it
/// with 1012 on a drain. The first message is `gen=N pid=P`, so a client
/// can tell which generation it reached.
async fn ws(State(id): AppState, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |mut socket: WebSocket| async move {
        let hello = format!("gen={} pid={}", id.generation, id.pid);
        if socket.send(Message::Text(hello.into())).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = socket.recv().await {
            let echo = match msg {
                Message::Text(_) | Message::Binary(_) => msg,
                // tungstenite answers pings and closes by itself on the
                // next receive.
                _ => continue,
            };
            if socket.send(echo).await.is_err() {
                return;
            }
        }
    })
}

#[derive(Deserialize)]
struct EventsQuery {
    interval_ms: Option<u64>,
}

/// Server-sent events `gen=N tick=i`, the first at once, then one every
/// `interval_ms` (default 100) for ever. No drain code either: `serve` ends
/// the stream cleanly on a drain.
async fn events(State(id): AppState, Query(q): Query<EventsQuery>) -> Response {
    let interval = Duration::from_millis(q.interval_ms.unwrap_or(100));
    let generation = id.generation;
    let ticks = futures_util::stream::unfold(0u64, move |tick| async move {
        if tick > 0 {
            tokio::time::sleep(interval).await;
        }
        let event = Event::default().data(format!("gen={generation} tick={tick}"));
        Some((Ok::<_, std::convert::Infallible>(event), tick + 1))
    });
    Sse::new(ticks).into_response()
}

#[derive(Deserialize)]
struct EnvQuery {
    name: String,
}

async fn env(State(id): AppState, Query(q): Query<EnvQuery>) -> Response {
    match id.env.get(OsString::from(&q.name).as_os_str()) {
        // The bytes as they are on Unix (WTF-8 on Windows).
        Some(value) => value.as_encoded_bytes().to_vec().into_response(),
        None => (StatusCode::NOT_FOUND, format!("{} is not set\n", q.name)).into_response(),
    }
}

async fn reload() -> Response {
    match devsup_protocol::request_reload() {
        Ok(_) => "reload requested\n".into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload request failed: {err}\n"),
        )
            .into_response(),
    }
}

async fn fds() -> Response {
    match open_fds() {
        Ok(fds) => fds
            .iter()
            .map(|fd| format!("{fd}\n"))
            .collect::<String>()
            .into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot list /proc/self/fd: {err}\n"),
        )
            .into_response(),
    }
}

/// This process's open fds, leaving out the one used to list them.
fn open_fds() -> std::io::Result<Vec<u32>> {
    // The directory stream's own fd shows up in the listing; it is the only
    // entry that links back to the directory being read.
    let dir = std::fs::canonicalize("/proc/self/fd")?;
    let mut fds = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if std::fs::read_link(entry.path()).is_ok_and(|target| target == dir) {
            continue;
        }
        fds.push(fd);
    }
    fds.sort_unstable();
    Ok(fds)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn open_fds_sees_a_new_fd_and_not_the_listing() {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open("/dev/null").unwrap();
        let fds = open_fds().unwrap();
        assert!(fds.contains(&(file.as_raw_fd() as u32)), "{fds:?}");
        // Once closed, that number is the lowest free fd, so the listing
        // reads the directory through it, and must leave it out.
        let raw = file.as_raw_fd() as u32;
        drop(file);
        let fds = open_fds().unwrap();
        assert!(!fds.contains(&raw), "{fds:?}");
        assert!(fds.windows(2).all(|w| w[0] < w[1]), "{fds:?}");
    }
}
