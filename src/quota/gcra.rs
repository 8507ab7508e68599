//! What a GCRA state means for the client: requests left and time to the next one.
//!
//! Both backends keep the burst limiter as a "theoretical arrival time" (TAT):
//! with an emission interval `T = 1 / per_second` and a capacity of `burst`, a
//! request at `now` conforms when `max(tat, now) + T <= now + burst * T`, and
//! then moves the TAT to `max(tat, now) + T`. Governor does this locally and
//! the Lua script in [`super::redis`] does it in Redis; this module only reads
//! a TAT, in any time unit, as long as all arguments share it.

use super::headers::BurstView;

/// Requests available at `now` and time until one more comes back (0 when the
/// burst is full), in the unit of the arguments.
pub(crate) fn remaining_and_wait(now: u64, tat: u64, interval: u64, burst: u32) -> (u32, u64) {
    let interval = interval.max(1);
    let capacity = interval.saturating_mul(u64::from(burst));
    // How much of the bucket is free, measured in time.
    let room = now.saturating_add(capacity).saturating_sub(tat);
    let remaining = (room / interval).min(u64::from(burst));
    let wait = if remaining >= u64::from(burst) {
        0
    } else {
        (remaining + 1)
            .saturating_mul(interval)
            .saturating_sub(room)
    };
    (u32::try_from(remaining).unwrap_or(burst), wait)
}

/// The TAT that a limiter holds when it reports `remaining` requests left and
/// the next one `wait` away; the inverse of [`remaining_and_wait`].
pub(crate) fn tat_from(now: u64, remaining: u32, wait: u64, interval: u64, burst: u32) -> u64 {
    let after_next = u64::from(burst.saturating_sub(remaining).saturating_sub(1));
    now.saturating_add(wait)
        .saturating_add(after_next.saturating_mul(interval))
}

/// The burst half of the headers, with times in whole seconds rounded up.
pub(crate) fn view(now: u64, tat: u64, interval: u64, burst: u32, units_per_sec: u64) -> BurstView {
    let (remaining, wait) = remaining_and_wait(now, tat, interval, burst);
    BurstView {
        remaining,
        reset_secs: wait.div_ceil(units_per_sec.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 200; // 5 per second, in milliseconds

    #[test]
    fn an_idle_post_has_its_whole_burst() {
        assert_eq!(remaining_and_wait(1_000, 0, T, 20), (20, 0));
        assert_eq!(remaining_and_wait(1_000, 900, T, 20), (20, 0));
    }

    #[test]
    fn one_request_leaves_one_less_and_comes_back_after_one_interval() {
        let now = 1_000;
        let tat = now + T;
        assert_eq!(remaining_and_wait(now, tat, T, 20), (19, T));
        assert_eq!(remaining_and_wait(now + 50, tat, T, 20), (19, T - 50));
        assert_eq!(remaining_and_wait(now + T, tat, T, 20), (20, 0));
    }

    #[test]
    fn an_empty_burst_waits_for_the_next_interval() {
        let now = 1_000;
        let tat = now + 20 * T;
        assert_eq!(remaining_and_wait(now, tat, T, 20), (0, T));
    }

    #[test]
    fn tat_from_inverts_remaining_and_wait() {
        for (now, tat) in [(1_000, 1_200), (1_000, 5_000), (1_030, 2_000), (0, 4_000)] {
            let (remaining, wait) = remaining_and_wait(now, tat, T, 20);
            assert_eq!(
                tat_from(now, remaining, wait, T, 20),
                tat,
                "now={now} tat={tat}"
            );
        }
    }

    #[test]
    fn the_view_rounds_the_wait_up_to_whole_seconds() {
        let v = view(1_000, 1_200, T, 20, 1_000);
        assert_eq!((v.remaining, v.reset_secs), (19, 1));
    }
}
