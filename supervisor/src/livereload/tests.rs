//! What the browser is told, read off the steps of the real state machine
//! (and those the executor adds), as the loop reports them.

use std::time::{Duration, Instant};

use crate::signal::Signal;
use devsup_protocol::Message;

use super::*;
use crate::event::{Event, Exit, StopCause, Trigger};
use crate::machine::Action;
use crate::machine::{Policy, State};

/// The machine with one build step, stepped like the supervisor loop does,
/// with every notice collected.
struct Sim {
    state: State,
    steps: usize,
    observer: Observer,
    now: Instant,
    notices: Vec<Notice>,
}

impl Sim {
    fn new(build_steps: usize) -> Sim {
        Sim {
            state: State::new(Policy {
                drain_signal: Signal::SIGTERM,
                drain_timeout: Duration::from_secs(10),
                ready_timeout: Duration::from_secs(60),
                ready_after: None,
                build_steps,
                ready: crate::machine::ReadyRule::Auto,
                listen_pid: false,
            }),
            steps: build_steps,
            observer: Observer::default(),
            now: Instant::now(),
            notices: Vec::new(),
        }
    }

    /// Steps `event` and carries the actions out as the executor does, in
    /// order: reports the machine's steps, reports `build_started` and
    /// answers `StartBuild` with `BuildStarted`, answers `Spawn` with
    /// `Spawned`.
    fn feed(&mut self, event: Event) {
        self.now += Duration::from_millis(1);
        let actions = self.state.step(event, self.now);
        for action in actions {
            match action {
                Action::Report(step) => self.report(&step),
                Action::Spawn { gen_id, .. } => {
                    self.feed(Event::Spawned {
                        gen_id,
                        pid: 100 + gen_id as i32,
                    });
                }
                Action::StartBuild { step } => {
                    self.report(&Step::BuildStarted {
                        step: step + 1,
                        steps: self.steps,
                        command: format!("make step{}", step + 1),
                    });
                    self.feed(Event::BuildStarted { pid: 99 });
                }
                _ => {}
            }
        }
    }

    fn report(&mut self, step: &Step) {
        let notices = self.observer.observe(step);
        self.notices.extend(notices);
    }

    fn reload(&mut self) {
        self.feed(Event::Reload {
            trigger: Trigger::Sighup,
            at: self.now,
        });
    }

    fn build_exits(&mut self, code: i32) {
        self.feed(Event::BuildExited {
            exit: Some(Exit::Code(code)),
        });
    }

    fn ready(&mut self, gen_id: GenId) {
        self.feed(Event::Message {
            gen_id,
            msg: Message::Ready,
            at: self.now,
        });
    }

    fn take(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }
}

#[test]
fn a_reload_is_announced_only_once_the_new_generation_is_ready() {
    let mut sim = Sim::new(0);
    sim.feed(Event::Reload {
        trigger: Trigger::Startup,
        at: sim.now,
    });
    // Nothing to hand over from: gen 1 gets the connections at once (they
    // wait for it in the backlog).
    assert_eq!(sim.take(), [Notice::Ready(1)]);
    sim.ready(1);
    assert_eq!(sim.take(), [], "READY of the active generation: no news");

    sim.reload();
    assert_eq!(sim.take(), [], "gen 2 is starting: gen 1 still serves");
    sim.ready(2);
    // Gen 1 still accepts until it acts on its drain signal: wait for it.
    assert_eq!(sim.take(), [Notice::Handoff { new: 2, old: 1 }]);
    sim.feed(Event::GenExited {
        gen_id: 1,
        exit: Exit::Code(0),
    });
    assert_eq!(sim.take(), [Notice::Ready(2)]);
    assert_eq!(sim.observer.release(2), None, "told once");
}

#[test]
fn a_slow_drain_is_not_waited_for_past_the_grace() {
    let mut sim = Sim::new(0);
    sim.feed(Event::Reload {
        trigger: Trigger::Startup,
        at: sim.now,
    });
    sim.ready(1);
    sim.reload();
    sim.ready(2);
    sim.take();
    assert_eq!(sim.observer.release(2), Some(Notice::Ready(2)));
    sim.feed(Event::GenExited {
        gen_id: 1,
        exit: Exit::Code(0),
    });
    assert_eq!(sim.take(), [], "told once");
    // A later handoff overtakes one still held: only the newest is told.
    sim.reload();
    sim.ready(3);
    sim.reload();
    sim.ready(4);
    assert_eq!(
        sim.take(),
        [
            Notice::Handoff { new: 3, old: 2 },
            Notice::Handoff { new: 4, old: 3 }
        ]
    );
    assert_eq!(sim.observer.release(3), None);
    sim.feed(Event::GenExited {
        gen_id: 2,
        exit: Exit::Code(0),
    });
    assert_eq!(sim.take(), []);
    sim.feed(Event::GenExited {
        gen_id: 3,
        exit: Exit::Code(0),
    });
    assert_eq!(sim.take(), [Notice::Ready(4)]);
}

#[test]
fn a_new_generation_that_dies_before_ready_is_never_announced() {
    let mut sim = Sim::new(0);
    sim.feed(Event::Reload {
        trigger: Trigger::Startup,
        at: sim.now,
    });
    sim.ready(1);
    sim.take();
    sim.reload();
    sim.feed(Event::GenExited {
        gen_id: 2,
        exit: Exit::Code(1),
    });
    assert_eq!(sim.take(), []);
}

#[test]
fn builds_are_announced_and_a_failure_keeps_the_old_generation() {
    let mut sim = Sim::new(1);
    sim.feed(Event::Reload {
        trigger: Trigger::Startup,
        at: sim.now,
    });
    assert_eq!(sim.take(), [Notice::Building]);
    sim.build_exits(0);
    assert_eq!(sim.take(), [Notice::Ready(1)]);
    sim.ready(1);

    sim.reload();
    assert_eq!(sim.take(), [Notice::Building]);
    sim.build_exits(101);
    assert_eq!(
        sim.take(),
        [Notice::Failed(
            "build failed (exited with status 101): make step1\n".into()
        )]
    );

    sim.reload();
    sim.build_exits(0);
    assert_eq!(sim.take(), [Notice::Building]);
    sim.ready(2);
    assert_eq!(sim.take(), [Notice::Handoff { new: 2, old: 1 }]);
}

#[test]
fn a_cancelled_build_is_not_a_failure() {
    let mut sim = Sim::new(2);
    sim.feed(Event::Reload {
        trigger: Trigger::Startup,
        at: sim.now,
    });
    sim.take();
    // A change arrives mid-build: devsup stops the build and starts again.
    sim.reload();
    sim.feed(Event::BuildExited {
        exit: Some(Exit::Signal(Signal::SIGTERM as i32)),
    });
    assert_eq!(sim.take(), [Notice::Building]);
    // Step 1 passes, step 2 fails: one failure, after the last step run.
    sim.build_exits(0);
    assert_eq!(sim.take(), []);
    sim.build_exits(2);
    assert_eq!(
        sim.take(),
        [Notice::Failed(
            "build failed (exited with status 2): make step2\n".into()
        )]
    );
}

#[test]
fn a_build_stopped_by_shutdown_is_not_a_failure() {
    let mut sim = Sim::new(1);
    sim.feed(Event::Reload {
        trigger: Trigger::Startup,
        at: sim.now,
    });
    sim.take();
    sim.feed(Event::Shutdown {
        because: StopCause::Sigterm,
    });
    sim.feed(Event::BuildExited {
        exit: Some(Exit::Signal(Signal::SIGTERM as i32)),
    });
    assert_eq!(sim.take(), []);
}

#[test]
fn the_overlay_shows_the_output_the_executor_captured() {
    let mut observer = Observer::default();
    observer.observe(&Step::BuildStarted {
        step: 1,
        steps: 1,
        command: "cargo build".into(),
    });
    let mut failed = Step::build_finished(
        BuildStatus::Failed,
        0,
        1,
        Some(Exit::Signal(Signal::SIGSEGV as i32)),
        Duration::ZERO,
    );
    if let Step::BuildFinished { output, .. } = &mut failed {
        *output = Some("\x1b[31merror\x1b[0m: boom\n".into());
    }
    assert_eq!(
        observer.observe(&failed),
        [Notice::Failed(
            "build failed (exited by SIGSEGV): cargo build\n\x1b[31merror\x1b[0m: boom".into()
        )]
    );
}

#[test]
fn events_are_framed_line_by_line() {
    assert_eq!(&sse("ready", "3")[..], b"event: ready\ndata: 3\n\n");
    assert_eq!(
        &sse("failed", "summary\r\nline\rprogress\n")[..],
        b"event: failed\ndata: summary\ndata: line\ndata: progress\ndata: \n\n"
    );
}

#[test]
fn a_wildcard_bind_is_advertised_on_loopback() {
    assert_eq!(
        advertised("0.0.0.0:35729".parse().unwrap()).to_string(),
        "127.0.0.1:35729"
    );
    assert_eq!(advertised("[::]:1".parse().unwrap()).to_string(), "[::1]:1");
    assert_eq!(
        advertised("127.0.0.2:5".parse().unwrap()).to_string(),
        "127.0.0.2:5"
    );
}

#[test]
fn the_option_takes_an_optional_address() {
    use clap::Parser;
    let parse = |args: &[&str]| {
        crate::cli::Cli::try_parse_from(args)
            .map_err(|e| e.to_string())
            .and_then(|cli| {
                crate::config::Config::from_options(cli.options()).map_err(|e| e.to_string())
            })
            .map(|config| config.livereload)
    };
    assert_eq!(parse(&["devsup", "-p", "1", "--", "x"]).unwrap(), None);
    assert_eq!(
        parse(&["devsup", "-p", "1", "--livereload", "--", "x"]).unwrap(),
        Some(crate::config::DEFAULT_LIVERELOAD.parse().unwrap())
    );
    assert_eq!(
        parse(&["devsup", "-p", "1", "--livereload=127.0.0.1:0", "--", "x"]).unwrap(),
        Some("127.0.0.1:0".parse().unwrap())
    );
    assert_eq!(
        parse(&["devsup", "-p", "1", "--livereload=9000", "--", "x"]).unwrap(),
        Some("127.0.0.1:9000".parse().unwrap())
    );
    assert!(parse(&["devsup", "-p", "1", "--livereload=nope", "--", "x"]).is_err());
}

/// The server over TCP, as a browser meets it (run under Wine too): the
/// script is served, and the event stream says hello, then a build.
#[test]
fn the_server_serves_the_script_and_streams_events_over_tcp() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let reporter = Reporter::default();
    let (name, url) = start(Some(([127, 0, 0, 1], 0).into()), None, &reporter)
        .unwrap()
        .unwrap();
    assert_eq!(name, LIVERELOAD_ENV);
    let addr = url
        .to_str()
        .unwrap()
        .strip_prefix("http://")
        .unwrap()
        .to_owned();
    let request = |path: &str| {
        let mut conn = TcpStream::connect(&addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        conn
    };
    let mut script = String::new();
    request(SCRIPT_PATH).read_to_string(&mut script).unwrap();
    assert!(script.starts_with("HTTP/1.1 200"), "{script}");
    assert!(script.ends_with(CLIENT_JS), "the script is the body");

    let mut events = request(EVENTS_PATH);
    let mut seen = String::new();
    let mut read_until = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.contains(what) {
            assert!(Instant::now() < deadline, "no {what:?} in {seen:?}");
            let mut buf = [0u8; 4096];
            let n = events.read(&mut buf).unwrap();
            assert!(n > 0, "the stream ended: {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    read_until("event: hello");
    reporter.step(Step::BuildStarted {
        step: 1,
        steps: 1,
        command: "cargo build".into(),
    });
    read_until("event: building");
}
