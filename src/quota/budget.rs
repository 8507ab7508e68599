//! The per-agent error budget: refusals cost something, and an agent past its budget is refused at once.
//!
//! Each agent (`post` + `sub`) has a GCRA of `per_second` units a second up to
//! `burst`, kept like the burst limiter of the posts ([`super::gcra`]), whose
//! units are spent by refusals (the broker decides which answers are refusals).
//! Before anything else, [`ErrorBudget::admit`] asks whether the agent has a
//! unit left. If not, the request is refused at once, counts nothing else, and
//! is tallied in the agent's current minute instead of being written one audit
//! line each. If so, the request holds the unit while it runs, and
//! [`ErrorBudget::refund`] gives it back once the request ends in anything but
//! a refusal.
//!
//! Holding the unit during the request, rather than charging refusals once
//! they are known, is what keeps the budget exact under concurrency: an agent
//! with a hundred requests in flight cannot have a hundred refusals answered in
//! full each time one unit comes back. An honest agent never notices: it would
//! need `burst` requests in flight at once. A request whose future is dropped
//! (the client went away) keeps its unit, which comes back with time.
//!
//! The broker takes the minutes back as plain data ([`RefusalCounts`]):
//! [`ErrorBudget::take_closed`] gives those that ended, [`ErrorBudget::take_all`]
//! also those still open (at shutdown).
//!
//! State is per process and bounded: an agent is tracked only while its budget
//! is not full again or a minute of refusals is waiting to be taken; past that
//! it is forgotten (every [`PRUNE_EVERY`] admissions and on every take), which
//! changes no later decision.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;

use crate::domain::{Agent, PostCode, Subject};

use super::gcra;
use crate::clock::Clock;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Minutes of refusals are counted on whole UTC minutes.
const MINUTE_SECS: u64 = 60;

/// The status a request refused for a spent budget is answered with, under
/// which [`ErrorBudget::admit`] counts it.
pub const SPENT_STATUS: u16 = 429;

/// Idle agents are forgotten every this many admissions, besides every take.
const PRUNE_EVERY: u32 = 4096;

/// `quotas.agent_error_budget`: how many refusals an agent may cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBudgetLimits {
    /// Sustained rate: one refusal's worth of budget comes back every
    /// `1 / per_second` seconds.
    pub per_second: u32,
    /// Refusals an agent may cause in a row when its budget is full.
    pub burst: u32,
}

impl Default for ErrorBudgetLimits {
    /// One refusal a second, thirty in a row: far above what an agent's
    /// mistakes produce, far below what a script produces.
    fn default() -> Self {
        Self {
            per_second: 1,
            burst: 30,
        }
    }
}

impl ErrorBudgetLimits {
    /// Adds every problem to `problems`, each as `<key>.<field>: <message>`.
    pub(crate) fn check(&self, key: &str, problems: &mut Vec<String>) {
        if self.per_second == 0 {
            problems.push(format!("{key}.per_second: must be at least 1"));
        }
        if self.burst == 0 {
            problems.push(format!("{key}.burst: must be at least 1"));
        }
    }

    fn interval_ns(&self) -> u64 {
        NANOS_PER_SEC / u64::from(self.per_second.max(1))
    }
}

/// Whether an agent may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The agent has budget left: serve the request, which holds one unit
    /// until [`ErrorBudget::refund`].
    Admitted,
    /// The budget is spent: refuse at once (the refusal is counted in the
    /// agent's minute), and retry after `retry_after_secs` (at least 1), when
    /// one unit comes back.
    Spent { retry_after_secs: u64 },
}

/// The refusals of one agent over one minute past its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalCounts {
    pub post: PostCode,
    pub sub: Subject,
    /// How many refusals, by HTTP status.
    pub counts: BTreeMap<u16, u64>,
    /// The minute's first second, in seconds since the Unix epoch.
    pub window_start_secs: u64,
}

/// The error budgets of every agent, for this process; build it once and share it.
pub struct ErrorBudget {
    limits: ErrorBudgetLimits,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By post, then by agent, so that a lookup needs no owned key.
    posts: HashMap<PostCode, HashMap<Subject, AgentState>>,
    /// Minutes that ended while the agent kept being refused, not yet taken.
    closed: Vec<RefusalCounts>,
    admissions_since_prune: u32,
}

#[derive(Default)]
struct AgentState {
    /// The GCRA's theoretical arrival time, in nanoseconds since the epoch.
    tat: u64,
    minute: Option<Minute>,
}

struct Minute {
    start_secs: u64,
    counts: BTreeMap<u16, u64>,
}

impl ErrorBudget {
    pub fn new(limits: ErrorBudgetLimits, clock: Arc<dyn Clock>) -> Self {
        Self {
            limits,
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether the agent may be served. An admitted request holds one
    /// unit of the budget until its outcome is known: [`ErrorBudget::refund`]
    /// it unless the request ends in a refusal. A refusal for a spent budget
    /// takes nothing and is counted in the agent's current minute.
    pub fn admit(&self, Agent { post, sub }: Agent<'_>) -> Admission {
        let now = self.now_ns();
        let (interval, burst) = (self.limits.interval_ns(), self.limits.burst);
        // Nothing below panics, so a poisoned lock still holds consistent state.
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.admissions_since_prune += 1;
        if inner.admissions_since_prune >= PRUNE_EVERY {
            inner.prune(now);
        }
        let Inner { posts, closed, .. } = &mut *inner;
        let agents = match posts.get_mut(post) {
            Some(agents) => agents,
            None => posts.entry(post.clone()).or_default(),
        };
        let state = match agents.get_mut(sub) {
            Some(state) => state,
            None => agents.entry(sub.clone()).or_default(),
        };
        let (remaining, wait) = gcra::remaining_and_wait(now, state.tat, interval, burst);
        if remaining > 0 {
            state.tat = state.tat.max(now).saturating_add(interval);
            return Admission::Admitted;
        }
        let start_secs = minute_of(now);
        let minute = match &mut state.minute {
            Some(minute) if minute.start_secs == start_secs => minute,
            slot => {
                if let Some(ended) = slot.take() {
                    closed.push(ended.into_counts(post, sub));
                }
                slot.insert(Minute {
                    start_secs,
                    counts: BTreeMap::new(),
                })
            }
        };
        *minute.counts.entry(SPENT_STATUS).or_insert(0) += 1;
        Admission::Spent {
            retry_after_secs: wait.div_ceil(NANOS_PER_SEC).max(1),
        }
    }

    /// Gives back the unit an admitted request of the agent held: it did
    /// not end in a refusal. (An agent forgotten meanwhile has a full budget:
    /// nothing to give back.)
    pub fn refund(&self, Agent { post, sub }: Agent<'_>) {
        let interval = self.limits.interval_ns();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = inner
            .posts
            .get_mut(post)
            .and_then(|agents| agents.get_mut(sub))
        {
            state.tat = state.tat.saturating_sub(interval);
        }
    }

    /// The minutes of refusals that ended before the current one, to be
    /// recorded once each; idle agents are forgotten meanwhile.
    pub fn take_closed(&self) -> Vec<RefusalCounts> {
        let now = self.now_ns();
        self.take(now, Some(minute_of(now)))
    }

    /// Every minute of refusals, ended or not (at shutdown).
    pub fn take_all(&self) -> Vec<RefusalCounts> {
        self.take(self.now_ns(), None)
    }

    /// Takes the minutes that started before `current` (all of them without one).
    fn take(&self, now: u64, current: Option<u64>) -> Vec<RefusalCounts> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Inner { posts, closed, .. } = &mut *inner;
        for (post, agents) in posts.iter_mut() {
            for (sub, state) in agents.iter_mut() {
                if current.is_none_or(|current| {
                    state
                        .minute
                        .as_ref()
                        .is_some_and(|m| m.start_secs < current)
                }) && let Some(minute) = state.minute.take()
                {
                    closed.push(minute.into_counts(post, sub));
                }
            }
        }
        let taken = std::mem::take(closed);
        inner.prune(now);
        taken
    }

    /// How many agents are tracked (for tests of eviction).
    #[cfg(test)]
    fn tracked_agents(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.posts.values().map(HashMap::len).sum()
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.clock.wall().as_nanosecond()).unwrap_or(0)
    }
}

impl Inner {
    /// Forgets agents whose budget is full again and who have no minute
    /// waiting: dropping them changes no later decision.
    fn prune(&mut self, now: u64) {
        self.admissions_since_prune = 0;
        self.posts.retain(|_, agents| {
            agents.retain(|_, state| state.tat > now || state.minute.is_some());
            !agents.is_empty()
        });
    }
}

impl Minute {
    fn into_counts(self, post: &PostCode, sub: &Subject) -> RefusalCounts {
        RefusalCounts {
            post: post.clone(),
            sub: sub.clone(),
            counts: self.counts,
            window_start_secs: self.start_secs,
        }
    }
}

/// The first second of the UTC minute of `now_ns`.
fn minute_of(now_ns: u64) -> u64 {
    now_ns / NANOS_PER_SEC / MINUTE_SECS * MINUTE_SECS
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    /// 10:00:00 UTC, the start of a minute.
    const START: &str = "2026-06-15T10:00:00Z";

    fn budget(per_second: u32, burst: u32) -> (ErrorBudget, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(START.parse().unwrap()));
        let limits = ErrorBudgetLimits { per_second, burst };
        (ErrorBudget::new(limits, clock.clone()), clock)
    }

    fn agent(sub: &str) -> (PostCode, Subject) {
        (
            PostCode::parse("TN-TUNIS").unwrap(),
            Subject::parse(sub).unwrap(),
        )
    }

    fn start_secs() -> u64 {
        START.parse::<jiff::Timestamp>().unwrap().as_second() as u64
    }

    /// A request that will end in a refusal: admitted, its unit kept.
    fn refused(budget: &ErrorBudget, post: &PostCode, sub: &Subject) {
        assert_eq!(budget.admit(Agent { post, sub }), Admission::Admitted);
    }

    /// A request that will be served: admitted, its unit given back.
    fn served(budget: &ErrorBudget, post: &PostCode, sub: &Subject) {
        assert_eq!(budget.admit(Agent { post, sub }), Admission::Admitted);
        budget.refund(Agent { post, sub });
    }

    fn is_spent(budget: &ErrorBudget, post: &PostCode, sub: &Subject) -> bool {
        matches!(budget.admit(Agent { post, sub }), Admission::Spent { .. })
    }

    #[test]
    fn an_agent_is_admitted_until_its_burst_of_refusals_is_spent() {
        let (budget, _clock) = budget(1, 3);
        let (post, sub) = agent("agent-1");
        for _ in 0..3 {
            refused(&budget, &post, &sub);
        }
        assert_eq!(
            budget.admit(Agent {
                post: &post,
                sub: &sub
            }),
            Admission::Spent {
                retry_after_secs: 1
            }
        );
    }

    #[test]
    fn requests_that_are_not_refusals_give_their_unit_back() {
        let (budget, _clock) = budget(1, 2);
        let (post, sub) = agent("agent-1");
        for _ in 0..100 {
            served(&budget, &post, &sub);
        }
        refused(&budget, &post, &sub);
        refused(&budget, &post, &sub);
        assert!(is_spent(&budget, &post, &sub));
    }

    #[test]
    fn requests_in_flight_hold_their_unit_so_concurrency_cannot_overdraw_the_budget() {
        let (budget, _clock) = budget(1, 3);
        let (post, sub) = agent("agent-1");
        // Three requests admitted, none answered yet: a fourth waits for one of them.
        for _ in 0..3 {
            assert_eq!(
                budget.admit(Agent {
                    post: &post,
                    sub: &sub
                }),
                Admission::Admitted
            );
        }
        assert!(is_spent(&budget, &post, &sub));
        budget.refund(Agent {
            post: &post,
            sub: &sub,
        });
        assert_eq!(
            budget.admit(Agent {
                post: &post,
                sub: &sub
            }),
            Admission::Admitted
        );
    }

    #[test]
    fn the_budget_refills_at_its_rate_and_says_when() {
        let (budget, clock) = budget(2, 2);
        let (post, sub) = agent("agent-1");
        refused(&budget, &post, &sub);
        refused(&budget, &post, &sub);
        // One unit comes back every half second.
        clock.advance(Duration::from_millis(499));
        assert_eq!(
            budget.admit(Agent {
                post: &post,
                sub: &sub
            }),
            Admission::Spent {
                retry_after_secs: 1
            }
        );
        clock.advance(Duration::from_millis(1));
        refused(&budget, &post, &sub);
        assert!(is_spent(&budget, &post, &sub));
    }

    #[test]
    fn refusals_for_a_spent_budget_take_nothing_from_it() {
        let (budget, clock) = budget(1, 1);
        let (post, sub) = agent("agent-1");
        refused(&budget, &post, &sub);
        for _ in 0..50 {
            assert!(is_spent(&budget, &post, &sub));
        }
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            budget.admit(Agent {
                post: &post,
                sub: &sub
            }),
            Admission::Admitted
        );
    }

    #[test]
    fn agents_of_one_post_have_budgets_of_their_own() {
        let (budget, _clock) = budget(1, 1);
        let (post, first) = agent("agent-1");
        let (_, second) = agent("agent-2");
        refused(&budget, &post, &first);
        assert!(is_spent(&budget, &post, &first));
        assert_eq!(
            budget.admit(Agent {
                post: &post,
                sub: &second
            }),
            Admission::Admitted
        );
        let other_post = PostCode::parse("MA-RABAT").unwrap();
        assert_eq!(
            budget.admit(Agent {
                post: &other_post,
                sub: &first
            }),
            Admission::Admitted
        );
    }

    #[test]
    fn refusals_are_counted_by_minute_and_taken_once_the_minute_ends() {
        let (budget, clock) = budget(1, 1);
        let (post, sub) = agent("agent-1");
        refused(&budget, &post, &sub);
        for _ in 0..5 {
            assert!(is_spent(&budget, &post, &sub));
        }
        assert!(budget.take_closed().is_empty(), "the minute is still open");
        clock.advance(Duration::from_secs(60));
        let taken = budget.take_closed();
        assert_eq!(
            taken,
            vec![RefusalCounts {
                post: post.clone(),
                sub: sub.clone(),
                counts: BTreeMap::from([(429, 5)]),
                window_start_secs: start_secs(),
            }]
        );
        assert!(budget.take_closed().is_empty(), "a minute is taken once");
    }

    #[test]
    fn a_refusal_in_a_new_minute_closes_the_previous_one() {
        let (budget, clock) = budget(1, 1);
        let (post, sub) = agent("agent-1");
        refused(&budget, &post, &sub);
        assert!(is_spent(&budget, &post, &sub));
        // 59.5 s later the agent has its budget back and spends it again.
        clock.advance(Duration::from_millis(59_500));
        refused(&budget, &post, &sub);
        assert!(is_spent(&budget, &post, &sub));
        clock.advance(Duration::from_secs(1));
        refused(&budget, &post, &sub);
        for _ in 0..2 {
            assert!(is_spent(&budget, &post, &sub));
        }
        let minutes = |taken: Vec<RefusalCounts>| -> Vec<(u64, u64)> {
            taken
                .iter()
                .map(|t| (t.window_start_secs - start_secs(), t.counts[&429]))
                .collect()
        };
        assert_eq!(
            minutes(budget.take_closed()),
            [(0, 2)],
            "the second minute is still open"
        );
        assert_eq!(minutes(budget.take_all()), [(60, 2)]);
    }

    #[test]
    fn take_all_gives_the_open_minutes_of_every_agent() {
        let (budget, _clock) = budget(1, 1);
        let (post, first) = agent("agent-1");
        let (_, second) = agent("agent-2");
        for sub in [&first, &second] {
            refused(&budget, &post, sub);
            assert!(is_spent(&budget, &post, sub));
        }
        let mut subs: Vec<String> = budget
            .take_all()
            .into_iter()
            .map(|t| t.sub.as_str().to_owned())
            .collect();
        subs.sort();
        assert_eq!(subs, ["agent-1", "agent-2"]);
        assert!(budget.take_all().is_empty());
    }

    #[test]
    fn idle_agents_are_forgotten_once_their_budget_is_full_and_their_minute_taken() {
        let (budget, clock) = budget(1, 30);
        for n in 0..100 {
            let (post, sub) = agent(&format!("served-{n}"));
            served(&budget, &post, &sub);
            let (post, sub) = agent(&format!("refused-{n}"));
            refused(&budget, &post, &sub);
        }
        let (post, spent) = agent("agent-spent");
        for _ in 0..30 {
            refused(&budget, &post, &spent);
        }
        assert!(is_spent(&budget, &post, &spent));
        clock.advance(Duration::from_millis(500));
        budget.take_closed();
        assert_eq!(
            budget.tracked_agents(),
            101,
            "agents served in full are forgotten at once, the others once refilled"
        );
        clock.advance(Duration::from_millis(500));
        budget.take_closed();
        assert_eq!(
            budget.tracked_agents(),
            1,
            "only the agent with a budget to refill and a minute open is kept"
        );
        clock.advance(Duration::from_secs(60));
        assert_eq!(budget.take_closed().len(), 1);
        assert_eq!(budget.tracked_agents(), 0);
        assert_eq!(
            budget.admit(Agent {
                post: &post,
                sub: &spent
            }),
            Admission::Admitted
        );
    }

    #[test]
    fn the_setting_defaults_to_one_a_second_and_thirty_and_rejects_unknown_keys() {
        use super::super::settings::QuotaSettings;
        let limits = "default = { per_second = 5, burst = 20, per_day = 2000 }";
        let s: QuotaSettings = toml::from_str(limits).unwrap();
        assert_eq!(s.agent_error_budget, ErrorBudgetLimits::default());
        assert_eq!(
            (s.agent_error_budget.per_second, s.agent_error_budget.burst),
            (1, 30)
        );
        let s: QuotaSettings = toml::from_str(&format!(
            "{limits}\nagent_error_budget = {{ per_second = 0, burst = 5 }}"
        ))
        .unwrap();
        assert_eq!(
            s.validate(),
            ["quotas.agent_error_budget.per_second: must be at least 1"]
        );
        assert!(
            toml::from_str::<QuotaSettings>(&format!(
                "{limits}\nagent_error_budget = {{ per_second = 1, burst = 5, per_day = 9 }}"
            ))
            .is_err()
        );
    }

    #[test]
    fn validation_reports_each_zero() {
        let mut problems = Vec::new();
        ErrorBudgetLimits {
            per_second: 0,
            burst: 0,
        }
        .check("quotas.agent_error_budget", &mut problems);
        assert_eq!(
            problems,
            [
                "quotas.agent_error_budget.per_second: must be at least 1",
                "quotas.agent_error_budget.burst: must be at least 1",
            ]
        );
        let mut problems = Vec::new();
        ErrorBudgetLimits::default().check("quotas.agent_error_budget", &mut problems);
        assert!(problems.is_empty());
    }
}
