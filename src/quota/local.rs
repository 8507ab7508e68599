//! The in-process backend: governor's GCRA per post and a daily counter per post and local day.
//!
//! One [`LocalQuota`] serves the whole process (every actix worker shares the
//! same `Arc`), and the Redis backend keeps one as its fallback.
//!
//! Order of a decision, all under one lock so that concurrent requests of a
//! post are counted exactly:
//! 1. the daily counter is read: spent, the request is refused (`Daily`) and
//!    the burst limiter is not touched;
//! 2. governor checks the burst: refused (`Burst`), the daily counter is not
//!    touched;
//! 3. allowed, the daily counter is incremented.
//!
//! Governor decides; its state is not readable, so after each decision the
//! post's TAT is rebuilt from what governor reports (requests left, and the
//! wait of a refused `check_n(left + 1)`, which changes nothing) and kept to
//! answer the burst half of the headers when a request is refused for the day.
//! Governor reads its time from [`DecisionClock`], set once per decision under
//! the lock from the injected clock, so the refused `check_n` sees the very
//! instant of the decision it describes.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use governor::clock::Clock as GovernorClock;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota as GovernorQuota, RateLimiter};
use jiff::Timestamp;
use jiff::civil::Date;

use crate::domain::PostCode;

use super::clock::Clock;
use super::day::{Calendar, Day};
use super::gcra;
use super::headers::QuotaState;
use super::settings::{LimitTable, Limits};
use super::{Decision, Window};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Idle posts are forgotten every this many decisions (see [`Inner::prune`]).
const PRUNE_EVERY: u32 = 4096;

type PostLimiter = RateLimiter<NotKeyed, InMemoryState, DecisionClock, StateInformationMiddleware>;

/// Governor's view of time: the instant of the decision under way, in
/// nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Default)]
struct DecisionClock(Arc<AtomicU64>);

impl GovernorClock for DecisionClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::new(self.0.load(Ordering::Acquire))
    }
}

pub(crate) struct LocalQuota {
    limits: LimitTable,
    calendar: Calendar,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

struct Inner {
    decision_clock: DecisionClock,
    today: Option<Day>,
    posts: HashMap<PostCode, PostEntry>,
    decisions_since_prune: u32,
}

struct PostEntry {
    limits: Limits,
    limiter: PostLimiter,
    /// The post's TAT as governor holds it, in nanoseconds since the epoch.
    tat: u64,
    day: Date,
    used_today: u64,
}

impl LocalQuota {
    pub(crate) fn new(limits: LimitTable, calendar: Calendar, clock: Arc<dyn Clock>) -> Self {
        Self {
            limits,
            calendar,
            clock,
            inner: Mutex::new(Inner {
                decision_clock: DecisionClock::default(),
                today: None,
                posts: HashMap::new(),
                decisions_since_prune: 0,
            }),
        }
    }

    /// Decides at the injected clock's now.
    pub(crate) fn decide(&self, post: &PostCode) -> Decision {
        self.decide_at(post, self.clock.now())
    }

    /// Decides at a given instant (the Redis backend falls back with its own now).
    pub(crate) fn decide_at(&self, post: &PostCode, now: Timestamp) -> Decision {
        let now_ns = epoch_nanos(now);
        // Nothing below panics, so a poisoned lock still holds consistent counters.
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.decision_clock.0.store(now_ns, Ordering::Release);
        let day = match inner.today {
            Some(day) if day.contains(now) => day,
            _ => {
                let day = self.calendar.day_of(now);
                inner.today = Some(day);
                day
            }
        };
        inner.decisions_since_prune += 1;
        if inner.decisions_since_prune >= PRUNE_EVERY {
            inner.decisions_since_prune = 0;
            inner.prune(now_ns, day.date);
        }
        let clock = inner.decision_clock.clone();
        let entry = match inner.posts.get_mut(post) {
            Some(entry) => entry,
            None => inner
                .posts
                .entry(post.clone())
                .or_insert_with(|| PostEntry::new(self.limits.for_post(post), clock, day.date)),
        };
        entry.decide(now_ns, &day, now)
    }

    /// How many posts are currently tracked (for tests of pruning).
    #[cfg(test)]
    fn tracked_posts(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .posts
            .len()
    }
}

impl Inner {
    /// Forgets posts whose burst is full again and whose count is from a past
    /// day: dropping them changes no future decision, and keeps the map as
    /// small as the set of recently active posts.
    fn prune(&mut self, now_ns: u64, today: Date) {
        self.posts
            .retain(|_, entry| entry.day == today || entry.tat > now_ns);
    }
}

impl PostEntry {
    fn new(limits: Limits, clock: DecisionClock, today: Date) -> Self {
        let quota = GovernorQuota::per_second(non_zero(limits.per_second))
            .allow_burst(non_zero(limits.burst));
        Self {
            limits,
            limiter: RateLimiter::direct_with_clock(quota, clock)
                .with_middleware::<StateInformationMiddleware>(),
            tat: 0,
            day: today,
            used_today: 0,
        }
    }

    fn interval_ns(&self) -> u64 {
        NANOS_PER_SEC / u64::from(self.limits.per_second.max(1))
    }

    fn decide(&mut self, now_ns: u64, day: &Day, now: Timestamp) -> Decision {
        if self.day != day.date {
            self.day = day.date;
            self.used_today = 0;
        }
        let limits = self.limits;
        let interval = self.interval_ns();
        let daily_reset = day.secs_to_end(now);

        if self.used_today >= limits.per_day {
            let burst = gcra::view(now_ns, self.tat, interval, limits.burst, NANOS_PER_SEC);
            return Decision::Refused {
                state: QuotaState::new(limits, burst, self.used_today, daily_reset),
                retry_after_secs: daily_reset,
                exhausted: Window::Daily,
            };
        }

        match self.limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let wait = self.wait_for_one_more(remaining, now_ns);
                self.tat = gcra::tat_from(now_ns, remaining, wait, interval, limits.burst);
                self.used_today += 1;
                let burst = gcra::view(now_ns, self.tat, interval, limits.burst, NANOS_PER_SEC);
                Decision::Allowed(QuotaState::new(limits, burst, self.used_today, daily_reset))
            }
            Err(not_until) => {
                let wait = nanos_u64(not_until.wait_time_from(Nanos::new(now_ns)));
                self.tat = gcra::tat_from(now_ns, 0, wait, interval, limits.burst);
                let burst = gcra::view(now_ns, self.tat, interval, limits.burst, NANOS_PER_SEC);
                Decision::Refused {
                    state: QuotaState::new(limits, burst, self.used_today, daily_reset),
                    retry_after_secs: burst.reset_secs.max(1),
                    exhausted: Window::Burst,
                }
            }
        }
    }

    /// Nanoseconds until `remaining + 1` requests would conform, asked of
    /// governor with `check_n`, which is refused at the instant of the decision
    /// (only `remaining` conform) and so changes nothing.
    fn wait_for_one_more(&self, remaining: u32, now_ns: u64) -> u64 {
        let Some(n) = remaining.checked_add(1).and_then(NonZeroU32::new) else {
            return 0;
        };
        match self.limiter.check_n(n) {
            Ok(Err(not_until)) => nanos_u64(not_until.wait_time_from(Nanos::new(now_ns))),
            // More than the burst: it is full, nothing to wait for. `Ok(Ok(_))`
            // cannot happen at a frozen instant (see above).
            Ok(Ok(_)) | Err(_) => 0,
        }
    }
}

fn non_zero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

fn epoch_nanos(t: Timestamp) -> u64 {
    u64::try_from(t.as_nanosecond()).unwrap_or(0)
}

fn nanos_u64(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
