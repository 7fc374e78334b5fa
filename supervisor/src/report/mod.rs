//! The fan-out: every [`Step`] devsup takes goes to every subscriber.
//!
//! The executor calls [`Reporter::step`] for each step: the ones the state
//! machine returns as `Action::Report`, and its own. Subscribers are
//! called in order, on the loop's thread, with an [`Arc<Record>`]: the
//! `--events` writers and socket clients ([`events`]), the status behind
//! `devsup status` ([`status`]), the systemd notifier ([`systemd`]) and
//! the browser live reload (`crate::livereload`). A subscriber must not
//! block: one that does work elsewhere sends to a thread of its own (as
//! the systemd notifier and the event writers do).
//!
//! Every JSON object carries the schema version `v`, a UTC timestamp `ts`
//! and the generation `gen` it is about (or `null`), then the step's own
//! fields (see [`crate::step`] and `docs/events.md`).

use std::fmt;
#[cfg(unix)]
use std::os::fd::OwnedFd;
#[cfg(test)]
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

use crate::event::GenId;
use crate::step::Step;

pub(crate) mod events;
pub(crate) mod log;
#[cfg(unix)]
pub(crate) mod status;
#[cfg(unix)]
pub(crate) mod systemd;
mod target;
pub(crate) use target::Target;

/// The version of the wire schema; raised on any incompatible change.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// The outputs every step goes to besides the log, set up at start-up:
/// `--events`, the status socket and, under systemd, the notifier. Keep it
/// alive while devsup runs: dropping it removes the socket files.
#[cfg(unix)]
pub(crate) fn start(
    events: Option<&events::Target>,
    events_stdout: Option<OwnedFd>,
    reporter: &Reporter,
) -> anyhow::Result<events::Events> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let status = status::default_socket(&cwd);
    let outputs = events::setup(events, events_stdout, Some(&status), reporter)?;
    systemd::notify_from_env(reporter)?;
    Ok(outputs)
}

/// A time as RFC 3339 in UTC with microseconds, the form of `ts`.
pub(crate) fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// A step and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    /// When.
    pub(crate) at: SystemTime,
    /// What.
    pub(crate) step: Step,
}

#[derive(Serialize)]
struct Wire<'a, B: Serialize> {
    v: u32,
    ts: String,
    #[serde(rename = "gen")]
    generation: Option<GenId>,
    #[serde(flatten)]
    body: &'a B,
}

/// Writes one wire object: the common fields, then `body`'s.
fn wire_json(at: SystemTime, generation: Option<GenId>, body: &impl Serialize) -> String {
    let wire = Wire {
        v: SCHEMA_VERSION,
        ts: timestamp(at),
        generation,
        body,
    };
    // Only strings, numbers, booleans and lists of them: serializing
    // cannot fail; say so in the stream all the same rather than panic.
    serde_json::to_string(&wire).unwrap_or_else(|e| {
        format!(
            "{{\"v\":{SCHEMA_VERSION},\"event\":\"error\",\"error\":{:?}}}",
            e.to_string()
        )
    })
}

/// Objects of the stream that are not steps: the `status` each socket
/// client reads first.
#[cfg(unix)]
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Snapshot<'a> {
    Status(&'a status::Status),
}

/// The `status` object, now, as one line of JSON.
#[cfg(unix)]
pub(crate) fn status_json(status: &status::Status) -> String {
    wire_json(SystemTime::now(), status.active, &Snapshot::Status(status))
}

impl Record {
    /// A record of `step`, now.
    pub(crate) fn now(step: Step) -> Record {
        Record {
            at: SystemTime::now(),
            step,
        }
    }

    /// The record as one line of JSON, without the newline.
    pub(crate) fn to_json(&self) -> String {
        wire_json(self.at, self.step.generation(), &self.step)
    }
}

/// Something that receives every step.
pub(crate) trait Subscriber: Send {
    /// Called for each step, in order, on the supervisor's thread; must
    /// not block. Returns `false` to unsubscribe.
    fn on_step(&mut self, record: &Arc<Record>) -> bool;
}

impl<F: FnMut(&Arc<Record>) -> bool + Send> Subscriber for F {
    fn on_step(&mut self, record: &Arc<Record>) -> bool {
        self(record)
    }
}

#[derive(Default)]
struct Inner {
    subscribers: Vec<Box<dyn Subscriber>>,
}

/// The fan-out: cheap to clone, shared by everything that reports steps.
/// With no subscriber, reporting a step does nothing but build it.
#[derive(Clone, Default)]
pub(crate) struct Reporter {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.lock().subscribers.len();
        f.debug_struct("Reporter").field("subscribers", &n).finish()
    }
}

impl Reporter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a subscriber; it sees every step from now on.
    pub(crate) fn subscribe(&self, subscriber: impl Subscriber + 'static) {
        self.lock().subscribers.push(Box::new(subscriber));
    }

    /// A channel that receives every step from now on, for a subscriber
    /// that works on its own thread; dropping the receiver unsubscribes.
    #[cfg(test)]
    pub(crate) fn channel(&self) -> Receiver<Arc<Record>> {
        let (tx, rx) = mpsc::channel();
        self.subscribe(move |record: &Arc<Record>| tx.send(record.clone()).is_ok());
        rx
    }

    /// Whether anything subscribes.
    #[cfg(test)]
    pub(crate) fn is_active(&self) -> bool {
        !self.lock().subscribers.is_empty()
    }

    /// Reports one step: its log line, then every subscriber.
    pub(crate) fn report(&self, step: Step) {
        log::write(&step);
        self.step(step);
    }

    /// Publishes one step to every subscriber (its log line is written
    /// already: see [`Reporter::report`]).
    /// Steps that only the log shows ([`Step::on_wire`]) go no further.
    pub(crate) fn step(&self, step: Step) {
        let mut inner = self.lock();
        if inner.subscribers.is_empty() || !step.on_wire() {
            return;
        }
        let record = Arc::new(Record::now(step));
        inner.subscribers.retain_mut(|s| s.on_step(&record));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::{Exit, Trigger};
    use crate::step::{BuildStatus, Rule};

    #[test]
    fn records_carry_version_time_generation_and_kind() {
        let record = Record::now(Step::Ready {
            generation: 3,
            rule: Rule::Notify,
            how: None,
            ready_us: 1500,
        });
        let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["event"], "ready");
        assert_eq!(json["gen"], 3);
        assert_eq!(json["rule"], "notify");
        assert_eq!(json["ready_us"], 1500);
        assert!(json["ts"].as_str().unwrap().ends_with('Z'), "{json}");
        let fields: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), 6, "{fields:?}");
    }

    #[test]
    fn absent_fields_are_null_not_missing() {
        let json: serde_json::Value =
            serde_json::from_str(&Record::now(Step::trigger(&Trigger::Sighup, false)).to_json())
                .unwrap();
        assert!(json["gen"].is_null());
        assert!(json.as_object().unwrap().contains_key("path"));
        assert!(json["path"].is_null());
        assert_eq!(json["cause"], "sighup");
    }

    #[test]
    fn subscribers_get_every_step_in_order_and_can_leave() {
        let reporter = Reporter::default();
        let rx = reporter.channel();
        let mut left = 0;
        reporter.subscribe(move |_: &Arc<Record>| {
            left += 1;
            left < 2
        });
        reporter.step(Step::Stopped { code: 0, peak: 0 });
        reporter.step(Step::Stopped { code: 1, peak: 0 });
        reporter.step(Step::Stopped { code: 2, peak: 0 });
        assert_eq!(reporter.lock().subscribers.len(), 1);
        let codes: Vec<Step> = rx.try_iter().map(|r| r.step.clone()).collect();
        assert_eq!(
            codes,
            [0, 1, 2]
                .map(|code| Step::Stopped { code, peak: 0 })
                .to_vec()
        );
        drop(rx);
        reporter.step(Step::Stopped { code: 3, peak: 0 });
        assert!(!reporter.is_active());
    }

    #[cfg(unix)]
    #[test]
    fn the_status_object_has_the_common_fields_and_its_kind() {
        let mut status = status::Status::new();
        status.active = Some(2);
        let json: serde_json::Value = serde_json::from_str(&status_json(&status)).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["event"], "status");
        assert_eq!(json["gen"], 2);
        assert_eq!(json["active"], 2);
        assert!(json["live"].is_array(), "{json}");
    }

    #[test]
    fn the_output_for_the_overlay_stays_off_the_wire() {
        let mut step = Step::build_finished(
            BuildStatus::Failed,
            0,
            1,
            Some(Exit::Code(101)),
            Duration::from_millis(3),
        );
        if let Step::BuildFinished {
            output_tail,
            output,
            ..
        } = &mut step
        {
            *output_tail = Some(vec!["error: x".into()]);
            *output = Some("\x1b[31merror\x1b[0m: x\n".into());
        }
        let json: serde_json::Value = serde_json::from_str(&Record::now(step).to_json()).unwrap();
        assert_eq!(json["code"], 101);
        assert_eq!(json["duration_us"], 3000);
        assert_eq!(json["output_tail"], serde_json::json!(["error: x"]));
        assert!(json.get("output").is_none(), "{json}");
    }
}
