//! Role presets: named catalogues of roles that a tenant can be created with (`preset` in
//! `POST /v1/tenants` and in data files). Each ships as a data file under `deploy/presets/`
//! (a `presets:` entry with its roles, a sample tenant and `tests:`), embedded here so that a
//! preset works wherever the binary runs.
//!
//! A preset's roles are copied into the tenant when it is created: they are the tenant's from
//! then on (a later release changing a preset never changes what an existing tenant grants).
//! Every preset role carries the lowest [`Tier`](super::Tier) it is available in; in a tenant
//! whose RBAC tier is lower the role is listed as locked, cannot be assigned and grants nothing.

use std::sync::OnceLock;

use serde::Deserialize;

use super::Role;

/// A named role catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// Every role carries its tier.
    pub roles: Vec<Role>,
}

/// The preset data files built into the binary, by preset id.
pub const FILES: &[(&str, &str)] = &[
    (
        "standard",
        include_str!("../../deploy/presets/standard.yaml"),
    ),
    ("tiered", include_str!("../../deploy/presets/tiered.yaml")),
    (
        "access-control",
        include_str!("../../deploy/presets/access-control.yaml"),
    ),
    (
        "group-levels",
        include_str!("../../deploy/presets/group-levels.yaml"),
    ),
];

/// The built-in presets, parsed once. A file that does not load (a build defect the unit tests
/// catch) contributes no preset: asking for it answers "unknown preset", never a panic.
fn builtin() -> &'static [Preset] {
    static PRESETS: OnceLock<Vec<Preset>> = OnceLock::new();
    PRESETS.get_or_init(|| {
        FILES
            .iter()
            .filter_map(|(id, text)| {
                let ps = super::file::presets_of(text).ok()?;
                ps.into_iter().find(|p| p.id == *id)
            })
            .collect()
    })
}

/// The built-in preset `id`.
pub fn get(id: &str) -> Option<&'static Preset> {
    builtin().iter().find(|p| p.id == id)
}

/// Ids of the built-in presets, in catalogue order.
pub fn ids() -> Vec<&'static str> {
    builtin().iter().map(|p| p.id.as_str()).collect()
}

/// The 422 message for an unknown preset.
pub fn unknown(id: &str) -> String {
    format!(
        "unknown preset '{id}'; built-in presets: {}",
        ids().join(", ")
    )
}

/// A preset as a data file declares it (`presets:`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPreset {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub roles: Vec<serde_saphyr::Spanned<super::file::RawRole>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Rbac, Tier};

    #[test]
    fn every_builtin_preset_loads() {
        assert_eq!(
            ids(),
            ["standard", "tiered", "access-control", "group-levels"]
        );
        for p in builtin() {
            assert!(p.roles.iter().all(|r| r.tier.is_some()), "{}", p.id);
        }
    }

    #[test]
    fn tiered_has_7_basic_and_14_enterprise_roles() {
        let p = get("tiered").unwrap();
        let basic = p.roles.iter().filter(|r| !r.locked_in(Rbac::Basic)).count();
        assert_eq!(basic, 7);
        assert_eq!(p.roles.len(), 14);
        // IAM has a manager and a viewer, no operator.
        assert!(p.roles.iter().all(|r| r.id != "iam-operator"));
        assert_eq!(
            p.roles
                .iter()
                .filter(|r| r.tier == Some(Tier::Enterprise))
                .count(),
            7
        );
    }
}
