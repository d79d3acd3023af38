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
                "ok: {} ({} services, {} balancers, {} phases{})",
                t.stack.name.value,
                t.services.len(),
                t.balancers.len(),
                g.phases.len(),
                match checked.diags.warning_count() {
                    0 => String::new(),
                    n => format!(", {n} warning{}", if n == 1 { "" } else { "s" }),
                }
            ),
            _ => eprintln!(
                "error: {} error{}, {} warning{}",
                checked.diags.error_count(),
                if checked.diags.error_count() == 1 {
                    ""
                } else {
                    "s"
                },
                checked.diags.warning_count(),
                if checked.diags.warning_count() == 1 {
                    ""
                } else {
                    "s"
                }
            ),
        }
    }
    u8::from(!ok)
}
