//! The request pipeline, framework-free. Start reading here.
//!
//! A data request walks, in order:
//! 1. authenticate: the bearer token becomes a [`Caller`] whose role the policy
//!    knows; a token bound to a client certificate comes with that one, and the
//!    post the connection's certificate names (`server.client_post_from`) is
//!    the token's;
//! 2. authorize: the caller's role may declare the purpose, its post is known
//!    (with `quotas.known_posts_only`), and the agent is not suspended by a
//!    bulk-lookup alert;
//! 3. quota: the post's and the agent's burst and daily allowance; every authorized request counts;
//! 4. cache: a recent CAF answer for the same lookup, or one shared upstream call;
//! 5. upstream: the CAF record, refused if it is not the dossier asked for;
//! 6. filter: only the fields the purpose may see leave, NIRs in their text redacted;
//! 7. audit: the access is recorded durably, whatever the outcome, before any data leaves.
//!
//! Around them, the agent's error budget: an agent whose recent requests were
//! refused too often (400, 403, 404, 429) is refused at once, before stage 2,
//! and those refusals are recorded as one summary per agent and minute. And
//! a lookup that reached the cache or the CAF (found or not) is then shown to
//! the bulk-lookup detector; the alerts it raises are logged, counted and
//! recorded in the audit log after the access record.
//!
//! Each stage is a capability module that knows nothing of the others; this
//! module is the only one that walks them. It times authenticate, quota, cache
//! (with the CAF call of a miss), filter and audit, one histogram sample each
//! (`telemetry::record_stage`), and sets the post's daily quota left from
//! every quota decision.

use std::sync::Arc;
use std::time::Instant;

use tracing::{Instrument, info_span, instrument};

use crate::alerts::{Alert, Detector, LookupKind, Observation};
use crate::audit::{AuditEntry, AuditLog, Outcome};
use crate::auth::{Authenticator, Caller};
use crate::cache::RecordCache;
use crate::domain::{Agent, CacheOutcome, CaseReference, Lookup, PostCode, Purpose};
use crate::error::{BrokerError, Unauthenticated};
use crate::policy::{DriftTracker, Policy, PolicyStore, ReloadCounts, ShadowPolicy};
use crate::quota::{Admission, Decision, ErrorBudget, Quota, QuotaState, RefusalCounts};
use crate::telemetry::{Stage, record_stage};
use crate::tls::{ClientCertificate, PostSource};
use crate::upstream::{CafClient, UpstreamError, UpstreamHealth};

/// What the edge read of a data request, as it came: the bearer token, the
/// declared purpose and case reference, the identifier and the fresh flag. The
/// parts that failed to parse are kept as errors: once the caller is
/// authenticated, the request is still recorded in the audit log with what is known.
pub struct Request<'a, L> {
    pub request_id: uuid::Uuid,
    /// The token of the `Authorization: Bearer` header, if one was sent.
    pub bearer_token: Option<&'a str>,
    /// The client certificate of the TLS connection, verified by the server.
    pub client_certificate: Option<ClientCertificate>,
    pub purpose: Result<Purpose, BrokerError>,
    pub case_reference: Result<CaseReference, BrokerError>,
    /// The identifier, awaited only once the caller is authenticated: a
    /// search body is never read for a caller the broker does not know.
    pub lookup: L,
    /// The client asked for a fresh CAF read (`Cache-Control: no-cache`).
    pub fresh: bool,
}

/// How a data request ended, with everything the edge needs to answer it and
/// to label it. The labels come from the broker's own decisions: `post` once
/// the token is verified, `purpose` only if the request's policy snapshot
/// defines it (the same value the audit record stores).
#[derive(Debug)]
pub struct Answer {
    pub result: Result<Released, BrokerError>,
    pub post: Option<PostCode>,
    pub purpose: Option<Purpose>,
}

/// The client certificate of a request's connection, as the audit record
/// carries it: its fingerprint, and the post it names when the broker reads one.
struct Client {
    certificate: ClientCertificate,
    post: Option<PostCode>,
}

/// An authenticated, well-formed request for one dossier: what a [`Request`]
/// becomes once every part of it parsed. (The case reference goes to the audit
/// record only; no stage reads it.)
#[derive(Debug)]
struct DataRequest<'a> {
    caller: &'a Caller,
    purpose: Purpose,
    lookup: Lookup,
    /// The client asked for a fresh CAF read (`Cache-Control: no-cache`).
    fresh: bool,
}

/// The `RateLimit-Policy` and `RateLimit` header fields of a quota state,
/// rendered: the edge sends them as they are.
#[derive(Debug, Clone)]
pub struct RateLimitFields([(&'static str, String); 2]);

impl RateLimitFields {
    pub fn of(state: &QuotaState) -> Self {
        use crate::quota::{POLICY_HEADER, RATELIMIT_HEADER};
        Self([
            (POLICY_HEADER, state.policy_header()),
            (RATELIMIT_HEADER, state.ratelimit_header()),
        ])
    }

    /// The fields, as (name, value) pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.0.iter().map(|(name, value)| (*name, value.as_str()))
    }

    /// The fields, their values moved out rather than copied.
    pub fn into_pairs(self) -> impl Iterator<Item = (&'static str, String)> {
        self.0.into_iter()
    }
}

/// What the broker releases for a request: only what the purpose may see.
#[derive(Debug)]
pub struct Released {
    /// The purpose the data was filtered for.
    pub purpose: Purpose,
    /// The released fields, as one JSON object: written once by the filter,
    /// sent as it is.
    pub data: Vec<u8>,
    /// The rule paths that released something: moved into the audit record.
    released_paths: Vec<String>,
    pub policy_version: Arc<str>,
    pub cache: CacheOutcome,
    /// The post's and the agent's quotas after this request, as header fields.
    pub quota: RateLimitFields,
}

/// Whether the broker can serve data requests now.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub policy_version: Arc<str>,
    pub policy_reloads: ReloadCounts,
    pub upstream: UpstreamHealth,
    pub audit_writable: bool,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.upstream.is_ready() && self.audit_writable
    }
}

/// The capability modules the pipeline walks, each built once per process.
pub struct Stages {
    pub authenticator: Authenticator,
    /// The live policy; reloads swap it atomically, a request keeps the one it started with.
    pub policy: Arc<PolicyStore>,
    /// A candidate policy evaluated beside the live one; nothing is served from it.
    pub shadow: Option<ShadowPolicy>,
    /// Fields the CAF sends that the record schema does not know (never released).
    pub drift: DriftTracker,
    pub quota: Arc<dyn Quota>,
    pub cache: RecordCache,
    pub upstream: Arc<dyn CafClient>,
    pub audit: Arc<AuditLog>,
    /// Refusals each agent may cause; past it, refused at once.
    pub error_budget: ErrorBudget,
    /// Bulk-lookup detection: per-agent windows, alerts, suspensions.
    pub alerts: Detector,
    /// Where a client certificate names the post a token must carry.
    pub client_post_from: PostSource,
}

pub struct Broker {
    stages: Stages,
    /// How long a request waits for its audit record: [`AUDIT_TIMEOUT`].
    audit_timeout: std::time::Duration,
}

impl Broker {
    pub fn new(stages: Stages) -> Self {
        Self {
            stages,
            audit_timeout: AUDIT_TIMEOUT,
        }
    }

    /// The same broker waiting `timeout` for each audit record: a test of a
    /// hung disk need not wait the 5 s of production.
    #[cfg(test)]
    pub(crate) fn with_audit_timeout(self, timeout: std::time::Duration) -> Self {
        Self {
            audit_timeout: timeout,
            ..self
        }
    }

    /// How long a request waits for its audit record to be durable.
    #[cfg(test)]
    pub(crate) fn audit_timeout(&self) -> std::time::Duration {
        self.audit_timeout
    }

    /// The live policy, as a snapshot.
    pub fn policy(&self) -> Arc<Policy> {
        self.stages.policy.current()
    }

    /// What `/readyz` reports: each dependency the pipeline needs, without calling it.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            policy_version: self.stages.policy.current().shared_version(),
            policy_reloads: self.stages.policy.counts(),
            upstream: self.stages.upstream.health(),
            audit_writable: self.stages.audit.is_healthy(),
        }
    }

    /// One data request, from the bearer token to its audit record: stage 1
    /// here, then [`Broker::attempt`]. A request whose caller is not
    /// authenticated is refused before anything else is read and leaves no
    /// audit record of its own.
    pub async fn serve<L>(&self, mut request: Request<'_, L>) -> Answer
    where
        L: Future<Output = Result<Lookup, BrokerError>>,
    {
        // One policy snapshot for the whole request, even if a reload lands meanwhile.
        let policy = self.stages.policy.current();
        let certificate = request.client_certificate.take();
        let started = Instant::now();
        let authenticated = self.authenticate(&policy, request.bearer_token, certificate.as_ref());
        record_stage(Stage::Authenticate, started.elapsed());
        let caller = match authenticated {
            Ok(caller) => caller,
            Err(error) => {
                return Answer {
                    result: Err(error),
                    post: None,
                    purpose: None,
                };
            }
        };
        let client = certificate.map(|certificate| Client {
            post: certificate.post(self.stages.client_post_from),
            certificate,
        });
        // The one purpose check: only a purpose the policy defines is recorded,
        // in the audit log, on spans and in metric labels alike. The header is
        // free text to the client, and what is not a purpose could be anything,
        // even a NIR.
        let purpose = request
            .purpose
            .as_ref()
            .ok()
            .filter(|p| policy.has_purpose(p))
            .cloned();
        // The request's span (the edge's, when it declares these fields).
        let span = tracing::Span::current();
        span.record("post", caller.post.as_str());
        span.record("role", caller.role.as_str());
        if let Some(purpose) = &purpose {
            span.record("purpose", purpose.as_str());
        }
        // Still stage 1: when the broker reads a post from the client
        // certificate, the token must be one of that post.
        if let Some(client) = &client
            && self.stages.client_post_from != PostSource::None
            && client.post.as_ref() != Some(&caller.post)
        {
            let post = caller.post.clone();
            let result = self
                .refuse_post_mismatch(request.request_id, caller, client, purpose.clone())
                .await;
            return Answer {
                result: Err(result),
                post: Some(post),
                purpose,
            };
        }
        let result = self
            .attempt(&policy, &caller, client, purpose.clone(), request)
            .await;
        Answer {
            result,
            post: Some(caller.post),
            purpose,
        }
    }

    /// Stage 1: the bearer token becomes a caller whose role the policy
    /// defines; a token bound to a client certificate needs that certificate.
    #[instrument(name = "authenticate", skip_all)]
    fn authenticate(
        &self,
        policy: &Policy,
        bearer_token: Option<&str>,
        certificate: Option<&ClientCertificate>,
    ) -> Result<Caller, BrokerError> {
        let checked = self.check_token(policy, bearer_token, certificate);
        if let Err(refused) = &checked {
            // The answer is the same for every cause; the log and the metric tell them apart.
            let cause = refused.cause();
            tracing::info!(cause, error = %refused, "request unauthenticated");
            crate::telemetry::record_auth_failure(cause);
        }
        checked.map_err(BrokerError::Unauthenticated)
    }

    fn check_token(
        &self,
        policy: &Policy,
        bearer_token: Option<&str>,
        certificate: Option<&ClientCertificate>,
    ) -> Result<Caller, Unauthenticated> {
        let token = bearer_token.ok_or(Unauthenticated::MissingToken)?;
        let thumbprint = certificate.map(ClientCertificate::thumbprint);
        let caller = self
            .stages
            .authenticator
            .authenticate_with_client(token, thumbprint)?;
        if !policy.has_role(&caller.role) {
            return Err(Unauthenticated::UnknownRole);
        }
        Ok(caller)
    }

    /// A verified token whose post is not the one its connection's client
    /// certificate names: `401`, recorded with both posts and the
    /// certificate's fingerprint (someone holds a token of another post, or a
    /// post's certificate), before the answer leaves.
    async fn refuse_post_mismatch(
        &self,
        request_id: uuid::Uuid,
        caller: Caller,
        client: &Client,
        known_purpose: Option<Purpose>,
    ) -> BrokerError {
        let refused = Unauthenticated::PostMismatch;
        crate::telemetry::record_auth_failure(refused.cause());
        let error = BrokerError::Unauthenticated(refused);
        tracing::warn!(
            post = %caller.post,
            certificate_post = client.post.as_ref().map_or("none", PostCode::as_str),
            "the token's post is not the one the client certificate names"
        );
        let mut entry = AuditEntry::new(request_id, Outcome::Unauthenticated, error.status());
        entry.trace_id = crate::telemetry::current_trace_id();
        entry.post = Some(caller.post);
        entry.sub = Some(caller.sub);
        entry.role = Some(caller.role);
        entry.purpose = known_purpose;
        entry.client_cert_sha256 = Some(client.certificate.thumbprint());
        entry.client_post = client.post.clone();
        let started = Instant::now();
        let recorded = self.record(entry).await;
        record_stage(Stage::Audit, started.elapsed());
        match recorded {
            Ok(()) => error,
            Err(unrecorded) => unrecorded,
        }
    }

    /// Stages 2 to 7 for one authenticated request, then its audit record: the
    /// answer leaves only once the record is durably written, and if it cannot
    /// be written the answer is `503 audit-unavailable` and nothing is released.
    async fn attempt<L>(
        &self,
        policy: &Policy,
        caller: &Caller,
        client: Option<Client>,
        known_purpose: Option<Purpose>,
        request: Request<'_, L>,
    ) -> Result<Released, BrokerError>
    where
        L: Future<Output = Result<Lookup, BrokerError>>,
    {
        let Request {
            request_id,
            purpose,
            case_reference,
            lookup,
            fresh,
            ..
        } = request;
        let lookup = lookup.await;
        // Before anything else: an agent past its error budget costs no quota,
        // no CAF call and no audit line of its own (its minute's summary counts it).
        // Admitted, the request holds one unit of the budget until its outcome.
        let agent = caller.agent();
        if let Admission::Spent { retry_after_secs } = self.stages.error_budget.admit(agent) {
            crate::telemetry::record_error_budget_refusal(caller.post.as_str());
            return Err(BrokerError::ErrorBudgetSpent { retry_after_secs });
        }
        let mut entry = AuditEntry::new(request_id, Outcome::InternalError, 500);
        entry.trace_id = crate::telemetry::current_trace_id();
        entry.post = Some(caller.post.clone());
        entry.sub = Some(caller.sub.clone());
        entry.jti = caller.jti.clone();
        entry.role = Some(caller.role.clone());
        if let Some(client) = client {
            entry.client_cert_sha256 = Some(client.certificate.thumbprint());
            entry.client_post = client.post;
        }
        entry.purpose = known_purpose;
        entry.case_reference = case_reference.as_ref().ok().cloned();
        entry.lookup = lookup.as_ref().ok().cloned();

        let mut result = match (purpose, case_reference, lookup) {
            (Ok(purpose), Ok(_), Ok(lookup)) => {
                let request = DataRequest {
                    caller,
                    purpose,
                    lookup,
                    fresh,
                };
                self.lookup(policy, &request).await
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
        };

        let alerts = self.observe(&mut entry, &result).await;
        (entry.outcome, entry.status) = match &result {
            Ok(_) => (Outcome::Released, 200),
            Err(e) => (outcome_of(e), e.status()),
        };
        if let Ok(released) = &mut result {
            entry.released = std::mem::take(&mut released.released_paths);
            entry.policy_version = Some(released.policy_version.to_string());
            entry.cache = Some(released.cache);
        } else {
            entry.policy_version = Some(policy.version().to_owned());
        }
        // The unit of error budget this request holds is kept by a refusal and
        // given back otherwise, including when the record fails (503).
        let refused = is_refusal(entry.status);
        if !refused {
            self.stages.error_budget.refund(agent);
        }
        let started = Instant::now();
        let recorded = self.record_with_alerts(entry, alerts).await;
        record_stage(Stage::Audit, started.elapsed());
        if refused && recorded.is_err() {
            self.stages.error_budget.refund(agent);
        }
        recorded?;
        result
    }

    /// Records the minutes of refusals past an error budget that have ended
    /// (called every few seconds).
    pub async fn record_closed_refusals(&self) {
        self.record_refusals(self.stages.error_budget.take_closed())
            .await;
    }

    /// Records every minute of refusals, ended or not (at shutdown).
    pub async fn record_all_refusals(&self) {
        self.record_refusals(self.stages.error_budget.take_all())
            .await;
    }

    /// One `refusals_summary` record per agent and minute, appended together
    /// so that they share a group commit.
    async fn record_refusals(&self, minutes: Vec<RefusalCounts>) {
        let appends = minutes.into_iter().map(|minute| async move {
            let refused: u64 = minute.counts.values().sum();
            let post = minute.post.clone();
            let entry = AuditEntry::refusals_summary(
                minute.post,
                minute.sub,
                &minute.counts,
                minute.window_start_secs,
            );
            if let Err(error) = self.record(entry).await {
                // The agent is not named in logs; the metric still counted each refusal.
                tracing::error!(post = %post, refused, %error, "a refusals summary could not be recorded");
            }
        });
        futures_util::future::join_all(appends).await;
    }

    /// Stage 7 for a request and the alerts it raised: the access record, then
    /// one record per alert, right after it in the chain.
    async fn record_with_alerts(
        &self,
        entry: AuditEntry,
        alerts: Vec<Alert>,
    ) -> Result<(), BrokerError> {
        let alert_entries: Vec<AuditEntry> = alerts
            .into_iter()
            .map(|alert| AuditEntry::alert(&entry, alert.rule.as_str(), alert.figures))
            .collect();
        self.record(entry).instrument(info_span!("audit")).await?;
        for alert in alert_entries {
            self.record(alert).instrument(info_span!("audit")).await?;
        }
        Ok(())
    }

    /// Shows a lookup that reached the cache or the CAF to the bulk-lookup
    /// detector; logs and counts the alerts it raises, and returns them.
    async fn observe(
        &self,
        entry: &mut AuditEntry,
        result: &Result<Released, BrokerError>,
    ) -> Vec<Alert> {
        if !self.stages.alerts.is_on() {
            return Vec::new();
        }
        let found = match result {
            Ok(_) => true,
            Err(BrokerError::NotFound) => false,
            Err(_) => return Vec::new(),
        };
        let (Some(post), Some(sub), Some(lookup)) = (&entry.post, &entry.sub, &entry.lookup) else {
            return Vec::new();
        };
        let agent = Agent { post, sub };
        // Computed once: the audit record reuses it.
        let dossier = self.stages.audit.pseudonymize(lookup);
        let kind = match lookup {
            Lookup::Numero(_) => LookupKind::Numero,
            Lookup::Nir(_) => LookupKind::Nir,
        };
        let observation = Observation {
            agent,
            dossier: dossier.as_str(),
            kind,
            found,
        };
        let alerts = self.stages.alerts.observe(observation).await;
        entry.dossier = Some(dossier);
        for alert in &alerts {
            // Figures are numbers only: no dossier, NIR or name can ride along.
            let figures = serde_json::to_string(&alert.figures).unwrap_or_default();
            tracing::warn!(
                post = %post,
                sub = %sub,
                rule = alert.rule.as_str(),
                figures = %figures,
                "bulk-lookup alert"
            );
            crate::telemetry::record_alert(alert.rule.as_str());
        }
        alerts
    }

    /// Stage 7: appends the record and waits for it to be on disk.
    async fn record(&self, entry: AuditEntry) -> Result<(), BrokerError> {
        let timeout = self.audit_timeout;
        match tokio::time::timeout(timeout, self.stages.audit.append(entry)).await {
            Ok(Ok(_receipt)) => Ok(()),
            Ok(Err(e)) => Err(BrokerError::AuditUnavailable(e.into())),
            Err(_) => Err(BrokerError::AuditUnavailable(anyhow::anyhow!(
                "the audit log did not confirm the record within {timeout:?}"
            ))),
        }
    }

    /// Stages 2 to 6 for one dossier.
    #[instrument(name = "broker.lookup", skip_all, fields(lookup = request.lookup.kind()))]
    async fn lookup(
        &self,
        policy: &Policy,
        request: &DataRequest<'_>,
    ) -> Result<Released, BrokerError> {
        let (role, purpose) = (&request.caller.role, &request.purpose);

        // 2. authorize: deny unless the role may declare this purpose.
        let view = info_span!("authorize", role = %role).in_scope(|| {
            policy.authorize(role, purpose).inspect_err(|_| {
                if let Some(shadow) = &self.stages.shadow {
                    shadow.compare_refusal(policy, role, purpose);
                }
            })
        })?;

        // A post the quota table does not know (with `quotas.known_posts_only`)
        // is refused before anything counts.
        let caller = &request.caller;
        if !self.stages.quota.is_registered(&caller.post) {
            return Err(BrokerError::PostNotRegistered);
        }
        // A suspended agent is refused before its request costs its post any quota.
        let agent = caller.agent();
        let suspended = self.stages.alerts.blocks() && self.stages.alerts.is_blocked(agent).await;
        if suspended {
            // Debug only: the request line and the audit record already say it,
            // and a suspended agent that insists must not double the log.
            tracing::debug!(post = %caller.post, "agent suspended by a bulk-lookup alert");
            return Err(BrokerError::AgentSuspended);
        }

        // 3. quota: counted before the cache, so hits and misses, found or not, all count.
        let started = Instant::now();
        let decision = self
            .stages
            .quota
            .acquire(agent)
            .instrument(info_span!("quota", post = %request.caller.post))
            .await;
        record_stage(Stage::Quota, started.elapsed());
        let post = caller.post.as_str();
        let quota = match decision {
            Decision::Allowed(state) => {
                crate::telemetry::set_quota_daily_remaining(post, state.post.daily_remaining);
                state
            }
            Decision::Refused {
                state,
                retry_after_secs,
                exhausted,
            } => {
                crate::telemetry::set_quota_daily_remaining(post, state.post.daily_remaining);
                tracing::info!(window = exhausted.as_str(), "quota exceeded");
                crate::telemetry::record_quota_refusal(
                    request.caller.post.as_str(),
                    exhausted.as_str(),
                );
                return Err(BrokerError::QuotaExceeded {
                    state,
                    retry_after_secs,
                    limit: exhausted,
                });
            }
            Decision::Unavailable => return Err(BrokerError::QuotaUnavailable),
        };

        // 4. cache, 5. upstream: concurrent misses on one lookup share one CAF call.
        let cache_span = info_span!("cache", cache = tracing::field::Empty);
        let upstream = &self.stages.upstream;
        let cache_started = Instant::now();
        let fetched = self
            .stages
            .cache
            .get_or_fetch(&request.lookup, request.fresh, || {
                async {
                    let started = Instant::now();
                    let result = upstream.fetch(&request.lookup).await;
                    // Another dossier than the one asked for becomes an error
                    // here, inside the load: the cache never keeps it.
                    let result = crate::upstream::check_answer(&request.lookup, result);
                    if matches!(result, Err(UpstreamError::WrongDossier)) {
                        tracing::warn!(
                            lookup = request.lookup.kind(),
                            "the CAF answered with another dossier than the one asked for"
                        );
                        crate::telemetry::record_upstream_mismatch(request.lookup.kind());
                    }
                    crate::telemetry::record_upstream(upstream_result(&result), started.elapsed());
                    result
                }
                .instrument(info_span!("upstream", otel.kind = "client"))
            })
            .instrument(cache_span.clone())
            .await;
        record_stage(Stage::Cache, cache_started.elapsed());
        let (record, cache) =
            fetched.map_err(|shared| match UpstreamError::from_shared(shared) {
                UpstreamError::Timeout => BrokerError::UpstreamTimeout,
                UpstreamError::Unavailable { retry_after_secs } => {
                    BrokerError::UpstreamUnavailable { retry_after_secs }
                }
                UpstreamError::Failed(cause) => BrokerError::Upstream(cause),
                wrong @ UpstreamError::WrongDossier => BrokerError::Upstream(wrong.into()),
            })?;
        cache_span.record("cache", cache.as_str());
        crate::telemetry::record_cache(cache);
        let record = record.ok_or(BrokerError::NotFound)?;
        if cache == CacheOutcome::Miss {
            self.stages.drift.observe(&record);
        }

        // 6. filter: deny by default, field by field.
        let started = Instant::now();
        let filtered = info_span!("filter").in_scope(|| view.filter_json(&record));
        record_stage(Stage::Filter, started.elapsed());
        if filtered.redacted > 0 {
            tracing::warn!(
                redacted = filtered.redacted,
                "NIRs written in released text were redacted"
            );
            crate::telemetry::record_nir_redactions(filtered.redacted);
        }
        if let Some(shadow) = &self.stages.shadow {
            shadow.compare(policy, role, purpose, &record);
        }

        tracing::debug!(released = filtered.released.len(), "released");
        Ok(Released {
            purpose: request.purpose.clone(),
            data: filtered.json,
            released_paths: filtered.released,
            policy_version: policy.shared_version(),
            cache,
            quota: RateLimitFields::of(&quota),
        })
    }
}

/// How long a request waits for its audit record to be on disk before it is
/// answered `503 audit-unavailable` (a hung disk must not pile up requests).
const AUDIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How a CAF call ended, for the upstream metrics.
fn upstream_result<T>(
    result: &Result<Option<T>, UpstreamError>,
) -> crate::telemetry::UpstreamResult {
    use crate::telemetry::UpstreamResult as R;
    match result {
        Ok(Some(_)) => R::Found,
        Ok(None) => R::NotFound,
        Err(UpstreamError::Timeout) => R::Timeout,
        Err(UpstreamError::Unavailable { .. }) => R::Unavailable,
        Err(UpstreamError::Failed(_) | UpstreamError::WrongDossier) => R::Error,
    }
}

/// Whether an answer is a refusal that costs the agent one unit of its error
/// budget: a malformed request, a purpose not permitted, a dossier not found,
/// a quota spent. Failures of the broker or the CAF cost nothing.
fn is_refusal(status: u16) -> bool {
    matches!(status, 400 | 403 | 404 | 429)
}

/// How a failed request is recorded in the audit log.
fn outcome_of(error: &BrokerError) -> Outcome {
    match error {
        BrokerError::InvalidRequest(_)
        | BrokerError::PayloadTooLarge { .. }
        | BrokerError::UnsupportedMediaType
        | BrokerError::RequestTimeout { .. }
        | BrokerError::HeadersTooLarge { .. }
        | BrokerError::RouteNotFound
        | BrokerError::MethodNotAllowed { .. } => Outcome::Invalid,
        BrokerError::Unauthenticated(_) => Outcome::Unauthenticated,
        BrokerError::PurposeNotPermitted
        | BrokerError::AgentSuspended
        | BrokerError::PostNotRegistered => Outcome::Refused,
        BrokerError::QuotaExceeded { .. }
        | BrokerError::ErrorBudgetSpent { .. }
        | BrokerError::QuotaUnavailable => Outcome::QuotaExceeded,
        BrokerError::NotFound => Outcome::NotFound,
        BrokerError::Upstream(_)
        | BrokerError::UpstreamTimeout
        | BrokerError::UpstreamUnavailable { .. } => Outcome::UpstreamError,
        BrokerError::AuditUnavailable(_) | BrokerError::Internal(_) => Outcome::InternalError,
    }
}
