//! The pseudonymization key: dossier identifiers enter the log only as HMAC-SHA-256 under it.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::domain::Lookup;

use super::AuditSetupError;

/// A secret of at least 32 bytes under which dossier identifiers are hashed.
///
/// `Debug` is redacted. A key must be kept for as long as records it
/// pseudonymized are, or `search` no longer finds them: after a rotation the
/// former key moves to `audit.previous_hmac_keys`, under its id.
#[derive(Clone)]
pub struct AuditKey {
    mac: Hmac<Sha256>,
    /// The key's name, written as `key_id` in the records it pseudonymizes.
    id: Option<String>,
}

impl AuditKey {
    /// The shortest key accepted, in bytes (the HMAC-SHA-256 output size).
    pub const MIN_BYTES: usize = 32;

    /// Reads the key file: hex digits (surrounding whitespace ignored) are
    /// decoded, anything else is taken as raw bytes.
    pub fn from_file(path: &Path) -> Result<AuditKey, AuditSetupError> {
        let bad = |problem: String| AuditSetupError::Key {
            path: path.to_path_buf(),
            problem,
        };
        let contents =
            std::fs::read(path).map_err(|e| bad(format!("cannot read the key file: {e}")))?;
        AuditKey::from_bytes(&decode(&contents)).map_err(bad)
    }

    /// A key from its bytes; refuses keys shorter than [`AuditKey::MIN_BYTES`].
    pub fn from_bytes(key: &[u8]) -> Result<AuditKey, String> {
        if key.len() < Self::MIN_BYTES {
            return Err(format!(
                "the key is {} bytes long; at least {} are needed (e.g. 64 hex digits from `openssl rand -hex 32`)",
                key.len(),
                Self::MIN_BYTES
            ));
        }
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .map_err(|_| "the key cannot be used for HMAC-SHA-256".to_owned())?;
        Ok(AuditKey { mac, id: None })
    }

    /// The same key, named: records it pseudonymizes carry `key_id`.
    pub fn with_id(self, id: Option<String>) -> AuditKey {
        AuditKey { id, ..self }
    }

    /// The key's name (`audit.hmac_key_id`, or the `id` of a former key).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Every key of the settings, the current one first, then the former ones
    /// in the order listed: what `search` and `report` try. Every file that
    /// cannot be used is reported.
    pub fn all_from_settings(
        settings: &super::AuditSettings,
    ) -> Result<Vec<AuditKey>, Vec<AuditSetupError>> {
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        match AuditKey::from_file(&settings.hmac_key_file) {
            Ok(key) => keys.push(key.with_id(settings.hmac_key_id.clone())),
            Err(e) => problems.push(e),
        }
        for (index, previous) in settings.previous_hmac_keys.iter().enumerate() {
            match AuditKey::from_file(&previous.file) {
                Ok(key) => keys.push(key.with_id(previous.id.clone())),
                Err(AuditSetupError::Key { path, problem }) => {
                    problems.push(AuditSetupError::PreviousKey {
                        index,
                        path,
                        problem,
                    });
                }
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() {
            Ok(keys)
        } else {
            Err(problems)
        }
    }

    /// The dossier as it appears in the log: lowercase hex of
    /// HMAC-SHA-256(key, `numero:<canonical digits, no leading zero>` or
    /// `nir:<NIR, uppercase>`), so that `0000042` and `42` are one dossier here too.
    ///
    /// The kind is part of the input so that a numéro and a NIR never collide.
    pub fn pseudonymize(&self, lookup: &Lookup) -> String {
        let (kind, value) = match lookup {
            Lookup::Numero(numero) => ("numero", numero.as_str()),
            Lookup::Nir(nir) => ("nir", nir.as_str()),
        };
        let mut mac = self.mac.clone();
        mac.update(kind.as_bytes());
        mac.update(b":");
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

impl AuditKey {
    /// A fingerprint of the key that does not reveal it: lowercase hex of
    /// HMAC-SHA-256(key, `caf-broker:key-fingerprint`). Two files hold the same
    /// key exactly when their fingerprints are equal.
    pub fn fingerprint(&self) -> String {
        let mut mac = self.mac.clone();
        mac.update(b"caf-broker:key-fingerprint");
        hex::encode(mac.finalize().into_bytes())
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            None => f.write_str("AuditKey(<redacted>)"),
            Some(id) => write!(f, "AuditKey({id}: <redacted>)"),
        }
    }
}

/// Hex text (an even number of hex digits, whitespace around it ignored) is
/// decoded; any other content is the key itself.
fn decode(contents: &[u8]) -> Vec<u8> {
    let text = contents.trim_ascii();
    let is_hex =
        !text.is_empty() && text.len().is_multiple_of(2) && text.iter().all(u8::is_ascii_hexdigit);
    match hex::decode(text) {
        Ok(bytes) if is_hex => bytes,
        _ => contents.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Nir, NumeroAllocataire};

    fn key() -> AuditKey {
        AuditKey::from_bytes(&[7u8; 32]).unwrap()
    }

    #[test]
    fn hex_text_is_decoded_and_raw_bytes_are_kept() {
        assert_eq!(decode(b"  00ff\n"), vec![0, 255]);
        assert_eq!(decode(b"not hex at all"), b"not hex at all".to_vec());
        assert_eq!(decode(b"abc"), b"abc".to_vec());
    }

    #[test]
    fn a_short_key_is_refused_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("caf-audit-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("short.key");
        std::fs::write(&path, "00112233").unwrap();
        let err = AuditKey::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("short.key"), "{err}");
        assert!(err.contains("4 bytes"), "{err}");
        let missing = AuditKey::from_file(&dir.join("missing.key"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing.key"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_shipped_dev_key_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev/audit-hmac.key");
        assert!(AuditKey::from_file(&path).is_ok());
    }

    #[test]
    fn pseudonyms_are_stable_keyed_and_never_the_clear_value() {
        let numero = Lookup::Numero(NumeroAllocataire::parse("1000002").unwrap());
        let nir = Lookup::Nir(Nir::parse("295109912611193").unwrap());
        let a = key().pseudonymize(&numero);
        assert_eq!(a, key().pseudonymize(&numero));
        assert_eq!(a.len(), 64);
        assert!(!a.contains("1000002"));
        assert_ne!(a, key().pseudonymize(&nir));
        let other = AuditKey::from_bytes(&[8u8; 32]).unwrap();
        assert_ne!(a, other.pseudonymize(&numero));
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert_eq!(format!("{:?}", key()), "AuditKey(<redacted>)");
        let named = key().with_id(Some("2026".into()));
        assert_eq!(format!("{named:?}"), "AuditKey(2026: <redacted>)");
    }
}
