//! Provider errors, classified so that callers decide by kind and never parse messages.

use std::fmt;
use std::time::Duration;

/// What kind of failure a cloud call met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The resource does not exist (or no longer does).
    NotFound,
    /// A quota of the project would be exceeded (instances, cores, RAM, floating IPs...).
    QuotaExceeded,
    /// The cloud asks us to slow down; wait at least `retry_after` if it said how long.
    RateLimited {
        /// How long the cloud asked us to wait.
        retry_after: Option<Duration>,
    },
    /// A failure that may pass: a 5xx answer, a timeout, a reset connection.
    Transient,
    /// The credentials were refused or have expired.
    Auth,
    /// The cloud refused the request as malformed or impossible (a 400, a 409).
    BadRequest,
    /// Anything else: retrying will not help.
    Fatal,
}

impl ErrorKind {
    /// Whether the same call may succeed if made again later.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::RateLimited { .. })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::QuotaExceeded => "quota exceeded",
            ErrorKind::RateLimited { .. } => "rate limited",
            ErrorKind::Transient => "transient failure",
            ErrorKind::Auth => "authentication failed",
            ErrorKind::BadRequest => "bad request",
            ErrorKind::Fatal => "failure",
        })
    }
}

/// A failed cloud call: its kind, the operation, the provider and the cloud's own message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{provider}: {operation}: {kind}: {message}")]
pub struct ProviderError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The operation, such as `create_server`.
    pub operation: &'static str,
    /// The provider's name.
    pub provider: String,
    /// The cloud's message, as it said it (never with credentials).
    pub message: String,
}

impl ProviderError {
    /// A new error.
    pub fn new(
        kind: ErrorKind,
        operation: &'static str,
        provider: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ProviderError {
            kind,
            operation,
            provider: provider.into(),
            message: message.into(),
        }
    }

    /// Whether the same call may succeed if made again later.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

/// Shorthand for provider results.
pub type Result<T, E = ProviderError> = std::result::Result<T, E>;
