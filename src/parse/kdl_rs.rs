//! Temporary: the `kdl` crate as parser (replaced by the helper's module).
use crate::parse::tree::{Entry, Ident, Node, Value};
use crate::source::{FileId, Span};

pub struct KdlSyntaxIssue {
    pub start: usize,
    pub end: usize,
    pub message: String,
    pub label: Option<String>,
    pub help: Option<String>,
}

pub fn syntax_diagnostics(text: &str) -> Vec<KdlSyntaxIssue> {
    match kdl::KdlDocument::parse_v2(text) {
        Ok(_) => vec![],
        Err(e) => issues(e),
    }
}

fn issues(e: kdl::KdlError) -> Vec<KdlSyntaxIssue> {
    e.diagnostics
        .into_iter()
        .map(|d| KdlSyntaxIssue {
            start: d.span.offset(),
            end: d.span.offset() + d.span.len(),
            message: d.message.unwrap_or_else(|| "unexpected input".into()),
            label: d.label,
            help: d.help,
        })
        .collect()
}

fn sp(file: FileId, s: miette::SourceSpan) -> Span {
    Span::new(file, s.offset(), s.offset() + s.len())
}

fn conv(n: &kdl::KdlNode, file: FileId) -> Node {
    Node {
        name: Ident {
            value: n.name().value().to_string(),
            span: sp(file, n.name().span()),
        },
        ty: n.ty().map(|t| Ident {
            value: t.value().to_string(),
            span: sp(file, t.span()),
        }),
        entries: n
            .entries()
            .iter()
            .map(|e| Entry {
                name: e.name().map(|i| Ident {
                    value: i.value().to_string(),
                    span: sp(file, i.span()),
                }),
                ty: e.ty().map(|t| Ident {
                    value: t.value().to_string(),
                    span: sp(file, t.span()),
                }),
                value: match e.value() {
                    kdl::KdlValue::String(s) => Value::String(s.clone()),
                    kdl::KdlValue::Integer(i) => Value::Integer(*i),
                    kdl::KdlValue::Float(f) => Value::Float(*f),
                    kdl::KdlValue::Bool(b) => Value::Bool(*b),
                    kdl::KdlValue::Null => Value::Null,
                },
                value_span: sp(file, e.span()),
                span: sp(file, e.span()),
            })
            .collect(),
        children: n
            .children()
            .map(|d| d.nodes().iter().map(|c| conv(c, file)).collect()),
        span: sp(file, n.span()),
    }
}

pub fn convert(text: &str, file: FileId) -> Result<Vec<Node>, Vec<KdlSyntaxIssue>> {
    match kdl::KdlDocument::parse_v2(text) {
        Ok(d) => Ok(d.nodes().iter().map(|n| conv(n, file)).collect()),
        Err(e) => Err(issues(e)),
    }
}
