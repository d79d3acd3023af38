//! An explicit deploy phase list (phases are otherwise derived).

use crate::source::{Span, Spanned};

#[derive(Debug, Clone, PartialEq)]
pub struct PhaseDecl {
    pub name: Spanned<String>,
    pub tiers: Vec<Spanned<String>>,
    pub services: Vec<Spanned<String>>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PhaseList {
    pub phases: Vec<PhaseDecl>,
    pub span: Span,
}
