//! Sending requests and reading answers: status codes to error kinds, the cloud's own
//! message, and `Retry-After`.

use std::time::Duration;

use nodepool_provider::{ErrorKind, ProviderError};
use reqwest::{Response, StatusCode};
use serde::de::DeserializeOwned;

/// The longest piece of an error body kept in a message.
const MAX_MESSAGE: usize = 500;

/// Makes provider errors for one operation of one provider.
#[derive(Clone, Copy)]
pub(crate) struct Op<'a> {
    pub(crate) name: &'static str,
    pub(crate) provider: &'a str,
}

impl Op<'_> {
    pub(crate) fn error(&self, kind: ErrorKind, message: impl Into<String>) -> ProviderError {
        ProviderError::new(kind, self.name, self.provider, message)
    }

    /// An error from osauth: a request that did not get an answer, or an authentication failure.
    pub(crate) fn osauth_error(&self, error: osauth::Error) -> ProviderError {
        use osauth::ErrorKind as K;
        let kind = match error.kind() {
            K::AuthenticationFailed | K::AccessDenied => ErrorKind::Auth,
            K::ResourceNotFound => ErrorKind::NotFound,
            K::InvalidInput | K::Conflict | K::TooManyItems => ErrorKind::BadRequest,
            K::ProtocolError | K::OperationTimedOut | K::InternalServerError => {
                ErrorKind::Transient
            }
            K::EndpointNotFound | K::IncompatibleApiVersion | K::InvalidConfig => ErrorKind::Fatal,
            _ => ErrorKind::Fatal,
        };
        self.error(kind, error.to_string())
    }

    /// Sends a request and returns the answer if it succeeded; otherwise its error, classified.
    pub(crate) async fn send<S>(
        &self,
        request: osauth::ServiceRequestBuilder<S>,
    ) -> Result<Response, ProviderError>
    where
        S: osauth::services::ServiceType + Send + Clone,
    {
        let response = request
            .send_unchecked()
            .await
            .map_err(|e| self.osauth_error(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.text().await.unwrap_or_default();
        let message = cloud_message(&body).unwrap_or_else(|| status.to_string());
        Err(self.error(
            classify(status, &message, retry_after),
            format!("{} {message}", status.as_u16()),
        ))
    }

    /// Sends a request and reads its JSON answer.
    pub(crate) async fn json<S, T>(
        &self,
        request: osauth::ServiceRequestBuilder<S>,
    ) -> Result<T, ProviderError>
    where
        S: osauth::services::ServiceType + Send + Clone,
        T: DeserializeOwned,
    {
        let response = self.send(request).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.error(ErrorKind::Transient, e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            self.error(
                ErrorKind::Fatal,
                format!("unreadable answer ({e}): {shown}"),
            )
        })
    }
}

/// The kind of a failed answer.
pub(crate) fn classify(
    status: StatusCode,
    message: &str,
    retry_after: Option<Duration>,
) -> ErrorKind {
    let quota = {
        let lower = message.to_ascii_lowercase();
        lower.contains("quota") || lower.contains("limit exceeded")
    };
    match status.as_u16() {
        404 | 410 => ErrorKind::NotFound,
        401 => ErrorKind::Auth,
        // Nova says "Quota exceeded" with 403; older clouds used 413.
        403 | 413 if quota => ErrorKind::QuotaExceeded,
        403 => ErrorKind::Auth,
        413 | 429 => ErrorKind::RateLimited { retry_after },
        400 | 405 | 409 | 415 | 422 => ErrorKind::BadRequest,
        500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Fatal,
    }
}

/// The message of an OpenStack error body: `{"itemNotFound": {"message": ...}}`,
/// `{"NeutronError": {"message": ...}}`, `{"error": {"message": ...}}`, `{"message": ...}`,
/// or plain text.
pub(crate) fn cloud_message(body: &str) -> Option<String> {
    let body = body.trim();
    if body.is_empty() {
        return None;
    }
    let text = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => map
            .get("message")
            .and_then(|m| m.as_str().map(str::to_owned))
            .or_else(|| {
                map.values()
                    .find_map(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            })
            .or_else(|| map.get("title").and_then(|m| m.as_str().map(str::to_owned)))
            .unwrap_or_else(|| body.to_owned()),
        _ => body.to_owned(),
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(text.chars().take(MAX_MESSAGE).collect())
}
