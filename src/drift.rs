//! Drift: the live system against the topology. Pure comparison of the
//! desired containers with what the engine reports, honouring the
//! topology's `drift-ignore` rules (each with its reason).

use std::collections::HashMap;

use serde::Serialize;

use crate::apply::docker::Live;
use crate::model::DriftIgnore;
use crate::plan::{ContainerSpec, Desired, EnvValue, Observed};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub object: String,
    pub field: String,
    pub expected: String,
    pub actual: String,
    /// The reason from a `drift-ignore` rule when the item is ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

fn item(object: &str, field: &str, expected: impl Into<String>, actual: impl Into<String>) -> Item {
    Item {
        object: object.to_string(),
        field: field.to_string(),
        expected: expected.into(),
        actual: actual.into(),
        ignored: None,
    }
}

fn restart_name(s: &str) -> &str {
    match s {
        "on-failure" => "on-failure",
        "always" => "always",
        "no" => "no",
        _ => "unless-stopped",
    }
}

/// Compare one container.
fn container(spec: &ContainerSpec, live: Option<&Live>, out: &mut Vec<Item>) {
    let Some(live) = live else {
        out.push(item(&spec.name, "container", "present", "missing"));
        return;
    };
    if !live.running {
        out.push(item(&spec.name, "state", "running", "stopped"));
    }
    if live.image != spec.image {
        out.push(item(&spec.name, "image", &spec.image, &live.image));
    }
    let env: HashMap<&str, &str> = live.env.iter().filter_map(|e| e.split_once('=')).collect();
    for (k, v) in &spec.env {
        // Secret values are never compared, printed or stored.
        if let EnvValue::Literal(want) = v {
            match env.get(k.as_str()) {
                Some(got) if got == want => {}
                Some(got) => out.push(item(&spec.name, &format!("env {k}"), want, *got)),
                None => out.push(item(&spec.name, &format!("env {k}"), want, "(unset)")),
            }
        }
    }
    if live.memory != spec.memory {
        let show = |m: Option<i64>| m.map_or_else(|| "(no limit)".to_string(), |v| v.to_string());
        out.push(item(
            &spec.name,
            "memory",
            show(spec.memory),
            show(live.memory),
        ));
    }
    if live.nano_cpus != spec.nano_cpus {
        let show = |m: Option<i64>| {
            m.map_or_else(
                || "(no limit)".to_string(),
                |v| format!("{}", v as f64 / 1e9),
            )
        };
        out.push(item(
            &spec.name,
            "cpus",
            show(spec.nano_cpus),
            show(live.nano_cpus),
        ));
    }
    if let Some(r) = &live.restart
        && restart_name(r) != restart_name(&spec.restart)
    {
        out.push(item(&spec.name, "restart", &spec.restart, r));
    }
}

/// Every difference between `desired` and the live system.
pub fn compare(
    desired: &Desired,
    observed: &Observed,
    live: &HashMap<String, Live>,
    ignores: &[DriftIgnore],
) -> Vec<Item> {
    let mut out = Vec::new();
    if !observed
        .networks
        .iter()
        .any(|n| n.name == desired.network.name)
    {
        out.push(item(&desired.network.name, "network", "present", "missing"));
    }
    for v in &desired.volumes {
        if !observed.volumes.iter().any(|o| &o.name == v) {
            out.push(item(v, "volume", "present", "missing"));
        }
    }
    for spec in &desired.containers {
        let before = out.len();
        container(spec, live.get(&spec.name), &mut out);
        for it in &mut out[before..] {
            let field = it
                .field
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            if let Some(rule) = ignores.iter().find(|r| {
                r.service.value == spec.service
                    && (r.field.value == field || r.field.value == it.field)
            }) {
                it.ignored = Some(rule.reason.clone());
            }
        }
    }
    for o in &observed.containers {
        if o.owned_by(&desired.stack)
            && !desired.containers.iter().any(|c| c.name == o.name)
            // A previous version kept for instant rollback is expected.
            && o.kept_until().is_none_or(|t| t <= observed.now)
        {
            out.push(item(
                &o.name,
                "container",
                "absent (not in the topology)",
                "present",
            ));
        }
    }
    out
}
