//! The access.conf variables the import maps ([`MAPPED`]), and what it does with each of the
//! others: warn, or warn only when it says yes ([`unmapped`]).

/// What to do instead of GnuPG SPA, for every message about a GnuPG setting.
pub(super) const GPG_ADVICE: &str = "GnuPG SPA is not supported; issue Rijndael+HMAC keys with `fwknop --key-gen` and give them to this client";

/// What the import does with a variable it does not map.
pub(super) enum Unmapped {
    /// Warn whenever it is present.
    Always(&'static str),
    /// Warn only when it says yes (`N` is what nfknock does anyway).
    IfYes(&'static str),
}

/// The import's answer for an unmapped variable; `None` for one fwknopd does not know either.
pub(super) fn unmapped(var: &str) -> Option<Unmapped> {
    use Unmapped::*;
    const CMD: &str = "only used for command messages (type 0), which nfknock refuses; dropped";
    Some(match var {
        "ENABLE_CMD_EXEC" => IfYes("command messages (type 0) are refused by nfknock, which never runs commands; run them from your own tooling (e.g. over ssh once the port is open)"),
        "ENABLE_CMD_SUDO_EXEC" | "CMD_EXEC_USER" | "CMD_EXEC_GROUP" | "CMD_SUDO_EXEC_USER"
        | "CMD_SUDO_EXEC_GROUP" | "CMD_REGEX" => Always(CMD),
        "CMD_CYCLE_OPEN" => Always("nfknock runs no commands: it adds `source . proto . port` to its own nftables set with a kernel timeout, which is what most CMD_CYCLE nft/ipset scripts emulate; this stanza is imported as a plain grant of its `allow` list, so check that this is what you want"),
        "CMD_CYCLE_CLOSE" => Always("nfknock runs no commands; the kernel removes each grant when its timeout ends"),
        "CMD_CYCLE_TIMER" => Always("nfknock runs no commands; if this was the grant length, set the client's `timeout` to it"),
        _ if var.starts_with("GPG_") => Always(GPG_ADVICE),
        _ => return None,
    })
}

/// Variables the converter maps.
pub(super) const MAPPED: &[&str] = &[
    "SOURCE",
    "DESTINATION",
    "OPEN_PORTS",
    "RESTRICT_PORTS",
    "KEY",
    "KEY_BASE64",
    "HMAC_KEY",
    "HMAC_KEY_BASE64",
    "HMAC_DIGEST_TYPE",
    "ENCRYPTION_MODE",
    "FW_ACCESS_TIMEOUT",
    "MAX_FW_TIMEOUT",
    "REQUIRE_USERNAME",
    "REQUIRE_SOURCE_ADDRESS",
    "REQUIRE_SOURCE",
    "ACCESS_EXPIRE",
    "ACCESS_EXPIRE_EPOCH",
    "FORCE_NAT",
    "FORCE_SNAT",
    "FORCE_MASQUERADE",
    "DISABLE_DNAT",
    "FORWARD_ALL",
];
