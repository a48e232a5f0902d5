//! Ruleset events: notice when someone else deletes or flushes our table (`nft flush ruleset`,
//! a firewall reload), so the daemon can put it back; and, for the fleet relay, follow the
//! grants written to the allow sets ([`NftEvents::wait_elements`]). Reads its own subscribed
//! socket.

use super::*;

/// Subscription to nftables ruleset events (`NFNLGRP_NFTABLES`), to notice a flush.
pub struct NftEvents {
    sock: NlSocket,
    buf: Vec<u8>,
    /// Port ids of our own command sockets ([`Nft::portid`]): their changes are not external.
    own: Vec<u32>,
}

impl NftEvents {
    /// Subscribe. `own` are the port ids of the daemon's own nftables sockets
    /// ([`Nft::portid`]): the changes they make (installs, grants, revocations) are ours. A
    /// socket filter drops their events in the kernel, so draining stays cheap however many
    /// grants are written, and [`NftEvents::drain`] ignores any that get through.
    pub fn open(own: &[u32]) -> Result<NftEvents, NftError> {
        let sock = NlSocket::open(1 << (NFNLGRP_NFTABLES - 1)).map_err(|e| NftError::Socket {
            op: "subscribe to nftables events with",
            source: e.source,
        })?;
        let _ = sock.set_rcvbuf(1 << 20);
        let mut events = NftEvents {
            sock,
            buf: vec![0; RECV_BUF],
            own: Vec::new(),
        };
        events.set_own(own)?;
        Ok(events)
    }

    /// Replace the port ids whose changes are ours (e.g. after the daemon opened a new
    /// [`Nft`]).
    pub fn set_own(&mut self, own: &[u32]) -> Result<(), NftError> {
        self.sock
            .ignore_senders(own)
            .map_err(|source| NftError::Socket {
                op: "attach the event filter to",
                source,
            })?;
        self.own.clear();
        self.own.extend_from_slice(own);
        Ok(())
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Drain pending events without blocking; true if our table (or a chain, rule or set of
    /// it, or the `protected` set's elements) was deleted or flushed by someone else — or if
    /// events were lost (`ENOBUFS`), since then nobody knows.
    pub fn drain(&mut self) -> Result<bool, NftError> {
        let own = &self.own;
        let mut hit = false;
        loop {
            match self.sock.try_recv(&mut self.buf) {
                Ok(None) => return Ok(hit),
                Ok(Some(Recv::Overrun)) => hit = true,
                Ok(Some(Recv::Datagram(d))) => {
                    hit |= messages(d)
                        .map_while(Result::ok)
                        .any(|m| is_external_removal(&m, own));
                }
                Err(source) => {
                    return Err(NftError::Socket {
                        op: "read nftables events from",
                        source,
                    })
                }
            }
        }
    }
}

/// A change of the allow sets (or of the table holding them) seen by
/// [`NftEvents::wait_elements`], made by someone other than the `own` sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElemEvent {
    /// A grant added or refreshed (`added`) or removed, by the socket with port id `pid`
    /// (0: the kernel itself), with the element's userdata (empty if none).
    Grant {
        added: bool,
        elem: LiveElement,
        udata: Vec<u8>,
        pid: u32,
    },
    /// Our table or an allow set was created or deleted (an install, a flush and its repair),
    /// or events were lost: what the sets hold must be read again.
    Reset,
}

impl NftEvents {
    /// Wait up to `timeout` for events, then append every pending change of the allow sets to
    /// `out` (nothing when none came). Events of the `own` sockets are filtered out.
    pub fn wait_elements(
        &mut self,
        timeout: Duration,
        out: &mut Vec<ElemEvent>,
    ) -> Result<(), NftError> {
        let sock_err = |source| NftError::Socket {
            op: "read nftables events from",
            source,
        };
        self.sock.poll_in(timeout).map_err(sock_err)?;
        loop {
            match self.sock.try_recv(&mut self.buf).map_err(sock_err)? {
                None => return Ok(()),
                Some(Recv::Overrun) => out.push(ElemEvent::Reset),
                Some(Recv::Datagram(d)) => {
                    for m in messages(d).map_while(Result::ok) {
                        if m.pid == 0 || !self.own.contains(&m.pid) {
                            element_events(&m, out);
                        }
                    }
                }
            }
        }
    }
}

/// The [`ElemEvent`]s of one message of subsystem nftables.
fn element_events(m: &Msg<'_>, out: &mut Vec<ElemEvent>) {
    if m.subsys() != NFNL_SUBSYS_NFTABLES {
        return;
    }
    let Some((family, body)) = nfgen(m.payload) else {
        return;
    };
    if family != NFPROTO_INET || attr(body, 1).map(str_attr) != Some(TABLE.as_bytes()) {
        return;
    }
    let allow_set = |name: Option<&[u8]>| match name.map(str_attr) {
        Some(n) if n == SET_ALLOW_V4.as_bytes() => Some(false),
        Some(n) if n == SET_ALLOW_V6.as_bytes() => Some(true),
        _ => None,
    };
    match m.nfnl_msg() {
        NFT_MSG_NEWTABLE | NFT_MSG_DELTABLE => out.push(ElemEvent::Reset),
        NFT_MSG_NEWSET | NFT_MSG_DELSET if allow_set(attr(body, NFTA_SET_NAME)).is_some() => {
            out.push(ElemEvent::Reset)
        }
        msg @ (NFT_MSG_NEWSETELEM | NFT_MSG_DELSETELEM) => {
            let Some(v6) = allow_set(attr(body, NFTA_SET_ELEM_LIST_SET)) else {
                return;
            };
            let Some(list) = attr(body, NFTA_SET_ELEM_LIST_ELEMENTS) else {
                return;
            };
            for (_, e) in attrs(list) {
                if let Some(elem) = super::sets::parse_live(e, v6) {
                    out.push(ElemEvent::Grant {
                        added: msg == NFT_MSG_NEWSETELEM,
                        elem,
                        udata: attr(e, NFTA_SET_ELEM_USERDATA).unwrap_or(&[]).to_vec(),
                        pid: m.pid,
                    });
                }
            }
        }
        _ => {}
    }
}

/// Is `m` the deletion of our table or of something in it, by someone other than us?
fn is_external_removal(m: &Msg<'_>, own: &[u32]) -> bool {
    if m.subsys() != NFNL_SUBSYS_NFTABLES || (m.pid != 0 && own.contains(&m.pid)) {
        return false;
    }
    let msg = m.nfnl_msg();
    let Some((family, body)) = nfgen(m.payload) else {
        return false;
    };
    if family != NFPROTO_INET || attr(body, 1).map(str_attr) != Some(TABLE.as_bytes()) {
        return false; // attribute 1 is the table name in table, chain, rule, set and element messages
    }
    match msg {
        NFT_MSG_DELTABLE | NFT_MSG_DELCHAIN | NFT_MSG_DELRULE | NFT_MSG_DELSET => true,
        // Elements leaving an allow set are expiries or an admin's revocation: fine. Elements
        // leaving `protected` open a port: re-assert.
        NFT_MSG_DELSETELEM => {
            attr(body, NFTA_SET_ELEM_LIST_SET).map(str_attr) == Some(SET_PROTECTED.as_bytes())
        }
        _ => false,
    }
}
