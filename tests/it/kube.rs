//! Kubernetes plan / apply / drift / prune / destroy, against the
//! in-process fake API server (every request recorded), and against a
//! real cluster when `STACKC_KUBE_TESTS=1` (see docs/apply.md).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use stackc::apply::kube::fake::FakeApi;
use stackc::apply::kube::{self as k, Action, Desired, Options};
use stackc::profile::{KubeTarget, Profile};

use crate::support::{root, run, stackc};

fn profile() -> Profile {
    Profile {
        name: "cluster".into(),
        kubernetes: Some(KubeTarget {
            context: None,
            in_cluster: false,
            namespace: None,
            field_manager: "stackc".into(),
            concurrency: stackc::profile::CONCURRENCY,
        }),
        ..Profile::local()
    }
}

fn checked(
    text_change: Option<(&str, &str)>,
    example: &str,
) -> (stackc::model::Topology, stackc::graph::Graph) {
    let path = root().join("examples").join(example).join("stack.kdl");
    let mut text = std::fs::read_to_string(&path).expect("example");
    if let Some((from, to)) = text_change {
        assert!(text.contains(from), "{from} in {example}");
        text = text.replacen(from, to, 1);
    }
    let c = stackc::check_str("stack.kdl", &text, path.parent().unwrap(), None);
    assert!(c.ok(), "{example} checks");
    (c.topology.unwrap(), c.graph.unwrap())
}

fn desired_with(example: &str, change: Option<(&str, &str)>) -> Desired {
    let (t, g) = checked(change, example);
    k::desired(&t, &g, &profile()).expect("desired")
}

fn desired(example: &str) -> Desired {
    desired_with(example, None)
}

fn opts() -> Options {
    Options {
        poll: Duration::from_millis(1),
        timeout: Duration::from_millis(200),
        ..Options::default()
    }
}

#[allow(non_snake_case)]
fn LABELS(stack: &str) -> Value {
    json!({"io.stackc.stack": stack, "io.stackc.owner": "stackc"})
}

/// A cluster prepared as docs/apply.md says: the namespace created and
/// labelled for the stack, and the Secrets the manifests refer to.
fn prepared(d: &Desired) -> FakeApi {
    let fake = FakeApi::new();
    fake.insert(
        "namespaces",
        "kubectl-create",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": d.namespace, "labels": LABELS(&d.stack)}}),
    );
    for s in &d.secrets {
        fake.insert(
            "secrets",
            "kubectl-create",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": s.name, "namespace": d.namespace}, "data": {"K": "c2VjcmV0"}}),
        );
    }
    fake
}

async fn plan(fake: &FakeApi, d: &Desired, o: &Options) -> (k::Plan, k::Kinds) {
    k::plan(&fake.client(&d.namespace), d, o)
        .await
        .expect("plan")
}

/// Plan and apply, as `stackc apply` does.
async fn apply(
    fake: &FakeApi,
    d: &Desired,
    o: &Options,
) -> Result<(k::Plan, k::Summary), k::Error> {
    let client = fake.client(&d.namespace);
    let (p, kinds) = k::plan(&client, d, o).await?;
    let s = k::apply(&client, d, &p, &kinds, o, &|_| {}).await?;
    Ok((p, s))
}

fn lines(fake: &FakeApi) -> Vec<String> {
    fake.requests().iter().map(|r| r.line()).collect()
}

fn write_lines(fake: &FakeApi) -> Vec<String> {
    fake.writes().iter().map(|r| r.line()).collect()
}

fn pos(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no request {needle} in {lines:#?}"))
}

#[tokio::test]
async fn create_applies_in_phase_order_with_the_field_manager() {
    let d = desired("chat-microservices");
    let fake = prepared(&d);
    let (p, _) = plan(&fake, &d, &opts()).await;
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert!(
        fake.writes().is_empty(),
        "plan never writes: {:?}",
        write_lines(&fake)
    );
    assert_eq!(p.count(Action::Update), 1, "the namespace gets its labels");
    assert_eq!(p.count(Action::Create), d.objects.len() - 1);
    let text = k::render(&p);
    assert!(
        text.contains("+  Deployment api-gateway [phase-3 (edge)]: create"),
        "{text}"
    );
    // Plan requests: discovery of the VPA group, the Namespace, then
    // (concurrently, in any order) the LISTs of the stack, a GET for each
    // object they did not find, a dry-run for the one existing object,
    // the Secrets' metadata.
    let l = lines(&fake);
    assert_eq!(l[0], "GET /apis/autoscaling.k8s.io/v1");
    assert_eq!(l[1], "GET /api/v1/namespaces/chat-microservices");
    // (kube-client writes its query strings with a leading `&`.)
    assert!(l.contains(
        &"PATCH /api/v1/namespaces/chat-microservices?&dryRun=All&fieldManager=stackc".to_string()
    ));
    assert!(l.contains(&"GET /api/v1/namespaces/chat-microservices/secrets/chat-microservices-api-gateway-secrets".to_string()));
    assert!(l.contains(&"GET /apis/apps/v1/namespaces/chat-microservices/deployments?&labelSelector=io.stackc.stack%3Dchat-microservices%2Cio.stackc.owner%3Dstackc&limit=500".to_string()), "{l:#?}");
    assert!(l.contains(
        &"GET /apis/apps/v1/namespaces/chat-microservices/deployments/api-gateway".to_string()
    ));
    fake.clear_requests();

    let (_, s) = apply(&fake, &d, &opts()).await.expect("apply");
    assert_eq!(s.created, d.objects.len() - 1);
    assert_eq!(s.updated, 1);
    let w = write_lines(&fake);
    assert_eq!(w.len(), d.objects.len());
    for line in &w {
        assert!(line.starts_with("PATCH "), "{line}");
        assert!(
            line.ends_with("?&fieldManager=stackc"),
            "no force, no dry run: {line}"
        );
    }
    assert_eq!(
        w[0],
        "PATCH /api/v1/namespaces/chat-microservices?&fieldManager=stackc"
    );
    // Stages: RBAC and configuration before workloads, phases in order.
    let cm = pos(&w, "/configmaps/api-gateway-env");
    let np = pos(&w, "/networkpolicies/");
    let disc = pos(&w, "/deployments/discovery-server");
    let users = pos(&w, "/deployments/users-service");
    let gw = pos(&w, "/deployments/api-gateway");
    let ingress = pos(&w, "/deployments/ingress");
    let cron = pos(&w, "/cronjobs/app-data-backup");
    assert!(
        cm < disc && np < disc && disc < users && users < gw && gw < ingress && ingress < cron,
        "{w:#?}"
    );
    // Phase 2 starts after phase 1's workloads were checked available.
    let all = lines(&fake);
    let ready = all
        .iter()
        .position(|l| l == "GET /apis/apps/v1/namespaces/chat-microservices/statefulsets/mysql")
        .expect("mysql checked");
    assert!(
        ready
            < pos(
                &all,
                "PATCH /apis/apps/v1/namespaces/chat-microservices/deployments/users-service"
            )
    );
    // The autoscaled gateway's replica count is left to its HPA.
    let gwv = fake
        .get("deployments", "chat-microservices", "api-gateway")
        .unwrap();
    assert!(gwv.pointer("/spec/replicas").is_none());
    // Every object carries the stack's labels.
    for (plural, ns, name) in fake.names() {
        if plural == "secrets" {
            continue;
        }
        let v = fake.get(&plural, &ns, &name).unwrap();
        assert_eq!(
            v.pointer("/metadata/labels/io.stackc.stack"),
            Some(&json!("chat-microservices")),
            "{plural}/{name}"
        );
    }
}

#[tokio::test]
async fn no_op_reapply_sends_no_write() {
    for example in ["chat-microservices", "streamgate"] {
        let d = desired(example);
        let fake = prepared(&d);
        apply(&fake, &d, &opts()).await.expect("first apply");
        fake.clear_requests();
        let (p, s) = apply(&fake, &d, &opts()).await.expect("second apply");
        assert!(!p.has_changes(), "{example}: {}", k::render(&p));
        assert_eq!(s.created + s.updated + s.deleted, 0);
        assert!(
            fake.writes().is_empty(),
            "{example}: {:?}",
            write_lines(&fake)
        );
        for r in fake.requests() {
            assert!(
                r.method == "GET" || (r.method == "PATCH" && r.query.contains("dryRun=All")),
                "{}",
                r.line()
            );
        }
        assert!(k::render(&p).contains("No changes."));
    }
}

#[tokio::test]
async fn update_shows_the_changed_field_and_applies_only_it() {
    let d = desired("chat-microservices");
    let fake = prepared(&d);
    apply(&fake, &d, &opts()).await.expect("apply");
    let d2 = desired_with(
        "chat-microservices",
        Some(("chatms/api-gateway:1.0.0", "chatms/api-gateway:1.0.1")),
    );
    fake.clear_requests();
    let (p, _) = plan(&fake, &d2, &opts()).await;
    let updates: Vec<&k::Change> = p
        .changes
        .iter()
        .filter(|c| c.action == Action::Update)
        .collect();
    assert_eq!(updates.len(), 1, "{}", k::render(&p));
    assert_eq!(updates[0].label(), "Deployment api-gateway");
    assert_eq!(updates[0].fields.len(), 1);
    assert_eq!(
        updates[0].fields[0].path,
        "spec.template.spec.containers[name=api-gateway].image"
    );
    assert!(
        updates[0]
            .diff
            .as_ref()
            .unwrap()
            .contains("+        image: chatms/api-gateway:1.0.1")
    );
    let json = serde_json::to_value(&p).unwrap();
    assert!(json.to_string().contains("\"action\":\"update\""));
    assert!(fake.writes().is_empty());
    let (_, s) = apply(&fake, &d2, &opts()).await.expect("apply");
    assert_eq!((s.created, s.updated), (0, 1));
    assert_eq!(
        write_lines(&fake),
        vec![
            "PATCH /apis/apps/v1/namespaces/chat-microservices/deployments/api-gateway?&fieldManager=stackc"
        ]
    );
}

#[tokio::test]
async fn conflict_names_the_other_manager_and_force_takes_over() {
    let d = desired("chat-microservices");
    let fake = prepared(&d);
    apply(&fake, &d, &opts()).await.expect("apply");
    fake.edit(
        "deployments",
        "chat-microservices",
        "jaeger",
        "kubectl-edit",
        "spec.template.spec.containers[name=jaeger].image",
        json!("jaegertracing/all-in-one:1.58.0"),
    );
    fake.clear_requests();
    let (p, _) = plan(&fake, &d, &opts()).await;
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    let e = &p.errors[0];
    assert!(e.contains("Deployment jaeger: conflict"), "{e}");
    assert!(e.contains("field manager `kubectl-edit`"), "{e}");
    assert!(e.contains("--force-conflicts"), "{e}");
    let err = apply(&fake, &d, &opts()).await.unwrap_err();
    assert!(err.message.contains("kubectl-edit"), "{err}");
    assert!(fake.writes().is_empty(), "nothing changes on a conflict");

    let forced = Options {
        force_conflicts: true,
        ..opts()
    };
    fake.clear_requests();
    let (p, s) = apply(&fake, &d, &forced).await.expect("forced apply");
    assert_eq!(s.updated, 1, "{}", k::render(&p));
    assert_eq!(
        write_lines(&fake),
        vec![
            "PATCH /apis/apps/v1/namespaces/chat-microservices/deployments/jaeger?&force=true&fieldManager=stackc"
        ]
    );
    let v = fake
        .get("deployments", "chat-microservices", "jaeger")
        .unwrap();
    assert_eq!(
        v.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("jaegertracing/all-in-one:1.57.0"))
    );
}

#[tokio::test]
async fn invalid_object_is_shown_clearly() {
    let d = desired("chat-microservices");
    // On create, the API server refuses it during apply: the error names
    // the object and the server's reason, and the apply stops there.
    let fake = prepared(&d);
    fake.reject(
        "deployments",
        "users-service",
        "spec.template.spec.containers[0].image: Required value",
    );
    let err = apply(&fake, &d, &opts()).await.unwrap_err();
    assert_eq!(err.code, Some(422));
    assert_eq!(
        err.message,
        "Deployment users-service: rejected as invalid by the API server: Deployment.apps \"users-service\" is invalid: spec.template.spec.containers[0].image: Required value"
    );
    let w = write_lines(&fake);
    assert!(
        !w.iter().any(|l| l.contains("deployments/api-gateway")),
        "later phases are not applied"
    );
    // On an existing object, the plan's dry run already shows it.
    let fake = prepared(&d);
    apply(&fake, &d, &opts()).await.expect("apply");
    fake.reject(
        "deployments",
        "users-service",
        "spec.replicas: Invalid value: -1",
    );
    fake.clear_requests();
    let (p, _) = plan(&fake, &d, &opts()).await;
    assert_eq!(p.errors.len(), 1);
    assert!(
        p.errors[0].contains("rejected as invalid by the API server"),
        "{:?}",
        p.errors
    );
    assert!(p.errors[0].contains("spec.replicas: Invalid value: -1"));
    assert!(apply(&fake, &d, &opts()).await.is_err());
    assert!(fake.writes().is_empty());
}

#[tokio::test]
async fn missing_crd_api_is_a_warning_and_the_rest_applies() {
    let d = desired("streamgate");
    assert!(d.objects.iter().any(|o| o.kind == "VerticalPodAutoscaler"));
    let fake = prepared(&d);
    fake.hide_api("autoscaling.k8s.io/v1");
    let (p, s) = apply(&fake, &d, &opts()).await.expect("apply");
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("autoscaling.k8s.io/v1"));
    assert!(p.warnings[0].contains("VerticalPodAutoscaler"));
    let vpas = d
        .objects
        .iter()
        .filter(|o| o.kind == "VerticalPodAutoscaler")
        .count();
    assert_eq!(s.skipped, vpas);
    assert_eq!(s.created + s.updated, d.objects.len() - vpas);
    assert!(
        !lines(&fake)
            .iter()
            .any(|l| l.contains("verticalpodautoscalers"))
    );
    assert!(k::render(&p).contains("skipped: its API is not served by the cluster"));
}

#[tokio::test]
async fn prune_only_with_the_flag_and_never_unlabelled_objects() {
    let d = desired("chat-microservices");
    let fake = prepared(&d);
    apply(&fake, &d, &opts()).await.expect("apply");
    let ns = d.namespace.as_str();
    let mut labels = LABELS(&d.stack);
    labels["io.stackc.service"] = json!("old-service");
    fake.insert(
        "configmaps",
        "stackc",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "old-service-env", "namespace": ns, "labels": labels}}),
    );
    fake.insert(
        "deployments",
        "stackc",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "old-service", "namespace": ns, "labels": labels}, "spec": {}}),
    );
    fake.insert(
        "configmaps",
        "helm",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "someone-elses", "namespace": ns, "labels": {"app": "x"}}}),
    );
    fake.clear_requests();
    let (p, s) = apply(&fake, &d, &opts()).await.expect("apply");
    assert_eq!(p.count(Action::Orphan), 2, "{}", k::render(&p));
    assert!(!p.has_changes());
    assert_eq!(s.deleted, 0);
    assert!(fake.writes().is_empty());

    let pruning = Options {
        prune: true,
        ..opts()
    };
    fake.clear_requests();
    let (p, s) = apply(&fake, &d, &pruning).await.expect("apply --prune");
    assert_eq!(p.count(Action::Prune), 2);
    assert_eq!(s.deleted, 2);
    assert_eq!(
        write_lines(&fake),
        vec![
            "DELETE /apis/apps/v1/namespaces/chat-microservices/deployments/old-service",
            "DELETE /api/v1/namespaces/chat-microservices/configmaps/old-service-env",
        ]
    );
    assert!(fake.get("configmaps", ns, "someone-elses").is_some());
}

#[tokio::test]
async fn unlabelled_object_with_a_stack_name_is_an_error() {
    let d = desired("chat-microservices");
    let fake = prepared(&d);
    fake.insert(
        "deployments",
        "kubectl-create",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "jaeger", "namespace": d.namespace}, "spec": {"replicas": 1}}),
    );
    let err = apply(&fake, &d, &opts()).await.unwrap_err();
    assert!(
        err.message.contains(
            "Deployment jaeger exists in namespace `chat-microservices` without the labels"
        ),
        "{err}"
    );
    assert!(fake.writes().is_empty());
}

#[tokio::test]
async fn missing_secret_stops_before_any_change() {
    let d = desired("chat-microservices");
    let fake = prepared(&d);
    // Start again without the gateway's Secret.
    let fake2 = FakeApi::new();
    for (plural, ns, name) in fake.names() {
        if name != "chat-microservices-api-gateway-secrets" {
            let mut v = fake.get(&plural, &ns, &name).unwrap();
            v["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("managedFields");
            fake2.insert(&plural, "kubectl-create", v);
        }
    }
    let err = apply(&fake2, &d, &opts()).await.unwrap_err();
    assert!(
        err.message.contains("Secret `chat-microservices-api-gateway-secrets` (used by api-gateway) does not exist in namespace `chat-microservices`"),
        "{err}"
    );
    assert!(fake2.writes().is_empty());
    // Existence is checked on metadata only: no Secret data in any answer.
    assert!(!format!("{err}").contains("c2VjcmV0"));
}

#[tokio::test]
async fn unlabelled_namespace_is_used_as_it_is() {
    let d = desired("chat-microservices");
    let fake = FakeApi::new();
    fake.insert(
        "namespaces",
        "kubectl-create",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": d.namespace}}),
    );
    for s in &d.secrets {
        fake.insert(
            "secrets",
            "kubectl-create",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": s.name, "namespace": d.namespace}}),
        );
    }
    let (p, _) = apply(&fake, &d, &opts()).await.expect("apply");
    assert_eq!(p.count(Action::External), 1);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("kubectl label namespace chat-microservices"))
    );
    assert!(
        !write_lines(&fake)
            .iter()
            .any(|l| l.starts_with("PATCH /api/v1/namespaces/chat-microservices?"))
    );
}

#[tokio::test]
async fn drift_reports_hand_edits_not_fields_owned_by_others() {
    let (t, g) = checked(
        Some((
            "service \"jaeger\"",
            "drift-ignore \"discovery-server\" field=\"image\" reason=\"patched by the platform team\"\n\nservice \"jaeger\"",
        )),
        "chat-microservices",
    );
    let d = k::desired(&t, &g, &profile()).unwrap();
    let fake = prepared(&d);
    apply(&fake, &d, &opts()).await.expect("apply");
    let client = fake.client(&d.namespace);
    fake.clear_requests();
    let (items, _) = k::drift(&client, &d, &t.drift_ignore, &opts())
        .await
        .unwrap();
    assert!(items.is_empty(), "{items:#?}");
    assert!(fake.writes().is_empty(), "drift never writes");
    let ns = d.namespace.as_str();
    // The HPA scales the gateway: its replica count is not drift.
    fake.edit(
        "deployments",
        ns,
        "api-gateway",
        "kube-controller-manager",
        "spec.replicas",
        json!(7),
    );
    // Another controller adds an annotation stackc does not set.
    fake.edit(
        "services",
        ns,
        "jaeger",
        "cloud-controller",
        "metadata.annotations.lb",
        json!("x"),
    );
    let (items, _) = k::drift(&client, &d, &t.drift_ignore, &opts())
        .await
        .unwrap();
    assert!(items.is_empty(), "{items:#?}");
    // Changed by hand: reported, with who changed it.
    fake.edit(
        "deployments",
        ns,
        "jaeger",
        "kubectl-edit",
        "spec.template.spec.containers[name=jaeger].image",
        json!("jaegertracing/all-in-one:9"),
    );
    fake.edit(
        "deployments",
        ns,
        "users-service",
        "kubectl-scale",
        "spec.replicas",
        json!(5),
    );
    // Ignored by the topology's rule.
    fake.edit(
        "deployments",
        ns,
        "discovery-server",
        "kubectl-edit",
        "spec.template.spec.containers[name=discovery-server].image",
        json!("x:2"),
    );
    let (items, _) = k::drift(&client, &d, &t.drift_ignore, &opts())
        .await
        .unwrap();
    let shown: Vec<String> = items
        .iter()
        .map(|i| {
            format!(
                "{} {}: {} / {} / {:?}",
                i.object, i.field, i.expected, i.actual, i.ignored
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            "Deployment discovery-server spec.template.spec.containers[name=discovery-server].image: chatms/discovery-server:1.0.0 / x:2 (set by `kubectl-edit`) / Some(\"patched by the platform team\")",
            "Deployment jaeger spec.template.spec.containers[name=jaeger].image: jaegertracing/all-in-one:1.57.0 / jaegertracing/all-in-one:9 (set by `kubectl-edit`) / None",
            "Deployment users-service spec.replicas: 2 / 5 (set by `kubectl-scale`) / None",
        ]
    );
    assert!(fake.writes().is_empty(), "drift never writes");
    // A deleted object and an owned extra one.
    let cl = fake.client(ns);
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(cl, ns);
    api.delete("api-gateway-env", &Default::default())
        .await
        .unwrap();
    let (items, _) = k::drift(&client, &d, &t.drift_ignore, &opts())
        .await
        .unwrap();
    assert!(
        items
            .iter()
            .any(|i| i.object == "ConfigMap api-gateway-env" && i.actual == "missing"),
        "{items:#?}"
    );
}

#[tokio::test]
async fn destroy_keeps_claims_without_volumes_and_goes_in_reverse_order() {
    let d = desired("chat-microservices");
    let fake = prepared(&d);
    apply(&fake, &d, &opts()).await.expect("apply");
    let ns = d.namespace.as_str();
    // The StatefulSet controller's claim, labelled from its template.
    let mut labels = LABELS(&d.stack);
    labels["io.stackc.service"] = json!("mysql");
    fake.insert(
        "persistentvolumeclaims",
        "kube-controller-manager",
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "mysql-data-mysql-0", "namespace": ns, "labels": labels}}),
    );
    fake.insert(
        "configmaps",
        "helm",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "someone-elses", "namespace": ns}}),
    );
    // The claim of a StatefulSet is neither drift nor an orphan.
    let (p, _) = plan(&fake, &d, &opts()).await;
    assert_eq!(p.count(Action::Orphan), 0, "{}", k::render(&p));
    fake.clear_requests();
    let client = fake.client(ns);
    let r = k::destroy(&client, &d, false, &opts(), &|_| {})
        .await
        .unwrap();
    assert_eq!(r.claims_kept, 3);
    assert!(r.namespace_kept.is_some());
    let w = write_lines(&fake);
    assert!(w.iter().all(|l| l.starts_with("DELETE ")), "{w:#?}");
    assert!(
        !w.iter()
            .any(|l| l.contains("persistentvolumeclaims") || l.contains("secrets"))
    );
    assert!(
        !w.iter()
            .any(|l| l == "DELETE /api/v1/namespaces/chat-microservices")
    );
    assert!(
        pos(&w, "deployments/ingress") < pos(&w, "deployments/api-gateway"),
        "{w:#?}"
    );
    assert!(pos(&w, "deployments/api-gateway") < pos(&w, "deployments/users-service"));
    assert!(pos(&w, "deployments/users-service") < pos(&w, "statefulsets/mysql"));
    assert!(pos(&w, "statefulsets/mysql") < pos(&w, "configmaps/mysql-env"));
    assert!(pos(&w, "configmaps/mysql-env") < pos(&w, "serviceaccounts/"));
    assert_eq!(r.deleted, d.objects.len() - 1 - 2);
    let left: Vec<String> = fake
        .names()
        .into_iter()
        .map(|(p, _, n)| format!("{p}/{n}"))
        .collect();
    assert!(left.contains(&"configmaps/someone-elses".to_string()));
    assert!(left.contains(&"persistentvolumeclaims/mysql-data-mysql-0".to_string()));
    // With --volumes the claims go; the namespace stays while it holds
    // Secrets stackc did not create.
    fake.clear_requests();
    let r = k::destroy(&client, &d, true, &opts(), &|_| {})
        .await
        .unwrap();
    assert_eq!(r.deleted, 3);
    assert!(r.namespace_kept.unwrap().contains("Secret"));
    assert!(
        fake.names()
            .iter()
            .any(|(p, _, n)| p == "secrets" && n == "chat-microservices-api-gateway-secrets")
    );
}

#[tokio::test]
async fn availability_timeout_names_the_object_and_its_condition() {
    let d = desired("chat-microservices");
    let fake = prepared(&d);
    fake.never_ready("discovery-server");
    let err = apply(&fake, &d, &opts()).await.unwrap_err();
    assert!(err.message.starts_with("Deployment discovery-server in namespace `chat-microservices` was not available after 0s: 0/1 ready"), "{err}");
    assert!(err.message.contains("Available=False (MinimumReplicasUnavailable): Deployment does not have minimum availability."), "{err}");
    assert!(
        !write_lines(&fake)
            .iter()
            .any(|l| l.contains("deployments/users-service"))
    );
}

#[tokio::test]
async fn streamgate_plans_applies_reports_no_drift_and_destroys() {
    let (t, g) = checked(None, "streamgate");
    let d = k::desired(&t, &g, &profile()).unwrap();
    let fake = prepared(&d);
    let (p, s) = apply(&fake, &d, &opts()).await.expect("apply");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(s.created + s.updated, d.objects.len());
    assert!(
        fake.get("verticalpodautoscalers", &d.namespace, "streaming")
            .is_some()
    );
    let client = fake.client(&d.namespace);
    let (items, _) = k::drift(&client, &d, &t.drift_ignore, &opts())
        .await
        .unwrap();
    assert!(items.is_empty(), "{items:#?}");
    let r = k::destroy(&client, &d, true, &opts(), &|_| {})
        .await
        .unwrap();
    assert!(r.deleted >= d.objects.len() - 1);
    let left: Vec<_> = fake
        .names()
        .into_iter()
        .filter(|(p, _, _)| p != "secrets" && p != "namespaces")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `/deployments/api-gateway` -> the stage of that object.
fn stage_of_path(d: &Desired) -> std::collections::HashMap<String, usize> {
    d.objects
        .iter()
        .map(|o| {
            let plural = match o.kind.as_str() {
                "NetworkPolicy" => "networkpolicies".to_string(),
                k => format!("{}s", k.to_lowercase()),
            };
            (format!("/{plural}/{}", o.name), o.stage)
        })
        .collect()
}

fn path_stage(stages: &std::collections::HashMap<String, usize>, path: &str) -> usize {
    let mut parts = path.rsplitn(3, '/');
    let (name, plural) = (parts.next().unwrap(), parts.next().unwrap());
    *stages
        .get(&format!("/{plural}/{name}"))
        .unwrap_or_else(|| panic!("no object for {path}"))
}

/// A cluster where plan finds a bit of everything: an update, a hand
/// edit by another manager, an orphan, a missing object.
async fn eventful(d: &Desired, o: &Options) -> FakeApi {
    let fake = prepared(d);
    apply(&fake, d, o).await.expect("apply");
    let ns = d.namespace.as_str();
    fake.edit(
        "deployments",
        ns,
        "users-service",
        "kubectl-scale",
        "spec.replicas",
        json!(5),
    );
    fake.edit(
        "services",
        ns,
        "jaeger",
        "cloud-controller",
        "metadata.annotations.lb",
        json!("x"),
    );
    let mut labels = LABELS(&d.stack);
    labels["io.stackc.service"] = json!("old-service");
    fake.insert(
        "configmaps",
        "stackc",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "old-service-env", "namespace": ns, "labels": labels}}),
    );
    let cl = fake.client(ns);
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(cl, ns);
    api.delete("api-gateway-env", &Default::default())
        .await
        .unwrap();
    fake.clear_requests();
    fake
}

#[tokio::test]
async fn requests_overlap_and_never_exceed_the_concurrency_limit() {
    let d = desired("chat-microservices");
    for limit in [1, 4, 16] {
        let o = Options {
            concurrency: limit,
            timeout: Duration::from_secs(5),
            ..opts()
        };
        let fake = prepared(&d);
        fake.delay(Duration::from_millis(2));
        let client = fake.client(&d.namespace);
        let check = |what: &str| {
            let m = fake.max_in_flight();
            if limit == 1 {
                assert_eq!(m, 1, "{what}: one request at a time");
            } else {
                assert!(m > 1 && m <= limit, "{what}: {m} in flight, limit {limit}");
            }
        };
        fake.clear_requests();
        let (p, _) = plan(&fake, &d, &o).await;
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        check("plan on an empty namespace");
        fake.clear_requests();
        apply(&fake, &d, &o).await.expect("apply");
        check("apply");
        fake.clear_requests();
        let (p, _) = plan(&fake, &d, &o).await;
        assert!(!p.has_changes(), "{}", k::render(&p));
        check("plan in sync");
        fake.clear_requests();
        let (items, _) = k::drift(&client, &d, &[], &o).await.unwrap();
        assert!(items.is_empty(), "{items:#?}");
        check("drift");
        fake.clear_requests();
        k::destroy(&client, &d, true, &o, &|_| {}).await.unwrap();
        check("destroy");
    }
}

#[tokio::test]
async fn concurrent_answers_in_any_order_give_the_same_plan_drift_and_stage_order() {
    let d = desired("chat-microservices");
    let (t, _) = checked(None, "chat-microservices");
    let one = Options {
        concurrency: 1,
        ..opts()
    };
    let many = Options {
        concurrency: 16,
        timeout: Duration::from_secs(5),
        ..opts()
    };
    let d2 = desired_with(
        "chat-microservices",
        Some(("chatms/api-gateway:1.0.0", "chatms/api-gateway:1.0.1")),
    );
    let mut seen = Vec::new();
    for o in [&one, &many] {
        let fake = eventful(&d, o).await;
        // Answers take 2, 4 or 6 ms by path: they arrive out of order.
        fake.delay(Duration::from_millis(2));
        let client = fake.client(&d.namespace);
        let (p, _) = plan(&fake, &d2, o).await;
        let (items, _) = k::drift(&client, &d2, &t.drift_ignore, o).await.unwrap();
        let drift: Vec<String> = items
            .iter()
            .map(|i| format!("{} {}: {} / {}", i.object, i.field, i.expected, i.actual))
            .collect();
        let pruning = Options {
            prune: true,
            force_conflicts: true,
            ..o.clone()
        };
        fake.clear_requests();
        let (_, s) = apply(&fake, &d2, &pruning).await.expect("apply");
        let requests = fake.requests();
        seen.push((
            serde_json::to_string_pretty(&p).unwrap(),
            k::render(&p),
            drift,
            requests,
            (s.created, s.updated, s.deleted, s.unchanged),
        ));
    }
    let (a, b) = (&seen[0], &seen[1]);
    assert_eq!(a.0, b.0, "the plan's JSON");
    assert_eq!(a.1, b.1, "the rendered plan");
    assert_eq!(a.2, b.2, "drift");
    assert_eq!(a.4, b.4, "the summary");
    assert!(a.1.contains("~  Deployment api-gateway"), "{}", a.1);
    assert!(a.1.contains("+  ConfigMap api-gateway-env"), "{}", a.1);
    assert!(a.1.contains("!  ConfigMap old-service-env"), "{}", a.1);
    assert!(
        a.1.contains("error: Deployment users-service: conflict"),
        "{}",
        a.1
    );
    assert!(
        a.2.iter()
            .any(|l| l.starts_with("Deployment users-service spec.replicas")),
        "{:#?}",
        a.2
    );
    // The same writes, stage by stage; stages in order; deletions last.
    let stages = stage_of_path(&d2);
    let per_stage = |reqs: &[stackc::apply::kube::fake::Recorded]| {
        let mut out: Vec<(usize, std::collections::BTreeSet<String>)> = Vec::new();
        for r in reqs.iter().filter(|r| r.is_write()) {
            let stage = if r.method == "DELETE" {
                usize::MAX
            } else {
                path_stage(&stages, &r.path)
            };
            match out.last_mut() {
                Some((s, set)) if *s == stage => {
                    set.insert(r.line());
                }
                _ => {
                    assert!(
                        out.iter().all(|(s, _)| *s < stage),
                        "stage {stage} after a later one: {:#?}",
                        reqs.iter().map(|r| r.line()).collect::<Vec<_>>()
                    );
                    out.push((stage, [r.line()].into()));
                }
            }
        }
        out
    };
    assert_eq!(per_stage(&a.3), per_stage(&b.3));
    // No write before the last Secret check.
    for reqs in [&a.3, &b.3] {
        let lines: Vec<String> = reqs.iter().map(|r| r.line()).collect();
        let last_secret = lines.iter().rposition(|l| l.contains("/secrets/")).unwrap();
        let first_write = reqs.iter().position(|r| r.is_write()).unwrap();
        assert!(last_secret < first_write, "{lines:#?}");
    }
}

#[tokio::test]
async fn plan_in_sync_reads_by_list_not_by_name() {
    let d = desired("chat-microservices");
    let fake = prepared(&d);
    apply(&fake, &d, &opts()).await.expect("apply");
    fake.clear_requests();
    let (p, _) = plan(&fake, &d, &opts()).await;
    assert!(!p.has_changes());
    let l = lines(&fake);
    // One GET by name: the Namespace. The rest of the stack by LIST, page
    // by page, then a dry run per object; Secrets by metadata.
    let by_name: Vec<&String> = l
        .iter()
        .filter(|x| x.starts_with("GET ") && !x.contains('?') && !x.contains("/secrets/"))
        .collect();
    assert_eq!(
        by_name,
        [
            "GET /apis/autoscaling.k8s.io/v1",
            "GET /api/v1/namespaces/chat-microservices"
        ],
        "{l:#?}"
    );
    assert!(
        l.iter()
            .filter(|x| x.contains("labelSelector="))
            .all(|x| x.contains("limit=500")),
        "{l:#?}"
    );
    let dry_runs = l.iter().filter(|x| x.contains("dryRun=All")).count();
    assert_eq!(dry_runs, d.objects.len());
    // An unlabelled object with one of the stack's names is not in the
    // LIST: it is still found by name, and still an error.
    fake.insert(
        "configmaps",
        "kubectl-create",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "api-gateway-env", "namespace": d.namespace}}),
    );
    let (p, _) = plan(&fake, &d, &opts()).await;
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert!(p.errors[0].contains(
        "ConfigMap api-gateway-env exists in namespace `chat-microservices` without the labels"
    ));
    // A namespace that does not exist: nothing in it is read by name.
    let fresh = FakeApi::new();
    let (p, _) = plan(&fresh, &d, &opts()).await;
    assert_eq!(p.count(Action::Create), d.objects.len());
    let l = lines(&fresh);
    assert_eq!(
        l,
        [
            "GET /apis/autoscaling.k8s.io/v1",
            "GET /api/v1/namespaces/chat-microservices"
        ]
    );
}

#[tokio::test]
async fn many_objects_of_a_kind_not_listed_are_read_by_one_list_of_the_kind() {
    let mut d = desired("chat-microservices");
    let template = d
        .objects
        .iter()
        .find(|o| o.kind == "ConfigMap")
        .unwrap()
        .clone();
    // More than a page (500) of them.
    for i in 0..520 {
        let mut o = template.clone();
        o.name = format!("extra-{i:03}");
        o.body["metadata"]["name"] = json!(o.name);
        d.objects.push(o);
    }
    d.objects.sort_by_key(|o| o.stage);
    let fake = prepared(&d);
    // One of them exists without the stack's labels.
    fake.insert(
        "configmaps",
        "kubectl-create",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra-042", "namespace": d.namespace}}),
    );
    let (p, _) = plan(&fake, &d, &opts()).await;
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert!(
        p.errors[0].starts_with(
            "ConfigMap extra-042 exists in namespace `chat-microservices` without the labels"
        ),
        "{:?}",
        p.errors
    );
    assert_eq!(p.count(Action::Create), d.objects.len() - 2);
    let l = lines(&fake);
    assert!(
        l.contains(&"GET /api/v1/namespaces/chat-microservices/configmaps?&limit=500".to_string()),
        "{l:#?}"
    );
    assert!(!l.iter().any(|x| x.contains("/configmaps/")), "{l:#?}");
    // Other kinds, with fewer objects, are still read by name.
    assert!(l.contains(
        &"GET /apis/apps/v1/namespaces/chat-microservices/deployments/api-gateway".to_string()
    ));
    // Drift reads them the same way.
    fake.clear_requests();
    let client = fake.client(&d.namespace);
    let (items, _) = k::drift(&client, &d, &[], &opts()).await.unwrap();
    let about = |name: &str| {
        items
            .iter()
            .find(|i| i.object == format!("ConfigMap {name}"))
            .map(|i| (i.field.clone(), i.actual.clone()))
    };
    assert_eq!(
        about("extra-000"),
        Some(("object".into(), "missing".into()))
    );
    assert_eq!(
        about("extra-042"),
        Some(("labels".into(), "not the stack's".into()))
    );
    assert!(
        !lines(&fake).iter().any(|x| x.contains("/configmaps/")),
        "{:#?}",
        lines(&fake)
    );
    // The same plan as when every object is read by name.
    let fake2 = prepared(&d);
    fake2.insert(
        "configmaps",
        "kubectl-create",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra-042", "namespace": d.namespace}}),
    );
    let mut few = d.clone();
    few.objects
        .retain(|o| !o.name.starts_with("extra-") || o.name == "extra-042");
    let (p2, _) = plan(&fake2, &few, &opts()).await;
    assert_eq!(p2.errors, p.errors);
    assert!(
        lines(&fake2).contains(
            &"GET /api/v1/namespaces/chat-microservices/configmaps/extra-042".to_string()
        )
    );
    // Applied: the stack's LIST of them comes in two pages, and plan in
    // sync reads none of them by name.
    fake.insert(
        "configmaps",
        "kubectl-create",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra-042", "namespace": d.namespace, "labels": LABELS(&d.stack)}}),
    );
    apply(&fake, &d, &opts()).await.expect("apply");
    fake.clear_requests();
    let (p, _) = plan(&fake, &d, &opts()).await;
    assert!(!p.has_changes() && p.errors.is_empty(), "{}", k::render(&p));
    assert_eq!(p.count(Action::Unchanged), d.objects.len());
    let l = lines(&fake);
    assert!(
        l.iter()
            .any(|x| x.contains("/configmaps?&labelSelector=")
                && x.ends_with("&limit=500&continue=500")),
        "{l:#?}"
    );
    assert!(
        !l.iter()
            .any(|x| x.starts_with("GET ") && x.contains("/configmaps/")),
        "{l:#?}"
    );
}

#[tokio::test]
async fn many_secrets_are_checked_by_one_metadata_list() {
    let mut d = desired("chat-microservices");
    let fake = prepared(&d);
    for i in 0..40 {
        d.secrets.push(k::SecretRef {
            name: format!("extra-{i:02}"),
            used_by: vec!["extra".into()],
        });
        if i != 17 {
            fake.insert(
                "secrets",
                "kubectl-create",
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("extra-{i:02}"), "namespace": d.namespace}, "data": {"K": "c2VjcmV0"}}),
            );
        }
    }
    let (p, _) = plan(&fake, &d, &opts()).await;
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert!(
        p.errors[0].starts_with("Secret `extra-17` (used by extra) does not exist"),
        "{:?}",
        p.errors
    );
    let l = lines(&fake);
    assert!(
        l.contains(&"GET /api/v1/namespaces/chat-microservices/secrets?&limit=500".to_string()),
        "{l:#?}"
    );
    assert!(!l.iter().any(|x| x.contains("/secrets/")), "{l:#?}");
    // Credentials that may not list Secrets: a GET each, same answer.
    fake.forbid_list("secrets");
    fake.clear_requests();
    let (p2, _) = plan(&fake, &d, &opts()).await;
    assert_eq!(p2.errors, p.errors);
    let l = lines(&fake);
    assert!(
        l.contains(&"GET /api/v1/namespaces/chat-microservices/secrets/extra-17".to_string()),
        "{l:#?}"
    );
}

#[test]
fn images_are_mapped_through_the_profile() {
    let (t, g) = checked(None, "chat-microservices");
    let mut p = profile();
    p.images = vec![stackc::profile::ImageRule {
        pattern: "chatms/*".into(),
        to: "mirror.local/chatms:1".into(),
    }];
    let d = k::desired(&t, &g, &p).unwrap();
    let gw = d
        .objects
        .iter()
        .find(|o| o.kind == "Deployment" && o.name == "api-gateway")
        .unwrap();
    assert_eq!(
        gw.body.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("mirror.local/chatms:1"))
    );
    // The profile's namespace guard.
    p.kubernetes.as_mut().unwrap().namespace = Some("other".into());
    let e = k::desired(&t, &g, &p).unwrap_err();
    assert!(
        e.contains("namespace `other`") && e.contains("use `chat-microservices`"),
        "{e}"
    );
}

#[test]
fn profiles_load() {
    let mut sources = stackc::source::SourceMap::new();
    let p = stackc::profile::load(&root().join("targets/cluster.kdl"), &mut sources).unwrap();
    assert_eq!(p.kubernetes.unwrap().field_manager, "stackc");
    let p = stackc::profile::load(&root().join("targets/standin.kdl"), &mut sources).unwrap();
    assert!(p.kubernetes.is_none());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("both.kdl");
    std::fs::write(
        &f,
        "target \"x\" {\n    docker host=\"unix:///x\"\n    kubernetes context=\"a\"\n}\n",
    )
    .unwrap();
    assert!(stackc::profile::load(&f, &mut sources).is_err());
    // Requests in flight: 16 unless the profile says otherwise, 1 to 256.
    let p = stackc::profile::load(&root().join("targets/cluster.kdl"), &mut sources).unwrap();
    assert_eq!(p.kubernetes.unwrap().concurrency, 16);
    std::fs::write(&f, "target \"x\" {\n    kubernetes concurrency=4\n}\n").unwrap();
    let p = stackc::profile::load(&f, &mut sources).unwrap();
    assert_eq!(p.kubernetes.unwrap().concurrency, 4);
    for bad in ["0", "257"] {
        std::fs::write(
            &f,
            format!("target \"x\" {{\n    kubernetes concurrency={bad}\n}}\n"),
        )
        .unwrap();
        assert!(stackc::profile::load(&f, &mut sources).is_err(), "{bad}");
    }
}

#[test]
fn cli_reports_an_unreachable_cluster_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\nclusters:\n- name: nowhere\n  cluster:\n    server: https://127.0.0.1:9\n    insecure-skip-tls-verify: true\ncontexts:\n- name: nowhere\n  context:\n    cluster: nowhere\n    user: nobody\nusers:\n- name: nobody\n  user:\n    token: t\n",
    )
    .unwrap();
    for args in [
        vec![
            "plan",
            "examples/chat-microservices/stack.kdl",
            "--target",
            "cluster",
        ],
        vec![
            "drift",
            "examples/chat-microservices/stack.kdl",
            "--target",
            "cluster",
            "--concurrency",
            "4",
        ],
    ] {
        let r = run(stackc().args(&args).env("KUBECONFIG", &kubeconfig));
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("error: "), "{}", r.stderr);
        assert!(
            r.stderr.contains("cannot reach the API server"),
            "{}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // --concurrency: 1 to 256, and only for Kubernetes targets.
    let r = run(stackc().args([
        "plan",
        "examples/chat-microservices/stack.kdl",
        "--concurrency",
        "2",
    ]));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("--concurrency is for Kubernetes targets"),
        "{}",
        r.stderr
    );
    let r = run(stackc().args([
        "plan",
        "examples/chat-microservices/stack.kdl",
        "--target",
        "cluster",
        "--concurrency",
        "0",
    ]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--concurrency"), "{}", r.stderr);
    let missing = dir.path().join("none");
    let r = run(stackc()
        .args([
            "plan",
            "examples/chat-microservices/stack.kdl",
            "--target",
            "cluster",
        ])
        .env("KUBECONFIG", &missing)
        .env("HOME", dir.path()));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("cannot load the kubeconfig"),
        "{}",
        r.stderr
    );
    let r = run(stackc().args([
        "plan",
        "examples/chat-microservices/stack.kdl",
        "--target",
        "cluster",
        "--out",
        "p.json",
    ]));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("saved plans (--out) are for Docker targets"),
        "{}",
        r.stderr
    );
    // Rollout commands work on Kubernetes targets: without a running
    // rollout there is nothing to steer, and the history is read.
    let state = tempfile::tempdir().unwrap();
    let r = run(stackc().current_dir(state.path()).args([
        "rollout",
        "promote",
        "api",
        root()
            .join("examples/blue-green-v2/stack.kdl")
            .to_str()
            .unwrap(),
        "--target",
        "cluster",
    ]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("no rollout of `api` is running"),
        "{}",
        r.stderr
    );
    let r = run(stackc().current_dir(state.path()).args([
        "rollout",
        "history",
        "api",
        root()
            .join("examples/blue-green-v2/stack.kdl")
            .to_str()
            .unwrap(),
        "--target",
        "cluster",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("api: no rollout yet"), "{}", r.stdout);
    let r = run(stackc().args([
        "rollout",
        "status",
        "api-gateway",
        "examples/chat-microservices/stack.kdl",
        "--target",
        "cluster",
    ]));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("`api-gateway` is not a service with a rollout policy"),
        "{}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------
// A real cluster: STACKC_KUBE_TESTS=1 and a kubeconfig whose current context
// is a disposable cluster (kind, k3d, minikube...).

const REAL_TOPOLOGY: &str = r#"stack "stackc-e2e" version="1.0.0"

kubernetes namespace="stackc-e2e"

service "db" {
    image "busybox:1.36.1"
    command "httpd" "-f" "-p" "8080"
    port 8080
    health tcp=8080 interval="2s"
}

service "web" {
    image "busybox:1.36.1"
    command "httpd" "-f" "-p" "8080"
    cluster "active-active" replicas=2
    depends-on "db" condition="healthy"
    port 8080
    health tcp=8080 interval="2s"
}
"#;

fn real_cluster() -> bool {
    if std::env::var("STACKC_KUBE_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "skipped: set STACKC_KUBE_TESTS=1 with a kubeconfig for a disposable cluster to run it"
    );
    false
}

fn real(dir: &Path, args: &[&str]) -> crate::support::Run {
    let mut all = vec![args[0], "stack.kdl", "--target", "targets/e2e.kdl"];
    all.extend(&args[1..]);
    let r = run(stackc().current_dir(dir).args(&all));
    eprintln!(
        "stackc {}: exit {}\n{}{}",
        all.join(" "),
        r.code,
        r.stdout,
        r.stderr
    );
    r
}

#[test]
fn real_cluster_plan_apply_drift_conflict_destroy() {
    if !real_cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("stack.kdl"), REAL_TOPOLOGY).unwrap();
    std::fs::create_dir(d.join("targets")).unwrap();
    std::fs::write(
        d.join("targets/e2e.kdl"),
        "target \"e2e\" {\n    kubernetes namespace=\"stackc-e2e\"\n}\n",
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(kube::Client::try_default())
        .expect("kubeconfig");
    // The namespace, labelled for the stack (docs/apply.md).
    let ns_api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "stackc-e2e", "labels": LABELS("stackc-e2e")}});
    rt.block_on(ns_api.patch(
        "stackc-e2e",
        &kube::api::PatchParams::apply("e2e-setup"),
        &kube::api::Patch::Apply(&ns),
    ))
    .expect("namespace");

    assert_eq!(real(d, &["plan", "--detailed-exitcode"]).code, 2);
    assert_eq!(real(d, &["apply", "--timeout", "180"]).code, 0);
    let again = real(d, &["apply"]);
    assert_eq!(again.code, 0);
    assert!(again.stdout.contains("No changes."));
    assert_eq!(real(d, &["plan", "--detailed-exitcode"]).code, 0);
    assert_eq!(real(d, &["drift"]).code, 0);
    // A hand edit by another manager: drift names it; apply conflicts
    // until --force-conflicts.
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client.clone(), "stackc-e2e");
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "busybox:1.36.0"}]}}}});
    rt.block_on(deploys.patch(
        "web",
        &kube::api::PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &kube::api::Patch::Strategic(&patch),
    ))
    .expect("hand edit");
    let drift = real(d, &["drift", "--json"]);
    assert_eq!(drift.code, 2);
    assert!(drift.stdout.contains("kubectl-edit"));
    let conflict = real(d, &["apply"]);
    assert_eq!(conflict.code, 1);
    assert!(conflict.stderr.contains("kubectl-edit"));
    assert_eq!(
        real(d, &["apply", "--force-conflicts", "--timeout", "180"]).code,
        0
    );
    assert_eq!(real(d, &["drift"]).code, 0);
    assert_eq!(real(d, &["destroy", "--yes", "--volumes"]).code, 0);
    rt.block_on(ns_api.delete("stackc-e2e", &Default::default()))
        .ok();
}

/// A blue-green rollout on a real cluster: an environment change rolls
/// the service out to green; the next apply changes nothing.
#[test]
fn real_cluster_blue_green_rollout() {
    if !real_cluster() {
        return;
    }
    let topology = |version: &str| {
        format!(
            r#"stack "stackc-e2e" version="1.0.0"

kubernetes namespace="stackc-e2e"

service "web" {{
    image "busybox:1.36.1"
    command "httpd" "-f" "-p" "8080"
    cluster "active-active" replicas=2
    port 8080
    env "VERSION" "{version}"
    health tcp=8080 interval="2s"
    rollout "blue-green" {{
        gate healthy-for="6s"
    }}
}}
"#
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("stack.kdl"), topology("1")).unwrap();
    std::fs::create_dir(d.join("targets")).unwrap();
    std::fs::write(
        d.join("targets/e2e.kdl"),
        "target \"e2e\" {\n    kubernetes namespace=\"stackc-e2e\"\n}\n",
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(kube::Client::try_default())
        .expect("kubeconfig");
    let ns_api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "stackc-e2e", "labels": LABELS("stackc-e2e")}});
    rt.block_on(ns_api.patch(
        "stackc-e2e",
        &kube::api::PatchParams::apply("e2e-setup"),
        &kube::api::Patch::Apply(&ns),
    ))
    .expect("namespace");
    assert_eq!(real(d, &["apply", "--timeout", "180"]).code, 0);
    std::fs::write(d.join("stack.kdl"), topology("2")).unwrap();
    let plan = real(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2);
    assert!(
        plan.stdout.contains(">> rollout web (blue-green)"),
        "{}",
        plan.stdout
    );
    assert_eq!(real(d, &["apply", "--timeout", "180"]).code, 0);
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client.clone(), "stackc-e2e");
    let web = rt.block_on(services.get("web")).expect("Service web");
    assert_eq!(
        web.spec
            .and_then(|s| s.selector)
            .and_then(|s| s.get("io.stackc.track").cloned())
            .as_deref(),
        Some("green")
    );
    let again = real(d, &["apply"]);
    assert_eq!(again.code, 0);
    assert!(again.stdout.contains("No changes."), "{}", again.stdout);
    assert_eq!(real(d, &["drift"]).code, 0);
    assert_eq!(real(d, &["destroy", "--yes", "--volumes"]).code, 0);
    rt.block_on(ns_api.delete("stackc-e2e", &Default::default()))
        .ok();
}
