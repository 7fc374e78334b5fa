//! The command line, turned into a plain [`Config`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use nix::sys::signal::Signal;

use crate::generation::Program;
use crate::machine::Policy;
use crate::sockets::{self, Addr, SocketSpec};
use crate::watch::WatchConfig;

/// Reload a network server on code changes without dropping a connection.
///
/// devsup binds the listening sockets once and passes them to each new
/// generation of your server (systemd's LISTEN_FDS protocol, read with
/// `listenfd::take_tcp_listener(0)`). On a reload it starts the new
/// generation, waits until it is ready, then drains the old one.
#[derive(Debug, Parser)]
#[command(
    name = "devsup",
    version,
    about,
    long_about = None,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true,
    after_help = "\
Examples:
  devsup --port 8080 -- ./target/debug/server
  devsup --port 8080 --build 'cargo build' -- ./target/debug/server
  devsup -s http=tcp::[::1]:8080 -s admin=unix::/tmp/admin.sock --ready-after 1s -- cargo run

Reload: a file change, SIGHUP, r + Enter, or DEVSUP_RELOAD=1 from the server.
Stop: Ctrl-C (or q + Enter) drains every generation; Ctrl-C again kills them.
Options can also live in devsup.toml or [package.metadata.devsup] in Cargo.toml;
the command line wins."
)]
pub struct Cli {
    /// Listen on 127.0.0.1:PORT (0 picks a free port). Same as `--socket tcp::PORT`.
    #[arg(short, long, value_name = "PORT", help_heading = "Sockets")]
    pub port: Option<u16>,

    /// A socket to listen on, passed at fds 3, 4, … in order: `[NAME=]tcp::[HOST:]PORT` or `[NAME=]unix::PATH`.
    #[arg(short, long = "socket", value_name = "SPEC", help_heading = "Sockets")]
    pub sockets: Vec<SocketSpec>,

    /// Length of each socket's accept queue; connections wait there while no generation accepts.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(i32).range(1..), help_heading = "Sockets")]
    pub backlog: i32,

    /// Set LISTEN_PID to the server's pid, for servers using libsystemd's `sd_listen_fds()`.
    /// Off by default so that wrappers such as `cargo run` or `sh -c` work: their child's pid differs.
    #[arg(long, help_heading = "Sockets")]
    pub listen_pid: bool,

    /// Shell command to run before each generation, in its own process group; repeat for several steps.
    /// A failing step keeps the running generation.
    #[arg(short, long = "build", value_name = "CMD", help_heading = "Build")]
    pub builds: Vec<String>,

    /// Watch this path for changes; repeat for several (default: the current directory).
    #[arg(short, long = "watch", value_name = "PATH", help_heading = "Watching")]
    pub watch: Vec<PathBuf>,

    /// Do not watch files: reload only on SIGHUP, `r` + Enter, or the server's own request.
    #[arg(long, conflicts_with_all = ["watch", "poll"], help_heading = "Watching")]
    pub no_watch: bool,

    /// Poll for changes (every INTERVAL, default 500ms) instead of using native file events,
    /// for filesystems without them (NFS, some container mounts).
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "500ms",
          require_equals = true, value_parser = parse_duration, help_heading = "Watching")]
    pub poll: Option<Duration>,

    /// Quiet time that ends a burst of changes: an editor's save or a checkout is one reload.
    #[arg(long, default_value = "50ms", value_parser = parse_duration, value_name = "DUR", help_heading = "Watching")]
    pub debounce: Duration,

    /// Ignore changes matching this pattern (gitignore syntax, e.g. `*.log`, `tmp/`), on top of
    /// .gitignore, .ignore, git's excludes and the built-in ignores (target/, .git/, editor files).
    #[arg(short, long = "ignore", value_name = "GLOB", help_heading = "Watching")]
    pub ignore: Vec<String>,

    /// Only changes to files with these extensions count, e.g. `--ext rs,toml,html`.
    #[arg(
        short,
        long = "ext",
        value_name = "EXTS",
        value_delimiter = ',',
        help_heading = "Watching"
    )]
    pub exts: Vec<String>,

    /// When every change matches GLOB, send SIGNAL to the running generation instead of
    /// reloading (templates, translations, static files), e.g. `--signal-on 'templates/**=USR1'`.
    #[arg(long = "signal-on", value_name = "GLOB=SIGNAL", value_parser = parse_signal_on, help_heading = "Watching")]
    pub signal_on: Vec<(String, Signal)>,

    /// Never reload for changes matching GLOB, even if watched, e.g. `--no-reload-on '*.md'`.
    #[arg(long = "no-reload-on", value_name = "GLOB", help_heading = "Watching")]
    pub no_reload_on: Vec<String>,

    /// How long a new generation has to send READY=1 before it is drained and the old one kept.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DUR", help_heading = "Handoff")]
    pub ready_timeout: Duration,

    /// Count a generation ready once it has stayed up this long (for servers that never send READY=1).
    #[arg(long, value_parser = parse_duration, value_name = "DUR", help_heading = "Handoff")]
    pub ready_after: Option<Duration>,

    /// Signal sent to the old generation's process group to drain it.
    #[arg(long, default_value = "TERM", value_parser = parse_signal, value_name = "SIGNAL", help_heading = "Handoff")]
    pub drain_signal: Signal,

    /// How long a draining generation has before its process group gets SIGKILL.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DUR", help_heading = "Handoff")]
    pub drain_timeout: Duration,

    /// Only print warnings and errors.
    #[arg(short, long, conflicts_with = "verbose", help_heading = "Output")]
    pub quiet: bool,

    /// Print debug output too (or set DEVSUP_LOG, e.g. DEVSUP_LOG=devsup=trace).
    #[arg(short, long, help_heading = "Output")]
    pub verbose: bool,

    /// Prefix each line the server prints with its generation (`[gen 2] ...`).
    #[arg(long, help_heading = "Output")]
    pub prefix: bool,

    /// Reload the browser when a new generation is ready, and show build errors in it: serve a
    /// script and an event stream on ADDR (default 127.0.0.1:35729; port 0 picks one). Pages load
    /// it with `<script src="http://127.0.0.1:35729/devsup-livereload.js"></script>`; servers find
    /// the address in DEVSUP_LIVERELOAD.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = true,
          default_missing_value = crate::livereload::DEFAULT_ADDR,
          value_parser = sockets::parse_tcp, help_heading = "Browser")]
    pub livereload: Option<std::net::SocketAddr>,

    /// Read options from this file instead of ./devsup.toml or ./Cargo.toml's
    /// [package.metadata.devsup].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// The server command and its arguments.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,

    #[allow(missing_docs)]
    #[command(subcommand)]
    pub sub: Option<Sub>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Print a shell completion script, e.g. `devsup completions bash > /etc/bash_completion.d/devsup`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Request {
    /// Supervise a server.
    Run(Box<Config>),
    /// Print completions for a shell.
    Completions(clap_complete::Shell),
}

/// Parses the command line and the config file; `Err` is a usage error to
/// print. clap's own errors and `--help` exit from here.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    cwd: &std::path::Path,
) -> anyhow::Result<(Request, bool, bool)> {
    let matches = Cli::command().get_matches_from(args);
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some(Sub::Completions { shell }) = cli.sub {
        return Ok((Request::Completions(shell), false, false));
    }
    if let Some((file, config)) = crate::config::load(cwd, cli.config.as_deref())? {
        config.apply(&mut cli, &matches, &file)?;
    }
    let (quiet, verbose) = (cli.quiet, cli.verbose);
    Ok((Request::Run(Box::new(cli.into_config()?)), quiet, verbose))
}

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "devsup", out);
}

/// Everything devsup runs with, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Sockets, in fd order.
    pub sockets: Vec<SocketSpec>,
    /// Accept queue length.
    pub backlog: i32,
    /// The server.
    pub program: Program,
    /// Build steps.
    pub builds: Vec<String>,
    /// Set LISTEN_PID.
    pub listen_pid: bool,
    /// Drain signal.
    pub drain_signal: Signal,
    /// Drain timeout.
    pub drain_timeout: Duration,
    /// Ready timeout.
    pub ready_timeout: Duration,
    /// Ready after.
    pub ready_after: Option<Duration>,
    /// File watching, unless `--no-watch`.
    pub watch: Option<WatchConfig>,
    /// Prefix the server's output with its generation.
    pub prefix: bool,
    /// `--livereload`: where the live-reload server listens.
    pub livereload: Option<std::net::SocketAddr>,
}

impl Config {
    /// The decision parameters for the state machine.
    pub fn policy(&self) -> Policy {
        Policy {
            drain_signal: self.drain_signal,
            drain_timeout: self.drain_timeout,
            ready_timeout: self.ready_timeout,
            ready_after: self.ready_after,
            build_steps: self.builds.len(),
        }
    }
}

impl Cli {
    /// Checks what clap cannot and builds the [`Config`].
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut sockets = Vec::new();
        if let Some(port) = self.port {
            sockets.push(SocketSpec {
                name: None,
                addr: Addr::Tcp(sockets::parse_tcp(&port.to_string()).map_err(anyhow::Error::msg)?),
            });
        }
        sockets.extend(self.sockets);
        if sockets.is_empty() {
            anyhow::bail!("nothing to listen on: pass --port 8080 or --socket tcp::8080");
        }
        sockets::names(&sockets)?;
        let watch = (!self.no_watch).then(|| WatchConfig {
            roots: if self.watch.is_empty() {
                vec![PathBuf::from(".")]
            } else {
                self.watch
            },
            poll: self.poll,
            debounce: self.debounce,
            ignore: self.ignore,
            exts: self.exts,
            signal_on: self.signal_on,
            no_reload_on: self.no_reload_on,
        });
        Ok(Config {
            prefix: self.prefix,
            watch,
            sockets,
            backlog: self.backlog,
            program: Program::new(self.command)?,
            builds: self.builds,
            listen_pid: self.listen_pid,
            drain_signal: self.drain_signal,
            drain_timeout: self.drain_timeout,
            ready_timeout: self.ready_timeout,
            ready_after: self.ready_after,
            livereload: self.livereload,
        })
    }
}

/// Parses `500ms`, `10s`, `1m`, `1.5s` (humantime, plus decimal seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(d);
    }
    if let Some(secs) = s.strip_suffix('s').and_then(|n| n.parse::<f64>().ok()) {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    Err(format!(
        "{s:?} is not a duration: write it like 500ms, 10s or 2m"
    ))
}

/// Parses `GLOB=SIGNAL` for `--signal-on`.
pub fn parse_signal_on(s: &str) -> Result<(String, Signal), String> {
    let (glob, sig) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?} is not GLOB=SIGNAL, e.g. 'templates/**=USR1'"))?;
    globset::Glob::new(glob).map_err(|e| format!("bad glob {glob:?}: {e}"))?;
    Ok((glob.to_owned(), parse_signal(sig)?))
}

/// Parses a signal by name (`TERM`, `SIGTERM`, `usr1`) or number.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let err = || format!("{s:?} is not a signal: use a name such as TERM, INT, QUIT, USR1 or HUP");
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| err());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        Cli::try_parse_from(args)?.into_config()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(
            parse_duration("10x")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse_signal("int").unwrap(), Signal::SIGINT);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("FOO").unwrap_err().contains("not a signal"));
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
        assert_eq!(c.program.argv(), ["server", "-x"]);
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
