//! Third-party programs the tests run against, installed by the tests
//! themselves on first use: nothing here is a hand step.
//!
//! - [`apt`]: a Debian package (`h2load` from `nghttp2-client`, Chromium),
//!   installed with `apt-get` when its program is missing.
//! - [`python_venv`]: a virtual environment under `target/test-tools/` with
//!   pinned PyPI packages (uvicorn, gunicorn).
//! - [`npm`]: a package from the npm registry (playwright-core, express)
//!   under `target/test-tools/node/`.
//! - [`go_build`]: Go programs built offline against Debian's go-systemd
//!   (`golang-go`, `golang-github-coreos-go-systemd-dev`, by [`apt`] and
//!   [`apt_files`]).
//!
//! Each install runs once per machine (or per target directory) under a
//! file lock, so test threads and test processes that need the same tool
//! wait for one another instead of racing `apt-get` or `pip`.
//!
//! A tool that cannot be installed (no root, no registry) is an
//! [`Unavailable`] error. [`require`] turns it into one loud line and
//! `None`, so the test that needed it says that it did not run, or into a
//! failure when `DEVSUP_REQUIRE_TOOLS=1` is set, as `.ci/run` does: CI never
//! passes a check it skipped.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};

/// Why a tool could not be provided.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// The tool, or `None` after one loud line saying which check did not run
/// and why. Panics instead when `DEVSUP_REQUIRE_TOOLS=1` (CI).
pub fn require<T>(check: &str, tool: Result<T, Unavailable>) -> Option<T> {
    match tool {
        Ok(tool) => Some(tool),
        Err(why) if std::env::var_os("DEVSUP_REQUIRE_TOOLS").is_some_and(|v| v == "1") => {
            panic!("{check}: required tool unavailable: {why}")
        }
        Err(why) => {
            eprintln!(
                "!!! SKIPPED {check}: {why} (set DEVSUP_REQUIRE_TOOLS=1 to make this a failure)"
            );
            None
        }
    }
}

/// `target/` (or `$CARGO_TARGET_DIR`) of the running test or bench binary.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Test binaries live in target/<profile>/deps/, others in target/<profile>/.
    let mut dir = exe.parent().expect("exe has a parent").to_path_buf();
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir.pop();
    }
    dir.pop();
    dir
}

/// `target/test-tools/`, created on first use.
pub fn tools_dir() -> PathBuf {
    let dir = target_dir().join("test-tools");
    fs::create_dir_all(&dir).expect("creating target/test-tools");
    dir
}

/// Holds an exclusive lock on `target/test-tools/NAME.lock` while `f` runs.
fn locked<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let path = tools_dir().join(format!("{name}.lock"));
    let file = File::create(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let _lock = Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("locking {}: {e}", path.display()));
    f()
}

/// The full path of `program` on `PATH`, if it is there.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `command` to completion, its output captured; an error carries the
/// command and the last lines it printed.
fn run(command: &mut Command) -> Result<(), Unavailable> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Unavailable(format!("running {command:?}: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(Unavailable(format!(
        "{command:?} failed ({}): {}",
        output.status,
        tail.join(" | ")
    )))
}

/// `program` from the Debian package `package`, installed with `apt-get`
/// if it is not on `PATH` yet.
pub fn apt(program: &str, package: &str) -> Result<PathBuf, Unavailable> {
    if let Some(path) = which(program) {
        return Ok(path);
    }
    locked("apt", || {
        if let Some(path) = which(program) {
            return Ok(path);
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(Unavailable(format!(
                "{program} is not installed and installing {package} needs root: \
                 run `apt-get install {package}`"
            )));
        }
        let started = Instant::now();
        let install = || {
            run(Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends", package])
                .env("DEBIAN_FRONTEND", "noninteractive"))
        };
        // A fresh machine may have no package lists yet.
        if install().is_err() {
            run(Command::new("apt-get").args(["update", "-q"]))?;
            install()?;
        }
        eprintln!("[tools] installed {package} in {:.1?}", started.elapsed());
        which(program).ok_or_else(|| {
            Unavailable(format!("{package} installed, but {program} is not on PATH"))
        })
    })
}

/// The Debian package `package`, installed with `apt-get` if `path` (one
/// of its files) is missing: for packages that install no program, such
/// as Go sources under /usr/share/gocode.
pub fn apt_files(path: &str, package: &str) -> Result<PathBuf, Unavailable> {
    let path = PathBuf::from(path);
    if path.exists() {
        return Ok(path);
    }
    locked("apt", || {
        if path.exists() {
            return Ok(path.clone());
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(Unavailable(format!(
                "{} is missing and installing {package} needs root: run `apt-get install {package}`",
                path.display()
            )));
        }
        let install = || {
            run(Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends", package])
                .env("DEBIAN_FRONTEND", "noninteractive"))
        };
        if install().is_err() {
            run(Command::new("apt-get").args(["update", "-q"]))?;
            install()?;
        }
        if path.exists() {
            Ok(path.clone())
        } else {
            Err(Unavailable(format!(
                "{package} installed, but {} is missing",
                path.display()
            )))
        }
    })
}

/// Builds the Go programs `mains` (name, `main.go` source) and the local
/// packages `packages` (import path under `example.com/server/`, source
/// file) as one module under `target/test-tools/go-NAME`, offline: the
/// module requires go-systemd from Debian's `/usr/share/gocode` (a
/// `replace` to that directory, `GOPROXY=off`). Returns the directory of
/// the binaries.
pub fn go_build(
    name: &str,
    mains: &[(&str, &Path)],
    packages: &[(&str, &Path)],
) -> Result<PathBuf, Unavailable> {
    let go = apt("go", "golang-go")?;
    apt_files(
        "/usr/share/gocode/src/github.com/coreos/go-systemd/activation",
        "golang-github-coreos-go-systemd-dev",
    )?;
    let dir = tools_dir().join(format!("go-{name}"));
    locked(&format!("go-{name}"), || {
        let io = |e: std::io::Error| Unavailable(format!("preparing {}: {e}", dir.display()));
        fs::create_dir_all(dir.join("bin")).map_err(io)?;
        fs::write(dir.join("go.mod"), GO_MOD).map_err(io)?;
        for (sub, source) in mains.iter().chain(packages) {
            fs::create_dir_all(dir.join(sub)).map_err(io)?;
            fs::copy(
                source,
                dir.join(sub).join(source.file_name().unwrap_or_default()),
            )
            .map_err(io)?;
        }
        let started = Instant::now();
        let mut command = Command::new(go);
        command
            .current_dir(&dir)
            .args(["build", "-o", "bin/"])
            .args(mains.iter().map(|(sub, _)| format!("./{sub}")))
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("GO111MODULE", "on")
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("gopath"));
        run(&mut command)?;
        eprintln!("[tools] built Go {name} in {:.1?}", started.elapsed());
        Ok(dir.join("bin"))
    })
}

/// The module the Go fixtures build in: go-systemd (and the dbus module
/// its go.mod requires) from Debian's sources, no registry.
const GO_MOD: &str = "module example.com/server

go 1.19

require github.com/coreos/go-systemd/v22 v22.3.2

require github.com/godbus/dbus/v5 v5.0.4 // indirect

replace github.com/coreos/go-systemd/v22 => /usr/share/gocode/src/github.com/coreos/go-systemd

replace github.com/godbus/dbus/v5 => /usr/share/gocode/src/github.com/godbus/dbus
";

/// A Python virtual environment at `target/test-tools/venv-NAME` with
/// `packages` (pip requirement specifiers, pinned) installed; returns its
/// `bin/` directory.
pub fn python_venv(name: &str, packages: &[&str]) -> Result<PathBuf, Unavailable> {
    let venv = tools_dir().join(format!("venv-{name}"));
    let bin = venv.join("bin");
    let stamp = venv.join("devsup-packages.txt");
    let wanted = packages.join("\n");
    if fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return Ok(bin);
    }
    locked(&format!("venv-{name}"), || {
        if fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
            return Ok(bin.clone());
        }
        let started = Instant::now();
        let python =
            which("python3").ok_or_else(|| Unavailable("python3 is not on PATH".to_owned()))?;
        if !bin.join("python").exists() {
            run(Command::new(python).arg("-m").arg("venv").arg(&venv))?;
        }
        run(Command::new(bin.join("python"))
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(packages))?;
        fs::write(&stamp, &wanted).map_err(|e| Unavailable(format!("writing {stamp:?}: {e}")))?;
        eprintln!(
            "[tools] venv {name} ({}) ready in {:.1?}",
            packages.join(" "),
            started.elapsed()
        );
        Ok(bin.clone())
    })
}

/// `target/test-tools/node/` with the npm package `spec` (e.g.
/// `playwright-core@1.49.1`) installed; returns the directory to run
/// `node` in (its `node_modules/` resolves the package).
pub fn npm(spec: &str) -> Result<PathBuf, Unavailable> {
    let dir = tools_dir().join("node");
    let stamp = dir.join(format!("devsup-{}.stamp", spec.replace(['/', '@'], "_")));
    if stamp.exists() {
        return Ok(dir);
    }
    locked("npm", || {
        if stamp.exists() {
            return Ok(dir.clone());
        }
        let npm = which("npm").ok_or_else(|| Unavailable("npm is not on PATH".to_owned()))?;
        fs::create_dir_all(&dir).map_err(|e| Unavailable(format!("creating {dir:?}: {e}")))?;
        let package_json = dir.join("package.json");
        if !package_json.exists() {
            fs::write(&package_json, "{\"private\": true}\n")
                .map_err(|e| Unavailable(format!("writing {package_json:?}: {e}")))?;
        }
        let started = Instant::now();
        run(Command::new(npm).current_dir(&dir).args([
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            spec,
        ]))?;
        fs::write(&stamp, "").map_err(|e| Unavailable(format!("writing {stamp:?}: {e}")))?;
        eprintln!("[tools] npm {spec} ready in {:.1?}", started.elapsed());
        Ok(dir.clone())
    })
}

/// `path` as a string for a command line or a script; panics on non-UTF-8
/// (every path here is under the target directory).
pub fn display(path: &Path) -> &str {
    path.to_str().expect("tool paths are UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_finds_sh_and_not_a_made_up_name() {
        assert!(which("sh").is_some());
        assert!(which("devsup-no-such-program-4711").is_none());
    }

    #[test]
    fn run_reports_the_failing_command_and_its_output() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        assert!(err.0.contains("boom"), "{err}");
        assert!(err.0.contains("exit status: 3"), "{err}");
    }
}
