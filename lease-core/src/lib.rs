//! Fenced leases: at most one owner at a time, and fencing tokens for the
//! times that goes wrong.
//!
//! A *lease* is a named, time-limited grant held by one [`Holder`]. Every
//! fresh grant carries a [`FencingToken`] greater than every token handed out
//! on that key before. A holder that outlives its grant without knowing (a
//! GC pause, a partition) is stopped downstream: resources remember the
//! highest token they have accepted and refuse older ones
//! ([`FencedResource`]).
//!
//! # Design
//!
//! - **One trait, many stores.** [`LeaseStore`] is an object-safe async trait
//!   with one required method per operation of the contract: claim, reclaim,
//!   renew, release, inspect, markers, guarded writes and wait. Backends live
//!   in their own crates (`lease-redis`, `lease-etcd`); [`MemoryStore`] is the
//!   in-process reference. Everything else is written once, against
//!   [`DynLeaseStore`]: [`Leaser`], [`Round`], [`LeaseStore::check`], and
//!   the recipes [`Election`] (a leader whose term is its fencing token,
//!   with observers) and [`Permits`] (at most N holders, each permit a
//!   lease of its own).
//! - **Many leases, few calls.** [`LeaseStore::renew_many`] renews a batch
//!   in as few round trips as the backend allows (by default one `renew`
//!   each, so a custom backend needs nothing more). A [`Leaser`] and its
//!   clones share one keeper task that renews every lease they hold in
//!   batches of at most [`MAX_BATCH`], with at most [`MAX_IN_FLIGHT`] calls
//!   under way and backoff with jitter on failure; each lease still has its
//!   own deadline and its own `lost` signal. [`Leaser::stats`] and the
//!   `metrics` facade (`lease_keeper_*`, labelled with the leaser's name)
//!   tell what it does.
//! - **Observed once, for every backend.** [`Instrumented`] wraps any store
//!   and gives every call a span and metrics; every name the workspace
//!   reports under is in one table, on [`Instrumented`].
//! - **Server time decides.** A grant's TTL is counted by the store's clock.
//!   The holder's own [`Grant::deadline`] is the instant *it sent* the request
//!   plus the granted TTL, on its monotonic clock: until then nobody else can
//!   be granted the key, and at it the holder must stop acting as owner
//!   whether or not it has heard anything. [`HeldLease::lost`] fires there.
//! - **Ambiguity is explicit.** Busy is an outcome ([`Claim::Busy`]), not an
//!   error. A mutating call whose reply was lost says so through
//!   [`LeaseError::is_indeterminate`]; retrying the same claim is safe, since
//!   a claim by the current holder returns its own grant with the same token.
//! - **Validation before I/O.** Keys ([`LeaseKey`]), holders and TTLs
//!   ([`Capabilities::grant_ttl`]) are checked before anything is sent, with
//!   errors that name the value and the rule. TTLs may be rounded *up* to a
//!   backend's granularity (the grant reports what was granted); zero, below
//!   the minimum and above the maximum are errors, never clamped.
//! - **Bounded memory.** Tokens increase per key for the life of the store
//!   while the store keeps only live and recently ended records — no counter
//!   per key that lives forever.
//! - **Every call has a time limit.** Backends run each call through
//!   [`with_timeout`], so a hung connection becomes [`LeaseError::Timeout`].
//!
//! # Example
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use lease_core::{Acquire, Holder, LeaseKey, Leaser, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), lease_core::LeaseError> {
//! let store = Arc::new(MemoryStore::new());
//! let leaser = Leaser::new(store, Holder::unique("worker-1")?, Duration::from_secs(10));
//! let key = LeaseKey::from_segments(["jobs", "nightly export"])?;
//! if let Acquire::Held(lease) = leaser.try_acquire(&key).await? {
//!     let lost = lease.lost();
//!     tokio::select! {
//!         () = lost.cancelled() => { /* stop: someone else may own it now */ }
//!         () = async { /* the work, writing with lease.fence().token */ } => {}
//!     }
//!     lease.release().await?;
//! }
//! # Ok(()) }
//! ```

mod adapter;
mod batch;
mod clock;
mod election;
mod error;
mod fenced;
mod instrument;
mod keeper;
mod key;
mod leaser;
mod list;
mod memory;
mod order;
mod permits;
mod round;
pub mod rules;
mod store;
mod types;

pub use adapter::{Looked, renew_in_batches, wait_until_free};
pub use batch::{BatchStats, BatchedCalls, Batcher, SendBatch, SendFor};
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use election::{Election, Leader, Leadership, Observed, Observer};
pub use error::{
    BoxError, LeaseError, Op, check_durations, marker_text, redacted_url, with_timeout,
};
pub use fenced::FencedResource;
pub use instrument::Instrumented;
pub use keeper::{KeeperStats, LostReason, MAX_BATCH, MAX_IN_FLIGHT};
pub use key::{LeaseKey, MAX_KEY_LEN};
pub use leaser::{Acquire, HeldLease, Leaser};
pub use list::{Cursor, Listed, Page, list_all, list_all_markers};
pub use memory::MemoryStore;
pub use order::{Sequencer, Stamp};
pub use permits::{MAX_PERMITS, Permits};
pub use round::Round;
pub use rules::Rule;
pub use store::{Capabilities, DynLeaseStore, LeaseStore, Wakeup};
pub use types::{Claim, Fence, FencingToken, Grant, Holder, LeaseRecord, MAX_HOLDER_PART_LEN};

pub use async_trait::async_trait;
pub use tokio_util::sync::CancellationToken;
