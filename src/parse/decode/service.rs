//! Decoding `service` nodes.

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::*;
use crate::parse::reader::{NodeReader, Once, unknown_node};
use crate::parse::tree::{Node, Value};
use crate::source::Spanned;

const SERVICE_CHILDREN: &[&str] = &[
    "image",
    "command",
    "args",
    "port",
    "env",
    "secret",
    "volume",
    "health",
    "resources",
    "runtime-opts",
    "label",
    "metrics",
    "exporter",
    "depends-on",
    "cluster",
    "autoscale",
    "vertical-autoscale",
    "rollout",
    "restart",
];

/// Default health timing, as compose and Kubernetes users expect.
const DEFAULT_INTERVAL: &str = "10s";
const DEFAULT_TIMEOUT: &str = "5s";
const DEFAULT_RETRIES: u32 = 3;

pub fn decode(node: &Node, out: &mut Diagnostics) -> Option<Service> {
    let mut r = NodeReader::new(node);
    r.allow_children();
    let name = r.arg_string(0, "a service name");
    let tier = r.prop_string("tier");
    let service_account = r.prop_string("service-account");
    r.finish(out);

    let mut once = Once::default();
    let mut image = None;
    let mut command = Vec::new();
    let mut args = Vec::new();
    // Each list sized for its children: a large topology holds tens of
    // thousands of them, mostly of one or two items.
    let count = |name: &str| {
        node.children()
            .iter()
            .filter(|c| c.name.value == name)
            .count()
    };
    let mut ports = Vec::with_capacity(count("port"));
    let mut env = Vec::with_capacity(count("env"));
    let mut secrets = Vec::with_capacity(count("secret"));
    let mut volumes = Vec::with_capacity(count("volume"));
    let mut health = None;
    let mut resources = None;
    let mut runtime_opts = None;
    let mut labels = Vec::new();
    let mut metrics = None;
    let mut exporters = Vec::new();
    let mut depends_on = Vec::new();
    let mut cluster = None;
    let mut autoscale = None;
    let mut vertical_autoscale = None;
    let mut rollout = None;
    let mut restart = RestartPolicy::UnlessStopped;

    for child in node.children() {
        let kind = child.name.value.as_str();
        let single = matches!(
            kind,
            "image"
                | "command"
                | "args"
                | "health"
                | "resources"
                | "runtime-opts"
                | "metrics"
                | "cluster"
                | "autoscale"
                | "vertical-autoscale"
                | "rollout"
                | "restart"
        );
        if single && !once.first(child, out) {
            continue;
        }
        match kind {
            "image" => {
                let mut c = NodeReader::new(child);
                image = c.arg_string(0, "an image reference");
                c.finish(out);
            }
            "command" => {
                let mut c = NodeReader::new(child);
                command = c.rest_strings(0, "a command word");
                if command.is_empty() {
                    c.arg_string(0, "the program to run");
                }
                c.finish(out);
            }
            "args" => {
                let mut c = NodeReader::new(child);
                args = c.rest_strings(0, "an argument");
                c.finish(out);
            }
            "port" => ports.extend(decode_port(child, out)),
            "env" => {
                let mut c = NodeReader::new(child);
                let n = c.arg_string(0, "a variable name");
                let v = match c.node.args().nth(1) {
                    None => {
                        c.arg_string(1, "a value");
                        None
                    }
                    Some(e) => {
                        let text = match &e.value {
                            Value::String(s) => Some(s.to_string()),
                            Value::Integer(i) => Some(i.to_string()),
                            Value::Float(f) => Some(f.to_string()),
                            Value::Bool(b) => Some(b.to_string()),
                            Value::Null => {
                                c.opt_arg_string(1, "an environment value");
                                None
                            }
                        };
                        text.map(|t| Spanned::new(t, e.value_span))
                    }
                };
                c.mark_args_read(2);
                c.finish(out);
                if let (Some(name), Some(value)) = (n, v) {
                    env.push(EnvVar { name, value });
                }
            }
            "secret" => secrets.extend(decode_secret(child, out)),
            "volume" => volumes.extend(decode_volume(child, out)),
            "health" => health = decode_health(child, out),
            "resources" => resources = decode_resources(child, out),
            "runtime-opts" => {
                let mut c = NodeReader::new(child);
                let value = c.arg_string(0, "the runtime options");
                let var = c
                    .prop_string("env")
                    .map(|s| s.value)
                    .unwrap_or_else(|| "JAVA_OPTS".into());
                c.finish(out);
                runtime_opts = value.map(|value| RuntimeOpts { value, env: var });
            }
            "label" => {
                let mut c = NodeReader::new(child);
                let k = c.arg_string(0, "a label key");
                let v = c.arg_string(1, "a label value");
                c.finish(out);
                if let (Some(k), Some(v)) = (k, v) {
                    labels.push((k, v.value));
                }
            }
            "metrics" => {
                let mut c = NodeReader::new(child);
                let path = c
                    .prop_string("path")
                    .unwrap_or_else(|| Spanned::new("/metrics".into(), child.name.span));
                let port = c.prop_port("port");
                if port.is_none()
                    && !child
                        .props()
                        .any(|e| e.name.as_ref().is_some_and(|n| n.value == "port"))
                {
                    c.missing_prop("port", "metrics path=\"/metrics\" port=9100");
                }
                c.finish(out);
                if let Some(port) = port {
                    metrics = Some(Metrics {
                        path,
                        port,
                        span: child.span,
                    });
                }
            }
            "exporter" => {
                let mut c = NodeReader::new(child);
                let kind = c.arg_string(0, "an exporter kind (postgres, redis, nginx, mysql, ...)");
                let image = c.prop_string("image");
                let port = c.prop_port("port");
                c.finish(out);
                if let Some(kind) = kind {
                    let port = port
                        .map(|p| p.value)
                        .unwrap_or_else(|| default_exporter_port(&kind.value));
                    exporters.push(Exporter {
                        kind,
                        image,
                        port,
                        span: child.span,
                    });
                }
            }
            "depends-on" => {
                let mut c = NodeReader::new(child);
                let names = c.rest_strings(0, "a service name");
                if names.is_empty() {
                    c.arg_string(0, "a service name");
                }
                let condition = match c.prop_string("condition") {
                    Some(s) => c.choice(
                        &s,
                        "condition",
                        &["started", "healthy", "completed"],
                        |v| match v {
                            "started" => Some(Condition::Started),
                            "healthy" => Some(Condition::Healthy),
                            "completed" => Some(Condition::Completed),
                            _ => None,
                        },
                    ),
                    None => Some(Condition::Healthy),
                };
                c.finish(out);
                if let Some(condition) = condition {
                    for service in names {
                        depends_on.push(Dependency {
                            service,
                            condition,
                            span: child.span,
                        });
                    }
                }
            }
            "cluster" => cluster = decode_cluster(child, out),
            "autoscale" => {
                let mut c = NodeReader::new(child);
                let min = c.prop_u32("min", 1..=10_000);
                let max = c.prop_u32("max", 1..=10_000);
                let cpu_percent = c.prop_percent("cpu");
                let memory_percent = c.prop_percent("memory");
                if min.is_none() && !has_prop(child, "min") {
                    c.missing_prop("min", "autoscale min=3 max=10 cpu=\"70%\"");
                }
                if max.is_none() && !has_prop(child, "max") {
                    c.missing_prop("max", "autoscale min=3 max=10 cpu=\"70%\"");
                }
                if !has_prop(child, "cpu") && !has_prop(child, "memory") {
                    c.error(
                        Diagnostic::error(Code::AutoscaleRange, "autoscale has no target")
                            .at(child.name.span, "scales on nothing")
                            .help("add cpu=\"70%\" and/or memory=\"75%\""),
                    );
                }
                c.finish(out);
                if let (Some(min), Some(max)) = (min, max) {
                    autoscale = Some(Autoscale {
                        min,
                        max,
                        cpu_percent,
                        memory_percent,
                        span: child.span,
                    });
                }
            }
            "vertical-autoscale" => vertical_autoscale = decode_vpa(child, out),
            "rollout" => rollout = decode_rollout(child, out),
            "restart" => {
                let mut c = NodeReader::new(child);
                if let Some(s) = c.arg_string(0, "a restart policy")
                    && let Some(p) = c.choice(
                        &s,
                        "restart policy",
                        &["no", "always", "on-failure", "unless-stopped"],
                        |v| match v {
                            "no" => Some(RestartPolicy::No),
                            "always" => Some(RestartPolicy::Always),
                            "on-failure" => Some(RestartPolicy::OnFailure),
                            "unless-stopped" => Some(RestartPolicy::UnlessStopped),
                            _ => None,
                        },
                    )
                {
                    restart = p;
                }
                c.finish(out);
            }
            _ => unknown_node(child, "`service`", SERVICE_CHILDREN, out),
        }
    }

    let name = name?;
    // A misspelt `image` is already reported with a suggestion (looked
    // for only when there is no image: it compares every child's name).
    let misspelt = || {
        node.children().iter().any(|c| {
            c.name.value != "image" && crate::diag::did_you_mean(&c.name.value, ["image"]).is_some()
        })
    };
    if image.is_none() && !node.children().iter().any(|c| c.name.value == "image") && !misspelt() {
        out.push(
            Diagnostic::error(
                Code::MissingNode,
                format!("service `{}` has no image", name.value),
            )
            .at(name.span, "no `image` in this service")
            .help("add a line such as: image \"postgres:16\""),
        );
    }
    let cluster = cluster.unwrap_or(Cluster {
        strategy: Strategy::Single,
        replicas: Spanned::new(1, name.span),
        backup_count: None,
        split_brain_protection: false,
        span: name.span,
    });
    // A service with a missing or broken image is still a service: keeping
    // it avoids follow-on "unknown service" errors for its dependents. The
    // empty image is never emitted, since the error stops every build.
    let image = image.unwrap_or_else(|| Spanned::new(String::new(), name.span));
    Some(Service {
        name,
        tier,
        image,
        command,
        args,
        ports,
        env,
        secrets,
        volumes,
        health,
        resources,
        runtime_opts: runtime_opts.map(Box::new),
        labels,
        metrics,
        exporters,
        depends_on,
        cluster,
        autoscale: autoscale.map(Box::new),
        vertical_autoscale: vertical_autoscale.map(Box::new),
        rollout: rollout.map(Box::new),
        restart,
        service_account,
        span: node.span,
    })
}

fn has_prop(node: &Node, key: &str) -> bool {
    node.props()
        .any(|e| e.name.as_ref().is_some_and(|n| n.value == key))
}

/// The port an exporter listens on by default, from each exporter's docs.
pub fn default_exporter_port(kind: &str) -> u16 {
    match kind {
        "postgres" => 9187,
        "redis" => 9121,
        "nginx" => 9113,
        "mysql" => 9104,
        "node" => 9100,
        "elasticsearch" => 9114,
        "consul" => 9107,
        _ => 9100,
    }
}

fn decode_port(node: &Node, out: &mut Diagnostics) -> Option<Port> {
    let mut c = NodeReader::new(node);
    let container = c.arg_u32(0, "the container port", 1..=65535);
    let published = c.prop_port("published");
    let public = c.prop_bool("public").unwrap_or(false);
    let name = c.prop_string("name").map(|s| s.value);
    let protocol = match c.prop_string("protocol") {
        Some(s) => c.choice(&s, "protocol", &["tcp", "udp"], |v| match v {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }),
        None => Some(Protocol::Tcp),
    };
    c.finish(out);
    Some(Port {
        container: container.map(|s| Spanned::new(s.value as u16, s.span))?,
        published,
        protocol: protocol?,
        public,
        name,
        span: node.span,
    })
}

pub(crate) fn decode_secret(node: &Node, out: &mut Diagnostics) -> Option<Secret> {
    let mut c = NodeReader::new(node);
    let name = c.arg_string(0, "the variable the secret is exposed as");
    if let Some(lit) = c.prop_entry("value") {
        c.error(
            Diagnostic::error(Code::LiteralSecret, "a secret value is written in the topology")
                .at(lit.span, "literal secret")
                .help("reference it instead: from=\"env:VAR\" (read at apply time) or from=\"file:/path\""),
        );
    }
    if node.args().nth(1).is_some() {
        let e = node.args().nth(1).expect("checked");
        c.error(
            Diagnostic::error(Code::LiteralSecret, "a secret value is written in the topology")
                .at(e.span, "literal secret")
                .help("reference it instead: from=\"env:VAR\" (read at apply time) or from=\"file:/path\""),
        );
        c.rest_strings(1, "");
    }
    let from = c.prop_string("from");
    let source = match &from {
        Some(f) => {
            if let Some(v) = f.value.strip_prefix("env:") {
                Some(SecretSource::Env(v.to_string()))
            } else if let Some(p) = f.value.strip_prefix("file:") {
                Some(SecretSource::File(p.to_string()))
            } else {
                c.error(
                    Diagnostic::error(Code::InvalidSecretSource, format!("`{}` is not a secret reference", f.value))
                        .at(f.span, "expected env:VAR or file:/path")
                        .help("from=\"env:PG_PASSWORD\" reads the environment at apply time; from=\"file:/run/secrets/pg\" reads a file"),
                );
                None
            }
        }
        None => {
            if !has_prop(node, "value") && node.args().nth(1).is_none() {
                c.missing_prop("from", "secret \"DB_PASSWORD\" from=\"env:DB_PASSWORD\"");
            }
            None
        }
    };
    c.finish(out);
    Some(Secret {
        name: name?,
        source: source?,
        span: node.span,
    })
}

pub(crate) fn decode_volume(node: &Node, out: &mut Diagnostics) -> Option<Volume> {
    let mut c = NodeReader::new(node);
    let name = c.arg_string(0, "a volume name");
    let path = c.required_prop_string(
        "path",
        "volume \"pgdata\" path=\"/var/lib/postgresql/data\"",
    );
    let read_only = c.prop_bool("read-only").unwrap_or(false);
    c.finish(out);
    Some(Volume {
        name: name?,
        path: path?,
        read_only,
        span: node.span,
    })
}

fn decode_health(node: &Node, out: &mut Diagnostics) -> Option<Health> {
    let mut c = NodeReader::new(node);
    let cmd = c.prop_string("cmd");
    let http = c.prop_string("http");
    let tcp = c.prop_port("tcp");
    let port = c.prop_port("port");
    let interval = c.prop_duration("interval");
    let timeout = c.prop_duration("timeout");
    let retries = c.prop_u32("retries", 1..=100);
    let start_period = c.prop_duration("start-period");
    let kinds = [
        has_prop(node, "cmd"),
        has_prop(node, "http"),
        has_prop(node, "tcp"),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let mut probe = None;
    if kinds != 1 {
        c.error(
            Diagnostic::error(
                Code::HealthCheck,
                if kinds == 0 { "the health check says nothing to check" } else { "the health check has more than one probe" },
            )
            .at(node.name.span, "needs exactly one of cmd=, http=, tcp=")
            .help("health http=\"/health\" port=8080  |  health cmd=\"pg_isready\"  |  health tcp=6379"),
        );
    } else if let Some(cmd) = cmd {
        probe = Some(HealthProbe::Cmd(cmd));
    } else if let Some(path) = http {
        match port {
            Some(port) => probe = Some(HealthProbe::Http { path, port }),
            None if !has_prop(node, "port") => c.error(
                Diagnostic::error(Code::HealthCheck, "an http health check needs a port")
                    .at(path.span, "which port?")
                    .help(format!("health http=\"{}\" port=8080", path.value)),
            ),
            None => {}
        }
    } else if let Some(t) = tcp {
        probe = Some(HealthProbe::Tcp(t));
    }
    if has_prop(node, "port") && !has_prop(node, "http") {
        let e = node
            .props()
            .find(|e| e.name.as_ref().is_some_and(|n| n.value == "port"))
            .expect("present");
        c.error(
            Diagnostic::error(Code::HealthCheck, "`port=` belongs to http health checks")
                .at(e.span, "not used")
                .help("for a TCP check write tcp=PORT"),
        );
    }
    c.finish(out);
    Some(Health {
        probe: probe?,
        interval: interval.unwrap_or_else(|| Duration::parse(DEFAULT_INTERVAL).expect("constant")),
        timeout: timeout.unwrap_or_else(|| Duration::parse(DEFAULT_TIMEOUT).expect("constant")),
        retries: retries.map_or(DEFAULT_RETRIES, |r| r.value),
        start_period,
        span: node.span,
    })
}

fn decode_resource_set(c: &mut NodeReader) -> ResourceSet {
    ResourceSet {
        cpu: c.prop_cpu("cpu"),
        memory: c.prop_memory("memory"),
    }
}

fn decode_resources(node: &Node, out: &mut Diagnostics) -> Option<Resources> {
    let mut c = NodeReader::new(node);
    c.allow_children();
    // `resources cpu=.. memory=..` sets requests and limits alike.
    let both = decode_resource_set(&mut c);
    let mut requests = both.clone();
    let mut limits = both;
    let mut once = Once::default();
    for child in node.children() {
        match child.name.value.as_str() {
            "requests" | "limits" => {
                if !once.first(child, out) {
                    continue;
                }
                let mut cc = NodeReader::new(child);
                let set = decode_resource_set(&mut cc);
                cc.finish(out);
                let target = if child.name.value == "requests" {
                    &mut requests
                } else {
                    &mut limits
                };
                if set.cpu.is_some() {
                    target.cpu = set.cpu;
                }
                if set.memory.is_some() {
                    target.memory = set.memory;
                }
            }
            _ => unknown_node(child, "`resources`", &["requests", "limits"], out),
        }
    }
    c.finish(out);
    Some(Resources {
        requests,
        limits,
        span: node.span,
    })
}

fn decode_cluster(node: &Node, out: &mut Diagnostics) -> Option<Cluster> {
    let mut c = NodeReader::new(node);
    let strategy = c
        .arg_string(0, "a clustering strategy")
        .and_then(|s| c.choice(&s, "clustering strategy", Strategy::NAMES, Strategy::parse));
    let replicas = c.prop_u32("replicas", 1..=10_000);
    let backup_count = c.prop_u32("backup-count", 0..=6);
    let split_brain_protection = c.prop_bool("split-brain-protection").unwrap_or(false);
    c.finish(out);
    // An invalid count is already reported; checking the strategy's size
    // against a made-up one would only add a second, wrong error.
    if replicas.is_none() && has_prop(node, "replicas") {
        return None;
    }
    let replicas = replicas.unwrap_or_else(|| Spanned::new(1, node.name.span));
    Some(Cluster {
        strategy: strategy?,
        replicas,
        backup_count,
        split_brain_protection,
        span: node.span,
    })
}

fn decode_vpa(node: &Node, out: &mut Diagnostics) -> Option<VerticalAutoscale> {
    let mut c = NodeReader::new(node);
    c.allow_children();
    let mode = match c.prop_string("mode") {
        Some(s) => c.choice(
            &s,
            "vertical autoscaling mode",
            &["off", "initial", "recreate", "auto"],
            |v| match v {
                "off" => Some(VpaMode::Off),
                "initial" => Some(VpaMode::Initial),
                "recreate" => Some(VpaMode::Recreate),
                "auto" => Some(VpaMode::Auto),
                _ => None,
            },
        ),
        None => Some(VpaMode::Auto),
    };
    let mut min = ResourceSet::default();
    let mut max = ResourceSet::default();
    let mut once = Once::default();
    for child in node.children() {
        match child.name.value.as_str() {
            "min" | "max" => {
                if !once.first(child, out) {
                    continue;
                }
                let mut cc = NodeReader::new(child);
                let set = decode_resource_set(&mut cc);
                cc.finish(out);
                if child.name.value == "min" {
                    min = set
                } else {
                    max = set
                }
            }
            _ => unknown_node(child, "`vertical-autoscale`", &["min", "max"], out),
        }
    }
    c.finish(out);
    Some(VerticalAutoscale {
        mode: mode?,
        min,
        max,
        span: node.span,
    })
}

fn decode_rollout(node: &Node, out: &mut Diagnostics) -> Option<Rollout> {
    let mut c = NodeReader::new(node);
    c.allow_children();
    let strategy = c.arg_string(0, "a rollout strategy").and_then(|s| {
        c.choice(
            &s,
            "rollout strategy",
            &["blue-green", "canary"],
            |v| match v {
                "blue-green" => Some(RolloutStrategy::BlueGreen),
                "canary" => Some(RolloutStrategy::Canary),
                _ => None,
            },
        )
    });
    c.finish(out);
    let mut once = Once::default();
    let mut steps = None;
    let mut gate = Gate::default();
    let mut on_failure = OnFailure::Rollback;
    let mut keep_previous = None;
    for child in node.children() {
        if !once.first(child, out) {
            continue;
        }
        match child.name.value.as_str() {
            "steps" => {
                let mut cc = NodeReader::new(child);
                let values = cc.rest_u32(0, "a step percentage", 1..=100);
                if child.args().next().is_none() {
                    cc.arg_u32(0, "at least one percentage", 1..=100);
                } else if values.len() == child.args().count() {
                    let span = values
                        .first()
                        .map(|v| v.span)
                        .unwrap_or(child.span)
                        .join(values.last().map(|v| v.span).unwrap_or(child.span));
                    let nums: Vec<u32> = values.iter().map(|v| v.value).collect();
                    if let Some(bad) = values.windows(2).find(|w| w[1].value <= w[0].value) {
                        cc.error(
                            Diagnostic::error(Code::InvalidSteps, "rollout steps must increase")
                                .at(bad[1].span, format!("{} is not above {}", bad[1].value, bad[0].value))
                                .help("list increasing percentages ending at 100, e.g. steps 25 50 75 100"),
                        );
                    } else if nums.last() != Some(&100) {
                        cc.error(
                            Diagnostic::error(Code::InvalidSteps, "rollout steps must end at 100")
                                .at(values.last().expect("non-empty").span, "last step")
                                .help(
                                    "add a final step of 100 so the new version takes all traffic",
                                ),
                        );
                    } else {
                        steps = Some(Spanned::new(nums, span));
                    }
                }
                cc.finish(out);
            }
            "gate" => {
                let mut cc = NodeReader::new(child);
                gate.healthy_for = cc.prop_duration("healthy-for");
                gate.max_error_rate = cc.prop_ratio("max-error-rate");
                gate.max_latency_p95 = cc.prop_duration("max-latency-p95");
                cc.finish(out);
            }
            "on-failure" => {
                let mut cc = NodeReader::new(child);
                if let Some(s) = cc.arg_string(0, "an action")
                    && let Some(a) = cc.choice(
                        &s,
                        "on-failure action",
                        &["rollback", "pause"],
                        |v| match v {
                            "rollback" => Some(OnFailure::Rollback),
                            "pause" => Some(OnFailure::Pause),
                            _ => None,
                        },
                    )
                {
                    on_failure = a;
                }
                cc.finish(out);
            }
            "keep-previous" => {
                let mut cc = NodeReader::new(child);
                if let Some(s) = cc.arg_string(0, "a duration") {
                    keep_previous = cc.duration(&s);
                }
                cc.finish(out);
            }
            _ => unknown_node(
                child,
                "`rollout`",
                &["steps", "gate", "on-failure", "keep-previous"],
                out,
            ),
        }
    }
    let strategy = strategy?;
    let steps = match steps {
        Some(s) => s,
        None if node.children().iter().any(|c| c.name.value == "steps") => return None,
        // Blue-green without steps is one switch; canary needs steps.
        None if strategy == RolloutStrategy::BlueGreen => Spanned::new(vec![100], node.name.span),
        None => {
            out.push(
                Diagnostic::error(Code::MissingNode, "a canary rollout needs `steps`")
                    .at(node.name.span, "no steps")
                    .help("add: steps 10 25 50 100"),
            );
            return None;
        }
    };
    Some(Rollout {
        strategy,
        steps,
        gate,
        on_failure,
        keep_previous,
        span: node.span,
    })
}
