//! Third-party servers as people write them (tests/fixtures/servers),
//! run under devsup with reloads under load, and what each reload cost:
//! failed requests, how long each generation took to be counted ready (and
//! by which rule: the server's READY=1, devsup seeing it wait on the passed
//! socket, or the uptime timer devsup falls back to where `/proc` cannot
//! tell), how long each drain took, which drains devsup had to end with
//! SIGKILL, and which ones it saw caught in the blocking-socket trap.
//!
//! Shared by `tests/tests/it/unchanged.rs` (bounded runs, assertions) and
//! `devsup-bench --only unchanged` (the README's load, a table).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::devlog;
use crate::harness::{self, Devsup, TIMEOUT};
use crate::load::{self, LoadConfig, LoadReport, Mode};
use crate::tools;

/// The pinned Python servers, installed by [`tools::python_venv`].
pub const PYTHON_PACKAGES: [&str; 5] = [
    "uvicorn==0.34.3",
    "gunicorn==23.0.0",
    "aiohttp==3.14.5",
    "hypercorn==0.18.0",
    "waitress==3.0.2",
];
/// gunicorn's `--graceful-timeout`: how long its master lets the workers
/// finish their requests on SIGTERM before it kills them. A devsup drain
/// timeout for gunicorn must be longer, so that gunicorn's own bound acts
/// first and devsup never kills a drain gunicorn still runs in good order.
pub const GUNICORN_GRACE: Duration = Duration::from_secs(5);

/// A file of Debian's ruby-sd-notify, the gem puma's systemd integration
/// needs.
const SD_NOTIFY_GEM: &str =
    "/usr/share/rubygems-integration/all/gems/sd_notify-0.1.1/lib/sd_notify.rb";
/// express, from npm, installed by [`tools::npm`].
pub const EXPRESS: &str = "express@5.3.0";

/// A server from tests/fixtures/servers (or examples/).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// axum + listenfd, blocking listener from `from_std`, no graceful
    /// shutdown.
    AxumListenfd,
    /// The same with `with_graceful_shutdown` on SIGTERM: the trap.
    AxumListenfdGraceful,
    /// axum's current example (non-blocking listener) with graceful
    /// shutdown: no trap, hyper's drain.
    AxumNonblockingGraceful,
    /// Its opted-in form: `devsup_serve::serve`.
    AxumDevsupServe,
    /// `uvicorn --fd 3 asgi_app:app`.
    Uvicorn,
    /// `python3 uvicorn_devsup.py`.
    UvicornDevsup,
    /// `gunicorn -w 2 wsgi_app:app` with `devsup --listen-pid`.
    Gunicorn,
    /// `python3 stdlib_plain.py`.
    Stdlib,
    /// `python3 examples/python/server.py`.
    StdlibExample,
    /// Go net/http with go-systemd's `activation.Listeners()` and
    /// `Shutdown`, with `devsup --listen-pid`.
    GoActivation,
    /// The same server on contrib/go/devsup.
    GoDevsup,
    /// Node `http.createServer().listen({fd: 3})`.
    NodeListenFd,
    /// The same with `server.close()` on SIGTERM.
    NodeClose,
    /// The same server on contrib/node/devsup.js.
    NodeDevsup,
    /// express, `app.listen({fd: 3})`, `server.close()` on SIGTERM.
    Express,
    /// The same app on contrib/node/devsup.js.
    ExpressDevsup,
    /// aiohttp `web.run_app(sock=...)`.
    Aiohttp,
    /// aiohttp_devsup.py: an AppRunner that says READY=1 and drains.
    AiohttpDevsup,
    /// `hypercorn --bind fd://3 asgi_app:app`.
    Hypercorn,
    /// hypercorn_devsup.py: `hypercorn.asyncio.serve` with a shutdown
    /// trigger that says READY=1 and drains.
    HypercornDevsup,
    /// waitress `serve(sockets=[...])`.
    Waitress,
    /// waitress_devsup.py: `create_server(sockets=[...])`, READY=1 and a
    /// SIGTERM drain.
    WaitressDevsup,
    /// puma 5 with `devsup --listen-pid` and `-b` the passed address,
    /// without its systemd integration (as where the sd_notify gem is not
    /// installed: NOTIFY_SOCKET unset for it).
    Puma,
    /// The same with the sd_notify gem (Debian's ruby-sd-notify): puma says
    /// READY=1 itself.
    PumaNotify,
    /// The same with `-C devsup.rb`: its drain says `Connection: close`
    /// for a grace before puma's own stop.
    PumaDevsup,
}

/// How to run one server.
#[derive(Debug, Default)]
struct Cmd {
    program: PathBuf,
    args: Vec<OsString>,
    /// devsup options it needs.
    devsup: Vec<&'static str>,
    /// Environment for devsup (and so the server).
    env: Vec<(&'static str, OsString)>,
}

impl Server {
    /// Every server, each unchanged one followed by its opted-in form.
    pub const ALL: [Server; 25] = [
        Server::AxumListenfd,
        Server::AxumListenfdGraceful,
        Server::AxumNonblockingGraceful,
        Server::AxumDevsupServe,
        Server::Uvicorn,
        Server::UvicornDevsup,
        Server::Gunicorn,
        Server::Stdlib,
        Server::StdlibExample,
        Server::GoActivation,
        Server::GoDevsup,
        Server::NodeListenFd,
        Server::NodeClose,
        Server::NodeDevsup,
        Server::Express,
        Server::ExpressDevsup,
        Server::Aiohttp,
        Server::AiohttpDevsup,
        Server::Hypercorn,
        Server::HypercornDevsup,
        Server::Waitress,
        Server::WaitressDevsup,
        Server::Puma,
        Server::PumaNotify,
        Server::PumaDevsup,
    ];

    /// A short name for tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            Server::AxumListenfd => "axum+listenfd",
            Server::AxumListenfdGraceful => "axum+listenfd graceful",
            Server::AxumNonblockingGraceful => "axum nonblocking graceful",
            Server::AxumDevsupServe => "axum devsup_serve::serve",
            Server::Uvicorn => "uvicorn --fd 3",
            Server::UvicornDevsup => "uvicorn_devsup.py",
            Server::Gunicorn => "gunicorn -w 2 (sync)",
            Server::Stdlib => "stdlib http.server",
            Server::StdlibExample => "examples/python/server.py",
            Server::GoActivation => "Go activation.Listeners",
            Server::GoDevsup => "Go contrib/go/devsup",
            Server::NodeListenFd => "Node listen({fd: 3})",
            Server::NodeClose => "Node + server.close()",
            Server::NodeDevsup => "Node contrib/node/devsup.js",
            Server::Express => "express + server.close()",
            Server::ExpressDevsup => "express devsup.js",
            Server::Aiohttp => "aiohttp run_app(sock=)",
            Server::AiohttpDevsup => "aiohttp_devsup.py",
            Server::Hypercorn => "hypercorn --bind fd://3",
            Server::HypercornDevsup => "hypercorn_devsup.py",
            Server::Waitress => "waitress serve(sockets=)",
            Server::WaitressDevsup => "waitress_devsup.py",
            Server::Puma => "puma 5 -b (--listen-pid)",
            Server::PumaNotify => "puma 5 + sd_notify gem",
            Server::PumaDevsup => "puma 5 -C devsup.rb",
        }
    }

    /// Whether this is the opted-in form (gunicorn needs no change, so it
    /// counts as both).
    pub fn opted_in(self) -> bool {
        matches!(
            self,
            Server::AxumDevsupServe
                | Server::UvicornDevsup
                | Server::Gunicorn
                | Server::StdlibExample
                | Server::GoDevsup
                | Server::NodeDevsup
                | Server::ExpressDevsup
                | Server::AiohttpDevsup
                | Server::HypercornDevsup
                | Server::WaitressDevsup
                | Server::PumaNotify
                | Server::PumaDevsup
        )
    }

    /// Whether it sends READY=1.
    pub fn sends_ready(self) -> bool {
        self.opted_in()
    }

    /// Whether it needs the Python venv.
    pub fn needs_venv(self) -> bool {
        matches!(
            self,
            Server::Uvicorn
                | Server::UvicornDevsup
                | Server::Gunicorn
                | Server::Aiohttp
                | Server::AiohttpDevsup
                | Server::Hypercorn
                | Server::HypercornDevsup
                | Server::Waitress
                | Server::WaitressDevsup
        )
    }

    /// Whether `bins` has what it needs installed.
    fn has_tools(self, bins: &Bins) -> bool {
        match self {
            Server::GoActivation | Server::GoDevsup => bins.go.is_some(),
            Server::NodeListenFd | Server::NodeClose | Server::NodeDevsup => bins.node.is_some(),
            Server::Express | Server::ExpressDevsup => {
                bins.node.is_some() && bins.node_modules.is_some()
            }
            Server::Puma | Server::PumaNotify | Server::PumaDevsup => bins.puma.is_some(),
            _ => !self.needs_venv() || bins.venv.is_some(),
        }
    }

    /// The program and arguments, the devsup options and the environment it
    /// needs; `port` is the port devsup listens on.
    fn command(self, bins: &Bins, port: u16) -> Cmd {
        let python_dir = fixtures_dir().join("python");
        let venv = |program: &str| -> PathBuf {
            bins.venv
                .as_ref()
                .expect("a Python server needs the venv")
                .join(program)
        };
        let words = |w: &[&str]| -> Vec<OsString> { w.iter().map(OsString::from).collect() };
        let script = |name: &str| -> Vec<OsString> { vec![python_dir.join(name).into()] };
        let cmd = |program: PathBuf, args: Vec<OsString>| Cmd {
            program,
            args,
            ..Cmd::default()
        };
        match self {
            Server::AxumListenfd => cmd(bins.axum.join("axum-listenfd"), vec![]),
            Server::AxumListenfdGraceful => cmd(bins.axum.join("axum-listenfd-graceful"), vec![]),
            Server::AxumNonblockingGraceful => {
                cmd(bins.axum.join("axum-nonblocking-graceful"), vec![])
            }
            Server::AxumDevsupServe => cmd(bins.axum.join("axum-devsup-serve"), vec![]),
            Server::Uvicorn => {
                let mut args = words(&["--fd", "3", "--log-level", "warning", "--app-dir"]);
                args.extend([python_dir.clone().into(), "asgi_app:app".into()]);
                cmd(venv("uvicorn"), args)
            }
            Server::UvicornDevsup => cmd(venv("python"), script("uvicorn_devsup.py")),
            Server::Gunicorn => {
                // gunicorn bounds its own drain by --graceful-timeout (30 s
                // by default), then kills its workers: devsup's drain
                // timeout must be the longer one (see GUNICORN_GRACE).
                let mut args = words(&["-w", "2", "--log-level", "warning", "--chdir"]);
                args.extend([python_dir.clone().into(), "wsgi_app:app".into()]);
                let grace = GUNICORN_GRACE.as_secs().to_string();
                args.extend(["--graceful-timeout".into(), grace.into()]);
                Cmd {
                    devsup: vec!["--listen-pid"],
                    ..cmd(venv("gunicorn"), args)
                }
            }
            Server::Stdlib => cmd("python3".into(), script("stdlib_plain.py")),
            Server::StdlibExample => cmd(
                "python3".into(),
                vec![workspace_root().join("examples/python/server.py").into()],
            ),
            _ => self.other_command(bins, port, &python_dir),
        }
    }

    /// [`Server::command`] for the Go, Node, Python and Ruby servers of
    /// issue 21.
    fn other_command(self, bins: &Bins, port: u16, python_dir: &Path) -> Cmd {
        let node_dir = fixtures_dir().join("node");
        let tool = |p: &Option<PathBuf>| p.clone().expect("checked by Bins::has");
        let node = |script: &str| Cmd {
            program: tool(&bins.node),
            args: vec![node_dir.join(script).into()],
            env: bins
                .node_modules
                .iter()
                .map(|m| ("NODE_PATH", m.clone().into()))
                .collect(),
            ..Cmd::default()
        };
        let venv_python = |script: &str| Cmd {
            program: tool(&bins.venv).join("python"),
            args: vec![python_dir.join(script).into()],
            // waitress_app.py imports wsgi_app from beside it.
            env: vec![("PYTHONPATH", python_dir.into())],
            ..Cmd::default()
        };
        match self {
            Server::GoActivation => Cmd {
                program: tool(&bins.go).join("activation"),
                devsup: vec!["--listen-pid"],
                ..Cmd::default()
            },
            Server::GoDevsup => Cmd {
                program: tool(&bins.go).join("optedin"),
                ..Cmd::default()
            },
            Server::NodeListenFd => node("listen_fd.js"),
            Server::NodeClose => node("close_on_sigterm.js"),
            Server::NodeDevsup => node("devsup_opted_in.js"),
            Server::Express => node("express_app.js"),
            Server::ExpressDevsup => node("express_devsup.js"),
            Server::Aiohttp => venv_python("aiohttp_app.py"),
            Server::AiohttpDevsup => venv_python("aiohttp_devsup.py"),
            Server::Waitress => venv_python("waitress_app.py"),
            Server::WaitressDevsup => venv_python("waitress_devsup.py"),
            Server::HypercornDevsup => venv_python("hypercorn_devsup.py"),
            Server::Hypercorn => Cmd {
                program: tool(&bins.venv).join("hypercorn"),
                args: ["--bind", "fd://3", "--log-level", "warning", "asgi_app:app"]
                    .map(OsString::from)
                    .to_vec(),
                env: vec![("PYTHONPATH", python_dir.into())],
                ..Cmd::default()
            },
            Server::Puma | Server::PumaNotify | Server::PumaDevsup => {
                let ruby = fixtures_dir().join("ruby");
                let mut args: Vec<OsString> = vec![
                    tool(&bins.puma).into(),
                    "--quiet".into(),
                    "-b".into(),
                    format!("tcp://127.0.0.1:{port}").into(),
                    ruby.join("config.ru").into(),
                ];
                if self == Server::PumaDevsup {
                    args.splice(1..1, ["-C".into(), ruby.join("devsup.rb").into()]);
                }
                if self != Server::Puma {
                    return Cmd {
                        program: args.remove(0).into(),
                        args,
                        devsup: vec!["--listen-pid"],
                        ..Cmd::default()
                    };
                }
                // Without the gem's integration: NOTIFY_SOCKET unset for
                // puma (exec keeps the pid --listen-pid names).
                let mut sh = vec![
                    OsString::from("-c"),
                    "unset NOTIFY_SOCKET; exec \"$0\" \"$@\"".into(),
                ];
                sh.append(&mut args);
                Cmd {
                    program: "sh".into(),
                    args: sh,
                    devsup: vec!["--listen-pid"],
                    ..Cmd::default()
                }
            }
            _ => unreachable!("{self} is run by Server::command"),
        }
    }

    /// Whether devsup must listen on a port chosen before the server
    /// command is written (puma's `-b` names the passed address).
    fn needs_port(self) -> bool {
        matches!(self, Server::Puma | Server::PumaNotify | Server::PumaDevsup)
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the fixture programs are.
#[derive(Debug, Clone)]
pub struct Bins {
    /// The directory of the axum fixture binaries.
    pub axum: PathBuf,
    /// The venv's `bin/` with uvicorn, gunicorn, aiohttp, hypercorn and
    /// waitress, if it could be installed.
    pub venv: Option<PathBuf>,
    /// The directory of the Go fixtures (`activation`, `optedin`).
    pub go: Option<PathBuf>,
    /// `node`.
    pub node: Option<PathBuf>,
    /// `node_modules/` with express.
    pub node_modules: Option<PathBuf>,
    /// `puma`.
    pub puma: Option<PathBuf>,
}

impl Bins {
    /// Builds the axum and Go fixtures (once per process) and installs the
    /// venv, node, express and puma; each that cannot be installed is
    /// `None` after one loud line (a failure with `DEVSUP_REQUIRE_TOOLS=1`).
    pub fn get() -> &'static Bins {
        static BINS: OnceLock<Bins> = OnceLock::new();
        BINS.get_or_init(|| Bins {
            axum: build_axum_fixtures(),
            venv: tools::require(
                "unchanged servers: uvicorn, gunicorn, aiohttp, hypercorn, waitress",
                tools::python_venv("servers", &PYTHON_PACKAGES),
            ),
            go: tools::require("unchanged servers: Go and go-systemd", build_go_fixtures()),
            node: tools::require("unchanged servers: node", tools::apt("node", "nodejs")),
            node_modules: tools::require(
                "unchanged servers: express",
                tools::npm(EXPRESS).map(|dir| dir.join("node_modules")),
            ),
            puma: tools::require(
                "unchanged servers: puma and the sd_notify gem",
                tools::apt("puma", "puma").and_then(|puma| {
                    tools::apt_files(SD_NOTIFY_GEM, "ruby-sd-notify")?;
                    Ok(puma)
                }),
            ),
        })
    }

    /// Whether `server` can run here.
    pub fn has(&self, server: Server) -> bool {
        server.has_tools(self)
    }
}

/// Builds the Go fixtures (tests/fixtures/servers/go) with contrib/go/devsup
/// (and its tests) as a package of their module, offline; returns the
/// directory of the binaries, in the module's directory.
pub fn build_go_fixtures() -> Result<PathBuf, tools::Unavailable> {
    let go = fixtures_dir().join("go");
    tools::go_build(
        "servers",
        &[
            ("activation", &go.join("activation/main.go")),
            ("optedin", &go.join("optedin/main.go")),
        ],
        &[
            (
                "devsup",
                &workspace_root().join("contrib/go/devsup/devsup.go"),
            ),
            (
                "devsup",
                &workspace_root().join("contrib/go/devsup/devsup_test.go"),
            ),
        ],
    )
}

/// Builds `devsup-fixture-servers` and returns the directory of its
/// binaries: the release build when the caller is a release build (the
/// benchmark), otherwise the `trap` profile (a dev build whose tokio has no
/// debug assertions, so a blocking socket given to `from_std` behaves as in
/// a release build instead of panicking; see the workspace Cargo.toml).
pub fn build_axum_fixtures() -> PathBuf {
    if harness::binaries().release {
        return harness::build_packages(&["devsup-fixture-servers"]);
    }
    let target_dir = tools::target_dir();
    let manifest = workspace_root().join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--quiet", "--profile", "trap", "--bins"])
        .args(["-p", "devsup-fixture-servers", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    let started = Instant::now();
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
    eprintln!(
        "[unchanged] built devsup-fixture-servers (profile trap) in {:.1?}",
        started.elapsed()
    );
    target_dir.join("trap")
}

/// A loopback port free right now (for a server whose command names it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// tests/fixtures/servers.
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("tests/fixtures/servers")
}

/// The workspace's root directory.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
}

/// How to run one server.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Which server.
    pub server: Server,
    /// Keep-alive or close.
    pub mode: Mode,
    /// Concurrent clients.
    pub conns: usize,
    /// SIGHUP reloads.
    pub reloads: u32,
    /// Time from one reload to the next (a reload waits for the previous
    /// generation to be counted ready, or [`TIMEOUT`], before it is sent).
    pub interval: Duration,
    /// After the load has stopped, one more reload: the generation it
    /// drains has served a request (if the load stopped before it got one,
    /// a single GET first) and sees no new connection during its drain.
    pub idle_reload: bool,
    /// More devsup options (e.g. `--drain-timeout 3s`).
    pub devsup_args: Vec<String>,
    /// Echo devsup's log.
    pub verbose: bool,
    /// More environment for devsup (e.g. `DEVSUP_LOG`).
    pub env: Vec<(&'static str, OsString)>,
}

/// What one run of one server came to.
#[derive(Debug)]
pub struct RunResult {
    /// The server.
    pub server: Server,
    /// Every request of the load.
    pub report: LoadReport,
    /// Reloads sent.
    pub reloads: u32,
    /// Per generation counted ready (the first one too): how long from
    /// spawn to ready, and the rule ([`READY`], [`LISTENING`] or [`TIMER`]).
    pub ready: Vec<(u64, Duration, &'static str)>,
    /// Per drained generation: drain signal to exit.
    pub drains: Vec<(u64, Duration)>,
    /// Drained generations devsup had to SIGKILL at the drain timeout.
    pub killed: Vec<u64>,
    /// Drained generations devsup saw in the blocking-socket trap (an
    /// event loop blocked in `accept` on a passed socket), with its
    /// warning, which names the fix.
    pub trapped: Vec<(u64, String)>,
    /// Generations that failed before ready (exited while starting).
    pub failed_to_start: usize,
    /// Per generation whose accepted-connection probe ended (logged at
    /// debug level, see [`PROBE_LOG`]): probes, median and max cost of one.
    pub probe_costs: Vec<(u64, Duration, Duration)>,
    /// Process groups of generations still alive once devsup has exited
    /// (each generation is the group of the pid it was spawned as).
    pub left_behind: Vec<i32>,
    /// devsup's log, for assertion messages.
    pub log: Vec<String>,
    /// The server ran with `devsup --nonblocking`.
    pub nonblocking: bool,
}

/// The rule of a `gen=N ready in X` line: the server sent READY=1.
pub const READY: &str = "READY=1";
/// The rule of a `gen=N ready in X (listening: ...)` line: devsup saw one of
/// the generation's processes wait on a passed socket.
pub const LISTENING: &str = "listening";
/// `DEVSUP_LOG` that adds devsup's debug line with what each generation's
/// accepted-connection probes cost (`... accepted-connection probe done: 12
/// probes, 85us median, 240us max`).
pub const PROBE_LOG: &str = "info,devsup::executor::probe::accept_probe=debug";

/// The rule of a `gen=N ready in X (accepted a connection: ...)` line:
/// devsup saw one of the generation's processes hold a connection it
/// accepted on a passed port.
pub const ACCEPTED: &str = "accepted";
/// The rule of a `gen=N counted ready: up for X` line: the uptime timer.
pub const TIMER: &str = "timer";

impl RunResult {
    /// The server's name, and `--nonblocking` if it ran with it.
    pub fn label(&self) -> String {
        if self.nonblocking {
            format!("{} --nonblocking", self.server.name())
        } else {
            self.server.name().to_owned()
        }
    }

    /// The generations the reloads started (the first one, started cold
    /// before any load, is left out of the figures).
    pub fn reloaded(&self) -> impl Iterator<Item = &(u64, Duration, &'static str)> {
        self.ready.iter().filter(|r| r.0 >= 2)
    }

    /// Median and maximum ready time over the reloads.
    pub fn ready_median_max(&self) -> Option<(Duration, Duration)> {
        let samples: Vec<Duration> = self.reloaded().map(|r| r.1).collect();
        devlog::median_max(&samples)
    }

    /// Median and maximum drain time.
    pub fn drain_median_max(&self) -> Option<(Duration, Duration)> {
        let samples: Vec<Duration> = self.drains.iter().map(|d| d.1).collect();
        devlog::median_max(&samples)
    }

    /// The rules that made the reloads' generations ready, e.g. `READY=1`,
    /// or `READY=1/listening` when mixed.
    pub fn ready_rules(&self) -> String {
        let mut rules: Vec<&str> = self.reloaded().map(|r| r.2).collect();
        rules.sort_unstable();
        rules.dedup();
        if rules.is_empty() {
            "-".into()
        } else {
            rules.join("/")
        }
    }
}

/// Whether `line` says generation `generation` is ready, by either rule.
pub fn is_ready_line(line: &str, generation: u64) -> bool {
    devlog::is_event(line, generation, "ready")
        || devlog::is_event(line, generation, "counted ready")
}

/// Runs `config`: devsup on the server, generation 1 answering, load, the
/// reloads, the load stopped, every drained generation exited; then the
/// figures from devsup's log. devsup is terminated before returning.
pub fn run(config: &RunConfig, bins: &Bins) -> RunResult {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = if config.server.needs_port() {
        free_port()
    } else {
        0
    };
    let cmd = config.server.command(bins, port);
    let nonblocking = config.devsup_args.iter().any(|a| a == "--nonblocking");
    let mut builder = Devsup::builder(dir.path())
        .port(Some(&port.to_string()))
        .arg("--no-watch")
        .args(cmd.devsup)
        .args(&config.devsup_args)
        .server(cmd.program)
        .server_args(cmd.args)
        .echo(config.verbose);
    for (key, value) in cmd.env.iter().chain(&config.env) {
        builder = builder.env(key, value);
    }
    let devsup = builder.spawn();
    let addr = devsup.addr();
    // Generation 1 counted ready (by whichever rule) and answering before
    // the load starts, as a server a user starts and then uses. (Under
    // load, a single-threaded server is rarely caught waiting in `poll`.)
    let ready = harness::wait_until(TIMEOUT, || {
        devsup.count_matching(|l: &str| is_ready_line(l, 1)) > 0
    });
    assert!(
        ready,
        "{}: generation 1 was never counted ready; log:\n{}",
        config.server,
        devsup.log_text()
    );
    let answered = harness::wait_until(TIMEOUT, || {
        crate::http::get(addr, "/").is_ok_and(|r| r.generation() == Some(1))
    });
    assert!(
        answered,
        "{}: generation 1 never answered; log:\n{}",
        config.server,
        devsup.log_text()
    );
    if config.server.sends_ready() {
        // devsup may count generation 1 ready by the kernel rule before its
        // READY=1 arrives; once it has arrived, handoffs wait for READY=1.
        // Wait for it, so that every reload is counted by the same rule.
        let said_ready = harness::wait_until(TIMEOUT, || {
            devsup.count_matching(|l: &str| {
                devlog::subject(l).is_some_and(|(g, rest)| {
                    g == 1
                        && (rest.starts_with("sent READY=1")
                            || (rest.starts_with("ready in ")
                                && !rest.contains("(listening: ")
                                && !rest.contains("(accepted a connection: ")))
                })
            }) > 0
        });
        assert!(
            said_ready,
            "{}: generation 1 never sent READY=1; log:\n{}",
            config.server,
            devsup.log_text()
        );
    }

    let run = load::start(LoadConfig {
        conns: config.conns,
        mode: config.mode,
        duration: Duration::from_secs(600),
        ..LoadConfig::new(addr)
    });
    assert!(
        run.wait_ok(20, TIMEOUT),
        "{}: load is flowing; log:\n{}",
        config.server,
        devsup.log_text()
    );
    let started = Instant::now();
    for k in 1..=config.reloads {
        let due = started + config.interval * k;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        reload_and_wait(&devsup, u64::from(k) + 1);
    }
    let report = run.finish();
    let mut reloads = config.reloads;
    if config.idle_reload {
        // A server caught in the blocking-socket trap only blocks in
        // `accept` once it has accepted a connection: make sure the
        // generation this reload drains has. (A draining generation blocked
        // in `accept` may take the request instead, and exit: ask again.)
        let newest = u64::from(reloads) + 1;
        if !report.generations.contains_key(&newest) {
            let served = harness::wait_until(TIMEOUT, || {
                crate::http::get(addr, "/").is_ok_and(|r| r.generation() == Some(newest))
            });
            assert!(
                served,
                "{}: gen={newest} never answered; log:\n{}",
                config.server,
                devsup.log_text()
            );
        }
        reloads += 1;
        reload_and_wait(&devsup, u64::from(reloads) + 1);
    }

    // Every generation but the last drained and exited (by itself or
    // killed at the drain timeout).
    let last = u64::from(reloads) + 1;
    let settled = harness::wait_until(TIMEOUT, || {
        (1..last).all(|g| devsup.count_matching(harness::event(g, "exited")) > 0)
    });
    if !settled {
        eprintln!(
            "[unchanged] {}: old generations had not exited after {TIMEOUT:?}",
            config.server
        );
    }
    devsup.terminate(TIMEOUT);
    let log = devsup.lines();
    let mut result = figures(config.server, reloads, last, log, report);
    result.nonblocking = nonblocking;
    result.left_behind = groups_alive(&result.log);
    result
}

/// The process groups of the generations spawned in `log` that still have
/// a process (zombies aside).
fn groups_alive(log: &[String]) -> Vec<i32> {
    log.iter()
        .filter_map(|line| devlog::parse_spawned(line))
        .map(|(_, pgid)| pgid)
        .filter(|&pgid| {
            // kill(-pgid, 0) succeeds while the group has a process, a
            // zombie included: then look for a live member in /proc.
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok()
                && has_live_member(pgid)
        })
        .collect()
}

/// Whether a process of group `pgid` is alive (not a zombie), from
/// `/proc/*/stat`.
fn has_live_member(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        fields
            .first()
            .is_some_and(|state| *state != "Z" && *state != "X")
            && fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
    })
}

/// SIGHUP, then wait until `generation` is counted ready or failed (or
/// [`TIMEOUT`] passed, which the figures then show), so that every reload
/// is one handoff.
fn reload_and_wait(devsup: &Devsup, generation: u64) {
    devsup.reload();
    harness::wait_until(TIMEOUT, || {
        devsup.count_matching(|l: &str| is_ready_line(l, generation)) > 0
            || devsup.count_matching(harness::event(generation, "failed")) > 0
    });
}

/// The figures in devsup's log of a run whose newest generation is `last`.
fn figures(
    server: Server,
    reloads: u32,
    last: u64,
    log: Vec<String>,
    report: LoadReport,
) -> RunResult {
    let LogFigures {
        ready,
        drains,
        killed,
        trapped,
        failed_to_start,
        probe_costs,
    } = LogFigures::parse(&log, last);
    RunResult {
        server,
        report,
        reloads,
        ready,
        drains,
        killed,
        trapped,
        failed_to_start,
        probe_costs,
        log,
        nonblocking: false,
        left_behind: Vec::new(),
    }
}

/// What [`RunResult`] takes from devsup's log.
#[derive(Debug, Default, PartialEq)]
struct LogFigures {
    ready: Vec<(u64, Duration, &'static str)>,
    drains: Vec<(u64, Duration)>,
    killed: Vec<u64>,
    trapped: Vec<(u64, String)>,
    failed_to_start: usize,
    probe_costs: Vec<(u64, Duration, Duration)>,
}

impl LogFigures {
    /// Reads `log`, in which `last` is the newest generation (the one not
    /// drained).
    fn parse(log: &[String], last: u64) -> LogFigures {
        let mut figures = LogFigures::default();
        for line in log {
            figures.read(line, last);
        }
        figures
    }

    fn read(&mut self, line: &str, last: u64) {
        let Some((generation, rest)) = devlog::subject(line) else {
            return;
        };
        let after = |marker: &str| {
            rest.strip_prefix(marker)
                .and_then(|r| r.split_whitespace().next())
                .and_then(devlog::parse_duration)
        };
        // `ready in 4ms` (READY=1), `ready in 4ms (listening: pid=P polls
        // fd 3 with epoll)` (the kernel rule), `counted ready: up for 1000ms
        // without exiting` (the timer).
        if let Some(took) = after("ready in ") {
            let rule = if rest.contains("(listening: ") {
                LISTENING
            } else if rest.contains("(accepted a connection: ") {
                ACCEPTED
            } else {
                READY
            };
            self.ready.push((generation, took, rule));
        } else if let Some(took) = after("counted ready: up for ") {
            self.ready.push((generation, took, TIMER));
        }
        // `accepted-connection probe done: 12 probes, 85us median, 240us max`
        if let Some(costs) = rest.split("accepted-connection probe ").nth(1) {
            let numbers: Vec<u64> = costs
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            if let [probes, median, max] = numbers[..] {
                self.probe_costs.push((
                    probes,
                    Duration::from_micros(median),
                    Duration::from_micros(max),
                ));
            }
        }
        if rest.starts_with("failed before ready") {
            self.failed_to_start += 1;
        }
        if generation < last && rest.starts_with("still running") && rest.contains("SIGKILL") {
            self.killed.push(generation);
        }
        // `draining for 1000ms, but pid=P is blocked in accept4 on fd 3
        // ...` or `... is still blocked in accept4 ...`: the trap, named.
        if rest.starts_with("draining for ") && rest.contains(" blocked in ") {
            self.trapped.push((generation, line.to_owned()));
        }
        if generation < last && rest.starts_with("exited") {
            let took = rest
                .rfind(" after ")
                .and_then(|at| rest[at + " after ".len()..].split_whitespace().next())
                .and_then(devlog::parse_duration);
            if let Some(took) = took {
                self.drains.push((generation, took));
            }
        }
    }
}

/// One row of the figures: server, mode, requests, failed, ready
/// (median/max, rule), drain (median/max), killed.
pub fn row(result: &RunResult) -> String {
    let mm = |m: Option<(Duration, Duration)>| match m {
        Some((median, max)) => format!("{} / {}", fmt(median), fmt(max)),
        None => "n/a".into(),
    };
    format!(
        "{:<40} {:<10} {:>9} {:>7} {:>19} {:<15} {:>19} {:>6}  {}",
        result.label(),
        result.report.mode.to_string(),
        result.report.total(),
        result.report.failures(),
        mm(result.ready_median_max()),
        result.ready_rules(),
        mm(result.drain_median_max()),
        result.killed.len(),
        result.report.failure_summary(),
    )
}

/// What the accepted-connection probes of one run cost: generations
/// probed, probes, the median of the generations' median cost per probe,
/// and the largest cost of one probe.
pub fn probe_cost_row(result: &RunResult) -> String {
    let mut medians: Vec<Duration> = result.probe_costs.iter().map(|c| c.1).collect();
    medians.sort_unstable();
    let probes: u64 = result.probe_costs.iter().map(|c| c.0).sum();
    let max = result.probe_costs.iter().map(|c| c.2).max();
    match (medians.get(medians.len() / 2), max) {
        (Some(median), Some(max)) => format!(
            "{:<40} {:<10} {:>4} gens {:>6} probes  median {:>8}  max {:>8}",
            result.label(),
            result.report.mode.to_string(),
            result.probe_costs.len(),
            probes,
            fmt(*median),
            fmt(max)
        ),
        _ => format!(
            "{:<40} {:<10} (no accepted-connection probe logged)",
            result.label(),
            result.report.mode.to_string()
        ),
    }
}

/// The header of [`row`].
pub fn header() -> String {
    format!(
        "{:<40} {:<10} {:>9} {:>7} {:>19} {:<15} {:>19} {:>6}  failures",
        "server",
        "mode",
        "requests",
        "failed",
        "ready (med / max)",
        "rule",
        "drain (med / max)",
        "killed"
    )
}

/// A duration with about 3 significant figures.
pub fn fmt(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    match ms {
        ms if ms < 1.0 => format!("{:.0}us", ms * 1e3),
        ms if ms < 10.0 => format!("{ms:.2}ms"),
        ms if ms < 100.0 => format!("{ms:.1}ms"),
        ms if ms < 1000.0 => format!("{ms:.0}ms"),
        ms => format!("{:.2}s", ms / 1e3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Each readiness rule as devsup words it, the trap warning, a SIGKILL
    /// at the drain timeout, and the drains' exits.
    #[test]
    fn reads_the_rule_drains_kills_and_the_trap_from_the_log() {
        let log: Vec<String> = [
            "devsup gen=1 spawned pid=100 (cold start)",
            "devsup gen=1 ready in 12ms (listening: pid=100 polls fd 3 with epoll)",
            "devsup gen=2 spawned pid=200 after SIGHUP",
            "devsup gen=2 ready in 3ms",
            "devsup gen=1 draining (SIGTERM) 40us after gen=2 ready",
            "devsup gen=1 exited with status 0 after 5ms",
            "devsup gen=3 spawned pid=300 after SIGHUP",
            "devsup gen=3 counted ready: up for 1000ms without exiting",
            "devsup gen=4 ready in 9ms (accepted a connection: pid=400 holds fd 7 from port 8080)",
            "devsup gen=2 draining (SIGTERM) 35us after gen=3 ready",
            "devsup warning: gen=2 draining for 200ms, but pid=200 is blocked in accept4 on fd 3 \
             (thread 201) inside an event loop: ... or run devsup with --nonblocking. Until then ...",
            "devsup warning: gen=2 still running 3000ms after the drain signal: sending SIGKILL to its group",
            "devsup gen=2 exited by SIGKILL after 3001ms",
            "axum-listenfd gen=3 pid=300: ready in 1ms (listening: a server's own line)",
            "devsup debug: gen=4 accepted-connection probe done: 12 probes, 85us median, 240us max",
        ]
        .map(str::to_owned)
        .to_vec();
        let figures = LogFigures::parse(&log, 4);
        assert_eq!(
            figures.ready,
            [
                (1, ms(12), LISTENING),
                (2, ms(3), READY),
                (3, ms(1000), TIMER),
                (4, ms(9), ACCEPTED)
            ]
        );
        assert_eq!(figures.drains, [(1, ms(5)), (2, ms(3001))]);
        assert_eq!(figures.killed, [2]);
        assert_eq!(figures.trapped.len(), 1);
        assert_eq!(figures.trapped[0].0, 2);
        assert!(figures.trapped[0].1.contains("--nonblocking"));
        assert_eq!(figures.failed_to_start, 0);
        assert_eq!(
            figures.probe_costs,
            [(12, Duration::from_micros(85), Duration::from_micros(240))]
        );
    }
}
