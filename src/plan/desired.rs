//! The desired state on a Docker engine, read from the compose artifact so
//! that `apply` runs exactly what `build` writes: one network, the named
//! volumes, and one container per compose service, each with its phase.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::graph::Graph;
use crate::model::Topology;
use crate::profile::Profile;
use crate::targets::{self, Artifact, Target};

/// An environment value: literal, or a secret read at apply time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvValue {
    Literal(String),
    /// Name of the environment variable holding the secret.
    Secret(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// A named volume, or an absolute host path for config files.
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub volume: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    pub test: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

/// Everything that defines one container. Its hash is the config hash:
/// a container whose hash differs from the desired one is recreated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    pub service: String,
    pub instance: String,
    pub phase: usize,
    pub image: String,
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, EnvValue>,
    pub ports: Vec<PortSpec>,
    pub mounts: Vec<MountSpec>,
    pub health: Option<HealthSpec>,
    pub nano_cpus: Option<i64>,
    pub memory: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub restart: String,
    pub ipv4: Option<String>,
    pub aliases: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Containers this one waits for, with the compose condition.
    pub depends_on: BTreeMap<String, String>,
}

impl ContainerSpec {
    pub fn hash(&self) -> String {
        targets::hash_json(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    pub subnet: Option<String>,
    pub ip_range: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    pub stack: String,
    pub network: NetworkSpec,
    pub volumes: Vec<String>,
    pub containers: Vec<ContainerSpec>,
    pub phases: Vec<String>,
    /// Config files (nginx, Prometheus, Grafana) the containers mount,
    /// written under the state directory before containers start.
    pub files: Vec<Artifact>,
}

/// Go-style durations as compose writes them (`1m30s`, `500ms`).
fn millis(s: &str) -> u64 {
    let mut total = 0u64;
    let mut num = 0u64;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            num = num * 10 + u64::from(b[i] - b'0');
            i += 1;
            continue;
        }
        let unit = if s[i..].starts_with("ms") {
            i += 2;
            1
        } else {
            let u = match b[i] {
                b'h' => 3_600_000,
                b'm' => 60_000,
                _ => 1_000,
            };
            i += 1;
            u
        };
        total += num * unit;
        num = 0;
    }
    total
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Compose's `$$` is a literal `$`; `${VAR:?...}` is a secret reference.
fn env_value(s: &str) -> EnvValue {
    if let Some(rest) = s.strip_prefix("${") {
        let end = rest.find([':', '}']).unwrap_or(rest.len());
        return EnvValue::Secret(rest[..end].to_string());
    }
    EnvValue::Literal(s.replace("$$", "$"))
}

fn port(s: &str) -> Option<PortSpec> {
    let (spec, protocol) = match s.split_once('/') {
        Some((a, p)) => (a, p.to_string()),
        None => (s, "tcp".to_string()),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let [ip, host, container] = parts.as_slice() else {
        return None;
    };
    Some(PortSpec {
        host_ip: ip.to_string(),
        host_port: host.parse().ok()?,
        container_port: container.parse().ok()?,
        protocol,
    })
}

/// The desired state of `t` on a Docker engine, with images mapped through
/// `profile`. `files_dir` is where mounted config files will live.
pub fn desired(t: &Topology, g: &Graph, profile: &Profile, files_dir: &std::path::Path) -> Desired {
    let (arts, _) = targets::build(
        t,
        g,
        &[
            Target::Compose,
            Target::Nginx,
            Target::Prometheus,
            Target::Grafana,
        ],
    );
    let compose = arts
        .iter()
        .find(|a| a.path == targets::compose::PATH)
        .expect("compose artifact");
    let doc: Value =
        crate::yaml::from_str(&compose.content).expect("stackc's own compose file parses");
    let stack = t.stack.name.value.clone();
    let (net_name, net) = doc["networks"]
        .as_object()
        .and_then(|m| m.iter().next())
        .map(|(k, v)| (k.clone(), v.clone()))
        .expect("one network");
    let ipam = &net["ipam"]["config"][0];
    let network = NetworkSpec {
        name: format!("{stack}_{net_name}"),
        subnet: ipam["subnet"].as_str().map(str::to_string),
        ip_range: ipam["ip_range"].as_str().map(str::to_string),
    };
    let volumes: Vec<String> = doc["volumes"]
        .as_object()
        .map(|m| m.keys().map(|k| format!("{stack}_{k}")).collect())
        .unwrap_or_default();
    let phase_of = g.phase_of();
    let component_phase = |service: &str| g.index(service).map(|i| phase_of[i]);
    let compose_dir = files_dir.join("compose");
    let mut containers = Vec::new();
    for (key, s) in doc["services"].as_object().expect("services") {
        let service = s["labels"][targets::LABEL_SERVICE]
            .as_str()
            .unwrap_or(key)
            .to_string();
        // Exporters run with the service they watch.
        let base = service.split("-nginx-exporter").next().unwrap_or(&service);
        let phase = component_phase(&service)
            .or_else(|| {
                t.services
                    .iter()
                    .find(|x| service.starts_with(&format!("{}-", x.name.value)))
                    .and_then(|x| component_phase(&x.name.value))
            })
            .or_else(|| component_phase(base))
            .unwrap_or(0);
        let env = s["environment"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), env_value(v.as_str().unwrap_or_default())))
                    .collect()
            })
            .unwrap_or_default();
        let mounts: Vec<MountSpec> = strings(&s["volumes"])
            .iter()
            .map(|m| {
                let mut parts = m.splitn(3, ':');
                let source = parts.next().unwrap_or_default().to_string();
                let target = parts.next().unwrap_or_default().to_string();
                let read_only = parts.next() == Some("ro");
                let volume = !source.starts_with('.') && !source.starts_with('/');
                let source = if volume {
                    format!("{stack}_{source}")
                } else {
                    compose_dir
                        .join(&source)
                        .components()
                        .fold(std::path::PathBuf::new(), |acc, c| match c {
                            std::path::Component::ParentDir => {
                                acc.parent().map(|p| p.to_path_buf()).unwrap_or(acc)
                            }
                            other => acc.join(other),
                        })
                        .display()
                        .to_string()
                };
                MountSpec {
                    source,
                    target,
                    read_only,
                    volume,
                }
            })
            .collect();
        let health = s
            .get("healthcheck")
            .filter(|h| h.is_object())
            .map(|h| HealthSpec {
                // Compose reads `$$` as `$`; the engine takes the test as is.
                test: strings(&h["test"])
                    .iter()
                    .map(|t| t.replace("$$", "$"))
                    .collect(),
                interval_ms: millis(h["interval"].as_str().unwrap_or("30s")),
                timeout_ms: millis(h["timeout"].as_str().unwrap_or("30s")),
                retries: h["retries"].as_u64().unwrap_or(3) as u32,
                start_period_ms: h["start_period"].as_str().map_or(0, millis),
            });
        let res = &s["deploy"]["resources"];
        let cpus = |v: &Value| {
            v.as_str()
                .and_then(|c| c.parse::<f64>().ok())
                .map(|c| (c * 1e9) as i64)
        };
        let mem = |v: &Value| v.as_str().and_then(|c| c.parse::<i64>().ok());
        let endpoint = &s["networks"][&net_name];
        let mut labels: BTreeMap<String, String> = s["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    // The compose hash is derived: the spec's own hash replaces it.
                    .filter(|(k, _)| k.as_str() != targets::LABEL_CONFIG_HASH)
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().replace("$$", "$")))
                    .collect()
            })
            .unwrap_or_default();
        // Config files are mounted, not part of the container: their hash
        // is, so a changed nginx or Prometheus config replaces the
        // container that reads it.
        let mounted: Vec<&Artifact> = mounts
            .iter()
            .filter(|m| !m.volume)
            .filter_map(|m| std::path::Path::new(&m.source).strip_prefix(files_dir).ok())
            .flat_map(|rel| {
                let rel = rel.to_string_lossy().into_owned();
                arts.iter()
                    .filter(move |a| a.path == rel || a.path.starts_with(&format!("{rel}/")))
            })
            .collect();
        if !mounted.is_empty() {
            let contents: Vec<(&str, &str)> = mounted
                .iter()
                .map(|a| (a.path.as_str(), a.content.as_str()))
                .collect();
            labels.insert("io.stackc.files-hash".into(), targets::hash_json(&contents));
        }
        let depends_on = s["depends_on"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            format!("{stack}-{k}"),
                            v["condition"]
                                .as_str()
                                .unwrap_or("service_started")
                                .to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        containers.push(ContainerSpec {
            name: format!("{stack}-{key}"),
            service,
            instance: key.clone(),
            phase,
            image: profile.map_image(s["image"].as_str().unwrap_or_default()),
            cmd: strings(&s["command"])
                .iter()
                .map(|c| c.replace("$$", "$"))
                .collect(),
            env,
            ports: strings(&s["ports"])
                .iter()
                .filter_map(|p| port(p))
                .collect(),
            mounts,
            health,
            nano_cpus: cpus(&res["limits"]["cpus"]),
            memory: mem(&res["limits"]["memory"]),
            memory_reservation: mem(&res["reservations"]["memory"]),
            restart: s["restart"]
                .as_str()
                .unwrap_or("unless-stopped")
                .to_string(),
            ipv4: endpoint["ipv4_address"].as_str().map(str::to_string),
            aliases: strings(&endpoint["aliases"]),
            labels,
            depends_on,
        });
    }
    containers.sort_by(|a, b| (a.phase, &a.name).cmp(&(b.phase, &b.name)));
    let files = arts
        .into_iter()
        .filter(|a| a.path != targets::compose::PATH)
        .collect();
    Desired {
        stack,
        network,
        volumes,
        containers,
        phases: g.phases.iter().map(|p| p.name.clone()).collect(),
        files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_values_parse_back() {
        assert_eq!(millis("1m30s"), 90_000);
        assert_eq!(millis("500ms"), 500);
        assert_eq!(env_value("a$$b"), EnvValue::Literal("a$b".into()));
        assert_eq!(env_value("${PG:?set PG}"), EnvValue::Secret("PG".into()));
        let p = port("127.0.0.1:8892:80").expect("port");
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.container_port),
            ("127.0.0.1", 8892, 80)
        );
    }

    #[test]
    fn eip_resso_desired_state() {
        let c = crate::check_file(std::path::Path::new("examples/eip-resso/stack.kdl"), None);
        let d = desired(
            c.topology.as_ref().unwrap(),
            c.graph.as_ref().unwrap(),
            &Profile::local(),
            std::path::Path::new("/state"),
        );
        assert_eq!(d.network.name, "eip-resso_eip-resso-cluster");
        let pg = d
            .containers
            .iter()
            .find(|c| c.name == "eip-resso-postgres-0")
            .expect("postgres-0");
        assert_eq!(pg.phase, 0);
        assert_eq!(
            pg.env["POSTGRES_PASSWORD"],
            EnvValue::Secret("PG_PASSWORD".into())
        );
        assert_eq!(pg.mounts[0].source, "eip-resso_pgdata-0");
        let lb = d
            .containers
            .iter()
            .find(|c| c.name == "eip-resso-nginx-lb")
            .expect("lb");
        assert_eq!(lb.phase, 4);
        assert_eq!(lb.mounts[0].source, "/state/nginx/nginx-lb.conf");
        assert_eq!(lb.ports[0].host_port, 8892);
    }
}
