//! Support and control stay apart by value: over generated dossiers, the shipped
//! policy never releases a control motive to social support or to the radiation
//! check, nor a disability benefit code to the radiation check.
//!
//! The sweep is checked against itself too: each map that guards these values,
//! once removed from a copy of the policy, makes the sweep fail. And a NIR
//! written into any string of a generated dossier is released by no purpose.

use caf_broker::domain::{Purpose, Role};
use caf_broker::policy::Policy;
use caf_broker::simulator::Dataset;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// At least 1,000 generated dossiers (the fixed ones come along), from two seeds.
const SAMPLE: &[(u64, usize)] = &[(42, 1_000), (7, 200)];

/// Motives that are control flags.
const CONTROL_MOTIVES: &[&str] = &[
    "CONTROLE_EN_COURS",
    "RESSOURCES_NON_DECLAREES",
    "NON_REPONSE_CONTROLE",
];
/// Benefit codes that reveal health data (GDPR art. 9).
const HEALTH_CODES: &[&str] = &["AAH", "AEEH"];

/// What each (role, purpose) must never release, by value, wherever it sits.
fn guarded() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    let radiation_check: Vec<&str> = CONTROL_MOTIVES
        .iter()
        .chain(HEALTH_CODES)
        .copied()
        .collect();
    vec![
        (
            "agent_consulaire",
            "verification_radiation",
            radiation_check.clone(),
        ),
        (
            "assistant_social",
            "verification_radiation",
            radiation_check,
        ),
        (
            "assistant_social",
            "accompagnement_social",
            CONTROL_MOTIVES.to_vec(),
        ),
    ]
}

fn shipped_text() -> String {
    std::fs::read_to_string(format!("{ROOT}/config/policy.toml")).expect("the shipped policy")
}

fn sample() -> Vec<Value> {
    let mut records = Vec::new();
    for &(seed, count) in SAMPLE {
        let dataset = Dataset::generate(seed, count);
        records.extend(dataset.numeros().filter_map(|n| dataset.by_numero(n)));
    }
    records
}

/// Every string value in `value`, at any depth.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Each forbidden value released, as "role/purpose released VALUE for dossier N".
fn leaks(policy: &Policy, records: &[Value]) -> Vec<String> {
    let mut found = Vec::new();
    for (role, purpose, forbidden) in guarded() {
        let view = policy
            .authorize(
                &Role::parse(role).unwrap(),
                &Purpose::parse(purpose).unwrap(),
            )
            .expect("the shipped policy lets the role declare the purpose");
        for record in records {
            let mut released = Vec::new();
            strings(&view.filter(record).data, &mut released);
            for value in released.iter().filter(|v| forbidden.contains(&v.as_str())) {
                found.push(format!(
                    "{role}/{purpose} released {value} for dossier {}",
                    record["numero_allocataire"]
                ));
            }
        }
    }
    found
}

#[test]
fn generated_dossiers_carry_every_guarded_value_so_the_sweep_means_something() {
    let records = sample();
    assert!(records.len() >= 1_000, "{} dossiers", records.len());
    let mut raw = Vec::new();
    records.iter().for_each(|r| strings(r, &mut raw));
    for value in CONTROL_MOTIVES.iter().chain(HEALTH_CODES) {
        let n = raw.iter().filter(|v| v == value).count();
        assert!(n >= 3, "{value} appears {n} times in the sample");
    }
}

#[test]
fn no_control_motive_nor_disability_benefit_leaves_for_support_or_the_radiation_check() {
    let policy = Policy::from_toml(&shipped_text(), "config/policy.toml").unwrap();
    let leaks = leaks(&policy, &sample());
    assert!(
        leaks.is_empty(),
        "{} leaks, first: {:?}",
        leaks.len(),
        &leaks[..leaks.len().min(5)]
    );
}

#[test]
fn removing_any_guarding_map_from_the_policy_makes_the_sweep_fail() {
    let text = shipped_text();
    let records = sample();
    // Each `{ path = "...", map = { ... } }` line of the shipped policy in turn is
    // replaced by its bare path (the value released as is).
    let maps: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("{ path =") && l.contains("map ="))
        .collect();
    assert!(maps.len() >= 5, "{} map rules found", maps.len());
    let mut guarding = 0;
    for line in maps {
        let path = line.split('"').nth(1).expect("a quoted path");
        let guards = matches!(
            path,
            "radiation.motif"
                | "suspension.motif"
                | "prestations[].code"
                | "prestations[].motif_fin"
        );
        let mutated = text.replacen(line, &format!("  \"{path}\","), 1);
        let policy = Policy::from_toml(&mutated, "mutated policy").unwrap();
        let leaks = leaks(&policy, &records);
        if guards {
            guarding += 1;
            assert!(
                !leaks.is_empty(),
                "the sweep misses the removal of the map on {path}"
            );
        }
    }
    assert_eq!(guarding, 6, "maps guarding motives and benefit codes");
}

#[test]
fn widening_a_map_to_keep_one_control_motive_makes_the_sweep_fail() {
    let text = shipped_text();
    let records = sample();
    for (keep, path) in [
        ("CONTROLE_EN_COURS", "suspension.motif"),
        ("RESSOURCES_NON_DECLAREES", "suspension.motif"),
        ("NON_REPONSE_CONTROLE", "radiation.motif"),
        ("NON_REPONSE_CONTROLE", "prestations[].motif_fin"),
        ("AAH", "prestations[].code"),
        ("AEEH", "prestations[].code"),
    ] {
        // Every map on `path` keeps `keep` as is.
        let mutated: String = text
            .lines()
            .map(
                |l| match l.contains(&format!("path = \"{path}\", map = {{")) {
                    true => l.replacen("map = { ", &format!("map = {{ {keep} = \"{keep}\", "), 1),
                    false => l.to_owned(),
                },
            )
            .collect::<Vec<_>>()
            .join("\n");
        let policy = Policy::from_toml(&mutated, "mutated policy").unwrap();
        let leaks = leaks(&policy, &records);
        assert!(
            leaks.iter().any(|l| l.contains(keep)),
            "the sweep misses {keep} kept on {path}"
        );
    }
}

/// Appends `nir` to every string of `value`, at any depth.
fn write_into_every_string(value: &mut Value, nir: &str) {
    match value {
        Value::String(text) => *text = format!("{text} {nir}"),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| write_into_every_string(v, nir)),
        Value::Object(fields) => fields
            .values_mut()
            .for_each(|v| write_into_every_string(v, nir)),
        _ => {}
    }
}

#[test]
fn no_purpose_releases_a_nir_written_into_any_string_of_generated_dossiers() {
    let policy =
        Policy::from_file(std::path::Path::new(&format!("{ROOT}/config/policy.toml"))).unwrap();
    let dataset = Dataset::generate(7, 300);
    let mut redacted = 0;
    for (i, numero) in dataset.numeros().enumerate() {
        let mut record = dataset.by_numero(numero).unwrap();
        let nir = record["nir"].as_str().unwrap().to_owned();
        let b = nir.as_bytes();
        let spaced = [
            &b[..1],
            &b[1..3],
            &b[3..5],
            &b[5..7],
            &b[7..10],
            &b[10..13],
            &b[13..],
        ]
        .map(|group| std::str::from_utf8(group).unwrap())
        .join(" ");
        let written = if i % 2 == 0 {
            nir.clone()
        } else {
            spaced.clone()
        };
        write_into_every_string(&mut record, &written);
        for view in policy.purposes() {
            let filtered = view.filter(&record);
            let text = filtered.data.to_string();
            assert!(
                !text.contains(&nir) && !text.contains(&spaced),
                "{} released a NIR of dossier {numero}",
                view.purpose()
            );
            redacted += filtered.redacted;
        }
    }
    assert!(
        redacted > 1_000,
        "the NIRs were found and redacted: {redacted}"
    );
}
