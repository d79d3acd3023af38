//! Every example compiled to every target, checked by the real tool that
//! consumes each artifact (nginx -t, promtool, docker-compose config), and
//! snapshot-tested so a topology change is reviewed as an artifact diff.

use std::path::{Path, PathBuf};
use std::process::Command;

use stackc::targets::{self, Artifact, Target};

use crate::support::root;

pub fn examples() -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("stack.kdl").is_file())
        .map(|p| {
            (
                p.file_name().expect("name").to_string_lossy().into_owned(),
                p.join("stack.kdl"),
            )
        })
        .collect();
    v.sort();
    v
}

pub fn build(file: &Path, env: Option<&str>, which: &[Target]) -> Vec<Artifact> {
    let c = stackc::check_file(file, env);
    assert!(
        c.ok(),
        "{}: {}",
        file.display(),
        stackc::diag::render_plain(&c.diags, &c.sources)
    );
    let (arts, warnings) = targets::build(
        c.topology.as_ref().expect("model"),
        c.graph.as_ref().expect("graph"),
        which,
    );
    assert!(
        !warnings.has_errors(),
        "{}",
        stackc::diag::render_plain(&warnings, &c.sources)
    );
    arts
}

/// A tool the tests need. Missing tools fail the test: `.ci/run` installs
/// them, and a test that cannot run must not pass.
pub fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .expect("sh");
    assert!(
        found.status.success(),
        "`{name}` is not installed; `bash .ci/run` installs every tool the tests need"
    );
    String::from_utf8_lossy(&found.stdout).trim().to_string()
}

fn write_tree(dir: &Path, arts: &[Artifact]) {
    for a in arts {
        let p = dir.join(&a.path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, &a.content).expect("write");
    }
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("tool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn nginx_accepts_every_balancer_config() {
    let nginx = tool("nginx");
    tool("openssl");
    let mut checked = 0;
    for (name, file) in examples() {
        let arts = build(&file, None, &[Target::Nginx]);
        let dir = tempfile::tempdir().expect("temp");
        write_tree(dir.path(), &arts);
        for a in &arts {
            // Certificates are references: the test supplies throwaway ones
            // where the config expects them.
            let conf = dir.path().join(&a.path);
            if a.content.contains("ssl_certificate ") {
                let stem = Path::new(&a.path)
                    .file_stem()
                    .expect("stem")
                    .to_string_lossy()
                    .into_owned();
                let tls = conf.parent().expect("dir").join("tls");
                std::fs::create_dir_all(&tls).expect("mkdir");
                let (ok, out) = run(Command::new("openssl")
                    .args([
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-days",
                        "1",
                        "-subj",
                        "/CN=stackc-test",
                    ])
                    .arg("-keyout")
                    .arg(tls.join(format!("{stem}.key")))
                    .arg("-out")
                    .arg(tls.join(format!("{stem}.crt"))));
                assert!(ok, "{out}");
            }
            let (ok, out) = run(Command::new(&nginx).arg("-t").arg("-c").arg(&conf));
            assert!(
                ok,
                "{name}: nginx -t rejects {}:\n{out}\n{}",
                a.path, a.content
            );
            assert!(out.contains("test is successful"), "{out}");
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} nginx configs were checked");
}

#[test]
fn promtool_accepts_config_and_rules_and_every_alert_test_passes() {
    let promtool = tool("promtool");
    let mut tested = 0;
    for (name, file) in examples() {
        let arts = build(&file, None, &[Target::Prometheus]);
        if arts.is_empty() {
            continue;
        }
        let dir = tempfile::tempdir().expect("temp");
        write_tree(dir.path(), &arts);
        let prom = dir.path().join("prometheus");
        let (ok, out) = run(Command::new(&promtool)
            .args(["check", "config", "prometheus.yml"])
            .current_dir(&prom));
        assert!(ok, "{name}: promtool check config:\n{out}");
        for a in arts.iter().filter(|a| a.path.ends_with(".rules.yml")) {
            let (ok, out) = run(Command::new(&promtool)
                .args(["check", "rules"])
                .arg(dir.path().join(&a.path)));
            assert!(ok, "{name}: promtool check rules {}:\n{out}", a.path);
        }
        for a in arts.iter().filter(|a| a.path.ends_with(".test.yml")) {
            let (ok, out) = run(Command::new(&promtool)
                .args(["test", "rules"])
                .arg(dir.path().join(&a.path)));
            assert!(ok, "{name}: promtool test rules {}:\n{out}", a.path);
            assert!(out.contains("SUCCESS"), "{out}");
            tested += 1;
        }
    }
    assert!(tested >= 4, "only {tested} rule test files ran");
}

#[test]
fn derived_alert_tests_cover_every_alert_twice() {
    for (_, file) in examples() {
        let arts = build(&file, None, &[Target::Prometheus]);
        let Some(rules) = arts.iter().find(|a| a.path.ends_with("derived.rules.yml")) else {
            continue;
        };
        let tests = arts
            .iter()
            .find(|a| a.path.ends_with("derived.test.yml"))
            .expect("tests beside rules");
        let rules: serde_json::Value = stackc::yaml::from_str(&rules.content).expect("yaml");
        let tests: serde_json::Value = stackc::yaml::from_str(&tests.content).expect("yaml");
        for r in rules["groups"][0]["rules"].as_array().expect("rules") {
            let name = r["alert"].as_str().expect("alert");
            let cases: Vec<&serde_json::Value> = tests["tests"]
                .as_array()
                .expect("tests")
                .iter()
                .filter(|t| t["alert_rule_test"][0]["alertname"] == name)
                .collect();
            assert_eq!(cases.len(), 2, "{name}: one firing and one silent case");
            assert!(cases.iter().any(|c| {
                c["alert_rule_test"][0]["exp_alerts"]
                    .as_array()
                    .is_some_and(|a| a.len() == 1)
            }));
            assert!(cases.iter().any(|c| {
                c["alert_rule_test"][0]["exp_alerts"]
                    .as_array()
                    .is_some_and(|a| a.is_empty())
            }));
        }
    }
}

/// `${VAR:?...}` references in a compose file: the secrets compose reads
/// from its environment.
fn secret_vars(compose: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = compose;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let end = after.find([':', '}']).unwrap_or(after.len());
        out.push(after[..end].to_string());
        rest = &after[end..];
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn docker_compose_accepts_every_compose_file() {
    let compose = tool("docker-compose");
    for (name, file) in examples() {
        let arts = build(&file, None, &Target::ALL);
        let dir = tempfile::tempdir().expect("temp");
        write_tree(dir.path(), &arts);
        let c = arts
            .iter()
            .find(|a| a.path == "compose/docker-compose.yml")
            .expect("compose file");
        let mut cmd = Command::new(&compose);
        cmd.args(["config", "-q"])
            .current_dir(dir.path().join("compose"));
        for v in secret_vars(&c.content) {
            cmd.env(v, "stackc-test-value");
        }
        let (ok, out) = run(&mut cmd);
        assert!(ok, "{name}: docker-compose config:\n{out}");
        // Without the secrets, compose refuses to run: nothing falls back
        // to an empty password.
        if !secret_vars(&c.content).is_empty() {
            let mut cmd = Command::new(&compose);
            cmd.args(["config", "-q"])
                .current_dir(dir.path().join("compose"));
            for v in secret_vars(&c.content) {
                cmd.env_remove(v);
            }
            let (ok, out) = run(&mut cmd);
            assert!(!ok && out.contains("set "), "{name}: {out}");
        }
    }
}

#[test]
fn compose_places_instances_in_their_tier_and_binds_private_ports_to_localhost() {
    let file = root().join("examples/eip-resso/stack.kdl");
    let arts = build(&file, None, &[Target::Compose]);
    let doc: serde_json::Value = stackc::yaml::from_str(&arts[0].content).expect("yaml");
    let services = doc["services"].as_object().expect("services");
    let addr = |svc: &str| {
        services[svc]["networks"]["eip-resso-cluster"]["ipv4_address"]
            .as_str()
            .map(str::to_string)
    };
    assert!(addr("postgres-0").expect("static").starts_with("172.21.1."));
    assert!(
        addr("config-server")
            .expect("static")
            .starts_with("172.21.10.")
    );
    assert!(addr("nginx-lb").expect("static").starts_with("172.21.3."));
    assert!(addr("prometheus").expect("static").starts_with("172.21.2."));
    assert_eq!(
        doc["networks"]["eip-resso-cluster"]["ipam"]["config"][0]["subnet"],
        "172.21.0.0/16"
    );
    // The balancer's public listener binds to every address (no env
    // selected: publish-bind defaults to 0.0.0.0); nothing else is public.
    assert_eq!(services["nginx-lb"]["ports"][0], "0.0.0.0:8892:80");
    for (name, s) in services {
        if name == "nginx-lb" {
            continue;
        }
        for p in s["ports"].as_array().into_iter().flatten() {
            assert!(
                p.as_str().expect("port").starts_with("127.0.0.1:"),
                "{name}: {p}"
            );
        }
    }
    // Dependencies wait for health; a started condition stays started.
    assert_eq!(
        services["config-server"]["depends_on"]["consul-0"]["condition"],
        "service_healthy"
    );
    assert_eq!(
        services["order-orchestration-0"]["depends_on"]["payment-0"]["condition"],
        "service_started"
    );
    // Ownership labels on everything.
    for (name, s) in services {
        assert_eq!(s["labels"]["io.stackc.stack"], "eip-resso", "{name}");
        assert_eq!(s["labels"]["io.stackc.owner"], "stackc", "{name}");
    }
    // Members keep their own data.
    assert_eq!(
        services["postgres-1"]["volumes"][0],
        "pgdata-1:/var/lib/postgresql/data"
    );
}

#[test]
fn compose_with_prod_env_uses_its_publish_bind_and_replicas() {
    let file = root().join("examples/eip-resso/stack.kdl");
    let arts = build(&file, Some("prod"), &[Target::Compose]);
    let doc: serde_json::Value = stackc::yaml::from_str(&arts[0].content).expect("yaml");
    assert!(
        doc["services"]["user-management-3"].is_object(),
        "prod runs 4 user-management members"
    );
    let arts = build(&file, Some("dev"), &[Target::Compose]);
    let doc: serde_json::Value = stackc::yaml::from_str(&arts[0].content).expect("yaml");
    assert_eq!(doc["services"]["nginx-lb"]["ports"][0], "127.0.0.1:8892:80");
}

#[test]
fn nginx_carries_the_seed_specifics() {
    let boltlink = build(
        &root().join("examples/boltlink/stack.kdl"),
        None,
        &[Target::Nginx],
    );
    let conf = &boltlink
        .iter()
        .find(|a| a.path.starts_with("nginx/"))
        .expect("nginx")
        .content;
    for rate in ["rate=10r/s", "rate=100r/s", "rate=1000r/s"] {
        assert!(conf.contains(rate), "boltlink lacks {rate}:\n{conf}");
    }
    assert!(conf.contains("least_conn;"), "{conf}");
    assert!(conf.contains("ip_hash;"), "{conf}");
    assert!(conf.contains("$http_x_api_key"), "{conf}");
    assert!(conf.contains("limit_req_status 429;"), "{conf}");

    let eip = build(
        &root().join("examples/eip-resso/stack.kdl"),
        None,
        &[Target::Nginx],
    );
    let conf = &eip[0].content;
    // Blue-green at rest: the stable colour serves, the next one is down.
    assert!(conf.contains("# config-server\n"), "{conf}");
    assert!(conf.contains("down;  # config-server-next"), "{conf}");
    // Active-passive: the standby is a backup server.
    assert!(conf.contains("backup;  # order-management-1"), "{conf}");
}

#[test]
fn nginx_weights_follow_a_rollout_split() {
    let c = stackc::check_file(&root().join("examples/eip-resso/stack.kdl"), None);
    let (t, g) = (
        c.topology.as_ref().expect("t"),
        c.graph.as_ref().expect("g"),
    );
    let mut cx = targets::Ctx::new(t, g);
    let mut w = targets::nginx::Weights::new();
    w.insert("config-server".into(), 25);
    let conf = targets::nginx::render(&mut cx, 0, &w).expect("renders");
    assert!(
        conf.contains("weight=75 max_fails=3 fail_timeout=10s;  # config-server\n"),
        "{conf}"
    );
    assert!(
        conf.contains("weight=25 max_fails=3 fail_timeout=10s;  # config-server-next"),
        "{conf}"
    );
    w.insert("config-server".into(), 100);
    let conf = targets::nginx::render(&mut cx, 0, &w).expect("renders");
    assert!(conf.contains("down;  # config-server\n"), "{conf}");
}

#[test]
fn builds_are_deterministic() {
    for (_, file) in examples() {
        let a = build(&file, None, &Target::ALL);
        for _ in 0..3 {
            assert_eq!(build(&file, None, &Target::ALL), a);
        }
    }
}

#[test]
fn artifact_snapshots() {
    for (name, file) in examples() {
        for a in build(&file, None, &Target::ALL) {
            let snap = format!("{name}__{}", a.path.replace('/', "__"));
            crate::snapshot!("artifacts", snap, a.content);
        }
    }
}

#[test]
fn committed_artifacts_are_up_to_date() {
    for (name, file) in examples() {
        let arts = build(&file, None, &Target::ALL);
        let out = file.parent().expect("dir").join("generated");
        let (changes, diff) = stackc::artifacts::diff(&out, &arts).expect("diff");
        assert!(
            changes.is_empty(),
            "examples/{name}/generated is stale; run `stackc build examples/{name}/stack.kdl`:\n{diff}"
        );
    }
}

#[test]
fn a_hundred_builds_give_the_same_bytes_whatever_the_environment_order() {
    let file = root().join("examples/eip-resso/stack.kdl");
    let first = build(&file, Some("prod"), &Target::ALL);
    for i in 0..100 {
        // Interleave other environments so no state carries over.
        if i % 10 == 0 {
            let _ = build(&file, Some("dev"), &Target::ALL);
        }
        assert_eq!(
            build(&file, Some("prod"), &Target::ALL),
            first,
            "build {i} differs"
        );
    }
}

/// Every file under `dir` with its bytes.
fn tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                out.insert(p.strip_prefix(dir).expect("inside").to_path_buf(), bytes);
            }
        }
    }
    out
}

/// A small tmpfs, unmounted when dropped.
struct Disk(PathBuf);

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_or_read_only_disk_leaves_the_previous_artifacts_intact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mnt = dir.path().join("disk");
    std::fs::create_dir(&mnt).expect("mkdir");
    // 320 KB: blue-green v2's artifacts fit, EIP-resso's do not.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=320k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            !crate::support::in_ci(),
            "CI: mounting a small tmpfs is needed to test a full disk"
        );
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let disk = Disk(mnt.clone());
    let out = disk.0.join("generated");
    let build = |example: &str| {
        crate::support::run(
            crate::support::stackc()
                .args(["build"])
                .arg(root().join("examples").join(example).join("stack.kdl"))
                .arg("--out")
                .arg(&out),
        )
    };
    let r = build("blue-green-v2");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = tree(&out);
    assert!(before.len() > 10);
    // Full: the bigger build fails clearly and changes nothing.
    let r = build("eip-resso");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
    assert_eq!(tree(&out), before, "the previous artifacts changed");
    let left: Vec<_> = std::fs::read_dir(&disk.0)
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("generated")],
        "temporary files left"
    );
    // Read-only: the same.
    let st = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&disk.0)
        .status()
        .expect("mount");
    assert!(st.success());
    let r = build("boltlink");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    assert_eq!(tree(&out), before, "the previous artifacts changed");
}
