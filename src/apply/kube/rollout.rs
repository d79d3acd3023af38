//! Progressive rollouts on Kubernetes: the blue-green and canary policies
//! drive the two-Deployment form the kubernetes target emits.
//!
//! - **Which colour is live** is read from the cluster before anything is
//!   compared ([`read_live`]: the `io.stackc.rollout/active` annotation of
//!   the Service `NAME`, else its `io.stackc.track` selector), and the
//!   manifests of that service are recoloured for it ([`set_live`]): the
//!   active colour carries the replicas, `NAME` and `NAME-public` select
//!   it, `NAME-preview` selects the other one. So after a switch to green
//!   an unchanged topology plans no change, and nothing flips back.
//! - **When a rollout runs** ([`pending`]): plan finds that the pod
//!   template of the Deployment carrying the service (the active colour;
//!   the stable Deployment `NAME` for canary) changed, and that it runs
//!   (replicas and available pods). The plain apply leaves that service's
//!   Deployments (and, for blue-green, its Services) to [`run`]. An
//!   autoscaled service is updated in place instead (reported): the
//!   replica counts of a rollout would fight the HorizontalPodAutoscaler.
//! - **Blue-green**: the idle colour gets the new template at the service's
//!   replica count; once available, the health gate is held on it without
//!   traffic; then `NAME` (and `NAME-public`) switch to it, one patch per
//!   Service, with `NAME-preview` on the old colour; the gate is held again
//!   with all traffic, while the old colour still runs (an instant way
//!   back); then the old colour is scaled to 0, or, with `keep-previous`,
//!   kept running without traffic until the time the Service `NAME` records
//!   (`io.stackc.rollout/previous-kept-until`; plan lists it as kept, drift
//!   ignores it, [`undo`] switches back to it). A Service selector moves
//!   all traffic at once, so the policy's intermediate steps are not
//!   separate weights: they are reported, and the gate is held before and
//!   after the switch.
//! - **Canary**: for each step weight `w` below 100 the canary Deployment
//!   is scaled to the pod count `c` in `1..=n` whose share of the pods
//!   beside the `n` stable ones, `c / (n + c)`, is closest to `w` (the
//!   smaller count on a tie; [`canary_pods`]); the stable Deployment is
//!   never scaled down, so a step above 50 % runs at 50 % (as many canary
//!   pods as stable ones: the resource footprint of blue-green), and every
//!   step whose share differs from its weight is reported. Once available
//!   the gate is held; after the last step the stable Deployment gets the
//!   new template, is waited for, and the canary goes back to 0.
//! - **Gate**: the health gate reads the Pods of the new track (label
//!   selector of its Deployment) every poll during `healthy-for` (default
//!   5 s): each must be Ready, none may restart, and as many as the
//!   Deployment runs must be ready. `max-error-rate` and `max-latency-p95`
//!   are measured for blue-green after the switch, when a balancer of the
//!   stack routes to the service: every request nginx sends to the Service
//!   `NAME`'s cluster IP then goes to the new colour, so the balancer Pods'
//!   access logs (`pods/log`, with timestamps, since the switch) give its
//!   error ratio and p95 like the Docker target's. A canary shares the
//!   Service address with stable, and a blue-green service without a
//!   balancer has no log: there the two gates are not measured and plan and
//!   apply say so as a warning.
//! - **Failure**: `on-failure "rollback"` gives traffic back to stable (the
//!   Service selectors, the canary's pods) and scales the new track to 0;
//!   `"pause"` keeps everything as it is and waits for `stackc rollout
//!   resume|promote|abort`. An interrupt (Ctrl-C) returns traffic to
//!   stable, like an abort.
//!
//! Every write is a server-side apply of the whole object under the
//! stack's field manager, with the replica count, selector or template of
//! the moment: ownership stays with stackc and the last write of a
//! successful rollout is exactly what the next plan wants. History and
//! operator commands are the Docker target's: `STATE/STACK/rollouts/`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::core::v1 as core;
use kube::Client;
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    Action, Change, Desired, Error, Kinds, Object, Options, api, apply_body, owned_by, str_at,
};
use crate::apply::rollout::{self as hist, Attempt, StepRecord};
use crate::model::{OnFailure, Rollout, RolloutStrategy, Topology};
use crate::targets::kubernetes::{LABEL_TRACK, derived_name};

/// The Service annotation naming the colour that has the traffic.
pub const ANNOTATION_ACTIVE: &str = "io.stackc.rollout/active";
/// The Service annotation saying until when (unix seconds) the previous
/// colour is kept running by `keep-previous`.
pub const ANNOTATION_KEPT: &str = "io.stackc.rollout/previous-kept-until";

/// A service whose Deployments a rollout drives.
#[derive(Debug, Clone)]
pub struct Spec {
    pub service: String,
    pub policy: Rollout,
    /// Replicas of the track that carries the service.
    pub replicas: i64,
    /// Blue-green: `[NAME-blue, NAME-green]`; canary: `[NAME, NAME-canary]`.
    pub deployments: [String; 2],
    /// Blue-green Services that exist in the manifests.
    pub main: Option<String>,
    pub public: Option<String>,
    pub preview: Option<String>,
    /// Scaled by a HorizontalPodAutoscaler.
    pub autoscaled: bool,
    /// Balancer Deployments (nginx) that route to the service.
    pub balancers: Vec<String>,
    /// The port balancers send the service's traffic to.
    pub port: Option<u16>,
}

impl Spec {
    /// Blue-green with a Service and a balancer routing to it: after the
    /// switch, every request the balancer sends to the Service's address
    /// goes to the new colour, so its access log measures the new version.
    fn measured(&self) -> bool {
        self.blue_green()
            && self.main.is_some()
            && self.port.is_some()
            && !self.balancers.is_empty()
    }

    fn has_traffic_gates(&self) -> bool {
        self.policy.gate.max_error_rate.is_some() || self.policy.gate.max_latency_p95.is_some()
    }

    fn blue_green(&self) -> bool {
        self.policy.strategy == RolloutStrategy::BlueGreen
    }

    fn strategy(&self) -> &'static str {
        if self.blue_green() {
            "blue-green"
        } else {
            "canary"
        }
    }
}

fn other(colour: &str) -> &'static str {
    if colour == "green" { "blue" } else { "green" }
}

/// The rollout-managed services of the manifests (services with a policy
/// whose two Deployments were emitted; StatefulSets have none).
pub fn specs(
    t: &Topology,
    objects: &[Object],
    scaled: &std::collections::BTreeSet<(String, String)>,
) -> Vec<Spec> {
    // Looked up by (kind, name): topologies have tens of thousands of objects.
    let by_name: std::collections::HashMap<(&str, &str), &Object> = objects
        .iter()
        .map(|o| ((o.kind.as_str(), o.name.as_str()), o))
        .collect();
    let find = |kind: &str, name: &str| by_name.get(&(kind, name)).copied();
    let mut out = Vec::new();
    for s in &t.services {
        let Some(policy) = &s.rollout else { continue };
        let name = s.name.value.clone();
        let bg = policy.strategy == RolloutStrategy::BlueGreen;
        let deployments = if bg {
            [derived_name(&name, "blue"), derived_name(&name, "green")]
        } else {
            [name.clone(), derived_name(&name, "canary")]
        };
        let (Some(first), Some(_)) = (
            find("Deployment", &deployments[0]),
            find("Deployment", &deployments[1]),
        ) else {
            continue;
        };
        let replicas = first
            .body
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let service_of = |n: String| find("Service", &n).map(|o| o.name.clone());
        let balancers = t
            .balancers
            .iter()
            .filter(|b| b.routes.iter().any(|r| r.to.value == name))
            .map(|b| b.name.value.clone())
            .filter(|b| find("Deployment", b).is_some())
            .collect();
        out.push(Spec {
            service: name.clone(),
            balancers,
            port: crate::targets::nginx::service_port(s),
            policy: (**policy).clone(),
            replicas,
            autoscaled: deployments
                .iter()
                .any(|d| scaled.contains(&("Deployment".to_string(), d.clone()))),
            deployments,
            main: if bg { service_of(name.clone()) } else { None },
            public: if bg {
                service_of(derived_name(&name, "public"))
            } else {
                None
            },
            preview: if bg {
                service_of(derived_name(&name, "preview"))
            } else {
                None
            },
        });
    }
    out
}

/// What the cluster says about the rollout-managed services.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Blue-green service -> the colour its Service `NAME` selects.
    pub active: BTreeMap<String, String>,
    /// Blue-green service -> until when its previous colour is kept.
    pub kept: BTreeMap<String, u64>,
}

/// Read the active colour of every blue-green service: the annotation of
/// its Service `NAME`, else that Service's track selector; without a
/// Service, the colour that runs pods while the other has none. Objects
/// without the stack's labels are ignored (plan reports them).
pub async fn read_live(client: &Client, desired: &Desired) -> Result<Live, Error> {
    let mut live = Live::default();
    let services: Api<core::Service> = Api::namespaced(client.clone(), &desired.namespace);
    let deployments: Api<apps::Deployment> = Api::namespaced(client.clone(), &desired.namespace);
    for spec in desired.rollouts.iter().filter(|s| s.blue_green()) {
        let colour = match &spec.main {
            Some(main) => services
                .get_opt(main)
                .await
                .map_err(|e| Error::from_kube(&format!("Service {main}"), e))?
                .map(|s| serde_json::to_value(s).unwrap_or_default())
                .filter(|v| owned_by(v, &desired.stack))
                .and_then(|v| {
                    if let Some(t) = str_at(&v, &["metadata", "annotations", ANNOTATION_KEPT])
                        .and_then(|t| t.parse::<u64>().ok())
                    {
                        live.kept.insert(spec.service.clone(), t);
                    }
                    [
                        str_at(&v, &["metadata", "annotations", ANNOTATION_ACTIVE]),
                        str_at(&v, &["spec", "selector", LABEL_TRACK]),
                    ]
                    .into_iter()
                    .flatten()
                    .find(|c| *c == "blue" || *c == "green")
                    .map(str::to_string)
                }),
            None => {
                let mut running = Vec::new();
                for d in &spec.deployments {
                    let r = deployments
                        .get_opt(d)
                        .await
                        .map_err(|e| Error::from_kube(&format!("Deployment {d}"), e))?
                        .map(|x| serde_json::to_value(x).unwrap_or_default())
                        .filter(|v| owned_by(v, &desired.stack))
                        .and_then(|v| v.pointer("/spec/replicas").and_then(Value::as_i64))
                        .unwrap_or(0);
                    running.push(r > 0);
                }
                (running == [false, true]).then(|| "green".to_string())
            }
        };
        if let Some(c) = colour {
            live.active.insert(spec.service.clone(), c);
        }
    }
    Ok(live)
}

/// The body of `o` with `colour` active, when `o` is one of the objects a
/// blue-green rollout of `spec` recolours.
fn recolour(o: &Object, spec: &Spec, colour: &str) -> Option<Value> {
    let mut body = o.body.clone();
    match o.kind.as_str() {
        "Deployment" if spec.deployments.contains(&o.name) => {
            let track = if o.name == spec.deployments[0] {
                "blue"
            } else {
                "green"
            };
            if let Some(r) = body.pointer_mut("/spec/replicas") {
                *r = json!(if track == colour { spec.replicas } else { 0 });
            }
        }
        "Service" if spec.main.as_ref() == Some(&o.name) => {
            body["spec"]["selector"][LABEL_TRACK] = json!(colour);
            body["metadata"]["annotations"][ANNOTATION_ACTIVE] = json!(colour);
            if let Some(a) = body
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut)
            {
                a.remove(ANNOTATION_KEPT);
            }
        }
        "Service" if spec.public.as_ref() == Some(&o.name) => {
            body["spec"]["selector"][LABEL_TRACK] = json!(colour);
        }
        "Service" if spec.preview.as_ref() == Some(&o.name) => {
            body["spec"]["selector"][LABEL_TRACK] = json!(other(colour));
        }
        _ => return None,
    }
    Some(body)
}

/// Make the manifests of every blue-green service say what the cluster
/// runs: the live active colour carries the replicas and the traffic; a
/// previous colour kept by `keep-previous`, until its time is up, is left
/// as it runs (plan: `= kept`) and the Service keeps saying until when.
pub fn set_live(desired: &mut Desired, live: &Live) {
    let now = hist::now();
    let mut by_component: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    if desired.rollouts.iter().any(Spec::blue_green) {
        for (i, o) in desired.objects.iter().enumerate() {
            by_component.entry(o.component.clone()).or_default().push(i);
        }
    }
    for spec in desired.rollouts.clone() {
        if !spec.blue_green() {
            continue;
        }
        let colour = live
            .active
            .get(&spec.service)
            .map_or("blue", String::as_str)
            .to_string();
        let kept = live.kept.get(&spec.service).copied().filter(|t| *t > now);
        for &i in by_component.get(&spec.service).into_iter().flatten() {
            let o = &mut desired.objects[i];
            if let Some(mut b) = recolour(o, &spec, &colour) {
                if let Some(t) = kept
                    && spec.main.as_ref() == Some(&o.name)
                {
                    b["metadata"]["annotations"][ANNOTATION_KEPT] = json!(t.to_string());
                }
                o.body = b;
            }
        }
        for d in &spec.deployments {
            desired.kept.remove(d);
        }
        if let Some(t) = kept {
            let previous = &spec.deployments[usize::from(colour != "green")];
            desired.kept.insert(previous.clone(), t);
        }
        desired.active.insert(spec.service.clone(), colour);
    }
}

pub use crate::targets::kubernetes::{canary_pods, share};

/// One step a canary rollout will take.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    /// The policy's weight.
    pub weight: u32,
    /// Canary pods beside the stable ones (0 after promotion).
    pub canary_pods: i64,
    pub stable_pods: i64,
    /// The share of pods on the new version, in %.
    pub share: u32,
}

/// A rollout the apply will run.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    pub service: String,
    pub strategy: String,
    pub from_image: String,
    pub to_image: String,
    /// The Deployment that serves now and the one the new version starts on.
    pub from: String,
    pub to: String,
    /// Blue-green: the colours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch: Option<(String, String)>,
    /// Blue-green: the Services whose selector switches, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    pub replicas: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<PlannedStep>,
    /// How long each gate is held (`healthy-for`, as written; `5s` by
    /// default).
    pub gate: String,
    /// Blue-green: balancers whose access log measures the error-rate and
    /// p95 gates after the switch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub measured_by: Vec<String>,
    /// Blue-green with keep-previous: seconds the old colour is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_secs: Option<u64>,
    /// Indices into `Desired::objects` the rollout writes (the plain apply
    /// leaves them alone).
    #[serde(skip)]
    pub objects: Vec<usize>,
    #[serde(skip)]
    pub stage: usize,
}

fn first_image(v: &Value) -> String {
    v.pointer("/spec/template/spec/containers/0/image")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

fn gate_window(policy: &Rollout) -> Duration {
    policy
        .gate
        .healthy_for
        .as_ref()
        .map_or(Duration::from_secs(5), |d| Duration::from_millis(d.millis))
}

/// The rollouts a plan calls for, and warnings about them. `live` holds
/// the live Deployments of the rollout-managed services, by name.
pub fn pending(
    desired: &Desired,
    changes: &[Change],
    live: &BTreeMap<String, Value>,
) -> (Vec<Pending>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    if desired.rollouts.is_empty() {
        return (out, warnings);
    }
    let positions: std::collections::HashMap<(&str, &str), usize> = desired
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| ((o.kind.as_str(), o.name.as_str()), i))
        .collect();
    let updates: std::collections::HashMap<&str, &Change> = changes
        .iter()
        .filter(|c| c.kind == "Deployment" && c.action == Action::Update)
        .map(|c| (c.name.as_str(), c))
        .collect();
    for spec in &desired.rollouts {
        let (carry, idle) = if spec.blue_green() {
            let active = desired
                .active
                .get(&spec.service)
                .map_or("blue", String::as_str);
            if active == "green" { (1, 0) } else { (0, 1) }
        } else {
            (0, 1)
        };
        let carrying = &spec.deployments[carry];
        let template_changed = updates
            .get(carrying.as_str())
            .is_some_and(|c| c.fields.iter().any(|f| f.path.starts_with("spec.template")));
        let Some(live_carrying) = live.get(carrying) else {
            continue;
        };
        let n = |p: &str| {
            live_carrying
                .pointer(p)
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let runs = n("/spec/replicas") > 0 && n("/status/availableReplicas") > 0;
        if !template_changed || !runs {
            continue;
        }
        if spec.autoscaled {
            warnings.push(format!(
                "`{}` is autoscaled: its new pod template is applied in place (rolling update of {carrying}), not by the {} rollout, whose replica counts would fight the HorizontalPodAutoscaler",
                spec.service,
                spec.strategy()
            ));
            continue;
        }
        if spec.has_traffic_gates() && !spec.measured() {
            warnings.push(format!(
                "rollout of `{}`: the max-error-rate and max-latency-p95 gates are not measured ({}); only the health gate (ready pods, no restarts) holds",
                spec.service,
                if spec.blue_green() {
                    "no balancer of the stack routes to it: stackc reads them from the balancers' access log"
                } else {
                    "a balancer reaches both tracks of a canary through one Service address, so its access log cannot tell them apart"
                }
            ));
        }
        if spec.policy.keep_previous.is_some() && spec.main.is_none() {
            warnings.push(format!(
                "rollout of `{}`: keep-previous needs the Service `{}` (the service has no port) to record until when; the previous colour is scaled to 0 once the rollout passed",
                spec.service, spec.service
            ));
        }
        let index = |kind: &str, name: &str| positions.get(&(kind, name)).copied();
        let desired_carrying = index("Deployment", carrying).map(|i| &desired.objects[i]);
        let to_image = desired_carrying.map_or_else(|| "?".to_string(), |o| first_image(&o.body));
        let mut objects: Vec<usize> = spec
            .deployments
            .iter()
            .filter_map(|d| index("Deployment", d))
            .collect();
        let mut steps = Vec::new();
        let mut services = Vec::new();
        let mut switch = None;
        if spec.blue_green() {
            for s in [&spec.main, &spec.public, &spec.preview]
                .into_iter()
                .flatten()
            {
                objects.extend(index("Service", s));
            }
            services = [&spec.main, &spec.public]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            let from = if carry == 0 { "blue" } else { "green" };
            switch = Some((from.to_string(), other(from).to_string()));
            let intermediate: Vec<String> = spec
                .policy
                .steps
                .value
                .iter()
                .filter(|w| **w < 100)
                .map(|w| format!("{w}%"))
                .collect();
            if !intermediate.is_empty() {
                warnings.push(format!(
                    "rollout of `{}`: the blue-green steps {} are not separate weights on Kubernetes (a Service selector moves all traffic at once): the gate is held before the switch, without traffic, and after it",
                    spec.service,
                    intermediate.join(", ")
                ));
            }
        } else {
            for &w in &spec.policy.steps.value {
                if w >= 100 {
                    steps.push(PlannedStep {
                        weight: w,
                        canary_pods: 0,
                        stable_pods: spec.replicas,
                        share: 100,
                    });
                    continue;
                }
                let c = canary_pods(spec.replicas, w);
                let sh = share(spec.replicas, c);
                if sh != w {
                    warnings.push(format!(
                        "rollout of `{}`: step {w}% runs at {sh}% ({c} canary pod(s) beside {} stable: traffic splits by replica count; with {} replica(s) the smallest share one canary pod carries is {}%, and the stable pods are never scaled down, so at most 50%)",
                        spec.service,
                        spec.replicas,
                        spec.replicas,
                        share(spec.replicas, 1)
                    ));
                }
                steps.push(PlannedStep {
                    weight: w,
                    canary_pods: c,
                    stable_pods: spec.replicas,
                    share: sh,
                });
            }
        }
        objects.sort_unstable();
        out.push(Pending {
            service: spec.service.clone(),
            strategy: spec.strategy().into(),
            from_image: first_image(live_carrying),
            to_image,
            from: carrying.clone(),
            to: spec.deployments[idle].clone(),
            switch,
            services,
            replicas: spec.replicas,
            steps,
            gate: spec
                .policy
                .gate
                .healthy_for
                .as_ref()
                .map_or_else(|| "5s".to_string(), |d| d.text.clone()),
            measured_by: if spec.measured() && spec.has_traffic_gates() {
                spec.balancers.clone()
            } else {
                Vec::new()
            },
            keep_secs: spec
                .policy
                .keep_previous
                .as_ref()
                .filter(|_| spec.blue_green() && spec.main.is_some())
                .map(|d| d.millis / 1000),
            stage: desired_carrying.map_or(0, |o| o.stage),
            objects,
        });
    }
    (out, warnings)
}

/// Plan lines for the rollouts.
pub fn render(pending: &[Pending]) -> String {
    let mut out = String::new();
    for p in pending {
        out.push_str(&format!(
            "  >> rollout {} ({}): {} -> {}\n",
            p.service, p.strategy, p.from_image, p.to_image
        ));
        if let Some((from, to)) = &p.switch {
            out.push_str(&format!(
                "       Deployment {}: new template, replicas 0 -> {}; health gate {} without traffic\n",
                p.to, p.replicas, p.gate
            ));
            if !p.services.is_empty() {
                out.push_str(&format!(
                    "       switch Service {}: selector {LABEL_TRACK} {from} -> {to}; health gate {} with all traffic{}\n",
                    p.services.join(", "),
                    p.gate,
                    if p.measured_by.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", error rate and p95 from the access log of balancer {}",
                            p.measured_by.join(", ")
                        )
                    }
                ));
            }
            match p.keep_secs {
                Some(secs) => out.push_str(&format!(
                    "       Deployment {}: kept {secs}s without traffic (keep-previous), for `stackc rollout undo {}`\n",
                    p.from, p.service
                )),
                None => out.push_str(&format!(
                    "       Deployment {}: replicas {} -> 0\n",
                    p.from, p.replicas
                )),
            }
        } else {
            let total = p.steps.len();
            for (i, s) in p.steps.iter().enumerate() {
                if s.weight >= 100 {
                    out.push_str(&format!(
                        "       step {}/{total} 100%: Deployment {} gets the new template, then Deployment {} replicas -> 0\n",
                        i + 1,
                        p.from,
                        p.to
                    ));
                } else {
                    out.push_str(&format!(
                        "       step {}/{total} {}%: Deployment {} replicas -> {} beside {} stable ({}% of the pods); health gate {}\n",
                        i + 1,
                        s.weight,
                        p.to,
                        s.canary_pods,
                        s.stable_pods,
                        s.share,
                        p.gate
                    ));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Running a rollout

/// How a held gate ended.
enum Held {
    Passed,
    Promoted,
    Failed(String),
    Aborted,
    Interrupted,
}

/// An operator's decision for a rollout paused after a failed gate.
enum Decision {
    Resume,
    Promote,
    Abort,
    Interrupted,
}

/// Why an attempt ended early: (outcome, reason).
type Stop = (String, String);

struct Runner<'a> {
    client: &'a Client,
    desired: &'a Desired,
    kinds: &'a Kinds,
    opts: &'a Options,
    progress: &'a (dyn Fn(String) + Sync),
    spec: &'a Spec,
    history: Option<hist::History>,
    /// Objects written.
    written: std::collections::BTreeSet<usize>,
    /// Blue-green: a Service may select the new colour (the switch was
    /// sent, or an earlier apply's is unknown).
    switched: bool,
    /// The last balancer reading of a gate window: requests, errors, p95.
    reading: (usize, usize, Option<u64>),
}

fn failed(e: Error) -> Stop {
    ("failed".into(), e.message)
}

/// Object `kind name` of the manifests, with its index.
fn find<'d>(desired: &'d Desired, kind: &str, name: &str) -> Result<(usize, &'d Object), Stop> {
    desired
        .objects
        .iter()
        .enumerate()
        .find(|(_, o)| o.kind == kind && o.name == name)
        .ok_or_else(|| {
            (
                "failed".to_string(),
                format!("no {kind} {name} in the manifests"),
            )
        })
}

impl Runner<'_> {
    fn update(&mut self, f: impl FnOnce(&mut Attempt)) {
        let (Some(dir), Some(h)) = (&self.opts.state_dir, &mut self.history) else {
            return;
        };
        if let Some(a) = h.attempts.last_mut() {
            f(a);
        }
        if let Err(e) = hist::save_history(dir, &self.desired.stack, h) {
            tracing::warn!("{e}");
        }
    }

    fn control(&self) -> Option<String> {
        let dir = self.opts.state_dir.as_ref()?;
        hist::read_control(dir, &self.desired.stack, &self.spec.service)
    }

    fn clear_control(&self) {
        if let Some(dir) = &self.opts.state_dir {
            let _ = std::fs::remove_file(hist::control_path(
                dir,
                &self.desired.stack,
                &self.spec.service,
            ));
        }
    }

    fn cancelled(&self) -> bool {
        self.opts.cancel.load(Ordering::SeqCst)
    }

    /// Server-side apply of `body` as object `i`.
    async fn write(&mut self, i: usize, body: &Value, what: &str) -> Result<(), Error> {
        let o = &self.desired.objects[i];
        let r = self
            .kinds
            .get(&o.api_version, &o.kind)
            .ok_or_else(|| Error::new(format!("the cluster does not serve {}", o.kind)))?;
        let mut pp = PatchParams::apply(&self.opts.field_manager);
        if self.opts.force_conflicts {
            pp = pp.force();
        }
        api(
            self.client,
            r,
            o.namespace.as_deref(),
            &self.desired.namespace,
        )
        .patch(&o.name, &pp, &Patch::Apply(body))
        .await
        .map_err(|e| Error::from_kube(&o.label(), e))?;
        self.written.insert(i);
        (self.progress)(format!("  {}: {what}", o.label()));
        Ok(())
    }

    /// Wait until Deployment `i` is available, as apply waits for a phase.
    async fn wait(&self, i: usize) -> Result<(), Error> {
        let o = &self.desired.objects[i];
        super::wait_one(
            self.client,
            self.desired,
            self.kinds,
            o,
            Instant::now(),
            self.opts,
        )
        .await
    }

    /// The Pods of Deployment `o` (its selector).
    async fn pods(&self, o: &Object) -> Result<Vec<Value>, Error> {
        let selector: Vec<String> = o
            .body
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let pods: Api<core::Pod> = Api::namespaced(
            self.client.clone(),
            o.namespace.as_deref().unwrap_or(&self.desired.namespace),
        );
        let list = pods
            .list(&ListParams::default().labels(&selector.join(",")))
            .await
            .map_err(|e| Error::from_kube(&format!("listing the Pods of {}", o.label()), e))?;
        Ok(list
            .items
            .into_iter()
            .map(|p| serde_json::to_value(p).unwrap_or_default())
            .collect())
    }

    /// Requests the balancers sent to the Service `NAME`'s address since
    /// `since` (RFC 3339), from their Pods' logs: (requests, errors, p95
    /// in ms). `None` when nothing can be measured (no Service address).
    async fn measure(
        &self,
        since: &(i64, String),
    ) -> Result<Option<(usize, usize, Option<u64>)>, Error> {
        let spec = self.spec;
        let (Some(main), Some(port)) = (&spec.main, spec.port) else {
            return Ok(None);
        };
        let services: Api<core::Service> =
            Api::namespaced(self.client.clone(), &self.desired.namespace);
        let ip = services
            .get_opt(main)
            .await
            .map_err(|e| Error::from_kube(&format!("Service {main}"), e))?
            .and_then(|s| s.spec.and_then(|s| s.cluster_ip))
            .filter(|ip| !ip.is_empty() && ip != "None");
        let Some(ip) = ip else { return Ok(None) };
        let target = vec![format!("{ip}:{port}")];
        let pods: Api<core::Pod> = Api::namespaced(self.client.clone(), &self.desired.namespace);
        let elapsed = (hist::now() as i64 - since.0).max(0) + 2;
        let mut tally = hist::Tally::default();
        for b in &spec.balancers {
            let Ok((_, o)) = find(self.desired, "Deployment", b) else {
                continue;
            };
            for p in self.pods(o).await? {
                let name = pod_name(&p);
                let lp = LogParams {
                    timestamps: true,
                    since_seconds: Some(elapsed),
                    ..LogParams::default()
                };
                let text = pods
                    .logs(&name, &lp)
                    .await
                    .map_err(|e| Error::from_kube(&format!("the log of balancer pod {name}"), e))?;
                for line in text.lines() {
                    tally.line(line, &since.1, &target);
                }
            }
        }
        Ok(Some(tally.finish()))
    }

    /// The error-rate and p95 gates on a reading.
    fn traffic_failure(
        &self,
        (requests, errors, p95): (usize, usize, Option<u64>),
    ) -> Option<String> {
        let gate = &self.spec.policy.gate;
        if let Some(max) = &gate.max_error_rate
            && requests > 0
        {
            let ratio = errors as f64 / requests as f64;
            if ratio > max.value {
                return Some(format!(
                    "error rate {ratio:.3} above the gate {} ({errors} of {requests} requests)",
                    max.value
                ));
            }
        }
        if let (Some(max), Some(p)) = (&gate.max_latency_p95, p95)
            && p > max.millis
        {
            return Some(format!("p95 latency {p} ms above the gate {}", max.text));
        }
        None
    }

    /// Hold the health gate on Deployment `o`, `expected` pods, for the
    /// gate window; with `traffic_since`, the error-rate and p95 gates on
    /// the balancers' requests since then too. Operator commands and
    /// interrupts are read meanwhile.
    async fn hold(
        &mut self,
        o: &Object,
        expected: i64,
        step: &str,
        traffic_since: Option<&(i64, String)>,
    ) -> Result<Held, Stop> {
        self.reading = (0, 0, None);
        let window = gate_window(&self.spec.policy);
        let poll = self.opts.poll.max(Duration::from_millis(50));
        let mut baseline: BTreeMap<String, i64> = BTreeMap::new();
        let first = self.pods(o).await.map_err(failed)?;
        for p in &first {
            baseline.insert(pod_name(p), restarts(p));
        }
        let mut failure = health(&first, expected, &baseline);
        let mut deadline = Instant::now() + window;
        let mut paused = false;
        loop {
            if let Some(f) = failure {
                return Ok(Held::Failed(f));
            }
            if Instant::now() >= deadline {
                return Ok(Held::Passed);
            }
            tokio::time::sleep(poll.min(deadline.saturating_duration_since(Instant::now()))).await;
            if self.cancelled() {
                return Ok(Held::Interrupted);
            }
            match self.control().as_deref() {
                Some("abort") => return Ok(Held::Aborted),
                Some("promote") => return Ok(Held::Promoted),
                Some("pause") => {
                    if !paused {
                        paused = true;
                        self.update(|a| {
                            a.outcome = "paused".into();
                            a.reason = Some(format!("by an operator at {step}"));
                        });
                        (self.progress)(format!(
                            "  paused at {step} by an operator; `stackc rollout resume {}` continues",
                            self.spec.service
                        ));
                    }
                    deadline = Instant::now() + window;
                }
                _ if paused => {
                    paused = false;
                    self.update(|a| {
                        a.outcome = "running".into();
                        a.reason = None;
                    });
                    (self.progress)(format!("  resumed at {step}"));
                }
                _ => {}
            }
            let now = self.pods(o).await.map_err(failed)?;
            failure = health(&now, expected, &baseline);
            let mut traffic = String::new();
            if let Some(since) = traffic_since
                && let Some(r) = self.measure(since).await.map_err(failed)?
            {
                self.reading = r;
                failure = failure.or_else(|| self.traffic_failure(r));
                let (requests, errors, p95) = r;
                traffic = format!(
                    " · {requests} requests, {errors} errors, p95 {}",
                    p95.map_or_else(|| "-".to_string(), |p| format!("{p} ms"))
                );
            }
            let ready = now.iter().filter(|p| is_ready(p)).count();
            (self.progress)(format!(
                "~ {} {step} · {ready}/{expected} pods of {} ready{traffic} · {}s left",
                self.spec.service,
                o.name,
                deadline.saturating_duration_since(Instant::now()).as_secs()
            ));
        }
    }

    /// Hold until an operator decides, or the apply is interrupted.
    async fn held(&self) -> Decision {
        loop {
            tokio::time::sleep(self.opts.poll.max(Duration::from_millis(50))).await;
            if self.cancelled() {
                return Decision::Interrupted;
            }
            match self.control().as_deref() {
                Some("abort") => return Decision::Abort,
                Some("promote") => return Decision::Promote,
                Some("resume") => return Decision::Resume,
                _ => {}
            }
        }
    }

    /// A failed gate, by the policy: rollback, or pause until decided.
    /// `Ok(true)`: promote (skip the remaining gates), `Ok(false)`: go on.
    /// What a held gate means for the rollout: `true` once it is promoted
    /// (by an operator, or by a failed gate's pause ending in promote),
    /// `false` to go on; an abort or an interrupt retreats, `traffic`
    /// saying where the traffic is then.
    async fn after_hold(&mut self, held: Held, step: &str, traffic: &str) -> Result<bool, Stop> {
        match held {
            Held::Passed => Ok(false),
            Held::Promoted => Ok(true),
            Held::Failed(reason) => self.on_failure(step, reason).await,
            Held::Aborted => Err(self
                .retreat("aborted", format!("by an operator at {step}"))
                .await),
            Held::Interrupted => Err(self
                .retreat(
                    "interrupted",
                    format!("stopped by an interrupt at {step}; {traffic}"),
                )
                .await),
        }
    }

    async fn on_failure(&mut self, step: &str, reason: String) -> Result<bool, Stop> {
        (self.progress)(format!("  {step}: gate failed: {reason}"));
        if self.spec.policy.on_failure == OnFailure::Rollback {
            return Err(self
                .retreat("rolled back", format!("at {step}: {reason}"))
                .await);
        }
        self.clear_control();
        self.update(|a| {
            a.outcome = "paused".into();
            a.reason = Some(format!("at {step}: {reason}; kept as it is"));
        });
        (self.progress)(format!(
            "  paused at {step}: kept as it is; waiting for `stackc rollout resume|promote|abort {}`",
            self.spec.service
        ));
        match self.held().await {
            Decision::Resume => {
                self.clear_control();
                self.update(|a| {
                    a.outcome = "running".into();
                    a.reason = None;
                });
                (self.progress)(format!("  resumed by an operator after {step}"));
                Ok(false)
            }
            Decision::Promote => {
                (self.progress)(format!(
                    "  promoted at {step} by an operator: skipping the remaining gates"
                ));
                Ok(true)
            }
            Decision::Abort => Err(self
                .retreat(
                    "aborted",
                    format!("by an operator while paused at {step} ({reason})"),
                )
                .await),
            Decision::Interrupted => Err(self
                .retreat(
                    "interrupted",
                    format!("stopped by an interrupt while paused at {step}"),
                )
                .await),
        }
    }

    /// End early: traffic back on stable, the new track at 0 replicas.
    async fn retreat(&mut self, outcome: &str, reason: String) -> Stop {
        match back_to_stable(self).await {
            Ok(()) => {
                (self.progress)(format!(
                    "  {outcome}: all traffic back on the stable version of {}",
                    self.spec.service
                ));
                (outcome.to_string(), reason)
            }
            Err(e) => (
                "failed".into(),
                format!("{reason}; returning to stable failed: {}", e.message),
            ),
        }
    }

    /// Blue-green: the idle colour with the new version, gate, switch,
    /// gate, old colour to 0.
    async fn blue_green(&mut self, pending: &Pending) -> Result<(), Stop> {
        let (desired, spec) = (self.desired, self.spec);
        let (from, to) = pending.switch.clone().unwrap_or_default();
        let (bi, b) = find(desired, "Deployment", &pending.to)?;
        let (ai, a) = find(desired, "Deployment", &pending.from)?;
        let after = |o: &Object| -> Value {
            let mut o2 = o.clone();
            if let Some(body) = recolour(o, spec, &to) {
                o2.body = body;
            }
            apply_body(desired, &o2)
        };
        let (b_after, a_after) = (after(b), after(a));
        let services: Vec<(usize, Value)> = [&spec.main, &spec.public]
            .into_iter()
            .flatten()
            .map(|n| find(desired, "Service", n).map(|(i, o)| (i, after(o))))
            .collect::<Result<_, _>>()?;
        let preview = match &spec.preview {
            Some(n) => Some(find(desired, "Service", n).map(|(i, o)| (i, after(o)))?),
            None => None,
        };
        let b_obj = b.clone();
        self.write(
            bi,
            &b_after,
            &format!(
                "new template, replicas {} ({to}, no traffic)",
                self.spec.replicas
            ),
        )
        .await
        .map_err(failed)?;
        if let Err(e) = self.wait(bi).await {
            let reason = format!("the new version did not become available: {}", e.message);
            return Err(self.retreat("rolled back", reason).await);
        }
        // Before the switch: the new colour alone, no traffic.
        let step = format!("the gate before the switch to {to}");
        let held = self.hold(&b_obj, self.spec.replicas, &step, None).await?;
        let promoted = self
            .after_hold(held, &step, "traffic stayed on stable")
            .await?;
        self.update(|a| {
            a.steps.push(StepRecord {
                percent: 0,
                requests: 0,
                errors: 0,
                p95_ms: None,
                switch_secs: 0.0,
            })
        });
        // The switch: one patch per Service.
        let since = hist::chrono_now();
        let t = Instant::now();
        self.switched = true;
        for (i, body) in &services {
            self.write(*i, body, &format!("selector {LABEL_TRACK} {from} -> {to}"))
                .await
                .map_err(failed)?;
        }
        let switch_secs = t.elapsed().as_secs_f64();
        self.update(|a| a.percent = Some(100));
        (self.progress)(format!(
            "  traffic of {} switched {from} -> {to} in {:.0} ms",
            self.spec.service,
            switch_secs * 1000.0
        ));
        if let Some((i, body)) = &preview {
            self.write(*i, body, &format!("selector {LABEL_TRACK} -> {from}"))
                .await
                .map_err(failed)?;
        }
        if !promoted {
            let step = format!("the gate after the switch to {to}");
            let traffic = (spec.measured() && spec.has_traffic_gates()).then_some(&since);
            let held = self
                .hold(&b_obj, self.spec.replicas, &step, traffic)
                .await?;
            let (requests, errors, p95_ms) = self.reading;
            self.update(|a| {
                a.steps.push(StepRecord {
                    percent: 100,
                    requests,
                    errors,
                    p95_ms,
                    switch_secs,
                })
            });
            // The last gate: a promotion has nothing left to skip.
            self.after_hold(held, &step, &format!("traffic returned to {from}"))
                .await?;
        } else {
            self.update(|a| {
                a.steps.push(StepRecord {
                    percent: 100,
                    requests: 0,
                    errors: 0,
                    p95_ms: None,
                    switch_secs,
                })
            });
        }
        // keep-previous: the old colour runs on without traffic; the
        // Service says until when.
        if let (Some(secs), Some(main)) = (pending.keep_secs, &spec.main) {
            let (mi, m) = find(desired, "Service", main)?;
            let mut body = after(m);
            let until = hist::now() + secs;
            body["metadata"]["annotations"][ANNOTATION_KEPT] = json!(until.to_string());
            self.write(
                mi,
                &body,
                &format!(
                    "previous version ({from}) kept until {}",
                    crate::plan::clock(until)
                ),
            )
            .await
            .map_err(failed)?;
            self.update(|a| a.kept_until = Some(until));
            return Ok(());
        }
        self.write(
            ai,
            &a_after,
            &format!("replicas 0 ({from}, previous version)"),
        )
        .await
        .map_err(failed)?;
        Ok(())
    }

    /// Canary: the canary Deployment scaled per step, gate, then the
    /// stable Deployment updated and the canary back to 0.
    async fn canary(&mut self, pending: &Pending) -> Result<(), Stop> {
        let desired = self.desired;
        let (si, _) = find(desired, "Deployment", &pending.from)?;
        let (ci, c) = find(desired, "Deployment", &pending.to)?;
        let c_obj = c.clone();
        let steps = pending.steps.clone();
        let total = steps.len();
        let mut promoted = false;
        for (index, s) in steps.iter().enumerate() {
            if promoted || s.weight >= 100 {
                break;
            }
            let step = format!("step {}/{total} {}%", index + 1, s.weight);
            let mut body = apply_body(self.desired, &c_obj);
            body["spec"]["replicas"] = json!(s.canary_pods);
            let t = Instant::now();
            self.write(
                ci,
                &body,
                &format!(
                    "new template, replicas {} beside {} stable ({}% of the pods)",
                    s.canary_pods, s.stable_pods, s.share
                ),
            )
            .await
            .map_err(failed)?;
            if let Err(e) = self.wait(ci).await {
                let reason = format!(
                    "at {step}: the new version did not become available: {}",
                    e.message
                );
                return Err(self.retreat("rolled back", reason).await);
            }
            let switch_secs = t.elapsed().as_secs_f64();
            self.update(|a| a.percent = Some(s.share));
            (self.progress)(format!(
                "  {step}: {} canary pod(s) available ({}% of the pods); holding {}",
                s.canary_pods, s.share, pending.gate
            ));
            let held = self.hold(&c_obj, s.canary_pods, &step, None).await?;
            self.update(|a| {
                a.steps.push(StepRecord {
                    percent: s.weight,
                    requests: 0,
                    errors: 0,
                    p95_ms: None,
                    switch_secs,
                })
            });
            if matches!(held, Held::Promoted) {
                (self.progress)(format!(
                    "  promoted at {step} by an operator: skipping the remaining steps"
                ));
            }
            promoted = self
                .after_hold(held, &step, "traffic returned to stable")
                .await?;
        }
        // Promotion: stable takes the new template, then the canary goes.
        let stable_body = apply_body(self.desired, &self.desired.objects[si]);
        self.write(si, &stable_body, "new template (promotion)")
            .await
            .map_err(failed)?;
        self.wait(si).await.map_err(failed)?;
        self.update(|a| a.percent = Some(100));
        let canary_body = apply_body(self.desired, &c_obj);
        self.write(ci, &canary_body, "replicas 0")
            .await
            .map_err(failed)?;
        Ok(())
    }
}

fn pod_name(p: &Value) -> String {
    str_at(p, &["metadata", "name"]).unwrap_or("?").to_string()
}

fn restarts(p: &Value) -> i64 {
    p.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map_or(0, |cs| {
            cs.iter()
                .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                .sum()
        })
}

fn is_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                str_at(c, &["type"]) == Some("Ready") && str_at(c, &["status"]) == Some("True")
            })
        })
}

/// Why a container of `p` is not running, when its status says.
fn waiting(p: &Value) -> Option<String> {
    p.pointer("/status/containerStatuses")
        .and_then(Value::as_array)?
        .iter()
        .find_map(|c| {
            let w = c.pointer("/state/waiting")?;
            Some(format!(
                "container {}: {}",
                str_at(c, &["name"]).unwrap_or("?"),
                str_at(w, &["reason"]).unwrap_or("waiting")
            ))
        })
}

/// The health gate on a reading of the new track's Pods: every one ready,
/// none restarted since `baseline`, at least `expected` ready.
fn health(pods: &[Value], expected: i64, baseline: &BTreeMap<String, i64>) -> Option<String> {
    for p in pods {
        let name = pod_name(p);
        let before = baseline.get(&name).copied().unwrap_or(0);
        let now = restarts(p);
        if now > before {
            return Some(format!(
                "health: pod {name} restarted {} time(s) during the gate window{}",
                now - before,
                waiting(p).map(|w| format!(" ({w})")).unwrap_or_default()
            ));
        }
        if !is_ready(p) {
            return Some(format!(
                "health: pod {name} is not ready{}",
                waiting(p).map(|w| format!(" ({w})")).unwrap_or_default()
            ));
        }
    }
    let ready = pods.iter().filter(|p| is_ready(p)).count() as i64;
    (ready < expected).then(|| format!("health: {ready} of {expected} pods ready"))
}

/// Traffic back on stable, the new track at 0 replicas: the manifests as
/// `desired` has them (the live colour active), which is where a rollout
/// starts from.
async fn back_to_stable(r: &mut Runner<'_>) -> Result<(), Error> {
    let spec = r.spec;
    let idle = if spec.blue_green() {
        let switched = r.switched;
        let active = r
            .desired
            .active
            .get(&spec.service)
            .map_or("blue", String::as_str);
        let mut order: Vec<usize> = Vec::new();
        for n in [&spec.main, &spec.public, &spec.preview]
            .into_iter()
            .flatten()
            .filter(|_| switched)
        {
            if let Some(i) = r
                .desired
                .objects
                .iter()
                .position(|o| o.kind == "Service" && &o.name == n)
            {
                order.push(i);
            }
        }
        for i in order {
            let body = apply_body(r.desired, &r.desired.objects[i]);
            r.write(i, &body, &format!("selector back on {active}"))
                .await?;
        }
        if active == "green" { 0 } else { 1 }
    } else {
        1
    };
    let name = &spec.deployments[idle];
    if let Some(i) = r
        .desired
        .objects
        .iter()
        .position(|o| o.kind == "Deployment" && &o.name == name)
    {
        let body = apply_body(r.desired, &r.desired.objects[i]);
        r.write(i, &body, "replicas 0 (new version removed)")
            .await?;
    }
    Ok(())
}

/// Run the rollout `pending` (from the plan of `desired`); returns how
/// many objects it wrote.
pub async fn run(
    client: &Client,
    desired: &Desired,
    kinds: &Kinds,
    pending: &Pending,
    opts: &Options,
    progress: &(dyn Fn(String) + Sync),
) -> Result<usize, Error> {
    let spec = desired
        .rollouts
        .iter()
        .find(|s| s.service == pending.service)
        .ok_or_else(|| Error::new(format!("`{}` has no rollout policy", pending.service)))?;
    let mut history = opts
        .state_dir
        .as_ref()
        .map(|dir| hist::load_history(dir, &desired.stack, &spec.service));
    if let (Some(dir), Some(h)) = (&opts.state_dir, &mut history) {
        h.start_over(dir, &desired.stack);
        h.attempts.push(Attempt {
            started: hist::now(),
            finished: None,
            strategy: spec.strategy().into(),
            from_image: pending.from_image.clone(),
            to_image: pending.to_image.clone(),
            outcome: "running".into(),
            reason: None,
            steps: Vec::new(),
            percent: None,
            kept_until: None,
            track: Some(
                pending
                    .switch
                    .as_ref()
                    .map_or_else(|| "canary".to_string(), |(_, to)| to.clone()),
            ),
        });
        hist::save_history(dir, &desired.stack, h).map_err(Error::new)?;
    }
    progress(format!(
        "rollout {} ({}): {} -> {}",
        spec.service,
        spec.strategy(),
        pending.from_image,
        pending.to_image
    ));
    let mut runner = Runner {
        client,
        desired,
        kinds,
        opts,
        progress,
        spec,
        history,
        written: Default::default(),
        switched: false,
        reading: (0, 0, None),
    };
    let result = if spec.blue_green() {
        runner.blue_green(pending).await
    } else {
        runner.canary(pending).await
    };
    runner.clear_control();
    runner.update(|a| {
        a.finished = Some(hist::now());
        match &result {
            Ok(()) => {
                a.outcome = "succeeded".into();
                a.reason = None;
                a.percent = None;
            }
            Err((outcome, reason)) => {
                a.outcome = outcome.clone();
                a.reason = Some(reason.clone());
                if outcome != "failed" {
                    a.percent = None;
                }
            }
        }
    });
    match result {
        Ok(()) => {
            progress(format!("  rollout of {} complete", spec.service));
            Ok(runner.written.len())
        }
        Err((outcome, reason)) => Err(Error::new(format!(
            "rollout of {} {outcome}: {reason}",
            spec.service
        ))),
    }
}

/// `stackc rollout abort` when the apply that ran the rollout has stopped:
/// traffic back on stable and the new track at 0 (the history says which
/// track was new), under the stack's lock.
pub async fn abort_stopped(
    client: &Client,
    desired: &mut Desired,
    service: &str,
    state_dir: &Path,
    opts: &Options,
) -> Result<(), Error> {
    let mut history = hist::load_history(state_dir, &desired.stack, service);
    let track = history.attempts.last().and_then(|a| a.track.clone());
    let spec = desired
        .rollouts
        .iter()
        .find(|s| s.service == service)
        .cloned()
        .ok_or_else(|| Error::new(format!("`{service}` has no rollout on Kubernetes")))?;
    let mut live = read_live(client, desired).await?;
    if spec.blue_green()
        && let Some(t) = track.as_deref().filter(|t| *t == "blue" || *t == "green")
    {
        // Stable is the colour the attempt did not start; without a record,
        // the one the Service selects now.
        live.active.insert(service.to_string(), other(t).into());
    }
    set_live(desired, &live);
    let kinds = super::discover(client, desired).await?;
    let desired: &Desired = desired;
    let mut r = Runner {
        client,
        desired,
        kinds: &kinds,
        opts,
        progress: &|l| eprintln!("{l}"),
        spec: &spec,
        history: None,
        written: Default::default(),
        switched: true,
        reading: (0, 0, None),
    };
    // Only the stack's own objects.
    for i in spec.deployments.iter().chain(
        [&spec.main, &spec.public, &spec.preview]
            .into_iter()
            .flatten(),
    ) {
        let kind = if spec.deployments.contains(i) {
            "Deployment"
        } else {
            "Service"
        };
        let Ok((_, o)) = find(desired, kind, i) else {
            continue;
        };
        let rs = kinds
            .get(&o.api_version, &o.kind)
            .ok_or_else(|| Error::new(format!("the cluster does not serve {}", o.kind)))?;
        if let Some(v) = api(client, rs, o.namespace.as_deref(), &desired.namespace)
            .get_opt(&o.name)
            .await
            .map_err(|e| Error::from_kube(&o.label(), e))?
        {
            let v = serde_json::to_value(v).unwrap_or_default();
            if !owned_by(&v, &desired.stack) {
                return Err(Error::new(format!(
                    "{} exists without the labels of stack `{}`; stackc will not touch it",
                    o.label(),
                    desired.stack
                )));
            }
        }
    }
    back_to_stable(&mut r).await?;
    if let Some(a) = history
        .attempts
        .last_mut()
        .filter(|a| a.outcome == "running" || a.outcome == "paused")
    {
        a.outcome = "aborted".into();
        a.finished = Some(hist::now());
        a.percent = None;
        a.reason = Some("by an operator after its apply had stopped".into());
    }
    let _ = std::fs::remove_file(hist::control_path(state_dir, &desired.stack, service));
    hist::save_history(state_dir, &desired.stack, &history).map_err(Error::new)
}

/// After an apply that converged (under the stack's lock): an attempt
/// still `running` or `paused` belongs to a stackc that was killed. It is
/// recorded as interrupted and, since the cluster now runs what the
/// topology says, followed by a succeeded attempt when that is the version
/// it rolled out (the apply finished its last steps as plain updates).
pub fn settle(state_dir: &Path, desired: &Desired) -> Result<(), String> {
    for spec in &desired.rollouts {
        let mut h = hist::load_history(state_dir, &desired.stack, &spec.service);
        let Some(last) = h.attempts.last_mut() else {
            continue;
        };
        if last.outcome != "running" && last.outcome != "paused" {
            continue;
        }
        last.outcome = "interrupted".into();
        last.finished = Some(hist::now());
        last.reason = Some("stackc stopped during the rollout".into());
        let done = last.clone();
        // Both Deployments of the manifests carry the topology's template.
        let image = desired
            .objects
            .iter()
            .find(|o| o.kind == "Deployment" && o.name == spec.deployments[0])
            .map(|o| first_image(&o.body));
        if image.as_deref() == Some(done.to_image.as_str()) {
            h.attempts.push(Attempt {
                started: hist::now(),
                finished: Some(hist::now()),
                reason: Some(
                    "completed by the next apply: the service runs the new version and the other track has no traffic"
                        .into(),
                ),
                outcome: "succeeded".into(),
                steps: Vec::new(),
                percent: None,
                kept_until: None,
                ..done
            });
        }
        hist::save_history(state_dir, &desired.stack, &h)?;
    }
    Ok(())
}

/// `stackc rollout undo SERVICE`: all traffic back to the previous colour
/// kept by keep-previous (one patch per Service), then the colour that had
/// it scaled to 0. `desired` has the live colours ([`super::observe`]).
/// The previous colour keeps its version: the topology still names the
/// new one, so drift reports it and the next apply rolls it out again.
pub async fn undo(
    client: &Client,
    desired: &Desired,
    service: &str,
    state_dir: &Path,
    opts: &Options,
    progress: &(dyn Fn(String) + Sync),
) -> Result<(), Error> {
    let spec = desired
        .rollouts
        .iter()
        .find(|s| s.service == service && s.blue_green())
        .cloned()
        .ok_or_else(|| {
            Error::new(format!(
                "`{service}` has no blue-green rollout on Kubernetes (undo returns to the colour keep-previous keeps)"
            ))
        })?;
    let active = desired
        .active
        .get(service)
        .cloned()
        .unwrap_or_else(|| "blue".into());
    let previous = other(&active);
    let (kept_name, new_name) = if previous == "blue" {
        (&spec.deployments[0], &spec.deployments[1])
    } else {
        (&spec.deployments[1], &spec.deployments[0])
    };
    let no_kept = || {
        Error::new(format!(
            "no previous version of `{service}` is kept (keep-previous keeps it after a blue-green rollout, for a time)"
        ))
    };
    if !desired.kept.contains_key(kept_name) {
        return Err(no_kept());
    }
    let kinds = super::discover(client, desired).await?;
    let deployments: Api<apps::Deployment> = Api::namespaced(client.clone(), &desired.namespace);
    let mut images = Vec::new();
    for name in [kept_name, new_name] {
        let v = deployments
            .get_opt(name)
            .await
            .map_err(|e| Error::from_kube(&format!("Deployment {name}"), e))?
            .map(|d| serde_json::to_value(d).unwrap_or_default())
            .filter(|v| owned_by(v, &desired.stack))
            .ok_or_else(no_kept)?;
        if name == kept_name {
            if v.pointer("/spec/replicas").and_then(Value::as_i64) <= Some(0) {
                return Err(no_kept());
            }
            if let Some(why) = super::not_available("Deployment", &v) {
                return Err(Error::new(format!(
                    "the kept previous version of `{service}` (Deployment {name}) is not available, nothing was changed: {why}"
                )));
            }
        }
        images.push(first_image(&v));
    }
    let mut back = desired.clone();
    let mut live = Live::default();
    live.active
        .insert(service.to_string(), previous.to_string());
    set_live(&mut back, &live);
    let mut r = Runner {
        client,
        desired: &back,
        kinds: &kinds,
        opts,
        progress,
        spec: &spec,
        history: None,
        written: Default::default(),
        switched: true,
        reading: (0, 0, None),
    };
    let t = Instant::now();
    for name in [&spec.main, &spec.public, &spec.preview]
        .into_iter()
        .flatten()
    {
        let (i, o) = find(&back, "Service", name).map_err(|(_, e)| Error::new(e))?;
        let to = if spec.preview.as_ref() == Some(name) {
            active.as_str()
        } else {
            previous
        };
        let body = apply_body(&back, o);
        r.write(i, &body, &format!("selector {LABEL_TRACK} -> {to}"))
            .await?;
    }
    let switch_secs = t.elapsed().as_secs_f64();
    progress(format!(
        "all traffic of {service} on the previous version ({}, {previous}) in {:.0} ms",
        images[0],
        switch_secs * 1000.0
    ));
    let (i, o) = find(&back, "Deployment", new_name).map_err(|(_, e)| Error::new(e))?;
    let body = apply_body(&back, o);
    r.write(i, &body, "replicas 0").await?;
    let mut history = hist::load_history(state_dir, &desired.stack, service);
    history.attempts.push(Attempt {
        started: hist::now(),
        finished: Some(hist::now()),
        strategy: "undo".into(),
        from_image: images[1].clone(),
        to_image: images[0].clone(),
        outcome: "succeeded".into(),
        reason: Some("the previous version was restored by `stackc rollout undo`".into()),
        steps: vec![StepRecord {
            percent: 100,
            requests: 0,
            errors: 0,
            p95_ms: None,
            switch_secs,
        }],
        percent: None,
        kept_until: None,
        track: Some(previous.into()),
    });
    hist::save_history(state_dir, &desired.stack, &history).map_err(Error::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_pods_approximate_the_weight_without_scaling_stable_down() {
        // (stable pods, weight) -> canary pods, share of the pods.
        for (n, w, c, s) in [
            (3, 10, 1, 25),
            (3, 25, 1, 25),
            (3, 33, 2, 40),
            (3, 50, 3, 50),
            (3, 66, 3, 50),
            (1, 90, 1, 50),
            (10, 10, 1, 9),
            (10, 20, 3, 23),
            (4, 20, 1, 20),
        ] {
            assert_eq!(canary_pods(n, w), c, "{n} stable, {w}%");
            assert_eq!(share(n, c), s, "{n} stable, {c} canary");
        }
        assert_eq!(canary_pods(0, 50), 1);
        assert_eq!(share(0, 0), 0);
    }

    #[test]
    fn the_health_gate_wants_ready_pods_that_do_not_restart() {
        let pod = |name: &str, ready: bool, restarts: i64| {
            json!({"metadata": {"name": name}, "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "containerStatuses": [{"name": "app", "restartCount": restarts, "state": if ready { json!({"running": {}}) } else { json!({"waiting": {"reason": "CrashLoopBackOff"}}) }}]
            }})
        };
        let base: BTreeMap<String, i64> = [("a".to_string(), 2)].into();
        assert_eq!(
            health(&[pod("a", true, 2), pod("b", true, 0)], 2, &base),
            None
        );
        assert_eq!(
            health(&[pod("a", true, 2)], 2, &base).as_deref(),
            Some("health: 1 of 2 pods ready")
        );
        assert_eq!(
            health(&[pod("a", false, 3)], 1, &base).as_deref(),
            Some(
                "health: pod a restarted 1 time(s) during the gate window (container app: CrashLoopBackOff)"
            )
        );
        assert_eq!(
            health(&[pod("b", false, 0)], 1, &base).as_deref(),
            Some("health: pod b is not ready (container app: CrashLoopBackOff)")
        );
    }
}
