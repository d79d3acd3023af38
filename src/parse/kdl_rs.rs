//! The `kdl` crate (kdl-rs) as the reference KDL 2.0 parser: source text
//! in; out come its syntax diagnostics, or its document converted to our
//! plain tree.
//!
//! Our own parser (`parse::kdl`) does the everyday work; this module is for
//! its slow path: kdl-rs explains syntax errors well (message, label, help),
//! and its tree is the fallback when the two parsers disagree.
//!
//! kdl-rs recurses once per nesting level and once per `*` or `/` inside a
//! block comment, and takes several kilobytes of stack for each (tens of
//! kilobytes in debug builds), so ordinary inputs can overflow a normal
//! thread stack, which aborts the process. It therefore runs on a thread of
//! its own with a large stack, and input whose estimated recursion would not
//! fit even there is not handed to it: [`syntax_diagnostics`] then reports
//! one issue saying so, and [`convert`] returns `Err` with no issues.

use std::thread;

use ::kdl::{KdlDocument, KdlError, KdlIdentifier, KdlNode, KdlValue};

use crate::parse::kdl::MAX_DEPTH;
use crate::parse::tree::{Entry, Ident, Node, Value};
use crate::source::{FileId, Span};

/// One diagnostic from kdl-rs: byte range, message, and its label and help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdlSyntaxIssue {
    pub start: usize,
    pub end: usize,
    pub message: String,
    pub label: Option<String>,
    pub help: Option<String>,
}

/// Stack for the kdl-rs thread. It is only reserved address space; pages
/// are committed as the recursion actually reaches them.
const STACK_SIZE: usize = 256 << 20;

/// Recursion units (see [`recursion_estimate`]) allowed on [`STACK_SIZE`].
/// Measured in a debug build (release needs about a tenth): at most 90 KB
/// per nesting level (7 units) and 7 KB per block-comment piece (1 unit),
/// so the budget needs at most about 130 MB: a 2x margin.
const RECURSION_BUDGET: usize = 10_000;

/// Units charged per level of `{` nesting.
const UNITS_PER_LEVEL: usize = 7;

/// kdl-rs's diagnostics for `text`, empty if it parses the text fine.
///
/// Text that kdl-rs could not parse without risking a stack overflow gets
/// a single issue pointing where the nesting became too deep.
pub fn syntax_diagnostics(text: &str) -> Vec<KdlSyntaxIssue> {
    match run_kdl_rs(text, |parsed| match parsed {
        Ok(_) => Vec::new(),
        Err(error) => issues(&error),
    }) {
        Ok(issues) => issues,
        Err(issue) => vec![issue],
    }
}

/// Parses `text` with kdl-rs and converts the document to our tree.
///
/// Spans come from kdl-rs: names, type annotations, entries and values are
/// exact; a node's span starts exactly but its end is recovered from kdl-rs's
/// formatting data and can reach past trailing comments. Children nested
/// deeper than [`MAX_DEPTH`] are refused, as our parser refuses them.
///
/// `Err` with no issues means kdl-rs could not be consulted (input too
/// deep for it, see the module docs): the caller's own error stands.
pub fn convert(text: &str, file: FileId) -> Result<Vec<Node>, Vec<KdlSyntaxIssue>> {
    match run_kdl_rs(text, |parsed| match parsed {
        Ok(doc) => convert_nodes(doc.nodes(), text, file, 0).map_err(|issue| vec![issue]),
        Err(error) => Err(issues(&error)),
    }) {
        Ok(result) => result,
        Err(_) => Err(Vec::new()),
    }
}

/// Runs kdl-rs on a large-stack thread and hands its result to `then`
/// there, or explains why it was not run.
fn run_kdl_rs<T: Send>(
    text: &str,
    then: impl FnOnce(Result<KdlDocument, KdlError>) -> T + Send,
) -> Result<T, KdlSyntaxIssue> {
    if let Some(at) = recursion_estimate(text) {
        return Err(KdlSyntaxIssue {
            start: at,
            end: (at + 1).min(text.len()),
            message: "nesting is too deep for the reference KDL parser".into(),
            label: Some("too deep".into()),
            help: Some(format!(
                "children blocks may nest at most {MAX_DEPTH} levels, and block comments cannot hold thousands of `*` or `/`"
            )),
        });
    }
    thread::scope(|scope| {
        let handle = thread::Builder::new()
            .name("kdl-rs".into())
            .stack_size(STACK_SIZE)
            .spawn_scoped(scope, || then(KdlDocument::parse_v2(text)));
        let failed = |what: &str| KdlSyntaxIssue {
            start: 0,
            end: 0,
            message: format!("the reference KDL parser {what}"),
            label: None,
            help: None,
        };
        match handle {
            Ok(handle) => handle.join().map_err(|_| failed("panicked")),
            Err(_) => Err(failed("could not be started")),
        }
    })
}

/// A rough lexer that finds where kdl-rs would recurse deeply: `{` nesting
/// outside strings and comments, and the pieces of a block comment (kdl-rs
/// recurses for each `*`, `/` and run of other text in one). Returns the
/// offset where the estimate exceeds [`RECURSION_BUDGET`], if it does.
/// Unterminated strings and comments simply end the scan: kdl-rs stops
/// there too.
fn recursion_estimate(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'{' => {
                depth += 1;
                if depth * UNITS_PER_LEVEL > RECURSION_BUDGET {
                    return Some(i);
                }
                i += 1;
            }
            b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let start = i;
                let mut nesting = 0usize;
                let mut units = depth * UNITS_PER_LEVEL;
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        nesting += 1;
                        units += 2;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        nesting -= 1;
                        i += 2;
                        if nesting == 0 {
                            break;
                        }
                    } else {
                        // A `*`, a `/`, or a run of other bytes: one piece.
                        if b[i] == b'*' || b[i] == b'/' {
                            i += 1;
                        } else {
                            while i < b.len() && b[i] != b'*' && b[i] != b'/' {
                                i += 1;
                            }
                        }
                        units += 1;
                    }
                    if units > RECURSION_BUDGET {
                        return Some(start);
                    }
                }
            }
            b'"' => i = skip_quoted(b, i),
            b'#' => {
                let hashes = b[i..].iter().take_while(|&&c| c == b'#').count();
                let open = i + hashes;
                i = if b.get(open) == Some(&b'"') {
                    let quotes = if b[open..].starts_with(b"\"\"\"") {
                        3
                    } else {
                        1
                    };
                    skip_raw(b, open + quotes, quotes, hashes)
                } else {
                    open
                };
            }
            _ => i += 1,
        }
    }
    None
}

/// Skips a quoted (or `"""` multi-line) string starting at `i`.
fn skip_quoted(b: &[u8], i: usize) -> usize {
    let multi = b[i..].starts_with(b"\"\"\"");
    let mut j = i + if multi { 3 } else { 1 };
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' if !multi => return j + 1,
            b'"' if b[j..].starts_with(b"\"\"\"") => return j + 3,
            b'\n' if !multi => return j,
            _ => j += 1,
        }
    }
    b.len()
}

/// Skips a raw string body from `i` to just past its closing `quotes`
/// quotes and `hashes` hashes. Linear: each quote is checked against the
/// run of `#` right after it, and that run is at most rescanned once.
fn skip_raw(b: &[u8], mut i: usize, quotes: usize, hashes: usize) -> usize {
    while i < b.len() {
        if b[i] == b'"'
            && b[i..].iter().take(quotes).all(|&c| c == b'"')
            && b.len() >= i + quotes + hashes
            && b[i + quotes..i + quotes + hashes]
                .iter()
                .all(|&c| c == b'#')
        {
            return i + quotes + hashes;
        }
        i += 1;
    }
    b.len()
}

fn issues(error: &KdlError) -> Vec<KdlSyntaxIssue> {
    error
        .diagnostics
        .iter()
        .map(|d| KdlSyntaxIssue {
            start: d.span.offset(),
            end: d.span.offset() + d.span.len(),
            message: d
                .message
                .clone()
                .or_else(|| d.label.clone())
                .unwrap_or_else(|| "invalid KDL".into()),
            label: d.label.clone(),
            help: d.help.clone(),
        })
        .collect()
}

fn convert_nodes(
    nodes: &[KdlNode],
    text: &str,
    file: FileId,
    depth: usize,
) -> Result<Vec<Node>, KdlSyntaxIssue> {
    nodes
        .iter()
        .map(|node| convert_node(node, text, file, depth))
        .collect()
}

fn convert_node(
    node: &KdlNode,
    text: &str,
    file: FileId,
    depth: usize,
) -> Result<Node, KdlSyntaxIssue> {
    let name = ident(node.name(), file);
    let ty = node.ty().map(|t| Box::new(ident(t, file)));
    let entries: Vec<Entry> = node
        .entries()
        .iter()
        .map(|entry| {
            let span = entry.span();
            let end = span.offset() + span.len();
            // kdl-rs keeps the value's source text; the value ends the entry.
            let value_start = entry
                .format()
                .map_or(span.offset(), |f| end.saturating_sub(f.value_repr.len()))
                .max(span.offset());
            Entry {
                name: entry.name().map(|n| ident(n, file)),
                ty: entry.ty().map(|t| Box::new(ident(t, file))),
                value: convert_value(entry.value()),
                value_span: Span::new(file, value_start, end),
                span: Span::new(file, span.offset(), end),
            }
        })
        .collect();
    let children = match node.children() {
        Some(doc) => {
            if depth >= MAX_DEPTH {
                let at = node.span().offset();
                return Err(KdlSyntaxIssue {
                    start: at,
                    end: at + node.span().len(),
                    message: format!("nesting is deeper than {MAX_DEPTH} levels"),
                    label: None,
                    help: None,
                });
            }
            Some(convert_nodes(doc.nodes(), text, file, depth + 1)?)
        }
        None => None,
    };
    let start = node.span().offset();
    let mut end = trim_space_end(text, start, start + node.span().len());
    // kdl-rs's node span runs on over commented-out trailing entries and
    // children blocks and the whitespace after them; cut those off.
    if let Some(format) = node.format() {
        let trailing = format.before_terminator.trim_end();
        if !trailing.is_empty() && text.get(start..end).is_some_and(|s| s.ends_with(trailing)) {
            end = trim_space_end(text, start, end - trailing.len());
        }
    }
    let floor = entries.last().map_or(name.span.end, |e: &Entry| e.span.end) as usize;
    Ok(Node {
        name,
        ty,
        entries,
        children,
        span: Span::new(file, start, end.max(floor)),
    })
}

/// `end` moved back over trailing whitespace, but not before `start`.
fn trim_space_end(text: &str, start: usize, end: usize) -> usize {
    match text.get(start..end) {
        Some(s) => start + s.trim_end().len(),
        None => end,
    }
}

fn ident(id: &KdlIdentifier, file: FileId) -> Ident {
    let span = id.span();
    Ident {
        value: id.value().into(),
        span: Span::new(file, span.offset(), span.offset() + span.len()),
    }
}

fn convert_value(value: &KdlValue) -> Value {
    match value {
        KdlValue::String(s) => Value::String(s.as_str().into()),
        KdlValue::Integer(i) => Value::Integer(*i),
        KdlValue::Float(f) => Value::Float(*f),
        KdlValue::Bool(b) => Value::Bool(*b),
        KdlValue::Null => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: FileId = FileId(0);

    fn sp(start: usize, end: usize) -> Span {
        Span::new(F, start, end)
    }

    #[test]
    fn no_diagnostics_for_valid_text() {
        assert!(syntax_diagnostics("").is_empty());
        assert!(syntax_diagnostics("a 1 k=v { b; c \"x\" }").is_empty());
    }

    #[test]
    fn diagnostics_carry_span_message_label_and_help() {
        let issues = syntax_diagnostics("node 1asdf 2");
        assert_eq!(issues.len(), 1);
        let issue = &issues[0];
        assert_eq!((issue.start, issue.end), (5, 10));
        assert_eq!(issue.message, "Expected integer");
        assert_eq!(issue.label.as_deref(), Some("not integer"));
        assert!(
            issue
                .help
                .as_deref()
                .is_some_and(|h| h.contains("value terminator"))
        );

        let issues = syntax_diagnostics("a {\n  b 1\n");
        assert!(!issues.is_empty());
        assert!(issues.iter().any(|i| i.message.contains("closing '}'")));
    }

    #[test]
    fn convert_builds_our_tree_with_spans() {
        let text = "(t)node 1 (u8)2 a = 3 \"q\"=(x) 4.5 #\"raw\"# /-5 {\n  child #true #null\n} /-{ z }\nnext";
        let nodes = convert(text, F).unwrap();
        assert_eq!(nodes.len(), 2);
        let n = &nodes[0];
        assert_eq!((n.name.value.as_str(), n.name.span), ("node", sp(3, 7)));
        assert_eq!(
            n.ty.as_ref().map(|t| (t.value.as_str(), t.span)),
            Some(("t", sp(1, 2)))
        );
        assert_eq!(n.span, sp(0, text.find("} /-").unwrap() + 1));
        let values: Vec<&Value> = n.entries.iter().map(|e| &e.value).collect();
        assert_eq!(
            values,
            [
                &Value::Integer(1),
                &Value::Integer(2),
                &Value::Integer(3),
                &Value::Float(4.5),
                &Value::String("raw".into()),
            ]
        );
        let e = &n.entries;
        assert_eq!((e[1].span, e[1].value_span), (sp(10, 15), sp(14, 15)));
        assert_eq!(e[1].ty.as_ref().map(|t| t.span), Some(sp(11, 13)));
        assert_eq!((e[2].span, e[2].value_span), (sp(16, 21), sp(20, 21)));
        assert_eq!(e[2].name.as_ref().map(|k| k.span), Some(sp(16, 17)));
        assert_eq!((e[3].span, e[3].value_span), (sp(22, 33), sp(30, 33)));
        let child = &n.children.as_ref().unwrap()[0];
        assert_eq!(child.entries[0].value, Value::Bool(true));
        assert_eq!(child.entries[1].value, Value::Null);
        assert_eq!(nodes[1].span, sp(text.len() - 4, text.len()));
        // A node's span stops before trailing commented-out entries.
        assert_eq!(convert("a 1 /-2 // c", F).unwrap()[0].span, sp(0, 3));
    }

    #[test]
    fn convert_keeps_duplicate_properties() {
        let nodes = convert("a k=1 k=2", F).unwrap();
        let props: Vec<_> = nodes[0]
            .props()
            .map(|e| (e.name.as_ref().unwrap().value.as_str(), e.value.clone()))
            .collect();
        assert_eq!(props, [("k", Value::Integer(1)), ("k", Value::Integer(2))]);
    }

    #[test]
    fn convert_reports_syntax_errors() {
        let issues = convert("a \"open", F).unwrap_err();
        assert!(!issues.is_empty());
        assert!(issues.iter().all(|i| i.start <= i.end));
    }

    #[test]
    fn convert_refuses_nesting_beyond_our_limit() {
        let nest = |n: usize| format!("{}{}", "a {".repeat(n), "}".repeat(n));
        assert!(convert(&nest(MAX_DEPTH), F).is_ok());
        let issues = convert(&nest(MAX_DEPTH + 1), F).unwrap_err();
        assert_eq!(issues[0].message, "nesting is deeper than 128 levels");
    }

    /// kdl-rs would overflow the stack (and abort) on these; we refuse them.
    #[test]
    fn deep_input_is_refused_instead_of_crashing() {
        let deep = format!("{}{}", "a {".repeat(10_000), "}".repeat(10_000));
        let issues = syntax_diagnostics(&deep);
        assert_eq!(issues.len(), 1);
        assert!(issues[0].message.contains("too deep"));
        assert_eq!(convert(&deep, F), Err(Vec::new()));
        let unclosed = "a {\n".repeat(100_000);
        assert!(
            syntax_diagnostics(&unclosed)[0]
                .message
                .contains("too deep")
        );
        let stars = format!("/* {} */ a", "* ".repeat(100_000));
        assert!(syntax_diagnostics(&stars)[0].message.contains("too deep"));
        let nested_comments = format!("{}{} a", "/*".repeat(50_000), "*/".repeat(50_000));
        assert!(
            syntax_diagnostics(&nested_comments)[0]
                .message
                .contains("too deep")
        );
    }

    /// Large but not pathological input runs on the big stack, even in
    /// debug builds.
    #[test]
    fn large_input_within_budget_runs() {
        let stars = format!("/* {} */ a", "* ".repeat(3_000));
        assert!(syntax_diagnostics(&stars).is_empty());
        let levels = RECURSION_BUDGET / UNITS_PER_LEVEL - 1;
        let deep = format!("{}{}", "a {".repeat(levels), "}".repeat(levels));
        assert!(syntax_diagnostics(&deep).is_empty());
    }

    #[test]
    fn recursion_estimate_skips_strings_and_line_comments() {
        let braces = "{".repeat(5_000);
        for text in [
            format!("a \"{braces}\""),
            format!("a #\"{braces}\"#"),
            format!("a ##\"\"#{braces}\"##"),
            format!("a \"\"\"\n{braces}\n\"\"\""),
            format!("a // {braces}\nb"),
        ] {
            assert_eq!(recursion_estimate(&text), None, "{}", &text[..12]);
            assert!(syntax_diagnostics(&text).is_empty());
        }
        assert!(recursion_estimate(&format!("a {braces}")).is_some());
    }
}
