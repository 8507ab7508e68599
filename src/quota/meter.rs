//! The rule both backends follow: which of the four limits refuses a request, and what the answer says.
//!
//! A request is measured against its post's meter and its agent's meter, each
//! a burst (GCRA) and a daily count. The daily quotas are checked first (the
//! post's, then the agent's): one spent refuses the request and the bursts are
//! left alone. Then the bursts: if either has no room, the request is refused
//! and named after the one that frees up last (the post's on a tie), so that
//! `Retry-After` is when the request would pass. Only a request that every
//! limit allows is counted, by all four: a request refused by one limit
//! consumes nothing of the others. The local backend applies [`refusal`]
//! under its lock; the Redis script runs the same rule in Lua.

use super::gcra;
use super::headers::{Allowance, QuotaState};
use super::settings::Limits;
use super::{Decision, Window};

pub(crate) const MICROS_PER_SEC: u64 = 1_000_000;

/// One party's (a post's or an agent's) counters at the instant of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meter {
    pub(crate) limits: Limits,
    /// The burst's theoretical arrival time, in microseconds since the epoch.
    pub(crate) tat_us: u64,
    /// Requests counted today.
    pub(crate) used_today: u64,
    /// Requests that may be counted today at most: `per_day`, or less while
    /// the Redis backend decides without Redis.
    pub(crate) daily_cap: u64,
}

impl Meter {
    /// A meter for `limits` whose whole daily quota is open.
    pub(crate) fn new(limits: Limits, tat_us: u64, used_today: u64) -> Self {
        Self {
            limits,
            tat_us,
            used_today,
            daily_cap: limits.per_day,
        }
    }

    /// The emission interval, in microseconds.
    pub(crate) fn interval_us(&self) -> u64 {
        interval_us(self.limits)
    }

    fn day_spent(&self) -> bool {
        self.used_today >= self.daily_cap.min(self.limits.per_day)
    }

    fn burst_wait(&self, now_us: u64) -> u64 {
        gcra::wait_to_conform(now_us, self.tat_us, self.interval_us(), self.limits.burst)
    }

    /// Counts one allowed request.
    pub(crate) fn count(&mut self, now_us: u64) {
        self.tat_us = gcra::after_one(now_us, self.tat_us, self.interval_us());
        self.used_today += 1;
    }

    fn allowance(&self, now_us: u64) -> Allowance {
        let burst = gcra::view(
            now_us,
            self.tat_us,
            self.interval_us(),
            self.limits.burst,
            MICROS_PER_SEC,
        );
        Allowance::new(self.limits, burst, self.used_today, self.daily_cap)
    }
}

/// The GCRA emission interval of `limits`, in microseconds (at least 1).
pub(crate) fn interval_us(limits: Limits) -> u64 {
    (MICROS_PER_SEC / u64::from(limits.per_second.max(1))).max(1)
}

/// The limit that refuses a request at `now_us`, or `None` if all allow it.
pub(crate) fn refusal(now_us: u64, post: &Meter, agent: &Meter) -> Option<Window> {
    if post.day_spent() {
        return Some(Window::Daily);
    }
    if agent.day_spent() {
        return Some(Window::AgentDaily);
    }
    let (post_wait, agent_wait) = (post.burst_wait(now_us), agent.burst_wait(now_us));
    if post_wait == 0 && agent_wait == 0 {
        None
    } else if post_wait >= agent_wait {
        Some(Window::Burst)
    } else {
        Some(Window::AgentBurst)
    }
}

/// The decision for meters as they stand after it (counted if allowed,
/// untouched if refused), with `refused` the limit that refused, if any.
pub(crate) fn decision(
    now_us: u64,
    post: &Meter,
    agent: &Meter,
    refused: Option<Window>,
    secs_to_midnight: u64,
) -> Decision {
    let state = QuotaState {
        post: post.allowance(now_us),
        agent: agent.allowance(now_us),
        daily_reset_secs: secs_to_midnight,
    };
    let Some(exhausted) = refused else {
        return Decision::Allowed(state);
    };
    let retry_after_secs = match exhausted {
        Window::Daily | Window::AgentDaily => secs_to_midnight,
        // The later of the bursts with no room: the request passes then.
        Window::Burst | Window::AgentBurst => [state.post, state.agent]
            .iter()
            .filter(|a| a.burst_remaining == 0)
            .map(|a| a.burst_reset_secs)
            .max()
            .unwrap_or(0)
            .max(1),
    };
    Decision::Refused {
        state,
        retry_after_secs,
        exhausted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000 * MICROS_PER_SEC;
    const POST: Limits = Limits {
        per_second: 5,
        burst: 20,
        per_day: 2000,
    };
    const AGENT: Limits = Limits {
        per_second: 2,
        burst: 10,
        per_day: 500,
    };

    fn spent_burst(limits: Limits) -> Meter {
        let mut meter = Meter::new(limits, 0, 0);
        for _ in 0..limits.burst {
            meter.count(NOW);
        }
        meter
    }

    #[test]
    fn fresh_meters_allow_a_request() {
        let (post, agent) = (Meter::new(POST, 0, 0), Meter::new(AGENT, 0, 0));
        assert_eq!(refusal(NOW, &post, &agent), None);
    }

    #[test]
    fn the_post_day_is_named_before_the_agent_day_and_both_before_the_bursts() {
        let post_spent = Meter::new(POST, 0, 2000);
        let agent_spent = Meter::new(AGENT, 0, 500);
        let post_burst_spent = spent_burst(POST);
        assert_eq!(refusal(NOW, &post_spent, &agent_spent), Some(Window::Daily));
        assert_eq!(
            refusal(NOW, &post_burst_spent, &agent_spent),
            Some(Window::AgentDaily)
        );
        assert_eq!(
            refusal(NOW, &post_burst_spent, &Meter::new(AGENT, 0, 0)),
            Some(Window::Burst)
        );
    }

    #[test]
    fn of_two_spent_bursts_the_one_that_frees_up_last_is_named_and_sets_retry_after() {
        let post = spent_burst(POST); // one back in 200 ms
        let agent = spent_burst(Limits {
            per_second: 1,
            burst: 1,
            per_day: 500,
        }); // one back in 1 s
        assert_eq!(refusal(NOW, &post, &agent), Some(Window::AgentBurst));
        let later = NOW + 300_000;
        assert_eq!(refusal(later, &post, &agent), Some(Window::AgentBurst));
        assert_eq!(refusal(NOW + MICROS_PER_SEC, &post, &agent), None);
        let Decision::Refused {
            retry_after_secs, ..
        } = decision(NOW, &post, &agent, Some(Window::AgentBurst), 3600)
        else {
            panic!("a refusal");
        };
        assert_eq!(retry_after_secs, 1);
    }

    #[test]
    fn a_daily_refusal_retries_at_midnight() {
        let post = Meter::new(POST, 0, 0);
        let agent = Meter::new(AGENT, 0, 500);
        let d = decision(NOW, &post, &agent, refusal(NOW, &post, &agent), 3600);
        let Decision::Refused {
            state,
            retry_after_secs,
            exhausted,
        } = d
        else {
            panic!("a refusal, got {d:?}");
        };
        assert_eq!((retry_after_secs, exhausted), (3600, Window::AgentDaily));
        assert_eq!(state.agent.daily_remaining, 0);
        assert_eq!(state.post.daily_remaining, 2000);
    }

    #[test]
    fn a_lower_daily_cap_spends_the_day_earlier() {
        let mut agent = Meter::new(AGENT, 0, 100);
        agent.daily_cap = 100;
        assert_eq!(
            refusal(NOW, &Meter::new(POST, 0, 0), &agent),
            Some(Window::AgentDaily)
        );
    }
}
