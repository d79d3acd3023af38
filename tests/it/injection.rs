//! Injection property tests: hostile text (newlines, quotes, `;`, braces,
//! `$`, `${}`, `$(...)`, `{{ }}`, backslashes, YAML specials, Unicode line
//! separators, ...) in every user-controlled string field that reaches an
//! emitter. For every case, either `stackc check` rejects the topology
//! with an error pointing at the value's line (never a panic), or the
//! value comes out exactly as written once the consumer has read the
//! artifact: YAML parsed (and, for a sample, read by PyYAML, a YAML 1.1
//! reader), compose interpolation and Kubernetes `$(VAR)` expansion
//! applied, nginx tokenized as nginx does, PromQL strings unquoted, shell
//! words split by a real `sh`. Batches of the accepted cases then go
//! through the real consumers: `docker-compose config`, `nginx -t`,
//! `promtool check rules` / `check config`.
//!
//! `STACKC_INJECTION_CASES` sets the number of cases per emitter (default
//! 10,000), `STACKC_TEST_SEED` the seed.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use stackc::targets::{self, Artifact, Target};

use crate::hostile_text::{Rng, hostile, kdl_str, seed};
use crate::targets::tool;

const TOPOLOGY: &str = r#"stack "inj" version="1.0.0"
network "net" subnet="10.30.0.0/16" {
    tier "apps" subnet="10.30.0.0/17"
}
@SERVICES@
balancer "edge" tier="apps" {
    image @BIMAGE@
    listen 80
    rate-limit "general" rate="10r/s" key=@RKEY@
@ROUTES@
}
monitoring tier="apps" {
    prometheus image=@PIMAGE@
@ALERTS@
}
kubernetes namespace="inj" {
    service-account "deployer" {
        rule api-groups=@APIGROUP@ resources="deployments" verbs="get"
    }
}
"#;

const SERVICE: &str = r#"service @SVC@ tier="apps" {
    image @IMAGE@
    command @CMD@ "--flag"
    args @ARG@
    port 8080 name=@PORTNAME@
    env "V" @ENV@
    secret "S_PASSWORD" from=@SECRETENV@
    secret "T_KEY" from=@SECRETFILE@
    label "team" @LABEL@
    runtime-opts @OPTS@
    volume "data" path=@VOLPATH@
    health @HEALTH@
    metrics path=@MPATH@ port=8080
    exporter "redis" image=@XIMAGE@
}"#;

const ROUTE: &str = "    route @ROUTE@ to=@SVC@ limit=\"general\"";

const ALERT: &str = r#"    alert @ALERTNAME@ expr=@EXPR@ {
        label "team" @ALABEL@
        annotation "summary" @ANN@
    }"#;

/// A user-controlled field: the placeholder it fills, and how a hostile
/// string becomes what the user writes there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Image,
    Cmd,
    Arg,
    PortName,
    Env,
    SecretEnv,
    SecretFile,
    Label,
    Opts,
    VolPath,
    HealthCmd,
    HealthPath,
    MetricsPath,
    ExporterImage,
    BalancerImage,
    PrometheusImage,
    RateKey,
    Route,
    Svc,
    Expr,
    AlertLabel,
    Annotation,
    ApiGroup,
}

use Slot::*;

impl Slot {
    fn key(self) -> &'static str {
        match self {
            Image => "IMAGE",
            Cmd => "CMD",
            Arg => "ARG",
            PortName => "PORTNAME",
            Env => "ENV",
            SecretEnv => "SECRETENV",
            SecretFile => "SECRETFILE",
            Label => "LABEL",
            Opts => "OPTS",
            VolPath => "VOLPATH",
            HealthCmd | HealthPath => "HEALTH",
            MetricsPath => "MPATH",
            ExporterImage => "XIMAGE",
            BalancerImage => "BIMAGE",
            PrometheusImage => "PIMAGE",
            RateKey => "RKEY",
            Route => "ROUTE",
            Svc => "SVC",
            Expr => "EXPR",
            AlertLabel => "ALABEL",
            Annotation => "ANN",
            ApiGroup => "APIGROUP",
        }
    }

    /// What the user writes for hostile text `h`: paths start with `/`,
    /// references carry their prefix, images look like images, so that
    /// most cases get past the first check and reach the emitter.
    fn written(self, h: &str) -> String {
        match self {
            VolPath | HealthPath | MetricsPath | Route => format!("/{h}"),
            SecretEnv => format!("env:{h}"),
            SecretFile => format!("file:/{h}"),
            RateKey => format!("header:{h}"),
            Image | ExporterImage | BalancerImage | PrometheusImage => {
                format!("registry.example.com/{h}")
            }
            // The value sits in a PromQL string of the user's expression.
            Expr => format!("up{{team=\"{}\"}} == 0", promql_quote(h)),
            _ => h.to_string(),
        }
    }

    /// The value the consumer must end up with.
    fn expected(self, h: &str) -> String {
        match self {
            // A list: items split at commas, trimmed, empty ones dropped;
            // `core` is the core group, "" in Kubernetes.
            ApiGroup => {
                let items: Vec<&str> = h
                    .split(',')
                    .map(str::trim)
                    .filter(|i| !i.is_empty())
                    .map(|i| if i == "core" { "" } else { i })
                    .collect();
                serde_json::to_string(&items).expect("json")
            }
            SecretEnv | RateKey | Expr => h.to_string(),
            SecretFile => format!("/{h}"),
            _ => self.written(h),
        }
    }

    /// The KDL text of the placeholder.
    fn kdl(self, h: &str) -> String {
        match self {
            HealthCmd => format!("cmd={}", kdl_str(&self.written(h))),
            HealthPath => format!("http={} port=8080", kdl_str(&self.written(h))),
            _ => kdl_str(&self.written(h)),
        }
    }
}

fn default_kdl(key: &str) -> String {
    let v = match key {
        "IMAGE" => "registry.example.com/inj/api:1.0",
        "CMD" => "serve",
        "ARG" => "--port=8080",
        "PORTNAME" => "http",
        "ENV" => "x",
        "SECRETENV" => "env:INJ_PW",
        "SECRETFILE" => "file:/run/inj/key",
        "LABEL" => "a",
        "OPTS" => "-Xmx1g",
        "VOLPATH" => "/data",
        "HEALTH" => return "cmd=\"true\"".into(),
        "MPATH" => "/metrics",
        "XIMAGE" => "oliver006/redis_exporter:v1.62.0",
        "BIMAGE" => "nginx:1.27",
        "PIMAGE" => "prom/prometheus:v2.53.0",
        "RKEY" => "header:X-Api-Key",
        "ROUTE" => "/api",
        "SVC" => "api",
        "EXPR" => "up{job=\"prometheus\"} == 0",
        "ALABEL" => "x",
        "ANN" => "s",
        "APIGROUP" => "apps",
        "ALERTNAME" => "A",
        other => panic!("no default for {other}"),
    };
    kdl_str(v)
}

/// Replace `@KEY@` placeholders in one pass (substituted text is never
/// scanned again).
fn fill(template: &str, value: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(i) = rest.find('@') {
        let after = &rest[i + 1..];
        match after.find('@') {
            Some(j) if after[..j].bytes().all(|b| b.is_ascii_uppercase()) && j > 0 => {
                out.push_str(&rest[..i]);
                out.push_str(&value(&after[..j]));
                rest = &after[j + 1..];
            }
            _ => {
                out.push_str(&rest[..=i]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One case: a slot and its hostile text.
#[derive(Clone, Debug)]
struct Case {
    slot: Slot,
    hostile: String,
}

impl Case {
    fn expected(&self) -> String {
        self.slot.expected(&self.hostile)
    }
}

/// Marks where the slot's value goes, before it is put in.
const SENTINEL: &str = "\u{1}SLOT\u{1}";

/// The topology for one case: every field at its default but one; and
/// the lines (0-based) the case's value is written on.
fn topology_lines(case: Option<&Case>) -> (String, BTreeSet<usize>) {
    let value = |key: &str| match case {
        Some(c) if c.slot.key() == key => SENTINEL.to_string(),
        _ => default_kdl(key),
    };
    let service = fill(SERVICE, &value);
    let route = fill(ROUTE, &value);
    let alert = fill(ALERT, &value);
    let marked = fill(TOPOLOGY, &|key: &str| match key {
        "SERVICES" => service.clone(),
        "ROUTES" => route.clone(),
        "ALERTS" => alert.clone(),
        k => value(k),
    });
    let lines = marked
        .match_indices(SENTINEL)
        .map(|(i, _)| marked[..i].matches('\n').count())
        .collect();
    let text = match case {
        Some(c) => marked.replace(SENTINEL, &c.slot.kdl(&c.hostile)),
        None => marked,
    };
    (text, lines)
}

fn topology(case: Option<&Case>) -> String {
    topology_lines(case).0
}

/// Many accepted cases in one topology, for one run of a real consumer:
/// service `sN` (and its route, alert `AN`) carries case N.
fn batch_topology(cases: &[Case]) -> String {
    let mut services = String::new();
    let mut routes = String::new();
    let mut alerts = String::new();
    for (n, c) in cases.iter().enumerate() {
        let value = |key: &str| match key {
            "SVC" if c.slot != Svc => kdl_str(&format!("s{n}")),
            "ROUTE" if c.slot != Route => kdl_str(&format!("/r{n}")),
            "ALERTNAME" => kdl_str(&format!("A{n}")),
            k if c.slot.key() == k => c.slot.kdl(&c.hostile),
            k => default_kdl(k),
        };
        services.push_str(&fill(SERVICE, &value));
        services.push('\n');
        routes.push_str(&fill(ROUTE, &value));
        routes.push('\n');
        alerts.push_str(&fill(ALERT, &value));
        alerts.push('\n');
    }
    fill(TOPOLOGY, &|key: &str| match key {
        "SERVICES" => services.clone(),
        "ROUTES" => routes.clone(),
        "ALERTS" => alerts.clone(),
        k => default_kdl(k),
    })
}

/// The name of the service that carries case `n` of a batch.
fn batch_service(cases: &[Case], n: usize) -> String {
    if cases[n].slot == Svc {
        cases[n].hostile.clone()
    } else {
        format!("s{n}")
    }
}

enum Outcome {
    /// Rejected by `stackc check` with an error on the value's line.
    Rejected,
    /// Accepted: the artifacts of the requested targets.
    Built(Vec<Artifact>),
}

/// Check and build one case; a panic, a rejection that does not point at
/// the value, or a build error is a failure.
fn run_case(case: &Case, which: &[Target]) -> Result<Outcome, String> {
    let (text, lines) = topology_lines(Some(case));
    let checked = catch_unwind(AssertUnwindSafe(|| {
        stackc::check_str("inj.kdl", &text, Path::new("."), None)
    }))
    .map_err(|_| "stackc check panicked".to_string())?;
    if !checked.ok() {
        let errors: Vec<_> = checked.diags.iter().filter(|d| d.is_error()).collect();
        if errors.is_empty() {
            return Err("not ok, yet no error diagnostic".into());
        }
        // The error must be about this value: on a line it is written on.
        let line_of = |pos: usize| text[..pos.min(text.len())].matches('\n').count();
        let on_line = errors.iter().any(|d| {
            d.primary
                .as_ref()
                .is_some_and(|l| lines.contains(&line_of(l.span.start as usize)))
        });
        if !on_line {
            return Err(format!(
                "rejected, but no error on line(s) {:?}:\n{}",
                lines.iter().map(|l| l + 1).collect::<Vec<_>>(),
                stackc::diag::render_plain(&checked.diags, &checked.sources)
            ));
        }
        return Ok(Outcome::Rejected);
    }
    let (t, g) = (
        checked.topology.as_ref().expect("ok"),
        checked.graph.as_ref().expect("ok"),
    );
    let (arts, diags) = catch_unwind(AssertUnwindSafe(|| targets::build(t, g, which)))
        .map_err(|_| "build panicked".to_string())?;
    if diags.has_errors() {
        return Err(format!(
            "accepted by check, yet the build fails:\n{}",
            stackc::diag::render_plain(&diags, &checked.sources)
        ));
    }
    Ok(Outcome::Built(arts))
}

fn cases_per_emitter() -> usize {
    std::env::var("STACKC_INJECTION_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

/// Reads a batched case back: the case, the batch's artifacts, and the
/// name of the service that carries it.
type BatchVerify<'a> = &'a dyn Fn(&Case, &[Artifact], &str) -> Result<(), String>;

/// Reads one case back from the artifacts built for it alone.
type Verify<'a> = &'a dyn Fn(&Case, &[Artifact]) -> Result<(), String>;

/// What one emitter's run accepted: the cases, and artifact sets to read
/// with other YAML readers.
struct Accepted {
    cases: Vec<Case>,
    artifacts: Vec<Vec<Artifact>>,
}

/// Slots that exist once per topology, so cannot share a batch.
fn global(slot: Slot) -> bool {
    matches!(slot, BalancerImage | PrometheusImage | RateKey | ApiGroup)
}

/// Generate and run the cases of one emitter. Every case is checked on
/// its own. Accepted cases are built and read back with `verify` one by
/// one, or, with `batched`, many to a topology (for the emitters whose
/// build costs most), where each is read back from its own service.
fn property(
    emitter: &str,
    seed_base: u64,
    slots: &[Slot],
    which: &[Target],
    verify: Verify,
    batched: Option<BatchVerify>,
) -> Accepted {
    let seed = seed(seed_base);
    let mut rng = Rng::new(seed);
    let n = cases_per_emitter();
    let start = std::time::Instant::now();
    // The defaults alone must check clean.
    let base = stackc::check_str("inj.kdl", &topology(None), Path::new("."), None);
    assert!(
        base.ok(),
        "{}",
        stackc::diag::render_plain(&base.diags, &base.sources)
    );
    let mut accepted = Accepted {
        cases: Vec::new(),
        artifacts: Vec::new(),
    };
    let mut pending = Vec::new();
    let mut per_slot: BTreeMap<Slot, (usize, usize)> = BTreeMap::new();
    let fail = |i: usize, case: &Case, why: String| -> ! {
        panic!(
            "{emitter}: case {i} (seed {seed}, STACKC_TEST_SEED={seed} to reproduce): {:?} = {:?}\n{why}\n--- topology ---\n{}",
            case.slot,
            case.hostile,
            topology(Some(case))
        )
    };
    for i in 0..n {
        let slot = *rng.pick(slots);
        let case = Case {
            slot,
            hostile: hostile(&mut rng),
        };
        let entry = per_slot.entry(slot).or_default();
        entry.0 += 1;
        let alone = batched.is_none() || global(slot);
        match run_case(&case, if alone { which } else { &[] }) {
            Err(e) => fail(i, &case, e),
            Ok(Outcome::Rejected) => {}
            Ok(Outcome::Built(arts)) => {
                entry.1 += 1;
                if alone {
                    if let Err(e) = verify(&case, &arts) {
                        fail(i, &case, e);
                    }
                    if accepted.cases.len().is_multiple_of(200) {
                        accepted.artifacts.push(arts);
                    }
                } else {
                    pending.push((i, case.clone()));
                }
                accepted.cases.push(case);
            }
        }
    }
    if let Some(read) = batched {
        // Cases whose value would clash with a batch's own names, or with
        // another case's, go alone.
        let mut seen = BTreeSet::new();
        let (alone, pending): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(_, c)| {
            sample(std::slice::from_ref(c), 1).is_empty() || !seen.insert(c.expected())
        });
        for (i, case) in alone {
            match run_case(&case, which) {
                Ok(Outcome::Built(arts)) => {
                    if let Err(e) = verify(&case, &arts) {
                        fail(i, &case, e);
                    }
                }
                Ok(Outcome::Rejected) => fail(i, &case, "rejected on a second check".into()),
                Err(e) => fail(i, &case, e),
            }
        }
        for chunk in pending.chunks(250) {
            let cases: Vec<Case> = chunk.iter().map(|(_, c)| c.clone()).collect();
            let text = batch_topology(&cases);
            let c = stackc::check_str("batch.kdl", &text, Path::new("."), None);
            if !c.ok() {
                let errors: stackc::diag::Diagnostics = c
                    .diags
                    .iter()
                    .filter(|d| d.is_error())
                    .cloned()
                    .collect::<Vec<_>>()
                    .into();
                panic!(
                    "{emitter}: a batch of accepted cases does not check:\n{}",
                    stackc::diag::render_plain(&errors, &c.sources)
                );
            }
            let (arts, diags) = catch_unwind(AssertUnwindSafe(|| {
                targets::build(
                    c.topology.as_ref().expect("ok"),
                    c.graph.as_ref().expect("ok"),
                    which,
                )
            }))
            .unwrap_or_else(|_| panic!("{emitter}: a batch build panicked"));
            assert!(
                !diags.has_errors(),
                "{emitter}: a batch build fails:\n{}",
                stackc::diag::render_plain(&diags, &c.sources)
            );
            for (n, (i, case)) in chunk.iter().enumerate() {
                if let Err(e) = read(case, &arts, &batch_service(&cases, n)) {
                    fail(*i, case, format!("in a batch: {e}"));
                }
            }
            if accepted.artifacts.len() < 4 {
                accepted.artifacts.push(arts);
            }
        }
    }
    eprintln!(
        "{emitter}: {n} cases in {:.1?} (seed {seed}); accepted per slot: {}",
        start.elapsed(),
        per_slot
            .iter()
            .map(|(s, (all, ok))| format!("{s:?} {ok}/{all}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Every slot must have been exercised, and (but for names, images and
    // variables, which admit no hostile character) some hostile values
    // must have reached the emitter, or the test proves nothing.
    for s in slots {
        let (all, ok) = per_slot.get(s).copied().unwrap_or_default();
        assert!(all > 0, "{emitter}: slot {s:?} never generated");
        if !matches!(
            s,
            Image
                | ExporterImage
                | BalancerImage
                | PrometheusImage
                | Svc
                | RateKey
                | SecretEnv
                | PortName
        ) {
            assert!(ok > 0, "{emitter}: no case of slot {s:?} was accepted");
        }
    }
    accepted
}

/// A sample of at most `max` accepted cases with distinct values per slot,
/// none of which clashes with the names a batch gives the others.
fn sample(accepted: &[Case], max: usize) -> Vec<Case> {
    let numbered = |s: &str, p: &str| {
        s.strip_prefix(p)
            .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut seen = BTreeSet::new();
    let step = (accepted.len() / max).max(1);
    accepted
        .iter()
        .step_by(step)
        // Balancer, Prometheus and RBAC fields exist once per topology.
        .filter(|c| !global(c.slot))
        .filter(|c| !(c.slot == Svc && (numbered(&c.hostile, "s") || c.hostile == "api")))
        .filter(|c| !(c.slot == Route && numbered(&c.expected(), "/r")))
        .filter(|c| seen.insert((c.slot, c.hostile.clone())))
        .cloned()
        .collect()
}

fn build_text(text: &str, which: &[Target]) -> Vec<Artifact> {
    let c = stackc::check_str("batch.kdl", text, Path::new("."), None);
    assert!(
        c.ok(),
        "a batch of accepted cases does not check:\n{}",
        stackc::diag::render_plain(&c.diags, &c.sources)
    );
    let (arts, diags) = targets::build(
        c.topology.as_ref().expect("ok"),
        c.graph.as_ref().expect("ok"),
        which,
    );
    assert!(!diags.has_errors());
    arts
}

fn write_tree(dir: &Path, arts: &[Artifact]) {
    for a in arts {
        let p = dir.join(&a.path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, &a.content).expect("write");
    }
}

fn artifact<'a>(arts: &'a [Artifact], path: &str) -> Result<&'a str, String> {
    arts.iter()
        .find(|a| a.path == path)
        .map(|a| a.content.as_str())
        .ok_or_else(|| format!("no artifact {path}"))
}

fn yaml(text: &str) -> Result<Value, String> {
    stackc::yaml::from_str(text).map_err(|e| format!("YAML does not parse: {e}\n{text}"))
}

fn yaml_docs(text: &str) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for d in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(d).map_err(|e| format!("YAML does not parse: {e}"))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn str_at<'a>(v: &'a Value, what: &str) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("{what}: not a string: {v}"))
}

fn same(what: &str, got: &str, want: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

// ---------------------------------------------------------------- compose

/// What compose makes of a string value: `$$` is a literal `$`; any other
/// `$` interpolates (or is an error), which stackc must never let happen
/// to a user's value.
fn compose_interpolate(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            if chars.peek() == Some(&'$') {
                chars.next();
                out.push('$');
            } else {
                return Err(format!("compose interpolates {s:?}"));
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// The value of `slot` in a compose document, as compose reads it.
/// `secrets`: the variables compose was given (for `docker-compose config`
/// output, where secret references are resolved).
fn compose_value(doc: &Value, svc: &str, slot: Slot, resolved: bool) -> Result<String, String> {
    let s = &doc["services"][svc];
    if !s.is_object() {
        return Err(format!("no compose service {svc}"));
    }
    let raw = match slot {
        Image => str_at(&s["image"], "image")?,
        Cmd => str_at(&s["command"][0], "command[0]")?,
        Arg => str_at(&s["command"][2], "command[2]")?,
        Env => str_at(&s["environment"]["V"], "environment.V")?,
        Opts => str_at(&s["environment"]["JAVA_OPTS"], "environment.JAVA_OPTS")?,
        Label => str_at(&s["labels"]["team"], "labels.team")?,
        HealthCmd => {
            same(
                "healthcheck.test[0]",
                str_at(&s["healthcheck"]["test"][0], "test[0]")?,
                "CMD-SHELL",
            )?;
            str_at(&s["healthcheck"]["test"][1], "test[1]")?
        }
        VolPath => {
            // The short syntax, split as compose splits it.
            let m = str_at(&s["volumes"][0], "volumes[0]")?;
            let parts: Vec<&str> = m.split(':').collect();
            match parts.as_slice() {
                [name, path] | [name, path, "rw"] if *name == "data" => *path,
                _ => return Err(format!("volume {m:?} does not read as data:PATH")),
            }
        }
        SecretFile => {
            let id = format!("{svc}-t-key");
            str_at(&doc["secrets"][&id]["file"], "secrets.file")?
        }
        SecretEnv => {
            let v = str_at(&s["environment"]["S_PASSWORD"], "environment.S_PASSWORD")?;
            if resolved {
                // docker-compose config ran with each variable set to
                // `canary-<VAR>`.
                return v
                    .strip_prefix("canary-")
                    .map(str::to_string)
                    .ok_or_else(|| format!("secret resolved to {v:?}"));
            }
            // `${VAR:?message}`: the variable compose reads.
            let inner = v
                .strip_prefix("${")
                .and_then(|r| r.strip_suffix('}'))
                .ok_or_else(|| format!("secret reference {v:?}"))?;
            let (var, rest) = inner
                .split_once(":?")
                .ok_or_else(|| format!("secret reference {v:?} has no :?"))?;
            if rest.contains(['$', '}']) {
                return Err(format!("secret reference {v:?} nests"));
            }
            return Ok(var.to_string());
        }
        ExporterImage => str_at(
            &doc["services"][format!("{svc}-redis-exporter")]["image"],
            "exporter image",
        )?,
        BalancerImage => str_at(&doc["services"]["edge"]["image"], "balancer image")?,
        PrometheusImage => str_at(&doc["services"]["prometheus"]["image"], "prometheus image")?,
        other => return Err(format!("{other:?} is not a compose slot")),
    };
    compose_interpolate(raw)
}

const COMPOSE_SLOTS: &[Slot] = &[
    Image,
    Cmd,
    Arg,
    Env,
    SecretEnv,
    SecretFile,
    Label,
    Opts,
    VolPath,
    HealthCmd,
    ExporterImage,
    BalancerImage,
    PrometheusImage,
];

#[test]
fn compose_values_come_out_as_written_or_are_rejected() {
    let accepted = property(
        "compose",
        1,
        COMPOSE_SLOTS,
        &[Target::Compose],
        &|case, arts| {
            let doc = yaml(artifact(arts, targets::compose::PATH)?)?;
            let got = compose_value(&doc, "api", case.slot, false)?;
            same(&format!("{:?}", case.slot), &got, &case.expected())
        },
        None,
    );
    yaml_1_1_agrees(&accepted.artifacts, "compose");
    // The real consumer, on a batch: docker-compose (PyYAML, YAML 1.1)
    // reads, interpolates and prints the resolved configuration.
    let compose = tool("docker-compose");
    let batch = sample(&accepted.cases, 400);
    let arts = build_text(&batch_topology(&batch), &[Target::Compose]);
    let dir = tempfile::tempdir().expect("temp");
    write_tree(dir.path(), &arts);
    let mut cmd = Command::new(&compose);
    cmd.args(["config"]).current_dir(dir.path().join("compose"));
    cmd.env("INJ_PW", "canary-INJ_PW");
    for c in batch.iter().filter(|c| c.slot == SecretEnv) {
        cmd.env(&c.hostile, format!("canary-{}", c.hostile));
    }
    let out = cmd.output().expect("docker-compose runs");
    assert!(
        out.status.success(),
        "docker-compose config rejects a batch of accepted cases:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its output is YAML 1.1 as PyYAML writes it (`1e3` plain is a string
    // there, a number in YAML 1.2): PyYAML reads it back.
    let python = tool("python3");
    let mut py = Command::new(&python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    std::io::Write::write_all(&mut py.stdin.take().expect("stdin"), &out.stdout).expect("write");
    let json = py.wait_with_output().expect("python3 ends");
    assert!(json.status.success());
    let doc: Value = serde_json::from_slice(&json.stdout).expect("json");
    for (n, c) in batch.iter().enumerate() {
        let svc = batch_service(&batch, n);
        let got = compose_value(&doc, &svc, c.slot, true)
            .unwrap_or_else(|e| panic!("docker-compose config: {c:?}: {e}"));
        let want = match c.slot {
            // compose writes paths in normal form (`///a/./b` is `/a/b`),
            // which names the same file.
            SecretFile | VolPath => normal_path(&c.expected()),
            _ => c.expected(),
        };
        assert_eq!(got, want, "docker-compose config: {c:?}");
    }
    eprintln!("compose: docker-compose config read {} cases", batch.len());
}

/// A path as Python's os.path.abspath writes it (POSIX keeps exactly
/// two leading slashes).
fn normal_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let lead = if p.starts_with("//") && !p.starts_with("///") {
        "//"
    } else {
        "/"
    };
    format!("{lead}{}", parts.join("/"))
}

// ---------------------------------------------------------------- nginx

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Semi,
    Open,
    Close,
}

/// nginx's configuration tokenizer (ngx_conf_read_token): whitespace
/// separates words; `;`, `{` and `}` end them; `#` at the start of a word
/// comments to the end of the line; a word starting with a quote runs to
/// the matching quote and must be followed by whitespace, `;` or `{`;
/// a backslash protects the next character; `${` keeps the brace in the
/// word. In the word's text, `\"`, `\'` and `\\` lose the backslash and
/// `\t`, `\r`, `\n` become the control characters.
fn ngx_tokens(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let unescape = |raw: &[u8]| -> String {
        let mut w = Vec::with_capacity(raw.len());
        let mut k = 0;
        while k < raw.len() {
            if raw[k] == b'\\' && k + 1 < raw.len() {
                match raw[k + 1] {
                    b'"' | b'\'' | b'\\' => {
                        w.push(raw[k + 1]);
                        k += 2;
                        continue;
                    }
                    b't' => {
                        w.push(b'\t');
                        k += 2;
                        continue;
                    }
                    b'r' => {
                        w.push(b'\r');
                        k += 2;
                        continue;
                    }
                    b'n' => {
                        w.push(b'\n');
                        k += 2;
                        continue;
                    }
                    _ => {}
                }
            }
            w.push(raw[k]);
            k += 1;
        }
        String::from_utf8_lossy(&w).into_owned()
    };
    while i < b.len() {
        let c = b[i];
        if ws(c) {
            i += 1;
            continue;
        }
        match c {
            b';' => {
                out.push(Tok::Semi);
                i += 1;
            }
            b'{' => {
                out.push(Tok::Open);
                i += 1;
            }
            b'}' => {
                out.push(Tok::Close);
                i += 1;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' | b'\'' => {
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => return Err("unterminated quoted word".into()),
                        Some(b'\\') => j += 2,
                        Some(&q) if q == c => break,
                        Some(_) => j += 1,
                    }
                }
                out.push(Tok::Word(unescape(&b[i + 1..j])));
                i = j + 1;
                match b.get(i) {
                    None => {}
                    Some(&n) if ws(n) || n == b';' || n == b'{' => {}
                    Some(&n) => {
                        return Err(format!("unexpected {:?} after a quoted word", n as char));
                    }
                }
            }
            _ => {
                let mut j = i;
                let mut variable = false;
                while j < b.len() {
                    let ch = b[j];
                    if ch == b'{' && variable {
                        j += 1;
                        continue;
                    }
                    variable = false;
                    if ch == b'\\' {
                        j += 2;
                        continue;
                    }
                    if ch == b'$' {
                        variable = true;
                        j += 1;
                        continue;
                    }
                    if ws(ch) || ch == b';' || ch == b'{' {
                        break;
                    }
                    j += 1;
                }
                let j = j.min(b.len());
                out.push(Tok::Word(unescape(&b[i..j])));
                i = j;
            }
        }
    }
    Ok(out)
}

/// A directive: its words, and its block if it opens one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Directive {
    words: Vec<String>,
    block: Option<Vec<Directive>>,
}

pub(crate) fn ngx_parse(s: &str) -> Result<Vec<Directive>, String> {
    fn block(toks: &[Tok], i: &mut usize, nested: bool) -> Result<Vec<Directive>, String> {
        let mut out = Vec::new();
        let mut words = Vec::new();
        while *i < toks.len() {
            let t = &toks[*i];
            *i += 1;
            match t {
                Tok::Word(w) => words.push(w.clone()),
                Tok::Semi => {
                    if words.is_empty() {
                        return Err("empty directive".into());
                    }
                    out.push(Directive {
                        words: std::mem::take(&mut words),
                        block: None,
                    });
                }
                Tok::Open => {
                    if words.is_empty() {
                        return Err("block without a directive".into());
                    }
                    let inner = block(toks, i, true)?;
                    out.push(Directive {
                        words: std::mem::take(&mut words),
                        block: Some(inner),
                    });
                }
                Tok::Close => {
                    if !nested || !words.is_empty() {
                        return Err("unexpected }".into());
                    }
                    return Ok(out);
                }
            }
        }
        if nested || !words.is_empty() {
            return Err("unexpected end of file".into());
        }
        Ok(out)
    }
    let toks = ngx_tokens(s)?;
    let mut i = 0;
    block(&toks, &mut i, false)
}

/// The shape of a config: each directive's depth, name and number of
/// words. Injected directives, blocks or arguments change it.
fn ngx_shape(ds: &[Directive], depth: usize, out: &mut Vec<(usize, String, usize)>) {
    for d in ds {
        out.push((depth, d.words[0].clone(), d.words.len()));
        if let Some(b) = &d.block {
            ngx_shape(b, depth + 1, out);
        }
    }
}

fn ngx_find<'a>(ds: &'a [Directive], name: &str, out: &mut Vec<&'a Directive>) {
    for d in ds {
        if d.words[0] == name {
            out.push(d);
        }
        if let Some(b) = &d.block {
            ngx_find(b, name, out);
        }
    }
}

/// Verify an nginx config against the one built from the defaults: same
/// shape, and the slot's value where it belongs.
fn verify_nginx(conf: &str, baseline: &str, case: &Case) -> Result<(), String> {
    let tree = ngx_parse(conf).map_err(|e| format!("nginx would not read it: {e}\n{conf}"))?;
    let base = ngx_parse(baseline).expect("baseline parses");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    ngx_shape(&tree, 0, &mut a);
    ngx_shape(&base, 0, &mut b);
    if a != b {
        return Err(format!("the config's shape changed:\n{conf}"));
    }
    let want = case.expected();
    match case.slot {
        Route => {
            let mut locs = Vec::new();
            ngx_find(&tree, "location", &mut locs);
            let user: Vec<&Vec<String>> = locs
                .iter()
                .map(|d| &d.words)
                .filter(|w| w.len() == 2)
                .collect();
            if user.len() != 1 {
                return Err(format!("expected one route location, got {user:?}"));
            }
            same("location", &user[0][1], &want)
        }
        RateKey => {
            let mut zones = Vec::new();
            ngx_find(&tree, "limit_req_zone", &mut zones);
            // nginx's variable for a request header: lowercase, - as _.
            let var = format!("$http_{}", want.to_ascii_lowercase().replace('-', "_"));
            same("limit_req_zone key", &zones[0].words[1], &var)
        }
        Svc => {
            let mut ups = Vec::new();
            ngx_find(&tree, "upstream", &mut ups);
            let mut pass = Vec::new();
            ngx_find(&tree, "proxy_pass", &mut pass);
            let name = want.replace('-', "_");
            same("upstream", &ups[0].words[1], &name)?;
            same("proxy_pass", &pass[0].words[1], &format!("http://{name}"))
        }
        other => Err(format!("{other:?} is not an nginx slot")),
    }
}

#[test]
fn nginx_tokenizer_reads_what_nginx_reads() {
    let t = ngx_tokens("a \"b;c\" 'd\\'e' f\\;g ${h}i #x;\n} j#k;").expect("tokens");
    let w = |s: &str| Tok::Word(s.into());
    assert_eq!(
        t,
        vec![
            w("a"),
            w("b;c"),
            w("d'e"),
            w("f\\;g"),
            w("${h}i"),
            Tok::Close,
            w("j#k"),
            Tok::Semi
        ]
    );
    assert!(ngx_tokens("\"a\"b").is_err());
    assert!(ngx_parse("a { b; ").is_err());
    assert!(ngx_parse("a; }").is_err());
    // An injected directive changes the shape.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    ngx_shape(&ngx_parse("location /a { x; }").unwrap(), 0, &mut a);
    ngx_shape(
        &ngx_parse("location /a { return 200; } location /b { x; }").unwrap(),
        0,
        &mut b,
    );
    assert_ne!(a, b);
}

#[test]
fn nginx_values_come_out_as_written_or_are_rejected() {
    let baseline = build_text(&topology(None), &[Target::Nginx]);
    let baseline = artifact(&baseline, "nginx/edge.conf")
        .expect("conf")
        .to_string();
    let accepted = property(
        "nginx",
        2,
        &[Route, Route, Route, RateKey, Svc],
        &[Target::Nginx],
        &|case, arts| verify_nginx(artifact(arts, "nginx/edge.conf")?, &baseline, case),
        None,
    );
    // The real nginx, on one config with every accepted route.
    let nginx = tool("nginx");
    let batch: Vec<Case> = sample(&accepted.cases, 2_000)
        .into_iter()
        .filter(|c| c.slot == Route)
        .collect();
    assert!(!batch.is_empty());
    let arts = build_text(&batch_topology(&batch), &[Target::Nginx]);
    let dir = tempfile::tempdir().expect("temp");
    write_tree(dir.path(), &arts);
    let out = Command::new(&nginx)
        .arg("-t")
        .arg("-c")
        .arg(dir.path().join("nginx/edge.conf"))
        .output()
        .expect("nginx runs");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("test is successful"),
        "nginx -t rejects a batch of accepted routes:\n{text}"
    );
    // And the test tokenizer reads the same routes from it.
    let tree = ngx_parse(artifact(&arts, "nginx/edge.conf").expect("conf")).expect("parses");
    let mut locs = Vec::new();
    ngx_find(&tree, "location", &mut locs);
    let got: BTreeSet<String> = locs
        .iter()
        .filter(|d| d.words.len() == 2)
        .map(|d| d.words[1].clone())
        .collect();
    let want: BTreeSet<String> = batch.iter().map(Case::expected).collect();
    assert_eq!(got, want);
    eprintln!("nginx: nginx -t read {} routes", batch.len());
}

// ------------------------------------------------------------- prometheus

/// Read a PromQL (Go) double-quoted string at the start of `s`: its value
/// and the rest of `s`.
fn promql_string(s: &str) -> Result<(String, &str), String> {
    let body = s.strip_prefix('"').ok_or("no opening quote")?;
    let mut out = String::new();
    let mut it = body.char_indices();
    while let Some((i, c)) = it.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\n' => return Err("newline in a string".into()),
            '\\' => {
                let (_, e) = it.next().ok_or("dangling backslash")?;
                let hex = |it: &mut std::str::CharIndices, n: usize| -> Result<u32, String> {
                    let mut v = 0;
                    for _ in 0..n {
                        let (_, d) = it.next().ok_or("short escape")?;
                        v = v * 16 + d.to_digit(16).ok_or("bad hex digit")?;
                    }
                    Ok(v)
                };
                let ch = match e {
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'v' => '\u{b}',
                    '\\' => '\\',
                    '"' => '"',
                    'x' => char::from_u32(hex(&mut it, 2)?).ok_or("bad \\x")?,
                    'u' => char::from_u32(hex(&mut it, 4)?).ok_or("bad \\u")?,
                    'U' => char::from_u32(hex(&mut it, 8)?).ok_or("bad \\U")?,
                    other => return Err(format!("unknown escape \\{other}")),
                };
                out.push(ch);
            }
            c => out.push(c),
        }
    }
    Err("unterminated string".into())
}

/// `s` as a PromQL double-quoted string body.
fn promql_quote(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            // Prometheus' lexer takes a literal U+FFFD for bad UTF-8.
            c if c.is_control() || c == '\u{fffd}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The value of the one matcher of `up{LABEL="..."} == 0`.
fn up_matcher(expr: &str, label: &str) -> Result<String, String> {
    let rest = expr
        .strip_prefix(&format!("up{{{label}="))
        .ok_or_else(|| format!("expression {expr:?}"))?;
    let (v, rest) = promql_string(rest)?;
    if rest != "} == 0" {
        return Err(format!("expression {expr:?} continues with {rest:?}"));
    }
    Ok(v)
}

fn prometheus_value(
    arts: &[Artifact],
    slot: Slot,
    svc: &str,
    alert: &str,
) -> Result<String, String> {
    let user = || -> Result<Value, String> {
        let doc = yaml(artifact(arts, targets::prometheus::USER_RULES)?)?;
        doc["groups"][0]["rules"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["alert"] == alert))
            .cloned()
            .ok_or_else(|| format!("no user alert {alert}"))
    };
    let derived = |suffix: &str| -> Result<Value, String> {
        let doc = yaml(artifact(arts, targets::prometheus::DERIVED_RULES)?)?;
        let rules = doc["groups"][0]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let matching: Vec<Value> = rules
            .into_iter()
            .filter(|r| r["alert"].as_str().is_some_and(|a| a.ends_with(suffix)))
            .collect();
        match matching.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(format!("{} derived alerts *{suffix}", matching.len())),
        }
    };
    Ok(match slot {
        Expr => up_matcher(str_at(&user()?["expr"], "expr")?, "team")?,
        AlertLabel => str_at(&user()?["labels"]["team"], "label")?.to_string(),
        Annotation => str_at(&user()?["annotations"]["summary"], "annotation")?.to_string(),
        MetricsPath => {
            let doc = yaml(artifact(arts, targets::prometheus::CONFIG)?)?;
            let jobs = doc["scrape_configs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let job = jobs
                .iter()
                .find(|j| j["job_name"] == svc)
                .ok_or_else(|| format!("no scrape job {svc}"))?;
            str_at(&job["metrics_path"], "metrics_path")?.to_string()
        }
        Route => {
            let r = derived("UpstreamDown")?;
            let s = str_at(&r["annotations"]["summary"], "summary")?;
            s.rsplit_once(" for route ")
                .map(|(_, p)| p.to_string())
                .ok_or_else(|| format!("summary {s:?}"))?
        }
        Svc => up_matcher(str_at(&derived("InstanceDown")?["expr"], "expr")?, "job")?,
        other => return Err(format!("{other:?} is not a Prometheus slot")),
    })
}

const PROMETHEUS_SLOTS: &[Slot] = &[Expr, AlertLabel, Annotation, MetricsPath, Route, Svc];

#[test]
fn prometheus_values_come_out_as_written_or_are_rejected() {
    let accepted = property(
        "prometheus",
        3,
        PROMETHEUS_SLOTS,
        &[Target::Prometheus],
        &|case, arts| {
            let got = prometheus_value(arts, case.slot, "api", "A")?;
            same(&format!("{:?}", case.slot), &got, &case.expected())
        },
        None,
    );
    yaml_1_1_agrees(&accepted.artifacts, "prometheus");
    // The real promtool, on one batch: every accepted alert is one rule.
    let promtool = tool("promtool");
    let batch = sample(&accepted.cases, 400);
    let arts = build_text(&batch_topology(&batch), &[Target::Prometheus]);
    // Derived alerts of many services are checked per case above.
    for (n, c) in batch
        .iter()
        .enumerate()
        .filter(|(_, c)| !matches!(c.slot, Route | Svc))
    {
        let got = prometheus_value(&arts, c.slot, &batch_service(&batch, n), &format!("A{n}"))
            .unwrap_or_else(|e| panic!("batch: {c:?}: {e}"));
        assert_eq!(got, c.expected(), "batch: {c:?}");
    }
    let dir = tempfile::tempdir().expect("temp");
    write_tree(dir.path(), &arts);
    let prom = dir.path().join("prometheus");
    for args in [
        vec![
            "check",
            "rules",
            "rules/user.rules.yml",
            "rules/derived.rules.yml",
        ],
        vec!["check", "config", "prometheus.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&prom)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {} rejects a batch of accepted cases:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("prometheus: promtool read {} cases", batch.len());
}

// ------------------------------------------------------------- kubernetes

/// Kubernetes' `$(VAR)` expansion of command, args, env values and exec
/// probes (k8s.io/kubernetes third_party/forked/golang/expansion): `$$` is
/// a literal `$`; `$(NAME)` is replaced when NAME is defined, which any
/// name may be (envFrom brings in arbitrary keys), so any complete
/// reference counts as a change.
fn k8s_expand(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            match b[i + 1] {
                b'$' => {
                    out.push(b'$');
                    i += 2;
                }
                b'(' => {
                    if b[i + 2..].contains(&b')') {
                        return Err(format!("Kubernetes expands a $(...) reference in {s:?}"));
                    }
                    out.extend_from_slice(b"$(");
                    i += 2;
                }
                _ => {
                    out.push(b'$');
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8(out).expect("splits at ASCII only"))
}

fn k8s_objects(arts: &[Artifact]) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for a in arts.iter().filter(|a| a.path.ends_with(".yaml")) {
        out.extend(yaml_docs(&a.content).map_err(|e| format!("{}: {e}", a.path))?);
    }
    Ok(out)
}

fn k8s_find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value, String> {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .ok_or_else(|| format!("no {kind} {name}"))
}

fn k8s_value(objs: &[Value], slot: Slot, svc: &str) -> Result<String, String> {
    let deploy = || k8s_find(objs, "Deployment", svc);
    let container = || -> Result<Value, String> {
        let d = deploy()?;
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == svc))
            .cloned()
            .ok_or_else(|| format!("no container {svc}"))
    };
    let config = || k8s_find(objs, "ConfigMap", &format!("{svc}-env"));
    Ok(match slot {
        Image => str_at(&container()?["image"], "image")?.to_string(),
        Cmd => k8s_expand(str_at(&container()?["args"][0], "args[0]")?)?,
        Arg => k8s_expand(str_at(&container()?["args"][2], "args[2]")?)?,
        PortName => str_at(&container()?["ports"][0]["name"], "port name")?.to_string(),
        Env => str_at(&config()?["data"]["V"], "data.V")?.to_string(),
        Opts => str_at(&config()?["data"]["JAVA_OPTS"], "data.JAVA_OPTS")?.to_string(),
        HealthCmd => {
            let c = container()?;
            let mut got = Vec::new();
            for p in ["readinessProbe", "livenessProbe"] {
                let cmd = &c[p]["exec"]["command"];
                same("exec shell", str_at(&cmd[0], "exec")?, "/bin/sh")?;
                same("exec -c", str_at(&cmd[1], "exec")?, "-c")?;
                got.push(k8s_expand(str_at(&cmd[2], "exec")?)?);
            }
            if got[0] != got[1] {
                return Err(format!("probes differ: {got:?}"));
            }
            got.remove(0)
        }
        HealthPath => str_at(
            &container()?["readinessProbe"]["httpGet"]["path"],
            "httpGet.path",
        )?
        .to_string(),
        VolPath => {
            let c = container()?;
            c["volumeMounts"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["name"] == "data"))
                .and_then(|m| m["mountPath"].as_str())
                .ok_or("no mount of data")?
                .to_string()
        }
        Label => {
            let meta = &deploy()?["spec"]["template"]["metadata"];
            let l = &meta["labels"]["team"];
            let a = &meta["annotations"]["team"];
            match (l.as_str(), a.as_str()) {
                (Some(v), None) | (None, Some(v)) => v.to_string(),
                _ => return Err(format!("team label {l} / annotation {a}")),
            }
        }
        MetricsPath => str_at(
            &deploy()?["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"],
            "prometheus.io/path",
        )?
        .to_string(),
        ApiGroup => {
            let groups = &k8s_find(objs, "Role", "deployer")?["rules"][0]["apiGroups"];
            let groups = if groups.is_null() {
                Value::Array(Vec::new())
            } else {
                groups.clone()
            };
            serde_json::to_string(&groups).expect("json")
        }
        Route => {
            let cm = objs
                .iter()
                .find(|o| o["kind"] == "ConfigMap" && o["data"]["nginx.conf"].is_string())
                .ok_or("no nginx ConfigMap")?;
            let conf = str_at(&cm["data"]["nginx.conf"], "nginx.conf")?;
            let tree = ngx_parse(conf).map_err(|e| format!("nginx would not read it: {e}"))?;
            let mut locs = Vec::new();
            ngx_find(&tree, "location", &mut locs);
            let user: Vec<&Directive> = locs.into_iter().filter(|d| d.words.len() == 2).collect();
            match user.as_slice() {
                [one] => one.words[1].clone(),
                _ => return Err(format!("{} route locations", user.len())),
            }
        }
        other => return Err(format!("{other:?} is not a Kubernetes slot")),
    })
}

const K8S_SLOTS: &[Slot] = &[
    Image,
    Cmd,
    Arg,
    PortName,
    Env,
    Opts,
    HealthCmd,
    HealthPath,
    VolPath,
    Label,
    MetricsPath,
    ApiGroup,
    Route,
];

#[test]
fn kubernetes_values_come_out_as_written_or_are_rejected() {
    let baseline = build_text(&topology(None), &[Target::Kubernetes]);
    let base_objs = k8s_objects(&baseline).expect("baseline parses");
    let base_conf = |objs: &[Value]| -> Option<String> {
        objs.iter()
            .find(|o| o["kind"] == "ConfigMap" && o["data"]["nginx.conf"].is_string())
            .and_then(|o| o["data"]["nginx.conf"].as_str().map(str::to_string))
    };
    let base_conf = base_conf(&base_objs).expect("nginx.conf");
    let accepted = property(
        "kubernetes",
        4,
        K8S_SLOTS,
        &[Target::Kubernetes],
        &|case, arts| {
            // Only the file that holds the slot: parsing is most of the cost.
            let file = match case.slot {
                ApiGroup => "kubernetes/10-rbac.yaml",
                Route => "kubernetes/40-balancer-edge.yaml",
                _ => "kubernetes/30-service-api.yaml",
            };
            let objs = yaml_docs(artifact(arts, file)?)?;
            if case.slot == Route {
                let conf = objs
                    .iter()
                    .find(|o| o["kind"] == "ConfigMap" && o["data"]["nginx.conf"].is_string())
                    .and_then(|o| o["data"]["nginx.conf"].as_str())
                    .ok_or("no nginx.conf")?;
                verify_nginx(conf, &base_conf, case)?;
            }
            let got = k8s_value(&objs, case.slot, "api")?;
            same(&format!("{:?}", case.slot), &got, &case.expected())
        },
        Some(&|case, arts, svc| {
            if case.slot == Route {
                // Every service of the batch has a route: one location
                // each, and this one's path in exactly one of them.
                let objs = yaml_docs(artifact(arts, "kubernetes/40-balancer-edge.yaml")?)?;
                let conf = objs
                    .iter()
                    .find_map(|o| o["data"]["nginx.conf"].as_str())
                    .ok_or("no nginx.conf")?;
                let tree = ngx_parse(conf).map_err(|e| format!("nginx would not read it: {e}"))?;
                let mut locs = Vec::new();
                ngx_find(&tree, "location", &mut locs);
                let routes: Vec<&Directive> =
                    locs.into_iter().filter(|d| d.words.len() == 2).collect();
                let services = arts
                    .iter()
                    .filter(|a| a.path.starts_with("kubernetes/30-service-"))
                    .count();
                if routes.len() != services {
                    return Err(format!(
                        "{} route locations for {services} services",
                        routes.len()
                    ));
                }
                let want = case.expected();
                let hits = routes.iter().filter(|d| d.words[1] == want).count();
                return if hits == 1 {
                    Ok(())
                } else {
                    Err(format!("{hits} locations {want:?}"))
                };
            }
            let objs = yaml_docs(artifact(
                arts,
                &format!("kubernetes/30-service-{svc}.yaml"),
            )?)?;
            let got = k8s_value(&objs, case.slot, svc)?;
            same(&format!("{:?}", case.slot), &got, &case.expected())
        }),
    );
    yaml_1_1_agrees(&accepted.artifacts, "kubernetes");
}

/// PyYAML (YAML 1.1, as docker-compose v1 and many Kubernetes tools read)
/// must read every sampled artifact exactly as serde_yaml does.
fn yaml_1_1_agrees(sets: &[Vec<Artifact>], emitter: &str) {
    let python = tool("python3");
    let dir = tempfile::tempdir().expect("temp");
    let mut files = Vec::new();
    for (n, arts) in sets.iter().enumerate() {
        for a in arts
            .iter()
            .filter(|a| a.path.ends_with(".yaml") || a.path.ends_with(".yml"))
        {
            let p = dir.path().join(format!("{n}")).join(&a.path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, &a.content).expect("write");
            files.push((p, a.content.clone()));
        }
    }
    assert!(!files.is_empty(), "{emitter}: no YAML to compare");
    let list = dir.path().join("files.txt");
    std::fs::write(
        &list,
        files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .expect("write");
    let script = r#"
import json, sys, yaml
for path in open(sys.argv[1], encoding="utf-8").read().split("\n"):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    print(json.dumps(docs, default=lambda o: "!!python " + repr(o)))
"#;
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&list)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "PyYAML cannot read an artifact:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), files.len());
    for ((path, content), line) in files.iter().zip(lines) {
        let py: Value = serde_json::from_str(line).expect("json");
        let ours = Value::Array(yaml_docs(content).expect("parses"));
        assert!(
            py == ours,
            "{emitter}: PyYAML (YAML 1.1) reads {} differently",
            path.display()
        );
    }
    eprintln!("{emitter}: PyYAML agreed on {} files", files.len());
}

// ------------------------------------------------------------------ shell

/// A word quoted for sh, in one of two styles.
fn sh_word(w: &str, double: bool) -> String {
    if double {
        let mut out = String::from("\"");
        for c in w.chars() {
            if matches!(c, '\\' | '$' | '`' | '"') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// A health command that prints its words, for hostile words.
fn printing_command(rng: &mut Rng) -> (String, Vec<String>) {
    let words: Vec<String> = (0..1 + rng.below(3)).map(|_| hostile(rng)).collect();
    let quoted: Vec<String> = words.iter().map(|w| sh_word(w, rng.one_in(2))).collect();
    (format!("printf '%s\\001' {}", quoted.join(" ")), words)
}

/// The shell commands every consumer runs for a batch of health checks,
/// by service: compose (`CMD-SHELL`, after interpolation), stackc's own
/// engine apply (the same definition, sent through the Docker API), and
/// Kubernetes (exec `/bin/sh -c`, after `$(VAR)` expansion).
fn shell_commands(cases: &[Case]) -> Result<Vec<Vec<(&'static str, String)>>, String> {
    let text = batch_topology(cases);
    let c = stackc::check_str("batch.kdl", &text, Path::new("."), None);
    if !c.ok() {
        return Err(stackc::diag::render_plain(&c.diags, &c.sources));
    }
    let (t, g) = (
        c.topology.as_ref().expect("ok"),
        c.graph.as_ref().expect("ok"),
    );
    let (arts, _) = targets::build(t, g, &[Target::Compose, Target::Kubernetes]);
    let compose = yaml(artifact(&arts, targets::compose::PATH)?)?;
    let d = stackc::plan::desired(
        t,
        g,
        &stackc::profile::Profile::local(),
        Path::new("/state"),
    );
    let mut out = Vec::new();
    for n in 0..cases.len() {
        let svc = batch_service(cases, n);
        let mut cmds = vec![(
            "compose",
            compose_interpolate(str_at(
                &compose["services"][&svc]["healthcheck"]["test"][1],
                "test[1]",
            )?)?,
        )];
        let engine = d
            .containers
            .iter()
            .find(|c| c.instance == svc)
            .and_then(|c| c.health.as_ref())
            .ok_or_else(|| format!("no engine health check for {svc}"))?;
        same("engine test[0]", &engine.test[0], "CMD-SHELL")?;
        cmds.push(("engine", engine.test[1].clone()));
        let objs = yaml_docs(artifact(
            &arts,
            &format!("kubernetes/30-service-{svc}.yaml"),
        )?)?;
        if let Some(exec) = k8s_find(&objs, "Deployment", &svc)?["spec"]["template"]["spec"]
            ["containers"][0]["readinessProbe"]["exec"]["command"][2]
            .as_str()
        {
            cmds.push(("kubernetes", k8s_expand(exec)?));
        }
        out.push(cmds);
    }
    Ok(out)
}

#[test]
fn health_commands_run_with_the_words_written_or_are_rejected() {
    let sh = tool("sh");
    let n = cases_per_emitter();
    let seed = seed(5);
    let mut rng = Rng::new(seed);
    let start = std::time::Instant::now();
    // Each accepted case with the words its command must run with.
    let mut cases: Vec<(Case, Vec<String>)> = Vec::new();
    let mut accepted = [0usize; 2];
    for i in 0..n {
        let (case, words) = if rng.one_in(3) {
            let h = hostile(&mut rng);
            let url = format!("http://127.0.0.1:8080/{h}");
            let words = ["wget", "-q", "-O", "/dev/null", &url]
                .map(str::to_string)
                .to_vec();
            (
                Case {
                    slot: HealthPath,
                    hostile: h,
                },
                words,
            )
        } else {
            let (cmd, words) = printing_command(&mut rng);
            (
                Case {
                    slot: HealthCmd,
                    hostile: cmd,
                },
                words,
            )
        };
        match run_case(&case, &[]) {
            Err(e) => panic!(
                "shell: case {i} (STACKC_TEST_SEED={seed}): {:?} = {:?}\n{e}",
                case.slot, case.hostile
            ),
            Ok(Outcome::Rejected) => {}
            Ok(Outcome::Built(..)) => {
                accepted[usize::from(case.slot == HealthPath)] += 1;
                cases.push((case, words));
            }
        }
    }
    assert!(accepted[0] > 0 && accepted[1] > 0, "{accepted:?}");
    // (consumer, command, expected words, case)
    let mut runs: Vec<(&str, String, &[String], &Case)> = Vec::new();
    for chunk in cases.chunks(250) {
        let batch: Vec<Case> = chunk.iter().map(|(c, _)| c.clone()).collect();
        let cmds = shell_commands(&batch).unwrap_or_else(|e| panic!("shell: a batch: {e}"));
        for ((case, words), cmds) in chunk.iter().zip(cmds) {
            for (consumer, cmd) in cmds {
                runs.push((consumer, cmd, words, case));
            }
        }
    }
    // One sh script runs every command with `sh -c`, as the consumers do;
    // `wget` is a stand-in that prints its words.
    let dir = tempfile::tempdir().expect("temp");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let wget = bin.join("wget");
    std::fs::write(&wget, "#!/bin/sh\nprintf '%s\\001' wget \"$@\"\n").expect("write");
    Command::new("chmod")
        .arg("+x")
        .arg(&wget)
        .status()
        .expect("chmod");
    // Consumers that agree on a command run it once.
    let distinct: Vec<&String> = runs
        .iter()
        .map(|(_, cmd, _, _)| cmd)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut script = format!(
        "PATH={}:$PATH\n",
        sh_word(&bin.display().to_string(), false)
    );
    for cmd in &distinct {
        script.push_str(&format!(
            "sh -c {} 2>&1; printf '\\002'\n",
            sh_word(cmd, false)
        ));
    }
    let path = dir.path().join("run.sh");
    std::fs::write(&path, script).expect("write");
    let out = Command::new(&sh).arg(&path).output().expect("sh runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let results: Vec<&str> = text.split('\u{2}').collect();
    assert_eq!(results.len(), distinct.len() + 1, "{text}");
    let results: BTreeMap<&String, &str> = distinct.iter().copied().zip(results).collect();
    for (consumer, cmd, words, case) in &runs {
        let got = results[cmd];
        let got: Vec<&str> = got.split('\u{1}').collect();
        let (last, got) = got.split_last().expect("one");
        assert!(
            last.is_empty() && got == *words,
            "shell ({consumer}): {:?} = {:?}\n`sh -c {cmd:?}` ran with {got:?}{last:?}, want {words:?}",
            case.slot,
            case.hostile
        );
    }
    eprintln!(
        "shell: {n} cases in {:.1?} (seed {seed}); {} consumer commands, {} distinct ran; {}+{} cases accepted",
        start.elapsed(),
        runs.len(),
        distinct.len(),
        accepted[0],
        accepted[1]
    );
}

// ------------------------------------------------------------ regressions

/// The defaults with one line of the service replaced or added.
fn with_service_line(find: &str, replace: &str) -> String {
    let t = topology(None);
    assert!(t.contains(find), "{find}");
    t.replacen(find, replace, 1)
}

fn codes(text: &str) -> Vec<stackc::diag::Code> {
    let c = stackc::check_str("reg.kdl", text, Path::new("."), None);
    c.diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.code)
        .collect()
}

fn build_all(text: &str) -> Vec<Artifact> {
    build_text(text, &Target::ALL)
}

#[test]
fn regression_secret_env_reference_must_be_a_variable_name() {
    use stackc::diag::Code;
    // `${A:-x}:?...}` would let compose fall back to "x" for a secret.
    for var in ["A:-x}", "A}", "", "A B", "$X"] {
        let text = with_service_line(
            "from=\"env:INJ_PW\"",
            &format!("from={}", kdl_str(&format!("env:{var}"))),
        );
        assert!(codes(&text).contains(&Code::InvalidName), "{var:?}");
    }
}

#[test]
fn regression_port_names_are_kubernetes_port_names() {
    use stackc::diag::Code;
    for bad in [
        "Web",
        "a_b",
        "http-api-gateway-x",
        "-a",
        "a--b",
        "80",
        "a\nb",
    ] {
        let text = with_service_line("name=\"http\"", &format!("name={}", kdl_str(bad)));
        assert!(codes(&text).contains(&Code::InvalidName), "{bad:?}");
    }
    let text = with_service_line("name=\"http\"", "name=\"grpc-api\"");
    assert!(codes(&text).is_empty());
}

#[test]
fn regression_volume_paths_hold_no_colon() {
    use stackc::diag::Code;
    let text = with_service_line("path=\"/data\"", "path=\"/data:ro\"");
    assert!(codes(&text).contains(&Code::UnsafeValue));
}

#[test]
fn regression_alert_templates_are_ones_prometheus_always_expands() {
    use stackc::diag::Code;
    for bad in [
        "{{",
        "{{ }}",
        "{{ .Foo }}",
        "{{ $x }}",
        "{{ end }}",
        "a {{ $value | bogus }}",
    ] {
        let text = topology(None).replace(
            "annotation \"summary\" \"s\"",
            &format!("annotation \"summary\" {}", kdl_str(bad)),
        );
        assert!(codes(&text).contains(&Code::UnsafeValue), "{bad:?}");
    }
    for good in [
        "}} {{ $labels.instance }} is down",
        "{{- $value | humanizePercentage -}}",
        "{{ .Labels.job }}",
    ] {
        let text = topology(None).replace(
            "annotation \"summary\" \"s\"",
            &format!("annotation \"summary\" {}", kdl_str(good)),
        );
        assert!(codes(&text).is_empty(), "{good:?}");
    }
}

#[test]
fn regression_line_separators_and_non_characters_survive_yaml() {
    let v = "a\u{2028}b \u{2029} c\u{fffe}\u{ffff}";
    let text = topology(None).replace(
        "annotation \"summary\" \"s\"",
        &format!("annotation \"summary\" {}", kdl_str(v)),
    );
    let arts = build_all(&text);
    assert_eq!(
        prometheus_value(&arts, Annotation, "api", "A").expect("reads"),
        v
    );
}

#[test]
fn regression_kubernetes_does_not_expand_dollar_in_commands_and_probes() {
    let text = with_service_line("command \"serve\"", "command \"echo $(V) $$ $X\"")
        .replace("health cmd=\"true\"", "health cmd=\"test -n $(V)$HOME\"");
    let arts = build_all(&text);
    let objs =
        yaml_docs(artifact(&arts, "kubernetes/30-service-api.yaml").expect("file")).expect("yaml");
    assert_eq!(
        k8s_value(&objs, Cmd, "api").expect("cmd"),
        "echo $(V) $$ $X"
    );
    assert_eq!(
        k8s_value(&objs, HealthCmd, "api").expect("probe"),
        "test -n $(V)$HOME"
    );
}

#[test]
fn regression_http_health_paths_are_quoted_for_the_shell() {
    let text = topology(None).replace("health cmd=\"true\"", "health http=\"/a&b(c)*\" port=8080");
    let arts = build_all(&text);
    let doc = yaml(artifact(&arts, targets::compose::PATH).expect("compose")).expect("yaml");
    assert_eq!(
        doc["services"]["api"]["healthcheck"]["test"][1],
        "wget -q -O /dev/null 'http://127.0.0.1:8080/a&b(c)*' || exit 1"
    );
}

#[test]
fn regression_the_engine_runs_the_health_command_compose_runs() {
    let cmd = "test \"$HOME\" != '$$'";
    let text = topology(None).replace(
        "health cmd=\"true\"",
        &format!("health cmd={}", kdl_str(cmd)),
    );
    let c = stackc::check_str("reg.kdl", &text, Path::new("."), None);
    assert!(c.ok());
    let d = stackc::plan::desired(
        c.topology.as_ref().expect("ok"),
        c.graph.as_ref().expect("ok"),
        &stackc::profile::Profile::local(),
        Path::new("/state"),
    );
    let api = d
        .containers
        .iter()
        .find(|c| c.instance == "api")
        .expect("api");
    assert_eq!(
        api.health.as_ref().expect("health").test,
        ["CMD-SHELL", cmd]
    );
}

#[test]
fn regression_a_rate_limit_without_burst_is_valid_nginx() {
    let arts = build_all(&topology(None));
    for (path, conf) in [
        (
            "nginx/edge.conf",
            artifact(&arts, "nginx/edge.conf")
                .expect("conf")
                .to_string(),
        ),
        ("kubernetes", {
            let objs =
                yaml_docs(artifact(&arts, "kubernetes/40-balancer-edge.yaml").expect("file"))
                    .expect("yaml");
            objs.iter()
                .find_map(|o| o["data"]["nginx.conf"].as_str().map(str::to_string))
                .expect("conf")
        }),
    ] {
        let tree = ngx_parse(&conf).expect("parses");
        let mut l = Vec::new();
        ngx_find(&tree, "limit_req", &mut l);
        assert_eq!(l[0].words, ["limit_req", "zone=general"], "{path}");
    }
}
