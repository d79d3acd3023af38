//! Decoding the `monitoring` block.

use crate::diag::Diagnostics;
use crate::model::*;
use crate::parse::reader::{NodeReader, Once, unknown_node};
use crate::parse::tree::Node;

pub fn decode(node: &Node, out: &mut Diagnostics) -> Option<Monitoring> {
    let mut r = NodeReader::new(node);
    r.allow_children();
    let tier = r.prop_string("tier");
    r.finish(out);
    let mut once = Once::default();
    let mut prometheus = None;
    let mut grafana = None;
    let mut exporters = Vec::new();
    let mut alerts = Vec::new();
    for child in node.children() {
        let kind = child.name.value.as_str();
        if matches!(kind, "prometheus" | "grafana") && !once.first(child, out) {
            continue;
        }
        match kind {
            "prometheus" => {
                let mut c = NodeReader::new(child);
                let image = c.prop_string("image");
                let scrape_interval = c.prop_duration("scrape-interval");
                let retention = c.prop_duration("retention");
                let port = c.prop_port("port").map_or(9090, |p| p.value);
                let published = c.prop_port("published");
                c.finish(out);
                prometheus = Some(Prometheus {
                    image,
                    scrape_interval: scrape_interval
                        .unwrap_or_else(|| Duration::parse("15s").expect("constant")),
                    retention: retention
                        .unwrap_or_else(|| Duration::parse("15d").expect("constant")),
                    port,
                    published,
                    span: child.span,
                });
            }
            "grafana" => {
                let mut c = NodeReader::new(child);
                let image = c.prop_string("image");
                let dashboards = c.prop_bool("dashboards").unwrap_or(true);
                let enabled = c.prop_bool("enabled").unwrap_or(true);
                let port = c.prop_port("port").map_or(3000, |p| p.value);
                let published = c.prop_port("published");
                c.finish(out);
                if enabled {
                    grafana = Some(Grafana {
                        image,
                        dashboards,
                        port,
                        published,
                        span: child.span,
                    });
                }
            }
            "exporter" => {
                let mut c = NodeReader::new(child);
                if let Some(k) = c.arg_string(0, "an exporter kind") {
                    exporters.push(k);
                }
                c.finish(out);
            }
            "alert" => alerts.extend(decode_alert(child, out)),
            _ => unknown_node(
                child,
                "`monitoring`",
                &["prometheus", "grafana", "exporter", "alert"],
                out,
            ),
        }
    }
    let prometheus = prometheus.unwrap_or_else(|| Prometheus {
        image: None,
        scrape_interval: Duration::parse("15s").expect("constant"),
        retention: Duration::parse("15d").expect("constant"),
        port: 9090,
        published: None,
        span: node.name.span,
    });
    Some(Monitoring {
        tier,
        prometheus,
        grafana,
        exporters,
        alerts,
        span: node.span,
    })
}

fn decode_alert(node: &Node, out: &mut Diagnostics) -> Option<Alert> {
    let mut c = NodeReader::new(node);
    c.allow_children();
    let name = c.arg_string(0, "an alert name");
    let expr = c.required_prop_string(
        "expr",
        "alert \"HighErrorRate\" expr=\"rate(errors_total[5m]) > 0.1\" for=\"2m\"",
    );
    let for_ = c.prop_duration("for");
    let severity = match c.prop_string("severity") {
        Some(s) => c.choice(
            &s,
            "severity",
            &["info", "warning", "critical"],
            |v| match v {
                "info" => Some(Severity::Info),
                "warning" => Some(Severity::Warning),
                "critical" => Some(Severity::Critical),
                _ => None,
            },
        ),
        None => Some(Severity::Warning),
    };
    c.finish(out);
    let mut labels = Vec::new();
    let mut annotations = Vec::new();
    for child in node.children() {
        match child.name.value.as_str() {
            "label" | "annotation" => {
                let mut cc = NodeReader::new(child);
                let k = cc.arg_string(0, "a key");
                let v = cc.arg_string(1, "a value");
                cc.finish(out);
                if let (Some(k), Some(v)) = (k, v) {
                    if child.name.value == "label" {
                        labels.push((k, v.value));
                    } else {
                        annotations.push((k, v.value));
                    }
                }
            }
            _ => unknown_node(child, "`alert`", &["label", "annotation"], out),
        }
    }
    Some(Alert {
        name: name?,
        expr: expr?,
        for_,
        severity: severity?,
        labels,
        annotations,
        span: node.span,
    })
}
