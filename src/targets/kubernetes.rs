//! Kubernetes target: manifests under `kubernetes/`, applied in file order
//! (`kubectl apply -f kubernetes/`). Objects are built with the k8s-openapi
//! types (the VerticalPodAutoscaler, which has none, as JSON) and printed by
//! [`crate::yaml`].
//!
//! Files:
//!
//! - `00-namespace.yaml`: the Namespace (`kubernetes namespace=`, else the
//!   stack name). Its header lists every Secret the manifests refer to and
//!   how to create it: stackc never writes a Secret object, so no secret
//!   value can reach an artifact.
//! - `10-rbac.yaml`: per declared `service-account`, a ServiceAccount, a
//!   Role with its rules and a RoleBinding.
//! - `15-volumes.yaml`: the PersistentVolumeClaims of Deployments and
//!   CronJobs, one per volume name (like compose's named volumes, a name
//!   used twice is one claim).
//! - `20-network-policies.yaml`: with `isolation="graph"` (the default, also
//!   when there is no `kubernetes` block), a default-deny ingress policy and
//!   one policy per component that admits only its graph edges.
//! - `30-service-NAME.yaml`: per service its ConfigMap, workloads,
//!   Services, PodDisruptionBudget, HorizontalPodAutoscaler(s) and
//!   VerticalPodAutoscaler(s).
//! - `40-balancer-NAME.yaml`: per balancer an nginx ConfigMap, Deployment,
//!   Service.
//! - `50-monitoring.yaml`: Prometheus (RBAC to discover pods, config and
//!   rules, Deployment, Service).
//! - `60-job-NAME.yaml`: per job a CronJob.
//!
//! Every object carries `app.kubernetes.io/{name,instance}` (the component
//! name), `app.kubernetes.io/component` (service, balancer, monitoring,
//! job, platform), `app.kubernetes.io/part-of` (the stack),
//! `app.kubernetes.io/managed-by: stackc` and the `io.stackc.*` ownership
//! labels. Selectors use `part-of` + `instance` (+ `io.stackc.track` for
//! the two versions of a rollout).
//!
//! Mapping decisions:
//!
//! - **Workloads** (docs/clustering.md): `single`, `active-active`,
//!   `active-passive` are Deployments; `primary-replica`, `quorum`,
//!   `sharded` are StatefulSets with a headless Service `NAME-headless`
//!   (publishing not-ready members, so a quorum can bootstrap) beside the
//!   ClusterIP Service `NAME`. Quorum and sharded members start in
//!   parallel (a quorum needs every member to elect a leader);
//!   primary-replica members in order, the primary first.
//! - **Disruption budget**: every service gets a PodDisruptionBudget with
//!   `minAvailable` = `min_healthy` (the majority for quorum clusters), or,
//!   with `backup-count=b`, the larger of `min_healthy` and `n - b`: losing
//!   up to `b` members keeps every datum available. Deployments roll with
//!   `maxUnavailable = n - minAvailable` and `maxSurge = 1`, so an update
//!   never goes below the budget either. Unhealthy pods may always be
//!   evicted, so a crash-looping member cannot block a node drain.
//! - **Configuration**: `env` and `runtime-opts` go into a ConfigMap
//!   `NAME-env` read with `envFrom`; its hash is a pod annotation, so a
//!   change rolls the pods. `command` + `args` become the container's
//!   `args` (the image's entrypoint stays, as with compose's `command`).
//! - **Secrets** are references only: `from="env:VAR"` becomes
//!   `valueFrom.secretKeyRef` on the Secret `STACK-NAME-secrets`, key = the
//!   variable name; `from="file:PATH"` becomes a key of that Secret mounted
//!   at `/run/secrets/VAR`, with `VAR_FILE` pointing at it (as compose
//!   does). The Secret must exist before the pods start.
//! - **Probes**: the health check becomes the readiness and the liveness
//!   probe (`cmd` -> exec `/bin/sh -c`, `http` -> httpGet, `tcp` ->
//!   tcpSocket; period = interval, timeout, failureThreshold = retries);
//!   `start-period` becomes a startup probe that allows
//!   `ceil(start-period / interval) + retries` failures.
//! - **Start order**: a `depends-on ... condition="healthy"` (and each
//!   balancer route) becomes an init container that waits until the
//!   dependency's Service answers on its port, which happens only once a
//!   member passed its readiness probe. `started` needs no wait: every pod
//!   starts once applied. `completed` and explicit `phases` are reported.
//! - **Security**: pods run with the RuntimeDefault seccomp profile, no
//!   service links, and no service-account token unless the service names
//!   a `service-account`. Containers drop every capability and cannot
//!   escalate privileges. Images known to start as root and drop to their
//!   own user (postgres, mysql, redis, nginx, consul, ...) get back only
//!   what that takes (chown, setuid/setgid, kill, file ownership, and
//!   binding ports below 1024 when they listen there). `runAsNonRoot` is
//!   not forced on service images, since the topology does not say which
//!   user an image runs as and many official images start as root; the
//!   containers stackc adds itself (wait, exporters, Prometheus) run as
//!   non-root. The root filesystem stays writable: applications write to
//!   it. The Namespace enforces the `baseline` Pod Security Standard and
//!   warns about `restricted`.
//! - **Volumes**: StatefulSets get a volumeClaimTemplate per volume (each
//!   member keeps its own data). A Deployment that runs exactly one pod
//!   (one replica, no autoscaling, no rollout) mounts a
//!   ReadWriteOnce claim named like the volume and updates with Recreate.
//!   Deployments with several pods cannot give each pod its own claim: the
//!   volume is an emptyDir and that is reported. Claims request
//!   [`DEFAULT_VOLUME_SIZE`] from the default storage class; the topology
//!   has no size.
//! - **Autoscaling**: HorizontalPodAutoscaler (autoscaling/v2) with CPU and
//!   memory utilization targets; VerticalPodAutoscaler
//!   (autoscaling.k8s.io/v1, the VPA CRD must be installed) with the mode
//!   and the min/max allowed of the service's container.
//! - **Rollouts**: blue-green is two Deployments `NAME-blue` (n replicas)
//!   and `NAME-green` (0) with `io.stackc.track`, the Service `NAME`
//!   selecting the active colour (blue) and `NAME-preview` the other one;
//!   each colour has its own HPA (an HPA does not scale a Deployment at 0
//!   replicas, so the idle colour's HPA waits). Canary is the stable
//!   Deployment `NAME` and `NAME-canary` (0 replicas), the Service `NAME`
//!   selecting both (traffic splits by replica count), `NAME-stable` only
//!   the stable track; the HPA scales the stable track. Steps, gates and
//!   failure action are `io.stackc.rollout/*` annotations. `stackc apply`
//!   with a Kubernetes target runs the rollouts on this form
//!   (`crate::apply::kube::rollout`): it reads the active colour from the
//!   Service `NAME` and recolours these manifests for it (the colours'
//!   replicas and the three selectors swap), scales the new track, holds
//!   the health gate on its Pods and switches the selector (blue-green) or
//!   scales the canary per step and then updates the stable Deployment.
//! - **Balancers**: nginx Deployment + ConfigMap + Service (LoadBalancer
//!   when a listener is public, port = the published port). The nginx.conf
//!   routes to the Services' cluster DNS names with the rate limits, route
//!   timeouts and keepalive; kube-proxy picks the pod, so nginx's
//!   balancing algorithm, `sticky` and `max-fails` have nothing to act on:
//!   readiness probes take failing pods out, and algorithms and sticky
//!   routes are reported. TLS material is mounted from Secrets.
//! - **Monitoring**: pods with `metrics` (or an exporter sidecar) carry the
//!   `prometheus.io/{scrape,port,path}` annotations. Prometheus discovers
//!   them in the namespace (`kubernetes_sd_configs`, role pod) and gets the
//!   rules of the prometheus target. Grafana and host exporters are not
//!   deployed (reported).
//! - **Ports**: every service with ports gets a ClusterIP Service; ports
//!   marked `public` also get a LoadBalancer Service `NAME-public` on the
//!   published port. A port published without `public` is bound to
//!   127.0.0.1 by compose: its Kubernetes counterpart is `kubectl
//!   port-forward`, so it needs no object.
//! - **Jobs**: CronJob, `concurrencyPolicy: Forbid`, `restartPolicy:
//!   OnFailure`.
//! - **Network policy**: default deny ingress; a service admits its
//!   dependents (graph edges) and the balancers that route to it on its
//!   ports, its own members (clusters talk among themselves), Prometheus on
//!   its scrape ports, and anyone on its public ports. Balancers admit
//!   anyone on their listeners. Jobs are not in the graph: reported.
//!
//! Everything is sorted or in declaration order, so the same topology
//! gives the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::autoscaling::v2 as hpa;
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::api::policy::v1 as policy;
use k8s_openapi::api::rbac::v1 as rbac;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::{
    Artifact, Ctx, LABEL_CONFIG_HASH, LABEL_OWNER, LABEL_SERVICE, LABEL_STACK, OWNER, Target,
    compose, nginx, prometheus, short_hash,
};
use crate::graph::Kind;
use crate::model::*;
use crate::source::Span;

/// Directory of every artifact of this target.
pub const DIR: &str = "kubernetes";
/// The network policies, in `DIR`.
const POLICIES_FILE: &str = "20-network-policies.yaml";
/// Label telling the two versions of a rollout apart.
pub const LABEL_TRACK: &str = "io.stackc.track";
/// The label naming a service's clustering strategy.
const LABEL_STRATEGY: &str = "io.stackc.strategy";
/// Prefix of the rollout annotations.
pub const ROLLOUT_PREFIX: &str = "io.stackc.rollout/";
/// Storage requested by every claim: the topology has no volume size.
pub const DEFAULT_VOLUME_SIZE: &str = "10Gi";
/// Image of the init containers that wait for dependencies.
pub const WAIT_IMAGE: &str = "busybox:1.36.1";
/// Pod annotation naming the Prometheus job of the pod's scrape endpoint.
pub const ANNOTATION_JOB: &str = "io.stackc.prometheus/job";
const ANNOTATION_ROLE: &str = "io.stackc.prometheus/role";
const ANNOTATION_FIRST_ROLE: &str = "io.stackc.prometheus/first-role";
const PROMETHEUS_ACCOUNT: &str = "stackc-prometheus";
const NGINX_EXPORTER_PORT: u16 = 9113;
const NOBODY: i64 = 65534;

/// Images whose entrypoint starts as root and drops to its own user.
const ROOT_ENTRY_IMAGES: &[&str] = &[
    "cassandra",
    "consul",
    "httpd",
    "mariadb",
    "mongo",
    "mysql",
    "nginx",
    "postgres",
    "rabbitmq",
    "redis",
    "valkey",
    "zookeeper",
];
/// What a root entrypoint needs to prepare its files and drop privileges.
const ROOT_ENTRY_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "KILL",
    "SETGID",
    "SETUID",
];
/// Images running as a fixed non-root user that must own their volumes.
const FS_GROUPS: &[(&str, i64)] = &[
    ("elasticsearch", 1000),
    ("grafana", 472),
    ("prometheus", NOBODY),
];

type Labels = BTreeMap<String, String>;

/// The repository name of an image without registry, path, tag or digest:
/// `docker.io/library/postgres:16.4` -> `postgres`.
fn image_base(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last)
}

fn root_entry(image: &str) -> bool {
    ROOT_ENTRY_IMAGES.contains(&image_base(image))
}

/// Seconds for a probe field: rounded up, at least 1.
fn secs(d: &Duration) -> i32 {
    let s = d.millis.div_ceil(1000).max(1);
    i32::try_from(s).unwrap_or(i32::MAX)
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A DNS label from any text: the namespace when it comes from the stack.
fn dns_label(s: &str) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(63);
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "stackc".to_string()
    } else {
        out
    }
}

/// `base-suffix`, kept within a DNS label (63 characters) with a hash.
pub fn derived_name(base: &str, suffix: &str) -> String {
    let full = crate::cat!(base, "-", suffix);
    if full.len() <= 63 {
        return full;
    }
    let hash = short_hash(&full);
    let keep = 63 - suffix.len() - hash.len() - 2;
    let head = base[..keep.min(base.len())].trim_end_matches('-');
    format!("{head}-{hash}-{suffix}")
}

/// A valid label value: at most 63 characters, alphanumeric at both ends,
/// `-_.` inside.
fn label_value_ok(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() <= 63
        && (b.is_empty()
            || (b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))))
}

/// A valid label or annotation key: `[prefix/]name`.
fn label_key_ok(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    prefix_ok && !name.is_empty() && label_value_ok(name)
}

/// A label value from any text: invalid characters become `-`.
fn label_value(v: &str) -> String {
    if label_value_ok(v) {
        return v.to_string();
    }
    let mut s: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(63);
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// An IANA service name usable as a port name.
fn port_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && n.chars().any(|c| c.is_ascii_lowercase())
        && !n.starts_with('-')
        && !n.ends_with('-')
        && !n.contains("--")
}

/// A command word or exec probe as written: Kubernetes expands `$(VAR)`
/// in them and reads `$$` as `$`, so every `$` is doubled.
fn literal(s: &str) -> String {
    s.replace('$', "$$")
}

/// Text safe inside a `#` comment line.
fn comment(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect::<String>()
        .into()
}

/// A shell word in single quotes (for the commands shown in comments).
fn sh_quote(s: &str) -> String {
    format!("'{}'", comment(s).replace('\'', r"'\''"))
}

/// One object, printed as a YAML document (straight from its typed form:
/// no JSON value in between).
struct Doc(String);

fn doc<T: serde::Serialize>(x: &T) -> Doc {
    Doc(crate::yaml::to_string(x))
}

/// The documents of one file, laid out straight into its text after its
/// header, `---` between them (no copy of each into the file).
struct Docs {
    text: String,
    any: bool,
}

impl Docs {
    fn new(header: String, room: usize) -> Self {
        let mut text = header;
        text.reserve(room);
        Docs { text, any: false }
    }

    fn next(&mut self) {
        if std::mem::replace(&mut self.any, true) {
            self.text.push_str("---\n");
        }
    }

    fn add<T: serde::Serialize>(&mut self, object: &T) {
        self.next();
        crate::yaml::write_doc(&mut self.text, object);
    }

    fn push(&mut self, d: Doc) {
        self.next();
        self.text.push_str(&d.0);
    }

    /// [`Docs::add`] for an object whose metadata holds labels taken from
    /// `labels`, which get them back: a service's objects share one label
    /// set, lent to each in turn rather than cloned for each.
    fn add_lending<T>(&mut self, mut object: T, labels: &mut Labels)
    where
        T: serde::Serialize + k8s_openapi::Metadata<Ty = ObjectMeta>,
    {
        self.add(&object);
        *labels = object.metadata_mut().labels.take().unwrap_or_default();
    }
}

/// Append documents separated by `---`.
fn push_docs(out: &mut String, docs: &[Doc]) {
    out.reserve(docs.iter().map(|d| d.0.len() + 4).sum());
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&d.0);
    }
}

fn quantity(s: &str) -> Quantity {
    Quantity(s.to_string())
}

fn resource_map(set: &ResourceSet) -> Option<BTreeMap<String, Quantity>> {
    let mut m = BTreeMap::new();
    if let Some(c) = &set.cpu {
        m.insert("cpu".to_string(), quantity(&c.value.text));
    }
    if let Some(mem) = &set.memory {
        m.insert("memory".to_string(), quantity(&mem.value.text));
    }
    (!m.is_empty()).then_some(m)
}

/// Requests and limits of the containers stackc adds beside a service's
/// own: small, and present so HPA utilization can be computed.
fn sidecar_resources() -> core::ResourceRequirements {
    core::ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), quantity("10m")),
            ("memory".to_string(), quantity("32Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), quantity("64Mi"))])),
        ..Default::default()
    }
}

fn selector_of(labels: &Labels) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        ..Default::default()
    }
}

fn tcp_port(p: u16) -> net::NetworkPolicyPort {
    net::NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(p))),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn protocol(p: Protocol) -> String {
    match p {
        Protocol::Tcp => "TCP".into(),
        Protocol::Udp => "UDP".into(),
    }
}

/// The container security context: no privilege escalation, every
/// capability dropped, root-entry images get back what dropping to their
/// user takes.
fn container_security(root_entry: bool, low_port: bool) -> core::SecurityContext {
    let mut add: Vec<String> = Vec::new();
    if root_entry {
        add.extend(ROOT_ENTRY_CAPS.iter().map(|c| c.to_string()));
        if low_port {
            add.push("NET_BIND_SERVICE".into());
        }
    }
    core::SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(false),
        capabilities: Some(core::Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: (!add.is_empty()).then_some(add),
        }),
        ..Default::default()
    }
}

/// The security context of a container stackc adds: non-root, nothing.
fn sidecar_security() -> core::SecurityContext {
    core::SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        run_as_non_root: Some(true),
        run_as_user: Some(NOBODY),
        capabilities: Some(core::Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_security(image: &str) -> core::PodSecurityContext {
    let base = image_base(image);
    core::PodSecurityContext {
        seccomp_profile: Some(core::SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        fs_group: FS_GROUPS.iter().find(|(b, _)| *b == base).map(|(_, g)| *g),
        ..Default::default()
    }
}

fn probe_handler(p: &HealthProbe) -> core::Probe {
    match p {
        HealthProbe::Cmd(c) => core::Probe {
            exec: Some(core::ExecAction {
                command: Some(vec!["/bin/sh".into(), "-c".into(), literal(&c.value)]),
            }),
            ..Default::default()
        },
        HealthProbe::Http { path, port } => core::Probe {
            http_get: Some(core::HTTPGetAction {
                path: Some(path.value.clone()),
                port: IntOrString::Int(i32::from(port.value)),
                ..Default::default()
            }),
            ..Default::default()
        },
        HealthProbe::Tcp(port) => core::Probe {
            tcp_socket: Some(core::TCPSocketAction {
                port: IntOrString::Int(i32::from(port.value)),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// Readiness, liveness and (with a start period) startup probes.
fn probes(h: &Health) -> (core::Probe, core::Probe, Option<core::Probe>) {
    let period = secs(&h.interval);
    let steady = core::Probe {
        period_seconds: Some(period),
        timeout_seconds: Some(secs(&h.timeout)),
        failure_threshold: Some(int(h.retries.max(1))),
        ..probe_handler(&h.probe)
    };
    let startup = h.start_period.as_ref().map(|sp| {
        let grace = sp.millis.div_ceil(h.interval.millis.max(1));
        core::Probe {
            failure_threshold: Some(
                i32::try_from(grace)
                    .unwrap_or(i32::MAX)
                    .saturating_add(int(h.retries.max(1))),
            ),
            ..steady.clone()
        }
    });
    (steady.clone(), steady, startup)
}

fn http_probe(path: &str, port: u16, https: bool, period: i32) -> core::Probe {
    core::Probe {
        http_get: Some(core::HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(i32::from(port)),
            scheme: https.then(|| "HTTPS".to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

fn rollout_annotations(r: &Rollout) -> Labels {
    let mut a = Labels::new();
    let key = |k: &str| format!("{ROLLOUT_PREFIX}{k}");
    a.insert(
        key("strategy"),
        match r.strategy {
            RolloutStrategy::BlueGreen => "blue-green".into(),
            RolloutStrategy::Canary => "canary".into(),
        },
    );
    let steps: Vec<String> = r.steps.value.iter().map(|s| s.to_string()).collect();
    a.insert(key("steps"), steps.join(","));
    if let Some(d) = &r.gate.healthy_for {
        a.insert(key("healthy-for"), d.text.clone());
    }
    if let Some(e) = &r.gate.max_error_rate {
        a.insert(key("max-error-rate"), e.value.to_string());
    }
    if let Some(d) = &r.gate.max_latency_p95 {
        a.insert(key("max-latency-p95"), d.text.clone());
    }
    a.insert(
        key("on-failure"),
        match r.on_failure {
            OnFailure::Rollback => "rollback".into(),
            OnFailure::Pause => "pause".into(),
        },
    );
    if let Some(d) = &r.keep_previous {
        a.insert(key("keep-previous"), d.text.clone());
    }
    a
}

/// Members that must stay available: `min_healthy`, or with
/// `backup-count=b` the larger of it and `n - b` (docs/clustering.md).
pub fn min_available(c: &Cluster) -> u32 {
    let n = c.replicas.value;
    let min = c.min_healthy();
    match &c.backup_count {
        Some(b) => min.max(n.saturating_sub(b.value)),
        None => min,
    }
    .min(n)
}

/// Canary pods for a step of `weight` % beside `n` stable pods: the count
/// in `1..=n` whose share `c / (n + c)` is closest to the weight (the
/// smaller count on a tie). The stable Deployment is never scaled down, so
/// no step goes beyond 50 %.
pub fn canary_pods(n: i64, weight: u32) -> i64 {
    let n = n.max(1);
    let want = f64::from(weight.min(100)) / 100.0;
    let dist = |c: i64| (c as f64 / (n + c) as f64 - want).abs();
    (1..=n)
        .min_by(|a, b| dist(*a).total_cmp(&dist(*b)))
        .unwrap_or(1)
}

/// The share of pods, in %, that `c` canary pods beside `n` stable carry.
pub fn share(n: i64, c: i64) -> u32 {
    if n + c <= 0 {
        return 0;
    }
    ((c * 100 + (n + c) / 2) / (n + c)) as u32
}

/// One Deployment or StatefulSet of a service.
struct Workload {
    name: String,
    replicas: i32,
    track: Option<&'static str>,
}

/// A Secret the manifests refer to, and how to create it.
struct SecretNote {
    name: String,
    /// `generic` or `tls`.
    kind: &'static str,
    used_by: String,
    /// `kubectl create secret KIND NAME` arguments.
    create: Vec<String>,
}

/// A claim by volume name, and who mounts it.
struct Claim {
    users: Vec<String>,
    span: Span,
}

/// Where Prometheus scrapes a pod.
struct Scrape {
    port: u16,
    path: String,
    job: String,
}

struct Emitter<'c, 'a> {
    cx: &'c mut Ctx<'a>,
    t: &'a Topology,
    ns: String,
    stack: String,
    isolation: Isolation,
    claims: BTreeMap<String, Claim>,
    secrets: Vec<SecretNote>,
    /// Where each Secret's note is in `secrets`, by name.
    secret_index: crate::Map<String, usize>,
    /// The network policies file, as its documents are laid out (the
    /// header and the default deny first).
    policies: String,
    /// The stack's name as a label value, and as comment text.
    stack_label: String,
    stack_comment: String,
    /// Room to reserve for a service's file: the last one's size, and some.
    service_room: usize,
}

pub fn emit(cx: &mut Ctx) -> Vec<Artifact> {
    let mut c = super::Collect::default();
    emit_to(cx, &mut c);
    let mut out = c.artifacts;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// As [`emit`], each file into `sink` as soon as it is complete.
pub fn emit_to(cx: &mut Ctx, sink: &mut dyn super::Sink) {
    let t = cx.topology;
    // A large stack's Prometheus file takes a while and depends on no
    // service's objects: it is laid out beside them, by a second emitter
    // with its own context, and taken in its place.
    let beside = t
        .monitoring
        .as_ref()
        .filter(|_| t.services.len() >= MONITORING_BESIDE);
    let Some(m) = beside else {
        return Emitter::new(cx).run(sink, None);
    };
    let mut side = Ctx {
        topology: cx.topology,
        graph: cx.graph,
        plan: cx.plan.clone(),
        warnings: crate::diag::Diagnostics::new(),
        shared: cx.shared.clone(),
    };
    std::thread::scope(|scope| {
        let monitoring = std::thread::Builder::new()
            .name("kubernetes-monitoring".into())
            .spawn_scoped(scope, move || {
                super::yield_to_kubernetes();
                let mut e = Emitter::new(&mut side);
                let a = e.monitoring(m);
                let claims = std::mem::take(&mut e.claims);
                Beside {
                    artifact: a,
                    claims,
                    warnings: side.warnings,
                }
            })
            .expect("a thread for the Prometheus file");
        Emitter::new(cx).run(sink, Some(monitoring));
    });
}

/// Services from which the Prometheus file is laid out on its own thread.
const MONITORING_BESIDE: usize = 256;

/// The Prometheus file laid out beside the services, with what laying it
/// out claimed and reported.
struct Beside {
    artifact: Artifact,
    claims: BTreeMap<String, Claim>,
    warnings: crate::diag::Diagnostics,
}

impl<'c, 'a> Emitter<'c, 'a> {
    fn new(cx: &'c mut Ctx<'a>) -> Self {
        let t = cx.topology;
        let stack = cx.stack().to_string();
        let (ns, isolation) = match &t.kubernetes {
            Some(k) => (k.namespace.value.clone(), k.isolation),
            None => (dns_label(&stack), Isolation::Graph),
        };
        Emitter {
            cx,
            t,
            ns,
            stack_label: label_value(&stack),
            stack_comment: comment(&stack).into_owned(),
            stack,
            isolation,
            claims: BTreeMap::new(),
            secrets: Vec::new(),
            secret_index: crate::Map::default(),
            policies: String::new(),
            service_room: 8 << 10,
        }
    }
    fn unmapped(&mut self, setting: &str, span: Span, why: &str) {
        self.cx.unmapped(Target::Kubernetes, setting, span, why);
    }

    fn header(&self, what: &str) -> String {
        crate::cat!(
            "# Generated by stackc from the topology of stack `",
            self.stack_comment,
            "`: ",
            comment(what),
            ".\n# Do not edit: change the topology and run `stackc build`.\n"
        )
    }

    fn file(&self, path: &str, what: &str, docs: &[Doc]) -> Artifact {
        let mut text = self.header(what);
        push_docs(&mut text, docs);
        Artifact::new(crate::cat!(DIR, "/", path), text)
    }

    /// Labels of every object of component `name`.
    fn labels(&self, name: &str, component: &str) -> Labels {
        let value = label_value(name);
        let mut l = Labels::new();
        l.insert("app.kubernetes.io/name".into(), value.clone());
        l.insert("app.kubernetes.io/instance".into(), value.clone());
        l.insert("app.kubernetes.io/component".into(), component.into());
        l.insert("app.kubernetes.io/part-of".into(), self.stack_label.clone());
        l.insert("app.kubernetes.io/managed-by".into(), OWNER.into());
        l.insert(LABEL_STACK.into(), self.stack_label.clone());
        l.insert(LABEL_SERVICE.into(), value);
        l.insert(LABEL_OWNER.into(), OWNER.into());
        l
    }

    /// The labels that select the pods of component `name`.
    fn selector(&self, name: &str) -> Labels {
        let mut l = Labels::new();
        l.insert("app.kubernetes.io/instance".into(), label_value(name));
        l.insert("app.kubernetes.io/part-of".into(), self.stack_label.clone());
        l
    }

    fn meta(&self, name: &str, labels: Labels, annotations: Labels) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.ns.clone()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        }
    }

    fn dns(&self, service: &str) -> String {
        format!("{service}.{}.svc.cluster.local", self.ns)
    }

    /// Emit every file into `out`; the Prometheus file is `beside`'s when
    /// it is laid out on its own thread.
    fn run(
        &mut self,
        out: &mut dyn super::Sink,
        beside: Option<std::thread::ScopedJoinHandle<'_, Beside>>,
    ) {
        let t = self.t;
        if self.isolation == Isolation::Graph {
            let mut text = self
                .header("network policies (default deny, the dependency graph's edges allowed)");
            text.push_str(&self.default_deny().0);
            self.policies = text;
        }
        if let Some(a) = self.rbac() {
            out.put(a);
        }
        for s in &t.services {
            let a = self.service(s);
            out.put(a);
            self.flush_policies(out, false);
        }
        for b in &t.balancers {
            out.put(self.balancer(b));
        }
        if let Some(m) = &t.monitoring {
            let a = match beside {
                Some(h) => {
                    let b = h
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    self.cx.warnings.extend(b.warnings);
                    for (name, c) in b.claims {
                        for user in &c.users {
                            self.claim(&name, user, c.span);
                        }
                    }
                    b.artifact
                }
                None => self.monitoring(m),
            };
            out.put(a);
        }
        for j in &t.jobs {
            out.put(self.job(j));
        }
        if let Some(p) = &t.phases {
            self.unmapped(
                "the phase list",
                p.span,
                "kubectl applies every workload at once: each dependency edge is kept by an init container that waits for the dependency, the order of phases beyond those edges is not",
            );
        }
        self.volumes(out);
        self.flush_policies(out, true);
        out.put(self.namespace());
    }

    /// Hand the network policies laid out so far to `out` as a part of
    /// their file, once there are enough of them (or all of them, `done`):
    /// a large stack's policies are never held whole.
    fn flush_policies(&mut self, out: &mut dyn super::Sink, done: bool) {
        const PART: usize = 1 << 16;
        if self.isolation == Isolation::Graph && (done || self.policies.len() >= PART) {
            out.write(&crate::cat!(DIR, "/", POLICIES_FILE), &self.policies, done);
            self.policies.clear();
        }
    }

    fn namespace(&self) -> Artifact {
        let mut labels = self.labels(&self.ns, "platform");
        labels.insert("kubernetes.io/metadata.name".into(), self.ns.clone());
        labels.insert(
            "pod-security.kubernetes.io/enforce".into(),
            "baseline".into(),
        );
        labels.insert(
            "pod-security.kubernetes.io/warn".into(),
            "restricted".into(),
        );
        let ns = core::Namespace {
            metadata: ObjectMeta {
                name: Some(self.ns.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut head = self.header(&format!("namespace `{}`", self.ns));
        if self.secrets.is_empty() {
            head.push_str("# The manifests refer to no Secret.\n");
        } else {
            head.push_str(
                "#\n# Secrets are never generated: the manifests only refer to them. Create\n# these before applying the workloads that use them:\n",
            );
            // One note per Secret: a large stack's are megabytes, written
            // piece by piece rather than formatted one by one.
            head.reserve(self.secrets.len() * 256);
            for s in &self.secrets {
                let name = comment(&s.name);
                for part in [
                    "#\n# ",
                    &name,
                    " (used by ",
                    &comment(&s.used_by),
                    "):\n#   kubectl -n ",
                    &self.ns,
                    " create secret ",
                    s.kind,
                    " ",
                    &name,
                    " ",
                ] {
                    head.push_str(part);
                }
                for (i, arg) in s.create.iter().enumerate() {
                    if i > 0 {
                        head.push(' ');
                    }
                    head.push_str(arg);
                }
                head.push('\n');
            }
        }
        crate::yaml::write_doc(&mut head, &ns);
        Artifact::new(format!("{DIR}/00-namespace.yaml"), head)
    }

    fn rbac(&mut self) -> Option<Artifact> {
        let k = self.t.kubernetes.as_ref()?;
        if k.service_accounts.is_empty() {
            return None;
        }
        let mut docs = Vec::new();
        for sa in &k.service_accounts {
            let name = &sa.name.value;
            let labels = self.labels(name, "platform");
            docs.push(doc(&core::ServiceAccount {
                metadata: self.meta(name, labels.clone(), Labels::new()),
                ..Default::default()
            }));
            if sa.rules.is_empty() {
                continue;
            }
            let rules = sa
                .rules
                .iter()
                .map(|r| rbac::PolicyRule {
                    api_groups: Some(r.api_groups.clone()),
                    resources: Some(r.resources.iter().map(|x| x.value.clone()).collect()),
                    verbs: r.verbs.iter().map(|x| x.value.clone()).collect(),
                    ..Default::default()
                })
                .collect();
            docs.push(doc(&rbac::Role {
                metadata: self.meta(name, labels.clone(), Labels::new()),
                rules: Some(rules),
            }));
            docs.push(doc(&rbac::RoleBinding {
                metadata: self.meta(name, labels, Labels::new()),
                role_ref: rbac::RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: name.clone(),
                },
                subjects: Some(vec![rbac::Subject {
                    kind: "ServiceAccount".into(),
                    name: name.clone(),
                    namespace: Some(self.ns.clone()),
                    ..Default::default()
                }]),
            }));
        }
        Some(self.file("10-rbac.yaml", "service accounts and their roles", &docs))
    }

    /// The claims' file, streamed into `out` (a large stack's is several
    /// MB, laid out in two halves at once).
    fn volumes(&mut self, out: &mut dyn super::Sink) {
        if self.claims.is_empty() {
            return;
        }
        let claims: Vec<(String, Claim)> = std::mem::take(&mut self.claims).into_iter().collect();
        for (name, c) in &claims {
            if c.users.len() > 1 {
                self.unmapped(
                    &format!("volume `{name}` shared by {}", c.users.join(", ")),
                    c.span,
                    "the claim is ReadWriteOnce: its pods must run on one node at a time, or the storage class must allow ReadWriteMany",
                );
            }
        }
        // The last file of a large stack, when the other targets are done:
        // laid out on two threads, each half as one text.
        let this = &*self;
        let halves = super::in_halves(&claims, |part| {
            // A claim's document is about 500 bytes.
            let mut docs = Docs::new(String::new(), part.len() * 600);
            for (name, c) in part {
                let mut ann = Labels::new();
                ann.insert("io.stackc.used-by".into(), c.users.join(","));
                ann.insert("io.stackc.size".into(), "default".into());
                docs.add(&core::PersistentVolumeClaim {
                    metadata: this.meta(name, this.labels(name, "volume"), ann),
                    spec: Some(claim_spec()),
                    ..Default::default()
                });
            }
            docs.text
        });
        let path = crate::cat!(DIR, "/15-volumes.yaml");
        out.write_owned(
            &path,
            self.header(&format!(
                "persistent volume claims ({DEFAULT_VOLUME_SIZE} each, default storage class)"
            )),
            false,
        );
        let last = halves.len() - 1;
        for (i, text) in halves.into_iter().enumerate() {
            if i > 0 {
                out.write(&path, "---\n", false);
            }
            out.write_owned(&path, text, i == last);
        }
    }

    fn claim(&mut self, name: &str, user: &str, span: Span) {
        let c = self.claims.entry(name.to_string()).or_insert(Claim {
            users: Vec::new(),
            span,
        });
        if !c.users.iter().any(|u| u == user) {
            c.users.push(user.to_string());
        }
    }

    fn default_deny(&self) -> Doc {
        doc(&net::NetworkPolicy {
            metadata: self.meta(
                "stackc-default-deny",
                self.labels("stackc-default-deny", "platform"),
                Labels::new(),
            ),
            spec: Some(net::NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Ingress".into()]),
                ..Default::default()
            }),
        })
    }

    /// Peers: the pods of these components.
    fn peers(&self, names: &[String]) -> Vec<net::NetworkPolicyPeer> {
        names
            .iter()
            .map(|n| net::NetworkPolicyPeer {
                pod_selector: Some(selector_of(&self.selector(n))),
                ..Default::default()
            })
            .collect()
    }

    /// The network policy of component `name`, whose objects carry `labels`.
    fn policy(&mut self, name: &str, labels: Labels, rules: Vec<net::NetworkPolicyIngressRule>) {
        if self.isolation != Isolation::Graph || rules.is_empty() {
            return;
        }
        let p = net::NetworkPolicy {
            metadata: self.meta(name, labels, Labels::new()),
            spec: Some(net::NetworkPolicySpec {
                pod_selector: Some(selector_of(&self.selector(name))),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(rules),
                ..Default::default()
            }),
        };
        self.policies.push_str("---\n");
        crate::yaml::write_doc(&mut self.policies, &p);
    }

    /// Components with a graph edge to `name`, by kind.
    fn dependents(&self, name: &str) -> (Vec<String>, Vec<String>) {
        let g = self.cx.graph;
        let mut services = BTreeSet::new();
        let mut balancers = BTreeSet::new();
        if let Some(to) = g.index(name) {
            for e in g.incoming[to].iter().map(|i| &g.edges[*i]) {
                let c = &g.components[e.from];
                match c.kind {
                    Kind::Service => services.insert(c.name.clone()),
                    Kind::Balancer => balancers.insert(c.name.clone()),
                    Kind::Monitoring => false,
                };
            }
        }
        (
            services.into_iter().collect(),
            balancers.into_iter().collect(),
        )
    }

    /// Init containers that wait for the dependencies to be healthy.
    fn waits(&mut self, deps: &[(String, Condition, Span)]) -> Vec<core::Container> {
        let t = self.t;
        let mut out: Vec<core::Container> = Vec::new();
        for (dep, cond, span) in deps {
            match cond {
                Condition::Started => continue,
                Condition::Completed => {
                    self.unmapped(
                        &format!("depends-on `{dep}` condition=\"completed\""),
                        *span,
                        "a Kubernetes pod cannot wait for another workload to finish: run it as a Job before applying",
                    );
                    continue;
                }
                Condition::Healthy => {}
            }
            let port = if let Some(s) = self.cx.plan.index(dep).map(|i| &t.services[i]) {
                nginx::service_port(s)
            } else if let Some(b) = t.balancers.iter().find(|b| b.name.value == *dep) {
                b.listeners.first().map(|l| l.port.value)
            } else if dep == "prometheus" {
                t.monitoring.as_ref().map(|m| m.prometheus.port)
            } else {
                None
            };
            let Some(port) = port else {
                self.unmapped(
                    &format!("depends-on `{dep}` condition=\"healthy\""),
                    *span,
                    "the dependency declares no port, so it has no Service to wait for: the pod starts without waiting",
                );
                continue;
            };
            let name = derived_name("wait-for", dep);
            if out.iter().any(|c| c.name == name) {
                continue;
            }
            out.push(core::Container {
                name,
                image: Some(WAIT_IMAGE.into()),
                command: Some(vec!["sh".into(), "-c".into(), {
                    let port = itoa::Buffer::new().format(port).to_string();
                    crate::cat!(
                        "until nc -w 2 ",
                        dep,
                        " ",
                        port,
                        " </dev/null >/dev/null; do echo waiting for ",
                        dep,
                        ":",
                        port,
                        "; sleep 2; done"
                    )
                }]),
                resources: Some(sidecar_resources()),
                security_context: Some(sidecar_security()),
                ..Default::default()
            });
        }
        out
    }

    /// Env vars and mounts for the secrets of a component, and the note on
    /// the Secret they need.
    fn secret_refs(
        &mut self,
        owner: &str,
        secrets: &[crate::model::Secret],
        env: &mut Vec<core::EnvVar>,
        volumes: &mut Vec<core::Volume>,
        mounts: &mut Vec<core::VolumeMount>,
    ) {
        if secrets.is_empty() {
            return;
        }
        let secret_name = derived_name(&crate::cat!(self.stack, "-", owner), "secrets");
        let mut create = Vec::new();
        let mut files = Vec::new();
        for s in secrets {
            let key = &s.name.value;
            match &s.source {
                SecretSource::Env(var) => {
                    env.push(core::EnvVar {
                        name: key.clone(),
                        value_from: Some(core::EnvVarSource {
                            secret_key_ref: Some(core::SecretKeySelector {
                                name: secret_name.clone(),
                                key: key.clone(),
                                optional: Some(false),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                    create.push(crate::cat!("--from-literal=", key, "=\"$", var, "\""));
                }
                SecretSource::File(path) => {
                    files.push(core::KeyToPath {
                        key: key.clone(),
                        path: key.clone(),
                        ..Default::default()
                    });
                    env.push(core::EnvVar {
                        name: format!("{key}_FILE"),
                        value: Some(format!("/run/secrets/{key}")),
                        ..Default::default()
                    });
                    create.push(format!("--from-file={key}={}", sh_quote(path)));
                }
            }
        }
        if !files.is_empty() {
            volumes.push(core::Volume {
                name: "stackc-secrets".into(),
                secret: Some(core::SecretVolumeSource {
                    secret_name: Some(secret_name.clone()),
                    items: Some(files),
                    // Readable by the image's user, whoever it is (compose
                    // mounts secrets 0444 too).
                    default_mode: Some(0o444),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(core::VolumeMount {
                name: "stackc-secrets".into(),
                mount_path: "/run/secrets".into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        self.note(secret_name, "generic", owner, create);
    }

    /// Record a Secret the manifests need (once per name).
    fn note(&mut self, name: String, kind: &'static str, used_by: &str, create: Vec<String>) {
        if let Some(&i) = self.secret_index.get(&name) {
            let n = &mut self.secrets[i];
            if !n.used_by.split(", ").any(|u| u == used_by) {
                n.used_by = format!("{}, {used_by}", n.used_by);
            }
            return;
        }
        self.secret_index.insert(name.clone(), self.secrets.len());
        self.secrets.push(SecretNote {
            name,
            kind,
            used_by: used_by.to_string(),
            create,
        });
    }

    /// Pod volumes and mounts for `volumes`: claims by volume name, or
    /// emptyDirs when several pods would share them. StatefulSets mount
    /// their claim templates (`template` true).
    fn volume_mounts(
        &mut self,
        owner: &str,
        list: &[crate::model::Volume],
        mode: VolumeMode,
        volumes: &mut Vec<core::Volume>,
        mounts: &mut Vec<core::VolumeMount>,
    ) {
        for v in list {
            let name = v.name.value.clone();
            match mode {
                VolumeMode::Template => {}
                VolumeMode::Claim => {
                    self.claim(&name, owner, v.span);
                    volumes.push(core::Volume {
                        name: name.clone(),
                        persistent_volume_claim: Some(core::PersistentVolumeClaimVolumeSource {
                            claim_name: name.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
                VolumeMode::EmptyDir => {
                    self.unmapped(
                        &format!("volume `{name}` of `{owner}`"),
                        v.span,
                        "the pods of a Deployment cannot each own a claim, and compose gives each member its own volume: it is an emptyDir, lost with the pod; use a stateful strategy (StatefulSet) to keep per-member data",
                    );
                    volumes.push(core::Volume {
                        name: name.clone(),
                        empty_dir: Some(core::EmptyDirVolumeSource::default()),
                        ..Default::default()
                    });
                }
            }
            mounts.push(core::VolumeMount {
                name,
                mount_path: v.path.value.clone(),
                read_only: v.read_only.then_some(true),
                ..Default::default()
            });
        }
    }

    /// Exporter sidecars of a service, and their scrape endpoints.
    fn exporters(&mut self, s: &Service) -> (Vec<core::Container>, Vec<Scrape>) {
        let mut containers = Vec::new();
        let mut scrapes = Vec::new();
        let port = s.ports.first().map_or(0, |p| p.container.value);
        for x in &s.exporters {
            let known = compose::exporter_image(&x.kind.value);
            let image = match (&x.image, known) {
                (Some(i), _) => i.value.clone(),
                (None, Some((i, _))) => i.to_string(),
                (None, None) => {
                    self.unmapped(
                        &format!("exporter `{}`", x.kind.value),
                        x.span,
                        "stackc knows no image for this exporter; set image= on the exporter",
                    );
                    continue;
                }
            };
            let target = match x.kind.value.as_str() {
                "postgres" => format!("127.0.0.1:{port}/postgres?sslmode=disable"),
                "redis" => format!("redis://127.0.0.1:{port}"),
                "elasticsearch" | "consul" => format!("http://127.0.0.1:{port}"),
                _ => format!("127.0.0.1:{port}"),
            };
            let mut c = core::Container {
                name: derived_name(&x.kind.value, "exporter"),
                image: Some(image),
                ports: Some(vec![core::ContainerPort {
                    name: Some(format!("exp-{}", x.port)),
                    container_port: i32::from(x.port),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                resources: Some(sidecar_resources()),
                security_context: Some(sidecar_security()),
                ..Default::default()
            };
            match known.map(|k| k.1) {
                Some(how) if how.starts_with("env:") => {
                    c.env = Some(vec![core::EnvVar {
                        name: how["env:".len()..].to_string(),
                        value: Some(target),
                        ..Default::default()
                    }]);
                }
                Some(how) if how.starts_with("arg:") => {
                    c.args = Some(vec![format!("{}={target}", &how["arg:".len()..])]);
                }
                _ => {}
            }
            containers.push(c);
            scrapes.push(Scrape {
                port: x.port,
                path: "/metrics".into(),
                job: prometheus::exporter_job(&s.name.value),
            });
        }
        (containers, scrapes)
    }

    /// Prometheus annotations for the first scrape endpoint; the others
    /// are reported.
    fn scrape_annotations(&mut self, owner: &str, scrapes: &[Scrape], span: Span) -> Labels {
        let mut a = Labels::new();
        let Some(first) = scrapes.first() else {
            return a;
        };
        a.insert("prometheus.io/scrape".into(), "true".into());
        a.insert("prometheus.io/port".into(), first.port.to_string());
        a.insert("prometheus.io/path".into(), first.path.clone());
        a.insert(ANNOTATION_JOB.into(), first.job.clone());
        if scrapes.len() > 1 {
            let rest: Vec<String> = scrapes[1..].iter().map(|s| s.port.to_string()).collect();
            self.unmapped(
                &format!("scrape endpoints {} of `{owner}`", rest.join(", ")),
                span,
                "the prometheus.io annotations name one port per pod: only the first endpoint is scraped",
            );
        }
        a
    }

    fn service(&mut self, s: &'a Service) -> Artifact {
        let name = s.name.value.clone();
        let c = &s.cluster;
        let n = int(s.instances());
        let stateful = c.strategy.is_stateful();
        let secret = if s.secrets.is_empty() {
            String::new()
        } else {
            crate::cat!(
                "; needs Secret `",
                derived_name(&crate::cat!(self.stack, "-", name), "secrets"),
                "` (see 00-namespace.yaml)"
            )
        };
        let what = crate::cat!(
            "service `",
            name,
            "` (",
            c.strategy.as_str(),
            ", ",
            itoa::Buffer::new().format(n),
            " replica(s))",
            secret
        );
        // Room for about as much as the last service's file took.
        let mut docs = Docs::new(self.header(&what), self.service_room);
        let mut labels = {
            let mut l = self.labels(&name, "service");
            l.insert(LABEL_STRATEGY.into(), c.strategy.as_str().into());
            l
        };
        let selector = self.selector(&name);
        let rollout = s.rollout.as_ref().filter(|_| !stateful);
        if let (Some(r), true) = (&s.rollout, stateful) {
            self.unmapped(
                &format!("rollout of `{name}`"),
                r.span,
                "a StatefulSet replaces its members in order, one version at a time: the rollout policy needs a Deployment (a stateless strategy)",
            );
        }
        match s.restart {
            RestartPolicy::Always | RestartPolicy::UnlessStopped => {}
            RestartPolicy::No | RestartPolicy::OnFailure => self.unmapped(
                &format!("restart policy of `{name}`"),
                s.span,
                "the pods of a Deployment or StatefulSet always restart: `no` and `on-failure` have no equivalent (use a job for run-once work)",
            ),
        }
        if c.strategy == Strategy::ActivePassive && !s.ports.is_empty() {
            self.unmapped(
                &format!("active-passive routing of `{name}`"),
                c.span,
                "a Service sends traffic to every ready member: the passive members must fail their readiness probe for only the active one to receive traffic",
            );
        }

        // Configuration.
        let mut data = BTreeMap::new();
        for e in &s.env {
            data.insert(e.name.value.clone(), e.value.value.clone());
        }
        if let Some(r) = &s.runtime_opts {
            data.insert(r.env.clone(), r.value.value.clone());
        }
        let config_name = derived_name(&name, "env");
        let config_hash = (!data.is_empty()).then(|| super::hash_json(&data));
        if !data.is_empty() {
            let object = core::ConfigMap {
                metadata: self.meta(&config_name, std::mem::take(&mut labels), Labels::new()),
                data: Some(data),
                ..Default::default()
            };
            docs.add_lending(object, &mut labels);
        }

        // The container.
        let mut env = Vec::new();
        let mut volumes = Vec::new();
        let mut mounts = Vec::new();
        self.secret_refs(&name, &s.secrets, &mut env, &mut volumes, &mut mounts);
        let single_pod = n == 1 && s.autoscale.is_none() && rollout.is_none();
        let mode = if stateful {
            VolumeMode::Template
        } else if single_pod {
            VolumeMode::Claim
        } else {
            VolumeMode::EmptyDir
        };
        self.volume_mounts(&name, &s.volumes, mode, &mut volumes, &mut mounts);

        let mut ports = Vec::new();
        let mut port_names: Vec<String> = Vec::new();
        for p in &s.ports {
            let fallback = crate::cat!(
                if p.protocol == Protocol::Udp {
                    "udp-"
                } else {
                    "tcp-"
                },
                itoa::Buffer::new().format(p.container.value)
            );
            let pname = p
                .name
                .clone()
                .filter(|n| port_name_ok(n) && !port_names.contains(n))
                .unwrap_or(fallback);
            port_names.push(pname.clone());
            ports.push(core::ContainerPort {
                name: Some(pname),
                container_port: i32::from(p.container.value),
                protocol: Some(protocol(p.protocol)),
                ..Default::default()
            });
        }
        let mut scrapes = Vec::new();
        if let Some(m) = &s.metrics {
            if !s.ports.iter().any(|p| p.container.value == m.port.value) {
                ports.push(core::ContainerPort {
                    name: Some("metrics".into()),
                    container_port: i32::from(m.port.value),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                });
            }
            scrapes.push(Scrape {
                port: m.port.value,
                path: m.path.value.clone(),
                job: prometheus::metrics_job(&name),
            });
        }
        let (sidecars, exporter_scrapes) = self.exporters(s);
        scrapes.extend(exporter_scrapes);

        let (readiness, liveness, startup) = match &s.health {
            Some(h) => {
                let (r, l, st) = probes(h);
                (Some(r), Some(l), st)
            }
            None => (None, None, None),
        };
        let mut words: Vec<String> = s.command.iter().map(|w| literal(&w.value)).collect();
        words.extend(s.args.iter().map(|w| literal(&w.value)));
        let low_port = s.ports.iter().any(|p| p.container.value < 1024);
        let main = core::Container {
            name: name.clone(),
            image: Some(s.image.value.clone()),
            args: (!words.is_empty()).then_some(words),
            ports: (!ports.is_empty()).then_some(ports),
            env_from: config_hash.as_ref().map(|_| {
                vec![core::EnvFromSource {
                    config_map_ref: Some(core::ConfigMapEnvSource {
                        name: config_name.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }]
            }),
            env: (!env.is_empty()).then_some(env),
            resources: s.resources.as_ref().map(|r| core::ResourceRequirements {
                requests: resource_map(&r.requests),
                limits: resource_map(&r.limits),
                ..Default::default()
            }),
            readiness_probe: readiness,
            liveness_probe: liveness,
            startup_probe: startup,
            security_context: Some(container_security(root_entry(&s.image.value), low_port)),
            volume_mounts: (!mounts.is_empty()).then_some(mounts),
            ..Default::default()
        };
        let mut containers = vec![main];
        containers.extend(sidecars);

        let deps: Vec<(String, Condition, Span)> = s
            .depends_on
            .iter()
            .map(|d| (d.service.value.clone(), d.condition, d.service.span))
            .collect();
        let init = self.waits(&deps);

        let account = s.service_account.as_ref().map(|a| a.value.clone());
        let mut pod_spec = core::PodSpec {
            automount_service_account_token: Some(account.is_some()),
            service_account_name: account,
            enable_service_links: Some(false),
            init_containers: (!init.is_empty()).then_some(init),
            containers,
            security_context: Some(pod_security(&s.image.value)),
            topology_spread_constraints: (s.instances() > 1 || s.autoscale.is_some()).then(|| {
                vec![core::TopologySpreadConstraint {
                    max_skew: 1,
                    topology_key: "kubernetes.io/hostname".into(),
                    when_unsatisfiable: "ScheduleAnyway".into(),
                    label_selector: Some(selector_of(&selector)),
                    ..Default::default()
                }]
            }),
            volumes: (!volumes.is_empty()).then_some(volumes),
            ..Default::default()
        };

        let mut pod_annotations = self.scrape_annotations(&name, &scrapes, s.name.span);
        if let Some(h) = &config_hash {
            pod_annotations.insert(LABEL_CONFIG_HASH.into(), h.clone());
        }
        if stateful && !scrapes.is_empty() {
            let (first, rest) = match c.strategy {
                Strategy::PrimaryReplica => ("primary", "replica"),
                _ => ("member", "member"),
            };
            pod_annotations.insert(ANNOTATION_FIRST_ROLE.into(), first.into());
            pod_annotations.insert(ANNOTATION_ROLE.into(), rest.into());
        }
        let mut pod_labels = labels.clone();
        let mut user_annotations = Labels::new();
        for (k, v) in &s.labels {
            if label_key_ok(&k.value) && label_value_ok(v) {
                pod_labels.insert(k.value.clone(), v.clone());
            } else if label_key_ok(&k.value) {
                user_annotations.insert(k.value.clone(), v.clone());
            }
        }
        pod_annotations.extend(user_annotations.clone());

        // Workloads.
        let workloads: Vec<Workload> = match rollout.map(|r| r.strategy) {
            Some(RolloutStrategy::BlueGreen) => vec![
                Workload {
                    name: derived_name(&name, "blue"),
                    replicas: n,
                    track: Some("blue"),
                },
                Workload {
                    name: derived_name(&name, "green"),
                    replicas: 0,
                    track: Some("green"),
                },
            ],
            Some(RolloutStrategy::Canary) => vec![
                Workload {
                    name: name.clone(),
                    replicas: n,
                    track: Some("stable"),
                },
                Workload {
                    name: derived_name(&name, "canary"),
                    replicas: 0,
                    track: Some("canary"),
                },
            ],
            None => vec![Workload {
                name: name.clone(),
                replicas: n,
                track: None,
            }],
        };
        if let Some(r) = rollout {
            self.rollout_checks(s, r);
        }
        let mut workload_annotations = rollout.map(|r| rollout_annotations(r)).unwrap_or_default();
        workload_annotations.insert(
            "io.stackc.min-available".into(),
            min_available(c).to_string(),
        );
        workload_annotations.extend(user_annotations);
        let min = int(min_available(c));
        let kind = if stateful {
            "StatefulSet"
        } else {
            "Deployment"
        };
        for (wi, w) in workloads.iter().enumerate() {
            // The last workload takes what the others copy.
            let last = wi + 1 == workloads.len();
            let mut sel = selector.clone();
            let mut plabels = if last {
                std::mem::take(&mut pod_labels)
            } else {
                pod_labels.clone()
            };
            let mut olabels = plabels.clone();
            if let Some(track) = w.track {
                sel.insert(LABEL_TRACK.into(), track.into());
                plabels.insert(LABEL_TRACK.into(), track.into());
                olabels.insert(LABEL_TRACK.into(), track.into());
            }
            let template = core::PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(plabels),
                    annotations: (!pod_annotations.is_empty()).then(|| {
                        if last {
                            std::mem::take(&mut pod_annotations)
                        } else {
                            pod_annotations.clone()
                        }
                    }),
                    ..Default::default()
                }),
                spec: Some(if last {
                    std::mem::take(&mut pod_spec)
                } else {
                    pod_spec.clone()
                }),
            };
            let workload_ann = if last {
                std::mem::take(&mut workload_annotations)
            } else {
                workload_annotations.clone()
            };
            let meta = self.meta(&w.name, olabels, workload_ann);
            if stateful {
                let templates: Vec<core::PersistentVolumeClaim> = s
                    .volumes
                    .iter()
                    .map(|v| core::PersistentVolumeClaim {
                        metadata: ObjectMeta {
                            name: Some(v.name.value.clone()),
                            labels: Some(self.labels(&name, "service")),
                            ..Default::default()
                        },
                        spec: Some(claim_spec()),
                        ..Default::default()
                    })
                    .collect();
                docs.add(&apps::StatefulSet {
                    metadata: meta,
                    spec: Some(apps::StatefulSetSpec {
                        replicas: Some(w.replicas),
                        selector: selector_of(&sel),
                        service_name: Some(derived_name(&name, "headless")),
                        pod_management_policy: Some(
                            if c.strategy == Strategy::PrimaryReplica {
                                "OrderedReady"
                            } else {
                                "Parallel"
                            }
                            .into(),
                        ),
                        template,
                        volume_claim_templates: (!templates.is_empty()).then_some(templates),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            } else {
                let strategy = if mode == VolumeMode::Claim && !s.volumes.is_empty() {
                    apps::DeploymentStrategy {
                        type_: Some("Recreate".into()),
                        ..Default::default()
                    }
                } else {
                    apps::DeploymentStrategy {
                        type_: Some("RollingUpdate".into()),
                        rolling_update: Some(apps::RollingUpdateDeployment {
                            max_surge: Some(IntOrString::Int(1)),
                            max_unavailable: Some(IntOrString::Int((n - min).max(0))),
                        }),
                    }
                };
                docs.add(&apps::Deployment {
                    metadata: meta,
                    spec: Some(apps::DeploymentSpec {
                        replicas: Some(w.replicas),
                        selector: selector_of(&sel),
                        strategy: Some(strategy),
                        template,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        }

        // Services.
        let service_ports: Vec<core::ServicePort> = s
            .ports
            .iter()
            .zip(&port_names)
            .map(|(p, pname)| core::ServicePort {
                name: Some(pname.clone()),
                port: i32::from(p.container.value),
                target_port: Some(IntOrString::Int(i32::from(p.container.value))),
                protocol: Some(protocol(p.protocol)),
                ..Default::default()
            })
            .collect();
        let svc = |e: &Self,
                   docs: &mut Docs,
                   labels: &mut Labels,
                   svc_name: &str,
                   sel: Labels,
                   ann: Labels,
                   headless: bool| {
            let object = core::Service {
                metadata: e.meta(svc_name, std::mem::take(labels), ann),
                spec: Some(core::ServiceSpec {
                    type_: Some("ClusterIP".into()),
                    cluster_ip: headless.then(|| "None".to_string()),
                    publish_not_ready_addresses: headless.then_some(true),
                    selector: Some(sel),
                    ports: (!service_ports.is_empty()).then(|| service_ports.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            docs.add_lending(object, labels)
        };
        if !s.ports.is_empty() {
            let mut sel = selector.clone();
            let mut ann = Labels::new();
            if let Some(r) = rollout {
                ann = rollout_annotations(r);
                if r.strategy == RolloutStrategy::BlueGreen {
                    sel.insert(LABEL_TRACK.into(), "blue".into());
                    ann.insert(format!("{ROLLOUT_PREFIX}active"), "blue".into());
                }
            }
            svc(self, &mut docs, &mut labels, &name, sel, ann, false);
            match rollout.map(|r| r.strategy) {
                Some(RolloutStrategy::BlueGreen) => {
                    let mut sel = selector.clone();
                    sel.insert(LABEL_TRACK.into(), "green".into());
                    svc(
                        self,
                        &mut docs,
                        &mut labels,
                        &derived_name(&name, "preview"),
                        sel,
                        Labels::new(),
                        false,
                    );
                }
                Some(RolloutStrategy::Canary) => {
                    let mut sel = selector.clone();
                    sel.insert(LABEL_TRACK.into(), "stable".into());
                    svc(
                        self,
                        &mut docs,
                        &mut labels,
                        &derived_name(&name, "stable"),
                        sel,
                        Labels::new(),
                        false,
                    );
                }
                None => {}
            }
        }
        if stateful {
            svc(
                self,
                &mut docs,
                &mut labels,
                &derived_name(&name, "headless"),
                selector.clone(),
                Labels::new(),
                true,
            );
        }
        let public: Vec<core::ServicePort> = s
            .ports
            .iter()
            .zip(&port_names)
            .filter(|(p, _)| p.public)
            .map(|(p, pname)| core::ServicePort {
                name: Some(pname.clone()),
                port: i32::from(p.published.as_ref().map_or(p.container.value, |h| h.value)),
                target_port: Some(IntOrString::Int(i32::from(p.container.value))),
                protocol: Some(protocol(p.protocol)),
                ..Default::default()
            })
            .collect();
        if !public.is_empty() {
            let mut sel = selector.clone();
            if rollout.is_some_and(|r| r.strategy == RolloutStrategy::BlueGreen) {
                sel.insert(LABEL_TRACK.into(), "blue".into());
            }
            docs.add(&core::Service {
                metadata: self.meta(
                    &derived_name(&name, "public"),
                    labels.clone(),
                    Labels::new(),
                ),
                spec: Some(core::ServiceSpec {
                    type_: Some("LoadBalancer".into()),
                    selector: Some(sel),
                    ports: Some(public),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }

        // Disruption budget.
        let object = policy::PodDisruptionBudget {
            metadata: self.meta(&name, std::mem::take(&mut labels), Labels::new()),
            spec: Some(policy::PodDisruptionBudgetSpec {
                min_available: Some(IntOrString::Int(min)),
                selector: Some(selector_of(&selector)),
                unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        docs.add_lending(object, &mut labels);

        // Autoscaling.
        if let Some(a) = &s.autoscale {
            let requested = |cpu: bool| {
                s.resources.as_ref().is_some_and(|r| {
                    if cpu {
                        r.requests.cpu.is_some() || r.limits.cpu.is_some()
                    } else {
                        r.requests.memory.is_some() || r.limits.memory.is_some()
                    }
                })
            };
            for (target, cpu, what) in [
                (a.cpu_percent.as_ref(), true, "cpu"),
                (a.memory_percent.as_ref(), false, "memory"),
            ] {
                if let Some(t) = target.filter(|_| !requested(cpu)) {
                    self.unmapped(
                        &format!("autoscale {what}= of `{name}`"),
                        t.span,
                        &format!("utilization is a share of the container's {what} request, and `{name}` requests no {what}: the HorizontalPodAutoscaler cannot compute it; add resources {what}=..."),
                    );
                }
            }
            let targets: Vec<&Workload> = match rollout.map(|r| r.strategy) {
                Some(RolloutStrategy::Canary) => workloads.iter().take(1).collect(),
                _ => workloads.iter().collect(),
            };
            for w in targets {
                docs.push(self.hpa(&w.name, kind, a, &labels));
            }
        }
        if let Some(v) = &s.vertical_autoscale {
            for w in &workloads {
                docs.push(self.vpa(&w.name, kind, &name, v, !s.exporters.is_empty(), &labels));
            }
        }

        // Network policy.
        let (svc_deps, lb_deps) = self.dependents(&name);
        let own_ports: Vec<net::NetworkPolicyPort> = s
            .ports
            .iter()
            .map(|p| net::NetworkPolicyPort {
                port: Some(IntOrString::Int(i32::from(p.container.value))),
                protocol: Some(protocol(p.protocol)),
                ..Default::default()
            })
            .collect();
        let mut rules = Vec::new();
        let from: Vec<String> = svc_deps.into_iter().chain(lb_deps).collect();
        if !from.is_empty() {
            rules.push(net::NetworkPolicyIngressRule {
                from: Some(self.peers(&from)),
                ports: (!own_ports.is_empty()).then(|| own_ports.clone()),
            });
        }
        if c.strategy != Strategy::Single {
            rules.push(net::NetworkPolicyIngressRule {
                from: Some(self.peers(std::slice::from_ref(&name))),
                ports: None,
            });
        }
        if self.t.monitoring.is_some() && !scrapes.is_empty() {
            rules.push(net::NetworkPolicyIngressRule {
                from: Some(self.peers(&["prometheus".to_string()])),
                ports: Some(scrapes.iter().map(|x| tcp_port(x.port)).collect()),
            });
        }
        let public_ports: Vec<net::NetworkPolicyPort> = s
            .ports
            .iter()
            .filter(|p| p.public)
            .map(|p| net::NetworkPolicyPort {
                port: Some(IntOrString::Int(i32::from(p.container.value))),
                protocol: Some(protocol(p.protocol)),
                ..Default::default()
            })
            .collect();
        if !public_ports.is_empty() {
            rules.push(net::NetworkPolicyIngressRule {
                from: None,
                ports: Some(public_ports),
            });
        }
        // The service's labels, but for its strategy.
        labels.remove(LABEL_STRATEGY);
        self.policy(&name, labels, rules);

        self.service_room = docs.text.len() + 512;
        Artifact::new(crate::cat!(DIR, "/30-service-", name, ".yaml"), docs.text)
    }

    fn rollout_checks(&mut self, s: &Service, r: &Rollout) {
        let steps = &r.steps.value;
        match r.strategy {
            RolloutStrategy::BlueGreen => {
                if steps.len() > 1 {
                    self.unmapped(
                        &format!("gradual steps of the blue-green rollout of `{}`", s.name.value),
                        r.steps.span,
                        "the Service selector moves all traffic from one colour to the other at once; the steps are kept in the io.stackc.rollout/steps annotation for the deployer",
                    );
                }
            }
            RolloutStrategy::Canary => {
                // The split the Kubernetes apply will run (see canary_pods).
                let n = i64::from(s.instances());
                let off: Vec<String> = steps
                    .iter()
                    .filter(|&&w| w < 100)
                    .filter_map(|&w| {
                        let sh = share(n, canary_pods(n, w));
                        (sh != w).then(|| format!("{w}% (runs at {sh}%)"))
                    })
                    .collect();
                if !off.is_empty() {
                    self.unmapped(
                        &format!("canary steps {} of `{}`", off.join(", "), s.name.value),
                        r.steps.span,
                        &format!(
                            "traffic splits by replica count: with {n} replica(s) the smallest share one canary pod carries is {}%, and the stable pods are never scaled down, so at most 50%",
                            share(n, 1)
                        ),
                    );
                }
            }
        }
    }

    fn hpa(&self, target: &str, kind: &str, a: &Autoscale, labels: &Labels) -> Doc {
        let metric = |resource: &str, pct: u32| hpa::MetricSpec {
            type_: "Resource".into(),
            resource: Some(hpa::ResourceMetricSource {
                name: resource.into(),
                target: hpa::MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(int(pct)),
                    ..Default::default()
                },
            }),
            ..Default::default()
        };
        let mut metrics = Vec::new();
        if let Some(c) = &a.cpu_percent {
            metrics.push(metric("cpu", c.value));
        }
        if let Some(m) = &a.memory_percent {
            metrics.push(metric("memory", m.value));
        }
        doc(&hpa::HorizontalPodAutoscaler {
            metadata: self.meta(target, labels.clone(), Labels::new()),
            spec: Some(hpa::HorizontalPodAutoscalerSpec {
                scale_target_ref: hpa::CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: kind.into(),
                    name: target.into(),
                },
                min_replicas: Some(int(a.min.value)),
                max_replicas: int(a.max.value),
                metrics: (!metrics.is_empty()).then_some(metrics),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn vpa(
        &self,
        target: &str,
        kind: &str,
        container: &str,
        v: &VerticalAutoscale,
        sidecars: bool,
        labels: &Labels,
    ) -> Doc {
        let set = |r: &ResourceSet| {
            let mut m = serde_json::Map::new();
            if let Some(c) = &r.cpu {
                m.insert("cpu".into(), json!(c.value.text));
            }
            if let Some(mem) = &r.memory {
                m.insert("memory".into(), json!(mem.value.text));
            }
            m
        };
        let mut policy = serde_json::Map::new();
        policy.insert("containerName".into(), json!(container));
        policy.insert("controlledResources".into(), json!(["cpu", "memory"]));
        let min = set(&v.min);
        if !min.is_empty() {
            policy.insert("minAllowed".into(), Value::Object(min));
        }
        let max = set(&v.max);
        if !max.is_empty() {
            policy.insert("maxAllowed".into(), Value::Object(max));
        }
        let mut policies = vec![Value::Object(policy)];
        if sidecars {
            policies.push(json!({ "containerName": "*", "mode": "Off" }));
        }
        let mode = match v.mode {
            VpaMode::Off => "Off",
            VpaMode::Initial => "Initial",
            VpaMode::Recreate => "Recreate",
            VpaMode::Auto => "Auto",
        };
        doc(&json!({
            "apiVersion": "autoscaling.k8s.io/v1",
            "kind": "VerticalPodAutoscaler",
            "metadata": self.meta(target, labels.clone(), Labels::new()),
            "spec": {
                "targetRef": { "apiVersion": "apps/v1", "kind": kind, "name": target },
                "updatePolicy": { "updateMode": mode },
                "resourcePolicy": { "containerPolicies": policies },
            },
        }))
    }

    fn balancer(&mut self, b: &'a Balancer) -> Artifact {
        let name = b.name.value.clone();
        let labels = self.labels(&name, "balancer");
        let selector = self.selector(&name);
        let monitored = self.t.monitoring.is_some();
        let conf = self.nginx_conf(b);
        let config_name = derived_name(&name, "nginx");
        let mut docs = vec![doc(&core::ConfigMap {
            metadata: self.meta(&config_name, labels.clone(), Labels::new()),
            data: Some(BTreeMap::from([("nginx.conf".to_string(), conf.clone())])),
            ..Default::default()
        })];

        let mut volumes = vec![core::Volume {
            name: "nginx-conf".into(),
            config_map: Some(core::ConfigMapVolumeSource {
                name: config_name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        let mut mounts = vec![core::VolumeMount {
            name: "nginx-conf".into(),
            mount_path: "/etc/nginx/nginx.conf".into(),
            sub_path: Some("nginx.conf".into()),
            read_only: Some(true),
            ..Default::default()
        }];
        if let Some(tls) = b.tls.as_ref().filter(|_| b.listeners.iter().any(|l| l.tls)) {
            let own = derived_name(&format!("{}-{name}", self.stack), "tls");
            let source = |reference: &str| {
                reference
                    .strip_prefix("secret:")
                    .map_or_else(|| own.clone(), str::to_string)
            };
            let mut sources: Vec<core::VolumeProjection> = Vec::new();
            let mut create = Vec::new();
            for (reference, key, file) in [
                (&tls.certificate.value, "tls.crt", format!("{name}.crt")),
                (&tls.key.value, "tls.key", format!("{name}.key")),
            ] {
                let secret = source(reference);
                let item = core::KeyToPath {
                    key: key.into(),
                    path: file,
                    ..Default::default()
                };
                if let Some(p) = sources
                    .iter_mut()
                    .find(|p| p.secret.as_ref().is_some_and(|s| s.name == secret))
                {
                    if let Some(items) = p.secret.as_mut().and_then(|s| s.items.as_mut()) {
                        items.push(item);
                    }
                } else {
                    sources.push(core::VolumeProjection {
                        secret: Some(core::SecretProjection {
                            name: secret.clone(),
                            items: Some(vec![item]),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    });
                }
                if let Some(path) = reference.strip_prefix("file:") {
                    create.push((key, sh_quote(path)));
                } else {
                    self.note(
                        secret,
                        "tls",
                        &format!("balancer {name}"),
                        vec!["--cert=CERTIFICATE-FILE --key=KEY-FILE".into()],
                    );
                }
            }
            match create.as_slice() {
                [] => {}
                [(_, cert), (_, key)] => self.note(
                    own,
                    "tls",
                    &format!("balancer {name}"),
                    vec![format!("--cert={cert}"), format!("--key={key}")],
                ),
                files => {
                    let args = files
                        .iter()
                        .map(|(k, p)| format!("--from-file={k}={p}"))
                        .collect();
                    self.note(own, "generic", &format!("balancer {name}"), args);
                }
            }
            volumes.push(core::Volume {
                name: "tls".into(),
                projected: Some(core::ProjectedVolumeSource {
                    sources: Some(sources),
                    default_mode: Some(0o440),
                }),
                ..Default::default()
            });
            mounts.push(core::VolumeMount {
                name: "tls".into(),
                mount_path: "/etc/nginx/tls".into(),
                read_only: Some(true),
                ..Default::default()
            });
        }

        let ports: Vec<core::ContainerPort> = b
            .listeners
            .iter()
            .map(|l| core::ContainerPort {
                name: Some(format!(
                    "{}-{}",
                    if l.tls { "https" } else { "http" },
                    l.port.value
                )),
                container_port: i32::from(l.port.value),
                protocol: Some("TCP".into()),
                ..Default::default()
            })
            .collect();
        let (probe_port, https) = b
            .listeners
            .iter()
            .find(|l| !l.tls)
            .or(b.listeners.first())
            .map_or((80, false), |l| (l.port.value, l.tls));
        let image = b
            .image
            .as_ref()
            .map_or(compose::NGINX_IMAGE.to_string(), |i| i.value.clone());
        let low_port = b.listeners.iter().any(|l| l.port.value < 1024);
        let mut containers = vec![core::Container {
            name: "nginx".into(),
            image: Some(image.clone()),
            ports: (!ports.is_empty()).then_some(ports),
            readiness_probe: Some(http_probe(nginx::HEALTH_PATH, probe_port, https, 5)),
            liveness_probe: Some(http_probe(nginx::HEALTH_PATH, probe_port, https, 10)),
            resources: Some(core::ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_string(), quantity("100m")),
                    ("memory".to_string(), quantity("64Mi")),
                ])),
                limits: Some(BTreeMap::from([("memory".to_string(), quantity("256Mi"))])),
                ..Default::default()
            }),
            security_context: Some(container_security(true, low_port)),
            volume_mounts: Some(mounts),
            ..Default::default()
        }];
        let mut pod_annotations = Labels::new();
        pod_annotations.insert(LABEL_CONFIG_HASH.into(), short_hash(&conf));
        if monitored {
            let (exporter, _) = compose::exporter_image("nginx").expect("nginx exporter is known");
            let scheme = if https { "https" } else { "http" };
            containers.push(core::Container {
                name: "nginx-exporter".into(),
                image: Some(exporter.into()),
                args: Some(vec![format!(
                    "--nginx.scrape-uri={scheme}://127.0.0.1:{probe_port}{}",
                    nginx::STATUS_PATH
                )]),
                ports: Some(vec![core::ContainerPort {
                    name: Some("exp-9113".into()),
                    container_port: i32::from(NGINX_EXPORTER_PORT),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                resources: Some(sidecar_resources()),
                security_context: Some(sidecar_security()),
                ..Default::default()
            });
            pod_annotations.insert("prometheus.io/scrape".into(), "true".into());
            pod_annotations.insert("prometheus.io/port".into(), NGINX_EXPORTER_PORT.to_string());
            pod_annotations.insert("prometheus.io/path".into(), "/metrics".into());
            pod_annotations.insert(ANNOTATION_JOB.into(), prometheus::balancer_job(&name));
        }
        let mut deps: Vec<(String, Condition, Span)> = Vec::new();
        for r in &b.routes {
            if !deps.iter().any(|d| d.0 == r.to.value) {
                deps.push((r.to.value.clone(), Condition::Healthy, r.to.span));
            }
        }
        let init = self.waits(&deps);
        let replicas = int(b.replicas.value);
        docs.push(doc(&apps::Deployment {
            metadata: self.meta(&name, labels.clone(), Labels::new()),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(replicas),
                selector: selector_of(&selector),
                strategy: Some(apps::DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(apps::RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(1)),
                        max_unavailable: Some(IntOrString::Int(0)),
                    }),
                }),
                template: core::PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels.clone()),
                        annotations: Some(pod_annotations),
                        ..Default::default()
                    }),
                    spec: Some(core::PodSpec {
                        automount_service_account_token: Some(false),
                        enable_service_links: Some(false),
                        init_containers: (!init.is_empty()).then_some(init),
                        containers,
                        security_context: Some(pod_security(&image)),
                        topology_spread_constraints: (replicas > 1).then(|| {
                            vec![core::TopologySpreadConstraint {
                                max_skew: 1,
                                topology_key: "kubernetes.io/hostname".into(),
                                when_unsatisfiable: "ScheduleAnyway".into(),
                                label_selector: Some(selector_of(&selector)),
                                ..Default::default()
                            }]
                        }),
                        volumes: Some(volumes),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }));
        let public = b.listeners.iter().any(|l| l.public);
        let service_ports: Vec<core::ServicePort> = b
            .listeners
            .iter()
            .map(|l| core::ServicePort {
                name: Some(format!(
                    "{}-{}",
                    if l.tls { "https" } else { "http" },
                    l.port.value
                )),
                port: i32::from(l.published.as_ref().map_or(l.port.value, |p| p.value)),
                target_port: Some(IntOrString::Int(i32::from(l.port.value))),
                protocol: Some("TCP".into()),
                ..Default::default()
            })
            .collect();
        if !service_ports.is_empty() {
            docs.push(doc(&core::Service {
                metadata: self.meta(&name, labels.clone(), Labels::new()),
                spec: Some(core::ServiceSpec {
                    type_: Some(if public { "LoadBalancer" } else { "ClusterIP" }.into()),
                    selector: Some(selector.clone()),
                    ports: Some(service_ports),
                    ..Default::default()
                }),
                ..Default::default()
            }));
        }
        if replicas > 1 {
            docs.push(doc(&policy::PodDisruptionBudget {
                metadata: self.meta(&name, labels.clone(), Labels::new()),
                spec: Some(policy::PodDisruptionBudgetSpec {
                    min_available: Some(IntOrString::Int(1)),
                    selector: Some(selector_of(&selector)),
                    unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }));
        }
        let mut rules = vec![net::NetworkPolicyIngressRule {
            from: None,
            ports: Some(b.listeners.iter().map(|l| tcp_port(l.port.value)).collect()),
        }];
        if monitored {
            rules.push(net::NetworkPolicyIngressRule {
                from: Some(self.peers(&["prometheus".to_string()])),
                ports: Some(vec![tcp_port(NGINX_EXPORTER_PORT)]),
            });
        }
        let labels = self.labels(&name, "balancer");
        self.policy(&name, labels, rules);
        self.file(
            &format!("40-balancer-{name}.yaml"),
            &format!("balancer `{name}` (nginx)"),
            &docs,
        )
    }

    /// nginx.conf of a balancer, routing to the Services' DNS names.
    fn nginx_conf(&mut self, b: &Balancer) -> String {
        let t = self.t;
        let mut out = String::new();
        out.push_str(&format!(
            "# Generated by stackc for balancer `{}` of stack `{}` (kubernetes target).\n",
            comment(&b.name.value),
            comment(&self.stack)
        ));
        out.push_str("# Do not edit: change the topology and run `stackc build`.\n");
        out.push_str("# Upstreams are the Services' cluster DNS names: kube-proxy spreads\n# the connections over the ready pods of each Service.\n");
        out.push_str("worker_processes auto;\nerror_log /dev/stderr warn;\n\nevents {\n    worker_connections 1024;\n}\n\nhttp {\n");
        out.push_str(concat!(
            "    log_format stackc '$remote_addr [$time_iso8601] \"$request\" $status $body_bytes_sent '\n",
            "                      'upstream=$upstream_addr upstream_status=$upstream_status '\n",
            "                      'request_time=$request_time upstream_time=$upstream_response_time';\n",
            "    access_log /dev/stdout stackc;\n",
            "    server_tokens off;\n",
            "    sendfile on;\n",
            "    keepalive_timeout 65s;\n",
            "    client_max_body_size 10m;\n",
        ));
        let mut zones = BTreeSet::new();
        for z in &b.rate_limits {
            let zone = ngx_ident(&z.name.value);
            let (key, desc) = rate_key(&z.key);
            if !(ngx_ok(&zone) && ngx_ok(&z.zone_size) && ngx_var_ok(&key)) {
                self.unmapped(
                    &format!("rate limit `{}`", z.name.value),
                    z.span,
                    "a value is not safe to write into nginx.conf",
                );
                continue;
            }
            out.push_str(&format!(
                "\n    # rate limit `{zone}`: {}, key {}\n    limit_req_zone {key} zone={zone}:{} rate={};\n",
                z.rate,
                comment(&desc),
                z.zone_size,
                z.rate
            ));
            zones.insert(zone);
        }
        if !zones.is_empty() {
            out.push_str("    limit_req_status 429;\n");
        }
        let mut upstreams: Vec<String> = Vec::new();
        let mut locations = String::new();
        for r in &b.routes {
            let Some(s) = t.service(&r.to.value) else {
                continue;
            };
            let Some(port) = nginx::service_port(s) else {
                self.unmapped(
                    &format!("route `{}`", r.path.value),
                    r.span,
                    "the target declares no port, so it has no Service to route to",
                );
                continue;
            };
            if !ngx_ok(&r.path.value) {
                self.unmapped(
                    &format!("route `{}`", r.path.value),
                    r.span,
                    "the path is not safe to write into nginx.conf",
                );
                continue;
            }
            if r.sticky {
                self.unmapped(
                    &format!("sticky=#true on route `{}`", r.path.value),
                    r.span,
                    "nginx reaches the pods through the Service's cluster IP, so ip_hash sees one server and kube-proxy picks the pod: requests of one client are not pinned to one pod",
                );
            } else if let Some(a) = r.algorithm.filter(|a| *a != Algorithm::RoundRobin) {
                let a = match a {
                    Algorithm::LeastConn => "least_conn",
                    Algorithm::IpHash => "ip_hash",
                    Algorithm::Random => "random",
                    Algorithm::RoundRobin => "round_robin",
                };
                self.unmapped(
                    &format!("algorithm=\"{a}\" on route `{}`", r.path.value),
                    r.span,
                    "nginx reaches the pods through the Service's cluster IP, so it sees one server: kube-proxy picks the pod",
                );
            }
            let upstream = ngx_ident(&s.name.value);
            if !upstreams.contains(&upstream) {
                out.push_str(&format!(
                    "\n    # {} ({}): Service {}, port {port}\n    upstream {upstream} {{\n        server {}:{port};\n",
                    s.name.value,
                    s.cluster.strategy.as_str(),
                    s.name.value,
                    self.dns(&s.name.value)
                ));
                if b.upstream.keepalive > 0 {
                    out.push_str(&format!("        keepalive {};\n", b.upstream.keepalive));
                }
                out.push_str("    }\n");
                upstreams.push(upstream.clone());
            }
            let timeout = r
                .timeout
                .as_ref()
                .map_or_else(|| "60s".to_string(), ngx_time);
            locations.push_str(&format!("\n        location {} {{\n", r.path.value));
            if let Some(z) = r
                .limit
                .as_ref()
                .and_then(|l| b.rate_limits.iter().find(|z| z.name.value == l.value))
                .filter(|z| zones.contains(&ngx_ident(&z.name.value)))
            {
                // nginx refuses `burst=0`: no burst is written as none.
                let burst = if z.burst > 0 {
                    format!(" burst={} nodelay", z.burst)
                } else {
                    String::new()
                };
                locations.push_str(&format!(
                    "            limit_req zone={}{burst};\n",
                    ngx_ident(&z.name.value)
                ));
            }
            locations.push_str(&format!(
                concat!(
                    "            proxy_pass http://{};\n",
                    "            proxy_http_version 1.1;\n",
                    "            proxy_set_header Connection \"\";\n",
                    "            proxy_set_header Host $host;\n",
                    "            proxy_set_header X-Real-IP $remote_addr;\n",
                    "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n",
                    "            proxy_set_header X-Forwarded-Proto $scheme;\n",
                    "            proxy_connect_timeout 5s;\n",
                    "            proxy_send_timeout {};\n",
                    "            proxy_read_timeout {};\n",
                    "            proxy_next_upstream error timeout http_502 http_503 http_504;\n",
                    "            proxy_next_upstream_tries 2;\n",
                    "        }}\n",
                ),
                upstream, timeout, timeout
            ));
        }
        let tls = b.tls.is_some() && b.listeners.iter().any(|l| l.tls);
        if let Some(x) = b.tls.as_ref().filter(|_| !tls) {
            self.unmapped(
                "tls",
                x.span,
                "no listener has tls=#true: add `listen 443 tls=#true`",
            );
        }
        out.push_str("\n    server {\n");
        for l in &b.listeners {
            out.push_str(&format!(
                "        listen {}{};\n",
                l.port.value,
                if l.tls && tls { " ssl" } else { "" }
            ));
        }
        if tls {
            out.push_str(&format!(
                "        ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_protocols TLSv1.2 TLSv1.3;\n",
                nginx::tls_path(&b.name.value, "crt", ""),
                nginx::tls_path(&b.name.value, "key", "")
            ));
        }
        out.push_str(&format!(
            concat!(
                "\n        location = {} {{\n",
                "            access_log off;\n",
                "            default_type text/plain;\n",
                "            return 200 \"ok\\n\";\n",
                "        }}\n",
                "\n        location = {} {{\n",
                "            stub_status;\n",
                "            access_log off;\n",
                "            allow 127.0.0.1;\n",
                "            deny all;\n",
                "        }}\n",
            ),
            nginx::HEALTH_PATH,
            nginx::STATUS_PATH
        ));
        out.push_str(&locations);
        out.push_str("    }\n}\n");
        out
    }

    fn monitoring(&mut self, m: &'a Monitoring) -> Artifact {
        let name = "prometheus";
        let labels = self.labels(name, "monitoring");
        let selector = self.selector(name);
        let p = &m.prometheus;
        if let Some(g) = &m.grafana {
            self.unmapped(
                "grafana",
                g.span,
                "the kubernetes target deploys Prometheus only: install Grafana with its Helm chart and point it at the `prometheus` Service",
            );
        }
        for x in &m.exporters {
            // Every balancer already runs the nginx exporter beside nginx.
            if x.value == "nginx" && !self.t.balancers.is_empty() {
                continue;
            }
            self.unmapped(
                &format!("exporter `{}`", x.value),
                x.span,
                "host and cluster exporters (node, cAdvisor, kube-state-metrics, ...) are installed once per cluster, as DaemonSets or by their Helm charts, not per stack",
            );
        }

        // The rules of the prometheus target, unchanged.
        // (computed once per build, shared with that target).
        let rule_arts = prometheus::rule_files(self.cx);
        let mut data = BTreeMap::new();
        let mut rule_files = Vec::new();
        for (path, key) in [
            (prometheus::DERIVED_RULES, "derived.rules.yml"),
            (prometheus::USER_RULES, "user.rules.yml"),
        ] {
            if let Some(a) = rule_arts.iter().find(|a| a.path == path) {
                data.insert(key.to_string(), a.content.clone());
                rule_files.push(json!(key));
            }
        }
        let config = json!({
            "global": {
                "scrape_interval": p.scrape_interval.text,
                "evaluation_interval": p.scrape_interval.text,
                "external_labels": { "stack": self.stack },
            },
            "rule_files": rule_files,
            "scrape_configs": [
                {
                    "job_name": "prometheus",
                    "static_configs": [{ "targets": [format!("localhost:{}", p.port)] }],
                },
                {
                    "job_name": "kubernetes-pods",
                    "kubernetes_sd_configs": [{ "role": "pod", "namespaces": { "names": [self.ns] } }],
                    "relabel_configs": [
                        { "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "action": "keep", "regex": "true" },
                        { "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_part_of"], "action": "keep", "regex": label_value(&self.stack) },
                        { "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"], "action": "replace", "regex": "(.+)", "target_label": "__metrics_path__" },
                        { "source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"], "action": "replace", "regex": "([^:]+)(?::\\d+)?;(\\d+)", "replacement": "$1:$2", "target_label": "__address__" },
                        { "source_labels": ["__meta_kubernetes_pod_annotation_io_stackc_prometheus_job"], "action": "replace", "regex": "(.+)", "target_label": "job" },
                        { "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"], "action": "replace", "target_label": "service" },
                        { "source_labels": ["__meta_kubernetes_pod_name"], "action": "replace", "target_label": "instance" },
                        { "source_labels": ["__meta_kubernetes_pod_annotation_io_stackc_prometheus_role"], "action": "replace", "regex": "(.+)", "target_label": "role" },
                        { "source_labels": ["__meta_kubernetes_pod_annotation_io_stackc_prometheus_first_role", "__meta_kubernetes_pod_name"], "action": "replace", "regex": "(.+);.*-0", "replacement": "$1", "target_label": "role" },
                    ],
                },
            ],
        });
        let config_text = self.header("Prometheus configuration (kubernetes target)")
            + &crate::yaml::to_string(&config);
        data.insert("prometheus.yml".to_string(), config_text);
        let hash = super::hash_json(&data);
        let config_name = derived_name(name, "config");

        let mut docs = vec![doc(&core::ServiceAccount {
            metadata: self.meta(PROMETHEUS_ACCOUNT, labels.clone(), Labels::new()),
            ..Default::default()
        })];
        docs.push(doc(&rbac::Role {
            metadata: self.meta(PROMETHEUS_ACCOUNT, labels.clone(), Labels::new()),
            rules: Some(vec![rbac::PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["pods".into()]),
                verbs: vec!["get".into(), "list".into(), "watch".into()],
                ..Default::default()
            }]),
        }));
        docs.push(doc(&rbac::RoleBinding {
            metadata: self.meta(PROMETHEUS_ACCOUNT, labels.clone(), Labels::new()),
            role_ref: rbac::RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: PROMETHEUS_ACCOUNT.into(),
            },
            subjects: Some(vec![rbac::Subject {
                kind: "ServiceAccount".into(),
                name: PROMETHEUS_ACCOUNT.into(),
                namespace: Some(self.ns.clone()),
                ..Default::default()
            }]),
        }));
        docs.push(doc(&core::ConfigMap {
            metadata: self.meta(&config_name, labels.clone(), Labels::new()),
            data: Some(data),
            ..Default::default()
        }));
        let data_claim = derived_name(name, "data");
        self.claim(&data_claim, name, p.span);
        let image = p
            .image
            .as_ref()
            .map_or(compose::PROMETHEUS_IMAGE.to_string(), |i| i.value.clone());
        let mut security = sidecar_security();
        security.read_only_root_filesystem = Some(true);
        let container = core::Container {
            name: name.into(),
            image: Some(image.clone()),
            args: Some(vec![
                "--config.file=/etc/prometheus/prometheus.yml".into(),
                "--storage.tsdb.path=/prometheus".into(),
                format!("--storage.tsdb.retention.time={}", p.retention.text),
                format!("--web.listen-address=:{}", p.port),
            ]),
            ports: Some(vec![core::ContainerPort {
                name: Some("web".into()),
                container_port: i32::from(p.port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            readiness_probe: Some(http_probe("/-/ready", p.port, false, 10)),
            liveness_probe: Some(http_probe("/-/healthy", p.port, false, 30)),
            resources: Some(core::ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_string(), quantity("250m")),
                    ("memory".to_string(), quantity("512Mi")),
                ])),
                limits: Some(BTreeMap::from([("memory".to_string(), quantity("2Gi"))])),
                ..Default::default()
            }),
            security_context: Some(security),
            volume_mounts: Some(vec![
                core::VolumeMount {
                    name: "config".into(),
                    mount_path: "/etc/prometheus".into(),
                    read_only: Some(true),
                    ..Default::default()
                },
                core::VolumeMount {
                    name: "data".into(),
                    mount_path: "/prometheus".into(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let mut pod_security = pod_security("prometheus");
        pod_security.run_as_non_root = Some(true);
        pod_security.run_as_user = Some(NOBODY);
        pod_security.run_as_group = Some(NOBODY);
        let mut pod_annotations = Labels::new();
        pod_annotations.insert(LABEL_CONFIG_HASH.into(), hash);
        docs.push(doc(&apps::Deployment {
            metadata: self.meta(name, labels.clone(), Labels::new()),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(1),
                selector: selector_of(&selector),
                strategy: Some(apps::DeploymentStrategy {
                    type_: Some("Recreate".into()),
                    ..Default::default()
                }),
                template: core::PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels.clone()),
                        annotations: Some(pod_annotations),
                        ..Default::default()
                    }),
                    spec: Some(core::PodSpec {
                        service_account_name: Some(PROMETHEUS_ACCOUNT.into()),
                        automount_service_account_token: Some(true),
                        enable_service_links: Some(false),
                        containers: vec![container],
                        security_context: Some(pod_security),
                        volumes: Some(vec![
                            core::Volume {
                                name: "config".into(),
                                config_map: Some(core::ConfigMapVolumeSource {
                                    name: config_name,
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                            core::Volume {
                                name: "data".into(),
                                persistent_volume_claim: Some(
                                    core::PersistentVolumeClaimVolumeSource {
                                        claim_name: data_claim,
                                        ..Default::default()
                                    },
                                ),
                                ..Default::default()
                            },
                        ]),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }));
        docs.push(doc(&core::Service {
            metadata: self.meta(name, labels, Labels::new()),
            spec: Some(core::ServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: Some(selector),
                ports: Some(vec![core::ServicePort {
                    name: Some("web".into()),
                    port: i32::from(p.port),
                    target_port: Some(IntOrString::Int(i32::from(p.port))),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }));
        self.file(
            "50-monitoring.yaml",
            "Prometheus, discovering the annotated pods of the namespace",
            &docs,
        )
    }

    fn job(&mut self, j: &'a Job) -> Artifact {
        let name = j.name.value.clone();
        let labels = self.labels(&name, "job");
        if self.isolation == Isolation::Graph {
            self.unmapped(
                &format!("network access of job `{name}`"),
                j.span,
                "jobs are not in the dependency graph, so the network policies admit no traffic from the job's pods to the services; set isolation=\"none\" or allow it with an extra NetworkPolicy",
            );
        }
        let mut env = Vec::new();
        let mut volumes = Vec::new();
        let mut mounts = Vec::new();
        self.secret_refs(&name, &j.secrets, &mut env, &mut volumes, &mut mounts);
        self.volume_mounts(
            &name,
            &j.volumes,
            VolumeMode::Claim,
            &mut volumes,
            &mut mounts,
        );
        let words: Vec<String> = j.command.iter().map(|w| literal(&w.value)).collect();
        let account = j.service_account.as_ref().map(|a| a.value.clone());
        let container = core::Container {
            name: name.clone(),
            image: Some(j.image.value.clone()),
            args: (!words.is_empty()).then_some(words),
            env: (!env.is_empty()).then_some(env),
            security_context: Some(container_security(root_entry(&j.image.value), false)),
            volume_mounts: (!mounts.is_empty()).then_some(mounts),
            ..Default::default()
        };
        let cron = batch::CronJob {
            metadata: self.meta(&name, labels.clone(), Labels::new()),
            spec: Some(batch::CronJobSpec {
                schedule: j.schedule.value.clone(),
                concurrency_policy: Some("Forbid".into()),
                job_template: batch::JobTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels.clone()),
                        ..Default::default()
                    }),
                    spec: Some(batch::JobSpec {
                        template: core::PodTemplateSpec {
                            metadata: Some(ObjectMeta {
                                labels: Some(labels),
                                ..Default::default()
                            }),
                            spec: Some(core::PodSpec {
                                restart_policy: Some("OnFailure".into()),
                                automount_service_account_token: Some(account.is_some()),
                                service_account_name: account,
                                enable_service_links: Some(false),
                                containers: vec![container],
                                security_context: Some(pod_security(&j.image.value)),
                                volumes: (!volumes.is_empty()).then_some(volumes),
                                ..Default::default()
                            }),
                        },
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        self.file(
            &format!("60-job-{name}.yaml"),
            &format!("job `{name}` ({})", j.schedule.value),
            &[doc(&cron)],
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VolumeMode {
    /// StatefulSet claim templates, one claim per member.
    Template,
    /// One claim named like the volume.
    Claim,
    /// An emptyDir: several pods, no claim each.
    EmptyDir,
}

fn claim_spec() -> core::PersistentVolumeClaimSpec {
    core::PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        resources: Some(core::VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_string(),
                quantity(DEFAULT_VOLUME_SIZE),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// nginx identifiers: DNS labels with `-` turned into `_`.
fn ngx_ident(s: &str) -> String {
    s.replace('-', "_")
}

/// A value that cannot end a directive, open a block or start a variable.
fn ngx_ok(v: &str) -> bool {
    !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ";{}\"'`$#\\".contains(c))
}

fn ngx_var_ok(v: &str) -> bool {
    v.strip_prefix('$').is_some_and(|v| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
}

use super::nginx::{ngx_time, rate_key};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_bases() {
        assert_eq!(image_base("postgres:16.4"), "postgres");
        assert_eq!(image_base("docker.io/library/redis:7.2-alpine"), "redis");
        assert_eq!(image_base("registry:5000/team/nginx@sha256:abc"), "nginx");
        assert_eq!(image_base("eipresso/config-server:1.1.0"), "config-server");
    }

    #[test]
    fn derived_names_stay_dns_labels() {
        assert_eq!(derived_name("api", "blue"), "api-blue");
        let long = "a".repeat(60);
        let d = derived_name(&long, "headless");
        assert!(d.len() <= 63, "{d}");
        assert!(d.ends_with("-headless"));
        assert_eq!(d, derived_name(&long, "headless"));
    }

    #[test]
    fn labels_and_ports() {
        assert!(label_value_ok("eip-resso"));
        assert!(!label_value_ok("-x"));
        assert!(!label_value_ok("a b"));
        assert_eq!(label_value("a b"), "a-b");
        assert!(label_key_ok("example.com/cost-centre"));
        assert!(label_key_ok("team"));
        assert!(!label_key_ok("Example.com/x"));
        assert!(port_name_ok("http"));
        assert!(port_name_ok("tcp-8080"));
        assert!(!port_name_ok("8080"));
        assert!(!port_name_ok("a-very-long-port-name"));
    }

    #[test]
    fn probe_seconds_round_up() {
        assert_eq!(secs(&Duration::parse("500ms").unwrap()), 1);
        assert_eq!(secs(&Duration::parse("1500ms").unwrap()), 2);
        assert_eq!(secs(&Duration::parse("1m").unwrap()), 60);
    }

    /// A large stack's Prometheus file, laid out on its own thread, gives
    /// the files and the warnings, in order, that one thread gives.
    #[test]
    fn the_prometheus_file_beside_the_services_changes_nothing() {
        let mut text = String::from("stack \"big\" version=\"1\"\n");
        for i in 0..MONITORING_BESIDE + 4 {
            // Two services share each volume: a warning of the claims file.
            text.push_str(&format!(
                "service \"s{i}\" {{\n    image \"x:{i}\"\n    port 8080\n    volume \"v{}\" path=\"/d\"\n    metrics path=\"/metrics\" port=8080\n}}\n",
                i / 2
            ));
        }
        text.push_str("monitoring {\n    prometheus scrape-interval=\"15s\" retention=\"15d\"\n    grafana dashboards=#true\n    exporter \"node\"\n}\n");
        let checked = crate::check_str("big.kdl", &text, std::path::Path::new("."), None);
        assert!(checked.ok(), "{:?}", checked.diags);
        let (t, g) = (
            checked.topology.as_ref().unwrap(),
            checked.graph.as_ref().unwrap(),
        );
        let run = |beside: bool| {
            let mut cx = Ctx::new(t, g);
            let mut files = crate::targets::Collect::default();
            if beside {
                emit_to(&mut cx, &mut files);
            } else {
                Emitter::new(&mut cx).run(&mut files, None);
            }
            let warnings: Vec<String> = cx.warnings.iter().map(|d| d.message.clone()).collect();
            (files.artifacts, warnings)
        };
        let (one, one_warnings) = run(false);
        let (two, two_warnings) = run(true);
        assert!(
            one_warnings.iter().any(|w| w.starts_with("grafana")),
            "{one_warnings:?}"
        );
        assert!(
            one_warnings.iter().any(|w| w.contains("shared by")),
            "{one_warnings:?}"
        );
        assert_eq!(one_warnings, two_warnings);
        assert_eq!(one.len(), two.len());
        for (a, b) in one.iter().zip(&two) {
            assert_eq!(a.path, b.path);
            assert!(a.content == b.content, "{} differs", a.path);
        }
        let claims = one
            .iter()
            .find(|a| a.path.ends_with("15-volumes.yaml"))
            .unwrap();
        assert!(
            claims.content.contains("prometheus"),
            "the Prometheus data claim"
        );
    }

    #[test]
    fn namespace_from_stack_name() {
        assert_eq!(dns_label("EIP resso"), "eip-resso");
        assert_eq!(dns_label("--"), "stackc");
    }
}
