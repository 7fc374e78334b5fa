//! Signals as options take them: by name (`TERM`, `SIGTERM`, `usr1`) or
//! number, and `GLOB=SIGNAL` for `--signal-on`. nix's `Signal` is not
//! devsup's type, so the parsers are functions rather than `FromStr`. This
//! module sits at the bottom: it imports nothing from the crate.
//!
//! [`Signal`] is nix's on Unix. Windows has no signals between processes:
//! there it is a plain enum of the same names, so that options, the state
//! machine and the log keep one type; the Windows executor carries out the
//! drain signal as `CTRL_BREAK_EVENT` and `SIGKILL` as `TerminateJobObject`
//! (`platform/windows/`).

#[cfg(unix)]
pub(crate) use nix::sys::signal::Signal;
#[cfg(not(unix))]
pub(crate) use portable::Signal;

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

/// The signals by their Linux names and numbers, where nix has none.
#[cfg(not(unix))]
mod portable {
    macro_rules! signals {
        ($($name:ident = $n:literal),* $(,)?) => {
            /// A POSIX signal, by name: what devsup's options and steps say.
            #[allow(clippy::upper_case_acronyms, reason = "the signals' own names, as nix spells them")]
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
            #[repr(i32)]
            pub(crate) enum Signal { $($name = $n),* }

            impl Signal {
                const ALL: &[(Signal, i32, &str)] = &[$((Signal::$name, $n, stringify!($name))),*];

                /// The name, `SIGTERM`.
                pub(crate) fn as_str(self) -> &'static str {
                    Self::ALL.iter().find(|(s, ..)| *s == self).map_or("", |(.., name)| name)
                }
            }
        };
    }
    signals! {
        SIGHUP = 1, SIGINT = 2, SIGQUIT = 3, SIGILL = 4, SIGTRAP = 5, SIGABRT = 6,
        SIGBUS = 7, SIGFPE = 8, SIGKILL = 9, SIGUSR1 = 10, SIGSEGV = 11, SIGUSR2 = 12,
        SIGPIPE = 13, SIGALRM = 14, SIGTERM = 15, SIGCHLD = 17, SIGCONT = 18,
        SIGSTOP = 19, SIGTSTP = 20, SIGTTIN = 21, SIGTTOU = 22, SIGWINCH = 28,
    }

    impl std::fmt::Display for Signal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.as_str())
        }
    }

    impl TryFrom<i32> for Signal {
        type Error = ();
        fn try_from(n: i32) -> Result<Signal, ()> {
            Self::ALL
                .iter()
                .find(|(_, m, _)| *m == n)
                .map(|(s, ..)| *s)
                .ok_or(())
        }
    }

    impl std::str::FromStr for Signal {
        type Err = ();
        fn from_str(name: &str) -> Result<Signal, ()> {
            Self::ALL
                .iter()
                .find(|(.., m)| *m == name)
                .map(|(s, ..)| *s)
                .ok_or(())
        }
    }
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
