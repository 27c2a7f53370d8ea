//! How to reach etcd and how the store behaves.

use std::time::Duration;

use lease_core::LeaseError;

/// The backend's name in errors and capabilities.
pub(crate) const BACKEND: &str = "etcd";

/// The URL schemes [`EtcdConfig::from_url`] takes: `etcd://` (plain) and
/// `etcds://` (TLS).
pub const URL_SCHEMES: [&str; 2] = ["etcd://", "etcds://"];

/// Whether `url` is one [`EtcdConfig::from_url`] takes (by its scheme).
pub fn is_etcd_url(url: &str) -> bool {
    URL_SCHEMES.iter().any(|scheme| url.starts_with(scheme))
}

/// Settings for an [`EtcdStore`](crate::EtcdStore).
#[derive(Clone)]
pub struct EtcdConfig {
    pub(crate) endpoints: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) call_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) wait_recheck: Duration,
    pub(crate) root_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdConfig {
    /// Settings for the cluster at `endpoints` (`host:port` or `http://host:port`).
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "lease".to_owned(),
            credentials: None,
            call_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            wait_recheck: Duration::from_secs(1),
            root_ca: None,
        }
    }

    /// Settings for the cluster an `etcd://HOST:PORT[,HOST:PORT…]` URL
    /// names (`etcds://` for TLS). Credentials never go in the URL: give
    /// them to [`EtcdConfig::credentials`].
    ///
    /// # Errors
    /// [`LeaseError::InvalidConfig`] naming the URL and the rule when the
    /// scheme is not one of [`URL_SCHEMES`], no endpoint is listed, or the
    /// URL carries a user.
    pub fn from_url(url: &str) -> Result<Self, LeaseError> {
        let shown = lease_core::redacted_url(url);
        let invalid = |rule: &str| LeaseError::InvalidConfig {
            backend: "etcd",
            what: format!("URL {shown:?}"),
            rule: rule.to_owned(),
        };
        let (scheme, endpoints) = if let Some(rest) = url.strip_prefix("etcd://") {
            ("http", rest)
        } else if let Some(rest) = url.strip_prefix("etcds://") {
            ("https", rest)
        } else {
            return Err(invalid("must start with etcd:// or etcds://"));
        };
        let endpoints = endpoints.strip_suffix('/').unwrap_or(endpoints);
        if endpoints.is_empty()
            || endpoints.contains('@')
            || endpoints
                .split(',')
                .any(|e| e.is_empty() || e.contains('/'))
        {
            return Err(invalid(
                "must list HOST:PORT endpoints separated by commas, with no user or path: credentials are given apart (EtcdConfig::credentials; lease-admin --user)",
            ));
        }
        Ok(Self::new(
            endpoints.split(',').map(|e| format!("{scheme}://{e}")),
        ))
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Keys go under `{prefix}/` (default `lease`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Authenticate as `user`.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
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

    /// How often a waiter re-checks a key besides its watch (default 1 s).
    pub fn wait_recheck(mut self, every: Duration) -> Self {
        self.wait_recheck = every;
        self
    }

    /// Connect with TLS (`https://` endpoints), trusting this CA (PEM).
    /// Needs the `tls` feature.
    pub fn tls_root_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_ca = Some(pem.into());
        self
    }

    pub(crate) fn validate(&self) -> Result<(), LeaseError> {
        let invalid = |what: String, rule: &str| LeaseError::InvalidConfig {
            backend: "etcd",
            what,
            rule: rule.to_owned(),
        };
        if self.endpoints.is_empty() {
            return Err(invalid(
                "endpoints []".into(),
                "at least one endpoint is needed",
            ));
        }
        let prefix = &self.prefix;
        if prefix.is_empty()
            || prefix.ends_with('/')
            || prefix.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(invalid(
                format!("prefix {prefix:?}"),
                "must be non-empty, not end with '/', and hold no whitespace or control characters",
            ));
        }
        if self.root_ca.is_some() && !cfg!(feature = "tls") {
            return Err(invalid(
                "TLS root CA".into(),
                "TLS needs lease-etcd built with the `tls` feature",
            ));
        }
        lease_core::check_durations(
            "etcd",
            &[
                ("call timeout", self.call_timeout),
                ("connect timeout", self.connect_timeout),
                ("wait recheck", self.wait_recheck),
            ],
        )
    }
}
