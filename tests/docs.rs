//! The reference in `docs/` against the code it describes: every problem code
//! with its status, every field of the record schema with its nullability and
//! values, every settings key the shipped files use and every key the loader
//! accepts (and no other), every path of the shipped
//! policy, and every link between the documents.
//!
//! These read files and tables only (no broker runs), so they cost nothing and
//! fail as soon as the code gains a code, a field or a key the reference lacks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use caf_broker::error::ProblemCode;
use caf_broker::policy::schema::{FIELDS, Kind};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of the section under `heading` (a whole heading line, `## Errors`),
/// up to the next heading of the same or a higher level.
fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    let level = heading.split(' ').next().unwrap_or("#").len();
    let mut lines = text.lines().skip_while(|line| line.trim() != heading);
    assert!(lines.next().is_some(), "no section `{heading}`");
    lines
        .take_while(|line| {
            let hashes = line.bytes().take_while(|b| *b == b'#').count();
            hashes == 0 || hashes > level || !line[hashes..].starts_with(' ')
        })
        .collect()
}

/// The cells of the table rows among `lines`, header and separator left out.
fn rows<'a>(lines: &[&'a str]) -> Vec<Vec<&'a str>> {
    lines
        .iter()
        .filter(|line| line.starts_with('|'))
        .map(|line| {
            line.trim()
                .trim_matches('|')
                .split(" | ")
                .map(str::trim)
                .collect::<Vec<_>>()
        })
        .filter(|cells| {
            !cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ' '))
        })
        .skip(1)
        .collect()
}

/// The text between the first pair of backticks of a cell.
fn code_of(cell: &str) -> Option<&str> {
    let start = cell.find('`')? + 1;
    let end = start + cell[start..].find('`')?;
    Some(&cell[start..end])
}

#[test]
fn every_problem_code_is_in_the_api_errors_table_with_its_status() {
    let api = read("docs/api.md");
    let documented: BTreeSet<(String, String)> = rows(&section(&api, "## Errors"))
        .iter()
        .filter_map(|cells| {
            Some((
                cells.first()?.to_string(),
                code_of(cells.get(1)?)?.to_owned(),
            ))
        })
        .collect();
    let known: BTreeSet<(String, String)> = ProblemCode::ALL
        .iter()
        .map(|code| (code.status().to_string(), code.as_str().to_owned()))
        .collect();
    let missing: Vec<_> = known.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "docs/api.md, ## Errors, lacks (status, code): {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&known).collect();
    assert!(
        stale.is_empty(),
        "docs/api.md, ## Errors, names (status, code) the broker does not answer: {stale:?}"
    );
}

#[test]
fn every_field_of_the_record_schema_is_in_the_record_reference_as_the_schema_says() {
    let record = read("docs/record.md");
    let table: BTreeMap<String, Vec<&str>> = rows(&section(&record, "## Fields"))
        .into_iter()
        .filter_map(|cells| Some((code_of(cells.first()?)?.to_owned(), cells)))
        .collect();
    let schema: BTreeSet<&str> = FIELDS.iter().map(|spec| spec.path).collect();
    let documented: BTreeSet<&str> = table.keys().map(String::as_str).collect();
    let missing: Vec<_> = schema.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "docs/record.md, ## Fields, lacks: {missing:?}"
    );
    let unknown: Vec<_> = documented.difference(&schema).collect();
    assert!(
        unknown.is_empty(),
        "docs/record.md, ## Fields, names fields the schema lacks: {unknown:?}"
    );

    for spec in FIELDS {
        let cells = &table[spec.path];
        let nullable = if spec.nullable { "yes" } else { "no" };
        assert_eq!(
            cells.get(2).copied(),
            Some(nullable),
            "nullability of `{}`",
            spec.path
        );
        if spec.kind == Kind::Enum {
            // A row may refer to another field's list: "the values of `radiation.motif`".
            let values_cell = cells.get(3).copied().unwrap_or("");
            let listed = match values_cell.strip_prefix("the values of ").and_then(code_of) {
                Some(other) => table[other].get(3).copied().unwrap_or(""),
                None => values_cell,
            };
            for value in spec.values {
                assert!(
                    listed.contains(&format!("`{value}`")),
                    "docs/record.md: `{}` does not list the value `{value}`",
                    spec.path
                );
            }
        }
    }
}

/// `section.key` for every key directly under a section of a settings file.
fn settings_keys(relative: &str) -> BTreeSet<String> {
    let table: toml::Table = toml::from_str(&read(relative)).unwrap();
    table
        .iter()
        .flat_map(|(section, value)| {
            let keys: Vec<String> = value
                .as_table()
                .map(|t| t.keys().map(|key| format!("{section}.{key}")).collect())
                .unwrap_or_default();
            keys
        })
        .collect()
}

#[test]
fn every_settings_key_of_the_shipped_files_is_in_the_configuration_reference() {
    let reference = read("docs/configuration.md");
    for file in ["config/broker.toml", "config/production.example.toml"] {
        let keys = settings_keys(file);
        assert!(keys.len() > 40, "{file}: only {} keys read", keys.len());
        let missing: Vec<_> = keys
            .iter()
            .filter(|key| !reference.contains(&format!("| `{key}")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md has no row for {missing:?}, used in {file}"
        );
    }
}

#[test]
fn every_path_of_the_shipped_policy_is_in_the_policy_reference_table() {
    let policy: toml::Table = toml::from_str(&read("config/policy.toml")).unwrap();
    let reference = read("docs/policy.md");
    let table: BTreeSet<&str> = rows(&section(&reference, "### What each purpose releases"))
        .into_iter()
        .filter_map(|cells| code_of(cells.first()?))
        .collect();
    let purposes = policy["purposes"].as_table().unwrap();
    let mut paths = BTreeSet::new();
    for purpose in purposes.values() {
        for rule in purpose["fields"].as_array().unwrap() {
            let path = match rule {
                toml::Value::String(path) => path.as_str(),
                other => other["path"].as_str().unwrap(),
            };
            paths.insert(path);
        }
    }
    let missing: Vec<_> = paths.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "docs/policy.md, ### What each purpose releases, lacks: {missing:?}"
    );
    let stale: Vec<_> = table.difference(&paths).collect();
    assert!(
        stale.is_empty(),
        "docs/policy.md names paths the shipped policy does not rule: {stale:?}"
    );
}

/// The documents a reader of the repository meets.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 4, "docs/ holds {} documents", docs.len());
    files.extend(docs);
    files
}

/// The anchor a heading gets: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// The targets of the `[text](target)` links of a document, code blocks left out.
fn links(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn every_link_between_the_documents_leads_to_a_file_and_heading_of_the_repository() {
    for document in documents() {
        let text = std::fs::read_to_string(&document).unwrap();
        let dir = document.parent().unwrap();
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (file, fragment) = match target.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (target.as_str(), None),
            };
            let linked = if file.is_empty() {
                document.clone()
            } else {
                dir.join(file)
            };
            let shown = document.strip_prefix(root()).unwrap().display();
            assert!(
                linked.starts_with(root()) && linked.exists(),
                "{shown}: link to `{target}`: no such file"
            );
            let linked = linked.canonicalize().unwrap();
            assert!(
                linked.starts_with(root().canonicalize().unwrap()),
                "{shown}: link to `{target}` leaves the repository"
            );
            if let Some(fragment) = fragment {
                let heads = anchors(&std::fs::read_to_string(&linked).unwrap());
                assert!(
                    heads.contains(fragment),
                    "{shown}: link to `{target}`: no such heading"
                );
            }
        }
    }
}

#[test]
fn no_document_points_to_files_the_repository_does_not_hold() {
    for document in documents() {
        let text = std::fs::read_to_string(&document).unwrap();
        for outside in ["../shared", "CONTRACT.md", "spec/"] {
            assert!(
                !text.contains(outside),
                "{} mentions `{outside}`, which a clone of this repository does not hold",
                document.display()
            );
        }
    }
}

/// `section.key` for every key the settings loader accepts directly under a
/// section, as the loader itself lists them when it refuses an unknown key.
fn accepted_keys() -> BTreeSet<String> {
    use caf_broker::config::{SECTIONS, Settings};
    let mut accepted = BTreeSet::new();
    for section in SECTIONS {
        let probe = format!("CAF_BROKER__{}__NO_SUCH_KEY", section.to_uppercase());
        let err = Settings::load_with_env(
            &root().join("config/broker.toml"),
            [(probe.clone(), "1".to_owned())],
        )
        .expect_err("an unknown key is refused");
        assert_eq!(err.problems.len(), 1, "{err}");
        let problem = &err.problems[0];
        let expected = problem
            .split_once("unknown field `no_such_key`, expected ")
            .unwrap_or_else(|| panic!("{probe}: {problem}"))
            .1;
        let keys: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        assert!(!keys.is_empty(), "{problem}");
        accepted.extend(keys.into_iter().map(|key| format!("{section}.{key}")));
    }
    accepted
}

#[test]
fn the_configuration_reference_documents_every_key_the_loader_accepts_and_no_other() {
    let reference = read("docs/configuration.md");
    for section in caf_broker::config::SECTIONS {
        let heading = format!("## `[{section}]`");
        assert!(
            reference.lines().any(|line| line == heading),
            "docs/configuration.md has no heading {heading}"
        );
    }
    // A row names a key, or a key under one (`quotas.posts.<POST>`): the key
    // directly under the section is what the loader knows.
    let documented: BTreeSet<String> = reference
        .lines()
        .filter(|line| line.starts_with("| `"))
        .filter_map(|line| code_of(line))
        .filter(|key| key.contains('.'))
        .map(|key| key.splitn(3, '.').take(2).collect::<Vec<_>>().join("."))
        .collect();
    let accepted = accepted_keys();
    assert!(accepted.len() > 60, "only {} keys read", accepted.len());
    let missing: Vec<_> = accepted.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md has no row for {missing:?}, which the loader accepts"
    );
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents {unknown:?}, which the loader refuses"
    );
}
