//! Progressive rollouts on a Docker engine with the generated nginx tier.
//!
//! When apply changes a service that has a rollout policy, and a running
//! balancer routes to it, the service is not replaced in place:
//!
//! 1. the new version starts beside the stable one, on the addresses the
//!    address plan reserves for it (`<instance>-next`), and must be healthy;
//! 2. for each step, the balancers' upstream weights are rewritten, the
//!    config tested (`nginx -t`) and reloaded gracefully, then the gate
//!    window is held: the new version must stay healthy, and its error ratio
//!    and p95 latency, read from the balancers' access log for its own
//!    upstream addresses, must stay within the gates;
//! 3. on success the stable instances are recreated with the new version
//!    while the new one carries all traffic, traffic returns to them, and
//!    the `-next` containers are removed. Traffic is never without a
//!    healthy backend;
//! 4. on a failed gate, `on-failure "rollback"` sends all traffic back to
//!    stable and removes the new version; `"pause"` keeps the weights.
//!
//! Every attempt is recorded in the stack's state directory
//! (`rollouts/<service>.json`, written atomically): `stackc rollout
//! history` and `status` read it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bollard::models::ExecConfig;
use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::docker::Engine;
use crate::model::{OnFailure, Rollout};
use crate::plan::{ContainerSpec, Desired};

/// How long nginx's previous workers get to finish the requests they
/// hold before the servers they talk to are removed.
const DRAIN: Duration = Duration::from_secs(3);

fn strategy_name(job: &RolloutJob) -> &'static str {
    match job.policy.strategy {
        crate::model::RolloutStrategy::BlueGreen => "blue-green",
        crate::model::RolloutStrategy::Canary => "canary",
    }
}

/// Everything one rollout needs, prepared by the caller.
pub struct RolloutJob {
    pub service: String,
    pub policy: Rollout,
    /// The new version of each stable instance, at its own `-next` name
    /// and reserved address.
    pub next: Vec<ContainerSpec>,
    /// Stable specs (the new version at the stable names), recreated once
    /// the rollout passed.
    pub stable: Vec<ContainerSpec>,
    /// Balancer containers routing to the service, with the path of their
    /// mounted config file.
    pub balancers: Vec<(String, PathBuf)>,
    /// Renders each balancer's config for a percentage on the new version.
    pub render: Box<dyn Fn(u32) -> Vec<String> + Send + Sync>,
    /// The container port balancers send the service's traffic to.
    pub port: Option<u16>,
    /// Not a rollout: an earlier one's apply stopped after its new version
    /// took traffic, and the plan already brings the stable instances to
    /// the new version (or they run it). Once they are ready, traffic
    /// returns to them and the `-next` containers left are removed.
    pub finish: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub percent: u32,
    pub requests: usize,
    pub errors: usize,
    pub p95_ms: Option<u64>,
    /// Seconds the traffic switch took (rewrite, test, reload).
    pub switch_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub started: u64,
    pub finished: Option<u64>,
    pub strategy: String,
    pub from_image: String,
    pub to_image: String,
    /// `running`, `succeeded`, `rolled-back`, `paused`, `failed`.
    pub outcome: String,
    pub reason: Option<String>,
    pub steps: Vec<StepRecord>,
    /// The share of traffic on the new version while the rollout runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Blue-green: the previous version is kept until this unix time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_until: Option<u64>,
    /// Kubernetes: the track the new version runs on (`green`, `blue` or
    /// `canary`), so that an abort without its apply knows where stable is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub service: String,
    pub attempts: Vec<Attempt>,
}

impl History {
    /// Before a new attempt: an attempt still `running` or `paused`
    /// belongs to a stackc that was killed, and this one starts over from
    /// the first step; an operator command left for it is dropped.
    pub(crate) fn start_over(&mut self, state_dir: &Path, stack: &str) {
        for a in self
            .attempts
            .iter_mut()
            .filter(|a| a.outcome == "running" || a.outcome == "paused")
        {
            a.outcome = "interrupted".into();
            a.reason =
                Some("stackc stopped during the rollout; the next apply started it again".into());
        }
        let _ = std::fs::remove_file(control_path(state_dir, stack, &self.service));
    }
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Operator commands for a running rollout, written by `stackc rollout`
/// and read by the apply that runs it.
pub fn control_path(state_dir: &Path, stack: &str, service: &str) -> PathBuf {
    state_dir
        .join(stack)
        .join("rollouts")
        .join(format!("{service}.control"))
}

pub(crate) fn read_control(state_dir: &Path, stack: &str, service: &str) -> Option<String> {
    std::fs::read_to_string(control_path(state_dir, stack, service))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Ask the running rollout of `service` to `abort`, `promote`, `pause` or
/// `resume`.
pub fn send_control(
    state_dir: &Path,
    stack: &str,
    service: &str,
    command: &str,
) -> Result<(), String> {
    let path = control_path(state_dir, stack, service);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    crate::artifacts::write_atomic(&path, command.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn history_path(state_dir: &Path, stack: &str, service: &str) -> PathBuf {
    state_dir
        .join(stack)
        .join("rollouts")
        .join(format!("{service}.json"))
}

pub fn load_history(state_dir: &Path, stack: &str, service: &str) -> History {
    std::fs::read_to_string(history_path(state_dir, stack, service))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| History {
            service: service.to_string(),
            attempts: Vec::new(),
        })
}

pub(crate) fn save_history(state_dir: &Path, stack: &str, h: &History) -> Result<(), String> {
    let path = history_path(state_dir, stack, &h.service);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(h).expect("json");
    crate::artifacts::write_atomic(&path, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Requests to the new version counted from balancer access logs: their
/// number, the failed ones, and the p95 of their response times.
#[derive(Default)]
pub(crate) struct Tally {
    requests: usize,
    errors: usize,
    times: Vec<f64>,
}

impl Tally {
    /// Count `line` (`TIMESTAMP REST`, timestamps in RFC 3339 UTC, which
    /// order as text) if it was logged at `since` or later and is a request
    /// to one of `next` (`address:port`).
    pub(crate) fn line(&mut self, line: &str, since: &str, next: &[String]) {
        let (ts, rest) = line.split_once(' ').unwrap_or(("", line));
        if ts < since {
            return;
        }
        if let Some((failed, time)) = parse_line(rest, next) {
            self.requests += 1;
            self.errors += usize::from(failed);
            self.times.extend(time);
        }
    }

    /// (requests, errors, p95 in milliseconds).
    pub(crate) fn finish(mut self) -> (usize, usize, Option<u64>) {
        self.times.sort_by(f64::total_cmp);
        let t = &self.times;
        let p95 = (!t.is_empty()).then(|| {
            (t[((t.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)] * 1000.0) as u64
        });
        (self.requests, self.errors, p95)
    }
}

/// Requests to the new version seen in a balancer log line.
fn parse_line(line: &str, next: &[String]) -> Option<(bool, Option<f64>)> {
    // A value may hold ", "-separated retries: it runs to the next key=.
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |key: &str| -> Option<String> {
        let at = words.iter().position(|w| w.starts_with(key))?;
        let mut v = words[at][key.len()..].to_string();
        for w in &words[at + 1..] {
            if w.contains('=') {
                break;
            }
            v.push(' ');
            v.push_str(w);
        }
        Some(v)
    };
    let upstream = field("upstream=")?;
    // With retries nginx lists several upstreams; the last one answered.
    let last = upstream.rsplit(", ").next().unwrap_or(&upstream);
    if !next.iter().any(|n| n == last) {
        return None;
    }
    let status = field("upstream_status=")?;
    let code = status.rsplit(", ").next().unwrap_or(&status);
    let failed = code.starts_with('5') || code == "-";
    let time = field("upstream_time=")
        .and_then(|t| t.rsplit(", ").next().and_then(|t| t.parse::<f64>().ok()));
    Some((failed, time))
}

impl Engine {
    async fn exec(&self, container: &str, cmd: &[&str]) -> Result<(i64, String), String> {
        let exec = self
            .docker()
            .create_exec(
                container,
                ExecConfig {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("exec in {container}: {e}"))?;
        let mut output = String::new();
        if let bollard::exec::StartExecResults::Attached {
            output: mut out, ..
        } = self
            .docker()
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| format!("exec in {container}: {e}"))?
        {
            while let Some(Ok(chunk)) = out.next().await {
                output.push_str(&chunk.to_string());
            }
        }
        let code = self
            .docker()
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| format!("exec in {container}: {e}"))?
            .exit_code
            .unwrap_or(-1);
        Ok((code, output))
    }

    /// Write each balancer's config for `percent` on the new version, test
    /// it and reload nginx. A failed test leaves the running config alone.
    async fn switch(&self, job: &RolloutJob, percent: u32) -> Result<f64, String> {
        let t = Instant::now();
        let confs = (job.render)(percent);
        for ((container, path), conf) in job.balancers.iter().zip(confs) {
            let previous = std::fs::read_to_string(path).unwrap_or_default();
            // Written in place: the container's bind mount follows the inode.
            std::fs::write(path, &conf)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            // One round trip: the config test gates the reload.
            let (code, out) = self
                .exec(
                    container,
                    &["sh", "-c", "nginx -t 2>&1 && nginx -s reload 2>&1"],
                )
                .await?;
            if code != 0 {
                let _ = std::fs::write(path, previous);
                return Err(format!(
                    "nginx rejected the config for {percent}% in {container} (the running config is unchanged): {}",
                    out.trim()
                ));
            }
        }
        Ok(t.elapsed().as_secs_f64())
    }

    /// (Re)create `specs`: any container of the same name is replaced.
    async fn start_fresh(
        &self,
        desired: &Desired,
        specs: &[ContainerSpec],
        secrets: &HashMap<String, String>,
    ) -> Result<(), String> {
        for spec in specs {
            self.remove(&spec.name).await?;
            self.create_started(desired, spec, secrets).await?;
        }
        Ok(())
    }

    /// All traffic to the stable instances, then, once nginx's previous
    /// workers have drained, the new version's containers removed.
    async fn back_to_stable(&self, job: &RolloutJob) -> Result<(), String> {
        self.switch(job, 0).await?;
        tokio::time::sleep(DRAIN).await;
        for spec in &job.next {
            self.remove(&spec.name).await?;
        }
        Ok(())
    }

    /// For a `finish` job: the stable instances are ready; traffic returns
    /// to them and the `-next` containers left behind are removed.
    pub async fn finish_interrupted(
        &self,
        job: &RolloutJob,
        progress: &(dyn Fn(String) + Sync),
    ) -> Result<(), String> {
        progress(format!(
            "rollout {}: an earlier apply stopped mid-rollout; traffic back on the stable instances, then the new version's containers left are removed",
            job.service
        ));
        self.back_to_stable(job).await
    }

    /// End an attempt early: all traffic back on stable, the new version
    /// removed; returns the attempt's outcome and reason.
    async fn retreat(
        &self,
        job: &RolloutJob,
        progress: &(dyn Fn(String) + Sync),
        what: &str,
        outcome: &str,
        reason: String,
    ) -> (String, String) {
        if let Err(e) = self.back_to_stable(job).await {
            return ("failed".into(), e);
        }
        progress(format!(
            "  {what}: all traffic back on the stable version of {}",
            job.service
        ));
        (outcome.into(), reason)
    }

    /// Requests to the new version in the balancers' logs since `since`.
    async fn measure(
        &self,
        job: &RolloutJob,
        since_unix: i64,
        since_text: &str,
    ) -> Result<(usize, usize, Option<u64>), String> {
        let next: Vec<String> = job
            .next
            .iter()
            .filter_map(|s| Some(format!("{}:{}", s.ipv4.clone()?, job.port?)))
            .collect();
        let mut tally = Tally::default();
        for (container, _) in &job.balancers {
            let opts = LogsOptions {
                stdout: true,
                stderr: false,
                since: since_unix as i32,
                timestamps: true,
                tail: "all".into(),
                ..Default::default()
            };
            let mut logs = self.docker().logs(container, Some(opts));
            while let Some(item) = logs.next().await {
                let line = item
                    .map_err(|e| format!("logs of {container}: {e}"))?
                    .to_string();
                tally.line(&line, since_text, &next);
            }
        }
        Ok(tally.finish())
    }

    /// Run one rollout; returns an error (after rolling back, when the
    /// policy says so) when a gate fails.
    pub async fn rollout(
        &self,
        desired: &Desired,
        job: &RolloutJob,
        secrets: &HashMap<String, String>,
        state_dir: &Path,
        cancel: &AtomicBool,
        progress: &(dyn Fn(String) + Sync),
    ) -> Result<(), String> {
        let mut history = load_history(state_dir, &desired.stack, &job.service);
        let from_image = self
            .live(&job.stable[0].name)
            .await?
            .map(|l| l.image)
            .unwrap_or_default();
        history.start_over(state_dir, &desired.stack);
        history.attempts.push(Attempt {
            started: now(),
            finished: None,
            strategy: strategy_name(job).into(),
            from_image,
            to_image: job.stable[0].image.clone(),
            outcome: "running".into(),
            reason: None,
            steps: Vec::new(),
            percent: None,
            kept_until: None,
            track: None,
        });
        save_history(state_dir, &desired.stack, &history)?;
        let mut run = Run {
            state_dir,
            stack: &desired.stack,
            history: &mut history,
        };
        let result = self
            .rollout_steps(desired, job, secrets, cancel, progress, &mut run)
            .await;
        let _ = std::fs::remove_file(control_path(state_dir, &desired.stack, &job.service));
        let attempt = history.attempts.last_mut().expect("pushed");
        attempt.finished = Some(now());
        match &result {
            Ok(()) => {
                attempt.outcome = "succeeded".into();
                attempt.reason = None;
            }
            Err((outcome, reason)) => {
                attempt.outcome = outcome.clone();
                attempt.reason = Some(reason.clone());
                // Traffic is back on stable, unless the rollout failed
                // half-way (then the weight it reached stays on record).
                if outcome != "failed" {
                    attempt.percent = None;
                }
            }
        }
        save_history(state_dir, &desired.stack, &history)?;
        result
            .map_err(|(outcome, reason)| format!("rollout of {} {outcome}: {reason}", job.service))
    }

    /// Hold until an operator decides (`stackc rollout resume|promote|abort`)
    /// or the apply is interrupted.
    async fn held(&self, run: &Run<'_>, service: &str, cancel: &AtomicBool) -> Decision {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if cancel.load(Ordering::SeqCst) {
                return Decision::Interrupted;
            }
            match read_control(run.state_dir, run.stack, service).as_deref() {
                Some("abort") => return Decision::Abort,
                Some("promote") => return Decision::Promote,
                Some("resume") => return Decision::Resume,
                _ => {}
            }
        }
    }

    async fn rollout_steps(
        &self,
        desired: &Desired,
        job: &RolloutJob,
        secrets: &HashMap<String, String>,
        cancel: &AtomicBool,
        progress: &(dyn Fn(String) + Sync),
        run: &mut Run<'_>,
    ) -> Result<(), (String, String)> {
        let control = || read_control(run.state_dir, run.stack, &job.service);
        let fail = |r: String| ("failed".to_string(), r);
        progress(format!(
            "rollout {} ({}): starting the new version",
            job.service,
            strategy_name(job)
        ));
        // The new version an interrupted attempt left may still carry
        // traffic: traffic returns to stable before it is replaced.
        let mut left = false;
        for spec in &job.next {
            left |= self.live(&spec.name).await.map_err(fail)?.is_some();
        }
        if left {
            progress(format!(
                "  an interrupted attempt left the new version of {}: traffic back on stable first",
                job.service
            ));
            self.back_to_stable(job).await.map_err(fail)?;
        }
        // A previous version kept from the last rollout holds the reserved
        // addresses: it goes first.
        for spec in &job.stable {
            self.remove(&format!("{}-previous", spec.name))
                .await
                .map_err(fail)?;
        }
        self.start_fresh(desired, &job.next, secrets)
            .await
            .map_err(fail)?;
        for spec in &job.next {
            if let Err(e) = self.ready(spec, Duration::from_secs(300)).await {
                // The new version never became healthy: no traffic moved.
                for s in &job.next {
                    let _ = self.remove(&s.name).await;
                }
                return Err((
                    "rolled back".into(),
                    format!("the new version did not become healthy: {e}"),
                ));
            }
        }
        let hold = job
            .policy
            .gate
            .healthy_for
            .as_ref()
            .map_or(Duration::from_secs(5), |d| Duration::from_millis(d.millis));
        let steps = &job.policy.steps.value;
        let mut promoted = false;
        for (index, &percent) in steps.iter().enumerate() {
            if promoted {
                break;
            }
            let since = chrono_now();
            let switch_secs = self.switch(job, percent).await.map_err(fail)?;
            run.update(|a| a.percent = Some(percent));
            progress(format!(
                "  step {}/{} {percent}%: traffic switched in {:.0} ms; holding {}s",
                index + 1,
                steps.len(),
                switch_secs * 1000.0,
                hold.as_secs()
            ));
            let mut deadline = Instant::now() + hold;
            let mut gate_failure = None;
            let mut operator_pause = false;
            while Instant::now() < deadline && gate_failure.is_none() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if cancel.load(Ordering::SeqCst) {
                    return Err(self
                        .retreat(
                            job,
                            progress,
                            &format!("interrupted at {percent}%"),
                            "interrupted",
                            format!(
                                "stopped by an interrupt at {percent}%; traffic returned to stable"
                            ),
                        )
                        .await);
                }
                match control().as_deref() {
                    Some("abort") => {
                        return Err(self
                            .retreat(
                                job,
                                progress,
                                &format!("aborted at {percent}%"),
                                "aborted",
                                format!("by an operator at {percent}%"),
                            )
                            .await);
                    }
                    Some("promote") => {
                        progress(format!(
                            "  promoted at {percent}% by an operator: skipping the remaining steps"
                        ));
                        promoted = true;
                        break;
                    }
                    // Paused: the weights stay and the window does not run out.
                    Some("pause") => {
                        if !operator_pause {
                            operator_pause = true;
                            run.update(|a| {
                                a.outcome = "paused".into();
                                a.reason = Some(format!("by an operator at {percent}%"));
                            });
                            progress(format!(
                                "  paused at {percent}% by an operator; `stackc rollout resume {}` continues",
                                job.service
                            ));
                        }
                        deadline = Instant::now() + hold;
                        continue;
                    }
                    _ if operator_pause => {
                        operator_pause = false;
                        run.update(|a| {
                            a.outcome = "running".into();
                            a.reason = None;
                        });
                        progress(format!("  resumed at {percent}%"));
                    }
                    _ => {}
                }
                for spec in &job.next {
                    if let Ok(Some(live)) = self.live(&spec.name).await
                        && !live.running
                    {
                        gate_failure = Some(format!("health: {} stopped", spec.name));
                    }
                }
                let (requests, errors, p95) =
                    self.measure(job, since.0, &since.1).await.map_err(fail)?;
                if let Some(max) = &job.policy.gate.max_error_rate
                    && requests > 0
                {
                    let ratio = errors as f64 / requests as f64;
                    if ratio > max.value {
                        gate_failure = Some(format!(
                            "error rate {ratio:.3} above the gate {} ({errors} of {requests} requests)",
                            max.value
                        ));
                    }
                }
                if let (Some(max), Some(p)) = (&job.policy.gate.max_latency_p95, p95)
                    && p > max.millis
                {
                    gate_failure = Some(format!("p95 latency {p} ms above the gate {}", max.text));
                }
                progress(format!(
                    "~ {} step {}/{} · weights {percent}% new / {}% stable · {}",
                    job.service,
                    index + 1,
                    steps.len(),
                    100 - percent.min(100),
                    gate_line(job, requests, errors, p95, deadline)
                ));
            }
            let (requests, errors, p95) =
                self.measure(job, since.0, &since.1).await.map_err(fail)?;
            run.update(|a| {
                a.steps.push(StepRecord {
                    percent,
                    requests,
                    errors,
                    p95_ms: p95,
                    switch_secs,
                })
            });
            progress(format!(
                "  step {}/{} {percent}%: {}",
                index + 1,
                steps.len(),
                gate_line(job, requests, errors, p95, Instant::now())
                    .trim_end_matches(" · 0s left")
            ));
            let Some(reason) = gate_failure else { continue };
            progress(format!("  step {percent}%: gate failed: {reason}"));
            if job.policy.on_failure == OnFailure::Rollback {
                return Err(self
                    .retreat(
                        job,
                        progress,
                        "rolled back",
                        "rolled back",
                        format!("at {percent}%: {reason}"),
                    )
                    .await);
            }
            // Paused: the weights stay while the apply waits for an operator.
            let _ = std::fs::remove_file(control_path(run.state_dir, run.stack, &job.service));
            run.update(|a| {
                a.outcome = "paused".into();
                a.reason = Some(format!("at {percent}%: {reason}; weights kept"));
            });
            progress(format!(
                "  paused at {percent}%: weights kept; waiting for `stackc rollout resume|promote|abort {}`",
                job.service
            ));
            match self.held(run, &job.service, cancel).await {
                Decision::Resume => {
                    let _ =
                        std::fs::remove_file(control_path(run.state_dir, run.stack, &job.service));
                    run.update(|a| {
                        a.outcome = "running".into();
                        a.reason = None;
                    });
                    progress(format!("  resumed by an operator after {percent}%"));
                }
                Decision::Promote => {
                    progress(format!(
                        "  promoted at {percent}% by an operator: skipping the remaining steps"
                    ));
                    promoted = true;
                }
                Decision::Abort => {
                    return Err(self
                        .retreat(
                            job,
                            progress,
                            "aborted",
                            "aborted",
                            format!("by an operator while paused at {percent}% ({reason})"),
                        )
                        .await);
                }
                Decision::Interrupted => {
                    return Err(self
                        .retreat(
                            job,
                            progress,
                            "interrupted while paused",
                            "interrupted",
                            format!("stopped by an interrupt while paused at {percent}%"),
                        )
                        .await);
                }
            }
        }
        if promoted || steps.last() != Some(&100) {
            self.switch(job, 100).await.map_err(fail)?;
            run.update(|a| a.percent = Some(100));
        }
        // Blue-green keeps the previous version for instant rollback: its
        // definition is read now, before its containers are replaced.
        let keep = match (&job.policy.strategy, &job.policy.keep_previous) {
            (crate::model::RolloutStrategy::BlueGreen, Some(d)) => {
                let mut old = Vec::new();
                for spec in &job.stable {
                    if let Ok(Some(live)) = self.live(&spec.name).await
                        && let Some(s) = live
                            .labels
                            .get(crate::plan::LABEL_SPEC)
                            .and_then(|s| serde_json::from_str::<ContainerSpec>(s).ok())
                    {
                        old.push(s);
                    }
                }
                (old.len() == job.stable.len()).then_some((old, d.millis))
            }
            _ => None,
        };
        // Passed: the stable instances take the new version while the new
        // one carries all the traffic, then take the traffic back.
        progress(format!(
            "  promoting: recreating the stable instances of {}",
            job.service
        ));
        self.start_fresh(desired, &job.stable, secrets)
            .await
            .map_err(fail)?;
        for spec in &job.stable {
            self.ready(spec, Duration::from_secs(300))
                .await
                .map_err(fail)?;
        }
        self.back_to_stable(job).await.map_err(fail)?;
        run.update(|a| a.percent = None);
        if let Some((old, millis)) = keep {
            let until = now() + millis / 1000;
            match self.keep_previous(desired, job, &old, until).await {
                Ok(()) => {
                    run.update(|a| a.kept_until = Some(until));
                    progress(format!(
                        "  previous version kept until {} for `stackc rollout undo {}`",
                        crate::plan::clock(until),
                        job.service
                    ));
                }
                Err(e) => progress(format!("  the previous version could not be kept: {e}")),
            }
        }
        progress(format!("  rollout of {} complete", job.service));
        Ok(())
    }

    /// Start the previous version again on the reserved addresses, with no
    /// traffic, labelled with the time it may be removed.
    async fn keep_previous(
        &self,
        desired: &Desired,
        job: &RolloutJob,
        old: &[ContainerSpec],
        until: u64,
    ) -> Result<(), String> {
        let secrets = super::docker::read_secrets(old).map_err(|missing| {
            format!(
                "its secrets are not set in the environment: {}",
                missing.join(", ")
            )
        })?;
        let specs = standby_specs(job, old, until);
        self.start_fresh(desired, &specs, &secrets).await?;
        for s in &specs {
            self.ready(s, Duration::from_secs(120)).await?;
        }
        Ok(())
    }

    /// Send all traffic to the previous version kept after a blue-green
    /// rollout, at once, then make it the stable version again.
    pub async fn undo(
        &self,
        desired: &Desired,
        job: &RolloutJob,
        state_dir: &Path,
        progress: &(dyn Fn(String) + Sync),
    ) -> Result<(), String> {
        let mut old = Vec::new();
        let mut kept = Vec::new();
        for spec in &job.stable {
            let name = format!("{}-previous", spec.name);
            let live = self.live(&name).await?.filter(|l| l.running).ok_or_else(|| {
                format!(
                    "no previous version of `{}` is kept (keep-previous keeps it after a blue-green rollout, for a time)",
                    job.service
                )
            })?;
            let spec: ContainerSpec = live
                .labels
                .get(LABEL_STABLE_SPEC)
                .and_then(|s| serde_json::from_str(s).ok())
                .ok_or_else(|| format!("{name} does not say which version it keeps"))?;
            kept.push(name);
            old.push(spec);
        }
        let mut via = RolloutJob {
            service: job.service.clone(),
            policy: job.policy.clone(),
            next: job.next.clone(),
            stable: old.clone(),
            balancers: job.balancers.clone(),
            render: Box::new(|_| Vec::new()),
            port: job.port,
            finish: false,
        };
        for (n, name) in via.next.iter_mut().zip(&kept) {
            n.name = name.clone();
        }
        via.render = Box::new({
            let r = &job.render;
            let c0 = r(0);
            let c100 = r(100);
            move |p| if p == 0 { c0.clone() } else { c100.clone() }
        });
        let mut history = load_history(state_dir, &desired.stack, &job.service);
        let from_image = self
            .live(&job.stable[0].name)
            .await?
            .map(|l| l.image)
            .unwrap_or_default();
        // Checked before any change: the stable instances are recreated
        // with the previous version, which reads them.
        let secrets = super::docker::read_secrets(&old).map_err(|missing| {
            format!(
                "set {}: the previous version reads them (nothing was changed)",
                missing.join(", ")
            )
        })?;
        let t = self.switch(&via, 100).await?;
        progress(format!(
            "all traffic of {} on the previous version ({}) in {:.0} ms",
            job.service,
            old[0].image,
            t * 1000.0
        ));
        progress(format!(
            "recreating the stable instances of {} with the previous version",
            job.service
        ));
        self.start_fresh(desired, &old, &secrets).await?;
        for s in &old {
            self.ready(s, Duration::from_secs(300)).await?;
        }
        self.back_to_stable(&via).await?;
        history.attempts.push(Attempt {
            started: now(),
            finished: Some(now()),
            strategy: "undo".into(),
            from_image,
            to_image: old[0].image.clone(),
            outcome: "succeeded".into(),
            reason: Some("the previous version was restored by `stackc rollout undo`".into()),
            steps: vec![StepRecord {
                percent: 100,
                requests: 0,
                errors: 0,
                p95_ms: None,
                switch_secs: t,
            }],
            percent: None,
            kept_until: None,
            track: None,
        });
        save_history(state_dir, &desired.stack, &history)
    }

    /// Return all traffic to stable and remove the new version, for a
    /// rollout whose apply stopped (`stackc rollout abort` without one).
    pub async fn abort_stopped(
        &self,
        desired: &Desired,
        job: &RolloutJob,
        state_dir: &Path,
    ) -> Result<(), String> {
        self.back_to_stable(job).await?;
        let mut history = load_history(state_dir, &desired.stack, &job.service);
        if let Some(a) = history
            .attempts
            .last_mut()
            .filter(|a| a.outcome == "running" || a.outcome == "paused")
        {
            a.outcome = "aborted".into();
            a.finished = Some(now());
            a.percent = None;
            a.reason = Some("by an operator after its apply had stopped".into());
        }
        let _ = std::fs::remove_file(control_path(state_dir, &desired.stack, &job.service));
        save_history(state_dir, &desired.stack, &history)
    }
}

/// After an apply that converged (under the stack's lock): an attempt
/// still `running` or `paused` belongs to a stackc that was killed. It is
/// recorded as interrupted and, when the service now runs the version it
/// rolled out, followed by a succeeded attempt that says how it ended.
pub fn settle(state_dir: &Path, desired: &Desired) -> Result<(), String> {
    let dir = state_dir.join(&desired.stack).join("rollouts");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Some(service) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let mut history = load_history(state_dir, &desired.stack, service);
        let Some(last) = history.attempts.last_mut() else {
            continue;
        };
        if last.outcome != "running" && last.outcome != "paused" {
            continue;
        }
        last.outcome = "interrupted".into();
        last.finished = Some(now());
        last.reason = Some("stackc stopped during the rollout".into());
        let (strategy, from_image, to_image) = (
            last.strategy.clone(),
            last.from_image.clone(),
            last.to_image.clone(),
        );
        let instances: Vec<&ContainerSpec> = desired
            .containers
            .iter()
            .filter(|c| c.service == service)
            .collect();
        if !instances.is_empty() && instances.iter().all(|c| c.image == to_image) {
            history.attempts.push(Attempt {
                started: now(),
                finished: Some(now()),
                strategy,
                from_image,
                to_image,
                outcome: "succeeded".into(),
                reason: Some(
                    "completed by the next apply: the stable instances run the new version and the new version's containers are gone"
                        .into(),
                ),
                steps: Vec::new(),
                percent: None,
                kept_until: None,
                track: None,
            });
        }
        save_history(state_dir, &desired.stack, &history)?;
    }
    Ok(())
}

/// The label on a kept previous version that holds its stable definition.
const LABEL_STABLE_SPEC: &str = "io.stackc.stable-spec";

/// The previous version's specs at the reserved addresses, without host
/// ports, labelled as kept until `until`.
fn standby_specs(job: &RolloutJob, old: &[ContainerSpec], until: u64) -> Vec<ContainerSpec> {
    old.iter()
        .zip(&job.next)
        .map(|(o, n)| {
            let mut s = o.clone();
            s.name = format!("{}-previous", o.name);
            s.ipv4 = n.ipv4.clone();
            s.instance = n.instance.clone();
            s.ports.clear();
            s.labels
                .insert("io.stackc.instance".into(), n.instance.clone());
            s.labels
                .insert(crate::plan::LABEL_TRACK.into(), "previous".into());
            s.labels
                .insert(crate::plan::LABEL_KEEP_UNTIL.into(), until.to_string());
            s.labels.insert(
                LABEL_STABLE_SPEC.into(),
                serde_json::to_string(o).expect("spec"),
            );
            s
        })
        .collect()
}

/// An operator's decision for a held rollout.
enum Decision {
    Resume,
    Promote,
    Abort,
    Interrupted,
}

/// The attempt being run, saved after every change so that `stackc
/// rollout status` sees it.
struct Run<'a> {
    state_dir: &'a Path,
    stack: &'a str,
    history: &'a mut History,
}

impl Run<'_> {
    fn update(&mut self, f: impl FnOnce(&mut Attempt)) {
        if let Some(a) = self.history.attempts.last_mut() {
            f(a);
        }
        if let Err(e) = save_history(self.state_dir, self.stack, self.history) {
            tracing::warn!("{e}");
        }
    }
}

/// The gates' measured values against their thresholds, and time left.
fn gate_line(
    job: &RolloutJob,
    requests: usize,
    errors: usize,
    p95: Option<u64>,
    deadline: Instant,
) -> String {
    let ratio = if requests > 0 {
        errors as f64 / requests as f64
    } else {
        0.0
    };
    let mut out = format!("{requests} requests, errors {ratio:.3}");
    if let Some(max) = &job.policy.gate.max_error_rate {
        out.push_str(&format!(" (gate {})", max.value));
    }
    out.push_str(&format!(
        ", p95 {}",
        p95.map_or_else(|| "-".to_string(), |p| format!("{p} ms"))
    ));
    if let Some(max) = &job.policy.gate.max_latency_p95 {
        out.push_str(&format!(" (gate {})", max.text));
    }
    let left = deadline.saturating_duration_since(Instant::now()).as_secs();
    out.push_str(&format!(" · {left}s left"));
    out
}

/// Now as unix seconds and as an RFC 3339 UTC timestamp with nanoseconds,
/// the form Docker gives log lines.
pub(crate) fn chrono_now() -> (i64, String) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (y, m, dd, hh, mm, ss) = crate::plan::civil(d.as_secs());
    let text = format!(
        "{y:04}-{m:02}-{dd:02}T{hh:02}:{mm:02}:{ss:02}.{:09}Z",
        d.subsec_nanos()
    );
    (d.as_secs() as i64, text)
}

/// The rollouts a plan calls for: services with a rollout policy whose
/// running instances are all to be recreated, behind a balancer that runs
/// and stays as it is. Anything else is a plain recreate.
pub fn jobs(
    t: &crate::model::Topology,
    g: &crate::graph::Graph,
    plan: &crate::plan::Plan,
    observed: &crate::plan::Observed,
    files_dir: &Path,
) -> Vec<RolloutJob> {
    use crate::plan::Action;
    let action = |name: &str| {
        plan.changes
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.action)
    };
    let running = |name: &str| {
        observed
            .containers
            .iter()
            .any(|c| c.name == name && c.running)
    };
    let mut out = Vec::new();
    for (i, s) in t.services.iter().enumerate() {
        if s.rollout.is_none() {
            continue;
        }
        let stable: Vec<ContainerSpec> = plan
            .desired
            .containers
            .iter()
            .filter(|c| c.service == s.name.value)
            .cloned()
            .collect();
        if stable.is_empty() {
            continue;
        }
        let unchanged = |n: &str| matches!(action(n), Some(Action::Unchanged));
        if !stable
            .iter()
            .all(|c| matches!(action(&c.name), Some(Action::Recreate { .. })) && running(&c.name))
        {
            // No rollout, but the new version an interrupted one left may
            // still carry traffic: it is retired once stable is ready.
            // (A balancer being replaced starts on the plan's config, which
            // sends nothing to it: then the plain delete is enough.)
            let leftover = stable
                .iter()
                .any(|c| matches!(action(&format!("{}-next", c.name)), Some(Action::Leftover)));
            if leftover
                && let Some(mut job) = job_for(t, g, i, stable, files_dir, &running, &unchanged)
            {
                job.finish = true;
                out.push(job);
            }
            continue;
        }
        out.extend(job_for(t, g, i, stable, files_dir, &running, &unchanged));
    }
    out
}

/// The rollout job of service `i` with `stable` as its stable containers,
/// when every balancer instance routing to it runs and stays as it is.
pub fn job_for(
    t: &crate::model::Topology,
    g: &crate::graph::Graph,
    i: usize,
    stable: Vec<ContainerSpec>,
    files_dir: &Path,
    running: &dyn Fn(&str) -> bool,
    unchanged: &dyn Fn(&str) -> bool,
) -> Option<RolloutJob> {
    let s = &t.services[i];
    let policy = s.rollout.as_ref()?;
    let stack = &t.stack.name.value;
    let addresses = crate::targets::Plan::new(t);
    let balancers: Vec<(usize, &crate::model::Balancer)> = t
        .balancers
        .iter()
        .enumerate()
        .filter(|(_, b)| b.routes.iter().any(|r| r.to.value == s.name.value))
        .collect();
    let balancer_names: Vec<(String, PathBuf)> = balancers
        .iter()
        .flat_map(|(bi, b)| {
            addresses.balancers[*bi].iter().map(move |inst| {
                (
                    format!("{stack}-{}", inst.name),
                    files_dir.join(crate::targets::nginx::path(b)),
                )
            })
        })
        .collect();
    if balancer_names.is_empty()
        || !balancer_names
            .iter()
            .all(|(n, _)| running(n) && unchanged(n))
    {
        return None;
    }
    let next: Vec<ContainerSpec> = stable
        .iter()
        .zip(&addresses.next[i])
        .map(|(spec, inst)| {
            let mut n = spec.clone();
            n.name = format!("{}-next", spec.name);
            n.instance = inst.name.clone();
            n.ipv4 = inst.address.map(|a| a.to_string());
            // Host ports belong to the stable instances.
            n.ports.clear();
            n.labels
                .insert("io.stackc.instance".into(), inst.name.clone());
            n.labels.insert("io.stackc.track".into(), "next".into());
            n
        })
        .collect();
    let (topology, graph, service) = (t.clone(), g.clone(), s.name.value.clone());
    let indices: Vec<usize> = balancers
        .iter()
        .flat_map(|(bi, b)| std::iter::repeat_n(*bi, b.replicas.value as usize))
        .collect();
    let render = Box::new(move |percent: u32| {
        let mut cx = crate::targets::Ctx::new(&topology, &graph);
        let mut w = crate::targets::nginx::Weights::new();
        w.insert(service.clone(), percent);
        indices
            .iter()
            .map(|bi| crate::targets::nginx::render(&mut cx, *bi, &w).unwrap_or_default())
            .collect()
    });
    Some(RolloutJob {
        service: s.name.value.clone(),
        policy: (**policy).clone(),
        next,
        stable,
        balancers: balancer_names,
        render,
        port: crate::targets::nginx::service_port(s),
        finish: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_read_for_the_new_version_only() {
        let next = vec!["10.0.2.9:8080".to_string()];
        let line = r#"127.0.0.1 [2026-11-25T12:00:00+00:00] "GET / HTTP/1.1" 500 9 upstream=10.0.2.9:8080 upstream_status=500 request_time=0.003 upstream_time=0.002"#;
        assert_eq!(parse_line(line, &next), Some((true, Some(0.002))));
        let stable = line.replace("10.0.2.9", "10.0.2.2");
        assert_eq!(parse_line(&stable, &next), None);
        let retried = line
            .replace(
                "upstream=10.0.2.9:8080",
                "upstream=10.0.2.2:8080, 10.0.2.9:8080",
            )
            .replace("upstream_status=500", "upstream_status=502, 200");
        assert_eq!(parse_line(&retried, &next), Some((false, Some(0.002))));
    }

    #[test]
    fn a_tally_counts_new_lines_to_the_new_version_and_takes_their_p95() {
        let next = vec!["10.0.2.9:8080".to_string()];
        let line = |ts: &str, to: &str, status: u16, secs: f64| {
            format!(
                r#"{ts} 127.0.0.1 "GET / HTTP/1.1" {status} 9 upstream={to}:8080 upstream_status={status} request_time={secs} upstream_time={secs}"#
            )
        };
        let since = "2026-11-25T12:00:00.000000000Z";
        let mut t = Tally::default();
        // Before the window, and to stable: not counted.
        t.line(
            &line("2026-11-25T11:59:59.000000000Z", "10.0.2.9", 500, 9.0),
            since,
            &next,
        );
        t.line(
            &line("2026-11-25T12:00:01.000000000Z", "10.0.2.2", 500, 9.0),
            since,
            &next,
        );
        for i in 1..=20 {
            let status = if i == 20 { 502 } else { 200 };
            t.line(
                &line(
                    "2026-11-25T12:00:02.000000000Z",
                    "10.0.2.9",
                    status,
                    f64::from(i) / 1000.0,
                ),
                since,
                &next,
            );
        }
        // 20 requests, 1 failed; the 95th percentile of 1..20 ms is 19 ms.
        assert_eq!(t.finish(), (20, 1, Some(19)));
        assert_eq!(Tally::default().finish(), (0, 0, None));
    }

    #[test]
    fn timestamps_sort_as_text() {
        let (secs, text) = chrono_now();
        assert!(secs > 1_700_000_000);
        assert_eq!(text.len(), "2026-11-25T12:00:00.000000000Z".len());
        assert!(text.ends_with('Z'));
    }
}
