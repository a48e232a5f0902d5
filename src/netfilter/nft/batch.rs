//! nf_tables messages on [`Nft`]: batch messages for tables, chains and rules, each tagged with
//! what it does to which object so a refusal names it; committing a batch; get and dump
//! requests. Talks to the kernel only in [`Nft::commit`] and [`Nft::request`].

use super::expr::Exprs;
use super::*;

/// What one message of a batch does, to what: a refusal names it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Op {
    op: &'static str,
    object: Object,
}

pub(super) type BatchFail = BatchError<Op>;

impl Nft {
    pub(super) fn batch_start(&mut self) {
        self.batch.start();
    }

    /// Begin an nf_tables message of the batch, remembered as `op` on `object`; returns its
    /// offset (for `end`) and the buffer to write its attributes into.
    pub(super) fn begin(
        &mut self,
        msg: u16,
        flags: u16,
        family: u8,
        op: &'static str,
        object: Object,
    ) -> (usize, &mut MsgBuf) {
        let s = self.batch.begin(msg, flags, family, Op { op, object });
        (s, self.batch.msg())
    }

    pub(super) fn add_table(&mut self, family: u8, name: &str, object: Object) {
        let (s, m) = self.begin(NFT_MSG_NEWTABLE, NLM_F_CREATE, family, "create", object);
        m.attr_str(NFTA_TABLE_NAME, name);
        m.end(s);
    }

    pub(super) fn del_table(&mut self, family: u8, name: &str, object: Object) {
        let (s, m) = self.begin(NFT_MSG_DELTABLE, 0, family, "delete", object);
        m.attr_str(NFTA_TABLE_NAME, name);
        m.end(s);
    }

    /// A base chain (with `hook`: hook number and priority) or a regular one.
    pub(super) fn add_chain(&mut self, table: &str, name: &'static str, hook: Option<(u32, i32)>) {
        self.add_chain_of_type(table, name, hook, "filter");
    }

    /// [`Nft::add_chain`] of chain type `ty` (`filter`, `nat`) for a base chain.
    pub(super) fn add_chain_of_type(
        &mut self,
        table: &str,
        name: &'static str,
        hook: Option<(u32, i32)>,
        ty: &str,
    ) {
        let object = Object::Chain(name);
        let (s, m) = self.begin(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            NFPROTO_INET,
            "create",
            object,
        );
        m.attr_str(NFTA_CHAIN_TABLE, table);
        m.attr_str(NFTA_CHAIN_NAME, name);
        if let Some((hooknum, prio)) = hook {
            m.attr_str(NFTA_CHAIN_TYPE, ty);
            m.attr_u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
            let h = m.nest(NFTA_CHAIN_HOOK);
            m.attr_u32(NFTA_HOOK_HOOKNUM, hooknum);
            m.attr(NFTA_HOOK_PRIORITY, &prio.to_be_bytes());
            m.nest_end(h);
        }
        m.end(s);
    }

    pub(super) fn del_chain(&mut self, name: &'static str) {
        let object = Object::Chain(name);
        let (s, m) = self.begin(NFT_MSG_DELCHAIN, 0, NFPROTO_INET, "delete", object);
        m.attr_str(NFTA_CHAIN_TABLE, TABLE);
        m.attr_str(NFTA_CHAIN_NAME, name);
        m.end(s);
    }

    /// `flush chain`: a DELRULE naming only the chain deletes all its rules.
    pub(super) fn flush_chain(&mut self, name: &'static str) {
        let object = Object::Chain(name);
        let (s, m) = self.begin(NFT_MSG_DELRULE, 0, NFPROTO_INET, "flush", object);
        m.attr_str(NFTA_RULE_TABLE, TABLE);
        m.attr_str(NFTA_RULE_CHAIN, name);
        m.end(s);
    }

    /// Append a rule to `chain`, its expressions written by `exprs`.
    pub(super) fn add_rule(
        &mut self,
        table: &str,
        chain: &'static str,
        exprs: impl FnOnce(&mut Exprs<'_>),
    ) {
        let (flags, object) = (NLM_F_CREATE | NLM_F_APPEND, Object::Chain(chain));
        let (s, m) = self.begin(
            NFT_MSG_NEWRULE,
            flags,
            NFPROTO_INET,
            "add a rule to",
            object,
        );
        m.attr_str(NFTA_RULE_TABLE, table);
        m.attr_str(NFTA_RULE_CHAIN, chain);
        let n = m.nest(NFTA_RULE_EXPRESSIONS);
        exprs(&mut Exprs(m));
        m.nest_end(n);
        m.end(s);
    }

    /// Close the batch, send it, and wait for the kernel's verdict on it (see
    /// [`Batch::commit`]).
    pub(super) fn commit(&mut self) -> Result<(), BatchFail> {
        self.batch.commit(&self.sock, &mut self.rbuf, REPLY_TIMEOUT)
    }

    /// Send one get (acknowledged) or `dump` request of nf_tables message `msg`, its attributes
    /// written by `attrs`, and hand every reply message to `each`. Returns the kernel's errno
    /// for a refused request.
    pub(super) fn request(
        &mut self,
        msg: u16,
        dump: bool,
        attrs: impl FnOnce(&mut MsgBuf),
        each: impl FnMut(&Msg<'_>),
    ) -> Result<Result<(), i32>, io::Error> {
        let seq = self.batch.next_seq();
        let flags = if dump { NLM_F_DUMP } else { NLM_F_ACK };
        self.req.clear();
        let ty = nfnl_type(NFNL_SUBSYS_NFTABLES, msg);
        let s = self.req.begin(ty, flags, seq, NFPROTO_INET, 0);
        attrs(&mut self.req);
        self.req.end(s);
        let req = self.req.bytes();
        (self.sock).request(req, seq, dump, &mut self.rbuf, REPLY_TIMEOUT, each)
    }
}

pub(super) fn batch_error(f: BatchFail) -> NftError {
    match f {
        BatchError::Send(source) => NftError::Socket {
            op: "send a batch on",
            source,
        },
        BatchError::Recv(source) => NftError::Socket {
            op: "receive the answer on",
            source,
        },
        BatchError::Kernel { errno, tag } => {
            let Op { op, object } = tag.unwrap_or(Op {
                op: "commit",
                object: Object::Batch,
            });
            kernel_error(op, object, errno)
        }
    }
}
