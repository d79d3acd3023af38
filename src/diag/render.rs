//! Rendering diagnostics: graphical miette reports for people, JSON for
//! machines. Rendering is the only place that needs the source text.

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use serde_json::json;

use super::{Diagnostic, Diagnostics, Severity};
use crate::source::SourceMap;

/// A diagnostic joined with its source file, in the shape miette renders.
struct Report<'a> {
    diag: &'a Diagnostic,
    source: Option<NamedSource<Arc<str>>>,
    labels: Vec<LabeledSpan>,
    help: Option<String>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diag.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }
}

fn report<'a>(diag: &'a Diagnostic, sources: &SourceMap) -> Report<'a> {
    let Some(primary) = &diag.primary else {
        return Report {
            diag,
            source: None,
            labels: Vec::new(),
            help: diag.help.clone(),
        };
    };
    let file = sources.get(primary.span.file);
    let source = NamedSource::new(&file.name, file.text.clone());
    let to_span = |s: crate::source::Span| SourceSpan::new((s.start as usize).into(), s.len());
    let mut labels = vec![LabeledSpan::new_primary_with_span(
        Some(primary.text.clone()),
        to_span(primary.span),
    )];
    // miette shows one source per report; places in other files are named
    // in a note instead of being dropped.
    let mut notes = Vec::new();
    for l in &diag.secondary {
        if l.span.file == primary.span.file {
            labels.push(LabeledSpan::new_with_span(
                Some(l.text.clone()),
                to_span(l.span),
            ));
        } else {
            let (line, col) = sources.line_col(l.span.file, l.span.start);
            let name = &sources.get(l.span.file).name;
            notes.push(format!("{}: {name}:{line}:{col}", l.text));
        }
    }
    let help = match (&diag.help, notes.is_empty()) {
        (h, true) => h.clone(),
        (Some(h), false) => Some(format!("{h}\n{}", notes.join("\n"))),
        (None, false) => Some(notes.join("\n")),
    };
    Report {
        diag,
        source: Some(source),
        labels,
        help,
    }
}

fn render_with(
    handler: &GraphicalReportHandler,
    diags: &Diagnostics,
    sources: &SourceMap,
) -> String {
    let mut out = String::new();
    for d in diags.iter() {
        let r = report(d, sources);
        // Writing into a String cannot fail.
        let _ = handler.render_report(&mut out, &r);
        out.push('\n');
    }
    out
}

/// Render for a terminal: colours when `color` is set, unicode art.
pub fn render(diags: &Diagnostics, sources: &SourceMap, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    render_with(&handler, diags, sources)
}

/// Render without colour at a fixed width: stable text for snapshots and logs.
pub fn render_plain(diags: &Diagnostics, sources: &SourceMap) -> String {
    let handler =
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(100);
    render_with(&handler, diags, sources)
}

/// Diagnostics as JSON values: code, severity, message, file, line, column,
/// byte span, labels and help.
pub fn to_json(diags: &Diagnostics, sources: &SourceMap) -> serde_json::Value {
    let place = |l: &super::Label| {
        let (line, column) = sources.line_col(l.span.file, l.span.start);
        json!({
            "file": sources.get(l.span.file).name,
            "line": line,
            "column": column,
            "start": l.span.start,
            "end": l.span.end,
            "label": l.text,
        })
    };
    let items: Vec<_> = diags
        .iter()
        .map(|d| {
            let location = d.primary.as_ref().map(place);
            let related: Vec<_> = d.secondary.iter().map(place).collect();
            json!({
                "code": d.code.full(),
                "severity": match d.severity { Severity::Error => "error", Severity::Warning => "warning" },
                "message": d.message,
                "location": location,
                "related": related,
                "help": d.help,
            })
        })
        .collect();
    serde_json::Value::Array(items)
}
