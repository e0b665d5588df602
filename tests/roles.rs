//! Admins per app: the four roles through the admin API (a matrix of roles
//! × endpoints × own app or another, every cell asserted), the refusals in
//! the audit trail, the CLI that makes role tokens, and console sessions
//! kept in the store: shared by two control planes and surviving a restart.

use serde_json::{Value, json};

use crate::console::Http;
use crate::support::{Sandbox, Server};

/// A role token made through the CLI, as an operator would.
fn token(sandbox: &Sandbox, name: &str, role: &[&str]) -> String {
    let mut args = vec!["admin", "token", "create", "--name", name];
    args.extend_from_slice(role);
    sandbox.json(args)["token"].as_str().unwrap().to_owned()
}

/// The admin, an app-admin and an app-viewer of `acme`, and an auditor.
struct Roles {
    admin: String,
    app_admin: String,
    app_viewer: String,
    auditor: String,
}

impl Roles {
    fn make(sandbox: &Sandbox, server: &Server) -> Self {
        Roles {
            admin: server.admin_token.clone(),
            app_admin: token(
                sandbox,
                "acme-admin",
                &["--role", "app-admin", "--app", "acme"],
            ),
            app_viewer: token(
                sandbox,
                "acme-viewer",
                &["--role", "app-viewer", "--app", "acme"],
            ),
            auditor: token(sandbox, "auditor", &["--role", "auditor"]),
        }
    }

    fn each(&self) -> [(&'static str, &str); 4] {
        [
            ("admin", &self.admin),
            ("app-admin", &self.app_admin),
            ("app-viewer", &self.app_viewer),
            ("auditor", &self.auditor),
        ]
    }
}

/// One request of the matrix; `{own}`/`{other}` in its path or body name
/// a fresh thing of `acme` or of `globex` made for the cell.
struct Cell {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    /// The status for admin, app-admin, app-viewer, auditor.
    expect: [u16; 4],
}

fn cell(
    what: &'static str,
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    expect: [u16; 4],
) -> Cell {
    Cell {
        what,
        method,
        path,
        body,
        expect,
    }
}

#[test]
fn every_role_gets_what_the_roles_table_says_on_every_endpoint_for_its_app_and_another() {
    let sandbox = Sandbox::new();
    sandbox.scope("acme", "seed", "view", "run");
    sandbox.scope("globex", "seed", "view", "run");
    sandbox
        .keyscope(["limits", "set", "--scopes-per-app", "1000"])
        .assert()
        .success();
    let server = sandbox.serve(&[]);
    let roles = Roles::make(&sandbox, &server);
    let mut fresh = 0;
    // Every scope's app, deleted ones too.
    let scope_apps = std::cell::RefCell::new(std::collections::HashMap::new());
    for scope in sandbox.json(["scope", "list"]).as_array().unwrap() {
        scope_apps.borrow_mut().insert(
            scope["id"].as_u64().unwrap(),
            scope["app"].as_str().unwrap().to_owned(),
        );
    }
    // A fresh scope (with one key) of `app`, for a cell that changes it.
    let mut fresh_scope = |app: &str| {
        fresh += 1;
        let scope = sandbox.scope(app, &format!("s{fresh}"), "view", "run");
        scope_apps.borrow_mut().insert(scope, app.to_owned());
        let (key, _) = sandbox.key(&scope.to_string(), "k");
        (scope, key)
    };
    let cells = [
        cell(
            "list scopes",
            "GET",
            "/admin/scopes",
            None,
            [200, 200, 200, 200],
        ),
        cell(
            "list an app's scopes",
            "GET",
            "/admin/scopes?app={app}",
            None,
            [200, 200, 200, 200],
        ),
        cell(
            "show a scope",
            "GET",
            "/admin/scopes/{scope}",
            None,
            [200, 200, 200, 200],
        ),
        cell(
            "list keys",
            "GET",
            "/admin/keys",
            None,
            [200, 200, 200, 200],
        ),
        cell(
            "list a scope's keys",
            "GET",
            "/admin/keys?scope={scope}",
            None,
            [200, 200, 200, 200],
        ),
        cell(
            "read the audit trail",
            "GET",
            "/admin/audit",
            None,
            [200, 200, 200, 200],
        ),
        cell(
            "create a scope",
            "POST",
            "/admin/scopes",
            Some(json!({"app": "{app}", "name": "new-{n}", "agents": "view"})),
            [201, 201, 403, 403],
        ),
        cell(
            "update a scope",
            "PATCH",
            "/admin/scopes/{scope}",
            Some(json!({"agents": "edit"})),
            [200, 200, 403, 403],
        ),
        cell(
            "delete a scope",
            "DELETE",
            "/admin/scopes/{scope}?revoke_keys=true",
            None,
            [200, 200, 403, 403],
        ),
        cell(
            "issue a key",
            "POST",
            "/admin/keys",
            Some(json!({"scope": "{scope}", "name": "new-{n}"})),
            [201, 201, 403, 403],
        ),
        cell(
            "revoke a key",
            "POST",
            "/admin/keys/{key}/revoke",
            None,
            [200, 200, 403, 403],
        ),
        cell(
            "rotate a key",
            "POST",
            "/admin/keys/{key}/rotate",
            Some(json!({"grace": "0"})),
            [201, 201, 403, 403],
        ),
    ];
    // Platform-wide: the same for every app.
    let platform = [
        cell(
            "read the status",
            "GET",
            "/admin/status",
            None,
            [200, 403, 403, 200],
        ),
        cell(
            "list admin tokens",
            "GET",
            "/admin/tokens",
            None,
            [200, 403, 403, 200],
        ),
        cell(
            "swap the policy",
            "POST",
            "/admin/policy",
            None,
            [400, 403, 403, 403],
        ),
        // This server publishes no bundles: 404 "bundles-off" for those who
        // may ask.
        cell(
            "read the fleet",
            "GET",
            "/admin/fleet",
            None,
            [404, 403, 403, 404],
        ),
        cell(
            "poll a bundle",
            "GET",
            "/v1/bundle",
            None,
            [404, 403, 403, 404],
        ),
    ];
    let mut failures = Vec::new();
    let mut run = |cell: &Cell, whose: &str, app: &str, expect: [u16; 4]| {
        for (i, (role, token)) in roles.each().into_iter().enumerate() {
            let (scope, key) = fresh_scope(app);
            let fill = |text: &str| {
                text.replace("{app}", app)
                    .replace("{scope}", &scope.to_string())
                    .replace("{key}", &key.to_string())
                    .replace("{n}", &scope.to_string())
            };
            let path = fill(cell.path);
            let body = cell
                .body
                .as_ref()
                .map(|body| serde_json::from_str(&fill(&body.to_string())).unwrap());
            let (status, answer) = server.admin_as(token, cell.method, &path, body);
            if status != expect[i] {
                failures.push(format!(
                    "{role} × {} × {whose}: {} {path} gave {status}, expected {}: {answer}",
                    cell.what, cell.method, expect[i]
                ));
            }
            if status == 403 {
                let message = answer["error"]["message"].as_str().unwrap_or_default();
                if !message.contains(" may not do this: ") {
                    failures.push(format!(
                        "{role} × {}: 403 without a reason: {answer}",
                        cell.what
                    ));
                }
            }
        }
    };
    for cell in &cells {
        run(cell, "own app", "acme", cell.expect);
        // Another app: hidden from the app roles, as if it did not exist.
        // (A list with nothing of an app in its request holds only the
        // role's apps, which is checked below.)
        if cell.path.contains('{') || cell.body.is_some() {
            let [admin, _, _, auditor] = cell.expect;
            run(cell, "other app", "globex", [admin, 404, 404, auditor]);
        }
    }
    for cell in &platform {
        run(cell, "platform", "acme", cell.expect);
    }
    assert!(
        failures.is_empty(),
        "{} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    for (role, token) in roles.each() {
        let (_, scopes) = server.admin_as(token, "GET", "/admin/scopes", None);
        let apps: std::collections::BTreeSet<&str> = scopes
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["app"].as_str().unwrap())
            .collect();
        let expected: &[&str] = if role.starts_with("app-") {
            &["acme"]
        } else {
            &["acme", "globex"]
        };
        assert_eq!(
            apps.into_iter().collect::<Vec<_>>(),
            expected,
            "{role}'s scopes"
        );
        let (_, keys) = server.admin_as(token, "GET", "/admin/keys", None);
        let (_, all) = server.admin("GET", "/admin/keys", None);
        // The scopes of keys made through the API in the cells: their apps.
        for key in all.as_array().unwrap() {
            let scope = key["scope_id"].as_u64().unwrap();
            assert!(
                scope_apps.borrow().contains_key(&scope),
                "key {key} of an unknown scope"
            );
        }
        let of_acme: Vec<&Value> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| scope_apps.borrow()[&k["scope_id"].as_u64().unwrap()] == "acme")
            .collect();
        let seen = keys.as_array().unwrap().len();
        if role.starts_with("app-") {
            assert_eq!(
                keys.as_array().unwrap().iter().collect::<Vec<_>>(),
                of_acme,
                "{role} sees exactly acme's keys, of deleted scopes too"
            );
        } else {
            assert_eq!(seen, all.as_array().unwrap().len(), "{role} sees every key");
        }
    }
}

#[test]
fn another_apps_things_are_answered_as_things_that_do_not_exist_and_refusals_are_audited() {
    let sandbox = Sandbox::new();
    sandbox.scope("acme", "bot", "view", "run");
    let globex = sandbox.scope("globex", "bot", "view", "run");
    let (globex_key, _) = sandbox.key("globex/bot", "ci");
    let server = sandbox.serve(&[]);
    let roles = Roles::make(&sandbox, &server);

    // The same answer, word for word but the id, for another app's scope
    // and for a scope that does not exist.
    let message = |path: &str| {
        let (status, body) = server.admin_as(&roles.app_admin, "GET", path, None);
        (status, body["error"].clone())
    };
    let (hidden_status, hidden) = message(&format!("/admin/scopes/{globex}"));
    let (missing_status, missing) = message("/admin/scopes/987654");
    assert_eq!((hidden_status, missing_status), (404, 404));
    assert_eq!(
        hidden["message"]
            .as_str()
            .unwrap()
            .replace(&globex.to_string(), "ID"),
        missing["message"].as_str().unwrap().replace("987654", "ID")
    );
    assert_eq!(hidden["kind"], missing["kind"]);
    let (_, by_path) = server.admin_as(&roles.app_admin, "GET", "/admin/scopes/globex/bot", None);
    let (_, no_path) = server.admin_as(&roles.app_admin, "GET", "/admin/scopes/initech/bot", None);
    assert_eq!(
        by_path["error"]["message"]
            .as_str()
            .unwrap()
            .replace("globex", "APP"),
        no_path["error"]["message"]
            .as_str()
            .unwrap()
            .replace("initech", "APP"),
    );

    // Refused changes: another app's key, and a viewer's change of its own.
    let (status, _) = server.admin_as(
        &roles.app_admin,
        "POST",
        &format!("/admin/keys/{globex_key}/revoke"),
        None,
    );
    assert_eq!(status, 404);
    let (status, refused) = server.admin_as(
        &roles.app_viewer,
        "POST",
        "/admin/scopes",
        Some(json!({"app": "acme", "name": "sneaky"})),
    );
    assert_eq!(status, 403);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("An app-viewer of acme may not do this"),
        "{refused}"
    );
    let (status, _) = server.admin_as(&roles.auditor, "POST", "/admin/policy", None);
    assert_eq!(status, 403);
    // Through the console too: a form posted at another app's key is
    // answered as one at a key that does not exist, and audited.
    let mut console = Http::at(server.admin_url(""));
    console.sign_in(&roles.app_admin);
    let csrf = console.csrf();
    let forged = console.post(&format!("/keys/{globex_key}/revoke"), &[("csrf", &csrf)]);
    assert_eq!(forged.status, 404, "{}", forged.body);
    // An admin of acme and of an app nobody else may know of, refused on
    // globex: the entry filed under globex names neither.
    let secret_app = token(
        &sandbox,
        "two-apps",
        &[
            "--role",
            "app-viewer",
            "--app",
            "acme",
            "--app",
            "secret-merger",
        ],
    );
    let (status, _) = server.admin_as(
        &secret_app,
        "POST",
        &format!("/admin/keys/{globex_key}/rotate"),
        Some(json!({"grace": "0"})),
    );
    assert_eq!(status, 404);
    // Nothing changed: the key still decides.
    assert_eq!(
        sandbox.json(["key", "list"]).as_array().unwrap()[0]["status"],
        "active"
    );

    let (_, trail) = server.admin("GET", "/admin/audit", None);
    assert_eq!(trail["verified"], true);
    let refusals: Vec<(String, String, String)> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("refused."))
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        refusals,
        [
            (
                "admin:acme-admin".into(),
                "refused.key.revoke".into(),
                format!("key:{globex_key}")
            ),
            (
                "admin:acme-viewer".into(),
                "refused.scope.create".into(),
                "app:acme".into()
            ),
            (
                "admin:auditor".into(),
                "refused.policy.swap".into(),
                "platform".into()
            ),
            (
                "admin:acme-admin".into(),
                "refused.key.revoke".into(),
                format!("key:{globex_key}")
            ),
            (
                "admin:two-apps".into(),
                "refused.key.rotate".into(),
                format!("key:{globex_key}")
            ),
        ]
    );
    // The app nobody else may know of is named by the token's creation
    // only (which only roles over every app read), never by the refusal.
    let naming: Vec<&Value> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.to_string().contains("secret-merger"))
        .collect();
    assert_eq!(naming.len(), 1, "{naming:?}");
    assert_eq!(naming[0]["action"], "admin-token.create");

    // An app role reads its apps' entries only: the acme-admin sees the
    // viewer's refused attempt on acme, not its own on globex's key, nor
    // the token's creation.
    let (_, theirs) = server.admin_as(&roles.app_admin, "GET", "/admin/audit", None);
    let targets: Vec<&str> = theirs["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    assert!(!targets.is_empty());
    assert!(
        targets.iter().all(|t| *t == "app:acme" || *t == "scope:1"),
        "{targets:?}"
    );
    // The auditor reads the whole trail.
    let (_, whole) = server.admin_as(&roles.auditor, "GET", "/admin/audit", None);
    assert_eq!(whole["entries"], trail["entries"]);
}

#[test]
fn the_cli_makes_role_tokens_lists_their_roles_and_refuses_a_role_without_its_apps() {
    let sandbox = Sandbox::new();
    let made = sandbox.json([
        "admin",
        "token",
        "create",
        "--name",
        "bob",
        "--role",
        "app-admin",
        "--app",
        "globex",
        "--app",
        "acme",
    ]);
    assert_eq!(made["role"], "app-admin");
    assert_eq!(made["apps"], json!(["acme", "globex"]));
    token(&sandbox, "carol", &["--role", "auditor"]);
    token(&sandbox, "dave", &[]);
    let listed = sandbox.json(["admin", "token", "list"]);
    let roles: Vec<(String, Value, Value)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["role"].clone(),
                t["apps"].clone(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("bob".into(), json!("app-admin"), json!(["acme", "globex"])),
            ("carol".into(), json!("auditor"), Value::Null),
            ("dave".into(), json!("admin"), Value::Null),
        ]
    );
    let text = sandbox
        .keyscope(["admin", "token", "list"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("app-admin of acme, globex"), "{text}");

    for (args, says) in [
        (&["--role", "app-viewer"][..], "needs the apps it covers"),
        (
            &["--role", "admin", "--app", "acme"][..],
            "covers every app",
        ),
        (&["--role", "owner"][..], "owner"),
        (&["--role", "app-admin", "--app", "bad app"][..], "app"),
    ] {
        let output = sandbox
            .keyscope(["admin", "token", "create", "--name", "eve"])
            .args(args)
            .assert()
            .failure()
            .get_output()
            .clone();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(
        sandbox
            .json(["admin", "token", "list"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn a_console_session_works_on_every_control_plane_sharing_the_store_and_survives_a_restart() {
    let sandbox = Sandbox::new();
    sandbox.scope("acme", "bot", "view", "run");
    let mut first = sandbox.serve(&[]);
    let second = sandbox.serve(&[]);
    let viewer = token(
        &sandbox,
        "acme-viewer",
        &["--role", "app-viewer", "--app", "acme"],
    );

    let mut browser = Http::at(first.admin_url(""));
    let signed_in = browser.sign_in(&viewer);
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let home = browser.page("/");
    assert!(home.contains("app-viewer of acme"), "{home}");
    // Signing in again over a live session replaces it: the old id is dead.
    let mut old = browser.moved_to(first.admin_url(""));
    assert_eq!(browser.sign_in_over_session(&viewer).status, 303);
    assert_eq!(old.get("/").location, "/sign-in?why=expired");
    assert!(browser.page("/").contains("app-viewer of acme"));

    // The same cookie on the second control plane: signed in there too.
    let mut elsewhere = browser.moved_to(second.admin_url(""));
    let page = elsewhere.page("/apps/acme");
    assert!(page.contains("API scopes of acme"), "{page}");
    assert!(
        !page.contains("Create API scope"),
        "a viewer gets no create button"
    );

    // A restart of the first signs nobody out.
    first.stop();
    let first = sandbox.serve(&[]);
    let mut back = browser.moved_to(first.admin_url(""));
    assert!(back.page("/apps/acme").contains("API scopes of acme"));

    // Signing out on one ends the session on every one.
    back.sign_out();
    let answer = elsewhere.get("/apps/acme");
    assert_eq!(
        (answer.status, answer.location.as_str()),
        (303, "/sign-in?why=expired")
    );

    // Revoking a token ends its sessions everywhere, from the next request.
    let mut again = Http::at(first.admin_url(""));
    again.sign_in(&viewer);
    let mut there = again.moved_to(second.admin_url(""));
    assert!(there.page("/").contains("acme"));
    sandbox
        .keyscope(["admin", "token", "revoke", "acme-viewer"])
        .assert()
        .success();
    let answer = there.get("/");
    assert_eq!(answer.status, 303);
    assert!(
        answer.location.starts_with("/sign-in"),
        "{}",
        answer.location
    );
}

#[test]
fn in_chromium_an_app_viewer_sees_no_create_button_and_a_forged_post_gets_403() {
    let sandbox = Sandbox::new();
    let acme = sandbox.scope("acme", "bot", "view", "run");
    sandbox.key("acme/bot", "ci");
    let server = sandbox.serve(&[]);
    let viewer = token(
        &sandbox,
        "acme-viewer",
        &["--role", "app-viewer", "--app", "acme"],
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let browser = crate::browser::Browser::start().await;
        browser.goto(&server.admin_url("/sign-in")).await;
        browser.fill("#token", &viewer).await;
        browser.submit("form.sign-in button").await;
        assert!(
            browser
                .text("form.sign-out")
                .await
                .contains("app-viewer of acme")
        );
        // Only its app, and no way to pick another; no platform pages.
        let nav = browser.text("header nav").await;
        assert!(
            !nav.contains("Live policy") && !nav.contains("Fleet"),
            "{nav}"
        );
        browser.click_link("acme").await;
        let (page, _) = browser.source_and_dom().await;
        for action in ["Create API scope", ">Edit<", ">Delete<", "Manage Keys"] {
            assert!(!page.contains(action), "a viewer sees {action}");
        }
        browser.check_page("viewer-scopes").await;
        browser.click("details.menu summary").await;
        browser.click_link("View Keys").await;
        let (page, _) = browser.source_and_dom().await;
        for action in ["New API Key", ">Rotate<", ">Revoke<"] {
            assert!(!page.contains(action), "a viewer sees {action}");
        }
        assert!(page.contains("ci"), "the viewer reads the keys");
        // The trail, without a count of other apps' entries.
        browser.click_link("Audit trail").await;
        assert_eq!(
            browser.text("p.done").await,
            "The trail verifies: every entry is intact and in order."
        );
        // The form pages themselves are refused.
        browser
            .goto(&server.admin_url(&format!("/apps/acme/scopes/{acme}/keys/new")))
            .await;
        assert!(browser.text("p.error").await.contains("may not do this"));
        browser.close().await;
    });

    // A POST the viewer forges with its own session and CSRF token: 403 in
    // words, nothing made, the attempt audited.
    let mut http = Http::at(server.admin_url(""));
    http.sign_in(&viewer);
    let csrf = http.csrf();
    let forged = http.post(
        &format!("/apps/acme/scopes/{acme}/keys"),
        &[("csrf", &csrf), ("name", "forged")],
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(forged.body.contains("may not do this"), "{}", forged.body);
    assert_eq!(sandbox.json(["key", "list"]).as_array().unwrap().len(), 1);
    let (_, trail) = server.admin("GET", "/admin/audit", None);
    assert!(
        trail["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "admin:acme-viewer" && e["action"] == "refused.key.create"),
        "{trail}"
    );
}
