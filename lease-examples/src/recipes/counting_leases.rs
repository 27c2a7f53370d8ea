//! Counting leases: ten workers share four permits, never more than four
//! at work; one crashes holding a permit, which frees when its TTL runs
//! out; then four callers get a permit each and a fifth none.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lease_core::{DynLeaseStore, Holder, LeaseError, LeaseKey, Leaser, Permits};
use tokio::time::Instant;

/// Permits in the pool.
const PERMITS: usize = 4;

/// Workers sharing them.
const WORKERS: usize = 10;

/// Runs the story on `store`: how many worked at once at most, how the
/// crashed worker's permit came back.
///
/// # Errors
/// The store's errors, a worker that waited a minute for a permit, or
/// more than four permits held at once.
pub async fn demo(store: DynLeaseStore) -> Result<Vec<String>, LeaseError> {
    let ttl = crate::demo_ttl(&*store, Duration::from_millis(500));
    let name = LeaseKey::new("pool/gpus")?;
    let pool = |who: &str| -> Result<Permits, LeaseError> {
        let leaser = Leaser::new(store.clone(), Holder::new(who, "1")?, ttl);
        Permits::new(leaser, &name, PERMITS)
    };
    let mut out = Vec::new();

    // worker-0 takes a permit and crashes: it stops renewing, nobody
    // releases.
    let crashed = pool("worker-0")?
        .try_acquire()
        .await?
        .ok_or_else(|| stopped(&name, "every permit was held before anyone started"))?;
    let crashed_at = Instant::now();
    let crashed_key = crashed.fence().key.clone();
    drop(crashed);

    let (at_work, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (1..WORKERS)
        .map(|i| {
            let (pool, at_work, most) =
                (pool(&format!("worker-{i}")), at_work.clone(), most.clone());
            let name = name.clone();
            tokio::spawn(async move {
                let permit = pool?
                    .acquire(Duration::from_secs(60))
                    .await?
                    .ok_or_else(|| stopped(&name, "a worker waited a minute"))?;
                let now = at_work.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(ttl / 4).await;
                at_work.fetch_sub(1, Ordering::SeqCst);
                permit.release().await?;
                Ok::<_, LeaseError>(())
            })
        })
        .collect();
    for worker in workers {
        worker.await.map_err(|e| stopped(&name, &e.to_string()))??;
    }
    let most = most.load(Ordering::SeqCst);
    if most > PERMITS {
        return Err(stopped(
            &name,
            &format!("{most} workers at work at once on {PERMITS} permits"),
        ));
    }
    out.push(format!(
        "{} workers done with {PERMITS} permits: at most {most} at work at once",
        WORKERS - 1
    ));

    let freed = store.wait_free(&crashed_key, ttl * 20).await?;
    out.push(if !freed {
        format!("worker-0 crashed holding {crashed_key}: never freed")
    } else if crashed_at.elapsed() >= ttl / 2 {
        format!("worker-0 crashed holding {crashed_key}: freed when its TTL ran out")
    } else {
        format!("worker-0 crashed holding {crashed_key}: freed too soon")
    });

    let mut held = Vec::new();
    for i in 0..=PERMITS {
        if let Some(permit) = pool(&format!("late-{i}"))?.try_acquire().await? {
            held.push(permit);
        }
    }
    if held.len() > PERMITS {
        return Err(stopped(
            &name,
            &format!("{} permits held of {PERMITS}", held.len()),
        ));
    }
    out.push(format!(
        "{} late callers, {} hold a permit",
        PERMITS + 1,
        held.len()
    ));
    for permit in held {
        permit.release().await?;
    }
    Ok(out)
}

/// The error of a story that could not go on.
fn stopped(name: &LeaseKey, what: &str) -> LeaseError {
    LeaseError::backend("demo", lease_core::Op::Claim, name, false, what.to_owned())
}
