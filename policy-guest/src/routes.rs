//! The route table: which operation an HTTP request is, and which app it
//! addresses. Data carried in the snapshot, matched inside the policy.
//!
//! A pattern is a path of `/`-separated segments. A segment is a literal,
//! `{app}` (exactly once per pattern: the application the request
//! addresses), or any other `{name}` (one non-empty segment, ignored).
//!
//! Matching fails closed. The query and fragment are dropped; then a path
//! that is not absolute, has an empty segment (`//`, a trailing `/`) or a
//! dot segment (`.`, `..`) matches no route. A placeholder matches only a
//! conservative segment: RFC 3986's unreserved characters (`A-Z a-z 0-9 - .
//! _ ~`). So `%`-escapes, `\`, `;` (`..;`), spaces and tabs, which some
//! upstreams read as a separator or a dot segment, match nothing, and a
//! proxy and its upstream can never disagree on what was authorized.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One route: a method and a path pattern, and the operation they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// The HTTP method, upper case (`GET`).
    pub method: String,
    /// The path pattern (`/api/v2/apps/{app}/agents/{id}`).
    pub pattern: String,
    /// The operation, as named in the catalogue (`agents.get`).
    pub op: String,
}

/// The platform's public API, and the operation each route is.
pub fn default_routes() -> Vec<RouteEntry> {
    const APP: &str = "/api/v2/apps/{app}";
    const ENV: &str = "/api/v2/apps/{app}/environments/{env}";
    [
        ("POST", format!("{ENV}/runs/execute"), "runs.execute"),
        ("POST", format!("{ENV}/sessions"), "sessions.create"),
        (
            "POST",
            format!("{ENV}/sessions/terminate"),
            "sessions.terminate",
        ),
        (
            "POST",
            format!("{ENV}/attachments/upload"),
            "documents.upload",
        ),
        ("GET", format!("{APP}/agents"), "agents.list"),
        ("GET", format!("{APP}/agents/{{id}}"), "agents.get"),
        ("POST", format!("{APP}/agents"), "agents.create"),
        ("PUT", format!("{APP}/agents/{{id}}"), "agents.update"),
        ("PATCH", format!("{APP}/agents/{{id}}"), "agents.update"),
        ("DELETE", format!("{APP}/agents/{{id}}"), "agents.delete"),
    ]
    .into_iter()
    .map(|(method, pattern, op)| RouteEntry {
        method: method.to_owned(),
        pattern,
        op: op.to_owned(),
    })
    .collect()
}

/// Why a route entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRoute {
    /// The offending method or pattern.
    pub route: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl fmt::Display for BadRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route `{}`: {}", self.route, self.why)
    }
}

impl std::error::Error for BadRoute {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    App,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    method: Box<str>,
    segments: Box<[Segment]>,
    op: Box<str>,
}

/// What a request matched: the app it addresses and the operation it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch<'t, 'p> {
    /// The `{app}` segment of the path.
    pub app: &'p str,
    /// The route's operation.
    pub op: &'t str,
}

/// Parsed routes, matched in order: the first match wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    routes: Vec<Route>,
    entries: Vec<RouteEntry>,
}

/// Checks one route entry; used by the snapshot encoder and by stores.
pub fn check(entry: &RouteEntry) -> Result<(), BadRoute> {
    parse(entry).map(drop)
}

fn parse(entry: &RouteEntry) -> Result<Route, BadRoute> {
    let bad = |why| BadRoute {
        route: format!("{} {}", entry.method, entry.pattern),
        why,
    };
    if entry.method.is_empty() || !entry.method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad("the method must be an upper-case HTTP method"));
    }
    let Some(rest) = entry.pattern.strip_prefix('/') else {
        return Err(bad("the pattern must start with `/`"));
    };
    let mut apps = 0;
    let mut segments = Vec::new();
    for segment in rest.split('/') {
        segments.push(match segment {
            "" | "." | ".." => return Err(bad("empty and dot segments never match")),
            "{app}" => {
                apps += 1;
                Segment::App
            }
            _ if segment.starts_with('{') && segment.ends_with('}') => Segment::Any,
            _ if segment.contains(['{', '}', '%', '?', '#']) => {
                return Err(bad(
                    "a literal segment may not hold `{`, `}`, `%`, `?` or `#`",
                ));
            }
            _ => Segment::Literal(segment.into()),
        });
    }
    if apps != 1 {
        return Err(bad("the pattern must name `{app}` exactly once"));
    }
    Ok(Route {
        method: entry.method.as_str().into(),
        segments: segments.into_boxed_slice(),
        op: entry.op.as_str().into(),
    })
}

impl RouteTable {
    /// Parses `entries`, refusing the first bad one.
    pub fn parse(entries: &[RouteEntry]) -> Result<Self, BadRoute> {
        let routes = entries.iter().map(parse).collect::<Result<_, _>>()?;
        Ok(Self {
            routes,
            entries: entries.to_vec(),
        })
    }

    /// The entries the table was parsed from.
    pub fn entries(&self) -> &[RouteEntry] {
        &self.entries
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route `method` and `path` match, if any. `path` may carry a query.
    pub fn route<'t, 'p>(&'t self, method: &str, path: &'p str) -> Option<RouteMatch<'t, 'p>> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let rest = path.strip_prefix('/')?;
        if rest.split('/').any(|s| matches!(s, "" | "." | "..")) {
            return None;
        }
        self.routes
            .iter()
            .filter(|route| *route.method == *method)
            .find_map(|route| route.matches(rest))
    }
}

impl Route {
    fn matches<'t, 'p>(&'t self, rest: &'p str) -> Option<RouteMatch<'t, 'p>> {
        let mut app = None;
        let mut parts = rest.split('/');
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(literal) if **literal == *part => {}
                Segment::Literal(_) => return None,
                _ if !is_plain_segment(part) => return None,
                Segment::App => app = Some(part),
                Segment::Any => {}
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(RouteMatch {
            app: app?,
            op: &self.op,
        })
    }
}

/// Whether a path segment may fill a placeholder: one or more unreserved
/// characters (RFC 3986, section 2.3), and not a dot segment.
pub fn is_plain_segment(segment: &str) -> bool {
    !matches!(segment, "" | "." | "..")
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::parse(&default_routes()).unwrap()
    }

    #[test]
    fn the_public_api_routes_to_its_operations() {
        let table = table();
        let cases = [
            (
                "POST",
                "/api/v2/apps/acme/environments/prod/runs/execute",
                "runs.execute",
            ),
            (
                "POST",
                "/api/v2/apps/acme/environments/prod/sessions",
                "sessions.create",
            ),
            (
                "POST",
                "/api/v2/apps/acme/environments/prod/sessions/terminate",
                "sessions.terminate",
            ),
            (
                "POST",
                "/api/v2/apps/acme/environments/prod/attachments/upload",
                "documents.upload",
            ),
            ("GET", "/api/v2/apps/acme/agents", "agents.list"),
            ("GET", "/api/v2/apps/acme/agents/a1?expand=1", "agents.get"),
            ("POST", "/api/v2/apps/acme/agents", "agents.create"),
            ("PUT", "/api/v2/apps/acme/agents/a1", "agents.update"),
            ("PATCH", "/api/v2/apps/acme/agents/a1", "agents.update"),
            ("DELETE", "/api/v2/apps/acme/agents/a1#x", "agents.delete"),
        ];
        for (method, path, op) in cases {
            let found = table.route(method, path);
            assert_eq!(
                found,
                Some(RouteMatch { app: "acme", op }),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn anything_else_matches_nothing() {
        let table = table();
        for (method, path) in [
            ("GET", "/api/v2/apps/acme/agents/"),
            ("GET", "/api/v2/apps/acme//agents"),
            ("GET", "/api/v2/apps/acme/agents/a1/extra"),
            ("GET", "/api/v2/apps/acme/agents/../agents"),
            ("GET", "/api/v2/apps/acme/agents/."),
            ("GET", "/api/v2/apps/ac%6de/agents"),
            ("GET", "/api/v2/apps/acme/agents/a%2F..%2F.."),
            ("get", "/api/v2/apps/acme/agents"),
            ("HEAD", "/api/v2/apps/acme/agents"),
            ("DELETE", "/api/v2/apps/acme/agents"),
            ("GET", "api/v2/apps/acme/agents"),
            ("GET", ""),
            ("GET", "/"),
            ("POST", "/api/v2/apps/acme/environments/prod/runs"),
            // Separators and dot segments that some upstreams see and we must
            // not: a backslash, `;` path parameters, white space.
            (
                "PUT",
                "/api/v2/apps/acme/agents/x\\..\\..\\..\\other\\agents\\5",
            ),
            ("PUT", "/api/v2/apps/acme/agents/..;"),
            ("PUT", "/api/v2/apps/acme/agents/a;b"),
            ("GET", "/api/v2/apps/ac me/agents"),
            ("GET", "/api/v2/apps/acme\t/agents"),
            ("GET", "/api/v2/apps/acme/agents/a\u{e9}"),
            ("GET", "/api/v2/apps/acme/agents/a+b"),
            ("GET", "/api/v2/apps/acme/agents/a:b"),
        ] {
            assert_eq!(table.route(method, path), None, "{method} {path}");
        }
    }

    #[test]
    fn placeholders_take_only_unreserved_characters() {
        let table = table();
        for id in ["a1", "A-b_c.d~e", "..x", "x..", "...", "~"] {
            let path = format!("/api/v2/apps/acme/agents/{id}");
            assert!(table.route("GET", &path).is_some(), "{path}");
        }
        assert!(!is_plain_segment(".."));
        assert!(!is_plain_segment("."));
        assert!(!is_plain_segment(""));
    }

    #[test]
    fn bad_patterns_are_refused_by_name() {
        let route = |method: &str, pattern: &str| RouteEntry {
            method: method.to_owned(),
            pattern: pattern.to_owned(),
            op: "agents.list".to_owned(),
        };
        for (entry, why) in [
            (route("GET", "/agents"), "exactly once"),
            (route("GET", "/{app}/{app}"), "exactly once"),
            (route("GET", "agents/{app}"), "start with"),
            (route("GET", "/{app}//x"), "empty and dot"),
            (route("get", "/{app}"), "upper-case"),
            (route("GET", "/{app}/a%2f"), "literal segment"),
        ] {
            let error = check(&entry).unwrap_err();
            assert!(error.why.contains(why), "{error}");
        }
    }
}
