//! From the file as written to the compiled policy: schema checks, cross references, the rule trie.
//!
//! Every rule is checked against the record schema and its purpose's other rules;
//! the valid ones are compiled into a trie of path segments whose entries carry
//! the action, so the filter walks the record once and never re-parses a path.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::{Purpose, Role};

use super::file::{RawField, RawPolicy, RawPurpose, RawRole, RawTransform, Source};
use super::schema::{self, FieldSpec, Kind, SchemaNode, Segment};
use super::{Problem, PurposeView, Rule, Transform, Truncation};

/// A role as compiled: the purposes it may declare.
#[derive(Debug, Clone)]
pub(crate) struct RoleDef {
    pub description: String,
    pub purposes: Vec<Purpose>,
}

/// One level of the trie: the keys some rule names at this depth, in name order.
#[derive(Debug, Default)]
pub(crate) struct Node {
    pub entries: Vec<Entry>,
    /// The keys this level may write, sorted as a JSON object of the released
    /// view lists them: each entry's own key, and the key its count writes.
    pub written: Vec<Slot>,
}

/// A key a level of the trie may write: an entry's value, or its count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    /// The entry's index in [`Node::entries`].
    pub entry: usize,
    /// The count the entry's `count` rule writes, rather than its value.
    pub count: bool,
}

impl Node {
    /// Fills [`Node::written`] at every level, once the trie is complete.
    fn seal(&mut self) {
        let mut written: Vec<(&str, Slot)> = Vec::new();
        for (index, entry) in self.entries.iter().enumerate() {
            if entry.leaf.is_some() || entry.children.is_some() {
                written.push((
                    &entry.key,
                    Slot {
                        entry: index,
                        count: false,
                    },
                ));
            }
            if let Some((_, name)) = &entry.count {
                written.push((
                    name,
                    Slot {
                        entry: index,
                        count: true,
                    },
                ));
            }
        }
        written.sort_by(|a, b| a.0.cmp(b.0));
        self.written = written.into_iter().map(|(_, slot)| slot).collect();
        for entry in &mut self.entries {
            if let Some(Children::Fields(next) | Children::Items(next)) = &mut entry.children {
                next.seal();
            }
        }
    }
}

/// What the rules say about one key of an object.
#[derive(Debug)]
pub(crate) struct Entry {
    pub key: String,
    /// The action on the value itself, with its rule's index.
    pub leaf: Option<(usize, Leaf)>,
    /// A `count` rule: its index and the sibling key it writes.
    pub count: Option<(usize, String)>,
    /// Rules that reach deeper, through `.` or `[]`.
    pub children: Option<Children>,
    /// Indexes of the rules reaching deeper, marked released when this level is.
    pub rules_below: Vec<usize>,
}

#[derive(Debug)]
pub(crate) enum Children {
    /// `key.x`: the value is an object.
    Fields(Node),
    /// `key[].x`: the value is an array of objects.
    Items(Node),
}

#[derive(Debug)]
pub(crate) enum Leaf {
    /// A scalar field released as is (objects and arrays there are refused).
    Scalar,
    /// An object released whole: the fields of the schema below it, never unknown ones.
    Object(&'static SchemaNode),
    /// An array of objects released whole, each item limited to the schema's fields.
    Array(&'static SchemaNode),
    /// A string replaced through a table, with a default.
    Map {
        values: BTreeMap<String, String>,
        default: String,
    },
    /// A date cut to its year or month.
    Truncate(Truncation),
}

/// Compiles the roles and purposes, pushing a problem for every rule that does not hold.
pub(crate) fn compile(
    src: &Source<'_>,
    raw: RawPolicy,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> (BTreeMap<Role, RoleDef>, BTreeMap<Purpose, PurposeView>) {
    let defined: BTreeSet<&str> = raw.declared_purposes.iter().map(String::as_str).collect();
    let mut used = BTreeSet::new();
    let mut roles = BTreeMap::new();
    for role in &raw.roles {
        if let Some((name, def)) = compile_role(src, role, &defined, &mut used, problems, warnings)
        {
            roles.insert(name, def);
        }
    }
    let mut purposes = BTreeMap::new();
    for purpose in raw.purposes {
        if !used.contains(purpose.name.as_str()) {
            warnings.push(src_problem(
                src,
                purpose.line,
                &purpose.key,
                "no role may use this purpose",
            ));
        }
        if let Some(view) = compile_purpose(src, purpose, problems, warnings) {
            purposes.insert(view.purpose().clone(), view);
        }
    }
    (roles, purposes)
}

fn src_problem(src: &Source<'_>, line: usize, key: &str, message: impl Into<String>) -> Problem {
    Problem {
        origin: src.origin.to_owned(),
        line: Some(line),
        key: key.to_owned(),
        message: message.into(),
    }
}

fn compile_role(
    src: &Source<'_>,
    raw: &RawRole,
    defined: &BTreeSet<&str>,
    used: &mut BTreeSet<String>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<(Role, RoleDef)> {
    let name = Role::parse(&raw.name);
    if let Err(err) = &name {
        problems.push(src_problem(
            src,
            raw.line,
            &raw.key,
            format!("invalid role name: {err}"),
        ));
    }
    let mut purposes: Vec<Purpose> = Vec::with_capacity(raw.purposes.len());
    for (purpose, key, line) in &raw.purposes {
        if !defined.contains(purpose.as_str()) {
            problems.push(src_problem(
                src,
                *line,
                key,
                format!(
                    "role `{}` names purpose `{purpose}`, which the policy does not define",
                    raw.name
                ),
            ));
            continue;
        }
        used.insert(purpose.clone());
        match Purpose::parse(purpose) {
            Ok(p) if purposes.contains(&p) => {
                problems.push(src_problem(
                    src,
                    *line,
                    key,
                    format!("purpose `{purpose}` is listed twice"),
                ));
            }
            Ok(p) => purposes.push(p),
            // The purpose's own definition reports the bad name.
            Err(_) => {}
        }
    }
    if raw.purposes.is_empty() {
        warnings.push(src_problem(
            src,
            raw.line,
            &raw.key,
            "this role may use no purpose",
        ));
    }
    purposes.sort();
    Some((
        name.ok()?,
        RoleDef {
            description: raw.description.clone(),
            purposes,
        },
    ))
}

/// A rule that passed its own checks, waiting for the checks against its siblings.
struct Checked<'a> {
    raw: &'a RawField,
    spec: &'static FieldSpec,
    transform: Transform,
}

fn compile_purpose(
    src: &Source<'_>,
    raw: RawPurpose,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<PurposeView> {
    let name = Purpose::parse(&raw.name);
    if let Err(err) = &name {
        problems.push(src_problem(
            src,
            raw.line,
            &raw.key,
            format!("invalid purpose name: {err}"),
        ));
    }
    if raw.fields.is_empty() {
        warnings.push(src_problem(
            src,
            raw.line,
            &raw.key,
            "this purpose releases no field",
        ));
    }
    let before = problems.len();
    let mut checked: Vec<Checked<'_>> = Vec::with_capacity(raw.fields.len());
    for field in &raw.fields {
        let Some(rule) = check_rule(src, field, problems, warnings) else {
            continue;
        };
        let same =
            |c: &&Checked<'_>| schema::normalized(&c.raw.path) == schema::normalized(&field.path);
        if let Some(first) = checked.iter().find(same) {
            problems.push(src_problem(
                src,
                field.line,
                &field.key,
                format!(
                    "duplicate path `{}`, already ruled at {}",
                    field.path, first.raw.key
                ),
            ));
            continue;
        }
        checked.push(rule);
    }
    check_overlaps(src, &checked, problems);
    check_count_names(src, &checked, problems);
    if problems.len() > before {
        return None;
    }
    let mut rules: Vec<Rule> = checked
        .into_iter()
        .map(|c| Rule {
            path: c.raw.path.clone(),
            kind: c.spec.kind,
            transform: c.transform,
        })
        .collect();
    rules.sort_by(|a, b| a.path.cmp(&b.path));
    let mut root = Node::default();
    for (index, rule) in rules.iter().enumerate() {
        // Paths were split once already; a failure here cannot happen and would only drop the rule.
        if let Ok(segments) = schema::split(&rule.path) {
            insert(&mut root, &segments, index, rule);
        }
    }
    root.seal();
    Some(PurposeView {
        purpose: name.ok()?,
        description: raw.description,
        rules,
        root,
    })
}

fn check_rule<'a>(
    src: &Source<'_>,
    field: &'a RawField,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<Checked<'a>> {
    let fail = |problems: &mut Vec<Problem>, message: String| {
        problems.push(src_problem(src, field.line, &field.key, message));
        None
    };
    let spec = match schema::resolve(&field.path) {
        Ok(spec) => spec,
        Err(message) => return fail(problems, message),
    };
    let path = &field.path;
    if spec.kind == Kind::Forbidden {
        return fail(
            problems,
            format!("`{path}` is never releasable: the NIR is not released to anyone"),
        );
    }
    let transform = match &field.transform {
        RawTransform::None => Transform::None,
        RawTransform::Count(name) => {
            if spec.kind != Kind::ArrayOfObjects {
                return fail(
                    problems,
                    format!(
                        "`count` applies to arrays, and `{path}` is {}",
                        a(spec.kind)
                    ),
                );
            }
            let snake = name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !snake || name.len() > 64 {
                return fail(
                    problems,
                    format!("count name `{name}` must be 1 to 64 characters of [a-z0-9_]"),
                );
            }
            Transform::Count { name: name.clone() }
        }
        RawTransform::Map(table) => {
            if !matches!(spec.kind, Kind::Text | Kind::Enum) {
                return fail(
                    problems,
                    format!(
                        "`map` applies to text and enumeration fields, and `{path}` is {}",
                        a(spec.kind)
                    ),
                );
            }
            let mut values = table.clone();
            let default = values.remove("*").unwrap_or_default();
            for value in values
                .keys()
                .filter(|v| !spec.values.is_empty() && !spec.values.contains(&v.as_str()))
            {
                warnings.push(src_problem(
                    src,
                    field.line,
                    &field.key,
                    format!("map key `{value}` is not a known value of `{path}`"),
                ));
            }
            Transform::Map { values, default }
        }
        RawTransform::Truncate(unit) => {
            let unit = match unit.as_str() {
                "year" => Truncation::Year,
                "month" => Truncation::Month,
                other => {
                    return fail(
                        problems,
                        format!("truncate is \"year\" or \"month\", not `{other}`"),
                    );
                }
            };
            if spec.kind != Kind::Date {
                return fail(
                    problems,
                    format!(
                        "`truncate` applies to YYYY-MM-DD dates, and `{path}` is {}",
                        a(spec.kind)
                    ),
                );
            }
            Transform::Truncate(unit)
        }
    };
    Some(Checked {
        raw: field,
        spec,
        transform,
    })
}

/// A rule inside a subtree another rule releases whole would be bypassed (a `map`
/// or `truncate` there would never apply), so the pair is refused.
fn check_overlaps(src: &Source<'_>, checked: &[Checked<'_>], problems: &mut Vec<Problem>) {
    for whole in checked
        .iter()
        .filter(|c| c.spec.kind.is_container() && matches!(c.transform, Transform::None))
    {
        let prefix = schema::normalized(&whole.raw.path);
        for inner in checked {
            let rest = schema::normalized(&inner.raw.path).strip_prefix(prefix);
            if rest.is_some_and(|rest| rest.starts_with('.') || rest.starts_with("[].")) {
                problems.push(src_problem(
                    src,
                    inner.raw.line,
                    &inner.raw.key,
                    format!(
                        "`{}` lies inside `{prefix}`, which this purpose already releases whole ({}); keep one of them",
                        inner.raw.path, whole.raw.key
                    ),
                ));
            }
        }
    }
}

/// A count writes a new key beside its array; it must not collide with a record
/// field or another count, and can never be called `nir`.
fn check_count_names(src: &Source<'_>, checked: &[Checked<'_>], problems: &mut Vec<Problem>) {
    let mut written: Vec<String> = Vec::new();
    for c in checked {
        let Transform::Count { name } = &c.transform else {
            continue;
        };
        let parent = schema::normalized(&c.raw.path)
            .rsplit_once('.')
            .map(|(parent, _)| parent);
        let target = match parent {
            Some(parent) => format!("{parent}.{name}"),
            None => name.clone(),
        };
        let message = if name == "nir" {
            Some("a count cannot be named `nir`".to_owned())
        } else if schema::lookup(&target).is_some() {
            Some(format!(
                "count name `{name}` collides with the record field `{target}`"
            ))
        } else if written.contains(&target) {
            Some(format!(
                "count name `{name}` is already written by another count beside it"
            ))
        } else {
            None
        };
        match message {
            Some(message) => problems.push(src_problem(src, c.raw.line, &c.raw.key, message)),
            None => written.push(target),
        }
    }
}

fn insert(node: &mut Node, segments: &[Segment<'_>], index: usize, rule: &Rule) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    let position = match node.entries.iter().position(|e| e.key == first.name) {
        Some(position) => position,
        None => {
            node.entries.push(Entry {
                key: first.name.to_owned(),
                leaf: None,
                count: None,
                children: None,
                rules_below: Vec::new(),
            });
            node.entries.len() - 1
        }
    };
    let Some(entry) = node.entries.get_mut(position) else {
        return;
    };
    if rest.is_empty() {
        match &rule.transform {
            Transform::Count { name } => entry.count = Some((index, name.clone())),
            _ => entry.leaf = Some((index, leaf_for(rule))),
        }
        return;
    }
    entry.rules_below.push(index);
    let children = entry.children.get_or_insert_with(|| {
        if first.items {
            Children::Items(Node::default())
        } else {
            Children::Fields(Node::default())
        }
    });
    let (Children::Fields(next) | Children::Items(next)) = children;
    insert(next, rest, index, rule);
}

fn leaf_for(rule: &Rule) -> Leaf {
    match &rule.transform {
        Transform::Map { values, default } => Leaf::Map {
            values: values.clone(),
            default: default.clone(),
        },
        Transform::Truncate(unit) => Leaf::Truncate(*unit),
        Transform::None | Transform::Count { .. } => match rule.kind {
            Kind::Object => Leaf::Object(schema::subtree(&rule.path)),
            Kind::ArrayOfObjects => Leaf::Array(schema::subtree(&rule.path)),
            _ => Leaf::Scalar,
        },
    }
}

/// A kind's name with its article, for "`x` is an object".
fn a(kind: Kind) -> String {
    let name = kind.name();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}
