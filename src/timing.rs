//! Stage timings for benchmarks: with `STACKC_TIMINGS=1`, each stage
//! prints how long after the start of the process it ended, and on which
//! thread, to standard error.

use std::sync::OnceLock;
use std::time::Instant;

fn start() -> Option<Instant> {
    static START: OnceLock<Option<Instant>> = OnceLock::new();
    *START.get_or_init(|| std::env::var_os("STACKC_TIMINGS").map(|_| Instant::now()))
}

/// Start the clock (call first thing in `main`).
pub fn init() {
    start();
}

/// Print `what` with the time since [`init`], when timings are on.
pub fn mark(what: &str) {
    if let Some(t0) = start() {
        // Resident memory now, from /proc (Linux).
        let rss_mb = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * 4096 / (1 << 20));
        eprintln!(
            "timing {:>8.1} ms {rss_mb:>6} MB  {what}",
            t0.elapsed().as_secs_f64() * 1000.0
        );
    }
}
