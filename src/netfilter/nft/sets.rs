//! The sets of the owned table: their definitions, element keys, and the grants in the allow
//! sets (add or refresh, revoke, list). Builds messages; talks to the kernel through
//! [`Nft::commit`] and [`Nft::request`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::access::SourceNat;

use super::batch::{batch_error, BatchFail};
use super::expr::data_value;
use super::*;

impl Nft {
    pub(super) fn add_set(&mut self, def: &SetDef) {
        let object = Object::Set(def.name);
        let (s, m) = self.begin(NFT_MSG_NEWSET, NLM_F_CREATE, NFPROTO_INET, "create", object);
        m.attr_str(NFTA_SET_TABLE, TABLE);
        m.attr_str(NFTA_SET_NAME, def.name);
        m.attr_u32(NFTA_SET_FLAGS, def.flags);
        m.attr_u32(NFTA_SET_KEY_TYPE, def.key_type);
        m.attr_u32(NFTA_SET_KEY_LEN, def.key_len);
        if let Some((ty, len)) = def.data {
            m.attr_u32(NFTA_SET_DATA_TYPE, ty);
            m.attr_u32(NFTA_SET_DATA_LEN, len);
        }
        // Required by nf_tables_newset even when nothing refers to the set by id.
        m.attr_u32(NFTA_SET_ID, def.id);
        if def.flags & NFT_SET_CONCAT != 0 {
            // A concatenation of ranges (pipapo): the kernel needs each field's length; ours
            // are two addresses of one family.
            let d = m.nest(NFTA_SET_DESC);
            let c = m.nest(NFTA_SET_DESC_CONCAT);
            for _ in 0..2 {
                let f = m.nest(NFTA_LIST_ELEM);
                m.attr_u32(NFTA_SET_FIELD_LEN, def.key_len / 2);
                m.nest_end(f);
            }
            m.nest_end(c);
            m.nest_end(d);
        }
        if let Some((timeout_ms, size)) = def.dynamic {
            let d = m.nest(NFTA_SET_DESC);
            m.attr_u32(NFTA_SET_DESC_SIZE, size);
            m.nest_end(d);
            m.attr_u64(NFTA_SET_TIMEOUT, timeout_ms);
        }
        m.attr(NFTA_SET_USERDATA, def.userdata);
        m.end(s);
    }

    /// `delete set` (its elements go with it).
    pub(super) fn del_set(&mut self, name: &'static str) {
        let object = Object::Set(name);
        let (s, m) = self.begin(NFT_MSG_DELSET, 0, NFPROTO_INET, "delete", object);
        m.attr_str(NFTA_SET_TABLE, TABLE);
        m.attr_str(NFTA_SET_NAME, name);
        m.end(s);
    }

    /// `flush set`: a DELSETELEM without an element list removes every element.
    pub(super) fn flush_set(&mut self, name: &'static str) {
        let object = Object::Set(name);
        let (s, m) = self.begin(NFT_MSG_DELSETELEM, 0, NFPROTO_INET, "flush", object);
        m.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
        m.attr_str(NFTA_SET_ELEM_LIST_SET, name);
        m.end(s);
    }

    /// One element message for `set`: NEWSETELEM (`add`) or DELSETELEM, naming each element's
    /// key (a DELSETELEM without an element list would flush the set).
    ///
    /// NEWSETELEM goes with `NLM_F_CREATE` and without `NLM_F_EXCL`: adding an element that
    /// exists is not an error. With a timeout, `NFTA_SET_ELEM_EXPIRATION` = timeout is sent too:
    /// since Linux 6.12 (`nft_set_elem_update_timeout` path of nft_add_set_elem), re-adding an
    /// element updates its timeout/expiration only when they are given, so a re-knock restarts
    /// the timer; older kernels keep the old expiry.
    pub(super) fn set_elements<K: AsRef<[u8]>>(
        &mut self,
        add: bool,
        set: &'static str,
        elems: impl Iterator<Item = (K, Option<u64>)>,
    ) {
        self.set_elements_marked(add, set, elems, None)
    }

    /// [`Nft::set_elements`], each added element carrying `udata` (`NFTA_SET_ELEM_USERDATA`,
    /// stored opaquely by the kernel, kept when the element is later refreshed, shown by
    /// `nft list` as the element's comment when it is an [`element_comment`]).
    pub(super) fn set_elements_marked<K: AsRef<[u8]>>(
        &mut self,
        add: bool,
        set: &'static str,
        elems: impl Iterator<Item = (K, Option<u64>)>,
        udata: Option<&[u8]>,
    ) {
        let elems = elems.map(|(key, timeout)| (key, None::<[u8; 0]>, timeout));
        self.elements_msg(add, set, elems, udata)
    }

    /// The one element message every writer uses: NEWSETELEM or DELSETELEM for `set`, each
    /// element with its key, its timeout (see [`Nft::set_elements`]), and on add its map data
    /// and `udata`.
    pub(super) fn elements_msg<K: AsRef<[u8]>, D: AsRef<[u8]>>(
        &mut self,
        add: bool,
        set: &'static str,
        elems: impl Iterator<Item = (K, Option<D>, Option<u64>)>,
        udata: Option<&[u8]>,
    ) {
        let (msg, flags, op) = if add {
            (NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add elements to")
        } else {
            (NFT_MSG_DELSETELEM, 0, "delete elements from")
        };
        let (s, m) = self.begin(msg, flags, NFPROTO_INET, op, Object::Set(set));
        m.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
        m.attr_str(NFTA_SET_ELEM_LIST_SET, set);
        let list = m.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        for (key, data, timeout) in elems {
            let e = m.nest(NFTA_LIST_ELEM);
            data_value(m, NFTA_SET_ELEM_KEY, key.as_ref());
            if let Some(ms) = timeout {
                m.attr_u64(NFTA_SET_ELEM_TIMEOUT, ms);
                m.attr_u64(NFTA_SET_ELEM_EXPIRATION, ms);
            }
            if add {
                if let Some(d) = data {
                    data_value(m, NFTA_SET_ELEM_DATA, d.as_ref());
                }
                if let Some(u) = udata {
                    m.attr(NFTA_SET_ELEM_USERDATA, u);
                }
            }
            m.nest_end(e);
        }
        m.nest_end(list);
        m.end(s);
    }

    /// Add (with their timeouts) or remove the grants of one family in `elems` to or from its
    /// allow set, [`ELEMS_PER_MSG`] per message. Keys are built on the stack one by one: no
    /// allocation on the hot path.
    pub(super) fn grants(&mut self, add: bool, elems: &[Element], v6: bool) {
        self.grants_marked(add, elems, v6, None)
    }

    /// [`Nft::grants`], each added element carrying `udata` (the fleet relay's origin mark).
    pub(super) fn grants_marked(
        &mut self,
        add: bool,
        elems: &[Element],
        v6: bool,
        udata: Option<&[u8]>,
    ) {
        let set = if v6 { SET_ALLOW_V6 } else { SET_ALLOW_V4 };
        // A routed NAT grant opens no port of this host: its element is in `forward_v*`.
        // A gateway grant opens no port of this host either: its element is in `gateway_v*`.
        let routed = |e: &Element| e.nat.is_some_and(|n| !n.dnat) || e.gateway.is_some();
        let mut it = elems
            .iter()
            .filter(|e| e.addr.is_ipv6() == v6 && !routed(e))
            .peekable();
        while it.peek().is_some() {
            let chunk = it.by_ref().take(ELEMS_PER_MSG).map(|e| {
                let key = GrantKey(element_key(e.addr, e.access));
                (key, add.then_some(e.timeout_ms))
            });
            self.set_elements_marked(add, set, chunk, udata);
        }
        self.nat_elements(add, elems, v6);
        self.gateway_elements(add, elems, v6);
    }

    /// `(key type, key length, flags)` of an existing set of our table, `None` if absent.
    pub(super) fn set_shape(
        &mut self,
        set: &'static str,
    ) -> Result<Option<(u32, u32, u32)>, NftError> {
        let mut shape = None;
        let r = self.request(
            NFT_MSG_GETSET,
            false,
            |m| {
                m.attr_str(NFTA_SET_TABLE, TABLE);
                m.attr_str(NFTA_SET_NAME, set);
            },
            |m| {
                let Some((_, body)) = nfgen(m.payload) else {
                    return;
                };
                let u = |t| attr(body, t).and_then(be_u32);
                if let (Some(kt), Some(kl), Some(fl)) =
                    (u(NFTA_SET_KEY_TYPE), u(NFTA_SET_KEY_LEN), u(NFTA_SET_FLAGS))
                {
                    shape = Some((kt, kl, fl));
                }
            },
        );
        match r {
            Ok(Ok(())) => Ok(shape),
            Ok(Err(e)) if e == libc::ENOENT => Ok(None),
            Ok(Err(e)) => Err(kernel_error("look up", Object::Set(set), e)),
            Err(source) => Err(NftError::Socket { op: "use", source }),
        }
    }

    /// Add or refresh grants: one batch per `UPSERT_BATCH` grants (atomic within a batch).
    /// IPv4 grants go to `allow_v4`, IPv6 grants to `allow_v6`. A grant that exists gets the
    /// new timeout (and, on kernels ≥ 6.12, a restarted timer).
    pub fn upsert(&mut self, elems: &[Element]) -> Result<(), NftError> {
        if let Some(e) = elems.iter().find(|e| e.timeout_ms == 0) {
            return Err(NftError::ZeroTimeout {
                addr: e.addr,
                access: e.access,
            });
        }
        for chunk in elems.chunks(UPSERT_BATCH) {
            self.batch_start();
            self.grants(true, chunk, false);
            self.grants(true, chunk, true);
            self.commit().map_err(batch_error)?;
        }
        Ok(())
    }

    /// [`Nft::upsert`] for grants that another host made (the fleet relay): each element
    /// carries `udata` (an [`element_comment`]), so the relay can tell them from this host's
    /// own grants in events and listings. A refresh of an element keeps the udata it had.
    pub fn upsert_marked(&mut self, elems: &[Element], udata: &[u8]) -> Result<(), NftError> {
        if let Some(e) = elems.iter().find(|e| e.timeout_ms == 0) {
            return Err(NftError::ZeroTimeout {
                addr: e.addr,
                access: e.access,
            });
        }
        for chunk in elems.chunks(UPSERT_BATCH) {
            self.batch_start();
            self.grants_marked(true, chunk, false, Some(udata));
            self.grants_marked(true, chunk, true, Some(udata));
            self.commit().map_err(batch_error)?;
        }
        Ok(())
    }

    /// Live grants of both allow sets, each with its element userdata (empty when it has
    /// none): the fleet relay tells remote grants (its mark) from this host's own.
    pub fn list_marked(&mut self) -> Result<Vec<(LiveElement, Vec<u8>)>, NftError> {
        let mut out = Vec::new();
        for (set, v6) in [(SET_ALLOW_V4, false), (SET_ALLOW_V6, true)] {
            out.extend(self.elements(set, IfAbsent::Fail, |elem| {
                let live = parse_live(elem, v6)?;
                let udata = attr(elem, NFTA_SET_ELEM_USERDATA).unwrap_or(&[]);
                Some((live, udata.to_vec()))
            })?);
        }
        Ok(out)
    }

    /// The proto/ports of the `protected` set: what the gate closes on this host.
    pub fn list_protected(&mut self) -> Result<Vec<Access>, NftError> {
        self.elements(SET_PROTECTED, IfAbsent::Fail, |elem| {
            let key = attr(attr(elem, NFTA_SET_ELEM_KEY)?, NFTA_DATA_VALUE)?;
            decode_protected_key(key)
        })
    }

    /// Remove grants from the allow sets (a revocation): one batch per `UPSERT_BATCH` grants.
    /// A grant that is not there (the kernel expired it a moment before our own clock did, or
    /// an admin deleted it) is no error: DELSETELEM answers ENOENT for it and aborts its whole
    /// batch, so that batch is retried one grant at a time and the absent ones are skipped.
    /// (`NFT_MSG_DESTROYSETELEM`, which ignores absent elements, needs Linux 6.3.)
    pub fn delete(&mut self, elems: &[Element]) -> Result<(), NftError> {
        for chunk in elems.chunks(UPSERT_BATCH) {
            match self.delete_batch(chunk) {
                Err(BatchError::Kernel { errno, .. }) if errno == libc::ENOENT => {
                    for e in chunk {
                        match self.delete_batch(std::slice::from_ref(e)) {
                            Err(BatchError::Kernel { errno, .. }) if errno == libc::ENOENT => {}
                            r => r.map_err(batch_error)?,
                        }
                    }
                }
                r => r.map_err(batch_error)?,
            }
        }
        Ok(())
    }

    fn delete_batch(&mut self, elems: &[Element]) -> Result<(), BatchFail> {
        self.batch_start();
        self.grants(false, elems, false);
        self.grants(false, elems, true);
        self.commit()
    }

    /// Live grants of both allow sets.
    pub fn list(&mut self) -> Result<Vec<LiveElement>, NftError> {
        let mut out = Vec::new();
        for (set, v6) in [(SET_ALLOW_V4, false), (SET_ALLOW_V6, true)] {
            out.extend(self.elements(set, IfAbsent::Fail, |elem| parse_live(elem, v6))?);
        }
        for v6 in [false, true] {
            for (addr, access, to) in self.nat_targets(v6)? {
                if let Some(e) = out
                    .iter_mut()
                    .find(|e| e.addr == addr && e.access == access)
                {
                    e.nat = Some(NatTarget {
                        to,
                        source: SourceNat::Keep,
                        dnat: true,
                    });
                }
            }
            let routed = self.forwards(v6)?;
            out.extend(routed);
            let gateways = self.gateways(v6)?;
            out.extend(gateways);
        }
        Ok(out)
    }
}

/// The key of an allow-set element, on the stack: [`element_key`]'s buffer and used length.
pub(super) struct GrantKey(pub(super) ([u8; 24], usize));

impl AsRef<[u8]> for GrantKey {
    fn as_ref(&self) -> &[u8] {
        let (k, len) = &self.0;
        k.get(..*len).unwrap_or(k)
    }
}

/// One element of a GETSETELEM dump → a grant, if its key is one of ours.
pub(super) fn parse_live(elem: &[u8], v6: bool) -> Option<LiveElement> {
    let key = attr(attr(elem, NFTA_SET_ELEM_KEY)?, NFTA_DATA_VALUE)?;
    let (addr, access) = decode_key(key, v6)?;
    let timeout_ms = attr(elem, NFTA_SET_ELEM_TIMEOUT)
        .and_then(be_u64)
        .unwrap_or(0);
    let expires_ms = attr(elem, NFTA_SET_ELEM_EXPIRATION)
        .and_then(be_u64)
        .unwrap_or(0);
    Some(LiveElement {
        addr,
        access,
        timeout_ms,
        expires_ms,
        nat: None,
        gateway: None,
    })
}

/// The key of an allow-set element: `addr . proto . port`, each field padded to 4 bytes as
/// the kernel lays out concatenations in 32-bit registers: v4 = addr(4) | proto(1)+pad(3) |
/// port big-endian(2)+pad(2) = 12 bytes; v6 = 16 + 4 + 4 = 24 bytes. Returns the buffer and the
/// used length.
pub fn element_key(addr: IpAddr, access: Access) -> ([u8; 24], usize) {
    let mut k = [0u8; 24];
    let a = match addr {
        IpAddr::V4(a) => {
            k[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            k[..16].copy_from_slice(&a.octets());
            16
        }
    };
    k[a] = access.proto.number();
    k[a + 4..a + 6].copy_from_slice(&access.port.to_be_bytes());
    (k, a + 8)
}

/// The inverse of [`element_key`]; `None` for a key that is not one of ours.
pub fn decode_key(key: &[u8], v6: bool) -> Option<(IpAddr, Access)> {
    let a = if v6 { 16 } else { 4 };
    if key.len() != a + 8 {
        return None;
    }
    let addr = if v6 {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(key.get(..16)?).ok()?))
    } else {
        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(key.get(..4)?).ok()?))
    };
    let proto = Proto::from_number(*key.get(a)?)?;
    let port = u16::from_be_bytes(key.get(a + 4..a + 6)?.try_into().ok()?);
    Some((addr, Access::new(proto, port)?))
}

/// The inverse of [`protected_key`]; `None` for a key that is not one of ours.
pub fn decode_protected_key(key: &[u8]) -> Option<Access> {
    if key.len() != 8 {
        return None;
    }
    let proto = Proto::from_number(*key.first()?)?;
    let port = u16::from_be_bytes(key.get(4..6)?.try_into().ok()?);
    Access::new(proto, port)
}

/// An element's userdata holding `comment` the way nft writes an element comment
/// ([`NFTNL_UDATA_SET_ELEM_COMMENT`]: type, length, the text NUL-terminated), so `nft list`
/// shows it as `comment "…"`. `None` if it does not fit one TLV (255 bytes with the NUL).
pub fn element_comment(comment: &str) -> Option<Vec<u8>> {
    let len = u8::try_from(comment.len() + 1).ok()?;
    let mut u = Vec::with_capacity(comment.len() + 3);
    u.extend_from_slice(&[NFTNL_UDATA_SET_ELEM_COMMENT, len]);
    u.extend_from_slice(comment.as_bytes());
    u.push(0);
    Some(u)
}

/// The comment in an element's userdata, if it holds one written as [`element_comment`] does.
pub fn element_comment_text(udata: &[u8]) -> Option<&str> {
    let (&ty, rest) = udata.split_first()?;
    let (&len, rest) = rest.split_first()?;
    let text = rest.get(..usize::from(len))?;
    if ty != NFTNL_UDATA_SET_ELEM_COMMENT {
        return None;
    }
    std::str::from_utf8(text.strip_suffix(&[0])?).ok()
}

/// The key of a `protected` element: proto(1)+pad(3) | port big-endian(2)+pad(2).
pub fn protected_key(access: Access) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[0] = access.proto.number();
    k[4..6].copy_from_slice(&access.port.to_be_bytes());
    k
}

/// A set of the owned table.
pub(crate) struct SetDef {
    pub(super) name: &'static str,
    /// Transaction-local id (`NFTA_SET_ID`).
    pub(super) id: u32,
    /// nft's datatype ids, concatenated 6 bits apart (nftables `concat_subtype_add`):
    /// ipv4_addr 7, ipv6_addr 8, inet_proto 12, inet_service 13.
    pub(super) key_type: u32,
    pub(super) key_len: u32,
    pub(super) flags: u32,
    /// `(default timeout ms, size)` of a dynamic set.
    pub(super) dynamic: Option<(u64, u32)>,
    /// A map's `(data type, data length)` (nft datatype ids as for `key_type`).
    pub(super) data: Option<(u32, u32)>,
    /// nft's `NFTNL_UDATA_SET_*` TLVs (key byte order, concatenation info), byte for byte what
    /// nft 1.0.6 sends for the same declaration, so `nft list` prints these sets as it would
    /// have printed its own. The kernel stores them opaquely.
    pub(super) userdata: &'static [u8],
}

/// nft 1.0.6's userdata of a concatenated key (the key's byte order and field lengths), so
/// `nft list` prints the set's type back.
pub(super) const UDATA_CONCAT: &[u8] = &[
    0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x03, 0x08, 0x00, 0x04, 0x0d, 0x00, 0x00, 0x00, 0x01, 0x00,
];
/// ... and of a single address key.
pub(super) const UDATA_ADDR: &[u8] = &[0x00, 0x04, 0x02, 0x00, 0x00, 0x00];
/// `typeof @th,72,64` as nft 1.0.6 records it: key byte order big endian, then the typeof
/// expression (`payload`, base transport header, offset 72 bits, length 64 bits), so that
/// `nft list` prints the declaration back instead of a bare `type integer`.
const UDATA_TYPEOF_HINT: &[u8] = &[
    0x00, 0x04, 0x02, 0x00, 0x00, 0x00, 0x03, 0x26, 0x00, 0x04, 0x07, 0x00, 0x00, 0x00, 0x01, 0x1e,
    0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x02, 0x04, 0x03, 0x00,
    0x00, 0x00, 0x03, 0x04, 0x48, 0x00, 0x00, 0x00, 0x04, 0x04, 0x40, 0x00, 0x00, 0x00,
];
/// A key type of three concatenated nft datatypes (nftables `concat_subtype_add`).
pub(super) const fn concat3(a: u32, b: u32, c: u32) -> u32 {
    (a << 12) | (b << 6) | c
}

pub(super) const SETS: &[SetDef] = &[
    SetDef {
        name: SET_ALLOW_V4,
        id: 1,
        key_type: concat3(7, 12, 13),
        key_len: 12,
        flags: NFT_SET_TIMEOUT,
        dynamic: None,
        data: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: SET_ALLOW_V6,
        id: 2,
        key_type: concat3(8, 12, 13),
        key_len: 24,
        flags: NFT_SET_TIMEOUT,
        dynamic: None,
        data: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: SET_PROTECTED,
        id: 3,
        key_type: (12 << 6) | 13,
        key_len: 8,
        flags: 0,
        dynamic: None,
        data: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: SET_KNOCK_RATE_V4,
        id: 4,
        key_type: 7,
        key_len: 4,
        flags: NFT_SET_TIMEOUT | NFT_SET_EVAL,
        dynamic: Some((KNOCK_RATE_TIMEOUT_MS, KNOCK_RATE_SIZE)),
        data: None,
        userdata: UDATA_ADDR,
    },
    SetDef {
        name: SET_KNOCK_RATE_V6,
        id: 5,
        key_type: 8,
        key_len: 16,
        flags: NFT_SET_TIMEOUT | NFT_SET_EVAL,
        dynamic: Some((KNOCK_RATE_TIMEOUT_MS, KNOCK_RATE_SIZE)),
        data: None,
        userdata: UDATA_ADDR,
    },
    SetDef {
        name: SET_KNOCK_HINTS,
        id: 6,
        // nft's `integer` datatype: a raw payload key.
        key_type: 4,
        key_len: 8,
        flags: NFT_SET_TIMEOUT,
        dynamic: None,
        data: None,
        userdata: UDATA_TYPEOF_HINT,
    },
    SetDef {
        name: SET_FWKNOP_SRC_V4,
        id: 7,
        key_type: 7,
        key_len: 4,
        flags: NFT_SET_INTERVAL,
        dynamic: None,
        data: None,
        userdata: UDATA_ADDR,
    },
    SetDef {
        name: SET_FWKNOP_SRC_V6,
        id: 8,
        key_type: 8,
        key_len: 16,
        flags: NFT_SET_INTERVAL,
        dynamic: None,
        data: None,
        userdata: UDATA_ADDR,
    },
];

/// What [`Nft::elements`] makes of a set that is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IfAbsent {
    /// No elements: the set exists only while the config needs it (NAT, gateway).
    Empty,
    /// An error naming the set.
    Fail,
}

impl Nft {
    /// Every element of `set` that `decode` accepts (it gets each element's attributes; what
    /// it returns `None` for is skipped): the one dump of set elements every listing uses.
    pub(super) fn elements<T>(
        &mut self,
        set: &'static str,
        if_absent: IfAbsent,
        mut decode: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<Vec<T>, NftError> {
        let mut out = Vec::new();
        let r = self.request(
            NFT_MSG_GETSETELEM,
            true,
            |m| {
                m.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
                m.attr_str(NFTA_SET_ELEM_LIST_SET, set);
            },
            |m| {
                let Some((_, body)) = nfgen(m.payload) else {
                    return;
                };
                let Some(list) = attr(body, NFTA_SET_ELEM_LIST_ELEMENTS) else {
                    return;
                };
                out.extend(attrs(list).filter_map(|(_, elem)| decode(elem)));
            },
        );
        match r {
            Ok(Ok(())) => Ok(out),
            Ok(Err(e)) if e == libc::ENOENT && if_absent == IfAbsent::Empty => Ok(out),
            Ok(Err(e)) => Err(kernel_error("list the elements of", Object::Set(set), e)),
            Err(source) => Err(NftError::Socket { op: "use", source }),
        }
    }
}
