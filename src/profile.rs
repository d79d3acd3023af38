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
//!
//! A Kubernetes profile names a cluster instead of an engine:
//!
//! ```kdl
//! target "cluster" {
//!     kubernetes context="kind-stackc" namespace="shop" field-manager="stackc"
//!     image-map {
//!         image "*" to="registry.internal/mirror/*"
//!     }
//! }
//! ```
//!
//! `context` picks a kubeconfig context (default: the current one);
//! `in-cluster=#true` uses the pod's service account instead. `namespace`,
//! when given, must be the namespace the manifests use (a guard against
//! applying to the wrong one). `field-manager` defaults to `stackc`.
//! `concurrency` (1 to 256, default 16) bounds the API requests plan,
//! apply, drift and destroy keep in flight at once (`--concurrency`
//! overrides it).

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
    /// Set for a Kubernetes target: plan/apply act on a cluster.
    pub kubernetes: Option<KubeTarget>,
}

/// Where and how a Kubernetes target applies.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeTarget {
    /// kubeconfig context; `None` uses the current context.
    pub context: Option<String>,
    /// Use the in-cluster service account instead of a kubeconfig.
    pub in_cluster: bool,
    /// The namespace the manifests must use, when the profile pins one.
    pub namespace: Option<String>,
    /// Server-side apply field manager.
    pub field_manager: String,
    /// The most API requests in flight at once.
    pub concurrency: usize,
}

/// Requests in flight at once unless the profile or `--concurrency` says
/// otherwise (kubectl and client-go default to a similar burst).
pub const CONCURRENCY: usize = 16;

/// The largest `concurrency` a profile or `--concurrency` may give.
pub const MAX_CONCURRENCY: usize = 256;

/// The field manager stackc applies with unless a profile says otherwise.
pub const FIELD_MANAGER: &str = "stackc";

impl Profile {
    /// The built-in profile used when no `--target` is given: the local
    /// engine, no image rewriting.
    pub fn local() -> Profile {
        Profile {
            name: "local".into(),
            docker_host: None,
            state_dir: PathBuf::from(".stackc"),
            images: Vec::new(),
            kubernetes: None,
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
        Ok(t) => std::sync::Arc::new(t),
        Err(e) => {
            diags.push(Diagnostic::error(
                Code::MissingFile,
                format!("cannot read {}: {e}", path.display()),
            ));
            return Err(diags);
        }
    };
    let file = sources.add(path.display().to_string(), text.clone());
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
            "kubernetes" => {
                let mut cr = NodeReader::new(c);
                let context = cr.prop_string("context").map(|s| s.value);
                let in_cluster = cr.prop_bool("in-cluster").unwrap_or(false);
                let namespace = cr.prop_string("namespace").map(|s| s.value);
                let field_manager = cr
                    .prop_string("field-manager")
                    .map_or_else(|| FIELD_MANAGER.to_string(), |s| s.value);
                let concurrency = cr
                    .prop_u32("concurrency", 1..=MAX_CONCURRENCY as u32)
                    .map_or(CONCURRENCY, |s| s.value as usize);
                if in_cluster && context.is_some() {
                    cr.error(
                        Diagnostic::error(
                            Code::InvalidValue,
                            "`context` and `in-cluster=#true` exclude each other",
                        )
                        .at(c.span, "pick one"),
                    );
                }
                cr.finish(out);
                p.kubernetes = Some(KubeTarget {
                    context,
                    in_cluster,
                    namespace,
                    field_manager,
                    concurrency,
                });
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
            _ => unknown_node(
                c,
                "`target`",
                &["docker", "kubernetes", "state-dir", "image-map"],
                out,
            ),
        }
    }
    if p.kubernetes.is_some() && p.docker_host.is_some() {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                "a target profile is either `docker` or `kubernetes`, not both",
            )
            .at(node.span, "this profile"),
        );
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
