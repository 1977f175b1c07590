//! The build of a snapshot image: a template server booted from the base image, set up
//! over SSH, snapshotted; READY once the cloud's image is active.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nodepool_config::{BaseImage, ProviderImage};
use nodepool_model::{
    ExternalId, FailureKind, Human, Image, ImageState, Reason, ReasonCode, Subject,
};
use nodepool_provider::{ErrorKind, ImageStatus, Owner, Provider, ServerSpec, TEMPLATE_KEY};
use tracing::{info, warn};

use super::context::{Context, Failed, POLL, networks};
use super::delete::delete_server;
use super::output::{SETUP_OUTPUT_KEPT, last_lines, tail};
use crate::clouds::Connection;
use crate::listing::ServerFeed;
use crate::remote::{Remote, Target};

/// How long the first login to a template server may take (2014 `CONNECT_TIMEOUT`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the fallback logins get (2014: 10 s each).
const FALLBACK_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds `upload` (its row already written): boot the base image, set it up over SSH,
/// snapshot it, wait for the image, READY, delete the template.
pub async fn build(
    ctx: Context,
    connection: Connection,
    servers: ServerFeed,
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
    servers: &ServerFeed,
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
        .ok_or_else(|| {
            Failed::new(
                FailureKind::Config,
                format!("provider {} is no longer in the config", upload.provider),
            )
        })?;
    let image = provider
        .images
        .iter()
        .find(|i| i.name == upload.name)
        .ok_or_else(|| {
            Failed::new(
                FailureKind::Config,
                format!(
                    "provider {} no longer has an image {}",
                    provider.name, upload.name
                ),
            )
        })?;
    let Some(base) = image.source.base_image() else {
        return Err(Failed::new(
            FailureKind::Config,
            format!(
                "image {} of provider {} is made by diskimage-builder, which this version does not build",
                upload.name, provider.name
            ),
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
    let server = connection
        .create_server(&spec)
        .await
        .map_err(Failed::from)?;
    *template = Some(server.id.clone());
    let id = upload.id;
    let (server_id, host_name) = (server.id.clone(), hostname.clone());
    ctx.record(move |s| s.attach_image_template(id, &server_id, &host_name, started))
        .await
        .map_err(Failed::from)?;
    info!(image = %upload.id, provider = %upload.provider, name = %upload.name, "template server {} created", server.id);
    let server = ctx
        .until_active(servers, &server.id, started, provider.launch_timeout)
        .await?;
    let (public, private) = ctx.address(connection, provider, &server, owner).await?;
    let host = public
        .or(private)
        .ok_or_else(|| Failed::new(FailureKind::CloudRefused, "no address to log in at"))?;
    let target = login(ctx, remote, host, image).await?;
    setup(ctx, remote, &target, image, upload, &hostname).await?;
    info!(image = %upload.id, provider = %upload.provider, name = %upload.name, "set up; snapshotting server {}", server.id);
    // The template's id among the tags: a snapshot is ours when the cloud says it was
    // made from the server its tags name (see nodepool_node::cleanup).
    let mut tags = ctx.tags(provider, owner);
    tags.insert(TEMPLATE_KEY.to_owned(), server.id.to_string());
    let snapshot = snapshot(ctx, connection, upload, &server.id, &hostname, &tags).await?;
    let now = ctx.now();
    let snapshot_id = snapshot.clone();
    ctx.record(move |s| s.attach_image_snapshot(id, &snapshot_id, now))
        .await
        .map_err(Failed::from)?;
    let now = ctx.now();
    let took = now.saturating_since(upload.version);
    let reason = Reason::new(
        ReasonCode::Built,
        format!("snapshot {snapshot} active; built in {}", Human(took)),
    );
    ctx.record(move |s| s.set_image_state(id, ImageState::Ready, now, &reason))
        .await
        .map_err(Failed::from)?;
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
                last = error.to_string();
                ctx.clock.sleep(POLL).await;
                continue;
            }
            Err(error) => return Err(Failed::from(error)),
        };
        loop {
            match connection.get_image(&snapshot).await {
                Ok(image) if image.status == ImageStatus::Active => return Ok(snapshot),
                Ok(image) if image.status == ImageStatus::Failed => {
                    return Err(Failed::new(
                        FailureKind::CloudRefused,
                        format!("snapshot {snapshot} failed"),
                    ));
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
                Err(error) => return Err(Failed::from(error)),
            }
            if ctx.now() >= deadline {
                return Err(Failed::new(
                    FailureKind::Timeout,
                    format!(
                        "snapshot {snapshot} was not active after {}",
                        Human(nodepool_image::IMAGE_TIMEOUT)
                    ),
                ));
            }
            ctx.clock.sleep(POLL).await;
        }
        ctx.clock.sleep(POLL).await;
    }
    Err(Failed::new(
        FailureKind::CloudRefused,
        format!("no snapshot after {SNAPSHOT_ATTEMPTS} attempts: {last}"),
    ))
}

/// The base image's id: a UUID is used as it is, a name is looked up among active images.
async fn base_image(connection: &Connection, base: &BaseImage) -> Result<ExternalId, Failed> {
    match base {
        BaseImage::Id(id) => Ok(ExternalId::new(id.clone())),
        BaseImage::Name(name) => connection
            .list_images()
            .await
            .map_err(Failed::from)?
            .into_iter()
            .find(|i| &i.name == name && i.status == ImageStatus::Active)
            .map(|i| i.id)
            .ok_or_else(|| {
                Failed::new(
                    FailureKind::CloudRefused,
                    format!("no active base image named {name:?}"),
                )
            }),
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
        let mut target = Target {
            host,
            port: image.connection_port,
            user: user.to_owned(),
            key: ctx.key(image),
            host_key: None,
        };
        match ctx.reach(remote, &target, ctx.now(), timeout).await {
            // The key seen first is the only one the rest of the build accepts.
            Ok(host_key) => {
                target.host_key = host_key;
                return Ok(target);
            }
            Err(error) => last = Some(error),
        }
    }
    Err(last.map_or_else(
        || Failed::new(FailureKind::Ssh, "no login"),
        |error| Failed::login(error, ""),
    ))
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
    // Owned by the login user (who copies the scripts in), readable by all, written by
    // nobody else.
    let prepare = format!(
        "S=; [ \"$(id -u)\" -eq 0 ] || S=sudo; $S mkdir -p {scripts} /etc/nodepool && $S chown \"$(id -un)\" {scripts} /etc/nodepool && $S chmod 0755 {scripts} /etc/nodepool"
    );
    run_checked(remote, target, &prepare).await?;
    if let Some(dir) = &ctx.config.script_dir {
        for (name, contents) in read_scripts(dir)? {
            remote
                .upload(target, &format!("{scripts}/{name}"), &contents, 0o755)
                .await
                .map_err(Failed::from)?;
        }
    }
    if let Some(script) = &image.setup {
        let command = format!(
            "export PATH=/usr/local/sbin:/sbin:/usr/sbin:/usr/local/bin:/bin:/usr/bin; cd {scripts} && ./{} {}",
            crate::ssh::quote(script),
            crate::ssh::quote(hostname)
        );
        let output = remote.run(target, &command).await.map_err(Failed::from)?;
        for line in output.output.lines() {
            info!(image = %upload.id, name = %upload.name, "setup: {line}");
        }
        let (id, now) = (upload.id, ctx.now());
        let what = format!("setup {script} exited with {}", output.status);
        let reason = Reason::new(
            ReasonCode::SetupOutput,
            tail(&output.output, SETUP_OUTPUT_KEPT),
        );
        if let Err(e) = ctx
            .record(move |s| s.note(Subject::Image(id), &what, &reason, now))
            .await
        {
            warn!(image = %upload.id, "cannot keep the setup output in the event log: {e}");
        }
        if output.status != 0 {
            return Err(Failed::new(
                FailureKind::Script,
                format!(
                    "setup script {script} exited with {}: {}",
                    output.status,
                    last_lines(&output.output)
                ),
            ));
        }
    }
    Ok(())
}

async fn run_checked(remote: &dyn Remote, target: &Target, command: &str) -> Result<(), Failed> {
    let output = remote.run(target, command).await.map_err(Failed::from)?;
    if output.status != 0 {
        return Err(Failed::new(
            FailureKind::Script,
            format!(
                "{command:?} exited with {}: {}",
                output.status,
                last_lines(&output.output)
            ),
        ));
    }
    Ok(())
}

/// Every regular file of `dir`, by name.
fn read_scripts(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, Failed> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Failed::new(
            FailureKind::Config,
            format!("cannot read script-dir {}: {e}", dir.display()),
        )
    })?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() {
            let contents = std::fs::read(&path).map_err(|e| {
                Failed::new(
                    FailureKind::Config,
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            files.push((entry.file_name().to_string_lossy().into_owned(), contents));
        }
    }
    files.sort();
    Ok(files)
}
