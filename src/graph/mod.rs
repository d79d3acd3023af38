//! Graph stage: the dependency graph of a checked topology, its deploy
//! phases and its critical path. Input: [`Topology`]; output: [`Graph`] and
//! diagnostics for cycles and for an explicit phase list that disagrees.

mod phases;
mod render;

pub use render::{to_dot, to_json, to_mermaid, to_text};

use petgraph::graph::{DiGraph, NodeIndex};

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::{Condition, Topology};
use crate::source::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Service,
    Balancer,
    Monitoring,
}

/// A vertex: something that runs and can be waited for.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Component {
    pub name: String,
    pub kind: Kind,
    pub tier: Option<String>,
    /// Estimated seconds from start to healthy (health start period plus
    /// one interval; one second without a health check).
    pub ready_secs: f64,
    #[serde(skip)]
    pub span: Span,
}

/// `from` needs `to` (`from` depends on `to`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub condition: Condition,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    pub name: String,
    pub members: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Graph {
    pub components: Vec<Component>,
    pub edges: Vec<Edge>,
    pub phases: Vec<Phase>,
    /// Whether the phases were written in the topology or derived.
    pub explicit_phases: bool,
    pub critical_path: Vec<usize>,
    pub critical_secs: f64,
    /// Component name -> index (first declaration wins).
    pub by_name: crate::Map<String, usize>,
    /// Per component, the indices of the edges that point at it.
    pub incoming: Vec<Vec<usize>>,
}

impl Graph {
    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The phase each component belongs to.
    pub fn phase_of(&self) -> Vec<usize> {
        let mut of = vec![0; self.components.len()];
        for (i, p) in self.phases.iter().enumerate() {
            for &m in &p.members {
                of[m] = i;
            }
        }
        of
    }
}

/// Build the graph. Unknown references were reported by validation and are
/// skipped here; a cycle or a phase disagreement is reported and yields no
/// graph.
///
/// `check_phases` is false when the explicit phase list already has errors
/// of its own: its membership would only produce follow-on errors, so the
/// graph is then checked without it.
pub fn resolve(t: &Topology, check_phases: bool) -> (Option<Graph>, Diagnostics) {
    let mut diags = Diagnostics::new();
    let mut components = Vec::with_capacity(t.services.len() + t.balancers.len() + 2);
    for s in &t.services {
        let ready = s.health.as_ref().map_or(1.0, |h| {
            h.start_period.as_ref().map_or(0.0, |p| p.as_secs_f64()) + h.interval.as_secs_f64()
        });
        components.push(Component {
            name: s.name.value.clone(),
            kind: Kind::Service,
            tier: s.tier.as_ref().map(|t| t.value.clone()),
            ready_secs: ready,
            span: s.name.span,
        });
    }
    for b in &t.balancers {
        components.push(Component {
            name: b.name.value.clone(),
            kind: Kind::Balancer,
            tier: b.tier.as_ref().map(|t| t.value.clone()),
            ready_secs: 1.0,
            span: b.name.span,
        });
    }
    if let Some(m) = &t.monitoring {
        let tier = m.tier.as_ref().map(|t| t.value.clone());
        components.push(Component {
            name: "prometheus".into(),
            kind: Kind::Monitoring,
            tier: tier.clone(),
            ready_secs: 5.0,
            span: m.prometheus.span,
        });
        if let Some(g) = &m.grafana {
            components.push(Component {
                name: "grafana".into(),
                kind: Kind::Monitoring,
                tier,
                ready_secs: 5.0,
                span: g.span,
            });
        }
    }
    // The first declaration of a name wins; a clash is reported by
    // validation, and must not turn a route into a self-edge here.
    let mut by_name: crate::Map<&str, usize> =
        crate::Map::with_capacity_and_hasher(components.len(), Default::default());
    for (i, c) in components.iter().enumerate() {
        by_name.entry(c.name.as_str()).or_insert(i);
    }
    let mut edges = Vec::new();
    for (i, s) in t.services.iter().enumerate() {
        for d in &s.depends_on {
            if let Some(&j) = by_name.get(d.service.value.as_str()) {
                edges.push(Edge {
                    from: i,
                    to: j,
                    condition: d.condition,
                    span: d.service.span,
                });
            }
        }
    }
    for (k, b) in t.balancers.iter().enumerate() {
        let from = t.services.len() + k;
        let mut seen = Vec::new();
        for r in &b.routes {
            if let Some(&j) = by_name.get(r.to.value.as_str())
                && !seen.contains(&j)
            {
                seen.push(j);
                edges.push(Edge {
                    from,
                    to: j,
                    condition: Condition::Healthy,
                    span: r.to.span,
                });
            }
        }
    }
    if let (Some(&g), Some(&p)) = (by_name.get("grafana"), by_name.get("prometheus"))
        && components[g].kind == Kind::Monitoring
    {
        edges.push(Edge {
            from: g,
            to: p,
            condition: Condition::Started,
            span: components[g].span,
        });
    }

    let mut pg: DiGraph<usize, usize> = DiGraph::with_capacity(components.len(), edges.len());
    let idx: Vec<NodeIndex> = (0..components.len()).map(|i| pg.add_node(i)).collect();
    for (e, edge) in edges.iter().enumerate() {
        pg.add_edge(idx[edge.from], idx[edge.to], e);
    }
    if report_cycles(&pg, &components, &edges, &mut diags) {
        return (None, diags);
    }
    // Reverse topological order: dependencies before dependents.
    let order: Vec<usize> = match petgraph::algo::toposort(&pg, None) {
        Ok(o) => o.into_iter().rev().map(|n| pg[n]).collect(),
        Err(_) => return (None, diags),
    };

    let (phases, explicit) = match t.phases.as_ref().filter(|_| check_phases) {
        Some(list) => match phases::explicit(t, list, &components, &edges, &mut diags) {
            Some(p) => (p, true),
            None => return (None, diags),
        },
        None => (phases::derived(&components, &edges, &order), false),
    };
    let (critical_path, critical_secs) = critical_path(&components, &edges, &order);
    let owned_names: crate::Map<String, usize> =
        by_name.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let mut incoming = vec![Vec::new(); components.len()];
    for (i, e) in edges.iter().enumerate() {
        incoming[e.to].push(i);
    }
    (
        Some(Graph {
            components,
            edges,
            phases,
            explicit_phases: explicit,
            critical_path,
            critical_secs,
            by_name: owned_names,
            incoming,
        }),
        diags,
    )
}

/// Report every strongly connected component as one cycle, listed in order.
fn report_cycles(
    pg: &DiGraph<usize, usize>,
    comps: &[Component],
    edges: &[Edge],
    out: &mut Diagnostics,
) -> bool {
    let mut found = false;
    for scc in petgraph::algo::tarjan_scc(pg) {
        let self_loop = scc.len() == 1 && pg.find_edge(scc[0], scc[0]).is_some();
        if scc.len() < 2 && !self_loop {
            continue;
        }
        found = true;
        // Walk the cycle from the member declared first, along edges that
        // stay inside the component.
        let members: Vec<NodeIndex> = scc.clone();
        let start = *members.iter().min_by_key(|n| pg[**n]).expect("non-empty");
        let mut path = vec![start];
        let mut cur = start;
        let mut path_edges = Vec::new();
        loop {
            let next = pg
                .edges(cur)
                .filter(|e| members.contains(&petgraph::visit::EdgeRef::target(e)))
                .min_by_key(|e| {
                    let t = petgraph::visit::EdgeRef::target(e);
                    (t != start, path.contains(&t), pg[t])
                })
                .expect("a node in a cycle has an edge inside it");
            let target = petgraph::visit::EdgeRef::target(&next);
            path_edges.push(*next.weight());
            if target == start || path.contains(&target) {
                if target != start {
                    // Trim the lead-in so the path is the cycle itself.
                    let pos = path.iter().position(|n| *n == target).expect("present");
                    path.drain(..pos);
                    path_edges.drain(..pos);
                }
                path.push(target);
                break;
            }
            path.push(target);
            cur = target;
        }
        let names: Vec<&str> = path.iter().map(|n| comps[pg[*n]].name.as_str()).collect();
        let first = &edges[path_edges[0]];
        let mut d = Diagnostic::error(
            Code::DependencyCycle,
            format!("dependency cycle: {}", names.join(" -> ")),
        )
        .at(
            first.span,
            format!(
                "`{}` depends on `{}`",
                comps[first.from].name, comps[first.to].name
            ),
        );
        for &e in &path_edges[1..] {
            let e = &edges[e];
            d = d.also(
                e.span,
                format!("`{}` depends on `{}`", comps[e.from].name, comps[e.to].name),
            );
        }
        out.push(d.help("no start order exists; remove one of these dependencies"));
    }
    found
}

/// The chain of dependencies with the largest total time to healthy.
fn critical_path(comps: &[Component], edges: &[Edge], order: &[usize]) -> (Vec<usize>, f64) {
    let n = comps.len();
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
    for e in edges {
        deps[e.from].push(e.to);
    }
    let mut best = vec![0.0f64; n];
    let mut prev: Vec<Option<usize>> = vec![None; n];
    for &v in order {
        let mut b = 0.0;
        for &d in &deps[v] {
            if best[d] > b || (best[d] == b && prev[v].is_some_and(|p| d < p)) {
                b = best[d];
                prev[v] = Some(d);
            }
        }
        best[v] = b + comps[v].ready_secs;
    }
    let Some(end) = (0..n).max_by(|a, b| best[*a].total_cmp(&best[*b]).then(b.cmp(a))) else {
        return (Vec::new(), 0.0);
    };
    let mut path = vec![end];
    let mut cur = end;
    while let Some(p) = prev[cur] {
        path.push(p);
        cur = p;
    }
    path.reverse();
    (path, best[end])
}

#[cfg(test)]
mod tests {
    use crate::diag::Code;

    fn check(text: &str) -> crate::Checked {
        crate::check_str("t.kdl", text, std::path::Path::new("."), None)
    }

    fn names(c: &crate::Checked) -> Vec<Vec<String>> {
        let g = c.graph.as_ref().expect("graph");
        g.phases
            .iter()
            .map(|p| {
                p.members
                    .iter()
                    .map(|m| g.components[*m].name.clone())
                    .collect()
            })
            .collect()
    }

    const CHAIN: &str = r#"stack "s"
service "db" { image "db:1"; health tcp=5432; port 5432 }
service "cache" { image "c:1"; health tcp=6379; port 6379 }
service "api" { image "a:1"; depends-on "db" "cache"; health http="/h" port=80; port 80 }
service "worker" { image "w:1"; depends-on "api" condition="started" }
balancer "lb" { listen 8080; route "/" to="api" }
"#;

    #[test]
    fn derived_phases_layer_by_dependency_depth() {
        let c = check(CHAIN);
        assert!(c.ok(), "{:?}", c.diags);
        assert_eq!(
            names(&c),
            [vec!["cache", "db"], vec!["api"], vec!["lb", "worker"]]
        );
    }

    #[test]
    fn critical_path_follows_the_slowest_chain() {
        let c = check(CHAIN);
        let g = c.graph.expect("graph");
        let path: Vec<&str> = g
            .critical_path
            .iter()
            .map(|i| g.components[*i].name.as_str())
            .collect();
        // Ties go to the component declared first.
        assert_eq!(path, ["db", "api", "worker"]);
        // 10s default interval for db and api, 1s for the worker.
        assert_eq!(g.critical_secs, 21.0);
    }

    #[test]
    fn cycles_are_reported_as_the_full_path() {
        let c = check(
            r#"stack "s"
service "a" { image "a:1"; depends-on "b" condition="started" }
service "b" { image "b:1"; depends-on "c" condition="started" }
service "c" { image "c:1"; depends-on "a" condition="started" }
service "d" { image "d:1"; depends-on "d" condition="started" }
"#,
        );
        let msgs: Vec<&str> = c
            .diags
            .iter()
            .filter(|d| d.code == Code::DependencyCycle)
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(
            msgs,
            [
                "dependency cycle: a -> b -> c -> a",
                "dependency cycle: d -> d"
            ]
        );
        assert!(c.graph.is_none());
        let first = c
            .diags
            .iter()
            .find(|d| d.code == Code::DependencyCycle)
            .expect("cycle");
        assert_eq!(
            first.secondary.len(),
            2,
            "every edge of the cycle is labelled"
        );
    }

    #[test]
    fn explicit_phases_named_service_beats_tier() {
        let c = check(
            r#"stack "s"
network "n" subnet="10.0.0.0/16" {
    tier "data" subnet="10.0.1.0/24"
    tier "apps" subnet="10.0.2.0/24"
}
service "db" tier="data" { image "db:1"; health tcp=1; port 1 }
service "config" tier="apps" { image "c:1"; depends-on "db"; health tcp=2; port 2 }
service "api" tier="apps" { image "a:1"; depends-on "config" }
phases {
    phase "data" tiers="data"
    phase "config" services="config"
    phase "apps" tiers="apps"
}
"#,
        );
        assert!(c.ok(), "{:?}", c.diags);
        assert_eq!(names(&c), [vec!["db"], vec!["config"], vec!["api"]]);
    }

    #[test]
    fn explicit_phases_must_agree_with_the_graph() {
        let c = check(
            r#"stack "s"
service "db" { image "db:1"; health tcp=1; port 1 }
service "api" { image "a:1"; depends-on "db" }
phases {
    phase "apps" services="api"
    phase "data" services="db"
}
"#,
        );
        let d = c
            .diags
            .iter()
            .find(|d| d.code == Code::PhaseOrder)
            .expect("phase-order");
        assert!(
            d.message
                .contains("`api` (phase `apps`) depends on `db` (phase `data`)"),
            "{}",
            d.message
        );
    }

    #[test]
    fn started_dependencies_may_share_a_phase() {
        let c = check(
            r#"stack "s"
service "a" { image "a:1" }
service "b" { image "b:1"; depends-on "a" condition="started" }
phases { phase "all" services="a, b"; }
"#,
        );
        assert!(c.ok(), "{:?}", c.diags);
    }
}
