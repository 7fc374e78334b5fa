//! Which changes count: devsup's built-in ignores and `--ignore`, every
//! `.gitignore` / `.ignore` from the repository's top down (the deepest one
//! with an opinion decides, as in git), git's global and per-repository
//! excludes, and `--ext`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use tracing::{debug, warn};

/// Built-in ignores, in gitignore syntax: build output, VCS data, the
/// swap, backup and probe files editors write next to the file they save
/// (vim's `4913` probe and `*~` backups, emacs' `.#lock` files and
/// `#auto-save#` files, kate's swap files), and Python's bytecode, which
/// a server writes itself as it starts (`__pycache__/`, `*.pyc`).
///
/// What watchexec (`crates/cli/src/filterer.rs`: `*.py[co]`, `#*#`,
/// `.#*`, `.*.sw?`, `.*.kate-swp`, VCS directories, `.DS_Store`), nodemon
/// (`ignore-by-default`: `.git`, `node_modules`, …) and Django (which
/// watches only the sources of imported modules, so never bytecode or an
/// editor's files) agree a server never needs to reload for. `#` starts a
/// comment in gitignore syntax: the auto-save rule is written `\#*#`.
const BUILTIN_IGNORES: &[&str] = &[
    "target/",
    ".git/",
    ".hg/",
    ".svn/",
    ".bzr/",
    "_darcs/",
    ".pijul/",
    "node_modules/",
    "__pycache__/",
    "*.py[co]",
    "*.swp",
    "*.swx",
    "*.swo",
    "*.kate-swp",
    "*~",
    "4913",
    ".#*",
    "\\#*#",
    "*.tmp",
    ".DS_Store",
];

/// What a changed path is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Dir,
    /// Deleted or renamed away: a file or a directory, nobody knows.
    Gone,
}

impl Kind {
    /// Looks at the path (following symlinks, as the walk does not).
    pub(super) fn of(path: &Path) -> Kind {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => Kind::Dir,
            Ok(_) => Kind::File,
            Err(_) => Kind::Gone,
        }
    }
}

/// A watched root: a directory and the tree below it, or one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WatchRoot {
    /// Absolute.
    pub(super) path: PathBuf,
    /// `-w FILE`: only this file counts, whatever the ignore rules say
    /// (it was named), and it is watched through its directory.
    pub(super) file: bool,
}

impl WatchRoot {
    /// Looks at `path` (absolute) to tell a file from a directory.
    pub(super) fn new(path: PathBuf) -> WatchRoot {
        let file = !path.is_dir();
        WatchRoot { path, file }
    }

    /// The directory whose watch sees this root's changes. A file is
    /// watched through its directory: a watch on the file itself would
    /// follow the old inode and miss an atomic save (a rename over it).
    pub(super) fn dir(&self) -> &Path {
        match (self.file, self.path.parent()) {
            (true, Some(parent)) => parent,
            _ => &self.path,
        }
    }
}

/// Ignore rules for a set of roots.
#[derive(Debug)]
pub(super) struct Rules {
    pub(super) roots: Vec<Root>,
    global: Gitignore,
    exts: Vec<String>,
}

#[derive(Debug)]
pub(super) struct Root {
    pub(super) path: PathBuf,
    /// A `-w FILE` root: never ignored, relative to its directory.
    file: bool,
    /// Built-in and `--ignore` patterns, relative to this root.
    pub(super) builtin: Gitignore,
    /// Each `.gitignore` / `.ignore` / `.git/info/exclude` found, deepest
    /// last.
    files: Vec<Gitignore>,
}

impl Rules {
    pub(super) fn new(
        roots: &[WatchRoot],
        extra: &[String],
        exts: &[String],
    ) -> anyhow::Result<Rules> {
        let (global, err) = Gitignore::global();
        if let Some(err) = err {
            debug!("global git excludes: {err}");
        }
        let mut out = Vec::new();
        for WatchRoot { path, file } in roots {
            let mut b = GitignoreBuilder::new(path);
            for line in BUILTIN_IGNORES
                .iter()
                .copied()
                .chain(extra.iter().map(String::as_str))
            {
                b.add_line(None, line)
                    .with_context(|| format!("bad --ignore pattern {line:?}"))?;
            }
            out.push(Root {
                path: path.clone(),
                file: *file,
                builtin: b.build()?,
                files: ancestor_ignore_files(path),
            });
        }
        Ok(Rules {
            roots: out,
            global,
            exts: exts
                .iter()
                .map(|e| e.trim_start_matches('.').to_owned())
                .collect(),
        })
    }

    pub(super) fn root_of(&self, path: &Path) -> Option<&Root> {
        innermost(&self.roots, |r| &r.path, path).map(|i| &self.roots[i])
    }

    /// `path` relative to its root, as `--signal-on` and `--no-reload-on`
    /// globs see it; a `-w FILE` root's file is its bare name.
    pub(super) fn relative(&self, path: &Path) -> PathBuf {
        let base = self.root_of(path).map(|r| match (r.file, r.path.parent()) {
            (true, Some(parent)) => parent,
            _ => r.path.as_path(),
        });
        base.and_then(|b| path.strip_prefix(b).ok())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| path.to_path_buf())
    }

    /// Whether a change at `path`, of the given kind, is to be ignored. A
    /// path that is gone may have been a directory (`rm -rf target`, which
    /// `cargo clean` does): it is ignored if the file rules or the
    /// directory rules match it, so `target/` covers its deletion too.
    pub(super) fn is_ignored_change(&self, path: &Path, kind: Kind) -> bool {
        match kind {
            Kind::File => self.is_ignored(path, false),
            Kind::Dir => self.is_ignored(path, true),
            Kind::Gone => self.is_ignored(path, false) || self.is_ignored(path, true),
        }
    }

    /// Whether a change at `path` is to be ignored.
    pub(super) fn is_ignored(&self, path: &Path, is_dir: bool) -> bool {
        let Some(root) = self.root_of(path) else {
            return true;
        };
        if root.file {
            // The file named by `-w FILE` (nothing else is under it).
            return false;
        }
        if let Ok(rel) = path.strip_prefix(&root.path) {
            if !rel.as_os_str().is_empty()
                && root
                    .builtin
                    .matched_path_or_any_parents(rel, is_dir)
                    .is_ignore()
            {
                return true;
            }
        }
        if !is_dir && !self.exts.is_empty() {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !self.exts.iter().any(|e| e == ext) {
                return true;
            }
        }
        // The deepest ignore file that has an opinion decides, as in git.
        for gi in root.files.iter().rev() {
            if !path.starts_with(gi.path()) || path == gi.path() {
                continue;
            }
            let m = gi.matched_path_or_any_parents(path, is_dir);
            if m.is_ignore() {
                return true;
            }
            if m.is_whitelist() {
                return false;
            }
        }
        if !self.global.is_empty() {
            if let Ok(rel) = path.strip_prefix(&root.path) {
                if !rel.as_os_str().is_empty() {
                    return self
                        .global
                        .matched_path_or_any_parents(rel, is_dir)
                        .is_ignore();
                }
            }
        }
        false
    }

    /// Adds the ignore files of a directory found while walking.
    pub(super) fn add_dir(&mut self, dir: &Path) {
        let Some(root) = innermost(&self.roots, |r| &r.path, dir).map(|i| &mut self.roots[i])
        else {
            return;
        };
        if root.file {
            return;
        }
        for name in [".gitignore", ".ignore"] {
            let file = dir.join(name);
            if file.is_file() {
                let (gi, err) = Gitignore::new(&file);
                if let Some(err) = err {
                    warn!("{}: {err}", file.display());
                }
                root.files.push(gi);
            }
        }
    }
}

/// The index of the innermost of `items` whose root (given by `root`)
/// holds `path`: with `--watch . --watch ./src`, a path in `src` is
/// `src`'s.
pub(super) fn innermost<T>(
    items: &[T],
    root: impl Fn(&T) -> &PathBuf,
    path: &Path,
) -> Option<usize> {
    (0..items.len())
        .filter(|&i| path.starts_with(root(&items[i])))
        .max_by_key(|&i| root(&items[i]).as_os_str().len())
}

/// Ignore files in the directories above a root, up to the repository's top
/// (the first with `.git`), outermost first, and its `.git/info/exclude`.
fn ancestor_ignore_files(root: &Path) -> Vec<Gitignore> {
    let mut dirs: Vec<&Path> = Vec::new();
    for dir in root.ancestors().skip(1) {
        dirs.push(dir);
        if dir.join(".git").exists() {
            break;
        }
        if dirs.len() > 32 {
            dirs.clear();
            break;
        }
    }
    if !root.ancestors().any(|d| d.join(".git").exists()) {
        dirs.clear();
    }
    let mut out = Vec::new();
    for dir in dirs.into_iter().rev() {
        for file in [
            dir.join(".git/info/exclude"),
            dir.join(".gitignore"),
            dir.join(".ignore"),
        ] {
            if file.is_file() {
                let (gi, _) = if file.ends_with("info/exclude") {
                    let mut b = GitignoreBuilder::new(dir);
                    b.add(&file);
                    (
                        b.build().unwrap_or_else(|_| Gitignore::empty()),
                        None::<ignore::Error>,
                    )
                } else {
                    Gitignore::new(&file)
                };
                out.push(gi);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_user_and_gitignore_rules() {
        let dir = tempdir();
        std::fs::write(dir.join(".gitignore"), "secret.txt\n/out/\n!keep.swp\n").unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/.ignore"), "local.rs\n").unwrap();
        let mut rules = Rules::new(
            &[WatchRoot::new(dir.clone())],
            &["*.log".into(), "tmp/".into()],
            &[],
        )
        .unwrap();
        rules.add_dir(&dir);
        rules.add_dir(&dir.join("sub"));
        let ign = |p: &str, d: bool| rules.is_ignored(&dir.join(p), d);
        assert!(!ign("src/main.rs", false));
        assert!(ign("target/debug/x", false));
        assert!(ign("target", true));
        assert!(ign("a/target/x.rs", false));
        assert!(ign(".git/index", false));
        assert!(ign("src/.main.rs.swp", false));
        assert!(ign("src/main.rs~", false));
        assert!(ign("src/4913", false));
        assert!(ign("src/.#main.rs", false));
        assert!(ign("src/#main.py#", false), "emacs auto-save");
        assert!(!ign("src/#main.py", false));
        assert!(ign("__pycache__/app.cpython-311.pyc.140234", false));
        assert!(ign("pkg/__pycache__", true));
        assert!(ign("app.pyc", false));
        assert!(ign(".app.py.kate-swp", false));
        assert!(!ign("app.py", false));
        assert!(ign("server.log", false), "--ignore");
        assert!(ign("tmp/x", false), "--ignore dir");
        assert!(ign("secret.txt", false), ".gitignore");
        assert!(ign("out/a.rs", false), "anchored .gitignore dir");
        assert!(!ign("src/out/a.rs", false));
        assert!(ign("sub/local.rs", false), "nested .ignore");
        assert!(!ign("local.rs", false), "nested rules stay nested");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_deleted_path_matches_directory_rules_too() {
        let dir = tempdir();
        std::fs::write(dir.join(".gitignore"), "/data/\n").unwrap();
        let mut rules = Rules::new(&[WatchRoot::new(dir.clone())], &["tmp/".into()], &[]).unwrap();
        rules.add_dir(&dir);
        let gone = |p: &str| rules.is_ignored_change(&dir.join(p), Kind::Gone);
        // `rm -rf target`: nothing says it was a directory any more.
        assert!(gone("target"), "built-in directory rule");
        assert!(gone("a/target"));
        assert!(gone("data"), ".gitignore directory rule");
        assert!(gone("tmp"), "--ignore directory rule");
        assert!(gone("x.swp"), "file rules still apply");
        assert!(!gone("src"));
        assert!(!gone("src/main.rs"));
        assert!(!gone("src/data"), "anchored rules stay anchored");
        // An existing file named like an ignored directory still counts.
        assert!(!rules.is_ignored_change(&dir.join("target"), Kind::File));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_root_counts_that_file_alone_whatever_the_rules() {
        let dir = tempdir();
        std::fs::write(dir.join(".gitignore"), ".env\n").unwrap();
        std::fs::write(dir.join(".env"), "A=1").unwrap();
        let root = WatchRoot::new(dir.join(".env"));
        assert!(root.file);
        assert_eq!(root.dir(), dir);
        let mut rules = Rules::new(&[root], &[], &["rs".into()]).unwrap();
        rules.add_dir(&dir);
        for kind in [Kind::File, Kind::Gone] {
            assert!(
                !rules.is_ignored_change(&dir.join(".env"), kind),
                "named, so counted"
            );
            assert!(
                rules.is_ignored_change(&dir.join("x.rs"), kind),
                "its siblings are not watched"
            );
        }
        assert_eq!(rules.relative(&dir.join(".env")), Path::new(".env"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ext_filter_keeps_listed_extensions() {
        let dir = tempdir();
        let rules = Rules::new(
            &[WatchRoot::new(dir.clone())],
            &[],
            &["rs".into(), ".toml".into()],
        )
        .unwrap();
        assert!(!rules.is_ignored(&dir.join("a.rs"), false));
        assert!(!rules.is_ignored(&dir.join("Cargo.toml"), false));
        assert!(rules.is_ignored(&dir.join("a.html"), false));
        assert!(
            !rules.is_ignored(&dir.join("src"), true),
            "directories pass"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "devsup-watch-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dunce::canonicalize(dir).unwrap()
    }
}
