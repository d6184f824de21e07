//! Prometheus metrics. Every per-request handle is resolved once at start-up, so recording is a
//! few atomic adds: no label lookup, no allocation, no lock on the hot path.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry as PromRegistry, TextEncoder,
};

use super::conn::{Closed, ConnStats};
use super::error::ErrorCode;
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

/// Error codes that get their own counter: every [`ErrorCode`], in its order.
pub const ERROR_CODES: [&str; ErrorCode::ALL.len()] = {
    let mut out = [""; ErrorCode::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = ErrorCode::ALL[i].as_str();
        i += 1;
    }
    out
};

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
    conns_closed: IntCounterVec,
    conns_open: IntGaugeVec,
    conns_accepted: IntCounter,
    tenants_unavailable: IntGauge,
    compile_failures: IntCounterVec,
    tls_reload_errors: IntCounter,
    tls_handshake_failures: IntCounter,
    sign_ins: IntCounterVec,
    fleet: FleetMetrics,
    families: Vec<Family>,
    per_tenant: bool,
}

/// What a fleet member (a `serve --nats` publisher or a sidecar) reports for `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct FleetReport {
    pub connected: bool,
    /// Unix ms of the last sign of life from NATS (0: never).
    pub last_contact_ms: u64,
    /// Event counts by outcome (`published`; `applied`, `corrupt`, `duplicate`, `gap`, `reset`,
    /// `received`).
    pub events: Vec<(&'static str, u64)>,
    pub resyncs: u64,
    pub snapshots_published: u64,
    /// Per tenant: (id, highest revision seen in the stream, revision applied).
    pub tenants: Vec<(String, u64, u64)>,
}

/// Produces the current [`FleetReport`] (set by the process assembly, `app`).
pub type FleetReporter = Box<dyn Fn() -> FleetReport + Send + Sync>;

struct FleetMetrics {
    connected: IntGauge,
    since_contact: IntGauge,
    events: IntCounterVec,
    resyncs: IntCounter,
    snapshots: IntCounter,
    seen: IntGaugeVec,
    applied: IntGaugeVec,
}

impl FleetMetrics {
    fn new(
        registry: &PromRegistry,
        families: &mut Vec<Family>,
        per_tenant: bool,
    ) -> Result<FleetMetrics, prometheus::Error> {
        let m = FleetMetrics {
            connected: IntGauge::new(
                "portcullis_fleet_connected",
                "1 while connected to NATS (serve --nats, sidecar), else 0",
            )?,
            since_contact: IntGauge::new(
                "portcullis_fleet_seconds_since_contact",
                "Seconds since the last sign of life from NATS (a message, or the connection seen up); -1: never",
            )?,
            events: IntCounterVec::new(
                Opts::new(
                    "portcullis_fleet_events_total",
                    "Change events by outcome: published (serve); applied, corrupt, duplicate, gap, reset, and received: every message the sidecar's consumer delivered (sidecar)",
                ),
                &["outcome"],
            )?,
            resyncs: IntCounter::new(
                "portcullis_fleet_resyncs_total",
                "Tenants reloaded from their snapshot after a corrupt, duplicate, out-of-order or reset event (sidecar)",
            )?,
            snapshots: IntCounter::new(
                "portcullis_fleet_snapshots_published_total",
                "Tenant snapshots written to the NATS object store (serve --nats)",
            )?,
            seen: IntGaugeVec::new(
                Opts::new(
                    "portcullis_fleet_tenant_revision_seen",
                    "Highest revision of a tenant seen in the event stream (sidecar, metrics.per_tenant)",
                ),
                &["tenant"],
            )?,
            applied: IntGaugeVec::new(
                Opts::new(
                    "portcullis_fleet_tenant_revision_applied",
                    "Revision of a tenant the sidecar has applied (its snapshot follows; metrics.per_tenant)",
                ),
                &["tenant"],
            )?,
        };
        reg(registry, families, &m.connected)?;
        reg(registry, families, &m.since_contact)?;
        reg(registry, families, &m.events)?;
        reg(registry, families, &m.resyncs)?;
        reg(registry, families, &m.snapshots)?;
        if per_tenant {
            reg(registry, families, &m.seen)?;
            reg(registry, families, &m.applied)?;
        }
        Ok(m)
    }

    fn update(&self, r: &FleetReport, per_tenant: bool) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.connected.set(i64::from(r.connected));
        self.since_contact.set(if r.last_contact_ms == 0 {
            -1
        } else {
            (now_ms.saturating_sub(r.last_contact_ms) / 1000) as i64
        });
        for (outcome, n) in &r.events {
            let c = self.events.with_label_values(&[outcome]);
            c.inc_by(n.saturating_sub(c.get()));
        }
        self.resyncs
            .inc_by(r.resyncs.saturating_sub(self.resyncs.get()));
        self.snapshots
            .inc_by(r.snapshots_published.saturating_sub(self.snapshots.get()));
        if per_tenant {
            self.seen.reset();
            self.applied.reset();
            for (t, seen, applied) in &r.tenants {
                self.seen.with_label_values(&[t]).set(*seen as i64);
                self.applied.with_label_values(&[t]).set(*applied as i64);
            }
        }
    }
}

/// One metric family as registered: name, variable labels, help. The README's metrics
/// reference is checked against these (`tests/metrics_reference.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub name: String,
    pub labels: Vec<String>,
    pub help: String,
}

/// Registers `c` and records its families.
fn reg<C: prometheus::core::Collector + Clone + 'static>(
    registry: &PromRegistry,
    families: &mut Vec<Family>,
    c: &C,
) -> Result<(), prometheus::Error> {
    for d in c.desc() {
        families.push(Family {
            name: d.fq_name.clone(),
            labels: d.variable_labels.clone(),
            help: d.help.clone(),
        });
    }
    registry.register(Box::new(c.clone()))
}

impl Metrics {
    pub fn new(per_tenant: bool) -> Result<Metrics, prometheus::Error> {
        let registry = PromRegistry::new();
        let mut families = Vec::new();
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
                "Plugin calls of the live plugin versions (version: hex SHA-256 of the module), by outcome (failures: timeout, out_of_fuel, memory_limit, stack_overflow, trap, bad_result, bad_alloc, reason_too_long, input_too_large, no_instance; not called: budget_exhausted, circuit_open)",
            ),
            &["tenant", "plugin", "version", "outcome"],
        )?;
        let conns_closed = IntCounterVec::new(
            Opts::new(
                "portcullis_connections_closed_total",
                "Connections closed by the server, by reason (first_request_timeout, idle_timeout, evicted, refused)",
            ),
            &["reason"],
        )?;
        let conns_open = IntGaugeVec::new(
            Opts::new(
                "portcullis_connections_open",
                "Open connections: pending (no request yet) or serving",
            ),
            &["state"],
        )?;
        let conns_accepted = IntCounter::new(
            "portcullis_connections_accepted_total",
            "Connections accepted, all listeners",
        )?;
        reg(&registry, &mut families, &conns_closed)?;
        reg(&registry, &mut families, &conns_open)?;
        reg(&registry, &mut families, &conns_accepted)?;
        let tls_reload_errors = IntCounter::new(
            "portcullis_tls_reload_errors_total",
            "Changed TLS certificate or key files that could not be loaded (the previous certificate stays in use)",
        )?;
        let tls_handshake_failures = IntCounter::new(
            "portcullis_tls_handshake_failures_total",
            "TLS handshakes that failed with a TLS error (protocol, refused or missing client certificate) and plain HTTP sent to a TLS port; clients that disconnect mid-handshake are not counted",
        )?;
        reg(&registry, &mut families, &tls_reload_errors)?;
        reg(&registry, &mut families, &tls_handshake_failures)?;
        let sign_ins = IntCounterVec::new(
            Opts::new(
                "portcullis_sign_ins_total",
                "Sign-in attempts by method (password, card) and result (ok, refused: bad credentials, not_allowed: refused by group or channel rules, throttled: 429)",
            ),
            &["method", "result"],
        )?;
        reg(&registry, &mut families, &sign_ins)?;
        let tenants_unavailable = IntGauge::new(
            "portcullis_tenants_unavailable",
            "Tenants whose stored state does not compile: not served (503 tenant_unavailable), named by /readyz",
        )?;
        let failed_builds = Opts::new(
            "portcullis_tenant_compile_failures_total",
            "Snapshot builds of a tenant that failed (its state does not compile), since start",
        );
        let compile_failures = IntCounterVec::new(failed_builds, &["tenant"])?;
        let fleet = FleetMetrics::new(&registry, &mut families, per_tenant)?;
        reg(&registry, &mut families, &tenants_unavailable)?;
        reg(&registry, &mut families, &compile_failures)?;
        reg(&registry, &mut families, &plugin_calls)?;
        reg(&registry, &mut families, &decisions_vec)?;
        reg(&registry, &mut families, &latency_vec)?;
        reg(&registry, &mut families, &errors_vec)?;
        reg(&registry, &mut families, &filter_resources)?;
        reg(&registry, &mut families, &tenants)?;
        reg(&registry, &mut families, &snapshot_max_age)?;
        if per_tenant {
            reg(&registry, &mut families, &tenant_revision)?;
            reg(&registry, &mut families, &tenant_age)?;
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
            conns_closed,
            conns_open,
            conns_accepted,
            tenants_unavailable,
            compile_failures,
            tls_reload_errors,
            tls_handshake_failures,
            sign_ins,
            fleet,
            families,
            per_tenant,
        })
    }

    /// Every metric family this process exposes (with `metrics.per_tenant`, the per-tenant ones
    /// too).
    pub fn families(&self) -> &[Family] {
        &self.families
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

    /// The counter of TLS certificate reloads that failed.
    pub fn tls_reload_errors(&self) -> &IntCounter {
        &self.tls_reload_errors
    }

    /// Counts a sign-in attempt.
    pub fn sign_in(&self, method: &str, result: &str) {
        self.sign_ins.with_label_values(&[method, result]).inc();
    }

    /// The counter of TLS handshakes that failed.
    pub fn tls_handshake_failures(&self) -> &IntCounter {
        &self.tls_handshake_failures
    }

    #[inline]
    pub fn error(&self, code: ErrorCode) {
        if let Some(c) = self.errors.get(code as usize) {
            c.inc();
        }
    }

    /// Renders the text exposition format, refreshing snapshot gauges from `snapshots`,
    /// connection gauges and counters from `conns`, and the fleet's from `fleet`.
    pub fn render(
        &self,
        snapshots: &Registry,
        conns: &ConnStats,
        fleet: Option<&FleetReport>,
        now: i64,
    ) -> Vec<u8> {
        if let Some(r) = fleet {
            self.fleet.update(r, self.per_tenant);
        }
        for r in Closed::ALL {
            let c = self.conns_closed.with_label_values(&[r.code()]);
            c.inc_by(conns.closed(r).saturating_sub(c.get()));
        }
        self.conns_open
            .with_label_values(&["pending"])
            .set(conns.pending());
        self.conns_open
            .with_label_values(&["serving"])
            .set(conns.serving());
        self.conns_accepted
            .inc_by(conns.accepted().saturating_sub(self.conns_accepted.get()));
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
                let version = p.version();
                for o in crate::plugin::Outcome::ALL {
                    let n = p.stats().count(o);
                    if n > 0 {
                        self.plugin_calls
                            .with_label_values(&[id.as_str(), p.name(), &version, o.code()])
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
        self.tenants_unavailable
            .set(snapshots.failures_now().len() as i64);
        self.compile_failures.reset();
        for (tenant, n) in snapshots.failure_counts() {
            self.compile_failures
                .with_label_values(&[tenant.as_str()])
                .inc_by(n);
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
