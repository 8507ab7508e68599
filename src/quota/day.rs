//! The local calendar day a request falls in, and when that day ends.
//!
//! Daily quotas reset at local midnight in the configured time zone, so a day
//! is not always 24 hours: in Europe/Paris the last Sunday of March lasts 23
//! hours and the last Sunday of October 25. Days are computed from the time
//! zone rules (jiff's bundled tz database), never by adding 86,400 seconds.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// The nominal length of a day, the `w` of the daily policy.
pub(crate) const NOMINAL_DAY_SECS: u64 = 86_400;

/// A time zone that cuts time into local days.
#[derive(Debug, Clone)]
pub(crate) struct Calendar {
    tz: TimeZone,
}

/// One local day: its date and the instants it starts and ends at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Day {
    pub(crate) date: Date,
    start: Timestamp,
    end: Timestamp,
}

impl Calendar {
    /// A calendar for an IANA time zone name such as `Europe/Paris`.
    pub(crate) fn new(time_zone: &str) -> Result<Self, jiff::Error> {
        Ok(Self {
            tz: TimeZone::get(time_zone)?,
        })
    }

    /// The local day `now` falls in.
    pub(crate) fn day_of(&self, now: Timestamp) -> Day {
        let date = now.to_zoned(self.tz.clone()).date();
        // A local midnight that falls in a daylight-saving gap resolves to the
        // first instant after the gap, which is when that day truly starts.
        let start = date
            .to_zoned(self.tz.clone())
            .map(|z| z.timestamp())
            .unwrap_or(now);
        let end = date
            .tomorrow()
            .and_then(|d| d.to_zoned(self.tz.clone()))
            .map(|z| z.timestamp())
            // Only at the very end of jiff's range; a day of 24 hours is then
            // the least wrong answer.
            .unwrap_or_else(|_| {
                now.checked_add(jiff::SignedDuration::from_secs(86_400))
                    .unwrap_or(Timestamp::MAX)
            });
        Day { date, start, end }
    }
}

impl Day {
    /// Whether `now` still falls in this day (to reuse a computed day).
    pub(crate) fn contains(&self, now: Timestamp) -> bool {
        self.start <= now && now < self.end
    }

    /// Whole seconds from `now` to the end of the day, rounded up and at least
    /// one, so that a client waiting that long is past midnight.
    pub(crate) fn secs_to_end(&self, now: Timestamp) -> u64 {
        let micros = self
            .end
            .as_microsecond()
            .saturating_sub(now.as_microsecond());
        let micros = u64::try_from(micros).unwrap_or(0);
        micros.div_ceil(1_000_000).max(1)
    }

    /// The date as `YYYY-MM-DD`, used in Redis key names.
    pub(crate) fn key(&self) -> String {
        self.date.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris() -> Calendar {
        Calendar::new("Europe/Paris").unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn an_ordinary_day_in_paris_lasts_twenty_four_hours() {
        // 2026-01-15 00:00 in Paris (UTC+1).
        let day = paris().day_of(at("2026-01-14T23:00:00Z"));
        assert_eq!(day.key(), "2026-01-15");
        assert_eq!(day.secs_to_end(at("2026-01-14T23:00:00Z")), 86_400);
    }

    #[test]
    fn the_spring_forward_day_lasts_twenty_three_hours() {
        let midnight = at("2026-03-28T23:00:00Z"); // 2026-03-29 00:00 CET
        let day = paris().day_of(midnight);
        assert_eq!(day.key(), "2026-03-29");
        assert_eq!(day.secs_to_end(midnight), 23 * 3600);
        // 23:30 CEST (UTC+2) is half an hour before midnight.
        assert_eq!(day.secs_to_end(at("2026-03-29T21:30:00Z")), 1800);
    }

    #[test]
    fn the_fall_back_day_lasts_twenty_five_hours() {
        let midnight = at("2026-10-24T22:00:00Z"); // 2026-10-25 00:00 CEST
        let day = paris().day_of(midnight);
        assert_eq!(day.key(), "2026-10-25");
        assert_eq!(day.secs_to_end(midnight), 25 * 3600);
        // 23:30 CET (UTC+1) is half an hour before midnight.
        assert_eq!(day.secs_to_end(at("2026-10-25T22:30:00Z")), 1800);
    }

    #[test]
    fn a_day_knows_which_instants_it_contains() {
        let day = paris().day_of(at("2026-01-15T12:00:00Z"));
        assert!(day.contains(at("2026-01-14T23:00:00Z")));
        assert!(!day.contains(at("2026-01-15T23:00:00Z")));
        assert!(!day.contains(at("2026-01-14T22:59:59Z")));
    }

    #[test]
    fn seconds_to_midnight_round_up() {
        let day = paris().day_of(at("2026-01-15T12:00:00Z"));
        assert_eq!(day.secs_to_end(at("2026-01-15T22:59:59.2Z")), 1);
    }

    #[test]
    fn an_unknown_time_zone_is_an_error() {
        assert!(Calendar::new("Europe/Atlantis").is_err());
    }
}
