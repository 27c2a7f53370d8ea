//! A Redis server for one test.

use std::time::Duration;

use testcontainers::bollard::models::{HostConfig, PortBinding};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::ServerError;
use crate::local::{LocalProcess, wait_ready};
use crate::mode::{
    Mode, container_name, free_port, mode, on_free_ports, redis_image, remove_container,
    split_image,
};

const START_LIMIT: Duration = Duration::from_secs(30);

/// How to start Redis.
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// Keep data across restarts (append-only file). Off by default: a
    /// restart loses everything, as with Redis run as a cache.
    pub persistence: bool,
    /// More `redis-server` arguments (ACL files, TLS settings …).
    pub extra_args: Vec<String>,
    /// Use TLS on the port: `(cert, key, ca)` file paths. Local mode only.
    pub tls: Option<(String, String, String)>,
}

enum Backing {
    Local {
        process: LocalProcess,
        _dir: tempfile::TempDir,
    },
    Container(Box<ContainerAsync<GenericImage>>),
    External,
}

/// A running Redis server, stopped on drop.
pub struct RedisServer {
    url: String,
    port: u16,
    mode: Mode,
    backing: Backing,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("url", &self.url)
            .field("mode", &self.mode)
            .finish()
    }
}

impl RedisServer {
    /// A fresh server in the mode of the environment.
    ///
    /// # Errors
    /// Why the server could not be had.
    pub async fn start() -> Result<Self, ServerError> {
        Self::start_with(RedisOptions::default()).await
    }

    /// A fresh server with `options`.
    ///
    /// # Errors
    /// Why the server could not be had.
    pub async fn start_with(options: RedisOptions) -> Result<Self, ServerError> {
        Self::start_in(mode(), options).await
    }

    /// A fresh server had in `mode`, whatever the environment says.
    ///
    /// # Errors
    /// Why the server could not be had.
    pub async fn start_in(mode: Mode, options: RedisOptions) -> Result<Self, ServerError> {
        match mode {
            Mode::External => {
                let url = std::env::var("LEASE_TEST_REDIS_URL").map_err(|_| {
                    "LEASE_TEST_SERVERS=external needs LEASE_TEST_REDIS_URL".to_owned()
                })?;
                Ok(Self {
                    url,
                    port: 0,
                    mode: Mode::External,
                    backing: Backing::External,
                })
            }
            Mode::Local => on_free_ports(|| Self::start_local(options.clone())).await,
            Mode::Containers if options.tls.is_some() => {
                on_free_ports(|| Self::start_local(options.clone())).await
            }
            Mode::Containers => on_free_ports(|| Self::start_container(options.clone())).await,
        }
    }

    /// A server someone else runs, at `url`: never restarted or stopped.
    pub fn external(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            port: 0,
            mode: Mode::External,
            backing: Backing::External,
        }
    }

    async fn start_local(options: RedisOptions) -> Result<Self, ServerError> {
        let port = free_port()?;
        let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
        let mut args = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.path().display().to_string(),
        ];
        args.extend(server_args(&options));
        let scheme = match &options.tls {
            Some((cert, key, ca)) => {
                args.extend(["--port", "0", "--tls-port"].map(String::from));
                args.push(port.to_string());
                args.extend([
                    "--tls-cert-file".into(),
                    cert.clone(),
                    "--tls-key-file".into(),
                    key.clone(),
                ]);
                args.extend([
                    "--tls-ca-cert-file".into(),
                    ca.clone(),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ]);
                "rediss"
            }
            None => {
                args.extend(["--port".into(), port.to_string()]);
                "redis"
            }
        };
        let tls = options.tls.is_some();
        let mut process = LocalProcess::spawn("redis-server", args, dir.path().join("redis.log"))?;
        wait_ready(&mut process, START_LIMIT, || probe(port, tls)).await?;
        Ok(Self {
            url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            mode: Mode::Local,
            backing: Backing::Local { process, _dir: dir },
        })
    }

    async fn start_container(options: RedisOptions) -> Result<Self, ServerError> {
        let port = free_port()?;
        let (name, tag) = split_image(&redis_image());
        let mut cmd = vec![
            "redis-server".to_owned(),
            "--port".into(),
            "6379".into(),
            "--bind".into(),
            "0.0.0.0".into(),
            "--protected-mode".into(),
            "no".into(),
        ];
        cmd.extend(server_args(&options));
        let container_name = container_name("redis");
        let container = GenericImage::new(name, tag)
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            .with_exposed_port(6379.tcp())
            .with_cmd(cmd)
            .with_container_name(container_name.clone())
            .with_startup_timeout(START_LIMIT)
            .with_host_config_modifier(move |host| publish_on_loopback(host, 6379, port))
            .start()
            .await
            .map_err(|e| {
                remove_container(&container_name);
                format!(
                    "cannot start a {} container: {e} (run scripts/test-images)",
                    redis_image()
                )
            })?;
        Ok(Self {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            mode: Mode::Containers,
            backing: Backing::Container(Box::new(container)),
        })
    }

    /// `redis://127.0.0.1:PORT` (or `rediss://` with TLS).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How this server was had.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Kills the server and starts it again on the same port. Without
    /// persistence every key is lost, as in a crash of a cache.
    ///
    /// # Errors
    /// External servers cannot be restarted; a server that does not come
    /// back is an error.
    pub async fn restart(&mut self) -> Result<(), ServerError> {
        let port = self.port;
        match &mut self.backing {
            Backing::External => Err("an external server cannot be restarted".to_owned().into()),
            Backing::Local { process, .. } => {
                let tls = self.url.starts_with("rediss");
                process.restart()?;
                wait_ready(process, START_LIMIT, || probe(port, tls))
                    .await
                    .map_err(Into::into)
            }
            Backing::Container(container) => {
                container
                    .stop_with_timeout(Some(0))
                    .await
                    .map_err(|e| format!("stop failed: {e}"))?;
                container
                    .start()
                    .await
                    .map_err(|e| format!("start failed: {e}"))?;
                let deadline = tokio::time::Instant::now() + START_LIMIT;
                while tcp_ping(port).await.is_err() {
                    if tokio::time::Instant::now() > deadline {
                        return Err(format!("redis on {port} did not come back").into());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(())
            }
        }
    }

    /// Freezes the server (SIGSTOP, or `docker pause`): connections stay
    /// open and nothing answers — a GC pause or a hung host.
    ///
    /// # Errors
    /// External servers cannot be paused.
    pub async fn pause(&self) -> Result<(), ServerError> {
        match &self.backing {
            Backing::External => Err("an external server cannot be paused".to_owned().into()),
            Backing::Local { process, .. } => process.pause().await.map_err(Into::into),
            Backing::Container(container) => container
                .pause()
                .await
                .map_err(|e| format!("pause failed: {e}").into()),
        }
    }

    /// Thaws a paused server.
    ///
    /// # Errors
    /// External servers cannot be paused or resumed.
    pub async fn resume(&self) -> Result<(), ServerError> {
        match &self.backing {
            Backing::External => Err("an external server cannot be resumed".to_owned().into()),
            Backing::Local { process, .. } => process.resume().map_err(Into::into),
            Backing::Container(container) => container
                .unpause()
                .await
                .map_err(|e| format!("unpause failed: {e}").into()),
        }
    }

    /// Stops and removes the server now (dropping does the same, later).
    pub async fn stop(self) {
        if let Backing::Container(container) = self.backing {
            let _ = container.rm().await;
        }
    }
}

fn server_args(options: &RedisOptions) -> Vec<String> {
    let mut args: Vec<String> = if options.persistence {
        vec![
            "--appendonly".into(),
            "yes".into(),
            "--appendfsync".into(),
            "always".into(),
        ]
    } else {
        vec![
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
        ]
    };
    args.extend(options.extra_args.iter().cloned());
    args
}

/// Publishes `container_port` on 127.0.0.1:`host_port` only.
pub(crate) fn publish_on_loopback(host: &mut HostConfig, container_port: u16, host_port: u16) {
    let binding = PortBinding {
        host_ip: Some("127.0.0.1".into()),
        host_port: Some(host_port.to_string()),
    };
    host.publish_all_ports = Some(false);
    host.port_bindings = Some([(format!("{container_port}/tcp"), Some(vec![binding]))].into());
}

/// Ready: answering PING, or for TLS (no handshake here) accepting connections.
async fn probe(port: u16, tls: bool) -> Result<(), String> {
    if tls {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    } else {
        tcp_ping(port).await
    }
}

/// PING over a raw connection: ready means answering, not just listening.
async fn tcp_ping(port: u16) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"PING\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut reply))
        .await
        .map_err(|_| "no reply".to_owned())?
        .map_err(|e| e.to_string())?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(format!("unexpected reply {reply:?}"))
    }
}
