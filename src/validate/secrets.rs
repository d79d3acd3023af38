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
    let b = name.as_bytes();
    // Whether `b` holds `m`, in any case (no copy of the name).
    let holds = |m: &str| {
        b.windows(m.len())
            .any(|w| w.eq_ignore_ascii_case(m.as_bytes()))
    };
    // `*_FILE` variables hold a path to the secret, not the secret.
    let file = b.len() >= 5 && b[b.len() - 5..].eq_ignore_ascii_case(b"_FILE");
    !file && MARKERS.iter().any(|m| holds(m))
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

#[cfg(test)]
mod tests {
    use super::looks_secret;

    /// The same answer as upper-casing the name and searching it.
    #[test]
    fn secret_names_in_any_case() {
        let slow = |name: &str| {
            let upper = name.to_ascii_uppercase();
            !upper.ends_with("_FILE") && super::MARKERS.iter().any(|m| upper.contains(m))
        };
        for name in [
            "DB_PASSWORD",
            "db_password",
            "Passwd",
            "API_KEY",
            "apikey",
            "MY_TOKEN_FILE",
            "token_file",
            "_FILE",
            "FILE",
            "SECRET",
            "secretive",
            "LOG_LEVEL",
            "",
            "ß_token",
            "PRIVATE_KEY_PATH",
            "private-key",
            "TOKE",
            "éPASSWORD",
        ] {
            assert_eq!(looks_secret(name), slow(name), "{name:?}");
        }
    }
}
