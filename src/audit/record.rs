//! The audit record (one JSON line per data request, or per policy reload), its outcome, and the entry the broker fills.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{CacheOutcome, CaseReference, Lookup, PostCode, Purpose, Role, Subject};
use crate::tls::Thumbprint;

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
    /// The request was malformed: identifier, NIR key, headers, body (400, 413, 415),
    /// or its body arrived too late (408).
    Invalid,
    /// The post's rate or daily quota is spent (429), or the quota state is unavailable (503).
    QuotaExceeded,
    /// The CAF has no such dossier (404).
    NotFound,
    /// The CAF failed, timed out or is unreachable (502, 503, 504).
    UpstreamError,
    /// A fault of the broker itself (500).
    InternalError,
    /// A policy reload swapped a new policy in (`kind` `policy_reload`).
    Applied,
    /// A policy reload was refused and the live policy kept (`kind` `policy_reload`).
    Rejected,
}

/// What a record is about, when it is not the access record of one data
/// request (the common case, written without a `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// The refusals of one agent in one minute past its error budget, counted
    /// in `figures` by HTTP status instead of written one line each.
    RefusalsSummary,
    /// A bulk-lookup detection rule (`rule`) fired on the request of the same
    /// `request_id`; `figures` holds what the rule measured.
    Alert,
    /// The policy was reloaded (`outcome` `applied`) or a reload was refused
    /// (`rejected`, the problems counted in `figures`). No request, no agent,
    /// no dossier: `policy_version` is the version in force after the
    /// reload, `previous_policy_version` the one before, `trigger` what asked
    /// for it. The writer signs a checkpoint right after the batch that holds
    /// one ([`RecordKind::forces_checkpoint`]), so the version that filtered
    /// the answers recorded after it is provable.
    PolicyReload,
}

impl RecordKind {
    /// Whether the writer signs a checkpoint right after the batch holding
    /// a record of this kind, whatever `checkpoint_every_*` say: a policy reload.
    pub fn forces_checkpoint(self) -> bool {
        self == RecordKind::PolicyReload
    }
}

/// What asked for a policy reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadTrigger {
    /// SIGHUP.
    Signal,
    /// The policy file (or its tests directory) changed on disk.
    FileWatch,
}

/// A dossier as the audit log records it: the keyed hash of a lookup. Only
/// [`super::AuditLog::pseudonymize`] makes one, so it never holds a clear
/// numéro or NIR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pseudonym(pub(super) String);

impl Pseudonym {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Figures of a summary or an alert, by name: numbers only, so that no free
/// text (and so no personal data) can ride along.
pub type Figures = BTreeMap<String, serde_json::Number>;

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
    /// The token's `jti`, as the verifier accepted it (1 to 256 visible ASCII
    /// characters): which token to revoke if the access was not the agent's.
    pub jti: Option<String>,
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
    pub cache: Option<CacheOutcome>,
    /// The SHA-256 of the client certificate of the request's connection.
    pub client_cert_sha256: Option<Thumbprint>,
    /// The post that certificate names, when the broker reads one
    /// (`server.client_post_from`).
    pub client_post: Option<PostCode>,
    /// The lookup's pseudonym, when the caller already computed it with this
    /// log ([`super::AuditLog::pseudonymize`]); otherwise the log computes it
    /// from `lookup`. Either way one keyed hash per request.
    pub dossier: Option<Pseudonym>,
    /// `None` for an access record; see [`RecordKind`].
    pub kind: Option<RecordKind>,
    /// The detection rule of an alert.
    pub rule: Option<&'static str>,
    /// The figures of a summary, an alert or a rejected reload (empty for an access record).
    pub figures: Figures,
    /// What asked for a policy reload.
    pub trigger: Option<ReloadTrigger>,
    /// The policy version in force before a reload.
    pub previous_policy_version: Option<String>,
    /// The version (`sha256:` of the file) a reload refused, when the file could be read.
    pub rejected_policy_version: Option<String>,
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
            jti: None,
            role: None,
            purpose: None,
            case_reference: None,
            lookup: None,
            outcome,
            status,
            released: Vec::new(),
            policy_version: None,
            cache: None,
            client_cert_sha256: None,
            client_post: None,
            dossier: None,
            kind: None,
            rule: None,
            figures: Figures::new(),
            trigger: None,
            previous_policy_version: None,
            rejected_policy_version: None,
        }
    }

    /// A policy reload that swapped `to` in for `from`.
    pub fn policy_applied(trigger: ReloadTrigger, from: String, to: String) -> AuditEntry {
        AuditEntry {
            policy_version: Some(to),
            kind: Some(RecordKind::PolicyReload),
            trigger: Some(trigger),
            previous_policy_version: Some(from),
            // No HTTP answer: the status is left out of the record.
            ..AuditEntry::new(uuid::Uuid::new_v4(), Outcome::Applied, 0)
        }
    }

    /// A policy reload refused for `problems` problems: `live` stays in
    /// force; `candidate` is the version of the file refused, if it could be read.
    pub fn policy_rejected(
        trigger: ReloadTrigger,
        live: String,
        candidate: Option<String>,
        problems: usize,
    ) -> AuditEntry {
        AuditEntry {
            policy_version: Some(live.clone()),
            kind: Some(RecordKind::PolicyReload),
            figures: Figures::from([("problems".to_owned(), (problems as u64).into())]),
            trigger: Some(trigger),
            previous_policy_version: Some(live),
            rejected_policy_version: candidate,
            ..AuditEntry::new(uuid::Uuid::new_v4(), Outcome::Rejected, 0)
        }
    }

    /// The alert raised by the request `access` records: the same request id,
    /// agent, outcome and status, the rule and its figures, and no dossier.
    pub fn alert(access: &AuditEntry, rule: &'static str, figures: Figures) -> AuditEntry {
        AuditEntry {
            trace_id: access.trace_id.clone(),
            post: access.post.clone(),
            sub: access.sub.clone(),
            jti: access.jti.clone(),
            role: access.role.clone(),
            purpose: access.purpose.clone(),
            case_reference: access.case_reference.clone(),
            policy_version: access.policy_version.clone(),
            kind: Some(RecordKind::Alert),
            rule: Some(rule),
            figures,
            ..AuditEntry::new(access.request_id, access.outcome, access.status)
        }
    }

    /// One agent's refusals past its error budget over one minute, counted by
    /// HTTP status (`{"429": 9970}`); `window_start` is the minute's first
    /// second, in seconds since the Unix epoch.
    pub fn refusals_summary(
        post: PostCode,
        sub: Subject,
        counts: &BTreeMap<u16, u64>,
        window_start: u64,
    ) -> AuditEntry {
        let mut figures: Figures = counts
            .iter()
            .map(|(status, n)| (status.to_string(), (*n).into()))
            .collect();
        figures.insert("window_start".into(), window_start.into());
        AuditEntry {
            post: Some(post),
            sub: Some(sub),
            kind: Some(RecordKind::RefusalsSummary),
            figures,
            ..AuditEntry::new(uuid::Uuid::new_v4(), Outcome::QuotaExceeded, 429)
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
    /// The token's `jti`; left out when the token has none, so records
    /// written before it was recorded keep their canonical form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    pub role: Option<String>,
    pub purpose: Option<String>,
    pub case_reference: Option<String>,
    /// HMAC-SHA-256 of the looked-up identifier, see [`super::AuditKey::pseudonymize`].
    pub dossier: Option<String>,
    /// The id of the key that made `dossier` (`audit.hmac_key_id`); left out
    /// when that key has no id, so records written before keys had names
    /// keep their exact form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub outcome: Outcome,
    /// The HTTP status of the answer; left out (0) of a record that answers
    /// no request (a policy reload). Access records always carry it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub status: u16,
    pub released: Vec<String>,
    pub policy_version: Option<String>,
    pub cache: Option<CacheOutcome>,
    /// The SHA-256 (hex) of the client certificate of the request's
    /// connection; left out when it presented none, as records without
    /// client certificates always were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_sha256: Option<String>,
    /// The post that certificate names (`server.client_post_from`); left out
    /// when none was read. Differs from `post` on a refused token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_post: Option<String>,
    /// Absent for an access record; see [`RecordKind`]. The three keys below
    /// are left out when empty, so access records keep the form they always had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<RecordKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<Figures>,
    /// The keys of a policy reload record, left out of every other record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<ReloadTrigger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_policy_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_policy_version: Option<String>,
    /// The `hash` of the previous record (64 zeros before the first one).
    pub prev: String,
    /// SHA-256 (hex) of this record's canonical form without `hash`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl Record {
    /// The record an entry becomes, before the writer gives it its place in
    /// the chain (`seq`, `time`, `prev`, `hash`): what [`write_body`] writes
    /// without building it, which the tests hold it to.
    #[cfg(test)]
    pub(super) fn unsealed(entry: AuditEntry, dossier: Option<String>) -> Record {
        Record {
            seq: 0,
            time: String::new(),
            request_id: entry.request_id.to_string(),
            trace_id: entry.trace_id.filter(|t| is_trace_id(t)),
            post: entry.post.map(|v| v.as_str().to_owned()),
            sub: entry.sub.map(|v| v.as_str().to_owned()),
            jti: entry.jti,
            role: entry.role.map(|v| v.as_str().to_owned()),
            purpose: entry.purpose.map(|v| v.as_str().to_owned()),
            case_reference: entry.case_reference.map(|v| v.as_str().to_owned()),
            dossier,
            key_id: None,
            outcome: entry.outcome,
            status: entry.status,
            released: entry.released,
            policy_version: entry.policy_version,
            cache: entry.cache,
            client_cert_sha256: entry.client_cert_sha256.map(|t| t.to_hex()),
            client_post: entry.client_post.map(|v| v.as_str().to_owned()),
            kind: entry.kind,
            rule: entry.rule.map(str::to_owned),
            figures: Some(entry.figures).filter(|f| !f.is_empty()),
            trigger: entry.trigger,
            previous_policy_version: entry.previous_policy_version,
            rejected_policy_version: entry.rejected_policy_version,
            prev: String::new(),
            hash: String::new(),
        }
    }

    /// Whether the writer signs a checkpoint right after the batch holding
    /// this record ([`RecordKind::forces_checkpoint`]).
    pub fn forces_checkpoint(&self) -> bool {
        self.kind.is_some_and(RecordKind::forces_checkpoint)
    }

    /// Whether this is the record of a data request (no `kind`): what a data
    /// subject's report lists.
    pub fn is_access(&self) -> bool {
        self.kind.is_none()
    }
}

fn is_zero(status: &u16) -> bool {
    *status == 0
}

/// The body of a record as the request serialises it, borrowed from its
/// [`AuditEntry`]: the keys of [`Record`] from `request_id` to `figures`, in
/// the same order, with the same rules for the keys left out, so that serde
/// writes exactly the bytes it writes for a [`Record`] (pinned by the tests
/// of `chain.rs`). The writer adds `seq`, `time`, `prev` and `hash` around it.
#[derive(Serialize)]
struct Body<'a> {
    request_id: &'a str,
    trace_id: Option<&'a str>,
    post: Option<&'a str>,
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
    role: Option<&'a str>,
    purpose: Option<&'a str>,
    case_reference: Option<&'a str>,
    dossier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<&'a str>,
    outcome: Outcome,
    #[serde(skip_serializing_if = "is_zero")]
    status: u16,
    released: &'a [String],
    policy_version: Option<&'a str>,
    cache: Option<CacheOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cert_sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_post: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<RecordKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    figures: Option<&'a Figures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger: Option<ReloadTrigger>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_policy_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_policy_version: Option<&'a str>,
}

/// Appends the body of `entry`'s record to `out`: its keys from `request_id`
/// to `figures` as the canonical form writes them, without the braces, each
/// followed by a comma (`"request_id":"…",…,"cache":null,`). `dossier` is the
/// lookup's pseudonym and `key_id` the id of the key that made it. Nothing is
/// allocated but what `out` grows by.
pub(super) fn write_body(
    entry: &AuditEntry,
    dossier: Option<&str>,
    key_id: Option<&str>,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    let mut request_id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let mut thumbprint = [0u8; 64];
    let client_cert_sha256 = match &entry.client_cert_sha256 {
        Some(t) => {
            // 32 bytes always make 64 hex digits.
            hex::encode_to_slice(t.as_bytes(), &mut thumbprint)
                .ok()
                .and_then(|()| std::str::from_utf8(&thumbprint).ok())
        }
        None => None,
    };
    let body = Body {
        request_id: entry.request_id.hyphenated().encode_lower(&mut request_id),
        trace_id: entry.trace_id.as_deref().filter(|t| is_trace_id(t)),
        post: entry.post.as_ref().map(PostCode::as_str),
        sub: entry.sub.as_ref().map(Subject::as_str),
        jti: entry.jti.as_deref(),
        role: entry.role.as_ref().map(Role::as_str),
        purpose: entry.purpose.as_ref().map(Purpose::as_str),
        case_reference: entry.case_reference.as_ref().map(CaseReference::as_str),
        dossier,
        key_id: dossier.and(key_id),
        outcome: entry.outcome,
        status: entry.status,
        released: &entry.released,
        policy_version: entry.policy_version.as_deref(),
        cache: entry.cache,
        client_cert_sha256,
        client_post: entry.client_post.as_ref().map(PostCode::as_str),
        kind: entry.kind,
        rule: entry.rule,
        figures: Some(&entry.figures).filter(|f| !f.is_empty()),
        trigger: entry.trigger,
        previous_policy_version: entry.previous_policy_version.as_deref(),
        rejected_policy_version: entry.rejected_policy_version.as_deref(),
    };
    let start = out.len();
    serde_json::to_writer(&mut *out, &body)?;
    // `{…}` becomes `…,`: the braces are the writer's, around `seq` to `hash`.
    out.remove(start);
    if let Some(last) = out.last_mut() {
        *last = b',';
    }
    Ok(())
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
    fn an_access_record_is_written_without_the_keys_of_summaries_and_alerts() {
        let entry = AuditEntry::new(uuid::Uuid::nil(), Outcome::NotFound, 404);
        let json = serde_json::to_string(&Record::unsealed(entry, None)).unwrap();
        for key in ["kind", "rule", "figures"] {
            assert!(!json.contains(&format!("\"{key}\"")), "{json}");
        }
    }

    #[test]
    fn a_refusals_summary_counts_by_status_and_round_trips() {
        let post = PostCode::parse("TN-TUNIS").unwrap();
        let sub = Subject::parse("agent-42").unwrap();
        let counts = BTreeMap::from([(404, 3), (429, 9970)]);
        let entry = AuditEntry::refusals_summary(post, sub, &counts, 1_764_000_000);
        let record = Record::unsealed(entry, None);
        let json = serde_json::to_string(&record).unwrap();
        assert!(
            json.contains(r#""kind":"refusals_summary""#)
                && json.contains(r#""figures":{"404":3,"429":9970,"window_start":1764000000}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);
    }

    #[test]
    fn an_alert_repeats_the_request_it_fired_on_without_its_dossier() {
        let mut access = AuditEntry::new(uuid::Uuid::from_u128(7), Outcome::NotFound, 404);
        access.sub = Some(Subject::parse("agent-42").unwrap());
        access.lookup = Some(Lookup::Numero(
            crate::domain::NumeroAllocataire::parse("1000001").unwrap(),
        ));
        let figures = Figures::from([("lookups".to_owned(), 20.into())]);
        let alert = AuditEntry::alert(&access, "not_found_ratio", figures);
        assert_eq!(alert.request_id, access.request_id);
        assert_eq!((alert.outcome, alert.status), (Outcome::NotFound, 404));
        assert_eq!(alert.sub, access.sub);
        assert!(alert.lookup.is_none());
        let record = Record::unsealed(alert, None);
        assert_eq!(record.kind, Some(RecordKind::Alert));
        assert_eq!(record.rule.as_deref(), Some("not_found_ratio"));
    }

    #[test]
    fn the_jti_is_written_after_sub_only_when_the_token_has_one() {
        let mut entry = AuditEntry::new(uuid::Uuid::nil(), Outcome::NotFound, 404);
        let json = serde_json::to_string(&Record::unsealed(entry.clone(), None)).unwrap();
        assert!(!json.contains("\"jti\""), "{json}");
        entry.sub = Some(Subject::parse("agent-42").unwrap());
        entry.jti = Some("4f1c-test".into());
        let record = Record::unsealed(entry, None);
        let json = serde_json::to_string(&record).unwrap();
        assert!(
            json.contains(r#""sub":"agent-42","jti":"4f1c-test","role""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);
    }

    #[test]
    fn a_policy_reload_carries_both_versions_and_its_trigger_but_no_status() {
        let entry = AuditEntry::policy_applied(
            ReloadTrigger::FileWatch,
            "sha256:aa".into(),
            "sha256:bb".into(),
        );
        let record = Record::unsealed(entry, None);
        assert!(record.forces_checkpoint() && !record.is_access());
        let json = serde_json::to_string(&record).unwrap();
        assert!(
            json.contains(r#""outcome":"applied","released":[],"policy_version":"sha256:bb""#)
                && json.contains(r#""kind":"policy_reload","trigger":"file_watch","previous_policy_version":"sha256:aa""#),
            "{json}"
        );
        assert!(!json.contains("\"status\""), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);

        let entry = AuditEntry::policy_rejected(ReloadTrigger::Signal, "sha256:bb".into(), None, 2);
        let json = serde_json::to_string(&Record::unsealed(entry, None)).unwrap();
        assert!(
            json.contains(r#""outcome":"rejected""#)
                && json.contains(r#""figures":{"problems":2},"trigger":"signal""#)
                && !json.contains("rejected_policy_version"),
            "{json}"
        );
    }

    #[test]
    fn access_records_do_not_force_a_checkpoint() {
        let entry = AuditEntry::new(uuid::Uuid::nil(), Outcome::Released, 200);
        let record = Record::unsealed(entry, None);
        assert!(record.is_access() && !record.forces_checkpoint());
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains(r#""status":200"#), "{json}");
    }

    #[test]
    fn outcomes_are_written_in_snake_case() {
        let json =
            serde_json::to_string(&[Outcome::QuotaExceeded, Outcome::UpstreamError]).unwrap();
        assert_eq!(json, r#"["quota_exceeded","upstream_error"]"#);
    }
}
