//! `plan`, `apply`, `drift` and `destroy` for a Kubernetes target profile:
//! connect with the profile's kubeconfig context (or in-cluster), then let
//! [`crate::apply::kube`] do the work. Same exit codes as the Docker
//! target: 0 success / no changes, 1 error, 2 changes (`--detailed-exitcode`,
//! `drift`), 130 interrupted. Rollouts of the two-Deployment form run
//! inside apply ([`crate::apply::kube::rollout`]); `stackc rollout abort`
//! without a running apply is [`rollout_abort_stopped`], `rollout undo`
//! [`rollout_undo`]; status, history and the commands a running rollout
//! reads go through `super::engine::run_rollout`, as for Docker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::engine::Context;
use super::{Input, Ui};
use crate::apply::kube::{self as k, Desired, Options};
use crate::apply::lock::Lock;
use crate::profile::KubeTarget;

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// A client for the profile's cluster.
pub async fn connect(target: &KubeTarget, namespace: &str) -> Result<kube::Client, String> {
    let mut config = if target.in_cluster {
        kube::Config::incluster()
            .map_err(|e| format!("cannot use the in-cluster service account: {e}"))?
    } else {
        let opts = kube::config::KubeConfigOptions {
            context: target.context.clone(),
            ..Default::default()
        };
        kube::Config::from_kubeconfig(&opts).await.map_err(|e| {
            format!(
                "cannot load the kubeconfig{}: {e}",
                target
                    .context
                    .as_ref()
                    .map(|c| format!(" (context `{c}`)"))
                    .unwrap_or_default()
            )
        })?
    };
    config.default_namespace = namespace.to_string();
    kube::Client::try_from(config).map_err(|e| format!("cannot create a Kubernetes client: {e}"))
}

fn setup(cx: &Context) -> Option<(Desired, KubeTarget)> {
    let target = cx.profile.kubernetes.clone()?;
    match k::desired(&cx.topology, &cx.graph, &cx.profile) {
        Ok(d) => Some((d, target)),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

/// The stack's lock for `what`, or `None` after saying who holds it.
fn lock(cx: &Context, stack: &str, what: &str) -> Option<Lock> {
    Lock::acquire(&cx.state_dir, stack, what)
        .map_err(|e| eprintln!("error: {e}"))
        .ok()
}

fn options(target: &KubeTarget) -> Options {
    Options {
        field_manager: target.field_manager.clone(),
        concurrency: target.concurrency,
        ..Options::default()
    }
}

pub fn run_plan(cx: &Context, json: bool, detailed: bool, prune: bool, force: bool) -> u8 {
    let Some((mut desired, target)) = setup(cx) else {
        return 1;
    };
    let Some(rt) = runtime() else { return 1 };
    let opts = Options {
        prune,
        force_conflicts: force,
        ..options(&target)
    };
    let result = rt.block_on(async {
        let client = connect(&target, &desired.namespace).await?;
        k::observe(&client, &mut desired)
            .await
            .map_err(|e| e.to_string())?;
        k::plan(&client, &desired, &opts)
            .await
            .map_err(|e| e.to_string())
    });
    let plan = match result {
        Ok((p, _)) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "stack": plan.stack,
                "target": "kubernetes",
                "namespace": plan.namespace,
                "changes": plan.changes,
                "rollouts": plan.rollouts,
                "warnings": plan.warnings,
                "errors": plan.errors,
                "has_changes": plan.has_changes(),
            }))
            .expect("json")
        );
    } else {
        print!("{}", k::render(&plan));
    }
    if !plan.errors.is_empty() {
        return 1;
    }
    if detailed && plan.has_changes() { 2 } else { 0 }
}

pub fn run_apply(cx: &Context, prune: bool, force: bool, timeout_secs: u64) -> u8 {
    let started = Instant::now();
    let Some((mut desired, target)) = setup(cx) else {
        return 1;
    };
    let Some(_lock) = lock(cx, &desired.stack, "stackc apply") else {
        return 1;
    };
    let Some(rt) = runtime() else { return 1 };
    let cancel = Arc::new(AtomicBool::new(false));
    let opts = Options {
        prune,
        force_conflicts: force,
        timeout: Duration::from_secs(timeout_secs),
        state_dir: Some(cx.state_dir.clone()),
        cancel: cancel.clone(),
        ..options(&target)
    };
    // Live rollout lines (`~ `) at most every 5 seconds.
    let last_live = std::sync::Mutex::new(None::<Instant>);
    let progress = |line: String| {
        if let Some(live) = line.strip_prefix("~ ") {
            let mut last = last_live.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed().as_secs() < 5) {
                return;
            }
            *last = Some(Instant::now());
            tracing::info!("{live}");
            eprintln!("  {live}");
            return;
        }
        tracing::info!("{line}");
        eprintln!("{line}");
    };
    let result = rt.block_on(async {
        let flag = cancel.clone();
        // Ctrl-C: the request in flight finishes; a running rollout returns
        // traffic to stable; nothing new starts.
        let watcher = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupt: finishing the requests in flight, then stopping");
                flag.store(true, Ordering::SeqCst);
            }
        });
        let r = apply_inner(&target, &mut desired, &opts, &progress).await;
        watcher.abort();
        r
    });
    if result.is_ok()
        && let Err(e) = k::rollout::settle(&cx.state_dir, &desired)
    {
        eprintln!("warning: rollout history: {e}");
    }
    match result {
        Ok(None) => {
            println!("No changes. The cluster matches the topology.");
            0
        }
        Ok(Some(s)) => {
            println!(
                "Apply complete: {} created, {} updated, {} deleted, {} unchanged{}{} in {:.1}s.",
                s.created,
                s.updated,
                s.deleted,
                s.unchanged,
                if s.skipped > 0 {
                    format!(", {} skipped (API not served)", s.skipped)
                } else {
                    String::new()
                },
                if s.rollouts > 0 {
                    format!(", {} rollout(s)", s.rollouts)
                } else {
                    String::new()
                },
                started.elapsed().as_secs_f64()
            );
            0
        }
        Err(e) if cancel.load(Ordering::SeqCst) => {
            eprintln!("error: {e}");
            eprintln!(
                "interrupted: the cluster keeps what was done so far; run `stackc apply` again to converge"
            );
            130
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn apply_inner(
    target: &KubeTarget,
    desired: &mut Desired,
    opts: &Options,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Option<k::Summary>, String> {
    let client = connect(target, &desired.namespace).await?;
    // The live colours first: the manifests are compared as the cluster
    // runs them.
    k::observe(&client, desired)
        .await
        .map_err(|e| e.to_string())?;
    let desired: &Desired = desired;
    let (plan, kinds) = k::plan(&client, desired, opts)
        .await
        .map_err(|e| e.to_string())?;
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    if !plan.errors.is_empty() {
        return Err(format!(
            "nothing was changed:\n{}",
            plan.errors
                .iter()
                .map(|e| format!("  {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    if !plan.has_changes() {
        return Ok(None);
    }
    print!("{}", k::render(&plan));
    k::apply(&client, desired, &plan, &kinds, opts, progress)
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

pub fn run_drift(ui: &Ui, input: &Input, cx: &Context, json: bool) -> u8 {
    let Some((mut desired, target)) = setup(cx) else {
        return 1;
    };
    let Some(rt) = runtime() else { return 1 };
    let opts = options(&target);
    let result = rt.block_on(async {
        let client = connect(&target, &desired.namespace).await?;
        k::observe(&client, &mut desired)
            .await
            .map_err(|e| e.to_string())?;
        k::drift(&client, &desired, &cx.topology.drift_ignore, &opts)
            .await
            .map_err(|e| e.to_string())
    });
    let (mut items, warnings) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    match super::engine::artifact_drift(ui, input) {
        Ok(a) => items.extend(a),
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    }
    super::engine::report_drift(&items, json, "the cluster")
}

pub fn run_destroy(cx: &Context, volumes: bool) -> u8 {
    let started = Instant::now();
    let Some((desired, target)) = setup(cx) else {
        return 1;
    };
    let Some(_lock) = lock(cx, &desired.stack, "stackc destroy") else {
        return 1;
    };
    let Some(rt) = runtime() else { return 1 };
    let progress = |line: String| eprintln!("{line}");
    let result = rt.block_on(async {
        let client = connect(&target, &desired.namespace).await?;
        k::destroy(&client, &desired, volumes, &options(&target), &progress)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(d) => {
            println!(
                "Destroy complete: {} objects removed in {:.1}s{}{}.",
                d.deleted,
                started.elapsed().as_secs_f64(),
                if d.claims_kept > 0 {
                    format!(
                        "; {} PersistentVolumeClaim(s) kept (use --volumes to remove them)",
                        d.claims_kept
                    )
                } else {
                    String::new()
                },
                d.namespace_kept
                    .map(|w| format!("; namespace `{}` kept: {w}", desired.namespace))
                    .unwrap_or_default()
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// `stackc rollout abort SERVICE` when the apply that ran the rollout has
/// stopped: traffic back on stable and the new track at 0, under the
/// stack's lock.
pub fn rollout_abort_stopped(cx: &Context, service: &str) -> u8 {
    let Some((mut desired, target)) = setup(cx) else {
        return 1;
    };
    let Some(_lock) = lock(cx, &desired.stack, "stackc rollout") else {
        return 1;
    };
    let Some(rt) = runtime() else { return 1 };
    let opts = options(&target);
    let result = rt.block_on(async {
        let client = connect(&target, &desired.namespace).await?;
        k::rollout::abort_stopped(&client, &mut desired, service, &cx.state_dir, &opts)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => {
            println!("aborted: all traffic of `{service}` is on the stable version");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// `stackc rollout undo SERVICE`: all traffic back to the previous colour
/// that keep-previous keeps, under the stack's lock.
pub fn rollout_undo(cx: &Context, service: &str) -> u8 {
    let Some((mut desired, target)) = setup(cx) else {
        return 1;
    };
    let Some(_lock) = lock(cx, &desired.stack, "stackc rollout") else {
        return 1;
    };
    let Some(rt) = runtime() else { return 1 };
    let opts = options(&target);
    let result = rt.block_on(async {
        let client = connect(&target, &desired.namespace).await?;
        k::observe(&client, &mut desired)
            .await
            .map_err(|e| e.to_string())?;
        k::rollout::undo(&client, &desired, service, &cx.state_dir, &opts, &|l| {
            eprintln!("{l}")
        })
        .await
        .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => {
            println!(
                "`{service}` runs its previous version again. The topology still names the new one: `stackc drift` reports it until the topology is changed back, and the next apply rolls the new version out again."
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
