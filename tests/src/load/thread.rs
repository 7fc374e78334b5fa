//! A load run on its own thread and tokio runtime, for synchronous tests
//! and the benchmark: start it, do the reload storm, then
//! [`LoadRun::finish`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::client::{Progress, run_with};
use super::{LoadConfig, LoadReport, Stop, run};

/// A load run on its own thread and runtime; see [`start`].
#[derive(Debug)]
pub struct LoadRun {
    stop: Stop,
    progress: Arc<Progress>,
    thread: Option<std::thread::JoinHandle<LoadReport>>,
}

/// Starts `config` on a new thread with its own tokio runtime.
pub fn start(config: LoadConfig) -> LoadRun {
    let stop = config.stop.clone();
    let progress = Arc::new(Progress::default());
    let shared = progress.clone();
    let thread = std::thread::Builder::new()
        .name("load".into())
        .spawn(move || runtime(config.threads).block_on(run_with(config, shared)))
        .expect("spawn load thread");
    LoadRun {
        stop,
        progress,
        thread: Some(thread),
    }
}

/// Runs `config` to the end on a new runtime, blocking.
pub fn run_blocking(config: LoadConfig) -> LoadReport {
    runtime(config.threads).block_on(run(config))
}

pub(super) fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build().expect("tokio runtime")
}

impl LoadRun {
    /// Requests finished so far, any outcome.
    pub fn completed(&self) -> u64 {
        self.progress.completed.load(Ordering::Relaxed)
    }

    /// Successful requests so far.
    pub fn ok(&self) -> u64 {
        self.progress.ok.load(Ordering::Relaxed)
    }

    /// Failed requests so far.
    pub fn failed(&self) -> u64 {
        self.completed().saturating_sub(self.ok())
    }

    /// Waits until at least `n` requests have succeeded (so the load is
    /// really flowing); `false` on timeout.
    pub fn wait_ok(&self, n: u64, timeout: Duration) -> bool {
        crate::harness::wait_until(timeout, || self.ok() >= n)
    }

    /// Waits until at least `n` requests have finished, any outcome;
    /// `false` on timeout.
    pub fn wait_completed(&self, n: u64, timeout: Duration) -> bool {
        crate::harness::wait_until(timeout, || self.completed() >= n)
    }

    /// Tells the clients to stop after their current request.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// Stops the clients and returns the report.
    pub fn finish(mut self) -> LoadReport {
        self.stop();
        self.join_thread()
    }

    /// Waits for the run to end by itself (its duration or request count)
    /// and returns the report.
    pub fn join(mut self) -> LoadReport {
        self.join_thread()
    }

    fn join_thread(&mut self) -> LoadReport {
        match self.thread.take().expect("joined once").join() {
            Ok(report) => report,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for LoadRun {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.stop();
            let _ = thread.join();
        }
    }
}
