//! Plan stage: desired state vs what the engine runs -> a list of changes.
//!
//! Pure: [`diff`] takes the [`Desired`] state and an [`Observed`] snapshot
//! and returns a [`Plan`]; talking to the engine is `apply`'s job. A plan
//! records a fingerprint of the state it was made from, so a saved plan is
//! refused once the engine has changed.

pub mod desired;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use desired::{ContainerSpec, Desired, EnvValue, NetworkSpec, desired};

/// Labels stackc puts on every object it creates.
pub const LABEL_STACK: &str = "io.stackc.stack";
pub const LABEL_OWNER: &str = "io.stackc.owner";
pub const LABEL_HASH: &str = "io.stackc.config-hash";
pub const LABEL_SPEC: &str = "io.stackc.spec";
pub const LABEL_VERSION: &str = "io.stackc.version";
/// `next` for a rollout's new version, `previous` for the version a
/// blue-green rollout keeps for instant rollback.
pub const LABEL_TRACK: &str = "io.stackc.track";
/// Unix time until which a kept previous version stays.
pub const LABEL_KEEP_UNTIL: &str = "io.stackc.keep-until";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedContainer {
    pub name: String,
    pub id: String,
    pub running: bool,
    /// Docker health status (`healthy`, `unhealthy`, `starting`), if any.
    pub health: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The image the container was created from.
    pub image: String,
}

impl ObservedContainer {
    pub fn owned_by(&self, stack: &str) -> bool {
        self.labels.get(LABEL_STACK).map(String::as_str) == Some(stack)
            && self.labels.get(LABEL_OWNER).map(String::as_str) == Some("stackc")
    }

    /// For a previous version kept after a blue-green rollout: until when.
    pub fn kept_until(&self) -> Option<u64> {
        if self.labels.get(LABEL_TRACK).map(String::as_str) != Some("previous") {
            return None;
        }
        Some(
            self.labels
                .get(LABEL_KEEP_UNTIL)
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
        )
    }

    fn spec(&self) -> Option<ContainerSpec> {
        self.labels
            .get(LABEL_SPEC)
            .and_then(|s| serde_json::from_str(s).ok())
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ObservedObject {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl ObservedObject {
    pub fn owned_by(&self, stack: &str) -> bool {
        self.labels.get(LABEL_STACK).map(String::as_str) == Some(stack)
            && self.labels.get(LABEL_OWNER).map(String::as_str) == Some("stackc")
    }
}

/// What the engine runs now: every container, network and volume whose
/// name matters to the stack (its own, and any unowned name clash).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Observed {
    pub containers: Vec<ObservedContainer>,
    pub networks: Vec<ObservedObject>,
    pub volumes: Vec<ObservedObject>,
    /// Unix time of the observation: kept previous versions expire by it.
    #[serde(default)]
    pub now: u64,
}

impl Observed {
    /// A stable digest of the observed state: a saved plan is valid only
    /// while the engine still shows this.
    pub fn fingerprint(&self) -> String {
        let mut c: Vec<(&str, &str, bool, Option<&String>)> = self
            .containers
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.id.as_str(),
                    c.running,
                    c.labels.get(LABEL_HASH),
                )
            })
            .collect();
        c.sort();
        let mut n: Vec<&str> = self.networks.iter().map(|n| n.name.as_str()).collect();
        n.sort();
        let mut v: Vec<&str> = self.volumes.iter().map(|n| n.name.as_str()).collect();
        v.sort();
        crate::targets::hash_json(&(c, n, v))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Network,
    Volume,
    Container,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "action")]
pub enum Action {
    Create,
    /// Replace: the definition changed (the settings that changed).
    Recreate {
        reasons: Vec<String>,
    },
    /// The container exists as defined but is not running.
    Start,
    /// Owned by the stack but no longer in the topology (`--prune`).
    Delete,
    /// Owned orphan kept because `--prune` was not given.
    Orphan,
    /// The previous version of a service, kept after a blue-green rollout
    /// for instant rollback (`stackc rollout undo`) until this unix time.
    Standby {
        until: u64,
    },
    /// A kept previous version whose time is up: deleted.
    Expired,
    /// The new version of a service left by a rollout whose apply stopped
    /// (`<instance>-next`): traffic returns to the stable instances, then
    /// it is deleted.
    Leftover,
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: Kind,
    pub name: String,
    #[serde(flatten)]
    pub action: Action,
    pub phase: Option<usize>,
    /// Unified diff of the changed settings, for recreations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub stack: String,
    pub fingerprint: String,
    pub changes: Vec<Change>,
    /// Problems that forbid applying (name clashes with unowned objects).
    pub errors: Vec<String>,
    pub desired: Desired,
}

impl Plan {
    pub fn count(&self, f: impl Fn(&Action) -> bool) -> usize {
        self.changes.iter().filter(|c| f(&c.action)).count()
    }

    /// True when applying would change something.
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| {
            !matches!(
                c.action,
                Action::Unchanged | Action::Orphan | Action::Standby { .. }
            )
        })
    }
}

/// Which settings differ between two specs, and a diff of them.
fn changed_settings(old: &ContainerSpec, new: &ContainerSpec) -> (Vec<String>, String) {
    let a = serde_json::to_value(old).expect("spec");
    let b = serde_json::to_value(new).expect("spec");
    let mut reasons = Vec::new();
    let (mut left, mut right) = (serde_json::Map::new(), serde_json::Map::new());
    for (k, v) in b.as_object().expect("object") {
        let old_v = a.get(k).cloned().unwrap_or(serde_json::Value::Null);
        if &old_v != v {
            reasons.push(format!("{k} changed"));
            left.insert(k.clone(), old_v);
            right.insert(k.clone(), v.clone());
        }
    }
    let l = serde_json::to_string_pretty(&left).expect("json") + "\n";
    let r = serde_json::to_string_pretty(&right).expect("json") + "\n";
    let diff = similar::TextDiff::from_lines(&l, &r)
        .unified_diff()
        .context_radius(2)
        .header("running", "desired")
        .to_string();
    (reasons, diff)
}

/// Compare `desired` with `observed`.
pub fn diff(desired: &Desired, observed: &Observed, prune: bool) -> Plan {
    let stack = desired.stack.as_str();
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    let net = &desired.network;
    match observed.networks.iter().find(|n| n.name == net.name) {
        None => changes.push(Change {
            kind: Kind::Network,
            name: net.name.clone(),
            action: Action::Create,
            phase: None,
            diff: None,
        }),
        Some(n) if !n.owned_by(stack) => errors.push(format!(
            "network `{}` exists and is not owned by stack `{stack}`; stackc will not touch it",
            net.name
        )),
        Some(_) => changes.push(Change {
            kind: Kind::Network,
            name: net.name.clone(),
            action: Action::Unchanged,
            phase: None,
            diff: None,
        }),
    }
    for v in &desired.volumes {
        match observed.volumes.iter().find(|o| &o.name == v) {
            None => changes.push(Change {
                kind: Kind::Volume,
                name: v.clone(),
                action: Action::Create,
                phase: None,
                diff: None,
            }),
            Some(o) if !o.owned_by(stack) => errors.push(format!(
                "volume `{v}` exists and is not owned by stack `{stack}`; stackc will not touch it"
            )),
            Some(_) => changes.push(Change {
                kind: Kind::Volume,
                name: v.clone(),
                action: Action::Unchanged,
                phase: None,
                diff: None,
            }),
        }
    }
    let by_name: HashMap<&str, &ObservedContainer> = observed
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    for spec in &desired.containers {
        let action = match by_name.get(spec.name.as_str()) {
            None => Action::Create,
            Some(o) if !o.owned_by(stack) => {
                errors.push(format!("container `{}` exists and is not owned by stack `{stack}`; stackc will not touch it", spec.name));
                continue;
            }
            Some(o) if o.labels.get(LABEL_HASH) != Some(&spec.hash()) => {
                let (reasons, diff) = match o.spec() {
                    Some(old) => changed_settings(&old, spec),
                    None => (vec!["definition changed".into()], String::new()),
                };
                changes.push(Change {
                    kind: Kind::Container,
                    name: spec.name.clone(),
                    action: Action::Recreate { reasons },
                    phase: Some(spec.phase),
                    diff: (!diff.is_empty()).then_some(diff),
                });
                continue;
            }
            Some(o) if !o.running => Action::Start,
            Some(_) => Action::Unchanged,
        };
        changes.push(Change {
            kind: Kind::Container,
            name: spec.name.clone(),
            action,
            phase: Some(spec.phase),
            diff: None,
        });
    }
    for o in &observed.containers {
        if o.owned_by(stack) && !desired.containers.iter().any(|c| c.name == o.name) {
            let action = if o.labels.get(LABEL_TRACK).map(String::as_str) == Some("next") {
                Action::Leftover
            } else if let Some(until) = o.kept_until() {
                if until > observed.now {
                    Action::Standby { until }
                } else {
                    Action::Expired
                }
            } else if prune {
                Action::Delete
            } else {
                Action::Orphan
            };
            changes.push(Change {
                kind: Kind::Container,
                name: o.name.clone(),
                action,
                phase: None,
                diff: None,
            });
        }
    }
    Plan {
        stack: stack.to_string(),
        fingerprint: observed.fingerprint(),
        changes,
        errors,
        desired: desired.clone(),
    }
}

/// Terraform-style human output.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    for c in &plan.changes {
        let (sym, what) = match &c.action {
            Action::Create => ("+", "create".to_string()),
            Action::Recreate { reasons } => ("-/+", format!("recreate ({})", reasons.join(", "))),
            Action::Start => ("~", "start (stopped)".to_string()),
            Action::Delete => ("-", "delete (no longer in the topology)".to_string()),
            Action::Orphan => (
                "!",
                "orphan: owned but not in the topology; kept (use --prune to delete)".to_string(),
            ),
            Action::Standby { until } => (
                "=",
                format!(
                    "previous version kept for instant rollback until {} (`stackc rollout undo`)",
                    clock(*until)
                ),
            ),
            Action::Expired => (
                "-",
                "delete (previous version kept after a rollout; its time is up)".to_string(),
            ),
            Action::Leftover => (
                "-",
                "delete (new version left by an interrupted rollout; traffic returns to the stable instances first)".to_string(),
            ),
            Action::Unchanged => continue,
        };
        let kind = match c.kind {
            Kind::Network => "network",
            Kind::Volume => "volume",
            Kind::Container => "container",
        };
        let phase = c
            .phase
            .map(|p| format!(" [phase {}]", p + 1))
            .unwrap_or_default();
        out.push_str(&format!("  {sym:<3} {kind} {}{phase}: {what}\n", c.name));
        if let Some(d) = &c.diff {
            for line in d.lines() {
                out.push_str(&format!("        {line}\n"));
            }
        }
    }
    for e in &plan.errors {
        out.push_str(&format!("  error: {e}\n"));
    }
    let create = plan.count(|a| matches!(a, Action::Create));
    let change = plan.count(|a| matches!(a, Action::Recreate { .. } | Action::Start));
    let delete = plan.count(|a| matches!(a, Action::Delete | Action::Expired | Action::Leftover));
    let same = plan.count(|a| matches!(a, Action::Unchanged));
    if plan.has_changes() {
        out.push_str(&format!(
            "Plan: {create} to create, {change} to change, {delete} to delete, {same} unchanged.\n"
        ));
    } else {
        out.push_str(&format!("No changes. {same} objects match the topology.\n"));
    }
    out
}

/// A unix time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn clock(t: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(t);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

/// A unix time as (year, month, day, hour, minute, second) in UTC.
pub(crate) fn civil(t: u64) -> (i64, i64, i64, u64, u64, u64) {
    let (days, rem) = ((t / 86_400) as i64, t % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, (rem % 3600) / 60, rem % 60)
}
