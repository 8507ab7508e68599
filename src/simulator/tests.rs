//! Dataset-wide checks of the CAF record's rules (NIR keys, payment days, residence abroad), over the fixed and generated dossiers.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::OnceLock;

use serde_json::Value;

use super::Dataset;
use super::calendar::{Date, Month, TODAY, Weekday};
use crate::domain::Nir;

const SAMPLE: usize = 2_500;

fn sample() -> &'static [Value] {
    static RECORDS: OnceLock<Vec<Value>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let dataset = Dataset::generate(Dataset::DEFAULT_SEED, SAMPLE);
        dataset
            .numeros()
            .map(|n| dataset.by_numero(n).unwrap())
            .collect()
    })
}

fn full() -> &'static Dataset {
    static FULL: OnceLock<Dataset> = OnceLock::new();
    FULL.get_or_init(|| Dataset::generate(Dataset::DEFAULT_SEED, Dataset::DEFAULT_RECORDS))
}

fn text(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

fn date(v: &Value) -> Date {
    Date::parse(text(v)).unwrap_or_else(|| panic!("not a YYYY-MM-DD date: {v}"))
}

fn month(v: &Value) -> Month {
    Month::parse(text(v)).unwrap_or_else(|| panic!("not a YYYY-MM month: {v}"))
}

fn items(v: &Value) -> &[Value] {
    v.as_array()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
}

fn payments(record: &Value) -> impl Iterator<Item = &Value> {
    items(&record["prestations"])
        .iter()
        .flat_map(|p| items(&p["paiements"]))
}

fn id(record: &Value) -> &str {
    text(&record["numero_allocataire"])
}

const TOP_LEVEL_KEYS: [&str; 22] = [
    "schema_version",
    "numero_allocataire",
    "code_postal_caf",
    "caf_organisme",
    "nir",
    "regime",
    "statut_dossier",
    "radiation",
    "suspension",
    "allocataire",
    "conjoint",
    "enfants",
    "situation_familiale",
    "adresse",
    "residence",
    "quotient_familial",
    "prestations",
    "dernier_paiement",
    "indus",
    "controle",
    "ressources_trimestrielles",
    "mise_a_jour",
];

#[test]
fn the_same_seed_gives_identical_records() {
    let a = Dataset::generate(9, 300);
    let b = Dataset::generate(9, 300);
    assert_eq!(a.len(), 305);
    assert!(a.numeros().eq(b.numeros()));
    for numero in a.numeros() {
        assert_eq!(a.by_numero(numero), b.by_numero(numero));
        assert_eq!(a.json_by_numero(numero), b.json_by_numero(numero));
    }
}

#[test]
fn a_different_seed_changes_generated_dossiers_but_not_the_fixed_ones() {
    let a = Dataset::generate(1, 200);
    let b = Dataset::generate(2, 200);
    for numero in ["1000001", "1000002", "1000003", "1000004", "1000005"] {
        assert!(a.by_numero(numero).is_some());
        assert_eq!(a.by_numero(numero), b.by_numero(numero), "{numero}");
    }
    let differing = a
        .numeros()
        .skip(5)
        .filter(|n| a.by_numero(n) != b.by_numero(n))
        .count();
    assert_eq!(differing, 200);
}

#[test]
fn fixed_dossiers_match_the_table_of_the_spec() {
    let d = Dataset::generate(123, 0);
    assert_eq!(d.len(), 5);
    let table = [
        ("1000001", "180057512345627", "actif"),
        ("1000002", "295109912611193", "radie"),
        ("1000003", "253072A07300443", "suspendu"),
        ("1000004", "253072B07300470", "actif"),
        ("1000005", "160019912345604", "radie"),
    ];
    for (numero, nir, statut) in table {
        let r = d.by_numero(numero).unwrap();
        assert_eq!(
            (text(&r["nir"]), text(&r["statut_dossier"])),
            (nir, statut),
            "{numero}"
        );
        assert_eq!(d.by_nir(nir), Some(r));
    }
    let etats = |r: &Value| -> BTreeMap<String, String> {
        items(&r["prestations"])
            .iter()
            .map(|p| (text(&p["code"]).to_owned(), text(&p["etat"]).to_owned()))
            .collect()
    };

    let r1 = d.by_numero("1000001").unwrap();
    assert_eq!(r1["residence"]["reside_en_france"], true);
    assert_eq!(
        (etats(&r1)["AF"].as_str(), etats(&r1)["APL"].as_str()),
        ("EN_COURS", "EN_COURS")
    );
    assert_eq!(r1["dernier_paiement"]["date_versement"], "2026-10-05");

    let r2 = d.by_numero("1000002").unwrap();
    assert_eq!(r2["radiation"]["motif"], "RESIDENCE_HORS_FRANCE");
    assert_eq!(r2["radiation"]["date_effet"], "2024-09-30");
    assert_eq!(
        (
            r2["adresse"]["pays"].as_str(),
            r2["adresse"]["code_cog_insee_pays"].as_str()
        ),
        (Some("TUNISIE"), Some("99351"))
    );
    assert_eq!(
        (etats(&r2)["RSA"].as_str(), etats(&r2)["AF"].as_str()),
        ("CLOS", "CLOS")
    );
    assert_eq!(r2["indus"][0]["statut"], "EN_RECOUVREMENT");
    assert!(
        r2["controle"]["signalement_fraude"] == true || r2["controle"]["controle_en_cours"] == true
    );
    assert_eq!(r2["prestations"][0]["montant_mensuel_eur"], "635.71");

    let r3 = d.by_numero("1000003").unwrap();
    assert_eq!(r3["suspension"]["date_effet"], "2026-09-01");
    assert_eq!(r3["adresse"]["code_cog_insee_pays"], "99350");
    assert!(etats(&r3).values().all(|e| e != "EN_COURS"));

    let r4 = d.by_numero("1000004").unwrap();
    assert_eq!(
        (
            r4["situation_familiale"].as_str(),
            items(&r4["enfants"]).len()
        ),
        (Some("PARENT_ISOLE"), 2)
    );
    assert_eq!(r4["residence"]["reside_en_france"], false);
    assert!(r4["quotient_familial"].is_object());
    assert!(!items(&r4["ressources_trimestrielles"]).is_empty() && !items(&r4["indus"]).is_empty());

    let r5 = d.by_numero("1000005").unwrap();
    assert_eq!(r5["radiation"]["motif"], "DECES");
}

#[test]
fn every_record_has_every_schema_key_and_schema_version_1() {
    for record in sample() {
        let object = record.as_object().unwrap();
        let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(keys, TOP_LEVEL_KEYS.into_iter().collect(), "{}", id(record));
        assert_eq!(record["schema_version"], "1");
        assert_eq!(record["regime"], "CNAF");
    }
}

#[test]
fn every_generated_nir_has_a_valid_key_and_is_unique() {
    let d = full();
    assert_eq!(d.len(), Dataset::DEFAULT_RECORDS + 5);
    let mut seen = HashSet::new();
    let (mut corsica, mut abroad) = (0, 0);
    for numero in d.numeros() {
        let record = d.by_numero(numero).unwrap();
        let nir = text(&record["nir"]);
        assert!(
            Nir::parse(nir).is_ok(),
            "dossier {numero} has an invalid NIR"
        );
        assert!(
            seen.insert(nir.to_owned()),
            "dossier {numero} repeats a NIR"
        );
        assert_eq!(d.by_nir(nir).as_ref().map(id), Some(numero));
        corsica += usize::from(nir.get(5..7).is_some_and(|dep| dep == "2A" || dep == "2B"));
        abroad += usize::from(nir.get(5..7) == Some("99"));
    }
    assert!(
        corsica > 100 && abroad > 1_000,
        "corsica {corsica}, abroad {abroad}"
    );
}

#[test]
fn nirs_agree_with_the_allocataires_sex_birth_month_and_birthplace() {
    for record in sample() {
        let nir = text(&record["nir"]);
        let a = &record["allocataire"];
        let sex = if a["sexe"] == "M" { "1" } else { "2" };
        let born = text(&a["date_naissance"]);
        assert_eq!(nir.get(0..1), Some(sex), "{}", id(record));
        assert_eq!(nir.get(1..3), born.get(2..4), "{}", id(record));
        assert_eq!(nir.get(3..5), born.get(5..7), "{}", id(record));
        let place = if nir.get(5..7) == Some("99") {
            assert!(a["code_cog_insee_commune_naissance"].is_null());
            text(&a["code_cog_insee_pays_naissance"])
        } else {
            assert_eq!(a["code_cog_insee_pays_naissance"], "99100");
            text(&a["code_cog_insee_commune_naissance"])
        };
        assert_eq!(
            nir.get(5..10),
            place.get(0..5).or(Some("")),
            "{}",
            id(record)
        );
    }
}

#[test]
fn numero_9999999_is_absent_and_numbers_are_unique_seven_digit_strings() {
    let d = full();
    assert!(d.by_numero("9999999").is_none());
    let numeros: Vec<&str> = d.numeros().collect();
    assert_eq!(numeros.len(), d.len());
    assert!(!numeros.contains(&"9999999"));
    assert_eq!(numeros.iter().collect::<HashSet<_>>().len(), numeros.len());
    assert!(
        numeros
            .iter()
            .all(|n| n.len() == 7 && n.bytes().all(|b| b.is_ascii_digit()))
    );
    assert_eq!(
        &numeros[..5],
        &["1000001", "1000002", "1000003", "1000004", "1000005"]
    );
}

#[test]
fn lookups_match_numbers_as_written_and_nirs_in_either_case() {
    let d = Dataset::generate(3, 10);
    for absent in [
        "", "01000001", "0100001", "1000001 ", "+1000001", "1000006", "12345678", "2000010", "abc",
    ] {
        assert!(d.by_numero(absent).is_none(), "{absent:?}");
    }
    assert_eq!(
        d.by_nir("253072a07300443").as_ref().map(id),
        Some("1000003")
    );
    assert!(d.by_nir("295109912611194").is_none());
    assert!(d.by_nir("2951099126111930").is_none());
    assert_eq!(d.by_numero("2000009").as_ref().map(id), Some("2000009"));
}

#[test]
fn payments_fall_on_the_fifth_of_the_next_month_moved_off_weekends() {
    let mut checked = 0;
    for record in sample() {
        for p in payments(record) {
            let due = month(&p["mois_droit"]);
            let paid = date(&p["date_versement"]);
            let fifth = due.add(1).first_day().add_days(4);
            let expected = match fifth.weekday() {
                Weekday::Saturday => fifth.add_days(-1),
                Weekday::Sunday => fifth.add_days(1),
                _ => fifth,
            };
            assert_eq!(paid, expected, "{}", id(record));
            assert!(!matches!(
                paid.weekday(),
                Weekday::Saturday | Weekday::Sunday
            ));
            assert!(paid <= TODAY, "{}: a payment in the future", id(record));
            checked += 1;
        }
    }
    assert!(checked > 5_000, "only {checked} payments");
}

#[test]
fn radiated_dossiers_have_no_payment_after_their_radiation_month() {
    for record in sample().iter().filter(|r| r["statut_dossier"] == "radie") {
        let radiation = &record["radiation"];
        let last = date(&radiation["date_effet"]).month();
        assert!(Motif_is_known(text(&radiation["motif"])), "{}", id(record));
        assert!(date(&radiation["date_decision"]) >= date(&radiation["date_effet"]));
        assert!(
            payments(record).all(|p| month(&p["mois_droit"]) <= last),
            "{}",
            id(record)
        );
        for p in items(&record["prestations"]) {
            assert_eq!(p["etat"], "CLOS", "{}", id(record));
            assert!(
                date(&p["date_fin_droit"]) <= date(&radiation["date_effet"]),
                "{}",
                id(record)
            );
        }
    }
}

#[allow(non_snake_case)]
fn Motif_is_known(motif: &str) -> bool {
    [
        "RESIDENCE_HORS_FRANCE",
        "FIN_DE_DROITS",
        "DECES",
        "MUTATION_AUTRE_ORGANISME",
        "NON_REPONSE_CONTROLE",
        "DEMANDE_ALLOCATAIRE",
        "AUTRE",
    ]
    .contains(&motif)
}

#[test]
fn statuses_agree_with_radiation_and_suspension() {
    for record in sample() {
        let statut = text(&record["statut_dossier"]);
        assert_eq!(
            record["radiation"].is_object(),
            statut == "radie",
            "{}",
            id(record)
        );
        assert_eq!(
            record["suspension"].is_object(),
            statut == "suspendu",
            "{}",
            id(record)
        );
        if statut == "suspendu" {
            let from = date(&record["suspension"]["date_effet"]).month();
            for p in items(&record["prestations"]) {
                assert_ne!(p["etat"], "EN_COURS", "{}", id(record));
                for paiement in items(&p["paiements"]) {
                    if month(&paiement["mois_droit"]) >= from {
                        assert_eq!(paiement["statut"], "NON_VERSE", "{}", id(record));
                    }
                }
            }
        }
        if statut == "en_cours_affiliation" {
            assert!(record["dernier_paiement"].is_null());
        }
    }
}

#[test]
fn closed_benefits_have_an_end_date_and_open_ones_do_not() {
    for record in sample() {
        for p in items(&record["prestations"]) {
            let closed = p["etat"] == "CLOS";
            assert_eq!(p["date_fin_droit"].is_string(), closed, "{}", id(record));
            assert_eq!(p["motif_fin"].is_string(), closed, "{}", id(record));
            if closed {
                assert!(
                    date(&p["date_fin_droit"]) >= date(&p["date_debut_droit"]),
                    "{}",
                    id(record)
                );
                let end = date(&p["date_fin_droit"]).month();
                assert!(
                    items(&p["paiements"])
                        .iter()
                        .all(|x| month(&x["mois_droit"]) <= end),
                    "{}",
                    id(record)
                );
            }
            for x in items(&p["paiements"]) {
                assert!(
                    month(&x["mois_droit"]) >= date(&p["date_debut_droit"]).month(),
                    "{}",
                    id(record)
                );
            }
        }
    }
}

#[test]
fn days_abroad_end_family_benefits_and_minima_after_92_and_housing_after_122() {
    let (mut over_92, mut over_122) = (0, 0);
    for record in sample() {
        let days = record["residence"]["jours_hors_france_annee_civile"]
            .as_i64()
            .unwrap();
        let reside = record["residence"]["reside_en_france"].as_bool().unwrap();
        assert_eq!(
            record["residence"]["date_depart_declaree"].is_null(),
            reside,
            "{}",
            id(record)
        );
        assert_eq!(
            record["adresse"]["code_cog_insee_pays"] == "99100",
            reside,
            "{}",
            id(record)
        );
        for p in items(&record["prestations"])
            .iter()
            .filter(|p| p["etat"] == "EN_COURS")
        {
            let code = text(&p["code"]);
            let limit = match code {
                "APL" | "ALF" | "ALS" => 122,
                "C2S" => i64::MAX,
                _ => 92,
            };
            assert!(
                days <= limit,
                "{}: {code} still running after {days} days abroad",
                id(record)
            );
        }
        over_92 += usize::from(days > 92);
        over_122 += usize::from(days > 122);
    }
    assert!(over_92 > 100 && over_122 > 100);
}

#[test]
fn dernier_paiement_is_the_last_verse_payment() {
    for record in sample() {
        let last = payments(record)
            .filter(|p| p["statut"] == "VERSE")
            .max_by_key(|p| (date(&p["date_versement"]), month(&p["mois_droit"])));
        match last {
            Some(p) => {
                assert_eq!(
                    record["dernier_paiement"]["date_versement"],
                    p["date_versement"],
                    "{}",
                    id(record)
                );
                assert_eq!(
                    record["dernier_paiement"]["mois_droit"],
                    p["mois_droit"],
                    "{}",
                    id(record)
                );
            }
            None => assert!(record["dernier_paiement"].is_null(), "{}", id(record)),
        }
    }
}

fn is_money(s: &str) -> bool {
    let Some((units, cents)) = s.split_once('.') else {
        return false;
    };
    !units.is_empty()
        && units.bytes().all(|b| b.is_ascii_digit())
        && cents.len() == 2
        && cents.bytes().all(|b| b.is_ascii_digit())
}

fn walk<'a>(value: &'a Value, key: &str, found: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| walk(v, k, found)),
        Value::Array(list) => list.iter().for_each(|v| walk(v, key, found)),
        leaf => found.push((key.to_owned(), leaf)),
    }
}

#[test]
fn money_is_a_decimal_string_and_dates_are_valid() {
    for record in sample() {
        let mut leaves = Vec::new();
        walk(record, "", &mut leaves);
        for (key, value) in leaves {
            if key.ends_with("_eur") {
                assert!(
                    value.as_str().is_some_and(is_money),
                    "{}: {key} = {value}",
                    id(record)
                );
            } else if key.starts_with("date_") && !value.is_null() {
                assert!(
                    date(value) <= TODAY || key == "date_fin_droit",
                    "{}: {key} = {value}",
                    id(record)
                );
            } else if key == "mois_droit" || key.starts_with("periode_") {
                month(value);
            }
        }
    }
}

#[test]
fn mise_a_jour_is_an_rfc3339_utc_timestamp_not_after_today() {
    for record in sample() {
        let stamp = text(&record["mise_a_jour"]);
        let (day, time) = stamp.split_once('T').unwrap();
        assert!(Date::parse(day).is_some_and(|d| d <= TODAY), "{stamp}");
        let b = time.as_bytes();
        assert!(
            b.len() == 9 && b[2] == b':' && b[5] == b':' && b[8] == b'Z',
            "{stamp}"
        );
        let h: u32 = time[0..2].parse().unwrap();
        let m: u32 = time[3..5].parse().unwrap();
        let s: u32 = time[6..8].parse().unwrap();
        assert!(h < 24 && m < 60 && s < 60, "{stamp}");
    }
}

#[test]
fn overpayments_cover_paid_months_and_are_notified_afterwards() {
    for record in sample() {
        for indu in items(&record["indus"]) {
            let (from, to) = (month(&indu["periode_debut"]), month(&indu["periode_fin"]));
            assert!(from <= to, "{}", id(record));
            assert!(
                date(&indu["date_notification"]) > to.last_day(),
                "{}",
                id(record)
            );
            let code = &indu["prestation"];
            assert!(
                items(&record["prestations"])
                    .iter()
                    .any(|p| &p["code"] == code),
                "{}",
                id(record)
            );
        }
    }
}

#[test]
fn the_dataset_is_varied_enough_to_exercise_every_policy_rule() {
    let mut seen: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut note = |what: &'static str, v: &Value| {
        seen.entry(what)
            .or_default()
            .insert(v.as_str().map_or_else(|| v.to_string(), str::to_owned));
    };
    for r in sample() {
        note("statut", &r["statut_dossier"]);
        note("motif", &r["radiation"]["motif"]);
        note("pays", &r["adresse"]["code_cog_insee_pays"]);
        note("conjoint", &Value::Bool(r["conjoint"].is_object()));
        note("enfants", &Value::from(items(&r["enfants"]).len()));
        note("situation", &r["situation_familiale"]);
        note("qf", &Value::Bool(r["quotient_familial"].is_object()));
        note(
            "ressources",
            &Value::Bool(!items(&r["ressources_trimestrielles"]).is_empty()),
        );
        note("controle_en_cours", &r["controle"]["controle_en_cours"]);
        note("signalement_fraude", &r["controle"]["signalement_fraude"]);
        items(&r["indus"])
            .iter()
            .for_each(|i| note("indu", &i["statut"]));
        payments(r).for_each(|p| note("paiement", &p["statut"]));
        for p in items(&r["prestations"]) {
            note("code", &p["code"]);
            note("etat", &p["etat"]);
        }
    }
    let count = |what: &str| seen.get(what).map_or(0, BTreeSet::len);
    assert_eq!(count("statut"), 4);
    assert_eq!(count("motif"), 8, "{:?}", seen.get("motif"));
    assert_eq!(count("enfants"), 5);
    assert_eq!(count("situation"), 4);
    assert_eq!(count("indu"), 3);
    assert_eq!(count("paiement"), 3);
    assert_eq!(count("etat"), 3);
    assert_eq!(count("code"), 18, "{:?}", seen.get("code"));
    for flag in [
        "conjoint",
        "qf",
        "ressources",
        "controle_en_cours",
        "signalement_fraude",
    ] {
        assert_eq!(count(flag), 2, "{flag}");
    }
    let countries = &seen["pays"];
    for code in [
        "99100", "99351", "99350", "99352", "99341", "99401", "99132", "99134", "99404",
    ] {
        assert!(countries.contains(code), "no one lives in {code}");
    }
}
