//! The `[quotas]` settings: backend, time zone, per-post and per-agent limits, Redis, and their validation.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::Deserialize;

use crate::domain::{PostCode, Subject};

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
    /// Required when `backend = "redis"`: `redis://` or `rediss://` (TLS). May
    /// carry a user and password: never log it (see [`redacted_url`]).
    #[serde(default)]
    pub redis_url: Option<String>,
    /// With a `rediss://` URL: the PEM bundle of the CAs trusted for Redis's
    /// certificate (the system's roots when absent).
    #[serde(default)]
    pub redis_ca_file: Option<PathBuf>,
    /// The Redis ACL user, when the URL does not name one.
    #[serde(default)]
    pub redis_username: Option<String>,
    /// A file holding the Redis password (`AUTH`), when the URL does not carry one.
    #[serde(default)]
    pub redis_password_file: Option<PathBuf>,
    /// How many replicas share the Redis counters: while Redis does not answer,
    /// each replica grants at most `1 / replicas_hint` of what remains of a day.
    #[serde(default = "default_replicas_hint")]
    pub replicas_hint: u32,
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
    /// Only posts with an entry in `posts` may make data requests; others get
    /// `403 post-not-registered`.
    #[serde(default)]
    pub known_posts_only: bool,
    /// Limits of every agent without an override, counted per post and `sub`.
    #[serde(default = "default_agent_limits")]
    pub agent_default: Limits,
    /// Per-agent overrides, keyed by `POST/sub` (e.g. `"TN-TUNIS/agent-42"`):
    /// an agent is its `sub` within its post.
    #[serde(default)]
    pub agents: BTreeMap<String, Limits>,
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

fn default_replicas_hint() -> u32 {
    1
}

fn default_agent_limits() -> Limits {
    Limits {
        per_second: 2,
        burst: 10,
        per_day: 500,
    }
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
        if self.known_posts_only && self.posts.is_empty() {
            problems.push(
                "quotas.known_posts_only: true with no [quotas.posts.<code>] entry refuses every post"
                    .to_owned(),
            );
        }
        self.agent_default
            .check("quotas.agent_default", &mut problems);
        for (name, limits) in &self.agents {
            let key = format!("quotas.agents.\"{name}\"");
            if let Err(why) = parse_agent(name) {
                problems.push(format!("{key}: {why}"));
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
        if self.replicas_hint == 0 {
            problems.push("quotas.replicas_hint: must be at least 1".to_owned());
        }
        match (&self.backend, &self.redis_url) {
            (Backend::Redis, None) => problems
                .push("quotas.redis_url: required when quotas.backend = \"redis\"".to_owned()),
            (_, Some(url)) => self.check_redis(url, &mut problems),
            _ => {}
        }
        problems
    }

    /// The Redis URL and its companions. Messages never echo the URL: it may
    /// hold a password.
    fn check_redis(&self, url: &str, problems: &mut Vec<String>) {
        let Ok(info) = redis::IntoConnectionInfo::into_connection_info(url) else {
            problems.push(
                "quotas.redis_url: not a Redis URL (expected redis://host:port/db or rediss://host:port/db)"
                    .to_owned(),
            );
            return;
        };
        let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        if self.redis_ca_file.is_some() && !tls {
            problems.push(
                "quotas.redis_ca_file: only with a rediss:// (TLS) quotas.redis_url".to_owned(),
            );
        }
        let settings = info.redis_settings();
        if self.redis_username.is_some() && settings.username().is_some() {
            problems.push(
                "quotas.redis_username: the URL already names a user; set it in one place"
                    .to_owned(),
            );
        }
        if self.redis_username.as_deref() == Some("") {
            problems.push("quotas.redis_username: must not be empty".to_owned());
        }
        let has_user = self.redis_username.is_some() || settings.username().is_some();
        let has_password = self.redis_password_file.is_some() || settings.password().is_some();
        if has_user && !has_password {
            // Redis would silently log in as the default user instead.
            problems.push(
                "quotas.redis_username: needs a password, in the URL or quotas.redis_password_file"
                    .to_owned(),
            );
        }
        if self.redis_password_file.is_some() && settings.password().is_some() {
            problems.push(
                "quotas.redis_password_file: the URL already carries a password; set it in one place"
                    .to_owned(),
            );
        }
    }
}

/// Splits an agent override's name, `POST/sub`, at its first `/` (a post code
/// holds none; a `sub` may).
pub(crate) fn parse_agent(name: &str) -> Result<(PostCode, Subject), String> {
    let Some((post, sub)) = name.split_once('/') else {
        return Err("name an agent as \"POST/sub\", e.g. \"TN-TUNIS/agent-42\"".to_owned());
    };
    let post = PostCode::parse(post).map_err(|e| e.to_string())?;
    let sub = Subject::parse(sub).map_err(|e| e.to_string())?;
    Ok((post, sub))
}

/// The URL with its password replaced by `***`, for logs and messages; a URL
/// that does not parse is not shown at all.
pub fn redacted_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            // A query may carry settings, a password among them: it is left out.
            let rest = rest.split(['?', '#']).next().unwrap_or("");
            let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split(':').next().unwrap_or("");
                    if userinfo.contains(':') {
                        format!("{scheme}://{user}:***@{host}{tail}")
                    } else {
                        format!("{scheme}://***@{host}{tail}")
                    }
                }
                None => format!("{scheme}://{authority}{tail}"),
            }
        }
        None => "(not a URL)".to_owned(),
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

/// The limits of every post and agent, resolved once from the settings.
#[derive(Debug, Clone)]
pub(crate) struct LimitTable {
    default: Limits,
    posts: HashMap<PostCode, Limits>,
    known_posts_only: bool,
    agent_default: Limits,
    agents: HashMap<PostCode, HashMap<Subject, Limits>>,
}

impl LimitTable {
    /// Overrides whose name does not parse are left out; [`QuotaSettings::validate`]
    /// reports them before this is built.
    pub(crate) fn new(settings: &QuotaSettings) -> Self {
        let posts = settings
            .posts
            .iter()
            .filter_map(|(code, limits)| PostCode::parse(code).ok().map(|code| (code, *limits)))
            .collect();
        let mut agents: HashMap<PostCode, HashMap<Subject, Limits>> = HashMap::new();
        for (name, limits) in &settings.agents {
            if let Ok((post, sub)) = parse_agent(name) {
                agents.entry(post).or_default().insert(sub, *limits);
            }
        }
        Self {
            default: settings.default,
            posts,
            known_posts_only: settings.known_posts_only,
            agent_default: settings.agent_default,
            agents,
        }
    }

    pub(crate) fn for_post(&self, post: &PostCode) -> Limits {
        self.posts.get(post).copied().unwrap_or(self.default)
    }

    pub(crate) fn for_agent(&self, post: &PostCode, sub: &Subject) -> Limits {
        self.agents
            .get(post)
            .and_then(|subs| subs.get(sub))
            .copied()
            .unwrap_or(self.agent_default)
    }

    /// Whether `post` may make data requests: every post may, unless
    /// `known_posts_only` asks for an entry in `quotas.posts`.
    pub(crate) fn is_registered(&self, post: &PostCode) -> bool {
        !self.known_posts_only || self.posts.contains_key(post)
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
        assert!(!s.known_posts_only);
        assert_eq!(s.replicas_hint, 1);
        assert_eq!(
            s.agent_default,
            Limits {
                per_second: 2,
                burst: 10,
                per_day: 500
            }
        );
        assert!(s.validate().is_empty());
    }

    #[test]
    fn agent_overrides_are_named_by_post_and_sub() {
        let s = parse(
            r#"
            default = { per_second = 5, burst = 20, per_day = 2000 }
            agent_default = { per_second = 1, burst = 5, per_day = 200 }
            [agents."TN-TUNIS/agent-42"]
            per_second = 3
            burst = 15
            per_day = 900
            [agents."TN-TUNIS/idp/with/slashes"]
            per_second = 1
            burst = 1
            per_day = 1
            "#,
        )
        .unwrap();
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        let table = LimitTable::new(&s);
        let tunis = PostCode::parse("TN-TUNIS").unwrap();
        let rabat = PostCode::parse("MA-RABAT").unwrap();
        let sub = |s: &str| Subject::parse(s).unwrap();
        assert_eq!(table.for_agent(&tunis, &sub("agent-42")).burst, 15);
        assert_eq!(table.for_agent(&tunis, &sub("idp/with/slashes")).burst, 1);
        assert_eq!(table.for_agent(&tunis, &sub("agent-43")).burst, 5);
        assert_eq!(table.for_agent(&rabat, &sub("agent-42")).burst, 5);
    }

    #[test]
    fn agent_override_names_and_new_settings_are_validated_together() {
        let s = parse(
            r#"
            known_posts_only = true
            replicas_hint = 0
            redis_url = "redis://127.0.0.1:6379/0"
            redis_ca_file = "ca.pem"
            default = { per_second = 5, burst = 20, per_day = 2000 }
            agent_default = { per_second = 0, burst = 5, per_day = 200 }
            [agents.agent-42]
            per_second = 1
            burst = 1
            per_day = 1
            [agents."tunis/agent-42"]
            per_second = 1
            burst = 1
            per_day = 0
            "#,
        )
        .unwrap();
        let problems = s.validate();
        let expected = [
            "quotas.known_posts_only: true with no [quotas.posts.<code>] entry",
            "quotas.agent_default.per_second: must be at least 1",
            "quotas.agents.\"agent-42\": name an agent as \"POST/sub\"",
            "quotas.agents.\"tunis/agent-42\": a post code",
            "quotas.agents.\"tunis/agent-42\".per_day: must be at least 1",
            "quotas.replicas_hint: must be at least 1",
            "quotas.redis_ca_file: only with a rediss:// (TLS) quotas.redis_url",
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
    fn redis_credentials_are_set_in_one_place_only() {
        let s = parse(
            r#"
            backend = "redis"
            redis_url = "rediss://broker:s3cret@redis.internal:6380/0"
            redis_username = "other"
            redis_password_file = "/run/secrets/redis"
            redis_ca_file = "/etc/caf-broker/redis-ca.pem"
            default = { per_second = 5, burst = 20, per_day = 2000 }
            "#,
        )
        .unwrap();
        let problems = s.validate();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("quotas.redis_username: the URL already names a user"));
        assert!(problems[1].starts_with("quotas.redis_password_file: the URL already carries"));
        assert!(problems.iter().all(|p| !p.contains("s3cret")));
    }

    #[test]
    fn an_acl_user_without_a_password_is_refused() {
        let s = parse(
            r#"
            backend = "redis"
            redis_url = "rediss://redis.internal:6380/0"
            redis_username = "caf-broker"
            default = { per_second = 5, burst = 20, per_day = 2000 }
            "#,
        )
        .unwrap();
        let problems = s.validate();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].starts_with("quotas.redis_username: needs a password"));
    }

    #[test]
    fn a_redacted_url_keeps_everything_but_the_password() {
        assert_eq!(
            redacted_url("rediss://broker:s3cret@redis.internal:6380/0"),
            "rediss://broker:***@redis.internal:6380/0"
        );
        assert_eq!(
            redacted_url("redis://:s3cret@127.0.0.1:6379"),
            "redis://:***@127.0.0.1:6379"
        );
        assert_eq!(
            redacted_url("redis://s3cret@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redacted_url("redis://127.0.0.1:6379/0?password=s3cret"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redacted_url("s3cret"), "(not a URL)");
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

    /// The error of `toml_text`, which must fail only for the reason given.
    fn refused(toml_text: &str) -> String {
        parse(toml_text).unwrap_err().message().to_owned()
    }

    const DEFAULT: &str = "default = { per_second = 5, burst = 20, per_day = 2000 }";

    #[test]
    fn unknown_keys_are_rejected() {
        // What the cases below change is valid without the change.
        assert!(parse(DEFAULT).is_ok());
        let nested =
            refused("default = { per_second = 5, burst = 20, per_day = 2000, per_hour = 3 }");
        assert!(nested.starts_with("unknown field `per_hour`"), "{nested}");
        let top = refused(&format!(
            "{DEFAULT}\ndefaults = {{ per_second = 5, burst = 20, per_day = 2000 }}"
        ));
        assert!(top.starts_with("unknown field `defaults`"), "{top}");
    }

    #[test]
    fn an_unknown_backend_is_rejected_with_the_known_ones() {
        assert!(parse(&format!("backend = \"redis\"\n{DEFAULT}")).is_ok());
        let message = refused(&format!("backend = \"memcached\"\n{DEFAULT}"));
        assert_eq!(
            message,
            "unknown variant `memcached`, expected `local` or `redis`"
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
