//! Targets: one resolved topology -> artifact files for each consumer.
//!
//! Each target is a sibling module over the same model and graph:
//! [`compose`], [`nginx`], [`prometheus`], [`grafana`], [`kubernetes`].
//! Emitters are pure: they return [`Artifact`]s (path + text) and
//! warnings for settings they cannot express (lossless or loud). Writing
//! files is the caller's job.

pub mod compose;
pub mod grafana;
pub mod instances;
pub mod kubernetes;
pub mod nginx;
pub mod prometheus;

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::graph::Graph;
use crate::model::Topology;
use crate::source::Span;
pub use instances::{Instance, Plan, Role};

/// One generated file, its path relative to the output directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Artifact {
    pub path: String,
    pub content: String,
}

impl Artifact {
    pub fn new(path: impl Into<String>, content: impl Into<String>) -> Self {
        Artifact {
            path: path.into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Target {
    Compose,
    Nginx,
    Prometheus,
    Grafana,
    Kubernetes,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Compose,
        Target::Nginx,
        Target::Prometheus,
        Target::Grafana,
        Target::Kubernetes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Compose => "compose",
            Target::Nginx => "nginx",
            Target::Prometheus => "prometheus",
            Target::Grafana => "grafana",
            Target::Kubernetes => "kubernetes",
        }
    }
}

/// What every emitter reads, and where it reports what it cannot map.
pub struct Ctx<'a> {
    pub topology: &'a Topology,
    pub graph: &'a Graph,
    pub plan: Plan,
    pub warnings: Diagnostics,
    /// What several targets compute alike, computed once per build and
    /// shared by the contexts of [`build_to`]'s threads.
    pub shared: std::sync::Arc<Shared>,
}

/// Results shared between targets (and threads) of one build.
#[derive(Default)]
pub struct Shared {
    /// The Prometheus rule files, also carried by the Kubernetes target.
    pub prometheus_rules: std::sync::OnceLock<Vec<Artifact>>,
}

impl<'a> Ctx<'a> {
    pub fn new(topology: &'a Topology, graph: &'a Graph) -> Self {
        Ctx {
            topology,
            graph,
            plan: Plan::new(topology),
            warnings: Diagnostics::new(),
            shared: Default::default(),
        }
    }

    /// Report a setting that `target` cannot express.
    pub fn unmapped(&mut self, target: Target, setting: &str, span: Span, why: &str) {
        self.warnings.push(
            Diagnostic::warning(
                Code::Unmapped,
                format!("{setting}: not mapped onto {}", target.name()),
            )
            .at(span, format!("ignored by the {} target", target.name()))
            .help(why.to_string()),
        );
    }

    /// Stack name, used in labels and object names.
    pub fn stack(&self) -> &str {
        &self.topology.stack.name.value
    }
}

/// Where emitters put their files: whole, or in consecutive parts (large
/// files are streamed out as they are produced instead of being held).
pub trait Sink {
    /// Append `text` to file `path`; `done` with the last part. Parts of
    /// one file come one after another, with no other file between them.
    fn write(&mut self, path: &str, text: &str, done: bool);

    /// A whole file.
    fn put(&mut self, a: Artifact) {
        self.write(&a.path, &a.content, true);
    }
}

/// A sink that keeps the files in memory.
#[derive(Default)]
pub struct Collect {
    pub artifacts: Vec<Artifact>,
    open: bool,
}

impl Sink for Collect {
    fn write(&mut self, path: &str, text: &str, done: bool) {
        match self.artifacts.last_mut() {
            Some(a) if self.open && a.path == path => a.content.push_str(text),
            _ => self.artifacts.push(Artifact::new(path, text)),
        }
        self.open = !done;
    }

    fn put(&mut self, a: Artifact) {
        self.artifacts.push(a);
        self.open = false;
    }
}

/// Build one target into `sink`, with `cx`'s plan; the warnings go to `cx`.
pub fn emit_to(cx: &mut Ctx, target: Target, sink: &mut dyn Sink) {
    match target {
        Target::Compose => compose::emit_to(cx, sink),
        Target::Nginx => nginx::emit(cx).into_iter().for_each(|a| sink.put(a)),
        Target::Prometheus => prometheus::emit_to(cx, sink),
        Target::Grafana => grafana::emit_to(cx, sink),
        Target::Kubernetes => kubernetes::emit_to(cx, sink),
    }
}

/// As [`build`], streaming the files into sinks instead of returning
/// them: the Kubernetes target (many files) on one thread with the first
/// sink, the others on the calling thread with the second. The warnings
/// are in the order of `targets`, whatever the scheduling.
pub fn build_to<A: Sink + Send, B: Sink>(
    topology: &Topology,
    graph: &Graph,
    targets: &[Target],
    side: &mut A,
    main: &mut B,
) -> Diagnostics {
    let mut warnings: Vec<Option<Diagnostics>> = targets.iter().map(|_| None).collect();
    let split = |t: &Target| *t == Target::Kubernetes;
    let plan = Plan::new(topology);
    let shared = std::sync::Arc::new(Shared::default());
    let (side_warnings, main_warnings) = std::thread::scope(|scope| {
        let plan_side = plan.clone();
        let shared_side = shared.clone();
        let side_run = targets.iter().any(split).then(|| {
            scope.spawn(|| {
                let mut cx = Ctx {
                    topology,
                    graph,
                    plan: plan_side,
                    warnings: Diagnostics::new(),
                    shared: shared_side,
                };
                let mut out = Vec::new();
                for (i, t) in targets.iter().enumerate().filter(|(_, t)| split(t)) {
                    emit_to(&mut cx, *t, side);
                    out.push((i, std::mem::take(&mut cx.warnings)));
                }
                out
            })
        });
        let mut cx = Ctx {
            topology,
            graph,
            plan,
            warnings: Diagnostics::new(),
            shared,
        };
        let mut out = Vec::new();
        for (i, t) in targets.iter().enumerate().filter(|(_, t)| !split(t)) {
            emit_to(&mut cx, *t, main);
            out.push((i, std::mem::take(&mut cx.warnings)));
        }
        let side_out = side_run.map_or_else(Vec::new, |h| {
            h.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        (side_out, out)
    });
    for (i, w) in side_warnings.into_iter().chain(main_warnings) {
        warnings[i] = Some(w);
    }
    let mut all = Diagnostics::new();
    for w in warnings.into_iter().flatten() {
        all.extend(w);
    }
    all
}

/// Build every requested target. Artifacts are sorted by path.
pub fn build(
    topology: &Topology,
    graph: &Graph,
    targets: &[Target],
) -> (Vec<Artifact>, Diagnostics) {
    let mut cx = Ctx::new(topology, graph);
    let mut out = Vec::new();
    for t in targets {
        match t {
            Target::Compose => out.extend(compose::emit(&mut cx)),
            Target::Nginx => out.extend(nginx::emit(&mut cx)),
            Target::Prometheus => out.extend(prometheus::emit(&mut cx)),
            Target::Grafana => out.extend(grafana::emit(&mut cx)),
            Target::Kubernetes => out.extend(kubernetes::emit(&mut cx)),
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    (out, cx.warnings)
}

/// Labels every generated object carries (compose labels, Kubernetes
/// labels): ownership by stackc and the stack.
pub const LABEL_STACK: &str = "io.stackc.stack";
pub const LABEL_SERVICE: &str = "io.stackc.service";
pub const LABEL_CONFIG_HASH: &str = "io.stackc.config-hash";
pub const LABEL_OWNER: &str = "io.stackc.owner";
pub const OWNER: &str = "stackc";

/// [`short_hash`] of a value's compact JSON, without building the string.
pub fn hash_json<T: serde::Serialize>(value: &T) -> String {
    struct Fnv(u64);
    impl std::io::Write for Fnv {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            for b in buf {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    serde_json::to_writer(&mut h, value).expect("plain data serializes");
    format!("{:016x}", h.0)
}

/// A short stable hash (hex) of some text: config hashes in labels, which
/// tell whether a running container matches its definition. It needs to be
/// stable across machines and versions, not secret: 64-bit FNV-1a.
pub fn short_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}
