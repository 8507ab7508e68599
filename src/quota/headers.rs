//! The quota state of an answer and its `RateLimit-Policy` / `RateLimit` header fields.
//!
//! The form is the one of the IETF httpapi draft "RateLimit header fields for
//! HTTP" (draft-ietf-httpapi-ratelimit-headers-11, May 2026), where both fields
//! are Structured Field Lists (RFC 9651) of items named by a String. Four
//! policies apply to every data request: the post's `burst` and `daily`, and
//! the agent's own `agent-burst` and `agent-daily`.
//!
//! - `RateLimit-Policy: "burst";q=20;w=4, "daily";q=2000;w=86400,
//!   "agent-burst";q=10;w=5, "agent-daily";q=500;w=86400`: `q` is the quota
//!   and `w` its window in seconds. For a burst, `w` is the time an empty burst
//!   takes to refill (`burst / per_second`, rounded up). For a daily quota, `w`
//!   is the nominal day; on daylight-saving days the real day lasts 23 or 25
//!   hours and the `t` of the `RateLimit` field gives the exact time left.
//! - `RateLimit: "burst";r=19;t=1, "daily";r=1999;t=43200, "agent-burst";r=9;t=1,
//!   "agent-daily";r=499;t=43200`: `r` is the quota still available and `t`
//!   the effective window, the seconds during which the client can use no more
//!   than `r`. For a burst that is the time until the next request's worth of
//!   capacity comes back (0 when the burst is full); for a daily quota it is
//!   the time to the next local midnight. Both are rounded up, so
//!   `Retry-After` is never earlier than the end of `t`, as the draft asks.
//!
//! The older drafts' `RateLimit-Limit` / `-Remaining` / `-Reset` fields and the
//! token-named policies of drafts 08 to 10 are not emitted. No `pk` (partition
//! key) is sent: the partitions are the caller's own post and own identity.

use super::day::NOMINAL_DAY_SECS;
use super::settings::Limits;

/// Name of the field carrying [`QuotaState::policy_header`].
pub const POLICY_HEADER: &str = "RateLimit-Policy";
/// Name of the field carrying [`QuotaState::ratelimit_header`].
pub const RATELIMIT_HEADER: &str = "RateLimit";

/// The quotas of a request's post and agent as they stand after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaState {
    /// The post's limits, shared by all its agents: `burst` and `daily`.
    pub post: Allowance,
    /// The agent's own limits: `agent-burst` and `agent-daily`.
    pub agent: Allowance,
    /// Seconds to the next local midnight, when both daily quotas reset.
    pub daily_reset_secs: u64,
}

/// One party's (a post's or an agent's) burst and daily quota after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// `burst` of the limits.
    pub burst_limit: u32,
    /// Seconds an empty burst takes to refill.
    pub burst_window_secs: u64,
    /// Requests that could be made right now.
    pub burst_remaining: u32,
    /// Seconds until one more request's worth comes back; 0 when the burst is full.
    pub burst_reset_secs: u64,
    /// `per_day` of the limits.
    pub daily_limit: u64,
    /// Requests left today.
    pub daily_remaining: u64,
}

impl Allowance {
    /// `daily_cap` is what may be granted today at most: `per_day`, or less
    /// while the Redis backend decides without Redis.
    pub(crate) fn new(limits: Limits, burst: BurstView, used_today: u64, daily_cap: u64) -> Self {
        Self {
            burst_limit: limits.burst,
            burst_window_secs: limits.burst_window_secs(),
            burst_remaining: burst.remaining,
            burst_reset_secs: burst.reset_secs,
            daily_limit: limits.per_day,
            daily_remaining: daily_cap.min(limits.per_day).saturating_sub(used_today),
        }
    }
}

impl QuotaState {
    /// The value of `RateLimit-Policy`, e.g.
    /// `"burst";q=20;w=4, "daily";q=2000;w=86400, "agent-burst";q=10;w=5, "agent-daily";q=500;w=86400`.
    pub fn policy_header(&self) -> String {
        let (post, agent) = (&self.post, &self.agent);
        let mut field = String::with_capacity(FIELD_CAPACITY);
        for (i, (name, quota, window)) in [
            ("burst", u64::from(post.burst_limit), post.burst_window_secs),
            ("daily", post.daily_limit, NOMINAL_DAY_SECS),
            (
                "agent-burst",
                u64::from(agent.burst_limit),
                agent.burst_window_secs,
            ),
            ("agent-daily", agent.daily_limit, NOMINAL_DAY_SECS),
        ]
        .into_iter()
        .enumerate()
        {
            item(&mut field, i, name, (";q=", quota), (";w=", window));
        }
        field
    }

    /// The value of `RateLimit`, e.g.
    /// `"burst";r=19;t=1, "daily";r=1999;t=43200, "agent-burst";r=9;t=1, "agent-daily";r=499;t=43200`.
    pub fn ratelimit_header(&self) -> String {
        let (post, agent, day) = (&self.post, &self.agent, self.daily_reset_secs);
        let mut field = String::with_capacity(FIELD_CAPACITY);
        for (i, (name, remaining, reset)) in [
            (
                "burst",
                u64::from(post.burst_remaining),
                post.burst_reset_secs,
            ),
            ("daily", post.daily_remaining, day),
            (
                "agent-burst",
                u64::from(agent.burst_remaining),
                agent.burst_reset_secs,
            ),
            ("agent-daily", agent.daily_remaining, day),
        ]
        .into_iter()
        .enumerate()
        {
            item(&mut field, i, name, (";r=", remaining), (";t=", reset));
        }
        field
    }
}

/// Room for the four items of a field with 20-digit numbers, so that
/// writing one never reallocates.
const FIELD_CAPACITY: usize = 4 * (2 + 2 + "agent-burst".len() + 2 * (3 + 20));

/// Appends `"name";a=1;b=2` (keys given as `;a=`) to a field, after a `, ` unless it is the first
/// item: the fields are written once per answer, without `format!`.
fn item(field: &mut String, index: usize, name: &str, first: (&str, u64), second: (&str, u64)) {
    if index > 0 {
        field.push_str(", ");
    }
    field.push('"');
    field.push_str(name);
    field.push('"');
    for (key, value) in [first, second] {
        field.push_str(key);
        push_decimal(field, value);
    }
}

/// `value` in decimal, as `Display` writes it.
fn push_decimal(field: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // ASCII digits only: always UTF-8.
    if let Some(Ok(text)) = digits.get(at..).map(std::str::from_utf8) {
        field.push_str(text);
    }
}

/// The burst part of an [`Allowance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BurstView {
    pub(crate) remaining: u32,
    pub(crate) reset_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn one_request_each() -> QuotaState {
        let burst = |remaining| BurstView {
            remaining,
            reset_secs: 1,
        };
        QuotaState {
            post: Allowance::new(POST, burst(19), 1, POST.per_day),
            agent: Allowance::new(AGENT, burst(9), 1, AGENT.per_day),
            daily_reset_secs: 43_200,
        }
    }

    #[test]
    fn the_policy_field_lists_the_post_and_agent_policies() {
        assert_eq!(
            one_request_each().policy_header(),
            r#""burst";q=20;w=4, "daily";q=2000;w=86400, "agent-burst";q=10;w=5, "agent-daily";q=500;w=86400"#
        );
    }

    #[test]
    fn the_ratelimit_field_gives_what_is_left_and_when_it_comes_back() {
        assert_eq!(
            one_request_each().ratelimit_header(),
            r#""burst";r=19;t=1, "daily";r=1999;t=43200, "agent-burst";r=9;t=1, "agent-daily";r=499;t=43200"#
        );
    }

    #[test]
    fn numbers_of_any_size_are_written_as_display_writes_them() {
        for value in [0, 7, 10, 99, 1_000, 43_200, u64::from(u32::MAX), u64::MAX] {
            let mut field = String::new();
            push_decimal(&mut field, value);
            assert_eq!(field, value.to_string());
        }
        let state = QuotaState {
            daily_reset_secs: u64::MAX,
            ..one_request_each()
        };
        let field = state.ratelimit_header();
        assert!(field.len() <= FIELD_CAPACITY, "{field}");
        assert!(field.ends_with(&format!(";t={}", u64::MAX)), "{field}");
    }

    #[test]
    fn daily_remaining_never_goes_below_zero_nor_above_the_cap() {
        let limits = Limits {
            per_second: 1,
            burst: 1,
            per_day: 3,
        };
        let empty = BurstView {
            remaining: 0,
            reset_secs: 1,
        };
        assert_eq!(Allowance::new(limits, empty, 7, 3).daily_remaining, 0);
        // A cap under per_day (the Redis fallback's share) bounds what is left.
        assert_eq!(Allowance::new(limits, empty, 0, 2).daily_remaining, 2);
        assert_eq!(Allowance::new(limits, empty, 0, 9).daily_remaining, 3);
    }
}
