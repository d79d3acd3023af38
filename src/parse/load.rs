//! Reading files: the topology, its imports, its overrides and the selected
//! environment, merged into one tree and decoded.

use std::path::{Component, Path, PathBuf};

use crate::diag::{Code, Diagnostic, Diagnostics, did_you_mean};
use crate::model::Topology;
use crate::parse::tree::{Node, Value};
use crate::parse::{decode, kdl, kdl_rs, merge};
use crate::source::{FileId, SourceMap, Span};

/// Largest file stackc reads (a 10,000-service topology is about 3 MB).
pub const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;
/// Imports may nest this deep.
const MAX_IMPORT_DEPTH: usize = 16;
/// Top-level nodes a fragment may define.
const FRAGMENT_NODES: &[&str] = &["service", "balancer", "monitoring", "job", "import"];

/// The result of loading: the sources read, the model (when it could be
/// built) and every diagnostic.
#[derive(Debug)]
pub struct Loaded {
    pub sources: SourceMap,
    pub topology: Option<Topology>,
    pub diags: Diagnostics,
}

impl Loaded {
    /// True when a model exists and no error was found.
    pub fn ok(&self) -> bool {
        self.topology.is_some() && !self.diags.has_errors()
    }
}

/// Load the topology at `path`, with `env` selected.
/// Top-level nodes from which a tree is freed on another thread.
const LARGE_TREE: usize = 1024;

pub fn load(path: &Path, env: Option<&str>) -> Loaded {
    let mut sources = SourceMap::new();
    let mut diags = Diagnostics::new();
    let text = match read_file(path, &mut sources, &mut diags, None) {
        Some(t) => t,
        None => {
            return Loaded {
                sources,
                topology: None,
                diags,
            };
        }
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    finish(sources, diags, text, base, path.to_path_buf(), env)
}

/// Load a topology from text; imports are resolved from `base_dir`.
pub fn load_str(name: &str, text: &str, base_dir: &Path, env: Option<&str>) -> Loaded {
    let mut sources = SourceMap::new();
    let text = std::sync::Arc::new(text.to_string());
    let file = sources.add(name, text.clone());
    finish(
        sources,
        Diagnostics::new(),
        (file, text),
        base_dir.to_path_buf(),
        base_dir.join(name),
        env,
    )
}

fn finish(
    mut sources: SourceMap,
    mut diags: Diagnostics,
    (file, text): (FileId, std::sync::Arc<String>),
    base: PathBuf,
    path: PathBuf,
    env: Option<&str>,
) -> Loaded {
    if text.trim().is_empty() {
        diags.push(
            Diagnostic::error(
                Code::EmptyInput,
                format!("{} is empty", sources.get(file).name),
            )
            .help("a topology starts with: stack \"my-stack\" version=\"1.0.0\""),
        );
        return Loaded {
            sources,
            topology: None,
            diags,
        };
    }
    // A document without imports or overrides is decoded as it is read:
    // each service as soon as its node is complete, by the thread that read
    // it, so the tree of a large topology is never held whole.
    let eager = !mentions(&text, "import") && !mentions(&text, "override");
    let mut read = read_tree(file, &text, &mut diags, eager);
    // Only a name written with escapes can hide one of the two words.
    if eager
        && read
            .as_ref()
            .is_some_and(|(nodes, _)| imports_or_overrides(nodes))
    {
        // (The first read succeeded, so it reported nothing.)
        read = read_tree(file, &text, &mut diags, false);
    }
    crate::timing::mark("kdl");
    let Some((nodes, decoded)) = read else {
        return Loaded {
            sources,
            topology: None,
            diags,
        };
    };
    if nodes.is_empty() {
        diags.push(
            Diagnostic::error(
                Code::EmptyInput,
                format!("{} has no nodes", sources.get(file).name),
            )
            .help("a topology starts with: stack \"my-stack\" version=\"1.0.0\""),
        );
        return Loaded {
            sources,
            topology: None,
            diags,
        };
    }
    let mut ctx = Ctx {
        sources: &mut sources,
        diags: &mut diags,
        chain: vec![canonical(&path)],
        imported: Vec::new(),
    };
    let mut merged = ctx.expand_imports(nodes, &base, 0);
    apply_overrides(&mut merged, env, &mut diags);
    crate::timing::mark("imports and overrides");
    let topology = decode::decode(&mut merged, decoded, env, &mut diags);
    crate::timing::mark("decode");
    // Freeing a large tree takes milliseconds the checks need not wait for.
    if merged.len() >= LARGE_TREE {
        std::thread::spawn(move || drop(merged));
    }
    Loaded {
        sources,
        topology,
        diags,
    }
}

/// Whether `word` appears anywhere in `text`.
fn mentions(text: &str, word: &str) -> bool {
    memchr::memmem::find(text.as_bytes(), word.as_bytes()).is_some()
}

/// Whether `nodes` has an import or an override (at the top, or in an
/// environment): nodes that change the tree before it is decoded.
fn imports_or_overrides(nodes: &[Node]) -> bool {
    nodes.iter().any(|n| match n.name.value.as_str() {
        "import" | "override" => true,
        "env" => n.children().iter().any(|c| c.name.value == "override"),
        _ => false,
    })
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// Read a file into the source map, reporting missing, oversized and
/// non-UTF-8 files. `at` is the import node that asked for it, if any.
fn read_file(
    path: &Path,
    sources: &mut SourceMap,
    diags: &mut Diagnostics,
    at: Option<Span>,
) -> Option<(FileId, std::sync::Arc<String>)> {
    let shown = path.display().to_string();
    let attach = |d: Diagnostic| match at {
        Some(s) => d.at(s, "imported here"),
        None => d,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            diags.push(attach(
                Diagnostic::error(
                    Code::MissingFile,
                    format!("{shown} is a directory, not a topology file"),
                )
                .help("pass the .kdl file, e.g. stackc check examples/eip-resso/stack.kdl"),
            ));
            return None;
        }
        Ok(m) if m.len() > MAX_FILE_SIZE => {
            diags.push(attach(
                Diagnostic::error(Code::TooLarge, format!("{shown} is {} bytes; the limit is {MAX_FILE_SIZE}", m.len()))
                    .help("a topology of 10,000 services is about 3 MB; check that this is the right file"),
            ));
            return None;
        }
        Ok(_) => {}
        Err(e) => {
            diags.push(attach(
                Diagnostic::error(Code::MissingFile, format!("cannot read {shown}: {}", io_reason(&e)))
                    .help("check the path; without a FILE argument stackc reads stack.kdl in the current directory"),
            ));
            return None;
        }
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            diags.push(attach(Diagnostic::error(
                Code::MissingFile,
                format!("cannot read {shown}: {}", io_reason(&e)),
            )));
            return None;
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => {
            let text = std::sync::Arc::new(text);
            let id = sources.add(shown, text.clone());
            Some((id, text))
        }
        Err(e) => {
            let bad = e.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            // Position in the lossy text: the valid prefix is unchanged.
            let id = sources.add(shown.clone(), std::sync::Arc::new(lossy));
            diags.push(
                Diagnostic::error(Code::NotUtf8, format!("{shown} is not valid UTF-8"))
                    .at(
                        Span::new(id, bad, bad + 3),
                        format!("invalid byte at offset {bad}"),
                    )
                    .help("KDL files are UTF-8; re-save the file with UTF-8 encoding"),
            );
            None
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Parse one file's text. Our fast parser decides; on a syntax error the
/// `kdl` crate's diagnostics are shown, and should the two ever disagree the
/// `kdl` crate's tree is used, so no valid document is refused.
fn parse_file(file: FileId, text: &str, diags: &mut Diagnostics) -> Option<Vec<Node>> {
    read_tree(file, text, diags, false).map(|(nodes, _)| nodes)
}

/// As [`parse_file`]; with `eager`, each service is also decoded as soon as
/// its node is read ([`decode::service_node`], one result per node).
fn read_tree(
    file: FileId,
    text: &str,
    diags: &mut Diagnostics,
    eager: bool,
) -> Option<(Vec<Node>, Option<Vec<decode::Decoded>>)> {
    let read = if eager {
        kdl::parse_each(text, file, &decode::service_node).map(|(n, d)| (n, Some(d)))
    } else {
        kdl::parse(text, file).map(|n| (n, None))
    };
    let ours = match read {
        Ok(read) => return Some(read),
        // Not a mistake to point at: the `kdl` crate would only build the
        // whole oversized tree.
        Err(e) if e.too_large => {
            diags.push(
                Diagnostic::error(Code::TooLarge, e.message)
                    .at(e.span, "the limit is reached here")
                    .help(format!(
                        "a topology of 10,000 services has about 300,000 nodes and values; the limit is {}; check that this is the right file",
                        kdl::MAX_ITEMS
                    )),
            );
            return None;
        }
        Err(e) => e,
    };
    // The `kdl` crate recurses per nesting level and is slow on large
    // inputs: consult it only where that is safe and cheap.
    let issues = if text.len() > KDL_RS_MAX_INPUT || brace_depth(text) > KDL_RS_MAX_DEPTH {
        Vec::new()
    } else {
        match kdl_rs::convert(text, file) {
            Ok(nodes) => return Some((nodes, None)),
            Err(issues) => issues,
        }
    };
    // After the first error the `kdl` crate resynchronises by guessing;
    // what it reports next is mostly echo of the first mistake, so only
    // the first is shown. Without its view, our own message is.
    let d = match issues.first() {
        Some(i) => syntax(
            file,
            i.start,
            i.end,
            &i.message,
            i.label.as_deref(),
            i.help.as_deref(),
            text,
        ),
        None => syntax(
            file,
            ours.span.start as usize,
            ours.span.end as usize,
            &ours.message,
            None,
            None,
            text,
        ),
    };
    diags.push(d);
    None
}

/// Inputs larger than this are not handed to the `kdl` crate.
const KDL_RS_MAX_INPUT: usize = 4 * 1024 * 1024;
/// Nesting deeper than this is not handed to the `kdl` crate.
const KDL_RS_MAX_DEPTH: usize = 100;

/// Maximum `{` nesting, counting braces outside double quotes only: an
/// estimate, enough to decide whether the `kdl` crate can be consulted.
fn brace_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn syntax(
    file: FileId,
    start: usize,
    end: usize,
    message: &str,
    label: Option<&str>,
    help: Option<&str>,
    text: &str,
) -> Diagnostic {
    let (start, end) = (start.min(text.len()), end.max(start).min(text.len()));
    // The most common KDL 1 habit gets a precise hint.
    let word = text.get(start..).map_or("", |rest| {
        let n = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        &rest[..n]
    });
    let help = match word {
        "true" | "false" | "null" => format!("KDL 2.0 writes this keyword as #{word}"),
        _ => help
            .unwrap_or("see https://kdl.dev for KDL 2.0 syntax; strings are quoted, booleans are #true/#false")
            .to_string(),
    };
    // KDL 1 keywords are the most common slip: say so plainly.
    if matches!(word, "true" | "false" | "null") {
        return Diagnostic::error(
            Code::Syntax,
            format!("KDL syntax error: `{word}` is written `#{word}` in KDL 2.0"),
        )
        .at(Span::new(file, start, start + word.len()), "a bare keyword")
        .help(help);
    }
    Diagnostic::error(Code::Syntax, format!("KDL syntax error: {message}"))
        .at(Span::new(file, start, end), label.unwrap_or("here"))
        .help(help)
}

struct Ctx<'a> {
    sources: &'a mut SourceMap,
    diags: &'a mut Diagnostics,
    /// Files being imported, outermost first, to detect cycles.
    chain: Vec<PathBuf>,
    /// Every fragment imported so far.
    imported: Vec<PathBuf>,
}

impl Ctx<'_> {
    /// Replace each `import` node by the nodes of the fragment it names.
    fn expand_imports(&mut self, nodes: Vec<Node>, dir: &Path, depth: usize) -> Vec<Node> {
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            if node.name.value != "import" {
                out.push(node);
                continue;
            }
            let mut r = crate::parse::reader::NodeReader::new(&node);
            let target = r.arg_string(0, "a fragment name or ./path.kdl");
            r.finish(self.diags);
            let Some(target) = target else { continue };
            let Some(path) = self.resolve(&target.value, target.span, dir) else {
                continue;
            };
            let canon = canonical(&path);
            if let Some(pos) = self.chain.iter().position(|p| *p == canon) {
                let cycle: Vec<String> = self.chain[pos..]
                    .iter()
                    .chain(std::iter::once(&canon))
                    .map(|p| {
                        p.file_name().map_or_else(
                            || p.display().to_string(),
                            |f| f.to_string_lossy().into_owned(),
                        )
                    })
                    .collect();
                self.diags.push(
                    Diagnostic::error(Code::ImportCycle, format!("import cycle: {}", cycle.join(" -> ")))
                        .at(target.span, "imports a file that is already being imported")
                        .help("fragments must not import each other in a loop; move the shared part into its own fragment"),
                );
                continue;
            }
            // A fragment imported twice (directly, or through two other
            // fragments) is included once, like a shared header.
            if self.imported.contains(&canon) {
                continue;
            }
            self.imported.push(canon.clone());
            if depth >= MAX_IMPORT_DEPTH {
                self.diags.push(
                    Diagnostic::error(
                        Code::ImportCycle,
                        format!("imports nest deeper than {MAX_IMPORT_DEPTH} levels"),
                    )
                    .at(target.span, "too deep")
                    .help("flatten the chain of fragments"),
                );
                continue;
            }
            let Some((file, text)) = read_file(&path, self.sources, self.diags, Some(target.span))
            else {
                continue;
            };
            let Some(nodes) = parse_file(file, &text, self.diags) else {
                continue;
            };
            for n in &nodes {
                if !FRAGMENT_NODES.contains(&n.name.value.as_str()) {
                    self.diags.push(
                        Diagnostic::error(Code::ImportContent, format!("a fragment cannot define `{}`", n.name.value))
                            .at(n.name.span, "not allowed in a fragment")
                            .also(target.span, "imported here")
                            .help("fragments define service, balancer, monitoring and job nodes; stack, network, env and phases belong to the topology"),
                    );
                }
            }
            let nodes: Vec<Node> = nodes
                .into_iter()
                .filter(|n| FRAGMENT_NODES.contains(&n.name.value.as_str()))
                .collect();
            self.chain.push(canon);
            let sub_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            out.extend(self.expand_imports(nodes, &sub_dir, depth + 1));
            self.chain.pop();
        }
        out
    }

    /// `NAME` -> `stacks/NAME.kdl` in `dir` or an ancestor; `./x.kdl` ->
    /// relative to `dir`, never outside it.
    fn resolve(&mut self, target: &str, span: Span, dir: &Path) -> Option<PathBuf> {
        let bad = |why: &str, help: &str| {
            Diagnostic::error(
                Code::ImportPath,
                format!("import `{target}` is not allowed: {why}"),
            )
            .at(span, why.to_string())
            .help(help.to_string())
        };
        if let Some(rel) = target.strip_prefix("./") {
            let p = Path::new(rel);
            if p.components().any(|c| !matches!(c, Component::Normal(_))) || rel.contains('\\') {
                self.diags.push(bad("the path leaves the topology's directory", "import files beside the topology (./file.kdl) or shared fragments by name (import \"postgres\")"));
                return None;
            }
            if p.extension().and_then(|e| e.to_str()) != Some("kdl") {
                self.diags.push(bad(
                    "only .kdl files can be imported",
                    "name the fragment file with a .kdl extension",
                ));
                return None;
            }
            let full = dir.join(p);
            // A symlink inside the directory must not lead outside it.
            if let (Ok(real), Ok(root)) = (full.canonicalize(), dir.canonicalize())
                && !real.starts_with(&root)
            {
                self.diags.push(bad(
                    "the path leads outside the topology's directory",
                    "copy the fragment next to the topology or into stacks/",
                ));
                return None;
            }
            if !full.is_file() {
                self.diags.push(
                    Diagnostic::error(
                        Code::ImportNotFound,
                        format!("no file `{target}` to import"),
                    )
                    .at(span, format!("looked for {}", full.display()))
                    .help("relative imports are resolved from the importing file's directory"),
                );
                return None;
            }
            return Some(full);
        }
        if target.starts_with('/') || target.starts_with('\\') || target.contains(':') {
            self.diags.push(bad(
                "absolute paths are not allowed",
                "import files beside the topology as ./file.kdl, or shared fragments by name (import \"postgres\" reads stacks/postgres.kdl)",
            ));
            return None;
        }
        if target.split(['/', '\\']).any(|seg| seg == "..") {
            self.diags.push(bad(
                "the path leaves the topology's directory",
                "import files beside the topology as ./file.kdl, or shared fragments by name (import \"postgres\" reads stacks/postgres.kdl)",
            ));
            return None;
        }
        if target.contains(['/', '\\']) || target.ends_with(".kdl") {
            self.diags.push(bad(
                "a file path must start with ./",
                "write import \"./path/file.kdl\" for a file beside the topology, or a fragment name without .kdl",
            ));
            return None;
        }
        if target.is_empty()
            || !target
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            self.diags.push(bad(
                "fragment names use only letters, digits, - and _",
                "import a shared fragment by name (import \"postgres\" reads stacks/postgres.kdl) or a local file as ./file.kdl",
            ));
            return None;
        }
        let file = format!("{target}.kdl");
        let mut searched = Vec::new();
        for anc in dir.ancestors() {
            let cand = anc.join("stacks").join(&file);
            if cand.is_file() {
                return Some(cand);
            }
            searched.push(anc.join("stacks"));
        }
        let mut available: Vec<String> = searched
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|rd| rd.filter_map(|e| e.ok()))
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".kdl"))
                    .map(str::to_string)
            })
            .collect();
        available.sort();
        available.dedup();
        let mut d = Diagnostic::error(
            Code::ImportNotFound,
            format!("no fragment `{target}` found"),
        )
        .at(
            span,
            format!("looked for stacks/{file} here and in parent directories"),
        );
        d = match did_you_mean(target, available.iter().map(String::as_str)) {
            Some(m) => d.help(format!("did you mean `{m}`?")),
            None if available.is_empty() => {
                d.help("create stacks/NAME.kdl next to the topology or in a parent directory")
            }
            None => d.help(format!("available fragments: {}", available.join(", "))),
        };
        self.diags.push(d);
        None
    }
}

/// Apply top-level `override` blocks, then those of the selected `env`.
fn apply_overrides(nodes: &mut [Node], env: Option<&str>, diags: &mut Diagnostics) {
    let top: Vec<Node> = nodes
        .iter()
        .filter(|n| n.name.value == "override")
        .cloned()
        .collect();
    for o in &top {
        apply_one(nodes, o, diags, false);
    }
    // Overrides of the other environments are checked too, so a typo in
    // `prod` is found by a plain `stackc check`.
    let others: Vec<Node> = nodes
        .iter()
        .filter(|n| n.name.value == "env" && (env.is_none() || n.first_string_arg() != env))
        .flat_map(|n| {
            n.children()
                .iter()
                .filter(|c| c.name.value == "override")
                .cloned()
        })
        .collect();
    for o in &others {
        apply_one(nodes, o, diags, true);
    }
    let Some(env) = env else { return };
    let env_nodes: Vec<&Node> = nodes.iter().filter(|n| n.name.value == "env").collect();
    let Some(env_node) = env_nodes.iter().find(|n| n.first_string_arg() == Some(env)) else {
        let names: Vec<&str> = env_nodes
            .iter()
            .filter_map(|n| n.first_string_arg())
            .collect();
        let mut d = Diagnostic::error(
            Code::UnknownEnv,
            format!("the topology has no environment `{env}`"),
        );
        d = match (did_you_mean(env, names.iter().copied()), names.is_empty()) {
            (Some(m), _) => d.help(format!(
                "did you mean `--env {m}`? defined: {}",
                names.join(", ")
            )),
            (None, true) => d.help(
                "the topology defines no `env` blocks; drop --env or add env \"NAME\" { ... }",
            ),
            (None, false) => d.help(format!("defined environments: {}", names.join(", "))),
        };
        diags.push(d);
        return;
    };
    let patches: Vec<Node> = env_node
        .children()
        .iter()
        .filter(|c| c.name.value == "override")
        .cloned()
        .collect();
    for o in &patches {
        apply_one(nodes, o, diags, false);
    }
}

/// Apply one override; with `dry_run` only check that its target exists
/// (overrides of environments that are not selected).
fn apply_one(nodes: &mut [Node], patch: &Node, diags: &mut Diagnostics, dry_run: bool) {
    let mut r = crate::parse::reader::NodeReader::new(patch);
    r.allow_children();
    let target = r.arg_string(
        0,
        "the name of the service, balancer or `monitoring` to change",
    );
    // Properties are merged, not read here: mark none as unknown.
    let mut unused = Diagnostics::new();
    r.finish(&mut unused);
    for d in unused.into_vec() {
        if d.code != Code::UnknownProperty {
            diags.push(d);
        }
    }
    let Some(target) = target else { return };
    // `monitoring` names the monitoring block when there is one, even if a
    // service is called that too.
    let has_monitoring = nodes.iter().any(|n| n.name.value == "monitoring");
    let hit = nodes.iter_mut().find(|n| match n.name.value.as_str() {
        "service" | "balancer" if !(has_monitoring && target.value == "monitoring") => {
            matches!(n.args().next().map(|e| &e.value), Some(Value::String(s)) if *s == target.value)
        }
        "monitoring" => target.value == "monitoring",
        _ => false,
    });
    match hit {
        Some(_) if dry_run => {}
        Some(n) => merge::merge(n, patch, false),
        None => {
            let names: Vec<&str> = nodes
                .iter()
                .filter(|n| matches!(n.name.value.as_str(), "service" | "balancer"))
                .filter_map(|n| n.first_string_arg())
                .collect();
            let mut d = Diagnostic::error(
                Code::OverrideUnknown,
                format!("nothing named `{}` to override", target.value),
            )
            .at(target.span, "no service or balancer of this name");
            d = match did_you_mean(&target.value, names.iter().copied()) {
                Some(m) => d.help(format!("did you mean `{m}`?")),
                None => d.help("override changes a service or balancer declared in the topology or an imported fragment"),
            };
            diags.push(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(loaded: &Loaded, service: &str) -> String {
        let t = loaded.topology.as_ref().expect("a model");
        t.service(service).expect("the service").image.value.clone()
    }

    const BASE: &str = "stack \"s\" version=\"1\"\nservice \"a\" {\n    image \"x:1\"\n}\n";

    /// Services decoded as they are read give the model a whole-tree decode
    /// gives; an override, even one whose name only escapes spell, is
    /// applied before its service is decoded.
    #[test]
    fn services_decoded_while_reading_see_every_override() {
        let dir = Path::new(".");
        let plain = load_str("t.kdl", BASE, dir, None);
        assert!(plain.ok(), "{:?}", plain.diags);
        assert_eq!(image(&plain, "a"), "x:1");
        for patch in [
            "override \"a\" {\n    image \"y:2\"\n}\n",
            "\"\\u{6f}verride\" \"a\" {\n    image \"y:2\"\n}\n",
            "env \"e\" {\n    \"\\u{6f}verride\" \"a\" {\n        image \"y:2\"\n    }\n}\n",
        ] {
            let text = format!("{BASE}{patch}");
            let env = patch.starts_with("env").then_some("e");
            let loaded = load_str("t.kdl", &text, dir, env);
            assert!(loaded.ok(), "{patch}: {:?}", loaded.diags);
            assert_eq!(image(&loaded, "a"), "y:2", "{patch}");
        }
    }

    /// A service's own mistakes are reported the same way, decoded while
    /// reading or not.
    #[test]
    fn a_service_decoded_while_reading_reports_its_errors() {
        let dir = Path::new(".");
        let text = "stack \"s\" version=\"1\"\nservice \"a\" {\n    imag \"x:1\"\n}\n";
        let eager = load_str("t.kdl", text, dir, None);
        let later = load_str(
            "t.kdl",
            &format!("{text}override \"a\" {{\n}}\n"),
            dir,
            None,
        );
        let messages =
            |l: &Loaded| -> Vec<String> { l.diags.iter().map(|d| d.message.clone()).collect() };
        assert!(eager.diags.has_errors());
        assert_eq!(messages(&eager), messages(&later));
    }
}
