//! Files that change without the user editing them (issue 19, defects 3,
//! 4 and 5): a log written all the time, devsup's own output in the
//! watched tree, and files a server or an editor generates.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use devsup_tests::harness::{Devsup, KillOnDrop, Signal, TIMEOUT, binaries, kill, wait_until};

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// Appends a line to `path` every 20 ms until dropped, or for a minute
/// at most.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(path: &Path) -> Writer {
        use std::io::Write;
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, path) = (stop.clone(), path.to_path_buf());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            let mut file = std::fs::File::options()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                let _ = writeln!(file, "a log line");
                // Paces the writes (the issue's writer); never a sync.
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Defect 3: with a log written every 20 ms, an edit reloads anyway (the
/// debounce is bounded), and the log is named once, with its --ignore.
#[test]
fn a_file_written_all_the_time_holds_no_reload_back() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.rs", "fn main() {}");
    let devsup = Devsup::builder(dir.path()).spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.wait_for_line("watching", TIMEOUT);

    let log = dir.path().join("app.log");
    let writer = Writer::start(&log);
    assert!(wait_until(TIMEOUT, || log.exists()), "the writer writes");
    write(dir.path(), "main.rs", "fn main() { println!(); }");
    // The writer goes on for longer than this wait: only a bounded
    // debounce ends the burst the edit is in. Its first path is main.rs,
    // or app.log with main.rs as one more.
    let line = devsup.wait_for_line(
        |l: &str| {
            l.contains("reload requested by change to main.rs")
                || l.contains("reload requested by change to app.log (+1 more)")
        },
        TIMEOUT,
    );
    eprintln!("the edit reloaded: {line}");
    devsup.wait_event(2, "ready", TIMEOUT);
    let warning = devsup.wait_for_line("changed all the time", TIMEOUT);
    assert!(warning.contains("app.log"), "{warning}");
    assert!(warning.contains("--ignore 'app.log'"), "{warning}");
    // Named once: one more reload the log causes, and no second warning.
    devsup.mark();
    devsup.wait_for_new("reload requested by change to app.log", TIMEOUT);
    drop(writer);
    assert_eq!(devsup.count_lines("changed all the time"), 1);
}

/// Defect 4: `devsup … > devsup.log 2>&1` in the watched tree, with
/// `--events events.jsonl` there too: devsup's own lines reload nothing;
/// one edit is one reload.
#[test]
fn devsup_never_reloads_for_what_it_writes_itself() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.rs", "fn main() {}");
    let log_path = dir.path().join("devsup.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(&binaries().devsup)
        .args(["--port", "0", "--events", "events.jsonl", "--"])
        .arg(&binaries().server)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("devsup starts");
    let devsup = KillOnDrop(child);
    let pid = devsup.0.id() as i32;
    let text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let has = |s: &str| wait_until(TIMEOUT, || text().contains(s));
    assert!(has("gen=1 ready") && has("watching"), "{}", text());

    write(dir.path(), "main.rs", "fn main() { println!(); }");
    assert!(has("gen=2 ready") && has("gen=1 exited"), "{}", text());
    kill(pid, Signal::SIGINT);
    let mut devsup = devsup;
    assert!(wait_until(TIMEOUT, || devsup
        .0
        .try_wait()
        .ok()
        .flatten()
        .is_some()));
    let text = text();
    eprintln!("{text}");
    let reloads: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("reload requested"))
        .collect();
    assert_eq!(
        reloads,
        ["devsup reload requested by change to main.rs"],
        "only the edit reloads"
    );
}

/// A plain Python server: it imports `app`, so Python writes
/// `__pycache__/app.cpython-3X.pyc` (through a temporary
/// `….pyc.NNN`) as each generation starts; then it says READY=1 and
/// answers every connection.
const PY_SERVER: &str = r#"
import os, socket, app
os.write(int(os.environ["DEVSUP_READY_FD"]), b"READY=1\n")
s = socket.socket(fileno=3)
while True:
    c, _ = s.accept()
    c.sendall(app.greeting().encode())
    c.close()
"#;

/// Defect 5: Python's bytecode, written by each new generation, and
/// emacs' `#app.py#` auto-save, made and removed, reload nothing: two
/// edits are two reloads.
#[test]
fn generated_files_do_not_reload() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "server.py", PY_SERVER);
    write(dir.path(), "app.py", "def greeting():\n    return 'one'\n");
    let devsup = Devsup::builder(dir.path())
        .server("python3")
        .server_args(["server.py"])
        // Bytecode caching on, Python's default, whatever the caller set.
        .env("PYTHONDONTWRITEBYTECODE", "")
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.wait_for_line("watching", TIMEOUT);
    assert!(
        dir.path().join("__pycache__").is_dir(),
        "gen 1 wrote its bytecode"
    );

    // Emacs auto-saves, then saves and removes the auto-save file. Each
    // edit changes the size: Python's bytecode is checked by mtime (in
    // seconds) and size.
    write(
        dir.path(),
        "#app.py#",
        "def greeting():\n    return 'two'\n",
    );
    write(dir.path(), "app.py", "def greeting():\n    return 'two'\n");
    std::fs::remove_file(dir.path().join("#app.py#")).unwrap();
    devsup.wait_event(2, "ready", TIMEOUT);
    devsup.wait_event(1, "exited", TIMEOUT);
    write(
        dir.path(),
        "app.py",
        "def greeting():\n    return 'three'\n",
    );
    devsup.wait_event(3, "ready", TIMEOUT);
    devsup.wait_event(2, "exited", TIMEOUT);
    let reloads: Vec<String> = (devsup.lines().into_iter())
        .filter(|l| l.contains("reload requested"))
        .collect();
    assert_eq!(
        reloads,
        [
            "devsup reload requested by change to app.py",
            "devsup reload requested by change to app.py"
        ],
        "only the edits reload"
    );
}
