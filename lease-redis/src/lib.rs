//! Fenced leases on Redis.
//!
//! [`RedisStore`] implements [`lease_core::LeaseStore`] on a single Redis
//! server (or a Redis Cluster slot). The design:
//!
//! - **One script, one round trip.** Every operation — claim, reclaim,
//!   renew, release, inspect, markers, guarded writes — is one Lua script
//!   (`src/lua/*.lua`, each with a header giving its KEYS, ARGV and
//!   replies), sent by `EVALSHA` and loaded on `NOSCRIPT`. Keys and values
//!   travel only as `KEYS`/`ARGV`, never spliced into script text.
//! - **Server time.** Scripts read the server clock (`TIME`) to decide
//!   whether a grant is live; the key's expiry only cleans up. The client's
//!   clock is used for nothing but the holder's own deadline.
//! - **Lean scripts.** A lease record is one string (`v2`, holder id,
//!   incarnation, token and end in server µs, joined by newlines): one `GET`
//!   reads it, one `SET … PX` writes it with its expiry. A claim runs
//!   `TIME`, `GET`, `SET`; a renewal the same; a release those and
//!   `PUBLISH`; an inspect `TIME`, `GET`. A renewal receives the fence as
//!   the text its record starts with and compares text: nothing is parsed
//!   unless the record is not the fence's.
//! - **Batch renewal.** `renew_many` is one `renew_many.lua` call per 512
//!   renewals (a keeper's batch), with one clock reading for the batch and
//!   each renewal answered as `renew.lua` would. Measured on this project's
//!   machine, each renewal costs about 10 µs of Redis CPU with realistic
//!   key and holder lengths: `GET` about 1.5 µs and `SET … PX` about 4 µs
//!   of it, the script's own string work the rest. Records written by the hash layout
//!   of earlier versions read as corrupt: drain leases before upgrading.
//! - **Tokens.** A fresh grant's token is `max(last token + 1, server time
//!   in µs)`. The record of a grant — released, expired, or taken over —
//!   is kept for a retention time after it ends ([`RedisConfig::retention`],
//!   60 s by default), so the last token is known while it matters; after
//!   that the server clock has moved far past every earlier token. So tokens
//!   increase per key across release, expiry, deletion or corruption of the
//!   record and across a restart of Redis *without persistence*, while memory
//!   stays O(live + recently ended leases): no per-key counter lives forever.
//!   **Limits:** the guarantee rests on the server clock not going
//!   backwards by more than the retention time. A clock stepped back further,
//!   or a failover to a replica whose clock is behind by more than that (and
//!   which lost the record), can hand out a token lower than one already
//!   used. Run NTP with slewing, not stepping, on Redis hosts.
//! - **Cluster ready.** All keys of one store share the hash tag `{ns}` of
//!   its namespace, so every script touches one slot. A namespace therefore
//!   lives on one shard: spread load across shards with several namespaces.
//! - **Wait.** Releases `PUBLISH` the lease key on the namespace's channel.
//!   Each store keeps one subscription (not one per waiter) and wakes the
//!   waiters of that key; a timed re-check catches expiries, which publish
//!   nothing, and any message missed while reconnecting.
//! - **Failures.** Every call runs under a time limit
//!   ([`RedisConfig::call_timeout`]). A connection lost after sending makes a
//!   mutating call indeterminate ([`lease_core::LeaseError::is_indeterminate`]).
//!   A key holding a foreign type or a malformed value is a corrupt record:
//!   `inspect` reports it, a claim repairs it by takeover.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lease_core::LeaseError> {
//! use lease_redis::{RedisConfig, RedisStore};
//! let store = RedisStore::connect(RedisConfig::new("redis://127.0.0.1:6379/0").namespace("billing")).await?;
//! # Ok(()) }
//! ```

mod config;
mod list;
mod reply;
mod scripts;
mod store;
mod wait;

pub use config::RedisConfig;
pub use store::RedisStore;
