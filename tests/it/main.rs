//! Integration tests, built into one binary to keep link time down.

mod cli;
mod docker;
mod examples;
mod faults;
mod fuzz;
mod grafana;
mod hostile;
mod hostile_text;
mod injection;
mod invalid;
mod kube;
mod kube_rollout;
mod kubernetes;
mod support;
mod targets;
