//! Clocks for the in-memory store: the real monotonic clock, or a manual one
//! that tests move by hand.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

/// A monotonic clock, read as the time since its own origin.
#[async_trait]
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Time since the clock's origin. Never goes backwards.
    fn now(&self) -> Duration;

    /// Resolves once [`Clock::now`] has reached `at`.
    async fn sleep_until(&self, at: Duration);
}

/// The process's monotonic clock (tokio's, so paused test time applies).
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    async fn sleep_until(&self, at: Duration) {
        tokio::time::sleep_until(self.origin + at).await;
    }
}

/// A clock that moves only when told: deterministic tests without sleeps.
/// Clones share one time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<watch::Sender<Duration>>,
}

impl ManualClock {
    /// A clock standing at zero.
    pub fn new() -> Self {
        Self {
            now: Arc::new(watch::Sender::new(Duration::ZERO)),
        }
    }

    /// Moves the clock forward by `by`, waking sleepers that are due.
    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|now| *now += by);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.now.borrow()
    }

    async fn sleep_until(&self, at: Duration) {
        let mut rx = self.now.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|now| *now >= at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleepers_wake_when_due() {
        let clock = ManualClock::new();
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(Duration::from_secs(5)).await }
        });
        clock.advance(Duration::from_secs(4));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(1));
        sleeper.await.unwrap();
        assert_eq!(clock.now(), Duration::from_secs(5));
    }
}
