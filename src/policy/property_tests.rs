//! Property: whatever the upstream sends, every released path is allowed by a rule, and no `nir` ever leaves.
//!
//! Records come from proptest strategies: schema-shaped records with wrong
//! types, nulls, missing and extra keys, arbitrary JSON, and random edits of
//! the fixed fixtures. A failure is shrunk to a smallest record that still
//! breaks the property. The seed is fixed, so that the check that every rule
//! released something is reproducible.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value};

use super::load_tests::shipped;
use super::schema::{FIELDS, FieldSpec, Kind};
use super::{Policy, PurposeView, Rule};

const FIXTURES: &[&str] = &[
    include_str!("../../config/policy-tests/fixtures/1000001.json"),
    include_str!("../../config/policy-tests/fixtures/1000002.json"),
    include_str!("../../config/policy-tests/fixtures/1000003.json"),
    include_str!("../../config/policy-tests/fixtures/1000004.json"),
    include_str!("../../config/policy-tests/fixtures/1000005.json"),
];

/// Keys sprinkled where they do not belong: schema names from other levels, count names, the NIR, new fields.
const STRAY_KEYS: &[&str] = &[
    "nir",
    "nir",
    "code",
    "prenoms",
    "paiements",
    "motif",
    "date_effet",
    "nombre_enfants",
    "enfants",
    "controle",
    "signalement_fraude",
    "nouveau_champ",
    "x",
    "",
];

/// A NIR-shaped string, which must never leave whatever key holds it.
const NIR: &str = "295109912611193";

fn string(text: impl Into<String>) -> Value {
    Value::String(text.into())
}

fn stray_key() -> impl Strategy<Value = String> {
    select(STRAY_KEYS).prop_map(str::to_owned)
}

fn scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0..100_000u32)
            .prop_map(|n| serde_json::Number::from_f64(f64::from(n) / 7.0)
                .map_or(Value::Null, Value::Number)),
        (1900..2050u32, 1..=12u32, 1..=31u32)
            .prop_map(|(y, m, d)| string(format!("{y:04}-{m:02}-{d:02}"))),
        Just(string("2024-13-45")),
        Just(string(NIR)),
        Just(string("")),
        (0..1000u32).prop_map(|n| string(format!("V{n}"))),
    ]
    .boxed()
}

/// Any JSON value up to six levels deep, objects keyed by stray keys. Built
/// level by level once, rather than with `prop_recursive`, which rebuilds its
/// levels for every value drawn.
fn any_value() -> BoxedStrategy<Value> {
    let mut json = scalar();
    for _ in 0..5 {
        let inner = json;
        json = prop_oneof![
            4 => scalar(),
            1 => vec(inner.clone(), 0..4).prop_map(Value::Array),
            1 => vec((stray_key(), inner), 0..4)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
        .boxed();
    }
    json
}

fn text() -> BoxedStrategy<Value> {
    (0..100u32).prop_map(|n| string(format!("T{n}"))).boxed()
}

fn well_typed(spec: &'static FieldSpec, json: &BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    match spec.kind {
        Kind::Object => shaped_object(spec.path, json),
        Kind::ArrayOfObjects => {
            let item = prop_oneof![
                17 => shaped_object(&format!("{}[]", spec.path), json),
                3 => json.clone(),
            ];
            vec(item, 0..5).prop_map(Value::Array).boxed()
        }
        Kind::Enum if !spec.values.is_empty() => prop_oneof![
            4 => select(spec.values).prop_map(string),
            1 => text(),
        ]
        .boxed(),
        Kind::Date => (0..30u32, 1..=12u32, 1..=28u32)
            .prop_map(|(y, m, d)| string(format!("20{y:02}-{m:02}-{d:02}")))
            .boxed(),
        Kind::Month => (1..=12u32)
            .prop_map(|m| string(format!("2024-{m:02}")))
            .boxed(),
        Kind::Integer => (0..400u32).prop_map(Value::from).boxed(),
        Kind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Kind::Amount => (0..2000u32, 0..100u32)
            .prop_map(|(e, c)| string(format!("{e}.{c:02}")))
            .boxed(),
        Kind::Forbidden => Just(string(NIR)).boxed(),
        Kind::Text | Kind::Enum | Kind::Quarter | Kind::Timestamp => text(),
    }
}

/// An object shaped like the schema at `prefix`, with fields missing, null, mistyped, and extra.
fn shaped_object(prefix: &str, json: &BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = children(prefix)
        .into_iter()
        .map(|spec| {
            let name = spec.path.rsplit('.').next().unwrap_or(spec.path).to_owned();
            prop_oneof![
                15 => Just(None),
                10 => Just(Some(Value::Null)),
                10 => json.clone().prop_map(Some),
                65 => well_typed(spec, json).prop_map(Some),
            ]
            .prop_map(move |value| value.map(|value| (name.clone(), value)))
            .boxed()
        })
        .collect();
    (fields, vec((stray_key(), json.clone()), 0..3))
        .prop_map(|(fields, strays)| {
            Value::Object(
                fields
                    .into_iter()
                    .flatten()
                    .chain(strays)
                    .collect::<Map<_, _>>(),
            )
        })
        .boxed()
}

/// What one edit of a record does where its walk leads.
#[derive(Debug, Clone)]
enum Change {
    Remove,
    Replace(Value),
    /// A stray key in an object, a new item in an array.
    Add(String, Value),
}

/// One edit: at each level, which key or item (modulo the container's size), then the change.
fn edit(json: &BoxedStrategy<Value>) -> impl Strategy<Value = (Vec<Index>, Change)> {
    let change = prop_oneof![
        Just(Change::Remove),
        json.clone().prop_map(Change::Replace),
        (stray_key(), json.clone()).prop_map(|(key, value)| Change::Add(key, value)),
    ];
    (vec(any::<Index>(), 0..7), change)
}

/// Applies the change where the steps lead; a scalar, an empty container or
/// the end of the steps before any container is replaced whole.
fn apply(node: &mut Value, steps: &[Index], change: &Change) {
    let Some((step, rest)) = steps.split_first() else {
        *node = match change {
            Change::Remove => Value::Null,
            Change::Replace(value) | Change::Add(_, value) => value.clone(),
        };
        return;
    };
    match node {
        Value::Object(fields) if !fields.is_empty() => {
            let nth = fields.keys().nth(step.index(fields.len()));
            let key = nth.cloned().unwrap_or_default();
            match (rest.is_empty(), change) {
                (true, Change::Remove) => {
                    fields.remove(&key);
                }
                (true, Change::Replace(value)) => {
                    fields.insert(key, value.clone());
                }
                (true, Change::Add(stray, value)) => {
                    fields.insert(stray.clone(), value.clone());
                }
                (false, _) => {
                    if let Some(inner) = fields.get_mut(&key) {
                        apply(inner, rest, change);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = step.index(items.len());
            match (rest.is_empty(), change) {
                (true, Change::Remove) => {
                    items.remove(i);
                }
                (true, Change::Replace(value)) => items[i] = value.clone(),
                (true, Change::Add(_, value)) => items.push(value.clone()),
                (false, _) => apply(&mut items[i], rest, change),
            }
        }
        other => apply(other, &[], change),
    }
}

/// The schema fields directly under `prefix` ("" for the root, "prestations[]" for items).
fn children(prefix: &str) -> Vec<&'static FieldSpec> {
    FIELDS
        .iter()
        .filter(|spec| {
            let rest = if prefix.is_empty() {
                Some(spec.path)
            } else {
                spec.path
                    .strip_prefix(prefix)
                    .and_then(|r| r.strip_prefix('.'))
            };
            rest.is_some_and(|rest| !rest.contains('.'))
        })
        .collect()
}

fn has_nir(value: &Value) -> bool {
    match value {
        Value::Object(fields) => fields
            .iter()
            .any(|(key, inner)| key == "nir" || has_nir(inner)),
        Value::Array(items) => items.iter().any(has_nir),
        _ => false,
    }
}

fn views(policy: &Policy) -> Vec<&PurposeView> {
    let mut out = Vec::new();
    for role in policy.roles() {
        for purpose in policy.purposes_of(role) {
            out.push(policy.authorize(role, purpose).unwrap());
        }
    }
    out
}

/// The property for one record and one view; what was released is added to `seen`.
fn released_paths_are_allowed(
    view: &PurposeView,
    record: &Value,
    seen: &RefCell<BTreeMap<String, BTreeSet<String>>>,
) -> Result<(), TestCaseError> {
    let filtered = view.filter(record);
    prop_assert!(filtered.data.is_object());
    json_is_the_serialised_view(view, record, &filtered)?;
    prop_assert!(
        !has_nir(&filtered.data),
        "nir released for {}: {}",
        view.purpose(),
        filtered.data
    );
    let outside = view.paths_outside_rules(&filtered.data);
    prop_assert!(
        outside.is_empty(),
        "{outside:?} released for {}",
        view.purpose()
    );
    let mut sorted = filtered.released.clone();
    sorted.sort();
    prop_assert_eq!(&sorted, &filtered.released);
    let paths: BTreeSet<&str> = view.rules().iter().map(Rule::path).collect();
    prop_assert!(filtered.released.iter().all(|p| paths.contains(p.as_str())));
    seen.borrow_mut()
        .entry(view.purpose().to_string())
        .or_default()
        .extend(filtered.released);
    Ok(())
}

/// What [`PurposeView::filter_json`] writes is, byte for byte, the view
/// [`PurposeView::filter`] builds as `serde_json` serialises it, with the same
/// released paths and redactions.
fn json_is_the_serialised_view(
    view: &PurposeView,
    record: &Value,
    filtered: &super::Filtered,
) -> Result<(), TestCaseError> {
    let written = view.filter_json(record);
    let serialised = serde_json::to_vec(&filtered.data).unwrap();
    prop_assert_eq!(
        String::from_utf8_lossy(&written.json),
        String::from_utf8_lossy(&serialised),
        "{} for {}",
        view.purpose(),
        record
    );
    prop_assert_eq!(&written.released, &filtered.released);
    prop_assert_eq!(written.redacted, filtered.redacted);
    Ok(())
}

/// A runner of `cases` cases on a fixed seed, writing no regression file.
/// XorShift rather than ChaCha: the latter is ten times slower unoptimised.
fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::XorShift))
}

#[test]
fn random_records_never_release_a_path_no_rule_allows_nor_any_nir() {
    let policy = shipped();
    let views = views(&policy);
    assert_eq!(views.len(), 4);
    let json = any_value();
    let records = prop_oneof![19 => shaped_object("", &json), 1 => json.clone()];
    let seen = RefCell::new(BTreeMap::new());
    let outcome = runner(2_000).run(&records, |record| {
        for view in &views {
            released_paths_are_allowed(view, &record, &seen)?;
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    // The generator is only worth something if it made every rule release at some point.
    let seen = seen.into_inner();
    for view in &views {
        let released = seen
            .get(view.purpose().as_str())
            .cloned()
            .unwrap_or_default();
        let unseen: Vec<&str> = view
            .rules()
            .iter()
            .map(Rule::path)
            .filter(|p| !released.contains(*p))
            .collect();
        assert!(
            unseen.is_empty(),
            "{} never released {unseen:?}",
            view.purpose()
        );
    }
}

#[test]
fn edited_fixtures_never_release_a_path_no_rule_allows_nor_any_nir() {
    let policy = shipped();
    let views = views(&policy);
    let fixtures: Vec<Value> = FIXTURES
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect();
    let seen = RefCell::new(BTreeMap::new());
    for fixture in &fixtures {
        for view in &views {
            released_paths_are_allowed(view, fixture, &seen).unwrap();
        }
    }
    let json = any_value();
    let edited = (0..fixtures.len(), vec(edit(&json), 1..5));
    let outcome = runner(1_500).run(&edited, |(fixture, edits)| {
        let mut record = fixtures[fixture].clone();
        for (steps, change) in &edits {
            apply(&mut record, steps, change);
        }
        for view in &views {
            released_paths_are_allowed(view, &record, &seen)?;
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

#[test]
fn every_fixture_is_a_full_record_with_every_schema_key() {
    for text in FIXTURES {
        let fixture: Value = serde_json::from_str(text).unwrap();
        for spec in FIELDS {
            // Every key must be present, except below a null object or inside an empty array.
            let mut nodes = vec![&fixture];
            for segment in spec.path.split('.') {
                let (name, items) = segment
                    .strip_suffix("[]")
                    .map_or((segment, false), |n| (n, true));
                let mut next = Vec::new();
                for node in nodes {
                    if node.is_null() {
                        continue;
                    }
                    let value = node.get(name).unwrap_or_else(|| {
                        panic!("{} lacks `{}`", fixture["numero_allocataire"], spec.path)
                    });
                    if items {
                        next.extend(value.as_array().into_iter().flatten());
                    } else {
                        next.push(value);
                    }
                }
                nodes = next;
            }
        }
    }
}

#[test]
fn the_json_written_for_any_record_is_the_serialised_released_view_byte_for_byte() {
    let policy = shipped();
    let views = views(&policy);
    let fixtures = FIXTURES
        .iter()
        .map(|text| serde_json::from_str::<Value>(text).unwrap());
    // NIRs in released text, a count over a null, values of the wrong shape.
    let odd = serde_json::json!({
        "numero_allocataire": "1000002",
        "adresse": {"complement": "chez 2 95 10 99 126 111 93 et 295109912611193", "nir": NIR},
        "enfants": null,
        "foyer": [1, {"nir": NIR}],
        "nir": NIR,
    });
    for record in fixtures.chain([odd, Value::Null, serde_json::json!([])]) {
        for view in &views {
            json_is_the_serialised_view(view, &record, &view.filter(&record)).unwrap();
        }
    }
    let json = any_value();
    let records = prop_oneof![19 => shaped_object("", &json), 1 => json.clone()];
    let outcome = runner(500).run(&records, |record| {
        for view in &views {
            json_is_the_serialised_view(view, &record, &view.filter(&record))?;
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
