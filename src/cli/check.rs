//! `nfknock check`: validate a server config and print every problem with file, line and key.

use std::path::Path;

use super::{EXIT_FAIL, EXIT_OK};
use crate::access;
use crate::config;

pub(super) fn check(path: &Path) -> anyhow::Result<i32> {
    match config::load(path, &crate::sys::FsLoader, &crate::sys::SystemAccounts) {
        Ok(c) => {
            for w in config::warnings(&c) {
                eprintln!("warning: {w}");
            }
            for w in forwarding_warnings(&c, |p| std::fs::read_to_string(p).ok()) {
                eprintln!("warning: {w}");
            }
            // The ipset backend installs no gate: say where the grants go and what to load.
            let backend = match c.server.backend {
                config::Backend::Nftables => String::new(),
                config::Backend::Ipset => format!(
                    ", grants in ipsets `{}` and `{}`: gate them with `nfknock ruleset --iptables` and `--ip6tables`",
                    c.server.ipset.v4, c.server.ipset.v6
                ),
            };
            println!(
                "{}: OK ({} client{}, port {}, protecting {}{backend})",
                path.display(),
                c.clients.len(),
                if c.clients.len() == 1 { "" } else { "s" },
                c.server.port,
                access::format_list(&c.server.protect)
            );
            Ok(EXIT_OK)
        }
        Err(errors) => {
            for p in &errors.0 {
                eprintln!("{p}");
            }
            eprintln!(
                "{} problem{} found",
                errors.0.len(),
                if errors.0.len() == 1 { "" } else { "s" }
            );
            Ok(EXIT_FAIL)
        }
    }
}

/// The sysctls a NAT grant to another host needs: the kernel forwards nothing while they are
/// 0, and nfknock changes no sysctl (issue 10 §1).
const IP_FORWARD: [(&str, bool); 2] = [
    ("/proc/sys/net/ipv4/ip_forward", false),
    ("/proc/sys/net/ipv6/conf/all/forwarding", true),
];

/// Warnings for `nat` entries that forward to another host, and `gateway` networks, while this
/// host does not forward that family; `read` reads a `/proc/sys` file (`None`: unreadable,
/// said so too).
fn forwarding_warnings(c: &config::Config, read: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, v6) in IP_FORWARD {
        let nat = c.clients.iter().find_map(|cl| {
            cl.nat
                .iter()
                .find(|r| matches!(r.to, config::NatTo::Host(t) if t.is_ipv6() == v6))
                .map(|r| {
                    (
                        cl.name.as_str(),
                        format!("forwards {} to {}", r.access, r.to),
                    )
                })
        });
        let gateway = || {
            c.clients.iter().find_map(|cl| {
                let g = cl.gateway.as_ref()?;
                let net = g.networks.iter().find(|n| n.addr().is_ipv6() == v6)?;
                Some((cl.name.as_str(), format!("is a gateway to {net}")))
            })
        };
        let Some((client, what)) = nat.or_else(gateway) else {
            continue;
        };
        let key = if v6 {
            "net.ipv6.conf.all.forwarding"
        } else {
            "net.ipv4.ip_forward"
        };
        match read(path).as_deref().map(str::trim) {
            Some("1") => {}
            Some(v) => out.push(format!(
                "client `{client}` {what} but {path} is {v}: the kernel forwards nothing, so NAT and gateway grants open nothing; run `sysctl -w {key}=1` and make it permanent in /etc/sysctl.d/ (nfknock changes no sysctl)"
            )),
            None => out.push(format!(
                "client `{client}` {what} but {path} cannot be read; make sure `{key} = 1`"
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(nat: &str) -> config::Config {
        let text = format!(
            "[server]\n[[client]]\nname = \"a\"\nkey = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"\nallow = [\"tcp/2222\"]\nnat = {nat}\n"
        );
        config::parse_str(&text, Path::new("/etc/nfknock/nfknock.toml")).unwrap()
    }

    #[test]
    fn nat_to_another_host_needs_forwarding_of_its_family() {
        let v4 = config("[{ port = \"tcp/2222\", to = \"192.168.10.2:22\" }]");
        let off = |p: &str| Some(if p.contains("ipv4") { "0\n" } else { "1\n" }.to_string());
        let w = forwarding_warnings(&v4, off);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("client `a` forwards tcp/2222 to 192.168.10.2:22 but /proc/sys/net/ipv4/ip_forward is 0")
                && w[0].contains("sysctl -w net.ipv4.ip_forward=1"),
            "{}",
            w[0]
        );
        assert!(forwarding_warnings(&v4, |_| Some("1\n".into())).is_empty());
        assert!(forwarding_warnings(&v4, |_| None)[0].contains("cannot be read"));
        let v6 = config("[{ port = \"tcp/2222\", to = \"[fd10::2]:22\" }]");
        let w = forwarding_warnings(&v6, off);
        assert!(w.is_empty(), "IPv6 forwarding is on: {w:?}");
        let w = forwarding_warnings(&v6, |_| Some("0".into()));
        assert!(w[0].contains("net.ipv6.conf.all.forwarding"), "{w:?}");
        // Local NAT forwards nothing.
        let local = config("[{ port = \"tcp/2222\", to = \":22\" }]");
        assert!(forwarding_warnings(&local, |_| Some("0".into())).is_empty());
    }

    /// A gateway (fwknop FORWARD_ALL) needs forwarding of each family it has networks of.
    #[test]
    fn a_gateway_needs_forwarding_of_its_networks_families() {
        let text = "[server]\n[[client]]\nname = \"a\"\nkey = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"\nallow = [\"tcp/2222\"]\ngateway = { networks = [\"10.80.0.0/24\"] }\n";
        let c = config::parse_str(text, Path::new("/etc/nfknock/nfknock.toml")).unwrap();
        let w = forwarding_warnings(&c, |_| Some("0\n".into()));
        assert_eq!(w.len(), 1, "only IPv4 networks: {w:?}");
        assert!(
            w[0].contains(
                "client `a` is a gateway to 10.80.0.0/24 but /proc/sys/net/ipv4/ip_forward is 0"
            ) && w[0].contains("sysctl -w net.ipv4.ip_forward=1"),
            "{}",
            w[0]
        );
        assert!(forwarding_warnings(&c, |_| Some("1".into())).is_empty());
    }
}
