//! How long the history checker takes on a large, real history: about
//! 10,000 calls (64 tasks × 157) over 16 keys, recorded from 64 tasks claiming, renewing,
//! releasing and inspecting on the in-memory store with a 50 ms TTL (so
//! grants expire, overlap in time and change hands throughout).
//!
//! `cargo bench -p lease-conformance --bench history`

use std::sync::Arc;
use std::time::{Duration, Instant};

use lease_conformance::history::{Recorder, check};
use lease_core::{Claim, DynLeaseStore, Holder, LeaseKey, MemoryStore};

const CALLS: usize = 10_000;
const KEYS: usize = 16;
const TASKS: usize = 64;
const TTL: Duration = Duration::from_millis(50);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let history = runtime.block_on(record());
    let mut took = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let verdict = check(&history);
        took.push(started.elapsed());
        if let Err(violation) = verdict {
            eprintln!("the memory store's history was judged not linearizable: {violation}");
            std::process::exit(1);
        }
    }
    took.sort();
    println!(
        "history check: {} calls over {KEYS} keys from {TASKS} tasks: {:.0} ms median, {:.0}–{:.0} ms over 5 runs",
        history.calls.len(),
        took[2].as_secs_f64() * 1e3,
        took[0].as_secs_f64() * 1e3,
        took[4].as_secs_f64() * 1e3
    );
}

async fn record() -> lease_conformance::history::History {
    let store: DynLeaseStore = Arc::new(MemoryStore::new());
    let recorder = Arc::new(Recorder::new(store.capabilities().expiry_slack));
    let per_task = CALLS / TASKS + 1;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (store, recorder) = (store.clone(), recorder.clone());
            tokio::spawn(async move {
                let me = Holder::new(format!("t{task}"), "1").expect("a holder");
                let mut fences = vec![None; KEYS];
                for call in 0..per_task {
                    let k = (task * 7 + call * 13) % KEYS;
                    let key = LeaseKey::new(format!("bench/{k}")).expect("a key");
                    match (call % 4, &fences[k]) {
                        (0, _) => {
                            if let Ok(Some(Claim::Acquired(grant))) =
                                recorder.claim(&*store, task as u32, &key, &me, TTL).await
                            {
                                fences[k] = Some(grant.fence);
                            }
                        }
                        (1, Some(fence)) => {
                            let fence = fence.clone();
                            if !matches!(
                                recorder.renew(&*store, task as u32, &fence, TTL).await,
                                Ok(Some(_))
                            ) {
                                fences[k] = None;
                            }
                        }
                        (2, Some(fence)) => {
                            let fence = fence.clone();
                            let _ = recorder.release(&*store, task as u32, &fence).await;
                            fences[k] = None;
                        }
                        _ => {
                            let _ = recorder.inspect(&*store, task as u32, &key).await;
                        }
                    }
                    tokio::time::sleep(Duration::from_micros(200 + (call as u64 * 37) % 800)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a recording task");
    }
    recorder.history()
}
