//! The rules every backend enforces the same way, before or inside its
//! transaction: names, not-afters, limits, and what may be removed.

use keyscope_policy::RouteEntry;

use crate::error::{Result, StoreError as Error};
use crate::records::{ApiKey, LAST_NOT_AFTER_MS, Lifetime, MAX_ROTATION_GRACE_MS, Quotas, Scope};

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
    // What keyscope's secrets start with: a secret pasted as a name would
    // be kept in every listing and, for good, in the audit trail.
    let secret_shaped = [
        keyscope_keys::KEY_PREFIX,
        keyscope_keys::admin_token::ADMIN_PREFIX,
        keyscope_keys::admin_token::FLEET_PREFIX,
    ]
    .iter()
    .any(|prefix| value.starts_with(prefix));
    if secret_shaped {
        return Err(Error::invalid(
            what,
            "ks…",
            "a name may not start with ks_, ksadmin_ or ksfleet_, as keyscope's keys and \
             tokens do: it looks like a secret pasted in the wrong place",
        ));
    }
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

/// A new key's not-after under `lifetime`, judged against `now_ms`, the
/// one clock reading its creation is stamped with: `None` for a key
/// valid until revoked.
pub(crate) fn not_after(lifetime: Lifetime, now_ms: u64) -> Result<Option<i64>> {
    let not_after = match lifetime {
        Lifetime::Unlimited => return Ok(None),
        Lifetime::For(ms) => now_ms.saturating_add(ms.get() - 1),
        Lifetime::Until(at) if at <= now_ms => {
            return Err(Error::invalid(
                "not-after",
                &at.to_string(),
                "it is not in the future, so the key would be expired already",
            ));
        }
        Lifetime::Until(at) => at,
    };
    if not_after > LAST_NOT_AFTER_MS {
        return Err(Error::invalid(
            "not-after",
            &not_after.to_string(),
            "a key's deadline is at most 9999-12-31T23:59:59.999Z",
        ));
    }
    i64::try_from(not_after)
        .map(Some)
        .map_err(|_| Error::invalid("not-after", &not_after.to_string(), "too far in the future"))
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

/// A rotation's grace: at most [`MAX_ROTATION_GRACE_MS`].
pub(crate) fn grace(grace_ms: u64) -> Result<()> {
    if grace_ms > MAX_ROTATION_GRACE_MS {
        return Err(Error::invalid(
            "grace",
            &format!("{grace_ms}ms"),
            "a rotation's grace is at most 7 days (7d)",
        ));
    }
    Ok(())
}

/// Whether `key` may be rotated at `now_ms`; if so, its new not-after:
/// the last millisecond of the grace, or its own not-after if that comes
/// first. A grace of 0 makes it `now_ms - 1`: the old key is denied for
/// every request stamped at or after the rotation.
pub(crate) fn rotatable(key: &ApiKey, grace_ms: u64, now_ms: u64) -> Result<i64> {
    let refuse = |why: String| Error::NotRotatable { id: key.id, why };
    if let Some(at) = &key.revoked_at {
        return Err(refuse(format!("it was revoked at {at}")));
    }
    if let (Some(at), successor) = (&key.rotated_at, key.successor_id) {
        let to = successor.map_or(String::new(), |id| format!(" to key {id}"));
        return Err(refuse(format!(
            "it was already rotated{to} at {at}; rotate the new key instead"
        )));
    }
    if key.not_after_ms.is_some_and(|deadline| deadline < now_ms) {
        return Err(refuse(format!(
            "it expired at {}",
            key.expires_at.as_deref().unwrap_or("?")
        )));
    }
    let end = now_ms.saturating_add(grace_ms).saturating_sub(1);
    let deadline = key.not_after_ms.map_or(end, |own| own.min(end));
    i64::try_from(deadline).map_err(|_| refuse("its deadline is out of range".to_owned()))
}

/// The lifetime of the key that replaces `old` in a rotation at `now_ms`:
/// as long as `old`'s own, counted from the rotation, so a key issued for
/// 30 days is replaced by one valid for 30 days from its issue. A key
/// valid until revoked is replaced by one valid until revoked.
pub(crate) fn successor_lifetime(old: &ApiKey, now_ms: u64) -> Lifetime {
    let Some(not_after) = old.not_after_ms else {
        return Lifetime::Unlimited;
    };
    match crate::audit::parse_timestamp(&old.created_at) {
        // `For(d)` makes the not-after `now + d - 1`: `not_after - created`
        // is `d - 1`.
        Some(created) => Lifetime::For(
            std::num::NonZeroU64::new(not_after.saturating_sub(created).saturating_add(1))
                .unwrap_or(std::num::NonZeroU64::MIN),
        ),
        // A creation time this store did not write: keep the deadline.
        None => Lifetime::Until(not_after.max(now_ms.saturating_add(1))),
    }
    .capped(now_ms)
}

/// What a token's name is called in errors.
pub(crate) fn token_name(kind: crate::TokenKind) -> &'static str {
    match kind {
        crate::TokenKind::Admin => "admin token name",
        crate::TokenKind::Fleet => "gateway name",
    }
}

/// A token whose digest was ever stored, even revoked, is never taken again.
pub(crate) fn token_reused() -> Error {
    Error::TokenReused
}
