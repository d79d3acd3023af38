//! Scheduled jobs (backups and the like).

use super::{Secret, Volume};
use crate::source::{Span, Spanned};

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: Spanned<String>,
    pub schedule: Spanned<String>,
    pub image: Spanned<String>,
    pub command: Vec<Spanned<String>>,
    pub secrets: Vec<Secret>,
    pub volumes: Vec<Volume>,
    pub service_account: Option<Spanned<String>>,
    pub span: Span,
}
