//! Nodepool's image lifecycle policy: which images to build, which upload to launch from,
//! which uploads to delete, and why.
//!
//! The policy decides; it never acts. [`plan`] is a pure function of the store's
//! [`Snapshot`], the [`Config`], the current time and what the daemon knows beyond the
//! store ([`World`]: which providers are connected with which flavors, which uploads its
//! executors work on): no I/O, no clock, no randomness. The daemon calls it every round,
//! carries out the [`ImageAction`]s and asks again by [`ImagePlan::next_wakeup`] at the
//! latest. Every action and every decision not to act carries a [`Reason`] that
//! `nodepool show` and the logs print.
//!
//! The rules are nodepool's since 2014:
//!
//! - **Missing images are built at once**: every (provider, image) used by a label with
//!   `min-ready` ≥ 0 that has no READY and no BUILDING upload gets a build. Repeated failures
//!   back off (1 minute, doubling, at most 30 minutes) instead of retrying a broken script
//!   every round.
//! - **Scheduled rebuilds**: when the `image-update` schedule has fired and an image in use
//!   has not been built since, it is built once. A fire missed while the daemon was stopped
//!   is served once on start, never once per missed day.
//! - **Requested builds** (`nodepool image-update`) are served the same way, at once, without
//!   backoff; the request is finished when its builds are.
//! - **Never two builds of one image on one provider at once**; a build running longer than
//!   the provider's `launch-timeout` plus the 6-hour snapshot wait is failed and deleted
//!   (its executor cancelled). A build no executor works on (its daemon stopped) is failed.
//! - **Builds need a connected provider and a flavor**: each build names the smallest
//!   flavor that fits the image; until one is known, the build waits and says why.
//! - **Launches use the newest READY upload** ([`current`]).
//! - **Retention**: the newest and second-newest READY uploads are kept forever; any other
//!   upload is deleted once it has been 8 hours in its current state (so failed and stuck
//!   builds go too); uploads of providers or images removed from the config are deleted at
//!   once. Deleting a bad new image makes launches fall back to the previous one.
//!
//! ```
//! use nodepool_image::{ImageAction, World, plan};
//! use nodepool_model::{Flavor, ReasonCode, Snapshot, Timestamp};
//!
//! let config = nodepool_config::parse(
//!     "labels:\n  - name: small\n    image: base\n    min-ready: 1\n    providers: [{name: cloud1}]\n\
//!      providers:\n  - name: cloud1\n    driver: fake\n    max-servers: 10\n    images:\n      - name: base\n        base-image: Ubuntu 22.04\n        min-ram: 2048\n",
//!     "nodepool.yaml",
//! )
//! .unwrap()
//! .config;
//! let now = Timestamp::from_unix_seconds(1_400_000_000);
//! // cloud1 is connected, and lists a flavor that fits.
//! let mut world = World::default();
//! let flavor = Flavor { id: "f1".into(), name: "m1.small".into(), ram_mb: 2048, vcpus: 1 };
//! world.clouds.insert("cloud1".parse().unwrap(), Some(vec![flavor].into()));
//! let plan = plan(&Snapshot::default(), &config, now, &world);
//! // Nothing is built yet, so the image is built at once.
//! assert!(matches!(
//!     &plan.actions[..],
//!     [ImageAction::Build { provider, image, reason, .. }]
//!         if provider.as_str() == "cloud1" && image.as_str() == "base" && reason.code == ReasonCode::Missing
//! ));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use nodepool_config::{Config, Provider, ProviderImage};
use nodepool_model::{
    Attempt, BackingOff, Backoff, BuildRequest, BuildRequestId, BuildRequestState, Failure, Flavor,
    Gone, Human, Image, ImageId, ImageName, ImageState, ProviderName, Reason, ReasonCode, Removals,
    Snapshot, Timestamp, flavor_for,
};

/// How long an upload that is not the newest or second-newest READY one is kept in its
/// current state (2014 `IMAGE_CLEANUP`).
pub const IMAGE_CLEANUP: Duration = Duration::from_secs(8 * 3600);

/// How long a snapshot may take to become active (2014 `IMAGE_TIMEOUT`). A build may run for
/// the provider's `launch-timeout` (the template server) plus this long.
pub const IMAGE_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// The wait after failed builds of one image in a row: 1 minute after the first, doubling
/// per failure, at most 30 minutes.
pub const BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(60),
    max: Duration::from_secs(30 * 60),
};

/// Something the daemon should do about images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageAction {
    /// Build `image` on `provider`: record the upload, boot the template, snapshot it.
    Build {
        /// Where to build.
        provider: ProviderName,
        /// What to build.
        image: ImageName,
        /// The flavor of the template server: the smallest that fits the image.
        flavor: Flavor,
        /// The operator's request this build serves, if any.
        request: Option<BuildRequestId>,
        /// Why.
        reason: Reason,
    },
    /// Fail a build that no executor works on (the daemon running it stopped): mark its
    /// upload for deletion, which the next round carries out.
    FailBuild {
        /// The upload.
        upload: ImageId,
        /// Its provider.
        provider: ProviderName,
        /// Its image.
        image: ImageName,
        /// Why ([`ReasonCode::Interrupted`]).
        reason: Reason,
    },
    /// Delete an upload: its template server, its cloud image, then its row.
    Delete {
        /// The upload.
        upload: ImageId,
        /// Its provider.
        provider: ProviderName,
        /// Its image.
        image: ImageName,
        /// An executor of this daemon works on the upload (a build past its deadline): stop
        /// it first.
        cancel: bool,
        /// Why; [`ReasonCode::BuildTimeout`] means the build failed.
        reason: Reason,
    },
    /// Close a build request: done when `failure` is `None`, failed otherwise.
    FinishRequest {
        /// The request.
        request: BuildRequestId,
        /// Why it failed, if it did.
        failure: Option<String>,
        /// Why it is finished.
        reason: Reason,
    },
}

/// A build the policy chose not to start yet, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wait {
    /// The provider.
    pub provider: ProviderName,
    /// The image.
    pub image: ImageName,
    /// When the wait ends, if the policy knows.
    pub until: Option<Timestamp>,
    /// Why it waits.
    pub reason: Reason,
}

/// What the policy knows beyond the store and the config.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Each connected provider's flavors, once a listing of them succeeded (`None` until
    /// then). A provider absent is not connected: nothing is built there, and uploads that
    /// must go from its cloud wait.
    pub clouds: BTreeMap<ProviderName, Option<Arc<[Flavor]>>>,
    /// Uploads an executor of this daemon works on (a build or a deletion): only the build
    /// deadline touches them, and its delete cancels the executor.
    pub busy: BTreeSet<ImageId>,
    /// Uploads another live daemon works on: never touched here.
    pub elsewhere: BTreeSet<ImageId>,
    /// Since when each provider or image gone from the config has been seen gone: their
    /// uploads are kept for `removal-grace` from then.
    pub removals: Removals,
}

/// The policy's answer for one round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImagePlan {
    /// What to do now: failed builds first, then finished requests, deletions (by upload
    /// id), then builds.
    pub actions: Vec<ImageAction>,
    /// Builds that are due but held back, with the reason.
    pub waits: Vec<Wait>,
    /// The latest time to ask again: the next retention expiry, build timeout, end of a
    /// backoff or schedule fire. `None` if nothing is pending in time.
    pub next_wakeup: Option<Timestamp>,
    /// What the config no longer has that uploads still name (to remember since when, in
    /// [`World::removals`]).
    pub gone: BTreeSet<Gone>,
}

/// The upload to launch from: the newest READY upload of `image` on `provider` (the highest
/// version; the higher id on a tie).
pub fn current<'a>(
    images: &'a [Image],
    provider: &ProviderName,
    image: &ImageName,
) -> Option<&'a Image> {
    nodepool_model::current_upload(images, provider, image)
}

/// Decides what to build and delete now. See the crate documentation for the rules.
pub fn plan(snapshot: &Snapshot, config: &Config, now: Timestamp, world: &World) -> ImagePlan {
    let mut planner = Planner::new(snapshot, config, now, world);
    planner.interrupted();
    planner.finish_and_serve_requests();
    planner.retention();
    planner.missing();
    planner.scheduled();
    if let Some(fire) = config.cron.image_update.next_after(now) {
        planner.wake_at(fire);
    }
    planner.into_plan()
}

type Key<'a> = (&'a ProviderName, &'a ImageName);

/// What one (provider, image) has, gathered once.
#[derive(Default)]
struct Uploads<'a> {
    all: Vec<&'a Image>,
    building: Option<&'a Image>,
    /// READY uploads, newest first.
    ready: Vec<&'a Image>,
    failures: Vec<&'a Failure>,
}

struct Planner<'a> {
    config: &'a Config,
    snapshot: &'a Snapshot,
    now: Timestamp,
    world: &'a World,
    uploads: BTreeMap<Key<'a>, Uploads<'a>>,
    providers: BTreeMap<&'a ProviderName, &'a Provider>,
    /// Every (provider, image) in use, in config order.
    in_use: Vec<Key<'a>>,
    /// Builds planned in this round.
    building: BTreeSet<Key<'a>>,
    /// Builds that wait this round for their provider or a flavor (said once).
    cannot_build: BTreeSet<Key<'a>>,
    failed: Vec<ImageAction>,
    finished: Vec<ImageAction>,
    deletes: Vec<ImageAction>,
    builds: Vec<ImageAction>,
    waits: Vec<Wait>,
    next_wakeup: Option<Timestamp>,
    /// What the config no longer has that uploads still name.
    gone: BTreeSet<Gone>,
    /// What of that is still in its grace, said once a round.
    pending: BTreeSet<Gone>,
}

impl<'a> Planner<'a> {
    fn new(snapshot: &'a Snapshot, config: &'a Config, now: Timestamp, world: &'a World) -> Self {
        let mut uploads: BTreeMap<Key<'a>, Uploads<'a>> = BTreeMap::new();
        for image in &snapshot.images {
            let entry = uploads.entry((&image.provider, &image.name)).or_default();
            entry.all.push(image);
            match image.state {
                // Two would break the one-build rule; the newer one is the live one.
                ImageState::Building
                    if entry.building.is_none_or(|b| b.recency() < image.recency()) =>
                {
                    entry.building = Some(image);
                }
                ImageState::Ready => entry.ready.push(image),
                // Delete, and any state a newer store knows: nothing to launch from.
                _ => {}
            }
        }
        for entry in uploads.values_mut() {
            entry.ready.sort_by_key(|i| std::cmp::Reverse(i.recency()));
        }
        for failure in &snapshot.failures {
            if let Attempt::Build(image) = &failure.attempt {
                uploads
                    .entry((&failure.provider, image))
                    .or_default()
                    .failures
                    .push(failure);
            }
        }
        let providers = config.providers.iter().map(|p| (&p.name, p)).collect();
        let in_use = Self::in_use(config, &providers);
        Planner {
            config,
            snapshot,
            now,
            world,
            uploads,
            providers,
            in_use,
            building: BTreeSet::new(),
            cannot_build: BTreeSet::new(),
            failed: Vec::new(),
            finished: Vec::new(),
            deletes: Vec::new(),
            builds: Vec::new(),
            waits: Vec::new(),
            next_wakeup: None,
            gone: BTreeSet::new(),
            pending: BTreeSet::new(),
        }
    }

    fn into_plan(self) -> ImagePlan {
        let mut actions = self.failed;
        actions.extend(self.finished);
        let mut deletes = self.deletes;
        deletes.sort_by_key(|a| match a {
            ImageAction::Delete { upload, .. } => *upload,
            _ => ImageId::new(0),
        });
        actions.extend(deletes);
        actions.extend(self.builds);
        ImagePlan {
            actions,
            waits: self.waits,
            next_wakeup: self.next_wakeup,
            gone: self.gone,
        }
    }

    fn wake_at(&mut self, at: Timestamp) {
        if at > self.now {
            self.next_wakeup = Some(self.next_wakeup.map_or(at, |t| t.min(at)));
        }
    }

    fn provider(&self, name: &ProviderName) -> Option<&'a Provider> {
        self.providers.get(name).copied()
    }

    fn uploads(&self, key: Key<'a>) -> Option<&Uploads<'a>> {
        self.uploads.get(&key)
    }

    /// A build is running (in the store or planned this round).
    fn is_building(&self, key: Key<'a>) -> bool {
        self.building.contains(&key) || self.uploads(key).is_some_and(|u| u.building.is_some())
    }

    /// Builds `key` with the flavor that fits it, or says why it waits: its provider is not
    /// connected, or no flavor of it is known to fit.
    fn build(&mut self, key: Key<'a>, request: Option<BuildRequestId>, reason: Reason) {
        if self.cannot_build.contains(&key) {
            return;
        }
        let Some(listed) = self.world.clouds.get(key.0) else {
            self.cannot_build.insert(key);
            let why = format!("{} waits: the provider is not connected", describe(key));
            return self.wait(key, None, Reason::new(ReasonCode::NotConnected, why));
        };
        let Some(settings) = self
            .provider(key.0)
            .and_then(|p| p.images.iter().find(|i| &i.name == key.1))
        else {
            return;
        };
        let flavor = match flavor_for(
            listed.as_deref(),
            settings.min_ram,
            settings.name_filter.as_deref(),
        ) {
            Ok(flavor) => flavor.clone(),
            Err(why) => {
                self.cannot_build.insert(key);
                let why = format!("{} waits: {why}", describe(key));
                return self.wait(key, None, Reason::new(ReasonCode::NoFlavor, why));
            }
        };
        self.building.insert(key);
        self.builds.push(ImageAction::Build {
            provider: key.0.clone(),
            image: key.1.clone(),
            flavor,
            request,
            reason,
        });
    }

    /// Builds in the store that no executor works on: their daemon stopped before they
    /// finished, and a build cannot be resumed. (Building nodes are the node policy's: it
    /// deletes them with the server their tags name.)
    fn interrupted(&mut self) {
        for upload in &self.snapshot.images {
            if upload.state == ImageState::Building
                && !self.world.busy.contains(&upload.id)
                && !self.world.elsewhere.contains(&upload.id)
            {
                self.failed.push(ImageAction::FailBuild {
                    upload: upload.id,
                    provider: upload.provider.clone(),
                    image: upload.name.clone(),
                    reason: Reason::new(
                        ReasonCode::Interrupted,
                        "the daemon building it stopped before the build finished",
                    ),
                });
            }
        }
    }

    fn wait(&mut self, key: Key<'a>, until: Option<Timestamp>, reason: Reason) {
        if let Some(until) = until {
            self.wake_at(until);
        }
        self.waits.push(Wait {
            provider: key.0.clone(),
            image: key.1.clone(),
            until,
            reason,
        });
    }

    /// Every (provider, image) a label with `min-ready` ≥ 0 launches from, in config order.
    /// Images made by diskimage-builder are left out: this version does not build them.
    fn in_use(
        config: &'a Config,
        providers: &BTreeMap<&'a ProviderName, &'a Provider>,
    ) -> Vec<Key<'a>> {
        let mut keys = Vec::new();
        let mut seen = BTreeSet::new();
        for label in config.labels.iter().filter(|l| l.min_ready >= 0) {
            for provider in &label.providers {
                let Some(p) = providers.get(provider) else {
                    continue;
                };
                let buildable =
                    |i: &ProviderImage| i.name == label.image && i.source.base_image().is_some();
                if p.images.iter().any(buildable) {
                    let key = (&p.name, &label.image);
                    if seen.insert(key) {
                        keys.push(key);
                    }
                }
            }
        }
        keys
    }

    /// The backoff after failed builds of `key`, if one is running: failures since the
    /// newest READY upload became READY count.
    fn backoff(&self, key: Key<'a>) -> Option<BackingOff<'a>> {
        let uploads = self.uploads(key)?;
        let since = uploads.ready.iter().map(|i| i.state_time).max();
        let failures: Vec<&'a Failure> = uploads
            .failures
            .iter()
            .copied()
            .filter(|f| since.is_none_or(|s| f.at > s))
            .collect();
        BACKOFF.running(&failures, self.now)
    }

    /// Builds `key` for `why` unless a build runs or a backoff holds it.
    fn build_unless_held(&mut self, key: Key<'a>, why: Reason) {
        if self.is_building(key) {
            return;
        }
        if let Some(BackingOff {
            until,
            failures: n,
            last,
        }) = self.backoff(key)
        {
            let builds = if n == 1 { "build" } else { "builds" };
            self.wait(
                key,
                Some(until),
                Reason::new(
                    ReasonCode::Backoff,
                    format!(
                        "{} waits until {until} ({}): {n} {builds} failed in a row, the last at {}: {}",
                        describe(key),
                        why.code,
                        last.at,
                        last.reason
                    ),
                ),
            );
            return;
        }
        self.build(key, None, why);
    }

    fn missing(&mut self) {
        for key in self.in_use.clone() {
            let present = self
                .uploads(key)
                .is_some_and(|u| u.building.is_some() || !u.ready.is_empty());
            if !present {
                let why = Reason::new(
                    ReasonCode::Missing,
                    format!("{} has no READY or BUILDING upload", describe(key)),
                );
                self.build_unless_held(key, why);
            }
        }
    }

    fn scheduled(&mut self) {
        let Some(fire) = self.config.cron.image_update.last_at_or_before(self.now) else {
            return;
        };
        for key in self.in_use.clone() {
            let attempted = self.uploads(key).is_some_and(|u| {
                u.all.iter().any(|i| i.version >= fire) || u.failures.iter().any(|f| f.at >= fire)
            });
            if attempted || self.building.contains(&key) {
                continue;
            }
            if let Some(running) = self.uploads(key).and_then(|u| u.building) {
                self.wait(
                    key,
                    None,
                    Reason::new(
                        ReasonCode::BuildRunning,
                        format!(
                            "the image-update of {fire} for {} follows upload {} (started {})",
                            describe(key),
                            running.id,
                            running.version
                        ),
                    ),
                );
                continue;
            }
            let why = Reason::new(
                ReasonCode::Scheduled,
                format!(
                    "image-update ({}) fired at {fire} and {} was last built before it",
                    self.config.cron.image_update.as_str(),
                    describe(key)
                ),
            );
            self.build_unless_held(key, why);
        }
    }

    /// The (provider, image) pairs a build request asks for, or why it asks for nothing.
    fn targets(&self, request: &'a BuildRequest) -> Result<Vec<Key<'a>>, String> {
        let has_image = |p: &&'a Provider| p.images.iter().any(|i| i.name == request.image);
        let buildable = |p: &&'a Provider| {
            p.images
                .iter()
                .any(|i| i.name == request.image && i.source.base_image().is_some())
        };
        match &request.provider {
            Some(name) => {
                let Some(p) = self.provider(name) else {
                    return Err(format!("there is no provider {name} in the config"));
                };
                if !has_image(&p) {
                    return Err(format!("provider {name} has no image {}", request.image));
                }
                if !buildable(&p) {
                    return Err(format!(
                        "image {} of provider {name} is made by diskimage-builder, which this version does not build",
                        request.image
                    ));
                }
                Ok(vec![(&p.name, &request.image)])
            }
            None => {
                let keys: Vec<_> = self
                    .config
                    .providers
                    .iter()
                    .filter(buildable)
                    .map(|p| (&p.name, &request.image))
                    .collect();
                if keys.is_empty() {
                    if self.config.providers.iter().any(|p| has_image(&p)) {
                        return Err(format!(
                            "image {} is made by diskimage-builder on every provider that has it, which this version does not build",
                            request.image
                        ));
                    }
                    return Err(format!("no provider has an image {}", request.image));
                }
                Ok(keys)
            }
        }
    }

    fn finish_and_serve_requests(&mut self) {
        for request in &self.snapshot.build_requests {
            let targets = match self.targets(request) {
                Ok(targets) => targets,
                Err(why) => {
                    self.finish(request.id, Some(why));
                    continue;
                }
            };
            match request.state {
                BuildRequestState::Pending => self.serve(request, &targets),
                BuildRequestState::Started => self.follow(request, &targets),
                // Done, failed, or a state a newer store knows: not ours to move.
                _ => {}
            }
        }
    }

    fn finish(&mut self, request: BuildRequestId, failure: Option<String>) {
        let reason = match &failure {
            None => Reason::new(ReasonCode::BuildDone, "every build it asked for is READY"),
            Some(why) => Reason::new(ReasonCode::BuildFailed, why.clone()),
        };
        self.finished.push(ImageAction::FinishRequest {
            request,
            failure,
            reason,
        });
    }

    /// A pending request starts when none of its images is being built (all at once, so that
    /// one start time covers its builds).
    fn serve(&mut self, request: &'a BuildRequest, targets: &[Key<'a>]) {
        let busy: Vec<Key<'a>> = targets
            .iter()
            .copied()
            .filter(|k| self.is_building(*k))
            .collect();
        if !busy.is_empty() {
            for key in busy {
                self.wait(
                    key,
                    None,
                    Reason::new(
                        ReasonCode::BuildRunning,
                        format!(
                            "build request {} by {} waits for the running build of {}",
                            request.id,
                            request.requested_by,
                            describe(key)
                        ),
                    ),
                );
            }
            return;
        }
        for &key in targets {
            let why = Reason::new(
                ReasonCode::Requested,
                format!(
                    "{} asked for a build of {} (build request {})",
                    request.requested_by,
                    describe(key),
                    request.id
                ),
            );
            self.build(key, Some(request.id), why);
        }
    }

    /// A started request is done when each of its images has a READY upload started since,
    /// and failed when one has none and none running.
    fn follow(&mut self, request: &'a BuildRequest, targets: &[Key<'a>]) {
        let started = request.state_time;
        let mut failures = Vec::new();
        let mut running = false;
        for &key in targets {
            let uploads = self.uploads(key);
            let since = |state| {
                uploads.is_some_and(|u| {
                    u.all
                        .iter()
                        .any(|i| i.state == state && i.version >= started)
                })
            };
            if since(ImageState::Ready) {
                continue;
            }
            if since(ImageState::Building) {
                running = true;
                continue;
            }
            let failure = uploads
                .and_then(|u| u.failures.iter().rev().find(|f| f.at >= started))
                .map_or_else(
                    || "its upload was deleted before it became READY".to_owned(),
                    |f| f.reason.clone(),
                );
            failures.push(format!("the build of {} failed: {failure}", describe(key)));
        }
        if running {
            return;
        }
        let failure = (!failures.is_empty()).then(|| failures.join("; "));
        self.finish(request.id, failure);
    }

    fn retention(&mut self) {
        // Taken out while its entries are judged (judging records waits), then put back.
        let all = std::mem::take(&mut self.uploads);
        for (&key, uploads) in &all {
            let keep: Vec<ImageId> = uploads.ready.iter().take(2).map(|i| i.id).collect();
            for &upload in &uploads.all {
                let reason = match self.judge(key, upload, &keep) {
                    Verdict::Delete(reason) => reason,
                    Verdict::Gone(gone, reason) => {
                        let since = self.world.removals.since(&gone).unwrap_or(self.now);
                        let until = since.saturating_add(self.config.removal_grace);
                        self.gone.insert(gone.clone());
                        if self.now >= until {
                            reason
                        } else {
                            if self.pending.insert(gone.clone()) {
                                let text = format!(
                                    "{gone} is gone from the config: its image uploads are deleted at {until} (removal-grace), unless the config brings it back"
                                );
                                self.wait(
                                    key,
                                    Some(until),
                                    Reason::new(ReasonCode::RemovalPending, text),
                                );
                            } else {
                                self.wake_at(until);
                            }
                            continue;
                        }
                    }
                    Verdict::KeepUntil(at) => {
                        self.next_wakeup = Some(self.next_wakeup.map_or(at, |t| t.min(at)));
                        continue;
                    }
                    Verdict::Keep => continue,
                };
                match self.delete(upload, reason) {
                    Deletion::Now(delete) => self.deletes.push(delete),
                    Deletion::Waits(wait) => self.waits.push(wait),
                    Deletion::Left => {}
                }
            }
        }
        self.uploads = all;
    }

    /// The deletion of `upload` for `reason`, unless another daemon works on it, or an
    /// executor here does and the reason is not the build deadline, or it must go from the
    /// cloud of a provider that is not connected (then it waits, and says so).
    fn delete(&self, upload: &Image, reason: Reason) -> Deletion {
        if self.world.elsewhere.contains(&upload.id) {
            return Deletion::Left;
        }
        let cancel = self.world.busy.contains(&upload.id);
        if cancel && reason.code != ReasonCode::BuildTimeout {
            return Deletion::Left;
        }
        let in_cloud = upload.server_external_id.is_some() || upload.external_id.is_some();
        // Marked for deletion already: nothing to do until the provider connects.
        if !self.world.clouds.contains_key(&upload.provider)
            && in_cloud
            && upload.state == ImageState::Delete
        {
            return Deletion::Waits(Wait {
                provider: upload.provider.clone(),
                image: upload.name.clone(),
                until: None,
                reason: Reason::new(
                    ReasonCode::NotConnected,
                    format!(
                        "image upload {} waits for its deletion: provider {} is not connected",
                        upload.id, upload.provider
                    ),
                ),
            });
        }
        Deletion::Now(ImageAction::Delete {
            upload: upload.id,
            provider: upload.provider.clone(),
            image: upload.name.clone(),
            cancel,
            reason,
        })
    }

    /// Whether to delete `upload` now, and if not, until when it is safe.
    fn judge(&self, key: Key<'a>, upload: &Image, keep: &[ImageId]) -> Verdict {
        let age = self.now.saturating_since(upload.state_time);
        if upload.state == ImageState::Delete {
            return Verdict::Delete(Reason::new(
                ReasonCode::Marked,
                format!("marked for deletion {} ago", Human(age)),
            ));
        }
        let Some(provider) = self.provider(key.0) else {
            return Verdict::Gone(
                Gone::Provider(key.0.clone()),
                Reason::new(
                    ReasonCode::ProviderRemoved,
                    format!("provider {} is no longer in the config", key.0),
                ),
            );
        };
        if !provider.images.iter().any(|i| &i.name == key.1) {
            return Verdict::Gone(
                Gone::Image(key.0.clone(), key.1.clone()),
                Reason::new(
                    ReasonCode::ImageRemoved,
                    format!("provider {} no longer has an image {}", key.0, key.1),
                ),
            );
        }
        // Deadlines are strict: an upload exactly 8 hours old is kept, one a moment older goes.
        let after = |limit: Duration| upload.state_time.first_past(limit);
        match upload.state {
            ImageState::Ready if keep.contains(&upload.id) => return Verdict::Keep,
            ImageState::Building => {
                let timeout = provider.launch_timeout.saturating_add(IMAGE_TIMEOUT);
                if age > timeout && timeout <= IMAGE_CLEANUP {
                    return Verdict::Delete(Reason::new(
                        ReasonCode::BuildTimeout,
                        format!(
                            "the build has run {}, longer than launch-timeout ({}) plus the {} snapshot wait",
                            Human(age),
                            Human(provider.launch_timeout),
                            Human(IMAGE_TIMEOUT)
                        ),
                    ));
                }
                if age <= IMAGE_CLEANUP {
                    return Verdict::KeepUntil(after(timeout.min(IMAGE_CLEANUP)));
                }
            }
            // Older READY uploads, and states a newer store knows, age out.
            _ => {}
        }
        if age > IMAGE_CLEANUP {
            let what = match upload.state {
                ImageState::Ready => "an older READY upload (not the newest or second-newest)",
                _ => "a build that never became READY",
            };
            return Verdict::Delete(Reason::new(
                ReasonCode::Retention,
                format!(
                    "{what}, {} in state {}, longer than {}",
                    Human(age),
                    upload.state,
                    Human(IMAGE_CLEANUP)
                ),
            ));
        }
        Verdict::KeepUntil(after(IMAGE_CLEANUP))
    }
}

/// What becomes of an upload retention deletes.
enum Deletion {
    /// Deleted now.
    Now(ImageAction),
    /// Kept until its provider connects.
    Waits(Wait),
    /// Left to the executor or daemon working on it.
    Left,
}

/// What retention says of one upload.
enum Verdict {
    Delete(Reason),
    /// Its provider or image is gone from the config: deleted for `reason` once
    /// `removal-grace` has passed.
    Gone(Gone, Reason),
    Keep,
    KeepUntil(Timestamp),
}

fn describe((provider, image): Key<'_>) -> String {
    format!("image {image} on provider {provider}")
}

#[cfg(test)]
mod tests;
