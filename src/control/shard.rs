//! Which tenants a process follows: all of them, a list, or one shard of `n` (a sidecar that
//! holds only part of the fleet's tenants — sharding past one machine's memory).

use std::collections::BTreeSet;

/// The tenants a follower holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSet {
    All,
    /// These tenants only (`--tenants a,b`).
    Only(BTreeSet<String>),
    /// Tenants whose [`shard_of`] is `index` among `count` (`--tenant-shard index/count`).
    Shard {
        index: u32,
        count: u32,
    },
}

/// The shard of `tenant` among `count`: FNV-1a (64-bit) of its id, modulo `count`. Stable across
/// builds and machines (it is part of the deployment contract).
pub fn shard_of(tenant: &str, count: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tenant.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(count.max(1))) as u32
}

impl TenantSet {
    /// `--tenants a,b` (comma-separated ids).
    pub fn only(list: &str) -> Result<TenantSet, String> {
        let set: BTreeSet<String> = list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        if set.is_empty() {
            return Err("--tenants names no tenant".into());
        }
        for t in &set {
            crate::model::check_id("tenant id", t)?;
        }
        Ok(TenantSet::Only(set))
    }

    /// `--tenant-shard i/n`: shard `i` (from 0) of `n`.
    pub fn shard(spec: &str) -> Result<TenantSet, String> {
        let bad = || {
            format!(
                "--tenant-shard '{spec}': expected INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/3"
            )
        };
        let (i, n) = spec.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(TenantSet::Shard { index, count })
    }

    pub fn contains(&self, tenant: &str) -> bool {
        match self {
            TenantSet::All => true,
            TenantSet::Only(s) => s.contains(tenant),
            TenantSet::Shard { index, count } => shard_of(tenant, *count) == *index,
        }
    }

    /// The named tenants, when the set is a list.
    pub fn named(&self) -> Option<&BTreeSet<String>> {
        match self {
            TenantSet::Only(s) => Some(s),
            _ => None,
        }
    }

    /// What this set is, for logs and messages.
    pub fn describe(&self) -> String {
        match self {
            TenantSet::All => "every tenant".into(),
            TenantSet::Only(s) => format!(
                "tenants {}",
                s.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            TenantSet::Shard { index, count } => format!("tenant shard {index}/{count}"),
        }
    }

    /// Why `tenant` (not in the set) is not served here, and where it is.
    pub fn not_here(&self, tenant: &str) -> String {
        match self {
            TenantSet::Shard { count, .. } => format!(
                "tenant '{tenant}' is not served by this sidecar ({}); it is in shard {}/{count}",
                self.describe(),
                shard_of(tenant, *count)
            ),
            _ => format!(
                "tenant '{tenant}' is not served by this sidecar (it follows {})",
                self.describe()
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_tenants() {
        let n = 3;
        let sets: Vec<TenantSet> = (0..n)
            .map(|i| TenantSet::shard(&format!("{i}/{n}")).unwrap())
            .collect();
        for k in 0..200 {
            let t = format!("tenant-{k}");
            assert_eq!(sets.iter().filter(|s| s.contains(&t)).count(), 1, "{t}");
        }
        // Fixed values: the hash is part of the deployment contract.
        assert_eq!((shard_of("femo", 3), shard_of("towerco", 3)), (1, 2));
        assert_eq!((shard_of("femo", 2), shard_of("acme", 2)), (0, 1));
        assert_eq!(shard_of("", 1), 0);
        for bad in ["3/3", "1", "a/b", "0/0", "-1/2"] {
            assert!(TenantSet::shard(bad).is_err(), "{bad}");
        }
        let only = TenantSet::only("femo, towerco").unwrap();
        assert!(only.contains("femo") && !only.contains("x"));
        assert!(only.not_here("x").contains("femo, towerco"));
        assert!(TenantSet::only(" , ").is_err());
        assert!(TenantSet::only("a b").is_err());
    }
}
