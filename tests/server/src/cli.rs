//! Command-line options of the reference server.

use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

/// The devsup reference server: serves a few test endpoints on the socket
/// devsup passes it (or on 127.0.0.1:PORT on its own), says READY, and
/// drains on SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "devsup-server", version)]
pub struct Args {
    /// Port on 127.0.0.1 to bind when no socket is passed in LISTEN_FDS.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// Wait this long (ms) after taking the listener before sending READY.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub startup_delay: u64,

    /// In these generations, exit with status 1 before sending READY.
    #[arg(long, value_name = "GENS", default_value = "")]
    pub fail_before_ready: Gens,

    /// In these generations, serve but never send READY.
    #[arg(long, value_name = "GENS", default_value = "")]
    pub never_ready: Gens,

    /// In these generations, ignore SIGTERM and keep serving (SIGINT still
    /// drains).
    #[arg(long, value_name = "GENS", default_value = "")]
    pub ignore_drain: Gens,

    /// During a drain, close a connection once it has been idle this long (ms).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub drain_grace: u64,

    /// Drop the connections still open this long (ms) after a drain starts.
    #[arg(long, value_name = "MS", default_value_t = 8000)]
    pub drain_deadline: u64,

    /// End event streams and close WebSockets this long (ms) after a drain
    /// starts.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub long_lived_grace: u64,
}

impl Args {
    pub fn startup_delay(&self) -> Duration {
        Duration::from_millis(self.startup_delay)
    }

    pub fn drain(&self) -> devsup_serve::Drain {
        devsup_serve::Drain::default()
            .with_idle_grace(Duration::from_millis(self.drain_grace))
            .with_deadline(Duration::from_millis(self.drain_deadline))
            .with_long_lived_grace(Duration::from_millis(self.long_lived_grace))
    }
}

/// A set of generation numbers: a comma list such as `1,3`, or `all`.
/// Generation 0 means "not run under devsup".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gens {
    All,
    Some(Vec<u64>),
}

impl Gens {
    pub fn contains(&self, generation: u64) -> bool {
        match self {
            Gens::All => true,
            Gens::Some(gens) => gens.contains(&generation),
        }
    }
}

impl FromStr for Gens {
    type Err = String;

    fn from_str(s: &str) -> Result<Gens, String> {
        if s.trim() == "all" {
            return Ok(Gens::All);
        }
        s.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                part.parse()
                    .map_err(|_| format!("{part:?} is not a generation number (or `all`)"))
            })
            .collect::<Result<_, _>>()
            .map(Gens::Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gens_parse_lists_and_all() {
        assert_eq!("all".parse(), Ok(Gens::All));
        assert_eq!("2, 4,".parse(), Ok(Gens::Some(vec![2, 4])));
        assert_eq!("".parse(), Ok(Gens::Some(vec![])));
        assert!("two".parse::<Gens>().is_err());
        assert!("-1".parse::<Gens>().is_err());
        let gens: Gens = "0,3".parse().unwrap();
        assert!(gens.contains(0) && gens.contains(3) && !gens.contains(1));
        assert!(Gens::All.contains(7));
    }

    #[test]
    fn args_parse() {
        let args = Args::try_parse_from([
            "devsup-server",
            "--port",
            "9000",
            "--fail-before-ready",
            "2",
            "--ignore-drain",
            "all",
            "--drain-grace",
            "100",
        ])
        .unwrap();
        assert_eq!(args.port, 9000);
        assert!(args.fail_before_ready.contains(2));
        assert!(!args.never_ready.contains(0));
        assert!(args.ignore_drain.contains(5));
        assert_eq!(args.drain().idle_grace, Duration::from_millis(100));
        assert_eq!(args.drain().deadline, Duration::from_secs(8));
    }
}
