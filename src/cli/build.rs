//! `stackc build` and `stackc diff`: compile a topology to artifacts, and
//! compare a fresh build with the artifacts on disk (the CI check).

use std::path::PathBuf;

use super::{Input, Ui, print_diags};
use crate::artifacts::{self, Change};
use crate::targets::{self, Artifact, Target};

/// Warnings rendered in full; the rest are counted.
const MAX_SHOWN: usize = 20;

/// Where artifacts go by default: `generated/` beside the topology, or
/// `generated-<env>/` for an environment.
pub fn default_out(input: &Input) -> PathBuf {
    let path = input.path();
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    match &input.env {
        Some(e) => dir.join(format!("generated-{e}")),
        None => dir.join("generated"),
    }
}

/// Check the topology; `None` (after printing why) when it has errors.
fn check(ui: &Ui, input: &Input) -> Option<crate::Checked> {
    let checked = crate::check_file(&input.path(), input.env.as_deref());
    print_diags(ui, &checked);
    if !checked.ok() {
        eprintln!("error: the topology has errors; nothing was built");
        return None;
    }
    Some(checked)
}

fn targets_of(selected: &[Target]) -> &[Target] {
    if selected.is_empty() {
        &Target::ALL
    } else {
        selected
    }
}

/// Check and compile; `None` (after printing why) when there are errors.
pub fn compile(ui: &Ui, input: &Input, selected: &[Target], quiet: bool) -> Option<Vec<Artifact>> {
    let checked = check(ui, input)?;
    let (Some(t), Some(g)) = (&checked.topology, &checked.graph) else {
        unreachable!("checked.ok()")
    };
    let (artifacts, warnings) = targets::build(t, g, targets_of(selected));
    report(ui, &checked, &warnings, quiet).then_some(artifacts)
}

/// Print the build's warnings; false if there are errors among them.
fn report(
    ui: &Ui,
    checked: &crate::Checked,
    warnings: &crate::diag::Diagnostics,
    quiet: bool,
) -> bool {
    if !warnings.is_empty() && (!quiet || warnings.has_errors()) {
        // Large topologies can produce thousands of warnings of a few
        // kinds: show the first ones in full, then count the rest by code.
        let shown: crate::diag::Diagnostics = warnings
            .iter()
            .take(MAX_SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        eprint!(
            "{}",
            crate::diag::render(&shown, &checked.sources, ui.color)
        );
        if warnings.len() > MAX_SHOWN {
            let mut rest: std::collections::BTreeMap<String, usize> =
                std::collections::BTreeMap::new();
            for d in warnings.iter().skip(MAX_SHOWN) {
                *rest.entry(d.code.full()).or_default() += 1;
            }
            let list: Vec<String> = rest.iter().map(|(c, n)| format!("{n} × {c}")).collect();
            eprintln!(
                "... and {} more: {}",
                warnings.len() - MAX_SHOWN,
                list.join(", ")
            );
        }
    }
    !warnings.has_errors()
}

/// Check, then compile straight into a new tree beside the output
/// directory (a thread per target, each streaming its files to disk), swapped in
/// when complete and free of errors.
pub fn run_build(ui: &Ui, input: &Input, out: Option<PathBuf>, selected: &[Target]) -> u8 {
    let Some(checked) = check(ui, input) else {
        return 1;
    };
    let (Some(t), Some(g)) = (&checked.topology, &checked.graph) else {
        unreachable!("checked.ok()")
    };
    let out = out.unwrap_or_else(|| default_out(input));
    let targets = targets_of(selected);
    let written = match artifacts::Staging::new(&out) {
        Ok(staging) => {
            let mut sinks: Vec<_> = targets.iter().map(|_| staging.sink()).collect();
            let warnings = targets::build_to(t, g, targets, &mut sinks);
            if !report(ui, &checked, &warnings, false) {
                return 1;
            }
            crate::timing::mark("targets");
            artifacts::DiskSink::finish_all(sinks).and_then(|files| {
                let n = files.len();
                staging.commit(files).map(|()| n)
            })
        }
        Err(e) => {
            // Report the warnings as a build would, then why nothing is written.
            let mut sinks: Vec<_> = targets.iter().map(|_| artifacts::Discard).collect();
            let warnings = targets::build_to(t, g, targets, &mut sinks);
            if !report(ui, &checked, &warnings, false) {
                return 1;
            }
            Err(e)
        }
    };
    // The process ends right after: the OS takes the topology and graph
    // back at once, cheaper than freeing them piece by piece.
    std::mem::forget(checked);
    crate::timing::mark("written");
    match written {
        Ok(n) => {
            println!("built {n} files into {}", out.display());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("the previous artifacts in {} are unchanged", out.display());
            1
        }
    }
}

pub fn run_diff(ui: &Ui, input: &Input, out: Option<PathBuf>, selected: &[Target]) -> u8 {
    let Some(artifacts) = compile(ui, input, selected, false) else {
        return 1;
    };
    let out = out.unwrap_or_else(|| default_out(input));
    match artifacts::diff(&out, &artifacts) {
        Ok((changes, _)) if changes.is_empty() => {
            println!("{} is up to date", out.display());
            0
        }
        Ok((changes, text)) => {
            print!("{text}");
            let (mut added, mut modified, mut removed) = (0, 0, 0);
            for c in &changes {
                match c {
                    Change::Added(_) => added += 1,
                    Change::Modified(_) => modified += 1,
                    Change::Removed(_) => removed += 1,
                }
            }
            eprintln!(
                "{} is stale: {added} to add, {modified} to change, {removed} to remove; run `stackc build` and commit the result",
                out.display()
            );
            2
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
