//! What an admin may do: the four roles and the one rule that says, for
//! an action on a part of the store, allowed, forbidden or hidden.
//!
//! | role | its apps' scopes, keys, audit | other apps | platform settings | the status, the whole trail |
//! |---|---|---|---|---|
//! | `admin` | read, change | read, change | read, change | read |
//! | `app-admin` of APPS | read, change | hidden | forbidden | forbidden |
//! | `app-viewer` of APPS | read | hidden | forbidden | forbidden |
//! | `auditor` | read | read | read | read |
//!
//! "Hidden" is answered as if the app did not exist (404), so an app's
//! admins cannot learn which other apps exist; "forbidden" is a 403 that
//! says why. The rule is pure: the admin doors resolve what a request
//! touches to an app (or the platform) and ask [`Role::may`].

use std::collections::BTreeSet;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::checks;
use crate::error::{Result, StoreError};

/// An admin token's (or a console session's) role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything.
    Admin,
    /// The scopes, keys and audit entries of these apps, to read and change.
    AppAdmin(BTreeSet<String>),
    /// The scopes, keys and audit entries of these apps, to read.
    AppViewer(BTreeSet<String>),
    /// Everything, to read.
    Auditor,
}

/// Reading or changing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A read: a page, a list, the status.
    Read,
    /// A change: create, update, delete, issue, rotate, revoke, swap.
    Change,
}

/// What a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    /// The scopes, keys and audit entries of one app.
    App(&'a str),
    /// Platform-wide state: limits, operations, routes, the policy, the
    /// fleet, admin tokens, the status and the whole audit trail.
    Platform,
}

/// Why a role may not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Answered as "no such app" (404): the role has no part in it.
    Hidden,
    /// Answered 403, with this reason in words.
    Forbidden(String),
}

impl Role {
    /// Whether this role may take `action` on `part`.
    pub fn may(&self, action: Action, part: Part<'_>) -> std::result::Result<(), Refusal> {
        match (self, part) {
            (Self::Admin, _) => Ok(()),
            (Self::Auditor, _) if action == Action::Read => Ok(()),
            (Self::Auditor, _) => Err(Refusal::Forbidden(
                "an auditor reads everything and changes nothing".to_owned(),
            )),
            (Self::AppAdmin(apps) | Self::AppViewer(apps), Part::App(app))
                if !apps.contains(app) =>
            {
                Err(Refusal::Hidden)
            }
            (Self::AppAdmin(_), Part::App(_)) => Ok(()),
            (Self::AppViewer(_), Part::App(_)) if action == Action::Read => Ok(()),
            (Self::AppViewer(_), Part::App(app)) => Err(Refusal::Forbidden(format!(
                "an app-viewer of `{app}` reads its scopes and keys and changes nothing"
            ))),
            (Self::AppAdmin(_) | Self::AppViewer(_), Part::Platform) => {
                Err(Refusal::Forbidden(format!(
                    "platform-wide settings (limits, operations, routes, the policy, the fleet, \
                     admin tokens, the status) are for admins; {} may use only its apps",
                    self.noun()
                )))
            }
        }
    }

    /// Whether this role sees `app` at all (lists show only those).
    pub fn sees(&self, app: &str) -> bool {
        self.may(Action::Read, Part::App(app)).is_ok()
    }

    /// Whether this role may change anything of `app`.
    pub fn changes(&self, app: &str) -> bool {
        self.may(Action::Change, Part::App(app)).is_ok()
    }

    /// The one role a user in several groups holds: the strongest of
    /// `roles`, in the order admin, app-admin, auditor, app-viewer; an
    /// app role covers the apps of every group that gives it. `None` if
    /// `roles` is empty.
    pub fn strongest<'a>(roles: impl IntoIterator<Item = &'a Role>) -> Option<Role> {
        let mut best: Option<Role> = None;
        let rank = |role: &Role| match role {
            Self::Admin => 3,
            Self::AppAdmin(_) => 2,
            Self::Auditor => 1,
            Self::AppViewer(_) => 0,
        };
        for role in roles {
            best = Some(match (best, role) {
                (None, role) => role.clone(),
                (Some(Self::AppAdmin(mut mine)), Self::AppAdmin(more))
                | (Some(Self::AppViewer(mut mine)), Self::AppViewer(more)) => {
                    mine.extend(more.iter().cloned());
                    if matches!(role, Self::AppAdmin(_)) {
                        Self::AppAdmin(mine)
                    } else {
                        Self::AppViewer(mine)
                    }
                }
                (Some(held), role) if rank(role) > rank(&held) => role.clone(),
                (Some(held), _) => held,
            });
        }
        best
    }

    /// The apps this role is limited to; `None` for every app.
    pub fn apps(&self) -> Option<&BTreeSet<String>> {
        match self {
            Self::AppAdmin(apps) | Self::AppViewer(apps) => Some(apps),
            Self::Admin | Self::Auditor => None,
        }
    }

    /// The role's name: `admin`, `app-admin`, `app-viewer` or `auditor`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::AppAdmin(_) => "app-admin",
            Self::AppViewer(_) => "app-viewer",
            Self::Auditor => "auditor",
        }
    }

    /// As said to people: `an admin`, `an app-admin of acme, globex`.
    pub fn noun(&self) -> String {
        match self.apps() {
            Some(apps) => format!(
                "an {} of {}",
                self.name(),
                apps.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            None => format!("an {}", self.name()),
        }
    }

    /// A role from its name and, for the app roles, its apps (each a
    /// valid app name; at least one).
    pub fn new(name: &str, apps: impl IntoIterator<Item = String>) -> Result<Self> {
        let apps: BTreeSet<String> = apps.into_iter().collect();
        for app in &apps {
            checks::name("app", app)?;
        }
        let invalid = |why: &str| StoreError::InvalidRole(why.to_owned());
        match name {
            "admin" | "auditor" if !apps.is_empty() => Err(invalid(&format!(
                "the role `{name}` covers every app; give apps only with app-admin or app-viewer"
            ))),
            "admin" => Ok(Self::Admin),
            "auditor" => Ok(Self::Auditor),
            "app-admin" | "app-viewer" if apps.is_empty() => Err(invalid(&format!(
                "the role `{name}` needs the apps it covers (--app APP, once per app)"
            ))),
            "app-admin" => Ok(Self::AppAdmin(apps)),
            "app-viewer" => Ok(Self::AppViewer(apps)),
            _ => Err(invalid(
                "a role is one of admin, app-admin, app-viewer and auditor",
            )),
        }
    }
}

/// As stored and shown: `admin`, `auditor`, `app-admin:acme,globex`.
impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        if let Some(apps) = self.apps() {
            let mut separator = ':';
            for app in apps {
                write!(f, "{separator}{app}")?;
                separator = ',';
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Role {
    type Err = StoreError;

    fn from_str(stored: &str) -> Result<Self> {
        let (name, apps) = stored.split_once(':').unwrap_or((stored, ""));
        Self::new(
            name,
            apps.split(',')
                .filter(|app| !app.is_empty())
                .map(str::to_owned),
        )
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut role = serializer.serialize_struct("Role", 2)?;
        role.serialize_field("role", self.name())?;
        role.serialize_field("apps", &self.apps())?;
        role.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn each_role_reads_and_changes_what_the_table_says() {
        use Action::{Change, Read};
        use Part::{App, Platform};
        let app_admin = Role::AppAdmin(apps(&["acme"]));
        let app_viewer = Role::AppViewer(apps(&["acme"]));
        let hidden = Err(Refusal::Hidden);
        let cells: [(&Role, Action, Part, bool); 16] = [
            (&Role::Admin, Change, App("globex"), true),
            (&Role::Admin, Change, Platform, true),
            (&Role::Auditor, Read, App("globex"), true),
            (&Role::Auditor, Read, Platform, true),
            (&Role::Auditor, Change, App("acme"), false),
            (&Role::Auditor, Change, Platform, false),
            (&app_admin, Read, App("acme"), true),
            (&app_admin, Change, App("acme"), true),
            (&app_admin, Read, Platform, false),
            (&app_admin, Change, Platform, false),
            (&app_viewer, Read, App("acme"), true),
            (&app_viewer, Change, App("acme"), false),
            (&app_viewer, Read, Platform, false),
            (&app_viewer, Change, Platform, false),
            (&Role::Admin, Read, App("acme"), true),
            (&Role::Auditor, Read, App("acme"), true),
        ];
        for (role, action, part, allowed) in cells {
            let verdict = role.may(action, part);
            assert_eq!(verdict.is_ok(), allowed, "{role} {action:?} {part:?}");
            if !allowed {
                assert!(matches!(verdict, Err(Refusal::Forbidden(_))));
            }
        }
        for role in [&app_admin, &app_viewer] {
            assert_eq!(role.may(Read, App("globex")), hidden);
            assert_eq!(role.may(Change, App("globex")), hidden);
            assert!(!role.sees("globex"));
            assert!(role.sees("acme"));
        }
    }

    #[test]
    fn a_user_in_several_groups_holds_the_strongest_role_with_the_apps_of_all() {
        let acme = Role::AppAdmin(apps(&["acme"]));
        let globex = Role::AppAdmin(apps(&["globex"]));
        let viewer = Role::AppViewer(apps(&["initech"]));
        assert_eq!(Role::strongest([]), None);
        assert_eq!(
            Role::strongest([&acme, &globex]),
            Some(Role::AppAdmin(apps(&["acme", "globex"])))
        );
        assert_eq!(Role::strongest([&viewer, &acme]), Some(acme.clone()));
        assert_eq!(Role::strongest([&acme, &Role::Auditor]), Some(acme.clone()));
        assert_eq!(
            Role::strongest([&viewer, &Role::Auditor]),
            Some(Role::Auditor)
        );
        assert_eq!(
            Role::strongest([&acme, &Role::Admin, &viewer]),
            Some(Role::Admin)
        );
    }

    #[test]
    fn a_role_round_trips_through_its_stored_form() {
        for text in [
            "admin",
            "auditor",
            "app-admin:acme,globex",
            "app-viewer:acme",
        ] {
            let role: Role = text.parse().unwrap();
            assert_eq!(role.to_string(), text);
        }
        let role = Role::new("app-admin", ["globex".into(), "acme".into()]).unwrap();
        assert_eq!(role.to_string(), "app-admin:acme,globex");
        assert_eq!(role.noun(), "an app-admin of acme, globex");
    }

    #[test]
    fn a_malformed_role_is_refused_in_words() {
        for (text, says) in [
            ("owner", "one of admin, app-admin"),
            ("app-admin", "needs the apps"),
            ("app-viewer:", "needs the apps"),
            ("admin:acme", "covers every app"),
            ("app-admin:ac me", "app"),
        ] {
            let error = text.parse::<Role>().unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
