//! How to reach Redis and how the store behaves.

use std::time::Duration;

use lease_core::LeaseError;

/// The backend's name in errors and capabilities.
pub(crate) const BACKEND: &str = "redis";

/// The URL schemes [`RedisConfig::new`] takes: one server, a cluster, a
/// primary under Sentinel, each plain or TLS.
pub const URL_SCHEMES: [&str; 6] = [
    "redis://",
    "rediss://",
    "redis+cluster://",
    "rediss+cluster://",
    "redis+sentinel://",
    "rediss+sentinel://",
];

/// Whether `url` is one [`RedisConfig::new`] takes (by its scheme).
pub fn is_redis_url(url: &str) -> bool {
    URL_SCHEMES.iter().any(|scheme| url.starts_with(scheme))
}

/// Settings for a [`RedisStore`](crate::RedisStore).
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) namespace: String,
    pub(crate) call_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) wait_recheck: Duration,
    pub(crate) restart_quarantine: Option<Duration>,
    pub(crate) wait_for_replicas: Option<(u32, Duration)>,
    pub(crate) root_ca: Option<Vec<u8>>,
}

impl RedisConfig {
    /// Settings for the server at `url`: `redis://[user:password@]host:port[/db]`,
    /// or `rediss://` for TLS (with the `tls` feature). For a Redis Cluster,
    /// `redis+cluster://[user:password@]host:port[,host:port…]` (or
    /// `rediss+cluster://`) names some of its nodes; the store learns the
    /// rest from them. For a primary under Sentinel,
    /// `redis+sentinel://[user:password@]host:port[,host:port…]/MASTER_NAME`
    /// (or `rediss+sentinel://`) names the sentinels and the master's name
    /// in their configuration; the credentials and TLS are the primary's,
    /// the sentinels are asked without.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: "lease".to_owned(),
            call_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            wait_recheck: Duration::from_secs(1),
            restart_quarantine: None,
            wait_for_replicas: None,
            root_ca: None,
        }
    }

    /// Keys go under `{namespace}:` (default `lease`). The braces make it
    /// the Redis Cluster hash tag.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The limit on every call (default 5 s).
    pub fn call_timeout(mut self, limit: Duration) -> Self {
        self.call_timeout = limit;
        self
    }

    /// The limit on connecting (default 5 s).
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// How often a waiter re-checks a key without a notification (default 1 s).
    pub fn wait_recheck(mut self, every: Duration) -> Self {
        self.wait_recheck = every;
        self
    }

    /// Turns on the restart quarantine, for servers whose restart can lose
    /// data (no persistence, or `appendfsync` other than `always`): when a
    /// namespace's data is gone and the server has been up for less than
    /// `longest_ttl`, no fresh grant is made in that namespace until it
    /// has — claims answer busy with a record whose holder is
    /// `restart-quarantine` (incarnation `redis`, token 0) and whose time
    /// left is the quarantine's. So a holder whose grant the restart
    /// erased is never joined by a second holder before its deadline. TTLs
    /// above `longest_ttl` are refused. Off by default: a fresh server
    /// looks exactly like one that lost its data, so with the quarantine
    /// on, a namespace first used within `longest_ttl` of the server's
    /// start waits out the rest of it too.
    pub fn restart_quarantine(mut self, longest_ttl: Duration) -> Self {
        self.restart_quarantine = Some(longest_ttl);
        self
    }

    /// After every write, waits up to `limit` for `replicas` replicas to
    /// acknowledge it (`WAIT`, sent in the same round trip as the script).
    /// A write fewer replicas acknowledged in time fails as indeterminate
    /// ([`LeaseError::is_indeterminate`]): the primary applied it (or
    /// refused it), so a claim may hold the key until its TTL, and a
    /// renewal does not count — the holder's deadline is not moved by a
    /// renewal a failover could lose. What it protects: a grant or
    /// renewal the store reported is on `replicas` replicas, so a failover
    /// to one of them keeps it. What it does not: `WAIT` does not make
    /// replication synchronous — a failover to a replica that had not
    /// acknowledged still loses it, and Sentinel may pick such a replica
    /// when several are behind; nor does it survive a restart of all of
    /// them without persistence. For one server or Sentinel, not a cluster.
    /// `limit` must be shorter than the call timeout.
    pub fn wait_for_replicas(mut self, replicas: u32, limit: Duration) -> Self {
        self.wait_for_replicas = Some((replicas, limit));
        self
    }

    /// Trust this CA (PEM) for `rediss://` instead of the system's roots.
    /// Needs the `tls` feature.
    pub fn tls_root_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_ca = Some(pem.into());
        self
    }

    /// The node URLs of a cluster URL, each `redis://` (or `rediss://`) with
    /// the URL's credentials; `None` for a single server.
    pub(crate) fn cluster_nodes(&self) -> Option<Vec<String>> {
        let (scheme, rest) = [
            ("redis", "redis+cluster://"),
            ("rediss", "rediss+cluster://"),
        ]
        .into_iter()
        .find_map(|(scheme, prefix)| Some((scheme, self.url.strip_prefix(prefix)?)))?;
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = hosts
            .strip_suffix("/0")
            .unwrap_or(hosts)
            .trim_end_matches('/');
        Some(
            hosts
                .split(',')
                .map(|host| format!("{scheme}://{auth}{host}"))
                .collect(),
        )
    }

    /// A sentinel URL's parts: the sentinels' `redis://host:port` URLs, the
    /// master's name, and the scheme and credentials (`user:password@`)
    /// for the primary; `None` for other URLs.
    pub(crate) fn sentinel(&self) -> Option<Sentinels> {
        let (scheme, rest) = [
            ("redis", "redis+sentinel://"),
            ("rediss", "rediss+sentinel://"),
        ]
        .into_iter()
        .find_map(|(scheme, prefix)| Some((scheme, self.url.strip_prefix(prefix)?)))?;
        let (hosts, master) = rest.rsplit_once('/').unwrap_or((rest, ""));
        let (auth, hosts) = match hosts.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), hosts),
        };
        Some(Sentinels {
            sentinels: hosts.split(',').map(|h| format!("redis://{h}")).collect(),
            master: master.to_owned(),
            scheme,
            auth,
        })
    }

    #[cfg(any(test, feature = "testing"))]
    /// Where a single server's URL points, as the byte range of its
    /// `host[:port]` in the URL; `None` for a cluster or Sentinel URL.
    fn server_range(&self) -> Option<std::ops::Range<usize>> {
        let after_scheme = ["redis://", "rediss://"]
            .into_iter()
            .find_map(|scheme| self.url.starts_with(scheme).then_some(scheme.len()))?;
        let rest = &self.url[after_scheme..];
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let start = rest[..end].rfind('@').map_or(0, |at| at + 1);
        (start < end).then_some(after_scheme + start..after_scheme + end)
    }

    #[cfg(any(test, feature = "testing"))]
    /// A single server's `host:port` (port 6379 when the URL gives none);
    /// `None` for a cluster or Sentinel URL.
    pub(crate) fn server_address(&self) -> Option<String> {
        let host = &self.url[self.server_range()?];
        let has_port = host
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
        Some(if has_port {
            host.to_owned()
        } else {
            format!("{host}:6379")
        })
    }

    #[cfg(any(test, feature = "testing"))]
    /// The same configuration reaching a single server at `address`
    /// (`host:port`) instead: credentials, database and options kept.
    /// `None` for a cluster or Sentinel URL.
    pub(crate) fn at_address(&self, address: &str) -> Option<Self> {
        let range = self.server_range()?;
        let mut config = self.clone();
        config.url.replace_range(range, address);
        Some(config)
    }

    /// The URL with any password replaced, for errors and logs.
    pub(crate) fn redacted_url(&self) -> String {
        lease_core::redacted_url(&self.url)
    }

    pub(crate) fn validate(&self) -> Result<(), LeaseError> {
        let invalid = |what: String, rule: &str| LeaseError::InvalidConfig {
            backend: "redis",
            what,
            rule: rule.to_owned(),
        };
        let ns = &self.namespace;
        if ns.is_empty() || ns.len() > 128 {
            return Err(invalid(
                format!("namespace {ns:?}"),
                "must be 1 to 128 bytes",
            ));
        }
        if ns
            .chars()
            .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                format!("namespace {ns:?}"),
                "must not contain braces, whitespace or control characters",
            ));
        }
        if let Some(nodes) = self.cluster_nodes() {
            let bad = nodes.iter().find(|node| {
                let host = node.split_once("://").map_or("", |(_, rest)| rest);
                let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
                host.contains('/')
                    || !host
                        .split_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && !p.is_empty())
            });
            if bad.is_some() {
                return Err(invalid(
                    format!("URL {}", self.redacted_url()),
                    "a cluster URL lists host:port nodes, separated by commas, with no database (a cluster has only database 0)",
                ));
            }
        }
        if let Some(sentinel) = self.sentinel() {
            let hosts_ok = sentinel.sentinels.iter().all(|s| {
                let host = &s["redis://".len()..];
                !host.contains('/')
                    && host
                        .split_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && !p.is_empty())
            });
            if !hosts_ok || sentinel.master.is_empty() {
                return Err(invalid(
                    format!("URL {}", self.redacted_url()),
                    "a sentinel URL lists host:port sentinels, separated by commas, then /MASTER_NAME",
                ));
            }
        }
        if ["rediss://", "rediss+cluster://", "rediss+sentinel://"]
            .iter()
            .any(|scheme| self.url.starts_with(scheme))
            && !cfg!(feature = "tls")
        {
            return Err(invalid(
                format!("URL {}", self.redacted_url()),
                "rediss:// needs lease-redis built with the `tls` feature",
            ));
        }
        if let Some((replicas, limit)) = self.wait_for_replicas {
            if self.cluster_nodes().is_some() {
                return Err(invalid(
                    "wait_for_replicas".to_owned(),
                    "is for one server or a primary under Sentinel, not a cluster URL",
                ));
            }
            if replicas == 0 || limit.is_zero() || limit >= self.call_timeout {
                return Err(invalid(
                    format!("wait_for_replicas({replicas}, {limit:?})"),
                    &format!(
                        "needs at least one replica and a limit above zero and below the call timeout ({:?})",
                        self.call_timeout
                    ),
                ));
            }
        }
        lease_core::check_durations(
            "redis",
            &[
                ("call timeout", self.call_timeout),
                ("connect timeout", self.connect_timeout),
                ("wait recheck", self.wait_recheck),
                (
                    "restart quarantine",
                    self.restart_quarantine.unwrap_or(Duration::MAX),
                ),
            ],
        )
    }
}

/// Where a primary under Sentinel is found (see [`RedisConfig::sentinel`]).
#[derive(Clone, Debug)]
pub(crate) struct Sentinels {
    pub sentinels: Vec<String>,
    pub master: String,
    pub scheme: &'static str,
    pub auth: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let config = RedisConfig::new("redis://app:s3cret@db.internal:6379/2");
        assert_eq!(config.redacted_url(), "redis://***@db.internal:6379/2");
    }

    #[test]
    fn cluster_urls_name_their_nodes() {
        let config = RedisConfig::new("redis+cluster://app:pw@10.0.0.1:7000,10.0.0.2:7001");
        assert_eq!(
            config.cluster_nodes().unwrap(),
            [
                "redis://app:pw@10.0.0.1:7000",
                "redis://app:pw@10.0.0.2:7001"
            ]
        );
        config.validate().unwrap();
        assert_eq!(
            RedisConfig::new("redis+cluster://h:1/")
                .cluster_nodes()
                .unwrap(),
            ["redis://h:1"]
        );
        assert!(RedisConfig::new("redis://h:1").cluster_nodes().is_none());
        for bad in [
            "redis+cluster://",
            "redis+cluster://h:1,",
            "redis+cluster://h:1/2",
            "redis+cluster://h",
        ] {
            let err = RedisConfig::new(bad).validate().unwrap_err().to_string();
            assert!(err.contains("cluster URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_single_servers_address_is_found_and_replaced() {
        let config = RedisConfig::new("redis://app:p@ss@10.0.0.5:6380/2?protocol=resp3");
        assert_eq!(config.server_address().as_deref(), Some("10.0.0.5:6380"));
        let moved = config.at_address("127.0.0.1:9").unwrap();
        assert_eq!(moved.url, "redis://app:p@ss@127.0.0.1:9/2?protocol=resp3");
        assert_eq!(
            RedisConfig::new("rediss://cache.internal")
                .server_address()
                .as_deref(),
            Some("cache.internal:6379")
        );
        assert_eq!(
            RedisConfig::new("redis+cluster://a:1,b:2").server_address(),
            None
        );
        assert!(
            RedisConfig::new("redis+sentinel://s:26379/m")
                .at_address("x:1")
                .is_none()
        );
    }

    #[test]
    fn sentinel_urls_name_their_sentinels_and_master() {
        let config =
            RedisConfig::new("redis+sentinel://app:pw@10.0.0.1:26379,10.0.0.2:26379/orders");
        let sentinel = config.sentinel().unwrap();
        assert_eq!(
            sentinel.sentinels,
            ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"]
        );
        assert_eq!(
            (
                sentinel.master.as_str(),
                sentinel.scheme,
                sentinel.auth.as_str()
            ),
            ("orders", "redis", "app:pw@")
        );
        config.validate().unwrap();
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel:///m",
            "redis+sentinel://h/m",
        ] {
            let err = RedisConfig::new(bad).validate().unwrap_err().to_string();
            assert!(err.contains("sentinel URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn namespaces_are_checked() {
        for bad in ["", "a{b", "a}b", "a b"] {
            let err = RedisConfig::new("redis://x")
                .namespace(bad)
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains("namespace"), "{err}");
        }
        RedisConfig::new("redis://x")
            .namespace("billing:eu")
            .validate()
            .unwrap();
    }
}
