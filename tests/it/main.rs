//! Integration tests, built into one binary to keep link time down.

mod cli;
mod docker;
mod examples;
mod grafana;
mod hostile;
mod invalid;
mod kubernetes;
mod support;
mod targets;
