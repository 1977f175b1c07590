//! `alien-list` and `alien-image-list`: what the clouds hold that the store does not know.
//!
//! 2014 compared ids only. Each alien here also says whose it is by its tags: this
//! installation's (a leak, which nodepoold's cleanup deletes), another installation's, or
//! nobody's (made by hand or by another tool).

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;

use nodepool_config::Provider as ProviderConfig;
use nodepool_db::{ImageFilter, NodeFilter};
use nodepool_model::{ExternalId, InstallationId, ProviderName};
use nodepool_provider::{Owner, Ownership, Provider, ProviderError, classify};
use serde::Serialize;

use crate::context::Context;
use crate::output::{cell, print_json, print_table, table};
use crate::{Cli, EXIT_FAILURE, EXIT_OK, Failure, Outcome};

/// Whose an alien is, by its tags, in `--json` output (docs/cli.md).
#[derive(Serialize)]
struct JsonTags {
    /// `ours`, `other` or `none`.
    owner: &'static str,
    /// The installation named in its tags, if any.
    installation: Option<String>,
    /// The node or image upload its tags name, when they are ours and readable.
    node: Option<u64>,
    image: Option<u64>,
}

impl JsonTags {
    fn new(ownership: &Ownership, ours: &InstallationId) -> JsonTags {
        let (owner, installation, node, image) = match ownership {
            Ownership::Ours {
                owner: Owner::Node(id),
                ..
            } => ("ours", Some(ours.to_string()), Some(id.get()), None),
            Ownership::Ours {
                owner: Owner::Image(id),
                ..
            } => ("ours", Some(ours.to_string()), None, Some(id.get())),
            Ownership::OursUnreadable => ("ours", Some(ours.to_string()), None, None),
            Ownership::OtherInstallation(other) => ("other", Some(other.to_string()), None, None),
            Ownership::Foreign => ("none", None, None, None),
        };
        JsonTags {
            owner,
            installation,
            node,
            image,
        }
    }

    /// The Tags column.
    fn cell(&self) -> String {
        match (self.owner, self.node, self.image) {
            ("ours", Some(node), _) => format!("ours (node {node})"),
            ("ours", _, Some(image)) => format!("ours (image {image})"),
            ("ours", _, _) => "ours (unreadable)".to_owned(),
            ("other", _, _) => format!(
                "installation {}",
                self.installation.as_deref().unwrap_or_default()
            ),
            _ => "none".to_owned(),
        }
    }
}

/// A server the store does not know, in `--json` output.
#[derive(Serialize)]
struct JsonAlienServer {
    provider: String,
    hostname: String,
    server_id: String,
    ip: Option<String>,
    tags: JsonTags,
}

/// An image the store does not know, in `--json` output.
#[derive(Serialize)]
struct JsonAlienImage {
    provider: String,
    name: String,
    image_id: String,
    tags: JsonTags,
}

/// The providers to ask: all of the config's, or the one named.
fn providers<'c>(
    ctx: &'c Context,
    only: Option<&ProviderName>,
) -> Result<Vec<&'c ProviderConfig>, Failure> {
    let all = ctx.config.providers.iter();
    match only {
        None => Ok(all.collect()),
        Some(name) => {
            let found: Vec<_> = all.filter(|p| &p.name == name).collect();
            if found.is_empty() {
                return Err(Failure::Usage(format!(
                    "no provider {name} in the config (it has: {})",
                    ctx.config
                        .providers
                        .iter()
                        .map(|p| p.name.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Ok(found)
        }
    }
}

/// What one provider answered: its aliens, or why it could not be asked.
type Answer<T> = (ProviderName, Result<Vec<T>, String>);

/// Asks each provider with `ask`, all at once; a provider that cannot be reached is
/// reported after the others' answers.
fn ask_each<T, F, Fut>(
    ctx: &Context,
    chosen: &[&ProviderConfig],
    ask: F,
) -> Result<Vec<Answer<T>>, Failure>
where
    T: Send + 'static,
    F: Fn(Arc<dyn Provider>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Vec<T>, ProviderError>> + Send + 'static,
{
    let connector = Context::connector();
    ctx.block_on(async {
        let mut asks = tokio::task::JoinSet::new();
        for (i, provider) in chosen.iter().enumerate() {
            let (provider, connector, ask) = ((*provider).clone(), connector.clone(), ask.clone());
            asks.spawn(async move {
                let answer = match connector.connect(&provider).await {
                    Ok((cloud, _)) => ask(cloud).await.map_err(|e| e.to_string()),
                    Err(error) => Err(format!("cannot connect: {error}")),
                };
                (i, provider.name, answer)
            });
        }
        let mut answers = Vec::new();
        while let Some(joined) = asks.join_next().await {
            if let Ok(answer) = joined {
                answers.push(answer);
            }
        }
        answers.sort_by_key(|(i, _, _)| *i);
        answers
            .into_iter()
            .map(|(_, name, answer)| (name, answer))
            .collect()
    })
}

/// Reports the providers that could not be asked; exit 1 if any.
fn unanswered<T>(answers: &[Answer<T>], err: &mut dyn Write) -> std::io::Result<u8> {
    let mut code = EXIT_OK;
    for (provider, answer) in answers {
        if let Err(why) = answer {
            writeln!(err, "nodepool: provider {provider}: {why}")?;
            code = EXIT_FAILURE;
        }
    }
    Ok(code)
}

/// `nodepool alien-list [PROVIDER]`: servers whose id no node or image upload of the store
/// has.
pub(crate) fn servers(
    cli: &Cli,
    out: &mut dyn Write,
    err: &mut dyn Write,
    only: Option<&ProviderName>,
) -> Outcome {
    let ctx = Context::read(cli)?;
    let chosen = providers(&ctx, only)?;
    let ours = ctx.store.installation_id()?;
    let answers = ask_each(
        &ctx,
        &chosen,
        |cloud| async move { cloud.list_servers().await },
    )?;
    // The store is read after the clouds: a server created meanwhile is known by then.
    let mut known: BTreeSet<(ProviderName, ExternalId)> = BTreeSet::new();
    for node in ctx.store.nodes(&NodeFilter::default())? {
        if let Some(id) = node.external_id {
            known.insert((node.provider, id));
        }
    }
    for upload in ctx.store.images(&ImageFilter::default())? {
        if let Some(id) = upload.server_external_id {
            known.insert((upload.provider, id));
        }
    }
    let mut aliens = Vec::new();
    for (provider, answer) in &answers {
        for server in answer.iter().flatten() {
            let ownership = classify(&server.metadata, &ours);
            if known_by(&known, provider, &ownership, &server.id) {
                continue;
            }
            aliens.push(JsonAlienServer {
                provider: provider.to_string(),
                hostname: server.name.clone(),
                server_id: server.id.to_string(),
                ip: server
                    .public_ip()
                    .or_else(|| server.private_ip())
                    .map(|ip| ip.to_string()),
                tags: JsonTags::new(&ownership, &ours),
            });
        }
    }
    if cli.json {
        print_json(out, &aliens)?;
    } else {
        let mut rows = table(&["Provider", "Hostname", "Server ID", "IP", "Tags"]);
        for alien in &aliens {
            rows.add_row(vec![
                alien.provider.clone(),
                alien.hostname.clone(),
                alien.server_id.clone(),
                cell(alien.ip.as_deref()),
                alien.tags.cell(),
            ]);
        }
        print_table(out, &rows)?;
    }
    Ok(unanswered(&answers, err)?)
}

/// `nodepool alien-image-list [PROVIDER]`: snapshots (and images tagged by any nodepool)
/// whose id no image upload of the store has. Public and other plain images are not listed.
pub(crate) fn images(
    cli: &Cli,
    out: &mut dyn Write,
    err: &mut dyn Write,
    only: Option<&ProviderName>,
) -> Outcome {
    let ctx = Context::read(cli)?;
    let chosen = providers(&ctx, only)?;
    let ours = ctx.store.installation_id()?;
    let answers = ask_each(
        &ctx,
        &chosen,
        |cloud| async move { cloud.list_images().await },
    )?;
    let known: BTreeSet<(ProviderName, ExternalId)> = ctx
        .store
        .images(&ImageFilter::default())?
        .into_iter()
        .filter_map(|upload| Some((upload.provider, upload.external_id?)))
        .collect();
    let mut aliens = Vec::new();
    for (provider, answer) in &answers {
        for image in answer.iter().flatten() {
            let ownership = classify(&image.properties, &ours);
            let snapshot = image
                .properties
                .get("image_type")
                .is_some_and(|t| t == "snapshot");
            if (!snapshot && ownership == Ownership::Foreign)
                || known_by(&known, provider, &ownership, &image.id)
            {
                continue;
            }
            aliens.push(JsonAlienImage {
                provider: provider.to_string(),
                name: image.name.clone(),
                image_id: image.id.to_string(),
                tags: JsonTags::new(&ownership, &ours),
            });
        }
    }
    if cli.json {
        print_json(out, &aliens)?;
    } else {
        let mut rows = table(&["Provider", "Name", "Image ID", "Tags"]);
        for alien in &aliens {
            rows.add_row(vec![
                alien.provider.clone(),
                alien.name.clone(),
                alien.image_id.clone(),
                alien.tags.cell(),
            ]);
        }
        print_table(out, &rows)?;
    }
    Ok(unanswered(&answers, err)?)
}

/// Whether a resource listed by `provider` is a record's: of that provider, or of the
/// provider its tags name (another provider of the config sharing the project).
fn known_by(
    known: &BTreeSet<(ProviderName, ExternalId)>,
    provider: &ProviderName,
    ownership: &Ownership,
    id: &ExternalId,
) -> bool {
    let tagged = match ownership {
        Ownership::Ours { provider, .. } => ProviderName::new(provider.clone()).ok(),
        _ => None,
    };
    std::iter::once(provider.clone())
        .chain(tagged)
        .any(|p| known.contains(&(p, id.clone())))
}
