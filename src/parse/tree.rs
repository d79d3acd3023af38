//! The document tree read from KDL: nodes, arguments, properties and
//! children, each with its span. It is deliberately plain so that imports
//! and environment overrides can merge trees before the model is decoded.

use crate::source::Span;

/// The text of a name or string value: held inline up to 24 bytes (most
/// names and values of a topology), so reading a large document does not
/// allocate once per word.
pub type Text = compact_str::CompactString;

/// A KDL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(Text),
    Integer(i128),
    Float(f64),
    Bool(bool),
    Null,
}

impl Value {
    /// The KDL type name used in diagnostics ("string", "integer", ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Float(_) => "number",
            Value::Bool(_) => "boolean",
            Value::Null => "#null",
        }
    }
}

/// An identifier (node name, property name or type annotation) and its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub value: Text,
    pub span: Span,
}

/// An argument (`name` is `None`) or a property (`name=value`).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: Option<Ident>,
    /// Boxed: type annotations are rare, and a topology holds hundreds of
    /// thousands of entries.
    pub ty: Option<Box<Ident>>,
    pub value: Value,
    /// Span of the value alone.
    pub value_span: Span,
    /// Span of the whole entry, `name=value` for properties.
    pub span: Span,
}

/// A node with its entries, in source order, and its children block.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: Ident,
    pub ty: Option<Box<Ident>>,
    pub entries: Vec<Entry>,
    pub children: Option<Vec<Node>>,
    /// Span of the whole node, from its name (or type) to the end of its
    /// children block or last entry.
    pub span: Span,
}

impl Node {
    pub fn args(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.name.is_none())
    }

    pub fn props(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.name.is_some())
    }

    /// The first argument, if it is a string.
    pub fn first_string_arg(&self) -> Option<&str> {
        match self.args().next().map(|e| &e.value) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    pub fn children(&self) -> &[Node] {
        self.children.as_deref().unwrap_or(&[])
    }
}

/// A copy of `node` with every span zeroed, to compare trees by content.
pub fn strip_spans(node: &Node) -> Node {
    let zero = |i: &Ident| Ident {
        value: i.value.clone(),
        span: Span::default(),
    };
    Node {
        name: zero(&node.name),
        ty: node.ty.as_deref().map(|i| Box::new(zero(i))),
        entries: node
            .entries
            .iter()
            .map(|e| Entry {
                name: e.name.as_ref().map(zero),
                ty: e.ty.as_deref().map(|i| Box::new(zero(i))),
                value: e.value.clone(),
                value_span: Span::default(),
                span: Span::default(),
            })
            .collect(),
        children: node
            .children
            .as_ref()
            .map(|c| c.iter().map(strip_spans).collect()),
        span: Span::default(),
    }
}
