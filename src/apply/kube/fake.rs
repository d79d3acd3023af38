//! An in-process stand-in for a Kubernetes API server, for tests and
//! benchmarks: a `tower` service behind a real [`kube::Client`].
//!
//! It answers the requests stackc sends (discovery, GET, LIST with a label
//! selector and pages (`limit`, `continue`), PATCH with server-side apply including `fieldManager`,
//! `force` and `dryRun`, DELETE), keeps per-manager field ownership like
//! the API server (conflicts, shared ownership, release of fields a
//! manager stops applying), plays the workload controllers (applied
//! Deployments and StatefulSets become available at once, unless told
//! otherwise), and records every request with its body. It can be told to
//! refuse an object as invalid (422), to hide an API group from discovery
//! (404), and to change a field "by hand" as another manager.
//!
//! Pods: an applied Deployment gets `spec.replicas` Pods, labelled and
//! specified from its pod template (a changed template replaces them, a
//! changed replica count adds or removes some), Ready with no restarts, and
//! removed with the Deployment. [`FakeApi::crash_image`] makes the Pods
//! that run an image crash-loop: the first read finds them ready, every
//! later read finds them restarted once more and not ready
//! (`CrashLoopBackOff`). The Deployment's status is not changed by it (its
//! Pods started), so only something that reads the Pods notices.
//! [`FakeApi::log`] appends a line to a Pod's log (served by
//! `GET .../pods/NAME/log`, with the kubelet's RFC 3339 timestamps when
//! asked). A created Service gets a cluster IP, as from the API server.
//!
//! Latency: [`FakeApi::delay`] makes every request take a while (a
//! network round trip, longer for some paths than others so that answers
//! to concurrent requests arrive out of order); the fake counts the
//! requests in flight and the most there were at once
//! ([`FakeApi::max_in_flight`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::fields::{self, Path, Seg};

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The query string, `""` when there is none.
    pub query: String,
    /// The request body as JSON (`null` when there is none).
    pub body: Value,
}

impl Recorded {
    /// `PATCH /apis/apps/v1/namespaces/x/deployments/y?fieldManager=stackc`.
    pub fn line(&self) -> String {
        if self.query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.query)
        }
    }

    /// True for a request that changes state: a PATCH that is not a dry
    /// run, a DELETE, a POST or a PUT.
    pub fn is_write(&self) -> bool {
        match self.method.as_str() {
            "GET" => false,
            "PATCH" => !self.query.split('&').any(|q| q == "dryRun=All"),
            _ => true,
        }
    }
}

#[derive(Debug, Clone)]
struct Stored {
    value: Value,
    /// manager -> (operation, owned paths)
    managers: BTreeMap<String, (String, BTreeSet<Path>)>,
}

#[derive(Default)]
struct State {
    /// (plural, namespace or "", name) -> object
    objects: BTreeMap<(String, String, String), Stored>,
    requests: Vec<Recorded>,
    hidden: BTreeSet<String>,
    /// Plurals whose LIST is forbidden (403), as by RBAC without `list`.
    unlistable: BTreeSet<String>,
    invalid: BTreeMap<(String, String), String>,
    never_ready: BTreeSet<String>,
    /// Images whose Pods crash-loop.
    crashing: BTreeSet<String>,
    /// Reads of each Pod (namespace, name), for crash-looping ones.
    pod_reads: BTreeMap<(String, String), i64>,
    /// Log lines of each Pod (namespace, name), with their timestamps.
    logs: BTreeMap<(String, String), Vec<String>>,
    /// The Pods of each Deployment (namespace, name): found without a scan
    /// of every object (benchmarks apply tens of thousands).
    pods_of: BTreeMap<(String, String), Vec<String>>,
    /// Writes answered so far, and after how many the next ones hang.
    writes_seen: usize,
    stall_after: Option<usize>,
    /// A write is hanging.
    stalled: bool,
    version: u64,
    /// The time every request takes (see [`FakeApi::delay`]).
    delay: Option<Duration>,
    /// Requests being answered, and the most at once since the last
    /// [`FakeApi::clear_requests`].
    in_flight: usize,
    max_in_flight: usize,
}

/// Counts a request out of flight when its answer is done (or dropped).
struct InFlight(FakeApi);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

/// The fake API server. Clones share state.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

/// (apiVersion, kind, plural, namespaced) of every kind the fake serves.
const KINDS: &[(&str, &str, &str, bool)] = &[
    ("v1", "Namespace", "namespaces", false),
    ("v1", "ServiceAccount", "serviceaccounts", true),
    ("v1", "ConfigMap", "configmaps", true),
    ("v1", "Secret", "secrets", true),
    ("v1", "Service", "services", true),
    ("v1", "Pod", "pods", true),
    (
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    ("rbac.authorization.k8s.io/v1", "Role", "roles", true),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    ("apps/v1", "Deployment", "deployments", true),
    ("apps/v1", "StatefulSet", "statefulsets", true),
    (
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
    ),
    ("batch/v1", "CronJob", "cronjobs", true),
    (
        "autoscaling.k8s.io/v1",
        "VerticalPodAutoscaler",
        "verticalpodautoscalers",
        true,
    ),
];

fn kind_of(plural: &str) -> Option<(&'static str, &'static str)> {
    KINDS.iter().find(|k| k.2 == plural).map(|k| (k.0, k.1))
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code
        }),
    )
}

fn owned_paths(body: &Value) -> BTreeSet<Path> {
    let mut set = BTreeSet::new();
    fields::leaves(body, &mut Vec::new(), &mut set);
    // Identity is not owned.
    set.retain(|p| {
        !matches!(p.first(), Some(Seg::Field(f)) if f == "apiVersion" || f == "kind")
            && !matches!(p.as_slice(), [Seg::Field(m), Seg::Field(n)] if m == "metadata" && (n == "name" || n == "namespace"))
    });
    set
}

impl FakeApi {
    pub fn new() -> FakeApi {
        FakeApi::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A client whose every request goes to this fake (call it inside a
    /// tokio runtime: the client runs its request buffer as a task).
    pub fn client(&self, default_namespace: &str) -> kube::Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let me = me.clone();
            async move { Ok::<_, std::convert::Infallible>(me.handle(req).await) }
        });
        kube::Client::new(svc, default_namespace)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The requests that changed state.
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_write)
            .collect()
    }

    /// Forget the requests so far (and the most in flight at once).
    pub fn clear_requests(&self) {
        let mut st = self.lock();
        st.requests.clear();
        st.max_in_flight = st.in_flight;
    }

    /// Every request waits before it is answered: `base` for one path in
    /// three, twice or three times as long for the others (chosen by a
    /// hash of the path, so the same every run).
    pub fn delay(&self, base: Duration) {
        self.lock().delay = Some(base);
    }

    /// The most requests in flight at once since the last
    /// [`FakeApi::clear_requests`].
    pub fn max_in_flight(&self) -> usize {
        self.lock().max_in_flight
    }

    /// Answer 404 for the discovery of `api_version` (e.g. a CRD group
    /// that is not installed); its objects cannot be applied either.
    pub fn hide_api(&self, api_version: &str) {
        self.lock().hidden.insert(api_version.to_string());
    }

    /// Answer 403 to a LIST of `plural` (credentials that may get but not
    /// list, e.g. Secrets).
    pub fn forbid_list(&self, plural: &str) {
        self.lock().unlistable.insert(plural.to_string());
    }

    /// Refuse applies of `plural/name` with 422 and `message`.
    pub fn reject(&self, plural: &str, name: &str, message: &str) {
        self.lock()
            .invalid
            .insert((plural.to_string(), name.to_string()), message.to_string());
    }

    /// The Deployment or StatefulSet `name` never becomes available.
    pub fn never_ready(&self, name: &str) {
        self.lock().never_ready.insert(name.to_string());
    }

    /// Append `line` to the log of Pod `pod`, stamped now (RFC 3339 UTC
    /// with nanoseconds, as the kubelet stamps them).
    pub fn log(&self, namespace: &str, pod: &str, line: &str) {
        let (_, now) = crate::apply::rollout::chrono_now();
        self.lock()
            .logs
            .entry((namespace.to_string(), pod.to_string()))
            .or_default()
            .push(format!("{now} {line}"));
    }

    /// After `n` more writes, every write hangs unanswered and is not
    /// carried out: the client can then be dropped, as a `kill -9` of
    /// stackc right after its `n`-th write would leave the cluster.
    pub fn stall_writes_after(&self, n: usize) {
        let mut st = self.lock();
        st.stall_after = Some(st.writes_seen + n);
    }

    /// No write hangs any more.
    pub fn unstall(&self) {
        let mut st = self.lock();
        st.stall_after = None;
        st.stalled = false;
    }

    /// A write is hanging (see [`FakeApi::stall_writes_after`]).
    pub fn stalled(&self) -> bool {
        self.lock().stalled
    }

    /// The Pods running `image` crash-loop (see the module docs).
    pub fn crash_image(&self, image: &str) {
        self.lock().crashing.insert(image.to_string());
    }

    /// Put an object there as another client would (`manager`, an update):
    /// e.g. a Secret, or an object without the stack's labels.
    pub fn insert(&self, plural: &str, manager: &str, mut value: Value) {
        let mut st = self.lock();
        st.version += 1;
        let v = st.version;
        let ns = value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let meta = value["metadata"].as_object_mut().expect("metadata");
        meta.insert("uid".into(), json!(format!("uid-{v}")));
        meta.insert("resourceVersion".into(), json!(v.to_string()));
        meta.insert("creationTimestamp".into(), json!("2026-01-01T00:00:00Z"));
        meta.insert("generation".into(), json!(1));
        let paths = owned_paths(&value);
        let mut managers = BTreeMap::new();
        managers.insert(manager.to_string(), ("Update".to_string(), paths));
        st.objects
            .insert((plural.to_string(), ns, name), Stored { value, managers });
    }

    /// Change one field "by hand": `manager` updates it (ownership moves to
    /// it, as with `kubectl edit`). `path` is dotted, with `[name=x]` for
    /// keyed list items.
    pub fn edit(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
        manager: &str,
        path: &str,
        value: Value,
    ) {
        let segs = parse_path(path);
        let mut st = self.lock();
        st.version += 1;
        let v = st.version;
        let key = (plural.to_string(), namespace.to_string(), name.to_string());
        let o = st.objects.get_mut(&key).expect("edited object exists");
        fields::set(&mut o.value, &segs, value);
        o.value["metadata"]["resourceVersion"] = json!(v.to_string());
        for (_, (_, set)) in o.managers.iter_mut() {
            set.retain(|p| !(p.starts_with(&segs) || segs.starts_with(p)));
        }
        o.managers
            .entry(manager.to_string())
            .or_insert_with(|| ("Update".to_string(), BTreeSet::new()))
            .1
            .insert(segs);
    }

    /// An object as stored (with managedFields), if it exists.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let st = self.lock();
        st.objects
            .get(&(plural.to_string(), namespace.to_string(), name.to_string()))
            .map(render)
    }

    /// `(plural, namespace, name)` of every stored object (Pods, which
    /// the fake's controllers make, are left out: see [`FakeApi::pods`]).
    pub fn names(&self) -> Vec<(String, String, String)> {
        self.lock()
            .objects
            .keys()
            .filter(|(p, _, _)| p != "pods")
            .cloned()
            .collect()
    }

    /// The Pods of Deployment `deployment` in `namespace`, as stored.
    pub fn pods(&self, namespace: &str, deployment: &str) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((p, ns, _), o)| {
                p == "pods" && ns == namespace && pod_owner(&o.value) == Some(deployment)
            })
            .map(|(_, o)| o.value.clone())
            .collect()
    }

    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let delay = {
            let mut st = self.lock();
            st.in_flight += 1;
            st.max_in_flight = st.max_in_flight.max(st.in_flight);
            st.delay
        };
        let _in_flight = InFlight(self.clone());
        if let Some(base) = delay {
            let mut h: u32 = 0x811c_9dc5;
            for b in req.uri().path().bytes() {
                h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
            tokio::time::sleep(base * (1 + h % 3)).await;
        }
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        let method = parts.method.as_str().to_string();
        let accept = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        let recorded = Recorded {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        };
        let stall = {
            let mut st = self.lock();
            let stall = recorded.is_write() && st.stall_after.is_some_and(|n| st.writes_seen >= n);
            if recorded.is_write() && !stall {
                st.writes_seen += 1;
            }
            if !stall {
                st.requests.push(recorded);
            }
            st.stalled |= stall;
            stall
        };
        if stall {
            // The process that sent it is about to be killed: no answer,
            // and the request never reaches the server.
            std::future::pending::<()>().await;
        }
        let q: BTreeMap<String, String> = query
            .split('&')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), decode(v))
            })
            .collect();
        if let Some((code, text)) = self.pod_log(&method, &path, &q) {
            return Response::builder()
                .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header("content-type", "text/plain")
                .body(Body::from(text.into_bytes()))
                .expect("response");
        }
        let (code, value) = self.route(&method, &path, &q, &accept, &bytes);
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&value).unwrap_or_default()))
            .expect("response")
    }

    /// `GET /api/v1/namespaces/NS/pods/NAME/log`: the lines logged so far
    /// (`timestamps=true`: with their timestamps).
    fn pod_log(
        &self,
        method: &str,
        path: &str,
        q: &BTreeMap<String, String>,
    ) -> Option<(u16, String)> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let ["api", "v1", "namespaces", ns, "pods", name, "log"] = segs.as_slice() else {
            return None;
        };
        if method != "GET" {
            return Some((405, format!("{method} is not supported on pods/log")));
        }
        let st = self.lock();
        let key = ("pods".to_string(), ns.to_string(), name.to_string());
        if !st.objects.contains_key(&key) {
            return Some((404, format!("pods \"{name}\" not found")));
        }
        let stamped = q.get("timestamps").is_some_and(|t| t == "true");
        let mut out = String::new();
        for l in st
            .logs
            .get(&(ns.to_string(), name.to_string()))
            .into_iter()
            .flatten()
        {
            let l = if stamped {
                l.as_str()
            } else {
                l.split_once(' ').map_or(l.as_str(), |(_, rest)| rest)
            };
            out.push_str(l);
            out.push('\n');
        }
        Some((200, out))
    }

    fn route(
        &self,
        method: &str,
        path: &str,
        q: &BTreeMap<String, String>,
        accept: &str,
        body: &[u8],
    ) -> (u16, Value) {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (api_version, rest): (String, &[&str]) = match segs.as_slice() {
            ["api", v, rest @ ..] => (v.to_string(), rest),
            ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
            _ => {
                return status(
                    404,
                    "NotFound",
                    &format!("the server could not find {path}"),
                );
            }
        };
        if rest.is_empty() {
            return self.discovery(&api_version);
        }
        if self.lock().hidden.contains(&api_version) {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        let (ns, plural, name) = match rest {
            [plural] => ("", *plural, None),
            ["namespaces", name] => ("", "namespaces", Some(*name)),
            ["namespaces", ns, plural] => (*ns, *plural, None),
            ["namespaces", ns, plural, name] => (*ns, *plural, Some(*name)),
            [plural, name] => ("", *plural, Some(*name)),
            _ => return status(404, "NotFound", &format!("no route for {path}")),
        };
        let Some((kind_api, kind)) = kind_of(plural) else {
            return status(
                404,
                "NotFound",
                &format!("the server does not serve {plural}"),
            );
        };
        if kind_api != api_version {
            return status(
                404,
                "NotFound",
                &format!("{plural} is not served by {api_version}"),
            );
        }
        let metadata_only = accept.contains("as=PartialObjectMetadata");
        match (method, name) {
            ("GET", Some(n)) => {
                let st = self.lock();
                match st
                    .objects
                    .get(&(plural.to_string(), ns.to_string(), n.to_string()))
                {
                    Some(o) if metadata_only => (
                        200,
                        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": render(o)["metadata"]}),
                    ),
                    Some(o) => (200, render(o)),
                    None => status(404, "NotFound", &format!("{plural} \"{n}\" not found")),
                }
            }
            ("GET", None) if self.lock().unlistable.contains(plural) => status(
                403,
                "Forbidden",
                &format!("{plural} is forbidden: cannot list resource \"{plural}\""),
            ),
            ("GET", None) => {
                let selector: Vec<(String, String)> = q
                    .get("labelSelector")
                    .map(|s| {
                        s.split(',')
                            .filter_map(|kv| kv.split_once('='))
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut st = self.lock();
                if plural == "pods" {
                    crash_reads(&mut st, ns);
                }
                // Pages: `limit` items, then a `continue` token (here the
                // number of items already sent).
                let skip: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
                let limit: usize = q
                    .get("limit")
                    .and_then(|l| l.parse().ok())
                    .filter(|l| *l > 0)
                    .unwrap_or(usize::MAX);
                let mut items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|((p, n, _), _)| p == plural && (ns.is_empty() || n == ns))
                    .filter(|(_, o)| {
                        selector.iter().all(|(k, v)| {
                            o.value.pointer("/metadata/labels").and_then(|l| l.get(k)).and_then(Value::as_str)
                                == Some(v.as_str())
                        })
                    })
                    .skip(skip)
                    .take(limit.saturating_add(1))
                    .map(|(_, o)| {
                        let mut r = render(o);
                        if metadata_only {
                            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": r["metadata"]})
                        } else {
                            // As the API server: the items of a typed list
                            // carry no apiVersion or kind (the list does).
                            if let Some(m) = r.as_object_mut() {
                                m.remove("apiVersion");
                                m.remove("kind");
                            }
                            r
                        }
                    })
                    .collect();
                let mut meta = json!({"resourceVersion": st.version.to_string()});
                if items.len() > limit {
                    items.truncate(limit);
                    meta["continue"] = json!((skip + limit).to_string());
                }
                (
                    200,
                    json!({"apiVersion": api_version, "kind": format!("{kind}List"), "metadata": meta, "items": items}),
                )
            }
            ("PATCH", Some(n)) => self.apply(api_version.as_str(), kind, plural, ns, n, q, body),
            ("DELETE", Some(n)) => {
                let mut st = self.lock();
                match st
                    .objects
                    .remove(&(plural.to_string(), ns.to_string(), n.to_string()))
                {
                    Some(_) => {
                        if plural == "namespaces" {
                            st.objects.retain(|(_, o_ns, _), _| o_ns != n);
                            st.pods_of.retain(|(o_ns, _), _| o_ns != n);
                        }
                        if plural == "deployments" {
                            for pod in st
                                .pods_of
                                .remove(&(ns.to_string(), n.to_string()))
                                .unwrap_or_default()
                            {
                                st.objects
                                    .remove(&("pods".to_string(), ns.to_string(), pod));
                            }
                        }
                        (
                            200,
                            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200}),
                        )
                    }
                    None => status(404, "NotFound", &format!("{plural} \"{n}\" not found")),
                }
            }
            _ => status(
                405,
                "MethodNotAllowed",
                &format!("{method} is not supported by the fake"),
            ),
        }
    }

    fn discovery(&self, api_version: &str) -> (u16, Value) {
        if self.lock().hidden.contains(api_version) {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        let resources: Vec<Value> = KINDS
            .iter()
            .filter(|k| k.0 == api_version)
            .map(|k| json!({"name": k.2, "singularName": "", "namespaced": k.3, "kind": k.1, "verbs": ["get", "list", "patch", "delete"]}))
            .collect();
        if resources.is_empty() {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        (
            200,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": resources}),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        api_version: &str,
        kind: &str,
        plural: &str,
        ns: &str,
        name: &str,
        q: &BTreeMap<String, String>,
        body: &[u8],
    ) -> (u16, Value) {
        let Some(manager) = q.get("fieldManager").cloned() else {
            return status(
                400,
                "BadRequest",
                "PATCH with apply-patch requires fieldManager",
            );
        };
        let force = q.get("force").is_some_and(|f| f == "true");
        let dry = q.get("dryRun").is_some_and(|d| d == "All");
        let Ok(applied) = serde_json::from_slice::<Value>(body) else {
            return status(400, "BadRequest", "the body is not JSON");
        };
        let mut st = self.lock();
        if let Some(msg) = st.invalid.get(&(plural.to_string(), name.to_string())) {
            return status(
                422,
                "Invalid",
                &format!(
                    "{kind}.{} \"{name}\" is invalid: {msg}",
                    api_version.split('/').next().unwrap_or("")
                ),
            );
        }
        if !ns.is_empty()
            && !st
                .objects
                .contains_key(&("namespaces".to_string(), String::new(), ns.to_string()))
        {
            return status(404, "NotFound", &format!("namespaces \"{ns}\" not found"));
        }
        let key = (plural.to_string(), ns.to_string(), name.to_string());
        let paths = owned_paths(&applied);
        let mut stored = match st.objects.get(&key) {
            Some(o) => o.clone(),
            None => Stored {
                value: json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}),
                managers: BTreeMap::new(),
            },
        };
        let exists = st.objects.contains_key(&key);
        // Conflicts: another manager owns a field with a different value.
        let mut conflicts: Vec<(String, String)> = Vec::new();
        for (m, (_, set)) in &stored.managers {
            if *m == manager {
                continue;
            }
            for p in paths.iter().filter(|p| set.contains(*p)) {
                if fields::get(&stored.value, p) != fields::get(&applied, p) {
                    conflicts.push((m.clone(), fields::show(p)));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let list: Vec<String> = conflicts
                .iter()
                .map(|(m, p)| format!("conflict with \"{m}\" using {api_version}: .{p}"))
                .collect();
            let message = if list.len() == 1 {
                format!("Apply failed with 1 conflict: {}", list[0])
            } else {
                format!(
                    "Apply failed with {} conflicts: {}",
                    list.len(),
                    list.join("\n")
                )
            };
            return status(409, "Conflict", &message);
        }
        let old_spec = stored.value.get("spec").cloned();
        // Fields this manager applied before and no longer does, owned by
        // no one else, are removed.
        let previous = stored
            .managers
            .get(&manager)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        for p in previous.difference(&paths) {
            let shared = stored
                .managers
                .iter()
                .any(|(m, (_, s))| *m != manager && s.contains(p));
            if !shared {
                fields::remove(&mut stored.value, p);
            }
        }
        for p in &paths {
            if let Some(v) = fields::get(&applied, p) {
                fields::set(&mut stored.value, p, v.clone());
            }
        }
        for (m, (_, set)) in stored.managers.iter_mut() {
            if *m != manager && force {
                for p in &paths {
                    set.remove(p);
                }
            }
        }
        stored.managers.retain(|_, (_, s)| !s.is_empty());
        stored
            .managers
            .insert(manager.clone(), ("Apply".into(), paths));
        let version = st.version + 1;
        if !exists
            && kind == "Service"
            && stored.value.pointer("/spec/clusterIP").is_none()
            && let Some(spec) = stored.value.get_mut("spec").and_then(Value::as_object_mut)
        {
            // Allocated by the API server; stackc never sets it.
            let n = st.objects.keys().filter(|k| k.0 == "services").count() + 1;
            spec.insert(
                "clusterIP".into(),
                json!(format!("10.96.{}.{}", n / 250, n % 250 + 1)),
            );
        }
        if !exists {
            let meta = stored.value["metadata"].as_object_mut().expect("metadata");
            meta.insert("uid".into(), json!(format!("uid-{version}")));
            meta.insert("creationTimestamp".into(), json!("2026-01-01T00:00:00Z"));
            if !ns.is_empty() {
                meta.insert("namespace".into(), json!(ns));
            }
        }
        let before = st
            .objects
            .get(&key)
            .map(|o| (o.value.clone(), o.managers.clone()));
        let changed = before.as_ref().is_none_or(|(v, m)| {
            let mut v2 = stored.value.clone();
            if let Some(s) = v.get("status") {
                v2["status"] = s.clone();
            }
            *v != v2 || *m != stored.managers
        });
        if changed {
            stored.value["metadata"]["resourceVersion"] = json!(version.to_string());
        }
        let generation = stored
            .value
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let generation = if !exists || stored.value.get("spec").cloned() != old_spec {
            generation + 1
        } else {
            generation
        };
        stored.value["metadata"]["generation"] = json!(generation);
        if matches!(kind, "Deployment" | "StatefulSet") {
            let replicas = stored
                .value
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            stored.value["status"] = if st.never_ready.contains(name) {
                json!({"observedGeneration": generation, "replicas": replicas, "readyReplicas": 0, "availableReplicas": 0, "updatedReplicas": replicas,
                       "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."}]})
            } else {
                json!({"observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas, "updatedReplicas": replicas,
                       "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."}]})
            };
        }
        let out = render(&stored);
        if !dry && changed {
            st.version = version;
            if kind == "Deployment" {
                sync_pods(&mut st, ns, name, &stored.value);
            }
            st.objects.insert(key, stored);
        }
        (200, out)
    }
}

/// The Deployment a fake Pod belongs to.
fn pod_owner(pod: &Value) -> Option<&str> {
    pod.pointer("/metadata/ownerReferences/0/name")
        .and_then(Value::as_str)
}

/// The replica set controller: `spec.replicas` Pods from the pod
/// template of Deployment `name`. Pods of another template are replaced;
/// those of the same template are kept (with their restart counts).
fn sync_pods(st: &mut State, ns: &str, name: &str, deployment: &Value) {
    let template = deployment
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let hash = {
        // FNV-1a of the template: a stand-in for pod-template-hash.
        let mut h: u32 = 0x811c_9dc5;
        for b in serde_json::to_vec(&template).unwrap_or_default() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        format!("{h:08x}")
    };
    let replicas = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let prefix = format!("{name}-{hash}-");
    // Kept: Pods of other Deployments, and this template's Pods below the
    // replica count.
    let current = |o_name: &str| {
        o_name
            .strip_prefix(&prefix)
            .and_then(|i| i.parse::<i64>().ok())
            .is_some_and(|i| i < replicas)
    };
    let owned = st
        .pods_of
        .remove(&(ns.to_string(), name.to_string()))
        .unwrap_or_default();
    let mut kept = Vec::new();
    for pod in owned {
        if current(&pod) {
            kept.push(pod);
        } else {
            st.objects
                .remove(&("pods".to_string(), ns.to_string(), pod));
        }
    }
    let containers: Vec<Value> = template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for i in 0..replicas {
        let pod_name = format!("{prefix}{i}");
        let key = ("pods".to_string(), ns.to_string(), pod_name.clone());
        if st.objects.contains_key(&key) {
            continue;
        }
        kept.push(pod_name.clone());
        st.version += 1;
        let statuses: Vec<Value> = containers
            .iter()
            .map(|c| json!({"name": c["name"], "image": c["image"], "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}))
            .collect();
        let value = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": pod_name, "namespace": ns,
                "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": "fake", "controller": true}],
                "uid": format!("uid-{}", st.version), "resourceVersion": st.version.to_string(),
                "creationTimestamp": "2026-01-01T00:00:00Z"
            },
            "spec": template.get("spec").cloned().unwrap_or(json!({})),
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": statuses}
        });
        st.objects.insert(
            key,
            Stored {
                value,
                managers: BTreeMap::new(),
            },
        );
    }
    st.pods_of.insert((ns.to_string(), name.to_string()), kept);
}

/// A read of the Pods of `ns`: crash-looping ones have restarted once
/// more since the last read (none at the first) and are not ready.
fn crash_reads(st: &mut State, ns: &str) {
    let crashing = st.crashing.clone();
    let mut reads = std::mem::take(&mut st.pod_reads);
    for ((p, o_ns, name), o) in st.objects.iter_mut() {
        if p != "pods" || (!ns.is_empty() && o_ns != ns) {
            continue;
        }
        let crashes = o
            .value
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["image"].as_str().is_some_and(|i| crashing.contains(i)))
            });
        if !crashes {
            continue;
        }
        let n = reads.entry((o_ns.clone(), name.clone())).or_insert(0);
        *n += 1;
        if *n > 1 {
            let restarts = *n - 1;
            o.value["status"]["conditions"] =
                json!([{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]);
            if let Some(Value::Array(cs)) = o.value.pointer_mut("/status/containerStatuses") {
                for c in cs {
                    c["ready"] = json!(false);
                    c["restartCount"] = json!(restarts);
                    c["state"] = json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}});
                }
            }
        }
    }
    st.pod_reads = reads;
}

/// The object with its managedFields.
fn render(o: &Stored) -> Value {
    let mut v = o.value.clone();
    let mf: Vec<Value> = o
        .managers
        .iter()
        .map(|(m, (op, set))| {
            json!({"manager": m, "operation": op, "apiVersion": v["apiVersion"], "fieldsType": "FieldsV1", "fieldsV1": fields::to_fields_v1(set)})
        })
        .collect();
    v["metadata"]["managedFields"] = Value::Array(mf);
    v
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(c) => {
                        out.push(c);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a.b[name=x].c` as segments.
pub fn parse_path(path: &str) -> Path {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            out.push(Seg::Field(rest[..i].to_string()));
            rest = &rest[i..];
            while let Some(r) = rest.strip_prefix("[name=") {
                let end = r.find(']').unwrap_or(r.len());
                out.push(Seg::Key(r[..end].to_string()));
                rest = r.get(end + 1..).unwrap_or("");
            }
        } else {
            out.push(Seg::Field(rest.to_string()));
        }
    }
    out
}
