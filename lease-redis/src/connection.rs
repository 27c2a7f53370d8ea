//! One connection type for a single server, a Redis Cluster, and a
//! primary under Sentinel.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

use tokio::time::Instant;

use crate::config::Sentinels;

/// A single server's connection (reconnecting), a cluster's (following
/// `MOVED` and `ASK`, routing each script by its first key's slot), or a
/// Sentinel-managed primary's (following failovers). Clones share the
/// connection.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelPrimary>),
}

/// The primary the sentinels name, and a connection to it. A call that
/// fails the way calls to a demoted or dead primary fail (`READONLY`, a
/// lost connection, no answer) makes the store ask the sentinels again and,
/// when they name another primary that says it is one, switch to it. The
/// failed call still fails: whether it was applied is for the caller to
/// treat as it treats any indeterminate call.
pub(crate) struct SentinelPrimary {
    sentinels: Sentinels,
    open: OpenClient,
    manager_config: ConnectionManagerConfig,
    connect_timeout: Duration,
    current: RwLock<(String, redis::Client, ConnectionManager)>,
    followed: tokio::sync::Mutex<Instant>,
}

/// Opens a client for a primary's URL (with the store's TLS settings).
pub(crate) type OpenClient = Box<dyn Fn(&str) -> redis::RedisResult<redis::Client> + Send + Sync>;

/// Asked again at most this often, however many calls fail at once.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);

impl SentinelPrimary {
    /// Finds the primary and connects to it.
    pub async fn connect(
        sentinels: Sentinels,
        open: OpenClient,
        manager_config: ConnectionManagerConfig,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let url = primary_url(&sentinels, connect_timeout).await?;
        let (url, client, manager) =
            connect_primary(url, &*open, &manager_config, connect_timeout).await?;
        Ok(Self {
            sentinels,
            open,
            manager_config,
            connect_timeout,
            current: RwLock::new((url, client, manager)),
            followed: tokio::sync::Mutex::new(Instant::now()),
        })
    }

    fn manager(&self) -> ConnectionManager {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .2
            .clone()
    }

    /// A client for the current primary (for the release subscription).
    pub fn client(&self) -> redis::Client {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Asks the sentinels where the primary is, and switches to it if it
    /// moved (connecting only then).
    pub async fn follow(&self) {
        let mut followed = self.followed.lock().await;
        if followed.elapsed() < FOLLOW_EVERY {
            return;
        }
        let current = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone();
        let found = match primary_url(&self.sentinels, self.connect_timeout).await {
            Ok(url) if url == current => Ok(None),
            Ok(url) => {
                connect_primary(url, &*self.open, &self.manager_config, self.connect_timeout)
                    .await
                    .map(Some)
            }
            Err(why) => Err(why),
        };
        match found {
            Ok(Some((url, client, manager))) => {
                tracing::info!(primary = %lease_core::redacted_url(&url), "redis primary moved; following it");
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (url, client, manager);
            }
            Ok(None) => {}
            Err(why) => tracing::debug!(%why, "no redis primary found yet"),
        }
        *followed = Instant::now();
    }
}

/// The primary the first answering sentinel names, as a URL with the
/// primary's scheme and credentials.
async fn primary_url(sentinels: &Sentinels, limit: Duration) -> Result<String, String> {
    let mut why = String::from("no sentinel answered");
    for sentinel in &sentinels.sentinels {
        let asked = tokio::time::timeout(limit, async {
            let client = redis::Client::open(sentinel.as_str()).map_err(|e| e.to_string())?;
            let mut connection = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let address: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&sentinels.master)
                .query_async(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            let (host, port) =
                address.ok_or_else(|| format!("it knows no master {:?}", sentinels.master))?;
            Ok::<_, String>(format!(
                "{}://{}{host}:{port}",
                sentinels.scheme, sentinels.auth
            ))
        })
        .await;
        match asked {
            Ok(Ok(url)) => return Ok(url),
            Ok(Err(e)) => why = format!("sentinel {sentinel}: {e}"),
            Err(_) => why = format!("sentinel {sentinel}: no answer within {limit:?}"),
        }
    }
    Err(why)
}

/// A connection to the server at `url`, if it says it is a primary.
async fn connect_primary(
    url: String,
    open: &(dyn Fn(&str) -> redis::RedisResult<redis::Client> + Send + Sync),
    manager_config: &ConnectionManagerConfig,
    limit: Duration,
) -> Result<(String, redis::Client, ConnectionManager), String> {
    let shown = lease_core::redacted_url(&url);
    tokio::time::timeout(limit, async {
        let client = open(&url).map_err(|e| e.to_string())?;
        let mut manager = client
            .get_connection_manager_with_config(manager_config.clone())
            .await
            .map_err(|e| e.to_string())?;
        let role: Vec<redis::Value> = redis::cmd("ROLE")
            .query_async(&mut manager)
            .await
            .map_err(|e| e.to_string())?;
        match role.first() {
            Some(redis::Value::BulkString(role)) if role == b"master" => Ok((url, client, manager)),
            _ => Err(format!("{shown} is not a primary yet")),
        }
    })
    .await
    .map_err(|_| format!("{shown}: no answer within {limit:?}"))?
}

/// Whether `error` is how a call to a primary that is gone or demoted fails.
fn lost_primary(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(error.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}

impl Connection {
    /// Runs `cmd` on the primary that owns `key`'s slot: for the commands
    /// a cluster cannot route by their arguments (`SCAN`).
    pub async fn query_at<T: FromRedisValue>(&mut self, cmd: &Cmd, key: &str) -> RedisResult<T> {
        match self {
            Self::Single(connection) => cmd.query_async(connection).await,
            Self::Sentinel(_) => cmd.query_async(self).await,
            Self::Cluster(connection) => {
                let route = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value = connection.route_command(cmd.clone(), routing).await?;
                Ok(T::from_redis_value(value)?)
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
            Self::Sentinel(primary) => Box::pin(async move {
                let result = primary.manager().req_packed_command(cmd).await;
                if result.as_ref().is_err_and(lost_primary) {
                    primary.follow().await;
                }
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(primary) => Box::pin(async move {
                let result = primary
                    .manager()
                    .req_packed_commands(pipeline, offset, count)
                    .await;
                if result.as_ref().is_err_and(lost_primary) {
                    primary.follow().await;
                }
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
            Self::Sentinel(_) => 0,
        }
    }
}
