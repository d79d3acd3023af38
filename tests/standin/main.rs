//! A stand-in for the real images of the examples, so topologies run on a
//! machine without registries: it answers HTTP 200 on every path of every
//! port listed in STANDIN_PORTS, naming its host and STANDIN_VERSION.
//! While the file /tmp/standin-fail exists (or STANDIN_FAIL=1) it answers
//! 500 instead, so tests can make a version fail.
//!
//! Built statically with plain rustc (no dependencies) by
//! scripts/standin-image, which wraps it in a busybox image.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

fn answer(mut s: std::net::TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = s.read(&mut buf);
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let version = std::env::var("STANDIN_VERSION").unwrap_or_else(|_| "v1".into());
    let fail = std::env::var("STANDIN_FAIL").is_ok_and(|v| v == "1")
        || Path::new("/tmp/standin-fail").exists();
    let (status, body) = if fail {
        (
            "500 Internal Server Error",
            format!("failing {} {version}\n", host.trim()),
        )
    } else {
        ("200 OK", format!("ok {} {version}\n", host.trim()))
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn main() {
    let ports = std::env::var("STANDIN_PORTS").unwrap_or_else(|_| "8080".into());
    let mut threads = Vec::new();
    for p in ports
        .split(',')
        .filter_map(|p| p.trim().parse::<u16>().ok())
    {
        // A port another process already holds is skipped.
        let Ok(l) = TcpListener::bind(("0.0.0.0", p)) else {
            continue;
        };
        threads.push(std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || answer(s));
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}
