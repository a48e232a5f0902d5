//! The `:`-separated fields of a decrypted SPA message (FWKNOP-WIRE.md §2), parsed with every
//! limit libfko's decoder applies (`lib/fko_decode.c`, `lib/fko_util.c`), and built for the
//! encoder.
//!
//! The input has already passed the HMAC and the inner digest, but it is still hostile (fwknop
//! CVE-2012-4434/4435 were overflows in exactly this code): every field is length-checked
//! before it is decoded into a fixed buffer, and nothing panics. Where libfko accepts shapes its
//! clients never produce (a NUL or control byte inside a decoded field, an empty NAT host, an
//! empty trailing field, signs or spaces in numbers), we refuse them; the doc of each check says so.

use std::net::Ipv4Addr;

use super::b64;
use super::{FwknopError, SealRequest, SpaMessage};
use crate::access::{Access, Proto};

/// `FKO_RAND_VAL_SIZE` (lib/fko_limits.h).
pub(super) const RAND_LEN: usize = 16;
/// `MAX_SPA_USERNAME_SIZE`: limit of the *base64* username field.
const MAX_USERNAME_B64: usize = 64;
/// The longest user name that fits that field: 48 bytes.
pub const MAX_USERNAME_LEN: usize = b64::decoded_len(MAX_USERNAME_B64);
/// `MAX_SPA_TIMESTAMP_SIZE`.
const MAX_TIMESTAMP_LEN: usize = 12;
/// `MAX_SPA_VERSION_SIZE`.
const MAX_VERSION_LEN: usize = 8;
/// `MAX_SPA_MESSAGE_TYPE_SIZE`.
const MAX_MSG_TYPE_LEN: usize = 2;
/// `MAX_SPA_MESSAGE_SIZE`: limit of the base64 message, NAT and server-auth fields, and of the
/// client-timeout field.
const MAX_FIELD_B64: usize = 256;
/// Raw bytes a `MAX_FIELD_B64`-character field decodes to.
const MAX_FIELD_RAW: usize = b64::decoded_len(MAX_FIELD_B64);
/// `MAX_HOSTNAME_LEN` (lib/fko_limits.h): NAT host.
const MAX_HOSTNAME_LEN: usize = 70;
/// `MAX_PORT_STR_LEN`.
const MAX_PORT_DIGITS: usize = 5;
/// Client timeout upper bound: `2 << 15` in `parse_client_timeout()`.
pub const MAX_CLIENT_TIMEOUT: u32 = 65536;
/// Fields before the digest: rand, user, timestamp, version, type, message and at most three
/// of nat / server_auth / timeout (`MAX_SPA_FIELDS` = 9).
const MAX_FIELDS: usize = 9;
/// `MIN_SPA_FIELDS` minus the digest: rand..message.
const MIN_FIELDS: usize = 6;
/// `MIN_SPA_FIELDS`: at least this many `:` in the whole plaintext (digest included).
pub(super) const MIN_COLONS: usize = 6;
/// `FKO_LAST_MSG_TYPE - 1`.
pub(super) const MAX_MSG_TYPE: u8 = 6;

/// Message types that carry a NAT access field (`FKO_*NAT_ACCESS_MSG`).
pub(super) fn has_nat(msg_type: u8) -> bool {
    matches!(msg_type, 2 | 4 | 5 | 6)
}

/// Message types that carry a client timeout (`FKO_CLIENT_TIMEOUT_*`).
pub(super) fn has_timeout(msg_type: u8) -> bool {
    matches!(msg_type, 3 | 4 | 6)
}

fn bad(reason: &'static str) -> FwknopError {
    FwknopError::Malformed(reason)
}

/// Parse the encoded message (the plaintext without `:digest`).
pub(super) fn parse(encoded: &str) -> Result<SpaMessage, FwknopError> {
    let mut f: [&str; MAX_FIELDS] = [""; MAX_FIELDS];
    let mut n = 0;
    for part in encoded.split(':') {
        let slot = f.get_mut(n).ok_or(bad("too many fields"))?;
        *slot = part;
        n += 1;
    }
    if n < MIN_FIELDS {
        return Err(bad("too few fields"));
    }
    let [rand, user, ts, version, msg_type, message, ..] = f;
    let rest = f.get(MIN_FIELDS..n).unwrap_or(&[]);
    if rest.iter().any(|s| s.is_empty()) {
        // libfko skips an empty server-auth field; its clients never write one.
        return Err(bad("empty field"));
    }

    if rand.len() != RAND_LEN || !all_digits(rand) {
        return Err(bad("random value is not 16 digits"));
    }
    let username = parse_username(user)?;
    let timestamp = parse_timestamp(ts)?;
    if version.is_empty() || version.len() > MAX_VERSION_LEN {
        return Err(bad("version field length"));
    }
    let message_type = parse_msg_type(msg_type)?;

    // `parse_msg_type()` limits the field count per type: NAT and timeout fields exactly when
    // the type says so, plus at most one optional server-auth field.
    let required = usize::from(has_nat(message_type)) + usize::from(has_timeout(message_type));
    if rest.len() < required || rest.len() > required + 1 {
        return Err(bad("wrong number of fields for the message type"));
    }

    let mut raw = [0u8; MAX_FIELD_RAW];
    let message = decode_field(
        message,
        &mut raw,
        "message field length",
        "message is not base64",
    )?;
    let (allow_ip, access) = if message_type == 0 {
        (validate_command(message)?, Vec::new())
    } else {
        validate_access(message)?
    };
    let message = String::from(message);

    let mut rest = rest.iter();
    let nat_access = if has_nat(message_type) {
        let field = rest.next().copied().unwrap_or("");
        let nat = decode_field(
            field,
            &mut raw,
            "NAT field length",
            "NAT field is not base64",
        )?;
        parse_nat(nat)?;
        Some(String::from(nat))
    } else {
        None
    };
    let server_auth = if rest.len() > usize::from(has_timeout(message_type)) {
        let field = rest.next().copied().unwrap_or("");
        if field.len() > MAX_FIELD_B64 {
            return Err(bad("server-auth field length"));
        }
        let len = b64::decode_into(&[field.as_bytes()], &mut raw)
            .ok_or(bad("server-auth field is not base64"))?;
        // Only logged by fwknopd, never acted on (§11.14): keep it lossily.
        Some(String::from_utf8_lossy(raw.get(..len).unwrap_or(&[])).into_owned())
    } else {
        None
    };
    let client_timeout = if has_timeout(message_type) {
        parse_client_timeout(rest.next().copied().unwrap_or(""))?
    } else {
        0
    };

    Ok(SpaMessage {
        rand_value: String::from(rand),
        username,
        timestamp,
        version: String::from(version),
        message_type,
        message,
        allow_ip,
        access,
        nat_access,
        server_auth,
        client_timeout,
    })
}

/// Decode a base64 field of at most 256 characters into `raw` and return it as text without
/// control characters.
///
/// libfko treats the result as a C string; we refuse a decoded NUL (or any other control byte)
/// rather than silently cutting the field there.
fn decode_field<'a>(
    field: &str,
    raw: &'a mut [u8; MAX_FIELD_RAW],
    len_reason: &'static str,
    b64_reason: &'static str,
) -> Result<&'a str, FwknopError> {
    if field.is_empty() || field.len() > MAX_FIELD_B64 {
        return Err(bad(len_reason));
    }
    let len = b64::decode_into(&[field.as_bytes()], raw).ok_or(bad(b64_reason))?;
    let bytes = raw.get(..len).unwrap_or(&[]);
    let text = std::str::from_utf8(bytes).map_err(|_| bad("field is not UTF-8"))?;
    if text.chars().any(char::is_control) {
        return Err(bad("control character in a field"));
    }
    if text.is_empty() {
        return Err(bad(len_reason));
    }
    Ok(text)
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// `validate_username()` (lib/fko_util.c): non-empty; each byte alphanumeric, or printable
/// ASCII other than `" / \ [ ] : ; | = , + * ? < >`.
pub fn valid_username(name: &[u8]) -> bool {
    !name.is_empty()
        && name.iter().all(|&c| {
            c.is_ascii_alphanumeric()
                || ((0x20..=0x7e).contains(&c) && !b"\"/\\[]:;|=,+*?<>".contains(&c))
        })
}

fn parse_username(field: &str) -> Result<String, FwknopError> {
    if field.is_empty() || field.len() > MAX_USERNAME_B64 {
        return Err(bad("username field length"));
    }
    let mut raw = [0u8; b64::decoded_len(MAX_USERNAME_B64)];
    let len =
        b64::decode_into(&[field.as_bytes()], &mut raw).ok_or(bad("username is not base64"))?;
    let name = raw.get(..len).unwrap_or(&[]);
    if !valid_username(name) {
        return Err(bad("invalid username"));
    }
    // valid_username admits ASCII only.
    String::from_utf8(name.to_vec()).map_err(|_| bad("invalid username"))
}

/// 1..12 ASCII digits, as u64 (fwknopd parses into an int and breaks in 2038; we do not).
/// libfko's `strtol` would also take a sign or leading blanks; no client writes those.
fn parse_timestamp(field: &str) -> Result<u64, FwknopError> {
    if field.is_empty() || field.len() > MAX_TIMESTAMP_LEN || !all_digits(field) {
        return Err(bad("timestamp is not 1 to 12 digits"));
    }
    field
        .parse()
        .map_err(|_| bad("timestamp is not 1 to 12 digits"))
}

fn parse_msg_type(field: &str) -> Result<u8, FwknopError> {
    if field.is_empty() || field.len() > MAX_MSG_TYPE_LEN || !all_digits(field) {
        return Err(bad("message type is not a number"));
    }
    let t: u8 = field
        .parse()
        .map_err(|_| bad("message type is not a number"))?;
    if t > MAX_MSG_TYPE {
        return Err(bad("unknown message type"));
    }
    Ok(t)
}

/// Client timeout: digits only, at most 256 of them, value 0..=65536 (`parse_client_timeout`).
fn parse_client_timeout(field: &str) -> Result<u32, FwknopError> {
    if field.is_empty() || field.len() > MAX_FIELD_B64 || !all_digits(field) {
        return Err(bad("client timeout is not a number"));
    }
    let mut v: u32 = 0;
    for d in field.bytes() {
        v = v * 10 + u32::from(d - b'0');
        if v > MAX_CLIENT_TIMEOUT {
            return Err(bad("client timeout above 65536"));
        }
    }
    Ok(v)
}

/// Strict dotted quad: four decimal octets 0..=255 without leading zeros.
///
/// libfko's `have_allow_ip()` ends in `inet_aton()`, which reads `010.1.2.3` as octal
/// (8.1.2.3); no client writes that, and refusing it avoids opening a surprising address.
pub(super) fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    if s.len() < 7 || s.len() > 15 {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in octets.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !all_digits(p) || (p.len() > 1 && p.starts_with('0')) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// `have_port()`: 1..5 digits up to the end, value 1..=65535. Leading zeros are accepted as
/// libfko's `strtol` does (`tcp/022` is port 22).
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > MAX_PORT_DIGITS || !all_digits(s) {
        return None;
    }
    let v: u32 = s.parse().ok()?;
    u16::try_from(v).ok().filter(|&p| p != 0)
}

/// `validate_proto_port_spec()`: `tcp/PORT` or `udp/PORT`, lowercase (the `/` must sit at
/// index 3, which rules out `icmp` and `none` although they are string-matched).
fn parse_spec(s: &str) -> Option<Access> {
    let (proto, port) = s.split_once('/')?;
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return None,
    };
    Access::new(proto, parse_port(port)?)
}

/// `validate_access_msg()`: `allow_ip,spec[,spec...]`.
fn validate_access(msg: &str) -> Result<(Ipv4Addr, Vec<Access>), FwknopError> {
    let (ip, specs) = msg
        .split_once(',')
        .ok_or(bad("access message without a port"))?;
    let ip = parse_ipv4(ip).ok_or(bad("invalid allow IP"))?;
    let mut access = Vec::new();
    for spec in specs.split(',') {
        access.push(parse_spec(spec).ok_or(bad("invalid proto/port in access message"))?);
    }
    Ok((ip, access))
}

/// `validate_cmd_msg()`: `allow_ip,<command>` with a non-empty command.
fn validate_command(msg: &str) -> Result<Ipv4Addr, FwknopError> {
    let (ip, cmd) = msg
        .split_once(',')
        .ok_or(bad("command message without a command"))?;
    let ip = parse_ipv4(ip).ok_or(bad("invalid allow IP"))?;
    if cmd.is_empty() {
        return Err(bad("command message without a command"));
    }
    Ok(ip)
}

/// `validate_nat_access_msg()`: `host,port` with exactly one comma, host at most 70 characters
/// without ` / ? " ' \`, port 1..=65535. We also refuse an empty host and non-ASCII.
pub(super) fn parse_nat(s: &str) -> Result<(&str, u16), FwknopError> {
    let (host, port) = s.split_once(',').ok_or(bad("NAT access without a port"))?;
    if port.contains(',') {
        return Err(bad("NAT access with more than one comma"));
    }
    if host.is_empty()
        || host.len() > MAX_HOSTNAME_LEN
        || !host
            .bytes()
            .all(|c| c.is_ascii_graphic() && !b"/?\"'\\".contains(&c))
    {
        return Err(bad("invalid NAT host"));
    }
    let port = parse_port(port).ok_or(bad("invalid NAT port"))?;
    Ok((host, port))
}

/// Build the encoded message (without digest) for the encoder, in libfko's field order
/// (`fko_encode_spa_data()`), and check it with [`parse`] so that `seal` never writes what
/// `open` would refuse.
pub(super) fn build(req: &SealRequest, rand_value: &str) -> Result<String, FwknopError> {
    let t = req.message_type;
    if t > MAX_MSG_TYPE {
        return Err(bad("unknown message type"));
    }
    if has_nat(t) != req.nat_access.is_some() {
        return Err(bad(
            "NAT access is required exactly for message types 2, 4, 5 and 6",
        ));
    }
    if !has_timeout(t) && req.client_timeout != 0 {
        return Err(bad("a client timeout needs message type 3, 4 or 6"));
    }
    if !valid_username(req.username.as_bytes()) {
        return Err(bad("invalid username"));
    }
    let mut s = String::with_capacity(256);
    s.push_str(rand_value);
    s.push(':');
    s.push_str(&b64::encode_string(req.username.as_bytes()));
    s.push(':');
    s.push_str(&req.timestamp.to_string());
    s.push(':');
    s.push_str(&req.version);
    s.push(':');
    s.push_str(&t.to_string());
    s.push(':');
    s.push_str(&b64::encode_string(req.message.as_bytes()));
    if let Some(nat) = &req.nat_access {
        s.push(':');
        s.push_str(&b64::encode_string(nat.as_bytes()));
    }
    if let Some(auth) = &req.server_auth {
        s.push(':');
        s.push_str(&b64::encode_string(auth.as_bytes()));
    }
    if has_timeout(t) {
        s.push(':');
        s.push_str(&req.client_timeout.to_string());
    }
    let back = parse(&s)?;
    if back.username != req.username || back.message != req.message {
        // e.g. a username longer than 48 bytes would have been refused above; anything that
        // does not survive the round trip is a caller error.
        return Err(bad("request does not survive encoding"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
