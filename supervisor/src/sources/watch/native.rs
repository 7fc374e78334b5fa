//! The platform's native file events, asked for one directory at a time.
//!
//! The rest of the watch code walks the tree and asks for each directory
//! that is not ignored ([`Native::watch`]); what that costs differs:
//!
//! - **inotify** (Linux) watches one directory, not its subdirectories, and
//!   each watch counts against a per-user limit: every directory gets its
//!   own watch, and an ignored one (`target/`) none.
//! - **FSEvents** (macOS) watches a whole tree with one stream, and notify
//!   restarts that stream on every `watch` call (it stops the stream's
//!   thread and starts another, and what happens in between is not
//!   reported). There, the first directory asked for under a tree is
//!   watched recursively, and every directory below it is already covered
//!   ([`Trees`]). Changes in ignored directories then reach devsup too, and
//!   are dropped by the same rules (`rules.rs`) as any ignored change; the
//!   burst debounce is the same code.
//!
//! The BSDs get notify's kqueue watcher, one directory at a time like
//! inotify.

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

/// Whether one native watch covers a whole tree.
const TREES: bool = cfg!(target_vendor = "apple");

/// The native watcher, and the trees it covers where [`TREES`].
pub(super) struct Native {
    watcher: RecommendedWatcher,
    trees: Trees,
}

impl Native {
    pub(super) fn new(watcher: RecommendedWatcher) -> Native {
        Native {
            watcher,
            trees: Trees::default(),
        }
    }

    /// Sees changes in `dir` (its entries, not deeper, on Linux; the whole
    /// tree on macOS).
    pub(super) fn watch(&mut self, dir: &Path) -> notify::Result<()> {
        if !TREES {
            return self.watcher.watch(dir, RecursiveMode::NonRecursive);
        }
        if self.trees.covers(dir) {
            return Ok(());
        }
        self.watcher.watch(dir, RecursiveMode::Recursive)?;
        for inner in self.trees.add(dir) {
            // Covered by the new tree now; events from both would be the
            // same changes twice.
            let _ = self.watcher.unwatch(&inner);
        }
        Ok(())
    }

    /// Stops seeing `dir`: gone, or replaced by another directory.
    pub(super) fn unwatch(&mut self, dir: &Path) -> notify::Result<()> {
        if !TREES {
            return self.watcher.unwatch(dir);
        }
        if self.trees.remove(dir) {
            return self.watcher.unwatch(dir);
        }
        Ok(())
    }
}

/// The tops of the trees watched recursively.
#[derive(Debug, Default)]
struct Trees(Vec<PathBuf>);

impl Trees {
    fn covers(&self, dir: &Path) -> bool {
        self.0.iter().any(|top| dir.starts_with(top))
    }

    /// Adds a tree; returns the trees inside it, which it covers from now
    /// on.
    fn add(&mut self, dir: &Path) -> Vec<PathBuf> {
        let (inner, rest) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|top| top.starts_with(dir));
        self.0 = rest;
        self.0.push(dir.to_path_buf());
        inner
    }

    /// Removes `dir` if it is the top of a tree; false if it is not (a
    /// directory inside a tree has no watch of its own).
    fn remove(&mut self, dir: &Path) -> bool {
        let before = self.0.len();
        self.0.retain(|top| top != dir);
        self.0.len() < before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The macOS bookkeeping: one watch per tree, below it none, and a
    /// tree that is forgotten is watched again when asked for.
    #[test]
    fn one_watch_covers_a_tree() {
        let mut trees = Trees::default();
        assert!(!trees.covers(Path::new("/src/app")));
        assert!(trees.add(Path::new("/src/app/web")).is_empty());
        assert!(trees.covers(Path::new("/src/app/web/templates")));
        assert!(
            !trees.covers(Path::new("/src/app/webby")),
            "whole components"
        );
        assert_eq!(
            trees.add(Path::new("/src/app")),
            [PathBuf::from("/src/app/web")],
            "the inner tree is covered by the outer one"
        );
        assert_eq!(trees.0, [PathBuf::from("/src/app")]);
        assert!(
            !trees.remove(Path::new("/src/app/web")),
            "no watch of its own"
        );
        assert!(trees.covers(Path::new("/src/app/web")));
        assert!(trees.remove(Path::new("/src/app")));
        assert!(!trees.covers(Path::new("/src/app/web")));
    }
}
