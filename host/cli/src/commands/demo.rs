//! `keyscope demo`: the whole flow in a temporary store, narrated.
//!
//! Every decision is taken by the embedded policy component, against a
//! snapshot rebuilt from the store after each change, exactly as `eval` does.

use std::process::ExitCode;

use anyhow::Context as _;
use keyscope_runtime::{
    AgentsLevel, DecisionJson, KeySecret, PolicyComponent, PolicyEngine, PolicyInstance, Request,
    RuntimePermission, RuntimeSet, keys,
};
use keyscope_store::{ScopeRef, ScopeUpdate, SqliteStore as Store, Store as _};
use serde::Serialize;

use super::output::{self, Output};

const APP: &str = "acme";

struct Demo {
    store: Store,
    instance: PolicyInstance,
    out: Output,
    step: u32,
}

#[derive(Serialize)]
struct Evaluated<'a> {
    step: u32,
    key: &'a str,
    app: &'a str,
    op: &'a str,
    decision: DecisionJson,
}

impl Demo {
    fn say(&mut self, text: &str) -> anyhow::Result<()> {
        self.step += 1;
        self.out.narrate(&format!("\n{}. {text}", self.step))
    }

    fn command(&self, text: &str) -> anyhow::Result<()> {
        self.out.narrate(&format!("   $ keyscope {text}"))
    }

    /// Rebuilds the snapshot from the store and loads it: what a gateway does
    /// when the store changes.
    fn refresh(&mut self) -> anyhow::Result<()> {
        let bytes = keyscope_store::snapshot::build(&mut self.store)?;
        let info = self.instance.load_snapshot(&bytes)?;
        self.out.narrate(&format!(
            "   (snapshot sha256:{}… loaded: {} scopes, {} keys)",
            &info.digest_hex()[..12],
            info.scopes,
            info.keys
        ))?;
        Ok(())
    }

    fn eval(&mut self, label: &str, key: Option<&str>, app: &str, op: &str) -> anyhow::Result<()> {
        let decision = self.instance.evaluate(&Request {
            credential: keys::credential(key),
            app,
            op,
            now: keyscope_runtime::time::now_ms(),
        });
        let line = Evaluated {
            step: self.step,
            key: label,
            app,
            op,
            decision: DecisionJson::from(&decision),
        };
        self.out.print(&line, || {
            format!(
                "   {:<24} {:<18} on {:<6} -> {}",
                format!("key `{label}`"),
                op,
                app,
                output::decision_text(&decision)
            )
        })
    }
}

pub fn run(out: &Output) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let path = dir.path().join("keyscope.db");
    let engine = PolicyEngine::new()?;
    let component = PolicyComponent::embedded(&engine)?;
    out.narrate(&format!(
        "keyscope demo: a temporary store at {}\nEvery decision below is taken inside the policy component \
         (sha256:{}…, {} bytes, imports: none).",
        path.display(),
        &component.info().digest[..12],
        component.info().size
    ))?;
    let mut demo = Demo {
        store: Store::open(&path)?,
        instance: component.instantiate(keyscope_runtime::Limits::default())?,
        out: *out,
        step: 0,
    };

    demo.say("Create a scope for app `acme`: view agents, run them.")?;
    demo.command("scope create --app acme --name support-bot --agents view --runtime run")?;
    let scope = demo.store.create_scope(
        APP,
        "support-bot",
        AgentsLevel::View,
        RuntimeSet::EMPTY.with(RuntimePermission::Run),
    )?;
    out.narrate(&format!("   created {}", output::scope_summary(&scope)))?;

    demo.say("Issue two named keys linked to it. Each secret is shown once, then only its SHA-256 is kept.")?;
    let scope_ref = ScopeRef::Id(scope.id);
    let mut issue = |name: &str| -> anyhow::Result<KeySecret> {
        demo.command(&format!(
            "key create --scope acme/support-bot --name {name}"
        ))?;
        let created = demo.store.create_key(&scope_ref, name)?;
        out.narrate(&format!(
            "   key {} `{name}`: {}… (kept in memory for this demo only)",
            created.key.id,
            created.secret.display_prefix()
        ))?;
        Ok(created.secret)
    };
    let web = issue("web")?;
    let cli = issue("cli")?;
    demo.refresh()?;

    demo.say("Evaluate requests as the platform would.")?;
    demo.eval("web", Some(web.expose()), APP, "agents.list")?;
    demo.eval("web", Some(web.expose()), APP, "runs.execute")?;
    demo.eval("web", Some(web.expose()), APP, "agents.update")?;
    demo.eval("web", Some(web.expose()), APP, "sessions.create")?;
    demo.eval("web", Some(web.expose()), "globex", "agents.get")?;
    demo.eval("web", Some(web.expose()), APP, "agents.fly")?;
    demo.eval("(none)", None, APP, "agents.list")?;
    demo.eval("ks_typo", Some("ks_typo"), APP, "agents.list")?;
    let stranger = KeySecret::generate();
    demo.eval(
        "(never issued)",
        Some(stranger.expose()),
        APP,
        "agents.list",
    )?;

    demo.say("Edit the scope: edit agents, create sessions too. Decisions change at once.")?;
    demo.command("scope update acme/support-bot --agents edit --runtime run,session-create")?;
    let update = ScopeUpdate {
        agents: Some(AgentsLevel::Edit),
        runtime: Some("run,session-create".parse()?),
        ..ScopeUpdate::default()
    };
    demo.store.update_scope(&scope_ref, &update)?;
    demo.refresh()?;
    demo.eval("web", Some(web.expose()), APP, "agents.update")?;
    demo.eval("web", Some(web.expose()), APP, "sessions.create")?;
    demo.eval("web", Some(web.expose()), APP, "agents.delete")?;

    demo.say("Revoke key `web`. It is denied at once; `cli` keeps working.")?;
    let web_id = demo
        .store
        .list_keys(Some(&scope_ref))?
        .into_iter()
        .find(|key| key.name == "web" && key.revoked_at.is_none())
        .map(|key| key.id)
        .context("the demo's `web` key is missing")?;
    demo.command(&format!("key revoke {web_id}"))?;
    demo.store.revoke_key(web_id)?;
    demo.refresh()?;
    demo.eval("web", Some(web.expose()), APP, "agents.list")?;
    demo.eval("cli", Some(cli.expose()), APP, "agents.list")?;

    demo.say(
        "Rotate key `cli` with a day's grace: the old and the new key both work until the \
         grace ends, then the old one is denied as expired.",
    )?;
    let cli_id = demo
        .store
        .list_keys(Some(&scope_ref))?
        .into_iter()
        .find(|key| key.name == "cli" && key.revoked_at.is_none())
        .map(|key| key.id)
        .context("the demo's `cli` key is missing")?;
    demo.command(&format!("key rotate {cli_id} --grace 24h"))?;
    let (_, old, new) = demo
        .store
        .rotate_key_delivered(cli_id, 86_400_000, |_, _| {
            Ok::<_, std::convert::Infallible>(())
        })?
        .map_err(|never| match never {})?;
    out.narrate(&format!(
        "   key {} `cli` is valid until {}; its successor is key {}: {}…",
        old.id,
        old.expires_at.as_deref().unwrap_or("?"),
        new.key.id,
        new.secret.display_prefix()
    ))?;
    demo.refresh()?;
    demo.eval("cli (old)", Some(cli.expose()), APP, "agents.list")?;
    demo.eval("cli (new)", Some(new.secret.expose()), APP, "agents.list")?;

    demo.say("Every change above is in the audit trail, each entry chained to the last.")?;
    demo.command("audit verify")?;
    let trail = demo.store.audit_trail(None)?;
    let count = keyscope_store::audit::verify(&trail)?;
    out.narrate(&format!(
        "   the audit trail verifies: {count} entries, by {}",
        trail
            .entries
            .first()
            .map_or("nobody", |entry| entry.actor.as_str())
    ))?;

    out.narrate(
        "\nDone. The temporary store is removed; try the same with `keyscope --store my.db ...`.",
    )?;
    Ok(ExitCode::SUCCESS)
}
