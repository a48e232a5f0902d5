//! Stage 1: TOML text → raw serde structs (`deny_unknown_fields`), with byte spans kept so
//! stage 2 can name a line for every problem.
//!
//! serde stops at the first error of a struct. To report *every* problem, each table is
//! deserialized whole first and, only if that fails, key by key (all raw fields are optional,
//! so a one-key table is a valid struct unless that key is bad). Nested tables (`[client.fwknop]`,
//! `[server.NAME]`) are taken out first and checked with their own raw type.
//!
//! Nothing here panics on input: the TOML parser is the `toml` crate's recoverable one, spans
//! are only used to count newlines in a bounds-checked prefix.

use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};
use toml::Spanned;
use zeroize::Zeroizing;

use super::Problem;

/// Byte range in the config text.
pub(crate) type Span = Range<usize>;

/// One `key = value` entry of a parsed table.
pub(crate) type Entry<'i> = (Spanned<DeString<'i>>, Spanned<DeValue<'i>>);

/// Collects problems while the text is checked; turns byte spans into 1-based lines.
pub(crate) struct Sink<'t> {
    text: &'t str,
    path: &'t Path,
    pub(crate) problems: Vec<Problem>,
    /// The last `(offset, line)` answered by [`Sink::line`]: problems come mostly in file
    /// order, so counting on from there keeps many problems linear in the text size (counting
    /// from the start each time was quadratic; found by `fuzz/` config_server).
    last_line: std::cell::Cell<(usize, usize)>,
}

/// At most this many TOML syntax errors are reported, then one line saying how many more. After
/// the first error the parser's recovery is guesswork anyway, and random text has an error
/// every few bytes: reporting all of them made the problem list (and `nfknock check`'s output)
/// about 14 times the size of the file.
pub(crate) const MAX_SYNTAX_ERRORS: usize = 20;

impl<'t> Sink<'t> {
    pub(crate) fn new(text: &'t str, path: &'t Path) -> Sink<'t> {
        Sink {
            text,
            path,
            problems: Vec::new(),
            last_line: std::cell::Cell::new((0, 1)),
        }
    }

    /// 1-based line of a byte offset (offsets past the end count as the last line).
    pub(crate) fn line(&self, offset: usize) -> usize {
        let bytes = self.text.as_bytes();
        let end = offset.min(bytes.len());
        let (from, base) = match self.last_line.get() {
            (at, line) if at <= end => (at, line),
            _ => (0, 1),
        };
        let line = base
            + bytes
                .get(from..end)
                .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        self.last_line.set((end, line));
        line
    }

    /// Record a problem at a span (its first line) and a dotted key.
    pub(crate) fn at(&mut self, span: Option<Span>, key: &str, message: impl Into<String>) {
        let line = span.map(|s| self.line(s.start));
        self.problems.push(Problem {
            path: self.path.to_path_buf(),
            line,
            key: (!key.is_empty()).then(|| key.to_string()),
            message: message.into(),
        });
    }

    /// Problems sorted by line (problems without a line first), stable otherwise.
    pub(crate) fn into_problems(mut self) -> Vec<Problem> {
        self.problems.sort_by_key(|p| p.line.unwrap_or(0));
        self.problems
    }
}

/// Join a dotted key.
pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Parse the document. Syntax errors are reported (the first [`MAX_SYNTAX_ERRORS`]; the parser
/// recovers) and end the check: the structure after a syntax error is not reliable enough to
/// judge.
pub(crate) fn parse_document<'i>(
    sink: &mut Sink<'_>,
    text: &'i str,
) -> Option<Spanned<DeTable<'i>>> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if errors.is_empty() {
        return Some(doc);
    }
    let total = errors.len();
    let mut errors = errors.into_iter();
    for e in errors.by_ref().take(MAX_SYNTAX_ERRORS) {
        sink.at(
            e.span(),
            "",
            format!("TOML syntax error: {}; fix the syntax on this line (quote strings, one `key = value` per line)", e.message()),
        );
    }
    if let Some(next) = errors.next() {
        sink.at(
            next.span(),
            "",
            format!(
                "{} more TOML syntax errors from this line on are not shown; fix the ones above first",
                total - MAX_SYNTAX_ERRORS
            ),
        );
    }
    None
}

/// A table deserialized into its raw struct.
pub(crate) struct Section<'i, T> {
    pub(crate) raw: T,
    /// Span of the table (for "missing key" problems).
    pub(crate) span: Span,
    /// The entries named in `nested`, handed back untouched.
    pub(crate) nested: Vec<Entry<'i>>,
    /// Keys that were present but refused in stage 1 (stage 2 must not also call them missing).
    pub(crate) failed: Vec<String>,
}

impl<T> Section<'_, T> {
    pub(crate) fn failed(&self, key: &str) -> bool {
        self.failed.iter().any(|k| k == key)
    }
}

/// What a section is, for messages and hints.
pub(crate) struct Shape {
    /// How a person writes it, e.g. "[server]", "[[client]]".
    pub(crate) header: &'static str,
    /// Keys taken out before deserializing (nested tables checked separately).
    pub(crate) nested: &'static [&'static str],
    /// A short "what it should be" for a key, appended to type errors.
    pub(crate) hint: fn(&str) -> Option<&'static str>,
}

/// Deserialize one table into `T`, reporting every failing key, not just the first.
pub(crate) fn section<'i, T: DeserializeOwned + Default>(
    sink: &mut Sink<'_>,
    value: Spanned<DeValue<'i>>,
    key: &str,
    shape: &Shape,
) -> Option<Section<'i, T>> {
    let span = value.span();
    let table = match value.into_inner() {
        DeValue::Table(t) => t,
        other => {
            sink.at(
                Some(span),
                key,
                format!(
                    "must be a table, found {}; write it as a `{}` section",
                    other.type_str(),
                    shape.header
                ),
            );
            return None;
        }
    };

    let mut rest = DeTable::new();
    let mut nested = Vec::new();
    for (k, v) in table {
        if shape.nested.contains(&k.get_ref().as_ref()) {
            nested.push((k, v));
        } else {
            rest.insert(k, v);
        }
    }

    if let Ok(raw) = from_table::<T>(rest.clone(), span.clone()) {
        return Some(Section {
            raw,
            span,
            nested,
            failed: Vec::new(),
        });
    }

    // Something is wrong: find every bad key by trying each one alone.
    let mut good = DeTable::new();
    let mut failed = Vec::new();
    for (k, v) in rest {
        let mut one = DeTable::new();
        let name = k.get_ref().to_string();
        let key_span = k.span();
        one.insert(k.clone(), v.clone());
        match from_table::<T>(one, span.clone()) {
            Ok(_) => {
                good.insert(k, v);
            }
            Err(e) => {
                let message = explain(e.message(), &name, shape);
                sink.at(e.span().or(Some(key_span)), &join(key, &name), message);
                failed.push(name);
            }
        }
    }
    // Every remaining key deserialized alone; together they can only fail if serde's derive
    // disagrees with itself. Report rather than assume.
    match from_table::<T>(good, span.clone()) {
        Ok(raw) => Some(Section {
            raw,
            span,
            nested,
            failed,
        }),
        Err(e) => {
            sink.at(e.span().or(Some(span)), key, e.message().to_string());
            None
        }
    }
}

fn from_table<T: DeserializeOwned>(table: DeTable<'_>, span: Span) -> Result<T, toml::de::Error> {
    T::deserialize(ValueDeserializer::from(Spanned::new(
        span,
        DeValue::Table(table),
    )))
}

/// Turn serde's message into one that says what to do.
fn explain(message: &str, key: &str, shape: &Shape) -> String {
    if message.starts_with("unknown field") {
        // serde's text already lists the valid keys: "unknown field `x`, expected one of ...".
        return format!(
            "{message}; remove it or correct the spelling (in `{}`)",
            shape.header
        );
    }
    // serde names Rust types; a person reading a config thinks in TOML's.
    let message = message
        .replace("expected i64", "expected an integer")
        .replace("expected a boolean", "expected `true` or `false`");
    if message.starts_with("unknown variant") {
        // serde's text already lists the valid values.
        return message;
    }
    match (shape.hint)(key) {
        Some(hint) => format!("{message}; `{key}` must be {hint}"),
        None => message,
    }
}

/// Secret text from the config (an inline key): zeroized when dropped.
#[derive(Default)]
pub(crate) struct SecretText(pub(crate) Zeroizing<String>);

impl<'de> serde::Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SecretText, D::Error> {
        String::deserialize(d).map(|s| SecretText(Zeroizing::new(s)))
    }
}

/// A list of strings, each with its own span.
pub(crate) type SpannedList = Spanned<Vec<Spanned<String>>>;

/// `[server] queue`: a number, or a range of queues as text (`"0-3"`).
#[derive(serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum QueueValue {
    Number(i64),
    Text(String),
}

/// `[server]`.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) port: Option<Spanned<i64>>,
    pub(crate) queue: Option<Spanned<QueueValue>>,
    pub(crate) state_dir: Option<Spanned<String>>,
    pub(crate) protect: Option<SpannedList>,
    pub(crate) max_age: Option<Spanned<i64>>,
    pub(crate) manage_ruleset: Option<bool>,
    pub(crate) gate_forward: Option<bool>,
    pub(crate) revoke_on_reload: Option<bool>,
    pub(crate) prefilter: Option<bool>,
    pub(crate) rate_limit: Option<Spanned<i64>>,
    pub(crate) rate_limit_v4_prefix: Option<Spanned<i64>>,
    pub(crate) rate_limit_v6_prefix: Option<Spanned<i64>>,
    pub(crate) backend: Option<super::Backend>,
    pub(crate) ipset_v4: Option<Spanned<String>>,
    pub(crate) ipset_v6: Option<Spanned<String>>,
    pub(crate) user: Option<Spanned<String>>,
    /// Commands running at once in the command runner (`crate::command`).
    pub(crate) max_commands: Option<Spanned<i64>>,
    pub(crate) metrics_file: Option<Spanned<String>>,
}

/// `[[client]]`. `fwknop` is taken out before deserializing (see [`Shape::nested`]); the field
/// is here so the list of valid keys in an "unknown field" message names it.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) key: Option<Spanned<SecretText>>,
    pub(crate) key_file: Option<Spanned<String>>,
    #[allow(dead_code)]
    pub(crate) fwknop: Option<serde::de::IgnoredAny>,
    pub(crate) allow: Option<SpannedList>,
    pub(crate) deny: Option<SpannedList>,
    pub(crate) timeout: Option<Spanned<i64>>,
    pub(crate) max_timeout: Option<Spanned<i64>>,
    pub(crate) sources: Option<SpannedList>,
    pub(crate) destinations: Option<SpannedList>,
    pub(crate) require_source_match: Option<bool>,
    pub(crate) require_username: Option<Spanned<String>>,
    /// A string `"YYYY-MM-DD"` or a bare TOML date.
    pub(crate) expires: Option<Spanned<toml::Value>>,
    pub(crate) expires_at: Option<Spanned<i64>>,
    /// Command cycles and command messages (`crate::command`).
    pub(crate) grant: Option<Spanned<crate::command::GrantMode>>,
    pub(crate) on_grant: Option<SpannedList>,
    pub(crate) on_expire: Option<SpannedList>,
    pub(crate) command_user: Option<Spanned<String>>,
    pub(crate) command_timeout: Option<Spanned<i64>>,
    pub(crate) command_net_admin: Option<bool>,
    pub(crate) commands: Option<Spanned<Vec<Vec<String>>>>,
    pub(crate) command_prefixes: Option<Spanned<Vec<Vec<String>>>>,
    pub(crate) command_sudo_user: Option<Spanned<String>>,
    pub(crate) command_sudo_group: Option<Spanned<String>>,
    pub(crate) nat: Option<Spanned<Vec<super::server::RawNat>>>,
    pub(crate) gateway: Option<Spanned<super::server::RawGateway>>,
}

/// `[client.fwknop]`.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFwknop {
    pub(crate) key_base64: Option<Spanned<SecretText>>,
    pub(crate) key: Option<Spanned<SecretText>>,
    pub(crate) key_file: Option<Spanned<String>>,
    pub(crate) hmac_key_base64: Option<Spanned<SecretText>>,
    pub(crate) hmac_key: Option<Spanned<SecretText>>,
    pub(crate) hmac_key_file: Option<Spanned<String>>,
    pub(crate) hmac: Option<Spanned<crate::wire::fwknop::HmacType>>,
    pub(crate) mode: Option<Spanned<crate::wire::fwknop::EncMode>>,
    pub(crate) no_hmac: Option<bool>,
}

/// The top level of a server config; both keys are taken out and checked on their own.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct RawServerDocument {
    server: Option<serde::de::IgnoredAny>,
    client: Option<serde::de::IgnoredAny>,
}

/// The top level of a client config.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct RawClientDocument {
    default: Option<serde::de::IgnoredAny>,
    server: Option<serde::de::IgnoredAny>,
}

/// `[default]` and each `[server.NAME]` of a client config.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProfile {
    pub(crate) server: Option<Spanned<String>>,
    pub(crate) port: Option<Spanned<i64>>,
    pub(crate) key: Option<Spanned<SecretText>>,
    pub(crate) key_file: Option<Spanned<String>>,
    pub(crate) access: Option<SpannedList>,
    pub(crate) timeout: Option<Spanned<i64>>,
    pub(crate) allow_ip: Option<Spanned<String>>,
    // `format = "fwknop"` stanzas (knock_profile.rs): the fwknop packet's settings.
    pub(crate) format: Option<Spanned<String>>,
    pub(crate) hmac_key: Option<Spanned<SecretText>>,
    pub(crate) hmac_key_file: Option<Spanned<String>>,
    pub(crate) hmac: Option<Spanned<crate::wire::fwknop::HmacType>>,
    pub(crate) digest: Option<Spanned<crate::wire::fwknop::DigestType>>,
    pub(crate) mode: Option<Spanned<crate::wire::fwknop::EncMode>>,
    pub(crate) user: Option<Spanned<String>>,
}
