//! `--events`: a real run produces every kind of event documented in
//! docs/events.md, each with exactly the documented fields; socket clients
//! read the status first and then the stream; `devsup status` answers.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use devsup_tests::harness::{Devsup, Signal, TIMEOUT, binaries, wait_until};
use serde_json::Value;

/// docs/events.md: every ```json block holds one example; kind → example.
fn documented() -> BTreeMap<String, Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/events.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut examples = BTreeMap::new();
    let mut in_json = false;
    for line in text.lines() {
        match line.trim() {
            "```json" => in_json = true,
            "```" => in_json = false,
            example if in_json && !example.is_empty() => {
                let value: Value = serde_json::from_str(example)
                    .unwrap_or_else(|e| panic!("docs/events.md: {e}: {example}"));
                let kind = value["event"].as_str().unwrap().to_owned();
                assert!(
                    examples.insert(kind.clone(), value).is_none(),
                    "two examples of {kind}"
                );
            }
            _ => {}
        }
    }
    assert!(examples.len() >= 15, "{:?}", examples.keys());
    examples
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `event` has exactly the fields of its documented example, of the same
/// types where both are set (nested objects likewise).
fn check_fields(event: &Value, example: &Value, what: &str) {
    let (Some(got), Some(want)) = (event.as_object(), example.as_object()) else {
        panic!("{what}: not an object: {event}");
    };
    let got_keys: BTreeSet<&String> = got.keys().collect();
    let want_keys: BTreeSet<&String> = want.keys().collect();
    assert_eq!(
        got_keys, want_keys,
        "{what}: fields differ from docs:\n{event}"
    );
    for (key, value) in got {
        let doc = &want[key];
        if value.is_null() || doc.is_null() {
            continue;
        }
        assert_eq!(
            kind_of(value),
            kind_of(doc),
            "{what}: {key} is {value}, documented as {doc}"
        );
        if value.is_object() {
            check_nested(value, doc, &format!("{what}.{key}"));
        }
        if key.ends_with("_us") {
            assert!(
                value.is_u64(),
                "{what}: {key} in whole microseconds: {value}"
            );
        }
    }
    assert_eq!(event["v"], 1, "{what}");
    let ts = event["ts"].as_str().unwrap();
    assert!(
        ts.len() == "2026-11-30T14:22:43.815180Z".len() && ts.ends_with('Z'),
        "{what}: ts {ts}"
    );
}

/// A nested object: the same fields as documented.
fn check_nested(value: &Value, doc: &Value, what: &str) {
    let got: BTreeSet<&String> = value.as_object().unwrap().keys().collect();
    let want: BTreeSet<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(got, want, "{what}: fields differ from docs: {value}");
}

/// The events devsup wrote to stdout so far.
fn events(devsup: &Devsup) -> Vec<Value> {
    devsup
        .stdout_lines()
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stdout holds only events, but: {e}: {line:?}"))
        })
        .collect()
}

/// Waits for an event after the first `from` that matches `pred`; returns
/// it and the count of events up to and including it.
fn wait_for(devsup: &Devsup, from: usize, pred: impl Fn(&Value) -> bool) -> (Value, usize) {
    let mut found = None;
    let ok = wait_until(TIMEOUT, || {
        let all = events(devsup);
        found = all
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, e)| pred(e))
            .map(|(i, e)| (e.clone(), i + 1));
        found.is_some()
    });
    assert!(
        ok,
        "timed out waiting for an event after #{from}; events:\n{}",
        devsup.stdout_lines().join("\n")
    );
    found.unwrap()
}

fn is(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["event"] == kind
}

fn devsup_status(dir: &Path, runtime: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(&binaries().devsup)
        .arg("status")
        .args(args)
        .current_dir(dir)
        .env("XDG_RUNTIME_DIR", runtime)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BUILD: &str = r#"
echo "building"
if [ -f hold ]; then echo holding; while [ ! -f release ]; do sleep 0.02; done; fi
if [ -f fail ]; then echo "error[E0308]: mismatched types" >&2; exit 3; fi
if [ -f link ]; then ln -sf "$SERVER" server; fi
"#;

fn touch(dir: &Path, name: &str) {
    std::fs::write(dir.join(name), "").unwrap();
}

fn remove(dir: &Path, name: &str) {
    std::fs::remove_file(dir.join(name)).unwrap();
}

/// One run that goes through every step devsup reports: a build, a
/// server that is missing at first, handoffs whose old generation ignores
/// SIGTERM (killed at the drain timeout), a reload queued behind a
/// starting generation, a build cancelled by a second trigger, a failed
/// build, a `--signal-on` change and a shutdown.
#[test]
fn a_real_run_reports_every_documented_kind_with_the_documented_fields() {
    let docs = documented();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("build.sh"), BUILD).unwrap();
    std::fs::create_dir(d.join("web")).unwrap();
    let devsup = Devsup::builder(d)
        .args(["--events", "-", "--build", "sh build.sh", "--watch", "web"])
        .args(["--signal-on", "*.css=WINCH", "--drain-timeout", "300ms"])
        // The server polls its socket before its start-up delay: only its
        // READY=1 may count, so that a reload can be queued behind it.
        .args(["--ready", "notify"])
        .env("SERVER", &binaries().server)
        .env("XDG_RUNTIME_DIR", runtime.path())
        .server("./server")
        .server_args(["--ignore-drain", "all", "--startup-delay", "500"])
        .spawn();

    // No server yet: the build succeeds, the spawn fails, devsup retries.
    let (failed, n) = wait_for(&devsup, 0, is("spawn_failed"));
    assert!(
        failed["error"].as_str().unwrap().contains("./server"),
        "{failed}"
    );
    touch(d, "link");
    let (ready, n) = wait_for(&devsup, n, is("ready"));
    let first = ready["gen"].as_u64().unwrap();

    // A reload; a second one while its generation starts is queued.
    devsup.signal(Signal::SIGHUP);
    let (spawned, n) = wait_for(&devsup, n, is("spawned"));
    let second = spawned["gen"].as_u64().unwrap();
    devsup.signal(Signal::SIGHUP);
    let (coalesced, n) = wait_for(&devsup, n, is("coalesced"));
    assert_eq!(coalesced["into"], "queue", "{coalesced}");
    assert_eq!(coalesced["gen"], second, "{coalesced}");
    let (killed, _) = wait_for(&devsup, n, is("killed"));
    assert_eq!(killed["gen"], first, "{killed}");
    let (queued, n) = wait_for(&devsup, n, |e| {
        e["event"] == "trigger" && e["queued"] == true
    });
    assert_eq!(queued["cause"], "sighup");
    let (ready, n) = wait_for(&devsup, n, is("ready"));
    assert!(ready["gen"].as_u64().unwrap() > second, "{ready}");

    // A trigger during a build cancels it and starts it again.
    touch(d, "hold");
    devsup.signal(Signal::SIGHUP);
    let (_, n) = wait_for(&devsup, n, is("build_started"));
    devsup.signal(Signal::SIGHUP);
    let (coalesced, n) = wait_for(&devsup, n, is("coalesced"));
    assert_eq!(coalesced["into"], "build", "{coalesced}");
    let (cancelled, n) = wait_for(&devsup, n, is("build_finished"));
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    remove(d, "hold");
    touch(d, "release");
    let (ready, n) = wait_for(&devsup, n, is("ready"));
    let active = ready["gen"].as_u64().unwrap();

    // A failed build keeps the active generation and reports its output.
    touch(d, "fail");
    devsup.signal(Signal::SIGHUP);
    let (failed, n) = wait_for(&devsup, n, is("build_finished"));
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["code"], 3, "{failed}");
    // Its stdout and its stderr, each line as it came (the two streams are
    // read apart, so their relative order is not fixed).
    let tail: BTreeSet<&str> = failed["output_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(
        tail,
        ["building", "error[E0308]: mismatched types"].into(),
        "{failed}"
    );
    // ... and the output still reached the terminal (stderr: with
    // `--events -`, devsup's stdout is its stderr). The event on stdout
    // may come before the harness has read those lines from stderr.
    devsup.wait_for_line(|l: &str| l == "building", TIMEOUT);
    devsup.wait_for_line(|l: &str| l == "error[E0308]: mismatched types", TIMEOUT);

    // A change that --signal-on routes to a signal.
    std::fs::write(d.join("web/style.css"), "body {}").unwrap();
    let (signalled, n) = wait_for(&devsup, n, is("signalled"));
    assert_eq!(signalled["gen"], active, "{signalled}");
    assert_eq!(signalled["signal"], "SIGWINCH", "{signalled}");

    // devsup status, for people and as JSON.
    let (ok, out, err) = devsup_status(d, runtime.path(), &["--json"]);
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(status["event"], "status", "{status}");
    assert_eq!(status["active"], active, "{status}");
    assert_eq!(status["pid"], devsup.pid(), "{status}");
    assert_eq!(status["building"], false, "{status}");
    assert_eq!(status["last_build"]["status"], "failed", "{status}");
    let (ok, out, err) = devsup_status(d, runtime.path(), &[]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("active: gen={active} pid=")), "{out}");
    assert!(out.contains("last build: failed (exit status 3)"), "{out}");
    assert!(out.contains("error[E0308]: mismatched types"), "{out}");

    devsup.signal(Signal::SIGTERM);
    let (shutdown, _) = wait_for(&devsup, n, is("shutdown"));
    assert_eq!(shutdown["cause"], "SIGTERM");
    let code = devsup.wait_exit(TIMEOUT).code();
    assert_eq!(code, Some(1), "a generation had to be killed");
    let all = events(&devsup);
    let last = all.last().unwrap();
    assert_eq!(
        (&last["event"], &last["code"]),
        (&Value::from("stopped"), &Value::from(1))
    );

    // Every kind documented was seen, each with exactly its fields.
    let mut seen = BTreeSet::new();
    for (i, event) in all.iter().chain([&status]).enumerate() {
        let kind = event["event"].as_str().unwrap();
        let example = docs
            .get(kind)
            .unwrap_or_else(|| panic!("event #{i} of an undocumented kind: {event}"));
        check_fields(event, example, &format!("event #{i} ({kind})"));
        seen.insert(kind.to_owned());
    }
    let missing: Vec<&String> = docs.keys().filter(|k| !seen.contains(*k)).collect();
    assert!(missing.is_empty(), "never seen: {missing:?}");
    let causes: BTreeSet<&str> = all
        .iter()
        .filter(|e| e["event"] == "trigger")
        .map(|e| e["cause"].as_str().unwrap())
        .collect();
    assert_eq!(
        causes,
        ["restart", "sighup", "startup"].into(),
        "{causes:?}"
    );
    // The status socket went with devsup.
    let (ok, _, err) = devsup_status(d, runtime.path(), &[]);
    assert!(!ok && err.contains("no devsup answers"), "{err}");
}

fn read_event(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> Value {
    let line = lines.next().expect("the stream ended").unwrap();
    serde_json::from_str(&line).unwrap()
}

/// `events = "unix::..."` in devsup.toml: clients read the status, then
/// the stream from then on; `devsup status` finds the socket through the
/// same file.
#[test]
fn socket_clients_read_the_status_then_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("devsup.toml"),
        "events = \"unix::events.sock\"\nno-watch = true\n",
    )
    .unwrap();
    let socket: PathBuf = dir.path().join("events.sock");
    let devsup = Devsup::builder(dir.path())
        .env("XDG_RUNTIME_DIR", runtime.path())
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let stream = UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut lines = BufReader::new(stream).lines();
    let mut status = read_event(&mut lines);
    assert_eq!(status["event"], "status", "{status}");
    // The log line "gen=1 ready" is written before the subscribers get
    // the step, and gen 1 becomes active (a step without a log line) just
    // after: the client may have connected in between. Then the stream
    // brings those steps, and the status then is the status plus them.
    while status["active"] != 1 {
        let event = read_event(&mut lines);
        assert!(
            event["gen"] == 1 && ["ready", "active"].contains(&event["event"].as_str().unwrap()),
            "before gen 1 was active: {event}"
        );
        if event["event"] == "active" {
            status["active"] = event["gen"].clone();
        }
    }
    assert_eq!(status["live"], serde_json::json!([1]), "{status}");

    devsup.signal(Signal::SIGHUP);
    let mut kinds = Vec::new();
    loop {
        let event = read_event(&mut lines);
        // gen 1 is active from its spawn, so the status may already say
        // so while gen 1's `ready` step, published just after its log
        // line, is still on its way: it may come first, and nothing else.
        if kinds.is_empty()
            && event["gen"] == 1
            && ["ready", "active"].contains(&event["event"].as_str().unwrap())
        {
            continue;
        }
        kinds.push(format!(
            "{} {}",
            event["event"].as_str().unwrap(),
            event["gen"]
        ));
        if event["event"] == "exited" {
            break;
        }
    }
    assert_eq!(
        kinds,
        [
            "trigger null",
            "spawned 2",
            "ready 2",
            "active 2",
            "draining 1",
            "exited 1"
        ],
    );
    // `devsup status` reads devsup.toml's socket.
    let (ok, out, err) = devsup_status(dir.path(), runtime.path(), &["--json"]);
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(status["active"], 2, "{status}");

    devsup.signal(Signal::SIGTERM);
    let mut last = Value::Null;
    while let Some(Ok(line)) = lines.next() {
        last = serde_json::from_str(&line).unwrap();
    }
    assert_eq!(last["event"], "stopped", "the stream ends with devsup");
    assert_eq!(devsup.wait_exit(TIMEOUT).code(), Some(0));
    assert!(!socket.exists(), "the socket is removed");
}

/// A build step writes into devsup's tee, a pipe, so cargo would drop its
/// colours: when devsup's own stderr is a terminal, the build gets
/// `CARGO_TERM_COLOR=always` (and not when it is a pipe, or the user said
/// `NO_COLOR`).
#[test]
fn a_build_keeps_cargos_colours_when_devsup_writes_to_a_terminal() {
    let build_env = |terminal: bool, no_color: bool| -> String {
        let dir = tempfile::tempdir().unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut command = Command::new(&binaries().devsup);
        command
            .current_dir(dir.path())
            .args([
                "--no-watch",
                "--port",
                "0",
                "--build",
                "env > build-env.txt",
            ])
            .arg("--")
            .arg(&binaries().server)
            .env_remove("CARGO_TERM_COLOR")
            .env_remove("NO_COLOR")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        if no_color {
            command.env("NO_COLOR", "1");
        }
        if terminal {
            command.stderr(std::fs::File::from(pty.slave));
        } else {
            command.stderr(std::process::Stdio::null());
        }
        let mut child = command.spawn().unwrap();
        // Read the terminal, so that devsup never blocks on a full one.
        let mut master = std::fs::File::from(pty.master);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut master, &mut std::io::sink());
        });
        let path = dir.path().join("build-env.txt");
        let written = wait_until(TIMEOUT, || {
            std::fs::read_to_string(&path).is_ok_and(|t| t.contains("PATH="))
        });
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let exited = wait_until(TIMEOUT, || child.try_wait().unwrap().is_some());
        if !exited {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
        assert!(written, "the build step did not run");
        assert!(exited, "devsup did not stop on SIGTERM");
        std::fs::read_to_string(&path).unwrap()
    };
    let colour = |env: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix("CARGO_TERM_COLOR="))
            .map(str::to_owned)
    };
    assert_eq!(colour(&build_env(true, false)), Some("always".into()));
    assert_eq!(
        colour(&build_env(false, false)),
        None,
        "stderr not a terminal"
    );
    assert_eq!(colour(&build_env(true, true)), None, "NO_COLOR");
}
