//! What the policy filter costs per answer: every purpose of the shipped
//! policy applied to a full fixture record, as the request path runs it
//! (`filter_json`, the released view written straight as JSON) and as a
//! `Value` serialised afterwards (`filter` then `serde_json::to_vec`, the
//! form tests and the shadow policy use), plus the authorization that picks
//! the view. Pure CPU: no IO, no threads.
//!
//! Run with `cargo bench --bench policy`; compare `json` with `value` as a ratio.

use std::hint::black_box;
use std::path::PathBuf;

use caf_broker::policy::Policy;
use criterion::{Criterion, criterion_group, criterion_main};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn policy_filter(c: &mut Criterion) {
    let policy = Policy::from_file(&repo("config/policy.toml")).expect("the shipped policy");
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("config/policy-tests/fixtures/1000002.json"))
            .expect("the fixture"),
    )
    .expect("a JSON fixture");
    let mut group = c.benchmark_group("policy_filter");
    let roles: Vec<_> = policy.roles().cloned().collect();
    for role in &roles {
        let purposes: Vec<_> = policy.purposes_of(role).cloned().collect();
        for purpose in &purposes {
            let view = policy
                .authorize(role, purpose)
                .expect("a purpose the role may declare");
            group.bench_function(format!("{purpose}/json"), |b| {
                b.iter(|| black_box(view.filter_json(black_box(&record))));
            });
            group.bench_function(format!("{purpose}/value"), |b| {
                b.iter(|| {
                    let filtered = view.filter(black_box(&record));
                    black_box(serde_json::to_vec(&filtered.data).expect("a JSON view"))
                });
            });
        }
        if let Some(purpose) = purposes.first() {
            group.bench_function(format!("authorize/{role}"), |b| {
                b.iter(|| {
                    black_box(
                        policy
                            .authorize(black_box(role), black_box(purpose))
                            .is_ok(),
                    )
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, policy_filter);
criterion_main!(benches);
