//! The program a generation runs: the command given after `--` (or the
//! one inferred from Cargo), and finding its executable as `execvp` would.
//! Portable: the Windows executor runs it too.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;
use anyhow::bail;

/// The program to run as a generation, resolved once.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    /// The command as given (`argv[0]` and arguments); never empty.
    pub(crate) argv: Vec<OsString>,
}

impl Program {
    /// Takes the command line given after `--`.
    pub(crate) fn new(argv: Vec<OsString>) -> anyhow::Result<Self> {
        if argv.is_empty() {
            bail!(
                "no command to run: put the server command after `--`, e.g. `devsup --port 8080 -- ./target/debug/server`"
            );
        }
        Ok(Program { argv })
    }

    /// The command as given (`argv[0]` and arguments).
    #[cfg(test)]
    pub(crate) fn argv(&self) -> &[OsString] {
        &self.argv
    }

    /// Finds the executable: a path as given, or the first match in `PATH`.
    pub(crate) fn resolve(&self) -> anyhow::Result<PathBuf> {
        resolve_executable(&self.argv[0])
    }
}

/// Finds an executable the way `execvp` would, and says why when it can't.
pub(crate) fn resolve_executable(name: &OsStr) -> anyhow::Result<PathBuf> {
    let shown = Path::new(name).display();
    let separators: &[u8] = if cfg!(windows) { b"/\\" } else { b"/" };
    if name
        .as_encoded_bytes()
        .iter()
        .any(|b| separators.contains(b))
    {
        let path = PathBuf::from(name);
        check_executable(&path).with_context(|| format!("cannot run {shown}"))?;
        return Ok(path);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    if let Some(found) = find_in(&path_var, name) {
        return Ok(found);
    }
    bail!("command not found: {shown} is not in PATH; give its path, e.g. ./target/debug/{shown}")
}

/// The first executable called `name` in the directories of `path_var`
/// (on Windows, `name.exe` too).
fn find_in(path_var: &OsStr, name: &OsStr) -> Option<PathBuf> {
    for dir in std::env::split_paths(path_var) {
        let candidate = dir.join(name);
        if check_executable(&candidate).is_ok() {
            return Some(candidate);
        }
        // Windows finds `server` as `server.exe`.
        if cfg!(windows) && Path::new(name).extension().is_none() {
            let candidate = candidate.with_extension("exe");
            if check_executable(&candidate).is_ok() {
                return Some(candidate);
            }
        }
    }
    None
}

fn check_executable(path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            anyhow::anyhow!("no such file (build it first, or pass --build)")
        }
        _ => e.into(),
    })?;
    if meta.is_dir() {
        bail!("it is a directory");
    }
    #[cfg(unix)]
    if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 == 0 {
        bail!("it is not executable (chmod +x it)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn resolve_finds_programs_and_explains_failures() {
        assert!(resolve_executable(OsStr::new("sh")).unwrap().is_absolute());
        let e = resolve_executable(OsStr::new("no-such-program-devsup")).unwrap_err();
        assert!(e.to_string().contains("command not found"), "{e}");
        let e = resolve_executable(OsStr::new("./no/such/file")).unwrap_err();
        assert!(format!("{e:#}").contains("no such file"), "{e:#}");
        let file = std::env::temp_dir().join(format!("devsup-not-exec-{}", std::process::id()));
        std::fs::write(&file, "").unwrap();
        let e = resolve_executable(file.as_os_str()).unwrap_err();
        std::fs::remove_file(&file).unwrap();
        assert!(format!("{e:#}").contains("not executable"), "{e:#}");
    }

    /// On Windows `server` is found as `server.exe`.
    #[cfg(windows)]
    #[test]
    fn resolve_finds_an_exe_without_its_extension() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("devsup-test-server.exe"), "").unwrap();
        let path_var = dir.path().as_os_str();
        let found = find_in(path_var, OsStr::new("devsup-test-server"));
        assert_eq!(found, Some(dir.path().join("devsup-test-server.exe")));
        assert_eq!(
            find_in(path_var, OsStr::new("no-such-program-devsup")),
            None
        );
    }
}
