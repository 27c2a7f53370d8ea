//! Fenced leases on Redis.
//!
//! [`RedisStore`] implements [`lease_core::LeaseStore`] on a single Redis
//! server, on a Redis Cluster, or on a primary under Sentinel. The design:
//!
//! - **One script, one round trip.** Every operation — claim, reclaim,
//!   renew, release, inspect, markers, guarded writes — is one Lua script call
//!   (`src/lua/*.lua`, each with a header giving its KEYS, ARGV and
//!   replies), sent by `EVALSHA` and loaded on `NOSCRIPT`. Keys and values
//!   travel only as `KEYS`/`ARGV`, never spliced into script text.
//! - **Server time.** A grant ends when the server's own expiry clock
//!   says so: a record's key expires when its grant ends, so a record
//!   exists exactly while its grant is live. Nothing the client keeps or
//!   sends moves an end except a renewal the script accepted, and a lost
//!   reply or a dropped future leaves at most the end that renewal set.
//!   The client's clock is used for nothing but the holder's own deadline.
//! - **Lean scripts.** A lease record is one string (`v3`, holder id,
//!   incarnation and token, joined by newlines): one `GET` reads it. A
//!   claim of a free key runs `MGET` (record and token floor), `TIME`,
//!   `SET … PX`, `SET` (floor); a renewal `GET`, `PEXPIRE`; a release
//!   `GET`, `DEL`, `PUBLISH`; an inspect `GET`, `PTTL`. A renewal and a
//!   release send the fence's record as it is stored and the script
//!   compares text: nothing is parsed or formatted unless the record is
//!   not the fence's.
//! - **Concurrent claims and releases share script calls.** Claims made
//!   while other claims are under way go out together in one
//!   `claim_many.lua` call (up to [`CALL_BATCH`] a call, up to
//!   [`CALLS_IN_FLIGHT`] calls under way), and releases in
//!   `release_many.lua`, through [`lease_core::Batcher`]; a claim made
//!   while nothing else is under way goes alone, in `claim.lua`, so one
//!   task pays nothing for it. A claim call runs one `MGET` of every record
//!   and the floor, one `TIME` and one floor `SET` for all its claims, a
//!   release call one `MGET`, one `DEL` and one `PUBLISH`. Each claim in a
//!   call is decided by the same prelude function as a claim alone
//!   (`claim_one`), in order, a later claim of the same key seeing what
//!   the earlier did; each gets its own reply, and its deadline counts from
//!   before it joined the call. A call that fails fails for each claim in
//!   it, as it would have alone. Why: a script call's fixed cost (the
//!   request, its parsing, the script's start, the reply) is most of what a
//!   claim costs Redis and the client (README, "Performance"). A caller
//!   that gives up while its claim waits to join a call is left out of it,
//!   so nothing is sent.
//! - **Batch renewal.** `renew_many` is one `renew_many.lua` call per 512
//!   renewals (a keeper's batch), each renewal answered as `renew.lua`
//!   would, a renewed one by a bare integer. Measured on this project's
//!   machine with realistic key and holder lengths, a renewal inside a
//!   batch costs 3 to 5 µs of Redis CPU (the `hold` bench: 10,000 leases
//!   cost about 40 ms of Redis CPU per renewal period). Records of
//!   earlier layouts (`v2`, or the hash of earlier versions) read as
//!   corrupt: drain leases before upgrading.
//! - **Tokens.** Each namespace has one *token floor* key, `{ns}:floor`,
//!   holding the highest token handed out in it; it never expires (one
//!   small key per namespace, whatever the number of lease keys). A fresh
//!   grant's token is `max(floor + 1, replaced record's token + 1, server
//!   time in µs)`. So tokens increase per key (and across the namespace)
//!   across release, expiry, deletion or corruption of the record, whatever
//!   the server clock does, while memory stays O(live leases): an ended
//!   grant leaves nothing behind. If the floor itself is lost — a restart
//!   of Redis *without persistence*, a failover to a replica that missed
//!   the last writes — tokens come from the server clock, which has moved
//!   past every earlier token. **Limits:** only that last case rests on
//!   the clock: a server restarted without its data *and* with its clock
//!   stepped back, or a replica whose clock is behind the old primary's,
//!   can hand out a token lower than one already used. Run NTP with
//!   slewing, not stepping, on Redis hosts.
//! - **Restarts that lose data.** A restart without persistence erases
//!   every record while their holders still count on their deadlines; by
//!   default the next claim is granted at once (with a higher token, from
//!   the clock), so two processes act as owner until the old deadline
//!   passes. [`RedisConfig::restart_quarantine`] closes that window: while
//!   a namespace's token floor is missing and the server has been up for
//!   less than the longest TTL, no fresh grant is made (claims answer
//!   busy with a `restart-quarantine` record, inspect shows it, waiters
//!   sleep through it); TTLs above that longest TTL are refused. The
//!   script reads the server's `uptime_in_seconds`, so the quarantine errs
//!   up to a second long. It is off by default because a fresh server is
//!   indistinguishable from one that lost its data: with it on, the first
//!   use of a namespace within the longest TTL of the server's start waits
//!   out the rest of it. Renewals of erased grants find no record and
//!   their holders get `lost`.
//! - **Redis Cluster.** A `redis+cluster://HOST:PORT[,HOST:PORT…]` URL
//!   (any few nodes; the rest are learnt from them) connects through the
//!   `redis` crate's async cluster client, which follows `MOVED` and `ASK`
//!   and routes each script by its first key. All keys of one store share
//!   the hash tag `{ns}` of its namespace, so every script — a batch
//!   renewal of 512 keys included — touches one slot and stays one round
//!   trip. A namespace therefore lives on one shard: spread load across
//!   shards with several namespaces. Listing `SCAN`s the node that owns the
//!   namespace's slot. While that slot migrates between nodes, a script
//!   whose keys are split between them is refused with `TRYAGAIN` and is
//!   retried (by the cluster client, then by the keeper); leases held
//!   across a migration survive (tested with the slot half moved for a
//!   second, renewals running). A single-server URL that reaches a cluster
//!   node is told to use `redis+cluster://` on the first redirect.
//! - **Sentinel.** A `redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER_NAME`
//!   URL names the sentinels; the store asks them for the primary
//!   (`SENTINEL GET-MASTER-ADDR-BY-NAME`), checks it says it is one
//!   (`ROLE`), and talks to it. A call that fails as calls to a dead or
//!   demoted primary fail (lost connection, no answer, `READONLY`) makes
//!   the store ask again — at most every 100 ms — and switch when the
//!   sentinels name another primary. The failed call still fails,
//!   indeterminate when it may have been applied; the keeper retries
//!   renewals. Replication is asynchronous: a failover can lose the last
//!   writes the old primary acknowledged, which acts like a restart that
//!   lost them (see the table below). Measured here (one replica, three
//!   sentinels, `down-after-milliseconds` 1000): a failover takes about
//!   2.3 s, and 50 leases with a 4 s TTL renewed every 300 ms all survive it.
//!   [`RedisConfig::wait_for_replicas`] adds `WAIT` to every write, in the
//!   same round trip, and fails a write too few replicas acknowledged as
//!   indeterminate, so a grant or renewal the store reported survives a
//!   failover to a replica that acknowledged it (tested with two replicas:
//!   no rival granted a key inside its old holder's deadline).
//! - **Wait.** A release call `PUBLISH`es the lease keys it freed on the
//!   namespace's channel, newline-separated in one message.
//!   Each store keeps one subscription (not one per waiter) and wakes the
//!   waiters of that key; in a cluster, plain `PUBLISH` reaches every node,
//!   so the subscription is on any one node, the next after a failure. A
//!   timed re-check catches expiries, which publish nothing, and any
//!   message missed while reconnecting.
//! - **Failures.** Every call runs under a time limit
//!   ([`RedisConfig::call_timeout`]). A connection lost after sending makes a
//!   mutating call indeterminate ([`lease_core::LeaseError::is_indeterminate`]).
//!   A key holding a foreign type or a malformed value is a corrupt record:
//!   `inspect` reports it, a claim repairs it by takeover.
//! - **Least privilege.** A Redis ACL user for a store of namespace `ns`
//!   needs its keys and channel, `~{ns}:* &{ns}:*`, and the commands
//!   `+evalsha +eval +script|load +ping +subscribe` plus those the scripts
//!   run: `+get +mget +set +del +pexpire +pttl +time +type +publish`.
//!   Listing adds `+scan`, the restart quarantine `+info`,
//!   `wait_for_replicas` `+wait`, Sentinel `+role` (and, on the sentinels,
//!   `+sentinel|get-master-addr-by-name`). A missing one fails the call
//!   that needs it with Redis' own message naming the command.
//!
//! **What each deployment guarantees** (exclusivity: no two holders inside
//! their deadlines; token order: every fresh grant's token above all
//! earlier ones on its key):
//!
//! | deployment | exclusivity | token order |
//! | --- | --- | --- |
//! | one server, `appendfsync always` | yes, across restarts | yes |
//! | one server, no persistence (or `everysec`) | not across a restart that loses data, unless the restart quarantine is on | yes while the server clock is not stepped back across the restart |
//! | Redis Cluster | as one server, per shard (a namespace is one shard); a failover to a replica that missed writes is a restart that lost them; holds across slot migration | as one server, per shard |
//! | Sentinel-managed primary | as one server, while no failover loses writes; a failover that does is a restart that lost them | yes, unless a failover loses the floor *and* the new primary's clock is behind |
//! | Sentinel with `wait_for_replicas(n, …)` | yes across a failover to a replica among the `n` that acknowledged (not guaranteed to be the one Sentinel picks when several lag) | yes, on the same terms |
//! | any, server clock stepped forward | no: grants end early by the server's clock | yes |
//! | any, server clock stepped back | yes (grants last longer) | yes (the token floor), except across a restart that lost the floor |
//!
//! ```no_run
//! # async fn demo() -> Result<(), lease_core::LeaseError> {
//! use lease_redis::{RedisConfig, RedisStore};
//! let store = RedisStore::connect(RedisConfig::new("redis://127.0.0.1:6379/0").namespace("billing")).await?;
//! # Ok(()) }
//! ```

mod config;
mod connection;
mod list;
mod reply;
mod scripts;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod wait;

pub use config::{RedisConfig, URL_SCHEMES, is_redis_url};
#[doc(hidden)]
pub use scripts::script_source;
pub use store::{CALL_BATCH, CALLS_IN_FLIGHT, RedisStore};
