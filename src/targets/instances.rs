//! Instances and addresses: the containers a topology runs, named and
//! placed in their tier's range. Every target uses this one plan, so the
//! nginx upstream, the Prometheus target and the compose service for one
//! replica agree on its name and address.
//!
//! Naming: a `single` service runs one instance named like the service;
//! clustered services run members `NAME-0 .. NAME-(n-1)`. Roles follow the
//! strategy: member 0 is the primary (primary-replica) or the active one
//! (active-passive).
//!
//! Addresses: each tier hands out addresses from its third address on (the
//! network address and the first host, where a gateway may sit, are
//! skipped), in declaration order: services, then balancers, then
//! monitoring; then, for services with a rollout policy, one more set for
//! the version being rolled out.

use std::net::Ipv4Addr;

use crate::model::{Strategy, Topology};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The only instance, or a member of an active-active, quorum or
    /// sharded cluster.
    Member,
    Primary,
    Replica,
    Active,
    Passive,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Active => "active",
            Role::Passive => "passive",
        }
    }
}

/// One container of a service, balancer or monitoring component.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub name: String,
    /// Index of the service in `Topology::services`, if it is a service.
    pub service: Option<usize>,
    pub ordinal: u32,
    pub role: Role,
    pub address: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Per service (same index as `Topology::services`): its instances.
    pub services: Vec<Vec<Instance>>,
    /// Per service with a rollout policy: the addresses reserved for the
    /// next version's instances (same count as the stable ones).
    pub next: Vec<Vec<Instance>>,
    /// Balancer instances, per balancer.
    pub balancers: Vec<Vec<Instance>>,
    /// Monitoring components by name (`prometheus`, `grafana`, exporters).
    pub monitoring: crate::Map<String, Instance>,
    /// Service name -> index in `Topology::services`.
    pub by_name: crate::Map<String, usize>,
}

/// Whether a service runs one instance named like itself (else members
/// named by [`member_name`]).
pub fn named_like_service(s: &crate::model::Service) -> bool {
    s.cluster.strategy == Strategy::Single && s.instances() == 1
}

/// Name of member `k` of a clustered service or replicated balancer.
pub fn member_name(name: &str, k: u32) -> String {
    format!("{name}-{k}")
}

/// Name of the next version's instance beside `instance` during a rollout.
pub fn next_name(instance: &str) -> String {
    format!("{instance}-next")
}

fn roles(strategy: Strategy, ordinal: u32) -> Role {
    match (strategy, ordinal) {
        (Strategy::PrimaryReplica, 0) => Role::Primary,
        (Strategy::PrimaryReplica, _) => Role::Replica,
        (Strategy::ActivePassive, 0) => Role::Active,
        (Strategy::ActivePassive, _) => Role::Passive,
        _ => Role::Member,
    }
}

/// Hands out addresses of one tier in order.
struct Pool {
    next: crate::Map<String, u64>,
}

impl Pool {
    fn take(&mut self, t: &Topology, tier: Option<&str>) -> Option<Ipv4Addr> {
        let tier = tier?;
        let net = t.network.as_ref()?.tier(tier)?.subnet.value;
        let n = self.next.entry(tier.to_string()).or_insert(2);
        let hosts = 1u64 << (32 - u32::from(net.prefix_len()));
        if *n >= hosts.saturating_sub(1) {
            return None;
        }
        let addr = u32::from(net.network()) as u64 + *n;
        *n += 1;
        Some(Ipv4Addr::from(addr as u32))
    }
}

impl Plan {
    pub fn new(t: &Topology) -> Plan {
        let mut pool = Pool {
            next: crate::Map::default(),
        };
        let mut plan = Plan::default();
        for (i, s) in t.services.iter().enumerate() {
            plan.by_name.entry(s.name.value.clone()).or_insert(i);
        }
        for (i, s) in t.services.iter().enumerate() {
            let n = s.instances();
            let tier = s.tier.as_ref().map(|x| x.value.as_str());
            let single = named_like_service(s);
            let instances = (0..n)
                .map(|k| Instance {
                    name: if single {
                        s.name.value.clone()
                    } else {
                        member_name(&s.name.value, k)
                    },
                    service: Some(i),
                    ordinal: k,
                    role: roles(s.cluster.strategy, k),
                    address: pool.take(t, tier),
                })
                .collect();
            plan.services.push(instances);
        }
        for b in &t.balancers {
            let tier = b.tier.as_ref().map(|x| x.value.as_str());
            let n = b.replicas.value;
            plan.balancers.push(
                (0..n)
                    .map(|k| Instance {
                        name: if n == 1 {
                            b.name.value.clone()
                        } else {
                            member_name(&b.name.value, k)
                        },
                        service: None,
                        ordinal: k,
                        role: Role::Member,
                        address: pool.take(t, tier),
                    })
                    .collect(),
            );
        }
        if let Some(m) = &t.monitoring {
            let tier = m.tier.as_ref().map(|x| x.value.as_str());
            let mut add = |name: &str, pool: &mut Pool| {
                plan.monitoring.insert(
                    name.to_string(),
                    Instance {
                        name: name.to_string(),
                        service: None,
                        ordinal: 0,
                        role: Role::Member,
                        address: pool.take(t, tier),
                    },
                );
            };
            add("prometheus", &mut pool);
            if m.grafana.is_some() {
                add("grafana", &mut pool);
            }
        }
        for (i, s) in t.services.iter().enumerate() {
            if s.rollout.is_none() {
                plan.next.push(Vec::new());
                continue;
            }
            let tier = s.tier.as_ref().map(|x| x.value.as_str());
            let next = plan.services[i]
                .iter()
                .map(|inst| Instance {
                    name: next_name(&inst.name),
                    address: pool.take(t, tier),
                    ..inst.clone()
                })
                .collect();
            plan.next.push(next);
        }
        plan
    }

    /// Instances of the service named `name`.
    pub fn of(&self, _t: &Topology, name: &str) -> &[Instance] {
        self.by_name.get(name).map_or(&[], |i| &self.services[*i])
    }

    /// Index of the service named `name` in `Topology::services`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}
