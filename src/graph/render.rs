//! Printing a graph: text (phases), DOT, Mermaid and JSON.

use std::fmt::Write;

use serde_json::json;

use super::Graph;

pub fn to_text(g: &Graph, stack: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "stack {stack}: {} components, {} dependencies, {} phases ({})",
        g.components.len(),
        g.edges.len(),
        g.phases.len(),
        if g.explicit_phases {
            "explicit"
        } else {
            "derived"
        }
    );
    for (i, p) in g.phases.iter().enumerate() {
        let names: Vec<&str> = p
            .members
            .iter()
            .map(|m| g.components[*m].name.as_str())
            .collect();
        let _ = writeln!(s, "  {}. {}: {}", i + 1, p.name, names.join(", "));
    }
    let path: Vec<&str> = g
        .critical_path
        .iter()
        .map(|m| g.components[*m].name.as_str())
        .collect();
    let _ = writeln!(
        s,
        "critical path: {} (about {}s to healthy)",
        path.join(" -> "),
        g.critical_secs.round()
    );
    s
}

fn dot_id(s: &str) -> String {
    // Names are DNS labels after validation; quote anyway.
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn to_dot(g: &Graph, stack: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph {} {{", dot_id(stack));
    let _ = writeln!(s, "  rankdir=LR;");
    for (i, p) in g.phases.iter().enumerate() {
        let _ = writeln!(s, "  subgraph cluster_{i} {{");
        let _ = writeln!(
            s,
            "    label={};",
            dot_id(&format!("{}. {}", i + 1, p.name))
        );
        for m in &p.members {
            let _ = writeln!(s, "    {};", dot_id(&g.components[*m].name));
        }
        let _ = writeln!(s, "  }}");
    }
    for e in &g.edges {
        let _ = writeln!(
            s,
            "  {} -> {} [label={}];",
            dot_id(&g.components[e.from].name),
            dot_id(&g.components[e.to].name),
            dot_id(e.condition.as_str())
        );
    }
    s.push_str("}\n");
    s
}

pub fn to_mermaid(g: &Graph) -> String {
    let mut s = String::from("graph LR\n");
    for (i, p) in g.phases.iter().enumerate() {
        let _ = writeln!(
            s,
            "  subgraph phase{}[\"{}. {}\"]",
            i + 1,
            i + 1,
            p.name.replace('"', "'")
        );
        for m in &p.members {
            let n = &g.components[*m].name;
            let _ = writeln!(s, "    {}[\"{n}\"]", n.replace('-', "_"));
        }
        s.push_str("  end\n");
    }
    for e in &g.edges {
        let _ = writeln!(
            s,
            "  {} -->|{}| {}",
            g.components[e.from].name.replace('-', "_"),
            e.condition.as_str(),
            g.components[e.to].name.replace('-', "_")
        );
    }
    s
}

pub fn to_json(g: &Graph, stack: &str) -> serde_json::Value {
    let name = |i: &usize| g.components[*i].name.clone();
    json!({
        "stack": stack,
        "components": g.components,
        "edges": g.edges.iter().map(|e| json!({
            "from": name(&e.from), "to": name(&e.to), "condition": e.condition,
        })).collect::<Vec<_>>(),
        "phases": g.phases.iter().map(|p| json!({
            "name": p.name, "members": p.members.iter().map(name).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "explicit_phases": g.explicit_phases,
        "critical_path": { "components": g.critical_path.iter().map(name).collect::<Vec<_>>(), "seconds": g.critical_secs },
    })
}
