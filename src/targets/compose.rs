//! docker-compose target: one `compose/docker-compose.yml` per stack.
//!
//! - One network with the topology's subnet; every instance gets a static
//!   address from its tier's range and the service name as a DNS alias, so
//!   `postgres` resolves to every member and `postgres-0` to one.
//!   Containers without a tier take addresses from a dynamic range that no
//!   tier uses.
//! - Clustered services run one compose service per member
//!   (`NAME-0..NAME-n`), each with its own named volumes.
//! - Published ports bind to 127.0.0.1 unless the port is `public`, which
//!   binds to the environment's `publish-bind` (default 0.0.0.0).
//! - Secrets never appear: `from="env:VAR"` becomes `${VAR:?...}`, read by
//!   compose from its environment; `from="file:PATH"` becomes a compose
//!   secret mounted under /run/secrets and `NAME_FILE` pointing at it.
//! - Every `$` of a user value is written `$$`, so compose interpolates
//!   only the secret references stackc writes itself.

use serde_json::{Map, Value, json};

use super::{
    Artifact, Ctx, LABEL_CONFIG_HASH, LABEL_OWNER, LABEL_SERVICE, LABEL_STACK, OWNER, Ordered,
    Target, instances::Instance, nginx,
};
use crate::model::*;

pub const PATH: &str = "compose/docker-compose.yml";

/// Escape a user value for compose interpolation.
pub fn escape(s: &str) -> String {
    s.replace('$', "$$")
}

/// Container name of the exporter of `kind` that a service declares.
pub fn exporter_container(service: &str, kind: &str) -> String {
    format!("{service}-{kind}-exporter")
}

/// Container name of a balancer's nginx exporter.
pub fn balancer_exporter_container(balancer: &str) -> String {
    format!("{balancer}-nginx-exporter")
}

/// Container name of a host exporter declared in `monitoring`.
pub fn host_exporter_container(kind: &str) -> String {
    format!("{kind}-exporter")
}

/// Default images of the components stackc adds itself.
pub const NGINX_IMAGE: &str = "nginx:1.27-alpine";
pub const PROMETHEUS_IMAGE: &str = "prom/prometheus:v2.53.0";
pub const GRAFANA_IMAGE: &str = "grafana/grafana:11.1.0";

/// Image and target flag of the exporter for `kind`.
pub fn exporter_image(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "postgres" => (
            "prometheuscommunity/postgres-exporter:v0.15.0",
            "env:DATA_SOURCE_URI",
        ),
        "redis" => ("oliver006/redis_exporter:v1.62.0", "env:REDIS_ADDR"),
        "mysql" => ("prom/mysqld-exporter:v0.15.1", "arg:--mysqld.address"),
        "elasticsearch" => (
            "quay.io/prometheuscommunity/elasticsearch-exporter:v1.7.0",
            "arg:--es.uri",
        ),
        "consul" => ("prom/consul-exporter:v0.12.0", "arg:--consul.server"),
        "nginx" => (
            "nginx/nginx-prometheus-exporter:1.3.0",
            "arg:--nginx.scrape-uri",
        ),
        "node" => ("prom/node-exporter:v1.8.2", ""),
        _ => return None,
    })
}

fn network_name(cx: &Ctx) -> String {
    cx.topology
        .network
        .as_ref()
        .map_or_else(|| cx.stack().to_string(), |n| n.name.value.clone())
}

/// The network's dynamic range: the highest /24 (or smaller block) of the
/// subnet that no tier overlaps.
fn dynamic_range(net: &Network) -> Option<ipnet::Ipv4Net> {
    let prefix = net.subnet.value.prefix_len().clamp(24, 30);
    let subnets: Vec<ipnet::Ipv4Net> = net.subnet.value.subnets(prefix).ok()?.collect();
    subnets.into_iter().rev().find(|cand| {
        !net.tiers.iter().any(|t| {
            t.subnet.value.contains(&cand.network()) || cand.contains(&t.subnet.value.network())
        })
    })
}

fn label_set(
    cx: &Ctx,
    service: &str,
    extra: &[(Spanned<String>, String)],
) -> Ordered<String, String> {
    let mut m = Ordered::new();
    m.set(LABEL_STACK.into(), cx.stack().to_string());
    m.set(LABEL_SERVICE.into(), service.to_string());
    m.set(LABEL_OWNER.into(), OWNER.to_string());
    for (k, v) in extra {
        m.set(k.value.clone(), escape(v));
    }
    m
}

fn labels(cx: &Ctx, service: &str, extra: &[(Spanned<String>, String)]) -> Map<String, Value> {
    label_set(cx, service, extra)
        .0
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

use crate::source::Spanned;

/// A container's place on the stack's network.
#[derive(serde::Serialize)]
struct Attach {
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv4_address: Option<String>,
    aliases: [String; 1],
}

fn attach(cx: &Ctx, alias: &str, address: Option<std::net::Ipv4Addr>) -> Ordered<String, Attach> {
    let mut n = Ordered::new();
    n.set(
        network_name(cx),
        Attach {
            ipv4_address: address.map(|a| a.to_string()),
            aliases: [alias.to_string()],
        },
    );
    n
}

fn networking(cx: &Ctx, alias: &str, address: Option<std::net::Ipv4Addr>) -> Value {
    serde_json::to_value(attach(cx, alias, address)).expect("plain data")
}

fn publish_bind(cx: &Ctx) -> String {
    cx.topology
        .env()
        .and_then(|e| e.publish_bind.as_ref())
        .map_or_else(|| "0.0.0.0".to_string(), |a| a.value.to_string())
}

fn port_mapping(cx: &Ctx, host: u16, container: u16, public: bool, proto: Protocol) -> Value {
    Value::String(port_text(cx, host, container, public, proto))
}

fn port_text(cx: &Ctx, host: u16, container: u16, public: bool, proto: Protocol) -> String {
    let bind = if public {
        publish_bind(cx)
    } else {
        "127.0.0.1".to_string()
    };
    let suffix = if proto == Protocol::Udp { "/udp" } else { "" };
    format!("{bind}:{host}:{container}{suffix}")
}

#[derive(serde::Serialize)]
struct Healthcheck {
    test: (&'static str, String),
    interval: String,
    timeout: String,
    retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_period: Option<String>,
}

fn healthcheck(h: &Health) -> Healthcheck {
    let test = match &h.probe {
        HealthProbe::Cmd(c) => escape(&c.value),
        // A path holding `&`, `(`, `*` or others sh reads is quoted
        // (validated paths hold no `'`).
        HealthProbe::Http { path, port } => {
            let url = crate::cat!(
                "http://127.0.0.1:",
                itoa::Buffer::new().format(port.value),
                escape(&path.value)
            );
            let plain = url
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-:%+=@,".contains(&b));
            if plain {
                crate::cat!("wget -q -O /dev/null ", url, " || exit 1")
            } else {
                crate::cat!("wget -q -O /dev/null '", url, "' || exit 1")
            }
        }
        // `-z` is not in busybox nc; connecting with an empty stdin works in
        // busybox, OpenBSD and traditional netcat alike.
        HealthProbe::Tcp(port) => format!(
            "nc -w 2 127.0.0.1 {} </dev/null >/dev/null || exit 1",
            port.value
        ),
    };
    Healthcheck {
        test: ("CMD-SHELL", test),
        interval: compose_duration(&h.interval),
        timeout: compose_duration(&h.timeout),
        retries: h.retries,
        start_period: h.start_period.as_ref().map(compose_duration),
    }
}

/// Compose reads Go-style durations: `1m30s`, `500ms`.
fn compose_duration(d: &Duration) -> String {
    let mut ms = d.millis;
    let mut out = String::new();
    let mut digits = itoa::Buffer::new();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= size {
            out.push_str(digits.format(ms / size));
            out.push_str(unit);
            ms %= size;
        }
    }
    if ms > 0 || out.is_empty() {
        out.push_str(digits.format(ms));
        out.push_str("ms");
    }
    out
}

fn cpus(c: &Cpu) -> String {
    let whole = c.millis / 1000;
    let frac = c.millis % 1000;
    let mut digits = itoa::Buffer::new();
    let mut out = digits.format(whole).to_string();
    if frac != 0 {
        // Three digits, without the trailing zeros: 250 is `.25`.
        let three = [frac / 100, frac / 10 % 10, frac % 10].map(|d| b'0' + d as u8);
        let keep = three.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1);
        out.push('.');
        out.push_str(std::str::from_utf8(&three[..keep]).expect("ASCII digits"));
    }
    out
}

#[derive(serde::Serialize)]
struct Deploy {
    resources: ResourceBlock,
}

#[derive(serde::Serialize)]
struct ResourceBlock {
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<Amounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reservations: Option<Amounts>,
}

#[derive(serde::Serialize)]
struct Amounts {
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<String>,
}

fn resources(r: &Resources) -> Deploy {
    let set = |s: &ResourceSet| {
        let a = Amounts {
            cpus: s.cpu.as_ref().map(|c| cpus(&c.value)),
            memory: s
                .memory
                .as_ref()
                .map(|m| itoa::Buffer::new().format(m.value.bytes).to_string()),
        };
        (a.cpus.is_some() || a.memory.is_some()).then_some(a)
    };
    Deploy {
        resources: ResourceBlock {
            limits: set(&r.limits),
            reservations: set(&r.requests),
        },
    }
}

fn condition(c: Condition) -> &'static str {
    match c {
        Condition::Started => "service_started",
        Condition::Healthy => "service_healthy",
        Condition::Completed => "service_completed_successfully",
    }
}

/// A compose service of one instance, its keys in the order they print.
#[derive(serde::Serialize)]
struct ComposeService {
    image: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    command: Vec<String>,
    #[serde(skip_serializing_if = "Ordered::is_empty")]
    environment: Ordered<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<SecretUse>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<Healthcheck>,
    #[serde(skip_serializing_if = "Ordered::is_empty")]
    depends_on: Ordered<String, DependsOn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deploy: Option<Deploy>,
    restart: &'static str,
    labels: Ordered<String, String>,
    networks: Ordered<String, Attach>,
}

#[derive(serde::Serialize)]
struct SecretUse {
    source: String,
    target: String,
}

#[derive(serde::Serialize)]
struct DependsOn {
    condition: &'static str,
}

/// A top-level secret or volume entry.
#[derive(serde::Serialize)]
struct SecretFile {
    file: String,
}

#[derive(serde::Serialize)]
struct VolumeDef {
    labels: Ordered<String, String>,
}

/// The compose service for one instance of a service.
fn service_instance(
    cx: &mut Ctx,
    s: &Service,
    inst: &Instance,
    secrets: &mut Entries,
    volumes: &mut Entries,
) -> ComposeService {
    let t = cx.topology;
    let mut command: Vec<String> = s.command.iter().map(|c| escape(&c.value)).collect();
    command.extend(s.args.iter().map(|a| escape(&a.value)));
    let mut env = Ordered::new();
    for e in &s.env {
        env.set(e.name.value.clone(), escape(&e.value.value));
    }
    if let Some(r) = &s.runtime_opts {
        env.set(r.env.clone(), escape(&r.value.value));
    }
    let mut svc_secrets = Vec::new();
    for sec in &s.secrets {
        match &sec.source {
            SecretSource::Env(var) => {
                env.set(
                    sec.name.value.clone(),
                    crate::cat!(
                        "${",
                        var,
                        ":?set ",
                        var,
                        " to the value of secret ",
                        sec.name.value,
                        "}"
                    ),
                );
            }
            SecretSource::File(path) => {
                let id = format!(
                    "{}-{}",
                    s.name.value,
                    sec.name.value.to_lowercase().replace(['_', '.'], "-")
                );
                secrets.insert(id.clone(), SecretFile { file: escape(path) });
                svc_secrets.push(SecretUse {
                    source: id,
                    target: sec.name.value.clone(),
                });
                env.set(
                    format!("{}_FILE", sec.name.value),
                    format!("/run/secrets/{}", sec.name.value),
                );
            }
        }
    }
    let clustered = inst.name != s.name.value;
    let mut mounts = Vec::new();
    for v in &s.volumes {
        // Each member of a cluster keeps its own data.
        let name = if clustered {
            crate::cat!(v.name.value, "-", itoa::Buffer::new().format(inst.ordinal))
        } else {
            v.name.value.clone()
        };
        let mut labels = Ordered::new();
        labels.set(LABEL_STACK.into(), cx.stack().to_string());
        labels.set(LABEL_OWNER.into(), OWNER.to_string());
        volumes.insert(name.clone(), VolumeDef { labels });
        let ro = if v.read_only { ":ro" } else { "" };
        mounts.push(crate::cat!(name, ":", escape(&v.path.value), ro));
    }
    let published: Vec<&Port> = s.ports.iter().filter(|p| p.published.is_some()).collect();
    let mut ports = Vec::new();
    if !published.is_empty() {
        if inst.ordinal == 0 {
            ports = published
                .iter()
                .map(|p| {
                    port_text(
                        cx,
                        p.published.as_ref().map_or(p.container.value, |h| h.value),
                        p.container.value,
                        p.public,
                        p.protocol,
                    )
                })
                .collect();
        }
        if clustered && inst.ordinal == 1 {
            cx.unmapped(
                Target::Compose,
                format!("published ports of clustered service `{}`", s.name.value).as_str(),
                published[0].span,
                "a host port can be bound once: only member 0 publishes it; put a balancer in front of the cluster",
            );
        }
    }
    let mut deps = Ordered::new();
    for d in &s.depends_on {
        let condition = condition(d.condition);
        if let Some(dep) = cx.plan.index(&d.service.value).map(|i| &t.services[i]) {
            for i in cx.plan.of(t, &dep.name.value) {
                deps.set(i.name.clone(), DependsOn { condition });
            }
        } else {
            deps.set(d.service.value.clone(), DependsOn { condition });
        }
    }
    let mut labels = label_set(cx, &s.name.value, &s.labels);
    labels.set("io.stackc.instance".into(), inst.name.clone());
    labels.set("io.stackc.role".into(), inst.role.as_str().to_string());
    let mut service = ComposeService {
        image: s.image.value.clone(),
        command,
        environment: env,
        secrets: svc_secrets,
        volumes: mounts,
        ports,
        healthcheck: s.health.as_ref().map(healthcheck),
        depends_on: deps,
        deploy: s.resources.as_ref().map(resources),
        restart: match s.restart {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::UnlessStopped => "unless-stopped",
        },
        labels,
        networks: attach(cx, &s.name.value, inst.address),
    };
    // The hash of everything above, the hash label itself aside.
    let hash = super::hash_json(&service);
    service.labels.set(LABEL_CONFIG_HASH.into(), hash);
    service
}

fn exporter_service(cx: &Ctx, s: &Service, x: &Exporter) -> Option<(String, Value)> {
    let (default_image, how) = exporter_image(&x.kind.value)?;
    let image = x
        .image
        .as_ref()
        .map_or(default_image.to_string(), |i| i.value.clone());
    let port = s.ports.first().map_or(0, |p| p.container.value);
    let target = match x.kind.value.as_str() {
        "postgres" => format!("{}:{port}/postgres?sslmode=disable", s.name.value),
        "redis" => format!("redis://{}:{port}", s.name.value),
        "elasticsearch" | "consul" => format!("http://{}:{port}", s.name.value),
        _ => format!("{}:{port}", s.name.value),
    };
    let mut m = Map::new();
    m.insert("image".into(), json!(image));
    if let Some(var) = how.strip_prefix("env:") {
        m.insert("environment".into(), json!({ var: target }));
    } else if let Some(flag) = how.strip_prefix("arg:") {
        m.insert("command".into(), json!([format!("{flag}={target}")]));
    }
    let name = exporter_container(&s.name.value, &x.kind.value);
    m.insert("depends_on".into(), json!({ cx.plan.of(cx.topology, &s.name.value)[0].name.clone(): { "condition": "service_started" } }));
    m.insert("restart".into(), json!("unless-stopped"));
    m.insert("labels".into(), Value::Object(labels(cx, &name, &[])));
    m.insert("networks".into(), networking(cx, &name, None));
    Some((name, Value::Object(m)))
}

/// The `services:` map, handed to the sink in parts as its entries are
/// built. Container names are unique (`stackc check` refuses clashes), so
/// no entry ever replaces another.
struct Services<'s> {
    out: String,
    sink: &'s mut dyn super::Sink,
    any: bool,
}

impl<'s> Services<'s> {
    fn insert<T: serde::Serialize>(&mut self, name: String, v: T) {
        if !self.any {
            self.out.push_str("services:\n");
            self.any = true;
        }
        crate::yaml::write_entry(&mut self.out, 2, &name, &v);
        if self.out.len() >= 1 << 16 {
            self.sink.write(PATH, &self.out, false);
            self.out.clear();
        }
    }

    /// The text not handed out yet, the map closed, and the sink back.
    fn finish(mut self) -> (String, &'s mut dyn super::Sink) {
        if !self.any {
            self.out.push_str("services: {}\n");
        }
        (self.out, self.sink)
    }
}

/// The entries of a top-level map, each printed as soon as it is built
/// (the value trees are not kept): an entry inserted again replaces the
/// first in its place, as in a map.
#[derive(Default)]
struct Entries {
    texts: Vec<String>,
    index: crate::Map<String, usize>,
}

impl Entries {
    fn insert<T: serde::Serialize>(&mut self, name: String, v: T) {
        let mut text = String::new();
        crate::yaml::write_entry(&mut text, 2, &name, &v);
        match self.index.get(&name) {
            Some(&i) => self.texts[i] = text,
            None => {
                self.index.insert(name, self.texts.len());
                self.texts.push(text);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Append `key:` and the entries to `out`, handing it to `sink` in
    /// parts as it grows.
    fn write(self, key: &str, out: &mut String, sink: &mut dyn super::Sink) {
        out.push_str(key);
        if self.texts.is_empty() {
            out.push_str(": {}\n");
            return;
        }
        out.push_str(":\n");
        for t in self.texts {
            out.push_str(&t);
            if out.len() >= 1 << 16 {
                sink.write(PATH, out, false);
                out.clear();
            }
        }
    }
}

pub fn emit(cx: &mut Ctx) -> Vec<Artifact> {
    let mut c = super::Collect::default();
    emit_to(cx, &mut c);
    c.artifacts
}

/// As [`emit`], into `sink`: the file in parts.
pub fn emit_to(cx: &mut Ctx, sink: &mut dyn super::Sink) {
    let t = cx.topology;
    let mut services = Services {
        out: format!(
            "# Generated by stackc from the topology of stack `{}`. Do not edit: change the topology and run `stackc build`.\n",
            cx.stack()
        ),
        sink,
        any: false,
    };
    let mut secrets = Entries::default();
    let mut volumes = Entries::default();
    for (i, s) in t.services.iter().enumerate() {
        let instances = cx.plan.services[i].clone();
        for inst in &instances {
            let v = service_instance(cx, s, inst, &mut secrets, &mut volumes);
            services.insert(inst.name.clone(), v);
        }
        for x in &s.exporters {
            match exporter_service(cx, s, x) {
                Some((name, v)) => {
                    services.insert(name, v);
                }
                None => cx.unmapped(
                    Target::Compose,
                    &format!("exporter `{}`", x.kind.value),
                    x.span,
                    "stackc knows no image for this exporter; set image= on the exporter",
                ),
            }
        }
        if let Some(a) = &s.autoscale {
            cx.unmapped(
                Target::Compose,
                "autoscale",
                a.span,
                "compose has no autoscaler: the service runs its cluster replicas",
            );
        }
        if let Some(v) = &s.vertical_autoscale {
            cx.unmapped(
                Target::Compose,
                "vertical-autoscale",
                v.span,
                "compose has no vertical autoscaler: resources stay as declared",
            );
        }
    }
    for (bi, b) in t.balancers.iter().enumerate() {
        for inst in cx.plan.balancers[bi].clone() {
            let mut m = Map::new();
            m.insert(
                "image".into(),
                json!(b.image.as_ref().map_or(NGINX_IMAGE, |i| i.value.as_str())),
            );
            m.insert(
                "volumes".into(),
                json!([format!("../{}:/etc/nginx/nginx.conf:ro", nginx::path(b))]),
            );
            if inst.ordinal == 0 {
                let ports: Vec<Value> = b
                    .listeners
                    .iter()
                    .map(|l| {
                        port_mapping(
                            cx,
                            l.published.as_ref().map_or(l.port.value, |p| p.value),
                            l.port.value,
                            l.public,
                            Protocol::Tcp,
                        )
                    })
                    .collect();
                if !ports.is_empty() {
                    m.insert("ports".into(), json!(ports));
                }
            }
            let listen = b.listeners.first().map_or(80, |l| l.port.value);
            m.insert("healthcheck".into(), json!({
                "test": ["CMD-SHELL", format!("wget -q -O /dev/null http://127.0.0.1:{listen}{} || exit 1", nginx::HEALTH_PATH)],
                "interval": "5s", "timeout": "3s", "retries": 3,
            }));
            let mut deps = Map::new();
            for r in &b.routes {
                for target in cx.plan.of(t, &r.to.value) {
                    deps.insert(
                        target.name.clone(),
                        json!({ "condition": "service_healthy" }),
                    );
                }
            }
            // Routes to services without a health check can only wait for start.
            for r in &b.routes {
                if let Some(s) = cx
                    .plan
                    .index(&r.to.value)
                    .map(|i| &t.services[i])
                    .filter(|s| s.health.is_none())
                {
                    for target in cx.plan.of(t, &s.name.value) {
                        deps.insert(
                            target.name.clone(),
                            json!({ "condition": "service_started" }),
                        );
                    }
                }
            }
            if !deps.is_empty() {
                m.insert("depends_on".into(), Value::Object(deps));
            }
            m.insert("restart".into(), json!("unless-stopped"));
            let mut l = labels(cx, &b.name.value, &[]);
            l.insert("io.stackc.instance".into(), json!(inst.name));
            m.insert("labels".into(), Value::Object(l));
            m.insert(
                "networks".into(),
                networking(cx, &b.name.value, inst.address),
            );
            services.insert(inst.name.clone(), Value::Object(m));
        }
        if t.monitoring.is_some() {
            let name = balancer_exporter_container(&b.name.value);
            let listen = b.listeners.first().map_or(80, |l| l.port.value);
            services.insert(name.clone(), json!({
                "image": exporter_image("nginx").map(|e| e.0),
                "command": [format!("--nginx.scrape-uri=http://{}:{listen}{}", b.name.value, nginx::STATUS_PATH)],
                "restart": "unless-stopped",
                "labels": labels(cx, &name, &[]),
                "networks": networking(cx, &name, None),
            }));
        }
    }
    if let Some(mon) = &t.monitoring {
        let p = &mon.prometheus;
        let inst = cx.plan.monitoring.get("prometheus").cloned();
        let mut m = Map::new();
        m.insert(
            "image".into(),
            json!(
                p.image
                    .as_ref()
                    .map_or(PROMETHEUS_IMAGE, |i| i.value.as_str())
            ),
        );
        m.insert(
            "command".into(),
            json!([
                "--config.file=/etc/prometheus/prometheus.yml",
                "--storage.tsdb.path=/prometheus",
                format!("--storage.tsdb.retention.time={}", p.retention.text),
                format!("--web.listen-address=:{}", p.port),
            ]),
        );
        m.insert(
            "volumes".into(),
            json!([
                "../prometheus:/etc/prometheus:ro",
                "prometheus-data:/prometheus"
            ]),
        );
        volumes.insert(
            "prometheus-data".into(),
            json!({ "labels": { LABEL_STACK: cx.stack(), LABEL_OWNER: OWNER } }),
        );
        if let Some(h) = &p.published {
            m.insert(
                "ports".into(),
                json!([port_mapping(cx, h.value, p.port, false, Protocol::Tcp)]),
            );
        }
        m.insert("healthcheck".into(), json!({
            "test": ["CMD-SHELL", format!("wget -q -O /dev/null http://127.0.0.1:{}/-/ready || exit 1", p.port)],
            "interval": "10s", "timeout": "3s", "retries": 3,
        }));
        m.insert("restart".into(), json!("unless-stopped"));
        m.insert(
            "labels".into(),
            Value::Object(labels(cx, "prometheus", &[])),
        );
        m.insert(
            "networks".into(),
            networking(cx, "prometheus", inst.and_then(|i| i.address)),
        );
        services.insert("prometheus".into(), Value::Object(m));
        if let Some(g) = &mon.grafana {
            let inst = cx.plan.monitoring.get("grafana").cloned();
            let mut m = Map::new();
            m.insert(
                "image".into(),
                json!(g.image.as_ref().map_or(GRAFANA_IMAGE, |i| i.value.as_str())),
            );
            let mut mounts = vec![json!(
                "../grafana/provisioning:/etc/grafana/provisioning:ro"
            )];
            if g.dashboards {
                mounts.push(json!(
                    "../grafana/dashboards:/var/lib/grafana/dashboards:ro"
                ));
            }
            m.insert("volumes".into(), json!(mounts));
            m.insert(
                "environment".into(),
                json!({ "GF_SERVER_HTTP_PORT": g.port.to_string() }),
            );
            if let Some(h) = &g.published {
                m.insert(
                    "ports".into(),
                    json!([port_mapping(cx, h.value, g.port, false, Protocol::Tcp)]),
                );
            }
            m.insert(
                "depends_on".into(),
                json!({ "prometheus": { "condition": "service_started" } }),
            );
            m.insert("restart".into(), json!("unless-stopped"));
            m.insert("labels".into(), Value::Object(labels(cx, "grafana", &[])));
            m.insert(
                "networks".into(),
                networking(cx, "grafana", inst.and_then(|i| i.address)),
            );
            services.insert("grafana".into(), Value::Object(m));
        }
        for x in &mon.exporters {
            let name = host_exporter_container(&x.value);
            match exporter_image(&x.value) {
                Some((image, _)) => {
                    services.insert(
                        name.clone(),
                        json!({
                            "image": image,
                            "restart": "unless-stopped",
                            "labels": labels(cx, &name, &[]),
                            "networks": networking(cx, &name, None),
                        }),
                    );
                }
                None => cx.unmapped(
                    Target::Compose,
                    &format!("exporter `{}`", x.value),
                    x.span,
                    "stackc knows no image for this exporter",
                ),
            }
        }
    }
    for j in &t.jobs {
        cx.unmapped(Target::Compose, &format!("job `{}`", j.name.value), j.span, "compose has no scheduler: run the job from cron, or use the kubernetes target (CronJob)");
    }
    if let Some(k) = &t.kubernetes {
        cx.unmapped(
            Target::Compose,
            "the kubernetes block",
            k.span,
            "namespace, RBAC and network policies apply to the kubernetes target only",
        );
    }

    let mut network = Map::new();
    network.insert("driver".into(), json!("bridge"));
    if let Some(net) = &t.network {
        let mut cfg = Map::new();
        cfg.insert("subnet".into(), json!(net.subnet.value.to_string()));
        if let Some(r) = dynamic_range(net) {
            cfg.insert("ip_range".into(), json!(r.to_string()));
        }
        network.insert("ipam".into(), json!({ "config": [cfg] }));
    }
    network.insert(
        "labels".into(),
        json!({ LABEL_STACK: cx.stack(), LABEL_OWNER: OWNER }),
    );

    let (mut out, sink) = services.finish();
    crate::yaml::write_entry(
        &mut out,
        0,
        "networks",
        &json!({ network_name(cx): network }),
    );
    if !volumes.is_empty() {
        volumes.write("volumes", &mut out, sink);
    }
    if !secrets.is_empty() {
        secrets.write("secrets", &mut out, sink);
    }
    sink.write(PATH, &out, true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_go_form() {
        assert_eq!(compose_duration(&Duration::parse("90s").unwrap()), "1m30s");
        assert_eq!(
            compose_duration(&Duration::parse("500ms").unwrap()),
            "500ms"
        );
        assert_eq!(compose_duration(&Duration::parse("1h").unwrap()), "1h");
    }

    #[test]
    fn cpus_as_decimal() {
        assert_eq!(cpus(&Cpu::parse("500m").unwrap()), "0.5");
        assert_eq!(cpus(&Cpu::parse("2").unwrap()), "2");
        assert_eq!(cpus(&Cpu::parse("1250m").unwrap()), "1.25");
        assert_eq!(cpus(&Cpu::parse("1001m").unwrap()), "1.001");
        assert_eq!(cpus(&Cpu::parse("10m").unwrap()), "0.01");
        assert_eq!(cpus(&Cpu::parse("100m").unwrap()), "0.1");
    }

    #[test]
    fn dollar_is_escaped() {
        assert_eq!(escape("a$b${c}$(d)"), "a$$b$${c}$$(d)");
    }
}
