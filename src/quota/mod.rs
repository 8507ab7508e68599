//! Per-post and per-agent quotas: a burst rate (GCRA) and a daily allowance reset at local midnight.
//!
//! Every call to [`Quota::acquire`] is one authorised data request of an
//! [`Agent`] (a `sub` within a post) and counts, whatever happens to the
//! request afterwards. Each post has its own limits (`quotas.posts.<code>`,
//! else `quotas.default`) shared by all its agents, and each agent its own
//! (`quotas.agents."<post>/<sub>"`, else `quotas.agent_default`).
//!
//! A decision weighs the four limits at once ([`meter`]): the daily counts
//! first, then the bursts, and counts the request in all four only if none
//! refuses, atomically: a request refused by one limit consumes nothing of
//! the others (see [`local`] and [`redis`]). With `quotas.known_posts_only`,
//! [`Quota::is_registered`] tells the pipeline which posts may ask at all.
//!
//! Two backends sit behind the [`Quota`] trait, chosen by `quotas.backend`:
//! - `local` ([`local`]): one state per process, built once and shared by
//!   every worker;
//! - `redis` ([`redis`]): one state shared by every replica, each decision one
//!   Lua script run. While Redis does not answer, decisions fall back to the
//!   local limits of this process alone, with a share of what remained of each
//!   daily quota, or are refused if `on_redis_failure = "refuse"`
//!   ([`fallback`]); never unlimited.
//!
//! Apart from the posts' quotas, [`ErrorBudget`] ([`budget`]) is a budget of
//! refusals per agent (`quotas.agent_error_budget`), kept in each process.
//!
//! Time comes from the injected [`Clock`]; days from the configured time zone
//! ([`day`]). The answer's state becomes the `RateLimit-Policy` and `RateLimit`
//! header fields ([`headers`]).

mod budget;
mod day;
mod fallback;
mod gcra;
mod headers;
mod local;
mod meter;
mod redis;
mod settings;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::clock::Clock;
use crate::domain::{Agent, PostCode};

pub use budget::{Admission, ErrorBudget, ErrorBudgetLimits, RefusalCounts};
pub use headers::{Allowance, POLICY_HEADER, QuotaState, RATELIMIT_HEADER};
pub use settings::{Backend, Limits, QuotaSettings, RedisFailure, redacted_url};

use day::Calendar;
use local::LocalQuota;
use settings::LimitTable;

/// The quota stage: one decision per authorised data request.
pub trait Quota: Send + Sync {
    /// Counts one request of `agent` if its post's and its own quotas allow it.
    fn acquire<'a>(
        &'a self,
        agent: Agent<'a>,
    ) -> Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;

    /// Whether `post` may make data requests at all: every post may, unless
    /// `quotas.known_posts_only` asks for a `[quotas.posts.<code>]` entry.
    fn is_registered(&self, post: &PostCode) -> bool;
}

/// The outcome of [`Quota::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The request is counted; serve it.
    Allowed(QuotaState),
    /// A quota is spent: answer 429 `quota-exceeded` with `Retry-After: retry_after_secs`.
    Refused {
        state: QuotaState,
        /// Seconds to the next burst token (rounded up, at least 1), or to local
        /// midnight when a daily quota is spent.
        retry_after_secs: u64,
        exhausted: Window,
    },
    /// Redis does not answer and `on_redis_failure = "refuse"`: answer 503.
    Unavailable,
}

/// Which quota refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The post's burst.
    Burst,
    /// The post's daily quota.
    Daily,
    /// The agent's own burst.
    AgentBurst,
    /// The agent's own daily quota.
    AgentDaily,
}

impl Window {
    /// The policy's name in the headers; also the `limit` of a 429 problem and
    /// a metric label. Stable: clients may match on it.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Burst => "burst",
            Window::Daily => "daily",
            Window::AgentBurst => "agent-burst",
            Window::AgentDaily => "agent-daily",
        }
    }
}

/// Why the quota stage could not be built.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The settings do not validate; each entry is `quotas.<key>: <message>`.
    #[error("invalid quota settings: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// Builds the configured backend. Build it once per process and share the
/// `Arc` among workers: a quota per worker would multiply the limits.
///
/// With `backend = "redis"`, an unreachable Redis does not stop the start:
/// the broker starts on the fallback (warned once) and moves to Redis when it
/// answers.
pub async fn build(
    settings: &QuotaSettings,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Quota>, QuotaError> {
    let problems = settings.validate();
    if !problems.is_empty() {
        return Err(QuotaError::Invalid(problems));
    }
    let calendar = Calendar::new(&settings.time_zone).map_err(|_| {
        QuotaError::Invalid(vec![format!(
            "quotas.time_zone: unknown time zone {:?}",
            settings.time_zone
        )])
    })?;
    let table = LimitTable::new(settings);
    match (settings.backend, settings.redis_url.as_deref()) {
        (Backend::Redis, Some(url)) => {
            let client = redis::client(url, settings).map_err(QuotaError::Invalid)?;
            let fallback = LocalQuota::sharing(
                table,
                calendar.clone(),
                clock.clone(),
                settings.replicas_hint,
            );
            let quota = redis::RedisQuota::connect(client, settings, calendar, clock, fallback)
                .await
                .map_err(|_| {
                    QuotaError::Invalid(vec![
                        "quotas.redis_url: no Redis connection can be set up with these settings"
                            .to_owned(),
                    ])
                })?;
            tracing::info!(
                redis = %redacted_url(url),
                replicas_hint = settings.replicas_hint,
                "quota: counters shared in Redis"
            );
            Ok(Arc::new(quota))
        }
        _ => Ok(Arc::new(LocalQuota::new(table, calendar, clock))),
    }
}

/// The client of the shared Redis (`quotas.backend = "redis"`: URL, ACL user,
/// password file, CA bundle), for the composition root to hand to other stages
/// that keep per-agent state beside the quotas; `None` with the local backend.
pub fn shared_redis_client(
    settings: &QuotaSettings,
) -> Result<Option<::redis::Client>, QuotaError> {
    match (settings.backend, settings.redis_url.as_deref()) {
        (Backend::Redis, Some(url)) => redis::client(url, settings)
            .map(Some)
            .map_err(QuotaError::Invalid),
        _ => Ok(None),
    }
}

/// What `caf-broker check` adds to the settings' validation: the Redis CA and
/// password files are read and the client built, without connecting.
pub fn check_files(settings: &QuotaSettings) -> Vec<String> {
    match (settings.backend, settings.redis_url.as_deref()) {
        (Backend::Redis, Some(url)) => redis::client(url, settings).err().unwrap_or_default(),
        _ => Vec::new(),
    }
}

impl Quota for LocalQuota {
    fn acquire<'a>(
        &'a self,
        agent: Agent<'a>,
    ) -> Pin<Box<dyn Future<Output = Decision> + Send + 'a>> {
        Box::pin(std::future::ready(self.decide(agent)))
    }

    fn is_registered(&self, post: &PostCode) -> bool {
        LocalQuota::is_registered(self, post)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, SystemClock};
    use crate::domain::Subject;

    fn settings(toml_text: &str) -> QuotaSettings {
        toml::from_str(toml_text).unwrap()
    }

    #[tokio::test]
    async fn build_refuses_invalid_settings_with_every_problem() {
        let s = settings(
            "time_zone = \"Nowhere/Else\"\ndefault = { per_second = 0, burst = 20, per_day = 2000 }",
        );
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let Err(QuotaError::Invalid(problems)) = build(&s, clock).await else {
            panic!("invalid settings were accepted");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[tokio::test]
    async fn the_local_backend_is_built_by_default() {
        let s = settings("default = { per_second = 5, burst = 20, per_day = 2000 }");
        let start = "2026-01-15T10:00:00Z".parse().unwrap();
        let quota = build(&s, Arc::new(ManualClock::new(start))).await.unwrap();
        let post = PostCode::parse("TN-TUNIS").unwrap();
        let sub = Subject::parse("agent-42").unwrap();
        let agent = Agent {
            post: &post,
            sub: &sub,
        };
        assert!(matches!(quota.acquire(agent).await, Decision::Allowed(_)));
        assert!(quota.is_registered(&post));
    }

    #[tokio::test]
    async fn with_known_posts_only_a_post_without_an_entry_is_not_registered() {
        let s = settings(
            "known_posts_only = true\n\
             default = { per_second = 5, burst = 20, per_day = 2000 }\n\
             [posts.TN-TUNIS]\nper_second = 1\nburst = 1\nper_day = 1",
        );
        let quota = build(&s, Arc::new(SystemClock)).await.unwrap();
        assert!(quota.is_registered(&PostCode::parse("TN-TUNIS").unwrap()));
        assert!(!quota.is_registered(&PostCode::parse("MA-RABAT").unwrap()));
    }
}
