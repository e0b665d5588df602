//! Golden cases: snapshot input, request and expected decision as data files
//! in `fixtures/golden/`, run through the real embedded component and through
//! the native rules. The same files are the self-test every swap runs.

use std::sync::OnceLock;

use keyscope_policy::snapshot::default_operations;
use keyscope_policy::{Snapshot, rules};
use keyscope_runtime::{
    CaseFile, DecisionJson, Limits, PolicyComponent, PolicyEngine, Request, keys,
};

use crate::support::fixtures;

/// The golden case files, read from the repository.
pub fn load_fixtures() -> Vec<CaseFile> {
    let dir = fixtures().join("golden");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            CaseFile::parse(&name, &std::fs::read_to_string(path).unwrap()).unwrap()
        })
        .collect()
}

/// The embedded component, compiled once per test binary.
pub fn component() -> &'static PolicyComponent {
    static COMPONENT: OnceLock<PolicyComponent> = OnceLock::new();
    COMPONENT.get_or_init(|| PolicyComponent::embedded(&PolicyEngine::new().unwrap()).unwrap())
}

#[test]
fn golden_cases_hold_in_the_component_and_natively() {
    let mut checked = 0;
    for file in load_fixtures() {
        assert!(!file.description.is_empty());
        checked += file.check(component(), &Limits::default()).unwrap();

        // The native rules agree with the component, case by case.
        let bytes = file.snapshot_data().unwrap().encode().unwrap();
        let native = file.load.then(|| Snapshot::decode(&bytes).unwrap());
        let mut instance = component().instantiate(Limits::default()).unwrap();
        if file.load {
            instance.load_snapshot(&bytes).unwrap();
        }
        let requests: Vec<Request<'_>> = file
            .cases
            .iter()
            .map(|case| Request {
                credential: keys::credential(case.key.as_deref()),
                app: &case.app,
                op: &case.op,
                now: case.now,
            })
            .collect();
        let batch = instance.evaluate_batch(&requests);
        for ((request, case), from_batch) in requests.iter().zip(&file.cases).zip(&batch) {
            let from_rules = rules::decide(
                native.as_ref(),
                &native
                    .as_ref()
                    .map_or_else(|| unloaded(request), |native| native.resolve(request)),
            );
            let expected = &case.expect;
            let where_ = format!("{}: {}", file.name, case.name);
            assert_eq!(
                &serde_json::to_value(DecisionJson::from(&from_rules)).unwrap(),
                expected,
                "native rules, {where_}"
            );
            assert_eq!(*from_batch, from_rules, "evaluate-batch, {where_}");
        }
    }
    assert!(checked >= 60, "only {checked} golden cases ran");
}

#[test]
fn a_wrong_expectation_fails_the_check() {
    let mut file = load_fixtures().remove(0);
    file.cases[0].expect["reason"] = "wrong-app".into();
    let error = file.check(component(), &Limits::default()).unwrap_err();
    assert!(error.to_string().contains("expected"), "{error}");
}

#[test]
fn the_self_test_embeds_every_golden_file() {
    let on_disk: Vec<String> = load_fixtures().into_iter().map(|f| f.name).collect();
    let embedded: Vec<String> = CaseFile::golden()
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(
        embedded, on_disk,
        "keyscope_runtime::cases::GOLDEN is out of date"
    );
}

#[test]
fn golden_cases_cover_every_reason_and_every_default_operation() {
    let fixtures = load_fixtures();
    let cases: Vec<_> = fixtures.iter().flat_map(|f| &f.cases).collect();
    for reason in keyscope_runtime::Reason::ALL {
        if matches!(
            reason,
            keyscope_runtime::Reason::PolicyError | keyscope_runtime::Reason::StalePolicy
        ) {
            continue; // host-side; covered in the component and serve tests
        }
        assert!(
            cases.iter().any(|c| c.expect["reason"] == reason.as_str()),
            "no golden case for `{reason}`"
        );
    }
    for op in default_operations() {
        for allow in [true, false] {
            assert!(
                cases
                    .iter()
                    .any(|c| c.op == op.name && c.expect["allow"] == allow),
                "no golden case for `{}` with allow={allow}",
                op.name
            );
        }
    }
}

/// A request with no snapshot to resolve its names against.
fn unloaded(request: &Request<'_>) -> keyscope_runtime::ResolvedRequest {
    keyscope_runtime::ResolvedRequest {
        credential: request.credential,
        snapshot: 0,
        app: None,
        op: None,
        now: request.now,
    }
}
