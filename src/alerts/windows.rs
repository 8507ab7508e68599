//! The in-memory store: each agent's sliding windows, the rules it may not
//! fire again yet, and its suspension, bounded in agents and in events.
//!
//! One lock guards the map: an observation is a few deque operations, and the
//! lock is never held across an `.await`. Agents whose windows are empty, with
//! no silenced rule and no suspension, are swept at most once a minute (by the
//! injected clock); past `alerts.max_agents`, the least recently seen agent is
//! dropped to make room.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use jiff::{SignedDuration, Timestamp};

use super::rules::{Counts, Rule, WINDOW};
use super::{LookupKind, Observation};
use crate::domain::{Agent, PostCode, Subject};

/// The most events one window of an agent keeps; older ones are dropped. It is
/// above every threshold ([`super::settings::MAX_THRESHOLD`]), so dropping
/// never hides a crossing; it only bounds the memory of a runaway agent.
pub(crate) const MAX_EVENTS_PER_AGENT: usize = 2_048;

/// How often idle agents are swept.
const SWEEP_INTERVAL: SignedDuration = SignedDuration::from_mins(1);

/// The windows of every agent seen recently.
pub(crate) struct MemoryWindows {
    inner: Mutex<Inner>,
    max_agents: usize,
}

struct Inner {
    /// Keyed by post and `sub`, owned.
    agents: HashMap<(PostCode, Subject), AgentState>,
    next_sweep: Timestamp,
}

/// One agent's last hour.
#[derive(Default)]
struct AgentState {
    /// Each lookup's dossier, oldest first, as a 64-bit digest of its
    /// pseudonym (8 bytes instead of 64; two dossiers of one agent collide
    /// with a chance of about 2^-64 per pair).
    dossiers: VecDeque<(Timestamp, u64)>,
    /// The last time each dossier in `dossiers` was looked up: its size is the
    /// distinct count.
    latest: HashMap<u64, Timestamp>,
    /// Each lookup and whether it found a dossier, oldest first.
    lookups: VecDeque<(Timestamp, bool)>,
    /// How many of `lookups` found nothing.
    not_found: u64,
    /// Each NIR search, oldest first.
    nir_searches: VecDeque<Timestamp>,
    /// Until when each rule stays silent, by [`Rule::index`].
    silent_until: [Option<Timestamp>; Rule::ALL.len()],
    blocked_until: Option<Timestamp>,
    last_seen: Option<Timestamp>,
}

impl MemoryWindows {
    pub(crate) fn new(max_agents: usize) -> MemoryWindows {
        MemoryWindows {
            inner: Mutex::new(Inner {
                agents: HashMap::new(),
                next_sweep: Timestamp::MIN,
            }),
            max_agents: max_agents.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one lookup to the agent's windows and returns its counts over the
    /// hour ending at `now`.
    pub(crate) fn record(&self, observation: &Observation<'_>, now: Timestamp) -> Counts {
        let mut inner = self.lock();
        inner.sweep_if_due(now);
        let state = inner.state(observation.agent, self.max_agents, now);
        state.record(observation, now);
        state.counts()
    }

    /// Fires `rule` for the agent unless it is silent: it then stays silent
    /// until `silent_until`, and the agent is suspended until `block_until`
    /// if given. True when the rule fired.
    pub(crate) fn claim(
        &self,
        agent: Agent<'_>,
        rule: Rule,
        now: Timestamp,
        silent_until: Timestamp,
        block_until: Option<Timestamp>,
    ) -> bool {
        let mut inner = self.lock();
        let state = inner.state(agent, self.max_agents, now);
        let slot = &mut state.silent_until[rule.index()];
        if slot.is_some_and(|until| until > now) {
            return false;
        }
        *slot = Some(silent_until);
        if let Some(until) = block_until {
            state.block(until);
        }
        true
    }

    /// Suspends the agent until `until` (a suspension decided elsewhere, kept
    /// here too so that it holds while the shared store does not answer).
    pub(crate) fn block(&self, agent: Agent<'_>, now: Timestamp, until: Timestamp) {
        self.lock().state(agent, self.max_agents, now).block(until);
    }

    pub(crate) fn is_blocked(&self, agent: Agent<'_>, now: Timestamp) -> bool {
        self.lock()
            .agents
            .get(&(agent.post.clone(), agent.sub.clone()))
            .and_then(|state| state.blocked_until)
            .is_some_and(|until| until > now)
    }

    /// How many agents are tracked.
    #[cfg(test)]
    pub(crate) fn agents(&self) -> usize {
        self.lock().agents.len()
    }
}

impl Inner {
    /// The agent's state, made (room first) if it is not tracked yet.
    fn state(&mut self, agent: Agent<'_>, max_agents: usize, now: Timestamp) -> &mut AgentState {
        let key = (agent.post.clone(), agent.sub.clone());
        if !self.agents.contains_key(&key) {
            self.make_room(max_agents, now);
        }
        self.agents.entry(key).or_default()
    }

    fn sweep_if_due(&mut self, now: Timestamp) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now.checked_add(SWEEP_INTERVAL).unwrap_or(Timestamp::MAX);
        self.agents.retain(|_, state| {
            state.prune(now);
            !state.is_idle(now)
        });
    }

    /// Makes room for one more agent: idle agents go first, then, if the map
    /// is still full, the least recently seen one.
    fn make_room(&mut self, max_agents: usize, now: Timestamp) {
        if self.agents.len() < max_agents {
            return;
        }
        self.next_sweep = Timestamp::MIN;
        self.sweep_if_due(now);
        while self.agents.len() >= max_agents {
            let oldest = self
                .agents
                .iter()
                .min_by_key(|(_, state)| state.last_seen)
                .map(|(agent, _)| agent.clone());
            match oldest {
                Some(agent) => {
                    self.agents.remove(&agent);
                }
                None => break,
            }
        }
    }
}

impl AgentState {
    fn record(&mut self, observation: &Observation<'_>, now: Timestamp) {
        self.last_seen = Some(now);
        self.prune(now);
        let dossier = digest(observation.dossier);
        self.latest.insert(dossier, now);
        self.dossiers.push_back((now, dossier));
        self.lookups.push_back((now, observation.found));
        if !observation.found {
            self.not_found += 1;
        }
        if observation.kind == LookupKind::Nir {
            self.nir_searches.push_back(now);
        }
        self.trim();
    }

    /// Drops what is an hour old or older.
    fn prune(&mut self, now: Timestamp) {
        let cutoff = now.checked_sub(WINDOW).unwrap_or(Timestamp::MIN);
        while self.dossiers.front().is_some_and(|(at, _)| *at <= cutoff) {
            self.pop_dossier();
        }
        while self.lookups.front().is_some_and(|(at, _)| *at <= cutoff) {
            self.pop_lookup();
        }
        while self.nir_searches.front().is_some_and(|at| *at <= cutoff) {
            self.nir_searches.pop_front();
        }
    }

    /// Keeps each window under [`MAX_EVENTS_PER_AGENT`], dropping the oldest.
    fn trim(&mut self) {
        while self.dossiers.len() > MAX_EVENTS_PER_AGENT {
            self.pop_dossier();
        }
        while self.lookups.len() > MAX_EVENTS_PER_AGENT {
            self.pop_lookup();
        }
        while self.nir_searches.len() > MAX_EVENTS_PER_AGENT {
            self.nir_searches.pop_front();
        }
    }

    fn pop_dossier(&mut self) {
        if let Some((at, dossier)) = self.dossiers.pop_front()
            // Only the dossier's latest lookup takes it out of the distinct count.
            && self.latest.get(&dossier) == Some(&at)
        {
            self.latest.remove(&dossier);
        }
    }

    fn pop_lookup(&mut self) {
        if let Some((_, found)) = self.lookups.pop_front()
            && !found
        {
            self.not_found = self.not_found.saturating_sub(1);
        }
    }

    fn counts(&self) -> Counts {
        Counts {
            distinct_dossiers: self.latest.len() as u64,
            lookups: self.lookups.len() as u64,
            not_found: self.not_found,
            nir_searches: self.nir_searches.len() as u64,
        }
    }

    fn block(&mut self, until: Timestamp) {
        self.blocked_until = Some(self.blocked_until.map_or(until, |t| t.max(until)));
    }

    /// Nothing left to remember: no event in the hour, no silenced rule, no suspension.
    fn is_idle(&self, now: Timestamp) -> bool {
        self.dossiers.is_empty()
            && self.lookups.is_empty()
            && self.nir_searches.is_empty()
            && self
                .silent_until
                .iter()
                .flatten()
                .all(|until| *until <= now)
            && self.blocked_until.is_none_or(|until| until <= now)
    }
}

/// A digest of a dossier pseudonym (itself a keyed HMAC): std's SipHash with
/// fixed keys, the same for the life of the process.
fn digest(pseudonym: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    pseudonym.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PostCode, Subject};

    /// A test agent at `TN-TUNIS`, alive for the whole test process.
    fn agent(sub: &str) -> Agent<'static> {
        Agent {
            post: Box::leak(Box::new(PostCode::parse("TN-TUNIS").unwrap())),
            sub: Box::leak(Box::new(Subject::parse(sub).unwrap())),
        }
    }

    fn start() -> Timestamp {
        "2026-06-15T08:00:00Z".parse().unwrap()
    }

    fn at(minutes: i64) -> Timestamp {
        start() + SignedDuration::from_mins(minutes)
    }

    fn look<'a>(
        agent: Agent<'a>,
        dossier: &'a str,
        kind: LookupKind,
        found: bool,
    ) -> Observation<'a> {
        Observation {
            agent,
            dossier,
            kind,
            found,
        }
    }

    #[test]
    fn distinct_dossiers_are_counted_once_and_leave_an_hour_after_their_last_lookup() {
        let windows = MemoryWindows::new(10);
        let a = agent("agent-1");
        windows.record(&look(a, "d1", LookupKind::Numero, true), at(0));
        windows.record(&look(a, "d2", LookupKind::Numero, true), at(10));
        let counts = windows.record(&look(a, "d1", LookupKind::Numero, true), at(30));
        assert_eq!((counts.distinct_dossiers, counts.lookups), (2, 3));
        // At 0:60 the first lookup of d1 leaves, but d1 was seen again at 0:30.
        let counts = windows.record(&look(a, "d3", LookupKind::Numero, true), at(60));
        assert_eq!((counts.distinct_dossiers, counts.lookups), (3, 3));
        // At 1:10 d2 leaves; at 1:30 the second lookup of d1 does.
        let counts = windows.record(&look(a, "d3", LookupKind::Numero, true), at(70));
        assert_eq!(counts.distinct_dossiers, 2);
        let counts = windows.record(&look(a, "d3", LookupKind::Numero, true), at(90));
        assert_eq!((counts.distinct_dossiers, counts.lookups), (1, 3));
    }

    #[test]
    fn not_found_and_nir_counts_slide_with_their_lookups() {
        let windows = MemoryWindows::new(10);
        let a = agent("agent-1");
        windows.record(&look(a, "n1", LookupKind::Nir, false), at(0));
        windows.record(&look(a, "n2", LookupKind::Nir, true), at(20));
        let counts = windows.record(&look(a, "d3", LookupKind::Numero, false), at(40));
        assert_eq!(
            counts,
            Counts {
                distinct_dossiers: 3,
                lookups: 3,
                not_found: 2,
                nir_searches: 2
            }
        );
        let counts = windows.record(&look(a, "d4", LookupKind::Numero, true), at(61));
        assert_eq!(
            counts,
            Counts {
                distinct_dossiers: 3,
                lookups: 3,
                not_found: 1,
                nir_searches: 1
            }
        );
    }

    #[test]
    fn agents_are_counted_apart() {
        let windows = MemoryWindows::new(10);
        let (a, b) = (agent("agent-1"), agent("agent-2"));
        windows.record(&look(a, "d1", LookupKind::Numero, true), at(0));
        let counts = windows.record(&look(b, "d2", LookupKind::Numero, true), at(0));
        assert_eq!(counts.distinct_dossiers, 1);
    }

    #[test]
    fn a_rule_fires_once_then_stays_silent_until_its_time() {
        let windows = MemoryWindows::new(10);
        let a = agent("agent-1");
        let rule = Rule::DistinctDossiers;
        assert!(windows.claim(a, rule, at(0), at(60), None));
        assert!(!windows.claim(a, rule, at(1), at(61), None));
        assert!(!windows.claim(a, rule, at(59), at(119), None));
        assert!(windows.claim(a, Rule::NirSearches, at(1), at(61), None));
        assert!(windows.claim(a, rule, at(60), at(120), None));
    }

    #[test]
    fn a_suspension_holds_until_its_end_for_that_agent_only() {
        let windows = MemoryWindows::new(10);
        let (a, b) = (agent("agent-1"), agent("agent-2"));
        assert!(windows.claim(a, Rule::OffHours, at(0), at(60), Some(at(15))));
        assert!(windows.is_blocked(a, at(14)));
        assert!(!windows.is_blocked(b, at(14)));
        assert!(!windows.is_blocked(a, at(15)));
    }

    #[test]
    fn idle_agents_are_swept_and_the_cap_drops_the_least_recently_seen() {
        let windows = MemoryWindows::new(3);
        for (i, sub) in ["a", "b", "c"].iter().enumerate() {
            windows.record(
                &look(agent(sub), "d", LookupKind::Numero, true),
                at(i as i64),
            );
        }
        assert_eq!(windows.agents(), 3);
        // A fourth agent: nobody is idle yet, so the least recently seen (a) goes.
        windows.record(&look(agent("d"), "d", LookupKind::Numero, true), at(3));
        assert_eq!(windows.agents(), 3);
        let counts = windows.record(&look(agent("a"), "x", LookupKind::Numero, true), at(4));
        assert_eq!(counts.lookups, 1, "a's windows were dropped");
        // Two hours later every window is empty: the next sweep leaves only
        // the agent just seen.
        windows.record(&look(agent("e"), "d", LookupKind::Numero, true), at(130));
        assert_eq!(windows.agents(), 1);
    }

    #[test]
    fn a_suspended_or_silenced_agent_is_not_swept_while_it_matters() {
        let windows = MemoryWindows::new(10);
        let a = agent("agent-1");
        windows.record(&look(a, "d", LookupKind::Numero, true), at(0));
        assert!(windows.claim(a, Rule::DistinctDossiers, at(0), at(60), Some(at(180))));
        windows.record(
            &look(agent("other"), "d", LookupKind::Numero, true),
            at(120),
        );
        assert!(windows.is_blocked(a, at(120)));
        assert_eq!(windows.agents(), 2);
    }

    #[test]
    fn one_window_never_holds_more_than_its_cap() {
        let windows = MemoryWindows::new(1);
        let a = agent("agent-1");
        let mut counts = Counts::default();
        for i in 0..MAX_EVENTS_PER_AGENT + 5 {
            counts = windows.record(&look(a, &i.to_string(), LookupKind::Nir, false), at(0));
        }
        let cap = MAX_EVENTS_PER_AGENT as u64;
        assert_eq!(
            counts,
            Counts {
                distinct_dossiers: cap,
                lookups: cap,
                not_found: cap,
                nir_searches: cap
            }
        );
    }
}
