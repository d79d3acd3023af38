//! Hostile and degenerate input: a clear error each, never a panic, and
//! bounded time.

use std::io::Write;

use stackc::diag::Code;

fn codes(c: &stackc::Checked) -> Vec<Code> {
    c.diags.iter().map(|d| d.code).collect()
}

fn check_text(text: &str) -> stackc::Checked {
    stackc::check_str("hostile.kdl", text, std::path::Path::new("."), None)
}

#[test]
fn missing_file_is_a_clear_error() {
    let c = stackc::check_file(std::path::Path::new("no/such/stack.kdl"), None);
    assert_eq!(codes(&c), [Code::MissingFile]);
    let d = c.diags.iter().next().expect("one");
    assert!(
        d.message.contains("no/such/stack.kdl") && d.message.contains("no such file"),
        "{}",
        d.message
    );
}

#[test]
fn directory_instead_of_file() {
    let c = stackc::check_file(std::path::Path::new("examples"), None);
    assert_eq!(codes(&c), [Code::MissingFile]);
}

#[test]
fn empty_and_comment_only_files() {
    for text in ["", "   \n\n", "// only a comment\n/* and a block */\n"] {
        let c = check_text(text);
        assert_eq!(codes(&c), [Code::EmptyInput], "{text:?}");
    }
}

#[test]
fn non_utf8_file_points_at_the_bad_byte() {
    let mut f = tempfile::NamedTempFile::new().expect("temp");
    f.write_all(b"stack \"caf\xe9\"\n").expect("write");
    let c = stackc::check_file(f.path(), None);
    assert_eq!(codes(&c), [Code::NotUtf8]);
    let d = c.diags.iter().next().expect("one");
    assert_eq!(d.primary.as_ref().expect("span").span.start, 10);
    // Rendering must not panic on the replaced bytes.
    let _ = stackc::diag::render_plain(&c.diags, &c.sources);
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 10_000;
    let text = format!("stack \"x\"\n{}{}", "a {".repeat(depth), "}".repeat(depth));
    let c = check_text(&text);
    assert!(codes(&c).contains(&Code::Syntax), "{:?}", codes(&c));
}

#[test]
fn very_long_line_is_handled() {
    let name = "a".repeat(1_000_000);
    let text = format!("stack \"x\"\nservice \"{name}\" {{ image \"busybox:1.36\" }}\n");
    let c = check_text(&text);
    assert!(codes(&c).contains(&Code::InvalidName), "{:?}", codes(&c));
    // The message quotes a bounded prefix, not the megabyte.
    assert!(c.diags.iter().all(|d| d.message.len() < 400));
}

#[test]
fn unterminated_string_is_a_syntax_error_with_a_span() {
    let c = check_text("stack \"x\nservice \"a\" {}\n");
    assert!(codes(&c).contains(&Code::Syntax));
    assert!(c.diags.iter().all(|d| d.primary.is_some()));
}
