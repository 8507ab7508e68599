//! The batches the requests fill and the writer thread empties: group commit without a hand-off per record.
//!
//! A request serialises its record's body itself and appends it, under one
//! short lock, to the newest open [`Batch`] (pre-allocated buffers, reused
//! from batch to batch); it then waits, with every other request of that
//! batch, for the batch's one [`Done`] notification. The writer thread takes a
//! whole batch at once, seals, writes and `fdatasync`s it, and publishes one
//! outcome for all its records: one wake-up of the writer per batch (none
//! while it is busy), one notification back per batch, and no channel, no
//! per-record message and no per-record oneshot.
//!
//! The request that finds the writer asleep wakes it, but only after yielding
//! once to its runtime: the other requests ready on its thread queue their
//! records first and share the batch. The writer, once woken, yields its core
//! once before it takes the batch: a request thread on the same core goes on
//! queueing records until it has nothing left to run (on a core of its own,
//! the yield returns at once). Without both, a writer woken at the first
//! record takes a batch of one and flushes it while the next requests wait
//! for the round after: a wake-up each way and a flush per request under
//! load, the more so the faster the flush.
//!
//! A batch holds at most `max_batch_records` records; at most
//! `queue_capacity` records wait in the batches not yet taken, past that a
//! request is refused at once ([`AuditError::QueueFull`]). A batch dropped
//! without an outcome (the writer thread died, or the log was dropped before
//! writing it) tells its requests [`AuditError::Stopped`], never leaves them
//! waiting.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::AuditError;
use super::chain::{TimeText, hex_of};
use super::record::{AuditReceipt, RecordKind};

/// How many emptied batches keep their buffers for the next ones.
const SPARE_BATCHES: usize = 4;

/// A buffer grown past this by a burst is not kept for reuse.
const SPARE_MAX_BYTES: usize = 4 << 20;

/// The records of one group commit: their bodies back to back, and where each ends.
pub(super) struct Batch {
    /// The bodies, as [`super::record::write_body`] writes them.
    pub bytes: Vec<u8>,
    pub records: Vec<Queued>,
    done: Waiters,
}

/// One record of a batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Queued {
    /// Where its body ends in [`Batch::bytes`] (it starts where the previous one ends).
    pub end: usize,
    /// `None` for an access record.
    pub kind: Option<RecordKind>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            bytes: Vec::with_capacity(64 * 1024),
            records: Vec::with_capacity(128),
            done: Waiters(Arc::new(Done::default())),
        }
    }

    /// The bodies of the batch's records, in order, with their kinds.
    pub fn bodies(&self) -> impl Iterator<Item = (&[u8], Option<RecordKind>)> {
        let mut start = 0;
        self.records.iter().map(move |queued| {
            let body = &self.bytes[start..queued.end];
            start = queued.end;
            (body, queued.kind)
        })
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Answers every request of the batch at once.
    pub fn publish(&self, outcome: Result<Sealed, AuditError>) {
        let _ = self.done.0.outcome.set(outcome);
        self.done.0.notify.notify_waiters();
    }
}

/// Where the requests of one batch wait: its outcome, set once, and the one
/// notification that tells them it is set.
#[derive(Default)]
pub(super) struct Done {
    outcome: OnceLock<Result<Sealed, AuditError>>,
    notify: tokio::sync::Notify,
}

/// The batch's side of [`Done`]: dropped without an outcome, it answers
/// [`AuditError::Stopped`], so that no request waits for a writer that is gone.
struct Waiters(Arc<Done>);

impl Drop for Waiters {
    fn drop(&mut self) {
        if self.0.outcome.set(Err(AuditError::Stopped)).is_ok() {
            self.0.notify.notify_waiters();
        }
    }
}

/// A durable batch: the `seq` of its first record, and each record's hash and time.
#[derive(Debug)]
pub(super) struct Sealed {
    pub first_seq: u64,
    pub marks: Vec<([u8; 32], TimeText)>,
}

/// A request's place in a batch: what it awaits.
pub(super) struct Ticket {
    done: Arc<Done>,
    index: usize,
    /// The queue whose sleeping writer this request must wake: set for the
    /// one request that found it asleep. Dropped unused, it still wakes it.
    wake: Option<Arc<Queue>>,
}

impl Ticket {
    /// Resolves once the writer published the batch's outcome; this
    /// request's receipt, or the batch's error.
    pub async fn wait(mut self) -> Result<AuditReceipt, AuditError> {
        if self.wake.is_some() {
            // The requests ready on this thread run first and join the batch.
            tokio::task::yield_now().await;
            self.wake_writer();
        }
        loop {
            // Registered before the outcome is read: a publication in
            // between still wakes it (`notify_waiters` counts the futures
            // created before it).
            let notified = self.done.notify.notified();
            if let Some(outcome) = self.done.outcome.get() {
                return self.receipt(outcome);
            }
            notified.await;
        }
    }

    fn wake_writer(&mut self) {
        if let Some(queue) = self.wake.take() {
            queue.writer_wakes.notify_one();
        }
    }

    fn receipt(&self, outcome: &Result<Sealed, AuditError>) -> Result<AuditReceipt, AuditError> {
        let sealed = outcome.as_ref().map_err(Clone::clone)?;
        let (hash, time) = sealed.marks.get(self.index).ok_or(AuditError::Stopped)?;
        Ok(AuditReceipt {
            seq: sealed.first_seq + self.index as u64,
            hash: hex_of(hash).to_owned(),
            time: time.as_str().to_owned(),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.wake_writer();
    }
}

/// What the writer finds when it looks for work.
pub(super) enum Taken {
    Batch(Batch),
    /// Nothing came within the time given.
    Idle,
    /// The log is closed and every batch taken: the writer stops.
    Closed,
}

pub(super) struct Queue {
    state: Mutex<State>,
    /// The writer waits here while there is no batch.
    writer_wakes: Condvar,
    capacity: usize,
    max_batch: usize,
}

struct State {
    /// Oldest first; only the newest takes new records.
    batches: VecDeque<Batch>,
    /// Records in `batches`: the ones the writer has not taken yet.
    queued: usize,
    /// Whether the writer sleeps on `writer_wakes` (only then is it woken).
    writer_waiting: bool,
    closed: bool,
    spare: Vec<Batch>,
}

impl Queue {
    pub fn new(capacity: usize, max_batch: usize) -> Queue {
        Queue {
            state: Mutex::new(State {
                batches: VecDeque::new(),
                queued: 0,
                writer_waiting: false,
                closed: false,
                spare: vec![Batch::new()],
            }),
            writer_wakes: Condvar::new(),
            capacity: capacity.max(1),
            max_batch: max_batch.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock can leave the state half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one record's body (as `write_body` writes it): refused at once
    /// when `capacity` records already wait, or once the log is closed.
    pub fn push(
        self: &Arc<Self>,
        body: &[u8],
        kind: Option<RecordKind>,
    ) -> Result<Ticket, AuditError> {
        let mut state = self.lock();
        if state.closed {
            return Err(AuditError::Stopped);
        }
        if state.queued >= self.capacity {
            return Err(AuditError::QueueFull);
        }
        let open = state
            .batches
            .back()
            .is_some_and(|batch| batch.len() < self.max_batch);
        if !open {
            let batch = state.spare.pop().unwrap_or_else(Batch::new);
            state.batches.push_back(batch);
        }
        let Some(batch) = state.batches.back_mut() else {
            return Err(AuditError::Stopped);
        };
        batch.bytes.extend_from_slice(body);
        batch.records.push(Queued {
            end: batch.bytes.len(),
            kind,
        });
        let (done, index) = (batch.done.0.clone(), batch.records.len() - 1);
        state.queued += 1;
        // Whoever finds the writer asleep wakes it; the requests after it
        // until then find it awake.
        let wake = std::mem::take(&mut state.writer_waiting).then(|| self.clone());
        Ok(Ticket { done, index, wake })
    }

    /// The oldest batch, waiting at most `wait` for one.
    pub fn take(&self, wait: Duration) -> Taken {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        loop {
            if let Some(batch) = state.batches.pop_front() {
                state.queued -= batch.len();
                return Taken::Batch(batch);
            }
            if state.closed {
                return Taken::Closed;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Taken::Idle;
            }
            state.writer_waiting = true;
            state = self
                .writer_wakes
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.writer_waiting = false;
            // Woken by a request: let the threads that share this core run
            // before taking the batch, so that their records join it.
            drop(state);
            std::thread::yield_now();
            state = self.lock();
        }
    }

    /// Gives an answered batch's buffers back for the next batches.
    pub fn recycle(&self, mut batch: Batch) {
        if batch.bytes.capacity() > SPARE_MAX_BYTES {
            return;
        }
        batch.bytes.clear();
        batch.records.clear();
        // The old `Done` stays with the requests that hold it.
        batch.done = Waiters(Arc::new(Done::default()));
        let mut state = self.lock();
        if state.spare.len() < SPARE_BATCHES {
            state.spare.push(batch);
        }
    }

    /// No more records: the writer takes what is queued, then stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.writer_wakes.notify_one();
    }

    /// The writer is gone: what is queued is answered [`AuditError::Stopped`].
    pub fn abandon(&self) {
        let batches = {
            let mut state = self.lock();
            state.closed = true;
            state.queued = 0;
            std::mem::take(&mut state.batches)
        };
        // Dropped outside the lock: each tells its requests.
        drop(batches);
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::future::Future;
    use std::io;
    use std::path::PathBuf;
    use std::pin::Pin;

    use super::*;
    use crate::audit::{AuditEntry, AuditLog, AuditSettings, Outcome, verify_dir};
    use crate::clock::SystemClock;

    /// A disk whose `fdatasync` calls are numbered, each held until the test
    /// releases it, and one of which (if any) fails.
    struct Script {
        state: Mutex<(u32, u32)>,
        changed: Condvar,
        fails: u32,
    }

    impl Script {
        const fn failing(call: u32) -> Script {
            Script {
                state: Mutex::new((0, 0)),
                changed: Condvar::new(),
                fails: call,
            }
        }

        fn sync(&self, file: &File) -> io::Result<()> {
            let mut state = self.state.lock().unwrap();
            state.0 += 1;
            let call = state.0;
            self.changed.notify_all();
            while state.1 < call {
                state = self.changed.wait(state).unwrap();
            }
            if call == self.fails {
                return Err(io::Error::other("injected fdatasync failure"));
            }
            file.sync_data()
        }

        /// Waits until the writer is inside `fdatasync` call `call`.
        fn entered(&self, call: u32) {
            let mut state = self.state.lock().unwrap();
            while state.0 < call {
                state = self.changed.wait(state).unwrap();
            }
        }

        /// Lets the calls up to `call` return.
        fn release(&self, call: u32) {
            self.state.lock().unwrap().1 = call;
            self.changed.notify_all();
        }
    }

    type Append<'a> = Pin<Box<dyn Future<Output = Result<AuditReceipt, AuditError>> + 'a>>;

    /// Appends record `n`, polled twice: its record is in the queue on
    /// return, and the writer woken if this record found it asleep (the
    /// first poll queues the record and yields, the second wakes the writer).
    fn queued(log: &AuditLog, n: u128) -> Append<'_> {
        let entry = AuditEntry::new(uuid::Uuid::from_u128(n), Outcome::Released, 200);
        let mut append: Append<'_> = Box::pin(log.append(entry));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 0..2 {
            assert!(append.as_mut().poll(&mut cx).is_pending());
        }
        append
    }

    fn open(name: &str, sync: super::super::writer::SyncData) -> (AuditLog, PathBuf) {
        let root = std::env::temp_dir().join(format!("caf-broker-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let key = root.join("audit-hmac.key");
        std::fs::write(&key, "5a".repeat(32)).unwrap();
        let mut settings = AuditSettings::new(root.join("log"), key);
        settings.retry_interval_ms = 60_000;
        let log = AuditLog::open_with_sync(&settings, Arc::new(SystemClock), sync).unwrap();
        (log, root)
    }

    static SHARED: Script = Script::failing(0);

    #[tokio::test]
    async fn many_concurrent_appends_share_one_fsync_and_each_gets_its_own_receipt() {
        let (log, root) = open("shared-fsync", |file| SHARED.sync(file));
        let first = queued(&log, 0);
        // The writer holds the first record in its fdatasync; twenty more queue up.
        SHARED.entered(1);
        let rest: Vec<_> = (1..=20).map(|n| queued(&log, n)).collect();
        SHARED.release(u32::MAX);
        assert_eq!(first.await.unwrap().seq, 1);
        let mut receipts = Vec::new();
        for append in rest {
            receipts.push(append.await.unwrap());
        }
        let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (2..=21).collect::<Vec<u64>>(), "in the order queued");
        let stats = log.stats();
        assert_eq!((stats.records, stats.batches, stats.syncs), (21, 2, 2));
        drop(log);
        // Each receipt is its own record's hash and time, as stored.
        let dir = root.join("log");
        let mut stored = std::collections::HashMap::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "jsonl") {
                for line in std::fs::read_to_string(&path).unwrap().lines() {
                    let record: crate::audit::Record = serde_json::from_str(line).unwrap();
                    stored.insert(record.seq, (record.hash, record.time));
                }
            }
        }
        for receipt in &receipts {
            assert_eq!(
                stored.get(&receipt.seq),
                Some(&(receipt.hash.clone(), receipt.time.clone()))
            );
        }
        assert_eq!(verify_dir(&dir).unwrap().records, 21);
        let _ = std::fs::remove_dir_all(&root);
    }

    static FAILING: Script = Script::failing(2);

    #[tokio::test]
    async fn a_failed_batch_fails_every_waiter_of_that_batch_and_none_of_the_next() {
        let (log, root) = open("failed-batch", |file| FAILING.sync(file));
        let first = queued(&log, 0);
        FAILING.entered(1);
        // Batch two, written while the first is synced; its fdatasync fails.
        let failed: Vec<_> = (1..=3).map(|n| queued(&log, n)).collect();
        FAILING.release(1);
        FAILING.entered(2);
        // Batch three, queued while batch two is being synced.
        let next: Vec<_> = (4..=6).map(|n| queued(&log, n)).collect();
        FAILING.release(u32::MAX);
        assert_eq!(first.await.unwrap().seq, 1);
        for append in failed {
            assert!(matches!(append.await, Err(AuditError::Unavailable(_))));
        }
        let mut seqs = Vec::new();
        for append in next {
            seqs.push(append.await.unwrap().seq);
        }
        assert_eq!(
            seqs,
            [2, 3, 4],
            "the failed batch took no place in the chain"
        );
        assert!(log.is_healthy());
        drop(log);
        let dir = root.join("log");
        assert_eq!(verify_dir(&dir).unwrap().records, 4);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn a_batch_left_unwritten_when_the_writer_is_gone_answers_stopped() {
        let queue = Arc::new(Queue::new(8, 8));
        let ticket = queue.push(b"\"request_id\":\"x\",", None).unwrap();
        queue.abandon();
        assert!(matches!(ticket.wait().await, Err(AuditError::Stopped)));
        assert!(matches!(queue.push(b"", None), Err(AuditError::Stopped)));
    }

    #[test]
    fn a_full_batch_starts_the_next_and_the_bound_counts_queued_records_only() {
        let queue = Arc::new(Queue::new(3, 2));
        for _ in 0..3 {
            queue.push(b"a,", None).unwrap();
        }
        assert!(matches!(
            queue.push(b"a,", None),
            Err(AuditError::QueueFull)
        ));
        let Taken::Batch(batch) = queue.take(Duration::ZERO) else {
            panic!("a batch was queued");
        };
        assert_eq!(batch.len(), 2, "max_batch_records per batch");
        assert_eq!(batch.bodies().count(), 2);
        // The records the writer took no longer count: two places again.
        queue.push(b"a,", None).unwrap();
        queue.push(b"a,", None).unwrap();
        assert!(matches!(
            queue.push(b"a,", None),
            Err(AuditError::QueueFull)
        ));
        batch.publish(Ok(Sealed {
            first_seq: 1,
            marks: Vec::new(),
        }));
    }

    /// A writer thread that takes one batch (waiting up to an hour for it)
    /// and sends its size; it waits on the queue before this returns.
    fn sleeping_writer(queue: &Arc<Queue>) -> std::sync::mpsc::Receiver<usize> {
        let (sizes, taken) = std::sync::mpsc::channel();
        let writer = queue.clone();
        std::thread::spawn(move || {
            if let Taken::Batch(batch) = writer.take(Duration::from_secs(3600)) {
                let _ = sizes.send(batch.len());
                batch.publish(Err(AuditError::Stopped));
            }
        });
        while !queue.lock().writer_waiting {
            std::thread::yield_now();
        }
        taken
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_requests_ready_on_a_thread_share_the_batch_of_the_one_that_wakes_the_writer() {
        let queue = Arc::new(Queue::new(8, 8));
        let taken = sleeping_writer(&queue);
        let requests: Vec<_> = (0..3)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    // The request's own work on this thread, before its record.
                    std::thread::sleep(Duration::from_millis(20));
                    queue.push(b"a,", None).unwrap().wait().await
                })
            })
            .collect();
        // The requests run while this one waits for the writer's batch.
        let size = tokio::task::spawn_blocking(move || taken.recv().unwrap())
            .await
            .unwrap();
        queue.abandon();
        for request in requests {
            assert!(matches!(request.await.unwrap(), Err(AuditError::Stopped)));
        }
        assert_eq!(size, 3, "one batch for the three requests");
    }

    #[test]
    fn a_request_dropped_before_it_woke_the_writer_still_wakes_it() {
        let queue = Arc::new(Queue::new(8, 8));
        let taken = sleeping_writer(&queue);
        drop(queue.push(b"a,", None).unwrap());
        assert_eq!(
            taken.recv_timeout(Duration::from_secs(60)),
            Ok(1),
            "the writer was not woken"
        );
    }
}
