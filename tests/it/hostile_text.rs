//! Seeded generation of hostile text, shared by the injection tests and
//! the fuzzers: deterministic for a seed, so every failure reproduces.

/// SplitMix64: small, fast and good enough to drive test generation.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The seed of a run: `STACKC_TEST_SEED` when set (to reproduce or to
/// explore), else a fixed one so CI is deterministic.
pub fn seed(default: u64) -> u64 {
    std::env::var("STACKC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Pieces that mean something to one of the consumers: nginx, YAML 1.1
/// and 1.2, compose interpolation, shell, Kubernetes `$(VAR)` expansion,
/// Go templates, PromQL strings, KDL itself.
pub const PIECES: &[&str] = &[
    "\n",
    "\r",
    "\t",
    "\r\n",
    "\"",
    "'",
    "`",
    ";",
    "{",
    "}",
    "{}",
    "$",
    "$$",
    "${X}",
    "${X:-d}",
    "${X:?e}",
    "$X",
    "$(id)",
    "$(V)",
    "$(",
    "`id`",
    "{{",
    "}}",
    "{{ $value }}",
    "{{ .Labels }}",
    "{{ $labels.job }}",
    "{{ end }}",
    "{{-",
    "-}}",
    "\\",
    "\\n",
    "\\\"",
    "\\\\",
    "#",
    " #",
    ": ",
    ":",
    "- ",
    "-",
    "--",
    "no",
    "on",
    "yes",
    "off",
    "y",
    "n",
    "~",
    "null",
    "Null",
    "true",
    "False",
    "*",
    "*a",
    "&",
    "&a",
    "!",
    "!!str",
    "%",
    "%YAML",
    "@",
    "|",
    ">",
    "<",
    "?",
    "? ",
    "[",
    "]",
    ",",
    "=",
    "=~",
    "!=",
    "..",
    "/",
    "//",
    "/./",
    "/../",
    " ",
    "  ",
    "é",
    "日本",
    "\u{2028}",
    "\u{2029}",
    "\u{85}",
    "\u{a0}",
    "\u{feff}",
    "\u{0}",
    "\u{7}",
    "\u{1b}",
    "\u{7f}",
    "\u{200b}",
    "\u{202e}",
    "\u{fffd}",
    "\u{fffe}",
    "\u{ffff}",
    "😀",
    "0x1F",
    "1e3",
    "0o17",
    "012",
    "8080:80",
    "1:2:3",
    ".inf",
    "-.inf",
    ".nan",
    "<<",
    "---",
    "...",
    "%{x}",
    "+",
    "0",
    "1.0",
    "&&",
    "||",
    "2>&1",
    "> /tmp/x",
    "\\u0041",
    "\\x41",
    "$labels",
    "}}{{",
    "location",
    "server {",
    "include /etc/passwd;",
    "return 200;",
    "\"; evil \"",
    "' evil '",
    "\n  - x",
    "\nkey: v",
    "a: b",
    "#!",
    "/*",
    "*/",
    "//",
    "r#\"",
    "\"#",
    "\\s",
];

/// Values that some YAML reader turns into something else when written
/// plain, used whole.
pub const YAML_WORDS: &[&str] = &[
    "no",
    "No",
    "NO",
    "yes",
    "Yes",
    "on",
    "On",
    "off",
    "OFF",
    "y",
    "Y",
    "n",
    "N",
    "true",
    "False",
    "~",
    "null",
    "NULL",
    "",
    " ",
    "-",
    "- a",
    "-a",
    "*a",
    "&a",
    "!a",
    "!!binary",
    "%a",
    "@a",
    "`a",
    "a: b",
    "a #b",
    "#a",
    "? a",
    "| a",
    "> a",
    "[a]",
    "{a}",
    "'a'",
    "\"a\"",
    "1e3",
    "0o17",
    "0x1f",
    "012",
    "8080:80",
    "1_000",
    ".5",
    "+1",
    "-1",
    ".inf",
    ".NaN",
    "2001-12-14",
    "=",
    "<<",
    "---",
    "...",
    "a,b",
    "\u{2028}",
    " a",
    "a ",
    "\ta",
];

/// One hostile string: pieces, random characters and plain words mixed.
pub fn hostile(rng: &mut Rng) -> String {
    if rng.one_in(8) {
        return rng.pick(YAML_WORDS).to_string();
    }
    let mut s = String::new();
    for _ in 0..1 + rng.below(6) {
        match rng.below(6) {
            0 | 1 => {
                let piece: &&str = rng.pick(PIECES);
                s.push_str(piece);
            }
            2 => s.push(char::from(b' ' + rng.below(95) as u8)),
            3 => s.push(any_char(rng)),
            _ => {
                for _ in 0..1 + rng.below(6) {
                    s.push(char::from(b'a' + rng.below(26) as u8));
                }
            }
        }
    }
    s
}

/// Any Unicode scalar value, biased towards the interesting planes.
pub fn any_char(rng: &mut Rng) -> char {
    let cp = match rng.below(4) {
        0 => rng.below(0x100) as u32,
        1 => 0x2000 + rng.below(0x100) as u32,
        2 => rng.below(0x1_0000) as u32,
        _ => rng.below(0x11_0000) as u32,
    };
    char::from_u32(cp).unwrap_or('\u{fffd}')
}

/// A KDL 2.0 quoted string holding exactly `s`: characters KDL does not
/// allow literally (control characters, newlines of any kind, direction
/// marks, BOM) are written as escapes.
pub fn kdl_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{200e}' | '\u{200f}'
                )
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c) =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
