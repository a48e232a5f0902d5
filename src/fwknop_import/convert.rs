//! The whole import: a client name for every stanza, each stanza converted, and nfknock's own
//! checker ([`crate::config::parse_str`]) as the judge of each client and of the whole
//! document, so a stanza it would refuse is reported (and left out) here rather than by
//! `nfknock check` later.

use std::path::Path;

use zeroize::Zeroizing;

use super::access_conf::{Origin, Parsed, Stanza};
use super::fwknopd_conf::DaemonSettings;
use super::render::{render_client, render_header, render_server};
use super::stanza::convert_stanza;
use super::{Diag, Import, Level, Options};
use crate::config::valid_name;

/// Decide every stanza's client name: `# name:` if valid and unique, else `fwknop-<n>`.
///
/// Every stanza's fallback name is kept for that stanza, whether it has a `# name:` or not:
/// which stanzas fall back is only known at the end, and a fallback must never equal a name
/// already handed out.
fn names(stanzas: &[Stanza], diags: &mut Vec<Diag>) -> Vec<String> {
    let fallback_of = |st: &Stanza| format!("fwknop-{}", st.index);
    let mut out: Vec<String> = Vec::new();
    for st in stanzas {
        let fallback = fallback_of(st);
        let name = match &st.name {
            None => fallback,
            Some((n, origin)) if !valid_name(n) => {
                diags.push(Diag {
                    level: Level::Warning,
                    origin: Some(origin.clone()),
                    stanza: Some(fallback.clone()),
                    message: format!("`# name: {n}` is not a valid client name (1 to 64 letters, digits and `_.@-`); using `{fallback}`"),
                });
                fallback
            }
            Some((n, origin))
                if out.contains(n)
                    || stanzas
                        .iter()
                        .any(|o| o.index != st.index && fallback_of(o) == *n) =>
            {
                diags.push(Diag {
                    level: Level::Warning,
                    origin: Some(origin.clone()),
                    stanza: Some(fallback.clone()),
                    message: format!("`# name: {n}` is already taken; using `{fallback}`"),
                });
                fallback
            }
            Some((n, _)) => n.clone(),
        };
        out.push(name);
    }
    out
}

/// What `nfknock check` would refuse in `doc`, as errors: about one stanza's client (`judged`:
/// where the stanza starts and the client's name) or about the whole imported config (`None`).
fn judge(doc: &str, judged: Option<(&Origin, &String)>) -> Vec<Diag> {
    let files = crate::config::MemFiles::new();
    let Err(errs) = crate::config::parse(
        doc,
        Path::new("<imported>"),
        &files,
        &crate::config::AnyUser,
    ) else {
        return Vec::new();
    };
    let what = judged.map_or("the imported config is", |_| {
        "the converted client would be"
    });
    errs.0
        .into_iter()
        .map(|p| Diag {
            level: Level::Error,
            origin: judged.map(|(origin, _)| origin.clone()),
            stanza: judged.map(|(_, name)| name.clone()),
            message: format!(
                "{what} refused by `nfknock check`: `{}`: {}",
                p.key.unwrap_or_default(),
                p.message
            ),
        })
        .collect()
}

/// Convert every stanza of `parsed` (with the `[server]` section from `daemon`) and render
/// what converted, in the message order [`Import::diags`] documents.
pub(super) fn convert(parsed: Parsed, daemon: Option<&DaemonSettings>, opts: &Options) -> Import {
    let Parsed { stanzas, mut diags } = parsed;
    if let Some(dm) = daemon {
        diags.extend(dm.diags.iter().cloned());
    }
    let names = names(&stanzas, &mut diags);
    let server = render_server(daemon);
    let mut clients = Vec::new();
    let mut failed = 0;
    for (st, name) in stanzas.iter().zip(names) {
        match convert_stanza(st, name, opts, &mut diags) {
            None => failed += 1,
            Some(c) => {
                // The checker is the judge: render this client alone and let it look.
                let text = render_client(&c);
                let doc = Zeroizing::new(format!("{server}\n{}", text.as_str()));
                let refusals = judge(&doc, Some((&st.origin, &c.name)));
                if refusals.is_empty() {
                    clients.push((c, text));
                } else {
                    failed += 1;
                    diags.extend(refusals);
                }
            }
        }
    }
    if stanzas.is_empty() {
        diags.push(Diag {
            level: Level::Error,
            origin: None,
            stanza: None,
            message: "no SOURCE line found, so there is no stanza to import; check that this is fwknopd's access.conf".to_string(),
        });
    }
    let toml = (!clients.is_empty()).then(|| {
        let mut out = Zeroizing::new(String::new());
        out.push_str(&render_header(daemon.is_some()));
        out.push_str(&server);
        for (_, text) in &clients {
            out.push('\n');
            out.push_str(text);
        }
        out
    });
    // The whole document is checked too (the clients together: names, protect).
    if let Some(t) = &toml {
        diags.extend(judge(t, None));
    }
    Import {
        toml,
        diags,
        clients: clients.into_iter().map(|(c, _)| c.name).collect(),
        failed,
    }
}
