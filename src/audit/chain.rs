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
    use crate::audit::record::Outcome;
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
