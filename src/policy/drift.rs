//! Upstream drift: fields in CAF records that the record schema does not know, counted and logged once.
//!
//! The filter never releases such fields (deny by default, also inside subtrees
//! released whole); this module makes them visible so the schema and the policy
//! can follow the CAF. Only paths are reported, never values. A key name that
//! does not look like a field name (too long, odd characters, many digits: it
//! could be data sent in a key) is reported as `<redacted>`.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};

use crate::telemetry;

use super::schema::{self, Kind, SchemaNode};

/// The label for paths beyond the tracker's bound.
pub const OTHER_PATH: &str = "<other>";
/// The segment shown in place of a key that may hold data.
const REDACTED: &str = "<redacted>";

/// Paths in `record` (with `[]` for array items, each path once) that the CAF
/// record schema does not know. Below an unknown key nothing more is reported.
/// Allocates nothing when every field is known.
pub fn unknown_paths(record: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Value::Object(fields) = record {
        walk(schema::tree(), fields, None, &mut out);
    }
    out
}

/// The path walked so far, kept on the stack so that known fields cost no allocation.
struct Trail<'a> {
    parent: Option<&'a Trail<'a>>,
    name: &'a str,
    items: bool,
}

fn walk(
    node: &SchemaNode,
    fields: &Map<String, Value>,
    trail: Option<&Trail<'_>>,
    out: &mut Vec<String>,
) {
    for (key, value) in fields {
        let Some(child) = node.child(key) else {
            let path = render(trail, key);
            if !out.contains(&path) {
                out.push(path);
            }
            continue;
        };
        match (child.kind, value) {
            (Kind::Object, Value::Object(inner)) => {
                let here = Trail {
                    parent: trail,
                    name: child.name,
                    items: false,
                };
                walk(&child.node, inner, Some(&here), out);
            }
            (Kind::ArrayOfObjects, Value::Array(items)) => {
                let here = Trail {
                    parent: trail,
                    name: child.name,
                    items: true,
                };
                for item in items.iter().filter_map(Value::as_object) {
                    walk(&child.node, item, Some(&here), out);
                }
            }
            // Wrong shapes are the filter's business (it releases nothing there), not drift.
            _ => {}
        }
    }
}

fn render(trail: Option<&Trail<'_>>, key: &str) -> String {
    let mut steps = Vec::new();
    let mut at = trail;
    while let Some(step) = at {
        steps.push(step);
        at = step.parent;
    }
    let mut path = String::new();
    for step in steps.iter().rev() {
        path.push_str(step.name);
        path.push_str(if step.items { "[]." } else { "." });
    }
    path.push_str(shown(key));
    path
}

/// The key as shown in logs and metrics: as is when it looks like a field name.
fn shown(key: &str) -> &str {
    let digits = key.bytes().filter(u8::is_ascii_digit).count();
    let plain = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !key.is_empty() && key.len() <= 64 && plain && digits <= 4 {
        key
    } else {
        REDACTED
    }
}

/// Counts unknown upstream fields per path and logs each new path once.
///
/// At most `limit` distinct paths are tracked (and used as metric labels);
/// beyond that, a hostile or broken upstream is counted under `path="<other>"`,
/// so neither memory nor label cardinality can grow without bound.
#[derive(Debug)]
pub struct DriftTracker {
    seen: Mutex<BTreeSet<String>>,
    limit: usize,
    overflowed: AtomicBool,
}

impl Default for DriftTracker {
    fn default() -> Self {
        DriftTracker::new(DriftTracker::DEFAULT_LIMIT)
    }
}

impl DriftTracker {
    /// Distinct paths tracked by default.
    pub const DEFAULT_LIMIT: usize = 256;

    pub fn new(limit: usize) -> Self {
        DriftTracker {
            seen: Mutex::new(BTreeSet::new()),
            limit,
            overflowed: AtomicBool::new(false),
        }
    }

    /// Looks for unknown fields in one CAF record; returns how many distinct paths it found.
    pub fn observe(&self, record: &Value) -> usize {
        let paths = unknown_paths(record);
        if paths.is_empty() {
            return 0;
        }
        // A poisoned lock only means another thread panicked while logging: the set is still sound.
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for path in &paths {
            let label = if seen.contains(path) {
                path.clone()
            } else if seen.len() < self.limit {
                tracing::warn!(
                    path = %path,
                    "the CAF sent a field the record schema does not know; it is never released"
                );
                seen.insert(path.clone());
                path.clone()
            } else {
                if !self.overflowed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        limit = self.limit,
                        "more distinct unknown CAF fields than tracked; counting the rest under <other>"
                    );
                }
                OTHER_PATH.to_owned()
            };
            telemetry::record_unknown_upstream_field(&label);
        }
        paths.len()
    }

    /// The distinct unknown paths seen so far, in name order (at most the limit).
    pub fn paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::telemetry::TestRecorder;

    const FIXTURES: &[&str] = &[
        include_str!("../../config/policy-tests/fixtures/1000001.json"),
        include_str!("../../config/policy-tests/fixtures/1000002.json"),
        include_str!("../../config/policy-tests/fixtures/1000003.json"),
        include_str!("../../config/policy-tests/fixtures/1000004.json"),
        include_str!("../../config/policy-tests/fixtures/1000005.json"),
    ];

    fn fixture(i: usize) -> Value {
        serde_json::from_str(FIXTURES[i]).unwrap()
    }

    #[test]
    fn the_fixed_dossiers_have_no_unknown_field() {
        for i in 0..FIXTURES.len() {
            assert_eq!(unknown_paths(&fixture(i)), Vec::<String>::new());
        }
    }

    #[test]
    fn unknown_fields_are_reported_by_path_with_brackets_once_each() {
        let mut record = fixture(0);
        record["iban"] = json!("FR76...");
        record["allocataire"]["email"] = json!("x@example.org");
        record["allocataire"]["adresse_mail"] = json!({"nested": {"deep": 1}});
        for child in record["enfants"].as_array_mut().unwrap() {
            child["ecole"] = json!("x");
        }
        record["prestations"][0]["paiements"][0]["iban"] = json!("x");
        record["radiation"] = json!({"date_effet": "2024-01-01", "motif": "DECES", "nouveau": 1});
        let mut paths = unknown_paths(&record);
        paths.sort();
        assert_eq!(
            paths,
            [
                "allocataire.adresse_mail",
                "allocataire.email",
                "enfants[].ecole",
                "iban",
                "prestations[].paiements[].iban",
                "radiation.nouveau",
            ]
        );
    }

    #[test]
    fn keys_that_may_hold_data_are_redacted() {
        let record = json!({
            "185057800608436": 1,
            "allocataire": {"jean dupont": 1, "x".repeat(65): 2, "ok_field-2": 3}
        });
        let mut paths = unknown_paths(&record);
        paths.sort();
        assert_eq!(
            paths,
            [
                "<redacted>",
                "allocataire.<redacted>",
                "allocataire.ok_field-2"
            ]
        );
    }

    #[test]
    fn wrong_shapes_and_non_objects_are_not_drift() {
        assert!(unknown_paths(&json!({"allocataire": "x", "enfants": [1, null, "x"]})).is_empty());
        assert!(unknown_paths(&json!([{"x": 1}])).is_empty());
        assert!(unknown_paths(&Value::Null).is_empty());
    }

    #[test]
    fn the_tracker_counts_every_occurrence_and_remembers_each_path() {
        let recorder = TestRecorder::default();
        let tracker = DriftTracker::default();
        let mut record = fixture(1);
        record["iban"] = json!("x");
        recorder.record(|| {
            assert_eq!(tracker.observe(&record), 1);
            assert_eq!(tracker.observe(&record), 1);
            assert_eq!(tracker.observe(&fixture(1)), 0);
        });
        assert_eq!(
            recorder.counter("caf_broker_upstream_unknown_fields_total{path=iban}"),
            2
        );
        assert_eq!(tracker.paths(), ["iban"]);
    }

    #[test]
    fn the_tracker_bounds_distinct_paths_and_counts_the_rest_as_other() {
        let recorder = TestRecorder::default();
        let tracker = DriftTracker::new(3);
        recorder.record(|| {
            for i in 0..10 {
                let mut fields = Map::new();
                fields.insert(format!("extra_{i}"), json!(i));
                tracker.observe(&Value::Object(fields));
            }
        });
        assert_eq!(tracker.paths(), ["extra_0", "extra_1", "extra_2"]);
        assert_eq!(
            recorder.counter("caf_broker_upstream_unknown_fields_total{path=<other>}"),
            7
        );
        // 3 tracked paths and <other>: the label set stays bounded.
        assert_eq!(recorder.names().len(), 4);
    }

    #[test]
    fn unknown_fields_are_never_released_even_under_a_whole_subtree_rule() {
        let policy = super::super::load_tests::shipped();
        let mut record = fixture(1);
        record["suspension"] = json!({"date_effet": "2024-01-01", "motif": "X", "secret": 1});
        record["conjoint"] = json!({"prenoms": "X", "secret": 1});
        record["indus"][0]["secret"] = json!(1);
        record["prestations"][0]["paiements"][0]["secret"] = json!(1);
        record["secret"] = json!(1);
        for role in policy.roles() {
            for purpose in policy.purposes_of(role) {
                let view = policy.authorize(role, purpose).unwrap();
                let data = view.filter(&record).data.to_string();
                assert!(!data.contains("secret"), "{purpose}: {data}");
            }
        }
    }
}
