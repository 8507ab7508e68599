//! The `[quotas]` settings: backend, time zone, default and per-post limits, and their validation.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use crate::domain::PostCode;

use super::budget::ErrorBudgetLimits;
use super::day::Calendar;

/// The `[quotas]` section of `config/broker.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    /// Where the counters live: in this process (`local`) or shared by every
    /// replica (`redis`).
    #[serde(default)]
    pub backend: Backend,
    /// Required when `backend = "redis"`. May carry a password: never log it.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// IANA time zone whose midnight resets the daily quotas.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// What to do while Redis does not answer.
    #[serde(default)]
    pub on_redis_failure: RedisFailure,
    /// Upper bound of one Redis call (and of the initial connection).
    #[serde(default = "default_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    /// Limits of every post without an override.
    pub default: Limits,
    /// Per-post overrides, keyed by post code (e.g. `TN-TUNIS`).
    #[serde(default)]
    pub posts: BTreeMap<String, Limits>,
    /// Refusals (400, 403, 404, 429) each agent may cause before it is
    /// refused at once; see [`super::budget`].
    #[serde(default)]
    pub agent_error_budget: ErrorBudgetLimits,
}

/// The limits of one consular post.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Sustained rate: one request's worth of burst capacity comes back every
    /// `1 / per_second` seconds.
    pub per_second: u32,
    /// Requests that may be made at once when the post has been idle.
    pub burst: u32,
    /// Requests per local calendar day.
    pub per_day: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
    Redis,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisFailure {
    /// Enforce the same limits in this process alone until Redis answers again.
    #[default]
    Local,
    /// Refuse every data request (503) until Redis answers again.
    Refuse,
}

fn default_time_zone() -> String {
    "Europe/Paris".to_owned()
}

fn default_redis_timeout_ms() -> u64 {
    200
}

impl QuotaSettings {
    /// Every problem at once, each as `quotas.<key>: <message>`; empty when valid.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.default.check("quotas.default", &mut problems);
        for (code, limits) in &self.posts {
            let key = format!("quotas.posts.{code}");
            if let Err(error) = PostCode::parse(code) {
                problems.push(format!("{key}: {error}"));
            }
            limits.check(&key, &mut problems);
        }
        if Calendar::new(&self.time_zone).is_err() {
            problems.push(format!(
                "quotas.time_zone: unknown time zone {:?}, expected an IANA name such as \"Europe/Paris\"",
                self.time_zone
            ));
        }
        self.agent_error_budget
            .check("quotas.agent_error_budget", &mut problems);
        if self.redis_timeout_ms == 0 {
            problems.push("quotas.redis_timeout_ms: must be at least 1".to_owned());
        }
        match (&self.backend, &self.redis_url) {
            (Backend::Redis, None) => problems
                .push("quotas.redis_url: required when quotas.backend = \"redis\"".to_owned()),
            (_, Some(url)) if redis::Client::open(url.as_str()).is_err() => {
                // The URL may hold a password: say what is wrong, not what it is.
                problems.push(
                    "quotas.redis_url: not a Redis URL (expected redis://host:port/db)".to_owned(),
                );
            }
            _ => {}
        }
        problems
    }
}

impl Limits {
    fn check(&self, key: &str, problems: &mut Vec<String>) {
        if self.per_second == 0 {
            problems.push(format!("{key}.per_second: must be at least 1"));
        }
        if self.burst == 0 {
            problems.push(format!("{key}.burst: must be at least 1"));
        }
        if self.per_day == 0 {
            problems.push(format!("{key}.per_day: must be at least 1"));
        }
    }

    /// Seconds for an empty burst to refill completely: the `w` of the burst policy.
    pub(crate) fn burst_window_secs(&self) -> u64 {
        u64::from(self.burst).div_ceil(u64::from(self.per_second.max(1)))
    }
}

/// The limits of every post, resolved once from the settings.
#[derive(Debug, Clone)]
pub(crate) struct LimitTable {
    default: Limits,
    posts: HashMap<PostCode, Limits>,
}

impl LimitTable {
    /// Overrides whose post code does not parse are left out; [`QuotaSettings::validate`]
    /// reports them before this is built.
    pub(crate) fn new(settings: &QuotaSettings) -> Self {
        let posts = settings
            .posts
            .iter()
            .filter_map(|(code, limits)| PostCode::parse(code).ok().map(|code| (code, *limits)))
            .collect();
        Self {
            default: settings.default,
            posts,
        }
    }

    pub(crate) fn for_post(&self, post: &PostCode) -> Limits {
        self.posts.get(post).copied().unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<QuotaSettings, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn the_shipped_shape_parses_with_its_defaults() {
        let s = parse("default = { per_second = 5, burst = 20, per_day = 2000 }").unwrap();
        assert_eq!(s.backend, Backend::Local);
        assert_eq!(s.time_zone, "Europe/Paris");
        assert_eq!(s.on_redis_failure, RedisFailure::Local);
        assert_eq!(s.redis_timeout_ms, 200);
        assert!(s.posts.is_empty());
        assert!(s.validate().is_empty());
    }

    #[test]
    fn per_post_overrides_and_redis_settings_parse() {
        let s = parse(
            r#"
            backend = "redis"
            redis_url = "redis://127.0.0.1:6379/0"
            on_redis_failure = "refuse"
            default = { per_second = 5, burst = 20, per_day = 2000 }
            [posts.TN-TUNIS]
            per_second = 10
            burst = 40
            per_day = 5000
            "#,
        )
        .unwrap();
        assert_eq!(s.backend, Backend::Redis);
        assert_eq!(s.on_redis_failure, RedisFailure::Refuse);
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        let table = LimitTable::new(&s);
        let tunis = PostCode::parse("TN-TUNIS").unwrap();
        let rabat = PostCode::parse("MA-RABAT").unwrap();
        assert_eq!(table.for_post(&tunis).burst, 40);
        assert_eq!(table.for_post(&rabat).burst, 20);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(
            parse("default = { per_second = 5, burst = 20, per_day = 2000, per_hour = 3 }")
                .is_err()
        );
        assert!(parse("defaults = { per_second = 5, burst = 20, per_day = 2000 }").is_err());
        assert!(
            parse(
                "backend = \"memcached\"\ndefault = { per_second = 5, burst = 20, per_day = 2000 }"
            )
            .is_err()
        );
    }

    #[test]
    fn validation_reports_every_problem_at_once() {
        let s = parse(
            r#"
            backend = "redis"
            time_zone = "Mars/Olympus"
            redis_timeout_ms = 0
            default = { per_second = 0, burst = 0, per_day = 0 }
            [posts.tunis]
            per_second = 1
            burst = 0
            per_day = 10
            "#,
        )
        .unwrap();
        let problems = s.validate();
        let expected = [
            "quotas.default.per_second: must be at least 1",
            "quotas.default.burst: must be at least 1",
            "quotas.default.per_day: must be at least 1",
            "quotas.posts.tunis: a post code",
            "quotas.posts.tunis.burst: must be at least 1",
            "quotas.time_zone: unknown time zone \"Mars/Olympus\"",
            "quotas.redis_timeout_ms: must be at least 1",
            "quotas.redis_url: required when quotas.backend = \"redis\"",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (problem, start) in problems.iter().zip(expected) {
            assert!(
                problem.starts_with(start),
                "{problem:?} should start with {start:?}"
            );
        }
    }

    #[test]
    fn a_malformed_redis_url_is_reported_without_echoing_it() {
        let s = parse(
            r#"
            backend = "redis"
            redis_url = "http://user:s3cret@example"
            default = { per_second = 5, burst = 20, per_day = 2000 }
            "#,
        )
        .unwrap();
        let problems = s.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("quotas.redis_url: not a Redis URL"));
        assert!(!problems[0].contains("s3cret"));
    }

    #[test]
    fn the_burst_window_is_the_time_to_refill_an_empty_burst() {
        let limits = Limits {
            per_second: 5,
            burst: 20,
            per_day: 2000,
        };
        assert_eq!(limits.burst_window_secs(), 4);
        let limits = Limits {
            per_second: 3,
            burst: 10,
            per_day: 1,
        };
        assert_eq!(limits.burst_window_secs(), 4);
    }
}
