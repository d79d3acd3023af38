//! Tree -> typed [`Topology`]: reads each node against the language, with
//! per-value checks (types, ranges, units, unknown and duplicate names).
//! Checks that relate several objects live in `validate`.

mod balancer;
mod monitoring;
mod network;
mod platform;
mod service;

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::{DriftIgnore, Environment, PhaseDecl, PhaseList, Service, Stack, Topology};
use crate::parse::reader::{NodeReader, Once, unknown_node};
use crate::parse::tree::Node;
use crate::source::Span;

pub use service::default_exporter_port;
pub(crate) use service::{decode_secret, decode_volume};

const TOP_LEVEL: &[&str] = &[
    "stack",
    "import",
    "network",
    "env",
    "service",
    "override",
    "balancer",
    "monitoring",
    "kubernetes",
    "job",
    "phases",
    "drift-ignore",
];

/// A top-level node decoded on its own: for a `service` node, the service
/// (when it could be read) and the node's diagnostics; `None` for the
/// other nodes. The service is boxed: the list of results grows as the
/// document is read, and a list of whole services would hold each one
/// twice over as it grows.
pub type Decoded = Option<(Option<Box<Service>>, Diagnostics)>;

/// Decode `node` if it is a service, then free its entries and children:
/// only its name, read by [`decode`], stays. The model reuses the memory
/// of the node it comes from, freed by the thread that took it.
pub fn service_node(node: &mut Node) -> Decoded {
    (node.name.value == "service").then(|| {
        let mut d = Diagnostics::new();
        let service = service::decode(node, &mut d).map(Box::new);
        node.entries = Vec::new();
        node.children = None;
        (service, d)
    })
}

/// Decode the merged top-level nodes. `selected_env` is already applied to
/// the tree; it is recorded on the model. `decoded`, when given, holds
/// [`service_node`] of each node, taken as they were read.
pub fn decode(
    nodes: &mut [Node],
    decoded: Option<Vec<Decoded>>,
    selected_env: Option<&str>,
    out: &mut Diagnostics,
) -> Option<Topology> {
    let mut stack: Option<Stack> = None;
    let mut network = None;
    let mut monitoring = None;
    let mut kubernetes = None;
    let mut phases = None;
    let mut environments = Vec::new();
    // Services are most of a large topology and decode independently:
    // they are decoded on several threads first, and taken in order below.
    // Their nodes are emptied as they are decoded.
    let mut decoded = match decoded {
        Some(d) => {
            debug_assert_eq!(d.len(), nodes.len(), "one result per node");
            d
        }
        None => decode_services(nodes),
    };
    let mut services = Vec::with_capacity(decoded.iter().filter(|d| d.is_some()).count());
    let mut balancers = Vec::new();
    let mut jobs = Vec::new();
    let mut drift_ignore = Vec::new();
    let mut once = Once::default();
    let mut first_span: Option<Span> = None;

    for (node, decoded) in nodes.iter().zip(&mut decoded) {
        first_span.get_or_insert(node.name.span);
        match node.name.value.as_str() {
            "stack" => {
                if once.first(node, out) {
                    stack = decode_stack(node, out);
                }
            }
            "network" => {
                if once.first(node, out) {
                    network = network::decode(node, out);
                }
            }
            "env" => environments.extend(decode_env(node, out)),
            "service" => {
                let (service, diags) = decoded.take().expect("decoded above");
                out.extend(diags);
                services.extend(service);
            }
            "balancer" => balancers.extend(balancer::decode(node, out)),
            "monitoring" => {
                if once.first(node, out) {
                    monitoring = monitoring::decode(node, out);
                }
            }
            "kubernetes" => {
                if once.first(node, out) {
                    kubernetes = platform::decode_kubernetes(node, out);
                }
            }
            "job" => jobs.extend(platform::decode_job(node, out)),
            "phases" => {
                if once.first(node, out) {
                    phases = decode_phases(node, out);
                }
            }
            "drift-ignore" => drift_ignore.extend(decode_drift_ignore(node, out)),
            // Resolved while loading; their own errors are reported there.
            "import" | "override" => {}
            _ => unknown_node(node, "the topology", TOP_LEVEL, out),
        }
    }

    let Some(stack) = stack else {
        if !out.has_errors() {
            let mut d = Diagnostic::error(Code::MissingNode, "the topology has no `stack` node")
                .help("start the file with: stack \"my-stack\" version=\"1.0.0\"");
            if let Some(span) = first_span {
                d = d.at(span, "expected `stack \"name\"` before this");
            }
            out.push(d);
        }
        return None;
    };
    Some(Topology {
        stack,
        network,
        environments,
        selected_env: selected_env.map(str::to_string),
        services,
        balancers,
        monitoring,
        kubernetes,
        jobs,
        phases,
        drift_ignore,
    })
}

/// Below this many top-level nodes, decoding on one thread is faster.
const PARALLEL_NODES: usize = 512;

/// Each `service` node decoded, with its own diagnostics; `None` for the
/// other nodes. Large documents are split into one chunk per core, the
/// first decoded on this thread. Each service node's entries and children
/// are freed as soon as it is decoded, by the thread that decoded it: the
/// model it becomes reuses their memory instead of growing the process
/// (only its name, read by [`decode`], stays).
fn decode_services(nodes: &mut [Node]) -> Vec<Decoded> {
    let one = service_node;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if threads < 2 || nodes.len() < PARALLEL_NODES {
        return nodes.iter_mut().map(one).collect();
    }
    let chunk = nodes.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut chunks = nodes.chunks_mut(chunk);
        let first = chunks.next().expect("at least one node");
        let handles: Vec<_> = chunks
            .map(|c| scope.spawn(move || c.iter_mut().map(one).collect::<Vec<_>>()))
            .collect();
        let mut all: Vec<_> = first.iter_mut().map(one).collect();
        for h in handles {
            all.extend(
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        all
    })
}

fn decode_stack(node: &Node, out: &mut Diagnostics) -> Option<Stack> {
    let mut r = NodeReader::new(node);
    r.allow_children();
    let name = r.arg_string(0, "a stack name");
    let version = r.prop_string("version");
    let mut description = None;
    let mut once = Once::default();
    for child in node.children() {
        match child.name.value.as_str() {
            "description" => {
                if once.first(child, out) {
                    let mut c = NodeReader::new(child);
                    description = c.arg_string(0, "a description").map(|s| s.value);
                    c.finish(out);
                }
            }
            _ => unknown_node(child, "`stack`", &["description"], out),
        }
    }
    r.finish(out);
    Some(Stack {
        name: name?,
        version,
        description,
        span: node.span,
    })
}

fn decode_env(node: &Node, out: &mut Diagnostics) -> Option<Environment> {
    let mut r = NodeReader::new(node);
    r.allow_children();
    let name = r.arg_string(0, "an environment name");
    let production = r.prop_bool("production").unwrap_or(false);
    let mut publish_bind = None;
    let mut once = Once::default();
    for child in node.children() {
        match child.name.value.as_str() {
            "publish-bind" => {
                if once.first(child, out) {
                    let mut c = NodeReader::new(child);
                    if let Some(s) = c.arg_string(0, "an IPv4 address") {
                        match s.value.parse::<std::net::Ipv4Addr>() {
                            Ok(a) => publish_bind = Some(crate::source::Spanned::new(a, s.span)),
                            Err(_) => c.error(
                                Diagnostic::error(Code::InvalidValue, format!("`{}` is not an IPv4 address", s.value))
                                    .at(s.span, "expected an address such as 127.0.0.1")
                                    .help("use 127.0.0.1 for this machine only, 0.0.0.0 for every interface"),
                            ),
                        }
                    }
                    c.finish(out);
                }
            }
            // Applied to the tree while loading.
            "override" => {}
            _ => unknown_node(child, "`env`", &["publish-bind", "override"], out),
        }
    }
    r.finish(out);
    Some(Environment {
        name: name?,
        production,
        publish_bind,
        span: node.span,
    })
}

fn decode_phases(node: &Node, out: &mut Diagnostics) -> Option<PhaseList> {
    let mut r = NodeReader::new(node);
    r.allow_children();
    let mut phases = Vec::new();
    for child in node.children() {
        match child.name.value.as_str() {
            "phase" => {
                let mut c = NodeReader::new(child);
                let name = c.arg_string(0, "a phase name");
                let tiers = list_prop(&mut c, "tiers");
                let services = list_prop(&mut c, "services");
                if tiers.is_empty() && services.is_empty() {
                    c.error(
                        Diagnostic::error(
                            Code::MissingProperty,
                            "a phase needs `tiers=`, `services=` or both",
                        )
                        .at(child.name.span, "no members")
                        .help("for example: phase \"data\" tiers=\"infrastructure\" services=\"config-server\""),
                    );
                }
                c.finish(out);
                if let Some(name) = name {
                    phases.push(PhaseDecl {
                        name,
                        tiers,
                        services,
                        span: child.span,
                    });
                }
            }
            _ => unknown_node(child, "`phases`", &["phase"], out),
        }
    }
    r.finish(out);
    Some(PhaseList {
        phases,
        span: node.span,
    })
}

/// A property holding a comma-separated list of names; each name keeps a
/// span inside the string.
pub(crate) fn list_prop(
    r: &mut NodeReader,
    key: &'static str,
) -> Vec<crate::source::Spanned<String>> {
    let Some(s) = r.prop_string(key) else {
        return Vec::new();
    };
    split_list(&s)
}

pub(crate) fn split_list(
    s: &crate::source::Spanned<String>,
) -> Vec<crate::source::Spanned<String>> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    // +1: the span of a quoted string starts at its opening quote.
    let base = s.span.start as usize + 1;
    for part in s.value.split(',') {
        let lead = part.len() - part.trim_start().len();
        let item = part.trim();
        if !item.is_empty() {
            let start = base + offset + lead;
            // Escapes or raw strings shift offsets: fall back to the whole value.
            let span = if start + item.len() < s.span.end as usize {
                Span::new(s.span.file, start, start + item.len())
            } else {
                s.span
            };
            out.push(crate::source::Spanned::new(item.to_string(), span));
        }
        offset += part.len() + 1;
    }
    out
}

fn decode_drift_ignore(node: &Node, out: &mut Diagnostics) -> Option<DriftIgnore> {
    let mut r = NodeReader::new(node);
    let service = r.arg_string(0, "a service name");
    let field = r.required_prop_string(
        "field",
        "drift-ignore \"api\" field=\"replicas\" reason=\"owned by the autoscaler\"",
    );
    let reason = r.required_prop_string(
        "reason",
        "drift-ignore \"api\" field=\"replicas\" reason=\"owned by the autoscaler\"",
    );
    r.finish(out);
    Some(DriftIgnore {
        service: service?,
        field: field?,
        reason: reason?.value,
        span: node.span,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_decoded_on_several_threads_match_one_thread() {
        // Errors in both halves, so their order is checked too.
        let mut text = String::new();
        for i in 0..PARALLEL_NODES + 50 {
            text +=
                &format!("service \"svc-{i}\" {{\n    image \"example/svc:{i}\"\n    port 8080\n");
            if i % 97 == 0 {
                text += "    colour \"blue\"\n";
            }
            if i % 101 == 0 {
                text += "    port \"eighty\"\n";
            }
            text += "}\nbalancer \"b\"\n";
        }
        let nodes =
            crate::parse::kdl::parse(&text, crate::source::FileId::default()).expect("parses");
        assert!(nodes.len() >= PARALLEL_NODES);
        let one_thread: Vec<_> = nodes
            .iter()
            .map(|n| {
                (n.name.value == "service").then(|| {
                    let mut d = Diagnostics::new();
                    (service::decode(n, &mut d).map(Box::new), d)
                })
            })
            .collect();
        let mut emptied = nodes.clone();
        let several = decode_services(&mut emptied);
        assert_eq!(several.len(), one_thread.len());
        let mut errors = 0;
        for (a, b) in one_thread.iter().zip(&several) {
            match (a, b) {
                (None, None) => {}
                (Some((sa, da)), Some((sb, db))) => {
                    assert_eq!(sa, sb);
                    assert_eq!(format!("{da:?}"), format!("{db:?}"));
                    errors += da.len();
                }
                _ => panic!("a service decoded on one side only"),
            }
        }
        assert!(errors >= 10, "{errors}");
        // The decoded service nodes keep only their names.
        for (n, e) in nodes.iter().zip(&emptied) {
            assert_eq!(n.name, e.name);
            if n.name.value == "service" {
                assert!(e.entries.is_empty() && e.children.is_none());
            } else {
                assert_eq!(n, e);
            }
        }
    }
}
