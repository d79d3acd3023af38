//! Load-balancer tiers: nginx in front of services.

use super::{Duration, Rate};
use crate::source::{Span, Spanned};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    RoundRobin,
    LeastConn,
    IpHash,
    Random,
}

impl Algorithm {
    pub const NAMES: &'static [&'static str] = &["round_robin", "least_conn", "ip_hash", "random"];

    pub fn parse(s: &str) -> Option<Algorithm> {
        Some(match s {
            "round_robin" | "round-robin" => Algorithm::RoundRobin,
            "least_conn" | "least-conn" => Algorithm::LeastConn,
            "ip_hash" | "ip-hash" => Algorithm::IpHash,
            "random" => Algorithm::Random,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub port: Spanned<u16>,
    /// Host port; defaults to the listener port.
    pub published: Option<Spanned<u16>>,
    pub public: bool,
    /// Terminates TLS with the balancer's `tls` material.
    pub tls: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RateKey {
    Ip,
    Header(String),
    Cookie(String),
    Arg(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub name: Spanned<String>,
    pub rate: Rate,
    pub burst: u32,
    pub key: RateKey,
    /// Shared memory zone size for nginx, e.g. `10m`.
    pub zone_size: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub path: Spanned<String>,
    pub to: Spanned<String>,
    pub limit: Option<Spanned<String>>,
    pub sticky: bool,
    pub algorithm: Option<Algorithm>,
    pub timeout: Option<Duration>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamDefaults {
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub keepalive: u32,
}

impl Default for UpstreamDefaults {
    fn default() -> Self {
        UpstreamDefaults {
            max_fails: 3,
            fail_timeout: Duration::parse("10s").expect("constant"),
            keepalive: 32,
        }
    }
}

/// TLS material, by reference only.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub certificate: Spanned<String>,
    pub key: Spanned<String>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Balancer {
    pub name: Spanned<String>,
    pub tier: Option<Spanned<String>>,
    pub image: Option<Spanned<String>>,
    pub replicas: Spanned<u32>,
    pub listeners: Vec<Listener>,
    pub rate_limits: Vec<RateLimit>,
    pub routes: Vec<Route>,
    pub upstream: UpstreamDefaults,
    pub tls: Option<Tls>,
    pub span: Span,
}
