//! Throughput the way users compare: claim + release cycles at 1, 16 and 64
//! concurrent tasks, each task on keys of its own, against the raw commands
//! and the library a user would pick instead, on the same server in the
//! same run. Rounds of every contender are interleaved; each figure is the
//! median over rounds, and each ratio the median of per-round ratios.
//! Server CPU per cycle comes from the server (Redis `INFO cpu`, etcd's
//! `process_cpu_seconds_total`), client CPU per cycle from this process.
//!
//! Then: a holder process killed with SIGKILL, and how long until another
//! client holds its key, against the TTL.
//!
//! `instrumented` (in `BENCH_BACKENDS`) measures what `Instrumented` costs
//! on Redis: the store plain, wrapped with a no-op recorder installed, and
//! wrapped with a Prometheus recorder recording.
//!
//! `cargo bench -p tests --bench throughput` (servers from the harness, as
//! for the tests). `BENCH_SECONDS` sets each run's length (default 3;
//! shorter runs understate the fastest contenders), `BENCH_ROUNDS` the rounds (default 3), `BENCH_BACKENDS` which to run
//! (`memory,redis,etcd` by default), `BENCH_TASKS` the concurrencies
//! (`1,16,64` by default), `BENCH_CONTENDERS` which contenders (parts of
//! their names, comma separated; all by default: one alone to profile it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, LockOptions, Txn, TxnOp};
use futures::future::BoxFuture;
use lease_core::{Claim, Holder, LeaseKey, LeaseStore, MemoryStore};
use lease_etcd::{EtcdConfig, EtcdStore};
use lease_redis::{RedisConfig, RedisStore};
use lease_tests::{EtcdCluster, RedisServer, gauges};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(30);

/// One claim + release cycle (or its equivalent) on the key numbered `n`.
type Cycle = Arc<dyn Fn(u64) -> BoxFuture<'static, ()> + Send + Sync>;
/// Reads the server's CPU seconds so far.
type ServerCpu = Arc<dyn Fn() -> BoxFuture<'static, f64> + Send + Sync>;

struct Contender {
    name: &'static str,
    cycle: Cycle,
}

/// One run's figures.
#[derive(Clone, Copy, Default)]
struct Run {
    per_second: f64,
    server_us: f64,
    client_us: f64,
}

fn settings() -> (Duration, usize, Vec<usize>) {
    let listed = std::env::var("BENCH_TASKS").unwrap_or_else(|_| "1,16,64".into());
    let tasks = listed
        .split(',')
        .map(|n| n.trim().parse().ok().filter(|&n: &usize| n > 0))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_else(|| {
            eprintln!("BENCH_TASKS is {listed:?}: it takes task counts above 0, comma separated");
            std::process::exit(2)
        });
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        Duration::from_secs(var("BENCH_SECONDS", 3)),
        var("BENCH_ROUNDS", 3) as usize,
        tasks,
    )
}

/// `tasks` tasks run `cycle` back to back for `length`.
async fn run(cycle: &Cycle, tasks: usize, length: Duration, server: &ServerCpu) -> Run {
    let done = Arc::new(AtomicU64::new(0));
    let (server_before, client_before) = (server().await, gauges::client_cpu());
    let started = Instant::now();
    let until = started + length;
    let workers: Vec<_> = (0..tasks as u64)
        .map(|task| {
            let (cycle, done) = (cycle.clone(), done.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < until {
                    cycle(task << 32 | n).await;
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("a worker panicked");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cycles = done.load(Ordering::Relaxed).max(1) as f64;
    Run {
        per_second: cycles / elapsed,
        server_us: (server().await - server_before) / cycles * 1e6,
        client_us: (gauges::client_cpu() - client_before) / cycles * 1e6,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Interleaved rounds of every contender at each concurrency; prints a
/// table with ratios of the first contender (ours) to each other one.
async fn compare(backend: &str, contenders: &[Contender], server: ServerCpu) {
    let (length, rounds, concurrencies) = settings();
    // `BENCH_CONTENDERS` (comma-separated parts of names) runs only the
    // contenders it names: to profile one alone. Ratios are then to the
    // first contender left.
    let picked = std::env::var("BENCH_CONTENDERS").unwrap_or_default();
    let contenders: Vec<&Contender> = contenders
        .iter()
        .filter(|c| {
            picked.is_empty()
                || picked
                    .split(',')
                    .any(|part| !part.is_empty() && c.name.contains(part))
        })
        .collect();
    if contenders.is_empty() {
        println!("\n{backend}: BENCH_CONTENDERS={picked:?} names none of its contenders");
        return;
    }
    println!("\n{backend}: claim + release, {rounds} interleaved rounds of {length:?} each");
    println!(
        "{:>5}  {:<42} {:>11} {:>14} {:>14} {:>13}",
        "tasks", "contender", "cycles/s", "server µs/cyc", "client µs/cyc", "ours / this"
    );
    for tasks in concurrencies {
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); contenders.len()];
        for round in 0..rounds {
            // Rotate who goes first, so no contender always meets a warm
            // (or a tired) server.
            for offset in 0..contenders.len() {
                let i = (round + offset) % contenders.len();
                runs[i].push(run(&contenders[i].cycle, tasks, length, &server).await);
            }
        }
        for (i, contender) in contenders.iter().enumerate() {
            let ratio = median(
                runs[0]
                    .iter()
                    .zip(&runs[i])
                    .map(|(ours, theirs)| ours.per_second / theirs.per_second)
                    .collect(),
            );
            println!(
                "{tasks:>5}  {:<42} {:>11.0} {:>14.1} {:>14.1} {:>13}",
                contender.name,
                median(runs[i].iter().map(|r| r.per_second).collect()),
                median(runs[i].iter().map(|r| r.server_us).collect()),
                median(runs[i].iter().map(|r| r.client_us).collect()),
                if i == 0 {
                    "—".to_owned()
                } else {
                    format!("{ratio:.2}×")
                },
            );
        }
    }
}

fn key(n: u64) -> LeaseKey {
    LeaseKey::new(format!("bench/{n}")).expect("valid")
}

/// Claim + release through a lease store.
fn lease_cycle(store: Arc<dyn LeaseStore>) -> Cycle {
    let holder = Holder::new("bench", "1").expect("valid");
    Arc::new(move |n| {
        let (store, holder) = (store.clone(), holder.clone());
        Box::pin(async move {
            let Claim::Acquired(grant) = store.claim(&key(n), &holder, TTL).await.expect("claim")
            else {
                panic!("bench/{n} is busy")
            };
            assert!(store.release(&grant.fence).await.expect("release"));
        })
    })
}

async fn memory() {
    let no_server: ServerCpu = Arc::new(|| Box::pin(async { 0.0 }));
    let map: Arc<Mutex<HashMap<String, (String, u64)>>> = Arc::default();
    let raw: Cycle = Arc::new(move |n| {
        let map = map.clone();
        Box::pin(async move {
            let k = format!("bench/{n}");
            map.lock().unwrap().insert(k.clone(), ("bench".into(), 1));
            map.lock().unwrap().remove(&k);
        })
    });
    let contenders = [
        Contender {
            name: "lease-core MemoryStore",
            cycle: lease_cycle(Arc::new(MemoryStore::new())),
        },
        Contender {
            name: "HashMap insert + remove (mutex)",
            cycle: raw,
        },
    ];
    compare("memory", &contenders, no_server).await;
}

async fn redis() {
    let Ok(server) = RedisServer::start().await else {
        println!("\nredis: no server could be started");
        return;
    };
    let url = server.url().to_owned();
    let store = RedisStore::connect(RedisConfig::new(&url))
        .await
        .expect("redis");
    let counted = store.clone();
    let client = redis::Client::open(url.as_str()).expect("url");
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let raw: Cycle = {
        let connection = connection.clone();
        Arc::new(move |n| {
            let mut connection = connection.clone();
            Box::pin(async move {
                let k = format!("raw/{n}");
                let set: Option<String> = redis::cmd("SET")
                    .arg(&k)
                    .arg("bench")
                    .arg("NX")
                    .arg("PX")
                    .arg(TTL.as_millis() as u64)
                    .query_async(&mut connection)
                    .await
                    .expect("set");
                assert!(set.is_some(), "{k} is taken");
                let _: u64 = redis::cmd("DEL")
                    .arg(&k)
                    .query_async(&mut connection)
                    .await
                    .expect("del");
            })
        })
    };
    // lease-redis' own claim and release scripts, sent bare: what the
    // store adds on the client is the difference.
    let bare_scripts: Cycle = {
        let connection = connection.clone();
        let source = |name| redis::Script::new(&lease_redis::script_source(name).expect(name));
        let scripts = Arc::new((source("claim"), source("release")));
        Arc::new(move |n| {
            let (mut connection, scripts) = (connection.clone(), scripts.clone());
            Box::pin(async move {
                let k = format!("{{bare}}:lease:bench/{n}");
                let reply: String = scripts
                    .0
                    .key(&k)
                    .key("{bare}:floor")
                    .arg("bench")
                    .arg("1")
                    .arg(TTL.as_millis() as u64)
                    .arg(0)
                    .invoke_async(&mut connection)
                    .await
                    .expect("claim script");
                let reply: Vec<&str> = reply.split('\n').collect();
                assert_eq!(reply[0], "acquired", "{k} is taken");
                let released: i64 = scripts
                    .1
                    .key(&k)
                    .arg(format!("v3\nbench\n1\n{}", reply[1]))
                    .arg("{bare}:released")
                    .arg(&k)
                    .invoke_async(&mut connection)
                    .await
                    .expect("release script");
                assert_eq!(released, 1, "{k} was not released");
            })
        })
    };
    // Two scripts with no token, floor or notification: a lock as rslock
    // takes it, but claimed by a script call instead of a bare command.
    let plain_scripts: Cycle = {
        let connection = connection.clone();
        let scripts = Arc::new((
            redis::Script::new("return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])"),
            redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
            ),
        ));
        Arc::new(move |n| {
            let (mut connection, scripts) = (connection.clone(), scripts.clone());
            Box::pin(async move {
                let k = format!("plain/{n}");
                let set: Option<String> = scripts
                    .0
                    .key(&k)
                    .arg("bench")
                    .arg(TTL.as_millis() as u64)
                    .invoke_async(&mut connection)
                    .await
                    .expect("set script");
                assert!(set.is_some(), "{k} is taken");
                let deleted: i64 = scripts
                    .1
                    .key(&k)
                    .arg("bench")
                    .invoke_async(&mut connection)
                    .await
                    .expect("delete script");
                assert_eq!(deleted, 1, "{k} was not deleted");
            })
        })
    };
    let locks = Arc::new(rslock::LockManager::new(vec![url.clone()]));
    let rslock: Cycle = Arc::new(move |n| {
        let locks = locks.clone();
        Box::pin(async move {
            let resource = format!("rslock/{n}");
            let lock = locks
                .lock(resource.as_bytes(), TTL)
                .await
                .expect("rslock lock");
            locks.unlock(&lock).await;
        })
    });
    let cpu: ServerCpu = Arc::new(move || {
        let mut connection = connection.clone();
        Box::pin(async move { gauges::redis_cpu(&mut connection).await })
    });
    let contenders = [
        Contender {
            name: "lease-redis claim + release",
            cycle: lease_cycle(Arc::new(store)),
        },
        Contender {
            name: "raw SET NX PX + DEL",
            cycle: raw,
        },
        Contender {
            name: "rslock lock + unlock (no fencing)",
            cycle: rslock,
        },
        Contender {
            name: "lease-redis' scripts sent bare",
            cycle: bare_scripts,
        },
        Contender {
            name: "SET NX PX script + GET/DEL script",
            cycle: plain_scripts,
        },
    ];
    killed_holder("redis", &url).await;
    compare("redis", &contenders, cpu).await;
    let (claims, releases) = counted.batch_stats();
    println!(
        "lease-redis over the whole run: {} claims in {} script calls, {} releases in {}",
        claims.calls, claims.batches, releases.calls, releases.batches
    );
    server.stop().await;
}

async fn etcd() {
    let Ok(cluster) = EtcdCluster::start().await else {
        println!("\netcd: no server could be started");
        return;
    };
    let endpoint = cluster.endpoints()[0].clone();
    let store = EtcdStore::connect(EtcdConfig::new([endpoint.clone()]))
        .await
        .expect("etcd");
    let counted = store.clone();
    let client = etcd_client::Client::connect([endpoint.clone()], None)
        .await
        .expect("etcd");
    let raw: Cycle = {
        let kv = client.kv_client();
        Arc::new(move |n| {
            let mut kv = kv.clone();
            Box::pin(async move {
                let k = format!("raw/{n}");
                let create = Txn::new()
                    .when([Compare::create_revision(k.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(k.as_str(), "bench", None)]);
                assert!(
                    kv.txn(create).await.expect("txn").succeeded(),
                    "{k} is taken"
                );
                kv.delete(k.as_str(), None).await.expect("delete");
            })
        })
    };
    // The cheapest safe release: a delete that cannot clear a newer grant
    // must compare inside a transaction, which costs etcd more than the
    // plain delete above.
    let raw_guarded: Cycle = {
        let kv = client.kv_client();
        Arc::new(move |n| {
            let mut kv = kv.clone();
            Box::pin(async move {
                let k = format!("raw-guarded/{n}");
                let create = Txn::new()
                    .when([Compare::create_revision(k.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(k.as_str(), "bench", None)]);
                let created = kv.txn(create).await.expect("txn");
                assert!(created.succeeded(), "{k} is taken");
                let revision = created.header().expect("header").revision();
                let delete = Txn::new()
                    .when([Compare::create_revision(
                        k.as_str(),
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then([TxnOp::delete(k.as_str(), None)]);
                assert!(
                    kv.txn(delete).await.expect("txn").succeeded(),
                    "{k} was not deleted"
                );
            })
        })
    };
    let lock_api: Cycle = Arc::new(move |n| {
        let mut client = client.clone();
        Box::pin(async move {
            let lease = client
                .lease_grant(TTL.as_secs() as i64, None)
                .await
                .expect("lease grant");
            let name = format!("lock/{n}");
            let locked = client
                .lock(
                    name.as_str(),
                    Some(LockOptions::new().with_lease(lease.id())),
                )
                .await
                .expect("lock");
            client.unlock(locked.key()).await.expect("unlock");
            // As a session closing does: a lease left to expire would pile
            // up behind etcd's rate-limited revocations and delay every
            // other lease's expiry, ours included.
            client.lease_revoke(lease.id()).await.expect("lease revoke");
        })
    });
    let cpu: ServerCpu = Arc::new(move || {
        let endpoint = endpoint.clone();
        Box::pin(async move { gauges::etcd_cpu(&endpoint).await })
    });
    let contenders = [
        Contender {
            name: "lease-etcd claim + release",
            cycle: lease_cycle(Arc::new(store)),
        },
        Contender {
            name: "raw txn create-if-absent + delete",
            cycle: raw,
        },
        Contender {
            name: "raw txn create-if-absent + guarded txn delete",
            cycle: raw_guarded,
        },
        Contender {
            name: "etcd lock API (grant, lock, unlock, revoke)",
            cycle: lock_api,
        },
    ];
    killed_holder("etcd", &format!("etcd://{}", cluster.endpoints()[0])).await;
    compare("etcd", &contenders, cpu).await;
    let counts = counted.lease_counts();
    println!(
        "lease-etcd over the whole run: {} leases granted, {} revoked, {} keep-alives sent",
        counts.leases_granted, counts.leases_revoked, counts.keep_alives
    );
    cluster.stop().await;
}

/// A holder process killed with SIGKILL: how long until another client
/// holds its key, against the TTL.
async fn killed_holder(backend: &str, target: &str) {
    use tokio::io::AsyncBufReadExt;
    let ttl = Duration::from_secs(2);
    let store = lease_connect::connect(&lease_connect::Target::new(target))
        .await
        .expect("the store the holder uses");
    let mut waits = Vec::new();
    for i in 0..3 {
        let k = key(1_000_000 + i);
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hold-lease"))
            .args([target, k.as_str(), &ttl.as_millis().to_string()])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("hold-lease");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        lines.next_line().await.expect("a line").expect("held");
        tokio::time::sleep(ttl).await;
        child.start_kill().expect("kill");
        let killed = Instant::now();
        child.wait().await.expect("killed");
        let next = Holder::new("next", "1").expect("valid");
        loop {
            if let Ok(Claim::Acquired(_)) = store.claim(&k, &next, ttl).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        waits.push(killed.elapsed().as_secs_f64());
    }
    let slack = store.capabilities().expiry_slack;
    println!(
        "{backend}: SIGKILLed holder → next holder in {:.2} s median, {:.2} s max (TTL {ttl:?}, declared slack {slack:?})",
        median(waits.clone()),
        waits.iter().copied().fold(0.0, f64::max)
    );
}

/// A recorder switched between Prometheus and no-op, so contenders of one
/// run can compare both (the global recorder is set once per process).
struct Switch {
    on: std::sync::atomic::AtomicBool,
    prometheus: metrics_exporter_prometheus::PrometheusRecorder,
}

static SWITCH: std::sync::OnceLock<&'static Switch> = std::sync::OnceLock::new();

impl metrics::Recorder for Switch {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(
        &self,
        key: &metrics::Key,
        meta: &metrics::Metadata<'_>,
    ) -> metrics::Counter {
        if self.on.load(Ordering::Relaxed) {
            self.prometheus.register_counter(key, meta)
        } else {
            metrics::Counter::noop()
        }
    }
    fn register_gauge(&self, key: &metrics::Key, meta: &metrics::Metadata<'_>) -> metrics::Gauge {
        if self.on.load(Ordering::Relaxed) {
            self.prometheus.register_gauge(key, meta)
        } else {
            metrics::Gauge::noop()
        }
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        meta: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        if self.on.load(Ordering::Relaxed) {
            self.prometheus.register_histogram(key, meta)
        } else {
            metrics::Histogram::noop()
        }
    }
}

/// `cycle` with the Prometheus recorder recording (`on`) or not.
fn recording(on: bool, cycle: Cycle) -> Cycle {
    Arc::new(move |n| {
        if let Some(switch) = SWITCH.get() {
            switch.on.store(on, Ordering::Relaxed);
        }
        cycle(n)
    })
}

async fn instrumented() {
    let switch: &'static Switch = Box::leak(Box::new(Switch {
        on: false.into(),
        prometheus: metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
    }));
    if metrics::set_global_recorder(switch).is_err() || SWITCH.set(switch).is_err() {
        println!(
            "
instrumented: a recorder was installed already"
        );
        return;
    }
    let Ok(server) = RedisServer::start().await else {
        println!(
            "
instrumented: no redis server could be started"
        );
        return;
    };
    let store: Arc<dyn LeaseStore> = Arc::new(
        RedisStore::connect(RedisConfig::new(server.url()))
            .await
            .expect("redis"),
    );
    let wrapped: Arc<dyn LeaseStore> = Arc::new(lease_core::Instrumented::new(store.clone()));
    let contenders = [
        Contender {
            name: "Instrumented lease-redis, no-op recorder",
            cycle: recording(false, lease_cycle(wrapped.clone())),
        },
        Contender {
            name: "Instrumented lease-redis, Prometheus",
            cycle: recording(true, lease_cycle(wrapped)),
        },
        Contender {
            name: "lease-redis",
            cycle: recording(false, lease_cycle(store)),
        },
    ];
    let connection = redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let cpu: ServerCpu = Arc::new(move || {
        let mut connection = connection.clone();
        Box::pin(async move { gauges::redis_cpu(&mut connection).await })
    });
    compare("instrumented (redis)", &contenders, cpu).await;
}

#[tokio::main]
async fn main() {
    let only = std::env::var("BENCH_BACKENDS").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|b| b == name);
    if wanted("memory") {
        memory().await;
    }
    if wanted("redis") {
        redis().await;
    }
    if wanted("etcd") {
        etcd().await;
    }
    if wanted("instrumented") {
        instrumented().await;
    }
}
