//! The recipes built on the trait alone — `lease_core::Election` and
//! `lease_core::Permits` — keep their promises on this backend: what makes
//! them safe is the lease rules, so a backend that bends one shows here
//! as two leaders, a reused term or one permit too many.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lease_core::{Election, FencingToken, LeaseKey, Leaser, Observed, Observer, Permits};
use tokio::time::Instant;

use super::wait::release_wake_limit;
use crate::check::{holder, key};
use crate::{CaseError, CaseResult, Subject, ensure};

/// How long a case's candidates and contenders run, in TTLs.
const TTLS: u32 = 8;

/// Permits in the pool the permit case contends for.
const POOL: usize = 3;

/// One term, or one permit's tenure, as its holder saw it: from the
/// reply that granted it to the deadline it was told, or to the moment it
/// resigned, released or crashed, whichever came first.
#[derive(Clone, Debug)]
struct Window {
    holder: String,
    key: LeaseKey,
    token: FencingToken,
    won: Instant,
    end: Instant,
    /// Ended by a resignation or release sent at `end`.
    released: bool,
}

/// Whether a holder ends its turn by crashing (a third of the turns,
/// varying by holder and turn) rather than by releasing.
fn crashes(who: usize, turn: usize) -> bool {
    (who + turn) % 3 == 2
}

/// How long a holder keeps its turn: half a TTL to one and a half.
fn turn_length(ttl: Duration, who: usize, turn: usize) -> Duration {
    ttl / 2 + ttl * u32::try_from((who * 7 + turn) % 3).unwrap_or(0) / 2
}

/// Holds a term or permit for its turn (ended early if the lease is
/// lost), then releases it or crashes; returns the holder's window.
async fn take_turn(
    lease: lease_core::HeldLease,
    ttl: Duration,
    who: usize,
    turn: usize,
) -> Result<Window, CaseError> {
    let won = Instant::now();
    let lost = lease.lost();
    tokio::select! {
        () = lost.cancelled() => {}
        () = tokio::time::sleep(turn_length(ttl, who, turn)) => {}
    }
    let end = Instant::now().min(lease.deadline());
    let fence = lease.fence().clone();
    let released = !crashes(who, turn) && !lease.is_lost();
    if released {
        lease.release().await?;
    } else {
        drop(lease); // crashed: stops renewing, releases nothing; it comes
        // back as a new incarnation
    }
    Ok(Window {
        holder: fence.holder.to_string(),
        key: fence.key,
        token: fence.token,
        won,
        end,
        released,
    })
}

/// Windows of one key never overlap, and their tokens increase in the
/// order they were won.
fn one_at_a_time(windows: &[Window], what: &str) -> CaseResult {
    let mut by_won: Vec<_> = windows.iter().collect();
    by_won.sort_by_key(|w| w.won);
    for (i, a) in by_won.iter().enumerate() {
        for b in &by_won[i + 1..] {
            if a.key != b.key {
                continue;
            }
            ensure!(
                b.token > a.token,
                "{what}: {} won {} with token {} after {} had won it with token {}: tokens must increase",
                b.holder,
                b.key,
                b.token,
                a.holder,
                a.token
            );
            ensure!(
                b.won >= a.end,
                "{what}: {} (token {}) and {} (token {}) both held {} for {:.1?}",
                a.holder,
                a.token,
                b.holder,
                b.token,
                a.key,
                a.end - b.won
            );
        }
    }
    Ok(())
}

/// Notes every term an observer sees until `until`.
async fn observe(
    mut observer: Observer,
    poll: Duration,
    until: Instant,
) -> Result<Vec<(FencingToken, Instant)>, CaseError> {
    let mut seen: Vec<(FencingToken, Instant)> = Vec::new();
    while Instant::now() < until {
        if let Observed::Changed(Some(leader)) = observer.changed(poll).await?
            && seen.last().is_none_or(|(term, _)| *term != leader.term)
        {
            seen.push((leader.term, Instant::now()));
        }
    }
    Ok(seen)
}

cases! {
    /// Four candidates campaign, lead, and resign or crash (coming back as a new incarnation) for eight TTLs while a bystander observes: terms strictly increase from one leader to the next, no two leaders' windows overlap (each from the winning reply to the deadline told or the resignation), a resignation hands over to a waiting candidate at once, and the observer sees every term that lasted a TTL, in order.
    #[rule(DeadlinesNeverOverlap, TokensIncrease, WaitWakesWhenFree)]
    async fn elections_hand_over_increasing_terms(s) {
        let t = s.timing();
        let k = key("recipes/election");
        let until = Instant::now() + t.ttl * TTLS;
        let windows = Arc::new(Mutex::new(Vec::new()));
        let candidates: Vec<_> = (0..4).map(|who| {
            let (store, k, windows) = (s.store.clone(), k.clone(), windows.clone());
            tokio::spawn(async move {
                for turn in 0.. {
                    if Instant::now() >= until {
                        break;
                    }
                    let leaser = Leaser::new(store.clone(), holder(&format!("c{who}"), &turn.to_string()), t.ttl);
                    let election = Election::new(leaser, k.clone());
                    let left = until.saturating_duration_since(Instant::now());
                    let Some(term) = election.campaign(left).await? else { break };
                    let window = take_turn(term.into_lease(), t.ttl, who, turn).await?;
                    windows.lock().unwrap().push(window);
                }
                Ok::<_, CaseError>(())
            })
        }).collect();
        let poll = t.ttl / 4;
        let observer = Observer::new(s.store.clone(), k.clone(), poll);
        let seen = observe(observer, poll, until + t.ttl * 2).await?;
        for candidate in candidates {
            candidate.await.map_err(|e| CaseError::Failed(format!("a candidate panicked: {e}")))??;
        }
        let windows = std::mem::take(&mut *windows.lock().unwrap());
        ensure!(windows.len() >= 2, "only {} terms in {TTLS} TTLs: no handover to judge", windows.len());
        one_at_a_time(&windows, "two leaders")?;
        let mut by_won = windows.clone();
        by_won.sort_by_key(|w| w.won);
        for pair in by_won.windows(2) {
            let (resigned, next) = (&pair[0], &pair[1]);
            if resigned.released && resigned.end + t.ttl < until {
                s.within(
                    &format!("handing the term over from {}'s resignation, sent at {}, to {}", resigned.holder, s.at(resigned.end), next.holder),
                    resigned.end,
                    next.won,
                    release_wake_limit(s) + Duration::from_millis(250),
                )?;
            }
        }
        let terms: Vec<_> = seen.iter().map(|(term, _)| *term).collect();
        ensure!(terms.windows(2).all(|p| p[0] < p[1]), "the observer saw terms out of order: {terms:?}");
        for w in windows.iter().filter(|w| w.end - w.won >= t.ttl) {
            if terms.contains(&w.token) {
                continue;
            }
            let lag = s.runner_lag(w.won, w.end);
            let missed = format!(
                "the observer (re-reading every {poll:?}) never saw term {} of {}, which lasted from {} to {}; it saw {terms:?}",
                w.token, w.holder, s.at(w.won), s.at(w.end)
            );
            return Err(if w.end - w.won < lag + poll * 2 {
                CaseError::Starved(format!("{missed}, while the runner stalled for {lag:.1?}"))
            } else {
                CaseError::Failed(missed)
            });
        }
        Ok(())
    }

    /// Eight contenders for a pool of three permits take, hold, and release them or crash (coming back as a new incarnation) for eight TTLs: never more than three permits are held at once (each from the granting reply to the deadline told or the release), each permit's tokens increase, and a waiter gets the permit a release frees at once.
    #[rule(DeadlinesNeverOverlap, TokensIncrease, WaitWakesWhenFree)]
    async fn permits_never_exceed_the_pool(s) {
        let t = s.timing();
        let name = key("recipes/permits");
        let until = Instant::now() + t.ttl * TTLS;
        let windows = Arc::new(Mutex::new(Vec::new()));
        let contenders: Vec<_> = (0..8).map(|who| {
            let (store, name, windows) = (s.store.clone(), name.clone(), windows.clone());
            tokio::spawn(async move {
                for turn in 0.. {
                    if Instant::now() >= until {
                        break;
                    }
                    let leaser = Leaser::new(store.clone(), holder(&format!("p{who}"), &turn.to_string()), t.ttl);
                    let permits = Permits::new(leaser, &name, POOL)?;
                    let left = until.saturating_duration_since(Instant::now());
                    let Some(permit) = permits.acquire(left).await? else { break };
                    let window = take_turn(permit, t.ttl, who, turn).await?;
                    windows.lock().unwrap().push(window);
                }
                Ok::<_, CaseError>(())
            })
        }).collect();
        for contender in contenders {
            contender.await.map_err(|e| CaseError::Failed(format!("a contender panicked: {e}")))??;
        }
        let windows = std::mem::take(&mut *windows.lock().unwrap());
        ensure!(windows.len() > POOL, "only {} permits taken in {TTLS} TTLs: the pool was never contended", windows.len());
        one_at_a_time(&windows, "one permit held twice")?;
        // Never more than POOL at once: sweep the windows' edges in time
        // order, ends before starts at the same instant.
        let mut edges: Vec<(Instant, i32, &Window)> = windows.iter().flat_map(|w| [(w.won, 1, w), (w.end, -1, w)]).collect();
        edges.sort_by_key(|&(at, step, _)| (at, step));
        let mut held = 0;
        for (at, step, w) in edges {
            held += step;
            ensure!(
                usize::try_from(held).unwrap_or(0) <= POOL,
                "{held} permits of {POOL} held at {}, when {} took {} (token {})",
                s.at(at), w.holder, w.key, w.token
            );
        }
        waiter_gets_a_freed_permit(s, &name).await
    }
}

/// The pool full, a waiter gets the permit a release frees within the
/// store's declared wake-up.
async fn waiter_gets_a_freed_permit(s: &Subject, name: &LeaseKey) -> CaseResult {
    let t = s.timing();
    let pool = |who: &str| {
        Permits::new(
            Leaser::new(s.store.clone(), holder(who, "1"), t.long_ttl),
            name,
            POOL,
        )
    };
    let mut held = Vec::new();
    for who in 0..POOL {
        let permit = pool(&format!("full-{who}"))?
            .acquire(t.ttl * 4 + t.slack)
            .await?;
        held.push(permit.ok_or_else(|| {
            CaseError::Failed(format!(
                "the pool's permits were not all free after the contenders left ({who} taken)"
            ))
        })?);
    }
    let waiter = pool("waiter")?;
    ensure!(
        waiter.try_acquire().await?.is_none(),
        "a fourth permit was taken from a pool of {POOL}"
    );
    let waiting = tokio::spawn(async move {
        (
            waiter.acquire(Duration::from_secs(30)).await,
            Instant::now(),
        )
    });
    tokio::time::sleep(super::wait::RELEASE_AFTER).await;
    let freed = held.pop().expect("the pool is full");
    let freed_key = freed.fence().key.clone();
    freed.release().await?;
    let released = Instant::now();
    let (permit, woke) = waiting
        .await
        .map_err(|e| CaseError::Failed(format!("the waiter panicked: {e}")))?;
    let permit =
        permit?.ok_or_else(|| CaseError::Failed("the waiter never got the freed permit".into()))?;
    ensure!(
        permit.fence().key == freed_key,
        "the waiter got {} though only {freed_key} was freed",
        permit.fence().key
    );
    let wakeup = s.store.capabilities().wakeup;
    s.within(
        &format!("a waiter taking the permit a release freed, with {wakeup:?}"),
        released,
        woke,
        release_wake_limit(s) + Duration::from_millis(250),
    )?;
    for permit in held.into_iter().chain([permit]) {
        permit.release().await?;
    }
    Ok(())
}
