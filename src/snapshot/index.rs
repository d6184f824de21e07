//! Id → index maps laid out for one cache miss per lookup.
//!
//! rkyv's archived hash map keeps control bytes, buckets and (for keys over 8 bytes) the key
//! text in three places, so a cold lookup of a node id costs three dependent cache misses. An
//! [`IdIndex`] is an open-addressing table (linear probing, load ≤ 0.7) of 16-byte slots that
//! hold the item index and the key itself when it is at most 12 bytes without a NUL — node and
//! user ids usually are — so a cold lookup usually touches one cache line. Longer keys live in
//! a byte arena next to the slots (a second miss).
//!
//! The owned form stays a plain `FxHashMap<String, u32>` (`#[rkyv(with = AsIdIndex)]`), so
//! code building or editing a [`TenantSnap`](super::TenantSnap) is unaffected; the archived
//! form has the same `get(&str) -> Option<&u32>` as an archived map.

use rkyv::rancor::Fallible;
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::ArchivedVec;
use rkyv::with::{ArchiveWith, DeserializeWith, SerializeWith};
use rkyv::{Archive, Archived, Deserialize, Place, Serialize};
use rustc_hash::FxHashMap;

use super::NONE;

/// Longest key stored inside its slot.
const INLINE: usize = 12;
/// First key byte of a slot whose key lives in the arena (never the first byte of UTF-8).
const LONG: u8 = 0xFF;

/// One slot: an item index ([`NONE`] when empty) and its key (inline, NUL-padded; or [`LONG`]
/// followed by the arena offset and length as little-endian `u32`s at bytes 4..8 and 8..12).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdSlot {
    pub idx: u32,
    pub key: [u8; INLINE],
}

/// The archived layout of an id index (see the module docs).
#[derive(Archive, Serialize, Deserialize, Debug, Default)]
pub struct IdIndex {
    pub slots: Vec<IdSlot>,
    /// Text of keys longer than [`INLINE`] bytes (or containing NUL).
    pub long: Vec<u8>,
}

/// `#[rkyv(with = AsIdIndex)]` archives a `FxHashMap<String, u32>` as an [`IdIndex`].
pub struct AsIdIndex;

/// A key packed as it is stored inline in a slot — bytes 0..8 and 8..12 as little-endian
/// words, NUL-padded — if it fits: at most [`INLINE`] bytes and no NUL (so the padding is
/// unambiguous). Branch-light: two or three word loads instead of a byte loop.
#[inline]
fn pack(key: &[u8]) -> Option<(u64, u32)> {
    let n = key.len();
    let load8 = |at: usize| u64::from_le_bytes(key[at..at + 8].try_into().unwrap_or([0; 8]));
    let load4 = |at: usize| u32::from_le_bytes(key[at..at + 4].try_into().unwrap_or([0; 4]));
    let (w0, w1) = match n {
        0..=3 => (
            key.iter()
                .enumerate()
                .fold(0u64, |w, (i, &b)| w | u64::from(b) << (8 * i)),
            0,
        ),
        // Overlapping loads; the shifts drop the bytes read twice.
        4..=7 => (
            u64::from(load4(0)) | (u64::from(load4(n - 4)) >> (8 * (8 - n))) << 32,
            0,
        ),
        8 => (load8(0), 0),
        9..=INLINE => (load8(0), load4(n - 4) >> (8 * (INLINE - n))),
        _ => return None,
    };
    // Reject keys containing NUL: set the padding bytes, then test for a zero byte.
    let pad0 = if n >= 8 { 0 } else { u64::MAX << (8 * n) };
    let pad1 = if n >= INLINE {
        0
    } else if n <= 8 {
        u32::MAX
    } else {
        u32::MAX << (8 * (n - 8))
    };
    let (v0, v1) = (w0 | pad0, w1 | pad1);
    let zero0 = v0.wrapping_sub(0x0101_0101_0101_0101) & !v0 & 0x8080_8080_8080_8080;
    let zero1 = v1.wrapping_sub(0x0101_0101) & !v1 & 0x8080_8080;
    (zero0 == 0 && zero1 == 0).then_some((w0, w1))
}

/// The slot form of a packed key.
fn packed_bytes((w0, w1): (u64, u32)) -> [u8; INLINE] {
    let mut k = [0u8; INLINE];
    k[..8].copy_from_slice(&w0.to_le_bytes());
    k[8..].copy_from_slice(&w1.to_le_bytes());
    k
}

/// The words of a slot's key bytes.
#[inline]
fn slot_words(k: &[u8; INLINE]) -> (u64, u32) {
    let mut w0 = [0u8; 8];
    let mut w1 = [0u8; 4];
    w0.copy_from_slice(&k[..8]);
    w1.copy_from_slice(&k[8..]);
    (u64::from_le_bytes(w0), u32::from_le_bytes(w1))
}

const K: u64 = 0xf135_7aea_2e62_a9c5;

#[inline]
fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(K).rotate_left(26)
}

/// murmur3's finaliser: every input bit affects the high bits used for the home slot.
#[inline]
fn finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A fixed hash (the archive is shipped between processes and must mean the same everywhere):
/// of the packed words for inline keys, of all bytes for the others.
#[inline]
fn hash(key: &[u8], packed: Option<(u64, u32)>) -> u64 {
    let h = (key.len() as u64).wrapping_mul(K);
    if let Some((w0, w1)) = packed {
        return finish(mix(mix(h, w0), u64::from(w1)));
    }
    let mut h = h;
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        h = mix(h, u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
    }
    let w = chunks
        .remainder()
        .iter()
        .enumerate()
        .fold(0u64, |w, (i, &b)| w | u64::from(b) << (8 * i));
    finish(mix(h, w))
}

/// The first slot probed for `hash` in a table of `cap` slots.
#[inline]
fn home(hash: u64, cap: usize) -> usize {
    (((hash >> 32) * cap as u64) >> 32) as usize
}

/// Slots for `n` keys: load factor at most 0.7, always at least one empty slot.
fn capacity(n: usize) -> usize {
    n + n * 3 / 7 + 1
}

impl IdIndex {
    /// Lays out `entries` (key, item index). Keys must be distinct.
    pub fn build<'a>(entries: impl IntoIterator<Item = (&'a str, u32)>) -> IdIndex {
        let mut entries: Vec<(&str, u32)> = entries.into_iter().collect();
        // Canonical layout whatever the iteration order of the source.
        entries.sort_unstable_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
        let cap = capacity(entries.len());
        let mut slots = vec![
            IdSlot {
                idx: NONE,
                key: [0; INLINE],
            };
            cap
        ];
        let mut long = Vec::new();
        for (key, idx) in entries {
            let b = key.as_bytes();
            let packed = pack(b);
            let slot_key = packed.map(packed_bytes).unwrap_or_else(|| {
                let mut k = [0u8; INLINE];
                k[0] = LONG;
                k[4..8].copy_from_slice(&(long.len() as u32).to_le_bytes());
                k[8..12].copy_from_slice(&(b.len() as u32).to_le_bytes());
                long.extend_from_slice(b);
                k
            });
            let mut i = home(hash(b, packed), cap);
            while slots[i].idx != NONE {
                i = if i + 1 == cap { 0 } else { i + 1 };
            }
            slots[i] = IdSlot { idx, key: slot_key };
        }
        IdIndex { slots, long }
    }

    /// Number of slots and arena bytes `map` is laid out in (what [`IdIndex::build`] makes).
    fn shape(map: &FxHashMap<String, u32>) -> (usize, usize) {
        let long = map
            .keys()
            .filter(|k| pack(k.as_bytes()).is_none())
            .map(String::len)
            .sum();
        (capacity(map.len()), long)
    }
}

impl ArchivedIdSlot {
    /// The slot's key, or `None` for an empty slot or a key pointing outside `long`.
    fn key_in<'a>(&'a self, long: &'a [u8]) -> Option<&'a [u8]> {
        if self.idx.to_native() == NONE {
            return None;
        }
        if self.key[0] == LONG {
            let at = |r: std::ops::Range<usize>| {
                let mut w = [0u8; 4];
                w.copy_from_slice(&self.key[r]);
                u32::from_le_bytes(w) as usize
            };
            let (off, len) = (at(4..8), at(8..12));
            return long.get(off..off.checked_add(len)?);
        }
        let len = self.key.iter().position(|&b| b == 0).unwrap_or(INLINE);
        Some(&self.key[..len])
    }
}

impl ArchivedIdIndex {
    /// The item index of `key`. At most one pass over the slots, even on corrupt data.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&Archived<u32>> {
        let slots = self.slots.as_slice();
        let cap = slots.len();
        if cap == 0 {
            return None;
        }
        let b = key.as_bytes();
        let packed = pack(b);
        let mut i = home(hash(b, packed), cap);
        for _ in 0..cap {
            let s = slots.get(i)?;
            if s.idx.to_native() == NONE {
                return None;
            }
            let hit = match packed {
                Some(w) => slot_words(&s.key) == w,
                None => s.key[0] == LONG && s.key_in(self.long.as_slice()) == Some(b),
            };
            if hit {
                return Some(&s.idx);
            }
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
        None
    }

    /// Every (key, item index), in slot order. Keys that are not UTF-8 or point outside the
    /// arena (corrupt data) are yielded as `None`.
    pub fn iter(&self) -> impl Iterator<Item = (Option<&str>, u32)> + '_ {
        let long = self.long.as_slice();
        self.slots
            .iter()
            .filter(|s| s.idx.to_native() != NONE)
            .map(move |s| {
                let key = s.key_in(long).and_then(|k| std::str::from_utf8(k).ok());
                (key, s.idx.to_native())
            })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.idx.to_native() != NONE)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when this index maps exactly the ids `id(0..n)` to their positions: `n` keys, each
    /// slot's key is the id of its item, and every id is found by [`get`](Self::get) (so no
    /// key is shadowed or unreachable).
    pub fn matches<'a>(&'a self, n: usize, id: impl Fn(usize) -> &'a str) -> bool {
        let long = self.long.as_slice();
        let mut count = 0usize;
        for s in self.slots.iter() {
            let x = s.idx.to_native();
            if x == NONE {
                continue;
            }
            count += 1;
            if x as usize >= n || s.key_in(long) != Some(id(x as usize).as_bytes()) {
                return false;
            }
        }
        count == n
            && count < self.slots.len()
            && (0..n).all(|i| self.get(id(i)).map(|x| x.to_native()) == Some(i as u32))
    }
}

impl ArchiveWith<FxHashMap<String, u32>> for AsIdIndex {
    type Archived = ArchivedIdIndex;
    type Resolver = IdIndexResolver;

    fn resolve_with(
        field: &FxHashMap<String, u32>,
        resolver: Self::Resolver,
        out: Place<Self::Archived>,
    ) {
        let (slots, long) = IdIndex::shape(field);
        rkyv::munge::munge!(let ArchivedIdIndex { slots: out_slots, long: out_long } = out);
        ArchivedVec::resolve_from_len(slots, resolver.slots, out_slots);
        ArchivedVec::resolve_from_len(long, resolver.long, out_long);
    }
}

impl<S> SerializeWith<FxHashMap<String, u32>, S> for AsIdIndex
where
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize_with(
        field: &FxHashMap<String, u32>,
        serializer: &mut S,
    ) -> Result<Self::Resolver, S::Error> {
        let index = IdIndex::build(field.iter().map(|(k, &v)| (k.as_str(), v)));
        Ok(IdIndexResolver {
            slots: ArchivedVec::serialize_from_slice(&index.slots, serializer)?,
            long: ArchivedVec::serialize_from_slice(&index.long, serializer)?,
        })
    }
}

impl<D> DeserializeWith<ArchivedIdIndex, FxHashMap<String, u32>, D> for AsIdIndex
where
    D: Fallible + ?Sized,
{
    fn deserialize_with(
        field: &ArchivedIdIndex,
        _: &mut D,
    ) -> Result<FxHashMap<String, u32>, D::Error> {
        Ok(field
            .iter()
            .filter_map(|(k, x)| Some((k?.to_string(), x)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worlds::Rng;

    #[derive(Archive, Serialize, Deserialize)]
    struct Holder {
        #[rkyv(with = AsIdIndex)]
        map: FxHashMap<String, u32>,
    }

    fn roundtrip(map: FxHashMap<String, u32>) -> (rkyv::util::AlignedVec, FxHashMap<String, u32>) {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&Holder { map: map.clone() }).unwrap();
        (bytes, map)
    }

    #[test]
    fn pack_is_the_padded_key() {
        let text = b"abcdefghijklmn";
        for n in 0..=text.len() {
            let key = &text[..n];
            let want = (n <= INLINE).then(|| {
                let mut k = [0u8; INLINE];
                k[..n].copy_from_slice(key);
                k
            });
            assert_eq!(pack(key).map(packed_bytes), want, "len {n}");
            for z in 0..n {
                let mut with_nul = key.to_vec();
                with_nul[z] = 0;
                assert_eq!(pack(&with_nul), None, "len {n}, NUL at {z}");
            }
        }
    }

    #[test]
    fn finds_every_key_and_nothing_else() {
        let mut rng = Rng::new(9);
        for n in [0usize, 1, 2, 7, 100, 5_000] {
            let mut map = FxHashMap::default();
            for i in 0..n {
                let key = match rng.below(5) {
                    0 => format!("asset-{i}"),
                    1 => format!("a-rather-long-identifier-{i}"),
                    2 => format!("u{i}"),
                    3 => format!("x{i}\0"),
                    _ => format!("{i:012}"),
                };
                map.insert(key, i as u32);
            }
            let (bytes, map) = roundtrip(map);
            let v = rkyv::access::<ArchivedHolder, rkyv::rancor::Error>(&bytes).unwrap();
            assert_eq!(v.map.len(), n);
            for (k, &x) in &map {
                assert_eq!(v.map.get(k).map(|x| x.to_native()), Some(x), "{k:?}");
            }
            for miss in [
                "",
                "nowhere",
                "asset-",
                "a-rather-long-identifier-",
                "x1",
                "\0",
                "u",
            ] {
                if !map.contains_key(miss) {
                    assert_eq!(v.map.get(miss), None, "{miss:?}");
                }
            }
            let mut ids: Vec<(&String, u32)> = map.iter().map(|(k, &x)| (k, x)).collect();
            ids.sort_by_key(|e| e.1);
            assert!(v.map.matches(n, |i| ids[i].0.as_str()));
            if n > 1 {
                assert!(!v.map.matches(n, |i| ids[(i + 1) % n].0.as_str()));
                assert!(!v.map.matches(n + 1, |i| ids[i % n].0.as_str()));
            }
            let back: FxHashMap<String, u32> = rkyv::deserialize::<Holder, rkyv::rancor::Error>(v)
                .unwrap()
                .map;
            assert_eq!(back, map);
        }
    }
}
