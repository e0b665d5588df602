//! The admin console, the way admins use it: the product's flow in a real
//! headless Chromium against a real `keyscope serve` (sign in, create a
//! scope, Manage Keys, New API Key, read it once, use it, edit, revoke),
//! every page checked by axe-core and photographed; and its defences over
//! plain HTTP: sessions, CSRF, sign-out, revoked tokens, headers, errors in
//! words (a database outage on a real PostgreSQL among them).

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::support::{Sandbox, Server};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A named admin token made by the CLI.
fn admin_token(sandbox: &Sandbox, name: &str) -> String {
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
                .contains("already has a scope named `support-bot`"),
        );
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

        // Sign out: the session is over.
        browser.submit("form.sign-out button").await;
        assert_eq!(browser.path().await, "/sign-in");
        assert!(browser.text("main").await.contains("You are signed out"));
        browser.goto(&at("/audit")).await;
        assert_eq!(browser.path().await, "/sign-in");

        browser.close().await;
    });
}
