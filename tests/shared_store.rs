//! The shared store on a real PostgreSQL, used as a platform uses it: two
//! servers and the CLI in separate processes on one database, the database
//! stopped and started under traffic, twenty admins racing for the last key
//! places, and a store copied from SQLite to PostgreSQL and back.

use serde_json::{Value, json};

use crate::pg::{self, Cluster};
use crate::support::{Sandbox, Server, wait_until};

/// A scope `acme/s` with Agents view; its id.
fn acme_scope(sandbox: &Sandbox) -> u64 {
    sandbox.scope("acme", "s", "view", "run")
}

fn allowed(server: &Server, key: &str) -> Value {
    server.check(&json!({ "key": key, "app": "acme", "op": "agents.list" }))
}

#[test]
fn a_revocation_by_the_cli_reaches_two_servers_on_one_database() {
    let sandbox = Sandbox::on_postgres(pg::shared());
    let scope = acme_scope(&sandbox);
    let (key_id, key) = sandbox.key(&scope.to_string(), "k");
    let first = sandbox.serve(&[]);
    let second = sandbox.serve(&[]);
    for server in [&first, &second] {
        assert_eq!(allowed(server, &key)["allow"], true);
    }
    // The CLI, a third process, revokes.
    sandbox
        .keyscope(["key", "revoke", &key_id.to_string()])
        .assert()
        .success();
    for (name, server) in [("first", &first), ("second", &second)] {
        let took = wait_until(10, "the revocation reaching a server", || {
            allowed(server, &key)["reason"] == "revoked-key"
        });
        eprintln!("{name} server: revoked key denied {took:?} after the CLI exited");
        let ready = server.ready();
        assert_eq!(ready["store"]["stale"], false, "{ready}");
    }
    // And a scope created through one server's admin API is live on the
    // other too.
    let (code, body) = first.admin(
        "POST",
        "/admin/scopes",
        Some(json!({ "app": "acme", "name": "t", "agents": "full" })),
    );
    assert_eq!(code, 201, "{body}");
    let (code, created) = first.admin(
        "POST",
        "/admin/keys",
        Some(json!({ "scope": "acme/t", "name": "via-admin" })),
    );
    assert_eq!(code, 201, "{created}");
    let new_key = created["key"].as_str().unwrap().to_owned();
    wait_until(10, "a key made on one server reaching the other", || {
        allowed(&second, &new_key)["allow"] == true
    });
}

#[test]
fn a_database_outage_keeps_the_last_snapshot_deciding_and_writes_resume() {
    let cluster = Cluster::start();
    let sandbox = Sandbox::on_postgres(&cluster);
    let scope = acme_scope(&sandbox);
    let (_, live_key) = sandbox.key(&scope.to_string(), "live");
    let (revoked_id, revoked_key) = sandbox.key(&scope.to_string(), "revoked");
    sandbox
        .keyscope(["key", "revoke", &revoked_id.to_string()])
        .assert()
        .success();
    let server = sandbox.serve(&[]);
    let expect = |body: &Value, live: bool| {
        if live {
            assert_eq!(body["allow"], true, "{body}");
        } else {
            assert_eq!(body["allow"], false, "{body}");
        }
    };

    // Traffic throughout: a second thread asks without a pause while the
    // database stops and starts; every answer is checked.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = std::sync::Arc::clone(&stop);
        let http = server.http;
        let (live_key, revoked_key) = (live_key.clone(), revoked_key.clone());
        std::thread::spawn(move || {
            let client = crate::support::http_client();
            let mut answers = 0_u64;
            let mut wrong_allows = 0_u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || answers < 100 {
                for (key, live) in [
                    (&live_key, true),
                    (&revoked_key, false),
                    (&"ks_nope".to_owned(), false),
                ] {
                    let body: Value = client
                        .post(format!("http://{http}/v1/check"))
                        .send_json(json!({ "key": key, "app": "acme", "op": "agents.list" }))
                        .unwrap()
                        .body_mut()
                        .read_json()
                        .unwrap();
                    answers += 1;
                    if body["allow"] == true && !live {
                        wrong_allows += 1;
                    }
                    assert!(
                        body["allow"] == live || body["reason"] != "policy-error",
                        "a decision failed: {body}"
                    );
                }
            }
            (answers, wrong_allows)
        })
    };

    cluster.stop_server();
    // The server notices at its next poll, and says since when.
    wait_until(30, "/readyz reporting the store stale", || {
        server.ready()["store"]["stale"] == true
    });
    let ready = server.ready();
    assert_eq!(ready["ready"], true, "fail static: still ready, {ready}");
    assert!(
        ready["store"]["stale_since_ms"].as_u64().is_some(),
        "{ready}"
    );
    let (_, status) = server.admin("GET", "/admin/status", None);
    assert_eq!(status["store"]["stale"], true, "{status}");
    // Decisions go on from the last snapshot.
    expect(&allowed(&server, &live_key), true);
    expect(&allowed(&server, &revoked_key), false);
    // Writes fail, clearly, and change nothing.
    let (code, body) = server.admin(
        "POST",
        "/admin/scopes",
        Some(json!({ "app": "acme", "name": "during", "agents": "view" })),
    );
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["kind"], "unavailable", "{body}");
    let output = sandbox
        .keyscope(["scope", "create", "--app", "acme", "--name", "cli-during"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&output.get_output().stderr).into_owned();
    assert!(stderr.contains("unavailable"), "{stderr}");
    assert!(!stderr.contains(pg::PASSWORD), "{stderr}");

    cluster.start_server();
    wait_until(60, "the server reconnecting by itself", || {
        server.ready()["store"]["stale"] == false
    });
    let (code, body) = server.admin(
        "POST",
        "/admin/scopes",
        Some(json!({ "app": "acme", "name": "after", "agents": "view" })),
    );
    assert_eq!(code, 201, "writes resume: {body}");
    let live_id = sandbox.json(["key", "list"])[0]["id"].as_u64().unwrap();
    sandbox
        .keyscope(["key", "revoke", &live_id.to_string()])
        .assert()
        .success();
    wait_until(10, "a revocation after the outage", || {
        allowed(&server, &live_key)["reason"] == "revoked-key"
    });

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answers, wrong_allows) = traffic.join().unwrap();
    eprintln!("outage: {answers} decisions under traffic, {wrong_allows} wrong allows");
    assert_eq!(wrong_allows, 0);
    assert!(answers >= 100);
}

#[test]
fn twenty_admins_racing_for_the_key_limit_get_exactly_forty_keys() {
    let sandbox = Sandbox::on_postgres(pg::shared());
    let scope = acme_scope(&sandbox).to_string();
    let sandbox = std::sync::Arc::new(sandbox);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(20));
    let admins: Vec<_> = (0..20)
        .map(|admin| {
            let (sandbox, barrier, scope) = (
                std::sync::Arc::clone(&sandbox),
                std::sync::Arc::clone(&barrier),
                scope.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                let mut made = 0;
                for attempt in 0..3 {
                    let output = sandbox
                        .keyscope([
                            "key",
                            "create",
                            "--scope",
                            &scope,
                            "--name",
                            &format!("k{admin}-{attempt}"),
                        ])
                        .output()
                        .unwrap();
                    match output.status.code() {
                        Some(0) => made += 1,
                        Some(2) => {
                            let stderr = String::from_utf8_lossy(&output.stderr);
                            assert!(stderr.contains("40 live keys, its limit"), "{stderr}");
                        }
                        other => panic!("key create exited {other:?}"),
                    }
                }
                made
            })
        })
        .collect();
    let made: u32 = admins.into_iter().map(|a| a.join().unwrap()).sum();
    assert_eq!(made, 40, "60 attempts against a limit of 40");
    let keys = sandbox.json(["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 40);
}

#[test]
fn store_copy_from_sqlite_to_postgres_and_back_keeps_every_key_working() {
    let file = Sandbox::new();
    let scope = acme_scope(&file);
    let (_, key) = file.key(&scope.to_string(), "kept");
    let (gone_id, gone) = file.key(&scope.to_string(), "gone");
    file.keyscope(["key", "revoke", &gone_id.to_string()])
        .assert()
        .success();
    let digest = |sandbox: &Sandbox| -> String {
        sandbox.json([
            "snapshot",
            "export",
            "-o",
            sandbox.path("s.snap").to_str().unwrap(),
        ])["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let before = digest(&file);

    let db = Sandbox::on_postgres(pg::shared());
    let output = file
        .keyscope([
            "--json",
            "store",
            "copy",
            "--to",
            db.store_arg().to_str().unwrap(),
        ])
        .env("PGPASSWORD", pg::PASSWORD)
        .assert()
        .success();
    let copied: Value = serde_json::from_slice(&output.get_output().stdout).unwrap();
    assert_eq!(copied["keys"], 2, "{copied}");
    assert!(
        !copied.to_string().contains(pg::PASSWORD),
        "the URL is shown without its password"
    );
    assert_eq!(digest(&db), before, "the same snapshot from PostgreSQL");
    // The key issued on the file works on the database; the revoked one
    // stays revoked.
    assert_eq!(db.eval(&key, "acme", "agents.list").0, 0);
    assert_eq!(
        db.eval(&gone, "acme", "agents.list").1["reason"],
        "revoked-key"
    );

    let back = Sandbox::new();
    back.keyscope([
        "store",
        "copy",
        "--from",
        db.store_arg().to_str().unwrap(),
        "--to",
        back.store().to_str().unwrap(),
    ])
    .env("PGPASSWORD", pg::PASSWORD)
    .assert()
    .success();
    assert_eq!(digest(&back), before, "and the same back in a file");
    // A copy into a store that holds keys is refused, and changes nothing.
    let output = file
        .keyscope(["store", "copy", "--to", db.store_arg().to_str().unwrap()])
        .env("PGPASSWORD", pg::PASSWORD)
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&output.get_output().stderr).into_owned();
    assert!(stderr.contains("already holds"), "{stderr}");
    assert_eq!(digest(&db), before);
}

#[test]
fn the_password_comes_from_a_password_file_and_is_never_shown() {
    let cluster = pg::shared();
    let sandbox = Sandbox::on_postgres(cluster);
    let url = sandbox.store_arg().into_string().unwrap();
    let passfile = sandbox.path("pgpass");
    std::fs::write(
        &passfile,
        format!(
            "# host:port:db:user:password\n*:*:*:{}:{}\n",
            pg::USER,
            pg::PASSWORD
        ),
    )
    .unwrap();
    let run = |url: &str, env: &[(&str, &str)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keyscope"));
        command
            .env_remove("PGPASSWORD")
            .env_remove("PGPASSFILE")
            .env_remove("KEYSCOPE_STORE")
            .envs(env.iter().copied())
            .args(["--store", url, "store", "migrate"]);
        command.output().unwrap()
    };
    // Open to others: refused, by name.
    std::fs::set_permissions(
        &passfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let output = run(&url, &[("PGPASSFILE", passfile.to_str().unwrap())]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("chmod 600"));
    std::fs::set_permissions(
        &passfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let output = run(&url, &[("PGPASSFILE", passfile.to_str().unwrap())]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = run(&format!("{url}?passfile={}", passfile.display()), &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A wrong password in the URL: refused, and not echoed.
    let wrong = url.replacen(pg::USER, &format!("{}:wrong-Pa55word", pg::USER), 1);
    let output = run(&wrong, &[]);
    assert_eq!(output.status.code(), Some(2));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("password authentication failed"), "{said}");
    assert!(!said.contains("wrong-Pa55word"), "{said}");
    // A newer schema than this build knows is refused.
    let db = url.rsplit('/').next().unwrap();
    cluster
        .connect(db)
        .batch_execute("UPDATE keyscope.schema_version SET version = 99")
        .unwrap();
    let output = run(&url, &[("PGPASSWORD", pg::PASSWORD)]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("schema version 99"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn tls_to_the_database_is_required_verified_or_refused() {
    let cluster = Cluster::start();
    let ca = cluster.require_tls();
    let url = cluster.url("postgres");
    let migrate = |query: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyscope"))
            .env("PGPASSWORD", pg::PASSWORD)
            .env_remove("PGPASSFILE")
            .env_remove("KEYSCOPE_STORE")
            .args(["--store", &format!("{url}?{query}"), "store", "migrate"])
            .output()
            .unwrap()
    };
    let said = |output: &std::process::Output| String::from_utf8_lossy(&output.stderr).into_owned();
    // The server takes no unencrypted connection now.
    let plain = migrate("sslmode=disable");
    assert_eq!(plain.status.code(), Some(2), "{}", said(&plain));
    assert!(said(&plain).contains("no encryption"), "{}", said(&plain));
    // Encrypted, the server not verified (libpq's `require`).
    let required = migrate("sslmode=require");
    assert!(required.status.success(), "{}", said(&required));
    // Encrypted and verified against the CA that signed the server.
    let verified = migrate(&format!("sslmode=require&sslrootcert={}", ca.display()));
    assert!(verified.status.success(), "{}", said(&verified));
    // A certificate from another CA is refused.
    let other = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("openssl")
        .current_dir(other.path())
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=another CA",
            "-keyout",
            "k.pem",
            "-out",
            "ca.crt",
        ])
        .output()
        .unwrap();
    assert!(status.status.success());
    let refused = migrate(&format!(
        "sslmode=require&sslrootcert={}",
        other.path().join("ca.crt").display()
    ));
    assert_eq!(refused.status.code(), Some(2), "{}", said(&refused));
    assert!(said(&refused).contains("TLS"), "{}", said(&refused));
}

#[test]
fn a_password_of_slashes_at_signs_colons_and_escapes_never_appears() {
    let cluster = Cluster::start();
    // As a password manager makes them; in the URL, `@` and `%` are
    // percent-encoded, `/` and `:` are not (the client's credentials run
    // to the first `@`).
    let password = "Zq7v/p:Wq@Lm%2Fk9x";
    let encoded = "Zq7v/p:Wq%40Lm%252Fk9x";
    let role = format!("weird_{}", std::process::id());
    let mut superuser = cluster.connect("postgres");
    superuser
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        .unwrap();
    superuser
        .batch_execute(&format!("CREATE DATABASE {role} OWNER {role}"))
        .unwrap();
    let good =
        cluster
            .url(&role)
            .replacen(&format!("{}@", pg::USER), &format!("{role}:{encoded}@"), 1);
    let sandbox = Sandbox::on_postgres_url(good.clone());
    let secrets = [
        password, encoded, "Zq7v", "Lm%2F", "Lm%252F", "k9x", "Wq@Lm",
    ];
    let mut said = String::new();
    let mut run = |args: &[&str], store: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyscope"))
            .env_remove("PGPASSWORD")
            .env_remove("PGPASSFILE")
            .env("KEYSCOPE_STORE", store)
            .args(args)
            .output()
            .unwrap();
        said.push_str(&String::from_utf8_lossy(&output.stdout));
        said.push_str(&String::from_utf8_lossy(&output.stderr));
        output.status.code()
    };
    // It works, and says where, without the password.
    assert_eq!(
        run(&["scope", "create", "--app", "acme", "--name", "s"], &good),
        Some(0)
    );
    assert_eq!(run(&["scope", "list"], &good), Some(0));
    assert_eq!(run(&["store", "migrate"], &good), Some(0));
    assert_eq!(run(&["--json", "audit", "verify"], &good), Some(0));
    // Refused, by the store or by clap, in every way a URL can be wrong.
    let port = cluster.port.to_string();
    for bad in [
        good.replacen(&port, "notaport", 1),
        good.replacen(&port, "1", 1),
        good.replacen("%40", "@", 1),
        good[..good.rfind('/').unwrap()].to_owned(),
        good.replacen("//", "/", 1),
        format!("{good}&password=x").replacen("&", "?", 1),
    ] {
        assert_eq!(run(&["scope", "list"], &bad), Some(2), "{said}");
        assert_eq!(
            run(&["--store", &bad, "scope", "list"], "keyscope.db"),
            Some(2),
            "{said}"
        );
        assert_eq!(
            run(&["store", "copy", "--to", &bad], "keyscope.db"),
            Some(2)
        );
    }
    assert!(said.contains(&format!("postgres://{role}@")), "{said}");

    // A server on it, then its database out of reach.
    let mut server = sandbox.serve(&[]);
    let public = || {
        crate::support::http_client()
            .get(server.url("/readyz"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    };
    said.push_str(&public());
    said.push_str(&server.admin("GET", "/admin/status", None).1.to_string());
    cluster
        .connect("postgres")
        .batch_execute(&format!(
            "ALTER ROLE {role} NOLOGIN; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
        ))
        .unwrap();
    wait_until(30, "the server saying its store is stale", || {
        public().contains("\"stale\":true")
    });
    let ready = public();
    assert!(
        !ready.contains("error") && !ready.contains(&role),
        "{ready}"
    );
    said.push_str(&ready);
    // The detail, on the admin listener: the database's own words, once
    // the server tried to connect again.
    wait_until(30, "the admin status naming the refusal", || {
        let (_, status) = server.admin("GET", "/admin/status", None);
        said.push_str(&status.to_string());
        status.to_string().contains("not permitted to log in")
    });
    said.push_str(&server.admin("GET", "/admin/keys", None).1.to_string());
    said.push_str(
        &server
            .admin(
                "POST",
                "/admin/scopes",
                Some(json!({"app": "acme", "name": "t"})),
            )
            .1
            .to_string(),
    );
    server.stop();
    said.push_str(&std::fs::read_to_string(sandbox.path("serve.stderr")).unwrap());
    for secret in secrets {
        assert!(!said.contains(secret), "`{secret}` was shown:\n{said}");
    }
}

#[test]
fn a_role_that_may_only_read_lists_verifies_exports_and_serves() {
    let cluster = Cluster::start();
    let sandbox = Sandbox::on_postgres(&cluster);
    acme_scope(&sandbox);
    let (_, key) = sandbox.key("acme/s", "k");
    let url = sandbox.store_arg().into_string().unwrap();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let role = format!("reader_{}", std::process::id());
    let mut superuser = cluster.connect(&db);
    superuser
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'reader-pw'; \
             GRANT CONNECT ON DATABASE {db} TO {role}; \
             GRANT USAGE ON SCHEMA keyscope TO {role}; \
             GRANT SELECT ON ALL TABLES IN SCHEMA keyscope TO {role};"
        ))
        .unwrap();
    let reader = url.replacen(&format!("{}@", pg::USER), &format!("{role}@"), 1);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyscope"))
            .env("PGPASSWORD", "reader-pw")
            .env_remove("PGPASSFILE")
            .env("KEYSCOPE_STORE", &reader)
            .args(args)
            .output()
            .unwrap()
    };
    let said = |output: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let exported = sandbox.path("snapshot.ks");
    for args in [
        vec!["scope", "list"],
        vec!["key", "list"],
        vec!["audit", "list"],
        vec!["audit", "verify"],
        vec!["snapshot", "export", "-o", exported.to_str().unwrap()],
    ] {
        let output = run(&args);
        assert!(output.status.success(), "{args:?}: {}", said(&output));
    }
    assert!(exported.exists());
    // A change is refused, by the database, and named.
    let output = run(&["scope", "create", "--app", "acme", "--name", "t"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        said(&output).contains("permission denied"),
        "{}",
        said(&output)
    );

    // `serve --usage off` with no admin listener writes nothing: it serves.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyscope"))
        .env("PGPASSWORD", "reader-pw")
        .env_remove("PGPASSFILE")
        .args([
            "--store",
            &reader,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--usage",
            "off",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut http = None;
    loop {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0,
            "serve exited"
        );
        let event: Value = serde_json::from_str(&line).unwrap();
        match event["event"].as_str() {
            Some("listening") => http = event["http"].as_str().map(str::to_owned),
            Some("ready") => break,
            _ => {}
        }
    }
    let decision: Value = crate::support::http_client()
        .post(format!("http://{}/v1/check", http.unwrap()))
        .header("content-type", "application/json")
        .send(json!({ "key": key, "app": "acme", "op": "agents.list" }).to_string())
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(decision["allow"], true, "{decision}");
    let _ = child.kill();
    let _ = child.wait();

    // A schema older than this keyscope: the reader is told to migrate.
    superuser
        .batch_execute("UPDATE keyscope.schema_version SET version = version - 1")
        .unwrap();
    let output = run(&["scope", "list"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        said(&output).contains("keyscope store migrate"),
        "{}",
        said(&output)
    );
    superuser
        .batch_execute("UPDATE keyscope.schema_version SET version = version + 1")
        .unwrap();
}

#[test]
fn max_stale_fails_closed_past_its_bound_and_decisions_resume_when_the_store_returns() {
    let cluster = Cluster::start();
    let sandbox = Sandbox::on_postgres(&cluster);
    acme_scope(&sandbox);
    let (_, key) = sandbox.key("acme/s", "k");
    let server = sandbox.serve(&["--max-stale", "1"]);
    let check = || {
        let mut response = crate::support::http_client()
            .post(server.url("/v1/check"))
            .header("content-type", "application/json")
            .send(json!({ "key": key, "app": "acme", "op": "agents.list" }).to_string())
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.body_mut().read_json().unwrap();
        (status, body)
    };
    assert_eq!(check().1["allow"], true);
    cluster.stop_server();
    // Past the bound: every decision denied, with a reason of its own.
    let (status, body) = crate::fleet::wait_until_value(30, "decisions denied as stale", || {
        let (status, body) = check();
        (body["reason"] == "stale-policy").then_some((status, body))
    });
    assert_eq!(body["allow"], false, "{body}");
    assert_eq!(status, 200, "/v1/check answers the decision itself");
    let nginx_door = crate::support::http_client()
        .get(server.url("/auth"))
        .header("x-original-uri", "/api/v2/apps/acme/agents")
        .header("x-original-method", "GET")
        .header("x-api-key", &key)
        .call()
        .unwrap()
        .status();
    assert_eq!(nginx_door, 503);
    cluster.start_server();
    wait_until(60, "decisions resuming with the store back", || {
        check().1["allow"] == true
    });
}
