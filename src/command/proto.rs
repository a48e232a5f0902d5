//! What the daemon sends the runner: one [`Job`] per `SOCK_SEQPACKET` message. Pure; decoding
//! never panics and refuses anything not exactly as [`encode`] writes it (the runner holds
//! CAP_SETUID and treats the daemon as the less trusted side).
//!
//! ```text
//! u32 LE  length of the rest
//! u8      version (1)
//! u8      kind: 1 on_grant, 2 on_expire, 3 command message
//! str     client name                   (str = u16 LE length + UTF-8)
//! kinds 1, 2:  str address, u8 IP protocol (6, 17), u16 LE port, u32 LE timeout,
//!              u8 has-user (0, 1) [+ str user]
//! kind 3:      u8 count (1..=64), count × str argument
//! ```

use std::net::IpAddr;

use super::template::{valid_user, Values, MAX_ARGS, MAX_ARG_LEN};
use crate::access::Proto;

/// Largest message (64 arguments of 1 KiB, and the rest).
pub const MAX_MESSAGE: usize = 4 + 2 + 2 + 64 + 1 + MAX_ARGS * (2 + MAX_ARG_LEN);
const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Run `client`'s `on_grant` with these values.
    Grant { client: String, values: Values },
    /// Run `client`'s `on_expire` with these values.
    Expire { client: String, values: Values },
    /// Run a command message's argv (checked against `client`'s allow-list by the runner).
    Exec { client: String, argv: Vec<String> },
}

impl Job {
    pub fn client(&self) -> &str {
        match self {
            Job::Grant { client, .. } | Job::Expire { client, .. } | Job::Exec { client, .. } => {
                client
            }
        }
    }

    /// `on_grant`, `on_expire` or `command`, for log lines.
    pub fn what(&self) -> &'static str {
        match self {
            Job::Grant { .. } => "on_grant",
            Job::Expire { .. } => "on_expire",
            Job::Exec { .. } => "command message",
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// The message for `job`.
pub fn encode(job: &Job) -> Vec<u8> {
    let mut b = vec![0, 0, 0, 0, VERSION];
    match job {
        Job::Grant { client, values } | Job::Expire { client, values } => {
            b.push(if matches!(job, Job::Grant { .. }) {
                1
            } else {
                2
            });
            put_str(&mut b, client);
            put_str(&mut b, &values.src.to_string());
            b.push(values.proto.number());
            b.extend_from_slice(&values.port.to_le_bytes());
            b.extend_from_slice(&values.timeout.to_le_bytes());
            match &values.user {
                None => b.push(0),
                Some(u) => {
                    b.push(1);
                    put_str(&mut b, u);
                }
            }
        }
        Job::Exec { client, argv } => {
            b.push(3);
            put_str(&mut b, client);
            b.push(u8::try_from(argv.len()).unwrap_or(u8::MAX));
            for a in argv.iter().take(usize::from(u8::MAX)) {
                put_str(&mut b, a);
            }
        }
    }
    let len = u32::try_from(b.len() - 4).unwrap_or(u32::MAX);
    b[..4].copy_from_slice(&len.to_le_bytes());
    b
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("message too short");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn str(&mut self, max: usize) -> Result<String, &'static str> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err("string too long");
        }
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| "string not UTF-8")?;
        if s.bytes().any(|c| c == 0) {
            return Err("string holds a NUL byte");
        }
        Ok(s.to_string())
    }
}

/// Parse one message; anything else than what [`encode`] writes is refused.
pub fn decode(msg: &[u8]) -> Result<Job, &'static str> {
    if msg.len() > MAX_MESSAGE {
        return Err("message too long");
    }
    let mut r = Reader(msg);
    let len = r.u32()? as usize;
    if len != r.0.len() {
        return Err("length prefix does not match the message");
    }
    if r.u8()? != VERSION {
        return Err("unknown version");
    }
    let kind = r.u8()?;
    let client = r.str(64)?;
    if !crate::config::valid_name(&client) {
        return Err("not a client name");
    }
    let job = match kind {
        1 | 2 => {
            let src: IpAddr = r.str(64)?.parse().map_err(|_| "not an address")?;
            let proto = Proto::from_number(r.u8()?).ok_or("not tcp or udp")?;
            let port = r.u16()?;
            if port == 0 {
                return Err("port 0");
            }
            let timeout = r.u32()?;
            let user = match r.u8()? {
                0 => None,
                1 => {
                    let u = r.str(32)?;
                    if !valid_user(&u) {
                        return Err("not a user name");
                    }
                    Some(u)
                }
                _ => return Err("bad user flag"),
            };
            let values = Values {
                src,
                proto,
                port,
                timeout,
                user,
            };
            if kind == 1 {
                Job::Grant { client, values }
            } else {
                Job::Expire { client, values }
            }
        }
        3 => {
            let n = usize::from(r.u8()?);
            if n == 0 || n > MAX_ARGS {
                return Err("bad argument count");
            }
            let mut argv = Vec::with_capacity(n);
            for _ in 0..n {
                argv.push(r.str(MAX_ARG_LEN)?);
            }
            Job::Exec { client, argv }
        }
        _ => return Err("unknown kind"),
    };
    if !r.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs() -> Vec<Job> {
        let values = Values {
            src: "2001:db8::7".parse().unwrap(),
            proto: Proto::Udp,
            port: 53,
            timeout: 3600,
            user: Some("bob".into()),
        };
        vec![
            Job::Grant {
                client: "alice".into(),
                values: values.clone(),
            },
            Job::Expire {
                client: "alice".into(),
                values: Values {
                    user: None,
                    ..values
                },
            },
            Job::Exec {
                client: "fwknop-1".into(),
                argv: vec!["/usr/bin/touch".into(), "/tmp/a b".into()],
            },
        ]
    }

    #[test]
    fn decode_reads_what_encode_writes_and_nothing_else() {
        for job in jobs() {
            let m = encode(&job);
            assert_eq!(decode(&m), Ok(job.clone()));
            // Every prefix, every extension, every single-byte change: never a panic, and a
            // changed length or kind never decodes.
            for n in 0..m.len() {
                assert!(decode(&m[..n]).is_err());
            }
            let mut longer = m.clone();
            longer.push(0);
            assert!(decode(&longer).is_err());
            for i in 0..m.len() {
                for x in [0u8, 1, 0x2d, 0xff] {
                    let mut c = m.clone();
                    c[i] = x;
                    let _ = decode(&c);
                }
            }
        }
        let mut bad_user = encode(&jobs()[0]);
        let n = bad_user.len();
        bad_user[n - 3] = b'-';
        assert_eq!(decode(&bad_user), Err("not a user name"));
    }
}
