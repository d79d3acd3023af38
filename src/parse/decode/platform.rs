//! Decoding Kubernetes-only settings and scheduled jobs.

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::*;
use crate::parse::reader::{NodeReader, Once, unknown_node};
use crate::parse::tree::Node;

pub fn decode_kubernetes(node: &Node, out: &mut Diagnostics) -> Option<Kubernetes> {
    let mut r = NodeReader::new(node);
    r.allow_children();
    let namespace = r.required_prop_string("namespace", "kubernetes namespace=\"shop\"");
    let isolation = match r.prop_string("isolation") {
        Some(s) => r.choice(&s, "isolation", &["none", "graph"], |v| match v {
            "none" => Some(Isolation::None),
            "graph" => Some(Isolation::Graph),
            _ => None,
        }),
        None => Some(Isolation::Graph),
    };
    r.finish(out);
    let mut service_accounts = Vec::new();
    for child in node.children() {
        match child.name.value.as_str() {
            "service-account" => {
                let mut c = NodeReader::new(child);
                c.allow_children();
                let name = c.arg_string(0, "a service account name");
                c.finish(out);
                let mut rules = Vec::new();
                for rule in child.children() {
                    if rule.name.value != "rule" {
                        unknown_node(rule, "`service-account`", &["rule"], out);
                        continue;
                    }
                    rules.extend(decode_rule(rule, out));
                }
                if let Some(name) = name {
                    service_accounts.push(ServiceAccount {
                        name,
                        rules,
                        span: child.span,
                    });
                }
            }
            _ => unknown_node(child, "`kubernetes`", &["service-account"], out),
        }
    }
    Some(Kubernetes {
        namespace: namespace?,
        service_accounts,
        isolation: isolation?,
        span: node.span,
    })
}

const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "*",
];

fn decode_rule(node: &Node, out: &mut Diagnostics) -> Option<RbacRule> {
    let mut c = NodeReader::new(node);
    let api_groups = crate::parse::decode::list_prop(&mut c, "api-groups");
    let resources = crate::parse::decode::list_prop(&mut c, "resources");
    let verbs = crate::parse::decode::list_prop(&mut c, "verbs");
    if resources.is_empty() {
        c.missing_prop(
            "resources",
            "rule api-groups=\"apps\" resources=\"deployments\" verbs=\"get,list,patch\"",
        );
    }
    if verbs.is_empty() {
        c.missing_prop(
            "verbs",
            "rule api-groups=\"apps\" resources=\"deployments\" verbs=\"get,list,patch\"",
        );
    }
    for v in &verbs {
        c.choice(v, "verb", VERBS, |s| VERBS.contains(&s).then_some(()));
    }
    // `api-groups="core"` names the core group, which Kubernetes writes as "".
    let api_groups = api_groups
        .into_iter()
        .map(|g| {
            if g.value == "core" {
                String::new()
            } else {
                g.value
            }
        })
        .collect();
    c.finish(out);
    Some(RbacRule {
        api_groups,
        resources,
        verbs,
        span: node.span,
    })
}

pub fn decode_job(node: &Node, out: &mut Diagnostics) -> Option<Job> {
    let mut r = NodeReader::new(node);
    r.allow_children();
    let name = r.arg_string(0, "a job name");
    let schedule = r.required_prop_string("schedule", "job \"backup\" schedule=\"0 2 * * *\"");
    let service_account = r.prop_string("service-account");
    if let Some(s) = &schedule
        && let Err(why) = check_cron(&s.value)
    {
        r.error(
            Diagnostic::error(
                Code::InvalidValue,
                format!("`{}` is not a cron schedule", s.value),
            )
            .at(s.span, why)
            .help("five fields: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\""),
        );
    }
    r.finish(out);
    let mut once = Once::default();
    let mut image = None;
    let mut command = Vec::new();
    let mut secrets = Vec::new();
    let mut volumes = Vec::new();
    for child in node.children() {
        let kind = child.name.value.as_str();
        if matches!(kind, "image" | "command") && !once.first(child, out) {
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
                c.finish(out);
            }
            "secret" => secrets.extend(crate::parse::decode::decode_secret(child, out)),
            "volume" => volumes.extend(crate::parse::decode::decode_volume(child, out)),
            _ => unknown_node(
                child,
                "`job`",
                &["image", "command", "secret", "volume"],
                out,
            ),
        }
    }
    let name = name?;
    if image.is_none() && !node.children().iter().any(|c| c.name.value == "image") {
        out.push(
            Diagnostic::error(
                Code::MissingNode,
                format!("job `{}` has no image", name.value),
            )
            .at(name.span, "no `image` in this job")
            .help("add a line such as: image \"postgres:16\""),
        );
    }
    Some(Job {
        name,
        schedule: schedule?,
        image: image?,
        command,
        secrets,
        volumes,
        service_account,
        span: node.span,
    })
}

/// Check a five-field cron expression: numbers, ranges, lists, steps, `*`.
fn check_cron(s: &str) -> Result<(), String> {
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("{} fields, expected 5", fields.len()));
    }
    let bounds = [
        (0, 59, "minute"),
        (0, 23, "hour"),
        (1, 31, "day of month"),
        (1, 12, "month"),
        (0, 7, "day of week"),
    ];
    for (f, (lo, hi, what)) in fields.iter().zip(bounds) {
        for part in f.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, st)) => (r, Some(st)),
                None => (part, None),
            };
            if let Some(st) = step
                && st.parse::<u32>().map_or(true, |n| n == 0)
            {
                return Err(format!("bad step in the {what} field"));
            }
            if range == "*" {
                continue;
            }
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) else {
                return Err(format!("`{part}` in the {what} field"));
            };
            if a < lo || b > hi || a > b {
                return Err(format!("{what} must be {lo}-{hi}"));
            }
        }
    }
    Ok(())
}
