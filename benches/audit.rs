//! Audit log: records per second with group commit against one fsync per record, and the latency an append adds.
//!
//! `cargo bench --bench audit` (add `-- --quick` for a short run). Criterion
//! measures throughput (records per second) for 1 and 32 concurrent writers,
//! with group commit (`max_batch_records = 1024`, the default) and with one
//! fsync per record (`max_batch_records = 1`). A second pass then prints the
//! latency one append adds (p50, p99) in each case and the ratios. Files go
//! under the target directory, on a real disk, so every fsync is real.

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    GroupCommit,
    FsyncPerRecord,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::GroupCommit => "group_commit",
            Mode::FsyncPerRecord => "fsync_per_record",
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
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench directory");
        let key = dir.join("hmac.key");
        std::fs::write(&key, "42".repeat(32)).expect("bench key");
        let mut settings = AuditSettings::new(dir.join("log"), key);
        settings.max_batch_records = match mode {
            Mode::GroupCommit => 1024,
            Mode::FsyncPerRecord => 1,
        };
        let log = Arc::new(AuditLog::open(&settings).expect("audit log opens"));
        Bench { log, dir }
    }
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

fn main() {
    benches();
    // `cargo test --benches` runs each benchmark once; the timed report is for `cargo bench`.
    if std::env::args().any(|a| a == "--bench") {
        latency_report();
    }
    Criterion::default().configure_from_args().final_summary();
}
