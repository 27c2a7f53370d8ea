//! The whole conformance suite against a real three-master Redis Cluster:
//! one cluster for the run, a fresh namespace (so a fresh slot) per case,
//! reached through the `redis+cluster://` URL the CLI takes.

use std::process::ExitCode;

use lease_tests::{RedisCluster, SharedRedisFactory};

fn main() -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let cluster = runtime.block_on(RedisCluster::start());
    let code = lease_conformance::test_main(SharedRedisFactory::new(
        cluster.as_ref().map(RedisCluster::url),
    ));
    if let Ok(cluster) = cluster {
        runtime.block_on(cluster.stop());
    }
    code
}
