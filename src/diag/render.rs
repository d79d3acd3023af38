//! Rendering diagnostics: graphical miette reports for people, JSON for
//! machines. Rendering is the only place that needs the source text.
//!
//! Hostile input must not make a report huge or slow: a report shows
//! source lines only when they are short enough (otherwise it names the
//! place), at most [`MAX_REPORTS`] reports are drawn, and each finds its
//! lines through an index instead of rescanning the file.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    NamedSource, SourceCode, SourceSpan, SpanContents,
};
use serde_json::json;

use super::{Diagnostic, Diagnostics, Severity};
use crate::source::{FileId, SourceMap};

/// Reports drawn in full; the rest are counted (JSON lists them all).
pub const MAX_REPORTS: usize = 100;
/// Longest source line a report shows, in bytes.
const MAX_SHOWN_LINE: usize = 1000;
/// Most lines one label may cover and still be shown.
const MAX_SHOWN_LINES: usize = 100;

/// Where lines start in one text: after each `\n` (as
/// [`SourceMap::line_col`] counts), or, for miette, after each `\n`,
/// `\r\n` or lone `\r`.
struct Lines {
    starts: Vec<usize>,
    len: usize,
}

impl Lines {
    fn new(text: &str, miette: bool) -> Lines {
        let b = text.as_bytes();
        let mut starts = vec![0];
        // A large topology is megabytes long: find the line ends with
        // memchr rather than byte by byte.
        if miette {
            for i in memchr::memchr2_iter(b'\r', b'\n', b) {
                // `\r\n` ends one line, at its `\n`.
                if !(b[i] == b'\r' && b.get(i + 1) == Some(&b'\n')) {
                    starts.push(i + 1);
                }
            }
        } else {
            starts.extend(memchr::memchr_iter(b'\n', b).map(|i| i + 1));
        }
        Lines {
            starts,
            len: b.len(),
        }
    }

    /// 0-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        self.starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1)
    }

    fn start(&self, line: usize) -> usize {
        self.starts.get(line).copied().unwrap_or(self.len)
    }

    /// 1-based line and column (in characters) of a byte offset, as
    /// [`SourceMap::line_col`] gives them.
    fn line_col(&self, text: &str, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line(offset);
        let col = text[self.start(line).min(offset)..offset].chars().count();
        (line + 1, col + 1)
    }

    /// Whether the lines a label over `start..end` shows (one line of
    /// context either side) are few and short enough to print.
    fn showable(&self, start: usize, end: usize) -> bool {
        let (first, last) = (self.line(start), self.line(end.max(start)));
        last - first <= MAX_SHOWN_LINES
            && (first.saturating_sub(1)..=last + 1)
                .all(|l| self.start(l + 1).saturating_sub(self.start(l)) <= MAX_SHOWN_LINE)
    }
}

/// A source file for miette that hands it only the lines around a span:
/// miette's own reader scans from the start of the text on every call,
/// which made many reports on a large file quadratic.
struct Windowed {
    text: Arc<String>,
    lines: Arc<Lines>,
}

impl SourceCode for Windowed {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let start = span.offset().min(self.text.len());
        let end = (span.offset() + span.len()).min(self.text.len());
        // A margin of a line either side: miette skips what it does not need.
        let base = self.lines.line(start).saturating_sub(before + 1);
        let top = self.lines.start(self.lines.line(end) + after + 2);
        let from = self.lines.start(base);
        let window = &self.text.as_bytes()[from..top];
        let inner = SourceSpan::new((span.offset() - from).into(), span.len());
        let c = window.read_span(&inner, before, after)?;
        Ok(Box::new(MietteSpanContents::new(
            c.data(),
            SourceSpan::new((c.span().offset() + from).into(), c.span().len()),
            c.line() + base,
            c.column(),
            c.line_count() + base,
        )))
    }
}

/// Line indexes of the files rendered so far, for miette or not.
#[derive(Default)]
struct Indexes(HashMap<(FileId, bool), Arc<Lines>>);

impl Indexes {
    fn get(&mut self, sources: &SourceMap, file: FileId, miette: bool) -> Arc<Lines> {
        self.0
            .entry((file, miette))
            .or_insert_with(|| Arc::new(Lines::new(&sources.get(file).text, miette)))
            .clone()
    }
}

/// A diagnostic joined with its source file, in the shape miette renders.
struct Report<'a> {
    diag: &'a Diagnostic,
    source: Option<NamedSource<Windowed>>,
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

fn report<'a>(diag: &'a Diagnostic, sources: &SourceMap, indexes: &mut Indexes) -> Report<'a> {
    let Some(primary) = &diag.primary else {
        return Report {
            diag,
            source: None,
            labels: Vec::new(),
            help: diag.help.clone(),
        };
    };
    let file = sources.get(primary.span.file);
    let lines = indexes.get(sources, primary.span.file, true);
    // A label on a huge line (or covering a huge stretch) is named, not shown.
    let shown = std::iter::once(&primary.span)
        .chain(diag.secondary.iter().map(|l| &l.span))
        .filter(|s| s.file == primary.span.file)
        .all(|s| lines.showable(s.start as usize, s.end as usize));
    if !shown {
        let mut notes = Vec::new();
        for l in std::iter::once(primary).chain(&diag.secondary) {
            let name = &sources.get(l.span.file).name;
            let (line, col) = indexes
                .get(sources, l.span.file, false)
                .line_col(&sources.get(l.span.file).text, l.span.start as usize);
            notes.push(format!("{}: {name}:{line}:{col}", l.text));
        }
        notes.push("(the source lines are too long to show)".into());
        return Report {
            diag,
            source: None,
            labels: Vec::new(),
            help: Some(match &diag.help {
                Some(h) => format!("{h}\n{}", notes.join("\n")),
                None => notes.join("\n"),
            }),
        };
    }
    let source = NamedSource::new(
        &file.name,
        Windowed {
            text: file.text.clone(),
            lines,
        },
    );
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
    let mut indexes = Indexes::default();
    for d in diags.iter().take(MAX_REPORTS) {
        let r = report(d, sources, &mut indexes);
        // Writing into a String cannot fail.
        let _ = handler.render_report(&mut out, &r);
        out.push('\n');
    }
    let rest = diags.iter().count().saturating_sub(MAX_REPORTS);
    if rest > 0 {
        out.push_str(&format!(
            "... and {rest} more (the first {MAX_REPORTS} are shown; `--json` lists every one)\n\n"
        ));
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
    let indexes = std::cell::RefCell::new(Indexes::default());
    let place = |l: &super::Label| {
        let (line, column) = indexes
            .borrow_mut()
            .get(sources, l.span.file, false)
            .line_col(&sources.get(l.span.file).text, l.span.start as usize);
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

#[cfg(test)]
mod tests {
    use super::Lines;

    /// Line starts as a byte-by-byte scan finds them: after `\n`, and for
    /// miette after a `\r` not followed by `\n` too.
    fn scanned(text: &str, miette: bool) -> Vec<usize> {
        let b = text.as_bytes();
        let mut starts = vec![0];
        for i in 0..b.len() {
            let end = b[i] == b'\n' || (miette && b[i] == b'\r' && b.get(i + 1) != Some(&b'\n'));
            if end {
                starts.push(i + 1);
            }
        }
        starts
    }

    #[test]
    fn line_starts_with_every_kind_of_line_end() {
        let texts = [
            "",
            "a",
            "a\n",
            "a\nb",
            "a\r\nb\r\n",
            "a\rb\r",
            "\r\n\r\n\n\r\r",
            "x\r\r\ny\n\rz",
            "é\r\nü\n",
        ];
        for text in texts {
            for miette in [false, true] {
                let lines = Lines::new(text, miette);
                assert_eq!(
                    lines.starts,
                    scanned(text, miette),
                    "{text:?} miette={miette}"
                );
                assert_eq!(lines.len, text.len());
            }
        }
    }
}
