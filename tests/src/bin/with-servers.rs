//! `with-servers COMMAND [ARGS…]`: starts a Redis server, a three-master
//! Redis Cluster, a primary under Sentinel and an etcd cluster through the
//! test harness (mode from `LEASE_TEST_SERVERS`), runs the command with
//! `LEASE_TEST_REDIS_URL`, `LEASE_TEST_REDIS_CLUSTER_URL`,
//! `LEASE_TEST_REDIS_SENTINEL_URL` and `LEASE_TEST_ETCD_ENDPOINTS` set,
//! stops the servers and exits with the command's status. With
//! `LEASE_TEST_ETCD3=1` it also starts a three-member etcd cluster, named in
//! `LEASE_TEST_ETCD3_ENDPOINTS`.
//!
//! A server that cannot be started is reported and left out (its variable
//! unset) — or, with `LEASE_TEST_REQUIRE_SERVERS=1`, ends the run.

use std::process::ExitCode;

use lease_tests::{
    EtcdCluster, EtcdOptions, RedisCluster, RedisSentinel, RedisServer, servers_required,
};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: with-servers COMMAND [ARGS…]");
        return ExitCode::from(2);
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let three = std::env::var("LEASE_TEST_ETCD3").as_deref() == Ok("1");
    let (redis, redis_cluster, redis_sentinel, etcd, etcd3) = runtime.block_on(async {
        (
            RedisServer::start().await,
            RedisCluster::start().await,
            RedisSentinel::start().await,
            EtcdCluster::start().await,
            match three {
                true => Some(
                    EtcdCluster::start_with(EtcdOptions {
                        members: 3,
                        ..Default::default()
                    })
                    .await,
                ),
                false => None,
            },
        )
    });
    let mut command = std::process::Command::new(&program);
    command.args(args);
    for (name, started) in [
        (
            "LEASE_TEST_REDIS_URL",
            redis.as_ref().map(|s| s.url().to_owned()),
        ),
        (
            "LEASE_TEST_REDIS_CLUSTER_URL",
            redis_cluster.as_ref().map(|c| c.url().to_owned()),
        ),
        (
            "LEASE_TEST_REDIS_SENTINEL_URL",
            redis_sentinel.as_ref().map(|s| s.url().to_owned()),
        ),
        (
            "LEASE_TEST_ETCD_ENDPOINTS",
            etcd.as_ref().map(|c| c.endpoints().join(",")),
        ),
    ]
    .into_iter()
    .chain(etcd3.as_ref().map(|started| {
        (
            "LEASE_TEST_ETCD3_ENDPOINTS",
            started.as_ref().map(|c| c.endpoints().join(",")),
        )
    })) {
        match started {
            Ok(value) => {
                eprintln!("with-servers: {name}={value}");
                command.env(name, value);
            }
            Err(why) if servers_required() => {
                eprintln!("with-servers: a required server could not be started: {why}");
                return ExitCode::FAILURE;
            }
            Err(why) => eprintln!("with-servers: !!! no server for {name}: {why}"),
        }
    }
    let status = command.status();
    runtime.block_on(async {
        if let Ok(server) = redis {
            server.stop().await;
        }
        if let Ok(cluster) = redis_cluster {
            cluster.stop().await;
        }
        drop(redis_sentinel);
        if let Ok(cluster) = etcd {
            cluster.stop().await;
        }
        if let Some(Ok(cluster)) = etcd3 {
            cluster.stop().await;
        }
    });
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)),
        Err(why) => {
            eprintln!("with-servers: cannot run {program}: {why}");
            ExitCode::FAILURE
        }
    }
}
