//! A gRPC server (tonic, h2c) that reloads under devsup without failing a
//! call.
//!
//! A tonic service is a tower service, so `devsup_serve::serve` serves it
//! like an axum router: it speaks HTTP/2 with prior knowledge (h2c, what
//! gRPC uses on a plain socket) and, on a drain, sends GOAWAY, lets the
//! calls in flight finish and closes; gRPC clients open their next
//! connection to the new generation.
//!
//! Run it with `devsup -- cargo run -p example-tonic` (listens on
//! 127.0.0.1:50051 on its own).

use std::process::ExitCode;

use devsup_serve::{Drain, serve, shutdown_signal, take_std_listener};
use example_tonic::Greeter;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("example-tonic: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> std::io::Result<()> {
    // Before the runtime starts: taking the socket edits the environment.
    let listener = take_std_listener(([127, 0, 0, 1], 50051).into())?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let stop = shutdown_signal()?;
        let shutdown = async {
            stop.await;
            let _ = devsup_protocol::notify_stopping();
        };
        let server = tokio::spawn(serve(listener, Greeter::new(), shutdown, Drain::default()));
        devsup_protocol::notify_ready()?;
        server.await?
    })
}
