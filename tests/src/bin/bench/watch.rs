//! Watch start-up time and memory on a large tree.
//!
//! Two trees with the same 5,000 source files (`src/m0..m49/f0..f99.rs`):
//! one beside a 200,000-file `target/`
//! (`target/debug/deps/d0..d399/f0..f499`), which devsup ignores, and one
//! without. devsup is started on each a few times, alternately, with the
//! reference server; each start reports the `watching N directories ... in
//! Xms` figure, the wall time from spawn to that line, and devsup's RSS
//! once gen 1 is ready. Equal figures for the two trees show that
//! `target/` costs nothing.
//!
//! The trees are created once per run (in a temporary directory), or kept
//! in `--tree DIR` and reused by later runs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use devsup_tests::devlog;
use devsup_tests::harness::{Devsup, TIMEOUT};

use super::{ProcSample, durations, loadavg, print_load, sizes};
use crate::fmt;

const SOURCE_DIRS: usize = 50;
const FILES_PER_SOURCE_DIR: usize = 100;
const TARGET_DIRS: usize = 400;
const FILES_PER_TARGET_DIR: usize = 500;
/// In the base directory, beside the two trees: both are complete.
const COMPLETE_MARKER: &str = ".devsup-bench-trees-complete";

/// One tree's start-ups.
#[derive(Debug)]
pub struct TreeResult {
    /// What it holds, e.g. `src + target/`.
    pub label: &'static str,
    /// Files in it.
    pub files: usize,
    /// Directories devsup watched, one per start.
    pub dirs: Vec<usize>,
    /// The time devsup logged for setting up its watches.
    pub logged: Vec<Duration>,
    /// Spawn of devsup to the `watching` line arriving here.
    pub wall: Vec<Duration>,
    /// Spawn of devsup to `gen=1 ready`.
    pub to_ready: Vec<Duration>,
    /// devsup's VmRSS once gen 1 is ready, KiB.
    pub rss: Vec<u64>,
    /// devsup's VmHWM (peak RSS) at the same time, KiB.
    pub hwm: Vec<u64>,
    /// devsup's open fds at the same time.
    pub fds: Vec<usize>,
    /// devsup's threads at the same time.
    pub threads: Vec<u64>,
    /// The first `watching` line, verbatim.
    pub line: String,
}

/// The results of the part.
#[derive(Debug)]
pub struct WatchReport {
    /// Where the trees are.
    pub base: PathBuf,
    /// How long creating them took (`None`: reused from `--tree`).
    pub created_in: Option<Duration>,
    /// Per tree.
    pub trees: Vec<TreeResult>,
    /// Load average before the part.
    pub load_before: String,
}

/// Creates (or reuses) the trees and starts devsup `starts` times on each.
pub fn run(tree: Option<&Path>, starts: usize, verbose: bool) -> WatchReport {
    let load_before = loadavg();
    let temp;
    let base = match tree {
        Some(dir) => dir.to_path_buf(),
        None => {
            temp = tempfile::tempdir().expect("temporary directory");
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&base).expect("tree base directory");
    let base = std::fs::canonicalize(&base).expect("canonical tree base");
    let with_target = base.join("with-target");
    let no_target = base.join("no-target");

    let created_in = if base.join(COMPLETE_MARKER).exists() {
        eprintln!(
            "devsup-bench: watch: reusing the trees in {}",
            base.display()
        );
        None
    } else {
        eprintln!(
            "devsup-bench: watch: creating {} files in {}",
            2 * SOURCE_DIRS * FILES_PER_SOURCE_DIR + TARGET_DIRS * FILES_PER_TARGET_DIR,
            base.display()
        );
        let started = Instant::now();
        create_sources(&with_target);
        create_target(&with_target);
        create_sources(&no_target);
        File::create(base.join(COMPLETE_MARKER)).expect("marker file");
        let took = started.elapsed();
        eprintln!("devsup-bench: watch: trees created in {took:.2?}");
        Some(took)
    };

    let sources = SOURCE_DIRS * FILES_PER_SOURCE_DIR;
    let mut trees = [
        TreeResult::new(
            "src + target/",
            sources + TARGET_DIRS * FILES_PER_TARGET_DIR,
        ),
        TreeResult::new("src only", sources),
    ];
    let roots = [&with_target, &no_target];
    // Alternately, so that a disturbance hits both trees alike.
    for round in 1..=starts {
        for (result, root) in trees.iter_mut().zip(roots) {
            eprintln!(
                "devsup-bench: watch: {} start {round}/{starts}",
                result.label
            );
            start_once(root, result, verbose);
        }
    }

    let report = WatchReport {
        base,
        created_in,
        trees: trees.into(),
        load_before,
    };
    if tree.is_none() {
        eprintln!("devsup-bench: watch: removing the trees");
    }
    report
}

impl TreeResult {
    fn new(label: &'static str, files: usize) -> TreeResult {
        TreeResult {
            label,
            files,
            dirs: Vec::new(),
            logged: Vec::new(),
            wall: Vec::new(),
            to_ready: Vec::new(),
            rss: Vec::new(),
            hwm: Vec::new(),
            fds: Vec::new(),
            threads: Vec::new(),
            line: String::new(),
        }
    }
}

fn create_sources(root: &Path) {
    for d in 0..SOURCE_DIRS {
        let dir = root.join(format!("src/m{d}"));
        std::fs::create_dir_all(&dir).expect("mkdir source dir");
        for f in 0..FILES_PER_SOURCE_DIR {
            std::fs::write(
                dir.join(format!("f{f}.rs")),
                format!("pub fn f{f}() {{}}\n"),
            )
            .expect("write source file");
        }
    }
}

fn create_target(root: &Path) {
    for d in 0..TARGET_DIRS {
        let dir = root.join(format!("target/debug/deps/d{d}"));
        std::fs::create_dir_all(&dir).expect("mkdir target dir");
        for f in 0..FILES_PER_TARGET_DIR {
            File::create(dir.join(format!("f{f}"))).expect("create target file");
        }
    }
}

fn start_once(root: &Path, result: &mut TreeResult, verbose: bool) {
    let started = Instant::now();
    let devsup = Devsup::builder(root)
        .echo(verbose)
        .arg("--watch")
        .arg(root)
        .spawn();
    let line = devsup.wait_for_line("watching ", TIMEOUT);
    let wall = started.elapsed();
    devsup.wait_event(1, "ready", TIMEOUT);
    let to_ready = started.elapsed();
    let sample = ProcSample::take(devsup.pid());
    devsup.terminate(TIMEOUT);

    let (dirs, logged) =
        parse_watching(&line).unwrap_or_else(|| panic!("cannot read the watching line: {line:?}"));
    result.dirs.push(dirs);
    result.logged.push(logged);
    result.wall.push(wall);
    result.to_ready.push(to_ready);
    result.rss.push(sample.rss_kib);
    result.hwm.push(sample.hwm_kib);
    result.fds.push(sample.fds);
    result.threads.push(sample.threads);
    if result.line.is_empty() {
        result.line = line;
    }
}

/// `(N, X)` from `watching N directories under PATH (MODE) in X`.
fn parse_watching(line: &str) -> Option<(usize, Duration)> {
    let rest = &line[line.find("watching ")? + "watching ".len()..];
    let dirs = rest.split_whitespace().next()?.parse().ok()?;
    let took = &rest[rest.rfind(") in ")? + ") in ".len()..];
    Some((
        dirs,
        devlog::parse_duration(took.split_whitespace().next()?)?,
    ))
}

/// Prints the section.
pub fn print(r: &WatchReport) {
    println!();
    println!("watch start-up: devsup --watch TREE -- devsup-server, 5,000 source files in 50 dirs");
    println!(
        "(targets: start-up under 300ms, RSS under 10 MB; median / max over {} starts per tree)",
        r.trees.first().map_or(0, |t| t.wall.len())
    );
    match r.created_in {
        Some(took) => println!("trees created in {} ({})", fmt(took), r.base.display()),
        None => println!("trees reused from {}", r.base.display()),
    }
    println!(
        "{:<14} {:>8} {:>6} {:>17} {:>17} {:>17} {:>19} {:>19} {:>4} {:>4}",
        "tree",
        "files",
        "dirs",
        "logged setup",
        "spawn->watching",
        "spawn->gen1 ready",
        "RSS at gen1 ready",
        "peak RSS (HWM)",
        "fds",
        "thr"
    );
    for t in &r.trees {
        let dirs = match (t.dirs.iter().min(), t.dirs.iter().max()) {
            (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
            (Some(lo), Some(hi)) => format!("{lo}-{hi}"),
            _ => "?".into(),
        };
        println!(
            "{:<14} {:>8} {:>6} {:>17} {:>17} {:>17} {:>19} {:>19} {:>4} {:>4}",
            t.label,
            t.files,
            dirs,
            durations(&t.logged),
            durations(&t.wall),
            durations(&t.to_ready),
            sizes(&t.rss),
            sizes(&t.hwm),
            super::median_max(&t.fds).map_or(0, |m| m.0),
            super::median_max(&t.threads).map_or(0, |m| m.0),
        );
    }
    for t in &r.trees {
        println!("{}: {}", t.label, t.line.trim());
    }
    println!(
        "(logged setup: devsup's own figure, whole ms; spawn->watching: from spawning devsup to reading that line)"
    );
    print_load(&r.load_before);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watching_line() {
        let line = "devsup watching 52 directories under /tmp/x (native events) in 12ms";
        assert_eq!(parse_watching(line), Some((52, Duration::from_millis(12))));
        let one = "devsup watching 1 directory under /a (b) c (native events) in 0ms";
        assert_eq!(parse_watching(one), Some((1, Duration::ZERO)));
        assert_eq!(parse_watching("devsup gen=1 ready in 3ms"), None);
    }
}
