//! The single writer thread: restoring the chain on open, group commit, rotation, failure and recovery.
//!
//! One OS thread owns the files. It takes a whole batch at once (up to
//! `max_batch_records` records, queued by the requests themselves, see
//! [`super::queue`]), seals each record into the chain, writes them with one
//! `write`, makes them durable with one `fdatasync`, and only then answers the
//! batch, all its waiters at once. While it syncs, new records queue up and
//! form the next batch: concurrent requests share an fsync without any added
//! waiting window.
//!
//! A failed batch is rolled back: every waiter gets an error, files the batch
//! created are removed and the current file is cut back to its last
//! acknowledged length before anything else is written, so a record is on disk
//! only if it was acknowledged (or written just before a crash, see `mod.rs`).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::chain::{self, GENESIS, Integrity};
use super::files::{self, FileName};
use super::queue::{Batch, Queue, Sealed, Taken};
use super::record::RecordKind;
use super::retention;
use super::signing::{CHECKPOINTS_FILE, CheckpointSigner, SignedCheckpoint, split_log};
use super::tree::{Edge, Hash, leaf_hash};
use super::witness::WitnessHandle;
use super::{AuditError, AuditSettings, AuditSetupError, WriteFailure};
use crate::clock::Clock;
use jiff::Timestamp;
use jiff::civil::Date;

/// The lock file that keeps a second broker from writing the same directory.
pub(super) const LOCK_FILE: &str = "writer.lock";

/// How often an idle, healthy writer wakes up to check whether the day changed.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);

/// How a batch is made durable once written: `fdatasync` in production. Tests
/// put a failing or hanging disk in its place ([`super::AuditLog::open_with_sync`]).
pub(super) type SyncData = fn(&File) -> io::Result<()>;

/// The production [`SyncData`].
pub(super) fn fdatasync(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// What the writer shares with the [`super::AuditLog`] handle.
#[derive(Debug)]
pub(super) struct Shared {
    pub healthy: AtomicBool,
    pub records: AtomicU64,
    pub batches: AtomicU64,
    pub syncs: AtomicU64,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            healthy: AtomicBool::new(true),
            records: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        }
    }
}

/// Where the chain stands: the next record's `seq` and `prev`, and the
/// latest time written (times never go back, even if the clock does).
#[derive(Debug, Clone)]
struct Chain {
    next_seq: u64,
    prev: String,
    last_time: Timestamp,
}

/// The file being appended to and its acknowledged length.
#[derive(Debug, Clone, Copy)]
struct Position {
    name: FileName,
    len: u64,
}

/// Signing checkpoints: the key, when to sign, and `checkpoints.log`.
struct Checkpoints {
    signer: CheckpointSigner,
    every_records: u64,
    every: Duration,
    /// The size of the last checkpoint signed and durable.
    signed_size: u64,
    signed_at: Instant,
    path: PathBuf,
}

pub(super) struct Writer {
    dir: PathBuf,
    max_file_bytes: u64,
    retention_days: u32,
    retry_interval: Duration,
    clock: Arc<dyn Clock>,
    sync_data: SyncData,
    chain: Chain,
    tail: Position,
    /// Open on `tail` while healthy; `None` after a failure until recovered.
    file: Option<File>,
    failed: bool,
    /// Files created by a failed batch, removed before anything else is written.
    abandoned: Vec<PathBuf>,
    housekept_on: Date,
    /// The Merkle tree's right edge over the acknowledged records; `None` only
    /// for a log whose retention checkpoint predates the tree (and no signing key).
    tree: Option<Edge>,
    checkpoints: Option<Checkpoints>,
    /// Where each checkpoint is also sent, off this thread.
    witness: Option<WitnessHandle>,
    shared: Arc<Shared>,
    /// The lines of the batch being written, kept from batch to batch.
    out: Vec<u8>,
    /// Held for the writer's life; the OS releases it if the process dies.
    _lock: File,
}

impl Writer {
    /// Takes the directory over: lock, retention, torn-tail repair, and the
    /// chain's last record (or the checkpoint, or the genesis).
    pub(super) fn open(
        settings: &AuditSettings,
        clock: Arc<dyn Clock>,
        sync_data: SyncData,
        shared: Arc<Shared>,
        signer: Option<CheckpointSigner>,
        witness: Option<WitnessHandle>,
    ) -> Result<Writer, AuditSetupError> {
        let dir = settings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| AuditSetupError::Dir {
            path: dir.clone(),
            source,
        })?;
        let lock = lock(&dir)?;
        let today = files::utc_day(clock.wall());
        let listed = files::list(&dir).map_err(setup_io(&dir, "cannot list the directory"))?;
        if let Some((_, newest)) = listed.last() {
            repair_torn_tail(newest)?;
        }
        let chain = restore_chain(&dir, &listed)?;
        // The tree is rebuilt and checked against the last signed checkpoint
        // before retention removes anything: evidence of tampering is kept.
        let signed = match &signer {
            Some(signer) => last_signed(&dir, signer)?,
            None => None,
        };
        let tree = rebuild_tree(&dir, &listed, signed.as_ref(), signer.as_ref())?;
        match retention::retire(&dir, today, settings.retention_days, signer.as_ref()) {
            Ok(retired) => log_retired(&retired),
            Err(error) => tracing::warn!(
                %error,
                "audit retention failed; the old files are kept and retention is retried tomorrow"
            ),
        }
        let listed = files::list(&dir).map_err(setup_io(&dir, "cannot list the directory"))?;
        let checkpoints = signer.map(|signer| Checkpoints {
            signer,
            every_records: settings.checkpoint_every_records.max(1),
            every: Duration::from_secs(settings.checkpoint_every_secs.max(1)),
            signed_size: signed.as_ref().map_or(0, |s| s.size),
            signed_at: clock.monotonic(),
            path: dir.join(CHECKPOINTS_FILE),
        });
        let name = listed
            .last()
            .map_or(FileName::first_of(today), |(name, _)| *name);
        let path = dir.join(name.file_name());
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(files::FILE_MODE)
            .open(&path)
            .map_err(setup_io(&path, "cannot open the audit file for appending"))?;
        let len = file
            .metadata()
            .map_err(setup_io(&path, "cannot read the file's length"))?
            .len();
        files::sync_dir(&dir).map_err(setup_io(&dir, "cannot sync the directory"))?;
        tracing::info!(
            dir = %dir.display(),
            file = %name.file_name(),
            next_seq = chain.next_seq,
            tree_size = tree.as_ref().map(Edge::size),
            "audit log opened"
        );
        Ok(Writer {
            dir,
            max_file_bytes: settings.max_file_bytes,
            retention_days: settings.retention_days,
            retry_interval: Duration::from_millis(settings.retry_interval_ms.max(1)),
            clock,
            sync_data,
            chain,
            tail: Position { name, len },
            file: Some(file),
            failed: false,
            abandoned: Vec::new(),
            housekept_on: today,
            tree,
            checkpoints,
            witness,
            shared,
            out: Vec::with_capacity(64 * 1024),
            _lock: lock,
        })
    }

    /// The thread's body: until the log is closed and every batch written,
    /// commit the oldest batch.
    pub(super) fn run(mut self, queue: Arc<Queue>) {
        /// However the thread ends, no request is left waiting for it.
        struct Abandon<'a>(&'a Queue);
        impl Drop for Abandon<'_> {
            fn drop(&mut self) {
                self.0.abandon();
            }
        }
        let _abandon = Abandon(&queue);
        loop {
            let wait = if self.failed {
                self.retry_interval
            } else {
                self.checkpoint_due_in().unwrap_or(HOUSEKEEPING_INTERVAL)
            };
            let batch = match queue.take(wait) {
                Taken::Batch(batch) => batch,
                Taken::Idle => {
                    self.idle();
                    continue;
                }
                Taken::Closed => break,
            };
            self.housekeeping();
            self.commit(&batch);
            queue.recycle(batch);
        }
        // At shutdown, the records not yet covered get their checkpoint.
        if !self.failed {
            self.checkpoint(true);
        }
        // The witness gets the last checkpoint before the writer is gone.
        drop(self.witness.take());
        tracing::debug!("audit writer stopped");
    }

    fn commit(&mut self, batch: &Batch) {
        let batch_len = batch.len();
        let count = batch_len as u64;
        // A policy reload is checkpointed at once, whatever the schedule says.
        let force_checkpoint = batch
            .bodies()
            .any(|(_, kind)| kind.is_some_and(RecordKind::forces_checkpoint));
        let started = std::time::Instant::now();
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let written = self.write(batch, &mut out);
        self.out = out;
        // The disk's time for the whole group commit (write and fdatasync),
        // failed ones included: a slow or failing disk shows here first.
        crate::telemetry::record_audit_write(started.elapsed());
        // Beside it, how many records shared that fdatasync: a batch that
        // grows tells of a disk that falls behind before the time does.
        crate::telemetry::record_audit_batch(batch_len);
        match written {
            Ok(sealed) => {
                self.shared.records.fetch_add(count, Ordering::Relaxed);
                self.shared.batches.fetch_add(1, Ordering::Relaxed);
                self.shared.healthy.store(true, Ordering::Release);
                // A waiter that went away still has its record on disk.
                batch.publish(Ok(sealed));
                self.checkpoint(force_checkpoint);
            }
            Err(failure) => {
                self.failed = true;
                self.file = None;
                self.shared.healthy.store(false, Ordering::Release);
                tracing::error!(
                    error = %failure,
                    cause = %failure.source,
                    records = count,
                    "audit batch not written: its requests are refused until the log recovers"
                );
                batch.publish(Err(AuditError::Unavailable(Arc::new(failure))));
            }
        }
    }

    /// Seals, writes and syncs one batch, its lines assembled in `buf`; the
    /// chain moves on only if all of it is durable.
    fn write(&mut self, batch: &Batch, buf: &mut Vec<u8>) -> Result<Sealed, WriteFailure> {
        let mut file = match self.file.take() {
            Some(file) if !self.failed => file,
            _ => self.reopen()?,
        };
        let mut name = self.tail.name;
        let mut path = self.dir.join(name.file_name());
        // Bytes in the current file, including those still in `buf`.
        let mut len = self.tail.len;
        let mut unsynced = false;
        let mut chain = self.chain.clone();
        let mut tree = self.tree.clone();
        let first_seq = chain.next_seq;
        let mut marks = Vec::with_capacity(batch.len());
        for (body, _kind) in batch.bodies() {
            let time = self.clock.wall().max(chain.last_time);
            let day = files::utc_day(time);
            let start = buf.len();
            let (hash, written_at) =
                chain::seal_body(buf, chain.next_seq, time, body, chain.prev.as_bytes());
            let line_len = buf.len() - start;
            let full = len > 0 && len.saturating_add(line_len as u64) > self.max_file_bytes;
            if day > name.day || full {
                flush(&mut file, &buf[..start], &path)?;
                buf.drain(..start);
                if unsynced {
                    sync(self.sync_data, &file, &path, &self.shared)?;
                }
                name = if day > name.day {
                    FileName::first_of(day)
                } else {
                    name.next()
                };
                path = self.dir.join(name.file_name());
                file = self.open_next(&path)?;
                len = file
                    .metadata()
                    .map_err(|e| WriteFailure::at("cannot read the length of", &path, e))?
                    .len();
            }
            if let Some(tree) = tree.as_mut() {
                // The leaf is the stored line without its newline; leaf index = seq - 1.
                let end = buf.len() - 1;
                tree.push(leaf_hash(&buf[end + 1 - line_len..end]));
            }
            len = len.saturating_add(line_len as u64);
            unsynced = true;
            chain.next_seq = chain.next_seq.saturating_add(1);
            chain.prev.clear();
            chain.prev.push_str(&chain::hex_of(&hash));
            chain.last_time = time;
            marks.push((hash, written_at));
        }
        flush(&mut file, buf, &path)?;
        if unsynced {
            sync(self.sync_data, &file, &path, &self.shared)?;
        }
        self.chain = chain;
        self.tree = tree;
        self.tail = Position { name, len };
        self.file = Some(file);
        self.abandoned.clear();
        Ok(Sealed { first_seq, marks })
    }

    /// Opens the next file of the chain, creating it (and remembering that it
    /// did, in case the batch fails).
    fn open_next(&mut self, path: &Path) -> Result<File, WriteFailure> {
        let created = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(files::FILE_MODE)
            .open(path);
        let file = match created {
            Ok(file) => {
                self.abandoned.push(path.to_path_buf());
                file
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(|e| WriteFailure::at("cannot open", path, e))?,
            Err(e) => return Err(WriteFailure::at("cannot create", path, e)),
        };
        files::sync_dir(&self.dir)
            .map_err(|e| WriteFailure::at("cannot sync the directory", &self.dir, e))?;
        Ok(file)
    }

    /// After a failure: undo what the failed batch left on disk, reopen the
    /// current file, and open today's file if the day changed.
    fn reopen(&mut self) -> Result<File, WriteFailure> {
        while let Some(path) = self.abandoned.pop() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    let failure = WriteFailure::at("cannot remove the unacknowledged", &path, e);
                    self.abandoned.push(path);
                    return Err(failure);
                }
            }
        }
        let path = self.dir.join(self.tail.name.file_name());
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(files::FILE_MODE)
            .open(&path)
            .map_err(|e| WriteFailure::at("cannot open", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| WriteFailure::at("cannot read the length of", &path, e))?
            .len();
        if len > self.tail.len {
            file.set_len(self.tail.len)
                .and_then(|()| file.sync_data())
                .map_err(|e| WriteFailure::at("cannot cut back", &path, e))?;
            tracing::warn!(
                file = %self.tail.name.file_name(),
                bytes = len - self.tail.len,
                "removed the unacknowledged end of a failed audit batch"
            );
        } else if len < self.tail.len {
            tracing::error!(
                file = %self.tail.name.file_name(),
                "the audit file is shorter than what was acknowledged: it was altered outside the broker; `audit verify` reports the gap"
            );
            self.tail.len = len;
        }
        files::sync_dir(&self.dir)
            .map_err(|e| WriteFailure::at("cannot sync the directory", &self.dir, e))?;
        let today = files::utc_day(self.clock.wall().max(self.chain.last_time));
        if today <= self.tail.name.day {
            return Ok(file);
        }
        let name = FileName::first_of(today);
        let path = self.dir.join(name.file_name());
        let file = self.open_next(&path)?;
        self.abandoned.clear();
        let len = file
            .metadata()
            .map_err(|e| WriteFailure::at("cannot read the length of", &path, e))?
            .len();
        self.tail = Position { name, len };
        Ok(file)
    }

    /// No record for a while: retry a failed log, then see whether the day changed.
    fn idle(&mut self) {
        if self.failed {
            match self.reopen() {
                Ok(file) => {
                    self.file = Some(file);
                    self.failed = false;
                    self.shared.healthy.store(true, Ordering::Release);
                    tracing::info!("audit log writable again");
                }
                Err(failure) => {
                    tracing::debug!(error = %failure, cause = %failure.source, "audit log still not writable");
                }
            }
        }
        if !self.failed {
            self.checkpoint(false);
        }
        self.housekeeping();
    }

    /// How long until records written but not covered must be checkpointed;
    /// `None` when there is nothing to sign.
    fn checkpoint_due_in(&self) -> Option<Duration> {
        let checkpoints = self.checkpoints.as_ref()?;
        let size = self.tree.as_ref()?.size();
        (size > checkpoints.signed_size).then(|| {
            let elapsed = self
                .clock
                .monotonic()
                .saturating_duration_since(checkpoints.signed_at);
            checkpoints
                .every
                .saturating_sub(elapsed)
                .min(HOUSEKEEPING_INTERVAL)
        })
    }

    /// Signs a checkpoint of the acknowledged (hence durable) records when
    /// enough records or time went by, or whenever `force`d with records not
    /// yet covered; appends it to `checkpoints.log` and fsyncs it. A failure
    /// is logged and retried with the next batch: the records are durable and
    /// acknowledged already.
    fn checkpoint(&mut self, force: bool) {
        let (Some(checkpoints), Some(tree)) = (self.checkpoints.as_mut(), self.tree.as_ref())
        else {
            return;
        };
        let size = tree.size();
        if size <= checkpoints.signed_size {
            return;
        }
        let now = self.clock.monotonic();
        let due = force
            || size - checkpoints.signed_size >= checkpoints.every_records
            || now.saturating_duration_since(checkpoints.signed_at) >= checkpoints.every;
        if !due {
            return;
        }
        match append_checkpoint(&checkpoints.signer, &checkpoints.path, size, tree.root()) {
            Ok(note) => {
                checkpoints.signed_size = size;
                checkpoints.signed_at = now;
                tracing::debug!(tree_size = size, "audit checkpoint signed");
                if let Some(witness) = &self.witness {
                    witness.offer(note, size);
                }
            }
            Err(error) => {
                // Tried again after `every` seconds or with the next batch, not in a loop.
                checkpoints.signed_at = now;
                tracing::error!(
                    %error,
                    tree_size = size,
                    "audit checkpoint not written; retried with the next batch"
                );
            }
        }
    }

    /// Once per UTC day (and never while failed): retention.
    fn housekeeping(&mut self) {
        let today = files::utc_day(self.clock.wall());
        if self.failed || today <= self.housekept_on {
            return;
        }
        self.housekept_on = today;
        let signer = self.checkpoints.as_ref().map(|c| &c.signer);
        match retention::retire(&self.dir, today, self.retention_days, signer) {
            Ok(retired) => log_retired(&retired),
            Err(error) => tracing::warn!(
                %error,
                "audit retention failed; the old files are kept and retention is retried tomorrow"
            ),
        }
    }
}

fn flush(file: &mut File, bytes: &[u8], path: &Path) -> Result<(), WriteFailure> {
    if !bytes.is_empty() {
        file.write_all(bytes)
            .map_err(|e| WriteFailure::at("cannot write to", path, e))?;
    }
    Ok(())
}

fn sync(
    sync_data: SyncData,
    file: &File,
    path: &Path,
    shared: &Shared,
) -> Result<(), WriteFailure> {
    sync_data(file).map_err(|e| WriteFailure::at("cannot fsync", path, e))?;
    shared.syncs.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn log_retired(retired: &retention::Retired) {
    if let (Some(first), Some(last)) = (retired.removed.first(), retired.removed.last()) {
        tracing::info!(
            files = retired.removed.len(),
            from = %first.file_name(),
            through = %last.file_name(),
            checkpoint_seq = retired.checkpoint.as_ref().map(|c| c.seq),
            "audit retention removed old files"
        );
    }
}

fn setup_io(path: &Path, context: &'static str) -> impl FnOnce(io::Error) -> AuditSetupError {
    let path = path.to_path_buf();
    move |source| AuditSetupError::Io {
        path,
        context,
        source,
    }
}

fn lock(dir: &Path) -> Result<File, AuditSetupError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(files::FILE_MODE)
        .open(&path)
        .map_err(setup_io(&path, "cannot open the lock file"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(AuditSetupError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(AuditSetupError::Io {
            path,
            context: "cannot lock the lock file",
            source,
        }),
    }
}

/// A crash (or power loss) during a write may leave the newest file ending in
/// a partial line. Its append was never acknowledged, so it is removed. A
/// complete, sound record that lacks only its newline is kept and completed.
fn repair_torn_tail(path: &Path) -> Result<(), AuditSetupError> {
    let tail = files::read_tail(path).map_err(setup_io(path, "cannot read the end of the file"))?;
    if tail.partial_len == 0 {
        return Ok(());
    }
    let complete = tail
        .partial
        .as_deref()
        .and_then(|line| chain::parse(line).ok().map(|r| (r, line)))
        .is_some_and(|(record, line)| chain::check(&record, line) == Integrity::Sound);
    let mut file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(setup_io(path, "cannot open the file to repair its end"))?;
    if complete {
        file.write_all(b"\n")
            .map_err(setup_io(path, "cannot complete the last line"))?;
        tracing::warn!(file = %path.display(), "completed a final audit record that lacked its newline");
    } else {
        file.set_len(tail.complete_len)
            .map_err(setup_io(path, "cannot remove a torn final line"))?;
        tracing::warn!(
            file = %path.display(),
            bytes = tail.partial_len,
            "removed a torn final audit line: a write cut short by a crash, never acknowledged"
        );
    }
    file.sync_data()
        .map_err(setup_io(path, "cannot fsync the repaired file"))
}

/// Appends one signed checkpoint to `checkpoints.log` and fsyncs it; a
/// failed append is cut back, so that the file holds whole notes only.
/// Returns the note (without the separating empty line).
fn append_checkpoint(
    signer: &CheckpointSigner,
    path: &Path,
    size: u64,
    root: Hash,
) -> Result<Vec<u8>, String> {
    let note = signer.sign(size, root)?;
    let mut entry = note.clone();
    entry.push(b'\n');
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(files::FILE_MODE)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    let written = file.write_all(&entry).and_then(|()| file.sync_data());
    if let Err(e) = written {
        let _ = file.set_len(len);
        return Err(format!("cannot append to {}: {e}", path.display()));
    }
    if len == 0
        && let Some(dir) = path.parent()
    {
        files::sync_dir(dir).map_err(|e| format!("cannot sync {}: {e}", dir.display()))?;
    }
    Ok(note)
}

/// The last checkpoint of `checkpoints.log`, checked with the writer's own
/// key; a torn final note (a crash during its append) is cut away. A note
/// that does not verify refuses the start: the file was written by another
/// key or another log, or edited.
fn last_signed(
    dir: &Path,
    signer: &CheckpointSigner,
) -> Result<Option<SignedCheckpoint>, AuditSetupError> {
    let path = dir.join(CHECKPOINTS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuditSetupError::Io {
                path,
                context: "cannot read the signed checkpoints",
                source,
            });
        }
    };
    let (notes, complete) = split_log(&bytes);
    if complete < bytes.len() {
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(setup_io(&path, "cannot open the signed checkpoints"))?;
        file.set_len(complete as u64)
            .and_then(|()| file.sync_data())
            .map_err(setup_io(&path, "cannot remove a torn final checkpoint"))?;
        tracing::warn!(file = %path.display(), "removed a torn final audit checkpoint");
    }
    let Some(last) = notes.last() else {
        return Ok(None);
    };
    signer
        .verifier()
        .verify(last)
        .map(Some)
        .map_err(|defect| AuditSetupError::Tree {
            reason: format!(
                "{}: the last checkpoint is {defect}; run `caf-broker audit verify --public-key`",
                path.display()
            ),
        })
}

/// Rebuilds the tree's right edge from the records (from the retention
/// checkpoint's edge, if any) and checks it against the last signed
/// checkpoint: fewer records than it covers, or another root at its size,
/// refuses the start (fail closed).
fn rebuild_tree(
    dir: &Path,
    listed: &[(FileName, PathBuf)],
    signed: Option<&SignedCheckpoint>,
    signer: Option<&CheckpointSigner>,
) -> Result<Option<Edge>, AuditSetupError> {
    let refuse = |reason: String| AuditSetupError::Tree { reason };
    let retained = retention::read_checkpoint(dir).map_err(|e| AuditSetupError::Checkpoint {
        reason: e.to_string(),
    })?;
    let mut edge = match &retained {
        None => Edge::empty(),
        Some(cut) => match cut.tree_edge() {
            Some(edge) => edge,
            None if signer.is_none() => return Ok(None),
            None => {
                return Err(refuse(format!(
                    "{}: the retention checkpoint holds no tree edge (written before checkpoints were signed); the tree cannot be rebuilt",
                    dir.join(retention::CHECKPOINT_FILE).display()
                )));
            }
        },
    };
    if let (Some(signer), Some(cut)) = (signer, &retained) {
        let cut_signed = cut
            .note
            .as_deref()
            .map(|note| signer.verifier().verify(note.as_bytes()));
        match cut_signed {
            Some(Ok(c)) if c.size == edge.size() && c.root == edge.root() => {}
            _ => {
                return Err(refuse(format!(
                    "{}: the retention checkpoint is not signed by this log's key for its tree edge: forged or altered",
                    dir.join(retention::CHECKPOINT_FILE).display()
                )));
            }
        }
    }
    let mut root_at_signed = None;
    let wanted = signed.map(|s| s.size);
    if wanted == Some(edge.size()) {
        root_at_signed = Some(edge.root());
    }
    for (name, path) in listed {
        let text = std::fs::read(path).map_err(setup_io(path, "cannot read the audit file"))?;
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let seq = chain::parse(line).map(|record| record.seq);
            if let Ok(seq) = seq
                && seq <= edge.size()
            {
                // Retired by a retention run that stopped before removing it.
                continue;
            }
            if seq != Ok(edge.size() + 1) {
                let reason = format!(
                    "{}: {} where seq {} was expected: records were removed, moved or damaged; run `caf-broker audit verify`",
                    name.file_name(),
                    seq.map_or_else(
                        |_| "an unreadable record".to_owned(),
                        |s| format!("seq {s}")
                    ),
                    edge.size() + 1
                );
                if signer.is_some() {
                    return Err(refuse(reason));
                }
                // Without a signing key, the chain alone guards the log, as it did before the tree.
                tracing::warn!(%reason, "the audit tree cannot be rebuilt; no tree is kept");
                return Ok(None);
            }
            edge.push(leaf_hash(line));
            if wanted == Some(edge.size()) {
                root_at_signed = Some(edge.root());
            }
        }
    }
    if let Some(signed) = signed {
        if signed.size > edge.size() {
            return Err(refuse(format!(
                "the log holds {} records but its last signed checkpoint covers {}: records were removed (truncation); run `caf-broker audit verify --public-key`",
                edge.size(),
                signed.size
            )));
        }
        if let Some(root) = root_at_signed
            && root != signed.root
        {
            return Err(refuse(format!(
                "the records do not match the last signed checkpoint (size {}): a record was edited, removed or reordered; run `caf-broker audit verify --public-key`",
                signed.size
            )));
        }
    }
    Ok(Some(edge))
}

/// What [`Writer::open`] reads of an existing directory, read without
/// writing: the newest files can be opened for appending, and the chain's last
/// record and the checkpoint parse.
pub(super) fn check_chain(
    dir: &Path,
    listed: &[(FileName, PathBuf)],
) -> Result<(), AuditSetupError> {
    if let Some((_, newest)) = listed.last() {
        OpenOptions::new()
            .append(true)
            .open(newest)
            .map_err(setup_io(newest, "cannot open the audit file for appending"))?;
    }
    restore_chain(dir, listed).map(drop)
}

/// The chain's position from the newest record on disk, or the checkpoint,
/// whichever is further; the genesis when there is neither.
fn restore_chain(dir: &Path, listed: &[(FileName, PathBuf)]) -> Result<Chain, AuditSetupError> {
    let mut chain = Chain {
        next_seq: 1,
        prev: GENESIS.to_owned(),
        last_time: Timestamp::UNIX_EPOCH,
    };
    for (_, path) in listed.iter().rev() {
        let tail =
            files::read_tail(path).map_err(setup_io(path, "cannot read the end of the file"))?;
        let line = match tail.last_line {
            Some(line) => line,
            None if tail.complete_len == 0 => continue,
            None => {
                return Err(AuditSetupError::Unreadable {
                    path: path.clone(),
                    reason: "the last line is too long to be a record".into(),
                });
            }
        };
        let record = chain::parse(&line).map_err(|reason| AuditSetupError::Unreadable {
            path: path.clone(),
            reason,
        })?;
        chain = Chain {
            next_seq: record.seq.saturating_add(1),
            prev: record.hash,
            last_time: record.time.parse().unwrap_or(Timestamp::UNIX_EPOCH),
        };
        break;
    }
    let checkpoint = retention::read_checkpoint(dir).map_err(|e| AuditSetupError::Checkpoint {
        reason: e.to_string(),
    })?;
    if let Some(checkpoint) = checkpoint
        && checkpoint.seq >= chain.next_seq
    {
        chain = Chain {
            next_seq: checkpoint.seq.saturating_add(1),
            prev: checkpoint.hash,
            last_time: checkpoint.time.parse().unwrap_or(Timestamp::UNIX_EPOCH),
        };
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::audit::{AuditEntry, AuditLog, Outcome, verify_dir};
    use crate::clock::SystemClock;

    /// Whether the injected `fdatasync` fails; only the test below sets it.
    static DISK_FAILS: AtomicBool = AtomicBool::new(true);

    fn flaky_fdatasync(file: &File) -> io::Result<()> {
        match DISK_FAILS.load(Ordering::SeqCst) {
            true => Err(io::Error::other("injected fdatasync failure")),
            false => file.sync_data(),
        }
    }

    #[tokio::test]
    async fn a_record_whose_fdatasync_fails_is_refused_and_removed_before_the_next_one() {
        let root = std::env::temp_dir().join(format!("caf-broker-sync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let key = root.join("audit-hmac.key");
        std::fs::write(&key, "5a".repeat(32)).unwrap();
        let mut settings = AuditSettings::new(root.join("log"), key);
        // No background retry: recovery comes with the next append.
        settings.retry_interval_ms = 60_000;
        let log =
            AuditLog::open_with_sync(&settings, Arc::new(SystemClock), flaky_fdatasync).unwrap();
        let entry = |n: u128| AuditEntry::new(uuid::Uuid::from_u128(n), Outcome::Released, 200);

        // The record reached the file but not the disk: it is not acknowledged.
        match log.append(entry(1)).await {
            Err(AuditError::Unavailable(failure)) => {
                assert!(failure.to_string().contains("cannot fsync"), "{failure}");
            }
            other => panic!("an append whose fdatasync failed was acknowledged: {other:?}"),
        }
        assert!(!log.is_healthy());
        assert_eq!(log.stats().records, 0);

        DISK_FAILS.store(false, Ordering::SeqCst);
        let receipt = log.append(entry(2)).await.unwrap();
        assert_eq!(
            receipt.seq, 1,
            "the refused record took no place in the chain"
        );
        assert!(log.is_healthy());
        drop(log);
        // The unsynced line was cut away before the next record was written.
        assert_eq!(verify_dir(&settings.dir).unwrap().records, 1);
        let _ = std::fs::remove_dir_all(&root);
    }
}
