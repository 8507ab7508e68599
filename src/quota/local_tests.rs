//! Tests of the local backend, driven by a manual clock.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::quota::clock::ManualClock;
use crate::quota::settings::{Backend, QuotaSettings, RedisFailure};

const DEFAULT: Limits = Limits {
    per_second: 5,
    burst: 20,
    per_day: 2000,
};

fn post(code: &str) -> PostCode {
    PostCode::parse(code).unwrap()
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn settings(default: Limits, posts: &[(&str, Limits)]) -> QuotaSettings {
    QuotaSettings {
        backend: Backend::Local,
        redis_url: None,
        time_zone: "Europe/Paris".to_owned(),
        on_redis_failure: RedisFailure::Local,
        redis_timeout_ms: 200,
        default,
        posts: posts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect::<BTreeMap<_, _>>(),
        agent_error_budget: Default::default(),
    }
}

fn local(default: Limits, posts: &[(&str, Limits)], start: &str) -> (LocalQuota, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(at(start)));
    let s = settings(default, posts);
    let quota = LocalQuota::new(
        LimitTable::new(&s),
        Calendar::new(&s.time_zone).unwrap(),
        clock.clone(),
    );
    (quota, clock)
}

fn allowed(d: &Decision) -> bool {
    matches!(d, Decision::Allowed(_))
}

fn refusal(d: Decision) -> (QuotaState, u64, Window) {
    match d {
        Decision::Refused {
            state,
            retry_after_secs,
            exhausted,
        } => (state, retry_after_secs, exhausted),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn state(d: Decision) -> QuotaState {
    match d {
        Decision::Allowed(state) => state,
        other => panic!("expected an allowed decision, got {other:?}"),
    }
}

#[test]
fn a_full_burst_is_allowed_then_the_next_request_waits_for_one_interval() {
    let (quota, _) = local(DEFAULT, &[], "2026-01-15T10:00:00Z");
    let p = post("TN-TUNIS");
    for i in 0..20 {
        let s = state(quota.decide(&p));
        assert_eq!(s.burst_remaining, 19 - i);
    }
    let (s, retry, window) = refusal(quota.decide(&p));
    assert_eq!(window, Window::Burst);
    // One token comes back every 200 ms: the client may retry after 1 s.
    assert_eq!(retry, 1);
    assert_eq!(s.burst_remaining, 0);
    assert_eq!(s.burst_reset_secs, 1);
    assert_eq!(s.daily_remaining, 2000 - 20);
}

#[test]
fn retry_after_of_a_slow_burst_is_the_time_to_the_next_token_rounded_up() {
    let slow = Limits {
        per_second: 1,
        burst: 3,
        per_day: 100,
    };
    let (quota, clock) = local(slow, &[], "2026-01-15T10:00:00Z");
    let p = post("TN-TUNIS");
    for _ in 0..3 {
        assert!(allowed(&quota.decide(&p)));
    }
    clock.advance(Duration::from_millis(300));
    let (_, retry, window) = refusal(quota.decide(&p));
    assert_eq!((retry, window), (1, Window::Burst));
    assert_eq!(slow.burst_window_secs(), 3);
}

#[test]
fn the_burst_refills_as_the_clock_advances() {
    let (quota, clock) = local(DEFAULT, &[], "2026-01-15T10:00:00Z");
    let p = post("TN-TUNIS");
    for _ in 0..20 {
        assert!(allowed(&quota.decide(&p)));
    }
    assert!(!allowed(&quota.decide(&p)));
    clock.advance(Duration::from_millis(200));
    assert!(allowed(&quota.decide(&p)));
    assert!(!allowed(&quota.decide(&p)));
    // Four seconds refill the whole burst of 20 at 5 per second, no more.
    clock.advance(Duration::from_secs(60));
    for _ in 0..20 {
        assert!(allowed(&quota.decide(&p)));
    }
    assert!(!allowed(&quota.decide(&p)));
}

#[test]
fn a_request_refused_by_the_burst_does_not_count_for_the_day() {
    let (quota, _) = local(DEFAULT, &[], "2026-01-15T10:00:00Z");
    let p = post("TN-TUNIS");
    for _ in 0..20 {
        quota.decide(&p);
    }
    for _ in 0..50 {
        let (s, _, _) = refusal(quota.decide(&p));
        assert_eq!(s.daily_remaining, 1980);
    }
}

#[test]
fn a_spent_daily_quota_refuses_until_local_midnight_without_touching_the_burst() {
    let limits = Limits {
        per_second: 5,
        burst: 20,
        per_day: 3,
    };
    // 10:00 in Paris (UTC+1): 14 hours to midnight.
    let (quota, clock) = local(limits, &[], "2026-01-15T09:00:00Z");
    let p = post("TN-TUNIS");
    for _ in 0..3 {
        assert!(allowed(&quota.decide(&p)));
    }
    let (s, retry, window) = refusal(quota.decide(&p));
    assert_eq!(window, Window::Daily);
    assert_eq!(retry, 14 * 3600);
    assert_eq!(s.daily_remaining, 0);
    assert_eq!(s.daily_reset_secs, 14 * 3600);
    assert_eq!(s.burst_remaining, 17);
    // Refusals for the day leave the burst alone: it refills completely.
    clock.advance(Duration::from_secs(10));
    for _ in 0..30 {
        let (s, _, window) = refusal(quota.decide(&p));
        assert_eq!(window, Window::Daily);
        assert_eq!(s.burst_remaining, 20);
        assert_eq!(s.burst_reset_secs, 0);
    }
}

#[test]
fn the_daily_quota_resets_at_local_midnight() {
    let limits = Limits {
        per_second: 5,
        burst: 20,
        per_day: 2,
    };
    let (quota, clock) = local(limits, &[], "2026-01-15T22:59:00Z"); // 23:59 in Paris
    let p = post("TN-TUNIS");
    assert!(allowed(&quota.decide(&p)));
    assert!(allowed(&quota.decide(&p)));
    let (_, retry, _) = refusal(quota.decide(&p));
    assert_eq!(retry, 60);
    clock.advance(Duration::from_secs(59));
    let (_, retry, _) = refusal(quota.decide(&p));
    assert_eq!(retry, 1);
    clock.advance(Duration::from_secs(1));
    let s = state(quota.decide(&p));
    assert_eq!(s.daily_remaining, 1);
    assert_eq!(s.daily_reset_secs, 86_400);
}

#[test]
fn the_spring_forward_day_lasts_twenty_three_hours() {
    let limits = Limits {
        per_second: 5,
        burst: 20,
        per_day: 1,
    };
    // 2026-03-29 00:00 in Paris, CET.
    let (quota, clock) = local(limits, &[], "2026-03-28T23:00:00Z");
    let p = post("FR-PARIS");
    let s = state(quota.decide(&p));
    assert_eq!(s.daily_reset_secs, 23 * 3600);
    let (_, retry, window) = refusal(quota.decide(&p));
    assert_eq!((retry, window), (23 * 3600, Window::Daily));
    // 23:30 CEST, after the clocks went forward: half an hour left.
    clock.set(at("2026-03-29T21:30:00Z"));
    let (_, retry, _) = refusal(quota.decide(&p));
    assert_eq!(retry, 1800);
    // Midnight, 23 hours after the previous one.
    clock.set(at("2026-03-29T22:00:00Z"));
    assert!(allowed(&quota.decide(&p)));
}

#[test]
fn the_fall_back_day_lasts_twenty_five_hours() {
    let limits = Limits {
        per_second: 5,
        burst: 20,
        per_day: 1,
    };
    // 2026-10-25 00:00 in Paris, CEST.
    let (quota, clock) = local(limits, &[], "2026-10-24T22:00:00Z");
    let p = post("FR-PARIS");
    assert!(allowed(&quota.decide(&p)));
    let (_, retry, _) = refusal(quota.decide(&p));
    assert_eq!(retry, 25 * 3600);
    // 23:30 CET, after the clocks went back: half an hour left, not 90 minutes.
    clock.set(at("2026-10-25T22:30:00Z"));
    let (_, retry, _) = refusal(quota.decide(&p));
    assert_eq!(retry, 1800);
    // 24 hours after the previous midnight it is still the same local day.
    clock.set(at("2026-10-25T22:00:00Z"));
    assert!(!allowed(&quota.decide(&p)));
    clock.set(at("2026-10-25T23:00:00Z"));
    assert!(allowed(&quota.decide(&p)));
}

#[test]
fn a_post_with_an_override_gets_its_own_limits() {
    let big = Limits {
        per_second: 10,
        burst: 40,
        per_day: 5000,
    };
    let (quota, _) = local(DEFAULT, &[("TN-TUNIS", big)], "2026-01-15T10:00:00Z");
    let tunis = post("TN-TUNIS");
    let rabat = post("MA-RABAT");
    let s = state(quota.decide(&tunis));
    assert_eq!(
        s.policy_header(),
        r#""burst";q=40;w=4, "daily";q=5000;w=86400"#
    );
    let s = state(quota.decide(&rabat));
    assert_eq!(
        s.policy_header(),
        r#""burst";q=20;w=4, "daily";q=2000;w=86400"#
    );
    let tunis_allowed = (0..100).filter(|_| allowed(&quota.decide(&tunis))).count();
    assert_eq!(tunis_allowed, 39);
}

#[test]
fn posts_do_not_share_their_quotas() {
    let (quota, _) = local(DEFAULT, &[], "2026-01-15T10:00:00Z");
    let tunis = post("TN-TUNIS");
    let rabat = post("MA-RABAT");
    for _ in 0..20 {
        assert!(allowed(&quota.decide(&tunis)));
    }
    assert!(!allowed(&quota.decide(&tunis)));
    for _ in 0..20 {
        assert!(allowed(&quota.decide(&rabat)));
    }
    assert!(!allowed(&quota.decide(&rabat)));
}

#[test]
fn an_allowed_answer_carries_both_policies_and_what_is_left() {
    // 12:00 in Paris: 12 hours to midnight.
    let (quota, _) = local(DEFAULT, &[], "2026-01-15T11:00:00Z");
    let s = state(quota.decide(&post("TN-TUNIS")));
    assert_eq!(
        s.policy_header(),
        r#""burst";q=20;w=4, "daily";q=2000;w=86400"#
    );
    assert_eq!(
        s.ratelimit_header(),
        r#""burst";r=19;t=1, "daily";r=1999;t=43200"#
    );
}

#[test]
fn concurrent_requests_on_a_frozen_clock_get_exactly_the_burst() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let (quota, _) = local(DEFAULT, &[], "2026-01-15T10:00:00Z");
    let quota: Arc<dyn super::super::Quota> = Arc::new(quota);
    let allowed_count = runtime.block_on(async {
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let quota = quota.clone();
                tokio::spawn(async move { quota.acquire(&post("TN-TUNIS")).await })
            })
            .collect();
        let mut n = 0;
        for task in tasks {
            if allowed(&task.await.unwrap()) {
                n += 1;
            }
        }
        n
    });
    assert_eq!(allowed_count, 20);
}

#[test]
fn idle_posts_are_forgotten_but_todays_counts_are_kept() {
    let limits = Limits {
        per_day: 1_000_000,
        ..DEFAULT
    };
    let (quota, clock) = local(limits, &[], "2026-01-15T10:00:00Z");
    let busy = post("TN-TUNIS");
    quota.decide(&busy);
    // A post counted yesterday whose burst is full again may be dropped.
    clock.set(at("2026-01-16T10:00:00Z"));
    for _ in 0..PRUNE_EVERY {
        quota.decide(&post("MA-RABAT"));
        clock.advance(Duration::from_millis(200));
    }
    assert_eq!(quota.tracked_posts(), 1);
    // The post counted today is kept, so its count survives the pruning.
    let rabat = post("MA-RABAT");
    let s = state(quota.decide(&rabat));
    assert_eq!(s.daily_remaining, 1_000_000 - u64::from(PRUNE_EVERY) - 1);
}
