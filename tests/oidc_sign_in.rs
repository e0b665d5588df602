//! Console sign-in through a real OpenID provider: `oidc-provider`, the
//! certified Node implementation (tests/oidc/provider.mjs), on loopback,
//! and a real Chromium. The role follows the user's groups; a tampered,
//! mis-addressed or expired ID token, a replayed callback and a user in
//! no mapped group are each refused in words; OIDC actors are audited.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::browser::Browser;
use crate::pg::free_port;
use crate::support::{Sandbox, Server, http_client};

const CLIENT_ID: &str = "keyscope-console";
const CLIENT_SECRET: &str = "the-test-client-secret-0123456789";

/// The provider process; killed on drop.
struct Provider {
    child: Child,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc")
}

impl Provider {
    fn start(redirect: &str) -> Self {
        use std::io::BufRead as _;
        let dir = provider_dir();
        if !dir.join("node_modules/oidc-provider").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status()
                .expect("npm, to install oidc-provider (tests/oidc)");
            assert!(status.success(), "npm ci in tests/oidc failed");
        }
        let port = free_port();
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("REDIRECT_URI", redirect)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node, to run the OpenID provider");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let said: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the provider did not start: {line:?}"));
        Provider {
            child,
            issuer: said["issuer"].as_str().unwrap().to_owned(),
        }
    }

    /// Spoils the ID tokens it issues from now on: `none`, `tamper`,
    /// `audience` or `expired`.
    fn spoil(&self, mode: &str) {
        http_client()
            .post(format!("{}/test/mode?to={mode}", self.issuer))
            .send_empty()
            .unwrap();
    }

    /// The last redirect back to the console, code and state in it.
    fn last_callback(&self) -> String {
        let answer: Value = http_client()
            .get(format!("{}/test/last-callback", self.issuer))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        answer["url"].as_str().unwrap().to_owned()
    }
}

/// A control plane whose console signs in through `provider`.
fn serve_with(sandbox: &Sandbox, admin_port: u16, provider: &Provider) -> Server {
    let secret = sandbox.path("oidc-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = sandbox.path("keyscope.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[console.oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
redirect_url = "http://127.0.0.1:{admin_port}/sign-in/oidc/callback"
name = "Test IdP"
claim = "groups"

[console.oidc.roles]
"keyscope-admins" = "admin"
"acme-admins" = "app-admin:acme"
"auditors" = "auditor"
"#,
            issuer = provider.issuer,
            secret = secret.display(),
        ),
    )
    .unwrap();
    let admin_listen = format!("127.0.0.1:{admin_port}");
    sandbox.serve(&[
        "--config",
        config.to_str().unwrap(),
        "--admin-listen",
        &admin_listen,
    ])
}

/// Signs in as `user` at the provider, from the console's sign-in page;
/// returns once the browser has left the provider.
async fn sign_in_as(browser: &Browser, server: &Server, user: &str) {
    browser.goto(&server.admin_url("/sign-in")).await;
    browser.click_link("Sign in with Test IdP").await;
    // The provider's own login form.
    browser.fill("input[name=login]", user).await;
    browser.fill("input[name=password]", "any").await;
    browser.submit("button[type=submit]").await;
    back_at_console(browser, server).await;
}

/// Waits, up to a generous deadline, until the browser is back at the
/// console: on its home page, or on a page that says why not.
async fn back_at_console(browser: &Browser, server: &Server) {
    let host = server.admin.to_string();
    browser
        .wait_until(
            &format!(
                "document.readyState === 'complete' && location.host === '{host}' \
                 && (location.pathname === '/' || document.querySelector('p.error') !== null)"
            ),
            "return to the console",
        )
        .await;
}

#[test]
fn the_console_signs_in_through_a_real_openid_provider_and_the_role_follows_the_group() {
    let sandbox = Sandbox::new();
    sandbox.scope("acme", "bot", "view", "run");
    sandbox.scope("globex", "bot", "view", "run");
    let admin_port = free_port();
    let provider = Provider::start(&format!(
        "http://127.0.0.1:{admin_port}/sign-in/oidc/callback"
    ));
    let server = serve_with(&sandbox, admin_port, &provider);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Bob is in acme-admins: an app-admin of acme, who sees only acme
        // and creates a key there.
        let browser = Browser::start().await;
        sign_in_as(&browser, &server, "bob").await;
        assert_eq!(browser.path().await, "/");
        let header = browser.text("form.sign-out").await;
        assert!(header.contains("bob (bob@example.test)"), "{header}");
        assert!(header.contains("app-admin of acme"), "{header}");
        let apps = browser.text("ul.apps").await;
        assert!(apps.contains("acme") && !apps.contains("globex"), "{apps}");
        browser.check_page("oidc-app-admin-apps").await;
        browser.click_link("acme").await;
        browser.click("details.menu summary").await;
        browser.click_link("Manage Keys").await;
        browser.click_link("New API Key").await;
        browser.fill("#key-name", "from-sso").await;
        browser.submit("form.new-key button[type=submit]").await;
        let shown = browser.text("output#new-key").await;
        assert!(shown.starts_with("ks_"), "{shown}");
        // Globex is not there for bob: as if it did not exist.
        browser.goto(&server.admin_url("/apps/globex")).await;
        let hidden = browser.text("p.error").await;
        assert!(hidden.contains("No app globex"), "{hidden}");

        // A callback this browser did not start, carrying words of an
        // attacker's: refused, the words not shown.
        browser
            .goto(&server.admin_url(
                "/sign-in/oidc/callback?error=Paste%20your%20admin%20token%20at%20evil.example&state=x",
            ))
            .await;
        let refused = browser.text("p.error").await;
        assert!(refused.contains("did not start in this browser"), "{refused}");
        assert!(!refused.contains("evil"), "{refused}");

        // The callback replayed, code and state and all: refused in words.
        browser.goto(&provider.last_callback()).await;
        let refused = browser.text("p.error").await;
        assert!(refused.contains("already used"), "{refused}");
        browser.close().await;

        // Alice is in keyscope-admins; Dave in auditors, who reads the
        // whole trail.
        for (user, role) in [("alice", "admin"), ("dave", "auditor")] {
            let browser = Browser::start().await;
            sign_in_as(&browser, &server, user).await;
            let header = browser.text("form.sign-out").await;
            assert!(header.contains(role), "{user}: {header}");
            if user == "dave" {
                browser.click_link("Audit trail").await;
                let status = browser.text("p.done").await;
                assert!(status.contains("The trail verifies"), "{status}");
                assert!(!status.contains("about your apps"), "{status}");
                assert!(
                    browser
                        .text("table.audit")
                        .await
                        .contains("oidc:bob (bob@example.test)")
                );
            }
            browser.close().await;
        }

        // Carol's groups map to no role: refused in words.
        let browser = Browser::start().await;
        sign_in_as(&browser, &server, "carol").await;
        let refused = browser.text("p.error").await;
        assert!(
            refused.contains("none of your groups holds a role"),
            "{refused}"
        );
        assert!(refused.contains("carol (carol@example.test)"), "{refused}");
        browser.close().await;

        // A tampered, a mis-addressed and an expired ID token: each refused.
        for (mode, says) in [
            ("tamper", "did not verify (Signature verification failed"),
            ("audience", "did not verify (Invalid audiences"),
            ("expired", "did not verify (Expired"),
        ] {
            provider.spoil(mode);
            let browser = Browser::start().await;
            sign_in_as(&browser, &server, "alice").await;
            assert_eq!(browser.path().await, "/sign-in/oidc/callback", "{mode}");
            let refused = browser.text("p.error").await;
            assert!(refused.contains(says), "{mode}: {refused}");
            // Not signed in.
            browser.goto(&server.admin_url("/")).await;
            assert_eq!(browser.path().await, "/sign-in", "{mode}");
            browser.close().await;
        }
        provider.spoil("none");
    });

    // The audit trail names the OIDC actor of the change.
    let (_, trail) = server.admin("GET", "/admin/audit", None);
    let created: Vec<&Value> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "key.create")
        .collect();
    assert_eq!(created.len(), 1, "{trail}");
    assert_eq!(created[0]["actor"], "oidc:bob (bob@example.test)");
}

#[test]
fn a_console_oidc_setting_that_cannot_work_is_refused_at_start_in_words() {
    let sandbox = Sandbox::new();
    let secret = sandbox.path("secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let loose = sandbox.path("loose-secret");
    std::fs::write(&loose, CLIENT_SECRET).unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let config = |secret: &Path, roles: &str| {
        format!(
            "[console.oidc]\nissuer = \"http://127.0.0.1:9/\"\nclient_id = \"c\"\n\
             client_secret_file = \"{}\"\nredirect_url = \"http://127.0.0.1:9/cb\"\n\
             [console.oidc.roles]\n{roles}\n",
            secret.display()
        )
    };
    for (toml, says) in [
        (config(&secret, "\"g\" = \"owner\""), "roles.\"g\""),
        (config(&secret, "\"g\" = \"app-admin\""), "needs the apps"),
        (config(&secret, ""), "roles is empty"),
        (config(&loose, "\"g\" = \"admin\""), "group or others"),
        (config(&sandbox.path("nope"), "\"g\" = \"admin\""), "nope"),
        (
            config(&secret, "\"g\" = \"admin\"").replace("client_id = \"c\"\n", ""),
            "client_id",
        ),
    ] {
        let file = sandbox.path("bad.toml");
        std::fs::write(&file, &toml).unwrap();
        let output = sandbox
            .keyscope([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--config")
            .arg(&file)
            .assert()
            .failure()
            .get_output()
            .clone();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{toml}\n{stderr}");
        assert!(
            !stderr.contains(CLIENT_SECRET),
            "the secret in an error: {stderr}"
        );
    }
}
