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

/// A free port on 127.0.0.1 that no test process on the machine has been
/// handed within [`RESERVED_FOR`], and that nothing binding port 0 can be
/// given while the server it goes to starts.
///
/// A port is handed out before its server binds it. Were it one the kernel
/// hands out for port 0, anything binding port 0 in that moment (a
/// fault-injecting proxy of the suite, in this or another test process)
/// could take it: the server would then fail to bind while its readiness
/// probe reached, through that proxy, another test's server — and a test
/// pausing "its" server would watch a stranger answer. So ports come from
/// outside the kernel's ephemeral range (`ip_local_port_range`), where
/// neither port 0 nor outgoing connections land, and a bind checks that
/// none is in use now. Test binaries run side by side (`scripts/test` runs
/// two lanes), so a reservation is a file created with `create_new` in a
/// folder every test process shares.
pub fn free_port() -> Result<u16, String> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let windows = fixed_port_windows();
    let total: u32 = windows
        .iter()
        .map(|(low, high)| u32::from(high - low))
        .sum();
    if total == 0 {
        return Err(
            "no port on 127.0.0.1 outside the kernel's ephemeral range (ip_local_port_range)"
                .to_owned(),
        );
    }
    for _ in 0..256 {
        let mut pick = rand::random_range(0..total);
        let mut port = 0;
        for (low, high) in &windows {
            let size = u32::from(high - low);
            if pick < size {
                port = low + u16::try_from(pick).expect("inside a u16 window");
                break;
            }
            pick -= size;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if handed_out.insert(port) && reserve(port) {
            return Ok(port);
        }
    }
    Err("no port on 127.0.0.1 that no test process has handed out already".to_owned())
}

/// The port windows `[low, high)` outside the kernel's ephemeral range,
/// above the well-known ports.
fn fixed_port_windows() -> Vec<(u16, u16)> {
    const FIRST: u16 = 10_000;
    let (ephemeral_low, ephemeral_high) =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|range| {
                let mut bounds = range.split_whitespace().map(str::parse::<u16>);
                Some((bounds.next()?.ok()?, bounds.next()?.ok()?))
            })
            // Linux's default.
            .unwrap_or((32_768, 60_999));
    [
        (FIRST, ephemeral_low.max(FIRST)),
        (ephemeral_high.saturating_add(1).max(FIRST), u16::MAX),
    ]
    .into_iter()
    .filter(|(low, high)| low < high)
    .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_handed_out_are_outside_the_ephemeral_range_and_distinct() {
        let windows = fixed_port_windows();
        assert!(!windows.is_empty(), "no window outside the ephemeral range");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let port = free_port().expect("a free port");
            assert!(
                windows
                    .iter()
                    .any(|(low, high)| (*low..*high).contains(&port)),
                "port {port} is outside every window {windows:?}"
            );
            assert!(seen.insert(port), "port {port} handed out twice");
        }
        // What port 0 gets is never among them, whatever binds it.
        for _ in 0..200 {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            assert!(!seen.contains(&port), "port 0 was given {port}, handed out");
        }
    }
}
