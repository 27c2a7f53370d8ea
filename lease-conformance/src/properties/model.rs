//! The reference model for the state-machine test.
//!
//! Real servers have real clocks, so the model never knows the exact instant
//! a grant ends. An operation's effect happened somewhere between sending
//! it and getting its reply; a grant is certainly live until `sent + ttl`
//! and certainly expired after `replied + ttl + slack`. Against a grant in
//! between, either answer is accepted — and the answer then settles the
//! model (an expired grant never comes back).

use std::collections::HashMap;
use std::time::Duration;

use lease_core::{Fence, FencingToken, Grant, LeaseRecord};
use tokio::time::Instant;

/// A grant that may still be live.
#[derive(Clone, Debug)]
pub struct Live {
    pub fence: Fence,
    pub ttl: Duration,
    /// Certainly live before this instant.
    pub live_until: Instant,
    /// Certainly expired from this instant.
    pub dead_after: Instant,
}

/// What the model can say about a key's grant during one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// No grant that may be live.
    Free,
    /// Live for the whole operation.
    Live,
    /// Either answer is correct.
    Unsure,
}

/// One key's state.
#[derive(Clone, Debug, Default)]
pub struct KeyModel {
    pub current: Option<Live>,
    pub max_token: Option<FencingToken>,
    /// Every fence seen on this key, for stale-fence steps.
    pub fences: Vec<Fence>,
    pub guarded: Option<Vec<u8>>,
}

impl KeyModel {
    /// The status of the current grant for an operation sent at `sent` and
    /// answered at `replied`.
    pub fn status(&self, sent: Instant, replied: Instant) -> Status {
        match &self.current {
            None => Status::Free,
            Some(live) if sent >= live.dead_after => Status::Free,
            Some(live) if replied < live.live_until => Status::Live,
            Some(_) => Status::Unsure,
        }
    }

    /// Whether `fence` is the current grant (live or not).
    pub fn is_current(&self, fence: &Fence) -> bool {
        self.current
            .as_ref()
            .is_some_and(|live| live.fence == *fence)
    }

    /// Records a grant that the store made.
    pub fn granted(&mut self, grant: &Grant, sent: Instant, replied: Instant, slack: Duration) {
        self.current = Some(Live {
            fence: grant.fence.clone(),
            ttl: grant.ttl,
            live_until: sent + grant.ttl,
            dead_after: replied + grant.ttl + slack,
        });
        self.max_token = self.max_token.max(Some(grant.token()));
        self.seen(&grant.fence);
    }

    /// Records a claim of the holder's own live grant: it lives at least
    /// as long as the claim says, and never less than before.
    pub fn reclaimed_own(
        &mut self,
        grant: &Grant,
        sent: Instant,
        replied: Instant,
        slack: Duration,
    ) {
        let before = self.current.take();
        self.granted(grant, sent, replied, slack);
        if let (Some(before), Some(now)) = (before, self.current.as_mut())
            && before.fence == now.fence
        {
            now.ttl = now.ttl.max(before.ttl);
            now.live_until = now.live_until.max(before.live_until);
            now.dead_after = now.dead_after.max(before.dead_after);
        }
    }

    /// Remembers a fence for later stale-fence steps.
    pub fn seen(&mut self, fence: &Fence) {
        if !self.fences.contains(fence) {
            self.fences.push(fence.clone());
        }
    }

    /// The store showed the current grant has ended.
    pub fn ended(&mut self) {
        self.current = None;
    }

    /// Checks a fresh grant's token against every token seen before.
    pub fn check_fresh_token(&self, grant: &Grant) -> Result<(), String> {
        match self.max_token {
            Some(max) if grant.token() <= max => Err(format!(
                "fresh grant got token {}, not above {} already handed out",
                grant.token(),
                max
            )),
            _ => Ok(()),
        }
    }

    /// Checks a record reported by the store against the model.
    pub fn check_record(&self, record: &LeaseRecord) -> Result<(), String> {
        match &self.current {
            Some(live) if record.is(&live.fence) => {
                if record.remaining > live.ttl {
                    return Err(format!(
                        "record shows {:?} left of a {:?} grant",
                        record.remaining, live.ttl
                    ));
                }
                Ok(())
            }
            Some(live) => Err(format!(
                "store shows {record:?}, model expects {}",
                live.fence
            )),
            None => Err(format!("store shows {record:?}, model expects no grant")),
        }
    }
}

/// The whole model: keys by index, markers by key index.
#[derive(Debug, Default)]
pub struct Model {
    pub keys: HashMap<usize, KeyModel>,
    pub markers: HashMap<usize, String>,
}
