//! stackc compiles one KDL topology into everything an environment needs.
//!
//! The pipeline, each stage a module whose output feeds the next:
//!
//! 1. [`parse`]: files -> KDL tree -> imports, overrides and `--env` applied
//!    -> typed [`model::Topology`], with per-value checks;
//! 2. [`validate`]: checks across objects (references, names, subnets,
//!    secrets, cluster sizes, ports) -> [`diag::Diagnostics`];
//! 3. [`graph`]: dependency graph, deploy phases, critical path.
//!
//! [`check_file`] runs all three and returns every finding at once. The
//! [`cli`] module is the only one that prints or touches files.

/// `format!` for pieces that are all text: one allocation of the exact
/// size, and none of the formatting machinery, which costs several hundred
/// instructions a call on the targets' hot paths (names, paths, series).
#[macro_export]
macro_rules! cat {
    // A `match` keeps the pieces' temporaries alive to its end.
    ($($part:expr),+ $(,)?) => {
        match [$(::core::convert::AsRef::<str>::as_ref(&$part)),+] {
            parts => {
                let mut out =
                    ::std::string::String::with_capacity(parts.iter().map(|p| p.len()).sum());
                for p in parts {
                    out.push_str(p);
                }
                out
            }
        }
    };
}

/// Hash maps and sets keyed by names from the topology, with foldhash: on
/// short strings several times faster than the standard SipHash, and
/// seeded per process like it. Nothing is printed in their order.
pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

pub mod apply;
pub mod artifacts;
pub mod cli;
pub mod diag;
pub mod drift;
pub mod graph;
pub mod model;
pub mod parse;
pub mod plan;
pub mod profile;
pub mod source;
pub mod targets;
pub mod timing;
pub mod validate;
pub mod yaml;

use std::path::Path;

use diag::Diagnostics;
use graph::Graph;
use model::Topology;
use source::SourceMap;

/// A topology after every check: the model and graph exist when no error
/// stopped them.
#[derive(Debug)]
pub struct Checked {
    pub sources: SourceMap,
    pub topology: Option<Topology>,
    pub graph: Option<Graph>,
    pub diags: Diagnostics,
}

impl Checked {
    pub fn ok(&self) -> bool {
        self.topology.is_some() && self.graph.is_some() && !self.diags.has_errors()
    }
}

/// Read, check and resolve the topology at `path` with `env` selected.
pub fn check_file(path: &Path, env: Option<&str>) -> Checked {
    resolve(parse::load(path, env))
}

/// As [`check_file`], for text in memory; imports resolve from `base_dir`.
pub fn check_str(name: &str, text: &str, base_dir: &Path, env: Option<&str>) -> Checked {
    resolve(parse::load_str(name, text, base_dir, env))
}

fn resolve(loaded: parse::Loaded) -> Checked {
    let parse::Loaded {
        sources,
        topology,
        mut diags,
    } = loaded;
    timing::mark("parse");
    let mut graph = None;
    if let Some(t) = &topology {
        diags.extend(validate::validate(t));
        timing::mark("validate");
        let phase_errors = t.phases.as_ref().is_some_and(|p| {
            diags.iter().any(|d| {
                d.is_error()
                    && d.primary.as_ref().is_some_and(|l| {
                        l.span.file == p.span.file
                            && l.span.start >= p.span.start
                            && l.span.end <= p.span.end
                    })
            })
        });
        let (g, gd) = graph::resolve(t, !phase_errors);
        diags.extend(gd);
        graph = g;
        timing::mark("graph");
    }
    // An unused rate limit next to errors is nearly always a misspelt or
    // broken `limit=`: the error already says so.
    if diags.has_errors() {
        diags = diags
            .into_vec()
            .into_iter()
            .filter(|d| d.code != diag::Code::UnusedRateLimit)
            .collect::<Vec<_>>()
            .into();
    }
    diags.sort();
    Checked {
        sources,
        topology,
        graph,
        diags,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cat_joins_text_of_any_kind() {
        let owned = String::from("b");
        let cow: std::borrow::Cow<str> = "c".into();
        assert_eq!(cat!("a", owned, cow, "", "d"), "abcd");
        assert_eq!(cat!(""), "");
        let joined = cat!(owned, "-", itoa::Buffer::new().format(42));
        assert_eq!(joined, "b-42");
        assert_eq!(joined.capacity(), joined.len());
    }
}
