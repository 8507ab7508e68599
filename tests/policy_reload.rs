//! Hot reload, drift and shadow mode with real files: good, bad and unchanged files, a file replaced under load, the watcher.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caf_broker::domain::{Purpose, Role};
use caf_broker::policy::{
    DriftTracker, Policy, PolicyStore, ReloadOutcome, ShadowPolicy, unknown_paths,
};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn shipped_text() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("config/policy.toml")).unwrap()
}

fn shipped_tests() -> PathBuf {
    Path::new(ROOT).join("config/policy-tests")
}

fn fixture(numero: &str) -> Value {
    let path = shipped_tests().join(format!("fixtures/{numero}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn role(name: &str) -> Role {
    Role::parse(name).unwrap()
}

fn purpose(name: &str) -> Purpose {
    Purpose::parse(name).unwrap()
}

/// The shipped policy with `verification_radiation` also releasing `regime`.
fn widened() -> String {
    let text = shipped_text();
    let edited = text.replacen(
        "  \"numero_allocataire\",\n",
        "  \"numero_allocataire\",\n  \"regime\",\n",
        1,
    );
    assert_ne!(edited, text);
    edited
}

/// A scratch directory holding `policy.toml`, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "caf-broker-policy-reload-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let scratch = Scratch(dir);
        scratch.write(&shipped_text());
        scratch
    }

    fn file(&self) -> PathBuf {
        self.0.join("policy.toml")
    }

    fn write(&self, text: &str) {
        std::fs::write(self.file(), text).unwrap();
    }

    /// Writes a sibling file and renames it over the policy, as editors do.
    fn replace(&self, text: &str) {
        let tmp = self.0.join(".policy.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.file()).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Counters by `name{label=value,...}`, installed on one thread.
#[derive(Default)]
struct Counters(Mutex<BTreeMap<String, Arc<Cell>>>);

#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl Counters {
    fn get(&self, rendered: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(rendered)
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Counter::from_arc(self.0.lock().unwrap().entry(name).or_default().clone())
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn rejected(counters: &Counters) -> u64 {
    counters.get("caf_broker_policy_reload_total{result=rejected}")
}

#[test]
fn a_good_file_is_applied_and_the_version_changes() {
    let scratch = Scratch::new("good");
    let store = PolicyStore::load(&scratch.file(), None).unwrap();
    let before = store.current();
    scratch.write(&widened());
    let counters = Counters::default();
    let outcome = metrics::with_local_recorder(&counters, || store.reload()).unwrap();
    let after = store.current();
    assert_ne!(before.version(), after.version());
    assert_eq!(
        outcome,
        ReloadOutcome::Applied {
            from: before.version().to_owned(),
            to: after.version().to_owned()
        }
    );
    assert_eq!(
        counters.get("caf_broker_policy_reload_total{result=applied}"),
        1
    );
    let view = after
        .authorize(
            &role("agent_consulaire"),
            &purpose("verification_radiation"),
        )
        .unwrap();
    assert!(
        view.filter(&fixture("1000002"))
            .data
            .get("regime")
            .is_some()
    );
    // The snapshot taken before the reload still answers under the old policy.
    let old = before
        .authorize(
            &role("agent_consulaire"),
            &purpose("verification_radiation"),
        )
        .unwrap();
    assert!(old.filter(&fixture("1000002")).data.get("regime").is_none());
}

#[test]
fn an_unchanged_file_is_reported_unchanged_and_nothing_is_swapped() {
    let scratch = Scratch::new("unchanged");
    let store = PolicyStore::load(&scratch.file(), Some(&shipped_tests())).unwrap();
    let before = store.current();
    scratch.replace(&shipped_text());
    let counters = Counters::default();
    let outcome = metrics::with_local_recorder(&counters, || store.reload()).unwrap();
    assert_eq!(outcome, ReloadOutcome::Unchanged);
    assert!(Arc::ptr_eq(&before, &store.current()));
    assert_eq!(
        counters.get("caf_broker_policy_reload_total{result=unchanged}"),
        1
    );
}

#[test]
fn bad_files_are_rejected_and_the_last_good_policy_is_kept() {
    let scratch = Scratch::new("bad");
    let store = PolicyStore::load(&scratch.file(), Some(&shipped_tests())).unwrap();
    let good = store.current();
    let text = shipped_text();
    let cases = [
        (
            "a syntax error",
            text.replacen("[roles.agent_consulaire]", "[roles.agent_consulaire", 1),
            "invalid TOML",
        ),
        (
            "an unknown path",
            text.replacen(
                "  \"mise_a_jour\",\n",
                "  \"mise_a_jour\",\n  \"iban\",\n",
                1,
            ),
            "names no field of the CAF record schema",
        ),
        (
            "a failing policy test",
            widened(),
            "policy test failed: `regime`",
        ),
    ];
    let counters = Counters::default();
    for (n, (what, bad, expected)) in cases.iter().enumerate() {
        assert_ne!(bad, &text, "{what}");
        scratch.replace(bad);
        let err = metrics::with_local_recorder(&counters, || store.reload()).expect_err(what);
        assert!(err.to_string().contains(expected), "{what}: {err}");
        assert!(Arc::ptr_eq(&good, &store.current()), "{what}");
        assert_eq!(rejected(&counters), n as u64 + 1, "{what}");
    }
    // Fixing the file brings the reload back: the same content as live is unchanged.
    scratch.replace(&text);
    assert_eq!(store.reload().unwrap(), ReloadOutcome::Unchanged);
}

#[test]
fn a_file_replaced_while_eight_threads_read_is_seen_whole_old_or_new() {
    let scratch = Scratch::new("concurrent");
    let store = Arc::new(PolicyStore::load(&scratch.file(), None).unwrap());
    let record = Arc::new(fixture("1000002"));
    let agent = role("agent_consulaire");
    let radiation = purpose("verification_radiation");
    // The exact answer of each version, computed apart.
    let mut expected: BTreeMap<String, Value> = BTreeMap::new();
    let variants = [shipped_text(), widened()];
    for text in &variants {
        let policy = Policy::from_toml(text, "variant.toml").unwrap();
        let data = policy
            .authorize(&agent, &radiation)
            .unwrap()
            .filter(&record)
            .data;
        expected.insert(policy.version().to_owned(), data);
    }
    assert_eq!(expected.len(), 2);
    // Each version's place in `variants`, which a reader publishes as it reads.
    let index: BTreeMap<String, usize> = variants
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let version = Policy::from_toml(text, "x").unwrap().version().to_owned();
            (version, i)
        })
        .collect();
    let (expected, index) = (Arc::new(expected), Arc::new(index));
    const READERS: usize = 8;
    // The variant each reader read last.
    let last_read: Arc<Vec<AtomicUsize>> =
        Arc::new((0..READERS).map(|_| AtomicUsize::new(usize::MAX)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|reader| {
            let (store, record, expected, index, last_read, done) = (
                Arc::clone(&store),
                Arc::clone(&record),
                Arc::clone(&expected),
                Arc::clone(&index),
                Arc::clone(&last_read),
                Arc::clone(&done),
            );
            let (agent, radiation) = (agent.clone(), radiation.clone());
            std::thread::spawn(move || {
                let mut reads = 0u32;
                let mut versions = std::collections::BTreeSet::new();
                // Bounded: until the writer is done, at most 10 million reads.
                while !done.load(Ordering::Acquire) && reads < 10_000_000 {
                    let snapshot = store.current();
                    let data = snapshot
                        .authorize(&agent, &radiation)
                        .unwrap()
                        .filter(&record)
                        .data;
                    let want = expected.get(snapshot.version());
                    assert_eq!(Some(&data), want, "version {}", snapshot.version());
                    last_read[reader].store(index[snapshot.version()], Ordering::Release);
                    versions.insert(snapshot.version().to_owned());
                    reads += 1;
                }
                versions
            })
        })
        .collect();
    {
        // The readers stop when the writer is done, whether it succeeds or fails.
        let _stop = StopOnDrop(Arc::clone(&done));
        for i in 0..20 {
            let next = (i + 1) % 2;
            scratch.replace(&variants[next]);
            assert!(
                matches!(store.reload(), Ok(ReloadOutcome::Applied { .. })),
                "reload {i}"
            );
            // Every reader, reading all along, comes to the new version before
            // the next reload: each sees every one of the twenty swaps.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !last_read.iter().all(|v| v.load(Ordering::Acquire) == next) {
                assert!(
                    Instant::now() < deadline,
                    "after reload {i}, a reader still reads the old version"
                );
                std::thread::yield_now();
            }
        }
    }
    for reader in readers {
        let versions = reader.join().expect("no reader panicked");
        assert_eq!(versions.len(), 2, "each reader read both versions");
    }
    assert_eq!(
        store.current().version(),
        Policy::from_toml(&variants[0], "x").unwrap().version()
    );
}

/// Sets its flag when dropped, even by a panic.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Polls `done` until it holds, for at most `limit`.
fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    done()
}

/// Polls `current().version()` until it differs from `from`, for at most `limit`.
fn wait_for_change(store: &PolicyStore, from: &str, limit: Duration) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let version = store.current().version().to_owned();
        if version != from {
            return Some(version);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

#[test]
fn the_watcher_applies_a_file_replaced_by_rename_and_ignores_a_bad_one() {
    let scratch = Scratch::new("watch");
    let store = Arc::new(PolicyStore::load(&scratch.file(), Some(&shipped_tests())).unwrap());
    let guard = store.watch().unwrap();
    let first = store.current().version().to_owned();

    // A bad file (fails a policy test) is rejected by the watcher and not applied.
    scratch.replace(&widened());
    assert!(
        wait_until(Duration::from_secs(10), || store.counts().rejected >= 1),
        "the watcher did not try the bad file"
    );
    assert_eq!(store.current().version(), first);
    assert_eq!(store.counts().applied, 0);

    // A good one (a comment more) is applied.
    let commented = format!("# reviewed\n{}", shipped_text());
    let good_version = Policy::from_toml(&commented, "x")
        .unwrap()
        .version()
        .to_owned();
    scratch.replace(&commented);
    let seen = wait_for_change(&store, &first, Duration::from_secs(10));
    assert_eq!(seen.as_deref(), Some(good_version.as_str()));

    // Deleted then recreated a moment later: picked up once it is back.
    std::fs::remove_file(scratch.file()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    scratch.write(&format!("# reviewed twice\n{}", shipped_text()));
    let seen = wait_for_change(&store, &good_version, Duration::from_secs(10));
    assert!(seen.is_some(), "the recreated file was not applied");
    drop(guard);
}

#[test]
fn a_record_with_extra_fields_is_counted_as_drift_and_never_released() {
    let mut record = fixture("1000001");
    record["iban"] = json!("FR7612345");
    record["enfants"][0]["ecole"] = json!("x");
    record["conjoint"]["courriel"] = json!("x");
    let mut paths = unknown_paths(&record);
    paths.sort();
    assert_eq!(paths, ["conjoint.courriel", "enfants[].ecole", "iban"]);
    assert!(unknown_paths(&fixture("1000001")).is_empty());

    let counters = Counters::default();
    let tracker = DriftTracker::default();
    metrics::with_local_recorder(&counters, || {
        tracker.observe(&record);
        tracker.observe(&record);
    });
    assert_eq!(
        counters.get("caf_broker_upstream_unknown_fields_total{path=enfants[].ecole}"),
        2
    );
    let policy = Policy::from_toml(&shipped_text(), "p.toml").unwrap();
    let social = policy
        .authorize(&role("assistant_social"), &purpose("accompagnement_social"))
        .unwrap();
    let data = social.filter(&record).data.to_string();
    assert!(!data.contains("courriel") && !data.contains("ecole") && !data.contains("iban"));
}

#[test]
fn a_shadow_that_releases_one_more_field_and_withholds_one_is_measured_not_served() {
    let scratch = Scratch::new("shadow");
    let candidate = widened().replacen("  \"mise_a_jour\",\n", "", 1);
    scratch.write(&candidate);
    let shadow = ShadowPolicy::load(&scratch.file()).unwrap();
    let live = Policy::from_toml(&shipped_text(), "live.toml").unwrap();
    let record = fixture("1000002");
    let agent = role("agent_consulaire");
    let radiation = purpose("verification_radiation");
    let counters = Counters::default();
    let diff = metrics::with_local_recorder(&counters, || {
        shadow.compare(&live, &agent, &radiation, &record)
    });
    assert_eq!(diff.would_release, ["regime"]);
    assert_eq!(diff.would_withhold, ["mise_a_jour"]);
    assert!(diff.refusal.is_none() && diff.would_change.is_empty());
    for kind in ["release", "withhold"] {
        assert_eq!(
            counters.get(&format!(
                "caf_broker_policy_shadow_diff_total{{purpose=verification_radiation,kind={kind}}}"
            )),
            1
        );
    }
    // The live answer is untouched by the shadow.
    let data = live
        .authorize(&agent, &radiation)
        .unwrap()
        .filter(&record)
        .data;
    assert!(data.get("regime").is_none() && data.get("mise_a_jour").is_some());
}

#[test]
fn the_simulator_serves_no_field_the_schema_does_not_know() {
    let dataset = caf_broker::simulator::Dataset::generate(7, 500);
    let mut checked = 0;
    for numero in dataset.numeros() {
        let record = dataset
            .by_numero(numero)
            .expect("every listed dossier exists");
        assert_eq!(
            unknown_paths(&record),
            Vec::<String>::new(),
            "dossier {numero}"
        );
        checked += 1;
    }
    assert_eq!(checked, 505);
}
