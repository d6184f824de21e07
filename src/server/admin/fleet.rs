//! `GET /v1/fleet/sidecars` (platform token): the sidecars following this control plane's NATS,
//! as they last reported (`fleet::follow::spawn_reporter`), each tenant's revision on the
//! sidecar against the control plane's.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::{json, Value};

use super::http::respond;
use crate::control::ControlPlane;
use crate::fleet::follow::Report;
use crate::server::error::{ApiError, ErrorCode};
use crate::server::{Resp, State};

/// Sidecars report every 5 s: one silent for longer than this has missed three reports. (Its
/// entry expires from NATS after `fleet::SIDECAR_TTL`.)
pub const STALE_AFTER: Duration = Duration::from_secs(15);

/// How long the endpoint waits for NATS.
const NATS_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /v1/fleet/sidecars`.
pub async fn sidecars(state: &State, cp: &ControlPlane) -> Result<Resp, ApiError> {
    let Some(dir) = state.sidecars.as_ref() else {
        return Err(ApiError::new(
            ErrorCode::NatsNotConfigured,
            "this control plane does not publish to NATS, so no sidecar follows it: start it \
             with --nats URL (or nats.url in the config file)",
        ));
    };
    let reports = dir.reports(NATS_TIMEOUT).await.map_err(|e| {
        ApiError::new(
            ErrorCode::NatsUnavailable,
            format!("cannot read the sidecars' reports: {e}"),
        )
    })?;
    let now_ms = crate::fleet::now_ms();
    let mut out = Vec::with_capacity(reports.len());
    for r in &reports {
        out.push(view(cp, r, now_ms).await);
    }
    Ok(respond(
        StatusCode::OK,
        json!({
            "sidecars": out,
            "stale_after_seconds": STALE_AFTER.as_secs(),
        }),
        None,
        None,
    ))
}

/// One sidecar's report as the endpoint shows it.
async fn view(cp: &ControlPlane, r: &Report, now_ms: i64) -> Value {
    let since_report = now_ms.saturating_sub(r.at_ms).max(0) as f64 / 1000.0;
    let since_contact = if r.last_contact_ms == 0 {
        Value::Null
    } else {
        let ms = (r.at_ms.max(0) as u64).saturating_sub(r.last_contact_ms);
        json!(ms as f64 / 1000.0)
    };
    let mut max_lag = 0u64;
    let mut tenants = Vec::with_capacity(r.tenants.len());
    for (t, (seen, applied)) in &r.tenants {
        let ours = cp.revision_of(t).await;
        let lag = ours.map(|o| o.saturating_sub(*applied));
        max_lag = max_lag.max(lag.unwrap_or(0));
        tenants.push(json!({
            "tenant": t,
            "seen": seen,
            "applied": applied,
            "control_plane": ours,
            "lag": lag,
        }));
    }
    json!({
        "id": r.id,
        "follows": r.follows,
        "ready": r.ready,
        "connected": r.connected,
        "reported_at_ms": r.at_ms,
        "seconds_since_report": since_report,
        "stale": since_report > STALE_AFTER.as_secs_f64(),
        "seconds_since_contact": since_contact,
        "events_applied": r.events_applied,
        "messages_received": r.received,
        "resyncs": r.resyncs,
        "max_lag": max_lag,
        "tenants": tenants,
    })
}
