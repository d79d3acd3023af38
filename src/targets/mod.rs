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
pub mod jsonhash;
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
    /// Computed once per build, shared by the targets' threads.
    pub plan: std::sync::Arc<Plan>,
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
            plan: std::sync::Arc::new(Plan::new(topology)),
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
    /// one file come in order; other files may come between them.
    fn write(&mut self, path: &str, text: &str, done: bool);

    /// As [`Sink::write`], for a part the caller no longer needs.
    fn write_owned(&mut self, path: &str, text: String, done: bool) {
        self.write(path, &text, done);
    }

    /// A whole file.
    fn put(&mut self, a: Artifact) {
        self.write(&a.path, &a.content, true);
    }
}

/// A sink that keeps the files in memory.
#[derive(Default)]
pub struct Collect {
    pub artifacts: Vec<Artifact>,
    /// Files written in parts and not done yet, by index in `artifacts`.
    open: Vec<usize>,
}

impl Sink for Collect {
    fn write(&mut self, path: &str, text: &str, done: bool) {
        let at = self
            .open
            .iter()
            .position(|&i| self.artifacts[i].path == path);
        let i = match at {
            Some(at) => {
                let i = self.open[at];
                self.artifacts[i].content.push_str(text);
                if done {
                    self.open.swap_remove(at);
                }
                i
            }
            None => {
                self.artifacts.push(Artifact::new(path, text));
                let i = self.artifacts.len() - 1;
                if !done {
                    self.open.push(i);
                }
                i
            }
        };
        debug_assert_eq!(self.artifacts[i].path, path);
    }

    fn put(&mut self, a: Artifact) {
        self.artifacts.push(a);
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

/// A file or part of one, as [`Sink::write`] takes it.
type Part = (String, String, bool);

/// A sink that hands files to another thread (the one that owns the real
/// sink), in batches: the Kubernetes target lays out its objects while its
/// files are written and hashed.
struct Handoff {
    tx: std::sync::mpsc::SyncSender<Vec<Part>>,
    batch: Vec<Part>,
    bytes: usize,
}

/// Files in a batch, and batches in flight, between the Kubernetes
/// emitter and its writer.
const BATCH_FILES: usize = 64;
const BATCH_BYTES: usize = 1 << 20;
const HANDOFF_DEPTH: usize = 4;

impl Handoff {
    fn push(&mut self, part: Part) {
        self.bytes += part.1.len();
        self.batch.push(part);
        if self.batch.len() >= BATCH_FILES || self.bytes >= BATCH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            // The receiver lives until this sink is dropped.
            let _ = self.tx.send(std::mem::replace(
                &mut self.batch,
                Vec::with_capacity(BATCH_FILES),
            ));
            self.bytes = 0;
        }
    }
}

impl Sink for Handoff {
    fn write(&mut self, path: &str, text: &str, done: bool) {
        self.push((path.to_string(), text.to_string(), done));
    }

    fn write_owned(&mut self, path: &str, text: String, done: bool) {
        self.push((path.to_string(), text, done));
    }

    fn put(&mut self, a: Artifact) {
        self.push((a.path, a.content, true));
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Emit target `t` into `sink`; its warnings. The Kubernetes target's
/// files are written by a second thread as the calling one lays them out.
fn run_target<S: Sink + Send>(mut cx: Ctx, t: Target, sink: &mut S) -> Diagnostics {
    if t != Target::Kubernetes {
        emit_to(&mut cx, t, sink);
        return cx.warnings;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Part>>(HANDOFF_DEPTH);
    std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("kubernetes-writer".into())
            .spawn_scoped(scope, move || {
                for (path, text, done) in rx.into_iter().flatten() {
                    sink.write(&path, &text, done);
                }
            })
            .expect("a thread for the Kubernetes writer");
        let mut handoff = Handoff {
            tx,
            batch: Vec::with_capacity(BATCH_FILES),
            bytes: 0,
        };
        emit_to(&mut cx, t, &mut handoff);
        drop(handoff);
        writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        cx.warnings
    })
}

/// As [`build`], streaming the files into sinks instead of returning
/// them: each target on its own thread, into its own sink (`sinks[i]` for
/// `targets[i]`); the Kubernetes target hands its files to a further
/// thread, which writes them into its sink. The warnings are in the order
/// of `targets`, whatever the scheduling.
pub fn build_to<S: Sink + Send>(
    topology: &Topology,
    graph: &Graph,
    targets: &[Target],
    sinks: &mut [S],
) -> Diagnostics {
    assert_eq!(targets.len(), sinks.len(), "one sink per target");
    let plan = std::sync::Arc::new(Plan::new(topology));
    let shared = std::sync::Arc::new(Shared::default());
    // A thread per distinct target; a target asked for twice runs twice on
    // its thread, in order (the same files, never written at once).
    let mut groups: Vec<(Target, Vec<(usize, &mut S)>)> = Vec::new();
    for (i, (&t, sink)) in targets.iter().zip(sinks.iter_mut()).enumerate() {
        match groups.iter_mut().find(|(g, _)| *g == t) {
            Some((_, runs)) => runs.push((i, sink)),
            None => groups.push((t, vec![(i, sink)])),
        }
    }
    let mut warnings: Vec<Diagnostics> = targets.iter().map(|_| Diagnostics::new()).collect();
    // The heaviest target (Kubernetes, else the first) runs on the calling
    // thread, which reuses the memory the check freed.
    let here = groups
        .iter()
        .position(|(t, _)| *t == Target::Kubernetes)
        .unwrap_or(0);
    let run_group = |t: Target, runs: Vec<(usize, &mut S)>| {
        let mut out = Vec::new();
        for (i, sink) in runs {
            let cx = Ctx {
                topology,
                graph,
                plan: plan.clone(),
                warnings: Diagnostics::new(),
                shared: shared.clone(),
            };
            out.push((i, run_target(cx, t, sink)));
            crate::timing::mark(&format!("target {t:?}"));
        }
        out
    };
    let kubernetes_here = groups
        .get(here)
        .is_some_and(|(t, _)| *t == Target::Kubernetes);
    let done: Vec<Vec<(usize, Diagnostics)>> = std::thread::scope(|scope| {
        let mut local = None;
        let mut handles = Vec::new();
        for (k, (t, runs)) in groups.into_iter().enumerate() {
            if k == here {
                local = Some((t, runs));
            } else {
                // Named, so that profilers show the time of each target.
                let name = format!("{t:?}").to_lowercase();
                handles.push(
                    std::thread::Builder::new()
                        .name(name)
                        .spawn_scoped(scope, move || {
                            if kubernetes_here {
                                yield_to_kubernetes();
                            }
                            run_group(t, runs)
                        })
                        .expect("a thread for a target"),
                );
            }
        }
        let mut done: Vec<_> = local
            .map(|(t, runs)| run_group(t, runs))
            .into_iter()
            .collect();
        for h in handles {
            done.push(
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        done
    });
    for (i, w) in done.into_iter().flatten() {
        warnings[i] = w;
    }
    let mut all = Diagnostics::new();
    for w in warnings {
        all.extend(w);
    }
    all
}

/// Items from which [`in_halves`] uses a second thread.
const SPLIT_FROM: usize = 1024;

/// `f` of the whole of `items` (one result), or, for many items, of each
/// half (two results, in order), the second half on another thread.
pub(crate) fn in_halves<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    if items.len() < SPLIT_FROM {
        return vec![f(items)];
    }
    let (first, second) = items.split_at(items.len() / 2);
    std::thread::scope(|scope| {
        let f = &f;
        let rest = scope.spawn(move || f(second));
        let first = f(first);
        vec![
            first,
            rest.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        ]
    })
}

/// Lower this thread's priority a little, so that the Kubernetes target,
/// which runs longest, gets a core whenever it can use one (the other
/// targets finish well before it, even at a lower priority).
pub(crate) fn yield_to_kubernetes() {
    #[cfg(target_os = "linux")]
    {
        // Linux gives each thread its own nice value; a failure only
        // leaves the default.
        let _ = rustix::process::setpriority_process(None, 5);
    }
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

/// A small map in insertion order, printed as a map: a scan beats hashing
/// at label-set sizes. A key set again keeps its first place.
pub(crate) struct Ordered<K, V>(pub Vec<(K, V)>);

impl<K: PartialEq, V> Ordered<K, V> {
    pub fn new() -> Self {
        Ordered(Vec::new())
    }

    pub fn set(&mut self, k: K, v: V) {
        match self.0.iter_mut().find(|(x, _)| *x == k) {
            Some(e) => e.1 = v,
            None => self.0.push((k, v)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: serde::Serialize, V: serde::Serialize> serde::Serialize for Ordered<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Labels every generated object carries (compose labels, Kubernetes
/// labels): ownership by stackc and the stack.
pub const LABEL_STACK: &str = "io.stackc.stack";
pub const LABEL_SERVICE: &str = "io.stackc.service";
pub const LABEL_CONFIG_HASH: &str = "io.stackc.config-hash";
pub const LABEL_OWNER: &str = "io.stackc.owner";
pub const OWNER: &str = "stackc";

/// [`short_hash`] of a value's compact JSON: hashed as it is printed, or,
/// for shapes [`jsonhash`] leaves to serde_json, printed into a buffer the
/// thread keeps, then hashed.
pub fn hash_json<T: serde::Serialize>(value: &T) -> String {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    if let Some(h) = jsonhash::hash(value) {
        return hex16(h);
    }
    BUF.with_borrow_mut(|buf| {
        buf.clear();
        serde_json::to_writer(&mut *buf, value).expect("plain data serializes");
        hex16(fnv1a(buf))
    })
}

/// Bytes as lowercase hex digits, two a byte.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// `h` as 16 lowercase hex digits (what `{:016x}` prints).
fn hex16(h: u64) -> String {
    hex(&h.to_be_bytes())
}

use jsonhash::fnv1a;

/// A short stable hash (hex) of some text: config hashes in labels, which
/// tell whether a running container matches its definition. It needs to be
/// stable across machines and versions, not secret: 64-bit FNV-1a.
pub fn short_hash(text: &str) -> String {
    hex16(fnv1a(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::{SPLIT_FROM, hex16, in_halves};

    /// Short and long lists (split in two) come back mapped, in order.
    #[test]
    fn in_halves_covers_every_item_in_order() {
        for n in [0, 1, 1023, 1024, 5001] {
            let items: Vec<usize> = (0..n).collect();
            let parts = in_halves(&items, |part| part.to_vec());
            assert_eq!(parts.len(), if n < SPLIT_FROM { 1 } else { 2 }, "{n}");
            assert_eq!(parts.concat(), items, "{n}");
        }
    }

    #[test]
    fn hex16_prints_what_the_formatter_prints() {
        for h in [
            0,
            1,
            0xf,
            0x10,
            0xdead_beef,
            u64::MAX,
            0x0123_4567_89ab_cdef,
        ] {
            assert_eq!(hex16(h), format!("{h:016x}"));
        }
    }
}
