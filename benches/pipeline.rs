//! Stage timings for a generated topology: parse (+ imports, decode),
//! validate, graph, and compile to every target.
//!
//!     cargo bench --bench pipeline -- [SERVICES]
//!
//! The topology comes from bench/gen-topology.py, the same one bench/run
//! times end to end.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let out = Command::new("python3")
        .arg("bench/gen-topology.py")
        .arg(n.to_string())
        .output()
        .expect("python3 runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let runs = 5;
    let mut times = vec![Vec::new(); 5];
    for _ in 0..runs {
        let t0 = Instant::now();
        let loaded = stackc::parse::load_str("generated.kdl", &text, Path::new("."), None);
        let t1 = Instant::now();
        let t = loaded.topology.as_ref().expect("model");
        let v = stackc::validate::validate(t);
        assert!(!v.has_errors() && !loaded.diags.has_errors());
        let t2 = Instant::now();
        let (g, _) = stackc::graph::resolve(t, true);
        let g = g.expect("graph");
        let t3 = Instant::now();
        for tg in stackc::targets::Target::ALL {
            let s = Instant::now();
            let _ = stackc::targets::build(t, &g, &[tg]);
            if std::env::var_os("STAGES").is_some() {
                eprintln!("{:?} {:?}", tg, s.elapsed());
            }
        }
        let (arts, _) = stackc::targets::build(t, &g, &stackc::targets::Target::ALL);
        let t4 = Instant::now();
        assert!(!arts.is_empty());
        for (i, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0]
            .into_iter()
            .enumerate()
        {
            times[i].push(d.as_secs_f64() * 1000.0);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let names = ["parse", "validate", "graph", "targets", "total"];
    println!("{n} services, {} bytes, median of {runs} runs:", text.len());
    for (i, name) in names.iter().enumerate() {
        println!("  {name:<9} {:>8.1} ms", median(&mut times[i]));
    }
}
