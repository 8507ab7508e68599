//! The shared backend: every replica decides through one Lua script in Redis.
//!
//! One decision is one round trip (`EVALSHA`, loaded again by redis-rs after a
//! Redis restart) running [`SCRIPT`] atomically on two keys of the post:
//!
//! - `caf-broker:quota:{POST}:burst`: the GCRA theoretical arrival time, in
//!   microseconds; it expires once the burst is full again (plus a second),
//!   and a missing key means a full burst;
//! - `caf-broker:quota:{POST}:day:YYYY-MM-DD`: the post's count for that local
//!   day; it expires an hour after that day's midnight.
//!
//! The braces make the post a Redis Cluster hash tag: both keys of a post land
//! in one slot, as a script touching two keys requires there.
//!
//! The caller passes "now" (from the injected clock), the limits and the
//! day's key and time to midnight, so that the script holds no time zone
//! logic and tests drive a real Redis with a fake clock. The replicas' clocks
//! should agree (NTP); a skew of a few milliseconds shifts the burst refill by
//! as much.
//!
//! Every call is bounded by `quotas.redis_timeout_ms`; failures go to the
//! fallback ([`super::fallback`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use crate::domain::PostCode;

use super::clock::Clock;
use super::day::Calendar;
use super::fallback::{Outage, Route};
use super::headers::QuotaState;
use super::local::LocalQuota;
use super::settings::{LimitTable, QuotaSettings, RedisFailure};
use super::{Decision, Quota, Window, gcra};

const MICROS_PER_SEC: u64 = 1_000_000;

/// How long a day's counter outlives the day's midnight, so that a replica
/// whose clock lags a little still finds it.
const DAY_KEY_MARGIN_SECS: u64 = 3600;

/// The decision, atomically: daily counter first, then GCRA, then the count.
///
/// KEYS: burst key, day key. ARGV: now (µs), emission interval (µs), burst,
/// per_day, day key TTL (s). Returns `{outcome, used_today, tat}` with outcome
/// 0 = allowed, 1 = refused by the burst, 2 = refused for the day.
/// Times are written with `%.0f`: Lua numbers are doubles, exact up to 2^53 µs
/// (year 2255), and must not be printed in exponent form.
pub(crate) const SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local per_day = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local used = tonumber(redis.call('GET', KEYS[2])) or 0
if used >= per_day then
  return {2, used, string.format('%.0f', tat)}
end
if tat - interval * (burst - 1) > now then
  return {1, used, string.format('%.0f', tat)}
end
tat = tat + interval
local ttl_ms = math.ceil((tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', ttl_ms))
used = redis.call('INCR', KEYS[2])
if used == 1 then redis.call('EXPIRE', KEYS[2], ARGV[5]) end
return {0, used, string.format('%.0f', tat)}
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

impl RedisQuota {
    /// Opens a connection manager and loads the script, both within the
    /// timeout. Only a malformed URL is an error: an unreachable Redis opens
    /// an outage and the quota starts on its fallback.
    pub(crate) async fn connect(
        url: &str,
        settings: &QuotaSettings,
        calendar: Calendar,
        clock: Arc<dyn Clock>,
        fallback: LocalQuota,
    ) -> Result<Self, RedisError> {
        let client = redis::Client::open(url)?;
        let timeout = Duration::from_millis(settings.redis_timeout_ms.max(1));
        let mut connection = manager(&client, timeout)?;
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
        let now_us = quota.clock.now().as_microsecond();
        match loaded {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => quota.outage.failed(now_us, &error),
            Err(_) => quota
                .outage
                .failed(now_us, &CallError::Timeout(timeout.as_millis())),
        }
        Ok(quota)
    }

    async fn decide(&self, post: &PostCode) -> Decision {
        let now = self.clock.now();
        let now_us = now.as_microsecond();
        match self.outage.route(now_us) {
            Route::Redis => {
                let connection = self
                    .connection
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                match self.run(connection, post, now).await {
                    Ok(decision) => decision,
                    Err(error) => {
                        self.outage.failed(now_us, &error);
                        self.fall_back(post, now)
                    }
                }
            }
            Route::Probe => {
                // A fresh manager: the old one may still be in its reconnection
                // back-off, or have given up.
                let probe = match manager(&self.client, self.timeout) {
                    Ok(connection) => self
                        .run(connection.clone(), post, now)
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
                        self.fall_back(post, now)
                    }
                }
            }
            Route::Fallback => self.fall_back(post, now),
        }
    }

    fn fall_back(&self, post: &PostCode, now: Timestamp) -> Decision {
        self.outage.count_fallback();
        match self.on_failure {
            RedisFailure::Local => self.fallback.decide_at(post, now),
            RedisFailure::Refuse => Decision::Unavailable,
        }
    }

    async fn run(
        &self,
        mut connection: ConnectionManager,
        post: &PostCode,
        now: Timestamp,
    ) -> Result<Decision, CallError> {
        let limits = self.limits.for_post(post);
        let day = self.calendar.day_of(now);
        let secs_to_midnight = day.secs_to_end(now);
        let now_us = u64::try_from(now.as_microsecond()).unwrap_or(0);
        let interval_us = (MICROS_PER_SEC / u64::from(limits.per_second.max(1))).max(1);

        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(burst_key(post))
            .key(day_key(post, &day.key()))
            .arg(now_us)
            .arg(interval_us)
            .arg(limits.burst)
            .arg(limits.per_day)
            .arg(secs_to_midnight + DAY_KEY_MARGIN_SECS);
        let reply: Vec<i64> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| CallError::Timeout(self.timeout.as_millis()))??;

        let &[outcome, used, tat] = reply.as_slice() else {
            return Err(CallError::Reply);
        };
        let used = u64::try_from(used).map_err(|_| CallError::Reply)?;
        let tat = u64::try_from(tat).map_err(|_| CallError::Reply)?;
        let burst = gcra::view(now_us, tat, interval_us, limits.burst, MICROS_PER_SEC);
        let state = QuotaState::new(limits, burst, used, secs_to_midnight);
        match outcome {
            0 => Ok(Decision::Allowed(state)),
            1 => Ok(Decision::Refused {
                state,
                retry_after_secs: burst.reset_secs.max(1),
                exhausted: Window::Burst,
            }),
            2 => Ok(Decision::Refused {
                state,
                retry_after_secs: secs_to_midnight,
                exhausted: Window::Daily,
            }),
            _ => Err(CallError::Reply),
        }
    }
}

impl Quota for RedisQuota {
    fn acquire<'a>(
        &'a self,
        post: &'a PostCode,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Decision> + Send + 'a>> {
        Box::pin(self.decide(post))
    }
}

/// A connection manager that connects on first use, with connection and
/// response timeouts and few, quick retries: the outage logic, not the
/// manager, decides how long to wait for Redis.
fn manager(client: &redis::Client, timeout: Duration) -> Result<ConnectionManager, RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(100));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

pub(crate) fn burst_key(post: &PostCode) -> String {
    format!("caf-broker:quota:{{{post}}}:burst")
}

pub(crate) fn day_key(post: &PostCode, date: &str) -> String {
    format!("caf-broker:quota:{{{post}}}:day:{date}")
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
    }
}
