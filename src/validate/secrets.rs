//! ## What it checks
//! Environment variables whose names say they hold a secret (PASSWORD,
//! SECRET, TOKEN, API_KEY, PRIVATE_KEY) must not have a literal value.
//! (A literal `value=` on a `secret` is rejected while decoding.)
//!
//! ## Why
//! Topologies and artifacts are committed; a literal secret is a leak.

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::Topology;

const MARKERS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
];

pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    // `*_FILE` variables hold a path to the secret, not the secret.
    !upper.ends_with("_FILE") && MARKERS.iter().any(|m| upper.contains(m))
}

pub fn check(t: &Topology, out: &mut Diagnostics) {
    for s in &t.services {
        for e in &s.env {
            if looks_secret(&e.name.value) && !e.value.value.is_empty() {
                out.push(
                    Diagnostic::error(
                        Code::LiteralSecret,
                        format!(
                            "`{}` looks like a secret but has a literal value",
                            e.name.value
                        ),
                    )
                    .at(e.value.span, "literal value")
                    .help(format!(
                        "declare it as: secret \"{}\" from=\"env:{}\"",
                        e.name.value, e.name.value
                    )),
                );
            }
        }
    }
}
