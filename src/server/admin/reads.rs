//! Management reads: each parses its typed query and answers a read model of
//! `control::views` with the tenant's revision (and the entity's `ETag`).

use hyper::StatusCode;
use serde_json::Value;

use super::http::{respond, Query};
use super::Coll;
use crate::control::views::{self, ListQuery};
use crate::control::ControlPlane;
use crate::server::error::{ApiError, ErrorCode};
use crate::server::Resp;
use crate::store::Kind;

/// `GET /v1/tenants/{t}`.
pub async fn tenant(cp: &ControlPlane, t: &str) -> Result<Resp, ApiError> {
    let (v, rev, etag) = cp
        .read(t, |d| {
            (
                views::tenant_summary(d),
                d.revision,
                d.rev_of(Kind::Tenant, t),
            )
        })
        .await?;
    Ok(respond(StatusCode::OK, v, Some(rev), Some(etag)))
}

/// `GET /v1/tenants`.
pub async fn tenants(cp: &ControlPlane, q: &Query) -> Result<Resp, ApiError> {
    let v = views::tenants(cp, &q.page()?).await;
    Ok(respond(StatusCode::OK, v, Some(0), None))
}

/// `GET /v1/users`: the users of every tenant.
pub async fn platform_users(cp: &ControlPlane, q: &Query) -> Result<Resp, ApiError> {
    let v = views::platform_users(cp, &q.users()?).await;
    Ok(respond(StatusCode::OK, v, Some(0), None))
}

/// `GET /v1/tenants/{t}/{collection}`.
pub async fn list(
    cp: &ControlPlane,
    t: &str,
    coll: Coll,
    q: &Query,
    now: i64,
    visible: &views::Visible,
) -> Result<Resp, ApiError> {
    let lq = match coll {
        Coll::Nodes => ListQuery::Nodes(q.nodes()?),
        Coll::Users => ListQuery::Users(q.users()?),
        Coll::Groups => ListQuery::Groups(q.page()?),
        Coll::Roles => ListQuery::Roles(q.page()?),
        Coll::Assignments => ListQuery::Assignments(q.assignments()?),
        Coll::Plugins => ListQuery::Plugins(q.page()?),
        Coll::NotificationRules => ListQuery::NotificationRules(q.page()?),
    };
    let (v, rev) = cp
        .read(t, |d| (views::list(d, &lq, now, visible), d.revision))
        .await?;
    Ok(respond(StatusCode::OK, v, Some(rev), None))
}

/// `GET /v1/tenants/{t}/{collection}/{id}`.
pub async fn entity(
    cp: &ControlPlane,
    t: &str,
    coll: Coll,
    id: &str,
    now: i64,
) -> Result<Resp, ApiError> {
    let kind = coll.kind();
    let (v, rev) = cp
        .read(t, |d| (views::entity(d, kind, id, now), d.revision))
        .await?;
    let v = v.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("{} '{id}' not found", kind.as_str()),
        )
    })?;
    let etag = v
        .get("etag")
        .and_then(Value::as_str)
        .and_then(|s| s.trim_matches('"').parse().ok());
    Ok(respond(StatusCode::OK, v, Some(rev), etag))
}

/// `GET /v1/tenants/{t}/users/overview`.
pub async fn user_overview(cp: &ControlPlane, t: &str, now: i64) -> Result<Resp, ApiError> {
    let (v, rev) = cp
        .read(t, |d| (views::user_overview(d, now), d.revision))
        .await?;
    Ok(respond(StatusCode::OK, v, Some(rev), None))
}

/// `GET /v1/tenants/{t}/audit`.
pub async fn audit(cp: &ControlPlane, t: &str, q: &Query) -> Result<Resp, ApiError> {
    let q = q.audit()?;
    let v = views::audit(cp, t, &q).await?;
    Ok(respond(StatusCode::OK, v, None, None))
}

/// `GET /v1/audit`: every tenant's audit log, merged in time order (`tenant` narrows it to one;
/// `after` is the previous page's `next_after`).
pub async fn platform_audit(cp: &ControlPlane, q: &Query) -> Result<Resp, ApiError> {
    let aq = q.audit()?;
    let after = match q.get("after") {
        None => None,
        Some(c) => {
            let bad =
                || ApiError::bad_request("after must be a cursor <at_ms>:<tenant>:<revision>");
            let (at, rest) = c.split_once(':').ok_or_else(bad)?;
            let (t, rev) = rest.rsplit_once(':').ok_or_else(bad)?;
            Some((
                at.parse().map_err(|_| bad())?,
                t.to_string(),
                rev.parse().map_err(|_| bad())?,
            ))
        }
    };
    let v = views::platform_audit(cp, &aq, q.get("tenant"), after).await?;
    Ok(respond(StatusCode::OK, v, None, None))
}

/// `GET /v1/tenants/{t}/audit/{revision}`: one commit with a page of its row changes.
pub async fn audit_entry(
    cp: &ControlPlane,
    t: &str,
    revision: &str,
    q: &Query,
) -> Result<Resp, ApiError> {
    let revision = revision
        .parse::<u64>()
        .map_err(|_| ApiError::bad_request("the audit revision must be a number"))?;
    let page = q.page()?;
    let v = views::audit_changes(cp, t, revision, &page).await?;
    Ok(respond(StatusCode::OK, v, None, None))
}

/// `GET /v1/tenants/{t}/groups/{g}/recipients`: the active members a notification to the group
/// reaches (none while the group is inactive).
pub async fn group_recipients(
    cp: &ControlPlane,
    t: &str,
    g: &str,
    q: &Query,
) -> Result<Resp, ApiError> {
    let page = q.page()?;
    let (v, rev) = cp
        .read(t, |d| (views::group_recipients(d, g, &page), d.revision))
        .await?;
    let v =
        v.ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("group '{g}' not found")))?;
    Ok(respond(StatusCode::OK, v, Some(rev), None))
}

/// `GET /v1/tenants/{t}/notification-rules/{id}/recipients`: the union of the recipients of the
/// rule's groups, each user once.
pub async fn rule_recipients(
    cp: &ControlPlane,
    t: &str,
    id: &str,
    q: &Query,
) -> Result<Resp, ApiError> {
    let page = q.page()?;
    let (v, rev) = cp
        .read(t, |d| (views::rule_recipients(d, id, &page), d.revision))
        .await?;
    let v = v.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("notification rule '{id}' not found"),
        )
    })?;
    Ok(respond(StatusCode::OK, v, Some(rev), None))
}
