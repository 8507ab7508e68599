//! The CAF record schema as a static table of field paths and kinds.
//!
//! Policy rules are checked against this table at load time: a rule must name a
//! field that exists, with the `[]` notation exactly where the record holds an
//! array, and its transform must fit the field's kind. The NIR is in the table
//! but marked [`Kind::Forbidden`], so that no policy can ever release it.

/// What a field of the record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A JSON object with known keys (descend with `.`).
    Object,
    /// An array of objects (descend with `[]`).
    ArrayOfObjects,
    /// Free text (names, labels, address lines, codes).
    Text,
    /// A string from a closed list of values (`statut_dossier`, `radiation.motif`, ...).
    Enum,
    /// A `YYYY-MM-DD` date.
    Date,
    /// A `YYYY-MM` month.
    Month,
    /// A `YYYY-Qn` quarter.
    Quarter,
    /// An RFC 3339 timestamp.
    Timestamp,
    /// An integer.
    Integer,
    /// A money amount as a decimal string (`"635.71"`).
    Amount,
    /// A boolean.
    Bool,
    /// A field no policy may release (the NIR).
    Forbidden,
}

impl Kind {
    /// A short human name, for problems and `policy explain`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Object => "object",
            Kind::ArrayOfObjects => "array of objects",
            Kind::Text => "text",
            Kind::Enum => "enumeration",
            Kind::Date => "date (YYYY-MM-DD)",
            Kind::Month => "month (YYYY-MM)",
            Kind::Quarter => "quarter (YYYY-Qn)",
            Kind::Timestamp => "timestamp",
            Kind::Integer => "integer",
            Kind::Amount => "amount (decimal string)",
            Kind::Bool => "boolean",
            Kind::Forbidden => "forbidden",
        }
    }

    /// Whether the field holds other fields (so a plain rule releases a subtree).
    pub fn is_container(self) -> bool {
        matches!(self, Kind::Object | Kind::ArrayOfObjects)
    }
}

/// One field of the record: its path in policy notation, kind, and whether it may be null.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub path: &'static str,
    pub kind: Kind,
    pub nullable: bool,
    /// The known values of an enumeration (empty for other kinds).
    pub values: &'static [&'static str],
}

const fn f(path: &'static str, kind: Kind) -> FieldSpec {
    FieldSpec {
        path,
        kind,
        nullable: false,
        values: &[],
    }
}

const fn n(path: &'static str, kind: Kind) -> FieldSpec {
    FieldSpec {
        path,
        kind,
        nullable: true,
        values: &[],
    }
}

const fn e(path: &'static str, nullable: bool, values: &'static [&'static str]) -> FieldSpec {
    FieldSpec {
        path,
        kind: Kind::Enum,
        nullable,
        values,
    }
}

const STATUT_DOSSIER: &[&str] = &["actif", "suspendu", "radie", "en_cours_affiliation"];
const MOTIFS: &[&str] = &[
    "RESIDENCE_HORS_FRANCE",
    "FIN_DE_DROITS",
    "DECES",
    "MUTATION_AUTRE_ORGANISME",
    "NON_REPONSE_CONTROLE",
    "DEMANDE_ALLOCATAIRE",
    "AUTRE",
];
const SUSPENSION_MOTIFS: &[&str] = &[
    "CONTROLE_EN_COURS",
    "PIECES_JUSTIFICATIVES_MANQUANTES",
    "RESSOURCES_NON_DECLAREES",
    "RESIDENCE_A_VERIFIER",
];
const PRESTATIONS: &[&str] = &[
    "AF", "CF", "ARS", "ASF", "AEEH", "AJPP", "PAJE_PN", "PAJE_PA", "PAJE_AB", "PAJE_CMG",
    "PREPARE", "APL", "ALF", "ALS", "RSA", "PPA", "AAH", "C2S",
];
const ETATS: &[&str] = &["EN_COURS", "SUSPENDU", "CLOS"];
const PAIEMENT_STATUTS: &[&str] = &["VERSE", "NON_VERSE", "RETENU"];
const INDU_STATUTS: &[&str] = &["NOTIFIE", "EN_RECOUVREMENT", "SOLDE"];
const SITUATIONS: &[&str] = &["CELIBATAIRE", "COUPLE", "PARENT_ISOLE", "VEUF"];
const SEXES: &[&str] = &["F", "M"];

/// Every field of the CAF record. `suspension` is shaped like `radiation`
/// with its own list of motives, and `conjoint` has the `allocataire` shape.
pub static FIELDS: &[FieldSpec] = &[
    f("schema_version", Kind::Text),
    f("numero_allocataire", Kind::Text),
    f("code_postal_caf", Kind::Text),
    f("caf_organisme", Kind::Text),
    f("nir", Kind::Forbidden),
    f("regime", Kind::Text),
    e("statut_dossier", false, STATUT_DOSSIER),
    n("radiation", Kind::Object),
    f("radiation.date_effet", Kind::Date),
    e("radiation.motif", false, MOTIFS),
    n("radiation.date_decision", Kind::Date),
    n("suspension", Kind::Object),
    f("suspension.date_effet", Kind::Date),
    e("suspension.motif", false, SUSPENSION_MOTIFS),
    n("suspension.date_decision", Kind::Date),
    f("allocataire", Kind::Object),
    f("allocataire.nom_naissance", Kind::Text),
    n("allocataire.nom_usage", Kind::Text),
    f("allocataire.prenoms", Kind::Text),
    f("allocataire.date_naissance", Kind::Date),
    e("allocataire.sexe", false, SEXES),
    f("allocataire.code_cog_insee_pays_naissance", Kind::Text),
    n("allocataire.code_cog_insee_commune_naissance", Kind::Text),
    n("conjoint", Kind::Object),
    f("conjoint.nom_naissance", Kind::Text),
    n("conjoint.nom_usage", Kind::Text),
    f("conjoint.prenoms", Kind::Text),
    f("conjoint.date_naissance", Kind::Date),
    e("conjoint.sexe", false, SEXES),
    f("conjoint.code_cog_insee_pays_naissance", Kind::Text),
    n("conjoint.code_cog_insee_commune_naissance", Kind::Text),
    f("enfants", Kind::ArrayOfObjects),
    f("enfants[].nom_naissance", Kind::Text),
    n("enfants[].nom_usage", Kind::Text),
    f("enfants[].prenoms", Kind::Text),
    f("enfants[].date_naissance", Kind::Date),
    e("enfants[].sexe", false, SEXES),
    f("enfants[].a_charge", Kind::Bool),
    e("situation_familiale", false, SITUATIONS),
    f("adresse", Kind::Object),
    n("adresse.destinataire", Kind::Text),
    n("adresse.complement_information", Kind::Text),
    n("adresse.complement_information_geographique", Kind::Text),
    n("adresse.numero_libelle_voie", Kind::Text),
    n("adresse.lieu_dit", Kind::Text),
    n("adresse.code_postal_ville", Kind::Text),
    f("adresse.pays", Kind::Text),
    f("adresse.code_cog_insee_pays", Kind::Text),
    n("adresse.date_derniere_maj", Kind::Date),
    f("residence", Kind::Object),
    f("residence.reside_en_france", Kind::Bool),
    n("residence.date_depart_declaree", Kind::Date),
    f("residence.jours_hors_france_annee_civile", Kind::Integer),
    f("residence.source", Kind::Text),
    n("quotient_familial", Kind::Object),
    f("quotient_familial.fournisseur", Kind::Text),
    f("quotient_familial.valeur", Kind::Integer),
    f("quotient_familial.annee", Kind::Integer),
    f("quotient_familial.mois", Kind::Integer),
    f("quotient_familial.annee_calcul", Kind::Integer),
    f("quotient_familial.mois_calcul", Kind::Integer),
    f("prestations", Kind::ArrayOfObjects),
    e("prestations[].code", false, PRESTATIONS),
    f("prestations[].libelle", Kind::Text),
    e("prestations[].etat", false, ETATS),
    n("prestations[].avec_majoration", Kind::Bool),
    f("prestations[].date_debut_droit", Kind::Date),
    n("prestations[].date_fin_droit", Kind::Date),
    e("prestations[].motif_fin", true, MOTIFS),
    f("prestations[].montant_mensuel_eur", Kind::Amount),
    f("prestations[].paiements", Kind::ArrayOfObjects),
    f("prestations[].paiements[].mois_droit", Kind::Month),
    n("prestations[].paiements[].date_versement", Kind::Date),
    f("prestations[].paiements[].montant_eur", Kind::Amount),
    e("prestations[].paiements[].statut", false, PAIEMENT_STATUTS),
    n("dernier_paiement", Kind::Object),
    f("dernier_paiement.date_versement", Kind::Date),
    f("dernier_paiement.mois_droit", Kind::Month),
    f("indus", Kind::ArrayOfObjects),
    e("indus[].prestation", false, PRESTATIONS),
    f("indus[].montant_eur", Kind::Amount),
    f("indus[].periode_debut", Kind::Month),
    f("indus[].periode_fin", Kind::Month),
    e("indus[].statut", false, INDU_STATUTS),
    n("indus[].date_notification", Kind::Date),
    f("controle", Kind::Object),
    f("controle.controle_en_cours", Kind::Bool),
    f("controle.signalement_fraude", Kind::Bool),
    f("ressources_trimestrielles", Kind::ArrayOfObjects),
    f("ressources_trimestrielles[].trimestre", Kind::Quarter),
    f(
        "ressources_trimestrielles[].montant_total_eur",
        Kind::Amount,
    ),
    f("ressources_trimestrielles[].type", Kind::Text),
    f("mise_a_jour", Kind::Timestamp),
];

/// The schema entry for a path in policy notation (`prestations[].code`).
pub fn lookup(path: &str) -> Option<&'static FieldSpec> {
    FIELDS.iter().find(|spec| spec.path == path)
}

/// One step of a policy path: a key, and whether `[]` follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub name: &'a str,
    pub items: bool,
}

/// Splits a policy path into segments, checking its syntax only. A trailing
/// `[]` is allowed: the last segment's `items` flag then means nothing more than
/// "this is an array", which `resolve` checks.
///
/// Returns a sentence saying what is wrong; the path itself is policy text, not
/// personal data, so messages may quote it.
pub fn split(path: &str) -> Result<Vec<Segment<'_>>, String> {
    if path.is_empty() {
        return Err("the path is empty".to_owned());
    }
    let mut segments = Vec::new();
    for raw in path.split('.') {
        let (name, items) = match raw.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (raw, false),
        };
        if name.is_empty() {
            return Err(format!("path `{path}` has an empty segment"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!(
                "path `{path}`: segment `{raw}` must be a snake_case key, optionally followed by `[]`"
            ));
        }
        segments.push(Segment { name, items });
    }
    Ok(segments)
}

/// A path without its trailing `[]`: `indus[]` (all items, as the shipped policy's
/// documentation writes it) names the same field as `indus`.
pub fn normalized(path: &str) -> &str {
    path.strip_suffix("[]").unwrap_or(path)
}

/// Resolves a path against the schema, explaining the first step that does not fit.
pub fn resolve(path: &str) -> Result<&'static FieldSpec, String> {
    let segments = split(path)?;
    let mut prefix = String::with_capacity(path.len());
    let mut found = None;
    for (i, seg) in segments.iter().enumerate() {
        if i > 0 {
            prefix.push('.');
        }
        prefix.push_str(seg.name);
        let Some(spec) = lookup(&prefix) else {
            return Err(format!(
                "path `{path}` names no field of the CAF record schema"
            ));
        };
        let last = i + 1 == segments.len();
        if seg.items {
            if spec.kind != Kind::ArrayOfObjects {
                return Err(format!(
                    "path `{path}`: `{prefix}` is not an array, remove the `[]`"
                ));
            }
            prefix.push_str("[]");
        } else if spec.kind == Kind::ArrayOfObjects && !last {
            return Err(format!(
                "path `{path}`: `{prefix}` is an array, write `{prefix}[]` to reach into its items"
            ));
        }
        found = Some(spec);
    }
    found.ok_or_else(|| format!("path `{path}` names no field of the CAF record schema"))
}

/// The schema as a tree, for walks that follow a record key by key: the
/// filter's whole-subtree rules (which release known fields only) and drift.
#[derive(Debug, Default)]
pub struct SchemaNode {
    /// Sorted by name, for binary search.
    children: Vec<SchemaChild>,
}

/// One field of a [`SchemaNode`]: its key, kind, and its own fields when it is a container.
#[derive(Debug)]
pub struct SchemaChild {
    pub name: &'static str,
    pub kind: Kind,
    pub node: SchemaNode,
}

impl SchemaNode {
    /// The field named `name` at this level.
    pub fn child(&self, name: &str) -> Option<&SchemaChild> {
        self.children
            .binary_search_by(|c| c.name.cmp(name))
            .ok()
            .and_then(|i| self.children.get(i))
    }

    /// The fields at this level, in name order.
    pub fn children(&self) -> &[SchemaChild] {
        &self.children
    }
}

/// A node without fields, for paths that name none.
static EMPTY: SchemaNode = SchemaNode {
    children: Vec::new(),
};

/// The whole record schema as a tree, built once from [`FIELDS`].
pub fn tree() -> &'static SchemaNode {
    static TREE: std::sync::OnceLock<SchemaNode> = std::sync::OnceLock::new();
    TREE.get_or_init(|| {
        let mut root = SchemaNode::default();
        for spec in FIELDS {
            insert(&mut root, spec);
        }
        root
    })
}

fn insert(root: &mut SchemaNode, spec: &'static FieldSpec) {
    let mut names = spec
        .path
        .split('.')
        .map(|s| s.strip_suffix("[]").unwrap_or(s));
    let Some(last) = names.next_back() else {
        return;
    };
    let mut node = root;
    for name in names {
        // FIELDS lists parents before children (a schema test checks it).
        let Some(next) = node.children.iter_mut().find(|c| c.name == name) else {
            return;
        };
        node = &mut next.node;
    }
    let position = node
        .children
        .binary_search_by(|c| c.name.cmp(last))
        .unwrap_or_else(|i| i);
    node.children.insert(
        position,
        SchemaChild {
            name: last,
            kind: spec.kind,
            node: SchemaNode::default(),
        },
    );
}

/// The fields below a container path (`conjoint`, `prestations[].paiements`);
/// an empty node for any other path.
pub fn subtree(path: &str) -> &'static SchemaNode {
    let mut node = tree();
    for segment in normalized(path).split('.') {
        let name = segment.strip_suffix("[]").unwrap_or(segment);
        match node.child(name) {
            Some(child) => node = &child.node,
            None => return &EMPTY,
        }
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_path_resolves_to_itself() {
        for spec in FIELDS {
            let resolved = resolve(spec.path).map(|s| s.path);
            assert_eq!(resolved, Ok(spec.path));
        }
    }

    #[test]
    fn every_nested_field_has_its_parent_in_the_schema() {
        for spec in FIELDS {
            if let Some((parent, _)) = spec.path.rsplit_once('.') {
                let parent = parent.strip_suffix("[]").unwrap_or(parent);
                let kind = lookup(parent).map(|p| p.kind);
                assert!(
                    matches!(kind, Some(Kind::Object | Kind::ArrayOfObjects)),
                    "{}",
                    spec.path
                );
            }
        }
    }

    #[test]
    fn paths_that_misuse_brackets_are_explained() {
        assert!(
            resolve("enfants.prenoms")
                .unwrap_err()
                .contains("write `enfants[]`")
        );
        assert!(
            resolve("radiation[].motif")
                .unwrap_err()
                .contains("not an array")
        );
        assert_eq!(resolve("enfants[]").map(|s| s.path), Ok("enfants"));
        assert!(
            resolve("statut_dossier[]")
                .unwrap_err()
                .contains("not an array")
        );
        assert!(
            resolve("radiation.inconnu")
                .unwrap_err()
                .contains("names no field")
        );
        assert!(resolve("Radiation").unwrap_err().contains("snake_case"));
        assert!(resolve("a..b").unwrap_err().contains("empty segment"));
        assert!(resolve("").is_err());
    }

    #[test]
    fn the_nir_is_in_the_schema_as_forbidden() {
        assert_eq!(lookup("nir").map(|s| s.kind), Some(Kind::Forbidden));
    }

    #[test]
    fn the_schema_tree_holds_every_field_once_under_its_parent() {
        fn count(node: &SchemaNode) -> usize {
            node.children().iter().map(|c| 1 + count(&c.node)).sum()
        }
        assert_eq!(count(tree()), FIELDS.len());
        let paiements = subtree("prestations[].paiements");
        assert_eq!(paiements.child("statut").map(|c| c.kind), Some(Kind::Enum));
        assert!(subtree("conjoint").child("prenoms").is_some());
        assert!(subtree("statut_dossier").children().is_empty());
        assert!(subtree("inconnu.x").children().is_empty());
        assert_eq!(tree().child("nir").map(|c| c.kind), Some(Kind::Forbidden));
    }
}
