//! Audit log: records per second with group commit against one fsync per record, and the latency an append adds;
//! what signed checkpoints cost the writer; how long verifying a large log takes.
//!
//! `cargo bench --bench audit` (add `-- --quick` for a short run). Criterion
//! measures throughput (records per second) for 1 and 32 concurrent writers,
//! with group commit (`max_batch_records = 1024`, the default) and with one
//! fsync per record (`max_batch_records = 1`). A second pass then prints the
//! latency one append adds (p50, p99) in each case and the ratios. Then, at 32
//! writers, group commit with signed checkpoints (the Merkle tree kept and a
//! checkpoint signed every 1,000 records, as shipped) against group commit
//! without them, in alternating rounds, as ratios; and the time
//! `audit verify --public-key` takes over a log of `AUDIT_VERIFY_RECORDS`
//! records (default 1,000,000). Files go under the target directory, on a
//! real disk, so every fsync is real.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caf_broker::audit::{AuditEntry, AuditLog, AuditSettings, Outcome};
use caf_broker::domain::{
    CacheOutcome, CaseReference, Lookup, NumeroAllocataire, PostCode, Purpose, Role, Subject,
};
use criterion::{Criterion, Throughput};
use tokio::runtime::Runtime;

const WRITERS: [usize; 2] = [1, 32];

/// The checkpoints' origin in these benchmarks.
const ORIGIN: &str = "caf-broker.localhost/bench";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    GroupCommit,
    FsyncPerRecord,
    /// Group commit, with the tree kept and checkpoints signed.
    Checkpointed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::GroupCommit => "group_commit",
            Mode::FsyncPerRecord => "fsync_per_record",
            Mode::Checkpointed => "checkpointed",
        }
    }
}

/// An audit log in its own directory, removed when dropped.
struct Bench {
    log: Arc<AuditLog>,
    dir: PathBuf,
}

impl Bench {
    fn open(mode: Mode, writers: usize) -> Bench {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "audit-bench-{}-{writers}-{}",
            mode.name(),
            std::process::id()
        ));
        let log = Arc::new(AuditLog::open(&settings(mode, &dir)).expect("audit log opens"));
        Bench { log, dir }
    }
}

/// Settings of a fresh log of `mode` under `dir` (emptied first).
fn settings(mode: Mode, dir: &Path) -> AuditSettings {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("bench directory");
    let key = dir.join("hmac.key");
    std::fs::write(&key, "42".repeat(32)).expect("bench key");
    let mut settings = AuditSettings::new(dir.join("log"), key);
    settings.max_batch_records = match mode {
        Mode::GroupCommit | Mode::Checkpointed => 1024,
        Mode::FsyncPerRecord => 1,
    };
    if mode == Mode::Checkpointed {
        settings.checkpoint_signing_key_file = Some(repo("certs-dev/audit-checkpoint.key.pem"));
        settings.log_origin = Some(ORIGIN.to_owned());
    }
    settings
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A typical released-data record.
fn entry(i: u64) -> AuditEntry {
    let numero = NumeroAllocataire::parse(&(1_000_000 + i % 9_000_000).to_string())
        .expect("a 7-digit numéro");
    AuditEntry {
        trace_id: Some(format!("{:032x}", i + 1)),
        post: PostCode::parse("TN-TUNIS").ok(),
        sub: Subject::parse("agent-42").ok(),
        role: Role::parse("agent_consulaire").ok(),
        purpose: Purpose::parse("verification_radiation").ok(),
        case_reference: CaseReference::parse("TN-2026/0042").ok(),
        lookup: Some(Lookup::Numero(numero)),
        released: [
            "identite.nom",
            "identite.prenoms",
            "droits.radiation.date",
            "droits.radiation.motif",
        ]
        .map(String::from)
        .to_vec(),
        policy_version: Some(format!("sha256:{}", "ab".repeat(32))),
        cache: Some(CacheOutcome::Miss),
        ..AuditEntry::new(uuid::Uuid::from_u64_pair(0, i), Outcome::Released, 200)
    }
}

/// `writers` tasks append `each` records apiece; returns every append's latency.
async fn burst(log: &Arc<AuditLog>, writers: usize, each: usize) -> Vec<Duration> {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(each);
                for n in 0..each {
                    let started = Instant::now();
                    log.append(entry((w * each + n) as u64))
                        .await
                        .expect("append");
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(writers * each);
    for task in tasks {
        all.extend(task.await.expect("writer task"));
    }
    all
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("audit_append");
    for mode in [Mode::GroupCommit, Mode::FsyncPerRecord] {
        for writers in WRITERS {
            let bench = Bench::open(mode, writers);
            group.throughput(Throughput::Elements(writers as u64));
            group.bench_function(format!("{}/{writers}_writers", mode.name()), |b| {
                b.iter_custom(|iters| {
                    let started = Instant::now();
                    for _ in 0..iters {
                        rt.block_on(burst(&bench.log, writers, 1));
                    }
                    started.elapsed()
                });
            });
        }
    }
    group.finish();
}

/// Records per second and append latency over a bounded run.
#[derive(Debug, Clone, Copy)]
struct Figures {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    records_per_fsync: f64,
}

fn measure(rt: &Runtime, mode: Mode, writers: usize) -> Figures {
    const BUDGET: Duration = Duration::from_secs(3);
    const MAX_RECORDS: usize = 20_000;
    let bench = Bench::open(mode, writers);
    rt.block_on(burst(&bench.log, writers, 4));
    let before = bench.log.stats();
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < BUDGET && latencies.len() < MAX_RECORDS {
        latencies.extend(rt.block_on(burst(&bench.log, writers, 16)));
    }
    let elapsed = started.elapsed();
    let after = bench.log.stats();
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).copied().unwrap_or_default()
    };
    Figures {
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        records_per_fsync: (after.records - before.records) as f64
            / (after.syncs - before.syncs).max(1) as f64,
    }
}

fn latency_report() {
    let rt = runtime();
    println!("\naudit append: throughput and latency (bounded runs of 3 s)");
    println!(
        "{:<18} {:>8} {:>12} {:>10} {:>10} {:>13}",
        "mode", "writers", "records/s", "p50", "p99", "records/fsync"
    );
    let mut table = Vec::new();
    for writers in WRITERS {
        for mode in [Mode::GroupCommit, Mode::FsyncPerRecord] {
            let f = measure(&rt, mode, writers);
            println!(
                "{:<18} {:>8} {:>12.0} {:>10.2?} {:>10.2?} {:>13.1}",
                mode.name(),
                writers,
                f.per_sec,
                f.p50,
                f.p99,
                f.records_per_fsync
            );
            table.push((mode, writers, f));
        }
    }
    let get = |mode, writers| {
        table
            .iter()
            .find(|(m, w, _)| *m == mode && *w == writers)
            .map(|(_, _, f)| *f)
    };
    for writers in WRITERS {
        if let (Some(group), Some(single)) = (
            get(Mode::GroupCommit, writers),
            get(Mode::FsyncPerRecord, writers),
        ) {
            println!(
                "{writers} writer(s): group commit gives {:.1}x the records/s of one fsync per record; p99 {:.2}x",
                group.per_sec / single.per_sec,
                group.p99.as_secs_f64() / single.p99.as_secs_f64().max(f64::MIN_POSITIVE)
            );
        }
    }
    if let (Some(one), Some(many)) = (get(Mode::GroupCommit, 1), get(Mode::GroupCommit, 32)) {
        println!(
            "group commit, 32 writers against 1: {:.1}x the records/s, p50 latency {:.2}x",
            many.per_sec / one.per_sec,
            many.p50.as_secs_f64() / one.p50.as_secs_f64().max(f64::MIN_POSITIVE)
        );
    }
}

criterion::criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = throughput
}

/// Group commit with and without signed checkpoints, 32 writers, in
/// alternating rounds; prints each round and the geometric means of the ratios.
fn checkpoint_report() {
    const ROUNDS: usize = 6;
    let rt = runtime();
    println!(
        "\naudit append, 32 writers: signed checkpoints on vs off ({ROUNDS} alternating rounds of 3 s)"
    );
    let (mut speed, mut tail) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 {
            [Mode::GroupCommit, Mode::Checkpointed]
        } else {
            [Mode::Checkpointed, Mode::GroupCommit]
        };
        let mut figures = [None, None];
        for mode in order {
            let f = measure(&rt, mode, 32);
            figures[usize::from(mode == Mode::Checkpointed)] = Some(f);
        }
        let [Some(off), Some(on)] = figures else {
            continue;
        };
        println!(
            "round {}: records/s {:.0} on vs {:.0} off ({:.3}x); p99 {:.2?} on vs {:.2?} off ({:.3}x)",
            round + 1,
            on.per_sec,
            off.per_sec,
            on.per_sec / off.per_sec,
            on.p99,
            off.p99,
            on.p99.as_secs_f64() / off.p99.as_secs_f64().max(f64::MIN_POSITIVE)
        );
        speed.push(on.per_sec / off.per_sec);
        tail.push(on.p99.as_secs_f64() / off.p99.as_secs_f64().max(f64::MIN_POSITIVE));
    }
    let geomean = |xs: &[f64]| (xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp();
    println!(
        "signed checkpoints: {:.3}x the records/s, {:.3}x the p99 latency (geometric means)",
        geomean(&speed),
        geomean(&tail)
    );
}

/// Writes a log of `AUDIT_VERIFY_RECORDS` records with signed checkpoints,
/// then times verifying it with the public key only, as `audit verify
/// --public-key` does.
fn verify_report() {
    let records: usize = std::env::var("AUDIT_VERIFY_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let rt = runtime();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("audit-bench-verify-{}", std::process::id()));
    let settings = settings(Mode::Checkpointed, &root);
    let log = Arc::new(AuditLog::open(&settings).expect("audit log opens"));
    let started = Instant::now();
    let mut written = 0;
    while written < records {
        let each = (records - written).div_ceil(32).min(256);
        written += rt.block_on(burst(&log, 32, each)).len();
    }
    let writing = started.elapsed();
    // Dropped, the log writes its shutdown checkpoint, which covers every record.
    drop(log);
    let dir = settings.log_dir();
    let verifier = caf_broker::audit::CheckpointVerifier::from_file(
        &repo("certs-dev/audit-checkpoint.pub.pem"),
        Some(ORIGIN),
    )
    .expect("the development public key");
    let started = Instant::now();
    let report = caf_broker::audit::verify_signed(&dir, &verifier, None).expect("the log verifies");
    let verifying = started.elapsed();
    println!(
        "\naudit verify --public-key over {written} records (written in {writing:.1?}): {verifying:.2?}, {:.0} records/s; tree size {}, {} checkpoints checked",
        written as f64 / verifying.as_secs_f64(),
        report.tree_size,
        report.checkpoints_checked
    );
    let _ = std::fs::remove_dir_all(root);
}

fn main() {
    benches();
    // `cargo test --benches` runs each benchmark once; the timed report is for `cargo bench`.
    if std::env::args().any(|a| a == "--bench") {
        latency_report();
        checkpoint_report();
        verify_report();
    }
    Criterion::default().configure_from_args().final_summary();
}
