//! YAML emission, in one place so the YAML library can be swapped.
//!
//! Artifacts are built as serde values and printed by the small emitter
//! here, never assembled from strings. The emitter writes a string plain
//! only when every YAML reader (YAML 1.1 ones included, such as
//! docker-compose v1 and many Kubernetes tools) reads it back as that same
//! string: `yes`, `no`, `on`, `off`, `~`, `8080:80` (a base-60 number in
//! YAML 1.1), `0o17`, `1e3` and anything with special characters are
//! double-quoted. Parsing (tests, drift) uses serde_yaml.

use serde::Serialize;
use serde_json::Value;

/// Serialize `value` as a YAML document.
pub fn to_string<T: Serialize>(value: &T) -> String {
    // Plain data (maps, strings, numbers) always converts.
    let v = serde_json::to_value(value).expect("plain data converts to a value");
    value_to_string(&v)
}

/// As [`to_string`], for a value already built (no conversion copy).
pub fn value_to_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => seq(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

/// Several YAML documents separated by `---`.
pub fn to_multi_doc<T: Serialize>(values: &[T]) -> String {
    let mut out = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&to_string(v));
    }
    out
}

/// Parse YAML back (tests and drift checks).
pub fn from_str<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_yaml::from_str(s).map_err(|e| e.to_string())
}

/// Words that some YAML reader takes for a boolean or null.
const SPECIAL: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~",
];

/// Can `s` be written without quotes and read back unchanged everywhere?
fn plain_ok(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_' || first == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./@+-".contains(c))
        && !SPECIAL.contains(&s)
        && !s.ends_with('.')
}

fn string(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        // A JSON string is a valid YAML double-quoted scalar.
        serde_json::to_string(s).expect("strings serialize")
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        _ => unreachable!("collections are not scalars"),
    }
}

fn pad(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push(' ');
    }
}

fn map(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (i, (k, v)) in m.iter().enumerate() {
        // The first key of a map inside a sequence follows the `- `.
        if i > 0 || !out.ends_with("- ") {
            pad(out, indent);
        }
        out.push_str(&string(k));
        out.push(':');
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                map(out, inner, indent + 2);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                seq(out, items, indent);
            }
            _ => {
                out.push(' ');
                out.push_str(&scalar(v));
                out.push('\n');
            }
        }
    }
}

fn seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        pad(out, indent);
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => map(out, m, indent + 2),
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                seq(out, a, indent + 2);
            }
            _ => {
                out.push_str(&scalar(item));
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn specials_are_quoted() {
        let v = json!({"command": ["redis-server", "--appendonly", "yes"], "ports": ["8080:80"], "a": "~", "b": "0o17", "c": "1e3", "d": "on"});
        let y = to_string(&v);
        assert!(y.contains("- \"yes\""), "{y}");
        assert!(y.contains("- \"8080:80\""), "{y}");
        assert!(y.contains("a: \"~\""), "{y}");
        let back: serde_json::Value = from_str(&y).expect("parses");
        assert_eq!(back, v);
    }

    #[test]
    fn nesting_round_trips() {
        let v = json!({
            "services": {"web": {"image": "nginx:1.27", "environment": {"A": "x: y", "B": "line\nbreak"}, "ports": []}},
            "list": [{"name": "a", "items": [1, 2, {"x": null}]}, [true, false], "s"],
            "empty": {},
        });
        let y = to_string(&v);
        let back: serde_json::Value = from_str(&y).expect("parses");
        assert_eq!(back, v, "{y}");
    }
}
