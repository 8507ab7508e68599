//! What the edge reads of a data request's headers: the bearer token, and the
//! declared purpose and case reference; and of its connection: the client
//! certificate. The broker decides what they are worth.

use actix_web::HttpMessage;
use actix_web::HttpRequest;
use actix_web::http::header::{AUTHORIZATION, HeaderMap, HeaderName};

use crate::domain::{CaseReference, Purpose};
use crate::error::BrokerError;
use crate::tls::ClientCertificate;

/// The client certificate the request's TLS connection presented, which the
/// server verified and put in the request's extensions.
pub fn client_certificate(req: &HttpRequest) -> Option<ClientCertificate> {
    req.extensions().get::<ClientCertificate>().cloned()
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is
/// case-insensitive. A repeated `Authorization` header names no token: which
/// one would speak for the request is not the broker's to guess.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION);
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The purpose and case reference the request is made for (`X-Purpose`,
/// `X-Case-Reference`), each parsed or refused with the reason: the broker
/// refuses the request and still records it.
pub struct Declared {
    pub purpose: Result<Purpose, BrokerError>,
    pub case_reference: Result<CaseReference, BrokerError>,
}

/// The names, parsed once rather than at every look-up.
static X_PURPOSE: HeaderName = HeaderName::from_static("x-purpose");
static X_CASE_REFERENCE: HeaderName = HeaderName::from_static("x-case-reference");

pub fn declared(headers: &HeaderMap) -> Declared {
    let purpose = header_value(headers, &X_PURPOSE).and_then(|value| {
        Purpose::parse(value).map_err(|e| BrokerError::InvalidRequest(format!("X-Purpose: {e}.")))
    });
    let case_reference = header_value(headers, &X_CASE_REFERENCE).and_then(|value| {
        CaseReference::parse(value)
            .map_err(|e| BrokerError::InvalidRequest(format!("X-Case-Reference: {e}.")))
    });
    Declared {
        purpose,
        case_reference,
    }
}

fn header_value<'a>(
    headers: &'a HeaderMap,
    name: &'static HeaderName,
) -> Result<&'a str, BrokerError> {
    let mut values = headers.get_all(name);
    let value = values.next().ok_or_else(|| {
        BrokerError::InvalidRequest(format!("The {} header is required.", display_name(name)))
    })?;
    if values.next().is_some() {
        return Err(BrokerError::InvalidRequest(format!(
            "The {} header must be sent once.",
            display_name(name)
        )));
    }
    value.to_str().map_err(|_| {
        BrokerError::InvalidRequest(format!("The {} header must be ASCII.", display_name(name)))
    })
}

fn display_name(name: &HeaderName) -> &'static str {
    match name.as_str() {
        "x-purpose" => "X-Purpose",
        _ => "X-Case-Reference",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                actix_web::http::header::HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        assert_eq!(
            bearer_token(&headers(&[("authorization", "bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer ")])),
            None
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(bearer_token(&headers(&[])), None);
        assert_eq!(
            bearer_token(&headers(&[
                ("authorization", "Bearer abc"),
                ("authorization", "Bearer abc")
            ])),
            None
        );
    }

    #[test]
    fn a_repeated_purpose_header_is_refused() {
        let h = headers(&[
            ("x-purpose", "controle_fraude"),
            ("x-purpose", "verification_radiation"),
            ("x-case-reference", "C1"),
        ]);
        let declared = declared(&h);
        assert!(
            matches!(declared.purpose, Err(BrokerError::InvalidRequest(m)) if m.contains("once"))
        );
        assert!(declared.case_reference.is_ok());
    }
}
