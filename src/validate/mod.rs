//! Validate stage: checks that relate values to each other and to their
//! targets. Input: a decoded [`Topology`]; output: diagnostics. Each rule
//! lives in its own file and documents what it checks and why.

mod cluster;
pub mod crosscheck;
mod duplicates;
mod names;
mod network;
mod ports;
mod references;
mod resources;
mod secrets;
mod warnings;

use crate::diag::Diagnostics;
use crate::model::Topology;

/// Run every rule; all findings are returned, none stops the others.
pub fn validate(t: &Topology) -> Diagnostics {
    let mut out = Diagnostics::new();
    names::check(t, &mut out);
    duplicates::check(t, &mut out);
    references::check(t, &mut out);
    resources::check(t, &mut out);
    network::check(t, &mut out);
    secrets::check(t, &mut out);
    cluster::check(t, &mut out);
    ports::check(t, &mut out);
    warnings::check(t, &mut out);
    crosscheck::check(t, &mut out);
    out
}

/// Every graph vertex name: services, balancers and monitoring components.
pub(crate) fn component_names(t: &Topology) -> Vec<&str> {
    let mut v: Vec<&str> = t.services.iter().map(|s| s.name.value.as_str()).collect();
    v.extend(t.balancers.iter().map(|b| b.name.value.as_str()));
    if let Some(m) = &t.monitoring {
        v.push("prometheus");
        if m.grafana.is_some() {
            v.push("grafana");
        }
    }
    v
}
