//! The shape of `config/policy.toml`: a spanned walk that collects every shape problem.
//!
//! The file is parsed into toml's spanned tree ([`DeTable`]) and walked by hand
//! rather than through `serde`, because serde stops at the first error and a
//! security team fixing a policy wants every problem, each with its line.
//! Semantic checks (schema, transforms, cross references) live in `compile`.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Problem;

/// The text being read, to turn byte spans into line numbers.
pub(crate) struct Source<'a> {
    pub origin: &'a str,
    pub text: &'a str,
}

impl Source<'_> {
    /// The 1-based line of a byte offset.
    pub fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        let before = self.text.get(..end).unwrap_or("");
        before.bytes().filter(|b| *b == b'\n').count() + 1
    }

    pub fn problem(
        &self,
        span: Option<&Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            origin: self.origin.to_owned(),
            line: span.map(|s| self.line(s)),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// Parses the text as a TOML document, or reports every syntax error found.
    pub fn parse(&self) -> Result<Spanned<DeTable<'_>>, Vec<Problem>> {
        let (doc, errors) = DeTable::parse_recoverable(self.text);
        if errors.is_empty() {
            return Ok(doc);
        }
        Err(errors
            .iter()
            .map(|err| {
                self.problem(
                    err.span().as_ref(),
                    "",
                    format!("invalid TOML: {}", err.message()),
                )
            })
            .collect())
    }
}

/// The TOML name of a value's type, for "expected X, found Y" messages.
pub(crate) fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Joins a parent key and a child key, quoting the child when it is not a bare key.
pub(crate) fn join_key(parent: &str, child: &str) -> String {
    let bare = !child.is_empty()
        && child
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let child = if bare {
        child.to_owned()
    } else {
        format!("{child:?}")
    };
    if parent.is_empty() {
        child
    } else {
        format!("{parent}.{child}")
    }
}

/// A table being read: hands out known keys and reports the unknown and missing ones.
pub(crate) struct TableReader<'s, 't, 'i> {
    src: &'s Source<'s>,
    key: String,
    span: Range<usize>,
    table: &'t DeTable<'i>,
    seen: Vec<&'static str>,
}

impl<'s, 't, 'i> TableReader<'s, 't, 'i> {
    pub fn new(
        src: &'s Source<'s>,
        key: String,
        span: Range<usize>,
        table: &'t DeTable<'i>,
    ) -> Self {
        TableReader {
            src,
            key,
            span,
            table,
            seen: Vec::new(),
        }
    }

    /// Reads `value` as a table, or reports what it is instead.
    pub fn of(
        src: &'s Source<'s>,
        key: String,
        value: &'t Spanned<DeValue<'i>>,
        problems: &mut Vec<Problem>,
    ) -> Option<Self> {
        match value.get_ref() {
            DeValue::Table(table) => Some(Self::new(src, key, value.span(), table)),
            other => {
                problems.push(src.problem(
                    Some(&value.span()),
                    &key,
                    format!("expected a table, found {}", type_name(other)),
                ));
                None
            }
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn child_key(&self, name: &str) -> String {
        join_key(&self.key, name)
    }

    /// The value under `name`, if present.
    pub fn optional(&mut self, name: &'static str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.seen.push(name);
        self.table.get(name)
    }

    /// The value under `name`, reporting its absence.
    pub fn required(
        &mut self,
        name: &'static str,
        problems: &mut Vec<Problem>,
    ) -> Option<&'t Spanned<DeValue<'i>>> {
        let value = self.optional(name);
        if value.is_none() {
            // The root table has no span of its own: report the whole file.
            let span = (!self.key.is_empty()).then_some(&self.span);
            problems.push(
                self.src
                    .problem(span, &self.key, format!("missing key `{name}`")),
            );
        }
        value
    }

    /// A required non-empty string.
    pub fn required_text(
        &mut self,
        name: &'static str,
        problems: &mut Vec<Problem>,
    ) -> Option<(String, usize)> {
        let value = self.required(name, problems)?;
        text_of(self.src, &self.child_key(name), value, problems)
    }

    /// Reports every key that was not asked for.
    pub fn deny_unknown(self, problems: &mut Vec<Problem>) {
        for (key, _) in self.table.iter() {
            if !self.seen.contains(&key.get_ref().as_ref()) {
                let expected = self
                    .seen
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                problems.push(self.src.problem(
                    Some(&key.span()),
                    &join_key(&self.key, key.get_ref()),
                    format!("unknown key (expected one of {expected})"),
                ));
            }
        }
    }

    /// Every entry, for tables whose keys are names chosen by the user.
    pub fn entries(
        &self,
    ) -> impl Iterator<
        Item = (
            &'t Spanned<std::borrow::Cow<'i, str>>,
            &'t Spanned<DeValue<'i>>,
        ),
    > {
        self.table.iter()
    }
}

/// A non-empty string, with its line.
pub(crate) fn text_of(
    src: &Source<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> Option<(String, usize)> {
    match value.get_ref() {
        DeValue::String(s) if !s.trim().is_empty() => {
            Some((s.to_string(), src.line(&value.span())))
        }
        DeValue::String(_) => {
            problems.push(src.problem(Some(&value.span()), key, "must not be empty"));
            None
        }
        other => {
            problems.push(src.problem(
                Some(&value.span()),
                key,
                format!("expected a string, found {}", type_name(other)),
            ));
            None
        }
    }
}

/// An array of strings, each with its key and line; bad items are reported and skipped.
pub(crate) fn text_list(
    src: &Source<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> Vec<(String, String, usize)> {
    let DeValue::Array(items) = value.get_ref() else {
        problems.push(src.problem(
            Some(&value.span()),
            key,
            format!(
                "expected an array of strings, found {}",
                type_name(value.get_ref())
            ),
        ));
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let item_key = format!("{key}[{i}]");
            text_of(src, &item_key, item, problems).map(|(text, line)| (text, item_key, line))
        })
        .collect()
}

/// A role as written in the file.
pub(crate) struct RawRole {
    pub name: String,
    pub key: String,
    pub line: usize,
    pub description: String,
    /// Purpose names, each with its key and line.
    pub purposes: Vec<(String, String, usize)>,
}

/// A purpose as written in the file.
pub(crate) struct RawPurpose {
    pub name: String,
    pub key: String,
    pub line: usize,
    pub description: String,
    pub fields: Vec<RawField>,
}

/// A transform as written, before it is checked against the field it applies to.
pub(crate) enum RawTransform {
    None,
    Count(String),
    /// Value -> replacement; always holds the `"*"` default.
    Map(BTreeMap<String, String>),
    Truncate(String),
}

/// One entry of a purpose's `fields` list.
pub(crate) struct RawField {
    pub key: String,
    pub line: usize,
    pub path: String,
    pub transform: RawTransform,
}

/// The whole file as written, keeping only the parts whose shape was right.
pub(crate) struct RawPolicy {
    pub roles: Vec<RawRole>,
    pub purposes: Vec<RawPurpose>,
    /// Every name under `[purposes]`, including those whose body has problems, so
    /// that a role naming a malformed purpose is not also told the purpose is undefined.
    pub declared_purposes: Vec<String>,
}

/// Reads the file's shape, pushing a problem for every key or value out of place.
pub(crate) fn read(src: &Source<'_>, problems: &mut Vec<Problem>) -> Option<RawPolicy> {
    let doc = match src.parse() {
        Ok(doc) => doc,
        Err(found) => {
            problems.extend(found);
            return None;
        }
    };
    let mut root = TableReader::new(src, String::new(), 0..0, doc.get_ref());
    let roles = match root.required("roles", problems) {
        Some(value) => read_named(src, "roles", value, problems, read_role),
        None => Vec::new(),
    };
    let (purposes, declared_purposes) = match root.required("purposes", problems) {
        Some(value) => (
            read_named(src, "purposes", value, problems, read_purpose),
            names_of(value),
        ),
        None => (Vec::new(), Vec::new()),
    };
    root.deny_unknown(problems);
    Some(RawPolicy {
        roles,
        purposes,
        declared_purposes,
    })
}

/// The keys of a table value (none for any other value).
fn names_of(value: &Spanned<DeValue<'_>>) -> Vec<String> {
    match value.get_ref() {
        DeValue::Table(table) => table.iter().map(|(k, _)| k.get_ref().to_string()).collect(),
        _ => Vec::new(),
    }
}

/// Reads a table of user-named tables (`[roles.x]`, `[purposes.y]`).
fn read_named<'s, T>(
    src: &'s Source<'s>,
    section: &str,
    value: &Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
    read_one: impl Fn(
        &'s Source<'s>,
        &str,
        usize,
        TableReader<'s, '_, '_>,
        &mut Vec<Problem>,
    ) -> Option<T>,
) -> Vec<T> {
    let Some(section_table) = TableReader::of(src, section.to_owned(), value, problems) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, body) in section_table.entries() {
        let key = join_key(section, name.get_ref());
        let line = src.line(&name.span());
        if let Some(reader) = TableReader::of(src, key, body, problems) {
            out.extend(read_one(src, name.get_ref(), line, reader, problems));
        }
    }
    out
}

fn read_role(
    src: &Source<'_>,
    name: &str,
    line: usize,
    mut table: TableReader<'_, '_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<RawRole> {
    let description = table.required_text("description", problems);
    let purposes = table
        .required("purposes", problems)
        .map(|value| text_list(src, &table.child_key("purposes"), value, problems));
    let key = table.key().to_owned();
    table.deny_unknown(problems);
    Some(RawRole {
        name: name.to_owned(),
        key,
        line,
        description: description?.0,
        purposes: purposes?,
    })
}

fn read_purpose(
    src: &Source<'_>,
    name: &str,
    line: usize,
    mut table: TableReader<'_, '_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<RawPurpose> {
    let description = table.required_text("description", problems);
    let fields_key = table.child_key("fields");
    let fields = table
        .required("fields", problems)
        .map(|value| match value.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    read_field(src, format!("{fields_key}[{i}]"), item, problems)
                })
                .collect::<Vec<_>>(),
            other => {
                problems.push(src.problem(
                    Some(&value.span()),
                    &fields_key,
                    format!(
                        "expected an array of field rules, found {}",
                        type_name(other)
                    ),
                ));
                Vec::new()
            }
        });
    let key = table.key().to_owned();
    table.deny_unknown(problems);
    Some(RawPurpose {
        name: name.to_owned(),
        key,
        line,
        description: description?.0,
        fields: fields?,
    })
}

fn read_field(
    src: &Source<'_>,
    key: String,
    item: &Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> Option<RawField> {
    let line = src.line(&item.span());
    if let DeValue::String(path) = item.get_ref() {
        return Some(RawField {
            key,
            line,
            path: path.to_string(),
            transform: RawTransform::None,
        });
    }
    let DeValue::Table(_) = item.get_ref() else {
        problems.push(src.problem(
            Some(&item.span()),
            &key,
            format!(
                "expected a path string or an inline table {{ path = \"...\", ... }}, found {}",
                type_name(item.get_ref())
            ),
        ));
        return None;
    };
    let mut table = TableReader::of(src, key.clone(), item, problems)?;
    let path = table.required_text("path", problems);
    let mut transforms = Vec::new();
    if let Some(value) = table.optional("count") {
        transforms.push(
            text_of(src, &table.child_key("count"), value, problems)
                .map(|(name, _)| RawTransform::Count(name)),
        );
    }
    if let Some(value) = table.optional("truncate") {
        transforms.push(
            text_of(src, &table.child_key("truncate"), value, problems)
                .map(|(unit, _)| RawTransform::Truncate(unit)),
        );
    }
    if let Some(value) = table.optional("map") {
        transforms.push(read_map(src, &table.child_key("map"), value, problems));
    }
    table.deny_unknown(problems);
    if transforms.len() > 1 {
        problems.push(src.problem(
            Some(&item.span()),
            &key,
            "a rule carries at most one transform (`count`, `map` or `truncate`)",
        ));
        return None;
    }
    let transform = match transforms.pop() {
        None => RawTransform::None,
        Some(transform) => transform?,
    };
    Some(RawField {
        key,
        line,
        path: path?.0,
        transform,
    })
}

fn read_map(
    src: &Source<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> Option<RawTransform> {
    let DeValue::Table(entries) = value.get_ref() else {
        problems.push(src.problem(
            Some(&value.span()),
            key,
            format!(
                "expected a table of value = \"replacement\", found {}",
                type_name(value.get_ref())
            ),
        ));
        return None;
    };
    let mut table = BTreeMap::new();
    let mut ok = true;
    for (from, to) in entries.iter() {
        let entry_key = join_key(key, from.get_ref());
        match text_of(src, &entry_key, to, problems) {
            Some((to, _)) => {
                table.insert(from.get_ref().to_string(), to);
            }
            None => ok = false,
        }
    }
    if entries.get("*").is_none() {
        problems.push(src.problem(
            Some(&value.span()),
            key,
            "a map needs a `\"*\"` entry: values the map does not name must still be replaced, never passed through",
        ));
        ok = false;
    }
    ok.then_some(RawTransform::Map(table))
}
