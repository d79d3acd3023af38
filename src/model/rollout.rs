//! Rollout policy: how a new version of a service takes over traffic.

use super::Duration;
use crate::source::{Span, Spanned};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutStrategy {
    BlueGreen,
    Canary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    Rollback,
    Pause,
}

/// Conditions checked at every step before moving on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Gate {
    /// How long the new version must stay healthy at each step.
    pub healthy_for: Option<Duration>,
    /// Highest allowed ratio of 5xx responses (0..1).
    pub max_error_rate: Option<Spanned<f64>>,
    pub max_latency_p95: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub strategy: RolloutStrategy,
    /// Percentages of traffic on the new version, increasing, ending at 100.
    pub steps: Spanned<Vec<u32>>,
    pub gate: Gate,
    pub on_failure: OnFailure,
    /// Blue-green: how long the previous colour is kept after success.
    pub keep_previous: Option<Duration>,
    pub span: Span,
}
