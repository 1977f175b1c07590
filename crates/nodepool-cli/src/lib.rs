//! The `nodepool` admin commands.
//!
//! Exit codes: 0 success, 1 an operational error (a database or cloud that cannot be
//! reached, an id the store does not have), 2 a usage or config error. Every listing can
//! print JSON (`--json`) with stable field names for scripts: see `docs/cli.md`.

mod aliens;
mod builds;
mod context;
mod daemons;
mod events;
mod images;
mod nodes;
mod output;
mod requests;
mod validate;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nodepool_model::{ImageId, ImageName, LabelName, NodeId, NodeState, ProviderName};

/// Exit code of a successful command.
pub const EXIT_OK: u8 = 0;
/// Exit code when the work could not be done (database or cloud unreachable, ...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a bad command line or an invalid config.
pub const EXIT_USAGE: u8 = 2;

/// Manage a nodepool: its nodes, images and config.
#[derive(Debug, Parser)]
#[command(name = "nodepool", version, max_term_width = 100)]
pub struct Cli {
    /// Path to the config file.
    #[arg(short = 'c', long = "config", global = true, default_value = nodepool_config::DEFAULT_PATH, value_name = "CONFIG")]
    pub config: PathBuf,

    /// Path to a secure.conf (nodepool 0.3 and 0.4): its `[database] dburi` replaces the
    /// config's. Without it, /etc/nodepool/secure.conf is read if it exists.
    #[arg(short = 's', long = "secure", global = true, value_name = "SECURE")]
    pub secure: Option<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Print debugging detail.
    #[arg(long, global = true)]
    pub debug: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// List nodes.
    ///
    /// Columns as in 2014: ID, Provider, AZ, Label, Target, Hostname, NodeName, Server ID,
    /// IP, State, Age (hours). Targets (Jenkins masters) have no effect any more, so the
    /// Target column is always empty; it stays so that scripts reading columns by position
    /// keep working. Age is the time since the node's last state change. Rows are ordered
    /// by provider, label and id.
    List {
        /// Only this provider's nodes.
        #[arg(long)]
        provider: Option<ProviderName>,
        /// Only this label's nodes.
        #[arg(long)]
        label: Option<LabelName>,
        /// Only nodes in this state (building, ready, in-use, used, delete, hold, test).
        #[arg(long)]
        state: Option<NodeState>,
    },
    /// List image uploads.
    ///
    /// Columns as in 2014: ID, Provider, Image, Hostname, Version, Image ID, Server ID,
    /// State, Age (hours). Version is the build's start as Unix seconds; Server ID is the
    /// template server the snapshot was taken from.
    ImageList,
    /// Hold a node: nodepool keeps it, untouched, until it is deleted.
    ///
    /// Prints the node's row.
    Hold {
        /// The node's id.
        id: NodeId,
        /// Why, for whoever finds it later (recorded in the node's history).
        #[arg(long, default_value = "held from the command line")]
        reason: String,
    },
    /// Mark a node for deletion; the daemon deletes its server and then the row.
    ///
    /// Prints the node's row. With --now, deletes the server through its provider at once,
    /// waits until the cloud says it is gone and removes the row; if that fails, the node
    /// stays marked for deletion and the daemon finishes it.
    Delete {
        /// The node's id.
        id: NodeId,
        /// Delete the server now and wait until it is gone.
        #[arg(long)]
        now: bool,
    },
    /// Build an image now, on one provider or all that have it, and follow the build.
    ///
    /// Records a build request that nodepoold serves (the daemon builds, not this command),
    /// then prints the build's events as they happen until it ends: exit 0 when every
    /// upload is READY, 1 with the reason when it failed. If no nodepoold takes the request
    /// within --daemon-timeout, says so and exits 1; the request stays recorded.
    ImageUpdate {
        /// A provider's name, or `all`.
        provider: String,
        /// The image's name.
        image: ImageName,
        /// Record the request and return at once.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for a nodepoold to take the request, in seconds.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        daemon_timeout: u64,
    },
    /// Delete an image upload: its template server and cloud image, then its row.
    ///
    /// Refuses to delete the only READY upload of an image that labels launch from on that
    /// provider (their launches would stop until a rebuild) unless --force is given.
    /// Deleting the newest upload makes launches fall back to the one before.
    ImageDelete {
        /// The upload's id (the ID column of `image-list`).
        id: ImageId,
        /// Delete it even if it is the only READY upload labels launch from.
        #[arg(long)]
        force: bool,
    },
    /// Show a node or an image upload with its whole history: why it was launched or
    /// built, held, deleted.
    Show {
        /// What to show.
        #[command(subcommand)]
        what: Show,
    },
    /// List node requests (from CI systems) with their state.
    RequestList,
    /// List the nodepoold processes sharing the store, with their leases and the work
    /// each has claimed.
    ///
    /// A daemon whose lease has expired (`Lease` says since when) is taken for dead: the
    /// others finish its work, and it is forgotten a day later.
    DaemonList,
    /// Print the store's installation id, which every server, image and floating IP
    /// nodepool makes is tagged with; with --new, give the store a new one.
    ///
    /// A store copied from another installation's (a staging copy of production) has its
    /// id, and would take that installation's resources for its own: give the copy a new
    /// id before its first nodepoold starts. Afterwards the copy never touches what carries
    /// the old id: rows naming such resources are forgotten, the resources left alone.
    /// Refused while a nodepoold is running on the store.
    InstallationId {
        /// Give the store a new installation id.
        #[arg(long)]
        new: bool,
    },
    /// List servers the store does not know, in every provider or one.
    ///
    /// Columns as in 2014 (Provider, Hostname, Server ID, IP) and Tags: whose the server is
    /// by nodepool's tags: `ours (node N)` (a leak of this installation, which nodepoold's
    /// cleanup deletes), `installation ID` (another nodepool's) or `none`.
    AlienList {
        /// Only this provider.
        provider: Option<ProviderName>,
    },
    /// List snapshot images the store does not know, in every provider or one.
    ///
    /// Columns as in 2014 (Provider, Name, Image ID) and Tags, as for alien-list. Public and
    /// other plain images are left out, as in 2014, unless a nodepool tagged them.
    AlienImageList {
        /// Only this provider.
        provider: Option<ProviderName>,
    },
    /// Check a config file and list every problem in it.
    ///
    /// Exits 0 when the file is valid (warnings go to stderr) and 2 when it is not.
    /// What the file refers to outside itself (clouds.yaml entries, scripts, key files) is
    /// checked too, but only warned about, since this may run on another machine than
    /// nodepoold. Safe to run while nodepoold is running: it reads only the file.
    ConfigValidate,
    /// Print a shell completion script.
    ///
    /// For bash: `nodepool completion bash > /etc/bash_completion.d/nodepool`; for zsh, put
    /// the output in a file named `_nodepool` on `$fpath`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff); `cargo xtask docs` writes it to docs/nodepool.1.
    #[command(hide = true)]
    Man,
}

/// What `show` shows.
#[derive(Debug, Subcommand)]
pub enum Show {
    /// A node.
    Node {
        /// The node's id.
        id: NodeId,
    },
    /// An image upload.
    Image {
        /// The upload's id (the ID column of `image-list`).
        id: ImageId,
    },
}

/// Writes the man page.
fn man(out: &mut dyn Write) -> Outcome {
    let command = <Cli as clap::CommandFactory>::command();
    clap_mangen::Man::new(command).render(out)?;
    Ok(EXIT_OK)
}

/// A command that cannot do what it was asked, and how the process should exit.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The work could not be done: exit 1.
    Operational(anyhow::Error),
    /// The command line or the config is wrong: exit 2.
    Usage(String),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure::Operational(error.into())
    }
}

/// What a command returns: its exit code, or why it failed.
pub(crate) type Outcome = Result<u8, Failure>;

/// Runs the command line of this process and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version are successes printed by clap; anything else is a usage error.
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_OK
            });
        }
    };
    if cli.debug {
        // What the cloud and the store are asked, on stderr.
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
            .init();
    }
    // Buffered: a 10,000-node table is written in large blocks, not a write per line.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let code = run(&cli, &mut out, &mut std::io::stderr().lock());
    let _ = out.flush();
    ExitCode::from(code)
}

/// Runs one parsed command, writing its output to `out` and diagnostics to `err`.
pub fn run(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = match &cli.command {
        Command::ConfigValidate => validate::run(cli, out, err).map_err(Failure::from),
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "nodepool", out);
            Ok(EXIT_OK)
        }
        Command::Man => man(out),
        Command::List {
            provider,
            label,
            state,
        } => nodes::list(cli, out, provider.clone(), label.clone(), *state),
        Command::ImageList => images::list(cli, out),
        Command::Hold { id, reason } => nodes::hold(cli, out, *id, reason),
        Command::Delete { id, now: false } => nodes::delete(cli, out, *id),
        Command::Delete { id, now: true } => nodes::delete_now(cli, out, *id),
        Command::ImageDelete { id, force } => images::delete(cli, out, *id, *force),
        Command::ImageUpdate {
            provider,
            image,
            no_wait,
            daemon_timeout,
        } => builds::update(
            cli,
            out,
            provider,
            image,
            *no_wait,
            std::time::Duration::from_secs(*daemon_timeout),
        ),
        Command::Show {
            what: Show::Node { id },
        } => nodes::show(cli, out, *id),
        Command::Show {
            what: Show::Image { id },
        } => images::show(cli, out, *id),
        Command::RequestList => requests::list(cli, out),
        Command::DaemonList => daemons::list(cli, out),
        Command::InstallationId { new } => daemons::installation_id(cli, out, *new),
        Command::AlienList { provider } => aliens::servers(cli, out, err, provider.as_ref()),
        Command::AlienImageList { provider } => aliens::images(cli, out, err, provider.as_ref()),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(message)) => {
            let _ = writeln!(err, "nodepool: {message}");
            EXIT_USAGE
        }
        Err(Failure::Operational(error)) => {
            let _ = writeln!(err, "nodepool: {error:#}");
            EXIT_FAILURE
        }
    }
}
