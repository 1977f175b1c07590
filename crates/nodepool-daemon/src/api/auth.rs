//! Who may do what through the API.
//!
//! Without a token configured, whoever reaches the API (on loopback only, which the config
//! enforces) may do everything. With tokens, every endpoint but `/health` wants one:
//! a consumer's token (`api.tokens`) makes requests under the consumer's name and may
//! cancel only those, and release or hold only the nodes they were given; an admin token
//! (`api.token-file`, or an entry with `admin: true`) may do everything. Every token may
//! read every listing.

use std::fmt;
use std::path::Path;

use nodepool_config::Api;

use crate::DaemonError;

/// Who sent a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// No token is configured: anyone on this host.
    Anyone,
    /// An admin token; its name, unless it is `api.token-file`'s.
    Admin(Option<String>),
    /// A consumer's token.
    Consumer(String),
}

impl Caller {
    /// The name to record as who did something, when the caller has one.
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            Caller::Anyone | Caller::Admin(None) => None,
            Caller::Admin(Some(name)) | Caller::Consumer(name) => Some(name),
        }
    }

    /// On whose behalf the store changes a node for this caller: a consumer's changes are
    /// checked against the node's request in the same transaction that makes them.
    pub(crate) fn acting(&self) -> nodepool_db::Acting<'_> {
        match self {
            Caller::Anyone | Caller::Admin(_) => nodepool_db::Acting::Anyone,
            Caller::Consumer(name) => nodepool_db::Acting::For(name),
        }
    }

    /// Whether the caller may act on what `owner` (a request's requestor) owns; `None` is
    /// something no consumer owns (a ready node, say).
    pub(crate) fn may_act_for(&self, owner: Option<&str>) -> bool {
        match self {
            Caller::Anyone | Caller::Admin(_) => true,
            Caller::Consumer(name) => owner == Some(name.as_str()),
        }
    }
}

/// The tokens the API accepts. Never printed: its `Debug` says how many there are.
pub(crate) struct Tokens {
    known: Vec<(Vec<u8>, Caller)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Reads every token file of `api`.
    pub(crate) fn read(api: &Api) -> Result<Tokens, DaemonError> {
        let mut known = Vec::new();
        if let Some(file) = &api.token_file {
            known.push((read_token(file, "api.token-file")?, Caller::Admin(None)));
        }
        for token in &api.tokens {
            let key = format!("api.tokens ({})", token.name);
            let secret = read_token(&token.token_file, &key)?;
            if let Some((_, other)) = known.iter().find(|(known, _)| *known == secret) {
                let other = other.name().unwrap_or("api.token-file");
                return Err(DaemonError::Api(format!(
                    "{key}: {} holds the same token as {other}'s: give each consumer its own",
                    token.token_file.display()
                )));
            }
            let caller = if token.admin {
                Caller::Admin(Some(token.name.clone()))
            } else {
                Caller::Consumer(token.name.clone())
            };
            known.push((secret, caller));
        }
        Ok(Tokens { known })
    }

    /// Whether clients must send a token.
    pub(crate) fn wanted(&self) -> bool {
        !self.known.is_empty()
    }

    /// Who sent `given` (an `Authorization` header's value), if anyone; every token is
    /// compared in constant time, whichever matches.
    pub(crate) fn caller(&self, given: Option<&[u8]>) -> Option<Caller> {
        if self.known.is_empty() {
            return Some(Caller::Anyone);
        }
        let given = given?.strip_prefix(b"Bearer ")?;
        let mut found = None;
        for (secret, caller) in &self.known {
            if bool::from(subtle::ConstantTimeEq::ct_eq(given, secret.as_slice())) {
                found = Some(caller.clone());
            }
        }
        found
    }
}

/// Reads a token file: its content without surrounding whitespace, which must not be
/// empty. A file others may read gets a warning.
fn read_token(file: &Path, key: &str) -> Result<Vec<u8>, DaemonError> {
    let fail = |message: String| DaemonError::Api(format!("{key}: {message}"));
    let text = std::fs::read_to_string(file)
        .map_err(|e| fail(format!("cannot read {}: {e}", file.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail(format!(
            "{} is empty: put the bearer token clients must send in it",
            file.display()
        )));
    }
    if nodepool_config::readable_by_others(file) {
        tracing::warn!(
            "{key}: {}",
            nodepool_config::readable_by_others_warning(file)
        );
    }
    Ok(token.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use nodepool_config::ApiToken;

    use super::*;

    fn token(dir: &Path, name: &str, secret: &str, admin: bool) -> ApiToken {
        let file = dir.join(name);
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        let mut token = ApiToken::new(name, file);
        token.admin = admin;
        token
    }

    #[test]
    fn each_token_names_its_caller_and_a_wrong_one_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut api = Api::default();
        api.tokens = vec![
            token(dir.path(), "zuul", "zuul-secret", false),
            token(dir.path(), "ops", "ops-secret", true),
        ];
        let tokens = Tokens::read(&api).unwrap();
        assert!(tokens.wanted());
        assert_eq!(
            tokens.caller(Some(b"Bearer zuul-secret")),
            Some(Caller::Consumer("zuul".into()))
        );
        assert_eq!(
            tokens.caller(Some(b"Bearer ops-secret")),
            Some(Caller::Admin(Some("ops".into())))
        );
        assert_eq!(tokens.caller(Some(b"Bearer zuul-secre")), None);
        assert_eq!(tokens.caller(Some(b"zuul-secret")), None);
        assert_eq!(tokens.caller(None), None);
        assert!(!format!("{tokens:?}").contains("secret"));
    }

    #[test]
    fn without_tokens_anyone_may_do_everything() {
        let tokens = Tokens::read(&Api::default()).unwrap();
        assert!(!tokens.wanted());
        assert_eq!(tokens.caller(None), Some(Caller::Anyone));
        assert!(Caller::Anyone.may_act_for(Some("zuul")));
    }

    #[test]
    fn a_consumer_acts_only_for_itself_and_an_admin_for_all() {
        let zuul = Caller::Consumer("zuul".into());
        assert!(zuul.may_act_for(Some("zuul")));
        assert!(!zuul.may_act_for(Some("other")));
        assert!(!zuul.may_act_for(None), "a ready node is no consumer's");
        assert!(Caller::Admin(None).may_act_for(None));
    }

    #[test]
    fn two_consumers_with_one_token_are_refused_without_printing_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut api = Api::default();
        api.tokens = vec![
            token(dir.path(), "zuul", "same-secret", false),
            token(dir.path(), "other", "same-secret", false),
        ];
        let error = Tokens::read(&api).unwrap_err().to_string();
        assert!(error.contains("same token as zuul's"), "{error}");
        assert!(!error.contains("same-secret"), "{error}");
        let mut api = Api::default();
        api.token_file = Some(dir.path().join("no-such-file"));
        let error = Tokens::read(&api).unwrap_err().to_string();
        assert!(error.starts_with("api.token-file: cannot read"), "{error}");
    }
}
