//! Where a burst of changes goes: `--no-reload-on` drops paths, and a burst
//! made only of `--signal-on` matches sends signals instead of reloading.

use std::path::{Path, PathBuf};

use crate::signal::Signal;
use anyhow::Context;
use globset::{Glob, GlobSet, GlobSetBuilder};

use super::WatchConfig;

/// The routing of changes that are not ignored.
#[derive(Debug)]
pub(super) struct Routes {
    signal_on: Vec<(GlobSet, Signal)>,
    no_reload_on: GlobSet,
}

fn globset(patterns: &[&str]) -> anyhow::Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).with_context(|| format!("bad glob {p:?}"))?);
    }
    Ok(b.build()?)
}

impl Routes {
    pub(super) fn new(cfg: &WatchConfig) -> anyhow::Result<Routes> {
        let signal_on = cfg
            .signal_on
            .iter()
            .map(|(glob, sig)| Ok((globset(&[glob])?, *sig)))
            .collect::<anyhow::Result<_>>()?;
        let no: Vec<&str> = cfg.no_reload_on.iter().map(String::as_str).collect();
        Ok(Routes {
            signal_on,
            no_reload_on: globset(&no)?,
        })
    }

    /// A path matches a glob if its path relative to its root, or its file
    /// name, does: `*.html` and `templates/**` both work.
    fn matches(set: &GlobSet, rel: &Path) -> bool {
        set.is_match(rel) || rel.file_name().is_some_and(|n| set.is_match(n))
    }
}

/// What a burst of changes comes to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Nothing to do.
    Nothing,
    /// Reload; the first path and how many more.
    Reload(PathBuf, usize),
    /// Send these signals to the active generation; the first path.
    Signal(Vec<Signal>, PathBuf, usize),
}

impl Routes {
    pub(super) fn route(&self, changed: &[(PathBuf, PathBuf)]) -> Outcome {
        let kept: Vec<&(PathBuf, PathBuf)> = changed
            .iter()
            .filter(|(_, rel)| !Self::matches(&self.no_reload_on, rel))
            .collect();
        let Some(first) = kept.first() else {
            return Outcome::Nothing;
        };
        let more = kept.len() - 1;
        let mut signals = Vec::new();
        for (_, rel) in &kept {
            match self
                .signal_on
                .iter()
                .find(|(set, _)| Self::matches(set, rel))
            {
                Some((_, sig)) => {
                    if !signals.contains(sig) {
                        signals.push(*sig);
                    }
                }
                None => return Outcome::Reload(first.0.clone(), more),
            }
        }
        Outcome::Signal(signals, first.0.clone(), more)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cfg() -> WatchConfig {
        WatchConfig {
            roots: vec![],
            poll: None,
            debounce: Duration::from_millis(50),
            ignore: vec!["*.log".into(), "tmp/".into()],
            exts: vec![],
            signal_on: vec![
                ("templates/**".into(), Signal::SIGUSR1),
                ("*.mo".into(), Signal::SIGHUP),
            ],
            no_reload_on: vec!["*.md".into()],
        }
    }

    fn rel(paths: &[&str]) -> Vec<(PathBuf, PathBuf)> {
        paths
            .iter()
            .map(|p| (PathBuf::from("/r").join(p), PathBuf::from(p)))
            .collect()
    }

    #[test]
    fn routing() {
        let routes = Routes::new(&cfg()).unwrap();
        assert_eq!(
            routes.route(&rel(&["src/main.rs"])),
            Outcome::Reload("/r/src/main.rs".into(), 0)
        );
        assert_eq!(
            routes.route(&rel(&["templates/a.html", "templates/b/c.html"])),
            Outcome::Signal(vec![Signal::SIGUSR1], "/r/templates/a.html".into(), 1)
        );
        assert_eq!(
            routes.route(&rel(&["templates/a.html", "locale/fr.mo"])),
            Outcome::Signal(
                vec![Signal::SIGUSR1, Signal::SIGHUP],
                "/r/templates/a.html".into(),
                1
            )
        );
        // Any change outside the signal globs reloads.
        assert_eq!(
            routes.route(&rel(&["templates/a.html", "src/lib.rs"])),
            Outcome::Reload("/r/templates/a.html".into(), 1)
        );
        assert_eq!(routes.route(&rel(&["README.md"])), Outcome::Nothing);
        assert_eq!(
            routes.route(&rel(&["README.md", "src/a.rs"])),
            Outcome::Reload("/r/src/a.rs".into(), 0)
        );
    }
}
