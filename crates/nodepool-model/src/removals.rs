//! What the config no longer has but the store still has rows of, and since when: a
//! provider, label or image that disappears from the config keeps its nodes and uploads for
//! `removal-grace`, so that a typo in an edit (a renamed provider, say) is not the end of a
//! pool. The policies say what is gone in their plans; the daemon remembers since when with
//! [`Removals::observe`], and the next plans read it back. A daemon that restarts starts
//! the grace again: it errs on the side of keeping.

use std::collections::BTreeMap;

use crate::{ImageName, LabelName, ProviderName, Timestamp};

/// Something gone from the config that rows still name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Gone {
    /// A provider.
    Provider(ProviderName),
    /// A label, or one provider of a label's list.
    Label(LabelName, Option<ProviderName>),
    /// A provider's image.
    Image(ProviderName, ImageName),
}

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gone::Provider(provider) => write!(f, "provider {provider}"),
            Gone::Label(label, None) => write!(f, "label {label}"),
            Gone::Label(label, Some(provider)) => {
                write!(f, "provider {provider} of label {label}")
            }
            Gone::Image(provider, image) => write!(f, "image {image} of provider {provider}"),
        }
    }
}

/// Since when each thing gone from the config has been seen gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removals {
    since: BTreeMap<Gone, Timestamp>,
}

impl Removals {
    /// Since when `gone` has been seen gone, if it has been.
    pub fn since(&self, gone: &Gone) -> Option<Timestamp> {
        self.since.get(gone).copied()
    }

    /// Records what a round's plans found gone at `now`: what was gone before keeps its
    /// time, what is new gets `now`, and what is no longer gone (back in the config, or no
    /// row names it any more) is forgotten.
    pub fn observe(&mut self, gone: impl IntoIterator<Item = Gone>, now: Timestamp) {
        let mut since = BTreeMap::new();
        for gone in gone {
            let at = self.since.get(&gone).copied().unwrap_or(now);
            since.insert(gone, at);
        }
        self.since = since;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_stays_gone_keeps_its_time_and_what_comes_back_is_forgotten() {
        let east = || Gone::Provider("east".parse().unwrap());
        let small = || Gone::Label("small".parse().unwrap(), None);
        let t = Timestamp::from_unix_seconds;
        let mut removals = Removals::default();
        removals.observe([east()], t(10));
        removals.observe([east(), small()], t(20));
        assert_eq!(removals.since(&east()), Some(t(10)));
        assert_eq!(removals.since(&small()), Some(t(20)));
        removals.observe([small()], t(30));
        assert_eq!(removals.since(&east()), None, "back in the config");
        removals.observe([east()], t(40));
        assert_eq!(
            removals.since(&east()),
            Some(t(40)),
            "gone again: a new grace"
        );
    }
}
