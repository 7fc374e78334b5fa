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
//! process group, so that they are stopped even if devsup is killed.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "devsup runs on Linux only: it relies on prctl (parent-death signal, child subreaper), close_range and SO_PASSCRED"
);

mod cli;
mod config;
mod event;
mod event_loop;
mod executor;
mod guard;
mod log;
mod machine;
mod process;
mod readiness;
mod sockets;
mod sources;

/// The `devsup` binary: parse, set up logging, run; the only place that
/// prints an error.
pub fn main() -> std::process::ExitCode {
    use std::process::ExitCode;
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let (cli, matches) = cli::parse(std::env::args_os());
    if let Some(cli::Sub::Completions { shell }) = &cli.sub {
        cli::completions(*shell, &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let (quiet, verbose) = (cli.quiet, cli.verbose);
    let config = match config::Config::load(cli, &matches, &cwd) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("devsup: error: {err:#}");
            return ExitCode::from(2);
        }
    };
    log::init(quiet, verbose);
    match event_loop::run(config) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("devsup: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
