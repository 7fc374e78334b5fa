//! Test support for devsup: run the real binaries, talk HTTP to them, and
//! put them under load.
//!
//! ```no_run
//! use std::time::Duration;
//! use devsup_tests::{harness::{Devsup, Signal, TIMEOUT}, http, load};
//!
//! let dir = tempfile::tempdir().unwrap();
//! // `devsup --port 0 -- <devsup-server>`, cwd = dir, stderr collected.
//! let devsup = Devsup::builder(dir.path()).spawn();
//! let addr = devsup.addr();
//! devsup.wait_event(1, "ready", TIMEOUT);
//! assert_eq!(http::get(addr, "/").unwrap().generation(), Some(1));
//!
//! // Load in the background while devsup reloads.
//! let run = load::start(load::LoadConfig::new(addr));
//! run.wait_completed(100, TIMEOUT);
//! devsup.signal(Signal::SIGHUP);
//! devsup.wait_event(1, "exited", TIMEOUT);
//! let report = run.finish();
//! assert_eq!(report.failures(), 0, "{report}");
//! ```
//!
//! - [`clients`]: WebSocket and server-sent-event clients that reconnect
//!   through reloads and count how each connection ended.
//! - [`h2load`]: run nghttp2's h2load and read its report.
//! - [`harness`]: build and spawn `devsup`, read its log, process utilities.
//! - [`devlog`]: pure parsers for devsup's log lines.
//! - [`http`]: a small exact synchronous HTTP/1.1 client and the response
//!   parser shared with the load generator.
//! - [`load`]: the tokio load generator that classifies every request.
//! - [`procfs`]: what the tests read in `/proc` (process groups, zombies,
//!   threads, fds, memory).
//! - [`h2client`]: HTTP/2 clients that follow reloads (the soak's).
//! - [`soak`]: the mixed soak: random reloads, edits, failing builds and
//!   kills under every kind of client.
//! - [`stats`]: median / max and quantiles.
//! - [`unchanged`]: third-party servers as people write them, run under
//!   devsup with reloads under load.
//! - [`tools`]: third-party programs the tests install on first use.
//! - [`browser`]: headless Chromium driven line by line, and a page server
//!   under `devsup --livereload`.
//!
//! Unix only, but for the pure parts ([`devlog`], [`http`], [`h2client`],
//! [`stats`]): the harness drives devsup with signals, process groups and
//! `/proc`, which it has on Linux (and macOS compiles). On other platforms
//! the rest of this crate is compiled out, and its binaries and tests say
//! so in one line.
#![warn(missing_docs)]

#[cfg(unix)]
pub mod browser;
#[cfg(unix)]
pub mod clients;
pub mod devlog;
pub mod h2client;
#[cfg(unix)]
pub mod h2load;
#[cfg(unix)]
pub mod harness;
pub mod http;
#[cfg(unix)]
pub mod load;
#[cfg(unix)]
pub mod procfs;
#[cfg(unix)]
pub mod soak;
pub mod stats;
#[cfg(unix)]
pub mod tools;
#[cfg(unix)]
pub mod unchanged;
