//! Merging an `override` block into the node it changes.
//!
//! Rules, applied recursively: arguments of the override replace the
//! target's arguments when given; properties replace properties of the same
//! name or are added; a child block is merged child by child. Children that
//! may repeat (ports, env vars, routes, ...) are matched by their first
//! argument; `depends-on` nodes are added; other children by name.

use crate::parse::tree::Node;

/// Child nodes that may repeat in a block, matched by their first argument.
const KEYED: &[&str] = &[
    "port",
    "env",
    "secret",
    "volume",
    "label",
    "exporter",
    "listen",
    "rate-limit",
    "route",
    "alert",
    "annotation",
    "tier",
    "rule",
];

/// Child nodes an override always adds (a `depends-on` may list several
/// services, so matching one would drop the others).
const APPENDED: &[&str] = &["depends-on"];

fn same_key(a: &Node, b: &Node) -> bool {
    if a.name.value != b.name.value || APPENDED.contains(&a.name.value.as_str()) {
        return false;
    }
    if KEYED.contains(&a.name.value.as_str()) {
        let fa = a.args().next().map(|e| &e.value);
        let fb = b.args().next().map(|e| &e.value);
        fa == fb
    } else {
        true
    }
}

/// Merge `patch` (an override's content) into `target`.
pub fn merge(target: &mut Node, patch: &Node, patch_args: bool) {
    if patch_args && patch.args().next().is_some() {
        target.entries.retain(|e| e.name.is_some());
        let args: Vec<_> = patch.args().cloned().collect();
        target.entries.splice(0..0, args);
    }
    for prop in patch.props() {
        let key = &prop.name.as_ref().expect("props have names").value;
        // Replace every occurrence so a patched duplicate is not resurrected.
        let mut replaced = false;
        for e in target.entries.iter_mut() {
            if e.name.as_ref().is_some_and(|n| n.value == key) {
                *e = prop.clone();
                replaced = true;
            }
        }
        if !replaced {
            target.entries.push(prop.clone());
        }
    }
    merge_children(target, patch.children());
}

/// Merge a list of child nodes into `target`'s children.
pub fn merge_children(target: &mut Node, patch_children: &[Node]) {
    if patch_children.is_empty() {
        return;
    }
    let children = target.children.get_or_insert_with(Vec::new);
    for pc in patch_children {
        match children.iter_mut().find(|c| same_key(c, pc)) {
            Some(tc) => merge(tc, pc, true),
            None => children.push(pc.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileId;

    fn parse(s: &str) -> Vec<Node> {
        crate::parse::kdl::parse(s, FileId(0)).expect("valid")
    }

    #[test]
    fn override_replaces_singletons_and_keyed_children() {
        let mut t = parse(
            r#"service "db" tier="a" { image "pg:14"; cluster "primary-replica" replicas=2; port 5432; env "A" "1" }"#,
        )
        .remove(0);
        let p = parse(r#"override "db" tier="b" { image "pg:16"; cluster replicas=3; env "A" "2"; env "B" "3" }"#).remove(0);
        merge(&mut t, &p, false);
        let out = parse(
            r#"service "db" tier="b" { image "pg:16"; cluster "primary-replica" replicas=3; port 5432; env "A" "2"; env "B" "3" }"#,
        )
        .remove(0);
        let strip = |n: &Node| format!("{:?}", crate::parse::tree::strip_spans(n));
        assert_eq!(strip(&t), strip(&out));
    }
}
