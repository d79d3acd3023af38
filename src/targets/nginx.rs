//! nginx target: one `nginx/<balancer>.conf` per balancer, from the
//! `templates/nginx.conf.j2` template embedded in the binary.
//!
//! - An upstream per route target and balancing mode (algorithm, sticky):
//!   `least_conn`, `ip_hash` for sticky routes, `random`, or round robin.
//! - Servers are the target's instances, by static address, with
//!   `max_fails` / `fail_timeout` from `upstream-defaults`. Active-passive
//!   and primary-replica targets list member 0 first and the others as
//!   `backup` (not possible with `ip_hash`/`random`: then only member 0).
//! - Services with a rollout policy list their next-version instances too;
//!   [`Weights`] says how traffic is split (100 % stable at rest, the next
//!   version `down`). Rollouts re-render with other weights.
//! - `limit_req_zone` per rate limit, `limit_req` with burst per route,
//!   status 429; a health location and `stub_status` for the exporter,
//!   open only to localhost and the monitoring tier.
//! - Every value passes the `ngx` filter, which refuses anything that could
//!   end a directive or open a block: values are validated at check time,
//!   the filter makes sure no unvalidated value ever reaches the file.

use std::collections::BTreeMap;

use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, context};
use serde::Serialize;

use super::{Artifact, Ctx, Instance, Role, Target};
use crate::model::*;

pub const HEALTH_PATH: &str = "/stackc-health";
pub const STATUS_PATH: &str = "/stackc-status";
const TEMPLATE: &str = include_str!("../../templates/nginx.conf.j2");

/// Percent of traffic on the next version, per service name. Services not
/// listed get 0 %.
pub type Weights = BTreeMap<String, u32>;

pub fn path(b: &Balancer) -> String {
    format!("nginx/{}.conf", b.name.value)
}

#[derive(Serialize)]
struct Zone {
    name: String,
    key: String,
    key_desc: String,
    size: String,
    rate: String,
}

#[derive(Serialize)]
struct Server {
    name: String,
    address: String,
    port: u16,
    weight: Option<u32>,
    backup: bool,
    down: bool,
}

#[derive(Serialize)]
struct Upstream {
    name: String,
    comment: String,
    algorithm: Option<&'static str>,
    servers: Vec<Server>,
}

#[derive(Serialize)]
struct RouteOut {
    path: String,
    upstream: String,
    limit: Option<String>,
    burst: u32,
    timeout: String,
}

#[derive(Serialize)]
struct ListenerOut {
    port: u16,
    tls: bool,
}

#[derive(Serialize)]
struct TlsOut {
    certificate: String,
    key: String,
}

/// Refuse values that could end a directive, open or close a block, start
/// a variable or a comment, or span lines.
fn ngx(value: String) -> Result<String, Error> {
    let bad = value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ";{}\"'`$#\\".contains(c));
    if bad {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("unsafe value for nginx: {value:?}"),
        ));
    }
    Ok(value)
}

/// An nginx variable: `$` and a lowercase identifier, nothing else.
fn ngx_var(value: String) -> Result<String, Error> {
    let ok = value.strip_prefix('$').is_some_and(|v| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    });
    if !ok {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("unsafe nginx variable: {value:?}"),
        ));
    }
    Ok(value)
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_filter("ngx", ngx);
    env.add_filter("ngx_var", ngx_var);
    env.add_template("nginx.conf", TEMPLATE)
        .expect("the embedded template parses");
    env
}

/// nginx identifiers: DNS labels with `-` turned into `_`.
fn ident(s: &str) -> String {
    s.replace('-', "_")
}

/// The nginx variable a rate limit counts by, and a description of it.
pub(crate) fn rate_key(k: &RateKey) -> (String, String) {
    let var = |prefix: &str, name: &str| {
        format!("${prefix}_{}", name.to_ascii_lowercase().replace('-', "_"))
    };
    match k {
        RateKey::Ip => ("$binary_remote_addr".into(), "client address".into()),
        RateKey::Header(h) => (var("http", h), format!("header {h}")),
        RateKey::Cookie(c) => (var("cookie", c), format!("cookie {c}")),
        RateKey::Arg(a) => (var("arg", a), format!("query argument {a}")),
    }
}

/// nginx time: seconds, or milliseconds when not whole.
pub(crate) fn ngx_time(d: &Duration) -> String {
    if d.millis.is_multiple_of(1000) {
        format!("{}s", d.millis / 1000)
    } else {
        format!("{}ms", d.millis)
    }
}

/// The port a balancer sends traffic to: the port named `http`, else the
/// first declared port.
pub fn service_port(s: &Service) -> Option<u16> {
    s.ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or_else(|| s.ports.first())
        .map(|p| p.container.value)
}

fn address(i: &Instance) -> String {
    i.address.map_or_else(|| i.name.clone(), |a| a.to_string())
}

/// Servers for one target service, with the rollout split applied.
fn servers(
    cx: &mut Ctx,
    s: &Service,
    index: usize,
    algorithm: Option<Algorithm>,
    sticky: bool,
    weights: &Weights,
    route: &Route,
) -> Vec<Server> {
    let port = service_port(s).unwrap_or(80);
    let stable = cx.plan.services[index].clone();
    let next = cx.plan.next[index].clone();
    let hashing = sticky || matches!(algorithm, Some(Algorithm::IpHash | Algorithm::Random));
    let standby = matches!(
        s.cluster.strategy,
        Strategy::ActivePassive | Strategy::PrimaryReplica
    );
    let mut out = Vec::new();
    let percent = weights.get(&s.name.value).copied().unwrap_or(0).min(100);
    let rolling = !next.is_empty();
    for (set, on_next) in [(&stable, false), (&next, true)] {
        let share = if on_next { percent } else { 100 - percent };
        for inst in set.iter() {
            let passive = standby && matches!(inst.role, Role::Passive | Role::Replica);
            if passive && hashing {
                continue;
            }
            out.push(Server {
                name: inst.name.clone(),
                address: address(inst),
                port,
                // Weights only matter while two versions share traffic.
                weight: (rolling && share > 0 && share < 100 && !passive).then_some(share),
                backup: passive,
                down: rolling && share == 0 && !passive,
            });
        }
    }
    if standby && hashing {
        cx.unmapped(
            Target::Nginx,
            &format!("standby members of `{}` behind a sticky or random route", s.name.value),
            route.span,
            "nginx cannot combine `backup` servers with ip_hash or random: only the active member is listed",
        );
    }
    // nginx refuses `backup` in a group where every other server is down.
    if out.iter().all(|s| s.down || s.backup) {
        for s in out.iter_mut() {
            s.backup = false;
        }
    }
    out
}

/// Render the config of balancer `bi` with the given rollout split.
pub fn render(cx: &mut Ctx, bi: usize, weights: &Weights) -> Result<String, String> {
    let t = cx.topology;
    let b = &t.balancers[bi];
    let zones: Vec<Zone> = b
        .rate_limits
        .iter()
        .map(|r| {
            let (key, key_desc) = rate_key(&r.key);
            Zone {
                name: ident(&r.name.value),
                key,
                key_desc,
                size: r.zone_size.clone(),
                rate: r.rate.to_string(),
            }
        })
        .collect();
    let mut upstreams: Vec<Upstream> = Vec::new();
    let mut routes = Vec::new();
    for r in &b.routes {
        let Some(index) = t.services.iter().position(|s| s.name.value == r.to.value) else {
            continue;
        };
        let s = &t.services[index];
        let algorithm = if r.sticky {
            Some(Algorithm::IpHash)
        } else {
            r.algorithm
        };
        let (suffix, directive) = match algorithm {
            None | Some(Algorithm::RoundRobin) => ("", None),
            Some(Algorithm::LeastConn) => ("_least_conn", Some("least_conn")),
            Some(Algorithm::IpHash) => ("_sticky", Some("ip_hash")),
            Some(Algorithm::Random) => ("_random", Some("random two least_conn")),
        };
        let name = format!("{}{suffix}", ident(&s.name.value));
        if !upstreams.iter().any(|u| u.name == name) {
            let servers = servers(cx, s, index, algorithm, r.sticky, weights, r);
            upstreams.push(Upstream {
                comment: format!(
                    "{} ({}, {} instance(s))",
                    s.name.value,
                    s.cluster.strategy.as_str(),
                    s.instances()
                ),
                name: name.clone(),
                algorithm: directive,
                servers,
            });
        }
        let limit = r
            .limit
            .as_ref()
            .and_then(|l| b.rate_limits.iter().find(|z| z.name.value == l.value));
        routes.push(RouteOut {
            path: r.path.value.clone(),
            upstream: name,
            limit: limit.map(|z| ident(&z.name.value)),
            burst: limit.map_or(0, |z| z.burst),
            timeout: r
                .timeout
                .as_ref()
                .map_or_else(|| "60s".to_string(), ngx_time),
        });
    }
    let listeners: Vec<ListenerOut> = b
        .listeners
        .iter()
        .map(|l| ListenerOut {
            port: l.port.value,
            tls: l.tls,
        })
        .collect();
    let tls = b.tls.as_ref().map(|t| TlsOut {
        certificate: tls_path(&b.name.value, "crt", &t.certificate.value),
        key: tls_path(&b.name.value, "key", &t.key.value),
    });
    if b.tls.is_some() && !b.listeners.iter().any(|l| l.tls) {
        let span = b.tls.as_ref().map_or(b.span, |t| t.span);
        cx.unmapped(
            Target::Nginx,
            "tls",
            span,
            "no listener has tls=#true: add `listen 443 tls=#true`",
        );
    }
    let status_allow: Vec<String> = t
        .monitoring
        .as_ref()
        .and_then(|m| m.tier.as_ref())
        .and_then(|tier| t.network.as_ref().and_then(|n| n.tier(&tier.value)))
        .map(|tier| vec![tier.subnet.value.to_string()])
        .or_else(|| t.network.as_ref().map(|n| vec![n.subnet.value.to_string()]))
        .unwrap_or_default();
    let env = environment();
    let tmpl = env.get_template("nginx.conf").expect("registered");
    tmpl.render(context! {
        stack => cx.stack(),
        balancer => b.name.value.clone(),
        zones => minijinja::value::Serde(&zones),
        upstreams => minijinja::value::Serde(&upstreams),
        routes => minijinja::value::Serde(&routes),
        listeners => minijinja::value::Serde(&listeners),
        tls => minijinja::value::Serde(&tls),
        status_allow => minijinja::value::Serde(&status_allow),
        health_path => HEALTH_PATH,
        status_path => STATUS_PATH,
        max_fails => b.upstream.max_fails,
        fail_timeout => ngx_time(&b.upstream.fail_timeout),
        keepalive => b.upstream.keepalive,
    })
    .map_err(|e| format!("balancer `{}`: {e}", b.name.value))
}

/// Certificates live beside the config in the container: `file:` paths
/// are mounted there by the compose target, `secret:` names likewise.
pub fn tls_path(balancer: &str, kind: &str, reference: &str) -> String {
    let _ = reference;
    format!("tls/{balancer}.{kind}")
}

pub fn emit(cx: &mut Ctx) -> Vec<Artifact> {
    let mut out = Vec::new();
    for bi in 0..cx.topology.balancers.len() {
        let b = &cx.topology.balancers[bi];
        let path = path(b);
        match render(cx, bi, &Weights::new()) {
            Ok(text) => out.push(Artifact::new(path, text)),
            Err(e) => {
                let span = cx.topology.balancers[bi].span;
                cx.warnings.push(
                    crate::diag::Diagnostic::error(
                        crate::diag::Code::Unmapped,
                        format!("cannot render nginx config: {e}"),
                    )
                    .at(span, "this balancer")
                    .help(
                        "this is a bug in stackc's validation: please report it with the topology",
                    ),
                );
            }
        }
    }
    out
}
