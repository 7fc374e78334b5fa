//! Signals as options take them: by name (`TERM`, `SIGTERM`, `usr1`) or
//! number, and `GLOB=SIGNAL` for `--signal-on`. nix's `Signal` is not
//! devsup's type, so the parsers are functions rather than `FromStr`. This
//! module sits at the bottom: it imports nothing from the crate.

use nix::sys::signal::Signal;

/// Parses `GLOB=SIGNAL` for `--signal-on`.
pub(crate) fn parse_on(s: &str) -> Result<(String, Signal), String> {
    let (glob, sig) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?} is not GLOB=SIGNAL, e.g. 'templates/**=USR1'"))?;
    globset::Glob::new(glob).map_err(|e| format!("bad glob {glob:?}: {e}"))?;
    Ok((glob.to_owned(), parse(sig)?))
}

/// Parses a signal by name (`TERM`, `SIGTERM`, `usr1`) or number.
pub(crate) fn parse(s: &str) -> Result<Signal, String> {
    let err = || format!("{s:?} is not a signal: use a name such as TERM, INT, QUIT, USR1 or HUP");
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| err());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse("SIGUSR1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse("int").unwrap(), Signal::SIGINT);
        assert_eq!(parse("9").unwrap(), Signal::SIGKILL);
        assert!(parse("FOO").unwrap_err().contains("not a signal"));
    }
}
