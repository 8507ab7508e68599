//! Civil dates, months and the CAF payment calendar of the synthetic data, on
//! jiff's civil dates.
//!
//! Arithmetic saturates at jiff's bounds (years -9999 to 9999), far from the
//! dataset's century, so that no generated value can make it panic.

use std::fmt;

use jiff::civil;
use jiff::{Span, Unit};

pub(super) use jiff::civil::Weekday;

/// The dataset's "today": fixed, so that the data never depends on the wall clock.
pub(super) const TODAY: Date = Date(civil::date(2026, 11, 1));

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Date(civil::Date);

/// `date` moved by `span`, if the span could be built.
fn shifted(date: civil::Date, span: Result<Span, jiff::Error>) -> civil::Date {
    span.map_or(date, |span| date.saturating_add(span))
}

impl Date {
    /// The date of a year, month (1-12) and day; out-of-range days roll over.
    pub(super) fn ymd(year: i64, month: i64, day: i64) -> Self {
        Month::new(year, month).first_day().add_days(day - 1)
    }

    pub(super) fn year(self) -> i64 {
        self.0.year().into()
    }

    pub(super) fn day(self) -> i64 {
        self.0.day().into()
    }

    pub(super) fn month(self) -> Month {
        Month(self.0.first_of_month())
    }

    pub(super) fn add_days(self, days: i64) -> Self {
        Self(shifted(self.0, Span::new().try_days(days)))
    }

    /// Whole days from `self` to `later` (negative when `later` is earlier).
    pub(super) fn days_until(self, later: Date) -> i64 {
        self.0
            .until((Unit::Day, later.0))
            .map_or(0, |span| span.get_days().into())
    }

    pub(super) fn weekday(self) -> Weekday {
        self.0.weekday()
    }

    /// The same day `years` years later. Counted from the first of the month,
    /// so that 29 February rolls over to 1 March (jiff would clamp it to the 28th).
    pub(super) fn add_years(self, years: i64) -> Self {
        let first = shifted(self.0.first_of_month(), Span::new().try_years(years));
        Self(first).add_days(self.day() - 1)
    }

    /// Whole years from `self` (a birth date) to `on`. One born on 29 February
    /// turns a year older on 1 March in a common year, as `add_years` has it.
    pub(super) fn age_on(self, on: Date) -> i64 {
        let before_birthday = (on.0.month(), on.0.day()) < (self.0.month(), self.0.day());
        on.year() - self.year() - i64::from(before_birthday)
    }

    /// Parses `YYYY-MM-DD`, strictly.
    #[cfg(test)]
    pub(super) fn parse(s: &str) -> Option<Self> {
        let date = Self(s.parse().ok()?);
        (date.to_string() == s).then_some(date)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A calendar month, e.g. the month a benefit is due for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Month(
    /// The month's first day.
    civil::Date,
);

impl Month {
    /// A month of a year; months past 12 roll over into the next years.
    pub(super) fn new(year: i64, month: i64) -> Self {
        let january = i16::try_from(year)
            .ok()
            .and_then(|year| civil::Date::new(year, 1, 1).ok())
            .unwrap_or(civil::Date::MIN);
        Self(shifted(january, Span::new().try_months(month - 1)))
    }

    pub(super) fn year(self) -> i64 {
        self.0.year().into()
    }

    /// 1 to 12.
    pub(super) fn number(self) -> i64 {
        self.0.month().into()
    }

    pub(super) fn add(self, months: i64) -> Self {
        Self(shifted(self.0, Span::new().try_months(months)))
    }

    /// Months from `self` to `later`.
    pub(super) fn months_until(self, later: Month) -> i64 {
        self.0
            .until((Unit::Month, later.0))
            .map_or(0, |span| span.get_months().into())
    }

    pub(super) fn first_day(self) -> Date {
        Date(self.0)
    }

    pub(super) fn last_day(self) -> Date {
        Date(self.0.last_of_month())
    }

    /// The quarter label of this month, e.g. `2024-Q2`.
    pub(super) fn quarter_label(self) -> String {
        format!("{:04}-Q{}", self.year(), (self.number() - 1) / 3 + 1)
    }

    /// When the benefit due for this month is paid: the 5th of the next month,
    /// moved to the Friday before when it is a Saturday and to the Monday after
    /// when it is a Sunday.
    pub(super) fn payment_date(self) -> Date {
        let fifth = self.add(1).first_day().add_days(4);
        match fifth.weekday() {
            Weekday::Saturday => fifth.add_days(-1),
            Weekday::Sunday => fifth.add_days(1),
            _ => fifth,
        }
    }

    /// Parses `YYYY-MM`, strictly.
    #[cfg(test)]
    pub(super) fn parse(s: &str) -> Option<Self> {
        let month = Date::parse(&format!("{s}-01"))?.month();
        (month.to_string() == s).then_some(month)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.number())
    }
}

impl serde::Serialize for Month {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The last month whose payment has been made by `today`.
pub(super) fn last_paid_month(today: Date) -> Month {
    let previous = today.month().add(-1);
    if previous.payment_date() <= today {
        previous
    } else {
        previous.add(-1)
    }
}

/// An RFC 3339 UTC timestamp with second precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Timestamp {
    pub(super) date: Date,
    pub(super) seconds_of_day: i64,
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.seconds_of_day.clamp(0, 86_399);
        write!(
            f,
            "{}T{:02}:{:02}:{:02}Z",
            self.date,
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_days_and_text() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2000, 2, 29),
            (2024, 12, 31),
            (1953, 7, 14),
            (2026, 11, 1),
        ] {
            let date = Date::ymd(y, m, d);
            assert_eq!(date.to_string(), format!("{y:04}-{m:02}-{d:02}"));
            assert_eq!(Date::parse(&date.to_string()), Some(date));
        }
        assert_eq!(Date::ymd(2024, 2, 30).to_string(), "2024-03-01");
        assert_eq!(Date::parse("2023-02-29"), None);
        assert_eq!(Month::parse("2024-13"), None);
    }

    #[test]
    fn weekdays_match_the_calendar() {
        assert_eq!(Date::ymd(1970, 1, 1).weekday(), Weekday::Thursday);
        assert_eq!(Date::ymd(2024, 10, 5).weekday(), Weekday::Saturday);
        assert_eq!(Date::ymd(2026, 11, 1).weekday(), Weekday::Sunday);
        assert_eq!(Date::ymd(2000, 1, 1).weekday(), Weekday::Saturday);
    }

    #[test]
    fn payment_moves_from_saturday_to_friday_and_from_sunday_to_monday() {
        // 2024-10-05 is a Saturday, 2025-01-05 a Sunday, 2024-09-05 a Thursday.
        assert_eq!(Month::new(2024, 9).payment_date(), Date::ymd(2024, 10, 4));
        assert_eq!(Month::new(2024, 12).payment_date(), Date::ymd(2025, 1, 6));
        assert_eq!(Month::new(2024, 8).payment_date(), Date::ymd(2024, 9, 5));
    }

    #[test]
    fn the_last_paid_month_before_the_fifth_is_two_months_back() {
        assert_eq!(last_paid_month(Date::ymd(2026, 11, 1)), Month::new(2026, 9));
        assert_eq!(
            last_paid_month(Date::ymd(2026, 11, 5)),
            Month::new(2026, 10)
        );
    }

    #[test]
    fn ages_count_whole_years() {
        let birth = Date::ymd(1995, 10, 14);
        assert_eq!(birth.age_on(Date::ymd(2024, 10, 13)), 28);
        assert_eq!(birth.age_on(Date::ymd(2024, 10, 14)), 29);
    }

    #[test]
    fn the_twenty_ninth_of_february_rolls_over_to_the_first_of_march() {
        let leap = Date::ymd(2000, 2, 29);
        assert_eq!(leap.add_years(1), Date::ymd(2001, 3, 1));
        assert_eq!(leap.add_years(4), Date::ymd(2004, 2, 29));
        assert_eq!(leap.age_on(Date::ymd(2001, 2, 28)), 0);
        assert_eq!(leap.age_on(Date::ymd(2001, 3, 1)), 1);
        assert_eq!(Month::new(2024, 13), Month::new(2025, 1));
        assert_eq!(Month::new(2024, 1).months_until(Month::new(2022, 11)), -14);
        assert_eq!(Date::ymd(2024, 3, 1).days_until(Date::ymd(2024, 2, 28)), -2);
    }

    #[test]
    fn months_know_their_bounds_and_quarters() {
        assert_eq!(Month::new(2024, 2).last_day(), Date::ymd(2024, 2, 29));
        assert_eq!(Month::new(2024, 12).add(1), Month::new(2025, 1));
        assert_eq!(Month::new(2024, 5).quarter_label(), "2024-Q2");
        let ts = Timestamp {
            date: Date::ymd(2024, 10, 12),
            seconds_of_day: 6 * 3600,
        };
        assert_eq!(ts.to_string(), "2024-10-12T06:00:00Z");
    }
}
