//! The files devsup writes itself, which it never reloads for: its stdout
//! and stderr when they are files (`devsup … > devsup.log 2>&1` in the
//! project would otherwise reload on every line it logs, in a loop), the
//! `--events` file, and its unix sockets.
//!
//! The paths are compared as given (made absolute); stdout and stderr are
//! compared by device and inode too, since nothing says under which path
//! the shell opened them (`/proc/self/fd/N` gives one, for a delete).

#[cfg(unix)]
use std::os::fd::BorrowedFd;
#[cfg(unix)]
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The files devsup writes itself.
#[derive(Debug, Default)]
pub(super) struct Own {
    paths: Vec<PathBuf>,
    /// Device and inode of stdout and stderr, when they are files.
    #[cfg(unix)]
    ids: Vec<(u64, u64)>,
}

impl Own {
    /// `paths` (the `--events` file, unix socket paths), and devsup's
    /// stdout and stderr where they are regular files.
    pub(super) fn new(paths: &[PathBuf]) -> Own {
        #[cfg_attr(not(unix), allow(unused_mut))]
        let mut own = Own {
            paths: paths.iter().filter_map(|p| absolute(p)).collect(),
            #[cfg(unix)]
            ids: Vec::new(),
        };
        // Where stdout and stderr are files (Unix only: Windows has no
        // inode to compare by).
        #[cfg(unix)]
        for fd in [1, 2] {
            // SAFETY: fds 1 and 2 are open for devsup's whole life (Rust's
            // runtime opens /dev/null on a closed one at start); borrowed
            // for this call only.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let Ok(st) = nix::sys::stat::fstat(borrowed) else {
                continue;
            };
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                continue;
            }
            #[allow(clippy::unnecessary_cast)] // dev_t and ino_t differ by platform
            own.ids.push((st.st_dev as u64, st.st_ino as u64));
            if let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{fd}")) {
                own.paths.push(path);
            }
        }
        own
    }

    /// Whether a change at `path` is to a file devsup writes itself.
    pub(super) fn is_own(&self, path: &Path) -> bool {
        if self.paths.iter().any(|p| p == path) {
            return true;
        }
        #[cfg(unix)]
        return !self.ids.is_empty()
            && std::fs::metadata(path).is_ok_and(|m| self.ids.contains(&(m.dev(), m.ino())));
        #[cfg(not(unix))]
        false
    }
}

/// `path` made absolute through its directory's canonical path (the file
/// itself may not exist yet, or be a socket).
fn absolute(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Some(dunce::canonicalize(dir).ok()?.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_paths_match_as_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dunce::canonicalize(dir.path()).unwrap();
        let events = dir.join("events.jsonl");
        let own = Own::new(std::slice::from_ref(&events));
        assert!(own.is_own(&events), "matched before it exists");
        std::fs::write(&events, "{}").unwrap();
        assert!(own.is_own(&events));
        assert!(!own.is_own(&dir.join("main.rs")));
    }
}
