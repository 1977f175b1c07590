//! What every command that touches the pool needs: the store its config names, the time.

use std::sync::Arc;

use nodepool_config::Config;
use nodepool_db::Store;
use nodepool_executor::at_once::{AtOnce, NotDone};
use nodepool_executor::{Connect, Connector, FakeRemote, SshRemote, SystemClock};
use nodepool_model::Timestamp;
use nodepool_provider::Clock;

use crate::{Cli, Failure};

/// The name the admin command writes events under.
const ACTOR: &str = "nodepool";

/// The config and store a command works on, and the time it started.
pub(crate) struct Context {
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) now: Timestamp,
}

impl Context {
    /// Reads the config and opens its store, for a command that only reads (nodepoold, or
    /// a command that writes, must have set the store up).
    pub(crate) fn read(cli: &Cli) -> Result<Context, Failure> {
        Self::open(cli, false)
    }

    /// Reads the config and opens its store, setting it up if needed, for a command that
    /// writes.
    pub(crate) fn write(cli: &Cli) -> Result<Context, Failure> {
        Self::open(cli, true)
    }

    fn open(cli: &Cli, writes: bool) -> Result<Context, Failure> {
        let config = match nodepool_config::load(&cli.config) {
            Ok(mut loaded) => {
                loaded
                    .read_secure(cli.secure.as_deref())
                    .map_err(|e| Failure::Usage(e.to_string()))?;
                loaded.config
            }
            Err(failure) => {
                let count = failure.errors.len();
                let first = failure
                    .errors
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let more = if count > 1 {
                    format!(
                        " (and {} more; `nodepool config-validate` lists them)",
                        count - 1
                    )
                } else {
                    String::new()
                };
                return Err(Failure::Usage(format!("{first}{more}")));
            }
        };
        let now = SystemClock.now();
        let store = Store::open(&config.dburi, who())?;
        if writes {
            store.migrate(now)?;
        } else {
            store.check_schema()?;
        }
        Ok(Context { config, store, now })
    }
}

impl Context {
    /// Runs `work` (cloud calls) to its end on a runtime of this thread.
    pub(crate) fn block_on<T>(&self, work: impl Future<Output = T>) -> Result<T, Failure> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(runtime.block_on(work))
    }

    /// Runs a deletion through the daemon's executors (`nodepool_executor::at_once`) to its
    /// end; when it fails, the record stays marked for deletion, and the error says so.
    pub(crate) fn delete_at_once(
        &self,
        delete: impl Future<Output = Result<(), NotDone>>,
    ) -> Result<(), Failure> {
        self.block_on(delete)?.map_err(|e| {
            Failure::Operational(anyhow::anyhow!(
                "{e}; it stays marked for deletion and nodepoold finishes it"
            ))
        })
    }

    /// The daemon's executors, acting on this store's records in this config's clouds.
    pub(crate) fn at_once(&self) -> AtOnce<'_> {
        AtOnce::new(
            &self.store,
            &self.config,
            Arc::new(SystemClock),
            Self::connector(),
        )
    }

    /// Connects providers as nodepoold does.
    pub(crate) fn connector() -> Arc<dyn Connector> {
        Arc::new(Connect::new(
            Arc::new(SystemClock),
            Arc::new(FakeRemote::new()),
            Arc::new(SshRemote::new()),
        ))
    }
}

/// The login running the command, if the environment says.
fn login() -> Option<String> {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
}

/// Who is running the command, for the events it writes: `nodepool (alice)`.
pub(crate) fn who() -> String {
    login().map_or_else(|| ACTOR.to_owned(), |user| format!("{ACTOR} ({user})"))
}

/// The user running the command, for hold notes.
pub(crate) fn user() -> String {
    login().unwrap_or_else(|| "an admin".to_owned())
}
