//! What the Redis backend does while Redis does not answer: notice the outage once, probe, recover.
//!
//! The first failed call opens an outage: it is logged once (`warn`), and from
//! then on decisions skip Redis (so a dead Redis does not add its timeout to
//! every request) and are taken by the fallback. Once every [`PROBE_INTERVAL_US`]
//! of the injected clock, a single request probes Redis on a fresh connection;
//! the first probe that succeeds closes the outage (logged once, `info`).
//! Every decision taken without Redis increments
//! `caf_broker_quota_redis_fallback_total`.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::telemetry;

/// How long decisions skip Redis after a failure before one of them probes it.
pub(crate) const PROBE_INTERVAL_US: i64 = 1_000_000;

/// Where a decision should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Redis is healthy: ask it.
    Redis,
    /// Redis is down and this request is the one that probes it.
    Probe,
    /// Redis is down: decide without it.
    Fallback,
}

/// The outage state shared by all requests of a process.
#[derive(Debug, Default)]
pub(crate) struct Outage {
    down: AtomicBool,
    /// Microseconds since the epoch (injected clock) after which to probe again.
    next_probe_us: AtomicI64,
}

impl Outage {
    pub(crate) fn route(&self, now_us: i64) -> Route {
        if !self.down.load(Ordering::Acquire) {
            return Route::Redis;
        }
        let due = self.next_probe_us.load(Ordering::Acquire);
        // Only the request that moves the probe time forward probes.
        let claimed = now_us >= due
            && self
                .next_probe_us
                .compare_exchange(
                    due,
                    now_us.saturating_add(PROBE_INTERVAL_US),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok();
        if claimed {
            Route::Probe
        } else {
            Route::Fallback
        }
    }

    /// A call to Redis failed: opens the outage if it was not open.
    pub(crate) fn failed(&self, now_us: i64, error: &dyn Display) {
        self.next_probe_us
            .store(now_us.saturating_add(PROBE_INTERVAL_US), Ordering::Release);
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                %error,
                "quota: Redis does not answer; deciding without it until it does"
            );
        }
    }

    /// A probe succeeded: closes the outage.
    pub(crate) fn recovered(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("quota: Redis answers again; quotas are shared again");
        }
    }

    /// Counts one decision taken without Redis.
    pub(crate) fn count_fallback(&self) {
        telemetry::record_quota_redis_fallback();
    }

    #[cfg(test)]
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use tracing::Level;
    use tracing_subscriber::layer::{Context, SubscriberExt};

    use crate::telemetry::TestRecorder;

    use super::*;

    #[derive(Default, Clone)]
    struct CountEvents {
        warn: Arc<AtomicUsize>,
        info: Arc<AtomicUsize>,
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountEvents {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            match *event.metadata().level() {
                Level::WARN => self.warn.fetch_add(1, Ordering::SeqCst),
                Level::INFO => self.info.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
        }
    }

    #[test]
    fn a_healthy_redis_is_always_asked() {
        let outage = Outage::default();
        assert_eq!(outage.route(0), Route::Redis);
        assert_eq!(outage.route(i64::MAX), Route::Redis);
    }

    #[test]
    fn an_outage_is_logged_once_and_its_end_once() {
        let events = CountEvents::default();
        let subscriber = tracing_subscriber::registry().with(events.clone());
        tracing::subscriber::with_default(subscriber, || {
            let outage = Outage::default();
            for i in 0..50 {
                outage.failed(i, &"connection refused");
            }
            assert!(outage.is_down());
            outage.recovered();
            outage.recovered();
            assert!(!outage.is_down());
        });
        assert_eq!(events.warn.load(Ordering::SeqCst), 1);
        assert_eq!(events.info.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn during_an_outage_one_request_per_interval_probes() {
        let outage = Outage::default();
        outage.failed(0, &"timeout");
        assert_eq!(outage.route(1), Route::Fallback);
        assert_eq!(outage.route(PROBE_INTERVAL_US - 1), Route::Fallback);
        assert_eq!(outage.route(PROBE_INTERVAL_US), Route::Probe);
        assert_eq!(outage.route(PROBE_INTERVAL_US), Route::Fallback);
        outage.failed(PROBE_INTERVAL_US, &"timeout");
        assert_eq!(outage.route(2 * PROBE_INTERVAL_US - 1), Route::Fallback);
        assert_eq!(outage.route(2 * PROBE_INTERVAL_US), Route::Probe);
        outage.recovered();
        assert_eq!(outage.route(2 * PROBE_INTERVAL_US), Route::Redis);
    }

    #[test]
    fn each_fallback_decision_is_counted() {
        let recorder = TestRecorder::default();
        recorder.record(|| {
            let outage = Outage::default();
            for _ in 0..3 {
                outage.count_fallback();
            }
        });
        assert_eq!(
            recorder.counter("caf_broker_quota_redis_fallback_total{}"),
            3
        );
    }
}
