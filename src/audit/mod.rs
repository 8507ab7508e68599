//! The audit log: one durable, hash-chained record per data request, written before any data leaves.
//!
//! # What is recorded
//!
//! One JSON line per data request, whatever its [`Outcome`]: time (RFC 3339
//! UTC), request id, trace id, post, `sub`, role, purpose, case reference, the
//! dossier as HMAC-SHA-256 under `audit.hmac_key_file` ([`AuditKey::pseudonymize`])
//! with that key's id (`key_id`, when `audit.hmac_key_id` is set),
//! outcome, HTTP status, released field paths, policy version, cache hit or
//! miss, and the chain fields `seq`, `prev`, `hash` ([`Record`]). What is not
//! known when a request is refused (no caller for a 401) is `null`. Never a
//! clear numéro, NIR, name or token: [`AuditEntry`] only accepts parsed domain
//! values, and the lookup is hashed before it reaches the writer. Refusal
//! summaries, alerts and policy reloads are records too, told apart by their
//! [`RecordKind`]; a policy reload makes the writer sign a checkpoint right
//! after its batch ([`Record::forces_checkpoint`]).
//!
//! # Files
//!
//! `audit.dir/<replica id>/audit-YYYY-MM-DD.jsonl` (UTC day; see
//! [`replicas`] for several brokers sharing `audit.dir`), continued in
//! `audit-YYYY-MM-DD.1.jsonl`, `.2`, ... when `max_file_bytes` is reached.
//! Directories are created `0700`, files `0600`.
//! Append-only; the chain (`seq` + 1, `prev` = previous `hash`) runs across
//! files and restarts. `writer.lock` keeps a second process out of the
//! directory; `checkpoint.json` is written by retention; `checkpoints.log`
//! holds the signed checkpoints of the tree.
//!
//! # Durability
//!
//! [`AuditLog::append`] resolves only once the record is written and
//! `fdatasync`ed. A single writer thread commits in groups: all records
//! pending when it starts a batch share one write and one fsync (see
//! [`writer`]). The request serialises its record itself into the batch being
//! filled and waits for that batch's one notification ([`queue`]): no message
//! and no thread hand-off per record. At most `queue_capacity` records wait
//! for the writer; past that, `append` fails at once with
//! [`AuditError::QueueFull`] (the broker answers 503 `audit-unavailable`), so
//! a slow disk costs refusals, never unbounded memory. If a batch cannot be written, every request in it gets
//! [`AuditError::Unavailable`] (the broker answers 503 `audit-unavailable` and
//! releases nothing), [`AuditLog::is_healthy`] turns false, what the batch
//! left on disk is removed, and the log retries every `retry_interval_ms` and
//! on every new append.
//!
//! A record on disk means the broker decided that outcome; the answer leaves
//! after. A crash between the fsync and the answer leaves a record of an
//! answer never delivered: the log may over-record, never under-record.
//!
//! # Torn writes
//!
//! A crash during a write (power loss; SIGKILL does not tear a write) may
//! leave the newest file ending in a partial line. That append was never
//! acknowledged: [`AuditLog::open`] removes the partial line and logs a
//! warning. [`verify_dir`] reports a partial line as [`Defect::Truncated`]
//! until then, because it cannot tell a torn write from a cut made by hand. A
//! final record that is complete and sound but lacks only its newline is
//! accepted by `verify` (with a warning) and completed by `open`.
//!
//! # Retention
//!
//! Files whose day is more than `retention_days` before today (UTC) are
//! removed on open and once a day, except the newest; the `seq` and `hash` of
//! the last removed record go to `checkpoint.json` first, and `verify`
//! continues the chain from there.
//!
//! # Signed tree
//!
//! The records are the leaves of a Merkle tree ([`tree`]; leaf index `seq` -
//! 1). With `audit.checkpoint_signing_key_file`, the writer signs C2SP
//! checkpoints of it (`signing.rs`) into `checkpoints.log`, each after the
//! records it covers are durable; on open it rebuilds the tree from the
//! records and refuses to start ([`AuditSetupError::Tree`]) when the log is
//! shorter than its last checkpoint or has another root. [`verify_signed`]
//! checks the tree against every checkpoint with the public key only.
//!
//! # Invariants
//!
//! `seq` is continuous from 1 (or the checkpoint); each `prev` is the previous
//! `hash`; `time` never decreases along the chain; a record is acknowledged
//! only once durable; a failed batch leaves nothing behind.

mod chain;
mod files;
mod key;
mod proof;
mod queue;
mod record;
mod replicas;
mod report;
mod retention;
mod search;
mod settings;
mod signing;
pub mod tree;
mod verify;
mod witness;
mod writer;

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::domain::Lookup;

pub use chain::GENESIS;
pub use files::FileName;
pub use key::AuditKey;
pub use proof::{
    Consistency, ConsistencyDefect, InclusionProof, PROOF_FORMAT, ProofDefect, ProveError,
    ProvenLeaf, check_inclusion_proof, prove_consistency, prove_records, proven_checkpoint,
};
pub use record::{
    AuditEntry, AuditReceipt, Figures, Outcome, Pseudonym, Record, RecordKind, ReloadTrigger,
};
pub use replicas::{LogDir, logs_under, loose_modes};
pub use report::{AccessReport, ProvenCheckpoint, ReportAccess, ReportLog};
pub use retention::{CHECKPOINT_FILE, Checkpoint, CheckpointError, read_checkpoint};
pub use search::{Found, SearchError, SearchResult, search, search_logs};
pub use settings::{AuditSettings, PreviousHmacKey};
pub use signing::{
    CHECKPOINTS_FILE, CheckpointSigner, CheckpointVerifier, NoteDefect, SignedCheckpoint,
    split_log as split_checkpoints,
};
pub use verify::{
    BadRecord, ChainStart, Defect, TreeDefect, TreeReport, VerifyError, VerifyReport, verify_dir,
    verify_files, verify_signed,
};

use queue::{Queue, Ticket};
use writer::{Shared, Writer};

/// The audit log of this process: built once, shared in an `Arc`.
pub struct AuditLog {
    key: AuditKey,
    queue: Arc<Queue>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

/// Counters of the writer since it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditStats {
    /// Records written and acknowledged.
    pub records: u64,
    /// Group commits that succeeded.
    pub batches: u64,
    /// `fdatasync` calls made (one per batch, plus one per file left mid-batch).
    pub syncs: u64,
}

/// Why a record could not be written. The request must not release data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log cannot be written")]
    Unavailable(#[source] Arc<WriteFailure>),
    #[error("the audit writer has stopped")]
    Stopped,
    /// `audit.queue_capacity` records already wait for the writer: the disk
    /// is behind, and the request is refused at once rather than queued.
    #[error("the audit queue is full")]
    QueueFull,
}

/// The I/O failure behind [`AuditError::Unavailable`]: what was being done, and to which file.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct WriteFailure {
    context: String,
    #[source]
    source: std::io::Error,
}

impl WriteFailure {
    fn new(context: &str, source: std::io::Error) -> WriteFailure {
        WriteFailure {
            context: context.to_owned(),
            source,
        }
    }

    fn at(action: &str, path: &std::path::Path, source: std::io::Error) -> WriteFailure {
        WriteFailure {
            context: format!("{action} {}", path.display()),
            source,
        }
    }
}

/// Why the audit log cannot be opened; each names the setting or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum AuditSetupError {
    #[error("audit.hmac_key_file: {}: {problem}", .path.display())]
    Key { path: PathBuf, problem: String },
    #[error("audit.previous_hmac_keys[{index}].file: {}: {problem}", .path.display())]
    PreviousKey {
        index: usize,
        path: PathBuf,
        problem: String,
    },
    #[error("audit.dir: {}: audit files lie directly in it (the layout of a single broker); stop the broker and move them, with checkpoint.json if present, into {}/{replica}/ where replica {replica} continues their chain", .path.display(), .path.display())]
    SingleLog { path: PathBuf, replica: String },
    #[error("audit.dir: {}: cannot create or use the directory: {source}", .path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit.dir: {}: another process is writing this audit log (writer.lock is held); give each broker its own directory", .path.display())]
    Locked { path: PathBuf },
    #[error("{}: {context}", .path.display())]
    Io {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the last record is unreadable ({reason}); run `caf-broker audit verify` and repair the file before starting", .path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("audit.dir: {reason}")]
    Checkpoint { reason: String },
    #[error("audit.checkpoint_signing_key_file: {}: {problem}", .path.display())]
    SigningKey { path: PathBuf, problem: String },
    /// The records do not match the last signed checkpoint: the start is refused.
    #[error("audit.dir: the audit log does not match its signed checkpoints: {reason}")]
    Tree { reason: String },
    #[error("cannot start the audit writer thread")]
    Spawn(#[source] std::io::Error),
    #[error("audit.witness_url: {0}")]
    Witness(String),
    #[error("audit.witness_ca_file: {0}")]
    WitnessCa(String),
}

impl AuditLog {
    /// Opens (creating if needed) the log under `settings.dir`, continues its
    /// chain, applies retention and starts the writer thread. Blocking: call it
    /// at startup.
    pub fn open(settings: &AuditSettings) -> Result<AuditLog, AuditSetupError> {
        AuditLog::open_with_clock(settings, Arc::new(SystemClock))
    }

    /// [`AuditLog::open`] with the clock given: record times, day changes,
    /// rotation and retention follow its wall time.
    pub fn open_with_clock(
        settings: &AuditSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<AuditLog, AuditSetupError> {
        AuditLog::open_with(settings, clock, writer::fdatasync)
    }

    /// [`AuditLog::open_with_clock`] on a disk whose `fdatasync` is replaced:
    /// a test makes it fail, or hang, and sees what the requests get.
    #[cfg(test)]
    pub(crate) fn open_with_sync(
        settings: &AuditSettings,
        clock: Arc<dyn Clock>,
        sync_data: writer::SyncData,
    ) -> Result<AuditLog, AuditSetupError> {
        AuditLog::open_with(settings, clock, sync_data)
    }

    fn open_with(
        settings: &AuditSettings,
        clock: Arc<dyn Clock>,
        sync_data: writer::SyncData,
    ) -> Result<AuditLog, AuditSetupError> {
        let key =
            AuditKey::from_file(&settings.hmac_key_file)?.with_id(settings.hmac_key_id.clone());
        let signer = signer(settings)?;
        let replica = settings
            .replica_id
            .clone()
            .unwrap_or_else(|| "log".to_owned());
        let settings = &replicas::writer_settings(settings)?;
        files::create_dir_owner_only(&settings.dir).map_err(|source| AuditSetupError::Dir {
            path: settings.dir.clone(),
            source,
        })?;
        let shared = Arc::new(Shared::new());
        let witnesses = match &signer {
            Some(_) => witness::from_settings(settings, &replica)?,
            None => Vec::new(),
        };
        let witness = if witnesses.is_empty() {
            None
        } else {
            Some(
                witness::WitnessHandle::start(witnesses, clock.clone())
                    .map_err(AuditSetupError::Spawn)?,
            )
        };
        let writer = Writer::open(settings, clock, sync_data, shared.clone(), signer, witness)?;
        let queue = Arc::new(Queue::new(
            settings.queue_capacity,
            settings.max_batch_records,
        ));
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn({
                let queue = queue.clone();
                move || writer.run(queue)
            })
            .map_err(AuditSetupError::Spawn)?;
        Ok(AuditLog {
            key,
            queue,
            shared,
            writer: Some(thread),
        })
    }

    /// What `serve` would find opening the log, for `caf-broker check`: the
    /// keys read (and, with `audit.witness_url`, its CA file); the directory
    /// can be created, or, if it exists, a file can be created in it, and the
    /// chain's last record (and checkpoint) reads back.
    /// It takes no lock and leaves nothing behind (what it creates to try is
    /// removed at once), so it may run beside the broker that writes the
    /// directory: even a brief hold of `writer.lock` could make that broker's
    /// restart fail.
    pub fn check(settings: &AuditSettings) -> Vec<AuditSetupError> {
        let mut problems = Vec::new();
        if let Err(keys) = AuditKey::all_from_settings(settings) {
            problems.extend(keys);
        }
        if let Err(e) = signer(settings) {
            problems.push(e);
        }
        if let Err(e) = witness::check(settings) {
            problems.push(e);
        }
        let settings = match replicas::writer_settings(settings) {
            Ok(local) => local,
            Err(e) => {
                problems.push(e);
                return problems;
            }
        };
        let dir = &settings.dir;
        let unusable = |source| AuditSetupError::Dir {
            path: dir.clone(),
            source,
        };
        match std::fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => problems.push(unusable(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory",
            ))),
            Ok(_) => {
                if let Err(source) = files::probe_writable(dir) {
                    problems.push(unusable(source));
                }
                match files::list(dir) {
                    Ok(listed) => {
                        if let Err(e) = writer::check_chain(dir, &listed) {
                            problems.push(e);
                        }
                    }
                    Err(source) => problems.push(unusable(source)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Err(source) = files::probe_creatable(dir) {
                    problems.push(unusable(source));
                }
            }
            Err(source) => problems.push(unusable(source)),
        }
        problems
    }

    /// Records one request; resolves once the record is durable, with its
    /// place in the chain. On error, no data may be released.
    ///
    /// When `audit.queue_capacity` records already wait for the writer, fails
    /// at once with [`AuditError::QueueFull`]: memory stays bounded however far
    /// behind the disk is. Dropping the future does not withdraw the record.
    pub async fn append(&self, entry: AuditEntry) -> Result<AuditReceipt, AuditError> {
        // Queued at the first poll, before anything is awaited.
        let ticket = self.enqueue(&entry)?;
        ticket.wait().await
    }

    /// Serialises `entry`'s record body into the batch being filled.
    fn enqueue(&self, entry: &AuditEntry) -> Result<Ticket, AuditError> {
        thread_local! {
            /// One body at a time per thread, serialised here and then
            /// copied into the batch under its lock.
            static BODY: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
        }
        let computed;
        let dossier = match &entry.dossier {
            Some(pseudonym) => Some(pseudonym.as_str()),
            None => {
                computed = entry.lookup.as_ref().map(|l| self.key.pseudonymize(l));
                computed.as_deref()
            }
        };
        let queued = BODY.with_borrow_mut(|body| {
            body.clear();
            if body.capacity() > 64 * 1024 {
                body.shrink_to(1024);
            }
            record::write_body(entry, dossier, self.key.id(), body).map_err(|e| {
                let failure =
                    WriteFailure::new("cannot serialize a record", std::io::Error::other(e));
                AuditError::Unavailable(Arc::new(failure))
            })?;
            self.queue.push(body, entry.kind)
        });
        if let Err(AuditError::Stopped) = queued {
            self.shared.healthy.store(false, Ordering::Release);
        }
        queued
    }

    /// The dossier as the log records it (and as `search` looks it up).
    pub fn pseudonymize(&self, lookup: &Lookup) -> Pseudonym {
        Pseudonym(self.key.pseudonymize(lookup))
    }

    /// False from a failed write until the log is writable again: for `/readyz`.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
            && self.writer.as_ref().is_some_and(|w| !w.is_finished())
    }

    pub fn stats(&self) -> AuditStats {
        AuditStats {
            records: self.shared.records.load(Ordering::Relaxed),
            batches: self.shared.batches.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
        }
    }
}

/// The checkpoint signer the settings name, if any.
fn signer(settings: &AuditSettings) -> Result<Option<CheckpointSigner>, AuditSetupError> {
    let Some(path) = &settings.checkpoint_signing_key_file else {
        return Ok(None);
    };
    let origin = settings.checkpoint_origin().unwrap_or_default();
    CheckpointSigner::from_file(path, &origin)
        .map(Some)
        .map_err(|problem| AuditSetupError::SigningKey {
            path: path.clone(),
            problem,
        })
}

impl Drop for AuditLog {
    /// Lets the writer finish what is pending, then waits for it, so that the
    /// directory's lock is free once the log is dropped.
    fn drop(&mut self) {
        self.queue.close();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("healthy", &self.is_healthy())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
