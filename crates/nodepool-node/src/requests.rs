//! The request stage: waiting requests take ready nodes, in serving order; requests that can
//! never be served fail.

use std::collections::BTreeMap;

use nodepool_model::{
    Human, LabelName, NodeRequest, NodeState, Reason, ReasonCode, RequestId, Timestamp,
};

use crate::{Map, NodeAction, Planner};

impl<'a> Planner<'a> {
    /// Why a request can never be served, if it cannot.
    fn unservable(&self, request: &NodeRequest) -> Option<String> {
        for name in &request.labels {
            let Some(label) = self.label_ix.get(name).map(|&i| &self.config.labels[i]) else {
                return Some(format!("there is no label {name} in the config"));
            };
            if label.min_ready < 0 {
                return Some(format!("label {name} is disabled (min-ready -1)"));
            }
            if !label
                .providers
                .iter()
                .any(|p| self.provider_ix.contains_key(p))
            {
                return Some(format!("no provider in the config supplies label {name}"));
            }
        }
        None
    }

    /// Requests in serving order: higher priority first; within one priority, every
    /// requestor's oldest request before anyone's second; then oldest first.
    fn serving_order(&self) -> Vec<&'a NodeRequest> {
        let mut seen: Map<(i32, &str), usize> = Map::default();
        let mut by_age: Vec<&'a NodeRequest> = self.snapshot.requests.iter().collect();
        by_age.sort_by_key(|r| (r.created, r.id));
        // (priority first, this requestor's n-th request, age, id)
        type Order = (std::cmp::Reverse<i32>, usize, Timestamp, RequestId);
        let mut keyed: Vec<(Order, &'a NodeRequest)> = by_age
            .into_iter()
            .map(|r| {
                let turn = seen.entry((r.priority, r.requestor.as_str())).or_insert(0);
                *turn += 1;
                ((std::cmp::Reverse(r.priority), *turn, r.created, r.id), r)
            })
            .collect();
        keyed.sort_by_key(|(key, _)| *key);
        keyed.into_iter().map(|(_, r)| r).collect()
    }

    pub(crate) fn requests(&mut self) {
        // READY nodes free to hand out, per label.
        let mut ready = vec![0usize; self.config.labels.len()];
        for (node, &(_, label)) in self.snapshot.nodes.iter().zip(&self.keys) {
            if let Some(label) = label
                && node.state == NodeState::Ready
                && node.request.is_none()
                && !self.deleted.contains(&node.id)
                && !self.busy(node.id)
            {
                ready[label] += 1;
            }
        }
        for request in self.serving_order() {
            if let Some(why) = self.unservable(request) {
                self.failed_requests.push(NodeAction::FailRequest {
                    request: request.id,
                    reason: Reason::new(ReasonCode::Unservable, why),
                });
                continue;
            }
            let timeout = self.config.api.request_timeout;
            let deadline = request.created.saturating_add(timeout);
            if self.now >= deadline {
                self.failed_requests.push(NodeAction::FailRequest {
                    request: request.id,
                    reason: Reason::new(
                        ReasonCode::RequestTimeout,
                        format!("not served within {} (api.request-timeout)", Human(timeout)),
                    ),
                });
                continue;
            }
            self.wake_at(deadline);
            let mut wanted: BTreeMap<&'a LabelName, usize> = BTreeMap::new();
            for label in &request.labels {
                *wanted.entry(label).or_default() += 1;
            }
            for node in &request.nodes {
                if let Some(label) = self.node_by_id.get(node).map(|n| &n.label)
                    && let Some(n) = wanted.get_mut(label)
                {
                    *n = n.saturating_sub(1);
                }
            }
            for (label, want) in wanted {
                // Every label of a servable request is in the config.
                let Some(&ix) = self.label_ix.get(label) else {
                    continue;
                };
                let take = want.min(ready[ix]);
                if take > 0 {
                    ready[ix] -= take;
                    self.claimed[ix] += take;
                    self.claims.push(NodeAction::Claim {
                        request: request.id,
                        label: label.clone(),
                        count: take,
                        reason: Reason::new(
                            ReasonCode::Claim,
                            format!(
                                "{} asked for {want} {label} node{} (request {}, priority {})",
                                request.requestor,
                                if want == 1 { "" } else { "s" },
                                request.id,
                                request.priority
                            ),
                        ),
                    });
                }
                if want > take {
                    self.outstanding[ix] += want - take;
                }
            }
        }
    }
}
