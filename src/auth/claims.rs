//! The token's header and claims as read from JSON, before any check.
//!
//! Each claim deserializes leniently into [`Claim`]: missing, invalid or
//! present, so that a wrong type becomes `InvalidClaim("post")` rather than a
//! generic parse failure. Strings borrow from the decoded payload when they
//! have no escapes.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::AuthError;

/// The JOSE header fields this broker reads; every other field is ignored,
/// notably `jwk`, `jku` and `x5u`: keys come from the configured set only.
#[derive(Deserialize)]
pub(super) struct Header<'a> {
    #[serde(borrow)]
    pub alg: Cow<'a, str>,
    #[serde(default, borrow)]
    pub kid: Option<Cow<'a, str>>,
    /// The token's media type: `at+jwt` for an RFC 9068 access token.
    #[serde(default, borrow)]
    pub typ: Option<Cow<'a, str>>,
    /// Present means the token needs extensions this broker does not implement.
    #[serde(default)]
    pub crit: Option<IgnoredAny>,
}

/// The registered and private claims this broker reads. A claim given twice
/// fails the whole payload.
#[derive(Deserialize)]
pub(super) struct Claims<'a> {
    #[serde(default, borrow)]
    pub iss: Claim<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub aud: Claim<Audience<'a>>,
    #[serde(default)]
    pub exp: Claim<NumericDate>,
    #[serde(default)]
    pub iat: Claim<NumericDate>,
    #[serde(default)]
    pub nbf: Claim<NumericDate>,
    #[serde(default, borrow)]
    pub sub: Claim<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub post: Claim<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub role: Claim<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub jti: Claim<Cow<'a, str>>,
    /// The client the token was issued to (OpenID Connect).
    #[serde(default, borrow)]
    pub azp: Claim<Cow<'a, str>>,
    /// The client the token was issued to (RFC 9068, RFC 8693).
    #[serde(default, borrow)]
    pub client_id: Claim<Cow<'a, str>>,
    /// The confirmation claim (RFC 7800); only `x5t#S256` (RFC 8705) is known.
    #[serde(default, borrow)]
    pub cnf: Claim<Confirmation<'a>>,
}

/// `cnf`: how the presenter proves it holds the token.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Confirmation<'a> {
    /// The base64url SHA-256 of the client certificate the token is bound to.
    pub x5t_s256: Claim<Cow<'a, str>>,
    /// Another confirmation method was given, which this broker cannot check.
    pub other_methods: bool,
}

/// One claim: absent (or `null`), of the wrong type, or present.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) enum Claim<T> {
    #[default]
    Missing,
    Invalid,
    Present(T),
}

impl<T> Claim<T> {
    /// The value of a claim that must be there.
    pub fn required(self, name: &'static str) -> Result<T, AuthError> {
        match self {
            Claim::Present(value) => Ok(value),
            Claim::Missing => Err(AuthError::MissingClaim(name)),
            Claim::Invalid => Err(AuthError::InvalidClaim(name)),
        }
    }

    /// The value of a claim that may be absent, but not of the wrong type.
    pub fn optional(self, name: &'static str) -> Result<Option<T>, AuthError> {
        match self {
            Claim::Present(value) => Ok(Some(value)),
            Claim::Missing => Ok(None),
            Claim::Invalid => Err(AuthError::InvalidClaim(name)),
        }
    }
}

/// Seconds since the epoch; a fractional value is rounded down (RFC 7519 NumericDate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NumericDate(pub u64);

/// `aud`: one string, or an array of strings.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Audience<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

impl Audience<'_> {
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(aud) => aud == audience,
            Audience::Many(auds) => auds.iter().any(|aud| aud == audience),
        }
    }
}

/// Consumes an unexpected array or object so that parsing can go on with the next claim.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Implements the visits that make a claim `Invalid`: every JSON type but the expected ones.
macro_rules! invalid_visits {
    ($($method:ident($ty:ty)),*) => {
        $(fn $method<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> {
            Ok(Claim::Invalid)
        })*
    };
}

macro_rules! null_is_missing {
    () => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Claim::Missing)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Claim::Missing)
        }
    };
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Claim<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Claim::Present(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Claim::Present(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Claim::Present(Cow::Owned(v)))
    }

    null_is_missing!();
    invalid_visits!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64)
    );

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq).map(|()| Claim::Invalid)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map).map(|()| Claim::Invalid)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Claim<Cow<'a, str>> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct DateVisitor;

impl<'de> Visitor<'de> for DateVisitor {
    type Value = Claim<NumericDate>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("seconds since the epoch")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Claim::Present(NumericDate(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).map_or(Claim::Invalid, |v| Claim::Present(NumericDate(v))))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // The bound keeps the cast exact; `as` rounds toward zero, i.e. down here.
        if v.is_finite() && (0.0..9.0e15).contains(&v) {
            Ok(Claim::Present(NumericDate(v as u64)))
        } else {
            Ok(Claim::Invalid)
        }
    }

    null_is_missing!();
    invalid_visits!(visit_bool(bool), visit_str(&str));

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq).map(|()| Claim::Invalid)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map).map(|()| Claim::Invalid)
    }
}

impl<'de> Deserialize<'de> for Claim<NumericDate> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DateVisitor)
    }
}

struct AudienceVisitor;

impl<'de> Visitor<'de> for AudienceVisitor {
    type Value = Claim<Audience<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Claim::Present(Audience::One(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Claim::Present(Audience::One(Cow::Owned(v.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Claim::Present(Audience::One(Cow::Owned(v))))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut auds = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(8));
        let mut all_strings = true;
        while let Some(item) = seq.next_element::<Claim<Cow<'de, str>>>()? {
            match item {
                Claim::Present(aud) => auds.push(aud),
                Claim::Missing | Claim::Invalid => all_strings = false,
            }
        }
        Ok(if all_strings {
            Claim::Present(Audience::Many(auds))
        } else {
            Claim::Invalid
        })
    }

    null_is_missing!();
    invalid_visits!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64)
    );

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map).map(|()| Claim::Invalid)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Claim<Audience<'a>> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AudienceVisitor)
    }
}

struct ConfirmationVisitor;

impl<'de> Visitor<'de> for ConfirmationVisitor {
    type Value = Claim<Confirmation<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of confirmation methods")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut confirmation = Confirmation {
            x5t_s256: Claim::Missing,
            other_methods: false,
        };
        let mut seen = false;
        while let Some(method) = map.next_key::<Cow<'de, str>>()? {
            if method == "x5t#S256" {
                if seen {
                    return Err(de::Error::duplicate_field("x5t#S256"));
                }
                seen = true;
                confirmation.x5t_s256 = map.next_value()?;
            } else {
                confirmation.other_methods = true;
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Claim::Present(confirmation))
    }

    null_is_missing!();
    invalid_visits!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str)
    );

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq).map(|()| Claim::Invalid)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Claim<Confirmation<'a>> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ConfirmationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Claims<'_> {
        match serde_json::from_str(json) {
            Ok(claims) => claims,
            Err(e) => panic!("{json} should parse: {e}"),
        }
    }

    #[test]
    fn claims_of_the_wrong_type_are_invalid_and_do_not_derail_the_others() {
        let claims = parse(
            r#"{"post": ["TN", {"a": [1]}], "exp": "soon", "iat": {"x": 1}, "sub": 7, "role": true, "aud": [1], "iss": {"a": "b"}, "jti": "x"}"#,
        );
        assert_eq!(claims.post, Claim::Invalid);
        assert_eq!(claims.exp, Claim::Invalid);
        assert_eq!(claims.iat, Claim::Invalid);
        assert_eq!(claims.sub, Claim::Invalid);
        assert_eq!(claims.role, Claim::Invalid);
        assert_eq!(claims.aud, Claim::Invalid);
        assert_eq!(claims.iss, Claim::Invalid);
        assert_eq!(claims.jti, Claim::Present(Cow::Borrowed("x")));
        assert_eq!(claims.nbf, Claim::Missing);
    }

    #[test]
    fn null_claims_count_as_missing_and_dates_round_down() {
        let claims = parse(r#"{"post": null, "exp": 1700000000.9, "iat": -1, "nbf": 1e300}"#);
        assert_eq!(claims.post, Claim::Missing);
        assert_eq!(claims.exp, Claim::Present(NumericDate(1_700_000_000)));
        assert_eq!(claims.iat, Claim::Invalid);
        assert_eq!(claims.nbf, Claim::Invalid);
    }

    #[test]
    fn escaped_strings_are_decoded_and_audience_arrays_are_searched() {
        let claims = parse(r#"{"sub": "a\u0041", "aud": ["x", "caf-broker"]}"#);
        assert_eq!(claims.sub, Claim::Present(Cow::Owned("aA".to_owned())));
        assert!(
            matches!(claims.aud, Claim::Present(ref aud) if aud.contains("caf-broker") && !aud.contains("y"))
        );
    }

    #[test]
    fn a_confirmation_is_read_by_method_and_odd_shapes_are_invalid() {
        let claims = parse(r#"{"cnf": {"x5t#S256": "abc", "jkt": "x"}}"#);
        let Claim::Present(cnf) = claims.cnf else {
            panic!("cnf is an object");
        };
        assert_eq!(cnf.x5t_s256, Claim::Present(Cow::Borrowed("abc")));
        assert!(cnf.other_methods);
        assert_eq!(parse(r#"{"cnf": "abc"}"#).cnf, Claim::Invalid);
        assert_eq!(parse(r#"{"cnf": null}"#).cnf, Claim::Missing);
        let Claim::Present(cnf) = parse(r#"{"cnf": {"x5t#S256": 7}}"#).cnf else {
            panic!("cnf is an object");
        };
        assert_eq!(cnf.x5t_s256, Claim::Invalid);
        assert!(
            serde_json::from_str::<Claims<'_>>(r#"{"cnf": {"x5t#S256": "a", "x5t#S256": "b"}}"#)
                .is_err()
        );
    }

    #[test]
    fn a_claim_given_twice_fails_the_payload() {
        assert!(
            serde_json::from_str::<Claims<'_>>(r#"{"post": "TN-TUNIS", "post": "MA-RABAT"}"#)
                .is_err()
        );
    }
}
