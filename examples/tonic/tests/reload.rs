//! A tonic client keeps calling the example gRPC service while devsup
//! reloads it: every call succeeds, and the calls reach each new
//! generation. Calls cancelled unsent by the client's HTTP/2 connection as
//! a GOAWAY arrives are retried by the client (see
//! `example_tonic::never_sent`) and counted; any other error fails.

#[cfg(unix)]
use std::collections::BTreeMap;
#[cfg(unix)]
use std::sync::{Arc, Mutex};

#[cfg(unix)]
use devsup_tests::harness::{Devsup, TIMEOUT, wait_until};
#[cfg(unix)]
use example_tonic::GreeterClient;
#[cfg(unix)]
use tokio::sync::watch;

#[cfg(unix)]
const CLIENTS: usize = 4;
#[cfg(unix)]
const RELOADS: u64 = 10;

#[cfg(unix)]
#[derive(Debug, Default)]
struct Calls {
    /// Successful calls by the generation that answered.
    ok: BTreeMap<u64, u64>,
    /// Calls retried because they never left the client.
    retried: u64,
    failed: Vec<String>,
}

#[cfg(unix)]
#[test]
fn grpc_calls_survive_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server(env!("CARGO_BIN_EXE_example-tonic"))
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let url = format!("http://{}", devsup.addr());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let channel = runtime.block_on(async {
        tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .expect("connecting to generation 1")
    });
    let calls = Arc::new(Mutex::new(Calls::default()));
    let (stop, stopped) = watch::channel(false);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let mut client = GreeterClient::new(channel.clone());
            let calls = calls.clone();
            let stopped = stopped.clone();
            runtime.spawn(async move {
                let name = format!("client {i}");
                while !*stopped.borrow() {
                    match client.hello(&name).await {
                        Ok((reply, retries)) => {
                            assert_eq!(reply.message, format!("hello {name}"));
                            let mut calls = calls.lock().unwrap();
                            *calls.ok.entry(reply.generation).or_default() += 1;
                            calls.retried += u64::from(retries);
                        }
                        Err(status) => calls.lock().unwrap().failed.push(status.to_string()),
                    }
                }
            })
        })
        .collect();
    let answered_by = |generation: u64| {
        wait_until(TIMEOUT, || {
            calls
                .lock()
                .unwrap()
                .ok
                .get(&generation)
                .is_some_and(|&n| n >= 20)
        })
    };
    assert!(answered_by(1), "{:?}", calls.lock().unwrap());
    for generation in 2..=RELOADS + 1 {
        devsup.reload();
        devsup.wait_event(generation, "ready", TIMEOUT);
        devsup.wait_event(generation - 1, "exited", TIMEOUT);
        // The clients moved to the new generation.
        assert!(answered_by(generation), "{:?}", calls.lock().unwrap());
    }
    stop.send_replace(true);
    runtime.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    let calls = calls.lock().unwrap();
    let total: u64 = calls.ok.values().sum();
    eprintln!(
        "{total} gRPC calls over {RELOADS} reloads, {} failed, {} retried unsent; by generation: {:?}",
        calls.failed.len(),
        calls.retried,
        calls.ok
    );
    assert!(calls.failed.is_empty(), "{:#?}", calls.failed);
}

/// This test runs devsup through the Unix-only harness: elsewhere, one loud line.
#[cfg(not(unix))]
#[test]
fn unix_only() {
    eprintln!(
        "!!! SKIPPED this test: it runs devsup through devsup-tests' harness, which is Unix only"
    );
}
