//! Key hashing and key groups.
//!
//! A key is hashed to a 64-bit value; its key group is `hash % max_parallelism`;
//! the subtask owning key group `g` at parallelism `p` is `g * p / max_parallelism`.
//! Subtask `i` thus owns the contiguous range [`key_group_range`], so state
//! kept per key group can be redistributed on rescale by moving whole ranges.
//!
//! The hash is part of the state format (savepoints store state by key group):
//! it must never change for a given key value.

use std::ops::Range;

/// The murmur3 64-bit finaliser: a bijective mix with full avalanche.
#[inline]
pub fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Hash of an integer key (every integer type hashes as its `i64` value, so
/// widening a key column keeps its key groups).
#[inline]
pub fn hash_i64(v: i64) -> u64 {
    mix64(v as u64)
}

/// Hash of a byte-string key (FNV-1a, then mixed).
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// Hash of a null key column value.
pub const NULL_HASH: u64 = 0x5bd1_e995_5bd1_e995;

/// Combines the hash of a composite key's next column into `acc`.
#[inline]
pub fn combine(acc: u64, h: u64) -> u64 {
    mix64(acc ^ h.wrapping_add(0x9e37_79b9_7f4a_7c15).wrapping_add(acc << 6))
}

/// Key group of a key hash.
#[inline]
pub fn key_group(hash: u64, max_parallelism: u32) -> u32 {
    (hash % u64::from(max_parallelism)) as u32
}

/// Subtask index that owns key group `kg` at parallelism `p`.
#[inline]
pub fn subtask_for_key_group(kg: u32, max_parallelism: u32, p: u32) -> u32 {
    ((u64::from(kg) * u64::from(p)) / u64::from(max_parallelism)) as u32
}

/// Key groups owned by subtask `index` of `p`.
pub fn key_group_range(max_parallelism: u32, p: u32, index: u32) -> Range<u32> {
    let (m, p, i) = (u64::from(max_parallelism), u64::from(p), u64::from(index));
    let start = (i * m).div_ceil(p);
    let end = ((i + 1) * m).div_ceil(p);
    start as u32..end as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_key_group_belongs_to_exactly_the_subtask_whose_range_holds_it(
            max_p in 1u32..=4096, p_seed in 0u32..4096, kg_seed in 0u32..4096,
        ) {
            let p = 1 + p_seed % max_p;
            let kg = kg_seed % max_p;
            let owner = subtask_for_key_group(kg, max_p, p);
            prop_assert!(owner < p);
            prop_assert!(key_group_range(max_p, p, owner).contains(&kg));
        }

        #[test]
        fn ranges_partition_all_key_groups(max_p in 1u32..=2048, p_seed in 0u32..2048) {
            let p = 1 + p_seed % max_p;
            let mut next = 0;
            for i in 0..p {
                let r = key_group_range(max_p, p, i);
                prop_assert_eq!(r.start, next);
                prop_assert!(r.end > r.start, "subtask {} of {} owns no key group", i, p);
                next = r.end;
            }
            prop_assert_eq!(next, max_p);
        }
    }

    #[test]
    fn hash_is_stable() {
        // Part of the state format: these values must never change.
        assert_eq!(hash_i64(0), 0);
        assert_eq!(hash_i64(42), 0x8108_7960_8e42_59cc);
        assert_eq!(hash_i64(-1), 0x64b5_720b_4b82_5f21);
        assert_eq!(key_group(hash_i64(42), 128), 76);
        assert_eq!(hash_bytes(b"apple"), 0x9bd6_c11a_2c6b_f096);
        assert_eq!(key_group(hash_bytes(b"apple"), 128), 22);
        assert_ne!(hash_bytes(b"apple"), hash_bytes(b"google"));
    }
}
