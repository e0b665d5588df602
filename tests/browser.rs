//! A real, headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`), for the console's tests: pages, screenshots, and
//! axe-core's accessibility check injected into each page.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::pg::free_port;
use crate::support::wait_until;

/// A chromedriver process and a browser session on it; both end on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    /// Where screenshots go.
    shots: PathBuf,
}

/// The chromedriver binary: `$CHROMEDRIVER`, or Debian's.
fn chromedriver() -> PathBuf {
    std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless
    /// Chromium session with a fresh profile.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// As [`Browser::start`], with the system's colour scheme set to dark.
    pub async fn start_dark() -> Self {
        Self::start_with(&[
            "--blink-settings=preferredColorScheme=0",
            "--force-dark-mode",
        ])
        .await
    }

    async fn start_with(extra_args: &[&str]) -> Self {
        let driver_bin = chromedriver();
        assert!(
            driver_bin.exists(),
            "{} is missing: install Debian's chromium and chromium-driver (.ci/run does)",
            driver_bin.display()
        );
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        wait_until(60, "chromedriver listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let profile = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        args.extend(extra_args.iter().map(|arg| (*arg).to_owned()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": args,
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("no Chromium session from chromedriver: {e}"));
        // Generous: a busy 2-core machine runs axe and loads pages slowly.
        let generous = std::time::Duration::from_secs(180);
        client
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(generous),
                Some(generous),
                None,
            ))
            .await
            .unwrap();
        let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client,
            driver,
            _profile: profile,
            shots,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The path of the current page.
    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element,
            Err(error) => {
                let (source, _) = self.source_and_dom().await;
                panic!("no `{css}` on {}: {error}\n{source}", self.path().await)
            }
        }
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks something that does not leave the page (a radio, a menu).
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Clicks a button or link that loads a page, and waits for the new
    /// page: the old document is marked, and the wait ends when a document
    /// without the mark is complete.
    pub async fn submit(&self, css: &str) {
        let element = self.find(css).await;
        self.mark().await;
        element.click().await.unwrap();
        self.wait_for_new_page().await;
    }

    /// Follows the link with this text, and waits for the new page.
    pub async fn click_link(&self, text: &str) {
        let link = self
            .client
            .find(Locator::LinkText(text))
            .await
            .unwrap_or_else(|e| panic!("no link `{text}`: {e}"));
        self.mark().await;
        link.click().await.unwrap();
        self.wait_for_new_page().await;
    }

    pub async fn mark(&self) {
        self.client
            .execute("window.__keyscopeOld = true;", vec![])
            .await
            .unwrap();
    }

    pub async fn wait_for_new_page(&self) {
        self.wait_until(
            "!window.__keyscopeOld && document.readyState === 'complete'",
            "a new page",
        )
        .await;
    }

    /// Waits, up to a generous 60 s, until the JavaScript expression
    /// `condition` holds on the page; `what` names it for the failure.
    pub async fn wait_until(&self, condition: &str, what: &str) {
        let script = format!("return Boolean({condition});");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let holds = self
                .client
                .execute(&script, vec![])
                .await
                .ok()
                .and_then(|value| value.as_bool())
                .unwrap_or(false);
            if holds {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {what} within 60 s (at {})",
                self.client
                    .current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// The source as served and the DOM as it stands.
    pub async fn source_and_dom(&self) -> (String, String) {
        let source = self.client.source().await.unwrap();
        let dom = self
            .client
            .execute("return document.documentElement.outerHTML", vec![])
            .await
            .unwrap();
        (source, dom.as_str().unwrap_or_default().to_owned())
    }

    /// Saves a screenshot of the page as `NAME.png`; its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Runs axe-core on the page; the serious and critical violations.
    pub async fn axe(&self) -> Vec<Value> {
        let source = axe_source();
        self.client.execute(&source, vec![]).await.unwrap();
        let violations = self
            .client
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                axe.run(document, { resultTypes: ["violations"] })
                  .then(r => done(r.violations
                    .filter(v => v.impact === "serious" || v.impact === "critical")
                    .map(v => ({ id: v.id, impact: v.impact, help: v.help,
                                 nodes: v.nodes.map(n => n.target.join(" ")) }))))
                  .catch(e => done([{ id: "axe-failed", help: String(e) }]));"#,
                vec![],
            )
            .await
            .unwrap();
        violations.as_array().cloned().unwrap_or_default()
    }

    /// Screenshots the page and asserts axe finds nothing serious.
    pub async fn check_page(&self, name: &str) {
        self.screenshot(name).await;
        let violations = self.axe().await;
        assert!(
            violations.is_empty(),
            "axe on `{name}` ({}): {violations:#?}",
            self.path().await
        );
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// axe-core's source, installed once by npm from `tests/axe/package.json`.
fn axe_source() -> String {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/axe");
    let file = dir.join("node_modules/axe-core/axe.min.js");
    let _installing = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if !file.exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .expect("npm, to install axe-core (tests/axe)");
        assert!(status.success(), "npm ci in tests/axe failed");
    }
    std::fs::read_to_string(&file).unwrap()
}
