//! Ruleset events: notice when someone else deletes or flushes our table (`nft flush ruleset`,
//! a firewall reload), so the daemon can put it back. Reads its own subscribed socket.

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
