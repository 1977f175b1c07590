//! Carrying out a round's plans. Every choice was made by the plans (which flavor, which
//! host name, whether a delete cancels running work, which build was interrupted) or by
//! pure functions (the launch share between daemons); here each action is recorded in the
//! store first and then handed to an executor through [`Daemon::dispatch`].

use std::collections::BTreeMap;

use nodepool_db::{NewImage, NewNode, StoreError};
use nodepool_image::{ImageAction, ImagePlan};
use nodepool_model::{BuildRequestState, ImageState, ReasonCode, RequestId};
use nodepool_node::share::{Peers, Share};
use nodepool_node::{NodeAction, NodePlan};
use tracing::{debug, info, warn};

use nodepool_executor::executor;
use nodepool_executor::store;

use crate::daemon::Daemon;
use crate::round::Round;
use crate::work::WorkOn;

impl Daemon {
    pub(crate) async fn apply_images(&mut self, round: &mut Round, plan: &ImagePlan) {
        let now = round.now;
        for action in &plan.actions {
            match action {
                ImageAction::Build { .. } => self.start_build(round, action).await,
                ImageAction::FailBuild {
                    upload,
                    provider,
                    image,
                    reason,
                } => {
                    let (id, why) = (*upload, reason.clone());
                    match store::call(&self.store, move |s| {
                        s.set_image_state(id, ImageState::Delete, now, &why)
                    })
                    .await
                    {
                        Ok(_) => {
                            warn!(image = %id, provider = %provider, name = %image, "build interrupted: its daemon stopped; deleting it")
                        }
                        Err(e) => warn!(image = %id, "cannot fail the interrupted build: {e}"),
                    }
                }
                ImageAction::Delete {
                    upload,
                    cancel,
                    reason,
                    ..
                } => {
                    let Some(record) = round.snapshot.images.iter().find(|i| i.id == *upload)
                    else {
                        continue;
                    };
                    let on = WorkOn::Image(*upload);
                    if *cancel {
                        self.work.cancel(&on);
                    }
                    let ctx = self.context();
                    let connection = self.clouds.handle(&record.provider);
                    let (record, reason) = (record.clone(), reason.clone());
                    self.dispatch(on, false, now, async move {
                        let _ = executor::delete_upload(ctx, connection, record, reason).await;
                    })
                    .await;
                }
                ImageAction::FinishRequest {
                    request,
                    failure,
                    reason,
                } => {
                    let state = if failure.is_some() {
                        BuildRequestState::Failed
                    } else {
                        BuildRequestState::Done
                    };
                    let (id, reason) = (*request, reason.clone());
                    match store::call(&self.store, move |s| {
                        s.set_build_request_state(id, state, now, &reason)
                    })
                    .await
                    {
                        Ok(_) => info!(build_request = %id, "build request {state}"),
                        Err(e) => warn!(build_request = %id, "cannot finish: {e}"),
                    }
                }
            }
        }
    }

    /// Records a build (claimed by this daemon as it is recorded) and starts it.
    async fn start_build(&mut self, round: &mut Round, action: &ImageAction) {
        let ImageAction::Build {
            provider,
            image,
            flavor,
            request,
            reason,
        } = action
        else {
            return;
        };
        let Some(cloud) = self.clouds.by_name.get(provider) else {
            return;
        };
        let (ctx, connection, remote) = (
            self.context(),
            cloud.connection.clone(),
            cloud.remote.clone(),
        );
        let servers = cloud.servers.clone();
        let now = round.now;
        let mut new = NewImage::new(provider.clone(), image.clone(), now);
        if let Some(request) = *request {
            new = new.for_request(request);
        }
        let (why, me, request) = (reason.clone(), self.peers.id().to_owned(), *request);
        let created = store::call(&self.store, move |s| {
            let Some(upload) = s.create_image_checked(&new, &me, now, &why)? else {
                return Ok(None);
            };
            if let Some(request) = request {
                s.set_build_request_state(request, BuildRequestState::Started, now, &why)?;
            }
            Ok(Some(upload))
        })
        .await;
        let upload = match created {
            Ok(Some(upload)) => upload,
            Ok(None) => {
                debug!(provider = %provider, name = %image, "another daemon builds it");
                round.outdated = true;
                return;
            }
            Err(e) => {
                warn!(provider = %provider, name = %image, "cannot record the build: {e}");
                return;
            }
        };
        info!(image = %upload.id, provider = %provider, name = %image, "building: {}", reason.text);
        let flavor = flavor.id.clone();
        self.dispatch(WorkOn::Image(upload.id), true, now, async move {
            executor::build(ctx, connection, servers, remote, upload, flavor).await;
        })
        .await;
    }

    pub(crate) async fn apply_nodes(&mut self, round: &mut Round, plan: &NodePlan) {
        let now = round.now;
        // Nodes each request has, to tell when a claim fulfils it.
        let mut claimed: BTreeMap<RequestId, usize> = BTreeMap::new();
        let mut share = self.share(round, plan);
        for action in &plan.actions {
            match action {
                NodeAction::Claim {
                    request,
                    label,
                    count,
                    reason,
                } => {
                    let (id, label, count) = (*request, label.clone(), *count);
                    match store::call(&self.store, move |s| {
                        s.claim_ready_nodes(id, &label, count, now)
                    })
                    .await
                    {
                        Ok(nodes) => {
                            info!(request = %id, "{} node(s) handed out: {}", nodes.len(), reason.text);
                            if let Some(asked) = round.snapshot.requests.iter().find(|r| r.id == id)
                            {
                                let got = claimed.entry(id).or_insert(asked.nodes.len());
                                *got += nodes.len();
                                if *got == asked.labels.len() {
                                    metrics::histogram!("nodepool_request_wait_seconds")
                                        .record(now.saturating_since(asked.created).as_secs_f64());
                                    metrics::counter!("nodepool_requests_total", "outcome" => ReasonCode::Fulfilled.as_str())
                                        .increment(1);
                                }
                            }
                        }
                        Err(e) => warn!(request = %id, "cannot hand out nodes: {e}"),
                    }
                }
                NodeAction::FailRequest { request, reason } => {
                    let (id, why) = (*request, reason.clone());
                    match store::call(&self.store, move |s| s.fail_request(id, now, &why)).await {
                        Ok(_) => {
                            info!(request = %id, "failed: {}", reason.text);
                            metrics::counter!("nodepool_requests_total", "outcome" => reason.code.as_str().to_owned())
                                .increment(1);
                        }
                        // Another daemon failed it first.
                        Err(StoreError::InvalidTransition { .. }) => {}
                        Err(e) => warn!(request = %id, "cannot fail: {e}"),
                    }
                }
                NodeAction::Launch { .. } => {
                    if share == 0 {
                        continue;
                    }
                    share -= 1;
                    self.start_launch(round, action).await;
                }
                NodeAction::Delete {
                    node,
                    server,
                    cancel,
                    reason,
                } => {
                    let Some(record) = round.snapshot.nodes.iter().find(|n| n.id == *node) else {
                        continue;
                    };
                    let on = WorkOn::Node(*node);
                    if *cancel {
                        self.work.cancel(&on);
                    }
                    let ctx = self.context();
                    let connection = self.clouds.handle(&record.provider);
                    let (record, server, reason) = (record.clone(), server.clone(), reason.clone());
                    self.dispatch(on, false, now, async move {
                        let _ =
                            executor::delete_node(ctx, connection, record, server, reason).await;
                    })
                    .await;
                }
                NodeAction::DeleteLeak {
                    provider,
                    server,
                    reason,
                } => {
                    let Some((connection, servers)) = self.clouds.handle(provider) else {
                        continue;
                    };
                    let ctx = self.context();
                    let (server, reason) = (server.clone(), reason.clone());
                    let on = WorkOn::Leak(provider.clone(), server.clone());
                    self.dispatch(on, true, now, async move {
                        executor::delete_leak(ctx, connection, servers, server, reason).await;
                    })
                    .await;
                }
            }
        }
    }

    /// How many of the plan's launches this daemon starts ([`nodepool_node::share`]).
    fn share(&mut self, round: &Round, plan: &NodePlan) -> usize {
        let planned = plan
            .actions
            .iter()
            .filter(|a| matches!(a, NodeAction::Launch { .. }))
            .count();
        let building_here = self.work.nodes();
        let (building, here) = round
            .snapshot
            .nodes
            .iter()
            .filter(|n| n.state == nodepool_model::NodeState::Building)
            .fold((0, 0), |(all, here), n| {
                (all + 1, here + usize::from(building_here.contains(&n.id)))
            });
        let peers = Peers {
            live: round.live,
            building,
            building_here: here,
            held_back_since: self.peers.held_back_since,
        };
        let Share {
            start,
            held_back_since,
        } = nodepool_node::share::share(planned, &peers, round.now);
        self.peers.held_back_since = held_back_since;
        start
    }

    /// Records a launch (claimed by this daemon as it is recorded, unless another daemon
    /// launched since the plan) and starts it.
    async fn start_launch(&mut self, round: &mut Round, action: &NodeAction) {
        let NodeAction::Launch {
            provider,
            label,
            image,
            flavor,
            hostname,
            az,
            reason,
        } = action
        else {
            return;
        };
        let Some(cloud) = self.clouds.by_name.get(provider) else {
            return;
        };
        let Some(upload) = round.snapshot.images.iter().find(|i| i.id == *image) else {
            return;
        };
        let (ctx, connection, remote) = (
            self.context(),
            cloud.connection.clone(),
            cloud.remote.clone(),
        );
        let (servers, upload) = (cloud.servers.clone(), upload.clone());
        let mut new = NewNode::new(provider.clone(), label.clone())
            .image(*image)
            .hostname(hostname.clone());
        if let Some(az) = az {
            new = new.az(az.clone());
        }
        let now = round.now;
        let (why, me, planned) = (
            reason.clone(),
            self.peers.id().to_owned(),
            round.planned.clone(),
        );
        let node = match store::call(&self.store, move |s| {
            s.create_node_checked(&new, &planned, &me, now, &why)
        })
        .await
        {
            Ok(Some(node)) => node,
            Ok(None) => {
                debug!(provider = %provider, label = %label, "another daemon launched since this plan; planning again");
                round.outdated = true;
                return;
            }
            Err(e) => {
                warn!(provider = %provider, label = %label, "cannot record the launch: {e}");
                return;
            }
        };
        round.planned.recorded_since.push(node.id);
        let flavor = flavor.id.clone();
        self.dispatch(WorkOn::Node(node.id), true, now, async move {
            executor::launch(ctx, connection, servers, remote, node, upload, flavor).await;
        })
        .await;
    }
}
