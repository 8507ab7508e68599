//! Data-driven filter cases: a policy, a purpose, an upstream record, the exact expected data.

use serde_json::{Value, json};

use super::Policy;
use crate::domain::{Purpose, Role};

/// A one-role policy whose purpose `p` has the given `fields` array body.
fn policy_with(fields: &str) -> String {
    format!(
        "[roles.r]\ndescription = \"a role\"\npurposes = [\"p\"]\n\n\
         [purposes.p]\ndescription = \"a purpose\"\nfields = [\n{fields}\n]\n"
    )
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json)
        .unwrap_or_else(|err| panic!("bad JSON in a test case: {err}\n{json}"))
}

/// Filters `upstream` with `purpose` of `policy_toml` and compares with `expected`; returns the released rules.
fn check(policy_toml: &str, purpose: &str, upstream: &str, expected: &str) -> Vec<String> {
    let policy = Policy::from_toml(policy_toml, "test.toml").unwrap_or_else(|err| panic!("{err}"));
    let role = Role::parse("r").unwrap();
    let view = policy
        .authorize(&role, &Purpose::parse(purpose).unwrap())
        .unwrap();
    let filtered = view.filter(&parse(upstream));
    assert_eq!(
        filtered.data,
        parse(expected),
        "\nfields: {policy_toml}\nupstream: {upstream}"
    );
    filtered.released
}

/// (what the case shows, fields, upstream, expected data), one case per line.
#[rustfmt::skip]
const CASES: &[(&str, &str, &str, &str)] = &[
    ("a plain path releases a scalar as is", r#""numero_allocataire""#, r#"{"numero_allocataire": "1000002", "nir": "295109912611193"}"#, r#"{"numero_allocataire": "1000002"}"#),
    ("a plain path releases null as null", r#""allocataire.nom_usage""#, r#"{"allocataire": {"nom_usage": null, "prenoms": "X"}}"#, r#"{"allocataire": {"nom_usage": null}}"#),
    ("a missing key releases nothing", r#""numero_allocataire", "statut_dossier""#, r#"{"statut_dossier": "actif"}"#, r#"{"statut_dossier": "actif"}"#),
    ("keys no rule names are never released, even new ones", r#""statut_dossier""#, r#"{"statut_dossier": "actif", "nouveau_champ": 1, "schema_version": "2", "regime": "CNAF"}"#, r#"{"statut_dossier": "actif"}"#),
    ("a scalar rule releases nothing when the upstream sends an object there", r#""allocataire.nom_naissance""#, r#"{"allocataire": {"nom_naissance": {"valeur": "X", "nir": "1"}}}"#, r#"{"allocataire": {}}"#),
    ("a scalar rule releases a scalar of an unexpected type as is", r#""residence.jours_hors_france_annee_civile""#, r#"{"residence": {"jours_hors_france_annee_civile": "198"}}"#, r#"{"residence": {"jours_hors_france_annee_civile": "198"}}"#),
    ("a whole object releases its schema fields but never unknown keys nor any nir", r#""suspension""#, r#"{"suspension": {"date_effet": "2024-07-01", "motif": "X", "nouveau": {"a": [1, {"nir": "x", "b": 2}]}, "nir": "x"}}"#, r#"{"suspension": {"date_effet": "2024-07-01", "motif": "X"}}"#),
    ("a whole object keeps nulls and drops fields of the wrong shape", r#""conjoint""#, r#"{"conjoint": {"prenoms": {"a": 1}, "nom_usage": null, "date_naissance": "1990-01-01", "sexe": ["F"]}}"#, r#"{"conjoint": {"nom_usage": null, "date_naissance": "1990-01-01"}}"#),
    ("a whole object rule releases null as null", r#""conjoint""#, r#"{"conjoint": null}"#, r#"{"conjoint": null}"#),
    ("a whole object rule releases nothing for an array", r#""conjoint""#, r#"{"conjoint": [{"prenoms": "X"}]}"#, r#"{}"#),
    ("a whole array rule releases nothing for an object", r#""enfants""#, r#"{"enfants": {"prenoms": "X"}}"#, r#"{}"#),
    ("a whole array rule releases its object items limited to schema fields", r#""indus""#, r#"{"indus": [{"statut": "SOLDE", "nouveau": 1}, 3, null, "x"]}"#, r#"{"indus": [{"statut": "SOLDE"}]}"#),
    ("an array written with a trailing [] is released whole", r#""indus[]""#, r#"{"indus": [{"statut": "SOLDE", "nir": "x"}, 3]}"#, r#"{"indus": [{"statut": "SOLDE"}]}"#),
    ("a dotted path keeps only the named key of an object", r#""radiation.date_effet""#, r#"{"radiation": {"date_effet": "2024-09-30", "motif": "DECES"}}"#, r#"{"radiation": {"date_effet": "2024-09-30"}}"#),
    ("a null intermediate releases null and nothing else", r#""radiation.date_effet", "radiation.motif""#, r#"{"radiation": null}"#, r#"{"radiation": null}"#),
    ("an intermediate of the wrong type releases nothing", r#""radiation.date_effet""#, r#"{"radiation": "2024-09-30"}"#, r#"{}"#),
    ("an object without the named keys is released empty", r#""radiation.date_effet""#, r#"{"radiation": {"autre": 1}}"#, r#"{"radiation": {}}"#),
    ("an item path maps over the array keeping order and length", r#""prestations[].code""#, r#"{"prestations": [{"code": "RSA", "etat": "CLOS"}, {"etat": "CLOS"}, {"code": "AF"}]}"#, r#"{"prestations": [{"code": "RSA"}, {}, {"code": "AF"}]}"#),
    ("an item path drops items that are not objects", r#""prestations[].code""#, r#"{"prestations": [1, null, {"code": "RSA"}, "AF", [{"code": "X"}]]}"#, r#"{"prestations": [{"code": "RSA"}]}"#),
    ("an item path over an empty array releases an empty array", r#""prestations[].code""#, r#"{"prestations": []}"#, r#"{"prestations": []}"#),
    ("an item path over null releases null", r#""prestations[].code""#, r#"{"prestations": null}"#, r#"{"prestations": null}"#),
    ("an item path over an object releases nothing", r#""prestations[].code""#, r#"{"prestations": {"code": "RSA"}}"#, r#"{}"#),
    ("rules under the same prefix merge", r#""prestations[].code", "prestations[].etat", "radiation.date_effet", "radiation.motif""#, r#"{"prestations": [{"code": "RSA", "etat": "CLOS", "libelle": "x"}], "radiation": {"date_effet": "d", "motif": "m", "date_decision": "x"}}"#, r#"{"prestations": [{"code": "RSA", "etat": "CLOS"}], "radiation": {"date_effet": "d", "motif": "m"}}"#),
    ("nested item paths map over arrays within arrays", r#""prestations[].paiements[].statut""#, r#"{"prestations": [{"paiements": [{"statut": "VERSE", "montant_eur": "1"}, 7]}, {"paiements": null}, {"paiements": "x"}, {}]}"#, r#"{"prestations": [{"paiements": [{"statut": "VERSE"}]}, {"paiements": null}, {}, {}]}"#),
    ("a whole subtree inside array items is released with its schema fields", r#""prestations[].paiements""#, r#"{"prestations": [{"code": "RSA", "paiements": [{"statut": "VERSE", "nir": "x", "iban": "x"}]}]}"#, r#"{"prestations": [{"paiements": [{"statut": "VERSE"}]}]}"#),
    ("count releases the array length under its name beside the array", r#"{ path = "enfants", count = "nombre_enfants" }"#, r#"{"enfants": [{"prenoms": "A"}, {"prenoms": "B"}, 3]}"#, r#"{"nombre_enfants": 3}"#),
    ("count of null is zero", r#"{ path = "enfants", count = "nombre_enfants" }"#, r#"{"enfants": null}"#, r#"{"nombre_enfants": 0}"#),
    ("count of an empty array is zero", r#"{ path = "enfants", count = "nombre_enfants" }"#, r#"{"enfants": []}"#, r#"{"nombre_enfants": 0}"#),
    ("count of something that is not an array releases nothing", r#"{ path = "enfants", count = "nombre_enfants" }"#, r#"{"enfants": {"a": 1}}"#, r#"{}"#),
    ("count of a missing array releases nothing", r#"{ path = "enfants", count = "nombre_enfants" }"#, r#"{}"#, r#"{}"#),
    ("count inside array items writes beside each inner array", r#"{ path = "prestations[].paiements", count = "nombre_paiements" }, "prestations[].code""#, r#"{"prestations": [{"code": "RSA", "paiements": [{}, {}]}, {"code": "AF", "paiements": []}]}"#, r#"{"prestations": [{"code": "RSA", "nombre_paiements": 2}, {"code": "AF", "nombre_paiements": 0}]}"#),
    ("count and item rules on the same array combine", r#"{ path = "enfants", count = "nombre_enfants" }, "enfants[].prenoms""#, r#"{"enfants": [{"prenoms": "A", "sexe": "F"}]}"#, r#"{"nombre_enfants": 1, "enfants": [{"prenoms": "A"}]}"#),
    ("map replaces a listed value", r#"{ path = "radiation.motif", map = { RESIDENCE_HORS_FRANCE = "HORS_FRANCE", "*" = "AUTRE" } }"#, r#"{"radiation": {"motif": "RESIDENCE_HORS_FRANCE"}}"#, r#"{"radiation": {"motif": "HORS_FRANCE"}}"#),
    ("map replaces an unlisted value by the default", r#"{ path = "radiation.motif", map = { RESIDENCE_HORS_FRANCE = "RESIDENCE_HORS_FRANCE", "*" = "AUTRE" } }"#, r#"{"radiation": {"motif": "DECES"}}"#, r#"{"radiation": {"motif": "AUTRE"}}"#),
    ("map replaces a value the CAF invents later by the default", r#"{ path = "statut_dossier", map = { actif = "actif", "*" = "inactif" } }"#, r#"{"statut_dossier": "archive"}"#, r#"{"statut_dossier": "inactif"}"#),
    ("map keeps null as null", r#"{ path = "radiation.motif", map = { "*" = "AUTRE" } }"#, r#"{"radiation": {"motif": null}}"#, r#"{"radiation": {"motif": null}}"#),
    ("map releases nothing for a value that is not a string", r#"{ path = "radiation.motif", map = { "*" = "AUTRE" } }"#, r#"{"radiation": {"motif": 12}}"#, r#"{"radiation": {}}"#),
    ("map releases nothing for an object", r#"{ path = "radiation.motif", map = { "*" = "AUTRE" } }"#, r#"{"radiation": {"motif": {"code": "DECES"}}}"#, r#"{"radiation": {}}"#),
    ("truncate to year keeps the year of a date", r#"{ path = "allocataire.date_naissance", truncate = "year" }"#, r#"{"allocataire": {"date_naissance": "1995-10-14"}}"#, r#"{"allocataire": {"date_naissance": "1995"}}"#),
    ("truncate to month keeps the year and month of a date", r#"{ path = "allocataire.date_naissance", truncate = "month" }"#, r#"{"allocataire": {"date_naissance": "1995-10-14"}}"#, r#"{"allocataire": {"date_naissance": "1995-10"}}"#),
    ("truncate releases nothing for a string that is not a date", r#"{ path = "allocataire.date_naissance", truncate = "year" }"#, r#"{"allocataire": {"date_naissance": "14/10/1995"}}"#, r#"{"allocataire": {}}"#),
    ("truncate releases nothing for a full timestamp", r#"{ path = "allocataire.date_naissance", truncate = "year" }"#, r#"{"allocataire": {"date_naissance": "1995-10-14T00:00:00Z"}}"#, r#"{"allocataire": {}}"#),
    ("truncate releases nothing for null or a number", r#"{ path = "allocataire.date_naissance", truncate = "year" }, { path = "enfants[].date_naissance", truncate = "year" }"#, r#"{"allocataire": {"date_naissance": null}, "enfants": [{"date_naissance": 1995}]}"#, r#"{"allocataire": {}, "enfants": [{}]}"#),
    ("a record that is not an object releases an empty object", r#""numero_allocataire""#, r#"[{"numero_allocataire": "1"}]"#, r#"{}"#),
    ("a null record releases an empty object", r#""numero_allocataire""#, r#"null"#, r#"{}"#),
    ("a string record releases an empty object", r#""numero_allocataire""#, r#""1000002""#, r#"{}"#),
];

#[test]
fn every_filter_case_releases_exactly_the_expected_data() {
    let failed: Vec<&str> = CASES
        .iter()
        .filter(|(_, fields, upstream, expected)| {
            std::panic::catch_unwind(|| check(&policy_with(fields), "p", upstream, expected))
                .is_err()
        })
        .map(|(what, ..)| *what)
        .collect();
    assert!(failed.is_empty(), "failed cases: {failed:#?}");
}

#[test]
fn released_lists_the_rule_paths_that_released_something_sorted() {
    let fields = r#""statut_dossier", "radiation.date_effet", "prestations[].code", "numero_allocataire", { path = "enfants", count = "nombre_enfants" }"#;
    let released = check(
        &policy_with(fields),
        "p",
        r#"{"statut_dossier": "actif", "radiation": null, "prestations": [{"etat": "CLOS"}], "enfants": [{}]}"#,
        r#"{"statut_dossier": "actif", "radiation": null, "prestations": [{}], "nombre_enfants": 1}"#,
    );
    assert_eq!(
        released,
        [
            "enfants",
            "prestations[].code",
            "radiation.date_effet",
            "statut_dossier"
        ]
    );
}

#[test]
fn nothing_released_gives_an_empty_released_list() {
    let released = check(
        &policy_with(r#""statut_dossier""#),
        "p",
        r#"{"autre": 1}"#,
        r#"{}"#,
    );
    assert!(released.is_empty());
}

#[test]
fn a_huge_array_is_filtered_and_counted_without_trouble() {
    let policy = Policy::from_toml(
        &policy_with(r#""prestations[].code", { path = "enfants", count = "nombre_enfants" }"#),
        "test.toml",
    )
    .unwrap();
    let view = policy
        .authorize(&Role::parse("r").unwrap(), &Purpose::parse("p").unwrap())
        .unwrap();
    let items: Vec<Value> = (0..100_000)
        .map(|i| json!({"code": format!("C{i}"), "etat": "CLOS"}))
        .collect();
    let record = json!({"prestations": items, "enfants": vec![json!({}); 100_000]});
    let filtered = view.filter(&record);
    assert_eq!(filtered.data["nombre_enfants"], json!(100_000));
    assert_eq!(
        filtered.data["prestations"].as_array().map(Vec::len),
        Some(100_000)
    );
    assert_eq!(
        filtered.data["prestations"][99_999],
        json!({"code": "C99999"})
    );
}

#[test]
fn deeply_nested_extra_data_under_a_whole_subtree_is_dropped_without_panic() {
    let mut deep = json!({"nir": "x", "leaf": 1});
    for _ in 0..50 {
        deep = json!({"nested": [deep], "nir": "x", "motif": "X"});
    }
    let upstream = json!({"suspension": deep}).to_string();
    check(
        &policy_with(r#""suspension""#),
        "p",
        &upstream,
        r#"{"suspension": {"motif": "X"}}"#,
    );
}
