//! Reading one tree node against what the language expects there.
//!
//! A [`NodeReader`] hands out typed arguments and properties and remembers
//! every property name it was asked for; [`NodeReader::finish`] then reports
//! whatever the node holds that nobody asked for (unknown properties, with
//! the closest known name), duplicate properties, extra arguments and an
//! unexpected children block. So the known-name list is exactly the code
//! that reads the node, and cannot fall out of date.

use std::ops::RangeInclusive;

use crate::diag::{Code, Diagnostic, Diagnostics, did_you_mean};
use crate::model::{Cpu, Duration, Memory};
use crate::parse::tree::{Entry, Node, Value};
use crate::source::{Span, Spanned};

pub struct NodeReader<'n> {
    pub node: &'n Node,
    known: Vec<&'static str>,
    args_read: usize,
    children_allowed: bool,
    pub diags: Vec<Diagnostic>,
}

impl<'n> NodeReader<'n> {
    pub fn new(node: &'n Node) -> Self {
        NodeReader {
            node,
            known: Vec::new(),
            args_read: 0,
            children_allowed: false,
            diags: Vec::new(),
        }
    }

    pub fn name(&self) -> &'n str {
        &self.node.name.value
    }

    pub fn span(&self) -> Span {
        self.node.span
    }

    /// The node may have a children block (the caller reads it).
    pub fn allow_children(&mut self) {
        self.children_allowed = true;
    }

    /// The first `n` arguments were read by the caller directly.
    pub fn mark_args_read(&mut self, n: usize) {
        self.args_read = self.args_read.max(n);
    }

    pub fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn arg_entry(&self, index: usize) -> Option<&'n Entry> {
        self.node.args().nth(index)
    }

    fn type_error(&mut self, entry: &Entry, what: &str, expected: &str) {
        let hint = match (&entry.value, expected) {
            (Value::String(s), "an integer") if s.trim_end_matches('%').parse::<i64>().is_ok() => {
                format!(
                    "write the number without quotes: {}",
                    s.trim_end_matches('%')
                )
            }
            (Value::String(s), "a boolean") if s == "true" || s == "false" => {
                format!("KDL 2.0 writes booleans as #{s}")
            }
            (Value::Integer(i), "a string") => format!("quote it: \"{i}\""),
            _ => format!("{what} takes {expected}"),
        };
        self.diags.push(
            Diagnostic::error(
                Code::WrongType,
                format!(
                    "{what} must be {expected}, found {}",
                    entry.value.type_name()
                ),
            )
            .at(entry.value_span, format!("expected {expected}"))
            .help(hint),
        );
    }

    /// The string argument at `index`, reporting it missing if absent.
    pub fn arg_string(&mut self, index: usize, what: &str) -> Option<Spanned<String>> {
        let r = self.opt_arg_string(index, what);
        if r.is_none() && self.arg_entry(index).is_none() {
            // Show the node as written, with the missing value added.
            let mut example = self.name().to_string();
            for e in self.node.args().take(index) {
                match &e.value {
                    Value::String(s) => example.push_str(&format!(" {s:?}")),
                    Value::Integer(i) => example.push_str(&format!(" {i}")),
                    _ => example.push_str(" ..."),
                }
            }
            example.push_str(" \"...\"");
            self.diags.push(
                Diagnostic::error(
                    Code::MissingArgument,
                    format!("`{}` needs {what}", self.name()),
                )
                .at(self.node.name.span, format!("{what} missing"))
                .help(format!("write it as {example}")),
            );
        }
        r
    }

    pub fn opt_arg_string(&mut self, index: usize, what: &str) -> Option<Spanned<String>> {
        self.args_read = self.args_read.max(index + 1);
        let entry = self.arg_entry(index)?;
        match &entry.value {
            Value::String(s) => Some(Spanned::new(s.to_string(), entry.value_span)),
            _ => {
                self.type_error(entry, what, "a string");
                None
            }
        }
    }

    /// An integer argument in `range`.
    pub fn arg_u32(
        &mut self,
        index: usize,
        what: &str,
        range: RangeInclusive<u32>,
    ) -> Option<Spanned<u32>> {
        self.args_read = self.args_read.max(index + 1);
        let Some(entry) = self.arg_entry(index) else {
            self.diags.push(
                Diagnostic::error(
                    Code::MissingArgument,
                    format!("`{}` needs {what}", self.name()),
                )
                .at(self.node.name.span, format!("{what} missing"))
                .help(format!(
                    "write it as {} 8080 (a number before any key=value)",
                    self.name()
                )),
            );
            return None;
        };
        self.int_in(entry, what, range)
    }

    /// Every argument from `from` on, as strings.
    pub fn rest_strings(&mut self, from: usize, what: &str) -> Vec<Spanned<String>> {
        let entries: Vec<&Entry> = self.node.args().skip(from).collect();
        self.args_read = usize::MAX;
        let mut out = Vec::new();
        for e in entries {
            match &e.value {
                Value::String(s) => out.push(Spanned::new(s.to_string(), e.value_span)),
                _ => self.type_error(e, what, "a string"),
            }
        }
        out
    }

    /// Every argument from `from` on, as integers in `range`.
    pub fn rest_u32(
        &mut self,
        from: usize,
        what: &str,
        range: RangeInclusive<u32>,
    ) -> Vec<Spanned<u32>> {
        let entries: Vec<&Entry> = self.node.args().skip(from).collect();
        self.args_read = usize::MAX;
        entries
            .into_iter()
            .filter_map(|e| self.int_in(e, what, range.clone()))
            .collect()
    }

    fn int_in(
        &mut self,
        entry: &Entry,
        what: &str,
        range: RangeInclusive<u32>,
    ) -> Option<Spanned<u32>> {
        match entry.value {
            Value::Integer(i) => {
                if i < *range.start() as i128 || i > *range.end() as i128 {
                    self.diags.push(
                        Diagnostic::error(Code::OutOfRange, format!("{what} {i} is out of range"))
                            .at(
                                entry.value_span,
                                format!("must be {}..={}", range.start(), range.end()),
                            )
                            .help(format!(
                                "use a value from {} to {}",
                                range.start(),
                                range.end()
                            )),
                    );
                    None
                } else {
                    Some(Spanned::new(i as u32, entry.value_span))
                }
            }
            // A quoted number is reported, then read anyway: dropping it
            // would only cause follow-on errors (a port "missing" for
            // the health check that uses it).
            Value::String(ref s) => {
                self.type_error(entry, what, "an integer");
                s.parse::<u32>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .map(|n| Spanned::new(n, entry.value_span))
            }
            _ => {
                self.type_error(entry, what, "an integer");
                None
            }
        }
    }

    /// The property entry named `key`; registers the key as known.
    pub fn prop_entry(&mut self, key: &'static str) -> Option<&'n Entry> {
        self.known.push(key);
        // The last one wins in KDL; duplicates are reported in finish().
        self.node
            .props()
            .filter(|e| e.name.as_ref().is_some_and(|n| n.value == key))
            .last()
    }

    pub fn prop_string(&mut self, key: &'static str) -> Option<Spanned<String>> {
        let entry = self.prop_entry(key)?;
        match &entry.value {
            Value::String(s) => Some(Spanned::new(s.to_string(), entry.value_span)),
            _ => {
                self.type_error(entry, &format!("`{key}`"), "a string");
                None
            }
        }
    }

    pub fn required_prop_string(
        &mut self,
        key: &'static str,
        example: &str,
    ) -> Option<Spanned<String>> {
        let present = self
            .node
            .props()
            .any(|e| e.name.as_ref().is_some_and(|n| n.value == key));
        if !present {
            self.known.push(key);
            self.missing_prop(key, example);
            return None;
        }
        self.prop_string(key)
    }

    pub fn missing_prop(&mut self, key: &str, example: &str) {
        self.diags.push(
            Diagnostic::error(
                Code::MissingProperty,
                format!("`{}` needs `{key}=`", self.name()),
            )
            .at(self.node.name.span, format!("`{key}` missing"))
            .help(format!("for example: {example}")),
        );
    }

    pub fn prop_bool(&mut self, key: &'static str) -> Option<bool> {
        let entry = self.prop_entry(key)?;
        match entry.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.type_error(entry, &format!("`{key}`"), "a boolean");
                None
            }
        }
    }

    pub fn prop_u32(
        &mut self,
        key: &'static str,
        range: RangeInclusive<u32>,
    ) -> Option<Spanned<u32>> {
        let entry = self.prop_entry(key)?;
        // The usual case first, without naming the key for a message.
        if let Value::Integer(i) = entry.value
            && let Ok(n) = u32::try_from(i)
            && range.contains(&n)
        {
            return Some(Spanned::new(n, entry.value_span));
        }
        self.int_in(entry, &format!("`{key}`"), range)
    }

    pub fn prop_port(&mut self, key: &'static str) -> Option<Spanned<u16>> {
        self.prop_u32(key, 1..=65535)
            .map(|s| Spanned::new(s.value as u16, s.span))
    }

    /// A number (integer or decimal) in `range`; also accepts `"5%"`.
    pub fn prop_ratio(&mut self, key: &'static str) -> Option<Spanned<f64>> {
        let entry = self.prop_entry(key)?;
        let v = match &entry.value {
            Value::Float(f) => *f,
            Value::Integer(i) => *i as f64,
            Value::String(s) if s.ends_with('%') => match s[..s.len() - 1].parse::<f64>() {
                Ok(p) => p / 100.0,
                Err(_) => {
                    self.type_error(entry, &format!("`{key}`"), "a number");
                    return None;
                }
            },
            _ => {
                self.type_error(entry, &format!("`{key}`"), "a number");
                return None;
            }
        };
        if !(0.0..=1.0).contains(&v) || v.is_nan() {
            self.diags.push(
                Diagnostic::error(
                    Code::OutOfRange,
                    format!("`{key}` {v} is not a ratio between 0 and 1"),
                )
                .at(entry.value_span, "must be between 0 and 1")
                .help("write a ratio such as 0.05, or a percentage such as \"5%\""),
            );
            return None;
        }
        Some(Spanned::new(v, entry.value_span))
    }

    /// A percentage 1..=100, written `70` or `"70%"`.
    pub fn prop_percent(&mut self, key: &'static str) -> Option<Spanned<u32>> {
        let entry = self.prop_entry(key)?;
        let n = match &entry.value {
            Value::Integer(i) => *i,
            Value::String(s) => match s.strip_suffix('%').and_then(|n| n.parse::<i128>().ok()) {
                Some(n) => n,
                None => {
                    self.diags.push(
                        Diagnostic::error(
                            Code::InvalidValue,
                            format!("`{key}` is not a percentage"),
                        )
                        .at(entry.value_span, "expected a percentage")
                        .help("write it as 70 or \"70%\""),
                    );
                    return None;
                }
            },
            _ => {
                self.type_error(entry, &format!("`{key}`"), "a percentage");
                return None;
            }
        };
        if !(1..=100).contains(&n) {
            self.diags.push(
                Diagnostic::error(Code::OutOfRange, format!("`{key}` {n}% is out of range"))
                    .at(entry.value_span, "must be 1..=100")
                    .help("a percentage from 1 to 100"),
            );
            return None;
        }
        Some(Spanned::new(n as u32, entry.value_span))
    }

    pub fn prop_duration(&mut self, key: &'static str) -> Option<Duration> {
        let s = self.prop_string(key)?;
        self.duration(&s)
    }

    pub fn duration(&mut self, s: &Spanned<String>) -> Option<Duration> {
        match Duration::parse(&s.value) {
            Some(d) if d.millis > 0 => Some(d),
            _ => {
                self.diags.push(
                    Diagnostic::error(
                        Code::InvalidDuration,
                        format!("`{}` is not a positive duration", s.value),
                    )
                    .at(s.span, "expected a duration such as 10s, 5m or 1h30m")
                    .help("units: ms, s, m, h, d, w, y; the value must be greater than zero"),
                );
                None
            }
        }
    }

    pub fn prop_memory(&mut self, key: &'static str) -> Option<Spanned<Memory>> {
        let s = self.prop_string(key)?;
        match Memory::parse(&s.value) {
            Some(m) => Some(Spanned::new(m, s.span)),
            None => {
                let hint = if s.value.ends_with("GB")
                    || s.value.ends_with("MB")
                    || s.value.ends_with("KB")
                {
                    format!(
                        "write `{}i` for powers of two or `{}` for powers of ten",
                        &s.value[..s.value.len() - 1],
                        &s.value[..s.value.len() - 1]
                    )
                } else {
                    "units: Ki, Mi, Gi, Ti (powers of two) or k, M, G, T (powers of ten)"
                        .to_string()
                };
                self.diags.push(
                    Diagnostic::error(
                        Code::InvalidQuantity,
                        format!("`{}` is not a memory size", s.value),
                    )
                    .at(s.span, "expected a size such as 512Mi or 1Gi")
                    .help(hint),
                );
                None
            }
        }
    }

    pub fn prop_cpu(&mut self, key: &'static str) -> Option<Spanned<Cpu>> {
        let entry = self.prop_entry(key)?;
        let (text, span) = match &entry.value {
            Value::String(s) => (s.to_string(), entry.value_span),
            Value::Integer(i) => (i.to_string(), entry.value_span),
            Value::Float(f) => (f.to_string(), entry.value_span),
            _ => {
                self.type_error(entry, &format!("`{key}`"), "a CPU amount");
                return None;
            }
        };
        match Cpu::parse(&text) {
            Some(c) => Some(Spanned::new(c, span)),
            None => {
                self.diags.push(
                    Diagnostic::error(
                        Code::InvalidQuantity,
                        format!("`{text}` is not a CPU amount"),
                    )
                    .at(span, "expected cores (0.5, 2) or millicores (500m)")
                    .help("write cores as \"0.5\" or millicores as \"500m\"; zero is not allowed"),
                );
                None
            }
        }
    }

    /// A string that must be one of `choices`; suggests the closest.
    pub fn choice<T>(
        &mut self,
        s: &Spanned<String>,
        what: &str,
        choices: &[&str],
        parse: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        if let Some(v) = parse(&s.value) {
            return Some(v);
        }
        let mut d = Diagnostic::error(
            Code::InvalidValue,
            format!("`{}` is not a valid {what}", s.value),
        )
        .at(s.span, format!("unknown {what}"));
        d = match did_you_mean(&s.value, choices.iter().copied()) {
            Some(m) => d.help(format!(
                "did you mean `{m}`? (one of: {})",
                choices.join(", ")
            )),
            None => d.help(format!("one of: {}", choices.join(", "))),
        };
        self.diags.push(d);
        None
    }

    /// Report what nobody asked for, and move the findings into `out`.
    pub fn finish(mut self, out: &mut Diagnostics) {
        let mut seen: Vec<(&str, Span)> = Vec::new();
        for e in self.node.props() {
            let name = e.name.as_ref().expect("props have names");
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name.value) {
                self.diags.push(
                    Diagnostic::error(
                        Code::DuplicateProperty,
                        format!("property `{}` is given twice", name.value),
                    )
                    .at(e.span, "second value")
                    .also(*first, "first value")
                    .help("keep one of them; KDL would silently keep the last"),
                );
                continue;
            }
            seen.push((&name.value, e.span));
            if !self.known.contains(&name.value.as_str()) {
                let mut d = Diagnostic::error(
                    Code::UnknownProperty,
                    format!(
                        "`{}` has no property `{}`",
                        self.node.name.value, name.value
                    ),
                )
                .at(name.span, "unknown property");
                let mut known = self.known.clone();
                known.sort_unstable();
                known.dedup();
                d = match did_you_mean(&name.value, known.iter().copied()) {
                    Some(m) => d.help(format!("did you mean `{m}`?")),
                    None if known.is_empty() => {
                        d.help(format!("`{}` takes no properties", self.node.name.value))
                    }
                    None => d.help(format!("known properties: {}", known.join(", "))),
                };
                self.diags.push(d);
            }
        }
        if let Some(extra) = self.node.args().nth(self.args_read) {
            let what = if self.args_read == 0 {
                "no arguments".to_string()
            } else {
                format!("{} argument(s)", self.args_read)
            };
            self.diags.push(
                Diagnostic::error(
                    Code::UnexpectedArgument,
                    format!("`{}` takes {what}", self.node.name.value),
                )
                .at(extra.span, "unexpected argument")
                .help("remove it, or write it as a property (key=value)"),
            );
        }
        if !self.children_allowed && self.node.children.is_some() {
            let span = self
                .node
                .children()
                .first()
                .map_or(self.node.span, |c| c.span);
            self.diags.push(
                Diagnostic::error(
                    Code::UnexpectedChildren,
                    format!("`{}` takes no children block", self.node.name.value),
                )
                .at(span, "unexpected block")
                .help("remove the { ... } block"),
            );
        }
        for d in self.diags {
            out.push(d);
        }
    }
}

/// Tracks nodes that may appear once in a block.
#[derive(Default)]
pub struct Once {
    seen: Vec<(String, Span)>,
}

impl Once {
    /// True the first time `node` is seen; reports a duplicate otherwise.
    pub fn first(&mut self, node: &Node, out: &mut Diagnostics) -> bool {
        if let Some((_, first)) = self.seen.iter().find(|(n, _)| *n == node.name.value) {
            out.push(
                Diagnostic::error(
                    Code::DuplicateNode,
                    format!("`{}` is given twice", node.name.value),
                )
                .at(node.name.span, "second one")
                .also(*first, "first one")
                .help("remove one of them"),
            );
            return false;
        }
        self.seen
            .push((node.name.value.to_string(), node.name.span));
        true
    }
}

/// Report a child node that is not known in its parent.
pub fn unknown_node(node: &Node, parent: &str, known: &[&str], out: &mut Diagnostics) {
    let mut d = Diagnostic::error(
        Code::UnknownNode,
        format!("unknown node `{}` in {parent}", node.name.value),
    )
    .at(node.name.span, "unknown node");
    // Settings users often write in the wrong place.
    let moved = match (parent, node.name.value.as_str()) {
        ("`service`", "replicas" | "nodes") => {
            Some("replicas belong to the cluster: cluster \"active-active\" replicas=3")
        }
        ("`service`", "limits" | "requests") => {
            Some("write it inside resources: resources { limits cpu=\"1\" memory=\"1Gi\" }")
        }
        ("`service`", "ports") => Some("declare one `port` node per port: port 8080"),
        ("`service`", "environment") => {
            Some("declare one `env` node per variable: env \"NAME\" \"value\"")
        }
        ("`service`", "healthcheck") => {
            Some("did you mean `health`? e.g. health http=\"/health\" port=8080")
        }
        _ => None,
    };
    d = match (moved, did_you_mean(&node.name.value, known.iter().copied())) {
        (Some(hint), _) => d.help(hint),
        (None, Some(m)) => d.help(format!("did you mean `{m}`?")),
        (None, None) => d.help(format!("known here: {}", known.join(", "))),
    };
    out.push(d);
}
