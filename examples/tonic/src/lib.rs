//! A gRPC service, `devsup.example.Greeter`, written by hand the way
//! `tonic-build` would generate it from this proto:
//!
//! ```proto
//! syntax = "proto3";
//! package devsup.example;
//! service Greeter { rpc Hello(HelloRequest) returns (HelloReply); }
//! message HelloRequest { string name = 1; }
//! message HelloReply { string message = 1; uint64 generation = 2; uint32 pid = 3; }
//! ```
//!
//! Written by hand so the example needs no `protoc` and no build script;
//! a real service would use `tonic-build` (with `protox` to avoid `protoc`).
//! The service is a plain tower service over HTTP requests, which is what
//! `devsup_serve::serve` takes: no tonic transport server is involved.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// The method's path on the wire.
pub const HELLO_PATH: &str = "/devsup.example.Greeter/Hello";

/// `HelloRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    /// Who to greet.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `HelloReply`: the greeting, and which generation made it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// `hello NAME`.
    #[prost(string, tag = "1")]
    pub message: String,
    /// `DEVSUP_GENERATION` of the server that answered (0 without devsup).
    #[prost(uint64, tag = "2")]
    pub generation: u64,
    /// The pid of the server that answered.
    #[prost(uint32, tag = "3")]
    pub pid: u32,
}

/// The Greeter service, as a tower service over HTTP/2 requests.
#[derive(Debug, Clone)]
pub struct Greeter {
    generation: u64,
    pid: u32,
}

impl Greeter {
    /// A greeter that names this process's generation and pid.
    pub fn new() -> Greeter {
        Greeter {
            generation: devsup_protocol::generation().unwrap_or(0),
            pid: std::process::id(),
        }
    }
}

impl Default for Greeter {
    fn default() -> Self {
        Greeter::new()
    }
}

/// The `Hello` method itself.
struct Hello(Greeter);

impl tonic::server::UnaryService<HelloRequest> for Hello {
    type Response = HelloReply;
    type Future = std::future::Ready<Result<Response<HelloReply>, Status>>;

    fn call(&mut self, request: Request<HelloRequest>) -> Self::Future {
        let name = request.into_inner().name;
        std::future::ready(Ok(Response::new(HelloReply {
            message: format!("hello {name}"),
            generation: self.0.generation,
            pid: self.0.pid,
        })))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<B> tower::Service<http::Request<B>> for Greeter
where
    B: hyper::body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != HELLO_PATH {
            let status = Status::unimplemented(format!("no method {}", request.uri().path()));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let hello = Hello(self.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
            Ok(grpc.unary(hello, request).await)
        })
    }
}

/// A client for the Greeter service over a tonic channel.
#[derive(Debug, Clone)]
pub struct GreeterClient {
    inner: tonic::client::Grpc<tonic::transport::Channel>,
}

impl GreeterClient {
    /// A client on `channel` (h2c, e.g. `Channel::from_static("http://127.0.0.1:50051")`).
    pub fn new(channel: tonic::transport::Channel) -> GreeterClient {
        GreeterClient {
            inner: tonic::client::Grpc::new(channel),
        }
    }

    /// Calls `Hello`, retrying a call that never left this client (see
    /// [`never_sent`]); returns the reply and how many such retries it took.
    pub async fn hello(&mut self, name: &str) -> Result<(HelloReply, u32), Status> {
        let mut retries = 0;
        loop {
            match self.hello_once(name).await {
                Err(status) if never_sent(&status) && retries < 3 => retries += 1,
                result => return result.map(|reply| (reply, retries)),
            }
        }
    }

    /// Calls `Hello` once.
    pub async fn hello_once(&mut self, name: &str) -> Result<HelloReply, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
        let request = Request::new(HelloRequest {
            name: name.to_owned(),
        });
        let path = http::uri::PathAndQuery::from_static(HELLO_PATH);
        let response = self
            .inner
            .unary(request, path, ProstCodec::default())
            .await?;
        Ok(response.into_inner())
    }
}

/// Whether a failed call was never processed by the server, so that it can
/// be sent again: hyper cancelled it before writing it, because the
/// connection it was queued on had closed; or the client's HTTP/2 layer
/// refused to open its stream because the server had sent GOAWAY (with
/// NO_ERROR: a graceful shutdown), which RFC 9113 §6.8 defines as "not
/// processed, safe to retry".
///
/// That is what a reload looks like from a client with a call queued at the
/// instant the server's GOAWAY arrives: the server drains the HTTP/2 way
/// (GOAWAY, the calls in flight finish), the client's HTTP/2 connection
/// stops taking new streams, and a call queued for it meanwhile fails
/// unsent. No server can prevent that race. The server never saw
/// such a call, so retrying it is safe whatever it does; gRPC calls this a
/// transparent retry, and grpc-go and grpc-java do it on their own, but
/// tonic does not, so a tonic client does it itself, as here.
pub fn never_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        source = err.source();
    }
    false
}
