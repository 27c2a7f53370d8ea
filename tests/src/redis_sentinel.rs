//! A Redis primary with replicas, watched by three sentinels.
//!
//! Local processes, whatever the mode, for the reason the cluster is: the
//! sentinels hand clients the addresses the servers announce, and those
//! must be reachable from the host. With `LEASE_TEST_SERVERS=external`,
//! `LEASE_TEST_REDIS_SENTINEL_URL` names a deployment someone else runs
//! (`redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER_NAME`).

use std::time::Duration;

use tokio::time::Instant;

use crate::local::{LocalProcess, wait_ready};
use crate::mode::{Mode, free_port, mode};
use crate::{RedisOptions, RedisServer, ServerError};

/// The master's name in the sentinels' configuration.
pub const MASTER_NAME: &str = "leases";
const READY_LIMIT: Duration = Duration::from_secs(30);

struct SentinelProcess {
    port: u16,
    _process: LocalProcess,
    _dir: tempfile::TempDir,
}

/// A primary, its replicas and three sentinels (quorum two), stopped on
/// drop.
pub struct RedisSentinel {
    url: String,
    servers: Vec<Option<RedisServer>>,
    sentinels: Vec<SentinelProcess>,
}

impl std::fmt::Debug for RedisSentinel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSentinel")
            .field("url", &self.url)
            .finish()
    }
}

impl RedisSentinel {
    /// Starts the primary, its replica (synced) and the sentinels, and
    /// returns once every sentinel knows the replica and the other two.
    ///
    /// # Errors
    /// Why the deployment could not be had.
    pub async fn start() -> Result<Self, ServerError> {
        Self::start_with_replicas(1).await
    }

    /// As [`start`](Self::start), with `replicas` replicas.
    ///
    /// # Errors
    /// Why the deployment could not be had.
    pub async fn start_with_replicas(replicas: usize) -> Result<Self, ServerError> {
        if mode() == Mode::External {
            let url = std::env::var("LEASE_TEST_REDIS_SENTINEL_URL").map_err(|_| {
                "LEASE_TEST_SERVERS=external needs LEASE_TEST_REDIS_SENTINEL_URL for Sentinel"
                    .to_owned()
            })?;
            return Ok(Self {
                url,
                servers: Vec::new(),
                sentinels: Vec::new(),
            });
        }
        let primary = RedisServer::start_in(Mode::Local, RedisOptions::default()).await?;
        let primary_port = primary.port();
        let mut servers = vec![Some(primary)];
        for _ in 0..replicas {
            let replica = RedisServer::start_in(
                Mode::Local,
                RedisOptions {
                    extra_args: [
                        "--replicaof".into(),
                        "127.0.0.1".into(),
                        primary_port.to_string(),
                    ]
                    .into(),
                    ..RedisOptions::default()
                },
            )
            .await?;
            wait_for(&replica, "replication", "master_link_status:up").await?;
            servers.push(Some(replica));
        }
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(start_sentinel(primary_port).await?);
        }
        let deployment = Self {
            url: format!(
                "redis+sentinel://{}/{MASTER_NAME}",
                sentinels
                    .iter()
                    .map(|s| format!("127.0.0.1:{}", s.port))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            servers,
            sentinels,
        };
        deployment.wait_until_watched(replicas).await?;
        Ok(deployment)
    }

    async fn wait_until_watched(&self, replicas: usize) -> Result<(), ServerError> {
        let give_up = Instant::now() + READY_LIMIT;
        loop {
            let mut ready = true;
            for sentinel in &self.sentinels {
                let fields: Vec<String> = sentinel_query(
                    sentinel.port,
                    redis::cmd("SENTINEL").arg("MASTER").arg(MASTER_NAME),
                )
                .await
                .unwrap_or_default();
                let field = |name: &str| {
                    fields
                        .iter()
                        .position(|f| f == name)
                        .and_then(|i| fields.get(i + 1))
                        .cloned()
                        .unwrap_or_default()
                };
                ready &= field("num-slaves") == replicas.to_string()
                    && field("num-other-sentinels") == "2";
            }
            if ready {
                return Ok(());
            }
            if Instant::now() > give_up {
                return Err(format!(
                    "the sentinels did not see each other and the replica within {READY_LIMIT:?}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/leases`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port of the primary the sentinels name now.
    ///
    /// # Errors
    /// No sentinel answered.
    pub async fn primary_port(&self) -> Result<u16, ServerError> {
        let mut why = String::from("no sentinels");
        for sentinel in &self.sentinels {
            match sentinel_query::<(String, u16)>(
                sentinel.port,
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(MASTER_NAME),
            )
            .await
            {
                Ok((_, port)) => return Ok(port),
                Err(e) => why = e,
            }
        }
        Err(why.into())
    }

    /// Kills the current primary (SIGKILL): the sentinels notice within a
    /// second and promote the replica.
    ///
    /// # Errors
    /// External deployments cannot be killed; no primary known.
    pub async fn kill_primary(&mut self) -> Result<(), ServerError> {
        let port = self.primary_port().await?;
        let slot = self
            .servers
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|s| s.port() == port))
            .ok_or_else(|| format!("no server of ours on {port}"))?;
        if let Some(server) = slot.take() {
            server.stop().await;
        }
        Ok(())
    }

    /// Stops the server that is not the primary (SIGKILL).
    ///
    /// # Errors
    /// External deployments cannot be stopped; no primary known.
    pub async fn kill_replica(&mut self) -> Result<(), ServerError> {
        let port = self.primary_port().await?;
        let slot = self
            .servers
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|s| s.port() != port))
            .ok_or_else(|| "no replica of ours".to_owned())?;
        if let Some(server) = slot.take() {
            server.stop().await;
        }
        Ok(())
    }

    /// Waits until the sentinels name a primary other than `old` that says
    /// it is one; returns its port.
    ///
    /// # Errors
    /// No failover within the limit.
    pub async fn wait_for_new_primary(
        &self,
        old: u16,
        limit: Duration,
    ) -> Result<u16, ServerError> {
        let give_up = Instant::now() + limit;
        loop {
            if let Ok(port) = self.primary_port().await
                && port != old
                && is_primary(port).await
            {
                return Ok(port);
            }
            if Instant::now() > give_up {
                return Err(format!("no failover within {limit:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether the server on `port` says it is a primary.
async fn is_primary(port: u16) -> bool {
    let role: Result<Vec<redis::Value>, _> = sentinel_query(port, &redis::cmd("ROLE")).await;
    matches!(role.as_deref(), Ok([redis::Value::BulkString(role), ..]) if role == b"master")
}

async fn start_sentinel(primary: u16) -> Result<SentinelProcess, ServerError> {
    let port = free_port()?;
    let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 3000\n",
            dir.path().display()
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    let mut process = LocalProcess::spawn(
        "redis-server",
        vec![conf.display().to_string(), "--sentinel".into()],
        dir.path().join("sentinel.log"),
    )?;
    wait_ready(&mut process, READY_LIMIT, || async move {
        sentinel_query::<String>(port, &redis::cmd("PING"))
            .await
            .map(drop)
    })
    .await?;
    Ok(SentinelProcess {
        port,
        _process: process,
        _dir: dir,
    })
}

/// Waits until `INFO section` of `server` contains `text`.
async fn wait_for(server: &RedisServer, section: &str, text: &str) -> Result<(), ServerError> {
    let give_up = Instant::now() + READY_LIMIT;
    loop {
        let info: Result<String, _> =
            sentinel_query(server.port(), redis::cmd("INFO").arg(section)).await;
        if info.is_ok_and(|info| info.contains(text)) {
            return Ok(());
        }
        if Instant::now() > give_up {
            return Err(format!("{} never reported {text}", server.url()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One command to the server (sentinel or not) on `port`.
async fn sentinel_query<T: redis::FromRedisValue>(
    port: u16,
    cmd: &redis::Cmd,
) -> Result<T, String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(2), async {
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        cmd.query_async(&mut connection)
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| format!("127.0.0.1:{port} did not answer"))?
}
