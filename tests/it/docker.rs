//! plan / apply / drift / destroy against the real Docker engine that
//! `.ci/run` starts, with the local stand-in images. Each test uses its own
//! stack (own names, subnet and ports) and removes it at the end. Traffic
//! goes only to 127.0.0.1 and to the containers these tests create.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Once};

use crate::support::{Run, root, run, stackc};

static IMAGES: Once = Once::new();

/// The engine must answer and the stand-in images exist; a missing engine
/// fails the test (`.ci/run` starts dockerd).
fn engine() {
    let ok = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "no Docker engine answers; `bash .ci/run` installs and starts dockerd"
    );
    IMAGES.call_once(|| {
        for script in ["scripts/standin-image", "scripts/nginx-image"] {
            let st = Command::new("bash")
                .arg(root().join(script))
                .status()
                .expect("bash");
            assert!(st.success(), "{script} failed");
        }
    });
}

/// A stack in a temporary directory, with the stand-in target profile.
struct Stack {
    dir: tempfile::TempDir,
    name: String,
}

impl Stack {
    fn new(name: &str, text: &str) -> Stack {
        engine();
        let dir = tempfile::tempdir().expect("temp");
        std::fs::write(dir.path().join("stack.kdl"), text).expect("write");
        std::fs::create_dir_all(dir.path().join("targets")).expect("mkdir");
        std::fs::write(
            dir.path().join("targets/standin.kdl"),
            "target \"standin\" {\n    state-dir \".stackc\"\n    image-map {\n        image \"nginx:*\" to=\"stackc-test/nginx:1\"\n        image \"v2/*\" to=\"stackc-test/standin:2\"\n        image \"fail/*\" to=\"stackc-test/standin:fail\"\n        image \"*\" to=\"stackc-test/standin:1\"\n    }\n}\n",
        )
        .expect("write");
        let s = Stack {
            dir,
            name: name.to_string(),
        };
        s.cleanup();
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = stackc();
        c.current_dir(self.path())
            .args(args)
            .args(["--target", "standin"])
            .env("STACK_SECRET", "s3cr3t-canary");
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        run(&mut self.cmd(args))
    }

    fn write(&self, text: &str) {
        std::fs::write(self.path().join("stack.kdl"), text).expect("write");
    }

    /// Remove everything of this stack, volumes included.
    fn cleanup(&self) {
        let list = |kind: &str| -> Vec<String> {
            let out = Command::new("docker")
                .args([
                    kind,
                    "ls",
                    "-q",
                    "--filter",
                    &format!("label=io.stackc.stack={}", self.name),
                ])
                .args(if kind == "container" {
                    vec!["-a"]
                } else {
                    vec![]
                })
                .output()
                .expect("docker");
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        for c in list("container") {
            let _ = Command::new("docker").args(["rm", "-f", &c]).output();
        }
        for n in list("network") {
            let _ = Command::new("docker").args(["network", "rm", &n]).output();
        }
        for v in list("volume") {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", &v])
                .output();
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn inspect(container: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, container])
        .output()
        .expect("docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub(crate) fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Three phases: a database, an api that needs it healthy, a balancer.
pub(crate) fn three_tier(stack: &str, subnet: u8, port: u16, api_env: &str) -> String {
    format!(
        r#"stack "{stack}" version="1.0.0"
network "net" subnet="10.{subnet}.0.0/16" {{
    tier "data" subnet="10.{subnet}.1.0/24"
    tier "apps" subnet="10.{subnet}.2.0/24"
    tier "edge" subnet="10.{subnet}.3.0/24"
}}
service "db" tier="data" {{
    image "postgres:16.4"
    port 5432
    volume "dbdata" path="/data"
    secret "DB_PASSWORD" from="env:STACK_SECRET"
    health cmd="pg_isready" interval="1s" timeout="1s" retries=3
}}
service "api" tier="apps" {{
    image "example/api:1.0.0"
    cluster "active-active" replicas=2
    depends-on "db" condition="healthy"
    port 8080
    env "MODE" "{api_env}"
    health http="/health" port=8080 interval="1s" timeout="1s" retries=3
}}
balancer "edge" tier="edge" {{
    listen 80 published={port}
    route "/" to="api"
}}
"#
    )
}

#[test]
fn a_multi_phase_stack_comes_up_in_order_healthy_and_reapply_changes_nothing() {
    let s = Stack::new("sc-order", &three_tier("sc-order", 61, 18961, "a"));
    let r = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("Plan: 6 to create, 0 to change, 0 to delete"),
        "{}",
        r.stdout
    );

    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // Every container runs and is healthy.
    for c in [
        "sc-order-db",
        "sc-order-api-0",
        "sc-order-api-1",
        "sc-order-edge",
    ] {
        assert_eq!(inspect(c, "{{.State.Health.Status}}"), "healthy", "{c}");
    }
    // Phases: the api started only after the db was healthy, the balancer
    // only after the api.
    let started = |c: &str| inspect(c, "{{.State.StartedAt}}");
    let db_healthy = inspect("sc-order-db", "{{(index .State.Health.Log 0).End}}");
    assert!(
        started("sc-order-api-0") > db_healthy,
        "api started before db was healthy"
    );
    assert!(started("sc-order-edge") > started("sc-order-api-1"));
    // Addresses from the tier ranges; the balancer answers on 127.0.0.1.
    assert!(
        inspect(
            "sc-order-db",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        )
        .starts_with("10.61.1.")
    );
    let body = http_get(18961, "/anything").expect("balancer answers");
    assert!(body.contains("200 OK") && body.contains("v1"), "{body}");
    // The secret reached the container, and nothing stackc printed holds it.
    assert!(
        inspect("sc-order-db", "{{range .Config.Env}}{{println .}}{{end}}")
            .contains("DB_PASSWORD=s3cr3t-canary")
    );
    assert!(!r.stdout.contains("s3cr3t-canary") && !r.stderr.contains("s3cr3t-canary"));

    let r = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);
    let r = s.run(&["drift"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("In sync"), "{}", r.stdout);
}

/// Forwards a unix socket to the engine's and records each request line.
fn recording_proxy(dir: &Path) -> (PathBuf, Arc<Mutex<Vec<String>>>) {
    let sock = dir.join("engine.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = log2.clone();
            std::thread::spawn(move || {
                let Ok(upstream) = UnixStream::connect("/var/run/docker.sock") else {
                    return;
                };
                let (mut c_read, mut u_write) = (
                    client.try_clone().expect("clone"),
                    upstream.try_clone().expect("clone"),
                );
                let (mut u_read, mut c_write) = (upstream, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u_read, &mut c_write);
                });
                let mut buf = [0u8; 65536];
                loop {
                    let n = match c_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    for line in String::from_utf8_lossy(&buf[..n]).lines() {
                        for m in ["GET ", "POST ", "PUT ", "DELETE ", "HEAD "] {
                            if line.starts_with(m) && line.contains(" HTTP/1.") {
                                log.lock().expect("log").push(line.to_string());
                            }
                        }
                    }
                    if u_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (sock, log)
}

fn mutating(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    log.lock()
        .expect("log")
        .iter()
        .filter(|l| !l.starts_with("GET ") && !l.starts_with("HEAD "))
        .cloned()
        .collect()
}

#[test]
fn plan_and_a_no_op_apply_make_no_mutating_calls() {
    let s = Stack::new("sc-noop", &three_tier("sc-noop", 62, 18962, "a"));
    let first = s.run(&["apply"]);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let (sock, log) = recording_proxy(s.path());
    let via = |args: &[&str]| {
        let mut c = s.cmd(args);
        c.env("DOCKER_HOST", format!("unix://{}", sock.display()));
        run(&mut c)
    };
    // A plan with changes pending must not act on them either.
    s.write(&three_tier("sc-noop", 62, 18962, "b"));
    let r = via(&["plan"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("recreate"), "{}", r.stdout);
    s.write(&three_tier("sc-noop", 62, 18962, "a"));
    let r = via(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = via(&["drift"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        log.lock().expect("log").len() > 3,
        "the proxy saw the calls"
    );
    assert_eq!(mutating(&log), Vec::<String>::new());
}

#[test]
fn changing_one_services_env_recreates_only_that_service() {
    let s = Stack::new("sc-env", &three_tier("sc-env", 63, 18963, "a"));
    assert_eq!(s.run(&["apply"]).code, 0);
    let db_id = inspect("sc-env-db", "{{.Id}}");
    let edge_id = inspect("sc-env-edge", "{{.Id}}");
    s.write(&three_tier("sc-env", 63, 18963, "b"));
    let r = s.run(&["plan"]);
    assert!(
        r.stdout
            .contains("-/+ container sc-env-api-0 [phase 2]: recreate (env changed)"),
        "{}",
        r.stdout
    );
    // Network, volume, db and balancer stay.
    assert!(
        r.stdout
            .contains("Plan: 0 to create, 2 to change, 0 to delete, 4 unchanged."),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("-      \"literal\": \"a\"\n")
            && r.stdout.contains("+      \"literal\": \"b\"\n"),
        "a diff of the setting: {}",
        r.stdout
    );
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(inspect("sc-env-db", "{{.Id}}"), db_id, "db untouched");
    assert_eq!(
        inspect("sc-env-edge", "{{.Id}}"),
        edge_id,
        "balancer untouched"
    );
    assert!(
        inspect("sc-env-api-1", "{{range .Config.Env}}{{println .}}{{end}}").contains("MODE=b")
    );
}

#[test]
fn drift_reports_hand_edits_with_exit_2() {
    let s = Stack::new("sc-drift", &three_tier("sc-drift", 64, 18964, "a"));
    assert_eq!(s.run(&["apply"]).code, 0);
    let st = Command::new("docker")
        .args([
            "update",
            "--memory",
            "64m",
            "--memory-swap",
            "64m",
            "sc-drift-api-0",
        ])
        .status()
        .expect("docker");
    assert!(st.success());
    let st = Command::new("docker")
        .args(["stop", "sc-drift-api-1"])
        .status()
        .expect("docker");
    assert!(st.success());
    let r = s.run(&["drift"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("sc-drift-api-0 memory: expected (no limit), found 67108864"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("sc-drift-api-1 state: expected running, found stopped"),
        "{}",
        r.stdout
    );
    let r = s.run(&["drift", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["in_sync"], false);
    // Apply restarts the stopped one; the memory edit is not in the config
    // hash, so drift keeps reporting it until the container is replaced.
    assert_eq!(s.run(&["apply"]).code, 0);
    assert_eq!(inspect("sc-drift-api-1", "{{.State.Running}}"), "true");
}

#[test]
fn an_unhealthy_dependency_stops_the_apply_at_its_phase() {
    let text = three_tier("sc-sick", 65, 18965, "a").replace(
        "health cmd=\"pg_isready\"",
        "health cmd=\"cat /no/such/file\"",
    );
    let s = Stack::new("sc-sick", &text);
    let r = s.run(&["apply", "--timeout", "60"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("service db (container sc-sick-db) is unhealthy"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("No such file"),
        "the last health output: {}",
        r.stderr
    );
    // The next phase never started.
    let out = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", "name=sc-sick-api"])
        .output()
        .expect("docker");
    assert!(out.stdout.is_empty(), "api containers were created");
}

#[test]
fn a_saved_plan_applies_exactly_and_a_stale_one_is_refused() {
    let s = Stack::new("sc-saved", &three_tier("sc-saved", 66, 18966, "a"));
    let r = s.run(&["plan", "--out", "plan.json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let saved = std::fs::read_to_string(s.path().join("plan.json")).expect("plan");
    assert!(!saved.contains("s3cr3t-canary"), "the plan holds no secret");
    let r = s.run(&["apply", "plan.json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // A plan made before the engine changed is refused.
    s.write(&three_tier("sc-saved", 66, 18966, "b"));
    assert_eq!(s.run(&["plan", "--out", "plan2.json"]).code, 0);
    assert!(
        Command::new("docker")
            .args(["stop", "sc-saved-edge"])
            .status()
            .expect("docker")
            .success()
    );
    let r = s.run(&["apply", "plan2.json"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("the engine changed since this plan was made"),
        "{}",
        r.stderr
    );
    assert!(
        inspect(
            "sc-saved-api-0",
            "{{range .Config.Env}}{{println .}}{{end}}"
        )
        .contains("MODE=a"),
        "nothing applied"
    );
}

#[test]
fn destroy_keeps_volumes_unless_asked() {
    let s = Stack::new("sc-destroy", &three_tier("sc-destroy", 67, 18967, "a"));
    assert_eq!(s.run(&["apply"]).code, 0);
    let r = run(s.cmd(&["destroy"]).stdin(std::process::Stdio::null()));
    assert_eq!(r.code, 1, "destroy without --yes off a terminal refuses");
    let r = s.run(&["destroy", "--yes"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("volumes kept"), "{}", r.stdout);
    assert_eq!(
        inspect("sc-destroy_dbdata", "{{.Name}}"),
        "sc-destroy_dbdata"
    );
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "-q",
            "--filter",
            "label=io.stackc.stack=sc-destroy",
        ])
        .output()
        .expect("docker");
    assert!(out.stdout.is_empty());
    let r = s.run(&["destroy", "--yes", "--volumes"]);
    assert_eq!(r.code, 0);
    let out = Command::new("docker")
        .args([
            "volume",
            "ls",
            "-q",
            "--filter",
            "label=io.stackc.stack=sc-destroy",
        ])
        .output()
        .expect("docker");
    assert!(out.stdout.is_empty());
}

#[test]
fn concurrent_applies_never_both_mutate_and_a_killed_apply_converges_with_data_intact() {
    let s = Stack::new("sc-race", &three_tier("sc-race", 68, 18968, "a"));
    let a = s
        .cmd(&["apply"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b = s.run(&["apply"]);
    let a = a.wait_with_output().expect("wait");
    assert_eq!(
        a.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&a.stderr)
    );
    assert_eq!(b.code, 1, "{}{}", b.stdout, b.stderr);
    assert!(
        b.stderr.contains("is locked by `stackc apply`"),
        "{}",
        b.stderr
    );

    // Data written to the volume survives a kill -9 in the middle of an
    // apply and the apply that follows.
    let st = Command::new("docker")
        .args([
            "exec",
            "sc-race-db",
            "sh",
            "-c",
            "echo precious > /data/file",
        ])
        .status()
        .expect("docker");
    assert!(st.success());
    s.write(&three_tier("sc-race", 68, 18968, "b"));
    let mut child = s
        .cmd(&["apply"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(700));
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait();
    // The dead process's lock is stale: the next apply reports and takes it.
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "converged: {}", r.stdout);
    let out = Command::new("docker")
        .args(["exec", "sc-race-db", "cat", "/data/file"])
        .output()
        .expect("docker");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "precious");
}

#[test]
fn a_name_clash_with_an_unowned_container_is_an_error_in_plan() {
    let s = Stack::new("sc-clash", &three_tier("sc-clash", 69, 18969, "a"));
    let _ = Command::new("docker")
        .args(["rm", "-f", "sc-clash-db"])
        .output();
    assert!(
        Command::new("docker")
            .args(["create", "--name", "sc-clash-db", "stackc-test/standin:1"])
            .status()
            .expect("docker")
            .success()
    );
    let r = s.run(&["plan"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("container `sc-clash-db` exists and is not owned by stack `sc-clash`"),
        "{}",
        r.stdout
    );
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 1);
    // The unowned container is untouched.
    assert_eq!(inspect("sc-clash-db", "{{.State.Status}}"), "created");
    let _ = Command::new("docker")
        .args(["rm", "-f", "sc-clash-db"])
        .output();
}

#[test]
fn ctrl_c_stops_cleanly_with_exit_130_and_a_later_apply_converges() {
    let s = Stack::new("sc-int", &three_tier("sc-int", 70, 18970, "a"));
    let child = s
        .cmd(&["apply"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // The database phase waits for health for a few seconds: interrupt then.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("run `stackc apply` again to converge"),
        "{stderr}"
    );
    // Nothing of a later phase was started after the interrupt.
    let out = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", "name=sc-int-edge"])
        .output()
        .expect("docker");
    assert!(out.stdout.is_empty());
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(s.run(&["plan", "--detailed-exitcode"]).code, 0);
}

#[test]
fn the_eip_resso_example_comes_up_in_seed_order_passes_drift_and_destroys_cleanly() {
    engine();
    let example = root().join("examples/eip-resso/stack.kdl");
    let state = tempfile::tempdir().expect("temp");
    let profile = state.path().join("standin.kdl");
    std::fs::write(
        &profile,
        format!(
            "target \"standin\" {{\n    state-dir \"{}\"\n    image-map {{\n        image \"*\" to=\"stackc-test/standin:1\"\n    }}\n}}\n",
            state.path().join("state").display()
        ),
    )
    .expect("write");
    let cmd = |args: &[&str]| {
        let mut c = stackc();
        c.args(args)
            .arg(&example)
            .arg("--target")
            .arg(&profile)
            .env("PG_PASSWORD", "pg-canary-value")
            .env("EIPRESSO_PAYMENT_KEY", "payment-canary-value");
        run(&mut c)
    };
    let _ = cmd(&["destroy", "--yes", "--volumes"]);
    let r = cmd(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // The seed's order: infrastructure, monitoring, config, services, edge.
    let phases: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("phase "))
        .collect();
    let names: Vec<&str> = phases
        .iter()
        .map(|l| l.split(['(', ')']).nth(1).unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["infrastructure", "monitoring", "config", "services", "edge"],
        "{}",
        r.stderr
    );
    let body = http_get(8892, "/config/x").expect("nginx-lb answers on 127.0.0.1:8892");
    assert!(body.contains("200 OK"), "{body}");
    let r = cmd(&["drift"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for out in [&r.stdout, &r.stderr] {
        assert!(!out.contains("canary-value"));
    }
    let r = cmd(&["destroy", "--yes"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "-q",
            "--filter",
            "label=io.stackc.stack=eip-resso",
        ])
        .output()
        .expect("docker");
    assert!(out.stdout.is_empty(), "containers left");
    // Volumes survive destroy; clean them up here.
    let r = cmd(&["destroy", "--yes", "--volumes"]);
    assert_eq!(r.code, 0);
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_secret_value_appears_in_no_artifact_plan_state_file_or_output() {
    let s = Stack::new("sc-secret", &three_tier("sc-secret", 71, 18971, "a"));
    let mut outputs = Vec::new();
    for args in [
        &["build"][..],
        &["plan", "--out", "plan.json", "--json"],
        &["apply"],
        &["drift", "--json"],
        &["plan"],
    ] {
        let mut c = if args[0] == "build" {
            let mut c = stackc();
            c.current_dir(s.path())
                .args(args)
                .env("STACK_SECRET", "s3cr3t-canary");
            c
        } else {
            s.cmd(args)
        };
        c.env("RUST_LOG", "trace");
        let r = run(&mut c);
        assert!(
            r.code == 0 || r.code == 2,
            "{args:?}: {}{}",
            r.stdout,
            r.stderr
        );
        outputs.push(r.stdout);
        outputs.push(r.stderr);
    }
    // The container did get it.
    assert!(
        inspect("sc-secret-db", "{{range .Config.Env}}{{println .}}{{end}}")
            .contains("s3cr3t-canary")
    );
    let written = files(s.path());
    assert!(written.iter().any(|p| p.ends_with("plan.json")));
    assert!(
        written
            .iter()
            .any(|p| p.to_string_lossy().contains("generated/compose"))
    );
    for f in written {
        let bytes = std::fs::read(&f).expect("read");
        assert!(
            !String::from_utf8_lossy(&bytes).contains("s3cr3t-canary"),
            "{} holds the secret",
            f.display()
        );
    }
    for o in outputs {
        assert!(!o.contains("s3cr3t-canary"), "output holds the secret: {o}");
    }
}

#[test]
fn a_changed_balancer_config_replaces_the_balancer_and_serves_the_new_route() {
    let s = Stack::new("sc-cfg", &three_tier("sc-cfg", 72, 18972, "a"));
    assert_eq!(s.run(&["apply"]).code, 0);
    let before = http_get(18972, "/stackc-health").expect("answers");
    assert!(before.contains("200 OK"));
    let text = three_tier("sc-cfg", 72, 18972, "a")
        .replace("    route \"/\" to=\"api\"", "    route \"/v2\" to=\"api\"");
    s.write(&text);
    let r = s.run(&["plan"]);
    assert!(
        r.stdout
            .contains("container sc-cfg-edge [phase 3]: recreate (labels changed)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("Plan: 0 to create, 1 to change"),
        "{}",
        r.stdout
    );
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let conf = std::fs::read_to_string(s.path().join(".stackc/sc-cfg/files/nginx/edge.conf"))
        .expect("mounted config");
    assert!(conf.contains("location /v2 {"), "{conf}");
}

/// A web tier behind nginx with a rollout policy.
fn rolling(stack: &str, subnet: u8, port: u16, image: &str, strategy: &str, steps: &str) -> String {
    format!(
        r#"stack "{stack}" version="1.0.0"
network "net" subnet="10.{subnet}.0.0/16" {{
    tier "apps" subnet="10.{subnet}.2.0/24"
    tier "edge" subnet="10.{subnet}.3.0/24"
}}
service "web" tier="apps" {{
    image "{image}"
    cluster "active-active" replicas=2
    port 8080
    health tcp=8080 interval="1s" timeout="1s" retries=2
    rollout "{strategy}" {{
        steps {steps}
        gate healthy-for="2s" max-error-rate=0.05
        on-failure "rollback"
    }}
}}
balancer "edge" tier="edge" {{
    listen 80 published={port}
    route "/" to="web"
}}
"#
    )
}

/// GET / in a loop until `stop`, counting answers by version and failures.
fn client_loop(
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize, usize)> {
    std::thread::spawn(move || {
        let (mut v1, mut v2, mut failed) = (0, 0, 0);
        // Bounded: at most 20,000 requests, spaced 5 ms apart.
        for _ in 0..20_000 {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            match http_get(port, "/") {
                Some(b) if b.contains("200 OK") && b.contains("v2") => v2 += 1,
                Some(b) if b.contains("200 OK") => v1 += 1,
                _ => failed += 1,
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        (v1, v2, failed)
    })
}

#[test]
fn a_good_blue_green_rollout_moves_all_traffic_with_no_failed_request() {
    let s = Stack::new(
        "sc-bg",
        &rolling("sc-bg", 73, 18973, "v1/web:1.0.0", "blue-green", "50 100"),
    );
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(http_get(18973, "/").expect("answers").contains("v1"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = client_loop(18973, stop.clone());
    s.write(&rolling(
        "sc-bg",
        73,
        18973,
        "v2/web:2.0.0",
        "blue-green",
        "50 100",
    ));
    let r = s.run(&["apply"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (v1, v2, failed) = client.join().expect("client");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("step 1/2 50%: traffic switched")
            && r.stderr.contains("step 2/2 100%: traffic switched")
            && r.stderr.contains("weights 50% new / 50% stable"),
        "{}",
        r.stderr
    );
    assert_eq!(
        failed, 0,
        "failed requests during the rollout ({v1} v1, {v2} v2)"
    );
    assert!(
        v1 > 0 && v2 > 0,
        "both versions served during the rollout: {v1} v1, {v2} v2"
    );
    // Afterwards: only the new version, at the stable names; no -next left.
    for _ in 0..10 {
        assert!(http_get(18973, "/").expect("answers").contains("v2"));
    }
    let out = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", "name=sc-bg-web-0-next"])
        .output()
        .expect("docker");
    assert!(out.stdout.is_empty());
    assert_eq!(s.run(&["plan", "--detailed-exitcode"]).code, 0, "converged");
    let r = s.run(&["rollout", "history", "web", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["attempts"][0]["outcome"], "succeeded");
    let steps = v["attempts"][0]["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    // At 50% the new version really received traffic, without errors.
    assert!(
        steps[0]["requests"].as_u64().expect("count") > 0,
        "{steps:?}"
    );
    assert_eq!(steps[0]["errors"], 0);
}

#[test]
fn a_failing_canary_is_rolled_back_and_history_lists_both_attempts() {
    let s = Stack::new(
        "sc-canary",
        &rolling("sc-canary", 74, 18974, "v1/web:1.0.0", "canary", "50 100"),
    );
    assert_eq!(s.run(&["apply"]).code, 0);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = client_loop(18974, stop.clone());
    s.write(&rolling(
        "sc-canary",
        74,
        18974,
        "fail/web:2.0.0",
        "canary",
        "50 100",
    ));
    let r = s.run(&["apply"]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = client.join();
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("rollout of web rolled back: at 50%: error rate"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("above the gate 0.05"), "{}", r.stderr);
    // Every request is answered by stable again, and the canary is gone.
    for _ in 0..20 {
        let b = http_get(18974, "/").expect("answers");
        assert!(b.contains("200 OK") && b.contains("v1"), "{b}");
    }
    let out = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", "name=sc-canary-web-0-next"])
        .output()
        .expect("docker");
    assert!(out.stdout.is_empty());
    // A good version afterwards succeeds; history has both attempts.
    s.write(&rolling(
        "sc-canary",
        74,
        18974,
        "v2/web:2.0.0",
        "canary",
        "50 100",
    ));
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = s.run(&["rollout", "history", "web"]);
    assert_eq!(r.code, 0);
    let lines: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(
        lines[0].contains("rolled back (at 50%: error rate"),
        "{}",
        r.stdout
    );
    assert!(lines[1].contains("succeeded"), "{}", r.stdout);
}

fn slow_rolling(stack: &str, subnet: u8, port: u16, image: &str) -> String {
    rolling(stack, subnet, port, image, "canary", "25 50 100")
        .replace("healthy-for=\"2s\"", "healthy-for=\"20s\"")
}

/// Wait until the rollout of `web` is running (as `stackc rollout status` says).
fn wait_running(s: &Stack) {
    for _ in 0..120 {
        let r = s.run(&["rollout", "status", "web", "--json"]);
        if r.stdout.contains("\"outcome\": \"running\"") {
            // Let the first step take traffic.
            std::thread::sleep(std::time::Duration::from_secs(2));
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("the rollout never started");
}

#[test]
fn abort_mid_rollout_restores_stable_at_once() {
    let s = Stack::new(
        "sc-abort",
        &slow_rolling("sc-abort", 76, 18976, "v1/web:1.0.0"),
    );
    assert_eq!(s.run(&["apply"]).code, 0);
    let r = s.run(&["rollout", "abort", "web"]);
    assert_eq!(r.code, 1, "nothing to abort yet: {}", r.stderr);
    s.write(&slow_rolling("sc-abort", 76, 18976, "v2/web:2.0.0"));
    let apply = s
        .cmd(&["apply"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_running(&s);
    let r = s.run(&["rollout", "abort", "web"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let started = std::time::Instant::now();
    let out = apply.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rollout of web aborted: by an operator at 25%"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "abort is not immediate"
    );
    for _ in 0..20 {
        assert!(http_get(18976, "/").expect("answers").contains("v1"));
    }
    let out = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", "name=sc-abort-web-0-next"])
        .output()
        .expect("docker");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_rollout_cut_by_kill_9_starts_over_on_the_next_apply() {
    let s = Stack::new(
        "sc-resume",
        &slow_rolling("sc-resume", 77, 18977, "v1/web:1.0.0").replace("20s", "3s"),
    );
    assert_eq!(s.run(&["apply"]).code, 0);
    s.write(&slow_rolling("sc-resume", 77, 18977, "v2/web:2.0.0").replace("20s", "3s"));
    let mut apply = s
        .cmd(&["apply"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    wait_running(&s);
    let _ = Command::new("kill")
        .args(["-9", &apply.id().to_string()])
        .status();
    let _ = apply.wait();
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for _ in 0..10 {
        assert!(http_get(18977, "/").expect("answers").contains("v2"));
    }
    assert_eq!(s.run(&["plan", "--detailed-exitcode"]).code, 0, "converged");
    let r = s.run(&["rollout", "history", "web"]);
    let lines: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(lines[0].contains("interrupted"), "{}", r.stdout);
    assert!(lines[1].contains("succeeded"), "{}", r.stdout);
}

#[test]
fn drift_ignore_rules_list_what_they_ignore_and_why() {
    let text = three_tier("sc-ignore", 78, 18978, "a")
        + "drift-ignore \"api\" field=\"memory\" reason=\"tuned by hand during the incident\"\n";
    let s = Stack::new("sc-ignore", &text);
    assert_eq!(s.run(&["apply"]).code, 0);
    let st = Command::new("docker")
        .args([
            "update",
            "--memory",
            "64m",
            "--memory-swap",
            "64m",
            "sc-ignore-api-0",
        ])
        .status()
        .expect("docker");
    assert!(st.success());
    let r = s.run(&["drift"]);
    assert_eq!(
        r.code, 0,
        "an ignored difference is not drift: {}{}",
        r.stdout, r.stderr
    );
    assert!(
        r.stdout.contains("ignored sc-ignore-api-0 memory")
            && r.stdout.contains("(tuned by hand during the incident)"),
        "{}",
        r.stdout
    );
    // Other fields still count.
    assert!(
        Command::new("docker")
            .args(["stop", "sc-ignore-db"])
            .status()
            .expect("docker")
            .success()
    );
    assert_eq!(s.run(&["drift"]).code, 2);
}

/// `rolling` with a blue-green policy that keeps the previous version.
fn keeping(stack: &str, subnet: u8, port: u16, image: &str, keep: &str) -> String {
    rolling(stack, subnet, port, image, "blue-green", "100").replace(
        "        on-failure \"rollback\"\n",
        &format!("        on-failure \"rollback\"\n        keep-previous \"{keep}\"\n"),
    )
}

fn container_image(name: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.Config.Image}}", name])
        .output()
        .expect("docker");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn blue_green_keeps_the_previous_version_for_undo_until_its_time_is_up() {
    let s = Stack::new(
        "sc-keep",
        &keeping("sc-keep", 90, 18950, "v1/web:1.0.0", "10m"),
    );
    assert_eq!(s.run(&["apply"]).code, 0);
    s.write(&keeping("sc-keep", 90, 18950, "v2/web:2.0.0", "10m"));
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("previous version kept until"),
        "{}",
        r.stderr
    );
    for _ in 0..10 {
        assert!(http_get(18950, "/").expect("answers").contains("v2"));
    }
    // The previous version stands by, outside the plan and drift.
    assert_eq!(
        container_image("sc-keep-web-0-previous").as_deref(),
        Some("stackc-test/standin:1")
    );
    let r = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "a kept version is no change: {}", r.stdout);
    assert!(
        r.stdout
            .contains("sc-keep-web-0-previous: previous version kept for instant rollback until"),
        "{}",
        r.stdout
    );
    assert_eq!(s.run(&["drift"]).code, 0, "a kept version is no drift");
    let r = s.run(&["rollout", "status", "web"]);
    assert!(
        r.stdout.contains("previous version kept until"),
        "{}",
        r.stdout
    );
    // Undo: all traffic on v1 again, at the stable names.
    let r = s.run(&["rollout", "undo", "web"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for _ in 0..10 {
        assert!(http_get(18950, "/").expect("answers").contains("v1"));
    }
    assert_eq!(
        container_image("sc-keep-web-0").as_deref(),
        Some("stackc-test/standin:1")
    );
    assert_eq!(container_image("sc-keep-web-0-previous"), None);
    let r = s.run(&["drift"]);
    assert_eq!(r.code, 2, "the topology still names v2: {}", r.stdout);
    let r = s.run(&["rollout", "undo", "web"]);
    assert_eq!(r.code, 1, "nothing kept any more");
    assert!(r.stderr.contains("no previous version"), "{}", r.stderr);
    let r = s.run(&["rollout", "history", "web"]);
    let lines: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(lines[1].contains("undo"), "{}", r.stdout);
    // Rolled out again with a short keep: once its time is up, the next
    // apply removes the previous version.
    s.write(&keeping("sc-keep", 90, 18950, "v2/web:2.0.0", "1s"));
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(container_image("sc-keep-web-0-previous").is_some());
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(s.run(&["drift"]).code, 2, "an expired version is drift");
    let r = s.run(&["plan"]);
    assert!(
        r.stdout
            .contains("sc-keep-web-0-previous: delete (previous version kept after a rollout"),
        "{}",
        r.stdout
    );
    assert_eq!(s.run(&["apply"]).code, 0);
    assert_eq!(container_image("sc-keep-web-0-previous"), None);
    assert_eq!(s.run(&["drift"]).code, 0);
}

/// `rolling` whose failing gate pauses instead of rolling back.
fn pausing(stack: &str, subnet: u8, port: u16, image: &str) -> String {
    rolling(stack, subnet, port, image, "canary", "50 100")
        .replace("on-failure \"rollback\"", "on-failure \"pause\"")
}

fn wait_outcome(s: &Stack, outcome: &str) -> serde_json::Value {
    for _ in 0..240 {
        let r = s.run(&["rollout", "status", "web", "--json"]);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.stdout)
            && v["attempts"][0]["outcome"] == outcome
        {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("the rollout never became {outcome}");
}

#[test]
fn a_paused_rollout_waits_for_an_operator_and_can_be_aborted_after_its_apply_died() {
    let s = Stack::new("sc-pause", &pausing("sc-pause", 91, 18951, "v1/web:1.0.0"));
    assert_eq!(s.run(&["apply"]).code, 0);
    // 1. A failing gate pauses; the apply waits; the operator promotes.
    s.write(&pausing("sc-pause", 91, 18951, "fail/web:2.0.0"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = client_loop(18951, stop.clone());
    let apply = s
        .cmd(&["apply"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let v = wait_outcome(&s, "paused");
    assert_eq!(v["attempts"][0]["percent"], 50, "{v}");
    assert!(
        v["attempts"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("error rate")),
        "{v}"
    );
    let r = s.run(&["rollout", "status", "web"]);
    assert!(r.stdout.contains("now: 50% of the traffic"), "{}", r.stdout);
    let r = s.run(&["rollout", "abort", "web"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = apply.wait_with_output().expect("wait");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = client.join();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("paused at 50%: weights kept"), "{stderr}");
    assert!(
        stderr.contains("rollout of web aborted: by an operator while paused at 50%"),
        "{stderr}"
    );
    for _ in 0..10 {
        assert!(http_get(18951, "/").expect("answers").contains("v1"));
    }
    // 2. Paused again, and the apply is killed: traffic stays split with no
    // one watching. Promote needs a running apply; abort finishes the job.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = client_loop(18951, stop.clone());
    let mut apply = s
        .cmd(&["apply"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    wait_outcome(&s, "paused");
    let _ = Command::new("kill")
        .args(["-9", &apply.id().to_string()])
        .status();
    let _ = apply.wait();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = client.join();
    let r = s.run(&["rollout", "promote", "web"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("has stopped"), "{}", r.stderr);
    let r = s.run(&["rollout", "abort", "web"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for _ in 0..10 {
        assert!(http_get(18951, "/").expect("answers").contains("v1"));
    }
    assert_eq!(container_image("sc-pause-web-0-next"), None);
    let r = s.run(&["rollout", "history", "web", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["attempts"][1]["outcome"], "aborted", "{v}");
}

#[test]
fn ctrl_c_mid_rollout_returns_traffic_to_stable_before_exiting() {
    let s = Stack::new(
        "sc-rollint",
        &slow_rolling("sc-rollint", 92, 18952, "v1/web:1.0.0"),
    );
    assert_eq!(s.run(&["apply"]).code, 0);
    s.write(&slow_rolling("sc-rollint", 92, 18952, "v2/web:2.0.0"));
    let apply = s
        .cmd(&["apply"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_running(&s);
    let _ = Command::new("kill")
        .args(["-INT", &apply.id().to_string()])
        .status();
    let out = apply.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted at 25%: all traffic back on the stable version"),
        "{stderr}"
    );
    for _ in 0..10 {
        assert!(http_get(18952, "/").expect("answers").contains("v1"));
    }
    assert_eq!(container_image("sc-rollint-web-0-next"), None);
    let r = s.run(&["rollout", "status", "web", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["attempts"][0]["outcome"], "interrupted", "{v}");
    assert!(
        v["attempts"][0]["percent"].is_null(),
        "traffic is on stable: {v}"
    );
}
