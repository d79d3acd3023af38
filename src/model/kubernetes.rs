//! Settings that only the Kubernetes target uses.

use crate::source::{Span, Spanned};

#[derive(Debug, Clone, PartialEq)]
pub struct RbacRule {
    pub api_groups: Vec<String>,
    pub resources: Vec<Spanned<String>>,
    pub verbs: Vec<Spanned<String>>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceAccount {
    pub name: Spanned<String>,
    pub rules: Vec<RbacRule>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// No NetworkPolicy.
    None,
    /// Default deny; allow only the edges of the dependency graph.
    Graph,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Kubernetes {
    pub namespace: Spanned<String>,
    pub service_accounts: Vec<ServiceAccount>,
    pub isolation: Isolation,
    pub span: Span,
}
