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

/// The values of the dashboard's variable `var`, or nothing without it.
fn var_values(d: &Value, var: &str) -> Vec<String> {
    d["templating"]["list"]
        .as_array()
        .expect("templating list")
        .iter()
        .filter(|v| v["name"] == var)
        .flat_map(|v| {
            assert_eq!(v["type"], "custom", "variable {var}");
            v["query"]
                .as_str()
                .expect("query")
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every job `expr` selects, a variable in it (`$service`) replaced by
/// each of its values.
fn jobs_expanded(d: &Value, expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for job in jobs_in(expr) {
        match job.split_once('$') {
            None => out.push(job),
            Some((before, rest)) => {
                let var: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let after = &rest[var.len()..];
                let values = var_values(d, &var);
                assert!(!values.is_empty(), "{expr}: no values for ${var}");
                out.extend(values.iter().map(|v| format!("{before}{v}{after}")));
            }
        }
    }
    out
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
    let repeated: Vec<&Value> = panels
        .iter()
        .filter(|p| p["type"] == "row" && p.get("repeat").is_some())
        .collect();
    if repeated.is_empty() {
        for s in &t.services {
            let monitored = s.metrics.is_some() || !s.exporters.is_empty();
            assert_eq!(
                rows.iter().filter(|r| **r == s.name.value).count(),
                usize::from(monitored),
                "{name}: row of service {}",
                s.name.value
            );
        }
    } else {
        // One row per variable, repeated by Grafana over exactly the
        // services with metrics, and with exporters.
        for r in &repeated {
            let var = r["repeat"].as_str().expect("repeat names a variable");
            assert!(
                r["title"]
                    .as_str()
                    .expect("title")
                    .contains(&format!("${var}")),
                "{name}: repeated row {r}"
            );
        }
        let services = var_values(d, "service");
        let exporters = var_values(d, "exporter");
        for s in &t.services {
            let n = &s.name.value;
            assert_eq!(services.contains(n), s.metrics.is_some(), "{name}: {n}");
            assert_eq!(
                exporters.contains(n),
                !s.exporters.is_empty(),
                "{name}: {n}"
            );
            assert!(
                !rows.contains(&n.as_str()),
                "{name}: a row of its own for {n}"
            );
        }
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
            let named = jobs_expanded(d, expr);
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

/// A stack of `n` services, `n - 1` of them monitored: every third with
/// an exporter (half of those without metrics), the others with metrics,
/// `svc-2` with neither.
fn many_services(n: usize) -> String {
    let mut text = String::from("stack \"many\"\n");
    for i in 0..n {
        text += &format!("service \"svc-{i}\" {{\n    image \"example/svc:1\"\n    port 8080\n");
        if i != 2 && i % 6 != 3 {
            text += "    metrics path=\"/metrics\" port=8080\n";
        }
        if i % 3 == 0 {
            text += "    exporter \"redis\"\n";
        }
        text += "    health http=\"/health\" port=8080\n}\n";
    }
    text + "balancer \"edge\" {\n    route \"/\" to=\"svc-1\"\n}\nmonitoring {\n    grafana\n}\n"
}

fn dashboard_of(text: &str) -> (Topology, Value) {
    let c = stackc::check_str("many.kdl", text, &root(), None);
    assert!(
        c.ok(),
        "{}",
        stackc::diag::render_plain(&c.diags, &c.sources)
    );
    let t = c.topology.expect("model");
    let (arts, _) = targets::build(&t, c.graph.as_ref().expect("graph"), &[Target::Grafana]);
    let dash = find(&arts, "grafana/dashboards/many.json");
    let d = serde_json::from_str(&dash.content).expect("dashboard JSON");
    (t, d)
}

#[test]
fn large_stacks_repeat_one_service_row_over_a_variable() {
    let from = stackc::targets::grafana::REPEAT_FROM;
    // One below the limit: a row per monitored service.
    let (t, d) = dashboard_of(&many_services(from));
    check_dashboard("below", &t, &d);
    assert!(
        d["panels"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.get("repeat").is_none())
    );
    assert_eq!(d["templating"]["list"], serde_json::json!([]));
    let rows = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "row")
        .count();
    assert_eq!(
        rows,
        from - 1 + 1,
        "a row per monitored service and the balancer"
    );

    // At the limit and far above it: two repeated rows and the balancer's,
    // the same handful of panels whatever the size.
    let (t, small) = dashboard_of(&many_services(from + 1));
    assert!(t.services[2].metrics.is_none() && t.services[2].exporters.is_empty());
    check_dashboard("at", &t, &small);
    let (t, big) = dashboard_of(&many_services(1000));
    check_dashboard("above", &t, &big);
    for d in [&small, &big] {
        let panels = d["panels"].as_array().unwrap();
        let titles: Vec<&str> = panels
            .iter()
            .filter(|p| p["type"] == "row")
            .map(|p| p["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, ["$service", "$exporter exporters", "edge (nginx)"]);
        assert_eq!(panels.len(), 3 + 5 + 1 + 3);
    }
    assert_eq!(var_values(&big, "service").len(), 1000 - 1 - 167);
    assert_eq!(var_values(&big, "exporter").len(), 334);
    assert_eq!(
        var_values(&big, "service")[..3],
        ["svc-0", "svc-1", "svc-4"]
    );
    assert_eq!(
        var_values(&big, "exporter")[..3],
        ["svc-0", "svc-3", "svc-6"]
    );
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
