//! devsup's integration tests: one test binary, a module per area, all on
//! the real `devsup` and `devsup-server` binaries through the harness in
//! `tests/src` (`devsup_tests::harness`, `http`, `load`, `devlog`,
//! `procfs`).
//!
//! One binary, not one per file: the harness is built once, the binaries
//! it builds are built once per run, and `cargo test -p devsup-tests
//! --test it NAME` still runs one test. To add an area, write
//! `tests/tests/it/AREA.rs` against the harness and add `mod AREA;` here.
//!
//! Unix only (the harness is): on other platforms the binary holds one test
//! that says so.

/// Command lines devsup must refuse, and how it says so.
#[cfg(unix)]
mod bad_input;
/// `--livereload` in headless Chromium: a reload once the new generation
/// is ready, the build-error overlay, reloads under fetches.
#[cfg(unix)]
mod browser;
/// Files that change on their own: a busy log, devsup's own output,
/// generated files (bytecode, editor auto-saves).
#[cfg(unix)]
mod busy_files;
/// The command-line conventions: completions, config file, `--prefix`.
#[cfg(unix)]
mod cli;
/// WebSocket and server-sent-event clients through reloads under load.
#[cfg(unix)]
mod clients;
/// Servers that daemonize (setsid, double fork): drained and stopped with
/// their generation, in a cgroup or as adopted orphans.
#[cfg(unix)]
mod daemons;
/// `--events` against docs/events.md; the event socket and `devsup status`.
#[cfg(unix)]
mod events;
/// Every example under `examples/` reloads under load without a failure.
#[cfg(unix)]
mod examples;
/// Faults around devsup: devsup SIGKILLed or interrupted mid-build,
/// mid-start-up, mid-drain.
#[cfg(unix)]
mod faults_devsup;
/// Faults the server makes: crashes, crash loops, ignoring the drain
/// signal, forking, a garbled ready channel, an unrunnable program.
#[cfg(unix)]
mod faults_server;
/// Faults the user makes: 200 SIGHUPs at once; 300 reloads in a row.
#[cfg(unix)]
mod faults_user;
/// A newcomer's first minutes: no command in a Cargo package, `cargo devsup`.
#[cfg(unix)]
mod first_minutes;
/// gRPC (the tonic example) at 16 channels x 10 calls across 20 reloads.
#[cfg(unix)]
mod grpc;
/// An independent HTTP/2 load generator (h2load) across reloads.
#[cfg(unix)]
mod h2load;
/// The core handoff: a reload changes the generation and loses nothing.
#[cfg(unix)]
mod handoff;
/// A server that does not take the passed socket is named at the time.
#[cfg(unix)]
mod ignored_socket;
/// Keys in a terminal.
#[cfg(unix)]
mod keys;
/// Reload storms under load lose no request.
#[cfg(unix)]
mod load;
/// systemd's `NOTIFY_SOCKET` protocol, and devsup's temporary files.
#[cfg(unix)]
mod notify;
/// Readiness seen from the kernel: servers that never say READY=1, slow
/// starters, a server devsup cannot see ready.
#[cfg(unix)]
mod readiness;
/// The reference server on its own, run as devsup runs it.
#[cfg(unix)]
mod reference_server;
/// The mixed soak, short: random reloads, edits, failing builds and
/// SIGKILLs of every generation under every kind of client.
#[cfg(unix)]
mod soak;
/// systemd above devsup: socket activation and `Type=notify`.
#[cfg(unix)]
mod systemd;
/// Third-party servers as people write them, and their opted-in forms,
/// reloaded under load.
#[cfg(unix)]
mod unchanged;
/// The edit→serve loop: file changes, ignores, builds, `--signal-on`.
#[cfg(unix)]
mod watch;

/// The integration tests need the Unix harness: elsewhere, one loud line.
#[cfg(not(unix))]
#[test]
fn unix_only() {
    eprintln!(
        "!!! SKIPPED devsup-tests' integration tests: they run on Unix only (the harness drives devsup with signals, process groups and /proc)"
    );
}
