//! The rules every backend enforces the same way, before or inside its
//! transaction: names, not-afters, limits, and what may be removed.

use keyscope_policy::RouteEntry;

use crate::error::{Result, StoreError as Error};
use crate::records::{Quotas, Scope};

/// Apps, scope names and key names: 1 to 64 characters from
/// `[A-Za-z0-9._-]`, starting with a letter or digit. No `/`, so `APP/NAME`
/// is unambiguous.
pub(crate) fn name(what: &'static str, value: &str) -> Result<()> {
    let first_ok = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && value.len() <= 64 {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            value,
            "use 1 to 64 characters from [A-Za-z0-9._-], starting with a letter or digit",
        ))
    }
}

/// A not-after for a new key: in the future, and storable.
pub(crate) fn not_after(not_after: u64) -> Result<i64> {
    let stored = i64::try_from(not_after).map_err(|_| {
        Error::invalid("not-after", &not_after.to_string(), "too far in the future")
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if not_after <= now {
        return Err(Error::invalid(
            "not-after",
            &not_after.to_string(),
            "it is not in the future, so the key would be expired already",
        ));
    }
    Ok(stored)
}

/// Limits of at least 1.
pub(crate) fn quotas(quotas: &Quotas) -> Result<()> {
    for (what, value) in [
        ("scopes per app", quotas.scopes_per_app),
        ("keys per scope", quotas.keys_per_scope),
    ] {
        if value == 0 {
            return Err(Error::invalid(
                "limit",
                &format!("{what} = 0"),
                "a limit must be at least 1",
            ));
        }
    }
    Ok(())
}

/// Room for one more scope in `app`, which has `live` scopes.
pub(crate) fn room_for_scope(app: &str, live: u32, quotas: &Quotas) -> Result<()> {
    if live >= quotas.scopes_per_app {
        return Err(Error::ScopeLimit {
            app: app.to_owned(),
            limit: quotas.scopes_per_app,
        });
    }
    Ok(())
}

/// Room for a key named `name` in `scope`, which has `live` keys,
/// `same_name` of them named so.
pub(crate) fn room_for_key(
    scope: &Scope,
    name: &str,
    live: u32,
    same_name: u32,
    quotas: &Quotas,
) -> Result<()> {
    if same_name > 0 {
        return Err(Error::DuplicateKey {
            scope: scope.path(),
            name: name.to_owned(),
        });
    }
    if live >= quotas.keys_per_scope {
        return Err(Error::KeyLimit {
            scope: scope.path(),
            limit: quotas.keys_per_scope,
        });
    }
    Ok(())
}

/// An operation may leave the catalogue only once no route names it.
pub(crate) fn unrouted(op: &str, routes: &[RouteEntry]) -> Result<()> {
    let routed: Vec<String> = routes
        .iter()
        .filter(|route| route.op == op)
        .map(|route| format!("`{} {}`", route.method, route.pattern))
        .collect();
    if routed.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(
        "operation",
        op,
        format!(
            "routes still name it ({}); remove them first with `keyscope route remove`",
            routed.join(", ")
        ),
    ))
}

/// A route, checked as the snapshot will check it.
pub(crate) fn route(method: &str, pattern: &str, op: &str) -> Result<RouteEntry> {
    let route = RouteEntry {
        method: method.to_owned(),
        pattern: pattern.to_owned(),
        op: op.to_owned(),
    };
    keyscope_policy::routes::check(&route).map_err(|e| Error::invalid("route", &e.route, e.why))?;
    Ok(route)
}

/// Errors for an operation a route names but the catalogue lacks, an
/// operation that is not there, and a route that is not there.
pub(crate) fn uncatalogued(op: &str) -> Error {
    Error::invalid(
        "operation",
        op,
        "it is not in the catalogue; add it with `keyscope op set`",
    )
}

pub(crate) fn no_operation(op: &str) -> Error {
    Error::invalid("operation", op, "it is not in the catalogue")
}

pub(crate) fn no_route(method: &str, pattern: &str) -> Error {
    Error::invalid(
        "route",
        &format!("{method} {pattern}"),
        "it is not in the route table",
    )
}
