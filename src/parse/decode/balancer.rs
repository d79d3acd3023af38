//! Decoding `balancer` nodes (nginx load-balancer tiers).

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::*;
use crate::parse::reader::{NodeReader, Once, unknown_node};
use crate::parse::tree::Node;
use crate::source::Spanned;

const CHILDREN: &[&str] = &[
    "image",
    "replicas",
    "listen",
    "rate-limit",
    "route",
    "upstream-defaults",
    "tls",
];

pub fn decode(node: &Node, out: &mut Diagnostics) -> Option<Balancer> {
    let mut r = NodeReader::new(node);
    r.allow_children();
    let name = r.arg_string(0, "a balancer name");
    let tier = r.prop_string("tier");
    r.finish(out);
    let mut once = Once::default();
    let mut image = None;
    let mut replicas = None;
    let mut listeners = Vec::new();
    let mut rate_limits = Vec::new();
    let mut routes = Vec::new();
    let mut upstream = UpstreamDefaults::default();
    let mut tls = None;
    for child in node.children() {
        let kind = child.name.value.as_str();
        if matches!(kind, "image" | "replicas" | "upstream-defaults" | "tls")
            && !once.first(child, out)
        {
            continue;
        }
        match kind {
            "image" => {
                let mut c = NodeReader::new(child);
                image = c.arg_string(0, "an image reference");
                c.finish(out);
            }
            "replicas" => {
                let mut c = NodeReader::new(child);
                replicas = c.arg_u32(0, "the number of nginx instances", 1..=100);
                c.finish(out);
            }
            "listen" => {
                let mut c = NodeReader::new(child);
                let port = c.arg_u32(0, "a port", 1..=65535);
                let published = c.prop_port("published");
                let public = c.prop_bool("public").unwrap_or(false);
                let tls = c.prop_bool("tls");
                c.finish(out);
                if let Some(port) = port {
                    listeners.push(Listener {
                        port: Spanned::new(port.value as u16, port.span),
                        published,
                        public,
                        // Port 443 speaks TLS unless told otherwise.
                        tls: tls.unwrap_or(port.value == 443),
                        span: child.span,
                    });
                }
            }
            "rate-limit" => rate_limits.extend(decode_rate_limit(child, out)),
            "route" => routes.extend(decode_route(child, out)),
            "upstream-defaults" => {
                let mut c = NodeReader::new(child);
                if let Some(v) = c.prop_u32("max-fails", 0..=100) {
                    upstream.max_fails = v.value;
                }
                if let Some(d) = c.prop_duration("fail-timeout") {
                    upstream.fail_timeout = d;
                }
                if let Some(v) = c.prop_u32("keepalive", 0..=10_000) {
                    upstream.keepalive = v.value;
                }
                c.finish(out);
            }
            "tls" => {
                let mut c = NodeReader::new(child);
                let certificate = c.required_prop_string(
                    "certificate",
                    "tls certificate=\"file:/etc/ssl/site.crt\" key=\"file:/etc/ssl/site.key\"",
                );
                let key = c.required_prop_string(
                    "key",
                    "tls certificate=\"file:/etc/ssl/site.crt\" key=\"file:/etc/ssl/site.key\"",
                );
                for s in certificate.iter().chain(key.iter()) {
                    if !s.value.starts_with("file:") && !s.value.starts_with("secret:") {
                        c.error(
                            Diagnostic::error(Code::InvalidSecretSource, "TLS material must be a reference")
                                .at(s.span, "expected file:/path or secret:NAME")
                                .help("stackc never embeds certificates or keys; point at a file or a secret"),
                        );
                    }
                }
                c.finish(out);
                if let (Some(certificate), Some(key)) = (certificate, key) {
                    tls = Some(Tls {
                        certificate,
                        key,
                        span: child.span,
                    });
                }
            }
            _ => unknown_node(child, "`balancer`", CHILDREN, out),
        }
    }
    let name = name?;
    let replicas = replicas.unwrap_or_else(|| Spanned::new(1, name.span));
    Some(Balancer {
        name,
        tier,
        image,
        replicas,
        listeners,
        rate_limits,
        routes,
        upstream,
        tls,
        span: node.span,
    })
}

fn decode_rate_limit(node: &Node, out: &mut Diagnostics) -> Option<RateLimit> {
    let mut c = NodeReader::new(node);
    let name = c.arg_string(0, "a rate-limit name");
    let rate_s = c.required_prop_string("rate", "rate-limit \"general\" rate=\"100r/s\" burst=200");
    let burst = c.prop_u32("burst", 0..=1_000_000).map_or(0, |b| b.value);
    let key_s = c.prop_string("key");
    let zone_size = c
        .prop_memory("zone-size")
        .map_or_else(|| "10m".to_string(), |m| nginx_size(&m.value));
    let rate = rate_s.and_then(|s| match Rate::parse(&s.value) {
        Some(r) => Some(r),
        None => {
            c.error(
                Diagnostic::error(
                    Code::InvalidValue,
                    format!("`{}` is not a request rate", s.value),
                )
                .at(s.span, "expected e.g. 10r/s or 600r/m")
                .help("a positive count of requests per second (r/s) or per minute (r/m)"),
            );
            None
        }
    });
    let key = match key_s {
        None => Some(RateKey::Ip),
        Some(s) => parse_rate_key(&s).or_else(|| {
            c.error(
                Diagnostic::error(Code::InvalidValue, format!("`{}` is not a rate-limit key", s.value))
                    .at(s.span, "expected ip, header:NAME, cookie:NAME or arg:NAME")
                    .help("e.g. key=\"ip\" or key=\"header:X-API-Key\"; names use letters, digits, - and _"),
            );
            None
        }),
    };
    c.finish(out);
    // A rate limit with a bad value is still declared: keeping it avoids a
    // follow-on "unknown rate limit" on the routes that use it. The error
    // already stops every build, so the placeholder is never emitted.
    Some(RateLimit {
        name: name?,
        rate: rate.unwrap_or(Rate {
            count: 1,
            per_minute: false,
        }),
        burst,
        key: key.unwrap_or(RateKey::Ip),
        zone_size,
        span: node.span,
    })
}

/// nginx sizes are k or m suffixed; convert from the memory quantity.
fn nginx_size(m: &Memory) -> String {
    let kib = m.bytes.div_ceil(1024).max(1);
    if kib.is_multiple_of(1024) {
        format!("{}m", kib / 1024)
    } else {
        format!("{kib}k")
    }
}

fn parse_rate_key(s: &Spanned<String>) -> Option<RateKey> {
    let ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if s.value == "ip" {
        return Some(RateKey::Ip);
    }
    let (kind, name) = s.value.split_once(':')?;
    if !ok(name) {
        return None;
    }
    match kind {
        "header" => Some(RateKey::Header(name.to_string())),
        "cookie" => Some(RateKey::Cookie(name.to_string())),
        "arg" => Some(RateKey::Arg(name.to_string())),
        _ => None,
    }
}

fn decode_route(node: &Node, out: &mut Diagnostics) -> Option<Route> {
    let mut c = NodeReader::new(node);
    let path = c.arg_string(0, "a path");
    let to = c.required_prop_string("to", "route \"/api\" to=\"api\"");
    let limit = c.prop_string("limit");
    let sticky = c.prop_bool("sticky").unwrap_or(false);
    let algorithm = match c.prop_string("algorithm") {
        Some(s) => c
            .choice(&s, "algorithm", Algorithm::NAMES, Algorithm::parse)
            .map(Some),
        None => Some(None),
    };
    let timeout = c.prop_duration("timeout");
    if sticky
        && let Some(Some(a)) = algorithm
        && a != Algorithm::IpHash
    {
        let e = node
            .props()
            .find(|e| e.name.as_ref().is_some_and(|n| n.value == "algorithm"))
            .expect("present");
        c.error(
                    Diagnostic::error(Code::InvalidValue, "a sticky route cannot use another balancing algorithm")
                        .at(e.span, "conflicts with sticky=#true")
                        .help("sticky sessions pin each client to one server (ip_hash); drop `algorithm` or `sticky`"),
                );
    }
    c.finish(out);
    Some(Route {
        path: path?,
        to: to?,
        limit,
        sticky,
        algorithm: algorithm?,
        timeout,
        span: node.span,
    })
}
