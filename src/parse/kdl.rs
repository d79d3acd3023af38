//! KDL 2.0 parser: KDL source text in, our plain [`Node`] tree (with byte
//! spans) out, or the first [`SyntaxError`] found.
//!
//! The `kdl` crate is the reference parser, but it keeps every byte of
//! formatting and is far too slow and memory-hungry for large topologies
//! (about 930 ms and 175 MB for a 2.4 MB document). This parser works on the
//! UTF-8 bytes directly, allocates only the strings and vectors it stores in
//! the tree, and runs in linear time. It follows the KDL 2.0 grammar
//! (<https://kdl.dev/spec>); where the `kdl` crate disagrees with the spec we
//! follow the spec (the differences are listed in the tests of this module).
//!
//! Guarantees relied on by callers:
//! - it never panics, whatever the input;
//! - children blocks may nest [`MAX_DEPTH`] levels deep; deeper input is a
//!   syntax error, so recursion (one frame group per level) stays bounded;
//! - a document holds at most [`MAX_ITEMS`] nodes and entries; more is an
//!   error marked `too_large`, so the tree's memory stays bounded whatever
//!   the file size (a tree item takes 100 to 300 bytes, far more than the
//!   two bytes `a` and a newline take in the text);
//! - duplicate properties are kept as separate entries, in source order.

use std::fmt;

use crate::parse::tree::{Entry, Ident, Node, Text, Value};
use crate::source::{FileId, Span};

/// Children blocks may nest this many levels deep; one more is an error.
pub const MAX_DEPTH: usize = 128;

/// Nodes plus entries (arguments and properties) a document may hold,
/// commented-out ones included. A topology of 10,000 services has about
/// 300,000.
pub const MAX_ITEMS: usize = 500_000;

/// The first syntax error in a document: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub span: Span,
    pub message: String,
    /// The document is beyond a size limit rather than malformed.
    pub too_large: bool,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SyntaxError {}

/// Parses a whole KDL 2.0 document into its top-level nodes.
pub fn parse(text: &str, file: FileId) -> Result<Vec<Node>, SyntaxError> {
    parse_each(text, file, &|_| None::<()>).map(|(nodes, _)| nodes)
}

/// As [`parse`], handing each top-level node to `each` as soon as it is
/// read, on the thread that read it (it may change the node); what `each`
/// returns is kept in the second vector, in the order of the nodes. `each`
/// may see a node more than once (when a split read is redone whole): it
/// must depend on the node alone.
pub fn parse_each<T: Send>(
    text: &str,
    file: FileId,
    each: &(dyn Fn(&mut Node) -> Option<T> + Sync),
) -> Result<(Vec<Node>, Vec<Option<T>>), SyntaxError> {
    // Spans store u32 offsets; a larger document could not be pointed into.
    if text.len() > u32::MAX as usize {
        return Err(SyntaxError {
            span: Span::new(file, 0, 0),
            message: "document is larger than 4 GiB".into(),
            too_large: true,
        });
    }
    if text.len() >= SPLIT_FROM
        && let Some(at) = split_point(text)
        && let Some(read) = parse_halves(text, file, at, each)
    {
        return Ok(read);
    }
    read_each(text, 0, file, each).map(|(nodes, kept, _)| (nodes, kept))
}

/// The nodes of `text` from byte `from` on (the whole document when
/// `from` is 0), what `each` gave for each, and the items counted.
fn read_each<T>(
    text: &str,
    from: usize,
    file: FileId,
    each: &(dyn Fn(&mut Node) -> Option<T> + Sync),
) -> PResult<(Vec<Node>, Vec<Option<T>>, usize)> {
    let mut kept = Vec::new();
    let mut keep = |n: &mut Node| kept.push(each(n));
    let mut p = Parser::new(text, from, file).on_top(&mut keep);
    let read = if from == 0 {
        p.document()
    } else {
        p.nodes(0, None)
    };
    let items = p.items;
    drop(p);
    read.map(|nodes| (nodes, kept, items))
}

/// Documents from this size on are read as two halves at once.
const SPLIT_FROM: usize = 1 << 20;

/// A place near the middle of `text` where a top-level node probably
/// starts: just after a line that is only `}`, at a line that starts with
/// a letter. Only a guess: [`parse_halves`] checks it.
fn split_point(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut from = text.len() / 2;
    while let Some(i) = text.get(from..)?.find("\n}\n") {
        let at = from + i + 3;
        if b.get(at).is_some_and(u8::is_ascii_alphabetic) {
            return Some(at);
        }
        from = at;
    }
    None
}

/// The nodes of `text` read as `text[..at]` and `text[at..]` on two
/// threads, or `None` when that is not known to give exactly what one
/// pass gives (then the caller reads the whole).
///
/// Why the halves give the one-pass result when both read cleanly: the
/// first half ends with a newline after `}`, and the second starts with a
/// letter, so no decision the parser takes before `at` looks past it, and
/// at `at` the first half's parser is between top-level nodes (it reached
/// the end of its input cleanly: an unclosed block, string or comment
/// would be an error). One pass is therefore at the same point, in the
/// same state, with the same nodes behind it, and goes on exactly as the
/// second half's parser does from there. Any error, in either half, and
/// the whole is read again in one pass, for the one-pass error.
fn parse_halves<T: Send>(
    text: &str,
    file: FileId,
    at: usize,
    each: &(dyn Fn(&mut Node) -> Option<T> + Sync),
) -> Option<(Vec<Node>, Vec<Option<T>>)> {
    let (first, second) = std::thread::scope(|scope| {
        let second = scope.spawn(|| read_each(text, at, file, each));
        (read_each(&text[..at], 0, file, each), second.join())
    });
    let ((mut nodes, mut kept, a), (rest, rest_kept, b)) = (first.ok()?, second.ok()?.ok()?);
    if a + b > MAX_ITEMS {
        return None;
    }
    nodes.extend(rest);
    kept.extend(rest_kept);
    Some((nodes, kept))
}

type PResult<T> = Result<T, SyntaxError>;

const BOM: &[u8] = "\u{FEFF}".as_bytes();

/// A scalar read from the text (string, number or keyword) and its range.
struct Token {
    value: Value,
    start: usize,
    end: usize,
}

/// Where a node is in its `entries, children` sequence: the grammar allows
/// entries, then slashdashed children blocks, then at most one children
/// block, then only more slashdashed children blocks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Entries,
    CommentedChildren,
    Children,
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    file: FileId,
    /// Reused buffer for float literals without their `_` separators.
    scratch: String,
    /// Nodes and entries being collected, for all open levels at once: each
    /// level pushes above a mark and moves its own items out at the end into
    /// an exactly sized vector. That is one allocation per list instead of
    /// a series of regrowths, and no spare capacity kept in the tree.
    node_stack: Vec<Node>,
    entry_stack: Vec<Entry>,
    /// Nodes and entries read so far, against [`MAX_ITEMS`].
    items: usize,
    /// Called with each top-level node once it is read.
    top: Option<&'a mut dyn FnMut(&mut Node)>,
}

impl<'a> Parser<'a> {
    /// A parser of `text` from byte `pos` on.
    fn new(text: &'a str, pos: usize, file: FileId) -> Self {
        Parser {
            text,
            bytes: text.as_bytes(),
            pos,
            file,
            scratch: String::new(),
            node_stack: Vec::new(),
            entry_stack: Vec::new(),
            items: 0,
            top: None,
        }
    }

    /// The same parser, calling `top` with each top-level node it reads.
    fn on_top(mut self, top: &'a mut dyn FnMut(&mut Node)) -> Self {
        self.top = Some(top);
        self
    }

    fn document(&mut self) -> PResult<Vec<Node>> {
        // A byte order mark is allowed only as the very first code point.
        if self.bytes.starts_with(BOM) {
            self.pos = BOM.len();
        }
        self.nodes(0, None)
    }

    // ----- small helpers --------------------------------------------------

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.pos + offset).copied()
    }

    fn char_at(&self, pos: usize) -> Option<char> {
        self.text.get(pos..).and_then(|s| s.chars().next())
    }

    fn fail<T>(&self, start: usize, end: usize, message: impl Into<String>) -> PResult<T> {
        Err(self.error(start, end, message))
    }

    fn error(&self, start: usize, end: usize, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            span: Span::new(self.file, start, end),
            message: message.into(),
            too_large: false,
        }
    }

    /// The error for a code point that cannot start what we expected.
    fn unexpected(&self, pos: usize, context: &str) -> SyntaxError {
        match self.char_at(pos) {
            None => self.error(pos, pos, format!("unexpected end of input {context}")),
            Some(c) if is_disallowed(c) => self.disallowed(pos),
            Some(c) => self.error(
                pos,
                pos + c.len_utf8(),
                format!("unexpected `{}` {context}", describe(c)),
            ),
        }
    }

    fn disallowed(&self, pos: usize) -> SyntaxError {
        let c = self.char_at(pos).unwrap_or('\0');
        self.error(
            pos,
            pos + c.len_utf8(),
            format!(
                "code point U+{:04X} is not allowed in KDL documents (write it as a \\u{{{:x}}} escape in a quoted string)",
                c as u32, c as u32
            ),
        )
    }

    fn newline_len(&self, pos: usize) -> usize {
        newline_len(self.bytes, pos)
    }

    fn space_len(&self, pos: usize) -> usize {
        space_len(self.text, pos)
    }

    /// For the lead bytes that can start a non-ASCII newline or disallowed
    /// code point (0xC2, 0xE2, 0xEF): whether the code point at `pos` is
    /// disallowed. Other bytes never are, which keeps scanning loops cheap.
    fn is_disallowed_multibyte(&self, pos: usize) -> bool {
        matches!(self.bytes.get(pos), Some(0xE2 | 0xEF))
            && self.char_at(pos).is_some_and(is_disallowed)
    }

    // ----- whitespace and comments -----------------------------------------

    /// `ws*`: unicode spaces and block comments.
    fn skip_ws(&mut self) -> PResult<()> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t') => self.pos += 1,
                Some(b'/') if self.peek_at(1) == Some(b'*') => self.block_comment()?,
                Some(b) if b >= 0x80 => {
                    let n = self.space_len(self.pos);
                    if n == 0 {
                        return Ok(());
                    }
                    self.pos += n;
                }
                _ => return Ok(()),
            }
        }
    }

    /// `node-space*`: whitespace and line continuations, but no newlines.
    fn node_space(&mut self) -> PResult<()> {
        loop {
            self.skip_ws()?;
            if self.peek() != Some(b'\\') {
                return Ok(());
            }
            self.escline()?;
        }
    }

    /// `line-space*`: node-space plus newlines and `//` comments.
    fn line_space(&mut self) -> PResult<()> {
        loop {
            self.node_space()?;
            if self.peek() == Some(b'/') && self.peek_at(1) == Some(b'/') {
                self.line_comment()?;
                continue;
            }
            let n = self.newline_len(self.pos);
            if n == 0 {
                return Ok(());
            }
            self.pos += n;
        }
    }

    /// `escline`: `\` ws* then a `//` comment, a newline or the end of input.
    fn escline(&mut self) -> PResult<()> {
        let start = self.pos;
        self.pos += 1;
        self.skip_ws()?;
        match self.peek() {
            None => Ok(()),
            Some(b'/') if self.peek_at(1) == Some(b'/') => self.line_comment(),
            _ => {
                let n = self.newline_len(self.pos);
                if n == 0 {
                    return self.fail(
                        start,
                        start + 1,
                        "a `\\` line continuation must be followed by a newline (only whitespace or a comment may come between)",
                    );
                }
                self.pos += n;
                Ok(())
            }
        }
    }

    /// `// ...` up to and including the newline (or the end of input).
    fn line_comment(&mut self) -> PResult<()> {
        self.pos += 2;
        while let Some(b) = self.peek() {
            match b {
                b'\n' | b'\r' | 0x0B | 0x0C => {
                    self.pos += self.newline_len(self.pos);
                    return Ok(());
                }
                0x00..=0x08 | 0x0E..=0x1F | 0x7F => return Err(self.disallowed(self.pos)),
                0xC2 | 0xE2 | 0xEF => {
                    let n = self.newline_len(self.pos);
                    if n > 0 {
                        self.pos += n;
                        return Ok(());
                    }
                    if self.is_disallowed_multibyte(self.pos) {
                        return Err(self.disallowed(self.pos));
                    }
                    self.pos += 1;
                }
                // Continuation bytes are stepped over one by one; they never
                // look like any byte matched above.
                _ => self.pos += 1,
            }
        }
        Ok(())
    }

    /// `/* ... */`, which nests. Counted, not recursive, so that deeply
    /// nested comments cannot exhaust the stack.
    fn block_comment(&mut self) -> PResult<()> {
        let start = self.pos;
        self.pos += 2;
        let mut depth = 1usize;
        loop {
            let Some(b) = self.peek() else {
                return self.fail(
                    start,
                    start + 2,
                    "unterminated block comment: expected `*/`",
                );
            };
            match b {
                b'*' if self.peek_at(1) == Some(b'/') => {
                    self.pos += 2;
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                b'/' if self.peek_at(1) == Some(b'*') => {
                    self.pos += 2;
                    depth += 1;
                }
                0x00..=0x08 | 0x0E..=0x1F | 0x7F => return Err(self.disallowed(self.pos)),
                0xE2 | 0xEF if self.is_disallowed_multibyte(self.pos) => {
                    return Err(self.disallowed(self.pos));
                }
                _ => self.pos += 1,
            }
        }
    }

    // ----- nodes ------------------------------------------------------------

    /// `nodes`: nodes up to the end of input (top level, `open` is `None`)
    /// or up to the `}` closing the block opened at `open` (not consumed).
    fn nodes(&mut self, depth: usize, open: Option<usize>) -> PResult<Vec<Node>> {
        let mark = self.node_stack.len();
        loop {
            self.line_space()?;
            match self.peek() {
                None => {
                    return match open {
                        Some(o) => {
                            self.fail(o, o + 1, "children block is never closed: expected `}`")
                        }
                        None => Ok(self.node_stack.drain(mark..).collect()),
                    };
                }
                Some(b'}') => {
                    return match open {
                        Some(_) => Ok(self.node_stack.drain(mark..).collect()),
                        None => self.fail(
                            self.pos,
                            self.pos + 1,
                            "unexpected `}`: there is no children block to close",
                        ),
                    };
                }
                Some(b'/') if self.peek_at(1) == Some(b'-') => {
                    let slashdash = self.pos;
                    self.pos += 2;
                    self.line_space()?;
                    if matches!(self.peek(), None | Some(b'}' | b';')) {
                        return self.fail(
                            slashdash,
                            slashdash + 2,
                            "`/-` must be followed by the node it comments out",
                        );
                    }
                    // Parsed in full (errors inside still count), then dropped.
                    self.base_node(depth)?;
                }
                Some(_) => {
                    let mut node = self.base_node(depth)?;
                    if depth == 0
                        && let Some(top) = self.top.as_mut()
                    {
                        top(&mut node);
                    }
                    self.node_stack.push(node);
                }
            }
            self.node_terminator(open.is_some())?;
        }
    }

    /// After a node: `;`, a newline, a `//` comment, the end of input, or
    /// (inside a children block) the closing `}`, which is left in place.
    fn node_terminator(&mut self, in_children: bool) -> PResult<()> {
        match self.peek() {
            None => Ok(()),
            Some(b';') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'}') if in_children => Ok(()),
            Some(b'}') => self.fail(
                self.pos,
                self.pos + 1,
                "unexpected `}`: there is no children block to close",
            ),
            Some(b'/') if self.peek_at(1) == Some(b'/') => self.line_comment(),
            _ => {
                let n = self.newline_len(self.pos);
                if n == 0 {
                    return Err(self.unexpected(self.pos, "after a node"));
                }
                self.pos += n;
                Ok(())
            }
        }
    }

    /// `base-node`: type, name, entries and children blocks, plus the
    /// node-space after them. The terminator is left for the caller.
    /// Count one more node or entry, starting at `start`.
    fn count_item(&mut self, start: usize) -> PResult<()> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            let mut e = self.error(
                start,
                start + 1,
                format!("the document has more than {MAX_ITEMS} nodes and values"),
            );
            e.too_large = true;
            return Err(e);
        }
        Ok(())
    }

    fn base_node(&mut self, depth: usize) -> PResult<Node> {
        let start = self.pos;
        self.count_item(start)?;
        let ty = if self.peek() == Some(b'(') {
            let ty = self.type_annotation()?;
            self.node_space()?;
            Some(Box::new(ty))
        } else {
            None
        };
        let name = self.string_ident("where a node name was expected", "node names")?;
        let mut end = name.span.end as usize;
        let mark = self.entry_stack.len();
        let mut children = None;
        let mut phase = Phase::Entries;
        loop {
            let before = self.pos;
            self.node_space()?;
            let spaced = self.pos > before;
            let Some(b) = self.peek() else { break };
            match b {
                b';' | b'}' | b'\n' | b'\r' | 0x0B | 0x0C => break,
                b'/' if self.peek_at(1) == Some(b'/') => break,
                b'{' => {
                    if phase == Phase::Children {
                        return self.fail(
                            self.pos,
                            self.pos + 1,
                            "a node can have only one children block",
                        );
                    }
                    children = Some(self.children_block(depth)?);
                    end = self.pos;
                    phase = Phase::Children;
                }
                b'/' if self.peek_at(1) == Some(b'-') => {
                    let slashdash = self.pos;
                    // Entries need whitespace before them; a commented-out
                    // children block may follow another block directly.
                    if !spaced && phase == Phase::Entries {
                        return self.fail(
                            slashdash,
                            slashdash + 2,
                            "`/-` must be separated from what comes before it by whitespace",
                        );
                    }
                    self.pos += 2;
                    self.line_space()?;
                    if self.peek() == Some(b'{') {
                        self.children_block(depth)?;
                        if phase == Phase::Entries {
                            phase = Phase::CommentedChildren;
                        }
                    } else if phase != Phase::Entries {
                        return self.fail(
                            slashdash,
                            slashdash + 2,
                            "only children blocks can follow a children block, even commented out",
                        );
                    } else if matches!(self.peek(), None | Some(b';' | b'}')) {
                        return self.fail(
                            slashdash,
                            slashdash + 2,
                            "`/-` must be followed by the entry or children block it comments out",
                        );
                    } else {
                        self.entry()?;
                    }
                }
                _ => {
                    if self.newline_len(self.pos) > 0 {
                        break;
                    }
                    if !spaced {
                        return Err(self.unexpected(
                            self.pos,
                            "after a value; separate entries with whitespace",
                        ));
                    }
                    if phase != Phase::Entries {
                        return self.fail(
                            self.pos,
                            self.pos + 1,
                            "arguments and properties must come before the children block",
                        );
                    }
                    let entry = self.entry()?;
                    end = entry.span.end as usize;
                    self.entry_stack.push(entry);
                }
            }
        }
        Ok(Node {
            name,
            ty,
            entries: self.entry_stack.drain(mark..).collect(),
            children,
            span: Span::new(self.file, start, end),
        })
    }

    /// `{ nodes }`, with the nesting limit that bounds our recursion.
    fn children_block(&mut self, depth: usize) -> PResult<Vec<Node>> {
        let open = self.pos;
        if depth >= MAX_DEPTH {
            return self.fail(
                open,
                open + 1,
                format!("nesting is deeper than {MAX_DEPTH} levels"),
            );
        }
        self.pos += 1;
        let nodes = self.nodes(depth + 1, Some(open))?;
        // `nodes` returns only when it stands on the closing `}`.
        self.pos += 1;
        Ok(nodes)
    }

    /// An argument (`value`, `(type)value`) or a property (`key=value`).
    fn entry(&mut self) -> PResult<Entry> {
        let start = self.pos;
        self.count_item(start)?;
        if self.peek() == Some(b'(') {
            let ty = self.type_annotation()?;
            self.node_space()?;
            let tok = self.value_token("where a value was expected after a type annotation")?;
            if let Some(eq) = self.equals_ahead()? {
                return self.fail(
                    eq,
                    eq + 1,
                    "a type annotation goes on the property value (`key=(type)value`), not on the key",
                );
            }
            return Ok(Entry {
                name: None,
                ty: Some(Box::new(ty)),
                value: tok.value,
                value_span: Span::new(self.file, tok.start, tok.end),
                span: Span::new(self.file, start, tok.end),
            });
        }
        let tok = self.value_token("where an argument or property was expected")?;
        let Some(eq) = self.equals_ahead()? else {
            return Ok(Entry {
                name: None,
                ty: None,
                value: tok.value,
                value_span: Span::new(self.file, tok.start, tok.end),
                span: Span::new(self.file, start, tok.end),
            });
        };
        let key = match tok.value {
            Value::String(key) => Ident {
                value: key,
                span: Span::new(self.file, tok.start, tok.end),
            },
            _ => {
                return self.fail(
                    tok.start,
                    tok.end,
                    "property names must be strings; quote it",
                );
            }
        };
        self.pos = eq + 1;
        self.node_space()?;
        let ty = if self.peek() == Some(b'(') {
            let ty = self.type_annotation()?;
            self.node_space()?;
            Some(Box::new(ty))
        } else {
            None
        };
        if self.at_value_end() {
            return self.fail(eq, eq + 1, "expected a value after `=`");
        }
        let value = self.value_token("where a property value was expected")?;
        Ok(Entry {
            name: Some(key),
            ty,
            value: value.value,
            value_span: Span::new(self.file, value.start, value.end),
            span: Span::new(self.file, start, value.end),
        })
    }

    /// Looks past node-space for `=`: returns its offset (leaving the
    /// position just before it) or `None` (leaving the position unchanged).
    fn equals_ahead(&mut self) -> PResult<Option<usize>> {
        let after = self.pos;
        self.node_space()?;
        if self.peek() == Some(b'=') {
            Ok(Some(self.pos))
        } else {
            self.pos = after;
            Ok(None)
        }
    }

    /// Whether nothing that could be a value follows (end of the node).
    fn at_value_end(&self) -> bool {
        match self.peek() {
            None | Some(b';' | b'}' | b'{') => true,
            Some(b'/') => self.peek_at(1) == Some(b'/'),
            Some(_) => self.newline_len(self.pos) > 0,
        }
    }

    /// `(string)`, with node-space allowed inside the parentheses.
    fn type_annotation(&mut self) -> PResult<Ident> {
        self.pos += 1;
        self.node_space()?;
        let ty = self.string_ident("in a type annotation", "type annotations")?;
        self.node_space()?;
        if self.peek() != Some(b')') {
            return Err(self.unexpected(self.pos, "in a type annotation: expected `)`"));
        }
        self.pos += 1;
        Ok(ty)
    }

    /// A string token used as a name (node name or type annotation).
    fn string_ident(&mut self, context: &str, what: &str) -> PResult<Ident> {
        let tok = self.value_token(context)?;
        match tok.value {
            Value::String(value) => Ok(Ident {
                value,
                span: Span::new(self.file, tok.start, tok.end),
            }),
            _ => self.fail(
                tok.start,
                tok.end,
                format!("{what} must be strings; quote it"),
            ),
        }
    }

    // ----- values -----------------------------------------------------------

    /// Any scalar: identifier, quoted, raw or multi-line string, number or
    /// keyword, which must then end at a value terminator.
    fn value_token(&mut self, context: &str) -> PResult<Token> {
        let start = self.pos;
        let Some(b) = self.peek() else {
            return Err(self.unexpected(start, context));
        };
        let (value, kind) = match b {
            b'"' => (Value::String(self.quoted_string()?), "string"),
            b'#' => match self.peek_at(1) {
                Some(b'"' | b'#') => (Value::String(self.raw_string()?.into()), "string"),
                _ => (self.keyword()?, "keyword"),
            },
            b'0'..=b'9' => (self.number()?, "number"),
            b'+' | b'-' if self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) => {
                (self.number()?, "number")
            }
            _ => (Value::String(self.identifier(context)?), "identifier"),
        };
        let end = self.pos;
        self.check_value_end(start, kind)?;
        Ok(Token { value, start, end })
    }

    /// A value must be followed by whitespace, a newline, a comment, a line
    /// continuation, `;`, `{`, `}`, `)`, `=` or the end of input.
    fn check_value_end(&self, start: usize, kind: &str) -> PResult<()> {
        let Some(b) = self.peek() else { return Ok(()) };
        let ok = match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C => true,
            b';' | b'{' | b'}' | b')' | b'=' | b'\\' => true,
            b'/' => matches!(self.peek_at(1), Some(b'/' | b'*')),
            0x80.. => self.space_len(self.pos) > 0 || self.newline_len(self.pos) > 0,
            _ => false,
        };
        if ok {
            return Ok(());
        }
        let c = self.char_at(self.pos).unwrap_or('\0');
        if is_disallowed(c) {
            return Err(self.disallowed(self.pos));
        }
        // Cover the whole malformed word, as a reader would see it.
        let mut end = self.pos;
        while let Some(c) = self.char_at(end) {
            if is_unicode_space(c)
                || is_newline(c)
                || matches!(c, ';' | '{' | '}' | '(' | ')' | '=')
            {
                break;
            }
            end += c.len_utf8();
        }
        let c = describe(c);
        let message = if kind == "number" {
            format!("invalid number: unexpected `{c}`")
        } else {
            format!("unexpected `{c}` right after a {kind}; separate values with whitespace")
        };
        self.fail(start, end, message)
    }

    /// An identifier string (bare word).
    fn identifier(&mut self, context: &str) -> PResult<Text> {
        let start = self.pos;
        while let Some(&b) = self.bytes.get(self.pos) {
            if b < 0x80 {
                if !IDENT_ASCII[b as usize] {
                    break;
                }
                self.pos += 1;
            } else {
                match self.char_at(self.pos) {
                    Some(c) if is_identifier_char(c) => self.pos += c.len_utf8(),
                    _ => break,
                }
            }
        }
        if self.pos == start {
            return Err(self.unexpected(start, context));
        }
        let word = &self.text[start..self.pos];
        let looks_numeric = matches!(
            word.as_bytes(),
            [b'0'..=b'9', ..]
                | [b'+' | b'-', b'0'..=b'9', ..]
                | [b'+' | b'-', b'.', b'0'..=b'9', ..]
                | [b'.', b'0'..=b'9', ..]
        );
        if looks_numeric {
            return self.fail(
                start,
                self.pos,
                "a bare identifier cannot start like a number (numbers need a digit before the `.`); quote it if it is a string",
            );
        }
        if matches!(word, "true" | "false" | "null" | "inf" | "-inf" | "nan") {
            return self.fail(
                start,
                self.pos,
                format!(
                    "`{word}` is a keyword: write `#{word}`, or quote it (\"{word}\") for a string"
                ),
            );
        }
        Ok(word.into())
    }

    /// `#true`, `#false`, `#null`, `#inf`, `#-inf`, `#nan`.
    fn keyword(&mut self) -> PResult<Value> {
        let start = self.pos;
        let rest = &self.bytes[start + 1..];
        let (len, value) = if rest.starts_with(b"true") {
            (4, Value::Bool(true))
        } else if rest.starts_with(b"false") {
            (5, Value::Bool(false))
        } else if rest.starts_with(b"null") {
            (4, Value::Null)
        } else if rest.starts_with(b"inf") {
            (3, Value::Float(f64::INFINITY))
        } else if rest.starts_with(b"-inf") {
            (4, Value::Float(f64::NEG_INFINITY))
        } else if rest.starts_with(b"nan") {
            (3, Value::Float(f64::NAN))
        } else {
            let mut end = start + 1;
            while let Some(c) = self.char_at(end) {
                if !is_identifier_char(c) {
                    break;
                }
                end += c.len_utf8();
            }
            return self.fail(
                start,
                end.max(start + 1),
                "unknown keyword: the keywords are #true, #false, #null, #inf, #-inf and #nan",
            );
        };
        self.pos = start + 1 + len;
        Ok(value)
    }

    /// Decimal (`-1_000`, `1.5e-3`), hex `0x`, octal `0o` or binary `0b`.
    /// Integers are exact `i128`s; fractions or exponents make a float.
    fn number(&mut self) -> PResult<Value> {
        let start = self.pos;
        let negative = match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                true
            }
            Some(b'+') => {
                self.pos += 1;
                false
            }
            _ => false,
        };
        if self.peek() == Some(b'0') {
            let radix = match self.peek_at(1) {
                Some(b'x') => Some(16),
                Some(b'o') => Some(8),
                Some(b'b') => Some(2),
                _ => None,
            };
            if let Some(radix) = radix {
                self.pos += 2;
                return self.radix_integer(start, radix, negative);
            }
        }
        let digits_start = self.pos;
        self.skip_digits();
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            if !self.peek_at(1).is_some_and(|b| b.is_ascii_digit()) {
                return self.fail(
                    start,
                    self.pos + 1,
                    "invalid number: a `.` must be followed by a digit",
                );
            }
            self.pos += 1;
            self.skip_digits();
            is_float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return self.fail(
                    start,
                    self.pos,
                    "invalid number: an exponent needs at least one digit",
                );
            }
            self.skip_digits();
            is_float = true;
        }
        let literal = &self.text[start..self.pos];
        if is_float {
            self.scratch.clear();
            self.scratch.extend(literal.chars().filter(|&c| c != '_'));
            return match self.scratch.parse::<f64>() {
                Ok(f) => Ok(Value::Float(f)),
                Err(_) => self.fail(start, self.pos, "invalid number"),
            };
        }
        let mut value: i128 = 0;
        for &b in &self.bytes[digits_start..self.pos] {
            if b == b'_' {
                continue;
            }
            // Accumulate with the sign applied so that i128::MIN fits.
            let digit = i128::from(b - b'0');
            let next = value.checked_mul(10).and_then(|v| {
                if negative {
                    v.checked_sub(digit)
                } else {
                    v.checked_add(digit)
                }
            });
            match next {
                Some(v) => value = v,
                None => return self.too_large(start),
            }
        }
        Ok(Value::Integer(value))
    }

    /// `[0-9] [0-9_]*` (the first digit is already known to be there).
    fn skip_digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9' | b'_')) {
            self.pos += 1;
        }
    }

    fn radix_integer(&mut self, start: usize, radix: u32, negative: bool) -> PResult<Value> {
        let name = match radix {
            16 => "hexadecimal",
            8 => "octal",
            _ => "binary",
        };
        if !self.peek().is_some_and(|b| char::from(b).is_digit(radix)) {
            return self.fail(
                start,
                self.pos,
                format!("invalid number: expected a {name} digit after the prefix"),
            );
        }
        let mut value: i128 = 0;
        let mut overflow = false;
        while let Some(b) = self.peek() {
            if b == b'_' {
                self.pos += 1;
                continue;
            }
            let Some(digit) = char::from(b).to_digit(radix) else {
                break;
            };
            self.pos += 1;
            let digit = i128::from(digit);
            let next = value.checked_mul(i128::from(radix)).and_then(|v| {
                if negative {
                    v.checked_sub(digit)
                } else {
                    v.checked_add(digit)
                }
            });
            match next {
                Some(v) => value = v,
                None => overflow = true,
            }
        }
        if overflow {
            // Report once the whole literal has been seen, so the span covers it.
            return self.too_large(start);
        }
        Ok(Value::Integer(value))
    }

    fn too_large<T>(&mut self, start: usize) -> PResult<T> {
        while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b == b'_') {
            self.pos += 1;
        }
        self.fail(
            start,
            self.pos,
            "integer is out of range (it must fit in a signed 128-bit integer)",
        )
    }

    // ----- strings ----------------------------------------------------------

    /// `"..."` with escapes, or a `"""` multi-line string.
    fn quoted_string(&mut self) -> PResult<Text> {
        let open = self.pos;
        if self.bytes[open..].starts_with(b"\"\"\"") {
            return self.multiline_string().map(Text::from);
        }
        self.pos += 1;
        let mut out = String::new();
        let mut segment = self.pos;
        loop {
            let Some(b) = self.peek() else {
                return self.fail(
                    open,
                    open + 1,
                    "unterminated string: expected a closing `\"`",
                );
            };
            match b {
                b'"' => {
                    let rest = &self.text[segment..self.pos];
                    self.pos += 1;
                    // Without escapes (nearly always), the text is the source's.
                    if out.is_empty() {
                        return Ok(Text::from(rest));
                    }
                    out.push_str(rest);
                    return Ok(Text::from(out));
                }
                b'\\' => {
                    out.push_str(&self.text[segment..self.pos]);
                    self.escape(&mut out)?;
                    segment = self.pos;
                }
                b'\n' | b'\r' | 0x0B | 0x0C => return self.newline_in_string(open),
                0x00..=0x08 | 0x0E..=0x1F | 0x7F => return Err(self.disallowed(self.pos)),
                0xC2 | 0xE2 | 0xEF => {
                    if self.newline_len(self.pos) > 0 {
                        return self.newline_in_string(open);
                    }
                    if self.is_disallowed_multibyte(self.pos) {
                        return Err(self.disallowed(self.pos));
                    }
                    self.pos += 1;
                }
                _ => self.pos += 1,
            }
        }
    }

    fn newline_in_string<T>(&self, open: usize) -> PResult<T> {
        self.fail(
            open,
            self.pos,
            "unterminated string: a single-line string cannot contain a newline (close it with `\"`, write `\\n`, or use a `\"\"\"` multi-line string)",
        )
    }

    /// One escape sequence (at the `\`), appending what it stands for.
    fn escape(&mut self, out: &mut String) -> PResult<()> {
        let start = self.pos;
        // A whitespace escape: `\` and all whitespace after it vanish.
        let mut end = start + 1;
        loop {
            let n = self.newline_len(end).max(self.space_len(end));
            if n == 0 {
                break;
            }
            end += n;
        }
        if end > start + 1 {
            self.pos = end;
            return Ok(());
        }
        match decode_escape(&self.text[start..]) {
            Ok((c, len)) => {
                out.push(c);
                self.pos = start + len;
                Ok(())
            }
            Err((len, message)) => self.fail(start, start + len, message),
        }
    }

    /// `"""` newline ... newline whitespace `"""`, dedented.
    fn multiline_string(&mut self) -> PResult<String> {
        let open = self.pos;
        self.pos += 3;
        let n = self.newline_len(self.pos);
        if n == 0 {
            return self.fail(
                open,
                open + 3,
                "a multi-line string must start with a newline right after the opening `\"\"\"`",
            );
        }
        self.pos += n;
        let body = self.pos;
        // Find the first `"""` that is not part of an escape (`\"`).
        loop {
            let Some(b) = self.peek() else {
                return self.fail(
                    open,
                    open + 3,
                    "unterminated multi-line string: expected a closing `\"\"\"`",
                );
            };
            match b {
                b'\\' => {
                    self.pos += 1;
                    if let Some(c) = self.char_at(self.pos) {
                        self.pos += c.len_utf8();
                    }
                }
                b'"' if self.bytes[self.pos..].starts_with(b"\"\"\"") => break,
                0x00..=0x08 | 0x0E..=0x1F | 0x7F => return Err(self.disallowed(self.pos)),
                0xE2 | 0xEF if self.is_disallowed_multibyte(self.pos) => {
                    return Err(self.disallowed(self.pos));
                }
                _ => self.pos += 1,
            }
        }
        let body_end = self.pos;
        self.pos += 3;
        self.dedent(body, body_end, true)
    }

    /// `#"..."#` or `#"""` newline ... `"""#`, with any number of `#`.
    fn raw_string(&mut self) -> PResult<String> {
        let open = self.pos;
        while self.peek() == Some(b'#') {
            self.pos += 1;
        }
        let hashes = self.pos - open;
        if self.peek() != Some(b'"') {
            return self.fail(
                open,
                self.pos,
                "expected `\"` after the `#`s that start a raw string",
            );
        }
        let closes = |bytes: &[u8], at: usize, quotes: usize| -> bool {
            bytes
                .get(at + quotes..at + quotes + hashes)
                .is_some_and(|h| h.iter().all(|&b| b == b'#'))
                && bytes
                    .get(at..at + quotes)
                    .is_some_and(|q| q.iter().all(|&b| b == b'"'))
        };
        if self.bytes[self.pos..].starts_with(b"\"\"\"") {
            let quotes = self.pos;
            self.pos += 3;
            let n = self.newline_len(self.pos);
            if n == 0 {
                return self.fail(
                    open,
                    quotes + 3,
                    "a raw string cannot start with `\"\"\"` unless it is a multi-line string, which needs a newline right after the opening quotes",
                );
            }
            self.pos += n;
            let body = self.pos;
            loop {
                let Some(b) = self.peek() else {
                    return self.fail(
                        open,
                        quotes + 3,
                        "unterminated multi-line raw string: expected a closing `\"\"\"` and matching `#`s",
                    );
                };
                match b {
                    b'"' if closes(self.bytes, self.pos, 3) => break,
                    0x00..=0x08 | 0x0E..=0x1F | 0x7F => return Err(self.disallowed(self.pos)),
                    0xE2 | 0xEF if self.is_disallowed_multibyte(self.pos) => {
                        return Err(self.disallowed(self.pos));
                    }
                    _ => self.pos += 1,
                }
            }
            let body_end = self.pos;
            self.pos += 3 + hashes;
            return self.dedent(body, body_end, false);
        }
        self.pos += 1;
        let body = self.pos;
        loop {
            let Some(b) = self.peek() else {
                return self.fail(
                    open,
                    body,
                    "unterminated raw string: expected a closing `\"` and matching `#`s",
                );
            };
            match b {
                b'"' if closes(self.bytes, self.pos, 1) => break,
                b'\n' | b'\r' | 0x0B | 0x0C => return self.newline_in_string(open),
                0x00..=0x08 | 0x0E..=0x1F | 0x7F => return Err(self.disallowed(self.pos)),
                0xC2 | 0xE2 | 0xEF => {
                    if self.newline_len(self.pos) > 0 {
                        return self.newline_in_string(open);
                    }
                    if self.is_disallowed_multibyte(self.pos) {
                        return Err(self.disallowed(self.pos));
                    }
                    self.pos += 1;
                }
                _ => self.pos += 1,
            }
        }
        let value = self.text[body..self.pos].to_owned();
        self.pos += 1 + hashes;
        Ok(value)
    }

    /// The value of a multi-line string body `text[start..end]` (from after
    /// the opening newline up to the closing quotes). Per the spec, for
    /// escaped strings: first remove whitespace escapes, then split into
    /// lines; the last line (only whitespace) is the indentation to remove
    /// from every other non-blank line; blank lines become empty; then the
    /// remaining escapes are resolved and lines joined with `\n`.
    fn dedent(&self, start: usize, end: usize, escapes: bool) -> PResult<String> {
        let raw = &self.text[start..end];
        // `resolved` holds the body after whitespace escapes are removed;
        // `map` records (offset in resolved, offset in text) at each cut so
        // errors can still point at the source.
        let mut map: Vec<(usize, usize)> = vec![(0, start)];
        let resolved: std::borrow::Cow<'_, str> = if escapes && raw.contains('\\') {
            let mut out = String::with_capacity(raw.len());
            let bytes = raw.as_bytes();
            let mut i = 0;
            let mut segment = 0;
            while i < bytes.len() {
                if bytes[i] != b'\\' {
                    i += 1;
                    continue;
                }
                let mut j = i + 1;
                loop {
                    let n = newline_len(bytes, j).max(space_len(raw, j));
                    if n == 0 {
                        break;
                    }
                    j += n;
                }
                if j > i + 1 {
                    out.push_str(&raw[segment..i]);
                    segment = j;
                    map.push((out.len(), start + j));
                    i = j;
                } else {
                    // Another escape: keep it for later, and skip the escaped
                    // character so `\\` is not read as starting an escape.
                    i += 1 + raw[i + 1..].chars().next().map_or(0, char::len_utf8);
                }
            }
            out.push_str(&raw[segment..]);
            std::borrow::Cow::Owned(out)
        } else {
            std::borrow::Cow::Borrowed(raw)
        };
        let to_source = |i: usize| -> usize {
            let k = map.partition_point(|&(r, _)| r <= i).saturating_sub(1);
            let (r, s) = map[k];
            s + (i - r)
        };

        // Split into lines (ranges into `resolved`, newlines excluded).
        let rb = resolved.as_bytes();
        let mut lines: Vec<(usize, usize)> = Vec::new();
        let mut line_start = 0;
        let mut i = 0;
        while i < rb.len() {
            let n = newline_len(rb, i);
            if n > 0 {
                lines.push((line_start, i));
                i += n;
                line_start = i;
            } else {
                i += 1;
            }
        }
        let last = (line_start, rb.len());
        let prefix = &resolved[last.0..last.1];
        if !prefix.chars().all(is_unicode_space) {
            return self.fail(
                to_source(last.0),
                to_source(last.1),
                "the closing `\"\"\"` of a multi-line string must be on its own line, after nothing but whitespace",
            );
        }

        let mut out = String::with_capacity(resolved.len());
        for (n, &(a, b)) in lines.iter().enumerate() {
            if n > 0 {
                out.push('\n');
            }
            let line = &resolved[a..b];
            if line.chars().all(is_unicode_space) {
                continue;
            }
            let Some(rest) = line.strip_prefix(prefix) else {
                return self.fail(
                    to_source(a),
                    to_source(b),
                    "every non-blank line of a multi-line string must start with the same whitespace as the line of the closing `\"\"\"`",
                );
            };
            if escapes {
                let base = a + prefix.len();
                self.unescape_line(rest, |i| to_source(base + i), &mut out)?;
            } else {
                out.push_str(rest);
            }
        }
        Ok(out)
    }

    /// Resolves the escapes left in one dedented line of a multi-line string
    /// (whitespace escapes are already gone). `to_source` maps offsets in
    /// `line` back to the text, for error spans.
    fn unescape_line(
        &self,
        line: &str,
        to_source: impl Fn(usize) -> usize,
        out: &mut String,
    ) -> PResult<()> {
        let bytes = line.as_bytes();
        let mut segment = 0;
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'\\' {
                i += 1;
                continue;
            }
            out.push_str(&line[segment..i]);
            match decode_escape(&line[i..]) {
                Ok((c, len)) => {
                    out.push(c);
                    i += len;
                }
                Err((len, message)) => {
                    let at = to_source(i);
                    return self.fail(at, at + len, message);
                }
            }
            segment = i;
        }
        out.push_str(&line[segment..]);
        Ok(())
    }
}

/// Decodes the escape at the start of `s` (which starts with `\`), other
/// than a whitespace escape: the character and the escape's length, or the
/// length to blame and a message.
fn decode_escape(s: &str) -> Result<(char, usize), (usize, String)> {
    let bytes = s.as_bytes();
    let c = match bytes.get(1) {
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'\\') => '\\',
        Some(b'"') => '"',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{C}',
        Some(b's') => ' ',
        Some(b'u') => return decode_unicode_escape(bytes),
        _ => {
            return Err(match s[1..].chars().next() {
                None => (1, "unterminated string after `\\`".to_owned()),
                Some(c) => (
                    1 + c.len_utf8(),
                    format!(
                        "invalid escape `\\{}`: the escapes are \\n \\r \\t \\\\ \\\" \\b \\f \\s \\u{{...}} and `\\` before whitespace",
                        describe(c)
                    ),
                ),
            });
        }
    };
    Ok((c, 2))
}

/// `\u{1-6 hex digits}` naming a Unicode scalar value.
fn decode_unicode_escape(bytes: &[u8]) -> Result<(char, usize), (usize, String)> {
    if bytes.get(2) != Some(&b'{') {
        return Err((
            2,
            "invalid escape: expected `\\u{` and 1 to 6 hex digits".to_owned(),
        ));
    }
    let mut i = 3;
    let mut code: u32 = 0;
    while let Some(d) = bytes.get(i).and_then(|&b| char::from(b).to_digit(16)) {
        if i - 3 == 6 {
            break;
        }
        code = code * 16 + d;
        i += 1;
    }
    if i == 3 || bytes.get(i) != Some(&b'}') {
        return Err((
            i,
            "invalid unicode escape: expected 1 to 6 hex digits and `}`".to_owned(),
        ));
    }
    i += 1;
    match char::from_u32(code) {
        Some(c) => Ok((c, i)),
        None => Err((
            i,
            format!("invalid unicode escape: U+{code:X} is not a Unicode scalar value"),
        )),
    }
}

// ----- code point classes ----------------------------------------------------

/// A code point as shown in a message: itself if visible, else escaped.
fn describe(c: char) -> String {
    if c.is_control() || (c.is_whitespace() && c != ' ') || is_disallowed(c) {
        c.escape_debug().to_string()
    } else {
        c.to_string()
    }
}

/// ASCII identifier characters: printable, minus `\/(){}[];"#=` and space.
static IDENT_ASCII: [bool; 128] = {
    let mut table = [false; 128];
    let mut i = 0x21;
    while i < 0x7F {
        table[i] = !matches!(
            i as u8,
            b'\\' | b'/' | b'(' | b')' | b'{' | b'}' | b'[' | b']' | b';' | b'"' | b'#' | b'='
        );
        i += 1;
    }
    table
};

/// Whitespace that is not a newline (the spec's `unicode-space` table).
fn is_unicode_space(c: char) -> bool {
    matches!(
        c,
        '\t' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

fn is_newline(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{B}' | '\u{C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Code points that may not appear literally anywhere in a document.
fn is_disallowed(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{8}'
            | '\u{E}'..='\u{1F}'
            | '\u{7F}'
            | '\u{200E}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

fn is_identifier_char(c: char) -> bool {
    if c.is_ascii() {
        return IDENT_ASCII[c as usize];
    }
    !(is_unicode_space(c) || is_newline(c) || is_disallowed(c))
}

/// Length of the newline sequence at `pos` (CRLF counts as one), or 0.
fn newline_len(bytes: &[u8], pos: usize) -> usize {
    match bytes.get(pos) {
        Some(b'\n' | 0x0B | 0x0C) => 1,
        Some(b'\r') => {
            if bytes.get(pos + 1) == Some(&b'\n') {
                2
            } else {
                1
            }
        }
        Some(0xC2) if bytes.get(pos + 1) == Some(&0x85) => 2,
        Some(0xE2)
            if bytes.get(pos + 1) == Some(&0x80)
                && matches!(bytes.get(pos + 2), Some(0xA8 | 0xA9)) =>
        {
            3
        }
        _ => 0,
    }
}

/// Length of the unicode-space code point at `pos`, or 0.
fn space_len(text: &str, pos: usize) -> usize {
    match text.as_bytes().get(pos) {
        Some(b' ' | b'\t') => 1,
        Some(b) if *b >= 0x80 => match text.get(pos..).and_then(|s| s.chars().next()) {
            Some(c) if is_unicode_space(c) => c.len_utf8(),
            _ => 0,
        },
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::kdl_rs;

    const F: FileId = FileId(0);

    fn sp(start: usize, end: usize) -> Span {
        Span::new(F, start, end)
    }

    /// The text, shortened for failure messages.
    fn short(text: &str) -> String {
        let cut: String = text.chars().take(80).collect();
        if cut.len() < text.len() {
            format!("{cut:?}... ({} bytes)", text.len())
        } else {
            format!("{cut:?}")
        }
    }

    fn p(text: &str) -> Vec<Node> {
        match parse(text, F) {
            Ok(nodes) => nodes,
            Err(e) => panic!("{} failed to parse: {e:?}", short(text)),
        }
    }

    fn perr(text: &str) -> SyntaxError {
        match parse(text, F) {
            Ok(_) => panic!("{} parsed but should not have", short(text)),
            Err(e) => e,
        }
    }

    /// Asserts `text` fails with a message containing `needle`, and
    /// returns the error span as a range.
    fn fails_with(text: &str, needle: &str) -> std::ops::Range<usize> {
        let e = perr(text);
        assert!(
            e.message.contains(needle),
            "{}: message {:?} does not contain {needle:?}",
            short(text),
            e.message
        );
        e.span.start as usize..e.span.end as usize
    }

    fn show_value(v: &Value) -> String {
        match v {
            Value::String(s) => format!("{s:?}"),
            Value::Integer(i) => i.to_string(),
            Value::Float(f) => format!("{f:?}"),
            Value::Bool(b) => format!("#{b}"),
            Value::Null => "#null".into(),
        }
    }

    /// A compact canonical rendering of a tree, for readable assertions:
    /// `(ty)name arg key=value { child; child }`, strings quoted.
    fn show(nodes: &[Node]) -> String {
        let mut parts = Vec::new();
        for n in nodes {
            let mut s = String::new();
            if let Some(t) = &n.ty {
                s += &format!("({})", t.value);
            }
            s += &n.name.value;
            for e in &n.entries {
                s.push(' ');
                if let Some(k) = &e.name {
                    s += &format!("{}=", k.value);
                }
                if let Some(t) = &e.ty {
                    s += &format!("({})", t.value);
                }
                s += &show_value(&e.value);
            }
            if let Some(c) = &n.children {
                s += &format!(" {{ {} }}", show(c));
            }
            parts.push(s);
        }
        parts.join("; ")
    }

    fn shows(text: &str) -> String {
        show(&p(text))
    }

    fn string_arg(text: &str) -> String {
        let nodes = p(text);
        match &nodes[0].entries[0].value {
            Value::String(s) => s.to_string(),
            other => panic!("{text:?}: expected a string, got {other:?}"),
        }
    }

    fn arg(text: &str) -> Value {
        p(text)[0].entries[0].value.clone()
    }

    // ----- documents, whitespace, comments ---------------------------------

    #[test]
    fn empty_and_blank_documents() {
        assert!(p("").is_empty());
        assert!(p("\n\n  \t\n").is_empty());
        assert!(p("// only a comment").is_empty());
        assert!(p("/* block */\n// line\n").is_empty());
        assert!(p("\u{FEFF}").is_empty());
    }

    #[test]
    fn bom_only_at_start() {
        assert_eq!(shows("\u{FEFF}node 1"), "node 1");
        let r = fails_with("node \u{FEFF}", "U+FEFF");
        assert_eq!(r, 5..8);
    }

    #[test]
    fn all_newline_kinds_end_nodes() {
        for nl in [
            "\n", "\r\n", "\r", "\u{B}", "\u{C}", "\u{85}", "\u{2028}", "\u{2029}",
        ] {
            let text = format!("a 1{nl}b 2{nl}");
            assert_eq!(shows(&text), "a 1; b 2", "newline {nl:?}");
        }
        // CRLF is one newline, so a line continuation covers both bytes.
        assert_eq!(shows("a 1 \\\r\n 2"), "a 1 2");
    }

    #[test]
    fn all_unicode_spaces_separate_entries() {
        for c in [
            '\t', ' ', '\u{A0}', '\u{1680}', '\u{2000}', '\u{2001}', '\u{2002}', '\u{2003}',
            '\u{2004}', '\u{2005}', '\u{2006}', '\u{2007}', '\u{2008}', '\u{2009}', '\u{200A}',
            '\u{202F}', '\u{205F}', '\u{3000}',
        ] {
            let text = format!("{c}a{c}1{c}{c}b{c}={c}2{c}");
            assert_eq!(shows(&text), "a 1 b=2", "space U+{:04X}", c as u32);
        }
    }

    #[test]
    fn comments() {
        assert_eq!(shows("a // comment\nb"), "a; b");
        assert_eq!(shows("a 1 // comment"), "a 1");
        assert_eq!(shows("a /* c */ 1 /* d */"), "a 1");
        assert_eq!(shows("a/*c*/1"), "a 1");
        assert_eq!(shows("/* a /* nested */ still comment */ b"), "b");
        assert_eq!(shows("a /**/ 1 /***/ 2 /* ** / * */ 3"), "a 1 2 3");
        assert_eq!(shows("a /* multi\nline */ 1"), "a 1");
        assert_eq!(
            fails_with("a /* open /* nested */", "unterminated block comment"),
            2..4
        );
        // Deep comment nesting is counted, not recursed.
        let deep = format!("{}x{} a", "/*".repeat(100_000), "*/".repeat(100_000));
        assert_eq!(shows(&deep), "a");
    }

    #[test]
    fn semicolons_and_terminators() {
        assert_eq!(shows("a; b; c"), "a; b; c");
        assert_eq!(shows("a 1;b 2;"), "a 1; b 2");
        assert_eq!(shows("a { b; c }"), "a { b; c }");
        assert_eq!(shows("a { b; c; }"), "a { b; c }");
        // An empty statement is not a node.
        fails_with("a;;", "unexpected `;`");
        fails_with(";a", "unexpected `;`");
    }

    // ----- slashdash ----------------------------------------------------------

    #[test]
    fn slashdash_nodes() {
        assert_eq!(shows("/-a 1 { b }\nc"), "c");
        assert_eq!(shows("/- a\nb"), "b");
        assert_eq!(shows("/-\na\nb"), "b");
        assert_eq!(shows("/- // comment\na\nb"), "b");
        assert_eq!(shows("x { /-a; b }"), "x { b }");
        assert_eq!(shows("/-a; b"), "b");
        // The version marker is just a commented-out node.
        assert_eq!(shows("/- kdl-version 2\na"), "a");
        fails_with("/-", "`/-` must be followed");
        fails_with("a { /- }", "`/-` must be followed");
        fails_with("/- /- a", "unexpected `/`");
        // A commented-out node still needs its terminator.
        fails_with("/-a b {} c", "arguments and properties must come before");
        // Errors inside commented-out nodes still count.
        fails_with("/-a \"unterminated", "unterminated string");
    }

    #[test]
    fn slashdash_entries() {
        assert_eq!(shows("a /-1 2"), "a 2");
        assert_eq!(shows("a 1 /-2"), "a 1");
        assert_eq!(shows("a /-k=1 k=2"), "a k=2");
        assert_eq!(shows("a /-k = 1 2"), "a 2");
        assert_eq!(shows("a /-(t)1 2"), "a 2");
        assert_eq!(shows("a /- 1 2"), "a 2");
        assert_eq!(shows("a /-\n  1 2"), "a 2");
        fails_with("a /-", "`/-` must be followed");
        fails_with("a 1/-2", "unexpected `/`");
        fails_with("a k=/-1", "unexpected `/`");
    }

    #[test]
    fn slashdash_children() {
        assert_eq!(shows("a /-{ b }"), "a");
        assert_eq!(shows("a /-{ b } { c }"), "a { c }");
        assert_eq!(shows("a { b } /-{ c }"), "a { b }");
        assert_eq!(shows("a {}/-{}"), "a {  }");
        assert_eq!(shows("a 1 /-{ x } /-{ y } { z } /-{ w }"), "a 1 { z }");
        assert_eq!(shows("a /-\n{ b }"), "a");
        fails_with("a /-{ b } 1", "must come before the children block");
        fails_with("a { b } /-1", "only children blocks can follow");
    }

    // ----- line continuations -----------------------------------------------

    #[test]
    fn line_continuations() {
        assert_eq!(shows("a 1 \\\n  2 \\\n  3"), "a 1 2 3");
        assert_eq!(shows("a \\ // comment\n  1"), "a 1");
        assert_eq!(shows("a \\ /* c */ \n  1"), "a 1");
        assert_eq!(shows("a 1 \\"), "a 1");
        assert_eq!(shows("a \\\n\nb"), "a; b");
        assert_eq!(shows("\\\na"), "a");
        assert_eq!(shows("a; \\\nb"), "a; b");
        assert_eq!(shows("a \\\n{ b }"), "a { b }");
        assert_eq!(shows("a k \\\n = \\\n 1"), "a k=1");
        assert_eq!(fails_with("a \\ 1", "line continuation"), 2..3);
    }

    // ----- identifiers ---------------------------------------------------------

    #[test]
    fn bare_identifiers() {
        assert_eq!(shows("foo-bar.baz_qux+1 a"), "foo-bar.baz_qux+1 \"a\"");
        assert_eq!(
            shows("a - + -- ++ -a +a -.a .a .- .. -. +."),
            r#"a "-" "+" "--" "++" "-a" "+a" "-.a" ".a" ".-" ".." "-." "+.""#
        );
        assert_eq!(
            shows("a ,b <c> 'd' *e* !f ~g @h $i %j ^k &l |m ?n :o"),
            r#"a ",b" "<c>" "'d'" "*e*" "!f" "~g" "@h" "$i" "%j" "^k" "&l" "|m" "?n" ":o""#
        );
        assert_eq!(shows("😀 ñ=über 日本"), "😀 ñ=\"über\" \"日本\"");
        // Keyword-like words that are not exactly keywords are fine.
        assert_eq!(
            shows("a truex nullable infinity +inf nan1 True"),
            r#"a "truex" "nullable" "infinity" "+inf" "nan1" "True""#
        );
    }

    #[test]
    fn identifiers_cannot_look_like_numbers() {
        for bad in ["a .5", "a -.5", "a +.5", "a .5x", "a -.1a", ".5"] {
            fails_with(bad, "cannot start like a number");
        }
        fails_with("a 1abc", "invalid number");
        fails_with("a -1abc", "invalid number");
        fails_with("1node", "invalid number");
    }

    #[test]
    fn keywords_cannot_be_bare() {
        for kw in ["true", "false", "null", "inf", "-inf", "nan"] {
            let r = fails_with(&format!("a {kw}"), "is a keyword");
            assert_eq!(r, 2..2 + kw.len());
            fails_with(&format!("{kw} 1"), "is a keyword");
            fails_with(&format!("a {kw}=1"), "is a keyword");
        }
    }

    #[test]
    fn disallowed_identifier_characters() {
        fails_with("a b[c]", "unexpected `[`");
        fails_with("a [b]", "unexpected `[`");
        fails_with("a b\"c\"", "unexpected `\"`");
        fails_with("a b#c", "unexpected `#`");
        fails_with("a b(c)", "unexpected `(`");
        fails_with("a b/c", "unexpected `/`");
        fails_with("a b\\c", "line continuation");
    }

    #[test]
    fn disallowed_code_points() {
        for c in [
            '\u{0}', '\u{7}', '\u{1B}', '\u{7F}', '\u{200E}', '\u{202A}', '\u{2066}', '\u{FEFF}',
        ] {
            let hex = format!("U+{:04X}", c as u32);
            for text in [
                format!("a {c}"),
                format!("a b{c}"),
                format!("a \"{c}\""),
                format!("a #\"{c}\"#"),
                format!("a \"\"\"\n{c}\n\"\"\""),
                format!("a // {c}\n"),
                format!("a /* {c} */"),
            ] {
                fails_with(&text, &hex);
            }
        }
        // Escapes may still produce them.
        assert_eq!(
            string_arg(r#"a "\u{0}\u{7F}\u{FEFF}""#),
            "\u{0}\u{7F}\u{FEFF}"
        );
    }

    // ----- strings ---------------------------------------------------------------

    #[test]
    fn quoted_strings_and_escapes() {
        assert_eq!(string_arg(r#"a "plain""#), "plain");
        assert_eq!(string_arg(r#"a """#), "");
        assert_eq!(
            string_arg(r#"a "\n \r \t \\ \" \b \f \s""#),
            "\n \r \t \\ \" \u{8} \u{C}  "
        );
        assert_eq!(
            string_arg(r#"a "\u{41}\u{1F600}\u{10FFFF}\u{000041}""#),
            "A😀\u{10FFFF}A"
        );
        // Whitespace escapes drop the backslash and all whitespace after it,
        // newlines included.
        assert_eq!(string_arg("a \"ws \\    escape\""), "ws escape");
        assert_eq!(string_arg("a \"line \\\n   continued\""), "line continued");
        assert_eq!(string_arg("a \"1\\\n\n\n2\""), "12");
        assert_eq!(string_arg("a \"x\\\u{3000}\u{2028}y\""), "xy");
        assert_eq!(string_arg("a \"tab\there\""), "tab\there");
    }

    #[test]
    fn bad_escapes() {
        assert_eq!(fails_with(r#"a "bad \q""#, "invalid escape `\\q`"), 7..9);
        fails_with(r#"a "\/""#, "invalid escape");
        fails_with(r#"a "\u{}""#, "1 to 6 hex digits");
        fails_with(r#"a "\u{1234567}""#, "1 to 6 hex digits");
        fails_with(r#"a "\u41""#, "\\u{");
        fails_with(r#"a "\u{D800}""#, "not a Unicode scalar value");
        fails_with(r#"a "\u{110000}""#, "not a Unicode scalar value");
        fails_with("a \"\\", "unterminated");
    }

    #[test]
    fn unterminated_strings() {
        assert_eq!(fails_with("a \"open", "unterminated string"), 2..3);
        assert_eq!(fails_with("a \"open\nb", "cannot contain a newline"), 2..7);
        fails_with("a #\"open", "unterminated raw string");
        fails_with("a #\"open\n\"#", "cannot contain a newline");
        fails_with("a \"\"\"\nopen", "unterminated multi-line string");
        fails_with(
            "a #\"\"\"\nopen\n\"\"\"",
            "unterminated multi-line raw string",
        );
        fails_with("a \"a\"\"b\"", "unexpected `\"`");
        fails_with("a \"a\"b", "unexpected `b`");
    }

    #[test]
    fn raw_strings() {
        assert_eq!(
            string_arg(r##"a #"raw \n "quoted""#"##),
            r#"raw \n "quoted""#
        );
        assert_eq!(
            string_arg(r###"a ##"has "# inside"##"###),
            r##"has "# inside"##
        );
        assert_eq!(string_arg(r##"a #""#"##), "");
        assert_eq!(string_arg(r##"a #""a"#"##), "\"a");
        assert_eq!(string_arg(r##"a #"a"""#"##), "a\"\"");
        assert_eq!(string_arg(r###"a ##"x"# "##"###), "x\"# ");
        // `#"""` always opens a multi-line raw string.
        fails_with(r##"a #"""#"##, "needs a newline");
        fails_with(r##"a #""""#"##, "needs a newline");
        fails_with(r##"a #"""a"#"##, "needs a newline");
        fails_with(r##"a ##"x"#"##, "unterminated raw string");
        fails_with(r###"a #"x"##"###, "unexpected `#`");
        fails_with("a ##x", "expected `\"`");
    }

    #[test]
    fn multi_line_strings() {
        assert_eq!(
            string_arg("a \"\"\"\n  hello\n  world\n  \"\"\""),
            "hello\nworld"
        );
        assert_eq!(
            string_arg("a \"\"\"\n    hello\n  world\n  \"\"\""),
            "  hello\nworld"
        );
        assert_eq!(string_arg("a \"\"\"\n  \"\"\""), "");
        assert_eq!(string_arg("a \"\"\"\n\"\"\""), "");
        assert_eq!(string_arg("a \"\"\"\n\n  x\n\n  \"\"\""), "\nx\n");
        // Whitespace-only lines become empty, whatever their whitespace.
        assert_eq!(
            string_arg("a \"\"\"\n  a\n \t \n    \n  b\n  \"\"\""),
            "a\n\n\nb"
        );
        // Escapes are resolved after dedenting.
        assert_eq!(
            string_arg("a \"\"\"\n  a\\nb \\\"q\\\" \\u{41}\n  \\s\\s x\n  \"\"\""),
            "a\nb \"q\" A\n   x"
        );
        // Quotes are fine as long as three do not appear unescaped.
        assert_eq!(
            string_arg("a \"\"\"\n  has \"\" quotes \" and \\\"\"\"\n  \"\"\""),
            "has \"\" quotes \" and \"\"\""
        );
        // Literal newlines become `\n`; escaped ones stay as written.
        assert_eq!(
            string_arg("a \"\"\"\r\n  x\\r\\n\r\n  y\r\n  \"\"\""),
            "x\r\n\ny"
        );
        assert_eq!(string_arg("a \"\"\"\n\tx\n\t\"\"\""), "x");
        // Multi-line strings can be node names and property keys too.
        assert_eq!(
            shows("\"\"\"\n  name\n  \"\"\" \"\"\"\n  key\n  \"\"\"=1"),
            "name key=1"
        );
    }

    #[test]
    fn multi_line_whitespace_escapes() {
        // The spec's example: whitespace escapes are removed before dedent.
        let text = "a \"\"\"\n  foo \\\nbar\n  baz\n  \\   \"\"\"";
        assert_eq!(string_arg(text), "foo bar\nbaz");
        // An escape that swallows the last newline puts the closing quotes
        // after text, which is invalid.
        fails_with(
            "a \"\"\"\n  foo\n  bar\\\n  \"\"\"",
            "must be on its own line",
        );
    }

    #[test]
    fn multi_line_errors() {
        fails_with("a \"\"\"hello\"\"\"", "must start with a newline");
        fails_with("a \"\"\"\nhello\"\"\"", "must be on its own line");
        fails_with(
            "a \"\"\"\n  hello\n  world\"\"\"",
            "must be on its own line",
        );
        let r = fails_with("a \"\"\"\n  hello\n world\n  \"\"\"", "same whitespace");
        assert_eq!(r, 14..20);
        // The prefix must match code point for code point.
        fails_with("a \"\"\"\n\ta\n  b\n\t\"\"\"", "same whitespace");
        fails_with("a \"\"\"\n  \\q\n  \"\"\"", "invalid escape `\\q`");
        fails_with("a \"\"\"\n  x\n  \"\"\"y", "unexpected `y`");
    }

    #[test]
    fn multi_line_raw_strings() {
        assert_eq!(
            string_arg("a #\"\"\"\n  raw \\n \"stuff\" \"\"\" here\n  \"\"\"#"),
            "raw \\n \"stuff\" \"\"\" here"
        );
        assert_eq!(
            string_arg("a ##\"\"\"\n  x \"\"\"#\n  \"\"\"##"),
            "x \"\"\"#"
        );
        assert_eq!(string_arg("a #\"\"\"\n\"\"\"#"), "");
        assert_eq!(string_arg("a #\"\"\"\n  a\\\n  b\n  \"\"\"#"), "a\\\nb");
        fails_with("a #\"\"\"\n  x\n y\n  \"\"\"#", "same whitespace");
        fails_with("a #\"\"\"\n  x\"\"\"#", "must be on its own line");
    }

    // ----- numbers and keywords -------------------------------------------------

    #[test]
    fn decimal_numbers() {
        assert_eq!(arg("a 0"), Value::Integer(0));
        assert_eq!(arg("a -0"), Value::Integer(0));
        assert_eq!(arg("a +42"), Value::Integer(42));
        assert_eq!(arg("a -42"), Value::Integer(-42));
        assert_eq!(arg("a 007"), Value::Integer(7));
        assert_eq!(arg("a 1_000_000"), Value::Integer(1_000_000));
        assert_eq!(arg("a 1__0_"), Value::Integer(10));
        assert_eq!(arg("a 1.5"), Value::Float(1.5));
        assert_eq!(arg("a -0.25"), Value::Float(-0.25));
        assert_eq!(arg("a 12_34.5_6"), Value::Float(1234.56));
        assert_eq!(arg("a 1_.5"), Value::Float(1.5));
        assert_eq!(arg("a 1e3"), Value::Float(1000.0));
        assert_eq!(arg("a 1E3"), Value::Float(1000.0));
        assert_eq!(arg("a 1.5e+3"), Value::Float(1500.0));
        assert_eq!(arg("a 2.5E-2"), Value::Float(0.025));
        assert_eq!(arg("a 1e1_0"), Value::Float(1e10));
        assert_eq!(arg("a 1e999"), Value::Float(f64::INFINITY));
        match arg("a -0.0") {
            Value::Float(f) => assert!(f == 0.0 && f.is_sign_negative()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn radix_numbers() {
        assert_eq!(arg("a 0x10"), Value::Integer(16));
        assert_eq!(arg("a 0xdead_BEEF"), Value::Integer(0xdead_beef));
        assert_eq!(arg("a -0x10"), Value::Integer(-16));
        assert_eq!(arg("a +0o17"), Value::Integer(15));
        assert_eq!(arg("a 0b1_01"), Value::Integer(5));
        assert_eq!(arg("a 0x0_"), Value::Integer(0));
        for bad in ["a 0x", "a 0x_1", "a 0o8", "a 0b2", "a 0b_1"] {
            fails_with(bad, "invalid number");
        }
        fails_with("a 0xg", "invalid number");
        fails_with("a 0b12", "invalid number: unexpected `2`");
        fails_with("a 0x1.5", "invalid number");
        // The spec's prefixes are lower case only.
        fails_with("a 0X10", "invalid number: unexpected `X`");
    }

    #[test]
    fn integer_range_is_i128() {
        assert_eq!(arg(&format!("a {}", i128::MAX)), Value::Integer(i128::MAX));
        assert_eq!(arg(&format!("a {}", i128::MIN)), Value::Integer(i128::MIN));
        assert_eq!(
            arg("a 0x7fffffffffffffffffffffffffffffff"),
            Value::Integer(i128::MAX)
        );
        assert_eq!(
            arg("a -0x80000000000000000000000000000000"),
            Value::Integer(i128::MIN)
        );
        let too_big = "a 170141183460469231731687303715884105728 b";
        assert_eq!(fails_with(too_big, "out of range"), 2..41);
        fails_with("a -170141183460469231731687303715884105729", "out of range");
        fails_with("a 0x80000000000000000000000000000000", "out of range");
        fails_with(
            "a 0b1_0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            "out of range",
        );
    }

    #[test]
    fn malformed_numbers() {
        for bad in ["a 1.", "a 1.e5", "a 1._5", "a 1.x"] {
            fails_with(bad, "must be followed by a digit");
        }
        for bad in ["a 1e", "a 1e+", "a 1e_5", "a 1ex"] {
            fails_with(bad, "exponent needs at least one digit");
        }
        for bad in ["a 1.5.5", "a 1e5e5", "a 1-2", "a 1+2", "a 1/2", "a 1abc"] {
            fails_with(bad, "invalid number");
        }
        // After a sign, a non-digit makes an identifier.
        assert_eq!(shows("a +-1 -+1 --1"), r#"a "+-1" "-+1" "--1""#);
    }

    #[test]
    fn keywords() {
        assert_eq!(shows("a #true #false #null"), "a #true #false #null");
        assert_eq!(arg("a #inf"), Value::Float(f64::INFINITY));
        assert_eq!(arg("a #-inf"), Value::Float(f64::NEG_INFINITY));
        assert!(matches!(arg("a #nan"), Value::Float(f) if f.is_nan()));
        assert_eq!(shows("a k=#true"), "a k=#true");
        fails_with("a #True", "unknown keyword");
        fails_with("a #truex", "unexpected `x`");
        fails_with("a #", "unknown keyword");
        fails_with("#true 1", "node names must be strings");
        fails_with("a #true=1", "property names must be strings");
        fails_with("a 1=2", "property names must be strings");
    }

    // ----- type annotations, properties, children --------------------------------

    #[test]
    fn type_annotations() {
        assert_eq!(
            shows("(t)node (u8)1 k=(x)\"v\""),
            "(t)node (u8)1 k=(x)\"v\""
        );
        assert_eq!(shows("( t )node ( u8 ) 1"), "(t)node (u8)1");
        assert_eq!(shows("(t) node (u) 1 k=(v) 2"), "(t)node (u)1 k=(v)2");
        assert_eq!(
            shows("(\"quoted type\")n (#\"raw\"#)#true"),
            "(quoted type)n (raw)#true"
        );
        assert_eq!(shows("(\"\")n"), "()n");
        assert_eq!(shows("(t)/*c*/n (/*c*/u/*d*/)/*e*/1"), "(t)n (u)1");
        assert_eq!(
            shows("a (t)#null (t)0x1 (t)-1.5"),
            "a (t)#null (t)1 (t)-1.5"
        );
        fails_with("()n", "in a type annotation");
        fails_with("(a b)n", "expected `)`");
        fails_with("(a)(b)n", "unexpected `(`");
        fails_with("(1)n", "type annotations must be strings");
        fails_with("(t)", "where a node name was expected");
        fails_with(
            "a (t)",
            "where a value was expected after a type annotation",
        );
        fails_with(
            "a (t)\n1",
            "where a value was expected after a type annotation",
        );
        fails_with("a (t)k=1", "not on the key");
    }

    #[test]
    fn properties() {
        assert_eq!(shows("a k=1 k2=\"v\""), "a k=1 k2=\"v\"");
        assert_eq!(shows("a k = 1"), "a k=1");
        assert_eq!(shows("a k= 1"), "a k=1");
        assert_eq!(shows("a k =1"), "a k=1");
        assert_eq!(
            shows("a \"quoted key\"=1 #\"raw key\"#=2 \"\"=3"),
            "a quoted key=1 raw key=2 =3"
        );
        assert_eq!(shows("a 1 k=v 2"), "a 1 k=\"v\" 2");
        fails_with("a k=", "expected a value after `=`");
        fails_with("a k= ;", "expected a value after `=`");
        fails_with("a b=c=d", "unexpected `=`");
        fails_with("a =1", "unexpected `=`");
        fails_with("a=1", "unexpected `=`");
    }

    #[test]
    fn duplicate_properties_are_kept_in_order() {
        let nodes = p("a k=1 x k=2 k=3");
        let props: Vec<(String, Value)> = nodes[0]
            .props()
            .map(|e| (e.name.as_ref().unwrap().value.to_string(), e.value.clone()))
            .collect();
        assert_eq!(
            props,
            vec![
                ("k".to_string(), Value::Integer(1)),
                ("k".to_string(), Value::Integer(2)),
                ("k".to_string(), Value::Integer(3)),
            ]
        );
        assert_eq!(nodes[0].entries.len(), 4);
    }

    #[test]
    fn children_blocks() {
        assert_eq!(shows("a {\n  b 1\n  c { d; }\n}"), "a { b 1; c { d } }");
        assert_eq!(shows("a{b{c}}"), "a { b { c } }");
        assert_eq!(shows("a \"x\"{}"), "a \"x\" {  }");
        assert_eq!(shows("a 1{}"), "a 1 {  }");
        assert_eq!(shows("a {b};c"), "a { b }; c");
        assert_eq!(shows("a { b 1 /* c */ }"), "a { b 1 }");
        assert_eq!(shows("a { b k=v}"), "a { b k=\"v\" }");
        assert_eq!(shows("a { b \"\"\"\n  m\n  \"\"\"}"), "a { b \"m\" }");
        assert!(p("a {}")[0].children.as_ref().is_some_and(|c| c.is_empty()));
        assert!(p("a")[0].children.is_none());
    }

    #[test]
    fn unbalanced_braces() {
        assert_eq!(fails_with("a {", "never closed"), 2..3);
        assert_eq!(fails_with("a {\n  b {\n  }\n", "never closed"), 2..3);
        assert_eq!(fails_with("a { b } }", "no children block to close"), 8..9);
        fails_with("}", "no children block to close");
        fails_with("{ a }", "where a node name was expected");
        fails_with("a {}{}", "only one children block");
        fails_with("a {} b", "must come before the children block");
        fails_with("a\n{\n}", "where a node name was expected");
        fails_with("a { b }c", "unexpected `c`");
    }

    // ----- spans -------------------------------------------------------------------

    #[test]
    fn spans() {
        let text = "(t)node 1 (u8)2 a = 3 \"q\"=(x) 4 #\"raw\"# /-5 {\n  child\n} /-{ z }\nnext";
        let nodes = p(text);
        let n = &nodes[0];
        assert_eq!(n.span, sp(0, 55));
        assert!(text[..n.span.end as usize].ends_with("child\n}"));
        assert_eq!(n.name.span, sp(3, 7));
        assert_eq!(n.ty.as_ref().unwrap().span, sp(1, 2));
        let e = &n.entries;
        assert_eq!((e[0].span, e[0].value_span), (sp(8, 9), sp(8, 9)));
        assert_eq!((e[1].span, e[1].value_span), (sp(10, 15), sp(14, 15)));
        assert_eq!(e[1].ty.as_ref().unwrap().span, sp(11, 13));
        assert_eq!((e[2].span, e[2].value_span), (sp(16, 21), sp(20, 21)));
        assert_eq!(e[2].name.as_ref().unwrap().span, sp(16, 17));
        assert_eq!((e[3].span, e[3].value_span), (sp(22, 31), sp(30, 31)));
        assert_eq!(e[3].name.as_ref().unwrap().span, sp(22, 25));
        assert_eq!((e[4].span, e[4].value_span), (sp(32, 39), sp(32, 39)));
        let child = &n.children.as_ref().unwrap()[0];
        assert_eq!((child.span, child.name.span), (sp(48, 53), sp(48, 53)));
        assert_eq!(nodes[1].span, sp(64, 68));
        // A node ends at its last entry, not at commented-out entries.
        let nodes = p("a 1 /-2 // c");
        assert_eq!(nodes[0].span, sp(0, 3));
        // Spans carry the file.
        let nodes = parse("a", FileId(7)).unwrap();
        assert_eq!(nodes[0].span.file, FileId(7));
    }

    // ----- limits and robustness ---------------------------------------------------

    fn nested(levels: usize) -> String {
        format!("{}{}", "a {".repeat(levels), "}".repeat(levels))
    }

    #[test]
    fn nesting_up_to_the_limit_is_fine() {
        let nodes = p(&nested(MAX_DEPTH));
        let mut depth = 0;
        let mut level = &nodes;
        while let Some(children) = level.first().and_then(|n| n.children.as_ref()) {
            depth += 1;
            level = children;
        }
        assert_eq!(depth, MAX_DEPTH);
    }

    #[test]
    fn nesting_beyond_the_limit_is_an_error() {
        let e = perr(&nested(MAX_DEPTH + 1));
        assert_eq!(e.message, "nesting is deeper than 128 levels");
        assert_eq!(e.span, sp(3 * MAX_DEPTH + 2, 3 * MAX_DEPTH + 3));
        // Far deeper input stops at the limit instead of overflowing the stack.
        let e = perr(&nested(10_000));
        assert_eq!(e.message, "nesting is deeper than 128 levels");
        let e = perr(&"a {".repeat(10_000));
        assert_eq!(e.message, "nesting is deeper than 128 levels");
        // Commented-out children count too.
        let text = format!("{}{}", "a /-{".repeat(200), "}".repeat(200));
        assert_eq!(perr(&text).message, "nesting is deeper than 128 levels");
    }

    #[test]
    fn the_number_of_nodes_and_entries_is_bounded() {
        let at_limit = "a\n".repeat(MAX_ITEMS);
        assert_eq!(p(&at_limit).len(), MAX_ITEMS);
        let e = perr(&format!("{at_limit}b\n"));
        assert!(e.too_large, "{e:?}");
        assert_eq!(e.span, sp(2 * MAX_ITEMS, 2 * MAX_ITEMS + 1));
        assert_eq!(
            e.message,
            "the document has more than 500000 nodes and values"
        );
        // Entries count, commented-out ones too.
        let e = perr(&format!("a{}", " /-1".repeat(MAX_ITEMS)));
        assert!(e.too_large, "{e:?}");
        assert!(!perr("a {").too_large);
    }

    #[test]
    fn one_megabyte_single_line() {
        let mut text = String::from("node");
        while text.len() < 1 << 20 {
            text.push_str(" arg k=\"value\" 12345 1.5 #true");
        }
        let nodes = p(&text);
        assert_eq!(nodes.len(), 1);
        assert!(nodes[0].entries.len() > 150_000);

        let long = "x".repeat(1 << 20);
        assert_eq!(string_arg(&format!("a \"{long}\"")).len(), 1 << 20);
        assert_eq!(string_arg(&format!("a {long}")).len(), 1 << 20);
        assert_eq!(
            string_arg(&format!("a ##\"{}\"##", "\"#".repeat(1 << 19))).len(),
            1 << 20
        );
        let escapes = "\\n".repeat(1 << 19);
        assert_eq!(string_arg(&format!("a \"{escapes}\"")).len(), 1 << 19);
        let lines = "  line\n".repeat(1 << 17);
        assert_eq!(
            string_arg(&format!("a \"\"\"\n{lines}  \"\"\"")).len(),
            5 * (1 << 17) - 1
        );
        // Unterminated, over a megabyte: still linear, still an error.
        fails_with(&format!("a \"{long}"), "unterminated");
        fails_with(&format!("a #\"{}", "x\"".repeat(1 << 19)), "unterminated");
        fails_with(&format!("a /* {}", "/*".repeat(1 << 19)), "unterminated");
    }

    /// Every prefix of a document full of features parses or fails cleanly.
    #[test]
    fn truncated_documents_never_panic() {
        let text = "\u{FEFF}(t)node \"q\\u{41}\\n\" #\"raw\"# ##\"r\"## 0x1f -1.5e3 #nan k=(ty)v \\\n  /-x /* c /* d */ */ {\n  child \"\"\"\n    multi \\\n  line\n    \"\"\" // end\n  /-gone { x }\n  #\"\"\"\n  raw\n  \"\"\"#; 😀 ü\u{3000}\u{2028}z\r\n}\n";
        for (i, _) in text.char_indices() {
            let _ = parse(&text[..i], F);
            let _ = parse(&text[i..], F);
        }
        assert!(parse(text, F).is_ok());
    }

    // ----- differential tests against kdl-rs ----------------------------------------

    fn value_eq(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => {
                x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
            }
            _ => a == b,
        }
    }

    /// Differences between two trees (empty if equal). Values, names, types,
    /// structure, and every span kdl-rs gets exactly right.
    fn tree_diff(ours: &[Node], theirs: &[Node], spans: bool, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        if ours.len() != theirs.len() {
            out.push(format!("{path}: {} vs {} nodes", ours.len(), theirs.len()));
            return out;
        }
        for (i, (x, y)) in ours.iter().zip(theirs).enumerate() {
            let here = format!("{path}/{i}:{}", x.name.value);
            let ident_eq =
                |a: &Ident, b: &Ident| a.value == b.value && (!spans || a.span == b.span);
            let opt_ident_eq = |a: Option<&Ident>, b: Option<&Ident>| match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => ident_eq(a, b),
                _ => false,
            };
            if !ident_eq(&x.name, &y.name) || !opt_ident_eq(x.ty.as_deref(), y.ty.as_deref()) {
                out.push(format!(
                    "{here}: name/type {:?} {:?} vs {:?} {:?}",
                    x.name, x.ty, y.name, y.ty
                ));
            }
            if spans && x.span != y.span {
                out.push(format!("{here}: node span {:?} vs {:?}", x.span, y.span));
            }
            if x.entries.len() != y.entries.len() {
                out.push(format!(
                    "{here}: entries {:?} vs {:?}",
                    x.entries, y.entries
                ));
            } else {
                for (e, f) in x.entries.iter().zip(&y.entries) {
                    let same = opt_ident_eq(e.name.as_ref(), f.name.as_ref())
                        && opt_ident_eq(e.ty.as_deref(), f.ty.as_deref())
                        && value_eq(&e.value, &f.value)
                        && (!spans || (e.span == f.span && e.value_span == f.value_span));
                    if !same {
                        out.push(format!("{here}: entry {e:?} vs {f:?}"));
                    }
                }
            }
            match (&x.children, &y.children) {
                (None, None) => {}
                (Some(c), Some(d)) => out.extend(tree_diff(c, d, spans, &here)),
                _ => out.push(format!(
                    "{here}: children {:?} vs {:?}",
                    x.children.is_some(),
                    y.children.is_some()
                )),
            }
        }
        out
    }

    /// Snippets both parsers accept, with identical trees and spans.
    const AGREE_VALID: &[&str] = &[
        "node",
        "node 1 2 3",
        "node \"a\" key=\"val\" 3.5 -4 +5 #true #false #null",
        "(t)node (u8)1 key=(x)\"v\"",
        "( t )node ( u8 ) 1",
        "(t) node",
        "node {\n  child 1\n  child2 { grand; }\n}",
        "node { a; b; c }",
        "node{}",
        "node \"x\"{}",
        "node 1{}",
        "node {} /-{}",
        "node {}/-{}",
        "node /-{} /-{} { a } /-{ b }",
        "/-node\nother",
        "/- node 1 2 { x }\nother",
        "a /-1 2",
        "a /-key=1 b=2",
        "a /-\n  1 2",
        "a key = 1",
        "a \"quoted key\"=1 #\"raw key\"#=2",
        "a k=(t) 1",
        "a k=1 k=2 k=3",
        "a \\\n  1 \\\n  2",
        "a \\ // comment\n  1",
        "a 1 \\",
        "\\\na",
        "node\n\\\n/-\nnode",
        "node; \\\nnode",
        "a \\\n\nb",
        "a // comment\nb /* inline */ c",
        "/* block */ a /* nested /* deep */ comment */ b",
        "a/*c*/b",
        "a /* ** / * */ 1",
        "-foo --bar .baz +qux - + . -. +.",
        "a infinity truex nullable +inf",
        "a #true #false #null #inf #-inf #nan",
        "a 0x10 0o17 0b101 0xdead_beef 0b1_0",
        "a 1_000 1__0 1_ 12_34.5_6 1e10 1E10 1e-5 1.5e+3 1_.5",
        "a 007 -0 +0 -0.0",
        "a 170141183460469231731687303715884105727",
        "a 0x7fffffffffffffffffffffffffffffff",
        "a 1e999 -1e999 1e-999",
        "a 0.1 0.30000000000000004 123456789.123456789e-5",
        "a \"esc \\n \\r \\t \\\\ \\\" \\b \\f \\s \\u{41} \\u{1F600} \\u{10FFFF} \\u{0}\"",
        "a \"ws \\    escape\" \"line \\\n   continued\"",
        "node \"1\\\n\n\n2\"",
        "a #\"raw \\n \"quoted\" string\"#",
        "a ##\"has \"# inside\"##",
        "a #\"\"#",
        "a \"\"\"\n  hello\n  world\n  \"\"\"",
        "a \"\"\"\n    hello\n  world\n  \"\"\"",
        "a \"\"\"\n\n  x\n\n  \"\"\"",
        "a \"\"\"\n  a\\nb \\\"q\\\" \\u{41}\n  \"\"\"",
        "a \"\"\"\n  foo \\\nbar\n  baz\n  \\   \"\"\"",
        "a \"\"\"\n  has \"\" quotes \" and \\\"\"\"\n  \"\"\"",
        "a #\"\"\"\n  raw \\n \"stuff\" \"\"\" here\n  \"\"\"#",
        "a \"\"\"\n  x\r\n  y\r\n  \"\"\"",
        "\"quoted node\" 1",
        "#\"raw node\"# 1",
        "\"\"\"\n  multiline node\n  \"\"\" 1",
        "(\"\")node",
        "(t)/*c*/node (u)/*c*/1",
        "a (/*c*/t/*d*/)1",
        "emoji 😀 \"😀\"=😀",
        "a ,b <c> 'd' *e* !f ~g @h $i %j ^k &l |m ?n :o",
        "a {\n  b { c { d } }\n}",
        "a \"x\" /-\"y\" \"z\"",
        "a /-{\n  b\n} {\n  c\n}",
        "a \\\n{\n}",
        "a { b \"\"\"\n  m\n  \"\"\"}",
        "a +-1 -+1 --1",
        "a 1/*c*/2",
        "a 1\\\n2",
        "a\u{b}b\u{c}c",
        "a \u{85}b",
        "a\u{2028}b\u{2029}c",
        "a\u{a0}1\u{3000}2",
        "\u{feff}a 1",
        "a\tb\r\nc",
        "/- kdl-version 2\na",
    ];

    /// Snippets both parsers reject.
    const AGREE_INVALID: &[&str] = &[
        "a \\ x",
        "a;;",
        ";a",
        "a /* unterminated",
        ".5",
        "a .5",
        "a -.5",
        "a 1abc",
        "a true",
        "a false",
        "a null",
        "a inf",
        "a nan",
        "true",
        "a #True",
        "a #truex",
        "a 0x",
        "a 0x_1",
        "a 0o8",
        "a 0b2",
        "a 1.",
        "a 1.e5",
        "a 1e",
        "a 1.5.5",
        "a 170141183460469231731687303715884105728",
        "a 0x80000000000000000000000000000000",
        "a \"bad \\q\"",
        "a \"bad \\/\"",
        "a \"\\u{}\"",
        "a \"\\u{D800}\"",
        "a \"unterminated",
        "a \"a\"\"b\"",
        "a \"a\"b",
        "a #\"\"\"#",
        "a #\"a\nb\"#",
        "a ##\"x\"#",
        "a \"\"\"\nhello\"\"\"",
        "a \"\"\"hello\"\"\"",
        "a \"\"\"\n  hello\n world\n  \"\"\"",
        "a \"\"\"\n  foo\n  bar\\\n  \"\"\"",
        "()node",
        "(a b)node",
        "(a)(b)node",
        "a (t)\n1",
        "a b[c]",
        "a }",
        "}",
        "a {",
        "a { b } }",
        "{ a }",
        "a\n{\n}",
        "a {}{}",
        "a {} 1",
        "a /-{} 1",
        "/- /- a",
        "a /-",
        "a 1/-2",
        "a k=/-1",
        "a b=c=d",
        "a =1",
        "a 1=2",
        "a (t)k=1",
        "a k=",
        "a \u{200e}",
        "\u{1}",
        "a \u{feff}",
    ];

    #[test]
    fn differential_valid_snippets_match_kdl_rs() {
        assert!(AGREE_VALID.len() + AGREE_INVALID.len() >= 60);
        for text in AGREE_VALID {
            let ours = p(text);
            let theirs = kdl_rs::convert(text, F)
                .unwrap_or_else(|e| panic!("kdl-rs rejected {text:?}: {e:?}"));
            let diff = tree_diff(&ours, &theirs, true, "");
            assert!(diff.is_empty(), "{text:?}:\n{}", diff.join("\n"));
        }
    }

    #[test]
    fn differential_invalid_snippets_match_kdl_rs() {
        for text in AGREE_INVALID {
            perr(text);
            assert!(
                !kdl_rs::syntax_diagnostics(text).is_empty(),
                "kdl-rs accepted {text:?}"
            );
        }
    }

    /// Where kdl-rs 6.7.1 departs from the KDL 2.0 spec, we follow the spec.
    /// Each case: the text, whether the spec accepts it, and why. The second
    /// assertion notices when kdl-rs changes, so this list stays true.
    const KDL_RS_DIVERGENCES: &[(&str, bool, &str)] = &[
        // A commented-out node is a node and may end with `;`
        // (`node := base-node node-terminator`); kdl-rs rejects it.
        ("/-a; b", true, "slashdashed node ended by `;`"),
        ("a { b; /-c; d }", true, "slashdashed child ended by `;`"),
        // ...and it must end with a terminator; kdl-rs starts a new node.
        (
            "/-a b {} c",
            false,
            "no terminator after a slashdashed node",
        ),
        (
            "/-a #true_",
            false,
            "no terminator after a slashdashed node",
        ),
        // Likewise a slashdashed node may follow a node without a
        // terminator between them in kdl-rs (`#true/-x` reads as node `a
        // #true` then the commented-out node `x`).
        (
            "a {}/- \\\n b",
            false,
            "slashdashed node right after a node",
        ),
        ("a #true/-x", false, "slashdashed node right after a node"),
        // `-inf` is a disallowed keyword identifier; kdl-rs only checks the
        // unsigned keywords.
        ("a -inf", false, "bare -inf"),
        // Radix prefixes are `0x`, `0o`, `0b` only.
        ("a 0X10", false, "upper-case hex prefix"),
        ("a 0O17", false, "upper-case octal prefix"),
        ("a 0B11", false, "upper-case binary prefix"),
        // A single-line raw string body cannot start with `""`; `#"""`
        // opens a multi-line raw string.
        ("a #\"\"\"\"#", false, "raw string body of two quotes"),
        (
            "a #\"\"\"a\"#",
            false,
            "raw string body starting with two quotes",
        ),
        // U+007F (DEL) is a disallowed code point; kdl-rs allows it.
        ("a \u{7f}", false, "DEL in an identifier"),
        ("a \"\u{7f}\"", false, "DEL in a string"),
        // Disallowed code points are disallowed in comments too.
        ("// \u{7f}\na", false, "DEL in a line comment"),
        (
            "/* \u{1} */ a",
            false,
            "control character in a block comment",
        ),
        // The spec sets no integer range; kdl-rs negates after parsing the
        // magnitude as i128, which cannot hold 2^127. We accept i128::MIN.
        (
            "a -170141183460469231731687303715884105728",
            true,
            "i128::MIN",
        ),
    ];

    #[test]
    fn kdl_rs_divergences_follow_the_spec() {
        for &(text, valid, why) in KDL_RS_DIVERGENCES {
            assert_eq!(parse(text, F).is_ok(), valid, "ours on {text:?} ({why})");
            assert_eq!(
                kdl_rs::syntax_diagnostics(text).is_empty(),
                !valid,
                "kdl-rs now agrees with the spec on {text:?} ({why}); move it to the agreeing lists"
            );
        }
    }

    // ----- property test: random documents ------------------------------------------

    mod generated {
        use super::*;
        use proptest::prelude::*;

        /// A string and how to write it: 0 bare if possible, 1 quoted,
        /// 2 raw if possible, 3 multi-line.
        #[derive(Debug, Clone)]
        pub struct GStr {
            value: String,
            form: u8,
        }

        #[derive(Debug, Clone)]
        pub enum GVal {
            Str(GStr),
            /// The integer and how to write it (radix, underscores, sign).
            Int(i128, u8),
            /// The float and whether to write it with an `E` exponent.
            Float(f64, bool),
            Bool(bool),
            Null,
            Inf,
            NegInf,
            Nan,
        }

        #[derive(Debug, Clone)]
        pub struct GEntry {
            key: Option<GStr>,
            ty: Option<GStr>,
            value: GVal,
            commented: bool,
            style: u8,
        }

        #[derive(Debug, Clone)]
        pub struct GNode {
            ty: Option<GStr>,
            name: GStr,
            entries: Vec<GEntry>,
            children: Option<Vec<GNode>>,
            commented: bool,
            commented_children: bool,
            style: u8,
        }

        /// The spec's rule for strings that can be written bare.
        fn bare_ok(s: &str) -> bool {
            let b = s.as_bytes();
            !s.is_empty()
                && s.chars().all(|c| {
                    !c.is_whitespace() && !"\\/(){}[];\"#=".contains(c) && !is_disallowed(c)
                })
                && !matches!(
                    b,
                    [b'0'..=b'9', ..]
                        | [b'+' | b'-', b'0'..=b'9', ..]
                        | [b'+' | b'-', b'.', b'0'..=b'9', ..]
                        | [b'.', b'0'..=b'9', ..]
                )
                && !matches!(s, "true" | "false" | "null" | "inf" | "-inf" | "nan")
        }

        fn escape_char(c: char, out: &mut String) {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if is_disallowed(c) || is_newline(c) || c.is_control() => {
                    out.push_str(&format!("\\u{{{:x}}}", c as u32))
                }
                c => out.push(c),
            }
        }

        fn render_str(s: &GStr, out: &mut String) {
            let v = &s.value;
            match s.form {
                0 if bare_ok(v) => out.push_str(v),
                2 if !v.starts_with('"')
                    && !v
                        .chars()
                        .any(|c| is_newline(c) || is_disallowed(c) || c.is_control()) =>
                {
                    // Enough `#`s that no `"` in the body closes the string.
                    let mut hashes = 1;
                    for (i, _) in v.match_indices('"') {
                        let run = v[i + 1..].bytes().take_while(|&b| b == b'#').count();
                        hashes = hashes.max(run + 1);
                    }
                    let h = "#".repeat(hashes);
                    out.push_str(&format!("{h}\"{v}\"{h}"));
                }
                3 => {
                    // Lines of the value, each indented by four spaces and
                    // fully escaped (so a blank-looking line keeps its
                    // content), closed by a line of four spaces.
                    out.push_str("\"\"\"\n");
                    for line in v.split('\n') {
                        out.push_str("    ");
                        // A line of only whitespace would read as blank.
                        let blank = line.chars().all(is_unicode_space);
                        for c in line.chars() {
                            match c {
                                ' ' => out.push_str("\\s"),
                                c if blank => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                                c => escape_char(c, out),
                            }
                        }
                        out.push('\n');
                    }
                    out.push_str("    \"\"\"");
                }
                _ => {
                    out.push('"');
                    for c in v.chars() {
                        escape_char(c, out);
                    }
                    out.push('"');
                }
            }
        }

        fn render_value(v: &GVal, out: &mut String) {
            match v {
                GVal::Str(s) => render_str(s, out),
                GVal::Int(i, form) => {
                    let sign = if *i < 0 {
                        "-"
                    } else if form % 2 == 1 {
                        "+"
                    } else {
                        ""
                    };
                    let m = i.unsigned_abs();
                    let digits = match form / 2 {
                        0 => m.to_string(),
                        1 => format!("0x{m:x}"),
                        2 => format!("0o{m:o}"),
                        3 => format!("0b{m:b}"),
                        _ => {
                            // Decimal with `_` between every digit.
                            let d: Vec<String> = m.to_string().chars().map(String::from).collect();
                            d.join("_")
                        }
                    };
                    out.push_str(sign);
                    out.push_str(&digits);
                }
                GVal::Float(f, upper) => {
                    let s = if *upper {
                        format!("{f:E}")
                    } else {
                        format!("{f:?}")
                    };
                    out.push_str(&s);
                }
                GVal::Bool(b) => out.push_str(if *b { "#true" } else { "#false" }),
                GVal::Null => out.push_str("#null"),
                GVal::Inf => out.push_str("#inf"),
                GVal::NegInf => out.push_str("#-inf"),
                GVal::Nan => out.push_str("#nan"),
            }
        }

        /// Whitespace before an entry.
        fn separator(style: u8) -> &'static str {
            match style % 6 {
                0 => " ",
                1 => "\t",
                2 => " /* c */ ",
                3 => " \\\n    ",
                4 => "\u{3000}",
                _ => "  ",
            }
        }

        fn render_node(n: &GNode, out: &mut String, indent: usize) {
            let pad = " ".repeat(indent);
            out.push_str(&pad);
            if n.commented {
                out.push_str("/- ");
            }
            if let Some(t) = &n.ty {
                out.push('(');
                render_str(t, out);
                out.push(')');
            }
            render_str(&n.name, out);
            for e in &n.entries {
                out.push_str(separator(e.style));
                if e.commented {
                    out.push_str(if e.style % 2 == 0 { "/-" } else { "/- " });
                }
                if let Some(k) = &e.key {
                    render_str(k, out);
                    out.push_str(match e.style % 3 {
                        0 => "=",
                        1 => " = ",
                        _ => "= ",
                    });
                }
                if let Some(t) = &e.ty {
                    out.push('(');
                    render_str(t, out);
                    out.push(')');
                }
                render_value(&e.value, out);
            }
            if n.commented_children {
                out.push_str(" /-{ gone 1; also { x } }");
            }
            if let Some(children) = &n.children {
                out.push_str(" {\n");
                for c in children {
                    render_node(c, out, indent + 4);
                }
                out.push_str(&pad);
                out.push('}');
            }
            // kdl-rs rejects `;` after a commented-out node, so none there.
            out.push_str(match (n.style % 4, n.commented) {
                (1, false) => ";\n",
                (2, _) => " // comment\n",
                (3, _) => "\r\n",
                _ => "\n",
            });
        }

        pub fn render(nodes: &[GNode]) -> String {
            let mut out = String::new();
            for n in nodes {
                render_node(n, &mut out, 0);
            }
            out
        }

        fn expected_value(v: &GVal) -> Value {
            match v {
                GVal::Str(s) => Value::String(s.value.as_str().into()),
                GVal::Int(i, _) => Value::Integer(*i),
                GVal::Float(f, _) => Value::Float(*f),
                GVal::Bool(b) => Value::Bool(*b),
                GVal::Null => Value::Null,
                GVal::Inf => Value::Float(f64::INFINITY),
                GVal::NegInf => Value::Float(f64::NEG_INFINITY),
                GVal::Nan => Value::Float(f64::NAN),
            }
        }

        /// The tree a correct parser must produce (spans left empty).
        pub fn expected(nodes: &[GNode]) -> Vec<Node> {
            let ident = |s: &GStr| Ident {
                value: s.value.as_str().into(),
                span: Span::default(),
            };
            nodes
                .iter()
                .filter(|n| !n.commented)
                .map(|n| Node {
                    name: ident(&n.name),
                    ty: n.ty.as_ref().map(|t| Box::new(ident(t))),
                    entries: n
                        .entries
                        .iter()
                        .filter(|e| !e.commented)
                        .map(|e| Entry {
                            name: e.key.as_ref().map(ident),
                            ty: e.ty.as_ref().map(|t| Box::new(ident(t))),
                            value: expected_value(&e.value),
                            value_span: Span::default(),
                            span: Span::default(),
                        })
                        .collect(),
                    children: n.children.as_ref().map(|c| expected(c)),
                    span: Span::default(),
                })
                .collect()
        }

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => "[a-z][a-z0-9_-]{0,8}",
                2 => "[ -~]{0,10}",
                2 => "\\PC{0,6}",
                1 => "[-+.0-9a-z]{1,4}",
                1 => "[\u{0}-\u{1f}\u{7f}\u{85}\u{2028}\u{200e}\u{feff}a \n\"\\\\#]{0,6}",
                1 => Just(String::new()),
            ]
        }

        fn gstr() -> impl Strategy<Value = GStr> {
            (text(), 0u8..4).prop_map(|(value, form)| GStr { value, form })
        }

        fn gvalue() -> impl Strategy<Value = GVal> {
            prop_oneof![
                4 => gstr().prop_map(GVal::Str),
                3 => (any::<i128>().prop_filter("kdl-rs cannot read i128::MIN", |i| *i != i128::MIN), 0u8..10)
                    .prop_map(|(i, f)| GVal::Int(i, f)),
                2 => (-1000i64..1000, 0u8..10).prop_map(|(i, f)| GVal::Int(i128::from(i), f)),
                2 => (any::<f64>().prop_filter("finite", |f| f.is_finite()), any::<bool>())
                    .prop_map(|(f, u)| GVal::Float(f, u)),
                1 => (-100.0f64..100.0, any::<bool>()).prop_map(|(f, u)| GVal::Float(f, u)),
                1 => any::<bool>().prop_map(GVal::Bool),
                1 => Just(GVal::Null),
                1 => prop_oneof![Just(GVal::Inf), Just(GVal::NegInf), Just(GVal::Nan)],
            ]
        }

        fn gentry() -> impl Strategy<Value = GEntry> {
            (
                proptest::option::weighted(0.4, gstr()),
                proptest::option::weighted(0.2, gstr()),
                gvalue(),
                proptest::bool::weighted(0.15),
                any::<u8>(),
            )
                .prop_map(|(key, ty, value, commented, style)| GEntry {
                    key,
                    ty,
                    value,
                    commented,
                    style,
                })
        }

        pub fn gnodes() -> impl Strategy<Value = Vec<GNode>> {
            let leaf = Just(None::<Vec<GNode>>);
            let tree = leaf.prop_recursive(3, 32, 4, |inner| {
                prop::option::weighted(
                    0.5,
                    prop::collection::vec(
                        (
                            proptest::option::weighted(0.2, gstr()),
                            gstr(),
                            prop::collection::vec(gentry(), 0..5),
                            inner,
                            proptest::bool::weighted(0.1),
                            proptest::bool::weighted(0.1),
                            any::<u8>(),
                        )
                            .prop_map(
                                |(
                                    ty,
                                    name,
                                    entries,
                                    children,
                                    commented,
                                    commented_children,
                                    style,
                                )| GNode {
                                    ty,
                                    name,
                                    entries,
                                    children,
                                    commented,
                                    commented_children,
                                    style,
                                },
                            ),
                        0..4,
                    ),
                )
            });
            (prop::collection::vec(
                (
                    proptest::option::weighted(0.2, gstr()),
                    gstr(),
                    prop::collection::vec(gentry(), 0..5),
                    tree,
                    proptest::bool::weighted(0.1),
                    proptest::bool::weighted(0.1),
                    any::<u8>(),
                ),
                0..5,
            ),)
                .prop_map(|(nodes,)| {
                    nodes
                        .into_iter()
                        .map(
                            |(
                                ty,
                                name,
                                entries,
                                children,
                                commented,
                                commented_children,
                                style,
                            )| GNode {
                                ty,
                                name,
                                entries,
                                children,
                                commented,
                                commented_children,
                                style,
                            },
                        )
                        .collect()
                })
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Random documents: both parsers accept them and build the tree the
        /// generator meant (values and structure), and agree on all spans.
        #[test]
        fn generated_documents_match_model_and_kdl_rs(model in generated::gnodes()) {
            let text = generated::render(&model);
            let ours = parse(&text, F);
            proptest::prop_assert!(ours.is_ok(), "ours failed on {:?}: {:?}", text, ours);
            let ours = ours.unwrap_or_default();
            let want = generated::expected(&model);
            let diff = tree_diff(&ours, &want, false, "");
            proptest::prop_assert!(diff.is_empty(), "{:?} vs model:\n{}", text, diff.join("\n"));
            let theirs = kdl_rs::convert(&text, F);
            proptest::prop_assert!(theirs.is_ok(), "kdl-rs failed on {:?}: {:?}", text, theirs);
            let diff = tree_diff(&ours, &theirs.unwrap_or_default(), true, "");
            proptest::prop_assert!(diff.is_empty(), "{:?} vs kdl-rs:\n{}", text, diff.join("\n"));
        }

        /// Random documents read in two halves, at any place a split could
        /// be guessed, give what one pass gives, or are refused.
        #[test]
        fn generated_documents_in_halves_match_one_pass(model in generated::gnodes()) {
            let text = generated::render(&model);
            let want = one_pass(&text);
            for at in split_candidates(&text) {
                if let Some(nodes) = halves(&text, F, at) {
                    // Debug text, not `==`: a `#nan` is not equal to itself.
                    proptest::prop_assert_eq!(format!("{:?}", Ok::<_, SyntaxError>(nodes)), format!("{want:?}"), "halves at {} of {:?}", at, text);
                }
            }
        }

        /// Arbitrary text built from KDL's special characters never panics.
        #[test]
        fn arbitrary_text_never_panics(text in "[a-z0-9 \\n\\r\\t{}();=\"#/*\\\\.+_-]{0,64}|\\PC{0,32}|\\p{Any}{0,16}") {
            let _ = parse(&text, F);
        }
    }

    /// One pass over the whole of `text`: what [`parse`] must always give.
    fn one_pass(text: &str) -> Result<Vec<Node>, SyntaxError> {
        Parser::new(text, 0, F).document()
    }

    /// [`parse_halves`] without a hook.
    fn halves(text: &str, file: FileId, at: usize) -> Option<Vec<Node>> {
        parse_halves(text, file, at, &|_| None::<()>).map(|(nodes, _)| nodes)
    }

    /// `parse_each` hands over every top-level node once, in order, and
    /// never a child or a slashdashed node; what it does to a node stays;
    /// in one pass as in halves.
    #[test]
    fn each_top_level_node_is_handed_over_once_in_order() {
        // Names each node by its first argument and empties its children.
        let each = |n: &mut Node| {
            n.children = None;
            n.first_string_arg().map(str::to_string)
        };
        let small = "a \"1\" { b \"x\" }\n/-c \"2\"\nd { e \"y\"; f \"z\" }\ng \"3\"\n";
        let (nodes, kept) = parse_each(small, F, &each).expect("valid");
        assert_eq!(kept, [Some("1".to_string()), None, Some("3".to_string())]);
        assert_eq!(nodes.len(), 3);
        assert!(nodes.iter().all(|n| n.children.is_none()));

        let mut text = String::new();
        let mut i = 0;
        while text.len() < SPLIT_FROM + 4096 {
            text.push_str(&format!(
                "service \"svc-{i}\" {{\n    image \"x:{i}\"\n}}\n"
            ));
            i += 1;
        }
        assert!(halves(&text, F, split_point(&text).expect("a split")).is_some());
        let (nodes, kept) = parse_each(&text, F, &each).expect("valid");
        assert_eq!(nodes.len(), i);
        let want: Vec<Option<String>> = (0..i).map(|k| Some(format!("svc-{k}"))).collect();
        assert_eq!(kept, want);
        assert!(nodes.iter().all(|n| n.children.is_none()));
    }

    /// Every place [`split_point`] could pick: after a line that is only
    /// `}`, before a line starting with a letter.
    fn split_candidates(text: &str) -> Vec<usize> {
        let b = text.as_bytes();
        (3..b.len())
            .filter(|&at| &b[at - 3..at] == b"\n}\n" && b[at].is_ascii_alphabetic())
            .collect()
    }

    /// Documents whose every split candidate is a trap: inside a multi-line
    /// string, a raw string, a block comment, a children block, a slashdashed
    /// node, after a line continuation. Read in halves, each gives what one
    /// pass gives (here, by refusing the split), and so does [`parse`].
    #[test]
    fn halves_are_refused_wherever_one_pass_is_not_between_top_level_nodes() {
        let traps = [
            "a \"\"\"\n  x\n}\nb\n  \"\"\"\nc 1\n",
            "a #\"\"\"\n  x\n}\nb\n  \"\"\"#\nc 1\n",
            "a /* x\n}\nb */ 1\nc 2\n",
            "a {\n  b {\n}\nc 1\n}\nd 2\n",
            "/-a {\n  b {\n}\nc 1\n}\nd 2\n",
            "a {\n  /* \n}\nb */ }\nc 1\n",
            "a \"x\n}\nb\"\n",
            "a {\n}\nb {\n}\n}\nc 1\n",
        ];
        for text in traps {
            let want = one_pass(text);
            let candidates = split_candidates(text);
            assert!(!candidates.is_empty(), "no split candidate in {text:?}");
            for at in candidates {
                if let Some(nodes) = halves(text, F, at) {
                    assert_eq!(Ok(nodes), want, "halves at {at} of {text:?}");
                }
            }
            assert_eq!(parse(text, F), want, "{text:?}");
        }
    }

    /// A large document is read in halves (the split is taken), and gives
    /// the one-pass tree, spans included; with a syntax error in either
    /// half, the one-pass error.
    #[test]
    fn large_documents_read_in_halves_give_the_one_pass_result() {
        let mut text = String::new();
        let mut i = 0;
        while text.len() < SPLIT_FROM + 4096 {
            text.push_str(&format!(
                "service \"svc-{i}\" tier=\"t\" {{\n    image \"x:{i}\"\n    port {}\n    /* c\n}} */\n    health http=\"/h\" port=8080 ratio=0.5\n}}\n",
                i % 60_000
            ));
            i += 1;
        }
        let at = split_point(&text).expect("a split point");
        let halves = halves(&text, F, at).expect("the halves read cleanly");
        let want = one_pass(&text).expect("valid");
        assert_eq!(halves.len(), i);
        assert_eq!(halves, want);
        assert_eq!(parse(&text, F), Ok(want));
        // A stray `}` before the first node, the node at the split point,
        // and the last node.
        let last = text[..text.len() - 2].rfind("\n}\n").expect("nodes") + 3;
        for pos in [0, at, last] {
            let mut bad = text.clone();
            bad.insert_str(pos, "}\n");
            let want = one_pass(&bad);
            assert!(want.is_err());
            assert_eq!(parse(&bad, F), want, "error at {pos}");
        }
    }

    /// The item limit counts both halves together.
    #[test]
    fn halves_share_the_item_limit() {
        let line = "a 1 2 3 4 5 6 7 8 9\n";
        let mut text = String::new();
        let mut items = 0;
        // Each block is 11 items: `b`, `a` and its nine arguments.
        while items <= MAX_ITEMS {
            text.push_str("b {\n");
            text.push_str(line);
            text.push_str("}\n");
            items += 11;
        }
        let at = split_point(&text).expect("a split point");
        assert!(halves(&text, F, at).is_none());
        let e = parse(&text, F).expect_err("too large");
        assert!(e.too_large);
        assert_eq!(Err(e), one_pass(&text));
    }

    /// Timing of the reference workload: a 2.4 MB document of 10,000 service
    /// nodes. Run with
    /// `cargo test --release timing_2_4_mb_document -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; run in release mode"]
    fn timing_2_4_mb_document() {
        let mut text = String::new();
        for i in 0..10_000 {
            text.push_str(&format!(
                "service \"svc-{i}\" tier=\"services\" {{\n    image \"example/svc:{i}.0\"\n    port 8080\n    health http=\"/health\" port=8080 interval=\"10s\"\n    depends-on \"svc-{}\" condition=\"healthy\"\n    resources cpu=\"500m\" memory=\"1Gi\"\n    env \"MODE\" \"prod\"\n}}\n",
                i.max(1) - 1
            ));
        }
        let start = std::time::Instant::now();
        let nodes = parse(&text, F).unwrap();
        let first = start.elapsed();
        drop(nodes);
        let mut best = first;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            let nodes = parse(&text, F).unwrap();
            best = best.min(start.elapsed());
            assert_eq!(nodes.len(), 10_000);
        }
        let mut one = first;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            let nodes = one_pass(&text).unwrap();
            one = one.min(start.elapsed());
            assert_eq!(nodes.len(), 10_000);
        }
        let mb = text.len() as f64 / 1e6;
        println!(
            "{mb:.2} MB: first parse {first:?} ({:.0} MB/s), best of 5 {best:?} ({:.0} MB/s); one pass, best of 5: {one:?}",
            mb / first.as_secs_f64(),
            mb / best.as_secs_f64()
        );
    }
}
