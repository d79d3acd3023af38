//! ## What it checks
//! Clustering strategies get sizes they can work with: active-passive and
//! primary-replica at least 2 replicas; quorum an odd number, at least 3;
//! sharded at least 2; backup-count below the replica count. Autoscaling
//! bounds are ordered, have a target, and contain the replica count.
//!
//! ## Why
//! A 2-node quorum loses its majority with one failure, the same as one
//! node: it only adds a way to fail. A standby needs somewhere to run.

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::*;

pub fn check(t: &Topology, out: &mut Diagnostics) {
    for s in &t.services {
        let c = &s.cluster;
        let n = c.replicas.value;
        let problem = match c.strategy {
            Strategy::Single if n > 1 => Some((
                "runs one instance; several replicas need a clustering strategy",
                "cluster \"active-active\" replicas=N, or drop replicas".to_string(),
            )),
            _ if c.split_brain_protection && n < 3 => Some((
                "cannot use split-brain protection: a majority of 2 is both members, so one failure stops it",
                "replicas=3".to_string(),
            )),
            Strategy::ActivePassive | Strategy::PrimaryReplica if n < 2 => Some((
                "needs at least 2 replicas: one active and one to take over",
                "replicas=2".to_string(),
            )),
            Strategy::Quorum if n < 3 || n % 2 == 0 => Some((
                "needs an odd number of at least 3 nodes to keep a majority through a failure",
                format!("replicas={}", if n < 3 { 3 } else { n + 1 }),
            )),
            Strategy::Sharded if n < 2 => {
                Some(("needs at least 2 shards", "replicas=2".to_string()))
            }
            _ => None,
        };
        if let Some((why, fix)) = problem {
            out.push(
                Diagnostic::error(
                    Code::ClusterSize,
                    format!(
                        "{} cluster `{}` with {n} replica(s) {why}",
                        c.strategy.as_str(),
                        s.name.value
                    ),
                )
                .at(c.replicas.span, format!("{n} replica(s)"))
                .help(format!("set {fix}")),
            );
        }
        if let Some(b) = &c.backup_count
            && b.value >= n
            && n > 0
        {
            out.push(
                Diagnostic::error(
                    Code::ClusterSize,
                    format!("backup-count {} needs more than {n} replicas", b.value),
                )
                .at(b.span, "each backup lives on another member")
                .help(format!(
                    "lower backup-count to at most {}, or raise replicas to {}",
                    n.saturating_sub(1),
                    b.value + 1
                )),
            );
        }
        if let Some(a) = &s.autoscale {
            if a.max.value < a.min.value {
                out.push(
                    Diagnostic::error(
                        Code::AutoscaleRange,
                        format!("autoscale max {} is below min {}", a.max.value, a.min.value),
                    )
                    .at(a.max.span, "below min")
                    .also(a.min.span, "min")
                    .help("max must be at least min"),
                );
            }
            if (n < a.min.value || n > a.max.value) && c.strategy != Strategy::Single {
                out.push(
                    Diagnostic::error(
                        Code::AutoscaleRange,
                        format!(
                            "replicas={n} is outside autoscale {}..{}",
                            a.min.value, a.max.value
                        ),
                    )
                    .at(c.replicas.span, "outside the autoscaling bounds")
                    .also(a.span, "bounds")
                    .help("set replicas within min..max (it is the starting count)"),
                );
            }
            if matches!(c.strategy, Strategy::Quorum | Strategy::Sharded) {
                out.push(
                    Diagnostic::error(Code::AutoscaleRange, format!("a {} cluster cannot be autoscaled", c.strategy.as_str()))
                        .at(a.span, "membership is fixed")
                        .help("quorum and sharded clusters change membership deliberately; remove autoscale"),
                );
            }
        }
    }
}
