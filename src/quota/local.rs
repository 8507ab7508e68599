//! The in-process backend: a burst (GCRA) and a daily count per post and per agent, under one lock.
//!
//! One [`LocalQuota`] serves the whole process (every actix worker shares the
//! same `Arc`), and the Redis backend keeps one as its fallback.
//!
//! A decision takes the lock, reads the post's and the agent's meters, asks
//! [`meter::refusal`] which limit refuses (if any) and counts the request in
//! both meters only when none does. Concurrent requests of a post or an agent
//! are thus counted exactly, and a request refused by one limit consumes
//! nothing of the others.
//!
//! As the Redis fallback, a meter's daily allowance is what remains of the
//! day's shared count, last seen from Redis ([`LocalQuota::observe`]), divided
//! among `quotas.replicas_hint` replicas: during an outage, the replicas
//! together grant no more than what Redis had left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use jiff::civil::Date;

use crate::domain::{Agent, PostCode, Subject};

use super::Decision;
use super::day::{Calendar, Day};
use super::meter::{self, Meter};
use super::settings::{LimitTable, Limits};
use crate::clock::Clock;

/// Idle posts and agents are forgotten every this many decisions (see [`Inner::prune`]).
const PRUNE_EVERY: u32 = 4096;

pub(crate) struct LocalQuota {
    limits: LimitTable,
    calendar: Calendar,
    clock: Arc<dyn Clock>,
    /// 1 for the local backend; `quotas.replicas_hint` for the Redis fallback.
    share: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    today: Option<Day>,
    posts: HashMap<PostCode, PostEntry>,
    decisions_since_prune: u32,
}

struct PostEntry {
    counter: Counter,
    agents: HashMap<Subject, Counter>,
}

/// The state of one post or agent.
struct Counter {
    limits: Limits,
    /// The burst's TAT, in microseconds since the epoch.
    tat_us: u64,
    day: Date,
    /// Requests this process counted on `day`.
    used_today: u64,
    /// The day's shared count last seen from Redis (0 for the local backend).
    seen_shared: u64,
}

impl LocalQuota {
    /// The local backend: every limit whole, for this process alone.
    pub(crate) fn new(limits: LimitTable, calendar: Calendar, clock: Arc<dyn Clock>) -> Self {
        Self::sharing(limits, calendar, clock, 1)
    }

    /// The Redis fallback of one of `replicas` replicas.
    pub(crate) fn sharing(
        limits: LimitTable,
        calendar: Calendar,
        clock: Arc<dyn Clock>,
        replicas: u32,
    ) -> Self {
        Self {
            limits,
            calendar,
            clock,
            share: u64::from(replicas.max(1)),
            inner: Mutex::new(Inner {
                today: None,
                posts: HashMap::new(),
                decisions_since_prune: 0,
            }),
        }
    }

    pub(crate) fn is_registered(&self, post: &PostCode) -> bool {
        self.limits.is_registered(post)
    }

    /// Decides at the injected clock's now.
    pub(crate) fn decide(&self, agent: Agent<'_>) -> Decision {
        self.decide_at(agent, self.clock.wall())
    }

    /// Decides at a given instant (the Redis backend falls back with its own now).
    pub(crate) fn decide_at(&self, agent: Agent<'_>, now: Timestamp) -> Decision {
        let now_us = epoch_micros(now);
        // Nothing below panics, so a poisoned lock still holds consistent counters.
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let day = inner.day_of(&self.calendar, now);
        inner.tick(now_us, day.date);
        let share = self.share;
        let (post_meter, agent_meter, refused) =
            self.with_counters(&mut inner, agent, day.date, |post, sub| {
                let mut post_meter = post.meter(share);
                let mut agent_meter = sub.meter(share);
                let refused = meter::refusal(now_us, &post_meter, &agent_meter);
                if refused.is_none() {
                    post_meter.count(now_us);
                    agent_meter.count(now_us);
                    post.store(&post_meter);
                    sub.store(&agent_meter);
                }
                (post_meter, agent_meter, refused)
            });
        drop(inner);
        meter::decision(
            now_us,
            &post_meter,
            &agent_meter,
            refused,
            day.secs_to_end(now),
        )
    }

    /// Remembers the day's shared counts of a post and an agent, as Redis
    /// reported them at `now`: the fallback's allowance is what they leave.
    pub(crate) fn observe(
        &self,
        agent: Agent<'_>,
        now: Timestamp,
        post_used: u64,
        agent_used: u64,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let day = inner.day_of(&self.calendar, now);
        // Redis answers every request while it is up: the fallback's maps must
        // be pruned then too.
        inner.tick(epoch_micros(now), day.date);
        self.with_counters(&mut inner, agent, day.date, |post, sub| {
            post.seen_shared = post_used;
            sub.seen_shared = agent_used;
        });
    }

    /// Runs `f` on the post's and the agent's counters, created on first use
    /// and moved to `today`.
    fn with_counters<R>(
        &self,
        inner: &mut Inner,
        agent: Agent<'_>,
        today: Date,
        f: impl FnOnce(&mut Counter, &mut Counter) -> R,
    ) -> R {
        let entry = match inner.posts.get_mut(agent.post) {
            Some(entry) => entry,
            None => inner
                .posts
                .entry(agent.post.clone())
                .or_insert_with(|| PostEntry {
                    counter: Counter::new(self.limits.for_post(agent.post), today),
                    agents: HashMap::new(),
                }),
        };
        let sub = match entry.agents.get_mut(agent.sub) {
            Some(counter) => counter,
            None => entry.agents.entry(agent.sub.clone()).or_insert_with(|| {
                Counter::new(self.limits.for_agent(agent.post, agent.sub), today)
            }),
        };
        sub.roll_to(today);
        entry.counter.roll_to(today);
        f(&mut entry.counter, sub)
    }

    /// How many posts and agents are currently tracked (for tests of pruning).
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let agents = inner.posts.values().map(|p| p.agents.len()).sum();
        (inner.posts.len(), agents)
    }
}

impl Inner {
    fn day_of(&mut self, calendar: &Calendar, now: Timestamp) -> Day {
        match self.today {
            Some(day) if day.contains(now) => day,
            _ => {
                let day = calendar.day_of(now);
                self.today = Some(day);
                day
            }
        }
    }

    /// Counts one use of the maps, and prunes them every [`PRUNE_EVERY`] uses.
    fn tick(&mut self, now_us: u64, today: Date) {
        self.decisions_since_prune += 1;
        if self.decisions_since_prune >= PRUNE_EVERY {
            self.decisions_since_prune = 0;
            self.prune(now_us, today);
        }
    }

    /// Forgets agents and posts whose burst is full again and whose count is
    /// from a past day: dropping them changes no future decision, and keeps the
    /// maps as small as the set of recently active posts and agents.
    fn prune(&mut self, now_us: u64, today: Date) {
        self.posts.retain(|_, entry| {
            entry.agents.retain(|_, agent| agent.is_live(now_us, today));
            !entry.agents.is_empty() || entry.counter.is_live(now_us, today)
        });
    }
}

impl Counter {
    fn new(limits: Limits, today: Date) -> Self {
        Self {
            limits,
            tat_us: 0,
            day: today,
            used_today: 0,
            seen_shared: 0,
        }
    }

    fn roll_to(&mut self, today: Date) {
        if self.day != today {
            self.day = today;
            self.used_today = 0;
            self.seen_shared = 0;
        }
    }

    fn is_live(&self, now_us: u64, today: Date) -> bool {
        self.day == today || self.tat_us > now_us
    }

    /// The meter of this counter; its daily cap is this replica's share of
    /// what the shared count leaves (all of `per_day` for the local backend).
    fn meter(&self, share: u64) -> Meter {
        let mut meter = Meter::new(self.limits, self.tat_us, self.used_today);
        meter.daily_cap = self.limits.per_day.saturating_sub(self.seen_shared) / share;
        meter
    }

    fn store(&mut self, meter: &Meter) {
        self.tat_us = meter.tat_us;
        self.used_today = meter.used_today;
    }
}

fn epoch_micros(t: Timestamp) -> u64 {
    u64::try_from(t.as_microsecond()).unwrap_or(0)
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
