//! `stackc graph`: the dependency graph, as phases, DOT, Mermaid or JSON.

use super::{GraphFormat, Input, Ui, print_diags};

pub fn run(ui: &Ui, input: &Input, format: GraphFormat) -> u8 {
    let checked = crate::check_file(&input.path(), input.env.as_deref());
    print_diags(ui, &checked);
    let (Some(t), Some(g), true) = (&checked.topology, &checked.graph, checked.ok()) else {
        eprintln!("error: the topology has errors; fix them to see its graph");
        return 1;
    };
    let stack = &t.stack.name.value;
    match format {
        GraphFormat::Text => print!("{}", crate::graph::to_text(g, stack)),
        GraphFormat::Dot => print!("{}", crate::graph::to_dot(g, stack)),
        GraphFormat::Mermaid => print!("{}", crate::graph::to_mermaid(g)),
        GraphFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&crate::graph::to_json(g, stack)).expect("json")
        ),
    }
    0
}
