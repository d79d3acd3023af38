//! ## What it checks
//! Every name used as a reference is declared: services in `depends-on`,
//! routes, phases and drift-ignore rules; tiers in `tier=` and phases; rate
//! limits in routes; service accounts in services and jobs. Unknown names
//! get the closest declared name as a suggestion.
//!
//! ## Why
//! A dangling reference would produce a dependency on nothing, a route to
//! nowhere or an nginx `limit_req` on an undefined zone (a failed reload).

use crate::diag::{Code, Diagnostic, Diagnostics, did_you_mean};
use crate::model::*;
use crate::source::Spanned;

fn unknown(code: Code, what: &str, r: &Spanned<String>, known: &[&str], out: &mut Diagnostics) {
    let mut d = Diagnostic::error(code, format!("unknown {what} `{}`", r.value))
        .at(r.span, format!("no {what} of this name"));
    d = match did_you_mean(&r.value, known.iter().copied()) {
        Some(m) => d.help(format!("did you mean `{m}`?")),
        None if known.is_empty() => d.help(format!("no {what} is declared")),
        None => d.help(format!("declared: {}", known.join(", "))),
    };
    out.push(d);
}

pub fn check(t: &Topology, out: &mut Diagnostics) {
    let services: Vec<&str> = t.services.iter().map(|s| s.name.value.as_str()).collect();
    let components = super::component_names(t);
    // Sets for lookups (topologies may have thousands of services); the
    // lists stay for suggestions.
    let service_set: crate::Set<&str> = services.iter().copied().collect();
    let component_set: crate::Set<&str> = components.iter().copied().collect();
    let tiers: Vec<&str> = t
        .network
        .iter()
        .flat_map(|n| n.tiers.iter().map(|t| t.name.value.as_str()))
        .collect();
    let accounts: Vec<&str> = t
        .kubernetes
        .iter()
        .flat_map(|k| k.service_accounts.iter().map(|s| s.name.value.as_str()))
        .collect();

    let check_tier = |tier: &Option<Spanned<String>>, out: &mut Diagnostics| {
        if let Some(tier) = tier {
            if t.network.is_none() {
                out.push(
                    Diagnostic::error(
                        Code::UnknownTier,
                        format!("tier `{}` is used but there is no network", tier.value),
                    )
                    .at(tier.span, "no network declares this tier")
                    .help(
                        "declare network \"NAME\" subnet=\"...\" { tier \"NAME\" subnet=\"...\" }",
                    ),
                );
            } else if !tiers.contains(&tier.value.as_str()) {
                unknown(Code::UnknownTier, "tier", tier, &tiers, out);
            }
        }
    };

    for s in &t.services {
        check_tier(&s.tier, out);
        for d in &s.depends_on {
            if !component_set.contains(d.service.value.as_str()) {
                unknown(Code::UnknownService, "service", &d.service, &services, out);
            }
        }
        if let Some(sa) = &s.service_account
            && !accounts.contains(&sa.value.as_str())
        {
            unknown(Code::UnknownAccount, "service account", sa, &accounts, out);
        }
    }
    for b in &t.balancers {
        check_tier(&b.tier, out);
        let limits: Vec<&str> = b
            .rate_limits
            .iter()
            .map(|r| r.name.value.as_str())
            .collect();
        for r in &b.routes {
            if !service_set.contains(r.to.value.as_str()) {
                unknown(Code::UnknownService, "service", &r.to, &services, out);
            }
            if let Some(l) = &r.limit
                && !limits.contains(&l.value.as_str())
            {
                unknown(Code::UnknownRateLimit, "rate limit", l, &limits, out);
            }
        }
    }
    if let Some(m) = &t.monitoring {
        check_tier(&m.tier, out);
    }
    for j in &t.jobs {
        if let Some(sa) = &j.service_account
            && !accounts.contains(&sa.value.as_str())
        {
            unknown(Code::UnknownAccount, "service account", sa, &accounts, out);
        }
    }
    if let Some(p) = &t.phases {
        for ph in &p.phases {
            for tier in &ph.tiers {
                if !tiers.contains(&tier.value.as_str()) {
                    unknown(Code::UnknownTier, "tier", tier, &tiers, out);
                }
            }
            for s in &ph.services {
                if !component_set.contains(s.value.as_str()) {
                    unknown(Code::UnknownService, "service", s, &components, out);
                }
            }
        }
    }
    for d in &t.drift_ignore {
        if !component_set.contains(d.service.value.as_str()) {
            unknown(
                Code::UnknownService,
                "service",
                &d.service,
                &components,
                out,
            );
        }
    }
}
