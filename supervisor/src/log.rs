//! Log output: one line per step, to stderr, read by people and by tests.
//!
//! A line reads `devsup gen=2 ready in 34ms`: the generation first, then
//! the message, then any other fields. Warnings and errors say so after the
//! prefix. Colour only when stderr is a terminal and `NO_COLOR` is unset.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Sets up logging: `DEVSUP_LOG` if set, else info (warn with `-q`, debug
/// with `-v`).
pub(crate) fn init(quiet: bool, verbose: bool) {
    let default = if quiet {
        "warn"
    } else if verbose {
        "debug"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_env("DEVSUP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr)
        // A failed write must not be reported with `eprintln!`, which
        // panics when stderr is gone; `Stderr` never fails anyway.
        .log_internal_errors(false)
        .with_ansi(ansi)
        .event_format(Format { ansi })
        .init();
}

/// Set once a write to stderr failed for good (`EPIPE`: the reader of a
/// pipe is gone, as with `devsup … | head`; `EIO`: the terminal closed).
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

/// devsup's stderr, for the log: a write that fails is dropped, never an
/// error (a log line is not worth stopping a supervisor for), and after
/// `EPIPE` or `EIO` nothing more is written to the dead stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !STDERR_GONE.load(Ordering::Relaxed) {
            if let Err(e) = std::io::stderr().lock().write_all(buf) {
                if matches!(e.raw_os_error(), Some(libc::EPIPE | libc::EIO)) {
                    STDERR_GONE.store(true, Ordering::Relaxed);
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl MakeWriter<'_> for Stderr {
    type Writer = Stderr;

    fn make_writer(&self) -> Stderr {
        Stderr
    }
}

struct Format {
    ansi: bool,
}

#[derive(Default)]
struct Fields {
    generation: Option<String>,
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        use fmt::Write;
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "generation" => self.generation = Some(format!("{value:?}")),
            // A `log` crate record (notify's, through tracing-log) carries
            // its target, module, file and line: noise on one log line.
            name if name.starts_with("log.") => {}
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.record_debug(field, &value);
        }
    }
}

impl<S, N> FormatEvent<S, N> for Format
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let (label, colour) = match *event.metadata().level() {
            Level::ERROR => (" error:", "\x1b[1;31m"),
            Level::WARN => (" warning:", "\x1b[1;33m"),
            Level::INFO => ("", ""),
            Level::DEBUG | Level::TRACE => (" debug:", "\x1b[2m"),
        };
        if self.ansi {
            write!(w, "\x1b[1;36mdevsup\x1b[0m{colour}{label}\x1b[0m")?;
        } else {
            write!(w, "devsup{label}")?;
        }
        if let Some(g) = &fields.generation {
            if self.ansi {
                write!(w, " \x1b[1mgen={g}\x1b[0m")?;
            } else {
                write!(w, " gen={g}")?;
            }
        }
        writeln!(w, " {}{}", fields.message, fields.rest)
    }
}

/// Formats a duration for the log: `34ms`, `1.2s`.
pub(crate) fn ms(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A latency for the log: microseconds while they matter, else like [`ms`].
pub(crate) fn latency(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{}us", d.as_micros())
    } else {
        ms(d)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// One line, formatted as devsup formats it.
    fn format(emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .event_format(Format { ansi: false })
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_put_the_generation_first_and_drop_log_crate_fields() {
        assert_eq!(
            format(|| tracing::warn!(generation = 2, pid = 7, "not ready")),
            "devsup warning: gen=2 not ready pid=7\n"
        );
        // What tracing-log makes of a `log` record (notify's).
        assert_eq!(
            format(|| tracing::info!(
                log.target = "notify::inotify",
                log.module_path = "notify::inotify",
                log.file = "/root/.cargo/registry/src/notify/src/inotify.rs",
                log.line = 42,
                "inotify event"
            )),
            "devsup inotify event\n"
        );
    }
}
