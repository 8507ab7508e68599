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
use super::schema::{Kind, SchemaChild, SchemaNode};
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

/// What a purpose lets through from one record, written as JSON: the view
/// [`PurposeView::filter`] builds, byte for byte as `serde_json` would write
/// it, without building it.
#[derive(Debug, Clone, PartialEq)]
pub struct FilteredJson {
    /// The released fields: one JSON object, its keys sorted.
    pub json: Vec<u8>,
    /// As [`Filtered::released`].
    pub released: Vec<String>,
    /// As [`Filtered::redacted`].
    pub redacted: usize,
}

impl PurposeView {
    /// Keeps only what this purpose's rules release from `record`, written
    /// straight as JSON: the same walk, marks and redaction as
    /// [`PurposeView::filter`], without a `Value` or a copy of a string that
    /// holds no NIR. This is what the request path calls.
    pub fn filter_json(&self, record: &Value) -> FilteredJson {
        let mut writer = Writer {
            out: Vec::with_capacity(1024),
            marks: vec![false; self.rules.len()],
            redacted: 0,
        };
        match record {
            Value::Object(fields) => writer.object(&self.root, fields),
            _ => writer.out.extend_from_slice(b"{}"),
        }
        let released = self
            .rules
            .iter()
            .zip(&writer.marks)
            .filter(|(_, marked)| **marked)
            .map(|(rule, _)| rule.path.clone())
            .collect();
        FilteredJson {
            json: writer.out,
            released,
            redacted: writer.redacted,
        }
    }
}

/// What one leaf rule releases of a value, borrowed from the record.
enum Out<'a> {
    /// `null`, a boolean, a number or a string, as it is.
    Scalar(&'a Value),
    Null,
    /// An object or array of objects, limited to the schema's fields.
    Known(Kind, &'a SchemaNode, &'a Value),
    /// A mapped value or a truncated date.
    Text(&'a str),
}

/// The released form of one value under a leaf rule, as [`apply`] gives it.
fn released<'a>(leaf: &'a Leaf, value: &'a Value) -> Option<Out<'a>> {
    match (leaf, value) {
        (Leaf::Scalar, Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_)) => {
            Some(Out::Scalar(value))
        }
        (Leaf::Object(_) | Leaf::Array(_) | Leaf::Map { .. }, Value::Null) => Some(Out::Null),
        (Leaf::Object(schema), Value::Object(_)) => Some(Out::Known(Kind::Object, schema, value)),
        (Leaf::Array(schema), Value::Array(_)) => {
            Some(Out::Known(Kind::ArrayOfObjects, schema, value))
        }
        (Leaf::Map { values, default }, Value::String(s)) => {
            Some(Out::Text(values.get(s.as_str()).unwrap_or(default)))
        }
        (Leaf::Truncate(unit), Value::String(s)) if is_date(s) => {
            let end = match unit {
                Truncation::Year => 4,
                Truncation::Month => 7,
            };
            s.get(..end).map(Out::Text)
        }
        _ => None,
    }
}

/// Whether [`known`] keeps something of `value` for a field of `kind`.
fn keeps(kind: Kind, value: &Value) -> bool {
    match (kind, value) {
        (Kind::Forbidden, _) => false,
        (_, Value::Null) => true,
        (Kind::Object, Value::Object(_)) | (Kind::ArrayOfObjects, Value::Array(_)) => true,
        (Kind::Object | Kind::ArrayOfObjects, _) => false,
        (_, Value::Bool(_) | Value::Number(_) | Value::String(_)) => true,
        (_, Value::Object(_) | Value::Array(_)) => false,
    }
}

/// Writes the released view as `serde_json` writes a `Value`: compact, the
/// keys of each object sorted, every string redacted as [`redact_nirs`]
/// would.
///
/// [`redact_nirs`]: super::redact::redact_nirs
struct Writer {
    out: Vec<u8>,
    marks: Vec<bool>,
    redacted: usize,
}

impl Writer {
    /// The fields of `fields` that `node` releases, as one object.
    fn object(&mut self, node: &Node, fields: &Map<String, Value>) {
        self.out.push(b'{');
        let mut first = true;
        for slot in &node.written {
            let Some(entry) = node.entries.get(slot.entry) else {
                continue;
            };
            let Some(value) = fields.get(&entry.key) else {
                continue;
            };
            if slot.count {
                let Some((index, name)) = &entry.count else {
                    continue;
                };
                let length = match value {
                    Value::Array(items) => items.len(),
                    Value::Null => 0,
                    _ => continue,
                };
                self.key(&mut first, name);
                let _ = serde_json::to_writer(&mut self.out, &length);
                mark(&mut self.marks, *index);
                continue;
            }
            let leaf = entry
                .leaf
                .as_ref()
                .and_then(|(index, leaf)| Some((*index, released(leaf, value)?)));
            let children = entry.children.as_ref().filter(|children| {
                matches!(
                    (children, value),
                    (_, Value::Null)
                        | (Children::Fields(_), Value::Object(_))
                        | (Children::Items(_), Value::Array(_))
                )
            });
            match (children, leaf) {
                // As in `filter`, what the children release replaces the leaf's value.
                (Some(children), leaf) => {
                    if let Some((index, _)) = leaf {
                        mark(&mut self.marks, index);
                    }
                    self.key(&mut first, &entry.key);
                    self.children(children, value);
                    for index in &entry.rules_below {
                        mark(&mut self.marks, *index);
                    }
                }
                (None, Some((index, out))) => {
                    self.key(&mut first, &entry.key);
                    self.out_value(out);
                    mark(&mut self.marks, index);
                }
                (None, None) => {}
            }
        }
        self.out.push(b'}');
    }

    fn children(&mut self, children: &Children, value: &Value) {
        match (children, value) {
            (Children::Fields(next), Value::Object(inner)) => self.object(next, inner),
            (Children::Items(next), Value::Array(items)) => {
                self.out.push(b'[');
                for (i, item) in items.iter().filter_map(Value::as_object).enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.object(next, item);
                }
                self.out.push(b']');
            }
            _ => self.out.extend_from_slice(b"null"),
        }
    }

    fn out_value(&mut self, out: Out<'_>) {
        match out {
            Out::Scalar(value) => self.scalar(value),
            Out::Null => self.out.extend_from_slice(b"null"),
            Out::Known(kind, schema, value) => self.known(kind, schema, value),
            Out::Text(text) => self.string(text),
        }
    }

    /// What [`known`] keeps of `value`; only called when [`keeps`] holds.
    fn known(&mut self, kind: Kind, schema: &SchemaNode, value: &Value) {
        match (kind, value) {
            (Kind::Object, Value::Object(fields)) => self.known_fields(schema, fields),
            (Kind::ArrayOfObjects, Value::Array(items)) => {
                self.out.push(b'[');
                for (i, fields) in items.iter().filter_map(Value::as_object).enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.known_fields(schema, fields);
                }
                self.out.push(b']');
            }
            (_, Value::Object(_) | Value::Array(_)) => self.out.extend_from_slice(b"null"),
            _ => self.scalar(value),
        }
    }

    /// As [`known_fields`], its keys sorted.
    fn known_fields(&mut self, schema: &SchemaNode, fields: &Map<String, Value>) {
        let children = schema.children();
        self.out.push(b'{');
        let mut first = true;
        if children.is_sorted_by(|a, b| a.name <= b.name) {
            for child in children {
                self.known_field(&mut first, child, fields);
            }
        } else {
            let mut sorted: Vec<&SchemaChild> = children.iter().collect();
            sorted.sort_by(|a, b| a.name.cmp(b.name));
            for child in sorted {
                self.known_field(&mut first, child, fields);
            }
        }
        self.out.push(b'}');
    }

    fn known_field(&mut self, first: &mut bool, child: &SchemaChild, fields: &Map<String, Value>) {
        if child.name == NIR {
            return;
        }
        if let Some(value) = fields.get(child.name)
            && keeps(child.kind, value)
        {
            self.key(first, child.name);
            self.known(child.kind, &child.node, value);
        }
    }

    fn scalar(&mut self, value: &Value) {
        match value {
            Value::String(text) => self.string(text),
            Value::Object(_) | Value::Array(_) => self.out.extend_from_slice(b"null"),
            // `null`, booleans and numbers as `serde_json` writes them.
            _ => {
                let _ = serde_json::to_writer(&mut self.out, value);
            }
        }
    }

    /// A released string, each NIR in it redacted.
    fn string(&mut self, text: &str) {
        match super::redact::redact_text(text) {
            Some((redacted, count)) => {
                self.redacted += count;
                escaped(&mut self.out, &redacted);
            }
            None => escaped(&mut self.out, text),
        }
    }

    fn key(&mut self, first: &mut bool, key: &str) {
        if !std::mem::take(first) {
            self.out.push(b',');
        }
        escaped(&mut self.out, key);
        self.out.push(b':');
    }
}

/// `text` as a JSON string, escaped as `serde_json` escapes it.
fn escaped(out: &mut Vec<u8>, text: &str) {
    let _ = serde_json::to_writer(out, text);
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
