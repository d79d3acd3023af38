//! Validate stage: checks that relate values to each other and to their
//! targets. Input: a decoded [`Topology`]; output: diagnostics. Each rule
//! lives in its own file and documents what it checks and why.

mod cluster;
mod containers;
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

/// Topologies with fewer services are checked on one thread.
const PARALLEL_SERVICES: usize = 512;

/// Run every rule; all findings are returned, none stops the others. The
/// findings come in the same order whether or not the rules ran on two
/// threads: the first three rules', then the others' (the two groups take
/// about as long on a large topology).
pub fn validate(t: &Topology) -> Diagnostics {
    let first = |out: &mut Diagnostics| {
        names::check(t, out);
        duplicates::check(t, out);
        containers::check(t, out);
    };
    let others = |out: &mut Diagnostics| {
        references::check(t, out);
        resources::check(t, out);
        network::check(t, out);
        secrets::check(t, out);
        cluster::check(t, out);
        ports::check(t, out);
        warnings::check(t, out);
        crosscheck::check(t, out);
    };
    let mut out = Diagnostics::new();
    if t.services.len() < PARALLEL_SERVICES {
        first(&mut out);
        others(&mut out);
        return out;
    }
    let mut rest = Diagnostics::new();
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            let mut d = Diagnostics::new();
            first(&mut d);
            d
        });
        others(&mut rest);
        out = handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    });
    out.extend(rest);
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
