//! rustls configuration (TLS 1.2 and 1.3 only, AEAD cipher suites only, aws-lc-rs)
//! and the one reader of PEM files: certificates, private keys and trust stores,
//! for the server, the CAF connector, the JWKS client, Redis and the simulator;
//! and the verified client certificate of a connection ([`ClientCertificate`]).

mod client;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

pub use client::{ClientAuth, ClientCertificate, PostSource, Thumbprint};

/// A TLS client configuration (TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`)
/// that trusts `roots` only and presents no certificate: for the HTTPS
/// clients that reach a service the settings name (the JWKS endpoint, the
/// audit witness).
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// When a DER certificate ends (`notAfter`), in seconds since the Unix epoch.
pub fn not_after(der: &[u8]) -> Option<i64> {
    use simple_asn1::ASN1Block;
    let ASN1Block::Sequence(_, validity) = client::tbs_field(der, client::Field::Validity)? else {
        return None;
    };
    match validity.get(1)? {
        ASN1Block::UTCTime(_, at) | ASN1Block::GeneralizedTime(_, at) => {
            Some(at.assume_utc().unix_timestamp())
        }
        _ => None,
    }
}

/// The SHA-256 of a DER certificate's public key (its `subjectPublicKeyInfo`,
/// encoded again in DER), in hex: the same key, whatever certificate carries it.
pub fn public_key_sha256(der: &[u8]) -> Option<String> {
    use sha2::{Digest, Sha256};
    let info = client::tbs_field(der, client::Field::PublicKeyInfo)?;
    let encoded = simple_asn1::to_der(&info).ok()?;
    Some(hex::encode(Sha256::digest(encoded)))
}

/// Why a PEM file could not be used. Messages name the file, never its
/// content: the PEM parser's own messages can quote a line of it.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read PEM certificates from {file}: {reason}")]
    Certificates { file: String, reason: String },
    #[error("{file} holds no PEM certificate")]
    NoCertificate { file: String },
    #[error("cannot read a PEM private key from {file}: {reason}")]
    PrivateKey { file: String, reason: String },
    #[error("{file} holds a certificate that cannot be a trust anchor")]
    NotATrustAnchor { file: String },
}

impl PemError {
    /// The file the error is about, as its message names it.
    pub fn file(&self) -> &str {
        match self {
            PemError::Certificates { file, .. }
            | PemError::NoCertificate { file }
            | PemError::PrivateKey { file, .. }
            | PemError::NotATrustAnchor { file } => file,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("the certificate and key do not make a valid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("the client CA bundle cannot verify client certificates: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    #[error("client certificates are asked for, but no CA bundle is given to verify them")]
    NoClientCa,
}

/// Every certificate of a PEM file, in order (a chain comes leaf first); at least one.
pub fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certificates = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| PemError::Certificates {
            file: file.display().to_string(),
            reason: reason(&error),
        })?;
    if certificates.is_empty() {
        return Err(PemError::NoCertificate {
            file: file.display().to_string(),
        });
    }
    Ok(certificates)
}

/// The first private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn private_key(file: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(file).map_err(|error| PemError::PrivateKey {
        file: file.display().to_string(),
        reason: reason(&error),
    })
}

/// A trust store holding every certificate of a PEM bundle, each of which must
/// be usable as a trust anchor.
pub fn trust_store(file: &Path) -> Result<rustls::RootCertStore, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates(file)? {
        roots
            .add(certificate)
            .map_err(|_| PemError::NotATrustAnchor {
                file: file.display().to_string(),
            })?;
    }
    Ok(roots)
}

/// The bytes of a PEM bundle, for a client that parses them itself (Redis),
/// once checked to hold certificates and nothing unreadable.
pub fn certificate_bundle(file: &Path) -> Result<Vec<u8>, PemError> {
    let unreadable = |reason: String| PemError::Certificates {
        file: file.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(file).map_err(|error| unreadable(error.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| unreadable(reason(&error)))?;
    if certificates.is_empty() {
        return Err(PemError::NoCertificate {
            file: file.display().to_string(),
        });
    }
    Ok(bytes)
}

/// What went wrong, in words that quote nothing from the file.
fn reason(error: &pem::Error) -> String {
    match error {
        pem::Error::Io(error) => error.to_string(),
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".into(),
        pem::Error::NoItemsFound => "it holds none".into(),
        pem::Error::SectionTooLarge => "a PEM section is too large".into(),
        _ => "it is not valid PEM".into(),
    }
}

/// The process-wide crypto provider: aws-lc-rs restricted to AEAD suites
/// (AES-GCM and ChaCha20-Poly1305) with forward-secret key exchange.
pub fn provider() -> CryptoProvider {
    use aws_lc_rs::cipher_suite as cs;
    CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..aws_lc_rs::default_provider()
    }
}

/// Installs [`provider`] as the process default, once; later calls are no-ops.
/// Needed because several crates in the tree could otherwise disagree on it.
pub fn install_default_provider() {
    let _ = provider().install_default();
}

/// A server configuration from a PEM chain (leaf first) and a PEM private key,
/// asking clients for no certificate.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<rustls::ServerConfig, TlsError> {
    server_config_for_clients(cert_file, key_file, ClientAuth::Off, None)
}

/// As [`server_config`], asking clients for a certificate issued by a CA of
/// `client_ca_file` (a PEM bundle) unless `client_auth` is `off`: with
/// `optional`, a client may send none; a certificate sent is verified either way.
pub fn server_config_for_clients(
    cert_file: &Path,
    key_file: &Path,
    client_auth: ClientAuth,
    client_ca_file: Option<&Path>,
) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certificates(cert_file)?;
    let key = private_key(key_file)?;
    let provider = Arc::new(provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match (client_auth, client_ca_file) {
        (ClientAuth::Off, _) => builder.with_no_client_auth(),
        (_, None) => return Err(TlsError::NoClientCa),
        (ClientAuth::Optional | ClientAuth::Required, Some(ca_file)) => {
            let roots = Arc::new(trust_store(ca_file)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = match client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            builder.with_client_cert_verifier(verifier.build()?)
        }
    };
    Ok(builder.with_single_cert(chain, key)?)
}

/// A server configuration with the certificate and key of `server` (read
/// once, shared), asking clients for no certificate: what the operations
/// listener serves, so that probes and scrapers need no client identity.
pub fn server_config_without_clients(
    server: &rustls::ServerConfig,
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    Ok(builder
        .with_no_client_auth()
        .with_cert_resolver(server.cert_resolver.clone()))
}

/// Whether a URL's host is a loopback address, the only place plain HTTP may
/// go (tests and local development); everything else needs TLS.
pub fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // An IPv6 host comes bracketed, as in the URL.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(file: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("certs-dev")
            .join(file)
    }

    fn scratch(name: &str, content: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("caf-broker-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn the_development_certificates_keys_and_ca_load() {
        assert!(!certificates(&dev("server.pem")).unwrap().is_empty());
        assert!(private_key(&dev("server.key.pem")).is_ok());
        assert!(!trust_store(&dev("ca.pem")).unwrap().is_empty());
        assert!(!certificate_bundle(&dev("ca.pem")).unwrap().is_empty());
    }

    #[test]
    fn pem_errors_name_the_file_but_never_quote_it() {
        let secret = "-----BEGIN CERTIFICATE-----\nc2VjcmV0IGxpbmU=SECRET\n";
        let broken = scratch("broken.pem", secret);
        let malformed = scratch("malformed.pem", "-----BEGIN SECRET KEY MATERIAL\n");
        let empty = scratch("empty.pem", "no PEM here\n");
        let missing = dev("no-such-file.pem");
        let errors = [
            certificates(&broken).unwrap_err(),
            certificates(&malformed).unwrap_err(),
            certificates(&empty).unwrap_err(),
            certificates(&missing).unwrap_err(),
            private_key(&broken).unwrap_err(),
            private_key(&empty).unwrap_err(),
            trust_store(&missing).unwrap_err(),
            certificate_bundle(&broken).unwrap_err(),
            certificate_bundle(&empty).unwrap_err(),
        ];
        for error in errors {
            let message = error.to_string();
            assert!(message.contains(".pem"), "{message}");
            assert!(!message.contains("SECRET"), "{message}");
            assert!(!message.contains("c2VjcmV0"), "{message}");
        }
        for file in [broken, malformed, empty] {
            let _ = std::fs::remove_file(file);
        }
    }

    #[test]
    fn a_key_is_not_a_trust_anchor_and_a_certificate_is_not_a_key() {
        assert!(matches!(
            certificates(&dev("server.key.pem")),
            Err(PemError::NoCertificate { .. })
        ));
        assert!(matches!(
            private_key(&dev("server.pem")),
            Err(PemError::PrivateKey { .. })
        ));
    }
}
