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
use crate::source::{Span, Spanned};

/// Each key equal to an earlier one, as (its index, the first one's
/// index), in order. Most lists (a service's ports, variables, volumes)
/// hold a few items: those are compared pairwise, without a map.
fn repeats<K: Eq + std::hash::Hash>(keys: &[K]) -> Vec<(usize, usize)> {
    const SMALL: usize = 16;
    let mut found = Vec::new();
    if keys.len() <= SMALL {
        for (i, k) in keys.iter().enumerate() {
            if let Some(first) = keys[..i].iter().position(|e| e == k) {
                found.push((i, first));
            }
        }
        return found;
    }
    let mut seen: crate::Map<&K, usize> = crate::Map::default();
    seen.reserve(keys.len());
    for (i, k) in keys.iter().enumerate() {
        match seen.get(k) {
            Some(&first) => found.push((i, first)),
            None => {
                seen.insert(k, i);
            }
        }
    }
    found
}

fn twice(what: &str, value: &str, again: Span, first: Span, hint: &str) -> Diagnostic {
    Diagnostic::error(
        Code::DuplicateName,
        format!("{what} `{value}` is declared twice"),
    )
    .at(again, "declared again here")
    .also(first, "first declared here")
    .help(hint.to_string())
}

fn unique<'a>(
    items: impl IntoIterator<Item = &'a Spanned<String>>,
    what: &str,
    hint: &str,
    out: &mut Diagnostics,
) {
    let items: Vec<&Spanned<String>> = items.into_iter().collect();
    let keys: Vec<&str> = items.iter().map(|n| n.value.as_str()).collect();
    for (i, first) in repeats(&keys) {
        let n = items[i];
        out.push(twice(what, &n.value, n.span, items[first].span, hint));
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
        let ports: Vec<(u16, Protocol)> = s
            .ports
            .iter()
            .map(|p| (p.container.value, p.protocol))
            .collect();
        for (i, first) in repeats(&ports) {
            let (p, f) = (&s.ports[i], &s.ports[first]);
            let value = format!("{}/{:?}", p.container.value, p.protocol).to_lowercase();
            out.push(twice(
                "port",
                &value,
                p.container.span,
                f.container.span,
                "declare each container port once",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::repeats;

    #[test]
    fn repeats_point_at_the_first_of_equal_keys_whatever_the_length() {
        for n in [0usize, 1, 5, 16, 17, 40] {
            // Every third key repeats the key two places before it.
            let keys: Vec<usize> = (0..n).map(|i| if i % 3 == 2 { i - 2 } else { i }).collect();
            let want: Vec<(usize, usize)> =
                (0..n).filter(|i| i % 3 == 2).map(|i| (i, i - 2)).collect();
            assert_eq!(repeats(&keys), want, "{n}");
        }
        assert_eq!(repeats(&["a", "b", "a", "a"]), vec![(2, 0), (3, 0)]);
        let many: Vec<String> = (0..30).map(|i| format!("k{}", i % 20)).collect();
        let found = repeats(&many);
        assert_eq!(found.len(), 10);
        assert!(found.iter().all(|&(i, first)| first == i - 20));
    }
}
