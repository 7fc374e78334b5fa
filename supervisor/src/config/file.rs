//! `devsup.toml`, or `[package.metadata.devsup]` in Cargo.toml: the same
//! options as the command line, so a project can commit its dev setup.
//!
//! Keys are the long option names (`drain-timeout = "5s"`,
//! `build = ["cargo build"]`, `command = ["./target/debug/server"]`, or
//! `command = "cargo run"`, split into words as a shell would). An
//! option given on the command line wins over the file. An unknown key is
//! an error that names it.
//!
//! Longer than most modules: half of it is the unit tests of the file
//! format.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::{DEFAULT_LIVERELOAD, Options};
use crate::{duration, signal, sockets};

/// One string or a list of them.
#[derive(Debug, Clone)]
pub(crate) enum Many {
    /// `build = "cargo build"`
    One(String),
    /// `build = ["cargo build", "cargo test --lib"]`
    List(Vec<String>),
}

impl Many {
    fn into_vec(self) -> Vec<String> {
        match self {
            Many::One(s) => vec![s],
            Many::List(v) => v,
        }
    }
}

/// `livereload = true` (the default address), `false`, or
/// `livereload = "ADDR"`.
#[derive(Debug, Clone)]
pub(crate) enum OnOrAddr {
    /// `livereload = true`
    On(bool),
    /// `livereload = "127.0.0.1:35729"`
    Addr(String),
}

// Written out rather than `serde(untagged)`, whose error names neither
// the type wanted nor what was found.
impl<'de> Deserialize<'de> for Many {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Many;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Many, E> {
                Ok(Many::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Many, A::Error> {
                let mut list = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    list.push(item);
                }
                Ok(Many::List(list))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for OnOrAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = OnOrAddr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or an address such as \"127.0.0.1:35729\"")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<OnOrAddr, E> {
                Ok(OnOrAddr::On(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OnOrAddr, E> {
                Ok(OnOrAddr::Addr(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The options a config file may hold; every one is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[allow(missing_docs)]
pub(crate) struct FileConfig {
    pub(crate) port: Option<u16>,
    pub(crate) socket: Option<Many>,
    pub(crate) backlog: Option<i32>,
    pub(crate) listen_pid: Option<bool>,
    pub(crate) nonblocking: Option<bool>,
    pub(crate) build: Option<Many>,
    pub(crate) bin: Option<String>,
    pub(crate) package: Option<String>,
    pub(crate) watch: Option<Many>,
    pub(crate) no_watch: Option<bool>,
    pub(crate) poll: Option<String>,
    pub(crate) debounce: Option<String>,
    pub(crate) ignore: Option<Many>,
    pub(crate) ext: Option<Many>,
    pub(crate) signal_on: Option<Many>,
    pub(crate) no_reload_on: Option<Many>,
    pub(crate) ready_timeout: Option<String>,
    pub(crate) ready_after: Option<String>,
    pub(crate) ready: Option<String>,
    pub(crate) drain_signal: Option<String>,
    pub(crate) drain_timeout: Option<String>,
    pub(crate) prefix: Option<bool>,
    pub(crate) events: Option<String>,
    pub(crate) livereload: Option<OnOrAddr>,
    pub(crate) editor_url: Option<String>,
    pub(crate) command: Option<Many>,
}

/// Finds and reads the config: `explicit`, else `devsup.toml` in `dir`,
/// else `[package.metadata.devsup]` in `dir/Cargo.toml`.
pub(crate) fn load(
    dir: &Path,
    explicit: Option<&Path>,
) -> anyhow::Result<Option<(PathBuf, FileConfig)>> {
    if let Some(path) = explicit {
        return Ok(Some((path.to_owned(), read_file(path)?)));
    }
    let file = dir.join("devsup.toml");
    if file.exists() {
        return Ok(Some((file.clone(), read_file(&file)?)));
    }
    let cargo = dir.join("Cargo.toml");
    let Ok(text) = std::fs::read_to_string(&cargo) else {
        return Ok(None);
    };
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", cargo.display()))?;
    let section = table
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("devsup"))
        .cloned();
    match section {
        None => Ok(None),
        Some(toml::Value::Table(table)) => {
            let what = format!("{} [package.metadata.devsup]", cargo.display());
            Ok(Some((cargo, from_table(table, &what)?)))
        }
        Some(_) => anyhow::bail!(
            "{}: [package.metadata.devsup] must be a table of options",
            cargo.display()
        ),
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), one_line(&e.to_string())))?;
    from_table(table, &path.display().to_string())
}

/// The options of `table`, from `what` (the file); an error names the key
/// whose value is wrong, and the type it wants.
fn from_table(table: toml::Table, what: &str) -> anyhow::Result<FileConfig> {
    // Each key alone first: serde's error for the whole table does not say
    // which key it is about.
    for (key, value) in &table {
        let one = toml::Table::from_iter([(key.clone(), value.clone())]);
        if let Err(e) = FileConfig::deserialize(toml::Value::Table(one)) {
            anyhow::bail!("{what}: {key}: {}", one_line(&e.to_string()));
        }
    }
    FileConfig::deserialize(toml::Value::Table(table))
        .map_err(|e| anyhow::anyhow!("{what}: {}", one_line(&e.to_string())))
}

/// toml's errors span several lines (a snippet of the file); the first
/// and the last say what is wrong.
fn one_line(e: &str) -> String {
    let lines: Vec<&str> = e.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    match (lines.first(), lines.last()) {
        (Some(first), Some(last)) if first != last => format!("{first} {last}"),
        (Some(first), _) => (*first).to_owned(),
        _ => e.to_owned(),
    }
}

impl FileConfig {
    /// The file's layer of options, each value checked; an error names
    /// `file` and the key.
    pub(crate) fn options(self, file: &Path) -> anyhow::Result<Options> {
        let bad = |key: &str, e: String| anyhow::anyhow!("{}: {key}: {e}", file.display());
        // Parses `value` of `key` with `parse`, if the file gives it.
        fn each<T>(
            value: Option<String>,
            parse: impl Fn(&str) -> Result<T, String>,
            bad: impl Fn(String) -> anyhow::Error,
        ) -> anyhow::Result<Option<T>> {
            value.map(|v| parse(&v).map_err(bad)).transpose()
        }
        let dur = |key: &'static str, v| each(v, duration::parse, |e| bad(key, e));
        let list = |v: Option<Many>| v.map(Many::into_vec);
        if self.backlog.is_some_and(|v| v < 1) {
            return Err(bad("backlog", "must be at least 1".into()));
        }
        Ok(Options {
            port: self.port,
            sockets: list(self.socket)
                .map(|v| {
                    v.iter()
                        .map(|s| s.parse().map_err(|e| bad("socket", e)))
                        .collect()
                })
                .transpose()?,
            backlog: self.backlog,
            listen_pid: self.listen_pid,
            nonblocking: self.nonblocking,
            builds: list(self.build),
            bin: self.bin,
            package: self.package,
            watch: list(self.watch).map(|v| v.into_iter().map(PathBuf::from).collect()),
            no_watch: self.no_watch,
            poll: each(self.poll, duration::parse_poll, |e| bad("poll", e))?,
            debounce: dur("debounce", self.debounce)?,
            ignore: list(self.ignore),
            exts: list(self.ext).map(|v| {
                v.iter()
                    .flat_map(|e| e.split(','))
                    .map(str::to_owned)
                    .collect()
            }),
            signal_on: list(self.signal_on)
                .map(|v| {
                    v.iter()
                        .map(|s| signal::parse_on(s).map_err(|e| bad("signal-on", e)))
                        .collect()
                })
                .transpose()?,
            no_reload_on: list(self.no_reload_on),
            ready_timeout: dur("ready-timeout", self.ready_timeout)?,
            ready_after: dur("ready-after", self.ready_after)?,
            ready: each(self.ready, str::parse, |e| bad("ready", e))?,
            drain_signal: each(self.drain_signal, signal::parse, |e| bad("drain-signal", e))?,
            drain_timeout: dur("drain-timeout", self.drain_timeout)?,
            prefix: self.prefix,
            events: each(self.events, str::parse, |e| bad("events", e))?,
            livereload: self
                .livereload
                .map(|v| livereload(v).map_err(|e| bad("livereload", e)))
                .transpose()?,
            editor_url: self.editor_url,
            command: self
                .command
                .map(command_words)
                .transpose()?
                .map(|words| words.into_iter().map(Into::into).collect()),
        })
    }
}

/// `livereload = true` is the default address, `false` none.
fn livereload(v: OnOrAddr) -> Result<Option<std::net::SocketAddr>, String> {
    match v {
        OnOrAddr::On(false) => Ok(None),
        OnOrAddr::On(true) => sockets::parse_tcp(DEFAULT_LIVERELOAD).map(Some),
        OnOrAddr::Addr(addr) => sockets::parse_tcp(&addr).map(Some),
    }
}

/// `command = ["cargo", "run"]` as given; `command = "cargo run"` split
/// into words as a shell would (quotes, backslashes; no expansion).
fn command_words(command: Many) -> anyhow::Result<Vec<String>> {
    match command {
        Many::List(words) => Ok(words),
        Many::One(line) => shlex::split(&line).ok_or_else(|| {
            anyhow::anyhow!(
                "command = {line:?} is not a valid command line (an unclosed quote?): \
                 give it as a list of words, e.g. command = [\"cargo\", \"run\"]"
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::signal::Signal;

    use std::collections::BTreeSet;

    use clap::CommandFactory;
    use serde::Deserialize;

    use super::FileConfig;
    use crate::cli::Cli;
    use crate::config::Config;

    /// Runs the command line `args` in a directory holding `file` with
    /// `text`, as `main` does.
    fn run(args: &[&str], file: &str, text: &str) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file), text).unwrap();
        let args = std::iter::once("devsup")
            .chain(args.iter().copied())
            .map(Into::into);
        let cli = crate::cli::try_parse(args)?;
        let file = cli.config.clone();
        Config::load(cli.options(), file.as_deref(), dir.path())
    }

    const FILE: &str = r#"
        port = 9000
        build = "cargo build"
        drain-timeout = "3s"
        drain-signal = "INT"
        ready = "listen"
        nonblocking = true
        ext = ["rs", "toml"]
        signal-on = "templates/**=USR1"
        command = ["./target/debug/server", "--flag"]
    "#;

    #[test]
    fn the_file_supplies_options() {
        let c = run(&[], "devsup.toml", FILE).unwrap();
        assert_eq!(c.sockets[0].addr.to_string(), "127.0.0.1:9000");
        assert_eq!(c.builds, ["cargo build"]);
        assert_eq!(c.drain_timeout, Duration::from_secs(3));
        assert_eq!(c.drain_signal, Signal::SIGINT);
        assert_eq!(c.ready, crate::machine::ReadyRule::Listen);
        assert!(c.nonblocking);
        assert_eq!(c.program.argv(), ["./target/debug/server", "--flag"]);
        let w = c.watch.unwrap();
        assert_eq!(w.exts, ["rs", "toml"]);
        assert_eq!(w.signal_on, [("templates/**".to_owned(), Signal::SIGUSR1)]);
    }

    #[test]
    fn the_command_line_wins() {
        let c = run(
            &[
                "--port",
                "9100",
                "--drain-timeout",
                "1s",
                "-b",
                "make",
                "--",
                "other",
            ],
            "devsup.toml",
            FILE,
        )
        .unwrap();
        assert_eq!(c.sockets[0].addr.to_string(), "127.0.0.1:9100");
        assert_eq!(c.drain_timeout, Duration::from_secs(1));
        assert_eq!(c.builds, ["make"]);
        assert_eq!(c.program.argv(), ["other"]);
        // Options not given on the command line still come from the file.
        assert_eq!(c.drain_signal, Signal::SIGINT);
    }

    #[test]
    fn a_command_given_as_one_string_is_split_into_words() {
        let argv = |command: &str| {
            let file = format!("port = 1\ncommand = {command}\n");
            run(&[], "devsup.toml", &file).map(|c| c.program.argv().to_vec())
        };
        assert_eq!(argv(r#""cargo run""#).unwrap(), ["cargo", "run"]);
        assert_eq!(
            argv(r#""sh -c 'exec server --flag' ""#).unwrap(),
            ["sh", "-c", "exec server --flag"]
        );
        // A list is taken word for word.
        assert_eq!(argv(r#"["a b", "c"]"#).unwrap(), ["a b", "c"]);
        let e = argv(r#""sh -c 'unclosed""#).unwrap_err();
        assert!(format!("{e:#}").contains("as a list of words"), "{e:#}");
    }

    #[test]
    fn where_to_listen_and_what_to_watch_are_replaced_whole() {
        let file =
            "port = 9000\nsocket = \"admin=unix::/tmp/a.sock\"\nno-watch = true\ncommand = \"x\"\n";
        let c = run(&["-s", "tcp::9100", "-w", "src"], "devsup.toml", file).unwrap();
        assert_eq!(
            c.sockets.len(),
            1,
            "the file's port and socket are both replaced"
        );
        assert_eq!(c.sockets[0].addr.to_string(), "127.0.0.1:9100");
        assert!(
            c.watch.is_some(),
            "-w on the command line beats no-watch in the file"
        );
    }

    #[test]
    fn cargo_metadata_is_read() {
        let toml = "[package]\nname = \"app\"\n[package.metadata.devsup]\nport = 7000\ncommand = \"./app\"\n";
        let c = run(&[], "Cargo.toml", toml).unwrap();
        assert_eq!(c.sockets[0].addr.to_string(), "127.0.0.1:7000");
        assert_eq!(c.program.argv(), ["./app"]);
    }

    #[test]
    fn events_come_from_the_file_too() {
        let c = run(
            &[],
            "devsup.toml",
            "port = 1\nevents = \"unix::ev.sock\"\ncommand = \"x\"\n",
        )
        .unwrap();
        assert_eq!(
            c.events,
            Some(crate::report::Target::Socket("ev.sock".into()))
        );
        let c = run(
            &["--events", "-"],
            "devsup.toml",
            "port = 1\nevents = \"e.json\"\ncommand = \"x\"\n",
        )
        .unwrap();
        assert_eq!(c.events, Some(crate::report::Target::Stdout));
        let e = run(
            &[],
            "devsup.toml",
            "port = 1\nevents = \"unix::\"\ncommand = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("events") && e.contains("unix::PATH"), "{e}");
    }

    #[test]
    fn livereload_is_a_switch_or_an_address() {
        let with = |value: &str| {
            run(
                &[],
                "devsup.toml",
                &format!("port = 1\nlivereload = {value}\ncommand = \"x\"\n"),
            )
            .map(|c| c.livereload.map(|a| a.to_string()))
            .map_err(|e| e.to_string())
        };
        assert_eq!(with("true"), Ok(Some("127.0.0.1:35729".into())));
        assert_eq!(with("false"), Ok(None));
        assert_eq!(with("\"127.0.0.1:0\""), Ok(Some("127.0.0.1:0".into())));
        let e = with("\"nope\"").unwrap_err();
        assert!(e.contains("livereload"), "{e}");
        // The command line wins.
        let c = run(
            &["--livereload=127.0.0.1:9"],
            "devsup.toml",
            "port = 1\nlivereload = false\ncommand = \"x\"\n",
        )
        .unwrap();
        assert_eq!(c.livereload, Some("127.0.0.1:9".parse().unwrap()));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = run(&[], "devsup.toml", "prot = 8080\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("devsup.toml") && e.contains("unknown field `prot`"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
        let e = run(
            &[],
            "Cargo.toml",
            "[package.metadata.devsup]\nbuidl = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `buidl`"), "{e}");
    }

    /// A value of the wrong type named neither its key nor the type
    /// wanted ("data did not match any variant of untagged enum Many").
    #[test]
    fn a_value_of_the_wrong_type_names_its_key_and_the_type_wanted() {
        for (text, key, wanted) in [
            (
                "port = 1\ncommand = 5\n",
                "command",
                "a string or a list of strings",
            ),
            (
                "port = 1\nbuild = [1, 2]\ncommand = \"x\"\n",
                "build",
                "a string",
            ),
            (
                "port = 1\nwatch = true\ncommand = \"x\"\n",
                "watch",
                "a string or a list of strings",
            ),
            ("port = \"x\"\ncommand = \"x\"\n", "port", "u16"),
            (
                "port = 1\nlivereload = 3\ncommand = \"x\"\n",
                "livereload",
                "true, false or an address",
            ),
        ] {
            for (file, text) in [
                ("devsup.toml", text.to_owned()),
                ("Cargo.toml", format!("[package.metadata.devsup]\n{text}")),
            ] {
                let e = run(&[], file, &text).unwrap_err().to_string();
                assert!(
                    e.contains(file) && e.contains(&format!(": {key}: ")) && e.contains(wanted),
                    "{file} {text:?}: {e}"
                );
                assert!(!e.contains("untagged") && !e.contains('\n'), "{e}");
            }
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = run(&["--", "x"], "devsup.toml", "drain-timeout = \"10x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("drain-timeout") && e.contains("not a duration"),
            "{e}"
        );
    }

    #[test]
    fn out_of_range_durations_name_their_key_and_the_limit() {
        for (line, key, limit) in [
            (
                "drain-timeout = \"1e20s\"",
                "drain-timeout",
                "at most 1 day",
            ),
            (
                "ready-timeout = \"1e19s\"",
                "ready-timeout",
                "at most 1 day",
            ),
            ("ready-after = \"1e19s\"", "ready-after", "at most 1 day"),
            ("debounce = \"1e19s\"", "debounce", "at most 1 day"),
            ("poll = \"0\"", "poll", "too short"),
        ] {
            let e = run(&["--", "x"], "devsup.toml", &format!("{line}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains(limit), "{line}: {e}");
        }
    }

    /// Command-line options with no devsup.toml key, and why.
    const CLI_ONLY: &[&str] = &[
        // Names the file itself.
        "config",
        // How much one run prints, chosen per run; logging is set up before
        // the file is read.
        "quiet", "verbose",
    ];

    /// The long names of every command-line option (the id for the
    /// positional `command`), from clap's own definition.
    fn cli_keys() -> BTreeSet<String> {
        Cli::command()
            .get_arguments()
            .map(|a| match a.get_long() {
                Some(long) => long.to_owned(),
                None => a.get_id().to_string(),
            })
            .filter(|k| !CLI_ONLY.contains(&k.as_str()))
            .collect()
    }

    /// The keys [`FileConfig`] accepts, as serde sees them (after
    /// `rename_all`): a deserializer that only records the field list serde
    /// asks it for.
    fn file_keys() -> BTreeSet<String> {
        struct Fields(Option<&'static [&'static str]>);
        impl<'de> serde::Deserializer<'de> for &mut Fields {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(
                self,
                _: V,
            ) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("only structs"))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0 = Some(fields);
                Err(serde::de::Error::custom("fields recorded"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        let mut fields = Fields(None);
        let _ = FileConfig::deserialize(&mut fields);
        let fields = fields.0.expect("FileConfig deserializes as a struct");
        fields.iter().map(|f| (*f).to_owned()).collect()
    }

    #[test]
    fn every_option_has_its_file_key_and_back() {
        let cli = cli_keys();
        let file = file_keys();
        assert!(cli.contains("drain-timeout") && cli.contains("command"));
        assert!(file.contains("drain-timeout") && file.contains("command"));
        let no_key: Vec<_> = cli.difference(&file).collect();
        let no_option: Vec<_> = file.difference(&cli).collect();
        assert!(
            no_key.is_empty(),
            "options with no devsup.toml key (add one to FileConfig and FileConfig::options, or to CLI_ONLY with a reason): {no_key:?}"
        );
        assert!(
            no_option.is_empty(),
            "devsup.toml keys with no command-line option: {no_option:?}"
        );
    }
}
