//! How late the runner itself ran: the evidence that tells a starved
//! runner from a slow backend.
//!
//! A ticker sleeps a few milliseconds at a time and notes each wake-up that
//! came late. Every case runs on a thread and a runtime of its own with a
//! ticker beside it (and work the case moves to another thread takes a
//! ticker along), so whatever stalls the case's thread — the machine, or a
//! store that blocks it — stalls a ticker too. A case that measured
//! something too slow asks how late the tickers ran over the same window:
//! when the runner itself was that late, the measurement says nothing
//! about the backend.
//!
//! Public for timing tests of one's own beside the suite: spawn
//! [`Lag::tick_in`] on the runtime that does the work, and before calling
//! a measurement a broken rule, ask [`Lag::worst`] whether the runner ran
//! that late over the same window.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How often the ticker wakes.
const TICK: Duration = Duration::from_millis(5);

/// Wake-ups later than this are noted.
const NOTED: Duration = Duration::from_millis(2);

/// Samples kept: the last few minutes of a badly starved case.
const KEPT: usize = 4096;

/// How late the runner ran: the late wake-ups of its tickers. Clones share
/// one record.
#[derive(Clone, Debug, Default)]
pub struct Lag {
    /// Late wake-ups: when a ticker woke, and how late.
    late: Arc<Mutex<Vec<(Instant, Duration)>>>,
    /// When each ticker is due next: a ticker past due now is stalled now,
    /// before it wakes to note it (the work it watches may judge first).
    due: Arc<Mutex<Vec<Instant>>>,
}

impl Lag {
    /// A ticker's slot, due one tick from now: registered before the work
    /// it watches first runs, so a stall is seen even if the ticker never
    /// got to run before it.
    pub fn register(&self) -> usize {
        let mut dues = self.due.lock().unwrap_or_else(|p| p.into_inner());
        dues.push(Instant::now() + TICK);
        dues.len() - 1
    }

    /// Ticks forever in the slot [`Lag::register`] gave, noting its late
    /// wake-ups. Polled beside the work it watches — on the same thread — a
    /// stall of that thread shows here.
    pub async fn tick_in(self, slot: usize) {
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner())[slot];
        loop {
            self.due.lock().unwrap_or_else(|p| p.into_inner())[slot] = due;
            tokio::time::sleep_until(due).await;
            let now = Instant::now();
            let by = now.saturating_duration_since(due);
            if by > NOTED {
                let mut late = self.late.lock().unwrap_or_else(|p| p.into_inner());
                if late.len() == KEPT {
                    late.remove(0);
                }
                late.push((now, by));
            }
            due = now + TICK;
        }
    }

    /// Runs `work` with a ticker polled in the same task, so anything that
    /// stalls the work's thread stalls the ticker too.
    pub async fn watching<T>(&self, work: impl Future<Output = T>) -> T {
        let slot = self.register();
        tokio::select! {
            biased;
            done = work => done,
            () = self.clone().tick_in(slot) => unreachable!("the ticker never ends"),
        }
    }

    /// The latest the runner ran during `[from, to]`: the longest stall of
    /// a ticker that overlaps the window.
    pub fn worst(&self, from: Instant, to: Instant) -> Duration {
        let now = Instant::now();
        // Stalls under way: tickers past due that have not woken yet.
        let ongoing = self
            .due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|due| **due <= to)
            .map(|due| now.saturating_duration_since(*due))
            .filter(|by| *by > NOTED)
            .max()
            .unwrap_or_default();
        let late = self.late.lock().unwrap_or_else(|p| p.into_inner());
        late.iter()
            .filter(|(woke, by)| *woke >= from && woke.checked_sub(*by).is_none_or(|s| s <= to))
            .map(|(_, by)| *by)
            .max()
            .unwrap_or_default()
            .max(ongoing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_runtime_shows_as_lag() {
        let monitor = Lag::default();
        tokio::spawn(monitor.clone().tick_in(monitor.register()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let from = Instant::now();
        // Blocks the only worker thread: the ticker cannot run.
        std::thread::sleep(Duration::from_millis(120));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let worst = monitor.worst(from, Instant::now());
        assert!(worst >= Duration::from_millis(100), "saw {worst:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_runtime_shows_little_lag() {
        let monitor = Lag::default();
        tokio::spawn(monitor.clone().tick_in(monitor.register()));
        let from = Instant::now();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Nothing blocked this runtime; only the machine's own noise shows.
        assert!(monitor.worst(from, Instant::now()) < Duration::from_millis(100));
    }
}

#[cfg(test)]
mod watching {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_stall_shows_before_the_ticker_ever_ran() {
        let lag = Lag::default();
        let judged = lag
            .watching(async {
                // No await before the stall: the ticker has not been polled.
                let from = Instant::now();
                std::thread::sleep(Duration::from_millis(120));
                // Judged at once, before the ticker has run again.
                lag.worst(from, Instant::now())
            })
            .await;
        assert!(judged >= Duration::from_millis(100), "saw {judged:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_that_blocks_its_thread_shows_as_lag() {
        let lag = Lag::default();
        let from = Instant::now();
        lag.watching(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Blocks this task's thread: its ticker cannot run either.
            std::thread::sleep(Duration::from_millis(120));
            tokio::time::sleep(Duration::from_millis(20)).await;
        })
        .await;
        assert!(lag.worst(from, Instant::now()) >= Duration::from_millis(100));
    }
}
