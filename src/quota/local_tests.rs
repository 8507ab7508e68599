//! Tests of the local backend, driven by a manual clock.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::quota::Window;
use crate::quota::headers::QuotaState;
use crate::quota::settings::{Backend, QuotaSettings, RedisFailure};

const DEFAULT: Limits = Limits {
    per_second: 5,
    burst: 20,
    per_day: 2000,
};

/// Agent limits that never bind, for the tests of the post's limits.
const ROOMY: Limits = Limits {
    per_second: 1000,
    burst: 1000,
    per_day: 1_000_000,
};

/// The shipped default of an agent.
const AGENT: Limits = Limits {
    per_second: 2,
    burst: 10,
    per_day: 500,
};

/// A post and a `sub`: an agent, owned.
struct Who(PostCode, Subject);

impl Who {
    fn agent(&self) -> Agent<'_> {
        Agent {
            post: &self.0,
            sub: &self.1,
        }
    }
}

/// Agent `agent-42` of the post `code`.
fn post(code: &str) -> Who {
    agent(code, "agent-42")
}

fn agent(code: &str, sub: &str) -> Who {
    Who(PostCode::parse(code).unwrap(), Subject::parse(sub).unwrap())
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn settings(default: Limits, posts: &[(&str, Limits)]) -> QuotaSettings {
    QuotaSettings {
        backend: Backend::Local,
        redis_url: None,
        redis_ca_file: None,
        redis_username: None,
        redis_password_file: None,
        replicas_hint: 1,
        time_zone: "Europe/Paris".to_owned(),
        on_redis_failure: RedisFailure::Local,
        redis_timeout_ms: 200,
        default,
        posts: table(posts),
        known_posts_only: false,
        agent_default: ROOMY,
        agents: BTreeMap::new(),
        agent_error_budget: Default::default(),
    }
}

fn table(entries: &[(&str, Limits)]) -> BTreeMap<String, Limits> {
    entries.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn local(default: Limits, posts: &[(&str, Limits)], start: &str) -> (LocalQuota, Arc<ManualClock>) {
    build_local(settings(default, posts), start, 1)
}

/// Post limits `post`, agent limits `agent` with the given per-agent overrides.
fn with_agents(
    post: Limits,
    agent: Limits,
    agents: &[(&str, Limits)],
    start: &str,
) -> (LocalQuota, Arc<ManualClock>) {
    let mut s = settings(post, &[]);
    s.agent_default = agent;
    s.agents = table(agents);
    build_local(s, start, 1)
}

fn build_local(s: QuotaSettings, start: &str, replicas: u32) -> (LocalQuota, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(at(start)));
    let quota = LocalQuota::sharing(
        LimitTable::new(&s),
        Calendar::new(&s.time_zone).unwrap(),
        clock.clone(),
        replicas,
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
        let s = state(quota.decide(p.agent()));
        assert_eq!(s.post.burst_remaining, 19 - i);
    }
    let (s, retry, window) = refusal(quota.decide(p.agent()));
    assert_eq!(window, Window::Burst);
    // One token comes back every 200 ms: the client may retry after 1 s.
    assert_eq!(retry, 1);
    assert_eq!(s.post.burst_remaining, 0);
    assert_eq!(s.post.burst_reset_secs, 1);
    assert_eq!(s.post.daily_remaining, 2000 - 20);
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
        assert!(allowed(&quota.decide(p.agent())));
    }
    clock.advance(Duration::from_millis(300));
    let (_, retry, window) = refusal(quota.decide(p.agent()));
    assert_eq!((retry, window), (1, Window::Burst));
    assert_eq!(slow.burst_window_secs(), 3);
}

#[test]
fn the_burst_refills_as_the_clock_advances() {
    let (quota, clock) = local(DEFAULT, &[], "2026-01-15T10:00:00Z");
    let p = post("TN-TUNIS");
    for _ in 0..20 {
        assert!(allowed(&quota.decide(p.agent())));
    }
    assert!(!allowed(&quota.decide(p.agent())));
    clock.advance(Duration::from_millis(200));
    assert!(allowed(&quota.decide(p.agent())));
    assert!(!allowed(&quota.decide(p.agent())));
    // Four seconds refill the whole burst of 20 at 5 per second, no more.
    clock.advance(Duration::from_secs(60));
    for _ in 0..20 {
        assert!(allowed(&quota.decide(p.agent())));
    }
    assert!(!allowed(&quota.decide(p.agent())));
}

#[test]
fn a_request_refused_by_the_burst_does_not_count_for_the_day() {
    let (quota, _) = local(DEFAULT, &[], "2026-01-15T10:00:00Z");
    let p = post("TN-TUNIS");
    for _ in 0..20 {
        quota.decide(p.agent());
    }
    for _ in 0..50 {
        let (s, _, _) = refusal(quota.decide(p.agent()));
        assert_eq!(s.post.daily_remaining, 1980);
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
        assert!(allowed(&quota.decide(p.agent())));
    }
    let (s, retry, window) = refusal(quota.decide(p.agent()));
    assert_eq!(window, Window::Daily);
    assert_eq!(retry, 14 * 3600);
    assert_eq!(s.post.daily_remaining, 0);
    assert_eq!(s.daily_reset_secs, 14 * 3600);
    assert_eq!(s.post.burst_remaining, 17);
    // Refusals for the day leave the burst alone: it refills completely.
    clock.advance(Duration::from_secs(10));
    for _ in 0..30 {
        let (s, _, window) = refusal(quota.decide(p.agent()));
        assert_eq!(window, Window::Daily);
        assert_eq!(s.post.burst_remaining, 20);
        assert_eq!(s.post.burst_reset_secs, 0);
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
    assert!(allowed(&quota.decide(p.agent())));
    assert!(allowed(&quota.decide(p.agent())));
    let (_, retry, _) = refusal(quota.decide(p.agent()));
    assert_eq!(retry, 60);
    clock.advance(Duration::from_secs(59));
    let (_, retry, _) = refusal(quota.decide(p.agent()));
    assert_eq!(retry, 1);
    clock.advance(Duration::from_secs(1));
    let s = state(quota.decide(p.agent()));
    assert_eq!(s.post.daily_remaining, 1);
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
    let s = state(quota.decide(p.agent()));
    assert_eq!(s.daily_reset_secs, 23 * 3600);
    let (_, retry, window) = refusal(quota.decide(p.agent()));
    assert_eq!((retry, window), (23 * 3600, Window::Daily));
    // 23:30 CEST, after the clocks went forward: half an hour left.
    clock.set(at("2026-03-29T21:30:00Z"));
    let (_, retry, _) = refusal(quota.decide(p.agent()));
    assert_eq!(retry, 1800);
    // Midnight, 23 hours after the previous one.
    clock.set(at("2026-03-29T22:00:00Z"));
    assert!(allowed(&quota.decide(p.agent())));
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
    assert!(allowed(&quota.decide(p.agent())));
    let (_, retry, _) = refusal(quota.decide(p.agent()));
    assert_eq!(retry, 25 * 3600);
    // 23:30 CET, after the clocks went back: half an hour left, not 90 minutes.
    clock.set(at("2026-10-25T22:30:00Z"));
    let (_, retry, _) = refusal(quota.decide(p.agent()));
    assert_eq!(retry, 1800);
    // 24 hours after the previous midnight it is still the same local day.
    clock.set(at("2026-10-25T22:00:00Z"));
    assert!(!allowed(&quota.decide(p.agent())));
    clock.set(at("2026-10-25T23:00:00Z"));
    assert!(allowed(&quota.decide(p.agent())));
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
    let s = state(quota.decide(tunis.agent()));
    assert_eq!(
        s.policy_header(),
        r#""burst";q=40;w=4, "daily";q=5000;w=86400, "agent-burst";q=1000;w=1, "agent-daily";q=1000000;w=86400"#
    );
    let s = state(quota.decide(rabat.agent()));
    assert_eq!(
        s.policy_header(),
        r#""burst";q=20;w=4, "daily";q=2000;w=86400, "agent-burst";q=1000;w=1, "agent-daily";q=1000000;w=86400"#
    );
    let tunis_allowed = (0..100)
        .filter(|_| allowed(&quota.decide(tunis.agent())))
        .count();
    assert_eq!(tunis_allowed, 39);
}

#[test]
fn posts_do_not_share_their_quotas() {
    let (quota, _) = local(DEFAULT, &[], "2026-01-15T10:00:00Z");
    let tunis = post("TN-TUNIS");
    let rabat = post("MA-RABAT");
    for _ in 0..20 {
        assert!(allowed(&quota.decide(tunis.agent())));
    }
    assert!(!allowed(&quota.decide(tunis.agent())));
    for _ in 0..20 {
        assert!(allowed(&quota.decide(rabat.agent())));
    }
    assert!(!allowed(&quota.decide(rabat.agent())));
}

#[test]
fn an_allowed_answer_carries_the_four_policies_and_what_is_left() {
    // 12:00 in Paris: 12 hours to midnight.
    let (quota, _) = with_agents(DEFAULT, AGENT, &[], "2026-01-15T11:00:00Z");
    let s = state(quota.decide(post("TN-TUNIS").agent()));
    assert_eq!(
        s.policy_header(),
        r#""burst";q=20;w=4, "daily";q=2000;w=86400, "agent-burst";q=10;w=5, "agent-daily";q=500;w=86400"#
    );
    assert_eq!(
        s.ratelimit_header(),
        r#""burst";r=19;t=1, "daily";r=1999;t=43200, "agent-burst";r=9;t=1, "agent-daily";r=499;t=43200"#
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
                let who = post("TN-TUNIS");
                tokio::spawn(async move { quota.acquire(who.agent()).await })
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
    quota.decide(busy.agent());
    // A post counted yesterday whose burst is full again may be dropped.
    clock.set(at("2026-01-16T10:00:00Z"));
    for _ in 0..PRUNE_EVERY {
        quota.decide(post("MA-RABAT").agent());
        clock.advance(Duration::from_millis(200));
    }
    assert_eq!(quota.tracked(), (1, 1));
    // The post counted today is kept, so its count survives the pruning.
    let rabat = post("MA-RABAT");
    let s = state(quota.decide(rabat.agent()));
    assert_eq!(
        s.post.daily_remaining,
        1_000_000 - u64::from(PRUNE_EVERY) - 1
    );
}

// ------------------------------------------------------------ agents

fn refused_by(d: Decision) -> Window {
    refusal(d).2
}

#[test]
fn an_agent_gets_its_own_burst_and_the_others_of_its_post_are_still_served() {
    let (quota, _) = with_agents(DEFAULT, AGENT, &[], "2026-01-15T10:00:00Z");
    let (a, b) = (agent("TN-TUNIS", "agent-a"), agent("TN-TUNIS", "agent-b"));
    for _ in 0..10 {
        assert!(allowed(&quota.decide(a.agent())));
    }
    let (s, retry, window) = refusal(quota.decide(a.agent()));
    assert_eq!(window, Window::AgentBurst);
    // One agent token comes back every 500 ms: retry after 1 s.
    assert_eq!(retry, 1);
    assert_eq!((s.agent.burst_remaining, s.post.burst_remaining), (0, 10));
    for _ in 0..10 {
        assert!(allowed(&quota.decide(b.agent())));
    }
    // The post's burst of 20 is spent by the two agents together.
    let c = agent("TN-TUNIS", "agent-c");
    assert_eq!(refused_by(quota.decide(c.agent())), Window::Burst);
}

#[test]
fn a_request_refused_by_the_agent_burst_consumes_nothing_of_the_post() {
    let (quota, clock) = with_agents(DEFAULT, AGENT, &[], "2026-01-15T10:00:00Z");
    let a = agent("TN-TUNIS", "agent-a");
    for _ in 0..10 {
        quota.decide(a.agent());
    }
    for _ in 0..100 {
        let (s, _, window) = refusal(quota.decide(a.agent()));
        assert_eq!(window, Window::AgentBurst);
        assert_eq!((s.post.burst_remaining, s.post.daily_remaining), (10, 1990));
        assert_eq!(s.agent.daily_remaining, 490);
    }
    // Another agent still has the post's other ten.
    let b = agent("TN-TUNIS", "agent-b");
    assert_eq!(
        (0..20)
            .filter(|_| allowed(&quota.decide(b.agent())))
            .count(),
        10
    );
    clock.advance(Duration::from_millis(500));
    assert!(allowed(&quota.decide(a.agent())));
}

#[test]
fn a_request_refused_by_the_post_consumes_nothing_of_the_agent() {
    let small_post = Limits {
        per_second: 1,
        burst: 2,
        per_day: 2000,
    };
    let (quota, _) = with_agents(small_post, AGENT, &[], "2026-01-15T10:00:00Z");
    let (a, b) = (agent("TN-TUNIS", "agent-a"), agent("TN-TUNIS", "agent-b"));
    assert!(allowed(&quota.decide(a.agent())));
    assert!(allowed(&quota.decide(a.agent())));
    for _ in 0..20 {
        let (s, _, window) = refusal(quota.decide(b.agent()));
        assert_eq!(window, Window::Burst);
        assert_eq!(
            (s.agent.burst_remaining, s.agent.daily_remaining),
            (10, 500)
        );
    }
}

#[test]
fn a_spent_agent_day_refuses_that_agent_until_midnight_and_no_other() {
    let agent_limits = Limits {
        per_day: 3,
        ..AGENT
    };
    // 10:00 in Paris: 14 hours to midnight.
    let (quota, clock) = with_agents(DEFAULT, agent_limits, &[], "2026-01-15T09:00:00Z");
    let (a, b) = (agent("TN-TUNIS", "agent-a"), agent("TN-TUNIS", "agent-b"));
    for _ in 0..3 {
        assert!(allowed(&quota.decide(a.agent())));
    }
    clock.advance(Duration::from_secs(60));
    let (s, retry, window) = refusal(quota.decide(a.agent()));
    assert_eq!((retry, window), (14 * 3600 - 60, Window::AgentDaily));
    assert_eq!((s.agent.daily_remaining, s.post.daily_remaining), (0, 1997));
    assert!(allowed(&quota.decide(b.agent())));
    // Refusals for the day touch neither the post nor the agent's burst.
    let (s, _, _) = refusal(quota.decide(a.agent()));
    assert_eq!(s.post.daily_remaining, 1996);
    assert_eq!(s.agent.burst_remaining, 10);
    clock.set(at("2026-01-15T23:00:00Z")); // midnight in Paris
    assert!(allowed(&quota.decide(a.agent())));
}

#[test]
fn the_post_day_is_named_when_both_the_post_and_the_agent_day_are_spent() {
    let tiny = Limits {
        per_second: 100,
        burst: 100,
        per_day: 2,
    };
    let (quota, _) = with_agents(tiny, tiny, &[], "2026-01-15T10:00:00Z");
    let a = post("TN-TUNIS");
    assert!(allowed(&quota.decide(a.agent())));
    assert!(allowed(&quota.decide(a.agent())));
    assert_eq!(refused_by(quota.decide(a.agent())), Window::Daily);
}

#[test]
fn an_agent_override_applies_to_that_sub_in_that_post_only() {
    let trusted = Limits {
        per_second: 5,
        burst: 15,
        per_day: 1000,
    };
    let (quota, _) = with_agents(
        DEFAULT,
        AGENT,
        &[("TN-TUNIS/agent-42", trusted)],
        "2026-01-15T10:00:00Z",
    );
    let count = |who: &Who| {
        (0..30)
            .filter(|_| allowed(&quota.decide(who.agent())))
            .count()
    };
    assert_eq!(count(&agent("TN-TUNIS", "agent-42")), 15);
    // The same sub in another post is another agent, with the default limits.
    assert_eq!(count(&agent("MA-RABAT", "agent-42")), 10);
    assert_eq!(
        count(&agent("TN-TUNIS", "agent-43")),
        5,
        "the post's 20 are spent"
    );
}

#[test]
fn concurrent_requests_of_one_agent_on_a_frozen_clock_get_exactly_the_agent_burst() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let (quota, _) = with_agents(DEFAULT, AGENT, &[], "2026-01-15T10:00:00Z");
    let quota: Arc<dyn super::super::Quota> = Arc::new(quota);
    let decisions = runtime.block_on(async {
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let quota = quota.clone();
                let who = agent("TN-TUNIS", "agent-a");
                tokio::spawn(async move { quota.acquire(who.agent()).await })
            })
            .collect();
        let mut decisions = Vec::new();
        for task in tasks {
            decisions.push(task.await.unwrap());
        }
        decisions
    });
    assert_eq!(decisions.iter().filter(|d| allowed(d)).count(), 10);
    assert!(
        decisions
            .into_iter()
            .filter(|d| !allowed(d))
            .all(|d| refused_by(d) == Window::AgentBurst)
    );
}

#[test]
fn idle_agents_are_forgotten_with_their_posts() {
    let (quota, clock) = with_agents(DEFAULT, ROOMY, &[], "2026-01-15T10:00:00Z");
    for i in 0..10 {
        quota.decide(agent("TN-TUNIS", &format!("agent-{i}")).agent());
    }
    assert_eq!(quota.tracked(), (1, 10));
    clock.set(at("2026-01-16T10:00:00Z"));
    let busy = agent("MA-RABAT", "agent-1");
    for _ in 0..PRUNE_EVERY {
        quota.decide(busy.agent());
        clock.advance(Duration::from_millis(200));
    }
    assert_eq!(quota.tracked(), (1, 1));
}

// ------------------------------------------------------------ Redis fallback share

#[test]
fn as_a_fallback_a_replica_grants_its_share_of_what_the_shared_count_left() {
    let limits = Limits {
        per_second: 1000,
        burst: 1000,
        per_day: 100,
    };
    let (quota, _) = build_local(settings(limits, &[]), "2026-01-15T10:00:00Z", 2);
    let who = post("TN-TUNIS");
    // Redis last said the post had used 40 of its 100 today: each of two
    // replicas may grant (100 - 40) / 2 = 30 more.
    quota.observe(who.agent(), at("2026-01-15T10:00:00Z"), 40, 0);
    let granted = (0..100)
        .filter(|_| allowed(&quota.decide(who.agent())))
        .count();
    assert_eq!(granted, 30);
    let (s, _, window) = refusal(quota.decide(who.agent()));
    assert_eq!((window, s.post.daily_remaining), (Window::Daily, 0));
}

#[test]
fn as_a_fallback_the_agent_day_is_shared_out_the_same_way() {
    let agent_limits = Limits {
        per_second: 1000,
        burst: 1000,
        per_day: 50,
    };
    let mut s = settings(ROOMY, &[]);
    s.agent_default = agent_limits;
    let (quota, _) = build_local(s, "2026-01-15T10:00:00Z", 3);
    let who = post("TN-TUNIS");
    quota.observe(who.agent(), at("2026-01-15T10:00:00Z"), 20, 20);
    let granted = (0..100)
        .filter(|_| allowed(&quota.decide(who.agent())))
        .count();
    assert_eq!(granted, 10, "(50 - 20) / 3");
    assert_eq!(refused_by(quota.decide(who.agent())), Window::AgentDaily);
}

#[test]
fn a_fallback_that_saw_nothing_grants_its_share_of_the_whole_day_and_the_next_day_starts_afresh() {
    let limits = Limits {
        per_second: 1000,
        burst: 1000,
        per_day: 100,
    };
    let (quota, clock) = build_local(settings(limits, &[]), "2026-01-15T10:00:00Z", 4);
    let who = post("TN-TUNIS");
    quota.observe(who.agent(), at("2026-01-15T10:00:00Z"), 100, 0);
    assert_eq!(refused_by(quota.decide(who.agent())), Window::Daily);
    clock.set(at("2026-01-16T10:00:00Z"));
    let granted = (0..100)
        .filter(|_| allowed(&quota.decide(who.agent())))
        .count();
    assert_eq!(granted, 25, "100 / 4, yesterday's count forgotten");
}

#[test]
fn what_the_fallback_remembers_of_redis_is_pruned_while_redis_answers() {
    let (quota, clock) = build_local(settings(DEFAULT, &[]), "2026-01-15T10:00:00Z", 2);
    for i in 0..10 {
        quota.observe(
            agent("TN-TUNIS", &format!("agent-{i}")).agent(),
            clock.wall(),
            1,
            1,
        );
    }
    assert_eq!(quota.tracked(), (1, 10));
    clock.set(at("2026-01-16T10:00:00Z"));
    let busy = agent("MA-RABAT", "agent-1");
    for _ in 0..PRUNE_EVERY {
        quota.observe(busy.agent(), clock.wall(), 1, 1);
    }
    assert_eq!(quota.tracked(), (1, 1));
}
