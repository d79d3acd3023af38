//! ## What it checks
//! Every container the topology runs has a name of its own. Besides the
//! services and balancers themselves, stackc names cluster members
//! (`db-0`, `db-1`), the next version's instances during a rollout
//! (`api-next`, `api-0-next`), exporters (`db-postgres-exporter`,
//! `edge-nginx-exporter`, `node-exporter`) and balancer replicas
//! (`edge-0`). A service called `db-1` beside a three-member cluster `db`
//! would take the name of the cluster's second member.
//!
//! ## Why
//! Container names are compose service names, DNS names on the stack's
//! network and the names `stackc apply` finds its containers by: with two
//! containers of one name, the second silently replaces the first in the
//! generated compose file, and traffic meant for one reaches the other.

use std::borrow::Cow;

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::*;
use crate::source::Span;
use crate::targets::compose::{
    balancer_exporter_container, exporter_container, host_exporter_container,
};
use crate::targets::instances::{member_name, named_like_service, next_name};

/// What a container name was taken by: described only when it clashes.
type Origin<'t> = (Box<dyn Fn() -> String + 't>, Span);

struct Taken<'t, 'o> {
    by: crate::Map<Cow<'t, str>, Origin<'t>>,
    out: &'o mut Diagnostics,
}

impl<'t> Taken<'t, '_> {
    fn add(&mut self, name: Cow<'t, str>, what: impl Fn() -> String + 't, span: Span) {
        if let Some((first, first_span)) = self.by.get(&name) {
            let (first, what) = (first(), what());
            self.out.push(
                Diagnostic::error(
                    Code::DuplicateName,
                    format!("two containers would be named `{name}`: {first} and {what}"),
                )
                .at(span, what)
                .also(*first_span, first)
                .help("rename one of them: stackc names cluster members NAME-0, NAME-1, ..., the next version during a rollout NAME-next, exporters NAME-KIND-exporter"),
            );
        } else {
            self.by.insert(name, (Box::new(what), span));
        }
    }
}

pub fn check(t: &Topology, out: &mut Diagnostics) {
    let mut taken = Taken {
        by: crate::Map::with_capacity_and_hasher(
            t.services.len() + t.balancers.len(),
            Default::default(),
        ),
        out,
    };
    // The components' own names first: a clash between two of them is
    // the duplicates rule's to report.
    let services = t.services.iter().map(|s| ("service", &s.name));
    let balancers = t.balancers.iter().map(|b| ("balancer", &b.name));
    for (kind, n) in services.chain(balancers) {
        let name = n.value.as_str();
        taken
            .by
            .entry(Cow::Borrowed(name))
            .or_insert_with(|| (Box::new(move || format!("{kind} `{name}`")), n.span));
    }
    for s in &t.services {
        let name = s.name.value.as_str();
        let single = named_like_service(s);
        let members = if single { 0 } else { s.instances() };
        for k in 0..members {
            taken.add(
                Cow::Owned(member_name(name, k)),
                move || format!("member {k} of cluster `{name}`"),
                s.cluster.span,
            );
        }
        if let Some(r) = &s.rollout {
            let instances: Vec<String> = if single {
                vec![name.to_string()]
            } else {
                (0..s.instances()).map(|k| member_name(name, k)).collect()
            };
            for inst in instances {
                let what = format!("the next version of `{inst}` during a rollout");
                taken.add(Cow::Owned(next_name(&inst)), move || what.clone(), r.span);
            }
        }
        for x in &s.exporters {
            let kind = x.kind.value.as_str();
            taken.add(
                Cow::Owned(exporter_container(name, kind)),
                move || format!("the {kind} exporter of `{name}`"),
                x.span,
            );
        }
    }
    for b in &t.balancers {
        let name = b.name.value.as_str();
        let n = b.replicas.value;
        for k in (0..n).filter(|_| n > 1) {
            taken.add(
                Cow::Owned(member_name(name, k)),
                move || format!("replica {k} of balancer `{name}`"),
                b.replicas.span,
            );
        }
        if t.monitoring.is_some() {
            taken.add(
                Cow::Owned(balancer_exporter_container(name)),
                move || format!("the nginx exporter of balancer `{name}`"),
                b.name.span,
            );
        }
    }
    if let Some(m) = &t.monitoring {
        for x in &m.exporters {
            let kind = x.value.as_str();
            taken.add(
                Cow::Owned(host_exporter_container(kind)),
                move || format!("the {kind} exporter of `monitoring`"),
                x.span,
            );
        }
    }
}
