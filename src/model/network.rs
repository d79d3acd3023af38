//! The address plan: one network, one range per tier.

use ipnet::Ipv4Net;

use crate::source::{Span, Spanned};

#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub name: Spanned<String>,
    pub subnet: Spanned<Ipv4Net>,
    /// False when the written subnet was invalid (already reported).
    pub subnet_ok: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub name: Spanned<String>,
    pub subnet: Spanned<Ipv4Net>,
    /// False when the written subnet was invalid (already reported).
    pub subnet_ok: bool,
    pub tiers: Vec<Tier>,
    pub span: Span,
}

impl Network {
    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.name.value == name)
    }
}
