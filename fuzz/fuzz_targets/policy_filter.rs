//! An upstream record through the shipped policy's filter, for every purpose.
//!
//! The first byte picks the mode. Even: the rest is the CAF's answer as bytes,
//! parsed as JSON (the fixtures of `config/policy-tests/fixtures/` are the
//! seeds). Odd: the rest drives a generator that follows the record schema,
//! with wrong types, nulls, NIRs in text, keys from other levels and `nir` at
//! any depth, which reaches the deep rules much sooner than bytes of JSON.
//! Invariants, for every purpose of `config/policy.toml`: no panic; the output
//! is an object with no `nir` key anywhere and no NIR in its text; every leaf
//! it holds is a path a rule of that purpose releases; the released rule paths
//! are sorted and are rules of the purpose.

#![no_main]

use std::sync::LazyLock;

use arbitrary::{Result, Unstructured};
use caf_broker::policy::schema::{Kind, SchemaNode, tree};
use caf_broker::policy::{Policy, redact_text};
use caf_broker_fuzz::repo_text;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

static POLICY: LazyLock<Policy> = LazyLock::new(|| {
    Policy::from_toml(&repo_text("config/policy.toml"), "config/policy.toml")
        .expect("the shipped policy compiles")
});

/// Keys put where they do not belong.
const STRAY_KEYS: &[&str] = &[
    "nir",
    "NIR",
    "code",
    "prenoms",
    "paiements",
    "motif",
    "date_effet",
    "enfants",
    "controle",
    "nombre_enfants",
    "signalement_fraude",
    "nouveau_champ",
    "",
    "nir ",
    "prestations[]",
];

/// Text values: NIRs (whole, printed, Corsican), near misses, dates, amounts.
const TEXTS: &[&str] = &[
    "295109912611193",
    "2 95 10 99 126 111 93",
    "1800575123456 27",
    "2690520A12345 32",
    "180057512345627",
    "tél. 180057512345627 fin",
    "2024-02-29",
    "2024-13-45",
    "2024-03",
    "2024-Q1",
    "2024-03-01T10:00:00Z",
    "635.71",
    "-0.00",
    "",
    "actif",
    "radie",
    "é",
];

fn scalar(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=6)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        4 => Value::String(u.choose(TEXTS)?.to_string()),
        5 => Value::String(u.arbitrary()?),
        _ => Value::from(u.arbitrary::<u64>()?),
    })
}

fn any_value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    if depth == 0 || u.ratio(2, 3)? {
        return scalar(u);
    }
    if u.arbitrary()? {
        let len = u.int_in_range(0..=3)?;
        (0..len)
            .map(|_| any_value(u, depth - 1))
            .collect::<Result<Vec<_>>>()
            .map(Value::Array)
    } else {
        let mut fields = Map::new();
        for _ in 0..u.int_in_range(0..=3)? {
            fields.insert(u.choose(STRAY_KEYS)?.to_string(), any_value(u, depth - 1)?);
        }
        Ok(Value::Object(fields))
    }
}

/// A value for a field of `kind`, mostly of the right shape.
fn field(u: &mut Unstructured<'_>, kind: Kind, node: &SchemaNode, depth: u32) -> Result<Value> {
    if u.ratio(1, 8)? {
        return any_value(u, depth);
    }
    Ok(match kind {
        Kind::Object => shaped(u, node, depth)?,
        Kind::ArrayOfObjects => {
            let len = u.int_in_range(0..=4)?;
            Value::Array(
                (0..len)
                    .map(|_| shaped(u, node, depth))
                    .collect::<Result<Vec<_>>>()?,
            )
        }
        Kind::Integer => Value::from(u.int_in_range(0..=400)?),
        Kind::Bool => Value::Bool(u.arbitrary()?),
        _ => Value::String(u.choose(TEXTS)?.to_string()),
    })
}

/// An object shaped like `node`: each field present or not, null or not, and strays.
fn shaped(u: &mut Unstructured<'_>, node: &SchemaNode, depth: u32) -> Result<Value> {
    let mut fields = Map::new();
    for child in node.children() {
        match u.int_in_range(0..=9)? {
            0 | 1 => {}
            2 => {
                fields.insert(child.name.to_owned(), Value::Null);
            }
            _ => {
                let value = field(u, child.kind, &child.node, depth.saturating_sub(1))?;
                fields.insert(child.name.to_owned(), value);
            }
        }
    }
    for _ in 0..u.int_in_range(0..=2)? {
        fields.insert(u.choose(STRAY_KEYS)?.to_string(), any_value(u, 2)?);
    }
    Ok(Value::Object(fields))
}

fn nir_anywhere(value: &Value) -> bool {
    match value {
        Value::Object(fields) => fields
            .iter()
            .any(|(key, inner)| key == "nir" || nir_anywhere(inner)),
        Value::Array(items) => items.iter().any(nir_anywhere),
        Value::String(text) => redact_text(text).is_some(),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let record = if mode % 2 == 0 {
        match serde_json::from_slice::<Value>(rest) {
            Ok(record) => record,
            Err(_) => return,
        }
    } else {
        match shaped(&mut Unstructured::new(rest), tree(), 5) {
            Ok(record) => record,
            Err(_) => return,
        }
    };
    let mut purposes = 0;
    for view in POLICY.purposes() {
        purposes += 1;
        let filtered = view.filter(&record);
        assert!(filtered.data.is_object());
        assert!(
            !nir_anywhere(&filtered.data),
            "a NIR released for {}",
            view.purpose()
        );
        let outside = view.paths_outside_rules(&filtered.data);
        assert!(
            outside.is_empty(),
            "{outside:?} released for {}",
            view.purpose()
        );
        assert!(filtered.released.windows(2).all(|w| w[0] < w[1]));
        assert!(
            filtered
                .released
                .iter()
                .all(|p| view.rules().iter().any(|rule| rule.path() == p))
        );
    }
    assert!(purposes >= 3, "the shipped policy lost its purposes");
});
