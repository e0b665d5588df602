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
        // `postgres:/...`, `postgresql:...`: a URL mistyped, never a file
        // (whose name would be shown, password and all).
        let lower = s.get(..11).unwrap_or(s).to_ascii_lowercase();
        if lower.starts_with("postgres:") || lower.starts_with("postgresql:") {
            return Err(StoreError::invalid(
                "store",
                "postgres:…",
                "a PostgreSQL URL starts with postgres:// (or postgresql://)",
            ));
        }
        // libpq's `host=... password=...`: not a file name, and never
        // shown (it may hold the password).
        if s.split_whitespace().any(|word| {
            word.split_once('=').is_some_and(|(key, _)| {
                matches!(
                    key.to_ascii_lowercase().as_str(),
                    "host"
                        | "hostaddr"
                        | "port"
                        | "dbname"
                        | "user"
                        | "password"
                        | "sslmode"
                        | "passfile"
                        | "service"
                )
            })
        }) {
            return Err(StoreError::invalid(
                "store",
                "key=value …",
                "a libpq key=value connection string is not accepted; use \
                 postgres://USER@HOST:PORT/DB (the password from $PGPASSWORD or a password file)",
            ));
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
        // SQLite reads these as an in-memory database or a URI with its own
        // options (`mode=`, `immutable=`), around the store's checks on the
        // file: a store is a plain path.
        if s == ":memory:"
            || s.get(..5)
                .is_some_and(|head| head.eq_ignore_ascii_case("file:"))
        {
            return Err(StoreError::invalid(
                "store",
                &crate::error::printable(s.get(..5).unwrap_or(s)),
                "SQLite URIs (file:…) and :memory: are not stores; give the file's path \
                 (./file:name for a file whose name starts with file:)",
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
    /// Parses `url` as the PostgreSQL client does (its credentials run to
    /// the first `@`, its password from the first `:` in them), so that
    /// what is kept from being shown is exactly what the client takes for
    /// the password, whatever it holds (`/`, `:`, `?`, `%2F`).
    fn parse(url: &str) -> Result<Self> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| StoreError::Invalid {
            what: "store URL",
            value: "postgres://…".to_owned(),
            why: "no scheme".to_owned(),
        })?;
        let (userinfo, after) = match rest.split_once('@') {
            Some((userinfo, after)) => (Some(userinfo), after),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            Some(userinfo) => match userinfo.split_once(':') {
                Some((user, password)) => (Some(user), Some(password)),
                None => (Some(userinfo), None),
            },
            None => (None, None),
        };
        // What an error may show: the scheme and the user, nothing after.
        let hint = crate::error::printable(&match user {
            Some(user) => format!("{scheme}://{user}@…"),
            None => format!("{scheme}://…"),
        });
        let invalid = |why: String| StoreError::Invalid {
            what: "store URL",
            value: hint.clone(),
            why,
        };
        let (authority_and_path, query) = match after.split_once('?') {
            Some((head, query)) => (head, Some(query)),
            None => (after, None),
        };
        if authority_and_path.contains('@') {
            return Err(invalid(
                "it holds a second `@`: percent-encode an `@` in the password as %40".to_owned(),
            ));
        }
        if !authority_and_path.contains('/') {
            return Err(invalid("it names no database: add /DBNAME".to_owned()));
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
                        "a password in the query is not accepted; put it in the URL's user part, $PGPASSWORD or a password file".to_owned(),
                    ));
                }
                _ => kept.push(pair),
            }
        }
        let credentials = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let url_for_client = if kept.is_empty() {
            format!("{scheme}://{credentials}{authority_and_path}")
        } else {
            format!(
                "{scheme}://{credentials}{authority_and_path}?{}",
                kept.join("&")
            )
        };
        // Parsed here so that a bad URL is refused before any connection;
        // what is shown is built from the parsed settings, never the text.
        let config = url_for_client
            .parse::<postgres::Config>()
            .map_err(|e| invalid(scrub(&e.to_string(), password)))?;
        Ok(Self {
            shown: shown(scheme, &config),
            url: url_for_client,
            root_cert,
            passfile,
        })
    }

    /// The client's connection settings, password included.
    pub(crate) fn config(&self) -> Result<postgres::Config> {
        // Parsed once already, at `parse`; its error could quote the URL.
        self.url
            .parse()
            .map_err(|_: postgres::Error| StoreError::Invalid {
                what: "store URL",
                value: self.shown.clone(),
                why: "it does not parse".to_owned(),
            })
    }
}

/// A URL as it may be shown, from its parsed settings: user, hosts, ports
/// and database, never the password or the parameters.
fn shown(scheme: &str, config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    let user = config
        .get_user()
        .map(|user| format!("{user}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or_default();
    crate::error::printable(&format!("{scheme}://{user}{}/{db}", hosts.join(",")))
}

/// `message` with `password` (as written, and percent-decoded) cut out: a
/// parser's error may quote the text it choked on.
fn scrub(message: &str, password: Option<&str>) -> String {
    let mut message = message.to_owned();
    if let Some(password) = password.filter(|p| !p.is_empty()) {
        message = message.replace(password, "…");
        let decoded = percent_decode(password);
        if !decoded.is_empty() {
            message = message.replace(&decoded, "…");
        }
    }
    message
}

/// `%XX` escapes decoded, as the client decodes a password.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn a_password_of_any_characters_is_never_shown() {
        for password in ["a/b", "p:q", "x%2Fy", "we?ird", "h#sh", "%40at"] {
            let url = format!("postgres://ks:{password}@db.internal:5433/keyscope?sslmode=require");
            let location: Location = url.parse().unwrap();
            assert_eq!(
                location.to_string(),
                "postgres://ks@db.internal:5433/keyscope"
            );
            assert!(!format!("{location:?}").contains(password));
            let Location::Postgres(parsed) = &location else {
                panic!()
            };
            let config = parsed.config().unwrap();
            assert_eq!(
                config.get_password().unwrap(),
                percent_decode(password).as_bytes(),
                "the client takes it whole"
            );
        }
        // Refused, and the error shows neither the password nor its parts.
        for url in [
            "postgres://ks:p@ss@db/keyscope",
            "postgres://ks:s3/cr%2Fet@db:notaport/keyscope",
            "postgres://ks:s3/cr%2Fet@db",
        ] {
            let error = url.parse::<Location>().unwrap_err().to_string();
            for part in ["p@ss", "ss@db", "s3/cr", "%2Fet", "s3", "cr/et"] {
                assert!(!error.contains(part), "{url}: {error}");
            }
            assert!(error.contains("postgres://ks@…"), "{error}");
        }
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
        let error = "host=db user=ks password=Zq9a dbname=k"
            .parse::<Location>()
            .unwrap_err();
        assert!(!error.to_string().contains("Zq9a"), "{error}");
        assert!(error.to_string().contains("postgres://"), "{error}");
        let error = "postgres:/u:pw@h/db".parse::<Location>().unwrap_err();
        assert!(error.to_string().contains("postgres://"), "{error}");
        assert!(!error.to_string().contains("pw"), "{error}");
        let error = "postgres://u@h".parse::<Location>().unwrap_err();
        assert!(error.to_string().contains("no database"), "{error}");
    }
}
