//! Decision cases as data: a self-contained snapshot (catalogue, scopes,
//! keys) and requests with the decisions they must get.
//!
//! keyscope ships its golden cases (`tests/fixtures/golden/*.json`, embedded
//! here) and runs them through every module before it goes live; users add
//! their own with `keyscope policy check --cases FILE`.

use keyscope_keys::{self as keys, KeySecret};
use keyscope_policy::kept::SnapshotChanges;
use keyscope_policy::snapshot::{
    KeyEntry, OperationEntry, ScopeEntry, SnapshotData, default_operations,
};
use keyscope_policy::{Millis, Request, Snapshot};
use serde::Deserialize;

use crate::component::PolicyComponent;
use crate::decision::DecisionJson;
use crate::engine::Limits;
use crate::error::{Error, Result};
use crate::instance::PolicyInstance;

/// The golden case files that ship with keyscope, by name.
pub const GOLDEN: &[(&str, &str)] = &[
    (
        "agents-levels.json",
        include_str!("../../../tests/fixtures/golden/agents-levels.json"),
    ),
    (
        "credentials-and-apps.json",
        include_str!("../../../tests/fixtures/golden/credentials-and-apps.json"),
    ),
    (
        "custom-catalogue.json",
        include_str!("../../../tests/fixtures/golden/custom-catalogue.json"),
    ),
    (
        "deltas.json",
        include_str!("../../../tests/fixtures/golden/deltas.json"),
    ),
    (
        "expiry-and-routes.json",
        include_str!("../../../tests/fixtures/golden/expiry-and-routes.json"),
    ),
    (
        "no-snapshot.json",
        include_str!("../../../tests/fixtures/golden/no-snapshot.json"),
    ),
    (
        "runtime-permissions.json",
        include_str!("../../../tests/fixtures/golden/runtime-permissions.json"),
    ),
];

/// One file of cases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// Where the cases came from (a file name).
    #[serde(skip)]
    pub name: String,
    /// What the cases show.
    pub description: String,
    /// Whether to load the snapshot at all (`false` tests `no-snapshot`).
    #[serde(default = "yes")]
    pub load: bool,
    /// The catalogue; the default nine operations when absent.
    #[serde(default)]
    pub operations: Option<Vec<CaseOperation>>,
    /// The scopes.
    pub scopes: Vec<CaseScope>,
    /// The keys, raw (test keys only).
    pub keys: Vec<CaseKey>,
    /// The requests and what they must get.
    pub cases: Vec<Case>,
    /// Changes applied in turn as contract deltas, each with the requests
    /// and what they must get after it.
    #[serde(default)]
    pub changes: Vec<CaseChange>,
}

/// A change to a case file's snapshot, applied as a delta, and the cases
/// after it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseChange {
    /// What it changes.
    pub name: String,
    /// Scopes created or replaced.
    #[serde(default)]
    pub scopes: Vec<CaseScope>,
    /// Scopes deleted, by id.
    #[serde(default)]
    pub deleted_scopes: Vec<u64>,
    /// Keys created or changed (a revocation is a key with `revoked`).
    #[serde(default)]
    pub keys: Vec<CaseKey>,
    /// The requests and what they must get after the change.
    pub cases: Vec<Case>,
}

fn yes() -> bool {
    true
}

/// A catalogue entry: `{"name", "requires": "agents:edit"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseOperation {
    /// The operation.
    pub name: String,
    /// `agents:LEVEL` or `runtime:PERMISSION`.
    pub requires: String,
}

/// A scope: `{"id", "app", "agents", "runtime": [...]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseScope {
    /// Its id.
    pub id: u64,
    /// Its application.
    pub app: String,
    /// Its Agents level.
    pub agents: String,
    /// Its runtime permissions.
    pub runtime: Vec<String>,
}

/// A key: `{"id", "scope_id", "key", "revoked", "not_after"?}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseKey {
    /// Its id.
    pub id: u64,
    /// Its scope.
    pub scope_id: u64,
    /// The raw key.
    pub key: String,
    /// Whether it is revoked.
    pub revoked: bool,
    /// The last moment it is valid, in ms since the Unix epoch; absent:
    /// until revoked.
    #[serde(default)]
    pub not_after: Option<Millis>,
}

/// The time a case is asked at unless it says otherwise:
/// 2026-01-01T00:00:00Z, in ms since the Unix epoch.
pub const CASE_NOW: Millis = 1_767_225_600_000;

fn case_now() -> Millis {
    CASE_NOW
}

/// A request and the decision it must get.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows.
    pub name: String,
    /// The raw key presented, if any.
    pub key: Option<String>,
    /// The app addressed.
    pub app: String,
    /// The operation.
    pub op: String,
    /// The time of the request, in ms since the Unix epoch.
    #[serde(default = "case_now")]
    pub now: Millis,
    /// The decision JSON expected.
    pub expect: serde_json::Value,
}

impl CaseFile {
    /// Parses a case file; `name` says where it came from in errors.
    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let mut file: Self = serde_json::from_str(text).map_err(|e| Error::Invalid {
            what: "case file",
            value: name.to_owned(),
            why: e.to_string(),
        })?;
        file.name = name.to_owned();
        Ok(file)
    }

    /// The golden cases that ship with keyscope.
    pub fn golden() -> Result<Vec<Self>> {
        GOLDEN
            .iter()
            .map(|(name, text)| Self::parse(name, text))
            .collect()
    }

    /// The snapshot the cases run against.
    pub fn snapshot_data(&self) -> Result<SnapshotData> {
        let operations = match &self.operations {
            None => default_operations(),
            Some(ops) => ops
                .iter()
                .map(|op| {
                    Ok(OperationEntry {
                        name: op.name.clone(),
                        requires: op.requires.parse()?,
                    })
                })
                .collect::<Result<_>>()?,
        };
        let scopes = self.scopes.iter().map(scope_entry).collect::<Result<_>>()?;
        let keys = self
            .keys
            .iter()
            .map(|key| self.key_entry(key))
            .collect::<Result<_>>()?;
        // The default routes, of those operations the catalogue has.
        let routes = keyscope_policy::routes::default_routes()
            .into_iter()
            .filter(|route| {
                operations
                    .iter()
                    .any(|op: &OperationEntry| op.name == route.op)
            })
            .collect();
        Ok(SnapshotData {
            operations,
            scopes,
            keys,
            routes,
        })
    }

    fn key_entry(&self, key: &CaseKey) -> Result<KeyEntry> {
        let secret = KeySecret::parse(&key.key).map_err(|e| Error::Invalid {
            what: "case key",
            value: key.id.to_string(),
            why: format!("{e} (in `{}`)", self.name),
        })?;
        Ok(KeyEntry {
            digest: secret.digest(),
            id: key.id,
            scope_id: key.scope_id,
            revoked: key.revoked,
            not_after: key.not_after,
        })
    }

    /// A change as the snapshot takes it.
    pub fn snapshot_changes(&self, change: &CaseChange) -> Result<SnapshotChanges> {
        let mut scopes: Vec<(u64, Option<ScopeEntry>)> = change
            .scopes
            .iter()
            .map(|scope| Ok((scope.id, Some(scope_entry(scope)?))))
            .collect::<Result<_>>()?;
        scopes.extend(change.deleted_scopes.iter().map(|id| (*id, None)));
        Ok(SnapshotChanges {
            scopes,
            keys: change
                .keys
                .iter()
                .map(|key| self.key_entry(key))
                .collect::<Result<_>>()?,
            catalogue: None,
        })
    }

    /// The deltas of [`CaseFile::changes`], in turn from the file's
    /// snapshot, and the snapshot each brings.
    pub fn deltas(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut held = Snapshot::from_data(&self.snapshot_data()?)?;
        self.changes
            .iter()
            .map(|change| {
                let delta = held.delta_for(&self.snapshot_changes(change)?)?;
                held.commit(delta.plan)?;
                Ok((delta.bytes, held.to_bytes()?))
            })
            .collect()
    }

    /// Runs every case through a fresh instance of `component`, then each
    /// change as a delta and its cases; the number of cases that held, or
    /// the first that did not.
    pub fn check(&self, component: &PolicyComponent, limits: &Limits) -> Result<usize> {
        let mut instance = component.instantiate(limits.clone())?;
        if self.load {
            instance.load_snapshot(&self.snapshot_data()?.encode()?)?;
        }
        self.check_cases(&mut instance, &self.cases)?;
        if self.load {
            for (change, (delta, _)) in self.changes.iter().zip(self.deltas()?) {
                instance.apply_delta(delta.into())?;
                self.check_cases(&mut instance, &change.cases)?;
            }
        }
        Ok(self.cases.len() + self.changes.iter().map(|c| c.cases.len()).sum::<usize>())
    }

    fn check_cases(&self, instance: &mut PolicyInstance, cases: &[Case]) -> Result<()> {
        for case in cases {
            let request = Request {
                credential: keys::credential(case.key.as_deref()),
                app: &case.app,
                op: &case.op,
                now: case.now,
            };
            if let Some(got) = run_case(instance, &request, &case.expect)? {
                return Err(Error::CaseFailed {
                    file: self.name.clone(),
                    case: case.name.clone(),
                    expected: case.expect.to_string(),
                    got: got.to_string(),
                });
            }
        }
        Ok(())
    }
}

fn scope_entry(scope: &CaseScope) -> Result<ScopeEntry> {
    Ok(ScopeEntry {
        id: scope.id,
        app: scope.app.clone(),
        agents: scope.agents.parse()?,
        runtime: scope.runtime.join(",").parse()?,
    })
}

/// Decides `request` on `instance` and compares the decision, as the CLI
/// prints it, with `expect`: `None` when they agree, else the decision
/// got. The one way a case is run, for case files and the conformance
/// suite alike.
pub fn run_case(
    instance: &mut PolicyInstance,
    request: &Request<'_>,
    expect: &serde_json::Value,
) -> Result<Option<serde_json::Value>> {
    let decision = instance.try_evaluate(request)?;
    let got = serde_json::to_value(DecisionJson::from(&decision))
        .map_err(|e| Error::Encode(e.to_string()))?;
    Ok((got != *expect).then_some(got))
}
