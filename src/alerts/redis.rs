//! The shared store: the same windows in Redis, so that an agent spreading its
//! lookups over several replicas is judged on all of them.
//!
//! Keys of one agent (the braces make the agent a Redis Cluster hash tag):
//!
//! - `caf-broker:alerts:{POST/SUB}:dossiers`: sorted set of dossier
//!   pseudonyms (the audit log's keyed HMAC, the same on every replica, never a
//!   clear numéro or NIR), scored by their last lookup (ms);
//! - `…:lookups`, `…:not_found`, `…:nir`: sorted sets of one random member per
//!   lookup (all, those that found nothing, NIR searches), scored by time;
//! - `…:silent:RULE`: present while a rule that fired stays silent;
//! - `…:blocked`: present while the agent is suspended.
//!
//! An observation is one atomic `MULTI` pipeline (add, drop what is an hour
//! old, count, expire); a rule fires on the replica whose `SET NX` creates its
//! `silent` key, so it fires once whichever replicas see the lookups. Every key
//! expires by itself. While Redis does not answer, the caller falls back to
//! the in-memory windows: the first failure is logged once (`warn`), Redis is
//! skipped for [`RETRY_INTERVAL`] of the injected clock, then tried again on a
//! fresh connection.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use redis::aio::ConnectionManager;
use redis::{RedisError, Value};

use crate::redis_link::lazy_manager;

use super::rules::{Counts, Rule, WINDOW};
use super::windows::MAX_EVENTS_PER_AGENT;
use super::{LookupKind, Observation};
use crate::domain::Agent;

/// How long Redis is skipped after a failure before it is tried again.
const RETRY_INTERVAL_MS: i64 = 1_000;

/// A connection to the shared store, built by the composition root (which
/// owns the URL, TLS and credentials).
pub struct RedisLink {
    pub client: redis::Client,
    /// The upper bound of one call.
    pub timeout: Duration,
}

pub(crate) struct RedisStore {
    client: redis::Client,
    timeout: Duration,
    connection: Mutex<ConnectionManager>,
    down: AtomicBool,
    /// Epoch milliseconds (injected clock) before which Redis is not tried.
    retry_at_ms: AtomicI64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// Redis is skipped for a while after a failure.
    #[error("skipped after a recent failure")]
    Skipped,
}

impl RedisStore {
    pub(crate) fn new(link: RedisLink) -> Result<RedisStore, RedisError> {
        let timeout = link.timeout.max(Duration::from_millis(1));
        let connection = lazy_manager(&link.client, timeout)?;
        Ok(RedisStore {
            client: link.client,
            timeout,
            connection: Mutex::new(connection),
            down: AtomicBool::new(false),
            retry_at_ms: AtomicI64::new(i64::MIN),
        })
    }

    /// Adds one lookup to the agent's shared windows and returns its counts
    /// over the hour ending at `now`.
    pub(crate) async fn record(
        &self,
        observation: &Observation<'_>,
        now: Timestamp,
    ) -> Result<Counts, StoreError> {
        let now_ms = now.as_millisecond();
        let cutoff = now_ms.saturating_sub(WINDOW.as_millis() as i64);
        let ttl_ms = WINDOW.as_millis() as i64;
        let prefix = prefix(observation.agent);
        let event = uuid::Uuid::new_v4().simple().to_string();
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut window = |set: &str, member: Option<&str>| {
            let key = format!("{prefix}:{set}");
            if let Some(member) = member {
                pipe.zadd(&key, member, now_ms).ignore();
            }
            pipe.zrembyscore(&key, "-inf", cutoff).ignore();
            pipe.zremrangebyrank(&key, 0, -(MAX_EVENTS_PER_AGENT as isize) - 1)
                .ignore();
            pipe.zcard(&key);
            pipe.pexpire(&key, ttl_ms).ignore();
        };
        window("dossiers", Some(observation.dossier));
        window("lookups", Some(&event));
        window("not_found", (!observation.found).then_some(event.as_str()));
        window(
            "nir",
            (observation.kind == LookupKind::Nir).then_some(event.as_str()),
        );
        let (distinct_dossiers, lookups, not_found, nir_searches): (u64, u64, u64, u64) = self
            .call(
                now_ms,
                |mut c| async move { pipe.query_async(&mut c).await },
            )
            .await?;
        Ok(Counts {
            distinct_dossiers,
            lookups,
            not_found,
            nir_searches,
        })
    }

    /// Fires `rule` for the agent unless another replica (or this one) did
    /// and it is still silent; suspends the agent for `block_ms` if given.
    pub(crate) async fn claim(
        &self,
        agent: Agent<'_>,
        rule: Rule,
        now: Timestamp,
        silent_ms: i64,
        block_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let prefix = prefix(agent);
        let silent_key = format!("{prefix}:silent:{}", rule.as_str());
        let created: Value = self
            .call(now.as_millisecond(), |mut c| async move {
                redis::cmd("SET")
                    .arg(&silent_key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(silent_ms.max(1))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let fired = matches!(created, Value::Okay);
        if let (true, Some(block_ms)) = (fired, block_ms) {
            let blocked_key = format!("{prefix}:blocked");
            let _: Value = self
                .call(now.as_millisecond(), |mut c| async move {
                    redis::cmd("SET")
                        .arg(&blocked_key)
                        .arg(1)
                        .arg("PX")
                        .arg(block_ms.max(1))
                        .query_async(&mut c)
                        .await
                })
                .await?;
        }
        Ok(fired)
    }

    pub(crate) async fn is_blocked(
        &self,
        agent: Agent<'_>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let key = format!("{}:blocked", prefix(agent));
        self.call(now.as_millisecond(), |mut c| async move {
            redis::cmd("EXISTS").arg(&key).query_async(&mut c).await
        })
        .await
    }

    /// One call within the timeout, skipped while Redis is known to be down;
    /// a failure opens (and logs, once) an outage, a success closes it.
    async fn call<T, F, Fut>(&self, now_ms: i64, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let down = self.down.load(Ordering::Acquire);
        if down {
            let due = self.retry_at_ms.load(Ordering::Acquire);
            // Only the call that moves the retry time forward tries Redis.
            let claimed = now_ms >= due
                && self
                    .retry_at_ms
                    .compare_exchange(
                        due,
                        now_ms.saturating_add(RETRY_INTERVAL_MS),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok();
            if !claimed {
                return Err(StoreError::Skipped);
            }
            // A fresh manager: the old one may be in its reconnection back-off.
            let fresh = lazy_manager(&self.client, self.timeout)?;
            *self
                .connection
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = fresh;
        }
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let result = match tokio::time::timeout(self.timeout, op(connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(StoreError::Redis(error)),
            Err(_) => Err(StoreError::Timeout(self.timeout.as_millis())),
        };
        match &result {
            Ok(_) => {
                if self.down.swap(false, Ordering::AcqRel) {
                    tracing::info!("alerts: Redis answers again; lookup windows are shared again");
                }
            }
            Err(error) => {
                self.retry_at_ms
                    .store(now_ms.saturating_add(RETRY_INTERVAL_MS), Ordering::Release);
                if !self.down.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        %error,
                        "alerts: Redis does not answer; judging lookups on this replica's windows until it does"
                    );
                }
            }
        }
        result
    }
}

/// The keys' common prefix for an agent; the agent is the hash tag.
pub(crate) fn prefix(agent: Agent<'_>) -> String {
    format!("caf-broker:alerts:{{{}/{}}}", agent.post, agent.sub)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PostCode, Subject};

    #[test]
    fn keys_carry_the_agent_as_a_cluster_hash_tag() {
        let (post, sub) = (
            PostCode::parse("TN-TUNIS").unwrap(),
            Subject::parse("agent-42").unwrap(),
        );
        let agent = Agent {
            post: &post,
            sub: &sub,
        };
        assert_eq!(prefix(agent), "caf-broker:alerts:{TN-TUNIS/agent-42}");
    }
}
