//! The few rules both policies apply, written once: how long to back off after failures in
//! a row, which upload launches use, which flavor an image boots with, and that deadlines
//! are strict.
//!
//! They live with the vocabulary because the two policy crates may not depend on each
//! other; each is a small pure function.

use std::time::Duration;

use crate::{Failure, Image, ImageId, ImageName, ImageState, ProviderName, Timestamp};

impl Timestamp {
    /// The first instant at which something that started at `self` is past `limit`.
    /// Deadlines are strict: at exactly `limit` it is still within, a millisecond later it
    /// is past (an upload exactly 8 hours old is kept, one a moment older goes).
    pub fn first_past(self, limit: Duration) -> Timestamp {
        self.saturating_add(limit)
            .saturating_add(Duration::from_millis(1))
    }
}

/// A backoff after failures in a row: `first` after one, doubling per failure, at most
/// `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after one failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

/// A backoff that is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackingOff<'f> {
    /// When the next attempt may start.
    pub until: Timestamp,
    /// How many attempts failed in a row.
    pub failures: usize,
    /// The newest of them.
    pub last: &'f Failure,
}

impl Backoff {
    /// How long to wait after `failures` failures in a row (none: no wait).
    pub fn wait(&self, failures: usize) -> Duration {
        let Some(extra) = failures.checked_sub(1) else {
            return Duration::ZERO;
        };
        let exponent = u32::try_from(extra).unwrap_or(u32::MAX).min(16);
        self.first.saturating_mul(1 << exponent).min(self.max)
    }

    /// The backoff after `failures` (the failures in a row, oldest first), if it still runs
    /// at `now`.
    pub fn running<'f>(&self, failures: &[&'f Failure], now: Timestamp) -> Option<BackingOff<'f>> {
        let last = *failures.last()?;
        let until = last.at.saturating_add(self.wait(failures.len()));
        (until > now).then_some(BackingOff {
            until,
            failures: failures.len(),
            last,
        })
    }
}

impl Image {
    /// How uploads of one image rank for launches: the newer version first, the higher id
    /// on a tie. The READY upload that ranks highest is the one launches use.
    pub fn recency(&self) -> (Timestamp, ImageId) {
        (self.version, self.id)
    }
}

/// The upload launches use: the newest READY upload of `image` on `provider` (by
/// [`Image::recency`]).
pub fn current_upload<'a>(
    images: impl IntoIterator<Item = &'a Image>,
    provider: &ProviderName,
    image: &ImageName,
) -> Option<&'a Image> {
    images
        .into_iter()
        .filter(|i| i.state == ImageState::Ready && &i.provider == provider && &i.name == image)
        .max_by_key(|i| i.recency())
}

/// A flavor (server size) of a cloud.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flavor {
    /// The cloud's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Memory, in MB.
    pub ram_mb: u64,
    /// Virtual CPUs.
    pub vcpus: u64,
}

/// The flavor nodepool boots for an image: the one with the least RAM of at least `min_ram`
/// MB whose name contains `name_filter`, ties broken by fewer vCPUs and then by name.
pub fn pick_flavor<'f>(
    flavors: &'f [Flavor],
    min_ram: u64,
    name_filter: Option<&str>,
) -> Option<&'f Flavor> {
    flavors
        .iter()
        .filter(|f| f.ram_mb >= min_ram && name_filter.is_none_or(|filter| f.name.contains(filter)))
        .min_by(|a, b| (a.ram_mb, a.vcpus, &a.name).cmp(&(b.ram_mb, b.vcpus, &b.name)))
}

/// The flavor an image boots with on a provider, or why there is none yet: `listed` is the
/// provider's flavors (`None` until a listing of them succeeded). Both policies ask this,
/// so that a build and a launch of one image get the same flavor, and the same sentence
/// when they wait.
pub fn flavor_for<'f>(
    listed: Option<&'f [Flavor]>,
    min_ram: u32,
    name_filter: Option<&str>,
) -> Result<&'f Flavor, String> {
    let Some(flavors) = listed else {
        return Err("its flavors are not listed yet".to_owned());
    };
    pick_flavor(flavors, u64::from(min_ram), name_filter).ok_or_else(|| {
        format!(
            "no flavor with {min_ram} MB of RAM{} is known yet",
            name_filter
                .map(|f| format!(" named like {f:?}"))
                .unwrap_or_default()
        )
    })
}
