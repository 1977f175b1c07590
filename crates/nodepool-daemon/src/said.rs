//! Saying a lasting condition once: a provider that cannot be reached, an image that waits
//! for a flavor, a label with no image, logged when it starts and not again every round
//! while it lasts.
//!
//! A round says every condition that holds in it; what was said in the round before is not
//! logged again. A condition that a round does not say has ended: when it returns it is
//! logged again. So every cause must be said in every round while it holds (the daemon
//! keeps the state that tells, such as a provider's last connection error), or kept with
//! [`Said::state`], which logs a value each time it changes.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, warn};

/// How a condition is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// Something an operator should know of (`INFO`).
    Info,
    /// Something wrong (`WARN`).
    Warn,
}

/// What was said, per round.
#[derive(Debug, Default)]
pub(crate) struct Said {
    /// What the last round said.
    before: BTreeSet<String>,
    /// What this round has said so far.
    now: BTreeSet<String>,
    /// Conditions said until they change, by name.
    states: BTreeMap<&'static str, String>,
}

impl Said {
    /// Says `text` unless the last round said it too; it holds in this round.
    pub(crate) fn say(&mut self, level: Level, text: String) {
        if !self.before.contains(&text) && !self.now.contains(&text) {
            log(level, &text);
        }
        self.now.insert(text);
    }

    /// Ends a round: conditions it did not say have ended.
    pub(crate) fn end_round(&mut self) {
        self.before = std::mem::take(&mut self.now);
    }

    /// Says `text` for the condition `name` when it differs from the last one said for it;
    /// `None` ends the condition (said again when it returns).
    pub(crate) fn state(&mut self, name: &'static str, level: Level, text: Option<String>) {
        match text {
            Some(text) if self.states.get(name) != Some(&text) => {
                log(level, &text);
                self.states.insert(name, text);
            }
            Some(_) => {}
            None => {
                self.states.remove(name);
            }
        }
    }
}

fn log(level: Level, text: &str) {
    match level {
        Level::Info => info!("{text}"),
        Level::Warn => warn!("{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `said` logs over rounds, each round saying the given texts.
    fn logged(rounds: &[&[&str]]) -> Vec<Vec<String>> {
        let mut said = Said::default();
        rounds
            .iter()
            .map(|round| {
                let mut logged = Vec::new();
                for text in *round {
                    let before = said.before.contains(*text) || said.now.contains(*text);
                    said.say(Level::Info, (*text).to_owned());
                    if !before {
                        logged.push((*text).to_owned());
                    }
                }
                said.end_round();
                logged
            })
            .collect()
    }

    #[test]
    fn a_condition_is_said_once_while_it_lasts_and_again_when_it_returns() {
        assert_eq!(
            logged(&[&["a", "b"], &["a", "b", "a"], &["b"], &["a", "b"], &[]]),
            [vec!["a", "b"], vec![], vec![], vec!["a"], vec![]]
        );
    }

    #[test]
    fn a_state_is_said_when_it_changes() {
        let mut said = Said::default();
        let mut changes = Vec::new();
        for value in [Some("x"), Some("x"), None, Some("x"), Some("y"), Some("y")] {
            let before = said.states.get("leader").cloned();
            said.state("leader", Level::Info, value.map(str::to_owned));
            let after = said.states.get("leader").cloned();
            if let Some(after) = after
                && Some(&after) != before.as_ref()
            {
                changes.push(after);
            }
        }
        assert_eq!(changes, ["x", "x", "y"]);
    }
}
