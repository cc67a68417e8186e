//! `/v2/deployments` and `/v2/queue`.

use crate::apps::{deployment_result, now, Params, ParamsExt};
use crate::error::ApiError;
use crate::render::deployment_json;
use crate::ApiContext;
use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use pacer_core::id::PathId;
use pacer_core::instance::Instance;
use pacer_core::machine::{Command, Outcome};
use pacer_core::placement::RejectReason;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

type Ctx = AxState<Arc<ApiContext>>;

pub fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v2/deployments", get(list))
        .route("/v2/deployments/", get(list))
        .route("/v2/deployments/{id}", delete(cancel))
        .route("/v2/queue", get(queue))
        .route("/v2/queue/", get(queue))
        .route("/v2/queue/{*path}", delete(reset_delay))
}

async fn list(AxState(ctx): Ctx) -> Response {
    let snap = ctx.snapshot();
    let list: Vec<Value> = snap
        .deployments
        .values()
        .map(|d| deployment_json(&snap, d))
        .collect();
    Json(json!(list)).into_response()
}

/// `force=false`: a new deployment that reverts this one (200); `force=true`: stop it where it
/// is (202, no body).
async fn cancel(
    AxState(ctx): Ctx,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let force = q.flag("force", false);
    let outcome = ctx.submit(Command::CancelDeployment { id, force }).await?;
    match outcome {
        Outcome::Done => Ok(StatusCode::ACCEPTED.into_response()),
        other => Ok(deployment_result(&other, StatusCode::OK, None)),
    }
}

/// The order in which Marathon's offer matcher checks an offer; the reject summaries follow it.
const FUNNEL: [&str; 10] = [
    "UnfulfilledRole",
    "UnfulfilledConstraint",
    "NoCorrespondingReservationFound",
    "AgentMaintenance",
    "InsufficientCpus",
    "InsufficientMemory",
    "InsufficientDisk",
    "InsufficientGpus",
    "InsufficientPorts",
    "DeclinedScarceResources",
];

fn reason_name(r: &RejectReason) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Marathon's funnel: at each stage, how many offers reached it and how many it declined.
fn reject_summary(processed: u64, rejected: &BTreeMap<RejectReason, u64>) -> Vec<Value> {
    let by_name: BTreeMap<String, u64> =
        rejected.iter().map(|(r, n)| (reason_name(r), *n)).collect();
    let mut reached = processed;
    FUNNEL
        .iter()
        .map(|name| {
            let declined = by_name.get(*name).copied().unwrap_or(0);
            let v = json!({"reason": name, "declined": declined, "processed": reached});
            reached = reached.saturating_sub(declined);
            v
        })
        .collect()
}

/// One unused offer as Marathon lists it; a constraint plugin's explanation follows the reason.
fn unused_offer(u: &pacer_core::state::UnusedOffer) -> Value {
    use pacer_core::cluster::AttributeValue;
    let o = &u.offer;
    // The unreserved part (role `*`), then the part reserved for a role.
    let reserved = o.reserved.as_deref().cloned().unwrap_or_default();
    let unreserved_ports: Vec<_> = o
        .ports
        .iter()
        .filter(|r| !reserved.ports.contains(r))
        .copied()
        .collect();
    let mut resources = Vec::new();
    let mut pool = |role: &str, cpus: f64, mem: f64, disk: f64, gpus: f64, ports: &[_]| {
        let scalar = |name: &str, v: f64| json!({"name": name, "role": role, "scalar": v});
        for (name, v) in [("cpus", cpus), ("mem", mem), ("disk", disk), ("gpus", gpus)] {
            // Mesos offers no empty resources; unreserved cpus, mem and disk are always listed.
            if v > 0.0 || (role == "*" && name != "gpus") {
                resources.push(scalar(name, v));
            }
        }
        if !ports.is_empty() {
            let ranges: Vec<Value> = ports
                .iter()
                .map(|r: &pacer_core::cluster::PortRange| json!({"begin": r.begin, "end": r.end}))
                .collect();
            resources.push(json!({"name": "ports", "role": role, "ranges": ranges}));
        }
    };
    use pacer_core::placement::unreserved_amount as left;
    pool(
        "*",
        left(o.cpus, reserved.cpus),
        left(o.mem_mb, reserved.mem_mb),
        left(o.disk_mb, reserved.disk_mb),
        left(o.gpus, reserved.gpus),
        &unreserved_ports,
    );
    if let Some(r) = o.reserved.as_deref() {
        pool(&r.role, r.cpus, r.mem_mb, r.disk_mb, r.gpus, &r.ports);
    }
    let attributes: Vec<Value> = o
        .attributes
        .iter()
        .map(|(name, v)| match v {
            AttributeValue::Text(t) => json!({"name": name, "text": t}),
            AttributeValue::Scalar(x) => json!({"name": name, "scalar": x}),
        })
        .collect();
    let mut reason = vec![json!(reason_name(&u.reason))];
    if let Some(d) = &u.detail {
        reason.push(json!(d));
    }
    json!({
        "offer": {
            "id": o.id.0,
            "hostname": o.hostname,
            "agentId": o.agent_id.0,
            "resources": resources,
            "attributes": attributes,
        },
        "reason": reason,
        "timestamp": u.at,
    })
}

async fn queue(AxState(ctx): Ctx, Query(q): Params) -> Response {
    let snap = ctx.snapshot();
    let now = now();
    let with_offers = q
        .all("embed")
        .iter()
        .any(|e| e.ends_with("lastUnusedOffers"));
    // Apps with instances waiting for a launch.
    let mut waiting: BTreeMap<PathId, Vec<&Arc<Instance>>> = BTreeMap::new();
    for i in snap.instances.values().filter(|i| i.is_scheduled()) {
        waiting.entry(i.app_id.clone()).or_default().push(i);
    }
    let items: Vec<Value> = waiting
        .into_iter()
        .filter_map(|(id, instances)| {
            let app = snap.apps.get(&id)?;
            let since = instances
                .iter()
                .map(|i| i.task.as_ref().map_or(i.created_at, |t| t.since))
                .min()
                .unwrap_or(now);
            let (left, overdue) = match snap.delay_of(app, now) {
                Some(d) => (d.deadline.since(now).as_secs_f64().ceil() as u64, false),
                None => (0, true),
            };
            let stats = snap.offer_stats.get(&id).cloned().unwrap_or_default();
            let mut summary = json!({
                "processedOffersCount": stats.processed,
                "unusedOffersCount": stats.unused,
                "rejectSummaryLastOffers": reject_summary(stats.processed, &stats.rejected),
                "rejectSummaryLaunchAttempt": reject_summary(stats.processed, &stats.rejected),
            });
            if let Some(t) = stats.last_unused_at {
                summary["lastUnusedOfferAt"] = json!(t);
            }
            if let Some(t) = stats.last_used_at {
                summary["lastUsedOfferAt"] = json!(t);
            }
            let mut item = json!({
                "app": app.as_ref(),
                "count": instances.len(),
                "role": app.role,
                "delay": {"timeLeftSeconds": left, "overdue": overdue},
                "since": since,
                "processedOffersSummary": summary,
            });
            if with_offers {
                item["lastUnusedOffers"] = stats.last_unused.iter().map(unused_offer).collect();
            }
            Some(item)
        })
        .collect();
    Json(json!({"queue": items})).into_response()
}

async fn reset_delay(AxState(ctx): Ctx, Path(path): Path<String>) -> Result<Response, ApiError> {
    let Some(raw) = path.trim_end_matches('/').strip_suffix("/delay") else {
        return Err(ApiError::not_found("URI not found"));
    };
    let id = PathId::resolve(raw, &PathId::root()).map_err(|_| {
        ApiError::not_found(format!("Application /{raw} not found in tasks queue."))
    })?;
    ctx.submit(Command::ResetDelay { id }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
