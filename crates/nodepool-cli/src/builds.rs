//! `image-update`: a build request that nodepoold serves, followed until it ends.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use nodepool_db::ImageFilter;
use nodepool_executor::SystemClock;
use nodepool_model::{
    BuildRequest, BuildRequestState, Image, ImageId, ImageName, ProviderName, Subject,
};
use nodepool_provider::Clock;
use serde::Serialize;

use crate::context::{Context, who};
use crate::{Cli, EXIT_OK, Failure, Outcome};

/// How often the store is read while following a build.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// `--no-wait` and the end of a build in `--json` output (docs/cli.md).
#[derive(Serialize)]
struct JsonBuild {
    request: u64,
    state: String,
    failure: Option<String>,
    uploads: Vec<u64>,
}

impl JsonBuild {
    fn new(request: &BuildRequest, uploads: &[Image]) -> JsonBuild {
        JsonBuild {
            request: request.id.get(),
            state: request.state.to_string(),
            failure: request.failure.clone(),
            uploads: uploads.iter().map(|u| u.id.get()).collect(),
        }
    }
}

/// `nodepool image-update PROVIDER|all IMAGE`.
pub(crate) fn update(
    cli: &Cli,
    out: &mut dyn Write,
    provider: &str,
    image: &ImageName,
    no_wait: bool,
    daemon_timeout: Duration,
) -> Outcome {
    let ctx = Context::write(cli)?;
    let provider = target(&ctx, provider, image)?;
    let request = ctx
        .store
        .request_image_build(provider.as_ref(), image, &who(), ctx.now)?;
    let id = request.id;
    let on = provider.map_or_else(
        || "every provider that has it".to_owned(),
        |p| format!("provider {p}"),
    );
    if no_wait {
        if cli.json {
            crate::output::print_json(out, &JsonBuild::new(&request, &[]))?;
        } else {
            writeln!(
                out,
                "build request {id} recorded: image {image} on {on}; nodepoold builds it"
            )?;
        }
        return Ok(EXIT_OK);
    }
    if !cli.json {
        writeln!(out, "build request {id}: image {image} on {on}")?;
    }
    let started = ctx.now;
    // Each upload's events printed so far.
    let mut shown: BTreeMap<ImageId, u64> = BTreeMap::new();
    let clock = SystemClock;
    let spinner = Spinner::new(!cli.json, format!("image {image} on {on}"));
    loop {
        let request = ctx.store.build_request(id)?;
        let uploads = ctx.store.images(&ImageFilter {
            build_request: Some(id),
            ..ImageFilter::default()
        })?;
        if !cli.json {
            for upload in &uploads {
                let seen = shown.entry(upload.id).or_default();
                for event in ctx.store.events(Subject::Image(upload.id))? {
                    if event.seq <= *seen {
                        continue;
                    }
                    *seen = event.seq;
                    let elapsed = event.time.saturating_since(started).as_secs();
                    spinner.step(&event.what);
                    spinner.suspend(|| {
                        writeln!(
                            out,
                            "[{elapsed:>4}s] upload {} on {}: {}: {}",
                            upload.id, upload.provider, event.what, event.reason.text
                        )?;
                        out.flush()
                    })?;
                }
            }
            out.flush()?;
        }
        let now = clock.now();
        match request.state {
            BuildRequestState::Done | BuildRequestState::Failed => {
                spinner.finish();
                let done = request.state == BuildRequestState::Done;
                if cli.json {
                    crate::output::print_json(out, &JsonBuild::new(&request, &uploads))?;
                } else if done {
                    writeln!(out, "image {image} built on {on}")?;
                }
                if done {
                    return Ok(EXIT_OK);
                }
                return Err(Failure::Operational(anyhow::anyhow!(
                    "build request {id} failed: {}",
                    request.failure.as_deref().unwrap_or("no reason recorded")
                )));
            }
            BuildRequestState::Pending if now.saturating_since(started) >= daemon_timeout => {
                spinner.finish();
                return Err(Failure::Operational(anyhow::anyhow!(
                    "no nodepoold took build request {id} within {}s: is one running on this store? The request stays recorded and is built when one starts",
                    daemon_timeout.as_secs()
                )));
            }
            _ => {}
        }
        ctx.block_on(clock.sleep(FOLLOW_EVERY))?;
    }
}

/// The provider to build on (`None`: every provider with the image), checked against the
/// config.
fn target(
    ctx: &Context,
    provider: &str,
    image: &ImageName,
) -> Result<Option<ProviderName>, Failure> {
    let having: Vec<&ProviderName> = ctx
        .config
        .providers
        .iter()
        .filter(|p| p.images.iter().any(|i| &i.name == image))
        .map(|p| &p.name)
        .collect();
    if provider == "all" {
        if having.is_empty() {
            return Err(Failure::Usage(format!(
                "no provider in the config has an image {image}"
            )));
        }
        return Ok(None);
    }
    let name: ProviderName = provider
        .parse()
        .map_err(|e| Failure::Usage(format!("provider {provider:?}: {e}")))?;
    if !ctx.config.providers.iter().any(|p| p.name == name) {
        return Err(Failure::Usage(format!("no provider {name} in the config")));
    }
    if !having.contains(&&name) {
        return Err(Failure::Usage(format!(
            "provider {name} has no image {image} in the config"
        )));
    }
    Ok(Some(name))
}

/// A spinner with the elapsed time and the build's latest step, on stderr while it is a
/// terminal; nothing otherwise (scripts and logs get the event lines only).
struct Spinner(Option<indicatif::ProgressBar>);

impl Spinner {
    fn new(wanted: bool, what: String) -> Spinner {
        if !wanted || !std::io::stderr().is_terminal() {
            return Spinner(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {prefix}: {msg}")
        {
            bar.set_style(style);
        }
        bar.set_prefix(what);
        bar.set_message("waiting for nodepoold to take the request");
        bar.enable_steady_tick(Duration::from_millis(120));
        Spinner(Some(bar))
    }

    fn step(&self, what: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(what.to_owned());
        }
    }

    /// Runs `write` with the spinner off the screen.
    fn suspend<T>(&self, write: impl FnOnce() -> T) -> T {
        match &self.0 {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
