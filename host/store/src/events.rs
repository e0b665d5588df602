//! The audit trail's vocabulary: one constructor per kind of change, so
//! that both backends record a change with the same action, target and
//! records.

use keyscope_policy::RouteEntry;
use keyscope_policy::snapshot::OperationEntry;
use serde::Serialize;

use crate::audit::AuditEvent;
use crate::records::{ApiKey, Quotas, Scope, Token};

impl AuditEvent {
    fn maybe_before(self, record: Option<&impl Serialize>) -> Self {
        match record {
            Some(record) => self.before(record),
            None => self,
        }
    }

    pub(crate) fn scope_created(scope: &Scope) -> Self {
        Self::new("scope.create", format!("scope:{}", scope.id)).after(scope)
    }

    pub(crate) fn scope_updated(before: &Scope, after: &Scope) -> Self {
        Self::new("scope.update", format!("scope:{}", before.id))
            .before(before)
            .after(after)
    }

    pub(crate) fn scope_deleted(scope: &Scope, revoked: &[ApiKey]) -> Self {
        let revoked: Vec<u64> = revoked.iter().map(|key| key.id).collect();
        Self::new("scope.delete", format!("scope:{}", scope.id))
            .before(scope)
            .after(&serde_json::json!({ "revoked_keys": revoked }))
    }

    pub(crate) fn key_created(key: &ApiKey) -> Self {
        Self::new("key.create", format!("key:{}", key.id)).after(key)
    }

    pub(crate) fn key_revoked(before: &ApiKey, after: &ApiKey) -> Self {
        Self::new("key.revoke", format!("key:{}", before.id))
            .before(before)
            .after(after)
    }

    pub(crate) fn key_rotated(before: &ApiKey, after: &ApiKey, successor: &ApiKey) -> Self {
        Self::new("key.rotate", format!("key:{}", before.id))
            .before(before)
            .after(&serde_json::json!({ "old": after, "new": successor }))
    }

    pub(crate) fn limits_set(before: &Quotas, after: &Quotas) -> Self {
        Self::new("limits.set", "limits")
            .before(before)
            .after(after)
    }

    pub(crate) fn operation_set(before: Option<&OperationEntry>, after: &OperationEntry) -> Self {
        Self::new("operation.set", format!("operation:{}", after.name))
            .maybe_before(before)
            .after(after)
    }

    pub(crate) fn operation_removed(before: &OperationEntry) -> Self {
        Self::new("operation.remove", format!("operation:{}", before.name)).before(before)
    }

    pub(crate) fn route_set(before: Option<&RouteEntry>, after: &RouteEntry) -> Self {
        Self::new(
            "route.set",
            format!("route:{} {}", after.method, after.pattern),
        )
        .maybe_before(before)
        .after(after)
    }

    pub(crate) fn route_removed(method: &str, pattern: &str, before: Option<&RouteEntry>) -> Self {
        Self::new("route.remove", format!("route:{method} {pattern}")).maybe_before(before)
    }

    fn token_target(token: &Token) -> String {
        format!("{}:{}", token.kind.target(), token.name)
    }

    pub(crate) fn token_created(token: &Token) -> Self {
        Self::new(
            format!("{}.create", token.kind.target()),
            Self::token_target(token),
        )
        .after(token)
    }

    pub(crate) fn token_installed(before: Option<&Token>, token: &Token) -> Self {
        Self::new(
            format!("{}.install", token.kind.target()),
            Self::token_target(token),
        )
        .maybe_before(before)
        .after(token)
    }

    pub(crate) fn token_revoked(before: &Token, after: &Token) -> Self {
        Self::new(
            format!("{}.revoke", before.kind.target()),
            Self::token_target(before),
        )
        .before(before)
        .after(after)
    }
}
