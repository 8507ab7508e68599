//! People and places: NIR identities, names, children and addresses, from
//! small tables of real INSEE codes.

use crate::domain::Nir;

use super::calendar::{Date, TODAY};
use super::record::{Adresse, Enfant, Personne, Sexe};
use super::rng::Rng;

/// The INSEE code of France as a country.
pub(super) const FRANCE: &str = "99100";

/// A country of residence abroad (real INSEE COG codes).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Country {
    pub(super) code: &'static str,
    pub(super) name: &'static str,
    pub(super) towns: &'static [&'static str],
    pub(super) streets: &'static [&'static str],
}

pub(super) const COUNTRIES: [Country; 8] = [
    Country {
        code: "99351",
        name: "TUNISIE",
        towns: &["1000 TUNIS", "2010 MANOUBA", "4000 SOUSSE", "3000 SFAX"],
        streets: &[
            "RUE DE MARSEILLE",
            "AVENUE HABIB BOURGUIBA",
            "RUE IBN KHALDOUN",
        ],
    },
    Country {
        code: "99350",
        name: "MAROC",
        towns: &[
            "20000 CASABLANCA",
            "10000 RABAT",
            "40000 MARRAKECH",
            "90000 TANGER",
        ],
        streets: &[
            "BOULEVARD ZERKTOUNI",
            "RUE IBN BATOUTA",
            "AVENUE MOHAMMED V",
        ],
    },
    Country {
        code: "99352",
        name: "ALGERIE",
        towns: &["16000 ALGER", "31000 ORAN", "25000 CONSTANTINE"],
        streets: &["RUE DIDOUCHE MOURAD", "BOULEVARD KRIM BELKACEM"],
    },
    Country {
        code: "99341",
        name: "SENEGAL",
        towns: &["10200 DAKAR", "32000 SAINT-LOUIS", "21000 THIES"],
        streets: &["AVENUE LEOPOLD SEDAR SENGHOR", "RUE CARNOT"],
    },
    Country {
        code: "99401",
        name: "CANADA",
        towns: &[
            "MONTREAL QC H2X 1Y4",
            "QUEBEC QC G1R 4P5",
            "TORONTO ON M5V 2T6",
        ],
        streets: &["RUE SAINT-DENIS", "RUE SHERBROOKE OUEST"],
    },
    Country {
        code: "99132",
        name: "ROYAUME-UNI",
        towns: &["LONDON SW1A 1AA", "MANCHESTER M1 1AE", "EDINBURGH EH1 1YZ"],
        streets: &["HIGH STREET", "CHURCH ROAD", "STATION ROAD"],
    },
    Country {
        code: "99134",
        name: "ESPAGNE",
        towns: &["28001 MADRID", "08001 BARCELONA", "29001 MALAGA"],
        streets: &["CALLE MAYOR", "AVENIDA DE AMERICA", "CALLE DEL SOL"],
    },
    Country {
        code: "99404",
        name: "ETATS-UNIS",
        towns: &[
            "NEW YORK NY 10001",
            "MIAMI FL 33101",
            "SAN FRANCISCO CA 94102",
        ],
        streets: &["MAIN STREET", "OAK AVENUE", "BROADWAY"],
    },
];

/// A CAF and a town of its area (code postal, organisme, town line, street).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Caf {
    pub(super) code_postal: &'static str,
    pub(super) organisme: &'static str,
    pub(super) town: &'static str,
}

pub(super) const CAFS: [Caf; 12] = [
    Caf {
        code_postal: "75001",
        organisme: "CAF de Paris",
        town: "PARIS",
    },
    Caf {
        code_postal: "69003",
        organisme: "CAF du Rhône",
        town: "LYON",
    },
    Caf {
        code_postal: "13003",
        organisme: "CAF des Bouches-du-Rhône",
        town: "MARSEILLE",
    },
    Caf {
        code_postal: "31000",
        organisme: "CAF de la Haute-Garonne",
        town: "TOULOUSE",
    },
    Caf {
        code_postal: "59000",
        organisme: "CAF du Nord",
        town: "LILLE",
    },
    Caf {
        code_postal: "33000",
        organisme: "CAF de la Gironde",
        town: "BORDEAUX",
    },
    Caf {
        code_postal: "67000",
        organisme: "CAF du Bas-Rhin",
        town: "STRASBOURG",
    },
    Caf {
        code_postal: "44000",
        organisme: "CAF de Loire-Atlantique",
        town: "NANTES",
    },
    Caf {
        code_postal: "06000",
        organisme: "CAF des Alpes-Maritimes",
        town: "NICE",
    },
    Caf {
        code_postal: "93000",
        organisme: "CAF de la Seine-Saint-Denis",
        town: "BOBIGNY",
    },
    Caf {
        code_postal: "20000",
        organisme: "CAF de la Corse-du-Sud",
        town: "AJACCIO",
    },
    Caf {
        code_postal: "20200",
        organisme: "CAF de la Haute-Corse",
        town: "BASTIA",
    },
];

const FRENCH_STREETS: [&str; 10] = [
    "RUE DE LA REPUBLIQUE",
    "AVENUE JEAN JAURES",
    "RUE VICTOR HUGO",
    "BOULEVARD GAMBETTA",
    "RUE PASTEUR",
    "RUE DES LILAS",
    "PLACE DE LA MAIRIE",
    "RUE DU GENERAL DE GAULLE",
    "ALLEE DES TILLEULS",
    "RUE JULES FERRY",
];

/// Birth communes (COG codes, Corsica included); a NIR carries the same five characters.
const BIRTH_COMMUNES: [&str; 24] = [
    "75112", "75118", "75120", "75115", "69383", "13201", "13208", "31555", "59350", "33063",
    "67482", "44109", "06088", "93066", "08105", "76540", "35238", "34172", "38185", "57463",
    "2A004", "2B033", "2A247", "2B096",
];

/// Birth countries abroad; in a NIR the department is 99 and the commune the country's number.
const BIRTH_COUNTRIES: [&str; 14] = [
    "99351", "99350", "99352", "99341", "99401", "99132", "99134", "99404", "99139", "99127",
    "99109", "99131", "99208", "99126",
];

const SURNAMES: [&str; 40] = [
    "MARTIN",
    "BERNARD",
    "THOMAS",
    "PETIT",
    "ROBERT",
    "RICHARD",
    "DURAND",
    "DUBOIS",
    "MOREAU",
    "LAURENT",
    "SIMON",
    "MICHEL",
    "LEFEBVRE",
    "LEROY",
    "ROUX",
    "DAVID",
    "BERTRAND",
    "MOREL",
    "FOURNIER",
    "GIRARD",
    "BONNET",
    "DUPONT",
    "LAMBERT",
    "FONTAINE",
    "ROUSSEAU",
    "VINCENT",
    "MULLER",
    "LEFEVRE",
    "FAURE",
    "ANDRE",
    "BEN AMOR",
    "EL IDRISSI",
    "BENALI",
    "DIALLO",
    "NDIAYE",
    "TRAORE",
    "NGUYEN",
    "PEREIRA",
    "GARCIA",
    "SANTORI",
];

const MALE_NAMES: [&str; 24] = [
    "JEAN", "PIERRE", "MICHEL", "ANDRE", "PHILIPPE", "NICOLAS", "JULIEN", "THOMAS", "KARIM",
    "MEHDI", "LEO", "LUCAS", "HUGO", "GABRIEL", "LOUIS", "ARTHUR", "MAMADOU", "YOUSSEF", "ANTOINE",
    "PAUL", "SAMIR", "ADAM", "NATHAN", "RAPHAEL",
];

const FEMALE_NAMES: [&str; 24] = [
    "MARIE",
    "JEANNE",
    "NATHALIE",
    "ISABELLE",
    "SYLVIE",
    "CATHERINE",
    "SOPHIE",
    "LAURE",
    "FATIMA",
    "AMINA",
    "EMMA",
    "JADE",
    "LOUISE",
    "ALICE",
    "CHLOE",
    "INES",
    "LEA",
    "MANON",
    "AISSATOU",
    "SARAH",
    "CAMILLE",
    "JULIE",
    "NOUR",
    "ROSE",
];

/// The facts a NIR encodes, kept for every generated dossier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Identity {
    pub(super) nir: [u8; 15],
    pub(super) sexe: Sexe,
    pub(super) birth_year: i64,
    pub(super) birth_month: i64,
    /// A commune COG code (born in France) or a `99xxx` country code.
    pub(super) birthplace: &'static str,
}

impl Identity {
    pub(super) fn nir_str(&self) -> &str {
        std::str::from_utf8(&self.nir).unwrap_or_default()
    }
}

/// Builds a NIR from its parts, with its mod-97 key.
pub(super) fn make_nir(
    sexe: Sexe,
    year: i64,
    month: i64,
    birthplace: &str,
    order: i64,
) -> Option<[u8; 15]> {
    let sex_digit = match sexe {
        Sexe::M => 1,
        Sexe::F => 2,
    };
    let body = format!(
        "{sex_digit}{:02}{month:02}{birthplace}{order:03}",
        year.rem_euclid(100)
    );
    let key = Nir::key_of(&body)?;
    format!("{body}{key:02}").into_bytes().try_into().ok()
}

/// A random adult identity (born 1950 to 2003), about one in five born abroad.
pub(super) fn identity(rng: &mut Rng) -> Option<Identity> {
    let sexe = if rng.chance(0.5) { Sexe::M } else { Sexe::F };
    let birth_year = rng.range(1950, 2003);
    let birth_month = rng.range(1, 12);
    let birthplace = if rng.chance(0.2) {
        rng.pick(&BIRTH_COUNTRIES)
    } else {
        rng.pick(&BIRTH_COMMUNES)
    };
    let order = rng.range(1, 999);
    let nir = make_nir(sexe, birth_year, birth_month, birthplace, order)?;
    Some(Identity {
        nir,
        sexe,
        birth_year,
        birth_month,
        birthplace,
    })
}

/// The birth country and commune codes of a birthplace code.
pub(super) fn birth_codes(birthplace: &str) -> (String, Option<String>) {
    if birthplace.starts_with("99") {
        (birthplace.to_owned(), None)
    } else {
        (FRANCE.to_owned(), Some(birthplace.to_owned()))
    }
}

fn prenoms(rng: &mut Rng, sexe: Sexe) -> String {
    let table: &[&str] = match sexe {
        Sexe::M => &MALE_NAMES,
        Sexe::F => &FEMALE_NAMES,
    };
    let first = rng.pick(table);
    let second = rng.pick(table);
    if rng.chance(0.4) && first != second {
        format!("{first} {second}")
    } else {
        first.to_owned()
    }
}

pub(super) fn surname(rng: &mut Rng) -> &'static str {
    rng.pick(&SURNAMES)
}

fn day_in_month(rng: &mut Rng, year: i64, month: i64) -> Date {
    let last = super::calendar::Month::new(year, month).last_day().day();
    Date::ymd(year, month, rng.range(1, last))
}

/// The allocataire described by an identity.
pub(super) fn allocataire(rng: &mut Rng, identity: &Identity) -> Personne {
    let (pays, commune) = birth_codes(identity.birthplace);
    Personne {
        nom_naissance: surname(rng).to_owned(),
        nom_usage: None,
        prenoms: prenoms(rng, identity.sexe),
        date_naissance: day_in_month(rng, identity.birth_year, identity.birth_month),
        sexe: identity.sexe,
        code_cog_insee_pays_naissance: pays,
        code_cog_insee_commune_naissance: commune,
    }
}

/// A spouse of about the allocataire's age, usually of the other sex.
pub(super) fn conjoint(rng: &mut Rng, allocataire: &Personne) -> Personne {
    let sexe = match (allocataire.sexe, rng.chance(0.95)) {
        (Sexe::M, true) | (Sexe::F, false) => Sexe::F,
        _ => Sexe::M,
    };
    let year = (allocataire.date_naissance.year() + rng.range(-8, 8)).min(TODAY.year() - 18);
    let birthplace = if rng.chance(0.3) {
        rng.pick(&BIRTH_COUNTRIES)
    } else {
        rng.pick(&BIRTH_COMMUNES)
    };
    let (pays, commune) = birth_codes(birthplace);
    let month = rng.range(1, 12);
    Personne {
        nom_naissance: surname(rng).to_owned(),
        nom_usage: None,
        prenoms: prenoms(rng, sexe),
        date_naissance: day_in_month(rng, year, month),
        sexe,
        code_cog_insee_pays_naissance: pays,
        code_cog_insee_commune_naissance: commune,
    }
}

/// Up to `count` children born while the parent was 19 to 44 and before `as_of`,
/// eldest first; a child under 20 on `as_of` is `a_charge`.
pub(super) fn children(
    rng: &mut Rng,
    count: u64,
    parent_birth: Date,
    family_name: &str,
    as_of: Date,
) -> Vec<Enfant> {
    let mut births: Vec<Date> = (0..count)
        .map(|_| {
            parent_birth
                .add_years(rng.range(19, 44))
                .add_days(rng.range(0, 364))
        })
        .filter(|birth| *birth < as_of.add_days(-30))
        .collect();
    births.sort();
    births
        .into_iter()
        .map(|birth| {
            let sexe = if rng.chance(0.5) { Sexe::M } else { Sexe::F };
            Enfant {
                nom_naissance: family_name.to_owned(),
                nom_usage: None,
                prenoms: prenoms(rng, sexe),
                date_naissance: birth,
                sexe,
                a_charge: birth.age_on(as_of) < 20,
            }
        })
        .collect()
}

fn civilite(sexe: Sexe) -> &'static str {
    match sexe {
        Sexe::M => "Monsieur",
        Sexe::F => "Madame",
    }
}

/// `Madame JEANNE MARTIN`: the first given name and the name in use.
pub(super) fn destinataire(person: &Personne) -> String {
    let first = person.prenoms.split(' ').next().unwrap_or_default();
    let name = person.nom_usage.as_deref().unwrap_or(&person.nom_naissance);
    format!("{} {first} {name}", civilite(person.sexe))
}

/// A postal address in the CAF's town.
pub(super) fn french_address(
    rng: &mut Rng,
    person: &Personne,
    caf: &Caf,
    updated: Date,
) -> Adresse {
    let building = rng.chance(0.2).then(|| {
        format!(
            "BATIMENT {} APPARTEMENT {}",
            rng.range(1, 9),
            rng.range(1, 60)
        )
    });
    Adresse {
        destinataire: destinataire(person),
        complement_information: building,
        complement_information_geographique: None,
        numero_libelle_voie: Some(format!(
            "{} {}",
            rng.range(1, 180),
            rng.pick(&FRENCH_STREETS)
        )),
        lieu_dit: None,
        code_postal_ville: format!("{} {}", caf.code_postal, caf.town),
        pays: "FRANCE".to_owned(),
        code_cog_insee_pays: FRANCE.to_owned(),
        date_derniere_maj: updated,
    }
}

/// A postal address in a country abroad.
pub(super) fn foreign_address(
    rng: &mut Rng,
    person: &Personne,
    country: &Country,
    updated: Date,
) -> Adresse {
    Adresse {
        destinataire: destinataire(person),
        complement_information: None,
        complement_information_geographique: rng
            .chance(0.15)
            .then(|| format!("RESIDENCE {}", rng.pick(&SURNAMES))),
        numero_libelle_voie: Some(format!(
            "{} {}",
            rng.range(1, 250),
            rng.pick(country.streets)
        )),
        lieu_dit: None,
        code_postal_ville: rng.pick(country.towns).to_owned(),
        pays: country.name.to_owned(),
        code_cog_insee_pays: country.code.to_owned(),
        date_derniere_maj: updated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nirs_built_here_pass_the_domain_parser() {
        let mut rng = Rng::for_stream(7, &[]);
        for _ in 0..500 {
            let id = identity(&mut rng).unwrap();
            assert!(Nir::parse(id.nir_str()).is_ok(), "invalid key");
        }
        let known = make_nir(Sexe::F, 1953, 7, "2A073", 4).unwrap();
        assert_eq!(&known, b"253072A07300443");
    }

    #[test]
    fn country_and_commune_tables_use_five_character_codes() {
        assert!(
            BIRTH_COMMUNES
                .iter()
                .chain(BIRTH_COUNTRIES.iter())
                .all(|c| c.len() == 5)
        );
        assert!(
            COUNTRIES
                .iter()
                .all(|c| c.code.len() == 5 && c.code.starts_with("99") && !c.towns.is_empty())
        );
    }
}
