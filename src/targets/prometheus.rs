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

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{Artifact, Ctx, Instance, Ordered, Role, Sink, Target, nginx};
use crate::model::*;
use crate::yaml::{write_entry, write_item};

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
fn q(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\\', '"']) {
        return s.into();
    }
    s.replace('\\', "\\\\").replace('"', "\\\"").into()
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

/// A label set, in order.
type Pairs<'a> = Ordered<&'a str, &'a str>;

/// A static scrape target group.
#[derive(Serialize)]
struct Group<'a> {
    targets: [String; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<Pairs<'a>>,
}

#[derive(Serialize)]
struct Job<'a> {
    job_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_path: Option<&'a str>,
    static_configs: Vec<Group<'a>>,
}

/// Files are written in parts of about this size.
const CHUNK: usize = 1 << 16;

/// Hand `out` to `sink` as a part of `path` once it is large.
fn flush(sink: &mut dyn Sink, path: &str, out: &mut String) {
    if out.len() >= CHUNK {
        sink.write(path, out, false);
        out.clear();
    }
}

/// `prometheus.yml`, into `sink`.
fn scrape_config(cx: &Ctx, sink: &mut dyn Sink) {
    let t = cx.topology;
    let mon = t.monitoring.as_ref().expect("called with monitoring");
    let mut out = header(cx);
    write_entry(
        &mut out,
        0,
        "global",
        &json!({
            "scrape_interval": secs(&mon.prometheus.scrape_interval),
            "evaluation_interval": secs(&mon.prometheus.scrape_interval),
            "external_labels": { "stack": cx.stack() },
        }),
    );
    let mut rule_files = vec!["rules/derived.rules.yml"];
    if !mon.alerts.is_empty() {
        rule_files.push("rules/user.rules.yml");
    }
    write_entry(&mut out, 0, "rule_files", &rule_files);
    out.push_str("scrape_configs:\n");
    let mut job = |out: &mut String, j: Job| {
        write_item(out, 0, &j);
        flush(sink, CONFIG, out);
    };
    job(
        &mut out,
        Job {
            job_name: "prometheus",
            metrics_path: None,
            static_configs: vec![Group {
                targets: [format!("localhost:{}", mon.prometheus.port)],
                labels: None,
            }],
        },
    );
    for (i, s) in t.services.iter().enumerate() {
        if let Some(m) = &s.metrics {
            let groups = cx.plan.services[i]
                .iter()
                .map(|inst| Group {
                    targets: [format!("{}:{}", inst.name, m.port.value)],
                    labels: Some(Ordered(vec![
                        ("service", &s.name.value),
                        ("role", inst.role.as_str()),
                    ])),
                })
                .collect();
            job(
                &mut out,
                Job {
                    job_name: &metrics_job(&s.name.value),
                    metrics_path: Some(&m.path.value),
                    static_configs: groups,
                },
            );
        }
        if !s.exporters.is_empty() {
            let groups = s
                .exporters
                .iter()
                .map(|x| Group {
                    targets: [format!(
                        "{}-{}-exporter:{}",
                        s.name.value, x.kind.value, x.port
                    )],
                    labels: Some(Ordered(vec![
                        ("service", &s.name.value),
                        ("exporter", &x.kind.value),
                    ])),
                })
                .collect();
            job(
                &mut out,
                Job {
                    job_name: &exporter_job(&s.name.value),
                    metrics_path: None,
                    static_configs: groups,
                },
            );
        }
    }
    for b in &t.balancers {
        job(
            &mut out,
            Job {
                job_name: &balancer_job(&b.name.value),
                metrics_path: None,
                static_configs: vec![Group {
                    targets: [format!("{}-nginx-exporter:9113", b.name.value)],
                    labels: Some(Ordered(vec![("balancer", &b.name.value)])),
                }],
            },
        );
    }
    for x in &mon.exporters {
        let port = crate::parse::decode::default_exporter_port(&x.value);
        job(
            &mut out,
            Job {
                job_name: &x.value,
                metrics_path: None,
                static_configs: vec![Group {
                    targets: [format!("{}-exporter:{port}", x.value)],
                    labels: None,
                }],
            },
        );
    }
    sink.write(CONFIG, &out, true);
}

/// One input series of a test: selector and values in promtool notation.
#[derive(Serialize)]
struct Series {
    series: String,
    /// Mostly one of a few fixed texts (`1x30`, `0x30`).
    values: std::borrow::Cow<'static, str>,
}

fn series(s: impl Into<String>, v: impl Into<std::borrow::Cow<'static, str>>) -> Series {
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

/// The `up` series of each member of a service, written once: the
/// alerts' tests use them many times over.
struct Ups<'p> {
    members: &'p [Instance],
    names: Vec<String>,
}

impl<'p> Ups<'p> {
    fn new(job: &str, members: &'p [Instance], port: u16, service: &str) -> Self {
        let (job, service) = (q(job), q(service));
        let port = itoa::Buffer::new().format(port).to_string();
        let names = members
            .iter()
            .map(|inst| {
                crate::cat!(
                    "up{job=\"",
                    job,
                    "\",instance=\"",
                    q(&inst.name),
                    ":",
                    port,
                    "\",service=\"",
                    service,
                    "\",role=\"",
                    inst.role.as_str(),
                    "\"}"
                )
            })
            .collect();
        Ups { members, names }
    }

    /// Each member's series, down (`0`) where `down` says so, else up.
    fn with_down(&self, down: impl Fn(&Instance) -> bool) -> Vec<Series> {
        self.members
            .iter()
            .zip(&self.names)
            .map(|(x, name)| series(name.clone(), if down(x) { "0x30" } else { "1x30" }))
            .collect()
    }
}

fn service_alerts(cx: &Ctx, i: usize, s: &Service, out: &mut Vec<Alert>) {
    let Some(m) = &s.metrics else { return };
    let job = metrics_job(&s.name.value);
    let name = camel(&s.name.value);
    let members = &cx.plan.services[i];
    let port = m.port.value;
    let ups = Ups::new(&job, members, port, &s.name.value);
    let all_up = || ups.with_down(|_| false);
    let svc = vec![("service", s.name.value.clone())];
    // The expressions select the job's series: `up{job="..."}`.
    let up = crate::cat!("up{job=\"", q(&job), "\"}");
    let mut digits = itoa::Buffer::new();

    let first = &members[0];
    out.push(Alert {
        name: crate::cat!(name, "InstanceDown"),
        expr: crate::cat!(up, " == 0"),
        for_: "1m",
        severity: "warning",
        labels: vec![],
        summary: crate::cat!("An instance of ", s.name.value, " is down"),
        fire: ups.with_down(|x| x.ordinal == 0),
        fire_labels: vec![
            ("job".into(), job.clone()),
            (
                "instance".into(),
                crate::cat!(first.name, ":", digits.format(port)),
            ),
            ("service".into(), s.name.value.clone()),
            ("role".into(), first.role.as_str().into()),
        ],
        quiet: all_up(),
    });
    let n = s.instances();
    if n > 1 {
        let min = s.cluster.min_healthy();
        let n_text = digits.format(n).to_string();
        out.push(Alert {
            name: crate::cat!(name, "Degraded"),
            expr: crate::cat!("sum(", up, ") < ", n_text),
            for_: "5m",
            severity: "warning",
            labels: svc.clone(),
            summary: crate::cat!(s.name.value, " runs fewer than its ", n_text, " replicas"),
            fire: ups.with_down(|x| x.ordinal == 0),
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
            expr: crate::cat!("sum(", up, ") < ", digits.format(min)),
            for_: if quorum { "30s" } else { "1m" },
            severity: "critical",
            labels: svc.clone(),
            summary,
            fire: ups.with_down(|x| x.ordinal < down),
            fire_labels: vec![],
            quiet: ups.with_down(|x| min < n && x.ordinal < n - min),
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
                fire: ups.with_down(|x| x.role == role),
                fire_labels: vec![],
                // A standby down while the primary serves is not this alert.
                quiet: ups.with_down(|x| x.role != role),
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
        let ups = Ups::new(&sjob, members, m.port.value, &s.name.value);
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
            fire: ups.with_down(|_| true),
            fire_labels: vec![],
            quiet: ups.with_down(|x| x.ordinal > 0),
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

/// Name alerts with the same name (one per balancer route) apart, so
/// names stay unique within the file: `seen` holds the names so far.
fn rename(seen: &mut crate::Set<String>, a: &mut Alert) {
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
}

/// Every derived alert, in order, uniquely named: computed a service at
/// a time, never all held.
fn each_alert(cx: &Ctx, f: &mut dyn FnMut(&Alert)) {
    let t = cx.topology;
    let mut seen = crate::Set::default();
    let mut alerts = Vec::new();
    let mut drain = |alerts: &mut Vec<Alert>| {
        for mut a in alerts.drain(..) {
            rename(&mut seen, &mut a);
            f(&a);
        }
    };
    for (i, s) in t.services.iter().enumerate() {
        service_alerts(cx, i, s, &mut alerts);
        drain(&mut alerts);
    }
    for b in &t.balancers {
        balancer_alerts(cx, b, &mut alerts);
        drain(&mut alerts);
    }
}

#[derive(Serialize)]
struct Summary<'a> {
    summary: &'a str,
}

#[derive(Serialize)]
struct Rule<'a> {
    alert: &'a str,
    expr: &'a str,
    #[serde(rename = "for")]
    for_: &'a str,
    labels: Pairs<'a>,
    annotations: Summary<'a>,
}

/// `severity`, the alert's labels and, for a firing alert, those of its
/// result.
fn labels_of(a: &Alert, firing: bool) -> Pairs<'_> {
    let mut v = Ordered(vec![("severity", a.severity)]);
    for (k, val) in &a.labels {
        v.set(k, val);
    }
    if firing {
        for (k, val) in &a.fire_labels {
            v.set(k, val);
        }
    }
    v
}

/// A rule file being written: one group, its rules appended.
struct RulesFile {
    out: String,
    rules: usize,
}

impl RulesFile {
    fn new(cx: &Ctx, group: &str) -> Self {
        let mut out = header(cx);
        out.push_str("groups:\n- name: ");
        crate::yaml::write_scalar(&mut out, group);
        out.push_str("\n  rules:");
        RulesFile { out, rules: 0 }
    }

    fn push<T: Serialize>(&mut self, rule: &T) {
        if self.rules == 0 {
            self.out.push('\n');
        }
        self.rules += 1;
        write_item(&mut self.out, 2, rule);
    }

    fn push_alert(&mut self, a: &Alert) {
        self.push(&Rule {
            alert: &a.name,
            expr: &a.expr,
            for_: a.for_,
            labels: labels_of(a, false),
            annotations: Summary {
                summary: &a.summary,
            },
        });
    }

    fn finish(mut self) -> String {
        if self.rules == 0 {
            self.out.push_str(" []\n");
        }
        self.out
    }
}

#[derive(Serialize)]
struct Expected<'a> {
    exp_labels: Pairs<'a>,
    exp_annotations: Summary<'a>,
}

#[derive(Serialize)]
struct RuleTest<'a> {
    eval_time: &'static str,
    alertname: &'a str,
    exp_alerts: Vec<Expected<'a>>,
}

#[derive(Serialize)]
struct Test<'a> {
    name: String,
    interval: &'static str,
    input_series: &'a [Series],
    alert_rule_test: [RuleTest<'a>; 1],
}

/// The two tests of an alert: it fires, it stays silent.
fn write_tests(out: &mut String, a: &Alert) {
    write_item(
        out,
        0,
        &Test {
            name: format!("{} fires", a.name),
            interval: "1m",
            input_series: &a.fire,
            alert_rule_test: [RuleTest {
                eval_time: "20m",
                alertname: &a.name,
                exp_alerts: vec![Expected {
                    exp_labels: labels_of(a, true),
                    exp_annotations: Summary {
                        summary: &a.summary,
                    },
                }],
            }],
        },
    );
    write_item(
        out,
        0,
        &Test {
            name: format!("{} stays silent", a.name),
            interval: "1m",
            input_series: &a.quiet,
            alert_rule_test: [RuleTest {
                eval_time: "20m",
                alertname: &a.name,
                exp_alerts: Vec::new(),
            }],
        },
    );
}

fn header(cx: &Ctx) -> String {
    format!(
        "# Generated by stackc from the topology of stack `{}`. Do not edit: change the topology and run `stackc build`.\n",
        cx.stack()
    )
}

/// The user's rule file, if they wrote alerts.
fn user_rules(cx: &Ctx, mon: &Monitoring) -> Option<Artifact> {
    if mon.alerts.is_empty() {
        return None;
    }
    let mut file = RulesFile::new(cx, &format!("{}-user", cx.stack()));
    for a in &mon.alerts {
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
        file.push(&Value::Object(rule));
    }
    Some(Artifact::new(USER_RULES, file.finish()))
}

/// The rule files (derived, then the user's if any), computed once per
/// build: the Kubernetes target carries them too.
pub fn rule_files<'c>(cx: &'c Ctx) -> &'c [Artifact] {
    cx.shared.prometheus_rules.get_or_init(|| {
        let Some(mon) = &cx.topology.monitoring else {
            return Vec::new();
        };
        let mut derived = RulesFile::new(cx, &format!("{}-derived", cx.stack()));
        each_alert(cx, &mut |a| derived.push_alert(a));
        let mut files = vec![Artifact::new(DERIVED_RULES, derived.finish())];
        files.extend(user_rules(cx, mon));
        files
    })
}

pub fn emit(cx: &mut Ctx) -> Vec<Artifact> {
    let mut c = super::Collect::default();
    emit_to(cx, &mut c);
    c.artifacts
}

/// As [`emit`], into `sink`: the large files in parts.
pub fn emit_to(cx: &mut Ctx, sink: &mut dyn Sink) {
    let t = cx.topology;
    let Some(mon) = &t.monitoring else {
        return;
    };
    scrape_config(cx, sink);
    for s in &t.services {
        if s.metrics.is_none() && (s.instances() > 1 || s.rollout.is_some()) {
            cx.unmapped(
                Target::Prometheus,
                &format!("the derived alerts for `{}`", s.name.value),
                s.name.span,
                "the service has no `metrics` endpoint, so there is no `up` series to alert on; add metrics path=... port=...",
            );
        }
    }

    // The tests, and the rules on the way unless already computed.
    let mut derived = cx
        .shared
        .prometheus_rules
        .get()
        .is_none()
        .then(|| RulesFile::new(cx, &format!("{}-derived", cx.stack())));
    let mut out = header(cx);
    write_entry(&mut out, 0, "rule_files", &["../rules/derived.rules.yml"]);
    write_entry(&mut out, 0, "evaluation_interval", "1m");
    out.push_str("tests:");
    let mut tests = 0;
    each_alert(cx, &mut |a| {
        if let Some(d) = derived.as_mut() {
            d.push_alert(a);
        }
        if tests == 0 {
            out.push('\n');
        }
        tests += 1;
        write_tests(&mut out, a);
        flush(sink, DERIVED_TESTS, &mut out);
    });
    if tests == 0 {
        out.push_str(" []\n");
    }
    sink.write(DERIVED_TESTS, &out, true);
    drop(out);
    if let Some(d) = derived {
        let mut files = vec![Artifact::new(DERIVED_RULES, d.finish())];
        files.extend(user_rules(cx, mon));
        // Unless another thread got there first, with the same files.
        let _ = cx.shared.prometheus_rules.set(files);
    }
    for a in rule_files(cx) {
        sink.write(&a.path, &a.content, true);
    }
    let _ = nginx::STATUS_PATH;
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
