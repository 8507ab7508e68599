//! Per-post quotas: a burst rate (GCRA) and a daily allowance reset at local midnight.
//!
//! Every call to [`Quota::acquire`] is one authorised data request of a post
//! and counts, whatever happens to the request afterwards. Each post has its
//! own limits (`quotas.posts.<code>`, else `quotas.default`) and its own
//! counters; agents of one post share them.
//!
//! A decision checks the daily counter first, then the burst limiter, then
//! counts the request for the day, atomically: a request refused by either
//! limit consumes nothing from the other (see [`local`] and [`redis`]).
//!
//! Two backends sit behind the [`Quota`] trait, chosen by `quotas.backend`:
//! - `local` ([`local`]): one state per process, built once and shared by
//!   every worker;
//! - `redis` ([`redis`]): one state shared by every replica, each decision one
//!   Lua script run. While Redis does not answer, decisions fall back to the
//!   local limits of this process alone, or are refused if
//!   `on_redis_failure = "refuse"` ([`fallback`]); never unlimited.
//!
//! Apart from the posts' quotas, [`ErrorBudget`] ([`budget`]) is a budget of
//! refusals per agent (`quotas.agent_error_budget`), kept in each process.
//!
//! Time comes from an injected [`Clock`]; days from the configured time zone
//! ([`day`]). The answer's state becomes the `RateLimit-Policy` and `RateLimit`
//! header fields ([`headers`]).

mod budget;
mod clock;
mod day;
mod fallback;
mod gcra;
mod headers;
mod local;
mod redis;
mod settings;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::domain::PostCode;

pub use budget::{Admission, ErrorBudget, ErrorBudgetLimits, RefusalCounts};
pub use clock::{Clock, ManualClock, SystemClock};
pub use headers::{POLICY_HEADER, QuotaState, RATELIMIT_HEADER};
pub use settings::{Backend, Limits, QuotaSettings, RedisFailure};

use day::Calendar;
use local::LocalQuota;
use settings::LimitTable;

/// The quota stage: one decision per authorised data request.
pub trait Quota: Send + Sync {
    /// Counts one request of `post` if its quotas allow it.
    fn acquire<'a>(
        &'a self,
        post: &'a PostCode,
    ) -> Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;
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
        /// midnight when the daily quota is spent.
        retry_after_secs: u64,
        exhausted: Window,
    },
    /// Redis does not answer and `on_redis_failure = "refuse"`: answer 503.
    Unavailable,
}

/// Which quota refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Burst,
    Daily,
}

impl Window {
    /// The policy's name in the headers, also usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Burst => "burst",
            Window::Daily => "daily",
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
    let local = LocalQuota::new(LimitTable::new(settings), calendar.clone(), clock.clone());
    match (settings.backend, settings.redis_url.as_deref()) {
        (Backend::Redis, Some(url)) => {
            let quota = redis::RedisQuota::connect(url, settings, calendar, clock, local)
                .await
                .map_err(|_| {
                    QuotaError::Invalid(vec!["quotas.redis_url: not a Redis URL".to_owned()])
                })?;
            Ok(Arc::new(quota))
        }
        _ => Ok(Arc::new(local)),
    }
}

impl Quota for LocalQuota {
    fn acquire<'a>(
        &'a self,
        post: &'a PostCode,
    ) -> Pin<Box<dyn Future<Output = Decision> + Send + 'a>> {
        Box::pin(std::future::ready(self.decide(post)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(quota.acquire(&post).await, Decision::Allowed(_)));
    }
}
