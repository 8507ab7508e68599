//! Loading: the shipped policy releases what README documents, and bad files report every problem with its line.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Policy, Refusal, Transform, Truncation};
use crate::domain::{Purpose, Role};

pub(super) const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/policy.toml");

pub(super) fn shipped() -> Policy {
    Policy::from_file(Path::new(SHIPPED)).unwrap_or_else(|err| panic!("{err}"))
}

fn role(name: &str) -> Role {
    Role::parse(name).unwrap()
}

fn purpose(name: &str) -> Purpose {
    Purpose::parse(name).unwrap()
}

fn rules_of(policy: &Policy, role_name: &str, purpose_name: &str) -> BTreeMap<String, Transform> {
    let view = policy
        .authorize(&role(role_name), &purpose(purpose_name))
        .unwrap();
    view.rules()
        .iter()
        .map(|rule| (rule.path().to_owned(), rule.transform().clone()))
        .collect()
}

fn plain(paths: &[&str]) -> BTreeMap<String, Transform> {
    paths
        .iter()
        .map(|p| ((*p).to_owned(), Transform::None))
        .collect()
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

const DETAILS: &[&str] = &[
    "radiation.motif",
    "prestations[].libelle",
    "prestations[].motif_fin",
    "prestations[].avec_majoration",
    "prestations[].montant_mensuel_eur",
    "prestations[].paiements",
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
    "indus",
];

#[test]
fn the_shipped_policy_loads_without_problems_or_warnings() {
    let policy = shipped();
    assert!(policy.warnings().is_empty(), "{:?}", policy.warnings());
    let roles: Vec<&str> = policy.roles().map(Role::as_str).collect();
    assert_eq!(roles, ["agent_consulaire", "assistant_social"]);
    let of = |r: &str| {
        policy
            .purposes_of(&role(r))
            .map(Purpose::as_str)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of("agent_consulaire"),
        ["controle_fraude", "verification_radiation"]
    );
    assert_eq!(
        of("assistant_social"),
        ["accompagnement_social", "verification_radiation"]
    );
    assert!(of("stagiaire").is_empty());
}

#[test]
fn the_policy_version_is_the_sha256_of_the_file_bytes() {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(SHIPPED).unwrap();
    let expected = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    assert_eq!(shipped().version(), expected);
    assert_eq!(expected.len(), "sha256:".len() + 64);
}

/// A map keeping `kept` as they are, anything else reading `AUTRE`.
fn keeping(kept: &[&str]) -> Transform {
    Transform::Map {
        values: kept
            .iter()
            .map(|v| ((*v).to_owned(), (*v).to_owned()))
            .collect(),
        default: "AUTRE".to_owned(),
    }
}

/// The radiation motives a social worker may see: all but the control one.
const SUPPORT_MOTIVES: &[&str] = &[
    "RESIDENCE_HORS_FRANCE",
    "FIN_DE_DROITS",
    "DECES",
    "MUTATION_AUTRE_ORGANISME",
    "DEMANDE_ALLOCATAIRE",
    "AUTRE",
];

#[test]
fn verification_radiation_releases_the_radiation_facts_only() {
    let mut expected = plain(COMMON);
    expected.insert(
        "radiation.motif".to_owned(),
        keeping(&["RESIDENCE_HORS_FRANCE"]),
    );
    expected.insert(
        "suspension.motif".to_owned(),
        keeping(&["RESIDENCE_A_VERIFIER"]),
    );
    // Every benefit code but the disability ones (health data).
    let codes: Vec<&str> = super::schema::lookup("prestations[].code")
        .unwrap()
        .values
        .iter()
        .copied()
        .filter(|c| !matches!(*c, "AAH" | "AEEH"))
        .collect();
    assert_eq!(codes.len(), 16);
    expected.insert("prestations[].code".to_owned(), keeping(&codes));
    let policy = shipped();
    assert_eq!(
        rules_of(&policy, "agent_consulaire", "verification_radiation"),
        expected
    );
    assert_eq!(
        rules_of(&policy, "assistant_social", "verification_radiation"),
        expected
    );
}

#[test]
fn controle_fraude_releases_identity_residence_and_control_but_counts_children() {
    let mut expected = plain(COMMON);
    expected.extend(plain(DETAILS));
    expected.extend(plain(&[
        "prestations[].code",
        "suspension.motif",
        "allocataire.date_naissance",
        "residence.date_depart_declaree",
        "residence.jours_hors_france_annee_civile",
        "residence.source",
        "controle",
    ]));
    expected.insert(
        "enfants".to_owned(),
        Transform::Count {
            name: "nombre_enfants".to_owned(),
        },
    );
    assert_eq!(
        rules_of(&shipped(), "agent_consulaire", "controle_fraude"),
        expected
    );
}

#[test]
fn accompagnement_social_releases_the_household_but_no_control() {
    let mut expected = plain(COMMON);
    expected.extend(plain(DETAILS));
    expected.extend(plain(&[
        "prestations[].code",
        "conjoint",
        "enfants",
        "quotient_familial",
        "ressources_trimestrielles",
    ]));
    // Support and control stay separate: control motives read AUTRE.
    expected.insert("radiation.motif".to_owned(), keeping(SUPPORT_MOTIVES));
    expected.insert(
        "prestations[].motif_fin".to_owned(),
        keeping(SUPPORT_MOTIVES),
    );
    expected.insert(
        "suspension.motif".to_owned(),
        keeping(&["PIECES_JUSTIFICATIVES_MANQUANTES", "RESIDENCE_A_VERIFIER"]),
    );
    expected.insert(
        "allocataire.date_naissance".to_owned(),
        Transform::Truncate(Truncation::Year),
    );
    let rules = rules_of(&shipped(), "assistant_social", "accompagnement_social");
    assert_eq!(rules, expected);
    assert!(
        !rules
            .keys()
            .any(|p| p.starts_with("controle") || p.starts_with("residence.date"))
    );
}

#[test]
fn authorize_refuses_unknown_roles_unknown_purposes_and_unlisted_pairs() {
    let policy = shipped();
    let check = |r: &str, p: &str| {
        policy
            .authorize(&role(r), &purpose(p))
            .map(|v| v.purpose().as_str().to_owned())
    };
    assert_eq!(
        check("agent_consulaire", "controle_fraude"),
        Ok("controle_fraude".to_owned())
    );
    assert_eq!(
        check("agent_consulaire", "accompagnement_social"),
        Err(Refusal::PurposeNotPermitted)
    );
    assert_eq!(
        check("assistant_social", "controle_fraude"),
        Err(Refusal::PurposeNotPermitted)
    );
    assert_eq!(
        check("stagiaire", "controle_fraude"),
        Err(Refusal::UnknownRole)
    );
    assert_eq!(
        check("agent_consulaire", "curiosite"),
        Err(Refusal::UnknownPurpose)
    );
    assert!(policy.has_role(&role("assistant_social")));
    assert!(!policy.has_role(&role("stagiaire")));
}

#[test]
fn the_policy_is_cheap_to_share_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
    assert_send_sync::<super::PurposeView>();
}

const BROKEN: &str = r#"[roles.agent]
description = "x"
purposes = ["p", "inconnu"]
colour = "blue"

[roles.Bad-Name]
description = "x"
purposes = ["p"]

[purposes.p]
description = "x"
fields = [
  "nir",
  "radiation.inconnu",
  { path = "statut_dossier", count = "n" },
  { path = "statut_dossier", truncate = "year" },
  { path = "radiation.motif", map = { DECES = "AUTRE" } },
  { path = "allocataire.date_naissance", truncate = "year", map = { "*" = "x" } },
  "numero_allocataire",
  "numero_allocataire",
  "conjoint",
  "conjoint.prenoms",
  { path = "enfants", count = "nir" },
  { paht = "enfants" },
  42,
  { path = "allocataire.date_naissance", truncate = "week" },
  { path = "residence.jours_hors_france_annee_civile", map = { "*" = "x" } },
  { path = "prestations[].paiements", count = "code" },
  "indus", "indus[]",
]

[purposes.orphan]
description = "x"
fields = ["statut_dossier"]
"#;

#[test]
fn loading_reports_every_problem_at_once_with_its_line_and_key() {
    let err = Policy::from_toml(BROKEN, "broken.toml").unwrap_err();
    let found: Vec<(Option<usize>, &str, &str)> = err
        .problems
        .iter()
        .map(|p| (p.line, p.key.as_str(), p.message.as_str()))
        .collect();
    let expected: &[(usize, &str, &str)] = &[
        (
            3,
            "roles.agent.purposes[1]",
            "names purpose `inconnu`, which the policy does not define",
        ),
        (4, "roles.agent.colour", "unknown key"),
        (6, "roles.Bad-Name", "invalid role name"),
        (13, "purposes.p.fields[0]", "never releasable"),
        (
            14,
            "purposes.p.fields[1]",
            "names no field of the CAF record schema",
        ),
        (15, "purposes.p.fields[2]", "`count` applies to arrays"),
        (
            16,
            "purposes.p.fields[3]",
            "`truncate` applies to YYYY-MM-DD dates",
        ),
        (17, "purposes.p.fields[4].map", "needs a `\"*\"` entry"),
        (18, "purposes.p.fields[5]", "at most one transform"),
        (
            20,
            "purposes.p.fields[7]",
            "duplicate path `numero_allocataire`",
        ),
        (22, "purposes.p.fields[9]", "lies inside `conjoint`"),
        (23, "purposes.p.fields[10]", "cannot be named `nir`"),
        (24, "purposes.p.fields[11].paht", "unknown key"),
        (24, "purposes.p.fields[11]", "missing key `path`"),
        (25, "purposes.p.fields[12]", "expected a path string"),
        (
            26,
            "purposes.p.fields[13]",
            "truncate is \"year\" or \"month\"",
        ),
        (
            27,
            "purposes.p.fields[14]",
            "`map` applies to text and enumeration fields",
        ),
        (
            28,
            "purposes.p.fields[15]",
            "collides with the record field `prestations[].code`",
        ),
        (
            29,
            "purposes.p.fields[17]",
            "duplicate path `indus[]`, already ruled at purposes.p.fields[16]",
        ),
    ];
    for (line, key, message) in expected {
        assert!(
            found
                .iter()
                .any(|(l, k, m)| *l == Some(*line) && k == key && m.contains(message)),
            "missing problem at line {line}, {key}: {message}\nfound:\n{err}"
        );
    }
    assert_eq!(found.len(), expected.len(), "unexpected problems:\n{err}");
}

#[test]
fn problems_display_one_per_line_as_file_line_key_message() {
    let err = Policy::from_toml(BROKEN, "config/policy.toml").unwrap_err();
    let text = err.to_string();
    let first = text.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "config/policy.toml:3: roles.agent.purposes[1]: role `agent` names purpose `inconnu`, which the policy does not define"
    );
    assert_eq!(text.lines().count(), err.problems.len());
}

#[test]
fn a_toml_syntax_error_is_reported_with_its_line() {
    let err = Policy::from_toml(
        "[roles.a]\ndescription = \"x\"\npurposes = [\"p\" \"q\"]\n\n[purposes.p]\n",
        "bad.toml",
    )
    .unwrap_err();
    assert!(
        err.problems
            .iter()
            .all(|p| p.line.is_some() && p.message.starts_with("invalid TOML")),
        "{err}"
    );
    assert!(err.problems.iter().any(|p| p.line == Some(3)), "{err}");
}

#[test]
fn missing_sections_and_wrong_types_are_problems() {
    let err = Policy::from_toml(
        "[purposes.p]\ndescription = 3\nfields = \"statut_dossier\"\n",
        "t.toml",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("t.toml: missing key `roles`"), "{text}");
    assert!(
        text.contains("t.toml:2: purposes.p.description: expected a string, found an integer"),
        "{text}"
    );
    assert!(
        text.contains("t.toml:3: purposes.p.fields: expected an array of field rules"),
        "{text}"
    );
    let err = Policy::from_toml("version = 2\n[roles]\n[purposes]\n", "t.toml").unwrap_err();
    assert!(
        err.to_string().contains("t.toml:1: version: unknown key"),
        "{err}"
    );
}

#[test]
fn a_purpose_no_role_uses_is_a_warning_not_an_error() {
    let text = "[roles.r]\ndescription = \"x\"\npurposes = []\n[purposes.p]\ndescription = \"x\"\nfields = [\"statut_dossier\"]\n";
    let policy = Policy::from_toml(text, "w.toml").unwrap();
    let warnings = policy.warnings().join("\n");
    assert!(
        warnings.contains("w.toml:4: purposes.p: no role may use this purpose"),
        "{warnings}"
    );
    assert!(
        warnings.contains("w.toml:1: roles.r: this role may use no purpose"),
        "{warnings}"
    );
}

#[test]
fn a_map_key_outside_the_known_values_is_a_warning() {
    let text = "[roles.r]\ndescription = \"x\"\npurposes = [\"p\"]\n[purposes.p]\ndescription = \"x\"\n\
                fields = [{ path = \"radiation.motif\", map = { HORS_FRANCE = \"A\", \"*\" = \"B\" } }]\n";
    let policy = Policy::from_toml(text, "w.toml").unwrap();
    assert_eq!(
        policy.warnings(),
        [
            "w.toml:6: purposes.p.fields[0]: map key `HORS_FRANCE` is not a known value of `radiation.motif`"
        ]
    );
}

#[test]
fn a_missing_policy_file_is_a_problem_naming_the_file() {
    let err = Policy::from_file(Path::new("/nonexistent/policy.toml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/policy.toml: cannot read the policy file"),
        "{err}"
    );
}

#[test]
fn explain_lists_each_released_field_with_its_transform() {
    let policy = shipped();
    let explanation = policy.explain(
        &role("agent_consulaire"),
        &purpose("verification_radiation"),
    );
    assert!(explanation.permitted);
    let text = explanation.to_string();
    assert!(text.contains("radiation.motif"), "{text}");
    assert!(
        text.contains("| map (RESIDENCE_HORS_FRANCE -> RESIDENCE_HORS_FRANCE, * -> AUTRE)"),
        "{text}"
    );
    assert!(!text.contains("nir |"), "{text}");
    let explanation = policy.explain(&role("agent_consulaire"), &purpose("controle_fraude"));
    let text = explanation.to_string();
    assert!(text.contains("| count -> nombre_enfants"), "{text}");
    assert!(
        text.contains("| as is (whole subtree, schema fields only)"),
        "{text}"
    );
    let explanation = policy.explain(&role("assistant_social"), &purpose("accompagnement_social"));
    assert!(explanation.to_string().contains("| truncate to year"));
    let json = serde_json::to_value(&explanation).unwrap();
    assert_eq!(json["permitted"], true);
    assert_eq!(json["policy_version"], policy.version());
    assert!(
        json["fields"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x["path"] == "conjoint"))
    );
}

#[test]
fn explain_says_why_a_pair_is_refused() {
    let policy = shipped();
    let explanation = policy.explain(&role("assistant_social"), &purpose("controle_fraude"));
    assert!(!explanation.permitted);
    assert!(explanation.fields.is_empty());
    let text = explanation.to_string();
    assert!(text.contains("refused:  purpose-not-permitted: role `assistant_social` may not declare purpose `controle_fraude`"), "{text}");
    assert!(
        text.contains("`accompagnement_social`, `verification_radiation`"),
        "{text}"
    );
    let json = serde_json::to_value(&explanation).unwrap();
    assert_eq!(json["refusal"], "purpose-not-permitted");
    let unknown = policy.explain(&role("stagiaire"), &purpose("controle_fraude"));
    assert_eq!(unknown.refusal, Some(Refusal::UnknownRole));
    assert!(
        unknown
            .to_string()
            .contains("its roles are `agent_consulaire`, `assistant_social`")
    );
}

#[test]
fn a_role_naming_a_malformed_purpose_is_not_also_told_the_purpose_is_undefined() {
    let text = "[roles.r]\ndescription = \"x\"\npurposes = [\"p\"]\n\n[purposes.p]\nfields = [\"statut_dossier\"]\n";
    let err = Policy::from_toml(text, "m.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "m.toml:5: purposes.p: missing key `description`"
    );
}

#[test]
fn every_transform_that_does_not_fit_its_field_is_a_problem_with_its_line() {
    let text = "[roles.r]\ndescription = \"x\"\npurposes = [\"p\"]\n\n[purposes.p]\ndescription = \"x\"\nfields = [\n\
                { path = \"controle\", count = \"n\" },\n\
                { path = \"mise_a_jour\", truncate = \"year\" },\n\
                { path = \"prestations[].paiements[].mois_droit\", truncate = \"month\" },\n\
                { path = \"enfants[].a_charge\", map = { \"*\" = \"x\" } },\n\
                { path = \"enfants\", map = { \"*\" = \"x\" } },\n\
                { path = \"prestations[].paiements\", count = \"nombre_paiements\" },\n\
                { path = \"allocataire.sexe\", map = { F = \"F\", \"*\" = \"X\" } },\n\
                { path = \"enfants[].date_naissance\", truncate = \"month\" },\n\
                ]\n";
    let err = Policy::from_toml(text, "t.toml").unwrap_err();
    let lines: Vec<Option<usize>> = err.problems.iter().map(|p| p.line).collect();
    assert_eq!(
        lines,
        [Some(8), Some(9), Some(10), Some(11), Some(12)],
        "{err}"
    );
    let text = err.to_string();
    for expected in [
        "`count` applies to arrays, and `controle` is an object",
        "`truncate` applies to YYYY-MM-DD dates, and `mise_a_jour` is a timestamp",
        "`prestations[].paiements[].mois_droit` is a month (YYYY-MM)",
        "`map` applies to text and enumeration fields, and `enfants[].a_charge` is a boolean",
        "`map` applies to text and enumeration fields, and `enfants` is an array of objects",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
}
