//! `stackc plan`, `apply`, `drift` and `destroy` against a Docker engine;
//! a Kubernetes target profile hands over to [`super::kube`].
//!
//! Exit codes follow Terraform: 0 success (no changes / in sync), 1 error,
//! 2 changes present (`plan --detailed-exitcode`, `drift`), 130 when
//! interrupted.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::Args;

use super::{Input, Ui, print_diags};
use crate::apply::docker::{ApplyOptions, Engine};
use crate::apply::lock::Lock;
use crate::plan::{self, Action, Desired, Plan};
use crate::profile::{self, Profile};

#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Target profile: a name in targets/ or a .kdl path [default: the local Docker engine]
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// Kubernetes: the most API requests in flight at once [default: the profile's `concurrency`, else 16]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=crate::profile::MAX_CONCURRENCY as i64))]
    pub concurrency: Option<u32>,
}

/// A checked topology with its profile and desired state.
pub struct Context {
    pub profile: Profile,
    pub desired: Desired,
    pub topology: crate::model::Topology,
    pub graph: crate::graph::Graph,
    pub state_dir: PathBuf,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Check the topology, load the profile, compute the desired state.
pub fn context(ui: &Ui, input: &Input, args: &EngineArgs) -> Option<Context> {
    let checked = crate::check_file(&input.path(), input.env.as_deref());
    print_diags(ui, &checked);
    let (Some(t), Some(g), true) = (&checked.topology, &checked.graph, checked.ok()) else {
        eprintln!("error: the topology has errors; nothing was planned");
        return None;
    };
    let mut profile = match &args.target {
        None => Profile::local(),
        Some(name) => {
            let dir = input
                .path()
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            load_profile(ui, name, &std::fs::canonicalize(&dir).unwrap_or(dir))?
        }
    };
    if let Some(n) = args.concurrency {
        match profile.kubernetes.as_mut() {
            Some(k) => k.concurrency = n as usize,
            None => {
                eprintln!("error: --concurrency is for Kubernetes targets");
                return None;
            }
        }
    }
    let state_dir = if profile.state_dir.is_absolute() {
        profile.state_dir.clone()
    } else {
        std::env::current_dir()
            .unwrap_or_default()
            .join(&profile.state_dir)
    };
    let files_dir = state_dir.join(&t.stack.name.value).join("files");
    let desired = plan::desired(t, g, &profile, &files_dir);
    Some(Context {
        profile,
        desired,
        topology: t.clone(),
        graph: g.clone(),
        state_dir,
    })
}

/// Load the profile `name`, searched from `start` upward, then from the
/// current directory upward.
fn load_profile(ui: &Ui, name: &str, start: &Path) -> Option<Profile> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let path = match profile::resolve(name, start).or_else(|_| profile::resolve(name, &cwd)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    let mut sources = crate::source::SourceMap::new();
    match profile::load(&path, &mut sources) {
        Ok(p) => Some(p),
        Err(d) => {
            eprint!("{}", crate::diag::render(&d, &sources, ui.color));
            None
        }
    }
}

fn connect(profile: &Profile, rt: &tokio::runtime::Runtime) -> Option<Engine> {
    let engine = match Engine::connect(profile) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    if let Err(e) = rt.block_on(engine.ping()) {
        eprintln!("error: {e}");
        return None;
    }
    Some(engine)
}

#[allow(clippy::too_many_arguments)]
pub fn run_plan(
    ui: &Ui,
    input: &Input,
    args: &EngineArgs,
    json: bool,
    detailed: bool,
    out: Option<PathBuf>,
    prune: bool,
    force_conflicts: bool,
) -> u8 {
    let Some(cx) = context(ui, input, args) else {
        return 1;
    };
    if cx.profile.kubernetes.is_some() {
        if out.is_some() {
            eprintln!(
                "error: saved plans (--out) are for Docker targets; a Kubernetes plan is made again by `stackc apply`"
            );
            return 1;
        }
        return super::kube::run_plan(&cx, json, detailed, prune, force_conflicts);
    }
    if force_conflicts {
        eprintln!("error: --force-conflicts is for Kubernetes targets");
        return 1;
    }
    let rt = runtime();
    let Some(engine) = connect(&cx.profile, &rt) else {
        return 1;
    };
    let observed = match rt.block_on(engine.observe(&cx.desired)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let plan = plan::diff(&cx.desired, &observed, prune);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "stack": plan.stack,
                "fingerprint": plan.fingerprint,
                "changes": plan.changes,
                "errors": plan.errors,
                "has_changes": plan.has_changes(),
            }))
            .expect("json")
        );
    } else {
        print!("{}", plan::render(&plan));
    }
    if let Some(path) = out {
        let text = serde_json::to_string_pretty(&plan).expect("json");
        if let Err(e) = crate::artifacts::write_atomic(&path, text.as_bytes()) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return 1;
        }
        eprintln!(
            "saved the plan to {}; apply it with `stackc apply {}`",
            path.display(),
            path.display()
        );
    }
    if !plan.errors.is_empty() {
        return 1;
    }
    if detailed && plan.has_changes() { 2 } else { 0 }
}

pub fn run_apply(
    ui: &Ui,
    input: &Input,
    args: &EngineArgs,
    prune: bool,
    force_conflicts: bool,
    timeout_secs: u64,
) -> u8 {
    let started = Instant::now();
    // `stackc apply plan.json` applies exactly a saved plan.
    let saved: Option<Plan> = match input
        .file
        .as_ref()
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
    {
        Some(f) => match std::fs::read_to_string(f)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("error: cannot read the saved plan {}: {e}", f.display());
                return 1;
            }
        },
        None => None,
    };
    let mut model = None;
    let (profile, state_dir, desired, mut plan_to_apply) = match saved {
        Some(p) => {
            let profile = match &args.target {
                None => Profile::local(),
                Some(name) => {
                    match load_profile(ui, name, &std::env::current_dir().unwrap_or_default()) {
                        Some(p) => p,
                        None => return 1,
                    }
                }
            };
            if profile.kubernetes.is_some() {
                eprintln!(
                    "error: `{}` is a Kubernetes target: apply the topology (`stackc apply FILE --target {}`), not a saved plan",
                    profile.name, profile.name
                );
                return 1;
            }
            let state_dir = std::env::current_dir()
                .unwrap_or_default()
                .join(&profile.state_dir);
            (profile, state_dir, p.desired.clone(), Some(p))
        }
        None => {
            let Some(cx) = context(ui, input, args) else {
                return 1;
            };
            if cx.profile.kubernetes.is_some() {
                return super::kube::run_apply(&cx, prune, force_conflicts, timeout_secs);
            }
            model = Some((cx.topology, cx.graph));
            (cx.profile, cx.state_dir, cx.desired, None)
        }
    };
    if force_conflicts {
        eprintln!("error: --force-conflicts is for Kubernetes targets");
        return 1;
    }
    let rt = runtime();
    let Some(engine) = connect(&profile, &rt) else {
        return 1;
    };
    let _lock = match Lock::acquire(&state_dir, &desired.stack, "stackc apply") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let observed = match rt.block_on(engine.observe(&desired)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let plan = match plan_to_apply.take() {
        Some(saved) => {
            if saved.fingerprint != observed.fingerprint() {
                eprintln!(
                    "error: the engine changed since this plan was made; run `stackc plan` again (nothing was changed)"
                );
                return 1;
            }
            saved
        }
        None => plan::diff(&desired, &observed, prune),
    };
    if !plan.errors.is_empty() {
        for e in &plan.errors {
            eprintln!("error: {e}");
        }
        return 1;
    }
    if !plan.has_changes() {
        // Nothing to do, and not a single mutating call to do it. An apply
        // cut short (killed, engine gone) may have started containers whose
        // health nobody confirmed: confirm it, in phase order, reading only.
        let timeout = std::time::Duration::from_secs(timeout_secs);
        let ready = rt.block_on(async {
            for spec in &desired.containers {
                engine.ready(spec, timeout).await?;
            }
            Ok::<_, String>(())
        });
        if let Err(e) = ready {
            eprintln!("error: {e}");
            return 1;
        }
        // A rollout whose stackc was killed after its last engine call.
        if let Err(e) = crate::apply::rollout::settle(&state_dir, &desired) {
            eprintln!("warning: rollout history: {e}");
        }
        println!(
            "No changes. {} objects match the topology.",
            plan.count(|a| matches!(a, Action::Unchanged))
        );
        return 0;
    }
    print!("{}", plan::render(&plan));
    // Mounted config files first: containers read them when they start.
    // Written in place, since running containers bind-mount them.
    let files_dir = state_dir.join(&desired.stack).join("files");
    if !desired.files.is_empty()
        && let Err(e) = crate::artifacts::write_in_place(&files_dir, &desired.files)
    {
        eprintln!("error: {e}");
        return 1;
    }
    // A saved plan is applied as written: its recreations stay recreations.
    let jobs = match &model {
        Some((t, g)) => crate::apply::rollout::jobs(t, g, &plan, &observed, &files_dir),
        None => Vec::new(),
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let total = plan.count(|a| !matches!(a, Action::Unchanged | Action::Orphan)) as u64;
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        Some(b)
    } else {
        None
    };
    // Live rollout status (`~ ` lines): the bar's message on a terminal,
    // a line every 5 seconds in a log.
    let last_live = std::sync::Mutex::new(None::<Instant>);
    let progress = |line: String| match &bar {
        _ if line.starts_with("~ ") => match &bar {
            Some(b) => b.set_message(line[2..].to_string()),
            None => {
                let mut last = last_live.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|t| t.elapsed().as_secs() >= 5) {
                    *last = Some(Instant::now());
                    tracing::info!("{}", &line[2..]);
                    eprintln!("  {}", &line[2..]);
                }
            }
        },
        // On a terminal: phases above a live bar, one step per change.
        Some(b) => {
            // One container change: the bar moves.
            if ["  create ", "  recreate ", "  start "]
                .iter()
                .any(|p| line.starts_with(p))
            {
                b.inc(1);
                b.set_message(line.trim().to_string());
            } else {
                b.println(format!(
                    "[{:>5.1}s] {line}",
                    started.elapsed().as_secs_f64()
                ));
                if line.starts_with("phase") {
                    b.set_message(format!("{line}: waiting for health"));
                }
            }
        }
        None => {
            tracing::info!("{line}");
            eprintln!("{line}");
        }
    };
    let opts = ApplyOptions {
        health_timeout: std::time::Duration::from_secs(timeout_secs),
        cancel: cancel.clone(),
        state_dir: state_dir.clone(),
    };
    let result = rt.block_on(async {
        let flag = cancel.clone();
        // Ctrl-C asks the apply to stop at the next step; the engine call
        // in flight is finished, so the state stays consistent.
        let watcher = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupt: finishing the current engine call, then stopping");
                flag.store(true, Ordering::SeqCst);
            }
        });
        let r = engine.apply(&plan, &opts, &jobs, &progress).await;
        watcher.abort();
        r
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match result {
        Ok(s) => {
            // Rollouts a killed stackc left `running` ended in this apply.
            if let Err(e) = crate::apply::rollout::settle(&state_dir, &desired) {
                eprintln!("warning: rollout history: {e}");
            }
            println!(
                "Apply complete: {} created, {} recreated, {} started, {} deleted, {} unchanged in {:.1}s.",
                s.created,
                s.recreated,
                s.started,
                s.deleted,
                s.unchanged,
                started.elapsed().as_secs_f64()
            );
            0
        }
        Err(_) if cancel.load(Ordering::SeqCst) => {
            eprintln!(
                "interrupted: the engine keeps what was done so far; run `stackc apply` again to converge"
            );
            130
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

pub fn run_drift(ui: &Ui, input: &Input, args: &EngineArgs, json: bool) -> u8 {
    let Some(cx) = context(ui, input, args) else {
        return 1;
    };
    if cx.profile.kubernetes.is_some() {
        return super::kube::run_drift(ui, input, &cx, json);
    }
    let rt = runtime();
    let Some(engine) = connect(&cx.profile, &rt) else {
        return 1;
    };
    let result: Result<_, String> = rt.block_on(async {
        let observed = engine.observe(&cx.desired).await?;
        let mut live = HashMap::new();
        for c in &cx.desired.containers {
            if let Some(l) = engine.live(&c.name).await? {
                live.insert(c.name.clone(), l);
            }
        }
        Ok(crate::drift::compare(
            &cx.desired,
            &observed,
            &live,
            &cx.topology.drift_ignore,
        ))
    });
    let mut items = match result {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match artifact_drift(ui, input) {
        Ok(a) => items.extend(a),
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    }
    report_drift(&items, json, "the engine")
}

/// Committed artifacts that no longer match the topology: drift too, when
/// `generated/` exists beside the topology.
pub fn artifact_drift(_ui: &Ui, input: &Input) -> Result<Vec<crate::drift::Item>, String> {
    let mut items = Vec::new();
    let generated = super::build::default_out(input);
    if generated.is_dir()
        && let Some(arts) = super::build::compile(&Ui { color: false }, input, &[], true)
    {
        let (changes, _) = crate::artifacts::diff(&generated, &arts).map_err(|e| e.to_string())?;
        for c in changes {
            let (path, what) = match c {
                crate::artifacts::Change::Added(p) => (p, "missing"),
                crate::artifacts::Change::Modified(p) => (p, "stale"),
                crate::artifacts::Change::Removed(p) => (p, "no longer generated"),
            };
            items.push(crate::drift::Item {
                object: format!("{}/{path}", generated.display()),
                field: "artifact".into(),
                expected: "as built from the topology".into(),
                actual: what.into(),
                ignored: None,
            });
        }
    }
    Ok(items)
}

/// Print drift items (text or JSON); exit 0 in sync, 2 drift.
pub fn report_drift(items: &[crate::drift::Item], json: bool, what: &str) -> u8 {
    let drifted = items.iter().filter(|i| i.ignored.is_none()).count();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "in_sync": drifted == 0, "drift": items })
            )
            .expect("json")
        );
    } else {
        for i in items {
            match &i.ignored {
                Some(reason) => println!(
                    "  ignored {} {}: expected {}, found {} ({reason})",
                    i.object, i.field, i.expected, i.actual
                ),
                None => println!(
                    "  drift   {} {}: expected {}, found {}",
                    i.object, i.field, i.expected, i.actual
                ),
            }
        }
        if drifted == 0 {
            println!("In sync: {what} matches the topology.");
        } else {
            println!("Drift: {drifted} difference(s); `stackc apply` restores the topology.");
        }
    }
    if drifted == 0 { 0 } else { 2 }
}

pub fn run_destroy(ui: &Ui, input: &Input, args: &EngineArgs, volumes: bool, yes: bool) -> u8 {
    let Some(cx) = context(ui, input, args) else {
        return 1;
    };
    let kube = cx.profile.kubernetes.is_some();
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "error: destroy removes every container of stack `{}`; pass --yes to confirm",
                cx.desired.stack
            );
            return 1;
        }
        eprint!(
            "Remove every {}{} of stack `{}`? Type the stack name to confirm: ",
            if kube { "object" } else { "container" },
            if kube && volumes {
                " and PersistentVolumeClaim (data is lost)"
            } else if kube {
                " (PersistentVolumeClaims are kept)"
            } else if volumes {
                ", network and VOLUME (data is lost)"
            } else {
                " and the network (volumes are kept)"
            },
            cx.desired.stack
        );
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if answer.trim() != cx.desired.stack {
            eprintln!("not confirmed; nothing was removed");
            return 1;
        }
    }
    if kube {
        return super::kube::run_destroy(&cx, volumes);
    }
    let rt = runtime();
    let Some(engine) = connect(&cx.profile, &rt) else {
        return 1;
    };
    let _lock = match Lock::acquire(&cx.state_dir, &cx.desired.stack, "stackc destroy") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let started = Instant::now();
    let progress = |line: String| eprintln!("{line}");
    match rt.block_on(engine.destroy(&cx.desired, volumes, &progress)) {
        Ok(n) => {
            println!(
                "Destroy complete: {n} objects removed in {:.1}s{}.",
                started.elapsed().as_secs_f64(),
                if volumes {
                    ""
                } else {
                    "; volumes kept (use --volumes to remove them)"
                }
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

pub fn run_rollout(
    ui: &Ui,
    input: &Input,
    args: &EngineArgs,
    action: super::RolloutAction,
    service: &str,
    json: bool,
) -> u8 {
    let Some(cx) = context(ui, input, args) else {
        return 1;
    };
    let kube = cx.profile.kubernetes.is_some();
    if cx
        .topology
        .service(service)
        .is_none_or(|s| s.rollout.is_none())
    {
        eprintln!("error: `{service}` is not a service with a rollout policy");
        return 1;
    }
    let h = crate::apply::rollout::load_history(&cx.state_dir, &cx.desired.stack, service);
    let command = match action {
        super::RolloutAction::Promote => Some("promote"),
        super::RolloutAction::Pause => Some("pause"),
        super::RolloutAction::Resume => Some("resume"),
        super::RolloutAction::Abort => Some("abort"),
        _ => None,
    };
    let live_attempt = h
        .attempts
        .last()
        .is_some_and(|a| a.outcome == "running" || a.outcome == "paused");
    if let Some(command) = command {
        if !live_attempt {
            eprintln!(
                "error: no rollout of `{service}` is running; `stackc apply` starts one when the service changes"
            );
            return 1;
        }
        let holder = crate::apply::lock::holder(&cx.state_dir, &cx.desired.stack);
        if holder.is_none() {
            // The apply that ran it stopped: traffic may be split with no
            // one watching. Abort can finish the job here; the others
            // need a running rollout.
            if command != "abort" {
                eprintln!(
                    "error: the apply that ran the rollout of `{service}` has stopped; run `stackc apply` to start the rollout again, or `stackc rollout abort {service}` to send all traffic back to stable"
                );
                return 1;
            }
            if kube {
                return super::kube::rollout_abort_stopped(&cx, service);
            }
            return rollout_offline(&cx, service, false);
        }
        return match crate::apply::rollout::send_control(
            &cx.state_dir,
            &cx.desired.stack,
            service,
            command,
        ) {
            Ok(()) => {
                println!("asked the running rollout of `{service}` to {command}");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        };
    }
    if action == super::RolloutAction::Undo {
        if live_attempt {
            eprintln!(
                "error: a rollout of `{service}` is running; `stackc rollout abort {service}` stops it"
            );
            return 1;
        }
        if kube {
            return super::kube::rollout_undo(&cx, service);
        }
        return rollout_offline(&cx, service, true);
    }
    let attempts: Vec<&crate::apply::rollout::Attempt> = match action {
        super::RolloutAction::Status => h.attempts.last().into_iter().collect(),
        _ => h.attempts.iter().collect(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "service": service, "attempts": attempts })
            )
            .expect("json")
        );
        return 0;
    }
    if attempts.is_empty() {
        println!("{service}: no rollout yet");
    }
    for (i, a) in attempts.iter().enumerate() {
        println!(
            "#{} {} {} -> {}: {}{}",
            i + 1,
            a.strategy,
            a.from_image,
            a.to_image,
            a.outcome,
            a.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        if let Some(p) = a.percent {
            println!("    now: {p}% of the traffic on the new version");
        }
        if let Some(t) = a.kept_until {
            println!(
                "    previous version kept until {} (`stackc rollout undo {service}`)",
                crate::plan::clock(t)
            );
        }
        for s in &a.steps {
            println!(
                "    {:>3}%: {} requests to the new version, {} errors, p95 {}, switch {:.0} ms",
                s.percent,
                s.requests,
                s.errors,
                s.p95_ms
                    .map_or_else(|| "-".to_string(), |p| format!("{p} ms")),
                s.switch_secs * 1000.0
            );
        }
    }
    0
}

/// `rollout undo`, or `rollout abort` of a rollout whose apply stopped:
/// run here, under the stack's lock.
fn rollout_offline(cx: &Context, service: &str, undo: bool) -> u8 {
    let _lock = match Lock::acquire(&cx.state_dir, &cx.desired.stack, "stackc rollout") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let rt = runtime();
    let Some(engine) = connect(&cx.profile, &rt) else {
        return 1;
    };
    let result = rt.block_on(async {
        let observed = engine.observe(&cx.desired).await?;
        let running = |name: &str| {
            observed
                .containers
                .iter()
                .any(|c| c.name == name && c.running)
        };
        let index = cx
            .topology
            .services
            .iter()
            .position(|s| s.name.value == service)
            .ok_or_else(|| format!("no service `{service}`"))?;
        let stable: Vec<_> = cx
            .desired
            .containers
            .iter()
            .filter(|c| c.service == service)
            .cloned()
            .collect();
        let files_dir = cx.state_dir.join(&cx.desired.stack).join("files");
        let job = crate::apply::rollout::job_for(
            &cx.topology,
            &cx.graph,
            index,
            stable,
            &files_dir,
            &running,
            &|_| true,
        )
        .ok_or_else(|| {
            format!("no running balancer routes to `{service}`; run `stackc apply` first")
        })?;
        if undo {
            engine
                .undo(&cx.desired, &job, &cx.state_dir, &|l| eprintln!("{l}"))
                .await
        } else {
            engine.abort_stopped(&cx.desired, &job, &cx.state_dir).await
        }
    });
    match result {
        Ok(()) if undo => {
            println!(
                "`{service}` runs its previous version again. The topology still names the new one: `stackc drift` reports it until the topology is changed back, and the next apply rolls the new version out again."
            );
            0
        }
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
