//! The configuration devsup runs with, below the command line: two layers
//! of [`Options`] (the command line's, from `cli.rs`, over the config
//! file's, from [`mod@file`]: devsup.toml or `[package.metadata.devsup]`),
//! merged once, given their defaults once and checked once into a plain
//! [`Config`].

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::signal::Signal;

use crate::cargo::{self, Inferred};
use crate::machine::{Policy, ReadyRule};
use crate::program::Program;
use crate::report::Target;
use crate::sockets::{self, Addr, SocketSpec};
use crate::sources::watch::WatchConfig;

mod file;
#[cfg(all(test, unix))]
pub(crate) use file::FileConfig;

/// `--backlog`'s default.
const DEFAULT_BACKLOG: i32 = 1024;
/// `--debounce`'s default.
const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);
/// `--ready-timeout`'s default.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// `--drain-timeout`'s default.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// `--drain-signal`'s default.
const DEFAULT_DRAIN_SIGNAL: Signal = Signal::SIGTERM;
/// Where `--livereload` (or `livereload = true`) serves without an address.
pub(crate) const DEFAULT_LIVERELOAD: &str = "127.0.0.1:35729";

/// One layer of options, each `None` when the layer does not give it: the
/// command line's (`Cli::options`) or the config file's
/// (`FileConfig::options`). Each field is the option of the same name.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub(crate) struct Options {
    pub(crate) port: Option<u16>,
    pub(crate) sockets: Option<Vec<SocketSpec>>,
    pub(crate) backlog: Option<i32>,
    pub(crate) listen_pid: Option<bool>,
    pub(crate) nonblocking: Option<bool>,
    pub(crate) builds: Option<Vec<String>>,
    pub(crate) bin: Option<String>,
    pub(crate) package: Option<String>,
    pub(crate) watch: Option<Vec<PathBuf>>,
    pub(crate) no_watch: Option<bool>,
    pub(crate) poll: Option<Duration>,
    pub(crate) debounce: Option<Duration>,
    pub(crate) ignore: Option<Vec<String>>,
    pub(crate) exts: Option<Vec<String>>,
    pub(crate) signal_on: Option<Vec<(String, Signal)>>,
    pub(crate) no_reload_on: Option<Vec<String>>,
    pub(crate) ready_timeout: Option<Duration>,
    pub(crate) ready_after: Option<Duration>,
    pub(crate) ready: Option<ReadyRule>,
    pub(crate) drain_signal: Option<Signal>,
    pub(crate) drain_timeout: Option<Duration>,
    pub(crate) prefix: Option<bool>,
    pub(crate) events: Option<Target>,
    /// `Some(None)`: switched off (`livereload = false`).
    pub(crate) livereload: Option<Option<SocketAddr>>,
    pub(crate) editor_url: Option<String>,
    pub(crate) command: Option<Vec<OsString>>,
}

impl Options {
    /// This layer over `under`: each option from here if given, else from
    /// `under`. Where to listen (`port` and `sockets`) and what to watch
    /// (`watch` and `no_watch`) are taken whole from the upper layer if it
    /// gives either half.
    pub(crate) fn over(self, under: Options) -> Options {
        let (port, sockets) = if self.port.is_some() || self.sockets.is_some() {
            (self.port, self.sockets)
        } else {
            (under.port, under.sockets)
        };
        let (watch, no_watch) = if self.watch.is_some() || self.no_watch.is_some() {
            (self.watch, self.no_watch)
        } else {
            (under.watch, under.no_watch)
        };
        Options {
            port,
            sockets,
            watch,
            no_watch,
            backlog: self.backlog.or(under.backlog),
            listen_pid: self.listen_pid.or(under.listen_pid),
            nonblocking: self.nonblocking.or(under.nonblocking),
            builds: self.builds.or(under.builds),
            bin: self.bin.or(under.bin),
            package: self.package.or(under.package),
            poll: self.poll.or(under.poll),
            debounce: self.debounce.or(under.debounce),
            ignore: self.ignore.or(under.ignore),
            exts: self.exts.or(under.exts),
            signal_on: self.signal_on.or(under.signal_on),
            no_reload_on: self.no_reload_on.or(under.no_reload_on),
            ready_timeout: self.ready_timeout.or(under.ready_timeout),
            ready_after: self.ready_after.or(under.ready_after),
            ready: self.ready.or(under.ready),
            drain_signal: self.drain_signal.or(under.drain_signal),
            drain_timeout: self.drain_timeout.or(under.drain_timeout),
            prefix: self.prefix.or(under.prefix),
            events: self.events.or(under.events),
            livereload: self.livereload.or(under.livereload),
            editor_url: self.editor_url.or(under.editor_url),
            command: self.command.or(under.command),
        }
    }
}

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
    pub(crate) livereload: Option<SocketAddr>,
    /// No command was given: what devsup inferred from the Cargo package
    /// (its build step is the last of `builds`).
    pub(crate) cargo: Option<Inferred>,
    /// `--editor-url`, and the directory relative paths in build output
    /// are under (the Cargo workspace's root, else devsup's directory).
    pub(crate) editor: Option<Editor>,
}

/// Where the overlay's file links point: `--editor-url`'s template, and
/// the directory relative paths are under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Editor {
    pub(crate) template: String,
    pub(crate) base: PathBuf,
}

impl Config {
    /// The part of the configuration the state machine decides with.
    pub(crate) fn policy(&self) -> Policy {
        // Bounded when parsed (`duration::parse`), so that the state
        // machine's `now + timeout` cannot overflow.
        debug_assert!(
            [self.drain_timeout, self.ready_timeout]
                .into_iter()
                .chain(self.ready_after)
                .all(|d| d <= crate::duration::MAX)
        );
        Policy {
            drain_signal: self.drain_signal,
            drain_timeout: self.drain_timeout,
            ready_timeout: self.ready_timeout,
            ready_after: self.ready_after,
            ready: self.ready,
            build_steps: self.builds.len(),
            listen_pid: self.listen_pid,
        }
    }

    /// Reads the config file (`file`, else `devsup.toml` or
    /// `[package.metadata.devsup]` in `cwd`), puts the command line's
    /// `options` over it, and checks the result. `Err` is a usage error to
    /// print.
    pub(crate) fn load(
        options: Options,
        file: Option<&Path>,
        cwd: &Path,
    ) -> anyhow::Result<Config> {
        let from_file = match file::load(cwd, file)? {
            Some((path, file)) => file.options(&path)?,
            None => Options::default(),
        };
        Config::from_options_in(options.over(from_file), cwd)
    }

    /// [`Config::from_options`], but with no command, the binary `cargo
    /// run` would run in `cwd` (see [`crate::cargo`]).
    pub(crate) fn from_options_in(mut o: Options, cwd: &Path) -> anyhow::Result<Config> {
        let cwd = dunce::canonicalize(cwd).unwrap_or_else(|_| cwd.to_owned());
        if o.command.is_some() {
            let mut config = Config::from_options(o)?;
            if let Some(editor) = &mut config.editor {
                editor.base.clone_from(&cwd);
            }
            return Ok(config);
        }
        let inferred = cargo::infer(&cwd, o.bin.as_deref(), o.package.as_deref())?;
        o.command = Some(vec![inferred.bin.clone().into()]);
        o.builds
            .get_or_insert_with(Vec::new)
            .push(inferred.build.clone());
        // Used up: `from_options` refuses them next to a command.
        (o.bin, o.package) = (None, None);
        // What cargo builds from: the whole workspace (a member's path
        // dependencies), less a target directory inside it under another
        // name than the ignored `target/`.
        if o.watch.is_none() && o.no_watch.is_none() {
            o.watch = Some(vec![inferred.workspace_root.clone()]);
            if let Ok(inside) = inferred.target_dir.strip_prefix(&inferred.workspace_root)
                && !inside.as_os_str().is_empty()
                && inside != Path::new("target")
            {
                (o.ignore.get_or_insert_with(Vec::new)).push(format!("/{}/", inside.display()));
            }
        }
        let mut config = Config::from_options(o)?;
        if let Some(editor) = &mut config.editor {
            editor.base.clone_from(&inferred.workspace_root);
        }
        config.cargo = Some(inferred);
        Ok(config)
    }

    /// The config file's `events` (`file`, else devsup.toml or
    /// `[package.metadata.devsup]` in `cwd`), for `devsup status`.
    #[cfg(unix)]
    pub(crate) fn file_events(cwd: &Path, file: Option<&Path>) -> anyhow::Result<Option<String>> {
        Ok(file::load(cwd, file)?.and_then(|(_, file)| file.events))
    }

    /// Gives every option not given its default, checks what clap and the
    /// file format cannot, and builds the [`Config`].
    pub(crate) fn from_options(o: Options) -> anyhow::Result<Config> {
        no_zero_timeout(&o)?;
        editor_and_cargo_options_fit(&o)?;
        let mut sockets = Vec::new();
        if let Some(port) = o.port {
            sockets.push(SocketSpec {
                name: None,
                addr: Addr::Tcp(sockets::parse_tcp(&port.to_string()).map_err(anyhow::Error::msg)?),
            });
        }
        sockets.extend(o.sockets.unwrap_or_default());
        if sockets.is_empty() && !sockets::socket_activated() {
            anyhow::bail!("nothing to listen on: pass --port 8080 or --socket tcp::8080");
        }
        sockets::names(&sockets)?;
        no_address_twice(&sockets)?;
        if o.exts
            .as_ref()
            .is_some_and(|e| e.iter().any(String::is_empty))
        {
            anyhow::bail!(
                "--ext: an empty extension matches no file, so no change would reload: \
                 give extensions like --ext rs,toml (or leave --ext out to watch every file)"
            );
        }
        let watch = (!o.no_watch.unwrap_or(false)).then(|| WatchConfig {
            roots: o.watch.unwrap_or_else(|| vec![PathBuf::from(".")]),
            poll: o.poll,
            debounce: o.debounce.unwrap_or(DEFAULT_DEBOUNCE),
            ignore: o.ignore.unwrap_or_default(),
            exts: o.exts.unwrap_or_default(),
            signal_on: o.signal_on.unwrap_or_default(),
            no_reload_on: o.no_reload_on.unwrap_or_default(),
        });
        Ok(Config {
            prefix: o.prefix.unwrap_or(false),
            events: o.events,
            livereload: o.livereload.flatten(),
            watch,
            sockets,
            backlog: o.backlog.unwrap_or(DEFAULT_BACKLOG),
            program: Program::new(o.command.unwrap_or_default())?,
            builds: o.builds.unwrap_or_default(),
            listen_pid: o.listen_pid.unwrap_or(false),
            nonblocking: o.nonblocking.unwrap_or(false),
            drain_signal: o.drain_signal.unwrap_or(DEFAULT_DRAIN_SIGNAL),
            drain_timeout: o.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT),
            ready_timeout: o.ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT),
            ready_after: o.ready_after,
            ready: o.ready.unwrap_or(ReadyRule::Auto),
            cargo: None,
            editor: o.editor_url.map(|template| Editor {
                template,
                base: PathBuf::from("."),
            }),
        })
    }
}

/// Fails on options that do not go together: `--editor-url` without
/// `--livereload` or without `{file}`, `--bin`/`--package` with a command.
fn editor_and_cargo_options_fit(o: &Options) -> anyhow::Result<()> {
    if o.editor_url.is_some() && o.livereload.flatten().is_none() {
        anyhow::bail!(
            "--editor-url makes links in --livereload's overlay: add --livereload, or drop \
             --editor-url"
        );
    }
    if let Some(t) = &o.editor_url
        && !t.contains("{file}")
    {
        anyhow::bail!(
            "--editor-url {t:?} has no {{file}}: give a URL template with {{file}}, {{line}} and \
             {{column}}, e.g. 'vscode://file/{{file}}:{{line}}:{{column}}'"
        );
    }
    if o.command.is_some() {
        for (given, option) in [
            (o.bin.is_some(), "--bin"),
            (o.package.is_some(), "--package"),
        ] {
            if given {
                anyhow::bail!(
                    "{option} chooses what to build and run when no command is given: \
                     drop it, or drop the command after `--`"
                );
            }
        }
    }
    Ok(())
}

/// Fails on a zero `--drain-timeout` or `--ready-timeout`: no server
/// drains or starts in no time, and the messages that followed blamed it.
fn no_zero_timeout(o: &Options) -> anyhow::Result<()> {
    if o.drain_timeout == Some(Duration::ZERO) {
        anyhow::bail!(
            "--drain-timeout 0s leaves a generation no time to finish its requests: give it the \
             time they need (e.g. 10s), or pass --drain-signal KILL to stop old generations at once"
        );
    }
    if o.ready_timeout == Some(Duration::ZERO) {
        anyhow::bail!(
            "--ready-timeout 0s leaves a generation no time to start: give the longest start-up \
             you accept (e.g. 60s)"
        );
    }
    Ok(())
}

/// Fails if two specs name the same address: devsup would bind it twice,
/// and the second bind fail as if another server held it. Port 0 is a
/// different free port each time.
fn no_address_twice(specs: &[SocketSpec]) -> anyhow::Result<()> {
    for (i, spec) in specs.iter().enumerate() {
        let fixed = !matches!(spec.addr, Addr::Tcp(a) if a.port() == 0);
        if fixed && specs[..i].iter().any(|s| s.addr == spec.addr) {
            anyhow::bail!(
                "{} is given twice (--port and --socket, or two --socket): give each address once",
                spec.addr
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        Config::from_options(crate::cli::Cli::try_parse_from(args)?.options())
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

    /// `--socket tcp::P --socket tcp::P` said "port is in use: stop the
    /// other server", and `-e ''` turned every file trigger off silently
    /// (issue 19, defect 8).
    #[test]
    fn the_same_address_twice_and_an_empty_extension_are_refused() {
        let e = parse(&["devsup", "-s", "tcp::9101", "-s", "b=tcp::9101", "--", "x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("127.0.0.1:9101") && e.contains("twice"), "{e}");
        let e = parse(&[
            "devsup",
            "-p",
            "9102",
            "-s",
            "b=tcp::127.0.0.1:9102",
            "--",
            "x",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = parse(&[
            "devsup",
            "-s",
            "a=unix::/tmp/s",
            "-s",
            "b=unix::/tmp/s",
            "--",
            "x",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("/tmp/s") && e.contains("twice"), "{e}");
        // Port 0 picks a free port each time: not the same address.
        assert!(parse(&["devsup", "-s", "tcp::0", "-s", "b=tcp::0", "--", "x"]).is_ok());
        for ext in ["", "rs,", ",rs"] {
            let e = parse(&["devsup", "-p", "1", "-e", ext, "--", "x"])
                .unwrap_err()
                .to_string();
            assert!(e.contains("--ext") && e.contains("empty"), "{ext:?}: {e}");
        }
        assert!(parse(&["devsup", "-p", "1", "-e", "rs,toml", "--", "x"]).is_ok());
    }

    /// `--drain-timeout 0s` blamed a server that exited 19 ms later for
    /// ignoring the drain signal; `--ready-timeout 0s` said "never saw it
    /// wait on the socket", then "ready in 6ms" (issue 19, defect 8).
    #[test]
    fn zero_timeouts_are_refused_with_what_to_give() {
        let e = parse(&["devsup", "-p", "1", "--drain-timeout", "0s", "--", "x"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--drain-timeout 0s") && e.contains("--drain-signal KILL"),
            "{e}"
        );
        let e = parse(&["devsup", "-p", "1", "--ready-timeout", "0ms", "--", "x"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--ready-timeout 0s") && e.contains("e.g."),
            "{e}"
        );
        assert!(parse(&["devsup", "-p", "1", "--drain-timeout", "1ms", "--", "x"]).is_ok());
    }

    /// `--editor-url` needs `{file}`; relative paths are under devsup's
    /// directory (or the Cargo workspace's root, with no command).
    #[test]
    fn editor_url_needs_file_and_gets_a_base() {
        let e = parse(&[
            "devsup",
            "-p",
            "1",
            "--editor-url",
            "vscode://{file}",
            "--",
            "x",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("add --livereload"), "{e}");
        let e = parse(&[
            "devsup",
            "-p",
            "1",
            "--livereload",
            "--editor-url",
            "vscode://x",
            "--",
            "x",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--editor-url") && e.contains("{file}"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let cli = crate::cli::Cli::try_parse_from([
            "devsup",
            "-p",
            "1",
            "--livereload",
            "--editor-url",
            "vscode://file/{file}:{line}",
            "--",
            "x",
        ])
        .unwrap();
        let c = Config::from_options_in(cli.options(), dir.path()).unwrap();
        let editor = c.editor.unwrap();
        assert_eq!(editor.template, "vscode://file/{file}:{line}");
        assert_eq!(editor.base, dunce::canonicalize(dir.path()).unwrap());
    }

    /// With no command, devsup watches the Cargo workspace, less a target
    /// directory inside it (here `[build] target-dir = "out"`), whose
    /// writes would otherwise reload after every build. Unix only, as is
    /// the inferred build (the Windows executor refuses it so far).
    #[cfg(unix)]
    #[test]
    fn no_command_watches_the_workspace_but_not_its_target_dir() {
        let dir = tempfile::tempdir().unwrap();
        let root = dunce::canonicalize(dir.path()).unwrap();
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "Cargo.toml",
            "[workspace]\nmembers = [\"app\"]\nresolver = \"2\"\n",
        );
        write(".cargo/config.toml", "[build]\ntarget-dir = \"out\"\n");
        write(
            "app/Cargo.toml",
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        );
        write("app/src/main.rs", "fn main() {}\n");
        let cli = crate::cli::Cli::try_parse_from(["devsup", "-p", "1"]).unwrap();
        let c = Config::from_options_in(cli.options(), &root.join("app")).unwrap();
        let watch = c.watch.unwrap();
        assert_eq!(watch.roots, [root]);
        assert_eq!(watch.ignore, ["/out/"]);
        assert_eq!(c.cargo.unwrap().bin, "app");
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
