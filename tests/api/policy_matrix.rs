//! Every role x purpose of the shipped policy, over HTTPS: exactly the
//! documented fields come back, and nothing else, on the fixed dossiers and on
//! generated ones to which unknown fields are added at every level.
//!
//! The expected answer is computed here by an oracle written from the policy's
//! documented table (docs/policy.md, "What each purpose releases"), with every
//! object or array it releases whole spelled out field by field from the record
//! schema (docs/record.md). It shares no code with the broker's filter: it
//! releases the listed fields only (deny by default), and a field absent from
//! the record is absent from its answer.

use std::collections::BTreeSet;
use std::sync::Arc;

use caf_broker::clock::SystemClock;
use caf_broker::simulator::Dataset;
use serde_json::{Map, Value, json};

use crate::helpers::{assert_problem, spawn_app};
use crate::stub_caf::{StubCaf, broker_in_front_of_with};

const FIXED: [&str; 5] = ["1000001", "1000002", "1000003", "1000004", "1000005"];

/// How one field of the record is released.
enum Rule {
    /// The value as it is, if it is a scalar or `null`.
    Keep(&'static str),
    /// A listed text as it is, any other text as `AUTRE`, `null` as `null`.
    Map(&'static str, &'static [&'static str]),
    /// The length of a top-level array (`null` counts 0), under another name.
    Count(&'static str, &'static str),
    /// The year of a `YYYY-MM-DD` date; anything else is not released.
    Year(&'static str),
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

/// What the fraud check and social support both release as is; `prestations[].paiements`
/// and `indus`, released whole, are their schema fields.
const BENEFIT_DETAIL: &[&str] = &[
    "prestations[].code",
    "prestations[].libelle",
    "prestations[].avec_majoration",
    "prestations[].montant_mensuel_eur",
    "prestations[].paiements[].mois_droit",
    "prestations[].paiements[].date_versement",
    "prestations[].paiements[].montant_eur",
    "prestations[].paiements[].statut",
    "allocataire.nom_naissance",
    "allocataire.nom_usage",
    "allocataire.prenoms",
    "allocataire.sexe",
    "situation_familiale",
    "adresse.destinataire",
    "adresse.complement_information",
    "adresse.complement_information_geographique",
    "adresse.numero_libelle_voie",
    "adresse.lieu_dit",
    "adresse.code_postal_ville",
    "adresse.pays",
    "adresse.code_cog_insee_pays",
    "adresse.date_derniere_maj",
    "residence.reside_en_france",
    "indus[].prestation",
    "indus[].montant_eur",
    "indus[].periode_debut",
    "indus[].periode_fin",
    "indus[].statut",
    "indus[].date_notification",
];

/// What the fraud check alone releases as is; `controle` is released whole.
const FRAUD_ONLY: &[&str] = &[
    "radiation.motif",
    "suspension.motif",
    "prestations[].motif_fin",
    "allocataire.date_naissance",
    "residence.date_depart_declaree",
    "residence.jours_hors_france_annee_civile",
    "residence.source",
    "controle.controle_en_cours",
    "controle.signalement_fraude",
];

/// What social support alone releases as is: `conjoint`, `enfants`,
/// `quotient_familial` and `ressources_trimestrielles`, each whole.
const SUPPORT_ONLY: &[&str] = &[
    "conjoint.nom_naissance",
    "conjoint.nom_usage",
    "conjoint.prenoms",
    "conjoint.date_naissance",
    "conjoint.sexe",
    "conjoint.code_cog_insee_pays_naissance",
    "conjoint.code_cog_insee_commune_naissance",
    "enfants[].nom_naissance",
    "enfants[].nom_usage",
    "enfants[].prenoms",
    "enfants[].date_naissance",
    "enfants[].sexe",
    "enfants[].a_charge",
    "quotient_familial.fournisseur",
    "quotient_familial.valeur",
    "quotient_familial.annee",
    "quotient_familial.mois",
    "quotient_familial.annee_calcul",
    "quotient_familial.mois_calcul",
    "ressources_trimestrielles[].trimestre",
    "ressources_trimestrielles[].montant_total_eur",
    "ressources_trimestrielles[].type",
];

fn rules(purpose: &str) -> Vec<Rule> {
    let keep = |paths: &[&'static str]| paths.iter().map(|p| Rule::Keep(p)).collect::<Vec<_>>();
    let mut rules = keep(COMMON);
    match purpose {
        "verification_radiation" => rules.extend([
            Rule::Map("radiation.motif", &["RESIDENCE_HORS_FRANCE"]),
            Rule::Map("suspension.motif", &["RESIDENCE_A_VERIFIER"]),
            Rule::Map("prestations[].code", NOT_DISABILITY),
        ]),
        "controle_fraude" => {
            rules.extend(keep(BENEFIT_DETAIL));
            rules.extend(keep(FRAUD_ONLY));
            rules.push(Rule::Count("enfants", "nombre_enfants"));
        }
        "accompagnement_social" => {
            rules.extend(keep(BENEFIT_DETAIL));
            rules.extend(keep(SUPPORT_ONLY));
            let support_motives = without_control(ALL_RADIATION_MOTIVES);
            rules.extend([
                Rule::Map("radiation.motif", support_motives),
                Rule::Map("prestations[].motif_fin", support_motives),
                Rule::Map(
                    "suspension.motif",
                    &["PIECES_JUSTIFICATIVES_MANQUANTES", "RESIDENCE_A_VERIFIER"],
                ),
                Rule::Year("allocataire.date_naissance"),
            ]);
        }
        other => panic!("no oracle for {other}"),
    }
    rules
}

/// Releases the field at `segments` of `src` into `out`, its value through
/// `leaf`. On the way, an object or array of the record becomes one in `out`
/// (an array keeps its object items, in order), a `null` stays `null`, and a
/// missing key or a value of another shape releases nothing.
fn release(
    src: &Map<String, Value>,
    segments: &[&str],
    out: &mut Map<String, Value>,
    leaf: &dyn Fn(&Value) -> Option<Value>,
) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    let (name, items) = match first.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (*first, false),
    };
    let Some(value) = src.get(name) else { return };
    if rest.is_empty() {
        if let Some(released) = leaf(value) {
            out.insert(name.into(), released);
        }
        return;
    }
    match (items, value) {
        (_, Value::Null) => {
            out.insert(name.into(), Value::Null);
        }
        (false, Value::Object(inner)) => {
            let kept = out.entry(name).or_insert_with(|| json!({}));
            release(inner, rest, kept.as_object_mut().unwrap(), leaf);
        }
        (true, Value::Array(values)) => {
            let objects: Vec<&Map<String, Value>> =
                values.iter().filter_map(Value::as_object).collect();
            let kept = out
                .entry(name)
                .or_insert_with(|| json!(vec![json!({}); objects.len()]));
            for (item, kept) in objects.into_iter().zip(kept.as_array_mut().unwrap()) {
                release(item, rest, kept.as_object_mut().unwrap(), leaf);
            }
        }
        _ => {}
    }
}

fn scalar(value: &Value) -> Option<Value> {
    match value {
        Value::Object(_) | Value::Array(_) => None,
        other => Some(other.clone()),
    }
}

/// `YYYY-MM-DD`, month 01 to 12, day 01 to 31.
fn is_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let number = |part: &str, len: usize| {
        (part.len() == len && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse::<u32>().unwrap())
    };
    matches!(
        parts.as_slice(),
        [year, month, day] if number(year, 4).is_some()
            && number(month, 2).is_some_and(|m| (1..=12).contains(&m))
            && number(day, 2).is_some_and(|d| (1..=31).contains(&d))
    )
}

fn oracle(record: &Value, purpose: &str) -> Value {
    let src = record.as_object().unwrap();
    let mut out = Map::new();
    let path = |p: &'static str| p.split('.').collect::<Vec<_>>();
    for rule in rules(purpose) {
        match rule {
            Rule::Keep(p) => release(src, &path(p), &mut out, &scalar),
            Rule::Map(p, kept) => release(src, &path(p), &mut out, &|v| match v {
                Value::Null => Some(Value::Null),
                Value::String(s) if kept.contains(&s.as_str()) => Some(v.clone()),
                Value::String(_) => Some(json!("AUTRE")),
                _ => None,
            }),
            Rule::Year(p) => release(src, &path(p), &mut out, &|v| match v {
                Value::String(s) if is_date(s) => Some(json!(&s[..4])),
                _ => None,
            }),
            Rule::Count(array, name) => match src.get(array) {
                Some(Value::Array(items)) => {
                    out.insert(name.into(), json!(items.len()));
                }
                Some(Value::Null) => {
                    out.insert(name.into(), json!(0));
                }
                _ => {}
            },
        }
    }
    Value::Object(out)
}

/// Every path a purpose may release, in policy notation, with the objects and
/// arrays on the way (`prestations`, `prestations[].paiements`).
fn releasable(purpose: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for rule in rules(purpose) {
        let path = match rule {
            Rule::Keep(p) | Rule::Map(p, _) | Rule::Year(p) => p,
            Rule::Count(_, name) => name,
        };
        let mut prefix = String::new();
        for segment in path.split('.') {
            paths.insert(format!("{prefix}{}", segment.trim_end_matches("[]")));
            prefix = format!("{prefix}{segment}.");
        }
    }
    paths
}

/// Every path of `value`, in policy notation.
fn paths_of(value: &Value, prefix: &str, paths: &mut BTreeSet<String>) {
    let Value::Object(fields) = value else { return };
    for (name, field) in fields {
        let path = format!("{prefix}{name}");
        match field {
            Value::Array(items) => {
                for item in items {
                    paths_of(item, &format!("{path}[]."), paths);
                }
            }
            Value::Object(_) => paths_of(field, &format!("{path}."), paths),
            _ => {}
        }
        paths.insert(path);
    }
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

/// The seed and size of the generated sample.
const SEED: u64 = 20_261_130;
const GENERATED: usize = 40;

/// In every value the test adds: none may reach an answer.
const UNKNOWN: &str = "INCONNU";

/// Names of the record schema that the test also adds where the schema does
/// not have them (a `motif` in `controle`, a `prenoms` in an `indus` item).
const MISPLACED: [&str; 7] = [
    "prenoms",
    "date_naissance",
    "motif",
    "code",
    "statut",
    "montant_eur",
    "pays",
];

/// Adds unknown fields to every object of `value`, at every depth: the top
/// level, objects inside it, items of arrays; each a scalar, an object and an
/// array of its own, a misplaced known name, and the dossier's NIR as `nir`.
fn with_unknown_fields(value: &mut Value, nir: &str) {
    match value {
        Value::Object(fields) => {
            for field in fields.values_mut() {
                with_unknown_fields(field, nir);
            }
            fields.insert("champ_inconnu".into(), json!(format!("{UNKNOWN} texte")));
            fields.insert(
                "objet_inconnu".into(),
                json!({ "detail": UNKNOWN, "date_effet": UNKNOWN }),
            );
            fields.insert(
                "liste_inconnue".into(),
                json!([{ "detail": UNKNOWN }, UNKNOWN]),
            );
            for name in MISPLACED {
                fields.entry(name).or_insert_with(|| json!(UNKNOWN));
            }
            fields.entry("nir").or_insert_with(|| json!(nir));
        }
        Value::Array(items) => {
            for item in items {
                with_unknown_fields(item, nir);
            }
        }
        _ => {}
    }
}

/// Removes fields a purpose releases, so that the answer must lack them too:
/// the children (the fraud check's count included), the last payment, the
/// address's country and each benefit's state.
fn without_some_fields(record: &mut Value) {
    let fields = record.as_object_mut().unwrap();
    fields.remove("enfants");
    fields.remove("dernier_paiement");
    if let Some(Value::Object(adresse)) = fields.get_mut("adresse") {
        adresse.remove("pays");
    }
    if let Some(Value::Array(prestations)) = fields.get_mut("prestations") {
        for prestation in prestations.iter_mut().filter_map(Value::as_object_mut) {
            prestation.remove("etat");
        }
    }
}

/// Shapes the generated sample must hold for the comparison to mean something.
fn assert_the_sample_is_varied(records: &[Value]) {
    let has = |what: &str, test: &dyn Fn(&Value) -> bool| {
        assert!(records.iter().any(test), "no generated dossier has {what}");
    };
    let non_empty = |v: &Value| v.as_array().is_some_and(|a| !a.is_empty());
    has("a radiation", &|r| r["radiation"].is_object());
    has("a suspension", &|r| r["suspension"].is_object());
    has("a spouse", &|r| r["conjoint"].is_object());
    has("no spouse", &|r| r["conjoint"].is_null());
    has("children", &|r| non_empty(&r["enfants"]));
    has("an overpayment", &|r| non_empty(&r["indus"]));
    has("resources", &|r| non_empty(&r["ressources_trimestrielles"]));
    has("a benefit with payments", &|r| {
        r["prestations"]
            .as_array()
            .is_some_and(|p| p.iter().any(|b| non_empty(&b["paiements"])))
    });
    has("a disability benefit", &|r| {
        r["prestations"]
            .as_array()
            .is_some_and(|p| p.iter().any(|b| b["code"] == "AAH" || b["code"] == "AEEH"))
    });
    has("a benefit ended by a control motive", &|r| {
        r["prestations"].as_array().is_some_and(|p| {
            p.iter()
                .any(|b| CONTROL.contains(&b["motif_fin"].as_str().unwrap_or("")))
        })
    });
}

#[tokio::test]
async fn generated_dossiers_with_unknown_fields_at_every_level_release_exactly_the_oracle_fields_and_no_unknown_one()
 {
    let dataset = Dataset::generate(SEED, GENERATED);
    let clean: Vec<(String, Value)> = dataset
        .numeros()
        .map(|numero| (numero.to_owned(), dataset.by_numero(numero).unwrap()))
        .collect();
    assert_eq!(clean.len(), FIXED.len() + GENERATED);
    let generated: Vec<Value> = clean[FIXED.len()..]
        .iter()
        .map(|(_, r)| r.clone())
        .collect();
    assert_the_sample_is_varied(&generated);

    let served: Vec<(String, Value)> = clean
        .iter()
        .enumerate()
        .map(|(i, (numero, record))| {
            let mut record = record.clone();
            let nir = record["nir"].as_str().unwrap().to_owned();
            with_unknown_fields(&mut record, &nir);
            if i % 3 == 0 {
                without_some_fields(&mut record);
            }
            (numero.clone(), record)
        })
        .collect();
    let paths: Vec<String> = served
        .iter()
        .map(|(numero, _)| format!("/dossiers/{numero}"))
        .collect();
    let script: Vec<(&str, Vec<Value>)> = paths
        .iter()
        .zip(&served)
        .map(|(path, (_, record))| (path.as_str(), vec![record.clone()]))
        .collect();
    let caf = StubCaf::start(&script).await;
    let app = broker_in_front_of_with(
        &caf,
        &[
            (
                "CAF_BROKER__QUOTAS__DEFAULT",
                "{ per_second = 1000, burst = 1000, per_day = 100000 }",
            ),
            ("CAF_BROKER__ALERTS__DISTINCT_DOSSIERS_PER_HOUR", "0"),
        ],
        Arc::new(SystemClock),
    )
    .await;

    for (role, purpose) in GRANTS {
        let token = app.token(role);
        let releasable = releasable(purpose);
        for (i, ((numero, record), (_, plain))) in served.iter().zip(&clean).enumerate() {
            let response = app.get_dossier(numero, &token, purpose).await;
            assert_eq!(response.status(), 200, "{role} {purpose} {numero}");
            let text = response.text().await.unwrap();
            let data = &serde_json::from_str::<Value>(&text).unwrap()["data"];
            let expected = oracle(record, purpose);
            assert_eq!(*data, expected, "{role} / {purpose} / {numero}");

            assert!(
                !text.contains(UNKNOWN),
                "an unknown field was released ({purpose} {numero})"
            );
            assert!(
                !text.contains(plain["nir"].as_str().unwrap()),
                "the NIR is never released ({purpose} {numero})"
            );
            let mut released = BTreeSet::new();
            paths_of(data, "", &mut released);
            let unlisted: Vec<&String> = released.difference(&releasable).collect();
            assert!(unlisted.is_empty(), "{purpose} {numero}: {unlisted:?}");
            // The oracle itself ignores what the schema does not know: on the
            // dossier as generated, it gives the same answer.
            if i % 3 != 0 {
                assert_eq!(expected, oracle(plain, purpose), "{purpose} {numero}");
            }
        }
    }
    let fraud = oracle(&served[0].1, "controle_fraude");
    assert!(
        fraud.get("nombre_enfants").is_none(),
        "no children in the record, no count in the answer"
    );
    caf.stop().await;
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
