//! Faults against a real engine: `stackc apply` killed with SIGKILL right
//! after each of its mutating engine calls (an apply from nothing, a
//! recreate, a rollout behind nginx), sixteen applies of one stack at
//! once, and the engine itself restarting in the middle of an apply.
//!
//! Same conventions as `docker.rs`: each test has its own stack name,
//! subnet (10.80-10.89, 10.93-10.94) and 127.0.0.1 port (18980-18999,
//! 18940-18941), removes what it created, and sends traffic only to
//! 127.0.0.1. A missing component
//! (engine, stand-in image, `dockerd` for a private engine) fails the test
//! in CI and skips it elsewhere only where stated.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Once, mpsc};
use std::time::{Duration, Instant};

use crate::docker::{http_get, three_tier};
use crate::support::{Run, root, run, stackc};

const MAIN_SOCKET: &str = "/var/run/docker.sock";

static IMAGES: Once = Once::new();

/// The machine's engine answers and the stand-in images exist.
fn engine() {
    let ok = Command::new("docker")
        .args(["-H", &format!("unix://{MAIN_SOCKET}"), "info"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "no Docker engine answers on {MAIN_SOCKET}; `bash .ci/run` installs and starts dockerd"
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

/// `docker` against the engine at `sock`.
fn docker(sock: &Path, args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .args(args)
        .output()
        .expect("docker runs")
}

fn docker_out(sock: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&docker(sock, args).stdout)
        .trim()
        .to_string()
}

/// A stack in a temporary directory with the stand-in target profile, on
/// the engine at `sock`.
struct Stack {
    dir: tempfile::TempDir,
    name: String,
    sock: PathBuf,
}

impl Stack {
    fn new(name: &str, text: &str, sock: &Path) -> Stack {
        let dir = tempfile::tempdir().expect("temp");
        std::fs::write(dir.path().join("stack.kdl"), text).expect("write");
        std::fs::create_dir_all(dir.path().join("targets")).expect("mkdir");
        std::fs::write(
            dir.path().join("targets/standin.kdl"),
            "target \"standin\" {\n    state-dir \".stackc\"\n    image-map {\n        image \"nginx:*\" to=\"stackc-test/nginx:1\"\n        image \"*\" to=\"stackc-test/standin:1\"\n    }\n}\n",
        )
        .expect("write");
        let s = Stack {
            dir,
            name: name.to_string(),
            sock: sock.to_path_buf(),
        };
        s.remove(true);
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, text: &str) {
        std::fs::write(self.path().join("stack.kdl"), text).expect("write");
    }

    /// stackc against the engine at `sock`.
    fn cmd_via(&self, sock: &Path, args: &[&str]) -> Command {
        let mut c = stackc();
        c.current_dir(self.path())
            .args(args)
            .args(["--target", "standin"])
            .env("DOCKER_HOST", format!("unix://{}", sock.display()))
            .env("STACK_SECRET", "s3cr3t-canary");
        c
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_via(&self.sock, args)
    }

    fn run(&self, args: &[&str]) -> Run {
        run(&mut self.cmd(args))
    }

    fn ids(&self, kind: &str) -> Vec<String> {
        let filter = format!("label=io.stackc.stack={}", self.name);
        let mut args = vec![kind, "ls", "-q", "--filter", &filter];
        if kind == "container" {
            args.push("-a");
        }
        docker_out(&self.sock, &args)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// Remove the stack's containers and network, and its volumes when
    /// asked.
    fn remove(&self, volumes: bool) {
        let containers = self.ids("container");
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(containers.iter().map(String::as_str));
            let _ = docker(&self.sock, &args);
        }
        for n in self.ids("network") {
            let _ = docker(&self.sock, &["network", "rm", &n]);
        }
        if volumes {
            for v in self.ids("volume") {
                let _ = docker(&self.sock, &["volume", "rm", "-f", &v]);
            }
        }
    }

    /// `name status` of every container of the stack.
    fn statuses(&self) -> Vec<(String, String)> {
        let filter = format!("label=io.stackc.stack={}", self.name);
        docker_out(
            &self.sock,
            &[
                "ps",
                "-a",
                "--filter",
                &filter,
                "--format",
                "{{.Names}}\t{{.Status}}",
            ],
        )
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
    }

    /// Every container of `expected` exists, and each is healthy.
    fn assert_all_healthy(&self, expected: &[&str], context: &str) {
        let st = self.statuses();
        let mut names: Vec<&str> = st.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        let mut want: Vec<String> = expected
            .iter()
            .map(|e| format!("{}-{e}", self.name))
            .collect();
        want.sort();
        assert_eq!(names, want, "{context}: containers {st:?}");
        for (n, s) in &st {
            assert!(s.contains("(healthy)"), "{context}: {n} is `{s}`");
        }
    }

    /// The text in `/data/file` of the db container.
    fn data(&self) -> String {
        docker_out(
            &self.sock,
            &["exec", &format!("{}-db", self.name), "cat", "/data/file"],
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.remove(true);
    }
}

const THREE_TIER: &[&str] = &["db", "api-0", "api-1", "edge"];

// ----- the fault proxy ---------------------------------------------------

/// A proxy in front of a Docker socket. It records every request line and,
/// armed with `n`, forwards the first `n` mutating requests (anything but
/// GET and HEAD), holds every later one, and reports when the engine's
/// answer to the `n`-th arrives, without passing that answer on: the
/// client is then killed knowing nothing of its last call, which the engine
/// did carry out.
struct Proxy {
    sock: PathBuf,
    st: Arc<ProxyState>,
}

struct ProxyState {
    upstream: PathBuf,
    /// Request lines (`POST /v1.41/containers/create?name=x HTTP/1.1`),
    /// in the order they were forwarded.
    log: Mutex<Vec<String>>,
    /// Mutating requests forwarded since the last `arm`.
    mutations: Mutex<usize>,
    /// Trip after this many mutating requests; 0 never trips.
    limit: AtomicUsize,
    /// Bumped by `arm`: connections of an earlier run are dead.
    generation: AtomicUsize,
    tripped: AtomicBool,
    trip: Mutex<Option<mpsc::Sender<()>>>,
}

impl ProxyState {
    /// Nothing more may pass on a connection of `generation`.
    fn stale(&self, generation: usize) -> bool {
        self.tripped.load(SeqCst) || self.generation.load(SeqCst) != generation
    }

    /// Keep a connection open and silent until the next run: a closed
    /// connection would tell the client something before it is killed.
    fn park(&self, generation: usize) {
        let started = Instant::now();
        while self.generation.load(SeqCst) == generation
            && started.elapsed() < Duration::from_secs(600)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn is_mutating(line: &str) -> bool {
    !(line.starts_with("GET ") || line.starts_with("HEAD "))
}

impl Proxy {
    fn new(dir: &Path, name: &str, upstream: &Path) -> Proxy {
        let sock = dir.join(name);
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).expect("bind");
        let st = Arc::new(ProxyState {
            upstream: upstream.to_path_buf(),
            log: Mutex::new(Vec::new()),
            mutations: Mutex::new(0),
            limit: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            tripped: AtomicBool::new(false),
            trip: Mutex::new(None),
        });
        let st2 = st.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let st = st2.clone();
                std::thread::spawn(move || serve(st, client));
            }
        });
        Proxy { sock, st }
    }

    /// Start a new run: forget the log; trip after `limit` mutating calls
    /// (0: never), reported on the returned channel.
    fn arm(&self, limit: usize) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel();
        self.st.generation.fetch_add(1, SeqCst);
        self.st.log.lock().expect("log").clear();
        *self.st.mutations.lock().expect("count") = 0;
        self.st.limit.store(limit, SeqCst);
        *self.st.trip.lock().expect("trip") = Some(tx);
        self.st.tripped.store(false, SeqCst);
        rx
    }

    fn mutating(&self) -> Vec<String> {
        self.st
            .log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| is_mutating(l))
            .map(|l| l.trim_end_matches(" HTTP/1.1").to_string())
            .collect()
    }

    fn requests(&self) -> usize {
        self.st.log.lock().expect("log").len()
    }
}

/// Bytes from a client, read as HTTP/1.1 requests.
struct Requests {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Requests {
    fn fill(&mut self) -> bool {
        let mut b = [0u8; 65536];
        match self.stream.read(&mut b) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                true
            }
        }
    }

    /// Bytes up to and including `delim`.
    fn until(&mut self, delim: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(delim.len()).position(|w| w == delim) {
                return Some(self.buf.drain(..i + delim.len()).collect());
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn exactly(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// The body after `head`, as it arrives (Content-Length or chunked).
    fn forward_body(&mut self, head: &str, to: &mut UnixStream) -> Option<()> {
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_ascii_lowercase())
            })
        };
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let size_line = self.until(b"\r\n")?;
                to.write_all(&size_line).ok()?;
                let text = String::from_utf8_lossy(&size_line);
                let hex = text.trim().split(';').next().unwrap_or("0");
                let size = usize::from_str_radix(hex, 16).ok()?;
                if size == 0 {
                    loop {
                        let trailer = self.until(b"\r\n")?;
                        to.write_all(&trailer).ok()?;
                        if trailer == b"\r\n" {
                            return Some(());
                        }
                    }
                }
                to.write_all(&self.exactly(size + 2)?).ok()?;
            }
        }
        let len: usize = header("content-length").map_or(Some(0), |v| v.parse().ok())?;
        to.write_all(&self.exactly(len)?).ok()
    }
}

fn serve(st: Arc<ProxyState>, client: UnixStream) {
    let generation = st.generation.load(SeqCst);
    let Ok(mut upstream) = UnixStream::connect(&st.upstream) else {
        return;
    };
    // Set before a request goes out whose answer trips the proxy.
    let armed = Arc::new(AtomicBool::new(false));
    {
        let (st, armed) = (st.clone(), armed.clone());
        let mut from = upstream.try_clone().expect("clone");
        let mut to = client.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // hyper sends one request at a time on a connection: bytes
                // arriving after the armed request went out answer it.
                if armed.load(SeqCst) && !st.stale(generation) {
                    st.tripped.store(true, SeqCst);
                    if let Some(tx) = st.trip.lock().expect("trip").take() {
                        let _ = tx.send(());
                    }
                }
                if st.stale(generation) {
                    st.park(generation);
                    break;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Both);
        });
    }
    let mut requests = Requests {
        stream: client.try_clone().expect("clone"),
        buf: Vec::new(),
    };
    while let Some(head) = requests.until(b"\r\n\r\n") {
        if st.stale(generation) {
            st.park(generation);
            break;
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let line = text.lines().next().unwrap_or_default().to_string();
        if is_mutating(&line) {
            let mut count = st.mutations.lock().expect("count");
            let limit = st.limit.load(SeqCst);
            if limit > 0 && *count >= limit {
                drop(count);
                // Held: it never reaches the engine.
                st.park(generation);
                break;
            }
            *count += 1;
            if *count == limit {
                armed.store(true, SeqCst);
            }
            st.log.lock().expect("log").push(line);
        } else {
            st.log.lock().expect("log").push(line);
        }
        if upstream.write_all(&head).is_err()
            || requests.forward_body(&text, &mut upstream).is_none()
        {
            break;
        }
    }
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
}

/// Run `cmd` until it exits, or SIGKILL it as soon as `trip` fires.
/// Returns the exit status, or `None` when it was killed.
fn run_until_trip(
    mut cmd: Command,
    trip: &mpsc::Receiver<()>,
    log: &Path,
) -> Option<std::process::ExitStatus> {
    let out = std::fs::File::create(log).expect("log");
    let mut child = cmd
        .stdout(out.try_clone().expect("clone"))
        .stderr(out)
        .spawn()
        .expect("spawn stackc");
    let started = Instant::now();
    loop {
        if trip.recv_timeout(Duration::from_millis(20)).is_ok() {
            child.kill().expect("SIGKILL");
            let status = child.wait().expect("wait");
            assert_eq!(
                status.signal(),
                Some(9),
                "stackc ended on its own ({status:?}) before the SIGKILL: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            return None;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "stackc apply hung: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// After an interrupted apply: one apply converges, drift finds nothing,
/// every container is healthy, the volume keeps its data, and the apply
/// after that has nothing to do (so no lock is left behind either).
fn assert_converges(s: &Stack, context: &str, volume_created: &str) {
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{context}: {}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("removing a stale lock"),
        "{context}: the killed apply's lock is reported: {}",
        r.stderr
    );
    let d = s.run(&["drift"]);
    assert_eq!(d.code, 0, "{context}: drift: {}{}", d.stdout, d.stderr);
    s.assert_all_healthy(THREE_TIER, context);
    assert_eq!(s.data(), "precious", "{context}: the volume's data");
    assert_eq!(
        docker_out(
            &s.sock,
            &[
                "volume",
                "inspect",
                "-f",
                "{{.CreatedAt}}",
                &format!("{}_dbdata", s.name)
            ]
        ),
        volume_created,
        "{context}: the volume was replaced"
    );
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{context}: {}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("No changes."), "{context}: {}", r.stdout);
}

#[test]
fn kill_9_after_every_mutating_engine_call_and_the_next_apply_converges() {
    engine();
    let main = PathBuf::from(MAIN_SOCKET);
    let s = Stack::new("sc-kill", &three_tier("sc-kill", 80, 18980, "a"), &main);
    let proxy = Proxy::new(s.path(), "engine.sock", &main);
    let mut tried = Vec::new();

    // The very first apply dies right after it created the volume.
    let trip = proxy.arm(2);
    let status = run_until_trip(
        s.cmd_via(&proxy.sock, &["apply"]),
        &trip,
        &s.path().join("first.log"),
    );
    assert!(
        status.is_none(),
        "the first apply was not cut ({status:?}): {}",
        std::fs::read_to_string(s.path().join("first.log")).unwrap_or_default()
    );
    let calls = proxy.mutating();
    assert!(
        calls[1].starts_with("POST /") && calls[1].contains("/volumes/create"),
        "{calls:?}"
    );
    tried.push(calls[1].clone());
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let st = docker(
        &main,
        &[
            "exec",
            "sc-kill-db",
            "sh",
            "-c",
            "echo precious > /data/file",
        ],
    );
    assert!(st.status.success(), "{st:?}");
    let created = docker_out(
        &main,
        &[
            "volume",
            "inspect",
            "-f",
            "{{.CreatedAt}}",
            "sc-kill_dbdata",
        ],
    );

    // A full apply from here (the volume exists, nothing else does),
    // recorded: the fault points.
    s.remove(false);
    proxy.arm(0);
    let r = run(&mut s.cmd_via(&proxy.sock, &["apply"]));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let full = proxy.mutating();
    assert!(
        full.len() >= 9,
        "network and four containers created and started: {full:?}"
    );
    assert_eq!(s.data(), "precious");

    for n in 1..=full.len() {
        s.remove(false);
        let trip = proxy.arm(n);
        let status = run_until_trip(
            s.cmd_via(&proxy.sock, &["apply"]),
            &trip,
            &s.path().join(format!("kill-{n}.log")),
        );
        let calls = proxy.mutating();
        assert!(
            status.is_none(),
            "apply ended ({status:?}) before its mutating call {n}: {calls:?}"
        );
        assert_eq!(calls.len(), n, "exactly {n} mutating calls: {calls:?}");
        let context = format!("killed after call {n} ({})", calls[n - 1]);
        assert_converges(&s, &context, &created);
        tried.push(calls[n - 1].clone());
    }
    eprintln!(
        "{} fault points, each followed by a converging apply:\n  {}",
        tried.len(),
        tried.join("\n  ")
    );
}

/// Wait for `child` up to `limit`; kill it and fail when it takes longer.
fn wait_bounded(
    child: &mut Child,
    limit: Duration,
    what: &str,
    log: &Path,
) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not end within {limit:?}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sixteen_concurrent_applies_exactly_one_mutates_and_the_others_name_it() {
    engine();
    let main = PathBuf::from(MAIN_SOCKET);
    let s = Stack::new("sc-herd", &three_tier("sc-herd", 81, 18981, "a"), &main);
    // One proxy per process: each one's record says whether it mutated.
    let proxies: Vec<Proxy> = (0..16)
        .map(|i| Proxy::new(s.path(), &format!("p{i}.sock"), &main))
        .collect();
    let lock = s.path().join(".stackc/sc-herd/lock");
    // Round 1 starts from nothing. Round 2 changes the api, after an apply
    // killed with SIGKILL while it held the lock: sixteen race for a stale
    // lock.
    for round in 1..=2 {
        if round == 2 {
            s.write(&three_tier("sc-herd", 81, 18981, "b"));
            let mut killed = s
                .cmd(&["apply"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn");
            let mine = format!("\"pid\":{}", killed.id());
            let started = Instant::now();
            while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&mine)) {
                assert!(started.elapsed() < Duration::from_secs(60), "no lock taken");
                std::thread::sleep(Duration::from_millis(10));
            }
            killed.kill().expect("SIGKILL");
            killed.wait().expect("wait");
        }
        for p in &proxies {
            p.arm(0);
        }
        let logs: Vec<PathBuf> = (0..16)
            .map(|i| s.path().join(format!("herd-{round}-{i}.log")))
            .collect();
        let mut children: Vec<Child> = proxies
            .iter()
            .zip(&logs)
            .map(|(p, log)| {
                let out = std::fs::File::create(log).expect("log");
                s.cmd_via(&p.sock, &["apply", "--timeout", "120"])
                    .stdout(out.try_clone().expect("clone"))
                    .stderr(out)
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        let pids: Vec<u32> = children.iter().map(Child::id).collect();
        let codes: Vec<Option<i32>> = children
            .iter_mut()
            .zip(&logs)
            .map(|(c, log)| wait_bounded(c, Duration::from_secs(180), "apply", log).code())
            .collect();
        let texts: Vec<String> = logs
            .iter()
            .map(|l| std::fs::read_to_string(l).expect("log"))
            .collect();
        let all = || {
            (0..16)
                .map(|i| {
                    format!(
                        "--- apply {i} (pid {}, exit {:?}):\n{}",
                        pids[i], codes[i], texts[i]
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let mutators: Vec<usize> = (0..16)
            .filter(|&i| !proxies[i].mutating().is_empty())
            .collect();
        assert_eq!(
            mutators.len(),
            1,
            "round {round}: {mutators:?} mutated\n{}",
            all()
        );
        let m = mutators[0];
        assert_eq!(codes[m], Some(0), "round {round}\n{}", all());
        let holder = format!("is locked by `stackc apply` (pid {} on ", pids[m]);
        let (mut waited, mut nothing) = (0, 0);
        for i in (0..16).filter(|&i| i != m) {
            assert!(proxies[i].requests() > 0, "apply {i} reached the engine");
            if codes[i] == Some(1) && texts[i].contains(&holder) {
                waited += 1;
            } else if codes[i] == Some(0) && texts[i].contains("No changes.") {
                nothing += 1;
            } else {
                panic!(
                    "round {round}: apply {i} neither named the holder (pid {}) nor found nothing to do\n{}",
                    pids[m],
                    all()
                );
            }
        }
        if round == 2 {
            let reporters: Vec<usize> = (0..16)
                .filter(|&i| texts[i].contains("removing a stale lock"))
                .collect();
            assert_eq!(
                reporters,
                [m],
                "round 2: who replaced the stale lock\n{}",
                all()
            );
        }
        eprintln!(
            "round {round}: apply {m} mutated ({} calls); {waited} named it as the lock holder; {nothing} found nothing to do",
            proxies[m].mutating().len()
        );
        let d = s.run(&["drift"]);
        assert_eq!(d.code, 0, "round {round}: {}{}", d.stdout, d.stderr);
        s.assert_all_healthy(THREE_TIER, &format!("round {round}"));
        assert!(!lock.exists(), "round {round}: a lock file is left");
    }
    let env = docker_out(
        &main,
        &[
            "inspect",
            "-f",
            "{{range .Config.Env}}{{println .}}{{end}}",
            "sc-herd-api-1",
        ],
    );
    assert!(env.contains("MODE=b"), "{env}");
}

/// A dockerd of the test's own: own socket, data and exec roots, no default
/// bridge and no iptables rules, so stopping it disturbs nothing else on
/// the machine. Its containers and networks are removed and it is stopped
/// when dropped.
struct PrivateEngine {
    dir: tempfile::TempDir,
    sock: PathBuf,
    daemon: Option<Child>,
}

impl PrivateEngine {
    /// `None` (outside CI only) when this machine cannot run one.
    fn start() -> Option<PrivateEngine> {
        let dockerd = Command::new("sh")
            .args(["-c", "command -v dockerd"])
            .output()
            .is_ok_and(|o| o.status.success());
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !(dockerd && root) {
            assert!(
                !crate::support::in_ci(),
                "a private engine needs `dockerd` and root (dockerd found: {dockerd}, root: {root}); `.ci/run` installs docker.io"
            );
            eprintln!("skipped: a private engine needs `dockerd` and root");
            return None;
        }
        // Short: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("stackc-dockerd-")
            .tempdir_in("/tmp")
            .expect("temp");
        let mut e = PrivateEngine {
            sock: dir.path().join("docker.sock"),
            dir,
            daemon: None,
        };
        e.launch();
        let st = Command::new("sh")
            .arg("-c")
            .arg("docker -H \"$1\" save stackc-test/standin:1 | docker -H \"$2\" load")
            .arg("sh")
            .arg(format!("unix://{MAIN_SOCKET}"))
            .arg(format!("unix://{}", e.sock.display()))
            .status()
            .expect("sh");
        assert!(st.success(), "loading the stand-in image");
        Some(e)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(d.join("dockerd.log"))
            .expect("log");
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(format!("unix://{}", self.sock.display()))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .spawn()
            .expect("dockerd");
        self.daemon = Some(child);
        let started = Instant::now();
        while !docker(&self.sock, &["info"]).status.success() {
            let exited = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && started.elapsed() < Duration::from_secs(60),
                "the private dockerd did not start ({exited:?}):\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, as a service manager stops it, and wait until it is gone.
    fn stop(&mut self) {
        let Some(mut child) = self.daemon.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let ids = docker_out(&self.sock, &["ps", "-aq"]);
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.split_whitespace());
                let _ = docker(&self.sock, &args);
            }
            // A bridge left behind would stay on the host.
            let _ = docker(&self.sock, &["network", "prune", "-f"]);
        }
        self.stop();
    }
}

/// Two phases on the private engine, nothing published: a database with a
/// volume, and an api whose health check takes three seconds, which keeps
/// the apply waiting in its second phase.
fn restart_stack() -> String {
    r#"stack "sc-restart" version="1.0.0"
network "net" subnet="10.82.0.0/16" {
    tier "data" subnet="10.82.1.0/24"
    tier "apps" subnet="10.82.2.0/24"
}
service "db" tier="data" {
    image "postgres:16.4"
    port 5432
    volume "dbdata" path="/data"
    health cmd="pg_isready" interval="1s" timeout="1s" retries=3
}
service "api" tier="apps" {
    image "example/api:1.0.0"
    cluster "active-active" replicas=2
    depends-on "db" condition="healthy"
    port 8080
    health cmd="sleep 3" interval="1s" timeout="10s" retries=3
}
"#
    .to_string()
}

#[test]
fn the_engine_restarting_mid_apply_is_a_clear_error_and_a_later_apply_converges() {
    engine();
    let Some(mut private) = PrivateEngine::start() else {
        return;
    };
    let s = Stack::new("sc-restart", &restart_stack(), &private.sock);
    let log = s.path().join("apply.log");
    let out = std::fs::File::create(&log).expect("log");
    let mut child = s
        .cmd(&["apply", "--timeout", "60"])
        .stdout(out.try_clone().expect("clone"))
        .stderr(out)
        .spawn()
        .expect("spawn");
    // Mid-apply: the api runs, and the apply waits for its health.
    let started = Instant::now();
    while docker_out(
        &private.sock,
        &[
            "ps",
            "-q",
            "--filter",
            "name=^sc-restart-api-1$",
            "--filter",
            "status=running",
        ],
    )
    .is_empty()
    {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the apply ended before the restart: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the api never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = docker(
        &private.sock,
        &[
            "exec",
            "sc-restart-db",
            "sh",
            "-c",
            "echo precious > /data/file",
        ],
    );
    assert!(st.status.success(), "{st:?}");
    // The engine stops, as a service manager stops it, and stays down
    // until the apply has given up (a bounded wait: a hang fails), then
    // starts again.
    let cut = Instant::now();
    private.stop();
    let stopped = cut.elapsed();
    let status = wait_bounded(&mut child, Duration::from_secs(60), "the cut apply", &log);
    let ended = cut.elapsed();
    private.launch();
    let text = std::fs::read_to_string(&log).expect("log");
    assert_eq!(
        status.code(),
        Some(1),
        "exit 1, not a panic or a signal: {text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    let error = text
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {text}"));
    assert!(
        error.contains("Docker engine") && error.contains("stackc apply"),
        "the error says the engine went away and what to do: {error}"
    );
    assert!(!private.log().is_empty());
    eprintln!(
        "engine stopped in {stopped:.1?}; the apply gave up {ended:.1?} after the stop began, with: {error}"
    );
    let r = s.run(&["apply", "--timeout", "60"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let d = s.run(&["drift"]);
    assert_eq!(d.code, 0, "{}{}", d.stdout, d.stderr);
    s.assert_all_healthy(&["db", "api-0", "api-1"], "after the restart");
    assert_eq!(s.data(), "precious");
}

// ----- kill -9 on the recreate path and during a rollout -----------------
//
// These two use subnets 10.93-10.94 and 127.0.0.1 ports 18940-18941.

/// Say the other of two values: each changed apply goes from the state the
/// previous iteration converged to, so no apply is spent to restore it.
fn flip<'a>(cur: &'a str, a: &'a str, b: &'a str) -> &'a str {
    if cur == a { b } else { a }
}

/// `plan --detailed-exitcode` says the stack matches its topology.
fn assert_plan_clean(s: &Stack, context: &str) {
    let p = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        p.code, 0,
        "{context}: the pre-change state is converged: {}{}",
        p.stdout, p.stderr
    );
}

#[test]
fn kill_9_after_every_mutating_call_of_a_recreate_and_the_next_apply_converges() {
    engine();
    let main = PathBuf::from(MAIN_SOCKET);
    let s = Stack::new("sc-krec", &three_tier("sc-krec", 93, 18940, "a"), &main);
    let proxy = Proxy::new(s.path(), "engine.sock", &main);
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let st = docker(
        &main,
        &[
            "exec",
            "sc-krec-db",
            "sh",
            "-c",
            "echo precious > /data/file",
        ],
    );
    assert!(st.status.success(), "{st:?}");
    let created = docker_out(
        &main,
        &[
            "volume",
            "inspect",
            "-f",
            "{{.CreatedAt}}",
            "sc-krec_dbdata",
        ],
    );

    // The change, recorded: its mutating calls are the fault points.
    s.write(&three_tier("sc-krec", 93, 18940, "b"));
    proxy.arm(0);
    let r = run(&mut s.cmd_via(&proxy.sock, &["apply"]));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let full = proxy.mutating();
    for kind in ["/stop", "DELETE /", "/containers/create", "/start"] {
        assert_eq!(
            full.iter().filter(|c| c.contains(kind)).count(),
            2,
            "each api replica is stopped, deleted, created and started once: {full:?}"
        );
    }
    assert_eq!(full.len(), 8, "{full:?}");

    let mut cur = "b";
    let mut tried = Vec::new();
    for n in 1..=full.len() {
        // The pre-change state: the previous iteration's converged stack.
        assert_plan_clean(&s, &format!("before call {n}"));
        let next = flip(cur, "a", "b");
        s.write(&three_tier("sc-krec", 93, 18940, next));
        let trip = proxy.arm(n);
        let status = run_until_trip(
            s.cmd_via(&proxy.sock, &["apply"]),
            &trip,
            &s.path().join(format!("kill-{n}.log")),
        );
        let calls = proxy.mutating();
        assert!(
            status.is_none(),
            "apply ended ({status:?}) before its mutating call {n}: {calls:?}"
        );
        assert_eq!(calls.len(), n, "exactly {n} mutating calls: {calls:?}");
        let context = format!("recreate killed after call {n} ({})", calls[n - 1]);
        assert_converges(&s, &context, &created);
        for c in ["sc-krec-api-0", "sc-krec-api-1"] {
            let env = docker_out(
                &main,
                &[
                    "inspect",
                    "-f",
                    "{{range .Config.Env}}{{println .}}{{end}}",
                    c,
                ],
            );
            assert!(
                env.contains(&format!("MODE={next}")),
                "{context}: {c}: {env}"
            );
        }
        tried.push(calls[n - 1].clone());
        cur = next;
    }
    eprintln!(
        "recreate: {} fault points, each followed by a converging apply:\n  {}",
        tried.len(),
        tried.join("\n  ")
    );
}

/// One web instance behind the generated nginx, with a blue-green rollout
/// in one step and a one-second gate window.
fn kill_rolling(image: &str) -> String {
    format!(
        r#"stack "sc-kroll" version="1.0.0"
network "net" subnet="10.94.0.0/16" {{
    tier "apps" subnet="10.94.2.0/24"
    tier "edge" subnet="10.94.3.0/24"
}}
service "web" tier="apps" {{
    image "{image}"
    port 8080
    health tcp=8080 interval="500ms" timeout="1s" retries=2
    rollout "blue-green" {{
        steps 100
        gate healthy-for="1s" max-error-rate=0.05
        on-failure "rollback"
    }}
}}
balancer "edge" tier="edge" {{
    listen 80 published=18941
    route "/" to="web"
}}
"#
    )
}

/// GET / in a loop (5 ms apart) until `stop`: when each answer came and
/// whether it was a 200.
fn timed_client(
    port: u16,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, Option<String>)>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        // Bounded: at most 20,000 requests.
        for _ in 0..20_000 {
            if stop.load(SeqCst) {
                break;
            }
            let answer = http_get(port, "/").filter(|b| b.contains("200 OK"));
            out.push((Instant::now(), answer));
            std::thread::sleep(Duration::from_millis(5));
        }
        out
    })
}

fn history(s: &Stack) -> Vec<serde_json::Value> {
    let r = s.run(&["rollout", "history", "web", "--json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    v["attempts"].as_array().expect("attempts").clone()
}

#[test]
fn kill_9_after_every_mutating_call_of_a_rollout_and_the_next_apply_converges() {
    engine();
    let main = PathBuf::from(MAIN_SOCKET);
    let images = ["v1/web:1.0.0", "v2/web:2.0.0"];
    let version = |image: &str| if image == images[0] { "v1" } else { "v2" };
    let s = Stack::new("sc-kroll", &kill_rolling(images[0]), &main);
    {
        // The stand-in profile of `docker.rs`, with the `v2/` image.
        std::fs::write(
            s.path().join("targets/standin.kdl"),
            "target \"standin\" {\n    state-dir \".stackc\"\n    image-map {\n        image \"nginx:*\" to=\"stackc-test/nginx:1\"\n        image \"v2/*\" to=\"stackc-test/standin:2\"\n        image \"*\" to=\"stackc-test/standin:1\"\n    }\n}\n",
        )
        .expect("write");
    }
    let proxy = Proxy::new(s.path(), "engine.sock", &main);
    let r = s.run(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(http_get(18941, "/").expect("answers").contains("v1"));

    // One rollout, recorded: its mutating calls are the fault points.
    s.write(&kill_rolling(images[1]));
    proxy.arm(0);
    let r = run(&mut s.cmd_via(&proxy.sock, &["apply"]));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("rollout of web complete"), "{}", r.stderr);
    let full = proxy.mutating();
    let count = |kind: &str| full.iter().filter(|c| c.contains(kind)).count();
    assert!(
        count("/exec") == 4 && count("sc-kroll-web-next") >= 4,
        "the new version made and removed, two switches (exec create and start each): {full:?}"
    );
    eprintln!("one rollout's mutating calls:\n  {}", full.join("\n  "));

    let mut cur = images[1];
    let mut tried = Vec::new();
    let mut during = Vec::new();
    for n in 1..=full.len() {
        assert_plan_clean(&s, &format!("before call {n}"));
        let next = flip(cur, images[0], images[1]);
        let before = history(&s).len();
        s.write(&kill_rolling(next));
        let trip = proxy.arm(n);
        let status = run_until_trip(
            s.cmd_via(&proxy.sock, &["apply"]),
            &trip,
            &s.path().join(format!("kill-{n}.log")),
        );
        let calls = proxy.mutating();
        assert!(
            status.is_none(),
            "apply ended ({status:?}) before its mutating call {n}: {calls:?}"
        );
        assert_eq!(calls.len(), n, "exactly {n} mutating calls: {calls:?}");
        let context = format!("rollout killed after call {n} ({})", calls[n - 1]);

        // A client runs through the converging apply and after it.
        let stop = Arc::new(AtomicBool::new(false));
        let client = timed_client(18941, stop.clone());
        let r = s.run(&["apply"]);
        let converged = Instant::now();
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock");
        std::thread::sleep(Duration::from_millis(600));
        stop.store(true, SeqCst);
        let answers = client.join().expect("client");
        assert_eq!(r.code, 0, "{context}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("removing a stale lock"),
            "{context}: the killed apply's lock is reported: {}",
            r.stderr
        );
        let after: Vec<_> = answers.iter().filter(|(t, _)| *t > converged).collect();
        assert!(
            after.len() > 10,
            "{context}: {} requests after",
            after.len()
        );
        let failed_after = after.iter().filter(|(_, a)| a.is_none()).count();
        assert_eq!(
            failed_after, 0,
            "{context}: requests failed after convergence\n{}{}",
            r.stdout, r.stderr
        );
        for (_, a) in &after {
            let a = a.as_deref().unwrap_or_default();
            assert!(
                a.contains(version(next)),
                "{context}: after convergence every answer is from {next}: {a}"
            );
        }
        // Nor during it: a new version left with traffic is taken out of
        // the balancers before it is replaced or removed.
        let failed = answers.iter().filter(|(_, a)| a.is_none()).count();
        assert_eq!(
            failed,
            0,
            "{context}: requests failed during the converging apply ({} in all)\n{}{}",
            answers.len(),
            r.stdout,
            r.stderr
        );
        during.push(answers.len() - after.len());

        // nginx runs the plan's config: each request after convergence
        // went to the stable instance alone, not first to an address of
        // the new version (gone, or a later rollout's, not yet gated).
        let web = docker_out(
            &main,
            &[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                "sc-kroll-web",
            ],
        );
        let log = docker_out(
            &main,
            &[
                "logs",
                "--since",
                &format!("{}.{:09}", since.as_secs(), since.subsec_nanos()),
                "sc-kroll-edge",
            ],
        );
        let upstreams: Vec<&str> = log
            .lines()
            .filter_map(|l| {
                l.split_once("upstream=")?
                    .1
                    .split(" upstream_status=")
                    .next()
            })
            .collect();
        assert!(upstreams.len() > 10, "{context}: balancer log: {log}");
        let want = format!("{web}:8080");
        assert!(
            upstreams.iter().all(|u| *u == want),
            "{context}: requests after convergence went elsewhere than {want}: {:?}",
            upstreams
                .iter()
                .filter(|u| **u != want)
                .take(5)
                .collect::<Vec<_>>()
        );
        let d = s.run(&["drift"]);
        assert_eq!(d.code, 0, "{context}: drift: {}{}", d.stdout, d.stderr);
        s.assert_all_healthy(&["web", "edge"], &context);
        let leftover = docker_out(
            &main,
            &["ps", "-a", "-q", "--filter", "name=sc-kroll-web-next"],
        );
        assert!(leftover.is_empty(), "{context}: a -next container is left");
        let h = history(&s);
        let new = &h[before..];
        assert!(new.len() >= 2, "{context}: {h:#?}");
        assert_eq!(new[0]["outcome"], "interrupted", "{context}: {h:#?}");
        assert!(
            new[..new.len() - 1]
                .iter()
                .all(|a| a["outcome"] == "interrupted"),
            "{context}: {h:#?}"
        );
        assert_eq!(
            new[new.len() - 1]["outcome"],
            "succeeded",
            "{context}: {h:#?}"
        );
        assert_eq!(
            new[new.len() - 1]["to_image"],
            new[0]["to_image"],
            "{context}"
        );
        let r = s.run(&["apply"]);
        assert_eq!(r.code, 0, "{context}: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("No changes."), "{context}: {}", r.stdout);
        tried.push(calls[n - 1].clone());
        cur = next;
    }
    eprintln!(
        "rollout: {} fault points, each followed by a converging apply with no failed request (requests during each: {during:?}):\n  {}",
        tried.len(),
        tried.join("\n  ")
    );
}
