//! Concurrent calls of one kind coalesced into batches: what an adapter
//! uses so that many tasks claiming or releasing at once cost the server
//! one request per batch instead of one each.
//!
//! A [`Batcher`] sends a call made while nothing else is under way at
//! once, alone, from the caller's own future: one task alone pays nothing
//! for batching. A call made while others are under way joins a queue, and
//! a *collector* task sends the queue as one batch (up to `max_batch`
//! calls, in arrival order). Before it takes the queue the collector yields
//! once to the runtime, so that the tasks ready to run at that moment —
//! typically those the answers of the last batch just woke — queue their
//! calls first and go out together. At most `max_in_flight` batches are
//! under way at once; beyond that, calls wait for one to end, and the queue
//! goes out when it does. So batches grow as far as the load makes callers
//! wait anyway, and no further.
//!
//! **Cancellation.** A queued call whose caller is gone (its future
//! dropped: a timeout, a `select!`) is left out of the batch it would have
//! joined, so it is never sent. Batches of queued calls run on a task of
//! their own, so a caller dropped while its batch is under way abandons
//! only its own answer, never the others'. A call sent alone and dropped
//! is abandoned like any dropped request: whether the server applied it is
//! unknown, as for a lost reply.
//!
//! **Failures.** A batch that fails fails for every call in it (the
//! adapter's `send` answers each); a `send` that panics or a runtime that
//! shuts down leaves its callers with `None`, and the batcher goes on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use crate::{LeaseError, LeaseKey, Op};

/// Sends one batch: one answer per request, in order.
pub type SendBatch<Req, Resp> =
    Arc<dyn Fn(Vec<Req>) -> BoxFuture<'static, Vec<Resp>> + Send + Sync>;

/// How a store sends a batch of its calls: one answer each, in order.
pub type SendFor<S, Req, T> =
    fn(Arc<S>, Vec<Req>) -> BoxFuture<'static, Vec<Result<T, LeaseError>>>;

/// A [`Batcher`] of a store's calls of one kind, answered `Result<T,
/// LeaseError>`, with the [`SendBatch`] its batches go through: what a
/// store keeps for each kind of call it shares. The sender holds the store
/// weakly, so the store and its batchers are dropped together; a call
/// still queued then is answered [`LeaseError::store_dropped`], one whose
/// batch was abandoned [`LeaseError::batch_abandoned`].
pub struct BatchedCalls<Req, T> {
    batcher: Batcher<Req, Result<T, LeaseError>>,
    send: SendBatch<Req, Result<T, LeaseError>>,
    backend: &'static str,
    op: Op,
}

impl<Req: Send + 'static, T: Send + 'static> BatchedCalls<Req, T> {
    /// `op` calls of `backend`'s store `owner`, sent by `send` (`owner`
    /// and a batch); `key_of` names a request's key. At most `max_batch`
    /// calls a batch, `max_in_flight` batches under way.
    pub fn new<S: Send + Sync + 'static>(
        owner: &Weak<S>,
        (backend, op): (&'static str, Op),
        (max_batch, max_in_flight): (usize, usize),
        key_of: fn(&Req) -> &LeaseKey,
        send: SendFor<S, Req, T>,
    ) -> Self {
        let owner = owner.clone();
        Self {
            batcher: Batcher::new(max_batch, max_in_flight),
            send: Arc::new(move |batch| match owner.upgrade() {
                Some(owner) => send(owner, batch),
                None => Box::pin(std::future::ready(
                    batch
                        .iter()
                        .map(|r| Err(LeaseError::store_dropped(backend, op, key_of(r))))
                        .collect(),
                )),
            }),
            backend,
            op,
        }
    }

    /// Sends `request`, on `key`, alone or in a batch ([`Batcher::call`]).
    pub async fn call(&self, key: &LeaseKey, request: Req) -> Result<T, LeaseError> {
        self.batcher
            .call(request, &self.send)
            .await
            .unwrap_or_else(|| Err(LeaseError::batch_abandoned(self.backend, self.op, key)))
    }

    /// [`Batcher::stats`].
    pub fn stats(&self) -> BatchStats {
        self.batcher.stats()
    }
}

/// Coalesces concurrent calls into batches: a call made while none is
/// under way goes out alone, calls made beside others go out together.
pub struct Batcher<Req, Resp> {
    shared: Arc<Shared<Req, Resp>>,
}

struct Shared<Req, Resp> {
    state: Mutex<State<Req, Resp>>,
    max_batch: usize,
    max_in_flight: usize,
}

struct State<Req, Resp> {
    queue: VecDeque<(Req, oneshot::Sender<Resp>)>,
    /// Batches under way, a collector about to send one included.
    in_flight: usize,
    /// Whether a collector is about to take the queue.
    collecting: bool,
    batches: u64,
    calls: u64,
}

/// What a [`Batcher`] has done so far: for tests and benches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches sent, a call sent alone counted as a batch of one.
    pub batches: u64,
    /// Calls sent in them.
    pub calls: u64,
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// A batcher sending at most `max_batch` calls a batch and at most
    /// `max_in_flight` batches at once (each at least 1).
    pub fn new(max_batch: usize, max_in_flight: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    in_flight: 0,
                    collecting: false,
                    batches: 0,
                    calls: 0,
                }),
                max_batch: max_batch.max(1),
                max_in_flight: max_in_flight.max(1),
            }),
        }
    }

    /// Batches sent so far and the calls in them.
    pub fn stats(&self) -> BatchStats {
        let state = self.shared.lock();
        BatchStats {
            batches: state.batches,
            calls: state.calls,
        }
    }

    /// Sends `request`, alone or in a batch with others, through `send`,
    /// and gives its answer; `None` when its batch was abandoned before it
    /// answered (`send` panicked, the runtime is shutting down): whether it
    /// was applied is then unknown.
    ///
    /// Every caller of one batcher must pass an equivalent `send`: a batch
    /// of queued calls goes out through the `send` of whichever caller
    /// starts it.
    pub async fn call(&self, request: Req, send: &SendBatch<Req, Resp>) -> Option<Resp> {
        let (answer, answered) = oneshot::channel();
        let alone = {
            let mut state = self.shared.lock();
            if state.in_flight > 0 || state.collecting || !state.queue.is_empty() {
                state.queue.push_back((request, answer));
                Err(self.shared.collect(&mut state))
            } else {
                state.in_flight += 1;
                state.batches += 1;
                state.calls += 1;
                Ok(request)
            }
        };
        let request = match alone {
            Ok(request) => request,
            Err(collect) => {
                if collect {
                    self.shared.clone().spawn(send.clone());
                }
                return answered.await.ok();
            }
        };
        // Sent at once by this future; the slot hands on whatever queued
        // behind it when it ends, however it ends.
        let slot = Slot {
            shared: self.shared.clone(),
            send: send.clone(),
        };
        (slot.send)(vec![request]).await.pop()
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Shared<Req, Resp> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<Req, Resp>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a collector should start now for the queue: then it is
    /// counted as collecting and as one batch under way.
    fn collect(&self, state: &mut State<Req, Resp>) -> bool {
        if state.collecting || state.queue.is_empty() || state.in_flight >= self.max_in_flight {
            return false;
        }
        state.collecting = true;
        state.in_flight += 1;
        true
    }

    /// Starts a collector, counted by [`Shared::collect`] already.
    fn spawn(self: Arc<Self>, send: SendBatch<Req, Resp>) {
        let slot = Slot { shared: self, send };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(slot.collector());
        } else {
            // No runtime to run it on: the queued callers get None.
            let mut state = slot.shared.lock();
            state.collecting = false;
            state.queue.clear();
        }
    }
}

/// One batch under way (a call sent alone, or a collector). When it ends,
/// however it ends (answered, dropped, panicked), it is no longer counted,
/// and a collector starts for the calls queued meanwhile.
struct Slot<Req: Send + 'static, Resp: Send + 'static> {
    shared: Arc<Shared<Req, Resp>>,
    send: SendBatch<Req, Resp>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Slot<Req, Resp> {
    /// Lets the tasks ready to run queue their calls, sends the queue as
    /// one batch, and goes on while calls wait and no other collector
    /// takes them.
    async fn collector(self) {
        loop {
            // Every task woken with this one (by the answers of a batch,
            // say) gets to queue its call first.
            tokio::task::yield_now().await;
            let batch = {
                let mut state = self.shared.lock();
                state.collecting = false;
                next_batch(&mut state, self.shared.max_batch)
            };
            if batch.is_empty() {
                return;
            }
            let (requests, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let replies = (self.send)(requests).await;
            for (answer, reply) in answers.into_iter().zip(replies) {
                let _ = answer.send(reply);
            }
            let mut state = self.shared.lock();
            if state.collecting || state.queue.is_empty() {
                return;
            }
            state.collecting = true;
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Drop for Slot<Req, Resp> {
    fn drop(&mut self) {
        let collect = {
            let mut state = self.shared.lock();
            state.in_flight -= 1;
            self.shared.collect(&mut state)
        };
        if collect {
            self.shared.clone().spawn(self.send.clone());
        }
    }
}

/// Up to `max` queued calls whose callers still wait, counted as sent.
fn next_batch<Req, Resp>(
    state: &mut State<Req, Resp>,
    max: usize,
) -> Vec<(Req, oneshot::Sender<Resp>)> {
    let mut batch = Vec::new();
    while batch.len() < max {
        let Some((request, answer)) = state.queue.pop_front() else {
            break;
        };
        if !answer.is_closed() {
            batch.push((request, answer));
        }
    }
    if !batch.is_empty() {
        state.batches += 1;
        state.calls += batch.len() as u64;
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A send that records each batch's size and answers each request
    /// with itself doubled, after `delay`.
    fn doubling(sizes: Arc<Mutex<Vec<usize>>>, delay: Duration) -> SendBatch<u32, u32> {
        Arc::new(move |batch: Vec<u32>| {
            let sizes = sizes.clone();
            Box::pin(async move {
                sizes.lock().unwrap().push(batch.len());
                tokio::time::sleep(delay).await;
                batch.into_iter().map(|n| n * 2).collect()
            })
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_made_while_batches_are_under_way_share_one() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let send = doubling(sizes.clone(), Duration::from_millis(50));
        let batcher = Arc::new(Batcher::new(16, 1));
        let calls = (0..40u32).map(|n| {
            let (batcher, send) = (batcher.clone(), send.clone());
            tokio::spawn(async move { (n, batcher.call(n, &send).await) })
        });
        for call in futures::future::join_all(calls).await {
            let (n, answer) = call.unwrap();
            assert_eq!(answer, Some(n * 2), "call {n} got another's answer");
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40, "batches {sizes:?}");
        assert!(
            sizes.iter().all(|&s| s <= 16),
            "a batch above the limit: {sizes:?}"
        );
        assert!(
            sizes.len() <= 5,
            "40 calls at once should take about 1 + 40/16 batches: {sizes:?}"
        );
        let stats = batcher.stats();
        assert_eq!((stats.batches, stats.calls), (sizes.len() as u64, 40));
    }

    #[tokio::test]
    async fn a_lone_call_goes_out_at_once_by_itself() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let send = doubling(sizes.clone(), Duration::ZERO);
        let batcher = Batcher::new(16, 1);
        for n in 0..3 {
            assert_eq!(batcher.call(n, &send).await, Some(n * 2));
        }
        assert_eq!(*sizes.lock().unwrap(), [1, 1, 1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_than_max_in_flight_batches_at_once() {
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (counted, seen) = (now.clone(), most.clone());
        let send: SendBatch<u32, u32> = Arc::new(move |batch: Vec<u32>| {
            let (now, most) = (counted.clone(), seen.clone());
            Box::pin(async move {
                let under_way = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(under_way, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                batch
            })
        });
        let batcher = Arc::new(Batcher::new(4, 3));
        let callers = (0..64u32).map(|n| {
            let (batcher, send) = (batcher.clone(), send.clone());
            tokio::spawn(async move {
                for round in 0..5 {
                    assert_eq!(
                        batcher.call(n * 10 + round, &send).await,
                        Some(n * 10 + round)
                    );
                }
            })
        });
        for caller in futures::future::join_all(callers).await {
            caller.unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!(
            most <= 3,
            "{most} batches were under way at once, above the limit of 3"
        );
        assert!(
            most >= 2,
            "64 callers never had two batches under way: {most}"
        );
        let stats = batcher.stats();
        assert_eq!(stats.calls, 320);
        assert!(stats.batches < 320, "nothing was batched: {stats:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_send_that_panics_leaves_its_callers_none_and_the_batcher_working() {
        let send: SendBatch<u32, u32> = Arc::new(|batch: Vec<u32>| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                assert!(!batch.contains(&13), "unlucky");
                batch
            })
        });
        let batcher = Arc::new(Batcher::new(16, 1));
        let blocker = {
            let (batcher, send) = (batcher.clone(), send.clone());
            tokio::spawn(async move { batcher.call(1, &send).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let unlucky: Vec<_> = [12, 13]
            .map(|n| {
                let (batcher, send) = (batcher.clone(), send.clone());
                tokio::spawn(async move { batcher.call(n, &send).await })
            })
            .into();
        assert_eq!(blocker.await.unwrap(), Some(1));
        for caller in unlucky {
            assert_eq!(caller.await.unwrap(), None, "a panicked batch answered");
        }
        let after = tokio::time::timeout(Duration::from_secs(1), batcher.call(7, &send)).await;
        assert_eq!(after, Ok(Some(7)), "the batcher is stuck");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_queued_call_is_never_sent_and_the_rest_still_are() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let seen = sent.clone();
        let send: SendBatch<u32, u32> = Arc::new(move |batch: Vec<u32>| {
            let seen = seen.clone();
            Box::pin(async move {
                seen.lock().unwrap().extend(batch.iter().copied());
                tokio::time::sleep(Duration::from_millis(10)).await;
                batch
            })
        });
        let batcher = Batcher::new(16, 1);
        let first = batcher.call(1, &send);
        let dropped = batcher.call(2, &send);
        let kept = batcher.call(3, &send);
        let mut first = Box::pin(first);
        // The first goes out alone; the other two queue behind it.
        assert!(futures::poll!(&mut first).is_pending());
        let mut dropped = Box::pin(dropped);
        let mut kept = Box::pin(kept);
        assert!(futures::poll!(&mut dropped).is_pending());
        assert!(futures::poll!(&mut kept).is_pending());
        drop(dropped);
        assert_eq!(first.await, Some(1));
        assert_eq!(kept.await, Some(3));
        assert_eq!(*sent.lock().unwrap(), [1, 3], "the dropped call was sent");
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_call_sent_alone_still_sends_the_queue_behind_it() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let send = doubling(sizes.clone(), Duration::from_millis(10));
        let batcher = Batcher::new(16, 1);
        let mut alone = Box::pin(batcher.call(1, &send));
        assert!(futures::poll!(&mut alone).is_pending());
        let mut queued = Box::pin(batcher.call(2, &send));
        assert!(futures::poll!(&mut queued).is_pending());
        drop(alone);
        assert_eq!(queued.await, Some(4));
        let after = tokio::time::timeout(Duration::from_secs(1), batcher.call(5, &send)).await;
        assert_eq!(after, Ok(Some(10)), "the batcher is stuck");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_dropped_mid_batch_does_not_cancel_the_others() {
        let done = Arc::new(AtomicUsize::new(0));
        let counted = done.clone();
        let send: SendBatch<u32, u32> = Arc::new(move |batch: Vec<u32>| {
            let counted = counted.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                counted.fetch_add(batch.len(), Ordering::SeqCst);
                batch
            })
        });
        let batcher = Arc::new(Batcher::new(16, 1));
        let blocker = {
            let (batcher, send) = (batcher.clone(), send.clone());
            tokio::spawn(async move { batcher.call(0, &send).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let callers: Vec<_> = (1..=4u32)
            .map(|n| {
                let (batcher, send) = (batcher.clone(), send.clone());
                tokio::spawn(async move { batcher.call(n, &send).await })
            })
            .collect();
        // Once the queued four are sent together, drop one of them.
        tokio::time::sleep(Duration::from_millis(40)).await;
        callers[0].abort();
        assert_eq!(blocker.await.unwrap(), Some(0));
        for (n, caller) in callers.into_iter().enumerate().skip(1) {
            assert_eq!(caller.await.unwrap(), Some(n as u32 + 1));
        }
        assert_eq!(done.load(Ordering::SeqCst), 5);
    }
}
