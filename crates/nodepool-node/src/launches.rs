//! The launch stage: each label's demand, shared between providers by the allocator, becomes
//! launches naming their upload, flavor, host name and zone.

use nodepool_model::{
    Attempt, BackingOff, LabelName, NodeState, ProviderName, Reason, ReasonCode, Timestamp,
    flavor_for,
};

use crate::allocation::Allocator;
use crate::{About, LAUNCH_BACKOFF, Map, NodeAction, Planner, Sub};

impl<'a> Planner<'a> {
    /// `provider`'s launch backoff, if one is running. Launch failures count from
    /// `last_success`: the latest state change of a node of the provider that got past
    /// building.
    fn backoff(
        &self,
        provider: &ProviderName,
        last_success: Option<Timestamp>,
    ) -> Option<BackingOff<'a>> {
        let failures: Vec<_> = self
            .snapshot
            .failures
            .iter()
            .filter(|f| &f.provider == provider && matches!(f.attempt, Attempt::Launch(_)))
            .filter(|f| last_success.is_none_or(|s| f.at > s))
            .collect();
        LAUNCH_BACKOFF.running(&failures, self.now)
    }

    pub(crate) fn launches(&mut self) {
        let config = self.config;
        let snapshot = self.snapshot;
        // Supply per label: nodes that are or will be usable, not deleted this round.
        let mut supply = vec![0usize; config.labels.len()];
        let mut in_use = vec![0usize; config.providers.len()];
        let mut last_success: Vec<Option<Timestamp>> = vec![None; config.providers.len()];
        let mut per_zone: Vec<Vec<usize>> = config
            .providers
            .iter()
            .map(|p| vec![0; p.availability_zones.len()])
            .collect();
        for (node, &(provider, label)) in snapshot.nodes.iter().zip(&self.keys) {
            if let Some(label) = label
                && node.state.is_supply()
                && !self.deleted.contains(&node.id)
            {
                supply[label] += 1;
            }
            // Nodes of providers gone from the config count against nothing.
            let Some(p) = provider else {
                continue;
            };
            in_use[p] += 1;
            if matches!(
                node.state,
                NodeState::Ready | NodeState::InUse | NodeState::Used | NodeState::Test
            ) {
                let at = &mut last_success[p];
                *at = Some(at.map_or(node.state_time, |t| t.max(node.state_time)));
            }
            if let Some(az) = &node.az
                && let Some(z) = config.providers[p]
                    .availability_zones
                    .iter()
                    .position(|zone| zone == az)
            {
                per_zone[p][z] += 1;
            }
        }
        // Free capacity per provider, and which are backing off.
        let mut allocator = Allocator::new(&self.world.history);
        let mut slots = Vec::new();
        let mut backing_off = vec![false; config.providers.len()];
        for (i, provider) in config.providers.iter().enumerate() {
            let used = in_use[i];
            let mut free = i64::from(provider.max_servers) - used as i64;
            let headroom = self.clouds[i].map(|c| c.headroom).unwrap_or_default();
            if let Some(instances) = headroom.instances {
                free = free.min(i64::try_from(instances).unwrap_or(i64::MAX));
            }
            slots.push((provider, allocator.add_provider(free), free));
            if let Some(BackingOff {
                until,
                failures: n,
                last,
            }) = self.backoff(&provider.name, last_success[i])
            {
                let why = &last.reason;
                backing_off[i] = true;
                self.wake_at(until);
                self.note(
                    About::Provider(provider.name.clone()),
                    ReasonCode::Backoff,
                    format!(
                        "no launches on provider {} until {until}: {n} launch{} failed in a row, the last: {why}",
                        provider.name,
                        if n == 1 { "" } else { "es" }
                    ),
                );
            }
        }
        // Demand per label, and the providers that can supply it; sub-requests are kept per
        // provider slot, in label order.
        let mut subs: Vec<Vec<Sub<'_>>> = vec![Vec::new(); slots.len()];
        let mut wanted: Vec<(&LabelName, u64)> = Vec::new();
        for (li, label) in config.labels.iter().enumerate() {
            if label.min_ready < 0 {
                continue;
            }
            let outstanding = self.outstanding[li];
            let have = supply[li].saturating_sub(self.claimed[li]);
            let min_ready = usize::try_from(label.min_ready).unwrap_or(0);
            let demand = (outstanding + min_ready).saturating_sub(have);
            if demand == 0 {
                continue;
            }
            let mut suppliers = Vec::new();
            for name in &label.providers {
                let Some(&slot) = self.provider_ix.get(name) else {
                    continue;
                };
                let (provider, ix, _) = slots[slot];
                if backing_off[slot] {
                    continue;
                }
                let about = || About::LabelOn(label.name.clone(), provider.name.clone());
                let Some(&image) = self.current.get(&(&provider.name, &label.image)) else {
                    self.note(
                        about(),
                        ReasonCode::NoImage,
                        format!(
                            "label {} needs {demand} more, but provider {} has no READY image {}",
                            label.name, provider.name, label.image
                        ),
                    );
                    continue;
                };
                let Some(cloud) = self.clouds[slot] else {
                    self.note(
                        about(),
                        ReasonCode::NotConnected,
                        format!(
                            "label {} on provider {} waits: the provider is not connected",
                            label.name, provider.name
                        ),
                    );
                    continue;
                };
                // A READY upload of an image gone from the provider's config is deleted by
                // the image policy this round: nothing launches from it.
                let Some(settings) = provider.images.iter().find(|i| i.name == label.image) else {
                    continue;
                };
                match flavor_for(
                    cloud.flavors.as_deref(),
                    settings.min_ram,
                    settings.name_filter.as_deref(),
                ) {
                    Ok(flavor) => suppliers.push((slot, ix, image, flavor)),
                    Err(why) => self.note(
                        about(),
                        ReasonCode::NoFlavor,
                        format!(
                            "label {} on provider {} waits: {why}",
                            label.name, provider.name
                        ),
                    ),
                }
            }
            if suppliers.is_empty() {
                continue;
            }
            let request = allocator.add_request(label.name.clone(), demand as u64);
            wanted.push((&label.name, demand as u64));
            for (slot, ix, image, flavor) in suppliers {
                subs[slot].push(Sub {
                    label,
                    image,
                    flavor,
                    sub: allocator.add_supplier(request, ix, 0),
                    demand,
                    outstanding,
                    have,
                });
            }
        }
        for &(_, ix, _) in &slots {
            allocator.make_grants(ix);
        }
        self.round = allocator.round();
        // Grants become launches, capped by the cloud's cores and RAM.
        let mut granted_total: Map<&LabelName, u64> = Map::default();
        for (i, (&(provider, _, free), subs)) in slots.iter().zip(&subs).enumerate() {
            let cloud = self.clouds[i];
            let headroom = cloud.map(|c| c.headroom).unwrap_or_default();
            let mut cores = headroom.cores;
            let mut ram = headroom.ram_mb;
            let mut az_counts: Vec<(usize, &String)> = per_zone[i]
                .iter()
                .copied()
                .zip(&provider.availability_zones)
                .collect();
            for &Sub {
                label,
                image,
                flavor,
                sub,
                demand,
                outstanding,
                have,
            } in subs
            {
                let granted = allocator.granted(sub);
                let mut n = granted;
                for (left, per) in [(&mut cores, flavor.vcpus), (&mut ram, flavor.ram_mb)] {
                    if let Some(left) = left
                        && per > 0
                    {
                        n = n.min(*left / per);
                    }
                }
                if let Some(c) = cores.as_mut() {
                    *c -= n * flavor.vcpus;
                }
                if let Some(r) = ram.as_mut() {
                    *r -= n * flavor.ram_mb;
                }
                if n < granted {
                    self.note(
                        About::LabelOn(label.name.clone(), provider.name.clone()),
                        ReasonCode::AtCapacity,
                        format!(
                            "provider {} could launch {granted} {} but its cloud has cores or RAM for {n}",
                            provider.name, label.name
                        ),
                    );
                }
                *granted_total.entry(&label.name).or_default() += n;
                if n == 0 {
                    continue;
                }
                // One reason for the whole grant: formatting it per node would cost more
                // than the rest of the plan.
                let reason = Reason::new(
                    ReasonCode::Demand,
                    format!(
                        "label {} needs {demand} more ({outstanding} waiting request positions + min-ready {} - {have} ready or building); provider {} launches {n} ({free} free of max-servers {})",
                        label.name, label.min_ready, provider.name, provider.max_servers
                    ),
                );
                let hostname = format!("{}-{}-{{node_id}}", label.name, provider.name);
                for _ in 0..n {
                    let az =
                        az_counts
                            .iter_mut()
                            .min_by_key(|(count, _)| *count)
                            .map(|(count, az)| {
                                *count += 1;
                                (*az).clone()
                            });
                    self.launches.push(NodeAction::Launch {
                        provider: provider.name.clone(),
                        label: label.name.clone(),
                        image,
                        flavor: flavor.clone(),
                        hostname: hostname.clone(),
                        az,
                        reason: reason.clone(),
                    });
                }
            }
        }
        // Demand nobody could take.
        for (label, demand) in wanted {
            let got = granted_total.get(label).copied().unwrap_or(0);
            let Some(missing) = demand.checked_sub(got).filter(|m| *m > 0) else {
                continue;
            };
            self.note(
                About::Label(label.clone()),
                ReasonCode::AtCapacity,
                format!(
                    "label {label} is {missing} short: its providers are at max-servers, at their cloud's limits or backing off"
                ),
            );
        }
    }
}
