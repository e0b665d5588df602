//! Route matching: any method and path, against the default table and
//! against a table of fuzzed patterns. Never a panic; a match only ever
//! names an app that is one plain segment of the path (unreserved
//! characters only), a path with an empty or dot segment never matches, and
//! through the default table (whose literals are all plain) every segment
//! of a matched path is plain: no `\`, `;`, `%`, space or tab.

#![no_main]

use arbitrary::Arbitrary;
use keyscope_policy::Method;
use keyscope_policy::routes::{RouteEntry, RouteTable, default_routes, is_plain_segment};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    method: String,
    path: String,
    patterns: Vec<(String, String)>,
}

fn check(table: &RouteTable, method: &str, path: &str, literals_plain: bool) {
    let Some(found) = table.route(Method::parse(method), path) else {
        return;
    };
    let clean = path.split(['?', '#']).next().unwrap_or_default();
    assert!(clean.starts_with('/'), "{path}");
    let segments: Vec<&str> = clean[1..].split('/').collect();
    assert!(
        segments.iter().all(|s| !matches!(*s, "" | "." | "..")),
        "{path} matched {found:?}"
    );
    assert!(segments.contains(&found.app), "{path}: app {}", found.app);
    assert!(is_plain_segment(found.app), "{path}: app {}", found.app);
    if literals_plain {
        assert!(
            segments.iter().all(|s| is_plain_segment(s)),
            "{path} matched {found:?} with a segment that is not plain"
        );
    }
}

fuzz_target!(|input: Input| {
    let table =
        RouteTable::parse(&default_routes(), |_| Some(0)).expect("the default table parses");
    check(&table, &input.method, &input.path, true);
    let entries: Vec<RouteEntry> = input
        .patterns
        .into_iter()
        .map(|(method, pattern)| RouteEntry {
            method,
            pattern,
            op: "agents.get".to_owned(),
        })
        .collect();
    if let Ok(fuzzed) = RouteTable::parse(&entries, |_| Some(0)) {
        check(&fuzzed, &input.method, &input.path, false);
    }
});
