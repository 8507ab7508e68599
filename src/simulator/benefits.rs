//! Benefits of a generated dossier: which ones a household gets, when they end
//! (naturally, on radiation, or by the residence rule), and their payments.

use super::calendar::{Date, Month};
use super::record::{Cents, Code, Enfant, Etat, Motif, Paiement, Prestation, StatutPaiement};
use super::rng::Rng;

/// Payments shown per benefit: the last six months due.
const PAYMENT_HISTORY_MONTHS: i64 = 6;

/// A benefit before the dossier's events are applied to it.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) code: Code,
    pub(super) start: Month,
    pub(super) end: Option<(Month, Motif)>,
    pub(super) cents: i64,
    pub(super) majoration: Option<bool>,
}

/// What the planner needs to know about the household on the snapshot date.
pub(super) struct Household<'a> {
    pub(super) as_of: Date,
    pub(super) allocataire_birth: Date,
    pub(super) enfants: &'a [Enfant],
    pub(super) couple: bool,
    pub(super) parent_isole: bool,
}

fn random_month(rng: &mut Rng, from: Month, to: Month) -> Option<Month> {
    (from <= to).then(|| from.add(rng.range(0, from.months_until(to))))
}

fn percent(cents: i64, pct: i64) -> i64 {
    cents * pct / 100
}

/// The benefits a household plausibly receives, each starting before `as_of`.
pub(super) fn plan(rng: &mut Rng, h: &Household<'_>) -> Vec<Plan> {
    let latest = h.as_of.month().add(-1);
    let adult = h
        .allocataire_birth
        .add_years(18)
        .month()
        .max(Month::new(2008, 1));
    let in_charge: Vec<&Enfant> = h.enfants.iter().filter(|e| e.a_charge).collect();
    let n = in_charge.len() as i64;
    let youngest = in_charge.last().map(|e| e.date_naissance);
    let age = h.allocataire_birth.age_on(h.as_of);
    let mut plans = Vec::new();
    let mut push = |code: Code,
                    start: Option<Month>,
                    end: Option<(Month, Motif)>,
                    cents: i64,
                    majoration: Option<bool>| {
        if let Some(start) = start {
            plans.push(Plan {
                code,
                start,
                end,
                cents,
                majoration,
            });
        }
    };

    if let Some(second) = in_charge.get(1) {
        let cents = match n {
            2 => 15_105,
            3 => 34_455,
            _ => 53_805,
        };
        let start = second.date_naissance.month().add(1).max(adult);
        push(
            Code::Af,
            (start <= latest).then_some(start),
            None,
            cents,
            None,
        );
    }
    if let Some(third) = in_charge.get(2)
        && rng.chance(0.6)
    {
        let from = third.date_naissance.month().add(36).max(adult);
        push(
            Code::Cf,
            random_month(rng, from, latest),
            None,
            19_971,
            None,
        );
    }
    if h.parent_isole && n > 0 && rng.chance(0.45) {
        let from = in_charge
            .first()
            .map_or(adult, |e| e.date_naissance.month().add(1))
            .max(adult);
        push(
            Code::Asf,
            random_month(rng, from, latest),
            None,
            19_919 * n.min(3),
            None,
        );
    }
    if n > 0 && rng.chance(0.06) {
        let from = youngest.map_or(adult, |b| b.month().add(12)).max(adult);
        push(
            Code::Aeeh,
            random_month(rng, from, latest),
            None,
            15_105,
            None,
        );
    }
    if n > 0 && rng.chance(0.02) {
        let start = random_month(rng, latest.add(-24), latest.add(-3));
        let end = start.map(|s| (s.add(2), Motif::FinDeDroits));
        push(Code::Ajpp, start, end, 6_580 * rng.range(5, 22), None);
    }
    if let Some(birth) = youngest {
        let months_old = birth.month().months_until(h.as_of.month());
        if months_old <= 18 && rng.chance(0.9) {
            let month = birth.month().add(-2);
            push(
                Code::PajePn,
                Some(month),
                Some((month, Motif::FinDeDroits)),
                106_636,
                None,
            );
        }
        if rng.chance(0.01) {
            let month = birth.month().add(rng.range(12, 36));
            push(
                Code::PajePa,
                (month <= latest).then_some(month),
                Some((month, Motif::FinDeDroits)),
                213_272,
                None,
            );
        }
        let start = birth.month().add(1);
        if months_old < 36 && rng.chance(0.8) {
            let cents = if rng.chance(0.7) { 19_679 } else { 9_840 };
            push(
                Code::PajeAb,
                (start <= latest).then_some(start),
                None,
                cents,
                None,
            );
        } else if (36..72).contains(&months_old) && rng.chance(0.3) {
            push(
                Code::PajeAb,
                Some(start),
                Some((birth.month().add(35), Motif::FinDeDroits)),
                19_679,
                None,
            );
        }
        if months_old < 72 && rng.chance(0.35) {
            let from = birth.month().add(3);
            push(
                Code::PajeCmg,
                random_month(rng, from, latest),
                None,
                rng.range(150, 800) * 100 + rng.range(0, 99),
                None,
            );
        }
        if months_old < 36 && rng.chance(0.2) {
            let start = birth.month().add(2);
            push(
                Code::Prepare,
                (start <= latest).then_some(start),
                None,
                45_969,
                None,
            );
        }
    }
    // The back-to-school allowance is paid once, for August, for children aged 6 to 18.
    let ars_year = if h.as_of >= Date::ymd(h.as_of.year(), 8, 20) {
        h.as_of.year()
    } else {
        h.as_of.year() - 1
    };
    let rentree = Date::ymd(ars_year, 9, 15);
    let ars: i64 = in_charge
        .iter()
        .map(|e| match e.date_naissance.age_on(rentree) {
            6..=10 => 42_348,
            11..=14 => 44_685,
            15..=18 => 46_233,
            _ => 0,
        })
        .sum();
    if ars > 0 && rng.chance(0.85) {
        let august = Month::new(ars_year, 8);
        push(
            Code::Ars,
            Some(august),
            Some((august, Motif::FinDeDroits)),
            ars,
            None,
        );
    }

    if rng.chance(0.55) {
        let code = if rng.chance(0.5) {
            Code::Apl
        } else if n > 0 || h.couple {
            Code::Alf
        } else {
            Code::Als
        };
        let start = random_month(rng, adult, latest);
        let end = natural_end(rng, start, latest, 0.1);
        push(
            code,
            start,
            end,
            rng.range(60, 420) * 100 + rng.range(0, 99),
            None,
        );
    }
    let rsa = (age >= 25 || n > 0) && rng.chance(0.22);
    if rsa {
        let mut cents = 64_652
            + if h.couple { 32_326 } else { 0 }
            + 19_396 * n.min(2)
            + 25_861 * (n - 2).max(0);
        if h.parent_isole {
            cents = percent(cents, 128);
        }
        cents = percent(cents, rng.range(70, 100));
        let start = random_month(rng, adult, latest);
        let end = natural_end(rng, start, latest, 0.15);
        push(Code::Rsa, start, end, cents, Some(h.parent_isole));
    } else if rng.chance(0.25) {
        let start = random_month(rng, adult, latest);
        let end = natural_end(rng, start, latest, 0.2);
        push(
            Code::Ppa,
            start,
            end,
            rng.range(40, 350) * 100 + rng.range(0, 99),
            None,
        );
    }
    if (20..64).contains(&age) && rng.chance(0.06) {
        let cents = if rng.chance(0.6) {
            103_332
        } else {
            rng.range(30_000, 103_332)
        };
        push(
            Code::Aah,
            random_month(rng, adult, latest),
            None,
            cents,
            None,
        );
    }
    if rng.chance(0.12) {
        push(
            Code::C2s,
            random_month(rng, adult.max(Month::new(2019, 11)), latest),
            None,
            0,
            None,
        );
    }
    // A dossier exists because something was granted: fall back to housing aid.
    if plans.is_empty() {
        let code = if n > 0 || h.couple {
            Code::Alf
        } else {
            Code::Als
        };
        if let Some(start) = random_month(rng, adult, latest) {
            let cents = rng.range(60, 420) * 100 + rng.range(0, 99);
            plans.push(Plan {
                code,
                start,
                end: None,
                cents,
                majoration: None,
            });
        }
    }
    plans
}

fn natural_end(
    rng: &mut Rng,
    start: Option<Month>,
    latest: Month,
    p: f64,
) -> Option<(Month, Motif)> {
    let start = start?;
    if rng.chance(p) {
        random_month(rng, start, latest).map(|m| (m, Motif::FinDeDroits))
    } else {
        None
    }
}

/// The dossier's events that end or suspend benefits.
pub(super) struct Events {
    /// The radiation month and motive.
    pub(super) radiation: Option<(Month, Motif)>,
    /// The months in which the days abroad went over 92 and over 122.
    pub(super) over_92: Option<Month>,
    pub(super) over_122: Option<Month>,
    /// The first month of a suspension.
    pub(super) suspension: Option<Month>,
    /// The last month whose payment has been made.
    pub(super) last_paid: Month,
}

impl Events {
    fn closure(&self, code: Code) -> Option<(Month, Motif)> {
        let residence = match code.days_abroad_limit() {
            Some(92) => self.over_92,
            Some(_) => self.over_122,
            None => None,
        };
        let residence = residence.map(|m| (m, Motif::ResidenceHorsFrance));
        [self.radiation, residence]
            .into_iter()
            .flatten()
            .min_by_key(|(m, _)| *m)
    }
}

/// Applies the events to the plans and lays out each benefit's payments.
pub(super) fn settle(rng: &mut Rng, plans: Vec<Plan>, events: &Events) -> Vec<Prestation> {
    plans
        .into_iter()
        .filter_map(|plan| {
            let end = match (plan.end, events.closure(plan.code)) {
                (Some(own), Some(event)) if event.0 < own.0 => Some(event),
                (None, event) => event,
                (own, _) => own,
            };
            if end.is_some_and(|(m, _)| m < plan.start) {
                return None;
            }
            // Nothing opens during a suspension, and nothing is paid for its months.
            if events.suspension.is_some_and(|u| plan.start >= u) {
                return None;
            }
            let etat = match (end, events.suspension) {
                (Some(_), _) => Etat::Clos,
                (None, Some(_)) => Etat::Suspendu,
                (None, None) => Etat::EnCours,
            };
            let paiements = payments(rng, &plan, end, events.suspension, events.last_paid);
            Some(Prestation {
                code: plan.code,
                libelle: plan.code.libelle(),
                etat,
                avec_majoration: plan.majoration,
                date_debut_droit: plan.start.first_day(),
                date_fin_droit: end.map(|(m, _)| m.last_day()),
                motif_fin: end.map(|(_, motif)| motif),
                montant_mensuel_eur: Cents(plan.cents),
                paiements,
            })
        })
        .collect()
}

fn payments(
    rng: &mut Rng,
    plan: &Plan,
    end: Option<(Month, Motif)>,
    suspended_from: Option<Month>,
    last_paid: Month,
) -> Vec<Paiement> {
    if plan.cents == 0 {
        return Vec::new();
    }
    let last = end.map_or(last_paid, |(m, _)| m.min(last_paid));
    let first = plan.start.max(last.add(1 - PAYMENT_HISTORY_MONTHS));
    // The month an event ends a benefit in is sometimes left unpaid.
    let unpaid_final =
        end.is_some_and(|(m, motif)| motif != Motif::FinDeDroits && m == last && rng.chance(0.4));
    (0..=first.months_until(last))
        .map(|k| {
            let month = first.add(k);
            let unpaid =
                suspended_from.is_some_and(|u| month >= u) || (unpaid_final && month == last);
            Paiement {
                mois_droit: month,
                date_versement: month.payment_date(),
                montant_eur: Cents(if unpaid { 0 } else { plan.cents }),
                statut: if unpaid {
                    StatutPaiement::NonVerse
                } else {
                    StatutPaiement::Verse
                },
            }
        })
        .collect()
}
