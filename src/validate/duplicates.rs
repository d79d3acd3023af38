//! ## What it checks
//! Objects of one kind have unique names: services and balancers (one
//! namespace, since both become containers and graph vertices), tiers,
//! environments, alerts, jobs, phases, service accounts; per balancer,
//! route paths and rate limits; per service, volumes, env vars and ports.
//!
//! ## Why
//! KDL lets repeated nodes coexist; in generated configs the second would
//! silently overwrite the first.

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::*;
use crate::source::Spanned;

fn unique<'a>(
    items: impl IntoIterator<Item = &'a Spanned<String>>,
    what: &str,
    hint: &str,
    out: &mut Diagnostics,
) {
    let mut seen: crate::Map<&str, &Spanned<String>> = crate::Map::default();
    for n in items {
        if let Some(first) = seen.get(n.value.as_str()) {
            out.push(
                Diagnostic::error(
                    Code::DuplicateName,
                    format!("{what} `{}` is declared twice", n.value),
                )
                .at(n.span, "declared again here")
                .also(first.span, "first declared here")
                .help(hint.to_string()),
            );
        } else {
            seen.insert(&n.value, n);
        }
    }
}

pub fn check(t: &Topology, out: &mut Diagnostics) {
    unique(
        t.services.iter().map(|s| &s.name),
        "service",
        "rename one; to change an imported service use override \"NAME\" { ... }",
        out,
    );
    unique(
        t.balancers.iter().map(|b| &b.name),
        "balancer",
        "rename one",
        out,
    );
    // Services and balancers share one namespace: both become containers,
    // DNS names and graph vertices.
    for b in &t.balancers {
        if let Some(s) = t.services.iter().find(|s| s.name.value == b.name.value) {
            out.push(
                Diagnostic::error(
                    Code::DuplicateName,
                    format!("`{}` names both a service and a balancer", b.name.value),
                )
                .at(b.name.span, "balancer")
                .also(s.name.span, "service")
                .help("services and balancers share one namespace (containers, DNS names); rename one"),
            );
        }
    }
    if let Some(m) = &t.monitoring {
        let names = t
            .services
            .iter()
            .map(|s| &s.name)
            .chain(t.balancers.iter().map(|b| &b.name));
        for name in names {
            let reserved =
                name.value == "prometheus" || (m.grafana.is_some() && name.value == "grafana");
            if reserved {
                out.push(
                    Diagnostic::error(
                        Code::DuplicateName,
                        format!("`{}` is the name of the monitoring component", name.value),
                    )
                    .at(name.span, "clashes with the `monitoring` block")
                    .also(m.span, "monitoring declared here")
                    .help(
                        "configure Prometheus and Grafana inside `monitoring`, or rename this one",
                    ),
                );
            }
        }
    }
    if let Some(n) = &t.network {
        unique(
            n.tiers.iter().map(|t| &t.name),
            "tier",
            "give each tier its own name",
            out,
        );
    }
    unique(
        t.environments.iter().map(|e| &e.name),
        "environment",
        "merge the two env blocks",
        out,
    );
    unique(t.jobs.iter().map(|j| &j.name), "job", "rename one", out);
    if let Some(m) = &t.monitoring {
        unique(
            m.alerts.iter().map(|a| &a.name),
            "alert",
            "rename one; Prometheus keeps both but they are indistinguishable",
            out,
        );
    }
    if let Some(p) = &t.phases {
        unique(p.phases.iter().map(|p| &p.name), "phase", "rename one", out);
    }
    if let Some(k) = &t.kubernetes {
        unique(
            k.service_accounts.iter().map(|s| &s.name),
            "service account",
            "merge their rules",
            out,
        );
    }
    for b in &t.balancers {
        unique(
            b.routes.iter().map(|r| &r.path),
            "route",
            "one route per path; nginx rejects duplicate locations",
            out,
        );
        unique(
            b.rate_limits.iter().map(|r| &r.name),
            "rate limit",
            "rename one",
            out,
        );
    }
    for s in &t.services {
        unique(
            s.volumes.iter().map(|v| &v.name),
            "volume",
            "mount each volume once",
            out,
        );
        let vars: Vec<&Spanned<String>> = s
            .env
            .iter()
            .map(|e| &e.name)
            .chain(s.secrets.iter().map(|x| &x.name))
            .collect();
        unique(
            vars,
            "environment variable",
            "set each variable once (env or secret)",
            out,
        );
        let ports: Vec<Spanned<String>> = s
            .ports
            .iter()
            .map(|p| {
                Spanned::new(
                    format!("{}/{:?}", p.container.value, p.protocol).to_lowercase(),
                    p.container.span,
                )
            })
            .collect();
        unique(
            ports.iter(),
            "port",
            "declare each container port once",
            out,
        );
    }
}
