//! Civil dates, months and the CAF payment calendar, without a date crate.
//!
//! Dates are days since 1970-01-01 in the proleptic Gregorian calendar
//! (Howard Hinnant's `days_from_civil` / `civil_from_days`).

use std::fmt;

/// The dataset's "today": fixed, so that the data never depends on the wall clock.
pub(super) const TODAY: Date = Date::ymd(2026, 11, 1);

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Date {
    days: i64,
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

impl Date {
    /// The date of a year, month (1-12) and day; out-of-range days roll over.
    pub(super) const fn ymd(year: i64, month: i64, day: i64) -> Self {
        Self {
            days: days_from_civil(year, month, day),
        }
    }

    pub(super) const fn year(self) -> i64 {
        civil_from_days(self.days).0
    }

    pub(super) const fn day(self) -> i64 {
        civil_from_days(self.days).2
    }

    pub(super) const fn month(self) -> Month {
        let (year, month, _) = civil_from_days(self.days);
        Month::new(year, month)
    }

    pub(super) const fn add_days(self, days: i64) -> Self {
        Self {
            days: self.days + days,
        }
    }

    /// Whole days from `self` to `later` (negative when `later` is earlier).
    pub(super) const fn days_until(self, later: Date) -> i64 {
        later.days - self.days
    }

    pub(super) const fn weekday(self) -> Weekday {
        // 1970-01-01 was a Thursday.
        match (self.days + 3).rem_euclid(7) {
            0 => Weekday::Monday,
            1 => Weekday::Tuesday,
            2 => Weekday::Wednesday,
            3 => Weekday::Thursday,
            4 => Weekday::Friday,
            5 => Weekday::Saturday,
            _ => Weekday::Sunday,
        }
    }

    /// The same day `years` years later (29 February rolls to 1 March).
    pub(super) const fn add_years(self, years: i64) -> Self {
        let (year, month, day) = civil_from_days(self.days);
        Self::ymd(year + years, month, day)
    }

    /// Whole years from `self` (a birth date) to `on`.
    pub(super) const fn age_on(self, on: Date) -> i64 {
        let (by, bm, bd) = civil_from_days(self.days);
        let (y, m, d) = civil_from_days(on.days);
        let before_birthday = m < bm || (m == bm && d < bd);
        y - by - if before_birthday { 1 } else { 0 }
    }

    /// Parses `YYYY-MM-DD`, strictly.
    #[cfg(test)]
    pub(super) fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return None;
        }
        let year: i64 = s.get(0..4)?.parse().ok()?;
        let month: i64 = s.get(5..7)?.parse().ok()?;
        let day: i64 = s.get(8..10)?.parse().ok()?;
        let date = Self::ymd(year, month, day);
        (date.to_string() == s).then_some(date)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = civil_from_days(self.days);
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

impl serde::Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A calendar month, e.g. the month a benefit is due for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Month {
    /// `year * 12 + (month - 1)`.
    index: i64,
}

impl Month {
    pub(super) const fn new(year: i64, month: i64) -> Self {
        Self {
            index: year * 12 + month - 1,
        }
    }

    pub(super) const fn year(self) -> i64 {
        self.index.div_euclid(12)
    }

    /// 1 to 12.
    pub(super) const fn number(self) -> i64 {
        self.index.rem_euclid(12) + 1
    }

    pub(super) const fn add(self, months: i64) -> Self {
        Self {
            index: self.index + months,
        }
    }

    /// Months from `self` to `later`.
    pub(super) const fn months_until(self, later: Month) -> i64 {
        later.index - self.index
    }

    pub(super) const fn first_day(self) -> Date {
        Date::ymd(self.year(), self.number(), 1)
    }

    pub(super) const fn last_day(self) -> Date {
        self.add(1).first_day().add_days(-1)
    }

    /// The quarter label of this month, e.g. `2024-Q2`.
    pub(super) fn quarter_label(self) -> String {
        format!("{:04}-Q{}", self.year(), (self.number() - 1) / 3 + 1)
    }

    /// When the benefit due for this month is paid: the 5th of the next month,
    /// moved to the Friday before when it is a Saturday and to the Monday after
    /// when it is a Sunday.
    pub(super) const fn payment_date(self) -> Date {
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
        if s.len() != 7 || s.as_bytes().get(4) != Some(&b'-') {
            return None;
        }
        let month = Self::new(s.get(0..4)?.parse().ok()?, s.get(5..7)?.parse().ok()?);
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
pub(super) const fn last_paid_month(today: Date) -> Month {
    let previous = today.month().add(-1);
    if previous.payment_date().days <= today.days {
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
