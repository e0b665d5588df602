//! The create and edit form of an API scope: the Agents level as a labelled
//! choice and the runtime permissions as checkboxes, each with what it
//! allows in the product's words.

use keyscope_policy::{AgentsLevel, RuntimePermission, RuntimeSet};
use keyscope_store::Scope;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{csrf, error_box};
use super::session::SignedIn;

/// What each Agents level allows, in the product's words.
pub(super) fn agents_description(level: AgentsLevel) -> &'static str {
    match level {
        AgentsLevel::None => "No access.",
        AgentsLevel::View => "View the list of agents and an agent's details.",
        AgentsLevel::Edit => "Also edit and update existing agents.",
        AgentsLevel::Full => "Full administrative access, including creating and deleting agents.",
    }
}

pub(super) fn agents_label(level: AgentsLevel) -> &'static str {
    match level {
        AgentsLevel::None => "None",
        AgentsLevel::View => "View",
        AgentsLevel::Edit => "Edit",
        AgentsLevel::Full => "Full",
    }
}

/// Each runtime permission's label and what it allows.
pub(super) fn runtime_text(permission: RuntimePermission) -> (&'static str, &'static str) {
    match permission {
        RuntimePermission::Run => (
            "Run",
            "Execute an agent run. It may also create the session it runs in, so Run needs no \
             Session create as well.",
        ),
        RuntimePermission::SessionCreate => ("Session create", "Create a session."),
        RuntimePermission::SessionTerminate => ("Session terminate", "Terminate a session."),
        RuntimePermission::DocumentUpload => ("Document upload", "Upload documents to a session."),
    }
}

pub(super) fn runtime_summary(runtime: RuntimeSet) -> String {
    let names: Vec<&str> = runtime.iter().map(|p| runtime_text(p).0).collect();
    if names.is_empty() {
        "None".to_owned()
    } else {
        names.join(", ")
    }
}

/// A scope form as submitted.
#[derive(Deserialize, Default)]
pub(super) struct ScopeForm {
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) agents: String,
    #[serde(default)]
    run: Option<String>,
    #[serde(default, rename = "session-create")]
    session_create: Option<String>,
    #[serde(default, rename = "session-terminate")]
    session_terminate: Option<String>,
    #[serde(default, rename = "document-upload")]
    document_upload: Option<String>,
}

impl ScopeForm {
    /// A new scope's form: no name, no access.
    pub(super) fn blank() -> Self {
        Self {
            agents: AgentsLevel::None.as_str().to_owned(),
            ..Self::default()
        }
    }

    pub(super) fn of(scope: &Scope) -> Self {
        let has = |p| scope.runtime.contains(p).then(|| "on".to_owned());
        Self {
            name: scope.name.clone(),
            agents: scope.agents.as_str().to_owned(),
            run: has(RuntimePermission::Run),
            session_create: has(RuntimePermission::SessionCreate),
            session_terminate: has(RuntimePermission::SessionTerminate),
            document_upload: has(RuntimePermission::DocumentUpload),
        }
    }

    pub(super) fn runtime(&self) -> RuntimeSet {
        [
            (RuntimePermission::Run, &self.run),
            (RuntimePermission::SessionCreate, &self.session_create),
            (RuntimePermission::SessionTerminate, &self.session_terminate),
            (RuntimePermission::DocumentUpload, &self.document_upload),
        ]
        .into_iter()
        .filter(|(_, on)| on.is_some())
        .map(|(permission, _)| permission)
        .collect()
    }

    fn checked(&self, permission: RuntimePermission) -> bool {
        self.runtime().contains(permission)
    }

    /// The name and level, checked; an error in words.
    pub(super) fn parsed(&self) -> Result<(String, AgentsLevel), String> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err("Give the scope a name.".to_owned());
        }
        let agents = self
            .agents
            .parse()
            .map_err(|_| "Choose an Agents level: None, View, Edit or Full.".to_owned())?;
        Ok((name.to_owned(), agents))
    }
}

/// The create and edit form. `action` is where it posts.
pub(super) fn scope_form(
    signed_in: &SignedIn,
    action: &str,
    form: &ScopeForm,
    error: Option<&str>,
    submit: &str,
) -> Markup {
    html! {
        @if let Some(error) = error { (error_box(error)) }
        form.scope method="post" action=(action) {
            (csrf(signed_in))
            p.field {
                label for="name" { "Name" }
                input #name type="text" name="name" value=(form.name) required maxlength="200"
                    autocomplete="off";
            }
            fieldset {
                legend { "Agents" }
                p.hint { "Levels are cumulative: each includes the ones before it." }
                @for level in AgentsLevel::ALL {
                    @let id = format!("agents-{}", level.as_str());
                    div.choice {
                        input id=(id) type="radio" name="agents" value=(level.as_str())
                            checked[form.agents == level.as_str()]
                            aria-describedby={(id) "-hint"};
                        label for=(id) { (agents_label(level)) }
                        span.hint id={(id) "-hint"} { (agents_description(level)) }
                    }
                }
            }
            fieldset {
                legend { "Runtime permissions" }
                @for permission in RuntimePermission::ALL {
                    @let id = format!("runtime-{}", permission.as_str());
                    @let (label, description) = runtime_text(permission);
                    div.choice {
                        input id=(id) type="checkbox" name=(permission.as_str())
                            checked[form.checked(permission)]
                            aria-describedby={(id) "-hint"};
                        label for=(id) { (label) }
                        span.hint id={(id) "-hint"} { (description) }
                    }
                }
            }
            p.actions { button type="submit" { (submit) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_form_reads_its_checkboxes() {
        let form = ScopeForm {
            name: " support ".into(),
            agents: "edit".into(),
            run: Some("on".into()),
            document_upload: Some("on".into()),
            ..ScopeForm::default()
        };
        assert_eq!(form.runtime().to_string(), "run,document-upload");
        assert_eq!(
            form.parsed().ok(),
            Some(("support".to_owned(), AgentsLevel::Edit))
        );
        let bad = ScopeForm {
            name: "x".into(),
            agents: "admin".into(),
            ..ScopeForm::default()
        };
        assert!(
            bad.parsed()
                .unwrap_err()
                .contains("None, View, Edit or Full")
        );
    }
}
