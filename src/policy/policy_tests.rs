//! Policy tests (`config/policy-tests/*.toml`): cases run against a compiled policy.
//!
//! A case names a role, a purpose, a record (a JSON fixture beside the tests or
//! an inline one) and what to expect: the exact `data`, paths that must or must
//! not appear, or a refusal. Malformed test files are reported like policy
//! problems (every one, with its line); failing cases go in the [`TestReport`].
//! Failure messages name paths and types, never the record's values, which may
//! be personal data.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use toml::Spanned;
use toml::de::DeValue;

use crate::domain::{Purpose, Role};

use super::file::{Source, TableReader, join_key, text_list, text_of, type_name};
use super::{Policy, PolicyError, Problem, Refusal, sort_problems};

/// The outcome of a policy test run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    /// Test files read.
    pub files: usize,
    /// Cases run.
    pub cases: usize,
    pub failures: Vec<TestFailure>,
}

impl TestReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// One failed expectation of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestFailure {
    pub file: String,
    pub case: String,
    /// The output path that differs, when the failure is about one.
    pub path: Option<String>,
    pub message: String,
}

impl fmt::Display for TestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: case `{}`: ", self.file, self.case)?;
        if let Some(path) = &self.path {
            write!(f, "`{path}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} policy test case(s) in {} file(s): ",
            self.cases, self.files
        )?;
        if self.failures.is_empty() {
            return f.write_str("all passed");
        }
        write!(f, "{} failure(s)", self.failures.len())?;
        for failure in &self.failures {
            write!(f, "\n{failure}")?;
        }
        Ok(())
    }
}

/// What a case expects.
enum Expect {
    Refusal(Refusal),
    Output {
        data: Option<Value>,
        must_contain: Vec<String>,
        must_not_contain: Vec<String>,
    },
}

struct Case {
    name: String,
    role: Role,
    purpose: Purpose,
    record: Option<Value>,
    expect: Expect,
}

/// Failures reported per case at most, so one broken case does not flood the report.
const MAX_FAILURES_PER_CASE: usize = 20;

/// Runs every `*.toml` file of `dir` (sorted by name) against `policy`.
///
/// `Err` lists every problem in the test files themselves (bad keys, missing
/// fixtures, invalid JSON); `Ok` holds the report, whose failures are the cases
/// the policy does not satisfy.
pub fn run_policy_tests(policy: &Policy, dir: &Path) -> Result<TestReport, PolicyError> {
    let origin = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|err| {
        PolicyError::single(
            &origin,
            format!("cannot read the policy tests directory: {err}"),
        )
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml") && path.is_file())
        .collect();
    files.sort();

    let mut problems = Vec::new();
    let mut loaded = Vec::new();
    for path in &files {
        let file_origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let src = Source {
                    origin: &file_origin,
                    text: &text,
                };
                loaded.push((file_origin.clone(), read_cases(&src, dir, &mut problems)));
            }
            Err(err) => problems.push(Problem {
                origin: file_origin,
                line: None,
                key: String::new(),
                message: format!("cannot read the test file: {err}"),
            }),
        }
    }
    if !problems.is_empty() {
        sort_problems(&mut problems);
        return Err(PolicyError { problems });
    }

    let mut report = TestReport {
        files: files.len(),
        ..TestReport::default()
    };
    for (file, cases) in loaded {
        for case in cases {
            report.cases += 1;
            let mut failures = Vec::new();
            run_case(policy, &case, &mut failures);
            report
                .failures
                .extend(
                    failures
                        .into_iter()
                        .take(MAX_FAILURES_PER_CASE)
                        .map(|(path, message)| TestFailure {
                            file: file.clone(),
                            case: case.name.clone(),
                            path,
                            message,
                        }),
                );
        }
    }
    Ok(report)
}

fn run_case(policy: &Policy, case: &Case, failures: &mut Vec<(Option<String>, String)>) {
    let outcome = policy.authorize(&case.role, &case.purpose);
    match (&case.expect, outcome) {
        (Expect::Refusal(expected), Ok(_)) => {
            failures.push((
                None,
                format!("expected refusal `{expected}`, but the purpose was permitted"),
            ));
        }
        (Expect::Refusal(expected), Err(actual)) if *expected != actual => {
            failures.push((
                None,
                format!("expected refusal `{expected}`, got `{actual}`"),
            ));
        }
        (Expect::Refusal(_), Err(_)) => {}
        (Expect::Output { .. }, Err(refusal)) => {
            failures.push((
                None,
                format!("expected data, but the pair was refused: `{refusal}`"),
            ));
        }
        (
            Expect::Output {
                data,
                must_contain,
                must_not_contain,
            },
            Ok(view),
        ) => {
            let record = case.record.as_ref().unwrap_or(&Value::Null);
            let output = view.filter(record).data;
            if let Some(expected) = data {
                diff(expected, &output, &mut String::new(), failures);
            }
            for path in must_contain {
                if !contains(&output, path) {
                    failures.push((
                        Some(path.clone()),
                        "must be in the output, and is not".to_owned(),
                    ));
                }
            }
            for path in must_not_contain {
                if contains(&output, path) {
                    failures.push((
                        Some(path.clone()),
                        "must not be in the output, and is".to_owned(),
                    ));
                }
            }
        }
    }
}

/// Whether some value sits at `path` (`a.b`, `a[].b`; a trailing `[]` asks for at least one item).
fn contains(output: &Value, path: &str) -> bool {
    let mut current: Vec<&Value> = vec![output];
    for segment in path.split('.') {
        let (name, items) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        let mut next = Vec::new();
        for value in current {
            let Some(found) = value.as_object().and_then(|fields| fields.get(name)) else {
                continue;
            };
            if items {
                if let Value::Array(elements) = found {
                    next.extend(elements.iter());
                }
            } else {
                next.push(found);
            }
        }
        current = next;
    }
    !current.is_empty()
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Compares expected and actual output, naming each differing path; string values are never quoted.
fn diff(
    expected: &Value,
    actual: &Value,
    path: &mut String,
    failures: &mut Vec<(Option<String>, String)>,
) {
    let here = |path: &str| {
        Some(if path.is_empty() {
            "data".to_owned()
        } else {
            path.to_owned()
        })
    };
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, want_value) in want {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                match got.get(key) {
                    Some(got_value) => diff(want_value, got_value, path, failures),
                    None => failures.push((
                        here(path),
                        "expected in the output, but not released".to_owned(),
                    )),
                }
                path.truncate(len);
            }
            for key in got.keys().filter(|key| !want.contains_key(key.as_str())) {
                let full = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                failures.push((Some(full), "released, but not expected".to_owned()));
            }
        }
        (Value::Array(want), Value::Array(got)) => {
            if want.len() != got.len() {
                failures.push((
                    here(path),
                    format!("expected {} item(s), found {}", want.len(), got.len()),
                ));
            }
            for (i, (want_item, got_item)) in want.iter().zip(got).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                diff(want_item, got_item, path, failures);
                path.truncate(len);
            }
        }
        (want, got) if want == got => {}
        (want, got) if json_type(want) == json_type(got) => {
            let kind = json_type(want)
                .trim_start_matches("an ")
                .trim_start_matches("a ");
            failures.push((here(path), format!("the {kind} differs (values not shown)")));
        }
        (want, got) => failures.push((
            here(path),
            format!("expected {}, found {}", json_type(want), json_type(got)),
        )),
    }
}

fn read_cases(src: &Source<'_>, dir: &Path, problems: &mut Vec<Problem>) -> Vec<Case> {
    let doc = match src.parse() {
        Ok(doc) => doc,
        Err(found) => {
            problems.extend(found);
            return Vec::new();
        }
    };
    let mut root = TableReader::new(src, String::new(), 0..0, doc.get_ref());
    let mut cases = Vec::new();
    if let Some(value) = root.required("case", problems) {
        match value.get_ref() {
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(case) = read_case(src, dir, format!("case[{i}]"), item, problems) {
                        if cases.iter().any(|c: &Case| c.name == case.name) {
                            problems.push(src.problem(
                                Some(&item.span()),
                                &format!("case[{i}]"),
                                format!("duplicate case name `{}`", case.name),
                            ));
                        }
                        cases.push(case);
                    }
                }
            }
            other => problems.push(src.problem(
                Some(&value.span()),
                "case",
                format!("expected [[case]] tables, found {}", type_name(other)),
            )),
        }
    }
    root.deny_unknown(problems);
    cases
}

fn read_case(
    src: &Source<'_>,
    dir: &Path,
    key: String,
    item: &Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> Option<Case> {
    let mut table = TableReader::of(src, key.clone(), item, problems)?;
    let before = problems.len();
    let name = table.required_text("name", problems).map(|(name, _)| name);
    let role = table
        .required_text("role", problems)
        .and_then(|(role, line)| {
            Role::parse(&role)
                .map_err(|err| {
                    problems.push(problem_at(
                        src,
                        line,
                        &table.child_key("role"),
                        err.to_string(),
                    ))
                })
                .ok()
        });
    let purpose = table
        .required_text("purpose", problems)
        .and_then(|(purpose, line)| {
            Purpose::parse(&purpose)
                .map_err(|err| {
                    problems.push(problem_at(
                        src,
                        line,
                        &table.child_key("purpose"),
                        err.to_string(),
                    ))
                })
                .ok()
        });
    let record_file = table.optional("record");
    let record_inline = table.optional("record_inline");
    let record = match (record_file, record_inline) {
        (Some(_), Some(value)) => {
            problems.push(src.problem(
                Some(&value.span()),
                &key,
                "give `record` or `record_inline`, not both",
            ));
            None
        }
        (Some(value), None) => read_fixture(src, dir, &table.child_key("record"), value, problems),
        (None, Some(value)) => {
            json_document(src, &table.child_key("record_inline"), value, problems)
        }
        (None, None) => None,
    };
    let data = table
        .optional("expect_data")
        .and_then(|value| json_document(src, &table.child_key("expect_data"), value, problems));
    let list =
        |table: &mut TableReader<'_, '_, '_>, name: &'static str, problems: &mut Vec<Problem>| {
            let key = table.child_key(name);
            table
                .optional(name)
                .map(|value| text_list(src, &key, value, problems))
                .unwrap_or_default()
        };
    let must_contain: Vec<String> = list(&mut table, "must_contain", problems)
        .into_iter()
        .map(|(p, _, _)| p)
        .collect();
    let must_not_contain: Vec<String> = list(&mut table, "must_not_contain", problems)
        .into_iter()
        .map(|(p, _, _)| p)
        .collect();
    let refusal_value = table.optional("expect_refusal");
    let refusal = refusal_value.and_then(|value| {
        let (code, line) = text_of(src, &table.child_key("expect_refusal"), value, problems)?;
        let refusal = Refusal::from_code(&code);
        if refusal.is_none() {
            problems.push(problem_at(
                src,
                line,
                &table.child_key("expect_refusal"),
                "expected one of \"purpose-not-permitted\", \"unknown-purpose\", \"unknown-role\"",
            ));
        }
        refusal
    });
    let has_output_checks =
        data.is_some() || !must_contain.is_empty() || !must_not_contain.is_empty();
    let has_record = record_file.is_some() || record_inline.is_some();
    let span = Some(item.span());
    let expect = match refusal {
        Some(_) if has_output_checks => {
            problems.push(src.problem(
                span.as_ref(),
                &key,
                "`expect_refusal` cannot be combined with output expectations",
            ));
            None
        }
        Some(refusal) => Some(Expect::Refusal(refusal)),
        // An `expect_refusal` that did not parse is already reported.
        None if refusal_value.is_some() => None,
        None if !has_output_checks => {
            problems.push(src.problem(
                span.as_ref(),
                &key,
                "a case needs `expect_data`, `must_contain`, `must_not_contain` or `expect_refusal`",
            ));
            None
        }
        None if !has_record => {
            problems.push(src.problem(
                span.as_ref(),
                &key,
                "a case checking output needs `record` or `record_inline`",
            ));
            None
        }
        None => Some(Expect::Output {
            data,
            must_contain,
            must_not_contain,
        }),
    };
    table.deny_unknown(problems);
    if problems.len() > before {
        return None;
    }
    Some(Case {
        name: name?,
        role: role?,
        purpose: purpose?,
        record,
        expect: expect?,
    })
}

fn problem_at(src: &Source<'_>, line: usize, key: &str, message: impl Into<String>) -> Problem {
    Problem {
        origin: src.origin.to_owned(),
        line: Some(line),
        key: key.to_owned(),
        message: message.into(),
    }
}

/// A JSON fixture file, relative to the tests directory.
fn read_fixture(
    src: &Source<'_>,
    dir: &Path,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> Option<Value> {
    let (relative, line) = text_of(src, key, value, problems)?;
    let path = dir.join(&relative);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) => {
            problems.push(problem_at(
                src,
                line,
                key,
                format!("cannot read fixture `{relative}`: {err}"),
            ));
            return None;
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(value) => Some(value),
        Err(err) => {
            problems.push(problem_at(
                src,
                line,
                key,
                format!("fixture `{relative}` is not valid JSON: {err}"),
            ));
            None
        }
    }
}

/// A JSON object given either as a TOML table or, since TOML has no null, as a string of JSON.
fn json_document(
    src: &Source<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> Option<Value> {
    let parsed = match value.get_ref() {
        DeValue::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(parsed) => parsed,
            Err(err) => {
                problems.push(src.problem(
                    Some(&value.span()),
                    key,
                    format!("the string is not valid JSON: {err}"),
                ));
                return None;
            }
        },
        DeValue::Table(_) => to_json(src, key, value, problems)?,
        other => {
            problems.push(src.problem(
                Some(&value.span()),
                key,
                format!(
                    "expected a table or a string of JSON, found {}",
                    type_name(other)
                ),
            ));
            return None;
        }
    };
    if parsed.is_object() {
        Some(parsed)
    } else {
        problems.push(src.problem(Some(&value.span()), key, "expected a JSON object"));
        None
    }
}

fn to_json(
    src: &Source<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> Option<Value> {
    let bad = |problems: &mut Vec<Problem>, message: &str| {
        problems.push(src.problem(Some(&value.span()), key, message));
        None
    };
    match value.get_ref() {
        DeValue::String(s) => Some(Value::String(s.to_string())),
        DeValue::Boolean(b) => Some(Value::Bool(*b)),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Some(Value::from(n)),
            Err(_) => bad(problems, "integer out of range"),
        },
        DeValue::Float(x) => {
            let number = x
                .as_str()
                .replace('_', "")
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64);
            match number {
                Some(n) => Some(Value::Number(n)),
                None => bad(problems, "JSON has no infinite or NaN numbers"),
            }
        }
        DeValue::Datetime(_) => bad(
            problems,
            "TOML dates have no JSON form: quote the date (\"2024-09-30\")",
        ),
        DeValue::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(to_json(src, &format!("{key}[{i}]"), item, problems)?);
            }
            Some(Value::Array(out))
        }
        DeValue::Table(fields) => {
            let mut out = Map::new();
            for (name, inner) in fields.iter() {
                let inner = to_json(src, &join_key(key, name.get_ref()), inner, problems)?;
                out.insert(name.get_ref().to_string(), inner);
            }
            Some(Value::Object(out))
        }
    }
}
