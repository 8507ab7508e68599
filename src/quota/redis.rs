//! The shared backend: every replica decides through one Lua script in Redis.
//!
//! One decision is one round trip (`EVALSHA`, loaded again by redis-rs after a
//! Redis restart) running [`SCRIPT`] atomically on four keys:
//!
//! - `caf-broker:quota:{POST}:burst`: the post's GCRA theoretical arrival
//!   time, in microseconds; it expires once the burst is full again (plus a
//!   second), and a missing key means a full burst;
//! - `caf-broker:quota:{POST}:day:YYYY-MM-DD`: the post's count for that local
//!   day; it expires an hour after that day's midnight;
//! - `caf-broker:quota:{POST}:agent-burst:SUB` and
//!   `caf-broker:quota:{POST}:agent-day:YYYY-MM-DD:SUB`: the same for one
//!   agent. The `sub` comes last, so that no `sub` can make one key look like
//!   another; nothing else about the agent is stored.
//!
//! The braces make the post a Redis Cluster hash tag: the four keys of a
//! request land in one slot, as a script touching several keys requires there.
//!
//! The caller passes "now" (from the injected clock), the limits and the
//! day's key and time to midnight, so that the script holds no time zone
//! logic and tests drive a real Redis with a fake clock. The script applies
//! the rule of [`super::meter`]; the replicas' clocks should agree (NTP); a
//! skew of a few milliseconds shifts the burst refill by as much.
//!
//! The connection may be `rediss://` (TLS through rustls, trusting
//! `quotas.redis_ca_file`) and authenticate as an ACL user with a password
//! from the URL or from `quotas.redis_password_file`.
//!
//! Every call is bounded by `quotas.redis_timeout_ms`; failures go to the
//! fallback ([`super::fallback`]). Each answer from Redis tells the fallback
//! the day's shared counts, so that during an outage it grants only a share
//! of what they leave.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use redis::aio::ConnectionManager;
use redis::{IntoConnectionInfo, RedisError, Script};

use crate::domain::{Agent, PostCode, Subject};
use crate::redis_link::lazy_manager;

use super::day::Calendar;
use super::fallback::{Outage, Route};
use super::local::LocalQuota;
use super::meter::{self, Meter};
use super::settings::{LimitTable, QuotaSettings, RedisFailure};
use super::{Decision, Quota, Window};
use crate::clock::Clock;

/// How long a day's counter outlives the day's midnight, so that a replica
/// whose clock lags a little still finds it.
const DAY_KEY_MARGIN_SECS: u64 = 3600;

/// The decision, atomically, by the rule of [`super::meter`]: the post's and
/// the agent's daily counts first, then both bursts, then all four counted.
///
/// KEYS: post burst, post day, agent burst, agent day. ARGV: now (µs), day
/// keys' TTL (s), then for the post and for the agent: emission interval (µs),
/// burst, per_day. Returns `{outcome, post_used, post_tat, agent_used,
/// agent_tat}` with outcome 0 = allowed, 1 = the post's burst, 2 = the post's
/// day, 3 = the agent's burst, 4 = the agent's day.
/// Times are written with `%.0f`: Lua numbers are doubles, exact up to 2^53 µs
/// (year 2255), and must not be printed in exponent form.
pub(crate) const SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local pi, pb, pd = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ai, ab, ad = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local ptat = tonumber(redis.call('GET', KEYS[1])) or now
if ptat < now then ptat = now end
local pused = tonumber(redis.call('GET', KEYS[2])) or 0
local atat = tonumber(redis.call('GET', KEYS[3])) or now
if atat < now then atat = now end
local aused = tonumber(redis.call('GET', KEYS[4])) or 0
local function reply(outcome)
  return {outcome, pused, string.format('%.0f', ptat), aused, string.format('%.0f', atat)}
end
if pused >= pd then return reply(2) end
if aused >= ad then return reply(4) end
local pwait = ptat - pi * (pb - 1) - now
local await = atat - ai * (ab - 1) - now
if pwait > 0 or await > 0 then
  if pwait >= await then return reply(1) end
  return reply(3)
end
ptat = ptat + pi
atat = atat + ai
redis.call('SET', KEYS[1], string.format('%.0f', ptat), 'PX', string.format('%.0f', math.ceil((ptat - now) / 1000) + 1000))
redis.call('SET', KEYS[3], string.format('%.0f', atat), 'PX', string.format('%.0f', math.ceil((atat - now) / 1000) + 1000))
pused = redis.call('INCR', KEYS[2])
if pused == 1 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
aused = redis.call('INCR', KEYS[4])
if aused == 1 then redis.call('EXPIRE', KEYS[4], ARGV[2]) end
return reply(0)
";

pub(crate) struct RedisQuota {
    limits: LimitTable,
    calendar: Calendar,
    clock: Arc<dyn Clock>,
    client: redis::Client,
    timeout: Duration,
    connection: Mutex<ConnectionManager>,
    script: Script,
    outage: Outage,
    on_failure: RedisFailure,
    fallback: LocalQuota,
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("unexpected reply from the quota script")]
    Reply,
}

/// The Redis client the settings describe: URL, ACL user, password file and
/// CA bundle. Problems are reported as `quotas.<key>: <message>`, never with
/// the URL (it may hold a password) nor the password.
pub(crate) fn client(url: &str, settings: &QuotaSettings) -> Result<redis::Client, Vec<String>> {
    let not_a_url = || vec!["quotas.redis_url: not a Redis URL".to_owned()];
    let mut info = url.into_connection_info().map_err(|_| not_a_url())?;
    let mut problems = Vec::new();
    let mut credentials = info.redis_settings().clone();
    if let Some(user) = &settings.redis_username {
        credentials = credentials.set_username(user);
    }
    if let Some(file) = &settings.redis_password_file {
        match std::fs::read_to_string(file) {
            Ok(text) => match text.trim_end_matches(['\r', '\n']) {
                "" => problems.push(format!(
                    "quotas.redis_password_file: {} is empty",
                    file.display()
                )),
                password => credentials = credentials.set_password(password),
            },
            Err(e) => problems.push(format!(
                "quotas.redis_password_file: cannot read {}: {e}",
                file.display()
            )),
        }
    }
    info = info.set_redis_settings(credentials);
    let ca = match &settings.redis_ca_file {
        Some(file) => match crate::tls::certificate_bundle(file) {
            Ok(pem) => Some(pem),
            Err(e) => {
                problems.push(format!("quotas.redis_ca_file: {e}"));
                None
            }
        },
        None => None,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let client = match ca {
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            },
        )
        .map_err(|_| {
            vec!["quotas.redis_ca_file: not a usable PEM CA bundle for a rediss:// URL".to_owned()]
        })?,
        None => redis::Client::open(info).map_err(|_| not_a_url())?,
    };
    Ok(client)
}

impl RedisQuota {
    /// Opens a connection manager and loads the script, both within the
    /// timeout. An unreachable Redis is no error: it opens an outage and the
    /// quota starts on its fallback.
    pub(crate) async fn connect(
        client: redis::Client,
        settings: &QuotaSettings,
        calendar: Calendar,
        clock: Arc<dyn Clock>,
        fallback: LocalQuota,
    ) -> Result<Self, RedisError> {
        let timeout = Duration::from_millis(settings.redis_timeout_ms.max(1));
        let mut connection = lazy_manager(&client, timeout)?;
        let quota = Self {
            limits: LimitTable::new(settings),
            calendar,
            clock,
            client,
            timeout,
            connection: Mutex::new(connection.clone()),
            script: Script::new(SCRIPT),
            outage: Outage::default(),
            on_failure: settings.on_redis_failure,
            fallback,
        };
        let loaded = tokio::time::timeout(timeout, quota.script.load_async(&mut connection)).await;
        let now_us = quota.clock.wall().as_microsecond();
        match loaded {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => quota.outage.failed(now_us, &error),
            Err(_) => quota
                .outage
                .failed(now_us, &CallError::Timeout(timeout.as_millis())),
        }
        Ok(quota)
    }

    async fn decide(&self, agent: Agent<'_>) -> Decision {
        let now = self.clock.wall();
        let now_us = now.as_microsecond();
        match self.outage.route(now_us) {
            Route::Redis => {
                let connection = self
                    .connection
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                match self.run(connection, agent, now).await {
                    Ok(decision) => decision,
                    Err(error) => {
                        self.outage.failed(now_us, &error);
                        self.fall_back(agent, now)
                    }
                }
            }
            Route::Probe => {
                // A fresh manager: the old one may still be in its reconnection
                // back-off, or have given up.
                let probe = match lazy_manager(&self.client, self.timeout) {
                    Ok(connection) => self
                        .run(connection.clone(), agent, now)
                        .await
                        .map(|d| (d, connection)),
                    Err(error) => Err(CallError::Redis(error)),
                };
                match probe {
                    Ok((decision, connection)) => {
                        *self
                            .connection
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = connection;
                        self.outage.recovered();
                        decision
                    }
                    Err(error) => {
                        self.outage.failed(now_us, &error);
                        self.fall_back(agent, now)
                    }
                }
            }
            Route::Fallback => self.fall_back(agent, now),
        }
    }

    fn fall_back(&self, agent: Agent<'_>, now: Timestamp) -> Decision {
        self.outage.count_fallback();
        match self.on_failure {
            RedisFailure::Local => self.fallback.decide_at(agent, now),
            RedisFailure::Refuse => Decision::Unavailable,
        }
    }

    async fn run(
        &self,
        mut connection: ConnectionManager,
        agent: Agent<'_>,
        now: Timestamp,
    ) -> Result<Decision, CallError> {
        let post_limits = self.limits.for_post(agent.post);
        let agent_limits = self.limits.for_agent(agent.post, agent.sub);
        let day = self.calendar.day_of(now);
        let date = day.key();
        let secs_to_midnight = day.secs_to_end(now);
        let now_us = u64::try_from(now.as_microsecond()).unwrap_or(0);

        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(burst_key(agent.post))
            .key(day_key(agent.post, &date))
            .key(agent_burst_key(agent.post, agent.sub))
            .key(agent_day_key(agent.post, agent.sub, &date))
            .arg(now_us)
            .arg(secs_to_midnight + DAY_KEY_MARGIN_SECS)
            .arg(meter::interval_us(post_limits))
            .arg(post_limits.burst)
            .arg(post_limits.per_day)
            .arg(meter::interval_us(agent_limits))
            .arg(agent_limits.burst)
            .arg(agent_limits.per_day);
        let reply: Vec<i64> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| CallError::Timeout(self.timeout.as_millis()))??;

        let &[outcome, post_used, post_tat, agent_used, agent_tat] = reply.as_slice() else {
            return Err(CallError::Reply);
        };
        let count = |n: i64| u64::try_from(n).map_err(|_| CallError::Reply);
        let post = Meter::new(post_limits, count(post_tat)?, count(post_used)?);
        let sub = Meter::new(agent_limits, count(agent_tat)?, count(agent_used)?);
        let refused = match outcome {
            0 => None,
            1 => Some(Window::Burst),
            2 => Some(Window::Daily),
            3 => Some(Window::AgentBurst),
            4 => Some(Window::AgentDaily),
            _ => return Err(CallError::Reply),
        };
        if self.on_failure == RedisFailure::Local {
            self.fallback
                .observe(agent, now, post.used_today, sub.used_today);
        }
        Ok(meter::decision(
            now_us,
            &post,
            &sub,
            refused,
            secs_to_midnight,
        ))
    }
}

impl Quota for RedisQuota {
    fn acquire<'a>(
        &'a self,
        agent: Agent<'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Decision> + Send + 'a>> {
        Box::pin(self.decide(agent))
    }

    fn is_registered(&self, post: &PostCode) -> bool {
        self.limits.is_registered(post)
    }
}

pub(crate) fn burst_key(post: &PostCode) -> String {
    format!("caf-broker:quota:{{{post}}}:burst")
}

pub(crate) fn day_key(post: &PostCode, date: &str) -> String {
    format!("caf-broker:quota:{{{post}}}:day:{date}")
}

pub(crate) fn agent_burst_key(post: &PostCode, sub: &Subject) -> String {
    format!("caf-broker:quota:{{{post}}}:agent-burst:{sub}")
}

pub(crate) fn agent_day_key(post: &PostCode, sub: &Subject, date: &str) -> String {
    format!("caf-broker:quota:{{{post}}}:agent-day:{date}:{sub}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_carry_the_post_as_a_cluster_hash_tag() {
        let post = PostCode::parse("TN-TUNIS").unwrap();
        assert_eq!(burst_key(&post), "caf-broker:quota:{TN-TUNIS}:burst");
        assert_eq!(
            day_key(&post, "2026-03-29"),
            "caf-broker:quota:{TN-TUNIS}:day:2026-03-29"
        );
        let sub = Subject::parse("agent-42").unwrap();
        assert_eq!(
            agent_burst_key(&post, &sub),
            "caf-broker:quota:{TN-TUNIS}:agent-burst:agent-42"
        );
        assert_eq!(
            agent_day_key(&post, &sub, "2026-03-29"),
            "caf-broker:quota:{TN-TUNIS}:agent-day:2026-03-29:agent-42"
        );
    }

    #[test]
    fn a_sub_that_looks_like_a_key_stays_in_its_own_agent_keys() {
        let post = PostCode::parse("TN-TUNIS").unwrap();
        let tricky = Subject::parse("{MA-RABAT}:burst").unwrap();
        // The hash tag is the first {...}: the post's, whatever the sub holds.
        let key = agent_burst_key(&post, &tricky);
        assert!(key.starts_with("caf-broker:quota:{TN-TUNIS}:agent-burst:"));
        assert_ne!(key, burst_key(&PostCode::parse("MA-RABAT").unwrap()));
    }
}
