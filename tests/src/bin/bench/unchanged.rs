//! `--only unchanged`: third-party servers as people write them, and each
//! one's opted-in form, side by side under the same load as the handoff
//! table (32 clients, 15 SIGHUP reloads a second apart, keep-alive and
//! close), with devsup's default options. After the load stops, one more
//! reload drains a generation that sees no new connection (that is where
//! a server stuck in a blocking accept shows: killed at the drain timeout).
//!
//! The blocking-socket axum server runs a second time with
//! `devsup --nonblocking`, the way out of its trap without a code change.
//!
//! Per server and mode: requests, failed, how long each generation a reload
//! started took to be counted ready and by which rule (`READY=1`;
//! `listening`, devsup seeing one of its processes wait on the passed
//! socket, for servers that never say READY; `timer`, the 1 s of uptime
//! devsup falls back to only where `/proc` cannot tell), how long each
//! drain took, and how many drains devsup had to end with SIGKILL.

use devsup_tests::unchanged as runner;

use std::time::Duration;

use devsup_tests::load::Mode;
use runner::{Bins, RunConfig, Server};

/// Runs every server that can run here (and whose name contains one of
/// `only`, if any) in each of `modes`, printing a row as each finishes and
/// the whole table at the end.
pub fn run(
    conns: usize,
    reloads: u32,
    interval: Duration,
    modes: &[Mode],
    only: &[String],
    verbose: bool,
) {
    let bins = Bins::get();
    eprintln!(
        "devsup-bench: unchanged: {conns} conns, {reloads} reloads every {interval:?} (+1 idle), fixtures in {}",
        bins.axum.display()
    );
    let mut rows = Vec::new();
    let mut costs = Vec::new();
    let chosen = |server: Server| {
        let name = server.name().to_lowercase();
        only.is_empty() || only.iter().any(|o| name.contains(&o.to_lowercase()))
    };
    for server in Server::ALL.into_iter().filter(|&s| chosen(s)) {
        if !bins.has(server) {
            eprintln!("devsup-bench: unchanged: !!! {server} skipped: no Python venv");
            continue;
        }
        let mut variants = vec![Vec::new()];
        if server == Server::AxumListenfdGraceful {
            variants.push(vec!["--nonblocking".to_owned()]);
        }
        for devsup_args in variants {
            for &mode in modes {
                eprintln!("devsup-bench: unchanged: {server} {devsup_args:?}, {mode}");
                let result = runner::run(
                    &RunConfig {
                        server,
                        mode,
                        conns,
                        reloads,
                        interval,
                        idle_reload: true,
                        devsup_args: devsup_args.clone(),
                        verbose,
                        // The debug line with each generation's probe cost.
                        env: vec![("DEVSUP_LOG", runner::PROBE_LOG.into())],
                    },
                    bins,
                );
                let row = runner::row(&result);
                eprintln!("{row}");
                rows.push(row);
                costs.push(runner::probe_cost_row(&result));
            }
        }
    }
    println!();
    println!("{}", runner::header());
    for row in &rows {
        println!("{row}");
    }
    println!(
        "(ready: spawn to counted ready, median / max over the reloads, and the rule that counted \
         them: READY=1 sent by the server, listening = devsup saw it wait on the socket, timer = 1 s \
         of uptime; drain: drain signal to exit; killed: drains ended by SIGKILL at the 10 s drain \
         timeout; gunicorn needs no change and runs with --listen-pid)"
    );
    println!();
    println!(
        "The accepted-connection probe (sock_diag + /proc/PID/fd, on its own thread), per probe, under this load:"
    );
    for row in &costs {
        println!("{row}");
    }
}
