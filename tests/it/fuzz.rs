//! Fuzzing on the stable toolchain: a structure-aware mutational fuzzer
//! over the seed corpus (`examples/*/stack.kdl`, `stacks/*.kdl`,
//! `tests/fixtures/**/*.kdl`), one test per target, each running for a
//! time budget:
//!
//! - `kdl`: text -> `check_str`: never a panic; a topology that is not ok
//!   has an error; diagnostics render;
//! - `emit`: every topology that checks clean -> every target: no panic,
//!   no build error, YAML that parses, nginx configs that tokenize;
//! - `plan`: a clean topology's desired state against random live states
//!   (containers missing, stopped, foreign, with other hashes and specs,
//!   expired standbys; networks and volumes owned or not): no panic, every
//!   desired container planned exactly once or named in an error, and a
//!   live state that matches plans no change;
//! - `drift`: a clean topology's desired state against live containers:
//!   none reported when they run as desired, every changed one reported
//!   otherwise (random images, memory, restart policies, stopped or
//!   missing containers).
//!
//! Mutations: byte edits, pieces that mean something to KDL or a consumer
//! (`PIECES`), quoted strings replaced by hostile text, numbers replaced
//! by boundary values, lines spliced in from other seeds, nodes
//! duplicated. A crashing input is saved under
//! `tests/fuzz-regressions/<target>/` and the test fails;
//! [`fuzz_regressions_replay`] replays every saved input on every run.
//!
//! Budget: `FUZZ_SECONDS` seconds in all (default 60, split evenly over
//! the four targets); `STACKC_FUZZ_SEED` fixes the seed (default: from
//! the clock, printed). `bash scripts/fuzz` runs longer, in release mode.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stackc::plan::{Observed, ObservedContainer, ObservedObject};
use stackc::targets::{self, Target};

use crate::hostile_text::{PIECES, Rng, hostile, kdl_str};
use crate::support::root;

/// The corpus: every seed file with the directory its imports resolve in.
fn corpus() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != "generated") {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "kdl") {
                out.push(p);
            }
        }
    }
    let r = root();
    let mut files = Vec::new();
    for d in [
        "examples",
        "stacks",
        "tests/fixtures",
        "tests/fuzz-regressions",
    ] {
        walk(&r.join(d), &mut files);
    }
    files.sort();
    let out: Vec<(PathBuf, String)> = files
        .into_iter()
        .filter_map(|p| Some((p.clone(), std::fs::read_to_string(&p).ok()?)))
        .collect();
    assert!(out.len() >= 20, "seed corpus too small: {}", out.len());
    out
}

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "3",
    "63",
    "64",
    "100",
    "101",
    "255",
    "256",
    "1024",
    "65535",
    "65536",
    "10000",
    "10001",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "1e308",
    "-0",
    "0.0",
    "1.5",
    "#nan",
    "#inf",
    "#-inf",
    "0x10",
    "0o7",
    "0b1",
    "1_000",
];

/// One mutation of `text`, using the other seeds for splices.
fn mutate(rng: &mut Rng, text: &str, seeds: &[(PathBuf, String)]) -> String {
    let mut s = text.to_string();
    for _ in 0..1 + rng.below(4) {
        s = mutate_once(rng, &s, seeds);
    }
    s
}

fn char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate_once(rng: &mut Rng, s: &str, seeds: &[(PathBuf, String)]) -> String {
    let len = s.len();
    let at = char_boundary(s, rng.below(len + 1));
    match rng.below(10) {
        // Delete a range.
        0 => {
            let end = char_boundary(s, at + rng.below(32));
            format!("{}{}", &s[..at], &s[end..])
        }
        // Insert a meaningful piece or random characters.
        1 => {
            let ins = if rng.one_in(2) {
                rng.pick(PIECES).to_string()
            } else {
                hostile(rng)
            };
            format!("{}{ins}{}", &s[..at], &s[at..])
        }
        // Replace a quoted string with hostile text.
        2 | 3 => {
            let quotes: Vec<usize> = s.match_indices('"').map(|(i, _)| i).collect();
            if quotes.len() < 2 {
                return s.to_string();
            }
            let k = rng.below(quotes.len() - 1);
            let (a, b) = (quotes[k], quotes[k + 1]);
            format!("{}{}{}", &s[..a], kdl_str(&hostile(rng)), &s[b + 1..])
        }
        // Replace a number with a boundary value.
        4 => {
            let digits: Vec<usize> = s
                .char_indices()
                .filter(|(i, c)| {
                    c.is_ascii_digit() && (*i == 0 || !s.as_bytes()[i - 1].is_ascii_digit())
                })
                .map(|(i, _)| i)
                .collect();
            if digits.is_empty() {
                return s.to_string();
            }
            let a = *rng.pick(&digits);
            let b = a + s[a..].bytes().take_while(u8::is_ascii_digit).count();
            format!("{}{}{}", &s[..a], rng.pick(NUMBERS), &s[b..])
        }
        // Splice in lines from another seed.
        5 | 6 => {
            let other = &rng.pick(seeds).1;
            let lines: Vec<&str> = other.lines().collect();
            if lines.is_empty() {
                return s.to_string();
            }
            let a = rng.below(lines.len());
            let b = (a + 1 + rng.below(8)).min(lines.len());
            let line_at = s[..at].rfind('\n').map_or(0, |i| i + 1);
            format!(
                "{}{}\n{}",
                &s[..line_at],
                lines[a..b].join("\n"),
                &s[line_at..]
            )
        }
        // Duplicate a line (a second `image`, `health`, port, ...).
        7 => {
            let a = s[..at].rfind('\n').map_or(0, |i| i + 1);
            let b = s[at..].find('\n').map_or(len, |i| at + i + 1);
            format!("{}{}{}", &s[..b], &s[a..b], &s[b..])
        }
        // Swap two lines.
        8 => {
            let mut lines: Vec<&str> = s.lines().collect();
            if lines.len() > 1 {
                let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                lines.swap(a, b);
            }
            lines.join("\n")
        }
        // Flip a byte (as text, so the input stays UTF-8).
        _ => {
            let c = char::from(rng.below(128) as u8);
            let end = char_boundary(s, at + 1);
            format!("{}{c}{}", &s[..at], &s[end..])
        }
    }
}

/// A target: what it does with one input, failing with a message on a
/// broken oracle (a panic is caught by the driver).
/// `Ok(true)` when the input checked clean.
type Target_ = fn(&str, &Path, &mut Rng) -> Result<bool, String>;

fn check(text: &str, base: &Path) -> stackc::Checked {
    stackc::check_str("fuzz.kdl", text, base, None)
}

fn target_kdl(text: &str, base: &Path, _: &mut Rng) -> Result<bool, String> {
    let c = check(text, base);
    if !c.ok() && !c.diags.has_errors() {
        return Err("not ok, yet no error".into());
    }
    let _ = stackc::diag::render_plain(&c.diags, &c.sources);
    Ok(c.ok())
}

fn target_emit(text: &str, base: &Path, _: &mut Rng) -> Result<bool, String> {
    let c = check(text, base);
    if !c.ok() {
        return Ok(false);
    }
    let (arts, diags) = targets::build(
        c.topology.as_ref().expect("ok"),
        c.graph.as_ref().expect("ok"),
        &Target::ALL,
    );
    if diags.has_errors() {
        return Err(format!(
            "checks clean, yet the build fails:\n{}",
            stackc::diag::render_plain(&diags, &c.sources)
        ));
    }
    for a in &arts {
        if a.path.ends_with(".yml") || a.path.ends_with(".yaml") {
            use serde::Deserialize;
            for d in serde_yaml::Deserializer::from_str(&a.content) {
                serde_json::Value::deserialize(d)
                    .map_err(|e| format!("{}: YAML does not parse: {e}", a.path))?;
            }
        } else if a.path.ends_with(".json") {
            serde_json::from_str::<serde_json::Value>(&a.content)
                .map_err(|e| format!("{}: JSON does not parse: {e}", a.path))?;
        } else if a.path.ends_with(".conf") {
            crate::injection::ngx_parse(&a.content)
                .map_err(|e| format!("{}: nginx would not read it: {e}", a.path))?;
        }
    }
    Ok(true)
}

/// A random live state derived from the desired one.
fn observed(d: &stackc::plan::Desired, rng: &mut Rng) -> Observed {
    let stack = d.stack.clone();
    let owned = |rng: &mut Rng| {
        let mut l = std::collections::BTreeMap::new();
        if !rng.one_in(6) {
            let s = if rng.one_in(8) {
                "other".to_string()
            } else {
                stack.clone()
            };
            l.insert(stackc::plan::LABEL_STACK.to_string(), s);
        }
        if !rng.one_in(6) {
            l.insert(stackc::plan::LABEL_OWNER.to_string(), "stackc".to_string());
        }
        l
    };
    let mut o = Observed {
        now: rng.next_u64() % 4_000_000_000,
        ..Default::default()
    };
    if !rng.one_in(4) {
        o.networks.push(ObservedObject {
            name: d.network.name.clone(),
            labels: owned(rng),
        });
    }
    for v in &d.volumes {
        if rng.one_in(2) {
            o.volumes.push(ObservedObject {
                name: v.clone(),
                labels: owned(rng),
            });
        }
    }
    for c in &d.containers {
        if rng.one_in(3) {
            continue;
        }
        let mut labels = owned(rng);
        let hash = match rng.below(4) {
            0 => hostile(rng),
            _ => c.hash(),
        };
        labels.insert(stackc::plan::LABEL_HASH.to_string(), hash);
        match rng.below(4) {
            0 => {}
            1 => {
                labels.insert(stackc::plan::LABEL_SPEC.to_string(), hostile(rng));
            }
            _ => {
                let mut spec = serde_json::to_value(c).expect("spec");
                if rng.one_in(2)
                    && let Some(m) = spec.as_object_mut()
                {
                    m.insert("image".into(), serde_json::json!(hostile(rng)));
                }
                labels.insert(stackc::plan::LABEL_SPEC.to_string(), spec.to_string());
            }
        }
        o.containers.push(ObservedContainer {
            name: if rng.one_in(10) {
                hostile(rng)
            } else {
                c.name.clone()
            },
            id: format!("{:x}", rng.next_u64()),
            running: !rng.one_in(4),
            health: None,
            labels,
            image: c.image.clone(),
        });
    }
    // Orphans and kept previous versions.
    for _ in 0..rng.below(3) {
        let mut labels = owned(rng);
        if rng.one_in(2) {
            labels.insert(stackc::plan::LABEL_TRACK.into(), "previous".into());
            labels.insert(
                stackc::plan::LABEL_KEEP_UNTIL.into(),
                if rng.one_in(3) {
                    hostile(rng)
                } else {
                    (rng.next_u64() % 4_000_000_000).to_string()
                },
            );
        }
        o.containers.push(ObservedContainer {
            name: format!("{stack}-{}", hostile(rng)),
            id: format!("{:x}", rng.next_u64()),
            running: rng.one_in(2),
            health: None,
            labels,
            image: hostile(rng),
        });
    }
    o
}

fn target_plan(text: &str, base: &Path, rng: &mut Rng) -> Result<bool, String> {
    let c = check(text, base);
    if !c.ok() {
        return Ok(false);
    }
    let d = stackc::plan::desired(
        c.topology.as_ref().expect("ok"),
        c.graph.as_ref().expect("ok"),
        &stackc::profile::Profile::local(),
        Path::new("/state"),
    );
    for _ in 0..4 {
        let o = observed(&d, rng);
        let prune = rng.one_in(2);
        let plan = stackc::plan::diff(&d, &o, prune);
        for spec in &d.containers {
            let planned = plan
                .changes
                .iter()
                .filter(|ch| ch.kind == stackc::plan::Kind::Container && ch.name == spec.name)
                .count();
            let refused = plan
                .errors
                .iter()
                .any(|e| e.contains(&format!("container `{}`", spec.name)));
            if planned + usize::from(refused) != 1 {
                return Err(format!(
                    "container {} planned {planned} times (refused: {refused})",
                    spec.name
                ));
            }
        }
        if plan.fingerprint != o.fingerprint() {
            return Err("the fingerprint is not the observed state's".into());
        }
        let _ = stackc::plan::render(&plan);
    }
    // A live state that is exactly the desired one plans no change.
    let exact = Observed {
        containers: d
            .containers
            .iter()
            .map(|c| ObservedContainer {
                name: c.name.clone(),
                id: c.name.clone(),
                running: true,
                health: None,
                labels: [
                    (stackc::plan::LABEL_STACK, d.stack.clone()),
                    (stackc::plan::LABEL_OWNER, "stackc".to_string()),
                    (stackc::plan::LABEL_HASH, c.hash()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
                image: c.image.clone(),
            })
            .collect(),
        networks: vec![ObservedObject {
            name: d.network.name.clone(),
            labels: [
                (stackc::plan::LABEL_STACK.to_string(), d.stack.clone()),
                (stackc::plan::LABEL_OWNER.to_string(), "stackc".to_string()),
            ]
            .into(),
        }],
        volumes: d
            .volumes
            .iter()
            .map(|v| ObservedObject {
                name: v.clone(),
                labels: [
                    (stackc::plan::LABEL_STACK.to_string(), d.stack.clone()),
                    (stackc::plan::LABEL_OWNER.to_string(), "stackc".to_string()),
                ]
                .into(),
            })
            .collect(),
        now: 0,
    };
    let plan = stackc::plan::diff(&d, &exact, true);
    if plan.has_changes() || !plan.errors.is_empty() {
        return Err(format!(
            "the desired state itself plans changes:\n{}",
            stackc::plan::render(&plan)
        ));
    }
    Ok(true)
}

/// The live settings of containers that run exactly as desired.
fn live_of(
    d: &stackc::plan::Desired,
) -> std::collections::HashMap<String, stackc::apply::docker::Live> {
    d.containers
        .iter()
        .map(|c| {
            let env = c
                .env
                .iter()
                .map(|(k, v)| match v {
                    stackc::plan::EnvValue::Literal(v) => format!("{k}={v}"),
                    stackc::plan::EnvValue::Secret(_) => format!("{k}=secret-value"),
                })
                .collect();
            let live = stackc::apply::docker::Live {
                running: true,
                image: c.image.clone(),
                env,
                memory: c.memory,
                nano_cpus: c.nano_cpus,
                restart: Some(c.restart.clone()),
                labels: c.labels.clone(),
            };
            (c.name.clone(), live)
        })
        .collect()
}

fn target_drift(text: &str, base: &Path, rng: &mut Rng) -> Result<bool, String> {
    let c = check(text, base);
    if !c.ok() {
        return Ok(false);
    }
    let t = c.topology.as_ref().expect("ok");
    let d = stackc::plan::desired(
        t,
        c.graph.as_ref().expect("ok"),
        &stackc::profile::Profile::local(),
        Path::new("/state"),
    );
    let exact = live_of(&d);
    let everything = Observed {
        networks: vec![ObservedObject {
            name: d.network.name.clone(),
            labels: Default::default(),
        }],
        volumes: d
            .volumes
            .iter()
            .map(|v| ObservedObject {
                name: v.clone(),
                labels: Default::default(),
            })
            .collect(),
        ..Default::default()
    };
    let items = stackc::drift::compare(&d, &everything, &exact, &t.drift_ignore);
    if !items.is_empty() {
        return Err(format!("no drift expected, got {items:?}"));
    }
    // Random differences: every changed container shows up.
    for _ in 0..4 {
        let mut live = exact.clone();
        let names: Vec<String> = live.keys().cloned().collect();
        let mut changed = std::collections::BTreeSet::new();
        for n in &names {
            if !rng.one_in(3) {
                continue;
            }
            let l = live.get_mut(n).expect("live");
            match rng.below(5) {
                0 => l.running = false,
                1 => l.image = format!("{}-{}", l.image, hostile(rng)),
                2 => l.memory = Some(l.memory.unwrap_or(0) + 1 + rng.below(1 << 20) as i64),
                3 => {
                    l.restart = Some(
                        if l.restart.as_deref() == Some("no") {
                            "always"
                        } else {
                            "no"
                        }
                        .into(),
                    )
                }
                _ => {
                    live.remove(n);
                }
            }
            changed.insert(n.clone());
        }
        let o = observed(&d, rng);
        let items = stackc::drift::compare(&d, &o, &live, &t.drift_ignore);
        for n in &changed {
            if !items.iter().any(|i| &i.object == n) {
                return Err(format!("{n} changed, yet drift reports nothing for it"));
            }
        }
    }
    Ok(true)
}

const TARGETS: &[(&str, Target_)] = &[
    ("kdl", target_kdl),
    ("emit", target_emit),
    ("plan", target_plan),
    ("drift", target_drift),
];

/// Run one input; a panic or a broken oracle is a crash.
fn run_one(f: Target_, text: &str, base: &Path, rng: &mut Rng) -> Result<bool, String> {
    match catch_unwind(AssertUnwindSafe(|| f(text, base, rng))) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panic: {}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    }
}

fn regressions_dir(target: &str) -> PathBuf {
    root().join("tests/fuzz-regressions").join(target)
}

fn budget() -> Duration {
    let total: f64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60.0);
    Duration::from_secs_f64(total / TARGETS.len() as f64)
}

fn fuzz(name: &str) {
    let f = TARGETS.iter().find(|(n, _)| *n == name).expect("target").1;
    let seeds = corpus();
    let seed = std::env::var("STACKC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    let mut rng = Rng::new(seed ^ name.len() as u64);
    let budget = budget();
    let start = Instant::now();
    let mut execs = 0u64;
    let mut clean = 0u64;
    // Every seed once, unmutated, then mutations until the time is up.
    // Targets past `check` (emit, plan, drift) need topologies that check
    // clean: mutants that do are kept and mutated further, so clean
    // inputs drift away from the seeds one small step at a time.
    let wants_clean = name != "kdl";
    let mut pool: Vec<(usize, String)> = Vec::new();
    let mut queue: Vec<(usize, Option<String>)> = (0..seeds.len()).map(|i| (i, None)).collect();
    queue.reverse();
    loop {
        let (i, text) = match queue.pop() {
            Some((i, None)) => (i, seeds[i].1.clone()),
            Some((i, Some(t))) => (i, t),
            None => {
                if start.elapsed() >= budget {
                    break;
                }
                if wants_clean && !pool.is_empty() && !rng.one_in(4) {
                    let (i, t) = pool[rng.below(pool.len())].clone();
                    (i, mutate_once(&mut rng, &t, &seeds))
                } else {
                    let i = rng.below(seeds.len());
                    (i, mutate(&mut rng, &seeds[i].1, &seeds))
                }
            }
        };
        let base = seeds[i].0.parent().expect("dir").to_path_buf();
        let mut case_rng = Rng::new(rng.next_u64());
        execs += 1;
        let outcome = run_one(f, &text, &base, &mut case_rng);
        if let Err(why) = &outcome {
            let dir = regressions_dir(name);
            std::fs::create_dir_all(&dir).expect("mkdir");
            let file = dir.join(format!("{}.kdl", targets::short_hash(&text)));
            std::fs::write(&file, &text).expect("save the crashing input");
            panic!(
                "fuzz {name}: crash after {execs} executions (seed {seed}), saved as {}:\n{why}",
                file.strip_prefix(root()).unwrap_or(&file).display()
            );
        }
        if outcome == Ok(true) {
            clean += 1;
            if pool.len() < 1000 {
                pool.push((i, text));
            } else {
                let k = rng.below(pool.len());
                pool[k] = (i, text);
            }
        }
    }
    eprintln!(
        "fuzz {name}: {execs} executions in {:.1?} ({clean} checked clean; seed {seed})",
        start.elapsed()
    );
    assert!(execs as usize > seeds.len(), "fuzz {name}: no mutation ran");
}

#[test]
fn fuzz_kdl() {
    fuzz("kdl");
}

#[test]
fn fuzz_emit() {
    fuzz("emit");
}

#[test]
fn fuzz_plan() {
    fuzz("plan");
}

#[test]
fn fuzz_drift() {
    fuzz("drift");
}

/// Every saved crashing input, through its target (and through the
/// others, which must not crash on it either). Imports resolve from the
/// examples directory.
#[test]
fn fuzz_regressions_replay() {
    let base = root().join("examples/eip-resso");
    let mut n = 0;
    for (name, _) in TARGETS {
        let Ok(rd) = std::fs::read_dir(regressions_dir(name)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for p in files {
            let text = std::fs::read_to_string(&p).expect("read");
            for (target, f) in TARGETS {
                let mut rng = Rng::new(1);
                if let Err(why) = run_one(*f, &text, &base, &mut rng) {
                    panic!("{} crashes {target} again:\n{why}", p.display());
                }
            }
            n += 1;
        }
    }
    eprintln!("fuzz: {n} saved inputs replayed");
}
