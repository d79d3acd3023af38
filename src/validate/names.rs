//! ## What it checks
//! Names and values that reach generated configs are safe for their target:
//! object names are DNS-1123 labels, alert names and label keys Prometheus
//! identifiers, environment variable names shell identifiers; paths, images,
//! addresses and free text carry no characters that could break out of
//! their place in nginx, YAML, shell or PromQL.
//!
//! ## Why
//! A name with a newline, `;`, `{`, `}`, `$` or a quote could inject
//! directives into an nginx file or keys into YAML (ingress-nginx's
//! configuration-injection CVEs came from exactly this).
//!
//! ## Example
//! `service "api;evil"` or `route "/x { return 200; }"`.

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::*;
use crate::source::Spanned;

pub fn check(t: &Topology, out: &mut Diagnostics) {
    dns(&t.stack.name, "stack", out);
    if let Some(n) = &t.network {
        dns(&n.name, "network", out);
        for tier in &n.tiers {
            dns(&tier.name, "tier", out);
        }
    }
    for e in &t.environments {
        dns(&e.name, "environment", out);
    }
    for s in &t.services {
        dns(&s.name, "service", out);
        image(&s.image, out);
        for c in s.command.iter().chain(&s.args) {
            text(c, "command word", out);
        }
        for e in &s.env {
            env_name(&e.name, out);
            text(&e.value, "environment value", out);
        }
        secrets(&s.secrets, out);
        for p in &s.ports {
            if let Some(n) = &p.name {
                port_name(&Spanned::new(n.clone(), p.span), out);
            }
        }
        volumes(&s.volumes, out);
        if let Some(h) = &s.health {
            match &h.probe {
                HealthProbe::Cmd(c) => text(c, "health command", out),
                HealthProbe::Http { path: p, .. } => path(p, "health path", out),
                HealthProbe::Tcp(_) => {}
            }
        }
        if let Some(m) = &s.metrics {
            path(&m.path, "metrics path", out);
        }
        for x in &s.exporters {
            dns(&x.kind, "exporter", out);
            if let Some(i) = &x.image {
                image(i, out);
            }
        }
        for (k, v) in &s.labels {
            label_key(k, out);
            text(&Spanned::new(v.clone(), k.span), "label value", out);
        }
        if let Some(r) = &s.runtime_opts {
            text(&r.value, "runtime options", out);
            env_name(&Spanned::new(r.env.clone(), r.value.span), out);
        }
        if let Some(sa) = &s.service_account {
            dns(sa, "service account", out);
        }
    }
    for b in &t.balancers {
        dns(&b.name, "balancer", out);
        if let Some(i) = &b.image {
            image(i, out);
        }
        for rl in &b.rate_limits {
            dns(&rl.name, "rate limit", out);
        }
        for r in &b.routes {
            path(&r.path, "route path", out);
        }
    }
    if let Some(m) = &t.monitoring {
        for i in [
            &m.prometheus.image,
            &m.grafana.as_ref().and_then(|g| g.image.clone()),
        ]
        .into_iter()
        .flatten()
        {
            image(i, out);
        }
        for x in &m.exporters {
            dns(x, "exporter", out);
        }
        for a in &m.alerts {
            prom_ident(&a.name, "alert name", out);
            text(&a.expr, "alert expression", out);
            for (k, v) in a.labels.iter().chain(&a.annotations) {
                prom_ident(k, "label name", out);
                let v = Spanned::new(v.clone(), k.span);
                text(&v, "label value", out);
                alert_template(&v, out);
            }
        }
    }
    if let Some(k) = &t.kubernetes {
        dns(&k.namespace, "namespace", out);
        for sa in &k.service_accounts {
            dns(&sa.name, "service account", out);
            for r in &sa.rules {
                for res in &r.resources {
                    if !res
                        .value
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'/' || b == b'*')
                    {
                        unsafe_value(
                            res,
                            "resource",
                            "lowercase plural resource names such as deployments or pods/log",
                            out,
                        );
                    }
                }
            }
        }
    }
    for j in &t.jobs {
        dns(&j.name, "job", out);
        image(&j.image, out);
        for c in &j.command {
            text(c, "command word", out);
        }
        secrets(&j.secrets, out);
        volumes(&j.volumes, out);
    }
    if let Some(p) = &t.phases {
        for ph in &p.phases {
            dns(&ph.name, "phase", out);
        }
    }
}

/// Secret names, and the variables and files they are read from: the
/// variable ends up in compose's `${VAR:?...}`, so it must be a plain
/// name that cannot end the reference or nest another one.
fn secrets(secrets: &[Secret], out: &mut Diagnostics) {
    for sec in secrets {
        env_name(&sec.name, out);
        match &sec.source {
            SecretSource::Env(var) => env_name(&Spanned::new(var.clone(), sec.span), out),
            SecretSource::File(f) => text(&Spanned::new(f.clone(), sec.span), "secret file", out),
        }
    }
}

/// Volume names and mount paths. A `:` would split compose's and
/// Docker's `volume:path[:mode]` form in the wrong place.
fn volumes(volumes: &[Volume], out: &mut Diagnostics) {
    for v in volumes {
        dns(&v.name, "volume", out);
        path(&v.path, "volume path", out);
        if v.path.value.starts_with('/') && v.path.value.contains(':') {
            unsafe_value(
                &v.path,
                "volume path",
                "a mount path cannot contain `:`, which separates volume, path and mode",
                out,
            );
        }
    }
}

/// Port names become Kubernetes port names: IANA service names.
fn port_name(n: &Spanned<String>, out: &mut Diagnostics) {
    let v = &n.value;
    let ok = !v.is_empty()
        && v.len() <= 15
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && v.bytes().any(|b| b.is_ascii_lowercase())
        && !v.starts_with('-')
        && !v.ends_with('-')
        && !v.contains("--");
    if !ok {
        out.push(
            Diagnostic::error(
                Code::InvalidName,
                format!("port name `{}` is not a valid port name", escape(v)),
            )
            .at(n.span, "not a port name")
            .help("at most 15 lowercase letters, digits and single -, with at least one letter, e.g. http or grpc-api"),
        );
    }
}

/// Prometheus expands alert labels and annotations as Go templates. The
/// forms stackc accepts are the ones that always expand:
/// `{{ $labels.NAME }}`, `{{ $externalLabels.NAME }}`, `{{ $value }}`
/// (also written `.Labels.NAME`, `.Value`), each optionally piped through
/// one formatting function. Any other `{{` could fail when Prometheus
/// loads the rules.
fn alert_template(v: &Spanned<String>, out: &mut Diagnostics) {
    const FUNCS: &[&str] = &[
        "humanize",
        "humanize1024",
        "humanizeDuration",
        "humanizePercentage",
        "humanizeTimestamp",
        "title",
        "toUpper",
        "toLower",
        "stripPort",
        "stripDomain",
    ];
    let ident = |s: &str| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !s.as_bytes()[0].is_ascii_digit()
    };
    let operand = |s: &str| {
        matches!(s, "$value" | ".Value")
            || [
                "$labels.",
                "$externalLabels.",
                ".Labels.",
                ".ExternalLabels.",
            ]
            .iter()
            .any(|p| s.strip_prefix(p).is_some_and(ident))
    };
    let action = |a: &str| {
        let a = a.strip_prefix("- ").unwrap_or(a);
        let a = a.strip_suffix(" -").unwrap_or(a);
        let mut parts = a.split('|').map(|p| p.trim_matches(' '));
        parts.next().is_some_and(operand) && parts.all(|f| FUNCS.contains(&f))
    };
    let mut rest = v.value.as_str();
    let mut ok = true;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        match after.find("}}") {
            Some(j) if action(&after[..j]) => rest = &after[j + 2..],
            _ => {
                ok = false;
                break;
            }
        }
    }
    if !ok {
        unsafe_value(
            v,
            "alert text",
            "Prometheus reads {{ ... }} as a template: use {{ $labels.NAME }}, {{ $value }} or {{ $value | humanize }}",
            out,
        );
    }
}

/// Is `s` a DNS-1123 label?
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn suggestion(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-');
    out.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

fn dns(name: &Spanned<String>, what: &str, out: &mut Diagnostics) {
    if is_dns_label(&name.value) {
        return;
    }
    let sug = suggestion(&name.value);
    let help = if sug.is_empty() {
        "use lowercase letters, digits and -, starting and ending with a letter or digit (at most 63)".to_string()
    } else {
        format!("use lowercase letters, digits and - (at most 63), e.g. \"{sug}\"")
    };
    out.push(
        Diagnostic::error(
            Code::InvalidName,
            format!("{what} name `{}` is not a DNS label", escape(&name.value)),
        )
        .at(name.span, "not a safe name")
        .help(help),
    );
}

fn prom_ident(name: &Spanned<String>, what: &str, out: &mut Diagnostics) {
    let b = name.value.as_bytes();
    let ok = !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if !ok {
        out.push(
            Diagnostic::error(
                Code::InvalidName,
                format!(
                    "{what} `{}` is not a Prometheus identifier",
                    escape(&name.value)
                ),
            )
            .at(name.span, "not a safe name")
            .help("use letters, digits and _, not starting with a digit (e.g. HighErrorRate)"),
        );
    }
}

fn label_key(name: &Spanned<String>, out: &mut Diagnostics) {
    let b = name.value.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 253
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'/'))
        && !name.value.contains("..");
    if !ok {
        out.push(
            Diagnostic::error(Code::InvalidName, format!("label key `{}` is not valid", escape(&name.value)))
                .at(name.span, "not a safe key")
                .help("use letters, digits, '.', '-', '_' and one '/' prefix, e.g. team or example.com/team"),
        );
    }
}

fn env_name(name: &Spanned<String>, out: &mut Diagnostics) {
    let b = name.value.as_bytes();
    // Dots are allowed: images such as Elasticsearch read `discovery.type`.
    let ok = !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.');
    if !ok {
        out.push(
            Diagnostic::error(
                Code::InvalidName,
                format!(
                    "`{}` is not an environment variable name",
                    escape(&name.value)
                ),
            )
            .at(name.span, "not a shell identifier")
            .help("use letters, digits, _ and ., not starting with a digit (e.g. DATABASE_URL)"),
        );
    }
}

/// Free text (commands, values, expressions): any printable text, but no
/// control characters, which no target can carry on one line.
fn text(v: &Spanned<String>, what: &str, out: &mut Diagnostics) {
    if v.value.chars().any(|c| c.is_control() && c != '\t') {
        unsafe_value(
            v,
            what,
            "write it on one line, without control characters",
            out,
        );
    }
}

/// Paths: absolute, no whitespace, quotes, `;`, braces, `$`, backslash,
/// `#`, `?` or `..` segment.
fn path(p: &Spanned<String>, what: &str, out: &mut Diagnostics) {
    let v = &p.value;
    if !v.starts_with('/') {
        out.push(
            Diagnostic::error(
                Code::UnsafeValue,
                format!("{what} `{}` must start with /", escape(v)),
            )
            .at(p.span, "not an absolute path")
            .help(format!("write \"/{}\"", escape(v.trim_start_matches("./")))),
        );
        return;
    }
    let bad = !v.starts_with('/')
        || v.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'`;{}$\\#?<>|".contains(c))
        || v.split('/').any(|seg| seg == "..");
    if bad {
        unsafe_value(
            p,
            what,
            "a plain absolute path such as /api/users, without .., spaces, quotes, ;, {, }, $ or \\",
            out,
        );
    }
}

/// Image references: registry/name:tag@digest characters only.
fn image(i: &Spanned<String>, out: &mut Diagnostics) {
    let v = &i.value;
    if v.is_empty() {
        // Missing: already reported while decoding.
        return;
    }
    let ok = !v.is_empty()
        && v.len() <= 255
        && v.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@')
        })
        && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && !v.contains("..")
        && !v.contains("//");
    if !ok {
        unsafe_value(
            i,
            "image",
            "an image reference such as postgres:16 or registry.example.com/team/app:1.2.3",
            out,
        );
    }
}

fn unsafe_value(v: &Spanned<String>, what: &str, help: &str, out: &mut Diagnostics) {
    out.push(
        Diagnostic::error(
            Code::UnsafeValue,
            format!(
                "{what} `{}` contains characters that are not allowed",
                escape(&v.value)
            ),
        )
        .at(v.span, "unsafe for the generated configs")
        .help(help.to_string()),
    );
}

/// Show a value on one line, with control characters escaped.
fn escape(s: &str) -> String {
    let short: String = s.chars().take(80).collect();
    short.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "web", "user-management", "a1", &"x".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "a;b",
            "a\nb",
            &"x".repeat(64),
            "../x",
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn suggestions_are_labels() {
        assert_eq!(suggestion("Web_API"), "web-api");
        assert!(is_dns_label(&suggestion("Order Management!")));
    }
}
