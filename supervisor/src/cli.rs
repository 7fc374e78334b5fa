//! The command line: clap's definitions and the parsers of its values.
//!
//! Only what clap needs lives here. Merging in devsup.toml and checking
//! what clap cannot (see [`crate::config`]) turns a [`Cli`] into the
//! `Config` devsup runs with; every option here has a devsup.toml key of
//! the same name, which a test in `config/file.rs` checks.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use nix::sys::signal::Signal;

use crate::machine::ReadyRule;
use crate::report::events::Target;
use crate::sockets::SocketSpec;

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
pub(crate) struct Cli {
    /// Listen on 127.0.0.1:PORT (0 picks a free port). Same as `--socket tcp::PORT`.
    #[arg(short, long, value_name = "PORT", help_heading = "Sockets")]
    pub(crate) port: Option<u16>,

    /// A socket to listen on, passed at fds 3, 4, … in order: `[NAME=]tcp::[HOST:]PORT` or `[NAME=]unix::PATH`.
    #[arg(short, long = "socket", value_name = "SPEC", help_heading = "Sockets")]
    pub(crate) sockets: Vec<SocketSpec>,

    /// Length of each socket's accept queue; connections wait there while no generation accepts.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(i32).range(1..), help_heading = "Sockets")]
    pub(crate) backlog: i32,

    /// Pass the sockets with O_NONBLOCK set (systemd's NonBlocking=), for servers that hand them to
    /// an event loop without `set_nonblocking(true)` (tokio's `TcpListener::from_std`): a blocking
    /// socket there leaves a runtime thread stuck in accept, and the server's graceful shutdown
    /// cannot run. A server that accepts in a plain blocking loop then gets EAGAIN instead of
    /// waiting (it may spin or exit): leave this off for those. The flag belongs to the socket, so
    /// every generation sees it, and a server that changes it changes it for the next ones too.
    #[arg(long, help_heading = "Sockets")]
    pub(crate) nonblocking: bool,

    /// Set LISTEN_PID to the server's pid, for servers using libsystemd's `sd_listen_fds()`.
    /// Off by default so that wrappers such as `cargo run` or `sh -c` work: their child's pid differs.
    #[arg(long, help_heading = "Sockets")]
    pub(crate) listen_pid: bool,

    /// Shell command to run before each generation, in its own process group; repeat for several steps.
    /// A failing step keeps the running generation.
    #[arg(short, long = "build", value_name = "CMD", help_heading = "Build")]
    pub(crate) builds: Vec<String>,

    /// Watch this directory (and the tree below it) or this one file for changes; repeat for several
    /// (default: the current directory).
    #[arg(short, long = "watch", value_name = "PATH", help_heading = "Watching")]
    pub(crate) watch: Vec<PathBuf>,

    /// Do not watch files: reload only on SIGHUP, `r` + Enter, or the server's own request.
    #[arg(long, conflicts_with_all = ["watch", "poll"], help_heading = "Watching")]
    pub(crate) no_watch: bool,

    /// Poll for changes (every INTERVAL, default 500ms) instead of using native file events,
    /// for filesystems without them (NFS, some container mounts).
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "500ms",
          require_equals = true, value_parser = parse_poll, help_heading = "Watching")]
    pub(crate) poll: Option<Duration>,

    /// Quiet time that ends a burst of changes: an editor's save or a checkout is one reload.
    #[arg(long, default_value = "50ms", value_parser = parse_duration, value_name = "DUR", help_heading = "Watching")]
    pub(crate) debounce: Duration,

    /// Ignore changes matching this pattern (gitignore syntax, e.g. `*.log`, `tmp/`), on top of
    /// .gitignore, .ignore, git's excludes and the built-in ignores (target/, .git/, editor files).
    #[arg(short, long = "ignore", value_name = "GLOB", help_heading = "Watching")]
    pub(crate) ignore: Vec<String>,

    /// Only changes to files with these extensions count, e.g. `--ext rs,toml,html`.
    #[arg(
        short,
        long = "ext",
        value_name = "EXTS",
        value_delimiter = ',',
        help_heading = "Watching"
    )]
    pub(crate) exts: Vec<String>,

    /// When every change matches GLOB, send SIGNAL to the running generation instead of
    /// reloading (templates, translations, static files), e.g. `--signal-on 'templates/**=USR1'`.
    #[arg(long = "signal-on", value_name = "GLOB=SIGNAL", value_parser = parse_signal_on, help_heading = "Watching")]
    pub(crate) signal_on: Vec<(String, Signal)>,

    /// Never reload for changes matching GLOB, even if watched, e.g. `--no-reload-on '*.md'`.
    #[arg(long = "no-reload-on", value_name = "GLOB", help_heading = "Watching")]
    pub(crate) no_reload_on: Vec<String>,

    /// What counts a new generation ready: `auto` (READY=1; until the server has sent one, the kernel
    /// showing it waiting on the socket), `notify` (READY=1 only) or `listen` (READY=1 or the
    /// kernel, whichever comes first). Where /proc cannot be read, a 1s timer; see --ready-after.
    #[arg(long, default_value = "auto", value_parser = parse_ready, value_name = "RULE", help_heading = "Handoff")]
    pub(crate) ready: ReadyRule,

    /// How long a new generation has to be ready before it is drained and the old one kept.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DUR", help_heading = "Handoff")]
    pub(crate) ready_timeout: Duration,

    /// Count a generation ready once it has stayed up this long, whatever --ready says.
    #[arg(long, value_parser = parse_duration, value_name = "DUR", help_heading = "Handoff")]
    pub(crate) ready_after: Option<Duration>,

    /// Signal sent to the old generation's process group to drain it.
    #[arg(long, default_value = "TERM", value_parser = parse_signal, value_name = "SIGNAL", help_heading = "Handoff")]
    pub(crate) drain_signal: Signal,

    /// How long a draining generation has before its process group gets SIGKILL.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DUR", help_heading = "Handoff")]
    pub(crate) drain_timeout: Duration,

    /// Only print warnings and errors.
    #[arg(short, long, conflicts_with = "verbose", help_heading = "Output")]
    pub(crate) quiet: bool,

    /// Print debug output too (or set DEVSUP_LOG, e.g. DEVSUP_LOG=devsup=trace).
    #[arg(short, long, help_heading = "Output")]
    pub(crate) verbose: bool,

    /// Prefix each line the server prints with its generation (`[gen 2] ...`).
    #[arg(long, help_heading = "Output")]
    pub(crate) prefix: bool,

    /// Write every step as one JSON object per line: to a file, to stdout (`-`, the log stays on
    /// stderr), or to clients of a unix socket (`unix::PATH`). The schema is in docs/events.md.
    #[arg(long, value_name = "PATH", value_parser = parse_events, help_heading = "Output")]
    pub(crate) events: Option<Target>,

    /// Reload the browser when a new generation is ready, and show build errors in it: serve a
    /// script and an event stream on ADDR (default 127.0.0.1:35729; port 0 picks one). Pages load
    /// it with `<script src="http://127.0.0.1:35729/devsup-livereload.js"></script>`; servers find
    /// the address in DEVSUP_LIVERELOAD.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = true,
          default_missing_value = crate::livereload::DEFAULT_ADDR,
          value_parser = crate::sockets::parse_tcp, help_heading = "Browser")]
    pub(crate) livereload: Option<std::net::SocketAddr>,

    /// Read options from this file instead of ./devsup.toml or ./Cargo.toml's
    /// [package.metadata.devsup].
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    /// The server command and its arguments.
    #[arg(last = true, value_name = "COMMAND")]
    pub(crate) command: Vec<OsString>,

    #[allow(missing_docs)]
    #[command(subcommand)]
    pub(crate) sub: Option<Sub>,
}

/// Subcommands: shell completions, and the status of a running devsup.
#[derive(Debug, Subcommand)]
pub(crate) enum Sub {
    /// Print a shell completion script, e.g. `devsup completions bash > /etc/bash_completion.d/devsup`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Show what the devsup running in this directory is doing: the active generation and since
    /// when, whether a build is running, and how the last one ended.
    Status {
        /// Print the status object of the event stream (docs/events.md) instead.
        #[arg(long)]
        json: bool,
        /// The events socket of the devsup to ask (`unix::PATH`); default: the `events` of
        /// ./devsup.toml if it is a socket, else the status socket of a devsup run here.
        #[arg(long, value_name = "unix::PATH")]
        events: Option<String>,
        /// Read ./devsup.toml's `events` from this file instead.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

/// Parses the command line. clap's own errors, `--help` and `--version`
/// print and exit from here, as clap does.
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> (Cli, ArgMatches) {
    try_parse(args).unwrap_or_else(|e| e.exit())
}

/// Parses the command line; `Err` is clap's error (or help) to print.
pub(crate) fn try_parse(
    args: impl IntoIterator<Item = OsString>,
) -> Result<(Cli, ArgMatches), clap::Error> {
    let args: Vec<OsString> = args.into_iter().collect();
    let matches = Cli::command()
        .try_get_matches_from(&args)
        .map_err(|e| poll_hint(e, &args))?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok((cli, matches))
}

/// `--poll`'s interval is optional, so it must follow an `=`: in
/// `--poll 1s`, clap takes `1s` for a stray argument and says only
/// "unexpected argument". Say how to write it.
fn poll_hint(e: clap::Error, args: &[OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return e;
    }
    let Some(ContextValue::String(stray)) = e.get(ContextKind::InvalidArg) else {
        return e;
    };
    let before_dashes = args.iter().take_while(|a| *a != "--");
    let after_poll = before_dashes
        .collect::<Vec<_>>()
        .windows(2)
        .any(|w| w[0] == "--poll" && w[1] == stray.as_str());
    if !after_poll {
        return e;
    }
    Cli::command().error(
        ErrorKind::UnknownArgument,
        format!(
            "unexpected argument '{stray}': --poll takes its interval after '=', write --poll={stray} (a bare --poll polls every 500ms)"
        ),
    )
}

/// Writes the completion script for `shell`.
pub(crate) fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "devsup", out);
}

/// The longest duration any option takes (`--ready-timeout`,
/// `--ready-after`, `--drain-timeout`, `--debounce`, `--poll`): a day is
/// beyond any real use, and bounding here is what keeps every
/// `Instant + duration` in devsup from overflowing.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The shortest `--poll` interval: each poll reads every watched directory
/// (and hashes its files), so a shorter one would keep a core busy.
pub(crate) const MIN_POLL: Duration = Duration::from_millis(10);

/// Parses `500ms`, `10s`, `1m`, `1.5s` (humantime, plus decimal seconds),
/// at most [`MAX_DURATION`].
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let too_long = || format!("{s:?} is too long: at most 1 day (24h)");
    let d = match humantime::parse_duration(s) {
        Ok(d) => d,
        Err(humantime::DurationError::NumberOverflow) => return Err(too_long()),
        Err(_) => match s.strip_suffix('s').and_then(|n| n.parse::<f64>().ok()) {
            Some(secs) if secs.is_finite() && secs >= 0.0 => {
                if secs > MAX_DURATION.as_secs_f64() {
                    return Err(too_long());
                }
                Duration::from_secs_f64(secs)
            }
            _ => {
                return Err(format!(
                    "{s:?} is not a duration: write it like 500ms, 10s or 2m"
                ));
            }
        },
    };
    if d > MAX_DURATION {
        return Err(too_long());
    }
    Ok(d)
}

/// Parses a `--poll` interval: a duration of at least [`MIN_POLL`].
pub(crate) fn parse_poll(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < MIN_POLL {
        return Err(format!(
            "{s:?} is too short: poll at most every 10ms (each poll reads every watched directory)"
        ));
    }
    Ok(d)
}

/// Parses `--events`: a file, `-` or `unix::PATH`.
pub(crate) fn parse_events(s: &str) -> Result<Target, String> {
    s.parse()
}

/// Parses `--ready`'s rule.
pub(crate) fn parse_ready(s: &str) -> Result<ReadyRule, String> {
    ReadyRule::parse(s)
}

/// Parses `GLOB=SIGNAL` for `--signal-on`.
pub(crate) fn parse_signal_on(s: &str) -> Result<(String, Signal), String> {
    let (glob, sig) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?} is not GLOB=SIGNAL, e.g. 'templates/**=USR1'"))?;
    globset::Glob::new(glob).map_err(|e| format!("bad glob {glob:?}: {e}"))?;
    Ok((glob.to_owned(), parse_signal(sig)?))
}

/// Parses a signal by name (`TERM`, `SIGTERM`, `usr1`) or number.
pub(crate) fn parse_signal(s: &str) -> Result<Signal, String> {
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
    fn out_of_range_durations_are_refused_not_a_panic() {
        // Each of these panicked in Duration::from_secs_f64 or overflowed
        // an Instant later on.
        for s in [
            "1e20s",
            "1e19s",
            "86400.001s",
            "25h",
            "2d",
            "99999999999999999999s",
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.contains("too long: at most 1 day"), "{s}: {e}");
        }
        assert_eq!(parse_duration("24h").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration("86400s").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for s in ["NaNs", "infs", "-0.5s", "1e400s"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
        // A zero poll interval burned a core.
        for s in ["0", "0ms", "0s", "9ms"] {
            let e = parse_poll(s).unwrap_err();
            assert!(e.contains("too short"), "{s}: {e}");
        }
        assert_eq!(parse_poll("10ms").unwrap(), MIN_POLL);
        assert!(parse_poll("2d").unwrap_err().contains("too long"));
    }

    #[test]
    fn an_out_of_range_option_is_named_in_the_error() {
        let err = |args: &[&str]| {
            let argv = ["devsup", "-p", "1"]
                .iter()
                .chain(args)
                .chain(&["--", "x"])
                .map(Into::into);
            try_parse(argv).unwrap_err().to_string()
        };
        for option in [
            "--drain-timeout",
            "--ready-timeout",
            "--ready-after",
            "--debounce",
        ] {
            let e = err(&[option, "1e20s"]);
            assert!(e.contains(option) && e.contains("at most 1 day"), "{e}");
        }
        let e = err(&["--poll=0"]);
        assert!(e.contains("--poll") && e.contains("too short"), "{e}");
    }

    #[test]
    fn a_poll_interval_without_equals_says_how_to_write_it() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let e = try_parse(args(&["devsup", "-p", "1", "--poll", "1s", "--", "x"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unexpected argument '1s'") && e.contains("write --poll=1s"),
            "{e}"
        );
        // Other stray arguments keep clap's own error.
        let e = try_parse(args(&["devsup", "-p", "1", "stray", "--", "x"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unexpected argument 'stray'") && !e.contains("--poll="),
            "{e}"
        );
        // And the forms that are right still parse.
        for poll in [&["--poll=1s"][..], &["--poll"]] {
            let argv = [&["devsup", "-p", "1"][..], poll, &["--", "x"]].concat();
            assert!(try_parse(args(&argv)).is_ok(), "{argv:?}");
        }
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
    fn completions_generate_for_each_shell() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("devsup") && text.contains("drain-timeout"),
                "{shell}"
            );
        }
    }
}
