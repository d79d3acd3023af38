//! Monitoring: Prometheus, Grafana, exporters and alert rules.

use super::Duration;
use crate::source::{Span, Spanned};

#[derive(Debug, Clone, PartialEq)]
pub struct Prometheus {
    pub image: Option<Spanned<String>>,
    pub scrape_interval: Duration,
    pub retention: Duration,
    pub port: u16,
    pub published: Option<Spanned<u16>>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grafana {
    pub image: Option<Spanned<String>>,
    pub dashboards: bool,
    pub port: u16,
    pub published: Option<Spanned<u16>>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub name: Spanned<String>,
    pub expr: Spanned<String>,
    pub for_: Option<Duration>,
    pub severity: Severity,
    pub labels: Vec<(Spanned<String>, String)>,
    pub annotations: Vec<(Spanned<String>, String)>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Monitoring {
    pub tier: Option<Spanned<String>>,
    pub prometheus: Prometheus,
    pub grafana: Option<Grafana>,
    /// Host-level exporters (e.g. `node`).
    pub exporters: Vec<Spanned<String>>,
    pub alerts: Vec<Alert>,
    pub span: Span,
}
