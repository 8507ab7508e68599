//! The typed CAF dossier record (schema version 1), serialised exactly as
//! the CAF record schema ([`crate::policy::schema`]) describes: every top-level key present, `null` where absent.

use serde::Serialize;

use super::calendar::{Date, Month, Timestamp};

pub(super) const SCHEMA_VERSION: &str = "1";

/// A euro amount in cents, serialised as a decimal string with two decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(super) struct Cents(pub(super) i64);

impl std::fmt::Display for Cents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl Serialize for Cents {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum StatutDossier {
    Actif,
    Suspendu,
    Radie,
    EnCoursAffiliation,
}

/// Why a dossier was radiated; also used as a benefit's `motif_fin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum Motif {
    ResidenceHorsFrance,
    FinDeDroits,
    Deces,
    MutationAutreOrganisme,
    NonReponseControle,
    DemandeAllocataire,
    #[default]
    Autre,
}

impl Motif {
    pub(super) const ALL: [Motif; 7] = [
        Motif::ResidenceHorsFrance,
        Motif::FinDeDroits,
        Motif::Deces,
        Motif::MutationAutreOrganisme,
        Motif::NonReponseControle,
        Motif::DemandeAllocataire,
        Motif::Autre,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(super) enum Sexe {
    M,
    F,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum SituationFamiliale {
    Celibataire,
    Couple,
    ParentIsole,
    Veuf,
}

/// A benefit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum Code {
    Af,
    Cf,
    Ars,
    Asf,
    Aeeh,
    Ajpp,
    PajePn,
    PajePa,
    PajeAb,
    PajeCmg,
    Prepare,
    Apl,
    Alf,
    Als,
    Rsa,
    Ppa,
    Aah,
    C2s,
}

impl Code {
    pub(super) const fn libelle(self) -> &'static str {
        match self {
            Code::Af => "Allocations familiales",
            Code::Cf => "Complément familial",
            Code::Ars => "Allocation de rentrée scolaire",
            Code::Asf => "Allocation de soutien familial",
            Code::Aeeh => "Allocation d'éducation de l'enfant handicapé",
            Code::Ajpp => "Allocation journalière de présence parentale",
            Code::PajePn => "Prime à la naissance",
            Code::PajePa => "Prime à l'adoption",
            Code::PajeAb => "Allocation de base de la PAJE",
            Code::PajeCmg => "Complément de libre choix du mode de garde",
            Code::Prepare => "Prestation partagée d'éducation de l'enfant",
            Code::Apl => "Aide personnalisée au logement",
            Code::Alf => "Allocation de logement familiale",
            Code::Als => "Allocation de logement sociale",
            Code::Rsa => "Revenu de solidarité active",
            Code::Ppa => "Prime d'activité",
            Code::Aah => "Allocation aux adultes handicapés",
            Code::C2s => "Complémentaire santé solidaire",
        }
    }

    /// The residence rule: a benefit ends once its holder has spent more than
    /// this many days abroad in a calendar year (family benefits and minima 92,
    /// housing aid 122; the C2S is not tied to it).
    pub(super) const fn days_abroad_limit(self) -> Option<i64> {
        match self {
            Code::Apl | Code::Alf | Code::Als => Some(122),
            Code::C2s => None,
            _ => Some(92),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum Etat {
    EnCours,
    Suspendu,
    Clos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum StatutPaiement {
    Verse,
    NonVerse,
    Retenu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum StatutIndu {
    Notifie,
    EnRecouvrement,
    Solde,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Radiation {
    pub(super) date_effet: Date,
    pub(super) motif: Motif,
    pub(super) date_decision: Date,
}

/// Not in the API Particulier schema: shaped like `radiation`, with its own motives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Suspension {
    pub(super) date_effet: Date,
    pub(super) motif: &'static str,
    pub(super) date_decision: Date,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Personne {
    pub(super) nom_naissance: String,
    pub(super) nom_usage: Option<String>,
    pub(super) prenoms: String,
    pub(super) date_naissance: Date,
    pub(super) sexe: Sexe,
    pub(super) code_cog_insee_pays_naissance: String,
    pub(super) code_cog_insee_commune_naissance: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Enfant {
    pub(super) nom_naissance: String,
    pub(super) nom_usage: Option<String>,
    pub(super) prenoms: String,
    pub(super) date_naissance: Date,
    pub(super) sexe: Sexe,
    pub(super) a_charge: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Adresse {
    pub(super) destinataire: String,
    pub(super) complement_information: Option<String>,
    pub(super) complement_information_geographique: Option<String>,
    pub(super) numero_libelle_voie: Option<String>,
    pub(super) lieu_dit: Option<String>,
    pub(super) code_postal_ville: String,
    pub(super) pays: String,
    pub(super) code_cog_insee_pays: String,
    pub(super) date_derniere_maj: Date,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Residence {
    pub(super) reside_en_france: bool,
    pub(super) date_depart_declaree: Option<Date>,
    pub(super) jours_hors_france_annee_civile: i64,
    pub(super) source: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct QuotientFamilial {
    pub(super) fournisseur: &'static str,
    pub(super) valeur: i64,
    pub(super) annee: i64,
    pub(super) mois: i64,
    pub(super) annee_calcul: i64,
    pub(super) mois_calcul: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Paiement {
    pub(super) mois_droit: Month,
    pub(super) date_versement: Date,
    pub(super) montant_eur: Cents,
    pub(super) statut: StatutPaiement,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Prestation {
    pub(super) code: Code,
    pub(super) libelle: &'static str,
    pub(super) etat: Etat,
    pub(super) avec_majoration: Option<bool>,
    pub(super) date_debut_droit: Date,
    pub(super) date_fin_droit: Option<Date>,
    pub(super) motif_fin: Option<Motif>,
    pub(super) montant_mensuel_eur: Cents,
    pub(super) paiements: Vec<Paiement>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct DernierPaiement {
    pub(super) date_versement: Date,
    pub(super) mois_droit: Month,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Indu {
    pub(super) prestation: Code,
    pub(super) montant_eur: Cents,
    pub(super) periode_debut: Month,
    pub(super) periode_fin: Month,
    pub(super) statut: StatutIndu,
    pub(super) date_notification: Date,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Controle {
    pub(super) controle_en_cours: bool,
    pub(super) signalement_fraude: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Ressource {
    pub(super) trimestre: String,
    pub(super) montant_total_eur: Cents,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
}

/// One dossier, in the field order of the schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Record {
    pub(super) schema_version: &'static str,
    pub(super) numero_allocataire: String,
    pub(super) code_postal_caf: &'static str,
    pub(super) caf_organisme: &'static str,
    pub(super) nir: String,
    pub(super) regime: &'static str,
    pub(super) statut_dossier: StatutDossier,
    pub(super) radiation: Option<Radiation>,
    pub(super) suspension: Option<Suspension>,
    pub(super) allocataire: Personne,
    pub(super) conjoint: Option<Personne>,
    pub(super) enfants: Vec<Enfant>,
    pub(super) situation_familiale: SituationFamiliale,
    pub(super) adresse: Adresse,
    pub(super) residence: Residence,
    pub(super) quotient_familial: Option<QuotientFamilial>,
    pub(super) prestations: Vec<Prestation>,
    pub(super) dernier_paiement: Option<DernierPaiement>,
    pub(super) indus: Vec<Indu>,
    pub(super) controle: Controle,
    pub(super) ressources_trimestrielles: Vec<Ressource>,
    pub(super) mise_a_jour: Timestamp,
}

/// The most recent `VERSE` payment over all benefits, as `dernier_paiement` reports it.
pub(super) fn dernier_paiement(prestations: &[Prestation]) -> Option<DernierPaiement> {
    prestations
        .iter()
        .flat_map(|p| &p.paiements)
        .filter(|p| p.statut == StatutPaiement::Verse)
        .max_by_key(|p| (p.date_versement, p.mois_droit))
        .map(|p| DernierPaiement {
            date_versement: p.date_versement,
            mois_droit: p.mois_droit,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_a_string_with_two_decimals() {
        assert_eq!(
            serde_json::to_value(Cents(63_571)).ok(),
            Some(serde_json::json!("635.71"))
        );
        assert_eq!(Cents(0).to_string(), "0.00");
        assert_eq!(Cents(5).to_string(), "0.05");
        assert_eq!(Cents(-120).to_string(), "-1.20");
    }

    #[test]
    fn enumerations_serialise_with_the_schema_spelling() {
        fn text<T: Serialize>(value: &T) -> String {
            serde_json::to_string(value).unwrap_or_default()
        }
        assert_eq!(
            text(&StatutDossier::EnCoursAffiliation),
            "\"en_cours_affiliation\""
        );
        assert_eq!(
            text(&Motif::MutationAutreOrganisme),
            "\"MUTATION_AUTRE_ORGANISME\""
        );
        assert_eq!(text(&Code::PajeCmg), "\"PAJE_CMG\"");
        assert_eq!(text(&Code::C2s), "\"C2S\"");
        assert_eq!(text(&Code::Prepare), "\"PREPARE\"");
        assert_eq!(text(&Etat::EnCours), "\"EN_COURS\"");
        assert_eq!(text(&StatutPaiement::NonVerse), "\"NON_VERSE\"");
        assert_eq!(text(&StatutIndu::EnRecouvrement), "\"EN_RECOUVREMENT\"");
        assert_eq!(text(&SituationFamiliale::ParentIsole), "\"PARENT_ISOLE\"");
    }
}
