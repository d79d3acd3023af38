//! Temporary shim (replaced by the fast parser).
use crate::parse::tree::Node;
use crate::source::{FileId, Span};
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub span: Span,
    pub message: String,
}
pub fn parse(text: &str, file: FileId) -> Result<Vec<Node>, SyntaxError> {
    super::kdl_rs::convert(text, file).map_err(|i| SyntaxError {
        span: Span::new(
            file,
            i.first().map_or(0, |x| x.start),
            i.first().map_or(0, |x| x.end),
        ),
        message: i.first().map_or(String::new(), |x| x.message.clone()),
    })
}
