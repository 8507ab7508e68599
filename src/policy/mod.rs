//! The access policy: which role may declare which purpose, and which fields each purpose releases.
//!
//! `config/policy.toml` is read once ([`Policy::from_file`]), checked against the
//! CAF record schema with every problem reported at once, and compiled into an
//! immutable [`Policy`]. On the request path the broker calls
//! [`Policy::authorize`] and then [`PurposeView::filter`], which is pure: no IO,
//! no panic whatever the upstream sends, deny by default.
//!
//! The live policy is held by a [`PolicyStore`], which reloads it on demand
//! (SIGHUP) or on file change ([`PolicyStore::watch`]) only after the new file
//! parses, validates and passes its policy tests; a request takes one snapshot
//! ([`PolicyStore::current`]) and finishes under it. Beside it, a
//! [`DriftTracker`] counts record fields the schema does not know, and a
//! [`ShadowPolicy`] measures how a candidate policy would answer differently.
//!
//! Layout: `file` reads the TOML shape, `schema` holds the record's fields,
//! `compile` checks rules and builds the trie, `filter` applies it, `redact`
//! replaces NIRs written in released text, `explain` renders `policy explain`, `policy_tests` runs `config/policy-tests/`,
//! `reload` holds the live policy, `watch` follows its file, `drift` spots
//! unknown upstream fields, `shadow` compares a candidate policy.

mod compile;
mod drift;
mod explain;
mod file;
mod filter;
mod policy_tests;
mod redact;
mod released;
mod reload;
pub mod schema;
mod shadow;
mod watch;

#[cfg(test)]
mod filter_tests;
#[cfg(test)]
mod load_tests;
#[cfg(test)]
mod property_tests;
#[cfg(test)]
mod suite_tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::domain::{Purpose, Role};

pub use crate::file_watch::WatchGuard;
pub use drift::{DriftTracker, unknown_paths};
pub use explain::{Explanation, FieldExplanation};
pub use filter::{Filtered, FilteredJson};
pub use policy_tests::{TestFailure, TestReport, run_policy_tests};
pub use redact::{REDACTED, redact_text};
pub use reload::{
    PolicyStore, ReloadCause, ReloadCounts, ReloadEvent, ReloadJournal, ReloadOutcome, ReloadResult,
};
pub use schema::Kind;
pub use shadow::{RefusalChange, ShadowDiff, ShadowPolicy};

use compile::{Node, RoleDef};
use file::Source;

/// The compiled policy. Immutable, `Send + Sync`, meant to be shared in an `Arc`.
#[derive(Debug)]
pub struct Policy {
    version: Arc<str>,
    roles: BTreeMap<Role, RoleDef>,
    purposes: BTreeMap<Purpose, PurposeView>,
    warnings: Vec<String>,
}

/// Why a (role, purpose) pair is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Refusal {
    /// The policy defines no such role.
    UnknownRole,
    /// The policy defines no such purpose.
    UnknownPurpose,
    /// Both exist, but the role may not declare the purpose.
    PurposeNotPermitted,
}

impl Refusal {
    /// The stable code, as written in policy tests (`expect_refusal`).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::UnknownRole => "unknown-role",
            Refusal::UnknownPurpose => "unknown-purpose",
            Refusal::PurposeNotPermitted => "purpose-not-permitted",
        }
    }

    /// The inverse of [`Refusal::code`].
    pub fn from_code(code: &str) -> Option<Refusal> {
        [
            Refusal::UnknownRole,
            Refusal::UnknownPurpose,
            Refusal::PurposeNotPermitted,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// How a rule changes the value it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    /// Released as is.
    None,
    /// The array's length, written beside it under `name`.
    Count { name: String },
    /// A string replaced through `values`, or by `default` when unlisted.
    Map {
        values: BTreeMap<String, String>,
        default: String,
    },
    /// A date cut to its year or month.
    Truncate(Truncation),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    Year,
    Month,
}

/// One compiled rule of a purpose.
#[derive(Debug, Clone)]
pub struct Rule {
    path: String,
    kind: Kind,
    transform: Transform,
}

impl Rule {
    /// The path as written in the policy (`prestations[].code`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The kind of the field in the record schema.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn transform(&self) -> &Transform {
        &self.transform
    }

    /// Whether the rule releases a whole object or array (its schema fields, as is).
    pub fn releases_subtree(&self) -> bool {
        self.kind.is_container() && self.transform == Transform::None
    }
}

/// One purpose's compiled rules.
#[derive(Debug)]
pub struct PurposeView {
    purpose: Purpose,
    description: String,
    /// Sorted by path; a rule's index is its position here.
    rules: Vec<Rule>,
    root: Node,
}

impl PurposeView {
    pub fn purpose(&self) -> &Purpose {
        &self.purpose
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The rules, sorted by path.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// One thing wrong in a policy or policy-test file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: String,
    pub line: Option<usize>,
    /// The TOML key, e.g. `purposes.x.fields[3]`; empty for the whole file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found while loading a policy or its tests, one per line.
#[derive(Debug, thiserror::Error)]
pub struct PolicyError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl PolicyError {
    fn single(origin: &str, message: impl Into<String>) -> PolicyError {
        PolicyError {
            problems: vec![Problem {
                origin: origin.to_owned(),
                line: None,
                key: String::new(),
                message: message.into(),
            }],
        }
    }
}

/// The version of a policy file: `sha256:` and the lowercase hex digest of its bytes.
fn version_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Orders problems by file, then line, keeping discovery order otherwise.
fn sort_problems(problems: &mut [Problem]) {
    problems.sort_by(|a, b| {
        a.origin.cmp(&b.origin).then(
            a.line
                .unwrap_or(usize::MAX)
                .cmp(&b.line.unwrap_or(usize::MAX)),
        )
    });
}

impl Policy {
    /// Reads and compiles a policy file; the version is the hash of its bytes.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|err| {
            PolicyError::single(&origin, format!("cannot read the policy file: {err}"))
        })?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| PolicyError::single(&origin, "the policy file is not UTF-8"))?;
        Policy::from_toml(text, &origin)
    }

    /// Compiles a policy from its text; `origin` names it in problems (the file name).
    pub fn from_toml(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let src = Source { origin, text };
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let compiled = file::read(&src, &mut problems)
            .map(|raw| compile::compile(&src, raw, &mut problems, &mut warnings));
        if !problems.is_empty() {
            sort_problems(&mut problems);
            return Err(PolicyError { problems });
        }
        let (roles, purposes) = compiled.unwrap_or_default();
        sort_problems(&mut warnings);
        Ok(Policy {
            version: Arc::from(version_of(text.as_bytes())),
            roles,
            purposes,
            warnings: warnings.iter().map(ToString::to_string).collect(),
        })
    }

    /// `sha256:<lowercase hex of the file bytes>`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The version as a shared string, cheap to clone into every answer.
    pub fn shared_version(&self) -> Arc<str> {
        Arc::clone(&self.version)
    }

    pub fn has_role(&self, role: &Role) -> bool {
        self.roles.contains_key(role)
    }

    /// Whether the policy defines `purpose` (for any role).
    pub fn has_purpose(&self, purpose: &Purpose) -> bool {
        self.purposes.contains_key(purpose)
    }

    /// The purpose's rules when `role` may declare `purpose`.
    pub fn authorize(&self, role: &Role, purpose: &Purpose) -> Result<&PurposeView, Refusal> {
        let def = self.roles.get(role).ok_or(Refusal::UnknownRole)?;
        let view = self.purposes.get(purpose).ok_or(Refusal::UnknownPurpose)?;
        if def.purposes.contains(purpose) {
            Ok(view)
        } else {
            Err(Refusal::PurposeNotPermitted)
        }
    }

    /// What `role` sees for `purpose`, or why it is refused.
    pub fn explain(&self, role: &Role, purpose: &Purpose) -> Explanation {
        Explanation::new(self, role, purpose)
    }

    /// Things that load but look wrong, e.g. a purpose no role may use.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The roles, in name order.
    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.roles.keys()
    }

    /// The purposes `role` may declare, in name order (none for an unknown role).
    pub fn purposes_of(&self, role: &Role) -> impl Iterator<Item = &Purpose> {
        self.roles
            .get(role)
            .into_iter()
            .flat_map(|def| def.purposes.iter())
    }

    /// Every purpose the policy defines, in name order.
    pub fn purposes(&self) -> impl Iterator<Item = &PurposeView> {
        self.purposes.values()
    }

    /// A role's description, for explain and docs.
    pub fn role_description(&self, role: &Role) -> Option<&str> {
        self.roles.get(role).map(|def| def.description.as_str())
    }
}
