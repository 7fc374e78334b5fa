//! `devsup` with no command, in a Cargo package: build with cargo and run
//! the binary `cargo run` would run.
//!
//! [`infer`] asks `cargo metadata` (through the `cargo_metadata` crate)
//! which package the directory belongs to (or `--package`) and which of
//! its binaries `cargo run` picks (`--bin`, else `default-run`, else the
//! only `[[bin]]`), and makes the build step
//! `cargo build --message-format=json-render-diagnostics --package P --bin B`.
//! cargo then renders its diagnostics on stderr as usual, and writes on
//! stdout only its JSON messages; the tee hands each stdout line to
//! [`Built::take_line`], which keeps the `executable` of the binary's
//! `compiler-artifact` message: the path is cargo's own, so a
//! `CARGO_TARGET_DIR`, a `[build] target-dir` or a `--target` all work,
//! and nothing guesses `target/debug/NAME`.
#![cfg_attr(
    windows,
    allow(
        dead_code,
        reason = "no command (the inferred cargo build) is refused on Windows so far"
    )
)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use cargo_metadata::{Message, Metadata, MetadataCommand, Package, PackageId, TargetKind};

/// What devsup inferred from the Cargo package: the package, its binary,
/// the build step, and where cargo says the binary was built.
#[derive(Debug, Clone)]
pub(crate) struct Inferred {
    /// The package's name.
    pub(crate) package: String,
    /// The binary target's name.
    pub(crate) bin: String,
    /// Why this binary: `--bin`, `default-run` or the only one.
    pub(crate) because: &'static str,
    /// The build step devsup runs (the last one, after any `--build`).
    pub(crate) build: String,
    /// The target directory cargo reports (for the log line only).
    pub(crate) target_dir: PathBuf,
    /// The workspace's root: rustc's paths are relative to it.
    pub(crate) workspace_root: PathBuf,
    /// The executable of the last build, from cargo's messages.
    pub(crate) built: Built,
}

/// Where the last build put the binary: filled by the tee thread reading
/// the build's stdout, read when a generation is spawned.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    package: PackageId,
    bin: String,
    path: Arc<Mutex<Option<PathBuf>>>,
}

impl Built {
    /// Takes one line of the cargo build's stdout: `true` if it was one of
    /// cargo's JSON messages (not to be shown), `false` for anything else.
    pub(crate) fn take_line(&self, line: &[u8]) -> bool {
        let trimmed = line.trim_ascii();
        if !trimmed.starts_with(b"{") {
            return false;
        }
        let Ok(message) = serde_json::from_slice::<Message>(trimmed) else {
            return false;
        };
        if let Message::CompilerArtifact(artifact) = message {
            let ours = artifact.package_id == self.package
                && artifact.target.name == self.bin
                && artifact.target.kind.contains(&TargetKind::Bin);
            if let (true, Some(exe)) = (ours, artifact.executable) {
                *self.path.lock().unwrap_or_else(|e| e.into_inner()) = Some(exe.into());
            }
        }
        true
    }

    /// The executable cargo last reported for the binary.
    pub(crate) fn path(&self) -> anyhow::Result<PathBuf> {
        self.path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .with_context(|| {
                format!(
                    "cargo's build messages named no executable for the binary {}: \
                     is it a [[bin]] target? Give the command after `--` instead",
                    self.bin
                )
            })
    }
}

/// Asks cargo about the package in `cwd` and picks the binary `cargo run`
/// would run there; `bin` and `package` are `--bin` and `--package`.
/// `Err` says what was missing and what to pass.
pub(crate) fn infer(
    cwd: &Path,
    bin: Option<&str>,
    package: Option<&str>,
) -> anyhow::Result<Inferred> {
    let metadata = MetadataCommand::new()
        .current_dir(cwd)
        .no_deps()
        .exec()
        .map_err(|e| {
            anyhow::anyhow!(
                "no command to run, and `cargo metadata` found no Cargo package here ({}): put the \
                 server command after `--`, e.g. `devsup --port 8080 -- ./server`",
                one_line(&e.to_string())
            )
        })?;
    let pkg = pick_package(&metadata, cwd, package)?;
    let (name, because) = pick_bin(pkg, bin)?;
    let build = build_command(&pkg.name, &name);
    Ok(Inferred {
        package: pkg.name.to_string(),
        bin: name.clone(),
        because,
        build,
        target_dir: metadata.target_directory.clone().into(),
        workspace_root: metadata.workspace_root.clone().into(),
        built: Built {
            package: pkg.id.clone(),
            bin: name,
            path: Arc::default(),
        },
    })
}

/// The package `cargo run` would use in `cwd`: `--package`, else the
/// member whose directory holds `cwd`, else the only member with a binary.
fn pick_package<'m>(
    metadata: &'m Metadata,
    cwd: &Path,
    wanted: Option<&str>,
) -> anyhow::Result<&'m Package> {
    let members = metadata.workspace_packages();
    let names = || {
        members
            .iter()
            .map(|p| p.name.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(wanted) = wanted {
        return members
            .iter()
            .find(|p| p.name.as_str() == wanted)
            .copied()
            .with_context(|| {
                format!(
                    "--package {wanted}: no such package in this workspace (its members: {})",
                    names()
                )
            });
    }
    let cwd = dunce::canonicalize(cwd).unwrap_or_else(|_| cwd.to_owned());
    let here = members
        .iter()
        .filter(|p| {
            p.manifest_path
                .parent()
                .is_some_and(|dir| cwd.starts_with(dir.as_std_path()))
        })
        .max_by_key(|p| p.manifest_path.as_str().len());
    if let Some(pkg) = here {
        return Ok(pkg);
    }
    let with_bins: Vec<&&Package> = members.iter().filter(|p| !bins(p).is_empty()).collect();
    match with_bins.as_slice() {
        [only] => Ok(only),
        _ => bail!(
            "no command to run, and this workspace has several packages: pass --package NAME (one of: {}), \
             or put the server command after `--`",
            names()
        ),
    }
}

/// The binary `cargo run` would run in `pkg`, and why.
fn pick_bin(pkg: &Package, wanted: Option<&str>) -> anyhow::Result<(String, &'static str)> {
    let bins = bins(pkg);
    let list = bins.join(", ");
    if let Some(wanted) = wanted {
        if bins.contains(&wanted) {
            return Ok((wanted.to_owned(), "--bin"));
        }
        bail!(
            "--bin {wanted}: package {} has no such binary (its binaries: {list})",
            pkg.name
        );
    }
    if let Some(default) = &pkg.default_run {
        return Ok((default.clone(), "default-run"));
    }
    match bins.as_slice() {
        [only] => Ok(((*only).to_owned(), "the only binary")),
        [] => bail!(
            "no command to run, and package {} has no binary to run: put the server command after `--`",
            pkg.name
        ),
        _ => bail!(
            "no command to run, and package {} has several binaries: pass --bin NAME (one of: {list}), \
             or set `default-run` in its Cargo.toml",
            pkg.name
        ),
    }
}

fn bins(pkg: &Package) -> Vec<&str> {
    pkg.targets
        .iter()
        .filter(|t| t.kind.contains(&TargetKind::Bin))
        .map(|t| t.name.as_str())
        .collect()
}

/// The build step: cargo's JSON messages on stdout, its diagnostics
/// rendered on stderr as without devsup.
fn build_command(package: &str, bin: &str) -> String {
    let quote = |s: &str| shlex::try_quote(s).map_or_else(|_| s.to_owned(), |q| q.into_owned());
    format!(
        "cargo build --message-format=json-render-diagnostics --package {} --bin {}",
        quote(package),
        quote(bin)
    )
}

/// cargo's errors run over several lines; the first non-empty one says it.
fn one_line(e: &str) -> String {
    e.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("Error during execution"))
        .unwrap_or(e)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built() -> Built {
        Built {
            package: PackageId {
                repr: "path+file:///src/app#0.1.0".into(),
            },
            bin: "app".into(),
            path: Arc::default(),
        }
    }

    fn artifact(package: &str, name: &str, kind: &str, exe: &str) -> String {
        serde_json::json!({
            "reason": "compiler-artifact",
            "package_id": package,
            "manifest_path": "/src/app/Cargo.toml",
            "target": {"kind": [kind], "crate_types": [kind], "name": name,
                       "src_path": "/src/app/src/main.rs", "edition": "2021",
                       "doctest": false, "test": true, "doc": true},
            "profile": {"opt_level": "0", "debuginfo": 2, "debug_assertions": true,
                        "overflow_checks": true, "test": false},
            "features": [], "filenames": [exe], "executable": exe, "fresh": false
        })
        .to_string()
    }

    #[test]
    fn the_binary_path_comes_from_the_artifact_message() {
        let b = built();
        assert!(b.path().is_err(), "nothing built yet");
        let pkg = "path+file:///src/app#0.1.0";
        // A library of the same package, and another package's `app`.
        assert!(b.take_line(artifact(pkg, "app", "lib", "/t/debug/libapp.rlib").as_bytes()));
        assert!(
            b.take_line(artifact("path+file:///other#0.1.0", "app", "bin", "/x/app").as_bytes())
        );
        assert!(b.path().is_err());
        assert!(b.take_line(artifact(pkg, "app", "bin", "/custom/target/debug/app").as_bytes()));
        assert!(b.take_line(br#"{"reason":"build-finished","success":true}"#));
        assert_eq!(b.path().unwrap(), PathBuf::from("/custom/target/debug/app"));
        // Anything else on stdout is shown, not swallowed.
        assert!(!b.take_line(b"hello from a build script\n"));
        assert!(!b.take_line(b"{not json\n"));
    }

    #[test]
    fn the_build_command_quotes_names() {
        assert_eq!(
            build_command("app", "my server"),
            "cargo build --message-format=json-render-diagnostics --package app --bin 'my server'"
        );
    }
}
