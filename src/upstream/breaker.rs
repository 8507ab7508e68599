//! The circuit breaker of the HTTP connector: after consecutive failed lookups
//! the CAF is spared for a while, then a single probe tests whether it is back.
//!
//! Time comes from the injected [`Clock`], so the open period is tested by
//! moving a manual clock rather than by sleeping.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::UpstreamHealth;
use crate::clock::Clock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Requests flow; `failures` consecutive lookups have failed so far.
    Closed { failures: u32 },
    /// Requests are refused until `until`; the first one after it is the probe.
    Open { until: Instant },
    /// The probe is in flight; everything else is refused until it settles.
    Probing,
}

pub(super) struct Breaker {
    threshold: u32,
    open_for: Duration,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

/// The breaker refused a call: the CAF is spared for about `retry_after_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refused {
    pub retry_after_secs: u64,
}

/// The right to make one lookup. Report how it went with [`Pass::succeeded`] or
/// [`Pass::failed`]; a probe dropped unsettled (its caller went away) reopens the
/// circuit with no wait, so that the next caller probes instead.
pub(super) struct Pass<'a> {
    breaker: &'a Breaker,
    probe: bool,
    settled: bool,
}

impl Breaker {
    pub(super) fn new(threshold: u32, open_for: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            clock,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value, always whole: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a call through, or refuses it while the circuit is open or a probe is out.
    pub(super) fn admit(&self) -> Result<Pass<'_>, Refused> {
        let now = self.clock.monotonic();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(Pass {
                breaker: self,
                probe: false,
                settled: false,
            }),
            State::Open { until } if now >= until => {
                *state = State::Probing;
                tracing::info!("CAF circuit half-open: probing with one request");
                Ok(Pass {
                    breaker: self,
                    probe: true,
                    settled: false,
                })
            }
            State::Open { until } => Err(Refused {
                retry_after_secs: ceil_secs(until.saturating_duration_since(now)),
            }),
            State::Probing => Err(Refused {
                retry_after_secs: 1,
            }),
        }
    }

    /// What the breaker says now, without changing anything.
    pub(super) fn health(&self) -> UpstreamHealth {
        let now = self.clock.monotonic();
        match *self.lock() {
            State::Closed { .. } => UpstreamHealth::Ready,
            // Once the open period is over the next request probes: report it
            // ready, or a readiness check would keep away the traffic the probe needs.
            State::Open { until } if now >= until => UpstreamHealth::HalfOpen,
            State::Probing => UpstreamHealth::HalfOpen,
            State::Open { until } => UpstreamHealth::CircuitOpen {
                retry_after_secs: ceil_secs(until.saturating_duration_since(now)),
            },
        }
    }

    fn settle(&self, probe: bool, success: bool) {
        let now = self.clock.monotonic();
        let mut state = self.lock();
        match (*state, probe, success) {
            (State::Probing, true, true) => {
                *state = State::Closed { failures: 0 };
                tracing::info!("CAF circuit closed: the probe succeeded");
            }
            (State::Probing, true, false) => {
                *state = State::Open {
                    until: now + self.open_for,
                };
                tracing::warn!(
                    open_secs = self.open_for.as_secs(),
                    "CAF circuit re-opened: the probe failed"
                );
            }
            (State::Closed { .. }, false, true) => *state = State::Closed { failures: 0 },
            (State::Closed { failures }, false, false) => {
                let failures = failures.saturating_add(1);
                if failures >= self.threshold {
                    *state = State::Open {
                        until: now + self.open_for,
                    };
                    tracing::warn!(
                        failures,
                        open_secs = self.open_for.as_secs(),
                        "CAF circuit opened: the CAF is spared until the open period ends"
                    );
                } else {
                    *state = State::Closed { failures };
                }
            }
            // A call let through before the circuit changed reports late: the
            // state it would have updated is gone, so its outcome is ignored.
            _ => {}
        }
    }

    fn abandon_probe(&self) {
        let now = self.clock.monotonic();
        let mut state = self.lock();
        if *state == State::Probing {
            *state = State::Open { until: now };
        }
    }
}

impl Pass<'_> {
    pub(super) fn succeeded(mut self) {
        self.settled = true;
        self.breaker.settle(self.probe, true);
    }

    pub(super) fn failed(mut self) {
        self.settled = true;
        self.breaker.settle(self.probe, false);
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.breaker.abandon_probe();
        }
    }
}

/// Whole seconds, rounded up, at least one: a `Retry-After` of 0 would invite a storm.
fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// A clock that moves only when the test moves it.
    fn manual_clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(jiff::Timestamp::UNIX_EPOCH))
    }

    fn breaker(clock: &Arc<ManualClock>) -> Breaker {
        Breaker::new(3, Duration::from_secs(30), clock.clone())
    }

    fn fail(b: &Breaker, times: usize) {
        for _ in 0..times {
            b.admit().unwrap().failed();
        }
    }

    #[test]
    fn the_circuit_opens_after_the_configured_consecutive_failures() {
        let clock = manual_clock();
        let b = breaker(&clock);
        fail(&b, 2);
        assert_eq!(b.health(), UpstreamHealth::Ready);
        fail(&b, 1);
        assert_eq!(
            b.health(),
            UpstreamHealth::CircuitOpen {
                retry_after_secs: 30
            }
        );
        assert_eq!(
            b.admit().err(),
            Some(Refused {
                retry_after_secs: 30
            })
        );
    }

    #[test]
    fn a_success_resets_the_count_of_consecutive_failures() {
        let clock = manual_clock();
        let b = breaker(&clock);
        fail(&b, 2);
        b.admit().unwrap().succeeded();
        fail(&b, 2);
        assert_eq!(b.health(), UpstreamHealth::Ready);
    }

    #[test]
    fn the_retry_after_hint_counts_down_with_the_clock_and_never_says_zero() {
        let clock = manual_clock();
        let b = breaker(&clock);
        fail(&b, 3);
        clock.advance(Duration::from_millis(29_500));
        assert_eq!(b.admit().err().map(|r| r.retry_after_secs), Some(1));
        clock.advance(Duration::from_millis(400));
        assert_eq!(b.admit().err().map(|r| r.retry_after_secs), Some(1));
    }

    #[test]
    fn after_the_open_period_exactly_one_probe_goes_through() {
        let clock = manual_clock();
        let b = breaker(&clock);
        fail(&b, 3);
        clock.advance(Duration::from_secs(30));
        assert_eq!(b.health(), UpstreamHealth::HalfOpen);
        let probe = b.admit().unwrap();
        assert_eq!(
            b.admit().err(),
            Some(Refused {
                retry_after_secs: 1
            })
        );
        probe.succeeded();
        assert_eq!(b.health(), UpstreamHealth::Ready);
        assert!(b.admit().is_ok());
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_for_a_new_period() {
        let clock = manual_clock();
        let b = breaker(&clock);
        fail(&b, 3);
        clock.advance(Duration::from_secs(31));
        b.admit().unwrap().failed();
        assert_eq!(
            b.health(),
            UpstreamHealth::CircuitOpen {
                retry_after_secs: 30
            }
        );
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_caller_probe_at_once() {
        let clock = manual_clock();
        let b = breaker(&clock);
        fail(&b, 3);
        clock.advance(Duration::from_secs(30));
        drop(b.admit().unwrap());
        let probe = b.admit().unwrap();
        probe.succeeded();
        assert_eq!(b.health(), UpstreamHealth::Ready);
    }

    #[test]
    fn late_outcomes_of_calls_let_through_before_the_circuit_opened_are_ignored() {
        let clock = manual_clock();
        let b = breaker(&clock);
        let early = b.admit().unwrap();
        fail(&b, 3);
        early.succeeded();
        assert!(!b.health().is_ready());
    }
}
