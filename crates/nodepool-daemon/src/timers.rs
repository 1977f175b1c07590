//! Every deadline of the loop in one table, in the manner of quinn-proto's `TimerTable`:
//! each timer is set, moved earlier or cleared by name, and the loop sleeps until the
//! earliest one. No deadline lives in a field of its own.

use nodepool_model::Timestamp;

/// What the loop waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The next round: the tick, the plans' next deadline, a plan to make again.
    Round,
    /// The next listing of a provider's servers.
    Listing,
    /// The next read of the config file.
    Reload,
    /// The next try to connect the providers that could not be connected.
    Connect,
    /// The next fire of `cron: cleanup`.
    Cleanup,
    /// The next fire of `cron: check`.
    Check,
    /// When this daemon's work must stop unless its lease is renewed first (see
    /// [`crate::peers`]).
    Fence,
}

impl Timer {
    const ALL: [Timer; 7] = [
        Timer::Round,
        Timer::Listing,
        Timer::Reload,
        Timer::Connect,
        Timer::Cleanup,
        Timer::Check,
        Timer::Fence,
    ];
}

/// When each [`Timer`] expires; an unset timer never does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TimerTable {
    at: [Option<Timestamp>; Timer::ALL.len()],
}

impl TimerTable {
    /// Sets `timer` to expire at `at`, or never with `None`.
    pub(crate) fn set(&mut self, timer: Timer, at: Option<Timestamp>) {
        self.at[timer as usize] = at;
    }

    /// Moves `timer` to `at` if that is sooner (or it was unset).
    pub(crate) fn sooner(&mut self, timer: Timer, at: Timestamp) {
        let slot = &mut self.at[timer as usize];
        *slot = Some(slot.map_or(at, |t| t.min(at)));
    }

    /// When `timer` expires, if it is set.
    pub(crate) fn get(&self, timer: Timer) -> Option<Timestamp> {
        self.at[timer as usize]
    }

    /// Whether `timer` is set and expired by `now`.
    pub(crate) fn is_due(&self, timer: Timer, now: Timestamp) -> bool {
        self.get(timer).is_some_and(|at| at <= now)
    }

    /// The timer that expires first, and when (the first in [`Timer`]'s order on a tie).
    pub(crate) fn next(&self) -> Option<(Timer, Timestamp)> {
        Timer::ALL
            .iter()
            .filter_map(|&timer| Some((timer, self.get(timer)?)))
            .min_by_key(|&(_, at)| at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_seconds(s)
    }

    #[test]
    fn the_earliest_timer_is_next_and_unset_timers_never_expire() {
        let mut timers = TimerTable::default();
        assert_eq!(timers.next(), None);
        timers.set(Timer::Cleanup, Some(t(60)));
        timers.set(Timer::Round, Some(t(5)));
        timers.set(Timer::Check, Some(t(900)));
        assert_eq!(timers.next(), Some((Timer::Round, t(5))));
        timers.set(Timer::Round, None);
        assert_eq!(timers.next(), Some((Timer::Cleanup, t(60))));
        // On a tie, the first in the list.
        timers.set(Timer::Listing, Some(t(60)));
        assert_eq!(timers.next(), Some((Timer::Listing, t(60))));
    }

    #[test]
    fn sooner_only_moves_a_timer_earlier() {
        let mut timers = TimerTable::default();
        timers.sooner(Timer::Listing, t(10));
        assert_eq!(timers.get(Timer::Listing), Some(t(10)));
        timers.sooner(Timer::Listing, t(20));
        assert_eq!(timers.get(Timer::Listing), Some(t(10)));
        timers.sooner(Timer::Listing, t(3));
        assert_eq!(timers.get(Timer::Listing), Some(t(3)));
    }

    #[test]
    fn a_timer_is_due_at_its_instant_and_after() {
        let mut timers = TimerTable::default();
        assert!(!timers.is_due(Timer::Check, t(100)));
        timers.set(Timer::Check, Some(t(100)));
        assert!(!timers.is_due(Timer::Check, t(99)));
        assert!(timers.is_due(Timer::Check, t(100)));
        assert!(timers.is_due(Timer::Check, t(101)));
    }
}
