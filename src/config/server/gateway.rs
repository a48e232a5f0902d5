//! A client's `gateway` (fwknop `FORWARD_ALL`): a grant of this client also lets its source open
//! new forwarded flows into the networks named here, every port and protocol, for the grant's
//! time; masquerade or SNAT them as configured. Pure: checks values, reads nothing.
//!
//! ```toml
//! gateway = { networks = ["10.80.0.0/24", "fd80::/64"], masquerade = true }
//! ```
//!
//! Drop-only like every gate of nfknock: the forward gate closes new flows into these networks
//! to every source that holds no gateway grant; networks not named are not touched. So a
//! network must be named: `0.0.0.0/0` or `::/0` would close all forwarding through this host
//! (containers' egress included) to everyone else, and is refused.

use ipnet::IpNet;
use toml::Spanned;

use crate::access::SourceNat;
use crate::config::raw::{join, Sink};
use crate::config::values;
use crate::config::Gateway;

/// `gateway = { ... }` as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    networks: Option<Spanned<Vec<Spanned<String>>>>,
    masquerade: Option<bool>,
    snat: Option<Spanned<String>>,
}

/// `gateway` → [`Gateway`]; every problem is reported with its line.
pub(super) fn gateway(
    sink: &mut Sink<'_>,
    prefix: &str,
    raw: Option<&Spanned<RawGateway>>,
) -> Option<Gateway> {
    let raw = raw?;
    let key = |k: &str| join(prefix, &format!("gateway.{k}"));
    let Some(list) = &raw.get_ref().networks else {
        sink.at(
            Some(raw.span()),
            &key("networks"),
            "a gateway needs `networks`: the internal networks its clients may reach through this host, e.g. `networks = [\"10.80.0.0/24\"]`",
        );
        return None;
    };
    let mut ok = true;
    let mut networks: Vec<IpNet> = Vec::new();
    for (i, item) in list.get_ref().iter().enumerate() {
        let k = key(&format!("networks[{}]", i + 1));
        match values::network(item.get_ref()) {
            Ok(net) if net.prefix_len() == 0 => {
                ok = false;
                sink.at(
                    Some(item.span()),
                    &k,
                    format!("`{net}` would close all forwarding through this host to every source without a gateway grant (containers' egress included); name the internal networks the client should reach, e.g. `10.80.0.0/24`"),
                );
            }
            Ok(net) => {
                if !networks.contains(&net) {
                    networks.push(net);
                }
            }
            Err(msg) => {
                ok = false;
                sink.at(Some(item.span()), &k, msg);
            }
        }
    }
    if list.get_ref().is_empty() {
        ok = false;
        sink.at(
            Some(list.span()),
            &key("networks"),
            "is empty, so the gateway would lead nowhere; name the internal networks the client should reach, e.g. `networks = [\"10.80.0.0/24\"]`, or remove `gateway`",
        );
    }
    let source = match (
        raw.get_ref().masquerade.unwrap_or(false),
        &raw.get_ref().snat,
    ) {
        (true, Some(s)) => {
            sink.at(
                Some(s.span()),
                &key("snat"),
                "`snat` and `masquerade = true` exclude each other; keep one",
            );
            return None;
        }
        (true, None) => SourceNat::Masquerade,
        (false, None) => SourceNat::Keep,
        (false, Some(s)) => match s.get_ref().parse::<std::net::IpAddr>() {
            Ok(a) if networks.iter().all(|n| n.addr().is_ipv4() == a.is_ipv4()) => SourceNat::To(a),
            Ok(a) => {
                sink.at(
                    Some(s.span()),
                    &key("snat"),
                    format!("`snat = \"{a}\"` is not of the family of every gateway network; give the networks of one family only, or use `masquerade = true`"),
                );
                return None;
            }
            Err(_) => {
                sink.at(
                    Some(s.span()),
                    &key("snat"),
                    format!(
                        "`{}` is not an IP address; write the address forwarded flows leave with, e.g. `snat = \"10.80.0.1\"`",
                        s.get_ref()
                    ),
                );
                return None;
            }
        },
    };
    ok.then_some(Gateway { networks, source })
}
