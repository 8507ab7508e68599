//! An independent check of a released view: every leaf it holds must be one a rule of the purpose releases.

use serde_json::Value;

use super::{PurposeView, Rule, Transform};

impl PurposeView {
    /// The leaf paths of `released` (a view this purpose's filter wrote, in
    /// `[]` notation) that no rule of the purpose releases: empty when the
    /// view is sound. A leaf is covered by a rule's own path, by a subtree a
    /// rule releases whole, by a count's key, or, when it is a null or an
    /// empty container, by being a step on the way to a rule. Written apart
    /// from the filter, as a second opinion for its tests and fuzz target.
    pub fn paths_outside_rules(&self, released: &Value) -> Vec<String> {
        let mut found = Vec::new();
        leaves(released, "", &mut found);
        found
            .into_iter()
            .filter(|(path, hollow)| !path.is_empty() && !covered(self.rules(), path, *hollow))
            .map(|(path, _)| path)
            .collect()
    }
}

/// Every leaf path of `value` in `[]` notation, with whether the leaf is null or an empty container.
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

#[cfg(test)]
mod tests {
    use super::super::load_tests::shipped;

    #[test]
    fn a_leaf_no_rule_releases_is_named_and_a_filtered_view_has_none() {
        let policy = shipped();
        let record: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string("config/policy-tests/fixtures/1000002.json").unwrap(),
        )
        .unwrap();
        for view in policy.purposes() {
            let filtered = view.filter(&record);
            assert_eq!(
                view.paths_outside_rules(&filtered.data),
                Vec::<String>::new()
            );
            let mut forged = filtered.data.clone();
            forged["nir"] = "295109912611193".into();
            forged["allocataire"]["ruse"] = serde_json::json!({"a": 1});
            let outside = view.paths_outside_rules(&forged);
            assert!(outside.contains(&"nir".to_owned()), "{outside:?}");
            assert!(
                outside.contains(&"allocataire.ruse.a".to_owned()),
                "{outside:?}"
            );
        }
    }
}
