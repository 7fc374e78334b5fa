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

use std::future::IntoFuture;
use std::process::ExitCode;

use devsup_serve::take_std_listener;
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
    // As for an axum router: READY once accepting, drain on SIGTERM.
    tokio::runtime::Runtime::new()?
        .block_on(devsup_serve::serve(listener, Greeter::new()).into_future())
}
