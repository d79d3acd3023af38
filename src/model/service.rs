//! A service: one container image run as one or more instances.

use super::{Cluster, Cpu, Duration, Memory, Rollout};
use crate::source::{Span, Spanned};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A container port, optionally published on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub container: Spanned<u16>,
    pub published: Option<Spanned<u16>>,
    pub protocol: Protocol,
    /// Published on the environment's public address instead of 127.0.0.1.
    pub public: bool,
    pub name: Option<String>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SecretSource {
    /// Read from this environment variable at apply time.
    Env(String),
    /// Read from this file at apply time.
    File(String),
}

/// A secret made available to the container as an environment variable (or
/// a file), never written into artifacts.
#[derive(Debug, Clone, PartialEq)]
pub struct Secret {
    pub name: Spanned<String>,
    pub source: SecretSource,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EnvVar {
    pub name: Spanned<String>,
    pub value: Spanned<String>,
}

/// A named volume mounted into the container.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub name: Spanned<String>,
    pub path: Spanned<String>,
    pub read_only: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HealthProbe {
    /// Shell command run in the container; exit 0 is healthy.
    Cmd(Spanned<String>),
    /// HTTP GET of `path` on `port`; 2xx/3xx is healthy.
    Http {
        path: Spanned<String>,
        port: Spanned<u16>,
    },
    /// TCP connect to `port`.
    Tcp(Spanned<u16>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub probe: HealthProbe,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Option<Duration>,
    pub span: Span,
}

/// CPU and memory for requests (reserved) and limits (maximum).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceSet {
    pub cpu: Option<Spanned<Cpu>>,
    pub memory: Option<Spanned<Memory>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    pub requests: ResourceSet,
    pub limits: ResourceSet,
    pub span: Span,
}

/// Options for the runtime in the image (e.g. JVM flags), passed through an
/// environment variable.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeOpts {
    pub value: Spanned<String>,
    pub env: String,
}

/// Where Prometheus scrapes the service's own metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub path: Spanned<String>,
    pub port: Spanned<u16>,
    pub span: Span,
}

/// A sidecar exporter that exposes metrics for the service (postgres,
/// redis, nginx, mysql, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Exporter {
    pub kind: Spanned<String>,
    pub image: Option<Spanned<String>>,
    pub port: u16,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    Started,
    Healthy,
    Completed,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    pub service: Spanned<String>,
    pub condition: Condition,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Autoscale {
    pub min: Spanned<u32>,
    pub max: Spanned<u32>,
    pub cpu_percent: Option<Spanned<u32>>,
    pub memory_percent: Option<Spanned<u32>>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum VpaMode {
    Off,
    Initial,
    Recreate,
    Auto,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerticalAutoscale {
    pub mode: VpaMode,
    pub min: ResourceSet,
    pub max: ResourceSet,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    Always,
    OnFailure,
    UnlessStopped,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: Spanned<String>,
    pub tier: Option<Spanned<String>>,
    pub image: Spanned<String>,
    pub command: Vec<Spanned<String>>,
    pub args: Vec<Spanned<String>>,
    pub ports: Vec<Port>,
    pub env: Vec<EnvVar>,
    pub secrets: Vec<Secret>,
    pub volumes: Vec<Volume>,
    pub health: Option<Health>,
    pub resources: Option<Resources>,
    // The settings most services leave out are boxed: a service is moved
    // and stored whole, ten thousand times over in a large topology.
    pub runtime_opts: Option<Box<RuntimeOpts>>,
    pub labels: Vec<(Spanned<String>, String)>,
    pub metrics: Option<Metrics>,
    pub exporters: Vec<Exporter>,
    pub depends_on: Vec<Dependency>,
    pub cluster: Cluster,
    pub autoscale: Option<Box<Autoscale>>,
    pub vertical_autoscale: Option<Box<VerticalAutoscale>>,
    pub rollout: Option<Box<Rollout>>,
    pub restart: RestartPolicy,
    pub service_account: Option<Spanned<String>>,
    pub span: Span,
}

impl Service {
    /// How many containers the service runs at steady state.
    pub fn instances(&self) -> u32 {
        self.cluster.replicas.value
    }
}
