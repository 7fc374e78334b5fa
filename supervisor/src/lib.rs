//! devsup: a development supervisor that reloads a network server on code
//! changes without dropping a connection.
//!
//! One reload reads as one path through these modules:
//! [`cli`] builds the [`cli::Config`]; [`sockets`] binds the listeners once;
//! [`signals`], [`watch`] and [`terminal`] turn OS signals, file changes and
//! keys into events; [`supervisor`] runs the loop
//! that feeds events to the pure decision logic in [`machine`] and carries
//! out its actions; [`generation`] spawns each server generation with the
//! sockets at fds 3…
#![deny(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "devsup runs on Linux only: it relies on prctl (parent-death signal, child subreaper), close_range and SO_PASSCRED"
);

pub mod build;
pub mod cli;
pub mod config;
pub mod generation;
pub mod guard;
pub mod livereload;
pub mod log;
pub mod machine;
pub mod notify;
pub mod signals;
pub mod sockets;
pub mod supervisor;
pub mod terminal;
pub mod watch;

/// The `devsup` binary: parse, set up logging, run; the only place that
/// prints an error.
pub fn main() -> std::process::ExitCode {
    use std::process::ExitCode;
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let (request, quiet, verbose) = match cli::parse(std::env::args_os(), &cwd) {
        Ok(parsed) => parsed,
        Err(err) => {
            eprintln!("devsup: error: {err:#}");
            return ExitCode::from(2);
        }
    };
    match request {
        cli::Request::Completions(shell) => {
            cli::completions(shell, &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        cli::Request::Run(config) => {
            log::init(quiet, verbose);
            match supervisor::run(*config) {
                Ok(code) => ExitCode::from(code),
                Err(err) => {
                    eprintln!("devsup: error: {err:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
