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
    let cases: usize = suite.groups.iter().map(|g| g.cases.len()).sum();
    assert_eq!(report.passed, cases);
    assert!(cases >= 60);
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
