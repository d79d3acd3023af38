//! Integration tests, built into one binary to keep link time down.

mod cli;
mod examples;
mod hostile;
mod invalid;
mod support;
mod targets;
