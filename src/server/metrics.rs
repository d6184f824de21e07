//! Prometheus metrics. Every per-request handle is resolved once at start-up, so recording is a
//! few atomic adds: no label lookup, no allocation, no lock on the hot path.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry as PromRegistry, TextEncoder,
};

use crate::decide::Reason;
use crate::snapshot::Registry;

/// The endpoints that get their own latency series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Endpoint {
    Check = 0,
    Batch,
    Filter,
    Scopes,
    Explain,
    ForwardAuth,
    Admin,
    Other,
}

impl Endpoint {
    pub const ALL: [Endpoint; 8] = [
        Endpoint::Check,
        Endpoint::Batch,
        Endpoint::Filter,
        Endpoint::Scopes,
        Endpoint::Explain,
        Endpoint::ForwardAuth,
        Endpoint::Admin,
        Endpoint::Other,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Check => "check",
            Endpoint::Batch => "check_batch",
            Endpoint::Filter => "filter",
            Endpoint::Scopes => "scopes",
            Endpoint::Explain => "explain",
            Endpoint::ForwardAuth => "forward_auth",
            Endpoint::Admin => "admin",
            Endpoint::Other => "other",
        }
    }
}

/// Error codes that get their own counter (see `server::error`).
pub const ERROR_CODES: &[&str] = &[
    "bad_request",
    "malformed_json",
    "unsupported_media_type",
    "payload_too_large",
    "batch_too_large",
    "unknown_tenant",
    "not_found",
    "method_not_allowed",
    "revision_unavailable",
    "request_timeout",
    "unauthenticated",
    "forbidden",
    "no_route",
    "bad_target",
    "internal",
    "not_ready",
    "invalid",
    "already_exists",
    "duplicate_email",
    "revision_conflict",
    "in_use",
    "read_only",
    "quota_exceeded",
    "invalid_state",
    "already_member",
    "store_unavailable",
    "plugins_unavailable",
    "plugin_busy",
];

pub struct Metrics {
    registry: PromRegistry,
    decisions: Vec<IntCounter>,
    latency: Vec<Histogram>,
    errors: Vec<IntCounter>,
    filter_resources: IntCounter,
    tenants: IntGauge,
    snapshot_max_age: IntGauge,
    tenant_revision: IntGaugeVec,
    tenant_age: IntGaugeVec,
    plugin_calls: IntCounterVec,
    per_tenant: bool,
}

impl Metrics {
    pub fn new(per_tenant: bool) -> Result<Metrics, prometheus::Error> {
        let registry = PromRegistry::new();
        let decisions_vec = IntCounterVec::new(
            Opts::new(
                "portcullis_decisions_total",
                "Decisions made, by result and reason",
            ),
            &["result", "reason"],
        )?;
        let latency_vec = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_request_duration_seconds",
                "Request latency by endpoint",
            )
            .buckets(vec![
                0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
                0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["endpoint"],
        )?;
        let errors_vec = IntCounterVec::new(
            Opts::new("portcullis_errors_total", "Error responses by code"),
            &["code"],
        )?;
        let filter_resources = IntCounter::new(
            "portcullis_filter_resources_total",
            "Resources decided by /v1/filter (each counts as one decision)",
        )?;
        let tenants = IntGauge::new("portcullis_tenants_loaded", "Tenants with a live snapshot")?;
        let snapshot_max_age = IntGauge::new(
            "portcullis_snapshot_max_age_seconds",
            "Age of the oldest live tenant snapshot",
        )?;
        let tenant_revision = IntGaugeVec::new(
            Opts::new(
                "portcullis_tenant_revision",
                "Active snapshot revision per tenant (metrics.per_tenant)",
            ),
            &["tenant"],
        )?;
        let tenant_age = IntGaugeVec::new(
            Opts::new(
                "portcullis_tenant_snapshot_age_seconds",
                "Snapshot age per tenant (metrics.per_tenant)",
            ),
            &["tenant"],
        )?;
        let plugin_calls = IntCounterVec::new(
            Opts::new(
                "portcullis_plugin_calls_total",
                "Plugin calls of the live plugin versions, by outcome (failures: timeout, out_of_fuel, memory_limit, stack_overflow, trap, bad_result, bad_alloc, reason_too_long, input_too_large, no_instance; not called: budget_exhausted, circuit_open)",
            ),
            &["tenant", "plugin", "outcome"],
        )?;
        registry.register(Box::new(plugin_calls.clone()))?;
        registry.register(Box::new(decisions_vec.clone()))?;
        registry.register(Box::new(latency_vec.clone()))?;
        registry.register(Box::new(errors_vec.clone()))?;
        registry.register(Box::new(filter_resources.clone()))?;
        registry.register(Box::new(tenants.clone()))?;
        registry.register(Box::new(snapshot_max_age.clone()))?;
        if per_tenant {
            registry.register(Box::new(tenant_revision.clone()))?;
            registry.register(Box::new(tenant_age.clone()))?;
        }
        let decisions = Reason::ALL
            .iter()
            .map(|r| {
                let result = if matches!(r, Reason::Granted | Reason::RbacNone) {
                    "allow"
                } else {
                    "deny"
                };
                decisions_vec.with_label_values(&[result, r.code()])
            })
            .collect();
        let latency = Endpoint::ALL
            .iter()
            .map(|e| latency_vec.with_label_values(&[e.name()]))
            .collect();
        let errors = ERROR_CODES
            .iter()
            .map(|c| errors_vec.with_label_values(&[c]))
            .collect();
        Ok(Metrics {
            registry,
            decisions,
            latency,
            errors,
            filter_resources,
            tenants,
            snapshot_max_age,
            tenant_revision,
            tenant_age,
            plugin_calls,
            per_tenant,
        })
    }

    #[inline]
    pub fn decision(&self, reason: Reason) {
        if let Some(c) = self.decisions.get(reason.index()) {
            c.inc();
        }
    }

    #[inline]
    pub fn filtered(&self, n: usize) {
        self.filter_resources.inc_by(n as u64);
    }

    #[inline]
    pub fn latency(&self, endpoint: Endpoint, seconds: f64) {
        if let Some(h) = self.latency.get(endpoint as usize) {
            h.observe(seconds);
        }
    }

    #[inline]
    pub fn error(&self, code: &str) {
        if let Some(i) = ERROR_CODES.iter().position(|c| *c == code) {
            self.errors[i].inc();
        }
    }

    /// Renders the text exposition format, refreshing snapshot gauges from `snapshots`.
    pub fn render(&self, snapshots: &Registry, now: i64) -> Vec<u8> {
        let tenants = snapshots.tenant_snapshots();
        self.tenants.set(tenants.len() as i64);
        let mut max_age = 0;
        if self.per_tenant {
            self.tenant_revision.reset();
            self.tenant_age.reset();
        }
        self.plugin_calls.reset();
        for (id, s) in &tenants {
            for p in s.attached_plugins() {
                for o in crate::plugin::Outcome::ALL {
                    let n = p.stats().count(o);
                    if n > 0 {
                        self.plugin_calls
                            .with_label_values(&[id.as_str(), p.name(), o.code()])
                            .inc_by(n);
                    }
                }
            }
            let age = (now - s.loaded_at()).max(0);
            max_age = max_age.max(age);
            if self.per_tenant {
                self.tenant_revision
                    .with_label_values(&[id])
                    .set(s.revision() as i64);
                self.tenant_age.with_label_values(&[id]).set(age);
            }
        }
        self.snapshot_max_age.set(max_age);
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
