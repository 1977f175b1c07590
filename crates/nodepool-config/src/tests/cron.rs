//! Cron schedules: 5-field crontab with Unix semantics, and when each job fires next.

use crate::Schedule;
use nodepool_model::Timestamp;

fn at(text: &str) -> Timestamp {
    Timestamp::from_datetime(chrono::DateTime::parse_from_rfc3339(text).unwrap().into())
}

fn next(schedule: &str, after: &str) -> String {
    Schedule::parse(schedule)
        .unwrap()
        .next_after(at(after))
        .unwrap()
        .to_string()
}

#[test]
fn next_fire_of_the_default_schedules() {
    // image-update: daily at 02:14.
    assert_eq!(
        next("14 2 * * *", "2014-03-25T02:13:59Z"),
        "2014-03-25T02:14:00Z"
    );
    assert_eq!(
        next("14 2 * * *", "2014-03-25T02:14:00Z"),
        "2014-03-26T02:14:00Z"
    );
    // cleanup: every minute.
    assert_eq!(
        next("* * * * *", "2014-03-25T10:00:30Z"),
        "2014-03-25T10:01:00Z"
    );
    // check: every 15 minutes.
    assert_eq!(
        next("*/15 * * * *", "2014-03-25T10:44:59Z"),
        "2014-03-25T10:45:00Z"
    );
    assert_eq!(
        next("*/15 * * * *", "2014-03-25T23:50:00Z"),
        "2014-03-26T00:00:00Z"
    );
}

#[test]
fn sunday_is_0_and_7() {
    // 2014-03-25 was a Tuesday; the next Sunday is 2014-03-30.
    assert_eq!(
        next("0 4 * * 0", "2014-03-25T00:00:00Z"),
        "2014-03-30T04:00:00Z"
    );
    assert_eq!(
        next("0 4 * * 7", "2014-03-25T00:00:00Z"),
        "2014-03-30T04:00:00Z"
    );
    assert_eq!(
        next("0 4 * * sun", "2014-03-25T00:00:00Z"),
        "2014-03-30T04:00:00Z"
    );
    // Monday is 1, not 0 as in the APScheduler 2014 nodepool used.
    assert_eq!(
        next("0 4 * * 1", "2014-03-25T00:00:00Z"),
        "2014-03-31T04:00:00Z"
    );
}

#[test]
fn both_day_fields_set_means_either() {
    // The 1st of the month OR a Friday: Friday 2014-03-28 comes before 2014-04-01.
    assert_eq!(
        next("0 0 1 * 5", "2014-03-25T00:00:00Z"),
        "2014-03-28T00:00:00Z"
    );
    assert_eq!(
        next("0 0 1 * 5", "2014-03-28T00:00:00Z"),
        "2014-04-01T00:00:00Z"
    );
}

#[test]
fn the_month_field_counts() {
    // 2014 nodepool ignored the month field; crontab does not.
    assert_eq!(
        next("0 0 1 6 *", "2014-03-25T00:00:00Z"),
        "2014-06-01T00:00:00Z"
    );
}

#[test]
fn last_fire_at_or_before() {
    let schedule = Schedule::parse("14 2 * * *").unwrap();
    let last = schedule
        .last_at_or_before(at("2014-03-25T12:00:00Z"))
        .unwrap();
    assert_eq!(last.to_string(), "2014-03-25T02:14:00Z");
    let exact = schedule
        .last_at_or_before(at("2014-03-25T02:14:00Z"))
        .unwrap();
    assert_eq!(exact.to_string(), "2014-03-25T02:14:00Z");
}

#[test]
fn invalid_schedules() {
    let err = |s: &str| Schedule::parse(s).unwrap_err().to_string();
    assert_eq!(
        err("* * * *"),
        "\"* * * *\" has 4 fields; a schedule has 5: minute hour day-of-month month day-of-week"
    );
    assert_eq!(
        err("0 * * * * *"),
        "\"0 * * * * *\" has 6 fields; a schedule has 5: minute hour day-of-month month day-of-week"
    );
    assert_eq!(
        err("0 24 * * *"),
        "\"0 24 * * *\" is not a valid schedule: hour 24 is out of range 0-23"
    );
    assert_eq!(
        err("0 0 0 * *"),
        "\"0 0 0 * *\" is not a valid schedule: day-of-month 0 is out of range 1-31"
    );
    assert_eq!(
        err("0 0 * 13 *"),
        "\"0 0 * 13 *\" is not a valid schedule: month 13 is out of range 1-12"
    );
    assert_eq!(
        err("0 0 * * 8"),
        "\"0 0 * * 8\" is not a valid schedule: day-of-week 8 is out of range 0-7"
    );
    assert_eq!(err("0 0 31 2 *"), "\"0 0 31 2 *\" never fires");
    assert!(err("x * * * *").starts_with("\"x * * * *\" is not a valid schedule: "));
}
