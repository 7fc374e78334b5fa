//! The command line: clap's definitions and the parsers of its values.
//!
//! Only what clap needs lives here: [`Cli::options`] maps clap's values
//! into a layer of [`Options`], the same layer `config/file.rs` makes of
//! devsup.toml, and [`crate::config`] merges the two, fills in the
//! defaults and checks the result, once. The value parsers are the types'
//! own (`FromStr`), or `crate::duration` and `crate::signal` for types
//! devsup does not own. Every option here has a devsup.toml key of the same
//! name, which a test in `config/file.rs` checks. Only `lib.rs` imports
//! this module (and tests that run a command line).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::signal::Signal;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{self, Options};
use crate::duration::{parse as parse_duration, parse_poll};
use crate::machine::ReadyRule;
use crate::report::Target;
use crate::signal::{parse as parse_signal, parse_on as parse_signal_on};
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
  devsup --port 8080                    (in a Cargo package: builds and runs what `cargo run` would)
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
    /// [default: 1024]
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..), help_heading = "Sockets")]
    pub(crate) backlog: Option<i32>,

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

    /// With no command, in a Cargo package: run this binary of the package (default: the one
    /// `cargo run` runs, its `default-run` or its only binary).
    #[arg(long, value_name = "NAME", help_heading = "Build")]
    pub(crate) bin: Option<String>,

    /// With no command, in a Cargo workspace: build and run this member (cargo's `-p`; devsup's
    /// `-p` is `--port`).
    #[arg(long, value_name = "NAME", help_heading = "Build")]
    pub(crate) package: Option<String>,

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
    /// [default: 50ms]
    #[arg(long, value_parser = parse_duration, value_name = "DUR", help_heading = "Watching")]
    pub(crate) debounce: Option<Duration>,

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
    /// [default: auto]
    #[arg(long, value_name = "RULE", help_heading = "Handoff")]
    pub(crate) ready: Option<ReadyRule>,

    /// How long a new generation has to be ready before it is drained and the old one kept.
    /// [default: 60s]
    #[arg(long, value_parser = parse_duration, value_name = "DUR", help_heading = "Handoff")]
    pub(crate) ready_timeout: Option<Duration>,

    /// Count a generation ready once it has stayed up this long, whatever --ready says.
    #[arg(long, value_parser = parse_duration, value_name = "DUR", help_heading = "Handoff")]
    pub(crate) ready_after: Option<Duration>,

    /// Signal sent to the old generation's process group to drain it. [default: TERM]
    #[arg(long, value_parser = parse_signal, value_name = "SIGNAL", help_heading = "Handoff")]
    pub(crate) drain_signal: Option<Signal>,

    /// How long a draining generation has before its process group gets SIGKILL. [default: 10s]
    #[arg(long, value_parser = parse_duration, value_name = "DUR", help_heading = "Handoff")]
    pub(crate) drain_timeout: Option<Duration>,

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
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    pub(crate) events: Option<Target>,

    /// Reload the browser when a new generation is ready, and show build errors in it: serve a
    /// script and an event stream on ADDR (default 127.0.0.1:35729; port 0 picks one). Pages load
    /// it with `<script src="http://127.0.0.1:35729/devsup-livereload.js"></script>`; servers find
    /// the address in DEVSUP_LIVERELOAD.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = true,
          default_missing_value = config::DEFAULT_LIVERELOAD,
          value_parser = crate::sockets::parse_tcp, help_heading = "Browser")]
    pub(crate) livereload: Option<std::net::SocketAddr>,

    /// With --livereload, make each `--> FILE:LINE:COL` of a failed build's output in the browser's
    /// overlay a link that opens your editor: a URL template with {file} (absolute), {line} and
    /// {column}, e.g. `vscode://file/{file}:{line}:{column}` (VS Code),
    /// `idea://open?file={file}&line={line}` (JetBrains), `subl://open?url=file://{file}&line={line}`.
    #[arg(long, value_name = "TEMPLATE", help_heading = "Browser")]
    pub(crate) editor_url: Option<String>,

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
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Cli {
    try_parse(args).unwrap_or_else(|e| e.exit())
}

/// Parses the command line; `Err` is clap's error (or help) to print.
pub(crate) fn try_parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
    let args: Vec<OsString> = args.into_iter().collect();
    let matches: ArgMatches = Cli::command()
        .try_get_matches_from(&args)
        .map_err(|e| poll_hint(e, &args))?;
    Cli::from_arg_matches(&matches)
}

impl Cli {
    /// The options the command line gave, as a layer for
    /// [`config::Config::load`] to put over the config file's: a flag is
    /// given when set, a repeated option when it has a value.
    pub(crate) fn options(self) -> Options {
        let flag = |on: bool| on.then_some(true);
        let list = |v: Vec<String>| (!v.is_empty()).then_some(v);
        Options {
            port: self.port,
            sockets: (!self.sockets.is_empty()).then_some(self.sockets),
            backlog: self.backlog,
            listen_pid: flag(self.listen_pid),
            nonblocking: flag(self.nonblocking),
            builds: list(self.builds),
            bin: self.bin,
            package: self.package,
            watch: (!self.watch.is_empty()).then_some(self.watch),
            no_watch: flag(self.no_watch),
            poll: self.poll,
            debounce: self.debounce,
            ignore: list(self.ignore),
            exts: list(self.exts),
            signal_on: (!self.signal_on.is_empty()).then_some(self.signal_on),
            no_reload_on: list(self.no_reload_on),
            ready_timeout: self.ready_timeout,
            ready_after: self.ready_after,
            ready: self.ready,
            drain_signal: self.drain_signal,
            drain_timeout: self.drain_timeout,
            prefix: flag(self.prefix),
            events: self.events,
            livereload: self.livereload.map(Some),
            editor_url: self.editor_url,
            command: (!self.command.is_empty()).then_some(self.command),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
