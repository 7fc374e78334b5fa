//! gRPC across reloads at issue 18's concurrency: the tonic example
//! (`examples/tonic`, served by devsup-serve) under devsup, and tonic
//! clients on 16 channels with 10 calls in flight on each, while devsup
//! reloads it 20 times. Every call must succeed. A call refused unsent (its
//! channel's connection had the GOAWAY before the call's stream went out)
//! is retried by the example's client, as gRPC's transparent retry does,
//! and counted apart (see `example_tonic::never_sent`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use devsup_tests::harness::{Devsup, TIMEOUT, build_packages, wait_until};
use example_tonic::GreeterClient;
use tokio::sync::watch;

const CHANNELS: usize = 16;
const CALLS_PER_CHANNEL: usize = 10;
const RELOADS: u64 = 20;

#[derive(Debug, Default)]
struct Calls {
    /// Successful calls by the generation that answered.
    ok: BTreeMap<u64, u64>,
    /// Retries of calls that never left the client.
    retried: u64,
    failed: Vec<String>,
}

/// The example's binary, built once into this test's target directory and
/// profile.
fn example_tonic() -> std::path::PathBuf {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_packages(&["example-tonic"]))
        .join("example-tonic")
}

/// 160 calls in flight, one reload after another: each reload waits for
/// the new generation's `ready` and the old one's `exited` (so no drained
/// connection outlives its generation), then for calls answered by the
/// new generation; 0 failed calls over the 20 reloads.
#[test]
fn grpc_160_calls_in_flight_across_20_reloads_none_fails() {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server(example_tonic())
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let url = format!("http://{}", devsup.addr());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let channels: Vec<_> = runtime.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..CHANNELS {
            let channel = tonic::transport::Channel::from_shared(url.clone())
                .unwrap()
                .connect()
                .await
                .expect("connecting to generation 1");
            channels.push(channel);
        }
        channels
    });
    let calls = Arc::new(Mutex::new(Calls::default()));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    for (c, channel) in channels.iter().enumerate() {
        for k in 0..CALLS_PER_CHANNEL {
            let mut client = GreeterClient::new(channel.clone());
            let (calls, stopped) = (calls.clone(), stopped.clone());
            tasks.push(runtime.spawn(async move {
                let name = format!("channel {c} call {k}");
                while !*stopped.borrow() {
                    let result = client.hello(&name).await;
                    let mut calls = calls.lock().unwrap();
                    match result {
                        Ok((reply, retries)) if reply.message == format!("hello {name}") => {
                            *calls.ok.entry(reply.generation).or_default() += 1;
                            calls.retried += u64::from(retries);
                        }
                        Ok((reply, _)) => calls.failed.push(format!("wrong reply {reply:?}")),
                        Err(status) => calls.failed.push(status.to_string()),
                    }
                }
            }));
        }
    }
    let answered_by = |generation: u64| {
        wait_until(TIMEOUT, || {
            let calls = calls.lock().unwrap();
            calls.ok.get(&generation).is_some_and(|&n| n >= 100)
        })
    };
    assert!(answered_by(1), "{:?}", calls.lock().unwrap());
    for generation in 2..=RELOADS + 1 {
        devsup.reload();
        devsup.wait_event(generation, "ready", TIMEOUT);
        devsup.wait_event(generation - 1, "exited", TIMEOUT);
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
        "{total} gRPC calls ({CHANNELS} channels x {CALLS_PER_CHANNEL} in flight) over {RELOADS} \
         reloads: {} failed, {} retried unsent; by generation: {:?}",
        calls.failed.len(),
        calls.retried,
        calls.ok
    );
    assert!(
        calls.failed.is_empty(),
        "{} failed: {:#?}",
        calls.failed.len(),
        calls.failed
    );
}
