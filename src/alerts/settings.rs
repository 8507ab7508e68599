//! The `[alerts]` settings: the rules' thresholds, the off-hours window, blocking, and their validation.

use serde::Deserialize;

/// The `[alerts]` section of `config/broker.toml`. Every key has a default, so
/// the section may be left out; the defaults are a starting point for a
/// security team, not a tuned profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// Distinct dossiers one agent may look up in a sliding hour; one more
    /// raises `distinct_dossiers`. 0 turns the rule off.
    #[serde(default = "default_distinct_dossiers_per_hour")]
    pub distinct_dossiers_per_hour: u32,
    /// Share of an agent's lookups in a sliding hour that found no dossier at
    /// or above which `not_found_ratio` is raised (enumeration of numbers).
    /// 0 turns the rule off.
    #[serde(default = "default_not_found_ratio")]
    pub not_found_ratio: f64,
    /// Lookups in the hour below which the not-found ratio is not judged.
    #[serde(default = "default_not_found_min_lookups")]
    pub not_found_min_lookups: u32,
    /// Searches by NIR one agent may make in a sliding hour; one more raises
    /// `nir_searches`. 0 turns the rule off.
    #[serde(default = "default_nir_searches_per_hour")]
    pub nir_searches_per_hour: u32,
    /// Local times (`HH:MM-HH:MM`, in `quotas.time_zone`; may cross midnight)
    /// at which any lookup raises `off_hours`. Empty turns the rule off.
    #[serde(default = "default_off_hours")]
    pub off_hours: String,
    /// Refuse an agent's data requests (`403 agent-suspended`) once one of its
    /// alerts fired.
    #[serde(default)]
    pub block: bool,
    /// How long an agent stays suspended when `block = true`.
    #[serde(default = "default_block_secs")]
    pub block_secs: u64,
    /// Agents whose windows are kept in this process; past it, the least
    /// recently seen agent's windows are dropped.
    #[serde(default = "default_max_agents")]
    pub max_agents: usize,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            distinct_dossiers_per_hour: default_distinct_dossiers_per_hour(),
            not_found_ratio: default_not_found_ratio(),
            not_found_min_lookups: default_not_found_min_lookups(),
            nir_searches_per_hour: default_nir_searches_per_hour(),
            off_hours: default_off_hours(),
            block: false,
            block_secs: default_block_secs(),
            max_agents: default_max_agents(),
        }
    }
}

fn default_distinct_dossiers_per_hour() -> u32 {
    60
}
fn default_not_found_ratio() -> f64 {
    0.5
}
fn default_not_found_min_lookups() -> u32 {
    20
}
fn default_nir_searches_per_hour() -> u32 {
    30
}
fn default_off_hours() -> String {
    "22:00-06:00".to_owned()
}
fn default_block_secs() -> u64 {
    3600
}
fn default_max_agents() -> usize {
    10_000
}

/// The largest count threshold accepted: the windows keep at most
/// [`super::windows::MAX_EVENTS_PER_AGENT`] events per agent, and must hold
/// more than any threshold so that trimming them never hides a crossing.
pub(crate) const MAX_THRESHOLD: u32 = 1_000;

/// The longest suspension accepted: a week.
const MAX_BLOCK_SECS: u64 = 7 * 86_400;

/// A daily window of local time, `start` included, `end` excluded, in minutes
/// after midnight. `start > end` crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffHours {
    pub(crate) start: u16,
    pub(crate) end: u16,
}

impl OffHours {
    /// `HH:MM-HH:MM`; `None` for the empty string (rule off).
    pub(crate) fn parse(text: &str) -> Result<Option<OffHours>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let (start, end) = text.split_once('-').ok_or_else(|| {
            "expected HH:MM-HH:MM, e.g. \"22:00-06:00\", or \"\" to turn the rule off".to_owned()
        })?;
        let (start, end) = (minutes(start.trim())?, minutes(end.trim())?);
        if start == end {
            return Err("the window is empty: start and end are the same time".to_owned());
        }
        Ok(Some(OffHours { start, end }))
    }

    /// Whether `minute` (after local midnight) falls in the window.
    pub(crate) fn contains(self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

fn minutes(hh_mm: &str) -> Result<u16, String> {
    let bad = || format!("{hh_mm:?} is not a time of day (HH:MM, 00:00 to 23:59)");
    let (h, m) = hh_mm.split_once(':').ok_or_else(bad)?;
    let ok = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !ok(h) || !ok(m) {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl AlertSettings {
    /// Every problem at once, each as `alerts.<key>: <message>`; empty when valid.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, value) in [
            (
                "distinct_dossiers_per_hour",
                self.distinct_dossiers_per_hour,
            ),
            ("nir_searches_per_hour", self.nir_searches_per_hour),
            ("not_found_min_lookups", self.not_found_min_lookups),
        ] {
            if value > MAX_THRESHOLD {
                problems.push(format!("alerts.{key}: must be at most {MAX_THRESHOLD}"));
            }
        }
        if !(0.0..=1.0).contains(&self.not_found_ratio) {
            problems.push("alerts.not_found_ratio: must be between 0 (off) and 1".to_owned());
        }
        if self.not_found_ratio > 0.0 && self.not_found_min_lookups == 0 {
            problems.push(
                "alerts.not_found_min_lookups: must be at least 1 while not_found_ratio is on"
                    .to_owned(),
            );
        }
        if let Err(problem) = OffHours::parse(&self.off_hours) {
            problems.push(format!("alerts.off_hours: {problem}"));
        }
        if !(1..=MAX_BLOCK_SECS).contains(&self.block_secs) {
            problems.push(format!(
                "alerts.block_secs: must be between 1 and {MAX_BLOCK_SECS} (a week)"
            ));
        }
        if self.max_agents == 0 {
            problems.push("alerts.max_agents: must be at least 1".to_owned());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AlertSettings, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn an_empty_section_takes_the_documented_defaults() {
        let s = parse("").unwrap();
        assert_eq!(s.distinct_dossiers_per_hour, 60);
        assert_eq!(s.not_found_ratio, 0.5);
        assert_eq!(s.not_found_min_lookups, 20);
        assert_eq!(s.nir_searches_per_hour, 30);
        assert_eq!(s.off_hours, "22:00-06:00");
        assert!(!s.block);
        assert_eq!(s.block_secs, 3600);
        assert_eq!(s.max_agents, 10_000);
        assert!(s.validate().is_empty());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(parse("distinct_dossiers_per_day = 10").is_err());
        assert!(parse("block = \"yes\"").is_err());
    }

    #[test]
    fn validation_reports_every_problem_at_once() {
        let s = parse(
            r#"
            distinct_dossiers_per_hour = 1001
            not_found_ratio = 1.5
            off_hours = "22h-6h"
            block_secs = 0
            max_agents = 0
            "#,
        )
        .unwrap();
        let problems = s.validate();
        let expected = [
            "alerts.distinct_dossiers_per_hour: must be at most 1000",
            "alerts.not_found_ratio: must be between 0 (off) and 1",
            "alerts.off_hours: \"22h\" is not a time of day",
            "alerts.block_secs: must be between 1 and 604800",
            "alerts.max_agents: must be at least 1",
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
    fn a_ratio_rule_needs_a_minimum_number_of_lookups() {
        let s = parse("not_found_min_lookups = 0").unwrap();
        assert_eq!(
            s.validate(),
            ["alerts.not_found_min_lookups: must be at least 1 while not_found_ratio is on"]
        );
        let off = parse("not_found_ratio = 0\nnot_found_min_lookups = 0").unwrap();
        assert!(off.validate().is_empty());
    }

    #[test]
    fn off_hours_parse_and_may_cross_midnight() {
        let night = OffHours::parse("22:00-06:00").unwrap().unwrap();
        assert_eq!(
            night,
            OffHours {
                start: 1320,
                end: 360
            }
        );
        for (minute, inside) in [
            (1319, false),
            (1320, true),
            (0, true),
            (359, true),
            (360, false),
            (720, false),
        ] {
            assert_eq!(night.contains(minute), inside, "{minute}");
        }
        let lunch = OffHours::parse(" 12:00 - 14:30 ").unwrap().unwrap();
        for (minute, inside) in [
            (719, false),
            (720, true),
            (869, true),
            (870, false),
            (0, false),
        ] {
            assert_eq!(lunch.contains(minute), inside, "{minute}");
        }
        assert_eq!(OffHours::parse(""), Ok(None));
        for bad in [
            "22:00",
            "24:00-06:00",
            "22:60-06:00",
            "2:00-06:00",
            "08:00-08:00",
            "ab:cd-06:00",
        ] {
            assert!(OffHours::parse(bad).is_err(), "{bad}");
        }
    }
}
