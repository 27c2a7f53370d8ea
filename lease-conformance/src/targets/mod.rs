//! Factories for the servers the CLI can test: each case gets its own
//! namespace on the server, and the namespace is removed after the case.

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "etcd")]
pub use self::etcd::EtcdTarget;
#[cfg(feature = "redis")]
pub use self::redis::RedisTarget;

/// A namespace no other run uses.
#[cfg(any(feature = "redis", feature = "etcd"))]
pub(crate) fn fresh_namespace() -> String {
    format!("lease-conformance-{:016x}", rand::random::<u64>())
}
