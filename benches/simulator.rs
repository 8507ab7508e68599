//! How long the simulator takes to generate its default dataset (10,000
//! generated dossiers and the five fixed ones): what `caf-broker simulate`
//! and the embedded connector pay once at start.
//!
//! `cargo bench --bench simulator`; a release build takes a few milliseconds.

use std::hint::black_box;
use std::time::Duration;

use caf_broker::simulator::Dataset;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn generate(c: &mut Criterion) {
    let mut group = c.benchmark_group("simulator");
    group.throughput(Throughput::Elements(Dataset::DEFAULT_RECORDS as u64));
    group.bench_function("generate_default_dataset", |b| {
        b.iter(|| {
            let dataset = Dataset::generate(black_box(77), Dataset::DEFAULT_RECORDS);
            assert_eq!(dataset.len(), Dataset::DEFAULT_RECORDS + 5);
            dataset
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = generate
}
criterion_main!(benches);
