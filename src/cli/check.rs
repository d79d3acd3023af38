//! `stackc check`: report every problem in a topology.

use serde_json::json;

use super::{Input, Ui, print_diags};

pub fn run(ui: &Ui, input: &Input, json_out: bool) -> u8 {
    let checked = crate::check_file(&input.path(), input.env.as_deref());
    let ok = checked.ok();
    if json_out {
        let summary = checked.topology.as_ref().map(|t| {
            json!({
                "stack": t.stack.name.value,
                "services": t.services.len(),
                "balancers": t.balancers.len(),
                "jobs": t.jobs.len(),
                "phases": checked.graph.as_ref().map(|g| g.phases.len()),
                "env": t.selected_env,
            })
        });
        let out = json!({
            "ok": ok,
            "errors": checked.diags.error_count(),
            "warnings": checked.diags.warning_count(),
            "summary": summary,
            "diagnostics": crate::diag::to_json(&checked.diags, &checked.sources),
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    } else {
        print_diags(ui, &checked);
        match (&checked.topology, &checked.graph, ok) {
            (Some(t), Some(g), true) => println!(
                "ok: {} ({}, {}, {}{})",
                t.stack.name.value,
                count(t.services.len(), "service"),
                count(t.balancers.len(), "balancer"),
                count(g.phases.len(), "phase"),
                match checked.diags.warning_count() {
                    0 => String::new(),
                    n => format!(", {}", count(n, "warning")),
                }
            ),
            _ => eprintln!(
                "error: {}, {}",
                count(checked.diags.error_count(), "error"),
                count(checked.diags.warning_count(), "warning")
            ),
        }
    }
    u8::from(!ok)
}

/// `1 service`, `2 services`.
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}
