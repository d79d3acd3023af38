//! ## What it checks
//! Tier ranges lie inside the network, do not overlap each other, and have
//! room for every container placed in them (all replicas, doubled for
//! services with a rollout policy since two versions run side by side), plus
//! the network, gateway and broadcast addresses.
//!
//! ## Why
//! Docker refuses overlapping pools only at apply time, and an exhausted
//! range fails the last container of a deploy, half-way through.

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::*;

/// Addresses a range loses: network, gateway (first host) and broadcast.
const RESERVED: u64 = 3;

pub fn check(t: &Topology, out: &mut Diagnostics) {
    let Some(net) = &t.network else { return };
    // Ranges that did not parse are reported already.
    if !net.subnet_ok {
        return;
    }
    for (i, a) in net.tiers.iter().enumerate() {
        if !a.subnet_ok {
            continue;
        }
        if !net.subnet.value.contains(&a.subnet.value) {
            out.push(
                Diagnostic::error(
                    Code::SubnetOutside,
                    format!(
                        "tier `{}` ({}) is outside the network {}",
                        a.name.value, a.subnet.value, net.subnet.value
                    ),
                )
                .at(a.subnet.span, "not inside the network")
                .also(net.subnet.span, "network range")
                .help(format!("choose a range inside {}", net.subnet.value)),
            );
        }
        for b in net.tiers[..i].iter().filter(|b| b.subnet_ok) {
            if a.subnet.value.contains(&b.subnet.value.network())
                || b.subnet.value.contains(&a.subnet.value.network())
            {
                out.push(
                    Diagnostic::error(
                        Code::SubnetOverlap,
                        format!("tiers `{}` and `{}` overlap", b.name.value, a.name.value),
                    )
                    .at(a.subnet.span, format!("overlaps {}", b.subnet.value))
                    .also(b.subnet.span, "this range")
                    .help("give each tier a separate range"),
                );
            }
        }
    }
    for tier in net.tiers.iter().filter(|t| t.subnet_ok) {
        let mut need: u64 = 0;
        for s in &t.services {
            if s.tier.as_ref().is_some_and(|x| x.value == tier.name.value) {
                let per = if s.rollout.is_some() { 2 } else { 1 };
                let max = s
                    .autoscale
                    .as_ref()
                    .map_or(s.instances(), |a| a.max.value.max(s.instances()));
                need += u64::from(max) * per;
            }
        }
        for b in &t.balancers {
            if b.tier.as_ref().is_some_and(|x| x.value == tier.name.value) {
                need += u64::from(b.replicas.value);
            }
        }
        if let Some(m) = &t.monitoring
            && m.tier.as_ref().is_some_and(|x| x.value == tier.name.value)
        {
            need += 1 + u64::from(m.grafana.is_some());
        }
        let size = 1u64 << (32 - u32::from(tier.subnet.value.prefix_len()));
        let usable = size.saturating_sub(RESERVED);
        if need > usable {
            out.push(
                Diagnostic::error(
                    Code::SubnetTooSmall,
                    format!(
                        "tier `{}` needs {need} addresses but {} has {usable} usable",
                        tier.name.value, tier.subnet.value
                    ),
                )
                .at(tier.subnet.span, "too small")
                .help(format!(
                    "use a larger range (a /{} holds {})",
                    smallest_prefix(need + RESERVED),
                    (1u64 << (32 - smallest_prefix(need + RESERVED))) - RESERVED
                )),
            );
        }
    }
}

fn smallest_prefix(addresses: u64) -> u32 {
    let mut prefix = 32;
    while prefix > 0 && (1u64 << (32 - prefix)) < addresses {
        prefix -= 1;
    }
    prefix
}
