//! Real servers for tests: Redis and etcd, started fresh for a test and
//! stopped when their handle drops.
//!
//! # Modes
//!
//! `LEASE_TEST_SERVERS` picks how servers are had:
//!
//! - `containers` — started with testcontainers from the images named by
//!   `LEASE_TEST_REDIS_IMAGE` (default `lease-test/redis:7`) and
//!   `LEASE_TEST_ETCD_IMAGE` (default `lease-test/etcd:3.4`). Images are
//!   never pulled here: `scripts/test-images` builds them from the installed
//!   binaries. A user's CI can point these variables at the official images.
//!   Ports are published on 127.0.0.1 only.
//! - `local` — `redis-server` / `etcd` run as child processes on free
//!   127.0.0.1 ports with a temporary data folder, killed on drop (also when
//!   a test panics).
//! - `external` — servers someone else runs: `LEASE_TEST_REDIS_URL`,
//!   `LEASE_TEST_ETCD_ENDPOINTS` (comma-separated). Never restarted or
//!   stopped by tests.
//!
//! Without the variable: containers when a Docker engine answers and both
//! images exist, else local.
//!
//! # No silent skips
//!
//! With `LEASE_TEST_REQUIRE_SERVERS=1` (set by `.ci/run`) a server that
//! cannot be started fails the test with the reason. Without it, the test
//! says loudly on stderr that it did not run, and returns.

mod etcd;
mod factories;
pub mod gauges;
mod local;
mod mode;
mod redis;
mod redis_cluster;
mod redis_sentinel;
mod stall;
mod tls;

pub use etcd::{EtcdCluster, EtcdOptions};
pub use factories::{EtcdServerFactory, RedisServerFactory, SharedRedisFactory};
pub use lease_conformance::faults::{Fault, FaultProxy};
pub use mode::{Mode, free_port, mode, servers_required};
pub use redis::{RedisOptions, RedisServer};
pub use redis_cluster::RedisCluster;
pub use redis_sentinel::RedisSentinel;
pub use stall::{Stalled, acquire_all, assert_shows, hold_through_a_stall};
pub use tls::TestCertificates;

/// Why a server could not be had.
#[derive(Debug)]
pub struct ServerError(pub String);

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerError {}

impl From<String> for ServerError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

/// A started server, or `None` after saying loudly why not — unless servers
/// are required (`LEASE_TEST_REQUIRE_SERVERS=1`), where it panics with the
/// reason so the test fails.
pub fn or_skip<T>(what: &str, started: Result<T, ServerError>) -> Option<T> {
    match started {
        Ok(server) => Some(server),
        Err(why) if servers_required() => {
            panic!(
                "{what} is required (LEASE_TEST_REQUIRE_SERVERS=1) but could not be started: {why}"
            )
        }
        Err(why) => {
            eprintln!(
                "\n!!! NOT RUN: no {what}: {why}\n!!! Set LEASE_TEST_REQUIRE_SERVERS=1 to make this a failure.\n"
            );
            None
        }
    }
}
