//! The GCRA burst limiter: when a request conforms, what it moves, and what the client is told.
//!
//! Both backends keep a burst limiter as a "theoretical arrival time" (TAT):
//! with an emission interval `T = 1 / per_second` and a capacity of `burst`, a
//! request at `now` conforms when `max(tat, now) + T <= now + burst * T`, and
//! then moves the TAT to `max(tat, now) + T`. The local backend runs these
//! functions; the Lua script in [`super::redis`] runs the same arithmetic in
//! Redis. Any time unit works as long as all arguments share it (both
//! backends use microseconds since the Unix epoch).

use super::headers::BurstView;

/// How long until a request conforms (0: it conforms now).
pub(crate) fn wait_to_conform(now: u64, tat: u64, interval: u64, burst: u32) -> u64 {
    let tat = tat.max(now);
    let room_after_first = interval.saturating_mul(u64::from(burst.saturating_sub(1)));
    tat.saturating_sub(room_after_first).saturating_sub(now)
}

/// The TAT after one more conforming request.
pub(crate) fn after_one(now: u64, tat: u64, interval: u64) -> u64 {
    tat.max(now).saturating_add(interval)
}

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
    fn a_request_conforms_while_the_burst_has_room_and_waits_one_interval_after() {
        let now = 1_000;
        let mut tat = 0;
        for _ in 0..20 {
            assert_eq!(wait_to_conform(now, tat, T, 20), 0);
            tat = after_one(now, tat, T);
        }
        assert_eq!(tat, now + 20 * T);
        assert_eq!(wait_to_conform(now, tat, T, 20), T);
        assert_eq!(wait_to_conform(now + T, tat, T, 20), 0);
    }

    #[test]
    fn the_wait_to_conform_is_the_wait_for_one_more_request() {
        for (now, tat) in [(1_000, 1_200), (1_000, 5_000), (1_030, 5_000), (0, 4_000)] {
            let (remaining, wait) = remaining_and_wait(now, tat, T, 20);
            let expected = if remaining == 0 { wait } else { 0 };
            assert_eq!(
                wait_to_conform(now, tat, T, 20),
                expected,
                "now={now} tat={tat}"
            );
        }
    }

    #[test]
    fn a_burst_of_one_conforms_only_once_the_previous_interval_is_over() {
        let tat = after_one(1_000, 0, T);
        assert_eq!(wait_to_conform(1_000, tat, T, 1), T);
        assert_eq!(wait_to_conform(1_000 + T, tat, T, 1), 0);
    }

    #[test]
    fn the_view_rounds_the_wait_up_to_whole_seconds() {
        let v = view(1_000, 1_200, T, 20, 1_000);
        assert_eq!((v.remaining, v.reset_secs), (19, 1));
    }
}
