//! `image-list` and `show image`.

use std::io::Write;

use nodepool_db::ImageFilter;

use nodepool_model::{Image, ImageId, ImageState, Reason, ReasonCode, Subject, Timestamp};
use serde::Serialize;

use crate::context::{Context, user};
use crate::output::{age, age_hours, cell, print_json, print_table, table, time};
use crate::{Cli, EXIT_OK, Failure, Outcome, events};

/// The 2014 `image-list` columns.
const COLUMNS: [&str; 9] = [
    "ID",
    "Provider",
    "Image",
    "Hostname",
    "Version",
    "Image ID",
    "Server ID",
    "State",
    "Age (hours)",
];

/// An image upload in `--json` output. The field names are a stable interface
/// (docs/cli.md).
#[derive(Serialize)]
struct JsonImage {
    id: u64,
    provider: String,
    image: String,
    hostname: Option<String>,
    version: i64,
    image_id: Option<String>,
    server_id: Option<String>,
    state: String,
    state_time: String,
    age_hours: f64,
}

impl JsonImage {
    fn new(image: &Image, now: Timestamp) -> JsonImage {
        JsonImage {
            id: image.id.get(),
            provider: image.provider.to_string(),
            image: image.name.to_string(),
            hostname: image.hostname.clone(),
            version: image.version.unix_seconds(),
            image_id: image.external_id.as_ref().map(ToString::to_string),
            server_id: image.server_external_id.as_ref().map(ToString::to_string),
            state: image.state.to_string(),
            state_time: image.state_time.to_string(),
            age_hours: age_hours(now, image.state_time),
        }
    }
}

/// `nodepool image-list`.
pub(crate) fn list(cli: &Cli, out: &mut dyn Write) -> Outcome {
    let ctx = Context::read(cli)?;
    let images = ctx.store.images(&ImageFilter::default())?;
    if cli.json {
        let rows: Vec<JsonImage> = images.iter().map(|i| JsonImage::new(i, ctx.now)).collect();
        print_json(out, &rows)?;
        return Ok(EXIT_OK);
    }
    let mut rows = table(&COLUMNS);
    for image in &images {
        rows.add_row(vec![
            image.id.to_string(),
            image.provider.to_string(),
            image.name.to_string(),
            cell(image.hostname.as_deref()),
            image.version.unix_seconds().to_string(),
            cell(image.external_id.as_ref()),
            cell(image.server_external_id.as_ref()),
            image.state.to_string(),
            age(ctx.now, image.state_time),
        ]);
    }
    print_table(out, &rows)?;
    Ok(EXIT_OK)
}

/// `nodepool image-delete ID [--force]`: the template server and cloud image, then the row.
pub(crate) fn delete(cli: &Cli, out: &mut dyn Write, id: ImageId, force: bool) -> Outcome {
    let ctx = Context::write(cli)?;
    let upload = ctx.store.image(id)?;
    if !force && let Some(why) = last_ready(&ctx, &upload)? {
        return Err(Failure::Operational(anyhow::anyhow!(
            "image upload {id} is the only READY upload of image {} on provider {}, and {why}; deleting it stops their launches there until a rebuild (`nodepool image-update {} {}`); --force deletes it anyway",
            upload.name,
            upload.provider,
            upload.provider,
            upload.name
        )));
    }
    let reason = Reason::new(
        ReasonCode::OperatorDelete,
        format!("deleted from the command line by {}", user()),
    );
    // Marked first: whatever happens next, the daemon finishes the deletion.
    if upload.state != ImageState::Delete {
        ctx.store
            .set_image_state(id, ImageState::Delete, ctx.now, &reason)?;
    }
    ctx.delete_at_once(ctx.at_once().delete_upload(id, reason))?;
    writeln!(
        out,
        "image upload {id} deleted ({} on provider {})",
        upload.name, upload.provider
    )?;
    Ok(EXIT_OK)
}

/// If `upload` is the only READY upload of its image on its provider and labels launch from
/// it there, which labels (as a phrase).
fn last_ready(ctx: &Context, upload: &Image) -> anyhow::Result<Option<String>> {
    if upload.state != ImageState::Ready {
        return Ok(None);
    }
    let others = ctx.store.images(&ImageFilter {
        provider: Some(upload.provider.clone()),
        name: Some(upload.name.clone()),
        state: Some(ImageState::Ready),
        build_request: None,
    })?;
    if others.iter().any(|other| other.id != upload.id) {
        return Ok(None);
    }
    let labels: Vec<String> = ctx
        .config
        .labels
        .iter()
        .filter(|l| l.image == upload.name && l.providers.contains(&upload.provider))
        .map(|l| l.name.to_string())
        .collect();
    Ok(match labels.as_slice() {
        [] => None,
        [one] => Some(format!("label {one} launches from it")),
        many => Some(format!("labels {} launch from it", many.join(", "))),
    })
}

/// `nodepool show image ID`.
pub(crate) fn show(cli: &Cli, out: &mut dyn Write, id: ImageId) -> Outcome {
    let ctx = Context::read(cli)?;
    let image = ctx.store.image(id)?;
    let history = ctx.store.events(Subject::Image(id))?;
    if cli.json {
        #[derive(Serialize)]
        struct Shown {
            image: JsonImage,
            events: Vec<events::JsonEvent>,
        }
        print_json(
            out,
            &Shown {
                image: JsonImage::new(&image, ctx.now),
                events: history.iter().map(events::JsonEvent::new).collect(),
            },
        )?;
        return Ok(EXIT_OK);
    }
    let fields = [
        ("ID", image.id.to_string()),
        ("Provider", image.provider.to_string()),
        ("Image", image.name.to_string()),
        (
            "Version",
            format!("{} ({})", image.version.unix_seconds(), time(image.version)),
        ),
        ("Hostname", cell(image.hostname.as_deref())),
        ("Image ID", cell(image.external_id.as_ref())),
        ("Server ID", cell(image.server_external_id.as_ref())),
        (
            "State",
            format!(
                "{} since {} ({} hours)",
                image.state,
                time(image.state_time),
                age(ctx.now, image.state_time)
            ),
        ),
    ];
    events::print_fields(out, &fields)?;
    events::print_history(out, &history)?;
    Ok(EXIT_OK)
}
