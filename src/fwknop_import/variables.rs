//! The access.conf variables the import maps ([`MAPPED`]), and what it does with each of the
//! others: warn, warn only when it says yes, or refuse the stanza ([`unmapped`]).

/// What to do instead of GnuPG SPA, for every message about a GnuPG setting.
pub(super) const GPG_ADVICE: &str = "GnuPG SPA is not supported; issue Rijndael+HMAC keys with `fwknop --key-gen` and give them to this client";

/// What the import does with a variable it does not map.
pub(super) enum Unmapped {
    /// Warn whenever it is present.
    Always(&'static str),
    /// Warn only when it says yes (`N` is what nfknock does anyway).
    IfYes(&'static str),
    /// The stanza cannot be converted when it is present (and says yes, for booleans).
    Refuse(&'static str),
    RefuseIfYes(&'static str),
}

/// The import's answer for an unmapped variable; `None` for one fwknopd does not know either.
pub(super) fn unmapped(var: &str) -> Option<Unmapped> {
    use Unmapped::*;
    Some(match var {
        "FORCE_NAT" => Refuse("DNAT to an internal host is not supported: nfknock only opens ports on this host and gates ports you publish yourself; publish the service with your own nft DNAT rule, set `[server] gate_forward = true`, and add this client by hand with the published port in `allow`"),
        "FORWARD_ALL" => RefuseIfYes("SPA gateway mode (forward everything from the client) is not supported: nfknock grants single proto/ports; list the ports the client needs in a `[[client]]` by hand"),
        "FORCE_SNAT" => Always("only used with FORCE_NAT / FORWARD_ALL, which nfknock does not support; dropped"),
        "FORCE_MASQUERADE" | "DISABLE_DNAT" => IfYes("only used with FORCE_NAT / FORWARD_ALL, which nfknock does not support; dropped"),
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
    // Commands: `super::commands`.
    "CMD_CYCLE_OPEN",
    "CMD_CYCLE_CLOSE",
    "CMD_CYCLE_TIMER",
    "ENABLE_CMD_EXEC",
    "CMD_EXEC_USER",
    "CMD_EXEC_GROUP",
    "CMD_REGEX",
    "ENABLE_CMD_SUDO_EXEC",
    "CMD_SUDO_EXEC_USER",
    "CMD_SUDO_EXEC_GROUP",
];
