//! Prometheus target: `prometheus/prometheus.yml` (static targets on the
//! stack network), alert rules derived from the topology and the user's
//! own rules, each rule file with a `promtool test rules` file that proves
//! every derived alert fires when it should and stays silent otherwise.
//!
//! Job names, shared with the Grafana target:
//! - `<service>`: the service's own metrics endpoint, one target per
//!   instance, labelled `service` and `role`;
//! - `<service>-exporter`: its exporters;
//! - `<balancer>-nginx`: the balancer's nginx exporter;
//! - `node` (and other host exporters): `<kind>`; `prometheus` itself.
//!
//! Derived alerts assume the conventional metric names where they need
//! more than `up`: `http_requests_total{code}` and
//! `http_request_duration_seconds_bucket` from services, and
//! kube-state-metrics for the autoscaler (silent where absent).

use serde_json::{Map, Value, json};

use super::{Artifact, Ctx, Instance, Role, Target, nginx};
use crate::model::*;

pub const CONFIG: &str = "prometheus/prometheus.yml";
pub const DERIVED_RULES: &str = "prometheus/rules/derived.rules.yml";
pub const DERIVED_TESTS: &str = "prometheus/tests/derived.test.yml";
pub const USER_RULES: &str = "prometheus/rules/user.rules.yml";
pub const USER_TESTS: &str = "prometheus/tests/user.test.yml";

pub fn metrics_job(service: &str) -> String {
    service.to_string()
}

pub fn exporter_job(service: &str) -> String {
    format!("{service}-exporter")
}

pub fn balancer_job(balancer: &str) -> String {
    format!("{balancer}-nginx")
}

/// `user-management` -> `UserManagement`: alert names from service names.
fn camel(s: &str) -> String {
    s.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or_else(String::new, |f| {
                f.to_ascii_uppercase().to_string() + c.as_str()
            })
        })
        .collect()
}

/// Escape a PromQL label value (names are validated, this is defence).
fn q(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn secs(d: &Duration) -> String {
    if d.millis.is_multiple_of(60_000) {
        format!("{}m", d.millis / 60_000)
    } else if d.millis.is_multiple_of(1000) {
        format!("{}s", d.millis / 1000)
    } else {
        format!("{}ms", d.millis)
    }
}

fn scrape_config(cx: &Ctx) -> Value {
    let t = cx.topology;
    let mon = t.monitoring.as_ref().expect("called with monitoring");
    let mut jobs = vec![json!({
        "job_name": "prometheus",
        "static_configs": [{ "targets": [format!("localhost:{}", mon.prometheus.port)] }],
    })];
    for (i, s) in t.services.iter().enumerate() {
        if let Some(m) = &s.metrics {
            let groups: Vec<Value> = cx.plan.services[i]
                .iter()
                .map(|inst| {
                    json!({
                        "targets": [format!("{}:{}", inst.name, m.port.value)],
                        "labels": { "service": s.name.value, "role": inst.role.as_str() },
                    })
                })
                .collect();
            jobs.push(json!({
                "job_name": metrics_job(&s.name.value),
                "metrics_path": m.path.value,
                "static_configs": groups,
            }));
        }
        if !s.exporters.is_empty() {
            let groups: Vec<Value> = s
                .exporters
                .iter()
                .map(|x| {
                    json!({
                        "targets": [format!("{}-{}-exporter:{}", s.name.value, x.kind.value, x.port)],
                        "labels": { "service": s.name.value, "exporter": x.kind.value },
                    })
                })
                .collect();
            jobs.push(json!({ "job_name": exporter_job(&s.name.value), "static_configs": groups }));
        }
    }
    for b in &t.balancers {
        jobs.push(json!({
            "job_name": balancer_job(&b.name.value),
            "static_configs": [{
                "targets": [format!("{}-nginx-exporter:9113", b.name.value)],
                "labels": { "balancer": b.name.value },
            }],
        }));
    }
    for x in &mon.exporters {
        let port = crate::parse::decode::default_exporter_port(&x.value);
        jobs.push(json!({
            "job_name": x.value,
            "static_configs": [{ "targets": [format!("{}-exporter:{port}", x.value)] }],
        }));
    }
    let mut rule_files = vec![json!("rules/derived.rules.yml")];
    if !mon.alerts.is_empty() {
        rule_files.push(json!("rules/user.rules.yml"));
    }
    json!({
        "global": {
            "scrape_interval": secs(&mon.prometheus.scrape_interval),
            "evaluation_interval": secs(&mon.prometheus.scrape_interval),
            "external_labels": { "stack": cx.stack() },
        },
        "rule_files": rule_files,
        "scrape_configs": jobs,
    })
}

/// One input series of a test: selector and values in promtool notation.
struct Series {
    series: String,
    values: String,
}

fn series(s: impl Into<String>, v: impl Into<String>) -> Series {
    Series {
        series: s.into(),
        values: v.into(),
    }
}

/// A derived alert with the evidence that tests it.
struct Alert {
    name: String,
    expr: String,
    for_: &'static str,
    severity: &'static str,
    labels: Vec<(&'static str, String)>,
    summary: String,
    /// Input that makes it fire, and the labels the firing alert carries
    /// beyond `severity` and `labels` (those of the expression's result).
    fire: Vec<Series>,
    fire_labels: Vec<(String, String)>,
    /// Input under which it must stay silent.
    quiet: Vec<Series>,
}

fn up_series(job: &str, inst: &Instance, port: u16, service: &str, down: bool) -> Series {
    series(
        format!(
            "up{{job=\"{}\",instance=\"{}:{port}\",service=\"{}\",role=\"{}\"}}",
            q(job),
            q(&inst.name),
            q(service),
            inst.role.as_str()
        ),
        if down { "0x30" } else { "1x30" },
    )
}

fn service_alerts(cx: &Ctx, i: usize, s: &Service, out: &mut Vec<Alert>) {
    let Some(m) = &s.metrics else { return };
    let job = metrics_job(&s.name.value);
    let name = camel(&s.name.value);
    let members = &cx.plan.services[i];
    let port = m.port.value;
    let all_up = || {
        members
            .iter()
            .map(|x| up_series(&job, x, port, &s.name.value, false))
            .collect::<Vec<_>>()
    };
    let svc = vec![("service", s.name.value.clone())];

    let first = &members[0];
    out.push(Alert {
        name: format!("{name}InstanceDown"),
        expr: format!("up{{job=\"{}\"}} == 0", q(&job)),
        for_: "1m",
        severity: "warning",
        labels: vec![],
        summary: format!("An instance of {} is down", s.name.value),
        fire: members
            .iter()
            .map(|x| up_series(&job, x, port, &s.name.value, x.ordinal == 0))
            .collect(),
        fire_labels: vec![
            ("job".into(), job.clone()),
            ("instance".into(), format!("{}:{port}", first.name)),
            ("service".into(), s.name.value.clone()),
            ("role".into(), first.role.as_str().into()),
        ],
        quiet: all_up(),
    });
    let n = s.instances();
    if n > 1 {
        let min = s.cluster.min_healthy();
        out.push(Alert {
            name: format!("{name}Degraded"),
            expr: format!("sum(up{{job=\"{}\"}}) < {n}", q(&job)),
            for_: "5m",
            severity: "warning",
            labels: svc.clone(),
            summary: format!("{} runs fewer than its {n} replicas", s.name.value),
            fire: members
                .iter()
                .map(|x| up_series(&job, x, port, &s.name.value, x.ordinal == 0))
                .collect(),
            fire_labels: vec![],
            quiet: all_up(),
        });
        let quorum = s.cluster.strategy == Strategy::Quorum || s.cluster.split_brain_protection;
        let (alert, summary) = if quorum {
            (
                format!("{name}QuorumLost"),
                format!(
                    "{} has lost its quorum: fewer than {min} of {n} members are up",
                    s.name.value
                ),
            )
        } else {
            (
                format!("{name}BelowMinimum"),
                format!(
                    "{} has fewer than the {min} healthy members its {} strategy needs",
                    s.name.value,
                    s.cluster.strategy.as_str()
                ),
            )
        };
        // Take down just enough members to drop below the minimum.
        let down = n - min + 1;
        out.push(Alert {
            name: alert,
            expr: format!("sum(up{{job=\"{}\"}}) < {min}", q(&job)),
            for_: if quorum { "30s" } else { "1m" },
            severity: "critical",
            labels: svc.clone(),
            summary,
            fire: members
                .iter()
                .map(|x| up_series(&job, x, port, &s.name.value, x.ordinal < down))
                .collect(),
            fire_labels: vec![],
            quiet: members
                .iter()
                .map(|x| up_series(&job, x, port, &s.name.value, min < n && x.ordinal < n - min))
                .collect(),
        });
        if matches!(
            s.cluster.strategy,
            Strategy::ActivePassive | Strategy::PrimaryReplica
        ) {
            let role = if s.cluster.strategy == Strategy::ActivePassive {
                Role::Active
            } else {
                Role::Primary
            };
            out.push(Alert {
                name: format!("{name}NoActivePrimary"),
                expr: format!(
                    "sum(up{{job=\"{}\",role=\"{}\"}}) < 1",
                    q(&job),
                    role.as_str()
                ),
                for_: "2m",
                severity: "critical",
                labels: svc.clone(),
                summary: format!(
                    "the {} member of {} is down; check that a standby took over",
                    role.as_str(),
                    s.name.value
                ),
                fire: members
                    .iter()
                    .map(|x| up_series(&job, x, port, &s.name.value, x.role == role))
                    .collect(),
                fire_labels: vec![],
                // A standby down while the primary serves is not this alert.
                quiet: members
                    .iter()
                    .map(|x| up_series(&job, x, port, &s.name.value, x.role != role))
                    .collect(),
            });
        }
    }
    if let Some(r) = &s.rollout {
        let err = |rate_500: &str| {
            vec![
                series(
                    format!("http_requests_total{{job=\"{}\",code=\"200\"}}", q(&job)),
                    "0+600x30",
                ),
                series(
                    format!("http_requests_total{{job=\"{}\",code=\"500\"}}", q(&job)),
                    rate_500.to_string(),
                ),
            ]
        };
        if let Some(max) = &r.gate.max_error_rate {
            // 600 per minute succeed; the failing rate is set well above or
            // well below the threshold.
            let above = ((max.value * 600.0 * 4.0).ceil() as u64).max(60);
            let below = (max.value * 600.0 / 4.0).floor() as u64;
            out.push(Alert {
                name: format!("{name}ErrorRateAboveGate"),
                expr: format!(
                    "sum(rate(http_requests_total{{job=\"{j}\",code=~\"5..\"}}[5m])) / sum(rate(http_requests_total{{job=\"{j}\"}}[5m])) > {}",
                    max.value,
                    j = q(&job)
                ),
                for_: "1m",
                severity: "warning",
                labels: svc.clone(),
                summary: format!("{} answers more than {}% errors, the rollout gate", s.name.value, max.value * 100.0),
                fire: err(&format!("0+{above}x30")),
                fire_labels: vec![],
                quiet: err(&format!("0+{below}x30")),
            });
        }
        if let Some(p95) = &r.gate.max_latency_p95 {
            let t = p95.as_secs_f64();
            let bounds = [t / 4.0, t / 2.0, t, t * 2.0, t * 4.0];
            let buckets = |slow: bool| {
                let mut v: Vec<Series> = bounds
                    .iter()
                    .enumerate()
                    .map(|(k, le)| {
                        // Slow: every request lands in (2t, 4t]; fast: in (0, t/4].
                        let counted = if slow { k >= 4 } else { true };
                        series(
                            format!(
                                "http_request_duration_seconds_bucket{{job=\"{}\",le=\"{le}\"}}",
                                q(&job)
                            ),
                            if counted { "0+600x30" } else { "0x30" },
                        )
                    })
                    .collect();
                v.push(series(
                    format!(
                        "http_request_duration_seconds_bucket{{job=\"{}\",le=\"+Inf\"}}",
                        q(&job)
                    ),
                    "0+600x30",
                ));
                v
            };
            out.push(Alert {
                name: format!("{name}LatencyAboveGate"),
                expr: format!(
                    "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{job=\"{}\"}}[5m]))) > {t}",
                    q(&job)
                ),
                for_: "1m",
                severity: "warning",
                labels: svc.clone(),
                summary: format!("{} p95 latency is above {}, the rollout gate", s.name.value, p95.text),
                fire: buckets(true),
                fire_labels: vec![],
                quiet: buckets(false),
            });
        }
    }
    if let Some(a) = &s.autoscale {
        let hpa = |current: u32| {
            vec![
                series(
                    format!(
                        "kube_horizontalpodautoscaler_status_current_replicas{{horizontalpodautoscaler=\"{}\"}}",
                        q(&s.name.value)
                    ),
                    format!("{current}x30"),
                ),
                series(
                    format!(
                        "kube_horizontalpodautoscaler_spec_max_replicas{{horizontalpodautoscaler=\"{}\"}}",
                        q(&s.name.value)
                    ),
                    format!("{}x30", a.max.value),
                ),
            ]
        };
        out.push(Alert {
            name: format!("{name}AutoscalerAtMax"),
            expr: format!(
                "kube_horizontalpodautoscaler_status_current_replicas{{horizontalpodautoscaler=\"{n}\"}} >= on(horizontalpodautoscaler) kube_horizontalpodautoscaler_spec_max_replicas{{horizontalpodautoscaler=\"{n}\"}}",
                n = q(&s.name.value)
            ),
            for_: "15m",
            severity: "warning",
            labels: svc.clone(),
            summary: format!("{} has been at its autoscaling maximum of {} for 15 minutes", s.name.value, a.max.value),
            fire: hpa(a.max.value),
            fire_labels: vec![("horizontalpodautoscaler".into(), s.name.value.clone())],
            quiet: hpa(a.min.value),
        });
    }
}

fn balancer_alerts(cx: &Ctx, b: &Balancer, out: &mut Vec<Alert>) {
    let t = cx.topology;
    let job = balancer_job(&b.name.value);
    let name = camel(&b.name.value);
    let target = format!("{}-nginx-exporter:9113", b.name.value);
    let up = |v: &str| {
        vec![series(
            format!(
                "up{{job=\"{}\",instance=\"{target}\",balancer=\"{}\"}}",
                q(&job),
                q(&b.name.value)
            ),
            v.to_string(),
        )]
    };
    out.push(Alert {
        name: format!("{name}LoadBalancerDown"),
        expr: format!("up{{job=\"{}\"}} == 0", q(&job)),
        for_: "1m",
        severity: "critical",
        labels: vec![],
        summary: format!("load balancer {} is down", b.name.value),
        fire: up("0x30"),
        fire_labels: vec![
            ("job".into(), job.clone()),
            ("instance".into(), target.clone()),
            ("balancer".into(), b.name.value.clone()),
        ],
        quiet: up("1x30"),
    });
    let mut seen = Vec::new();
    for r in &b.routes {
        let Some(i) = t.services.iter().position(|s| s.name.value == r.to.value) else {
            continue;
        };
        let s = &t.services[i];
        let Some(m) = &s.metrics else { continue };
        if seen.contains(&i) {
            continue;
        }
        seen.push(i);
        let sjob = metrics_job(&s.name.value);
        let members = &cx.plan.services[i];
        let labels = vec![
            ("balancer", b.name.value.clone()),
            ("service", s.name.value.clone()),
        ];
        out.push(Alert {
            name: format!("{name}UpstreamDown"),
            expr: format!("sum(up{{job=\"{}\"}}) == 0", q(&sjob)),
            for_: "1m",
            severity: "critical",
            labels: labels.clone(),
            summary: format!(
                "{} has no instance of {} up for route {}",
                b.name.value, s.name.value, r.path.value
            ),
            fire: members
                .iter()
                .map(|x| up_series(&sjob, x, m.port.value, &s.name.value, true))
                .collect(),
            fire_labels: vec![],
            quiet: members
                .iter()
                .map(|x| up_series(&sjob, x, m.port.value, &s.name.value, x.ordinal > 0))
                .collect(),
        });
        let err = |bad: &str| {
            vec![
                series(
                    format!("http_requests_total{{job=\"{}\",code=\"200\"}}", q(&sjob)),
                    "0+600x30",
                ),
                series(
                    format!("http_requests_total{{job=\"{}\",code=\"502\"}}", q(&sjob)),
                    bad.to_string(),
                ),
            ]
        };
        out.push(Alert {
            name: format!("{name}High5xxRatio"),
            expr: format!(
                "sum(rate(http_requests_total{{job=\"{j}\",code=~\"5..\"}}[5m])) / sum(rate(http_requests_total{{job=\"{j}\"}}[5m])) > 0.05",
                j = q(&sjob)
            ),
            for_: "5m",
            severity: "warning",
            labels,
            summary: format!("more than 5% of requests from {} to {} fail", b.name.value, s.name.value),
            fire: err("0+120x30"),
            fire_labels: vec![],
            quiet: err("0+6x30"),
        });
    }
}

/// Group alerts with the same name (one per balancer route) into one rule
/// each: names stay unique within the file.
fn dedupe(alerts: Vec<Alert>) -> Vec<Alert> {
    let mut out: Vec<Alert> = Vec::with_capacity(alerts.len());
    let mut seen = std::collections::HashSet::new();
    for mut a in alerts {
        if !seen.insert(a.name.clone()) {
            let svc = a
                .labels
                .iter()
                .find(|(k, _)| *k == "service")
                .map(|(_, v)| camel(v))
                .unwrap_or_default();
            a.name = format!("{}{svc}", a.name);
            seen.insert(a.name.clone());
        }
        out.push(a);
    }
    out
}

fn rules_file(group: &str, alerts: &[Alert]) -> Value {
    let rules: Vec<Value> = alerts
        .iter()
        .map(|a| {
            let mut labels = Map::new();
            labels.insert("severity".into(), json!(a.severity));
            for (k, v) in &a.labels {
                labels.insert((*k).into(), json!(v));
            }
            json!({
                "alert": a.name,
                "expr": a.expr,
                "for": a.for_,
                "labels": labels,
                "annotations": { "summary": a.summary },
            })
        })
        .collect();
    json!({ "groups": [{ "name": group, "rules": rules }] })
}

fn tests_file(rule_file: &str, alerts: &[Alert]) -> Value {
    let mut tests = Vec::new();
    for a in alerts {
        let mut labels = Map::new();
        labels.insert("severity".into(), json!(a.severity));
        for (k, v) in &a.labels {
            labels.insert((*k).into(), json!(v));
        }
        for (k, v) in &a.fire_labels {
            labels.insert(k.clone(), json!(v));
        }
        let input = |s: &[Series]| -> Vec<Value> {
            s.iter()
                .map(|x| json!({ "series": x.series, "values": x.values }))
                .collect()
        };
        tests.push(json!({
            "name": format!("{} fires", a.name),
            "interval": "1m",
            "input_series": input(&a.fire),
            "alert_rule_test": [{
                "eval_time": "20m",
                "alertname": a.name,
                "exp_alerts": [{ "exp_labels": labels, "exp_annotations": { "summary": a.summary } }],
            }],
        }));
        tests.push(json!({
            "name": format!("{} stays silent", a.name),
            "interval": "1m",
            "input_series": input(&a.quiet),
            "alert_rule_test": [{ "eval_time": "20m", "alertname": a.name, "exp_alerts": [] }],
        }));
    }
    json!({ "rule_files": [format!("../rules/{rule_file}")], "evaluation_interval": "1m", "tests": tests })
}

fn header(cx: &Ctx) -> String {
    format!(
        "# Generated by stackc from the topology of stack `{}`. Do not edit: change the topology and run `stackc build`.\n",
        cx.stack()
    )
}

pub fn emit(cx: &mut Ctx) -> Vec<Artifact> {
    let t = cx.topology;
    let Some(mon) = &t.monitoring else {
        return Vec::new();
    };
    let mut out = vec![Artifact::new(
        CONFIG,
        header(cx) + &crate::yaml::value_to_string(&scrape_config(cx)),
    )];

    let mut alerts = Vec::new();
    for (i, s) in t.services.iter().enumerate() {
        if s.metrics.is_none() && (s.instances() > 1 || s.rollout.is_some()) {
            cx.unmapped(
                Target::Prometheus,
                &format!("the derived alerts for `{}`", s.name.value),
                s.name.span,
                "the service has no `metrics` endpoint, so there is no `up` series to alert on; add metrics path=... port=...",
            );
        }
        service_alerts(cx, i, s, &mut alerts);
    }
    for b in &t.balancers {
        balancer_alerts(cx, b, &mut alerts);
    }
    let alerts = dedupe(alerts);
    out.push(Artifact::new(
        DERIVED_RULES,
        header(cx)
            + &crate::yaml::value_to_string(&rules_file(
                &format!("{}-derived", cx.stack()),
                &alerts,
            )),
    ));
    out.push(Artifact::new(
        DERIVED_TESTS,
        header(cx) + &crate::yaml::value_to_string(&tests_file("derived.rules.yml", &alerts)),
    ));

    if !mon.alerts.is_empty() {
        let rules: Vec<Value> = mon
            .alerts
            .iter()
            .map(|a| {
                let mut labels = Map::new();
                labels.insert(
                    "severity".into(),
                    json!(match a.severity {
                        Severity::Info => "info",
                        Severity::Warning => "warning",
                        Severity::Critical => "critical",
                    }),
                );
                for (k, v) in &a.labels {
                    labels.insert(k.value.clone(), json!(v));
                }
                let mut rule = Map::new();
                rule.insert("alert".into(), json!(a.name.value));
                rule.insert("expr".into(), json!(a.expr.value));
                if let Some(f) = &a.for_ {
                    rule.insert("for".into(), json!(secs(f)));
                }
                rule.insert("labels".into(), Value::Object(labels));
                if !a.annotations.is_empty() {
                    let ann: Map<String, Value> = a
                        .annotations
                        .iter()
                        .map(|(k, v)| (k.value.clone(), json!(v)))
                        .collect();
                    rule.insert("annotations".into(), Value::Object(ann));
                }
                Value::Object(rule)
            })
            .collect();
        let doc = json!({ "groups": [{ "name": format!("{}-user", cx.stack()), "rules": rules }] });
        out.push(Artifact::new(
            USER_RULES,
            header(cx) + &crate::yaml::value_to_string(&doc),
        ));
    }
    let _ = nginx::STATUS_PATH;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_are_camel_case() {
        assert_eq!(camel("user-management"), "UserManagement");
        assert_eq!(camel("db"), "Db");
    }
}
