//! `policy explain`: what a role sees for a purpose, field by field, or why it is refused.

use std::fmt;

use serde::Serialize;

use crate::domain::{Purpose, Role};

use super::{Policy, Refusal, Rule, Transform, Truncation};

/// The answer to "what does role R see for purpose P?", readable (`Display`) or as JSON (`Serialize`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub role: String,
    pub purpose: String,
    pub policy_version: String,
    pub permitted: bool,
    /// The refusal code when not permitted.
    pub refusal: Option<Refusal>,
    /// A sentence saying why, when refused.
    pub reason: Option<String>,
    /// The purpose's description, when the policy defines the purpose.
    pub description: Option<String>,
    /// The released fields, sorted by path (empty when refused).
    pub fields: Vec<FieldExplanation>,
}

/// One released field and how it is transformed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldExplanation {
    pub path: String,
    /// The field's kind in the record schema.
    pub kind: &'static str,
    /// `as is`, `count -> nombre_enfants`, `map (...)`, `truncate to year`.
    pub transform: String,
}

impl Explanation {
    pub(super) fn new(policy: &Policy, role: &Role, purpose: &Purpose) -> Explanation {
        let view = policy.purposes.get(purpose);
        let mut explanation = Explanation {
            role: role.as_str().to_owned(),
            purpose: purpose.as_str().to_owned(),
            policy_version: policy.version().to_owned(),
            permitted: false,
            refusal: None,
            reason: None,
            description: view.map(|v| v.description().to_owned()),
            fields: Vec::new(),
        };
        match policy.authorize(role, purpose) {
            Ok(view) => {
                explanation.permitted = true;
                explanation.fields = view.rules().iter().map(explain_rule).collect();
            }
            Err(refusal) => {
                let names = |it: &mut dyn Iterator<Item = &str>| {
                    it.map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                };
                let reason = match refusal {
                    Refusal::UnknownRole => format!(
                        "the policy defines no role `{role}`; its roles are {}",
                        names(&mut policy.roles().map(Role::as_str))
                    ),
                    Refusal::UnknownPurpose => format!(
                        "the policy defines no purpose `{purpose}`; role `{role}` may declare {}",
                        names(&mut policy.purposes_of(role).map(Purpose::as_str))
                    ),
                    Refusal::PurposeNotPermitted => format!(
                        "role `{role}` may not declare purpose `{purpose}`; it may declare {}",
                        names(&mut policy.purposes_of(role).map(Purpose::as_str))
                    ),
                };
                explanation.refusal = Some(refusal);
                explanation.reason = Some(reason);
            }
        }
        explanation
    }
}

fn explain_rule(rule: &Rule) -> FieldExplanation {
    let transform = match rule.transform() {
        Transform::None if rule.releases_subtree() => {
            "as is (whole subtree, schema fields only)".to_owned()
        }
        Transform::None => "as is".to_owned(),
        Transform::Count { name } => format!("count -> {name}"),
        Transform::Map { values, default } => {
            let mut parts: Vec<String> = values
                .iter()
                .map(|(from, to)| format!("{from} -> {to}"))
                .collect();
            parts.push(format!("* -> {default}"));
            format!("map ({})", parts.join(", "))
        }
        Transform::Truncate(Truncation::Year) => "truncate to year".to_owned(),
        Transform::Truncate(Truncation::Month) => "truncate to month".to_owned(),
    };
    FieldExplanation {
        path: rule.path().to_owned(),
        kind: rule.kind().name(),
        transform,
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "role:     {}", self.role)?;
        writeln!(f, "purpose:  {}", self.purpose)?;
        if let Some(description) = &self.description {
            writeln!(f, "          {description}")?;
        }
        writeln!(f, "policy:   {}", self.policy_version)?;
        if !self.permitted {
            let code = self.refusal.map(Refusal::code).unwrap_or("refused");
            write!(f, "refused:  {code}")?;
            if let Some(reason) = &self.reason {
                write!(f, ": {reason}")?;
            }
            return Ok(());
        }
        writeln!(f, "permitted: {} field rule(s)", self.fields.len())?;
        writeln!(f)?;
        let width = self
            .fields
            .iter()
            .map(|field| field.path.chars().count())
            .chain(["path".len()])
            .max()
            .unwrap_or(4);
        writeln!(f, "{:width$} | transform", "path")?;
        writeln!(f, "{:-<width$}-+-{:-<9}", "", "")?;
        for field in &self.fields {
            writeln!(f, "{:width$} | {}", field.path, field.transform)?;
        }
        writeln!(f)?;
        write!(f, "Every other field, `nir` included, is never released.")
    }
}
