//! The merged configuration devsup runs with: the command line first, then
//! devsup.toml or `[package.metadata.devsup]` (see [`mod@file`]) for what it
//! did not give, checked once into a plain [`Config`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ArgMatches;
use nix::sys::signal::Signal;

use crate::cli::Cli;
use crate::machine::{Policy, ReadyRule};
use crate::process::Program;
use crate::report::events::Target;
use crate::sockets::{self, Addr, SocketSpec};
use crate::sources::watch::WatchConfig;

mod file;
#[cfg(test)]
pub(crate) use file::FileConfig;

/// Everything devsup runs with, checked: each field is the option of the
/// same name (see `--help`), after the file is merged in. `--port` has
/// become the first of `sockets`, in fd order, and `--watch`, `--poll` and
/// the other watching options are `watch`, `None` with `--no-watch`.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) sockets: Vec<SocketSpec>,
    pub(crate) backlog: i32,
    pub(crate) program: Program,
    pub(crate) builds: Vec<String>,
    pub(crate) listen_pid: bool,
    pub(crate) nonblocking: bool,
    pub(crate) drain_signal: Signal,
    pub(crate) drain_timeout: Duration,
    pub(crate) ready_timeout: Duration,
    pub(crate) ready_after: Option<Duration>,
    pub(crate) ready: ReadyRule,
    pub(crate) watch: Option<WatchConfig>,
    pub(crate) prefix: bool,
    pub(crate) events: Option<Target>,
    pub(crate) livereload: Option<std::net::SocketAddr>,
}

impl Config {
    /// The part of the configuration the state machine decides with.
    pub(crate) fn policy(&self) -> Policy {
        // Bounded when parsed (`cli::parse_duration`), so that the state
        // machine's `now + timeout` cannot overflow.
        debug_assert!(
            [self.drain_timeout, self.ready_timeout]
                .into_iter()
                .chain(self.ready_after)
                .all(|d| d <= crate::cli::MAX_DURATION)
        );
        Policy {
            drain_signal: self.drain_signal,
            drain_timeout: self.drain_timeout,
            ready_timeout: self.ready_timeout,
            ready_after: self.ready_after,
            ready: self.ready,
            build_steps: self.builds.len(),
        }
    }
}

impl Config {
    /// Reads the config file (`--config`, else `devsup.toml` or
    /// `[package.metadata.devsup]` in `cwd`), fills in every option the
    /// command line did not give, and checks the result. `Err` is a usage
    /// error to print.
    pub(crate) fn load(mut cli: Cli, matches: &ArgMatches, cwd: &Path) -> anyhow::Result<Config> {
        if let Some((path, file)) = file::load(cwd, cli.config.as_deref())? {
            file.apply(&mut cli, matches, &path)?;
        }
        Config::from_cli(cli)
    }

    /// The config file's `events` (`--config`, else devsup.toml or
    /// `[package.metadata.devsup]` in `cwd`), for `devsup status`.
    pub(crate) fn file_events(cwd: &Path, config: Option<&Path>) -> anyhow::Result<Option<String>> {
        Ok(file::load(cwd, config)?.and_then(|(_, file)| file.events))
    }

    /// Checks what clap cannot and builds the [`Config`].
    pub(crate) fn from_cli(cli: Cli) -> anyhow::Result<Config> {
        let mut sockets = Vec::new();
        if let Some(port) = cli.port {
            sockets.push(SocketSpec {
                name: None,
                addr: Addr::Tcp(sockets::parse_tcp(&port.to_string()).map_err(anyhow::Error::msg)?),
            });
        }
        sockets.extend(cli.sockets);
        if sockets.is_empty() && !sockets::socket_activated() {
            anyhow::bail!("nothing to listen on: pass --port 8080 or --socket tcp::8080");
        }
        sockets::names(&sockets)?;
        let watch = (!cli.no_watch).then(|| WatchConfig {
            roots: if cli.watch.is_empty() {
                vec![PathBuf::from(".")]
            } else {
                cli.watch
            },
            poll: cli.poll,
            debounce: cli.debounce,
            ignore: cli.ignore,
            exts: cli.exts,
            signal_on: cli.signal_on,
            no_reload_on: cli.no_reload_on,
        });
        Ok(Config {
            prefix: cli.prefix,
            events: cli.events,
            livereload: cli.livereload,
            watch,
            sockets,
            backlog: cli.backlog,
            program: Program::new(cli.command)?,
            builds: cli.builds,
            listen_pid: cli.listen_pid,
            nonblocking: cli.nonblocking,
            drain_signal: cli.drain_signal,
            drain_timeout: cli.drain_timeout,
            ready_timeout: cli.ready_timeout,
            ready_after: cli.ready_after,
            ready: cli.ready,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        Config::from_cli(Cli::try_parse_from(args)?)
    }

    #[test]
    fn watch_options() {
        let c = parse(&[
            "devsup",
            "-p",
            "1",
            "-w",
            "src",
            "-w",
            "templates",
            "--poll=1s",
            "--ext",
            "rs,html",
            "--signal-on",
            "templates/**=USR1",
            "--no-reload-on",
            "*.md",
            "--",
            "x",
        ])
        .unwrap();
        let w = c.watch.unwrap();
        assert_eq!(w.roots, [PathBuf::from("src"), PathBuf::from("templates")]);
        assert_eq!(w.poll, Some(Duration::from_secs(1)));
        assert_eq!(w.exts, ["rs", "html"]);
        assert_eq!(w.signal_on, [("templates/**".to_owned(), Signal::SIGUSR1)]);
        assert_eq!(w.debounce, Duration::from_millis(50));
        let c = parse(&["devsup", "-p", "1", "--poll", "--", "x"]).unwrap();
        assert_eq!(c.watch.unwrap().poll, Some(Duration::from_millis(500)));
        assert!(
            parse(&["devsup", "-p", "1", "--no-watch", "--", "x"])
                .unwrap()
                .watch
                .is_none()
        );
        assert!(
            parse(&["devsup", "-p", "1", "--no-watch", "-w", "a", "--", "x"]).is_err(),
            "conflict"
        );
        assert!(parse(&["devsup", "-p", "1", "--signal-on", "a=NOPE", "--", "x"]).is_err());
        assert!(parse(&["devsup", "-p", "1", "--signal-on", "nosignal", "--", "x"]).is_err());
    }

    #[test]
    fn defaults_and_port() {
        let c = parse(&["devsup", "--port", "8080", "--", "server", "-x"]).unwrap();
        assert_eq!(c.sockets.len(), 1);
        assert_eq!(
            c.sockets[0].addr,
            Addr::Tcp("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(c.backlog, 1024);
        assert_eq!(c.drain_signal, Signal::SIGTERM);
        assert_eq!(c.drain_timeout, Duration::from_secs(10));
        assert_eq!(c.ready_timeout, Duration::from_secs(60));
        assert_eq!(c.ready, ReadyRule::Auto);
        assert!(!c.nonblocking);
        assert_eq!(c.program.argv(), ["server", "-x"]);
        let c = parse(&[
            "devsup",
            "-p",
            "1",
            "--ready",
            "listen",
            "--nonblocking",
            "--",
            "x",
        ])
        .unwrap();
        assert_eq!(c.ready, ReadyRule::Listen);
        assert!(c.nonblocking);
        assert!(parse(&["devsup", "-p", "1", "--ready", "soon", "--", "x"]).is_err());
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(parse(&["devsup", "--port", "99999", "--", "x"]).is_err());
        assert!(parse(&["devsup", "--port", "80"]).is_err(), "no command");
        assert!(
            parse(&["devsup", "--", "x"])
                .unwrap_err()
                .to_string()
                .contains("nothing to listen on")
        );
        assert!(parse(&["devsup", "-p", "1", "--drain-signal", "NOPE", "--", "x"]).is_err());
        assert!(parse(&["devsup", "-p", "1", "--drain-timeout", "10x", "--", "x"]).is_err());
        assert!(parse(&["devsup", "-p", "1", "--backlog", "0", "--", "x"]).is_err());
        assert!(parse(&["devsup", "-p", "1", "-q", "-v", "--", "x"]).is_err());
        let dup = parse(&["devsup", "-s", "a=tcp::1", "-s", "a=tcp::2", "--", "x"]).unwrap_err();
        assert!(
            dup.to_string().contains("two sockets are named \"a\""),
            "{dup}"
        );
        let dup = parse(&["devsup", "-p", "1", "-s", "http=tcp::2", "--", "x"]).unwrap_err();
        assert!(
            dup.to_string().contains("two sockets are named \"http\""),
            "{dup}"
        );
    }
}
