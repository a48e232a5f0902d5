//! The line syntax shared by `access.conf` and `fwknopd.conf` (fwknopd 2.6 `server/access.c`,
//! `server/config_init.c`; shared/FWKNOP-WIRE.md §8, §9): one `VAR value` per line as fwknopd's
//! `sscanf` reads it, fwknopd's booleans, and the `# name:` comment that names a client.

/// `VAR value` from one line, or `None` for a blank line, a comment, or a line without a value
/// (fwknopd skips those: `sscanf` returns 1).
pub(super) fn split_line(raw: &str) -> Option<(&str, &str)> {
    let line = raw.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let var_end = line.find(char::is_whitespace)?;
    let (var, rest) = line.split_at(var_end);
    let rest = rest.trim_start();
    let value = rest
        .split([';', '\n', '\r'])
        .next()
        .unwrap_or("")
        .trim_end();
    if value.is_empty() {
        return None;
    }
    // `SOURCE: ANY` — fwknopd strips one trailing ':' from the variable name.
    let var = var.strip_suffix(':').unwrap_or(var);
    Some((var, value))
}

/// fwknopd booleans: the first character is `Y` or `y` (`add_acc_bool`).
pub(super) fn is_yes(value: &str) -> bool {
    value.starts_with(['Y', 'y'])
}

/// A `# name: NAME` comment (our extension, to name the client a stanza becomes).
pub(super) fn name_comment(raw: &str) -> Option<&str> {
    let rest = raw.trim().strip_prefix('#')?.trim_start();
    let rest = rest.strip_prefix("name:")?;
    Some(rest.trim())
}
