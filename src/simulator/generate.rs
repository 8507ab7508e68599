//! One generated dossier, rebuilt on demand from `(seed, index)` and its identity.
//!
//! The order of the steps matters: events (radiation, suspension, residence)
//! come first, then the household on the snapshot date, then its benefits,
//! which the events end or suspend, then what derives from them (overpayments,
//! last payment, control flags, resources, quotient familial).

use super::benefits::{self, Events, Household};
use super::calendar::{Date, Month, TODAY, Timestamp, last_paid_month};
use super::people::{self, CAFS, COUNTRIES, Country, Identity};
use super::record::{
    Cents, Code, Controle, Etat, Indu, Motif, Prestation, QuotientFamilial, Radiation, Record,
    Residence, Ressource, SCHEMA_VERSION, Sexe, SituationFamiliale, StatutDossier, StatutIndu,
    StatutPaiement, Suspension, dernier_paiement,
};
use super::rng::Rng;

const STREAM_DOSSIER: u64 = 2;

const SUSPENSION_MOTIFS: [&str; 4] = [
    "CONTROLE_EN_COURS",
    "PIECES_JUSTIFICATIVES_MANQUANTES",
    "RESSOURCES_NON_DECLAREES",
    "RESIDENCE_A_VERIFIER",
];

const RESIDENCE_SOURCES: [&str; 3] = [
    "DECLARATION_ALLOCATAIRE",
    "CONTROLE_CAF",
    "ECHANGE_INTER_ADMINISTRATIONS",
];

/// Where the allocataire lives and how long they were abroad this calendar year.
struct Abroad {
    country: Country,
    depart: Date,
}

struct Timeline {
    statut: StatutDossier,
    /// The date the dossier describes: the radiation date for a radiated one, else today.
    as_of: Date,
    radiation: Option<Radiation>,
    suspension: Option<Suspension>,
    abroad: Option<Abroad>,
    days_abroad: i64,
    over_92: Option<Date>,
    over_122: Option<Date>,
}

/// The first date on which someone who left on `depart` and stayed abroad has
/// spent more than `limit` days abroad in one calendar year, if that is by today.
fn crossing(depart: Date, limit: i64) -> Option<Date> {
    let next_year = Date::ymd(depart.year() + 1, 1, 1);
    let start = if depart.days_until(next_year) > limit {
        depart
    } else {
        next_year
    };
    let date = start.add_days(limit + 1);
    (date <= TODAY).then_some(date)
}

fn days_abroad_this_year(depart: Date) -> i64 {
    depart
        .max(Date::ymd(TODAY.year(), 1, 1))
        .days_until(TODAY)
        .max(0)
}

fn abroad_since(rng: &mut Rng, depart: Date) -> (Abroad, i64, Option<Date>, Option<Date>) {
    let abroad = Abroad {
        country: rng.pick(&COUNTRIES),
        depart,
    };
    (
        abroad,
        days_abroad_this_year(depart),
        crossing(depart, 92),
        crossing(depart, 122),
    )
}

fn timeline(rng: &mut Rng, statut: StatutDossier) -> Timeline {
    let mut radiation = None;
    let mut abroad = None;
    let (mut days_abroad, mut over_92, mut over_122) = (0, None, None);
    if statut == StatutDossier::Radie {
        let motif = rng.pick(&Motif::ALL);
        let month = if motif == Motif::ResidenceHorsFrance {
            let first = Date::ymd(2021, 6, 1);
            let depart = first.add_days(rng.range(0, first.days_until(Date::ymd(2026, 6, 1))));
            let (a, days, o92, o122) = abroad_since(rng, depart);
            (abroad, days_abroad, over_92, over_122) = (Some(a), days, o92, o122);
            over_92.map_or(depart.month(), Date::month)
        } else {
            let first = Month::new(2021, 1);
            let month = first.add(rng.range(0, first.months_until(last_paid_month(TODAY))));
            if rng.chance(0.15) {
                let depart = month.first_day().add_days(-rng.range(10, 600));
                let (a, days, o92, o122) = abroad_since(rng, depart);
                (abroad, days_abroad, over_92, over_122) = (Some(a), days, o92, o122);
            }
            month
        };
        let date_effet = month.last_day();
        let date_decision = date_effet
            .add_days(rng.range(3, 40))
            .min(TODAY.add_days(-1));
        radiation = Some(Radiation {
            date_effet,
            motif,
            date_decision,
        });
    } else {
        let p_abroad = if statut == StatutDossier::Suspendu {
            0.45
        } else {
            0.3
        };
        if rng.chance(p_abroad) {
            let days = match rng.below(100) {
                0..=49 => rng.range(5, 92),
                50..=69 => rng.range(93, 122),
                _ => rng.range(123, 900),
            };
            let (a, d, o92, o122) = abroad_since(rng, TODAY.add_days(-days));
            (abroad, days_abroad, over_92, over_122) = (Some(a), d, o92, o122);
        }
    }
    if abroad.is_none() {
        // Residents of France: short trips, sometimes long enough to end benefits.
        days_abroad = match rng.below(100) {
            0..=87 => rng.range(0, 40),
            88..=94 => rng.range(93, 122),
            _ => rng.range(123, 170),
        };
        let over =
            |limit: i64| (days_abroad > limit).then(|| TODAY.add_days(-(days_abroad - limit - 1)));
        (over_92, over_122) = (over(92), over(122));
    }
    let suspension = (statut == StatutDossier::Suspendu).then(|| {
        let first = Month::new(2025, 10);
        let month = first.add(rng.range(0, first.months_until(TODAY.month().add(-1))));
        let motif = if abroad.is_some() && rng.chance(0.7) {
            "RESIDENCE_A_VERIFIER"
        } else {
            rng.pick(&SUSPENSION_MOTIFS)
        };
        let date_effet = month.first_day();
        Suspension {
            date_effet,
            motif,
            date_decision: date_effet.add_days(-rng.range(2, 20)),
        }
    });
    let as_of = radiation.as_ref().map_or(TODAY, |r| r.date_effet);
    Timeline {
        statut,
        as_of,
        radiation,
        suspension,
        abroad,
        days_abroad,
        over_92,
        over_122,
    }
}

fn pick_statut(rng: &mut Rng) -> StatutDossier {
    match rng.below(100) {
        0..=54 => StatutDossier::Actif,
        55..=66 => StatutDossier::Suspendu,
        67..=91 => StatutDossier::Radie,
        _ => StatutDossier::EnCoursAffiliation,
    }
}

/// Builds generated dossier number `index` of the dataset with this seed.
pub(super) fn dossier(seed: u64, index: u64, numero: String, identity: &Identity) -> Record {
    let mut rng = Rng::for_stream(seed, &[STREAM_DOSSIER, index]);
    let rng = &mut rng;
    let statut = pick_statut(rng);
    let caf = rng.pick(&CAFS);
    let t = timeline(rng, statut);

    let mut allocataire = people::allocataire(rng, identity);
    let conjoint = rng
        .chance(0.45)
        .then(|| people::conjoint(rng, &allocataire));
    let mut family_name = allocataire.nom_naissance.clone();
    if let Some(c) = &conjoint
        && allocataire.sexe == Sexe::F
        && c.sexe == Sexe::M
        && rng.chance(0.5)
    {
        allocataire.nom_usage = Some(c.nom_naissance.clone());
        family_name = c.nom_naissance.clone();
    }
    let count = match rng.below(100) {
        0..=34 => 0,
        35..=59 => 1,
        60..=81 => 2,
        82..=93 => 3,
        _ => 4,
    };
    let enfants = people::children(
        rng,
        count,
        allocataire.date_naissance,
        &family_name,
        t.as_of,
    );
    let situation_familiale = if conjoint.is_some() {
        SituationFamiliale::Couple
    } else if enfants.iter().any(|e| e.a_charge) {
        SituationFamiliale::ParentIsole
    } else if allocataire.date_naissance.age_on(t.as_of) >= 50 && rng.chance(0.25) {
        SituationFamiliale::Veuf
    } else {
        SituationFamiliale::Celibataire
    };

    let adresse = match &t.abroad {
        Some(a) => {
            let updated = a.depart.add_days(rng.range(0, 30)).min(TODAY.add_days(-1));
            people::foreign_address(rng, &allocataire, &a.country, updated)
        }
        None => {
            let updated = t.as_of.add_days(-rng.range(1, 5 * 365));
            people::french_address(rng, &allocataire, &caf, updated)
        }
    };
    let residence = Residence {
        reside_en_france: t.abroad.is_none(),
        date_depart_declaree: t.abroad.as_ref().map(|a| a.depart),
        jours_hors_france_annee_civile: t.days_abroad,
        source: if t.abroad.is_some() {
            rng.pick(&RESIDENCE_SOURCES)
        } else {
            "DECLARATION_ALLOCATAIRE"
        },
    };

    let household = Household {
        as_of: t.as_of,
        allocataire_birth: allocataire.date_naissance,
        enfants: &enfants,
        couple: conjoint.is_some(),
        parent_isole: situation_familiale == SituationFamiliale::ParentIsole,
    };
    let mut plans = benefits::plan(rng, &household);
    if statut == StatutDossier::EnCoursAffiliation {
        // A dossier being opened: a few benefits granted from last month or this one, nothing paid yet.
        let keep = if rng.chance(0.4) { 0 } else { rng.range(1, 3) };
        plans.retain(|p| p.end.is_none());
        plans.truncate(usize::try_from(keep).unwrap_or(0));
        for plan in &mut plans {
            plan.start = TODAY.month().add(-rng.range(0, 1));
        }
    }
    let events = Events {
        radiation: t
            .radiation
            .as_ref()
            .map(|r| (r.date_effet.month(), r.motif)),
        over_92: t.over_92.map(Date::month),
        over_122: t.over_122.map(Date::month),
        suspension: t.suspension.as_ref().map(|s| s.date_effet.month()),
        last_paid: last_paid_month(TODAY),
    };
    let mut prestations = benefits::settle(rng, plans, &events);

    let indus = overpayments(rng, &t, &mut prestations);
    let dernier = dernier_paiement(&prestations);
    let controle = controle(rng, &t, &prestations, &indus);
    let ressources = ressources(
        rng,
        &t,
        &prestations,
        allocataire.date_naissance.age_on(t.as_of),
    );
    let quotient_familial = quotient(
        rng,
        &t,
        &prestations,
        &ressources,
        conjoint.is_some(),
        &enfants,
    );

    let latest_event = [
        t.radiation.as_ref().map(|r| r.date_decision),
        t.suspension.as_ref().map(|s| s.date_decision),
        dernier.as_ref().map(|d| d.date_versement),
        indus.iter().map(|i| i.date_notification).max(),
        Some(adresse.date_derniere_maj),
        (statut != StatutDossier::Radie).then(|| TODAY.add_days(-rng.range(1, 20))),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(t.as_of)
    .min(TODAY);
    let mise_a_jour = Timestamp {
        date: latest_event,
        seconds_of_day: rng.range(1, 6) * 3600 + rng.range(0, 11) * 300,
    };

    Record {
        schema_version: SCHEMA_VERSION,
        numero_allocataire: numero,
        code_postal_caf: caf.code_postal,
        caf_organisme: caf.organisme,
        nir: identity.nir_str().to_owned(),
        regime: "CNAF",
        statut_dossier: statut,
        radiation: t.radiation.clone(),
        suspension: t.suspension.clone(),
        allocataire,
        conjoint,
        enfants,
        situation_familiale,
        adresse,
        residence,
        quotient_familial,
        prestations,
        dernier_paiement: dernier,
        indus,
        controle,
        ressources_trimestrielles: ressources,
        mise_a_jour,
    }
}

/// Overpayments on paid benefits; one being recovered withholds later payments.
fn overpayments(rng: &mut Rng, t: &Timeline, prestations: &mut [Prestation]) -> Vec<Indu> {
    let left_for_residence = t
        .radiation
        .as_ref()
        .is_some_and(|r| r.motif == Motif::ResidenceHorsFrance);
    let p = if left_for_residence {
        0.6
    } else if t.statut == StatutDossier::Suspendu {
        0.4
    } else {
        0.18
    };
    if !rng.chance(p) {
        return Vec::new();
    }
    let last_paid = last_paid_month(TODAY);
    let mut indus: Vec<Indu> = Vec::new();
    for _ in 0..rng.range(1, 2) {
        let candidates: Vec<usize> = (0..prestations.len())
            .filter(|&i| {
                prestations.get(i).is_some_and(|p| {
                    p.montant_mensuel_eur.0 > 0
                        && p.date_debut_droit.month() <= last_paid
                        && !indus.iter().any(|x| x.prestation == p.code)
                })
            })
            .collect();
        if candidates.is_empty() {
            break;
        }
        let Some(p) = prestations.get_mut(rng.pick(&candidates)) else {
            break;
        };
        let start = p.date_debut_droit.month();
        let paid_until = p
            .date_fin_droit
            .map_or(last_paid, |d| d.month().min(last_paid));
        let (from, to) = match (&t.abroad, p.motif_fin) {
            (Some(a), Some(Motif::ResidenceHorsFrance)) => (
                start
                    .max(a.depart.month())
                    .max(paid_until.add(-5))
                    .min(paid_until),
                paid_until,
            ),
            _ => {
                // Overpayments are found within three years.
                let earliest = start.max(paid_until.add(-36));
                let to = earliest.add(rng.range(0, earliest.months_until(paid_until)));
                (start.max(to.add(-rng.range(0, 2))), to)
            }
        };
        let months = from.months_until(to) + 1;
        let full = p.montant_mensuel_eur.0 * months;
        let montant = if rng.chance(0.7) {
            full
        } else {
            full * rng.range(20, 90) / 100
        };
        let date_notification = to
            .add(rng.range(1, 3))
            .first_day()
            .add_days(rng.range(1, 26))
            .min(TODAY.add_days(-1));
        let statut = if date_notification.days_until(TODAY) < 45 {
            if rng.chance(0.6) {
                StatutIndu::Notifie
            } else {
                StatutIndu::EnRecouvrement
            }
        } else {
            match rng.below(100) {
                0..=49 => StatutIndu::EnRecouvrement,
                50..=84 => StatutIndu::Solde,
                _ => StatutIndu::Notifie,
            }
        };
        if statut == StatutIndu::EnRecouvrement && p.etat == Etat::EnCours {
            for paiement in p
                .paiements
                .iter_mut()
                .filter(|x| x.date_versement > date_notification)
            {
                if paiement.statut == StatutPaiement::Verse {
                    paiement.statut = StatutPaiement::Retenu;
                }
            }
        }
        indus.push(Indu {
            prestation: p.code,
            montant_eur: Cents(montant.max(1)),
            periode_debut: from,
            periode_fin: to,
            statut,
            date_notification,
        });
    }
    indus
}

fn controle(rng: &mut Rng, t: &Timeline, prestations: &[Prestation], indus: &[Indu]) -> Controle {
    let checking = t
        .suspension
        .as_ref()
        .is_some_and(|s| matches!(s.motif, "CONTROLE_EN_COURS" | "RESIDENCE_A_VERIFIER"));
    let paid_abroad = t.abroad.is_some()
        && prestations
            .iter()
            .any(|p| p.etat == Etat::EnCours && p.code != Code::C2s);
    let recovering = indus.iter().any(|i| i.statut == StatutIndu::EnRecouvrement);
    Controle {
        controle_en_cours: checking || rng.chance(if paid_abroad { 0.3 } else { 0.08 }),
        signalement_fraude: rng.chance(0.04)
            || (paid_abroad && rng.chance(0.25))
            || (recovering && rng.chance(0.15)),
    }
}

fn ressources(rng: &mut Rng, t: &Timeline, prestations: &[Prestation], age: i64) -> Vec<Ressource> {
    let has = |code: Code| prestations.iter().any(|p| p.code == code);
    if !(has(Code::Rsa) || has(Code::Ppa) || has(Code::Aah) || rng.chance(0.3)) {
        return Vec::new();
    }
    let kind = if age >= 62 {
        "PENSIONS_RETRAITE"
    } else if has(Code::Ppa) {
        "SALAIRES"
    } else if has(Code::Rsa) {
        if rng.chance(0.5) {
            "AUCUNE"
        } else {
            "INDEMNITES_CHOMAGE"
        }
    } else if has(Code::Aah) {
        "PENSION_INVALIDITE"
    } else {
        match rng.below(3) {
            0 => "REVENUS_INDEPENDANTS",
            1 => "INDEMNITES_CHOMAGE",
            _ => "SALAIRES",
        }
    };
    let month = t.as_of.month();
    let this_quarter = Month::new(month.year(), (month.number() - 1) / 3 * 3 + 1);
    let base = match kind {
        "AUCUNE" => 0,
        "PENSIONS_RETRAITE" => rng.range(2_400, 6_000),
        "INDEMNITES_CHOMAGE" => rng.range(1_800, 4_500),
        "PENSION_INVALIDITE" => rng.range(600, 2_400),
        "REVENUS_INDEPENDANTS" => rng.range(0, 9_000),
        _ => rng.range(1_500, 7_500),
    };
    (1..=4)
        .rev()
        .map(|k| {
            let amount = if base == 0 {
                0
            } else {
                (base + rng.range(-300, 300)).max(0) * 100 + rng.range(0, 99)
            };
            Ressource {
                trimestre: this_quarter.add(-3 * k).quarter_label(),
                montant_total_eur: Cents(amount),
                kind,
            }
        })
        .collect()
}

fn quotient(
    rng: &mut Rng,
    t: &Timeline,
    prestations: &[Prestation],
    ressources: &[Ressource],
    couple: bool,
    enfants: &[super::record::Enfant],
) -> Option<QuotientFamilial> {
    let family = prestations
        .iter()
        .any(|p| p.code.days_abroad_limit().is_some() && p.code != Code::Rsa);
    if t.statut == StatutDossier::EnCoursAffiliation && rng.chance(0.6)
        || !(family || rng.chance(0.3))
    {
        return None;
    }
    let n = enfants.iter().filter(|e| e.a_charge).count() as i64;
    // Parts in half-units: 2 for a single adult, 4 for a couple, +1 per child for
    // the first two, +2 from the third, +1 for a single parent.
    let halves = if couple { 4 } else { 2 }
        + n.min(2)
        + 2 * (n - 2).max(0)
        + if !couple && n > 0 { 1 } else { 0 };
    let yearly_cents: i64 = ressources.iter().map(|r| r.montant_total_eur.0).sum();
    let benefits: i64 = prestations
        .iter()
        .filter(|p| p.etat == Etat::EnCours)
        .map(|p| p.montant_mensuel_eur.0)
        .sum();
    let monthly_euros = (yearly_cents / 12 + benefits) / 100;
    let month = if t.statut == StatutDossier::Radie {
        t.as_of.month()
    } else {
        TODAY.month().add(-1)
    };
    let calcul = month.add(-rng.range(1, 3));
    Some(QuotientFamilial {
        fournisseur: "CNAF",
        valeur: (monthly_euros * 2 / halves.max(1)).clamp(0, 3_000),
        annee: month.year(),
        mois: month.number(),
        annee_calcul: calcul.year(),
        mois_calcul: calcul.number(),
    })
}
