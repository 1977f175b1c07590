//! What can go wrong with the store, in terms a caller can act on.

use nodepool_model::Subject;

/// A store operation that did not happen. Nothing was written when one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such node, image, request or build request.
    #[error("{subject} not found")]
    NotFound {
        /// What was looked for.
        subject: Subject,
    },
    /// The move is not one the state machine allows (`ready` to `building`, say).
    #[error("{subject} is {from}; it cannot become {to}")]
    InvalidTransition {
        /// What was to move.
        subject: Subject,
        /// Its state now.
        from: String,
        /// The state asked for.
        to: String,
    },
    /// The record is not in a state where this change makes sense.
    #[error("{subject}: {message}")]
    Conflict {
        /// What was to change.
        subject: Subject,
        /// Why it cannot.
        message: String,
    },
    /// Another writer changed the record between our read and our write; the same change
    /// may succeed if tried again.
    #[error("{subject} was changed by another writer while {change}; try again")]
    Raced {
        /// What was to change.
        subject: Subject,
        /// The change that lost the race, such as `becoming ready`.
        change: String,
    },
    /// A consumer acted on a node that is not given to one of its requests.
    #[error(
        "{subject} is not given to {requestor}: only the requestor it was given to, or an admin, may change it"
    )]
    NotGivenTo {
        /// The node.
        subject: Subject,
        /// The requestor that acted.
        requestor: String,
    },
    /// The store's installation id is no longer the one a daemon started with.
    #[error(
        "the store's installation id is now {now}, not {started_as} as when this daemon started (nodepool installation-id --new): this daemon stops; start it again to run as {now}"
    )]
    InstallationChanged {
        /// The id the daemon started with.
        started_as: nodepool_model::InstallationId,
        /// The store's id now.
        now: nodepool_model::InstallationId,
    },
    /// A cloud id that another record of the same provider already has.
    #[error(
        "{subject}: cloud id {external_id:?} on provider {provider} already belongs to another record"
    )]
    DuplicateExternalId {
        /// The record that was to get the id.
        subject: Subject,
        /// The provider.
        provider: String,
        /// The cloud id.
        external_id: String,
    },
    /// The arguments make no sense (a request for no labels, say).
    #[error("{0}")]
    Invalid(String),
    /// The database was written by a newer nodepool.
    #[error(
        "the store's schema is newer than this nodepool: it has migration {newest}, this binary knows up to {known}; upgrade nodepool (a downgrade would lose data)"
    )]
    SchemaTooNew {
        /// The newest migration the database has.
        newest: String,
        /// The newest migration this binary knows.
        known: String,
    },
    /// The database has not been set up; run a command that writes, or start nodepoold.
    #[error(
        "the store at {0} is not set up yet: start nodepoold, or run a nodepool command that writes"
    )]
    NotInitialised(String),
    /// The database cannot be opened or reached.
    #[error("cannot open the store {uri}: {message}")]
    Unavailable {
        /// The database, without its password.
        uri: String,
        /// Why.
        message: String,
    },
    /// A stored value that this version cannot read.
    #[error("unreadable {table} row {id}: {message}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The row's id.
        id: i64,
        /// What is wrong with it.
        message: String,
    },
    /// The database refused or failed an operation.
    #[error("database error: {message}")]
    Database {
        /// The database's message.
        message: String,
        /// Whether trying again may work (a serialization failure, a lock timeout).
        retryable: bool,
    },
}

impl StoreError {
    /// Whether the same operation may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Database {
                retryable: true,
                ..
            } | StoreError::Unavailable { .. }
                | StoreError::Raced { .. }
        )
    }
}

impl From<diesel::result::Error> for StoreError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        let retryable = match &error {
            Error::DatabaseError(kind, info) => {
                // (diesel reads MySQL's deadlock, 1213, as a serialization failure; its
                // lock wait timeout, 1205, it leaves unclassified.)
                matches!(kind, DatabaseErrorKind::SerializationFailure)
                    || info.message().contains("database is locked")
                    || info.message().contains("deadlock")
                    || info.message().contains("Lock wait timeout exceeded")
            }
            _ => false,
        };
        StoreError::Database {
            message: error.to_string(),
            retryable,
        }
    }
}

/// Whether a database error is a unique-constraint violation (a duplicate cloud id).
pub(crate) fn is_unique_violation(error: &diesel::result::Error) -> bool {
    matches!(
        error,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
