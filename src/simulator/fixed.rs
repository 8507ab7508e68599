//! The five fixed dossiers (`1000001` to `1000005`) that docs, tests and
//! acceptance checks name; the same whatever the seed (listed in README).

use super::calendar::{Date, Month, Timestamp};
use super::record::{
    Adresse, Cents, Code, Controle, DernierPaiement, Enfant, Etat, Indu, Motif, Paiement, Personne,
    Prestation, QuotientFamilial, Radiation, Record, Residence, Ressource, SCHEMA_VERSION, Sexe,
    SituationFamiliale, StatutDossier, StatutIndu, StatutPaiement, Suspension,
};

/// The fixed dossiers' numbers, in order.
pub(super) const NUMEROS: [&str; 5] = ["1000001", "1000002", "1000003", "1000004", "1000005"];

/// The fixed dossiers' NIRs, in the same order.
pub(super) const NIRS: [&str; 5] = [
    "180057512345627",
    "295109912611193",
    "253072A07300443",
    "253072B07300470",
    "160019912345604",
];

/// The fixed dossier at `position` (0 to 4).
pub(super) fn dossier(position: usize) -> Option<Record> {
    match position {
        0 => Some(actif_en_france()),
        1 => Some(radie_residence_tunisie()),
        2 => Some(suspendu_maroc()),
        3 => Some(parent_isole_senegal()),
        4 => Some(radie_deces()),
        _ => None,
    }
}

fn month(year: i64, number: i64) -> Month {
    Month::new(year, number)
}

fn paiement(mois_droit: Month, cents: i64, statut: StatutPaiement) -> Paiement {
    Paiement {
        mois_droit,
        date_versement: mois_droit.payment_date(),
        montant_eur: Cents(cents),
        statut,
    }
}

/// `VERSE` payments of `cents` for every month from `from` to `to`.
fn verses(from: Month, to: Month, cents: i64) -> Vec<Paiement> {
    (0..=from.months_until(to))
        .map(|k| paiement(from.add(k), cents, StatutPaiement::Verse))
        .collect()
}

fn prestation(
    code: Code,
    etat: Etat,
    debut: Date,
    fin: Option<(Date, Motif)>,
    cents: i64,
    paiements: Vec<Paiement>,
) -> Prestation {
    Prestation {
        code,
        libelle: code.libelle(),
        etat,
        avec_majoration: None,
        date_debut_droit: debut,
        date_fin_droit: fin.map(|(d, _)| d),
        motif_fin: fin.map(|(_, m)| m),
        montant_mensuel_eur: Cents(cents),
        paiements,
    }
}

fn personne(
    nom: &str,
    usage: Option<&str>,
    prenoms: &str,
    naissance: Date,
    sexe: Sexe,
    pays: &str,
    commune: Option<&str>,
) -> Personne {
    Personne {
        nom_naissance: nom.to_owned(),
        nom_usage: usage.map(str::to_owned),
        prenoms: prenoms.to_owned(),
        date_naissance: naissance,
        sexe,
        code_cog_insee_pays_naissance: pays.to_owned(),
        code_cog_insee_commune_naissance: commune.map(str::to_owned),
    }
}

fn enfant(nom: &str, prenoms: &str, naissance: Date, sexe: Sexe, a_charge: bool) -> Enfant {
    Enfant {
        nom_naissance: nom.to_owned(),
        nom_usage: None,
        prenoms: prenoms.to_owned(),
        date_naissance: naissance,
        sexe,
        a_charge,
    }
}

fn adresse(
    destinataire: &str,
    voie: &str,
    ville: &str,
    pays: &str,
    code_pays: &str,
    maj: Date,
) -> Adresse {
    Adresse {
        destinataire: destinataire.to_owned(),
        complement_information: None,
        complement_information_geographique: None,
        numero_libelle_voie: Some(voie.to_owned()),
        lieu_dit: None,
        code_postal_ville: ville.to_owned(),
        pays: pays.to_owned(),
        code_cog_insee_pays: code_pays.to_owned(),
        date_derniere_maj: maj,
    }
}

fn ressources(kind: &'static str, quarters: &[(&str, i64)]) -> Vec<Ressource> {
    quarters
        .iter()
        .map(|(q, cents)| Ressource {
            trimestre: (*q).to_owned(),
            montant_total_eur: Cents(*cents),
            kind,
        })
        .collect()
}

fn at(date: Date, hour: i64, minute: i64) -> Timestamp {
    Timestamp {
        date,
        seconds_of_day: hour * 3600 + minute * 60,
    }
}

fn dernier(mois_droit: Month) -> Option<DernierPaiement> {
    Some(DernierPaiement {
        date_versement: mois_droit.payment_date(),
        mois_droit,
    })
}

const NO_CONTROL: Controle = Controle {
    controle_en_cours: false,
    signalement_fraude: false,
};

fn base(
    position: usize,
    statut: StatutDossier,
    caf: (&'static str, &'static str),
    allocataire: Personne,
    adresse: Adresse,
    residence: Residence,
) -> Record {
    Record {
        schema_version: SCHEMA_VERSION,
        numero_allocataire: NUMEROS
            .get(position)
            .copied()
            .unwrap_or_default()
            .to_owned(),
        code_postal_caf: caf.0,
        caf_organisme: caf.1,
        nir: NIRS.get(position).copied().unwrap_or_default().to_owned(),
        regime: "CNAF",
        statut_dossier: statut,
        radiation: None,
        suspension: None,
        allocataire,
        conjoint: None,
        enfants: Vec::new(),
        situation_familiale: SituationFamiliale::Celibataire,
        adresse,
        residence,
        quotient_familial: None,
        prestations: Vec::new(),
        dernier_paiement: None,
        indus: Vec::new(),
        controle: NO_CONTROL,
        ressources_trimestrielles: Vec::new(),
        mise_a_jour: at(Date::ymd(2026, 10, 6), 6, 0),
    }
}

/// `1000001`: active, lives in Paris, a couple with two children; AF and APL
/// running and paid last month (2026-10-05 for September).
fn actif_en_france() -> Record {
    let allocataire = personne(
        "DURAND",
        None,
        "THOMAS PIERRE",
        Date::ymd(1980, 5, 17),
        Sexe::M,
        "99100",
        Some("75123"),
    );
    let adresse = adresse(
        "Monsieur THOMAS DURAND",
        "24 RUE DE LA ROQUETTE",
        "75011 PARIS",
        "FRANCE",
        "99100",
        Date::ymd(2021, 6, 14),
    );
    let residence = Residence {
        reside_en_france: true,
        date_depart_declaree: None,
        jours_hors_france_annee_civile: 12,
        source: "DECLARATION_ALLOCATAIRE",
    };
    let mut r = base(
        0,
        StatutDossier::Actif,
        ("75001", "CAF de Paris"),
        allocataire,
        adresse,
        residence,
    );
    r.conjoint = Some(personne(
        "LEFEBVRE",
        Some("DURAND"),
        "CLAIRE",
        Date::ymd(1982, 3, 9),
        Sexe::F,
        "99100",
        Some("69383"),
    ));
    r.enfants = vec![
        enfant("DURAND", "EMMA", Date::ymd(2012, 9, 14), Sexe::F, true),
        enfant("DURAND", "HUGO", Date::ymd(2016, 2, 3), Sexe::M, true),
    ];
    r.situation_familiale = SituationFamiliale::Couple;
    r.quotient_familial = Some(QuotientFamilial {
        fournisseur: "CNAF",
        valeur: 854,
        annee: 2026,
        mois: 10,
        annee_calcul: 2026,
        mois_calcul: 7,
    });
    r.prestations = vec![
        prestation(
            Code::Af,
            Etat::EnCours,
            Date::ymd(2016, 3, 1),
            None,
            15_105,
            verses(month(2026, 4), month(2026, 9), 15_105),
        ),
        prestation(
            Code::Apl,
            Etat::EnCours,
            Date::ymd(2019, 9, 1),
            None,
            28_740,
            verses(month(2026, 4), month(2026, 9), 28_740),
        ),
    ];
    r.dernier_paiement = dernier(month(2026, 9));
    r.ressources_trimestrielles = ressources(
        "SALAIRES",
        &[
            ("2025-Q4", 630_000),
            ("2026-Q1", 630_000),
            ("2026-Q2", 645_000),
            ("2026-Q3", 645_000),
        ],
    );
    r.mise_a_jour = at(Date::ymd(2026, 10, 6), 4, 30);
    r
}

/// `1000002`: the reference example of a radiated dossier: radiated for
/// residence abroad (Tunisia), RSA and AF closed, an overpayment being
/// recovered, a fraud report.
fn radie_residence_tunisie() -> Record {
    // The NIR's department 99 and number 126 say she was born in Greece (INSEE 99126).
    let allocataire = personne(
        "MARTIN",
        Some("DUPONT"),
        "JEANNE LAURE",
        Date::ymd(1995, 10, 14),
        Sexe::F,
        "99126",
        None,
    );
    let adresse = adresse(
        "Madame JEANNE MARTIN",
        "13 RUE PASTEUR",
        "7250 MANOUBA",
        "TUNISIE",
        "99351",
        Date::ymd(2024, 8, 20),
    );
    let residence = Residence {
        reside_en_france: false,
        date_depart_declaree: Some(Date::ymd(2024, 6, 15)),
        jours_hors_france_annee_civile: 198,
        source: "DECLARATION_ALLOCATAIRE",
    };
    let mut r = base(
        1,
        StatutDossier::Radie,
        ("75001", "CAF de Paris"),
        allocataire,
        adresse,
        residence,
    );
    let fin = Some((Date::ymd(2024, 9, 30), Motif::ResidenceHorsFrance));
    r.radiation = Some(Radiation {
        date_effet: Date::ymd(2024, 9, 30),
        motif: Motif::ResidenceHorsFrance,
        date_decision: Date::ymd(2024, 10, 12),
    });
    r.enfants = vec![enfant(
        "MARTIN",
        "LEO",
        Date::ymd(2016, 3, 4),
        Sexe::M,
        true,
    )];
    r.situation_familiale = SituationFamiliale::ParentIsole;
    r.quotient_familial = Some(QuotientFamilial {
        fournisseur: "CNAF",
        valeur: 650,
        annee: 2024,
        mois: 9,
        annee_calcul: 2024,
        mois_calcul: 6,
    });
    let mut rsa = prestation(
        Code::Rsa,
        Etat::Clos,
        Date::ymd(2021, 2, 1),
        fin,
        63_571,
        vec![
            paiement(month(2024, 8), 63_571, StatutPaiement::Verse),
            paiement(month(2024, 9), 0, StatutPaiement::NonVerse),
        ],
    );
    rsa.avec_majoration = Some(true);
    r.prestations = vec![
        rsa,
        prestation(
            Code::Af,
            Etat::Clos,
            Date::ymd(2016, 4, 1),
            fin,
            0,
            Vec::new(),
        ),
    ];
    r.dernier_paiement = dernier(month(2024, 8));
    r.indus = vec![Indu {
        prestation: Code::Rsa,
        montant_eur: Cents(127_142),
        periode_debut: month(2024, 7),
        periode_fin: month(2024, 8),
        statut: StatutIndu::EnRecouvrement,
        date_notification: Date::ymd(2024, 11, 2),
    }];
    r.controle = Controle {
        controle_en_cours: false,
        signalement_fraude: true,
    };
    r.ressources_trimestrielles = ressources("SALAIRES", &[("2024-Q2", 180_000)]);
    // The record was last updated when the overpayment was notified.
    r.mise_a_jour = at(Date::ymd(2024, 11, 2), 6, 0);
    r
}

/// `1000003`: suspended since 2026-09-01 while her residence is checked; she
/// moved to Morocco on 2026-08-20 (73 days abroad this year).
fn suspendu_maroc() -> Record {
    let allocataire = personne(
        "SANTORI",
        None,
        "MARIE ROSE",
        Date::ymd(1953, 7, 22),
        Sexe::F,
        "99100",
        Some("2A073"),
    );
    let adresse = adresse(
        "Madame MARIE SANTORI",
        "14 RUE IBN BATOUTA",
        "20000 CASABLANCA",
        "MAROC",
        "99350",
        Date::ymd(2026, 8, 25),
    );
    let residence = Residence {
        reside_en_france: false,
        date_depart_declaree: Some(Date::ymd(2026, 8, 20)),
        jours_hors_france_annee_civile: 73,
        source: "DECLARATION_ALLOCATAIRE",
    };
    let mut r = base(
        2,
        StatutDossier::Suspendu,
        ("20000", "CAF de la Corse-du-Sud"),
        allocataire,
        adresse,
        residence,
    );
    r.suspension = Some(Suspension {
        date_effet: Date::ymd(2026, 9, 1),
        motif: "RESIDENCE_A_VERIFIER",
        date_decision: Date::ymd(2026, 8, 28),
    });
    r.situation_familiale = SituationFamiliale::Veuf;
    let mut paiements = verses(month(2026, 4), month(2026, 8), 19_864);
    paiements.push(paiement(month(2026, 9), 0, StatutPaiement::NonVerse));
    r.prestations = vec![prestation(
        Code::Als,
        Etat::Suspendu,
        Date::ymd(2019, 5, 1),
        None,
        19_864,
        paiements,
    )];
    r.dernier_paiement = dernier(month(2026, 8));
    r.controle = Controle {
        controle_en_cours: true,
        signalement_fraude: false,
    };
    r.ressources_trimestrielles = ressources(
        "PENSIONS_RETRAITE",
        &[
            ("2025-Q4", 312_000),
            ("2026-Q1", 312_000),
            ("2026-Q2", 318_000),
            ("2026-Q3", 318_000),
        ],
    );
    r.mise_a_jour = at(Date::ymd(2026, 10, 5), 5, 0);
    r
}

/// `1000004`: active, a single parent (two grandchildren in her care) who moved
/// to Senegal on 2026-09-10 (52 days abroad, so benefits still run); an
/// overpayment notified.
fn parent_isole_senegal() -> Record {
    let allocataire = personne(
        "CASANOVA",
        None,
        "ANNE MARIE",
        Date::ymd(1953, 7, 3),
        Sexe::F,
        "99100",
        Some("2B073"),
    );
    let adresse = adresse(
        "Madame ANNE CASANOVA",
        "27 AVENUE LEOPOLD SEDAR SENGHOR",
        "10200 DAKAR",
        "SENEGAL",
        "99341",
        Date::ymd(2026, 9, 18),
    );
    let residence = Residence {
        reside_en_france: false,
        date_depart_declaree: Some(Date::ymd(2026, 9, 10)),
        jours_hors_france_annee_civile: 52,
        source: "DECLARATION_ALLOCATAIRE",
    };
    let mut r = base(
        3,
        StatutDossier::Actif,
        ("20200", "CAF de la Haute-Corse"),
        allocataire,
        adresse,
        residence,
    );
    r.enfants = vec![
        enfant("CASANOVA", "LUCAS", Date::ymd(2013, 4, 11), Sexe::M, true),
        enfant("CASANOVA", "INES", Date::ymd(2016, 10, 27), Sexe::F, true),
    ];
    r.situation_familiale = SituationFamiliale::ParentIsole;
    r.quotient_familial = Some(QuotientFamilial {
        fournisseur: "CNAF",
        valeur: 529,
        annee: 2026,
        mois: 10,
        annee_calcul: 2026,
        mois_calcul: 7,
    });
    let august = month(2026, 8);
    r.prestations = vec![
        prestation(
            Code::Af,
            Etat::EnCours,
            Date::ymd(2016, 11, 1),
            None,
            15_105,
            verses(month(2026, 4), month(2026, 9), 15_105),
        ),
        prestation(
            Code::Asf,
            Etat::EnCours,
            Date::ymd(2019, 2, 1),
            None,
            39_838,
            verses(month(2026, 4), month(2026, 9), 39_838),
        ),
        prestation(
            Code::Ars,
            Etat::Clos,
            august.first_day(),
            Some((august.last_day(), Motif::FinDeDroits)),
            87_033,
            verses(august, august, 87_033),
        ),
    ];
    r.dernier_paiement = dernier(month(2026, 9));
    r.indus = vec![Indu {
        prestation: Code::Asf,
        montant_eur: Cents(79_676),
        periode_debut: month(2026, 6),
        periode_fin: month(2026, 7),
        statut: StatutIndu::Notifie,
        date_notification: Date::ymd(2026, 10, 15),
    }];
    r.ressources_trimestrielles = ressources(
        "PENSIONS_RETRAITE",
        &[
            ("2025-Q4", 231_000),
            ("2026-Q1", 231_000),
            ("2026-Q2", 234_000),
            ("2026-Q3", 234_000),
        ],
    );
    r.mise_a_jour = at(Date::ymd(2026, 10, 15), 6, 0);
    r
}

/// `1000005`: radiated after the allocataire's death in March 2025.
fn radie_deces() -> Record {
    // Department 99, number 123: born in Russia (INSEE 99123).
    let allocataire = personne(
        "VOLKOV",
        None,
        "SERGE",
        Date::ymd(1960, 1, 19),
        Sexe::M,
        "99123",
        None,
    );
    let adresse = adresse(
        "Monsieur SERGE VOLKOV",
        "8 RUE PASTEUR",
        "69007 LYON",
        "FRANCE",
        "99100",
        Date::ymd(2019, 3, 11),
    );
    let residence = Residence {
        reside_en_france: true,
        date_depart_declaree: None,
        jours_hors_france_annee_civile: 0,
        source: "DECLARATION_ALLOCATAIRE",
    };
    let mut r = base(
        4,
        StatutDossier::Radie,
        ("69003", "CAF du Rhône"),
        allocataire,
        adresse,
        residence,
    );
    let fin = Some((Date::ymd(2025, 3, 31), Motif::Deces));
    r.radiation = Some(Radiation {
        date_effet: Date::ymd(2025, 3, 31),
        motif: Motif::Deces,
        date_decision: Date::ymd(2025, 4, 14),
    });
    r.enfants = vec![enfant(
        "VOLKOV",
        "NATHALIE",
        Date::ymd(1988, 6, 2),
        Sexe::F,
        false,
    )];
    r.situation_familiale = SituationFamiliale::Veuf;
    r.prestations = vec![
        prestation(
            Code::Als,
            Etat::Clos,
            Date::ymd(2018, 10, 1),
            fin,
            24_318,
            verses(month(2024, 10), month(2025, 3), 24_318),
        ),
        prestation(
            Code::C2s,
            Etat::Clos,
            Date::ymd(2020, 1, 1),
            fin,
            0,
            Vec::new(),
        ),
    ];
    r.dernier_paiement = dernier(month(2025, 3));
    r.ressources_trimestrielles = ressources(
        "PENSIONS_RETRAITE",
        &[
            ("2024-Q1", 285_000),
            ("2024-Q2", 285_000),
            ("2024-Q3", 291_000),
            ("2024-Q4", 291_000),
        ],
    );
    r.mise_a_jour = at(Date::ymd(2025, 4, 14), 6, 0);
    r
}
