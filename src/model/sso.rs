//! Single sign-on: a tenant trusts an identity provider's tokens and maps the provider's group
//! names to role assignments at scopes. A request with such a token gets exactly the mapped
//! roles of the groups its group claim names (no user record). Enterprise tenants only.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{check_id, check_text};

/// Most keys one tenant trusts.
pub const MAX_SSO_KEYS: usize = 16;
/// Most mappings of one tenant.
pub const MAX_SSO_MAPPINGS: usize = 1024;
/// Most distinct group names the mappings of one tenant name (a token's groups are decided as a
/// fixed-size set of this many bits).
pub const MAX_SSO_GROUPS: usize = 256;
/// The issuer of Portcullis's own session tokens: never an identity provider's.
const RESERVED_ISSUER: &str = "portcullis";

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_subject_claim() -> String {
    "sub".into()
}

/// A tenant's identity provider and its group mappings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sso {
    /// The `iss` of the provider's tokens; a token with this issuer on this tenant is an SSO
    /// token.
    pub issuer: String,
    /// The provider's public signing keys.
    pub keys: Vec<SsoKey>,
    /// When set, a token's `aud` must contain it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The claim listing the token's groups (a list of strings, or one string).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The claim naming the subject (reported to gateways and plugins; decides nothing).
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    #[serde(default)]
    pub mappings: Vec<SsoMapping>,
}

/// One public key: SPKI PEM (`pem`) or a JWK (`kty` and its members, as in the provider's JWKS;
/// other JWK members are ignored and not stored).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SsoKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `EdDSA` or `RS256` (implied by the key when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kty: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// Members of the provider's group `group` get `role` at `scope` (and its subtree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoMapping {
    pub group: String,
    pub role: String,
    pub scope: String,
}

impl Sso {
    /// The distinct mapped group names, sorted: the order of the snapshot's SSO groups.
    pub fn group_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.mappings.iter().map(|m| m.group.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Every problem of this setting as (field, message), fields named from `sso`
    /// (`sso.keys[0]`, `sso.mappings[2].role`). `role` and `node` say whether an id exists in
    /// the tenant.
    pub fn problems(
        &self,
        role: impl Fn(&str) -> bool,
        node: impl Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut err = |f: String, m: String| out.push((f, m));
        let iss = self.issuer.trim();
        if iss.is_empty() {
            err("sso.issuer".into(), "issuer must not be empty".into());
        } else if iss == RESERVED_ISSUER {
            err(
                "sso.issuer".into(),
                format!("'{RESERVED_ISSUER}' is the issuer of Portcullis's own session tokens"),
            );
        } else if iss != self.issuer {
            err(
                "sso.issuer".into(),
                "issuer must not start or end with spaces".into(),
            );
        } else if let Err(m) = check_text("issuer", &self.issuer) {
            err("sso.issuer".into(), m);
        }
        if let Some(a) = &self.audience {
            if a.is_empty() {
                err("sso.audience".into(), "audience must not be empty".into());
            } else if let Err(m) = check_text("audience", a) {
                err("sso.audience".into(), m);
            }
        }
        for (f, c) in [
            ("sso.groups_claim", &self.groups_claim),
            ("sso.subject_claim", &self.subject_claim),
        ] {
            if let Err(m) = check_id("claim name", c) {
                err(f.into(), m);
            }
        }
        if self.groups_claim == self.subject_claim {
            err(
                "sso.groups_claim".into(),
                "the groups claim and the subject claim must differ".into(),
            );
        }
        if self.keys.is_empty() {
            err("sso.keys".into(), "at least one key is required".into());
        }
        if self.keys.len() > MAX_SSO_KEYS {
            err(
                "sso.keys".into(),
                format!("at most {MAX_SSO_KEYS} keys, got {}", self.keys.len()),
            );
        }
        let mut kids = HashSet::new();
        let mut unnamed = 0;
        for (i, k) in self.keys.iter().enumerate() {
            let f = format!("sso.keys[{i}]");
            match &k.kid {
                Some(kid) => {
                    if let Err(m) = check_text("kid", kid).and_then(|()| {
                        if kid.is_empty() {
                            Err("kid must not be empty".into())
                        } else {
                            Ok(())
                        }
                    }) {
                        err(format!("{f}.kid"), m);
                    } else if !kids.insert(kid.as_str()) {
                        err(
                            format!("{f}.kid"),
                            format!("kid '{kid}' is used by another key"),
                        );
                    }
                }
                None => unnamed += 1,
            }
            if let Err(m) = crate::identity::sso::key_material(k) {
                err(f, m);
            }
        }
        if unnamed > 0 && self.keys.len() > 1 {
            err(
                "sso.keys".into(),
                "with more than one key, every key needs a 'kid'".into(),
            );
        }
        if self.mappings.len() > MAX_SSO_MAPPINGS {
            err(
                "sso.mappings".into(),
                format!(
                    "at most {MAX_SSO_MAPPINGS} mappings, got {}",
                    self.mappings.len()
                ),
            );
        }
        let mut seen = HashSet::new();
        for (i, m) in self.mappings.iter().enumerate() {
            let f = format!("sso.mappings[{i}]");
            if m.group.is_empty() {
                err(format!("{f}.group"), "group must not be empty".into());
            } else if let Err(e) = check_text("group", &m.group) {
                err(format!("{f}.group"), e);
            }
            if !role(&m.role) {
                err(format!("{f}.role"), format!("unknown role '{}'", m.role));
            }
            if !node(&m.scope) {
                err(
                    format!("{f}.scope"),
                    format!("unknown scope node '{}'", m.scope),
                );
            }
            if !seen.insert((&m.group, &m.role, &m.scope)) {
                err(f, format!("duplicate mapping of group '{}'", m.group));
            }
        }
        let groups = self.group_names().len();
        if groups > MAX_SSO_GROUPS {
            err(
                "sso.mappings".into(),
                format!("at most {MAX_SSO_GROUPS} distinct groups, got {groups}"),
            );
        }
        out
    }
}
