//! What every adapter builds the same way, written once: `renew_many` sent
//! in batches, and the loop of `wait_free`.

use std::future::Future;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use crate::{Capabilities, Fence, Grant, LeaseError, Op};

/// `renew_many` for a store whose server takes many renewals in one
/// request: each TTL is checked against `caps` (a refused one is answered
/// on its own and never sent), the rest go `max_batch` at a time through
/// `send`, every batch at once, and each renewal gets one answer, in the
/// order given. `send` answers its batch entry by entry, in order; a batch
/// answered with the wrong count is a malformed reply for each of it.
pub async fn renew_in_batches<'a, Fut>(
    caps: &Capabilities,
    renewals: &'a [(Fence, Duration)],
    max_batch: usize,
    send: impl Fn(Vec<(&'a Fence, Duration)>) -> Fut,
) -> Vec<Result<Grant, LeaseError>>
where
    Fut: Future<Output = Vec<Result<Grant, LeaseError>>>,
{
    let mut answers: Vec<Option<Result<Grant, LeaseError>>> =
        renewals.iter().map(|_| None).collect();
    let mut valid = Vec::with_capacity(renewals.len());
    for (i, (fence, ttl)) in renewals.iter().enumerate() {
        match caps.grant_ttl(&fence.key, *ttl) {
            Ok(ttl) => valid.push((i, fence, ttl)),
            Err(error) => answers[i] = Some(Err(error)),
        }
    }
    let batches: Vec<_> = valid.chunks(max_batch.max(1)).collect();
    let sent = batches
        .iter()
        .map(|batch| send(batch.iter().map(|&(_, fence, ttl)| (fence, ttl)).collect()));
    for (batch, replies) in batches.iter().zip(join_all(sent).await) {
        let count = replies.len();
        if count == batch.len() {
            for (&(i, _, _), reply) in batch.iter().zip(replies) {
                answers[i] = Some(reply);
            }
            continue;
        }
        for &(i, fence, _) in batch.iter() {
            let why = format!("{count} answers to a batch of {}", batch.len());
            answers[i] = Some(Err(LeaseError::backend(
                caps.backend,
                Op::Renew,
                &fence.key,
                true,
                format!("malformed reply: {why}"),
            )));
        }
    }
    answers.into_iter().flatten().collect()
}

/// What a look at a key found, for [`wait_until_free`].
pub enum Looked<Freed> {
    /// No live grant: the wait is over.
    Free,
    /// A live grant with `remaining` to run; `freed` resolves when the
    /// store hears the key may have been freed (a notification), or never.
    Held {
        /// Time left on the grant, as the store sees it.
        remaining: Duration,
        /// Resolves on news that the key may be free.
        freed: Freed,
    },
}

/// The loop of [`LeaseStore::wait_free`](crate::LeaseStore::wait_free):
/// `look` at the key; while it is held, sleep until `freed` fires, the
/// grant is due to end (plus `margin`) or `recheck` passes, whichever is
/// first, and look again. A look that fails is retried every `recheck`
/// until `timeout`, when its error is returned. At `timeout`, one last look
/// decides. `look` subscribes to its notifications before it reads, so no
/// release falls between the read and the subscription.
///
/// # Errors
/// The last look's error when every look failed up to `timeout`.
pub async fn wait_until_free<Fut, Freed>(
    timeout: Duration,
    (recheck, margin): (Duration, Duration),
    mut look: impl FnMut() -> Fut,
) -> Result<bool, LeaseError>
where
    Fut: Future<Output = Result<Looked<Freed>, LeaseError>>,
    Freed: Future<Output = ()>,
{
    let give_up = Instant::now() + timeout;
    loop {
        let wake = match look().await {
            Ok(Looked::Free) => return Ok(true),
            Err(error) if Instant::now() >= give_up => return Err(error),
            Err(_) => {
                tokio::time::sleep_until((Instant::now() + recheck).min(give_up)).await;
                continue;
            }
            Ok(Looked::Held { .. }) if Instant::now() >= give_up => return Ok(false),
            Ok(Looked::Held { remaining, freed }) => {
                let due = Instant::now() + (remaining + margin).min(recheck);
                (due.min(give_up), freed)
            }
        };
        let (until, freed) = wake;
        tokio::select! {
            () = freed => {}
            () = tokio::time::sleep_until(until) => {}
        }
        if Instant::now() >= give_up {
            return match look().await {
                Ok(Looked::Free) => Ok(true),
                Ok(Looked::Held { .. }) => Ok(false),
                Err(error) => Err(error),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::{FencingToken, Holder, LeaseKey};

    fn fence(i: usize) -> Fence {
        Fence {
            key: LeaseKey::new(format!("k{i}")).unwrap(),
            holder: Holder::new("h", "1").unwrap(),
            token: FencingToken(i as u64 + 1),
        }
    }

    #[tokio::test]
    async fn renewals_are_answered_in_order_around_refused_ttls() {
        let caps = Capabilities::new("test").with_min_ttl(Duration::from_millis(10));
        let renewals: Vec<_> = (0..7)
            .map(|i| {
                let ttl = if i == 3 { 1 } else { 1000 };
                (fence(i), Duration::from_millis(ttl))
            })
            .collect();
        let sizes = std::sync::Mutex::new(Vec::new());
        let answers = renew_in_batches(&caps, &renewals, 2, |batch| {
            sizes.lock().unwrap().push(batch.len());
            async move {
                batch
                    .into_iter()
                    .map(|(f, ttl)| Ok(Grant::new(f.clone(), ttl, Instant::now(), false)))
                    .collect()
            }
        })
        .await;
        assert_eq!(*sizes.lock().unwrap(), [2, 2, 2]);
        assert_eq!(answers.len(), 7);
        for (i, answer) in answers.iter().enumerate() {
            match answer {
                Ok(grant) => assert_eq!(grant.fence.key, renewals[i].0.key, "answer {i}"),
                Err(LeaseError::InvalidTtl { .. }) => assert_eq!(i, 3),
                Err(other) => panic!("answer {i}: {other}"),
            }
        }
    }

    #[tokio::test]
    async fn a_short_batch_answer_is_malformed_for_each_renewal() {
        let caps = Capabilities::new("test");
        let renewals: Vec<_> = (0..3).map(|i| (fence(i), Duration::from_secs(1))).collect();
        let answers = renew_in_batches(&caps, &renewals, 10, |_| async { Vec::new() }).await;
        assert_eq!(answers.len(), 3);
        for answer in answers {
            let error = answer.unwrap_err();
            assert!(error.is_indeterminate(), "{error}");
            assert!(
                error.to_string().contains("0 answers to a batch of 3"),
                "{error}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_on_news_on_the_grant_s_end_or_at_the_timeout() {
        let every = (Duration::from_secs(1), Duration::ZERO);
        // News of a release: over at once, though the grant had long to run.
        let looks = AtomicU32::new(0);
        let started = Instant::now();
        let freed = wait_until_free(Duration::from_secs(60), every, || async {
            Ok(match looks.fetch_add(1, Ordering::SeqCst) {
                0 => Looked::Held {
                    remaining: Duration::from_secs(30),
                    freed: std::future::ready(()),
                },
                _ => Looked::Free,
            })
        })
        .await;
        assert_eq!((freed.unwrap(), started.elapsed()), (true, Duration::ZERO));
        // No news: looked at again when the grant is due to end.
        let looks = AtomicU32::new(0);
        let started = Instant::now();
        let freed = wait_until_free(Duration::from_secs(60), every, || async {
            Ok(match looks.fetch_add(1, Ordering::SeqCst) {
                0 => Looked::Held {
                    remaining: Duration::from_millis(300),
                    freed: std::future::pending::<()>(),
                },
                _ => Looked::Free,
            })
        })
        .await;
        assert_eq!(
            (freed.unwrap(), started.elapsed()),
            (true, Duration::from_millis(300))
        );
        // Held throughout: false at the timeout, re-checked every second.
        let looks = AtomicU32::new(0);
        let freed = wait_until_free(Duration::from_millis(2500), every, || async {
            looks.fetch_add(1, Ordering::SeqCst);
            Ok(Looked::Held {
                remaining: Duration::from_secs(30),
                freed: std::future::pending::<()>(),
            })
        })
        .await;
        assert!(!freed.unwrap());
        assert_eq!(
            looks.load(Ordering::SeqCst),
            4,
            "at 0, 1 s, 2 s and the timeout"
        );
    }
}
