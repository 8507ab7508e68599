//! The verification keys, parsed from a JWKS (file or fetched) and chosen per token by `kid` and `alg`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use sha2::{Digest, Sha256};

use super::AuthError;

/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// Why the authenticator could not be built. Each message names the file or the setting.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("{}", .0.join("\n"))]
    InvalidSettings(Vec<String>),
    #[error("auth.jwks_file: cannot read {}: {error}", .path.display())]
    ReadJwks {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("auth.jwks_file: {} is not a JSON Web Key Set ({error})", .path.display())]
    ParseJwks {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("auth.jwks_file: two keys of {} have the kid {kid:?}; a kid must name one key", .path.display())]
    DuplicateKid { path: PathBuf, kid: String },
    #[error(
        "auth.jwks_file: {} holds no key usable for auth.algorithms ({skipped} skipped: only Ed25519, P-256, P-384 and RSA of 2048 bits or more, for signatures, are used)",
        .path.display()
    )]
    NoUsableKey { path: PathBuf, skipped: usize },
    #[error("auth.revoked_jti_file: cannot read {}: {error}", .path.display())]
    ReadRevokedJti {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("auth.jwks_ca_file: {0}")]
    Ca(crate::tls::PemError),
    #[error("auth.jwks_url: cannot build the HTTPS client: {0}")]
    Client(String),
    #[error("auth.jwks_url: the first fetch of {url} failed: {error}")]
    FirstFetch {
        url: String,
        error: super::remote::JwksFetchError,
    },
}

/// Why the content of a JWKS was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub(super) enum KeySetError {
    #[error("not a JSON Web Key Set")]
    Parse(serde_json::Error),
    #[error("two keys have the kid {0:?}; a kid must name one key")]
    DuplicateKid(String),
    #[error(
        "no key usable for auth.algorithms ({0} skipped: only Ed25519, P-256, P-384 and RSA of 2048 bits or more, for signatures, are used)"
    )]
    NoUsableKey(usize),
}

/// What names one key of a set across reloads: the SHA-256 of its `kid` and
/// public material. A cached token is served only while the key that verified
/// it is still in the set.
pub(super) type KeyFingerprint = [u8; 32];

/// A public key of the set, with the algorithms it may verify.
pub(super) struct VerifyingKey {
    pub kid: Option<String>,
    pub fingerprint: KeyFingerprint,
    /// Never empty: the key's own `alg`, or those of its type, within `auth.algorithms`.
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

/// The usable keys of a JWKS file.
pub(super) struct KeySet {
    pub keys: Vec<VerifyingKey>,
    /// Entries of the file that were left out (wrong use, type, size or algorithm).
    pub skipped: usize,
}

#[derive(serde::Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// The JWK members this broker reads (RFC 7517, 7518); others are ignored.
#[derive(serde::Deserialize)]
struct RawJwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
}

impl KeySet {
    /// Reads a JWKS file, keeping the keys usable with one of `allowed`.
    pub fn load(path: &Path, allowed: &[Algorithm]) -> Result<Self, AuthSetupError> {
        let text = std::fs::read(path).map_err(|error| AuthSetupError::ReadJwks {
            path: path.to_owned(),
            error,
        })?;
        let origin = path.display().to_string();
        Self::parse(&text, &origin, allowed).map_err(|error| match error {
            KeySetError::Parse(error) => AuthSetupError::ParseJwks {
                path: path.to_owned(),
                error,
            },
            KeySetError::DuplicateKid(kid) => AuthSetupError::DuplicateKid {
                path: path.to_owned(),
                kid,
            },
            KeySetError::NoUsableKey(skipped) => AuthSetupError::NoUsableKey {
                path: path.to_owned(),
                skipped,
            },
        })
    }

    /// A set with no key, which refuses every token.
    pub fn empty() -> Self {
        Self {
            keys: Vec::new(),
            skipped: 0,
        }
    }

    /// Parses a JWKS document, keeping the keys usable with one of `allowed`;
    /// `origin` (a file or URL) only names the set in the logs.
    pub fn parse(text: &[u8], origin: &str, allowed: &[Algorithm]) -> Result<Self, KeySetError> {
        let raw: RawJwks = serde_json::from_slice(text).map_err(KeySetError::Parse)?;
        let mut set = KeySet {
            keys: Vec::with_capacity(raw.keys.len()),
            skipped: 0,
        };
        for (index, entry) in raw.keys.into_iter().enumerate() {
            let key = serde_json::from_value::<RawJwk>(entry)
                .map_err(|_| "it is not a JWK object with a kty")
                .and_then(|jwk| verifying_key(&jwk, allowed));
            match key {
                Ok(key) => {
                    if let Some(kid) = &key.kid
                        && set.keys.iter().any(|known| known.kid.as_ref() == Some(kid))
                    {
                        return Err(KeySetError::DuplicateKid(kid.clone()));
                    }
                    set.keys.push(key);
                }
                Err(reason) => {
                    tracing::warn!(jwks = origin, index, reason, "skipping a key of the JWKS");
                    set.skipped += 1;
                }
            }
        }
        if set.keys.is_empty() {
            return Err(KeySetError::NoUsableKey(set.skipped));
        }
        Ok(set)
    }

    /// Whether the key of this fingerprint is (still) in the set.
    pub fn holds(&self, fingerprint: &KeyFingerprint) -> bool {
        self.keys.iter().any(|key| &key.fingerprint == fingerprint)
    }

    /// The key that must verify a token signed with `alg`: by `kid`, or without a
    /// `kid` the only key for `alg`.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerifyingKey, AuthError> {
        let key = match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|key| key.kid.as_deref() == Some(kid))
                .ok_or(AuthError::UnknownKey)?,
            None => {
                let mut candidates = self.keys.iter().filter(|key| key.algorithms.contains(&alg));
                match (candidates.next(), candidates.next()) {
                    (Some(key), None) => key,
                    _ => return Err(AuthError::UnknownKey),
                }
            }
        };
        if key.algorithms.contains(&alg) {
            Ok(key)
        } else {
            Err(AuthError::DisallowedAlgorithm)
        }
    }
}

/// Builds a verifying key from a JWK, or says why it is left out.
fn verifying_key(jwk: &RawJwk, allowed: &[Algorithm]) -> Result<VerifyingKey, &'static str> {
    if jwk.use_.as_deref().is_some_and(|use_| use_ != "sig") {
        return Err("its use is not sig");
    }
    if jwk
        .key_ops
        .as_ref()
        .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
    {
        return Err("its key_ops do not include verify");
    }
    let (key, family_algorithms): (DecodingKey, &[Algorithm]) =
        match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => (ed25519(jwk)?, &[Algorithm::EdDSA]),
            ("EC", Some("P-256")) => (ec(jwk, 32)?, &[Algorithm::ES256]),
            ("EC", Some("P-384")) => (ec(jwk, 48)?, &[Algorithm::ES384]),
            ("RSA", _) => (rsa(jwk)?, AlgorithmFamily::Rsa.algorithms()),
            ("oct", _) => return Err("symmetric (oct) keys are never used"),
            _ => return Err("its key type or curve is not supported"),
        };
    let algorithms: Vec<Algorithm> = match jwk.alg.as_deref() {
        None => family_algorithms
            .iter()
            .copied()
            .filter(|alg| allowed.contains(alg))
            .collect(),
        Some(name) => {
            let alg = name
                .parse::<Algorithm>()
                .map_err(|_| "its alg is unknown")?;
            if !family_algorithms.contains(&alg) {
                return Err("its alg does not match its key type");
            }
            [alg]
                .into_iter()
                .filter(|alg| allowed.contains(alg))
                .collect()
        }
    };
    if algorithms.is_empty() {
        return Err("its algorithm is not in auth.algorithms");
    }
    Ok(VerifyingKey {
        kid: jwk.kid.clone(),
        fingerprint: fingerprint(jwk),
        algorithms,
        key,
    })
}

/// The SHA-256 of a key's `kid` and public members, each length-prefixed (an
/// absent one marked apart) so that no two keys share one.
fn fingerprint(jwk: &RawJwk) -> KeyFingerprint {
    let mut hash = Sha256::new();
    for member in [
        Some(&jwk.kty),
        jwk.kid.as_ref(),
        jwk.crv.as_ref(),
        jwk.x.as_ref(),
        jwk.y.as_ref(),
        jwk.n.as_ref(),
        jwk.e.as_ref(),
    ] {
        match member {
            Some(value) => {
                hash.update((value.len() as u64).to_be_bytes());
                hash.update(value.as_bytes());
            }
            None => hash.update(u64::MAX.to_be_bytes()),
        }
    }
    hash.finalize().into()
}

/// The decoded length of a base64url member, if it decodes.
fn decoded_len(member: Option<&String>) -> Option<usize> {
    member
        .and_then(|value| URL_SAFE_NO_PAD.decode(value).ok())
        .map(|bytes| bytes.len())
}

fn ed25519(jwk: &RawJwk) -> Result<DecodingKey, &'static str> {
    match (&jwk.x, decoded_len(jwk.x.as_ref())) {
        (Some(x), Some(32)) => {
            DecodingKey::from_ed_components(x).map_err(|_| "its x is not base64url")
        }
        _ => Err("its x is not a 32-byte Ed25519 public key"),
    }
}

fn ec(jwk: &RawJwk, coordinate_len: usize) -> Result<DecodingKey, &'static str> {
    match (
        &jwk.x,
        &jwk.y,
        decoded_len(jwk.x.as_ref()),
        decoded_len(jwk.y.as_ref()),
    ) {
        (Some(x), Some(y), Some(x_len), Some(y_len))
            if x_len == coordinate_len && y_len == coordinate_len =>
        {
            DecodingKey::from_ec_components(x, y).map_err(|_| "its x or y is not base64url")
        }
        _ => Err("its x and y do not match its curve"),
    }
}

fn rsa(jwk: &RawJwk) -> Result<DecodingKey, &'static str> {
    match (
        &jwk.n,
        &jwk.e,
        decoded_len(jwk.n.as_ref()),
        decoded_len(jwk.e.as_ref()),
    ) {
        (Some(n), Some(e), Some(n_len), Some(1..)) if n_len >= MIN_RSA_MODULUS_BYTES => {
            DecodingKey::from_rsa_components(n, e).map_err(|_| "its n or e is not base64url")
        }
        _ => Err("its modulus is missing or shorter than 2048 bits"),
    }
}
