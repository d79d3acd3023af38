//! Command line: argument definitions and one file per subcommand. Every
//! command returns an exit code; errors are printed where they happen.
//!
//! Exit codes: 0 success, 1 errors (bad input, failed checks, usage),
//! `diff` (and later `plan`) exit 2 when there are changes.

mod build;
mod check;
mod engine;
mod explain;
mod fmt;
mod graph;
mod kube;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "stackc",
    version,
    about = "Compile one KDL topology into compose, nginx, Prometheus and Kubernetes artifacts"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// When to colour diagnostics.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// Options shared by every command that reads a topology.
#[derive(Args, Debug, Clone)]
pub struct Input {
    /// Topology file [default: stack.kdl in the current directory]
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Environment whose overrides to apply (an `env` block of the topology)
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
}

impl Input {
    pub fn path(&self) -> PathBuf {
        self.file
            .clone()
            .unwrap_or_else(|| PathBuf::from("stack.kdl"))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a topology and report every problem at once
    Check {
        #[command(flatten)]
        input: Input,
        /// Print the result as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Show the dependency graph and deploy phases
    Graph {
        #[command(flatten)]
        input: Input,
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
        /// Print the graph as JSON on stdout (same as --format json)
        #[arg(long)]
        json: bool,
    },
    /// Compile the topology to artifacts (compose, nginx, Prometheus, Grafana, Kubernetes)
    Build {
        #[command(flatten)]
        input: Input,
        /// Output directory [default: generated/ beside the topology]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Targets to build [default: all]
        #[arg(long, value_enum, value_delimiter = ',')]
        target: Vec<crate::targets::Target>,
    },
    /// Compare a fresh build with the artifacts on disk; exit 2 when they differ
    Diff {
        #[command(flatten)]
        input: Input,
        /// Artifact directory [default: generated/ beside the topology]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Targets to compare [default: all]
        #[arg(long, value_enum, value_delimiter = ',')]
        target: Vec<crate::targets::Target>,
    },
    /// Show what apply would change on the engine (never changes anything)
    Plan {
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        engine: engine::EngineArgs,
        /// Print the plan as JSON
        #[arg(long)]
        json: bool,
        /// Exit 2 when there are changes (0 none, 1 error)
        #[arg(long)]
        detailed_exitcode: bool,
        /// Save the plan; `stackc apply FILE.json` applies exactly it
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Plan deletion of containers the topology no longer has
        #[arg(long)]
        prune: bool,
        /// Kubernetes: take over fields another field manager owns
        #[arg(long)]
        force_conflicts: bool,
    },
    /// Make the engine match the topology (or a saved plan), phase by phase
    Apply {
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        engine: engine::EngineArgs,
        /// Delete containers the topology no longer has (never volumes)
        #[arg(long)]
        prune: bool,
        /// Kubernetes: take over fields another field manager owns
        #[arg(long)]
        force_conflicts: bool,
        /// Longest wait, in seconds, for one container (Kubernetes: one phase) to become healthy
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Compare the live engine (and committed artifacts) with the topology; exit 2 on drift
    Drift {
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        engine: engine::EngineArgs,
        #[arg(long)]
        json: bool,
    },
    /// Remove the stack's containers and network (volumes only with --volumes)
    Destroy {
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        engine: engine::EngineArgs,
        /// Also remove the stack's named volumes (their data is lost)
        #[arg(long)]
        volumes: bool,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
    /// Rollouts: status, history, promote, pause, resume, abort, undo
    Rollout {
        #[arg(value_enum)]
        action: RolloutAction,
        /// The service
        service: String,
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        engine: engine::EngineArgs,
        #[arg(long)]
        json: bool,
    },
    /// Format topology files canonically, keeping comments
    Fmt {
        /// Files to format [default: stack.kdl]
        files: Vec<PathBuf>,
        /// Do not write; exit 1 if a file is not formatted
        #[arg(long)]
        check: bool,
    },
    /// Explain a diagnostic code, e.g. `stackc explain unknown-property`
    Explain {
        /// The code, with or without the `stackc::` prefix; omit to list all
        code: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum RolloutAction {
    /// The latest attempt
    Status,
    /// Every attempt, with outcome and reason
    History,
    /// Skip the remaining steps of the running rollout
    Promote,
    /// Hold the running rollout at its current weights
    Pause,
    /// Continue a paused rollout
    Resume,
    /// Return all traffic to the stable version at once and remove the new one
    Abort,
    /// After a blue-green rollout: all traffic back to the kept previous version
    Undo,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum GraphFormat {
    Text,
    Dot,
    Mermaid,
    Json,
}

/// Settings every command needs to print.
pub struct Ui {
    pub color: bool,
}

impl Ui {
    fn new(color: Color) -> Ui {
        let color = match color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
            }
        };
        Ui { color }
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // Usage errors exit 1, like every other error: 2 is reserved
            // for "changes present" in plan and diff.
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    ExitCode::from(run(cli))
}

pub fn run(cli: Cli) -> u8 {
    let ui = Ui::new(cli.color);
    match cli.command {
        Command::Check { input, json } => check::run(&ui, &input, json),
        Command::Graph {
            input,
            format,
            json,
        } => graph::run(&ui, &input, if json { GraphFormat::Json } else { format }),
        Command::Build { input, out, target } => build::run_build(&ui, &input, out, &target),
        Command::Diff { input, out, target } => build::run_diff(&ui, &input, out, &target),
        Command::Plan {
            input,
            engine,
            json,
            detailed_exitcode,
            out,
            prune,
            force_conflicts,
        } => engine::run_plan(
            &ui,
            &input,
            &engine,
            json,
            detailed_exitcode,
            out,
            prune,
            force_conflicts,
        ),
        Command::Apply {
            input,
            engine,
            prune,
            force_conflicts,
            timeout,
        } => engine::run_apply(&ui, &input, &engine, prune, force_conflicts, timeout),
        Command::Drift {
            input,
            engine,
            json,
        } => engine::run_drift(&ui, &input, &engine, json),
        Command::Destroy {
            input,
            engine,
            volumes,
            yes,
        } => engine::run_destroy(&ui, &input, &engine, volumes, yes),
        Command::Rollout {
            action,
            service,
            input,
            engine,
            json,
        } => engine::run_rollout(&ui, &input, &engine, action, &service, json),
        Command::Fmt { files, check } => fmt::run(&ui, &files, check),
        Command::Explain { code } => explain::run(code.as_deref()),
    }
}

/// Print diagnostics to stderr.
pub fn print_diags(ui: &Ui, checked: &crate::Checked) {
    if !checked.diags.is_empty() {
        eprint!(
            "{}",
            crate::diag::render(&checked.diags, &checked.sources, ui.color)
        );
    }
}
