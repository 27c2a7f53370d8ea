//! Conformance factories that start a server per case, so cases that
//! restart it cannot disturb each other, and offer the restart hook.

use std::sync::Arc;

use async_trait::async_trait;
use lease_conformance::{Factory, Hook, Hooks, Subject};
use lease_core::{BoxError, LeaseKey};
use lease_etcd::EtcdConfig;
use lease_etcd::testing::EtcdFactory;
use lease_redis::RedisConfig;
use lease_redis::testing::RedisFactory;
use tokio::sync::Mutex;

use crate::{EtcdCluster, RedisOptions, RedisServer, ServerError, servers_required};

/// The target's hooks, and restarting the server where the harness owns
/// it: external servers are not restarted by tests.
fn with_restart(inner: &dyn Hooks) -> Vec<Hook> {
    let mut offered = inner.offered().to_vec();
    if crate::mode() != crate::Mode::External {
        offered.push(Hook::RestartServer);
    }
    offered
}

/// A server that could not be started is `Unavailable` (the cases end not
/// run) unless servers are required, where it is an error (they fail).
fn available<T>(started: Result<T, ServerError>) -> Result<T, BoxError> {
    match started {
        Ok(server) => Ok(server),
        Err(why) if servers_required() => {
            Err(format!("required server could not be started: {why}").into())
        }
        Err(why) => Err(Box::new(lease_conformance::Unavailable(format!(
            "{why} (set LEASE_TEST_REQUIRE_SERVERS=1 to make this a failure)"
        )))),
    }
}

/// A fresh Redis server (in the environment's mode) per case.
#[derive(Clone, Debug, Default)]
pub struct RedisServerFactory {
    /// How each server is started.
    pub options: RedisOptions,
}

/// The target's hooks, plus restarting the server the case owns.
struct ServerHooks<S> {
    inner: Arc<dyn Hooks>,
    offered: Vec<Hook>,
    server: Mutex<S>,
}

/// A server a case can restart.
#[async_trait]
trait Restart: Send {
    async fn restart(&mut self) -> Result<(), ServerError>;
}

#[async_trait]
impl Restart for RedisServer {
    async fn restart(&mut self) -> Result<(), ServerError> {
        RedisServer::restart(self).await
    }
}

#[async_trait]
impl Restart for EtcdCluster {
    async fn restart(&mut self) -> Result<(), ServerError> {
        self.restart_member(0).await
    }
}

#[async_trait]
impl<S: Restart> Hooks for ServerHooks<S> {
    fn offered(&self) -> &[Hook] {
        &self.offered
    }

    async fn plant_corrupt_record(&self, key: &LeaseKey) -> Result<(), BoxError> {
        self.inner.plant_corrupt_record(key).await
    }

    async fn restart_server(&self) -> Result<(), BoxError> {
        self.server.lock().await.restart().await.map_err(Into::into)
    }

    async fn second_client(&self) -> Result<lease_core::DynLeaseStore, BoxError> {
        self.inner.second_client().await
    }

    async fn stored_records(&self) -> Result<usize, BoxError> {
        self.inner.stored_records().await
    }

    fn why_not(&self, hook: Hook) -> Option<String> {
        self.inner.why_not(hook)
    }

    async fn server_address(&self) -> Result<String, BoxError> {
        self.inner.server_address().await
    }

    async fn store_through(
        &self,
        address: &str,
        call_timeout: std::time::Duration,
    ) -> Result<lease_core::DynLeaseStore, BoxError> {
        self.inner.store_through(address, call_timeout).await
    }

    async fn finish(&self) {
        self.inner.finish().await;
    }
}

#[async_trait]
impl Factory for RedisServerFactory {
    async fn open(&self) -> Result<Subject, BoxError> {
        let server = available(RedisServer::start_with(self.options.clone()).await)?;
        let subject = RedisFactory::new(RedisConfig::new(server.url()))
            .open()
            .await?;
        let hooks = ServerHooks {
            offered: with_restart(&*subject.hooks),
            inner: subject.hooks.clone(),
            server: Mutex::new(server),
        };
        Ok(subject.with_hooks(Arc::new(hooks)))
    }
}

/// A fresh one-member etcd cluster (in the environment's mode) per case.
#[derive(Clone, Debug, Default)]
pub struct EtcdServerFactory;

#[async_trait]
impl Factory for EtcdServerFactory {
    async fn open(&self) -> Result<Subject, BoxError> {
        let cluster = available(EtcdCluster::start().await)?;
        let subject = EtcdFactory::new(EtcdConfig::new(cluster.endpoints().to_vec()))
            .open()
            .await?;
        let hooks = ServerHooks {
            offered: with_restart(&*subject.hooks),
            inner: subject.hooks.clone(),
            server: Mutex::new(cluster),
        };
        Ok(subject.with_hooks(Arc::new(hooks)))
    }
}

/// One Redis deployment (a cluster, a primary under Sentinel) for every
/// case — starting several processes per case would cost more than the
/// cases — with a fresh namespace per case; no restart hook.
#[derive(Clone, Debug)]
pub struct SharedRedisFactory {
    url: Result<String, String>,
}

impl SharedRedisFactory {
    /// Cases on the deployment at `url`, or unavailable for why it could
    /// not be had.
    pub fn new(url: Result<&str, &ServerError>) -> Self {
        Self {
            url: url.map(str::to_owned).map_err(|why| why.0.clone()),
        }
    }
}

#[async_trait]
impl Factory for SharedRedisFactory {
    async fn open(&self) -> Result<Subject, BoxError> {
        let url = available(self.url.clone().map_err(ServerError))?;
        RedisFactory::new(RedisConfig::new(url)).open().await
    }
}
