//! The audit log through its public API: chain, durability, group commit, failures, tampering, retention, search, crash.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caf_broker::audit::{
    AuditEntry, AuditError, AuditLog, AuditReceipt, AuditSettings, AuditSetupError, ChainStart,
    CheckpointVerifier, Defect, Outcome, TreeDefect, VerifyError, read_checkpoint, search,
    verify_dir, verify_files, verify_signed,
};
use caf_broker::clock::{Clock, ManualClock};
use caf_broker::domain::{
    CacheOutcome, CaseReference, Lookup, Nir, NumeroAllocataire, PostCode, Purpose, Role, Subject,
};
use sha2::{Digest, Sha256};

const NIR: &str = "295109912611193";
const DAY_SECS: i64 = 86_400;
/// 2026-03-01T10:00:00Z.
const START_SECS: i64 = 1_772_359_200;

fn start() -> jiff::Timestamp {
    jiff::Timestamp::from_second(START_SECS).unwrap()
}

// ---------------------------------------------------------------- helpers

/// A scratch directory under the target directory (a real disk, so fsync is real).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("audit-tests")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn settings(&self) -> AuditSettings {
        let key = self.0.join("audit-hmac.key");
        std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
        let mut settings = AuditSettings::new(self.0.join("log"), key);
        // No background retries: recovery happens on the next append, deterministically.
        settings.retry_interval_ms = 60_000;
        settings
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A clock that moves only when told to.
#[derive(Clone)]
struct FakeClock(Arc<ManualClock>);

impl FakeClock {
    fn new() -> FakeClock {
        FakeClock(Arc::new(ManualClock::new(start())))
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.0.clone()
    }

    fn advance_days(&self, days: i64) {
        self.advance_secs(days * DAY_SECS);
    }

    /// Moves the wall clock, backwards too.
    fn advance_secs(&self, secs: i64) {
        self.0
            .set(self.0.wall() + jiff::SignedDuration::from_secs(secs));
    }

    /// The name of today's first file.
    fn file(&self, index: u32) -> String {
        let day = self.0.wall().to_zoned(jiff::tz::TimeZone::UTC).date();
        if index == 0 {
            format!("audit-{day}.jsonl")
        } else {
            format!("audit-{day}.{index}.jsonl")
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn numero(n: u32) -> Lookup {
    Lookup::Numero(NumeroAllocataire::parse(&n.to_string()).unwrap())
}

/// A released access by an agent of TN-TUNIS to `lookup`, request id `i`.
fn released(i: u128, lookup: Lookup) -> AuditEntry {
    AuditEntry {
        trace_id: Some(format!("{:032x}", i + 1)),
        post: Some(PostCode::parse("TN-TUNIS").unwrap()),
        sub: Some(Subject::parse("agent-42").unwrap()),
        role: Some(Role::parse("agent_consulaire").unwrap()),
        purpose: Some(Purpose::parse("verification_radiation").unwrap()),
        case_reference: Some(CaseReference::parse("TN-2026/0042").unwrap()),
        lookup: Some(lookup),
        released: vec!["identite.nom".into(), "droits.radiation.date".into()],
        policy_version: Some("sha256:abcd".into()),
        cache: Some(CacheOutcome::Miss),
        ..AuditEntry::new(uuid::Uuid::from_u128(i), Outcome::Released, 200)
    }
}

fn append(rt: &tokio::runtime::Runtime, log: &AuditLog, i: u128) -> AuditReceipt {
    rt.block_on(log.append(released(i, numero(1_000_000 + (i % 7) as u32))))
        .unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

/// Every record on disk, by seq: (hash, request id).
fn records_on_disk(dir: &Path) -> HashMap<u64, (String, String)> {
    let mut records = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            for line in lines(&path) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let seq = v["seq"].as_u64().unwrap();
                let hash = v["hash"].as_str().unwrap().to_owned();
                let id = v["request_id"].as_str().unwrap().to_owned();
                assert!(records.insert(seq, (hash, id)).is_none(), "seq {seq} twice");
            }
        }
    }
    records
}

/// A line with its hash recomputed after an edit, as a careful forger would.
fn rehash(line: &str) -> String {
    let cut = line.rfind(",\"hash\":\"").unwrap();
    let body = format!("{}}}", &line[..cut]);
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    format!("{},\"hash\":\"{hash}\"}}", &line[..cut])
}

fn first_bad(dir: &Path) -> caf_broker::audit::BadRecord {
    match verify_dir(dir) {
        Err(VerifyError::Bad(bad)) => *bad,
        other => panic!("expected a bad record, got {other:?}"),
    }
}

/// A log of two files (one per day) of five records each: seq 1-5 and 6-10.
fn two_day_log(name: &str) -> (Scratch, PathBuf, [PathBuf; 2]) {
    let scratch = Scratch::new(name);
    let settings = scratch.settings();
    let clock = FakeClock::new();
    let rt = runtime();
    let log = AuditLog::open_with_clock(&settings, clock.clock()).unwrap();
    let first = settings.dir.join(clock.file(0));
    for i in 1..=5 {
        append(&rt, &log, i);
    }
    clock.advance_days(1);
    let second = settings.dir.join(clock.file(0));
    for i in 6..=10 {
        append(&rt, &log, i);
    }
    drop(log);
    assert_eq!(lines(&first).len(), 5);
    assert_eq!(lines(&second).len(), 5);
    assert_eq!(verify_dir(&settings.dir).unwrap().records, 10);
    (scratch, settings.dir, [first, second])
}

// ---------------------------------------------------------------- the record

#[test]
fn a_record_holds_every_field_and_never_a_clear_identifier() {
    let scratch = Scratch::new("fields");
    let settings = scratch.settings();
    let rt = runtime();
    let log = AuditLog::open(&settings).unwrap();
    let nir = Lookup::Nir(Nir::parse(NIR).unwrap());
    let receipt = rt.block_on(log.append(released(1, nir.clone()))).unwrap();
    let refusal = AuditEntry::new(uuid::Uuid::from_u128(2), Outcome::Unauthenticated, 401);
    rt.block_on(log.append(refusal)).unwrap();
    let dossier = log.pseudonymize(&nir);
    drop(log);

    let files: Vec<PathBuf> = std::fs::read_dir(&settings.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(!text.contains(NIR), "{text}");
    assert!(!text.contains("295109"), "{text}");

    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let r = &lines[0];
    assert_eq!(r["seq"], 1);
    assert_eq!(r["request_id"], uuid::Uuid::from_u128(1).to_string());
    assert_eq!(r["trace_id"], format!("{:032x}", 2));
    assert_eq!(r["post"], "TN-TUNIS");
    assert_eq!(r["sub"], "agent-42");
    assert_eq!(r["role"], "agent_consulaire");
    assert_eq!(r["purpose"], "verification_radiation");
    assert_eq!(r["case_reference"], "TN-2026/0042");
    assert_eq!(r["dossier"], dossier.as_str());
    assert_eq!(r["outcome"], "released");
    assert_eq!(r["status"], 200);
    assert_eq!(
        r["released"],
        serde_json::json!(["identite.nom", "droits.radiation.date"])
    );
    assert_eq!(r["policy_version"], "sha256:abcd");
    assert_eq!(r["cache"], "miss");
    assert_eq!(r["prev"], "0".repeat(64));
    assert_eq!(r["hash"], receipt.hash.as_str());
    let time = r["time"].as_str().unwrap();
    assert!(
        time.ends_with('Z') && time.parse::<jiff::Timestamp>().is_ok(),
        "{time}"
    );

    let unknown = &lines[1];
    assert_eq!(unknown["outcome"], "unauthenticated");
    assert_eq!(unknown["status"], 401);
    assert_eq!(unknown["prev"], r["hash"]);
    for field in [
        "trace_id",
        "post",
        "sub",
        "role",
        "purpose",
        "case_reference",
        "dossier",
        "policy_version",
        "cache",
    ] {
        assert!(unknown[field].is_null(), "{field} should be null");
    }
    assert_eq!(unknown["released"], serde_json::json!([]));
}

// ---------------------------------------------------------------- the chain

#[test]
fn the_chain_continues_across_rotation_restarts_and_days() {
    let scratch = Scratch::new("continues");
    let mut settings = scratch.settings();
    settings.max_file_bytes = 4096;
    let clock = FakeClock::new();
    let rt = runtime();
    let mut receipts = Vec::new();

    let log = AuditLog::open_with_clock(&settings, clock.clock()).unwrap();
    for i in 1..=20 {
        receipts.push(append(&rt, &log, i));
    }
    drop(log);
    let log = AuditLog::open_with_clock(&settings, clock.clock()).unwrap();
    for i in 21..=25 {
        receipts.push(append(&rt, &log, i));
    }
    let first_day = [clock.file(0), clock.file(1), clock.file(2)];
    clock.advance_days(1);
    for i in 26..=30 {
        receipts.push(append(&rt, &log, i));
    }
    drop(log);

    let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<u64>>());
    for name in first_day.iter().chain([&clock.file(0)]) {
        let path = settings.dir.join(name);
        assert!(path.is_file(), "{name} should exist");
        assert!(
            std::fs::metadata(&path).unwrap().len() <= 4096,
            "{name} is over the limit"
        );
    }
    let report = verify_dir(&settings.dir).unwrap();
    assert_eq!(report.records, 30);
    assert_eq!(report.start, ChainStart::Genesis);
    assert_eq!(report.last_seq, Some(30));
    assert_eq!(
        report.last_hash.as_deref(),
        Some(receipts[29].hash.as_str())
    );
}

#[test]
fn record_times_never_go_back_when_the_clock_does() {
    let scratch = Scratch::new("clock-back");
    let settings = scratch.settings();
    let clock = FakeClock::new();
    let rt = runtime();
    let log = AuditLog::open_with_clock(&settings, clock.clock()).unwrap();
    let later = append(&rt, &log, 1);
    clock.advance_secs(-3600);
    let earlier_clock = append(&rt, &log, 2);
    assert!(
        earlier_clock.time >= later.time,
        "{earlier_clock:?} < {later:?}"
    );
    drop(log);
    assert!(verify_dir(&settings.dir).is_ok());
}

#[test]
fn concurrent_appends_share_fsyncs_and_keep_the_chain_continuous() {
    let scratch = Scratch::new("concurrent");
    let settings = scratch.settings();
    let rt = runtime();
    let log = Arc::new(AuditLog::open(&settings).unwrap());
    let receipts: Vec<AuditReceipt> = rt.block_on(async {
        let tasks: Vec<_> = (0..50u128)
            .map(|task| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut receipts = Vec::new();
                    for n in 0..10u128 {
                        let i = task * 10 + n;
                        receipts.push(log.append(released(i, numero(1 + i as u32))).await.unwrap());
                    }
                    receipts
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    });
    let seqs: BTreeSet<u64> = receipts.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=500).collect::<BTreeSet<u64>>());
    let stats = log.stats();
    assert_eq!(stats.records, 500);
    // Group commit: fewer batches than records, each batch synced. (That the
    // sync reaches the disk before the answer leaves is tests/durability.rs.)
    assert!(
        stats.batches < stats.records,
        "group commit should share batches: {stats:?}"
    );
    assert!(
        stats.syncs >= stats.batches,
        "every batch must be synced: {stats:?}"
    );
    assert!(log.is_healthy());
    drop(log);
    assert_eq!(verify_dir(&settings.dir).unwrap().records, 500);
}

/// A clock the writer thread stops on while the gate is closed: a disk that
/// does not keep up, held exactly as long as the test says.
#[derive(Clone)]
struct Gate(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    fn open() -> Gate {
        Gate(Arc::new((
            std::sync::Mutex::new(true),
            std::sync::Condvar::new(),
        )))
    }

    /// A clock that blocks while the gate is closed, telling `stopped` once it does.
    fn clock(&self, stopped: std::sync::mpsc::Sender<()>) -> Arc<dyn Clock> {
        Arc::new(GatedClock {
            gate: self.clone(),
            stopped,
        })
    }

    fn set(&self, value: bool) {
        let (open, changed) = &*self.0;
        *open.lock().unwrap() = value;
        changed.notify_all();
    }
}

/// The clock of a [`Gate`]: its wall time stands at the start, once the gate is open.
struct GatedClock {
    gate: Gate,
    stopped: std::sync::mpsc::Sender<()>,
}

impl Clock for GatedClock {
    fn monotonic(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> jiff::Timestamp {
        let (open, changed) = &*self.gate.0;
        let mut open = open.lock().unwrap();
        if !*open {
            let _ = self.stopped.send(());
            while !*open {
                open = changed.wait(open).unwrap();
            }
        }
        start()
    }
}

#[test]
fn a_full_queue_refuses_at_once_and_what_was_queued_is_still_written() {
    use std::future::Future;

    let scratch = Scratch::new("queue-full");
    let mut settings = scratch.settings();
    settings.queue_capacity = 1;
    let gate = Gate::open();
    let (stopped, writer_stopped) = std::sync::mpsc::channel();
    let rt = runtime();
    let log = Arc::new(AuditLog::open_with_clock(&settings, gate.clock(stopped)).unwrap());

    gate.set(false);
    let in_batch = rt.spawn({
        let log = log.clone();
        async move { log.append(released(1, numero(1))).await }
    });
    // The writer holds the first record and waits on the disk (the gate).
    writer_stopped.recv().unwrap();
    // The second record takes the one place in the queue (its first poll
    // hands it over) and waits; a third finds the queue full.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut queued = Box::pin(log.append(released(2, numero(2))));
    assert!(queued.as_mut().poll(&mut cx).is_pending());
    let mut refused = Box::pin(log.append(released(3, numero(3))));
    match refused.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(AuditError::QueueFull)) => {}
        other => panic!("a full queue must refuse at once, got {other:?}"),
    }
    drop(refused);
    assert!(log.is_healthy(), "a full queue is not a broken log");

    gate.set(true);
    let first = rt.block_on(in_batch).unwrap().unwrap();
    let second = rt.block_on(queued).unwrap();
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(log.stats().records, 2);
    let fourth = append(&rt, &log, 4);
    assert_eq!(
        fourth.seq, 3,
        "the queue has room again once the writer catches up"
    );
    drop(log);
    assert_eq!(verify_dir(&settings.dir).unwrap().records, 3);
}

#[test]
fn a_second_writer_on_the_same_directory_is_refused() {
    let scratch = Scratch::new("locked");
    let settings = scratch.settings();
    let log = AuditLog::open(&settings).unwrap();
    let err = AuditLog::open(&settings).unwrap_err();
    assert!(matches!(err, AuditSetupError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("audit.dir"), "{err}");
    drop(log);
    assert!(AuditLog::open(&settings).is_ok());
}

#[test]
fn a_missing_or_short_key_is_a_setup_error_naming_the_file() {
    let scratch = Scratch::new("key");
    let mut settings = scratch.settings();
    settings.hmac_key_file = scratch.0.join("absent.key");
    let err = AuditLog::open(&settings).unwrap_err().to_string();
    assert!(
        err.contains("audit.hmac_key_file") && err.contains("absent.key"),
        "{err}"
    );
    std::fs::write(scratch.0.join("short.key"), "abcd").unwrap();
    settings.hmac_key_file = scratch.0.join("short.key");
    let err = AuditLog::open(&settings).unwrap_err().to_string();
    assert!(
        err.contains("short.key") && err.contains("2 bytes"),
        "{err}"
    );
}

// ---------------------------------------------------------------- failures

#[test]
fn an_audit_dir_under_a_regular_file_cannot_be_opened() {
    let scratch = Scratch::new("under-file");
    let mut settings = scratch.settings();
    std::fs::write(scratch.0.join("plain"), "not a directory").unwrap();
    settings.dir = scratch.0.join("plain/audit");
    let err = AuditLog::open(&settings).unwrap_err();
    assert!(matches!(err, AuditSetupError::Dir { .. }), "{err}");
    assert!(err.to_string().contains("plain/audit"), "{err}");
}

#[test]
fn a_file_that_cannot_be_created_fails_the_append_until_it_can() {
    let scratch = Scratch::new("blocked");
    let settings = scratch.settings();
    let clock = FakeClock::new();
    let rt = runtime();
    let log = AuditLog::open_with_clock(&settings, clock.clock()).unwrap();
    append(&rt, &log, 1);
    clock.advance_days(1);
    // Tomorrow's file name is taken by a directory: it cannot be created, even as root.
    let blocker = settings.dir.join(clock.file(0));
    std::fs::create_dir(&blocker).unwrap();

    let err = rt.block_on(log.append(released(2, numero(2)))).unwrap_err();
    assert!(matches!(err, AuditError::Unavailable(_)), "{err}");
    assert!(!log.is_healthy());
    assert!(rt.block_on(log.append(released(3, numero(3)))).is_err());
    assert!(!log.is_healthy());

    std::fs::remove_dir(&blocker).unwrap();
    let receipt = append(&rt, &log, 4);
    assert!(log.is_healthy());
    assert_eq!(
        receipt.seq, 2,
        "failed appends must not use up sequence numbers"
    );
    drop(log);
    assert_eq!(verify_dir(&settings.dir).unwrap().records, 2);
}

#[test]
fn a_write_error_fails_every_waiter_of_the_batch_and_leaves_nothing_behind() {
    let scratch = Scratch::new("dev-full");
    let settings = scratch.settings();
    let clock = FakeClock::new();
    let rt = runtime();
    let log = Arc::new(AuditLog::open_with_clock(&settings, clock.clock()).unwrap());
    append(&rt, &log, 1);
    clock.advance_days(1);
    // Tomorrow's file is a full device: every write to it fails with ENOSPC.
    let full = settings.dir.join(clock.file(0));
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();

    let results: Vec<Result<AuditReceipt, AuditError>> = rt.block_on(async {
        let tasks: Vec<_> = (0..8u128)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(released(10 + i, numero(5))).await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    });
    assert!(results.iter().all(Result::is_err), "{results:?}");
    assert!(!log.is_healthy());

    std::fs::remove_file(&full).unwrap();
    assert_eq!(append(&rt, &log, 20).seq, 2);
    assert!(log.is_healthy());
    drop(log);
    let on_disk = records_on_disk(&settings.dir);
    assert_eq!(on_disk.len(), 2);
    assert_eq!(verify_dir(&settings.dir).unwrap().records, 2);
}

#[test]
fn a_batch_failing_after_a_rotation_is_rolled_back_from_every_file() {
    let scratch = Scratch::new("rollback");
    let mut settings = scratch.settings();
    settings.max_file_bytes = 4096;
    let clock = FakeClock::new();
    let rt = runtime();
    let log = Arc::new(AuditLog::open_with_clock(&settings, clock.clock()).unwrap());
    // The second file of the day cannot be created: batches that fill the first one fail.
    let blocker = settings.dir.join(clock.file(1));
    std::fs::create_dir(&blocker).unwrap();

    let results: Vec<(String, Result<AuditReceipt, AuditError>)> = rt.block_on(async {
        let tasks: Vec<_> = (0..40u128)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move {
                    let id = uuid::Uuid::from_u128(i).to_string();
                    (id, log.append(released(i, numero(7))).await)
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    });
    assert!(
        results.iter().any(|(_, r)| r.is_err()),
        "the file never filled up"
    );
    let acked: BTreeSet<String> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(id, _)| id.clone())
        .collect();

    std::fs::remove_dir(&blocker).unwrap();
    let after = rt.block_on(log.append(released(99, numero(7)))).unwrap();
    assert_eq!(after.seq, acked.len() as u64 + 1);
    drop(log);
    let on_disk: BTreeSet<String> = records_on_disk(&settings.dir)
        .into_values()
        .map(|(_, id)| id)
        .filter(|id| *id != uuid::Uuid::from_u128(99).to_string())
        .collect();
    assert_eq!(
        on_disk, acked,
        "exactly the acknowledged records are on disk"
    );
    assert!(verify_dir(&settings.dir).is_ok());
}

// ---------------------------------------------------------------- tampering

#[test]
fn an_edited_record_is_the_first_bad_record() {
    let (_scratch, dir, [first, _]) = two_day_log("edited");
    let mut l = lines(&first);
    l[2] = l[2].replace("\"status\":200", "\"status\":204");
    write_lines(&first, &l);
    let bad = first_bad(&dir);
    assert_eq!((bad.file.clone(), bad.line, bad.seq), (first, 3, Some(3)));
    assert_eq!(bad.defect, Defect::Edited);
    assert_eq!(bad.checked, 2);
    assert!(bad.to_string().contains("line 3 (seq 3)"), "{bad}");
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let (_scratch, dir, [first, _]) = two_day_log("rehashed");
    let mut l = lines(&first);
    l[2] = rehash(&l[2].replace("\"status\":200", "\"status\":204"));
    write_lines(&first, &l);
    let bad = first_bad(&dir);
    assert_eq!((bad.line, bad.seq), (4, Some(4)));
    assert!(matches!(bad.defect, Defect::BrokenLink { .. }), "{bad}");
}

#[test]
fn a_deleted_record_is_a_gap() {
    let (_scratch, dir, [first, _]) = two_day_log("deleted");
    let mut l = lines(&first);
    l.remove(2);
    write_lines(&first, &l);
    let bad = first_bad(&dir);
    assert_eq!((bad.file.clone(), bad.line, bad.seq), (first, 3, Some(4)));
    assert_eq!(
        bad.defect,
        Defect::Missing {
            expected: 3,
            found: 4
        }
    );
    assert!(bad.to_string().contains("record 3 was deleted"), "{bad}");
}

#[test]
fn swapped_records_are_reported_as_reordered() {
    let (_scratch, dir, [first, _]) = two_day_log("reordered");
    let mut l = lines(&first);
    l.swap(2, 3);
    write_lines(&first, &l);
    let bad = first_bad(&dir);
    assert_eq!((bad.line, bad.seq), (3, Some(4)));
    assert_eq!(
        bad.defect,
        Defect::Reordered {
            expected: 3,
            found: 4,
            expected_at: (first, 4)
        }
    );
}

#[test]
fn a_duplicated_record_is_reported() {
    let (_scratch, dir, [first, _]) = two_day_log("duplicated");
    let mut l = lines(&first);
    l.insert(3, l[2].clone());
    write_lines(&first, &l);
    let bad = first_bad(&dir);
    assert_eq!((bad.line, bad.seq), (4, Some(3)));
    assert_eq!(
        bad.defect,
        Defect::Duplicated {
            expected: 4,
            found: 3
        }
    );
}

#[test]
fn a_file_cut_at_a_record_boundary_shows_as_a_gap_in_the_next_file() {
    let (_scratch, dir, [first, second]) = two_day_log("cut-boundary");
    let mut l = lines(&first);
    l.truncate(4);
    write_lines(&first, &l);
    let bad = first_bad(&dir);
    assert_eq!((bad.file.clone(), bad.line, bad.seq), (second, 1, Some(6)));
    assert_eq!(
        bad.defect,
        Defect::Missing {
            expected: 5,
            found: 6
        }
    );
}

#[test]
fn a_deleted_file_shows_as_a_gap() {
    let (_scratch, dir, [first, second]) = two_day_log("deleted-file");
    std::fs::remove_file(&first).unwrap();
    let bad = first_bad(&dir);
    assert_eq!((bad.file.clone(), bad.line), (second, 1));
    assert_eq!(
        bad.defect,
        Defect::Missing {
            expected: 1,
            found: 6
        }
    );
}

#[test]
fn a_file_cut_inside_a_record_is_truncated() {
    let (_scratch, dir, [_, second]) = two_day_log("cut-inside");
    let bytes = std::fs::read(&second).unwrap();
    std::fs::write(&second, &bytes[..bytes.len() - 40]).unwrap();
    let bad = first_bad(&dir);
    assert_eq!((bad.file.clone(), bad.line, bad.seq), (second, 5, None));
    assert_eq!(bad.defect, Defect::Truncated);
    assert_eq!(bad.checked, 9);
}

#[test]
fn a_reformatted_or_garbled_line_is_reported() {
    let (_scratch, dir, [first, _]) = two_day_log("reformatted");
    let original = lines(&first);
    let mut l = original.clone();
    l[1] = l[1].replace("\"status\":200", "\"status\": 200");
    write_lines(&first, &l);
    assert_eq!(first_bad(&dir).defect, Defect::Reformatted);

    let mut l = original;
    l[1] = format!("{{\"nir\":\"{NIR}\"}}");
    write_lines(&first, &l);
    let bad = first_bad(&dir);
    assert!(matches!(bad.defect, Defect::Unreadable { .. }), "{bad}");
    assert!(!bad.to_string().contains(NIR), "{bad}");
}

#[test]
fn a_slice_of_files_verifies_on_its_own_in_chain_order() {
    let (_scratch, _dir, [first, second]) = two_day_log("slice");
    let report = verify_files(std::slice::from_ref(&second)).unwrap();
    assert_eq!((report.records, report.start), (5, ChainStart::Slice));
    let report = verify_files(&[second, first]).unwrap();
    assert_eq!(report.records, 10);
    assert!(matches!(
        verify_files(&[PathBuf::from("notes.txt")]),
        Err(VerifyError::NotAuditFile { .. })
    ));
}

// ---------------------------------------------------------------- torn tails

#[test]
fn a_torn_final_line_fails_verify_and_is_removed_when_the_log_opens() {
    let (scratch, dir, [_, second]) = two_day_log("torn");
    let mut bytes = std::fs::read(&second).unwrap();
    let last = lines(&second).pop().unwrap();
    bytes.extend_from_slice(&last.as_bytes()[..100]);
    std::fs::write(&second, &bytes).unwrap();
    let bad = first_bad(&dir);
    assert_eq!((bad.line, bad.defect), (6, Defect::Truncated));

    let rt = runtime();
    let log = AuditLog::open(&scratch.settings()).unwrap();
    assert_eq!(append(&rt, &log, 11).seq, 11);
    drop(log);
    assert_eq!(verify_dir(&dir).unwrap().records, 11);
}

#[test]
fn a_final_record_lacking_only_its_newline_verifies_and_is_completed() {
    let (scratch, dir, [_, second]) = two_day_log("no-newline");
    let bytes = std::fs::read(&second).unwrap();
    std::fs::write(&second, &bytes[..bytes.len() - 1]).unwrap();
    let report = verify_dir(&dir).unwrap();
    assert_eq!(report.records, 10);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);

    let rt = runtime();
    let log = AuditLog::open(&scratch.settings()).unwrap();
    assert_eq!(append(&rt, &log, 11).seq, 11);
    drop(log);
    let report = verify_dir(&dir).unwrap();
    assert_eq!((report.records, report.warnings.len()), (11, 0));
}

// ---------------------------------------------------------------- retention

#[test]
fn signed_retention_keeps_the_tree_verifiable_and_a_replaced_checkpoint_is_refused() {
    let scratch = Scratch::new("retention-signed");
    let mut settings = scratch.settings();
    settings.retention_days = 30;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    settings.checkpoint_signing_key_file = Some(repo.join("certs-dev/audit-checkpoint.key.pem"));
    settings.log_origin = Some("retention.test/log".into());
    settings.checkpoint_every_records = 2;
    let verifier = CheckpointVerifier::from_file(
        &repo.join("certs-dev/audit-checkpoint.pub.pem"),
        Some("retention.test/log"),
    )
    .unwrap();
    let clock = FakeClock::new();
    let rt = runtime();
    let log = AuditLog::open_with_clock(&settings, clock.clock()).unwrap();
    for i in 1..=3 {
        append(&rt, &log, i);
    }
    clock.advance_days(1);
    for i in 4..=6 {
        append(&rt, &log, i);
    }
    drop(log);
    let whole = verify_signed(&settings.dir, &verifier, None).unwrap();
    assert_eq!((whole.tree_size, whole.checkpoint_size), (6, Some(6)));

    // Forty days on, day 0 is retired: the tree continues from the signed cut.
    clock.advance_days(39);
    let log = AuditLog::open_with_clock(&settings, clock.clock()).unwrap();
    let cut = read_checkpoint(&settings.dir).unwrap().unwrap();
    assert_eq!((cut.seq, cut.edge.len()), (3, 2));
    assert!(
        cut.note
            .as_deref()
            .unwrap()
            .starts_with("retention.test/log\n3\n")
    );
    append(&rt, &log, 7);
    drop(log);
    let report = verify_signed(&settings.dir, &verifier, None).unwrap();
    assert_eq!((report.tree_size, report.chain.records), (7, 4));
    assert_eq!(report.checkpoint_size, Some(7));

    // The same checkpoint without its signature is refused, by verify and by the writer.
    let mut unsigned = cut.clone();
    unsigned.note = None;
    std::fs::write(
        settings.dir.join("checkpoint.json"),
        serde_json::to_vec(&unsigned).unwrap(),
    )
    .unwrap();
    match verify_signed(&settings.dir, &verifier, None) {
        Err(VerifyError::Tree(TreeDefect::RetentionForged)) => {}
        other => panic!("a retention checkpoint without signature was accepted: {other:?}"),
    }
    let err = AuditLog::open_with_clock(&settings, clock.clock()).unwrap_err();
    assert!(
        err.to_string()
            .contains("the retention checkpoint is not signed"),
        "{err}"
    );
}

#[test]
fn retention_removes_old_files_and_verify_continues_from_the_checkpoint() {
    let scratch = Scratch::new("retention");
    let mut settings = scratch.settings();
    settings.retention_days = 30;
    let clock = FakeClock::new();
    let rt = runtime();
    let log = AuditLog::open_with_clock(&settings, clock.clock()).unwrap();
    let day0 = settings.dir.join(clock.file(0));
    for i in 1..=3 {
        append(&rt, &log, i);
    }
    clock.advance_days(1);
    let day1 = settings.dir.join(clock.file(0));
    for i in 4..=6 {
        append(&rt, &log, i);
    }
    drop(log);
    let saved_day0 = std::fs::read(&day0).unwrap();

    // Forty days on, opening removes day 0; day 1 is the newest file and stays.
    clock.advance_days(39);
    let log = AuditLog::open_with_clock(&settings, clock.clock()).unwrap();
    assert!(!day0.exists() && day1.exists());
    let checkpoint = read_checkpoint(&settings.dir).unwrap().unwrap();
    assert_eq!(checkpoint.seq, 3);
    append(&rt, &log, 7);
    let report = verify_dir(&settings.dir).unwrap();
    assert_eq!(report.records, 4);
    assert!(matches!(
        report.start,
        ChainStart::Checkpoint { seq: 3, .. }
    ));

    // Forty more days: the running log retires day 1 before its next record.
    clock.advance_days(40);
    append(&rt, &log, 8);
    drop(log);
    assert!(!day1.exists());
    assert_eq!(read_checkpoint(&settings.dir).unwrap().unwrap().seq, 6);
    let report = verify_dir(&settings.dir).unwrap();
    assert_eq!((report.records, report.last_seq), (2, Some(8)));

    // A file that an interrupted retention left behind is skipped, with a warning.
    std::fs::write(&day0, saved_day0).unwrap();
    let report = verify_dir(&settings.dir).unwrap();
    assert_eq!((report.records, report.warnings.len()), (2, 1));
    std::fs::remove_file(&day0).unwrap();

    // Without the checkpoint, the start of the chain is missing.
    std::fs::remove_file(settings.dir.join("checkpoint.json")).unwrap();
    let bad = first_bad(&settings.dir);
    assert_eq!(
        bad.defect,
        Defect::Missing {
            expected: 1,
            found: 7
        }
    );
}

// ---------------------------------------------------------------- checkpoints

/// The sizes of the checkpoints in `checkpoints.log`, each checked with the public key.
fn checkpoint_sizes(dir: &Path, verifier: &CheckpointVerifier) -> Vec<u64> {
    let bytes = match std::fs::read(dir.join("checkpoints.log")) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("{e}"),
    };
    let (notes, _) = caf_broker::audit::split_checkpoints(&bytes);
    notes
        .iter()
        .map(|note| verifier.verify(note).unwrap().size)
        .collect()
}

#[test]
fn a_checkpoint_is_signed_once_checkpoint_every_secs_have_passed_on_the_log_clock() {
    let scratch = Scratch::new("checkpoint-secs");
    let mut settings = scratch.settings();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    settings.checkpoint_signing_key_file = Some(repo.join("certs-dev/audit-checkpoint.key.pem"));
    settings.log_origin = Some("seconds.test/log".into());
    // Far more records than the test writes: only time can make a checkpoint due.
    settings.checkpoint_every_records = 1000;
    settings.checkpoint_every_secs = 60;
    let verifier = CheckpointVerifier::from_file(
        &repo.join("certs-dev/audit-checkpoint.pub.pem"),
        Some("seconds.test/log"),
    )
    .unwrap();
    let clock = FakeClock::new();
    let rt = runtime();
    let log = AuditLog::open_with_clock(&settings, clock.clock()).unwrap();
    for i in 1..=3 {
        append(&rt, &log, i);
    }
    // The clock moves in steps of 30 s: an idle writer wakes by itself only
    // when the rest of the period has passed in real time too (30 s or more
    // here), so every checkpoint below is one made due by a batch. Each
    // batch's checkpoint is decided before the writer takes the next batch,
    // so once a later record is acknowledged, `checkpoints.log` holds what
    // the earlier batch made due; the last batch acknowledged before the
    // clock moves may still see it move, so a checkpoint due at a step covers
    // the records acknowledged before it, and at most the next.
    clock.advance_secs(30);
    append(&rt, &log, 4);
    append(&rt, &log, 5);
    assert_eq!(
        checkpoint_sizes(&settings.dir, &verifier),
        Vec::<u64>::new(),
        "30 seconds on the log's clock: no checkpoint is due yet"
    );

    clock.advance_secs(30);
    append(&rt, &log, 6);
    append(&rt, &log, 7);
    let sizes = checkpoint_sizes(&settings.dir, &verifier);
    assert!(
        matches!(sizes[..], [5 | 6]),
        "60 seconds: one checkpoint, of the records written until then: {sizes:?}"
    );

    // The period starts again from that checkpoint.
    clock.advance_secs(30);
    append(&rt, &log, 8);
    append(&rt, &log, 9);
    assert_eq!(checkpoint_sizes(&settings.dir, &verifier), sizes);
    clock.advance_secs(30);
    append(&rt, &log, 10);
    append(&rt, &log, 11);
    let later = checkpoint_sizes(&settings.dir, &verifier);
    assert!(
        later.len() == 2 && later[0] == sizes[0] && matches!(later[1], 9 | 10),
        "{later:?}"
    );
    drop(log);
    // And the records after the last one at shutdown.
    let last = checkpoint_sizes(&settings.dir, &verifier);
    assert_eq!((last.len(), last.last()), (3, Some(&11)), "{last:?}");
}

// ---------------------------------------------------------------- search

#[test]
fn search_finds_exactly_the_accesses_to_one_dossier() {
    let scratch = Scratch::new("search");
    let settings = scratch.settings();
    let rt = runtime();
    let log = AuditLog::open(&settings).unwrap();
    let nir = Lookup::Nir(Nir::parse(NIR).unwrap());
    let plan: [(u128, Option<Lookup>); 8] = [
        (1, Some(numero(1_000_002))),
        (2, Some(numero(1_000_003))),
        (3, Some(nir.clone())),
        (4, Some(numero(1_000_002))),
        (5, None),
        (6, Some(nir.clone())),
        (7, Some(numero(1_000_002))),
        (8, Some(numero(100_000))),
    ];
    for (i, lookup) in plan.clone() {
        let entry = match lookup {
            Some(lookup) => released(i, lookup),
            None => AuditEntry::new(uuid::Uuid::from_u128(i), Outcome::Invalid, 400),
        };
        rt.block_on(log.append(entry)).unwrap();
    }
    drop(log);
    let key = caf_broker::audit::AuditKey::from_file(&settings.hmac_key_file).unwrap();
    let ids = |lookup: &Lookup| -> Vec<String> {
        search(&settings.dir, &key, lookup)
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.request_id)
            .collect()
    };
    let expected = |which: &[u128]| -> Vec<String> {
        which
            .iter()
            .map(|i| uuid::Uuid::from_u128(*i).to_string())
            .collect()
    };
    assert_eq!(ids(&numero(1_000_002)), expected(&[1, 4, 7]));
    assert_eq!(ids(&numero(1_000_003)), expected(&[2]));
    assert_eq!(ids(&nir), expected(&[3, 6]));
    assert_eq!(ids(&numero(100_000)), expected(&[8]));
    assert_eq!(ids(&numero(10_000)), expected(&[]));
}

// ---------------------------------------------------------------- crash

const CRASH_DIR_ENV: &str = "CAF_BROKER_AUDIT_CRASH_DIR";
const CRASH_KEY_ENV: &str = "CAF_BROKER_AUDIT_CRASH_KEY";
const CRASH_TEST: &str = "acknowledged_records_survive_a_sigkill_under_concurrent_load";

/// The child half: append from 16 tasks and print each acknowledgement, until killed.
fn crash_child(dir: PathBuf, key: PathBuf) -> ! {
    let mut settings = AuditSettings::new(dir, key);
    settings.max_file_bytes = 64 * 1024;
    let log = Arc::new(AuditLog::open(&settings).unwrap());
    runtime().block_on(async {
        let tasks: Vec<_> = (0..16u128)
            .map(|task| {
                let log = log.clone();
                tokio::spawn(async move {
                    // Bounded: the parent kills the child long before this ends.
                    for n in 0..5_000u128 {
                        let i = task * 1_000_000 + n;
                        let receipt = log.append(released(i, numero(42))).await.unwrap();
                        let line = format!(
                            "ACK {} {} {}\n",
                            receipt.seq,
                            receipt.hash,
                            uuid::Uuid::from_u128(i)
                        );
                        use std::io::Write;
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    });
    std::process::exit(0)
}

#[test]
fn acknowledged_records_survive_a_sigkill_under_concurrent_load() {
    if let (Some(dir), Some(key)) = (
        std::env::var_os(CRASH_DIR_ENV),
        std::env::var_os(CRASH_KEY_ENV),
    ) {
        crash_child(dir.into(), key.into());
    }
    let scratch = Scratch::new("crash");
    let settings = scratch.settings();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CRASH_TEST, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CRASH_DIR_ENV, &settings.dir)
        .env(CRASH_KEY_ENV, &settings.hmac_key_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let parse = |line: &str| -> Option<(u64, String, String)> {
        let mut parts = line.strip_prefix("ACK ")?.split(' ');
        let seq = parts.next()?.parse().ok()?;
        let hash = parts.next().filter(|h| h.len() == 64)?.to_owned();
        let id = parts.next().filter(|i| i.len() == 36)?.to_owned();
        Some((seq, hash, id))
    };
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.len() < 400 {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => acked.extend(parse(&line)),
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "the child stopped acknowledging after {} records: {e}",
                    acked.len()
                );
            }
        }
    }
    // SIGKILL in the middle of the load.
    child.kill().unwrap();
    child.wait().unwrap();
    // Every acknowledgement printed before the kill; the pipe ends with the child.
    acked.extend(lines_rx.iter().filter_map(|line| parse(&line)));
    reader.join().unwrap();

    let report = verify_dir(&settings.dir).unwrap();
    let on_disk = records_on_disk(&settings.dir);
    assert!(report.records >= acked.len() as u64);
    for (seq, hash, id) in &acked {
        assert_eq!(
            on_disk.get(seq),
            Some(&(hash.clone(), id.clone())),
            "acknowledged record {seq} is missing or different"
        );
    }

    // The broker starts again on the same directory and the chain goes on.
    let rt = runtime();
    let log = AuditLog::open(&settings).unwrap();
    let next = append(&rt, &log, 1);
    assert_eq!(next.seq, report.records + 1);
    drop(log);
    assert_eq!(
        verify_dir(&settings.dir).unwrap().records,
        report.records + 1
    );
}

// ---------------------------------------------------------------- command line

fn broker(args: &[&str], env: &[(&str, &Path)], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("RUST_LOG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn audit_verify_prints_the_count_or_names_the_first_bad_record_and_fails() {
    let (_scratch, dir, [first, _]) = two_day_log("cli-verify");
    let dir_arg = dir.to_str().unwrap();
    let out = broker(&["audit", "verify", dir_arg], &[], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("10 records checked"), "{stdout}");

    let mut l = lines(&first);
    l.remove(1);
    write_lines(&first, &l);
    let out = broker(&["audit", "verify", dir_arg], &[], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file_name = first.file_name().unwrap().to_str().unwrap();
    assert!(stderr.contains(file_name), "{stderr}");
    assert!(stderr.contains("line 2 (seq 3)"), "{stderr}");
    assert!(stderr.contains("record 2 was deleted"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 records checked"));
}

#[test]
fn audit_search_prints_the_accesses_to_a_dossier_as_json_lines() {
    let scratch = Scratch::new("cli-search");
    let settings = scratch.settings();
    let rt = runtime();
    let log = AuditLog::open(&settings).unwrap();
    let nir = Lookup::Nir(Nir::parse(NIR).unwrap());
    for (i, lookup) in [
        (1, numero(1_000_002)),
        (2, nir.clone()),
        (3, numero(1_000_002)),
    ] {
        rt.block_on(log.append(released(i, lookup))).unwrap();
    }
    drop(log);
    let env = [
        ("CAF_BROKER__AUDIT__DIR", settings.dir.as_path()),
        (
            "CAF_BROKER__AUDIT__HMAC_KEY_FILE",
            settings.hmac_key_file.as_path(),
        ),
    ];
    let ids = |out: &std::process::Output| -> Vec<String> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].to_string()
            })
            .collect()
    };
    let id = |i: u128| format!("\"{}\"", uuid::Uuid::from_u128(i));
    let out = broker(&["audit", "search", "--numero", "1000002"], &env, "");
    assert_eq!(ids(&out), [id(1), id(3)]);
    let out = broker(
        &["audit", "search", "--nir", "-"],
        &env,
        &format!("{NIR}\n"),
    );
    assert_eq!(ids(&out), [id(2)]);
    let out = broker(&["audit", "search", "--nir", "295109912611194"], &env, "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("2951099"), "{stderr}");
}
