//! Cron schedules: 5-field Unix crontab strings.
//!
//! `minute hour day-of-month month day-of-week`, with Unix semantics: day-of-week 0 and 7
//! are Sunday, names (`mon`, `jan`) are allowed, and when both day fields are restricted a
//! day matching either one fires (crontab's OR rule). Times are UTC.
//!
//! 2014 nodepool ran these through APScheduler 2, which ignored the month field and
//! numbered weekdays from Monday = 0. This implementation follows crontab instead, as the
//! 2014 docs promised.

use std::fmt;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use nodepool_model::Timestamp;

/// A parsed cron schedule.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
}

/// Why a cron string is not a valid schedule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(String);

impl Schedule {
    /// Parses a 5-field crontab string.
    ///
    /// # Errors
    ///
    /// Returns a [`ScheduleError`] saying what is wrong when the string does not have five
    /// fields or a field is out of range.
    ///
    /// ```
    /// use nodepool_config::Schedule;
    /// use nodepool_model::Timestamp;
    ///
    /// let daily = Schedule::parse("14 2 * * *")?;
    /// let noon = Timestamp::from_unix_seconds(1_395_748_800); // 2014-03-25T12:00:00Z
    /// assert_eq!(daily.next_after(noon).unwrap().to_string(), "2014-03-26T02:14:00Z");
    /// # Ok::<(), nodepool_config::ScheduleError>(())
    /// ```
    pub fn parse(expression: &str) -> Result<Schedule, ScheduleError> {
        let fields = expression.split_whitespace().count();
        if fields != 5 {
            return Err(ScheduleError(format!(
                "{expression:?} has {fields} field{}; a schedule has 5: minute hour day-of-month month day-of-week",
                if fields == 1 { "" } else { "s" }
            )));
        }
        check_ranges(expression)?;
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .dom_and_dow(false)
            .build();
        let cron = parser.parse(expression).map_err(|error| {
            let reason = error.to_string();
            let reason = reason.trim_end_matches('.');
            ScheduleError(format!(
                "{expression:?} is not a valid schedule: {}",
                lowercase_first(reason)
            ))
        })?;
        // A pattern like "0 0 30 2 *" parses but never fires; find out now, not at run time.
        let probe = Timestamp::EPOCH.to_datetime();
        if cron.find_next_occurrence(&probe, false).is_err() {
            return Err(ScheduleError(format!("{expression:?} never fires")));
        }
        Ok(Schedule {
            expression: expression.trim().to_owned(),
            cron,
        })
    }

    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.expression
    }

    /// The first fire time strictly after `after`, or `None` if there is none before the
    /// end of the calendar the cron library supports.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let at = after.to_datetime();
        self.cron
            .find_next_occurrence(&at, false)
            .ok()
            .map(Timestamp::from_datetime)
    }

    /// The last fire time at or before `at`: when the job should last have run.
    pub fn last_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        let at = at.to_datetime();
        self.cron
            .find_previous_occurrence(&at, true)
            .ok()
            .map(Timestamp::from_datetime)
    }
}

/// The fields of a crontab line with their ranges.
const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

/// Names the field and the number when a plain number is out of its field's range;
/// the cron library's own message does not say which.
fn check_ranges(expression: &str) -> Result<(), ScheduleError> {
    for (field, (name, min, max)) in expression.split_whitespace().zip(FIELDS) {
        for part in field.split(',') {
            let range = part.split_once('/').map_or(part, |(range, _step)| range);
            for number in range.split('-').filter_map(|n| n.parse::<u64>().ok()) {
                if number < u64::from(min) || number > u64::from(max) {
                    return Err(ScheduleError(format!(
                        "{expression:?} is not a valid schedule: {name} {number} is out of range {min}-{max}"
                    )));
                }
            }
        }
    }
    Ok(())
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.expression)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}
