//! Hostile and degenerate input: a clear error each, never a panic, and
//! bounded time.

use std::io::Write;

use stackc::diag::Code;

fn codes(c: &stackc::Checked) -> Vec<Code> {
    c.diags.iter().map(|d| d.code).collect()
}

fn check_text(text: &str) -> stackc::Checked {
    stackc::check_str("hostile.kdl", text, std::path::Path::new("."), None)
}

#[test]
fn missing_file_is_a_clear_error() {
    let c = stackc::check_file(std::path::Path::new("no/such/stack.kdl"), None);
    assert_eq!(codes(&c), [Code::MissingFile]);
    let d = c.diags.iter().next().expect("one");
    assert!(
        d.message.contains("no/such/stack.kdl") && d.message.contains("no such file"),
        "{}",
        d.message
    );
}

#[test]
fn directory_instead_of_file() {
    let c = stackc::check_file(std::path::Path::new("examples"), None);
    assert_eq!(codes(&c), [Code::MissingFile]);
}

#[test]
fn empty_and_comment_only_files() {
    for text in ["", "   \n\n", "// only a comment\n/* and a block */\n"] {
        let c = check_text(text);
        assert_eq!(codes(&c), [Code::EmptyInput], "{text:?}");
    }
}

#[test]
fn non_utf8_file_points_at_the_bad_byte() {
    let mut f = tempfile::NamedTempFile::new().expect("temp");
    f.write_all(b"stack \"caf\xe9\"\n").expect("write");
    let c = stackc::check_file(f.path(), None);
    assert_eq!(codes(&c), [Code::NotUtf8]);
    let d = c.diags.iter().next().expect("one");
    assert_eq!(d.primary.as_ref().expect("span").span.start, 10);
    // Rendering must not panic on the replaced bytes.
    let _ = stackc::diag::render_plain(&c.diags, &c.sources);
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 10_000;
    let text = format!("stack \"x\"\n{}{}", "a {".repeat(depth), "}".repeat(depth));
    let c = check_text(&text);
    assert!(codes(&c).contains(&Code::Syntax), "{:?}", codes(&c));
}

#[test]
fn very_long_line_is_handled() {
    let name = "a".repeat(1_000_000);
    let text = format!("stack \"x\"\nservice \"{name}\" {{ image \"busybox:1.36\" }}\n");
    let c = check_text(&text);
    assert!(codes(&c).contains(&Code::InvalidName), "{:?}", codes(&c));
    // The message quotes a bounded prefix, not the megabyte.
    assert!(c.diags.iter().all(|d| d.message.len() < 400));
}

#[test]
fn unterminated_string_is_a_syntax_error_with_a_span() {
    let c = check_text("stack \"x\nservice \"a\" {}\n");
    assert!(codes(&c).contains(&Code::Syntax));
    assert!(c.diags.iter().all(|d| d.primary.is_some()));
}

// ----- 50 MB topologies ----------------------------------------------------

/// Write a file of about `size` bytes: `head`, then `piece(i)` for i = 0..
/// until the size is reached, then `tail`.
fn big_file(
    dir: &std::path::Path,
    name: &str,
    size: usize,
    head: &str,
    piece: impl Fn(usize) -> String,
    tail: &str,
) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    f.write_all(head.as_bytes()).expect("write");
    let (mut written, mut i) = (head.len(), 0);
    while written < size {
        let p = piece(i);
        f.write_all(p.as_bytes()).expect("write");
        written += p.len();
        i += 1;
    }
    f.write_all(tail.as_bytes()).expect("write");
    f.flush().expect("flush");
    path
}

/// `stackc check FILE` with at most 1 GiB of address space and two
/// minutes: (exit code, everything it printed, how long it took).
fn check_bounded(file: &std::path::Path) -> (i32, String, std::time::Duration) {
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" check \"$1\" 2>&1")
        .arg(env!("CARGO_BIN_EXE_stackc"))
        .arg(file)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sh");
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut bytes);
        bytes
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            panic!("stackc check {} ran for two minutes", file.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let took = started.elapsed();
    let bytes = reader.join().expect("reader");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&bytes).into_owned(),
        took,
    )
}

/// Output fit to read: bounded, and no panic or allocation failure.
fn assert_clear(what: &str, code: i32, out: &str) {
    assert!(
        code == 0 || code == 1,
        "{what}: exit {code} (a panic, or the memory limit): {}",
        &out[..out.len().min(2000)]
    );
    assert!(!out.contains("panicked"), "{what}: {out}");
    assert!(
        out.len() < 4096,
        "{what}: {} bytes of output: {}",
        out.len(),
        &out[..out.len().min(2000)]
    );
}

#[test]
fn fifty_megabyte_topologies_check_in_bounded_time_and_memory() {
    const SIZE: usize = 50 << 20;
    let dir = tempfile::tempdir().expect("temp");
    let stack = "stack \"big\" version=\"1.0.0\"\nservice \"a\" {\n    image \"busybox:1.36\"\n}\n";
    let mut report = Vec::new();

    // A valid topology under a 50 MB block comment.
    let f = big_file(
        dir.path(),
        "comment.kdl",
        SIZE,
        &format!("{stack}/*\n"),
        |i| format!("{i:>9} {}\n", "c".repeat(70)),
        "*/\n",
    );
    let (code, out, took) = check_bounded(&f);
    assert_clear("comment", code, &out);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: big (1 service"), "{out}");
    report.push(format!("comment {took:.1?}"));

    // A long valid file: 2,000 services with long environment values.
    let f = big_file(
        dir.path(),
        "services.kdl",
        SIZE,
        "stack \"big\" version=\"1.0.0\"\n",
        |i| {
            let env: String = (0..10)
                .map(|j| format!("    env \"V{j}\" \"{}\"\n", "v".repeat(2500)))
                .collect();
            format!("service \"s{i}\" {{\n    image \"busybox:1.36\"\n{env}}}\n")
        },
        "",
    );
    let (code, out, took) = check_bounded(&f);
    assert_clear("services", code, &out);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: big (20"), "{out}");
    report.push(format!("2,000 services {took:.1?}"));

    // One 50 MB line: the error names the place instead of echoing it.
    let f = big_file(
        dir.path(),
        "line.kdl",
        SIZE,
        "stack \"big\" version=\"1.0.0\" note=\"",
        |_| "y".repeat(1000),
        "\"\nservice \"a\" {\n    image \"busybox:1.36\"\n}\n",
    );
    let (code, out, took) = check_bounded(&f);
    assert_clear("one line", code, &out);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("`stack` has no property `note`")
            && out.contains("line.kdl:1:29")
            && out.contains("too long to show"),
        "{out}"
    );
    report.push(format!("one line {took:.1?}"));

    // Millions of tiny nodes: refused at the node limit, not after
    // building gigabytes of tree.
    let f = big_file(
        dir.path(),
        "nodes.kdl",
        SIZE,
        "stack \"big\" version=\"1.0.0\"\n",
        |i| format!("service \"s{i}\" {{ image \"x\"; }}\n"),
        "",
    );
    let (code, out, took) = check_bounded(&f);
    assert_clear("nodes", code, &out);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("stackc::too-large") && out.contains("more than 500000 nodes and values"),
        "{out}"
    );
    report.push(format!("tiny nodes {took:.1?}"));
    eprintln!("50 MB checks: {}", report.join(", "));
}

#[test]
fn many_diagnostics_render_in_bounded_time_and_json_lists_them_all() {
    let n = 20_000;
    let text = format!("stack \"x\"\n{}", "bogus 1\n".repeat(n));
    let c = check_text(&text);
    assert_eq!(
        codes(&c)
            .iter()
            .filter(|c| **c == Code::UnknownNode)
            .count(),
        n,
        "{:?}",
        &codes(&c)[..3]
    );
    let started = std::time::Instant::now();
    let out = stackc::diag::render_plain(&c.diags, &c.sources);
    let json = stackc::diag::to_json(&c.diags, &c.sources);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        out.matches("stackc::unknown-node").count(),
        stackc::diag::MAX_REPORTS
    );
    assert!(
        out.contains(&format!("... and {} more", n - stackc::diag::MAX_REPORTS)),
        "{}",
        &out[out.len() - 300..]
    );
    let all = json.as_array().expect("array");
    assert_eq!(all.len(), n);
    assert_eq!(all[n - 1]["location"]["line"], n + 1);
}

// ----- safe defaults in every example ----------------------------------------

/// Every example with no environment and with each one it declares.
fn example_variants() -> Vec<(String, std::path::PathBuf, Option<String>)> {
    let mut v = Vec::new();
    for (name, file) in crate::targets::examples() {
        let c = stackc::check_file(&file, None);
        let envs: Vec<String> = c
            .topology
            .as_ref()
            .expect("model")
            .environments
            .iter()
            .map(|e| e.name.value.clone())
            .collect();
        v.push((name.clone(), file.clone(), None));
        for e in envs {
            v.push((name.clone(), file.clone(), Some(e)));
        }
    }
    v
}

/// Host ports the topology declares public.
fn public_ports(t: &stackc::model::Topology) -> Vec<u16> {
    let mut v: Vec<u16> = t
        .balancers
        .iter()
        .flat_map(|b| b.listeners.iter())
        .filter(|l| l.public)
        .map(|l| l.published.as_ref().map_or(l.port.value, |p| p.value))
        .collect();
    v.extend(
        t.services
            .iter()
            .flat_map(|s| s.ports.iter())
            .filter(|p| p.public)
            .filter_map(|p| p.published.as_ref().map(|h| h.value)),
    );
    v
}

/// Keys and values no generated container may carry.
fn assert_nothing_privileged(what: &str, v: &serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let bad = match k.as_str() {
                    "privileged"
                    | "allowPrivilegeEscalation"
                    | "hostNetwork"
                    | "hostPID"
                    | "hostIPC" => x == &serde_json::Value::Bool(true),
                    "cap_add" | "devices" | "security_opt" | "hostPath" => true,
                    "pid" | "ipc" | "network_mode" | "userns_mode" => x == "host",
                    _ => false,
                };
                assert!(!bad, "{what}: `{k}: {x}`");
                assert_nothing_privileged(what, x);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| assert_nothing_privileged(what, x)),
        serde_json::Value::String(s) => {
            assert!(
                !s.contains("docker.sock"),
                "{what}: mounts the Docker socket: {s}"
            )
        }
        _ => {}
    }
}

#[test]
fn every_example_builds_to_safe_defaults() {
    use stackc::targets::Target;
    let mut checked = 0;
    for (name, file, env) in example_variants() {
        let what = format!("{name} (env {env:?})");
        let c = stackc::check_file(&file, env.as_deref());
        assert!(c.ok(), "{what}");
        let (t, g) = (
            c.topology.as_ref().expect("model"),
            c.graph.as_ref().expect("graph"),
        );
        let public = public_ports(t);
        let bind = t
            .env()
            .and_then(|e| e.publish_bind.as_ref())
            .map_or_else(|| "0.0.0.0".to_string(), |a| a.value.to_string());
        let (arts, _) = stackc::targets::build(
            t,
            g,
            &[
                Target::Compose,
                Target::Nginx,
                Target::Prometheus,
                Target::Grafana,
                Target::Kubernetes,
            ],
        );
        let is_artifact = |rel: &str| {
            arts.iter()
                .any(|a| a.path == rel || a.path.starts_with(&format!("{rel}/")))
        };
        // Published ports: 127.0.0.1 unless the port is public.
        let check_port = |ip: &str, host: u16, whose: &str| {
            if ip != "127.0.0.1" {
                assert!(
                    public.contains(&host) && ip == bind,
                    "{what}: {whose} publishes {host} on {ip}, but it is not public (public: {public:?}, publish-bind {bind})"
                );
            }
        };
        for a in &arts {
            if a.path.starts_with("nginx/") {
                for line in a.content.lines() {
                    let first = line.split_whitespace().next().unwrap_or_default();
                    assert!(
                        first != "load_module" && first != "include",
                        "{what}: {}: `{}`",
                        a.path,
                        line.trim()
                    );
                }
            }
            if a.path.starts_with("kubernetes/") && a.path.ends_with(".yaml") {
                for doc in serde_yaml::Deserializer::from_str(&a.content) {
                    let v: serde_json::Value =
                        serde::Deserialize::deserialize(doc).expect("kubernetes yaml");
                    assert_nothing_privileged(&format!("{what}: {}", a.path), &v);
                }
            }
        }
        let compose = arts
            .iter()
            .find(|a| a.path == stackc::targets::compose::PATH)
            .expect("compose");
        let doc: serde_json::Value = serde_yaml::from_str(&compose.content).expect("compose yaml");
        let volumes = doc["volumes"].as_object().cloned().unwrap_or_default();
        for (svc, s) in doc["services"].as_object().expect("services") {
            let whose = format!("{what}: compose service {svc}");
            assert_nothing_privileged(&whose, s);
            for m in s["volumes"].as_array().into_iter().flatten() {
                let m = m.as_str().expect("short syntax");
                let source = m.split(':').next().unwrap_or_default();
                match source.strip_prefix("../") {
                    // Bind mounts: stackc's own artifacts only, read-only.
                    Some(rel) => assert!(
                        is_artifact(rel) && m.ends_with(":ro"),
                        "{whose}: mounts `{m}`"
                    ),
                    None => assert!(volumes.contains_key(source), "{whose}: mounts `{m}`"),
                }
            }
            for p in s["ports"].as_array().into_iter().flatten() {
                let p = p.as_str().expect("port");
                let parts: Vec<&str> = p.split('/').next().unwrap_or_default().split(':').collect();
                assert_eq!(parts.len(), 3, "{whose}: `{p}` names no address");
                check_port(parts[0], parts[1].parse().expect("port"), &whose);
            }
        }
        // What apply runs: the same ports, and bind mounts only of the
        // files stackc writes into its state directory (so the `nginx -t`
        // of a rollout, run in the balancer, reads only stackc's files).
        let files_dir = std::path::Path::new("/state/files");
        let d = stackc::plan::desired(t, g, &stackc::profile::Profile::local(), files_dir);
        for spec in &d.containers {
            let whose = format!("{what}: container {}", spec.name);
            for m in &spec.mounts {
                if m.volume {
                    assert!(
                        d.volumes.contains(&m.source),
                        "{whose}: volume {}",
                        m.source
                    );
                    continue;
                }
                let rel = std::path::Path::new(&m.source)
                    .strip_prefix(files_dir)
                    .unwrap_or_else(|_| panic!("{whose}: mounts {}", m.source))
                    .to_string_lossy()
                    .into_owned();
                assert!(
                    d.files
                        .iter()
                        .any(|a| a.path == rel || a.path.starts_with(&format!("{rel}/"))),
                    "{whose}: mounts {rel}, which stackc does not write"
                );
                assert!(m.read_only, "{whose}: {rel} is mounted writable");
                assert!(!m.source.contains("docker.sock"), "{whose}");
            }
            for p in &spec.ports {
                check_port(&p.host_ip, p.host_port, &whose);
            }
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} example variants");
}
