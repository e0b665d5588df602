//! The admin console, the way admins use it: the product's flow in a real
//! headless Chromium against a real `keyscope serve` (sign in, create a
//! scope, Manage Keys, New API Key, read it once, use it, edit, revoke),
//! every page checked by axe-core and photographed; and its defences over
//! plain HTTP: sessions, CSRF, sign-out, revoked tokens, headers, errors in
//! words (a database outage on a real PostgreSQL among them).

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::fleet::Fleet;
use crate::pg::Cluster;
use crate::support::{Sandbox, Server, wait_until};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A named admin token made by the CLI.
pub(crate) fn admin_token(sandbox: &Sandbox, name: &str) -> String {
    sandbox.json(["admin", "token", "create", "--name", name])["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn decide(server: &Server, key: &str, op: &str) -> Value {
    server.check(&json!({ "key": key, "app": "billing", "op": op }))
}

#[test]
fn the_products_flow_in_a_real_browser() {
    let sandbox = Sandbox::new();
    sandbox.keyscope(["store", "migrate"]).assert().success();
    let token = admin_token(&sandbox, "alice");
    let server = sandbox.serve(&[]);
    runtime().block_on(async {
        let browser = Browser::start().await;
        let at = |path: &str| server.admin_url(path);

        // The accessibility check can fail: a page with an unlabelled
        // field and an image without text has serious violations.
        browser
            .goto("data:text/html,<html lang=en><title>t</title><img src=x.png><input>")
            .await;
        let found: Vec<String> = browser
            .axe()
            .await
            .iter()
            .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(
            found.contains(&"image-alt".to_owned()) && found.contains(&"label".to_owned()),
            "{found:?}"
        );

        // Every page needs a session: the console sends a stranger to sign in.
        browser.goto(&at("/apps/billing")).await;
        assert_eq!(browser.path().await, "/sign-in");
        browser.check_page("sign-in").await;
        browser
            .fill("#token", "ksadmin_not-a-real-token-000000000000")
            .await;
        browser.submit("form.sign-in button").await;
        let refused = browser.text("p.error").await;
        assert!(
            refused.contains("That admin token is not valid"),
            "{refused}"
        );

        // 1. Sign in.
        browser.fill("#token", &token).await;
        browser.submit("form.sign-in button").await;
        assert_eq!(browser.path().await, "/");
        assert!(browser.text("form.sign-out").await.contains("alice"));
        browser.check_page("apps").await;

        // 2. Create a scope: pick the app, then the form.
        browser.fill("#app", "billing").await;
        browser.submit("form.inline button").await;
        assert_eq!(browser.path().await, "/apps/billing");
        browser.click_link("Create API scope").await;
        // The product's words for each level and permission.
        let form = browser.text("form.scope").await;
        for words in [
            "No access.",
            "View the list of agents and an agent's details.",
            "Also edit and update existing agents.",
            "Full administrative access, including creating and deleting agents.",
            "It may also create the session",
        ] {
            assert!(form.contains(words), "{words} not in {form}");
        }
        browser.check_page("scope-new").await;
        browser.fill("#name", "support-bot").await;
        browser.click("#agents-view").await;
        browser.click("#runtime-run").await;
        browser.submit("form.scope button[type=submit]").await;
        assert_eq!(browser.path().await, "/apps/billing");
        assert!(
            browser
                .text("p.done")
                .await
                .contains("The scope was created")
        );
        browser.check_page("scopes").await;

        // 3. Options, then Manage Keys; New API Key.
        browser.click("details.menu summary").await;
        browser.screenshot("scopes-options").await;
        browser.click_link("Manage Keys").await;
        let keys_path = browser.path().await;
        assert!(keys_path.ends_with("/keys"), "{keys_path}");
        browser.check_page("keys-empty").await;
        browser.click_link("New API Key").await;
        browser.check_page("key-new").await;
        browser.fill("#key-name", "ci-runner").await;
        browser.submit("form.new-key button[type=submit]").await;

        // 4. The key, shown once, with its warning and a copy button.
        let key = browser.text("#new-key").await.trim().to_owned();
        assert!(key.len() > 20, "{key}");
        assert!(
            browser
                .text("div.once")
                .await
                .contains("It will not be shown again")
        );
        assert!(
            browser
                .find("button.copy")
                .await
                .is_displayed()
                .await
                .unwrap()
        );
        browser.check_page("key-shown-once").await;
        browser.click("button.copy").await;
        let mut copied = String::new();
        for _ in 0..600 {
            copied = browser.text("#copy-status").await;
            if !copied.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            copied == "Copied." || copied.starts_with("Selected"),
            "{copied}"
        );

        // 5. The key works on /v1/check, for what the scope grants.
        let allowed = decide(&server, &key, "agents.list");
        assert_eq!(allowed["allow"], true, "{allowed}");
        let denied = decide(&server, &key, "agents.update");
        assert_eq!(denied["reason"], "insufficient-permission");

        // 6. Away from the one-time page, the key is nowhere: not in the
        // list's source or DOM, and not on a reload of it.
        browser.click_link("Done").await;
        assert_eq!(browser.path().await, keys_path);
        browser.client.refresh().await.unwrap();
        let (source, dom) = browser.source_and_dom().await;
        assert!(!source.contains(&key) && !dom.contains(&key));
        assert!(dom.contains("ci-runner") && dom.contains(&key[..8]));
        browser.check_page("keys").await;
        // Nor in any URL the browser went to.
        assert!(
            !browser
                .client
                .current_url()
                .await
                .unwrap()
                .as_str()
                .contains(&key)
        );

        // 7. Edit the scope's level: the next decision changes.
        browser.goto(&at("/apps/billing")).await;
        browser.click("details.menu summary").await;
        browser.click_link("Edit").await;
        browser.check_page("scope-edit").await;
        assert!(
            browser
                .find("#agents-view")
                .await
                .is_selected()
                .await
                .unwrap()
        );
        browser.click("#agents-edit").await;
        browser.submit("form.scope button[type=submit]").await;
        assert!(browser.text("p.done").await.contains("The scope was saved"));
        let now = decide(&server, &key, "agents.update");
        assert_eq!(now["allow"], true, "{now}");

        // Errors in words: a duplicate name, then the 21st scope of an app.
        browser.goto(&at("/apps/billing/new")).await;
        browser.fill("#name", "support-bot").await;
        browser.submit("form.scope button[type=submit]").await;
        assert!(
            browser
                .text("p.error")
                .await
                .contains("App billing already has a scope named support-bot."),
        );
        // Plain words: none of the CLI's Markdown.
        assert!(!browser.text("p.error").await.contains('`'));
        // The form keeps what was typed.
        let kept = browser.find("#name").await.prop("value").await.unwrap();
        assert_eq!(kept.as_deref(), Some("support-bot"));
        browser.check_page("scope-error").await;
        for n in 2..=20 {
            sandbox.scope("billing", &format!("filler-{n}"), "none", "");
        }
        browser.goto(&at("/apps/billing/new")).await;
        browser.fill("#name", "one-too-many").await;
        browser.submit("form.scope button[type=submit]").await;
        let error = browser.text("p.error").await;
        assert!(error.contains("20"), "{error}");

        // Rotate with a grace chosen on the page: a new key, shown once.
        browser.goto(&at(&keys_path)).await;
        browser.click_link("Rotate").await;
        browser.check_page("key-rotate").await;
        browser.click("#grace-1h").await;
        browser.submit("form.rotate button[type=submit]").await;
        let rotated = browser.text("#new-key").await.trim().to_owned();
        assert_ne!(rotated, key);
        assert!(browser.text("main").await.contains("stays valid until"));
        assert_eq!(decide(&server, &rotated, "agents.update")["allow"], true);
        assert_eq!(decide(&server, &key, "agents.update")["allow"], true);

        // 8. Revoke, after a confirmation: denied at once.
        browser.click_link("Done").await;
        // The key table tells the two apart by id: the old key names its
        // successor and its deadline, the new one the key it replaced.
        let (old_id, new_id) = {
            let keys = sandbox.json(["key", "list"]);
            let id_of = |secret: &str| {
                keys.as_array()
                    .unwrap()
                    .iter()
                    .find(|k| secret.starts_with(k["prefix"].as_str().unwrap()))
                    .map(|k| k["id"].as_u64().unwrap())
                    .unwrap()
            };
            (id_of(&key), id_of(&rotated))
        };
        assert_eq!(browser.path().await, keys_path);
        let old_row = browser.text(&format!("tr#key-{old_id}")).await;
        let new_row = browser.text(&format!("tr#key-{new_id}")).await;
        assert!(
            old_row.contains(&format!("#{old_id}"))
                && old_row.contains(&format!("Replaced by #{new_id} · valid until")),
            "{old_row}"
        );
        assert!(
            new_row.contains(&format!("#{new_id}"))
                && new_row.contains(&format!("Active · replaces #{old_id}")),
            "{new_row}"
        );
        browser.check_page("keys-rotated").await;
        browser.submit("a[aria-label='Revoke ci-runner']").await;
        browser.check_page("key-revoke").await;
        assert!(browser.text("main").await.contains("cannot be undone"));
        browser.submit("form.revoke button.danger").await;
        assert!(browser.text("p.done").await.contains("The key was revoked"));
        let revoked = decide(&server, &rotated, "agents.list");
        assert_eq!(revoked["reason"], "revoked-key", "{revoked}");

        // The other pages.
        browser.click_link("Audit trail").await;
        let audit = browser.text("main").await;
        assert!(audit.contains("The trail verifies"), "{audit}");
        for action in [
            "scope.create",
            "scope.update",
            "key.create",
            "key.rotate",
            "key.revoke",
        ] {
            assert!(audit.contains(action), "{action} not in {audit}");
        }
        assert!(audit.contains("admin:alice"));
        // Targets by name, with the id beside it.
        assert!(audit.contains("scope billing/support-bot · #"), "{audit}");
        assert!(audit.contains("key ci-runner · #"), "{audit}");
        assert!(
            !audit.contains("key:") && !audit.contains("scope:"),
            "{audit}"
        );
        assert!(!audit.contains(&key) && !audit.contains(&rotated));
        browser.check_page("audit").await;

        browser.click_link("Live policy").await;
        let policy = browser.text("main").await;
        let (code, status) = server.admin("GET", "/admin/status", None);
        assert_eq!(code, 200, "{status}");
        assert!(
            policy.contains(status["module"]["digest"].as_str().unwrap()),
            "{policy}"
        );
        assert!(policy.contains("Swap history"));
        browser.check_page("policy").await;

        browser.click_link("Fleet").await;
        assert!(browser.text("main").await.contains("Bundles are off"));
        browser.check_page("fleet").await;

        browser.click_link("Try a request").await;
        browser.check_page("try").await;
        browser.fill("#try-key", &rotated).await;
        browser.fill("#try-method", "GET").await;
        browser.fill("#try-path", "/v1/apps/billing/agents").await;
        browser.submit("form.try button[type=submit]").await;
        let result = browser.text("section.result").await;
        assert!(
            result.contains("Denied") && result.contains("revoked-key"),
            "{result}"
        );
        // The key typed in is not sent back.
        let (source, _) = browser.source_and_dom().await;
        assert!(!source.contains(&rotated));
        browser.check_page("try-result").await;

        // Delete asks whether to revoke the scope's keys: without them
        // revoked, a scope with a live key stays, and the page says why.
        sandbox.scope("ops", "old-bot", "view", "");
        let (_, old_key) = sandbox.key("ops/old-bot", "legacy");
        let check_ops =
            |key: &str| server.check(&json!({ "key": key, "app": "ops", "op": "agents.list" }));
        browser.goto(&at("/apps/ops")).await;
        browser
            .click("details.menu summary[aria-label='Options for old-bot']")
            .await;
        let menu = "details.menu[open]";
        assert!(browser.text(menu).await.contains("Delete"));
        browser
            .client
            .find(fantoccini::Locator::Css(menu))
            .await
            .unwrap()
            .find(fantoccini::Locator::LinkText("Delete"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let confirm = browser.text("main").await;
        assert!(confirm.contains("Also revoke its 1 live key"), "{confirm}");
        browser.check_page("scope-delete").await;
        browser.submit("form.delete button.danger").await;
        let refused = browser.text("p.error").await;
        assert!(refused.contains("still has 1 live key"), "{refused}");
        assert_eq!(check_ops(&old_key)["allow"], true);
        browser.click("#revoke-keys").await;
        browser.submit("form.delete button.danger").await;
        assert!(
            browser
                .text("p.done")
                .await
                .contains("The scope was deleted")
        );
        assert!(!browser.text("main").await.contains("old-bot"));
        assert_eq!(check_ops(&old_key)["reason"], "revoked-key");

        // The keyboard alone: the first Tab reaches "Skip to content"; a
        // scope's Options open with Enter, and Manage Keys follows.
        browser.goto(&at("/apps/billing")).await;
        let tab = "\u{E004}";
        let enter = "\u{E007}";
        browser.find("body").await.send_keys(tab).await.unwrap();
        let first = browser.client.active_element().await.unwrap();
        assert_eq!(first.text().await.unwrap(), "Skip to content");
        let summary = browser
            .find("details.menu summary[aria-label='Options for support-bot']")
            .await;
        summary.send_keys(enter).await.unwrap();
        browser.find("details.menu[open]").await;
        let mut focused = String::new();
        for _ in 0..3 {
            let active = browser.client.active_element().await.unwrap();
            active.send_keys(tab).await.unwrap();
            focused = browser
                .client
                .active_element()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if focused == "Manage Keys" {
                break;
            }
        }
        assert_eq!(focused, "Manage Keys");
        let link = browser.client.active_element().await.unwrap();
        browser.mark().await;
        link.send_keys(enter).await.unwrap();
        browser.wait_for_new_page().await;
        assert_eq!(browser.path().await, keys_path);

        // Sign out: the session is over.
        browser.submit("form.sign-out button").await;
        assert_eq!(browser.path().await, "/sign-in");
        assert!(browser.text("main").await.contains("You are signed out"));
        browser.goto(&at("/audit")).await;
        assert_eq!(browser.path().await, "/sign-in");

        browser.close().await;
    });
}

#[test]
fn the_dark_theme_follows_the_system_and_passes_axe_too() {
    let sandbox = Sandbox::new();
    sandbox.scope("billing", "support-bot", "edit", "run,document-upload");
    let (_, key) = sandbox.key("billing/support-bot", "ci-runner");
    let token = admin_token(&sandbox, "alice");
    let server = sandbox.serve(&[]);
    assert_eq!(decide(&server, &key, "agents.list")["allow"], true);
    runtime().block_on(async {
        let browser = Browser::start_dark().await;
        browser.goto(&server.admin_url("/sign-in")).await;
        let background = browser
            .client
            .execute(
                "return getComputedStyle(document.body).backgroundColor;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(background, "rgb(17, 20, 24)", "not the dark theme");
        browser.check_page("dark-sign-in").await;
        browser.fill("#token", &token).await;
        browser.submit("form.sign-in button").await;
        browser.goto(&server.admin_url("/apps/billing")).await;
        browser.check_page("dark-scopes").await;
        browser
            .goto(&server.admin_url("/apps/billing/scopes/1/keys"))
            .await;
        browser.check_page("dark-keys").await;
        browser
            .goto(&server.admin_url("/apps/billing/scopes/1/keys/new"))
            .await;
        browser.fill("#key-name", "second").await;
        browser.submit("form.new-key button[type=submit]").await;
        browser.check_page("dark-key-shown-once").await;
        browser.goto(&server.admin_url("/audit")).await;
        browser.check_page("dark-audit").await;
        browser.close().await;
    });
}

/// A browser's side of the console over plain HTTP, redirects not followed:
/// for what a browser would never send (a form without its CSRF token, an
/// old cookie), and for what the server must answer to it.
pub(crate) struct Http {
    agent: ureq::Agent,
    base: String,
    cookies: Vec<(String, String)>,
}

/// An answer: status, `Location`, `Set-Cookie`s and the body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) location: String,
    set_cookies: Vec<String>,
    headers: ureq::http::HeaderMap,
    pub(crate) body: String,
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the hidden field `name` in a page.
fn hidden(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    Some(body[start..].split('"').next()?.to_owned())
}

impl Http {
    fn new(server: &Server) -> Self {
        Self::at(server.admin_url(""))
    }

    /// A browser of the console at `base` (`http://HOST:PORT`).
    pub(crate) fn at(base: String) -> Self {
        Http {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(std::time::Duration::from_secs(30)))
                .build()
                .into(),
            base,
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn send(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Answer {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        let body = form
            .map(|fields| {
                fields
                    .iter()
                    .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                    .collect::<Vec<_>>()
                    .join("&")
            })
            .unwrap_or_default();
        if form.is_some() {
            request = request.header("content-type", "application/x-www-form-urlencoded");
        }
        let mut response = self.agent.run(request.body(body).unwrap()).unwrap();
        let headers = response.headers().clone();
        let set_cookies: Vec<String> = headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for cookie in &set_cookies {
            let (pair, attributes) = cookie.split_once(';').unwrap_or((cookie, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(k, _)| k != name);
            if !attributes.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        Answer {
            status: response.status().as_u16(),
            location: headers
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
            set_cookies,
            body: response.body_mut().read_to_string().unwrap_or_default(),
            headers,
        }
    }

    pub(crate) fn get(&mut self, path: &str) -> Answer {
        self.send("GET", path, None)
    }

    pub(crate) fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.send("POST", path, Some(form))
    }

    /// A page that must answer 200; its body.
    pub(crate) fn page(&mut self, path: &str) -> String {
        let answer = self.get(path);
        assert_eq!(answer.status, 200, "GET {path}: {answer:?}");
        answer.body
    }

    /// The same browser (its cookies) on another console at `base`, as a
    /// load balancer would send it.
    pub(crate) fn moved_to(&self, base: String) -> Self {
        let mut moved = Self::at(base);
        moved.cookies = self.cookies.clone();
        moved
    }

    /// Signs out through the header's form.
    pub(crate) fn sign_out(&mut self) -> Answer {
        let csrf = self.csrf();
        self.post("/sign-out", &[("csrf", &csrf)])
    }

    /// Signs in with `token` through the sign-in form; the answer.
    pub(crate) fn sign_in(&mut self, token: &str) -> Answer {
        let page = self.get("/sign-in");
        let check = hidden(&page.body, "check").unwrap();
        self.post("/sign-in", &[("token", token), ("check", &check)])
    }

    /// Posts the sign-in form while holding a live session (a browser
    /// would be sent home from the form; a script need not be).
    pub(crate) fn sign_in_over_session(&mut self, token: &str) -> Answer {
        let session = self
            .cookies
            .iter()
            .find(|(name, _)| name == "keyscope_session")
            .cloned();
        self.cookies.retain(|(name, _)| name != "keyscope_session");
        let page = self.get("/sign-in");
        let check = hidden(&page.body, "check").unwrap();
        self.cookies.extend(session);
        self.post("/sign-in", &[("token", token), ("check", &check)])
    }

    /// This session's CSRF token, from a page's forms.
    pub(crate) fn csrf(&mut self) -> String {
        let page = self.get("/");
        hidden(&page.body, "csrf").unwrap_or_else(|| panic!("no CSRF field: {page:?}"))
    }
}

#[test]
fn every_page_and_form_needs_a_session_and_every_form_its_csrf_token() {
    let sandbox = Sandbox::new();
    sandbox.scope("billing", "seed", "none", "");
    let token = admin_token(&sandbox, "alice");
    let server = sandbox.serve(&[]);
    let (key_id, _) = sandbox.key("billing/seed", "ci");
    let scopes = || sandbox.json(["scope", "list"]).as_array().unwrap().len();

    // Without a session: every page and every action is sent to sign in,
    // and nothing changes.
    let mut stranger = Http::new(&server);
    let pages = [
        "/",
        "/apps/billing",
        "/apps/billing/new",
        "/apps/billing/scopes/1",
        "/apps/billing/scopes/1/delete",
        "/apps/billing/scopes/1/keys",
        "/apps/billing/scopes/1/keys/new",
        "/keys/1/revoke",
        "/keys/1/rotate",
        "/audit",
        "/policy",
        "/fleet",
        "/try",
    ];
    for page in pages {
        let answer = stranger.get(page);
        assert_eq!(
            (answer.status, answer.location.as_str()),
            (303, "/sign-in"),
            "{page}"
        );
    }
    let revoke = format!("/keys/{key_id}/revoke");
    let rotate = format!("/keys/{key_id}/rotate");
    let actions: [(&str, &[(&str, &str)]); 7] = [
        ("/apps/billing", &[("name", "x"), ("agents", "full")]),
        (
            "/apps/billing/scopes/1",
            &[("name", "x"), ("agents", "full")],
        ),
        ("/apps/billing/scopes/1/delete", &[("revoke_keys", "true")]),
        ("/apps/billing/scopes/1/keys", &[("name", "stolen")]),
        (&revoke, &[]),
        (&rotate, &[("grace", "0")]),
        ("/sign-out", &[]),
    ];
    for (path, form) in actions {
        let answer = stranger.post(path, form);
        assert_eq!(
            (answer.status, answer.location.as_str()),
            (303, "/sign-in"),
            "{path}"
        );
    }
    assert_eq!(scopes(), 1);
    let keys = sandbox.json(["key", "list"]);
    assert_eq!(keys[0]["status"], "active", "{keys}");

    // A forged session cookie is no session.
    stranger.cookies = vec![("keyscope_session".into(), "a".repeat(43))];
    assert_eq!(stranger.get("/").location, "/sign-in?why=expired");

    // The sign-in form needs its own check (a double-submit cookie).
    let mut admin = Http::new(&server);
    let refused = admin.post("/sign-in", &[("token", &token), ("check", "guess")]);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.body.contains("did not come from this console"));
    // A wrong token: 401, in words, and never echoed.
    let wrong = "ksadmin_wrong-token-00000000000000000000";
    let refused = admin.sign_in(wrong);
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("That admin token is not valid"));
    assert!(!refused.body.contains(wrong));

    // Signed in: the cookie is HttpOnly and SameSite=Strict (no Secure on
    // plain HTTP over loopback), and holds no token.
    let signed_in = admin.sign_in(&token);
    assert_eq!((signed_in.status, signed_in.location.as_str()), (303, "/"));
    let session = signed_in
        .set_cookies
        .iter()
        .find(|c| c.starts_with("keyscope_session="))
        .unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert!(
        !session.contains("Secure") && !session.contains(&token),
        "{session}"
    );
    let csrf = admin.csrf();

    // Every page: a strict CSP, no caching, no framing.
    for page in pages {
        let answer = admin.get(page);
        assert_eq!(answer.status, 200, "{page}: {}", answer.body);
        let csp = answer.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(answer.headers["cache-control"], "no-store");
        assert_eq!(answer.headers["x-frame-options"], "DENY");
        assert!(
            !answer.body.contains("<script>"),
            "{page} has an inline script"
        );
        assert!(
            !answer.body.contains(" style="),
            "{page} has an inline style"
        );
    }

    // A path or an Open box naming no possible app shows none of its text
    // (no words of an attacker's on a console page, no secret in a URL).
    let lure = "/apps/ACCOUNT%20LOCKED%3A%20sign%20in%20at%20evil.example";
    let answer = admin.get(lure);
    assert_eq!(answer.status, 404, "{answer:?}");
    assert!(!answer.body.contains("LOCKED") && !answer.body.contains("evil"));
    let (_, pasted) = sandbox.key("billing/seed", "pasted");
    let answer = admin.get(&format!("/apps?app={pasted}"));
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.location.is_empty() && !answer.body.contains(&pasted));

    // A form without the CSRF token, or with another's, changes nothing.
    let form = [("name", "forged"), ("agents", "full")];
    let refused = admin.post("/apps/billing", &form);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.body.contains("nothing was changed"));
    let mut other = Http::new(&server);
    other.sign_in(&token);
    let others = other.csrf();
    assert_ne!(others, csrf);
    let refused = admin.post(
        "/apps/billing",
        &[("csrf", &others), ("name", "forged"), ("agents", "full")],
    );
    assert_eq!(refused.status, 403);
    let refused = admin.post(&format!("/keys/{key_id}/revoke"), &[("csrf", "")]);
    assert_eq!(refused.status, 403);
    assert_eq!(scopes(), 1);
    assert_eq!(sandbox.json(["key", "list"])[0]["status"], "active");
    // A form from another origin, even with the token, changes nothing.
    let mut request = ureq::http::Request::builder()
        .method("POST")
        .uri(server.admin_url("/apps/billing"))
        .header("cookie", admin.cookie_header())
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded");
    request = request.header("x-test", "cross-origin");
    let answer = admin
        .agent
        .run(
            request
                .body(format!("csrf={csrf}&name=forged&agents=full"))
                .unwrap(),
        )
        .unwrap();
    assert_eq!(answer.status().as_u16(), 403);
    assert_eq!(scopes(), 1);
    // An oversized form is refused in words.
    let huge = "x".repeat(20_000);
    let refused = admin.post(
        "/apps/billing",
        &[("csrf", &csrf), ("name", &huge), ("agents", "none")],
    );
    assert_eq!(refused.status, 413);
    assert!(
        refused.body.contains("The form is too large"),
        "{}",
        refused.body
    );
    // With it, the change is made, as alice.
    let made = admin.post(
        "/apps/billing",
        &[("csrf", &csrf), ("name", "by-form"), ("agents", "view")],
    );
    assert_eq!(
        (made.status, made.location.as_str()),
        (303, "/apps/billing?done=created")
    );
    assert_eq!(scopes(), 2);
    let audit = sandbox.json(["audit", "list"]);
    let last = audit.as_array().unwrap().last().unwrap();
    assert_eq!(last["actor"], "admin:alice", "{last}");

    // Sign-out ends this session, not the other.
    let out = admin.post("/sign-out", &[("csrf", &csrf)]);
    assert_eq!(out.location, "/sign-in?why=signed-out");
    assert!(
        out.set_cookies
            .iter()
            .any(|c| c.starts_with("keyscope_session=;") && c.contains("Max-Age=0"))
    );
    let old = session
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    admin.cookies = vec![("keyscope_session".into(), old)];
    assert_eq!(admin.get("/").location, "/sign-in?why=expired");
    assert_eq!(
        admin
            .post(
                "/apps/billing",
                &[("csrf", &csrf), ("name", "after"), ("agents", "none")]
            )
            .location,
        "/sign-in?why=expired"
    );
    assert_eq!(other.get("/audit").status, 200);

    // A revoked admin token ends its sessions at their next request.
    sandbox
        .keyscope(["admin", "token", "revoke", "alice"])
        .assert()
        .success();
    assert_eq!(other.get("/audit").location, "/sign-in?why=revoked");
    assert_eq!(other.get("/audit").location, "/sign-in?why=expired");
    assert_eq!(other.sign_in(&token).status, 401);
    assert_eq!(scopes(), 2);

    // The admin API keeps its own ways beside the console.
    assert_eq!(server.admin("GET", "/admin/status", None).0, 200);
    let unknown = Http::new(&server).get("/admin/nothing");
    assert_eq!(unknown.status, 401);

    // Failed sign-ins share the admin API's limit per address: at most ten,
    // then 429 for a wrong token, while a valid one still signs in.
    let mut guesser = Http::new(&server);
    let mut tries = 0;
    let limited = loop {
        tries += 1;
        let answer = guesser.sign_in(wrong);
        if answer.status == 429 {
            break answer;
        }
        assert_eq!(answer.status, 401);
        assert!(tries <= 10, "no limit after {tries} wrong tokens");
    };
    assert_eq!(limited.headers["retry-after"], "6");
    assert!(limited.body.contains("Too many failed sign-ins"));
    assert_eq!(guesser.sign_in(wrong).status, 429);
    let bob = admin_token(&sandbox, "bob");
    let signed_in = guesser.sign_in(&bob);
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.location, "/");
}

#[test]
fn a_database_outage_is_shown_in_words_and_changes_nothing() {
    let cluster = Cluster::start();
    let sandbox = Sandbox::on_postgres(&cluster);
    sandbox.scope("billing", "seed", "view", "");
    let (_, key) = sandbox.key("billing/seed", "ci");
    let token = admin_token(&sandbox, "alice");
    let server = sandbox.serve(&[]);
    let mut admin = Http::new(&server);
    admin.sign_in(&token);
    let csrf = admin.csrf();

    cluster.stop_server();
    wait_until(30, "/readyz reporting the store stale", || {
        server.ready()["store"]["stale"] == true
    });
    // A page that reads the store says why it cannot, in words.
    let page = admin.get("/apps/billing");
    assert_eq!(page.status, 503, "{}", page.body);
    assert!(page.body.contains("is unavailable"), "{}", page.body);
    // A change is refused, in words, and said to have changed nothing.
    let refused = admin.post(
        "/apps/billing",
        &[
            ("csrf", &csrf),
            ("name", "during-outage"),
            ("agents", "none"),
        ],
    );
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.contains("nothing was changed"),
        "{}",
        refused.body
    );
    // What needs no store still shows, and decisions go on (fail static).
    assert_eq!(admin.get("/policy").status, 200);
    assert_eq!(decide(&server, &key, "agents.list")["allow"], true);

    cluster.start_server();
    wait_until(60, "the console changing things again", || {
        admin
            .post(
                "/apps/billing",
                &[
                    ("csrf", &csrf),
                    ("name", "after-outage"),
                    ("agents", "none"),
                ],
            )
            .status
            == 303
    });
    let names: Vec<Value> = sandbox
        .json(["scope", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|scope| scope["name"].clone())
        .collect();
    assert_eq!(names, [json!("after-outage"), json!("seed")]);
}

#[test]
fn the_fleet_page_shows_the_gateways_and_a_gateways_console_holds_no_store() {
    let fleet = Fleet::new();
    fleet.sandbox.scope("acme", "s", "view", "");
    let token = admin_token(&fleet.sandbox, "alice");
    let control_plane = fleet.control_plane(&[]);
    let caches = fleet.sandbox.path("caches");
    let url = control_plane.admin_url("/v1/bundle");
    let (_gateway_sandbox, gateway) = fleet.gateway(&url, "gw-east", &caches, &[]);

    let mut admin = Http::new(&control_plane);
    admin.sign_in(&token);
    wait_until(30, "the gateway on the fleet page", || {
        admin.get("/fleet").body.contains("gw-east")
    });
    let page = admin.get("/fleet").body;
    assert!(page.contains("Published revision"), "{page}");
    assert!(page.contains("<td>Yes</td>"), "{page}");

    // A gateway's console signs in with its one token and shows what it
    // holds, and says where scopes and keys are managed.
    let mut at_gateway = Http::new(&gateway);
    assert_eq!(at_gateway.sign_in(&gateway.admin_token).status, 303);
    assert_eq!(at_gateway.get("/policy").status, 200);
    let apps = at_gateway.get("/");
    assert_eq!(apps.status, 409);
    assert!(apps.body.contains("holds no store"), "{}", apps.body);
}
