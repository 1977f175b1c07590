//! The 2014 allocator: how many nodes of each label each provider launches.
//!
//! It reproduces nodepool's `allocation.py` (as of its fairness history, late 2014) exactly,
//! test cases and rounding included:
//!
//! - Each label's demand is split across the providers that can supply it, in proportion to
//!   their free capacity ([`Allocator::add_supplier`] re-spreads it every time).
//! - Each provider in turn grants ([`Allocator::make_grants`]). Labels that went without in
//!   the previous rounds ([`History`]) are served first, longest wait first, as much as they
//!   asked for. The others are served scarcest first: a label fewer providers can supply comes
//!   before one more can, and labels of equal scarcity share the provider's capacity in
//!   proportion to what they ask, rounded half away from zero (Python 2 `round`, which
//!   `f64::round` matches).
//! - A grant takes capacity from the provider and re-spreads what the label still needs over
//!   its remaining providers.
//!
//! Subnodes multiply what a grant costs; targets (Jenkins masters) had no effect and are gone.
//! One deliberate difference: a grant is never negative (2014 could compute one once
//! subnodes had overdrawn a provider, and so handed out capacity that did not exist).

use std::collections::{BTreeMap, VecDeque};

use nodepool_model::LabelName;

/// An index into the allocator's providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProviderIx(usize);

/// An index into the allocator's requests (one per label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestIx(usize);

/// One label's request from one provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubIx(usize);

/// How many rounds the fairness history remembers.
pub const HISTORY_ROUNDS: usize = 100;

/// What each label asked for and got in one round.
pub type Round = BTreeMap<LabelName, Tally>;

/// One label's total in one round.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally {
    /// Nodes asked for.
    pub requested: f64,
    /// Nodes granted.
    pub granted: u64,
}

/// The fairness memory: the last [`HISTORY_ROUNDS`] rounds, newest first. The daemon keeps
/// one and [`push`](History::push)es each round's [`Allocator::round`] after planning.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    rounds: VecDeque<Round>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers a finished round.
    pub fn push(&mut self, round: Round) {
        self.rounds.push_front(round);
        self.rounds.truncate(HISTORY_ROUNDS);
    }

    /// How many of the latest rounds in a row `label` asked for nodes and got none.
    pub fn wait_time(&self, label: &LabelName) -> usize {
        self.rounds
            .iter()
            .take_while(|round| round.get(label).is_some_and(|t| t.granted == 0))
            .count()
    }
}

#[derive(Debug)]
struct ProviderSlot {
    available: i64,
    /// Sub-requests not yet granted, in the order they were added.
    open: Vec<SubIx>,
    grants: Vec<(RequestIx, u64)>,
}

#[derive(Debug)]
struct RequestSlot {
    label: LabelName,
    amount: f64,
    /// Sub-requests not yet granted: the providers that can still supply this label.
    open: Vec<SubIx>,
    wait: usize,
}

#[derive(Debug)]
struct SubSlot {
    request: RequestIx,
    provider: ProviderIx,
    amount: f64,
    subnodes: u32,
    granted: Option<u64>,
}

/// One allocation round.
#[derive(Debug)]
pub struct Allocator<'h> {
    history: &'h History,
    providers: Vec<ProviderSlot>,
    requests: Vec<RequestSlot>,
    subs: Vec<SubSlot>,
    round: Round,
}

impl<'h> Allocator<'h> {
    /// A round that reads `history` for fairness.
    pub fn new(history: &'h History) -> Self {
        Allocator {
            history,
            providers: Vec::new(),
            requests: Vec::new(),
            subs: Vec::new(),
            round: Round::new(),
        }
    }

    /// A provider with `available` free nodes (negative counts as none).
    pub fn add_provider(&mut self, available: i64) -> ProviderIx {
        self.providers.push(ProviderSlot {
            available: available.max(0),
            open: Vec::new(),
            grants: Vec::new(),
        });
        ProviderIx(self.providers.len() - 1)
    }

    /// A request for `amount` nodes of `label`.
    pub fn add_request(&mut self, label: LabelName, amount: u64) -> RequestIx {
        let tally = self.round.entry(label.clone()).or_default();
        tally.requested += amount as f64;
        let wait = self.history.wait_time(&label);
        self.requests.push(RequestSlot {
            label,
            amount: amount as f64,
            open: Vec::new(),
            wait,
        });
        RequestIx(self.requests.len() - 1)
    }

    /// Says that `provider` can supply `request`, each node with `subnodes` more servers.
    pub fn add_supplier(
        &mut self,
        request: RequestIx,
        provider: ProviderIx,
        subnodes: u32,
    ) -> SubIx {
        if let Some(&existing) = self.requests[request.0]
            .open
            .iter()
            .find(|s| self.subs[s.0].provider == provider)
        {
            return existing;
        }
        self.subs.push(SubSlot {
            request,
            provider,
            amount: 0.0,
            subnodes,
            granted: None,
        });
        let sub = SubIx(self.subs.len() - 1);
        self.requests[request.0].open.push(sub);
        self.providers[provider.0].open.push(sub);
        self.spread(request);
        sub
    }

    /// Spreads what `request` still needs over its remaining providers, by free capacity.
    fn spread(&mut self, request: RequestIx) {
        let open = &self.requests[request.0].open;
        let total: f64 = open
            .iter()
            .map(|s| self.providers[self.subs[s.0].provider.0].available as f64)
            .sum();
        let amount = self.requests[request.0].amount;
        for s in open.clone() {
            let available = self.providers[self.subs[s.0].provider.0].available as f64;
            self.subs[s.0].amount = if total != 0.0 {
                available / total * amount
            } else {
                0.0
            };
        }
    }

    /// How many providers can still supply the sub-request's label: lower is scarcer.
    fn priority(&self, sub: SubIx) -> usize {
        self.requests[self.subs[sub.0].request.0].open.len()
    }

    /// Lets `provider` grant its open sub-requests.
    pub fn make_grants(&mut self, provider: ProviderIx) {
        let open = self.providers[provider.0].open.clone();
        let (mut ratio_path, mut waiters): (Vec<SubIx>, Vec<SubIx>) = open
            .into_iter()
            .partition(|s| self.requests[self.subs[s.0].request.0].wait == 0);
        waiters.sort_by_key(|s| std::cmp::Reverse(self.requests[self.subs[s.0].request.0].wait));
        for sub in waiters {
            let available = self.providers[provider.0].available;
            if available != 0 {
                // Whole nodes only: the fraction is dropped, as 2014's int() did.
                let wanted = self.subs[sub.0].amount.trunc() as i64;
                self.grant(sub, wanted.min(available));
            } else {
                ratio_path.push(sub);
            }
        }
        // Stable, by the scarcity each had when sorted.
        let keys: Vec<usize> = ratio_path.iter().map(|s| self.priority(*s)).collect();
        let mut order: Vec<usize> = (0..ratio_path.len()).collect();
        order.sort_by_key(|&i| keys[i]);
        let reqs: Vec<SubIx> = order.into_iter().map(|i| ratio_path[i]).collect();
        for &sub in &reqs {
            // Peers are those of the same scarcity now, granted ones included with what
            // they got, as in 2014.
            let level = self.priority(sub);
            let total: f64 = reqs
                .iter()
                .filter(|r| self.priority(**r) == level)
                .map(|r| self.subs[r.0].amount)
                .sum();
            let amount = self.subs[sub.0].amount;
            let ratio = if total != 0.0 { amount / total } else { 0.0 };
            let available = self.providers[provider.0].available as f64;
            let grant = (amount.round() as i64).min((available * ratio).round() as i64);
            self.grant(sub, grant);
        }
    }

    fn grant(&mut self, sub: SubIx, amount: i64) {
        // 2014 could grant a negative amount once subnodes had overdrawn a provider, which
        // handed capacity back; a grant here is never below zero.
        let amount = amount.max(0);
        let SubSlot {
            request,
            provider,
            subnodes,
            ..
        } = self.subs[sub.0];
        self.providers[provider.0].open.retain(|s| *s != sub);
        self.requests[request.0].open.retain(|s| *s != sub);
        let granted = u64::try_from(amount).unwrap_or(0);
        if granted > 0 {
            self.providers[provider.0].grants.push((request, granted));
            let label = &self.requests[request.0].label;
            if let Some(tally) = self.round.get_mut(label) {
                tally.granted += granted;
            }
        }
        self.subs[sub.0].amount = amount as f64;
        self.subs[sub.0].granted = Some(granted);
        self.requests[request.0].amount -= amount as f64;
        self.providers[provider.0].available -= amount * (1 + i64::from(subnodes));
        self.spread(request);
    }

    /// What `sub` was granted (0 until its provider has made its grants).
    pub fn granted(&self, sub: SubIx) -> u64 {
        self.subs[sub.0].granted.unwrap_or(0)
    }

    /// The grants `provider` made, in the order it made them.
    pub fn grants(&self, provider: ProviderIx) -> impl Iterator<Item = (&LabelName, u64)> {
        self.providers[provider.0]
            .grants
            .iter()
            .map(|(r, n)| (&self.requests[r.0].label, *n))
    }

    /// What each label asked for and got this round, for [`History::push`].
    pub fn round(&self) -> Round {
        self.round.clone()
    }
}
