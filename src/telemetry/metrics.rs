//! Prometheus metrics: one recorder per process, the metric names, and the
//! helpers that record them. Labels hold routes, methods, statuses, purposes,
//! posts and outcomes, never personal data; every free-form value goes through
//! [`safe_label`] as a last line of defence.

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::TelemetryError;
use crate::domain::CacheOutcome;

/// The metric names, for dashboards and tests.
pub mod names {
    /// Counter `{route, method, status, purpose, post}`.
    pub const HTTP_REQUESTS_TOTAL: &str = "caf_broker_http_requests_total";
    /// Histogram `{route, method, status}`.
    pub const HTTP_REQUEST_DURATION_SECONDS: &str = "caf_broker_http_request_duration_seconds";
    /// Counter `{result = hit | miss}`.
    pub const CACHE_REQUESTS_TOTAL: &str = "caf_broker_cache_requests_total";
    /// Counter `{post, window = burst | daily}`.
    pub const QUOTA_REFUSALS_TOTAL: &str = "caf_broker_quota_refusals_total";
    /// Counter `{post}`: requests refused at once for an agent's spent error budget.
    pub const ERROR_BUDGET_REFUSALS_TOTAL: &str = "caf_broker_error_budget_refusals_total";
    /// Counter `{result = found | not_found | error | timeout | unavailable}`.
    pub const UPSTREAM_REQUESTS_TOTAL: &str = "caf_broker_upstream_requests_total";
    /// Histogram `{result}`.
    pub const UPSTREAM_DURATION_SECONDS: &str = "caf_broker_upstream_duration_seconds";
    /// Gauge: 1 while the upstream circuit breaker is open, else 0.
    pub const UPSTREAM_CIRCUIT_OPEN: &str = "caf_broker_upstream_circuit_open";
    /// Histogram: one group commit of audit records, write and fdatasync (failed ones too).
    pub const AUDIT_WRITE_DURATION_SECONDS: &str = "caf_broker_audit_write_duration_seconds";
    /// Gauge: 1 while the audit log accepts records, 0 from a failed write
    /// until it is writable again (data requests then get `503 audit-unavailable`).
    pub const AUDIT_WRITABLE: &str = "caf_broker_audit_writable";
    /// Counter: background refreshes of `auth.jwks_url` that failed (the last
    /// good key set is kept).
    pub const JWKS_REFRESH_FAILURES_TOTAL: &str = "caf_broker_jwks_refresh_failures_total";
    /// Counter `{lookup = numero | nir}`: CAF answers that were another dossier
    /// than the one asked for (refused `502`, never cached nor released).
    pub const UPSTREAM_MISMATCH_TOTAL: &str = "caf_broker_upstream_mismatch_total";
    /// Counter: NIRs found in released text and replaced by `[redacted]`.
    pub const NIR_REDACTIONS_TOTAL: &str = "caf_broker_nir_redactions_total";
    /// Counter `{rule}`: bulk-lookup alerts raised.
    pub const ALERTS_TOTAL: &str = "caf_broker_alerts_total";
    /// Counter: connections closed at accept because their client address
    /// already holds `server.max_connections_per_ip`.
    pub const CONNECTIONS_REFUSED_TOTAL: &str = "caf_broker_connections_refused_total";
    /// Counter `{result = applied | unchanged | rejected}`: policy reload attempts.
    pub const POLICY_RELOAD_TOTAL: &str = "caf_broker_policy_reload_total";
    /// Counter `{purpose, kind = release | withhold | change | refusal}`: where
    /// the shadow policy would answer differently from the live one.
    pub const POLICY_SHADOW_DIFF_TOTAL: &str = "caf_broker_policy_shadow_diff_total";
    /// Counter `{path}`: fields in CAF records that the record schema does not know.
    pub const UPSTREAM_UNKNOWN_FIELDS_TOTAL: &str = "caf_broker_upstream_unknown_fields_total";
    /// Counter: quota decisions taken without Redis while it does not answer.
    pub const QUOTA_REDIS_FALLBACK_TOTAL: &str = "caf_broker_quota_redis_fallback_total";
    /// Counter `{cause}`: requests refused `401`, by the precise cause that
    /// their answer does not tell (`expired`, `unknown_key`, `revoked`, ...).
    pub const AUTH_FAILURES_TOTAL: &str = "caf_broker_auth_failures_total";
    /// Histogram `{stage = authenticate | quota | cache | filter | audit}`: the
    /// time of one stage of a data request (`cache` includes the CAF call of a miss).
    pub const STAGE_DURATION_SECONDS: &str = "caf_broker_stage_duration_seconds";
    /// Gauge `{post}`: the post's daily quota left after its last decision in this replica.
    pub const QUOTA_DAILY_REMAINING: &str = "caf_broker_quota_daily_remaining";
    /// Histogram: the records of one group commit of the audit writer.
    pub const AUDIT_BATCH_RECORDS: &str = "caf_broker_audit_batch_records";
    /// Counter: signed checkpoints the witness did not receive (retried with the next).
    pub const AUDIT_WITNESS_FAILURES_TOTAL: &str = "caf_broker_audit_witness_failures_total";
    /// Gauge: seconds the witness has been missing the newest signed checkpoint (0 when it has it).
    pub const AUDIT_WITNESS_LAG_SECONDS: &str = "caf_broker_audit_witness_lag_seconds";
}

/// Request latencies, from 5 ms to 10 s.
const HTTP_BUCKETS_SECS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// CAF call latencies, from 5 ms to 30 s (timeouts included).
const UPSTREAM_BUCKETS_SECS: [f64; 12] = HTTP_BUCKETS_SECS;
/// An appended, fsync'ed line: from 0.1 ms to 1 s.
const AUDIT_BUCKETS_SECS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Stage latencies, from 50 µs (a token already verified, a filter) to 30 s (a
/// CAF call that times out, within the cache stage).
const STAGE_BUCKETS_SECS: [f64; 18] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];
/// Records per group commit, from 1 to `audit.max_batch_records` at most (65536).
const AUDIT_BATCH_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0, 65536.0,
];

/// How often histograms and idle entries are maintained between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The label value for "not known at this point" (e.g. no purpose before the headers are read).
const NONE: &str = "none";
/// The label value that replaces anything that does not look like a safe label.
const OTHER: &str = "other";

/// The process's Prometheus recorder; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

static INSTALLED: OnceLock<Result<Metrics, String>> = OnceLock::new();

impl Metrics {
    /// Installs the global recorder and its upkeep thread on the first call;
    /// later calls (several apps in one test process) return the same handle.
    pub fn install() -> Result<Metrics, TelemetryError> {
        INSTALLED
            .get_or_init(|| install_once().map_err(|e| e.to_string()))
            .clone()
            .map_err(TelemetryError::Metrics)
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

fn builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::HTTP_REQUEST_DURATION_SECONDS.into()),
            &HTTP_BUCKETS_SECS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::UPSTREAM_DURATION_SECONDS.into()),
            &UPSTREAM_BUCKETS_SECS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::AUDIT_WRITE_DURATION_SECONDS.into()),
            &AUDIT_BUCKETS_SECS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::STAGE_DURATION_SECONDS.into()),
            &STAGE_BUCKETS_SECS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::AUDIT_BATCH_RECORDS.into()),
            &AUDIT_BATCH_BUCKETS,
        )
}

fn install_once() -> Result<Metrics, metrics_exporter_prometheus::BuildError> {
    let handle = builder()?.install_recorder()?;
    describe();
    set_upstream_circuit_open(false);
    // Present from the start, so that an alert on its increase sees the first failure.
    counter!(names::JWKS_REFRESH_FAILURES_TOTAL).increment(0);
    let upkeep = handle.clone();
    // A plain thread: it needs no runtime and lives as long as the process.
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        // Rendering also drains histograms, so scrapes keep memory bounded without it.
        tracing::warn!(error = %e, "metrics upkeep thread not started");
    }
    Ok(Metrics { handle })
}

fn describe() {
    describe_counter!(
        names::HTTP_REQUESTS_TOTAL,
        "HTTP requests answered, by route template, method, status, purpose and post."
    );
    describe_histogram!(
        names::HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time to answer an HTTP request, by route template, method and status."
    );
    describe_counter!(
        names::CACHE_REQUESTS_TOTAL,
        "Record cache lookups, by result (hit or miss)."
    );
    describe_counter!(
        names::QUOTA_REFUSALS_TOTAL,
        "Requests refused for quota, by post and exhausted window (burst, daily, agent-burst, agent-daily)."
    );
    describe_counter!(
        names::ERROR_BUDGET_REFUSALS_TOTAL,
        "Requests refused at once because the agent's error budget is spent, by post."
    );
    describe_counter!(
        names::UPSTREAM_REQUESTS_TOTAL,
        "Calls to the CAF, by result (found, not_found, error, timeout, unavailable)."
    );
    describe_histogram!(
        names::UPSTREAM_DURATION_SECONDS,
        Unit::Seconds,
        "Time of a call to the CAF, by result."
    );
    describe_gauge!(
        names::UPSTREAM_CIRCUIT_OPEN,
        "1 while the CAF circuit breaker is open, else 0."
    );
    describe_histogram!(
        names::AUDIT_WRITE_DURATION_SECONDS,
        Unit::Seconds,
        "Time to write and fdatasync one group commit of audit records, failed ones included."
    );
    describe_gauge!(
        names::AUDIT_WRITABLE,
        "1 while the audit log accepts records, 0 from a failed write until it is writable again."
    );
    describe_counter!(
        names::JWKS_REFRESH_FAILURES_TOTAL,
        "Background refreshes of the JWKS URL that failed; the last good key set is kept."
    );
    describe_counter!(
        names::UPSTREAM_MISMATCH_TOTAL,
        "CAF answers holding another dossier than the one asked for, by lookup kind (numero or nir)."
    );
    describe_counter!(
        names::NIR_REDACTIONS_TOTAL,
        "NIRs found in released text fields and replaced by [redacted]."
    );
    describe_counter!(names::ALERTS_TOTAL, "Bulk-lookup alerts raised, by rule.");
    describe_counter!(
        names::CONNECTIONS_REFUSED_TOTAL,
        "Connections closed at accept: their client address already held the most allowed."
    );
    describe_counter!(
        names::POLICY_RELOAD_TOTAL,
        "Policy reload attempts, by result (applied, unchanged, rejected)."
    );
    describe_counter!(
        names::POLICY_SHADOW_DIFF_TOTAL,
        "Paths and refusals the shadow policy would decide differently, by purpose and kind."
    );
    describe_counter!(
        names::UPSTREAM_UNKNOWN_FIELDS_TOTAL,
        "Fields in CAF records that the record schema does not know, by path."
    );
    describe_counter!(
        names::QUOTA_REDIS_FALLBACK_TOTAL,
        "Quota decisions taken without Redis while it does not answer."
    );
    describe_counter!(
        names::AUTH_FAILURES_TOTAL,
        "Requests refused 401, by cause."
    );
    describe_histogram!(
        names::STAGE_DURATION_SECONDS,
        Unit::Seconds,
        "Time of one stage of a data request, by stage (authenticate, quota, cache with the CAF call of a miss, filter, audit)."
    );
    describe_gauge!(
        names::QUOTA_DAILY_REMAINING,
        "Requests the post may still make today, as of its last quota decision in this replica."
    );
    describe_histogram!(
        names::AUDIT_BATCH_RECORDS,
        Unit::Count,
        "Audit records written by one group commit, failed ones included."
    );
    describe_counter!(
        names::AUDIT_WITNESS_FAILURES_TOTAL,
        "Signed audit checkpoints not delivered to the witness; each is retried with the next checkpoint."
    );
    describe_gauge!(
        names::AUDIT_WITNESS_LAG_SECONDS,
        Unit::Seconds,
        "Seconds since the oldest signed audit checkpoint the witness is missing was signed; 0 while it holds the newest."
    );
}

/// A connection closed at accept for `server.max_connections_per_ip`.
pub fn record_connection_refused() {
    counter!(names::CONNECTIONS_REFUSED_TOTAL).increment(1);
}

/// One answered HTTP request, as the edge sees it.
#[derive(Debug, Clone, Copy)]
pub struct HttpObservation<'a> {
    /// The route template (`/v1/allocataires/{numero}`), never the raw path;
    /// `unmatched` for unknown paths. Static, so the labels borrow it.
    pub route: &'static str,
    pub method: &'a str,
    pub status: u16,
    /// The purpose once the policy knows it (authorized or refused), else `None`.
    pub purpose: Option<&'a str>,
    /// The caller's post once authenticated, else `None`.
    pub post: Option<&'a str>,
    pub elapsed: Duration,
}

/// Counts the request and records its latency.
pub fn record_http_request(observation: &HttpObservation<'_>) {
    // The route, method and usual statuses are static: only the purpose and
    // post labels are copied per request.
    let route = safe_label(observation.route);
    let method = method_label(observation.method);
    let status = status_label(observation.status);
    let purpose = observation.purpose.map_or(NONE, safe_label);
    let post = observation.post.map_or(NONE, safe_label);
    counter!(
        names::HTTP_REQUESTS_TOTAL,
        "route" => route,
        "method" => method,
        "status" => status.clone(),
        "purpose" => purpose.to_owned(),
        "post" => post.to_owned(),
    )
    .increment(1);
    histogram!(
        names::HTTP_REQUEST_DURATION_SECONDS,
        "route" => route,
        "method" => method,
        "status" => status,
    )
    .record(observation.elapsed.as_secs_f64());
}

/// A lookup answered from the cache (`hit`) or from the CAF (`miss`).
pub fn record_cache(result: CacheOutcome) {
    counter!(names::CACHE_REQUESTS_TOTAL, "result" => result.as_str()).increment(1);
}

/// A quota refusal; `window` is the exhausted one (`burst`, `daily`, `agent-burst`, `agent-daily`).
pub fn record_quota_refusal(post: &str, window: &str) {
    counter!(
        names::QUOTA_REFUSALS_TOTAL,
        "post" => safe_label(post).to_owned(),
        "window" => safe_label(window).to_owned(),
    )
    .increment(1);
}

/// A request refused at once for its agent's spent error budget. The agent
/// (`sub`) is not a label: it is in the audit log's summaries.
pub fn record_error_budget_refusal(post: &str) {
    counter!(
        names::ERROR_BUDGET_REFUSALS_TOTAL,
        "post" => safe_label(post).to_owned(),
    )
    .increment(1);
}

/// How a call to the CAF ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamResult {
    Found,
    NotFound,
    /// An error answer or unreadable data.
    Error,
    Timeout,
    /// Not called: circuit open, or the CAF unreachable.
    Unavailable,
}

impl UpstreamResult {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamResult::Found => "found",
            UpstreamResult::NotFound => "not_found",
            UpstreamResult::Error => "error",
            UpstreamResult::Timeout => "timeout",
            UpstreamResult::Unavailable => "unavailable",
        }
    }
}

pub fn record_upstream(result: UpstreamResult, elapsed: Duration) {
    counter!(names::UPSTREAM_REQUESTS_TOTAL, "result" => result.as_str()).increment(1);
    histogram!(names::UPSTREAM_DURATION_SECONDS, "result" => result.as_str())
        .record(elapsed.as_secs_f64());
}

pub fn set_upstream_circuit_open(open: bool) {
    gauge!(names::UPSTREAM_CIRCUIT_OPEN).set(if open { 1.0 } else { 0.0 });
}

/// Whether the audit log accepts records, as `/readyz` reports it.
pub fn set_audit_writable(writable: bool) {
    gauge!(names::AUDIT_WRITABLE).set(if writable { 1.0 } else { 0.0 });
}

/// A background refresh of the JWKS URL that failed.
pub fn record_jwks_refresh_failure() {
    counter!(names::JWKS_REFRESH_FAILURES_TOTAL).increment(1);
}

/// A CAF answer that was another dossier; `lookup` is the lookup's kind
/// (`numero` or `nir`), never its value.
pub fn record_upstream_mismatch(lookup: &str) {
    counter!(names::UPSTREAM_MISMATCH_TOTAL, "lookup" => safe_label(lookup).to_owned())
        .increment(1);
}

/// NIRs replaced by `[redacted]` in one released answer.
pub fn record_nir_redactions(count: usize) {
    counter!(names::NIR_REDACTIONS_TOTAL).increment(u64::try_from(count).unwrap_or(u64::MAX));
}

/// One group commit of the audit writer: its write and fdatasync, however it ended.
pub fn record_audit_write(elapsed: Duration) {
    histogram!(names::AUDIT_WRITE_DURATION_SECONDS).record(elapsed.as_secs_f64());
}

/// One group commit of the audit writer: how many records it held.
pub fn record_audit_batch(records: usize) {
    histogram!(names::AUDIT_BATCH_RECORDS).record(records as f64);
}

/// A signed checkpoint that did not reach the witness.
pub fn record_audit_witness_failure() {
    counter!(names::AUDIT_WITNESS_FAILURES_TOTAL).increment(1);
}

/// How long the witness has been missing the newest checkpoint (0: it has it).
pub fn set_audit_witness_lag(seconds: f64) {
    gauge!(names::AUDIT_WITNESS_LAG_SECONDS).set(seconds);
}

/// A stage of a data request, as [`record_stage`] labels it: a fixed set, so
/// that the histogram has five series and recording one allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Authenticate,
    Quota,
    /// The cache lookup, with the CAF call of a miss.
    Cache,
    Filter,
    Audit,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Authenticate,
        Stage::Quota,
        Stage::Cache,
        Stage::Filter,
        Stage::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Authenticate => "authenticate",
            Stage::Quota => "quota",
            Stage::Cache => "cache",
            Stage::Filter => "filter",
            Stage::Audit => "audit",
        }
    }
}

/// The time one stage of a data request took, however it ended.
pub fn record_stage(stage: Stage, elapsed: Duration) {
    // Literal label values make static keys: no allocation on the request path.
    let histogram = match stage {
        Stage::Authenticate => histogram!(names::STAGE_DURATION_SECONDS, "stage" => "authenticate"),
        Stage::Quota => histogram!(names::STAGE_DURATION_SECONDS, "stage" => "quota"),
        Stage::Cache => histogram!(names::STAGE_DURATION_SECONDS, "stage" => "cache"),
        Stage::Filter => histogram!(names::STAGE_DURATION_SECONDS, "stage" => "filter"),
        Stage::Audit => histogram!(names::STAGE_DURATION_SECONDS, "stage" => "audit"),
    };
    histogram.record(elapsed.as_secs_f64());
}

/// The post's daily quota left after a quota decision (allowed or refused).
/// The agent is not a label: posts are few, agents are many and are people.
pub fn set_quota_daily_remaining(post: &str, remaining: u64) {
    gauge!(
        names::QUOTA_DAILY_REMAINING,
        "post" => safe_label(post).to_owned(),
    )
    .set(remaining as f64);
}

/// A bulk-lookup alert; `rule` is the rule's name (`distinct_dossiers`, ...).
pub fn record_alert(rule: &str) {
    counter!(names::ALERTS_TOTAL, "rule" => safe_label(rule).to_owned()).increment(1);
}

/// A request refused `401`; `cause` is one of a fixed set of names, never a
/// claim value.
pub fn record_auth_failure(cause: &str) {
    counter!(names::AUTH_FAILURES_TOTAL, "cause" => safe_label(cause).to_owned()).increment(1);
}

/// A policy reload attempt; `result` is `applied`, `unchanged` or `rejected`.
pub fn record_policy_reload(result: &str) {
    counter!(names::POLICY_RELOAD_TOTAL, "result" => safe_label(result).to_owned()).increment(1);
}

/// `count` paths (or one refusal) that the shadow policy would decide
/// differently for `purpose`; `kind` is `release`, `withhold`, `change` or `refusal`.
pub fn record_policy_shadow_diff(purpose: &str, kind: &str, count: usize) {
    counter!(
        names::POLICY_SHADOW_DIFF_TOTAL,
        "purpose" => safe_label(purpose).to_owned(),
        "kind" => safe_label(kind).to_owned(),
    )
    .increment(u64::try_from(count).unwrap_or(u64::MAX));
}

/// A field of a CAF record that the record schema does not know, by its path
/// (`enfants[].ecole`, `<redacted>` for a key that may hold data, `<other>`
/// beyond the tracked paths). Never a value.
pub fn record_unknown_upstream_field(path: &str) {
    counter!(names::UPSTREAM_UNKNOWN_FIELDS_TOTAL, "path" => path_label(path).to_owned())
        .increment(1);
}

/// One quota decision taken without Redis.
pub fn record_quota_redis_fallback() {
    counter!(names::QUOTA_REDIS_FALLBACK_TOTAL).increment(1);
}

/// The standard methods as they are, anything else as `_OTHER` (as the HTTP
/// semantic conventions do), so a client cannot mint label values.
/// The status code as a label; the statuses the broker answers are static strings.
fn status_label(status: u16) -> metrics::SharedString {
    const KNOWN: [(u16, &str); 16] = [
        (200, "200"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (408, "408"),
        (413, "413"),
        (415, "415"),
        (429, "429"),
        (431, "431"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
        (507, "507"),
    ];
    KNOWN
        .into_iter()
        .find(|(code, _)| *code == status)
        .map_or_else(|| status.to_string().into(), |(_, label)| label.into())
}

fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("_OTHER")
}

/// `value` if it looks like a route template, post code, purpose or window:
/// 1 to 64 characters of `[A-Za-z0-9_./{}-]` with no run of five digits or more
/// (a numéro or a NIR in the wrong place). Anything else becomes `other`.
pub(crate) fn safe_label(value: &str) -> &str {
    let charset = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./{}-".contains(&b));
    if charset && !has_long_number(value) {
        value
    } else {
        OTHER
    }
}

/// Whether `value` holds a run of five digits or more (a numéro or a NIR).
fn has_long_number(value: &str) -> bool {
    let mut digits = 0usize;
    value.bytes().any(|b| {
        digits = if b.is_ascii_digit() { digits + 1 } else { 0 };
        digits >= 5
    })
}

/// `path` if it looks like a field path: 1 to 256 characters of
/// `[A-Za-z0-9_.<>[]-]` with no run of five digits or more. Anything else
/// becomes `other`, as in [`safe_label`].
pub(super) fn path_label(path: &str) -> &str {
    let charset = (1..=256).contains(&path.len())
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.<>[]-".contains(&b));
    if charset && !has_long_number(path) {
        path
    } else {
        OTHER
    }
}

#[cfg(test)]
pub(super) fn local_recorder() -> Option<metrics_exporter_prometheus::PrometheusRecorder> {
    builder().ok().map(PrometheusBuilder::build_recorder)
}
