//! ## What it checks
//! Resource requests do not exceed limits, vertical-autoscaling minimums do
//! not exceed maximums, and `keep-previous` is only used by blue-green
//! rollouts (a canary has no previous colour to keep).
//!
//! ## Why
//! Kubernetes rejects a request above its limit at apply time; an inverted
//! VPA range pins the recommendation; a setting that does nothing misleads.

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::*;

fn ordered(low: &ResourceSet, high: &ResourceSet, what: (&str, &str), out: &mut Diagnostics) {
    if let (Some(l), Some(h)) = (&low.cpu, &high.cpu)
        && l.value.millis > h.value.millis
    {
        out.push(
            Diagnostic::error(
                Code::OutOfRange,
                format!(
                    "cpu {} {} is above its {} {}",
                    what.0, l.value.text, what.1, h.value.text
                ),
            )
            .at(l.span, format!("above the {}", what.1))
            .also(h.span, what.1.to_string())
            .help(format!("the {} must not exceed the {}", what.0, what.1)),
        );
    }
    if let (Some(l), Some(h)) = (&low.memory, &high.memory)
        && l.value.bytes > h.value.bytes
    {
        out.push(
            Diagnostic::error(
                Code::OutOfRange,
                format!(
                    "memory {} {} is above its {} {}",
                    what.0, l.value.text, what.1, h.value.text
                ),
            )
            .at(l.span, format!("above the {}", what.1))
            .also(h.span, what.1.to_string())
            .help(format!("the {} must not exceed the {}", what.0, what.1)),
        );
    }
}

pub fn check(t: &Topology, out: &mut Diagnostics) {
    for s in &t.services {
        if let Some(r) = &s.resources {
            ordered(&r.requests, &r.limits, ("request", "limit"), out);
        }
        if let Some(v) = &s.vertical_autoscale {
            ordered(&v.min, &v.max, ("minimum", "maximum"), out);
        }
        if let Some(r) = &s.rollout
            && r.strategy == RolloutStrategy::Canary
            && r.keep_previous.is_some()
        {
            out.push(
                Diagnostic::error(Code::InvalidValue, "`keep-previous` applies to blue-green rollouts only")
                    .at(r.span, "a canary rollout")
                    .help("a canary replaces the stable version in place once it reaches 100%; remove keep-previous"),
            );
        }
    }
}
