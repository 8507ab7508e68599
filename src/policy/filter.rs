//! The filter: one pass over the record, guided by the compiled rule trie. Pure and total.
//!
//! Deny by default: the walk visits only keys some rule names, so a key the CAF
//! adds later is never released; a rule releasing a whole object or array keeps,
//! below it, only the fields the record schema knows, for the same reason.
//! Nothing here can panic whatever shape the upstream sends: wrong types release
//! nothing, nulls release `null` (absence is information), missing keys release
//! nothing. A key named `nir` is dropped at any depth, as a last line of defence,
//! and a NIR written inside a released string is replaced by `[redacted]` (see
//! `redact`).

use serde_json::{Map, Value};

use super::compile::{Children, Leaf, Node};
use super::schema::{Kind, SchemaNode};
use super::{PurposeView, Truncation};

/// What a purpose lets through from one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Filtered {
    /// The released fields; always a JSON object.
    pub data: Value,
    /// The rule paths (as written in the policy) that released something, sorted:
    /// a rule counts when its value appears in `data`, or when a `null`, object or
    /// array on its way does (the audit over-reports rather than under-reports).
    pub released: Vec<String>,
    /// How many NIRs written inside released strings were replaced by `[redacted]`.
    pub redacted: usize,
}

/// The key the filter never lets through, at any depth.
const NIR: &str = "nir";

impl PurposeView {
    /// Keeps only what this purpose's rules release from `record`.
    pub fn filter(&self, record: &Value) -> Filtered {
        let mut marks = vec![false; self.rules.len()];
        let mut data = Map::new();
        if let Value::Object(fields) = record {
            filter_fields(&self.root, fields, &mut data, &mut marks);
        }
        let mut data = Value::Object(data);
        let redacted = super::redact::redact_nirs(&mut data);
        let released = self
            .rules
            .iter()
            .zip(marks)
            .filter(|(_, marked)| *marked)
            .map(|(rule, _)| rule.path.clone())
            .collect();
        Filtered {
            data,
            released,
            redacted,
        }
    }
}

fn mark(marks: &mut [bool], index: usize) {
    if let Some(m) = marks.get_mut(index) {
        *m = true;
    }
}

fn filter_fields(
    node: &Node,
    fields: &Map<String, Value>,
    out: &mut Map<String, Value>,
    marks: &mut [bool],
) {
    for entry in &node.entries {
        let Some(value) = fields.get(&entry.key) else {
            continue;
        };
        if let Some((index, name)) = &entry.count {
            let length = match value {
                Value::Array(items) => Some(items.len()),
                Value::Null => Some(0),
                _ => None,
            };
            if let Some(length) = length {
                out.insert(name.clone(), Value::from(length));
                mark(marks, *index);
            }
        }
        if let Some((index, leaf)) = &entry.leaf
            && let Some(released) = apply(leaf, value)
        {
            out.insert(entry.key.clone(), released);
            mark(marks, *index);
        }
        if let Some(children) = &entry.children {
            let released = match (children, value) {
                (_, Value::Null) => Some(Value::Null),
                (Children::Fields(next), Value::Object(inner)) => {
                    let mut kept = Map::new();
                    filter_fields(next, inner, &mut kept, marks);
                    Some(Value::Object(kept))
                }
                (Children::Items(next), Value::Array(items)) => Some(Value::Array(
                    items
                        .iter()
                        .filter_map(Value::as_object)
                        .map(|item| {
                            let mut kept = Map::new();
                            filter_fields(next, item, &mut kept, marks);
                            Value::Object(kept)
                        })
                        .collect(),
                )),
                _ => None,
            };
            if let Some(released) = released {
                out.insert(entry.key.clone(), released);
                for index in &entry.rules_below {
                    mark(marks, *index);
                }
            }
        }
    }
}

/// The released form of one value under a leaf rule, or `None` to release nothing.
fn apply(leaf: &Leaf, value: &Value) -> Option<Value> {
    match (leaf, value) {
        (Leaf::Scalar, Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_)) => {
            Some(value.clone())
        }
        (Leaf::Object(_) | Leaf::Array(_) | Leaf::Map { .. }, Value::Null) => Some(Value::Null),
        (Leaf::Object(schema), Value::Object(_)) => known(Kind::Object, schema, value),
        (Leaf::Array(schema), Value::Array(_)) => known(Kind::ArrayOfObjects, schema, value),
        (Leaf::Map { values, default }, Value::String(s)) => Some(Value::String(
            values.get(s.as_str()).unwrap_or(default).clone(),
        )),
        (Leaf::Truncate(unit), Value::String(s)) if is_date(s) => {
            let end = match unit {
                Truncation::Year => 4,
                Truncation::Month => 7,
            };
            s.get(..end).map(|part| Value::String(part.to_owned()))
        }
        _ => None,
    }
}

/// The part of `value` the schema knows, for a field of `kind` whose fields are `schema`:
/// unknown keys, values of the wrong shape and the NIR are left out.
fn known(kind: Kind, schema: &SchemaNode, value: &Value) -> Option<Value> {
    match (kind, value) {
        (Kind::Forbidden, _) => None,
        (_, Value::Null) => Some(Value::Null),
        (Kind::Object, Value::Object(fields)) => Some(Value::Object(known_fields(schema, fields))),
        (Kind::ArrayOfObjects, Value::Array(items)) => Some(Value::Array(
            items
                .iter()
                .filter_map(Value::as_object)
                .map(|fields| Value::Object(known_fields(schema, fields)))
                .collect(),
        )),
        (Kind::Object | Kind::ArrayOfObjects, _) => None,
        (_, Value::Bool(_) | Value::Number(_) | Value::String(_)) => Some(value.clone()),
        (_, Value::Object(_) | Value::Array(_)) => None,
    }
}

fn known_fields(schema: &SchemaNode, fields: &Map<String, Value>) -> Map<String, Value> {
    schema
        .children()
        .iter()
        .filter(|child| child.name != NIR)
        .filter_map(|child| {
            let value = fields.get(child.name)?;
            known(child.kind, &child.node, value).map(|kept| (child.name.to_owned(), kept))
        })
        .collect()
}

/// `YYYY-MM-DD` with a month in 01..=12 and a day in 01..=31.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let number = |range: std::ops::Range<usize>| {
        s.get(range).and_then(|d| d.parse::<u8>().ok()).unwrap_or(0)
    };
    b.len() == 10
        && digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && (1..=12).contains(&number(5..7))
        && (1..=31).contains(&number(8..10))
}

#[cfg(test)]
mod tests {
    use super::is_date;

    #[test]
    fn only_well_formed_dates_count_as_dates() {
        assert!(is_date("2024-09-30"));
        for bad in [
            "2024-9-30",
            "2024-13-01",
            "2024-00-10",
            "2024-01-32",
            "2024-01-00",
            "24-09-30xx",
            "2024/09/30",
            "",
            "２024-09-30",
        ] {
            assert!(!is_date(bad), "{bad:?}");
        }
    }
}
