//! The conformance suite: the golden cases in a form any host can run.
//!
//! `conformance/suite.json` holds, per group, the snapshot bytes (hex), and
//! per case the raw key, the credential a host must derive from it, the
//! request and the expected decision. The Rust host (`keyscope conformance`),
//! the Node runner (jco) and the Python runner (wasmtime-py) all run it, so
//! three hosts are checked against one source of truth. The suite is
//! generated from the golden cases; a test keeps the committed copy current.

use keyscope_keys as keys;
use keyscope_policy::{Credential, KeyDigest, Request};
use serde::{Deserialize, Serialize};

use crate::cases::{CaseFile, run_case};
use crate::component::PolicyComponent;
use crate::engine::Limits;
use crate::error::{Error, Result};

/// The contract a suite checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    /// The exported interface, with its version.
    pub interface: String,
    /// The snapshot format version the snapshots are in.
    pub snapshot_format: u16,
    /// Where the contract is described.
    pub document: String,
}

/// A whole suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suite {
    /// What it checks.
    pub contract: Contract,
    /// The groups of cases, each with its own snapshot.
    pub groups: Vec<Group>,
}

/// Cases that share a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The golden file it came from.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// The snapshot bytes in hex; `None` to evaluate with no snapshot loaded.
    pub snapshot: Option<String>,
    /// The cases.
    pub cases: Vec<WireCase>,
    /// Deltas applied in turn after the cases, each with its outcome and
    /// the cases after it.
    pub steps: Vec<Step>,
}

/// A delta applied to a group's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// What it shows.
    pub name: String,
    /// The delta's bytes (CONTRACT.md §4) in hex.
    pub delta: String,
    /// `applied`, or the `delta-error` it must get (`base-mismatch`).
    pub expect: String,
    /// The cases after it: a refused delta changes nothing.
    pub cases: Vec<WireCase>,
}

/// One case, with the credential as a host must pass it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCase {
    /// What it shows.
    pub name: String,
    /// The raw key presented, if any (test keys only).
    pub key: Option<String>,
    /// The credential derived from `key`.
    pub credential: WireCredential,
    /// The app.
    pub app: String,
    /// The operation.
    pub op: String,
    /// The time of the request, in ms since the Unix epoch.
    pub now: keyscope_policy::Millis,
    /// The decision expected, as the CLI prints it.
    pub expect: serde_json::Value,
}

/// `{"tag":"missing"}`, `{"tag":"malformed"}` or
/// `{"tag":"digest","sha256":"<hex>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tag", rename_all = "kebab-case")]
pub enum WireCredential {
    /// No key.
    Missing,
    /// A key of the wrong format or checksum.
    Malformed,
    /// A well-formed key, by its SHA-256.
    Digest {
        /// Lowercase hex SHA-256 of the raw key.
        sha256: String,
    },
}

impl From<Credential> for WireCredential {
    fn from(credential: Credential) -> Self {
        match credential {
            Credential::Missing => Self::Missing,
            Credential::Malformed => Self::Malformed,
            Credential::Digest(digest) => Self::Digest {
                sha256: hex::encode(digest.0),
            },
        }
    }
}

impl WireCredential {
    fn to_credential(&self) -> Result<Credential> {
        match self {
            Self::Missing => Ok(Credential::Missing),
            Self::Malformed => Ok(Credential::Malformed),
            Self::Digest { sha256 } => Ok(Credential::Digest(KeyDigest(unhex(sha256)?))),
        }
    }
}

/// Builds the suite from case files (the golden ones, in practice).
pub fn build(files: &[CaseFile]) -> Result<Suite> {
    let groups = files
        .iter()
        .map(|file| {
            let snapshot = file
                .load
                .then(|| file.snapshot_data()?.encode().map_err(Error::from))
                .transpose()?;
            Ok(Group {
                name: file.name.trim_end_matches(".json").to_owned(),
                description: file.description.clone(),
                snapshot: snapshot.map(hex::encode),
                cases: wire_cases(&file.cases),
                steps: steps(file)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Suite {
        contract: Contract {
            interface: "keyscope:policy/decide@0.4.0".to_owned(),
            snapshot_format: keyscope_policy::snapshot::FORMAT_VERSION,
            document: "conformance/CONTRACT.md".to_owned(),
        },
        groups,
    })
}

fn wire_cases(cases: &[crate::cases::Case]) -> Vec<WireCase> {
    cases
        .iter()
        .map(|case| WireCase {
            name: case.name.clone(),
            key: case.key.clone(),
            credential: keys::credential(case.key.as_deref()).into(),
            app: case.app.clone(),
            op: case.op.clone(),
            now: case.now,
            expect: case.expect.clone(),
        })
        .collect()
}

/// A file's changes as steps: before each change is applied, the next one
/// (a gap) and the change with its result digest altered are refused;
/// after it, the same delta again (a replay) is refused. A refused step's
/// cases are the state's before it.
fn steps(file: &CaseFile) -> Result<Vec<Step>> {
    let deltas = file.deltas()?;
    let mut steps = Vec::new();
    let mut before = wire_cases(&file.cases);
    for (i, (change, (delta, _))) in file.changes.iter().zip(&deltas).enumerate() {
        let number = i + 1;
        if let Some((next, _)) = deltas.get(i + 1) {
            steps.push(Step {
                name: format!("a gap: change {} before change {number}", number + 1),
                delta: hex::encode(next),
                expect: "base-mismatch".to_owned(),
                cases: before.clone(),
            });
        }
        let mut tampered = delta.clone();
        tampered[keyscope_policy::delta::DELTA_HEADER_LEN - 1] ^= 1;
        steps.push(Step {
            name: format!("change {number} with its result digest altered"),
            delta: hex::encode(&tampered),
            expect: "digest-mismatch".to_owned(),
            cases: before.clone(),
        });
        let after = wire_cases(&change.cases);
        steps.push(Step {
            name: format!("change {number}: {}", change.name),
            delta: hex::encode(delta),
            expect: "applied".to_owned(),
            cases: after.clone(),
        });
        steps.push(Step {
            name: format!("change {number} again, out of order"),
            delta: hex::encode(delta),
            expect: "base-mismatch".to_owned(),
            cases: after.clone(),
        });
        before = after;
    }
    Ok(steps)
}

/// What a run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Cases that held.
    pub passed: usize,
    /// Cases that did not, each said in one line.
    pub failed: Vec<String>,
}

/// Runs the suite through `component`: checks this host's credential
/// derivation against the suite, then every decision.
pub fn run(suite: &Suite, component: &PolicyComponent) -> Result<Report> {
    let mut report = Report::default();
    for group in &suite.groups {
        let mut instance = component.instantiate(Limits::default())?;
        if let Some(hex) = &group.snapshot {
            instance.load_snapshot(&unhex_vec(hex)?)?;
        }
        check_cases(&mut instance, group, None, &group.cases, &mut report)?;
        for step in &group.steps {
            let got = match instance.apply_delta(unhex_vec(&step.delta)?.into()) {
                Ok(_) => "applied",
                Err(Error::Delta(error)) => error.tag(),
                Err(error) => return Err(error),
            };
            if got != step.expect {
                report.failed.push(format!(
                    "{} / {}: expected {}, got {got}",
                    group.name, step.name, step.expect
                ));
            }
            check_cases(&mut instance, group, Some(step), &step.cases, &mut report)?;
        }
    }
    Ok(report)
}

fn check_cases(
    instance: &mut crate::instance::PolicyInstance,
    group: &Group,
    step: Option<&Step>,
    cases: &[WireCase],
    report: &mut Report,
) -> Result<()> {
    let at = step.map_or_else(String::new, |step| format!(" (after {})", step.name));
    {
        for case in cases {
            let derived = WireCredential::from(keys::credential(case.key.as_deref()));
            let request = Request {
                credential: case.credential.to_credential()?,
                app: &case.app,
                op: &case.op,
                now: case.now,
            };
            let mismatch = run_case(instance, &request, &case.expect)?;
            if derived != case.credential {
                report.failed.push(format!(
                    "{} / {}{at}: credential {derived:?}, suite says {:?}",
                    group.name, case.name, case.credential
                ));
            } else if let Some(got) = mismatch {
                report.failed.push(format!(
                    "{} / {}{at}: expected {}, got {got}",
                    group.name, case.name, case.expect
                ));
            } else {
                report.passed += 1;
            }
        }
    }
    Ok(())
}

fn unhex_vec(text: &str) -> Result<Vec<u8>> {
    hex::decode(text).map_err(|e| Error::Invalid {
        what: "hex",
        value: text.chars().take(16).collect(),
        why: e.to_string(),
    })
}

fn unhex(text: &str) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(unhex_vec(text)?.as_slice()).map_err(|_| Error::Invalid {
        what: "sha256",
        value: text.to_owned(),
        why: "expected 64 hex digits".to_owned(),
    })
}
