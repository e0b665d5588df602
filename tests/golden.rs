//! Golden cases: snapshot input, request and expected decision as data files
//! in `fixtures/golden/`, run through the real embedded component and through
//! the native rules.

use std::path::PathBuf;
use std::sync::OnceLock;

use keyscope::{DecisionJson, KeySecret, Limits, PolicyComponent, PolicyEngine, Request, keys};
use keyscope_policy::snapshot::{
    KeyEntry, OperationEntry, ScopeEntry, SnapshotData, default_operations,
};
use keyscope_policy::{Snapshot, rules};
use serde::Deserialize;

use crate::support::fixtures;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub description: String,
    #[serde(default = "yes")]
    pub load: bool,
    pub operations: Option<Vec<FixtureOperation>>,
    pub scopes: Vec<FixtureScope>,
    pub keys: Vec<FixtureKey>,
    pub cases: Vec<Case>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureOperation {
    name: String,
    requires: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureScope {
    id: u64,
    app: String,
    agents: String,
    runtime: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureKey {
    id: u64,
    scope_id: u64,
    key: String,
    revoked: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub key: Option<String>,
    pub app: String,
    pub op: String,
    pub expect: serde_json::Value,
}

impl Fixture {
    pub fn snapshot_data(&self) -> SnapshotData {
        SnapshotData {
            operations: match &self.operations {
                None => default_operations(),
                Some(ops) => ops
                    .iter()
                    .map(|op| OperationEntry {
                        name: op.name.clone(),
                        requires: op.requires.parse().unwrap(),
                    })
                    .collect(),
            },
            scopes: self
                .scopes
                .iter()
                .map(|scope| ScopeEntry {
                    id: scope.id,
                    app: scope.app.clone(),
                    agents: scope.agents.parse().unwrap(),
                    runtime: scope.runtime.join(",").parse().unwrap(),
                })
                .collect(),
            keys: self
                .keys
                .iter()
                .map(|key| KeyEntry {
                    digest: KeySecret::parse(&key.key).unwrap().digest(),
                    id: key.id,
                    scope_id: key.scope_id,
                    revoked: key.revoked,
                })
                .collect(),
        }
    }
}

pub fn load_fixtures() -> Vec<(PathBuf, Fixture)> {
    let dir = fixtures().join("golden");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let fixture =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, fixture)
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
    for (path, fixture) in load_fixtures() {
        assert!(!fixture.description.is_empty());
        let bytes = fixture.snapshot_data().encode().unwrap();
        let mut instance = component().instantiate(Limits::default()).unwrap();
        let native = fixture.load.then(|| Snapshot::decode(&bytes).unwrap());
        if fixture.load {
            instance.load_snapshot(&bytes).unwrap();
        }
        for case in &fixture.cases {
            let request = Request {
                credential: keys::credential(case.key.as_deref()),
                app: &case.app,
                op: &case.op,
            };
            let where_ = format!("{}: {}", path.display(), case.name);
            let from_component = instance.try_evaluate(&request).unwrap();
            let from_rules = rules::decide(native.as_ref(), &request);
            assert_eq!(
                serde_json::to_value(DecisionJson::from(&from_component)).unwrap(),
                case.expect,
                "component, {where_}"
            );
            assert_eq!(from_rules, from_component, "native rules, {where_}");
            checked += 1;
        }
        // The same cases in one batch call come back identical and in order.
        let requests: Vec<Request<'_>> = fixture
            .cases
            .iter()
            .map(|case| Request {
                credential: keys::credential(case.key.as_deref()),
                app: &case.app,
                op: &case.op,
            })
            .collect();
        let batch = instance.evaluate_batch(&requests);
        for (decision, case) in batch.iter().zip(&fixture.cases) {
            assert_eq!(
                serde_json::to_value(DecisionJson::from(decision)).unwrap(),
                case.expect,
                "batch, {}: {}",
                path.display(),
                case.name
            );
        }
    }
    assert!(checked >= 60, "only {checked} golden cases ran");
}

#[test]
fn golden_cases_cover_every_reason_and_every_default_operation() {
    let fixtures = load_fixtures();
    let cases: Vec<&Case> = fixtures.iter().flat_map(|(_, f)| &f.cases).collect();
    for reason in keyscope::Reason::ALL {
        if reason == keyscope::Reason::PolicyError {
            continue; // a host-side failure; covered in the component tests
        }
        assert!(
            cases.iter().any(|c| c.expect["reason"] == reason.as_str()),
            "no golden case for `{reason}`"
        );
    }
    for op in default_operations() {
        assert!(
            cases
                .iter()
                .any(|c| c.op == op.name && c.expect["allow"] == true),
            "no allowed golden case for `{}`",
            op.name
        );
        assert!(
            cases
                .iter()
                .any(|c| c.op == op.name && c.expect["allow"] == false),
            "no denied golden case for `{}`",
            op.name
        );
    }
}
