//! The binary as a user runs it: every command and exit code.

use crate::support::{root, run, stackc};

const EIP: &str = "examples/eip-resso/stack.kdl";

fn temp_topology(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("stack.kdl"), text).expect("write");
    dir
}

const SMALL: &str = r#"// a comment that fmt keeps
stack "small" version="1.0.0"
service "db" {
    image "postgres:16.4"
    health cmd="pg_isready" interval="5s"
}
service "api" {
  image "example/api:1.0.0"
  depends-on "db"
}
"#;

#[test]
fn check_clean_example_exits_0() {
    let r = run(stackc().args(["check", EIP]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout.trim(),
        "ok: eip-resso (12 services, 1 balancer, 5 phases)"
    );
    assert_eq!(r.stderr, "");
}

#[test]
fn check_reads_stack_kdl_in_the_current_directory() {
    let dir = temp_topology(SMALL);
    let r = run(stackc().current_dir(dir.path()).arg("check"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("ok: small"), "{}", r.stdout);
}

#[test]
fn check_without_a_file_in_an_empty_directory_explains() {
    let dir = tempfile::tempdir().expect("temp");
    let r = run(stackc().current_dir(dir.path()).arg("check"));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("stackc::missing-file"), "{}", r.stderr);
    assert!(r.stderr.contains("stack.kdl"), "{}", r.stderr);
}

#[test]
fn check_reports_all_errors_at_once_and_exits_1() {
    let dir = temp_topology(
        "stack \"x\"\nservice \"a\" { image \"a:1\"; depends-on \"d\" }\nservice \"b\" { imagee \"b:1\"; health cmd=\"true\" }\nservice \"c\" { image \"c:1\"; port 70000 }\n",
    );
    let r = run(stackc().current_dir(dir.path()).arg("check"));
    assert_eq!(r.code, 1);
    for code in [
        "stackc::unknown-node",
        "stackc::out-of-range",
        "stackc::unknown-service",
    ] {
        assert!(r.stderr.contains(code), "missing {code} in:\n{}", r.stderr);
    }
    assert!(r.stderr.contains("did you mean `image`?"), "{}", r.stderr);
    assert!(
        r.stderr.trim_end().ends_with("error: 3 errors, 0 warnings"),
        "{}",
        r.stderr
    );
}

#[test]
fn check_json_is_machine_readable() {
    let dir = temp_topology("stack \"x\"\nservice \"a\" { image \"a:1\"; port 0 }\n");
    let r = run(stackc().current_dir(dir.path()).args(["check", "--json"]));
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"], 1);
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "stackc::out-of-range");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["location"]["line"], 2);
    assert_eq!(d["location"]["column"], 33);
    assert!(d["help"].as_str().expect("help").contains("1 to 65535"));

    let r = run(stackc().args(["check", "--json", EIP]));
    assert_eq!(r.code, 0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["ok"], true);
    assert_eq!(v["summary"]["services"], 12);
}

#[test]
fn check_env_selects_and_unknown_env_fails() {
    let r = run(stackc().args(["check", EIP, "--env", "prod"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(stackc().args(["check", EIP, "--env", "staging"]));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("stackc::unknown-env"), "{}", r.stderr);
    assert!(r.stderr.contains("dev, prod"), "{}", r.stderr);
}

#[test]
fn graph_formats() {
    let r = run(stackc().args(["graph", EIP]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("5 phases (explicit)"), "{}", r.stdout);
    assert!(
        r.stdout.contains("critical path: consul -> config-server"),
        "{}",
        r.stdout
    );

    let r = run(stackc().args(["graph", "--format", "dot", EIP]));
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.starts_with("digraph \"eip-resso\" {"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("\"config-server\" -> \"consul\" [label=\"healthy\"];"),
        "{}",
        r.stdout
    );

    let r = run(stackc().args(["graph", "--format", "mermaid", EIP]));
    assert_eq!(r.code, 0);
    assert!(r.stdout.starts_with("graph LR\n"), "{}", r.stdout);
    assert!(
        r.stdout.contains("config_server -->|healthy| consul"),
        "{}",
        r.stdout
    );

    let r = run(stackc().args(["graph", "--json", EIP]));
    assert_eq!(r.code, 0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["phases"][2]["name"], "config");
    assert_eq!(v["phases"][2]["members"][0], "config-server");
    assert_eq!(v["critical_path"]["components"][0], "consul");
}

#[test]
fn graph_of_a_broken_topology_exits_1() {
    let dir = temp_topology(
        "stack \"x\"\nservice \"a\" { image \"a:1\"; depends-on \"b\" }\nservice \"b\" { image \"b:1\"; depends-on \"a\" }\n",
    );
    let r = run(stackc().current_dir(dir.path()).arg("graph"));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("dependency cycle: a -> b -> a"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "");
}

#[test]
fn fmt_check_write_and_keep_comments() {
    let dir = temp_topology(SMALL);
    let file = dir.path().join("stack.kdl");
    let r = run(stackc().current_dir(dir.path()).args(["fmt", "--check"]));
    assert_eq!(r.code, 1, "the 2-space block is not canonical");
    assert!(
        r.stdout.contains("would reformat stack.kdl"),
        "{}",
        r.stdout
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        SMALL,
        "--check never writes"
    );

    let r = run(stackc().current_dir(dir.path()).arg("fmt"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let formatted = std::fs::read_to_string(&file).expect("read");
    assert!(
        formatted.contains("// a comment that fmt keeps"),
        "{formatted}"
    );
    assert!(
        formatted.contains("\n    depends-on \"db\"\n"),
        "{formatted}"
    );
    // Formatting is idempotent and keeps the topology valid.
    let r = run(stackc().current_dir(dir.path()).args(["fmt", "--check"]));
    assert_eq!(r.code, 0, "{}", r.stdout);
    let r = run(stackc().current_dir(dir.path()).arg("check"));
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn fmt_refuses_invalid_kdl_and_leaves_the_file() {
    let dir = temp_topology("stack \"x\" {\n");
    let r = run(stackc().current_dir(dir.path()).arg("fmt"));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("stackc::syntax"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stack.kdl")).expect("read"),
        "stack \"x\" {\n"
    );
}

#[test]
fn examples_are_formatted() {
    let mut files: Vec<String> = Vec::new();
    for dir in ["examples", "stacks"] {
        for e in walk(&root().join(dir)) {
            files.push(e);
        }
    }
    let r = run(stackc().arg("fmt").arg("--check").args(&files));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "kdl") {
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn explain_codes() {
    let r = run(stackc().args(["explain", "subnet-overlap"]));
    assert_eq!(r.code, 0);
    assert!(
        r.stdout
            .starts_with("stackc::subnet-overlap: two tier ranges overlap"),
        "{}",
        r.stdout
    );
    let r = run(stackc().args(["explain", "stackc::literal-secret"]));
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("## Why"), "{}", r.stdout);
    let r = run(stackc().args(["explain", "unknown-proprety"]));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("did you mean `unknown-property`?"),
        "{}",
        r.stderr
    );
    let r = run(stackc().arg("explain"));
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout.lines().count(), stackc::diag::Code::ALL.len());
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    let r = run(stackc().arg("frobnicate"));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("unrecognized subcommand"), "{}", r.stderr);
    let r = run(stackc().args(["graph", "--format", "png", EIP]));
    assert_eq!(r.code, 1);
    let r = run(stackc().arg("--help"));
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("check"), "{}", r.stdout);
    let r = run(stackc().arg("--version"));
    assert_eq!(r.code, 0);
    assert!(r.stdout.starts_with("stackc "), "{}", r.stdout);
}

#[test]
fn color_always_colours_and_never_does_not() {
    let dir = temp_topology("stack \"x\"\nservice \"a\" { image \"a:1\"; port 0 }\n");
    let r = run(stackc()
        .current_dir(dir.path())
        .args(["check", "--color", "always"]));
    assert!(r.stderr.contains('\u{1b}'), "{}", r.stderr);
    let r = run(stackc()
        .current_dir(dir.path())
        .args(["check", "--color", "never"]));
    assert!(!r.stderr.contains('\u{1b}'), "{}", r.stderr);
}
