//! A real browser for the live-reload tests and benchmark: Debian's
//! Chromium, driven by playwright-core from `tests/fixtures/browser-driver.js`
//! (one JSON command per line in, one JSON event per line out), both
//! installed on first use by [`crate::tools`].
//!
//! Also the page server's set-up: a directory with `src/page.txt`, served
//! by `devsup-page` (built from this package) under
//! `devsup --livereload=127.0.0.1:0`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::harness::{Devsup, TIMEOUT};
use crate::tools;

/// The playwright-core release the driver uses; it drives Debian's
/// Chromium over its DevTools protocol.
pub const PLAYWRIGHT: &str = "playwright-core@1.59.1";

#[derive(Debug, Default)]
struct Events {
    list: Vec<Value>,
    closed: bool,
}

/// A headless Chromium with one page, driven line by line.
#[derive(Debug)]
pub struct Browser {
    node: Child,
    stdin: ChildStdin,
    events: Arc<(Mutex<Events>, Condvar)>,
    /// Index of the first event [`Browser::wait_new`] looks at.
    cursor: usize,
}

impl Browser {
    /// Installs Chromium and playwright-core if needed and launches the
    /// browser; `None` (after one loud line) if they cannot be installed
    /// and `DEVSUP_REQUIRE_TOOLS` is not set.
    pub fn launch(check: &str) -> Option<Browser> {
        let chromium = tools::require(check, tools::apt("chromium", "chromium"))?;
        let node_dir = tools::require(check, tools::npm(PLAYWRIGHT))?;
        let node = tools::require(
            check,
            tools::which("node").ok_or_else(|| tools::Unavailable("node is not on PATH".into())),
        )?;
        let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/browser-driver.js");
        let mut child = Command::new(node)
            .arg(&driver)
            .current_dir(&node_dir)
            .env("CHROMIUM", &chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting node {}: {e}", driver.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let events: Arc<(Mutex<Events>, Condvar)> = Arc::default();
        let reader = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"event": "output", "line": line}));
                eprintln!("[browser] {line}");
                let (lock, changed) = &*reader;
                lock.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .list
                    .push(value);
                changed.notify_all();
            }
            let (lock, changed) = &*reader;
            lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
            changed.notify_all();
        });
        let mut browser = Browser {
            node: child,
            stdin,
            events,
            cursor: 0,
        };
        browser.wait_new("launched", TIMEOUT);
        Some(browser)
    }

    /// Sends one command.
    pub fn send(&mut self, command: Value) {
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .expect("writing to the browser driver");
    }

    /// Sends `command` and waits for its answer (the event of the same name).
    pub fn call(&mut self, command: Value) -> Value {
        let name = command["cmd"].as_str().expect("a cmd").to_owned();
        self.send(command);
        self.wait_new(&name, TIMEOUT)
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Value> {
        self.events.0.lock().unwrap().list.clone()
    }

    /// Every `load` event so far.
    pub fn loads(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "load")
            .collect()
    }

    /// Moves the cursor of [`Browser::wait_new`] to the end: call it before
    /// triggering something.
    pub fn mark(&mut self) {
        self.cursor = self.events.0.lock().unwrap().list.len();
    }

    /// Waits for the next event named `name` after the cursor (or a
    /// driver `error`, which panics) and moves the cursor past it.
    pub fn wait_new(&mut self, name: &str, timeout: Duration) -> Value {
        self.wait_matching(|e| e["event"] == name, name, timeout)
    }

    /// Waits for a `load` event after the cursor whose content is `content`.
    pub fn wait_load(&mut self, content: &str, timeout: Duration) -> Value {
        self.wait_matching(
            |e| e["event"] == "load" && e["content"] == content,
            &format!("a load showing {content:?}"),
            timeout,
        )
    }

    fn wait_matching(
        &mut self,
        matches: impl Fn(&Value) -> bool,
        what: &str,
        timeout: Duration,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let (lock, changed) = &*self.events;
        let mut events = lock.lock().unwrap();
        loop {
            while self.cursor < events.list.len() {
                let event = events.list[self.cursor].clone();
                self.cursor += 1;
                if event["event"] == "error" {
                    panic!("the browser driver failed: {event}");
                }
                if matches(&event) {
                    return event;
                }
            }
            let now = Instant::now();
            if events.closed || now >= deadline {
                panic!(
                    "{} waiting for {what}; browser events: {:?}",
                    if events.closed {
                        "the browser driver exited"
                    } else {
                        "timed out"
                    },
                    events.list
                );
            }
            events = changed.wait_timeout(events, deadline - now).unwrap().0;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        let pid = Pid::from_raw(self.node.id() as i32);
        // playwright closes Chromium when node is asked to stop; Chromium
        // also exits when its DevTools pipe to a killed node closes.
        for (signal, wait) in [
            (None, Duration::from_secs(10)),
            (Some(Signal::SIGTERM), Duration::from_secs(5)),
            (Some(Signal::SIGKILL), Duration::from_secs(5)),
        ] {
            if let Some(signal) = signal {
                let _ = kill(pid, signal);
            }
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.node.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A page server under `devsup --livereload=127.0.0.1:0`, in a temporary
/// directory: `devsup-page` serves `src/page.txt` (or, with a build step,
/// `out/page.txt`, which the step makes from it), and devsup watches `src/`.
#[derive(Debug)]
pub struct PageSite {
    /// The temporary directory (canonical path).
    pub root: PathBuf,
    _dir: tempfile::TempDir,
    /// devsup.
    pub devsup: Devsup,
    /// The page's URL.
    pub url: String,
    /// The live-reload server's URL, from devsup's log.
    pub livereload: String,
    config: SiteConfig,
}

#[derive(Debug)]
struct SiteConfig {
    build: bool,
    verbose: bool,
    env: Vec<(String, String)>,
}

impl SiteConfig {
    /// Starts devsup on `port` with `--livereload=LIVERELOAD`; returns it,
    /// the page's URL and the live-reload URL.
    fn spawn(&self, root: &Path, port: &str, livereload: &str) -> (Devsup, String, String) {
        let mut builder = Devsup::builder(root)
            .echo(self.verbose)
            .port(Some(port))
            .arg(format!("--livereload={livereload}"))
            .arg("--watch")
            .arg(root.join("src"))
            .server(page_server());
        if self.build {
            builder = builder
                .args(["--build", "sh build.sh"])
                .server_args(["out/page.txt"]);
        } else {
            builder = builder.server_args(["src/page.txt"]);
        }
        for (key, value) in &self.env {
            builder = builder.env(key, value);
        }
        let devsup = builder.spawn();
        let addr = devsup.addr();
        let line = devsup.wait_for_line("live reload at http://", TIMEOUT);
        let livereload = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("a URL in the live reload line")
            .to_owned();
        devsup.wait_for_line("watching ", TIMEOUT);
        (devsup, format!("http://{addr}/"), livereload)
    }
}

/// The build step of [`PageSite::with_build`]: a stand-in compiler that
/// fails, with coloured output, when the source says `BROKEN`.
pub const BUILD_SCRIPT: &str = r#"#!/bin/sh
if grep -q BROKEN src/page.txt; then
  printf '\033[1m\033[91merror[E0308]\033[0m\033[1m: mismatched types: expected `Vec<T>`, found `&str`\033[0m\n' >&2
  printf '  \033[1m\033[94m-->\033[0m src/page.txt:1:1\n' >&2
  printf '\033[1m\033[91merror\033[0m: could not compile `page` due to 1 previous error\n' >&2
  exit 101
fi
mkdir -p out
cp src/page.txt out/page.txt
"#;

impl PageSite {
    /// Without a build step: the page server reads `src/page.txt`.
    pub fn new(content: &str, verbose: bool, extra: &[(&str, &str)]) -> PageSite {
        PageSite::start(content, false, verbose, extra)
    }

    /// With the build step [`BUILD_SCRIPT`] copying `src/page.txt` to
    /// `out/page.txt`, which the page server reads.
    pub fn with_build(content: &str, verbose: bool, extra: &[(&str, &str)]) -> PageSite {
        PageSite::start(content, true, verbose, extra)
    }

    fn start(content: &str, build: bool, verbose: bool, env: &[(&str, &str)]) -> PageSite {
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = std::fs::canonicalize(dir.path()).expect("canonical temporary directory");
        std::fs::create_dir_all(root.join("src")).expect("mkdir src");
        std::fs::write(root.join("src/page.txt"), content).expect("write src/page.txt");
        if build {
            std::fs::write(root.join("build.sh"), BUILD_SCRIPT).expect("write build.sh");
        }
        let config = SiteConfig {
            build,
            verbose,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let (devsup, url, livereload) = config.spawn(&root, "0", "127.0.0.1:0");
        PageSite {
            root,
            _dir: dir,
            devsup,
            url,
            livereload,
            config,
        }
    }

    /// Stops devsup (SIGTERM) and starts a new one on the same two ports.
    pub fn restart(&mut self) {
        self.devsup.terminate(TIMEOUT);
        let port = self.url.trim_end_matches('/').rsplit(':').next().unwrap();
        let livereload = self.livereload.trim_start_matches("http://");
        let (devsup, _, _) = self.config.spawn(&self.root, port, livereload);
        self.devsup = devsup;
    }

    /// Writes `content` to `src/page.txt` (the edit).
    pub fn edit(&self, content: &str) {
        std::fs::write(self.root.join("src/page.txt"), content).expect("write src/page.txt");
    }
}

/// The `devsup-page` binary, built from this package next to the running
/// test or benchmark.
pub fn page_server() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| crate::harness::build_packages(&["devsup-tests"]).join("devsup-page"))
        .clone()
}
