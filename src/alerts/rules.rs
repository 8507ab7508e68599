//! The detection rules: what an agent's counts over the last hour (or the
//! local time) must reach for each rule to fire, and for how long a rule that
//! fired stays silent. Pure: no state, no IO.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::settings::{AlertSettings, OffHours};

/// The length of every sliding window, and how long a rate rule stays silent
/// for an agent once it fired.
pub(crate) const WINDOW: SignedDuration = SignedDuration::from_hours(1);

/// A detection rule; its name is the `rule` of the audit record, the log event
/// and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// More distinct dossiers in an hour than `alerts.distinct_dossiers_per_hour`.
    DistinctDossiers,
    /// A share of lookups that found nothing at or above `alerts.not_found_ratio`.
    NotFoundRatio,
    /// More NIR searches in an hour than `alerts.nir_searches_per_hour`.
    NirSearches,
    /// A lookup during `alerts.off_hours`.
    OffHours,
}

impl Rule {
    pub const ALL: [Rule; 4] = [
        Rule::DistinctDossiers,
        Rule::NotFoundRatio,
        Rule::NirSearches,
        Rule::OffHours,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::DistinctDossiers => "distinct_dossiers",
            Rule::NotFoundRatio => "not_found_ratio",
            Rule::NirSearches => "nir_searches",
            Rule::OffHours => "off_hours",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What one agent did in the last hour, the current lookup included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub distinct_dossiers: u64,
    pub lookups: u64,
    pub not_found: u64,
    pub nir_searches: u64,
}

/// Figures of an alert, by name: numbers only, so that no identifier can ride along.
pub type Figures = BTreeMap<String, serde_json::Number>;

/// A rule that fired for an agent, with what it measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub rule: Rule,
    pub figures: Figures,
}

/// A rule whose condition holds now, and until when it stays silent if it fires.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Crossing {
    pub(crate) alert: Alert,
    pub(crate) silent_until: Timestamp,
}

/// The rules as configured, ready to judge counts.
#[derive(Debug, Clone)]
pub(crate) struct RuleSet {
    distinct_dossiers: u32,
    not_found_ratio: f64,
    not_found_min_lookups: u32,
    nir_searches: u32,
    off_hours: Option<OffHours>,
    tz: TimeZone,
}

impl RuleSet {
    /// Settings that do not validate are refused before this is built; an
    /// unreadable off-hours window is then taken as off.
    pub(crate) fn new(settings: &AlertSettings, tz: TimeZone) -> RuleSet {
        RuleSet {
            distinct_dossiers: settings.distinct_dossiers_per_hour,
            not_found_ratio: settings.not_found_ratio,
            not_found_min_lookups: settings.not_found_min_lookups,
            nir_searches: settings.nir_searches_per_hour,
            off_hours: OffHours::parse(&settings.off_hours).ok().flatten(),
            tz,
        }
    }

    /// Whether any rule is on: with none, lookups need not be observed.
    pub(crate) fn any(&self) -> bool {
        self.distinct_dossiers > 0
            || self.not_found_ratio > 0.0
            || self.nir_searches > 0
            || self.off_hours.is_some()
    }

    /// Every rule whose condition holds for `counts` at `now`.
    pub(crate) fn crossings(&self, counts: &Counts, now: Timestamp) -> Vec<Crossing> {
        let hour_later = now.checked_add(WINDOW).unwrap_or(Timestamp::MAX);
        let window_secs = WINDOW.as_secs();
        let mut crossings = Vec::new();
        let mut rate = |rule: Rule, figures: Vec<(&str, serde_json::Number)>| {
            crossings.push(Crossing {
                alert: Alert {
                    rule,
                    figures: figures
                        .into_iter()
                        .map(|(name, value)| (name.to_owned(), value))
                        .chain([("window_secs".to_owned(), window_secs.into())])
                        .collect(),
                },
                silent_until: hour_later,
            });
        };
        let threshold = u64::from(self.distinct_dossiers);
        if threshold > 0 && counts.distinct_dossiers > threshold {
            rate(
                Rule::DistinctDossiers,
                vec![
                    ("distinct_dossiers", counts.distinct_dossiers.into()),
                    ("threshold", threshold.into()),
                ],
            );
        }
        if self.not_found_ratio > 0.0
            && counts.lookups >= u64::from(self.not_found_min_lookups.max(1))
            && counts.not_found as f64 >= self.not_found_ratio * counts.lookups as f64
        {
            let ratio = counts.not_found as f64 / counts.lookups as f64;
            rate(
                Rule::NotFoundRatio,
                vec![
                    ("lookups", counts.lookups.into()),
                    ("not_found", counts.not_found.into()),
                    ("ratio", number(ratio)),
                    ("threshold", number(self.not_found_ratio)),
                ],
            );
        }
        let threshold = u64::from(self.nir_searches);
        if threshold > 0 && counts.nir_searches > threshold {
            rate(
                Rule::NirSearches,
                vec![
                    ("nir_searches", counts.nir_searches.into()),
                    ("threshold", threshold.into()),
                ],
            );
        }
        if let Some(crossing) = self.off_hours_crossing(now) {
            crossings.push(crossing);
        }
        crossings
    }

    /// A lookup at `now` falls in the off-hours window: the alert, silent
    /// until the window's end, so that it fires once per agent and night.
    fn off_hours_crossing(&self, now: Timestamp) -> Option<Crossing> {
        let window = self.off_hours?;
        let local = now.to_zoned(self.tz.clone());
        let minute =
            u16::from(local.hour().unsigned_abs()) * 60 + u16::from(local.minute().unsigned_abs());
        if !window.contains(minute) {
            return None;
        }
        // The window ends today, unless it crosses midnight and began today.
        let ends_tomorrow = window.start > window.end && minute >= window.start;
        let date = match ends_tomorrow {
            true => local.date().tomorrow().ok()?,
            false => local.date(),
        };
        let (hour, min) = (window.end / 60, window.end % 60);
        let end = date
            .at(i8::try_from(hour).ok()?, i8::try_from(min).ok()?, 0, 0)
            .to_zoned(self.tz.clone())
            .map(|z| z.timestamp())
            .unwrap_or(now)
            // Never silent for less than a minute, even at a daylight-saving edge.
            .max(now.checked_add(SignedDuration::from_mins(1)).unwrap_or(now));
        Some(Crossing {
            alert: Alert {
                rule: Rule::OffHours,
                figures: Figures::from([
                    ("local_hour".to_owned(), local.hour().into()),
                    ("local_minute".to_owned(), local.minute().into()),
                ]),
            },
            silent_until: end,
        })
    }
}

/// A ratio as a JSON number, rounded to three decimals.
fn number(value: f64) -> serde_json::Number {
    serde_json::Number::from_f64((value * 1000.0).round() / 1000.0).unwrap_or_else(|| 0.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(toml_text: &str) -> RuleSet {
        let settings: AlertSettings = toml::from_str(toml_text).unwrap();
        RuleSet::new(&settings, TimeZone::get("Europe/Paris").unwrap())
    }

    /// 10:00 in Paris (summer time).
    fn day() -> Timestamp {
        "2026-06-15T08:00:00Z".parse().unwrap()
    }

    fn fired(crossings: &[Crossing]) -> Vec<Rule> {
        crossings.iter().map(|c| c.alert.rule).collect()
    }

    #[test]
    fn a_count_rule_fires_only_above_its_threshold() {
        let set = rules("");
        let at = |distinct, nir| Counts {
            distinct_dossiers: distinct,
            lookups: distinct,
            not_found: 0,
            nir_searches: nir,
        };
        assert!(set.crossings(&at(60, 30), day()).is_empty());
        let crossings = set.crossings(&at(61, 31), day());
        assert_eq!(
            fired(&crossings),
            [Rule::DistinctDossiers, Rule::NirSearches]
        );
        let figures = &crossings[0].alert.figures;
        assert_eq!(figures["distinct_dossiers"], 61.into());
        assert_eq!(figures["threshold"], 60.into());
        assert_eq!(figures["window_secs"], 3600.into());
        assert_eq!(crossings[0].silent_until, day() + WINDOW);
    }

    #[test]
    fn the_not_found_ratio_is_judged_only_over_enough_lookups() {
        let set = rules("");
        let at = |lookups, not_found| Counts {
            distinct_dossiers: 1,
            lookups,
            not_found,
            nir_searches: 0,
        };
        assert!(set.crossings(&at(19, 19), day()).is_empty());
        assert!(set.crossings(&at(20, 9), day()).is_empty());
        let crossings = set.crossings(&at(20, 10), day());
        assert_eq!(fired(&crossings), [Rule::NotFoundRatio]);
        assert_eq!(
            crossings[0].alert.figures["ratio"],
            serde_json::Number::from_f64(0.5).unwrap()
        );
        assert_eq!(crossings[0].alert.figures["lookups"], 20.into());
    }

    #[test]
    fn a_rule_set_to_zero_never_fires() {
        let set = rules(
            "distinct_dossiers_per_hour = 0\nnir_searches_per_hour = 0\nnot_found_ratio = 0\noff_hours = \"\"",
        );
        assert!(!set.any());
        let busy = Counts {
            distinct_dossiers: 1000,
            lookups: 1000,
            not_found: 1000,
            nir_searches: 1000,
        };
        let night: Timestamp = "2026-06-15T00:00:00Z".parse().unwrap();
        assert!(set.crossings(&busy, night).is_empty());
    }

    #[test]
    fn off_hours_cross_midnight_in_the_configured_time_zone() {
        let set = rules("");
        let quiet = Counts::default();
        // 21:59 and 06:00 Paris time (UTC+2 in June) are office hours.
        for utc in ["2026-06-15T19:59:00Z", "2026-06-16T04:00:00Z"] {
            let at: Timestamp = utc.parse().unwrap();
            assert!(set.crossings(&quiet, at).is_empty(), "{utc}");
        }
        // 22:00 on the 15th and 05:59 on the 16th belong to the same night,
        // which ends at 06:00 on the 16th.
        let night_end: Timestamp = "2026-06-16T04:00:00Z".parse().unwrap();
        for (utc, hour) in [("2026-06-15T20:00:00Z", 22), ("2026-06-16T03:59:00Z", 5)] {
            let crossings = set.crossings(&quiet, utc.parse().unwrap());
            assert_eq!(fired(&crossings), [Rule::OffHours], "{utc}");
            assert_eq!(crossings[0].silent_until, night_end, "{utc}");
            assert_eq!(crossings[0].alert.figures["local_hour"], hour.into());
        }
    }

    #[test]
    fn an_off_hours_window_within_one_day_ends_that_day() {
        let set = rules("off_hours = \"12:00-14:00\"");
        let lunch: Timestamp = "2026-01-15T11:30:00Z".parse().unwrap(); // 12:30 in Paris (UTC+1)
        let crossings = set.crossings(&Counts::default(), lunch);
        assert_eq!(fired(&crossings), [Rule::OffHours]);
        assert_eq!(
            crossings[0].silent_until,
            "2026-01-15T13:00:00Z".parse().unwrap()
        );
        assert!(set.crossings(&Counts::default(), day()).is_empty());
    }
}
