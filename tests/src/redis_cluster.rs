//! A three-master Redis Cluster for one test.
//!
//! Always local processes, whatever the mode: cluster nodes tell clients
//! and each other the address they listen on, and a container's published
//! 127.0.0.1 port is not an address the other containers can reach. With
//! `LEASE_TEST_SERVERS=external`, `LEASE_TEST_REDIS_CLUSTER_URL` names a
//! cluster someone else runs (`redis+cluster://HOST:PORT[,HOST:PORT…]`).

use std::time::Duration;

use tokio::time::Instant;

use crate::mode::{Mode, free_port, mode};
use crate::{RedisOptions, RedisServer, ServerError};

const FORM_LIMIT: Duration = Duration::from_secs(30);
const SLOTS: u16 = 16384;

/// A running cluster of three primaries (no replicas), stopped on drop.
#[derive(Debug)]
pub struct RedisCluster {
    url: String,
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Three fresh nodes, the 16,384 slots split between them, started
    /// and joined; returns once every node reports the cluster ok.
    ///
    /// # Errors
    /// Why the cluster could not be had.
    pub async fn start() -> Result<Self, ServerError> {
        if mode() == Mode::External {
            let url = std::env::var("LEASE_TEST_REDIS_CLUSTER_URL").map_err(|_| {
                "LEASE_TEST_SERVERS=external needs LEASE_TEST_REDIS_CLUSTER_URL for a cluster"
                    .to_owned()
            })?;
            return Ok(Self {
                url,
                nodes: Vec::new(),
            });
        }
        let mut nodes = Vec::new();
        let mut buses = Vec::new();
        for _ in 0..3 {
            let (node, bus) = start_node().await?;
            nodes.push(node);
            buses.push(bus);
        }
        let cluster = Self {
            url: format!(
                "redis+cluster://{}",
                nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            nodes,
        };
        cluster.form(&buses).await?;
        Ok(cluster)
    }

    async fn form(&self, buses: &[u16]) -> Result<(), ServerError> {
        let share = SLOTS / 3;
        for (i, node) in self.nodes.iter().enumerate() {
            let first = share * i as u16;
            let last = if i == 2 { SLOTS - 1 } else { first + share - 1 };
            let _: () = query(
                node,
                redis::cmd("CLUSTER")
                    .arg("ADDSLOTSRANGE")
                    .arg(first)
                    .arg(last),
            )
            .await?;
        }
        for (node, bus) in self.nodes.iter().zip(buses).skip(1) {
            let _: () = query(
                &self.nodes[0],
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(node.port())
                    .arg(bus),
            )
            .await?;
        }
        let deadline = Instant::now() + FORM_LIMIT;
        loop {
            let mut formed = true;
            for node in &self.nodes {
                let info: String = query(node, redis::cmd("CLUSTER").arg("INFO")).await?;
                formed &=
                    info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3");
            }
            if formed {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the cluster did not form within {FORM_LIMIT:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The nodes (none for an external cluster).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Moves `slot` from the node that owns it to `to` (an index into
    /// [`nodes`](Self::nodes)), keys and all, the way `redis-cli --cluster
    /// reshard` does: importing, migrating, `MIGRATE` of `batch` keys at a
    /// time with `pause` between (so clients meet the slot half moved),
    /// then the new owner announced to every node.
    ///
    /// # Errors
    /// A failed command; external clusters cannot be resharded.
    pub async fn move_slot(
        &self,
        slot: u16,
        to: usize,
        batch: usize,
        pause: Duration,
    ) -> Result<(), ServerError> {
        let ids = self.node_ids().await?;
        let from = self.owner(slot).await?;
        if from == to {
            return Ok(());
        }
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        let _: () = query(
            target,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("IMPORTING")
                .arg(&ids[from]),
        )
        .await?;
        let _: () = query(
            source,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("MIGRATING")
                .arg(&ids[to]),
        )
        .await?;
        loop {
            let keys: Vec<String> = query(
                source,
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(batch),
            )
            .await?;
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(target.port())
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys);
            let _: String = query(source, &migrate).await?;
            tokio::time::sleep(pause).await;
        }
        for node in &self.nodes {
            let _: () = query(
                node,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&ids[to]),
            )
            .await?;
        }
        Ok(())
    }

    /// The slot of `key`, as the cluster computes it (`CLUSTER KEYSLOT`).
    ///
    /// # Errors
    /// A failed command.
    pub async fn slot_of(&self, key: &str) -> Result<u16, ServerError> {
        query(
            &self.nodes[0],
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(key),
        )
        .await
    }

    /// The number of keys `slot` holds on node `i`.
    ///
    /// # Errors
    /// A failed command.
    pub async fn keys_in(&self, slot: u16, i: usize) -> Result<u64, ServerError> {
        query(
            &self.nodes[i],
            redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot),
        )
        .await
    }

    /// The index of the node that owns `slot`, as the first node sees it.
    ///
    /// # Errors
    /// A failed command.
    pub async fn owner(&self, slot: u16) -> Result<usize, ServerError> {
        let ids = self.node_ids().await?;
        let table: String = query(&self.nodes[0], redis::cmd("CLUSTER").arg("NODES")).await?;
        // <id> <addr> <flags> <primary> <ping> <pong> <epoch> <link> <slot ranges…>
        let owner = table.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let owns = fields.iter().skip(8).any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
            });
            owns.then(|| fields[0].to_owned())
        });
        owner
            .and_then(|id| ids.iter().position(|i| *i == id))
            .ok_or_else(|| format!("no node owns slot {slot}").into())
    }

    async fn node_ids(&self) -> Result<Vec<String>, ServerError> {
        let mut ids = Vec::new();
        for node in &self.nodes {
            ids.push(query(node, redis::cmd("CLUSTER").arg("MYID")).await?);
        }
        Ok(ids)
    }

    /// Stops every node now.
    pub async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}

/// One cluster-enabled node on a fresh port, with its bus on another.
async fn start_node() -> Result<(RedisServer, u16), ServerError> {
    let mut last = None;
    for _ in 0..3 {
        let bus = free_port()?;
        let options = RedisOptions {
            extra_args: [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--cluster-port",
            ]
            .map(String::from)
            .into_iter()
            .chain([bus.to_string()])
            .collect(),
            ..RedisOptions::default()
        };
        match RedisServer::start_in(Mode::Local, options).await {
            Ok(node) => return Ok((node, bus)),
            Err(why) => last = Some(why),
        }
    }
    Err(last.unwrap_or_else(|| "no node started".to_owned().into()))
}

async fn query<T: redis::FromRedisValue>(
    node: &RedisServer,
    cmd: &redis::Cmd,
) -> Result<T, ServerError> {
    let client = redis::Client::open(node.url()).map_err(|e| e.to_string())?;
    let mut connection = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| format!("node {} did not answer", node.url()))?
    .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(10), cmd.query_async(&mut connection))
        .await
        .map_err(|_| format!("node {} did not answer", node.url()))?
        .map_err(|e| format!("{} on {}: {e}", cmd_name(cmd), node.url()).into())
}

fn cmd_name(cmd: &redis::Cmd) -> String {
    cmd.args_iter()
        .take(2)
        .filter_map(|arg| match arg {
            redis::Arg::Simple(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
}
