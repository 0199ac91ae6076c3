//! When the schedule fires: crontab as people write it (five fields, 0 and 7 for Sunday, names
//! such as `MON-FRI` and `JAN`, `@daily`), read by `croner`, in the schedule's timezone.
//! Pure: the firings between two instants, the next few, and which of the firings missed
//! while no process was up may still run.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// What `TIDEGATE_SCHEDULE` says: never, or a crontab expression.
pub const OFF: &str = "off";

/// Firings looked at in one span at most: a minutely schedule down for a week has ~10,000; past
/// this many, the rest are counted as missed without being listed.
const MOST_FIRINGS: usize = 20_000;

/// How late a firing may be handled and still be on time, whatever the catch-up window: the
/// loop wakes a little after each firing, and a busy process a little later.
pub const ON_TIME: Duration = Duration::from_secs(60);

/// A crontab schedule as the user wrote it.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    source: String,
}

impl Schedule {
    /// Reads a crontab expression: five fields (minute hour day-of-month month day-of-week)
    /// with crontab's meaning, or a nickname (`@daily`, `@hourly`, `@weekly`, `@monthly`,
    /// `@yearly`). A day of the month and a day of the week both given fire on either, as
    /// cron does. Errors quote what was written, never a rewritten form.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let fields = value.split_whitespace().count();
        if !value.starts_with('@') && fields != 5 {
            return Err(format!(
                "{fields} fields; crontab has 5: minute hour day-of-month month day-of-week"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(value)
            .map_err(|e| match e {
                croner::errors::CronError::ComponentError(m)
                | croner::errors::CronError::InvalidPattern(m)
                | croner::errors::CronError::IllegalCharacters(m) => m,
                other => other.to_string(),
            })?;
        // A pattern that can never fire (`0 0 31 2 *`) is a mistake, not a schedule.
        let probe = DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default();
        cron.find_next_occurrence(&probe, false)
            .map_err(|_| "never fires".to_owned())?;
        Ok(Self {
            cron,
            source: value.to_owned(),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first firing after `t`, in `tz`.
    pub fn next_after(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Tz>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&tz), false)
            .ok()
    }

    /// The last firing at or before `t`, in `tz`.
    pub fn last_at(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Tz>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&tz), true)
            .ok()
    }

    /// The next `n` firings after `t`, in `tz`: what `tidegate config` and the back-office show.
    pub fn upcoming(&self, t: DateTime<Utc>, tz: Tz, n: usize) -> Vec<DateTime<Tz>> {
        self.cron.iter_after(t.with_timezone(&tz)).take(n).collect()
    }

    /// What the firings in (`after`, `now`] call for, the schedule having been handled through
    /// `after`: the days to plan (each day once, from its latest firing), for firings at most
    /// `catch_up` old (or [`ON_TIME`]), and how many firings are older than that (missed, with
    /// the latest).
    pub fn due(&self, tz: Tz, after: DateTime<Utc>, now: DateTime<Utc>, catch_up: Duration) -> Due {
        let oldest = chrono::Duration::from_std(catch_up.max(ON_TIME))
            .ok()
            .and_then(|window| now.checked_sub_signed(window))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut due = Due::default();
        let mut seen = 0;
        for fired in self.cron.iter_after(after.with_timezone(&tz)) {
            let at = fired.with_timezone(&Utc);
            if at > now {
                break;
            }
            seen += 1;
            if seen > MOST_FIRINGS {
                due.missed += 1;
                continue;
            }
            if at < oldest {
                due.missed += 1;
                due.last_missed = Some(at);
                continue;
            }
            let day = super::day_for(fired);
            match due.plan.iter_mut().find(|(d, _)| *d == day) {
                Some(planned) => planned.1 = fired,
                None => due.plan.push((day, fired)),
            }
        }
        due
    }
}

/// The firings of a span, as [`Schedule::due`] sorts them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Due {
    /// Each day to plan, with the firing that plans it, oldest first.
    pub plan: Vec<(NaiveDate, DateTime<Tz>)>,
    /// Firings older than the catch-up window: reported, not run.
    pub missed: u64,
    pub last_missed: Option<DateTime<Utc>>,
}

/// `TIDEGATE_SCHEDULE`: `off`, or a crontab expression.
pub(crate) fn schedule_setting(value: &str) -> Result<Option<Schedule>, String> {
    if value.eq_ignore_ascii_case(OFF) {
        return Ok(None);
    }
    Schedule::parse(value).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Weekday};

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .expect("time")
    }

    fn weekdays(expr: &str) -> Vec<Weekday> {
        let schedule = Schedule::parse(expr).expect(expr);
        // 2026-12-06 is a Sunday.
        schedule
            .upcoming(utc(2026, 12, 6, 0, 0), chrono_tz::UTC, 7)
            .iter()
            .map(|t| t.weekday())
            .collect()
    }

    #[test]
    fn weekdays_are_crontabs_zero_and_seven_are_sunday() {
        use Weekday::*;
        assert_eq!(weekdays("0 1 * * 1-5"), [Mon, Tue, Wed, Thu, Fri, Mon, Tue]);
        assert_eq!(weekdays("0 1 * * MON-FRI"), weekdays("0 1 * * 1-5"));
        assert_eq!(weekdays("0 1 * * 0"), [Sun; 7]);
        assert_eq!(weekdays("0 1 * * 7"), [Sun; 7]);
        assert_eq!(weekdays("0 1 * * sun"), [Sun; 7]);
        assert_eq!(weekdays("0 1 * * 6,0"), [Sun, Sat, Sun, Sat, Sun, Sat, Sun]);
    }

    #[test]
    fn a_day_of_month_and_a_weekday_fire_on_either_as_cron_does() {
        let schedule = Schedule::parse("0 0 1 * MON").expect("cron");
        let days: Vec<u32> = schedule
            .upcoming(utc(2026, 12, 6, 0, 0), chrono_tz::UTC, 4)
            .iter()
            .map(|t| t.day())
            .collect();
        // Mondays 7, 14, 21, 28 December; then 1 January.
        assert_eq!(days, [7, 14, 21, 28]);
        let next = schedule
            .upcoming(utc(2026, 12, 29, 0, 0), chrono_tz::UTC, 2)
            .iter()
            .map(|t| (t.month(), t.day()))
            .collect::<Vec<_>>();
        assert_eq!(next, [(1, 1), (1, 4)]);
    }

    #[test]
    fn errors_quote_the_users_words_and_only_crontabs_form_is_read() {
        for bad in [
            "0 1 * *",
            "0 0 1 * * *",
            "0 25 * * *",
            "0 1 * * 8",
            "every day",
        ] {
            let e = Schedule::parse(bad).expect_err(bad);
            assert!(!e.contains("0 0 1"), "{bad}: rewrote the expression: {e}");
        }
        assert!(
            Schedule::parse("0 0 31 2 *")
                .expect_err("never")
                .contains("never")
        );
        assert!(Schedule::parse("@daily").is_ok());
        assert_eq!(
            Schedule::parse(" 0 1 * * * ").expect("ok").source(),
            "0 1 * * *"
        );
        assert!(schedule_setting("off").expect("off").is_none());
        assert!(schedule_setting("OFF").expect("off").is_none());
    }

    #[test]
    fn firings_are_in_the_timezone() {
        let schedule = Schedule::parse("0 1 * * *").expect("cron");
        let next = schedule
            .next_after(utc(2026, 11, 24, 4, 0), chrono_tz::Asia::Seoul)
            .expect("next");
        assert_eq!(next.to_rfc3339(), "2026-11-25T01:00:00+09:00");
        let last = schedule
            .last_at(utc(2026, 11, 24, 16, 0), chrono_tz::Asia::Seoul)
            .expect("last");
        assert_eq!(
            last.to_rfc3339(),
            "2026-11-25T01:00:00+09:00",
            "at the firing itself"
        );
        let three = schedule.upcoming(utc(2026, 11, 24, 4, 0), chrono_tz::Asia::Seoul, 3);
        assert_eq!(three.len(), 3);
        assert_eq!(three[2].to_rfc3339(), "2026-11-27T01:00:00+09:00");
    }

    #[test]
    fn a_span_plans_the_firings_within_the_window_and_reports_older_ones() {
        let schedule = Schedule::parse("0 1 * * *").expect("cron");
        let six_hours = Duration::from_secs(6 * 3600);
        // Handled through 00:30 on the 5th; now 03:00 on the 7th (UTC): firings at 01:00 on the
        // 6th (older than 6 h: missed) and on the 7th (2 h ago: planned, for the 6th).
        let due = schedule.due(
            chrono_tz::UTC,
            utc(2026, 12, 5, 0, 30),
            utc(2026, 12, 7, 3, 0),
            six_hours,
        );
        assert_eq!(due.missed, 2, "the 5th's and the 6th's 01:00");
        assert_eq!(due.last_missed, Some(utc(2026, 12, 6, 1, 0)));
        let day = NaiveDate::from_ymd_opt(2026, 12, 6).expect("day");
        assert_eq!(due.plan.len(), 1);
        assert_eq!(due.plan[0].0, day);
        assert_eq!(due.plan[0].1.with_timezone(&Utc), utc(2026, 12, 7, 1, 0));
        // Nothing between two instants that hold no firing; a firing at `now` is due.
        let none = schedule.due(
            chrono_tz::UTC,
            utc(2026, 12, 7, 1, 0),
            utc(2026, 12, 7, 3, 0),
            six_hours,
        );
        assert_eq!(none, Due::default());
        let at_now = schedule.due(
            chrono_tz::UTC,
            utc(2026, 12, 7, 0, 0),
            utc(2026, 12, 7, 1, 0),
            Duration::ZERO,
        );
        assert_eq!((at_now.plan.len(), at_now.missed), (1, 0));
    }

    #[test]
    fn several_firings_of_one_day_plan_it_once_from_the_latest() {
        let schedule = Schedule::parse("0 */2 * * *").expect("cron");
        let due = schedule.due(
            chrono_tz::UTC,
            utc(2026, 12, 7, 0, 30),
            utc(2026, 12, 7, 7, 0),
            Duration::from_secs(24 * 3600),
        );
        assert_eq!(due.plan.len(), 1);
        assert_eq!(due.plan[0].1.with_timezone(&Utc), utc(2026, 12, 7, 6, 0));
    }
}
