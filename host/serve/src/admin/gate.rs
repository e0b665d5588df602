//! The one place every admin request passes through before it reads or
//! changes anything: the admin's role against what the request touches
//! ([`keyscope_store::roles`]). The admin API and the console both reach
//! the store only through [`Admin::read`](super::Admin::read) and
//! [`Admin::write`](super::Admin::write), which call [`gate`] first, and
//! ask [`Admin::allow`](super::Admin::allow) for what is not in the store
//! (the status, a policy swap).
//!
//! A refused change is recorded in the audit trail with its actor. A
//! request about an app outside the role's is answered as one about a
//! thing that does not exist, so that it reveals nothing.

use keyscope_store::roles::{Action, Part, Refusal};
use keyscope_store::{
    AnyStore as Store, Role, ScopeRef, Store as _, StoreError, audit::AuditEvent,
};

use super::{Access, Actor};

/// What a request touches, before the store says whose it is.
#[derive(Debug, Clone)]
pub enum Need {
    /// Platform-wide state: limits, operations, routes, the policy, the
    /// fleet, admin tokens, the status.
    Platform,
    /// The scopes and keys of one app, by name.
    App(String),
    /// A scope, and so its app.
    Scope(ScopeRef),
    /// A key, and so its scope's app.
    Key(u64),
    /// A list: any role may ask, and sees in it only its apps' entries.
    Listing,
}

impl Need {
    /// The audit target a refusal names.
    fn target(&self) -> String {
        match self {
            Self::Platform => "platform".to_owned(),
            Self::App(app) => format!("app:{app}"),
            Self::Scope(scope) => format!("scope:{scope}"),
            Self::Key(id) => format!("key:{id}"),
            Self::Listing => "list".to_owned(),
        }
    }

    /// What a role without a part in this is told: the not-found of the
    /// thing itself, word for word.
    fn hidden(&self) -> Access {
        match self {
            Self::Scope(scope) => Access::Store(StoreError::ScopeNotFound(
                keyscope_store::printable(&scope.to_string()),
            )),
            Self::Key(id) => Access::Store(StoreError::KeyNotFound(*id)),
            Self::App(app) => Access::Hidden(format!(
                "no app `{}` among the apps this admin may use",
                keyscope_store::printable(app)
            )),
            Self::Platform | Self::Listing => Access::Hidden("not found".to_owned()),
        }
    }
}

/// Whether `actor` may take `action` on what `need` touches; `store`
/// resolves a scope or a key to its app (a gateway has none: there every
/// actor is the admin of its one token). `what` names the attempted change
/// (`key.revoke`) for the audit trail.
pub(super) fn gate(
    store: Option<&mut Store>,
    actor: &Actor,
    action: Action,
    need: &Need,
    what: &str,
) -> Result<(), Access> {
    let (refusal, app) = match verdict(store.as_deref(), &actor.role, action, need) {
        Ok(()) => return Ok(()),
        Err(Verdict::Store(error)) => return Err(Access::Store(error)),
        Err(Verdict::Refused(refusal, app)) => (refusal, app),
    };
    if action == Action::Change
        && let Some(store) = store
    {
        // What the trail says names no app but the one touched: an app's
        // admins read the refusals filed under it, and must not learn of
        // the actor's other apps.
        let reason = match &refusal {
            Refusal::Forbidden(reason) => reason.clone(),
            Refusal::Hidden => "not among the apps of this role".to_owned(),
        };
        let event = AuditEvent::new(format!("refused.{what}"), need.target())
            .after(&serde_json::json!({ "reason": reason, "app": app, "role": actor.role.name() }));
        store.set_actor(&actor.name);
        // The refusal stands whether or not it could be recorded.
        if let Err(error) = store.record_event(event) {
            tracing::warn!(actor = %actor.name, %error, "a refused change could not be audited");
        }
    }
    Err(match refusal {
        Refusal::Hidden => need.hidden(),
        Refusal::Forbidden(reason) => Access::Forbidden(format!(
            "{} may not do this: {reason}",
            capitalised(&actor.role.noun())
        )),
    })
}

enum Verdict {
    Store(StoreError),
    /// Refused, and the app the request touched if it was found.
    Refused(Refusal, Option<String>),
}

fn verdict(store: Option<&Store>, role: &Role, action: Action, need: &Need) -> Result<(), Verdict> {
    let refused = |refusal, app: Option<&str>| Verdict::Refused(refusal, app.map(str::to_owned));
    // Roles over every app need no lookup: their answer is the same for
    // every part but the platform's, and an auditor's and an admin's are
    // the same for that too.
    if role.apps().is_none() || matches!(need, Need::Listing) {
        return role
            .may(action, Part::Platform)
            .or_else(|refusal| match need {
                Need::Listing if action == Action::Read => Ok(()),
                _ => Err(refused(refusal, None)),
            });
    }
    let app = match need {
        Need::Platform => {
            return role
                .may(action, Part::Platform)
                .map_err(|r| refused(r, None));
        }
        Need::App(app) => app.clone(),
        Need::Scope(ScopeRef::Path { app, .. }) => app.clone(),
        Need::Scope(scope) => match store.map(|store| store.scope(scope)) {
            Some(Ok(found)) => found.app,
            Some(Err(StoreError::ScopeNotFound(_))) | None => {
                return Err(refused(Refusal::Hidden, None));
            }
            Some(Err(error)) => return Err(Verdict::Store(error)),
        },
        Need::Key(id) => match store.map(|store| store.key_app(*id)) {
            Some(Ok(app)) => app,
            Some(Err(StoreError::KeyNotFound(_))) | None => {
                return Err(refused(Refusal::Hidden, None));
            }
            Some(Err(error)) => return Err(Verdict::Store(error)),
        },
        Need::Listing => return Ok(()),
    };
    role.may(action, Part::App(&app))
        .map_err(|refusal| refused(refusal, Some(&app)))
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
