//! Business rules: each management operation, given the tenant's current document, either
//! yields the row operations of the change or a [`RuleError`] saying precisely what is wrong.
//! Pure functions: no I/O, no clock (the caller passes `now`).
//!
//! One file per entity holds every rule of an admin write to it: [`tenant`], [`node`], [`user`],
//! [`group`], [`role`], [`plugin`], [`assignment`], [`notify`] (notification rules). This file
//! has what they share: the change and error types, field-error collection, and the
//! create/update/delete skeletons. Whatever a rule lets through, [`super::ControlPlane`] still
//! checks the resulting tenant with the snapshot builder's own validation before anything is
//! committed.

/// Declares the request bodies of an entity: the create, then the patch (also `Default`: an
/// absent field changes nothing). Both are strict: an unknown field is refused.
macro_rules! requests {
    ($(#[$cm:meta])* $create:ident $cbody:tt $(#[$pm:meta])* $patch:ident $pbody:tt) => {
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $(#[$cm])*
        pub struct $create $cbody

        #[derive(Debug, Clone, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $(#[$pm])*
        pub struct $patch $pbody
    };
}

mod assignment;
mod group;
mod identity;
mod node;
mod notify;
mod plugin;
mod role;
mod tenant;
mod user;

use std::collections::BTreeMap;

use serde::Serialize;

pub use assignment::*;
pub use group::*;
pub use identity::*;
pub use node::*;
pub use notify::*;
pub use plugin::*;
pub use role::*;
pub use tenant::*;
pub use user::*;

use super::doc::{json, TenantDoc};
use crate::store::{Kind, RowOp};

/// What a rule returns.
pub type Rule = Result<Change, RuleError>;

/// What a rule decided: the audit action and target, the row operations, and the resulting
/// entity (for the response).
#[derive(Debug, Clone)]
pub struct Change {
    pub action: String,
    pub target: String,
    pub ops: Vec<RowOp>,
    pub result: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuleError {
    #[error("{what} '{id}' not found")]
    NotFound { what: &'static str, id: String },
    #[error("invalid request: {}", .0.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
}

impl RuleError {
    pub fn not_found(what: &'static str, id: &str) -> RuleError {
        RuleError::NotFound {
            what,
            id: id.to_string(),
        }
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> RuleError {
        RuleError::Invalid(vec![FieldError {
            field: field.to_string(),
            message: message.into(),
        }])
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> RuleError {
        let code = match code {
            "tenant" | "node" | "user" | "group" | "role" | "assignment" | "notification_rule" => {
                "already_exists"
            }
            c => c,
        };
        RuleError::Conflict {
            code,
            message: message.into(),
        }
    }
    /// The model's validation problems as field errors (`users[3]`: …).
    pub fn from_problems(problems: &[crate::model::Invalid]) -> RuleError {
        RuleError::Invalid(
            problems
                .iter()
                .map(|p| FieldError {
                    field: format!("{}[{}]", p.collection.as_str(), p.index),
                    message: p.message.clone(),
                })
                .collect(),
        )
    }
}

/// Collects field errors, then fails with all of them at once.
#[derive(Default)]
struct Fields(Vec<FieldError>);

impl Fields {
    fn check(&mut self, field: &str, r: Result<(), String>) {
        if let Err(m) = r {
            self.push(field, m);
        }
    }
    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Fails with the errors collected so far (and starts over).
    fn take(&mut self) -> Result<(), RuleError> {
        std::mem::take(self).done()
    }
    fn done(self) -> Result<(), RuleError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(RuleError::Invalid(self.0))
        }
    }
}

/// The entity `id` of a collection, or 404.
fn find<'a, T>(
    rows: &'a BTreeMap<String, T>,
    what: &'static str,
    id: &str,
) -> Result<&'a T, RuleError> {
    rows.get(id).ok_or_else(|| RuleError::not_found(what, id))
}

/// The update skeleton: `edit` changes a copy of entity `id` (404 when it is unknown), collects
/// field errors into its `Fields` and names the audit action; the change replaces the row.
fn edit<T: Clone + Serialize>(
    rows: &BTreeMap<String, T>,
    kind: Kind,
    id: &str,
    edit: impl FnOnce(&T, &mut T, &mut Fields) -> Result<&'static str, RuleError>,
) -> Result<Change, RuleError> {
    let cur = find(rows, kind.as_str(), id)?;
    let mut next = cur.clone();
    let mut f = Fields::default();
    let action = edit(cur, &mut next, &mut f)?;
    f.done()?;
    Ok(updated(action, kind, id, cur, &next))
}

/// Refuses to delete what some of the tenant's assignments still use (409 `in_use`: "`what` N
/// assignment(s); delete them first").
fn unassigned(
    doc: &TenantDoc,
    uses: impl Fn(&crate::model::Assignment) -> bool,
    what: &str,
) -> Result<(), RuleError> {
    let n = doc
        .assignments
        .values()
        .filter(|a| uses(&a.assignment))
        .count();
    unused(n, || format!("{what} {n} assignment(s); delete them first"))
}

/// Refuses to create `id` when the collection already has it (409 `already_exists`).
fn absent<T>(rows: &BTreeMap<String, T>, kind: Kind, id: &str) -> Result<(), RuleError> {
    if rows.contains_key(id) {
        return Err(RuleError::conflict(
            kind.as_str(),
            format!("{} '{id}' already exists", kind.as_str()),
        ));
    }
    Ok(())
}

/// The display name of a new entity: the one given, else its id; checked into `f`.
fn name_or_id(name: &Option<String>, id: &str, f: &mut Fields) -> String {
    let name = name.clone().unwrap_or_else(|| id.to_string());
    f.check("name", crate::model::check_text("name", &name));
    name
}

/// Applies a `name` patch, checked into `f`.
fn rename(name: &Option<String>, into: &mut String, f: &mut Fields) {
    if let Some(n) = name {
        f.check("name", crate::model::check_text("name", n));
        into.clone_from(n);
    }
}

/// The audit target of an entity: `user:alice`.
fn target(kind: Kind, id: &str) -> String {
    format!("{}:{id}", kind.as_str())
}

/// A change of entity `id` (its audit target) made of `ops`, answered with `result`.
fn change(
    action: &str,
    kind: Kind,
    id: &str,
    ops: Vec<RowOp>,
    result: serde_json::Value,
) -> Change {
    Change {
        action: action.to_string(),
        target: target(kind, id),
        ops,
        result,
    }
}

/// Creates row `id` (action `<kind>.create`); answers with the new row.
fn created<T: Serialize>(kind: Kind, id: &str, row: &T) -> Change {
    let v = json(row);
    let action = format!("{}.create", kind.as_str());
    change(
        &action,
        kind,
        id,
        vec![RowOp::put(kind, id, v.clone(), None)],
        v,
    )
}

/// Replaces row `id`, previously `before`; answers with the new row.
fn updated<T: Serialize>(action: &str, kind: Kind, id: &str, before: &T, after: &T) -> Change {
    let v = json(after);
    let op = RowOp::put(kind, id, v.clone(), Some(json(before)));
    change(action, kind, id, vec![op], v)
}

/// The answer to a deletion.
fn gone(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "deleted": true})
}

/// Deletes row `id`, previously `before` (action `<kind>.delete`), and any `cascade` ops first.
fn deleted<T: Serialize>(kind: Kind, id: &str, before: &T, mut cascade: Vec<RowOp>) -> Change {
    cascade.push(RowOp::delete(kind, id, Some(json(before))));
    let action = format!("{}.delete", kind.as_str());
    change(&action, kind, id, cascade, gone(id))
}

/// Distinguishes an absent field from an explicit `null`.
mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests;

/// Refuses to delete what `uses` things still use (409 `in_use`, with `message`).
fn unused(uses: usize, message: impl FnOnce() -> String) -> Result<(), RuleError> {
    if uses > 0 {
        return Err(RuleError::conflict("in_use", message()));
    }
    Ok(())
}
