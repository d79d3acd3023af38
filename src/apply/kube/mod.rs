//! Plan, apply, drift and destroy on a Kubernetes cluster, with the
//! manifests `stackc build --target kubernetes` emits, by server-side apply.
//!
//! - [`desired`] builds the manifests in memory, maps images through the
//!   profile and puts every object in a stage: the Namespace, RBAC,
//!   configuration (ConfigMaps, claims, network policies), then one stage
//!   per deploy phase of the graph (an object belongs to the phase of the
//!   component named by its `io.stackc.service` label), then whatever is
//!   outside the graph (CronJobs).
//! - [`plan`] only reads: the Namespace by GET, the stack's objects by a
//!   LIST per kind with the stack's label selector (which also finds the
//!   ones no longer in the topology), a GET for each object the LISTs did
//!   not return (it may exist without the stack's labels; a LIST of the
//!   kind without selector when there are many of one kind), and for
//!   objects the stack owns a server-side dry-run apply whose answer is
//!   compared with the live object (managedFields, resourceVersion, uid,
//!   timestamps and status left out).
//! - [`apply`] applies what the plan says changed, stage by stage, with the
//!   field manager; a phase starts once the Deployments and StatefulSets
//!   of the phases before it are available.
//! - Independent requests (the reads of plan and drift, the writes of one
//!   stage, the deletions of one stage) are sent concurrently, at most
//!   [`Options::concurrency`] in flight; results are put back in object
//!   order, so plans, reports and progress lines do not depend on the
//!   order of the answers.
//! - [`drift`] compares the live objects with a forced dry-run apply: the
//!   fields stackc applies, not the ones others own (replicas of an
//!   autoscaled workload are left to the autoscaler).
//! - [`destroy`] deletes the stack's objects in reverse stage order.
//! - [`rollout`]: blue-green and canary rollouts of the two-Deployment
//!   form; [`observe`] reads the live colour of every blue-green service
//!   into the manifests before anything is compared.
//!
//! Objects without the stack's labels are never changed or deleted.
//! Secrets are never read: their existence is checked with metadata-only
//! requests.

pub mod fake;
pub mod fields;
pub mod rollout;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::autoscaling::v2 as hpa;
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::api::policy::v1 as policy;
use k8s_openapi::api::rbac::v1 as rbac;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::Value;

use crate::graph::Graph;
use crate::model::{DriftIgnore, Topology};
use crate::profile::Profile;
use fields::FieldChange;

pub const LABEL_STACK: &str = crate::targets::LABEL_STACK;
pub const LABEL_OWNER: &str = crate::targets::LABEL_OWNER;
pub const LABEL_COMPONENT: &str = crate::targets::LABEL_SERVICE;

/// The stage an object is applied in.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: String,
    /// Deployments and StatefulSets of this stage gate the next one.
    pub gated: bool,
}

/// One object of the manifests, ready to apply.
#[derive(Debug, Clone)]
pub struct Object {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    /// The component (`io.stackc.service` label).
    pub component: String,
    pub stage: usize,
    pub body: Value,
}

impl Object {
    /// `Deployment api-gateway`.
    pub fn label(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }
}

/// A Secret the manifests refer to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecretRef {
    pub name: String,
    pub used_by: Vec<String>,
}

/// What the cluster should run.
#[derive(Debug, Clone)]
pub struct Desired {
    pub stack: String,
    pub namespace: String,
    pub stages: Vec<Stage>,
    pub objects: Vec<Object>,
    pub secrets: Vec<SecretRef>,
    /// Workloads an HPA scales: their replica count belongs to it once
    /// they exist.
    pub scaled: BTreeSet<(String, String)>,
    /// `claim-statefulset-` prefixes of the claims StatefulSets create.
    pub claim_prefixes: Vec<String>,
    /// The workload stage of every component of the graph.
    pub component_stages: BTreeMap<String, usize>,
    /// Services whose two Deployments rollouts drive.
    pub rollouts: Vec<rollout::Spec>,
    /// Blue-green service -> the colour the manifests make active (blue
    /// until [`observe`] read the cluster).
    pub active: BTreeMap<String, String>,
    /// Deployments of a previous colour kept by `keep-previous`, with the
    /// unix time they are kept until.
    pub kept: BTreeMap<String, u64>,
}

impl Desired {
    /// The stage of a (live) object of `kind` labelled with `component`.
    pub fn stage_of(&self, kind: &str, component: &str) -> usize {
        stage_of_kind(kind).unwrap_or_else(|| {
            self.component_stages
                .get(component)
                .copied()
                .unwrap_or(self.stages.len() - 1)
        })
    }
}

/// How plan and apply act.
#[derive(Debug, Clone)]
pub struct Options {
    pub field_manager: String,
    pub force_conflicts: bool,
    pub prune: bool,
    /// Longest wait for one phase's workloads to become available.
    pub timeout: Duration,
    /// Time between two readiness checks.
    pub poll: Duration,
    /// Where rollout history and operator commands live (none: no
    /// history, no commands).
    pub state_dir: Option<PathBuf>,
    /// Set on Ctrl-C: a running rollout returns traffic to stable and the
    /// apply stops.
    pub cancel: Arc<AtomicBool>,
    /// The most API requests in flight at once (independent reads, the
    /// writes of one stage, the deletions of one stage).
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            field_manager: crate::profile::FIELD_MANAGER.into(),
            force_conflicts: false,
            prune: false,
            timeout: Duration::from_secs(300),
            poll: Duration::from_secs(2),
            state_dir: None,
            cancel: Arc::new(AtomicBool::new(false)),
            concurrency: crate::profile::CONCURRENCY,
        }
    }
}

/// Run `f` on every item with at most `limit` futures in flight, and
/// return the results in the order of `items`, whatever order the
/// answers arrive in. `done` sees each result in that order too, as soon
/// as every earlier item has finished (progress lines stay in order).
///
/// On an error nothing new starts; what is in flight finishes (a write
/// already sent is not abandoned), `done` sees the results that
/// succeeded, and the error of the earliest item is returned.
async fn each<T, R, Fut>(
    limit: usize,
    items: impl IntoIterator<Item = T>,
    f: impl Fn(T) -> Fut,
    done: impl Fn(&R),
) -> Result<Vec<R>, Error>
where
    Fut: Future<Output = Result<R, Error>>,
{
    let mut items = items.into_iter().enumerate();
    let mut pending = FuturesUnordered::new();
    let mut out: Vec<Option<R>> = Vec::new();
    let mut shown = 0;
    let mut failed: Option<(usize, Error)> = None;
    loop {
        while failed.is_none() && pending.len() < limit.max(1) {
            let Some((i, item)) = items.next() else {
                break;
            };
            out.push(None);
            let fut = f(item);
            pending.push(async move { (i, fut.await) });
        }
        let Some((i, r)) = pending.next().await else {
            break;
        };
        match r {
            Ok(v) => out[i] = Some(v),
            Err(e) => {
                if failed.as_ref().is_none_or(|(j, _)| i < *j) {
                    failed = Some((i, e));
                }
            }
        }
        if failed.is_none() {
            while let Some(Some(v)) = out.get(shown) {
                done(v);
                shown += 1;
            }
        }
    }
    if let Some((_, e)) = failed {
        out.iter().skip(shown).flatten().for_each(done);
        return Err(e);
    }
    Ok(out
        .into_iter()
        .map(|v| v.expect("every item answered"))
        .collect())
}

fn stage_of_kind(kind: &str) -> Option<usize> {
    match kind {
        "Namespace" => Some(0),
        "ServiceAccount" | "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding" => Some(1),
        "ConfigMap" | "PersistentVolumeClaim" | "NetworkPolicy" => Some(2),
        _ => None,
    }
}

const FIRST_PHASE: usize = 3;

fn stages(g: &Graph) -> Vec<Stage> {
    let mut s = vec![
        Stage {
            name: "namespace".into(),
            gated: false,
        },
        Stage {
            name: "rbac".into(),
            gated: false,
        },
        Stage {
            name: "configuration".into(),
            gated: false,
        },
    ];
    for p in &g.phases {
        s.push(Stage {
            name: p.name.clone(),
            gated: true,
        });
    }
    s.push(Stage {
        name: "after the phases".into(),
        gated: true,
    });
    s
}

/// The stage of an object of `kind` whose component is `component`.
fn stage_for(g: &Graph, phase_of: &[usize], kind: &str, component: &str) -> usize {
    stage_of_kind(kind).unwrap_or_else(|| match g.index(component) {
        Some(i) => FIRST_PHASE + phase_of[i],
        None => FIRST_PHASE + g.phases.len(),
    })
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Rewrite every container image through the profile's image map.
fn map_images(v: &mut Value, profile: &Profile) {
    match v {
        Value::Object(m) => {
            for key in ["containers", "initContainers"] {
                if let Some(Value::Array(cs)) = m.get_mut(key) {
                    for c in cs {
                        if let Some(Value::String(img)) = c.get_mut("image") {
                            *img = profile.map_image(img);
                        }
                    }
                }
            }
            for child in m.values_mut() {
                map_images(child, profile);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| map_images(i, profile)),
        _ => {}
    }
}

/// Secret names referred to by `v` (env, envFrom, volumes), not optional.
fn secret_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            let optional = m.get("optional").and_then(Value::as_bool) == Some(true);
            for (k, child) in m {
                match k.as_str() {
                    "secretKeyRef" | "secretRef"
                        if child.get("optional") != Some(&Value::Bool(true)) =>
                    {
                        if let Some(n) = child.get("name").and_then(Value::as_str) {
                            out.insert(n.to_string());
                        }
                    }
                    "secretName" if !optional => {
                        if let Some(n) = child.as_str() {
                            out.insert(n.to_string());
                        }
                    }
                    _ => {}
                }
                secret_refs(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| secret_refs(i, out)),
        _ => {}
    }
}

/// The manifests of the topology as objects to apply, in stage order.
pub fn desired(t: &Topology, g: &Graph, profile: &Profile) -> Result<Desired, String> {
    let (arts, _warnings) = crate::targets::build(t, g, &[crate::targets::Target::Kubernetes]);
    let stack = t.stack.name.value.clone();
    let phase_of = g.phase_of();
    let mut objects = Vec::new();
    let mut secrets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut scaled = BTreeSet::new();
    let mut claim_prefixes = Vec::new();
    for a in &arts {
        if !a.path.ends_with(".yaml") {
            continue;
        }
        for doc in serde_yaml::Deserializer::from_str(&a.content) {
            let mut body: Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| format!("{}: cannot read a generated manifest: {e}", a.path))?;
            if body.is_null() {
                continue;
            }
            let (Some(api_version), Some(kind), Some(name)) = (
                str_at(&body, &["apiVersion"]).map(str::to_string),
                str_at(&body, &["kind"]).map(str::to_string),
                str_at(&body, &["metadata", "name"]).map(str::to_string),
            ) else {
                return Err(format!(
                    "{}: a generated manifest has no apiVersion, kind or name",
                    a.path
                ));
            };
            let namespace = str_at(&body, &["metadata", "namespace"]).map(str::to_string);
            let component = str_at(&body, &["metadata", "labels", LABEL_COMPONENT])
                .unwrap_or(&name)
                .to_string();
            map_images(&mut body, profile);
            let mut refs = BTreeSet::new();
            secret_refs(&body, &mut refs);
            for r in refs {
                secrets.entry(r).or_default().insert(component.clone());
            }
            if kind == "HorizontalPodAutoscaler"
                && let (Some(k), Some(n)) = (
                    str_at(&body, &["spec", "scaleTargetRef", "kind"]),
                    str_at(&body, &["spec", "scaleTargetRef", "name"]),
                )
            {
                scaled.insert((k.to_string(), n.to_string()));
            }
            if kind == "StatefulSet"
                && let Some(Value::Array(ts)) = body.pointer("/spec/volumeClaimTemplates")
            {
                for tpl in ts {
                    if let Some(c) = str_at(tpl, &["metadata", "name"]) {
                        claim_prefixes.push(format!("{c}-{name}-"));
                    }
                }
            }
            let stage = stage_for(g, &phase_of, &kind, &component);
            objects.push(Object {
                api_version,
                kind,
                name,
                namespace,
                component,
                stage,
                body,
            });
        }
    }
    objects.sort_by_key(|o| o.stage);
    let namespace = objects
        .iter()
        .find(|o| o.kind == "Namespace")
        .map_or_else(|| stack.clone(), |o| o.name.clone());
    if let Some(want) = profile
        .kubernetes
        .as_ref()
        .and_then(|k| k.namespace.as_ref())
        && *want != namespace
    {
        return Err(format!(
            "the target profile `{}` applies to namespace `{want}`, but the manifests of stack `{stack}` use `{namespace}`: set `kubernetes namespace=\"{want}\"` in the topology (or an env override), or change the profile",
            profile.name
        ));
    }
    let rollouts = rollout::specs(t, &objects, &scaled);
    let active = rollouts
        .iter()
        .filter(|r| r.policy.strategy == crate::model::RolloutStrategy::BlueGreen)
        .map(|r| (r.service.clone(), "blue".to_string()))
        .collect();
    Ok(Desired {
        stack,
        namespace,
        stages: stages(g),
        objects,
        rollouts,
        active,
        kept: BTreeMap::new(),
        secrets: secrets
            .into_iter()
            .map(|(name, users)| SecretRef {
                name,
                used_by: users.into_iter().collect(),
            })
            .collect(),
        scaled,
        claim_prefixes,
        component_stages: g
            .components
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), FIRST_PHASE + phase_of[i]))
            .collect(),
    })
}

/// Read the live colour of every blue-green service and make the
/// manifests say it (see [`rollout`]); call before [`plan`], [`apply`]
/// and [`drift`].
pub async fn observe(client: &Client, desired: &mut Desired) -> Result<(), Error> {
    let live = rollout::read_live(client, desired).await?;
    rollout::set_live(desired, &live);
    Ok(())
}

// ---------------------------------------------------------------------------
// API resources

/// The REST resource of a kind, and whether it lives in a namespace.
#[derive(Debug, Clone)]
pub struct Resource {
    pub ar: ApiResource,
    pub namespaced: bool,
}

fn erase<K: k8s_openapi::Resource + kube::Resource<DynamicType = ()>>(
    namespaced: bool,
) -> Resource {
    Resource {
        ar: ApiResource::erase::<K>(&()),
        namespaced,
    }
}

/// The built-in kinds the emitter writes (and the ones stackc lists to
/// find the stack's objects), in stage order.
fn builtin_kinds() -> Vec<Resource> {
    vec![
        erase::<core::Namespace>(false),
        erase::<core::ServiceAccount>(true),
        erase::<rbac::Role>(true),
        erase::<rbac::RoleBinding>(true),
        erase::<core::ConfigMap>(true),
        erase::<core::PersistentVolumeClaim>(true),
        erase::<net::NetworkPolicy>(true),
        erase::<apps::StatefulSet>(true),
        erase::<apps::Deployment>(true),
        erase::<core::Service>(true),
        erase::<policy::PodDisruptionBudget>(true),
        erase::<hpa::HorizontalPodAutoscaler>(true),
        erase::<batch::CronJob>(true),
    ]
}

/// Kinds defined by CRDs that the emitter may write: applied only when the
/// cluster serves their API.
pub const CRD_KINDS: &[(&str, &str)] = &[("autoscaling.k8s.io/v1", "VerticalPodAutoscaler")];

/// The kinds of the cluster that matter to the stack.
#[derive(Debug, Clone, Default)]
pub struct Kinds {
    by_kind: HashMap<(String, String), Resource>,
    /// `(apiVersion, kind)` the cluster does not serve.
    pub missing: BTreeSet<(String, String)>,
}

impl Kinds {
    pub fn get(&self, api_version: &str, kind: &str) -> Option<&Resource> {
        self.by_kind
            .get(&(api_version.to_string(), kind.to_string()))
    }

    /// Every served kind, built-in ones first.
    fn listable(&self) -> Vec<&Resource> {
        let mut v: Vec<&Resource> = self.by_kind.values().collect();
        v.sort_by_key(|r| {
            (
                stage_of_kind(&r.ar.kind).unwrap_or(9),
                r.ar.api_version.clone(),
                r.ar.kind.clone(),
            )
        });
        v
    }
}

/// Built-in kinds from the API types; CRD kinds (and any unknown kind the
/// manifests use) from the cluster's discovery.
pub async fn discover(client: &Client, desired: &Desired) -> Result<Kinds, Error> {
    let mut kinds = Kinds::default();
    for r in builtin_kinds() {
        kinds
            .by_kind
            .insert((r.ar.api_version.clone(), r.ar.kind.clone()), r);
    }
    let mut wanted: BTreeSet<(String, String)> = CRD_KINDS
        .iter()
        .map(|(a, k)| (a.to_string(), k.to_string()))
        .collect();
    for o in &desired.objects {
        if kinds.get(&o.api_version, &o.kind).is_none() {
            wanted.insert((o.api_version.clone(), o.kind.clone()));
        }
    }
    let mut groups: BTreeMap<
        String,
        Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList>,
    > = BTreeMap::new();
    for (api_version, kind) in wanted {
        if !groups.contains_key(&api_version) {
            let list = if api_version.contains('/') {
                client.list_api_group_resources(&api_version).await
            } else {
                client.list_core_api_resources(&api_version).await
            };
            let list = match list {
                Ok(l) => Some(l),
                Err(kube::Error::Api(s)) if s.code == 404 => None,
                Err(e) => return Err(Error::from_kube(&format!("discovery of {api_version}"), e)),
            };
            groups.insert(api_version.clone(), list);
        }
        let found = groups[&api_version].as_ref().and_then(|l| {
            l.resources
                .iter()
                .find(|r| r.kind == kind && !r.name.contains('/'))
        });
        match found {
            Some(r) => {
                let (group, version) = api_version
                    .split_once('/')
                    .map_or((String::new(), api_version.clone()), |(g, v)| {
                        (g.to_string(), v.to_string())
                    });
                kinds.by_kind.insert(
                    (api_version.clone(), kind.clone()),
                    Resource {
                        ar: ApiResource {
                            group,
                            version,
                            api_version: api_version.clone(),
                            kind: kind.clone(),
                            plural: r.name.clone(),
                        },
                        namespaced: r.namespaced,
                    },
                );
            }
            None => {
                kinds.missing.insert((api_version, kind));
            }
        }
    }
    Ok(kinds)
}

fn api(
    client: &Client,
    r: &Resource,
    namespace: Option<&str>,
    default_ns: &str,
) -> Api<DynamicObject> {
    if r.namespaced {
        Api::namespaced_with(client.clone(), namespace.unwrap_or(default_ns), &r.ar)
    } else {
        Api::all_with(client.clone(), &r.ar)
    }
}

// ---------------------------------------------------------------------------
// Errors

/// An API error, worded for the person running stackc.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub message: String,
    /// HTTP status, when the API server answered one.
    pub code: Option<u16>,
}

impl Error {
    fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            code: None,
        }
    }

    /// `what` failed with `e`.
    pub fn from_kube(what: &str, e: kube::Error) -> Error {
        match e {
            kube::Error::Api(s) => {
                let message = match s.code {
                    409 => {
                        let managers = conflict_managers(&s.message);
                        format!(
                            "{what}: conflict: {} field(s) stackc applies {}; run with --force-conflicts to take them over ({})",
                            if managers.is_empty() {
                                "another field manager owns".to_string()
                            } else {
                                format!(
                                    "{} owns",
                                    managers
                                        .iter()
                                        .map(|m| format!("field manager `{m}`"))
                                        .collect::<Vec<_>>()
                                        .join(" and ")
                                )
                            },
                            "with a different value",
                            s.message
                        )
                    }
                    422 => format!(
                        "{what}: rejected as invalid by the API server: {}",
                        s.message
                    ),
                    403 => format!("{what}: forbidden: {}", s.message),
                    401 => format!(
                        "{what}: not authorized (check the kubeconfig credentials): {}",
                        s.message
                    ),
                    _ => format!(
                        "{what}: the API server answered {} {}: {}",
                        s.code, s.reason, s.message
                    ),
                };
                Error {
                    message,
                    code: Some(s.code),
                }
            }
            other => Error::new(format!("{what}: cannot reach the API server: {other}")),
        }
    }
}

/// The managers named in a server-side apply conflict message
/// (`conflict with "kubectl-edit" using apps/v1: .spec.replicas`).
pub fn conflict_managers(message: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = message;
    while let Some(i) = rest.find("conflict with \"") {
        rest = &rest[i + "conflict with \"".len()..];
        if let Some(end) = rest.find('"') {
            let m = rest[..end].to_string();
            if !out.contains(&m) {
                out.push(m);
            }
            rest = &rest[end..];
        }
    }
    out
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Comparison

/// The object without what the server owns: managedFields, resourceVersion,
/// uid, timestamps, generation, status.
pub fn strip(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
            "selfLink",
        ] {
            m.remove(k);
        }
    }
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    v
}

/// Who owns which fields of a live object.
fn owners(live: &Value) -> Vec<(String, BTreeSet<fields::Path>)> {
    live.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| {
                    let m = e.get("manager")?.as_str()?.to_string();
                    Some((m, fields::from_fields_v1(e.get("fieldsV1")?)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Changed fields from `live` to `after`, each with the manager owning
/// the live value when that is not `manager`.
fn field_changes(live: &Value, after: &Value, manager: &str) -> Vec<FieldChange> {
    let own = owners(live);
    let mut c = fields::changes(&strip(live), &strip(after));
    for ch in &mut c {
        ch.owner = own
            .iter()
            .find(|(m, set)| {
                m != manager
                    && set
                        .iter()
                        .any(|p| ch.segs.starts_with(p) || p.starts_with(&ch.segs))
            })
            .map(|(m, _)| m.clone());
    }
    c
}

fn unified(live: &Value, after: &Value) -> String {
    let a = serde_yaml::to_string(&strip(live)).unwrap_or_default();
    let b = serde_yaml::to_string(&strip(after)).unwrap_or_default();
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(2)
        .header("live", "desired")
        .to_string()
}

fn owned_by(v: &Value, stack: &str) -> bool {
    str_at(v, &["metadata", "labels", LABEL_STACK]) == Some(stack)
        && str_at(v, &["metadata", "labels", LABEL_OWNER]) == Some(crate::targets::OWNER)
}

/// What to send for an object: the manifest, without `spec.replicas` for a
/// workload an autoscaler scales. The replica count is the autoscaler's:
/// if stackc applied it, every apply would reset it (or fight the
/// autoscaler's field manager), so it starts at the API default and the
/// autoscaler raises it to its minimum.
fn apply_body(desired: &Desired, o: &Object) -> Value {
    let mut body = o.body.clone();
    if desired.scaled.contains(&(o.kind.clone(), o.name.clone()))
        && let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("replicas");
    }
    body
}

// ---------------------------------------------------------------------------
// Plan

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Unchanged,
    /// Owned by the stack, not in the topology: deleted (`--prune`).
    Prune,
    /// Owned by the stack, not in the topology: kept (no `--prune`).
    Orphan,
    /// Its API is not served by the cluster: not applied.
    Skip,
    /// Exists without the stack's labels: used as it is, never changed.
    External,
    /// The previous colour of a blue-green rollout, kept running without
    /// traffic for `keep-previous`: left as it is until the time is up.
    Kept,
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub api_version: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub component: String,
    pub stage: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(skip)]
    pub stage_index: usize,
    /// Index into `Desired::objects`.
    #[serde(skip)]
    pub object: Option<usize>,
}

impl Change {
    pub fn label(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub stack: String,
    pub namespace: String,
    pub changes: Vec<Change>,
    /// Rollouts the apply runs instead of updating those Deployments in
    /// place.
    pub rollouts: Vec<rollout::Pending>,
    /// Kept previous colours (Deployment -> unix time kept until).
    pub kept: BTreeMap<String, u64>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

impl Plan {
    pub fn count(&self, a: Action) -> usize {
        self.changes.iter().filter(|c| c.action == a).count()
    }

    pub fn has_changes(&self) -> bool {
        self.changes
            .iter()
            .any(|c| matches!(c.action, Action::Create | Action::Update | Action::Prune))
    }
}

fn change(desired: &Desired, o: &Object, i: usize, action: Action) -> Change {
    Change {
        api_version: o.api_version.clone(),
        kind: o.kind.clone(),
        namespace: o.namespace.clone(),
        name: o.name.clone(),
        component: o.component.clone(),
        stage: desired.stages[o.stage].name.clone(),
        action,
        fields: Vec::new(),
        diff: None,
        stage_index: o.stage,
        object: Some(i),
    }
}

/// Server-side dry-run apply of `o`: what it would become.
async fn dry_run(
    client: &Client,
    desired: &Desired,
    r: &Resource,
    o: &Object,
    manager: &str,
    force: bool,
) -> Result<Value, Error> {
    let mut pp = PatchParams::apply(manager).dry_run();
    if force {
        pp = pp.force();
    }
    let body = apply_body(desired, o);
    api(client, r, o.namespace.as_deref(), &desired.namespace)
        .patch(&o.name, &pp, &Patch::Apply(&body))
        .await
        .map(|d| serde_json::to_value(d).unwrap_or_default())
        .map_err(|e| Error::from_kube(&o.label(), e))
}

/// Objects per page of a LIST (the API server's `limit`/`continue`).
const LIST_PAGE: u32 = 500;

/// The stack's live objects of every served kind (LIST with the stack's
/// label selector, page by page, the kinds `concurrency` at a time), with
/// their kind, in the order of [`Kinds::listable`] then of the server.
async fn list_owned(
    client: &Client,
    desired: &Desired,
    kinds: &Kinds,
    concurrency: usize,
) -> Result<Vec<(Resource, Value)>, Error> {
    let selector = format!(
        "{LABEL_STACK}={},{LABEL_OWNER}={}",
        desired.stack,
        crate::targets::OWNER
    );
    let selector = selector.as_str();
    let lists = each(
        concurrency,
        kinds.listable(),
        |r| async move {
            let mut out = Vec::new();
            let lp = ListParams::default().labels(selector);
            list_pages(client, desired, r, lp, |v| {
                // The selector said so; never act on the server's word alone.
                if owned_by(&v, &desired.stack) {
                    out.push((r.clone(), v));
                }
            })
            .await?;
            Ok(out)
        },
        |_| {},
    )
    .await?;
    Ok(lists.into_iter().flatten().collect())
}

/// LIST the objects of `r` in the stack's namespace (cluster-wide for a
/// cluster-scoped kind), [`LIST_PAGE`] at a time, each to `keep` with its
/// type.
async fn list_pages(
    client: &Client,
    desired: &Desired,
    r: &Resource,
    lp: ListParams,
    mut keep: impl FnMut(Value),
) -> Result<(), Error> {
    let a = api(client, r, None, &desired.namespace);
    let mut lp = lp.limit(LIST_PAGE);
    loop {
        let list = a
            .list(&lp)
            .await
            .map_err(|e| Error::from_kube(&format!("listing {}s", r.ar.kind), e))?;
        for item in list.items {
            let mut v = serde_json::to_value(&item).unwrap_or_default();
            // The items of a LIST may come without their type.
            if let Some(m) = v.as_object_mut() {
                m.entry("apiVersion")
                    .or_insert_with(|| Value::String(r.ar.api_version.clone()));
                m.entry("kind")
                    .or_insert_with(|| Value::String(r.ar.kind.clone()));
            }
            keep(v);
        }
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(()),
        }
    }
}

/// From this many objects of one kind that the stack's LIST did not
/// return on, plan reads that kind by one LIST of the namespace (every
/// object of the kind, paged) instead of a GET each.
const UNLISTED_BY_LIST: usize = 64;

/// The objects of the topology the stack's LIST did not return (missing,
/// or there without the stack's labels), for the kinds with at least
/// [`UNLISTED_BY_LIST`] of them in the stack's namespace: those kinds
/// are LISTed without a selector. Returns the kinds read that way, and
/// the live objects found among them.
async fn list_unlisted(
    client: &Client,
    desired: &Desired,
    kinds: &Kinds,
    listed: &HashMap<Key, &Value>,
    concurrency: usize,
) -> Result<(BTreeSet<(String, String)>, HashMap<Key, Value>), Error> {
    let mut count: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut wanted: BTreeSet<Key> = BTreeSet::new();
    for o in &desired.objects {
        let Some(r) = kinds.get(&o.api_version, &o.kind) else {
            continue;
        };
        let key = object_key(desired, r, o);
        if !r.namespaced || key.2 != desired.namespace || listed.contains_key(&key) {
            continue;
        }
        *count
            .entry((o.api_version.clone(), o.kind.clone()))
            .or_default() += 1;
        wanted.insert(key);
    }
    let heavy: Vec<&Resource> = count
        .iter()
        .filter(|(_, n)| **n >= UNLISTED_BY_LIST)
        .filter_map(|((a, k), _)| kinds.get(a, k))
        .collect();
    let wanted = &wanted;
    let found = each(
        concurrency,
        heavy.clone(),
        |r| async move {
            let mut out = Vec::new();
            list_pages(client, desired, r, ListParams::default(), |v| {
                let key = live_key(r, &v);
                if wanted.contains(&key) {
                    out.push((key, v));
                }
            })
            .await?;
            Ok(out)
        },
        |_| {},
    )
    .await?;
    Ok((
        heavy
            .iter()
            .map(|r| (r.ar.api_version.clone(), r.ar.kind.clone()))
            .collect(),
        found.into_iter().flatten().collect(),
    ))
}

/// The live object `o`, if it exists (a GET).
async fn get_live(
    client: &Client,
    desired: &Desired,
    r: &Resource,
    o: &Object,
) -> Result<Option<Value>, Error> {
    Ok(api(client, r, o.namespace.as_deref(), &desired.namespace)
        .get_opt(&o.name)
        .await
        .map_err(|e| Error::from_kube(&o.label(), e))?
        .map(|d| serde_json::to_value(d).unwrap_or_default()))
}

/// The live state of `o` as plan and drift read it: from the stack's
/// LIST (`listed`), else from the LIST of its kind when that kind was
/// read whole (`read_kinds`, `others`), else by a GET of its name.
async fn find_live<'a>(
    client: &Client,
    desired: &Desired,
    r: &Resource,
    o: &Object,
    listed: &HashMap<Key, &'a Value>,
    read_kinds: &BTreeSet<(String, String)>,
    others: &'a HashMap<Key, Value>,
) -> Result<Option<std::borrow::Cow<'a, Value>>, Error> {
    use std::borrow::Cow;
    let key = object_key(desired, r, o);
    if let Some(v) = listed.get(&key) {
        return Ok(Some(Cow::Borrowed(*v)));
    }
    if r.namespaced
        && key.2 == desired.namespace
        && read_kinds.contains(&(o.api_version.clone(), o.kind.clone()))
    {
        return Ok(others.get(&key).map(Cow::Borrowed));
    }
    Ok(get_live(client, desired, r, o).await?.map(Cow::Owned))
}

/// `(apiVersion, kind, namespace or "", name)` of a live object.
type Key = (String, String, String, String);

fn live_key(r: &Resource, v: &Value) -> Key {
    (
        r.ar.api_version.clone(),
        r.ar.kind.clone(),
        str_at(v, &["metadata", "namespace"])
            .unwrap_or_default()
            .to_string(),
        str_at(v, &["metadata", "name"])
            .unwrap_or_default()
            .to_string(),
    )
}

fn object_key(desired: &Desired, r: &Resource, o: &Object) -> Key {
    (
        r.ar.api_version.clone(),
        r.ar.kind.clone(),
        if r.namespaced {
            o.namespace
                .clone()
                .unwrap_or_else(|| desired.namespace.clone())
        } else {
            String::new()
        },
        o.name.clone(),
    )
}

/// The listed objects by key.
fn by_key(owned: &[(Resource, Value)]) -> HashMap<Key, &Value> {
    owned.iter().map(|(r, v)| (live_key(r, v), v)).collect()
}

/// From this many Secrets on, plan checks them with one LIST of the
/// namespace's Secrets' metadata instead of a GET each.
const SECRETS_BY_LIST: usize = 32;

/// Secrets the manifests need that do not exist, in the order of
/// `desired.secrets`. Metadata only: a Secret's data is never read. A
/// GET each (`concurrency` in flight), or for many of them a LIST of the
/// namespace's Secrets' metadata, page by page (by GETs again when the
/// credentials may not list Secrets).
async fn missing_secrets<'d>(
    client: &Client,
    desired: &'d Desired,
    namespace_exists: bool,
    concurrency: usize,
) -> Result<Vec<&'d SecretRef>, Error> {
    if !namespace_exists {
        return Ok(desired.secrets.iter().collect());
    }
    let secrets: Api<core::Secret> = Api::namespaced(client.clone(), &desired.namespace);
    if desired.secrets.len() >= SECRETS_BY_LIST {
        let mut names = BTreeSet::new();
        let mut lp = ListParams::default().limit(LIST_PAGE);
        let listed = loop {
            match secrets.list_metadata(&lp).await {
                Ok(list) => {
                    names.extend(list.items.into_iter().filter_map(|m| m.metadata.name));
                    match list.metadata.continue_.filter(|c| !c.is_empty()) {
                        Some(c) => lp = lp.continue_token(&c),
                        None => break true,
                    }
                }
                Err(e) if api_code(&e) == Some(403) => break false,
                Err(e) => return Err(Error::from_kube("listing Secrets", e)),
            }
        };
        if listed {
            return Ok(desired
                .secrets
                .iter()
                .filter(|s| !names.contains(&s.name))
                .collect());
        }
    }
    let secrets = &secrets;
    let found = each(
        concurrency,
        &desired.secrets,
        |s| async move {
            secrets
                .get_metadata_opt(&s.name)
                .await
                .map(|m| (s, m.is_some()))
                .map_err(|e| Error::from_kube(&format!("Secret {}", s.name), e))
        },
        |_| {},
    )
    .await?;
    Ok(found
        .into_iter()
        .filter(|(_, exists)| !exists)
        .map(|(s, _)| s)
        .collect())
}

/// A claim a StatefulSet created from its templates.
fn is_template_claim(desired: &Desired, name: &str) -> bool {
    desired.claim_prefixes.iter().any(|p| {
        name.strip_prefix(p.as_str())
            .is_some_and(|n| n.parse::<u32>().is_ok())
    })
}

/// What plan found for one desired object.
#[derive(Default)]
struct Looked {
    change: Option<Change>,
    warning: Option<String>,
    error: Option<String>,
    /// A Deployment of a rollout, with its live state.
    rollout: Option<(String, Value)>,
}

impl Looked {
    fn change(c: Change) -> Looked {
        Looked {
            change: Some(c),
            ..Looked::default()
        }
    }
}

/// Plan one object whose live state (`None`: missing) is known: a
/// dry-run apply when the stack owns it.
#[allow(clippy::too_many_arguments)]
async fn plan_object(
    client: &Client,
    desired: &Desired,
    opts: &Options,
    r: &Resource,
    o: &Object,
    i: usize,
    live: Option<&Value>,
    rollout_deployments: &BTreeSet<&str>,
) -> Result<Looked, Error> {
    let Some(live) = live else {
        return Ok(Looked::change(change(desired, o, i, Action::Create)));
    };
    let owned = owned_by(live, &desired.stack);
    let mut l = Looked {
        rollout: (o.kind == "Deployment" && rollout_deployments.contains(o.name.as_str()) && owned)
            .then(|| (o.name.clone(), live.clone())),
        ..Looked::default()
    };
    if o.kind == "Deployment"
        && desired.kept.contains_key(&o.name)
        && owned
        && live.pointer("/spec/replicas").and_then(Value::as_i64) > Some(0)
    {
        l.change = Some(change(desired, o, i, Action::Kept));
        return Ok(l);
    }
    if !owned {
        if o.kind == "Namespace" {
            l.warning = Some(format!(
                "namespace `{}` exists without the labels of stack `{}`: it is used as it is and never changed (its Pod Security labels are not set); to let stackc manage it: kubectl label namespace {} {LABEL_STACK}={} {LABEL_OWNER}={}",
                o.name,
                desired.stack,
                o.name,
                desired.stack,
                crate::targets::OWNER
            ));
            l.change = Some(change(desired, o, i, Action::External));
        } else {
            l.error = Some(format!(
                "{} exists in namespace `{}` without the labels of stack `{}`; stackc will not touch it",
                o.label(),
                o.namespace.as_deref().unwrap_or("-"),
                desired.stack
            ));
        }
        return Ok(l);
    }
    match dry_run(
        client,
        desired,
        r,
        o,
        &opts.field_manager,
        opts.force_conflicts,
    )
    .await
    {
        Ok(after) => {
            let fields = field_changes(live, &after, &opts.field_manager);
            let mut c = change(
                desired,
                o,
                i,
                if fields.is_empty() {
                    Action::Unchanged
                } else {
                    Action::Update
                },
            );
            if !fields.is_empty() {
                c.diff = Some(unified(live, &after));
            }
            c.fields = fields;
            l.change = Some(c);
        }
        Err(e) if matches!(e.code, Some(409 | 422 | 400)) => l.error = Some(e.message),
        Err(e) => return Err(e),
    }
    Ok(l)
}

/// Compare the cluster with `desired`. Reads only: GETs, LISTs, discovery
/// and dry-run applies.
pub async fn plan(
    client: &Client,
    desired: &Desired,
    opts: &Options,
) -> Result<(Plan, Kinds), Error> {
    let kinds = discover(client, desired).await?;
    let mut p = Plan {
        stack: desired.stack.clone(),
        namespace: desired.namespace.clone(),
        changes: Vec::new(),
        rollouts: Vec::new(),
        kept: desired.kept.clone(),
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    let mut rollout_live: BTreeMap<String, Value> = BTreeMap::new();
    let rollout_deployments: BTreeSet<&str> = desired
        .rollouts
        .iter()
        .flat_map(|r| r.deployments.iter().map(String::as_str))
        .collect();
    for (api_version, kind) in &kinds.missing {
        if desired
            .objects
            .iter()
            .any(|o| &o.api_version == api_version && &o.kind == kind)
        {
            p.warnings.push(format!(
                "the cluster does not serve {api_version} (no {kind} API: install its CRDs); the {kind} objects are not applied"
            ));
        }
    }
    // The Namespace first: when it does not exist, nothing in it does,
    // and the rest is planned without reading it.
    let ns_index = desired
        .objects
        .iter()
        .position(|o| o.kind == "Namespace" && o.name == desired.namespace);
    let ns_live = match ns_index {
        Some(i) => {
            let o = &desired.objects[i];
            match kinds.get(&o.api_version, &o.kind) {
                Some(r) => get_live(client, desired, r, o).await?,
                None => None,
            }
        }
        None => None,
    };
    let namespace_exists = ns_live.is_some();
    let listing = namespace_exists || ns_index.is_none();
    // The stack's objects by LIST, a few requests per kind: the live
    // state of everything it owns. An object not in it is read by name
    // (it may exist without the stack's labels).
    let owned = if listing {
        list_owned(client, desired, &kinds, opts.concurrency).await?
    } else {
        Vec::new()
    };
    let listed = by_key(&owned);
    // Many objects of a kind not found: whether they exist (without the
    // stack's labels) is read by one LIST of the kind, not a GET each.
    let (read_kinds, others) = if listing {
        list_unlisted(client, desired, &kinds, &listed, opts.concurrency).await?
    } else {
        Default::default()
    };
    let (kinds_ref, listed, ns_live) = (&kinds, &listed, &ns_live);
    let (read_kinds, others) = (&read_kinds, &others);
    let rollout_deployments = &rollout_deployments;
    let looked = each(
        opts.concurrency,
        desired.objects.iter().enumerate(),
        |(i, o)| async move {
            let Some(r) = kinds_ref.get(&o.api_version, &o.kind) else {
                return Ok(Looked::change(change(desired, o, i, Action::Skip)));
            };
            let key = object_key(desired, r, o);
            let live = if Some(i) == ns_index {
                ns_live.as_ref().map(std::borrow::Cow::Borrowed)
            } else if !listing && r.namespaced && key.2 == desired.namespace {
                // Nothing is in a namespace that does not exist.
                None
            } else {
                find_live(client, desired, r, o, listed, read_kinds, others).await?
            };
            plan_object(
                client,
                desired,
                opts,
                r,
                o,
                i,
                live.as_deref(),
                rollout_deployments,
            )
            .await
        },
        |_| {},
    )
    .await?;
    for l in looked {
        p.warnings.extend(l.warning);
        p.changes.extend(l.change);
        p.errors.extend(l.error);
        if let Some((name, live)) = l.rollout {
            rollout_live.insert(name, live);
        }
    }
    let (rollouts, warnings) = rollout::pending(desired, &p.changes, &rollout_live);
    p.rollouts = rollouts;
    p.warnings.extend(warnings);
    for s in missing_secrets(client, desired, namespace_exists, opts.concurrency).await? {
        p.errors.push(format!(
            "Secret `{}` (used by {}) does not exist in namespace `{}`: create it before applying (the commands are in kubernetes/00-namespace.yaml of `stackc build`)",
            s.name,
            s.used_by.join(", "),
            desired.namespace
        ));
    }
    let wanted: BTreeSet<(String, String, Option<String>, String)> = desired
        .objects
        .iter()
        .map(|o| {
            (
                o.api_version.clone(),
                o.kind.clone(),
                o.namespace.clone(),
                o.name.clone(),
            )
        })
        .collect();
    for (r, v) in &owned {
        let name = str_at(v, &["metadata", "name"])
            .unwrap_or_default()
            .to_string();
        let namespace = str_at(v, &["metadata", "namespace"]).map(str::to_string);
        if wanted.contains(&(
            r.ar.api_version.clone(),
            r.ar.kind.clone(),
            namespace.clone(),
            name.clone(),
        )) {
            continue;
        }
        let claim = r.ar.kind == "PersistentVolumeClaim";
        if claim && is_template_claim(desired, &name) {
            continue;
        }
        let component = str_at(v, &["metadata", "labels", LABEL_COMPONENT])
            .unwrap_or_default()
            .to_string();
        let stage = desired.stage_of(&r.ar.kind, &component);
        p.changes.push(Change {
            api_version: r.ar.api_version.clone(),
            kind: r.ar.kind.clone(),
            namespace,
            name,
            component,
            stage: desired.stages[stage].name.clone(),
            // Claims hold data: only `destroy --volumes` removes them.
            action: if opts.prune && !claim {
                Action::Prune
            } else {
                Action::Orphan
            },
            fields: Vec::new(),
            diff: None,
            stage_index: stage,
            object: None,
        });
    }
    Ok((p, kinds))
}

/// When a kept Deployment's time is up, as `HH:MM:SS UTC`.
fn desired_clock(p: &Plan, name: &str) -> String {
    p.kept
        .get(name)
        .map_or_else(|| "?".to_string(), |t| crate::plan::clock(*t))
}

fn show_value(v: Option<&Value>) -> String {
    match v {
        None => "(unset)".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// Terraform-style output.
pub fn render(p: &Plan) -> String {
    let mut out = String::new();
    for w in &p.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    for c in &p.changes {
        let (sym, what) = match c.action {
            Action::Create => ("+", "create".to_string()),
            Action::Update => ("~", format!("update ({} field(s))", c.fields.len())),
            Action::Prune => ("-", "delete (no longer in the topology)".to_string()),
            Action::Orphan => (
                "!",
                if c.kind == "PersistentVolumeClaim" {
                    "orphan: owned but not in the topology; kept (claims are removed only by `destroy --volumes`)".to_string()
                } else {
                    "orphan: owned but not in the topology; kept (use --prune to delete)"
                        .to_string()
                },
            ),
            Action::Skip => (
                "!",
                "skipped: its API is not served by the cluster".to_string(),
            ),
            Action::External => (
                "=",
                "exists without the stack's labels: used as it is, never changed".to_string(),
            ),
            Action::Kept => (
                "=",
                format!(
                    "previous version kept until {} (`stackc rollout undo {}`); no change",
                    desired_clock(p, &c.name),
                    c.component
                ),
            ),
            Action::Unchanged => continue,
        };
        out.push_str(&format!("  {sym:<2} {} [{}]: {what}\n", c.label(), c.stage));
        for f in &c.fields {
            let owner = f
                .owner
                .as_ref()
                .map(|o| format!(" (live value set by `{o}`)"))
                .unwrap_or_default();
            out.push_str(&format!(
                "       {}: {} -> {}{owner}\n",
                f.path,
                show_value(f.before.as_ref()),
                show_value(f.after.as_ref())
            ));
        }
    }
    out.push_str(&rollout::render(&p.rollouts));
    for e in &p.errors {
        out.push_str(&format!("  error: {e}\n"));
    }
    let same = p.count(Action::Unchanged);
    if p.has_changes() {
        out.push_str(&format!(
            "Plan: {} to create, {} to update, {} to delete, {same} unchanged.\n",
            p.count(Action::Create),
            p.count(Action::Update),
            p.count(Action::Prune)
        ));
    } else {
        out.push_str(&format!("No changes. {same} objects match the topology.\n"));
    }
    out
}

// ---------------------------------------------------------------------------
// Apply

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub skipped: usize,
    /// Rollouts run (their objects count as updated).
    pub rollouts: usize,
}

/// Apply `plan` (made by [`plan`] with the same options) stage by stage.
pub async fn apply(
    client: &Client,
    desired: &Desired,
    plan: &Plan,
    kinds: &Kinds,
    opts: &Options,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Summary, Error> {
    if !plan.errors.is_empty() {
        return Err(Error::new(format!(
            "nothing was changed: {}",
            plan.errors.join("; ")
        )));
    }
    let mut s = Summary {
        unchanged: plan.count(Action::Unchanged)
            + plan.count(Action::External)
            + plan.count(Action::Kept),
        skipped: plan.count(Action::Skip),
        ..Summary::default()
    };
    // The objects a rollout writes are left to it.
    let taken: BTreeSet<usize> = plan
        .rollouts
        .iter()
        .flat_map(|r| r.objects.iter().copied())
        .collect();
    let writes = |c: &&Change| {
        matches!(c.action, Action::Create | Action::Update)
            && c.object.is_none_or(|i| !taken.contains(&i))
    };
    let last_write = plan
        .changes
        .iter()
        .filter(writes)
        .map(|c| c.stage_index)
        .chain(plan.rollouts.iter().map(|r| r.stage))
        .max();
    for (si, stage) in desired.stages.iter().enumerate() {
        let todo: Vec<&Change> = plan
            .changes
            .iter()
            .filter(|c| c.stage_index == si)
            .filter(writes)
            .collect();
        if !todo.is_empty() {
            progress(format!("stage {}: {} object(s)", stage.name, todo.len()));
        }
        // The objects of one stage do not wait for each other: up to
        // `concurrency` writes in flight, progress in stage order.
        let written = std::sync::Mutex::new((0, 0));
        let result = each(
            opts.concurrency,
            todo,
            |c| async move {
                if opts.cancel.load(Ordering::SeqCst) {
                    return Err(Error::new("interrupted before the next change"));
                }
                let o = &desired.objects[c.object.expect("desired object")];
                let r = kinds.get(&o.api_version, &o.kind).expect("served kind");
                let mut pp = PatchParams::apply(&opts.field_manager);
                if opts.force_conflicts {
                    pp = pp.force();
                }
                let body = apply_body(desired, o);
                api(client, r, o.namespace.as_deref(), &desired.namespace)
                    .patch(&o.name, &pp, &Patch::Apply(&body))
                    .await
                    .map_err(|e| Error::from_kube(&o.label(), e))?;
                Ok((c.action, o))
            },
            |(action, o): &(Action, &Object)| {
                let mut w = written.lock().unwrap_or_else(|e| e.into_inner());
                if *action == Action::Create {
                    w.0 += 1;
                    progress(format!("  create {}", o.label()));
                } else {
                    w.1 += 1;
                    progress(format!("  update {}", o.label()));
                }
            },
        )
        .await;
        let (created, updated) = *written.lock().unwrap_or_else(|e| e.into_inner());
        s.created += created;
        s.updated += updated;
        result?;
        for r in plan.rollouts.iter().filter(|r| r.stage == si) {
            s.updated += rollout::run(client, desired, kinds, r, opts, progress).await?;
            s.rollouts += 1;
        }
        if stage.gated && last_write.is_some_and(|l| si <= l) {
            wait_stage(client, desired, kinds, si, opts, progress).await?;
        }
    }
    let mut prune: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Prune)
        .collect();
    prune.sort_by_key(|c| std::cmp::Reverse(c.stage_index));
    // Stage by stage (later stages first); the deletions of one stage
    // concurrently.
    for group in prune.chunk_by(|a, b| a.stage_index == b.stage_index) {
        let deleted = std::sync::Mutex::new(0);
        let result = each(
            opts.concurrency,
            group,
            |c| async move {
                if opts.cancel.load(Ordering::SeqCst) {
                    return Err(Error::new("interrupted before the next deletion"));
                }
                let Some(r) = kinds.get(&c.api_version, &c.kind) else {
                    return Ok(None);
                };
                delete(
                    client,
                    r,
                    c.namespace.as_deref(),
                    &c.name,
                    &desired.namespace,
                )
                .await?;
                Ok(Some(c))
            },
            |c: &Option<&&Change>| {
                if let Some(c) = c {
                    *deleted.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    progress(format!("  delete {}", c.label()));
                }
            },
        )
        .await;
        s.deleted += *deleted.lock().unwrap_or_else(|e| e.into_inner());
        result?;
    }
    Ok(s)
}

async fn delete(
    client: &Client,
    r: &Resource,
    namespace: Option<&str>,
    name: &str,
    default_ns: &str,
) -> Result<(), Error> {
    match api(client, r, namespace, default_ns)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if api_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(Error::from_kube(
            &format!("deleting {} {name}", r.ar.kind),
            e,
        )),
    }
}

/// Why a workload is not available yet, or `None` when it is.
pub fn not_available(kind: &str, v: &Value) -> Option<String> {
    let n = |p: &str| v.pointer(p).and_then(Value::as_i64);
    let want = n("/spec/replicas").unwrap_or(1);
    let generation = n("/metadata/generation").unwrap_or(0);
    if n("/status/observedGeneration").unwrap_or(0) < generation {
        return Some("the controller has not seen the latest spec yet".into());
    }
    let last = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("status").and_then(Value::as_str) != Some("True"))
                .or_else(|| cs.last())
        })
        .map(|c| {
            format!(
                "{}={} ({}): {}",
                str_at(c, &["type"]).unwrap_or("?"),
                str_at(c, &["status"]).unwrap_or("?"),
                str_at(c, &["reason"]).unwrap_or("-"),
                str_at(c, &["message"]).unwrap_or("")
            )
        });
    let ready = n("/status/readyReplicas").unwrap_or(0);
    let updated = n("/status/updatedReplicas").unwrap_or(0);
    let available = if kind == "Deployment" {
        n("/status/availableReplicas").unwrap_or(0)
    } else {
        ready
    };
    if available >= want && updated >= want && ready >= want {
        let bad = v
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    str_at(c, &["type"]) == Some("Available")
                        && str_at(c, &["status"]) != Some("True")
                })
            })
            && want > 0;
        if !bad {
            return None;
        }
    }
    Some(format!(
        "{ready}/{want} ready, {available} available, {updated} updated; last condition: {}",
        last.unwrap_or_else(|| "none reported".into())
    ))
}

/// Wait until every Deployment and StatefulSet of stage `si` is available.
async fn wait_stage(
    client: &Client,
    desired: &Desired,
    kinds: &Kinds,
    si: usize,
    opts: &Options,
    progress: &(dyn Fn(String) + Sync),
) -> Result<(), Error> {
    let workloads: Vec<&Object> = desired
        .objects
        .iter()
        .filter(|o| o.stage == si && matches!(o.kind.as_str(), "Deployment" | "StatefulSet"))
        .collect();
    if workloads.is_empty() {
        return Ok(());
    }
    progress(format!(
        "stage {}: waiting for {} workload(s) to be available",
        desired.stages[si].name,
        workloads.len()
    ));
    let started = Instant::now();
    // Each workload is polled on its own, `concurrency` at a time.
    each(
        opts.concurrency,
        workloads,
        |o| wait_one(client, desired, kinds, o, started, opts),
        |_| {},
    )
    .await?;
    Ok(())
}

/// Wait until workload `o` is available, at most `opts.timeout` from
/// `started`; an interrupt stops the wait.
async fn wait_one(
    client: &Client,
    desired: &Desired,
    kinds: &Kinds,
    o: &Object,
    started: Instant,
    opts: &Options,
) -> Result<(), Error> {
    let r = kinds
        .get(&o.api_version, &o.kind)
        .ok_or_else(|| Error::new(format!("the cluster does not serve {}", o.kind)))?;
    let a = api(client, r, o.namespace.as_deref(), &desired.namespace);
    loop {
        let live = a
            .get(&o.name)
            .await
            .map_err(|e| Error::from_kube(&o.label(), e))?;
        let v = serde_json::to_value(live).unwrap_or_default();
        let Some(why) = not_available(&o.kind, &v) else {
            return Ok(());
        };
        if started.elapsed() >= opts.timeout {
            return Err(Error::new(format!(
                "{} in namespace `{}` was not available after {}s: {why}",
                o.label(),
                desired.namespace,
                opts.timeout.as_secs()
            )));
        }
        if opts.cancel.load(Ordering::SeqCst) {
            return Err(Error::new(format!(
                "interrupted while waiting for {}",
                o.label()
            )));
        }
        tokio::time::sleep(opts.poll).await;
    }
}

// ---------------------------------------------------------------------------
// Drift

/// Every difference between the cluster and the topology on the fields
/// stackc applies, with the topology's `drift-ignore` rules applied.
pub async fn drift(
    client: &Client,
    desired: &Desired,
    ignores: &[DriftIgnore],
    opts: &Options,
) -> Result<(Vec<crate::drift::Item>, Vec<String>), Error> {
    let kinds = discover(client, desired).await?;
    let mut warnings = Vec::new();
    for (api_version, kind) in &kinds.missing {
        if desired
            .objects
            .iter()
            .any(|o| &o.api_version == api_version && &o.kind == kind)
        {
            warnings.push(format!(
                "the cluster does not serve {api_version}: the {kind} objects are not compared"
            ));
        }
    }
    let item = |o: &Object, field: String, expected: String, actual: String| crate::drift::Item {
        object: o.label(),
        field,
        expected,
        actual,
        ignored: None,
    };
    let item = &item;
    // The stack's objects by LIST; the others by name.
    let owned = list_owned(client, desired, &kinds, opts.concurrency).await?;
    let listed = by_key(&owned);
    let (read_kinds, others) =
        list_unlisted(client, desired, &kinds, &listed, opts.concurrency).await?;
    let (kinds_ref, listed, read_kinds, others) = (&kinds, &listed, &read_kinds, &others);
    let per_object = each(
        opts.concurrency,
        &desired.objects,
        |o| async move {
            let mut items = Vec::new();
            let Some(r) = kinds_ref.get(&o.api_version, &o.kind) else {
                return Ok(items);
            };
            let live = find_live(client, desired, r, o, listed, read_kinds, others).await?;
            let Some(live) = live.as_deref() else {
                items.push(item(o, "object".into(), "present".into(), "missing".into()));
                return Ok(items);
            };
            // A previous colour kept by keep-previous is not drift while kept.
            if o.kind == "Deployment"
                && desired.kept.contains_key(&o.name)
                && live.pointer("/spec/replicas").and_then(Value::as_i64) > Some(0)
            {
                return Ok(items);
            }
            if !owned_by(live, &desired.stack) {
                if o.kind != "Namespace" {
                    items.push(item(
                        o,
                        "labels".into(),
                        format!("owned by stack {}", desired.stack),
                        "not the stack's".into(),
                    ));
                }
                return Ok(items);
            }
            // Forced: a field someone else took over is drift to report, not
            // a conflict that hides it.
            let after = dry_run(client, desired, r, o, &opts.field_manager, true).await?;
            for f in field_changes(live, &after, &opts.field_manager) {
                let actual = match &f.owner {
                    Some(m) => format!("{} (set by `{m}`)", show_value(f.before.as_ref())),
                    None => show_value(f.before.as_ref()),
                };
                items.push(item(
                    o,
                    f.path.clone(),
                    show_value(f.after.as_ref()),
                    actual,
                ));
            }
            for it in &mut items {
                if let Some(rule) = ignores.iter().find(|rule| {
                    rule.service.value == o.component
                        && ignore_matches(&rule.field.value, &it.field)
                }) {
                    it.ignored = Some(rule.reason.clone());
                }
            }
            Ok(items)
        },
        |_| {},
    )
    .await?;
    let mut items: Vec<crate::drift::Item> = per_object.into_iter().flatten().collect();
    let wanted: BTreeSet<(String, String)> = desired
        .objects
        .iter()
        .map(|o| (o.kind.clone(), o.name.clone()))
        .collect();
    for (r, v) in &owned {
        let name = str_at(v, &["metadata", "name"])
            .unwrap_or_default()
            .to_string();
        if wanted.contains(&(r.ar.kind.clone(), name.clone()))
            || (r.ar.kind == "PersistentVolumeClaim" && is_template_claim(desired, &name))
        {
            continue;
        }
        items.push(crate::drift::Item {
            object: format!("{} {name}", r.ar.kind),
            field: "object".into(),
            expected: "absent (not in the topology)".into(),
            actual: "present".into(),
            ignored: None,
        });
    }
    Ok((items, warnings))
}

/// Does a `drift-ignore` field name cover a changed path? Names: `replicas`,
/// `image`, `env` (or `env NAME`), `memory`, `cpus`, or a path prefix.
fn ignore_matches(rule: &str, path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    match rule {
        "replicas" | "image" => last == rule,
        "memory" => path.contains("resources.") && last == "memory",
        "cpus" | "cpu" => path.contains("resources.") && last == "cpu",
        "env" => path.contains(".env[") || path.contains(".envFrom"),
        _ => {
            if let Some(var) = rule.strip_prefix("env ") {
                path.contains(&format!(".env[name={var}]"))
            } else {
                path == rule
                    || path.starts_with(&format!("{rule}."))
                    || path.starts_with(&format!("{rule}["))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Destroy

#[derive(Debug, Clone, Default, Serialize)]
pub struct Destroyed {
    pub deleted: usize,
    pub claims_kept: usize,
    /// Why the namespace was kept, when it was.
    pub namespace_kept: Option<String>,
}

/// Delete the stack's objects in reverse stage order. Claims only with
/// `volumes`; the Namespace only when stackc created it, `volumes` is
/// given and it holds no Secret that is not the stack's.
pub async fn destroy(
    client: &Client,
    desired: &Desired,
    volumes: bool,
    opts: &Options,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Destroyed, Error> {
    let kinds = discover(client, desired).await?;
    let mut owned = list_owned(client, desired, &kinds, opts.concurrency).await?;
    let stage = |r: &Resource, v: &Value| {
        let component = str_at(v, &["metadata", "labels", LABEL_COMPONENT]).unwrap_or_default();
        desired.stage_of(&r.ar.kind, component)
    };
    owned.sort_by_key(|(r, v)| std::cmp::Reverse(stage(r, v)));
    let mut d = Destroyed::default();
    let mut namespace = None;
    let mut doomed: Vec<(usize, &Resource, &Value)> = Vec::new();
    for (r, v) in &owned {
        let name = str_at(v, &["metadata", "name"]).unwrap_or_default();
        match r.ar.kind.as_str() {
            "Namespace" => {
                namespace = Some((r, name.to_string()));
                continue;
            }
            "PersistentVolumeClaim" if !volumes => {
                d.claims_kept += 1;
                continue;
            }
            _ => {}
        }
        doomed.push((stage(r, v), r, v));
    }
    // Stage by stage in reverse; the objects of one stage concurrently.
    for group in doomed.chunk_by(|a, b| a.0 == b.0) {
        let deleted = std::sync::Mutex::new(0);
        let result = each(
            opts.concurrency,
            group,
            |&(_, r, v)| async move {
                let name = str_at(v, &["metadata", "name"]).unwrap_or_default();
                let ns = str_at(v, &["metadata", "namespace"]);
                delete(client, r, ns, name, &desired.namespace).await?;
                Ok((r, name))
            },
            |(r, name): &(&Resource, &str)| {
                *deleted.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                progress(format!("  delete {} {name}", r.ar.kind));
            },
        )
        .await;
        d.deleted += *deleted.lock().unwrap_or_else(|e| e.into_inner());
        result?;
    }
    match namespace {
        None => {}
        Some(_) if !volumes => {
            d.namespace_kept = Some(
                "it holds the kept claims and the Secrets (use --volumes to remove it)".into(),
            );
        }
        Some((r, name)) => {
            let secrets: Api<core::Secret> = Api::namespaced(client.clone(), &name);
            let foreign = secrets
                .list_metadata(&ListParams::default())
                .await
                .map_err(|e| Error::from_kube("listing Secrets", e))?
                .items
                .into_iter()
                .filter(|s| {
                    s.metadata.labels.as_ref().and_then(|l| l.get(LABEL_STACK))
                        != Some(&desired.stack)
                })
                .count();
            if foreign > 0 {
                d.namespace_kept = Some(format!(
                    "it holds {foreign} Secret(s) stackc did not create; delete it with kubectl when they are no longer needed"
                ));
            } else {
                delete(client, r, None, &name, &desired.namespace).await?;
                d.deleted += 1;
                progress(format!("  delete Namespace {name}"));
            }
        }
    }
    Ok(d)
}
