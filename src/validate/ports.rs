//! ## What it checks
//! No two published ports (services, balancer listeners, Prometheus,
//! Grafana) use the same host port and protocol, and probes and metrics
//! point at ports the service declares.
//!
//! ## Why
//! The second container would fail to start with "port is already
//! allocated", in the middle of an apply; a probe on an undeclared port
//! never succeeds.

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::*;
use crate::source::Span;

pub fn check(t: &Topology, out: &mut Diagnostics) {
    let mut used: crate::Map<(u16, Protocol), (Span, String)> = crate::Map::default();
    let mut claim =
        |port: u16, proto: Protocol, span: Span, owner: String, out: &mut Diagnostics| {
            if let Some((first, who)) = used.get(&(port, proto)) {
                out.push(
                    Diagnostic::error(
                        Code::PortConflict,
                        format!("host port {port} is published by both {who} and {owner}"),
                    )
                    .at(span, "published again here")
                    .also(*first, "first published here")
                    .help("give one of them another published= port"),
                );
            } else {
                used.insert((port, proto), (span, owner));
            }
        };
    for s in &t.services {
        // Replicas share nothing on the host only when not published.
        for p in &s.ports {
            if let Some(h) = &p.published {
                claim(
                    h.value,
                    p.protocol,
                    h.span,
                    format!("service `{}`", s.name.value),
                    out,
                );
            }
        }
        let declared = |port: u16| s.ports.iter().any(|p| p.container.value == port);
        let mut probe = |port: &crate::source::Spanned<u16>, what: &str| {
            if !s.ports.is_empty() && !declared(port.value) {
                out.push(
                    Diagnostic::error(
                        Code::UndeclaredPort,
                        format!(
                            "{what} uses port {} which service `{}` does not declare",
                            port.value, s.name.value
                        ),
                    )
                    .at(port.span, "not a declared port")
                    .help(format!(
                        "add `port {}` to the service, or point the {what} at a declared port",
                        port.value
                    )),
                );
            }
        };
        if let Some(h) = &s.health {
            match &h.probe {
                HealthProbe::Http { port, .. } => probe(port, "health check"),
                HealthProbe::Tcp(port) => probe(port, "health check"),
                HealthProbe::Cmd(_) => {}
            }
        }
        if let Some(m) = &s.metrics {
            probe(&m.port, "metrics endpoint");
        }
    }
    for b in &t.balancers {
        for l in &b.listeners {
            let h = l.published.as_ref().unwrap_or(&l.port);
            claim(
                h.value,
                Protocol::Tcp,
                h.span,
                format!("balancer `{}`", b.name.value),
                out,
            );
        }
    }
    if let Some(m) = &t.monitoring {
        if let Some(p) = &m.prometheus.published {
            claim(p.value, Protocol::Tcp, p.span, "prometheus".into(), out);
        }
        if let Some(p) = m.grafana.as_ref().and_then(|g| g.published.as_ref()) {
            claim(p.value, Protocol::Tcp, p.span, "grafana".into(), out);
        }
    }
}
