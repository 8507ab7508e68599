//! The broker's one source of time, injected into every stage: a [`SystemClock`]
//! in production, a [`ManualClock`] in tests, so that one object freezes the
//! whole broker and a test moves time instead of sleeping.
//!
//! A clock gives two readings. [`Clock::monotonic`] only measures durations
//! (the cache's TTL, the circuit breaker's open period): it never goes back.
//! [`Clock::wall`] is the civil time (quota days in the configured time zone,
//! GCRA instants shared through Redis, token expiry, detection windows, audit
//! record times): it follows the system clock, steps included.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

pub trait Clock: Send + Sync {
    /// Monotonic time, for durations only.
    fn monotonic(&self) -> Instant;
    /// Wall-clock time, for days, expiry dates and records.
    fn wall(&self) -> Timestamp;
}

/// The system's clocks, for production.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn monotonic(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that stands still until a test moves it: refills, TTLs, midnight
/// resets, daylight-saving days and sliding windows are tested without sleeping.
#[derive(Debug)]
pub struct ManualClock {
    /// The monotonic reading when the clock was made; `elapsed` is added to it.
    origin: Instant,
    now: Mutex<Now>,
}

#[derive(Debug, Clone, Copy)]
struct Now {
    wall: Timestamp,
    elapsed: Duration,
}

impl ManualClock {
    /// A clock standing at `start` (wall time).
    pub fn new(start: Timestamp) -> Self {
        Self {
            origin: Instant::now(),
            now: Mutex::new(Now {
                wall: start,
                elapsed: Duration::ZERO,
            }),
        }
    }

    /// Moves both readings forward together. A step past the end of jiff's
    /// time range stops the wall clock at that end instead of panicking.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        let step = SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX);
        now.wall = now.wall.checked_add(step).unwrap_or(Timestamp::MAX);
        now.elapsed = now.elapsed.saturating_add(by);
    }

    /// Puts the wall clock at an instant, forwards or backwards, as a system
    /// clock stepped by NTP. Monotonic time moves by the same step forwards
    /// and stands still backwards: it never goes back.
    pub fn set(&self, to: Timestamp) {
        let mut now = self.lock();
        if let Ok(step) = Duration::try_from(to.duration_since(now.wall)) {
            now.elapsed = now.elapsed.saturating_add(step);
        }
        now.wall = to;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Now> {
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> Instant {
        let elapsed = self.lock().elapsed;
        self.origin.checked_add(elapsed).unwrap_or(self.origin)
    }

    fn wall(&self) -> Timestamp {
        self.lock().wall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = "2026-01-15T10:00:00Z";

    #[test]
    fn a_manual_clock_stands_still_until_advanced_and_then_moves_both_readings() {
        let clock = ManualClock::new(START.parse().unwrap());
        let (wall, monotonic) = (clock.wall(), clock.monotonic());
        assert_eq!(clock.wall(), wall);
        assert_eq!(clock.monotonic(), monotonic);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.wall(), "2026-01-15T10:00:01.5Z".parse().unwrap());
        assert_eq!(clock.monotonic() - monotonic, Duration::from_millis(1500));
    }

    #[test]
    fn setting_the_wall_clock_back_never_moves_monotonic_time_back() {
        let clock = ManualClock::new(START.parse().unwrap());
        let monotonic = clock.monotonic();
        clock.set("2026-01-15T11:00:00Z".parse().unwrap());
        assert_eq!(clock.monotonic() - monotonic, Duration::from_secs(3600));
        clock.set("2026-01-15T09:00:00Z".parse().unwrap());
        assert_eq!(clock.wall(), "2026-01-15T09:00:00Z".parse().unwrap());
        assert_eq!(clock.monotonic() - monotonic, Duration::from_secs(3600));
    }
}
