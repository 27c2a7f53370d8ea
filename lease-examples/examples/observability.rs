//! A worker holding a few leases, observed: every store call traced and
//! counted through `Instrumented`, the keeper's figures under the
//! leaser's name, Prometheus metrics served over HTTP and spans printed.
//!
//! ```sh
//! cargo run -p lease-examples --example observability -- [TARGET] [--metrics-addr HOST:PORT] [--seconds N]
//! curl -s http://127.0.0.1:9464/metrics | grep lease_
//! ```
//!
//! TARGET is `memory` (the default), `redis://HOST:PORT` or
//! `etcd://HOST:PORT`; metrics are served at 127.0.0.1:9464 by default;
//! the worker runs N seconds, or until interrupted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{Acquire, Holder, Instrumented, LeaseKey, Leaser};
use metrics_exporter_prometheus::PrometheusBuilder;
use tracing_subscriber::fmt::format::FmtSpan;

/// The command line: a target and two options.
struct Args {
    target: String,
    metrics_addr: SocketAddr,
    seconds: Option<u64>,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        target: "memory".to_owned(),
        metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
        seconds: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        let mut value = |name: &str| given.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--metrics-addr" => {
                let addr = value("--metrics-addr")?;
                args.metrics_addr = addr.parse().map_err(|e| {
                    format!("--metrics-addr {addr:?}: not a HOST:PORT socket address ({e})")
                })?;
            }
            "--seconds" => {
                let n = value("--seconds")?;
                args.seconds = Some(n.parse().map_err(|e| {
                    format!("--seconds {n:?}: not a whole number of seconds ({e})")
                })?);
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            target => target.clone_into(&mut args.target),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    // Spans of store calls (DEBUG) and the library's log lines, printed
    // as each span closes with its fields and timing.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .with_target(false)
        .init();
    PrometheusBuilder::new()
        .with_http_listener(args.metrics_addr)
        .install()
        .map_err(|e| format!("metrics on {}: {e}", args.metrics_addr))?;
    println!("metrics: http://{}/metrics", args.metrics_addr);

    let store: lease_core::DynLeaseStore = Arc::new(Instrumented::new(
        lease_examples::store_at(&args.target).await?,
    ));
    let ttl = lease_examples::demo_ttl(&*store, Duration::from_secs(3));
    let leaser = Leaser::new(store.clone(), Holder::unique("worker")?, ttl).named("worker");
    let mut held = Vec::new();
    for shard in 0..3 {
        let key = LeaseKey::new(format!("shards/{shard}"))?;
        match leaser.try_acquire(&key).await? {
            Acquire::Held(lease) => held.push(lease),
            Acquire::Busy(record) => println!("{key} is busy: {record:?}"),
        }
    }
    println!("holding {} shards, TTL {ttl:?}", held.len());

    // The work: each shard's output written fenced by its lease, until
    // time is up, a lease is lost, or Ctrl-C.
    let work = async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        for round in 0u64.. {
            tick.tick().await;
            for lease in &held {
                let out = LeaseKey::new(format!("{}/output", lease.fence().key))?;
                store
                    .guarded_write(lease.fence(), &out, format!("round {round}").as_bytes())
                    .await?;
            }
        }
        Ok::<(), lease_core::LeaseError>(())
    };
    let time_up = async {
        match args.seconds {
            Some(n) => tokio::time::sleep(Duration::from_secs(n)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = work => result?,
        () = time_up => println!("time is up"),
        _ = tokio::signal::ctrl_c() => println!("interrupted"),
    }
    for lease in held {
        lease.release().await?;
    }
    let stats = leaser.stats();
    println!(
        "released; the keeper sent {} renewals in {} calls, lost {}",
        stats.renewals,
        stats.calls,
        stats.lost_deadline + stats.lost_refused
    );
    Ok(())
}
