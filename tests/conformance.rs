//! The conformance suite: generated from the golden cases, passed by the
//! Rust host. (The Node and Python runners run in .ci/run.)

use keyscope_runtime::CaseFile;
use keyscope_runtime::conformance::{self, Suite};
use predicates::str::contains;

use crate::golden::component;
use crate::support::{Sandbox, fixtures};

fn committed_path() -> std::path::PathBuf {
    fixtures().join("../../conformance/suite.json")
}

fn committed() -> Suite {
    serde_json::from_str(&std::fs::read_to_string(committed_path()).unwrap()).unwrap()
}

/// `value` with every object's keys in sorted order, so that the committed
/// text does not depend on whether serde_json preserves insertion order.
fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries
                .into_iter()
                .map(|(key, value)| (key, sorted(value)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        }
        serde_json::Value::Array(items) => items.into_iter().map(sorted).collect(),
        other => other,
    }
}

#[test]
fn the_committed_suite_is_generated_from_the_golden_cases() {
    let suite = conformance::build(&CaseFile::golden().unwrap()).unwrap();
    let generated = sorted(serde_json::to_value(&suite).unwrap());
    if std::env::var_os("KEYSCOPE_BLESS").is_some() {
        let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        std::fs::write(committed_path(), text).unwrap();
    }
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(committed_path()).unwrap_or_default())
            .unwrap_or_default();
    assert!(
        on_disk == generated,
        "conformance/suite.json is out of date: run `KEYSCOPE_BLESS=1 cargo test -p keyscope conformance`"
    );
}

#[test]
fn the_rust_host_passes_the_suite() {
    let suite = committed();
    let report = conformance::run(&suite, component()).unwrap();
    assert!(report.failed.is_empty(), "{:#?}", report.failed);
    let cases: usize = suite
        .groups
        .iter()
        .map(|g| g.cases.len() + g.steps.iter().map(|s| s.cases.len()).sum::<usize>())
        .sum();
    assert_eq!(report.passed, cases);
    assert!(cases >= 60);
    // Deltas applied, and a gap, a replay and a tampered result refused.
    let steps: Vec<&str> = suite
        .groups
        .iter()
        .flat_map(|g| g.steps.iter().map(|s| s.expect.as_str()))
        .collect();
    for expect in ["applied", "base-mismatch", "digest-mismatch"] {
        assert!(steps.contains(&expect), "no step expects {expect}");
    }
}

#[test]
fn a_refused_step_fails_the_run() {
    let mut suite = committed();
    let step = suite
        .groups
        .iter_mut()
        .flat_map(|g| g.steps.iter_mut())
        .find(|s| s.expect == "base-mismatch")
        .unwrap();
    step.expect = "applied".to_owned();
    let report = conformance::run(&suite, component()).unwrap();
    assert_eq!(report.failed.len(), 1, "{:#?}", report.failed);
    assert!(report.failed[0].contains("expected applied, got base-mismatch"));
}

#[test]
fn a_wrong_expected_decision_fails_the_run() {
    let mut suite = committed();
    suite.groups[0].cases[0].expect["reason"] = "wrong-app".into();
    let report = conformance::run(&suite, component()).unwrap();
    assert_eq!(report.failed.len(), 1, "{:#?}", report.failed);

    let mut suite = committed();
    let case = suite.groups[1]
        .cases
        .iter_mut()
        .find(|case| case.key.is_some())
        .unwrap();
    case.credential = conformance::WireCredential::Missing;
    let report = conformance::run(&suite, component()).unwrap();
    assert_eq!(report.failed.len(), 1, "a credential mismatch must fail");
}

#[test]
fn the_cli_runs_the_suite_and_fails_on_a_mismatch() {
    let s = Sandbox::new();
    s.keyscope(["conformance", "--suite"])
        .arg(committed_path())
        .assert()
        .code(0)
        .stdout(contains(" passed, 0 failed"));
    let mut suite = committed();
    suite.groups[2].cases[0].expect["allow"] =
        (!suite.groups[2].cases[0].expect["allow"].as_bool().unwrap()).into();
    let scratch = s.path("suite.json");
    std::fs::write(&scratch, serde_json::to_string(&suite).unwrap()).unwrap();
    s.keyscope(["conformance", "--suite"])
        .arg(&scratch)
        .assert()
        .code(1)
        .stdout(contains(", 1 failed"))
        .stderr(contains("FAIL"));
}

/// A snapshot's contents as `conformance/python/make_snapshot.py` reads
/// them: everything explicit, digests in hex.
fn contents_json(data: &keyscope_policy::SnapshotData) -> serde_json::Value {
    serde_json::json!({
        "operations": data.operations.iter().map(|op| serde_json::json!({
            "name": op.name, "requires": op.requires.to_string(),
        })).collect::<Vec<_>>(),
        "scopes": data.scopes.iter().map(|scope| serde_json::json!({
            "id": scope.id,
            "app": scope.app,
            "agents": scope.agents.as_str(),
            "runtime": scope.runtime.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "keys": data.keys.iter().map(|key| serde_json::json!({
            "sha256": hex::encode(key.digest.0),
            "id": key.id,
            "scope_id": key.scope_id,
            "revoked": key.revoked,
            "not_after": key.not_after,
        })).collect::<Vec<_>>(),
        "routes": data.routes.iter().map(|route| serde_json::json!({
            "method": route.method, "pattern": route.pattern, "op": route.op,
        })).collect::<Vec<_>>(),
    })
}

#[test]
fn a_snapshot_written_from_the_contract_alone_is_keyscopes_byte_for_byte() {
    let script = fixtures().join("../../conformance/python/make_snapshot.py");
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for file in CaseFile::golden().unwrap().iter().filter(|file| file.load) {
        let data = file.snapshot_data().unwrap();
        let contents = dir.path().join(format!("{}.contents.json", file.name));
        let out = dir.path().join(format!("{}.snapshot", file.name));
        std::fs::write(&contents, contents_json(&data).to_string()).unwrap();
        let status = std::process::Command::new("python3")
            .arg(&script)
            .arg(&contents)
            .arg(&out)
            .status()
            .expect("python3 runs the contract's producer");
        assert!(status.success(), "make_snapshot.py failed on {}", file.name);
        let written = std::fs::read(&out).unwrap();
        assert_eq!(
            written,
            data.encode().unwrap(),
            "{}: the producer written from CONTRACT.md disagrees with keyscope's encoder",
            file.name
        );
        // And the component takes it, deciding the file's cases the same.
        let mut instance = component()
            .instantiate(keyscope_runtime::Limits::default())
            .unwrap();
        let info = instance.load_snapshot(&written).unwrap();
        assert_eq!(info.format_version, 5);
        checked += 1;
        // Then each of the file's changes as a delta, written from the
        // contract too: keyscope's bytes, and the component applies it.
        let mut base = contents_json(&data);
        for (i, (change, (delta, after))) in
            file.changes.iter().zip(file.deltas().unwrap()).enumerate()
        {
            let changes = file.snapshot_changes(change).unwrap();
            let changes_json = serde_json::json!({
                "scopes": changes.scopes.iter().map(|(id, scope)| serde_json::json!([
                    id,
                    scope.as_ref().map(|scope| serde_json::json!({
                        "id": scope.id,
                        "app": scope.app,
                        "agents": scope.agents.as_str(),
                        "runtime": scope.runtime.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                    })),
                ])).collect::<Vec<_>>(),
                "keys": contents_json(&keyscope_policy::SnapshotData {
                    keys: changes.keys.clone(),
                    ..Default::default()
                })["keys"],
                "catalogue": null,
            });
            let (base_file, changes_file, out) = (
                dir.path().join(format!("{}.{i}.base.json", file.name)),
                dir.path().join(format!("{}.{i}.changes.json", file.name)),
                dir.path().join(format!("{}.{i}.delta", file.name)),
            );
            std::fs::write(&base_file, base.to_string()).unwrap();
            std::fs::write(&changes_file, changes_json.to_string()).unwrap();
            let status = std::process::Command::new("python3")
                .arg(&script)
                .args([
                    "--delta".as_ref(),
                    base_file.as_os_str(),
                    changes_file.as_os_str(),
                    out.as_os_str(),
                ])
                .status()
                .expect("python3 runs the contract's producer");
            assert!(
                status.success(),
                "make_snapshot.py --delta failed on {}",
                file.name
            );
            let written = std::fs::read(&out).unwrap();
            assert_eq!(
                written, delta,
                "{} change {i}: the delta differs",
                file.name
            );
            let info = instance.apply_delta(written.into()).unwrap();
            assert_eq!(info.digest[..], after[after.len() - 32..]);
            base = contents_json(&keyscope_policy::SnapshotData::decode(&after).unwrap().0);
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} snapshots compared");
}
