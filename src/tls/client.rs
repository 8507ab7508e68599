//! The client certificate a TLS connection presented, once rustls verified it:
//! its SHA-256 (the audit fingerprint and the RFC 8705 `x5t#S256` thumbprint)
//! and the consular post it names, read from its subject `CN` or from a
//! `subjectAltName` URI. Nothing else of the certificate is read: its chain,
//! validity and key usage are rustls' business, checked before it gets here.

use std::fmt;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use simple_asn1::{ASN1Block, ASN1Class, oid};

use crate::domain::PostCode;

/// Whether the server asks TLS clients for a certificate (`server.client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// No certificate is asked for; a client is known by its token alone.
    Off,
    /// A certificate is asked for and, if sent, must chain to
    /// `server.client_ca_file`; a client without one still connects.
    Optional,
    /// The handshake fails without a certificate that chains to `server.client_ca_file`.
    Required,
}

/// Where a client certificate names its consular post (`server.client_post_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostSource {
    /// The subject's common name is the post code (`CN=TN-TUNIS`).
    Cn,
    /// The one `subjectAltName` URI ends with the post code, after its last
    /// `:` or `/` (`urn:caf-broker:post:TN-TUNIS`).
    SanUri,
    /// The certificate does not name a post; tokens are not compared with it.
    None,
}

/// The SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thumbprint([u8; 32]);

impl Thumbprint {
    /// The SHA-256 of `der`.
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// A thumbprint written as RFC 8705 writes it (`x5t#S256`: base64url, no
    /// padding), if it is one: 43 characters decoding to 32 bytes.
    pub fn from_base64url(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// As a token's `cnf.x5t#S256` carries it: base64url without padding.
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// As the audit record carries it: 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({})", self.to_hex())
    }
}

/// The verified leaf certificate of a TLS client. Cheap to clone: a
/// connection's requests all share one.
#[derive(Clone)]
pub struct ClientCertificate(Arc<Inner>);

struct Inner {
    der: CertificateDer<'static>,
    thumbprint: Thumbprint,
    /// Read from the DER on first use, once per connection.
    names: OnceLock<Names>,
}

/// What the certificate says its holder is called.
struct Names {
    common_name: Option<String>,
    uris: Vec<String>,
}

impl ClientCertificate {
    /// The leaf of a verified chain (the first certificate rustls reports).
    pub fn new(der: CertificateDer<'static>) -> Self {
        let thumbprint = Thumbprint::of(der.as_ref());
        Self(Arc::new(Inner {
            der,
            thumbprint,
            names: OnceLock::new(),
        }))
    }

    /// The SHA-256 of its DER encoding: the audit fingerprint and the
    /// `x5t#S256` a bound token must carry.
    pub fn thumbprint(&self) -> Thumbprint {
        self.0.thumbprint
    }

    /// The post the certificate names, read as `source` says; `None` when it
    /// names none that parses as a post code (or when `source` is `none`).
    pub fn post(&self, source: PostSource) -> Option<PostCode> {
        let text = match source {
            PostSource::None => return None,
            PostSource::Cn => self.common_name()?,
            PostSource::SanUri => {
                // Two URIs could name two posts: the certificate names none.
                let [uri] = self.uri_names() else { return None };
                uri.rsplit([':', '/']).next()?
            }
        };
        PostCode::parse(text).ok()
    }

    /// The subject's common name, when there is exactly one.
    pub fn common_name(&self) -> Option<&str> {
        self.names().common_name.as_deref()
    }

    /// The `uniformResourceIdentifier` names of its `subjectAltName` extension.
    pub fn uri_names(&self) -> &[String] {
        &self.names().uris
    }

    fn names(&self) -> &Names {
        self.0.names.get_or_init(|| {
            let der = self.0.der.as_ref();
            Names {
                common_name: read_common_name(der),
                uris: read_uri_names(der),
            }
        })
    }
}

/// The subject's common name of a DER certificate, when there is exactly one.
fn read_common_name(der: &[u8]) -> Option<String> {
    let subject = tbs_field(der, Field::Subject)?;
    let ASN1Block::Sequence(_, rdns) = subject else {
        return None;
    };
    let common_name = oid!(2, 5, 4, 3);
    let mut names = rdns.iter().flat_map(|rdn| match rdn {
        ASN1Block::Set(_, attributes) => attributes.as_slice(),
        _ => &[],
    });
    let mut found = names.by_ref().filter_map(|attribute| match attribute {
        ASN1Block::Sequence(_, pair) => match pair.as_slice() {
            [ASN1Block::ObjectIdentifier(_, id), value] if *id == common_name => text(value),
            _ => None,
        },
        _ => None,
    });
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// The `uniformResourceIdentifier` names of a DER certificate's `subjectAltName`.
fn read_uri_names(der: &[u8]) -> Vec<String> {
    let Some(ASN1Block::Explicit(ASN1Class::ContextSpecific, _, _, extensions)) =
        tbs_field(der, Field::Extensions)
    else {
        return Vec::new();
    };
    let ASN1Block::Sequence(_, extensions) = extensions.as_ref() else {
        return Vec::new();
    };
    let subject_alt_name = oid!(2, 5, 29, 17);
    let value = extensions.iter().find_map(|extension| match extension {
        ASN1Block::Sequence(_, parts) => match parts.as_slice() {
            [
                ASN1Block::ObjectIdentifier(_, id),
                ..,
                ASN1Block::OctetString(_, value),
            ] if *id == subject_alt_name => Some(value),
            _ => None,
        },
        _ => None,
    });
    let Some(Ok(blocks)) = value.map(|value| simple_asn1::from_der(value)) else {
        return Vec::new();
    };
    let Some(ASN1Block::Sequence(_, names)) = blocks.first() else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|name| match name {
            // [6] IMPLICIT IA5String (RFC 5280, 4.2.1.6).
            ASN1Block::Unknown(ASN1Class::ContextSpecific, false, _, tag, bytes)
                if tag.to_u64_digits() == [6] =>
            {
                std::str::from_utf8(bytes)
                    .ok()
                    .filter(|uri| uri.is_ascii())
                    .map(str::to_owned)
            }
            _ => None,
        })
        .collect()
}

/// One field of the `tbsCertificate` of a DER certificate (RFC 5280, 4.1).
pub(super) fn tbs_field(der: &[u8], field: Field) -> Option<ASN1Block> {
    let mut blocks = simple_asn1::from_der(der).ok()?;
    let ASN1Block::Sequence(_, mut certificate) = blocks.pop()? else {
        return None;
    };
    if certificate.is_empty() {
        return None;
    }
    let ASN1Block::Sequence(_, tbs) = certificate.swap_remove(0) else {
        return None;
    };
    // version [0] is present in every v3 certificate, and only extensions
    // come after subjectPublicKeyInfo that a client certificate needs.
    let offset = usize::from(matches!(
        tbs.first(),
        Some(ASN1Block::Explicit(ASN1Class::ContextSpecific, _, tag, _)) if tag.to_u64_digits().is_empty()
    ));
    match field {
            // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo.
            Field::Validity => tbs.into_iter().nth(offset + 3),
            Field::Subject => tbs.into_iter().nth(offset + 4),
            Field::PublicKeyInfo => tbs.into_iter().nth(offset + 5),
            Field::Extensions => tbs.into_iter().skip(offset + 6).find(|block| {
                matches!(block, ASN1Block::Explicit(ASN1Class::ContextSpecific, _, tag, _) if tag.to_u64_digits() == [3])
            }),
        }
}

/// The fields of a `tbsCertificate` read here and by the production guards.
#[derive(Clone, Copy)]
pub(super) enum Field {
    Validity,
    Subject,
    PublicKeyInfo,
    Extensions,
}

/// The text of a directory string.
fn text(value: &ASN1Block) -> Option<String> {
    match value {
        ASN1Block::UTF8String(_, s)
        | ASN1Block::PrintableString(_, s)
        | ASN1Block::IA5String(_, s)
        | ASN1Block::TeletexString(_, s) => Some(s.clone()),
        _ => None,
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClientCertificate")
            .field(&self.0.thumbprint)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(file: &str) -> ClientCertificate {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("certs-dev")
            .join(file);
        let mut chain = crate::tls::certificates(&path).unwrap();
        ClientCertificate::new(chain.remove(0))
    }

    #[test]
    fn the_post_of_a_development_client_certificate_is_its_common_name() {
        let tunis = dev("client-TN-TUNIS.pem");
        assert_eq!(tunis.common_name(), Some("TN-TUNIS"));
        assert_eq!(
            tunis.post(PostSource::Cn),
            Some(PostCode::parse("TN-TUNIS").unwrap())
        );
        assert_eq!(tunis.post(PostSource::None), None);
        assert!(tunis.uri_names().is_empty());
        assert_eq!(tunis.post(PostSource::SanUri), None);
        // CN=caf-broker is no post code.
        assert_eq!(dev("client-broker.pem").post(PostSource::Cn), None);
    }

    #[test]
    fn a_san_uri_names_the_post_by_its_last_segment() {
        let uri = dev("client-uri-MA-RABAT.pem");
        assert_eq!(uri.uri_names(), ["urn:caf-broker:post:MA-RABAT"]);
        assert_eq!(
            uri.post(PostSource::SanUri),
            Some(PostCode::parse("MA-RABAT").unwrap())
        );
        assert_eq!(uri.post(PostSource::Cn), None);
    }

    #[test]
    fn the_thumbprint_is_the_sha256_of_the_der_in_base64url_and_hex() {
        let tunis = dev("client-TN-TUNIS.pem");
        let thumbprint = tunis.thumbprint();
        assert_eq!(thumbprint.to_base64url().len(), 43);
        assert_eq!(thumbprint.to_hex().len(), 64);
        assert_eq!(
            Thumbprint::from_base64url(&thumbprint.to_base64url()),
            Some(thumbprint)
        );
        assert_ne!(dev("client-MA-RABAT.pem").thumbprint(), thumbprint);
        assert_eq!(Thumbprint::from_base64url("c2hvcnQ"), None);
        assert_eq!(Thumbprint::from_base64url(&"+".repeat(43)), None);
    }

    #[test]
    fn bytes_that_are_no_certificate_name_no_post() {
        let junk = ClientCertificate::new(CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01]));
        assert_eq!(junk.post(PostSource::Cn), None);
        assert_eq!(junk.post(PostSource::SanUri), None);
    }
}
