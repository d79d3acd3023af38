//! The Grafana target over every example: provisioning files parse with
//! the expected keys, the dashboard is well formed (unique ids, no
//! overlapping panels, a row per monitored service and per balancer) and
//! every query selects a job the Prometheus target scrapes.

use std::collections::BTreeSet;

use serde_json::Value;
use stackc::model::Topology;
use stackc::targets::{self, Artifact, Target};

use crate::support::root;
use crate::targets::examples;

const DATASOURCE: &str = "grafana/provisioning/datasources/prometheus.yaml";
const PROVIDER: &str = "grafana/provisioning/dashboards/stackc.yaml";

fn build_grafana(file: &std::path::Path) -> (Topology, Vec<Artifact>) {
    let c = stackc::check_file(file, None);
    assert!(
        c.ok(),
        "{}: {}",
        file.display(),
        stackc::diag::render_plain(&c.diags, &c.sources)
    );
    let t = c.topology.expect("model");
    let (arts, warnings) = targets::build(&t, c.graph.as_ref().expect("graph"), &[Target::Grafana]);
    assert!(!warnings.has_errors());
    (t, arts)
}

fn find<'a>(arts: &'a [Artifact], path: &str) -> &'a Artifact {
    arts.iter()
        .find(|a| a.path == path)
        .unwrap_or_else(|| panic!("{path} missing"))
}

/// Jobs the Prometheus target scrapes, by the job-name functions it
/// exports: services' metrics endpoints and exporters, balancers' nginx
/// exporters, host exporters by kind.
fn scraped_jobs(t: &Topology) -> BTreeSet<String> {
    use stackc::targets::prometheus::{balancer_job, exporter_job, metrics_job};
    let mut jobs = BTreeSet::new();
    for s in &t.services {
        if s.metrics.is_some() {
            jobs.insert(metrics_job(&s.name.value));
        }
        if !s.exporters.is_empty() {
            jobs.insert(exporter_job(&s.name.value));
        }
    }
    for b in &t.balancers {
        jobs.insert(balancer_job(&b.name.value));
    }
    if let Some(m) = &t.monitoring {
        for x in &m.exporters {
            jobs.insert(x.value.clone());
        }
    }
    jobs
}

/// Every `job="..."` in a PromQL expression.
fn jobs_in(expr: &str) -> Vec<String> {
    expr.split("job=\"")
        .skip(1)
        .map(|r| r.split('"').next().expect("closing quote").to_string())
        .collect()
}

fn check_dashboard(name: &str, t: &Topology, d: &Value) {
    let stack = &t.stack.name.value;
    assert_eq!(d["title"], stack.as_str(), "{name}");
    assert_eq!(d["schemaVersion"], 39, "{name}");
    assert_eq!(d["time"]["from"], "now-1h", "{name}");
    let uid = d["uid"].as_str().expect("uid");
    assert!(!uid.is_empty() && uid.len() <= 40, "{name}: uid {uid}");

    let panels = d["panels"].as_array().expect("panels");
    let ids: BTreeSet<u64> = panels
        .iter()
        .map(|p| p["id"].as_u64().expect("numeric id"))
        .collect();
    assert_eq!(ids.len(), panels.len(), "{name}: panel ids repeat");

    let rects: Vec<[u64; 4]> = panels
        .iter()
        .map(|p| {
            let g = &p["gridPos"];
            let f = |k: &str| g[k].as_u64().expect("gridPos field");
            [f("x"), f("y"), f("w"), f("h")]
        })
        .collect();
    for (i, [x, y, w, h]) in rects.iter().enumerate() {
        assert!(x + w <= 24, "{name}: panel past the 24-column grid");
        for [x2, y2, w2, h2] in &rects[i + 1..] {
            let apart = x + w <= *x2 || x2 + w2 <= *x || y + h <= *y2 || y2 + h2 <= *y;
            assert!(
                apart,
                "{name}: {:?} overlaps {:?}",
                [x, y, w, h],
                [x2, y2, w2, h2]
            );
        }
    }

    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().expect("row title"))
        .collect();
    assert!(
        panels
            .iter()
            .filter(|p| p["type"] == "row")
            .all(|p| p["collapsed"] == false),
        "{name}"
    );
    for s in &t.services {
        let monitored = s.metrics.is_some() || !s.exporters.is_empty();
        assert_eq!(
            rows.iter().filter(|r| **r == s.name.value).count(),
            usize::from(monitored),
            "{name}: row of service {}",
            s.name.value
        );
    }
    for b in &t.balancers {
        assert_eq!(
            rows.iter()
                .filter(|r| r.starts_with(&format!("{} ", b.name.value)))
                .count(),
            1,
            "{name}: row of balancer {}",
            b.name.value
        );
    }

    let jobs = scraped_jobs(t);
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "prometheus", "{name}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{name}: panel without queries");
        for tg in targets {
            let expr = tg["expr"].as_str().expect("expr");
            let named = jobs_in(expr);
            assert!(!named.is_empty(), "{name}: {expr} selects no job");
            for j in named {
                assert!(jobs.contains(&j), "{name}: {expr}: no scrape job `{j}`");
            }
        }
    }
}

#[test]
fn every_example_with_grafana_gets_provisioning_and_a_dashboard() {
    let mut checked = 0;
    for (name, file) in examples() {
        let (t, arts) = build_grafana(&file);
        let Some(mon) = &t.monitoring else {
            assert!(arts.is_empty(), "{name}");
            continue;
        };
        let Some(g) = &mon.grafana else {
            assert!(arts.is_empty(), "{name}");
            continue;
        };
        checked += 1;

        let ds: Value = stackc::yaml::from_str(&find(&arts, DATASOURCE).content).expect("yaml");
        assert_eq!(ds["apiVersion"], 1, "{name}");
        let sources = ds["datasources"].as_array().expect("datasources");
        assert_eq!(sources.len(), 1, "{name}");
        assert_eq!(sources[0]["type"], "prometheus");
        assert_eq!(sources[0]["uid"], "prometheus");
        assert_eq!(sources[0]["access"], "proxy");
        assert_eq!(sources[0]["isDefault"], true);
        assert_eq!(
            sources[0]["url"],
            format!("http://prometheus:{}", mon.prometheus.port)
        );

        if !g.dashboards {
            assert_eq!(arts.len(), 1, "{name}");
            continue;
        }
        let prov: Value = stackc::yaml::from_str(&find(&arts, PROVIDER).content).expect("yaml");
        assert_eq!(prov["apiVersion"], 1, "{name}");
        let p = &prov["providers"][0];
        assert_eq!(p["type"], "file");
        assert_eq!(p["folder"], t.stack.name.value.as_str());
        assert_eq!(p["options"]["path"], "/var/lib/grafana/dashboards");

        let dash = find(
            &arts,
            &format!("grafana/dashboards/{}.json", t.stack.name.value),
        );
        assert!(dash.content.ends_with("}\n"), "{name}: trailing newline");
        let d: Value = serde_json::from_str(&dash.content).expect("dashboard JSON");
        check_dashboard(&name, &t, &d);
    }
    assert!(checked > 0, "no example enables grafana");
}

#[test]
fn grafana_builds_are_deterministic() {
    for (_, file) in examples() {
        let (_, a) = build_grafana(&file);
        let (_, b) = build_grafana(&file);
        assert_eq!(a, b, "{}", file.display());
    }
}

#[test]
fn no_grafana_no_files() {
    let text = r#"
stack "plain"
service "web" {
    image "nginx:1.27"
    port 80
    metrics path="/metrics" port=80
}
monitoring {
    prometheus
}
"#;
    let c = stackc::check_str("plain.kdl", text, &root(), None);
    assert!(
        c.ok(),
        "{}",
        stackc::diag::render_plain(&c.diags, &c.sources)
    );
    let (arts, _) = targets::build(
        c.topology.as_ref().expect("model"),
        c.graph.as_ref().expect("graph"),
        &Target::ALL,
    );
    assert!(!arts.is_empty());
    assert!(
        arts.iter().all(|a| !a.path.starts_with("grafana/")),
        "{:?}",
        arts.iter().map(|a| &a.path).collect::<Vec<_>>()
    );
}
