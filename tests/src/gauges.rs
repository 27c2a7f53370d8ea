//! What servers and this process report about their own work, for
//! benchmarks and tests: etcd's Prometheus metrics, Redis' `INFO`, this
//! process's CPU time.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// etcd's `/metrics` page.
pub async fn etcd_metrics(endpoint: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(endpoint)
        .await
        .expect("etcd metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .expect("etcd metrics");
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .await
        .expect("etcd metrics");
    text
}

/// The sum of every sample of the metric `name` in a `/metrics` page.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// etcd's CPU seconds so far.
pub async fn etcd_cpu(endpoint: &str) -> f64 {
    metric_sum(&etcd_metrics(endpoint).await, "process_cpu_seconds_total")
}

/// Requests etcd has received so far, over every gRPC method (one per
/// unary call, one per message on a stream).
pub async fn etcd_requests(endpoint: &str) -> f64 {
    metric_sum(
        &etcd_metrics(endpoint).await,
        "grpc_server_msg_received_total",
    )
}

/// A field of Redis' `INFO` as a number, summed over every line that
/// names it (`calls` adds up every command's calls).
pub async fn redis_info(
    connection: &mut redis::aio::MultiplexedConnection,
    section: &str,
    field: &str,
) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(connection)
        .await
        .expect("INFO");
    info.lines()
        .flat_map(|line| {
            let (name, rest) = line.split_once(':').unwrap_or((line, ""));
            let whole = (name == field)
                .then(|| rest.trim().parse::<f64>().ok())
                .flatten();
            let inner = rest.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == field).then(|| v.parse::<f64>().ok()).flatten()
            });
            whole.or(inner)
        })
        .sum()
}

/// How often clients called `command` (lowercase, as `INFO commandstats`
/// names it). Commands a script runs are counted under their own names.
pub async fn redis_calls(connection: &mut redis::aio::MultiplexedConnection, command: &str) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix)?.split(',').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Redis' CPU seconds so far, user and system.
pub async fn redis_cpu(connection: &mut redis::aio::MultiplexedConnection) -> f64 {
    redis_info(connection, "cpu", "used_cpu_sys").await
        + redis_info(connection, "cpu", "used_cpu_user").await
}

/// This process's CPU seconds so far.
pub fn client_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
