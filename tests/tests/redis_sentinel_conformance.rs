//! The whole conformance suite against a real primary under Sentinel (one
//! replica, three sentinels): one deployment for the run, a fresh
//! namespace per case, reached through the `redis+sentinel://` URL the CLI
//! takes.

use std::process::ExitCode;

use lease_tests::{RedisSentinel, SharedRedisFactory};

fn main() -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let deployment = runtime.block_on(RedisSentinel::start());
    let code = lease_conformance::test_main(SharedRedisFactory::new(
        deployment.as_ref().map(RedisSentinel::url),
    ));
    drop(deployment);
    code
}
