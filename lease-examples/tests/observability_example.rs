//! The `observability` example as a user runs it: on memory, Redis and
//! etcd, its `/metrics` page shows the documented names while it works,
//! and it exits 0 when its time is up — non-zero on an unreachable target.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use lease_tests::{EtcdCluster, RedisServer, or_skip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The example's binary, built by `cargo test` beside this test's.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("this test's path");
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    debug.join("examples").join("observability")
}

/// `GET /metrics` at `addr`, the body.
async fn metrics_page(addr: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut page = String::new();
    stream.read_to_string(&mut page).await?;
    Ok(page)
}

/// A port nothing else binds meanwhile (see `lease_tests::free_port`).
fn free_port() -> u16 {
    lease_tests::free_port().expect("a free port")
}

/// Runs the example on `target` for a few seconds; checks its page
/// mid-run and its exit.
async fn runs_and_reports(target: &str, backend: &str) {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = tokio::process::Command::new(example())
        .args([target, "--metrics-addr", &addr, "--seconds", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the example starts (built by cargo test)");
    // Looked at until every name shows (the first renewal comes a third
    // of the 3 s TTL in), for as long as the example runs: a slow runner
    // delays the figures, it does not fail the test.
    let names = [
        format!(
            "lease_store_calls_total{{backend=\"{backend}\",operation=\"claim\",outcome=\"acquired\"}} 3"
        ),
        format!(
            "lease_store_calls_total{{backend=\"{backend}\",operation=\"guarded_write\",outcome=\"ok\"}}"
        ),
        format!(
            "lease_store_calls_total{{backend=\"{backend}\",operation=\"renew_many\",outcome=\"renewed\"}}"
        ),
        format!(
            "lease_store_call_duration_seconds_count{{backend=\"{backend}\",operation=\"claim\"}} 3"
        ),
        format!("lease_store_batch_size_count{{backend=\"{backend}\",operation=\"renew_many\"}}"),
        "lease_keeper_leases_held{leaser=\"worker\"} 3".to_owned(),
        "lease_keeper_renewals_total{leaser=\"worker\"}".to_owned(),
        "lease_keeper_call_seconds_count{leaser=\"worker\"}".to_owned(),
    ];
    let mut page = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        match metrics_page(&addr).await {
            Ok(now) => page = now,
            Err(_) => continue,
        }
        if names.iter().all(|name| page.contains(name.as_str())) {
            break;
        }
    }
    for name in &names {
        assert!(
            page.contains(name.as_str()),
            "{backend}: no {name} in\n{page}"
        );
    }
    let out = child.wait_with_output().await.expect("the example ends");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{backend}: {:?}\n{said}", out.status);
    assert!(said.contains("holding 3 shards"), "{said}");
    assert!(said.contains(", lost 0"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_reports_on_memory() {
    runs_and_reports("memory", "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_reports_on_redis() {
    let Some(server) = or_skip("redis", RedisServer::start().await) else {
        return;
    };
    runs_and_reports(server.url(), "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_reports_on_etcd() {
    let Some(cluster) = or_skip("etcd", EtcdCluster::start().await) else {
        return;
    };
    let target = format!("etcd://{}", cluster.endpoints()[0]);
    runs_and_reports(&target, "etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_fails() {
    let port = free_port();
    let out = tokio::process::Command::new(example())
        .args([
            &format!("redis://127.0.0.1:{port}"),
            "--metrics-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--seconds",
            "1",
        ])
        .output()
        .await
        .expect("the example starts");
    assert!(!out.status.success(), "{out:?}");
}
