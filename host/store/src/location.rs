//! Where a store lives: an SQLite file, or a PostgreSQL database named by a
//! URL. A location is shown without its password, always.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Result, StoreError};

/// Where a store lives, as `--store` (or `$KEYSCOPE_STORE`) names it: a
/// `postgres://` or `postgresql://` URL, or else a file path.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PostgresUrl),
}

impl FromStr for Location {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return PostgresUrl::parse(s).map(Self::Postgres);
        }
        if s.contains("://") {
            let scheme = s.split("://").next().unwrap_or_default();
            return Err(StoreError::invalid(
                "store",
                scheme,
                "this scheme is not a store; use a file path or postgres://USER@HOST:PORT/DB",
            ));
        }
        if s.is_empty() {
            return Err(StoreError::invalid(
                "store",
                s,
                "give a file path or a postgres:// URL",
            ));
        }
        Ok(Self::Sqlite(PathBuf::from(s)))
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Self {
        Self::Sqlite(path)
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Self {
        Self::Sqlite(path.to_owned())
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

/// A PostgreSQL URL: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?PARAMS]`.
///
/// The parameters are libpq's that `tokio-postgres` knows (`sslmode`,
/// `connect_timeout`, `application_name`, ...) and two of keyscope's own:
/// `sslrootcert=FILE`, the CA that must have signed the server's
/// certificate (the server is then verified as libpq's `verify-full`
/// does), and `passfile=FILE`, a password file in `.pgpass` format
/// (`$PGPASSFILE` too). Without `sslrootcert`, `sslmode=require` encrypts
/// without verifying the server, as libpq's `require` does.
///
/// The password comes from the URL, else `$PGPASSWORD`, else the password
/// file. It is kept in the connection settings only: [`fmt::Display`] and
/// [`fmt::Debug`] show the URL without it, and no error quotes it.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    /// The URL as given, for connecting; never shown.
    url: String,
    /// The URL as it may be shown: no password, no parameters.
    shown: String,
    /// `sslrootcert`, if given.
    pub(crate) root_cert: Option<PathBuf>,
    /// `passfile`, if given.
    pub(crate) passfile: Option<PathBuf>,
}

impl PostgresUrl {
    fn parse(url: &str) -> Result<Self> {
        let invalid = |why: &str| StoreError::Invalid {
            what: "store URL",
            value: Self::redact(url),
            why: why.to_owned(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("no scheme"))?;
        let (authority_and_path, query) = match rest.split_once('?') {
            Some((head, query)) => (head, Some(query)),
            None => (rest, None),
        };
        if !authority_and_path.contains('/') {
            return Err(invalid("it names no database: add /DBNAME"));
        }
        let mut kept = Vec::new();
        let mut root_cert = None;
        let mut passfile = None;
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            match pair.split_once('=') {
                Some(("sslrootcert", file)) => root_cert = Some(PathBuf::from(file)),
                Some(("passfile", file)) => passfile = Some(PathBuf::from(file)),
                Some(("password", _)) => {
                    return Err(invalid(
                        "a password in the query is not accepted; put it in the URL's user part, $PGPASSWORD or a password file",
                    ));
                }
                _ => kept.push(pair),
            }
        }
        let url_for_client = if kept.is_empty() {
            format!("{scheme}://{authority_and_path}")
        } else {
            format!("{scheme}://{authority_and_path}?{}", kept.join("&"))
        };
        // Parsed here so that a bad URL is refused before any connection.
        url_for_client
            .parse::<postgres::Config>()
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(Self {
            shown: Self::redact(url),
            url: url_for_client,
            root_cert,
            passfile,
        })
    }

    /// The client's connection settings, password included.
    pub(crate) fn config(&self) -> Result<postgres::Config> {
        self.url
            .parse()
            .map_err(|e: postgres::Error| StoreError::Invalid {
                what: "store URL",
                value: self.shown.clone(),
                why: e.to_string(),
            })
    }

    /// `url` without its password and parameters.
    fn redact(url: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return "postgres://…".to_owned();
        };
        let rest = rest.split('?').next().unwrap_or_default();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let authority = match authority.rsplit_once('@') {
            Some((user, host)) => {
                let user = user.split(':').next().unwrap_or_default();
                format!("{user}@{host}")
            }
            None => authority.to_owned(),
        };
        crate::error::printable(&format!("{scheme}://{authority}/{path}"))
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        let location: Location =
            "postgres://ks:s3cret-pw@db.internal:5433/keyscope?sslmode=require"
                .parse()
                .unwrap();
        assert_eq!(
            location.to_string(),
            "postgres://ks@db.internal:5433/keyscope"
        );
        assert!(!format!("{location:?}").contains("s3cret"));
    }

    #[test]
    fn paths_and_urls_are_told_apart() {
        assert_eq!(
            "keyscope.db".parse::<Location>().unwrap(),
            Location::Sqlite(PathBuf::from("keyscope.db"))
        );
        assert!(matches!(
            "postgresql://u@h/db".parse::<Location>().unwrap(),
            Location::Postgres(_)
        ));
        let error = "mysql://u:pw@h/db".parse::<Location>().unwrap_err();
        assert!(error.to_string().contains("`mysql`"), "{error}");
        assert!(!error.to_string().contains("pw"));
        let error = "postgres://u:hunter22@h:notaport/db"
            .parse::<Location>()
            .unwrap_err();
        assert!(!error.to_string().contains("hunter22"), "{error}");
        let error = "postgres://u@h".parse::<Location>().unwrap_err();
        assert!(error.to_string().contains("no database"), "{error}");
    }
}
