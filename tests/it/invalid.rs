//! The invalid-topology corpus: every file in tests/fixtures/invalid is a
//! topology with a mistake. Its name starts with the diagnostic code it
//! must produce (`unknown-property--misspelt-interval.kdl`); its rendered
//! diagnostics are snapshot-tested, so a change in wording or position is
//! reviewed. A first-line comment `// env: NAME` selects an environment.

use std::path::Path;

use stackc::diag::{Code, render_plain};

use crate::support::{kdl_files, root};

fn expected_code(file: &Path) -> Code {
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("utf-8 name");
    let code = stem.split("--").next().expect("code prefix");
    Code::parse(code).unwrap_or_else(|| panic!("{stem}: `{code}` is not a diagnostic code"))
}

fn env_of(text: &str) -> Option<String> {
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("// env: "))
        .map(|s| s.trim().to_string())
}

#[test]
fn every_invalid_fixture_reports_its_code_and_matches_its_snapshot() {
    let dir = root().join("tests/fixtures/invalid");
    let files = kdl_files(&dir);
    assert!(files.len() >= 40, "the corpus has {} fixtures", files.len());
    std::env::set_current_dir(root()).expect("cd to the package root");
    for file in &files {
        let rel = file.strip_prefix(root()).expect("under root");
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let env = env_of(&text);
        let checked = stackc::check_file(rel, env.as_deref());
        let code = expected_code(file);
        assert!(
            !checked.ok(),
            "{}: expected errors, got none",
            rel.display()
        );
        assert!(
            checked.diags.iter().any(|d| d.code == code),
            "{}: expected {code}, got {:?}",
            rel.display(),
            checked
                .diags
                .iter()
                .map(|d| d.code.full())
                .collect::<Vec<_>>()
        );
        let rendered = render_plain(&checked.diags, &checked.sources);
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_string();
        crate::snapshot!("invalid", name, rendered);
    }
}

#[test]
fn every_error_code_has_a_fixture() {
    // Codes that need a file system condition rather than a fixture file
    // are covered in hostile.rs.
    let elsewhere = [Code::MissingFile, Code::NotUtf8, Code::TooLarge];
    let files = kdl_files(&root().join("tests/fixtures/invalid"));
    let covered: Vec<Code> = files.iter().map(|f| expected_code(f)).collect();
    let warnings = [
        Code::ImageTag,
        Code::PublicPort,
        Code::HealthMissing,
        Code::Unmapped,
        Code::RouteWithoutHealth,
        Code::MetricsUnscraped,
        Code::UnusedRateLimit,
    ];
    let missing: Vec<String> = Code::ALL
        .iter()
        .filter(|c| !covered.contains(c) && !elsewhere.contains(c) && !warnings.contains(c))
        .map(|c| c.full())
        .collect();
    assert!(missing.is_empty(), "codes without a fixture: {missing:?}");
}

#[test]
fn every_warning_fixture_checks_clean_with_only_its_warning() {
    let files = kdl_files(&root().join("tests/fixtures/warnings"));
    assert!(!files.is_empty());
    std::env::set_current_dir(root()).expect("cd to the package root");
    let mut covered = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(root()).expect("under root");
        let text = std::fs::read_to_string(file).expect("read");
        let checked = stackc::check_file(rel, env_of(&text).as_deref());
        let code = expected_code(file);
        assert!(
            checked.ok(),
            "{}: {}",
            rel.display(),
            render_plain(&checked.diags, &checked.sources)
        );
        let codes: Vec<Code> = checked.diags.iter().map(|d| d.code).collect();
        assert!(
            codes.iter().all(|c| *c == code) && !codes.is_empty(),
            "{}: {codes:?}",
            rel.display()
        );
        covered.push(code);
    }
    for w in [
        Code::ImageTag,
        Code::PublicPort,
        Code::HealthMissing,
        Code::UnusedRateLimit,
    ] {
        assert!(covered.contains(&w), "no warning fixture for {w}");
    }
}
