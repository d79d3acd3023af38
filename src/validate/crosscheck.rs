//! ## What it checks
//! Agreement between the parts that become different artifacts:
//! - every balancer route target declares a port to receive traffic on,
//!   and has a health check (warning: nginx then only notices failures
//!   passively and `apply` cannot wait for it);
//! - a service with a metrics endpoint is scraped, i.e. the topology has
//!   `monitoring` (warning);
//! - user alerts select jobs and services that exist: every `job="..."`
//!   names a scrape job stackc generates, every `service="..."` a service.
//!
//! ## Why
//! Each artifact is valid on its own; these mismatches only show at run
//! time, as a route to a closed port or an alert that never fires.

use crate::diag::{Code, Diagnostic, Diagnostics, did_you_mean};
use crate::model::*;
use crate::source::Span;

/// The scrape jobs the Prometheus target generates (see
/// `targets::prometheus`): kept here as data so `check` needs no target.
pub fn job_names(t: &Topology) -> Vec<String> {
    let Some(m) = &t.monitoring else {
        return Vec::new();
    };
    let mut jobs = vec!["prometheus".to_string()];
    for s in &t.services {
        if s.metrics.is_some() {
            jobs.push(s.name.value.clone());
        }
        if !s.exporters.is_empty() {
            jobs.push(format!("{}-exporter", s.name.value));
        }
    }
    for b in &t.balancers {
        jobs.push(format!("{}-nginx", b.name.value));
    }
    jobs.extend(m.exporters.iter().map(|x| x.value.clone()));
    jobs
}

/// Label matchers `name="value"` (also `=~`, `!=`, `!~`) inside the
/// selectors of a PromQL expression, with their byte offsets.
fn matchers(expr: &str) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'{' {
            i += 1;
            continue;
        }
        i += 1;
        loop {
            while i < b.len() && (b[i] == b' ' || b[i] == b',') {
                i += 1;
            }
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let name = &expr[start..i];
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            let op_start = i;
            while i < b.len() && matches!(b[i], b'=' | b'!' | b'~') {
                i += 1;
            }
            let op = &expr[op_start..i];
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if name.is_empty() || op.is_empty() || i >= b.len() || b[i] != b'"' {
                break;
            }
            let vstart = i + 1;
            let mut j = vstart;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' {
                    j += 1;
                }
                j += 1;
            }
            let value = &expr[vstart.min(expr.len())..j.min(expr.len())];
            // Only exact matches can be checked against known names.
            if op == "=" {
                out.push((name.to_string(), value.to_string(), vstart));
            }
            // An unterminated value runs to the end of the expression.
            i = (j + 1).min(b.len());
        }
        while i < b.len() && b[i] != b'}' {
            i += 1;
        }
    }
    out
}

pub fn check(t: &Topology, out: &mut Diagnostics) {
    let by_name: crate::Map<&str, &Service> = t
        .services
        .iter()
        .map(|s| (s.name.value.as_str(), &**s))
        .collect();
    for b in &t.balancers {
        let mut seen = crate::Set::default();
        for r in &b.routes {
            let Some(s) = by_name.get(r.to.value.as_str()) else {
                continue;
            };
            if !seen.insert(s.name.value.as_str()) {
                continue;
            }
            if s.ports.is_empty() {
                out.push(
                    Diagnostic::error(Code::UndeclaredPort, format!("route {} goes to `{}`, which declares no port", r.path.value, s.name.value))
                        .at(r.to.span, "no port to send traffic to")
                        .also(s.name.span, "declare a port here")
                        .help("add `port N` to the service (a port named \"http\" is preferred when there are several)"),
                );
            }
            if s.health.is_none() {
                out.push(
                    Diagnostic::warning(
                        Code::RouteWithoutHealth,
                        format!(
                            "balancer `{}` routes to `{}`, which has no health check",
                            b.name.value, s.name.value
                        ),
                    )
                    .at(r.to.span, "upstream without a health check")
                    .also(s.name.span, "no `health` here")
                    .help("add a health check so apply waits for it and rollouts can gate on it"),
                );
            }
        }
    }
    if t.monitoring.is_none() {
        for s in &t.services {
            if let Some(m) = &s.metrics {
                out.push(
                    Diagnostic::warning(Code::MetricsUnscraped, format!("`{}` exposes metrics but nothing scrapes them", s.name.value))
                        .at(m.span, "metrics endpoint")
                        .help("add a `monitoring` block (or import \"observability\") to generate Prometheus"),
                );
            }
        }
    }
    let Some(m) = &t.monitoring else { return };
    let jobs = job_names(t);
    for a in &m.alerts {
        for (label, value, offset) in matchers(&a.expr.value) {
            let (known, what): (Vec<&str>, &str) = match label.as_str() {
                "job" => (jobs.iter().map(String::as_str).collect(), "scrape job"),
                "service" => (
                    t.services.iter().map(|s| s.name.value.as_str()).collect(),
                    "service",
                ),
                _ => continue,
            };
            if known.contains(&value.as_str()) {
                continue;
            }
            // Point inside the quoted expression: in source, each `"` and
            // `\\` before the value was written with a backslash.
            let escapes = a.expr.value[..offset]
                .bytes()
                .filter(|c| *c == b'"' || *c == b'\\')
                .count();
            let start = a.expr.span.start as usize + 1 + offset + escapes;
            let span = if start + value.len() < a.expr.span.end as usize {
                Span::new(a.expr.span.file, start, start + value.len())
            } else {
                a.expr.span
            };
            let mut d = Diagnostic::error(
                Code::UnknownJob,
                format!(
                    "alert `{}` selects {label}=\"{value}\", which no {what} has",
                    a.name.value
                ),
            )
            .at(span, format!("no {what} of this name"));
            d = match did_you_mean(&value, known.iter().copied()) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!("{what}s: {}", known.join(", "))),
            };
            out.push(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_are_found() {
        let m = matchers(
            r#"sum(rate(http_requests_total{job="api", code=~"5.."}[5m])) / up{service = "db"}"#,
        );
        let got: Vec<(&str, &str)> = m.iter().map(|(a, b, _)| (a.as_str(), b.as_str())).collect();
        assert_eq!(got, [("job", "api"), ("service", "db")]);
    }
    #[test]
    fn an_unterminated_value_ends_the_matchers() {
        // Found by the fuzzer: this used to index past the end.
        let m = matchers(r#"rate(http_requests_total{job="apii",code="}[5m]) > 1"#);
        let names: Vec<&str> = m.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["job", "code"]);
        assert_eq!(matchers(r#"up{job=""#).len(), 1);
    }
}
