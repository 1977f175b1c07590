//! The `nodepool` admin commands.
//!
//! Exit codes: 0 success, 1 an operational error (a database or cloud that cannot be
//! reached), 2 a usage or config error. Every listing can print JSON (`--json`) with
//! stable field names for scripts.

mod validate;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code of a successful command.
pub const EXIT_OK: u8 = 0;
/// Exit code when the work could not be done (database or cloud unreachable, ...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a bad command line or an invalid config.
pub const EXIT_USAGE: u8 = 2;

/// Manage a nodepool: its nodes, images and config.
#[derive(Debug, Parser)]
#[command(name = "nodepool", version, about, max_term_width = 100)]
pub struct Cli {
    /// Path to the config file.
    #[arg(short = 'c', long = "config", global = true, default_value = nodepool_config::DEFAULT_PATH, value_name = "CONFIG")]
    pub config: PathBuf,

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
    /// Check a config file and list every problem in it.
    ///
    /// Exits 0 when the file is valid (warnings go to stderr) and 2 when it is not.
    /// What the file refers to outside itself (clouds.yaml entries, scripts, key files) is
    /// checked too, but only warned about, since this may run on another machine than
    /// nodepoold. Safe to run while nodepoold is running: it reads only the file.
    ConfigValidate,
}

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
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    ExitCode::from(run(&cli, &mut stdout.lock(), &mut stderr.lock()))
}

/// Runs one parsed command, writing its output to `out` and diagnostics to `err`.
pub fn run(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = match &cli.command {
        Command::ConfigValidate => validate::run(cli, out, err),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            let _ = writeln!(err, "nodepool: {error:#}");
            EXIT_FAILURE
        }
    }
}
