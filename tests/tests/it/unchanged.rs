//! Third-party servers as people write them, and each one's opted-in
//! form, under devsup with reloads under load (keep-alive and close
//! clients): failed requests, how long each generation took to be counted
//! ready and by which rule, how long each drain took (see
//! tests/fixtures/servers/README.md). devsup runs with its default
//! readiness rule (`--ready auto`) and a 3 s drain timeout.
//!
//! What is asserted:
//!
//! - every opted-in form loses no request, every generation a reload
//!   started is counted ready by its READY=1, and every old generation
//!   drains by itself;
//! - every generation of a server that never sends READY=1 (the first one
//!   too) is counted ready by the kernel rule: devsup saw one of its
//!   processes wait on the passed socket (`ready in X (listening: ...)`),
//!   never by the uptime timer, and devsup never says the server does not
//!   report readiness;
//! - the axum server that gives tokio the passed socket in blocking mode
//!   and shuts down gracefully on SIGTERM (the blocking-socket trap) hangs
//!   in the drain that gets no new connection until devsup kills it, and
//!   devsup's log names the trap and its fix; with `devsup --nonblocking`
//!   the same unchanged server drains by itself, every time;
//! - the same server's dev build, which panics on the blocking socket,
//!   serves and reloads with `--nonblocking`.
//!
//! The unchanged servers' failed requests are printed, not asserted: they
//! are the servers' own drains (hyper's and uvicorn's graceful shutdowns
//! close idle keep-alive connections at once), which devsup cannot change
//! from outside. How soon after polling a server is counted ready (within
//! 50 ms) is asserted in readiness.rs, which can see when it polls.

use devsup_tests::unchanged;

use std::time::Duration;

use devsup_tests::harness::{self, Devsup, TIMEOUT, event, stop_cleanly, temp_dir};
use devsup_tests::http;
use devsup_tests::load::Mode;
use unchanged::{ACCEPTED, Bins, LISTENING, READY, RunConfig, RunResult, Server};

/// Reloads per run: enough handoffs to see a race, few enough for CI.
const RELOADS: u32 = 4;
/// Clients per run.
const CONNS: usize = 8;
/// Spawn to counted ready, at most, for a server that never says READY=1
/// (a Python or Node server starting on a loaded 2-core machine takes a
/// second or two; the ready timeout it must stay far below is 60 s).
const READY_BOUND: Duration = Duration::from_secs(15);
/// Short, so that the trap costs seconds, not the default 10 s per reload.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

fn run(server: Server, mode: Mode, idle_reload: bool, extra: &[&str]) -> Option<RunResult> {
    run_under(server, mode, idle_reload, extra, (CONNS, RELOADS))
}

/// [`run`] with `(clients, reloads)`.
fn run_under(
    server: Server,
    mode: Mode,
    idle_reload: bool,
    extra: &[&str],
    (conns, reloads): (usize, u32),
) -> Option<RunResult> {
    let bins = Bins::get();
    if !bins.has(server) {
        eprintln!("!!! SKIPPED {server} ({mode}): its tools could not be installed (see above)");
        return None;
    }
    let mut devsup_args = Vec::new();
    if !extra.contains(&"--drain-timeout") {
        devsup_args.push("--drain-timeout".to_owned());
        devsup_args.push(format!("{}s", DRAIN_TIMEOUT.as_secs()));
    }
    devsup_args.extend(extra.iter().map(|a| (*a).to_owned()));
    let result = unchanged::run(
        &RunConfig {
            server,
            mode,
            conns,
            reloads,
            interval: Duration::from_millis(300),
            idle_reload,
            devsup_args,
            verbose: true,
            env: vec![],
        },
        bins,
    );
    eprintln!("{}\n{}", unchanged::header(), unchanged::row(&result));
    eprintln!("{}", result.report);
    assert_eq!(
        result.left_behind,
        [] as [i32; 0],
        "{server} {mode}: generations' processes outlived devsup:\n{}",
        result.log.join("\n")
    );
    Some(result)
}

/// An opted-in server: no failed request, every generation a reload
/// started counted ready by its READY=1, every old generation exits by
/// itself.
fn opted_in_loses_nothing(server: Server) {
    opted_in_loses_nothing_with(server, &[]);
}

/// [`opted_in_loses_nothing`] with more devsup options.
fn opted_in_loses_nothing_with(server: Server, extra: &[&str]) {
    opted_in_loses_nothing_under(server, extra, (CONNS, RELOADS));
}

/// [`opted_in_loses_nothing_with`] with `(clients, reloads)`.
fn opted_in_loses_nothing_under(server: Server, extra: &[&str], load: (usize, u32)) {
    let reloads = load.1 as usize;
    for mode in [Mode::KeepAlive, Mode::Close] {
        let Some(result) = run_under(server, mode, false, extra, load) else {
            return;
        };
        let log = result.log.join("\n");
        assert_eq!(
            result.report.failures(),
            0,
            "{server} {mode}: {}",
            result.report
        );
        assert!(result.report.generations.len() >= 2, "{}", result.report);
        let reloaded: Vec<_> = result.reloaded().collect();
        assert_eq!(reloaded.len(), reloads, "{server} {mode}:\n{log}");
        assert!(
            reloaded.iter().all(|r| r.2 == READY),
            "{server} {mode}: {reloaded:?}"
        );
        assert_eq!(result.killed, [] as [u64; 0], "{server} {mode}:\n{log}");
        assert_eq!(result.drains.len(), reloads, "{server} {mode}:\n{log}");
    }
}

/// A server that never sends READY=1, run with `extra` devsup options:
/// every generation, the first one too, counted ready by the kernel rule.
/// The failed requests are printed only (see the module docs).
fn unchanged_figures(server: Server, idle_reload: bool, extra: &[&str]) -> Vec<RunResult> {
    let mut results = Vec::new();
    for mode in [Mode::KeepAlive, Mode::Close] {
        let Some(result) = run(server, mode, idle_reload, extra) else {
            return results;
        };
        let log = result.log.join("\n");
        let generations: Vec<u64> = result.ready.iter().map(|r| r.0).collect();
        let all: Vec<u64> = (1..=u64::from(result.reloads) + 1).collect();
        assert_eq!(
            generations, all,
            "{server} {mode}: every generation was counted ready once:\n{log}"
        );
        assert!(
            result
                .ready
                .iter()
                .all(|r| r.2 == LISTENING || r.2 == ACCEPTED),
            "{server} {mode}: every generation counted ready by the kernel rule: {:?}\n{log}",
            result.ready
        );
        assert!(
            !log.contains("does not report readiness"),
            "{server} {mode}: devsup fell back to a timer:\n{log}"
        );
        assert!(
            result.ready.iter().all(|r| r.1 < READY_BOUND),
            "{server} {mode}: every generation counted ready within {READY_BOUND:?}: {:?}",
            result.ready
        );
        results.push(result);
    }
    results
}

/// No drain reached the drain timeout, and devsup saw no generation in the
/// blocking-socket trap.
fn drains_by_itself(result: &RunResult) {
    let log = result.log.join("\n");
    assert_eq!(result.killed, [] as [u64; 0], "{log}");
    assert_eq!(result.drains.len(), result.reloads as usize, "{log}");
    assert!(
        result.drains.iter().all(|d| d.1 < DRAIN_TIMEOUT),
        "{:?}",
        result.drains
    );
    assert_eq!(result.trapped, [] as [(u64, String); 0], "{log}");
}

#[test]
fn axum_devsup_serve_loses_nothing() {
    opted_in_loses_nothing(Server::AxumDevsupServe);
}

#[test]
fn uvicorn_devsup_loses_nothing() {
    opted_in_loses_nothing(Server::UvicornDevsup);
}

/// gunicorn runs with `--graceful-timeout` [`unchanged::GUNICORN_GRACE`]
/// and devsup with a drain timeout 3 s longer: the test's usual 3 s drain
/// timeout was shorter than gunicorn's own bound (30 s by default), so a
/// drain that took gunicorn longer than 3 s on a loaded machine was killed
/// by devsup mid-drain and counted as lost.
#[test]
fn gunicorn_sync_workers_lose_nothing_unchanged() {
    let drain_timeout = format!("{}s", unchanged::GUNICORN_GRACE.as_secs() + 3);
    opted_in_loses_nothing_with(Server::Gunicorn, &["--drain-timeout", &drain_timeout]);
}

#[test]
fn stdlib_example_loses_nothing() {
    opted_in_loses_nothing(Server::StdlibExample);
}

#[test]
fn axum_listenfd_is_counted_ready_by_the_kernel() {
    unchanged_figures(Server::AxumListenfd, false, &[]);
}

/// The graceful axum server with the socket made non-blocking by the
/// server itself (axum's current example): no trap, every drain ends by
/// itself, even the idle one. (Its failed requests are hyper's drain
/// closing idle keep-alive connections at once, printed, not asserted.)
#[test]
fn axum_graceful_with_a_nonblocking_socket_drains_by_itself() {
    for result in unchanged_figures(Server::AxumNonblockingGraceful, true, &[]) {
        drains_by_itself(&result);
    }
}

#[test]
fn uvicorn_is_counted_ready_by_the_kernel() {
    unchanged_figures(Server::Uvicorn, false, &[]);
}

#[test]
fn stdlib_is_counted_ready_by_the_kernel() {
    unchanged_figures(Server::Stdlib, false, &[]);
}

/// The blocking-socket trap: once it has served a connection, the graceful
/// axum server's accept loop sits in a blocking accept4 on fd 3, so after
/// SIGTERM its graceful shutdown waits for one more connection. Under load
/// one soon comes; so after the load a last reload drains a generation that
/// gets none: devsup names the trap and its fix while it drains, then kills
/// it at the drain timeout. (A generation drained just as the load stopped
/// may hang the same way: every generation killed had its trap named.)
#[test]
fn axum_graceful_with_a_blocking_socket_hangs_and_devsup_names_the_fix() {
    for result in unchanged_figures(Server::AxumListenfdGraceful, true, &[]) {
        let mode = result.report.mode;
        let log = result.log.join("\n");
        // The generation the idle reload drained.
        let last_drained = u64::from(result.reloads);
        assert!(
            result.killed.contains(&last_drained),
            "{mode}: gen={last_drained} drained after the load stopped and was killed at the drain timeout: killed {:?}\n{log}",
            result.killed
        );
        let (_, took) = result
            .drains
            .iter()
            .find(|d| d.0 == last_drained)
            .copied()
            .unwrap_or_else(|| panic!("{mode}: gen={last_drained} exited\n{log}"));
        assert!(took >= DRAIN_TIMEOUT, "{mode}: {took:?}\n{log}");
        for killed in &result.killed {
            let (_, why) = result
                .trapped
                .iter()
                .find(|t| t.0 == *killed)
                .unwrap_or_else(|| panic!("{mode}: gen={killed}'s trap is named\n{log}"));
            for words in [
                "blocked in accept4 on fd 3",
                "set_nonblocking(true) before tokio's from_std",
                "--nonblocking",
            ] {
                assert!(why.contains(words), "{mode}: {words:?} missing from: {why}");
            }
        }
    }
}

/// The same unchanged server with `devsup --nonblocking`: no drain hangs,
/// not even the idle one, and devsup sees no trap.
#[test]
fn axum_graceful_with_a_blocking_socket_drains_by_itself_with_nonblocking() {
    for result in unchanged_figures(Server::AxumListenfdGraceful, true, &["--nonblocking"]) {
        drains_by_itself(&result);
    }
}

/// The same unchanged axum server in a dev build (`devsup -- cargo run`):
/// since tokio 1.44 `from_std` panics on a blocking socket in debug builds,
/// so without `--nonblocking` every generation dies at start; with it, the
/// dev build serves and reloads, each generation counted ready by the
/// kernel rule.
#[test]
fn axum_listenfd_dev_build_serves_with_nonblocking() {
    let bins = harness::build_packages(&["devsup-fixture-servers"]);
    let server = bins.join("axum-listenfd");

    if harness::binaries().release {
        // A release build has no such check: the trap tests cover it.
        eprintln!("!!! SKIPPED the dev-build panic without --nonblocking: this is a release build");
    } else {
        let dir = temp_dir();
        let devsup = Devsup::builder(dir.path())
            .arg("--no-watch")
            .server(&server)
            .spawn();
        let exited = devsup.wait_event(1, "exited", TIMEOUT);
        assert!(exited.contains("status 101"), "{exited}");
        devsup.wait_for_line(
            "Registering a blocking socket with the tokio runtime is unsupported",
            TIMEOUT,
        );
        devsup.terminate(TIMEOUT);
    }

    let dir = temp_dir();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--nonblocking"])
        .server(&server)
        .spawn();
    let ready = devsup.wait_event(1, "ready", TIMEOUT);
    assert!(ready.contains("(listening: pid="), "{ready}");
    assert_eq!(http::get(devsup.addr(), "/").unwrap().generation(), Some(1));
    devsup.reload();
    let ready = devsup.wait_event(2, "ready", TIMEOUT);
    assert!(ready.contains("(listening: pid="), "{ready}");
    devsup.wait_event(1, "exited", TIMEOUT);
    assert_eq!(http::get(devsup.addr(), "/").unwrap().generation(), Some(2));
    assert_eq!(
        devsup.count_lines("Registering a blocking socket"),
        0,
        "{}",
        devsup.log_text()
    );
    assert_eq!(devsup.count_matching(event(1, "still running")), 0);
    stop_cleanly(&devsup);
}

/// Issue 19, defect 2: a pool server whose acceptor waits for a free
/// worker before it accepts (puma; tests/fixtures/gated_pool.py) is never
/// seen waiting on the socket while its workers are busy and connections
/// queue. devsup counts it ready by the connection it accepted, within a
/// bound far below `--ready-timeout` (60 s, after which it used to be
/// counted ready), and names the rule.
#[test]
fn a_pool_server_under_steady_load_is_ready_by_the_connection_it_accepted() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let dir = temp_dir();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server("python3")
        .server_args([harness::fixture("gated_pool.py").to_str().unwrap(), "2"])
        .spawn();
    let ready = devsup.wait_event(1, "ready", TIMEOUT);
    assert!(ready.contains("(listening: "), "{ready}");
    // Steady load: two keep-alive clients keep gen 1's two workers busy,
    // four more wait in the accept queue with a request written.
    let request = b"GET / HTTP/1.1\r\nHost: devsup\r\n\r\n";
    let mut clients: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut c = TcpStream::connect(devsup.addr()).unwrap();
            c.write_all(request).unwrap();
            c
        })
        .collect();
    devsup.reload();
    let ready = devsup.wait_event(2, "ready", TIMEOUT);
    assert!(
        ready.contains("(accepted a connection: pid=") && ready.contains(" holds fd "),
        "{ready}\n{}",
        devsup.log_text()
    );
    let took = ready
        .split("ready in ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(devsup_tests::devlog::parse_duration)
        .unwrap_or_else(|| panic!("a duration in {ready}"));
    assert!(took < Duration::from_secs(5), "{ready}");
    // Gen 2 answers a connection it took from the queue (the ones it did
    // not take wait, so each read waits briefly and the loop goes round).
    for c in &clients {
        c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    }
    let answered = harness::wait_until(TIMEOUT, || {
        clients.iter_mut().any(|c| {
            let mut buf = [0u8; 512];
            c.read(&mut buf)
                .is_ok_and(|n| String::from_utf8_lossy(&buf[..n]).contains("gen=2 "))
        })
    });
    assert!(answered, "{}", devsup.log_text());
    drop(clients);
    devsup.wait_event(1, "exited", TIMEOUT);
    stop_cleanly(&devsup);
}

// Issue 21: Go, Node, Ruby and Python servers as their docs show them,
// unchanged, and the opted-in forms (contrib/go/devsup, contrib/node/devsup.js).

#[test]
fn go_activation_listeners_is_counted_ready_by_the_kernel() {
    unchanged_figures(Server::GoActivation, false, &[]);
}

#[test]
fn go_contrib_devsup_loses_nothing() {
    opted_in_loses_nothing(Server::GoDevsup);
}

#[test]
fn node_listen_fd_is_counted_ready_by_the_kernel() {
    unchanged_figures(Server::NodeListenFd, false, &[]);
}

#[test]
fn node_server_close_is_counted_ready_by_the_kernel_and_drains_by_itself() {
    for result in unchanged_figures(Server::NodeClose, false, &[]) {
        drains_by_itself(&result);
    }
}

#[test]
fn node_contrib_devsup_js_loses_nothing() {
    opted_in_loses_nothing(Server::NodeDevsup);
}

#[test]
fn express_is_counted_ready_by_the_kernel() {
    unchanged_figures(Server::Express, false, &[]);
}

#[test]
fn express_on_contrib_devsup_js_loses_nothing() {
    opted_in_loses_nothing(Server::ExpressDevsup);
}

#[test]
fn aiohttp_is_counted_ready_by_the_kernel() {
    unchanged_figures(Server::Aiohttp, false, &[]);
}

/// With devsup's default 10 s drain timeout: its drain (0.5 s of grace,
/// aiohttp's cleanup, the interpreter's exit) took 2.2 s with no load on
/// the loaded 2-core machine, too close to the 3 s the trap tests use.
#[test]
fn aiohttp_devsup_loses_nothing() {
    opted_in_loses_nothing_with(Server::AiohttpDevsup, &["--drain-timeout", "10s"]);
}

#[test]
fn hypercorn_is_counted_ready_by_the_kernel() {
    unchanged_figures(Server::Hypercorn, false, &[]);
}

/// With devsup's default 10 s drain timeout, as aiohttp_devsup's: its
/// drain (0.5 s of grace, hypercorn's shutdown, the interpreter's exit)
/// takes 0.6 s on an idle machine, but one took 3.27 s, and exited 0 by
/// itself just after devsup's SIGKILL at 3 s, on the 2-core machine at load
/// average 16 (two CPU hogs, the next generation importing hypercorn beside
/// it): the test's 3 s, short for the trap tests, is not a bound on
/// hypercorn's drain.
#[test]
fn hypercorn_devsup_loses_nothing() {
    opted_in_loses_nothing_with(Server::HypercornDevsup, &["--drain-timeout", "10s"]);
}

#[test]
fn waitress_is_counted_ready_by_the_kernel() {
    unchanged_figures(Server::Waitress, false, &[]);
}

#[test]
fn waitress_devsup_loses_nothing() {
    opted_in_loses_nothing(Server::WaitressDevsup);
}

/// puma's acceptor waits for a free thread before it accepts: under load
/// it is counted ready by the connection it accepted (issue 19) or by its
/// wait on the socket, never by the ready timeout.
#[test]
fn puma_is_counted_ready_by_the_kernel() {
    unchanged_figures(Server::Puma, false, &[]);
}

/// puma with its systemd integration (the sd_notify gem) says READY=1,
/// and every reload is counted ready by it. Its failed requests and its
/// killed drains are printed, not asserted: they are stock puma's own
/// drain, which closes idle keep-alive connections and, with more clients
/// than threads, can wait past the drain timeout (its acceptor waits for a
/// free thread and does not read the stop until the load lets one go;
/// puma_with_devsup_rb_loses_nothing is the form that asserts both).
#[test]
fn puma_with_sd_notify_says_ready() {
    for mode in [Mode::KeepAlive, Mode::Close] {
        let Some(result) = run(Server::PumaNotify, mode, false, &[]) else {
            return;
        };
        let reloaded: Vec<_> = result.reloaded().collect();
        assert_eq!(reloaded.len(), RELOADS as usize, "{:?}", result.ready);
        assert!(
            reloaded.iter().all(|r| r.2 == READY && r.1 < READY_BOUND),
            "{reloaded:?}"
        );
    }
}

/// puma with tests/fixtures/servers/ruby/devsup.rb (`-C`; the sd_notify
/// gem says READY=1): no request lost, no drain killed. 32 clients and 12
/// reloads, where stock puma loses requests in most runs; 32 clients, more
/// than puma's 5 threads: stock puma's drain then hangs (its acceptor waits
/// for a free thread and never reads the stop) and its reactor closes
/// connections a request is on its way on.
#[test]
fn puma_with_devsup_rb_loses_nothing() {
    opted_in_loses_nothing_under(Server::PumaDevsup, &[], (32, 12));
}

/// contrib/go/devsup's own Go tests (`go test`, in the module the Go
/// fixtures are built in): fd 3 or the address, READY=1 on the ready fd,
/// and the drain on SIGTERM.
#[test]
fn contrib_go_devsup_passes_its_own_tests() {
    let Some(bin) = devsup_tests::tools::require(
        "contrib/go/devsup tests: Go and go-systemd",
        unchanged::build_go_fixtures(),
    ) else {
        return;
    };
    let module = bin.parent().expect("bin/ is in the module");
    let output = std::process::Command::new("go")
        .args(["test", "./devsup"])
        .current_dir(module)
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", module.join("cache"))
        .env("GOPATH", module.join("gopath"))
        .output()
        .expect("running go test");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// contrib/node/devsup.js's own tests (`node --test contrib/node/`):
/// fd 3 or the port, READY=1 on the ready fd, and the drain on SIGTERM.
#[test]
fn contrib_node_devsup_js_passes_its_own_tests() {
    let Some(node) = devsup_tests::tools::require(
        "contrib/node/devsup.js tests: node",
        devsup_tests::tools::apt("node", "nodejs"),
    ) else {
        return;
    };
    let output = std::process::Command::new(node)
        .args(["--test", "contrib/node/"])
        .current_dir(unchanged::workspace_root())
        .output()
        .expect("running node --test");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("# pass 3"),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
