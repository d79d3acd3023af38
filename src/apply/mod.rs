//! Apply stage: carry out a plan on a live engine (Docker) or cluster
//! (Kubernetes). The only module (with `cli`) that talks to the outside
//! world; everything it does is decided by the plan.

pub mod docker;
pub mod kube;
pub mod lock;
pub mod rollout;
