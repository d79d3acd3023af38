//! `stackc fmt`: canonical formatting that keeps comments.
//!
//! Formatting is the `kdl` crate's, which keeps comments and normalises
//! indentation and spacing. Files are replaced atomically.

use std::path::{Path, PathBuf};

use super::Ui;
use crate::diag::Diagnostics;
use crate::source::SourceMap;

/// The formatted text of a document, or the syntax diagnostics.
pub fn format_text(name: &str, text: &str) -> Result<String, (SourceMap, Diagnostics)> {
    match kdl::KdlDocument::parse_v2(text) {
        Ok(mut doc) => {
            let blanks = blank_lines_before(&doc);
            // Keep each value as written (quotes, raw strings, number
            // forms): formatting changes layout, never how a value reads.
            let mut config = kdl::FormatConfig::default();
            config.entry_autoformate_keep = true;
            doc.autoformat_config(&config);
            restore_blank_lines(&mut doc, &mut blanks.into_iter());
            let mut out = doc.to_string();
            if !out.ends_with('\n') {
                out.push('\n');
            }
            Ok(out)
        }
        Err(_) => {
            let loaded = crate::parse::load_str(name, text, Path::new("."), None);
            let mut diags = Diagnostics::new();
            for d in loaded
                .diags
                .iter()
                .filter(|d| d.code == crate::diag::Code::Syntax)
            {
                diags.push(d.clone());
            }
            Err((loaded.sources, diags))
        }
    }
}

/// Whether each node (in document order) was preceded by a blank line;
/// the first node of each block never is, so blocks start tight.
fn blank_lines_before(doc: &kdl::KdlDocument) -> Vec<bool> {
    fn walk(doc: &kdl::KdlDocument, out: &mut Vec<bool>) {
        for (i, node) in doc.nodes().iter().enumerate() {
            let leading = node.format().map_or("", |f| f.leading.as_str());
            let blank =
                i > 0 && leading.split('\n').count() > 2 - usize::from(leading.starts_with('\n'));
            out.push(blank);
            if let Some(children) = node.children() {
                walk(children, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(doc, &mut out);
    out
}

/// Put back the blank lines and normalise entry spacing.
fn restore_blank_lines(doc: &mut kdl::KdlDocument, blanks: &mut impl Iterator<Item = bool>) {
    for node in doc.nodes_mut() {
        if blanks.next() == Some(true)
            && let Some(f) = node.format_mut()
        {
            f.leading.insert(0, '\n');
        }
        // Entries kept their format for their value; their spacing is
        // canonical: one space before each.
        for entry in node.entries_mut() {
            if let Some(f) = entry.format_mut() {
                f.leading = " ".into();
            }
        }
        if let Some(children) = node.children_mut() {
            restore_blank_lines(children, blanks);
        }
    }
}

pub fn run(ui: &Ui, files: &[PathBuf], check: bool) -> u8 {
    let default = [PathBuf::from("stack.kdl")];
    let files = if files.is_empty() {
        &default[..]
    } else {
        files
    };
    let mut failed = false;
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!(
                    "error[stackc::missing-file]: cannot read {}: {e}",
                    path.display()
                );
                failed = true;
                continue;
            }
        };
        let name = path.display().to_string();
        match format_text(&name, &text) {
            Ok(formatted) if formatted == text => {}
            Ok(formatted) => {
                if check {
                    println!("would reformat {name}");
                    failed = true;
                } else if let Err(e) = crate::artifacts::write_atomic(path, formatted.as_bytes()) {
                    eprintln!("error: cannot write {name}: {e}");
                    failed = true;
                } else {
                    println!("formatted {name}");
                }
            }
            Err((sources, diags)) => {
                eprint!("{}", crate::diag::render(&diags, &sources, ui.color));
                failed = true;
            }
        }
    }
    u8::from(failed)
}
