//! The executors: what carries out a launch, an image build and a deletion, step by step,
//! each cloud call through the provider's rate limiter.
//!
//! Rows are written before the cloud is asked for anything (the loop creates them), and each
//! step's outcome is recorded as it happens, so a daemon killed at any moment leaves rows the
//! next one can finish: nodes and uploads in `delete` are deleted again, building ones are
//! found by their tags.
//!
//! A failure never deletes inline: the executor records the failure (for the policies'
//! backoff), marks the row for deletion with the reason, and the next round's plan deletes it
//! with everything it had in the cloud.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodepool_config::{BaseImage, Config, Label, Provider as ProviderConfig, ProviderImage};
use nodepool_db::{Store, StoreError};
use nodepool_model::{
    Attempt, ExternalId, Failure, Human, Image, ImageState, InstallationId, Node, NodeState,
    ProviderName, Reason, ReasonCode, Subject, Timestamp,
};
use nodepool_provider::{
    Clock, ErrorKind, ImageStatus, NetworkRef, Owner, Provider, ProviderError, ServerSpec,
    ServerStatus, Tags,
};
use tracing::{debug, info, warn};

use crate::clouds::{Connection, Listings as Servers, Servers as Listing};
use crate::remote::{Remote, RemoteError, Target};
use crate::store;

/// How often a wait asks the cloud again (2014 `ITERATE_INTERVAL`).
const POLL: Duration = Duration::from_secs(2);
/// How long a template's snapshot task may go on after its image is active.
const TASK_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a deleted server may take to go (2014 `waitForServerDeletion`).
const DELETE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the first login to a template server may take (2014 `CONNECT_TIMEOUT`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the fallback logins get (2014: 10 s each).
const FALLBACK_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What every executor needs.
#[derive(Clone, Debug)]
pub struct Context {
    /// Where every step is recorded.
    pub store: Store,
    /// The only source of time.
    pub clock: Arc<dyn Clock>,
    /// This installation's id, which tags every cloud resource.
    pub installation: InstallationId,
    /// The config in force when the action was planned.
    pub config: Arc<Config>,
}

/// Why a step failed: a sentence for the event log.
type Failed = String;

fn cloud(error: ProviderError) -> Failed {
    error.to_string()
}

fn remote_failed(error: RemoteError) -> Failed {
    error.to_string()
}

impl Context {
    /// The clock's time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn tags(
        &self,
        provider: &ProviderConfig,
        owner: Owner,
    ) -> std::collections::BTreeMap<String, String> {
        Tags {
            installation: self.installation.clone(),
            provider: provider.name.clone(),
            owner,
        }
        .to_metadata()
    }

    /// Waits for a server to become ACTIVE, until `timeout` after `since`, watching the
    /// provider's listings (the loop lists each provider once per round) instead of asking
    /// the cloud about this one server.
    async fn until_active(
        &self,
        servers: &Servers,
        id: &ExternalId,
        since: Timestamp,
        timeout: Duration,
    ) -> Result<nodepool_provider::Server, Failed> {
        let deadline = since.saturating_add(timeout);
        let seen = self
            .watch_until(servers, deadline, |listing| {
                let server = listing.by_id.get(id)?;
                match server.status {
                    ServerStatus::Active => Some(Ok(server.clone())),
                    ServerStatus::Error => Some(Err(format!(
                        "server {id} went ERROR: {}",
                        server
                            .fault
                            .as_deref()
                            .unwrap_or("the cloud gave no reason")
                    ))),
                    _ => None,
                }
            })
            .await?;
        seen.unwrap_or_else(|| {
            Err(format!(
                "server {id} was not ACTIVE after {}",
                Human(timeout)
            ))
        })
    }

    /// Waits, watching the listings, until the cloud has no task under way on a server (or
    /// the server is gone), for at most [`TASK_TIMEOUT`].
    async fn until_idle(&self, servers: &Servers, id: &ExternalId) -> Result<(), Failed> {
        let asked = self.now();
        let deadline = asked.saturating_add(TASK_TIMEOUT);
        self.watch_until(servers, deadline, |listing| {
            (listing.at > asked && listing.by_id.get(id).is_none_or(|s| s.task.is_none()))
                .then_some(())
        })
        .await?
        .ok_or_else(|| {
            format!(
                "the cloud's task on it is still under way after {}",
                Human(TASK_TIMEOUT)
            )
        })
    }

    /// Watches the provider's listings (the newest, then each new one) until `seen` makes
    /// something of one; `None` once `deadline` has passed.
    async fn watch_until<T>(
        &self,
        servers: &Servers,
        deadline: Timestamp,
        mut seen: impl FnMut(&Listing) -> Option<T>,
    ) -> Result<Option<T>, Failed> {
        let mut watching = servers.watch();
        loop {
            let listing = watching.borrow_and_update().clone();
            if let Some(found) = seen(&listing) {
                return Ok(Some(found));
            }
            if self.now() >= deadline {
                return Ok(None);
            }
            tokio::select! {
                changed = watching.changed() => changed.map_err(|_| "the provider is no longer connected".to_owned())?,
                () = self.clock.sleep_until(deadline) => {}
            }
        }
    }

    /// The address to reach a server at: its public one, else a floating IP from `pool`, else
    /// its private one (a private network the daemon shares).
    async fn address(
        &self,
        connection: &Connection,
        provider: &ProviderConfig,
        server: &nodepool_provider::Server,
        owner: Owner,
    ) -> Result<(Option<IpAddr>, Option<IpAddr>), Failed> {
        let private = server.private_ip();
        if let Some(public) = server.public_ip() {
            return Ok((Some(public), private));
        }
        if let Some(pool) = &provider.pool {
            let ip = connection
                .create_floating_ip(&server.id, pool, &self.tags(provider, owner))
                .await
                .map_err(cloud)?;
            return Ok((Some(ip.ip), private));
        }
        if private.is_none() {
            return Err(format!("server {} has no address", server.id));
        }
        Ok((None, private))
    }

    /// Logs in as soon as the server answers, until `timeout` after `since`; returns the
    /// host key the server presented.
    pub async fn reach(
        &self,
        remote: &dyn Remote,
        target: &Target,
        since: Timestamp,
        timeout: Duration,
    ) -> Result<Option<String>, RemoteError> {
        let deadline = since.saturating_add(timeout);
        loop {
            match remote.run(target, "echo access okay").await {
                Ok(output) if output.status == 0 => return Ok(output.host_key),
                Ok(output) => {
                    return Err(RemoteError::Unreachable {
                        target: target.to_string(),
                        message: format!("the login shell failed: {}", output.output.trim()),
                    });
                }
                Err(error) if self.now() >= deadline => return Err(error),
                Err(_) => self.clock.sleep(POLL).await,
            }
        }
    }

    fn key(&self, image: &ProviderImage) -> PathBuf {
        // The config resolved it against the config file's folder already.
        image.private_key.clone()
    }

    /// Marks `node` for deletion after a failed launch, and remembers the failure.
    async fn launch_failed(&self, node: &Node, why: Failed) {
        warn!(node = %node.id, provider = %node.provider, label = %node.label, "launch failed: {why}");
        let attempt = Attempt::Launch(node.label.clone());
        self.failed(Subject::Node(node.id), &node.provider, attempt, why)
            .await;
    }

    /// Marks `upload` for deletion after a failed build, and remembers the failure.
    async fn build_failed(&self, upload: &Image, why: Failed) {
        warn!(image = %upload.id, provider = %upload.provider, name = %upload.name, "build failed: {why}");
        let attempt = Attempt::Build(upload.name.clone());
        self.failed(Subject::Image(upload.id), &upload.provider, attempt, why)
            .await;
    }

    /// Records a failure (the policies back off on it) and marks its subject for deletion:
    /// the next round deletes it with everything it had in the cloud.
    async fn failed(
        &self,
        subject: Subject,
        provider: &ProviderName,
        attempt: Attempt,
        why: Failed,
    ) {
        let now = self.now();
        let code = match attempt {
            Attempt::Launch(_) => ReasonCode::LaunchFailed,
            Attempt::Build(_) => ReasonCode::BuildFailed,
        };
        let reason = Reason::new(code, why.clone());
        let failure = Failure {
            provider: provider.clone(),
            attempt,
            at: now,
            reason: why,
        };
        let _ = store::call(&self.store, move |s| {
            s.record_failure(&failure)?;
            match subject {
                Subject::Node(id) => s
                    .set_node_state(id, NodeState::Delete, now, &reason)
                    .map(drop),
                Subject::Image(id) => s
                    .set_image_state(id, ImageState::Delete, now, &reason)
                    .map(drop),
                Subject::Request(_) | Subject::Build(_) => Ok(()),
            }
        })
        .await
        .map_err(|e| warn!(%subject, "cannot record the failure: {e}"));
    }
}

/// Launches `node` (its row already written): server, address, SSH, ready script, READY.
pub async fn launch(
    ctx: Context,
    connection: Connection,
    servers: Servers,
    remote: Arc<dyn Remote>,
    node: Node,
    upload: Image,
    flavor: String,
) {
    let started = ctx.now();
    let result = try_launch(
        &ctx,
        &connection,
        &servers,
        remote.as_ref(),
        &node,
        &upload,
        flavor,
    )
    .await;
    metrics::histogram!(
        "nodepool_launch_seconds",
        "provider" => node.provider.to_string(),
        "label" => node.label.to_string(),
        "outcome" => if result.is_ok() { "ready" } else { "failed" },
    )
    .record(ctx.now().saturating_since(started).as_secs_f64());
    if let Err(why) = result {
        ctx.launch_failed(&node, why).await;
    }
}

async fn try_launch(
    ctx: &Context,
    connection: &Connection,
    servers: &Servers,
    remote: &dyn Remote,
    node: &Node,
    upload: &Image,
    flavor: String,
) -> Result<(), Failed> {
    let (provider, label, image) = find(&ctx.config, node)?;
    let image_id = upload
        .external_id
        .clone()
        .ok_or_else(|| format!("image upload {} has no cloud image", upload.id))?;
    let name = node
        .hostname
        .clone()
        .unwrap_or_else(|| format!("{}-{}-{}", node.label, node.provider, node.id));
    let mut spec = ServerSpec::new(name, flavor, image_id);
    spec.metadata = image.meta.clone();
    spec.metadata
        .extend(ctx.tags(provider, Owner::Node(node.id)));
    spec.key_name = provider.keypair.clone();
    spec.availability_zone = node.az.clone();
    spec.networks = networks(provider);
    let started = ctx.now();
    let server = connection.create_server(&spec).await.map_err(cloud)?;
    let id = node.id;
    let server_id = server.id.clone();
    store::call(&ctx.store, move |s| {
        s.attach_node_server(id, &server_id, started)
    })
    .await
    .map_err(|e| e.to_string())?;
    info!(node = %node.id, provider = %node.provider, label = %node.label, "server {} created", server.id);
    let server = ctx
        .until_active(servers, &server.id, started, provider.launch_timeout)
        .await?;
    debug!(node = %node.id, "server {} ACTIVE", server.id);
    let (public, private) = ctx
        .address(connection, provider, &server, Owner::Node(node.id))
        .await?;
    let now = ctx.now();
    store::call(&ctx.store, move |s| {
        s.set_node_addresses(id, public, private, now)
    })
    .await
    .map_err(|e| e.to_string())?;
    let host = public.or(private).ok_or("no address to log in at")?;
    let target = Target {
        host,
        port: image.connection_port,
        user: image.username.clone(),
        key: ctx.key(image),
    };
    let host_key = ctx
        .reach(remote, &target, ctx.now(), provider.boot_timeout)
        .await
        .map_err(|e| {
            format!(
                "no SSH within boot-timeout ({}): {e}",
                Human(provider.boot_timeout)
            )
        })?;
    debug!(node = %node.id, "reached as {target}");
    if let Some(key) = host_key {
        let now = ctx.now();
        store::call(&ctx.store, move |s| s.set_node_host_keys(id, &[key], now))
            .await
            .map_err(|e| e.to_string())?;
    }
    if let Some(script) = &label.ready_script {
        let command = format!(
            "cd {} && ./{script} {}",
            nodepool_config::defaults::SCRIPTS_ON_NODE,
            node.hostname.as_deref().unwrap_or_default()
        );
        let output = remote.run(&target, &command).await.map_err(remote_failed)?;
        if output.status != 0 {
            return Err(format!(
                "ready-script {script} exited with {}: {}",
                output.status,
                last_lines(&output.output)
            ));
        }
    }
    let now = ctx.now();
    let took = now.saturating_since(node.state_time);
    let reason = Reason::new(
        ReasonCode::Launched,
        format!(
            "reachable over SSH as {}; launched in {}",
            target,
            Human(took)
        ),
    );
    store::call(&ctx.store, move |s| {
        s.set_node_state(id, NodeState::Ready, now, &reason)
    })
    .await
    .map_err(|e| e.to_string())?;
    info!(node = %node.id, provider = %node.provider, label = %node.label, "ready in {}", Human(took));
    Ok(())
}

/// The provider, label and provider image of a node, from the running config.
fn find<'c>(
    config: &'c Config,
    node: &Node,
) -> Result<(&'c ProviderConfig, &'c Label, &'c ProviderImage), Failed> {
    let provider = config
        .providers
        .iter()
        .find(|p| p.name == node.provider)
        .ok_or_else(|| format!("provider {} is no longer in the config", node.provider))?;
    let label = config
        .labels
        .iter()
        .find(|l| l.name == node.label)
        .ok_or_else(|| format!("label {} is no longer in the config", node.label))?;
    let image = provider
        .images
        .iter()
        .find(|i| i.name == label.image)
        .ok_or_else(|| format!("provider {} has no image {}", provider.name, label.image))?;
    Ok((provider, label, image))
}

fn networks(provider: &ProviderConfig) -> Vec<NetworkRef> {
    provider
        .networks
        .iter()
        .map(|n| match n {
            nodepool_config::Network::Id(id) => NetworkRef::Id(id.clone()),
            nodepool_config::Network::Name(name) => NetworkRef::Name(name.clone()),
        })
        .collect()
}

/// How much of a setup script's output the image's event log keeps (its end).
const SETUP_OUTPUT_KEPT: usize = 16 * 1024;

/// The last `limit` bytes of `output` or less, cut at a line start, marked when cut.
fn tail(output: &str, limit: usize) -> String {
    if output.len() <= limit {
        return output.to_owned();
    }
    let mut start = output.len() - limit;
    while !output.is_char_boundary(start) {
        start += 1;
    }
    let cut = &output[start..];
    let cut = cut.split_once('\n').map_or(cut, |(_, rest)| rest);
    format!(
        "[{} bytes before this left out]\n{cut}",
        output.len() - cut.len()
    )
}

/// The end of a long output, for an event log line.
fn last_lines(output: &str) -> String {
    let lines: Vec<&str> = output.trim_end().lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Builds `upload` (its row already written): boot the base image, set it up over SSH,
/// snapshot it, wait for the image, READY, delete the template.
pub async fn build(
    ctx: Context,
    connection: Connection,
    servers: Servers,
    remote: Arc<dyn Remote>,
    upload: Image,
    flavor: String,
) {
    let mut template = None;
    let started = ctx.now();
    let result = try_build(
        &ctx,
        &connection,
        &servers,
        remote.as_ref(),
        &upload,
        flavor,
        &mut template,
    )
    .await;
    metrics::histogram!(
        "nodepool_build_seconds",
        "provider" => upload.provider.to_string(),
        "image" => upload.name.to_string(),
        "outcome" => if result.is_ok() { "ready" } else { "failed" },
    )
    .record(ctx.now().saturating_since(started).as_secs_f64());
    if let Err(why) = result {
        ctx.build_failed(&upload, why).await;
        return;
    }
    // The image is READY; the template goes once the cloud has ended its snapshot task
    // (deleted before, Nova drops the image it just made). Best effort: a template left
    // here goes with the upload's own deletion.
    let Some(server) = template else { return };
    if let Err(why) = ctx.until_idle(&servers, &server).await {
        warn!(image = %upload.id, "template server {server} kept for now: {why}");
        return;
    }
    if let Err(why) = delete_server(&ctx, &connection, &servers, &server).await {
        warn!(image = %upload.id, "template server {server} not deleted: {why}");
    }
}

async fn try_build(
    ctx: &Context,
    connection: &Connection,
    servers: &Servers,
    remote: &dyn Remote,
    upload: &Image,
    flavor: String,
    template: &mut Option<ExternalId>,
) -> Result<(), Failed> {
    let provider = ctx
        .config
        .providers
        .iter()
        .find(|p| p.name == upload.provider)
        .ok_or_else(|| format!("provider {} is no longer in the config", upload.provider))?;
    let image = provider
        .images
        .iter()
        .find(|i| i.name == upload.name)
        .ok_or_else(|| {
            format!(
                "provider {} no longer has an image {}",
                provider.name, upload.name
            )
        })?;
    let Some(base) = image.source.base_image() else {
        return Err(format!(
            "image {} of provider {} is made by diskimage-builder, which this version does not build",
            upload.name, provider.name
        ));
    };
    let base = base_image(connection, base).await?;
    let hostname = provider
        .template_hostname
        .replace("{image.name}", upload.name.as_str())
        .replace("{timestamp}", &upload.version.unix_seconds().to_string());
    let owner = Owner::Image(upload.id);
    let mut spec = ServerSpec::new(hostname.clone(), flavor, base);
    spec.metadata = image.meta.clone();
    spec.metadata.extend(ctx.tags(provider, owner));
    spec.key_name = provider.keypair.clone();
    spec.networks = networks(provider);
    let started = ctx.now();
    let server = connection.create_server(&spec).await.map_err(cloud)?;
    *template = Some(server.id.clone());
    let id = upload.id;
    let (server_id, host_name) = (server.id.clone(), hostname.clone());
    store::call(&ctx.store, move |s| {
        s.attach_image_template(id, &server_id, &host_name, started)
    })
    .await
    .map_err(|e| e.to_string())?;
    info!(image = %upload.id, provider = %upload.provider, name = %upload.name, "template server {} created", server.id);
    let server = ctx
        .until_active(servers, &server.id, started, provider.launch_timeout)
        .await?;
    let (public, private) = ctx.address(connection, provider, &server, owner).await?;
    let host = public.or(private).ok_or("no address to log in at")?;
    let target = login(ctx, remote, host, image).await?;
    setup(ctx, remote, &target, image, upload, &hostname).await?;
    info!(image = %upload.id, provider = %upload.provider, name = %upload.name, "set up; snapshotting server {}", server.id);
    let snapshot = snapshot(
        ctx,
        connection,
        upload,
        &server.id,
        &hostname,
        &ctx.tags(provider, owner),
    )
    .await?;
    let now = ctx.now();
    let snapshot_id = snapshot.clone();
    store::call(&ctx.store, move |s| {
        s.attach_image_snapshot(id, &snapshot_id, now)
    })
    .await
    .map_err(|e| e.to_string())?;
    let now = ctx.now();
    let took = now.saturating_since(upload.version);
    let reason = Reason::new(
        ReasonCode::Built,
        format!("snapshot {snapshot} active; built in {}", Human(took)),
    );
    store::call(&ctx.store, move |s| {
        s.set_image_state(id, ImageState::Ready, now, &reason)
    })
    .await
    .map_err(|e| e.to_string())?;
    info!(image = %upload.id, provider = %upload.provider, name = %upload.name, "ready in {}", Human(took));
    Ok(())
}

/// How many times a snapshot the cloud dropped is taken again.
const SNAPSHOT_ATTEMPTS: u32 = 5;

/// Snapshots `server` and waits until the image is active. A cloud may drop a snapshot it
/// could not take (Nova does when a server ACTIVE a moment ago has not reported its power
/// state yet) or refuse one while the server is busy; those are taken again.
async fn snapshot(
    ctx: &Context,
    connection: &Connection,
    upload: &Image,
    server: &ExternalId,
    name: &str,
    tags: &std::collections::BTreeMap<String, String>,
) -> Result<ExternalId, Failed> {
    let deadline = ctx.now().saturating_add(nodepool_image::IMAGE_TIMEOUT);
    let mut last = String::new();
    for _ in 0..SNAPSHOT_ATTEMPTS {
        let snapshot = match connection.create_image(server, name, tags).await {
            Ok(id) => {
                info!(image = %upload.id, provider = %upload.provider, name = %upload.name, "snapshot {id} requested");
                id
            }
            Err(error) if error.kind == ErrorKind::BadRequest => {
                last = cloud(error);
                ctx.clock.sleep(POLL).await;
                continue;
            }
            Err(error) => return Err(cloud(error)),
        };
        loop {
            match connection.get_image(&snapshot).await {
                Ok(image) if image.status == ImageStatus::Active => return Ok(snapshot),
                Ok(image) if image.status == ImageStatus::Failed => {
                    return Err(format!("snapshot {snapshot} failed"));
                }
                Ok(image) if image.status == ImageStatus::Deleted => {
                    last = format!("the cloud dropped snapshot {snapshot}");
                    break;
                }
                Ok(_) => {}
                Err(error) if error.kind == ErrorKind::NotFound => {
                    last = format!("the cloud dropped snapshot {snapshot}");
                    break;
                }
                Err(error) if error.kind.is_retryable() => {}
                Err(error) => return Err(cloud(error)),
            }
            if ctx.now() >= deadline {
                return Err(format!(
                    "snapshot {snapshot} was not active after {}",
                    Human(nodepool_image::IMAGE_TIMEOUT)
                ));
            }
            ctx.clock.sleep(POLL).await;
        }
        ctx.clock.sleep(POLL).await;
    }
    Err(format!(
        "no snapshot after {SNAPSHOT_ATTEMPTS} attempts: {last}"
    ))
}

/// The base image's id: a UUID is used as it is, a name is looked up among active images.
async fn base_image(connection: &Connection, base: &BaseImage) -> Result<ExternalId, Failed> {
    match base {
        BaseImage::Id(id) => Ok(ExternalId::new(id.clone())),
        BaseImage::Name(name) => connection
            .list_images()
            .await
            .map_err(cloud)?
            .into_iter()
            .find(|i| &i.name == name && i.status == ImageStatus::Active)
            .map(|i| i.id)
            .ok_or_else(|| format!("no active base image named {name:?}")),
    }
}

/// Logs in to a template server: as root (as long as a first boot may take), then as the
/// image's user.
async fn login(
    ctx: &Context,
    remote: &dyn Remote,
    host: IpAddr,
    image: &ProviderImage,
) -> Result<Target, Failed> {
    let mut last = None;
    for (user, timeout) in [
        ("root", CONNECT_TIMEOUT),
        (image.username.as_str(), FALLBACK_CONNECT_TIMEOUT),
    ] {
        let target = Target {
            host,
            port: image.connection_port,
            user: user.to_owned(),
            key: ctx.key(image),
        };
        match ctx.reach(remote, &target, ctx.now(), timeout).await {
            Ok(_) => return Ok(target),
            Err(error) => last = Some(error),
        }
    }
    Err(last.map_or_else(|| "no login".to_owned(), remote_failed))
}

/// Copies `script-dir` to the template and runs `setup` there.
async fn setup(
    ctx: &Context,
    remote: &dyn Remote,
    target: &Target,
    image: &ProviderImage,
    upload: &Image,
    hostname: &str,
) -> Result<(), Failed> {
    let scripts = nodepool_config::defaults::SCRIPTS_ON_NODE;
    // sudo unless already root (a root login may have no sudo at all).
    let prepare = format!(
        "S=; [ \"$(id -u)\" -eq 0 ] || S=sudo; $S mkdir -p {scripts} /etc/nodepool && $S chmod 0777 {scripts} /etc/nodepool"
    );
    run_checked(remote, target, &prepare).await?;
    if let Some(dir) = &ctx.config.script_dir {
        for (name, contents) in read_scripts(dir)? {
            remote
                .upload(target, &format!("{scripts}/{name}"), &contents, 0o755)
                .await
                .map_err(remote_failed)?;
        }
    }
    if let Some(script) = &image.setup {
        let command = format!(
            "export PATH=/usr/local/sbin:/sbin:/usr/sbin:/usr/local/bin:/bin:/usr/bin; cd {scripts} && ./{script} {hostname}"
        );
        let output = remote.run(target, &command).await.map_err(remote_failed)?;
        for line in output.output.lines() {
            info!(image = %upload.id, name = %upload.name, "setup: {line}");
        }
        let (id, now) = (upload.id, ctx.now());
        let what = format!("setup {script} exited with {}", output.status);
        let reason = Reason::new(
            ReasonCode::SetupOutput,
            tail(&output.output, SETUP_OUTPUT_KEPT),
        );
        if let Err(e) = store::call(&ctx.store, move |s| {
            s.note(Subject::Image(id), &what, &reason, now)
        })
        .await
        {
            warn!(image = %upload.id, "cannot keep the setup output in the event log: {e}");
        }
        if output.status != 0 {
            return Err(format!(
                "setup script {script} exited with {}: {}",
                output.status,
                last_lines(&output.output)
            ));
        }
    }
    Ok(())
}

async fn run_checked(remote: &dyn Remote, target: &Target, command: &str) -> Result<(), Failed> {
    let output = remote.run(target, command).await.map_err(remote_failed)?;
    if output.status != 0 {
        return Err(format!(
            "{command:?} exited with {}: {}",
            output.status,
            last_lines(&output.output)
        ));
    }
    Ok(())
}

/// Every regular file of `dir`, by name.
fn read_scripts(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, Failed> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read script-dir {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() {
            let contents =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            files.push((entry.file_name().to_string_lossy().into_owned(), contents));
        }
    }
    files.sort();
    Ok(files)
}

/// Deletes a server and waits until the cloud says it is gone (a listing asked for after
/// the deletion no longer shows it); one already gone is fine.
async fn delete_server(
    ctx: &Context,
    connection: &Connection,
    servers: &Servers,
    id: &ExternalId,
) -> Result<(), Failed> {
    // Floating IPs mapped onto it go first, as 2014's cleanupServer did.
    if let Ok(ips) = connection.list_floating_ips().await {
        for ip in ips.into_iter().filter(|ip| ip.server.as_ref() == Some(id)) {
            match connection.delete_floating_ip(&ip.id).await {
                Ok(()) => {}
                Err(error) if error.kind == ErrorKind::NotFound => {}
                Err(error) => return Err(cloud(error)),
            }
        }
    }
    let asked = ctx.now();
    match connection.delete_server(id).await {
        Ok(()) => {}
        Err(error) if error.kind == ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(cloud(error)),
    }
    let deadline = asked.saturating_add(DELETE_TIMEOUT);
    let mut asked_again = false;
    loop {
        // Gone, or ERROR (an ERROR server is asked once more; some clouds need it).
        let seen = ctx
            .watch_until(servers, deadline, |listing| {
                if listing.at <= asked {
                    return None;
                }
                match listing.by_id.get(id) {
                    None => Some(true),
                    Some(server) if server.status == ServerStatus::Error && !asked_again => {
                        Some(false)
                    }
                    Some(_) => None,
                }
            })
            .await?;
        match seen {
            Some(true) => return Ok(()),
            Some(false) => {
                asked_again = true;
                let _ = connection.delete_server(id).await;
            }
            None => {
                return Err(format!(
                    "server {id} still exists {} after its deletion",
                    Human(DELETE_TIMEOUT)
                ));
            }
        }
    }
}

/// Deletes a node: its server (and floating IPs), then its row. The row goes only once the
/// cloud says the server is gone.
pub async fn delete_node(
    ctx: Context,
    connection: Option<(Connection, Servers)>,
    node: Node,
    server: Option<ExternalId>,
    reason: Reason,
) -> Result<(), Failed> {
    let (id, provider) = (node.id, node.provider.clone());
    let deleted = try_delete_node(&ctx, connection, &node, server, &reason).await;
    match &deleted {
        Ok(()) => {
            info!(node = %id, provider = %provider, label = %node.label, "deleted: {}", reason.text);
        }
        Err(why) => warn!(node = %id, provider = %provider, "{why}"),
    }
    deleted
}

async fn try_delete_node(
    ctx: &Context,
    connection: Option<(Connection, Servers)>,
    node: &Node,
    server: Option<ExternalId>,
    reason: &Reason,
) -> Result<(), Failed> {
    let id = node.id;
    let now = ctx.now();
    if node.state != NodeState::Delete {
        let why = reason.clone();
        store::call(&ctx.store, move |s| {
            s.set_node_state(id, NodeState::Delete, now, &why)
        })
        .await
        .map_err(|e| format!("cannot mark for deletion: {e}"))?;
    }
    if let Some(server) = &server {
        let Some((connection, servers)) = connection else {
            return Err(format!(
                "server {server} kept: the provider is not connected"
            ));
        };
        delete_server(ctx, &connection, &servers, server)
            .await
            .map_err(|why| format!("server {server} not deleted yet: {why}"))?;
    }
    let now = ctx.now();
    let gone = Reason::new(
        ReasonCode::Deleted,
        match &server {
            Some(server) => format!("server {server} is gone ({})", reason.text),
            None => format!("it had no server ({})", reason.text),
        },
    );
    match store::call(&ctx.store, move |s| s.remove_node(id, now, &gone)).await {
        // Another process (a daemon, an admin's `delete --now`) finished it first.
        Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(format!("cannot remove the row: {e}")),
    }
}

/// Deletes a leaked server.
pub async fn delete_leak(
    ctx: Context,
    connection: Connection,
    servers: Servers,
    server: ExternalId,
    reason: Reason,
) {
    match delete_server(&ctx, &connection, &servers, &server).await {
        Ok(()) => {
            info!(provider = %connection.name(), "deleted leaked server {server}: {}", reason.text)
        }
        Err(why) => {
            warn!(provider = %connection.name(), "leaked server {server} not deleted yet: {why}")
        }
    }
}

/// Deletes an upload: its template server, its cloud image, then its row.
pub async fn delete_upload(
    ctx: Context,
    connection: Option<(Connection, Servers)>,
    upload: Image,
    reason: Reason,
) -> Result<(), Failed> {
    let deleted = try_delete_upload(&ctx, connection, &upload, &reason).await;
    match &deleted {
        Ok(()) => {
            info!(image = %upload.id, provider = %upload.provider, name = %upload.name, "deleted: {}", reason.text);
        }
        Err(why) => warn!(image = %upload.id, provider = %upload.provider, "{why}"),
    }
    deleted
}

async fn try_delete_upload(
    ctx: &Context,
    connection: Option<(Connection, Servers)>,
    upload: &Image,
    reason: &Reason,
) -> Result<(), Failed> {
    let id = upload.id;
    let now = ctx.now();
    if upload.state != ImageState::Delete {
        let why = reason.clone();
        store::call(&ctx.store, move |s| {
            s.set_image_state(id, ImageState::Delete, now, &why)
        })
        .await
        .map_err(|e| format!("cannot mark for deletion: {e}"))?;
    }
    if upload.server_external_id.is_some() || upload.external_id.is_some() {
        let Some((connection, servers)) = connection else {
            return Err("kept: the provider is not connected".to_owned());
        };
        if let Some(server) = &upload.server_external_id {
            delete_server(ctx, &connection, &servers, server)
                .await
                .map_err(|why| format!("template server {server} not deleted yet: {why}"))?;
        }
        if let Some(image) = &upload.external_id {
            match connection.delete_image(image).await {
                Ok(()) => {}
                Err(error) if error.kind == ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(format!("cloud image {image} not deleted yet: {error}"));
                }
            }
        }
    }
    let now = ctx.now();
    let gone = Reason::new(
        ReasonCode::Deleted,
        format!("gone from the cloud ({})", reason.text),
    );
    match store::call(&ctx.store, move |s| s.remove_image(id, now, &gone)).await {
        // Another process finished it first.
        Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(format!("cannot remove the row: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn a_long_output_keeps_its_last_whole_lines() {
        assert_eq!(tail("short\n", 100), "short\n");
        let output = "first line\nsecond line\nthird é line\n";
        // The cut falls inside "second line": that line goes whole.
        assert_eq!(
            tail(output, 20),
            format!("[{} bytes before this left out]\nthird é line\n", 23)
        );
        // A cut inside a multi-byte character moves past it.
        assert!(tail("ééééé\nok\n", 6).ends_with("ok\n"));
    }
}
