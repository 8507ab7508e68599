//! The canonical form of a record and the hash chain over it.
//!
//! A record's canonical form is its JSON object with the keys in the order of
//! [`Record`]'s fields, no insignificant whitespace, strings escaped as
//! serde_json escapes them (only `"`, `\` and control characters), `null` for
//! unknown values, and without the `hash` key. Because `hash` is the last key
//! of a stored line, anyone can check a line without this code:
//! remove the trailing `,"hash":"<64 hex>"` (keeping the closing `}`),
//! SHA-256 the rest, and compare with the removed value.

use sha2::{Digest, Sha256};

use super::record::Record;

/// The `prev` of the first record ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Gives `record` its `hash` and returns the line to store (newline included).
pub(super) fn seal(record: &mut Record) -> Result<Vec<u8>, serde_json::Error> {
    record.hash.clear();
    let mut line = serde_json::to_vec(&*record)?;
    record.hash = hex::encode(Sha256::digest(&line));
    // `hash` is the last key: the stored line is the canonical form with it appended.
    line.pop();
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(record.hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok(line)
}

/// Appends to `out` the stored line (newline included) of the record at
/// `seq`, written at `time`, whose body is `body` (as
/// [`super::record::write_body`] writes it) and whose `prev` is `prev` (the
/// previous hash's hex digits, as stored); returns the record's hash and its
/// `time` as written. The same bytes as [`seal`] of the same record, without
/// building it: the canonical form is assembled in `out`, hashed in place,
/// and `hash` appended.
pub(super) fn seal_body(
    out: &mut Vec<u8>,
    seq: u64,
    time: jiff::Timestamp,
    body: &[u8],
    prev: &[u8],
) -> ([u8; 32], TimeText) {
    use std::io::Write as _;

    let start = out.len();
    let time = TimeText::of(time);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{{\"seq\":{seq},\"time\":\"");
    out.extend_from_slice(time.as_str().as_bytes());
    out.extend_from_slice(b"\",");
    out.extend_from_slice(body);
    out.extend_from_slice(b"\"prev\":\"");
    out.extend_from_slice(prev);
    out.extend_from_slice(b"\"}");
    let hash: [u8; 32] = Sha256::digest(&out[start..]).into();
    // `hash` is the last key: the stored line is the canonical form with it appended.
    out.pop();
    out.extend_from_slice(b",\"hash\":\"");
    push_hex(out, &hash);
    out.extend_from_slice(b"\"}\n");
    (hash, time)
}

/// A record's `time` as written (RFC 3339 UTC with microseconds), formatted
/// once, on the stack, for the line and the receipt alike.
#[derive(Clone, Copy)]
pub(super) struct TimeText {
    bytes: [u8; 40],
    len: u8,
}

impl TimeText {
    fn of(time: jiff::Timestamp) -> TimeText {
        use std::fmt::Write as _;

        let mut text = TimeText {
            bytes: [0; 40],
            len: 0,
        };
        // At most 30 characters (`-009999-12-31T23:59:59.999999Z`): it fits.
        let _ = write!(text, "{time:.6}");
        text
    }

    pub(super) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Write for TimeText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let start = usize::from(self.len);
        let end = start + s.len();
        let room = self.bytes.get_mut(start..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = u8::try_from(end).map_err(|_| std::fmt::Error)?;
        Ok(())
    }
}

impl std::fmt::Debug for TimeText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Appends the 64 lowercase hex digits of `hash`.
fn push_hex(out: &mut Vec<u8>, hash: &[u8; 32]) {
    out.extend_from_slice(hex_of(hash).as_bytes());
}

/// The 64 lowercase hex digits of a record hash, without allocating.
pub(super) fn hex_of(hash: &[u8; 32]) -> HexHash {
    let mut digits = [0u8; 64];
    // 32 bytes always make 64 digits.
    let _ = hex::encode_to_slice(hash, &mut digits);
    HexHash(digits)
}

/// What [`hex_of`] returns: ASCII hex digits only.
pub(super) struct HexHash([u8; 64]);

impl std::ops::Deref for HexHash {
    type Target = str;

    fn deref(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// What is wrong with a parsed line, if anything, as far as the line alone can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Integrity {
    Sound,
    /// The hash does not match the content.
    HashMismatch,
    /// The content matches its hash, but the bytes are not the canonical form.
    NotCanonical,
}

/// Checks a record parsed from `line` (without its newline) against its own hash.
pub(super) fn check(record: &Record, line: &[u8]) -> Integrity {
    let mut body = record.clone();
    body.hash.clear();
    let Ok(canonical) = serde_json::to_vec(&body) else {
        return Integrity::HashMismatch;
    };
    if hex::encode(Sha256::digest(&canonical)) != record.hash {
        return Integrity::HashMismatch;
    }
    let mut sealed = body;
    match seal(&mut sealed) {
        Ok(mut expected) => {
            expected.pop();
            if expected == line {
                Integrity::Sound
            } else {
                Integrity::NotCanonical
            }
        }
        Err(_) => Integrity::NotCanonical,
    }
}

/// Parses one line (without its newline). The error says where the line
/// breaks but never echoes its content, which may be personal data.
pub(super) fn parse(line: &[u8]) -> Result<Record, String> {
    serde_json::from_slice(line).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not valid JSON",
            serde_json::error::Category::Data => "not an audit record",
            serde_json::error::Category::Eof => "cut short",
        };
        format!("{kind} at column {}", e.column())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditEntry, Outcome, RecordKind, write_body};
    use crate::domain::CacheOutcome;

    fn sample() -> Record {
        Record {
            seq: 1,
            time: "2026-11-26T10:00:00.000000Z".into(),
            request_id: "00000000-0000-0000-0000-000000000001".into(),
            trace_id: None,
            post: Some("TN-TUNIS".into()),
            sub: Some("agent-1".into()),
            jti: None,
            role: Some("agent_consulaire".into()),
            purpose: Some("verification_radiation".into()),
            case_reference: Some("TN-2026/1".into()),
            dossier: Some("ab".repeat(32)),
            key_id: None,
            outcome: Outcome::Released,
            status: 200,
            released: vec!["identite.nom".into()],
            policy_version: Some("sha256:00".into()),
            cache: Some(CacheOutcome::Miss),
            client_cert_sha256: None,
            client_post: None,
            kind: None,
            rule: None,
            figures: None,
            trigger: None,
            previous_policy_version: None,
            rejected_policy_version: None,
            prev: GENESIS.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn the_canonical_form_is_pinned() {
        let mut record = sample();
        let line = seal(&mut record).unwrap();
        let text = String::from_utf8(line).unwrap();
        let expected_body = concat!(
            r#"{"seq":1,"time":"2026-11-26T10:00:00.000000Z","request_id":"00000000-0000-0000-0000-000000000001","#,
            r#""trace_id":null,"post":"TN-TUNIS","sub":"agent-1","role":"agent_consulaire","#,
            r#""purpose":"verification_radiation","case_reference":"TN-2026/1","#,
            r#""dossier":"abababababababababababababababababababababababababababababababab","#,
            r#""outcome":"released","status":200,"released":["identite.nom"],"#,
            r#""policy_version":"sha256:00","cache":"miss","#,
            r#""prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#
        );
        let hash = hex::encode(Sha256::digest(expected_body.as_bytes()));
        assert_eq!(record.hash, hash);
        assert_eq!(
            text,
            format!(
                "{},\"hash\":\"{hash}\"}}\n",
                &expected_body[..expected_body.len() - 1]
            )
        );
    }

    #[test]
    fn a_sealed_line_is_what_serde_writes_and_checks_sound() {
        let mut record = sample();
        let line = seal(&mut record).unwrap();
        let mut via_serde = serde_json::to_vec(&record).unwrap();
        via_serde.push(b'\n');
        assert_eq!(line, via_serde);
        let parsed = parse(&line[..line.len() - 1]).unwrap();
        assert_eq!(parsed, record);
        assert_eq!(check(&parsed, &line[..line.len() - 1]), Integrity::Sound);
    }

    /// An entry with every field set, strings that need escaping included.
    fn full_entry() -> AuditEntry {
        use crate::domain::{CaseReference, PostCode, Purpose, Role, Subject};
        AuditEntry {
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            post: PostCode::parse("TN-TUNIS").ok(),
            sub: Subject::parse("agent-42").ok(),
            jti: Some("j\"t\\i".into()),
            role: Role::parse("agent_consulaire").ok(),
            purpose: Purpose::parse("verification_radiation").ok(),
            case_reference: CaseReference::parse("TN-2026/0042").ok(),
            released: vec!["identite.nom".into(), "droits.\u{e9}t\u{e9}\n".into()],
            policy_version: Some("sha256:\u{1}ab".into()),
            cache: Some(CacheOutcome::Hit),
            client_cert_sha256: Some(crate::tls::Thumbprint::of(b"a certificate")),
            client_post: PostCode::parse("TN-SFAX").ok(),
            kind: Some(RecordKind::Alert),
            rule: Some("not_found_ratio"),
            figures: crate::audit::Figures::from([
                ("lookups".to_owned(), 20.into()),
                (
                    "ratio".to_owned(),
                    serde_json::Number::from_f64(0.75).unwrap(),
                ),
            ]),
            ..AuditEntry::new(uuid::Uuid::from_u128(0xabcdef), Outcome::NotFound, 404)
        }
    }

    #[test]
    fn a_body_sealed_in_place_is_byte_for_byte_the_record_serde_seals() {
        let time: jiff::Timestamp = "2026-11-26T10:00:00.123456789Z".parse().unwrap();
        let prev = "cd".repeat(32);
        let minimal = AuditEntry::new(uuid::Uuid::nil(), Outcome::Unauthenticated, 401);
        let cases = [
            (full_entry(), Some("ab".repeat(32)), Some("2026-key")),
            (full_entry(), Some("ab".repeat(32)), None),
            (full_entry(), None, Some("2026-key")),
            (minimal, None, None),
            (
                AuditEntry::policy_applied(
                    crate::audit::record::ReloadTrigger::Signal,
                    "sha256:aa".into(),
                    "sha256:bb".into(),
                ),
                None,
                None,
            ),
            (
                AuditEntry::policy_rejected(
                    crate::audit::record::ReloadTrigger::FileWatch,
                    "sha256:aa".into(),
                    Some("sha256:cc".into()),
                    3,
                ),
                None,
                None,
            ),
        ];
        for (entry, dossier, key_id) in cases {
            let mut body = Vec::new();
            write_body(&entry, dossier.as_deref(), key_id, &mut body).unwrap();
            let mut line = b"kept".to_vec();
            let (hash, written_at) = seal_body(&mut line, 42, time, &body, prev.as_bytes());

            let mut record = Record::unsealed(entry, dossier.clone());
            if dossier.is_some() {
                record.key_id = key_id.map(str::to_owned);
            }
            record.seq = 42;
            record.time = format!("{time:.6}");
            record.prev = prev.clone();
            let expected = seal(&mut record).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&line[4..]),
                String::from_utf8_lossy(&expected)
            );
            assert_eq!(&line[..4], b"kept", "what `out` held is kept");
            assert_eq!(hex::encode(hash), record.hash);
            assert_eq!(written_at.as_str(), record.time);
            let stored = &line[4..line.len() - 1];
            assert_eq!(check(&parse(stored).unwrap(), stored), Integrity::Sound);
        }
    }

    #[test]
    fn an_edit_or_a_reformatting_is_told_apart() {
        let mut record = sample();
        let line = seal(&mut record).unwrap();
        let text = String::from_utf8(line).unwrap();
        let edited = text.trim_end().replace("\"status\":200", "\"status\":201");
        let parsed = parse(edited.as_bytes()).unwrap();
        assert_eq!(check(&parsed, edited.as_bytes()), Integrity::HashMismatch);
        let spaced = text.trim_end().replace("\"status\":200", "\"status\": 200");
        let parsed = parse(spaced.as_bytes()).unwrap();
        assert_eq!(check(&parsed, spaced.as_bytes()), Integrity::NotCanonical);
    }

    #[test]
    fn a_parse_error_never_echoes_the_line() {
        let err = parse(br#"{"seq":"295109912611193"}"#).unwrap_err();
        assert!(!err.contains("2951"), "{err}");
        assert!(err.contains("column"), "{err}");
    }
}
