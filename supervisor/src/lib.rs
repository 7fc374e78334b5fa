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

#[cfg(not(unix))]
compile_error!("devsup runs on Linux and other Unix systems only; Windows is not supported");

pub mod build;
pub mod cli;
pub mod generation;
pub mod log;
pub mod machine;
pub mod notify;
pub mod signals;
pub mod sockets;
pub mod supervisor;
pub mod terminal;
pub mod watch;
