//! How several daemons on one store split the launches of a plan.
//!
//! Every daemon plans the same launches from the same store. Each starts its share of the
//! launches under way (those planned now and those already building, everywhere), so that
//! the work spreads across them; the others start the rest on their next round. A daemon
//! that left launches to the others for longer than [`SHARE_GRACE`] (they may be idle until
//! their next tick) starts them itself. A daemon whose loop stalls loses its lease, and with
//! it its share.

use std::time::Duration;

use nodepool_model::Timestamp;

/// How long launches are left to the other daemons before this one starts them itself.
pub const SHARE_GRACE: Duration = Duration::from_secs(2);

/// What one daemon knows of the launches under way and of its peers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peers {
    /// Daemons sharing the store, this one included (at least 1).
    pub live: usize,
    /// Nodes building, by any daemon.
    pub building: usize,
    /// Of those, the ones this daemon's executors launch.
    pub building_here: usize,
    /// Since when this daemon has left launches it planned to the others, if it has.
    pub held_back_since: Option<Timestamp>,
}

/// How many of a plan's launches this daemon starts now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// Launches to start, the first ones of the plan.
    pub start: usize,
    /// Since when launches are left to the others (`None`: none are).
    pub held_back_since: Option<Timestamp>,
}

/// This daemon's share of `planned` launches at `now`.
pub fn share(planned: usize, peers: &Peers, now: Timestamp) -> Share {
    let fair = (planned + peers.building)
        .div_ceil(peers.live.max(1))
        .saturating_sub(peers.building_here)
        .min(planned);
    if fair == planned {
        return Share {
            start: planned,
            held_back_since: None,
        };
    }
    let since = peers.held_back_since.unwrap_or(now);
    if now.saturating_since(since) >= SHARE_GRACE {
        return Share {
            start: planned,
            held_back_since: None,
        };
    }
    Share {
        start: fair,
        held_back_since: Some(since),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_unix_seconds(1_399_957_200);

    #[test]
    fn launches_split_between_daemons_until_the_grace_runs_out() {
        let ms = |ms: u64| NOW.saturating_sub(Duration::from_millis(ms));
        // (planned, live, building, building here, held back since) → (start, held back since)
        type Row = (
            usize,
            usize,
            usize,
            usize,
            Option<Timestamp>,
            usize,
            Option<Timestamp>,
        );
        let table: &[(&str, Row)] = &[
            ("one daemon starts everything", (5, 1, 3, 3, None, 5, None)),
            ("nothing planned", (0, 3, 4, 0, Some(ms(500)), 0, None)),
            ("two daemons: half each", (4, 2, 0, 0, None, 2, Some(NOW))),
            (
                "three daemons, rounded up",
                (4, 3, 0, 0, None, 2, Some(NOW)),
            ),
            (
                "what this one builds counts against its share",
                (4, 2, 2, 2, None, 1, Some(NOW)),
            ),
            (
                "its share is already building",
                (2, 2, 6, 4, None, 0, Some(NOW)),
            ),
            (
                "others building leaves more to this one",
                (2, 2, 2, 0, None, 2, None),
            ),
            (
                "held back, within the grace",
                (4, 2, 0, 0, Some(ms(1999)), 2, Some(ms(1999))),
            ),
            (
                "held back for the whole grace: all of them",
                (4, 2, 0, 0, Some(ms(2000)), 4, None),
            ),
            (
                "a daemon count of 0 is read as 1",
                (3, 0, 0, 0, None, 3, None),
            ),
        ];
        for (what, (planned, live, building, here, since, start, held)) in table {
            let peers = Peers {
                live: *live,
                building: *building,
                building_here: *here,
                held_back_since: *since,
            };
            assert_eq!(
                share(*planned, &peers, NOW),
                Share {
                    start: *start,
                    held_back_since: *held,
                },
                "{what}"
            );
        }
    }
}
