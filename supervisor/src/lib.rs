//! devsup: a development supervisor that reloads a network server on code
//! changes without dropping a connection.
//!
//! This library exists so that `main.rs` is three lines; nothing outside
//! the binary uses it, and every module is private to the crate.
//!
//! One reload reads as one path through these modules: `cli` parses the
//! command line and `config` merges in devsup.toml into a `Config`;
//! `sockets` binds the listeners once; the `sources` turn OS signals, file
//! changes, keys and each generation's messages into the values of `event`;
//! `event_loop` feeds them to the pure decision logic in `machine` and hands
//! its actions to the `executor`, which starts generations and build steps
//! through `process` (sockets at fds 3…) and tells the `guard` of every
//! process group, so that they are stopped even if devsup is killed. Every
//! fact devsup tells anyone is a `step`: the executor writes its log line
//! (`report::log`) and publishes it through `report` to `--events`,
//! `devsup status`, systemd and `livereload` (the browser).
//!
//! devsup runs on Linux and macOS; what differs between them is behind one
//! interface per concern in `platform`.
//!
//! On Windows the same loop and state machine run with the executor of
//! `platform::windows` (Job Objects, `CTRL_BREAK_EVENT`, systemfd's socket
//! passing); the guard, the process and `/proc` modules, the notify socket,
//! `devsup status`, the systemd notifier, `--events` to stdout or a unix
//! socket and `--livereload`'s page while no generation runs are Unix only
//! (`--events FILE` and `--livereload` work on Windows). See the README's
//! Platforms.

mod build_output;
mod cargo;
mod cli;
mod config;
mod duration;
mod event;
mod event_loop;
#[cfg(unix)]
mod executor;
#[cfg(unix)]
mod guard;
mod livereload;
mod log;
mod machine;
mod platform;
#[cfg(unix)]
mod process;
mod program;
#[cfg(all(unix, test))]
mod props;
#[cfg(target_os = "linux")]
mod readiness;
mod report;
mod signal;
mod sockets;
mod sources;
mod step;

/// The `devsup` binary: parse, set up logging, run; the only place that
/// prints an error.
pub fn main() -> std::process::ExitCode {
    run(std::env::args_os().collect())
}

/// The `cargo-devsup` binary, which cargo runs for `cargo devsup ARGS` as
/// `cargo-devsup devsup ARGS`: devsup with ARGS.
pub fn cargo_main() -> std::process::ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "devsup") {
        args.remove(1);
    }
    if let Some(first) = args.first_mut() {
        *first = "cargo devsup".into();
    }
    run(args)
}

fn run(args: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    use std::process::ExitCode;
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let cli = cli::parse(args);
    match &cli.sub {
        Some(cli::Sub::Completions { shell }) => {
            // Generated into memory and written once, checked: a closed
            // stdout (`| head`) is an error, not a panic.
            let mut script = Vec::new();
            cli::completions(*shell, &mut script);
            return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            };
        }
        #[cfg(not(unix))]
        Some(cli::Sub::Status { .. }) => {
            fatal(&anyhow::anyhow!(
                "`devsup status` is not supported on Windows yet (it asks devsup over a unix socket)"
            ));
            return ExitCode::from(1);
        }
        #[cfg(unix)]
        Some(cli::Sub::Status {
            json,
            events,
            config,
        }) => {
            let configured = match events {
                Some(given) => Ok(Some(given.clone())),
                None => config::Config::file_events(&cwd, config.as_deref()),
            };
            let asked = configured
                .and_then(|configured| {
                    report::status::socket_for(&cwd, configured, events.is_some())
                })
                .and_then(|socket| report::status::run(&socket, *json, &mut std::io::stdout()));
            return match asked {
                Ok(code) => ExitCode::from(code),
                Err(err) => {
                    fatal(&err);
                    ExitCode::from(1)
                }
            };
        }
        None => {}
    }
    let (quiet, verbose, file) = (cli.quiet, cli.verbose, cli.config.clone());
    let config = match config::Config::load(cli.options(), file.as_deref(), &cwd) {
        Ok(config) => config,
        Err(err) => {
            fatal(&err);
            return ExitCode::from(2);
        }
    };
    log::init(quiet, verbose);
    match event_loop::run(config) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            fatal(&err);
            ExitCode::from(2)
        }
    }
}

/// Prints a fatal error, if stderr still takes it.
fn fatal(err: &anyhow::Error) {
    use std::io::Write;
    let _ = writeln!(log::Stderr, "devsup: error: {err:#}");
}
