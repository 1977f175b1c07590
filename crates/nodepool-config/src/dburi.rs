//! `dburi`: where the store lives.
//!
//! - `sqlite://PATH` (the default, `sqlite:///var/lib/nodepool/nodepool.sqlite`): an embedded
//!   database for a single daemon. A relative PATH is relative to the config file's folder.
//! - `postgres://...` or `postgresql://...`: PostgreSQL, for several daemons sharing one store.
//! - `mysql://...` or `mariadb://...`: MySQL 8.0+ or MariaDB 10.6+, which 2014 deployments
//!   used, for one or more daemons. Opening it needs a build with the `mysql` feature.
//!
//! SQLAlchemy driver suffixes (`mysql+pymysql://`, `postgresql+psycopg2://`) are accepted
//! and dropped. A URL with a password never prints it: the userinfo's password and the
//! values of query keys like `password=` are shown as `***`, and a `dburi` that is not a
//! valid URL (a password with an unencoded `/`, `?`, `#` or `@`, say) is never echoed.

use std::fmt;
use std::path::{Path, PathBuf};

/// A parsed `dburi`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbUri {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL, normalised to `postgres://`.
    Postgres(DbUrl),
    /// A MySQL or MariaDB connection URL, normalised to `mysql://`.
    Mysql(DbUrl),
}

/// A database server URL, which may hold a password.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl(String);

impl DbUrl {
    /// The whole URL, password included, for the one place that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`, safe for logs and messages.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DbUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbUri::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            DbUri::Postgres(url) => f.debug_tuple("Postgres").field(url).finish(),
            DbUri::Mysql(url) => f.debug_tuple("Mysql").field(url).finish(),
        }
    }
}

impl fmt::Display for DbUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbUri::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            DbUri::Postgres(url) | DbUri::Mysql(url) => fmt::Display::fmt(url, f),
        }
    }
}

/// What stands for a secret in what is shown.
const HIDDEN: &str = "***";
/// The host put in a URL that names none (its server is in `host=`), while it is read.
const NO_HOST: &str = "nodepool-no-host";

/// Whether a query key names a secret (`password`, `sslpassword`, `passwd`, `token`...).
fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token"]
        .iter()
        .any(|word| key.contains(word))
}

/// `url` as a URL whose every part is where the `url` crate puts it: `None` unless it
/// parses and no `@` comes after its host (which would be part of a password with an
/// unencoded `/`, `?` or `#` in it, taken for the path, query or fragment).
fn parsed(url: &str) -> Option<url::Url> {
    let parsed = match url::Url::parse(url) {
        Ok(parsed) => parsed,
        // libpq's Unix-socket form, `postgres://user:password@/db?host=/run/postgresql`,
        // has a user but no host, which a URL may not: read with a placeholder host.
        Err(url::ParseError::EmptyHost) if url.contains("@/") && url.contains("host=") => {
            url::Url::parse(&url.replacen("@/", &format!("@{NO_HOST}/"), 1)).ok()?
        }
        Err(_) => return None,
    };
    let after_host = [
        parsed.path(),
        parsed.query().unwrap_or(""),
        parsed.fragment().unwrap_or(""),
    ];
    (!after_host.iter().any(|part| part.contains('@'))).then_some(parsed)
}

/// `url` with its userinfo password and the values of secret query keys replaced by
/// `***`; one that is not a valid URL shows its scheme only.
pub(crate) fn redact(url: &str) -> String {
    let Some(mut parsed) = parsed(url) else {
        return match url.split_once("://") {
            Some((scheme, _))
                if !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
            {
                format!("{scheme}://{HIDDEN}")
            }
            _ => format!("{HIDDEN} (not a URL)"),
        };
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some(HIDDEN));
    }
    if let Some(query) = parsed.query() {
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if secret_key(&decoded(key)) => format!("{key}={HIDDEN}"),
                _ => pair.to_owned(),
            })
            .collect();
        parsed.set_query(Some(&query.join("&")));
    }
    parsed
        .to_string()
        .replacen(&format!("@{NO_HOST}/"), "@/", 1)
}

/// `text` percent-decoded, or as it is if that is not UTF-8.
fn decoded(text: &str) -> String {
    percent_encoding_decode(text).unwrap_or_else(|| text.to_owned())
}

impl DbUrl {
    /// `message` (a database driver's, say) with every secret of this URL in it replaced by
    /// `***`: the password as written and percent-decoded, and the values of secret query
    /// keys.
    pub fn scrub(&self, message: &str) -> String {
        let mut secrets: Vec<String> = Vec::new();
        if let Some(parsed) = parsed(&self.0) {
            if let Some(password) = parsed.password() {
                secrets.push(password.to_owned());
                secrets.extend(
                    percent_encoding_decode(password).filter(|decoded| decoded != password),
                );
            }
            for (key, value) in parsed.query_pairs() {
                if secret_key(&key) && !value.is_empty() {
                    secrets.push(value.into_owned());
                }
            }
            if let Some(query) = parsed.query() {
                for pair in query.split('&') {
                    if let Some((key, value)) = pair.split_once('=')
                        && secret_key(&decoded(key))
                        && !value.is_empty()
                    {
                        secrets.push(value.to_owned());
                    }
                }
            }
        }
        // Longest first, so that a secret holding another is replaced whole.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        let mut scrubbed = message.to_owned();
        for secret in secrets.iter().filter(|s| s.len() >= 2) {
            scrubbed = scrubbed.replace(secret.as_str(), HIDDEN);
        }
        scrubbed
    }
}

/// A userinfo password percent-decoded, if it decodes to UTF-8.
fn percent_encoding_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Why a `dburi` is not usable. Messages never contain the password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DbUriError(String);

impl DbUri {
    /// Parses a `dburi`; a relative SQLite path is taken relative to `base` (the folder of
    /// the config file).
    ///
    /// # Errors
    ///
    /// Returns a [`DbUriError`] for an unknown scheme, or a URL with no path or host.
    pub fn parse(uri: &str, base: Option<&Path>) -> Result<DbUri, DbUriError> {
        let uri = uri.trim();
        let Some((scheme, rest)) = uri.split_once("://") else {
            // Not quoted: what is not a URL may be anything, a password included.
            return Err(DbUriError(
                "not a database URL (no `scheme://`); expected sqlite://PATH or postgres://USER@HOST/DATABASE".into(),
            ));
        };
        let base_scheme = scheme
            .split_once('+')
            .map_or(scheme, |(s, _driver)| s)
            .to_ascii_lowercase();
        match base_scheme.as_str() {
            "sqlite" => {
                if rest.is_empty() {
                    return Err(DbUriError("sqlite:// needs a file path, such as sqlite:///var/lib/nodepool/nodepool.sqlite".into()));
                }
                let path = PathBuf::from(rest);
                let path = match base {
                    Some(base) if path.is_relative() && rest != ":memory:" => base.join(path),
                    _ => path,
                };
                Ok(DbUri::Sqlite(path))
            }
            "postgres" | "postgresql" => {
                check_server_url(rest, uri)?;
                Ok(DbUri::Postgres(DbUrl(format!("postgres://{rest}"))))
            }
            "mysql" | "mariadb" => {
                check_server_url(rest, uri)?;
                Ok(DbUri::Mysql(DbUrl(format!("mysql://{rest}"))))
            }
            _ => Err(DbUriError(format!(
                "unsupported database {scheme:?} in {:?}; use sqlite://PATH or postgres://USER@HOST/DATABASE",
                redact(uri)
            ))),
        }
    }
}

fn check_server_url(rest: &str, uri: &str) -> Result<(), DbUriError> {
    let Some(parsed) = parsed(uri) else {
        let why = match url::Url::parse(uri) {
            Err(url::ParseError::EmptyHost) if !rest.contains("host=") => {
                return Err(DbUriError(format!(
                    "{} names no database server host",
                    redact(uri)
                )));
            }
            Err(e) => format!(" ({e})"),
            Ok(_) => String::new(),
        };
        return Err(DbUriError(format!(
            "{} is not a valid URL{why}: a user name or password holding `/`, `?`, `#`, `@` or `:` must be percent-encoded (`/` as %2F, `?` as %3F, `#` as %23, `@` as %40, `:` as %3A)",
            redact(uri)
        )));
    };
    let host = parsed.host_str().filter(|h| *h != NO_HOST).unwrap_or("");
    if host.is_empty() && !rest.contains("host=") {
        return Err(DbUriError(format!(
            "{:?} names no database server host",
            redact(uri)
        )));
    }
    let database = parsed.path().trim_start_matches('/');
    if database.is_empty() {
        return Err(DbUriError(format!(
            "{:?} names no database (the path after the host)",
            redact(uri)
        )));
    }
    Ok(())
}
