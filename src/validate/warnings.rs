//! Warnings: findings that do not stop a build but deserve a look.
//!
//! - `image-tag`: an image without a tag, or `:latest`.
//! - `public-port`: a public port outside a production environment when the
//!   environment publishes on all addresses.
//! - `health-missing`: a `condition="healthy"` dependency on a service with
//!   no health check.
//! - `unused-rate-limit`: a rate limit no route uses.

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::*;
use crate::source::Spanned;

pub fn check(t: &Topology, out: &mut Diagnostics) {
    let mut images: Vec<&Spanned<String>> = t.services.iter().map(|s| &s.image).collect();
    images.extend(t.jobs.iter().map(|j| &j.image));
    images.extend(t.balancers.iter().filter_map(|b| b.image.as_ref()));
    for i in images {
        let v = &i.value;
        if v.is_empty() || v.contains('@') {
            continue;
        }
        let last = v.rsplit('/').next().unwrap_or(v);
        let tag = last.split_once(':').map(|(_, t)| t);
        match tag {
            None => out.push(
                Diagnostic::warning(Code::ImageTag, format!("image `{v}` has no tag"))
                    .at(i.span, "untagged: means :latest")
                    .help(
                        "pin a version, e.g. postgres:16.2, so every build runs the same software",
                    ),
            ),
            Some("latest") => out.push(
                Diagnostic::warning(Code::ImageTag, format!("image `{v}` uses :latest"))
                    .at(i.span, ":latest changes under you")
                    .help("pin a version tag or a digest"),
            ),
            _ => {}
        }
    }

    if let Some(env) = t.env() {
        let all = env
            .publish_bind
            .as_ref()
            .is_none_or(|a| a.value.is_unspecified());
        if !env.production && all {
            for s in &t.services {
                for p in s.ports.iter().filter(|p| p.public && p.published.is_some()) {
                    out.push(
                        Diagnostic::warning(Code::PublicPort, format!("service `{}` publishes host port {} on 0.0.0.0 in `{}`", s.name.value, p.published.as_ref().map_or(p.container.value, |h| h.value), env.name.value))
                            .at(p.span, "public port")
                            .also(env.name.span, "not a production environment")
                            .help("add publish-bind \"127.0.0.1\" to this env, or mark it production=#true"),
                    );
                }
            }
            for b in &t.balancers {
                for l in b.listeners.iter().filter(|l| l.public) {
                    out.push(
                        Diagnostic::warning(Code::PublicPort, format!("balancer `{}` listens on 0.0.0.0:{} in `{}`", b.name.value, l.published.as_ref().unwrap_or(&l.port).value, env.name.value))
                            .at(l.span, "public port")
                            .also(env.name.span, "not a production environment")
                            .help("add publish-bind \"127.0.0.1\" to this env, or mark it production=#true"),
                    );
                }
            }
        }
    }

    let by_name: crate::Map<&str, &Service> = t
        .services
        .iter()
        .map(|s| (s.name.value.as_str(), &**s))
        .collect();
    for s in &t.services {
        for d in &s.depends_on {
            if d.condition != Condition::Healthy {
                continue;
            }
            if let Some(dep) = by_name.get(d.service.value.as_str())
                && dep.health.is_none()
            {
                out.push(
                    Diagnostic::warning(
                        Code::HealthMissing,
                        format!(
                            "`{}` waits for `{}` to be healthy, but it has no health check",
                            s.name.value, dep.name.value
                        ),
                    )
                    .at(d.service.span, "waits for health")
                    .also(dep.name.span, "no `health` here")
                    .help(format!(
                        "add a health check to `{}`, or use condition=\"started\"",
                        dep.name.value
                    )),
                );
            }
        }
    }

    for b in &t.balancers {
        for rl in &b.rate_limits {
            if !b
                .routes
                .iter()
                .any(|r| r.limit.as_ref().is_some_and(|l| l.value == rl.name.value))
            {
                out.push(
                    Diagnostic::warning(
                        Code::UnusedRateLimit,
                        format!("rate limit `{}` is not used by any route", rl.name.value),
                    )
                    .at(rl.name.span, "unused")
                    .help("reference it with limit=\"NAME\" on a route, or remove it"),
                );
            }
        }
    }
}
