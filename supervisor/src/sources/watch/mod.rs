//! File watching: notify and debounce, producing one event per burst of
//! changes. Which changes count is [`rules`]; where a burst goes (reload or
//! signal) is [`routes`].
//!
//! Watches are placed one directory at a time, and never inside an ignored
//! directory: the tree is walked with the `ignore` crate (`.gitignore`,
//! `.ignore`, git's global and per-repo excludes, and devsup's built-in
//! ignores), so a 200,000-file `target/` costs no watch and no start-up
//! time. A recursive inotify watch would walk into it, and hit the
//! per-user watch limit on large trees. A `-w FILE` root is watched
//! through its directory. On macOS, FSEvents covers a whole tree with one
//! watch, and ignored changes are dropped by the same rules: see
//! [`native`].
//!
//! A root whose directory is removed (`rm -rf src`, a branch switch) gets a
//! warning and is looked for every 500ms; once back, or if another
//! directory took its path (compared by inode at the end of each burst),
//! it is watched again and its files count as changed.
//!
//! Debounce is trailing-edge over the whole burst: the burst ends once no
//! relevant change has been seen for `--debounce`, or at the latest one
//! second after that from its first change ([`burst`]). notify's debouncer
//! crates debounce each path on its own and would split a 500-file
//! `git checkout` into several batches, so several reloads; that is why
//! this is not one of them.
//!
//! Longer than most modules: the notify thread, the directory walk, the debounce, the
//! watch-root recovery and the polling fallback share the watcher's state;
//! which changes count (`rules`) and where they go (`routes`) are out.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::signal::Signal;
use anyhow::Context;
use ignore::gitignore::Gitignore;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{debug, info, warn};

use crate::event::{Event, Input, Trigger};
use crate::log::ms;
use crate::step::Step;

mod burst;
mod native;
mod own;
mod routes;
mod rules;

use routes::{Outcome, Routes};
use rules::{Kind, Rules, WatchRoot, innermost};

/// Poll interval when native events are not available.
const FALLBACK_POLL: Duration = Duration::from_millis(500);

/// How often a watch root that was removed is looked for.
const ROOT_POLL: Duration = Duration::from_millis(500);

/// What to watch and how to route changes.
#[derive(Debug, Clone)]
pub(crate) struct WatchConfig {
    /// Directories (or files) to watch.
    pub(crate) roots: Vec<PathBuf>,
    /// Poll at this interval instead of using native events.
    pub(crate) poll: Option<Duration>,
    /// Quiet time that ends a burst of changes.
    pub(crate) debounce: Duration,
    /// Extra ignores, in gitignore syntax.
    pub(crate) ignore: Vec<String>,
    /// Only files with these extensions count (empty: all).
    pub(crate) exts: Vec<String>,
    /// Changes matching only these globs send a signal instead of reloading.
    pub(crate) signal_on: Vec<(String, Signal)>,
    /// Changes matching these globs never reload.
    pub(crate) no_reload_on: Vec<String>,
}

enum AnyWatcher {
    Native(native::Native),
    Poll(PollWatcher),
}

impl AnyWatcher {
    fn watch(&mut self, dir: &Path) -> notify::Result<()> {
        match self {
            AnyWatcher::Native(w) => w.watch(dir),
            AnyWatcher::Poll(w) => w.watch(dir, RecursiveMode::NonRecursive),
        }
    }

    fn unwatch(&mut self, dir: &Path) -> notify::Result<()> {
        match self {
            AnyWatcher::Native(w) => w.unwatch(dir),
            AnyWatcher::Poll(w) => w.unwatch(dir),
        }
    }
}

struct Watch {
    cfg: WatchConfig,
    /// `cfg.roots`, absolute, each a directory or a file.
    roots: Vec<WatchRoot>,
    /// For each root, the identity of the directory that is watched for it
    /// (`WatchRoot::dir`), or `None` while it is missing: a root removed,
    /// or replaced by a new directory at the same path (whose inode no
    /// watch follows), is found by comparing.
    root_ids: Vec<Option<DirId>>,
    rules: Rules,
    routes: Routes,
    watcher: AnyWatcher,
    watched: HashSet<PathBuf>,
    notify_tx: Sender<notify::Result<notify::Event>>,
    /// An ignore file changed: read the rules again at the end of the burst.
    rules_changed: bool,
    /// The files devsup writes itself: never a reload.
    own: own::Own,
}

/// Sets up the watches (reporting errors and the time it took) and starts
/// the thread that turns changes into events. `own` are files devsup
/// writes itself (the `--events` file, its unix sockets): never a reload,
/// and neither are its stdout and stderr when they are files.
pub(crate) fn spawn(
    mut cfg: WatchConfig,
    own: &[PathBuf],
    tx: Sender<Input>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut roots = Vec::new();
    for r in &cfg.roots {
        let abs = dunce::canonicalize(r)
            .with_context(|| format!("cannot watch {}: no such file or directory", r.display()))?;
        roots.push(WatchRoot::new(abs));
    }
    cfg.roots = roots.iter().map(|r| r.path.clone()).collect();
    let rules = Rules::new(&roots, &cfg.ignore, &cfg.exts)?;
    let routes = Routes::new(&cfg)?;
    let (notify_tx, notify_rx) = mpsc::channel();
    let watcher = match cfg.poll {
        Some(interval) => poll_watcher(notify_tx.clone(), interval)?,
        None => match RecommendedWatcher::new(notify_tx.clone(), notify::Config::default()) {
            Ok(w) => AnyWatcher::Native(native::Native::new(w)),
            Err(e) => {
                warn!("native file events are not available ({e}); polling every 500ms instead");
                poll_watcher(notify_tx.clone(), FALLBACK_POLL)?
            }
        },
    };
    let root_ids = roots.iter().map(|r| DirId::of(r.dir())).collect();
    let mut w = Watch {
        cfg,
        roots,
        root_ids,
        rules,
        routes,
        watcher,
        watched: HashSet::new(),
        notify_tx,
        rules_changed: false,
        own: own::Own::new(own),
    };
    w.add_roots();
    let mode = match (&w.watcher, w.cfg.poll) {
        (AnyWatcher::Native(_), _) => "native events".to_owned(),
        (AnyWatcher::Poll(_), Some(interval)) => {
            format!("polling every {}", ms(interval))
        }
        (AnyWatcher::Poll(_), None) => {
            format!("polling every {}", ms(FALLBACK_POLL))
        }
    };
    info!(
        "watching {} director{} under {} ({mode}) in {}",
        w.watched.len(),
        if w.watched.len() == 1 { "y" } else { "ies" },
        w.cfg
            .roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        ms(started.elapsed())
    );
    std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || w.run(notify_rx, &tx))
        .context("cannot start the watch thread")?;
    Ok(())
}

/// notify's poll watcher compares modification times in whole seconds, so
/// a second edit within the same second as the first would go unseen;
/// comparing contents too catches it. Only unignored directories are
/// polled, which keeps the hashing cheap.
fn poll_watcher(
    tx: Sender<notify::Result<notify::Event>>,
    interval: Duration,
) -> anyhow::Result<AnyWatcher> {
    Ok(AnyWatcher::Poll(PollWatcher::new(
        tx,
        notify::Config::default()
            .with_poll_interval(interval)
            .with_compare_contents(true),
    )?))
}

/// Which directory a path is: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirId(u64, u64);

impl DirId {
    #[cfg(unix)]
    fn of(dir: &Path) -> Option<DirId> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir)
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| DirId(m.dev(), m.ino()))
    }

    /// On Windows std gives no file id on stable Rust: the canonical path
    /// (which resolves links and junctions), hashed, stands for it.
    #[cfg(not(unix))]
    fn of(dir: &Path) -> Option<DirId> {
        use std::hash::{Hash, Hasher};
        let canonical = std::fs::canonicalize(dir).ok().filter(|p| p.is_dir())?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        canonical.hash(&mut hasher);
        Some(DirId(hasher.finish(), 0))
    }
}

/// `now + d`, which cannot overflow for a `d` bounded when parsed
/// (`duration::MAX`); if it did, the burst ends at once rather than
/// the watch thread dying.
fn after(now: Instant, d: Duration) -> Instant {
    debug_assert!(d <= crate::duration::MAX);
    now.checked_add(d).unwrap_or(now)
}

/// Adds `path` to the burst, once.
fn record(
    rules: &Rules,
    path: PathBuf,
    changed: &mut Vec<(PathBuf, PathBuf)>,
    seen: &mut HashSet<PathBuf>,
) {
    if seen.insert(path.clone()) {
        let rel = rules.relative(&path);
        changed.push((path, rel));
    }
}

impl Watch {
    /// Watches every root: a directory and every directory below it that
    /// is not ignored, or a file's directory.
    fn add_roots(&mut self) {
        for root in self.roots.clone() {
            if root.file {
                self.watch_dir(root.dir());
            } else {
                self.walk(&root.path, false);
            }
        }
    }

    /// Places one watch, unless there is one. False if the watch limit was
    /// reached, and devsup fell back to polling.
    fn watch_dir(&mut self, dir: &Path) -> bool {
        if self.watched.contains(dir) {
            return true;
        }
        if let Err(e) = self.watcher.watch(dir) {
            if matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
                && matches!(self.watcher, AnyWatcher::Native(_))
            {
                self.fall_back_to_polling();
                return false;
            }
            debug!("cannot watch {}: {e}", dir.display());
            return true;
        }
        self.watched.insert(dir.to_path_buf());
        true
    }

    /// Watches `dir` and every directory below it that is not ignored;
    /// with `files`, returns the files in them that are not ignored (a
    /// directory that just appeared may hold files made before its watch).
    fn walk(&mut self, dir: &Path, files: bool) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let builtin_roots: Vec<(PathBuf, Gitignore)> = self
            .rules
            .roots
            .iter()
            .map(|r| (r.path.clone(), r.builtin.clone()))
            .collect();
        let walker = ignore::WalkBuilder::new(dir)
            .hidden(false)
            .parents(true)
            .require_git(false)
            .follow_links(false)
            .filter_entry(move |e| {
                let is_dir = e.file_type().is_some_and(|t| t.is_dir());
                if !is_dir {
                    return files;
                }
                let Some((root, gi)) =
                    innermost(&builtin_roots, |(r, _)| r, e.path()).map(|i| &builtin_roots[i])
                else {
                    return true;
                };
                match e.path().strip_prefix(root) {
                    Ok(rel) if !rel.as_os_str().is_empty() => {
                        !gi.matched_path_or_any_parents(rel, true).is_ignore()
                    }
                    _ => true,
                }
            })
            .build();
        for entry in walker {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            if !entry.file_type().is_some_and(|t| t.is_dir()) {
                if files && !self.rules.is_ignored(path, false) {
                    found.push(path.to_path_buf());
                }
                continue;
            }
            if self.watched.contains(path) {
                continue;
            }
            self.rules.add_dir(path);
            if !self.watch_dir(path) {
                return found;
            }
        }
        found
    }

    /// Reads every ignore file again, and watches directories that are no
    /// longer ignored. (Directories that became ignored keep their watch;
    /// their changes are filtered out like any ignored change.)
    fn reload_rules(&mut self) {
        match Rules::new(&self.roots, &self.cfg.ignore, &self.cfg.exts) {
            Ok(rules) => self.rules = rules,
            Err(e) => {
                warn!("cannot read the ignore rules again: {e:#}");
                return;
            }
        }
        // Outer directories first: the deepest ignore file decides.
        let mut dirs: Vec<PathBuf> = self.watched.iter().cloned().collect();
        dirs.sort_by_key(|d| d.components().count());
        for dir in dirs {
            self.rules.add_dir(&dir);
        }
        self.add_roots();
        debug!(
            "ignore rules read again; watching {} directories",
            self.watched.len()
        );
    }

    /// The inotify watch limit is per user and shared by every program:
    /// rather than miss changes, poll, and say how to raise the limit.
    fn fall_back_to_polling(&mut self) {
        let limit =
            std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches").unwrap_or_default();
        warn!(
            "the inotify watch limit ({}) is reached: polling every 500ms instead. Raise it with `sudo sysctl fs.inotify.max_user_watches=524288`",
            limit.trim()
        );
        match poll_watcher(self.notify_tx.clone(), FALLBACK_POLL) {
            Ok(w) => self.watcher = w,
            Err(e) => {
                warn!(
                    "cannot poll either ({e:#}): file changes will not be seen; reload with SIGHUP"
                );
                return;
            }
        }
        self.watched.clear();
        self.add_roots();
    }

    /// Looks at every root's directory: one that is gone loses its
    /// watches and gets a warning; one that is back (or was replaced by a
    /// new directory) is watched again, and its files count as changed.
    /// True if one came back.
    fn check_roots(
        &mut self,
        changed: &mut Vec<(PathBuf, PathBuf)>,
        seen: &mut HashSet<PathBuf>,
    ) -> bool {
        let mut back = false;
        for i in 0..self.roots.len() {
            let root = self.roots[i].clone();
            let now = DirId::of(root.dir());
            let was = std::mem::replace(&mut self.root_ids[i], now);
            if was == now {
                continue;
            }
            self.forget(root.dir());
            let what = if root.file {
                format!("the directory of {}", root.path.display())
            } else {
                root.path.display().to_string()
            };
            if now.is_none() {
                warn!(
                    "{what} was removed: its changes are not seen until it is back (looked for every {})",
                    ms(ROOT_POLL)
                );
                continue;
            }
            if was.is_none() {
                info!("{what} is back: watching it again");
            } else {
                info!("{what} was replaced by a new directory: watching it again");
            }
            self.reload_rules();
            let files = if root.file {
                root.path
                    .exists()
                    .then(|| root.path.clone())
                    .into_iter()
                    .collect()
            } else {
                self.walk(&root.path, true)
            };
            for path in files {
                record(&self.rules, path, changed, seen);
            }
            back = true;
        }
        back
    }

    /// Drops every watch on `dir` and below: it is gone, or another
    /// directory now has its path.
    fn forget(&mut self, dir: &Path) {
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|w| w.starts_with(dir))
            .cloned()
            .collect();
        for w in stale {
            // The kernel may have dropped it already, with the inode.
            let _ = self.watcher.unwatch(&w);
            self.watched.remove(&w);
        }
    }

    fn run(mut self, rx: Receiver<notify::Result<notify::Event>>, tx: &Sender<Input>) {
        let mut changed: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut seen: HashSet<PathBuf> = HashSet::new();
        // The burst under way; `deadline` is when it ends.
        let mut burst = burst::Burst::new(self.cfg.debounce);
        let mut deadline: Option<Instant> = None;
        // While a root is missing, when to look for it next.
        let mut look_for_roots: Option<Instant> = None;
        loop {
            let wake = deadline.into_iter().chain(look_for_roots).min();
            let next = match wake {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            };
            match next {
                Ok(Ok(event)) => {
                    let paths = self.take(event, &mut changed, &mut seen);
                    if !paths.is_empty() {
                        burst.changed(Instant::now(), paths.iter().map(PathBuf::as_path));
                        deadline = burst.deadline();
                    }
                }
                Ok(Err(e)) => {
                    if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                        self.fall_back_to_polling();
                    } else {
                        debug!("watch error: {e}");
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    let burst_over = deadline.is_some_and(|d| d <= now);
                    if burst_over || look_for_roots.is_some_and(|d| d <= now) {
                        let back = self.check_roots(&mut changed, &mut seen);
                        look_for_roots = self
                            .root_ids
                            .iter()
                            .any(Option::is_none)
                            .then(|| now + ROOT_POLL);
                        if back && deadline.is_none() {
                            deadline = Some(after(now, self.cfg.debounce));
                        }
                    }
                    if !burst_over {
                        continue;
                    }
                    deadline = None;
                    seen.clear();
                    for restless in burst.end(now) {
                        self.name_restless(&restless);
                    }
                    if std::mem::take(&mut self.rules_changed) {
                        self.reload_rules();
                    }
                    let batch = std::mem::take(&mut changed);
                    for input in self.outcome(&batch) {
                        if tx.send(input).is_err() {
                            return;
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Says once that `restless` holds every reload back, and how to
    /// ignore it.
    fn name_restless(&self, restless: &burst::Restless) {
        let rel = self.rules.relative(&restless.path);
        crate::report::log::write(&Step::Restless {
            path: rel.display().to_string(),
            bursts: restless.bursts as usize,
            hold: self.cfg.debounce + burst::MAX_HOLD,
        });
    }

    /// Records the relevant paths of one event; returns them.
    fn take(
        &mut self,
        event: notify::Event,
        changed: &mut Vec<(PathBuf, PathBuf)>,
        seen: &mut HashSet<PathBuf>,
    ) -> Vec<PathBuf> {
        let relevant = matches!(
            event.kind,
            EventKind::Create(_)
                | EventKind::Remove(_)
                | EventKind::Modify(_)
                | EventKind::Access(AccessKind::Close(AccessMode::Write))
        );
        if !relevant {
            return Vec::new();
        }
        let mut relevant = Vec::new();
        for path in event.paths {
            let kind = Kind::of(&path);
            let is_dir = kind == Kind::Dir;
            if path
                .file_name()
                .is_some_and(|n| n == ".gitignore" || n == ".ignore")
            {
                self.rules_changed = true;
            }
            if self.rules.is_ignored_change(&path, kind) || self.own.is_own(&path) {
                continue;
            }
            // A new directory (mkdir, a checkout, a rename into the tree):
            // watch it, and count the files already in it as changed.
            let inside = if is_dir && !self.watched.contains(&path) {
                self.walk(&path, true)
            } else {
                Vec::new()
            };
            if kind == Kind::Gone {
                // Removed, or renamed away: forget every watch under it, so
                // a directory made again at that path is watched again (and
                // the poll watcher stops scanning a path that is gone).
                self.forget(&path);
            }
            relevant.push(path.clone());
            for path in std::iter::once(path).chain(inside) {
                record(&self.rules, path, changed, seen);
            }
        }
        relevant
    }

    fn outcome(&self, batch: &[(PathBuf, PathBuf)]) -> Vec<Input> {
        let at = Instant::now();
        let shown = |p: &Path| {
            std::env::current_dir()
                .ok()
                .and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf))
                .unwrap_or_else(|| p.to_path_buf())
        };
        match self.routes.route(batch) {
            Outcome::Nothing => {
                debug!("{} change(s) matched --no-reload-on only", batch.len());
                Vec::new()
            }
            Outcome::Reload(first, more) => vec![Input::Event(Event::Reload {
                trigger: Trigger::Files {
                    first: shown(&first),
                    more,
                },
                at,
            })],
            Outcome::Signal(signals, first, more) => {
                let because = match more {
                    0 => format!("change to {}", shown(&first).display()),
                    n => format!("change to {} (+{n} more)", shown(&first).display()),
                };
                signals
                    .into_iter()
                    .map(|signal| {
                        Input::Event(Event::SignalActive {
                            signal,
                            because: because.clone(),
                        })
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file written under a watched root is a reload, named by a path
    /// people read: on Windows without the `\\?\` verbatim prefix (roots
    /// are canonicalized by dunce, not std), which run under Wine checks
    /// that notify's ReadDirectoryChangesW reports under the plain path.
    #[test]
    fn a_change_under_a_root_reloads_and_is_shown_as_a_plain_path() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WatchConfig {
            roots: vec![dir.path().to_owned()],
            poll: None,
            debounce: Duration::from_millis(50),
            ignore: Vec::new(),
            exts: Vec::new(),
            signal_on: Vec::new(),
            no_reload_on: Vec::new(),
        };
        let (tx, rx) = mpsc::channel();
        spawn(cfg, &[], tx).unwrap();
        std::fs::write(dir.path().join("a.txt"), "x").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let first = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Input::Event(Event::Reload {
                    trigger: Trigger::Files { first, .. },
                    ..
                })) => break first,
                Ok(_) => continue,
                Err(e) => panic!("no reload for a.txt: {e}"),
            }
        };
        assert!(first.ends_with("a.txt"), "{}", first.display());
        assert!(
            !first.to_string_lossy().starts_with(r"\\?\"),
            "shown in the verbatim form: {}",
            first.display()
        );
    }
}
