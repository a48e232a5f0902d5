//! Issue 10 §1, fwknop `FORWARD_ALL`: a client's `gateway`.

use super::*;
use crate::access::SourceNat;

fn gateway(text: &str) -> String {
    native_client(&format!("gateway = {text}\n"))
}

#[test]
fn a_gateway_names_its_networks_and_how_sources_leave() {
    let ok = plan(&gateway(
        "{ networks = [\"10.80.0.0/24\", \"fd80::/64\", \"10.80.0.0/24\"], masquerade = true }",
    ));
    let g = ok.clients[0].gateway.as_ref().unwrap();
    let nets: Vec<String> = g.networks.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["10.80.0.0/24", "fd80::/64"], "repeats dropped");
    assert_eq!(g.source, SourceNat::Masquerade);
    let ok = plan(&gateway(
        "{ networks = [\"10.80.0.0/24\"], snat = \"10.80.0.1\" }",
    ));
    assert_eq!(
        ok.clients[0].gateway.as_ref().unwrap().source,
        SourceNat::To("10.80.0.1".parse().unwrap())
    );
    let ok = plan(&gateway("{ networks = [\"10.80.0.7\"] }"));
    let g = ok.clients[0].gateway.as_ref().unwrap();
    assert_eq!(g.networks[0].to_string(), "10.80.0.7/32", "a single host");
    assert_eq!(g.source, SourceNat::Keep);
    assert!(plan(&native_client("")).clients[0].gateway.is_none());
}

/// Every mistake names the file's line, the key, and what to write instead.
#[test]
fn bad_gateways_are_refused_with_the_key_line_and_fix() {
    for (text, key, needle) in [
        (
            "{ networks = [\"10.80.0.1/24\"] }",
            "client[1].gateway.networks[1]",
            "has host bits set",
        ),
        (
            "{ networks = [\"internal\"] }",
            "client[1].gateway.networks[1]",
            "neither an address nor a network",
        ),
        (
            "{ networks = [\"0.0.0.0/0\"] }",
            "client[1].gateway.networks[1]",
            "would close all forwarding through this host",
        ),
        (
            "{ networks = [\"10.80.0.0/24\", \"::/0\"] }",
            "client[1].gateway.networks[2]",
            "name the internal networks the client should reach",
        ),
        (
            "{ networks = [] }",
            "client[1].gateway.networks",
            "is empty, so the gateway would lead nowhere",
        ),
        (
            "{ masquerade = true }",
            "client[1].gateway.networks",
            "a gateway needs `networks`",
        ),
        (
            "{ networks = [\"10.80.0.0/24\"], snat = \"x\" }",
            "client[1].gateway.snat",
            "is not an IP address",
        ),
        (
            "{ networks = [\"10.80.0.0/24\", \"fd80::/64\"], snat = \"10.80.0.1\" }",
            "client[1].gateway.snat",
            "not of the family of every gateway network",
        ),
        (
            "{ networks = [\"10.80.0.0/24\"], snat = \"10.80.0.1\", masquerade = true }",
            "client[1].gateway.snat",
            "exclude each other",
        ),
    ] {
        let ps = problems(&gateway(text));
        let p = at(&ps, key);
        assert_eq!(p.line, Some(5), "{text}");
        assert!(p.message.contains(needle), "{text}: {}", p.message);
    }
    let ps = problems(&gateway("{ networks = [\"10.80.0.0/24\"], ports = 1 }"));
    assert!(
        ps.iter()
            .any(|p| p.message.contains("unknown field `ports`")),
        "{ps:?}"
    );
    let ps = problems(&native_client("gateway = \"10.80.0.0/24\"\n"));
    assert!(
        ps.iter().any(|p| p.message.contains("networks = [")),
        "the hint shows a table: {ps:?}"
    );
}

/// The gateway is closed by the forward gate of table `inet nfknock`: not with the ipset
/// backend, not without the forward gate.
#[test]
fn a_gateway_needs_nftables_and_the_forward_gate() {
    let gw = gateway("{ networks = [\"10.80.0.0/24\"] }");
    let ps = problems(&format!("[server]\ngate_forward = false\n{gw}"));
    assert!(at(&ps, "client[1].gateway")
        .message
        .contains("set `gate_forward = true` or remove `gateway`"));
    let ps = problems(&format!(
        "{}grant = \"command\"\non_grant = [\"/bin/true\"]\ncommand_user = \"nobody\"\n",
        gw
    ));
    assert!(
        ps.iter()
            .any(|p| p.key.as_deref() == Some("client[1].gateway")
                && p.message.contains("`grant = \"command\"` writes none")),
        "{ps:?}"
    );
    let ps = problems(&format!(
        "[server]\nbackend = \"ipset\"\ngate_forward = false\n{gw}"
    ));
    assert!(ps.iter().any(|p| p
        .message
        .contains("`gateway` needs `[server] backend = \"nftables\"`")));
}
