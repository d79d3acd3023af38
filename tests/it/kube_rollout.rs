//! Blue-green and canary rollouts on Kubernetes, against the fake API
//! server: the exact writes (object, replicas, selector, order), the
//! health gate reading the new track's Pods, rollback, pause, interrupt,
//! and a re-apply after success that writes nothing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use stackc::apply::kube::fake::{FakeApi, Recorded};
use stackc::apply::kube::{self as k, Desired, Options};
use stackc::apply::rollout as hist;
use stackc::profile::{KubeTarget, Profile};

use crate::support::root;

const STACK: &str = r#"
stack "roll" version="1.0.0"

network "roll" subnet="10.40.0.0/16" {
    tier "app" subnet="10.40.1.0/24"
}

service "web" tier="app" {
    image "web:1.0.0"
    cluster "active-active" replicas=3
    port 8080 published=8080 public=#true
    health http="/health" port=8080
    rollout "blue-green" {
        gate healthy-for="300ms" max-error-rate=0.05
        on-failure "rollback"
    }
}

service "api" tier="app" {
    image "api:1.0.0"
    cluster "active-active" replicas=3
    port 9000
    health http="/health" port=9000
    rollout "canary" {
        steps 25 50 100
        gate healthy-for="300ms" max-latency-p95="1s"
        on-failure "rollback"
    }
}

balancer "edge" tier="app" {
    listen 80 public=#true
    route "/" to="web"
    route "/api" to="api"
}
"#;

const NS: &str = "roll";

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

fn desired_of(text: &str) -> Desired {
    let c = stackc::check_str("stack.kdl", text, &root(), None);
    assert!(c.ok(), "the rollout topology checks: {:?}", c.diags);
    k::desired(&c.topology.unwrap(), &c.graph.unwrap(), &profile()).expect("desired")
}

/// The topology with `from` replaced by `to` (once, and it must be there).
fn changed(from: &str, to: &str) -> String {
    assert!(STACK.contains(from), "{from}");
    STACK.replacen(from, to, 1)
}

fn opts(state: &std::path::Path) -> Options {
    Options {
        poll: Duration::from_millis(5),
        timeout: Duration::from_secs(5),
        state_dir: Some(state.to_path_buf()),
        ..Options::default()
    }
}

fn prepared() -> FakeApi {
    let fake = FakeApi::new();
    fake.insert(
        "namespaces",
        "kubectl-create",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"io.stackc.stack": "roll", "io.stackc.owner": "stackc"}}}),
    );
    fake
}

/// What `stackc apply` does: read the live colours, plan, apply.
async fn apply(fake: &FakeApi, text: &str, o: &Options) -> Result<(k::Plan, k::Summary), k::Error> {
    let client = fake.client(NS);
    let mut d = desired_of(text);
    k::observe(&client, &mut d).await?;
    let (p, kinds) = k::plan(&client, &d, o).await?;
    let s = k::apply(&client, &d, &p, &kinds, o, &|_| {}).await?;
    Ok((p, s))
}

/// A cluster running the topology as first written.
async fn running(state: &std::path::Path) -> FakeApi {
    let fake = prepared();
    let (p, s) = apply(&fake, STACK, &opts(state))
        .await
        .expect("first apply");
    assert!(p.rollouts.is_empty(), "nothing ran yet: no rollout");
    assert!(s.created > 0);
    fake.clear_requests();
    fake
}

/// `PATCH deployments/web-green` for every write, with its body.
fn writes(fake: &FakeApi) -> Vec<(String, Value)> {
    fake.writes()
        .into_iter()
        .map(|r: Recorded| {
            let short = r
                .path
                .rsplit_once(&format!("/namespaces/{NS}/"))
                .map_or(r.path.clone(), |(_, rest)| rest.to_string());
            (format!("{} {short}", r.method), r.body)
        })
        .collect()
}

fn replicas(body: &Value) -> Option<i64> {
    body.pointer("/spec/replicas").and_then(Value::as_i64)
}

fn image(body: &Value) -> Option<&str> {
    body.pointer("/spec/template/spec/containers/0/image")
        .and_then(Value::as_str)
}

fn track(body: &Value) -> Option<&str> {
    body.pointer("/spec/selector/io.stackc.track")
        .and_then(Value::as_str)
}

fn live(fake: &FakeApi, plural: &str, name: &str) -> Value {
    fake.get(plural, NS, name)
        .unwrap_or_else(|| panic!("{plural}/{name} exists"))
}

async fn assert_no_op(fake: &FakeApi, text: &str, state: &std::path::Path) {
    fake.clear_requests();
    let (p, s) = apply(fake, text, &opts(state)).await.expect("re-apply");
    assert!(!p.has_changes(), "{}", k::render(&p));
    assert!(p.rollouts.is_empty());
    assert_eq!(s.created + s.updated + s.deleted, 0);
    assert!(fake.writes().is_empty(), "{:?}", writes(fake));
    let client = fake.client(NS);
    let mut d = desired_of(text);
    k::observe(&client, &mut d).await.unwrap();
    let (items, _) = k::drift(&client, &d, &[], &opts(state)).await.unwrap();
    assert!(items.is_empty(), "{items:?}");
}

#[tokio::test]
async fn kube_rollout_plan_shows_the_pending_switch_and_writes_nothing() {
    let state = tempfile::tempdir().unwrap();
    let fake = running(state.path()).await;
    let client = fake.client(NS);
    let mut d = desired_of(&changed("web:1.0.0", "web:2.0.0"));
    k::observe(&client, &mut d).await.unwrap();
    assert_eq!(d.active.get("web").map(String::as_str), Some("blue"));
    let (p, _) = k::plan(&client, &d, &opts(state.path())).await.unwrap();
    assert!(fake.writes().is_empty(), "plan only reads");
    assert_eq!(p.rollouts.len(), 1, "{}", k::render(&p));
    let r = &p.rollouts[0];
    assert_eq!((r.from.as_str(), r.to.as_str()), ("web-blue", "web-green"));
    // `plan --json` carries it.
    let j = serde_json::to_value(&p.rollouts).unwrap();
    assert_eq!(j[0]["switch"], json!(["blue", "green"]));
    assert_eq!(j[0]["services"], json!(["web", "web-public"]));
    assert_eq!(j[0]["measured_by"], json!(["edge"]));
    assert_eq!(r.services, vec!["web", "web-public"]);
    let text = k::render(&p);
    assert!(
        text.contains("  >> rollout web (blue-green): web:1.0.0 -> web:2.0.0\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "Deployment web-green: new template, replicas 0 -> 3; health gate 300ms without traffic"
        ),
        "{text}"
    );
    assert!(
        text.contains("switch Service web, web-public: selector io.stackc.track blue -> green"),
        "{text}"
    );
    assert!(
        text.contains("Deployment web-blue: replicas 3 -> 0"),
        "{text}"
    );
    // Blue-green behind a balancer: its access log measures the gates
    // after the switch.
    assert!(
        text.contains("health gate 300ms with all traffic, error rate and p95 from the access log of balancer edge"),
        "{text}"
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    // The canary's plan: pods per step, with the rounding said.
    let mut d = desired_of(&changed("api:1.0.0", "api:2.0.0"));
    k::observe(&client, &mut d).await.unwrap();
    let (p, _) = k::plan(&client, &d, &opts(state.path())).await.unwrap();
    let text = k::render(&p);
    // A canary's tracks share the Service address: not measured, said so.
    assert!(
        p.warnings.iter().any(|w| w.contains(
            "rollout of `api`: the max-error-rate and max-latency-p95 gates are not measured (a balancer reaches both tracks of a canary through one Service address"
        )),
        "{:?}",
        p.warnings
    );
    assert!(
        text.contains(
            "step 1/3 25%: Deployment api-canary replicas -> 1 beside 3 stable (25% of the pods)"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "step 2/3 50%: Deployment api-canary replicas -> 3 beside 3 stable (50% of the pods)"
        ),
        "{text}"
    );
    assert!(
        text.contains("step 3/3 100%: Deployment api gets the new template, then Deployment api-canary replicas -> 0"),
        "{text}"
    );
    assert!(fake.writes().is_empty(), "plan only reads");
}

#[tokio::test]
async fn kube_rollout_blue_green_switches_after_the_gate_then_reapply_is_a_no_op() {
    let state = tempfile::tempdir().unwrap();
    let fake = running(state.path()).await;
    let v2 = changed("web:1.0.0", "web:2.0.0");
    // Clients keep using the balancer: 20 fast answers once green serves.
    let clients = after_the_switch(&fake, 20, 200, "0.004");
    let (p, s) = apply(&fake, &v2, &opts(state.path()))
        .await
        .expect("rollout");
    clients.await.unwrap();
    assert_eq!(p.rollouts.len(), 1);
    assert_eq!(s.rollouts, 1);
    let w = writes(&fake);
    let names: Vec<&str> = w.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "PATCH deployments/web-green",
            "PATCH services/web",
            "PATCH services/web-public",
            "PATCH services/web-preview",
            "PATCH deployments/web-blue",
        ],
        "{w:#?}"
    );
    // Green: the new template at the service's replica count.
    assert_eq!(replicas(&w[0].1), Some(3));
    assert_eq!(image(&w[0].1), Some("web:2.0.0"));
    // The switch: each Service in one patch, selector and annotation.
    assert_eq!(track(&w[1].1), Some("green"));
    assert_eq!(
        w[1].1
            .pointer("/metadata/annotations/io.stackc.rollout~1active"),
        Some(&json!("green"))
    );
    assert_eq!(track(&w[2].1), Some("green"));
    assert_eq!(track(&w[3].1), Some("blue"));
    // Blue: scaled to 0 last.
    assert_eq!(replicas(&w[4].1), Some(0));
    // The gate read green's Pods between the scale-up and the switch.
    let all: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| {
            if r.is_write() {
                format!("write {}", r.line())
            } else {
                r.line()
            }
        })
        .collect();
    let at = |needle: &str| {
        all.iter()
            .position(|l| l.contains(needle))
            .unwrap_or(usize::MAX)
    };
    let pods = all
        .iter()
        .position(|l| {
            l.starts_with("GET /api/v1/namespaces/roll/pods?") && l.contains("track%3Dgreen")
        })
        .expect("the gate lists green's pods");
    assert!(at("write PATCH /apis/apps/v1/namespaces/roll/deployments/web-green") < pods);
    assert!(pods < at("write PATCH /api/v1/namespaces/roll/services/web?"));
    assert!(at("write PATCH /api/v1/namespaces/roll/services/web?") < usize::MAX);
    // The cluster: green serves, blue is gone.
    assert_eq!(track(&live(&fake, "services", "web")), Some("green"));
    assert_eq!(fake.pods(NS, "web-blue").len(), 0);
    assert_eq!(fake.pods(NS, "web-green").len(), 3);
    let h = hist::load_history(state.path(), "roll", "web");
    let a = h.attempts.last().unwrap();
    assert_eq!(a.outcome, "succeeded", "{a:?}");
    assert_eq!(
        (a.from_image.as_str(), a.to_image.as_str()),
        ("web:1.0.0", "web:2.0.0")
    );
    assert_eq!(
        a.steps.iter().map(|s| s.percent).collect::<Vec<_>>(),
        [0, 100]
    );
    // The gate after the switch measured the balancer's requests to web's
    // Service address (and not those to api's).
    assert_eq!(
        (a.steps[1].requests, a.steps[1].errors, a.steps[1].p95_ms),
        (20, 0, Some(4))
    );
    // Unchanged topology: nothing written, nothing flips back to blue.
    assert_no_op(&fake, &v2, state.path()).await;
    assert_eq!(track(&live(&fake, "services", "web")), Some("green"));
    // The next version goes the other way: to blue.
    fake.clear_requests();
    let v3 = changed("web:1.0.0", "web:3.0.0");
    apply(&fake, &v3, &opts(state.path()))
        .await
        .expect("second rollout");
    let w = writes(&fake);
    assert_eq!(w[0].0, "PATCH deployments/web-blue");
    assert_eq!(
        (replicas(&w[0].1), image(&w[0].1)),
        (Some(3), Some("web:3.0.0"))
    );
    assert_eq!(track(&live(&fake, "services", "web")), Some("blue"));
    assert_eq!(w.last().unwrap().0, "PATCH deployments/web-green");
    assert_eq!(replicas(&w.last().unwrap().1), Some(0));
    assert_no_op(&fake, &v3, state.path()).await;
}

#[tokio::test]
async fn kube_rollout_canary_scales_per_step_then_promotes_stable() {
    let state = tempfile::tempdir().unwrap();
    let fake = running(state.path()).await;
    let v2 = changed("api:1.0.0", "api:2.0.0");
    apply(&fake, &v2, &opts(state.path()))
        .await
        .expect("rollout");
    let w = writes(&fake);
    let got: Vec<(&str, Option<i64>, Option<&str>)> = w
        .iter()
        .map(|(n, b)| (n.as_str(), replicas(b), image(b)))
        .collect();
    assert_eq!(
        got,
        [
            ("PATCH deployments/api-canary", Some(1), Some("api:2.0.0")),
            ("PATCH deployments/api-canary", Some(3), Some("api:2.0.0")),
            ("PATCH deployments/api", Some(3), Some("api:2.0.0")),
            ("PATCH deployments/api-canary", Some(0), Some("api:2.0.0")),
        ],
        "{w:#?}"
    );
    // Each step's gate read the canary's Pods.
    let canary_reads = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/pods") && r.query.contains("track%3Dcanary"))
        .count();
    assert!(canary_reads >= 2, "{canary_reads}");
    let h = hist::load_history(state.path(), "roll", "api");
    let a = h.attempts.last().unwrap();
    assert_eq!(a.outcome, "succeeded", "{a:?}");
    assert_eq!(
        a.steps.iter().map(|s| s.percent).collect::<Vec<_>>(),
        [25, 50]
    );
    assert_eq!(fake.pods(NS, "api-canary").len(), 0);
    assert!(
        fake.pods(NS, "api")
            .iter()
            .all(|p| p.pointer("/spec/containers/0/image") == Some(&json!("api:2.0.0")))
    );
    assert_no_op(&fake, &v2, state.path()).await;
}

#[tokio::test]
async fn kube_rollout_failed_gate_rolls_back() {
    let state = tempfile::tempdir().unwrap();
    let fake = running(state.path()).await;
    // Blue-green: green's pods crash-loop; the gate before the switch
    // fails, no traffic ever moved.
    fake.crash_image("web:2.0.0");
    let v2 = changed("web:1.0.0", "web:2.0.0");
    let err = apply(&fake, &v2, &opts(state.path())).await.unwrap_err();
    assert!(err.message.contains("rollout of web rolled back"), "{err}");
    assert!(err.message.contains("restarted 1 time(s)"), "{err}");
    assert!(err.message.contains("CrashLoopBackOff"), "{err}");
    let w = writes(&fake);
    let got: Vec<(&str, Option<i64>)> = w.iter().map(|(n, b)| (n.as_str(), replicas(b))).collect();
    assert_eq!(
        got,
        [
            ("PATCH deployments/web-green", Some(3)),
            ("PATCH deployments/web-green", Some(0)),
        ],
        "{w:#?}"
    );
    assert_eq!(track(&live(&fake, "services", "web")), Some("blue"));
    let a = hist::load_history(state.path(), "roll", "web")
        .attempts
        .pop()
        .unwrap();
    assert_eq!(a.outcome, "rolled back");
    // Canary: the first step's gate fails; the canary goes back to 0 and
    // the stable Deployment keeps its version.
    fake.clear_requests();
    fake.crash_image("api:2.0.0");
    let v2 = changed("api:1.0.0", "api:2.0.0");
    let err = apply(&fake, &v2, &opts(state.path())).await.unwrap_err();
    assert!(
        err.message
            .contains("rollout of api rolled back: at step 1/3 25%"),
        "{err}"
    );
    // (web-green, left at 0 with the version that failed, gets the
    // topology's version back by a plain update.)
    let w: Vec<(String, Value)> = writes(&fake)
        .into_iter()
        .filter(|(n, _)| n != "PATCH deployments/web-green")
        .collect();
    let got: Vec<(&str, Option<i64>)> = w.iter().map(|(n, b)| (n.as_str(), replicas(b))).collect();
    assert_eq!(
        got,
        [
            ("PATCH deployments/api-canary", Some(1)),
            ("PATCH deployments/api-canary", Some(0)),
        ],
        "{w:#?}"
    );
    assert_eq!(image(&live(&fake, "deployments", "api")), Some("api:1.0.0"));
}

#[tokio::test]
async fn kube_rollout_interrupt_after_the_switch_returns_traffic_to_stable() {
    let state = tempfile::tempdir().unwrap();
    let fake = running(state.path()).await;
    let o = Options {
        ..opts(state.path())
    };
    let cancel = o.cancel.clone();
    // Ctrl-C as soon as the switch was written (during the gate after it).
    let watcher = {
        let fake = fake.clone();
        tokio::spawn(async move {
            loop {
                if fake
                    .writes()
                    .iter()
                    .any(|r| r.path.ends_with("/services/web-preview"))
                {
                    cancel.store(true, Ordering::SeqCst);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let v2 = changed("web:1.0.0", "web:2.0.0");
    let err = apply(&fake, &v2, &o).await.unwrap_err();
    watcher.await.unwrap();
    assert!(err.message.contains("rollout of web interrupted"), "{err}");
    let w = writes(&fake);
    let got: Vec<(&str, Option<&str>, Option<i64>)> = w
        .iter()
        .map(|(n, b)| (n.as_str(), track(b), replicas(b)))
        .collect();
    assert_eq!(
        got,
        [
            ("PATCH deployments/web-green", None, Some(3)),
            ("PATCH services/web", Some("green"), None),
            ("PATCH services/web-public", Some("green"), None),
            ("PATCH services/web-preview", Some("blue"), None),
            ("PATCH services/web", Some("blue"), None),
            ("PATCH services/web-public", Some("blue"), None),
            ("PATCH services/web-preview", Some("green"), None),
            ("PATCH deployments/web-green", None, Some(0)),
        ],
        "{w:#?}"
    );
    assert_eq!(fake.pods(NS, "web-blue").len(), 3);
    let a = hist::load_history(state.path(), "roll", "web")
        .attempts
        .pop()
        .unwrap();
    assert_eq!(a.outcome, "interrupted");
}

#[tokio::test]
async fn kube_rollout_pause_on_failure_waits_for_the_operator() {
    let state = tempfile::tempdir().unwrap();
    let text = STACK.replacen(
        "steps 25 50 100\n        gate healthy-for=\"300ms\" max-latency-p95=\"1s\"\n        on-failure \"rollback\"",
        "steps 25 50 100\n        gate healthy-for=\"300ms\" max-latency-p95=\"1s\"\n        on-failure \"pause\"",
        1,
    );
    assert_ne!(text, STACK);
    let fake = prepared();
    apply(&fake, &text, &opts(state.path()))
        .await
        .expect("first apply");
    fake.clear_requests();
    fake.crash_image("api:2.0.0");
    // The operator looks at the paused rollout, then aborts it.
    let operator = {
        let dir = state.path().to_path_buf();
        tokio::spawn(async move {
            loop {
                let h = hist::load_history(&dir, "roll", "api");
                if h.attempts.last().is_some_and(|a| a.outcome == "paused") {
                    let a = h.attempts.last().unwrap();
                    assert!(
                        a.reason.as_ref().unwrap().contains("at step 1/3 25%"),
                        "{a:?}"
                    );
                    hist::send_control(&dir, "roll", "api", "abort").unwrap();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let v2 = text.replacen("api:1.0.0", "api:2.0.0", 1);
    let err = apply(&fake, &v2, &opts(state.path())).await.unwrap_err();
    operator.await.unwrap();
    assert!(err.message.contains("rollout of api aborted"), "{err}");
    let got: Vec<(String, Option<i64>)> = writes(&fake)
        .into_iter()
        .map(|(n, b)| (n, replicas(&b)))
        .collect();
    assert_eq!(
        got,
        [
            ("PATCH deployments/api-canary".to_string(), Some(1)),
            ("PATCH deployments/api-canary".to_string(), Some(0)),
        ]
    );
    let a = hist::load_history(state.path(), "roll", "api")
        .attempts
        .pop()
        .unwrap();
    assert_eq!(a.outcome, "aborted");
}

/// The topology with blue-green keep-previous for `web`.
fn keeping(duration: &str) -> String {
    changed(
        "on-failure \"rollback\"\n    }\n}\n\nservice \"api\"",
        &format!(
            "on-failure \"rollback\"\n        keep-previous \"{duration}\"\n    }}\n}}\n\nservice \"api\""
        ),
    )
}

#[tokio::test]
async fn kube_rollout_keep_previous_keeps_the_old_colour_and_undo_returns_to_it() {
    let state = tempfile::tempdir().unwrap();
    let text = keeping("30m");
    let fake = prepared();
    apply(&fake, &text, &opts(state.path()))
        .await
        .expect("first apply");
    fake.clear_requests();
    let v2 = text.replacen("web:1.0.0", "web:2.0.0", 1);
    let (p, _) = apply(&fake, &v2, &opts(state.path()))
        .await
        .expect("rollout");
    assert!(
        k::render(&p).contains("Deployment web-blue: kept 1800s without traffic (keep-previous), for `stackc rollout undo web`"),
        "{}",
        k::render(&p)
    );
    let w = writes(&fake);
    let names: Vec<&str> = w.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "PATCH deployments/web-green",
            "PATCH services/web",
            "PATCH services/web-public",
            "PATCH services/web-preview",
            "PATCH services/web",
        ],
        "blue is not scaled down: {w:#?}"
    );
    let until = w[4]
        .1
        .pointer("/metadata/annotations/io.stackc.rollout~1previous-kept-until")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<u64>().ok())
        .expect("the Service says until when");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(until > now + 1790 && until <= now + 1800, "{until} {now}");
    assert_eq!(track(&w[4].1), Some("green"));
    assert_eq!(fake.pods(NS, "web-blue").len(), 3);
    let a = hist::load_history(state.path(), "roll", "web")
        .attempts
        .pop()
        .unwrap();
    assert_eq!(
        (a.outcome.as_str(), a.kept_until),
        ("succeeded", Some(until))
    );
    // While kept: no change, no write, no drift; plan says it is kept.
    assert_no_op(&fake, &v2, state.path()).await;
    let client = fake.client(NS);
    let mut d = desired_of(&v2);
    k::observe(&client, &mut d).await.unwrap();
    let (p, _) = k::plan(&client, &d, &opts(state.path())).await.unwrap();
    let text_plan = k::render(&p);
    assert!(
        text_plan.contains("=  Deployment web-blue [")
            && text_plan.contains("previous version kept until"),
        "{text_plan}"
    );
    // Undo: traffic back on blue at once, then green to 0.
    fake.clear_requests();
    k::rollout::undo(
        &client,
        &d,
        "web",
        state.path(),
        &opts(state.path()),
        &|_| {},
    )
    .await
    .expect("undo");
    let w = writes(&fake);
    let got: Vec<(&str, Option<&str>, Option<i64>)> = w
        .iter()
        .map(|(n, b)| (n.as_str(), track(b), replicas(b)))
        .collect();
    assert_eq!(
        got,
        [
            ("PATCH services/web", Some("blue"), None),
            ("PATCH services/web-public", Some("blue"), None),
            ("PATCH services/web-preview", Some("green"), None),
            ("PATCH deployments/web-green", None, Some(0)),
        ],
        "{w:#?}"
    );
    assert!(
        w[0].1
            .pointer("/metadata/annotations/io.stackc.rollout~1previous-kept-until")
            .is_none()
    );
    assert!(
        fake.pods(NS, "web-blue")
            .iter()
            .all(|p| p.pointer("/spec/containers/0/image") == Some(&json!("web:1.0.0")))
    );
    let a = hist::load_history(state.path(), "roll", "web")
        .attempts
        .pop()
        .unwrap();
    assert_eq!(
        (
            a.strategy.as_str(),
            a.from_image.as_str(),
            a.to_image.as_str()
        ),
        ("undo", "web:2.0.0", "web:1.0.0")
    );
    // Nothing is kept any more; the topology still names 2.0.0: the next
    // apply rolls it out again.
    let mut d = desired_of(&v2);
    k::observe(&client, &mut d).await.unwrap();
    let err = k::rollout::undo(
        &client,
        &d,
        "web",
        state.path(),
        &opts(state.path()),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(
        err.message.contains("no previous version of `web` is kept"),
        "{err}"
    );
    let (p, _) = k::plan(&client, &d, &opts(state.path())).await.unwrap();
    assert_eq!(p.rollouts.len(), 1, "{}", k::render(&p));
    assert_eq!(p.rollouts[0].switch, Some(("blue".into(), "green".into())));
}

#[tokio::test]
async fn kube_rollout_kept_colour_is_scaled_down_once_its_time_is_up() {
    let state = tempfile::tempdir().unwrap();
    let text = keeping("1s");
    let fake = prepared();
    apply(&fake, &text, &opts(state.path()))
        .await
        .expect("first apply");
    let v2 = text.replacen("web:1.0.0", "web:2.0.0", 1);
    apply(&fake, &v2, &opts(state.path()))
        .await
        .expect("rollout");
    assert_eq!(fake.pods(NS, "web-blue").len(), 3);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    fake.clear_requests();
    let (p, _) = apply(&fake, &v2, &opts(state.path())).await.expect("apply");
    assert!(p.rollouts.is_empty());
    let w = writes(&fake);
    let mut names: Vec<&str> = w.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["PATCH deployments/web-blue", "PATCH services/web"],
        "{w:#?}"
    );
    assert_eq!(fake.pods(NS, "web-blue").len(), 0);
    assert_no_op(&fake, &v2, state.path()).await;
}

#[tokio::test]
async fn kube_rollout_abort_after_a_killed_apply_returns_traffic_to_stable() {
    let state = tempfile::tempdir().unwrap();
    let fake = running(state.path()).await;
    // stackc is killed (the task dropped, nothing runs after) once the
    // switch to green was sent.
    let v2 = changed("web:1.0.0", "web:2.0.0");
    let task = {
        let (fake, v2, o) = (fake.clone(), v2.clone(), opts(state.path()));
        tokio::spawn(async move { apply(&fake, &v2, &o).await.map(|_| ()) })
    };
    while !fake
        .writes()
        .iter()
        .any(|r| r.path.ends_with("/services/web-preview"))
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(track(&live(&fake, "services", "web")), Some("green"));
    let a = hist::load_history(state.path(), "roll", "web")
        .attempts
        .pop()
        .unwrap();
    assert_eq!(
        (a.outcome.as_str(), a.track.as_deref()),
        ("running", Some("green"))
    );
    // `stackc rollout abort web` without its apply.
    fake.clear_requests();
    let client = fake.client(NS);
    let mut d = desired_of(&v2);
    k::observe(&client, &mut d).await.unwrap();
    k::rollout::abort_stopped(&client, &mut d, "web", state.path(), &opts(state.path()))
        .await
        .expect("abort");
    let got: Vec<(String, Option<String>, Option<i64>)> = writes(&fake)
        .into_iter()
        .map(|(n, b)| (n, track(&b).map(str::to_string), replicas(&b)))
        .collect();
    let want: Vec<(String, Option<String>, Option<i64>)> = [
        ("PATCH services/web", Some("blue"), None),
        ("PATCH services/web-public", Some("blue"), None),
        ("PATCH services/web-preview", Some("green"), None),
        ("PATCH deployments/web-green", None, Some(0)),
    ]
    .into_iter()
    .map(|(n, t, r)| (n.to_string(), t.map(str::to_string), r))
    .collect();
    assert_eq!(got, want);
    assert_eq!(fake.pods(NS, "web-blue").len(), 3);
    let a = hist::load_history(state.path(), "roll", "web")
        .attempts
        .pop()
        .unwrap();
    assert_eq!(a.outcome, "aborted");
    // The next apply starts the rollout over.
    let (p, _) = apply(&fake, &v2, &opts(state.path())).await.expect("again");
    assert_eq!(p.rollouts.len(), 1);
    let h = hist::load_history(state.path(), "roll", "web");
    assert_eq!(h.attempts.last().unwrap().outcome, "succeeded");
}

#[test]
fn kube_rollout_cli_reads_the_history_on_a_kubernetes_target() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stack.kdl"), STACK).unwrap();
    std::fs::create_dir(dir.path().join("targets")).unwrap();
    std::fs::write(
        dir.path().join("targets/cluster.kdl"),
        "target \"cluster\" {\n    kubernetes field-manager=\"stackc\"\n    state-dir \".stackc\"\n}\n",
    )
    .unwrap();
    let state = dir.path().join(".stackc");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let fake = prepared();
        apply(&fake, STACK, &opts(&state)).await.unwrap();
        let v2 = changed("api:1.0.0", "api:2.0.0");
        apply(&fake, &v2, &opts(&state)).await.unwrap();
    });
    let run = |args: &[&str]| {
        crate::support::run(
            crate::support::stackc()
                .current_dir(dir.path())
                .args(args)
                .args(["stack.kdl", "--target", "cluster"]),
        )
    };
    let r = run(&["rollout", "history", "api"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("#1 canary api:1.0.0 -> api:2.0.0: succeeded"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(" 25%: "), "{}", r.stdout);
    let r = run(&["rollout", "status", "api", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["attempts"][0]["outcome"], json!("succeeded"));
    assert_eq!(v["attempts"][0]["track"], json!("canary"));
    // Nothing runs: nothing to steer.
    let r = run(&["rollout", "pause", "api"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no rollout of `api` is running"),
        "{}",
        r.stderr
    );
}

/// Once the switch of `web` was sent, the balancer's pod logs `n`
/// requests to web's Service address with `status`, and as many to api's
/// (which must not count).
fn after_the_switch(
    fake: &FakeApi,
    n: usize,
    status: u16,
    time: &str,
) -> tokio::task::JoinHandle<()> {
    let (fake, time) = (fake.clone(), time.to_string());
    tokio::spawn(async move {
        while !fake
            .writes()
            .iter()
            .any(|r| r.path.ends_with("/services/web-preview"))
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ip = |svc: &str| {
            fake.get("services", NS, svc)
                .and_then(|v| v.pointer("/spec/clusterIP").cloned())
                .and_then(|v| v.as_str().map(str::to_string))
                .expect("a cluster IP")
        };
        let (web, api) = (ip("web"), ip("api"));
        assert_ne!(web, api);
        let pod = fake.pods(NS, "edge")[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        for _ in 0..n {
            for (addr, port, code) in [(&web, 8080, status), (&api, 9000, 500)] {
                fake.log(
                    NS,
                    &pod,
                    &format!(
                        r#"10.0.0.1 [2026-01-01T00:00:00+00:00] "GET / HTTP/1.1" {code} 9 upstream={addr}:{port} upstream_status={code} request_time={time} upstream_time={time}"#
                    ),
                );
            }
        }
    })
}

#[tokio::test]
async fn kube_rollout_error_rate_from_the_balancer_log_rolls_back_after_the_switch() {
    let state = tempfile::tempdir().unwrap();
    let fake = running(state.path()).await;
    let v2 = changed("web:1.0.0", "web:2.0.0");
    // Green is ready and does not restart, but answers 5xx.
    let clients = after_the_switch(&fake, 10, 503, "0.002");
    let err = apply(&fake, &v2, &opts(state.path())).await.unwrap_err();
    clients.await.unwrap();
    assert!(
        err.message.contains(
            "rollout of web rolled back: at the gate after the switch to green: error rate 1.000 above the gate 0.05 (10 of 10 requests)"
        ),
        "{err}"
    );
    let got: Vec<(String, Option<String>, Option<i64>)> = writes(&fake)
        .into_iter()
        .map(|(n, b)| (n, track(&b).map(str::to_string), replicas(&b)))
        .collect();
    let want: Vec<(String, Option<String>, Option<i64>)> = [
        ("PATCH deployments/web-green", None, Some(3)),
        ("PATCH services/web", Some("green"), None),
        ("PATCH services/web-public", Some("green"), None),
        ("PATCH services/web-preview", Some("blue"), None),
        ("PATCH services/web", Some("blue"), None),
        ("PATCH services/web-public", Some("blue"), None),
        ("PATCH services/web-preview", Some("green"), None),
        ("PATCH deployments/web-green", None, Some(0)),
    ]
    .into_iter()
    .map(|(n, t, r)| (n.to_string(), t.map(str::to_string), r))
    .collect();
    assert_eq!(got, want);
    // The balancer's log was read through the API.
    assert!(fake.requests().iter().any(|r| {
        r.path.starts_with("/api/v1/namespaces/roll/pods/edge-")
            && r.path.ends_with("/log")
            && r.query.contains("timestamps=true")
    }));
    let a = hist::load_history(state.path(), "roll", "web")
        .attempts
        .pop()
        .unwrap();
    assert_eq!(a.outcome, "rolled back");
    assert_eq!((a.steps[1].requests, a.steps[1].errors), (10, 10));
}

/// stackc killed right after its `n`-th write of the rollout from STACK
/// to `next`: the write after it never happens. Returns whether the
/// rollout had finished before.
async fn killed_after(fake: &FakeApi, next: &str, n: usize, state: &std::path::Path) -> bool {
    fake.clear_requests();
    fake.stall_writes_after(n);
    let task = {
        let (fake, next, o) = (fake.clone(), next.to_string(), opts(state));
        tokio::spawn(async move { apply(&fake, &next, &o).await.map(|_| ()) })
    };
    while !fake.stalled() && !task.is_finished() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let finished = task.is_finished();
    task.abort();
    let _ = task.await;
    fake.unstall();
    assert_eq!(
        fake.writes().len(),
        n,
        "exactly {n} write(s) reached the server"
    );
    finished
}

/// The next apply (as the CLI runs it: then the history is settled)
/// converges: the new version serves, the other track is at 0, and an
/// apply after it changes nothing.
async fn converges(
    fake: &FakeApi,
    next: &str,
    state: &std::path::Path,
    service: &str,
    interrupted: bool,
) {
    apply(fake, next, &opts(state))
        .await
        .expect("the next apply");
    let client = fake.client(NS);
    let mut d = desired_of(next);
    k::observe(&client, &mut d).await.unwrap();
    k::rollout::settle(state, &d).unwrap();
    assert_no_op(fake, next, state).await;
    let h = hist::load_history(state, "roll", service);
    let outcomes: Vec<&str> = h.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes.last(), Some(&"succeeded"), "{outcomes:?}");
    assert!(
        !outcomes.contains(&"running") && !outcomes.contains(&"paused"),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.contains(&"interrupted"),
        interrupted,
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn kube_rollout_killed_after_every_write_the_next_apply_converges() {
    // Blue-green: green up, web, web-public, web-preview, blue down.
    let v2 = changed("web:1.0.0", "web:2.0.0");
    for n in 0..=5 {
        let state = tempfile::tempdir().unwrap();
        let fake = running(state.path()).await;
        let finished = killed_after(&fake, &v2, n, state.path()).await;
        assert_eq!(finished, n == 5, "blue-green killed after write {n}");
        converges(&fake, &v2, state.path(), "web", !finished).await;
        assert_eq!(track(&live(&fake, "services", "web")), Some("green"), "{n}");
        assert_eq!(
            track(&live(&fake, "services", "web-public")),
            Some("green"),
            "{n}"
        );
        assert_eq!(
            track(&live(&fake, "services", "web-preview")),
            Some("blue"),
            "{n}"
        );
        assert_eq!(fake.pods(NS, "web-blue").len(), 0, "{n}");
        let green = fake.pods(NS, "web-green");
        assert_eq!(green.len(), 3, "{n}");
        assert!(
            green
                .iter()
                .all(|p| p.pointer("/spec/containers/0/image") == Some(&json!("web:2.0.0")))
        );
    }
    // Canary: 1 canary pod, 3, stable updated, canary down.
    let v2 = changed("api:1.0.0", "api:2.0.0");
    for n in 0..=4 {
        let state = tempfile::tempdir().unwrap();
        let fake = running(state.path()).await;
        let finished = killed_after(&fake, &v2, n, state.path()).await;
        assert_eq!(finished, n == 4, "canary killed after write {n}");
        converges(&fake, &v2, state.path(), "api", !finished).await;
        assert_eq!(fake.pods(NS, "api-canary").len(), 0, "{n}");
        let stable = fake.pods(NS, "api");
        assert_eq!(stable.len(), 3, "{n}");
        assert!(
            stable
                .iter()
                .all(|p| p.pointer("/spec/containers/0/image") == Some(&json!("api:2.0.0")))
        );
    }
}

#[tokio::test]
async fn kube_rollout_new_colour_never_available_moves_no_traffic() {
    let state = tempfile::tempdir().unwrap();
    let fake = running(state.path()).await;
    fake.never_ready("web-green");
    let v2 = changed("web:1.0.0", "web:2.0.0");
    let o = Options {
        timeout: Duration::from_millis(300),
        ..opts(state.path())
    };
    let err = apply(&fake, &v2, &o).await.unwrap_err();
    // The apply's availability wait and its message.
    assert!(
        err.message.starts_with(
            "rollout of web rolled back: the new version did not become available: Deployment web-green in namespace `roll` was not available after 0s: 0/3 ready"
        ),
        "{err}"
    );
    assert!(err.message.contains("MinimumReplicasUnavailable"), "{err}");
    let got: Vec<(String, Option<i64>)> = writes(&fake)
        .into_iter()
        .map(|(n, b)| (n, replicas(&b)))
        .collect();
    assert_eq!(
        got,
        [
            ("PATCH deployments/web-green".to_string(), Some(3)),
            ("PATCH deployments/web-green".to_string(), Some(0)),
        ]
    );
    assert_eq!(track(&live(&fake, "services", "web")), Some("blue"));
}
