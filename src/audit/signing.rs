//! Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes (Ed25519, key name = the log's origin), and `checkpoints.log`.
//!
//! A checkpoint is `origin\nsize\nbase64(root)\n` (`tlog_tiles::Checkpoint`),
//! signed as a note (`signed_note::Note`) whose one signature line names the
//! origin. The private key is an Ed25519 PKCS#8 PEM file readable by its owner
//! only; `verify` needs only the public key (SubjectPublicKeyInfo PEM, as
//! `openssl pkey -pubout` writes it, or a C2SP verifier key
//! `name+id+base64`). Signing and verification run on aws-lc-rs, the crypto
//! library the TLS stack already builds.
//!
//! `checkpoints.log` holds every checkpoint the writer signed, each note
//! followed by one empty line, oldest first; a torn final note (a crash during
//! its append) is ignored by readers and cut by the writer.

use std::path::Path;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use signed_note::{Note, NoteError, Verifier, VerifierList};

use super::tree::Hash;

/// The file, in `audit.dir`, of every checkpoint signed.
pub const CHECKPOINTS_FILE: &str = "checkpoints.log";

/// The signed-note algorithm byte of Ed25519 keys.
const ALG_ED25519: u8 = 1;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The writer's signing key and the log's origin.
pub struct CheckpointSigner {
    origin: String,
    key: Ed25519KeyPair,
    id: u32,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("origin", &self.origin)
            .field("key_id", &format_args!("{:08x}", self.id))
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// Reads an Ed25519 PKCS#8 PEM key; refuses an origin that cannot name
    /// a key. (Outside development, the production guards refuse a key file
    /// that its group or others may read.)
    pub fn from_file(path: &Path, origin: &str) -> Result<CheckpointSigner, String> {
        let der = crate::tls::private_key(path).map_err(|e| e.to_string())?;
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_der())
            .map_err(|_| "not an Ed25519 private key (PKCS#8)".to_owned())?;
        CheckpointSigner::new(origin, key)
    }

    fn new(origin: &str, key: Ed25519KeyPair) -> Result<CheckpointSigner, String> {
        check_origin(origin)?;
        let id = key_id(origin, key.public_key().as_ref());
        Ok(CheckpointSigner {
            origin: origin.to_owned(),
            key,
            id,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Lowercase hex of SHA-256 over the raw 32-byte public key: tells a
    /// shipped development key wherever it was copied.
    pub fn public_key_sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(self.key.public_key().as_ref()))
    }

    /// The signed note of the checkpoint (`size`, `root`), as stored.
    pub fn sign(&self, size: u64, root: Hash) -> Result<Vec<u8>, String> {
        let body =
            tlog_tiles::Checkpoint::new(&self.origin, size, root, "").map_err(|e| e.to_string())?;
        let mut note = Note::new(&body.to_bytes(), &[]).map_err(|e| e.to_string())?;
        note.add_sigs(&[self]).map_err(|e| e.to_string())?;
        Ok(note.to_bytes())
    }

    /// The verifier of this key, for checking what was written before.
    pub fn verifier(&self) -> CheckpointVerifier {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.key.public_key().as_ref());
        CheckpointVerifier {
            origin: self.origin.clone(),
            public,
            id: self.id,
        }
    }
}

impl signed_note::Signer for CheckpointSigner {
    fn name(&self) -> &str {
        &self.origin
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.key.sign(msg).as_ref().to_vec())
    }
}

/// A public key and the origin its checkpoints must name.
#[derive(Debug, Clone)]
pub struct CheckpointVerifier {
    origin: String,
    public: [u8; 32],
    id: u32,
}

/// A checkpoint whose signature checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedCheckpoint {
    pub size: u64,
    pub root: Hash,
}

/// Why a note is not a checkpoint of this log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteDefect {
    #[error("not a signed checkpoint note")]
    Malformed,
    #[error("a checkpoint of another log (origin {found}, expected {expected})")]
    OtherOrigin { found: String, expected: String },
    #[error("not signed by the given key for origin {origin}: forged, or signed by another key")]
    BadSignature { origin: String },
}

impl CheckpointVerifier {
    /// Reads a public key file: SubjectPublicKeyInfo PEM (`origin` is then
    /// the origin expected), or a C2SP verifier key `name+id+base64`, whose
    /// name must be `origin` when one is given.
    pub fn from_file(path: &Path, origin: Option<&str>) -> Result<CheckpointVerifier, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read the key: {e}"))?;
        let text = text.trim();
        if text.contains("-----BEGIN PUBLIC KEY-----") {
            let body: String = text
                .lines()
                .skip_while(|l| !l.starts_with("-----BEGIN PUBLIC KEY-----"))
                .skip(1)
                .take_while(|l| !l.starts_with("-----END"))
                .collect();
            let der = STANDARD
                .decode(body.trim())
                .map_err(|_| "not a PEM public key".to_owned())?;
            let public = der
                .strip_prefix(&ED25519_SPKI_PREFIX)
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .ok_or_else(|| "not an Ed25519 public key".to_owned())?;
            let origin = origin.ok_or_else(|| {
                "a PEM public key does not name the log: give its origin (audit.log_origin)"
                    .to_owned()
            })?;
            check_origin(origin)?;
            return Ok(CheckpointVerifier {
                origin: origin.to_owned(),
                public,
                id: key_id(origin, &public),
            });
        }
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("neither a PEM public key nor a verifier key (name+id+base64)".into());
        };
        let key = STANDARD
            .decode(key)
            .map_err(|_| "the verifier key is not base64".to_owned())?;
        let public = key
            .strip_prefix(&[ALG_ED25519])
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| "the verifier key is not an Ed25519 key".to_owned())?;
        let id = u32::from_str_radix(id, 16).map_err(|_| "bad verifier key id".to_owned())?;
        if id != key_id(name, &public) {
            return Err("the verifier key's id does not match its name and key".into());
        }
        if let Some(origin) = origin
            && origin != name
        {
            return Err(format!(
                "the verifier key names {name}, but the log's origin is {origin}"
            ));
        }
        Ok(CheckpointVerifier {
            origin: name.to_owned(),
            public,
            id,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The verifier of one replica's log: the same key, the origin
    /// [`replica_origin`] gives that replica.
    pub fn for_replica(&self, replica: &str) -> CheckpointVerifier {
        let origin = replica_origin(&self.origin, replica);
        CheckpointVerifier {
            id: key_id(&origin, &self.public),
            public: self.public,
            origin,
        }
    }

    /// The verifier of the log `note` is a checkpoint of, when that log is
    /// one of this origin's replicas (`<origin>/<replica id>`); this
    /// verifier otherwise, which then names the note's origin as another
    /// log's. Every other checkpoint of that log must name the same origin.
    pub fn for_log_of(&self, note: &[u8]) -> CheckpointVerifier {
        let replica = Note::from_bytes(note)
            .ok()
            .and_then(|note| {
                let body = tlog_tiles::Checkpoint::from_bytes(note.text()).ok()?;
                let rest = body.origin().strip_prefix(self.origin.as_str())?;
                Some(rest.strip_prefix('/')?.to_owned())
            })
            .filter(|id| super::settings::is_id(id));
        match replica {
            Some(id) => self.for_replica(&id),
            None => self.clone(),
        }
    }

    /// Checks one note: a well-formed checkpoint of this origin, signed by this key.
    pub fn verify(&self, note: &[u8]) -> Result<SignedCheckpoint, NoteDefect> {
        let note = Note::from_bytes(note).map_err(|_| NoteDefect::Malformed)?;
        let body =
            tlog_tiles::Checkpoint::from_bytes(note.text()).map_err(|_| NoteDefect::Malformed)?;
        if body.origin() != self.origin {
            return Err(NoteDefect::OtherOrigin {
                found: body.origin().to_owned(),
                expected: self.origin.clone(),
            });
        }
        let known = VerifierList::new(vec![Box::new(self.clone())]);
        match note.verify(&known) {
            Ok(_) => Ok(SignedCheckpoint {
                size: body.size(),
                root: *body.hash(),
            }),
            Err(NoteError::MalformedNote) => Err(NoteDefect::Malformed),
            Err(_) => Err(NoteDefect::BadSignature {
                origin: self.origin.clone(),
            }),
        }
    }
}

impl Verifier for CheckpointVerifier {
    fn name(&self) -> &str {
        &self.origin
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public)
            .verify(msg, sig)
            .is_ok()
    }
}

/// The signed-note key id: the first 4 bytes of SHA-256(name, "\n", 0x01, key).
fn key_id(name: &str, public: &[u8]) -> u32 {
    let mut encoded = vec![ALG_ED25519];
    encoded.extend_from_slice(public);
    signed_note::key_id(name, &encoded)
}

/// The origin of one replica's log: `<base>/<replica>`, or `base` itself
/// when its last segment already is the replica's id. Each replica signs
/// its own tree, so each needs a name of its own: a witness that saw two
/// trees under one origin would rightly report a fork.
pub fn replica_origin(base: &str, replica: &str) -> String {
    match base.rsplit_once('/') {
        Some((_, last)) if last == replica => base.to_owned(),
        _ => format!("{base}/{replica}"),
    }
}

/// An origin names a signed-note key: not empty, no space, no `+`.
pub fn check_origin(origin: &str) -> Result<(), String> {
    if signed_note::is_key_name_valid(origin) && !origin.contains('\n') {
        Ok(())
    } else {
        Err(format!(
            "{origin:?} cannot name a log: it must be non-empty, without spaces or '+'"
        ))
    }
}

/// The notes of a `checkpoints.log`, oldest first, and the length up to the
/// end of the last complete one (bytes after it are a torn append).
pub fn split_log(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut notes = Vec::new();
    let mut start = 0;
    let mut complete = 0;
    let mut blank_seen = false;
    let mut pos = 0;
    // A note is text lines, one empty line, signature lines, then the empty
    // line that ends the entry.
    while let Some(offset) = bytes.get(pos..).and_then(|rest| find(rest, b"\n\n")) {
        let end = pos + offset + 2;
        if blank_seen {
            if let Some(note) = bytes.get(start..end - 1) {
                notes.push(note);
            }
            start = end;
            complete = end;
            blank_seen = false;
        } else {
            blank_seen = true;
        }
        pos = end;
    }
    (notes, complete)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;

    fn signer(origin: &str) -> CheckpointSigner {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        CheckpointSigner::new(origin, key).unwrap()
    }

    #[test]
    fn a_replicas_origin_is_the_base_and_its_id_unless_the_base_already_ends_with_it() {
        assert_eq!(
            replica_origin("ex.org/prod", "broker-0"),
            "ex.org/prod/broker-0"
        );
        assert_eq!(replica_origin("ex.org/prod-1", "prod-1"), "ex.org/prod-1");
        assert_eq!(replica_origin("ex.org", "r1"), "ex.org/r1");
    }

    #[test]
    fn a_base_verifier_adopts_a_replicas_origin_but_not_a_deeper_or_foreign_one() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let signer_for = |origin: &str| {
            let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            CheckpointSigner::new(origin, key)
        };
        let base = signer_for("ex.org/prod").unwrap();
        let root = super::super::tree::leaf_hash(b"x");
        let note = signer_for("ex.org/prod/broker-0")
            .unwrap()
            .sign(1, root)
            .unwrap();
        let verifier = base.verifier().for_log_of(&note);
        assert_eq!(verifier.origin(), "ex.org/prod/broker-0");
        assert!(verifier.verify(&note).is_ok());
        for origin in [
            "ex.org/prod/a/b",
            "ex.org/production",
            "ex.org/prod/.hidden",
        ] {
            let note = signer_for(origin).unwrap().sign(1, root).unwrap();
            let verifier = base.verifier().for_log_of(&note);
            assert_eq!(verifier.origin(), "ex.org/prod", "{origin}");
            assert!(
                matches!(verifier.verify(&note), Err(NoteDefect::OtherOrigin { .. })),
                "{origin}"
            );
        }
    }

    #[test]
    fn a_signed_checkpoint_is_a_c2sp_note_that_verifies_with_the_public_key_only() {
        let signer = signer("caf-broker.example/prod-1");
        let root = super::super::tree::leaf_hash(b"x");
        let note = signer.sign(42, root).unwrap();
        let text = String::from_utf8(note.clone()).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("caf-broker.example/prod-1"));
        assert_eq!(lines.next(), Some("42"));
        assert_eq!(lines.next(), Some(STANDARD.encode(root.0).as_str()));
        assert_eq!(lines.next(), Some(""));
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("\u{2014} caf-broker.example/prod-1 ")
        );
        let verifier = signer.verifier();
        assert_eq!(
            verifier.verify(&note),
            Ok(SignedCheckpoint { size: 42, root })
        );
    }

    #[test]
    fn another_key_another_origin_or_an_edited_size_is_refused() {
        let ours = signer("log-a");
        let root = super::super::tree::leaf_hash(b"x");
        let theirs = signer("log-a").sign(1, root).unwrap();
        assert_eq!(
            ours.verifier().verify(&theirs),
            Err(NoteDefect::BadSignature {
                origin: "log-a".into()
            })
        );
        let other_origin = signer("log-b").sign(1, root).unwrap();
        assert!(matches!(
            ours.verifier().verify(&other_origin),
            Err(NoteDefect::OtherOrigin { .. })
        ));
        let edited = String::from_utf8(ours.sign(5, root).unwrap())
            .unwrap()
            .replacen("\n5\n", "\n4\n", 1);
        assert!(ours.verifier().verify(edited.as_bytes()).is_err());
    }

    #[test]
    fn the_log_splits_into_notes_and_ignores_a_torn_last_one() {
        let signer = signer("log-a");
        let root = super::super::tree::leaf_hash(b"x");
        let mut log = Vec::new();
        for size in 1..=3 {
            log.extend(signer.sign(size, root).unwrap());
            log.push(b'\n');
        }
        let whole = log.len();
        log.extend_from_slice(b"log-a\n4\n");
        let (notes, complete) = split_log(&log);
        assert_eq!((notes.len(), complete), (3, whole));
        assert_eq!(signer.verifier().verify(notes[2]).unwrap().size, 3);
    }
}
