//! The route table: which operation an HTTP request is, and which app it
//! addresses. Data carried in the snapshot, matched inside the policy.
//!
//! A pattern is a path of `/`-separated segments. A segment is a literal,
//! `{app}` (exactly once per pattern: the application the request
//! addresses), or any other `{name}` (one non-empty segment, ignored).
//!
//! Matching fails closed. A target with a `#` matches no route: a fragment
//! is never part of a request (RFC 9112), and an upstream given the raw
//! target might read what follows it as path. The query is dropped; then a
//! path that is not absolute, has an empty segment (`//`, a trailing `/`) or a
//! dot segment (`.`, `..`) matches no route. A placeholder matches only a
//! conservative segment: RFC 3986's unreserved characters (`A-Z a-z 0-9 - .
//! _ ~`). So `%`-escapes, `\`, `;` (`..;`), spaces and tabs, which some
//! upstreams read as a separator or a dot segment, match nothing, and a
//! proxy and its upstream can never disagree on what was authorized.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::Method;

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
        ("POST", format!("{ENV}/runs/{{run}}/status"), "runs.status"),
        ("GET", format!("{ENV}/sessions"), "sessions.get"),
        ("GET", format!("{ENV}/sessions/list"), "sessions.list"),
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
        (
            "DELETE",
            format!("{ENV}/attachments/{{file}}"),
            "documents.delete",
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
    method: Method,
    segments: Box<[Segment]>,
    /// The operation's id in the catalogue.
    op: u32,
}

/// What a request matched: the app it addresses and the operation it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch<'p> {
    /// The `{app}` segment of the path.
    pub app: &'p str,
    /// The route's operation, by its id in the catalogue.
    pub op: u32,
}

/// Parsed routes, matched in order: the first match wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    routes: Vec<Route>,
    entries: Vec<RouteEntry>,
    /// The most segments a route has.
    longest: usize,
}

/// Checks one route entry's method and pattern; used by stores. (Whether
/// its operation is catalogued is the store's and the encoder's to check.)
pub fn check(entry: &RouteEntry) -> Result<(), BadRoute> {
    parse(entry, |_| Some(0)).map(drop)
}

fn parse(entry: &RouteEntry, op_id: impl Fn(&str) -> Option<u32>) -> Result<Route, BadRoute> {
    let bad = |why| BadRoute {
        route: format!("{} {}", entry.method, entry.pattern),
        why,
    };
    let Ok(method) = entry.method.parse::<Method>() else {
        return Err(bad(
            "the method must be one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH",
        ));
    };
    let Some(op) = op_id(&entry.op) else {
        return Err(bad("its operation is not in the catalogue"));
    };
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
        method,
        segments: segments.into_boxed_slice(),
        op,
    })
}

impl RouteTable {
    /// Parses `entries`, refusing the first bad one; `op_id` gives each
    /// catalogued operation's id.
    pub fn parse(
        entries: &[RouteEntry],
        op_id: impl Fn(&str) -> Option<u32>,
    ) -> Result<Self, BadRoute> {
        let routes: Vec<Route> = entries
            .iter()
            .map(|entry| parse(entry, &op_id))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            longest: routes.iter().map(|r| r.segments.len()).max().unwrap_or(0),
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
    ///
    /// The path is split once, into segments on the stack, and each route
    /// of the method and of that many segments compares them: no
    /// allocation unless a route is longer than [`INLINE_SEGMENTS`].
    pub fn route<'p>(&self, method: Method, path: &'p str) -> Option<RouteMatch<'p>> {
        if path.as_bytes().contains(&b'#') {
            return None;
        }
        let path = path.split('?').next().unwrap_or_default();
        let rest = path.strip_prefix('/')?;
        if self.longest > INLINE_SEGMENTS {
            let parts: Vec<&str> = rest.split('/').collect();
            return self.route_parts(method, &parts);
        }
        let mut parts = [""; INLINE_SEGMENTS];
        let mut count = 0;
        for part in rest.split('/') {
            if count == self.longest {
                // More segments than any route has: nothing matches.
                return None;
            }
            *parts.get_mut(count)? = part;
            count += 1;
        }
        self.route_parts(method, &parts[..count])
    }

    fn route_parts<'p>(&self, method: Method, parts: &[&'p str]) -> Option<RouteMatch<'p>> {
        if parts.iter().any(|s| matches!(*s, "" | "." | "..")) {
            return None;
        }
        self.routes
            .iter()
            .filter(|route| route.method == method && route.segments.len() == parts.len())
            .find_map(|route| route.matches(parts))
    }
}

/// Path segments split on the stack when matching; a table with a longer
/// route splits into a vector.
const INLINE_SEGMENTS: usize = 16;

impl Route {
    /// Whether the route matches `parts`, a path of as many segments.
    fn matches<'p>(&self, parts: &[&'p str]) -> Option<RouteMatch<'p>> {
        let mut app = None;
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(literal) if **literal == **part => {}
                Segment::Literal(_) => return None,
                _ if !is_plain_segment(part) => return None,
                Segment::App => app = Some(*part),
                Segment::Any => {}
            }
        }
        Some(RouteMatch {
            app: app?,
            op: self.op,
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

    /// The operations the default routes name, sorted: an op's id is its
    /// index here.
    fn op_names() -> Vec<String> {
        let mut names: Vec<String> = default_routes().into_iter().map(|r| r.op).collect();
        names.sort();
        names.dedup();
        names
    }

    fn table() -> RouteTable {
        let names = op_names();
        RouteTable::parse(&default_routes(), |op| {
            names.iter().position(|name| name == op).map(|i| i as u32)
        })
        .unwrap()
    }

    /// The app and the operation's name that `method` and `path` match.
    fn route(method: &str, path: &str) -> Option<(String, String)> {
        table()
            .route(Method::parse(method), path)
            .map(|found| (found.app.to_owned(), op_names()[found.op as usize].clone()))
    }

    #[test]
    fn the_public_api_routes_to_its_operations() {
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
            ("DELETE", "/api/v2/apps/acme/agents/a1", "agents.delete"),
            (
                "POST",
                "/api/v2/apps/acme/environments/prod/runs/r-1/status",
                "runs.status",
            ),
            (
                "GET",
                "/api/v2/apps/acme/environments/prod/sessions?sessionId=s1",
                "sessions.get",
            ),
            (
                "GET",
                "/api/v2/apps/acme/environments/prod/sessions?sessionReference=r",
                "sessions.get",
            ),
            (
                "GET",
                "/api/v2/apps/acme/environments/prod/sessions/list",
                "sessions.list",
            ),
            (
                "DELETE",
                "/api/v2/apps/acme/environments/prod/attachments/f_1",
                "documents.delete",
            ),
        ];
        for (method, path, op) in cases {
            assert_eq!(
                route(method, path),
                Some(("acme".to_owned(), op.to_owned())),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn anything_else_matches_nothing() {
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
            ("FETCH", "/api/v2/apps/acme/agents"),
            ("GET", "/api/v2/apps/acme/environments/prod/sessions/list/x"),
            ("POST", "/api/v2/apps/acme/environments/prod/runs/status"),
            // A fragment is never sent; what follows a `#` could be path
            // to an upstream given the raw target.
            ("DELETE", "/api/v2/apps/acme/agents/a1#x"),
            ("GET", "/api/v2/apps/acme/agents#/../../other/agents"),
            ("GET", "/api/v2/apps/acme/agents?q=#x"),
        ] {
            assert_eq!(route(method, path), None, "{method} {path}");
        }
    }

    #[test]
    fn a_route_longer_than_the_stack_split_matches_and_longer_paths_do_not() {
        let deep = |n: usize| {
            let mut pattern = "/{app}".to_owned();
            for i in 1..n {
                pattern.push_str(&format!("/s{i}"));
            }
            pattern
        };
        for n in [INLINE_SEGMENTS - 1, INLINE_SEGMENTS, INLINE_SEGMENTS + 4] {
            let pattern = deep(n);
            let table = RouteTable::parse(
                &[RouteEntry {
                    method: "GET".to_owned(),
                    pattern: pattern.clone(),
                    op: "deep".to_owned(),
                }],
                |_| Some(7),
            )
            .unwrap();
            let path = pattern.replace("{app}", "acme");
            let found = table.route(Method::Get, &path).unwrap();
            assert_eq!((found.app, found.op), ("acme", 7), "{n} segments");
            // One segment more, or one less, or an empty one past the end:
            // nothing.
            for other in [
                format!("{path}/x"),
                format!("{path}/"),
                path.rsplit_once('/').unwrap().0.to_owned(),
            ] {
                assert_eq!(table.route(Method::Get, &other), None, "{other}");
            }
        }
        // A path far longer than any route, with a dot segment at its end.
        let long = format!("/api/v2/apps/acme/agents{}", "/a".repeat(40));
        assert_eq!(route("GET", &format!("{long}/..")), None);
        assert_eq!(route("GET", &long), None);
    }

    #[test]
    fn placeholders_take_only_unreserved_characters() {
        for id in ["a1", "A-b_c.d~e", "..x", "x..", "...", "~"] {
            let path = format!("/api/v2/apps/acme/agents/{id}");
            assert!(route("GET", &path).is_some(), "{path}");
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
            (route("get", "/{app}"), "one of GET"),
            (route("FETCH", "/{app}"), "one of GET"),
            (route("GET", "/{app}/a%2f"), "literal segment"),
        ] {
            let error = check(&entry).unwrap_err();
            assert!(error.why.contains(why), "{error}");
        }
    }
}
