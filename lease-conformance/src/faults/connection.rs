//! One proxied connection: requests forwarded, replies held back or
//! lost, as the proxy's fault says.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Command, Fault, Late, Shared};

/// One client connection and its server connection.
pub(super) async fn serve(client: TcpStream, upstream: String, shared: Arc<Shared>) {
    let mut resets = shared.resets.subscribe();
    resets.mark_unchanged();
    let mut fault = shared.fault.subscribe();
    let _ = client.set_nodelay(true);
    // Reset, not close: a dropped path tells the client nothing politely.
    let _ = client.set_zero_linger();
    if *fault.borrow_and_update() == Fault::Partition {
        // Accepted, never connected: held until the partition ends.
        tokio::select! {
            _ = fault.wait_for(|f| *f != Fault::Partition) => {}
            _ = resets.changed() => {}
        }
        return;
    }
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = server.set_zero_linger();
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (commands, mut command) = mpsc::unbounded_channel();
    shared.connections.lock().unwrap().insert(id, commands);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let held = Mutex::new(Vec::new());
    // Three loops at once, each on its own halves: requests, replies read,
    // replies written when due (a queue keeps delayed ones in order).
    let (queue, mut queued) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let requests = requests(
        &shared,
        &held,
        &mut client_read,
        &mut server_write,
        fault.clone(),
    );
    let replies = replies(&shared, &mut server_read, queue, fault.clone());
    let writes = async {
        while let Some((due, bytes)) = queued.recv().await {
            tokio::time::sleep_until(due).await;
            if client_write.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    let cut = tokio::select! {
        () = requests => None,
        () = replies => None,
        () = writes => None,
        _ = resets.changed() => None,
        Some(Command::Cut(give)) = command.recv() => Some(give),
    };
    shared.connections.lock().unwrap().remove(&id);
    if let Some(give) = cut {
        // The client's halves are dropped here (a reset); the server's go
        // with the requests held.
        let _ = give.send(Late {
            held: held.into_inner().unwrap_or_default(),
            server_read,
            server_write,
        });
    }
}

/// Client to server: forwarded, held or thrown away as the fault says;
/// what was held goes on when the fault stops holding it, even after the
/// client went away.
async fn requests(
    shared: &Shared,
    held: &Mutex<Vec<u8>>,
    client_read: &mut OwnedReadHalf,
    server_write: &mut OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
) {
    let mut buffer = vec![0; 64 * 1024];
    let mut client_open = true;
    loop {
        let now = *fault.borrow_and_update();
        let holds =
            |now: Fault| now.holds_requests(shared.requests_since_set.load(Ordering::Relaxed));
        if !holds(now) {
            let waiting = std::mem::take(&mut *held.lock().unwrap());
            if !waiting.is_empty() {
                if !forward(shared, server_write, &waiting, now).await {
                    return;
                }
                if !client_open {
                    let _ = server_write.shutdown().await;
                }
            }
        }
        tokio::select! {
            changed = fault.changed() => if changed.is_err() { return },
            read = client_read.read(&mut buffer), if client_open => match read {
                Ok(0) | Err(_) => {
                    client_open = false;
                    if held.lock().unwrap().is_empty() {
                        let _ = server_write.shutdown().await;
                    }
                }
                Ok(n) => {
                    let now = *fault.borrow();
                    if holds(now) {
                        held.lock().unwrap().extend_from_slice(&buffer[..n]);
                    } else if !forward(shared, server_write, &buffer[..n], now).await {
                        return;
                    }
                }
            },
        }
    }
}

/// Forwards request bytes (thrown away during a partition).
async fn forward(
    shared: &Shared,
    server_write: &mut OwnedWriteHalf,
    bytes: &[u8],
    fault: Fault,
) -> bool {
    if fault == Fault::Partition {
        return true;
    }
    shared
        .forwarded
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    shared.requests_since_set.fetch_add(1, Ordering::Relaxed);
    server_write.write_all(bytes).await.is_ok()
}

/// Server to client: queued to be written now or later, held, or thrown
/// away as the fault says. Ends when the queue is drained after the
/// server closed.
async fn replies(
    shared: &Shared,
    server_read: &mut OwnedReadHalf,
    queue: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    mut fault: watch::Receiver<Fault>,
) {
    let mut buffer = vec![0; 64 * 1024];
    let mut frozen = Vec::new();
    loop {
        tokio::select! {
            changed = fault.changed() => {
                if changed.is_err() {
                    break;
                }
                if *fault.borrow_and_update() != Fault::Freeze && !frozen.is_empty() {
                    let _ = queue.send((Instant::now(), std::mem::take(&mut frozen)));
                }
            }
            read = server_read.read(&mut buffer) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let due = match *fault.borrow() {
                    Fault::LoseReplies | Fault::Partition => continue,
                    Fault::LoseRepliesAfter(passed)
                        if shared.requests_since_set.load(Ordering::Relaxed) > u64::from(passed) =>
                    {
                        continue;
                    }
                    Fault::Freeze => {
                        frozen.extend_from_slice(&buffer[..n]);
                        continue;
                    }
                    Fault::DelayReplies(by) => Instant::now() + by,
                    Fault::None
                    | Fault::HoldRequests
                    | Fault::HoldRequestsAfter(_)
                    | Fault::LoseRepliesAfter(_) => Instant::now(),
                };
                if queue.send((due, buffer[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    // The server closed: the writer drains the queue, then the
    // connection ends.
    drop(queue);
    std::future::pending::<()>().await;
}
