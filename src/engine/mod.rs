//! Glue between the model and the registry: loading data files into live snapshots, running a
//! data file's `tests:` assertions.

pub mod conditions;

use crate::decide::{self, Reason};
use crate::model::file::{DataFile, TestCase};
use crate::snapshot::{BuildError, Registry, Snapshot};

/// The demo data bundled into the binary (`deploy/demo.yaml`).
pub const DEMO_DATA: &str = include_str!("../../deploy/demo.yaml");

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
}

impl std::fmt::Display for TestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.case;
        write!(
            f,
            "line {}: {} {} {} on {} in tenant '{}': expected {}{}, got {} ({})",
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
            if self.allowed { "allow" } else { "deny" },
            self.reason.code()
        )
    }
}

/// Evaluates every `tests:` case of `data` against `registry`; returns the failures.
pub fn run_tests(registry: &Registry, data: &DataFile, now: i64) -> Vec<TestFailure> {
    let mut failures = Vec::new();
    for c in &data.tests {
        let (allowed, reason) = match registry.get(&c.tenant) {
            Some(snap) => {
                let at = c.at.unwrap_or(now);
                let ctx = c.context.as_ref().map(ToString::to_string);
                let mut cond = crate::engine::conditions::SnapshotConditions::new(
                    &snap,
                    crate::engine::conditions::Request {
                        subject: &c.subject,
                        action: &c.action,
                        now: at,
                        context: ctx.as_deref(),
                    },
                );
                let d = decide::check_with(
                    snap.view(),
                    &c.subject,
                    &c.action,
                    &c.resource,
                    at,
                    &mut cond,
                );
                (d.allowed, d.reason)
            }
            None => (false, Reason::UnknownSubject),
        };
        let reason_ok = c.reason.as_deref().is_none_or(|r| r == reason.code());
        if allowed != c.allowed || !reason_ok {
            failures.push(TestFailure {
                case: c.clone(),
                allowed,
                reason,
            });
        }
    }
    failures
}
