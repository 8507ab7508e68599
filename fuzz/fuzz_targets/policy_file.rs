//! The policy file: TOML through `Policy::from_toml` (read, schema check, compile), then its use.
//!
//! A policy that compiles is explained for every role and purpose it names,
//! filters the policy tests' fixtures for every purpose, and runs the shipped
//! policy tests (`config/policy-tests/`), as `caf-broker check` does.
//! Invariants: no panic; a refused file gives at least one problem, each with
//! a message; a compiled purpose releases no `nir` key.

#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use caf_broker::policy::{Policy, run_policy_tests};
use caf_broker_fuzz::{repo_file, repo_text};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

static TESTS_DIR: LazyLock<PathBuf> = LazyLock::new(|| repo_file("config/policy-tests"));
static FIXTURES: LazyLock<Vec<Value>> = LazyLock::new(|| {
    (1..=5)
        .map(|n| {
            let text = repo_text(&format!("config/policy-tests/fixtures/100000{n}.json"));
            serde_json::from_str(&text).expect("a JSON fixture")
        })
        .collect()
});

fn has_nir(value: &Value) -> bool {
    match value {
        Value::Object(fields) => fields
            .iter()
            .any(|(key, inner)| key == "nir" || has_nir(inner)),
        Value::Array(items) => items.iter().any(has_nir),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match Policy::from_toml(text, "policy.toml") {
        Ok(policy) => policy,
        Err(error) => {
            assert!(!error.problems.is_empty(), "a refusal without a problem");
            assert!(error.problems.iter().all(|p| !p.message.is_empty()));
            let _ = error.to_string();
            return;
        }
    };
    let roles: Vec<_> = policy.roles().cloned().collect();
    let purposes: Vec<_> = policy
        .purposes()
        .map(|view| view.purpose().clone())
        .collect();
    for role in &roles {
        for purpose in &purposes {
            let _ = policy.explain(role, purpose);
            let _ = policy.authorize(role, purpose);
        }
    }
    for view in policy.purposes() {
        for fixture in FIXTURES.iter() {
            let filtered = view.filter(fixture);
            assert!(
                !has_nir(&filtered.data),
                "nir released by a compiled policy"
            );
        }
    }
    let _ = run_policy_tests(&policy, &TESTS_DIR);
});
