//! Whether the CAF's answer is the dossier that was asked for.
//!
//! A CAF that answers numéro 42 with dossier 43 (a caching proxy gone wrong, a
//! mixed-up index, a swapped response) must not make the broker release a
//! stranger's data, nor keep it in the record cache. The record's own
//! `numero_allocataire` must be the numéro asked for, and for a search its `nir`
//! the NIR asked for; both are compared in their parsed, canonical forms, so
//! `0000042` matches `42` and `2a` matches `2A`. A record whose identifier is
//! missing or malformed proves nothing and fails the check too.
//!
//! Pure: no IO, no logging; the values compared never leave this function.

use serde_json::Value;

use super::{Record, UpstreamError};
use crate::domain::{Lookup, Nir, NumeroAllocataire};

/// `found` as the connector returned it if the record answers `lookup` (or
/// there is none), [`UpstreamError::WrongDossier`] if it is someone else's.
pub fn check_answer(
    lookup: &Lookup,
    found: Result<Option<Record>, UpstreamError>,
) -> Result<Option<Record>, UpstreamError> {
    match found {
        Ok(Some(record)) if !answers(lookup, &record) => Err(UpstreamError::WrongDossier),
        other => other,
    }
}

/// Whether `record` is the dossier `lookup` names.
pub fn answers(lookup: &Lookup, record: &Value) -> bool {
    let field = |name: &str| record.get(name).and_then(Value::as_str);
    match lookup {
        Lookup::Numero(asked) => field("numero_allocataire")
            .and_then(|numero| NumeroAllocataire::parse(numero).ok())
            .is_some_and(|numero| numero == *asked),
        Lookup::Nir(asked) => field("nir")
            .and_then(|nir| Nir::parse(nir).ok())
            .is_some_and(|nir| nir == *asked),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    fn numero(n: &str) -> Lookup {
        Lookup::Numero(NumeroAllocataire::parse(n).unwrap())
    }

    fn nir(n: &str) -> Lookup {
        Lookup::Nir(Nir::parse(n).unwrap())
    }

    fn record() -> Value {
        json!({"numero_allocataire": "1000003", "nir": "253072A07300443", "statut_dossier": "actif"})
    }

    #[test]
    fn the_dossier_asked_for_passes_by_numero_and_by_nir() {
        assert!(answers(&numero("1000003"), &record()));
        assert!(answers(&nir("253072A07300443"), &record()));
        assert!(answers(&nir("253072a07300443"), &record()));
    }

    #[test]
    fn numeros_are_compared_in_canonical_form() {
        let padded = json!({"numero_allocataire": "0000042"});
        assert!(answers(&numero("42"), &padded));
        assert!(answers(
            &numero("00042"),
            &json!({"numero_allocataire": "42"})
        ));
    }

    #[test]
    fn another_dossier_fails_the_check() {
        assert!(!answers(&numero("1000002"), &record()));
        assert!(!answers(&nir("295109912611193"), &record()));
    }

    #[test]
    fn a_record_without_a_readable_identifier_proves_nothing_and_fails() {
        for bad in [
            json!({}),
            json!({"numero_allocataire": 1000003, "nir": 253072}),
            json!({"numero_allocataire": "1000003x", "nir": "253072A07300444"}),
            json!({"numero_allocataire": null, "nir": null}),
            json!([1, 2]),
        ] {
            assert!(!answers(&numero("1000003"), &bad), "{bad}");
            assert!(!answers(&nir("253072A07300443"), &bad), "{bad}");
        }
    }

    #[test]
    fn a_search_checks_the_nir_not_the_numero() {
        // A search names no numéro: the record's is whatever the CAF holds.
        let record = json!({"numero_allocataire": "7", "nir": "295109912611193"});
        assert!(answers(&nir("295109912611193"), &record));
    }

    #[test]
    fn not_found_and_errors_pass_through_and_a_wrong_record_becomes_an_error() {
        let lookup = numero("1000003");
        assert!(matches!(check_answer(&lookup, Ok(None)), Ok(None)));
        assert!(matches!(
            check_answer(&lookup, Err(UpstreamError::Timeout)),
            Err(UpstreamError::Timeout)
        ));
        assert!(matches!(
            check_answer(&lookup, Ok(Some(Arc::new(record())))),
            Ok(Some(_))
        ));
        assert!(matches!(
            check_answer(&numero("1000002"), Ok(Some(Arc::new(record())))),
            Err(UpstreamError::WrongDossier)
        ));
    }
}
