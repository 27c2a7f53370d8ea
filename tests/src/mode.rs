//! Choosing how servers are had.

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// How a test gets its servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// testcontainers, from locally built or configured images.
    Containers,
    /// Child processes on loopback ports.
    Local,
    /// Endpoints given in the environment.
    External,
}

/// The mode from `LEASE_TEST_SERVERS`, or containers when a Docker engine
/// answers and the images exist, else local.
pub fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("LEASE_TEST_SERVERS").as_deref() {
        Ok("containers") => Mode::Containers,
        Ok("local") => Mode::Local,
        Ok("external") => Mode::External,
        Ok(other) if !other.is_empty() => {
            panic!("LEASE_TEST_SERVERS={other:?}: expected containers, local or external")
        }
        _ if docker_ready() => Mode::Containers,
        _ => Mode::Local,
    })
}

/// Whether a missing server fails the test (`LEASE_TEST_REQUIRE_SERVERS=1`).
pub fn servers_required() -> bool {
    matches!(
        std::env::var("LEASE_TEST_REQUIRE_SERVERS").as_deref(),
        Ok("1" | "true" | "yes")
    )
}

fn docker_ready() -> bool {
    let quiet = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    quiet(&["info"])
        && quiet(&["image", "inspect", &redis_image()])
        && quiet(&["image", "inspect", &etcd_image()])
}

/// Starts something on freshly picked ports, again with new ports when
/// another test took one between picking and binding.
pub(crate) async fn on_free_ports<T, F, Fut>(mut start: F) -> Result<T, crate::ServerError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::ServerError>>,
{
    let mut attempt = 0;
    loop {
        match start().await {
            Err(why) if attempt < 4 && port_taken(&why.0) => attempt += 1,
            other => return other,
        }
    }
}

fn port_taken(why: &str) -> bool {
    let why = why.to_lowercase();
    why.contains("already allocated")
        || why.contains("address already in use")
        || why.contains("address in use")
}

/// A free port on 127.0.0.1, as the kernel hands them out, and never one
/// handed out before, by this process or, within [`RESERVED_FOR`], by
/// another test process on the machine: the kernel may offer a port again
/// before the server it went to has bound it, and a second server on it
/// would fail while its readiness probe reached the first one. Test
/// binaries run side by side (`scripts/test` runs two lanes), so a
/// reservation is a file created with `create_new` in a folder every test
/// process shares.
pub(crate) fn free_port() -> Result<u16, String> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..64 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if handed_out.insert(port) && reserve(port) {
            return Ok(port);
        }
    }
    Err("no port on 127.0.0.1 that no test process has handed out already".to_owned())
}

/// How long another process' reservation of a port holds: long enough
/// for any server start, short enough that ports come back across runs.
const RESERVED_FOR: Duration = Duration::from_secs(600);

/// Reserves `port` across processes; false when another process holds it.
/// Where the folder cannot be used, only this process' own record counts.
fn reserve(port: u16) -> bool {
    let dir = std::env::temp_dir().join("lease-test-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let file = dir.join(port.to_string());
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
    };
    match create() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let stale = std::fs::metadata(&file)
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > RESERVED_FOR));
            // A stale reservation is removed and made again. Two processes
            // could both get through only if the kernel offered both the
            // same port at the same moment while a stale file lay there.
            stale && std::fs::remove_file(&file).is_ok() && create().is_ok()
        }
        Err(_) => true,
    }
}

/// A container name unique to this start, so that a start that failed
/// half-way (created, never started) can be removed by name.
pub(crate) fn container_name(kind: &str) -> String {
    format!("lease-test-{kind}-{:016x}", rand::random::<u64>())
}

/// Removes a container that was created but failed to start.
pub(crate) fn remove_container(name: &str) {
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// `name:tag` split for testcontainers.
pub(crate) fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (image.to_owned(), "latest".to_owned()),
    }
}

/// The Redis image for containers mode.
pub(crate) fn redis_image() -> String {
    std::env::var("LEASE_TEST_REDIS_IMAGE").unwrap_or_else(|_| "lease-test/redis:7".to_owned())
}

/// The etcd image for containers mode.
pub(crate) fn etcd_image() -> String {
    std::env::var("LEASE_TEST_ETCD_IMAGE").unwrap_or_else(|_| "lease-test/etcd:3.4".to_owned())
}
