//! Five lease APIs other teams wrote by hand, each served by this library
//! in a small module ([`seeds`]), plus the fencing story the tokens exist
//! for, and the recipes of `lease-core` at work ([`recipes`]: a leader
//! election with fenced terms, a pool of counting leases). Every module's
//! `demo` runs its story on any store; the examples run it on the store
//! named on the command line:
//!
//! ```sh
//! cargo run -p lease-examples --example export_lease                          # in memory
//! cargo run -p lease-examples --example export_lease -- redis://127.0.0.1:6379
//! cargo run -p lease-examples --example juju_claimer -- etcd://127.0.0.1:2379
//! ```
//!
//! On a server, each run works in a namespace (Redis) or prefix (etcd) of
//! its own, so runs never see each other's leases. Timings follow the
//! store: TTLs at least its minimum (etcd: 1 s), waits past its slack.

use std::time::Duration;

use lease_connect::Target;
use lease_core::{DynLeaseStore, LeaseError, LeaseKey, LeaseStore};

/// The seed APIs, one module each.
pub mod seeds {
    pub mod export_lease;
    pub mod fenced_writer;
    pub mod ftl_leaser;
    pub mod juju_claimer;
    pub mod poison_store;
    pub mod session_execution_lease_store;
}

/// Recipes built on the store trait alone, so they run on every backend.
pub mod recipes {
    pub mod counting_leases;
    pub mod leader_election;
}

/// The store named by the first command-line argument (`memory` when
/// there is none), in a namespace of this run's own.
///
/// # Errors
/// A malformed target, or a server that cannot be reached.
pub async fn store_from_args() -> Result<DynLeaseStore, LeaseError> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory".to_owned());
    store_at(&url).await
}

/// The store at `url` (`memory`, `redis://…`, `etcd://…`), in a namespace
/// of this run's own.
///
/// # Errors
/// A malformed target, or a server that cannot be reached.
pub async fn store_at(url: &str) -> Result<DynLeaseStore, LeaseError> {
    let mut target = Target::new(url.to_owned());
    let run = format!(
        "lease-examples-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros())
    );
    target.namespace.clone_from(&run);
    target.prefix = run;
    lease_connect::connect(&target).await
}

/// Prints a demo's story, line by line.
pub fn print(lines: &[String]) {
    for line in lines {
        println!("{line}");
    }
}

/// A TTL `store` grants for a demo: `wanted`, raised to the store's
/// minimum and rounded up to its granularity.
pub fn demo_ttl(store: &dyn LeaseStore, wanted: Duration) -> Duration {
    let caps = store.capabilities();
    let ttl = wanted.max(caps.min_ttl);
    caps.grant_ttl(&LeaseKey::new("demo").expect("valid"), ttl)
        .unwrap_or(ttl)
}

/// How long until a grant of `ttl` has certainly ended on `store`: the TTL
/// and the store's declared slack, and a little more.
pub fn past_expiry(store: &dyn LeaseStore, ttl: Duration) -> Duration {
    ttl + store.capabilities().expiry_slack + Duration::from_millis(50)
}
