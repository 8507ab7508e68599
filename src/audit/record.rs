//! The audit record (one JSON line per data request), its outcome, and the entry the broker fills.

use serde::{Deserialize, Serialize};

use crate::domain::{CaseReference, Lookup, PostCode, Purpose, Role, Subject};

/// How a data request ended, as recorded. The HTTP `status` beside it gives
/// the detail (e.g. 502, 503 or 504 for `upstream_error`).
///
/// There is no outcome for "the audit log could not be written": such a
/// request has, by construction, no record; it is answered 503 and releases nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Data was released (200); `released` lists the field paths.
    Released,
    /// The caller's role may not use the declared purpose (403).
    Refused,
    /// No valid token, or a role unknown to the policy (401).
    Unauthenticated,
    /// The request was malformed: identifier, NIR key, headers, body (400, 413, 415).
    Invalid,
    /// The post's rate or daily quota is spent (429), or the quota state is unavailable (503).
    QuotaExceeded,
    /// The CAF has no such dossier (404).
    NotFound,
    /// The CAF failed, timed out or is unreachable (502, 503, 504).
    UpstreamError,
    /// A fault of the broker itself (500).
    InternalError,
}

/// Whether the released record came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheUse {
    Hit,
    Miss,
}

/// What the broker knows of a request when it records it. Every field that is
/// not known yet (no caller for a 401, no lookup for a malformed identifier)
/// is `None` and recorded as `null`.
///
/// Only parsed domain values are accepted, so nothing a client typed unchecked
/// (a NIR pasted in a header, say) can reach the log; the lookup is hashed
/// before it leaves [`super::AuditLog::append`].
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub request_id: uuid::Uuid,
    /// The W3C trace id (32 lowercase hex digits); anything else is recorded as `null`.
    pub trace_id: Option<String>,
    pub post: Option<PostCode>,
    pub sub: Option<Subject>,
    pub role: Option<Role>,
    pub purpose: Option<Purpose>,
    pub case_reference: Option<CaseReference>,
    pub lookup: Option<Lookup>,
    pub outcome: Outcome,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The released field paths (empty unless `outcome` is `Released`).
    pub released: Vec<String>,
    pub policy_version: Option<String>,
    pub cache: Option<CacheUse>,
}

impl AuditEntry {
    /// An entry for a request of which only the id is known yet; fill the rest
    /// with struct update syntax or field by field.
    pub fn new(request_id: uuid::Uuid, outcome: Outcome, status: u16) -> AuditEntry {
        AuditEntry {
            request_id,
            trace_id: None,
            post: None,
            sub: None,
            role: None,
            purpose: None,
            case_reference: None,
            lookup: None,
            outcome,
            status,
            released: Vec::new(),
            policy_version: None,
            cache: None,
        }
    }
}

/// One line of the log. Keys are written in this order, `hash` last; see
/// [`super::chain`] for the canonical form the hash covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the chain: 1 for the first record ever, then +1 without gaps,
    /// across files and restarts.
    pub seq: u64,
    /// When the record was written, RFC 3339 UTC with microseconds; never
    /// decreases along the chain.
    pub time: String,
    pub request_id: String,
    pub trace_id: Option<String>,
    pub post: Option<String>,
    pub sub: Option<String>,
    pub role: Option<String>,
    pub purpose: Option<String>,
    pub case_reference: Option<String>,
    /// HMAC-SHA-256 of the looked-up identifier, see [`super::AuditKey::pseudonymize`].
    pub dossier: Option<String>,
    pub outcome: Outcome,
    pub status: u16,
    pub released: Vec<String>,
    pub policy_version: Option<String>,
    pub cache: Option<CacheUse>,
    /// The `hash` of the previous record (64 zeros before the first one).
    pub prev: String,
    /// SHA-256 (hex) of this record's canonical form without `hash`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl Record {
    /// The record an entry becomes, before the writer gives it its place in
    /// the chain (`seq`, `time`, `prev`, `hash`).
    pub(super) fn unsealed(entry: AuditEntry, dossier: Option<String>) -> Record {
        Record {
            seq: 0,
            time: String::new(),
            request_id: entry.request_id.to_string(),
            trace_id: entry.trace_id.filter(|t| is_trace_id(t)),
            post: entry.post.map(|v| v.as_str().to_owned()),
            sub: entry.sub.map(|v| v.as_str().to_owned()),
            role: entry.role.map(|v| v.as_str().to_owned()),
            purpose: entry.purpose.map(|v| v.as_str().to_owned()),
            case_reference: entry.case_reference.map(|v| v.as_str().to_owned()),
            dossier,
            outcome: entry.outcome,
            status: entry.status,
            released: entry.released,
            policy_version: entry.policy_version,
            cache: entry.cache,
            prev: String::new(),
            hash: String::new(),
        }
    }
}

/// A W3C trace id: 32 lowercase hex digits, not all zero.
fn is_trace_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}

/// Proof that a record is on disk: its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReceipt {
    pub seq: u64,
    pub hash: String,
    pub time: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_trace_id_is_kept() {
        let id = uuid::Uuid::nil();
        let mut entry = AuditEntry::new(id, Outcome::Invalid, 400);
        entry.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        assert!(Record::unsealed(entry.clone(), None).trace_id.is_some());
        for bad in ["295109912611193", "00000000000000000000000000000000", ""] {
            entry.trace_id = Some(bad.into());
            assert_eq!(
                Record::unsealed(entry.clone(), None).trace_id,
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn outcomes_are_written_in_snake_case() {
        let json =
            serde_json::to_string(&[Outcome::QuotaExceeded, Outcome::UpstreamError]).unwrap();
        assert_eq!(json, r#"["quota_exceeded","upstream_error"]"#);
    }
}
