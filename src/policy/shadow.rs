//! Shadow mode: a candidate policy evaluated beside the live one on real traffic, never served.
//!
//! For each request the candidate answers too, and the two answers are compared
//! path by path (the leaf paths of the two filtered outputs, `[]` for items):
//! what the candidate would release that the live policy does not, what it
//! would withhold, what it would release transformed differently, and whether
//! it would refuse differently. Differences are counted in
//! `caf_broker_policy_shadow_diff_total{purpose, kind}` (one per path, one per
//! refusal) and logged once per (purpose, path, kind): paths and codes only,
//! never a value.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde_json::Value;

use crate::domain::{Purpose, Role};
use crate::telemetry;

use super::{Policy, PolicyError, Refusal};

/// Distinct (purpose, path, kind) triples logged at most; counting goes on beyond it.
const MAX_LOGGED: usize = 1024;

/// Whether each policy permits the pair: `None` is permitted, `Some` the refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalChange {
    pub live: Option<Refusal>,
    pub shadow: Option<Refusal>,
}

/// How the shadow's answer to one request differs from the live one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShadowDiff {
    /// Set when the two policies do not permit or refuse the pair alike.
    pub refusal: Option<RefusalChange>,
    /// Paths the shadow would release and the live policy does not, sorted.
    pub would_release: Vec<String>,
    /// Paths the live policy releases and the shadow would withhold, sorted.
    pub would_withhold: Vec<String>,
    /// Paths both release, with different values (another transform), sorted.
    pub would_change: Vec<String>,
}

impl ShadowDiff {
    /// Whether the shadow would have answered exactly like the live policy.
    pub fn is_empty(&self) -> bool {
        self.refusal.is_none()
            && self.would_release.is_empty()
            && self.would_withhold.is_empty()
            && self.would_change.is_empty()
    }
}

/// A candidate policy compared with the live one; nothing is ever served from it.
#[derive(Debug)]
pub struct ShadowPolicy {
    policy: Policy,
    logged: Mutex<BTreeSet<(String, String, &'static str)>>,
}

impl ShadowPolicy {
    /// Loads and validates the candidate policy file (its policy tests are not
    /// required to pass: it is a candidate).
    pub fn load(path: &Path) -> Result<ShadowPolicy, PolicyError> {
        Ok(ShadowPolicy::new(Policy::from_file(path)?))
    }

    pub fn new(policy: Policy) -> ShadowPolicy {
        ShadowPolicy {
            policy,
            logged: Mutex::new(BTreeSet::new()),
        }
    }

    /// The candidate policy, e.g. for `check` to print its version and warnings.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn version(&self) -> &str {
        self.policy.version()
    }

    /// How the shadow would answer `record` differently; counts and logs the differences.
    pub fn compare(
        &self,
        live: &Policy,
        role: &Role,
        purpose: &Purpose,
        record: &Value,
    ) -> ShadowDiff {
        let diff = self.diff(live, role, purpose, record);
        if !diff.is_empty() {
            self.report(live, role, purpose, &diff);
        }
        diff
    }

    /// For a request the live policy refused (so no record was fetched): whether
    /// the shadow would have refused it alike; counts and logs a difference.
    pub fn compare_refusal(
        &self,
        live: &Policy,
        role: &Role,
        purpose: &Purpose,
    ) -> Option<RefusalChange> {
        let change = refusal_change(live, &self.policy, role, purpose)?;
        let diff = ShadowDiff {
            refusal: Some(change),
            ..ShadowDiff::default()
        };
        self.report(live, role, purpose, &diff);
        Some(change)
    }

    /// The comparison alone, without counting or logging.
    pub fn diff(
        &self,
        live: &Policy,
        role: &Role,
        purpose: &Purpose,
        record: &Value,
    ) -> ShadowDiff {
        let refusal = refusal_change(live, &self.policy, role, purpose);
        let live_data = live
            .authorize(role, purpose)
            .ok()
            .map(|v| v.filter(record).data);
        let shadow_data = self
            .policy
            .authorize(role, purpose)
            .ok()
            .map(|v| v.filter(record).data);
        let mut diff = ShadowDiff {
            refusal,
            ..ShadowDiff::default()
        };
        // The common case, both answers equal, costs one comparison and no path walk.
        if live_data == shadow_data {
            return diff;
        }
        let live_leaves = leaves_of(live_data.as_ref());
        let shadow_leaves = leaves_of(shadow_data.as_ref());
        for (path, values) in &shadow_leaves {
            match live_leaves.get(path) {
                None => diff.would_release.push(path.clone()),
                Some(live_values) if live_values != values => diff.would_change.push(path.clone()),
                Some(_) => {}
            }
        }
        diff.would_withhold = live_leaves
            .keys()
            .filter(|path| !shadow_leaves.contains_key(*path))
            .cloned()
            .collect();
        diff
    }

    fn report(&self, live: &Policy, role: &Role, purpose: &Purpose, diff: &ShadowDiff) {
        let kinds: [(&'static str, &[String]); 3] = [
            ("release", &diff.would_release),
            ("withhold", &diff.would_withhold),
            ("change", &diff.would_change),
        ];
        for (kind, paths) in kinds {
            if paths.is_empty() {
                continue;
            }
            telemetry::record_policy_shadow_diff(purpose.as_str(), kind, paths.len());
            for path in paths {
                if self.first_time(purpose, path, kind) {
                    tracing::info!(
                        purpose = %purpose,
                        kind,
                        path = %path,
                        live = %live.version(),
                        shadow = %self.version(),
                        "the shadow policy would answer this path differently"
                    );
                }
            }
        }
        if let Some(change) = diff.refusal {
            telemetry::record_policy_shadow_diff(purpose.as_str(), "refusal", 1);
            if self.first_time(purpose, role.as_str(), "refusal") {
                let code = |r: Option<Refusal>| r.map_or("permitted", Refusal::code);
                tracing::info!(
                    purpose = %purpose,
                    role = %role,
                    kind = "refusal",
                    live_outcome = code(change.live),
                    shadow_outcome = code(change.shadow),
                    live = %live.version(),
                    shadow = %self.version(),
                    "the shadow policy would decide this request differently"
                );
            }
        }
    }

    /// Whether (purpose, path, kind) is logged for the first time (and there is room to remember it).
    fn first_time(&self, purpose: &Purpose, path: &str, kind: &'static str) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (purpose.as_str().to_owned(), path.to_owned(), kind);
        if logged.contains(&key) || logged.len() >= MAX_LOGGED {
            return false;
        }
        logged.insert(key)
    }
}

fn refusal_change(
    live: &Policy,
    shadow: &Policy,
    role: &Role,
    purpose: &Purpose,
) -> Option<RefusalChange> {
    let live = live.authorize(role, purpose).err();
    let shadow = shadow.authorize(role, purpose).err();
    (live != shadow).then_some(RefusalChange { live, shadow })
}

/// The leaf paths of a filtered output (`[]` for items), each with its values in order.
/// Nulls and empty objects or arrays are leaves too: releasing them says something.
fn leaves_of(data: Option<&Value>) -> BTreeMap<String, Vec<&Value>> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(fields)) = data {
        for (key, value) in fields {
            collect(value, key.clone(), &mut out);
        }
    }
    out
}

fn collect<'a>(value: &'a Value, path: String, out: &mut BTreeMap<String, Vec<&'a Value>>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (key, inner) in fields {
                collect(inner, format!("{path}.{key}"), out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let inner = format!("{path}[]");
            for item in items {
                collect(item, inner.clone(), out);
            }
        }
        _ => out.entry(path).or_default().push(value),
    }
}

#[cfg(test)]
mod tests {
    use super::super::load_tests::{SHIPPED, shipped};
    use super::*;
    use crate::telemetry::TestRecorder;

    const FIXTURE: &str = include_str!("../../config/policy-tests/fixtures/1000002.json");

    fn role(name: &str) -> Role {
        Role::parse(name).unwrap()
    }

    fn purpose(name: &str) -> Purpose {
        Purpose::parse(name).unwrap()
    }

    /// The shipped policy with verification_radiation releasing `regime`, no
    /// longer `mise_a_jour`, and the radiation motive uncoarsened.
    fn candidate() -> ShadowPolicy {
        let text = std::fs::read_to_string(SHIPPED).unwrap();
        let edited = text
            .replacen(
                "  \"numero_allocataire\",\n",
                "  \"numero_allocataire\",\n  \"regime\",\n",
                1,
            )
            .replacen("  \"mise_a_jour\",\n", "", 1)
            .replacen(
                "\"*\" = \"AUTRE\" } }",
                "\"*\" = \"AUTRE\", DECES = \"DECES\" } }",
                1,
            );
        assert_ne!(edited, text);
        ShadowPolicy::new(Policy::from_toml(&edited, "candidate.toml").unwrap())
    }

    #[test]
    fn an_identical_candidate_shows_no_difference() {
        let live = shipped();
        let shadow = ShadowPolicy::new(shipped());
        let record: Value = serde_json::from_str(FIXTURE).unwrap();
        for r in live.roles() {
            for p in live.purposes_of(r) {
                assert!(shadow.diff(&live, r, p, &record).is_empty());
            }
        }
    }

    #[test]
    fn the_diff_names_paths_released_withheld_and_changed_without_values() {
        let live = shipped();
        let shadow = candidate();
        let record: Value = serde_json::from_str(FIXTURE).unwrap();
        let agent = role("agent_consulaire");
        let radiation = purpose("verification_radiation");
        let diff = shadow.diff(&live, &agent, &radiation, &record);
        assert_eq!(diff.refusal, None);
        assert_eq!(diff.would_release, ["regime"]);
        // mise_a_jour is gone everywhere it was released.
        assert!(
            diff.would_withhold.contains(&"mise_a_jour".to_owned()),
            "{diff:?}"
        );
        // 1000002 is radiated for RESIDENCE_HORS_FRANCE: the map gives the same value.
        assert!(diff.would_change.is_empty(), "{diff:?}");
        let mut deceased = record.clone();
        deceased["radiation"]["motif"] = Value::from("DECES");
        let diff = shadow.diff(&live, &agent, &radiation, &deceased);
        assert_eq!(diff.would_change, ["radiation.motif"]);
    }

    #[test]
    fn comparing_counts_per_purpose_and_kind() {
        let live = shipped();
        let shadow = candidate();
        let record: Value = serde_json::from_str(FIXTURE).unwrap();
        let recorder = TestRecorder::default();
        recorder.record(|| {
            for _ in 0..3 {
                shadow.compare(
                    &live,
                    &role("agent_consulaire"),
                    &purpose("verification_radiation"),
                    &record,
                );
            }
        });
        let count = |kind: &str| {
            recorder.counter(&format!(
                "caf_broker_policy_shadow_diff_total{{purpose=verification_radiation,kind={kind}}}"
            ))
        };
        assert_eq!(count("release"), 3);
        assert_eq!(count("withhold"), 3);
        assert_eq!(count("refusal"), 0);
        // Each triple is remembered once for the logs.
        assert_eq!(shadow.logged.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_refusal_difference_is_reported_and_everything_live_released_is_withheld() {
        let live = shipped();
        let text = std::fs::read_to_string(SHIPPED).unwrap();
        let edited = text.replacen(
            "purposes = [\"verification_radiation\", \"controle_fraude\"]",
            "purposes = [\"verification_radiation\"]",
            1,
        );
        assert_ne!(edited, text);
        let shadow = ShadowPolicy::new(Policy::from_toml(&edited, "c.toml").unwrap());
        let record: Value = serde_json::from_str(FIXTURE).unwrap();
        let agent = role("agent_consulaire");
        let fraude = purpose("controle_fraude");
        let diff = shadow.diff(&live, &agent, &fraude, &record);
        assert_eq!(
            diff.refusal,
            Some(RefusalChange {
                live: None,
                shadow: Some(Refusal::PurposeNotPermitted)
            })
        );
        assert!(
            diff.would_withhold
                .contains(&"allocataire.nom_naissance".to_owned())
        );
        assert!(diff.would_release.is_empty());
        let recorder = TestRecorder::default();
        let change = recorder.record(|| shadow.compare_refusal(&live, &agent, &fraude));
        assert!(change.is_some());
        assert_eq!(
            recorder.counter(
                "caf_broker_policy_shadow_diff_total{purpose=controle_fraude,kind=refusal}"
            ),
            1
        );
        let social = purpose("accompagnement_social");
        assert_eq!(shadow.compare_refusal(&live, &agent, &social), None);
    }
}
