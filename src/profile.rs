//! Target profiles (`targets/*.kdl`): where `plan`/`apply` act, and how
//! image references are rewritten there.
//!
//! ```kdl
//! target "local" {
//!     docker host="unix:///var/run/docker.sock"   // or DOCKER_HOST
//!     state-dir ".stackc"
//!     image-map {
//!         image "eipresso/*" to="stackc-test/standin:1"
//!     }
//! }
//! ```
//!
//! Image patterns match a whole reference; `*` matches any run of
//! characters. The first matching rule wins.

use std::path::{Path, PathBuf};

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::parse::reader::{NodeReader, unknown_node};
use crate::parse::tree::Node;
use crate::source::SourceMap;

#[derive(Debug, Clone, PartialEq)]
pub struct ImageRule {
    pub pattern: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    /// Docker endpoint; `None` uses DOCKER_HOST or the local socket.
    pub docker_host: Option<String>,
    pub state_dir: PathBuf,
    pub images: Vec<ImageRule>,
}

impl Profile {
    /// The built-in profile used when no `--target` is given: the local
    /// engine, no image rewriting.
    pub fn local() -> Profile {
        Profile {
            name: "local".into(),
            docker_host: None,
            state_dir: PathBuf::from(".stackc"),
            images: Vec::new(),
        }
    }

    /// Rewrite an image reference through the image map.
    pub fn map_image(&self, image: &str) -> String {
        self.images
            .iter()
            .find(|r| glob(&r.pattern, image))
            .map_or_else(|| image.to_string(), |r| r.to.clone())
    }
}

/// `*`-only glob matching over the whole string.
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first)
        || !s[first.len()..].ends_with(last)
        || s.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Find a profile by name in `targets/` (searched from `start` upward) or
/// as a path to a `.kdl` file.
pub fn resolve(name: &str, start: &Path) -> Result<PathBuf, String> {
    let as_path = Path::new(name);
    if name.ends_with(".kdl") && as_path.is_file() {
        return Ok(as_path.to_path_buf());
    }
    for dir in start.ancestors() {
        let cand = dir.join("targets").join(format!("{name}.kdl"));
        if cand.is_file() {
            return Ok(cand);
        }
    }
    Err(format!(
        "no target profile `{name}`: looked for targets/{name}.kdl from {} upward",
        start.display()
    ))
}

/// Load a profile file; diagnostics carry spans into `sources`.
pub fn load(path: &Path, sources: &mut SourceMap) -> Result<Profile, Diagnostics> {
    let mut diags = Diagnostics::new();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            diags.push(Diagnostic::error(
                Code::MissingFile,
                format!("cannot read {}: {e}", path.display()),
            ));
            return Err(diags);
        }
    };
    let file = sources.add(path.display().to_string(), text.as_str());
    let nodes = match crate::parse::kdl::parse(&text, file) {
        Ok(n) => n,
        Err(e) => {
            diags.push(
                Diagnostic::error(Code::Syntax, format!("KDL syntax error: {}", e.message))
                    .at(e.span, "here"),
            );
            return Err(diags);
        }
    };
    let mut profile = None;
    for n in &nodes {
        if n.name.value != "target" {
            unknown_node(n, "a target profile", &["target"], &mut diags);
            continue;
        }
        profile = decode(n, &mut diags);
    }
    match profile {
        Some(p) if !diags.has_errors() => Ok(p),
        _ => {
            if !diags.has_errors() {
                diags.push(Diagnostic::error(
                    Code::MissingNode,
                    format!("{} has no `target` node", path.display()),
                ));
            }
            Err(diags)
        }
    }
}

fn decode(node: &Node, out: &mut Diagnostics) -> Option<Profile> {
    let mut r = NodeReader::new(node);
    r.allow_children();
    let name = r.arg_string(0, "a profile name");
    r.finish(out);
    let mut p = Profile::local();
    for c in node.children() {
        match c.name.value.as_str() {
            "docker" => {
                let mut cr = NodeReader::new(c);
                p.docker_host = cr.prop_string("host").map(|s| s.value);
                cr.finish(out);
            }
            "state-dir" => {
                let mut cr = NodeReader::new(c);
                if let Some(s) = cr.arg_string(0, "a directory") {
                    p.state_dir = PathBuf::from(s.value);
                }
                cr.finish(out);
            }
            "image-map" => {
                let mut cr = NodeReader::new(c);
                cr.allow_children();
                cr.finish(out);
                for rule in c.children() {
                    if rule.name.value != "image" {
                        unknown_node(rule, "`image-map`", &["image"], out);
                        continue;
                    }
                    let mut rr = NodeReader::new(rule);
                    let pattern = rr.arg_string(0, "an image pattern");
                    let to = rr.required_prop_string(
                        "to",
                        "image \"eipresso/*\" to=\"stackc-test/standin:1\"",
                    );
                    rr.finish(out);
                    if let (Some(pattern), Some(to)) = (pattern, to) {
                        p.images.push(ImageRule {
                            pattern: pattern.value,
                            to: to.value,
                        });
                    }
                }
            }
            _ => unknown_node(c, "`target`", &["docker", "state-dir", "image-map"], out),
        }
    }
    p.name = name?.value;
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("eipresso/*", "eipresso/config-server:1.1.0"));
        assert!(glob("*", "postgres:16"));
        assert!(glob("*:latest", "x:latest"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXc"));
        assert!(!glob("postgres:16", "postgres:16.4"));
    }
}
