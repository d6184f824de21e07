//! The engine: the one door through which every decision is asked ([`Request`]), over a
//! tenant's compiled [`Snapshot`] with its plugins; loading data files into live snapshots;
//! running a data file's `tests:` assertions.
//!
//! The HTTP data plane, forward-auth, the CLI and `tests:` all decide through [`Request`]'s
//! methods: the plain path (no plugin role can match) is `decide`'s allocation-free check, and
//! plugin conditions run through [`conditions::SnapshotConditions`] only when a plugin role
//! matches.

pub mod conditions;

use crate::decide::{self, ConditionNote, Decision, Explanation, Reason};
use crate::model::file::{DataFile, TestCase};
use crate::snapshot::{BuildError, Registry, Snapshot};

/// The demo data bundled into the binary (`deploy/demo.yaml`).
pub const DEMO_DATA: &str = include_str!("../../deploy/demo.yaml");

/// One authorization question on a tenant: who asks to do what, when, with which request
/// context (raw JSON, what plugin conditions see). The same request value answers a check, a
/// filter over many resources, the scope roots, or an explanation.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub subject: &'a str,
    pub action: &'a str,
    /// Unix seconds the decision is taken at.
    pub now: i64,
    /// The request's `context` as raw JSON, if any.
    pub context: Option<&'a str>,
    /// Set when the request carries an SSO token: the decision is over these SSO groups (and
    /// `subject` is the token's subject claim, for plugins and explanations).
    pub sso: Option<decide::SsoGroups>,
    /// The channel of the session the request was authenticated by (`console`, `field`): set by
    /// the host, it reaches plugins as the context member `channel`, overriding the caller's.
    pub channel: Option<&'a str>,
}

/// The answer of [`Request::scopes`].
#[derive(Clone, Copy, Debug)]
pub struct Scopes {
    pub decision: Decision,
    /// Whether some matching grant has a plugin condition (the scope roots are then an
    /// over-approximation: each resource still needs a check).
    pub conditional: bool,
}

impl<'a> Request<'a> {
    /// Who the decision is for.
    #[inline]
    pub fn principal(&self) -> decide::Principal<'a> {
        match self.sso {
            Some(g) => decide::Principal::Sso(g),
            None => decide::Principal::User(self.subject),
        }
    }

    fn conditions<'s>(&self, snap: &'s Snapshot) -> conditions::SnapshotConditions<'s>
    where
        'a: 's,
    {
        conditions::SnapshotConditions::new(snap, *self)
    }

    /// May the subject perform the action on `resource`?
    #[inline]
    pub fn check(&self, snap: &Snapshot, resource: &str) -> Decision {
        let mut cond = self.conditions(snap);
        decide::check_as(
            snap.view(),
            self.principal(),
            self.action,
            resource,
            self.now,
            &mut cond,
        )
    }

    /// Which of `resources` may the subject act on? Calls `emit(i)` for each allowed index, in
    /// order; the decision's reason is the subject-level one (`granted` when any is allowed).
    #[inline]
    pub fn filter<S: AsRef<str>>(
        &self,
        snap: &Snapshot,
        resources: &[S],
        emit: impl FnMut(usize),
    ) -> Decision {
        let mut cond = self.conditions(snap);
        decide::filter_as(
            snap.view(),
            self.principal(),
            self.action,
            resources,
            self.now,
            &mut cond,
            emit,
        )
    }

    /// The roots of the subtrees where the subject may perform the action, into `out` (node
    /// indices).
    pub fn scopes(&self, snap: &Snapshot, out: &mut Vec<u32>) -> Scopes {
        let v = snap.view();
        let decision = decide::scopes_as(v, self.principal(), self.action, self.now, out);
        Scopes {
            decision,
            conditional: decide::has_conditions_as(v, self.principal(), self.action),
        }
    }

    /// The decision on `resource` with every assignment considered (not on the hot path).
    pub fn explain(&self, snap: &Snapshot, resource: &str) -> Explanation {
        let mut cond = self.conditions(snap);
        decide::explain_as(
            snap.view(),
            self.principal(),
            self.action,
            resource,
            self.now,
            &mut cond,
        )
    }
}

/// Whether a check of `action` on `snap` may run a plugin condition (some role with a plugin
/// could grant it): one bitset test; false keeps a request on the plain path.
#[inline]
pub fn needs_plugins(snap: &Snapshot, action: &str) -> bool {
    snap.has_plugins() && decide::action_has_conditions(snap.view(), action)
}

/// Runs `work` — a request's decisions that may call plugins — under the plugin runtime's
/// request limits:
/// - a slot of the tenant's (and the process's) plugin concurrency is taken first, waiting at
///   most the request budget (and only a bounded number of requests wait): none free is
///   [`crate::plugin::Busy`];
/// - the request's plugin time budget (`Limits::request_budget`) is in force for every call
///   `work` makes: once spent, further plugin conditions deny with `plugin_budget_exhausted`;
/// - on a multi-threaded tokio runtime, `work` runs off the reactor
///   ([`tokio::task::block_in_place`]: this worker's other tasks move to another thread while
///   it runs), so other tenants' requests and health checks keep being served. The number of
///   threads so held is bounded by the concurrency slots.
///
/// Without a plugin runtime, plugin conditions deny without running: `work` runs inline.
pub fn plugin_work<R>(
    registry: &Registry,
    tenant: &str,
    work: impl FnOnce() -> R,
) -> Result<R, crate::plugin::Busy> {
    let Some(host) = registry.plugin_host() else {
        return Ok(work());
    };
    off_reactor(|| {
        // Waiting for a slot happens off the reactor too, bounded by the request budget.
        let budget = host.limits().request_budget;
        let _slot = host.enter_within(tenant, budget)?;
        let _budget = crate::plugin::BudgetScope::enter(budget);
        Ok(work())
    })
}

/// Runs blocking `f` without stalling a multi-threaded runtime's reactor; inline elsewhere.
fn off_reactor<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A registry with the plugin runtime (default limits). If the runtime cannot start, plugin
/// conditions deny (fail closed) and the reason is logged.
pub fn plugin_registry() -> Registry {
    plugin_registry_with(crate::plugin::Limits::default())
}

/// [`plugin_registry`] with explicit limits.
pub fn plugin_registry_with(limits: crate::plugin::Limits) -> Registry {
    match crate::plugin::PluginHost::new(limits) {
        Ok(h) => Registry::with_plugins(std::sync::Arc::new(h)),
        Err(e) => {
            tracing::error!(error = %e, "plugin runtime unavailable; plugin conditions deny");
            Registry::new()
        }
    }
}

/// Builds every tenant of a data file and installs it in `registry`.
pub fn install_all(registry: &Registry, data: &DataFile) -> Result<(), BuildError> {
    // A plugin that does not load is an error here (a data file is checked as a whole), not a
    // silent deny later.
    if let Some(host) = registry.plugin_host() {
        for t in &data.tenants {
            for p in &t.plugins {
                host.load(&t.id, &p.name, &p.wasm)
                    .map_err(|e| BuildError::Plugin {
                        tenant: t.id.clone(),
                        message: e.to_string(),
                    })?;
            }
        }
    }
    let snaps = data
        .tenants
        .iter()
        .map(Snapshot::build)
        .collect::<Result<Vec<_>, _>>()?;
    for s in snaps {
        registry.install(s);
    }
    Ok(())
}

/// The outcome of one failed `tests:` assertion.
#[derive(Debug, Clone)]
pub struct TestFailure {
    pub case: TestCase,
    pub allowed: bool,
    pub reason: Reason,
    /// What each plugin condition run for the check said (outcome, version, reason, trap).
    pub plugins: Vec<ConditionNote>,
}

impl std::fmt::Display for TestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.case;
        write!(
            f,
            "line {}: {} {} {} on {} in tenant '{}': expected {}{}",
            c.line,
            c.subject,
            if c.allowed { "may" } else { "may not" },
            c.action,
            c.resource,
            c.tenant,
            if c.allowed { "allow" } else { "deny" },
            c.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
        )?;
        if let Some(r) = &c.plugin_reason {
            write!(f, " with plugin reason {r:?}")?;
        }
        write!(
            f,
            ", got {} ({})",
            if self.allowed { "allow" } else { "deny" },
            self.reason.code()
        )?;
        if self.plugins.is_empty() {
            if c.plugin_reason.is_some() {
                write!(f, "; no plugin ran")?;
            }
            return Ok(());
        }
        write!(f, "; plugins:")?;
        for (i, n) in self.plugins.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{} {}", n.plugin, n.outcome)?;
            if !n.reason.is_empty() {
                write!(f, " {:?}", n.reason)?;
            }
            if !n.trap.is_empty() {
                write!(f, " (trap: {})", n.trap)?;
            }
        }
        Ok(())
    }
}

/// Evaluates every `tests:` case of `data` against `registry`; returns the failures. A case
/// with `plugin_reason` passes only if some plugin condition run for its check gave exactly that
/// reason; a failing case reports what every plugin condition of the check said.
pub fn run_tests(registry: &Registry, data: &DataFile, now: i64) -> Vec<TestFailure> {
    let mut failures = Vec::new();
    for c in &data.tests {
        let Some(snap) = registry.get(&c.tenant) else {
            failures.push(TestFailure {
                case: c.clone(),
                allowed: false,
                reason: Reason::UnknownSubject,
                plugins: Vec::new(),
            });
            continue;
        };
        let ctx = c.context.as_ref().map(ToString::to_string);
        let req = Request {
            subject: &c.subject,
            action: &c.action,
            now: c.at.unwrap_or(now),
            context: ctx.as_deref(),
            sso: None,
            channel: None,
        };
        let d = req.check(&snap, &c.resource);
        // Plugin verdicts and reasons come from an explanation (one more call per plugin grant,
        // only for cases that ask for a reason or fail).
        let mut plugins = None;
        let notes = || plugins_of(&req, &snap, &c.resource);
        let reason_ok = c.reason.as_deref().is_none_or(|r| r == d.reason.code());
        let plugin_ok = match &c.plugin_reason {
            None => true,
            Some(want) => {
                let n = notes();
                let ok = n.iter().any(|n| n.reason == *want);
                plugins = Some(n);
                ok
            }
        };
        if d.allowed != c.allowed || !reason_ok || !plugin_ok {
            failures.push(TestFailure {
                case: c.clone(),
                allowed: d.allowed,
                reason: d.reason,
                plugins: plugins.unwrap_or_else(notes),
            });
        }
    }
    failures
}

/// The plugin conditions an explanation of the check ran, in assignment order.
fn plugins_of(req: &Request<'_>, snap: &Snapshot, resource: &str) -> Vec<ConditionNote> {
    req.explain(snap, resource)
        .assignments
        .into_iter()
        .filter_map(|a| a.condition)
        .collect()
}
