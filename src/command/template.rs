//! Argument templates of command cycles (`on_grant`, `on_expire`) and their substitution.
//! Pure; never panics on input.
//!
//! A template is an argv array from the config. `$SRC`, `$IP`, `$PORT`, `$PROTO`,
//! `$CLIENT_TIMEOUT` and `$USER` are replaced inside one argument at a time, so a value can
//! never become two arguments (there is no shell to split it). Values are typed and checked
//! ([`Values`]: an address, a number, `tcp`/`udp`, a user name of a strict pattern), and an
//! argument that would start with `-` because of a value is refused, so a value can never
//! become an option either. `$$` is a literal `$`; any other `$` is a config error.

use std::fmt;
use std::net::IpAddr;

use crate::access::Proto;

/// A variable a template may name (fwknop's `CMD_CYCLE_OPEN` substitutions, server/cmd_cycle.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// The address the grant is for (fwknop: the allow IP).
    Src,
    /// Same as [`Var::Src`] (fwknop names it both ways).
    Ip,
    /// The granted port.
    Port,
    /// `tcp` or `udp` (fwknop substitutes the number, 6 or 17).
    Proto,
    /// The grant's length in seconds.
    ClientTimeout,
    /// The fwknop user name of the knock (fwknop clients only).
    User,
}

impl Var {
    pub const ALL: [Var; 6] = [
        Var::Src,
        Var::Ip,
        Var::Port,
        Var::Proto,
        Var::ClientTimeout,
        Var::User,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Var::Src => "SRC",
            Var::Ip => "IP",
            Var::Port => "PORT",
            Var::Proto => "PROTO",
            Var::ClientTimeout => "CLIENT_TIMEOUT",
            Var::User => "USER",
        }
    }

    fn from_name(name: &str) -> Option<Var> {
        Var::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// One piece of an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Var(Var),
}

/// A checked argv template: argv[0] is an absolute path without variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The text as written (for the runner's catalog and messages).
    pub source: Vec<String>,
    args: Vec<Vec<Piece>>,
}

/// Longest argument list and argument a template (or a command message) may have.
pub const MAX_ARGS: usize = 64;
pub const MAX_ARG_LEN: usize = 1024;

/// Why a template was refused: the argument index and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub index: usize,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "argument {}: {}", self.index + 1, self.message)
    }
}

impl Template {
    /// Check an argv template (see the module doc).
    pub fn parse(argv: &[String]) -> Result<Template, TemplateError> {
        let err = |index, message: String| Err(TemplateError { index, message });
        if argv.is_empty() {
            return err(0, "is empty; give the program as an absolute path and its arguments, e.g. [\"/usr/sbin/ipset\", \"add\", \"whitelist\", \"$SRC\"]".into());
        }
        if argv.len() > MAX_ARGS {
            return err(MAX_ARGS, format!("more than {MAX_ARGS} arguments"));
        }
        let mut args = Vec::with_capacity(argv.len());
        for (i, a) in argv.iter().enumerate() {
            if a.len() > MAX_ARG_LEN {
                return err(i, format!("longer than {MAX_ARG_LEN} bytes"));
            }
            if a.bytes().any(|b| b == 0) {
                return err(i, "contains a NUL byte".into());
            }
            match pieces(a) {
                Ok(p) => args.push(p),
                Err(m) => return err(i, m),
            }
        }
        let prog = &argv[0];
        if args[0].iter().any(|p| matches!(p, Piece::Var(_))) {
            return err(
                0,
                "the program cannot come from a variable; write its absolute path".into(),
            );
        }
        if !prog.starts_with('/') {
            return err(
                0,
                format!("`{prog}` is not an absolute path; write the full path, e.g. `/usr/sbin/{}` (no shell or PATH search runs it)", prog.rsplit('/').next().unwrap_or(prog)),
            );
        }
        Ok(Template {
            source: argv.to_vec(),
            args,
        })
    }

    /// Does the template name `var`?
    pub fn uses(&self, var: Var) -> bool {
        self.args.iter().flatten().any(|p| *p == Piece::Var(var))
    }

    /// The argv with `values` substituted, each argument on its own.
    pub fn expand(&self, values: &Values) -> Result<Vec<String>, String> {
        values.check()?;
        let mut out = Vec::with_capacity(self.args.len());
        for (i, arg) in self.args.iter().enumerate() {
            let mut s = String::new();
            for (j, p) in arg.iter().enumerate() {
                match p {
                    Piece::Text(t) => s.push_str(t),
                    Piece::Var(v) => {
                        let value = values
                            .get(*v)
                            .ok_or_else(|| format!("${} has no value for this knock", v.name()))?;
                        if j == 0 && value.starts_with('-') {
                            return Err(format!(
                                "argument {} would start with `-` from ${}; refused",
                                i + 1,
                                v.name()
                            ));
                        }
                        s.push_str(&value);
                    }
                }
            }
            out.push(s);
        }
        Ok(out)
    }
}

/// Split an argument into text and variables.
fn pieces(a: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = a;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(r) = after.strip_prefix('$') {
            text.push('$');
            rest = r;
            continue;
        }
        let len = after
            .bytes()
            .take_while(|b| b.is_ascii_uppercase() || *b == b'_')
            .count();
        let name = &after[..len];
        let Some(var) = Var::from_name(name) else {
            let known: Vec<String> = Var::ALL.iter().map(|v| format!("${}", v.name())).collect();
            return Err(format!(
                "`${name}` is not a known variable; use one of {} (or `$$` for a literal `$`)",
                known.join(" ")
            ));
        };
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        out.push(Piece::Var(var));
        rest = &after[len..];
    }
    text.push_str(rest);
    if !text.is_empty() || out.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// The values of one grant, typed so that none can hold a space, a quote or a leading `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    pub src: IpAddr,
    pub proto: Proto,
    pub port: u16,
    pub timeout: u32,
    pub user: Option<String>,
}

impl Values {
    fn get(&self, var: Var) -> Option<String> {
        Some(match var {
            Var::Src | Var::Ip => self.src.to_string(),
            Var::Port => self.port.to_string(),
            Var::Proto => self.proto.name().to_string(),
            Var::ClientTimeout => self.timeout.to_string(),
            Var::User => return self.user.clone(),
        })
    }

    /// Re-validate (the runner calls this on what the daemon sent).
    pub fn check(&self) -> Result<(), String> {
        if let Some(u) = &self.user {
            if !valid_user(u) {
                return Err(
                    "the user name is not of the form [A-Za-z0-9_][A-Za-z0-9_.-]{0,31}; refused"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

/// A user name that can be a command argument: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}`.
pub fn valid_user(u: &str) -> bool {
    let b = u.as_bytes();
    (1..=32).contains(&b.len())
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(a: &[&str]) -> Result<Template, TemplateError> {
        Template::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn values() -> Values {
        Values {
            src: "192.0.2.7".parse().unwrap(),
            proto: Proto::Tcp,
            port: 22,
            timeout: 30,
            user: Some("alice".into()),
        }
    }

    #[test]
    fn each_value_stays_one_argument() {
        let tpl = t(&[
            "/usr/sbin/ipset",
            "add",
            "whitelist",
            "$SRC,$PROTO:$PORT",
            "timeout",
            "$CLIENT_TIMEOUT",
            "-exist",
            "$$HOME",
        ])
        .unwrap();
        assert_eq!(
            tpl.expand(&values()).unwrap(),
            [
                "/usr/sbin/ipset",
                "add",
                "whitelist",
                "192.0.2.7,tcp:22",
                "timeout",
                "30",
                "-exist",
                "$HOME"
            ]
        );
        assert!(tpl.uses(Var::Src) && !tpl.uses(Var::User));
    }

    #[test]
    fn unknown_variables_relative_programs_and_variable_programs_are_refused() {
        let e = t(&["/bin/echo", "$SOURCE"]).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(
            e.message.contains("`$SOURCE` is not a known variable"),
            "{e}"
        );
        assert!(t(&["/bin/echo", "$"]).unwrap_err().message.contains("`$`"));
        let e = t(&["ipset", "add"]).unwrap_err();
        assert!(e.message.contains("`/usr/sbin/ipset`"), "{e}");
        assert!(t(&["$SRC"]).is_err());
        assert!(t(&[]).is_err());
        assert!(t(&["/bin/echo", "a\0b"]).is_err());
    }

    #[test]
    fn a_value_cannot_become_an_option() {
        let tpl = t(&["/bin/echo", "$USER"]).unwrap();
        let mut v = values();
        v.user = Some("-rf".into());
        assert!(tpl.expand(&v).unwrap_err().contains("refused"));
        // Even if a hostile daemon skipped the pattern check, the leading-dash rule holds.
        assert!(!valid_user("-x") && !valid_user("a b") && !valid_user(""));
        v.user = None;
        assert!(tpl.expand(&v).unwrap_err().contains("$USER has no value"));
    }
}
