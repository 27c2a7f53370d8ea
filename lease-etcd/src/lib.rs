//! Fenced leases on etcd.
//!
//! [`EtcdStore`] implements [`lease_core::LeaseStore`] on an etcd v3 cluster.
//!
//! # Design
//!
//! - **A grant is a key.** The lease `k` lives at `{prefix}/lease/{k}`; the
//!   key exists exactly while a grant is live. Its value names the holder
//!   and the TTL granted. Every check-and-set is one transaction comparing
//!   revisions and the value — never a read followed by a write.
//! - **Tokens are revisions.** A grant's token is the `create_revision` of
//!   its key: the cluster-wide revision of the transaction that created it.
//!   Every later grant creates the key anew, at a later revision, so tokens
//!   increase across release, expiry, takeover and corruption, through
//!   restarts and leader changes, with nothing kept per key once it is gone.
//!   Renewal rewrites the key (bumping `mod_revision`) but never recreates
//!   it, so it keeps the token — also when it changes the TTL.
//! - **Shared etcd leases.** A store does not grant an etcd lease per claim.
//!   It keeps one etcd lease per TTL value, `TTL + margin` long, kept alive
//!   by one keep-alive stream each, and attaches its grants' keys to it: a
//!   claim is one round trip, and N grants cost O(1) keep-alive traffic.
//!   Because the etcd lease outlives each grant, the store ends each grant
//!   itself at its deadline: a local timer deletes the key with a
//!   transaction that compares its `mod_revision`, so a renewal that got
//!   there first wins and a newer grant is never touched. Releasing or
//!   losing one grant deletes one key and never revokes the shared lease.
//! - **If the client dies or is cut off**, its keep-alives stop and etcd
//!   itself deletes the keys when the shared lease lapses: at most
//!   `TTL + margin` after the last keep-alive — server-authoritative. A
//!   claim only attaches to a shared lease whose last keep-alive was sent
//!   less than half a margin ago (it sends one first otherwise), so the etcd
//!   lease always outlives the holder's deadline.
//! - **TTLs** are whole seconds (rounded up, reported in the grant), at least
//!   1 s. The declared expiry slack (1 s) covers the local timer and one
//!   delete round trip.
//! - **Wait** watches the key from the revision it was read at, with a timed
//!   re-check; a compacted revision is handled by reading again.
//! - **Keep-alive failures** reach holders through renewal: once a shared
//!   lease is gone its keys are gone, the next renewal is refused, and a
//!   [`lease_core::Leaser`] fires its lost signal.
//!
//! Connections take a list of endpoints, optional user/password
//! ([`EtcdConfig::credentials`]) and, with the `tls` feature, TLS to
//! `https://` endpoints ([`EtcdConfig::tls_root_ca`]). Every call runs under
//! [`EtcdConfig::call_timeout`].
//!
//! Takeovers (reclaim of a live grant, repair of a corrupt record) take two
//! round trips: etcd cannot delete and create one key in a transaction.
//! `inspect` of another client's grant reports the TTL it was granted as its
//! time left (an upper bound); for this client's own grants it is exact.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lease_core::LeaseError> {
//! use lease_etcd::{EtcdConfig, EtcdStore};
//! let store = EtcdStore::connect(EtcdConfig::new(["127.0.0.1:2379"]).prefix("billing")).await?;
//! # Ok(()) }
//! ```

mod config;
mod grants;
mod pool;
mod record;
mod store;

pub use config::EtcdConfig;
pub use store::EtcdStore;
