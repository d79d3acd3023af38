//! Clustering strategy: how the replicas of one service cooperate.

use crate::source::{Span, Spanned};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// One instance, no clustering (the default).
    Single,
    /// All replicas serve traffic.
    ActiveActive,
    /// One replica serves, the others stand by and take over.
    ActivePassive,
    /// One writable primary, read replicas that follow it.
    PrimaryReplica,
    /// A consensus group that needs a majority to operate.
    Quorum,
    /// Data split across shards, each shard one node.
    Sharded,
}

impl Strategy {
    pub const NAMES: &'static [&'static str] = &[
        "single",
        "active-active",
        "active-passive",
        "primary-replica",
        "quorum",
        "sharded",
    ];

    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "single" => Strategy::Single,
            "active-active" => Strategy::ActiveActive,
            "active-passive" => Strategy::ActivePassive,
            "primary-replica" => Strategy::PrimaryReplica,
            "quorum" => Strategy::Quorum,
            "sharded" => Strategy::Sharded,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        Strategy::NAMES[self as usize]
    }

    /// Strategies whose instances have a stable identity (StatefulSet).
    pub fn is_stateful(self) -> bool {
        matches!(
            self,
            Strategy::PrimaryReplica | Strategy::Quorum | Strategy::Sharded
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub strategy: Strategy,
    /// Number of instances (replicas, nodes or shards).
    pub replicas: Spanned<u32>,
    /// Copies of each piece of data kept on other members.
    pub backup_count: Option<Spanned<u32>>,
    /// Refuse writes in a minority partition.
    pub split_brain_protection: bool,
    pub span: Span,
}

impl Cluster {
    /// Members needed for the cluster to operate: a majority for quorum
    /// clusters (and for any cluster with split-brain protection), one
    /// serving member otherwise.
    pub fn min_healthy(&self) -> u32 {
        let n = self.replicas.value;
        match self.strategy {
            Strategy::Quorum => n / 2 + 1,
            _ if self.split_brain_protection => n / 2 + 1,
            Strategy::Sharded => n,
            _ => 1,
        }
    }
}
