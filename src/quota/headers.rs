//! The quota state of an answer and its `RateLimit-Policy` / `RateLimit` header fields.
//!
//! The form is the one of the IETF httpapi draft "RateLimit header fields for
//! HTTP" (draft-ietf-httpapi-ratelimit-headers-11, May 2026), where both fields
//! are Structured Field Lists (RFC 9651) of items named by a String:
//!
//! - `RateLimit-Policy: "burst";q=20;w=4, "daily";q=2000;w=86400`: `q` is the
//!   quota and `w` its window in seconds. For `burst`, `w` is the time an empty
//!   burst takes to refill (`burst / per_second`, rounded up). For `daily`, `w`
//!   is the nominal day; on daylight-saving days the real day lasts 23 or 25
//!   hours and the `t` of the `RateLimit` field gives the exact time left.
//! - `RateLimit: "burst";r=19;t=1, "daily";r=1999;t=43200`: `r` is the quota
//!   still available and `t` the effective window, the seconds during which
//!   the client can use no more than `r`. For `burst` that is the time until
//!   the next request's worth of capacity comes back (0 when the burst is
//!   full); for `daily` it is the time to the next local midnight. Both are
//!   rounded up, so `Retry-After` is never earlier than the end of `t`, as the
//!   draft asks.
//!
//! The older drafts' `RateLimit-Limit` / `-Remaining` / `-Reset` fields and the
//! token-named policies of drafts 08 to 10 are not emitted. No `pk` (partition
//! key) is sent: the partition is the caller's own post.

use super::day::NOMINAL_DAY_SECS;
use super::settings::Limits;

/// Name of the field carrying [`QuotaState::policy_header`].
pub const POLICY_HEADER: &str = "RateLimit-Policy";
/// Name of the field carrying [`QuotaState::ratelimit_header`].
pub const RATELIMIT_HEADER: &str = "RateLimit";

/// A post's quotas as they stand after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaState {
    /// `burst` of the post's limits.
    pub burst_limit: u32,
    /// Seconds an empty burst takes to refill.
    pub burst_window_secs: u64,
    /// Requests that could be made right now.
    pub burst_remaining: u32,
    /// Seconds until one more request's worth comes back; 0 when the burst is full.
    pub burst_reset_secs: u64,
    /// `per_day` of the post's limits.
    pub daily_limit: u64,
    /// Requests left today.
    pub daily_remaining: u64,
    /// Seconds to the next local midnight.
    pub daily_reset_secs: u64,
}

impl QuotaState {
    pub(crate) fn new(
        limits: Limits,
        burst: BurstView,
        used_today: u64,
        daily_reset_secs: u64,
    ) -> Self {
        Self {
            burst_limit: limits.burst,
            burst_window_secs: limits.burst_window_secs(),
            burst_remaining: burst.remaining,
            burst_reset_secs: burst.reset_secs,
            daily_limit: limits.per_day,
            daily_remaining: limits.per_day.saturating_sub(used_today),
            daily_reset_secs,
        }
    }

    /// The value of `RateLimit-Policy`, e.g. `"burst";q=20;w=4, "daily";q=2000;w=86400`.
    pub fn policy_header(&self) -> String {
        format!(
            "\"burst\";q={};w={}, \"daily\";q={};w={NOMINAL_DAY_SECS}",
            self.burst_limit, self.burst_window_secs, self.daily_limit
        )
    }

    /// The value of `RateLimit`, e.g. `"burst";r=19;t=1, "daily";r=1999;t=43200`.
    pub fn ratelimit_header(&self) -> String {
        format!(
            "\"burst\";r={};t={}, \"daily\";r={};t={}",
            self.burst_remaining,
            self.burst_reset_secs,
            self.daily_remaining,
            self.daily_reset_secs
        )
    }
}

/// The burst part of a [`QuotaState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BurstView {
    pub(crate) remaining: u32,
    pub(crate) reset_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> QuotaState {
        QuotaState::new(
            Limits {
                per_second: 5,
                burst: 20,
                per_day: 2000,
            },
            BurstView {
                remaining: 19,
                reset_secs: 1,
            },
            1,
            43_200,
        )
    }

    #[test]
    fn the_policy_field_lists_a_burst_and_a_daily_policy() {
        assert_eq!(
            state().policy_header(),
            r#""burst";q=20;w=4, "daily";q=2000;w=86400"#
        );
    }

    #[test]
    fn the_ratelimit_field_gives_what_is_left_and_when_it_comes_back() {
        assert_eq!(
            state().ratelimit_header(),
            r#""burst";r=19;t=1, "daily";r=1999;t=43200"#
        );
    }

    #[test]
    fn daily_remaining_never_goes_below_zero() {
        let s = QuotaState::new(
            Limits {
                per_second: 1,
                burst: 1,
                per_day: 3,
            },
            BurstView {
                remaining: 0,
                reset_secs: 1,
            },
            7,
            10,
        );
        assert_eq!(s.daily_remaining, 0);
        assert_eq!(s.ratelimit_header(), r#""burst";r=0;t=1, "daily";r=0;t=10"#);
    }
}
