//! The grafana target (in progress).

use super::{Artifact, Ctx};

pub fn emit(_cx: &mut Ctx) -> Vec<Artifact> {
    Vec::new()
}
