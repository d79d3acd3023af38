//! Kubernetes plan, apply and no-op apply of a topology against the
//! in-process fake API server (`bench/kube` runs it on the generated
//! 10,000-service topology). Prints the wall time of each step and the
//! number of requests it sent, and the most that were in flight at once.
//!
//! cargo bench --bench kube -- TOPOLOGY.kdl
//!
//! `STACKC_BENCH_CONCURRENCY=N` sets the requests in flight (default: the
//! profile default, 16); `STACKC_BENCH_DELAY_MS=D` makes the fake answer
//! each request after D to 3D ms, as a remote API server would.

use std::time::{Duration, Instant};

use serde_json::json;
use stackc::apply::kube::{self as k, fake::FakeApi};
use stackc::profile::{KubeTarget, Profile};

fn main() {
    let path = std::env::args()
        .skip(1)
        .find(|a| a.ends_with(".kdl"))
        .unwrap_or_else(|| "examples/chat-microservices/stack.kdl".into());
    let t0 = Instant::now();
    let checked = stackc::check_file(std::path::Path::new(&path), None);
    let (Some(t), Some(g)) = (checked.topology, checked.graph) else {
        eprintln!("{path}: the topology has errors");
        std::process::exit(1);
    };
    let profile = Profile {
        name: "bench".into(),
        kubernetes: Some(KubeTarget {
            context: None,
            in_cluster: false,
            namespace: None,
            field_manager: "stackc".into(),
            concurrency: stackc::profile::CONCURRENCY,
        }),
        ..Profile::local()
    };
    let desired = k::desired(&t, &g, &profile).expect("desired");
    println!(
        "{path}: {} services, {} objects in {} stages; check + manifests {:.2}s",
        t.services.len(),
        desired.objects.len(),
        desired.stages.len(),
        t0.elapsed().as_secs_f64()
    );
    let fake = FakeApi::new();
    fake.insert(
        "namespaces",
        "kubectl-create",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": desired.namespace,
            "labels": {"io.stackc.stack": desired.stack, "io.stackc.owner": "stackc"}}}),
    );
    for s in &desired.secrets {
        fake.insert(
            "secrets",
            "kubectl-create",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": s.name, "namespace": desired.namespace}}),
        );
    }
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let opts = k::Options {
        poll: Duration::from_millis(1),
        concurrency: env("STACKC_BENCH_CONCURRENCY")
            .map_or(stackc::profile::CONCURRENCY, |n| n.max(1) as usize),
        ..k::Options::default()
    };
    let delay = env("STACKC_BENCH_DELAY_MS");
    if let Some(ms) = delay {
        fake.delay(Duration::from_millis(ms));
    }
    println!(
        "concurrency {}, answers {}",
        opts.concurrency,
        delay.map_or("at once".to_string(), |ms| format!(
            "after {ms} to {} ms",
            3 * ms
        ))
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The client's request buffer is a task of the runtime.
    let _guard = rt.enter();
    let client = fake.client(&desired.namespace);
    let step = |name: &str, f: &dyn Fn() -> (bool, usize)| {
        fake.clear_requests();
        let t = Instant::now();
        let (changes, _) = f();
        let secs = t.elapsed().as_secs_f64();
        let reqs = fake.requests();
        let writes = reqs.iter().filter(|r| r.is_write()).count();
        println!(
            "{name:<28} {secs:>7.2}s  {:>7} requests ({writes} writes, at most {} in flight){}",
            reqs.len(),
            fake.max_in_flight(),
            if changes { "" } else { "  no changes" }
        );
    };
    step("plan (empty cluster)", &|| {
        let (p, _) = rt
            .block_on(k::plan(&client, &desired, &opts))
            .expect("plan");
        (p.has_changes(), 0)
    });
    step("apply (create everything)", &|| {
        rt.block_on(async {
            let (p, kinds) = k::plan(&client, &desired, &opts).await.expect("plan");
            k::apply(&client, &desired, &p, &kinds, &opts, &|_| {})
                .await
                .expect("apply");
            (p.has_changes(), 0)
        })
    });
    step("plan (in sync)", &|| {
        let (p, _) = rt
            .block_on(k::plan(&client, &desired, &opts))
            .expect("plan");
        (p.has_changes(), 0)
    });
    step("apply (no-op)", &|| {
        rt.block_on(async {
            let (p, kinds) = k::plan(&client, &desired, &opts).await.expect("plan");
            assert!(!p.has_changes());
            k::apply(&client, &desired, &p, &kinds, &opts, &|_| {})
                .await
                .expect("apply");
            (p.has_changes(), 0)
        })
    });
}
