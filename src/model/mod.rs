//! The typed topology: what a KDL file says, after imports and the selected
//! environment are applied. Pure data; every user-written value keeps its
//! span so later stages can point at it.

mod balancer;
mod cluster;
mod job;
mod kubernetes;
mod monitoring;
mod network;
mod phase;
mod rollout;
mod service;
mod values;

pub use balancer::*;
pub use cluster::*;
pub use job::*;
pub use kubernetes::*;
pub use monitoring::*;
pub use network::*;
pub use phase::*;
pub use rollout::*;
pub use service::*;
pub use values::*;

use crate::source::{Span, Spanned};

/// Name, version and description of the stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub name: Spanned<String>,
    pub version: Option<Spanned<String>>,
    pub description: Option<String>,
    pub span: Span,
}

/// An `env` block as declared; its overrides are already applied to the
/// model when it is the selected environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: Spanned<String>,
    /// Marks a production environment: ports may be public without warning.
    pub production: bool,
    /// Address that `public=#true` ports are published on (default 0.0.0.0).
    pub publish_bind: Option<Spanned<std::net::Ipv4Addr>>,
    pub span: Span,
}

/// A rule telling drift detection to ignore a field, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftIgnore {
    pub service: Spanned<String>,
    pub field: Spanned<String>,
    pub reason: String,
    pub span: Span,
}

/// A whole topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub stack: Stack,
    pub network: Option<Network>,
    pub environments: Vec<Environment>,
    /// The environment selected with `--env`, if any.
    pub selected_env: Option<String>,
    /// Boxed: a service is large, and the list is built from services
    /// decoded on several threads, moved rather than copied.
    pub services: Vec<Box<Service>>,
    pub balancers: Vec<Balancer>,
    pub monitoring: Option<Monitoring>,
    pub kubernetes: Option<Kubernetes>,
    pub jobs: Vec<Job>,
    pub phases: Option<PhaseList>,
    pub drift_ignore: Vec<DriftIgnore>,
}

impl Topology {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.name.value == name)
            .map(|s| &**s)
    }

    /// The environment selected with `--env`, if any.
    pub fn env(&self) -> Option<&Environment> {
        let sel = self.selected_env.as_deref()?;
        self.environments.iter().find(|e| e.name.value == sel)
    }
}
