//! `--only unchanged`: third-party servers as people write them, and each
//! one's opted-in form, side by side under the same load as the handoff
//! table (32 clients, 15 SIGHUP reloads a second apart, keep-alive and
//! close), with devsup's default options. After the load stops, one more
//! reload drains a generation that sees no new connection (that is where
//! a server stuck in a blocking accept shows: killed at the drain timeout).
//!
//! Per server and mode: requests, failed, how long each generation took to
//! be counted ready and by which rule (`READY=1`, or the 1 s `timer` devsup
//! falls back to for servers that never say READY), how long each drain
//! took, and how many drains devsup had to end with SIGKILL.

use devsup_tests::unchanged as runner;

use std::time::Duration;

use devsup_tests::load::Mode;
use runner::{Bins, RunConfig, Server};

/// Runs every server that can run here in each of `modes`, printing a row
/// as each finishes and the whole table at the end.
pub fn run(conns: usize, reloads: u32, interval: Duration, modes: &[Mode], verbose: bool) {
    let bins = Bins::get();
    eprintln!(
        "devsup-bench: unchanged: {conns} conns, {reloads} reloads every {interval:?} (+1 idle), fixtures in {}",
        bins.axum.display()
    );
    let mut rows = Vec::new();
    for server in Server::ALL {
        if !bins.has(server) {
            eprintln!("devsup-bench: unchanged: !!! {server} skipped: no Python venv");
            continue;
        }
        for &mode in modes {
            eprintln!("devsup-bench: unchanged: {server}, {mode}");
            let result = runner::run(
                &RunConfig {
                    server,
                    mode,
                    conns,
                    reloads,
                    interval,
                    idle_reload: true,
                    devsup_args: Vec::new(),
                    verbose,
                },
                bins,
            );
            let row = runner::row(&result);
            eprintln!("{row}");
            rows.push((server.opted_in(), row));
        }
    }
    println!();
    println!("{}", runner::header());
    for (_, row) in &rows {
        println!("{row}");
    }
    println!(
        "(ready: spawn to counted ready, median / max over the reloads; drain: drain signal to exit; \
         killed: drains ended by SIGKILL at the 10 s drain timeout; gunicorn needs no change and \
         runs with --listen-pid)"
    );
}
