//! Decoding the `network` block and its tiers.

use ipnet::Ipv4Net;

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::{Network, Tier};
use crate::parse::reader::{NodeReader, unknown_node};
use crate::parse::tree::Node;
use crate::source::Spanned;

pub fn decode(node: &Node, out: &mut Diagnostics) -> Option<Network> {
    let mut r = NodeReader::new(node);
    r.allow_children();
    let name = r.arg_string(0, "a network name");
    let net = r
        .required_prop_string("subnet", "network \"cluster\" subnet=\"172.21.0.0/16\"")
        .and_then(|s| subnet(&mut r, s));
    let mut tiers = Vec::new();
    for child in node.children() {
        match child.name.value.as_str() {
            "tier" => {
                let mut c = NodeReader::new(child);
                let name = c.arg_string(0, "a tier name");
                let subnet = c
                    .required_prop_string("subnet", "tier \"services\" subnet=\"172.21.10.0/24\"")
                    .and_then(|s| subnet(&mut c, s));
                c.finish(out);
                // A tier with a bad subnet is still declared, so references
                // to it do not fail too; its range is left out of the
                // address checks.
                if let Some(name) = name {
                    tiers.push(Tier {
                        name,
                        subnet_ok: subnet.is_some(),
                        subnet: subnet
                            .unwrap_or_else(|| Spanned::new(Ipv4Net::default(), child.span)),
                        span: child.span,
                    });
                }
            }
            _ => unknown_node(child, "`network`", &["tier"], out),
        }
    }
    r.finish(out);
    Some(Network {
        name: name?,
        subnet_ok: net.is_some(),
        subnet: net.unwrap_or_else(|| Spanned::new(Ipv4Net::default(), node.span)),
        tiers,
        span: node.span,
    })
}

/// Parse an IPv4 CIDR block that is written with its network address.
fn subnet(r: &mut NodeReader, s: Spanned<String>) -> Option<Spanned<Ipv4Net>> {
    match s.value.parse::<Ipv4Net>() {
        Ok(net) if net.network() == net.addr() => Some(Spanned::new(net, s.span)),
        Ok(net) => {
            r.error(
                Diagnostic::error(
                    Code::InvalidSubnet,
                    format!("`{}` has host bits set", s.value),
                )
                .at(s.span, format!("the network address is {}", net.trunc()))
                .help(format!("write subnet=\"{}\"", net.trunc())),
            );
            None
        }
        Err(_) => {
            r.error(
                Diagnostic::error(
                    Code::InvalidSubnet,
                    format!("`{}` is not an IPv4 CIDR block", s.value),
                )
                .at(s.span, "expected e.g. 172.21.0.0/16")
                .help("write an IPv4 network address and a prefix length, such as 10.20.0.0/24"),
            );
            None
        }
    }
}
