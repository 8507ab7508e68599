//! The request pipeline, framework-free. Start reading here.
//!
//! A data request walks, in order:
//! 1. authenticate: the bearer token becomes a [`Caller`] whose role the policy knows;
//! 2. authorize: the caller's role may declare the purpose;
//! 3. quota: the post's burst and daily allowance; every authorized request counts;
//! 4. cache: a recent CAF answer for the same lookup, or one shared upstream call;
//! 5. upstream: the CAF record;
//! 6. filter: only the fields the purpose may see leave;
//! 7. audit: the access is recorded (not recorded yet).
//!
//! Each stage is a capability module that knows nothing of the others; this
//! module is the only one that walks them.

use std::sync::Arc;

use tracing::instrument;

use crate::auth::{Authenticator, Caller};
use crate::cache::{CacheStatus, RecordCache};
use crate::domain::{CaseReference, Lookup, Purpose};
use crate::error::{BrokerError, Unauthenticated};
use crate::policy::{DriftTracker, Policy, PolicyStore, ReloadCounts, ShadowPolicy};
use crate::quota::{Decision, Quota, QuotaState};
use crate::upstream::{CafClient, UpstreamError, UpstreamHealth};

/// An authenticated, well-formed request for one dossier.
#[derive(Debug)]
pub struct DataRequest {
    pub caller: Caller,
    pub purpose: Purpose,
    pub case_reference: CaseReference,
    pub lookup: Lookup,
    /// The client asked for a fresh CAF read (`Cache-Control: no-cache`).
    pub fresh: bool,
}

/// What the broker releases for a request: only what the purpose may see.
#[derive(Debug)]
pub struct Released {
    pub data: serde_json::Value,
    pub released_paths: Vec<String>,
    pub policy_version: Arc<str>,
    pub cache: CacheStatus,
    /// The post's quotas after this request, for the `RateLimit` headers.
    pub quota: QuotaState,
}

/// Whether the broker can serve data requests now.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub policy_version: Arc<str>,
    pub policy_reloads: ReloadCounts,
    pub upstream: UpstreamHealth,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.upstream.is_ready()
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
}

pub struct Broker {
    stages: Stages,
}

impl Broker {
    pub fn new(stages: Stages) -> Self {
        Self { stages }
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
        }
    }

    /// Stage 1: the bearer token becomes a caller whose role the policy defines.
    pub fn authenticate(&self, bearer_token: Option<&str>) -> Result<Caller, BrokerError> {
        let token =
            bearer_token.ok_or(BrokerError::Unauthenticated(Unauthenticated::MissingToken))?;
        let caller = self
            .stages
            .authenticator
            .authenticate(token)
            .map_err(|e| BrokerError::Unauthenticated(Unauthenticated::Token(e)))?;
        if !self.stages.policy.current().has_role(&caller.role) {
            return Err(BrokerError::Unauthenticated(Unauthenticated::UnknownRole));
        }
        Ok(caller)
    }

    /// Stages 2 to 7 for one dossier.
    #[instrument(
        name = "broker.lookup",
        skip_all,
        fields(post = %request.caller.post, role = %request.caller.role, purpose = %request.purpose, lookup = request.lookup.kind())
    )]
    pub async fn lookup(&self, request: &DataRequest) -> Result<Released, BrokerError> {
        // One policy snapshot for the whole request, even if a reload lands meanwhile.
        let policy = self.stages.policy.current();
        let (role, purpose) = (&request.caller.role, &request.purpose);

        // 2. authorize: deny unless the role may declare this purpose.
        let view = policy.authorize(role, purpose).inspect_err(|_| {
            if let Some(shadow) = &self.stages.shadow {
                shadow.compare_refusal(&policy, role, purpose);
            }
        })?;

        // 3. quota: counted before the cache, so hits and misses, found or not, all count.
        let quota = match self.stages.quota.acquire(&request.caller.post).await {
            Decision::Allowed(state) => state,
            Decision::Refused {
                state,
                retry_after_secs,
                exhausted,
            } => {
                tracing::info!(window = exhausted.as_str(), "quota exceeded");
                return Err(BrokerError::QuotaExceeded {
                    state,
                    retry_after_secs,
                });
            }
            Decision::Unavailable => return Err(BrokerError::QuotaUnavailable),
        };

        // 4. cache, 5. upstream: concurrent misses on one lookup share one CAF call.
        let upstream = &self.stages.upstream;
        let (record, cache) = self
            .stages
            .cache
            .get_or_fetch(&request.lookup, request.fresh, || {
                upstream.fetch(&request.lookup)
            })
            .await
            .map_err(|shared| match UpstreamError::from_shared(shared) {
                UpstreamError::Timeout => BrokerError::UpstreamTimeout,
                UpstreamError::Unavailable { retry_after_secs } => {
                    BrokerError::UpstreamUnavailable { retry_after_secs }
                }
                UpstreamError::Failed(cause) => BrokerError::Upstream(cause),
            })?;
        let record = record.ok_or(BrokerError::NotFound)?;
        if cache == CacheStatus::Miss {
            self.stages.drift.observe(&record);
        }

        // 6. filter: deny by default, field by field.
        let filtered = view.filter(&record);
        if let Some(shadow) = &self.stages.shadow {
            shadow.compare(&policy, role, purpose, &record);
        }

        // 7. audit: the durable access record takes its place here, before data leaves.
        tracing::debug!(released = filtered.released.len(), "released");
        Ok(Released {
            data: filtered.data,
            released_paths: filtered.released,
            policy_version: policy.shared_version(),
            cache,
            quota,
        })
    }
}
