//! Every role x purpose of the shipped policy on the fixed dossiers, over HTTPS:
//! exactly the documented fields come back, and nothing else.
//!
//! The expected answer is computed here by an oracle written from the policy's
//! documented table (README, "For security teams"), independently of the broker's filter, from the raw record
//! the simulator holds.

use serde_json::{Map, Value, json};

use caf_broker::simulator::Dataset;

use crate::helpers::{assert_problem, spawn_app};

const FIXED: [&str; 5] = ["1000001", "1000002", "1000003", "1000004", "1000005"];

enum Rule {
    Keep(&'static str),
    /// The value at the path if it is one of the listed, else `AUTRE`.
    Coarsen(&'static str, &'static [&'static str]),
    CountEnfants,
    BirthYear,
}

/// Control motives (support and the radiation check never see them) and
/// disability benefits (health data, which the radiation check does not need).
const CONTROL: &[&str] = &[
    "NON_REPONSE_CONTROLE",
    "CONTROLE_EN_COURS",
    "RESSOURCES_NON_DECLAREES",
];
const ALL_RADIATION_MOTIVES: &[&str] = &[
    "RESIDENCE_HORS_FRANCE",
    "FIN_DE_DROITS",
    "DECES",
    "MUTATION_AUTRE_ORGANISME",
    "NON_REPONSE_CONTROLE",
    "DEMANDE_ALLOCATAIRE",
    "AUTRE",
];
const NOT_DISABILITY: &[&str] = &[
    "AF", "CF", "ARS", "ASF", "AJPP", "PAJE_PN", "PAJE_PA", "PAJE_AB", "PAJE_CMG", "PREPARE",
    "APL", "ALF", "ALS", "RSA", "PPA", "C2S",
];

/// `all` without the control motives, leaked for the lifetime of the test process.
fn without_control(all: &[&'static str]) -> &'static [&'static str] {
    Vec::leak(
        all.iter()
            .copied()
            .filter(|m| !CONTROL.contains(m))
            .collect(),
    )
}

const COMMON: &[&str] = &[
    "numero_allocataire",
    "code_postal_caf",
    "caf_organisme",
    "statut_dossier",
    "radiation.date_effet",
    "radiation.date_decision",
    "suspension.date_effet",
    "suspension.date_decision",
    "dernier_paiement.date_versement",
    "dernier_paiement.mois_droit",
    "prestations[].etat",
    "prestations[].date_debut_droit",
    "prestations[].date_fin_droit",
    "mise_a_jour",
];

const BENEFIT_DETAIL: &[&str] = &[
    "prestations[].code",
    "prestations[].libelle",
    "prestations[].avec_majoration",
    "prestations[].montant_mensuel_eur",
    "prestations[].paiements",
    "allocataire.nom_naissance",
    "allocataire.nom_usage",
    "allocataire.prenoms",
    "allocataire.sexe",
    "situation_familiale",
    "adresse",
    "residence.reside_en_france",
    "indus",
];

fn rules(purpose: &str) -> Vec<Rule> {
    let mut rules: Vec<Rule> = COMMON.iter().map(|p| Rule::Keep(p)).collect();
    match purpose {
        "verification_radiation" => rules.extend([
            Rule::Coarsen("radiation.motif", &["RESIDENCE_HORS_FRANCE"]),
            Rule::Coarsen("suspension.motif", &["RESIDENCE_A_VERIFIER"]),
            Rule::Coarsen("prestations[].code", NOT_DISABILITY),
        ]),
        "controle_fraude" => {
            rules.extend(BENEFIT_DETAIL.iter().map(|p| Rule::Keep(p)));
            rules.extend(
                [
                    "radiation.motif",
                    "suspension.motif",
                    "prestations[].motif_fin",
                ]
                .map(Rule::Keep),
            );
            rules.extend(
                [
                    "allocataire.date_naissance",
                    "residence.date_depart_declaree",
                    "residence.jours_hors_france_annee_civile",
                    "residence.source",
                    "controle",
                ]
                .map(Rule::Keep),
            );
            rules.push(Rule::CountEnfants);
        }
        "accompagnement_social" => {
            rules.extend(BENEFIT_DETAIL.iter().map(|p| Rule::Keep(p)));
            let support_motives = without_control(ALL_RADIATION_MOTIVES);
            rules.extend([
                Rule::Coarsen("radiation.motif", support_motives),
                Rule::Coarsen("prestations[].motif_fin", support_motives),
                Rule::Coarsen(
                    "suspension.motif",
                    &["PIECES_JUSTIFICATIVES_MANQUANTES", "RESIDENCE_A_VERIFIER"],
                ),
            ]);
            rules.extend(
                [
                    "conjoint",
                    "enfants",
                    "quotient_familial",
                    "ressources_trimestrielles",
                ]
                .map(Rule::Keep),
            );
            rules.push(Rule::BirthYear);
        }
        other => panic!("no oracle for {other}"),
    }
    rules
}

/// Copies the value at `segments` of `src` into `dst`, applying `leaf` to the final value.
fn pick(
    src: &Map<String, Value>,
    segments: &[&str],
    dst: &mut Map<String, Value>,
    leaf: &dyn Fn(&Value) -> Value,
) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    let (name, is_array) = match first.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (*first, false),
    };
    let Some(value) = src.get(name) else { return };
    if rest.is_empty() {
        dst.insert(name.into(), leaf(value));
    } else if value.is_null() {
        dst.insert(name.into(), Value::Null);
    } else if is_array {
        let items = value.as_array().expect("schema array");
        let out = dst
            .entry(name)
            .or_insert_with(|| json!(vec![json!({}); items.len()]));
        for (item, target) in items.iter().zip(out.as_array_mut().unwrap()) {
            pick(
                item.as_object().unwrap(),
                rest,
                target.as_object_mut().unwrap(),
                leaf,
            );
        }
    } else {
        let out = dst.entry(name).or_insert_with(|| json!({}));
        pick(
            value.as_object().expect("schema object"),
            rest,
            out.as_object_mut().unwrap(),
            leaf,
        );
    }
}

fn oracle(record: &Value, purpose: &str) -> Value {
    let src = record.as_object().unwrap();
    let mut out = Map::new();
    let path = |p: &'static str| p.split('.').collect::<Vec<_>>();
    for rule in rules(purpose) {
        match rule {
            Rule::Keep(p) => pick(src, &path(p), &mut out, &|v| v.clone()),
            Rule::Coarsen(p, kept) => pick(src, &path(p), &mut out, &|v| match v.as_str() {
                Some(value) if kept.contains(&value) => v.clone(),
                Some(_) => json!("AUTRE"),
                None => v.clone(),
            }),
            Rule::BirthYear => pick(src, &path("allocataire.date_naissance"), &mut out, &|v| {
                json!(&v.as_str().unwrap()[..4])
            }),
            Rule::CountEnfants => {
                let n = src["enfants"].as_array().map_or(0, Vec::len);
                out.insert("nombre_enfants".into(), json!(n));
            }
        }
    }
    Value::Object(out)
}

const GRANTS: [(&str, &str); 4] = [
    ("agent_consulaire", "verification_radiation"),
    ("agent_consulaire", "controle_fraude"),
    ("assistant_social", "verification_radiation"),
    ("assistant_social", "accompagnement_social"),
];

#[tokio::test]
async fn every_role_and_purpose_receives_exactly_the_documented_fields_of_each_fixed_dossier() {
    let app = spawn_app().await;
    let dataset = Dataset::generate(Dataset::DEFAULT_SEED, 0);
    for (role, purpose) in GRANTS {
        let token = app.token(role);
        for numero in FIXED {
            let record = dataset.by_numero(numero).expect("fixed dossier exists");
            let response = app.get_dossier(numero, &token, purpose).await;
            assert_eq!(response.status(), 200, "{role} {purpose} {numero}");
            let text = response.text().await.unwrap();
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                body["data"],
                oracle(&record, purpose),
                "{role} / {purpose} / {numero}"
            );

            let nir = record["nir"].as_str().unwrap();
            assert!(
                !text.contains(nir),
                "the NIR is never released ({role} {purpose} {numero})"
            );
            assert_eq!(
                body["data"].get("controle").is_some(),
                purpose == "controle_fraude"
            );
        }
    }
}

#[tokio::test]
async fn a_radiation_abroad_is_visible_to_the_consular_agent_with_its_motive() {
    let app = spawn_app().await;
    let response = app
        .get_dossier(
            "1000002",
            &app.token("agent_consulaire"),
            "verification_radiation",
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["statut_dossier"], "radie");
    assert_eq!(body["data"]["radiation"]["motif"], "RESIDENCE_HORS_FRANCE");
    assert!(body["data"]["radiation"]["date_effet"].is_string());
    assert!(
        body["data"].get("allocataire").is_none(),
        "no identity for a radiation check"
    );
}

#[tokio::test]
async fn a_death_is_shown_as_another_motive_for_a_radiation_check() {
    let app = spawn_app().await;
    let response = app
        .get_dossier(
            "1000005",
            &app.token("assistant_social"),
            "verification_radiation",
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["radiation"]["motif"], "AUTRE");
}

#[tokio::test]
async fn social_workers_never_see_control_flags_and_agents_never_see_family_finances() {
    let app = spawn_app().await;
    let social: Value = app
        .get_dossier(
            "1000004",
            &app.token("assistant_social"),
            "accompagnement_social",
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(social["data"].get("controle").is_none());
    assert_eq!(social["data"]["enfants"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        social["data"]["allocataire"]["date_naissance"]
            .as_str()
            .map(str::len),
        Some(4)
    );

    let fraud: Value = app
        .get_dossier("1000004", &app.token("agent_consulaire"), "controle_fraude")
        .await
        .json()
        .await
        .unwrap();
    assert!(fraud["data"].get("quotient_familial").is_none());
    assert!(fraud["data"].get("enfants").is_none());
    assert_eq!(fraud["data"]["nombre_enfants"], 2);
}

#[tokio::test]
async fn every_refused_role_and_purpose_pair_is_forbidden_on_every_fixed_dossier() {
    let app = spawn_app().await;
    for (role, purpose) in [
        ("agent_consulaire", "accompagnement_social"),
        ("assistant_social", "controle_fraude"),
    ] {
        let token = app.token(role);
        for numero in FIXED {
            assert_problem(
                app.get_dossier(numero, &token, purpose).await,
                403,
                "purpose-not-permitted",
            )
            .await;
        }
    }
}
