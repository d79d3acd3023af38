//! Deploy phases: derived from the graph, or read from an explicit list and
//! checked against it.

use std::collections::HashMap;

use super::{Component, Edge, Phase};
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::{Condition, PhaseList, Topology};

/// Layer the graph: a component's phase is one more than the latest phase
/// among its dependencies, so a phase needs only earlier phases healthy.
pub fn derived(comps: &[Component], edges: &[Edge], order: &[usize]) -> Vec<Phase> {
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); comps.len()];
    for e in edges {
        deps[e.from].push(e.to);
    }
    let mut level = vec![0usize; comps.len()];
    for &v in order {
        level[v] = deps[v].iter().map(|d| level[*d] + 1).max().unwrap_or(0);
    }
    let count = level.iter().max().map_or(0, |m| m + 1);
    let mut phases: Vec<Phase> = (0..count)
        .map(|_| Phase {
            name: String::new(),
            members: Vec::new(),
        })
        .collect();
    for (i, l) in level.iter().enumerate() {
        phases[*l].members.push(i);
    }
    for (i, p) in phases.iter_mut().enumerate() {
        p.members
            .sort_by(|a, b| comps[*a].name.cmp(&comps[*b].name));
        // Name a derived phase after its tiers when they say what it is.
        let mut tiers: Vec<&str> = p
            .members
            .iter()
            .filter_map(|m| comps[*m].tier.as_deref())
            .collect();
        tiers.sort_unstable();
        tiers.dedup();
        p.name = if tiers.is_empty() {
            format!("phase-{}", i + 1)
        } else {
            format!("phase-{} ({})", i + 1, tiers.join(", "))
        };
    }
    phases
}

/// Assign components to the listed phases and check every edge goes from a
/// later phase to an earlier one (or the same one for `started`).
pub fn explicit(
    t: &Topology,
    list: &PhaseList,
    comps: &[Component],
    edges: &[Edge],
    out: &mut Diagnostics,
) -> Option<Vec<Phase>> {
    let before = out.error_count();
    let by_name: HashMap<&str, usize> = comps
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut assigned: Vec<Option<(usize, crate::source::Span)>> = vec![None; comps.len()];
    // Named components first: a name wins over tier membership.
    for (pi, ph) in list.phases.iter().enumerate() {
        for s in &ph.services {
            let Some(&c) = by_name.get(s.value.as_str()) else {
                continue;
            };
            if let Some((other, span)) = assigned[c] {
                out.push(
                    Diagnostic::error(
                        Code::PhaseDuplicate,
                        format!(
                            "`{}` is listed in phases `{}` and `{}`",
                            s.value, list.phases[other].name.value, ph.name.value
                        ),
                    )
                    .at(s.span, "listed again")
                    .also(span, "first listed here")
                    .help("list each component in one phase"),
                );
            } else {
                assigned[c] = Some((pi, s.span));
            }
        }
    }
    let named: Vec<bool> = assigned.iter().map(Option::is_some).collect();
    for (pi, ph) in list.phases.iter().enumerate() {
        for tier in &ph.tiers {
            for (c, comp) in comps.iter().enumerate() {
                if named[c] || comp.tier.as_deref() != Some(tier.value.as_str()) {
                    continue;
                }
                if let Some((other, span)) = assigned[c] {
                    out.push(
                        Diagnostic::error(
                            Code::PhaseDuplicate,
                            format!(
                                "tier `{}` puts `{}` in phases `{}` and `{}`",
                                tier.value, comp.name, list.phases[other].name.value, ph.name.value
                            ),
                        )
                        .at(tier.span, "second phase")
                        .also(span, "first phase")
                        .help("list each tier in one phase"),
                    );
                } else {
                    assigned[c] = Some((pi, tier.span));
                }
            }
        }
    }
    for (c, a) in assigned.iter().enumerate() {
        if a.is_none() {
            let comp = &comps[c];
            let hint = match &comp.tier {
                Some(tier) => format!(
                    "add tiers=\"{tier}\" or services=\"{}\" to a phase",
                    comp.name
                ),
                None => format!("add services=\"{}\" to a phase", comp.name),
            };
            out.push(
                Diagnostic::error(
                    Code::PhaseMissing,
                    format!("`{}` is in no phase", comp.name),
                )
                .at(
                    crate::source::Span {
                        end: list.span.start + "phases".len() as u32,
                        ..list.span
                    },
                    "the phase list leaves it out",
                )
                .also(comp.span, "declared here")
                .help(hint),
            );
        }
    }
    if out.error_count() > before {
        return None;
    }
    let phase_of: Vec<usize> = assigned
        .iter()
        .map(|a| a.expect("all assigned").0)
        .collect();
    for e in edges {
        let (pf, pt) = (phase_of[e.from], phase_of[e.to]);
        let bad = if e.condition == Condition::Started {
            pt > pf
        } else {
            pt >= pf
        };
        if bad {
            let need = if e.condition == Condition::Started {
                "the same or an earlier phase"
            } else {
                "an earlier phase"
            };
            out.push(
                Diagnostic::error(
                    Code::PhaseOrder,
                    format!(
                        "`{}` (phase `{}`) depends on `{}` (phase `{}`), which must be in {need}",
                        comps[e.from].name,
                        list.phases[pf].name.value,
                        comps[e.to].name,
                        list.phases[pt].name.value
                    ),
                )
                .at(
                    e.span,
                    format!("needs `{}` {}", comps[e.to].name, e.condition.as_str()),
                )
                .also(list.phases[pf].name.span, "dependent's phase")
                .help(format!(
                    "move `{}` to a phase before `{}`, or reorder the phases",
                    comps[e.to].name, list.phases[pf].name.value
                )),
            );
        }
    }
    if out.error_count() > before {
        return None;
    }
    let _ = t;
    let mut phases: Vec<Phase> = list
        .phases
        .iter()
        .map(|p| Phase {
            name: p.name.value.clone(),
            members: Vec::new(),
        })
        .collect();
    for (c, p) in phase_of.iter().enumerate() {
        phases[*p].members.push(c);
    }
    for p in &mut phases {
        p.members
            .sort_by(|a, b| comps[*a].name.cmp(&comps[*b].name));
    }
    Some(phases)
}
