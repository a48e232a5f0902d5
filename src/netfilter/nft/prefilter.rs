//! The junk filter of the knock chain (issue 11): the key hints valid right now
//! ([`SET_KNOCK_HINTS`], elements with the timeout of their epoch), the fwknop clients'
//! `sources` as interval sets ([`SET_FWKNOP_SRC_V4`], `_V6`), and the named counters of what
//! it drops. Builds messages; talks to the kernel through [`Nft::commit`] and
//! [`Nft::request`]. The interval arithmetic ([`merged_ranges`], [`interval_elements`]) is pure.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::batch::batch_error;
use super::expr::data_value;
use super::sets::IfAbsent;
use super::*;

/// The networks of one family in `nets` as sorted, disjoint, non-adjacent inclusive ranges
/// (`(first, last)` as integers; IPv4 in the low 32 bits). The kernel's interval set refuses
/// overlapping intervals, and nft prints adjacent ones merged, so they are merged here.
pub fn merged_ranges(nets: &[IpNet], v6: bool) -> Vec<(u128, u128)> {
    let mut r: Vec<(u128, u128)> = nets
        .iter()
        .filter_map(|n| match (n, v6) {
            (IpNet::V4(n), false) => Some((
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())),
            )),
            (IpNet::V6(n), true) => Some((u128::from(n.network()), u128::from(n.broadcast()))),
            _ => None,
        })
        .collect();
    r.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        match out.last_mut() {
            Some((_, last)) if lo <= last.saturating_add(1) => *last = (*last).max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The elements nft 1.0.6 sends for the interval set of `nets` (one family): a range
/// `a..=b` is a start element `a` and an end element `b + 1` flagged
/// `NFT_SET_ELEM_INTERVAL_END` (none when `b` is the family's last address: the interval is
/// open to the end); an end element at address 0 comes first when the first range does not
/// start there (nft's `set_to_intervals`). `(address, is_end)`.
pub fn interval_elements(nets: &[IpNet], v6: bool) -> Vec<(u128, bool)> {
    let max = if v6 { u128::MAX } else { u128::from(u32::MAX) };
    let ranges = merged_ranges(nets, v6);
    let mut out = Vec::with_capacity(2 * ranges.len() + 1);
    if ranges.first().is_some_and(|&(lo, _)| lo != 0) {
        out.push((0, true));
    }
    for (lo, hi) in ranges {
        out.push((lo, false));
        if hi < max {
            out.push((hi + 1, true));
        }
    }
    out
}

/// An address of the family as the set key: 4 or 16 bytes, network order.
fn addr_key(a: u128, v6: bool) -> ([u8; 16], usize) {
    if v6 {
        (a.to_be_bytes(), 16)
    } else {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&(a as u32).to_be_bytes());
        (k, 4)
    }
}

fn addr_text(a: u128, v6: bool) -> String {
    if v6 {
        Ipv6Addr::from(a).to_string()
    } else {
        Ipv4Addr::from(a as u32).to_string()
    }
}

/// How `nft list` prints the elements of the interval set of `nets`: an address, a prefix
/// `net/len` when the range is one, else `first-last`.
pub(super) fn intervals_text(nets: &[IpNet], v6: bool) -> Vec<String> {
    let bits = if v6 { 128 } else { 32 };
    merged_ranges(nets, v6)
        .into_iter()
        .map(|(lo, hi)| {
            if lo == hi {
                return addr_text(lo, v6);
            }
            let size = hi - lo; // = 2^k − 1 for a prefix of length bits − k
            let host_bits = 128 - size.leading_zeros();
            let aligned = size.checked_add(1).is_none_or(|n| n.is_power_of_two())
                && lo & size == 0
                && host_bits <= bits;
            if aligned {
                format!("{}/{}", addr_text(lo, v6), bits - host_bits)
            } else {
                format!("{}-{}", addr_text(lo, v6), addr_text(hi, v6))
            }
        })
        .collect()
}

impl Nft {
    /// `counter NAME { }`: create the named counter if absent. An existing counter keeps its
    /// numbers (`nf_tables_newobj` leaves an object without an `update` op as it is).
    pub(super) fn add_counter(&mut self, name: &'static str) {
        let object = Object::Counter(name);
        let (s, m) = self.begin(NFT_MSG_NEWOBJ, NLM_F_CREATE, NFPROTO_INET, "create", object);
        m.attr_str(NFTA_OBJ_TABLE, TABLE);
        m.attr_str(NFTA_OBJ_NAME, name);
        m.attr_u32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
        let d = m.nest(NFTA_OBJ_DATA);
        m.attr_u64(NFTA_COUNTER_BYTES, 0);
        m.attr_u64(NFTA_COUNTER_PACKETS, 0);
        m.nest_end(d);
        m.end(s);
    }

    /// Replace the elements of the fwknop source sets with `nets` (flush + add, in the batch
    /// being built, so the change is atomic with the rest of it).
    pub(super) fn fwknop_sources(&mut self, nets: &[IpNet]) {
        for (set, v6) in [(SET_FWKNOP_SRC_V4, false), (SET_FWKNOP_SRC_V6, true)] {
            self.interval_set(set, nets, v6);
        }
    }

    /// Replace the elements of the interval `set` of one family with `nets` (flush + add).
    pub(super) fn interval_set(&mut self, set: &'static str, nets: &[IpNet], v6: bool) {
        {
            self.flush_set(set);
            let elems = interval_elements(nets, v6);
            for chunk in elems.chunks(ELEMS_PER_MSG) {
                let (s, m) = self.begin(
                    NFT_MSG_NEWSETELEM,
                    NLM_F_CREATE,
                    NFPROTO_INET,
                    "add elements to",
                    Object::Set(set),
                );
                m.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
                m.attr_str(NFTA_SET_ELEM_LIST_SET, set);
                let list = m.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
                for &(addr, end) in chunk {
                    let e = m.nest(NFTA_LIST_ELEM);
                    if end {
                        m.attr_u32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
                    }
                    let (k, len) = addr_key(addr, v6);
                    data_value(m, NFTA_SET_ELEM_KEY, k.get(..len).unwrap_or(&k));
                    m.nest_end(e);
                }
                m.nest_end(list);
                m.end(s);
            }
        }
    }

    /// Add key hints to [`SET_KNOCK_HINTS`], each with its timeout, in one atomic batch; with
    /// `replace`, the set is flushed first in the same batch, so hints of clients no longer
    /// configured leave at the same instant the new ones arrive. An empty `hints` with
    /// `replace` empties the set.
    pub fn write_hints(&mut self, hints: &[HintElement], replace: bool) -> Result<(), NftError> {
        if !replace && hints.is_empty() {
            return Ok(());
        }
        self.batch_start();
        if replace {
            self.flush_set(SET_KNOCK_HINTS);
        }
        for chunk in hints.chunks(ELEMS_PER_MSG) {
            // A timeout of 0 would mean "never expires" to the kernel: at least 1 ms.
            let elems = chunk.iter().map(|(k, ms)| (k, Some((*ms).max(1))));
            self.set_elements(true, SET_KNOCK_HINTS, elems);
        }
        self.commit().map_err(batch_error)
    }

    /// The hint set's size and the junk counters, read from the kernel.
    pub fn prefilter_stats(&mut self) -> Result<PrefilterStats, NftError> {
        let hints = self
            .elements(SET_KNOCK_HINTS, IfAbsent::Fail, |_| Some(()))?
            .len();
        Ok(PrefilterStats {
            hints,
            junk_native: self.counter(COUNTER_JUNK_NATIVE)?,
            junk_fwknop: self.counter(COUNTER_JUNK_FWKNOP)?,
        })
    }

    /// `(packets, bytes)` of a named counter of our table.
    fn counter(&mut self, name: &'static str) -> Result<(u64, u64), NftError> {
        let mut got = (0, 0);
        let r = self.request(
            NFT_MSG_GETOBJ,
            false,
            |m| {
                m.attr_str(NFTA_OBJ_TABLE, TABLE);
                m.attr_str(NFTA_OBJ_NAME, name);
                m.attr_u32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
            },
            |m| {
                let Some(data) = nfgen(m.payload).and_then(|(_, b)| attr(b, NFTA_OBJ_DATA)) else {
                    return;
                };
                let u = |t| attr(data, t).and_then(be_u64).unwrap_or(0);
                got = (u(NFTA_COUNTER_PACKETS), u(NFTA_COUNTER_BYTES));
            },
        );
        match r {
            Ok(Ok(())) => Ok(got),
            Ok(Err(e)) => Err(kernel_error("read", Object::Counter(name), e)),
            Err(source) => Err(NftError::Socket { op: "use", source }),
        }
    }
}
