//! Bulk-lookup detection: per-agent sliding windows that raise an alert when an
//! agent's lookups look like extraction, and the suspension that may follow.
//!
//! # What is observed
//!
//! The broker hands the [`Detector`] one [`Observation`] per lookup that
//! reached the CAF or the cache (authorised, within quota): the agent (`post`
//! and `sub`), the dossier as the audit log's keyed pseudonym (never a clear
//! numéro or NIR), whether it was a NIR search, and whether a dossier was
//! found. The time is the wall time of the injected [`Clock`], so tests move
//! time by hand.
//!
//! # Rules ([`rules`])
//!
//! Over the last hour (a sliding window) of one agent: more distinct dossiers
//! than `alerts.distinct_dossiers_per_hour`; a not-found share at or above
//! `alerts.not_found_ratio` over at least `alerts.not_found_min_lookups`
//! lookups (numbers tried in sequence); more NIR searches than
//! `alerts.nir_searches_per_hour`; and any lookup within `alerts.off_hours`,
//! local time in `quotas.time_zone`. A rule that fires stays silent for that
//! agent for an hour (until the night is over for `off_hours`), so an agent
//! raises at most a handful of alerts an hour, however fast it goes on.
//!
//! # Suspension
//!
//! With `alerts.block = true`, an alert suspends its agent for
//! `alerts.block_secs`: [`Detector::is_blocked`] is true meanwhile, and the
//! broker refuses that agent's data requests; other agents of its post are
//! served as before.
//!
//! # State ([`windows`], [`redis`])
//!
//! In memory, bounded: idle agents are swept, at most `alerts.max_agents` are
//! kept, and each window keeps at most [`windows::MAX_EVENTS_PER_AGENT`]
//! events. With a [`RedisLink`] (when the quota backend is Redis), the windows,
//! silences and suspensions live in Redis and are shared by every replica;
//! while Redis does not answer, the in-memory windows judge alone.
//!
//! This module knows neither the quota, the audit log nor HTTP: it returns the
//! [`Alert`]s that fired, and the broker logs, counts and records them.

mod redis;
mod rules;
mod settings;
mod windows;

use std::sync::Arc;

use jiff::SignedDuration;
use jiff::tz::TimeZone;

use crate::clock::Clock;
use crate::domain::Agent;

pub use self::redis::RedisLink;
pub use rules::{Alert, Counts, Figures, Rule};
pub use settings::AlertSettings;

use self::redis::RedisStore;
use rules::RuleSet;
use windows::MemoryWindows;

/// What was looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    Numero,
    Nir,
}

/// One lookup that reached the CAF or the cache.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub agent: Agent<'a>,
    /// The dossier's keyed pseudonym, the same on every replica.
    pub dossier: &'a str,
    pub kind: LookupKind,
    /// Whether a dossier was found.
    pub found: bool,
}

/// Why the detector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// The settings do not validate; each entry is `alerts.<key>: <message>`.
    #[error("invalid alert settings: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// The detector of this process: built once, shared by every worker.
pub struct Detector {
    rules: RuleSet,
    block: Option<SignedDuration>,
    clock: Arc<dyn Clock>,
    memory: MemoryWindows,
    shared: Option<RedisStore>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("rules", &self.rules)
            .field("block", &self.block)
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// A detector for `settings`, judging off-hours in `time_zone` (an IANA
    /// name), sharing its state through `shared` when given.
    pub fn new(
        settings: &AlertSettings,
        time_zone: &str,
        clock: Arc<dyn Clock>,
        shared: Option<RedisLink>,
    ) -> Result<Detector, AlertsError> {
        let mut problems = settings.validate();
        let tz = TimeZone::get(time_zone).map_err(|_| {
            format!(
                "quotas.time_zone: unknown time zone {time_zone:?}, needed for alerts.off_hours"
            )
        });
        let tz = tz.unwrap_or_else(|problem| {
            problems.push(problem);
            TimeZone::UTC
        });
        let shared = match shared.map(RedisStore::new).transpose() {
            Ok(shared) => shared,
            Err(_) => {
                problems.push("quotas.redis_url: cannot be used for alerts".to_owned());
                None
            }
        };
        if !problems.is_empty() {
            return Err(AlertsError::Invalid(problems));
        }
        let block_secs = i64::try_from(settings.block_secs).unwrap_or(i64::MAX);
        Ok(Detector {
            rules: RuleSet::new(settings, tz),
            block: settings
                .block
                .then(|| SignedDuration::from_secs(block_secs)),
            clock,
            memory: MemoryWindows::new(settings.max_agents),
            shared,
        })
    }

    /// Whether any rule is on: with none, lookups need not be observed.
    pub fn is_on(&self) -> bool {
        self.rules.any()
    }

    /// Records one lookup and returns the alerts it raised: each rule fires
    /// once when crossed, then stays silent for that agent for a while.
    pub async fn observe(&self, observation: Observation<'_>) -> Vec<Alert> {
        if !self.rules.any() {
            return Vec::new();
        }
        let now = self.clock.wall();
        let counts = match &self.shared {
            Some(shared) => match shared.record(&observation, now).await {
                Ok(counts) => counts,
                Err(_) => self.memory.record(&observation, now),
            },
            None => self.memory.record(&observation, now),
        };
        let block_until = self.block.and_then(|b| now.checked_add(b).ok());
        let mut alerts = Vec::new();
        for crossing in self.rules.crossings(&counts, now) {
            let rule = crossing.alert.rule;
            let fired = match &self.shared {
                Some(shared) => {
                    let silent_ms = crossing.silent_until.duration_since(now).as_millis();
                    let block_ms = self.block.map(|b| b.as_millis());
                    let silent_ms = i64::try_from(silent_ms).unwrap_or(i64::MAX);
                    let block_ms = block_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
                    match shared
                        .claim(observation.agent, rule, now, silent_ms, block_ms)
                        .await
                    {
                        Ok(fired) => {
                            // Kept here too, so that it holds if Redis goes away.
                            if let (true, Some(until)) = (fired, block_until) {
                                self.memory.block(observation.agent, now, until);
                            }
                            fired
                        }
                        Err(_) => self.memory.claim(
                            observation.agent,
                            rule,
                            now,
                            crossing.silent_until,
                            block_until,
                        ),
                    }
                }
                None => self.memory.claim(
                    observation.agent,
                    rule,
                    now,
                    crossing.silent_until,
                    block_until,
                ),
            };
            if fired {
                alerts.push(crossing.alert);
            }
        }
        alerts
    }

    /// Whether an alert may suspend an agent (`alerts.block`): without it, no
    /// agent is ever suspended and [`Detector::is_blocked`] need not be asked.
    pub fn blocks(&self) -> bool {
        self.block.is_some()
    }

    /// Whether the agent is suspended now (always false unless `alerts.block`).
    pub async fn is_blocked(&self, agent: Agent<'_>) -> bool {
        if !self.blocks() {
            return false;
        }
        let now = self.clock.wall();
        if self.memory.is_blocked(agent, now) {
            return true;
        }
        match &self.shared {
            Some(shared) => shared.is_blocked(agent, now).await.unwrap_or(false),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, SystemClock};
    use crate::domain::{PostCode, Subject};
    use std::time::Duration;

    struct Harness {
        detector: Detector,
        clock: Arc<ManualClock>,
    }

    impl Harness {
        fn new(toml_text: &str, shared: Option<RedisLink>) -> Harness {
            let settings: AlertSettings = toml::from_str(toml_text).unwrap();
            let clock = Arc::new(ManualClock::new("2026-06-15T08:00:00Z".parse().unwrap()));
            let detector = Detector::new(&settings, "Europe/Paris", clock.clone(), shared).unwrap();
            Harness { detector, clock }
        }

        fn advance(&self, minutes: u64) {
            self.clock.advance(Duration::from_secs(minutes * 60));
        }

        async fn look(
            &self,
            agent: Agent<'_>,
            dossier: &str,
            kind: LookupKind,
            found: bool,
        ) -> Vec<Rule> {
            let observation = Observation {
                agent,
                dossier,
                kind,
                found,
            };
            let alerts = self.detector.observe(observation).await;
            alerts.into_iter().map(|a| a.rule).collect()
        }
    }

    /// A test agent at `TN-TUNIS`, alive for the whole test process.
    fn agent(sub: &str) -> Agent<'static> {
        Agent {
            post: Box::leak(Box::new(PostCode::parse("TN-TUNIS").unwrap())),
            sub: Box::leak(Box::new(Subject::parse(sub).unwrap())),
        }
    }

    #[tokio::test]
    async fn a_rule_fires_once_when_crossed_and_again_an_hour_later() {
        let h = Harness::new("distinct_dossiers_per_hour = 3", None);
        let a = agent("agent-1");
        for i in 0..3 {
            assert!(
                h.look(a, &format!("d{i}"), LookupKind::Numero, true)
                    .await
                    .is_empty()
            );
        }
        assert_eq!(
            h.look(a, "d3", LookupKind::Numero, true).await,
            [Rule::DistinctDossiers]
        );
        for i in 4..20 {
            assert!(
                h.look(a, &format!("d{i}"), LookupKind::Numero, true)
                    .await
                    .is_empty()
            );
        }
        h.advance(60);
        // The windows slid too: the agent must go over the threshold again.
        for i in 20..23 {
            assert!(
                h.look(a, &format!("d{i}"), LookupKind::Numero, true)
                    .await
                    .is_empty()
            );
        }
        assert_eq!(
            h.look(a, "d23", LookupKind::Numero, true).await,
            [Rule::DistinctDossiers]
        );
    }

    #[tokio::test]
    async fn blocking_suspends_only_the_agent_that_raised_the_alert_for_its_time() {
        let h = Harness::new(
            "nir_searches_per_hour = 1\nblock = true\nblock_secs = 900",
            None,
        );
        let (a, b) = (agent("agent-1"), agent("agent-2"));
        h.look(a, "n1", LookupKind::Nir, true).await;
        assert!(!h.detector.is_blocked(a).await);
        assert_eq!(
            h.look(a, "n2", LookupKind::Nir, true).await,
            [Rule::NirSearches]
        );
        assert!(h.detector.is_blocked(a).await);
        assert!(!h.detector.is_blocked(b).await);
        h.advance(15);
        assert!(!h.detector.is_blocked(a).await);
    }

    #[tokio::test]
    async fn without_block_an_alert_suspends_nobody() {
        let h = Harness::new("nir_searches_per_hour = 1", None);
        let a = agent("agent-1");
        h.look(a, "n1", LookupKind::Nir, true).await;
        assert_eq!(
            h.look(a, "n2", LookupKind::Nir, true).await,
            [Rule::NirSearches]
        );
        assert!(!h.detector.is_blocked(a).await);
    }

    #[tokio::test]
    async fn an_unreachable_redis_falls_back_to_the_memory_windows() {
        // Nothing listens on port 1: every call fails fast.
        let link = RedisLink {
            client: ::redis::Client::open("redis://127.0.0.1:1/0").unwrap(),
            timeout: std::time::Duration::from_millis(200),
        };
        let h = Harness::new("distinct_dossiers_per_hour = 2\nblock = true", Some(link));
        let a = agent("agent-1");
        assert!(h.look(a, "d1", LookupKind::Numero, true).await.is_empty());
        assert!(h.look(a, "d2", LookupKind::Numero, true).await.is_empty());
        assert_eq!(
            h.look(a, "d3", LookupKind::Numero, true).await,
            [Rule::DistinctDossiers]
        );
        assert!(h.detector.is_blocked(a).await);
    }

    #[test]
    fn invalid_settings_and_an_unknown_time_zone_are_all_reported() {
        let settings: AlertSettings = toml::from_str("off_hours = \"late\"").unwrap();
        let Err(AlertsError::Invalid(problems)) =
            Detector::new(&settings, "Mars/Olympus", Arc::new(SystemClock), None)
        else {
            panic!("invalid settings were accepted");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
