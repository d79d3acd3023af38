//! The Docker engine, through bollard: read what the stack runs, and carry
//! out a plan phase by phase, waiting for health between phases.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HealthConfig, HostConfig, Ipam,
    IpamConfig, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions, StartContainerOptions,
    StopContainerOptions,
};
use futures_util::StreamExt;

use crate::plan::{
    Action, ContainerSpec, Desired, EnvValue, Kind, LABEL_HASH, LABEL_OWNER, LABEL_SPEC,
    LABEL_STACK, LABEL_VERSION, Observed, ObservedContainer, ObservedObject, Plan,
};
use crate::profile::Profile;

pub struct Engine {
    docker: Docker,
}

/// How an apply behaves.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Longest wait for one container to become healthy.
    pub health_timeout: Duration,
    /// Set (by Ctrl-C) to stop before the next engine call: the call in
    /// flight completes, nothing new starts.
    pub cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Where rollout history is kept.
    pub state_dir: std::path::PathBuf,
}

pub const INTERRUPTED: &str = "interrupted";

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            health_timeout: Duration::from_secs(300),
            cancel: Default::default(),
            state_dir: std::path::PathBuf::from(".stackc"),
        }
    }
}

/// What an apply did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub created: usize,
    pub recreated: usize,
    pub started: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

fn err(what: &str, e: bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{what}: the engine answered {status_code}: {message}"),
        other if lost(&other) => format!(
            "{what}: the Docker engine stopped answering ({other}); what was done so far stays, and `stackc apply` converges from there once the engine is back"
        ),
        other => format!("{what}: {other}"),
    }
}

/// The connection to the engine failed or broke: it stopped, restarted or
/// cannot be reached.
fn lost(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::HyperLegacyError { .. }
            | bollard::errors::Error::HyperResponseError { .. }
            | bollard::errors::Error::IOError { .. }
            | bollard::errors::Error::RequestTimeoutError
    )
}

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Transient engine errors (connection trouble, 5xx) are retried with
/// backoff; anything else is reported at once.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, bollard::errors::Error>>,
{
    let mut delay = Duration::from_millis(200);
    for attempt in 0..4 {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let transient = match &e {
                    bollard::errors::Error::DockerResponseServerError { status_code, .. } => {
                        *status_code >= 500 && *status_code != 501
                    }
                    bollard::errors::Error::HyperResponseError { .. }
                    | bollard::errors::Error::IOError { .. } => true,
                    // No connection: the request was never sent.
                    bollard::errors::Error::HyperLegacyError { err } => err.is_connect(),
                    _ => false,
                };
                if !transient || attempt == 3 {
                    return Err(err(what, e));
                }
                tracing::warn!("{what}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    unreachable!("the last attempt returns")
}

impl Engine {
    pub fn connect(profile: &Profile) -> Result<Engine, String> {
        let docker = match &profile.docker_host {
            Some(h) => Docker::connect_with_host(h),
            None => Docker::connect_with_defaults(),
        }
        .map_err(|e| format!("cannot reach the Docker engine: {e}"))?;
        Ok(Engine { docker })
    }

    /// Check the engine answers, with a clear error when it does not.
    pub async fn ping(&self) -> Result<(), String> {
        self.docker.ping().await.map(|_| ()).map_err(|e| {
            format!("cannot reach the Docker engine ({e}); is dockerd running and is DOCKER_HOST (or the target profile) right?")
        })
    }

    /// Containers, networks and volumes that matter to `desired`: those the
    /// stack owns, and any others with one of its names.
    pub async fn observe(&self, desired: &Desired) -> Result<Observed, String> {
        let names: std::collections::HashSet<&str> =
            desired.containers.iter().map(|c| c.name.as_str()).collect();
        let list = retry("list containers", || {
            self.docker.list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
        })
        .await?;
        let mut containers = Vec::new();
        for c in list {
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default();
            let labels: BTreeMap<String, String> =
                c.labels.clone().unwrap_or_default().into_iter().collect();
            let owned = labels.get(LABEL_STACK) == Some(&desired.stack);
            if !owned && !names.contains(name.as_str()) {
                continue;
            }
            let status = c.status.clone().unwrap_or_default();
            let health = if status.contains("(healthy)") {
                Some("healthy".to_string())
            } else if status.contains("(unhealthy)") {
                Some("unhealthy".to_string())
            } else if status.contains("(health: starting)") {
                Some("starting".to_string())
            } else {
                None
            };
            let running = c.state.map(|s| s.to_string() == "running").unwrap_or(false);
            containers.push(ObservedContainer {
                name,
                id: c.id.unwrap_or_default(),
                running,
                health,
                labels,
                image: c.image.unwrap_or_default(),
            });
        }
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        let nets = retry("list networks", || {
            self.docker.list_networks(None::<ListNetworksOptions>)
        })
        .await?;
        let networks = nets
            .into_iter()
            .filter_map(|n| {
                let name = n.name?;
                let labels: BTreeMap<String, String> =
                    n.labels.unwrap_or_default().into_iter().collect();
                (name == desired.network.name || labels.get(LABEL_STACK) == Some(&desired.stack))
                    .then_some(ObservedObject { name, labels })
            })
            .collect();
        let vols = retry("list volumes", || {
            self.docker.list_volumes(None::<ListVolumesOptions>)
        })
        .await?;
        let volumes = vols
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| {
                let labels: BTreeMap<String, String> = v.labels.into_iter().collect();
                (desired.volumes.contains(&v.name)
                    || labels.get(LABEL_STACK) == Some(&desired.stack))
                .then_some(ObservedObject {
                    name: v.name,
                    labels,
                })
            })
            .collect();
        Ok(Observed {
            containers,
            networks,
            volumes,
            now: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    /// Every image the plan needs is present, pulled if missing. Runs
    /// before any change, so a missing image changes nothing.
    pub async fn ensure_images(&self, desired: &Desired) -> Result<(), String> {
        let mut images: Vec<&str> = desired
            .containers
            .iter()
            .map(|c| c.image.as_str())
            .collect();
        images.sort_unstable();
        images.dedup();
        for image in images {
            match self.docker.inspect_image(image).await {
                Ok(_) => continue,
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(err(&format!("inspect image {image}"), e)),
            }
            tracing::info!("pulling {image}");
            let mut stream = self.docker.create_image(
                Some(CreateImageOptions {
                    from_image: Some(image.to_string()),
                    ..Default::default()
                }),
                None,
                None,
            );
            while let Some(item) = stream.next().await {
                if let Err(e) = item {
                    return Err(format!(
                        "image {image} is not on this engine and cannot be pulled ({}); build or load it, or map it to a local image in the target profile's image-map",
                        err("pull", e)
                    ));
                }
            }
        }
        Ok(())
    }

    async fn create_network(&self, desired: &Desired) -> Result<(), String> {
        let net = &desired.network;
        let labels: HashMap<String, String> = [
            (LABEL_STACK.to_string(), desired.stack.clone()),
            (LABEL_OWNER.to_string(), "stackc".to_string()),
        ]
        .into();
        let ipam = net.subnet.as_ref().map(|s| Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(s.clone()),
                ip_range: net.ip_range.clone(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let req = NetworkCreateRequest {
            name: net.name.clone(),
            driver: Some("bridge".into()),
            ipam,
            labels: Some(labels),
            ..Default::default()
        };
        retry(&format!("create network {}", net.name), || {
            self.docker.create_network(req.clone())
        })
        .await
        .map(|_| ())
    }

    async fn create_volume(&self, stack: &str, name: &str) -> Result<(), String> {
        let labels: HashMap<String, String> = [
            (LABEL_STACK.to_string(), stack.to_string()),
            (LABEL_OWNER.to_string(), "stackc".to_string()),
        ]
        .into();
        let req = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..Default::default()
        };
        retry(&format!("create volume {name}"), || {
            self.docker.create_volume(req.clone())
        })
        .await
        .map(|_| ())
    }

    fn create_body(
        &self,
        desired: &Desired,
        spec: &ContainerSpec,
        secrets: &HashMap<String, String>,
    ) -> ContainerCreateBody {
        let env: Vec<String> = spec
            .env
            .iter()
            .map(|(k, v)| match v {
                EnvValue::Literal(s) => format!("{k}={s}"),
                EnvValue::Secret(var) => format!(
                    "{k}={}",
                    secrets.get(var).map(String::as_str).unwrap_or_default()
                ),
            })
            .collect();
        let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        labels.insert(LABEL_STACK.into(), desired.stack.clone());
        labels.insert(LABEL_OWNER.into(), "stackc".into());
        labels.insert(LABEL_HASH.into(), spec.hash());
        labels.insert(
            LABEL_SPEC.into(),
            serde_json::to_string(spec).expect("spec"),
        );
        labels.insert(LABEL_VERSION.into(), env!("CARGO_PKG_VERSION").into());
        let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        let mut exposed = Vec::new();
        for p in &spec.ports {
            let key = format!("{}/{}", p.container_port, p.protocol);
            exposed.push(key.clone());
            port_bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: Some(p.host_ip.clone()),
                    host_port: Some(p.host_port.to_string()),
                });
        }
        let binds: Vec<String> = spec
            .mounts
            .iter()
            .map(|m| {
                format!(
                    "{}:{}{}",
                    m.source,
                    m.target,
                    if m.read_only { ":ro" } else { "" }
                )
            })
            .collect();
        let restart = match spec.restart.as_str() {
            "no" => RestartPolicyNameEnum::NO,
            "always" => RestartPolicyNameEnum::ALWAYS,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            _ => RestartPolicyNameEnum::UNLESS_STOPPED,
        };
        let health = spec.health.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: Some(h.interval_ms as i64 * 1_000_000),
            timeout: Some(h.timeout_ms as i64 * 1_000_000),
            retries: Some(i64::from(h.retries)),
            start_period: Some(h.start_period_ms as i64 * 1_000_000),
            ..Default::default()
        });
        let endpoint = EndpointSettings {
            ipam_config: spec.ipv4.as_ref().map(|a| EndpointIpamConfig {
                ipv4_address: Some(a.clone()),
                ..Default::default()
            }),
            aliases: Some(spec.aliases.clone()),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
            env: Some(env),
            labels: Some(labels),
            healthcheck: health,
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(HostConfig {
                binds: (!binds.is_empty()).then_some(binds),
                port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
                restart_policy: Some(RestartPolicy {
                    name: Some(restart),
                    maximum_retry_count: None,
                }),
                nano_cpus: spec.nano_cpus,
                memory: spec.memory,
                memory_reservation: spec.memory_reservation,
                network_mode: Some(desired.network.name.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some([(desired.network.name.clone(), endpoint)].into()),
            }),
            ..Default::default()
        }
    }

    /// The bollard client, for the rollout driver.
    pub(crate) fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Create and start one container.
    pub(crate) async fn create_started(
        &self,
        desired: &Desired,
        spec: &ContainerSpec,
        secrets: &HashMap<String, String>,
    ) -> Result<(), String> {
        self.create_and_start(desired, spec, secrets).await
    }

    /// Wait until a container is ready (no cancellation).
    pub(crate) async fn ready(
        &self,
        spec: &ContainerSpec,
        timeout: Duration,
    ) -> Result<(), String> {
        self.wait_ready(spec, timeout, &std::sync::atomic::AtomicBool::new(false))
            .await
    }

    async fn create_and_start(
        &self,
        desired: &Desired,
        spec: &ContainerSpec,
        secrets: &HashMap<String, String>,
    ) -> Result<(), String> {
        let body = self.create_body(desired, spec, secrets);
        let opts = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let (opts, body) = (&opts, &body);
        retry(&format!("create container {}", spec.name), || async move {
            match self
                .docker
                .create_container(Some(opts.clone()), body.clone())
                .await
            {
                // An interrupted apply's create can be carried out after
                // this apply looked (or an earlier attempt's answer was
                // lost): the container it made is the one wanted.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) if self.defined_as(desired, spec).await => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await?;
        self.start(&spec.name).await
    }

    /// Whether `spec`'s container exists, owned by the stack and defined
    /// as `spec` says.
    async fn defined_as(&self, desired: &Desired, spec: &ContainerSpec) -> bool {
        let Ok(info) = self
            .docker
            .inspect_container(&spec.name, None::<InspectContainerOptions>)
            .await
        else {
            return false;
        };
        let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
        labels.get(LABEL_STACK) == Some(&desired.stack)
            && labels.get(LABEL_OWNER).map(String::as_str) == Some("stackc")
            && labels.get(LABEL_HASH) == Some(&spec.hash())
    }

    async fn start(&self, name: &str) -> Result<(), String> {
        retry(&format!("start container {name}"), || async move {
            match self
                .docker
                .start_container(name, None::<StartContainerOptions>)
                .await
            {
                // Already running: started by an interrupted apply, or by
                // an earlier attempt whose answer was lost.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304, ..
                }) => Ok(()),
                other => other,
            }
        })
        .await
    }

    /// Stop and remove a container; its named volumes stay.
    pub async fn remove(&self, name: &str) -> Result<(), String> {
        match self
            .docker
            .stop_container(
                name,
                Some(StopContainerOptions {
                    t: Some(10),
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => {}
            Err(e) if not_found(&e) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(err(&format!("stop container {name}"), e)),
        }
        match self
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    v: false,
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(err(&format!("remove container {name}"), e)),
        }
    }

    /// Wait until `spec`'s container is healthy (or running, without a
    /// health check); on timeout, say which and show its last health output.
    async fn wait_ready(
        &self,
        spec: &ContainerSpec,
        timeout: Duration,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if cancel.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(INTERRUPTED.into());
            }
            let info = retry(&format!("inspect container {}", spec.name), || {
                self.docker
                    .inspect_container(&spec.name, None::<InspectContainerOptions>)
            })
            .await?;
            let state = info.state.unwrap_or_default();
            let running = state.running.unwrap_or(false);
            let health = state
                .health
                .as_ref()
                .and_then(|h| h.status)
                .map(|s| s.to_string());
            let last = state
                .health
                .as_ref()
                .and_then(|h| h.log.as_ref())
                .and_then(|l| l.last())
                .and_then(|r| r.output.clone())
                .unwrap_or_default();
            if !running && !state.restarting.unwrap_or(false) {
                return Err(format!(
                    "service {} (container {}) exited with code {} before it became ready",
                    spec.service,
                    spec.name,
                    state.exit_code.unwrap_or_default()
                ));
            }
            match (&spec.health, health.as_deref()) {
                // A crash-looping container is "running" between restarts.
                (None, _) if running && !state.restarting.unwrap_or(false) => return Ok(()),
                (Some(_), Some("healthy")) => return Ok(()),
                // Docker says unhealthy only after `retries` failures in a
                // row: waiting longer would only delay the same answer.
                (Some(_), Some("unhealthy")) => {
                    let shown = last.trim();
                    return Err(format!(
                        "service {} (container {}) is unhealthy; last health output: {}",
                        spec.service,
                        spec.name,
                        if shown.is_empty() { "(none)" } else { shown }
                    ));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                let shown = last.trim();
                return Err(format!(
                    "service {} (container {}) did not become healthy within {}s; status {}; last health output: {}",
                    spec.service,
                    spec.name,
                    timeout.as_secs(),
                    health.unwrap_or_else(|| "none".into()),
                    if shown.is_empty() { "(none)" } else { shown }
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Carry out `plan`: network and volumes, then each phase's containers
    /// in parallel, each phase waiting until the previous one is ready.
    /// `progress` receives one line per step.
    pub async fn apply(
        &self,
        plan: &Plan,
        opts: &ApplyOptions,
        jobs: &[super::rollout::RolloutJob],
        progress: &(dyn Fn(String) + Sync),
    ) -> Result<Summary, String> {
        // Containers a rollout replaces, instead of a plain recreate.
        let rolling_set: std::collections::HashSet<&str> = jobs
            .iter()
            .filter(|j| !j.finish)
            .flat_map(|j| j.stable.iter().map(|s| s.name.as_str()))
            .collect();
        // New-version containers a job removes itself, once traffic is off.
        let retired: std::collections::HashSet<&str> = jobs
            .iter()
            .flat_map(|j| j.next.iter().map(|s| s.name.as_str()))
            .collect();
        let desired = &plan.desired;
        if !plan.errors.is_empty() {
            return Err(plan.errors.join("\n"));
        }
        // Secrets are read now, from this process's environment, and go
        // only into the engine's API call: never into a file or a log.
        let secrets = read_secrets(&desired.containers).map_err(|missing| {
            format!(
                "secrets are read from the environment at apply time; set {} (nothing was changed)",
                missing.join(", ")
            )
        })?;
        let needs_change = plan.has_changes();
        if needs_change {
            self.ensure_images(desired).await?;
        }
        let mut summary = Summary::default();
        for c in plan.changes.iter().filter(|c| c.kind != Kind::Container) {
            match (&c.kind, &c.action) {
                (Kind::Network, Action::Create) => {
                    progress(format!("create network {}", c.name));
                    self.create_network(desired).await?;
                    summary.created += 1;
                }
                (Kind::Volume, Action::Create) => {
                    progress(format!("create volume {}", c.name));
                    self.create_volume(&desired.stack, &c.name).await?;
                    summary.created += 1;
                }
                _ => summary.unchanged += 1,
            }
        }
        let by_name: HashMap<&str, &ContainerSpec> = desired
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        let phases = desired
            .containers
            .iter()
            .map(|c| c.phase)
            .max()
            .map_or(0, |m| m + 1);
        let cancelled = || opts.cancel.load(std::sync::atomic::Ordering::SeqCst);
        for phase in 0..phases {
            if cancelled() {
                return Err(INTERRUPTED.into());
            }
            let changes: Vec<_> = plan
                .changes
                .iter()
                .filter(|c| c.kind == Kind::Container && c.phase == Some(phase))
                .collect();
            if changes
                .iter()
                .any(|c| !matches!(c.action, Action::Unchanged))
            {
                progress(format!(
                    "phase {} ({}): {} containers",
                    phase + 1,
                    desired.phases.get(phase).map_or("", String::as_str),
                    changes.len()
                ));
            }
            let rolling = &rolling_set;
            let work = changes.iter().map(|c| {
                let spec = by_name[c.name.as_str()];
                let secrets = &secrets;
                async move {
                    if cancelled() && !matches!(c.action, Action::Unchanged) {
                        return Err(INTERRUPTED.to_string());
                    }
                    match &c.action {
                        Action::Create => {
                            progress(format!("  create {}", c.name));
                            self.create_and_start(desired, spec, secrets).await?;
                            Ok::<_, String>((1, 0, 0, 0))
                        }
                        Action::Recreate { .. } if rolling.contains(c.name.as_str()) => {
                            Ok((0, 0, 0, 1))
                        }
                        Action::Recreate { reasons } => {
                            progress(format!("  recreate {} ({})", c.name, reasons.join(", ")));
                            // Static addresses are unique: the old container
                            // has to go before the new one can take its place.
                            self.remove(&c.name).await?;
                            self.create_and_start(desired, spec, secrets).await?;
                            Ok((0, 1, 0, 0))
                        }
                        Action::Start => {
                            progress(format!("  start {}", c.name));
                            self.start(&c.name).await?;
                            Ok((0, 0, 1, 0))
                        }
                        _ => Ok((0, 0, 0, 1)),
                    }
                }
            });
            for r in futures_util::future::join_all(work).await {
                let (a, b, s, u) = r?;
                summary.created += a;
                summary.recreated += b;
                summary.started += s;
                summary.unchanged += u;
            }
            // A phase is done when all its containers are ready; checking
            // unchanged ones too catches a dependency that died meanwhile.
            let waits = changes.iter().map(|c| {
                let spec = by_name[c.name.as_str()];
                let timeout = spec.health.as_ref().map_or(opts.health_timeout, |h| {
                    let budget = h.start_period_ms
                        + (h.interval_ms + h.timeout_ms) * (u64::from(h.retries) + 2);
                    Duration::from_millis(budget.max(30_000)).min(opts.health_timeout)
                });
                self.wait_ready(spec, timeout, &opts.cancel)
            });
            for r in futures_util::future::join_all(waits).await {
                r?;
            }
            for job in jobs
                .iter()
                .filter(|j| j.stable.first().is_some_and(|s| s.phase == phase))
            {
                if cancelled() {
                    return Err(INTERRUPTED.into());
                }
                if job.finish {
                    self.finish_interrupted(job, progress).await?;
                    continue;
                }
                self.rollout(
                    desired,
                    job,
                    &secrets,
                    &opts.state_dir,
                    &opts.cancel,
                    progress,
                )
                .await?;
                summary.recreated += job.stable.len();
                summary.unchanged -= job.stable.len().min(summary.unchanged);
            }
        }
        for c in plan.changes.iter().filter(|c| {
            matches!(
                c.action,
                Action::Delete | Action::Expired | Action::Leftover
            )
        }) {
            if retired.contains(c.name.as_str()) {
                summary.deleted += 1;
                continue;
            }
            if cancelled() {
                return Err(INTERRUPTED.into());
            }
            progress(format!("delete {}", c.name));
            self.remove(&c.name).await?;
            summary.deleted += 1;
        }
        Ok(summary)
    }

    /// Remove every container and the network of `stack`, in reverse phase
    /// order, stopping each phase in parallel; volumes only when asked.
    pub async fn destroy(
        &self,
        desired: &Desired,
        volumes: bool,
        progress: &(dyn Fn(String) + Sync),
    ) -> Result<usize, String> {
        let observed = self.observe(desired).await?;
        let owned: Vec<&ObservedContainer> = observed
            .containers
            .iter()
            .filter(|c| c.owned_by(&desired.stack))
            .collect();
        let phase_of: HashMap<&str, usize> = desired
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.phase))
            .collect();
        let mut removed = 0;
        // Orphans (no phase) first, then phases from last to first.
        let max = phase_of.values().copied().max().unwrap_or(0) + 1;
        for phase in (0..=max).rev() {
            let batch: Vec<&&ObservedContainer> = owned
                .iter()
                .filter(|c| phase_of.get(c.name.as_str()).copied().unwrap_or(max) == phase)
                .collect();
            if batch.is_empty() {
                continue;
            }
            let work = batch.iter().map(|c| {
                progress(format!("remove {}", c.name));
                self.remove(&c.name)
            });
            for r in futures_util::future::join_all(work).await {
                r?;
                removed += 1;
            }
        }
        for n in observed
            .networks
            .iter()
            .filter(|n| n.owned_by(&desired.stack))
        {
            progress(format!("remove network {}", n.name));
            match self.docker.remove_network(&n.name).await {
                Ok(()) => removed += 1,
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(err(&format!("remove network {}", n.name), e)),
            }
        }
        if volumes {
            for v in observed
                .volumes
                .iter()
                .filter(|v| v.owned_by(&desired.stack))
            {
                progress(format!("remove volume {}", v.name));
                match self
                    .docker
                    .remove_volume(
                        &v.name,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    )
                    .await
                {
                    Ok(()) => removed += 1,
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(err(&format!("remove volume {}", v.name), e)),
                }
            }
        }
        Ok(removed)
    }
}

/// The values of the secrets `specs` read, from this process's
/// environment, or the names of those not set.
pub(crate) fn read_secrets(
    specs: &[ContainerSpec],
) -> Result<HashMap<String, String>, Vec<String>> {
    let mut secrets = HashMap::new();
    let mut missing = Vec::new();
    for v in specs.iter().flat_map(|c| c.env.values()) {
        if let EnvValue::Secret(var) = v {
            match std::env::var(var) {
                Ok(val) => {
                    secrets.insert(var.clone(), val);
                }
                Err(_) => missing.push(var.clone()),
            }
        }
    }
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        Ok(secrets)
    } else {
        Err(missing)
    }
}

/// The settings of a running container that drift detection compares.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Live {
    pub running: bool,
    pub image: String,
    pub env: Vec<String>,
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub restart: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Engine {
    pub async fn live(&self, name: &str) -> Result<Option<Live>, String> {
        let info = match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => i,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(err(&format!("inspect container {name}"), e)),
        };
        let config = info.config.unwrap_or_default();
        let host = info.host_config.unwrap_or_default();
        Ok(Some(Live {
            running: info.state.and_then(|s| s.running).unwrap_or(false),
            image: config.image.unwrap_or_default(),
            env: config.env.unwrap_or_default(),
            memory: host.memory.filter(|m| *m != 0),
            nano_cpus: host.nano_cpus.filter(|m| *m != 0),
            restart: host
                .restart_policy
                .and_then(|r| r.name)
                .map(|n| n.to_string()),
            labels: config.labels.unwrap_or_default().into_iter().collect(),
        }))
    }
}
