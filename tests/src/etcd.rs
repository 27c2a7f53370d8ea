//! An etcd cluster (one member or three) for one test.

use std::time::Duration;

use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::ServerError;
use crate::local::{LocalProcess, wait_ready};
use crate::mode::{
    Mode, container_name, etcd_image, free_port, mode, on_free_ports, remove_container, split_image,
};

const START_LIMIT: Duration = Duration::from_secs(60);

/// How to start etcd.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Members of the cluster (1 or 3).
    pub members: usize,
    /// Serve clients over TLS: `(cert, key)` file paths. Local mode only.
    pub tls: Option<(String, String)>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            members: 1,
            tls: None,
        }
    }
}

enum Backing {
    Local(LocalProcess),
    Container(Box<ContainerAsync<GenericImage>>),
}

struct Member {
    client_port: u16,
    backing: Backing,
}

/// A running etcd cluster, stopped on drop. Containers run on the host
/// network, listening on 127.0.0.1 like local processes, so members reach
/// each other and tests reach them on loopback ports.
pub struct EtcdCluster {
    endpoints: Vec<String>,
    members: Vec<Member>,
    mode: Mode,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("endpoints", &self.endpoints)
            .field("mode", &self.mode)
            .finish()
    }
}

impl EtcdCluster {
    /// A fresh one-member cluster in the mode of the environment.
    ///
    /// # Errors
    /// Why the server could not be had.
    pub async fn start() -> Result<Self, ServerError> {
        Self::start_with(EtcdOptions::default()).await
    }

    /// A fresh cluster with `options`.
    ///
    /// # Errors
    /// Why the servers could not be had.
    pub async fn start_with(options: EtcdOptions) -> Result<Self, ServerError> {
        Self::start_in(mode(), options).await
    }

    /// A fresh cluster had in `mode`, whatever the environment says.
    ///
    /// # Errors
    /// Why the servers could not be had.
    pub async fn start_in(mode: Mode, options: EtcdOptions) -> Result<Self, ServerError> {
        on_free_ports(|| Self::start_once(mode, options.clone())).await
    }

    async fn start_once(mode: Mode, options: EtcdOptions) -> Result<Self, ServerError> {
        let mode = if options.tls.is_some() && mode == Mode::Containers {
            Mode::Local
        } else {
            mode
        };
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        if mode == Mode::External {
            let endpoints = std::env::var("LEASE_TEST_ETCD_ENDPOINTS").map_err(|_| {
                "LEASE_TEST_SERVERS=external needs LEASE_TEST_ETCD_ENDPOINTS".to_owned()
            })?;
            let endpoints = endpoints
                .split(',')
                .map(|e| e.trim().trim_start_matches("http://").to_owned())
                .collect();
            return Ok(Self {
                endpoints,
                members: Vec::new(),
                mode,
                _dir: None,
            });
        }
        let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
        let ports: Vec<(u16, u16)> = (0..options.members)
            .map(|_| Ok::<_, String>((free_port()?, free_port()?)))
            .collect::<Result<_, _>>()?;
        let token = format!("lease-test-{}", rand::random::<u32>());
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("n{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let data = if mode == Mode::Local {
                dir.path().join(format!("n{i}")).display().to_string()
            } else {
                format!("/data/n{i}")
            };
            let args = vec![
                format!("--name=n{i}"),
                format!("--data-dir={data}"),
                format!("--listen-client-urls={scheme}://127.0.0.1:{client}"),
                format!("--advertise-client-urls={scheme}://127.0.0.1:{client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-cluster={}", cluster.join(",")),
                format!("--initial-cluster-token={token}"),
                "--initial-cluster-state=new".into(),
                "--logger=zap".into(),
            ];
            let mut args = args;
            if let Some((cert, key)) = &options.tls {
                args.extend([format!("--cert-file={cert}"), format!("--key-file={key}")]);
            }
            let backing = match mode {
                Mode::Local => Backing::Local(LocalProcess::spawn(
                    "etcd",
                    args,
                    dir.path().join(format!("n{i}.log")),
                )?),
                _ => Backing::Container(Box::new(start_container(args).await?)),
            };
            members.push(Member {
                client_port: *client,
                backing,
            });
        }
        let tls = options.tls.is_some();
        for member in &mut members {
            let port = member.client_port;
            if let Backing::Local(process) = &mut member.backing {
                wait_ready(process, START_LIMIT, || ready(port, tls)).await?;
            } else {
                poll(START_LIMIT, || health(port)).await?;
            }
        }
        let endpoints = members
            .iter()
            .map(|m| match tls {
                true => format!("https://127.0.0.1:{}", m.client_port),
                false => format!("127.0.0.1:{}", m.client_port),
            })
            .collect();
        Ok(Self {
            endpoints,
            members,
            mode,
            _dir: Some(dir),
        })
    }

    /// A cluster someone else runs: never restarted or stopped.
    pub fn external<'a>(endpoints: impl IntoIterator<Item = &'a str>) -> Self {
        let endpoints = endpoints
            .into_iter()
            .map(|e| e.trim().trim_start_matches("http://").to_owned())
            .collect();
        Self {
            endpoints,
            members: Vec::new(),
            mode: Mode::External,
            _dir: None,
        }
    }

    /// The client endpoints, `127.0.0.1:PORT`.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// How this cluster was had.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Kills member `i` and starts it again on the same ports and data.
    ///
    /// # Errors
    /// External clusters cannot be restarted; a member that does not come
    /// back is an error.
    pub async fn restart_member(&mut self, i: usize) -> Result<(), ServerError> {
        let tls = self.endpoints.iter().any(|e| e.starts_with("https://"));
        let member = self
            .members
            .get_mut(i)
            .ok_or_else(|| format!("no member {i} to restart"))?;
        let port = member.client_port;
        match &mut member.backing {
            Backing::Local(process) => {
                process.restart()?;
                wait_ready(process, START_LIMIT, || ready(port, tls)).await?;
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
                poll(START_LIMIT, || health(port)).await?;
            }
        }
        Ok(())
    }

    /// Freezes member `i` (SIGSTOP, or `docker pause`): it holds its
    /// connections and answers nothing.
    ///
    /// # Errors
    /// External clusters cannot be paused.
    pub async fn pause_member(&self, i: usize) -> Result<(), ServerError> {
        match &self
            .members
            .get(i)
            .ok_or_else(|| format!("no member {i}"))?
            .backing
        {
            Backing::Local(process) => process.pause().await.map_err(Into::into),
            Backing::Container(container) => container
                .pause()
                .await
                .map_err(|e| format!("pause failed: {e}").into()),
        }
    }

    /// Thaws a paused member.
    ///
    /// # Errors
    /// External clusters cannot be paused or resumed.
    pub async fn resume_member(&self, i: usize) -> Result<(), ServerError> {
        match &self
            .members
            .get(i)
            .ok_or_else(|| format!("no member {i}"))?
            .backing
        {
            Backing::Local(process) => process.resume().map_err(Into::into),
            Backing::Container(container) => container
                .unpause()
                .await
                .map_err(|e| format!("unpause failed: {e}").into()),
        }
    }

    /// Stops and removes the cluster now (dropping does the same, later).
    pub async fn stop(self) {
        for member in self.members {
            if let Backing::Container(container) = member.backing {
                let _ = container.rm().await;
            }
        }
    }
}

async fn start_container(args: Vec<String>) -> Result<ContainerAsync<GenericImage>, ServerError> {
    let (name, tag) = split_image(&etcd_image());
    let container_name = container_name("etcd");
    GenericImage::new(name, tag)
        // Members of a cluster become ready together: readiness is polled
        // on /health once all are started.
        .with_wait_for(WaitFor::Nothing)
        .with_network("host")
        .with_cmd(std::iter::once("etcd".to_owned()).chain(args))
        .with_container_name(container_name.clone())
        .with_startup_timeout(START_LIMIT)
        .start()
        .await
        .map_err(|e| {
            remove_container(&container_name);
            format!(
                "cannot start a {} container: {e} (run scripts/test-images)",
                etcd_image()
            )
            .into()
        })
}

async fn poll<F, Fut>(limit: Duration, mut probe: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let give_up = tokio::time::Instant::now() + limit;
    loop {
        match probe().await {
            Ok(()) => return Ok(()),
            Err(why) if tokio::time::Instant::now() >= give_up => {
                return Err(format!("not ready after {limit:?}: {why}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Ready: healthy, or for TLS (no handshake here) accepting connections.
async fn ready(port: u16, tls: bool) -> Result<(), String> {
    if tls {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    } else {
        health(port).await
    }
}

/// `GET /health` answers `"health":"true"` once the member serves requests.
async fn health(port: u16) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut reply))
        .await
        .map_err(|_| "no reply".to_owned())?
        .map_err(|e| e.to_string())?;
    if reply.contains("\"health\":\"true\"") {
        Ok(())
    } else {
        Err(format!("not healthy: {reply}"))
    }
}
