//! Property: whatever the upstream sends, every released path is allowed by a rule, and no `nir` ever leaves.
//!
//! Records come from a small deterministic generator (splitmix64): schema-shaped
//! records with wrong types, nulls, missing and extra keys, plus random
//! mutations of the fixed fixtures.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::load_tests::shipped;
use super::schema::{FIELDS, FieldSpec, Kind};
use super::{Policy, PurposeView, Rule, Transform};

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

/// splitmix64: tiny, deterministic, good enough to shake shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn random_scalar(rng: &mut Rng) -> Value {
    match rng.below(9) {
        0 => Value::Null,
        1 => Value::Bool(rng.percent(50)),
        2 => Value::from(rng.next() as i64),
        3 => serde_json::Number::from_f64(rng.below(100_000) as f64 / 7.0)
            .map_or(Value::Null, Value::Number),
        4 => Value::String(format!(
            "{:04}-{:02}-{:02}",
            1900 + rng.below(150),
            1 + rng.below(12),
            1 + rng.below(31)
        )),
        5 => Value::String("2024-13-45".to_owned()),
        6 => Value::String("295109912611193".to_owned()),
        7 => Value::String(String::new()),
        _ => Value::String(format!("V{}", rng.below(1000))),
    }
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    if depth > 5 {
        return random_scalar(rng);
    }
    match rng.below(6) {
        0 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        1 => {
            let mut fields = Map::new();
            for _ in 0..rng.below(4) {
                let key = (*rng.pick(STRAY_KEYS)).to_owned();
                fields.insert(key, random_value(rng, depth + 1));
            }
            Value::Object(fields)
        }
        _ => random_scalar(rng),
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

fn well_typed(rng: &mut Rng, spec: &FieldSpec, depth: usize) -> Value {
    match spec.kind {
        Kind::Object => shaped_object(rng, spec.path, depth + 1),
        Kind::ArrayOfObjects => {
            let items_prefix = format!("{}[]", spec.path);
            Value::Array(
                (0..rng.below(5))
                    .map(|_| {
                        if rng.percent(85) {
                            shaped_object(rng, &items_prefix, depth + 1)
                        } else {
                            random_value(rng, depth + 1)
                        }
                    })
                    .collect(),
            )
        }
        Kind::Enum if !spec.values.is_empty() && rng.percent(80) => {
            Value::String((*rng.pick(spec.values)).to_owned())
        }
        Kind::Date => Value::String(format!(
            "20{:02}-{:02}-{:02}",
            rng.below(30),
            1 + rng.below(12),
            1 + rng.below(28)
        )),
        Kind::Month => Value::String(format!("2024-{:02}", 1 + rng.below(12))),
        Kind::Integer => Value::from(rng.below(400)),
        Kind::Bool => Value::Bool(rng.percent(50)),
        Kind::Amount => Value::String(format!("{}.{:02}", rng.below(2000), rng.below(100))),
        Kind::Forbidden => Value::String("295109912611193".to_owned()),
        Kind::Text | Kind::Enum | Kind::Quarter | Kind::Timestamp => {
            Value::String(format!("T{}", rng.below(100)))
        }
    }
}

/// An object shaped like the schema at `prefix`, with fields missing, null, mistyped, and extra.
fn shaped_object(rng: &mut Rng, prefix: &str, depth: usize) -> Value {
    let mut fields = Map::new();
    for spec in children(prefix) {
        let name = spec.path.rsplit('.').next().unwrap_or(spec.path);
        let value = match rng.below(100) {
            0..15 => continue,
            15..25 => Value::Null,
            25..35 => random_value(rng, depth + 1),
            _ => well_typed(rng, spec, depth),
        };
        fields.insert(name.to_owned(), value);
    }
    for _ in 0..rng.below(3) {
        let key = (*rng.pick(STRAY_KEYS)).to_owned();
        fields.insert(key, random_value(rng, depth + 1));
    }
    Value::Object(fields)
}

/// Replaces, removes or adds something somewhere in `value`.
fn mutate(rng: &mut Rng, value: &mut Value, depth: usize) {
    match value {
        Value::Object(fields) if !fields.is_empty() && rng.percent(85) => {
            let keys: Vec<String> = fields.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            match rng.below(5) {
                0 => {
                    fields.remove(&key);
                }
                1 => {
                    fields.insert(key, random_value(rng, depth));
                }
                2 => {
                    fields.insert((*rng.pick(STRAY_KEYS)).to_owned(), random_value(rng, depth));
                }
                _ => {
                    if let Some(inner) = fields.get_mut(&key) {
                        mutate(rng, inner, depth + 1);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() && rng.percent(85) => {
            let i = rng.below(items.len());
            match rng.below(4) {
                0 => items[i] = random_value(rng, depth),
                1 => items.push(random_value(rng, depth)),
                _ => mutate(rng, &mut items[i], depth + 1),
            }
        }
        other => *other = random_value(rng, depth),
    }
}

/// Every leaf path of the output in `[]` notation, with whether the leaf is null or an empty container.
fn leaves(value: &Value, path: &str, out: &mut Vec<(String, bool)>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (key, inner) in fields {
                let next = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                leaves(inner, &next, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                leaves(item, &format!("{path}[]"), out);
            }
        }
        Value::Null | Value::Object(_) | Value::Array(_) => out.push((path.to_owned(), true)),
        _ => out.push((path.to_owned(), false)),
    }
}

fn is_under(path: &str, ancestor: &str) -> bool {
    path.strip_prefix(ancestor)
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with("[]"))
}

/// Whether a rule allows a leaf at `path`: the rule's own path, inside a subtree it releases
/// whole, its count key, or (for null and empty containers) a step on the way to a rule.
fn covered(rules: &[Rule], path: &str, hollow: bool) -> bool {
    rules.iter().any(|rule| {
        let own = match rule.transform() {
            Transform::Count { name } => match rule.path().rsplit_once('.') {
                Some((parent, _)) => path == format!("{parent}.{name}"),
                None => path == name,
            },
            _ => path == rule.path() || (rule.releases_subtree() && is_under(path, rule.path())),
        };
        own || (hollow && is_under(rule.path(), path))
    })
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

fn assert_released_paths_are_allowed(
    view: &PurposeView,
    record: &Value,
    seen: &mut BTreeMap<String, BTreeSet<String>>,
) {
    let filtered = view.filter(record);
    assert!(filtered.data.is_object());
    assert!(
        !has_nir(&filtered.data),
        "nir released for {}: {}",
        view.purpose(),
        filtered.data
    );
    let mut found = Vec::new();
    leaves(&filtered.data, "", &mut found);
    for (path, hollow) in found {
        if path.is_empty() {
            continue; // an empty data object
        }
        assert!(
            covered(view.rules(), &path, hollow),
            "`{path}` released for {} from {record}",
            view.purpose()
        );
    }
    let mut sorted = filtered.released.clone();
    sorted.sort();
    assert_eq!(sorted, filtered.released);
    let paths: BTreeSet<&str> = view.rules().iter().map(Rule::path).collect();
    assert!(filtered.released.iter().all(|p| paths.contains(p.as_str())));
    seen.entry(view.purpose().to_string())
        .or_default()
        .extend(filtered.released);
}

#[test]
fn random_records_never_release_a_path_no_rule_allows_nor_any_nir() {
    let policy = shipped();
    let views = views(&policy);
    assert_eq!(views.len(), 4);
    let mut rng = Rng(0x00CA_FB40_CE12_2024);
    let mut seen = BTreeMap::new();
    for _ in 0..2_000 {
        let record = if rng.percent(95) {
            shaped_object(&mut rng, "", 0)
        } else {
            random_value(&mut rng, 0)
        };
        for view in &views {
            assert_released_paths_are_allowed(view, &record, &mut seen);
        }
    }
    // The generator is only worth something if it made every rule release at some point.
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
fn mutated_fixtures_never_release_a_path_no_rule_allows_nor_any_nir() {
    let policy = shipped();
    let views = views(&policy);
    let mut rng = Rng(1_000_002);
    let mut seen = BTreeMap::new();
    for text in FIXTURES {
        let fixture: Value = serde_json::from_str(text).unwrap();
        for view in &views {
            assert_released_paths_are_allowed(view, &fixture, &mut seen);
        }
        for _ in 0..300 {
            let mut record = fixture.clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut record, 0);
            }
            for view in &views {
                assert_released_paths_are_allowed(view, &record, &mut seen);
            }
        }
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
