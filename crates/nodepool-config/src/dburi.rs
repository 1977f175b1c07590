//! `dburi`: where the store lives.
//!
//! - `sqlite://PATH` (the default, `sqlite:///var/lib/nodepool/nodepool.sqlite`): an embedded
//!   database for a single daemon. A relative PATH is relative to the config file's folder.
//! - `postgres://...` or `postgresql://...`: PostgreSQL, for several daemons sharing one store.
//! - `mysql://...` or `mariadb://...`: MySQL 8.0+ or MariaDB 10.6+, which 2014 deployments
//!   used, for one or more daemons. Opening it needs a build with the `mysql` feature.
//!
//! SQLAlchemy driver suffixes (`mysql+pymysql://`, `postgresql+psycopg2://`) are accepted
//! and dropped. A URL with a password never prints it.

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

/// Replaces the password of `scheme://user:password@host/...` with `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
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
            return Err(DbUriError(format!(
                "{:?} is not a database URL; expected sqlite://PATH or postgres://USER@HOST/DATABASE",
                redact(uri)
            )));
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
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let database = rest
        .get(authority.len()..)
        .unwrap_or("")
        .trim_start_matches('/');
    let database = database.split(['?', '#']).next().unwrap_or("");
    if host.is_empty() && !rest.contains("host=") {
        return Err(DbUriError(format!(
            "{:?} names no database server host",
            redact(uri)
        )));
    }
    if database.is_empty() {
        return Err(DbUriError(format!(
            "{:?} names no database (the path after the host)",
            redact(uri)
        )));
    }
    Ok(())
}
