//! Identifiers parsed once at the edge: after parsing, the type is the proof.
//! Also the one [`CacheOutcome`], which the cache returns and the audit log,
//! spans and metrics record.
//!
//! Every constructor here rejects malformed input with a [`DomainError`] whose
//! message names the rule that failed but never echoes the value, because the
//! values are personal data.

use std::fmt;

/// Why an identifier was rejected. Messages never contain the rejected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("a numéro allocataire is 1 to 7 digits, not all zeros")]
    NumeroAllocataire,
    #[error(
        "a NIR is 15 characters: 13 digits (2A or 2B allowed for a Corsican department) and a 2-digit key"
    )]
    NirShape,
    #[error("the NIR's control key does not match its first 13 characters")]
    NirKey,
    #[error("a purpose is 1 to 64 characters of [a-z0-9_]")]
    Purpose,
    #[error("a case reference is 1 to 64 characters of [A-Za-z0-9._/-]")]
    CaseReference,
    #[error("a role is 1 to 64 characters of [a-z0-9_]")]
    Role,
    #[error("a post code is 1 to 64 characters of [A-Z0-9-], e.g. TN-TUNIS")]
    PostCode,
    #[error("a subject is 1 to 256 printable characters")]
    Subject,
}

fn all_bytes(s: &str, min: usize, max: usize, ok: impl Fn(u8) -> bool) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(ok)
}

/// A CAF dossier number in its one canonical form: written as 1 to 7 ASCII
/// digits, kept without its leading zeros.
///
/// `0000042` and `42` are the same dossier, so they must be one cache key, one
/// audit pseudonym and one upstream call: the zeros are stripped here, once,
/// and every stage sees only the canonical digits. A value of zeros only
/// (`0`, `0000000`) names no dossier and is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NumeroAllocataire(String);

impl NumeroAllocataire {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        if !all_bytes(s, 1, 7, |b| b.is_ascii_digit()) {
            return Err(DomainError::NumeroAllocataire);
        }
        match s.trim_start_matches('0') {
            "" => Err(DomainError::NumeroAllocataire),
            canonical => Ok(Self(canonical.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A French social security number (NIR) whose mod-97 key has been checked.
///
/// `Debug` is redacted so that a NIR cannot reach a log by accident; use
/// [`Nir::as_str`] where the clear value is truly needed (the upstream call).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Nir(String);

impl Nir {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let b = s.as_bytes();
        if b.len() != 15 {
            return Err(DomainError::NirShape);
        }
        let corsica = matches!(&b[5..7], b"2A" | b"2B" | b"2a" | b"2b");
        let digits_ok = b
            .iter()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || (corsica && i == 6));
        if !digits_ok {
            return Err(DomainError::NirShape);
        }
        let normalized = s.to_ascii_uppercase();
        let key: u64 = normalized[13..]
            .parse()
            .map_err(|_| DomainError::NirShape)?;
        if Self::key_of(&normalized[..13]) != Some(key) {
            return Err(DomainError::NirKey);
        }
        Ok(Self(normalized))
    }

    /// The control key of a 13-character NIR body: 97 - (body mod 97), with the
    /// Corsican departments 2A and 2B read as 19 and 18.
    /// `None` unless `body` is 13 ASCII digits (`2A` or `2B` at the department).
    pub fn key_of(body: &str) -> Option<u64> {
        // Bytes, not `str` slices: any text may come here, and a slice that
        // cuts a multi-byte character would panic.
        let bytes = body.as_bytes();
        if bytes.len() != 13 {
            return None;
        }
        let corsica: Option<&[u8; 2]> = match bytes.get(5..7) {
            Some(b"2A") => Some(b"19"),
            Some(b"2B") => Some(b"18"),
            _ => None,
        };
        let mut n: u64 = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let b = match (corsica, i) {
                (Some(digits), 5 | 6) => digits[i - 5],
                _ => b,
            };
            if !b.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u64::from(b - b'0');
        }
        Some(97 - n % 97)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Nir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Nir(<redacted>)")
    }
}

macro_rules! token_newtype {
    ($(#[$doc:meta])* $name:ident, $err:ident, $max:expr, $ok:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                if all_bytes(s, 1, $max, $ok) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(DomainError::$err)
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn snake(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
}

token_newtype!(
    /// A declared purpose of processing, e.g. `verification_radiation`.
    Purpose, Purpose, 64, snake
);
token_newtype!(
    /// A role granted by the identity provider, e.g. `agent_consulaire`.
    Role, Role, 64, snake
);
token_newtype!(
    /// A consular post, e.g. `TN-TUNIS` (ISO country code and city).
    PostCode, PostCode, 64, |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-'
);
token_newtype!(
    /// The post's case or procedure reference the request is made for.
    CaseReference, CaseReference, 64, |b: u8| b.is_ascii_alphanumeric() || b"._/-".contains(&b)
);
token_newtype!(
    /// The agent's identifier at the identity provider (the token's `sub`).
    Subject, Subject, 256, |b: u8| b.is_ascii_graphic()
);

/// An agent: its `sub` within its post (the same `sub` in two posts is two
/// agents). Quotas, the error budget and the bulk-lookup detector count per agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Agent<'a> {
    pub post: &'a PostCode,
    pub sub: &'a Subject,
}

/// What the client asked to look up: a dossier number, or a NIR (sent in a body
/// so that it never sits in a URL).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lookup {
    Numero(NumeroAllocataire),
    Nir(Nir),
}

impl Lookup {
    /// The kind of identifier, safe for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Lookup::Numero(_) => "numero",
            Lookup::Nir(_) => "nir",
        }
    }
}

/// Whether a record came from the cache or from the CAF: `hit` or `miss` in
/// the audit record's `cache` field, in spans and in metric labels.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    Hit,
    Miss,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
        }
    }
}

impl fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_valid_nirs_parse() {
        for nir in [
            "295109912611193",
            "253072A07300443",
            "253072B07300470",
            "180057512345627",
            "160019912345604",
        ] {
            assert!(Nir::parse(nir).is_ok(), "{nir} should be valid");
        }
    }

    #[test]
    fn corsican_departments_are_read_as_19_and_18() {
        assert_eq!(Nir::key_of("253072A073004"), Some(43));
        assert_eq!(Nir::key_of("253072B073004"), Some(70));
        assert_eq!(
            Nir::parse("253072a07300443").map(|n| n.as_str().to_owned()),
            Ok("253072A07300443".into())
        );
    }

    #[test]
    fn the_key_of_any_text_is_none_unless_it_is_a_nir_body_and_never_a_panic() {
        // Found by the `identifiers` fuzz target: `é` straddled bytes 5 and 6,
        // and slicing the department out of the text panicked.
        assert_eq!(Nir::key_of("2695\u{4fe}1012800"), None);
        assert_eq!(Nir::key_of("1234é5678901"), None);
        assert_eq!(Nir::key_of("+951099126111"), None);
        assert_eq!(Nir::key_of("2951099126111"), Some(93));
        assert_eq!(
            Nir::parse("2695\u{4fe}101280091"),
            Err(DomainError::NirShape)
        );
    }

    #[test]
    fn nir_with_a_wrong_key_is_rejected_as_a_key_error() {
        assert_eq!(Nir::parse("295109912611194"), Err(DomainError::NirKey));
        assert_eq!(Nir::parse("253072A07300470"), Err(DomainError::NirKey));
    }

    #[test]
    fn nir_of_the_wrong_shape_is_rejected() {
        for bad in [
            "",
            "29510991261119",
            "2951099126111930",
            "29510991261119X",
            "2951X9912611193",
            "2530A2A07300443",
            "253072C07300443",
            "２95109912611193",
        ] {
            assert_eq!(Nir::parse(bad), Err(DomainError::NirShape), "{bad:?}");
        }
    }

    #[test]
    fn nir_debug_never_shows_the_number() {
        let nir = Nir::parse("295109912611193").unwrap();
        assert!(!format!("{nir:?}").contains("2951"));
    }

    #[test]
    fn numero_allocataire_is_one_to_seven_digits() {
        assert!(NumeroAllocataire::parse("1").is_ok());
        assert!(NumeroAllocataire::parse("1000002").is_ok());
        for bad in ["", "12345678", "12a", "-1", " 1", "１"] {
            assert!(NumeroAllocataire::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_numero_written_with_leading_zeros_is_the_same_numero_without_them() {
        let canonical = NumeroAllocataire::parse("42").unwrap();
        for written in ["42", "042", "0000042"] {
            let parsed = NumeroAllocataire::parse(written).unwrap();
            assert_eq!(parsed, canonical, "{written:?}");
            assert_eq!(parsed.as_str(), "42");
        }
        assert_eq!(
            NumeroAllocataire::parse("1000002").unwrap().as_str(),
            "1000002"
        );
        assert_eq!(
            NumeroAllocataire::parse("0100020").unwrap().as_str(),
            "100020"
        );
    }

    #[test]
    fn a_numero_of_zeros_only_names_no_dossier_and_is_refused() {
        for zeros in ["0", "00", "0000000"] {
            assert_eq!(
                NumeroAllocataire::parse(zeros),
                Err(DomainError::NumeroAllocataire),
                "{zeros:?}"
            );
        }
    }

    #[test]
    fn leading_zeros_do_not_lengthen_the_numero_past_seven_digits() {
        // The written form is bounded, zeros included, as the API documents it.
        assert!(NumeroAllocataire::parse("01000001").is_err());
        assert!(NumeroAllocataire::parse("00000042").is_err());
    }

    #[test]
    fn case_reference_allows_its_charset_only() {
        assert!(CaseReference::parse("TN-2026/0042.a_b").is_ok());
        assert!(CaseReference::parse(&"x".repeat(64)).is_ok());
        for bad in ["", "has space", "é", &"x".repeat(65)] {
            assert!(CaseReference::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn purposes_and_roles_are_snake_case() {
        assert!(Purpose::parse("verification_radiation").is_ok());
        assert!(Purpose::parse("Verification").is_err());
        assert!(Role::parse("agent_consulaire").is_ok());
        assert!(Role::parse("agent consulaire").is_err());
        assert!(PostCode::parse("TN-TUNIS").is_ok());
        assert!(PostCode::parse("tn-tunis").is_err());
    }

    #[test]
    fn a_cache_outcome_is_written_and_read_in_lowercase() {
        for (outcome, text) in [(CacheOutcome::Hit, "hit"), (CacheOutcome::Miss, "miss")] {
            assert_eq!(outcome.to_string(), text);
            let json = serde_json::to_value(outcome).unwrap();
            assert_eq!(json, serde_json::json!(text));
            assert_eq!(
                serde_json::from_value::<CacheOutcome>(json).unwrap(),
                outcome
            );
        }
    }
}
