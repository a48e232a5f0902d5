//! Splitting a command string (fwknop's `CMD_CYCLE_OPEN` line, a command message's text) into
//! argv, the way fwknop does before `execvpe` (lib `strtoargv()`, server/extcmd.c): words
//! separated by blanks, `'…'` and `"…"` quoting a word. Pure; never panics.
//!
//! Whatever a shell would have given a meaning the split cannot keep (pipes, lists,
//! redirections, substitutions, globs, escapes, `~`, comments) is refused rather than passed on
//! literally: a line written for a shell would otherwise run as something else. Braces are
//! kept as words: fwknopd passes them to the program as they are, and nft's
//! `add element ... { $SRC . $PORT }` (the usual CMD_CYCLE_OPEN) needs them so.

use super::template::{MAX_ARGS, MAX_ARG_LEN};

/// Characters refused anywhere outside single quotes, with what they would mean to a shell.
const SHELL: &[(char, &str)] = &[
    ('|', "a pipe"),
    (';', "a command list"),
    ('&', "a background job or `&&`"),
    ('<', "a redirection"),
    ('>', "a redirection"),
    ('(', "a subshell or `$(…)`"),
    (')', "a subshell or `$(…)`"),
    ('`', "a command substitution"),
    ('\\', "an escape"),
    ('*', "a glob"),
    ('?', "a glob"),
    ('[', "a glob"),
    (']', "a glob"),
    ('\n', "a second command line"),
];

/// `allow_dollar`: keep `$NAME` for the caller to map (the importer does); otherwise `$` is
/// refused too (a command message never substitutes anything).
pub fn split(line: &str, allow_dollar: bool) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                let mut closed = false;
                for q in chars.by_ref() {
                    if q == '\'' {
                        closed = true;
                        break;
                    }
                    cur.push(q);
                }
                if !closed {
                    return Err("an unclosed `'`; close the quote".into());
                }
            }
            '"' => {
                in_word = true;
                let mut closed = false;
                for q in chars.by_ref() {
                    if q == '"' {
                        closed = true;
                        break;
                    }
                    if q == '$' && !allow_dollar || q == '`' || q == '\\' {
                        return Err(format!(
                            "`{q}` inside double quotes would be expanded by a shell; no shell runs this, write the argument without it"
                        ));
                    }
                    cur.push(q);
                }
                if !closed {
                    return Err("an unclosed `\"`; close the quote".into());
                }
            }
            '#' | '~' if !in_word => {
                return Err(format!(
                    "`{c}` at the start of a word is {} to a shell; no shell runs this",
                    if c == '#' {
                        "a comment"
                    } else {
                        "a home directory"
                    }
                ))
            }
            '$' if !allow_dollar => {
                return Err("`$` is shell syntax (a variable or `$(…)`); no shell runs this, so it is refused".into());
            }
            '$' if chars.peek() == Some(&'(') => {
                return Err(
                    "`$(…)` is a command substitution; no shell runs this, so it is refused".into(),
                );
            }
            c if c.is_control() && c != '\t' => {
                return Err("a control character; remove it".into());
            }
            c => {
                if let Some((_, what)) = SHELL.iter().find(|(s, _)| *s == c) {
                    return Err(format!(
                        "`{c}` is shell syntax ({what}); no shell runs this command, so it is refused: write a plain program with arguments, or put the shell logic into a script and name the script"
                    ));
                }
                in_word = true;
                cur.push(c);
            }
        }
        if cur.len() > MAX_ARG_LEN {
            return Err(format!("an argument is longer than {MAX_ARG_LEN} bytes"));
        }
        if out.len() > MAX_ARGS {
            return Err(format!("more than {MAX_ARGS} arguments"));
        }
    }
    if in_word {
        out.push(cur);
    }
    if out.is_empty() {
        return Err("no command".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_quotes_split_as_fwknop_does() {
        assert_eq!(
            split(
                "/usr/sbin/ipset add whitelist $SRC timeout $CLIENT_TIMEOUT",
                true
            )
            .unwrap(),
            [
                "/usr/sbin/ipset",
                "add",
                "whitelist",
                "$SRC",
                "timeout",
                "$CLIENT_TIMEOUT"
            ]
        );
        assert_eq!(
            split("  /bin/echo 'a b'  \"c d\"e ''", false).unwrap(),
            ["/bin/echo", "a b", "c de", ""]
        );
    }

    #[test]
    fn shell_syntax_is_refused_with_what_it_means() {
        for (line, what) in [
            ("/bin/echo a | tee x", "a pipe"),
            ("/bin/echo a; reboot", "a command list"),
            ("/bin/echo a && b", "background"),
            ("/bin/echo > /etc/x", "redirection"),
            ("/bin/echo $(id)", "command substitution"),
            ("/bin/echo `id`", "command substitution"),
            ("/bin/rm /tmp/*", "a glob"),
            ("/bin/echo a\\ b", "an escape"),
            ("/bin/echo ~/x", "home directory"),
            ("/bin/echo 'a", "unclosed"),
            ("/bin/echo \"`id`\"", "double quotes"),
        ] {
            let e = split(line, true).unwrap_err();
            assert!(e.contains(what), "{line}: {e}");
        }
        assert!(split("/bin/echo $HOME", false).unwrap_err().contains("`$`"));
        assert!(split("   ", false).is_err());
        // Inside single quotes nothing is special, as in a shell.
        assert_eq!(split("/bin/echo 'a|b;c'", false).unwrap()[1], "a|b;c");
    }
}
