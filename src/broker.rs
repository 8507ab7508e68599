//! The request pipeline, framework-free. Start reading here.
//!
//! A data request walks, in order:
//! 1. authenticate: the bearer token becomes a [`Caller`] whose role the policy knows;
//! 2. authorize: the caller's role may declare the purpose;
//! 3. quota: the post's burst and daily allowance; every authorized request counts;
//! 4. cache: a recent CAF answer for the same lookup (none yet: every request is a miss);
//! 5. upstream: the CAF record;
//! 6. filter: only the fields the purpose may see leave;
//! 7. audit: the access is recorded (not recorded yet).
//!
//! Each stage is a capability module that knows nothing of the others; this
//! module is the only one that walks them.

use std::sync::Arc;

use serde::Serialize;
use tracing::instrument;

use crate::auth::{Authenticator, Caller};
use crate::domain::{CaseReference, Lookup, Purpose};
use crate::error::{BrokerError, Unauthenticated};
use crate::policy::Policy;
use crate::quota::{Decision, Quota, QuotaState};
use crate::upstream::{CafClient, UpstreamError};

/// Whether the record came from the cache or from the CAF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    Hit,
    Miss,
}

/// An authenticated, well-formed request for one dossier.
#[derive(Debug)]
pub struct DataRequest {
    pub caller: Caller,
    pub purpose: Purpose,
    pub case_reference: CaseReference,
    pub lookup: Lookup,
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

pub struct Broker {
    authenticator: Authenticator,
    policy: Arc<Policy>,
    policy_version: Arc<str>,
    quota: Arc<dyn Quota>,
    upstream: Arc<dyn CafClient>,
}

impl Broker {
    pub fn new(
        authenticator: Authenticator,
        policy: Arc<Policy>,
        quota: Arc<dyn Quota>,
        upstream: Arc<dyn CafClient>,
    ) -> Self {
        let policy_version = Arc::from(policy.version());
        Self {
            authenticator,
            policy,
            policy_version,
            quota,
            upstream,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Stage 1: the bearer token becomes a caller whose role the policy defines.
    pub fn authenticate(&self, bearer_token: Option<&str>) -> Result<Caller, BrokerError> {
        let token =
            bearer_token.ok_or(BrokerError::Unauthenticated(Unauthenticated::MissingToken))?;
        let caller = self
            .authenticator
            .authenticate(token)
            .map_err(|e| BrokerError::Unauthenticated(Unauthenticated::Token(e)))?;
        if !self.policy.has_role(&caller.role) {
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
        // 2. authorize: deny unless the role may declare this purpose.
        let view = self
            .policy
            .authorize(&request.caller.role, &request.purpose)?;

        // 3. quota: counted before the cache, so hits and misses, found or not, all count.
        let quota = match self.quota.acquire(&request.caller.post).await {
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

        // 4. cache: a cache of raw records takes its place here; until then every read is fresh.
        let cache = CacheStatus::Miss;

        // 5. upstream.
        let record = self
            .upstream
            .fetch(&request.lookup)
            .await
            .map_err(|e| match e {
                UpstreamError::Timeout => BrokerError::UpstreamTimeout,
                UpstreamError::Unavailable => BrokerError::UpstreamUnavailable,
                UpstreamError::Failed(cause) => BrokerError::Upstream(cause),
            })?
            .ok_or(BrokerError::NotFound)?;

        // 6. filter: deny by default, field by field.
        let filtered = view.filter(&record);

        // 7. audit: the durable access record takes its place here, before data leaves.
        tracing::debug!(released = filtered.released.len(), "released");
        Ok(Released {
            data: filtered.data,
            released_paths: filtered.released,
            policy_version: self.policy_version.clone(),
            cache,
            quota,
        })
    }
}
