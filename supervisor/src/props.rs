//! Property tests: the parsers of what a user types never panic, whatever
//! the input, and what they accept is within bounds. Socket specs,
//! durations (`--poll` too) and devsup.toml; the sd_notify message parser
//! has its own in devsup-protocol.

use std::time::Duration;

use proptest::prelude::*;

use crate::config::{Config, FileConfig};
use crate::duration::{MAX as MAX_DURATION, MIN_POLL, parse as parse_duration, parse_poll};
use crate::sockets::{Addr, SocketSpec};

/// Strings shaped like durations, so that number and unit parsing is
/// reached: huge, negative, fractional, exponents, every unit.
fn duration_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,25}(\\.[0-9]{0,10})?([eE][+-]?[0-9]{1,4})?(ns|us|ms|s|m|min|h|d|w|M|y|)",
        "-?[0-9.]{1,6}(s|ms) [0-9]{1,20}(s|m|h|d)",
        any::<String>(),
    ]
}

/// Strings shaped like socket specs.
fn spec_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "([a-z:=]{0,4}=)?(tcp|unix|udp)?(::?)([0-9a-f:.\\[\\]%]{0,24})",
        "tcp::(\\[[0-9a-f:]{0,12}\\]|[0-9.]{0,16}|[a-z]{0,6}):[0-9]{0,7}",
        any::<String>(),
    ]
}

/// devsup.toml lines: every key, with values of each TOML type.
fn toml_like() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("port"),
        Just("socket"),
        Just("backlog"),
        Just("listen-pid"),
        Just("build"),
        Just("watch"),
        Just("no-watch"),
        Just("poll"),
        Just("debounce"),
        Just("ignore"),
        Just("ext"),
        Just("signal-on"),
        Just("no-reload-on"),
        Just("ready-timeout"),
        Just("ready-after"),
        Just("drain-signal"),
        Just("drain-timeout"),
        Just("prefix"),
        Just("command"),
        Just("nope"),
    ];
    let value = prop_oneof![
        duration_like().prop_map(|s| format!("{s:?}")),
        spec_like().prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[A-Za-z0-9*=/_]{0,12}".prop_map(|s| format!("[{s:?}, \"x\"]")),
        any::<String>(),
    ];
    proptest::collection::vec((key, value), 0..6).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect()
    })
}

/// Reads `text` as devsup.toml and merges it into an empty command line,
/// as devsup does; the error, if any, must be one line.
fn load_toml(text: &str) -> Result<Config, String> {
    let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    let options = file
        .options(std::path::Path::new("devsup.toml"))
        .map_err(|e| format!("{e:#}"))?;
    Config::from_options(options).map_err(|e| format!("{e:#}"))
}

proptest! {
    #[test]
    fn durations_never_panic_and_stay_in_bounds(s in duration_like()) {
        if let Ok(d) = parse_duration(&s) {
            prop_assert!(d <= MAX_DURATION, "{s:?} -> {d:?}");
        }
        if let Ok(d) = parse_poll(&s) {
            prop_assert!((MIN_POLL..=MAX_DURATION).contains(&d), "{s:?} -> {d:?}");
        }
    }

    #[test]
    fn whole_seconds_up_to_a_day_parse_exactly(n in 0u64..=86_400, ms in 0u64..1000) {
        prop_assert_eq!(parse_duration(&format!("{n}s")), Ok(Duration::from_secs(n)));
        let fractional = Duration::from_millis(n * 1000 + ms);
        if fractional <= MAX_DURATION {
            prop_assert_eq!(parse_duration(&format!("{n}.{ms:03}s")), Ok(fractional));
        }
    }

    #[test]
    fn socket_specs_never_panic(s in spec_like()) {
        if let Ok(spec) = s.parse::<SocketSpec>() {
            match &spec.addr {
                Addr::Tcp(_) => prop_assert!(s.contains("tcp::")),
                Addr::Unix(path) => prop_assert!(!path.as_os_str().is_empty()),
            }
            if let Some(name) = &spec.name {
                prop_assert!(!name.is_empty() && !name.contains(':'));
            }
        }
    }

    #[test]
    fn devsup_toml_never_panics(text in toml_like()) {
        let _ = load_toml(&text);
    }

    #[test]
    fn devsup_toml_of_arbitrary_text_never_panics(text in any::<String>()) {
        let _ = load_toml(&text);
    }
}
