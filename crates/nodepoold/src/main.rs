//! `nodepoold`: the nodepool daemon. All logic lives in `nodepool-daemon`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use nodepool_daemon::{Connect, Daemon, FakeRemote, Options, SshRemote, SystemClock};
use tokio::signal::unix::{SignalKind, signal};

/// Keeps pools of ready cloud nodes for CI systems, builds their images and retires old ones.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The config file.
    #[arg(short, long, default_value = "/etc/nodepool/nodepool.yaml")]
    config: PathBuf,
    /// A secure.conf (nodepool 0.3 and 0.4) whose `[database] dburi` replaces the config's.
    /// Without it, /etc/nodepool/secure.conf is read if it exists.
    #[arg(short, long)]
    secure: Option<PathBuf>,
    /// Log lines as JSON objects instead of text.
    #[arg(long)]
    json: bool,
    /// Log debug detail too (or set RUST_LOG).
    #[arg(short, long)]
    debug: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if args.debug { "debug" } else { "info" })
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if args.json {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Servers of the fake cloud answer through a simulated shell; real clouds' over SSH.
    let clock = Arc::new(SystemClock);
    let connect = Connect::new(
        clock.clone(),
        Arc::new(FakeRemote::new()),
        Arc::new(SshRemote::new()),
    );
    // Signals are caught from before the start: a SIGTERM that arrives while the daemon
    // starts stops it gracefully once it has started.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut options = Options::new(args.config);
    options.secure = args.secure;
    let daemon = Daemon::start(options, clock, Arc::new(connect)).await?;
    let reload = Arc::new(tokio::sync::Notify::new());
    let on_hangup = reload.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reading the config again");
            on_hangup.notify_one();
        }
    });
    let stop = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM"),
            _ = interrupt.recv() => tracing::info!("SIGINT"),
        }
    };
    daemon.run(stop, reload).await?;
    Ok(())
}
