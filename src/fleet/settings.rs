//! The relay's own config file (`/etc/nfknock/fleet.toml`), pure: TOML text → validated
//! [`FleetConfig`]. Reads no file (the relay's shell reads it, and the certificate files it
//! names); every problem names the file and the key, and says what to do.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::record::{valid_segment, Layout};
use crate::config::MAX_MAX_TIMEOUT;

/// Default first path segment of every key.
pub const DEFAULT_PREFIX: &str = "nfknock";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    fleet: String,
    host_id: String,
    #[serde(default)]
    prefix: Option<String>,
    endpoints: Vec<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    insecure_lab: bool,
    max_timeout: u32,
}

/// TLS material for etcd: the CA that signed the etcd servers, and this relay's client
/// certificate and key (etcd takes the certificate's CN as the user, whose role limits it to
/// the fleet's prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A validated `fleet.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    pub path: PathBuf,
    pub layout: Layout,
    /// This host's id: the origin of what it publishes, the mark on what it writes for others.
    pub host_id: String,
    /// etcd endpoints, `https://HOST:PORT` (`http://` only with `insecure_lab`).
    pub endpoints: Vec<String>,
    /// `None` only with `insecure_lab = true`.
    pub tls: Option<Tls>,
    /// Longest remote grant this host accepts, seconds.
    pub max_timeout: u32,
}

/// Parse and validate `text` (read from `path`).
pub fn parse(text: &str, path: &Path) -> Result<FleetConfig, String> {
    let at = |key: &str, msg: String| format!("{}: `{key}`: {msg}", path.display());
    let raw: Raw = toml::from_str(text).map_err(|e| {
        format!(
            "{}: {} (see examples/fleet.toml)",
            path.display(),
            e.to_string().trim_end()
        )
    })?;
    let prefix = raw.prefix.as_deref().unwrap_or(DEFAULT_PREFIX);
    let seg = "must be 1 to 64 of A-Z a-z 0-9 . _ -";
    if !valid_segment(prefix) {
        return Err(at("prefix", seg.into()));
    }
    if !valid_segment(&raw.fleet) {
        return Err(at("fleet", seg.into()));
    }
    if !valid_segment(&raw.host_id) {
        return Err(at("host_id", format!("{seg} (e.g. the host name)")));
    }
    let layout = Layout::new(prefix, &raw.fleet).ok_or_else(|| at("fleet", seg.into()))?;
    if raw.endpoints.is_empty() {
        return Err(at(
            "endpoints",
            "list at least one etcd endpoint, e.g. [\"https://10.0.0.1:2379\"]".into(),
        ));
    }
    if raw.max_timeout == 0 || raw.max_timeout > MAX_MAX_TIMEOUT {
        return Err(at(
            "max_timeout",
            format!("must be 1..={MAX_MAX_TIMEOUT} seconds (use the largest max_timeout of this host's clients)"),
        ));
    }
    let tls = match (raw.ca_file, raw.cert_file, raw.key_file) {
        (Some(ca_file), Some(cert_file), Some(key_file)) => Some(Tls {
            ca_file,
            cert_file,
            key_file,
        }),
        (None, None, None) if raw.insecure_lab => None,
        (None, None, None) => {
            return Err(at(
                "ca_file",
                "anyone who can write the fleet's keys opens ports on every host: set ca_file, cert_file and key_file (TLS with a client certificate), or `insecure_lab = true` for a lab".into(),
            ))
        }
        _ => {
            return Err(at(
                "ca_file",
                "set all three of ca_file, cert_file and key_file".into(),
            ))
        }
    };
    for e in &raw.endpoints {
        let ok = match (&tls, e.split_once("://")) {
            (Some(_), Some(("https", rest))) => !rest.is_empty(),
            (None, Some(("http", rest))) => !rest.is_empty(),
            _ => false,
        };
        if !ok {
            let want = if tls.is_some() { "https" } else { "http" };
            return Err(at("endpoints", format!("`{e}` is not {want}://HOST:PORT")));
        }
    }
    Ok(FleetConfig {
        path: path.to_path_buf(),
        layout,
        host_id: raw.host_id,
        endpoints: raw.endpoints,
        tls,
        max_timeout: raw.max_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TLS: &str = r#"
fleet = "prod"
host_id = "bastion-1"
endpoints = ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
ca_file = "/etc/nfknock/fleet/ca.pem"
cert_file = "/etc/nfknock/fleet/client.pem"
key_file = "/etc/nfknock/fleet/client-key.pem"
max_timeout = 3600
"#;

    fn p(text: &str) -> Result<FleetConfig, String> {
        parse(text, Path::new("/etc/nfknock/fleet.toml"))
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let c = p(include_str!("../../examples/fleet.toml")).unwrap();
        assert_eq!(c.layout.fleet_prefix(), "/nfknock/prod/");
        assert!(c.tls.is_some());
    }

    #[test]
    fn a_tls_config_is_accepted() {
        let c = p(TLS).unwrap();
        assert_eq!(c.layout.grants_prefix(), "/nfknock/prod/grants/");
        assert_eq!(c.host_id, "bastion-1");
        assert_eq!(
            c.tls.unwrap().ca_file,
            Path::new("/etc/nfknock/fleet/ca.pem")
        );
    }

    #[test]
    fn without_tls_it_refuses_unless_insecure_lab() {
        let plain = "fleet = \"lab\"\nhost_id = \"a\"\nendpoints = [\"http://10.0.0.1:2379\"]\nmax_timeout = 60\n";
        let e = p(plain).unwrap_err();
        assert!(e.contains("`ca_file`") && e.contains("insecure_lab"), "{e}");
        let c = p(&format!("{plain}insecure_lab = true\n")).unwrap();
        assert!(c.tls.is_none());
        // insecure_lab does not make an https endpoint plain, nor TLS accept http.
        let e = p(&TLS.replace("https://10.0.0.1", "http://10.0.0.1")).unwrap_err();
        assert!(e.contains("`endpoints`") && e.contains("https://"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            (TLS.replace("\"prod\"", "\"../x\""), "`fleet`"),
            (TLS.replace("\"bastion-1\"", "\"a b\""), "`host_id`"),
            (TLS.replace("3600", "0"), "`max_timeout`"),
            (TLS.replace("3600", "999999999"), "`max_timeout`"),
            (
                TLS.replace("key_file = \"/etc/nfknock/fleet/client-key.pem\"", ""),
                "`ca_file`",
            ),
            (format!("{TLS}prefix = \"a/b\"\n"), "`prefix`"),
            (
                TLS.replace(
                    "[\"https://10.0.0.1:2379\", \"https://10.0.0.2:2379\"]",
                    "[]",
                ),
                "`endpoints`",
            ),
        ] {
            let e = p(&text).unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = p(&format!("{TLS}typo = 1\n")).unwrap_err();
        assert!(e.contains("typo"), "{e}");
    }
}
