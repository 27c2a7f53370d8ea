//! Keep-alives: one multiplexed stream per store.
//!
//! etcd's `LeaseKeepAlive` is a bidirectional stream that takes any lease
//! id in each request and answers each request in order, with the lease's
//! new TTL (0 when the lease is gone). So a store keeps at most one such
//! stream open and sends every keep-alive on it — renewals and pool
//! refreshes alike — instead of opening a stream per keep-alive, which
//! costs etcd a stream setup and its goroutines each time.
//!
//! One task owns the stream. A caller hands it a lease id and a reply slot
//! and waits, under the call timeout, for the answer. Replies are matched
//! to requests by lease id, first in first out: a caller is never answered
//! by the reply to an earlier request for the same lease, which may have
//! been applied before the caller's own send instant. A caller that gives
//! up leaves its slot in the queue, so later answers still line up.
//!
//! A keep-alive whose caller gave up before the task reached it is not
//! sent: nothing extends a lease once the renewal that asked for it was
//! abandoned.
//!
//! A broken stream fails every waiting caller with an indeterminate error
//! and is opened again by the next keep-alive; a stream that stops
//! answering is reset once a caller has waited out the call timeout. With
//! nothing sent for [`IDLE_CLOSE`] the stream closes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Error, LeaseClient, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The most keep-alives sent and not yet answered; more wait their turn.
const MAX_PENDING: usize = 4096;

/// A stream with nothing to carry for this long is closed.
pub(crate) const IDLE_CLOSE: Duration = Duration::from_secs(1);

/// What a keep-alive came to.
#[derive(Debug)]
pub(crate) enum Answer {
    /// etcd refreshed the lease.
    Alive,
    /// etcd says the lease does not exist (expired or revoked).
    Gone,
    /// The stream failed: the keep-alive may or may not have been applied.
    Failed(Error),
    /// No answer within the call timeout.
    TimedOut,
}

enum Command {
    Send {
        id: i64,
        reply: oneshot::Sender<Answer>,
    },
    /// A caller waited out the call timeout: reset the stream if its
    /// oldest request has waited that long.
    Stalled,
}

struct Counts {
    streams: AtomicUsize,
    in_flight: AtomicUsize,
}

/// The sending side of a store's keep-alive stream.
#[derive(Clone)]
pub(crate) struct KeepAlive {
    commands: mpsc::UnboundedSender<Command>,
    counts: Arc<Counts>,
    call_timeout: Duration,
}

impl KeepAlive {
    /// The stream for `client`, kept until `stop` fires.
    pub fn new(client: LeaseClient, call_timeout: Duration, stop: CancellationToken) -> Self {
        let (commands, inbox) = mpsc::unbounded_channel();
        let counts = Arc::new(Counts {
            streams: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
        });
        let carrier = Carrier {
            client,
            call_timeout,
            counts: counts.clone(),
            open: None,
            waiting: HashMap::new(),
            pending: 0,
        };
        tokio::spawn(carrier.run(inbox, stop));
        Self {
            commands,
            counts,
            call_timeout,
        }
    }

    /// Sends one keep-alive for lease `id` and waits for etcd's answer.
    pub async fn send(&self, id: i64) -> Answer {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Send { id, reply }).is_err() {
            return Answer::Failed(Error::LeaseKeepAliveError("the store was dropped".into()));
        }
        match tokio::time::timeout(self.call_timeout, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Answer::Failed(Error::LeaseKeepAliveError("the stream closed".into())),
            Err(_) => {
                let _ = self.commands.send(Command::Stalled);
                Answer::TimedOut
            }
        }
    }

    /// Keep-alive streams open right now: 0 or 1.
    pub fn streams(&self) -> usize {
        self.counts.streams.load(Ordering::Acquire)
    }

    /// Keep-alives sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.counts.in_flight.load(Ordering::Acquire)
    }
}

/// The task that owns the stream.
struct Carrier {
    client: LeaseClient,
    call_timeout: Duration,
    counts: Arc<Counts>,
    open: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    /// Callers waiting for an answer, by lease id, in the order sent.
    waiting: HashMap<i64, VecDeque<(Instant, oneshot::Sender<Answer>)>>,
    /// How many callers `waiting` holds.
    pending: usize,
}

impl Carrier {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Command>, stop: CancellationToken) {
        let mut last_sent = Instant::now();
        loop {
            let idle_until = last_sent + IDLE_CLOSE;
            tokio::select! {
                () = stop.cancelled() => break,
                // Past the bound, answers are read before anything more is
                // sent: etcd stops reading requests while its answers wait
                // unread, and a task stuck sending would never read them.
                command = inbox.recv(), if self.pending < MAX_PENDING => match command {
                    None => break,
                    Some(Command::Send { id, reply }) => {
                        last_sent = Instant::now();
                        self.send(id, reply).await;
                    }
                    Some(Command::Stalled) => self.reset_if_stalled(),
                },
                answer = next_answer(&mut self.open) => match answer {
                    Ok(Some((id, ttl))) => self.answer(id, ttl),
                    Ok(None) => self.close(|| Answer::Failed(Error::LeaseKeepAliveError("etcd closed the stream".into()))),
                    Err(error) => {
                        let text = error.to_string();
                        self.close(|| Answer::Failed(Error::LeaseKeepAliveError(text.clone())));
                    }
                },
                // Full and not reading commands: look for a stall here.
                () = tokio::time::sleep(self.call_timeout), if self.pending >= MAX_PENDING => {
                    self.reset_if_stalled();
                }
                () = tokio::time::sleep_until(idle_until), if self.open.is_some() && self.pending == 0 => {
                    self.close(|| Answer::TimedOut);
                }
            }
        }
        self.close(|| Answer::Failed(Error::LeaseKeepAliveError("the store was dropped".into())));
    }

    async fn send(&mut self, id: i64, reply: oneshot::Sender<Answer>) {
        // A caller that gave up (timed out, or its future was dropped)
        // before its turn came gets no keep-alive: a late one would extend
        // a grant nobody is renewing any more.
        if reply.is_closed() {
            return;
        }
        let sent = Instant::now();
        if let Some((keeper, _)) = &mut self.open {
            keeper.id = id;
            // The request channel is bounded: this waits while etcd is
            // behind, which holds back further keep-alives.
            if let Err(error) = keeper.keep_alive().await {
                let text = error.to_string();
                self.close(|| Answer::Failed(Error::LeaseKeepAliveError(text.clone())));
                let _ = reply.send(Answer::Failed(error));
                return;
            }
            self.waiting.entry(id).or_default().push_back((sent, reply));
            self.pending += 1;
            self.count();
            return;
        }
        // Opening the stream sends the first keep-alive and reads its
        // answer.
        self.counts.in_flight.fetch_add(1, Ordering::AcqRel);
        let opened = tokio::time::timeout(self.call_timeout, self.client.keep_alive(id)).await;
        self.counts.in_flight.fetch_sub(1, Ordering::AcqRel);
        let answer = match opened {
            Err(_) => Answer::TimedOut,
            Ok(Ok(open)) => {
                self.open = Some(open);
                self.counts.streams.store(1, Ordering::Release);
                Answer::Alive
            }
            Ok(Err(Error::LeaseKeepAliveError(_))) => Answer::Gone,
            Ok(Err(error)) if is_lease_not_found(&error) => Answer::Gone,
            Ok(Err(error)) => Answer::Failed(error),
        };
        let _ = reply.send(answer);
    }

    /// Resets the stream if its oldest request has waited out the call
    /// timeout: a stream that stopped answering.
    fn reset_if_stalled(&mut self) {
        let stalled = self
            .waiting
            .values()
            .filter_map(VecDeque::front)
            .any(|(sent, _)| sent.elapsed() >= self.call_timeout);
        if stalled {
            self.close(|| Answer::TimedOut);
        }
    }

    fn answer(&mut self, id: i64, ttl: i64) {
        if let Some(queue) = self.waiting.get_mut(&id) {
            if let Some((_, reply)) = queue.pop_front() {
                self.pending -= 1;
                let _ = reply.send(if ttl > 0 { Answer::Alive } else { Answer::Gone });
            }
            if queue.is_empty() {
                self.waiting.remove(&id);
            }
        }
        self.count();
    }

    /// Closes the stream, answering every waiting caller with `why`.
    fn close(&mut self, why: impl Fn() -> Answer) {
        self.open = None;
        self.counts.streams.store(0, Ordering::Release);
        for (_, reply) in self.waiting.drain().flat_map(|(_, queue)| queue) {
            let _ = reply.send(why());
        }
        self.pending = 0;
        self.count();
    }

    fn count(&self) {
        self.counts.in_flight.store(self.pending, Ordering::Release);
    }
}

/// The next answer on the stream, if one is open; pending forever if not.
async fn next_answer(
    open: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<Option<(i64, i64)>, Error> {
    match open {
        Some((_, stream)) => Ok(stream.message().await?.map(|r| (r.id(), r.ttl()))),
        None => std::future::pending().await,
    }
}

/// Whether `error` is etcd saying a lease does not exist.
pub(crate) fn is_lease_not_found(error: &Error) -> bool {
    matches!(error, Error::GRpcStatus(status) if status.message().contains("lease not found"))
}
