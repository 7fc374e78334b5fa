//! devsup's integration tests: one test binary, a module per area, all on
//! the real `devsup` and `devsup-server` binaries through the harness in
//! `tests/src` (`devsup_tests::harness`, `http`, `load`, `devlog`,
//! `procfs`).
//!
//! One binary, not one per file: the harness is built once, the binaries
//! it builds are built once per run, and `cargo test -p devsup-tests
//! --test it NAME` still runs one test. To add an area, write
//! `tests/tests/it/AREA.rs` against the harness and add `mod AREA;` here.

/// Command lines devsup must refuse, and how it says so.
mod bad_input;
/// The command-line conventions: completions, config file, `--prefix`.
mod cli;
/// Every example under `examples/` reloads under load without a failure.
mod examples;
/// Faults around devsup: devsup SIGKILLed or interrupted mid-build,
/// mid-start-up, mid-drain.
mod faults_devsup;
/// Faults the server makes: crashes, crash loops, ignoring the drain
/// signal, forking, a garbled ready channel, an unrunnable program.
mod faults_server;
/// The core handoff: a reload changes the generation and loses nothing.
mod handoff;
/// Keys in a terminal.
mod keys;
/// Reload storms under load; 200 SIGHUPs; 300 reloads in a row.
mod load;
/// systemd's `NOTIFY_SOCKET` protocol, and devsup's temporary files.
mod notify;
/// Readiness seen from the kernel: servers that never say READY=1, slow
/// starters, a server devsup cannot see ready.
mod readiness;
/// The reference server on its own, run as devsup runs it.
mod reference_server;
/// The edit→serve loop: file changes, ignores, builds, `--signal-on`.
mod watch;
