//! Plugins in decisions: the [`Conditions`] a check runs for grants whose role names a plugin.
//!
//! One [`SnapshotConditions`] serves one request: it borrows the snapshot the check runs on (so
//! a check always runs the plugin versions of that snapshot, even while a replacement is being
//! installed), builds the ABI input for each matched grant in a per-thread buffer, and
//! checks the request `context` at most once, and only if a plugin actually runs. While a
//! plugin runs a canary, each call picks the current version or the candidate by
//! [`crate::plugin::canary_bucket`] of the subject and the resource against the snapshot's
//! share: a hash and a compare, no allocation.

use std::cell::RefCell;

use super::Request;
use crate::decide::{ConditionNote, Conditions, Verdict};
use crate::model::split_action;
use crate::plugin::{CallDetail, CanarySplit, Outcome, PluginInput};
use crate::snapshot::{ArchivedTenantSnap, Snapshot, KIND_ADMIN, KIND_GUEST, KIND_OWNER, NONE};

/// A plugin call's outcome as a decision verdict: every failure is a veto (fail closed).
pub fn verdict(outcome: Outcome) -> Verdict {
    match outcome {
        Outcome::Abstain => Verdict::Abstain,
        Outcome::Allow => Verdict::Allow,
        Outcome::BudgetExhausted => Verdict::BudgetExhausted,
        Outcome::CircuitOpen => Verdict::Unavailable,
        _ => Verdict::Deny,
    }
}

/// Deepest node path handed to a plugin; deeper trees pass the nearest ancestors.
const MAX_PATH: usize = 64;

thread_local! {
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs the plugins attached to `snap` (see [`Snapshot::attach_plugins`]) for one request.
pub struct SnapshotConditions<'a> {
    snap: &'a Snapshot,
    req: Request<'a>,
    /// Whether the request `context` passed the host's check: None = not checked yet (checked
    /// at most once per request, and only if a plugin runs).
    context_ok: Option<bool>,
}

impl<'a> SnapshotConditions<'a> {
    pub fn new(snap: &'a Snapshot, req: Request<'a>) -> SnapshotConditions<'a> {
        SnapshotConditions {
            snap,
            req,
            context_ok: None,
        }
    }

    fn run(
        &mut self,
        v: &ArchivedTenantSnap,
        grant: u32,
        x: u32,
        mut detail: Option<&mut CallDetail>,
    ) -> (Outcome, String) {
        let Some(g) = v.grants.get(grant as usize) else {
            return (Outcome::NoInstance, String::new());
        };
        let Some(role) = v.roles.get(g.role.to_native() as usize) else {
            return (Outcome::NoInstance, String::new());
        };
        let slot = role.plugin_slot.to_native();
        let req = self.req;
        // A running canary takes the calls whose bucket is below its share: a hash of the
        // subject and the resource and a compare (`plugin::canary_bucket`), the same on every
        // process holding this snapshot.
        let resource = v.nodes.get(x as usize).map_or("", |n| n.id.as_str());
        let split = v
            .plugins
            .get(slot as usize)
            .and_then(|p| p.canary.as_ref())
            .map(|c| {
                let bucket = crate::plugin::canary_bucket(req.subject, resource);
                (c.share, bucket, bucket < c.share)
            });
        let candidate = split.is_some_and(|(_, _, c)| c);
        let split = split.map(|(share, bucket, candidate)| CanarySplit {
            share,
            bucket,
            candidate,
        });
        if let Some(d) = detail.as_deref_mut() {
            d.canary = split;
        }
        let loaded = if candidate {
            self.snap.canary(slot)
        } else {
            self.snap.plugin(slot)
        };
        let Some(plugin) = loaded else {
            // Not compiled in this process (no runtime, or it failed to load): fail closed.
            return (Outcome::NoInstance, String::new());
        };
        // The version (hex SHA-256) only for explanations: formatting it costs ~1 µs.
        let version = if detail.is_some() {
            plugin.version()
        } else {
            String::new()
        };
        // The request's plugin budget (if one is in force, see `engine::plugin_work`) is asked
        // before anything else: a refused call costs nothing.
        if crate::plugin::budget_left().is_some_and(|left| left.is_zero()) {
            return (plugin.refused(Outcome::BudgetExhausted), version);
        }
        // Requests arrive with their context checked (`plugin::check_context`), so this check
        // cannot fail; if it did, the plugin does not run and the grant is vetoed (a context
        // that was sent never becomes no context). The encoder reads the raw JSON itself.
        let ok = *self.context_ok.get_or_insert_with(|| {
            req.context
                .is_none_or(|raw| crate::plugin::check_context(raw).is_ok())
        });
        if !ok {
            return (Outcome::NoInstance, String::new());
        }
        let (action_resource, verb) = split_action(req.action).unwrap_or(("", ""));
        // An SSO token's subject is the provider's, not a user of the tenant.
        let user = match req.sso {
            Some(_) => None,
            None => crate::decide::user(v, req.subject),
        };
        let kind = match user.map(|u| u.kind) {
            _ if req.sso.is_some() => "sso",
            Some(KIND_OWNER) => "owner",
            Some(KIND_ADMIN) => "admin",
            Some(KIND_GUEST) => "guest",
            _ => "member",
        };
        let channel = req.channel.map(|c| [("channel", c)]);
        let email = user.map_or("", |u| u.email.as_str());
        // Node path, resource first while walking up, then reversed to root first.
        let mut path: [(&str, &str); MAX_PATH] = [("", ""); MAX_PATH];
        let mut depth = 0;
        let mut cur = x;
        while let Some(n) = v.nodes.get(cur as usize) {
            if depth == MAX_PATH {
                break;
            }
            let kind = v
                .kinds
                .get(n.kind.to_native() as usize)
                .map_or("", |k| k.as_str());
            path[depth] = (kind, n.id.as_str());
            depth += 1;
            cur = n.parent.to_native();
            if cur == NONE {
                break;
            }
        }
        path[..depth].reverse();
        let scope = v
            .nodes
            .get(g.lo.to_native() as usize)
            .map_or("", |n| n.id.as_str());
        let input = PluginInput {
            now: req.now,
            tenant: v.id.as_str(),
            subject: req.subject,
            action_resource,
            verb,
            resource,
            role: role.id.as_str(),
            scope,
            path: &path[..depth],
            attrs: &[("kind", kind), ("email", email)],
            context: None,
            context_raw: req.context,
            host_context: channel.as_ref().map_or(&[], |c| &c[..]),
        };
        // The circuit breaker last: a half-open breaker's probe must be followed by a call.
        if !plugin.admit() {
            return (plugin.refused(Outcome::CircuitOpen), version);
        }
        let outcome = INPUT.with(|buf| {
            let mut buf = buf.borrow_mut();
            input.encode(&mut buf);
            match detail {
                Some(d) => {
                    let outcome = plugin.call_detailed(&buf, d);
                    // The call's details start afresh: the split is the caller's.
                    d.canary = split;
                    outcome
                }
                None => plugin.call(&buf),
            }
        });
        (outcome, version)
    }
}

impl Conditions for SnapshotConditions<'_> {
    fn evaluate(&mut self, v: &ArchivedTenantSnap, grant: u32, x: u32) -> Verdict {
        verdict(self.run(v, grant, x, None).0)
    }

    fn explain(&mut self, v: &ArchivedTenantSnap, grant: u32, x: u32) -> (Verdict, ConditionNote) {
        let mut detail = CallDetail::default();
        let (outcome, version) = self.run(v, grant, x, Some(&mut detail));
        let verdict = verdict(outcome);
        let mut note = ConditionNote::of(v, grant, verdict);
        note.version = version;
        note.outcome = if outcome == Outcome::NoInstance {
            "unavailable"
        } else {
            outcome.code()
        };
        note.reason = detail.reason;
        note.trap = detail.trap;
        note.canary = detail.canary;
        (verdict, note)
    }
}
